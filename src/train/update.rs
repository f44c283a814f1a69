//! The update of a training step: the optimizer bound on the packed parameters, clipping the
//! gradients as it reads them where the clip setting allows, its state (moments and step
//! count) and the learning rate it reads from a storage word, rewritten only when it changes.

use crate::error::Result;
use crate::kernels::optimizer::{lr_buffer, set_lr, GradScale, OptimizerBinding, OptimizerBuffers, OptimizerState};
use crate::nn::{GpuModel, TrainKernels};
use crate::norm::NonFinitePolicy;

use super::clipping::Clipping;
use super::TrainConfig;

pub(super) struct Update {
    binding: OptimizerBinding,
    state: OptimizerState,
    lr_buffer: wgpu::Buffer,
    written_lr: f32,
}

impl Update {
    /// Binds `config`'s optimizer on `model`'s parameters and gradients at learning rate `lr`,
    /// reading the clip coefficient (or the per-tensor ones) and the skip flag from `clipping`.
    pub(super) fn new(
        device: &wgpu::Device,
        kernels: &TrainKernels,
        config: &TrainConfig,
        model: &GpuModel,
        clipping: &Clipping,
        lr: f32,
    ) -> Result<Self> {
        let optimizer_config = config.optimizer_kernel_config()?;
        let lr_buffer = lr_buffer(device, lr)?;
        let state = OptimizerState::new(device, &optimizer_config, model.arena().len())?;
        let (scale, segment_coefs) = match clipping {
            Clipping::OnRead { scale, norm, .. } => (*scale, (*scale == GradScale::PerSegment).then(|| norm.segment_buffer())),
            Clipping::InPlace { .. } => (GradScale::None, None),
        };
        let buffers = OptimizerBuffers {
            params: model.params(),
            grads: model.grads(),
            tensors: model.arena().ranges(),
            state: &state,
            lr: &lr_buffer,
            stats: Some(clipping.stats_buffer()),
            segment_coefs,
            scale,
            zero_nonfinite: config.on_nonfinite == NonFinitePolicy::ZeroNonFinite && matches!(clipping, Clipping::OnRead { .. }),
        };
        let binding = kernels.optimizer.bind(device, &optimizer_config, buffers)?;
        Ok(Self { binding, state, lr_buffer, written_lr: lr })
    }

    /// Makes the next update use `lr`, writing it to the device only when it changed.
    pub(super) fn set_lr(&mut self, queue: &wgpu::Queue, lr: f32) -> Result<()> {
        if lr != self.written_lr {
            set_lr(queue, &self.lr_buffer, lr)?;
            self.written_lr = lr;
        }
        Ok(())
    }

    /// The learning rate the next update uses.
    pub(super) fn lr(&self) -> f32 {
        self.written_lr
    }

    /// The optimizer's state: every tensor's slots and the step count, packed.
    pub(super) fn state(&self) -> &OptimizerState {
        &self.state
    }

    pub(super) fn encode(&self, kernels: &TrainKernels, pass: &mut wgpu::ComputePass<'_>) {
        kernels.optimizer.encode(pass, &self.binding);
    }
}
