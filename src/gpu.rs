//! Finding an adapter and opening a device, or wrapping one the caller already owns.

use crate::error::{Error, Result};

/// A device and its queue, with what the adapter said about itself.
#[derive(Clone, Debug)]
pub struct Gpu {
    /// The device every kernel is built on.
    pub device: wgpu::Device,
    /// The device's queue.
    pub queue: wgpu::Queue,
    /// The adapter the device was opened on.
    pub info: wgpu::AdapterInfo,
}

/// What `gradguard devices` prints about one adapter.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AdapterSummary {
    /// Adapter name.
    pub name: String,
    /// wgpu backend (`Vulkan`, `Gl`, `Metal`, `Dx12`…).
    pub backend: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `Cpu` (e.g. lavapipe, llvmpipe)…
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Smallest subgroup size the adapter reports.
    pub subgroup_min_size: u32,
    /// Largest subgroup size the adapter reports.
    pub subgroup_max_size: u32,
    /// `max_storage_buffer_binding_size`: the largest chunk the kernels can bind at once.
    pub max_storage_binding_bytes: u64,
    /// `max_buffer_size`: the largest buffer.
    pub max_buffer_bytes: u64,
    /// Whether the adapter supports timestamp queries (used by benchmarks).
    pub timestamp_queries: bool,
}

/// The backends `WGPU_BACKEND` names (wgpu's comma list). Unset or empty: every backend.
/// A name wgpu does not know is an error that says so, not a missing driver.
fn backends_from_env() -> Result<wgpu::Backends> {
    let value = std::env::var("WGPU_BACKEND").unwrap_or_default();
    if value.trim().is_empty() {
        return Ok(wgpu::Backends::all());
    }
    let known = ["vulkan", "vk", "dx12", "d3d12", "metal", "mtl", "opengl", "gles", "gl", "webgpu", "noop"];
    match value.split(',').map(|b| b.trim().to_lowercase()).find(|b| !known.contains(&b.as_str())) {
        Some(unknown) => Err(Error::UnknownBackend { name: unknown, value }),
        None => Ok(wgpu::Backends::from_comma_list(&value)),
    }
}

fn instance() -> Result<wgpu::Instance> {
    // Reads the other WGPU_* instance variables; the backends are checked here.
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends_from_env()?;
    Ok(wgpu::Instance::new(desc))
}

/// Native backends first; GL last, as a fallback that works on most Linux machines.
fn preference(backend: wgpu::Backend) -> u8 {
    match backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    }
}

/// Discrete GPUs first, CPU implementations last.
fn type_preference(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu | wgpu::DeviceType::Other => 2,
        wgpu::DeviceType::Cpu => 3,
    }
}

impl Gpu {
    /// Opens the best adapter: `WGPU_ADAPTER_NAME` (a case-insensitive substring) if set,
    /// else the first native one (Vulkan, Metal, DX12), else GL, discrete GPUs before
    /// integrated ones before CPU implementations. `WGPU_BACKEND` restricts the backends
    /// searched. The device gets the adapter's own limits, so large bindings work, and the
    /// optional features gradguard can use (timestamps, subgroups).
    pub fn new() -> Result<Self> {
        Self::for_local_rank(0)
    }

    /// For one process of several on a machine (an MPI job's local rank): the adapters
    /// [`Gpu::new`] would choose among that share the best one's backend and type (the
    /// machine's GPUs), taken in turn, `local_rank` modulo their count. One GPU, or one
    /// CPU implementation, serves every rank.
    pub fn for_local_rank(local_rank: usize) -> Result<Self> {
        let instance = instance()?;
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        let wanted = std::env::var("WGPU_ADAPTER_NAME").ok().map(|s| s.to_lowercase());
        let mut candidates: Vec<_> = adapters
            .into_iter()
            .filter(|a| match &wanted {
                Some(name) => a.get_info().name.to_lowercase().contains(name),
                None => true,
            })
            .collect();
        let rank_of = |a: &wgpu::Adapter| (preference(a.get_info().backend), type_preference(a.get_info().device_type));
        candidates.sort_by_key(rank_of);
        let best: Vec<_> = match candidates.first().map(rank_of) {
            Some(top) => candidates.into_iter().filter(|a| rank_of(a) == top).collect(),
            None => Vec::new(),
        };
        let adapter = best.get(local_rank % best.len().max(1)).ok_or_else(|| Error::NoAdapter {
            detail: match (&wanted, std::env::var("WGPU_BACKEND")) {
                (Some(name), _) if !names.is_empty() => format!(
                    " whose name contains `{name}` (WGPU_ADAPTER_NAME); the adapters are: {}",
                    names.join(", ")
                ),
                (Some(name), _) => format!(" whose name contains `{name}` (WGPU_ADAPTER_NAME)"),
                (None, Ok(b)) if !b.trim().is_empty() => format!(" for WGPU_BACKEND={b}"),
                (None, _) => String::new(),
            },
        })?;
        Self::open(adapter)
    }

    fn open(adapter: &wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let optional = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::SUBGROUP
            | wgpu::Features::PIPELINE_CACHE;
        let desc = wgpu::DeviceDescriptor {
            label: Some("gradguard"),
            required_features: adapter.features() & optional,
            required_limits: adapter.limits(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|source| Error::RequestDevice { adapter: info.name.clone(), source })?;
        log::info!("using {} ({:?}, {:?})", info.name, info.backend, info.device_type);
        Ok(Self { device, queue, info })
    }

    /// Wraps a device the caller created. gradguard's kernels need no optional feature and
    /// stay within `wgpu::Limits::default()`; higher storage-binding limits let them bind
    /// larger chunks at once.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        Self { device, queue, info }
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Device { during: "waiting for the queue", message: e.to_string() })
    }
}

/// Every adapter the instance can see, described; `Error::UnknownBackend` for a
/// `WGPU_BACKEND` wgpu does not know.
pub fn list_adapters() -> Result<Vec<AdapterSummary>> {
    let adapters = pollster::block_on(instance()?.enumerate_adapters(wgpu::Backends::all()));
    Ok(adapters
        .iter()
        .map(|a| {
            let info = a.get_info();
            let limits = a.limits();
            AdapterSummary {
                name: info.name,
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
                subgroup_min_size: info.subgroup_min_size,
                subgroup_max_size: info.subgroup_max_size,
                max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
                max_buffer_bytes: limits.max_buffer_size,
                timestamp_queries: a.features().contains(wgpu::Features::TIMESTAMP_QUERY),
            }
        })
        .collect())
}
