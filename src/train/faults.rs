//! Fault drills: NaN, +inf or a scale factor written into one layer's gradient at a chosen
//! step (on one data-parallel rank, or all), on the device, between the backward and the
//! norm, so that detectors, policies and responses can be tried on a real run.

use super::config::{Fault, FaultKind};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::buffer_init;
use crate::kernels::matmul::{MatmulBinding, MatmulOp, MatmulOperands};
use crate::kernels::View;
use crate::nn::{GpuModel, ModelSpec, TrainKernels};

/// A fault bound once, recorded at its step, on the tensor at byte `offset` of the packed
/// gradients.
enum FaultOp {
    /// Copy 4 bytes from `source` over the tensor's first element.
    Overwrite { source: wgpu::Buffer, offset: u64 },
    /// `scratch = grad · factor` (a k = 1 product), then copied back.
    Scale { product: MatmulBinding, scratch: wgpu::Buffer, offset: u64 },
}

/// Every fault of a run, bound once.
pub(super) struct FaultDrill {
    faults: Vec<(u64, FaultOp)>,
}

impl FaultDrill {
    /// Binds `faults` (this rank's) on `model`'s packed gradients. `Error::Unknown` names a
    /// layer that is not one.
    pub(super) fn bind(gpu: &Gpu, kernels: &TrainKernels, spec: &ModelSpec, model: &GpuModel, faults: &[Fault]) -> Result<Self> {
        let device = &gpu.device;
        let tensors = spec.tensors();
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        faults
            .iter()
            .map(|f| {
                let layers = spec.param_layers();
                let layer = layers.iter().find(|(_, name)| *name == f.layer).ok_or_else(|| {
                    let known = layers.iter().map(|l| l.1.as_str()).collect::<Vec<_>>().join(", ");
                    Error::Unknown { what: "layer to inject a fault into", name: f.layer.clone(), known }
                })?;
                let t = tensors.iter().position(|t| t.layer == layer.0).expect("a parameter layer owns a tensor");
                let grad = model.arena().view(model.grads(), t);
                let offset = grad.offset;
                let init = |label: &str, contents: &[f32]| buffer_init(device, label, bytemuck::cast_slice(contents), usage);
                let op = match f.kind {
                    FaultKind::Nan => FaultOp::Overwrite { source: init("fault NaN", &[f32::NAN])?, offset },
                    FaultKind::Inf => FaultOp::Overwrite { source: init("fault inf", &[f32::INFINITY])?, offset },
                    FaultKind::Scale(factor) => {
                        let len = tensors[t].len() as u32;
                        let scratch = init("fault scratch", &vec![0.0; len as usize])?;
                        let factor = init("fault factor", &[factor])?;
                        let op = MatmulOp { m: len, n: 1, k: 1, ..MatmulOp::default() };
                        let v = MatmulOperands { a: grad, b: View::from(&factor), bias: None, c: View::from(&scratch), aux: None };
                        let product = kernels.matmul.bind_views(device, &op, v)?;
                        FaultOp::Scale { product, scratch, offset }
                    }
                };
                Ok((f.step, op))
            })
            .collect::<Result<_>>()
            .map(|faults| Self { faults })
    }

    /// Records step `step`'s faults into `encoder`, after the backward wrote `grads`.
    pub(super) fn encode(&self, step: u64, kernels: &TrainKernels, encoder: &mut wgpu::CommandEncoder, grads: &wgpu::Buffer) {
        for (_, fault) in self.faults.iter().filter(|(s, _)| *s == step) {
            match fault {
                FaultOp::Overwrite { source, offset } => encoder.copy_buffer_to_buffer(source, 0, grads, *offset, 4),
                FaultOp::Scale { product, scratch, offset } => {
                    kernels.matmul.encode(&mut encoder.begin_compute_pass(&Default::default()), product);
                    encoder.copy_buffer_to_buffer(scratch, 0, grads, *offset, scratch.size());
                }
            }
        }
    }
}
