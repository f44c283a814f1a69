//! The registry of WGSL sources, embedded at build time. Embedders can read them here.
//!
//! WGSL has no includes: `shaders/common.wgsl` (the overflow-safe accumulator and shared
//! structs) is prepended to the norm, clip, AGC and adaptive modules, `shaders/act.wgsl` (the
//! activation functions) to the activation, matmul and rnn modules.

/// One WGSL module and the entry points gradguard uses from it.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    /// Module name; also the shader module's label.
    pub name: &'static str,
    /// Complete WGSL source, `common.wgsl` already prepended where needed.
    pub source: &'static str,
    /// The compute entry points gradguard calls.
    pub entry_points: &'static [&'static str],
}

/// The two-stage gradient norm: per-tile partials, per-segment and global reductions.
pub const NORM: Shader = Shader {
    name: "norm",
    source: concat!(include_str!("../shaders/common.wgsl"), include_str!("../shaders/norm.wgsl")),
    entry_points: &["norm_tiles", "norm_segments", "norm_global"],
};

/// In-place clipping (global norm, per-segment norm, value) driven by the norm's stats.
pub const CLIP: Shader = Shader {
    name: "clip",
    source: concat!(include_str!("../shaders/common.wgsl"), include_str!("../shaders/clip.wgsl")),
    entry_points: &["clip"],
};

/// Adaptive gradient clipping, unit-wise against the parameter norm.
pub const AGC: Shader = Shader {
    name: "agc",
    source: concat!(include_str!("../shaders/common.wgsl"), include_str!("../shaders/agc.wgsl")),
    entry_points: &["agc"],
};

/// ZClip and AutoClip thresholds folded on the device from each step's norm.
pub const ADAPTIVE: Shader = Shader {
    name: "adaptive",
    source: concat!(include_str!("../shaders/common.wgsl"), include_str!("../shaders/adaptive.wgsl")),
    entry_points: &["zclip", "autoclip"],
};

/// A plain f32 copy: the bandwidth baseline of the benchmarks.
pub const COPY: Shader = Shader {
    name: "copy",
    source: include_str!("../shaders/copy.wgsl"),
    entry_points: &["copy"],
};

/// Tiled, direct and naive GEMM with fused epilogues (bias, activation, activation
/// derivative, bias gradient).
pub const MATMUL: Shader = Shader {
    name: "matmul",
    source: concat!(include_str!("../shaders/act.wgsl"), include_str!("../shaders/matmul.wgsl")),
    entry_points: &["matmul_tiled", "matmul_direct", "matmul_naive"],
};

/// Element-wise activations, forward and backward.
pub const ACTIVATION: Shader = Shader {
    name: "activation",
    source: concat!(include_str!("../shaders/act.wgsl"), include_str!("../shaders/activation.wgsl")),
    entry_points: &["forward", "backward", "forward_in_place", "backward_in_place"],
};

/// Softmax cross-entropy and MSE (loss and gradient), then a fixed-order mean.
pub const LOSS: Shader = Shader {
    name: "loss",
    source: include_str!("../shaders/loss.wgsl"),
    entry_points: &["cross_entropy", "mse", "mean"],
};

/// SGD and AdamW over many tensors in one dispatch, scaling gradients by the norm's clip
/// coefficients as they are read and obeying its skip flag; the step counter.
pub const OPTIMIZER: Shader = Shader {
    name: "optimizer",
    source: include_str!("../shaders/optimizer.wgsl"),
    entry_points: &["sgd", "adamw", "advance"],
};

/// BatchNorm1d: training and evaluation forward, backward, deferred running-stat update.
pub const BATCHNORM: Shader = Shader {
    name: "batchnorm",
    source: include_str!("../shaders/batchnorm.wgsl"),
    entry_points: &["train", "eval", "backward", "running"],
};

/// A vanilla RNN's recurrence over the whole sequence, forward and backward.
pub const RNN: Shader = Shader {
    name: "rnn",
    source: concat!(include_str!("../shaders/act.wgsl"), include_str!("../shaders/rnn.wgsl")),
    entry_points: &["rnn_forward", "rnn_backward"],
};

/// The files prepended to other modules rather than compiled alone (WGSL has no includes).
pub const PRELUDES: &[&str] = &["common", "act"];

/// Every shader the crate ships.
pub const ALL: &[Shader] = &[NORM, CLIP, AGC, ADAPTIVE, COPY, MATMUL, ACTIVATION, LOSS, OPTIMIZER, BATCHNORM, RNN];
