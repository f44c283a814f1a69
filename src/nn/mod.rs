//! Networks as layer lists: linear, activation, batch norm and a vanilla RNN layer; the MLP
//! and RNN builders; host-side initialization; the device model ([`GpuModel`]) and its
//! f64 twin ([`cpu::CpuModel`]).

mod arena;
pub mod cpu;
mod gpu;

pub use arena::ParamArena;
pub use gpu::{GpuModel, ModelBytes, TrainKernels};

use crate::error::{Error, Result};
use crate::init::{self, Nonlinearity};
use crate::kernels::activation::Activation;

/// How weights start (biases start at 0, batch-norm γ at 1 and β at 0).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum InitScheme {
    /// `kaiming_normal_` (fan-in) with the gain of the activation that follows.
    Kaiming,
    /// `xavier_uniform_` with the gain of the activation that follows.
    Xavier,
    /// `orthogonal_` times `gain` (times the activation's gain for feed-forward weights).
    Orthogonal {
        /// Multiplier of the orthogonal matrix.
        gain: f32,
    },
    /// IRNN (Le, Jaitly & Hinton 2015): an RNN's recurrent weights `gain · I`, every other
    /// weight from N(0, 0.001²), as the paper.
    Identity {
        /// Multiplier of the identity (the recurrence's spectral radius).
        gain: f32,
    },
    /// Every weight from N(0, std²): with a std too large for the width, gradients explode.
    /// Pascanu et al. 2013's "basic tanh" is `Normal { std: 0.1 }`.
    Normal {
        /// Standard deviation (> 0).
        std: f32,
    },
    /// Pascanu et al. 2013's "smart tanh": an RNN's recurrent weights sparse (`nonzero`
    /// entries a row from N(0, 0.01²)) and scaled to spectral radius `radius`
    /// ([`init::sparse_spectral`]); every other weight from N(0, 0.01²).
    Sparse {
        /// Spectral radius of the recurrent weights (the paper: 0.95).
        radius: f32,
        /// Non-zero entries in each row (the paper: 15).
        nonzero: u32,
    },
}

/// One layer. Inputs and outputs are `[batch, features]`, except the RNN's input,
/// `[steps, batch, inputs]`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LayerSpec {
    /// `torch.nn.Linear`: `y = x·Wᵀ + b`, W `[outputs, inputs]`.
    Linear {
        /// Input features.
        inputs: u32,
        /// Output features.
        outputs: u32,
    },
    /// An element-wise activation; keeps the feature count.
    Activation(Activation),
    /// `torch.nn.BatchNorm1d` in training mode (batch statistics).
    BatchNorm {
        /// Features normalized (each over the batch).
        features: u32,
    },
    /// `h_t = act(W_x·x_t + W_h·h_{t-1} + b)` from `h_0 = 0`, trained through time (BPTT);
    /// outputs the last hidden state. Only as the first layer.
    Rnn {
        /// Input features per time step.
        inputs: u32,
        /// Hidden units.
        hidden: u32,
        /// Time steps per sample.
        steps: u32,
        /// The recurrence's activation.
        activation: Activation,
    },
}

impl LayerSpec {
    /// Features of one output row.
    fn outputs(&self, inputs: u32) -> u32 {
        match *self {
            Self::Linear { outputs, .. } => outputs,
            Self::Activation(_) => inputs,
            Self::BatchNorm { features } => features,
            Self::Rnn { hidden, .. } => hidden,
        }
    }
}

/// A parameter tensor of a model: which layer owns it, its name and shape.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    /// Index of the owning layer in [`ModelSpec::layers`].
    pub layer: usize,
    /// `{layer name}.{weight|bias|weight_ih|weight_hh}`, e.g. `linear1.weight`.
    pub name: String,
    /// Shape, row-major: `[outputs, inputs]` for a weight matrix, `[features]` for a vector.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// AGC's unit: a row of a matrix, the whole of a vector (as optax's `unitwise_norm`).
    pub fn unit_len(&self) -> u64 {
        match self.shape.as_slice() {
            [_, cols] => *cols as u64,
            _ => self.len() as u64,
        }
    }
}

/// A multilayer perceptron: `depth` hidden layers of `width`, each Linear → (BatchNorm) →
/// activation, then a Linear head.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MlpSpec {
    /// Features of one input sample.
    pub inputs: u32,
    /// Outputs of the head (classes, or regression values).
    pub outputs: u32,
    /// Hidden layers (0: a single Linear).
    pub depth: u32,
    /// Features of each hidden layer.
    pub width: u32,
    /// The hidden layers' activation.
    pub activation: Activation,
    /// Batch norm between each hidden Linear and its activation.
    pub batchnorm: bool,
    /// How weights start.
    pub init: InitScheme,
}

/// A vanilla RNN over `steps` steps of `inputs` features, then a Linear head on the last
/// hidden state.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RnnSpec {
    /// Input features per time step.
    pub inputs: u32,
    /// Time steps per sample.
    pub steps: u32,
    /// Hidden units.
    pub hidden: u32,
    /// Outputs of the head.
    pub outputs: u32,
    /// The recurrence's activation.
    pub activation: Activation,
    /// How weights start.
    pub init: InitScheme,
}

/// A model: its layers and how its weights start.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    /// The layers, input first.
    pub layers: Vec<LayerSpec>,
    /// How weights start.
    pub init: InitScheme,
}

/// The first of `sizes` that is 0, as an error naming it.
fn at_least_one(sizes: &[(&'static str, u32)]) -> Result<()> {
    match sizes.iter().find(|(_, n)| *n == 0) {
        Some(&(what, _)) => Err(Error::OutOfRange { what, value: 0.0, expected: "at least 1" }),
        None => Ok(()),
    }
}

impl ModelSpec {
    /// The layers of an MLP. `Err(Error::OutOfRange)` naming the size that is 0 (inputs,
    /// width or outputs).
    pub fn mlp(s: &MlpSpec) -> Result<Self> {
        at_least_one(&[("MLP inputs", s.inputs), ("MLP width", s.width), ("MLP outputs", s.outputs)])?;
        let mut layers = Vec::new();
        let mut features = s.inputs;
        for _ in 0..s.depth {
            layers.push(LayerSpec::Linear { inputs: features, outputs: s.width });
            if s.batchnorm {
                layers.push(LayerSpec::BatchNorm { features: s.width });
            }
            layers.push(LayerSpec::Activation(s.activation));
            features = s.width;
        }
        layers.push(LayerSpec::Linear { inputs: features, outputs: s.outputs });
        Ok(Self { layers, init: s.init })
    }

    /// The layers of an RNN and its head. `Err(Error::OutOfRange)` naming the size that is 0.
    pub fn rnn(s: &RnnSpec) -> Result<Self> {
        at_least_one(&[
            ("RNN time steps", s.steps),
            ("RNN inputs", s.inputs),
            ("RNN hidden size", s.hidden),
            ("RNN outputs", s.outputs),
        ])?;
        let rnn = LayerSpec::Rnn { inputs: s.inputs, hidden: s.hidden, steps: s.steps, activation: s.activation };
        Ok(Self { layers: vec![rnn, LayerSpec::Linear { inputs: s.hidden, outputs: s.outputs }], init: s.init })
    }

    /// Features of one input sample (`steps · inputs` for an RNN).
    pub fn input_len(&self) -> usize {
        match self.layers.first() {
            Some(LayerSpec::Linear { inputs, .. }) => *inputs as usize,
            Some(LayerSpec::BatchNorm { features }) => *features as usize,
            Some(LayerSpec::Rnn { inputs, steps, .. }) => *inputs as usize * *steps as usize,
            Some(LayerSpec::Activation(_)) | None => 0,
        }
    }

    /// Features of each layer's output; entry 0 is the input row (per time step for an RNN).
    pub fn widths(&self) -> Vec<u32> {
        let mut w = vec![match self.layers.first() {
            Some(LayerSpec::Rnn { inputs, .. }) => *inputs,
            _ => self.input_len() as u32,
        }];
        for l in &self.layers {
            w.push(l.outputs(*w.last().expect("never empty")));
        }
        w
    }

    /// Features of one output row (classes, or regression values).
    pub fn output_len(&self) -> u32 {
        *self.widths().last().expect("never empty")
    }

    /// Checks that every layer has a non-zero size, that the layers connect and that an RNN
    /// comes first.
    pub fn validate(&self) -> Result<()> {
        if !self.layers.iter().any(|l| matches!(l, LayerSpec::Linear { .. } | LayerSpec::Rnn { .. })) {
            return Err(Error::Empty { what: "the model's Linear and RNN layers".into() });
        }
        for (i, l) in self.layers.iter().enumerate() {
            let sizes: &[(&'static str, u32)] = match l {
                LayerSpec::Linear { inputs, outputs } => &[("inputs", *inputs), ("outputs", *outputs)],
                LayerSpec::BatchNorm { features } => &[("features", *features)],
                LayerSpec::Rnn { inputs, hidden, steps, .. } => &[("inputs", *inputs), ("hidden", *hidden), ("steps", *steps)],
                LayerSpec::Activation(_) => &[],
            };
            if let Some((what, _)) = sizes.iter().find(|(_, size)| *size == 0) {
                let kind = match l {
                    LayerSpec::Linear { .. } => "linear",
                    LayerSpec::BatchNorm { .. } => "batch norm",
                    LayerSpec::Rnn { .. } => "rnn",
                    LayerSpec::Activation(_) => "activation",
                };
                return Err(Error::EmptyLayer { layer: i, kind, what });
            }
        }
        let mut features = self.widths()[0];
        for (i, l) in self.layers.iter().enumerate() {
            let expected = match *l {
                LayerSpec::Linear { inputs, .. } => Some(inputs),
                LayerSpec::BatchNorm { features } => Some(features),
                LayerSpec::Rnn { inputs, .. } if i == 0 => Some(inputs),
                LayerSpec::Rnn { .. } => {
                    let other = format!("layer {i}");
                    return Err(Error::Incompatible { setting: "an RNN layer", other, why: "an RNN layer must come first" });
                }
                LayerSpec::Activation(_) => None,
            };
            if let Some(e) = expected.filter(|&e| e != features || e == 0) {
                let what = format!("layer {i} ({l:?}): the features it takes against those it gets");
                return Err(Error::LengthMismatch { what, expected: e as u64, actual: features as u64 });
            }
            features = l.outputs(features);
        }
        Ok(())
    }

    /// Refuses, before anything is allocated, a model whose buffers at `batch` samples the
    /// device cannot hold: a tensor or an activation above `max_storage_buffer_binding_size`
    /// (each is bound whole), or parameters above `max_buffer_size` (they are packed in one
    /// buffer). The host allocates no more than the device holds.
    pub fn check_fits(&self, batch: u32, limits: &wgpu::Limits) -> Result<()> {
        let bytes = |elements: u64| elements.saturating_mul(4);
        let binding = limits.max_storage_buffer_binding_size;
        let too_large = |what: String, amount: u64, limit, limit_name| Err(Error::TooLarge { what, amount, unit: "bytes", limit, limit_name });
        let tensors = self.tensors();
        for t in &tensors {
            let size = bytes(t.shape.iter().map(|&d| d as u64).product());
            if size > binding {
                let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
                return too_large(format!("tensor {} ({})", t.name, shape.join(" × ")), size, binding, "the device's max_storage_buffer_binding_size");
            }
        }
        let params = bytes(ParamArena::new(&tensors).len());
        if params > limits.max_buffer_size {
            return too_large("the packed parameters".into(), params, limits.max_buffer_size, "the device's max_buffer_size");
        }
        let b = batch as u64;
        let widest = b.saturating_mul(self.widths().into_iter().max().unwrap_or(0) as u64).max(b * self.input_len() as u64);
        let states = match self.layers.first() {
            Some(LayerSpec::Rnn { hidden, steps, .. }) => b.saturating_mul(*hidden as u64).saturating_mul(*steps as u64 + 1),
            _ => 0,
        };
        let activations = bytes(widest.max(states));
        if activations > binding {
            return too_large(
                format!("a layer's activations at batch {batch}"),
                activations,
                binding,
                "the device's max_storage_buffer_binding_size",
            );
        }
        Ok(())
    }

    /// The refusal of targets that do not go with the loss of `model` (words on it).
    pub(crate) fn targets_mismatch(model: String) -> Error {
        let why = "class labels go with cross-entropy, values with MSE and as many outputs";
        Error::Incompatible { setting: "targets", other: model, why }
    }

    /// `Error::LengthMismatch` unless `params` are this model's tensors, in order and length.
    pub fn check_params(&self, params: &[Vec<f32>]) -> Result<()> {
        let tensors = self.tensors();
        if params.len() == tensors.len() && params.iter().zip(&tensors).all(|(p, t)| p.len() == t.len()) {
            return Ok(());
        }
        let what = format!("parameters ({} tensors of lengths {:?})", tensors.len(), tensors.iter().map(|t| t.len()).collect::<Vec<_>>());
        let (expected, actual) = (tensors.iter().map(|t| t.len() as u64).sum(), params.iter().map(|p| p.len() as u64).sum());
        Err(Error::LengthMismatch { what, expected, actual })
    }

    /// The parameter tensors in order: what the gradient set's segments are.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let name = self.layer_name(i);
            let t = |suffix: &str, shape: Vec<usize>| TensorSpec { layer: i, name: format!("{name}.{suffix}"), shape };
            match *l {
                LayerSpec::Linear { inputs, outputs } => {
                    out.push(t("weight", vec![outputs as usize, inputs as usize]));
                    out.push(t("bias", vec![outputs as usize]));
                }
                LayerSpec::BatchNorm { features } => {
                    out.push(t("weight", vec![features as usize]));
                    out.push(t("bias", vec![features as usize]));
                }
                LayerSpec::Rnn { inputs, hidden, .. } => {
                    out.push(t("weight_ih", vec![hidden as usize, inputs as usize]));
                    out.push(t("weight_hh", vec![hidden as usize, hidden as usize]));
                    out.push(t("bias", vec![hidden as usize]));
                }
                LayerSpec::Activation(_) => {}
            }
        }
        out
    }

    /// A readable name for layer `i`: `linear3`, `bn2`, `rnn`, `act1`.
    pub fn layer_name(&self, i: usize) -> String {
        let kind = |l: &LayerSpec| match l {
            LayerSpec::Linear { .. } => "linear",
            LayerSpec::Activation(_) => "act",
            LayerSpec::BatchNorm { .. } => "bn",
            LayerSpec::Rnn { .. } => "rnn",
        };
        let k = kind(&self.layers[i]);
        if k == "rnn" {
            return k.into();
        }
        let n = self.layers[..=i].iter().filter(|l| kind(l) == k).count();
        format!("{k}{n}")
    }

    /// The layers that own parameters, in order, with their names: the monitor's layers.
    pub fn param_layers(&self) -> Vec<(usize, String)> {
        let mut seen = Vec::new();
        for t in self.tensors() {
            if seen.last().map(|(l, _)| *l) != Some(t.layer) {
                seen.push((t.layer, self.layer_name(t.layer)));
            }
        }
        seen
    }

    /// Parameter values from `seed`, one Vec per tensor of [`ModelSpec::tensors`].
    pub fn init_params(&self, seed: u64) -> Result<Vec<Vec<f32>>> {
        self.validate()?;
        let mut rng = init::rng(seed);
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            // The activation a weight feeds (possibly through batch norm) sets its gain.
            let next = self.layers[i + 1..]
                .iter()
                .take_while(|l| !matches!(l, LayerSpec::Linear { .. }))
                .find_map(|l| match l {
                    LayerSpec::Activation(a) => Some(*a),
                    _ => None,
                });
            match *l {
                LayerSpec::Linear { inputs, outputs } => {
                    out.push(self.weight(&mut rng, &[outputs as usize, inputs as usize], next, false)?);
                    out.push(vec![0.0; outputs as usize]);
                }
                LayerSpec::BatchNorm { features } => {
                    out.push(vec![1.0; features as usize]);
                    out.push(vec![0.0; features as usize]);
                }
                LayerSpec::Rnn { inputs, hidden, activation, .. } => {
                    let (h, n) = (hidden as usize, inputs as usize);
                    out.push(self.weight(&mut rng, &[h, n], Some(activation), false)?);
                    out.push(self.weight(&mut rng, &[h, h], Some(activation), true)?);
                    out.push(vec![0.0; h]);
                }
                LayerSpec::Activation(_) => {}
            }
        }
        Ok(out)
    }

    /// One weight matrix. `recurrent`: an RNN's W_h, whose scale is the spectral radius
    /// itself, so orthogonal init there uses `gain` alone.
    fn weight(
        &self,
        rng: &mut rand::rngs::StdRng,
        shape: &[usize],
        next: Option<Activation>,
        recurrent: bool,
    ) -> Result<Vec<f32>> {
        let nonlinearity = match next {
            None | Some(Activation::Identity) => Nonlinearity::Linear,
            Some(Activation::Relu) | Some(Activation::Gelu { .. }) => Nonlinearity::Relu,
            Some(Activation::LeakyRelu(s)) => Nonlinearity::LeakyRelu(s),
            Some(Activation::Tanh) => Nonlinearity::Tanh,
            Some(Activation::Sigmoid) => Nonlinearity::Sigmoid,
        };
        match self.init {
            InitScheme::Kaiming => init::kaiming_normal(rng, shape, init::FanMode::FanIn, nonlinearity),
            InitScheme::Xavier => init::xavier_uniform(rng, shape, nonlinearity.gain()),
            InitScheme::Orthogonal { gain } if recurrent => init::orthogonal(rng, shape, gain as f64),
            InitScheme::Orthogonal { gain } => init::orthogonal(rng, shape, gain as f64 * nonlinearity.gain()),
            InitScheme::Identity { gain } if recurrent => {
                let n = shape[0];
                Ok((0..n * n).map(|i| if i % (n + 1) == 0 { gain } else { 0.0 }).collect())
            }
            InitScheme::Identity { .. } => init::normal(rng, shape.iter().product(), 0.0, 1e-3),
            InitScheme::Normal { std } => init::normal(rng, shape.iter().product(), 0.0, std as f64),
            InitScheme::Sparse { radius, nonzero } if recurrent => {
                init::sparse_spectral(rng, shape[0], nonzero as usize, radius as f64)
            }
            InitScheme::Sparse { .. } => init::normal(rng, shape.iter().product(), 0.0, 0.01),
        }
    }
}

/// What the model is trained against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LossKind {
    /// Softmax cross-entropy over the outputs, u32 class targets.
    CrossEntropy,
    /// Mean squared error against f32 targets.
    Mse,
}
