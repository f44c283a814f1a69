//! The fused RNN (whole sequence forward with its input projection, whole BPTT backward,
//! one dispatch each) against its CPU twin at odd sizes, and its backward against central
//! finite differences of L = Σ G ⊙ h_T.

mod common;

use common::{download, gpu, upload};

use gradguard::cpu::rnn::{self as twin, RnnWeights};
use gradguard::kernels::activation::Activation;
use gradguard::kernels::rnn::{RnnBackward, RnnForward, RnnKernel, RnnLayout, RnnShape};
use gradguard::Error;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random(rng: &mut StdRng, n: u64, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Padded to whole vec4s, as the kernel reads W_h.
fn upload4(v: &[f32]) -> gradguard::wgpu::Buffer {
    let mut v = v.to_vec();
    v.resize(v.len().next_multiple_of(4), 0.0);
    upload(&v)
}

/// Device forward then backward; returns (pre-activations, hidden states, last state,
/// pre-activation gradients).
fn device_run(kernel: &RnnKernel, shape: &RnnShape, w: RnnWeights<'_>, x: &[f32], d_last: &[f32]) -> [Vec<f32>; 4] {
    let device = &gpu().device;
    let (gw, gwx, gb, gx, gdl) = (upload4(w.w_h), upload(w.w_x), upload(w.bias), upload(x), upload(d_last));
    let zeros = |n: u64| upload(&vec![0.0; n as usize]);
    let (gpre, ghs, glast) = (zeros(shape.pre_len()), zeros(shape.hs_len()), zeros(shape.step_len()));
    let views = RnnForward {
        x: (&gx).into(),
        w_x: (&gwx).into(),
        bias: (&gb).into(),
        w_h: (&gw).into(),
        pre: (&gpre).into(),
        hs: (&ghs).into(),
        last: (&glast).into(),
    };
    let forward = kernel.bind_forward(device, shape, views).unwrap();
    let run = |binding| {
        let mut encoder = device.create_command_encoder(&Default::default());
        kernel.encode(&mut encoder.begin_compute_pass(&Default::default()), binding);
        gpu().queue.submit([encoder.finish()]);
    };
    run(&forward);
    let pre = download(&gpre);
    let backward = kernel.bind_backward(device, shape, RnnBackward { w_h: (&gw).into(), pre: (&gpre).into(), d_last: (&gdl).into() }).unwrap();
    run(&backward);
    [pre, download(&ghs), download(&glast), download(&gpre)]
}

fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= rel * scale, "{what}[{i}]: gpu {g}, twin {w} (scale {scale})");
    }
}

/// Both layouts (one workgroup per sequence, one invocation per sequence), whichever the
/// device would pick, on shapes that cover the vec4 and scalar paths and, on lavapipe,
/// sequences cut into several dispatches.
#[test]
fn recurrence_matches_twin_at_odd_sizes() {
    let layouts = [RnnLayout::Workgroup, RnnLayout::Invocation];
    let kernels = layouts.map(|l| RnnKernel::with_layout(&gpu().device, l).unwrap());
    let mut rng = StdRng::seed_from_u64(1);
    // (hidden, steps, batch, inputs)
    let shapes = [(1, 1, 1, 1), (7, 2, 3, 2), (50, 37, 3, 5), (129, 37, 1, 2), (256, 200, 3, 1), (50, 200, 64, 2), (33, 3, 64, 3), (32, 200, 64, 2)];
    for ((hidden, steps, batch, inputs), activation) in shapes.into_iter().flat_map(|s| [(s, Activation::Tanh), (s, Activation::Relu)]) {
        for (kernel, layout) in kernels.iter().zip(layouts) {
            let shape = RnnShape { batch, inputs, hidden, steps, activation };
            // Recurrent weights of spectral radius about 1 keep 200 steps finite.
            let w_h = random(&mut rng, hidden as u64 * hidden as u64, 1.7 / (hidden as f32).sqrt());
            let w_x = random(&mut rng, hidden as u64 * inputs as u64, 1.0);
            let bias = random(&mut rng, hidden as u64, 0.5);
            let x = random(&mut rng, shape.x_len(), 1.0);
            let d_last = random(&mut rng, shape.step_len(), 1.0);
            let w = RnnWeights { w_x: &w_x, bias: &bias, w_h: &w_h };
            let [pre, hs, last, dpre] = device_run(kernel, &shape, w, &x, &d_last);
            let mut want_pre = vec![0.0; pre.len()];
            let mut want_hs = vec![0.0; hs.len()];
            let mut want_last = vec![0.0; last.len()];
            twin::forward(&shape, w, &x, &mut want_pre, &mut want_hs, &mut want_last);
            let what = format!("{layout:?} H {hidden} T {steps} B {batch} {activation:?}");
            assert_close(&format!("{what} pre"), &pre, &want_pre, 1e-4);
            assert_close(&format!("{what} hs"), &hs, &want_hs, 1e-4);
            assert_close(&format!("{what} last"), &last, &want_last, 1e-4);
            // The backward from the device's own forward, so that relu's kinks agree.
            let mut want_dpre = pre.clone();
            twin::backward(&shape, &w_h, &mut want_dpre, &d_last);
            assert_close(&format!("{what} dpre"), &dpre, &want_dpre, 1e-4);
        }
    }
}

/// dL/dz_t from the device's backward against central differences of the f64 forward,
/// L = Σ G ⊙ h_T, perturbing the inputs with W_x the identity and no bias, so that
/// x_t is the input projection itself and dL/dx_t = dL/dz_t.
#[test]
fn backward_matches_finite_differences() {
    let kernel = RnnKernel::new(&gpu().device).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    for (hidden, steps, batch) in [(1, 1, 1), (7, 5, 2), (13, 9, 3)] {
        let shape = RnnShape { batch, inputs: hidden, hidden, steps, activation: Activation::Tanh };
        let (h, b) = (hidden as usize, batch as usize);
        let identity: Vec<f32> = (0..h * h).map(|i| if i % (h + 1) == 0 { 1.0 } else { 0.0 }).collect();
        let no_bias = vec![0.0; h];
        let w_h = random(&mut rng, (h * h) as u64, 1.5 / (hidden as f32).sqrt());
        let p = random(&mut rng, shape.sequence_len(), 1.0);
        let g = random(&mut rng, shape.step_len(), 1.0);
        let loss = |p: &[f64]| -> f64 {
            let mut state = vec![0.0f64; b * h];
            for t in 0..steps as usize {
                let prev = state.clone();
                for s in 0..b {
                    for j in 0..h {
                        let z = p[(t * b + s) * h + j] + (0..h).map(|k| w_h[j * h + k] as f64 * prev[s * h + k]).sum::<f64>();
                        state[s * h + j] = z.tanh();
                    }
                }
            }
            state.iter().zip(&g).map(|(h, g)| h * *g as f64).sum()
        };
        let w = RnnWeights { w_x: &identity, bias: &no_bias, w_h: &w_h };
        let [_, _, _, dpre] = device_run(&kernel, &shape, w, &p, &g);
        let wide: Vec<f64> = p.iter().map(|&v| v as f64).collect();
        for i in 0..p.len() {
            let at = |d: f64| {
                let mut v = wide.clone();
                v[i] += d;
                loss(&v)
            };
            let fd = (at(1e-5) - at(-1e-5)) / 2e-5;
            assert!((dpre[i] as f64 - fd).abs() < 2e-4 * (1.0 + fd.abs()), "H {hidden} T {steps} B {batch} dP[{i}]: device {} fd {fd}", dpre[i]);
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let device = &gpu().device;
    let kernel = RnnKernel::new(device).unwrap();
    let (w_h, x, w_x, bias, pre, hs, last) =
        (upload(&[0.0; 4]), upload(&[0.0; 12]), upload(&[0.0; 4]), upload(&[0.0; 2]), upload(&[0.0; 12]), upload(&[0.0; 16]), upload(&[0.0; 4]));
    let good = RnnForward {
        x: (&x).into(),
        w_x: (&w_x).into(),
        bias: (&bias).into(),
        w_h: (&w_h).into(),
        pre: (&pre).into(),
        hs: (&hs).into(),
        last: (&last).into(),
    };
    let shape = RnnShape { batch: 2, inputs: 2, hidden: 2, steps: 3, activation: Activation::Tanh };
    assert!(kernel.bind_forward(device, &shape, good).is_ok());
    for bad in [RnnShape { steps: 0, ..shape }, RnnShape { hidden: 0, ..shape }, RnnShape { batch: 0, ..shape }, RnnShape { inputs: 0, ..shape }] {
        assert!(matches!(kernel.bind_forward(device, &bad, good), Err(Error::OutOfRange { expected: "≥ 1", .. })), "{bad:?}");
    }
    let aliased = RnnForward { pre: (&hs).into(), ..good };
    assert!(matches!(kernel.bind_forward(device, &shape, aliased), Err(Error::Aliased { .. })));
    let short = upload(&[0.0; 3]);
    let b = RnnForward { last: (&short).into(), ..good };
    assert!(matches!(kernel.bind_forward(device, &shape, b), Err(Error::LengthMismatch { .. })));
    let b = RnnForward { x: (&short).into(), ..good };
    assert!(matches!(kernel.bind_forward(device, &shape, b), Err(Error::LengthMismatch { .. })));
}
