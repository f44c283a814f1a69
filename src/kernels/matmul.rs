//! `shaders/matmul.wgsl`: `C = op(A)·op(B) (+ bias)`, the products of a Linear layer, and
//! the bias gradient. Also home of the binding helpers the training kernels share.

use wgpu::util::DeviceExt;

use super::{grid, layout, pipeline, range, scoped, storage_entry, uniform_entry};
use crate::error::{Error, Result};
use crate::shaders;

// ---- shared by the training kernels (matmul, activation, loss, optimizer, batchnorm) ----

/// The first `words` 4-byte words of `buffer` as a storage binding, after checking that the
/// buffer has STORAGE usage and is large enough. `what` names it in the error.
pub(crate) fn storage_words<'a>(what: &str, buffer: &'a wgpu::Buffer, words: u64) -> Result<wgpu::BindingResource<'a>> {
    if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
        return Err(Error::Invalid(format!(
            "{what}: the buffer lacks usage STORAGE (create it with BufferUsages::STORAGE)"
        )));
    }
    if words == 0 {
        return Err(Error::Invalid(format!("{what}: binding zero elements")));
    }
    let bytes = words * 4;
    if buffer.size() < bytes {
        return Err(Error::LengthMismatch {
            what: format!("{what}: buffer size in bytes (at least)"),
            expected: bytes,
            actual: buffer.size(),
        });
    }
    Ok(range(buffer, 0, bytes))
}

/// Refuses a buffer bound twice when one of the bindings is writable. wgpu would only
/// reject it when the pass is recorded, through its panicking default error handler.
/// `bindings` are (name, buffer, writable).
pub(crate) fn check_distinct(bindings: &[(&str, &wgpu::Buffer, bool)]) -> Result<()> {
    for (i, (name, buffer, writable)) in bindings.iter().enumerate() {
        for (other, other_buffer, other_writable) in &bindings[i + 1..] {
            if buffer == other_buffer && (*writable || *other_writable) {
                return Err(Error::Invalid(format!(
                    "{name} and {other} are the same buffer, and one of them is written: use separate buffers"
                )));
            }
        }
    }
    Ok(())
}

/// A uniform buffer holding `value`.
pub(crate) fn uniform<T: bytemuck::Pod>(device: &wgpu::Device, label: &str, value: &T) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM,
    })
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

/// Records one dispatch of `groups` workgroups (flattened by [`grid`]).
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
pub(crate) fn index_range(what: &str, n: u64) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Invalid(format!("{what}: {n} elements exceed the u32 indices of the shaders")))
}

// ---- matmul ------------------------------------------------------------------------------

/// One product `C[m, n] = op(A)[m, k] · op(B)[k, n] (+ bias[n]) (+ C)`, row-major.
///
/// `trans_a`: A is stored `[k, m]` and read transposed; `trans_b`: B is stored `[n, k]`.
/// `accumulate` adds the product to C instead of overwriting it (gradient accumulation,
/// e.g. `dW` summed over the time steps of an RNN), like `torch.addmm(C, A, B)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatmulOp {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub trans_a: bool,
    pub trans_b: bool,
    pub accumulate: bool,
}

impl MatmulOp {
    /// `torch.nn.Linear` forward `y = x·Wᵀ + b`: A = x `[batch, in]`, B = W `[out, in]`.
    pub fn linear_forward(batch: u32, in_features: u32, out_features: u32) -> Self {
        Self { m: batch, n: out_features, k: in_features, trans_b: true, ..Self::default() }
    }

    /// Linear input gradient `dX = dY·W`: A = dY `[batch, out]`, B = W `[out, in]`.
    pub fn linear_input_grad(batch: u32, in_features: u32, out_features: u32) -> Self {
        Self { m: batch, n: in_features, k: out_features, ..Self::default() }
    }

    /// Linear weight gradient `dW = dYᵀ·X`: A = dY `[batch, out]`, B = X `[batch, in]`.
    pub fn linear_weight_grad(batch: u32, in_features: u32, out_features: u32) -> Self {
        Self { m: out_features, n: in_features, k: batch, trans_a: true, ..Self::default() }
    }

    pub fn a_len(&self) -> u64 {
        self.m as u64 * self.k as u64
    }

    pub fn b_len(&self) -> u64 {
        self.k as u64 * self.n as u64
    }

    pub fn c_len(&self) -> u64 {
        self.m as u64 * self.n as u64
    }

    fn validate(&self) -> Result<()> {
        if self.m == 0 || self.n == 0 || self.k == 0 {
            return Err(Error::Invalid(format!(
                "matmul: m, n and k must be ≥ 1, got {}x{}x{}",
                self.m, self.n, self.k
            )));
        }
        for (what, len) in [("matmul A", self.a_len()), ("matmul B", self.b_len()), ("matmul C", self.c_len())] {
            index_range(what, len)?;
        }
        Ok(())
    }

    fn params(&self, bias: bool) -> [u32; 4] {
        let flags =
            self.trans_a as u32 | (self.trans_b as u32) << 1 | (bias as u32) << 2 | (self.accumulate as u32) << 3;
        [self.m, self.n, self.k, flags]
    }
}

/// Workgroup shape of the tiled kernel (its pipeline-overridable constants): a workgroup of
/// `wg_m x wg_n` threads computes a `4·wg_m x 4·wg_n` tile of C, `tile_k` deep at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    pub wg_m: u32,
    pub wg_n: u32,
    pub tile_k: u32,
}

impl Default for Tiling {
    /// 16x16 threads, 64x64 outputs, k in steps of 16: 8 KiB of workgroup memory.
    fn default() -> Self {
        Self { wg_m: 16, wg_n: 16, tile_k: 16 }
    }
}

/// Outputs per thread along each dimension (`TM`, `TN` in the shader).
const BLOCK: u32 = 4;
const WG: u32 = 256;

/// A bound product, ready to record with [`MatmulKernel::encode`] or
/// [`MatmulKernel::encode_naive`].
#[derive(Debug)]
pub struct MatmulBinding {
    group: wgpu::BindGroup,
    op: MatmulOp,
}

/// A bound bias gradient, ready to record with [`MatmulKernel::encode_bias_grad`].
#[derive(Debug)]
pub struct BiasGradBinding {
    group: wgpu::BindGroup,
    cols: u32,
}

#[derive(Debug)]
pub struct MatmulKernel {
    /// 0 A, 1 B, 2 bias (read-only), 3 C (read-write), 4 shape uniform.
    pub layout: wgpu::BindGroupLayout,
    tiling: Tiling,
    tiled: wgpu::ComputePipeline,
    naive: wgpu::ComputePipeline,
    bias_grad: wgpu::ComputePipeline,
    placeholder: wgpu::Buffer,
}

impl MatmulKernel {
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        Self::with_tiling(device, Tiling::default())
    }

    /// The kernel with another tile shape. `wg_m · wg_n` must fit the device's invocations
    /// per workgroup, and the two tiles its workgroup memory; the device rejects it otherwise.
    pub fn with_tiling(device: &wgpu::Device, tiling: Tiling) -> Result<Self> {
        if tiling.wg_m == 0 || tiling.wg_n == 0 || tiling.tile_k == 0 {
            return Err(Error::Invalid(format!("matmul tiling must be positive, got {tiling:?}")));
        }
        let layout = layout(
            device,
            "matmul",
            &[
                storage_entry(0, true),
                storage_entry(1, true),
                storage_entry(2, true),
                storage_entry(3, false),
                uniform_entry(4),
            ],
        );
        let s = &shaders::MATMUL;
        let constants = [("WG_M", tiling.wg_m as f64), ("WG_N", tiling.wg_n as f64), ("TILE_K", tiling.tile_k as f64)];
        Ok(Self {
            tiled: pipeline(device, s, "matmul_tiled", &[&layout], &constants)?,
            naive: pipeline(device, s, "matmul_naive", &[&layout], &[])?,
            bias_grad: pipeline(device, s, "bias_grad", &[&layout], &[])?,
            placeholder: placeholder(device),
            tiling,
            layout,
        })
    }

    /// Binds `c = op(a)·op(b) (+ bias)`. Every buffer needs STORAGE usage and at least the
    /// elements `op` implies (`bias`: n). `c` must not alias the others.
    pub fn bind(
        &self,
        device: &wgpu::Device,
        op: &MatmulOp,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        c: &wgpu::Buffer,
    ) -> Result<MatmulBinding> {
        op.validate()?;
        let mut buffers = vec![("matmul A", a, false), ("matmul B", b, false), ("matmul C", c, true)];
        buffers.extend(bias.map(|bias| ("matmul bias", bias, false)));
        check_distinct(&buffers)?;
        let params = uniform(device, "matmul shape", &op.params(bias.is_some()));
        let bias = match bias {
            Some(buffer) => storage_words("matmul bias", buffer, op.n as u64)?,
            None => self.placeholder.as_entire_binding(),
        };
        let resources = vec![
            storage_words("matmul A", a, op.a_len())?,
            storage_words("matmul B", b, op.b_len())?,
            bias,
            storage_words("matmul C", c, op.c_len())?,
            params.as_entire_binding(),
        ];
        Ok(MatmulBinding { group: bind_group(device, &self.layout, "matmul", resources)?, op: *op })
    }

    /// Binds the bias gradient `db[j] = Σ_i dy[i, j]` of a `[rows, cols]` output gradient
    /// (`accumulate`: `db +=`). It is the column sum torch's Linear backward computes.
    pub fn bind_bias_grad(
        &self,
        device: &wgpu::Device,
        rows: u32,
        cols: u32,
        dy: &wgpu::Buffer,
        db: &wgpu::Buffer,
        accumulate: bool,
    ) -> Result<BiasGradBinding> {
        let op = MatmulOp { m: rows, n: cols, k: 1, accumulate, ..MatmulOp::default() };
        op.validate()?;
        check_distinct(&[("bias grad dY", dy, false), ("bias grad db", db, true)])?;
        let params = uniform(device, "bias grad shape", &op.params(false));
        let resources = vec![
            storage_words("bias grad dY", dy, op.c_len())?,
            self.placeholder.as_entire_binding(),
            self.placeholder.as_entire_binding(),
            storage_words("bias grad db", db, cols as u64)?,
            params.as_entire_binding(),
        ];
        Ok(BiasGradBinding { group: bind_group(device, &self.layout, "bias grad", resources)?, cols })
    }

    /// Records the tiled product.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binding: &MatmulBinding) {
        let (bm, bn) = (self.tiling.wg_m * BLOCK, self.tiling.wg_n * BLOCK);
        let tiles = binding.op.m.div_ceil(bm) as u64 * binding.op.n.div_ceil(bn) as u64;
        dispatch(pass, &self.tiled, &binding.group, tiles as u32);
    }

    /// Records the naive product (one thread per output): the benchmark's baseline.
    pub fn encode_naive(&self, pass: &mut wgpu::ComputePass<'_>, binding: &MatmulBinding) {
        dispatch(pass, &self.naive, &binding.group, binding.op.c_len().div_ceil(WG as u64) as u32);
    }

    pub fn encode_bias_grad(&self, pass: &mut wgpu::ComputePass<'_>, binding: &BiasGradBinding) {
        dispatch(pass, &self.bias_grad, &binding.group, binding.cols.div_ceil(WG));
    }
}
