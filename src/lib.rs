//! gradguard: WGSL compute kernels, driven through `wgpu`, that measure and tame exploding
//! gradients.
//!
//! The heart is a two-stage, deterministic, overflow-safe gradient norm ([`GradNorm`]) and
//! in-place clipping that reads the norm's result on the device ([`GradClip`]). Both take
//! your `&wgpu::Device`, record into your `&mut wgpu::CommandEncoder` and never submit or
//! wait; [`readback`] gets the stats to the host, blocking or deferred.
//!
//! ```no_run
//! use gradguard::{wgpu, ClipPolicy, GradClip, GradSet, NonFinitePolicy, NormKind, Gpu};
//! # fn main() -> gradguard::Result<()> {
//! let gpu = Gpu::new()?;
//! # let grads: wgpu::Buffer = unimplemented!();
//! let set = GradSet::packed(&grads, &[4096, 64, 4096, 64]); // four tensors, one buffer
//! let policy = ClipPolicy::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 };
//! let clip = GradClip::new(&gpu.device, &set, policy, NonFinitePolicy::SkipStep)?;
//! let mut encoder = gpu.device.create_command_encoder(&Default::default());
//! clip.encode(&mut encoder); // norm + clip, no CPU round trip
//! gpu.queue.submit([encoder.finish()]);
//! let stats = gradguard::readback::read_stats_blocking(&gpu.device, &gpu.queue, clip.stats_buffer())?;
//! println!("pre-clip norm {}", stats.norm);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub use wgpu;

pub mod adaptive;
#[cfg(feature = "train")]
pub mod bench;
pub mod clip;
pub mod collective;
pub mod cpu;
#[cfg(feature = "train")]
pub mod data;
pub mod error;
pub mod gpu;
#[cfg(feature = "train")]
pub mod init;
pub mod kernels;
#[cfg(feature = "train")]
pub mod lab;
pub mod monitor;
#[cfg(feature = "train")]
pub mod nn;
pub mod norm;
#[cfg(feature = "train")]
pub mod plot;
pub mod readback;
pub mod shaders;
pub mod sharded_norm;
#[cfg(feature = "train")]
pub mod train;

pub use adaptive::{AdaptiveClip, AdaptivePolicy, AutoClip, ZClip};
pub use clip::{ClipPolicy, GradClip};
pub use error::{Error, Result};
pub use gpu::Gpu;
pub use kernels::grad_set;
pub use grad_set::{GradSet, GradView};
pub use collective::{Collective, Solo};
pub use sharded_norm::NormPartials;
pub use norm::{GradNorm, NonFinitePolicy, NormConfig, NormKind, NormStats, SegmentNorms, TileLayout};
pub use kernels::norm::StatsHeader;

/// Buffer usages gradient buffers need for norm and clip.
pub const GRAD_USAGES: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE;

/// Features gradguard's core kernels need: none. Optional ones it uses when present:
/// timestamp queries (benchmarks).
pub fn required_features() -> wgpu::Features {
    wgpu::Features::empty()
}

/// Limits gradguard's core kernels need: the WebGPU defaults. Larger
/// `max_storage_buffer_binding_size` lets them bind bigger chunks at once.
pub fn required_limits() -> wgpu::Limits {
    wgpu::Limits::default()
}
