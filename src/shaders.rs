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

/// Every shader the crate ships.
pub const ALL: &[Shader] = &[NORM, CLIP, AGC, COPY];
