//! The registry of WGSL sources, embedded at build time. Embedders can read them here.
//!
//! `shaders/common.wgsl` (the overflow-safe accumulator and shared structs) is prepended
//! to the norm, clip and AGC modules, since WGSL has no includes.

/// One WGSL module and the entry points gradguard uses from it.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
    pub entry_points: &'static [&'static str],
}

pub const NORM: Shader = Shader {
    name: "norm",
    source: concat!(include_str!("../shaders/common.wgsl"), include_str!("../shaders/norm.wgsl")),
    entry_points: &["norm_tiles", "norm_segments", "norm_global"],
};

pub const CLIP: Shader = Shader {
    name: "clip",
    source: concat!(include_str!("../shaders/common.wgsl"), include_str!("../shaders/clip.wgsl")),
    entry_points: &["clip"],
};

pub const AGC: Shader = Shader {
    name: "agc",
    source: concat!(include_str!("../shaders/common.wgsl"), include_str!("../shaders/agc.wgsl")),
    entry_points: &["agc"],
};

pub const COPY: Shader = Shader {
    name: "copy",
    source: include_str!("../shaders/copy.wgsl"),
    entry_points: &["copy"],
};

pub const MATMUL: Shader = Shader {
    name: "matmul",
    source: include_str!("../shaders/matmul.wgsl"),
    entry_points: &["matmul_tiled", "matmul_direct", "matmul_naive", "bias_grad"],
};

pub const ACTIVATION: Shader = Shader {
    name: "activation",
    source: include_str!("../shaders/activation.wgsl"),
    entry_points: &["forward", "backward"],
};

pub const LOSS: Shader = Shader {
    name: "loss",
    source: include_str!("../shaders/loss.wgsl"),
    entry_points: &["cross_entropy", "mse", "mean"],
};

pub const OPTIMIZER: Shader = Shader {
    name: "optimizer",
    source: include_str!("../shaders/optimizer.wgsl"),
    entry_points: &["sgd", "adamw", "advance"],
};

pub const BATCHNORM: Shader = Shader {
    name: "batchnorm",
    source: include_str!("../shaders/batchnorm.wgsl"),
    entry_points: &["train", "eval", "backward", "running"],
};

/// Every shader the crate ships.
pub const ALL: &[Shader] = &[NORM, CLIP, AGC, COPY, MATMUL, ACTIVATION, LOSS, OPTIMIZER, BATCHNORM];
