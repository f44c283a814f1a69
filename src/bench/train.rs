//! `gradguard bench train`: what a training step costs. Steps per second of the lab's
//! default MLP and RNN (and the RNN at Pascanu's T = 200), each step clipped by the global
//! norm at 1 as `clip_grad_norm_`; the dispatches, submits and blocking waits of a step,
//! the host time spent recording it, the time to build a second trainer on the same
//! device, and the device memory the trainer holds against what its roles must hold. The
//! device allocator (where the backend reports one) checks that no step allocates. With a
//! PyTorch peer ([`torch_peer`]), the same models in the same run give the ratios.

use std::time::Instant;

use super::BenchReport;
use crate::collective::Collective;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::lab::{exploding_mlp, exploding_rnn};
use crate::nn::{InitScheme, LayerSpec, LossKind, ModelSpec};
use crate::norm::NormKind;
use crate::train::{ClipSetting, OptimizerChoice, TrainConfig, Trainer};

/// Device bytes by role.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct MemoryUse {
    /// Parameters.
    pub params: u64,
    /// Their gradients.
    pub grads: u64,
    /// Optimizer state (momentum, or AdamW's two moments).
    pub optimizer_state: u64,
    /// Layer outputs, their gradients, batch-norm statistics, the batch.
    pub activations: u64,
    /// Everything else: norm partials and stats, record ring, uniforms, allocator padding.
    pub other: u64,
    /// All of the above: the device allocator's growth while the trainer was built (or the
    /// trainer's own buffer sizes where the backend has no allocator report).
    pub allocated: u64,
    /// What the roles must hold: parameters, their gradients, the optimizer state, and the
    /// forward values backward reads (the batch, every layer output, batch-norm statistics).
    pub required: u64,
    /// `100 · (allocated − required) / required`.
    pub overhead_percent: f64,
    /// "allocator report" or "buffer sizes".
    pub measured_by: &'static str,
}

/// One model's step.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainBenchResult {
    /// The name given to [`measure`], e.g. `"MLP/wine (lab default)"`.
    pub model: String,
    /// Steps timed (after warm-up steps).
    pub steps: u64,
    /// Training steps per second.
    pub steps_per_s: f64,
    /// Milliseconds per step.
    pub step_ms: f64,
    /// Compute dispatches per step.
    pub dispatches_per_step: usize,
    /// Queue submits per step.
    pub submits_per_step: f64,
    /// Record reads per step that had to wait for the device.
    pub blocking_waits_per_step: f64,
    /// Host time recording a step's command buffer.
    pub record_ms_per_step: f64,
    /// Recording time as a percentage of the step time.
    pub record_percent_of_step: f64,
    /// Device memory by role.
    pub memory: MemoryUse,
    /// Device allocations made during the timed steps (None: no allocator report).
    pub allocations_during_steps: Option<i64>,
    /// Milliseconds to build a second trainer of the same configuration on the device
    /// (its pipelines come from the device's kernel cache).
    pub rebuild_ms: f64,
    /// Data-parallel ranks (under `mpirun`): what the per-step sum moved and cost.
    pub reduce: Option<ReducePerStep>,
}

/// The per-step sum over data-parallel ranks, over the timed steps.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ReducePerStep {
    /// Ranks in the group.
    pub ranks: usize,
    /// Bytes each rank contributes to a step's sum (gradients, loss, stop word).
    pub bytes_per_step: u64,
    /// Milliseconds in the collective itself.
    pub reduce_ms_per_step: f64,
    /// Milliseconds waiting for the backward and copying the gradients to the host and back.
    pub staging_ms_per_step: f64,
}

/// Steps, after `warmup` untimed ones, for each model.
#[derive(Clone, Copy, Debug)]
pub struct TrainBenchConfig {
    /// Untimed steps first.
    pub warmup: u64,
    /// Timed steps of the MLP.
    pub mlp_steps: u64,
    /// Timed steps of the RNN at T = 30.
    pub rnn_steps: u64,
    /// Timed steps of the RNN at T = 200 (0: not measured).
    pub long_rnn_steps: u64,
}

impl Default for TrainBenchConfig {
    fn default() -> Self {
        Self { warmup: 10, mlp_steps: 200, rnn_steps: 60, long_rnn_steps: 20 }
    }
}

/// The models' names, shared with the PyTorch peer's report.
const MLP: &str = "MLP/wine (lab default)";
const RNN_30: &str = "RNN/adding T=30 (lab default)";
const RNN_200: &str = "RNN/adding T=200";

/// `benches/torch_train_peer.py`, run from memory so that the bench needs no checkout.
const PEER_SCRIPT: &str = include_str!("../../benches/torch_train_peer.py");

/// One model of the PyTorch peer against ours, from the same run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerRatio {
    /// The model's name, as in both reports.
    pub model: String,
    /// The peer's implementation (`nn.Sequential`, `nn.RNN`, `nn.RNNCell loop`).
    pub implementation: String,
    /// The peer's steps per second.
    pub peer_steps_per_s: f64,
    /// Ours over the peer's.
    pub ratio: f64,
}

/// Runs the PyTorch peer (`python3`, on torch's `device`: `cpu` or `cuda`) and returns its
/// JSON report. `Error::Peer` with the peer's own message when python3 or torch is
/// missing or the script fails.
pub fn torch_peer(device: &str) -> Result<serde_json::Value> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("python3")
        .args(["-", "--device", device])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Peer(format!("it needs python3: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(PEER_SCRIPT.as_bytes())
        .map_err(|e| Error::Peer(format!("starting it: {e}")))?;
    let out = child.wait_with_output().map_err(|e| Error::Peer(e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(Error::Peer(format!("it failed ({}): {last}", out.status)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| Error::Peer(format!("its report: {e}")))
}

/// Ours over the peer's steps per second, for every peer result naming one of our models.
pub fn peer_ratios(ours: &BenchReport<TrainBenchResult>, peer: &serde_json::Value) -> Vec<PeerRatio> {
    let empty = Vec::new();
    let results = peer["results"].as_array().unwrap_or(&empty);
    results
        .iter()
        .filter_map(|p| {
            let model = p["model"].as_str()?;
            let ours = ours.results.iter().find(|r| r.model == model)?;
            let peer_rate = p["steps_per_s"].as_f64()?;
            Some(PeerRatio {
                model: model.into(),
                implementation: p["impl"].as_str().unwrap_or("").into(),
                peer_steps_per_s: peer_rate,
                ratio: ours.steps_per_s / peer_rate,
            })
        })
        .collect()
}

/// Live allocations and their bytes, where the backend reports them (Vulkan, DX12), once
/// the device has freed what was dropped (at a submission's completion).
fn allocator(gpu: &Gpu) -> Result<Option<(usize, u64)>> {
    gpu.queue.submit([]);
    gpu.wait()?;
    Ok(gpu.device.generate_allocator_report().map(|r| (r.allocations.len(), r.total_allocated_bytes)))
}

/// Bytes of the forward values backward reads, and the batch with its targets.
pub fn forward_bytes(spec: &ModelSpec, batch: u32, loss: LossKind) -> u64 {
    let b = batch as u64;
    let widths = spec.widths();
    let targets = if loss == LossKind::Mse { b * spec.output_len() as u64 } else { b };
    let layers: u64 = spec
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| match *l {
            // Every step's pre-activation (its gradient in the backward, in place), every
            // hidden state with h_{-1} = 0 (the weight gradient's operand), the output.
            LayerSpec::Rnn { hidden, steps, .. } => (2 * steps as u64 + 2) * b * hidden as u64,
            // Output, saved mean and inverse std, running mean and variance.
            LayerSpec::BatchNorm { features } => b * features as u64 + 4 * features as u64,
            _ => b * widths[i + 1] as u64,
        })
        .sum();
    4 * (b * spec.input_len() as u64 + targets + layers)
}

/// Builds `config`'s trainer, runs `warmup` steps (at least one), then times `steps` more.
/// With `collective`, as one data-parallel rank of its group (every rank measures).
pub fn measure(
    gpu: &Gpu,
    model: &str,
    config: TrainConfig,
    warmup: u64,
    steps: u64,
    collective: Option<&dyn Collective>,
) -> Result<TrainBenchResult> {
    let config = TrainConfig { steps: warmup.max(1) + steps, ..config };
    let before = allocator(gpu)?;
    let mut trainer = Trainer::with_collective(gpu, config, collective)?;
    // Measured at the steady state: the uploads' staging buffers are released only after
    // the next submissions.
    for _ in 0..warmup.max(1) {
        trainer.step()?;
    }
    let steady = allocator(gpu)?;
    let bytes = trainer.model().bytes();
    let spec = trainer.spec().clone();
    let (params, grads, activations) = (bytes.params, bytes.grads, bytes.activations);
    let optimizer_state = trainer.optimizer_state_bytes();
    let roles = params + grads + optimizer_state + activations;
    let (allocated, measured_by) = match (before, steady) {
        (Some(b), Some(a)) if a.1 >= b.1 => (a.1 - b.1, "allocator report"),
        _ => (roles, "buffer sizes"),
    };
    let required = params + grads + optimizer_state + forward_bytes(&spec, trainer.model().batch(), trainer.model().loss_kind());
    let memory = MemoryUse {
        params,
        grads,
        optimizer_state,
        activations,
        other: allocated.saturating_sub(roles),
        allocated,
        required,
        overhead_percent: 100.0 * (allocated as f64 - required as f64) / required as f64,
        measured_by,
    };

    let start_counters = trainer.counters();
    let start_reduce = trainer.reduce_counters();
    let start = Instant::now();
    for _ in 0..steps {
        trainer.step()?;
    }
    // The device finishes the last steps inside the timed span.
    gpu.wait()?;
    let seconds = start.elapsed().as_secs_f64();
    let counters = trainer.counters();
    let n = steps.max(1) as f64;
    let reduce = trainer.reduce_counters().zip(start_reduce).map(|(end, start)| ReducePerStep {
        ranks: end.ranks,
        bytes_per_step: end.bytes_per_step,
        reduce_ms_per_step: 1e3 * (end.reduce_seconds - start.reduce_seconds) / n,
        staging_ms_per_step: 1e3 * (end.staging_seconds - start.staging_seconds) / n,
    });
    let end_allocations = allocator(gpu)?;
    let dispatches_per_step = trainer.dispatches_per_step();
    let config = trainer.config().clone();
    drop(trainer);
    let rebuild = Instant::now();
    drop(Trainer::with_collective(gpu, config, collective)?);
    let rebuild_ms = 1e3 * rebuild.elapsed().as_secs_f64();
    let record_ms = 1e3 * (counters.record_seconds - start_counters.record_seconds) / n;
    let step_ms = 1e3 * seconds / n;
    Ok(TrainBenchResult {
        model: model.to_string(),
        steps,
        steps_per_s: n / seconds,
        step_ms,
        dispatches_per_step,
        submits_per_step: (counters.submits - start_counters.submits) as f64 / n,
        blocking_waits_per_step: (counters.blocking_waits - start_counters.blocking_waits) as f64 / n,
        record_ms_per_step: record_ms,
        record_percent_of_step: 100.0 * record_ms / step_ms,
        memory,
        allocations_during_steps: steady.zip(end_allocations).map(|(a, b)| b.0 as i64 - a.0 as i64),
        rebuild_ms,
        reduce,
    })
}

/// The lab's default (quick) MLP and RNN, with the peer's optimizer.
pub fn run(gpu: &Gpu, config: &TrainBenchConfig, collective: Option<&dyn Collective>) -> Result<BenchReport<TrainBenchResult>> {
    // `measure` sets the step count.
    // Trained as the peer trains: SGD with momentum (the lab's RNN runs AdamW), clipped by
    // the global norm, the coefficient applied as the optimizer reads. Both start from the
    // lab MLP's N(0, 0.3²): a step's cost must not depend on where the lab's RNN starts.
    let clipped = |c: TrainConfig| TrainConfig {
        init: InitScheme::Normal { std: 0.3 },
        clip: ClipSetting::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 },
        optimizer: OptimizerChoice::Sgd { momentum: 0.9 },
        ..c
    };
    let rnn = |steps| TrainConfig { lr: 0.01, ..clipped(exploding_rnn(1, steps, 0)) };
    let mut results = vec![
        measure(gpu, MLP, clipped(exploding_mlp(1, 0)), config.warmup, config.mlp_steps, collective)?,
        measure(gpu, RNN_30, rnn(30), config.warmup, config.rnn_steps, collective)?,
    ];
    if config.long_rnn_steps > 0 {
        results.push(measure(gpu, RNN_200, rnn(200), config.warmup.min(3), config.long_rnn_steps, collective)?);
    }
    Ok(BenchReport {
        adapter: gpu.info.name.clone(),
        backend: format!("{:?}", gpu.info.backend),
        timing: "wall",
        results,
    })
}

fn kib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1024.0)
}

impl BenchReport<TrainBenchResult> {
    /// A plain-text table: the step, then memory in KiB.
    pub fn table(&self) -> String {
        let mut out = format!("{} ({}, {} timing)\n", self.adapter, self.backend, self.timing);
        out += &format!(
            "{:<30} {:>8} {:>9} {:>10} {:>8} {:>8} {:>10} {:>8} {:>7} {:>11}\n",
            "model", "steps/s", "ms/step", "dispatch", "submits", "waits", "record ms", "record%", "allocs", "rebuild ms"
        );
        for r in &self.results {
            out += &format!(
                "{:<30} {:>8.1} {:>9.3} {:>10} {:>8.2} {:>8.2} {:>10.4} {:>8.1} {:>7} {:>11.1}\n",
                r.model,
                r.steps_per_s,
                r.step_ms,
                r.dispatches_per_step,
                r.submits_per_step,
                r.blocking_waits_per_step,
                r.record_ms_per_step,
                r.record_percent_of_step,
                r.allocations_during_steps.map_or("-".into(), |a| a.to_string()),
                r.rebuild_ms
            );
        }
        let reduced: Vec<_> = self.results.iter().filter_map(|r| Some((r, r.reduce?))).collect();
        if let Some((_, first)) = reduced.first() {
            out += &format!("\n{:<30} {:>12} {:>12} {:>12}  ({} ranks)\n", "sum over ranks", "KiB/step", "reduce ms", "staging ms", first.ranks);
            for (r, s) in &reduced {
                out += &format!("{:<30} {:>12} {:>12.3} {:>12.3}\n", r.model, kib(s.bytes_per_step), s.reduce_ms_per_step, s.staging_ms_per_step);
            }
        }
        out += &format!(
            "\n{:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9}  (KiB, {})\n",
            "memory",
            "params",
            "grads",
            "optim",
            "activ",
            "other",
            "allocated",
            "required",
            "overhead",
            self.results.first().map_or("", |r| r.memory.measured_by)
        );
        for r in &self.results {
            let m = &r.memory;
            out += &format!(
                "{:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>8.1}%\n",
                r.model,
                kib(m.params),
                kib(m.grads),
                kib(m.optimizer_state),
                kib(m.activations),
                kib(m.other),
                kib(m.allocated),
                kib(m.required),
                m.overhead_percent
            );
        }
        out
    }
}
