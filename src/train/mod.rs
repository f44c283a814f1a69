//! `Trainer`: one training step is forward → loss → backward → norm → (in-place clip) →
//! optimizer (clipping as it reads, where the policy allows) → copy of the norms and loss
//! into the readback ring, in one command encoder and one submit. The host reads step `k`'s record at step `k + LAG`, so monitoring never stalls
//! the queue, and every response (a learning-rate drop, an adaptive clip threshold, a
//! stop) lands at a fixed step: two runs with the same seed are identical.

#[cfg(feature = "cli")]
pub mod args;
pub mod checkpoint;
mod checkpointing;
pub mod config;
mod clipping;
mod controller;
mod evaluation;
mod faults;
mod output;
mod recorder;
pub mod replicas;
mod update;

pub use config::{ClipSetting, Fault, FaultKind, LrDrop, ModelChoice, OptimizerChoice, Responses, Schedule, TrainConfig};
pub use output::{create_dir, run_plot, temp_path, write_atomic as write_file, write_run};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};


use crate::collective::Collective;
use crate::data::{BatchOrder, Dataset, Score, Split};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::optimizer::OptimizerState;
use crate::monitor::{Detector, Explosion, GradMonitor};
use crate::nn::cpu::CpuModel;
use crate::nn::{GpuModel, ModelSpec, TrainKernels};
use crate::norm::{GradNorm, NormConfig, NormStats};
use crate::readback::read_f32s;
use checkpoint::InFlight;
use clipping::Clipping;
use controller::Controller;
use evaluation::Evaluation;
pub use evaluation::Check;
use faults::FaultDrill;
use recorder::StepRecorder;
use replicas::Replicas;
use update::Update;

/// Steps between a step's submission and the host reading its record.
pub const LAG: u64 = 2;

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
    /// The optimizer, its state and its learning rate.
    update: Update,
    order: BatchOrder,
    /// Each step's record, read `LAG` steps later.
    recorder: StepRecorder,
    monitor: GradMonitor,
    faults: FaultDrill,
    /// Where and how often checkpoints are saved.
    checkpoints: Option<checkpoint::CheckpointPlan>,
    /// A signal handler's flag: non-zero stops the run.
    stop_signal: Option<Arc<AtomicUsize>>,
    /// This rank's share of each batch and the per-step sum over ranks, when data-parallel.
    replicas: Option<Replicas<'g>>,
    /// The stop request every rank agreed on in the last step's collective.
    group_stop: usize,
    next_step: u64,
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
    /// than there are ranks; `Error::Incompatible` for batch norm or the forward watch over several
    /// ranks (each rank would see its own rows only: batch statistics, running statistics and
    /// forward faults would differ between ranks).
    pub fn with_collective(gpu: &'g Gpu, config: TrainConfig, collective: Option<&'g dyn Collective>) -> Result<Self> {
        config.validate()?;
        let split = config.task.load(config.seed)?;
        let spec = config.model_spec(&split.train)?;
        spec.check_fits(config.batch, &gpu.device.limits())?;
        let ranks = collective.map_or(1, |c| c.size());
        if ranks > 1 && spec.layers.iter().any(|l| matches!(l, crate::nn::LayerSpec::BatchNorm { .. })) {
            let why = "each rank would normalise its own rows: batch and running statistics would differ between ranks";
            return Err(Error::Incompatible { setting: "model", other: format!("batch norm over {ranks} data-parallel ranks"), why });
        }
        if ranks > 1 && config.watch_forward {
            let why = "each rank would see only its own rows' outputs, and the ranks could respond differently";
            return Err(Error::Incompatible { setting: "watch_forward", other: format!("{ranks} data-parallel ranks"), why });
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
            return Err(Error::NotBelow { what: "a fault's rank", value: f.rank.unwrap_or(0) as u64, limit: ranks as u64 });
        }
        let rows = replicas::shard(config.batch as usize, ranks, rank).len() as u32;
        let mut model = GpuModel::new(device, &kernels, &spec, rows.max(1), config.loss_kind(), params)?;
        let replicas = collective.map(|c| Replicas::new(device, c, config.batch as usize, model.arena().len() as usize)).transpose()?;
        let tensors = spec.tensors();
        let clipping = Clipping::new(device, config.clip, config.on_nonfinite, &model, &tensors)?;
        model.bind_skip_flag(device, &kernels, clipping.stats_buffer())?;
        let forward_watch = match config.watch_forward {
            true => {
                let (layers, views) = model.layer_outputs();
                let norm = GradNorm::new(device, &crate::GradSet::new(views), &NormConfig::default())?;
                Some((norm, layers.into_iter().map(|l| spec.layer_name(l)).collect()))
            }
            false => None,
        };
        let lr = config.lr * config.schedule.factor(0, config.steps);
        let update = Update::new(device, &kernels, &config, &model, &clipping, lr)?;
        let layers = spec.param_layers();
        let segment_layer =
            tensors.iter().map(|t| layers.iter().position(|(l, _)| *l == t.layer).unwrap_or(0)).collect();
        let monitor = GradMonitor::new(config.monitor.clone(), layers.into_iter().map(|l| l.1).collect(), segment_layer)?;
        let ours = config.faults.iter().filter(|f| f.rank.is_none_or(|r| r as usize == rank)).cloned().collect::<Vec<_>>();
        let faults = FaultDrill::bind(gpu, &kernels, &spec, &model, &ours)?;
        let order = BatchOrder::new(split.train.len(), config.batch as usize, config.seed)?;
        let recorder = StepRecorder::new(device, &clipping, model.loss_buffer(), forward_watch.as_ref().map(|(n, _)| n))?;
        Ok(Self {
            gpu,
            evaluation: Evaluation::new(split.validation, split.test),
            train: split.train,
            spec,
            kernels,
            clipping,
            forward_watch,
            update,
            order,
            recorder,
            monitor,
            faults,
            checkpoints: None,
            stop_signal: None,
            replicas,
            group_stop: 0,
            next_step: 0,
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
        self.recorder.records()
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
        self.update.state()
    }

    /// What the steps so far cost the host.
    pub fn counters(&self) -> StepCounters {
        StepCounters { submits: self.submits, blocking_waits: self.recorder.waits(), record_seconds: self.record_time.as_secs_f64() }
    }

    /// Device bytes held by the optimizer's state buffer.
    pub fn optimizer_state_bytes(&self) -> u64 {
        self.update.state().buffer().size()
    }

    /// Compute dispatches per step: the model (with the batch-norm running-stat updates),
    /// the norm (with an in-place clip and the applied norm, where clipping is not
    /// scaled on read), and the optimizer (one update of every tensor, one step count).
    pub fn dispatches_per_step(&self) -> usize {
        let watch = self.forward_watch.as_ref().map_or(0, |(w, _)| w.dispatch_count());
        self.model.dispatch_count() + self.clipping.dispatch_count() + watch + 2
    }

    /// Records and submits one step, then reads the record of step `k - LAG`.
    pub fn step(&mut self) -> Result<()> {
        let k = self.next_step;
        let lr = self.config.lr * self.config.schedule.factor(k, self.config.steps) * self.controller.lr_scale;
        self.update.set_lr(&self.gpu.queue, lr)?;
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
            self.update.encode(&self.kernels, &mut pass);
            self.clipping.encode_applied(&mut pass);
        }
        let watch = self.forward_watch.as_ref().map(|(n, _)| n);
        self.recorder.encode(&mut encoder, k, &self.clipping, self.model.loss_buffer(), watch)?;
        let commands = encoder.finish();
        self.record_time += t0.elapsed();
        let submission = self.gpu.queue.submit([commands]);
        self.submits += 1;
        self.recorder.submitted(submission, lr);
        self.next_step += 1;
        self.read_until(self.next_step.saturating_sub(LAG))
    }

    /// Reads the records of the steps before `end` not read yet.
    fn read_until(&mut self, end: u64) -> Result<()> {
        while self.recorder.next_read() < end {
            let record = self.recorder.take(&self.gpu.device, &self.clipping, self.update.lr())?;
            self.observe(record)?;
        }
        Ok(())
    }

    /// Runs the detectors and the responses on a step's record, and keeps it.
    fn observe(&mut self, record: InFlight) -> Result<()> {
        let InFlight { step: j, words, loss, applied_norm, lr, forward } = record;
        let stats = NormStats::from_words(&words)?;
        let names = self.forward_watch.as_ref().map(|(_, names)| names);
        let forward_layer = forward.filter(|f| f.0 > 0).map(|(count, first)| {
            (names.and_then(|n| n.get(first as usize)).map_or("?", |n| n.as_str()), count)
        });
        let events = self.monitor.observe(j, &stats, loss, applied_norm, forward_layer);
        let spec = &self.spec;
        let tensor = |segment: u32| spec.tensors().get(segment as usize).map_or("?".into(), |t| t.name.clone());
        self.controller.respond(j, self.next_step, &events, &stats, tensor);
        self.recorder.push(StepRecord {
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

    /// Makes [`Trainer::run`] stop after the step during which `signal` turns non-zero
    /// (a signal handler's flag: its number), read every output and save a checkpoint
    /// where it saves them.
    pub fn stop_on(&mut self, signal: Arc<AtomicUsize>) {
        self.stop_signal = Some(signal);
    }

    /// Hands `on_record` the records from index `from` on, each with the events it fired.
    fn emit(&self, from: usize, on_record: &mut impl FnMut(&StepRecord, &[Explosion]) -> Result<()>) -> Result<()> {
        let events = self.monitor.events();
        for r in &self.recorder.records()[from..] {
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
            let before = self.recorder.records().len();
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
        let before = self.recorder.records().len();
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
        let records = self.recorder.records();
        let tail = &records[records.len().saturating_sub(10)..];
        let first_explosion = self.monitor.events().iter().find(|e| e.detector.is_explosion()).cloned();
        let counters = self.counters();
        Ok(TrainSummary {
            task: self.config.task.name(),
            steps_run: self.next_step,
            exploded: first_explosion.is_some(),
            first_explosion,
            stopped: self.controller.stopped().map(String::from),
            skipped_steps: records.iter().filter(|r| r.skipped).count() as u64,
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
