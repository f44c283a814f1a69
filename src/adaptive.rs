//! Adaptive clipping on the device: ZClip and AutoClip thresholds that follow the history
//! of global norms, computed by a kernel right after the norm, so step k is clipped by the
//! norms up to step k with no host round trip and no lag.

use crate::error::{Error, Result};
use crate::kernels::adaptive::{AdaptiveKernel, AdaptiveMethod, AdaptiveParams, STATE_HEADER_WORDS};
use crate::kernels::{bind_group, buffer_init};
use crate::norm::GradNorm;

/// ZClip (Kumar et al. 2025; reference `bluorion-com/ZClip`, mode `zscore`, clip option
/// `adaptive_scaling`, clip factor 1). The defaults are the reference's.
///
/// For `warmup` steps only `max_norm` clips, and the norms are collected; then the mean and
/// population variance of those norms start an EMA. A norm `g` whose z-score
/// `(g - mean) / (std + 1e-6)` exceeds `z` is clipped to `mean + z²·std / z_g`, never above
/// `max_norm`; that threshold, not `g`, is what the EMA sees. Otherwise only `max_norm`
/// clips. Where we differ: a non-finite norm (or one from non-finite elements) leaves the
/// statistics untouched, where the reference lets one NaN disable it for good; the
/// coefficient is `clip_grad_norm_`'s `min(1, limit / (g + 1e-6))`, and the state is f32.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ZClip {
    /// EMA factor in (0, 1) (0.97).
    pub alpha: f32,
    /// The z-score above which a norm is a spike (> 0; 2.5).
    pub z: f32,
    /// Norms collected before the EMA starts (≥ 1; 25).
    pub warmup: u32,
    /// The fixed clip that always applies (1.0; `None`: none).
    pub max_norm: Option<f32>,
}

impl Default for ZClip {
    fn default() -> Self {
        Self { alpha: 0.97, z: 2.5, warmup: 25, max_norm: Some(1.0) }
    }
}

/// AutoClip (Seetharaman et al. 2020): clip at the `percentile`-th percentile (numpy's
/// linear interpolation) of every global norm so far, this step's included, as the paper's
/// algorithm. Where we differ: once `capacity` norms have been seen the history becomes a
/// sliding window of the last `capacity` (choose at least the run's steps to have the
/// paper's); non-finite norms never enter it; an optional `max_norm` caps the threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AutoClip {
    /// In [0, 100] (the paper recommends 10).
    pub percentile: f32,
    /// Norms kept (≥ 1).
    pub capacity: u32,
    /// A fixed clip that applies as well (`None`: none).
    pub max_norm: Option<f32>,
}

/// An adaptive threshold for global L2 norm clipping.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AdaptivePolicy {
    /// The z-score of an EMA.
    ZClip(ZClip),
    /// A percentile of the history.
    AutoClip(AutoClip),
}

/// The warm-up ZClip may ask for: its norms are kept in the state buffer.
pub const MAX_ZCLIP_WARMUP: u32 = 1 << 16;

impl AdaptivePolicy {
    /// `Err(Error::OutOfRange)` naming the field out of range.
    pub fn validate(&self) -> Result<()> {
        let range = |what, value: f64, ok: bool, expected| if ok { Ok(()) } else { Err(Error::OutOfRange { what, value, expected }) };
        let positive = |what, v: f32| range(what, v as f64, v.is_finite() && v > 0.0, "finite and > 0");
        match self {
            Self::ZClip(c) => {
                range("ZClip alpha", c.alpha as f64, c.alpha > 0.0 && c.alpha < 1.0, "in (0, 1)")?;
                positive("ZClip z", c.z)?;
                let warmup = (1..=MAX_ZCLIP_WARMUP).contains(&c.warmup);
                range("ZClip warmup", c.warmup as f64, warmup, "in 1..=65536 steps")?;
            }
            Self::AutoClip(c) => {
                range("AutoClip percentile", c.percentile as f64, (0.0..=100.0).contains(&c.percentile), "in [0, 100]")?;
                range("AutoClip capacity", c.capacity as f64, c.capacity > 0, "≥ 1 norm")?;
            }
        }
        self.max_norm().map_or(Ok(()), |m| positive("adaptive clip max_norm", m))
    }

    /// The fixed cap, if any.
    pub fn max_norm(&self) -> Option<f32> {
        match self {
            Self::ZClip(c) => c.max_norm,
            Self::AutoClip(c) => c.max_norm,
        }
    }

    /// Words of the state buffer: a header, then ZClip's warm-up norms or AutoClip's
    /// sorted window and its ring.
    pub fn state_words(&self) -> u64 {
        STATE_HEADER_WORDS
            + match self {
                Self::ZClip(c) => c.warmup as u64,
                Self::AutoClip(c) => 2 * c.capacity as u64,
            }
    }
}

/// The device side of an [`AdaptivePolicy`] for one [`GradNorm`]: record
/// [`AdaptiveClip::encode_in_pass`] after the norm and before whatever reads its clip
/// coefficient (the clip kernel, an optimizer scaling on read).
#[derive(Debug)]
pub struct AdaptiveClip {
    kernel: AdaptiveKernel,
    group: wgpu::BindGroup,
    state: wgpu::Buffer,
}

impl AdaptiveClip {
    /// Binds the state to `norm`'s stats. The norm must measure L2 (ZClip and AutoClip
    /// follow the L2 norm); its eps and non-finite policy apply.
    pub fn new(device: &wgpu::Device, policy: &AdaptivePolicy, norm: &GradNorm) -> Result<Self> {
        policy.validate()?;
        if norm.kind() != crate::NormKind::L2 {
            let other = format!("a {:?} norm", norm.kind());
            return Err(Error::Incompatible { setting: "adaptive clipping", other, why: "ZClip and AutoClip follow the L2 norm" });
        }
        let (zclip, autoclip) = match policy {
            AdaptivePolicy::ZClip(c) => (*c, None),
            AdaptivePolicy::AutoClip(c) => (ZClip::default(), Some(*c)),
        };
        let method = if autoclip.is_some() { AdaptiveMethod::AutoClip } else { AdaptiveMethod::ZClip };
        let params = AdaptiveParams {
            method: method as u32,
            policy: norm.nonfinite().code(),
            eps: norm.eps(),
            cap: policy.max_norm().unwrap_or(f32::INFINITY),
            alpha: zclip.alpha,
            z: zclip.z,
            warmup: zclip.warmup,
            percentile: autoclip.map_or(0.0, |c| c.percentile),
            capacity: autoclip.map_or(0, |c| c.capacity),
            z_eps: 1e-6,
            pad: [0; 2],
        };
        let kernel = AdaptiveKernel::new(device, method)?;
        let config = buffer_init(device, "gradguard adaptive clip config", bytemuck::bytes_of(&params), wgpu::BufferUsages::STORAGE)?;
        let state = buffer_init(
            device,
            "gradguard adaptive clip state",
            &vec![0u8; 4 * policy.state_words() as usize],
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        )?;
        let group = bind_group(
            device,
            &kernel.layout,
            "adaptive clip",
            vec![norm.stats_buffer().as_entire_binding(), config.as_entire_binding(), state.as_entire_binding()],
        )?;
        Ok(Self { kernel, group, state })
    }

    /// Records the update (one dispatch of one workgroup).
    pub fn encode_in_pass(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.kernel.encode(pass, &self.group);
    }

    /// The state the threshold is folded into (STORAGE | COPY_SRC | COPY_DST): save it to
    /// resume a run; write zeros to start over.
    pub fn state_buffer(&self) -> &wgpu::Buffer {
        &self.state
    }
}
