//! A gradient set split over two ranks, for the sharded-norm tests in one process
//! (`sharded_norm_gpu.rs`) and across `mpirun` ranks (`mpi.rs`): each rank's shard, its
//! local norm on the device, the finish from the combined partials, and the CPU twin of the
//! whole set to check against.

use gradguard::{wgpu, ClipPolicy, GradClip, GradSet, NonFinitePolicy, NormKind, NormPartials, NormStats};
use rand::Rng;

use super::{download, gpu, rng, upload};

/// What the set holds beyond plain random values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    Plain,
    /// Rank 1's second segment is of order 1e25: its squares overflow f32.
    Huge,
    /// Rank 1's first segment holds a NaN.
    Nan,
}

pub const RANKS: usize = 2;
pub const MAX_NORM: f32 = 1.0;

/// Segment lengths of each rank's shard (odd sizes, a one-element segment).
fn lens(rank: usize) -> &'static [usize] {
    [&[257, 1, 1000][..], &[3, 4099][..]][rank]
}

/// Rank `rank`'s segments, the same on every call.
pub fn shard(rank: usize, case: Case) -> Vec<Vec<f32>> {
    let mut r = rng(40 + rank as u64);
    let mut segments: Vec<Vec<f32>> = lens(rank).iter().map(|&n| (0..n).map(|_| r.random_range(-1.0..1.0)).collect()).collect();
    match (rank, case) {
        (1, Case::Huge) => segments[1].iter_mut().for_each(|x| *x *= 1e25),
        (1, Case::Nan) => segments[0][2] = f32::NAN,
        _ => {}
    }
    segments
}

/// The first segment of `rank`'s shard in the whole set's numbering.
pub fn segment_offset(rank: usize) -> u32 {
    (0..rank).map(|r| lens(r).len() as u32).sum()
}

/// One rank's shard on the device, norm-clipped at `MAX_NORM` by the global norm.
pub struct RankClip {
    pub rank: usize,
    pub buffer: wgpu::Buffer,
    pub clip: GradClip,
    pub local: NormStats,
}

impl RankClip {
    /// Uploads the shard and measures its local norm (submits and waits).
    pub fn measure(rank: usize, case: Case) -> Self {
        let segments = shard(rank, case);
        let flat: Vec<f32> = segments.concat();
        let buffer = upload(&flat);
        let set = GradSet::packed(&buffer, &segments.iter().map(|s| s.len() as u64).collect::<Vec<_>>());
        let policy = ClipPolicy::GlobalNorm { max_norm: MAX_NORM, kind: NormKind::L2 };
        let clip = GradClip::new(&gpu().device, &set, policy, NonFinitePolicy::SkipStep).unwrap();
        let mut encoder = gpu().device.create_command_encoder(&Default::default());
        clip.norm().encode(&mut encoder);
        gpu().queue.submit([encoder.finish()]);
        let local = gradguard::readback::read_stats_blocking(&gpu().device, &gpu().queue, clip.stats_buffer()).unwrap();
        Self { rank, buffer, clip, local }
    }

    pub fn partials(&self) -> NormPartials {
        self.clip.norm().partials(&self.local, segment_offset(self.rank))
    }

    /// Writes the global result and clips by it: the stats written, the stats the device
    /// then holds, and the shard after clipping.
    pub fn finish(&self, global: &NormPartials) -> (NormStats, NormStats, Vec<f32>) {
        let written = self.clip.norm().finish_global(&gpu().queue, global);
        let mut encoder = gpu().device.create_command_encoder(&Default::default());
        self.clip.encode_clip_only(&mut encoder.begin_compute_pass(&Default::default()));
        gpu().queue.submit([encoder.finish()]);
        let device = gradguard::readback::read_stats_blocking(&gpu().device, &gpu().queue, self.clip.stats_buffer()).unwrap();
        (written, device, download(&self.buffer))
    }
}

/// Checks one rank's finish against the CPU twin of the whole set (every rank's shard).
pub fn check_finish(rank: usize, case: Case, written: &NormStats, device: &NormStats, clipped: &[f32]) {
    let all: Vec<Vec<f32>> = (0..RANKS).flat_map(|r| shard(r, case)).collect();
    let refs: Vec<&[f32]> = all.iter().map(|s| s.as_slice()).collect();
    let twin = gradguard::cpu::norm::norm(&refs, NormKind::L2, Some(MAX_NORM), 1e-6, NonFinitePolicy::SkipStep);
    let close = |a: f32, b: f32| a == b || (a - b).abs() <= 1e-5 * b.abs();
    assert!(close(written.norm, twin.norm) || (written.norm.is_nan() && twin.norm.is_nan()), "{case:?}: norm {} vs twin {}", written.norm, twin.norm);
    assert!(written.norm.is_nan() || written.norm.is_finite(), "{case:?}: a finite set's norm is finite, got {}", written.norm);
    assert!(close(written.clip_coef, twin.clip_coef), "{case:?}: coef {} vs twin {}", written.clip_coef, twin.clip_coef);
    assert_eq!(written.skipped, twin.skipped, "{case:?}: skip decision");
    assert_eq!((written.nan_count, written.inf_count), (twin.nan_count, twin.inf_count));
    assert_eq!(written.first_nonfinite_segment, twin.first_nonfinite_segment, "{case:?}: first non-finite segment, numbered across ranks");
    // The device holds what was written (its own segment norms after the header).
    assert_eq!(device.norm.to_bits(), written.norm.to_bits());
    assert_eq!(device.clip_coef.to_bits(), written.clip_coef.to_bits());
    assert_eq!(device.skipped, written.skipped);
    let mine: Vec<f32> = shard(rank, case).concat();
    for (i, (&c, &g)) in clipped.iter().zip(&mine).enumerate() {
        let want = if written.skipped { g } else { g * written.clip_coef };
        assert!(c.to_bits() == want.to_bits() || (c - want).abs() <= 1e-6 * want.abs(), "{case:?}: rank {rank} element {i}: {c} vs {want}");
    }
}
