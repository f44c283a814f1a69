//! `gradguard lab`: a configuration that explodes, then each remedy of the founding
//! document on it from the same seed, side by side.

pub mod paper;

use std::fmt::Write as _;
use std::path::Path;

use crate::adaptive::{AdaptivePolicy, AutoClip};
use crate::data::Task;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::activation::Activation;
use crate::monitor::MonitorConfig;
use crate::nn::InitScheme;
use crate::norm::{NonFinitePolicy, NormKind};
use crate::plot::{self, Chart, Series};
use crate::train::config::AUTOCLIP_CAPACITY;
use crate::train::{
    ClipSetting, ModelChoice, OptimizerChoice, Responses, Schedule, StepRecord, TrainConfig, TrainSummary,
    Trainer,
};

/// The deep ReLU MLP on the wine data, with weights drawn too large for its width.
pub fn exploding_mlp(steps: u64, seed: u64) -> TrainConfig {
    TrainConfig {
        task: Task::Wine,
        model: ModelChoice::Mlp { depth: 8, width: 64, activation: Activation::Relu, batchnorm: false },
        init: InitScheme::Normal { std: 0.3 },
        steps,
        batch: 64,
        seed,
        lr: 0.02,
        schedule: Schedule::Constant,
        optimizer: OptimizerChoice::Sgd { momentum: 0.9 },
        weight_decay: 0.0,
        l2: 0.0,
        clip: ClipSetting::None,
        on_nonfinite: NonFinitePolicy::Propagate,
        monitor: MonitorConfig::default(),
        responses: Responses { lr_drop: None, stop_on_explosion: false, stop_when_solved: true },
        faults: Vec::new(),
        eval_every: 100,
        watch_forward: false,
    }
}

/// A vanilla ReLU RNN on Pascanu et al.'s adding problem whose recurrence starts as the
/// identity scaled by 1.05 (IRNN's start, Le et al. 2015, with a spectral radius just above
/// 1), trained with AdamW at 0.007. On seed 0 its gradient norm jumps from 1.4 to 22 at the
/// second step; unclipped, the run then settles on the trivial answer (predicting the mean)
/// and its gradients fade, while clipped at norm 1 it learns through spikes of up to ~90
/// and solves the task.
pub fn exploding_rnn(steps: u64, seq_len: u32, seed: u64) -> TrainConfig {
    TrainConfig {
        task: Task::Adding { steps: seq_len },
        model: ModelChoice::Rnn { hidden: 32, activation: Activation::Relu },
        init: InitScheme::Identity { gain: 1.05 },
        lr: 0.007,
        optimizer: OptimizerChoice::AdamW,
        eval_every: 250,
        ..exploding_mlp(steps, seed)
    }
}

/// A remedy: its name and how it changes the exploding configuration (None: not
/// applicable to this model).
pub struct Remedy {
    /// The name shown in the table and the plot.
    pub name: &'static str,
    /// The exploding configuration with the remedy applied.
    pub apply: fn(&TrainConfig) -> Option<TrainConfig>,
}

fn with(c: &TrainConfig, f: impl FnOnce(&mut TrainConfig)) -> Option<TrainConfig> {
    let mut c = c.clone();
    f(&mut c);
    Some(c)
}

fn good_init(c: &mut TrainConfig) {
    c.init = match c.model {
        ModelChoice::Mlp { .. } => InitScheme::Kaiming,
        // IRNN: an identity recurrence keeps a ReLU RNN's state over time (Le et al. 2015);
        // the exploding configuration scales it past 1.
        ModelChoice::Rnn { .. } => InitScheme::Identity { gain: 1.0 },
    };
}

fn batch_norm(c: &mut TrainConfig) -> bool {
    match &mut c.model {
        ModelChoice::Mlp { batchnorm, .. } => {
            *batchnorm = true;
            true
        }
        ModelChoice::Rnn { .. } => false,
    }
}

fn shallower(c: &mut TrainConfig) {
    match (&mut c.model, &mut c.task) {
        (ModelChoice::Mlp { depth, .. }, _) => *depth = 2,
        // An RNN's depth is its unrolled length.
        (ModelChoice::Rnn { .. }, task) => {
            if let Some((steps, _)) = task.sequence() {
                *task = task.with_steps((steps / 3).max(crate::data::MIN_STEPS));
            }
        }
    }
}

/// Every remedy the lab runs, the baseline (no remedy) first.
pub const REMEDIES: &[Remedy] = &[
    Remedy { name: "baseline", apply: |c| Some(c.clone()) },
    Remedy { name: "clip global norm 1", apply: |c| with(c, |c| c.clip = ClipSetting::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 }) },
    Remedy { name: "clip value 0.05", apply: |c| with(c, |c| c.clip = ClipSetting::Value { clip_value: 0.05 }) },
    Remedy { name: "AGC 0.05", apply: |c| with(c, |c| c.clip = ClipSetting::Agc { clipping: 0.05, eps: crate::clip::AGC_EPS }) },
    Remedy {
        name: "adaptive clip (AutoClip p10)",
        apply: |c| {
            with(c, |c| {
                let autoclip = AutoClip { percentile: 10.0, capacity: AUTOCLIP_CAPACITY, max_norm: None };
                c.clip = ClipSetting::Adaptive(AdaptivePolicy::AutoClip(autoclip))
            })
        },
    },
    Remedy { name: "weight decay 1e-2", apply: |c| with(c, |c| c.weight_decay = 1e-2) },
    Remedy { name: "good init", apply: |c| with(c, good_init) },
    Remedy {
        name: "batch norm",
        apply: |c| {
            let mut c = c.clone();
            batch_norm(&mut c).then_some(c)
        },
    },
    Remedy { name: "shallower", apply: |c| with(c, shallower) },
    Remedy { name: "lr / 10", apply: |c| with(c, |c| c.lr /= 10.0) },
    Remedy {
        name: "all combined",
        apply: |c| {
            with(c, |c| {
                c.clip = ClipSetting::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 };
                c.weight_decay = 1e-2;
                good_init(c);
                batch_norm(c);
                shallower(c);
                c.lr /= 10.0;
            })
        },
    },
];

/// One lab run.
pub struct LabRun {
    /// Which exploding configuration: `"MLP/wine"` or `"RNN/adding"`.
    pub model: &'static str,
    /// The remedy's [`Remedy::name`].
    pub remedy: &'static str,
    /// How the run went.
    pub summary: TrainSummary,
    /// Every step's record, for the plot.
    pub records: Vec<StepRecord>,
}

/// The lab's two exploding configurations with their names: the quick default, or
/// `--full` (longer runs, T = 100).
pub fn bases(full: bool, seed: u64) -> [(&'static str, TrainConfig); 2] {
    let (mlp_steps, rnn_steps, seq_len) = if full { (2000, 5000, 100) } else { (300, 1500, 50) };
    [("MLP/wine", exploding_mlp(mlp_steps, seed)), ("RNN/adding", exploding_rnn(rnn_steps, seq_len, seed))]
}

/// Runs every remedy on both exploding configurations; `on_done` sees every run so far
/// as each one ends (to print it and write the outputs: an error from it ends the lab).
pub fn run(gpu: &Gpu, full: bool, seed: u64, mut on_done: impl FnMut(&[LabRun]) -> Result<()>) -> Result<Vec<LabRun>> {
    let mut runs = Vec::new();
    for (model, base) in &bases(full, seed) {
        for remedy in REMEDIES {
            let Some(config) = (remedy.apply)(base) else { continue };
            let mut trainer = Trainer::new(gpu, config)?;
            let summary = trainer.run(|_, _| Ok(()))?;
            let run = LabRun { model, remedy: remedy.name, summary, records: trainer.records().to_vec() };
            runs.push(run);
            on_done(&runs)?;
        }
    }
    Ok(runs)
}

/// The table header and one row per run.
pub fn table_header() -> String {
    format!(
        "{:<11} {:<29} {:<9} {:<34} {:>10} {:>12} {:>8} {:>7} {:>9} {:>7}",
        "model",
        "remedy",
        "exploded",
        "first explosion (step, detector)",
        "peak norm",
        "test metric",
        "wrong %",
        "solved",
        "solved at",
        "seconds"
    )
}

fn metric(s: &crate::data::Score) -> String {
    let name = if s.metric.name() == "accuracy" { "acc" } else { "mse" };
    format!("{name} {:.4}", s.metric.value())
}

/// The largest global gradient norm (before clipping) of the run, or "non-finite".
fn peak_norm(records: &[StepRecord]) -> String {
    if records.iter().any(|r| !r.norm.is_finite()) {
        return "non-finite".into();
    }
    records.iter().map(|r| r.norm).reduce(f32::max).map_or("-".into(), |p| format!("{p:.3e}"))
}

/// One row of the table under [`table_header`].
pub fn table_row(run: &LabRun) -> String {
    let s = &run.summary;
    let first = s
        .first_explosion
        .as_ref()
        .map_or("-".to_string(), |e| format!("{} {} @{}", e.step, e.detector.name(), e.layer));
    format!(
        "{:<11} {:<29} {:<9} {:<34} {:>10} {:>12} {:>8.2} {:>7} {:>9} {:>7.1}",
        run.model,
        run.remedy,
        if s.exploded { "yes" } else { "no" },
        first,
        peak_norm(&run.records),
        metric(&s.test),
        100.0 * s.test.error_rate,
        if s.solved { "yes" } else { "no" },
        s.solved_at.map_or("-".to_string(), |k| k.to_string()),
        s.seconds
    )
}

/// The row of a model's trivial answer (the majority class, or the mean target).
fn trivial_row(run: &LabRun) -> String {
    let s = &run.summary;
    let answer = if s.test.metric.name() == "accuracy" { "(majority class)" } else { "(predict the mean)" };
    format!("{:<11} {:<29} {:<9} {:<34} {:>10} {:>12} {:>8.2}", run.model, answer, "", "", "", metric(&s.trivial), 100.0 * s.trivial.error_rate)
}

/// The whole table: every run, then the trivial answer to each model's baseline task. "wrong %" counts the test
/// samples wrong by Pascanu et al.'s criterion (misclassified, or a squared error above
/// 0.04); a task is solved below 1%.
pub fn table(runs: &[LabRun]) -> String {
    let mut out = table_header();
    out.push('\n');
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(out, "{}", table_row(r));
        if runs.get(i + 1).is_none_or(|next| next.model != r.model) {
            // The baseline's task: a remedy may change it (a shorter sequence).
            let first = runs.iter().find(|b| b.model == r.model).unwrap_or(r);
            let _ = writeln!(out, "{}", trivial_row(first));
        }
    }
    out
}

/// One SVG: the global gradient norm per step of every run, one panel per model.
pub fn comparison_plot(runs: &[LabRun]) -> Result<String> {
    let mut models: Vec<&str> = runs.iter().map(|r| r.model).collect();
    models.dedup();
    let charts: Vec<Chart> = models
        .iter()
        .map(|m| Chart {
            title: format!("{m}: global gradient norm per step, every remedy"),
            x_label: "step".into(),
            y_label: "L2 norm before clipping (log)".into(),
            log_y: true,
            series: runs
                .iter()
                .filter(|r| r.model == *m)
                .map(|r| Series {
                    name: r.remedy.to_string(),
                    points: r.records.iter().map(|s| (s.step as f64, s.norm as f64)).collect(),
                })
                .collect(),
            // Each run's first non-finite norm is marked on it, and said in the legend.
            marks: Vec::new(),
        })
        .collect();
    plot::svg(&charts)
}

/// Writes the table, the comparison plot and each run's summary into `dir`.
pub fn write(dir: &Path, runs: &[LabRun]) -> Result<()> {
    crate::train::create_dir(dir)?;
    crate::train::write_file(&dir.join("table.txt"), table(runs).as_bytes())?;
    crate::train::write_file(&dir.join("comparison.svg"), comparison_plot(runs)?.as_bytes())?;
    let summaries: Vec<_> = runs
        .iter()
        .map(|r| serde_json::json!({ "model": r.model, "remedy": r.remedy, "summary": r.summary }))
        .collect();
    let text = serde_json::to_string_pretty(&summaries).map_err(|e| crate::Error::Encode { what: "summary.json", message: e.to_string() })?;
    crate::train::write_file(&dir.join("summary.json"), text.as_bytes())
}
