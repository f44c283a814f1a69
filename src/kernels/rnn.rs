//! `shaders/rnn.wgsl`: a vanilla RNN over the whole sequence, forward (input projection
//! included) and backward through time, one dispatch each. With the weight-gradient
//! products of `kernels::matmul` after the backward, a layer costs one dispatch forward
//! and three backward at any sequence length.

use super::{bind_group, buffer_init, check_disjoint, dispatch, layout, pipeline, storage_entry, storage_view, View};
use crate::error::{Error, Result};
use crate::kernels::activation::Activation;
use crate::shaders;

/// The recurrence's sizes: `batch` sequences of `steps` steps of `inputs` features,
/// `hidden` units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RnnShape {
    /// Sequences.
    pub batch: u32,
    /// Input features per step.
    pub inputs: u32,
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

    /// f32s a `pre` buffer (or view) must hold: [`RnnShape::sequence_len`] in whole vec4s.
    pub fn pre_len(&self) -> u64 {
        self.sequence_len().next_multiple_of(4)
    }

    /// f32s an `hs` buffer (or view) must hold: `[steps + 1, batch, hidden]` in whole vec4s.
    pub fn hs_len(&self) -> u64 {
        (self.sequence_len() + self.step_len()).next_multiple_of(4)
    }

    /// f32s a W_h view must hold: `[hidden, hidden]` in whole vec4s.
    pub fn w_h_len(&self) -> u64 {
        (self.hidden as u64 * self.hidden as u64).next_multiple_of(4)
    }

    /// f32s of the inputs `[steps, batch, inputs]`.
    pub fn x_len(&self) -> u64 {
        self.steps as u64 * self.batch as u64 * self.inputs as u64
    }

    fn validate(&self) -> Result<()> {
        let sizes = [("rnn batch", self.batch), ("rnn inputs", self.inputs), ("rnn hidden", self.hidden), ("rnn steps", self.steps)];
        crate::error::check_sizes(&sizes)?;
        let (_, slope) = self.activation.code();
        if !slope.is_finite() {
            return Err(Error::OutOfRange { what: "leaky relu slope", value: slope as f64, expected: "finite" });
        }
        super::index_range("rnn hidden states", self.hs_len())?;
        super::index_range("rnn inputs", self.x_len())?;
        Ok(())
    }

    fn words(&self, steps: std::ops::Range<u32>) -> [u32; 8] {
        let (kind, slope) = self.activation.code();
        [self.batch, self.hidden, self.steps, kind, slope.to_bits(), steps.start, steps.end, self.inputs]
    }

    /// Whether W_h, pre and hs are read as vec4 (H a multiple of 4).
    fn vec4(&self) -> bool {
        self.hidden.is_multiple_of(4)
    }

    /// (invocations per workgroup, units one pass of a sequence's unit loop covers at a
    /// time, loop trips of one such pass, unit passes per invocation and step).
    fn plan(&self, layout: RnnLayout, backward: bool) -> (u32, u32, u32, u32) {
        let h = self.hidden;
        let (units, dot) = match (self.vec4(), backward, layout) {
            (true, _, RnnLayout::Invocation) => (4, h / 4),
            (true, true, RnnLayout::Workgroup) => (4, h),
            (true, false, RnnLayout::Workgroup) => (1, h / 4),
            (false, _, _) => (1, h),
        };
        // The forward's input projection: a trip per input.
        let trips = dot + if backward { 0 } else { self.inputs };
        match layout {
            RnnLayout::Workgroup => {
                let threads = (h / units).next_multiple_of(8).min(256);
                (threads, units, trips, (h / units).div_ceil(threads))
            }
            RnnLayout::Invocation => (8, units, trips, h / units),
        }
    }

    /// The step ranges of one pass's dispatches, in forward order. On CPU implementations
    /// each stays within lavapipe's loop limiter (65,535 loop trips an invocation, after
    /// which Mesa 22.3 silently ends every loop); elsewhere one range covers the sequence.
    fn chunks(&self, device: &wgpu::Device, layout: RnnLayout, backward: bool) -> Vec<std::ops::Range<u32>> {
        let (_, _, trips, passes) = self.plan(layout, backward);
        let per_step = passes * (trips + 2) + 1;
        let len = match device.adapter_info().device_type {
            wgpu::DeviceType::Cpu => (LOOP_TRIPS / per_step).max(1),
            _ => self.steps,
        };
        (0..self.steps).step_by(len as usize).map(|t| t..(t + len).min(self.steps)).collect()
    }
}

/// Who runs one sequence's recurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RnnLayout {
    /// A workgroup, its invocations sharing the hidden units, a storage barrier a step:
    /// for GPUs.
    Workgroup,
    /// One invocation, every unit in turn, no barrier: for CPU implementations such as
    /// lavapipe, where a barrier suspends and resumes every SIMD group.
    Invocation,
}

impl RnnLayout {
    /// `Invocation` on CPU implementations, `Workgroup` elsewhere.
    pub fn for_device(device: &wgpu::Device) -> Self {
        match device.adapter_info().device_type {
            wgpu::DeviceType::Cpu => Self::Invocation,
            _ => Self::Workgroup,
        }
    }
}

/// `views` (name, view, f32s, written) checked for aliasing, then bound in order.
fn checked_views<'a>(views: &[(&str, View<'a>, u64, bool)]) -> Result<Vec<wgpu::BindingResource<'a>>> {
    check_disjoint(views)?;
    views.iter().map(|&(name, view, len, _)| storage_view(name, view, len)).collect()
}

/// Loop trips an invocation may make on lavapipe, with a margin below its limiter's 65,535.
const LOOP_TRIPS: u32 = 60_000;

/// The buffers of [`RnnKernel::bind_forward`].
#[derive(Clone, Copy, Debug)]
pub struct RnnForward<'a> {
    /// The inputs `[steps, batch, inputs]`.
    pub x: View<'a>,
    /// W_x `[hidden, inputs]` (`weight_ih`).
    pub w_x: View<'a>,
    /// b `[hidden]`.
    pub bias: View<'a>,
    /// W_h `[hidden, hidden]` (`weight_hh`; [`RnnShape::w_h_len`] f32s).
    pub w_h: View<'a>,
    /// `[steps, batch, hidden]` ([`RnnShape::pre_len`] f32s): receives the
    /// pre-activations z_t = W_x·x_t + b + W_h·h_{t-1}.
    pub pre: View<'a>,
    /// `[steps + 1, batch, hidden]` ([`RnnShape::hs_len`] f32s), zeroed: slice `t + 1`
    /// receives h_t; slice 0 stays 0.
    pub hs: View<'a>,
    /// `[batch, hidden]`: receives the last hidden state, the layer's output.
    pub last: View<'a>,
}

/// The buffers of [`RnnKernel::bind_backward`].
#[derive(Clone, Copy, Debug)]
pub struct RnnBackward<'a> {
    /// W_h `[hidden, hidden]` ([`RnnShape::w_h_len`] f32s).
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
    /// Workgroups a dispatch.
    groups: u32,
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
    /// 0 W_h (as vec4), 1 shape (read-only), 2 pre (or its gradient), 3 hs, 4 edge (last
    /// h, or its gradient) (read-write), 5 x, 6 W_x, 7 b (read-only).
    pub layout: wgpu::BindGroupLayout,
    /// Bound where the backward has no use for the hidden states' slot.
    unused: wgpu::Buffer,
    /// Bound where the backward has no use for the forward's inputs and input weights.
    no_inputs: wgpu::Buffer,
    rnn_layout: RnnLayout,
}

impl RnnKernel {
    /// The kernel with [`RnnLayout::for_device`].
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        Self::with_layout(device, RnnLayout::for_device(device))
    }

    /// The kernel with the other layout (both compute the same, in the same order).
    pub fn with_layout(device: &wgpu::Device, rnn_layout: RnnLayout) -> Result<Self> {
        let entries: Vec<_> = (0..8).map(|i| storage_entry(i, !(2..=4).contains(&i))).collect();
        let layout = layout(device, "rnn", &entries);
        Ok(Self { unused: super::placeholder(device), no_inputs: super::placeholder(device), rnn_layout, layout })
    }

    fn pipeline(&self, device: &wgpu::Device, shape: &RnnShape, backward: bool) -> Result<wgpu::ComputePipeline> {
        let entry = match (self.rnn_layout, backward) {
            (RnnLayout::Workgroup, false) => "rnn_forward",
            (RnnLayout::Workgroup, true) => "rnn_backward",
            (RnnLayout::Invocation, false) => "rnn_forward_seq",
            (RnnLayout::Invocation, true) => "rnn_backward_seq",
        };
        let threads = shape.plan(self.rnn_layout, backward).0;
        let constants = [("WG", threads as f64), ("VEC", shape.vec4() as u8 as f64)];
        pipeline(device, &shaders::RNN, entry, &[&self.layout], &constants)
    }

    /// Binds the forward over the whole sequence.
    pub fn bind_forward(&self, device: &wgpu::Device, shape: &RnnShape, b: RnnForward<'_>) -> Result<RnnBinding> {
        shape.validate()?;
        let h = shape.hidden as u64;
        // Bindings 0 and 2..=7, in order.
        let views = checked_views(&[
            ("rnn W_h", b.w_h, shape.w_h_len(), false),
            ("rnn pre-activations", b.pre, shape.pre_len(), true),
            ("rnn hidden states", b.hs, shape.hs_len(), true),
            ("rnn last hidden state", b.last, shape.step_len(), true),
            ("rnn inputs", b.x, shape.x_len(), false),
            ("rnn W_x", b.w_x, h * shape.inputs as u64, false),
            ("rnn bias", b.bias, h, false),
        ])?;
        let chunks = shape.chunks(device, self.rnn_layout, false);
        self.finish(device, shape, views, chunks, false)
    }

    /// Binds backpropagation through time: every step's dL/dz_t over its z_t in `b.pre`.
    pub fn bind_backward(&self, device: &wgpu::Device, shape: &RnnShape, b: RnnBackward<'_>) -> Result<RnnBinding> {
        shape.validate()?;
        // d_last sits in a writable slot, which the backward only reads.
        let mut views = checked_views(&[
            ("rnn W_h", b.w_h, shape.w_h_len(), false),
            ("rnn pre-activations", b.pre, shape.pre_len(), true),
            ("rnn output gradient", b.d_last, shape.step_len(), true),
        ])?;
        // No hidden states (binding 3), no inputs or input weights (5..=7).
        views.insert(2, self.unused.as_entire_binding());
        views.extend((0..3).map(|_| self.no_inputs.as_entire_binding()));
        let chunks = shape.chunks(device, self.rnn_layout, true).into_iter().rev().collect();
        self.finish(device, shape, views, chunks, true)
    }

    /// One bind group per chunk of steps: `views` (bindings 0 and 2..=7) with the chunk's
    /// shape at binding 1.
    fn finish(
        &self,
        device: &wgpu::Device,
        shape: &RnnShape,
        views: Vec<wgpu::BindingResource<'_>>,
        chunks: Vec<std::ops::Range<u32>>,
        backward: bool,
    ) -> Result<RnnBinding> {
        let groups = chunks
            .into_iter()
            .map(|steps| {
                let words = shape.words(steps);
                let shape_buffer = buffer_init(device, "rnn shape", bytemuck::cast_slice(&words), wgpu::BufferUsages::STORAGE)?;
                let mut resources = views.clone();
                resources.insert(1, shape_buffer.as_entire_binding());
                bind_group(device, &self.layout, "rnn", resources)
            })
            .collect::<Result<Vec<_>>>()?;
        let groups_per_chunk = match self.rnn_layout {
            RnnLayout::Workgroup => shape.batch,
            // Two sequences an invocation on the vec4 path.
            RnnLayout::Invocation => {
                let per_invocation = 1 + shape.vec4() as u32;
                shape.batch.div_ceil(shape.plan(RnnLayout::Invocation, backward).0 * per_invocation)
            }
        };
        Ok(RnnBinding { chunks: groups, pipeline: self.pipeline(device, shape, backward)?, groups: groups_per_chunk })
    }

    /// Records the bound recurrence, a dispatch per chunk of steps.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binding: &RnnBinding) {
        for group in &binding.chunks {
            dispatch(pass, &binding.pipeline, group, binding.groups);
        }
    }
}
