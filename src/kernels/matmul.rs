//! `shaders/matmul.wgsl`: `C = op(A)·op(B) (+ bias)`, the products of a Linear layer, and
//! the bias gradient.

use super::{
    bind_group, buffer_init, check_disjoint, dispatch, index_range, layout, pipeline, placeholder, range,
    storage_entry, storage_view, View,
};
use crate::error::{Error, Result};
use crate::kernels::activation::Activation;
use crate::shaders;

/// What the product's epilogue does besides storing C (see `shaders/matmul.wgsl`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Epilogue {
    /// C only.
    #[default]
    Plain,
    /// Also `aux = act(C)`: a Linear layer's product, bias and activation in one dispatch;
    /// C keeps the pre-activation that the backward reads.
    Activate(Activation),
    /// `C = grad_through(act, product, aux)`: an input gradient times the derivative of the
    /// activation below, `aux` holding that activation's input `[m, n]`.
    ThroughActivation(Activation),
    /// Also `aux[row] = Σ_k op(A)[row, k]` (`+=` when accumulating): the bias gradient
    /// beside a weight gradient `dYᵀ·X`, summed from the blocks of op(A) the product loads.
    BiasGrad,
}

/// One product `C[m, n] = op(A)[m, k] · op(B)[k, n] (+ bias[n]) (+ C)`, row-major.
///
/// `trans_a`: A is stored `[k, m]` and read transposed; `trans_b`: B is stored `[n, k]`.
/// `accumulate` adds the product to C instead of overwriting it (gradient accumulation),
/// like `torch.addmm(C, A, B)`; `epilogue` fuses what a layer does next.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
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
    /// What the epilogue fuses in.
    pub epilogue: Epilogue,
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

    /// f32 elements of the epilogue's operand (0: none).
    pub fn aux_len(&self) -> u64 {
        match self.epilogue {
            Epilogue::Plain => 0,
            Epilogue::Activate(_) | Epilogue::ThroughActivation(_) => self.c_len(),
            Epilogue::BiasGrad => self.m as u64,
        }
    }

    /// This product with `epilogue`.
    pub fn with(self, epilogue: Epilogue) -> Self {
        Self { epilogue, ..self }
    }

    fn validate(&self) -> Result<()> {
        crate::error::check_sizes(&[("matmul m", self.m), ("matmul n", self.n), ("matmul k", self.k)])?;
        for (what, len) in [("matmul A", self.a_len()), ("matmul B", self.b_len()), ("matmul C", self.c_len())] {
            index_range(what, len)?;
        }
        Ok(())
    }

    fn params(&self, bias: bool) -> [u32; 6] {
        let (epilogue, act) = match self.epilogue {
            Epilogue::Plain => (0, Activation::Identity),
            Epilogue::Activate(a) => (16, a),
            Epilogue::ThroughActivation(a) => (32, a),
            Epilogue::BiasGrad => (64, Activation::Identity),
        };
        let flags =
            self.trans_a as u32 | (self.trans_b as u32) << 1 | (bias as u32) << 2 | (self.accumulate as u32) << 3 | epilogue;
        let (kind, slope) = act.code();
        [self.m, self.n, self.k, flags, kind, slope.to_bits()]
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
        crate::error::check_sizes(&[("wg_m", self.wg_m), ("wg_n", self.wg_n), ("tile_k", self.tile_k)])?;
        let shared = match self.staging {
            Staging::Workgroup => 16 * self.tile_k as u64 * (self.wg_m as u64 + self.wg_n as u64),
            Staging::Direct => 0,
        };
        // What the tiling needs, each against the device limit it must stay within.
        let needs = [
            (self.wg_m as u64 * self.wg_n as u64, "invocations", limits.max_compute_invocations_per_workgroup, "the device's max_compute_invocations_per_workgroup"),
            (self.wg_n as u64, "invocations in x", limits.max_compute_workgroup_size_x, "the device's max_compute_workgroup_size_x"),
            (self.wg_m as u64, "invocations in y", limits.max_compute_workgroup_size_y, "the device's max_compute_workgroup_size_y"),
            (shared, "bytes", limits.max_compute_workgroup_storage_size, "the device's max_compute_workgroup_storage_size"),
        ];
        match needs.into_iter().find(|&(amount, _, limit, _)| amount > limit as u64) {
            Some((amount, unit, limit, name)) => Err(Error::TooLarge {
                what: format!("matmul tiling {self:?}"),
                amount,
                unit,
                limit: limit as u64,
                limit_name: name,
            }),
            None => Ok(()),
        }
    }
}

const WG: u32 = 256;

/// A bound product, ready to record with [`MatmulKernel::encode`] or
/// [`MatmulKernel::encode_naive`].
#[derive(Debug)]
pub struct MatmulBinding {
    group: wgpu::BindGroup,
    op: MatmulOp,
    /// The tiled pipeline specialized for this product's transposes, alignment and tiles.
    tiled: wgpu::ComputePipeline,
    tiling: Tiling,
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
}

/// The GEMM pipelines. Operands need STORAGE usage; C and the epilogue's operand may not
/// overlap A, B or the bias (`Error::Aliased`).
#[derive(Debug)]
pub struct MatmulKernel {
    /// 0 A, 1 B, 2 bias (read-only), 3 C (read-write), 4 shape, 5 A and 6 B again as vec4
    /// (read-only; a placeholder where the product is not 4-aligned), 7 the epilogue's
    /// operand (read-write; a placeholder where there is none).
    pub layout: wgpu::BindGroupLayout,
    tiling: Tiling,
    naive: wgpu::ComputePipeline,
    /// Bound where a read-only operand is absent.
    placeholder: wgpu::Buffer,
    /// Bound where the epilogue has no operand: a writable slot needs its own buffer.
    no_aux: wgpu::Buffer,
}

/// The buffers of one product: views at 256-byte-aligned offsets ([`View`]).
#[derive(Clone, Copy, Debug)]
pub struct MatmulOperands<'a> {
    /// op(A)'s storage.
    pub a: View<'a>,
    /// op(B)'s storage.
    pub b: View<'a>,
    /// `n` biases added to every row, if any.
    pub bias: Option<View<'a>>,
    /// The product (written).
    pub c: View<'a>,
    /// The epilogue's operand ([`MatmulOp::aux_len`] elements), where it has one.
    pub aux: Option<View<'a>>,
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
        let entries: Vec<_> = (0..8).map(|i| storage_entry(i, i != 3 && i != 7)).collect();
        let layout = layout(device, "matmul", &entries);
        let kernel = Self {
            naive: pipeline(device, &shaders::MATMUL, "matmul_naive", &[&layout], &[])?,
            placeholder: placeholder(device),
            no_aux: placeholder(device),
            tiling,
            layout,
        };
        // The general variant now, so that a tiling the device rejects fails here.
        kernel.tiled_pipeline(device, &tiling, Variant { trans_a: false, trans_b: false, vec_a: false, vec_b: false })?;
        Ok(kernel)
    }

    /// The tiles of `op`: the kernel's, except that without workgroup memory a product of
    /// a small C over a long k (a weight gradient summed over many rows) takes one thread
    /// row per workgroup, so that more workgroups share the cores (measured 2.8x faster for
    /// the RNN's W_h gradient on lavapipe).
    fn tiling_for(&self, op: &MatmulOp) -> Tiling {
        match self.tiling.staging {
            Staging::Direct if op.k >= 8 * op.m.max(op.n) => {
                Tiling { wg_m: 1, wg_n: op.n.div_ceil(8).min(self.tiling.wg_n), ..self.tiling }
            }
            _ => self.tiling,
        }
    }

    /// The tile shape the kernel was built with.
    pub fn tiling(&self) -> Tiling {
        self.tiling
    }

    fn tiled_pipeline(&self, device: &wgpu::Device, t: &Tiling, variant: Variant) -> Result<wgpu::ComputePipeline> {
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
        pipeline(device, &shaders::MATMUL, entry, &[&self.layout], &constants)
    }

    /// Binds `c = op(a)·op(b) (+ bias)` of whole buffers from byte 0: [`MatmulKernel::bind_views`]
    /// with no epilogue operand.
    pub fn bind(
        &self,
        device: &wgpu::Device,
        op: &MatmulOp,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        c: &wgpu::Buffer,
    ) -> Result<MatmulBinding> {
        let operands = MatmulOperands { a: a.into(), b: b.into(), bias: bias.map(View::from), c: c.into(), aux: None };
        self.bind_views(device, op, operands)
    }

    /// Binds `op` on views. Each needs STORAGE usage and at least the elements `op`
    /// implies (`bias`: n; `aux`: [`MatmulOp::aux_len`], present exactly when the epilogue
    /// has an operand). `c` and `aux` must not overlap the others.
    pub fn bind_views<'a>(&'a self, device: &wgpu::Device, op: &MatmulOp, v: MatmulOperands<'a>) -> Result<MatmulBinding> {
        op.validate()?;
        if v.aux.is_some() != (op.aux_len() > 0) {
            let other = format!("the {:?} epilogue", op.epilogue);
            let why = "an epilogue with an operand (a ReLU mask, a bias gradient) takes one, the others none";
            return Err(Error::Incompatible { setting: "matmul epilogue operand", other, why });
        }
        let mut named = vec![("matmul A", v.a, op.a_len(), false), ("matmul B", v.b, op.b_len(), false), ("matmul C", v.c, op.c_len(), true)];
        named.extend(v.bias.map(|bias| ("matmul bias", bias, op.n as u64, false)));
        named.extend(v.aux.map(|aux| ("matmul epilogue operand", aux, op.aux_len(), true)));
        check_disjoint(&named)?;
        let tiling = self.tiling_for(op);
        let variant = Variant::of(op, &tiling);
        let tiled = self.tiled_pipeline(device, &tiling, variant)?;
        let params = buffer_init(device, "matmul shape", bytemuck::bytes_of(&op.params(v.bias.is_some())), wgpu::BufferUsages::STORAGE)?;
        let bias = match v.bias {
            Some(view) => storage_view("matmul bias", view, op.n as u64)?,
            None => self.placeholder.as_entire_binding(),
        };
        let aux = match v.aux {
            Some(view) => storage_view("matmul epilogue operand", view, op.aux_len())?,
            None => self.no_aux.as_entire_binding(),
        };
        // A 4-aligned operand's length is a multiple of 4 (one of its dimensions is).
        let vec4s = |on: bool, view: View<'a>, len: u64| -> wgpu::BindingResource<'a> {
            if on {
                range(view.buffer, view.offset, len * 4)
            } else {
                self.placeholder.as_entire_binding()
            }
        };
        let resources = vec![
            storage_view("matmul A", v.a, op.a_len())?,
            storage_view("matmul B", v.b, op.b_len())?,
            bias,
            storage_view("matmul C", v.c, op.c_len())?,
            params.as_entire_binding(),
            vec4s(variant.vec_a, v.a, op.a_len()),
            vec4s(variant.vec_b, v.b, op.b_len()),
            aux,
        ];
        Ok(MatmulBinding { group: bind_group(device, &self.layout, "matmul", resources)?, op: *op, tiled, tiling })
    }

    /// Records the tiled product.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binding: &MatmulBinding) {
        let t = &binding.tiling;
        let block = t.block();
        let (bm, bn) = (t.wg_m * block, t.wg_n * block);
        let tiles = binding.op.m.div_ceil(bm) as u64 * binding.op.n.div_ceil(bn) as u64;
        dispatch(pass, &binding.tiled, &binding.group, tiles as u32);
    }

    /// Records the naive product (one thread per output): the benchmark's baseline.
    pub fn encode_naive(&self, pass: &mut wgpu::ComputePass<'_>, binding: &MatmulBinding) {
        dispatch(pass, &self.naive, &binding.group, binding.op.c_len().div_ceil(WG as u64) as u32);
    }
}
