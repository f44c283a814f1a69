//! Loss kernels against their CPU twin, the twin's gradients against finite differences,
//! hand-computed values, and bad input.

mod common;

use common::gpu;

use gradguard::cpu::loss as twin;
use gradguard::kernels::loss::{LossBinding, LossKernel};
use gradguard::readback::read_f32s;
use gradguard::wgpu::{self, util::DeviceExt};
use gradguard::Error;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn upload<T: bytemuck::Pod>(data: &[T]) -> wgpu::Buffer {
    gpu().device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(data),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    })
}

/// Runs a bound loss and returns (loss, gradient).
fn run(kernel: &LossKernel, binding: &LossBinding, grad: &wgpu::Buffer, loss: &wgpu::Buffer) -> (f32, Vec<f32>) {
    let mut encoder = gpu().device.create_command_encoder(&Default::default());
    kernel.encode(&mut encoder.begin_compute_pass(&Default::default()), binding);
    gpu().queue.submit([encoder.finish()]);
    let (device, queue) = (&gpu().device, &gpu().queue);
    (read_f32s(device, queue, loss).unwrap()[0], read_f32s(device, queue, grad).unwrap())
}

fn cross_entropy_gpu(logits: &[f32], targets: &[u32], classes: u32) -> (f32, Vec<f32>) {
    let kernel = LossKernel::new(&gpu().device).unwrap();
    let (gl, gt, gg, gloss) = (upload(logits), upload(targets), upload(&vec![0f32; logits.len()]), upload(&[0f32]));
    let binding =
        kernel.bind_cross_entropy(&gpu().device, targets.len() as u32, classes, &gl, &gt, &gg, &gloss).unwrap();
    run(&kernel, &binding, &gg, &gloss)
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

fn assert_close(what: &str, got: f32, want: f64, tol: f64) {
    assert!((got as f64 - want).abs() <= tol * (1.0 + want.abs()), "{what}: gpu {got}, twin {want}");
}

#[test]
fn cross_entropy_matches_twin() {
    let mut rng = StdRng::seed_from_u64(1);
    for (batch, classes, scale) in
        [(1u32, 1u32, 1.0f32), (7, 13, 3.0), (255, 257, 10.0), (3, 1000, 30.0), (1000, 10, 1e4)]
    {
        let logits: Vec<f32> = (0..batch * classes).map(|_| rng.random_range(-scale..scale)).collect();
        let targets: Vec<u32> = (0..batch).map(|_| rng.random_range(0..classes)).collect();
        let (loss, grad) = cross_entropy_gpu(&logits, &targets, classes);
        let (want_loss, want_grad) = twin::cross_entropy(&widen(&logits), &targets, classes as usize);
        // log-sum-exp of logits of size s loses about s·ε absolutely.
        assert_close(&format!("{batch}x{classes} loss"), loss, want_loss, 1e-6 * scale as f64);
        for (i, (g, w)) in grad.iter().zip(&want_grad).enumerate() {
            assert_close(&format!("{batch}x{classes} grad[{i}]"), *g, *w, 1e-6 * scale as f64 / batch as f64);
        }
    }
}

#[test]
fn cross_entropy_hand_values_and_bad_targets() {
    // log(e + e² + e³) - 3 and softmax([1, 2, 3]) - onehot(2).
    let (loss, grad) = cross_entropy_gpu(&[1.0, 2.0, 3.0], &[2], 3);
    assert_close("loss", loss, 0.40760596444438, 1e-6);
    for (g, w) in grad.iter().zip([0.09003057317038046, 0.24472847105479767, -0.3347590442251781]) {
        assert_close("grad", *g, w, 1e-6);
    }
    // Huge logits stay finite (stable log-sum-exp): loss log 2 over two rows.
    let (loss, _) = cross_entropy_gpu(&[1e30, 1e30, 5e37, 5e37], &[0, 1], 2);
    assert_close("huge logits", loss, std::f64::consts::LN_2, 1e-7);
    // A target out of range poisons its row (torch raises instead).
    let (loss, grad) = cross_entropy_gpu(&[1.0, 2.0, 3.0, 4.0], &[0, 2], 2);
    assert!(loss.is_nan() && grad[2].is_nan() && grad[0].is_finite());
    assert!(twin::cross_entropy(&[1.0, 2.0], &[2], 2).0.is_nan());
}

#[test]
fn mse_matches_twin() {
    let device = &gpu().device;
    let kernel = LossKernel::new(device).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    for len in [1u64, 255, 256, 257, 100_003] {
        let pred: Vec<f32> = (0..len).map(|_| rng.random_range(-2.0..2.0)).collect();
        let target: Vec<f32> = (0..len).map(|_| rng.random_range(-2.0..2.0)).collect();
        let (gp, gt, gg, gloss) = (upload(&pred), upload(&target), upload(&vec![0f32; len as usize]), upload(&[0f32]));
        let binding = kernel.bind_mse(device, len, &gp, &gt, &gg, &gloss).unwrap();
        let (loss, grad) = run(&kernel, &binding, &gg, &gloss);
        let (want_loss, want_grad) = twin::mse(&widen(&pred), &widen(&target));
        assert_close(&format!("mse {len}"), loss, want_loss, 1e-6);
        for (i, (g, w)) in grad.iter().zip(&want_grad).enumerate() {
            assert_close(&format!("mse {len} grad[{i}]"), *g, *w, 1e-6);
        }
    }
    let (gp, gt, gg, gloss) = (upload(&[1f32, 2.0]), upload(&[0f32, 0.0]), upload(&[0f32; 2]), upload(&[0f32]));
    let (loss, grad) = run(&kernel, &kernel.bind_mse(device, 2, &gp, &gt, &gg, &gloss).unwrap(), &gg, &gloss);
    assert_eq!((loss, grad), (2.5, vec![1.0, 2.0]));
}

fn finite_difference(f: impl Fn(&[f64]) -> f64, x: &[f64]) -> Vec<f64> {
    let h = 1e-6;
    (0..x.len())
        .map(|i| {
            let mut up = x.to_vec();
            let mut down = x.to_vec();
            up[i] += h;
            down[i] -= h;
            (f(&up) - f(&down)) / (2.0 * h)
        })
        .collect()
}

#[test]
fn twin_gradients_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(3);
    let (classes, targets) = (5, [4u32, 0, 2]);
    let logits: Vec<f64> = (0..15).map(|_| rng.random_range(-3.0..3.0)).collect();
    let numeric = finite_difference(|x| twin::cross_entropy(x, &targets, classes).0, &logits);
    for (a, n) in twin::cross_entropy(&logits, &targets, classes).1.iter().zip(&numeric) {
        assert!((a - n).abs() < 1e-7, "cross entropy: analytic {a}, finite difference {n}");
    }
    let target: Vec<f64> = (0..9).map(|_| rng.random_range(-1.0..1.0)).collect();
    let pred: Vec<f64> = (0..9).map(|_| rng.random_range(-1.0..1.0)).collect();
    let numeric = finite_difference(|p| twin::mse(p, &target).0, &pred);
    for (a, n) in twin::mse(&pred, &target).1.iter().zip(&numeric) {
        assert!((a - n).abs() < 1e-7, "mse: analytic {a}, finite difference {n}");
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let device = &gpu().device;
    let kernel = LossKernel::new(device).unwrap();
    let (x, t, g, l) = (upload(&[0f32; 6]), upload(&[0u32; 2]), upload(&[0f32; 6]), upload(&[0f32]));
    let no_storage = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4,
        usage: wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    assert!(matches!(kernel.bind_cross_entropy(device, 0, 3, &x, &t, &g, &l), Err(Error::Empty { .. })));
    assert!(matches!(kernel.bind_cross_entropy(device, 3, 3, &x, &t, &g, &l), Err(Error::LengthMismatch { .. })));
    assert!(matches!(
        kernel.bind_cross_entropy(device, 2, 3, &x, &t, &g, &no_storage),
        Err(Error::MissingBufferUsage { .. })
    ));
    assert!(matches!(kernel.bind_cross_entropy(device, 2, 3, &x, &t, &g, &g), Err(Error::Aliased { .. })));
    assert!(matches!(kernel.bind_mse(device, 0, &x, &x, &g, &l), Err(Error::Empty { .. })));
    assert!(matches!(kernel.bind_mse(device, 7, &x, &x, &g, &l), Err(Error::LengthMismatch { .. })));
    assert!(kernel.bind_mse(device, 6, &x, &x, &g, &l).is_ok(), "prediction and target may share a buffer");
}

/// Operands as views at non-zero offsets of shared buffers (the logits and the targets in
/// one, the gradient and the loss in another) give what whole buffers give.
#[test]
fn views_at_offsets_give_what_whole_buffers_give() {
    use gradguard::kernels::View;
    let device = &gpu().device;
    let kernel = LossKernel::new(device).unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let (batch, classes) = (5u32, 7u32);
    let logits: Vec<f32> = (0..batch * classes).map(|_| rng.random_range(-3.0..3.0)).collect();
    let targets: Vec<u32> = (0..batch).map(|_| rng.random_range(0..classes)).collect();
    let (want_loss, want_grad) = cross_entropy_gpu(&logits, &targets, classes);
    // Words 64.. hold the logits, 128.. the targets' bits; the outputs at words 64 and 192.
    let mut inputs = vec![0u32; 256];
    inputs[64..64 + logits.len()].copy_from_slice(bytemuck::cast_slice(&logits));
    inputs[128..128 + targets.len()].copy_from_slice(&targets);
    let (ins, outs) = (upload(&inputs), upload(&vec![0f32; 256]));
    let binding = kernel
        .bind_cross_entropy(device, batch, classes, View::at(&ins, 256), View::at(&ins, 512), View::at(&outs, 256), View::at(&outs, 768))
        .unwrap();
    let mut encoder = device.create_command_encoder(&Default::default());
    kernel.encode(&mut encoder.begin_compute_pass(&Default::default()), &binding);
    gpu().queue.submit([encoder.finish()]);
    let out = read_f32s(device, &gpu().queue, &outs).unwrap();
    assert_eq!(out[192].to_bits(), want_loss.to_bits(), "loss");
    assert_eq!(&out[64..64 + want_grad.len()], &want_grad[..], "gradient");
    // A gradient view overlapping the loss value's in one buffer is refused.
    let overlapping = kernel.bind_cross_entropy(device, batch, classes, &ins, View::at(&ins, 512), View::at(&outs, 0), View::at(&outs, 0));
    assert!(matches!(overlapping, Err(Error::Aliased { .. })));
}
