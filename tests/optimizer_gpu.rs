//! SGD and AdamW against their CPU twin over several steps and a schedule change, over
//! many tensors in one dispatch (with gaps between them left alone), gradients scaled on
//! read by the norm's global and per-tensor coefficients, hand-computed steps, the skip
//! flag, and bad input.

mod common;

use common::{download, gpu, upload};

use gradguard::cpu::optimizer as twin;
use gradguard::kernels::optimizer::{
    lr_buffer, set_lr, AdamW, GradScale, Optimizer, OptimizerBinding, OptimizerBuffers, OptimizerKernel, OptimizerState,
    Sgd,
};
use gradguard::readback::read_stats_blocking;
use gradguard::wgpu;
use gradguard::{Error, GradNorm, GradSet, GradView, NonFinitePolicy, NormConfig, NormKind};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Parameters, gradients and state on the device (tensors at `ranges` of one buffer), and
/// the twin's copies.
struct Run {
    optimizer: Optimizer,
    ranges: Vec<(u64, u64)>,
    params: (wgpu::Buffer, Vec<f32>),
    grads: (wgpu::Buffer, Vec<f32>),
    state: (OptimizerState, Vec<Vec<f32>>),
    lr: wgpu::Buffer,
}

impl Run {
    fn new(optimizer: Optimizer, ranges: Vec<(u64, u64)>, params: Vec<f32>, grads: Vec<f32>, lr: f32) -> Self {
        let len = params.len();
        let state = OptimizerState::new(&gpu().device, &optimizer, len as u64).unwrap();
        Self {
            optimizer,
            ranges,
            state: (state, vec![vec![0.0; len]; optimizer.state_buffers()]),
            params: (upload(&params), params),
            grads: (upload(&grads), grads),
            lr: lr_buffer(&gpu().device, lr).unwrap(),
        }
    }

    /// One tensor over the whole buffer.
    fn single(optimizer: Optimizer, params: Vec<f32>, grads: Vec<f32>, lr: f32) -> Self {
        let len = params.len() as u64;
        Self::new(optimizer, vec![(0, len)], params, grads, lr)
    }

    fn buffers<'a>(&'a self, norm: Option<&'a GradNorm>, scale: GradScale) -> OptimizerBuffers<'a> {
        OptimizerBuffers {
            params: &self.params.0,
            grads: &self.grads.0,
            tensors: &self.ranges,
            state: &self.state.0,
            lr: &self.lr,
            stats: norm.map(|n| n.stats_buffer()),
            segment_coefs: (scale == GradScale::PerSegment).then(|| norm.expect("a norm").segment_buffer()),
            scale,
            zero_nonfinite: false,
        }
    }

    fn bind(&self, kernel: &OptimizerKernel, norm: Option<&GradNorm>, scale: GradScale) -> gradguard::Result<OptimizerBinding> {
        kernel.bind(&gpu().device, &self.optimizer, self.buffers(norm, scale))
    }

    /// The twin's step over each tensor, its gradient scaled by `coefs[t]`.
    fn twin_step(&mut self, lr: f32, completed: u32, coefs: &[f32]) {
        for (t, &(start, len)) in self.ranges.iter().enumerate() {
            let r = start as usize..(start + len) as usize;
            let g: Vec<f32> = self.grads.1[r.clone()].iter().map(|g| g * coefs[t]).collect();
            let p = &mut self.params.1[r.clone()];
            match (&self.optimizer, self.state.1.as_mut_slice()) {
                (Optimizer::Sgd(cfg), []) => twin::sgd(cfg, lr, completed, p, &g, &mut []),
                (Optimizer::Sgd(cfg), [buf]) => twin::sgd(cfg, lr, completed, p, &g, &mut buf[r]),
                (Optimizer::AdamW(cfg), [m, v]) => twin::adamw(cfg, lr, completed, p, &g, &mut m[r.clone()], &mut v[r]),
                _ => unreachable!(),
            }
        }
    }

    fn new_grads(&mut self, grads: Vec<f32>) {
        gpu().queue.write_buffer(&self.grads.0, 0, bytemuck::cast_slice(&grads));
        self.grads.1 = grads;
    }

    /// Each state slot, and the step count.
    fn device_state(&self) -> (Vec<Vec<f32>>, f32) {
        let all = download(self.state.0.buffer());
        let len = self.state.0.len() as usize;
        let slots = (0..self.state.0.slots()).map(|s| all[s * len..(s + 1) * len].to_vec()).collect();
        (slots, all[self.state.0.slots() * len])
    }
}

fn step(kernel: &OptimizerKernel, norm: Option<&GradNorm>, binding: &OptimizerBinding) {
    let mut encoder = gpu().device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        if let Some(norm) = norm {
            norm.encode_in_pass(&mut pass);
        }
        kernel.encode(&mut pass, binding);
    }
    gpu().queue.submit([encoder.finish()]);
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 2e-6 + 2e-5 * w.abs(), "{what}[{i}]: gpu {g}, twin {w}");
    }
}

const OPTIMIZERS: [Optimizer; 6] = [
    Optimizer::Sgd(Sgd { momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }),
    Optimizer::Sgd(Sgd { momentum: 0.9, dampening: 0.0, weight_decay: 1e-2, nesterov: false }),
    Optimizer::Sgd(Sgd { momentum: 0.9, dampening: 0.0, weight_decay: 0.0, nesterov: true }),
    Optimizer::Sgd(Sgd { momentum: 0.5, dampening: 0.3, weight_decay: 1e-3, nesterov: false }),
    Optimizer::AdamW(AdamW { betas: (0.9, 0.999), eps: 1e-8, weight_decay: 1e-2 }),
    Optimizer::AdamW(AdamW { betas: (0.8, 0.99), eps: 1e-3, weight_decay: 0.0 }),
];

fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

#[test]
fn updates_match_twin_over_steps_and_a_schedule() {
    let kernel = OptimizerKernel::new(&gpu().device).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    for len in [1usize, 257, 10_007] {
        for optimizer in OPTIMIZERS {
            let mut run = Run::single(optimizer, random(&mut rng, len, 1.0), random(&mut rng, len, 1.0), 0.05);
            let binding = run.bind(&kernel, None, GradScale::None).unwrap();
            for completed in 0..5u32 {
                let lr = if completed < 3 { 0.05 } else { 0.01 };
                if completed == 3 {
                    set_lr(&gpu().queue, &run.lr, lr).unwrap();
                }
                if completed > 0 {
                    run.new_grads(random(&mut rng, len, 1.0));
                }
                step(&kernel, None, &binding);
                run.twin_step(lr, completed, &[1.0]);
            }
            let what = format!("{optimizer:?} len {len}");
            assert_close(&format!("{what} params"), &download(&run.params.0), &run.params.1);
            let (slots, steps) = run.device_state();
            for (got, want) in slots.iter().zip(&run.state.1) {
                assert_close(&format!("{what} state"), got, want);
            }
            assert_eq!(steps, 5.0);
        }
    }
}

/// Tensors of odd sizes with gaps between them, updated in one dispatch; gradients scaled
/// on read by the global or each tensor's own clip coefficient, as the norm computed them.
#[test]
fn many_tensors_scaled_on_read_match_twin() {
    let device = &gpu().device;
    let kernel = OptimizerKernel::new(device).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let lens = [7u64, 1, 1024, 1025, 300, 64];
    let mut ranges = Vec::new();
    let mut next = 0;
    for &len in &lens {
        ranges.push((next, len));
        next = (next + len).next_multiple_of(64) + 64; // gaps the update must not touch
    }
    let total = next as usize;
    for (optimizer, scale, kind) in [
        (OPTIMIZERS[1], GradScale::Global, NormKind::L2),
        (OPTIMIZERS[4], GradScale::Global, NormKind::Inf),
        (OPTIMIZERS[3], GradScale::PerSegment, NormKind::L2),
        (OPTIMIZERS[5], GradScale::PerSegment, NormKind::L1),
    ] {
        let mut run = Run::new(optimizer, ranges.clone(), random(&mut rng, total, 1.0), random(&mut rng, total, 3.0), 0.05);
        let set = GradSet::new(ranges.iter().map(|&(s, len)| GradView { buffer: run.grads.0.clone(), offset: 4 * s, len }).collect());
        let config = NormConfig { kind, max_norm: Some(2.0), ..Default::default() };
        let norm = GradNorm::new(device, &set, &config).unwrap();
        let binding = run.bind(&kernel, Some(&norm), scale).unwrap();
        let untouched = download(&run.params.0);
        for completed in 0..3u32 {
            if completed > 0 {
                run.new_grads(random(&mut rng, total, 3.0));
            }
            step(&kernel, Some(&norm), &binding);
            let stats = read_stats_blocking(device, &gpu().queue, norm.stats_buffer()).unwrap();
            let coefs: Vec<f32> = match scale {
                GradScale::Global => vec![stats.clip_coef; lens.len()],
                _ => stats
                    .segments
                    .iter()
                    .map(|s| {
                        let n = match kind {
                            NormKind::L1 => s.l1,
                            NormKind::L2 => s.l2,
                            NormKind::Inf => s.linf,
                        };
                        (2.0 / (n + 1e-6)).min(1.0)
                    })
                    .collect(),
            };
            assert!(coefs.iter().any(|&c| c < 1.0), "the test must clip something");
            run.twin_step(0.05, completed, &coefs);
        }
        let got = download(&run.params.0);
        assert_close(&format!("{optimizer:?} {scale:?} params"), &got, &run.params.1);
        let inside = |i: usize| ranges.iter().any(|&(s, len)| (s as usize..(s + len) as usize).contains(&i));
        for i in (0..total).filter(|&i| !inside(i)) {
            assert_eq!(got[i].to_bits(), untouched[i].to_bits(), "element {i} lies between tensors");
        }
    }
}

/// `zero_nonfinite` reads NaN and ±inf gradient elements as 0, as the `ZeroNonFinite`
/// policy's clip would have written them.
#[test]
fn zero_nonfinite_reads_nan_and_inf_as_zero() {
    let device = &gpu().device;
    let kernel = OptimizerKernel::new(device).unwrap();
    let mut grads = vec![0.5f32; 300];
    grads[3] = f32::NAN;
    grads[200] = f32::NEG_INFINITY;
    let run = Run::single(OPTIMIZERS[0], vec![1.0; 300], grads.clone(), 0.1);
    let binding = kernel.bind(device, &run.optimizer, OptimizerBuffers { zero_nonfinite: true, ..run.buffers(None, GradScale::None) }).unwrap();
    step(&kernel, None, &binding);
    let got = download(&run.params.0);
    for (i, p) in got.iter().enumerate() {
        let want = if grads[i].is_finite() { 0.95 } else { 1.0 };
        assert!((p - want).abs() < 1e-7, "element {i}: {p}");
    }
}

#[test]
fn hand_computed_steps() {
    let kernel = OptimizerKernel::new(&gpu().device).unwrap();
    // AdamW, one step from p = 1, g = 0.5, lr 0.1, torch defaults: m = 0.05, v = 2.5e-4,
    // p = 1·(1 - 0.1·0.01) - 0.1·0.5/(0.5 + 1e-8).
    let run = Run::single(Optimizer::AdamW(AdamW::default()), vec![1.0], vec![0.5], 0.1);
    step(&kernel, None, &run.bind(&kernel, None, GradScale::None).unwrap());
    let near = |got: f32, want: f64| (got as f64 - want).abs() < 1e-7 * (1.0 + want.abs());
    assert!(near(download(&run.params.0)[0], 0.999 - 0.1 * 0.5 / (0.5 + 1e-8)));
    let (slots, steps) = run.device_state();
    assert!(near(slots[0][0], 0.05) && near(slots[1][0], 2.5e-4) && steps == 1.0);
    // SGD with momentum 0.9, lr 0.1, g = 0.5 twice: buf 0.5 then 0.95; p 0.95 then 0.855.
    let sgd = Sgd { momentum: 0.9, ..Default::default() };
    let run = Run::single(Optimizer::Sgd(sgd), vec![1.0], vec![0.5], 0.1);
    let binding = run.bind(&kernel, None, GradScale::None).unwrap();
    step(&kernel, None, &binding);
    assert!(near(download(&run.params.0)[0], 0.95));
    step(&kernel, None, &binding);
    assert!(near(download(&run.params.0)[0], 0.855) && near(run.device_state().0[0][0], 0.95));
    // Nesterov: g + 0.9·buf = 0.95 on the first step.
    let run = Run::single(Optimizer::Sgd(Sgd { nesterov: true, ..sgd }), vec![1.0], vec![0.5], 0.1);
    step(&kernel, None, &run.bind(&kernel, None, GradScale::None).unwrap());
    assert!(near(download(&run.params.0)[0], 0.905));
}

/// A NaN gradient under `SkipStep` sets the norm's skip flag: parameters, state and step
/// counter stay bitwise unchanged; the next finite step then updates as usual.
#[test]
fn skip_flag_leaves_everything_bitwise_unchanged() {
    let device = &gpu().device;
    let kernel = OptimizerKernel::new(device).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    for (optimizer, scale) in [(OPTIMIZERS[1], GradScale::None), (OPTIMIZERS[4], GradScale::Global)] {
        let len = 1000;
        let grads = random(&mut rng, len, 1.0);
        let mut run = Run::single(optimizer, random(&mut rng, len, 1.0), grads.clone(), 0.1);
        let set = GradSet::packed(&run.grads.0, &[len as u64]);
        let config = NormConfig { nonfinite: NonFinitePolicy::SkipStep, max_norm: Some(1.0), ..Default::default() };
        let norm = GradNorm::new(device, &set, &config).unwrap();
        let binding = run.bind(&kernel, Some(&norm), scale).unwrap();
        let full_step = |run: &Run| {
            step(&kernel, Some(&norm), &binding);
            let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            (bits(download(&run.params.0)), bits(download(run.state.0.buffer())))
        };
        let before = full_step(&run); // one finite step so that the state is non-zero
        assert_eq!(run.device_state().1, 1.0);
        let mut poisoned = grads.clone();
        poisoned[len / 2] = f32::NAN;
        run.new_grads(poisoned);
        assert_eq!(full_step(&run), before, "{optimizer:?} changed something on a skipped step");
        run.new_grads(grads);
        let after = full_step(&run);
        assert_eq!(run.device_state().1, 2.0);
        assert_ne!(after.0, before.0);
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let device = &gpu().device;
    let kernel = OptimizerKernel::new(device).unwrap();
    let (p, g) = (upload(&[0.0; 8]), upload(&[0.0; 8]));
    let lr = lr_buffer(device, 0.1).unwrap();
    let no_storage = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 32,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let sgd = Optimizer::Sgd(Sgd::default());
    let momentum = Optimizer::Sgd(Sgd { momentum: 0.9, ..Default::default() });
    let state = OptimizerState::new(device, &sgd, 8).unwrap();
    let small_state = OptimizerState::new(device, &momentum, 4).unwrap();
    let whole = [(0u64, 8u64)];
    let buffers = OptimizerBuffers {
        params: &p,
        grads: &g,
        tensors: &whole,
        state: &state,
        lr: &lr,
        stats: None,
        segment_coefs: None,
        scale: GradScale::None,
        zero_nonfinite: false,
    };
    let bind = |o: &Optimizer, b: OptimizerBuffers<'_>| kernel.bind(device, o, b);
    assert!(bind(&sgd, buffers).is_ok());
    assert!(matches!(bind(&sgd, OptimizerBuffers { tensors: &[(0, 0)], ..buffers }), Err(Error::Empty { .. })));
    assert!(matches!(bind(&sgd, OptimizerBuffers { tensors: &[(0, 9)], ..buffers }), Err(Error::LengthMismatch { .. })));
    assert!(matches!(bind(&momentum, buffers), Err(Error::LengthMismatch { .. })));
    assert!(matches!(bind(&momentum, OptimizerBuffers { state: &small_state, ..buffers }), Err(Error::LengthMismatch { .. })));
    assert!(matches!(bind(&sgd, OptimizerBuffers { grads: &p, ..buffers }), Err(Error::Aliased { .. })));
    assert!(matches!(bind(&sgd, OptimizerBuffers { grads: &no_storage, ..buffers }), Err(Error::MissingBufferUsage { .. })));
    assert!(matches!(
        bind(&sgd, OptimizerBuffers { stats: Some(&no_storage), ..buffers }),
        Err(Error::MissingBufferUsage { .. })
    ));
    assert!(matches!(bind(&sgd, OptimizerBuffers { scale: GradScale::Global, ..buffers }), Err(Error::Incompatible { setting: "optimizer scale", .. })));
    assert!(matches!(bind(&sgd, OptimizerBuffers { scale: GradScale::PerSegment, stats: Some(&g), ..buffers }), Err(Error::Incompatible { setting: "optimizer scale", .. })));
    let nesterov = Optimizer::Sgd(Sgd { nesterov: true, ..Default::default() });
    assert!(matches!(bind(&nesterov, buffers), Err(Error::Incompatible { setting: "SGD nesterov", .. })));
    let adamw = Optimizer::AdamW(AdamW { betas: (0.9, 1.0), ..Default::default() });
    let adamw_state = OptimizerState::new(device, &Optimizer::AdamW(AdamW::default()), 8).unwrap();
    assert!(matches!(
        bind(&adamw, OptimizerBuffers { state: &adamw_state, ..buffers }),
        Err(Error::OutOfRange { what: "AdamW beta2", .. })
    ));
    let nan_momentum = Optimizer::Sgd(Sgd { momentum: f32::NAN, ..Default::default() });
    let momentum_state = OptimizerState::new(device, &momentum, 8).unwrap();
    let err = bind(&nan_momentum, OptimizerBuffers { state: &momentum_state, ..buffers }).unwrap_err();
    assert!(matches!(err, Error::OutOfRange { what: "SGD momentum", .. }), "{err}");
    assert_eq!(err.to_string(), "SGD momentum must be finite and ≥ 0, got NaN");
    assert!(matches!(set_lr(&gpu().queue, &lr, f32::NAN), Err(Error::OutOfRange { what: "learning rate", .. })));
}
