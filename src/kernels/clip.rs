//! Pipelines of `shaders/clip.wgsl`: in-place scaling or clamping over the norm's tiles.

use super::{dispatch, layout, pipeline, storage_entry, streaming_workgroup_size};
use crate::error::Result;
use crate::shaders;

/// What the clip kernel does to each element (`MODE` in the shader).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClipMode {
    /// Multiply by the global coefficient the norm stage wrote.
    GlobalScale,
    /// Multiply by the segment's own coefficient.
    SegmentScale,
    /// Clamp to ±value.
    Value(f32),
}

/// The clip pipeline for one [`ClipMode`], dispatched over the norm's tiles; used by
/// [`GradClip`](crate::GradClip).
#[derive(Debug)]
pub struct ClipKernel {
    /// 0 data as vec4, 1 data as f32 (both read-write), 2 tiles, 3 stats, 4 segment scratch.
    pub layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl ClipKernel {
    /// Builds the pipeline for `mode`, each workgroup clipping one span of the norm's tiles
    /// with [`streaming_workgroup_size`] invocations; `zero_nonfinite` turns NaN and ±inf
    /// into 0 as it goes.
    pub fn new(device: &wgpu::Device, mode: ClipMode, zero_nonfinite: bool) -> Result<Self> {
        let layout = layout(
            device,
            "clip",
            &[
                storage_entry(0, false),
                storage_entry(1, false),
                storage_entry(2, true),
                storage_entry(3, true),
                storage_entry(4, true),
            ],
        );
        let (mode, value) = match mode {
            ClipMode::GlobalScale => (0.0, 1.0),
            ClipMode::SegmentScale => (1.0, 1.0),
            ClipMode::Value(v) => (2.0, v as f64),
        };
        let constants = [
            ("MODE", mode),
            ("ZERO_NONFINITE", if zero_nonfinite { 1.0 } else { 0.0 }),
            ("CLIP_VALUE", value),
            ("WG", streaming_workgroup_size(device) as f64),
        ];
        let pipeline = pipeline(device, &shaders::CLIP, "clip", &[&layout], &constants)?;
        Ok(Self { layout, pipeline })
    }

    /// Records the clip over one bound window of `tiles` tiles.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, bind_group: &wgpu::BindGroup, tiles: u32) {
        dispatch(pass, &self.pipeline, bind_group, tiles);
    }
}
