//! Pipelines of `shaders/adaptive.wgsl`: an adaptive clip threshold folded from the norm's
//! stats into a small state buffer, the norm's coefficient rewritten for it.

use super::{dispatch, layout, pipeline, storage_entry};
use crate::error::Result;
use crate::shaders;

/// Words of the state buffer before its data (`S_HEADER` in the shader).
pub const STATE_HEADER_WORDS: u64 = 8;

/// Invocations of the AutoClip workgroup (`WG`): they share the window's shifts.
const AUTOCLIP_WG: u32 = 64;

/// `Config` in the shader.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct AdaptiveParams {
    pub method: u32,
    pub policy: u32,
    pub eps: f32,
    pub cap: f32,
    pub alpha: f32,
    pub z: f32,
    pub warmup: u32,
    pub percentile: f32,
    pub capacity: u32,
    pub z_eps: f32,
    pub pad: [u32; 2],
}

/// Which algorithm (`method` in the shader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AdaptiveMethod {
    ZClip = 1,
    AutoClip = 2,
}

/// The pipeline of one method. Bindings: 0 NormStats (read-write), 1 config, 2 state
/// (read-write).
#[derive(Debug)]
pub(crate) struct AdaptiveKernel {
    pub layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl AdaptiveKernel {
    pub fn new(device: &wgpu::Device, method: AdaptiveMethod) -> Result<Self> {
        let layout = layout(device, "adaptive clip", &[storage_entry(0, false), storage_entry(1, true), storage_entry(2, false)]);
        let (entry, constants): (&str, &[(&str, f64)]) = match method {
            AdaptiveMethod::ZClip => ("zclip", &[]),
            AdaptiveMethod::AutoClip => ("autoclip", &[("WG", AUTOCLIP_WG as f64)]),
        };
        let pipeline = pipeline(device, &shaders::ADAPTIVE, entry, &[&layout], constants)?;
        Ok(Self { layout, pipeline })
    }

    /// One workgroup.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, group: &wgpu::BindGroup) {
        dispatch(pass, &self.pipeline, group, 1);
    }
}
