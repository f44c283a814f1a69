//! BatchNorm1d kernels against their CPU twin, the twin's backward against finite
//! differences, the running stats after one hand-computed step, and bad input.

mod common;

use common::{gpu, upload};

use gradguard::cpu::batchnorm as twin;
use gradguard::kernels::batchnorm::{
    BatchNorm, BatchNormBackward, BatchNormBinding, BatchNormEval, BatchNormKernel, BatchNormRunning, BatchNormTrain,
};
use gradguard::readback::read_f32s;
use gradguard::wgpu;
use gradguard::Error;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn read(buffer: &wgpu::Buffer) -> Vec<f32> {
    read_f32s(&gpu().device, &gpu().queue, buffer).unwrap()
}

fn run(kernel: &BatchNormKernel, binding: &BatchNormBinding) {
    let mut encoder = gpu().device.create_command_encoder(&Default::default());
    kernel.encode(&mut encoder.begin_compute_pass(&Default::default()), binding);
    gpu().queue.submit([encoder.finish()]);
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((*g as f64 - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: gpu {g}, twin {w}");
    }
}

#[test]
fn train_eval_backward_match_twin() {
    let device = &gpu().device;
    let kernel = BatchNormKernel::new(device).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    for (batch, features) in [(2u32, 1u32), (7, 13), (255, 257), (1000, 3)] {
        let bn = BatchNorm::new(batch, features);
        let (len, nf) = ((batch * features) as usize, features as usize);
        let mut random = |n: usize, lo: f32, hi: f32| (0..n).map(|_| rng.random_range(lo..hi)).collect::<Vec<f32>>();
        // An offset mean stresses the two-pass variance.
        let x: Vec<f32> = random(len, -1.0, 1.0).iter().map(|v| v * 3.0 + 5.0).collect();
        let (gamma, beta, dy) = (random(nf, 0.5, 1.5), random(nf, -1.0, 1.0), random(len, -1.0, 1.0));
        let (rm0, rv0) = (random(nf, -1.0, 1.0), random(nf, 0.5, 2.0));
        let (gx, ggamma, gbeta, gdy) = (upload(&x), upload(&gamma), upload(&beta), upload(&dy));
        let (gy, gsaved, grm, grv) = (upload(&vec![0.0; len]), upload(&vec![0.0; 2 * nf]), upload(&rm0), upload(&rv0));
        let (gdx, gdgamma, gdbeta, gy_eval) =
            (upload(&vec![0.0; len]), upload(&vec![0.0; nf]), upload(&vec![0.0; nf]), upload(&vec![0.0; len]));
        let train = BatchNormTrain {
            x: (&gx).into(),
            gamma: (&ggamma).into(),
            beta: (&gbeta).into(),
            y: (&gy).into(),
            saved: (&gsaved).into(),
            running_mean: (&grm).into(),
            running_var: (&grv).into(),
        };
        run(&kernel, &kernel.bind_train(device, &bn, train).unwrap());
        let back = BatchNormBackward {
            x: (&gx).into(),
            gamma: (&ggamma).into(),
            saved: (&gsaved).into(),
            dy: (&gdy).into(),
            dx: (&gdx).into(),
            dgamma: (&gdgamma).into(),
            dbeta: (&gdbeta).into(),
        };
        run(&kernel, &kernel.bind_backward(device, &bn, back).unwrap());
        let eval =
            BatchNormEval { x: (&gx).into(), gamma: (&ggamma).into(), beta: (&gbeta).into(), y: (&gy_eval).into(), running_mean: (&grm).into(), running_var: (&grv).into() };
        run(&kernel, &kernel.bind_eval(device, &bn, eval).unwrap());

        let (mut rm, mut rv) = (widen(&rm0), widen(&rv0));
        let (xd, gd, bd) = (widen(&x), widen(&gamma), widen(&beta));
        let (y, mean, inv_std) = twin::train(&bn, &xd, &gd, &bd, &mut rm, &mut rv);
        let (dx, dgamma, dbeta) = twin::backward(&bn, &xd, &gd, &mean, &inv_std, &widen(&dy));
        let y_eval = twin::eval(&bn, &xd, &gd, &bd, &rm, &rv);
        let what = |s: &str| format!("{batch}x{features} {s}");
        assert_close(&what("y"), &read(&gy), &y, 1e-5);
        assert_close(&what("saved"), &read(&gsaved), &[mean, inv_std].concat(), 1e-5);
        assert_close(&what("running mean"), &read(&grm), &rm, 1e-5);
        assert_close(&what("running var"), &read(&grv), &rv, 1e-5);
        assert_close(&what("eval y"), &read(&gy_eval), &y_eval, 1e-5);
        // Sums over the batch lose about √batch·ε relative to the summed magnitudes.
        let tol = 1e-6 * (batch as f64).sqrt() * 4.0;
        assert_close(&what("dx"), &read(&gdx), &dx, tol);
        assert_close(&what("dgamma"), &read(&gdgamma), &dgamma, tol);
        assert_close(&what("dbeta"), &read(&gdbeta), &dbeta, tol);
    }
}

/// One training step on a feature [1, 2, 3, 4]: mean 2.5, biased variance 1.25 (used to
/// normalize), unbiased 5/3 (used for the running variance): running mean 0.25 and running
/// variance 0.9·1 + 0.1·5/3 from torch's initial (0, 1).
#[test]
fn running_stats_after_one_step() {
    let device = &gpu().device;
    let kernel = BatchNormKernel::new(device).unwrap();
    let bn = BatchNorm::new(4, 1);
    let (gx, ggamma, gbeta) = (upload(&[1.0, 2.0, 3.0, 4.0]), upload(&[1.0]), upload(&[0.0]));
    let (gy, gsaved, grm, grv) = (upload(&[0.0; 4]), upload(&[0.0; 2]), upload(&[0.0]), upload(&[1.0]));
    let train = BatchNormTrain {
        x: (&gx).into(),
        gamma: (&ggamma).into(),
        beta: (&gbeta).into(),
        y: (&gy).into(),
        saved: (&gsaved).into(),
        running_mean: (&grm).into(),
        running_var: (&grv).into(),
    };
    run(&kernel, &kernel.bind_train(device, &bn, train).unwrap());
    let inv_std = 1.0 / (1.25f64 + 1e-5).sqrt();
    assert_close("running mean", &read(&grm), &[0.25], 1e-7);
    assert_close("running var", &read(&grv), &[0.9 + 0.1 * 5.0 / 3.0], 1e-7);
    assert_close("saved", &read(&gsaved), &[2.5, inv_std], 1e-7);
    assert_close("y", &read(&gy), &[-1.5 * inv_std, -0.5 * inv_std, 0.5 * inv_std, 1.5 * inv_std], 1e-6);
}

/// The twin's backward against central differences of L = Σ G ⊙ y(x, γ, β), y the training
/// forward with batch statistics.
#[test]
fn twin_backward_matches_finite_differences() {
    let bn = BatchNorm::new(5, 3);
    let mut rng = StdRng::seed_from_u64(2);
    let mut random = |n: usize| (0..n).map(|_| rng.random_range(-1.0..1.0)).collect::<Vec<f64>>();
    let (x, gamma, beta, g) = (random(15), random(3), random(3), random(15));
    let loss = |v: &[Vec<f64>]| {
        let (mut rm, mut rv) = (vec![0.0; 3], vec![1.0; 3]);
        let y = twin::train(&bn, &v[0], &v[1], &v[2], &mut rm, &mut rv).0;
        y.iter().zip(&g).map(|(y, g)| y * g).sum::<f64>()
    };
    let base = vec![x.clone(), gamma.clone(), beta.clone()];
    let (_, mean, inv_std) = twin::train(&bn, &x, &gamma, &beta, &mut [0.0; 3], &mut [1.0; 3]);
    let (dx, dgamma, dbeta) = twin::backward(&bn, &x, &gamma, &mean, &inv_std, &g);
    for (which, analytic) in [(0usize, dx), (1, dgamma), (2, dbeta)] {
        for (i, a) in analytic.iter().enumerate() {
            let at = |h: f64| {
                let mut v = base.clone();
                v[which][i] += h;
                loss(&v)
            };
            let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
            assert!(
                (a - numeric).abs() < 1e-6 * (1.0 + a.abs()),
                "operand {which}[{i}]: analytic {a}, finite difference {numeric}"
            );
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let device = &gpu().device;
    let kernel = BatchNormKernel::new(device).unwrap();
    let (x, y, f1, f2, f3, f4, saved) = (
        upload(&[0.0; 8]),
        upload(&[0.0; 8]),
        upload(&[0.0; 4]),
        upload(&[0.0; 4]),
        upload(&[0.0; 4]),
        upload(&[0.0; 4]),
        upload(&[0.0; 8]),
    );
    let no_storage = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 32,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let train =
        BatchNormTrain { x: (&x).into(), gamma: (&f1).into(), beta: (&f2).into(), y: (&y).into(), saved: (&saved).into(), running_mean: (&f3).into(), running_var: (&f4).into() };
    assert!(kernel.bind_train(device, &BatchNorm::new(2, 4), train).is_ok());
    assert!(matches!(kernel.bind_train(device, &BatchNorm::new(1, 4), train), Err(Error::OutOfRange { what: "batch norm batch", .. })));
    assert!(matches!(kernel.bind_train(device, &BatchNorm::new(0, 4), train), Err(Error::OutOfRange { what: "batch norm batch", .. })));
    assert!(matches!(kernel.bind_train(device, &BatchNorm::new(4, 4), train), Err(Error::LengthMismatch { .. })));
    assert!(matches!(
        kernel.bind_train(device, &BatchNorm::new(2, 4), BatchNormTrain { y: (&x).into(), ..train }),
        Err(Error::Aliased { .. })
    ));
    assert!(matches!(
        kernel.bind_train(device, &BatchNorm::new(2, 4), BatchNormTrain { x: (&no_storage).into(), ..train }),
        Err(Error::MissingBufferUsage { .. })
    ));
    assert!(matches!(
        kernel.bind_train(device, &BatchNorm { eps: 0.0, ..BatchNorm::new(2, 4) }, train),
        Err(Error::NotPositive { what: "batch norm eps", .. })
    ));
    let eval = BatchNormEval { x: (&x).into(), gamma: (&f1).into(), beta: (&f2).into(), y: (&y).into(), running_mean: (&f3).into(), running_var: (&f4).into() };
    assert!(kernel.bind_eval(device, &BatchNorm::new(1, 4), eval).is_ok(), "eval works on a batch of one");
    let back = BatchNormBackward { x: (&x).into(), gamma: (&f1).into(), saved: (&saved).into(), dy: (&y).into(), dx: (&no_storage).into(), dgamma: (&f3).into(), dbeta: (&f4).into() };
    assert!(matches!(kernel.bind_backward(device, &BatchNorm::new(2, 4), back), Err(Error::MissingBufferUsage { .. })));
}

/// The deferred forward leaves the running stats alone; the `running` pass then moves them
/// exactly as the immediate forward does, unless the norm's skip flag (word 2) is set.
#[test]
fn deferred_running_update_obeys_the_skip_flag() {
    let device = &gpu().device;
    let kernel = BatchNormKernel::new(device).unwrap();
    let (batch, features) = (7, 70); // more features than one 64-thread workgroup
    let bn = BatchNorm::new(batch, features);
    let mut rng = StdRng::seed_from_u64(3);
    let x: Vec<f32> = (0..batch * features).map(|_| rng.random::<f32>() * 4.0 - 1.0).collect();
    let f = features as usize;
    let rm0: Vec<f32> = (0..f).map(|i| i as f32 * 0.01).collect();
    let rv0: Vec<f32> = (0..f).map(|i| 1.0 + i as f32 * 0.02).collect();
    let (gx, ggamma, gbeta) = (upload(&x), upload(&vec![1.0; f]), upload(&vec![0.0; f]));

    // Immediate, for reference.
    let (gy, gsaved, grm, grv) = (upload(&vec![0.0; x.len()]), upload(&vec![0.0; 2 * f]), upload(&rm0), upload(&rv0));
    let train = BatchNormTrain { x: (&gx).into(), gamma: (&ggamma).into(), beta: (&gbeta).into(), y: (&gy).into(), saved: (&gsaved).into(), running_mean: (&grm).into(), running_var: (&grv).into() };
    run(&kernel, &kernel.bind_train(device, &bn, train).unwrap());

    for skip in [0u32, 1] {
        let (dy, dsaved, drm, drv) = (upload(&vec![0.0; x.len()]), upload(&vec![0.0; 3 * f]), upload(&rm0), upload(&rv0));
        let stats = upload(&[0.0, 0.0, f32::from_bits(skip), 0.0]);
        let train = BatchNormTrain { x: (&gx).into(), gamma: (&ggamma).into(), beta: (&gbeta).into(), y: (&dy).into(), saved: (&dsaved).into(), running_mean: (&drm).into(), running_var: (&drv).into() };
        run(&kernel, &kernel.bind_train_deferred(device, &bn, train).unwrap());
        assert_eq!(read(&drm), rm0, "the deferred forward leaves the running mean alone");
        assert_eq!(read(&drv), rv0);
        assert_close("deferred y", &read(&dy), &widen(&read(&gy)), 1e-7);
        assert_close("deferred saved", &read(&dsaved)[..2 * f], &widen(&read(&gsaved)), 1e-7);
        let running = BatchNormRunning { saved: (&dsaved).into(), running_mean: (&drm).into(), running_var: (&drv).into(), norm_stats: (&stats).into() };
        run(&kernel, &kernel.bind_running(device, &bn, running).unwrap());
        if skip == 0 {
            assert_close("deferred running mean", &read(&drm), &widen(&read(&grm)), 1e-6);
            assert_close("deferred running var", &read(&drv), &widen(&read(&grv)), 1e-6);
            // And against the twin's update from the saved batch statistics.
            let saved = widen(&read(&dsaved));
            let (mut rm, mut rv) = (widen(&rm0), widen(&rv0));
            twin::running(&bn, &saved[..f], &saved[2 * f..], &mut rm, &mut rv, false);
            assert_close("twin running mean", &read(&drm), &rm, 1e-6);
            assert_close("twin running var", &read(&drv), &rv, 1e-6);
        } else {
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            assert_eq!(bits(read(&drm)), bits(rm0.clone()), "skipped: running mean bitwise unchanged");
            assert_eq!(bits(read(&drv)), bits(rv0.clone()), "skipped: running var bitwise unchanged");
        }
    }

    // Bad input: a saved buffer without the third row, a stats buffer without the flag.
    let (short_saved, rm, rv) = (upload(&vec![0.0; 2 * f]), upload(&rm0), upload(&rv0));
    let stats = upload(&[0.0; 4]);
    let bad = BatchNormRunning { saved: (&short_saved).into(), running_mean: (&rm).into(), running_var: (&rv).into(), norm_stats: (&stats).into() };
    assert!(matches!(kernel.bind_running(device, &bn, bad), Err(Error::LengthMismatch { .. })));
    let (saved, tiny) = (upload(&vec![0.0; 3 * f]), upload(&[0.0; 2]));
    let bad = BatchNormRunning { saved: (&saved).into(), running_mean: (&rm).into(), running_var: (&rv).into(), norm_stats: (&tiny).into() };
    assert!(matches!(kernel.bind_running(device, &bn, bad), Err(Error::LengthMismatch { .. })));
    let bad = BatchNormRunning { saved: (&saved).into(), running_mean: (&rm).into(), running_var: (&rm).into(), norm_stats: (&stats).into() };
    assert!(matches!(kernel.bind_running(device, &bn, bad), Err(Error::Aliased { .. })));
}

#[test]
fn running_stats_start_as_batchnorm1d_starts_them() {
    let bn = gradguard::kernels::batchnorm::BatchNorm::new(4, 3);
    let stats = bn.running_stats(&gpu().device, common::USAGE).unwrap();
    assert_eq!(common::download(&stats.mean), [0.0; 3], "running_mean = zeros(features)");
    assert_eq!(common::download(&stats.var), [1.0; 3], "running_var = ones(features)");
    let none = gradguard::kernels::batchnorm::BatchNorm::new(4, 0);
    assert!(none.running_stats(&gpu().device, common::USAGE).is_err());
}
