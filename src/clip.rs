//! `GradClip`: the norm, then in-place clipping that reads the norm's result on the device.

use crate::adaptive::{AdaptiveClip, AdaptivePolicy};
use crate::error::Result;
use crate::grad_set::{DataViews, GradSet, TilePlan};
use crate::kernels::agc::AgcPlan;
use crate::kernels::clip::{ClipKernel, ClipMode};
use crate::kernels::placeholder;
use crate::error::check_positive;
use crate::norm::{bind_windows, GradNorm, NonFinitePolicy, NormConfig, NormKind};

/// optax `adaptive_grad_clip`'s default floor of the parameter norm.
pub const AGC_EPS: f32 = 1e-3;

/// How gradients are clipped. Every policy reports the pre-clip norms in `NormStats`.
#[derive(Clone, Debug)]
pub enum ClipPolicy {
    /// Only measure (and apply the non-finite policy).
    None,
    /// `torch.nn.utils.clip_grad_norm_`: scale all segments by
    /// `min(1, max_norm / (total_norm + 1e-6))`.
    GlobalNorm {
        /// Norm above which gradients are scaled down (finite, > 0).
        max_norm: f32,
        /// The norm measured.
        kind: NormKind,
    },
    /// `torch.nn.utils.clip_grad_value_`: clamp each element to ±`clip_value`.
    Value {
        /// Largest magnitude kept (finite, > 0).
        clip_value: f32,
    },
    /// Keras `clipnorm`: each segment scaled by its own `min(1, max_norm / (norm + 1e-6))`.
    PerSegmentNorm {
        /// Norm above which a segment is scaled down (finite, > 0).
        max_norm: f32,
        /// The norm measured.
        kind: NormKind,
    },
    /// optax `adaptive_grad_clip`: unit-wise against the parameter norm. `params` mirrors
    /// the gradient set; `unit_lens[i]` (which must divide segment i's length) is the
    /// length of one unit of segment i, and a unit is always a contiguous run of elements.
    ///
    /// The unit axis, against optax: optax's `unitwise_norm` reduces a 2-D parameter over
    /// axis 0 of JAX's `[in, out]` kernel layout, one norm per output unit. A PyTorch-layout
    /// weight `[out, in]`, row-major, holds each output unit as a contiguous row: there
    /// `unit_len = in` gives optax's result. A weight stored `[in, out]` row-major (JAX's
    /// layout) has its output units strided: give it transposed, since rows of it would be
    /// input units, another function (a relative error of 2.0 against optax on random data).
    /// A bias or any 1-D parameter is one unit (`unit_len = len`), as in optax.
    Agc {
        /// Largest ratio of a unit's gradient norm to `max(its parameter norm, eps)`
        /// (finite, > 0; optax's `clipping`).
        clipping: f32,
        /// Floor of the parameter norm (finite, ≥ 0; optax's default 1e-3).
        eps: f32,
        /// The parameters, segment for segment the shape of the gradients, in other
        /// buffers than the gradients (they are read while the gradients are written).
        params: GradSet,
        /// One unit length per segment.
        unit_lens: Vec<u64>,
    },
    /// Global L2 norm clipping whose threshold a device kernel folds from the history of
    /// norms ([`AdaptivePolicy`]: ZClip, AutoClip).
    Adaptive(AdaptivePolicy),
}

impl ClipPolicy {
    fn norm_kind(&self) -> NormKind {
        match self {
            Self::GlobalNorm { kind, .. } | Self::PerSegmentNorm { kind, .. } => *kind,
            _ => NormKind::L2,
        }
    }

    fn max_norm(&self) -> Option<f32> {
        match self {
            Self::GlobalNorm { max_norm, .. } | Self::PerSegmentNorm { max_norm, .. } => Some(*max_norm),
            // The norm's coefficient is computed (with the cap) for the kernel to rewrite.
            Self::Adaptive(p) => Some(p.max_norm().unwrap_or(f32::MAX)),
            _ => None,
        }
    }
}

enum Stage {
    /// Nothing to write (measure only, or non-finite elements left as they are).
    None,
    /// The clip strides a workgroup through each tile of its own plan.
    Tiles { kernel: ClipKernel, plan: TilePlan, groups: Vec<wgpu::BindGroup> },
    Agc(AgcPlan),
}

/// Norm and clip for one gradient-set layout, built once; [`GradClip::encode`] records
/// both into the caller's encoder with no CPU round trip in between.
pub struct GradClip {
    norm: GradNorm,
    adaptive: Option<AdaptiveClip>,
    stage: Stage,
}

impl std::fmt::Debug for GradClip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradClip").field("norm", &self.norm).finish_non_exhaustive()
    }
}

impl GradClip {
    /// Gradient buffers need `STORAGE` usage (add `COPY_SRC`/`COPY_DST` for your own use).
    pub fn new(
        device: &wgpu::Device,
        grads: &GradSet,
        policy: ClipPolicy,
        nonfinite: NonFinitePolicy,
    ) -> Result<Self> {
        let config = NormConfig { kind: policy.norm_kind(), max_norm: policy.max_norm(), nonfinite, ..Default::default() };
        Self::with_config(device, grads, policy, config)
    }

    /// As [`GradClip::new`], with the norm's tiling, chunking and workgroup size spelled
    /// out. The policy decides the norm kind and `max_norm`: those fields of `config` are
    /// replaced by the policy's.
    pub fn with_config(device: &wgpu::Device, grads: &GradSet, policy: ClipPolicy, config: NormConfig) -> Result<Self> {
        let config = NormConfig { kind: policy.norm_kind(), max_norm: policy.max_norm(), ..config };
        let norm = GradNorm::new(device, grads, &config)?;
        let adaptive = match &policy {
            ClipPolicy::Adaptive(p) => Some(AdaptiveClip::new(device, p, &norm)?),
            _ => None,
        };
        let zero = config.nonfinite == NonFinitePolicy::ZeroNonFinite;
        let mode = match &policy {
            ClipPolicy::None if zero => ClipMode::GlobalScale,
            ClipPolicy::None => return Ok(Self { norm, adaptive, stage: Stage::None }),
            ClipPolicy::GlobalNorm { .. } | ClipPolicy::Adaptive(_) => ClipMode::GlobalScale,
            ClipPolicy::PerSegmentNorm { .. } => ClipMode::SegmentScale,
            ClipPolicy::Value { clip_value } => {
                check_positive("clip_value", *clip_value)?;
                ClipMode::Value(*clip_value)
            }
            ClipPolicy::Agc { clipping, eps, params, unit_lens } => {
                let agc = AgcPlan::new(
                    device,
                    grads,
                    params,
                    unit_lens,
                    *clipping,
                    *eps,
                    zero,
                    norm.stats_buffer(),
                    norm.chunk_bytes(),
                    norm.workgroup_size(),
                )?;
                return Ok(Self { norm, adaptive, stage: Stage::Agc(agc) });
            }
        };
        let kernel = ClipKernel::new(device, mode, zero)?;
        let (plan, tiles) = norm.workgroup_plan(device, grads)?;
        let (vec4_placeholder, scalar_placeholder) = (placeholder(device), placeholder(device));
        let data = DataViews::Disjoint(&vec4_placeholder, &scalar_placeholder);
        let groups = bind_windows(device, &plan, tiles.as_ref(), data, &kernel.layout, "clip", || {
            vec![norm.stats_buffer().as_entire_binding(), norm.segments.as_entire_binding()]
        })?;
        let stage = Stage::Tiles { kernel, plan, groups };
        Ok(Self { norm, adaptive, stage })
    }

    /// Records norm then clip into `encoder`. Never submits, never waits.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("gradguard clip"),
            timestamp_writes: None,
        });
        self.encode_in_pass(&mut pass);
    }

    /// Records norm (and the adaptive threshold) then clip into a compute pass the caller
    /// already has open.
    pub fn encode_in_pass(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.norm.encode_in_pass(pass);
        if let Some(a) = &self.adaptive {
            a.encode_in_pass(pass);
        }
        self.encode_clip_only(pass);
    }

    /// Records only the clip stage, using whatever the last norm wrote (for benchmarks).
    pub fn encode_clip_only(&self, pass: &mut wgpu::ComputePass<'_>) {
        match &self.stage {
            Stage::None => {}
            Stage::Tiles { kernel, plan, groups } => {
                for (w, group) in plan.windows.iter().zip(groups) {
                    kernel.encode(pass, group, w.tile_count);
                }
            }
            Stage::Agc(plan) => plan.encode(pass),
        }
    }

    /// Compute dispatches one [`GradClip::encode`] records: the norm's, the adaptive
    /// threshold's, then the clip stage's (one per bound window, one per AGC group, none when nothing is written).
    pub fn dispatch_count(&self) -> usize {
        let clip = match &self.stage {
            Stage::None => 0,
            Stage::Tiles { plan, groups, .. } => plan.windows.len().min(groups.len()),
            Stage::Agc(plan) => plan.dispatch_count(),
        };
        self.norm.dispatch_count() + self.adaptive.is_some() as usize + clip
    }

    /// The adaptive threshold's device state, for an [`ClipPolicy::Adaptive`] clip.
    pub fn adaptive(&self) -> Option<&AdaptiveClip> {
        self.adaptive.as_ref()
    }

    /// The norm stage this clip runs first; its stats buffer is [`GradClip::stats_buffer`].
    pub fn norm(&self) -> &GradNorm {
        &self.norm
    }

    /// The norm stage, mutably: e.g. [`GradNorm::set_max_norm`] for an adaptive threshold.
    pub fn norm_mut(&mut self) -> &mut GradNorm {
        &mut self.norm
    }

    /// The device buffer holding `NormStats`; see [`GradNorm::stats_buffer`].
    pub fn stats_buffer(&self) -> &wgpu::Buffer {
        self.norm.stats_buffer()
    }
}
