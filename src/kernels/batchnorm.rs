//! `shaders/batchnorm.wgsl`: BatchNorm1d training forward (with running-stat update),
//! evaluation forward and backward.

use super::{
    bind_group, check_distinct, dispatch, index_range, layout, pipeline, placeholder, storage_entry, storage_words,
    uniform, uniform_entry,
};
use crate::error::{Error, Result};
use crate::shaders;

/// `torch.nn.BatchNorm1d(features, eps, momentum)` (affine, tracking running stats) over
/// inputs of shape `[batch, features]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm {
    pub batch: u32,
    pub features: u32,
    /// 0.1, as torch: `running = (1 - momentum)·running + momentum·batch_stat`.
    pub momentum: f32,
    /// 1e-5, as torch.
    pub eps: f32,
}

impl BatchNorm {
    /// torch's defaults for momentum and eps.
    pub fn new(batch: u32, features: u32) -> Self {
        Self { batch, features, momentum: 0.1, eps: 1e-5 }
    }

    fn len(&self) -> u64 {
        self.batch as u64 * self.features as u64
    }

    fn params(&self, min_batch: u32) -> Result<[u32; 4]> {
        if self.batch < min_batch || self.features == 0 {
            return Err(Error::Invalid(format!(
                "batch norm needs a batch of at least {min_batch} (torch: more than 1 value per channel when \
                 training) and at least 1 feature, got {}x{}",
                self.batch, self.features
            )));
        }
        if !((0.0..=1.0).contains(&self.momentum) && self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::Invalid(format!("batch norm needs momentum in [0, 1] and eps > 0, got {self:?}")));
        }
        index_range("batch norm input", self.len())?;
        Ok([self.batch, self.features, self.momentum.to_bits(), self.eps.to_bits()])
    }
}

/// Buffers of the training forward. `saved` (2·features f32: mean, then inv_std) is what
/// the backward reads; the running stats (features f32 each) are updated in place.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormTrain<'a> {
    pub x: &'a wgpu::Buffer,
    pub gamma: &'a wgpu::Buffer,
    pub beta: &'a wgpu::Buffer,
    pub y: &'a wgpu::Buffer,
    pub saved: &'a wgpu::Buffer,
    pub running_mean: &'a wgpu::Buffer,
    pub running_var: &'a wgpu::Buffer,
}

/// Buffers of the evaluation forward, from the running stats.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormEval<'a> {
    pub x: &'a wgpu::Buffer,
    pub gamma: &'a wgpu::Buffer,
    pub beta: &'a wgpu::Buffer,
    pub y: &'a wgpu::Buffer,
    pub running_mean: &'a wgpu::Buffer,
    pub running_var: &'a wgpu::Buffer,
}

/// Buffers of the backward: the forward's input and `saved`, the upstream `dy`, and the
/// gradients it writes (overwriting).
#[derive(Clone, Copy, Debug)]
pub struct BatchNormBackward<'a> {
    pub x: &'a wgpu::Buffer,
    pub gamma: &'a wgpu::Buffer,
    pub saved: &'a wgpu::Buffer,
    pub dy: &'a wgpu::Buffer,
    pub dx: &'a wgpu::Buffer,
    pub dgamma: &'a wgpu::Buffer,
    pub dbeta: &'a wgpu::Buffer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Train,
    Eval,
    Backward,
}

#[derive(Debug)]
pub struct BatchNormBinding {
    group: wgpu::BindGroup,
    entry: Entry,
    features: u32,
}

#[derive(Debug)]
pub struct BatchNormKernel {
    /// 0 x, 1 γ, 2 β or dy (read-only), 3 y or dx, 4 saved, 5 running mean or dγ,
    /// 6 running var or dβ (read-write), 7 params.
    pub layout: wgpu::BindGroupLayout,
    train: wgpu::ComputePipeline,
    eval: wgpu::ComputePipeline,
    backward: wgpu::ComputePipeline,
    placeholder: wgpu::Buffer,
}

/// (name, buffer, f32 elements or 0 for the placeholder, writable) of one binding.
type Slot<'a> = (&'static str, Option<&'a wgpu::Buffer>, u64, bool);

impl BatchNormKernel {
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let mut entries: Vec<_> = (0..7).map(|i| storage_entry(i, i < 3)).collect();
        entries.push(uniform_entry(7));
        let layout = layout(device, "batchnorm", &entries);
        let s = &shaders::BATCHNORM;
        Ok(Self {
            train: pipeline(device, s, "train", &[&layout], &[])?,
            eval: pipeline(device, s, "eval", &[&layout], &[])?,
            backward: pipeline(device, s, "backward", &[&layout], &[])?,
            placeholder: placeholder(device),
            layout,
        })
    }

    pub fn bind_train(&self, device: &wgpu::Device, bn: &BatchNorm, b: BatchNormTrain<'_>) -> Result<BatchNormBinding> {
        let (len, f) = (bn.len(), bn.features as u64);
        let slots = [
            ("batch norm x", Some(b.x), len, false),
            ("batch norm gamma", Some(b.gamma), f, false),
            ("batch norm beta", Some(b.beta), f, false),
            ("batch norm y", Some(b.y), len, true),
            ("batch norm saved stats", Some(b.saved), 2 * f, true),
            ("batch norm running mean", Some(b.running_mean), f, true),
            ("batch norm running var", Some(b.running_var), f, true),
        ];
        self.bind(device, bn, Entry::Train, 2, slots)
    }

    pub fn bind_eval(&self, device: &wgpu::Device, bn: &BatchNorm, b: BatchNormEval<'_>) -> Result<BatchNormBinding> {
        let (len, f) = (bn.len(), bn.features as u64);
        let slots = [
            ("batch norm x", Some(b.x), len, false),
            ("batch norm gamma", Some(b.gamma), f, false),
            ("batch norm beta", Some(b.beta), f, false),
            ("batch norm y", Some(b.y), len, true),
            ("unused", None, 0, true),
            ("batch norm running mean", Some(b.running_mean), f, true),
            ("batch norm running var", Some(b.running_var), f, true),
        ];
        self.bind(device, bn, Entry::Eval, 1, slots)
    }

    pub fn bind_backward(
        &self,
        device: &wgpu::Device,
        bn: &BatchNorm,
        b: BatchNormBackward<'_>,
    ) -> Result<BatchNormBinding> {
        let (len, f) = (bn.len(), bn.features as u64);
        let slots = [
            ("batch norm x", Some(b.x), len, false),
            ("batch norm gamma", Some(b.gamma), f, false),
            ("batch norm dy", Some(b.dy), len, false),
            ("batch norm dx", Some(b.dx), len, true),
            ("batch norm saved stats", Some(b.saved), 2 * f, true),
            ("batch norm dgamma", Some(b.dgamma), f, true),
            ("batch norm dbeta", Some(b.dbeta), f, true),
        ];
        self.bind(device, bn, Entry::Backward, 1, slots)
    }

    fn bind(
        &self,
        device: &wgpu::Device,
        bn: &BatchNorm,
        entry: Entry,
        min_batch: u32,
        slots: [Slot<'_>; 7],
    ) -> Result<BatchNormBinding> {
        let params = uniform(device, "batch norm params", &bn.params(min_batch)?);
        let named: Vec<_> = slots.iter().filter_map(|&(name, b, _, w)| b.map(|b| (name, b, w))).collect();
        check_distinct(&named)?;
        let mut resources = slots
            .iter()
            .map(|&(name, buffer, len, _)| match buffer {
                Some(buffer) => storage_words(name, buffer, len),
                None => Ok(self.placeholder.as_entire_binding()),
            })
            .collect::<Result<Vec<_>>>()?;
        resources.push(params.as_entire_binding());
        let group = bind_group(device, &self.layout, "batch norm", resources)?;
        Ok(BatchNormBinding { group, entry, features: bn.features })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binding: &BatchNormBinding) {
        let pipeline = match binding.entry {
            Entry::Train => &self.train,
            Entry::Eval => &self.eval,
            Entry::Backward => &self.backward,
        };
        dispatch(pass, pipeline, &binding.group, binding.features);
    }
}
