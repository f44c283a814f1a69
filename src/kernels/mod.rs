//! The ground floor: one module per shader, with explicit bind-group layouts, pipelines,
//! and `encode_*` functions that record into the caller's encoder, and the operands they take
//! (`grad_set`, `View`). Nothing here submits or waits, and nothing here imports from above
//! it: only `error` and `shaders`.
//!
//! # How a kernel takes its parameters
//!
//! One rule, by what a value is and who changes it:
//!
//! 1. **Override constants** choose the code: workgroup sizes, transposes and vector loads
//!    (matmul, rnn), a mode or policy branch fixed for a binding's life (clip, optimizer,
//!    batch norm's deferred running stats). One pipeline per combination, compiled once per
//!    device by the [`KernelCache`]; `tests/pipeline_variants.rs` validates every one used.
//! 2. **A uniform block**, written when the binding is made, holds the sizes and counts that
//!    steer loops and branches around barriers (norm, batch norm, loss, and alike activation
//!    and optimizer): WGSL's uniformity analysis accepts a barrier only under control flow
//!    that depends on uniform values, which a uniform buffer's are and a storage buffer's are
//!    not.
//! 3. **Read-only storage** holds the shape of a kernel whose shapes differ from dispatch to
//!    dispatch and steer loops without a barrier under them (matmul's `Shape`): lavapipe
//!    (Mesa 22.3) compiled a new shader variant per dispatch for such uniform values, leaking
//!    ~650 KB a dispatch (`shaders/matmul.wgsl`, BENCHMARKS.md). Kernels of rule 2 are bound
//!    once with fixed values and have not shown it.
//! 4. **Storage words** hold what changes between steps without a new pipeline, or what the
//!    device itself computes: the learning rate ([`optimizer::lr_buffer`]), the clip
//!    coefficient, skip flag and halt word of the norm's stats ([`norm::StatsHeader`]), an
//!    adaptive clip's threshold and state, a norm's `max_norm` (a uniform rewritten by
//!    `GradNorm::set_max_norm`).
//!
//! Known exceptions: the value clip's `clip_value` and AGC's `clipping` and `eps` are
//! override constants, so a new value means a new pipeline (the cache keeps one per value).

pub mod activation;
pub mod adaptive;
pub mod agc;
pub mod batchnorm;
pub mod cache;
pub mod clip;
pub mod copy;
pub mod grad_set;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optimizer;
pub mod rnn;


use crate::error::{Error, Result};
use crate::shaders::Shader;
pub use cache::KernelCache;

/// Invocations of a workgroup that streams a contiguous block, its invocations `WG` vec4s
/// apart (the clip, the copy). On a GPU 256, which coalesces. On a CPU adapter (lavapipe,
/// llvmpipe) 8: one SIMD group of 8 lanes walking its block contiguously. With 256 there,
/// 32 groups each striding 4 KiB ran the clip over one 64 MiB segment at a third of this
/// speed, and 16 at 0.6 of it (BENCHMARKS.md, on an AMD EPYC).
pub fn streaming_workgroup_size(device: &wgpu::Device) -> u32 {
    match device.adapter_info().device_type {
        wgpu::DeviceType::Cpu => 8,
        _ => 256,
    }
}

/// Workgroups per dimension a dispatch may use everywhere (`Limits::default()`).
pub const MAX_GROUPS_PER_DIM: u32 = 65_535;

/// A 2-D grid covering `groups` workgroups; shaders flatten it as `y * num_x + x` and
/// ignore the overshoot.
pub fn grid(groups: u32) -> (u32, u32) {
    if groups <= MAX_GROUPS_PER_DIM {
        (groups.max(1), 1)
    } else {
        (MAX_GROUPS_PER_DIM, groups.div_ceil(MAX_GROUPS_PER_DIM))
    }
}

pub(crate) fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

pub(crate) fn uniform_entry(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// The device's bind-group layout with `entries`, from its [`KernelCache`].
pub(crate) fn layout(
    device: &wgpu::Device,
    label: &str,
    entries: &[wgpu::BindGroupLayoutEntry],
) -> wgpu::BindGroupLayout {
    KernelCache::of(device).layout(device, label, entries)
}

/// Runs `f` inside a validation and out-of-memory error scope and turns what the device
/// reports into a typed error instead of wgpu's default panic.
pub(crate) fn scoped<T>(device: &wgpu::Device, during: &'static str, f: impl FnOnce() -> T) -> Result<T> {
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = f();
    let validation = pollster::block_on(validation.pop());
    let oom = pollster::block_on(oom.pop());
    match validation.or(oom) {
        None => Ok(value),
        Some(e) => Err(Error::Device { during, message: e.to_string() }),
    }
}

/// A compute pipeline for `entry` of `shader`, with an explicit layout and the given
/// pipeline-overridable constants, compiled once per device ([`KernelCache`]).
pub(crate) fn pipeline(
    device: &wgpu::Device,
    shader: &Shader,
    entry: &str,
    layouts: &[&wgpu::BindGroupLayout],
    constants: &[(&str, f64)],
) -> Result<wgpu::ComputePipeline> {
    let module = || {
        scoped(device, "shader compilation", || {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.name),
                source: wgpu::ShaderSource::Wgsl(shader.source.into()),
            })
        })
    };
    let build = |module: &wgpu::ShaderModule, cache: Option<&wgpu::PipelineCache>| {
        scoped(device, "pipeline creation", || {
            let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry),
                bind_group_layouts: &layouts.iter().map(|l| Some(*l)).collect::<Vec<_>>(),
                immediate_size: 0,
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&layout),
                module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions { constants, zero_initialize_workgroup_memory: false },
                cache,
            })
        })
    };
    KernelCache::of(device).pipeline(shader, entry, layouts, constants, module, build)
}

/// A binding of `size` bytes of `buffer` from `offset`.
pub(crate) fn range(buffer: &wgpu::Buffer, offset: u64, size: u64) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset,
        size: Some(wgpu::BufferSize::new(size).expect("bindings are never empty")),
    })
}

/// Where a kernel operand starts: a buffer and a byte offset into it, a multiple of
/// [`VIEW_ALIGN`] (a packed arena's tensors start there; see `nn::ParamArena`).
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// The buffer (STORAGE usage).
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of the operand's first element.
    pub offset: u64,
}

impl<'a> From<&'a wgpu::Buffer> for View<'a> {
    fn from(buffer: &'a wgpu::Buffer) -> Self {
        Self { buffer, offset: 0 }
    }
}

impl<'a> View<'a> {
    /// `buffer` from byte `offset`.
    pub fn at(buffer: &'a wgpu::Buffer, offset: u64) -> Self {
        Self { buffer, offset }
    }
}

/// Byte alignment of a bound view's offset: WebGPU's largest allowed
/// `min_storage_buffer_offset_alignment`, so valid on every device.
pub const VIEW_ALIGN: u64 = 256;

/// The first `words` 4-byte words of `buffer` as a storage binding, after checking that the
/// buffer has STORAGE usage and is large enough. `what` names it in the error.
pub(crate) fn storage_words<'a>(what: &str, buffer: &'a wgpu::Buffer, words: u64) -> Result<wgpu::BindingResource<'a>> {
    storage_view(what, View::from(buffer), words)
}

/// `words` 4-byte words of `view` as a storage binding, after checking the buffer's usage,
/// the offset's alignment and the size. `what` names it in the error.
pub(crate) fn storage_view<'a>(what: &str, view: View<'a>, words: u64) -> Result<wgpu::BindingResource<'a>> {
    let buffer = view.buffer;
    if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
        return Err(Error::MissingBufferUsage { what: what.to_owned(), missing: wgpu::BufferUsages::STORAGE });
    }
    if words == 0 {
        return Err(Error::Empty { what: what.to_owned() });
    }
    if !view.offset.is_multiple_of(VIEW_ALIGN) {
        return Err(Error::Misaligned { what: what.to_owned(), offset: view.offset, align: VIEW_ALIGN });
    }
    let bytes = words * 4;
    if buffer.size() < view.offset + bytes {
        return Err(Error::LengthMismatch {
            what: format!("{what}: buffer size in bytes (at least)"),
            expected: view.offset + bytes,
            actual: buffer.size(),
        });
    }
    Ok(range(buffer, view.offset, bytes))
}

/// [`check_disjoint`] for whole buffers: (name, buffer, writable).
pub(crate) fn check_distinct(bindings: &[(&str, &wgpu::Buffer, bool)]) -> Result<()> {
    let whole: Vec<_> = bindings.iter().map(|&(n, b, w)| (n, View::from(b), (b.size() / 4).max(1), w)).collect();
    check_disjoint(&whole)
}

/// Refuses a buffer bound twice when one of the bindings is written: wgpu rejects a buffer
/// bound read-only and writable in one dispatch, and WebGPU overlapping writable ranges,
/// both only when the pass is recorded, through the panicking default error handler.
/// `bindings` are (name, view, elements, writable); two writable views of one buffer may
/// share it when their ranges are disjoint.
pub(crate) fn check_disjoint(bindings: &[(&str, View<'_>, u64, bool)]) -> Result<()> {
    for (i, (name, view, len, writable)) in bindings.iter().enumerate() {
        for (other, other_view, other_len, other_writable) in &bindings[i + 1..] {
            if view.buffer != other_view.buffer || !(*writable || *other_writable) {
                continue;
            }
            let disjoint = view.offset + 4 * len <= other_view.offset || other_view.offset + 4 * other_len <= view.offset;
            if !(*writable && *other_writable && disjoint) {
                return Err(Error::Aliased { first: (*name).to_owned(), second: (*other).to_owned() });
            }
        }
    }
    Ok(())
}

/// A buffer holding `contents`, as `DeviceExt::create_buffer_init` makes it, except that a
/// device that cannot (lost, out of memory, too large a buffer) gives an `Error` where
/// `create_buffer_init` would panic.
pub fn buffer_init(device: &wgpu::Device, label: &str, contents: &[u8], usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
    let size = (contents.len() as u64).max(4).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
    let buffer = scoped(device, "creating a buffer", || {
        device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: true })
    })?;
    buffer
        .get_mapped_range_mut(..)
        .map_err(|e| Error::Device { during: "filling a new buffer", message: e.to_string() })?
        .slice(..contents.len())
        .copy_from_slice(contents);
    buffer.unmap();
    Ok(buffer)
}

/// A uniform buffer holding `value`.
pub(crate) fn uniform<T: bytemuck::Pod>(device: &wgpu::Device, label: &str, value: &T) -> Result<wgpu::Buffer> {
    buffer_init(device, label, bytemuck::bytes_of(value), wgpu::BufferUsages::UNIFORM)
}

/// A bind group with `resources` at bindings 0, 1, …, created inside an error scope so that
/// what the device rejects (aliased buffers, an oversized binding) becomes an `Error`.
pub(crate) fn bind_group(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    label: &'static str,
    resources: Vec<wgpu::BindingResource<'_>>,
) -> Result<wgpu::BindGroup> {
    let entries: Vec<_> = resources
        .into_iter()
        .enumerate()
        .map(|(i, resource)| wgpu::BindGroupEntry { binding: i as u32, resource })
        .collect();
    scoped(device, label, || {
        device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout, entries: &entries })
    })
}

/// A 16-byte zeroed storage buffer bound where an optional operand is absent.
pub(crate) fn placeholder(device: &wgpu::Device) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("gradguard placeholder"),
        size: 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

/// Records one dispatch of `groups` workgroups (flattened by [`grid`]) with `group` at
/// index 0.
pub(crate) fn dispatch(
    pass: &mut wgpu::ComputePass<'_>,
    pipeline: &wgpu::ComputePipeline,
    group: &wgpu::BindGroup,
    groups: u32,
) {
    let (x, y) = grid(groups);
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, group, &[]);
    pass.dispatch_workgroups(x, y, 1);
}

/// `n` as a u32 element count the shaders can index, or an error naming `what`.
pub(crate) fn index_range(what: &'static str, n: u64) -> Result<u32> {
    // The shaders index elements with u32.
    u32::try_from(n).map_err(|_| Error::NotBelow { what, value: n, limit: 1 << 32 })
}
