//! GEMM throughput: the tiled WGSL kernel against two references measured in the same run
//! on the same data, a naive one-thread-per-output WGSL kernel and a multithreaded CPU
//! sgemm (`matrixmultiply`, `MATMUL_NUM_THREADS` threads, default: the physical cores).
//!
//! Every kernel is first checked against the CPU twin on small shapes in all four
//! transpose cases; every timed tiled product is then checked against the CPU sgemm's
//! result on the same data.

use std::str::FromStr;

use rand::{rngs::StdRng, Rng, SeedableRng};
use wgpu::util::DeviceExt;

use super::{BenchReport, Timer};
use crate::cpu::matmul as twin;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::matmul::{MatmulBinding, MatmulKernel, MatmulOp, Tiling};
use crate::readback::read_f32s;

/// One measured product.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MatmulResult {
    /// "tiled", "naive" (WGSL, one thread per output) or "cpu_sgemm".
    pub kernel: String,
    /// "square", or the product of a Linear layer: "mlp_forward" (x·Wᵀ), "mlp_input_grad"
    /// (dY·W), "mlp_weight_grad" (dYᵀ·X); "mlp" for the other transposes of those shapes.
    pub case: &'static str,
    /// Rows of C.
    pub m: u32,
    /// Columns of C.
    pub n: u32,
    /// The contracted dimension.
    pub k: u32,
    /// "NN", "NT", "TN" or "TT": whether A, then B, is read transposed.
    pub transposes: String,
    /// Median over the repetitions.
    pub millis: f64,
    /// 2·m·n·k over the time.
    pub gflops: f64,
    /// CPU sgemm time over this kernel's: > 1 means faster than the CPU.
    pub ratio_to_cpu_sgemm: f64,
    /// `None` where the naive kernel was not run (see [`MatmulConfig::naive_max_flop`]).
    pub ratio_to_naive: Option<f64>,
}

/// A group of products to measure, as `--sizes` spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// `1024`: m = n = k, all four transpose cases.
    Square(u32),
    /// `512x256x128` (m x n x k), all four transpose cases.
    Shape {
        /// Rows of C.
        m: u32,
        /// Columns of C.
        n: u32,
        /// The contracted dimension.
        k: u32,
    },
    /// `mlp`: a 256-wide Linear layer at batch 512, [512, 256] x [256, 256] and
    /// [256, 512] x [512, 256] (the weight gradient), all four transpose cases each.
    Mlp,
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let dim = |d: &str| match d.trim().parse::<u32>() {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(format!("`{s}`: sizes are positive integers, MxNxK, or `mlp`")),
        };
        if s.eq_ignore_ascii_case("mlp") {
            return Ok(Self::Mlp);
        }
        match s.split('x').collect::<Vec<_>>()[..] {
            [edge] => Ok(Self::Square(dim(edge)?)),
            [m, n, k] => Ok(Self::Shape { m: dim(m)?, n: dim(n)?, k: dim(k)? }),
            _ => Err(format!("`{s}`: sizes are positive integers, MxNxK, or `mlp`")),
        }
    }
}

/// The default `--sizes`.
pub const DEFAULT_SIZES: [Size; 5] =
    [Size::Square(256), Size::Square(512), Size::Square(1024), Size::Square(2048), Size::Mlp];

/// What `gradguard bench matmul` measures, and how long it may take.
#[derive(Clone, Debug)]
pub struct MatmulConfig {
    /// The products to measure.
    pub sizes: Vec<Size>,
    /// At most this many timed repetitions (after one warm-up) per measurement …
    pub max_reps: u32,
    /// … and fewer when they would take longer than this (at least one).
    pub budget_ms: f64,
    /// The naive kernel is run for products up to this many flop (2·m·n·k) …
    pub naive_max_flop: f64,
    /// … and, without transposes (NN), up to this many: on a CPU adapter a naive 1024³
    /// product takes seconds.
    pub naive_nn_max_flop: f64,
    /// `None`: [`Tiling::for_device`].
    pub tiling: Option<Tiling>,
}

impl Default for MatmulConfig {
    /// [`DEFAULT_SIZES`], at most 15 repetitions or ~0.6 s per measurement, the naive kernel
    /// up to 512³ (1024³ without transposes): under a minute on lavapipe on two cores.
    fn default() -> Self {
        Self {
            sizes: DEFAULT_SIZES.to_vec(),
            max_reps: 15,
            budget_ms: 600.0,
            naive_max_flop: 2.0 * 512f64.powi(3),
            naive_nn_max_flop: 2.0 * 1024f64.powi(3),
            tiling: None,
        }
    }
}

/// One product to time, with the name of its case.
#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    op: MatmulOp,
}

const TRANSPOSES: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

fn cases(sizes: &[Size]) -> Vec<Case> {
    let all = |name_of: &dyn Fn(bool, bool) -> &'static str, m, n, k| {
        TRANSPOSES.map(|(trans_a, trans_b)| Case {
            name: name_of(trans_a, trans_b),
            op: MatmulOp { m, n, k, trans_a, trans_b, ..MatmulOp::default() },
        })
    };
    let mut out = Vec::new();
    for &size in sizes {
        match size {
            Size::Square(e) => out.extend(all(&|_, _| "square", e, e, e)),
            Size::Shape { m, n, k } => out.extend(all(&|_, _| "shape", m, n, k)),
            Size::Mlp => {
                let (batch, width) = (512, 256);
                // Forward x·Wᵀ and input gradient dY·W: [batch, width] outputs, k = width.
                out.extend(all(
                    &|ta, tb| match (ta, tb) {
                        (false, true) => "mlp_forward",
                        (false, false) => "mlp_input_grad",
                        _ => "mlp",
                    },
                    batch,
                    width,
                    width,
                ));
                // Weight gradient dYᵀ·X: [width, width] output, k = batch.
                out.extend(all(&|ta, tb| if ta && !tb { "mlp_weight_grad" } else { "mlp" }, width, width, batch));
            }
        }
    }
    out
}

fn transposes(op: &MatmulOp) -> String {
    [op.trans_a, op.trans_b].iter().map(|&t| if t { 'T' } else { 'N' }).collect()
}

fn flop(op: &MatmulOp) -> f64 {
    2.0 * op.m as f64 * op.n as f64 * op.k as f64
}

fn random(rng: &mut StdRng, n: u64) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn upload(gpu: &Gpu, label: &str, data: &[f32]) -> wgpu::Buffer {
    gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::cast_slice(data),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    })
}

/// `c = op(a)·op(b)` with `matrixmultiply::sgemm`; the transposes are strides.
pub fn cpu_sgemm(op: &MatmulOp, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (m, n, k) = (op.m as usize, op.n as usize, op.k as usize);
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "cpu_sgemm: operands too short for {op:?}");
    let (rsa, csa) = if op.trans_a { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if op.trans_b { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the strides address op(A) [m, k], op(B) [k, n] and C [m, n] inside the
    // slices, whose lengths were checked above; C does not alias A or B.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Fails unless every element of `got` is within the f32 dot-product bound
/// (k + 2)·ε·(|A|·|B|)ᵢ of `want`; `scale` is |A|·|B| (or an upper bound of it).
fn compare(what: &str, op: &MatmulOp, got: &[f32], want: &[f32], scale: &dyn Fn(usize) -> f32) -> Result<()> {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = (op.k as f32 + 2.0) * f32::EPSILON * scale(i);
        if !((g - w).abs() <= tol) {
            let what = format!("matmul bench: {what} for {}x{}x{} {}", op.m, op.n, op.k, transposes(op));
            return Err(Error::WrongResult { what, index: i, got: *g, want: *w, tolerance: tol });
        }
    }
    Ok(())
}

/// Records `kernel`'s tiled or naive product into one pass, submits and reads C back.
fn run_once(
    gpu: &Gpu,
    kernel: &MatmulKernel,
    binding: &MatmulBinding,
    naive: bool,
    c: &wgpu::Buffer,
) -> Result<Vec<f32>> {
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        if naive {
            kernel.encode_naive(&mut pass, binding);
        } else {
            kernel.encode(&mut pass, binding);
        }
    }
    gpu.queue.submit([encoder.finish()]);
    read_f32s(&gpu.device, &gpu.queue, c)
}

/// The tiled kernel, the naive kernel and the CPU sgemm against the twin on small odd
/// shapes, in all four transpose cases. Nothing is timed before this passes.
pub fn check_correct(gpu: &Gpu, kernel: &MatmulKernel) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(7);
    for (m, n, k) in [(67, 45, 33), (130, 70, 129)] {
        for (trans_a, trans_b) in TRANSPOSES {
            let op = MatmulOp { m, n, k, trans_a, trans_b, ..MatmulOp::default() };
            let (a, b) = (random(&mut rng, op.a_len()), random(&mut rng, op.b_len()));
            let mut want = vec![0.0; op.c_len() as usize];
            twin::matmul(&op, &a, &b, None, &mut want, &mut []);
            let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
            let mut scale = vec![0.0; op.c_len() as usize];
            twin::matmul(&op, &abs(&a), &abs(&b), None, &mut scale, &mut []);
            let scale = |i: usize| scale[i];

            let mut cpu = vec![0.0; op.c_len() as usize];
            cpu_sgemm(&op, &a, &b, &mut cpu);
            compare("the CPU sgemm", &op, &cpu, &want, &scale)?;
            let (ga, gb) = (upload(gpu, "matmul check A", &a), upload(gpu, "matmul check B", &b));
            let gc = upload(gpu, "matmul check C", &vec![f32::NAN; op.c_len() as usize]);
            let binding = kernel.bind(&gpu.device, &op, &ga, &gb, None, &gc)?;
            compare("the naive kernel", &op, &run_once(gpu, kernel, &binding, true, &gc)?, &want, &scale)?;
            compare("the tiled kernel", &op, &run_once(gpu, kernel, &binding, false, &gc)?, &want, &scale)?;
        }
    }
    Ok(())
}

/// Median milliseconds of the CPU sgemm, after one warm-up run that also sets the number
/// of repetitions (1 to `max_reps`, about `budget_ms` in all).
fn time_cpu(op: &MatmulOp, a: &[f32], b: &[f32], c: &mut [f32], budget_ms: f64, max_reps: u32) -> f64 {
    let mut run = || {
        let start = std::time::Instant::now();
        cpu_sgemm(op, a, b, c);
        start.elapsed().as_secs_f64() * 1e3
    };
    let warm_up = run();
    let reps = (budget_ms / warm_up.max(1e-3)).clamp(1.0, max_reps.max(1) as f64) as u32;
    let mut samples: Vec<f64> = (0..reps).map(|_| run()).collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Checks the kernels, then measures every case of `config.sizes`: the CPU sgemm, the
/// naive kernel (up to [`MatmulConfig::naive_max_flop`]) and the tiled kernel. `progress`
/// hears about the tiling and each case before it runs (the long ones take seconds on a
/// CPU adapter).
pub fn run(gpu: &Gpu, config: &MatmulConfig, progress: &mut dyn FnMut(&str)) -> Result<BenchReport<MatmulResult>> {
    let tiling = config.tiling.unwrap_or_else(|| Tiling::for_device(&gpu.device));
    let kernel = MatmulKernel::with_tiling(&gpu.device, tiling)?;
    check_correct(gpu, &kernel)?;
    progress(&format!("tiled kernel: {tiling:?}; all kernels agree with the CPU twin"));
    let timer = Timer::new(gpu);
    let (budget, max_reps) = (config.budget_ms, config.max_reps);
    let mut rng = StdRng::seed_from_u64(11);
    let mut results = Vec::new();
    for case in cases(&config.sizes) {
        let op = case.op;
        let flop = flop(&op);
        let nn = !op.trans_a && !op.trans_b;
        let run_naive = flop <= config.naive_max_flop || (nn && flop <= config.naive_nn_max_flop);
        progress(&format!(
            "measuring {} {}x{}x{} {}{}",
            case.name,
            op.m,
            op.n,
            op.k,
            transposes(&op),
            if run_naive { "" } else { " (naive kernel skipped at this size)" }
        ));
        let (a, b) = (random(&mut rng, op.a_len()), random(&mut rng, op.b_len()));
        let mut cpu_c = vec![0.0; op.c_len() as usize];
        let cpu_ms = time_cpu(&op, &a, &b, &mut cpu_c, budget, max_reps);

        let (ga, gb) = (upload(gpu, "matmul bench A", &a), upload(gpu, "matmul bench B", &b));
        let gc = upload(gpu, "matmul bench C", &vec![f32::NAN; op.c_len() as usize]);
        let binding = kernel.bind(&gpu.device, &op, &ga, &gb, None, &gc)?;
        // Several products per pass (up to ~1 GFLOP) so that submission overhead vanishes.
        let inner = (1e9 / flop).clamp(1.0, 32.0) as u32;
        let naive = |pass: &mut wgpu::ComputePass<'_>| kernel.encode_naive(pass, &binding);
        let naive_ms =
            if run_naive { Some(timer.time_within(gpu, budget, max_reps, inner.div_ceil(4), &naive)?) } else { None };
        let tiled_ms = timer.time_within(gpu, budget, max_reps, inner, &|pass| kernel.encode(pass, &binding))?;
        // The timed product itself must agree with the CPU sgemm (|A|·|B| ≤ k: entries in [-1, 1)).
        let got = read_f32s(&gpu.device, &gpu.queue, &gc)?;
        compare("the tiled kernel (timed shape)", &op, &got, &cpu_c, &|_| op.k as f32)?;

        let mut push = |kernel: &str, ms: f64| {
            results.push(MatmulResult {
                kernel: kernel.to_string(),
                case: case.name,
                m: op.m,
                n: op.n,
                k: op.k,
                transposes: transposes(&op),
                millis: ms,
                gflops: flop / (ms * 1e6),
                ratio_to_cpu_sgemm: cpu_ms / ms,
                ratio_to_naive: naive_ms.map(|naive| naive / ms),
            })
        };
        push("cpu_sgemm", cpu_ms);
        if let Some(naive_ms) = naive_ms {
            push("naive", naive_ms);
        }
        push("tiled", tiled_ms);
    }
    Ok(BenchReport::new(gpu, &timer, results))
}

impl BenchReport<MatmulResult> {
    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut out = format!("{} ({}, {} timing)\n", self.adapter, self.backend, self.timing);
        out += &format!(
            "{:<10} {:<16} {:>16} {:>3} {:>10} {:>9} {:>8} {:>9}\n",
            "kernel", "case", "m x n x k", "op", "ms", "GFLOP/s", "vs cpu", "vs naive"
        );
        for r in &self.results {
            let naive = r.ratio_to_naive.map_or("-".to_string(), |x| format!("{x:.2}"));
            out += &format!(
                "{:<10} {:<16} {:>16} {:>3} {:>10.3} {:>9.2} {:>8.3} {:>9}\n",
                r.kernel,
                r.case,
                format!("{}x{}x{}", r.m, r.n, r.k),
                r.transposes,
                r.millis,
                r.gflops,
                r.ratio_to_cpu_sgemm,
                naive
            );
        }
        if self.results.iter().any(|r| r.ratio_to_naive.is_none()) {
            out +=
                "vs naive `-`: the naive kernel was not run for that product (seconds per product on a CPU adapter)\n";
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!("1024".parse(), Ok(Size::Square(1024)));
        assert_eq!("512x256x128".parse(), Ok(Size::Shape { m: 512, n: 256, k: 128 }));
        assert_eq!("MLP".parse(), Ok(Size::Mlp));
        for bad in ["0", "x", "1x2", "1x2x3x4", "-4", "big"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mlp_cases_name_the_layer_products() {
        let named: Vec<_> = cases(&[Size::Mlp]).into_iter().filter(|c| c.name != "mlp").collect();
        let expect = [
            ("mlp_forward", MatmulOp::linear_forward(512, 256, 256)),
            ("mlp_input_grad", MatmulOp::linear_input_grad(512, 256, 256)),
            ("mlp_weight_grad", MatmulOp::linear_weight_grad(512, 256, 256)),
        ];
        assert_eq!(named.len(), 3);
        for (name, op) in expect {
            assert!(named.iter().any(|c| c.name == name && c.op == op), "{name}: {op:?}");
        }
    }

    #[test]
    fn cpu_sgemm_matches_twin_in_all_transposes() {
        let mut rng = StdRng::seed_from_u64(3);
        for (trans_a, trans_b) in TRANSPOSES {
            let op = MatmulOp { m: 5, n: 7, k: 3, trans_a, trans_b, ..MatmulOp::default() };
            let (a, b) = (random(&mut rng, op.a_len()), random(&mut rng, op.b_len()));
            let (mut got, mut want) = (vec![0.0; 35], vec![0.0; 35]);
            cpu_sgemm(&op, &a, &b, &mut got);
            twin::matmul(&op, &a, &b, None, &mut want, &mut []);
            compare("cpu sgemm", &op, &got, &want, &|_| 3.0).unwrap();
        }
    }
}
