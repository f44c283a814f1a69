//! Twin of `shaders/clip.wgsl` (and, for AGC, `shaders/agc.wgsl` through `cpu::agc`):
//! the norm, then clipping in place, as `GradClip` does.

use super::adaptive::AdaptiveTwin;
use super::norm::{clip_coef, norm, Sums};
use crate::clip::ClipPolicy;
use crate::norm::{NonFinitePolicy, NormKind, NormStats};

const EPS: f32 = 1e-6;

fn max_norm_and_kind(policy: &ClipPolicy) -> (Option<f32>, NormKind) {
    match policy {
        ClipPolicy::GlobalNorm { max_norm, kind } | ClipPolicy::PerSegmentNorm { max_norm, kind } => {
            (Some(*max_norm), *kind)
        }
        ClipPolicy::Adaptive(p) => (Some(p.max_norm().unwrap_or(f32::MAX)), NormKind::L2),
        _ => (None, NormKind::L2),
    }
}

/// Clips `grads` (one Vec per segment) in place and returns the pre-clip stats.
/// `params` is AGC's parameter data, mirroring `grads`. An adaptive policy runs its first
/// step from fresh statistics ([`clip_adaptive`] carries them across steps).
pub fn clip(grads: &mut [Vec<f32>], policy: &ClipPolicy, params: Option<&[Vec<f32>]>, nonfinite: NonFinitePolicy) -> NormStats {
    let mut fresh = match policy {
        ClipPolicy::Adaptive(p) => Some(AdaptiveTwin::new(*p)),
        _ => None,
    };
    clip_adaptive(grads, policy, params, nonfinite, fresh.as_mut())
}

/// [`clip`], with an adaptive policy's statistics carried in `adaptive`.
pub fn clip_adaptive(
    grads: &mut [Vec<f32>],
    policy: &ClipPolicy,
    params: Option<&[Vec<f32>]>,
    nonfinite: NonFinitePolicy,
    adaptive: Option<&mut AdaptiveTwin>,
) -> NormStats {
    let (max_norm, kind) = max_norm_and_kind(policy);
    let views: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
    let mut stats = norm(&views, kind, max_norm, EPS, nonfinite);
    if let Some(twin) = adaptive {
        let limit = twin.step(stats.usable_norm(nonfinite)) as f32;
        let total = views.iter().fold(Sums::default(), |a, v| a.add(Sums::of(v)));
        stats.clip_coef = clip_coef(&total, kind, Some(limit), EPS, nonfinite);
        stats.limit = limit;
    }
    if stats.skipped {
        return stats;
    }
    let zero = nonfinite == NonFinitePolicy::ZeroNonFinite;
    for (i, g) in grads.iter_mut().enumerate() {
        let sums = Sums::of(g);
        if zero {
            g.iter_mut().filter(|x| !x.is_finite()).for_each(|x| *x = 0.0);
        }
        match policy {
            ClipPolicy::None => {}
            ClipPolicy::GlobalNorm { .. } | ClipPolicy::Adaptive(_) => g.iter_mut().for_each(|x| *x *= stats.clip_coef),
            ClipPolicy::PerSegmentNorm { .. } => {
                let coef = clip_coef(&sums, kind, max_norm, EPS, nonfinite);
                g.iter_mut().for_each(|x| *x *= coef)
            }
            ClipPolicy::Value { clip_value } => {
                g.iter_mut().for_each(|x| {
                    if !x.is_nan() {
                        *x = x.clamp(-clip_value, *clip_value)
                    }
                });
            }
            ClipPolicy::Agc { clipping, eps, unit_lens, .. } => {
                let p = &params.expect("AGC needs parameter data")[i];
                super::agc::agc(g, p, unit_lens[i] as usize, *clipping, *eps);
            }
        }
    }
    stats
}
