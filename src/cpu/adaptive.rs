//! Twin of `shaders/adaptive.wgsl`: ZClip and AutoClip as their reference algorithms
//! state them, in f64, one step at a time.

use std::collections::VecDeque;

use crate::adaptive::AdaptivePolicy;

/// The statistics an [`AdaptivePolicy`] keeps from step to step.
#[derive(Clone, Debug)]
pub struct AdaptiveTwin {
    policy: AdaptivePolicy,
    /// ZClip: the warm-up norms, then (once `ready`) the EMA.
    warmup: Vec<f64>,
    ready: bool,
    mean: f64,
    var: f64,
    /// AutoClip: the norms in the order seen, at most `capacity`.
    window: VecDeque<f64>,
}

impl AdaptiveTwin {
    /// Fresh statistics.
    pub fn new(policy: AdaptivePolicy) -> Self {
        Self { policy, warmup: Vec::new(), ready: false, mean: 0.0, var: 0.0, window: VecDeque::new() }
    }

    /// Folds this step's norm in (`None`: not usable, nothing learnt) and returns the
    /// limit this step is clipped at (inf: none).
    pub fn step(&mut self, norm: Option<f32>) -> f64 {
        let cap = self.policy.max_norm().map_or(f64::INFINITY, |m| m as f64);
        let Some(x) = norm.map(|x| x as f64) else {
            return match self.policy {
                AdaptivePolicy::ZClip(_) => cap,
                AdaptivePolicy::AutoClip(c) => self.percentile(c.percentile as f64).map_or(cap, |p| p.min(cap)),
            };
        };
        match self.policy {
            AdaptivePolicy::ZClip(c) => {
                if !self.ready {
                    self.warmup.push(x);
                    if self.warmup.len() >= c.warmup as usize {
                        let n = self.warmup.len() as f64;
                        self.mean = self.warmup.iter().sum::<f64>() / n;
                        self.var = self.warmup.iter().map(|v| (v - self.mean).powi(2)).sum::<f64>() / n;
                        self.ready = true;
                    }
                    return cap;
                }
                let (alpha, z) = (c.alpha as f64, c.z as f64);
                let std = self.var.sqrt();
                let zscore = (x - self.mean) / (std + 1e-6);
                let (seen, limit) = if zscore > z {
                    let threshold = self.mean + z * std / (zscore / z);
                    (threshold, threshold.min(cap))
                } else {
                    (x, cap)
                };
                self.mean = alpha * self.mean + (1.0 - alpha) * seen;
                self.var = alpha * self.var + (1.0 - alpha) * (seen - self.mean).powi(2);
                limit
            }
            AdaptivePolicy::AutoClip(c) => {
                if self.window.len() == c.capacity as usize {
                    self.window.pop_front();
                }
                self.window.push_back(x);
                self.percentile(c.percentile as f64).map_or(cap, |p| p.min(cap))
            }
        }
    }

    /// `numpy.percentile(window, p)` (method "linear"), None for an empty window.
    fn percentile(&self, p: f64) -> Option<f64> {
        let mut v: Vec<f64> = self.window.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let last = v.len().checked_sub(1)?;
        let rank = p / 100.0 * last as f64;
        let lo = (rank.floor() as usize).min(last);
        let (a, b, t) = (v[lo], v[(lo + 1).min(last)], rank - lo as f64);
        let diff = b - a;
        Some(if t >= 0.5 { b - diff * (1.0 - t) } else { a + diff * t })
    }
}
