//! `shaders/activation.wgsl`: elementwise activations, forward and backward.

use super::{
    bind_group, check_distinct, dispatch, index_range, layout, pipeline, placeholder, storage_entry, storage_words,
    uniform, uniform_entry,
};
use crate::error::{Error, Result};
use crate::shaders;

/// An activation function, as in `torch.nn.functional`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Activation {
    /// `x`.
    Identity,
    /// `max(x, 0)`; derivative 0 at x = 0.
    Relu,
    /// `x` for x > 0, else `negative_slope·x` (torch default slope 0.01).
    LeakyRelu(f32),
    /// `tanh(x)`.
    Tanh,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `torch.nn.functional.gelu(x, approximate=…)`: with [`GeluApproximate::None`] (torch's
    /// default) `x·Φ(x)` with the exact normal CDF `Φ(x) = (1 + erf(x/√2))/2`, erf evaluated
    /// in f32 with a relative error below about 2e-7; with [`GeluApproximate::Tanh`] (GPT-2
    /// and its kin) `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    Gelu {
        /// Which GELU.
        approximate: GeluApproximate,
    },
}

/// The `approximate` argument of torch's GELU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum GeluApproximate {
    /// `approximate='none'`: the exact erf form.
    #[default]
    None,
    /// `approximate='tanh'`, computed as `x·σ(2u)` (the same function; σ keeps it accurate
    /// where `1 + tanh(u)` cancels, for x well below 0).
    Tanh,
}

impl Activation {
    /// torch's default GELU, `approximate='none'`.
    pub const GELU: Self = Self::Gelu { approximate: GeluApproximate::None };
    /// GELU's tanh approximation, `approximate='tanh'`.
    pub const GELU_TANH: Self = Self::Gelu { approximate: GeluApproximate::Tanh };
}

impl Activation {
    pub(crate) fn code(self) -> (u32, f32) {
        match self {
            Self::Identity => (0, 0.0),
            Self::Relu => (1, 0.0),
            Self::LeakyRelu(slope) => (2, slope),
            Self::Tanh => (3, 0.0),
            Self::Sigmoid => (4, 0.0),
            Self::Gelu { approximate: GeluApproximate::None } => (5, 0.0),
            Self::Gelu { approximate: GeluApproximate::Tanh } => (6, 0.0),
        }
    }
}

/// A bound forward or backward pass over `len` elements.
#[derive(Debug)]
pub struct ActivationBinding {
    group: wgpu::BindGroup,
    backward: bool,
    len: u32,
}

/// The activation pipelines: bind a forward or backward pass, then encode it. Buffers
/// need STORAGE usage.
#[derive(Debug)]
pub struct ActivationKernel {
    /// 0 x, 1 dy (read-only; a placeholder in forward), 2 output (read-write), 3 params.
    pub layout: wgpu::BindGroupLayout,
    forward: wgpu::ComputePipeline,
    backward: wgpu::ComputePipeline,
    placeholder: wgpu::Buffer,
}

impl ActivationKernel {
    /// Builds the pipelines. `Err(Error::Device)` if the device refuses them.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let layout = layout(
            device,
            "activation",
            &[storage_entry(0, true), storage_entry(1, true), storage_entry(2, false), uniform_entry(3)],
        );
        let s = &shaders::ACTIVATION;
        Ok(Self {
            forward: pipeline(device, s, "forward", &[&layout], &[])?,
            backward: pipeline(device, s, "backward", &[&layout], &[])?,
            placeholder: placeholder(device),
            layout,
        })
    }

    /// Binds `y = f(x)` over the first `len` elements (`y` must not be `x`).
    pub fn bind_forward(
        &self,
        device: &wgpu::Device,
        activation: Activation,
        len: u64,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<ActivationBinding> {
        self.bind(device, activation, len, x, None, y)
    }

    /// Binds `dx = dy·f'(x)` from the forward input `x`.
    pub fn bind_backward(
        &self,
        device: &wgpu::Device,
        activation: Activation,
        len: u64,
        x: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Result<ActivationBinding> {
        self.bind(device, activation, len, x, Some(dy), dx)
    }

    fn bind(
        &self,
        device: &wgpu::Device,
        activation: Activation,
        len: u64,
        x: &wgpu::Buffer,
        dy: Option<&wgpu::Buffer>,
        out: &wgpu::Buffer,
    ) -> Result<ActivationBinding> {
        let (kind, slope) = activation.code();
        if !slope.is_finite() {
            return Err(Error::Invalid(format!("leaky relu slope must be finite, got {slope}")));
        }
        if len == 0 {
            return Err(Error::Invalid("activation: zero elements".into()));
        }
        let len = index_range("activation", len)?;
        let mut buffers = vec![("activation input", x, false), ("activation output", out, true)];
        buffers.extend(dy.map(|dy| ("activation upstream gradient", dy, false)));
        check_distinct(&buffers)?;
        let params = uniform(device, "activation params", &[len, kind, slope.to_bits(), 0])?;
        let resources = vec![
            storage_words("activation input", x, len as u64)?,
            match dy {
                Some(dy) => storage_words("activation upstream gradient", dy, len as u64)?,
                None => self.placeholder.as_entire_binding(),
            },
            storage_words("activation output", out, len as u64)?,
            params.as_entire_binding(),
        ];
        let group = bind_group(device, &self.layout, "activation", resources)?;
        Ok(ActivationBinding { group, backward: dy.is_some(), len })
    }

    /// Records `binding`'s dispatch into `pass`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binding: &ActivationBinding) {
        let pipeline = if binding.backward { &self.backward } else { &self.forward };
        dispatch(pass, pipeline, &binding.group, binding.len.div_ceil(256));
    }
}
