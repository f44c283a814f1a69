//! The flags of `gradguard train`, one per remedy, and the command itself.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::config::parse_activation;
use super::{ClipSetting, Fault, FaultKind, LrDrop, ModelChoice, OptimizerChoice, Responses, Schedule, TrainConfig, Trainer};
use super::checkpoint::{CheckpointPlan, ResumeOptions};
use super::output::RunStream;
use crate::collective::Collective;
use crate::data::Task;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::monitor::MonitorConfig;
use crate::nn::InitScheme;
use crate::norm::NonFinitePolicy;

fn parse<T: std::str::FromStr<Err = Error>>(s: &str) -> std::result::Result<T, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

/// `gradguard train`: every remedy is a flag.
#[derive(Clone, Debug, clap::Args)]
// The field docs are clap's `--help` text, where `[:SLOPE]` means an optional part, not an
// intra-doc link; escaping it would print the backslashes in `--help`.
#[allow(rustdoc::broken_intra_doc_links)]
pub struct TrainArgs {
    /// mlp or rnn.
    #[arg(long, default_value = "mlp", value_parser = ["mlp", "rnn"])]
    pub model: String,
    /// wine (MLP); adding, multiplication, temporal-order, temporal-order-3bit (RNN; the
    /// tasks of Pascanu et al. 2013).
    #[arg(long, default_value = "wine", value_parser = ["wine", "adding", "multiplication", "temporal-order", "temporal-order-3bit"])]
    pub task: String,
    /// Sequence length of the sequence tasks (≥ 10) [default: 50].
    #[arg(long)]
    pub seq_len: Option<u32>,
    /// MLP hidden layers ("simplify": fewer) [default: 8].
    #[arg(long)]
    pub depth: Option<u32>,
    /// MLP hidden width [default: 64].
    #[arg(long)]
    pub width: Option<u32>,
    /// RNN hidden size [default: 32].
    #[arg(long)]
    pub hidden: Option<u32>,
    /// relu, tanh, sigmoid, gelu, identity, leaky-relu[:SLOPE].
    #[arg(long, default_value = "relu", value_parser = |s: &str| parse_activation(s).map_err(|e| e.to_string()))]
    pub activation: crate::kernels::activation::Activation,
    /// Batch norm after every hidden Linear (MLP).
    #[arg(long)]
    pub batchnorm: bool,
    /// kaiming, xavier, orthogonal[:GAIN], normal:STD.
    #[arg(long, default_value = "kaiming", value_parser = parse::<InitScheme>)]
    pub init: InitScheme,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.02)]
    pub lr: f32,
    /// constant, cosine, step:EVERY:FACTOR.
    #[arg(long, default_value = "constant", value_parser = parse::<Schedule>)]
    pub schedule: Schedule,
    /// sgd (with --momentum) or adamw.
    #[arg(long, default_value = "sgd", value_parser = ["sgd", "adamw"])]
    pub optimizer: String,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    pub momentum: Option<f32>,
    /// Decoupled for AdamW, torch SGD's weight_decay for SGD.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Coupled L2 penalty added to the gradient (SGD).
    #[arg(long, default_value_t = 0.0)]
    pub l2: f32,
    /// none, value:V, norm:MAX[:l1|l2|inf], per-layer:MAX[:KIND] (each tensor), agc:C,
    /// zclip[:Z], autoclip[:PERCENTILE].
    #[arg(long, default_value = "none", value_parser = parse::<ClipSetting>)]
    pub clip: ClipSetting,
    /// propagate, skip (the device skips the update), error (skip and stop), zero.
    #[arg(long, default_value = "propagate", value_parser = ["propagate", "skip", "error", "zero"])]
    pub on_nonfinite: String,
    /// Multiply the learning rate by FACTOR at a norm spike, a norm above --explode-norm, a
    /// loss spike or a non-finite value; never below MIN_SCALE of the scheduled rate
    /// [default: 0.01], and once per COOLDOWN steps [default: 100].
    #[arg(long, value_name = "FACTOR[:MIN_SCALE[:COOLDOWN]]", value_parser = parse::<LrDrop>)]
    pub lr_drop_on_spike: Option<LrDrop>,
    /// Stop with a report at the first explosion.
    #[arg(long)]
    pub stop_on_explosion: bool,
    /// Stop once a periodic check finds the task solved (fewer than 1% wrong); exits 0.
    #[arg(long)]
    pub stop_when_solved: bool,
    /// Watch each layer's forward output for NaN/inf and name the first one that turns
    /// (costs a norm over the outputs: one dispatch per layer and two, each step).
    #[arg(long)]
    pub watch_forward: bool,
    /// Global norm the monitor calls an explosion.
    #[arg(long, default_value_t = 1e4)]
    pub explode_norm: f64,
    /// Check the weights on held-out data every N steps (0: only at the end).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub eval_every: u64,
    /// Optimizer steps to run.
    #[arg(long, default_value_t = 300)]
    pub steps: u64,
    /// Samples per step (≥ 2).
    #[arg(long, default_value_t = 64)]
    pub batch: u32,
    /// Seed of the initialization, the data and the batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write metrics.csv, events.jsonl, summary.json and plot.svg here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Save OUT/checkpoint.safetensors every N steps and after the last one.
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Continue the run saved in this checkpoint: the same model, task, data and optimizer;
    /// --steps may grow, and the remedies (clip, learning rate and schedule, weight decay,
    /// non-finite policy, responses, faults) may change.
    #[arg(long, value_name = "PATH")]
    pub resume: Option<PathBuf>,
    /// Resume a checkpoint whose parameters or optimizer state hold NaN or inf.
    #[arg(long, requires = "resume")]
    pub resume_nonfinite: bool,
    /// Checkpoints kept in --out: the latest as checkpoint.safetensors, earlier ones as
    /// checkpoint-STEP.safetensors, to rewind to.
    #[arg(long, default_value_t = 1, value_name = "K", value_parser = clap::value_parser!(u32).range(1..), requires = "checkpoint_every")]
    pub keep_checkpoints: u32,
    /// Under `mpirun`: seconds a rank waits for the others in a step's gradient sum before
    /// it ends the job (a rank that failed, hangs or was killed).
    #[cfg(feature = "mpi")]
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS", value_parser = parse_seconds)]
    pub mpi_timeout: f64,
    /// Put a NaN into LAYER's gradient at STEP (STEP:LAYER, e.g. 10:linear3); repeatable.
    #[arg(long)]
    pub inject_nan: Vec<String>,
    /// Put an inf into LAYER's gradient at STEP.
    #[arg(long)]
    pub inject_inf: Vec<String>,
    /// Multiply LAYER's weight gradient at STEP (STEP:LAYER:FACTOR).
    #[arg(long)]
    pub inject_scale: Vec<String>,
}

impl TrainArgs {
    /// Refuses a flag that the run would ignore: another model's size, a sequence length
    /// for the table task, SGD's momentum under AdamW.
    fn refuse_ignored(&self) -> Result<()> {
        let rnn = self.model == "rnn";
        let ignored = [
            ("--depth", self.depth.is_some() && rnn, "the MLP"),
            ("--width", self.width.is_some() && rnn, "the MLP"),
            ("--batchnorm", self.batchnorm && rnn, "the MLP"),
            ("--hidden", self.hidden.is_some() && !rnn, "the RNN (--model rnn)"),
            ("--seq-len", self.seq_len.is_some() && self.task == "wine", "the sequence tasks"),
            ("--momentum", self.momentum.is_some() && self.optimizer != "sgd", "SGD (--optimizer sgd)"),
        ];
        match ignored.iter().find(|(_, ignored, _)| *ignored) {
            Some((flag, _, applies)) => Err(Error::Usage(format!("{flag} applies to {applies} only"))),
            None => Ok(()),
        }
    }

    /// The run these flags describe, validated. `Err(Error::Usage)` names the bad flag.
    pub fn config(&self) -> Result<TrainConfig> {
        self.refuse_ignored()?;
        let seq_len = self.seq_len.unwrap_or(50);
        let task = match self.task.as_str() {
            "wine" => Task::Wine,
            "adding" => Task::Adding { steps: seq_len },
            "multiplication" => Task::Multiplication { steps: seq_len },
            "temporal-order" => Task::TemporalOrder { steps: seq_len },
            _ => Task::TemporalOrder3 { steps: seq_len },
        };
        let model = match self.model.as_str() {
            "mlp" => ModelChoice::Mlp {
                depth: self.depth.unwrap_or(8),
                width: self.width.unwrap_or(64),
                activation: self.activation,
                batchnorm: self.batchnorm,
            },
            _ => ModelChoice::Rnn { hidden: self.hidden.unwrap_or(32), activation: self.activation },
        };
        let mut faults = Vec::new();
        for s in &self.inject_nan {
            faults.push(Fault::parse("--inject-nan", s, Some(FaultKind::Nan))?);
        }
        for s in &self.inject_inf {
            faults.push(Fault::parse("--inject-inf", s, Some(FaultKind::Inf))?);
        }
        for s in &self.inject_scale {
            faults.push(Fault::parse("--inject-scale", s, None)?);
        }
        let config = TrainConfig {
            task,
            model,
            init: self.init,
            steps: self.steps,
            batch: self.batch,
            seed: self.seed,
            lr: self.lr,
            schedule: self.schedule,
            optimizer: match self.optimizer.as_str() {
                "adamw" => OptimizerChoice::AdamW,
                _ => OptimizerChoice::Sgd { momentum: self.momentum.unwrap_or(0.9) },
            },
            weight_decay: self.weight_decay,
            l2: self.l2,
            clip: self.clip,
            on_nonfinite: match self.on_nonfinite.as_str() {
                "skip" => NonFinitePolicy::SkipStep,
                "error" => NonFinitePolicy::Error,
                "zero" => NonFinitePolicy::ZeroNonFinite,
                _ => NonFinitePolicy::Propagate,
            },
            monitor: MonitorConfig { max_norm: self.explode_norm, ..MonitorConfig::default() },
            responses: Responses {
                lr_drop: self.lr_drop_on_spike,
                stop_on_explosion: self.stop_on_explosion,
                stop_when_solved: self.stop_when_solved,
            },
            faults,
            eval_every: self.eval_every,
            watch_forward: self.watch_forward,
        };
        config.validate().map_err(|e| e.renamed(flag))?;
        Ok(config)
    }
}

/// The flag of a [`TrainConfig`] setting: errors from the library name settings, the
/// command line speaks of flags.
fn flag(setting: &'static str) -> &'static str {
    match setting {
        "steps" => "--steps",
        "batch" | "batch size" => "--batch",
        "lr" => "--lr",
        "weight_decay" => "--weight-decay",
        "l2" => "--l2",
        "model" => "--model",
        "allow_nonfinite" => "--resume-nonfinite",
        "sequence steps" => "--seq-len",
        "watch_forward" => "--watch-forward",
        "schedule every" | "schedule factor" => "--schedule",
        "init std" => "--init",
        other => other,
    }
}

/// How `gradguard train` ended.
pub struct Outcome {
    /// The run, evaluated.
    pub summary: super::TrainSummary,
    /// The signal (SIGINT, SIGTERM) that stopped it, if one did.
    pub signal: Option<i32>,
}

/// A flag that SIGINT and SIGTERM set to their number; a second one ends the process at
/// once, as the first would have without the handler.
fn signal_flag() -> Result<Arc<AtomicUsize>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let number = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        let registered = signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&seen))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&seen)))
            .and_then(|_| signal_hook::flag::register_usize(signal, Arc::clone(&number), signal as usize));
        registered.map_err(|source| Error::Io { action: "installing a signal handler for", path: "SIGINT/SIGTERM".into(), source })?;
    }
    Ok(number)
}

/// Runs `gradguard train`: builds everything (so bad input fails before any file is
/// touched), opens `--out` before the first step and streams the metrics and events into
/// it, trains with a progress bar on a terminal (plain lines otherwise), and writes the
/// summary and plot. SIGINT or SIGTERM ends the run after the current step with every
/// output and a checkpoint written.
/// A positive, finite number of seconds.
#[cfg(feature = "mpi")]
fn parse_seconds(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

/// Trains as `args` say; with `collective`, as one data-parallel rank of its group, where
/// rank 0 alone writes the outputs and the progress lines.
pub fn run(gpu: &Gpu, args: &TrainArgs, collective: Option<&dyn Collective>) -> Result<Outcome> {
    let config = args.config()?;
    let writes = collective.is_none_or(|c| c.rank() == 0);
    let out = args.out.as_ref().filter(|_| writes);
    let checkpoint_path = out.map(|dir| dir.join(super::checkpoint::FILE_NAME));
    let plan = match (args.checkpoint_every, checkpoint_path) {
        (Some(0), _) => return Err(Error::Usage("--checkpoint-every must be ≥ 1".into())),
        (Some(every), Some(path)) => Some(CheckpointPlan::new(every, path, args.keep_checkpoints)?),
        (Some(_), None) if writes => return Err(Error::Usage("--checkpoint-every needs --out (where checkpoints go)".into())),
        (Some(_), None) => None,
        (None, path) => path.map(CheckpointPlan::when_stopped),
    };
    let mut trainer = Trainer::with_collective(gpu, config, collective).map_err(|e| e.renamed(flag))?;
    if let Some(path) = &args.resume {
        trainer.load_checkpoint(path, ResumeOptions { allow_nonfinite: args.resume_nonfinite }).map_err(|e| e.renamed(flag))?;
    }
    let layers = trainer.monitor().layers().to_vec();
    let mut stream = match out {
        Some(dir) => Some(RunStream::create(dir, &layers, trainer.records(), trainer.monitor().events())?),
        None => None,
    };
    if let Some(plan) = plan {
        trainer.save_checkpoints(plan);
    }
    let signal = signal_flag()?;
    trainer.stop_on(Arc::clone(&signal));
    let steps = trainer.config().steps;
    let terminal = writes && std::io::stderr().is_terminal();
    let bar = if terminal { indicatif::ProgressBar::new(steps) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Off a terminal (a log, CI), about ten lines over the run.
    let line_every = (steps / 10).max(1);
    let mut latest = String::from("-");
    let summary = trainer.run(|r, events| {
        if let Some(e) = r.events.first() {
            latest = format!("{} at {}", e.name(), r.step);
        }
        let status = format!("loss {:.4e}  norm {:.3e}  last event: {latest}", r.loss, r.norm);
        if terminal {
            bar.set_position(r.step + 1);
            bar.set_message(status);
        } else if writes && (r.step + 1).is_multiple_of(line_every) {
            eprintln!("step {}/{steps}  {status}", r.step + 1);
        }
        stream.as_mut().map_or(Ok(()), |s| s.record(r, events))
    })?;
    bar.finish_and_clear();
    for e in trainer.monitor().events().iter().filter(|e| writes && e.detector.is_explosion()).take(5) {
        eprintln!("explosion: {e}");
    }
    if let Some(dir) = out {
        super::output::write_summary(dir, &trainer, &summary)?;
    }
    let signal = match signal.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n as i32),
    };
    Ok(Outcome { summary, signal })
}
