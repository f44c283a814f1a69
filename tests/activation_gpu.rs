//! Activation kernels against their CPU twin, the twin's derivatives against finite
//! differences, GELU against exact values, and bad input.

mod common;

use common::{gpu, upload};

use gradguard::cpu::activation as twin;
use gradguard::kernels::activation::{Activation, ActivationKernel};
use gradguard::readback::read_f32s;
use gradguard::wgpu;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn run(kernel: &ActivationKernel, binding: &gradguard::kernels::activation::ActivationBinding) {
    let mut encoder = gpu().device.create_command_encoder(&Default::default());
    kernel.encode(&mut encoder.begin_compute_pass(&Default::default()), binding);
    gpu().queue.submit([encoder.finish()]);
}

const ALL: [Activation; 8] = [
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu(0.01),
    Activation::LeakyRelu(-0.3),
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::GELU,
    Activation::GELU_TANH,
];

fn inputs(len: usize, seed: u64) -> Vec<f32> {
    let special = [0.0, -0.0, 1e-4, -1e-4, 0.3, -0.3, 0.7, -0.7, 5.0, -5.0, 12.0, -12.0, 100.0, -100.0, 1e30, -1e30];
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|i| if i < special.len() { special[i] } else { rng.random_range(-8.0..8.0) }).collect()
}

fn close(got: f32, want: f64) -> bool {
    (got as f64 - want).abs() <= 1e-6 + 4e-6 * want.abs()
}

#[test]
fn forward_and_backward_match_twin() {
    let device = &gpu().device;
    let kernel = ActivationKernel::new(device).unwrap();
    for len in [1usize, 255, 257, 100_003] {
        let x = inputs(len, len as u64);
        let dy: Vec<f32> = inputs(len, 7).iter().map(|v| v.clamp(-3.0, 3.0)).collect();
        let (gx, gdy, gy, gdx) = (upload(&x), upload(&dy), upload(&vec![0.0; len]), upload(&vec![0.0; len]));
        for act in ALL {
            run(&kernel, &kernel.bind_forward(device, act, len as u64, &gx, &gy).unwrap());
            run(&kernel, &kernel.bind_backward(device, act, len as u64, &gx, &gdy, &gdx).unwrap());
            let y = read_f32s(device, &gpu().queue, &gy).unwrap();
            let dx = read_f32s(device, &gpu().queue, &gdx).unwrap();
            for i in 0..len {
                let xi = x[i] as f64;
                let want_y = twin::forward(act, xi);
                let want_dx = dy[i] as f64 * twin::derivative(act, xi);
                assert!(close(y[i], want_y), "{act:?} forward x={xi}: gpu {} twin {want_y}", y[i]);
                assert!(close(dx[i], want_dx), "{act:?} backward x={xi} dy={}: gpu {} twin {want_dx}", dy[i], dx[i]);
            }
        }
    }
}

#[test]
fn twin_derivatives_match_finite_differences() {
    let h = 1e-5;
    for act in ALL {
        for x in inputs(2000, 3) {
            let x = x as f64;
            if x.abs() > 50.0 || x.abs() < 2.0 * h {
                continue; // the kink of relu at 0; flat tails
            }
            let fd = (twin::forward(act, x + h) - twin::forward(act, x - h)) / (2.0 * h);
            let d = twin::derivative(act, x);
            assert!((fd - d).abs() < 1e-5 * (1.0 + d.abs()), "{act:?} at {x}: f' {d}, finite difference {fd}");
        }
    }
}

/// x·Φ(x) and its derivative from Python's math.erf (what torch computes in f64).
#[test]
fn gelu_is_the_exact_erf_form() {
    let device = &gpu().device;
    let kernel = ActivationKernel::new(device).unwrap();
    let cases: [(f32, f64, f64); 8] = [
        (1.0, 0.8413447460685429, 1.0833154705876864),
        (-1.0, -0.15865525393145707, -0.08331547058768629),
        (2.0, 1.9544997361036416, 1.085231801078197),
        (-3.0, -0.00404969409489031, -0.011945647204183918),
        (0.5, 0.34573123063700656, 0.8674951246561629),
        (-0.5, -0.15426876936299344, 0.13250487534383712),
        (5.0, 4.999998566742141, 1.000007146946002),
        (-5.0, -1.4332578593401202e-06, -7.146946001803465e-06),
    ];
    let x: Vec<f32> = cases.iter().map(|c| c.0).collect();
    let n = x.len() as u64;
    let (gx, gdy, gy, gdx) =
        (upload(&x), upload(&vec![1.0; x.len()]), upload(&vec![0.0; x.len()]), upload(&vec![0.0; x.len()]));
    run(&kernel, &kernel.bind_forward(device, Activation::GELU, n, &gx, &gy).unwrap());
    run(&kernel, &kernel.bind_backward(device, Activation::GELU, n, &gx, &gdy, &gdx).unwrap());
    let y = read_f32s(device, &gpu().queue, &gy).unwrap();
    let dx = read_f32s(device, &gpu().queue, &gdx).unwrap();
    for (i, (x, want_y, want_d)) in cases.iter().enumerate() {
        assert!((y[i] as f64 - want_y).abs() <= 1e-6 * want_y.abs().max(1e-3), "gelu({x}) = {} want {want_y}", y[i]);
        assert!((dx[i] as f64 - want_d).abs() <= 1e-6 * want_d.abs().max(1e-3), "gelu'({x}) = {} want {want_d}", dx[i]);
    }
}

#[test]
fn relu_masks_infinite_upstream_gradients() {
    let device = &gpu().device;
    let kernel = ActivationKernel::new(device).unwrap();
    let (gx, gdy, gdx) = (upload(&[-1.0, 2.0]), upload(&[f32::INFINITY, 3.0]), upload(&[9.0, 9.0]));
    run(&kernel, &kernel.bind_backward(device, Activation::Relu, 2, &gx, &gdy, &gdx).unwrap());
    assert_eq!(read_f32s(device, &gpu().queue, &gdx).unwrap(), vec![0.0, 3.0]);
}

/// NaN and ±inf in, what torch.nn.functional gives out (PyTorch 2.15 on the CPU): relu
/// keeps NaN, and its backward passes the gradient on at NaN (threshold_backward zeroes
/// only where x <= 0). One difference: torch's gelu(+inf) is NaN, ours its limit +inf.
#[test]
fn nonfinite_inputs_give_what_torch_gives() {
    let device = &gpu().device;
    let kernel = ActivationKernel::new(device).unwrap();
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    let x = [nan, inf, -inf];
    let torch: [(Activation, [f32; 3]); 7] = [
        (Activation::Identity, [nan, inf, -inf]),
        (Activation::Relu, [nan, inf, 0.0]),
        (Activation::LeakyRelu(0.01), [nan, inf, -inf]),
        (Activation::Tanh, [nan, 1.0, -1.0]),
        (Activation::Sigmoid, [nan, 1.0, 0.0]),
        (Activation::GELU, [nan, inf, nan]),
        (Activation::GELU_TANH, [nan, inf, nan]),
    ];
    let same = |a: f32, b: f64| (a.is_nan() && b.is_nan()) || a as f64 == b;
    let (gx, gdy, gy, gdx) = (upload(&x), upload(&[2.0; 3]), upload(&[0.0; 3]), upload(&[0.0; 3]));
    for (act, want) in torch {
        run(&kernel, &kernel.bind_forward(device, act, 3, &gx, &gy).unwrap());
        let y = read_f32s(device, &gpu().queue, &gy).unwrap();
        for i in 0..3 {
            assert!(same(y[i], want[i] as f64), "{act:?}({}) = {}, torch {}", x[i], y[i], want[i]);
            assert!(same(y[i], twin::forward(act, x[i] as f64)), "{act:?}({}): twin {}", x[i], twin::forward(act, x[i] as f64));
        }
    }
    run(&kernel, &kernel.bind_backward(device, Activation::Relu, 3, &gx, &gdy, &gdx).unwrap());
    assert_eq!(read_f32s(device, &gpu().queue, &gdx).unwrap(), vec![2.0, 2.0, 0.0], "relu backward at NaN, inf, -inf");
    assert_eq!(twin::grad_through(Activation::Relu, 2.0, f64::NAN), 2.0);
}

#[test]
fn bad_input_is_a_typed_error() {
    use gradguard::Error;
    let device = &gpu().device;
    let kernel = ActivationKernel::new(device).unwrap();
    let (a, b, small) = (upload(&[0.0; 8]), upload(&[0.0; 8]), upload(&[0.0; 4]));
    let no_storage = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 32,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    assert!(matches!(kernel.bind_forward(device, Activation::Relu, 0, &a, &b), Err(Error::Empty { .. })));
    assert!(matches!(kernel.bind_forward(device, Activation::Relu, 8, &a, &small), Err(Error::LengthMismatch { .. })));
    assert!(matches!(kernel.bind_forward(device, Activation::Relu, 8, &a, &a), Err(Error::Aliased { .. })));
    assert!(matches!(
        kernel.bind_forward(device, Activation::Relu, 8, &no_storage, &b),
        Err(Error::MissingBufferUsage { .. })
    ));
    assert!(matches!(kernel.bind_forward(device, Activation::LeakyRelu(f32::NAN), 8, &a, &b), Err(Error::OutOfRange { what: "leaky relu slope", .. })));
    assert!(matches!(kernel.bind_backward(device, Activation::Tanh, 8, &a, &b, &b), Err(Error::Aliased { .. })));
}

/// `torch.nn.functional.gelu(x, approximate='tanh')` and its gradient, from PyTorch 2.15 in
/// float64 on the CPU.
#[test]
fn gelu_tanh_matches_torch() {
    let device = &gpu().device;
    let kernel = ActivationKernel::new(device).unwrap();
    let cases: [(f32, f64, f64); 6] = [
        (0.5, 0.34571400982514394, 0.8673699035346424),
        (-0.5, -0.15428599017485606, 0.13263009646535764),
        (5.0, 4.999999770820381, 1.000001546361988),
        (-5.0, -2.2917961972623857e-07, -1.5463619879596227e-06),
        (-3.0, -0.0036373920817729943, -0.011584166630969648),
        (2.0, 1.954597694087775, 1.0860992566236183),
    ];
    let x: Vec<f32> = cases.iter().map(|c| c.0).collect();
    let n = x.len() as u64;
    let (gx, gdy, gy, gdx) = (upload(&x), upload(&vec![1.0; x.len()]), upload(&vec![0.0; x.len()]), upload(&vec![0.0; x.len()]));
    run(&kernel, &kernel.bind_forward(device, Activation::GELU_TANH, n, &gx, &gy).unwrap());
    run(&kernel, &kernel.bind_backward(device, Activation::GELU_TANH, n, &gx, &gdy, &gdx).unwrap());
    let y = read_f32s(device, &gpu().queue, &gy).unwrap();
    let dx = read_f32s(device, &gpu().queue, &gdx).unwrap();
    for (i, (x, want_y, want_d)) in cases.iter().enumerate() {
        // Relative to the value: x·σ(2u) keeps accuracy at x = −5, where torch's own f32
        // formula 0.5·x·(1 + tanh u) cancels.
        assert!((y[i] as f64 - want_y).abs() <= 2e-6 * want_y.abs(), "gelu_tanh({x}) = {} want {want_y}", y[i]);
        assert!((dx[i] as f64 - want_d).abs() <= 2e-6 * want_d.abs().max(1e-3), "gelu_tanh'({x}) = {} want {want_d}", dx[i]);
        assert!((twin::forward(Activation::GELU_TANH, *x as f64) - want_y).abs() <= 1e-12 * want_y.abs().max(1e-3));
        assert!((twin::derivative(Activation::GELU_TANH, *x as f64) - want_d).abs() <= 1e-12);
    }
}

/// Views inside larger buffers at non-zero offsets, and in-place passes, against the twin;
/// a writable view overlapping another binding of its buffer is refused.
#[test]
fn views_at_offsets_and_in_place_passes_match_twin() {
    use gradguard::kernels::View;
    let device = &gpu().device;
    let kernel = ActivationKernel::new(device).unwrap();
    let len = 300usize;
    let (x, dy) = (inputs(len, 3), inputs(len, 4).iter().map(|v| v.clamp(-2.0, 2.0)).collect::<Vec<f32>>());
    // x at byte 256 and dy at byte 2048 of one buffer; outputs at byte 512 of another.
    let mut host = vec![0.0f32; 3000];
    host[64..64 + len].copy_from_slice(&x);
    host[512..512 + len].copy_from_slice(&dy);
    let (inputs_buf, outputs) = (upload(&host), upload(&vec![0.0; 1000]));
    let (vx, vdy, vout) = (View::at(&inputs_buf, 256), View::at(&inputs_buf, 2048), View::at(&outputs, 512));
    for act in ALL {
        run(&kernel, &kernel.bind_forward(device, act, len as u64, vx, vout).unwrap());
        let y = common::download(&outputs)[128..128 + len].to_vec();
        run(&kernel, &kernel.bind_backward(device, act, len as u64, vx, vdy, vout).unwrap());
        let dx = common::download(&outputs)[128..128 + len].to_vec();
        // In place: the operand at byte 512 of its own buffer.
        let own = upload(&[vec![0.0; 128], x.clone()].concat());
        run(&kernel, &kernel.bind_forward_in_place(device, act, len as u64, View::at(&own, 512)).unwrap());
        let y_in_place = common::download(&own)[128..].to_vec();
        let grads = upload(&[vec![0.0; 128], dy.clone()].concat());
        run(&kernel, &kernel.bind_backward_in_place(device, act, len as u64, vx, View::at(&grads, 512)).unwrap());
        let dx_in_place = common::download(&grads)[128..].to_vec();
        for i in 0..len {
            let (want_y, want_dx) = (twin::forward(act, x[i] as f64), twin::grad_through(act, dy[i] as f64, x[i] as f64));
            assert!(close(y[i], want_y) && close(y_in_place[i], want_y), "{act:?} forward at {i}: {} / {} vs {want_y}", y[i], y_in_place[i]);
            assert!(close(dx[i], want_dx) && close(dx_in_place[i], want_dx), "{act:?} backward at {i}: {} / {} vs {want_dx}", dx[i], dx_in_place[i]);
        }
    }
    // The output overlapping the input's range of the same buffer, and an unaligned offset.
    let overlapping = kernel.bind_forward(device, Activation::Relu, len as u64, vx, View::at(&inputs_buf, 512));
    assert!(matches!(overlapping, Err(gradguard::Error::Aliased { .. })), "an output overlapping the input is refused");
    let unaligned = kernel.bind_forward_in_place(device, Activation::Relu, 4, View::at(&outputs, 4));
    assert!(matches!(unaligned, Err(gradguard::Error::Misaligned { offset: 4, align: 256, .. })), "an offset not a multiple of 256 bytes is refused");
}
