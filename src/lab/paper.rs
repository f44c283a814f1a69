//! `gradguard lab --paper`: the comparison of Pascanu, Mikolov & Bengio (2013, Figure 7)
//! of plain SGD against SGD with gradient-norm clipping on the adding problem, as their
//! code (`pascanur/trainingRNNs`) sets it up: a tanh RNN of 50 hidden units, a linear
//! head, SGD without momentum at lr 0.01, batches of 20, a clip threshold of 1.0, their
//! "basic tanh" (every weight from N(0, 0.1²)) and "smart tanh" (sparse recurrent
//! weights at spectral radius 0.95, the rest N(0, 0.01²)) starts; a run succeeds when
//! fewer than 1% of the test sequences are wrong.
//!
//! Where we differ from their code: an update budget (`--updates`) instead of training
//! until solved; a fixed training set of 8,192 sequences of one length instead of fresh
//! batches of lengths in [T, 1.1·T) every step; no replacement of a NaN or huge update
//! by a shrink of W_hh (their safety net; our norm stays finite for any finite gradient,
//! so the clip never sees one); seeds from our generator.

use std::fmt::Write as _;
use std::path::Path;

use crate::data::Task;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::activation::Activation;
use crate::nn::InitScheme;
use crate::norm::NormKind;
use crate::plot::{self, Chart, Series};
use crate::train::{ClipSetting, ModelChoice, OptimizerChoice, Responses, TrainConfig, TrainSummary, Trainer};

/// What the comparison sweeps.
#[derive(Clone, Debug, PartialEq)]
pub struct PaperConfig {
    /// Sequence lengths T (the paper: 50, 100, 150, 200).
    pub lengths: Vec<u32>,
    /// Runs per cell, seeds 0, 1, … (the paper: 5).
    pub seeds: u64,
    /// SGD updates each run may take; it stops earlier once solved.
    pub updates: u64,
}

impl Default for PaperConfig {
    /// The paper's lengths and seeds with a budget that fits 20 minutes on a 2-core CPU
    /// running lavapipe, where one update of a batch of 20 takes 22 ms at T = 50 and 90 ms
    /// at T = 200 (ten sequences an invocation pair: little to run in parallel).
    fn default() -> Self {
        Self { lengths: vec![50, 100, 150, 200], seeds: 5, updates: 250 }
    }
}

impl PaperConfig {
    /// Refuses a sweep before its first run, not when the sweep reaches the bad cell.
    pub fn validate(&self) -> Result<()> {
        if self.lengths.is_empty() {
            return Err(Error::Empty { what: "the paper's sweep lengths".into() });
        }
        if self.seeds == 0 {
            return Err(Error::OutOfRange { what: "the paper's sweep seeds", value: 0.0, expected: "≥ 1" });
        }
        if let Some(&short) = self.lengths.iter().find(|&&t| t < crate::data::MIN_STEPS) {
            let expected = "at least 10 (the paper's markers sit in the first tenth and the first half)";
            return Err(Error::OutOfRange { what: "sequence length", value: short as f64, expected });
        }
        self.lengths.iter().try_for_each(|&t| run_config(t, STARTS[1].1, true, 0, self.updates).validate())
    }
}

/// The two starting points of the paper's tanh networks.
pub const STARTS: [(&str, InitScheme); 2] =
    [("basic tanh", InitScheme::Normal { std: 0.1 }), ("smart tanh", InitScheme::Sparse { radius: 0.95, nonzero: 15 })];

/// One run of the sweep.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PaperRun {
    /// Sequence length.
    pub length: u32,
    /// The start's name in [`STARTS`].
    pub start: &'static str,
    /// SGD-C (clipped at 1.0) or plain SGD.
    pub clipped: bool,
    /// The run's seed.
    pub seed: u64,
    /// How it went.
    pub summary: TrainSummary,
}

/// The training configuration of one cell of the sweep.
pub fn run_config(length: u32, init: InitScheme, clipped: bool, seed: u64, updates: u64) -> TrainConfig {
    TrainConfig {
        task: Task::Adding { steps: length },
        model: ModelChoice::Rnn { hidden: 50, activation: Activation::Tanh },
        init,
        steps: updates,
        batch: 20,
        seed,
        lr: 0.01,
        optimizer: OptimizerChoice::Sgd { momentum: 0.0 },
        clip: match clipped {
            true => ClipSetting::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 },
            false => ClipSetting::None,
        },
        responses: Responses { stop_when_solved: true, ..Responses::default() },
        // Five checks over the budget: each scores 1,000 sequences on the CPU twin.
        eval_every: (updates / 5).max(1),
        ..crate::lab::exploding_mlp(updates, seed)
    }
}

/// Runs every length, start, method and seed; `on_done` sees the runs so far after each.
pub fn run(gpu: &Gpu, config: &PaperConfig, mut on_done: impl FnMut(&[PaperRun]) -> Result<()>) -> Result<Vec<PaperRun>> {
    config.validate()?;
    let mut runs = Vec::new();
    for &length in &config.lengths {
        for (start, init) in STARTS {
            for clipped in [false, true] {
                for seed in 0..config.seeds {
                    let mut trainer = Trainer::new(gpu, run_config(length, init, clipped, seed, config.updates))?;
                    let summary = trainer.run(|_, _| Ok(()))?;
                    runs.push(PaperRun { length, start, clipped, seed, summary });
                    on_done(&runs)?;
                }
            }
        }
    }
    Ok(runs)
}

fn method(start: &str, clipped: bool) -> String {
    format!("{start} {}", if clipped { "SGD-C" } else { "SGD" })
}

/// Every start with plain SGD, then with SGD-C: the table's columns, the plot's lines.
fn methods() -> impl Iterator<Item = (&'static str, bool)> {
    STARTS.into_iter().flat_map(|(start, _)| [(start, false), (start, true)])
}

/// The runs of one cell.
fn cell<'a>(runs: &'a [PaperRun], length: u32, start: &str, clipped: bool) -> Vec<&'a PaperRun> {
    runs.iter().filter(|r| r.length == length && r.start == start && r.clipped == clipped).collect()
}

/// The share of a cell's runs that solved the task, in percent.
fn solved_percent(cell: &[&PaperRun]) -> f64 {
    100.0 * cell.iter().filter(|r| r.summary.solved).count() as f64 / cell.len().max(1) as f64
}

/// The success-rate table: one row per length, one column per start and method, each
/// `solved/runs` with the runs' median share of test sequences wrong.
pub fn table(runs: &[PaperRun]) -> String {
    let mut lengths: Vec<u32> = runs.iter().map(|r| r.length).collect();
    lengths.dedup();
    let mut out = format!("{:<5}", "T");
    methods().for_each(|(s, c)| out += &format!(" {:>24}", method(s, c)));
    out.push('\n');
    for length in lengths {
        let _ = write!(out, "{length:<5}");
        for (start, clipped) in methods() {
            let cell = cell(runs, length, start, clipped);
            let (solved, n) = (cell.iter().filter(|r| r.summary.solved).count(), cell.len());
            let mut wrong: Vec<f64> = cell.iter().map(|r| r.summary.test.error_rate).collect();
            wrong.sort_by(f64::total_cmp);
            let median = wrong.get(wrong.len() / 2).map_or(f64::NAN, |w| 100.0 * w);
            let _ = write!(out, " {:>24}", format!("{solved}/{n} ({median:.1}% wrong)"));
        }
        out.push('\n');
    }
    out
}

/// Success rate against sequence length, one line per start and method.
pub fn plot(runs: &[PaperRun], updates: u64) -> Result<String> {
    let mut lengths: Vec<u32> = runs.iter().map(|r| r.length).collect();
    lengths.dedup();
    let series = methods()
        .map(|(start, clipped)| Series {
            name: method(start, clipped),
            points: lengths.iter().map(|&t| (t as f64, solved_percent(&cell(runs, t, start, clipped)))).collect(),
        })
        .collect();
    plot::svg(&[Chart {
        title: format!("adding problem: runs solved within {updates} updates (Pascanu et al. 2013, Fig. 7)"),
        x_label: "sequence length T".into(),
        y_label: "runs solved (%)".into(),
        log_y: false,
        series,
        marks: Vec::new(),
    }])
}

/// Writes `paper.txt`, `paper.svg` and `paper.json` into `dir`.
pub fn write(dir: &Path, runs: &[PaperRun], updates: u64) -> Result<()> {
    crate::train::create_dir(dir)?;
    crate::train::write_file(&dir.join("paper.txt"), table(runs).as_bytes())?;
    crate::train::write_file(&dir.join("paper.svg"), plot(runs, updates)?.as_bytes())?;
    let text = serde_json::to_string_pretty(runs).map_err(|e| crate::Error::Encode { what: "paper.json", message: e.to_string() })?;
    crate::train::write_file(&dir.join("paper.json"), text.as_bytes())
}
