//! How a training step clips: the norm (and an adaptive threshold) before the optimizer,
//! the gradients scaled as the optimizer reads them or clipped in place, and what each step's
//! record holds of it.

use crate::adaptive::{AdaptiveClip, AdaptivePolicy};
use crate::clip::GradClip;
use crate::error::{Error, Result};
use crate::kernels::optimizer::GradScale;
use crate::nn::{GpuModel, TensorSpec};
use crate::norm::{GradNorm, NonFinitePolicy, NormConfig, NormStats};

use super::ClipSetting;

/// How a step clips: by scaling the gradients as the optimizer reads them (global and
/// per-tensor norm clipping: no pass over the gradients, no second norm), or in place
/// before it (value clipping, AGC), measuring what clipping left with a second norm.
pub(super) enum Clipping {
    OnRead { norm: GradNorm, adaptive: Option<AdaptiveClip>, scale: GradScale, per_tensor: Option<(f32, crate::NormKind)> },
    InPlace { clip: GradClip, applied: GradNorm },
}

impl Clipping {
    /// The clipping `setting` asks for, over the model's packed gradients.
    pub(super) fn new(
        device: &wgpu::Device,
        setting: ClipSetting,
        nonfinite: NonFinitePolicy,
        model: &GpuModel,
        tensors: &[TensorSpec],
    ) -> Result<Self> {
        let grads = model.grad_set();
        let norm_config = |kind, max_norm| NormConfig { kind, max_norm, nonfinite, ..NormConfig::default() };
        let on_read = |kind, max_norm, scale, per_tensor, policy: Option<AdaptivePolicy>| -> Result<Clipping> {
            let norm = GradNorm::new(device, &grads, &norm_config(kind, max_norm))?;
            let adaptive = policy.map(|p| AdaptiveClip::new(device, &p, &norm)).transpose()?;
            Ok(Clipping::OnRead { norm, adaptive, scale, per_tensor })
        };
        let in_place = |policy| -> Result<Clipping> {
            let clip = GradClip::new(device, &grads, policy, nonfinite)?;
            Ok(Clipping::InPlace { clip, applied: GradNorm::new(device, &grads, &NormConfig::default())? })
        };
        let l2 = crate::NormKind::L2;
        Ok(match setting {
            ClipSetting::None => on_read(l2, None, GradScale::None, None, None)?,
            ClipSetting::GlobalNorm { max_norm, kind } => on_read(kind, Some(max_norm), GradScale::Global, None, None)?,
            ClipSetting::PerSegmentNorm { max_norm, kind } => {
                on_read(kind, Some(max_norm), GradScale::PerSegment, Some((max_norm, kind)), None)?
            }
            // The norm's coefficient is computed with the cap; the kernel rewrites it.
            ClipSetting::Adaptive(policy) => {
                on_read(l2, Some(policy.max_norm().unwrap_or(f32::MAX)), GradScale::Global, None, Some(policy))?
            }
            ClipSetting::Value { .. } | ClipSetting::Agc { .. } => {
                in_place(setting.policy(|| (model.param_set(), tensors.iter().map(|t| t.unit_len()).collect())))?
            }
        })
    }

    pub(super) fn norm(&self) -> &GradNorm {
        match self {
            Self::OnRead { norm, .. } => norm,
            Self::InPlace { clip, .. } => clip.norm(),
        }
    }

    /// The adaptive threshold's state, carried from step to step.
    pub(super) fn adaptive(&self) -> Option<&AdaptiveClip> {
        match self {
            Self::OnRead { adaptive, .. } => adaptive.as_ref(),
            Self::InPlace { clip, .. } => clip.adaptive(),
        }
    }

    pub(super) fn stats_buffer(&self) -> &wgpu::Buffer {
        self.norm().stats_buffer()
    }

    pub(super) fn dispatch_count(&self) -> usize {
        match self {
            Self::OnRead { norm, adaptive, .. } => norm.dispatch_count() + adaptive.is_some() as usize,
            Self::InPlace { clip, applied } => clip.dispatch_count() + applied.dispatch_count(),
        }
    }

    pub(super) fn encode_in_pass(&self, pass: &mut wgpu::ComputePass<'_>) {
        match self {
            Self::OnRead { norm, adaptive, .. } => {
                norm.encode_in_pass(pass);
                if let Some(a) = adaptive {
                    a.encode_in_pass(pass);
                }
            }
            Self::InPlace { clip, .. } => clip.encode_in_pass(pass),
        }
    }

    /// After the optimizer has read the gradients: the norm of what it applied, where that
    /// needs measuring.
    pub(super) fn encode_applied(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let Self::InPlace { applied, .. } = self {
            applied.encode_in_pass(pass);
        }
    }

    /// What each step's ring record copies: the stats, the loss, and the measured applied
    /// norm where there is one.
    pub(super) fn record_sources<'a>(&'a self, loss: &'a wgpu::Buffer) -> Vec<(&'a wgpu::Buffer, u64)> {
        let stats = self.stats_buffer();
        let mut sources = vec![(stats, stats.size()), (loss, 4)];
        if let Self::InPlace { applied, .. } = self {
            sources.push((applied.stats_buffer(), 4));
        }
        sources
    }

    /// A ring record split into the `NormStats` words, the loss and the L2 norm of the
    /// gradient the optimizer applied: measured in place, or, scaling on read, the
    /// coefficients times the norms (as `clip_grad_norm_` scales: coef·‖g‖ per tensor).
    pub(super) fn split_record(&self, mut words: Vec<u32>) -> Result<(Vec<u32>, f32, f32)> {
        let measured = matches!(self, Self::InPlace { .. });
        let tail_len = 1 + measured as usize;
        if words.len() <= tail_len {
            return Err(Error::Readback(format!("a step record of {} words is too short", words.len())));
        }
        let tail = words.split_off(words.len() - tail_len);
        let loss = f32::from_bits(tail[0]);
        if measured {
            return Ok((words, loss, f32::from_bits(tail[1])));
        }
        let stats = NormStats::from_words(&words)?;
        let applied = match self {
            Self::OnRead { scale: GradScale::Global, .. } => stats.clip_coef * stats.l2,
            Self::OnRead { scale: GradScale::PerSegment, per_tensor: Some((max, kind)), .. } => {
                let eps = NormConfig::default().eps;
                let sum: f64 = stats
                    .segments
                    .iter()
                    .map(|s| {
                        let n = match kind {
                            crate::NormKind::L1 => s.l1,
                            crate::NormKind::L2 => s.l2,
                            crate::NormKind::Inf => s.linf,
                        };
                        ((max / (n + eps)).min(1.0) as f64 * s.l2 as f64).powi(2)
                    })
                    .sum();
                sum.sqrt() as f32
            }
            _ => stats.l2,
        };
        Ok((words, loss, applied))
    }
}
