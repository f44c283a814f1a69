//! `shaders/activation.wgsl`: elementwise activations, forward and backward.

use super::{
    bind_group, check_disjoint, dispatch, index_range, layout, pipeline, placeholder, storage_entry, storage_view, uniform,
    uniform_entry, View,
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

/// Which entry point a binding runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// `y = f(x)`.
    Forward,
    /// `x = f(x)`, in place (torch's `inplace=True`).
    ForwardInPlace,
    /// `dx = dy·f'(x)`.
    Backward,
    /// `dy = dy·f'(x)`, the gradient overwriting the upstream gradient.
    BackwardInPlace,
}

/// A bound forward or backward pass over `len` elements.
#[derive(Debug)]
pub struct ActivationBinding {
    group: wgpu::BindGroup,
    pass: Pass,
    len: u32,
}

/// The activation pipelines: bind a forward or backward pass over views of buffers
/// (STORAGE usage, offsets multiples of [`VIEW_ALIGN`](super::VIEW_ALIGN)), in place or
/// not, then encode it.
#[derive(Debug)]
pub struct ActivationKernel {
    /// 0 x, 1 dy (read-only; a placeholder where a pass does not read it), 2 output (read-write;
    /// in place, the operand), 3 params.
    pub layout: wgpu::BindGroupLayout,
    forward: wgpu::ComputePipeline,
    forward_in_place: wgpu::ComputePipeline,
    backward: wgpu::ComputePipeline,
    backward_in_place: wgpu::ComputePipeline,
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
            forward_in_place: pipeline(device, s, "forward_in_place", &[&layout], &[])?,
            backward: pipeline(device, s, "backward", &[&layout], &[])?,
            backward_in_place: pipeline(device, s, "backward_in_place", &[&layout], &[])?,
            placeholder: placeholder(device),
            layout,
        })
    }

    /// Binds `y = f(x)` over `len` elements (`y` must not overlap `x`; for `x = f(x)` use
    /// [`ActivationKernel::bind_forward_in_place`]).
    pub fn bind_forward<'a>(
        &self,
        device: &wgpu::Device,
        activation: Activation,
        len: u64,
        x: impl Into<View<'a>>,
        y: impl Into<View<'a>>,
    ) -> Result<ActivationBinding> {
        self.bind(device, activation, len, Pass::Forward, Some(x.into()), None, y.into())
    }

    /// Binds `x = f(x)` over `len` elements, in place.
    pub fn bind_forward_in_place<'a>(
        &self,
        device: &wgpu::Device,
        activation: Activation,
        len: u64,
        x: impl Into<View<'a>>,
    ) -> Result<ActivationBinding> {
        self.bind(device, activation, len, Pass::ForwardInPlace, None, None, x.into())
    }

    /// Binds `dx = dy·f'(x)` from the forward input `x`.
    pub fn bind_backward<'a>(
        &self,
        device: &wgpu::Device,
        activation: Activation,
        len: u64,
        x: impl Into<View<'a>>,
        dy: impl Into<View<'a>>,
        dx: impl Into<View<'a>>,
    ) -> Result<ActivationBinding> {
        self.bind(device, activation, len, Pass::Backward, Some(x.into()), Some(dy.into()), dx.into())
    }

    /// Binds `dy = dy·f'(x)` from the forward input `x`: the gradient overwrites the
    /// upstream gradient. `x` must be the forward's input, so not after an in-place forward.
    pub fn bind_backward_in_place<'a>(
        &self,
        device: &wgpu::Device,
        activation: Activation,
        len: u64,
        x: impl Into<View<'a>>,
        dy: impl Into<View<'a>>,
    ) -> Result<ActivationBinding> {
        self.bind(device, activation, len, Pass::BackwardInPlace, Some(x.into()), None, dy.into())
    }

    #[allow(clippy::too_many_arguments)]
    fn bind<'a>(
        &'a self,
        device: &wgpu::Device,
        activation: Activation,
        len: u64,
        pass: Pass,
        x: Option<View<'a>>,
        dy: Option<View<'a>>,
        out: View<'a>,
    ) -> Result<ActivationBinding> {
        let (kind, slope) = activation.code();
        if !slope.is_finite() {
            return Err(Error::OutOfRange { what: "leaky relu slope", value: slope as f64, expected: "finite" });
        }
        if len == 0 {
            return Err(Error::Empty { what: "activation".into() });
        }
        let words = index_range("activation", len)?;
        let out_name = match pass {
            Pass::ForwardInPlace => "activation operand (in place)",
            Pass::BackwardInPlace => "activation upstream gradient (overwritten)",
            _ => "activation output",
        };
        let mut views = vec![(out_name, out, len, true)];
        views.extend(x.map(|x| ("activation input", x, len, false)));
        views.extend(dy.map(|dy| ("activation upstream gradient", dy, len, false)));
        check_disjoint(&views)?;
        let optional = |name, view: Option<View<'a>>| match view {
            Some(v) => storage_view(name, v, len),
            None => Ok(self.placeholder.as_entire_binding()),
        };
        let params = uniform(device, "activation params", &[words, kind, slope.to_bits(), 0])?;
        let resources = vec![
            optional("activation input", x)?,
            optional("activation upstream gradient", dy)?,
            storage_view(out_name, out, len)?,
            params.as_entire_binding(),
        ];
        let group = bind_group(device, &self.layout, "activation", resources)?;
        Ok(ActivationBinding { group, pass, len: words })
    }

    /// Records `binding`'s dispatch into `pass`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binding: &ActivationBinding) {
        let pipeline = match binding.pass {
            Pass::Forward => &self.forward,
            Pass::ForwardInPlace => &self.forward_in_place,
            Pass::Backward => &self.backward,
            Pass::BackwardInPlace => &self.backward_in_place,
        };
        dispatch(pass, pipeline, &binding.group, binding.len.div_ceil(256));
    }
}
