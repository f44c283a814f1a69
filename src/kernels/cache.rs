//! One kernel cache per device: every shader module, bind-group layout and compute
//! pipeline gradguard makes is built once per device and shared by every `GradNorm`,
//! `GradClip`, `Trainer` and kernel on it, from any thread (in the manner of candle's
//! per-device kernel cache). Pipelines are keyed by (shader, entry point, override
//! constants, layouts); layouts by their entries.
//!
//! The registry holds a clone of each device it has seen, so a device lives as long as
//! its cache: [`KernelCache::release`] drops both when an embedder is done with a device.
//!
//! Where the device has `Features::PIPELINE_CACHE`, the compiled pipelines can also be
//! kept on disk between processes ([`KernelCache::use_disk_cache`], which the CLI calls):
//! a missing, stale, truncated or corrupt file is ignored, never an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
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

/// One compiled pipeline, as [`KernelCache::variants`] lists it.
#[derive(Clone, Debug)]
pub struct PipelineVariant {
    /// The shader's name in [`crate::shaders::ALL`].
    pub shader: &'static str,
    /// The entry point.
    pub entry: String,
    /// The override constants it was built with.
    pub constants: Vec<(String, f64)>,
    /// The entries of each bind-group layout, by group.
    pub layouts: Vec<Vec<wgpu::BindGroupLayoutEntry>>,
}

/// The shared objects of one device.
#[derive(Debug, Default)]
pub struct KernelCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    layouts: Mutex<HashMap<Vec<wgpu::BindGroupLayoutEntry>, wgpu::BindGroupLayout>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    compiled: Mutex<usize>,
    disk: Mutex<Option<DiskCache>>,
}

/// The driver's pipeline cache and the file it is kept in.
#[derive(Debug)]
struct DiskCache {
    cache: wgpu::PipelineCache,
    path: PathBuf,
}

/// The file's first bytes; then the data's length and FNV-1a hash (u64 little-endian each),
/// then the data `wgpu::PipelineCache::get_data` gave.
const MAGIC: &[u8; 8] = b"GGPIPE01";

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The data of a file [`KernelCache::save_disk_cache`] wrote, if it is whole.
fn read_cache_file(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    let (header, data) = bytes.split_at_checked(24)?;
    let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
    (&header[..8] == MAGIC && word(8) == data.len() as u64 && word(16) == fnv1a(data)).then(|| data.to_vec())
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

    /// Compiles this device's later pipelines through a driver pipeline cache kept in a
    /// file under `dir`, named by the adapter (`wgpu::util::pipeline_cache_key`), so that a
    /// second process starts warm. Returns false, changing nothing, where the device lacks
    /// `Features::PIPELINE_CACHE` or the backend keeps no such cache (GL). A file that is
    /// missing, truncated, corrupt or from another driver is ignored: the cache starts
    /// empty and [`KernelCache::save_disk_cache`] replaces the file.
    pub fn use_disk_cache(&self, device: &wgpu::Device, dir: &Path) -> bool {
        if !device.features().contains(wgpu::Features::PIPELINE_CACHE) {
            return false;
        }
        let Some(name) = wgpu::util::pipeline_cache_key(&device.adapter_info()) else { return false };
        let path = dir.join(name);
        let data = read_cache_file(&path);
        // SAFETY: the data is what `get_data` returned on an adapter of this cache key (the
        // file is named by it), checked whole by its length and hash; wgpu validates its
        // own header and, with `fallback`, starts empty on data it cannot use.
        let cache = unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("gradguard pipelines"),
                data: data.as_deref(),
                fallback: true,
            })
        };
        *lock(&self.disk) = Some(DiskCache { cache, path });
        true
    }

    /// Writes the driver's pipeline cache to its file (a temporary file, then a rename, so
    /// a crash leaves the old file or none). Nothing to do without
    /// [`KernelCache::use_disk_cache`].
    pub fn save_disk_cache(&self) -> std::io::Result<()> {
        let disk = lock(&self.disk);
        let Some(DiskCache { cache, path }) = disk.as_ref() else { return Ok(()) };
        let Some(data) = cache.get_data() else { return Ok(()) };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = MAGIC.to_vec();
        file.extend((data.len() as u64).to_le_bytes());
        file.extend(fnv1a(&data).to_le_bytes());
        file.extend(&data);
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, &file).and_then(|()| std::fs::rename(&temp, path)).inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
    }

    /// Compute pipelines compiled so far on this device: each (shader, entry point,
    /// constants, layouts) once, however many objects use it.
    pub fn compiled_pipelines(&self) -> usize {
        *lock(&self.compiled)
    }

    /// Every pipeline compiled so far on this device, as what it was built from: for tests
    /// that check each variant against its shader (naga validation with the constants
    /// applied, the layouts against the entry point's bindings).
    pub fn variants(&self) -> Vec<PipelineVariant> {
        let layouts = lock(&self.layouts);
        let entries_of = |layout: &wgpu::BindGroupLayout| {
            layouts.iter().find(|(_, l)| *l == layout).map(|(entries, _)| entries.clone()).unwrap_or_default()
        };
        lock(&self.pipelines)
            .keys()
            .map(|k| PipelineVariant {
                shader: k.shader,
                entry: k.entry.clone(),
                constants: k.constants.iter().map(|(name, bits)| (name.clone(), f64::from_bits(*bits))).collect(),
                layouts: k.layouts.iter().map(entries_of).collect(),
            })
            .collect()
    }

    /// The bind-group layout with `entries` (the label of the first request names it).
    pub fn layout(&self, device: &wgpu::Device, label: &str, entries: &[wgpu::BindGroupLayoutEntry]) -> wgpu::BindGroupLayout {
        lock(&self.layouts)
            .entry(entries.to_vec())
            .or_insert_with(|| device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries }))
            .clone()
    }

    /// The pipeline for `entry` of `shader` with `layouts` and override `constants`, built
    /// by `build(module, driver cache)` on a miss. Two threads missing at once may both
    /// build; the first insert wins and the count stays exact.
    pub(crate) fn pipeline(
        &self,
        shader: &Shader,
        entry: &str,
        layouts: &[&wgpu::BindGroupLayout],
        constants: &[(&str, f64)],
        module: impl FnOnce() -> Result<wgpu::ShaderModule>,
        build: impl FnOnce(&wgpu::ShaderModule, Option<&wgpu::PipelineCache>) -> Result<wgpu::ComputePipeline>,
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
        let driver_cache = lock(&self.disk).as_ref().map(|d| d.cache.clone());
        let built = build(&module, driver_cache.as_ref())?;
        let mut pipelines = lock(&self.pipelines);
        if let Some(p) = pipelines.get(&key) {
            return Ok(p.clone());
        }
        *lock(&self.compiled) += 1;
        pipelines.insert(key, built.clone());
        Ok(built)
    }
}
