//! What a training run is: data, model, optimizer, remedies and responses.

use crate::adaptive::{AdaptivePolicy, AutoClip, ZClip};
use crate::clip::{ClipPolicy, AGC_EPS};
use crate::data::{Dataset, Task};
use crate::error::{Error, Result};
use crate::kernels::activation::Activation;
use crate::kernels::optimizer::{AdamW, Optimizer, Sgd};
use crate::monitor::{positive, MonitorConfig};
use crate::nn::{InitScheme, LossKind, MlpSpec, ModelSpec, RnnSpec};
use crate::norm::{NonFinitePolicy, NormKind};
use crate::GradSet;

/// The network, sized to the task's data when built.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ModelChoice {
    /// A multilayer perceptron ([`MlpSpec`]); for tabular tasks.
    Mlp {
        /// Hidden layers.
        depth: u32,
        /// Features of each hidden layer.
        width: u32,
        /// The hidden layers' activation.
        activation: Activation,
        /// Batch norm between each hidden Linear and its activation.
        batchnorm: bool,
    },
    /// A vanilla RNN with a Linear head ([`RnnSpec`]); for sequence tasks.
    Rnn {
        /// Hidden units.
        hidden: u32,
        /// The recurrence's activation.
        activation: Activation,
    },
}

/// The learning rate over the steps.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Cosine decay from the base rate to 0 over the run.
    Cosine,
    /// Times `factor` every `every` steps.
    Step {
        /// Steps between cuts (≥ 1).
        every: u64,
        /// Multiplier per cut (> 0).
        factor: f32,
    },
}

impl Schedule {
    /// Multiplier of the base learning rate at `step` (0-based) of a run of `steps`.
    pub fn factor(&self, step: u64, steps: u64) -> f32 {
        match *self {
            Self::Constant => 1.0,
            Self::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * step as f64 / steps.max(1) as f64).cos())) as f32,
            Self::Step { every, factor } => factor.powi((step / every.max(1)).min(i32::MAX as u64) as i32),
        }
    }
}

/// The device optimizer (its kernel: [`Optimizer`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum OptimizerChoice {
    /// `torch.optim.SGD` (no dampening, no Nesterov).
    Sgd {
        /// Momentum factor (0: plain SGD).
        momentum: f32,
    },
    /// `torch.optim.AdamW` with PyTorch's default betas and eps.
    AdamW,
}

/// Norms AutoClip keeps from `--clip autoclip`: runs up to this many steps see the paper's
/// whole history; longer ones a sliding window of it.
pub const AUTOCLIP_CAPACITY: u32 = 100_000;

/// How gradients are clipped on the device, between backward and the optimizer.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ClipSetting {
    /// No clipping.
    None,
    /// Every element clamped to `[-clip_value, clip_value]` (`clip_grad_value_`).
    Value {
        /// Largest magnitude kept (> 0).
        clip_value: f32,
    },
    /// All gradients scaled together by their global norm (`clip_grad_norm_`).
    GlobalNorm {
        /// Norm above which to scale down (> 0).
        max_norm: f32,
        /// The norm measured.
        kind: NormKind,
    },
    /// Each parameter tensor (a layer's weight, its bias: a segment of the packed gradients)
    /// by its own norm (Keras `clipnorm`).
    PerSegmentNorm {
        /// Norm above which a tensor is scaled down (> 0).
        max_norm: f32,
        /// The norm measured.
        kind: NormKind,
    },
    /// Unit-wise against the parameter norm (optax `adaptive_grad_clip`), each output unit
    /// of a weight (a row of its `[out, in]`) and each bias whole.
    Agc {
        /// Largest allowed ratio of a unit's gradient norm to its parameter norm (> 0).
        clipping: f32,
        /// Floor of the parameter norm (≥ 0; optax's default [`AGC_EPS`]).
        eps: f32,
    },
    /// A global L2 norm clip whose threshold a device kernel folds from the norm history
    /// (ZClip, AutoClip), from step 0.
    Adaptive(AdaptivePolicy),
}

/// Cuts the learning rate when training turns unstable: at a norm spike (z-score or
/// percentile), a norm above the monitor's limit, a loss spike or a non-finite value.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LrDrop {
    /// Multiplier per cut, in (0, 1].
    pub factor: f32,
    /// The rate never falls below this fraction of the scheduled rate, in (0, 1].
    pub min_scale: f32,
    /// Steps after a cut in which events cut no further: one burst, one cut.
    pub cooldown: u64,
}

impl LrDrop {
    /// `factor` with the default floor (1% of the scheduled rate) and cool-down (100 steps).
    pub fn new(factor: f32) -> Self {
        Self { factor, min_scale: 0.01, cooldown: 100 }
    }

    /// Whether `detector` calls for a cut.
    pub fn reacts_to(detector: crate::monitor::Detector) -> bool {
        use crate::monitor::Detector;
        detector.is_explosion() || matches!(detector, Detector::Spike | Detector::Percentile)
    }

    fn validate(&self) -> Result<()> {
        for (what, v) in [("learning-rate drop factor", self.factor), ("learning-rate floor", self.min_scale)] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(Error::OutOfRange { what, value: v as f64, expected: "in (0, 1]" });
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for LrDrop {
    type Err = Error;

    /// `FACTOR[:MIN_SCALE[:COOLDOWN]]`, e.g. `0.5`, `0.5:0.05`, `0.5:0.05:200`.
    fn from_str(s: &str) -> Result<Self> {
        const EXPECTED: &str = "FACTOR[:MIN_SCALE[:COOLDOWN]] (e.g. 0.5:0.01:50)";
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() > 3 {
            return Err(bad("--lr-drop-on-spike", s, EXPECTED));
        }
        let mut drop = Self::new(number("--lr-drop-on-spike", s, parts[0], EXPECTED)?);
        if let Some(p) = parts.get(1) {
            drop.min_scale = number("--lr-drop-on-spike", s, p, EXPECTED)?;
        }
        if let Some(p) = parts.get(2) {
            drop.cooldown = number("--lr-drop-on-spike", s, p, EXPECTED)?;
        }
        drop.validate()?;
        Ok(drop)
    }
}

/// What the trainer does when the monitor reports (by default: nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Responses {
    /// Cut the learning rate at signs of instability.
    pub lr_drop: Option<LrDrop>,
    /// Stop with a report at the first explosion.
    pub stop_on_explosion: bool,
    /// Stop at the first periodic check that finds the task solved, as the paper's code
    /// does.
    pub stop_when_solved: bool,
}

/// A fault put into one layer's gradient on the device, inside the step, before the norm.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fault {
    /// The step (0-based) whose gradient is hit.
    pub step: u64,
    /// A parameter layer's name from [`ModelSpec::param_layers`] (`linear1`, `bn2`, `rnn`…).
    pub layer: String,
    /// What is done to the gradient.
    pub kind: FaultKind,
    /// Under data-parallel ranks, the one rank whose gradient is hit; every rank when None.
    #[serde(default)]
    pub rank: Option<u32>,
}

/// What a [`Fault`] does.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum FaultKind {
    /// The layer's first gradient element becomes NaN.
    Nan,
    /// … becomes +inf.
    Inf,
    /// The layer's first gradient tensor is multiplied by the factor.
    Scale(f32),
}

/// A whole training run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// The data set and task.
    pub task: Task,
    /// The network, sized to the task's data by [`TrainConfig::model_spec`].
    pub model: ModelChoice,
    /// How weights start.
    pub init: InitScheme,
    /// Optimizer steps to run (≥ 1).
    pub steps: u64,
    /// Samples per step (≥ 2, for batch norm).
    pub batch: u32,
    /// Seed of the initialization, the data split and the batch order.
    pub seed: u64,
    /// Base learning rate (finite, ≥ 0), scaled by the schedule.
    pub lr: f32,
    /// How the learning rate changes over the steps.
    pub schedule: Schedule,
    /// The device optimizer.
    pub optimizer: OptimizerChoice,
    /// Decoupled for AdamW; torch SGD's `weight_decay` for SGD.
    pub weight_decay: f32,
    /// Coupled: `l2·p` added to the gradient (SGD only).
    pub l2: f32,
    /// How gradients are clipped.
    pub clip: ClipSetting,
    /// What a NaN or ±inf gradient does to the step.
    pub on_nonfinite: NonFinitePolicy,
    /// Explosion detector settings.
    pub monitor: MonitorConfig,
    /// What the trainer does when the monitor reports.
    pub responses: Responses,
    /// Faults injected into gradients (tests and demonstrations).
    pub faults: Vec<Fault>,
    /// Check the weights on the validation set every this many steps (0: only at the end),
    /// to tell whether and when the task was solved.
    pub eval_every: u64,
    /// Watch every layer's forward output for NaN and inf, so that an explosion in the
    /// forward pass is reported with its layer (a norm over the outputs: its dispatches
    /// per step, one per output buffer and two).
    pub watch_forward: bool,
}

impl TrainConfig {
    /// The model, sized for `data` (features in, classes or values out).
    pub fn model_spec(&self, data: &Dataset) -> Result<ModelSpec> {
        let outputs = data.outputs();
        match (self.model, self.task.sequence()) {
            (ModelChoice::Mlp { depth, width, activation, batchnorm }, None) => ModelSpec::mlp(&MlpSpec {
                inputs: data.sample_len as u32,
                outputs,
                depth,
                width,
                activation,
                batchnorm,
                init: self.init,
            }),
            (ModelChoice::Rnn { hidden, activation }, Some((steps, inputs))) => {
                ModelSpec::rnn(&RnnSpec { inputs, steps, hidden, outputs, activation, init: self.init })
            }
            (ModelChoice::Mlp { .. }, Some(_)) => Err(Error::Incompatible {
                setting: "model",
                other: format!("the {} task", self.task.name()),
                why: "a sequence task needs the RNN",
            }),
            (ModelChoice::Rnn { .. }, None) => Err(Error::Incompatible {
                setting: "model",
                other: format!("the {} task", self.task.name()),
                why: "a tabular task needs the MLP",
            }),
        }
    }

    /// The loss the task is trained against: MSE for adding and multiplication, cross-entropy
    /// otherwise.
    pub fn loss_kind(&self) -> LossKind {
        match self.task {
            Task::Adding { .. } | Task::Multiplication { .. } => LossKind::Mse,
            Task::Wine | Task::TemporalOrder { .. } | Task::TemporalOrder3 { .. } => LossKind::CrossEntropy,
        }
    }

    /// The device optimizer with its regularization.
    pub fn optimizer_kernel_config(&self) -> Result<Optimizer> {
        let finite = |what: &'static str, v: f32| match v.is_finite() && v >= 0.0 {
            true => Ok(()),
            false => Err(Error::OutOfRange { what, value: v as f64, expected: "finite and ≥ 0" }),
        };
        finite("weight_decay", self.weight_decay)?;
        finite("l2", self.l2)?;
        finite("lr", self.lr)?;
        match self.optimizer {
            OptimizerChoice::Sgd { momentum } => Ok(Optimizer::Sgd(Sgd {
                momentum,
                dampening: 0.0,
                weight_decay: self.weight_decay + self.l2,
                nesterov: false,
            })),
            OptimizerChoice::AdamW if self.l2 > 0.0 => Err(Error::Incompatible {
                setting: "l2",
                other: "AdamW".into(),
                why: "coupled L2 is for SGD; AdamW's weight decay is decoupled: use weight_decay",
            }),
            OptimizerChoice::AdamW => Ok(Optimizer::AdamW(AdamW { weight_decay: self.weight_decay, ..AdamW::default() })),
        }
    }

    /// Checks what a run needs before anything is built or written.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::OutOfRange { what: "steps", value: 0.0, expected: "at least 1" });
        }
        if self.batch < 2 {
            return Err(Error::OutOfRange { what: "batch", value: self.batch as f64, expected: "at least 2 (batch norm needs 2 samples)" });
        }
        self.optimizer_kernel_config()?;
        if self.steps > crate::kernels::optimizer::MAX_STEPS {
            return Err(Error::OutOfRange {
                what: "steps",
                value: self.steps as f64,
                expected: "at most 2^24, what the device's step counter (an f32) counts exactly",
            });
        }
        if let Schedule::Step { every, factor } = self.schedule {
            if every == 0 {
                return Err(Error::OutOfRange { what: "schedule every", value: 0.0, expected: "≥ 1" });
            }
            crate::error::check_positive("schedule factor", factor)?;
        }
        if let Some(drop) = self.responses.lr_drop {
            drop.validate()?;
        }
        if let InitScheme::Normal { std } = self.init {
            crate::error::check_positive("init std", std)?;
        }
        if let Some(late) = self.faults.iter().find(|f| f.step >= self.steps) {
            return Err(Error::NotBelow { what: "a fault's step", value: late.step, limit: self.steps });
        }
        self.clip.validate()?;
        self.monitor.validate()
    }
}

impl ClipSetting {
    /// The core's [`ClipPolicy`] for this setting, the same names and values; AGC's
    /// parameters and unit lengths come from `agc_units`, called for AGC only.
    pub fn policy(self, agc_units: impl FnOnce() -> (GradSet, Vec<u64>)) -> ClipPolicy {
        match self {
            Self::None => ClipPolicy::None,
            Self::Value { clip_value } => ClipPolicy::Value { clip_value },
            Self::GlobalNorm { max_norm, kind } => ClipPolicy::GlobalNorm { max_norm, kind },
            Self::PerSegmentNorm { max_norm, kind } => ClipPolicy::PerSegmentNorm { max_norm, kind },
            Self::Agc { clipping, eps } => {
                let (params, unit_lens) = agc_units();
                ClipPolicy::Agc { clipping, eps, params, unit_lens }
            }
            Self::Adaptive(policy) => ClipPolicy::Adaptive(policy),
        }
    }

    /// Checks thresholds a library caller may have built by hand (the `--clip` parser
    /// already refuses bad ones).
    pub fn validate(&self) -> Result<()> {
        let threshold = |what: &'static str, v: f32| positive(what, v as f64, false);
        match *self {
            Self::None => Ok(()),
            Self::Value { clip_value } => threshold("clip_value", clip_value),
            Self::GlobalNorm { max_norm, .. } | Self::PerSegmentNorm { max_norm, .. } => threshold("clip max_norm", max_norm),
            Self::Agc { clipping, eps } => {
                threshold("AGC clipping", clipping)?;
                crate::error::check_non_negative("AGC eps", eps)
            }
            Self::Adaptive(adaptive) => adaptive.validate(),
        }
    }
}

fn bad(flag: &str, value: &str, expected: &str) -> Error {
    Error::Usage(format!("{flag}: `{value}` is not {expected}"))
}

fn number<T: std::str::FromStr>(flag: &str, value: &str, part: &str, expected: &str) -> Result<T> {
    part.parse().map_err(|_| bad(flag, value, expected))
}

/// `relu`, `tanh`, `sigmoid`, `gelu`, `gelu:tanh`, `identity`, `leaky-relu[:SLOPE]`.
pub fn parse_activation(s: &str) -> Result<Activation> {
    const EXPECTED: &str = "relu, tanh, sigmoid, gelu, gelu:tanh, identity or leaky-relu[:SLOPE]";
    Ok(match s.split_once(':') {
        None => match s {
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            "gelu" => Activation::GELU,
            "identity" => Activation::Identity,
            "leaky-relu" => Activation::LeakyRelu(0.01),
            _ => return Err(bad("--activation", s, EXPECTED)),
        },
        Some(("gelu", "tanh")) => Activation::GELU_TANH,
        Some(("leaky-relu", slope)) => Activation::LeakyRelu(number("--activation", s, slope, EXPECTED)?),
        Some(_) => return Err(bad("--activation", s, EXPECTED)),
    })
}

fn norm_kind(flag: &str, value: &str, s: Option<&str>) -> Result<NormKind> {
    match s {
        None | Some("l2") => Ok(NormKind::L2),
        Some("l1") => Ok(NormKind::L1),
        Some("inf") => Ok(NormKind::Inf),
        Some(_) => Err(bad(flag, value, "a norm kind (l1, l2, inf)")),
    }
}

impl std::str::FromStr for ClipSetting {
    type Err = Error;

    /// `none`, `value:V`, `norm:MAX[:l1|l2|inf]`, `per-layer:MAX[:KIND]`, `agc:C`,
    /// `zclip[:Z[:MAX]]` (ZClip's defaults otherwise), `autoclip[:PERCENTILE[:MAX]]`.
    fn from_str(s: &str) -> Result<Self> {
        const EXPECTED: &str =
            "none, value:V, norm:MAX[:l1|l2|inf], per-layer:MAX[:KIND], agc:C, zclip[:Z[:MAX]] or autoclip[:P[:MAX]]";
        let parts: Vec<&str> = s.split(':').collect();
        let positive = |i: usize| -> Result<f32> {
            let v: f32 = number("--clip", s, parts.get(i).copied().unwrap_or(""), EXPECTED)?;
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(bad("--clip", s, "a positive threshold"))
            }
        };
        Ok(match parts[0] {
            "none" if parts.len() == 1 => Self::None,
            "value" if parts.len() == 2 => Self::Value { clip_value: positive(1)? },
            "norm" if parts.len() <= 3 => Self::GlobalNorm { max_norm: positive(1)?, kind: norm_kind("--clip", s, parts.get(2).copied())? },
            "per-layer" if parts.len() <= 3 => {
                Self::PerSegmentNorm { max_norm: positive(1)?, kind: norm_kind("--clip", s, parts.get(2).copied())? }
            }
            "agc" if parts.len() == 2 => Self::Agc { clipping: positive(1)?, eps: AGC_EPS },
            "zclip" if parts.len() <= 3 => {
                let d = ZClip::default();
                let z = if parts.len() >= 2 { positive(1)? } else { d.z };
                let max_norm = if parts.len() == 3 { Some(positive(2)?) } else { d.max_norm };
                Self::Adaptive(AdaptivePolicy::ZClip(ZClip { z, max_norm, ..d }))
            }
            "autoclip" if parts.len() <= 3 => {
                let percentile = if parts.len() >= 2 { positive(1)? } else { 10.0 };
                if percentile > 100.0 {
                    return Err(bad("--clip", s, "a percentile in (0, 100]"));
                }
                let max_norm = if parts.len() == 3 { Some(positive(2)?) } else { None };
                Self::Adaptive(AdaptivePolicy::AutoClip(AutoClip { percentile, capacity: AUTOCLIP_CAPACITY, max_norm }))
            }
            _ => return Err(bad("--clip", s, EXPECTED)),
        })
    }
}

impl std::str::FromStr for Schedule {
    type Err = Error;

    /// `constant`, `cosine`, `step:EVERY:FACTOR`.
    fn from_str(s: &str) -> Result<Self> {
        const EXPECTED: &str = "constant, cosine or step:EVERY:FACTOR";
        match s.split(':').collect::<Vec<_>>().as_slice() {
            ["constant"] => Ok(Self::Constant),
            ["cosine"] => Ok(Self::Cosine),
            ["step", every, factor] => Ok(Self::Step {
                every: number("--schedule", s, every, EXPECTED)?,
                factor: number("--schedule", s, factor, EXPECTED)?,
            }),
            _ => Err(bad("--schedule", s, EXPECTED)),
        }
    }
}

impl std::str::FromStr for InitScheme {
    type Err = Error;

    /// `kaiming`, `xavier`, `orthogonal[:GAIN]`, `identity[:GAIN]`, `normal:STD`,
    /// `sparse[:RADIUS[:NONZERO]]` (Pascanu's smart tanh: 0.95, 15).
    fn from_str(s: &str) -> Result<Self> {
        const EXPECTED: &str = "kaiming, xavier, orthogonal[:GAIN], identity[:GAIN], normal:STD or sparse[:RADIUS[:NONZERO]]";
        match s.split(':').collect::<Vec<_>>().as_slice() {
            ["kaiming"] => Ok(Self::Kaiming),
            ["xavier"] => Ok(Self::Xavier),
            ["orthogonal"] => Ok(Self::Orthogonal { gain: 1.0 }),
            ["orthogonal", g] => Ok(Self::Orthogonal { gain: number("--init", s, g, EXPECTED)? }),
            ["identity"] => Ok(Self::Identity { gain: 1.0 }),
            ["identity", g] => Ok(Self::Identity { gain: number("--init", s, g, EXPECTED)? }),
            ["normal", std] => Ok(Self::Normal { std: number("--init", s, std, EXPECTED)? }),
            ["sparse"] => Ok(Self::Sparse { radius: 0.95, nonzero: 15 }),
            ["sparse", r] => Ok(Self::Sparse { radius: number("--init", s, r, EXPECTED)?, nonzero: 15 }),
            ["sparse", r, k] => {
                Ok(Self::Sparse { radius: number("--init", s, r, EXPECTED)?, nonzero: number("--init", s, k, EXPECTED)? })
            }
            _ => Err(bad("--init", s, EXPECTED)),
        }
    }
}

impl Fault {
    /// `STEP:LAYER` (NaN or inf) or `STEP:LAYER:FACTOR` (scale), each optionally followed
    /// by `@RANK`: that rank alone, under data-parallel ranks.
    pub fn parse(flag: &str, s: &str, kind: Option<FaultKind>) -> Result<Self> {
        let expected = if kind.is_some() { "STEP:LAYER[@RANK]" } else { "STEP:LAYER:FACTOR[@RANK]" };
        let (spec, rank) = match s.rsplit_once('@') {
            Some((spec, rank)) => (spec, Some(number(flag, s, rank, expected)?)),
            None => (s, None),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let step = number(flag, s, parts[0], expected)?;
        let kind = match (kind, parts.as_slice()) {
            (Some(kind), [_, _]) => kind,
            (None, [_, _, factor]) => FaultKind::Scale(number(flag, s, factor, expected)?),
            _ => return Err(bad(flag, s, expected)),
        };
        Ok(Self { step, layer: parts[1].to_string(), kind, rank })
    }
}
