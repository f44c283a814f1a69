//! `GradMonitor`: reads each step's `NormStats` (global and per-layer norms) and the loss,
//! and reports explosions as they happen, each naming the step, the layer and the value.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::error::{Error, Result};
use crate::norm::NormStats;

/// What noticed a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Detector {
    /// A NaN or ±inf gradient element; the layer is the first one holding one.
    NonFiniteGradient,
    /// A layer's forward output held NaN or ±inf; the layer is the first one (with
    /// `TrainConfig::watch_forward`).
    NonFiniteForward,
    /// The loss is NaN or ±inf (named `loss`; watching the forward pass names the layer).
    NonFiniteLoss,
    /// The norm of the gradient the optimizer received (after clipping) above
    /// [`MonitorConfig::max_norm`]: clipping that contains a raw spike is no explosion.
    AbsoluteNorm,
    /// The global norm's z-score against its EMA mean and variance (ZClip) above the limit.
    Spike,
    /// The global norm above `factor ×` a percentile of its history (AutoClip).
    Percentile,
    /// The first layer's norm over the last layer's above a ratio: growth with depth.
    DepthGrowth,
    /// The loss above `factor ×` its EMA and above its level at the end of the warm-up: a
    /// jump that undoes the progress made, not the noise of a loss near zero.
    LossSpike,
}

impl Detector {
    /// Training is broken, not just bumpy: these count as an explosion.
    pub fn is_explosion(self) -> bool {
        matches!(self, Self::NonFiniteGradient | Self::NonFiniteForward | Self::NonFiniteLoss | Self::AbsoluteNorm | Self::LossSpike)
    }

    /// Short kebab-case name used in logs, `events.jsonl` and plots, e.g. `"norm-spike"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::NonFiniteGradient => "nonfinite-grad",
            Self::NonFiniteForward => "nonfinite-forward",
            Self::NonFiniteLoss => "nonfinite-loss",
            Self::AbsoluteNorm => "norm-above-max",
            Self::Spike => "norm-spike",
            Self::Percentile => "norm-above-percentile",
            Self::DepthGrowth => "depth-growth",
            Self::LossSpike => "loss-spike",
        }
    }
}

/// One detection.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Explosion {
    /// The step whose record raised it.
    pub step: u64,
    /// Which detector fired.
    pub detector: Detector,
    /// The layer at fault: the first non-finite one (gradients), the one with the largest
    /// norm (global-norm detectors), the first layer (depth growth), or `loss`.
    pub layer: String,
    /// What was measured (a norm, a z-score, a ratio, a loss).
    pub value: f64,
    /// What it was compared against.
    pub threshold: f64,
}

impl std::fmt::Display for Explosion {
    /// Each detector in its own words: a count is a count, a global norm is global (with
    /// the layer of the largest norm beside it), a loss belongs to no layer.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (step, name, layer, value, threshold) = (self.step, self.detector.name(), &self.layer, self.value, self.threshold);
        match self.detector {
            Detector::NonFiniteGradient => write!(f, "step {step}: {name} in {layer}: {value} NaN or infinite gradient elements"),
            Detector::NonFiniteForward => write!(f, "step {step}: {name} in {layer}: {value} NaN or infinite output values"),
            Detector::NonFiniteLoss => write!(f, "step {step}: {name}: the loss is {value}"),
            Detector::LossSpike => {
                write!(f, "step {step}: {name}: loss {value:.4e} above {threshold:.4e} (a multiple of its average, and its level after the warm-up)")
            }
            Detector::AbsoluteNorm => {
                write!(f, "step {step}: {name}: global norm after clipping {value:.4e} > {threshold:.4e} (largest layer norm: {layer})")
            }
            Detector::Spike => write!(f, "step {step}: {name}: global norm z-score {value:.2} > {threshold:.2} (largest layer norm: {layer})"),
            Detector::Percentile => {
                write!(f, "step {step}: {name}: global norm {value:.4e} > {threshold:.4e} (largest layer norm: {layer})")
            }
            Detector::DepthGrowth => write!(f, "step {step}: {name}: {layer}'s norm {value:.4e}× the last layer's (limit {threshold:.4e})"),
        }
    }
}

/// Detector settings. The spike detector uses ZClip's defaults.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MonitorConfig {
    /// Global L2 norm after clipping above which [`Detector::AbsoluteNorm`] fires (+inf turns
    /// it off).
    pub max_norm: f64,
    /// EMA smoothing of the norm's mean and variance (ZClip: 0.97).
    pub ema_alpha: f64,
    /// z-score limit (ZClip: 2.5).
    pub z_threshold: f64,
    /// Steps observed before the statistical detectors speak (ZClip: 25).
    pub warmup: u64,
    /// Percentile of the norm history (AutoClip) and the factor above it that is flagged.
    pub percentile: f64,
    /// Factor over that percentile above which [`Detector::Percentile`] fires.
    pub percentile_factor: f64,
    /// First layer's norm over the last's above which [`Detector::DepthGrowth`] fires (+inf
    /// turns it off).
    pub depth_ratio: f64,
    /// Factor over the loss EMA above which [`Detector::LossSpike`] fires (+inf turns it off).
    pub loss_factor: f64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            max_norm: 1e4,
            ema_alpha: 0.97,
            z_threshold: 2.5,
            warmup: 25,
            percentile: 90.0,
            percentile_factor: 5.0,
            depth_ratio: 1e3,
            loss_factor: 10.0,
        }
    }
}

impl MonitorConfig {
    /// Checks every setting; a library caller gets a typed error here instead of nonsense
    /// (or a panic) later.
    pub fn validate(&self) -> Result<()> {
        positive("monitor max_norm", self.max_norm, true)?;
        unit_interval("monitor ema_alpha", self.ema_alpha)?;
        positive("monitor z_threshold", self.z_threshold, false)?;
        if self.warmup == 0 {
            return Err(Error::OutOfRange { what: "monitor warmup", value: 0.0, expected: "≥ 1 step" });
        }
        percentile_range("monitor percentile", self.percentile)?;
        positive("monitor percentile_factor", self.percentile_factor, false)?;
        positive("monitor depth_ratio", self.depth_ratio, true)?;
        positive("monitor loss_factor", self.loss_factor, true)
    }
}

/// `value > 0` (and finite unless `allow_inf`: +inf turns a threshold off).
pub(crate) fn positive(what: &'static str, value: f64, allow_inf: bool) -> Result<()> {
    if value > 0.0 && (allow_inf || value.is_finite()) {
        Ok(())
    } else {
        let expected = if allow_inf { "> 0 (or +inf)" } else { "finite and > 0" };
        Err(Error::OutOfRange { what, value, expected })
    }
}

/// An EMA smoothing factor in [0, 1].
pub(crate) fn unit_interval(what: &'static str, value: f64) -> Result<()> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::OutOfRange { what, value, expected: "in [0, 1]" })
    }
}

/// A percentile in [0, 100].
pub(crate) fn percentile_range(what: &'static str, value: f64) -> Result<()> {
    if (0.0..=100.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::OutOfRange { what, value, expected: "a percentile in [0, 100]" })
    }
}

/// An exponential moving mean and variance, as ZClip keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Ema {
    /// Smoothed mean.
    pub mean: f64,
    /// Smoothed variance.
    pub var: f64,
    /// Values folded in so far.
    pub count: u64,
}

impl Ema {
    /// Folds in `x` (the mean of the first value is the value itself).
    pub fn update(&mut self, x: f64, alpha: f64) {
        if self.count == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            self.mean = alpha * self.mean + (1.0 - alpha) * x;
            self.var = alpha * self.var + (1.0 - alpha) * d * d;
        }
        self.count += 1;
    }

    /// z-score of `x` against the mean and variance (the standard deviation floored at 1e-12).
    pub fn z(&self, x: f64) -> f64 {
        (x - self.mean) / self.var.sqrt().max(1e-12)
    }
}

/// `p`-th percentile (0..=100, nearest rank) of sorted values. A `p` outside 0..=100
/// picks the nearest end (NaN the first value).
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    Some(sorted[rank(p, sorted.len())?])
}

/// The index [`percentile`] picks among `n` sorted values (None when `n == 0`).
fn rank(p: f64, n: usize) -> Option<usize> {
    let last = n.checked_sub(1)?;
    // `as usize` saturates: negative and NaN give 0.
    Some((((p / 100.0) * last as f64).round() as usize).min(last))
}

/// An `f64` ordered by [`f64::total_cmp`], for the heaps of [`NormHistory`].
#[derive(Clone, Copy, Debug)]
struct Total(f64);

impl PartialEq for Total {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Total {}

impl PartialOrd for Total {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Total {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Every finite norm seen so far and one fixed percentile of them (AutoClip's statistic,
/// the percentile detector's): O(log n) inserts and O(1) queries, the same value as
/// [`percentile`] over the sorted history. Two heaps split the values at the percentile's
/// rank: `lower` (a max-heap) holds the smallest `rank + 1`, `upper` (a min-heap) the rest.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "SortedHistory", into = "SortedHistory"))]
pub struct NormHistory {
    p: f64,
    lower: BinaryHeap<Total>,
    upper: BinaryHeap<Reverse<Total>>,
}

/// [`NormHistory`]'s serialized form: the percentile and the values, sorted.
#[derive(Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct SortedHistory {
    p: f64,
    sorted: Vec<f64>,
}

impl From<SortedHistory> for NormHistory {
    fn from(s: SortedHistory) -> Self {
        Self::from_values(s.p, s.sorted)
    }
}

impl From<NormHistory> for SortedHistory {
    fn from(h: NormHistory) -> Self {
        Self { p: h.p, sorted: h.sorted() }
    }
}

impl NormHistory {
    /// An empty history that answers the `p`-th percentile (0..=100).
    pub fn new(p: f64) -> Self {
        Self { p, lower: BinaryHeap::new(), upper: BinaryHeap::new() }
    }

    /// A history holding `values` (in any order; non-finite ones are left out).
    pub fn from_values(p: f64, values: impl IntoIterator<Item = f64>) -> Self {
        let mut history = Self::new(p);
        values.into_iter().for_each(|v| {
            history.insert(v);
        });
        history
    }

    /// The percentile this history answers (0..=100).
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.lower.len() + self.upper.len()
    }

    /// Whether no value is held yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `value` if it is finite (returns whether it did).
    pub fn insert(&mut self, value: f64) -> bool {
        if !value.is_finite() {
            return false;
        }
        match self.lower.peek() {
            Some(max) if value <= max.0 => self.lower.push(Total(value)),
            _ => self.upper.push(Reverse(Total(value))),
        }
        let target = rank(self.p, self.len()).map_or(0, |r| r + 1);
        while self.lower.len() > target {
            let moved = self.lower.pop().expect("longer than target ≥ 0");
            self.upper.push(Reverse(moved));
        }
        while self.lower.len() < target {
            let Some(Reverse(moved)) = self.upper.pop() else { break };
            self.lower.push(moved);
        }
        true
    }

    /// The `p`-th percentile (nearest rank) of the values so far; None while empty.
    pub fn percentile(&self) -> Option<f64> {
        self.lower.peek().map(|t| t.0)
    }

    /// The values, sorted (checkpoints save them so).
    pub fn sorted(&self) -> Vec<f64> {
        let mut values: Vec<f64> = self.lower.iter().map(|t| t.0).chain(self.upper.iter().map(|t| t.0 .0)).collect();
        values.sort_by(f64::total_cmp);
        values
    }
}

/// What a monitor has learned from the steps it saw: a checkpoint saves it so that a
/// resumed run's detectors answer as if it had never stopped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MonitorState {
    /// EMA of the global L2 norm (spike detector).
    pub norm_ema: Ema,
    /// EMA of the loss (loss-spike detector).
    pub loss_ema: Ema,
    /// The loss EMA when the warm-up ended: what a loss spike must also exceed.
    pub loss_start: Option<f64>,
    /// Finite norms seen so far, sorted (AutoClip's history).
    pub history: Vec<f64>,
    /// Detectors that fired at the last step (they report again only after a pause).
    pub firing: Vec<Detector>,
    /// Every event so far.
    pub events: Vec<Explosion>,
}

/// Watches norms and losses step by step. Each detector reports when it starts firing,
/// not again while it keeps firing, so a long explosion is one event.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GradMonitor {
    config: MonitorConfig,
    layers: Vec<String>,
    /// For each gradient segment, the index of its layer in `layers`.
    segment_layer: Vec<usize>,
    norm_ema: Ema,
    loss_ema: Ema,
    loss_start: Option<f64>,
    /// Finite norms seen so far (AutoClip's history) and their percentile.
    history: NormHistory,
    firing: Vec<Detector>,
    events: Vec<Explosion>,
}

impl GradMonitor {
    /// `layers`: names of the layers; `segment_layer[s]`: the layer of gradient segment `s`,
    /// an index into `layers`. Refuses an invalid configuration or a segment whose layer
    /// does not exist.
    pub fn new(config: MonitorConfig, layers: Vec<String>, segment_layer: Vec<usize>) -> Result<Self> {
        config.validate()?;
        if let Some(&l) = segment_layer.iter().find(|&&l| l >= layers.len()) {
            return Err(Error::NotBelow { what: "a gradient segment's layer", value: l as u64, limit: layers.len() as u64 });
        }
        Ok(Self {
            history: NormHistory::new(config.percentile),
            config,
            layers,
            segment_layer,
            norm_ema: Ema::default(),
            loss_ema: Ema::default(),
            loss_start: None,
            firing: Vec::new(),
            events: Vec::new(),
        })
    }

    /// The layer names given to [`GradMonitor::new`].
    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// Per-layer L2 norms: the root of the sum of the squared norms of its segments.
    pub fn layer_norms(&self, stats: &NormStats) -> Vec<f64> {
        let mut sq = vec![0.0f64; self.layers.len()];
        for (s, seg) in stats.segments.iter().enumerate() {
            // `new` checks the map; a deserialized monitor may still hold a bad one.
            if let Some(sum) = self.segment_layer.get(s).and_then(|&l| sq.get_mut(l)) {
                *sum += (seg.l2 as f64).powi(2);
            }
        }
        sq.into_iter().map(f64::sqrt).collect()
    }

    /// Every event so far.
    pub fn events(&self) -> &[Explosion] {
        &self.events
    }

    /// A snapshot of what the monitor has learned, for checkpoints; see [`GradMonitor::restore`].
    pub fn state(&self) -> MonitorState {
        MonitorState {
            norm_ema: self.norm_ema,
            loss_ema: self.loss_ema,
            loss_start: self.loss_start,
            history: self.history.sorted(),
            firing: self.firing.clone(),
            events: self.events.clone(),
        }
    }

    /// Continues from `state` (same configuration and layers).
    pub fn restore(&mut self, state: MonitorState) {
        let MonitorState { norm_ema, loss_ema, loss_start, history, firing, events } = state;
        let history = NormHistory::from_values(self.config.percentile, history);
        (self.norm_ema, self.loss_ema, self.loss_start) = (norm_ema, loss_ema, loss_start);
        (self.history, self.firing, self.events) = (history, firing, events);
    }

    /// Consumes one step's stats (before clipping), loss and the global L2 norm after
    /// clipping (the same as the stats' norm when nothing clips), and, when the forward
    /// pass is watched, its first layer with non-finite output and their count; returns
    /// the events raised.
    pub fn observe(&mut self, step: u64, stats: &NormStats, loss: f32, applied_norm: f32, forward: Option<(&str, u32)>) -> Vec<Explosion> {
        let c = self.config.clone();
        let norm = stats.l2 as f64;
        let layer_norms = self.layer_norms(stats);
        let loudest = layer_norms
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.is_nan())
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
        let name = |i: usize| self.layers.get(i).cloned().unwrap_or_else(|| "?".into());
        let warm = self.norm_ema.count >= c.warmup;
        let mut fired: Vec<(Detector, String, f64, f64)> = Vec::new();

        // The forward pass first: where it went non-finite is the cause of the rest.
        if let Some((layer, count)) = forward {
            fired.push((Detector::NonFiniteForward, layer.to_string(), count as f64, 0.0));
        }
        if let Some(segment) = stats.first_nonfinite_segment {
            let layer = self.segment_layer.get(segment as usize).copied().unwrap_or(0);
            fired.push((Detector::NonFiniteGradient, name(layer), (stats.nan_count + stats.inf_count) as f64, 0.0));
        }
        if !loss.is_finite() {
            fired.push((Detector::NonFiniteLoss, "loss".into(), loss as f64, 0.0));
        }
        let applied = applied_norm as f64;
        if applied.is_finite() && applied > c.max_norm {
            fired.push((Detector::AbsoluteNorm, name(loudest), applied, c.max_norm));
        }
        if norm.is_finite() {
            if warm {
                let z = self.norm_ema.z(norm);
                if z > c.z_threshold {
                    fired.push((Detector::Spike, name(loudest), z, c.z_threshold));
                }
                if let Some(p) = self.history.percentile() {
                    if norm > c.percentile_factor * p {
                        fired.push((Detector::Percentile, name(loudest), norm, c.percentile_factor * p));
                    }
                }
            }
            let (first, last) = (layer_norms.first().copied().unwrap_or(0.0), layer_norms.last().copied().unwrap_or(0.0));
            if layer_norms.len() > 1 && first > c.depth_ratio * last {
                fired.push((Detector::DepthGrowth, name(0), first / last.max(f64::MIN_POSITIVE), c.depth_ratio));
            }
            self.norm_ema.update(norm, c.ema_alpha);
            self.history.insert(norm);
        }
        let loss = loss as f64;
        if loss.is_finite() {
            if let Some(start) = self.loss_start {
                let limit = (c.loss_factor * self.loss_ema.mean.max(1e-12)).max(start);
                if loss > limit {
                    fired.push((Detector::LossSpike, "loss".into(), loss, limit));
                }
            }
            self.loss_ema.update(loss, c.ema_alpha);
            if self.loss_start.is_none() && self.loss_ema.count >= c.warmup {
                self.loss_start = Some(self.loss_ema.mean);
            }
        }

        let now: Vec<Detector> = fired.iter().map(|f| f.0).collect();
        let new: Vec<Explosion> = fired
            .into_iter()
            .filter(|f| !self.firing.contains(&f.0))
            .map(|(detector, layer, value, threshold)| Explosion { step, detector, layer, value, threshold })
            .collect();
        self.firing = now;
        self.events.extend(new.iter().cloned());
        new
    }
}
