//! `GradMonitor`: reads each step's `NormStats` (global and per-layer norms) and the loss,
//! and reports explosions as they happen, each naming the step, the layer and the value.

use crate::norm::NormStats;

/// What noticed a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Detector {
    /// A NaN or ±inf gradient element; the layer is the first one holding one.
    NonFiniteGradient,
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
    /// The loss above `factor ×` its EMA (after the warm-up).
    LossSpike,
}

impl Detector {
    /// Training is broken, not just bumpy: these count as an explosion.
    pub fn is_explosion(self) -> bool {
        matches!(self, Self::NonFiniteGradient | Self::NonFiniteLoss | Self::AbsoluteNorm | Self::LossSpike)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::NonFiniteGradient => "nonfinite-grad",
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
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Explosion {
    pub step: u64,
    pub detector: Detector,
    /// The layer at fault: the first non-finite one, or the one with the largest norm.
    pub layer: String,
    /// What was measured (a norm, a z-score, a ratio, a loss).
    pub value: f64,
    /// What it was compared against.
    pub threshold: f64,
}

impl std::fmt::Display for Explosion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {}: {} in {} ({:.4e} > {:.4e})", self.step, self.detector.name(), self.layer, self.value, self.threshold)
    }
}

/// Detector settings. The spike detector uses ZClip's defaults.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MonitorConfig {
    pub max_norm: f64,
    /// EMA smoothing of the norm's mean and variance (ZClip: 0.97).
    pub ema_alpha: f64,
    /// z-score limit (ZClip: 2.5).
    pub z_threshold: f64,
    /// Steps observed before the statistical detectors speak (ZClip: 25).
    pub warmup: u64,
    /// Percentile of the norm history (AutoClip) and the factor above it that is flagged.
    pub percentile: f64,
    pub percentile_factor: f64,
    pub depth_ratio: f64,
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

/// An exponential moving mean and variance, as ZClip keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ema {
    pub mean: f64,
    pub var: f64,
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

    pub fn z(&self, x: f64) -> f64 {
        (x - self.mean) / self.var.sqrt().max(1e-12)
    }
}

/// `p`-th percentile (0..=100, nearest rank) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((p / 100.0) * last as f64).round() as usize].min(sorted[last]))
}

/// What a monitor has learned from the steps it saw: a checkpoint saves it so that a
/// resumed run's detectors answer as if it had never stopped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MonitorState {
    pub norm_ema: Ema,
    pub loss_ema: Ema,
    /// Finite norms seen so far, sorted (AutoClip's history).
    pub history: Vec<f64>,
    /// Detectors that fired at the last step (they report again only after a pause).
    pub firing: Vec<Detector>,
    pub events: Vec<Explosion>,
}

/// Watches norms and losses step by step. Each detector reports when it starts firing,
/// not again while it keeps firing, so a long explosion is one event.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GradMonitor {
    config: MonitorConfig,
    layers: Vec<String>,
    /// For each gradient segment, the index of its layer in `layers`.
    segment_layer: Vec<usize>,
    norm_ema: Ema,
    loss_ema: Ema,
    /// Finite norms seen so far, sorted (AutoClip's history).
    history: Vec<f64>,
    firing: Vec<Detector>,
    events: Vec<Explosion>,
}

impl GradMonitor {
    /// `layers`: names of the layers; `segment_layer[s]`: the layer of gradient segment `s`.
    pub fn new(config: MonitorConfig, layers: Vec<String>, segment_layer: Vec<usize>) -> Self {
        Self {
            config,
            layers,
            segment_layer,
            norm_ema: Ema::default(),
            loss_ema: Ema::default(),
            history: Vec::new(),
            firing: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// Per-layer L2 norms: the root of the sum of the squared norms of its segments.
    pub fn layer_norms(&self, stats: &NormStats) -> Vec<f64> {
        let mut sq = vec![0.0f64; self.layers.len()];
        for (s, seg) in stats.segments.iter().enumerate() {
            if let Some(&l) = self.segment_layer.get(s) {
                sq[l] += (seg.l2 as f64).powi(2);
            }
        }
        sq.into_iter().map(f64::sqrt).collect()
    }

    /// Every event so far.
    pub fn events(&self) -> &[Explosion] {
        &self.events
    }

    pub fn state(&self) -> MonitorState {
        MonitorState {
            norm_ema: self.norm_ema,
            loss_ema: self.loss_ema,
            history: self.history.clone(),
            firing: self.firing.clone(),
            events: self.events.clone(),
        }
    }

    /// Continues from `state` (same configuration and layers).
    pub fn restore(&mut self, state: MonitorState) {
        let MonitorState { norm_ema, loss_ema, history, firing, events } = state;
        (self.norm_ema, self.loss_ema, self.history, self.firing, self.events) = (norm_ema, loss_ema, history, firing, events);
    }

    /// Consumes one step's stats (before clipping), loss and the global L2 norm after
    /// clipping (the same as the stats' norm when nothing clips); returns the events raised.
    pub fn observe(&mut self, step: u64, stats: &NormStats, loss: f32, applied_norm: f32) -> Vec<Explosion> {
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

        if let Some(segment) = stats.first_nonfinite_segment {
            let layer = self.segment_layer.get(segment as usize).copied().unwrap_or(0);
            fired.push((Detector::NonFiniteGradient, name(layer), (stats.nan_count + stats.inf_count) as f64, 0.0));
        }
        if !loss.is_finite() {
            fired.push((Detector::NonFiniteLoss, name(loudest), loss as f64, 0.0));
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
                if let Some(p) = percentile(&self.history, c.percentile) {
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
            let at = self.history.partition_point(|&h| h < norm);
            self.history.insert(at, norm);
        }
        let loss = loss as f64;
        if loss.is_finite() {
            if warm && loss > c.loss_factor * self.loss_ema.mean.max(1e-12) {
                fired.push((Detector::LossSpike, name(loudest), loss, c.loss_factor * self.loss_ema.mean));
            }
            self.loss_ema.update(loss, c.ema_alpha);
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
