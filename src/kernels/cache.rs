//! One kernel cache per device: every shader module, bind-group layout and compute
//! pipeline gradguard makes is built once per device and shared by every `GradNorm`,
//! `GradClip`, `Trainer` and kernel on it, from any thread (in the manner of candle's
//! per-device kernel cache). Pipelines are keyed by (shader, entry point, override
//! constants, layouts); layouts by their entries.
//!
//! The registry holds a clone of each device it has seen, so a device lives as long as
//! its cache: [`KernelCache::release`] drops both when an embedder is done with a device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::error::Result;
use crate::shaders::Shader;

/// What a pipeline is built from, as the cache's key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
    entry: String,
    /// (name, value bits): f64 has no `Eq`, its bits do.
    constants: Vec<(String, u64)>,
    layouts: Vec<wgpu::BindGroupLayout>,
}

/// The shared objects of one device.
#[derive(Debug, Default)]
pub struct KernelCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    layouts: Mutex<HashMap<Vec<wgpu::BindGroupLayoutEntry>, wgpu::BindGroupLayout>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    compiled: Mutex<usize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these maps half-written: inserts are single calls.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn registry() -> &'static Mutex<HashMap<wgpu::Device, Arc<KernelCache>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<wgpu::Device, Arc<KernelCache>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl KernelCache {
    /// The cache of `device`, made on first use.
    pub fn of(device: &wgpu::Device) -> Arc<Self> {
        lock(registry()).entry(device.clone()).or_default().clone()
    }

    /// Forgets `device`'s cache (and the registry's handle on the device). Objects already
    /// built keep working; the next kernel made on the device compiles afresh.
    pub fn release(device: &wgpu::Device) {
        lock(registry()).remove(device);
    }

    /// Compute pipelines compiled so far on this device: each (shader, entry point,
    /// constants, layouts) once, however many objects use it.
    pub fn compiled_pipelines(&self) -> usize {
        *lock(&self.compiled)
    }

    /// The bind-group layout with `entries` (the label of the first request names it).
    pub fn layout(&self, device: &wgpu::Device, label: &str, entries: &[wgpu::BindGroupLayoutEntry]) -> wgpu::BindGroupLayout {
        lock(&self.layouts)
            .entry(entries.to_vec())
            .or_insert_with(|| device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries }))
            .clone()
    }

    /// The pipeline for `entry` of `shader` with `layouts` and override `constants`, built
    /// by `build(module)` on a miss. Two threads missing at once may both build; the first
    /// insert wins and the count stays exact.
    pub(crate) fn pipeline(
        &self,
        shader: &Shader,
        entry: &str,
        layouts: &[&wgpu::BindGroupLayout],
        constants: &[(&str, f64)],
        module: impl FnOnce() -> Result<wgpu::ShaderModule>,
        build: impl FnOnce(&wgpu::ShaderModule) -> Result<wgpu::ComputePipeline>,
    ) -> Result<wgpu::ComputePipeline> {
        let key = PipelineKey {
            shader: shader.name,
            entry: entry.to_owned(),
            constants: constants.iter().map(|(n, v)| ((*n).to_owned(), v.to_bits())).collect(),
            layouts: layouts.iter().map(|l| (*l).clone()).collect(),
        };
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return Ok(p.clone());
        }
        let module = {
            let cached = lock(&self.modules).get(shader.name).cloned();
            match cached {
                Some(m) => m,
                None => {
                    let m = module()?;
                    lock(&self.modules).entry(shader.name).or_insert(m).clone()
                }
            }
        };
        let built = build(&module)?;
        let mut pipelines = lock(&self.pipelines);
        if let Some(p) = pipelines.get(&key) {
            return Ok(p.clone());
        }
        *lock(&self.compiled) += 1;
        pipelines.insert(key, built.clone());
        Ok(built)
    }
}
