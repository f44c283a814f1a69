//! `GradNorm`: the global and per-segment gradient norm of a `GradSet`, on the device.

use crate::error::{check_positive, Error, Result};
use crate::grad_set::{DataViews, GradSet, TilePlan};
use crate::kernels::norm::{
    default_workgroup_size, policy, NormKernels, NormParams, SegmentRecord, StatsHeader, ACC_BYTES, HEADER_WORDS, SEGMENT_WORDS,
};
pub use crate::kernels::norm::{TileLayout, STATS_COEF_OFFSET, STATS_HALTED_OFFSET, STATS_NORM_OFFSET, STATS_SKIP_OFFSET};
use crate::kernels::{bind_group, buffer_init, placeholder, scoped};

/// Which vector norm: `norm_type` 1, 2 or inf in `torch.nn.utils.clip_grad_norm_`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum NormKind {
    /// Sum of absolute values.
    L1,
    /// Euclidean norm (the default).
    #[default]
    L2,
    /// Max-abs. A NaN anywhere gives NaN, as in PyTorch.
    Inf,
}

/// What a non-finite (NaN or ±inf) gradient element does to the step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum NonFinitePolicy {
    /// PyTorch's default: the norm becomes NaN/inf and clipping spreads it.
    #[default]
    Propagate,
    /// Gradients untouched, the skip flag set, and an error (naming the segment) on readback;
    /// the first such step halts the run on the device: every later step is skipped too,
    /// until [`GradNorm::clear_halt`] (as `error_if_nonfinite` raises and stops there).
    Error,
    /// Gradients untouched and the skip flag set: optimizers leave weights and state alone.
    SkipStep,
    /// NaN and ±inf become 0 (as optax `zero_nans`, extended to inf); norms cover the rest.
    ZeroNonFinite,
}

impl NonFinitePolicy {
    pub(crate) fn code(self) -> u32 {
        match self {
            Self::Propagate => policy::PROPAGATE,
            Self::Error => policy::ERROR,
            Self::SkipStep => policy::SKIP,
            Self::ZeroNonFinite => policy::ZERO,
        }
    }
}

/// How a `GradNorm` is computed and cut up.
#[derive(Clone, Debug)]
pub struct NormConfig {
    /// The norm reported as [`NormStats::norm`] and used for the clip coefficient (every kind
    /// is computed either way).
    pub kind: NormKind,
    /// When set, the clip coefficient `min(1, max_norm / (norm + eps))` is computed
    /// (globally and per segment); otherwise it is 1.
    pub max_norm: Option<f32>,
    /// 1e-6, as `clip_grad_norm_`.
    pub eps: f32,
    /// What a NaN or ±inf element does to the step.
    pub nonfinite: NonFinitePolicy,
    /// Elements per tile of the first stage (a multiple of 4); with the layout and the
    /// workgroup size it fixes the reduction tree. At most [`MAX_INVOCATION_ELEMS`] per
    /// invocation: 2,048 for `TileLayout::Invocation`, 2,048 × `workgroup_size` for
    /// `TileLayout::Workgroup`. `None`: 2,048 for invocation tiles, 8,192 (or the cap) for
    /// workgroup tiles.
    pub tile_elems: Option<u32>,
    /// Invocations per workgroup (1..=256); it fixes the in-workgroup reduction order.
    /// `None`: 256 on GPUs, 16 on CPU implementations (see `kernels::norm`).
    pub workgroup_size: Option<u32>,
    /// Who sums a tile: a workgroup (GPUs) or one invocation (CPU implementations), the
    /// default being [`TileLayout::for_device`].
    pub tile_layout: Option<TileLayout>,
    /// Bytes bound at once; default: the device's `max_storage_buffer_binding_size`.
    /// Lower it to exercise chunking on small data.
    pub max_binding_bytes: Option<u64>,
}

impl Default for NormConfig {
    fn default() -> Self {
        Self {
            kind: NormKind::L2,
            max_norm: None,
            eps: 1e-6,
            nonfinite: NonFinitePolicy::Propagate,
            tile_elems: None,
            workgroup_size: None,
            tile_layout: None,
            max_binding_bytes: None,
        }
    }
}

/// Segments with more partials than this are reduced by a whole workgroup in the second
/// stage; the others by one invocation each, serially.
const INVOCATION_SEGMENT_MAX_PARTIALS: u32 = 64;

/// The most elements one invocation sums in plain f32 before its partial is rescaled:
/// it bounds the rounding error of the fast path (see `shaders/norm.wgsl`).
pub const MAX_INVOCATION_ELEMS: u32 = 2048;

/// A compiled norm over one gradient-set layout: scratch, bind groups and pipelines are
/// made once here; [`GradNorm::encode`] only records. Scratch is O(segments + tiles).
#[derive(Debug)]
pub struct GradNorm {
    kernels: NormKernels,
    pub(crate) plan: TilePlan,
    pub(crate) tiles: Option<wgpu::Buffer>,
    pub(crate) segments: wgpu::Buffer,
    stats: wgpu::Buffer,
    params: wgpu::Buffer,
    param_values: NormParams,
    kind: NormKind,
    nonfinite: NonFinitePolicy,
    tile_groups: Vec<wgpu::BindGroup>,
    reduce_group: wgpu::BindGroup,
    segment_count: u32,
    chunk_bytes: u64,
    workgroup_size: u32,
    tile_elems: u32,
    tile_align: u64,
}

/// One bind group per bound window of `plan`: the window's data as vec4s and as f32s
/// (see [`DataViews`]), its tiles, then the `rest` of the layout's bindings.
pub(crate) fn bind_windows<'a>(
    device: &wgpu::Device,
    plan: &'a TilePlan,
    tiles: Option<&'a wgpu::Buffer>,
    data: DataViews<'a>,
    layout: &wgpu::BindGroupLayout,
    label: &'static str,
    rest: impl Fn() -> Vec<wgpu::BindingResource<'a>>,
) -> Result<Vec<wgpu::BindGroup>> {
    plan.windows
        .iter()
        .map(|w| {
            let views = plan.window_views(w, tiles, data);
            let mut resources = vec![views.vec4, views.scalar, views.tiles];
            resources.extend(rest());
            bind_group(device, layout, label, resources)
        })
        .collect()
}

impl GradNorm {
    /// Validates `set` (every buffer needs `STORAGE`) and `config`, plans the tiles and chunks,
    /// and allocates scratch, pipelines and bind groups. Errors: the set's own
    /// ([`GradSet::validate`]), `Error::NotPositive` for `max_norm`, `Error::OutOfRange` for `eps`,
    /// `tile_elems`, `workgroup_size` or `max_binding_bytes` out of range, `Error::AboveMax` for
    /// more `tile_elems` than a tile's invocations sum exactly in f32, `Error::Device` if an
    /// allocation or pipeline fails.
    pub fn new(device: &wgpu::Device, set: &GradSet, config: &NormConfig) -> Result<Self> {
        set.validate(wgpu::BufferUsages::STORAGE)?;
        if let Some(m) = config.max_norm {
            check_positive("max_norm", m)?;
        }
        crate::error::check_non_negative("eps", config.eps)?;
        let workgroup_size = config.workgroup_size.unwrap_or_else(|| default_workgroup_size(device));
        if !(1..=256).contains(&workgroup_size) {
            return Err(Error::OutOfRange { what: "workgroup_size", value: workgroup_size as f64, expected: "in 1..=256" });
        }
        let tile_layout = config.tile_layout.unwrap_or_else(|| TileLayout::for_device(device));
        let (default_tile, max_tile) = match tile_layout {
            TileLayout::Invocation => (MAX_INVOCATION_ELEMS, MAX_INVOCATION_ELEMS),
            TileLayout::Workgroup => (8192.min(MAX_INVOCATION_ELEMS * workgroup_size), MAX_INVOCATION_ELEMS * workgroup_size),
        };
        let tile_elems = config.tile_elems.unwrap_or(default_tile);
        if tile_elems == 0 || !tile_elems.is_multiple_of(4) {
            return Err(Error::OutOfRange { what: "tile_elems", value: tile_elems as f64, expected: "a positive multiple of 4" });
        }
        // More per invocation and the plain f32 partial sums lose accuracy.
        if tile_elems > max_tile {
            return Err(Error::AboveMax { what: "tile_elems", value: tile_elems as u64, max: max_tile as u64 });
        }
        let limits = device.limits();
        let device_max = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        // u32 element indices in the shaders cap a binding at 4 GiB.
        let chunk = config.max_binding_bytes.unwrap_or(device_max).min(device_max).min(1 << 32) / 256 * 256;
        if chunk < 4096 {
            return Err(Error::OutOfRange { what: "max_binding_bytes", value: chunk as f64, expected: "at least 4096" });
        }
        let tile_align = (limits.min_storage_buffer_offset_alignment as u64 / 16).max(1);
        let plan = TilePlan::new(set, tile_elems, chunk, tile_align)?;
        let kernels = NormKernels::new(device, workgroup_size, tile_layout)?;
        let segment_count = set.segment_count() as u32;

        let storage = wgpu::BufferUsages::STORAGE;
        let init = |label: &str, contents: &[u8], usage| buffer_init(device, label, contents, usage);
        let zeroed = |label: &str, size: u64, usage| {
            device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false })
        };
        // Scratch is O(segments + tiles); a set too large for the device fails here, typed.
        let tiles = upload_tiles(device, &plan)?;
        let ranges = init("gradguard segment ranges", bytemuck::cast_slice(&plan.ranges), storage)?;
        // The second stage's work list: segments of many partials first (a workgroup each).
        let (mut order, rest): (Vec<u32>, Vec<u32>) =
            (0..segment_count).partition(|&s| plan.ranges[s as usize][1] > INVOCATION_SEGMENT_MAX_PARTIALS);
        let big_segments = order.len() as u32;
        order.extend(rest);
        let order = init("gradguard segment order", bytemuck::cast_slice(&order), storage)?;
        let (partials, segments, stats) = scoped(device, "allocating the norm's scratch", || {
            (
                zeroed("gradguard partials", ACC_BYTES * plan.partial_count.max(1) as u64, storage),
                zeroed("gradguard segment norms", ACC_BYTES * segment_count as u64, storage),
                zeroed(
                    "gradguard NormStats",
                    4 * (HEADER_WORDS + SEGMENT_WORDS * segment_count as u64),
                    storage | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                ),
            )
        })?;
        let param_values = NormParams {
            segment_count,
            kind: match config.kind {
                NormKind::L2 => 0,
                NormKind::L1 => 1,
                NormKind::Inf => 2,
            },
            nonfinite: config.nonfinite.code(),
            clipping: config.max_norm.is_some() as u32,
            max_norm: config.max_norm.unwrap_or(1.0),
            eps: config.eps,
            big_segments,
            pad: 0,
        };
        let params = init(
            "gradguard norm params",
            bytemuck::bytes_of(&param_values),
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )?;
        let placeholder = placeholder(device);
        let data = DataViews::Overlapping(&placeholder);
        let tile_groups = bind_windows(device, &plan, tiles.as_ref(), data, &kernels.tiles_layout, "norm tiles", || {
            vec![partials.as_entire_binding()]
        })?;
        let reduce_group = bind_group(
            device,
            &kernels.reduce_layout,
            "norm reduce",
            vec![
                partials.as_entire_binding(),
                ranges.as_entire_binding(),
                segments.as_entire_binding(),
                stats.as_entire_binding(),
                params.as_entire_binding(),
                order.as_entire_binding(),
            ],
        )?;
        Ok(Self {
            kernels,
            plan,
            tiles,
            segments,
            stats,
            params,
            param_values,
            kind: config.kind,
            nonfinite: config.nonfinite,
            tile_groups,
            reduce_group,
            segment_count,
            chunk_bytes: chunk,
            workgroup_size,
            tile_elems,
            tile_align,
        })
    }
}

/// The plan's tile table on the device (none for a plan without tiles).
fn upload_tiles(device: &wgpu::Device, plan: &TilePlan) -> Result<Option<wgpu::Buffer>> {
    match plan.tiles.is_empty() {
        true => Ok(None),
        false => buffer_init(device, "gradguard tiles", bytemuck::cast_slice(&plan.tiles), wgpu::BufferUsages::STORAGE).map(Some),
    }
}

impl GradNorm {
    /// `set` (the one this norm was built for) cut into tiles as large as one first-stage
    /// workgroup's share, `tile_elems × tiles_per_group`, with its table on the device: for
    /// kernels such as the clip that stride a whole workgroup through each tile.
    pub(crate) fn workgroup_plan(&self, device: &wgpu::Device, set: &GradSet) -> Result<(TilePlan, Option<wgpu::Buffer>)> {
        if self.tiles_per_group() == 1 {
            return Ok((self.plan.clone(), self.tiles.clone()));
        }
        let plan = TilePlan::new(set, self.tile_elems * self.tiles_per_group(), self.chunk_bytes, self.tile_align)?;
        let tiles = upload_tiles(device, &plan)?;
        Ok((plan, tiles))
    }

    /// Records the norm (at most 2 + one dispatch per bound window) into `encoder`.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("gradguard norm"),
            timestamp_writes: None,
        });
        self.encode_in_pass(&mut pass);
    }

    /// Records the norm into a compute pass the caller already has open.
    pub fn encode_in_pass(&self, pass: &mut wgpu::ComputePass<'_>) {
        for (w, group) in self.plan.windows.iter().zip(&self.tile_groups) {
            self.kernels.encode_tiles(pass, group, w.tile_count);
        }
        self.kernels.encode_reduce(pass, &self.reduce_group, self.segment_count, self.param_values.big_segments);
    }

    /// The device buffer holding [`NormStats`] (usage STORAGE | COPY_SRC | COPY_DST).
    pub fn stats_buffer(&self) -> &wgpu::Buffer {
        &self.stats
    }

    /// Lets steps run again after a halt under [`NonFinitePolicy::Error`] (see
    /// [`NormStats::halted`]); takes effect from the next submission.
    pub fn clear_halt(&self, queue: &wgpu::Queue) {
        queue.write_buffer(&self.stats, STATS_HALTED_OFFSET, bytemuck::bytes_of(&0u32));
    }

    /// The per-segment scratch: 8 words a segment, its clip coefficient at word 6 (the
    /// `Acc` of `shaders/common.wgsl`). Optimizers scaling per tensor read it.
    pub fn segment_buffer(&self) -> &wgpu::Buffer {
        &self.segments
    }

    /// The norm reported and clipped by.
    pub fn kind(&self) -> NormKind {
        self.kind
    }

    /// What a non-finite element does to the step.
    pub fn nonfinite(&self) -> NonFinitePolicy {
        self.nonfinite
    }

    /// The threshold the clip coefficient is computed with, if any.
    pub fn max_norm(&self) -> Option<f32> {
        (self.param_values.clipping != 0).then_some(self.param_values.max_norm)
    }

    /// The eps of the clip coefficient `min(1, max_norm / (norm + eps))`.
    pub fn eps(&self) -> f32 {
        self.param_values.eps
    }

    /// Size of the stats buffer in bytes.
    pub fn stats_size(&self) -> u64 {
        self.stats.size()
    }

    /// Segments (tensors) of the set.
    pub fn segment_count(&self) -> u32 {
        self.segment_count
    }

    /// Invocations per workgroup of the norm (and of AGC; the clip kernel, which has no
    /// barrier, always runs 256 wide).
    pub fn workgroup_size(&self) -> u32 {
        self.workgroup_size
    }

    /// Tiles one workgroup of the first stage covers: 1 for workgroup tiles, the workgroup
    /// size for invocation tiles. Kernels that walk the norm's tiles group them the same way.
    pub fn tiles_per_group(&self) -> u32 {
        self.kernels.tiles_per_group()
    }

    /// Bytes of a gradient buffer bound at once.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes
    }

    /// Compute dispatches one [`GradNorm::encode`] records.
    pub fn dispatch_count(&self) -> usize {
        self.plan.windows.len() + 2
    }

    /// Changes the clip threshold for later steps (adaptive clipping) without a new pipeline.
    pub fn set_max_norm(&mut self, queue: &wgpu::Queue, max_norm: f32) -> Result<()> {
        check_positive("max_norm", max_norm)?;
        self.param_values.max_norm = max_norm;
        self.param_values.clipping = 1;
        queue.write_buffer(&self.params, 0, bytemuck::bytes_of(&self.param_values));
        Ok(())
    }
}

/// Norms of one segment.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SegmentNorms {
    /// L2 norm.
    pub l2: f32,
    /// L1 norm.
    pub l1: f32,
    /// L∞ (max-abs) norm.
    pub linf: f32,
    /// NaN plus ±inf elements.
    pub nonfinite: u32,
}

/// What the norm stage wrote: the device's `NormStats`, decoded.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NormStats {
    /// The global norm of the configured kind, before clipping (as `clip_grad_norm_` returns).
    pub norm: f32,
    /// `min(1, max_norm / (norm + eps))`, or 1 when no norm clipping is configured.
    pub clip_coef: f32,
    /// The optimizer must skip this step.
    pub skipped: bool,
    /// Under [`NonFinitePolicy::Error`]: an earlier step or this one was unusable, and
    /// every step is skipped until [`GradNorm::clear_halt`].
    pub halted: bool,
    /// NaN elements across the set.
    pub nan_count: u32,
    /// ±inf elements across the set.
    pub inf_count: u32,
    /// The first segment (in set order) holding NaN or ±inf, if any.
    pub first_nonfinite_segment: Option<u32>,
    /// Global L2 norm, whatever the configured kind.
    pub l2: f32,
    /// Global L1 norm.
    pub l1: f32,
    /// Global L∞ norm.
    pub linf: f32,
    /// The configured norm of the finite elements alone (what zeroing the others leaves).
    pub finite_norm: f32,
    /// The `max_norm` the clip coefficient was computed with (an adaptive clip's threshold
    /// of this step); inf when none applied.
    pub limit: f32,
    /// Each segment's norms, in set order.
    pub segments: Vec<SegmentNorms>,
}

impl NormStats {
    /// Decodes the stats buffer's words: a [`StatsHeader`], then its segments' records.
    pub fn from_words(words: &[u32]) -> Result<Self> {
        let header = HEADER_WORDS as usize;
        let bad = || Error::Readback(format!("a NormStats buffer of {} words is malformed", words.len()));
        if words.len() < header {
            return Err(bad());
        }
        let h: StatsHeader = bytemuck::pod_read_unaligned(bytemuck::cast_slice(&words[..header]));
        let end = header + h.segments as usize * SEGMENT_WORDS as usize;
        if words.len() < end {
            return Err(bad());
        }
        let segments = words[header..end]
            .chunks_exact(SEGMENT_WORDS as usize)
            .map(|w| {
                let r: SegmentRecord = bytemuck::pod_read_unaligned(bytemuck::cast_slice(w));
                SegmentNorms { l2: r.l2, l1: r.l1, linf: r.linf, nonfinite: r.nonfinite }
            })
            .collect();
        Ok(Self {
            norm: h.norm,
            clip_coef: h.coef,
            skipped: h.skip != 0,
            halted: h.halted != 0,
            nan_count: h.nan,
            inf_count: h.inf,
            first_nonfinite_segment: (h.first_nonfinite != u32::MAX).then_some(h.first_nonfinite),
            l2: h.l2,
            l1: h.l1,
            linf: h.linf,
            finite_norm: h.finite_norm,
            limit: h.limit,
            segments,
        })
    }

    /// The header the device writes for these stats, `segments` naming how many segment
    /// records follow it.
    pub fn header(&self, segments: u32) -> StatsHeader {
        StatsHeader {
            norm: self.norm,
            coef: self.clip_coef,
            skip: self.skipped as u32,
            nonfinite: self.nan_count.saturating_add(self.inf_count),
            nan: self.nan_count,
            inf: self.inf_count,
            first_nonfinite: self.first_nonfinite_segment.unwrap_or(u32::MAX),
            l2: self.l2,
            l1: self.l1,
            linf: self.linf,
            segments,
            finite_norm: self.finite_norm,
            limit: self.limit,
            halted: self.halted as u32,
            reserved: [0; 2],
        }
    }

    /// This step's norm as an adaptive clip may learn from it: finite, and from finite
    /// elements (or from those left after zeroing the others under `nonfinite`).
    pub fn usable_norm(&self, nonfinite: NonFinitePolicy) -> Option<f32> {
        let clean = self.nan_count + self.inf_count == 0 || nonfinite == NonFinitePolicy::ZeroNonFinite;
        (clean && self.finite_norm.is_finite()).then_some(self.finite_norm)
    }

    /// `Err(Error::NonFinite)` naming the first segment holding NaN or inf, or
    /// `Err(Error::NormOverflow)` when finite elements have a norm beyond f32.
    pub fn check_finite(&self) -> Result<()> {
        match self.first_nonfinite_segment {
            Some(segment) => Err(Error::NonFinite { segment, nan: self.nan_count, inf: self.inf_count }),
            None if !self.norm.is_finite() => Err(Error::NormOverflow { norm: self.norm }),
            None => Ok(()),
        }
    }
}
