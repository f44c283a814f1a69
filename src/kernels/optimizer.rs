//! `shaders/optimizer.wgsl`: SGD and AdamW over every tensor of a packed parameter buffer
//! in one dispatch, clipping gradients as they are read and obeying the gradient norm's
//! skip flag.

use super::{
    bind_group, buffer_init, check_distinct, dispatch, index_range, layout, pipeline, placeholder, storage_entry,
    storage_words, uniform, uniform_entry,
};
use crate::error::{Error, Result};
use super::norm::{STATS_COEF_OFFSET, STATS_SKIP_OFFSET};
use crate::shaders;

// The shader reads the coefficient and the skip flag as words 1 and 2 of the stats.
const _: () = assert!(STATS_COEF_OFFSET == 4 && STATS_SKIP_OFFSET == 8);

/// Elements one workgroup updates (the shader's `CHUNK`).
const CHUNK: u64 = 1024;

/// The most steps the device's f32 step counter counts exactly.
pub const MAX_STEPS: u64 = 1 << 24;

/// `torch.optim.SGD` without its learning rate, which lives in a device buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Optimizer {
    /// SGD with optional momentum, Nesterov and coupled weight decay.
    Sgd(Sgd),
    /// AdamW with decoupled weight decay.
    AdamW(AdamW),
}

impl Optimizer {
    /// What the state slots hold, in words, for messages.
    fn slot_names(&self) -> &'static str {
        match self.state_buffers() {
            0 => "none: SGD without momentum",
            1 => "momentum_buffer: SGD with momentum",
            _ => "exp_avg and exp_avg_sq: AdamW",
        }
    }

    /// State slots (one f32 per parameter each) the optimizer needs: SGD's momentum buffer
    /// when momentum ≠ 0; AdamW's exp_avg and exp_avg_sq.
    pub fn state_buffers(&self) -> usize {
        match self {
            Self::Sgd(s) => (s.momentum != 0.0) as usize,
            Self::AdamW(_) => 2,
        }
    }

    fn hyper(&self, len: u32) -> Result<[u32; 12]> {
        let nonnegative = |what: &'static str, x: f32| match x.is_finite() && x >= 0.0 {
            true => Ok(()),
            false => Err(Error::OutOfRange { what, value: x as f64, expected: "finite and ≥ 0" }),
        };
        let (nesterov, momentum, dampening, weight_decay, beta1, beta2, eps) = match *self {
            Self::Sgd(s) => {
                nonnegative("SGD momentum", s.momentum)?;
                nonnegative("SGD dampening", s.dampening)?;
                nonnegative("SGD weight_decay", s.weight_decay)?;
                if s.nesterov && (s.momentum == 0.0 || s.dampening != 0.0) {
                    let other = format!("momentum {} and dampening {}", s.momentum, s.dampening);
                    return Err(Error::Incompatible { setting: "SGD nesterov", other, why: "Nesterov momentum needs a momentum > 0 and zero dampening" });
                }
                (s.nesterov as u32, s.momentum, s.dampening, s.weight_decay, 0.0, 0.0, 0.0)
            }
            Self::AdamW(a) => {
                for (what, beta) in [("AdamW beta1", a.betas.0), ("AdamW beta2", a.betas.1)] {
                    if !(0.0..1.0).contains(&beta) {
                        return Err(Error::OutOfRange { what, value: beta as f64, expected: "in [0, 1)" });
                    }
                }
                nonnegative("AdamW eps", a.eps)?;
                nonnegative("AdamW weight_decay", a.weight_decay)?;
                (0, 0.0, 0.0, a.weight_decay, a.betas.0, a.betas.1, a.eps)
            }
        };
        let f = f32::to_bits;
        let slots = self.state_buffers() as u32;
        Ok([len, slots, nesterov, f(momentum), f(dampening), f(weight_decay), f(beta1), f(beta2), f(eps), 0, 0, 0])
    }
}

/// An optimizer's state for `len` parameters: its slots (`momentum_buffer`, or
/// `exp_avg` and `exp_avg_sq`) and its count of completed steps, in one device buffer that
/// the caller keeps across rebinding (usage STORAGE | COPY_SRC | COPY_DST). Slot `s` of
/// element `i` is f32 `s·len + i`; the step count is the f32 after the slots.
#[derive(Debug)]
pub struct OptimizerState {
    buffer: wgpu::Buffer,
    len: u64,
    slots: usize,
}

impl OptimizerState {
    /// Zeroed state (step 0) for `len` parameters of `optimizer`.
    pub fn new(device: &wgpu::Device, optimizer: &Optimizer, len: u64) -> Result<Self> {
        let slots = optimizer.state_buffers();
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        let words = index_range("optimizer state", slots as u64 * len + 1)?;
        let buffer = buffer_init(device, "gradguard optimizer state", &vec![0; 4 * words as usize], usage)?;
        Ok(Self { buffer, len, slots })
    }

    /// The buffer: the slots, then the step count.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Parameters per slot.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the state covers no parameter.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// State slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Byte offset of the step count (an f32 holding a whole number).
    pub fn step_offset(&self) -> u64 {
        4 * self.slots as u64 * self.len
    }
}

/// Where the update's gradients are scaled as they are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GradScale {
    /// Read as they are (clipped in place beforehand, or not at all).
    #[default]
    None,
    /// By the norm's global clip coefficient (`clip_grad_norm_`).
    Global,
    /// By each segment's own coefficient (per-tensor norm clipping): needs the norm's
    /// per-segment scratch ([`OptimizerBuffers::segment_coefs`]).
    PerSegment,
}

/// The buffers one optimizer update binds. All need STORAGE usage.
#[derive(Clone, Copy, Debug)]
pub struct OptimizerBuffers<'a> {
    /// Parameters, updated in place: the `tensors` ranges of them.
    pub params: &'a wgpu::Buffer,
    /// Gradients, read only, laid out as the parameters.
    pub grads: &'a wgpu::Buffer,
    /// (first element, elements) of each tensor, in the order of the gradient norm's
    /// segments; elements outside them are left alone.
    pub tensors: &'a [(u64, u64)],
    /// The state, covering every element of the tensors.
    pub state: &'a OptimizerState,
    /// The learning rate, an f32 at offset 0 (see [`lr_buffer`]); may be shared by many
    /// bindings so that one write changes it for all.
    pub lr: &'a wgpu::Buffer,
    /// A gradient norm's stats buffer (`GradNorm::stats_buffer`): the update is skipped when
    /// its skip flag is set, and it holds the global clip coefficient. `None`: never skip,
    /// never scale.
    pub stats: Option<&'a wgpu::Buffer>,
    /// The same norm's per-segment scratch (`GradNorm::segment_buffer`), for
    /// [`GradScale::PerSegment`].
    pub segment_coefs: Option<&'a wgpu::Buffer>,
    /// How gradients are scaled as they are read.
    pub scale: GradScale,
    /// Read NaN and ±inf gradient elements as 0 (the `ZeroNonFinite` policy, applied on read).
    pub zero_nonfinite: bool,
}

/// A learning-rate buffer holding `lr` (usage STORAGE | COPY_DST | COPY_SRC).
pub fn lr_buffer(device: &wgpu::Device, lr: f32) -> Result<wgpu::Buffer> {
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    super::buffer_init(device, "gradguard learning rate", bytemuck::bytes_of(&lr), usage)
}

/// Schedules the learning rate of later submissions (a queue write, no new pipeline).
pub fn set_lr(queue: &wgpu::Queue, buffer: &wgpu::Buffer, lr: f32) -> Result<()> {
    crate::error::check_non_negative("learning rate", lr)?;
    queue.write_buffer(buffer, 0, bytemuck::bytes_of(&lr));
    Ok(())
}

/// One bound update of many tensors: two dispatches (the update, the step count).
#[derive(Debug)]
pub struct OptimizerBinding {
    group: wgpu::BindGroup,
    update: wgpu::ComputePipeline,
    chunks: u32,
}

/// The SGD and AdamW pipelines: [`OptimizerKernel::bind`] once per parameter set, then
/// [`OptimizerKernel::encode`] every step.
#[derive(Debug)]
pub struct OptimizerKernel {
    /// 0 params, 1 grads, 2 state, 3 lr, 4 stats, 5 per-segment coefficients, 6 chunk
    /// table, 7 hyperparameters.
    pub layout: wgpu::BindGroupLayout,
    advance: wgpu::ComputePipeline,
    /// Bound for absent stats and segment coefficients.
    placeholders: [wgpu::Buffer; 2],
}

impl OptimizerKernel {
    /// Builds the pipelines. `Err(Error::Device)` if the device refuses them.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let mut entries: Vec<_> = (0..7).map(|i| storage_entry(i, i != 0 && i != 2)).collect();
        entries.push(uniform_entry(7));
        let layout = layout(device, "optimizer", &entries);
        Ok(Self {
            advance: pipeline(device, &shaders::OPTIMIZER, "advance", &[&layout], &[])?,
            placeholders: [placeholder(device), placeholder(device)],
            layout,
        })
    }

    /// Binds an update of `buffers.tensors`.
    pub fn bind(&self, device: &wgpu::Device, optimizer: &Optimizer, buffers: OptimizerBuffers<'_>) -> Result<OptimizerBinding> {
        let state = buffers.state;
        if buffers.tensors.iter().all(|&(_, len)| len == 0) {
            return Err(Error::Empty { what: "optimizer parameters".into() });
        }
        if state.slots != optimizer.state_buffers() {
            return Err(Error::LengthMismatch {
                what: format!("optimizer state slots ({})", optimizer.slot_names()),
                expected: optimizer.state_buffers() as u64,
                actual: state.slots as u64,
            });
        }
        let end = buffers.tensors.iter().map(|&(start, len)| start + len).max().unwrap_or(0);
        if end > state.len {
            return Err(Error::LengthMismatch { what: "optimizer state elements".into(), expected: end, actual: state.len });
        }
        let needs_stats = buffers.scale != GradScale::None;
        if (needs_stats && buffers.stats.is_none()) || (buffers.scale == GradScale::PerSegment) != buffers.segment_coefs.is_some() {
            let other = format!("stats {}, segment coefficients {}", buffers.stats.is_some(), buffers.segment_coefs.is_some());
            let why = "scaling on read needs the norm's stats, and per-segment scaling its segment coefficients too";
            return Err(Error::Incompatible { setting: "optimizer scale", other, why });
        }
        let len = index_range("optimizer state elements", state.len)?;
        let hyper = uniform(device, "optimizer hyperparameters", &optimizer.hyper(len)?)?;
        let mut named = vec![
            ("parameters", buffers.params, true),
            ("gradients", buffers.grads, false),
            ("optimizer state", &state.buffer, true),
            ("learning rate", buffers.lr, false),
        ];
        named.extend(buffers.stats.map(|s| ("gradient-norm stats", s, false)));
        named.extend(buffers.segment_coefs.map(|s| ("per-segment coefficients", s, false)));
        check_distinct(&named)?;
        let chunks: Vec<[u32; 4]> = buffers
            .tensors
            .iter()
            .enumerate()
            .flat_map(|(segment, &(start, len))| {
                (start..start + len).step_by(CHUNK as usize).map(move |c| [c as u32, (c + CHUNK).min(start + len) as u32, segment as u32, 0])
            })
            .collect();
        let chunk_count = index_range("optimizer chunks", chunks.len() as u64)?;
        let table = buffer_init(device, "optimizer chunks", bytemuck::cast_slice(&chunks), wgpu::BufferUsages::STORAGE)?;
        let scale = match buffers.scale {
            GradScale::None => 0.0,
            GradScale::Global => 1.0,
            GradScale::PerSegment => 2.0,
        };
        let entry = match optimizer {
            Optimizer::Sgd(_) => "sgd",
            Optimizer::AdamW(_) => "adamw",
        };
        let constants = [("SCALE", scale), ("ZERO_NONFINITE", buffers.zero_nonfinite as u8 as f64)];
        let update = pipeline(device, &shaders::OPTIMIZER, entry, &[&self.layout], &constants)?;
        let resources = vec![
            storage_words("parameters", buffers.params, end)?,
            storage_words("gradients", buffers.grads, end)?,
            storage_words("optimizer state", &state.buffer, state.slots as u64 * state.len + 1)?,
            storage_words("learning rate", buffers.lr, 1)?,
            match buffers.stats {
                Some(stats) => storage_words("gradient-norm stats", stats, STATS_SKIP_OFFSET / 4 + 1)?,
                None => self.placeholders[0].as_entire_binding(),
            },
            match buffers.segment_coefs {
                Some(s) => s.as_entire_binding(),
                None => self.placeholders[1].as_entire_binding(),
            },
            table.as_entire_binding(),
            hyper.as_entire_binding(),
        ];
        let group = bind_group(device, &self.layout, "optimizer", resources)?;
        Ok(OptimizerBinding { group, update, chunks: chunk_count })
    }

    /// Records the update, then the step counter's increment (both skipped on the device
    /// when the stats say so).
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binding: &OptimizerBinding) {
        dispatch(pass, &binding.update, &binding.group, binding.chunks);
        dispatch(pass, &self.advance, &binding.group, 1);
    }
}
