//! Twin of `shaders/clip.wgsl` (and, for AGC, `shaders/agc.wgsl` through `cpu::agc`):
//! the norm, then clipping in place, as `GradClip` does.

use super::norm::{clip_coef, norm, Sums};
use crate::clip::ClipPolicy;
use crate::norm::{NonFinitePolicy, NormKind, NormStats};

const EPS: f32 = 1e-6;

fn max_norm_and_kind(policy: &ClipPolicy) -> (Option<f32>, NormKind) {
    match policy {
        ClipPolicy::GlobalNorm { max_norm, kind } | ClipPolicy::PerSegmentNorm { max_norm, kind } => {
            (Some(*max_norm), *kind)
        }
        _ => (None, NormKind::L2),
    }
}

/// Clips `grads` (one Vec per segment) in place and returns the pre-clip stats.
/// `params` is AGC's parameter data, mirroring `grads`.
pub fn clip(grads: &mut [Vec<f32>], policy: &ClipPolicy, params: Option<&[Vec<f32>]>, nonfinite: NonFinitePolicy) -> NormStats {
    let (max_norm, kind) = max_norm_and_kind(policy);
    let views: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
    let stats = norm(&views, kind, max_norm, EPS, nonfinite);
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
            ClipPolicy::GlobalNorm { .. } => g.iter_mut().for_each(|x| *x *= stats.clip_coef),
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
