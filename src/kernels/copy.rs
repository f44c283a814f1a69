//! `shaders/copy.wgsl`: the memory roofline the benchmarks divide by.

use super::{bind_group, dispatch, layout, pipeline, storage_entry, storage_view, View, VIEW_ALIGN};
use crate::error::{Error, Result};
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

/// A copy bound in chunks of at most the device's storage-binding limit, one dispatch each,
/// so that it covers any buffer the norm can (the norm binds in chunks too).
#[derive(Debug)]
pub struct CopyBinding {
    chunks: Vec<(wgpu::BindGroup, u32)>,
}

impl CopyKernel {
    /// Builds the pipeline. `Err(Error::Device)` if the device refuses it.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let layout = layout(device, "copy", &[storage_entry(0, true), storage_entry(1, false)]);
        let wg = super::streaming_workgroup_size(device);
        let constants = [("VEC4S_PER_GROUP", VEC4S_PER_GROUP as f64), ("WG", wg as f64)];
        let pipeline = pipeline(device, &shaders::COPY, "copy", &[&layout], &constants)?;
        Ok(Self { layout, pipeline })
    }

    /// Binds the copy of the first `bytes` (a positive multiple of 16) of `src` into `dst`,
    /// in as many chunks as the device's `max_storage_buffer_binding_size` needs.
    pub fn bind(&self, device: &wgpu::Device, src: &wgpu::Buffer, dst: &wgpu::Buffer, bytes: u64) -> Result<CopyBinding> {
        if bytes == 0 || !bytes.is_multiple_of(16) {
            return Err(Error::OutOfRange { what: "copy bytes", value: bytes as f64, expected: "a positive multiple of 16 (whole vec4s)" });
        }
        // Chunks start at multiples of VIEW_ALIGN and hold whole workgroups' blocks.
        let block = VIEW_ALIGN.max(16 * VEC4S_PER_GROUP as u64);
        let chunk = (device.limits().max_storage_buffer_binding_size as u64 / block * block).max(block);
        let chunks = (0..bytes.div_ceil(chunk))
            .map(|i| {
                let offset = i * chunk;
                let len = chunk.min(bytes - offset);
                let resources = vec![
                    storage_view("copy source", View::at(src, offset), len / 4)?,
                    storage_view("copy destination", View::at(dst, offset), len / 4)?,
                ];
                let group = bind_group(device, &self.layout, "copy", resources)?;
                Ok((group, (len / 16) as u32))
            })
            .collect::<Result<_>>()?;
        Ok(CopyBinding { chunks })
    }

    /// Records the copy bound by [`CopyKernel::bind`] into `pass`: one dispatch per chunk.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binding: &CopyBinding) {
        for (group, vec4s) in &binding.chunks {
            dispatch(pass, &self.pipeline, group, vec4s.div_ceil(VEC4S_PER_GROUP));
        }
    }
}
