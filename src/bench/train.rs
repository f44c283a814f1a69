//! `gradguard bench train`: what a training step costs. Steps per second of the lab's
//! default MLP and RNN, the dispatches, submits and blocking waits of a step, the host time
//! spent recording it, and the device memory the trainer holds against what its roles must
//! hold. The device allocator (where the backend reports one) checks that no step
//! allocates.

use std::time::Instant;

use super::BenchReport;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::lab::{exploding_mlp, exploding_rnn};
use crate::nn::{LayerSpec, LossKind, ModelSpec};
use crate::train::{TrainConfig, Trainer};

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
}

/// Steps, after `warmup` untimed ones, for each model.
#[derive(Clone, Copy, Debug)]
pub struct TrainBenchConfig {
    /// Untimed steps first.
    pub warmup: u64,
    /// Timed steps of the MLP.
    pub mlp_steps: u64,
    /// Timed steps of the RNN.
    pub rnn_steps: u64,
}

impl Default for TrainBenchConfig {
    fn default() -> Self {
        Self { warmup: 10, mlp_steps: 100, rnn_steps: 20 }
    }
}

/// Live allocations and their bytes, where the backend reports them (Vulkan, DX12).
fn allocator(gpu: &Gpu) -> Result<Option<(usize, u64)>> {
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
pub fn measure(gpu: &Gpu, model: &str, config: TrainConfig, warmup: u64, steps: u64) -> Result<TrainBenchResult> {
    let config = TrainConfig { steps: warmup.max(1) + steps, ..config };
    // What an earlier trainer dropped is freed at the next poll: before measuring, not during.
    gpu.wait()?;
    let before = allocator(gpu)?;
    let mut trainer = Trainer::new(gpu, config)?;
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
        (Some(b), Some(a)) => (a.1 - b.1, "allocator report"),
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
    let start = Instant::now();
    for _ in 0..steps {
        trainer.step()?;
    }
    // The device finishes the last steps inside the timed span.
    gpu.wait()?;
    let seconds = start.elapsed().as_secs_f64();
    let counters = trainer.counters();
    let end_allocations = allocator(gpu)?;
    let n = steps.max(1) as f64;
    let record_ms = 1e3 * (counters.record_seconds - start_counters.record_seconds) / n;
    let step_ms = 1e3 * seconds / n;
    Ok(TrainBenchResult {
        model: model.to_string(),
        steps,
        steps_per_s: n / seconds,
        step_ms,
        dispatches_per_step: trainer.dispatches_per_step(),
        submits_per_step: (counters.submits - start_counters.submits) as f64 / n,
        blocking_waits_per_step: (counters.blocking_waits - start_counters.blocking_waits) as f64 / n,
        record_ms_per_step: record_ms,
        record_percent_of_step: 100.0 * record_ms / step_ms,
        memory,
        allocations_during_steps: steady.zip(end_allocations).map(|(a, b)| b.0 as i64 - a.0 as i64),
    })
}

/// The lab's default (quick) MLP and RNN.
pub fn run(gpu: &Gpu, config: &TrainBenchConfig) -> Result<BenchReport<TrainBenchResult>> {
    // `measure` sets the step count.
    let results = vec![
        measure(gpu, "MLP/wine (lab default)", exploding_mlp(1, 0), config.warmup, config.mlp_steps)?,
        measure(gpu, "RNN/adding T=30 (lab default)", exploding_rnn(1, 30, 0), config.warmup, config.rnn_steps)?,
    ];
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
            "{:<30} {:>8} {:>9} {:>10} {:>8} {:>8} {:>10} {:>8} {:>7}\n",
            "model", "steps/s", "ms/step", "dispatch", "submits", "waits", "record ms", "record%", "allocs"
        );
        for r in &self.results {
            out += &format!(
                "{:<30} {:>8.1} {:>9.3} {:>10} {:>8.2} {:>8.2} {:>10.4} {:>8.1} {:>7}\n",
                r.model,
                r.steps_per_s,
                r.step_ms,
                r.dispatches_per_step,
                r.submits_per_step,
                r.blocking_waits_per_step,
                r.record_ms_per_step,
                r.record_percent_of_step,
                r.allocations_during_steps.map_or("-".into(), |a| a.to_string())
            );
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
