//! `shaders/loss.wgsl`: softmax cross-entropy and mean squared error, loss and gradient in
//! one pass plus a fixed-order mean.

use super::{
    bind_group, check_disjoint, dispatch, index_range, layout, pipeline, storage_entry, storage_view, uniform,
    uniform_entry, View,
};
use crate::error::{Error, Result};
use crate::shaders;

/// A bound loss: [`LossKernel::encode`] records its two dispatches.
#[derive(Debug)]
pub struct LossBinding {
    group: wgpu::BindGroup,
    cross_entropy: bool,
    groups: u32,
}

/// Cross-entropy and MSE pipelines: loss and gradient in one pass, then a fixed-order
/// mean (deterministic). Buffers need STORAGE usage.
#[derive(Debug)]
pub struct LossKernel {
    /// 0 input, 1 targets (read-only), 2 gradient, 3 partial sums, 4 loss (read-write), 5 params.
    pub layout: wgpu::BindGroupLayout,
    cross_entropy: wgpu::ComputePipeline,
    mse: wgpu::ComputePipeline,
    mean: wgpu::ComputePipeline,
}

impl LossKernel {
    /// Builds the pipelines. `Err(Error::Device)` if the device refuses them.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let layout = layout(
            device,
            "loss",
            &[
                storage_entry(0, true),
                storage_entry(1, true),
                storage_entry(2, false),
                storage_entry(3, false),
                storage_entry(4, false),
                uniform_entry(5),
            ],
        );
        let s = &shaders::LOSS;
        Ok(Self {
            cross_entropy: pipeline(device, s, "cross_entropy", &[&layout], &[])?,
            mse: pipeline(device, s, "mse", &[&layout], &[])?,
            mean: pipeline(device, s, "mean", &[&layout], &[])?,
            layout,
        })
    }

    /// `torch.nn.functional.cross_entropy(logits, targets)` (mean over the batch) into
    /// `loss[0]`, and its gradient with respect to the logits into `grad`.
    /// `logits` and `grad` are `[batch, classes]` f32, `targets` `[batch]` u32 class ids.
    #[allow(clippy::too_many_arguments)]
    pub fn bind_cross_entropy<'a>(
        &self,
        device: &wgpu::Device,
        batch: u32,
        classes: u32,
        logits: impl Into<View<'a>>,
        targets: impl Into<View<'a>>,
        grad: impl Into<View<'a>>,
        loss: impl Into<View<'a>>,
    ) -> Result<LossBinding> {
        if batch == 0 || classes == 0 {
            return Err(Error::Empty { what: format!("cross entropy logits ({batch}x{classes})") });
        }
        let len = index_range("cross entropy logits", batch as u64 * classes as u64)?;
        let views = [logits.into(), targets.into(), grad.into(), loss.into()];
        self.bind(device, [batch, classes, batch, batch], len, views, true)
    }

    /// `torch.nn.functional.mse_loss(pred, target)` (mean over all `len` elements) into
    /// `loss[0]`, and its gradient with respect to `pred` into `grad`.
    pub fn bind_mse<'a>(
        &self,
        device: &wgpu::Device,
        len: u64,
        pred: impl Into<View<'a>>,
        target: impl Into<View<'a>>,
        grad: impl Into<View<'a>>,
        loss: impl Into<View<'a>>,
    ) -> Result<LossBinding> {
        if len == 0 {
            return Err(Error::Empty { what: "mse".into() });
        }
        let len = index_range("mse", len)?;
        let groups = len.div_ceil(256);
        self.bind(device, [len, 1, groups, len], len, [pred.into(), target.into(), grad.into(), loss.into()], false)
    }

    /// `views`: the input, the targets, the gradient and the loss value.
    fn bind(&self, device: &wgpu::Device, params: [u32; 4], len: u32, views: [View<'_>; 4], cross_entropy: bool) -> Result<LossBinding> {
        let [rows, _, partial_count, _] = params;
        let [input, target, grad, loss] = views;
        let targets = if cross_entropy { rows } else { len };
        check_disjoint(&[
            ("loss input", input, len as u64, false),
            ("loss target", target, targets as u64, false),
            ("loss gradient", grad, len as u64, true),
            ("loss value", loss, 1, true),
        ])?;
        let partials = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gradguard loss partials"),
            size: 4 * partial_count as u64,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let uniform = uniform(device, "loss params", &params)?;
        let resources = vec![
            storage_view("loss input", input, len as u64)?,
            storage_view("loss target", target, targets as u64)?,
            storage_view("loss gradient", grad, len as u64)?,
            partials.as_entire_binding(),
            storage_view("loss value", loss, 1)?,
            uniform.as_entire_binding(),
        ];
        let group = bind_group(device, &self.layout, "loss", resources)?;
        Ok(LossBinding { group, cross_entropy, groups: if cross_entropy { rows } else { partial_count } })
    }

    /// Records the per-row (or per-workgroup) pass, then the mean.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binding: &LossBinding) {
        let main = if binding.cross_entropy { &self.cross_entropy } else { &self.mse };
        dispatch(pass, main, &binding.group, binding.groups);
        dispatch(pass, &self.mean, &binding.group, 1);
    }
}
