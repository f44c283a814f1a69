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

    /// Elements of `pre` and `dpre`: `[steps, batch, hidden]`.
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

    fn words(&self) -> [u32; 5] {
        let (kind, slope) = self.activation.code();
        [self.batch, self.hidden, self.steps, kind, slope.to_bits()]
    }
}

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
    /// The pre-activations the forward left.
    pub pre: View<'a>,
    /// `[batch, hidden]`: the gradient of the layer's output (the last hidden state).
    pub d_last: View<'a>,
    /// `[steps, batch, hidden]`: receives dL/dz_t for every step.
    pub d_pre: View<'a>,
}

/// A bound recurrence, ready to record with [`RnnKernel::encode`].
#[derive(Debug)]
pub struct RnnBinding {
    group: wgpu::BindGroup,
    backward: bool,
    batch: u32,
}

/// The recurrence pipelines.
#[derive(Debug)]
pub struct RnnKernel {
    /// 0 W_h, 1 shape (read-only), 2 pre, 3 hs, 4 edge (last h, or its gradient), 5 dpre.
    pub layout: wgpu::BindGroupLayout,
    forward: wgpu::ComputePipeline,
    backward: wgpu::ComputePipeline,
    /// Bound where a pass has no use for a writable slot.
    unused: [wgpu::Buffer; 2],
}

/// Invocations per sequence: one SIMD group on CPU implementations (lavapipe runs 8 lanes),
/// where every barrier switches context once per group; 64 on GPUs.
fn workgroup_size(device: &wgpu::Device) -> u32 {
    match device.adapter_info().device_type {
        wgpu::DeviceType::Cpu => 8,
        _ => 64,
    }
}

fn shape_buffer(device: &wgpu::Device, shape: &RnnShape) -> Result<wgpu::Buffer> {
    buffer_init(device, "rnn shape", bytemuck::cast_slice(&shape.words()), wgpu::BufferUsages::STORAGE)
}

impl RnnKernel {
    /// Builds the pipelines. `Err(Error::Device)` if the device refuses them.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let entries: Vec<_> = (0..6).map(|i| storage_entry(i, i < 2)).collect();
        let layout = layout(device, "rnn", &entries);
        let constants = [("WG", workgroup_size(device) as f64)];
        let s = &shaders::RNN;
        Ok(Self {
            forward: pipeline(device, s, "rnn_forward", &[&layout], &constants)?,
            backward: pipeline(device, s, "rnn_backward", &[&layout], &constants)?,
            unused: [super::placeholder(device), super::placeholder(device)],
            layout,
        })
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
        let shape_buffer = shape_buffer(device, shape)?;
        let resources = vec![
            storage_view("rnn W_h", b.w_h, hh)?,
            shape_buffer.as_entire_binding(),
            storage_view("rnn pre-activations", b.pre, seq)?,
            storage_view("rnn hidden states", b.hs, seq + step)?,
            storage_view("rnn last hidden state", b.last, step)?,
            self.unused[0].as_entire_binding(),
        ];
        self.finish(device, resources, false, shape)
    }

    /// Binds backpropagation through time: every step's dL/dz_t into `b.d_pre`.
    pub fn bind_backward(&self, device: &wgpu::Device, shape: &RnnShape, b: RnnBackward<'_>) -> Result<RnnBinding> {
        shape.validate()?;
        let (seq, step, hh) = (shape.sequence_len(), shape.step_len(), shape.hidden as u64 * shape.hidden as u64);
        // The read-only slots bind W_h alone; pre and d_last sit in writable slots, which
        // the shader only reads.
        check_disjoint(&[
            ("rnn W_h", b.w_h, hh, false),
            ("rnn pre-activations", b.pre, seq, true),
            ("rnn output gradient", b.d_last, step, true),
            ("rnn pre-activation gradients", b.d_pre, seq, true),
        ])?;
        let shape_buffer = shape_buffer(device, shape)?;
        let resources = vec![
            storage_view("rnn W_h", b.w_h, hh)?,
            shape_buffer.as_entire_binding(),
            storage_view("rnn pre-activations", b.pre, seq)?,
            self.unused[1].as_entire_binding(),
            storage_view("rnn output gradient", b.d_last, step)?,
            storage_view("rnn pre-activation gradients", b.d_pre, seq)?,
        ];
        self.finish(device, resources, true, shape)
    }

    fn finish(
        &self,
        device: &wgpu::Device,
        resources: Vec<wgpu::BindingResource<'_>>,
        backward: bool,
        shape: &RnnShape,
    ) -> Result<RnnBinding> {
        let group = bind_group(device, &self.layout, "rnn", resources)?;
        Ok(RnnBinding { group, backward, batch: shape.batch })
    }

    /// Records the bound recurrence: one workgroup per sequence.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binding: &RnnBinding) {
        let pipeline = if binding.backward { &self.backward } else { &self.forward };
        dispatch(pass, pipeline, &binding.group, binding.batch);
    }
}
