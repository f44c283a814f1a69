//! Pipelines of `shaders/norm.wgsl`: tiles → partials → segments → global NormStats.

use super::{dispatch, layout, pipeline, storage_entry, uniform_entry};
use crate::error::Result;
use crate::shaders;

/// The header of the stats buffer `norm_global` writes: the one definition of its words,
/// mirrored by the `H_*` word indices of `shaders/common.wgsl` (`tests/wire_formats.rs`
/// checks every field's offset against them). [`SegmentRecord`]s follow it, one per segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StatsHeader {
    /// The global norm of the configured kind, before clipping.
    pub norm: f32,
    /// The global clip coefficient `min(1, max_norm / (norm + eps))`, or 1.
    pub coef: f32,
    /// 1 when the step must be skipped.
    pub skip: u32,
    /// NaN plus ±inf elements.
    pub nonfinite: u32,
    /// NaN elements.
    pub nan: u32,
    /// ±inf elements.
    pub inf: u32,
    /// The first segment holding NaN or ±inf; `u32::MAX` when none does.
    pub first_nonfinite: u32,
    /// Global L2 norm.
    pub l2: f32,
    /// Global L1 norm.
    pub l1: f32,
    /// Global L∞ norm.
    pub linf: f32,
    /// Segments after the header.
    pub segments: u32,
    /// The configured norm of the finite elements alone.
    pub finite_norm: f32,
    /// The `max_norm` the coefficient was computed with; inf when none.
    pub limit: f32,
    /// 1 once a step under the `Error` policy was unusable, until the host clears it.
    pub halted: u32,
    /// Unused, keeping the header 16 words.
    pub reserved: [u32; 2],
}

/// One segment's norms after the [`StatsHeader`] (the shader's `SEGMENT_WORDS` words).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SegmentRecord {
    /// L2 norm.
    pub l2: f32,
    /// L1 norm.
    pub l1: f32,
    /// L∞ norm.
    pub linf: f32,
    /// NaN plus ±inf elements.
    pub nonfinite: u32,
}

/// Words of the [`StatsHeader`].
pub const HEADER_WORDS: u64 = (std::mem::size_of::<StatsHeader>() / 4) as u64;
/// Words of one [`SegmentRecord`].
pub const SEGMENT_WORDS: u64 = (std::mem::size_of::<SegmentRecord>() / 4) as u64;

/// Byte offset in the stats buffer of the global norm (an f32).
pub const STATS_NORM_OFFSET: u64 = std::mem::offset_of!(StatsHeader, norm) as u64;
/// Byte offset of the global clip coefficient (an f32), which clip and optimizer kernels read.
pub const STATS_COEF_OFFSET: u64 = std::mem::offset_of!(StatsHeader, coef) as u64;
/// Byte offset of the skip flag (a u32), which optimizers and running-stat updates obey.
pub const STATS_SKIP_OFFSET: u64 = std::mem::offset_of!(StatsHeader, skip) as u64;
/// Byte offset of the halt word (a u32; see [`StatsHeader::halted`]).
pub const STATS_HALTED_OFFSET: u64 = std::mem::offset_of!(StatsHeader, halted) as u64;

/// Codes of the non-finite policies in the norm's parameters, mirrored by the shaders'
/// `POLICY_*` constants (checked in `tests/wire_formats.rs`).
pub mod policy {
    /// NaN and inf flow into the norm and the coefficient.
    pub const PROPAGATE: u32 = 0;
    /// Skip, and halt every later step until the host clears the halt word.
    pub const ERROR: u32 = 1;
    /// Skip the step.
    pub const SKIP: u32 = 2;
    /// NaN and inf count as 0.
    pub const ZERO: u32 = 3;
}

/// Who sums one tile of the first stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileLayout {
    /// A workgroup, its invocations strided through the tile and reduced in shared
    /// memory: coalesced loads for GPUs.
    Workgroup,
    /// One invocation, contiguously, with no barrier: for CPU implementations such as
    /// lavapipe, where a barrier switches context once per SIMD group.
    Invocation,
}

impl TileLayout {
    /// `Invocation` on CPU implementations, `Workgroup` elsewhere.
    pub fn for_device(device: &wgpu::Device) -> Self {
        match device.adapter_info().device_type {
            wgpu::DeviceType::Cpu => Self::Invocation,
            _ => Self::Workgroup,
        }
    }
}

/// Bytes of one accumulator (`Acc` in the shader).
pub const ACC_BYTES: u64 = 32;

/// The default invocations per workgroup for the shaders built on `common.wgsl` (its
/// `WG`): 256 on GPUs; 16 on CPU implementations such as lavapipe, where each barrier
/// costs a context switch per SIMD group and a wide workgroup mostly waits.
pub fn default_workgroup_size(device: &wgpu::Device) -> u32 {
    match device.adapter_info().device_type {
        wgpu::DeviceType::Cpu => 16,
        _ => 256,
    }
}

/// The uniform block of the segment and global stages (`Params` in the shader; its
/// members' offsets are checked against these in `tests/wire_formats.rs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct NormParams {
    /// Segments of the set.
    pub segment_count: u32,
    /// 0 = L2, 1 = L1, 2 = L∞.
    pub kind: u32,
    /// A [`policy`] code.
    pub nonfinite: u32,
    /// 1 when `max_norm` bounds the norm (global or per segment).
    pub clipping: u32,
    /// The clip threshold.
    pub max_norm: f32,
    /// The eps of the clip coefficient.
    pub eps: f32,
    /// Segments (the first entries of the order buffer) reduced by a workgroup each.
    pub big_segments: u32,
    /// Padding to 16 bytes.
    pub pad: u32,
}

/// Layouts and pipelines of the three norm stages, created once per device and plan.
#[derive(Debug)]
pub struct NormKernels {
    /// Stage 1: 0 data as vec4, 1 data as f32, 2 tiles, 3 partials (read-write).
    pub tiles_layout: wgpu::BindGroupLayout,
    /// Stages 2 and 3: 0 partials, 1 segment ranges, 2 segment scratch, 3 stats, 4 params,
    /// 5 segment order (the big segments first).
    pub reduce_layout: wgpu::BindGroupLayout,
    tiles: wgpu::ComputePipeline,
    segments: wgpu::ComputePipeline,
    global: wgpu::ComputePipeline,
    workgroup_size: u32,
    tile_layout: TileLayout,
}

impl NormKernels {
    /// `workgroup_size` is `WG` (1..=256).
    pub fn new(device: &wgpu::Device, workgroup_size: u32, tile_layout: TileLayout) -> Result<Self> {
        let tiles_layout = layout(
            device,
            "norm tiles",
            &[storage_entry(0, true), storage_entry(1, true), storage_entry(2, true), storage_entry(3, false)],
        );
        let reduce_layout = layout(
            device,
            "norm reduce",
            &[
                storage_entry(0, true),
                storage_entry(1, true),
                storage_entry(2, false),
                storage_entry(3, false),
                uniform_entry(4),
                storage_entry(5, true),
            ],
        );
        let s = &shaders::NORM;
        let wg = ("WG", workgroup_size as f64);
        let invocation_tiles = ("INVOCATION_TILES", (tile_layout == TileLayout::Invocation) as u8 as f64);
        Ok(Self {
            tiles: pipeline(device, s, "norm_tiles", &[&tiles_layout], &[wg, invocation_tiles])?,
            segments: pipeline(device, s, "norm_segments", &[&reduce_layout], &[wg])?,
            global: pipeline(device, s, "norm_global", &[&reduce_layout], &[wg])?,
            tiles_layout,
            reduce_layout,
            workgroup_size,
            tile_layout,
        })
    }

    /// Tiles one stage-1 workgroup sums: 1, or one per invocation.
    pub fn tiles_per_group(&self) -> u32 {
        match self.tile_layout {
            TileLayout::Workgroup => 1,
            TileLayout::Invocation => self.workgroup_size,
        }
    }

    /// Stage 1 over one bound window holding `tiles` tiles.
    pub fn encode_tiles(&self, pass: &mut wgpu::ComputePass<'_>, bind_group: &wgpu::BindGroup, tiles: u32) {
        dispatch(pass, &self.tiles, bind_group, tiles.div_ceil(self.tiles_per_group()));
    }

    /// Stages 2 and 3: per-segment and global results into the stats buffer. `big` of the
    /// `segments` take a workgroup each, the rest one invocation each.
    pub fn encode_reduce(&self, pass: &mut wgpu::ComputePass<'_>, bind_group: &wgpu::BindGroup, segments: u32, big: u32) {
        dispatch(pass, &self.segments, bind_group, big + (segments - big).div_ceil(self.workgroup_size));
        dispatch(pass, &self.global, bind_group, 1);
    }
}
