//! Host initialization: torch's fans and gains, the distributions' moments, seeding, and
//! orthogonality (checked on the GPU with the matmul kernel too).
#![cfg(feature = "train")]

mod common;

use common::gpu;

use gradguard::init::{self, FanMode, Nonlinearity};
use gradguard::kernels::matmul::{MatmulKernel, MatmulOp};
use gradguard::readback::read_f32s;
use gradguard::wgpu::{self, util::DeviceExt};

/// (mean, standard deviation, max |x|).
fn moments(v: &[f32]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
    let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt(), v.iter().map(|x| x.abs() as f64).fold(0.0, f64::max))
}

fn assert_moments(what: &str, v: &[f32], std: f64, bound: Option<f64>) {
    let (m, s, max) = moments(v);
    assert!(m.abs() < 0.02 * std, "{what}: mean {m}");
    assert!((s / std - 1.0).abs() < 0.02, "{what}: std {s}, want {std}");
    if let Some(b) = bound {
        assert!(max <= b * (1.0 + 1e-6) && max > 0.99 * b, "{what}: max |x| {max}, bound {b}");
    }
}

#[test]
fn fans_and_gains_follow_torch() {
    assert_eq!(init::fans(&[30, 20]).unwrap(), (20, 30));
    assert_eq!(init::fans(&[8, 3, 5, 5]).unwrap(), (75, 200));
    assert!(matches!(init::fans(&[4]), Err(gradguard::Error::OutOfRange { expected: "≥ 2", .. })));
    assert_eq!(Nonlinearity::Linear.gain(), 1.0);
    assert_eq!(Nonlinearity::Sigmoid.gain(), 1.0);
    assert_eq!(Nonlinearity::Tanh.gain(), 5.0 / 3.0);
    assert_eq!(Nonlinearity::Relu.gain(), 2f64.sqrt());
    assert_eq!(Nonlinearity::LeakyRelu(0.0).gain(), 2f64.sqrt());
    assert!((Nonlinearity::LeakyRelu(0.2).gain() - (2.0 / 1.04f64).sqrt()).abs() < 1e-7);
}

#[test]
fn distributions_have_torch_moments() {
    let mut rng = init::rng(1);
    let shape = [400, 600];
    let g = 5.0 / 3.0;
    let a = g * (6.0f64 / 1000.0).sqrt();
    assert_moments("xavier_uniform", &init::xavier_uniform(&mut rng, &shape, g).unwrap(), a / 3f64.sqrt(), Some(a));
    assert_moments(
        "xavier_normal",
        &init::xavier_normal(&mut rng, &shape, g).unwrap(),
        g * (2.0f64 / 1000.0).sqrt(),
        None,
    );
    let relu = Nonlinearity::Relu;
    let b = 2f64.sqrt() * (3.0f64 / 600.0).sqrt();
    let v = init::kaiming_uniform(&mut rng, &shape, FanMode::FanIn, relu).unwrap();
    assert_moments("kaiming_uniform fan_in", &v, b / 3f64.sqrt(), Some(b));
    let b = 2f64.sqrt() * (3.0f64 / 400.0).sqrt();
    let v = init::kaiming_uniform(&mut rng, &shape, FanMode::FanOut, relu).unwrap();
    assert_moments("kaiming_uniform fan_out", &v, b / 3f64.sqrt(), Some(b));
    let std = Nonlinearity::LeakyRelu(0.1).gain() / 600f64.sqrt();
    let v = init::kaiming_normal(&mut rng, &shape, FanMode::FanIn, Nonlinearity::LeakyRelu(0.1)).unwrap();
    assert_moments("kaiming_normal", &v, std, None);
    let v = init::normal(&mut rng, 240_000, 0.0, 0.02).unwrap();
    assert_moments("normal", &v, 0.02, None);
    let v = init::normal(&mut rng, 100_000, 3.0, 1.0).unwrap();
    assert!((moments(&v).0 - 3.0).abs() < 0.02);
    assert_eq!(init::xavier_uniform(&mut rng, &[0, 5], 1.0).unwrap(), Vec::<f32>::new());
    assert!(init::normal(&mut rng, 4, 0.0, -1.0).is_err());
    assert!(init::xavier_normal(&mut rng, &[3], 1.0).is_err());
}

#[test]
fn seeds_reproduce() {
    let draw = |seed| init::kaiming_normal(&mut init::rng(seed), &[16, 9], FanMode::FanIn, Nonlinearity::Relu).unwrap();
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
}

/// W·Wᵀ (rows ≤ cols) or Wᵀ·W (rows > cols) is gain²·I.
fn gram(w: &[f32], rows: usize, cols: usize) -> Vec<f64> {
    let k = rows.min(cols);
    let at = |r: usize, c: usize| w[r * cols + c] as f64;
    let mut g = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..k {
            g[i * k + j] = if rows <= cols {
                (0..cols).map(|c| at(i, c) * at(j, c)).sum()
            } else {
                (0..rows).map(|r| at(r, i) * at(r, j)).sum()
            };
        }
    }
    g
}

#[test]
fn orthogonal_is_orthonormal() {
    for (shape, gain) in [(vec![5usize, 5], 1.0), (vec![40, 7], 2.0), (vec![7, 40], 0.5), (vec![6, 2, 3, 3], 1.0)] {
        let w = init::orthogonal(&mut init::rng(3), &shape, gain).unwrap();
        let (rows, cols) = (shape[0], shape[1..].iter().product::<usize>());
        let g = gram(&w, rows, cols);
        let k = rows.min(cols);
        for i in 0..k {
            for j in 0..k {
                let want = if i == j { gain * gain } else { 0.0 };
                assert!((g[i * k + j] - want).abs() < 1e-5, "{shape:?} gram[{i},{j}] = {}", g[i * k + j]);
            }
        }
    }
    assert!(init::orthogonal(&mut init::rng(3), &[4], 1.0).is_err());
}

/// An orthogonal weight uploaded and multiplied on the GPU: W·Wᵀ = I.
#[test]
fn orthogonal_weight_on_the_gpu() {
    let device = &gpu().device;
    let n = 97u32;
    let w = init::orthogonal(&mut init::rng(4), &[n as usize, n as usize], 1.0).unwrap();
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let gw = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&w),
        usage,
    });
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4 * (n * n) as u64,
        usage,
        mapped_at_creation: false,
    });
    let kernel = MatmulKernel::new(device).unwrap();
    // W·Wᵀ is Linear forward of x = W through the weight W.
    let binding = kernel.bind(device, &MatmulOp::linear_forward(n, n, n), &gw, &gw, None, &out).unwrap();
    let mut encoder = device.create_command_encoder(&Default::default());
    kernel.encode(&mut encoder.begin_compute_pass(&Default::default()), &binding);
    gpu().queue.submit([encoder.finish()]);
    let product = read_f32s(device, &gpu().queue, &out).unwrap();
    for i in 0..n as usize {
        for j in 0..n as usize {
            let want = if i == j { 1.0 } else { 0.0 };
            assert!(
                (product[i * n as usize + j] - want).abs() < 1e-5,
                "(W·Wᵀ)[{i},{j}] = {}",
                product[i * n as usize + j]
            );
        }
    }
}

#[test]
fn spectral_radius_of_known_matrices() {
    // A rotation scaled by 2 (eigenvalues ±2i: the power method's vector never settles),
    // a diagonal, and a triangular matrix (eigenvalues on its diagonal).
    assert!((init::spectral_radius(&[0.0, -2.0, 2.0, 0.0], 2, 400) - 2.0).abs() < 1e-9);
    assert!((init::spectral_radius(&[3.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.5], 3, 400) - 3.0).abs() < 1e-9);
    assert!((init::spectral_radius(&[0.5, 4.0, 0.0, -0.9], 2, 400) - 0.9).abs() < 1e-3);
    assert_eq!(init::spectral_radius(&[0.0; 4], 2, 10), 0.0);
}

/// Pascanu's smart tanh: 15 non-zeros a row, spectral radius 0.95, and seeded.
#[test]
fn sparse_spectral_is_the_papers_smart_tanh() {
    let w = init::sparse_spectral(&mut init::rng(3), 50, 15, 0.95).unwrap();
    for row in w.chunks(50) {
        assert_eq!(row.iter().filter(|x| **x != 0.0).count(), 15);
    }
    let w64: Vec<f64> = w.iter().map(|&x| x as f64).collect();
    assert!((init::spectral_radius(&w64, 50, 2000) - 0.95).abs() < 5e-3, "{}", init::spectral_radius(&w64, 50, 2000));
    assert_eq!(w, init::sparse_spectral(&mut init::rng(3), 50, 15, 0.95).unwrap());
    assert!(init::sparse_spectral(&mut init::rng(3), 50, 0, 0.95).is_err());
    assert!(init::sparse_spectral(&mut init::rng(3), 50, 15, f64::NAN).is_err());
}
