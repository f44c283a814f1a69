//! `Trainer`: one training step is forward → loss → backward → norm → (in-place clip) →
//! optimizer (clipping as it reads, where the policy allows) → copy of the norms and loss
//! into the readback ring, in one command encoder and one submit. The host reads step `k`'s record at step `k + LAG`, so monitoring never stalls
//! the queue, and every response (a learning-rate drop, an adaptive clip threshold, a
//! stop) lands at a fixed step: two runs with the same seed are identical.

#[cfg(feature = "cli")]
pub mod args;
pub mod checkpoint;
pub mod config;
mod controller;
mod evaluation;
mod faults;
mod output;
pub mod replicas;

pub use config::{ClipSetting, Fault, FaultKind, LrDrop, ModelChoice, OptimizerChoice, Responses, Schedule, TrainConfig};
pub use output::{create_dir, run_plot, temp_path, write_atomic as write_file, write_run};

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};


use crate::adaptive::{AdaptiveClip, AdaptivePolicy};
use crate::clip::{ClipPolicy, GradClip};
use crate::collective::Collective;
use crate::data::{BatchOrder, Dataset, Score, Split};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::optimizer::{lr_buffer, set_lr, GradScale, OptimizerBinding, OptimizerBuffers, OptimizerState};
use crate::monitor::{Detector, Explosion, GradMonitor};
use crate::nn::cpu::CpuModel;
use crate::nn::{GpuModel, ModelSpec, TrainKernels};
use crate::norm::{GradNorm, NonFinitePolicy, NormConfig, NormStats};
use crate::readback::{read_f32s, ReadbackRing};
use checkpoint::{DeviceTensor, HostState, InFlight};
use controller::Controller;
use evaluation::Evaluation;
pub use evaluation::Check;
use faults::FaultDrill;
use replicas::Replicas;

/// Steps between a step's submission and the host reading its record.
pub const LAG: u64 = 2;

/// The words of the forward watch's `NormStats` a step record carries (through the
/// first non-finite segment, word 6).
const FORWARD_WORDS: usize = 7;

/// One step as the host saw it, `LAG` steps later.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StepRecord {
    /// The step (0-based).
    pub step: u64,
    /// Mean loss over the batch, before the update.
    pub loss: f32,
    /// Global L2 norm before clipping.
    pub norm: f32,
    /// Global L2 norm of the gradient the optimizer received (after clipping).
    pub applied_norm: f32,
    /// L2 norm of each parameter layer's gradient before clipping, in
    /// [`ModelSpec::param_layers`] order.
    pub layer_norms: Vec<f64>,
    /// Learning rate the step ran with (schedule and any spike drops applied).
    pub lr: f32,
    /// Whether the optimizer skipped the step (non-finite gradients under `SkipStep`/`Error`).
    pub skipped: bool,
    /// Detectors that started firing at this step.
    pub events: Vec<Detector>,
}

/// How a run went.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TrainSummary {
    /// The task's name, as [`Task::name`](crate::data::Task::name).
    pub task: String,
    /// Steps submitted (fewer than configured after a stop).
    pub steps_run: u64,
    /// Whether any explosion detector ([`Detector::is_explosion`]) fired.
    pub exploded: bool,
    /// The first explosion event, if any.
    pub first_explosion: Option<Explosion>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
    /// Steps the optimizer skipped.
    pub skipped_steps: u64,
    /// Mean loss of the last (up to) 10 steps.
    pub final_loss: f64,
    /// The final weights on the test set: accuracy or MSE, and the error rate by the
    /// paper's criterion (see [`Dataset::score`](crate::data::Dataset::score)).
    pub test: Score,
    /// The trivial answer's score on the test set: the majority class, or the mean target.
    pub trivial: Score,
    /// Fewer than 1% of the test samples wrong ([`SOLVED_BELOW`](crate::data::SOLVED_BELOW)).
    pub solved: bool,
    /// The first periodic check (every `eval_every` steps, on the validation set) at which
    /// fewer than 1% were wrong.
    pub solved_at: Option<u64>,
    /// Every periodic check's validation error rate.
    pub checks: Vec<Check>,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
    /// Queue submits (one per step).
    pub submits: u64,
    /// Record reads that had to wait for the device.
    pub blocking_waits: u64,
    /// Compute dispatches per step, as [`Trainer::dispatches_per_step`].
    pub dispatches_per_step: usize,
    /// Host seconds spent recording command buffers.
    pub record_seconds: f64,
    /// Data-parallel runs: the ranks, and what the per-step sums moved and cost.
    pub replicas: Option<replicas::ReduceCounters>,
}


/// What the steps so far cost the host: for benchmarks and the run summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct StepCounters {
    /// Queue submits so far.
    pub submits: u64,
    /// Record reads that had to wait for the device.
    pub blocking_waits: u64,
    /// Host time spent recording command buffers.
    pub record_seconds: f64,
}


/// How a step clips: by scaling the gradients as the optimizer reads them (global and
/// per-tensor norm clipping: no pass over the gradients, no second norm), or in place
/// before it (value clipping, AGC), measuring what clipping left with a second norm.
enum Clipping {
    OnRead { norm: GradNorm, adaptive: Option<AdaptiveClip>, scale: GradScale, per_tensor: Option<(f32, crate::NormKind)> },
    InPlace { clip: GradClip, applied: GradNorm },
}

impl Clipping {
    fn norm(&self) -> &GradNorm {
        match self {
            Self::OnRead { norm, .. } => norm,
            Self::InPlace { clip, .. } => clip.norm(),
        }
    }

    /// The adaptive threshold's state, carried from step to step.
    fn adaptive(&self) -> Option<&AdaptiveClip> {
        match self {
            Self::OnRead { adaptive, .. } => adaptive.as_ref(),
            Self::InPlace { clip, .. } => clip.adaptive(),
        }
    }

    fn stats_buffer(&self) -> &wgpu::Buffer {
        self.norm().stats_buffer()
    }

    fn dispatch_count(&self) -> usize {
        match self {
            Self::OnRead { norm, adaptive, .. } => norm.dispatch_count() + adaptive.is_some() as usize,
            Self::InPlace { clip, applied } => clip.dispatch_count() + applied.dispatch_count(),
        }
    }

    fn encode_in_pass(&self, pass: &mut wgpu::ComputePass<'_>) {
        match self {
            Self::OnRead { norm, adaptive, .. } => {
                norm.encode_in_pass(pass);
                if let Some(a) = adaptive {
                    a.encode_in_pass(pass);
                }
            }
            Self::InPlace { clip, .. } => clip.encode_in_pass(pass),
        }
    }

    /// After the optimizer has read the gradients: the norm of what it applied, where that
    /// needs measuring.
    fn encode_applied(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let Self::InPlace { applied, .. } = self {
            applied.encode_in_pass(pass);
        }
    }

    /// What each step's ring record copies: the stats, the loss, and the measured applied
    /// norm where there is one.
    fn record_sources<'a>(&'a self, loss: &'a wgpu::Buffer) -> Vec<(&'a wgpu::Buffer, u64)> {
        let stats = self.stats_buffer();
        let mut sources = vec![(stats, stats.size()), (loss, 4)];
        if let Self::InPlace { applied, .. } = self {
            sources.push((applied.stats_buffer(), 4));
        }
        sources
    }

    /// A ring record split into the `NormStats` words, the loss and the L2 norm of the
    /// gradient the optimizer applied: measured in place, or, scaling on read, the
    /// coefficients times the norms (as `clip_grad_norm_` scales: coef·‖g‖ per tensor).
    fn split_record(&self, mut words: Vec<u32>) -> Result<(Vec<u32>, f32, f32)> {
        let measured = matches!(self, Self::InPlace { .. });
        let tail_len = 1 + measured as usize;
        if words.len() <= tail_len {
            return Err(Error::Readback(format!("a step record of {} words is too short", words.len())));
        }
        let tail = words.split_off(words.len() - tail_len);
        let loss = f32::from_bits(tail[0]);
        if measured {
            return Ok((words, loss, f32::from_bits(tail[1])));
        }
        let stats = NormStats::from_words(&words)?;
        let applied = match self {
            Self::OnRead { scale: GradScale::Global, .. } => stats.clip_coef * stats.l2,
            Self::OnRead { scale: GradScale::PerSegment, per_tensor: Some((max, kind)), .. } => {
                let eps = NormConfig::default().eps;
                let sum: f64 = stats
                    .segments
                    .iter()
                    .map(|s| {
                        let n = match kind {
                            crate::NormKind::L1 => s.l1,
                            crate::NormKind::L2 => s.l2,
                            crate::NormKind::Inf => s.linf,
                        };
                        ((max / (n + eps)).min(1.0) as f64 * s.l2 as f64).powi(2)
                    })
                    .sum();
                sum.sqrt() as f32
            }
            _ => stats.l2,
        };
        Ok((words, loss, applied))
    }
}

/// A model, its data and every device object a step needs, built once.
pub struct Trainer<'g> {
    gpu: &'g Gpu,
    config: TrainConfig,
    /// The training rows.
    train: Dataset,
    /// The validation checks and the test score.
    evaluation: Evaluation,
    spec: ModelSpec,
    kernels: TrainKernels,
    model: GpuModel,
    clipping: Clipping,
    /// A norm over every layer's forward output, and those layers' names.
    forward_watch: Option<(GradNorm, Vec<String>)>,
    optimizer: OptimizerBinding,
    optimizer_state: OptimizerState,
    lr_buffer: wgpu::Buffer,
    written_lr: f32,
    order: BatchOrder,
    /// Each step's `[NormStats words…, loss, norm after clipping]`, read `LAG` steps later.
    ring: ReadbackRing,
    monitor: GradMonitor,
    faults: FaultDrill,
    /// The learning rate each submitted step still in the ring ran with.
    pending_lr: VecDeque<f32>,
    /// Records of steps before a resume that the stopped run had not read yet; they are
    /// read before the ring, each at the step it would have been.
    preloaded: VecDeque<InFlight>,
    /// Where and how often checkpoints are saved.
    checkpoints: Option<checkpoint::CheckpointPlan>,
    /// A signal handler's flag: non-zero stops the run.
    stop_signal: Option<Arc<AtomicUsize>>,
    /// This rank's share of each batch and the per-step sum over ranks, when data-parallel.
    replicas: Option<Replicas<'g>>,
    /// The stop request every rank agreed on in the last step's collective.
    group_stop: usize,
    next_step: u64,
    /// The first step whose record the host has not read.
    next_read: u64,
    records: Vec<StepRecord>,
    /// The responses to what the records say: learning-rate cuts, stops.
    controller: Controller,
    submits: u64,
    record_time: Duration,
    started: Instant,
}

impl<'g> Trainer<'g> {
    /// Loads the task's data and builds the model and every step's bindings.
    pub fn new(gpu: &'g Gpu, config: TrainConfig) -> Result<Self> {
        Self::with_collective(gpu, config, None)
    }

    /// With `Some(collective)`, a data-parallel rank of its group: the same run as
    /// [`Trainer::new`]'s, on this rank's share of every batch of `config.batch` rows, its
    /// gradients and loss summed over the ranks each step (see [`replicas`]). Every rank must
    /// call this with the same `config`. `Error::OutOfRange` when the batch has fewer rows
    /// than there are ranks; `Error::Invalid` for batch norm or the forward watch over several
    /// ranks (each rank would see its own rows only: batch statistics, running statistics and
    /// forward faults would differ between ranks).
    pub fn with_collective(gpu: &'g Gpu, config: TrainConfig, collective: Option<&'g dyn Collective>) -> Result<Self> {
        config.validate()?;
        let split = config.task.load(config.seed)?;
        let spec = config.model_spec(&split.train)?;
        spec.check_fits(config.batch, &gpu.device.limits())?;
        let ranks = collective.map_or(1, |c| c.size());
        if ranks > 1 && spec.layers.iter().any(|l| matches!(l, crate::nn::LayerSpec::BatchNorm { .. })) {
            return Err(Error::Invalid(format!(
                "batch norm over {ranks} data-parallel ranks is not supported: each rank would normalise its own rows"
            )));
        }
        if ranks > 1 && config.watch_forward {
            return Err(Error::Invalid(format!(
                "the forward watch over {ranks} data-parallel ranks is not supported: each rank would see only its own \
                 rows' outputs, and the ranks could respond differently"
            )));
        }
        let params = spec.init_params(config.seed)?;
        Self::with_params(gpu, config, split, spec, &params, collective)
    }

    fn with_params(
        gpu: &'g Gpu,
        config: TrainConfig,
        split: Split,
        spec: ModelSpec,
        params: &[Vec<f32>],
        collective: Option<&'g dyn Collective>,
    ) -> Result<Self> {
        let device = &gpu.device;
        let kernels = TrainKernels::new(device)?;
        let (rank, ranks) = collective.map_or((0, 1), |c| (c.rank(), c.size()));
        if let Some(f) = config.faults.iter().find(|f| f.rank.is_some_and(|r| r as usize >= ranks)) {
            return Err(Error::Invalid(format!("a fault at step {} names rank {}, but there are {ranks} ranks", f.step, f.rank.unwrap_or(0))));
        }
        let rows = replicas::shard(config.batch as usize, ranks, rank).len() as u32;
        let mut model = GpuModel::new(device, &kernels, &spec, rows.max(1), config.loss_kind(), params)?;
        let replicas = collective.map(|c| Replicas::new(device, c, config.batch as usize, model.arena().len() as usize)).transpose()?;
        let tensors = spec.tensors();
        let grads = model.grad_set();
        let norm_config = |kind, max_norm| NormConfig { kind, max_norm, nonfinite: config.on_nonfinite, ..NormConfig::default() };
        let on_read = |kind, max_norm, scale, per_tensor, policy: Option<AdaptivePolicy>| -> Result<Clipping> {
            let norm = GradNorm::new(device, &grads, &norm_config(kind, max_norm))?;
            let adaptive = policy.map(|p| AdaptiveClip::new(device, &p, &norm)).transpose()?;
            Ok(Clipping::OnRead { norm, adaptive, scale, per_tensor })
        };
        let in_place = |policy| -> Result<Clipping> {
            let clip = GradClip::new(device, &grads, policy, config.on_nonfinite)?;
            Ok(Clipping::InPlace { clip, applied: GradNorm::new(device, &grads, &NormConfig::default())? })
        };
        let l2 = crate::NormKind::L2;
        let clipping = match config.clip {
            ClipSetting::None => on_read(l2, None, GradScale::None, None, None)?,
            ClipSetting::GlobalNorm { max_norm, kind } => on_read(kind, Some(max_norm), GradScale::Global, None, None)?,
            ClipSetting::PerTensor { max_norm, kind } => {
                on_read(kind, Some(max_norm), GradScale::PerSegment, Some((max_norm, kind)), None)?
            }
            // The norm's coefficient is computed with the cap; the kernel rewrites it.
            ClipSetting::Adaptive(policy) => {
                on_read(l2, Some(policy.max_norm().unwrap_or(f32::MAX)), GradScale::Global, None, Some(policy))?
            }
            ClipSetting::Value(v) => in_place(ClipPolicy::Value { clip_value: v })?,
            ClipSetting::Agc { clipping } => in_place(ClipPolicy::Agc {
                clipping,
                eps: 1e-3,
                params: model.param_set(),
                unit_lens: tensors.iter().map(|t| t.unit_len()).collect(),
            })?,
        };
        model.bind_skip_flag(device, &kernels, clipping.stats_buffer())?;
        let forward_watch = match config.watch_forward {
            true => {
                let (layers, views) = model.layer_outputs();
                let norm = GradNorm::new(device, &crate::GradSet::new(views), &NormConfig::default())?;
                Some((norm, layers.into_iter().map(|l| spec.layer_name(l)).collect()))
            }
            false => None,
        };
        let optimizer_config = config.optimizer_kernel_config()?;
        let lr = config.lr * config.schedule.factor(0, config.steps);
        let lr_buf = lr_buffer(device, lr)?;
        let optimizer_state = OptimizerState::new(device, &optimizer_config, model.arena().len())?;
        let (scale, segment_coefs) = match &clipping {
            Clipping::OnRead { scale, norm, .. } => (*scale, (*scale == GradScale::PerSegment).then(|| norm.segment_buffer())),
            Clipping::InPlace { .. } => (GradScale::None, None),
        };
        let buffers = OptimizerBuffers {
            params: model.params(),
            grads: model.grads(),
            tensors: model.arena().ranges(),
            state: &optimizer_state,
            lr: &lr_buf,
            stats: Some(clipping.stats_buffer()),
            segment_coefs,
            scale,
            zero_nonfinite: config.on_nonfinite == NonFinitePolicy::ZeroNonFinite && matches!(clipping, Clipping::OnRead { .. }),
        };
        let optimizer = kernels.optimizer.bind(device, &optimizer_config, buffers)?;
        let layers = spec.param_layers();
        let segment_layer =
            tensors.iter().map(|t| layers.iter().position(|(l, _)| *l == t.layer).unwrap_or(0)).collect();
        let monitor = GradMonitor::new(config.monitor.clone(), layers.into_iter().map(|l| l.1).collect(), segment_layer)?;
        let ours = config.faults.iter().filter(|f| f.rank.is_none_or(|r| r as usize == rank)).cloned().collect::<Vec<_>>();
        let faults = FaultDrill::bind(gpu, &kernels, &spec, &model, &ours)?;
        let order = BatchOrder::new(split.train.len(), config.batch as usize, config.seed)?;
        // LAG + 1 slots: steps k - LAG … k are in flight when step k's copy is recorded.
        let record_bytes = clipping.record_sources(model.loss_buffer()).iter().map(|(_, size)| size).sum::<u64>()
            + if forward_watch.is_some() { FORWARD_WORDS as u64 * 4 } else { 0 };
        let ring = ReadbackRing::new(device, record_bytes, LAG as usize + 1)?;
        Ok(Self {
            gpu,
            evaluation: Evaluation::new(split.validation, split.test),
            train: split.train,
            spec,
            kernels,
            clipping,
            forward_watch,
            optimizer,
            optimizer_state,
            lr_buffer: lr_buf,
            written_lr: lr,
            order,
            ring,
            monitor,
            faults,
            pending_lr: VecDeque::new(),
            preloaded: VecDeque::new(),
            checkpoints: None,
            stop_signal: None,
            replicas,
            group_stop: 0,
            next_step: 0,
            next_read: 0,
            records: Vec::new(),
            controller: Controller::new(config.responses, config.on_nonfinite),
            submits: 0,
            record_time: Duration::ZERO,
            started: Instant::now(),
            model,
            config,
        })
    }


    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The device model: parameters, gradients, activations.
    pub fn model(&self) -> &GpuModel {
        &self.model
    }

    /// The model's layers, sized for the task's data.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The monitor, with every event read so far.
    pub fn monitor(&self) -> &GradMonitor {
        &self.monitor
    }

    /// Records read so far, in step order.
    pub fn records(&self) -> &[StepRecord] {
        &self.records
    }

    /// Steps submitted so far.
    pub fn steps_done(&self) -> u64 {
        self.next_step
    }

    /// Why the run stopped early (an explosion under `stop_on_explosion`, or non-finite
    /// gradients under `NonFinitePolicy::Error`); None while it runs on.
    pub fn stopped(&self) -> Option<&str> {
        self.controller.stopped()
    }

    /// The optimizer's state (every tensor's slots and the step count, packed).
    pub fn optimizer_state(&self) -> &OptimizerState {
        &self.optimizer_state
    }

    /// What the steps so far cost the host.
    pub fn counters(&self) -> StepCounters {
        StepCounters { submits: self.submits, blocking_waits: self.ring.waits(), record_seconds: self.record_time.as_secs_f64() }
    }

    /// Device bytes held by the optimizer's state buffer.
    pub fn optimizer_state_bytes(&self) -> u64 {
        self.optimizer_state.buffer().size()
    }

    /// Compute dispatches per step: the model (with the batch-norm running-stat updates),
    /// the norm (with an in-place clip and the applied norm, where clipping is not
    /// scaled on read), and the optimizer (one update of every tensor, one step count).
    pub fn dispatches_per_step(&self) -> usize {
        let watch = self.forward_watch.as_ref().map_or(0, |(w, _)| w.dispatch_count());
        self.model.dispatch_count() + self.clipping.dispatch_count() + watch + 2
    }

    /// Splits the forward watch's words off the end of a record: (non-finite count,
    /// first output holding one).
    fn split_forward(&self, words: &mut Vec<u32>) -> Result<Option<(u32, u32)>> {
        if self.forward_watch.is_none() {
            return Ok(None);
        }
        if words.len() < FORWARD_WORDS {
            return Err(Error::Readback(format!("a step record of {} words has no forward watch", words.len())));
        }
        let tail = words.split_off(words.len() - FORWARD_WORDS);
        Ok(Some((tail[3], tail[6])))
    }

    /// Records and submits one step, then reads the record of step `k - LAG`.
    pub fn step(&mut self) -> Result<()> {
        let k = self.next_step;
        let lr = self.config.lr * self.config.schedule.factor(k, self.config.steps) * self.controller.lr_scale;
        if lr != self.written_lr {
            set_lr(&self.gpu.queue, &self.lr_buffer, lr)?;
            self.written_lr = lr;
        }
        let mut rows = self.order.rows(k).to_vec();
        if let Some(r) = &self.replicas {
            rows = rows[r.rows()].to_vec();
        }
        self.model.write_batch(&self.gpu.queue, &self.train, &rows)?;

        let mut t0 = Instant::now();
        let mut encoder = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("gradguard train step") });
        self.model.encode(&self.kernels, &mut encoder);
        let grads = self.model.grads();
        self.faults.encode(k, &self.kernels, &mut encoder, grads);
        if let Some(replicas) = &mut self.replicas {
            // The norm needs every rank's gradients: the step's first submission ends here.
            replicas.encode_stage(&mut encoder, grads, self.model.loss_buffer());
            self.record_time += t0.elapsed();
            self.gpu.queue.submit([encoder.finish()]);
            self.submits += 1;
            let stop = self.stop_signal.as_ref().map_or(0, |s| s.load(Ordering::Relaxed));
            self.group_stop = replicas.reduce(&self.gpu.device, &self.gpu.queue, grads, self.model.loss_buffer(), stop)?;
            t0 = Instant::now();
            encoder = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("gradguard train step, after the sum over ranks") });
        }
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("gradguard norm, clip and update"),
                timestamp_writes: None,
            });
            if let Some((watch, _)) = &self.forward_watch {
                watch.encode_in_pass(&mut pass);
            }
            self.clipping.encode_in_pass(&mut pass);
            // After the norm: the running statistics obey its skip flag, as the optimizer does.
            self.model.encode_running_update(&self.kernels, &mut pass);
            self.kernels.optimizer.encode(&mut pass, &self.optimizer);
            self.clipping.encode_applied(&mut pass);
        }
        let mut sources = self.clipping.record_sources(self.model.loss_buffer());
        if let Some((watch, _)) = &self.forward_watch {
            sources.push((watch.stats_buffer(), FORWARD_WORDS as u64 * 4));
        }
        if !self.ring.encode_copy(&mut encoder, k, &sources)? {
            // Never with LAG + 1 slots and every record read at its step.
            return Err(Error::Readback(format!("no free record slot for step {k}")));
        }
        let commands = encoder.finish();
        self.record_time += t0.elapsed();
        let submission = self.gpu.queue.submit([commands]);
        self.submits += 1;
        self.ring.after_submit(submission);
        self.pending_lr.push_back(lr);
        self.next_step += 1;
        self.read_until(self.next_step.saturating_sub(LAG))
    }

    /// Reads the records of the steps before `end` not read yet.
    fn read_until(&mut self, end: u64) -> Result<()> {
        while self.next_read < end {
            self.read_record(self.next_read)?;
            self.next_read += 1;
        }
        Ok(())
    }

    /// Reads step `j`'s record, runs the detectors and the responses.
    fn read_record(&mut self, j: u64) -> Result<()> {
        let (words, loss, applied_norm, lr, forward) = match self.preloaded.front() {
            Some(r) if r.step == j => {
                let r = self.preloaded.pop_front().expect("just seen");
                (r.words, r.loss, r.applied_norm, r.lr, r.forward)
            }
            _ => {
                let mut words = self.ring.take(&self.gpu.device, j)?;
                let forward = self.split_forward(&mut words)?;
                let (words, loss, applied_norm) = self.clipping.split_record(words)?;
                (words, loss, applied_norm, self.pending_lr.pop_front().unwrap_or(self.written_lr), forward)
            }
        };
        let stats = NormStats::from_words(&words)?;
        let names = self.forward_watch.as_ref().map(|(_, names)| names);
        let forward_layer = forward.filter(|f| f.0 > 0).map(|(count, first)| {
            (names.and_then(|n| n.get(first as usize)).map_or("?", |n| n.as_str()), count)
        });
        let events = self.monitor.observe(j, &stats, loss, applied_norm, forward_layer);
        let spec = &self.spec;
        let tensor = |segment: u32| spec.tensors().get(segment as usize).map_or("?".into(), |t| t.name.clone());
        self.controller.respond(j, self.next_step, &events, &stats, tensor);
        self.records.push(StepRecord {
            step: j,
            loss,
            norm: stats.l2,
            applied_norm,
            layer_norms: self.monitor.layer_norms(&stats),
            lr,
            skipped: stats.skipped,
            events: events.iter().map(|e| e.detector).collect(),
        });
        Ok(())
    }

    /// Reads every step still in flight (end of a run). Its responses then land earlier
    /// than they would in a longer run: checkpoint before, never after.
    pub fn flush(&mut self) -> Result<()> {
        self.read_until(self.next_step)
    }

    /// Makes [`Trainer::run`] save checkpoints as `plan` says.
    pub fn save_checkpoints(&mut self, plan: checkpoint::CheckpointPlan) {
        self.checkpoints = Some(plan);
    }

    /// Makes [`Trainer::run`] stop after the step during which `signal` turns non-zero
    /// (a signal handler's flag: its number), read every output and save a checkpoint
    /// where it saves them.
    pub fn stop_on(&mut self, signal: Arc<AtomicUsize>) {
        self.stop_signal = Some(signal);
    }

    /// Hands `on_record` the records from index `from` on, each with the events it fired.
    fn emit(&self, from: usize, on_record: &mut impl FnMut(&StepRecord, &[Explosion]) -> Result<()>) -> Result<()> {
        let events = self.monitor.events();
        for r in &self.records[from..] {
            let (start, end) = (events.partition_point(|e| e.step < r.step), events.partition_point(|e| e.step <= r.step));
            on_record(r, &events[start..end])?;
        }
        Ok(())
    }

    /// Runs to `config.steps` (or a stop), calling `on_record` with each record read and
    /// the events it fired; an error from `on_record` ends the run with that error.
    pub fn run(&mut self, mut on_record: impl FnMut(&StepRecord, &[Explosion]) -> Result<()>) -> Result<TrainSummary> {
        self.started = Instant::now();
        while self.next_step < self.config.steps && self.controller.stopped().is_none() {
            let before = self.records.len();
            self.step()?;
            self.emit(before, &mut on_record)?;
            let signal = self.stop_requested();
            if signal != 0 {
                self.controller.stop(format!("interrupted by signal {signal} after step {}", self.next_step));
                break;
            }
            if self.config.eval_every > 0 && self.next_step.is_multiple_of(self.config.eval_every) {
                let model = self.cpu_model()?;
                self.evaluation.check(self.next_step, &model);
                if self.config.responses.stop_when_solved && self.solved_at().is_some() {
                    break;
                }
            }
            let (step, steps) = (self.next_step, self.config.steps);
            self.save_planned(|plan| plan.due(step, steps))?;
        }
        let before = self.records.len();
        self.flush()?;
        self.emit(before, &mut on_record)?;
        // One read of the final weights serves the last check and the test score.
        let model = self.cpu_model()?;
        if self.evaluation.checks().last().is_none_or(|c| c.step != self.next_step) {
            self.evaluation.check(self.next_step, &model);
        }
        if let Some(replicas) = &self.replicas {
            check_replicas_agree(replicas.collective(), &self.read_params()?)?;
        }
        let interrupted = self.stop_requested() != 0;
        let step = self.next_step;
        self.save_planned(|plan| interrupted && plan.latest() != Some(step))?;
        self.summary_of(&model)
    }

    /// The signal that stops the run, or 0: data-parallel ranks stop after the step at
    /// which any of them was asked to, all at the same step.
    fn stop_requested(&self) -> usize {
        match &self.replicas {
            Some(_) => self.group_stop,
            None => self.stop_signal.as_ref().map_or(0, |s| s.load(Ordering::Relaxed)),
        }
    }

    /// What the sums over data-parallel ranks moved and cost so far (None for one process).
    pub fn reduce_counters(&self) -> Option<replicas::ReduceCounters> {
        self.replicas.as_ref().map(Replicas::counters)
    }

    /// Saves a checkpoint through the plan, where there is one and `due` says so.
    fn save_planned(&mut self, due: impl FnOnce(&checkpoint::CheckpointPlan) -> bool) -> Result<()> {
        let Some(mut plan) = self.checkpoints.take() else { return Ok(()) };
        let saved = match due(&plan) {
            true => plan.save(self.next_step, |path| self.save_checkpoint(path)),
            false => Ok(()),
        };
        self.checkpoints = Some(plan);
        saved
    }

    /// Every buffer that carries state from one step to the next, named as in checkpoints.
    fn device_tensors(&self) -> Vec<DeviceTensor<'_>> {
        let state_names: &[&str] = match self.config.optimizer {
            OptimizerChoice::Sgd { .. } => &["momentum_buffer"],
            OptimizerChoice::AdamW => &["exp_avg", "exp_avg_sq"],
        };
        let f32s = |name: String, buffer, offset, shape| DeviceTensor { name, buffer, offset, shape, dtype: safetensors::Dtype::F32 };
        let (arena, state) = (self.model.arena(), &self.optimizer_state);
        let mut out = Vec::new();
        for (t, tensor) in self.spec.tensors().into_iter().enumerate() {
            let offset = 4 * arena.ranges()[t].0;
            out.push(f32s(format!("param/{}", tensor.name), self.model.params(), offset, tensor.shape.clone()));
            for (slot, name) in state_names.iter().enumerate() {
                let slot_offset = 4 * slot as u64 * state.len() + offset;
                out.push(f32s(format!("optim/{}/{name}", tensor.name), state.buffer(), slot_offset, tensor.shape.clone()));
            }
        }
        out.push(f32s("optim/step".into(), state.buffer(), state.step_offset(), vec![1]));
        if let Some(adaptive) = self.clipping.adaptive() {
            let words = adaptive.state_buffer().size() as usize / 4;
            out.push(DeviceTensor {
                name: "clip/adaptive_state".into(),
                buffer: adaptive.state_buffer(),
                offset: 0,
                shape: vec![words],
                dtype: safetensors::Dtype::U32,
            });
        }
        let bn_layers = self.spec.layers.iter().enumerate().filter(|(_, l)| matches!(l, crate::nn::LayerSpec::BatchNorm { .. }));
        for ((i, layer), pair) in bn_layers.zip(self.model.running_stats().chunks(2)) {
            let crate::nn::LayerSpec::BatchNorm { features } = *layer else { unreachable!("filtered") };
            let name = self.spec.layer_name(i);
            out.push(f32s(format!("buffer/{name}.running_mean"), &pair[0], 0, vec![features as usize]));
            out.push(f32s(format!("buffer/{name}.running_var"), &pair[1], 0, vec![features as usize]));
        }
        out
    }

    /// Saves everything a resumed run needs to continue exactly as this one would: the
    /// device state after the last submitted step, the host state up to the last record
    /// read, and the records still in flight, saved unread so that their responses land
    /// at the same steps after a resume. Blocks until the device is done.
    pub fn save_checkpoint(&mut self, path: &Path) -> Result<()> {
        let mut in_flight: Vec<InFlight> = self.preloaded.iter().cloned().collect();
        let first_in_ring = self.next_read + self.preloaded.len() as u64;
        for (j, &lr) in (first_in_ring..self.next_step).zip(&self.pending_lr) {
            let mut words = self.ring.peek(&self.gpu.device, j)?;
            let forward = self.split_forward(&mut words)?;
            let (words, loss, applied_norm) = self.clipping.split_record(words)?;
            in_flight.push(InFlight { step: j, words, loss, applied_norm, lr, forward });
        }
        let host = HostState {
            lr_scale: self.controller.lr_scale,
            last_lr_drop: self.controller.last_lr_drop,
            monitor: self.monitor.state(),
            records: self.records.clone(),
            checks: self.evaluation.checks().to_vec(),
            in_flight,
        };
        checkpoint::save(path, self.gpu, &self.config, self.next_step, &self.device_tensors(), &host)
    }

    /// A trainer for `config` that continues the run saved at `path`: bit for bit under the
    /// same configuration (`steps` may grow), or with other remedies
    /// ([`checkpoint::RESUMABLE_CHANGES`]: clip, learning rate and schedule, weight decay,
    /// non-finite policy, responses); a changed clip starts its adaptive state afresh. A run
    /// that had stopped continues.
    pub fn resume(gpu: &'g Gpu, config: TrainConfig, path: &Path, options: checkpoint::ResumeOptions) -> Result<Self> {
        let mut trainer = Self::new(gpu, config)?;
        trainer.load_checkpoint(path, options)?;
        Ok(trainer)
    }

    /// Continues, from here, the run saved at `path`, as [`Trainer::resume`] does, for a
    /// trainer not stepped yet. The state is the same on every data-parallel rank, so a
    /// run saved by N ranks resumes on any number (each loads the same file).
    pub fn load_checkpoint(&mut self, path: &Path, options: checkpoint::ResumeOptions) -> Result<()> {
        if self.next_step != 0 {
            return Err(Error::Invalid(format!("a checkpoint loads into a trainer that has not stepped; this one ran {} steps", self.next_step)));
        }
        let (step, host) = checkpoint::load(path, self.gpu, &self.config, &self.device_tensors(), options)?;
        self.monitor.restore(host.monitor);
        self.next_read = host.in_flight.first().map_or(step, |r| r.step);
        self.preloaded = host.in_flight.into();
        self.next_step = step;
        (self.controller.lr_scale, self.controller.last_lr_drop) = (host.lr_scale, host.last_lr_drop);
        self.records = host.records;
        self.evaluation.restore(host.checks);
        Ok(())
    }

    /// Reads the parameters back (blocking: between runs, for evaluation and checkpoints).
    pub fn read_params(&self) -> Result<Vec<Vec<f32>>> {
        Ok(self.model.arena().unpack(&read_f32s(&self.gpu.device, &self.gpu.queue, self.model.params())?))
    }

    fn read_running(&self) -> Result<Vec<Vec<f32>>> {
        self.model.running_stats().iter().map(|b| read_f32s(&self.gpu.device, &self.gpu.queue, b)).collect()
    }

    /// How the current weights do on `data` (evaluated on the CPU twin).
    pub fn score(&self, data: &Dataset) -> Result<Score> {
        let model = self.cpu_model()?;
        Ok(data.score(&model.predict(data)))
    }

    /// The current weights (read back, blocking) in the CPU twin, for evaluation.
    fn cpu_model(&self) -> Result<CpuModel> {
        CpuModel::new(&self.spec, &self.read_params()?, &self.read_running()?)
    }

    /// The first periodic check that found the task solved.
    pub fn solved_at(&self) -> Option<u64> {
        self.evaluation.solved_at()
    }

    /// The periodic checks so far.
    pub fn checks(&self) -> &[Check] {
        self.evaluation.checks()
    }

    /// The run so far, evaluated.
    pub fn summary(&self) -> Result<TrainSummary> {
        self.summary_of(&self.cpu_model()?)
    }

    /// The summary, with `model` (the current weights) scored on the test set.
    fn summary_of(&self, model: &CpuModel) -> Result<TrainSummary> {
        let test = self.evaluation.test_score(model);
        let tail = &self.records[self.records.len().saturating_sub(10)..];
        let first_explosion = self.monitor.events().iter().find(|e| e.detector.is_explosion()).cloned();
        let counters = self.counters();
        Ok(TrainSummary {
            task: self.config.task.name(),
            steps_run: self.next_step,
            exploded: first_explosion.is_some(),
            first_explosion,
            stopped: self.controller.stopped().map(String::from),
            skipped_steps: self.records.iter().filter(|r| r.skipped).count() as u64,
            final_loss: tail.iter().map(|r| r.loss as f64).sum::<f64>() / tail.len().max(1) as f64,
            test,
            trivial: self.evaluation.trivial(&self.train),
            solved: test.solved(),
            solved_at: self.solved_at(),
            checks: self.evaluation.checks().to_vec(),
            seconds: self.started.elapsed().as_secs_f64(),
            submits: counters.submits,
            blocking_waits: counters.blocking_waits,
            dispatches_per_step: self.dispatches_per_step(),
            record_seconds: counters.record_seconds,
            replicas: self.reduce_counters(),
        })
    }
}

/// `Error::ReplicasDiverged` unless every rank's weights hash alike: each applied the same
/// update to the same start, or something (a device, the collective) broke that.
fn check_replicas_agree(collective: &dyn Collective, params: &[Vec<f32>]) -> Result<()> {
    let mut fnv = checkpoint::Fnv1a::default();
    for tensor in params {
        fnv.feed(bytemuck::cast_slice(tensor));
    }
    let hash = fnv.0;
    let mut all = vec![0u32; 2 * collective.size()];
    collective.gather_u32(&[hash as u32, (hash >> 32) as u32], &mut all)?;
    let ranks: Vec<u64> = all.chunks_exact(2).map(|w| w[0] as u64 | (w[1] as u64) << 32).collect();
    match ranks.iter().position(|&h| h != ranks[0]) {
        None => Ok(()),
        Some(rank) => Err(Error::ReplicasDiverged { rank }),
    }
}
