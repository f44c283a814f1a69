//! The matmul kernels (tiled, naive, bias gradient) against their CPU twin, the Linear
//! backward products against finite differences, and bad input.

mod common;

use common::{gpu, upload};

use gradguard::cpu::matmul as twin;
use gradguard::kernels::matmul::{MatmulKernel, MatmulOp, Staging, Tiling};
use gradguard::readback::read_f32s;
use gradguard::wgpu;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random(rng: &mut StdRng, n: u64) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn run(record: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    let mut encoder = gpu().device.create_command_encoder(&Default::default());
    record(&mut encoder.begin_compute_pass(&Default::default()));
    gpu().queue.submit([encoder.finish()]);
}

#[derive(Clone, Copy, PartialEq)]
enum Algo {
    Tiled,
    Naive,
}

/// Runs `op` on the GPU and the twin with random data and checks every output within the
/// f32 dot-product error bound (k + 2)·ε·(|A|·|B| + |bias| + |C|).
fn check(kernel: &MatmulKernel, op: MatmulOp, with_bias: bool, algo: Algo, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (a, b, c0) = (random(&mut rng, op.a_len()), random(&mut rng, op.b_len()), random(&mut rng, op.c_len()));
    let bias = with_bias.then(|| random(&mut rng, op.n as u64));
    let (ga, gb, gc) = (upload(&a), upload(&b), upload(&c0));
    let gbias = bias.as_ref().map(|v| upload(v));
    let binding = kernel.bind(&gpu().device, &op, &ga, &gb, gbias.as_ref(), &gc).unwrap();
    run(|pass| match algo {
        Algo::Tiled => kernel.encode(pass, &binding),
        Algo::Naive => kernel.encode_naive(pass, &binding),
    });
    let got = read_f32s(&gpu().device, &gpu().queue, &gc).unwrap();

    let mut want = c0.clone();
    twin::matmul(&op, &a, &b, bias.as_deref(), &mut want);
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let mut scale = abs(&c0);
    let abs_bias = bias.as_deref().map(abs);
    twin::matmul(&MatmulOp { accumulate: op.accumulate, ..op }, &abs(&a), &abs(&b), abs_bias.as_deref(), &mut scale);
    for i in 0..want.len() {
        let tol = (op.k as f32 + 2.0) * f32::EPSILON * scale[i];
        assert!(
            (got[i] - want[i]).abs() <= tol,
            "{op:?} bias={with_bias} element {i}: gpu {} twin {} (tolerance {tol})",
            got[i],
            want[i]
        );
    }
}

/// Odd and 4-aligned shapes: the tiled kernels read 4-aligned operands as vec4 (m, n, k all
/// multiples of 4; or only m, or n, so that one operand is vectorized and k has a tail).
const SHAPES: [(u32, u32, u32); 10] = [
    (1, 1, 1),
    (7, 13, 5),
    (64, 64, 64),
    (65, 63, 17),
    (3, 130, 70),
    (255, 257, 129),
    (68, 36, 20),
    (36, 18, 13),
    (9, 20, 6),
    (132, 260, 44),
];

fn each_case(mut f: impl FnMut(MatmulOp, bool)) {
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        for trans in 0..4 {
            let op = MatmulOp { m, n, k, trans_a: trans & 1 != 0, trans_b: trans & 2 != 0, accumulate: false };
            f(op, i % 2 == 0);
        }
    }
}

#[test]
fn tiled_matches_twin_all_transposes() {
    let kernel = MatmulKernel::new(&gpu().device).unwrap();
    each_case(|op, bias| check(&kernel, op, bias, Algo::Tiled, 1));
}

#[test]
fn naive_matches_twin_all_transposes() {
    let kernel = MatmulKernel::new(&gpu().device).unwrap();
    each_case(|op, bias| check(&kernel, op, bias, Algo::Naive, 2));
}

#[test]
fn other_tilings_and_accumulation() {
    let workgroup = |wg_m, wg_n, tile_k| Tiling { wg_m, wg_n, tile_k, staging: Staging::Workgroup };
    let direct = |wg_m, wg_n| Tiling { wg_m, wg_n, tile_k: 1, staging: Staging::Direct };
    // Whichever of the two `MatmulKernel::new` did not pick is tested here too.
    for tiling in [Tiling::default(), Tiling::CPU, workgroup(8, 8, 8), workgroup(4, 16, 5), direct(4, 16), direct(3, 5)]
    {
        let kernel = MatmulKernel::with_tiling(&gpu().device, tiling).unwrap();
        each_case(|op, bias| check(&kernel, MatmulOp { accumulate: bias, ..op }, bias, Algo::Tiled, 3));
    }
}

#[test]
fn bias_grad_matches_twin() {
    let kernel = MatmulKernel::new(&gpu().device).unwrap();
    let mut rng = StdRng::seed_from_u64(4);
    for (rows, cols) in [(1, 1), (7, 13), (1000, 257), (3, 600)] {
        for accumulate in [false, true] {
            let dy = random(&mut rng, rows as u64 * cols as u64);
            let db0 = random(&mut rng, cols as u64);
            let (gdy, gdb) = (upload(&dy), upload(&db0));
            let binding = kernel.bind_bias_grad(&gpu().device, rows, cols, &gdy, &gdb, accumulate).unwrap();
            run(|pass| kernel.encode_bias_grad(pass, &binding));
            let got = read_f32s(&gpu().device, &gpu().queue, &gdb).unwrap();
            let mut want = db0.clone();
            twin::bias_grad(rows as usize, cols as usize, &dy, &mut want, accumulate);
            for j in 0..cols as usize {
                let tol = (rows as f32 + 1.0) * f32::EPSILON * (rows as f32 + 1.0);
                assert!((got[j] - want[j]).abs() <= tol, "{rows}x{cols} column {j}: gpu {} twin {}", got[j], want[j]);
            }
        }
    }
}

/// The twin's Linear backward (dX = G·W, dW = Gᵀ·X, db = Σ_rows G) against central finite
/// differences of L = Σ G ⊙ (x·Wᵀ + b). L is linear in each operand, so the central
/// difference is exact up to rounding and a large step keeps rounding small.
#[test]
fn linear_backward_matches_finite_differences() {
    let (batch, fin, fout) = (5u32, 4u32, 3u32);
    let mut rng = StdRng::seed_from_u64(5);
    let x = random(&mut rng, (batch * fin) as u64);
    let w = random(&mut rng, (fout * fin) as u64);
    let b = random(&mut rng, fout as u64);
    let g = random(&mut rng, (batch * fout) as u64);
    let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
        let mut y = vec![0.0; (batch * fout) as usize];
        twin::matmul(&MatmulOp::linear_forward(batch, fin, fout), x, w, Some(b), &mut y);
        y.iter().zip(&g).map(|(y, g)| *y as f64 * *g as f64).sum()
    };
    let fd = |which: usize| -> Vec<f64> {
        let base = [x.clone(), w.clone(), b.clone()];
        (0..base[which].len())
            .map(|i| {
                let at = |h: f32| {
                    let mut v = base.clone();
                    v[which][i] += h;
                    loss(&v[0], &v[1], &v[2])
                };
                (at(0.5) - at(-0.5)) / 1.0
            })
            .collect()
    };
    let mut dx = vec![0.0; x.len()];
    twin::matmul(&MatmulOp::linear_input_grad(batch, fin, fout), &g, &w, None, &mut dx);
    let mut dw = vec![0.0; w.len()];
    twin::matmul(&MatmulOp::linear_weight_grad(batch, fin, fout), &g, &x, None, &mut dw);
    let mut db = vec![0.0; b.len()];
    twin::bias_grad(batch as usize, fout as usize, &g, &mut db, false);
    for (name, analytic, numeric) in [("dX", dx, fd(0)), ("dW", dw, fd(1)), ("db", db, fd(2))] {
        for (i, (a, n)) in analytic.iter().zip(&numeric).enumerate() {
            assert!((*a as f64 - n).abs() < 1e-5, "{name}[{i}]: analytic {a} finite difference {n}");
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let device = &gpu().device;
    let kernel = MatmulKernel::new(device).unwrap();
    let op = MatmulOp { m: 4, n: 4, k: 4, ..Default::default() };
    let buf = upload(&[0.0; 16]);
    let small = upload(&[0.0; 15]);
    let out = upload(&[0.0; 16]);
    let no_storage = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let zero = MatmulOp { m: 0, ..op };
    assert!(matches!(kernel.bind(device, &zero, &buf, &buf, None, &small), Err(gradguard::Error::Invalid(_))));
    assert!(matches!(kernel.bind(device, &op, &buf, &small, None, &out), Err(gradguard::Error::LengthMismatch { .. })));
    assert!(matches!(
        kernel.bind(device, &op, &buf, &buf, None, &no_storage),
        Err(gradguard::Error::MissingBufferUsage { missing, .. }) if missing == wgpu::BufferUsages::STORAGE
    ));
    assert!(matches!(kernel.bind(device, &op, &buf, &small, None, &small), Err(gradguard::Error::Invalid(_))));
    assert!(matches!(
        kernel.bind(device, &op, &small, &small, None, &out),
        Err(gradguard::Error::LengthMismatch { .. })
    ));
    assert!(kernel.bind(device, &op, &buf, &buf, None, &out).is_ok(), "read-only operands may alias");
    assert!(kernel.bind_bias_grad(device, 0, 4, &buf, &buf, false).is_err());
    let too_many_threads = Tiling { wg_m: 64, wg_n: 64, ..Tiling::default() };
    let too_much_memory = Tiling { tile_k: 4096, ..Tiling::default() };
    for tiling in [too_many_threads, too_much_memory] {
        let err = MatmulKernel::with_tiling(device, tiling).unwrap_err();
        assert!(matches!(err, gradguard::Error::Invalid(_)), "{tiling:?}: {err}");
    }
    assert!(MatmulKernel::with_tiling(device, Tiling { wg_m: 0, wg_n: 1, tile_k: 1, ..Tiling::CPU }).is_err());
}
