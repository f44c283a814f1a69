//! `shaders/rnn.wgsl`: a vanilla RNN's recurrence over the whole sequence, forward and
//! backward, one dispatch each. With the products of `kernels::matmul` around them (the
//! input projection before, the weight gradients after), a layer costs two dispatches
//! forward and three backward at any sequence length.

use super::{bind_group, buffer_init, check_disjoint, dispatch, layout, pipeline, storage_entry, storage_view, View};
use crate::error::{Error, Result};
use crate::kernels::activation::Activation;
use crate::shaders;

/// The recurrence's sizes: `batch` sequences of `steps` steps, `hidden` units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RnnShape {
    /// Sequences (one workgroup each).
    pub batch: u32,
    /// Hidden units.
    pub hidden: u32,
    /// Time steps.
    pub steps: u32,
    /// The recurrence's activation.
    pub activation: Activation,
}

impl RnnShape {
    /// Elements of one step's `[batch, hidden]` slice.
    pub fn step_len(&self) -> u64 {
        self.batch as u64 * self.hidden as u64
    }

    /// Elements of `pre`: `[steps, batch, hidden]`.
    pub fn sequence_len(&self) -> u64 {
        self.steps as u64 * self.step_len()
    }

    fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.hidden == 0 || self.steps == 0 {
            return Err(Error::Invalid(format!("rnn: batch, hidden and steps must be ≥ 1, got {self:?}")));
        }
        let (_, slope) = self.activation.code();
        if !slope.is_finite() {
            return Err(Error::Invalid(format!("leaky relu slope must be finite, got {slope}")));
        }
        super::index_range("rnn hidden states", (self.steps as u64 + 1) * self.step_len())?;
        Ok(())
    }

    fn words(&self, steps: std::ops::Range<u32>) -> [u32; 8] {
        let (kind, slope) = self.activation.code();
        [self.batch, self.hidden, self.steps, kind, slope.to_bits(), steps.start, steps.end, 0]
    }

    /// Invocations per sequence: one per hidden unit, in whole SIMD groups of 8, at most 256.
    fn workgroup_size(&self) -> u32 {
        self.hidden.next_multiple_of(8).min(256)
    }

    /// The step ranges of one pass's dispatches, in forward order. On CPU implementations
    /// each stays within lavapipe's loop limiter (65,535 loop trips an invocation, after
    /// which Mesa 22.3 silently ends every loop); elsewhere one range covers the sequence.
    fn chunks(&self, device: &wgpu::Device) -> Vec<std::ops::Range<u32>> {
        let per_step = self.hidden.div_ceil(self.workgroup_size()) * (self.hidden / 4 + 4) + 1;
        let len = match device.adapter_info().device_type {
            wgpu::DeviceType::Cpu => (LOOP_TRIPS / per_step).max(1),
            _ => self.steps,
        };
        (0..self.steps).step_by(len as usize).map(|t| t..(t + len).min(self.steps)).collect()
    }
}

/// Loop trips an invocation may make on lavapipe, with a margin below its limiter's 65,535.
const LOOP_TRIPS: u32 = 60_000;

/// The buffers of [`RnnKernel::bind_forward`].
#[derive(Clone, Copy, Debug)]
pub struct RnnForward<'a> {
    /// W_h `[hidden, hidden]`.
    pub w_h: View<'a>,
    /// `[steps, batch, hidden]`: the input projection `X·W_xᵀ + b` on entry, the
    /// pre-activations on exit.
    pub pre: View<'a>,
    /// `[steps + 1, batch, hidden]`, zeroed: slice `t + 1` receives h_t; slice 0 stays 0.
    pub hs: View<'a>,
    /// `[batch, hidden]`: receives the last hidden state, the layer's output.
    pub last: View<'a>,
}

/// The buffers of [`RnnKernel::bind_backward`].
#[derive(Clone, Copy, Debug)]
pub struct RnnBackward<'a> {
    /// W_h `[hidden, hidden]`.
    pub w_h: View<'a>,
    /// `[steps, batch, hidden]`: the pre-activations the forward left, replaced by their
    /// gradients dL/dz_t.
    pub pre: View<'a>,
    /// `[batch, hidden]`: the gradient of the layer's output (the last hidden state).
    pub d_last: View<'a>,
}

/// A bound recurrence, ready to record with [`RnnKernel::encode`]: one dispatch per chunk
/// of steps (one chunk but on lavapipe with long sequences and many hidden units).
#[derive(Debug)]
pub struct RnnBinding {
    /// In the order they run: forward in time, or backward.
    chunks: Vec<wgpu::BindGroup>,
    pipeline: wgpu::ComputePipeline,
    batch: u32,
}

impl RnnBinding {
    /// Dispatches [`RnnKernel::encode`] records.
    pub fn dispatch_count(&self) -> usize {
        self.chunks.len()
    }
}

/// The recurrence kernel; its pipelines (one per workgroup size) come from the device's
/// kernel cache as shapes need them.
#[derive(Debug)]
pub struct RnnKernel {
    /// 0 W_h, 1 shape (read-only), 2 pre (or its gradient), 3 hs, 4 edge (last h, or its
    /// gradient).
    pub layout: wgpu::BindGroupLayout,
    /// Bound where the backward has no use for the hidden states' slot.
    unused: wgpu::Buffer,
}

impl RnnKernel {
    /// Builds the pipelines. `Err(Error::Device)` if the device refuses them.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let entries: Vec<_> = (0..5).map(|i| storage_entry(i, i < 2)).collect();
        let layout = layout(device, "rnn", &entries);
        Ok(Self { unused: super::placeholder(device), layout })
    }

    fn pipeline(&self, device: &wgpu::Device, shape: &RnnShape, backward: bool) -> Result<wgpu::ComputePipeline> {
        let entry = if backward { "rnn_backward" } else { "rnn_forward" };
        let constants = [("WG", shape.workgroup_size() as f64), ("BACKWARD", backward as u8 as f64)];
        pipeline(device, &shaders::RNN, entry, &[&self.layout], &constants)
    }

    /// Binds the forward recurrence over the input projection in `b.pre`.
    pub fn bind_forward(&self, device: &wgpu::Device, shape: &RnnShape, b: RnnForward<'_>) -> Result<RnnBinding> {
        shape.validate()?;
        let (seq, step, hh) = (shape.sequence_len(), shape.step_len(), shape.hidden as u64 * shape.hidden as u64);
        check_disjoint(&[
            ("rnn W_h", b.w_h, hh, false),
            ("rnn pre-activations", b.pre, seq, true),
            ("rnn hidden states", b.hs, seq + step, true),
            ("rnn last hidden state", b.last, step, true),
        ])?;
        let slots = [
            storage_view("rnn pre-activations", b.pre, seq)?,
            storage_view("rnn hidden states", b.hs, seq + step)?,
            storage_view("rnn last hidden state", b.last, step)?,
        ];
        let chunks = shape.chunks(device);
        self.finish(device, shape, b.w_h, &slots, chunks, false)
    }

    /// Binds backpropagation through time: every step's dL/dz_t over its z_t in `b.pre`.
    pub fn bind_backward(&self, device: &wgpu::Device, shape: &RnnShape, b: RnnBackward<'_>) -> Result<RnnBinding> {
        shape.validate()?;
        let (seq, step, hh) = (shape.sequence_len(), shape.step_len(), shape.hidden as u64 * shape.hidden as u64);
        // d_last sits in a writable slot, which the backward only reads.
        check_disjoint(&[
            ("rnn W_h", b.w_h, hh, false),
            ("rnn pre-activations", b.pre, seq, true),
            ("rnn output gradient", b.d_last, step, true),
        ])?;
        let slots = [
            storage_view("rnn pre-activations", b.pre, seq)?,
            self.unused.as_entire_binding(),
            storage_view("rnn output gradient", b.d_last, step)?,
        ];
        let chunks = shape.chunks(device).into_iter().rev().collect();
        self.finish(device, shape, b.w_h, &slots, chunks, true)
    }

    /// One bind group per chunk of steps: W_h, the chunk's shape, then `slots`.
    fn finish(
        &self,
        device: &wgpu::Device,
        shape: &RnnShape,
        w_h: View<'_>,
        slots: &[wgpu::BindingResource<'_>; 3],
        chunks: Vec<std::ops::Range<u32>>,
        backward: bool,
    ) -> Result<RnnBinding> {
        let hh = shape.hidden as u64 * shape.hidden as u64;
        let groups = chunks
            .into_iter()
            .map(|steps| {
                let words = shape.words(steps);
                let shape_buffer = buffer_init(device, "rnn shape", bytemuck::cast_slice(&words), wgpu::BufferUsages::STORAGE)?;
                let mut resources = vec![storage_view("rnn W_h", w_h, hh)?, shape_buffer.as_entire_binding()];
                resources.extend(slots.iter().cloned());
                bind_group(device, &self.layout, "rnn", resources)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RnnBinding { chunks: groups, pipeline: self.pipeline(device, shape, backward)?, batch: shape.batch })
    }

    /// Records the bound recurrence: one workgroup per sequence, a dispatch per chunk.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binding: &RnnBinding) {
        for group in &binding.chunks {
            dispatch(pass, &binding.pipeline, group, binding.batch);
        }
    }
}
