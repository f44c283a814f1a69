//! `shaders/copy.wgsl`: the memory roofline the benchmarks divide by.

use super::{dispatch, layout, pipeline, range, storage_entry};
use crate::error::Result;
use crate::shaders;

const VEC4S_PER_GROUP: u32 = 2048;

/// A vec4 buffer-to-buffer copy in a compute shader: the bandwidth the norm and clip
/// benchmarks are measured against.
#[derive(Debug)]
pub struct CopyKernel {
    /// 0 source (read-only), 1 destination (read-write).
    pub layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl CopyKernel {
    /// Builds the pipeline. `Err(Error::Device)` if the device refuses it.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let layout = layout(device, "copy", &[storage_entry(0, true), storage_entry(1, false)]);
        let constants = [("VEC4S_PER_GROUP", VEC4S_PER_GROUP as f64)];
        let pipeline = pipeline(device, &shaders::COPY, "copy", &[&layout], &constants)?;
        Ok(Self { layout, pipeline })
    }

    /// A bind group copying the first `bytes` (a multiple of 16) of `src` into `dst`.
    pub fn bind(&self, device: &wgpu::Device, src: &wgpu::Buffer, dst: &wgpu::Buffer, bytes: u64) -> wgpu::BindGroup {
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("copy"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: range(src, 0, bytes) },
                wgpu::BindGroupEntry { binding: 1, resource: range(dst, 0, bytes) },
            ],
        })
    }

    /// Records the copy of `bytes` (as given to [`CopyKernel::bind`]) into `pass`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, bind_group: &wgpu::BindGroup, bytes: u64) {
        let vec4s = (bytes / 16) as u32;
        dispatch(pass, &self.pipeline, bind_group, vec4s.div_ceil(VEC4S_PER_GROUP));
    }
}
