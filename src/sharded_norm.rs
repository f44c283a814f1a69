//! The global norm of a gradient set spread over several processes (ranks), exact and
//! overflow-safe: each rank measures its part with a [`GradNorm`], turns its stats into
//! [`NormPartials`], the caller exchanges them (MPI, or any other transport: see
//! [`crate::collective`]), and every rank combines them in rank order and writes the global
//! result back with [`GradNorm::finish_global`], so that a [`GradClip`](crate::GradClip)'s
//! clip stage ([`GradClip::encode_clip_only`](crate::GradClip::encode_clip_only)) and the
//! optimizers read the global coefficient and skip flag. This is PyTorch's
//! `get_total_norm` / `clip_grads_with_norm_` split, for a sharded set.
//!
//! Exactness: the partials are sums of squares, sums and maxima of the finite elements in
//! f64, where the square of any f32 fits, so elements of 1e25 on one rank give the true,
//! finite global norm. Non-finite counts and the first non-finite segment are integers,
//! combined as integers (a float MAX would drop a NaN). Every rank combines the same words
//! in the same order: every rank gets the same bits, and so takes the same skip decision.

use crate::collective::Collective;
use crate::cpu::norm::{global_stats, Sums};
use crate::error::Result;
use crate::norm::{GradNorm, NonFinitePolicy, NormKind, NormStats};

/// One rank's share of a global norm: what [`NormPartials::combine`] adds up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct NormPartials {
    /// Sum of squares of the finite elements.
    pub sumsq: f64,
    /// Sum of absolute values of the finite elements.
    pub abssum: f64,
    /// Largest absolute value among the finite elements.
    pub maxabs: f64,
    /// NaN elements.
    pub nan: u32,
    /// ±inf elements.
    pub inf: u32,
    /// The first segment holding NaN or ±inf, numbered across ranks; `u32::MAX` if none.
    pub first_nonfinite_segment: u32,
    /// 1 when the rank's norm had halted under [`NonFinitePolicy::Error`].
    pub halted: u32,
}

/// Words of one [`NormPartials`] on the wire.
pub const PARTIAL_WORDS: usize = std::mem::size_of::<NormPartials>() / 4;

impl NormPartials {
    /// The partials of `stats`, read from a norm of kind `kind` under `nonfinite`, over
    /// segments that are numbered from `segment_offset` across the ranks (0 where every rank
    /// holds the same segments).
    ///
    /// Where non-finite elements count (every policy but `ZeroNonFinite`), the stats keep
    /// only the finite elements' norm of `kind` ([`NormStats::finite_norm`]); it fills that
    /// kind's sum and the others are 0. Nothing reads them: once NaN or inf counts, the
    /// combined norms are NaN or inf, whatever the finite sums.
    pub fn from_stats(stats: &NormStats, kind: NormKind, nonfinite: NonFinitePolicy, segment_offset: u32) -> Self {
        let clean = stats.nan_count + stats.inf_count == 0 || nonfinite == NonFinitePolicy::ZeroNonFinite;
        let [l2, l1, linf] = match clean {
            true => [stats.l2, stats.l1, stats.linf],
            false => {
                let mut norms = [0.0; 3];
                norms[kind_index(kind)] = stats.finite_norm;
                norms
            }
        }
        .map(|n| n as f64);
        Self {
            sumsq: l2 * l2,
            abssum: l1,
            maxabs: linf,
            nan: stats.nan_count,
            inf: stats.inf_count,
            first_nonfinite_segment: stats.first_nonfinite_segment.map_or(u32::MAX, |s| s.saturating_add(segment_offset)),
            halted: stats.halted as u32,
        }
    }

    /// Every rank's partials added up in the order given (rank order: the same bits on
    /// every rank). Counts saturate at `u32::MAX`.
    pub fn combine(parts: &[NormPartials]) -> Self {
        parts.iter().fold(Self { first_nonfinite_segment: u32::MAX, ..Self::default() }, |a, p| Self {
            sumsq: a.sumsq + p.sumsq,
            abssum: a.abssum + p.abssum,
            maxabs: a.maxabs.max(p.maxabs),
            nan: a.nan.saturating_add(p.nan),
            inf: a.inf.saturating_add(p.inf),
            first_nonfinite_segment: a.first_nonfinite_segment.min(p.first_nonfinite_segment),
            halted: a.halted | p.halted,
        })
    }

    /// Gathers every rank's partials through `collective` and combines them.
    pub fn all_reduce(&self, collective: &dyn Collective) -> Result<Self> {
        let mut words = vec![0u32; PARTIAL_WORDS * collective.size()];
        collective.gather_u32(bytemuck::cast_slice(std::slice::from_ref(self)), &mut words)?;
        let parts: Vec<NormPartials> =
            words.chunks_exact(PARTIAL_WORDS).map(|w| bytemuck::pod_read_unaligned(bytemuck::cast_slice(w))).collect();
        Ok(Self::combine(&parts))
    }

    /// The global stats these partials make for a norm of `kind`, clipping at `max_norm`
    /// with `eps`, under `nonfinite`: the header `norm_global` writes (no segments), by the
    /// same rules (see `shaders/norm.wgsl`).
    pub fn stats(&self, kind: NormKind, max_norm: Option<f32>, eps: f32, nonfinite: NonFinitePolicy) -> NormStats {
        let sums = Sums { sumsq: self.sumsq, abssum: self.abssum, maxabs: self.maxabs, nan: self.nan, inf: self.inf };
        let first = (self.first_nonfinite_segment != u32::MAX).then_some(self.first_nonfinite_segment);
        global_stats(&sums, first, self.halted != 0, kind, max_norm, eps, nonfinite)
    }
}

fn kind_index(kind: NormKind) -> usize {
    match kind {
        NormKind::L2 => 0,
        NormKind::L1 => 1,
        NormKind::Inf => 2,
    }
}

impl GradNorm {
    /// This norm's partials, from `stats` it wrote (read back): see
    /// [`NormPartials::from_stats`].
    pub fn partials(&self, stats: &NormStats, segment_offset: u32) -> NormPartials {
        NormPartials::from_stats(stats, self.kind(), self.nonfinite(), segment_offset)
    }

    /// Writes the global result of `global` (every rank's [`NormPartials`], combined) over
    /// this norm's stats header, for the next submission: the clip stage, the optimizers
    /// and the running-stat updates then read the global norm, coefficient and skip flag.
    /// The per-segment norms stay this rank's own. Returns the stats written.
    pub fn finish_global(&self, queue: &wgpu::Queue, global: &NormPartials) -> NormStats {
        let stats = global.stats(self.kind(), self.max_norm(), self.eps(), self.nonfinite());
        queue.write_buffer(self.stats_buffer(), 0, bytemuck::bytes_of(&stats.header(self.segment_count())));
        stats
    }
}

