//! The fused RNN recurrence (whole sequence forward, whole BPTT backward, one dispatch
//! each) against its CPU twin at odd sizes, and its backward against central finite
//! differences of L = Σ G ⊙ h_T.

mod common;

use common::{download, gpu, upload};

use gradguard::cpu::rnn as twin;
use gradguard::kernels::activation::Activation;
use gradguard::kernels::rnn::{RnnBackward, RnnForward, RnnKernel, RnnLayout, RnnShape};
use gradguard::Error;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random(rng: &mut StdRng, n: u64, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Device forward then backward; returns (pre-activations, hidden states, last state,
/// pre-activation gradients).
fn device_run(kernel: &RnnKernel, shape: &RnnShape, w_h: &[f32], p: &[f32], d_last: &[f32]) -> [Vec<f32>; 4] {
    let device = &gpu().device;
    let (gw, gdl) = (upload(w_h), upload(d_last));
    let mut p = p.to_vec();
    p.resize(shape.pre_len() as usize, 0.0);
    let gpre = upload(&p);
    let (ghs, glast) = (upload(&vec![0.0; shape.hs_len() as usize]), upload(&vec![0.0; shape.step_len() as usize]));
    let forward = kernel.bind_forward(device, shape, RnnForward { w_h: (&gw).into(), pre: (&gpre).into(), hs: (&ghs).into(), last: (&glast).into() }).unwrap();
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
    let shapes = [(1, 1, 1), (7, 2, 3), (50, 37, 3), (129, 37, 1), (256, 200, 3), (50, 200, 64), (33, 3, 64), (32, 200, 64)];
    for ((hidden, steps, batch), activation) in shapes.into_iter().flat_map(|s| [(s, Activation::Tanh), (s, Activation::Relu)]) {
        for (kernel, layout) in kernels.iter().zip(layouts) {
            let shape = RnnShape { batch, hidden, steps, activation };
            // Recurrent weights of spectral radius about 1 keep 200 steps finite.
            let w_h = random(&mut rng, hidden as u64 * hidden as u64, 1.7 / (hidden as f32).sqrt());
            let p = random(&mut rng, shape.sequence_len(), 1.0);
            let d_last = random(&mut rng, shape.step_len(), 1.0);
            let [pre, hs, last, dpre] = device_run(kernel, &shape, &w_h, &p, &d_last);
            let mut want_pre = p.clone();
            want_pre.resize(pre.len(), 0.0);
            let mut want_hs = vec![0.0; hs.len()];
            let mut want_last = vec![0.0; last.len()];
            twin::forward(&shape, &w_h, &mut want_pre, &mut want_hs, &mut want_last);
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

/// dL/dP_t from the device's backward against central differences of the f64 forward,
/// L = Σ G ⊙ h_T, P the input projection of every step.
#[test]
fn backward_matches_finite_differences() {
    let kernel = RnnKernel::new(&gpu().device).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    for (hidden, steps, batch) in [(1, 1, 1), (7, 5, 2), (13, 9, 3)] {
        let shape = RnnShape { batch, hidden, steps, activation: Activation::Tanh };
        let (h, b) = (hidden as usize, batch as usize);
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
        let [_, _, _, dpre] = device_run(&kernel, &shape, &w_h, &p, &g);
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
    let buf = upload(&[0.0; 64]);
    let other = upload(&[0.0; 64]);
    let shape = RnnShape { batch: 2, hidden: 2, steps: 3, activation: Activation::Tanh };
    for bad in [RnnShape { steps: 0, ..shape }, RnnShape { hidden: 0, ..shape }, RnnShape { batch: 0, ..shape }] {
        let hs = upload(&[0.0; 64]);
        let last = upload(&[0.0; 4]);
        let b = RnnForward { w_h: (&buf).into(), pre: (&other).into(), hs: (&hs).into(), last: (&last).into() };
        assert!(matches!(kernel.bind_forward(device, &bad, b), Err(Error::Invalid(_))), "{bad:?}");
    }
    let (hs, last) = (upload(&[0.0; 64]), upload(&[0.0; 4]));
    let aliased = RnnForward { w_h: (&buf).into(), pre: (&hs).into(), hs: (&hs).into(), last: (&last).into() };
    assert!(matches!(kernel.bind_forward(device, &shape, aliased), Err(Error::Invalid(_))));
    let short = upload(&[0.0; 3]);
    let b = RnnForward { w_h: (&buf).into(), pre: (&other).into(), hs: (&hs).into(), last: (&short).into() };
    assert!(matches!(kernel.bind_forward(device, &shape, b), Err(Error::LengthMismatch { .. })));
}

