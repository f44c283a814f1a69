//! `shaders/optimizer.wgsl`: SGD and AdamW updates that obey the gradient norm's skip flag.


use super::{
    bind_group, check_distinct, dispatch, index_range, layout, pipeline, placeholder, storage_entry, storage_words,
    uniform, uniform_entry,
};
use crate::error::{Error, Result};
use crate::norm::STATS_SKIP_OFFSET;
use crate::shaders;

// The shader reads the skip flag as word 2 of the stats.
const _: () = assert!(STATS_SKIP_OFFSET == 8);

/// `torch.optim.SGD` without its learning rate, which lives in a device buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sgd {
    /// Momentum factor (0: none, and no state buffer).
    pub momentum: f32,
    /// Dampening of the momentum buffer's update, as torch's `dampening`.
    pub dampening: f32,
    /// Coupled: added to the gradient as `weight_decay·p` (L2 regularization).
    pub weight_decay: f32,
    /// Needs momentum > 0 and dampening 0, as in torch.
    pub nesterov: bool,
}

/// `torch.optim.AdamW` (no amsgrad) without its learning rate.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamW {
    /// Decay rates of the first and second moment estimates, each in [0, 1).
    pub betas: (f32, f32),
    /// Added after the square root (and after bias correction), as torch does.
    pub eps: f32,
    /// Decoupled: `p *= 1 - lr·weight_decay` before the Adam step.
    pub weight_decay: f32,
}

impl Default for AdamW {
    /// torch's defaults: betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2.
    fn default() -> Self {
        Self { betas: (0.9, 0.999), eps: 1e-8, weight_decay: 1e-2 }
    }
}

/// A device optimizer's update rule and hyperparameters (the learning rate excepted).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Optimizer {
    /// SGD with optional momentum, Nesterov and coupled weight decay.
    Sgd(Sgd),
    /// AdamW with decoupled weight decay.
    AdamW(AdamW),
}

impl Optimizer {
    /// State buffers (zero-initialized, one f32 per parameter) the optimizer needs: SGD's
    /// momentum buffer when momentum ≠ 0; AdamW's exp_avg and exp_avg_sq.
    pub fn state_buffers(&self) -> usize {
        match self {
            Self::Sgd(s) => (s.momentum != 0.0) as usize,
            Self::AdamW(_) => 2,
        }
    }

    fn hyper(&self, len: u32) -> Result<[u32; 8]> {
        let bad = |what: &str| Err(Error::Invalid(format!("{what}, got {self:?}")));
        let ok = |x: f32| x.is_finite() && x >= 0.0;
        let (nesterov, momentum, dampening, weight_decay, beta1, beta2, eps) = match *self {
            Self::Sgd(s) => {
                if !(ok(s.momentum) && ok(s.dampening) && ok(s.weight_decay)) {
                    return bad("SGD momentum, dampening and weight_decay must be finite and ≥ 0");
                }
                if s.nesterov && (s.momentum == 0.0 || s.dampening != 0.0) {
                    return bad("Nesterov momentum requires a momentum and zero dampening");
                }
                (s.nesterov as u32, s.momentum, s.dampening, s.weight_decay, 0.0, 0.0, 0.0)
            }
            Self::AdamW(a) => {
                let beta = |b: f32| (0.0..1.0).contains(&b);
                if !(beta(a.betas.0) && beta(a.betas.1) && ok(a.eps) && ok(a.weight_decay)) {
                    return bad("AdamW betas must lie in [0, 1), eps and weight_decay be finite and ≥ 0");
                }
                (0, 0.0, 0.0, a.weight_decay, a.betas.0, a.betas.1, a.eps)
            }
        };
        let f = f32::to_bits;
        Ok([len, nesterov, f(momentum), f(dampening), f(weight_decay), f(beta1), f(beta2), f(eps)])
    }
}

/// The buffers one optimizer update binds. All need STORAGE usage.
#[derive(Clone, Copy, Debug)]
pub struct OptimizerBuffers<'a> {
    /// `len` f32 parameters, updated in place.
    pub params: &'a wgpu::Buffer,
    /// `len` f32 gradients, read only.
    pub grads: &'a wgpu::Buffer,
    /// [`Optimizer::state_buffers`] buffers of `len` f32, zeroed before the first step.
    pub state: &'a [&'a wgpu::Buffer],
    /// The learning rate, an f32 at offset 0 (see [`lr_buffer`]); may be shared by many
    /// bindings so that one write changes it for all.
    pub lr: &'a wgpu::Buffer,
    /// A gradient norm's stats buffer (`GradNorm::stats_buffer`): the update is skipped when
    /// its skip flag is set. `None`: never skip.
    pub stats: Option<&'a wgpu::Buffer>,
}

/// A learning-rate buffer holding `lr` (usage STORAGE | COPY_DST | COPY_SRC).
pub fn lr_buffer(device: &wgpu::Device, lr: f32) -> Result<wgpu::Buffer> {
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    super::buffer_init(device, "gradguard learning rate", bytemuck::bytes_of(&lr), usage)
}

/// Schedules the learning rate of later submissions (a queue write, no new pipeline).
pub fn set_lr(queue: &wgpu::Queue, buffer: &wgpu::Buffer, lr: f32) -> Result<()> {
    if !(lr.is_finite() && lr >= 0.0) {
        return Err(Error::Invalid(format!("learning rate must be finite and ≥ 0, got {lr}")));
    }
    queue.write_buffer(buffer, 0, bytemuck::bytes_of(&lr));
    Ok(())
}

/// One bound parameter tensor with its state and its own step counter (torch keeps
/// `state['step']` per parameter too).
#[derive(Debug)]
pub struct OptimizerBinding {
    group: wgpu::BindGroup,
    adamw: bool,
    len: u32,
    step: wgpu::Buffer,
}

impl OptimizerBinding {
    /// The u32 count of completed (not skipped) steps (usage STORAGE | COPY_SRC | COPY_DST,
    /// so checkpoints can save and restore it).
    pub fn step_buffer(&self) -> &wgpu::Buffer {
        &self.step
    }
}

/// The SGD and AdamW pipelines: [`OptimizerKernel::bind`] once per parameter tensor, then
/// [`OptimizerKernel::encode`] every step.
#[derive(Debug)]
pub struct OptimizerKernel {
    /// 0 params, 1 grads, 2 state0, 3 state1, 4 lr, 5 stats, 6 step, 7 hyperparameters.
    pub layout: wgpu::BindGroupLayout,
    sgd: wgpu::ComputePipeline,
    adamw: wgpu::ComputePipeline,
    advance: wgpu::ComputePipeline,
    /// Bound for absent state buffers and stats: two writable slots need two buffers.
    placeholders: [wgpu::Buffer; 3],
}

impl OptimizerKernel {
    /// Builds the pipelines. `Err(Error::Device)` if the device refuses them.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let layout = layout(
            device,
            "optimizer",
            &[
                storage_entry(0, false),
                storage_entry(1, true),
                storage_entry(2, false),
                storage_entry(3, false),
                storage_entry(4, true),
                storage_entry(5, true),
                storage_entry(6, false),
                uniform_entry(7),
            ],
        );
        let s = &shaders::OPTIMIZER;
        Ok(Self {
            sgd: pipeline(device, s, "sgd", &[&layout], &[])?,
            adamw: pipeline(device, s, "adamw", &[&layout], &[])?,
            advance: pipeline(device, s, "advance", &[&layout], &[])?,
            placeholders: [placeholder(device), placeholder(device), placeholder(device)],
            layout,
        })
    }

    /// Binds an update of `len` parameters.
    pub fn bind(
        &self,
        device: &wgpu::Device,
        optimizer: &Optimizer,
        len: u64,
        buffers: OptimizerBuffers<'_>,
    ) -> Result<OptimizerBinding> {
        if len == 0 {
            return Err(Error::Invalid("optimizer: zero parameters".into()));
        }
        let len = index_range("optimizer parameters", len)?;
        let hyper = uniform(device, "optimizer hyperparameters", &optimizer.hyper(len)?)?;
        if buffers.state.len() != optimizer.state_buffers() {
            return Err(Error::LengthMismatch {
                what: format!("{optimizer:?}: state buffers"),
                expected: optimizer.state_buffers() as u64,
                actual: buffers.state.len() as u64,
            });
        }
        let mut named = vec![
            ("parameters", buffers.params, true),
            ("gradients", buffers.grads, false),
            ("learning rate", buffers.lr, false),
        ];
        named.extend(buffers.state.iter().map(|s| ("optimizer state", *s, true)));
        named.extend(buffers.stats.map(|s| ("gradient-norm stats", s, false)));
        check_distinct(&named)?;
        let step = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gradguard optimizer step"),
            size: 4,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let state = |i: usize| match buffers.state.get(i) {
            Some(s) => storage_words("optimizer state", s, len as u64),
            None => Ok(self.placeholders[i].as_entire_binding()),
        };
        let resources = vec![
            storage_words("parameters", buffers.params, len as u64)?,
            storage_words("gradients", buffers.grads, len as u64)?,
            state(0)?,
            state(1)?,
            storage_words("learning rate", buffers.lr, 1)?,
            match buffers.stats {
                Some(stats) => storage_words("gradient-norm stats", stats, STATS_SKIP_OFFSET / 4 + 1)?,
                None => self.placeholders[2].as_entire_binding(),
            },
            step.as_entire_binding(),
            hyper.as_entire_binding(),
        ];
        let group = bind_group(device, &self.layout, "optimizer", resources)?;
        Ok(OptimizerBinding { group, adamw: matches!(optimizer, Optimizer::AdamW(_)), len, step })
    }

    /// Records the update, then the step counter's increment (both skipped on the device
    /// when the stats say so).
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binding: &OptimizerBinding) {
        let update = if binding.adamw { &self.adamw } else { &self.sgd };
        dispatch(pass, update, &binding.group, binding.len.div_ceil(256));
        dispatch(pass, &self.advance, &binding.group, 1);
    }
}
