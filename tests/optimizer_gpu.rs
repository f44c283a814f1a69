//! SGD and AdamW against their CPU twin over several steps and a schedule change,
//! hand-computed steps, the skip flag, and bad input.

mod common;

use common::{download, gpu, upload};

use gradguard::cpu::optimizer as twin;
use gradguard::kernels::optimizer::{lr_buffer, set_lr, AdamW, Optimizer, OptimizerBuffers, OptimizerKernel, Sgd};
use gradguard::wgpu;
use gradguard::{Error, GradNorm, GradSet, NonFinitePolicy, NormConfig};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn read_step(kernel_binding: &gradguard::kernels::optimizer::OptimizerBinding) -> u32 {
    download(kernel_binding.step_buffer())[0].to_bits()
}

/// Parameters, gradients and state on the device, and the twin's copies.
struct Run {
    optimizer: Optimizer,
    params: (wgpu::Buffer, Vec<f32>),
    grads: (wgpu::Buffer, Vec<f32>),
    state: Vec<(wgpu::Buffer, Vec<f32>)>,
    lr: wgpu::Buffer,
}

impl Run {
    fn new(optimizer: Optimizer, params: Vec<f32>, grads: Vec<f32>, lr: f32) -> Self {
        let zeros = vec![0.0; params.len()];
        Self {
            optimizer,
            state: (0..optimizer.state_buffers()).map(|_| (upload(&zeros), zeros.clone())).collect(),
            params: (upload(&params), params),
            grads: (upload(&grads), grads),
            lr: lr_buffer(&gpu().device, lr).unwrap(),
        }
    }

    fn bind(
        &self,
        kernel: &OptimizerKernel,
        stats: Option<&wgpu::Buffer>,
    ) -> gradguard::Result<gradguard::kernels::optimizer::OptimizerBinding> {
        let state: Vec<&wgpu::Buffer> = self.state.iter().map(|s| &s.0).collect();
        let buffers =
            OptimizerBuffers { params: &self.params.0, grads: &self.grads.0, state: &state, lr: &self.lr, stats };
        kernel.bind(&gpu().device, &self.optimizer, self.params.1.len() as u64, buffers)
    }

    fn twin_step(&mut self, lr: f32, completed: u32) {
        let (p, g) = (&mut self.params.1, &self.grads.1);
        match (&self.optimizer, self.state.as_mut_slice()) {
            (Optimizer::Sgd(cfg), []) => twin::sgd(cfg, lr, completed, p, g, &mut []),
            (Optimizer::Sgd(cfg), [buf]) => twin::sgd(cfg, lr, completed, p, g, &mut buf.1),
            (Optimizer::AdamW(cfg), [m, v]) => twin::adamw(cfg, lr, completed, p, g, &mut m.1, &mut v.1),
            _ => unreachable!(),
        }
    }

    fn new_grads(&mut self, grads: Vec<f32>) {
        gpu().queue.write_buffer(&self.grads.0, 0, bytemuck::cast_slice(&grads));
        self.grads.1 = grads;
    }
}

fn step(kernel: &OptimizerKernel, binding: &gradguard::kernels::optimizer::OptimizerBinding) {
    let mut encoder = gpu().device.create_command_encoder(&Default::default());
    kernel.encode(&mut encoder.begin_compute_pass(&Default::default()), binding);
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

#[test]
fn updates_match_twin_over_steps_and_a_schedule() {
    let kernel = OptimizerKernel::new(&gpu().device).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let mut random = |n: usize| (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>();
    for len in [1usize, 257, 10_007] {
        for optimizer in OPTIMIZERS {
            let mut run = Run::new(optimizer, random(len), random(len), 0.05);
            let binding = run.bind(&kernel, None).unwrap();
            for completed in 0..5u32 {
                let lr = if completed < 3 { 0.05 } else { 0.01 };
                if completed == 3 {
                    set_lr(&gpu().queue, &run.lr, lr).unwrap();
                }
                if completed > 0 {
                    run.new_grads(random(len));
                }
                step(&kernel, &binding);
                run.twin_step(lr, completed);
            }
            let what = format!("{optimizer:?} len {len}");
            assert_close(&format!("{what} params"), &download(&run.params.0), &run.params.1);
            for (buffer, want) in &run.state {
                assert_close(&format!("{what} state"), &download(buffer), want);
            }
            assert_eq!(read_step(&binding), 5);
        }
    }
}

#[test]
fn hand_computed_steps() {
    let kernel = OptimizerKernel::new(&gpu().device).unwrap();
    // AdamW, one step from p = 1, g = 0.5, lr 0.1, torch defaults: m = 0.05, v = 2.5e-4,
    // p = 1·(1 - 0.1·0.01) - 0.1·0.5/(0.5 + 1e-8).
    let run = Run::new(Optimizer::AdamW(AdamW::default()), vec![1.0], vec![0.5], 0.1);
    step(&kernel, &run.bind(&kernel, None).unwrap());
    let near = |got: f32, want: f64| (got as f64 - want).abs() < 1e-7 * (1.0 + want.abs());
    assert!(near(download(&run.params.0)[0], 0.999 - 0.1 * 0.5 / (0.5 + 1e-8)));
    assert!(near(download(&run.state[0].0)[0], 0.05));
    assert!(near(download(&run.state[1].0)[0], 2.5e-4));
    // SGD with momentum 0.9, lr 0.1, g = 0.5 twice: buf 0.5 then 0.95; p 0.95 then 0.855.
    let sgd = Sgd { momentum: 0.9, ..Default::default() };
    let run = Run::new(Optimizer::Sgd(sgd), vec![1.0], vec![0.5], 0.1);
    let binding = run.bind(&kernel, None).unwrap();
    step(&kernel, &binding);
    assert!(near(download(&run.params.0)[0], 0.95));
    step(&kernel, &binding);
    assert!(near(download(&run.params.0)[0], 0.855) && near(download(&run.state[0].0)[0], 0.95));
    // Nesterov: g + 0.9·buf = 0.95 on the first step.
    let run = Run::new(Optimizer::Sgd(Sgd { nesterov: true, ..sgd }), vec![1.0], vec![0.5], 0.1);
    step(&kernel, &run.bind(&kernel, None).unwrap());
    assert!(near(download(&run.params.0)[0], 0.905));
}

/// A NaN gradient under `SkipStep` sets the norm's skip flag: parameters, state and step
/// counter stay bitwise unchanged; the next finite step then updates as usual.
#[test]
fn skip_flag_leaves_everything_bitwise_unchanged() {
    let device = &gpu().device;
    let kernel = OptimizerKernel::new(device).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    for optimizer in [OPTIMIZERS[1], OPTIMIZERS[4]] {
        let len = 1000;
        let params: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
        let grads: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut run = Run::new(optimizer, params, grads.clone(), 0.1);
        let set = GradSet::packed(&run.grads.0, &[len as u64]);
        let norm =
            GradNorm::new(device, &set, &NormConfig { nonfinite: NonFinitePolicy::SkipStep, ..Default::default() })
                .unwrap();
        let binding = run.bind(&kernel, Some(norm.stats_buffer())).unwrap();
        let full_step = |run: &Run| {
            let mut encoder = device.create_command_encoder(&Default::default());
            norm.encode(&mut encoder);
            kernel.encode(&mut encoder.begin_compute_pass(&Default::default()), &binding);
            gpu().queue.submit([encoder.finish()]);
            let bits = |b: &wgpu::Buffer| download(b).iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            (bits(&run.params.0), run.state.iter().map(|s| bits(&s.0)).collect::<Vec<_>>(), read_step(&binding))
        };
        let before = full_step(&run); // one finite step so that the state is non-zero
        assert_eq!(before.2, 1);
        let mut poisoned = grads.clone();
        poisoned[len / 2] = f32::NAN;
        run.new_grads(poisoned);
        assert_eq!(full_step(&run), before, "{optimizer:?} changed something on a skipped step");
        run.new_grads(grads);
        let after = full_step(&run);
        assert_eq!(after.2, 2);
        assert_ne!(after.0, before.0);
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let device = &gpu().device;
    let kernel = OptimizerKernel::new(device).unwrap();
    let (p, g, s, small) = (upload(&[0.0; 8]), upload(&[0.0; 8]), upload(&[0.0; 8]), upload(&[0.0; 4]));
    let lr = lr_buffer(device, 0.1).unwrap();
    let no_storage = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 32,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let sgd = Optimizer::Sgd(Sgd::default());
    let momentum = Optimizer::Sgd(Sgd { momentum: 0.9, ..Default::default() });
    let buffers = OptimizerBuffers { params: &p, grads: &g, state: &[], lr: &lr, stats: None };
    let bind = |o: &Optimizer, len: u64, b: OptimizerBuffers<'_>| kernel.bind(device, o, len, b);
    assert!(bind(&sgd, 8, buffers).is_ok());
    assert!(matches!(bind(&sgd, 0, buffers), Err(Error::Invalid(_))));
    assert!(matches!(bind(&sgd, 9, buffers), Err(Error::LengthMismatch { .. })));
    assert!(matches!(bind(&momentum, 8, buffers), Err(Error::LengthMismatch { .. })));
    assert!(matches!(
        bind(&momentum, 8, OptimizerBuffers { state: &[&small], ..buffers }),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(bind(&momentum, 8, OptimizerBuffers { state: &[&p], ..buffers }), Err(Error::Invalid(_))));
    assert!(matches!(bind(&sgd, 8, OptimizerBuffers { grads: &p, ..buffers }), Err(Error::Invalid(_))));
    assert!(matches!(
        bind(&sgd, 8, OptimizerBuffers { grads: &no_storage, ..buffers }),
        Err(Error::MissingBufferUsage { .. })
    ));
    assert!(matches!(
        bind(&sgd, 8, OptimizerBuffers { stats: Some(&no_storage), ..buffers }),
        Err(Error::MissingBufferUsage { .. })
    ));
    let nesterov = Optimizer::Sgd(Sgd { nesterov: true, ..Default::default() });
    assert!(matches!(bind(&nesterov, 8, buffers), Err(Error::Invalid(_))));
    let adamw = Optimizer::AdamW(AdamW { betas: (0.9, 1.0), ..Default::default() });
    assert!(matches!(bind(&adamw, 8, OptimizerBuffers { state: &[&s, &small], ..buffers }), Err(Error::Invalid(_))));
    assert!(matches!(set_lr(&gpu().queue, &lr, f32::NAN), Err(Error::Invalid(_))));
}
