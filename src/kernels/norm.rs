//! Pipelines of `shaders/norm.wgsl`: tiles → partials → segments → global NormStats.

use super::{dispatch, layout, pipeline, storage_entry, uniform_entry};
use crate::error::Result;
use crate::norm::TileLayout;
use crate::shaders;

/// Words of the NormStats header; 4 words per segment follow.
pub const HEADER_WORDS: u64 = 16;
/// Words per segment after the header: L2, L1, L∞ (f32 bits) and the non-finite count (u32).
pub const SEGMENT_WORDS: u64 = 4;
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

/// The uniform block of the segment and global stages (`Params` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct NormParams {
    pub segment_count: u32,
    pub kind: u32,
    pub nonfinite: u32,
    pub clipping: u32,
    pub max_norm: f32,
    pub eps: f32,
    /// Segments (the first entries of the order buffer) reduced by a workgroup each.
    pub big_segments: u32,
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
