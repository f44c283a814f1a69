//! `shaders/matmul.wgsl`: `C = op(A)·op(B) (+ bias)`, the products of a Linear layer, and
//! the bias gradient.

use super::{
    bind_group, buffer_init, check_distinct, dispatch, index_range, layout, pipeline, placeholder, range,
    storage_entry, storage_words,
};
use crate::error::{Error, Result};
use crate::shaders;

/// One product `C[m, n] = op(A)[m, k] · op(B)[k, n] (+ bias[n]) (+ C)`, row-major.
///
/// `trans_a`: A is stored `[k, m]` and read transposed; `trans_b`: B is stored `[n, k]`.
/// `accumulate` adds the product to C instead of overwriting it (gradient accumulation,
/// e.g. `dW` summed over the time steps of an RNN), like `torch.addmm(C, A, B)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatmulOp {
    /// Rows of C (and of op(A)).
    pub m: u32,
    /// Columns of C (and of op(B)).
    pub n: u32,
    /// The contracted dimension: columns of op(A), rows of op(B).
    pub k: u32,
    /// A is stored `[k, m]` (read as Aᵀ).
    pub trans_a: bool,
    /// B is stored `[n, k]` (read as Bᵀ).
    pub trans_b: bool,
    /// `C += product` instead of `C = product`.
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

    /// f32 elements of A (`m·k`).
    pub fn a_len(&self) -> u64 {
        self.m as u64 * self.k as u64
    }

    /// f32 elements of B (`k·n`).
    pub fn b_len(&self) -> u64 {
        self.k as u64 * self.n as u64
    }

    /// f32 elements of C (`m·n`).
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

/// How the threads of a workgroup share the operand tiles they read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Staging {
    /// Through workgroup memory, `tile_k` deep, each thread computing a 4x4 block of C
    /// (`matmul_tiled`). The right choice for GPUs.
    Workgroup,
    /// Not at all: each thread computes an 8x8 block of C from 4x4 blocks it reads straight
    /// from the buffers, with no barrier (`matmul_direct`); `tile_k` is unused. For CPU
    /// adapters (lavapipe, llvmpipe, WARP), whose caches share the tiles, and where a
    /// workgroup barrier costs more than the loads it saves.
    Direct,
}

/// Workgroup shape of the tiled kernel (its pipeline-overridable constants): a workgroup of
/// `wg_m x wg_n` threads computes a `b·wg_m x b·wg_n` tile of C, with b = 4 for
/// [`Staging::Workgroup`] (stepping through k `tile_k` at a time) and b = 8 for
/// [`Staging::Direct`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Threads of a workgroup along m.
    pub wg_m: u32,
    /// Threads of a workgroup along n.
    pub wg_n: u32,
    /// Depth of the k tiles staged in workgroup memory ([`Staging::Workgroup`] only).
    pub tile_k: u32,
    /// How the operand tiles are shared.
    pub staging: Staging,
}

impl Default for Tiling {
    /// 16x16 threads, 64x64 outputs, k in steps of 16 through 8 KiB of workgroup memory.
    fn default() -> Self {
        Self { wg_m: 16, wg_n: 16, tile_k: 16, staging: Staging::Workgroup }
    }
}

impl Tiling {
    /// 8x8 threads, 64x64 outputs, no workgroup memory: measured fastest on lavapipe.
    pub const CPU: Self = Self { wg_m: 8, wg_n: 8, tile_k: 16, staging: Staging::Direct };

    /// [`Tiling::CPU`] on a CPU adapter, [`Tiling::default`] elsewhere.
    pub fn for_device(device: &wgpu::Device) -> Self {
        match device.adapter_info().device_type {
            wgpu::DeviceType::Cpu => Self::CPU,
            _ => Self::default(),
        }
    }

    /// Rows (and columns) of C per thread.
    fn block(&self) -> u32 {
        match self.staging {
            Staging::Workgroup => 4,
            Staging::Direct => 8,
        }
    }

    fn check(&self, limits: &wgpu::Limits) -> Result<()> {
        let bad = |why: String| Err(Error::Invalid(format!("matmul tiling {self:?}: {why}")));
        if self.wg_m == 0 || self.wg_n == 0 || self.tile_k == 0 {
            return bad("every size must be positive".into());
        }
        let threads = self.wg_m as u64 * self.wg_n as u64;
        if threads > limits.max_compute_invocations_per_workgroup as u64
            || self.wg_n > limits.max_compute_workgroup_size_x
            || self.wg_m > limits.max_compute_workgroup_size_y
        {
            return bad(format!(
                "{threads} threads exceed the device's workgroup limits ({} invocations, {} x {})",
                limits.max_compute_invocations_per_workgroup,
                limits.max_compute_workgroup_size_x,
                limits.max_compute_workgroup_size_y
            ));
        }
        let shared = 16 * self.tile_k as u64 * (self.wg_m as u64 + self.wg_n as u64);
        if self.staging == Staging::Workgroup && shared > limits.max_compute_workgroup_storage_size as u64 {
            return bad(format!(
                "its tiles need {shared} bytes of workgroup memory, the device has {}",
                limits.max_compute_workgroup_storage_size
            ));
        }
        Ok(())
    }
}

const WG: u32 = 256;

/// A bound product, ready to record with [`MatmulKernel::encode`] or
/// [`MatmulKernel::encode_naive`].
#[derive(Debug)]
pub struct MatmulBinding {
    group: wgpu::BindGroup,
    op: MatmulOp,
    /// The tiled pipeline specialized for this product's transposes and alignment.
    tiled: wgpu::ComputePipeline,
}

/// A bound bias gradient, ready to record with [`MatmulKernel::encode_bias_grad`].
#[derive(Debug)]
pub struct BiasGradBinding {
    group: wgpu::BindGroup,
    cols: u32,
}

/// Which specialization of the tiled kernel a product needs (its pipeline constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Variant {
    trans_a: bool,
    trans_b: bool,
    /// op(A) / op(B) is read as vec4 along its contiguous dimension.
    vec_a: bool,
    vec_b: bool,
}

impl Variant {
    fn of(op: &MatmulOp, tiling: &Tiling) -> Self {
        // Along k the vectors also have to tile `tile_k` evenly.
        let along_k = op.k.is_multiple_of(4) && (tiling.staging == Staging::Direct || tiling.tile_k.is_multiple_of(4));
        Self {
            trans_a: op.trans_a,
            trans_b: op.trans_b,
            vec_a: if op.trans_a { op.m.is_multiple_of(4) } else { along_k },
            vec_b: if op.trans_b { along_k } else { op.n.is_multiple_of(4) },
        }
    }

    fn index(&self) -> usize {
        self.trans_a as usize | (self.trans_b as usize) << 1 | (self.vec_a as usize) << 2 | (self.vec_b as usize) << 3
    }
}

/// The GEMM and bias-gradient pipelines. Operands need STORAGE usage; C may not share a
/// buffer with A, B or the bias (`Error::Invalid`).
#[derive(Debug)]
pub struct MatmulKernel {
    /// 0 A, 1 B, 2 bias (read-only), 3 C (read-write), 4 shape uniform, 5 A and 6 B again
    /// as vec4 (read-only; a placeholder where the product is not 4-aligned).
    pub layout: wgpu::BindGroupLayout,
    tiling: Tiling,
    /// The tiled pipelines, created on first use, by [`Variant::index`].
    tiled: std::sync::Mutex<[Option<wgpu::ComputePipeline>; 16]>,
    naive: wgpu::ComputePipeline,
    bias_grad: wgpu::ComputePipeline,
    placeholder: wgpu::Buffer,
}

impl MatmulKernel {
    /// The kernel with [`Tiling::for_device`].
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        Self::with_tiling(device, Tiling::for_device(device))
    }

    /// The kernel with another tile shape. `wg_m · wg_n` must fit the device's invocations
    /// per workgroup, and (for [`Staging::Workgroup`]) the two tiles its workgroup memory.
    pub fn with_tiling(device: &wgpu::Device, tiling: Tiling) -> Result<Self> {
        tiling.check(&device.limits())?;
        let layout = layout(
            device,
            "matmul",
            &[
                storage_entry(0, true),
                storage_entry(1, true),
                storage_entry(2, true),
                storage_entry(3, false),
                storage_entry(4, true),
                storage_entry(5, true),
                storage_entry(6, true),
            ],
        );
        let s = &shaders::MATMUL;
        let kernel = Self {
            tiled: Default::default(),
            naive: pipeline(device, s, "matmul_naive", &[&layout], &[])?,
            bias_grad: pipeline(device, s, "bias_grad", &[&layout], &[])?,
            placeholder: placeholder(device),
            tiling,
            layout,
        };
        // The general variant now, so that a tiling the device rejects fails here.
        kernel.tiled_pipeline(device, Variant { trans_a: false, trans_b: false, vec_a: false, vec_b: false })?;
        Ok(kernel)
    }

    /// The tile shape the kernel was built with.
    pub fn tiling(&self) -> Tiling {
        self.tiling
    }

    fn tiled_pipeline(&self, device: &wgpu::Device, variant: Variant) -> Result<wgpu::ComputePipeline> {
        let mut cache = self.tiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(pipeline) = &cache[variant.index()] {
            return Ok(pipeline.clone());
        }
        let t = &self.tiling;
        let flag = |b: bool| b as u8 as f64;
        let constants = [
            ("WG_M", t.wg_m as f64),
            ("WG_N", t.wg_n as f64),
            ("TILE_K", t.tile_k as f64),
            ("TRANS_A", flag(variant.trans_a)),
            ("TRANS_B", flag(variant.trans_b)),
            ("VEC_A", flag(variant.vec_a)),
            ("VEC_B", flag(variant.vec_b)),
        ];
        let entry = match t.staging {
            Staging::Workgroup => "matmul_tiled",
            Staging::Direct => "matmul_direct",
        };
        let created = pipeline(device, &shaders::MATMUL, entry, &[&self.layout], &constants)?;
        cache[variant.index()] = Some(created.clone());
        Ok(created)
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
        let variant = Variant::of(op, &self.tiling);
        let tiled = self.tiled_pipeline(device, variant)?;
        let params = buffer_init(device, "matmul shape", bytemuck::bytes_of(&op.params(bias.is_some())), wgpu::BufferUsages::STORAGE)?;
        let bias = match bias {
            Some(buffer) => storage_words("matmul bias", buffer, op.n as u64)?,
            None => self.placeholder.as_entire_binding(),
        };
        // A 4-aligned operand's length is a multiple of 4 (one of its dimensions is).
        let vec4s = |on: bool, buffer, len: u64| {
            if on {
                range(buffer, 0, len * 4)
            } else {
                self.placeholder.as_entire_binding()
            }
        };
        let resources = vec![
            storage_words("matmul A", a, op.a_len())?,
            storage_words("matmul B", b, op.b_len())?,
            bias,
            storage_words("matmul C", c, op.c_len())?,
            params.as_entire_binding(),
            vec4s(variant.vec_a, a, op.a_len()),
            vec4s(variant.vec_b, b, op.b_len()),
        ];
        Ok(MatmulBinding { group: bind_group(device, &self.layout, "matmul", resources)?, op: *op, tiled })
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
        let params = buffer_init(device, "bias grad shape", bytemuck::bytes_of(&op.params(false)), wgpu::BufferUsages::STORAGE)?;
        let resources = vec![
            storage_words("bias grad dY", dy, op.c_len())?,
            self.placeholder.as_entire_binding(),
            self.placeholder.as_entire_binding(),
            storage_words("bias grad db", db, cols as u64)?,
            params.as_entire_binding(),
            self.placeholder.as_entire_binding(),
            self.placeholder.as_entire_binding(),
        ];
        Ok(BiasGradBinding { group: bind_group(device, &self.layout, "bias grad", resources)?, cols })
    }

    /// Records the tiled product.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binding: &MatmulBinding) {
        let block = self.tiling.block();
        let (bm, bn) = (self.tiling.wg_m * block, self.tiling.wg_n * block);
        let tiles = binding.op.m.div_ceil(bm) as u64 * binding.op.n.div_ceil(bn) as u64;
        dispatch(pass, &binding.tiled, &binding.group, tiles as u32);
    }

    /// Records the naive product (one thread per output): the benchmark's baseline.
    pub fn encode_naive(&self, pass: &mut wgpu::ComputePass<'_>, binding: &MatmulBinding) {
        dispatch(pass, &self.naive, &binding.group, binding.op.c_len().div_ceil(WG as u64) as u32);
    }

    /// Records the bias gradient bound by [`MatmulKernel::bind_bias_grad`].
    pub fn encode_bias_grad(&self, pass: &mut wgpu::ComputePass<'_>, binding: &BiasGradBinding) {
        dispatch(pass, &self.bias_grad, &binding.group, binding.cols.div_ceil(WG));
    }
}
