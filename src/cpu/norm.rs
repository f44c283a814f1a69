//! Twin of `shaders/norm.wgsl`: per-segment and global norms, counts, clip coefficients.

use crate::norm::{NonFinitePolicy, NormKind, NormStats, SegmentNorms};

/// Exact-ish sums of one segment or of the whole set, in f64.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sums {
    /// Sum of squares of the finite elements.
    pub sumsq: f64,
    /// Sum of absolute values of the finite elements.
    pub abssum: f64,
    /// Largest absolute value among the finite elements (0 if none).
    pub maxabs: f64,
    /// NaN elements.
    pub nan: u32,
    /// ±inf elements.
    pub inf: u32,
}

impl Sums {
    /// Sums of `values`; NaN and ±inf are counted, not summed.
    pub fn of(values: &[f32]) -> Self {
        let mut s = Self::default();
        for &x in values {
            if x.is_nan() {
                s.nan += 1;
            } else if x.is_infinite() {
                s.inf += 1;
            } else {
                let a = (x as f64).abs();
                s.sumsq += a * a;
                s.abssum += a;
                s.maxabs = s.maxabs.max(a);
            }
        }
        s
    }

    /// The sums of both.
    pub fn add(self, o: Self) -> Self {
        Self {
            sumsq: self.sumsq + o.sumsq,
            abssum: self.abssum + o.abssum,
            maxabs: self.maxabs.max(o.maxabs),
            nan: self.nan + o.nan,
            inf: self.inf + o.inf,
        }
    }

    /// (l2, l1, linf) over finite elements.
    pub(crate) fn finite_norms(&self) -> [f64; 3] {
        [self.sumsq.sqrt(), self.abssum, self.maxabs]
    }

    /// (l2, l1, linf) as f32, NaN/inf when non-finite elements count (not under zeroing).
    pub(crate) fn norms(&self, nonfinite: NonFinitePolicy) -> [f32; 3] {
        let counted = nonfinite != NonFinitePolicy::ZeroNonFinite;
        self.finite_norms().map(|n| {
            if counted && self.nan > 0 {
                f32::NAN
            } else if counted && self.inf > 0 {
                f32::INFINITY
            } else {
                n as f32
            }
        })
    }
}

fn pick(norms: [f32; 3], kind: NormKind) -> f32 {
    match kind {
        NormKind::L2 => norms[0],
        NormKind::L1 => norms[1],
        NormKind::Inf => norms[2],
    }
}

/// `min(1, max_norm / (norm + eps))` with `clip_grad_norm_`'s NaN/inf behaviour, or 1
/// where the gradients are to be left alone.
pub fn clip_coef(s: &Sums, kind: NormKind, max_norm: Option<f32>, eps: f32, nonfinite: NonFinitePolicy) -> f32 {
    let Some(max_norm) = max_norm else { return 1.0 };
    if s.nan + s.inf > 0 {
        match nonfinite {
            NonFinitePolicy::Error | NonFinitePolicy::SkipStep => return 1.0,
            NonFinitePolicy::Propagate if s.nan > 0 => return f32::NAN,
            NonFinitePolicy::Propagate => return 0.0,
            NonFinitePolicy::ZeroNonFinite => {}
        }
    }
    let norm = pick(s.finite_norms().map(|n| n as f32), kind);
    (max_norm / (norm + eps)).min(1.0)
}

/// The stats the GPU norm writes, computed on the CPU.
pub fn norm(
    segments: &[&[f32]],
    kind: NormKind,
    max_norm: Option<f32>,
    eps: f32,
    nonfinite: NonFinitePolicy,
) -> NormStats {
    let sums: Vec<Sums> = segments.iter().map(|s| Sums::of(s)).collect();
    let total = sums.iter().fold(Sums::default(), |a, &b| a.add(b));
    let first = sums.iter().position(|s| s.nan + s.inf > 0).map(|i| i as u32);
    // One step from a fresh buffer: nothing halted before it.
    let mut stats = global_stats(&total, first, false, kind, max_norm, eps, nonfinite);
    stats.segments = sums
        .iter()
        .map(|s| {
            let [l2, l1, linf] = s.norms(nonfinite);
            SegmentNorms { l2, l1, linf, nonfinite: s.nan + s.inf }
        })
        .collect();
    stats
}

/// The global header `norm_global` writes for the set's `total` sums (no segments): `first`
/// is the first segment holding NaN or inf, `halted_before` the halt word it found.
pub fn global_stats(
    total: &Sums,
    first: Option<u32>,
    halted_before: bool,
    kind: NormKind,
    max_norm: Option<f32>,
    eps: f32,
    nonfinite: NonFinitePolicy,
) -> NormStats {
    let [l2, l1, linf] = total.norms(nonfinite);
    let norm = pick([l2, l1, linf], kind);
    // A norm beyond f32 from finite elements is as unusable as a NaN.
    let unusable = total.nan + total.inf > 0 || !norm.is_finite();
    let halted = nonfinite == NonFinitePolicy::Error && (unusable || halted_before);
    NormStats {
        norm,
        clip_coef: clip_coef(total, kind, max_norm, eps, nonfinite),
        skipped: halted || (unusable && nonfinite == NonFinitePolicy::SkipStep),
        halted,
        nan_count: total.nan,
        inf_count: total.inf,
        first_nonfinite_segment: first,
        l2,
        l1,
        linf,
        finite_norm: pick(total.finite_norms().map(|n| n as f32), kind),
        limit: max_norm.unwrap_or(f32::INFINITY),
        segments: Vec::new(),
    }
}
