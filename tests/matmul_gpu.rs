//! The matmul kernels (tiled, naive, every fused epilogue, on views at non-zero offsets)
//! against their CPU twin, the fused Linear backward against finite differences, and bad
//! input.

mod common;

use common::{gpu, upload};

use gradguard::cpu::matmul as twin;
use gradguard::kernels::activation::Activation;
use gradguard::kernels::matmul::{Epilogue, MatmulKernel, MatmulOp, MatmulOperands, Staging, Tiling};
use gradguard::kernels::View;
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

/// `data` uploaded behind 256 bytes of padding, as a view at that offset.
fn upload_at(data: &[f32]) -> wgpu::Buffer {
    let mut padded = vec![f32::NAN; 64];
    padded.extend_from_slice(data);
    upload(&padded)
}

fn at(buffer: &wgpu::Buffer) -> View<'_> {
    View::at(buffer, 256)
}

fn download_at(buffer: &wgpu::Buffer) -> Vec<f32> {
    read_f32s(&gpu().device, &gpu().queue, buffer).unwrap()[64..].to_vec()
}

/// Runs `op` on the GPU (every operand a view at a non-zero offset) and the twin with
/// random data and checks every output within the f32 dot-product error bound
/// (k + 2)·ε·(|A|·|B| + |bias| + |C|), times the activation's largest slope where the
/// epilogue applies one.
fn check(kernel: &MatmulKernel, op: MatmulOp, with_bias: bool, algo: Algo, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (a, b, c0) = (random(&mut rng, op.a_len()), random(&mut rng, op.b_len()), random(&mut rng, op.c_len()));
    let aux0 = random(&mut rng, op.aux_len().max(1));
    let bias = with_bias.then(|| random(&mut rng, op.n as u64));
    let (ga, gb, gc, gaux) = (upload_at(&a), upload_at(&b), upload_at(&c0), upload_at(&aux0));
    let gbias = bias.as_ref().map(|v| upload_at(v));
    let v = MatmulOperands { a: at(&ga), b: at(&gb), bias: gbias.as_ref().map(at), c: at(&gc), aux: (op.aux_len() > 0).then(|| at(&gaux)) };
    let binding = kernel.bind_views(&gpu().device, &op, v).unwrap();
    run(|pass| match algo {
        Algo::Tiled => kernel.encode(pass, &binding),
        Algo::Naive => kernel.encode_naive(pass, &binding),
    });
    let (got, got_aux) = (download_at(&gc), download_at(&gaux));

    let (mut want, mut want_aux) = (c0.clone(), aux0.clone());
    twin::matmul(&op, &a, &b, bias.as_deref(), &mut want, &mut want_aux[..op.aux_len() as usize]);
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let mut scale = abs(&c0);
    let abs_bias = bias.as_deref().map(abs);
    let plain = MatmulOp { epilogue: Epilogue::Plain, ..op };
    twin::matmul(&plain, &abs(&a), &abs(&b), abs_bias.as_deref(), &mut scale, &mut []);
    let slope = match op.epilogue {
        Epilogue::Activate(a) | Epilogue::ThroughActivation(a) if matches!(a, Activation::Gelu { .. }) => 1.13,
        _ => 1.0,
    };
    let tol = |s: f32| (op.k as f32 + 2.0) * f32::EPSILON * s * slope + f32::MIN_POSITIVE;
    let outputs = if op.epilogue == Epilogue::BiasGrad { vec![] } else { vec![(&got, &want, "C")] };
    let aux_check = matches!(op.epilogue, Epilogue::Activate(_));
    for (got, want, what) in outputs.into_iter().chain(aux_check.then_some((&got_aux, &want_aux, "act(C)"))) {
        for i in 0..want.len() {
            assert!(
                (got[i] - want[i]).abs() <= tol(scale[i]),
                "{op:?} bias={with_bias} {what}[{i}]: gpu {} twin {} (tolerance {})",
                got[i],
                want[i],
                tol(scale[i])
            );
        }
    }
    if op.epilogue == Epilogue::BiasGrad {
        // The weight gradient as a plain product, the bias gradient as row sums of op(A).
        for i in 0..want.len() {
            assert!((got[i] - want[i]).abs() <= tol(scale[i]), "{op:?} C[{i}]: gpu {} twin {}", got[i], want[i]);
        }
        for row in 0..op.m as usize {
            let sum_abs: f32 = (0..op.k as usize).map(|kk| if op.trans_a { a[kk * op.m as usize + row] } else { a[row * op.k as usize + kk] }.abs()).sum();
            let bound = tol(sum_abs + if op.accumulate { aux0[row].abs() } else { 0.0 });
            assert!((got_aux[row] - want_aux[row]).abs() <= bound, "{op:?} bias grad[{row}]: gpu {} twin {}", got_aux[row], want_aux[row]);
        }
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
            let op = MatmulOp { m, n, k, trans_a: trans & 1 != 0, trans_b: trans & 2 != 0, ..MatmulOp::default() };
            f(op, i % 2 == 0);
        }
    }
}

#[test]
fn tiled_matches_twin_all_transposes() {
    let _turn = common::take_turn();
    let kernel = MatmulKernel::new(&gpu().device).unwrap();
    each_case(|op, bias| check(&kernel, op, bias, Algo::Tiled, 1));
}

#[test]
fn naive_matches_twin_all_transposes() {
    let _turn = common::take_turn();
    let kernel = MatmulKernel::new(&gpu().device).unwrap();
    each_case(|op, bias| check(&kernel, op, bias, Algo::Naive, 2));
}

#[test]
fn other_tilings_and_accumulation() {
    let _turn = common::take_turn();
    let workgroup = |wg_m, wg_n, tile_k| Tiling { wg_m, wg_n, tile_k, staging: Staging::Workgroup };
    let direct = |wg_m, wg_n| Tiling { wg_m, wg_n, tile_k: 1, staging: Staging::Direct };
    // Whichever of the two `MatmulKernel::new` did not pick is tested here too.
    for tiling in [Tiling::default(), Tiling::CPU, workgroup(8, 8, 8), workgroup(4, 16, 5), direct(4, 16), direct(3, 5)]
    {
        let kernel = MatmulKernel::with_tiling(&gpu().device, tiling).unwrap();
        each_case(|op, bias| check(&kernel, MatmulOp { accumulate: bias, ..op }, bias, Algo::Tiled, 3));
    }
}

/// Every fused epilogue, with each activation, on every shape and transpose.
#[test]
fn fused_epilogues_match_twin() {
    let _turn = common::take_turn();
    let kernel = MatmulKernel::new(&gpu().device).unwrap();
    let acts = [Activation::Relu, Activation::LeakyRelu(0.1), Activation::Tanh, Activation::Sigmoid, Activation::GELU];
    let mut seed = 10;
    each_case(|op, bias| {
        for (i, act) in acts.iter().enumerate() {
            seed += 1;
            let epilogue = [Epilogue::Activate(*act), Epilogue::ThroughActivation(*act)][i % 2];
            check(&kernel, op.with(epilogue), bias, Algo::Tiled, seed);
        }
        for accumulate in [false, true] {
            seed += 1;
            check(&kernel, MatmulOp { accumulate, ..op }.with(Epilogue::BiasGrad), false, Algo::Tiled, seed);
        }
        check(&kernel, op.with(Epilogue::BiasGrad), false, Algo::Naive, seed);
    });
}

/// The fused Linear backward on the device (dZ = (G·W) ⊙ act'(Z) through the activation
/// below; dW = Gᵀ·act(Z) with db = Σ_rows G beside it) against central finite differences
/// of L = Σ G ⊙ (act(Z)·Wᵀ + b), computed in f64.
#[test]
fn fused_linear_backward_matches_finite_differences() {
    let _turn = common::take_turn();
    let kernel = MatmulKernel::new(&gpu().device).unwrap();
    for (batch, fin, fout) in [(5u32, 4u32, 3u32), (3, 7, 1), (1, 1, 1), (64, 50, 129)] {
        let mut rng = StdRng::seed_from_u64(5 + fin as u64);
        let z = random(&mut rng, (batch * fin) as u64);
        let w = random(&mut rng, (fout * fin) as u64);
        let b = random(&mut rng, fout as u64);
        let g = random(&mut rng, (batch * fout) as u64);
        let act = Activation::Tanh;
        let loss = |z: &[f64], w: &[f64], b: &[f64]| -> f64 {
            let mut sum = 0.0;
            for r in 0..batch as usize {
                for o in 0..fout as usize {
                    let y: f64 = (0..fin as usize).map(|i| z[r * fin as usize + i].tanh() * w[o * fin as usize + i]).sum::<f64>() + b[o];
                    sum += y * g[r * fout as usize + o] as f64;
                }
            }
            sum
        };
        let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let fd = |which: usize, i: usize| -> f64 {
            let h = 1e-4;
            let at = |d: f64| {
                let mut v = [wide(&z), wide(&w), wide(&b)];
                v[which][i] += d;
                loss(&v[0], &v[1], &v[2])
            };
            (at(h) - at(-h)) / (2.0 * h)
        };
        // Device: y = tanh(z) as the layer below would leave it, then the two fused products.
        let y: Vec<f32> = z.iter().map(|v| v.tanh()).collect();
        let (gz, gy, gw, gg) = (upload_at(&z), upload_at(&y), upload_at(&w), upload_at(&g));
        let (dz, dw, db) = (upload_at(&vec![0.0; z.len()]), upload_at(&vec![0.0; w.len()]), upload_at(&vec![0.0; b.len()]));
        let device = &gpu().device;
        let input = MatmulOp::linear_input_grad(batch, fin, fout).with(Epilogue::ThroughActivation(act));
        let v = MatmulOperands { a: at(&gg), b: at(&gw), bias: None, c: at(&dz), aux: Some(at(&gz)) };
        let input = kernel.bind_views(device, &input, v).unwrap();
        let weight = MatmulOp::linear_weight_grad(batch, fin, fout).with(Epilogue::BiasGrad);
        let v = MatmulOperands { a: at(&gg), b: at(&gy), bias: None, c: at(&dw), aux: Some(at(&db)) };
        let weight = kernel.bind_views(device, &weight, v).unwrap();
        run(|pass| {
            kernel.encode(pass, &input);
            kernel.encode(pass, &weight);
        });
        for (name, which, analytic) in [("dZ", 0, download_at(&dz)), ("dW", 1, download_at(&dw)), ("db", 2, download_at(&db))] {
            for (i, a) in analytic.iter().enumerate() {
                let n = fd(which, i);
                assert!((*a as f64 - n).abs() < 1e-4 * (1.0 + n.abs()) * (1.0 + batch as f64 / 16.0), "{batch}x{fin}x{fout} {name}[{i}]: device {a} finite difference {n}");
            }
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let _turn = common::take_turn();
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
    assert!(matches!(kernel.bind(device, &zero, &buf, &buf, None, &small), Err(gradguard::Error::OutOfRange { what: "matmul m", .. })));
    assert!(matches!(kernel.bind(device, &op, &buf, &small, None, &out), Err(gradguard::Error::LengthMismatch { .. })));
    assert!(matches!(
        kernel.bind(device, &op, &buf, &buf, None, &no_storage),
        Err(gradguard::Error::MissingBufferUsage { missing, .. }) if missing == wgpu::BufferUsages::STORAGE
    ));
    assert!(matches!(kernel.bind(device, &op, &buf, &small, None, &small), Err(gradguard::Error::Aliased { .. })));
    assert!(matches!(
        kernel.bind(device, &op, &small, &small, None, &out),
        Err(gradguard::Error::LengthMismatch { .. })
    ));
    assert!(kernel.bind(device, &op, &buf, &buf, None, &out).is_ok(), "read-only operands may alias");
    let fused = op.with(Epilogue::BiasGrad);
    assert!(matches!(kernel.bind(device, &fused, &buf, &buf, None, &out), Err(gradguard::Error::Incompatible { .. })), "BiasGrad needs its operand");
    let unaligned = MatmulOperands { a: View::at(&buf, 4), b: (&buf).into(), bias: None, c: (&out).into(), aux: None };
    assert!(matches!(kernel.bind_views(device, &op, unaligned), Err(gradguard::Error::Misaligned { .. })), "views start at multiples of 256 bytes");
    let overlapping = MatmulOperands { a: (&buf).into(), b: (&buf).into(), bias: None, c: (&out).into(), aux: Some((&out).into()) };
    assert!(matches!(kernel.bind_views(device, &fused, overlapping), Err(gradguard::Error::Aliased { .. })), "C and aux overlap");
    let too_many_threads = Tiling { wg_m: 64, wg_n: 64, ..Tiling::default() };
    let too_much_memory = Tiling { tile_k: 4096, ..Tiling::default() };
    for tiling in [too_many_threads, too_much_memory] {
        let err = MatmulKernel::with_tiling(device, tiling).unwrap_err();
        assert!(matches!(err, gradguard::Error::TooLarge { .. }), "{tiling:?}: {err}");
    }
    let empty = MatmulKernel::with_tiling(device, Tiling { wg_m: 0, wg_n: 1, tile_k: 1, ..Tiling::CPU });
    assert!(matches!(empty, Err(gradguard::Error::OutOfRange { what: "wg_m", .. })));
}
