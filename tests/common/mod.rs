//! Shared by the GPU tests: one device per test binary, uploads, random data, comparisons.
#![allow(dead_code)]

use std::sync::OnceLock;

use gradguard::wgpu::{self, util::DeviceExt};
use gradguard::Gpu;
use rand::{rngs::StdRng, Rng, SeedableRng};

pub mod sharded;

/// The test device. No adapter is a failure with instructions, never a silent skip.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}")))
}

/// Serialises the tests of a binary that holds the device for long: wgpu's GL backend
/// panics ("Could not lock adapter context") when a thread waits more than 6 s for the GL
/// context, which another test's long products can hold on a slow CPU device.
pub fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it leaves the others their turn.
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

pub fn upload(data: &[f32]) -> wgpu::Buffer {
    upload_with(data, USAGE)
}

pub fn upload_with(data: &[f32], usage: wgpu::BufferUsages) -> wgpu::Buffer {
    // Never bind an empty buffer: pad to one element.
    let padded: Vec<f32> = if data.is_empty() { vec![0.0] } else { data.to_vec() };
    gpu().device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("test data"),
        contents: bytemuck::cast_slice(&padded),
        usage,
    })
}

pub fn download(buffer: &wgpu::Buffer) -> Vec<f32> {
    gradguard::readback::read_f32s(&gpu().device, &gpu().queue, buffer).unwrap()
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Standard-normal-ish values (sum of uniforms), times `scale`.
pub fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5) * 2.0 * scale).collect()
}

/// Equal within `rel` relative error; NaN equals NaN, inf equals inf of the same sign.
pub fn assert_close(gpu: f32, cpu: f32, rel: f32, what: &str) {
    if gpu.is_nan() || cpu.is_nan() {
        assert!(gpu.is_nan() && cpu.is_nan(), "{what}: gpu {gpu} vs cpu {cpu}");
        return;
    }
    if gpu.is_infinite() || cpu.is_infinite() {
        assert_eq!(gpu, cpu, "{what}");
        return;
    }
    let err = (gpu as f64 - cpu as f64).abs();
    let tol = rel as f64 * (cpu as f64).abs().max(f32::MIN_POSITIVE as f64);
    assert!(err <= tol, "{what}: gpu {gpu:e} vs cpu {cpu:e} (relative error {:e})", err / (cpu as f64).abs());
}

pub fn assert_all_close(gpu: &[f32], cpu: &[f32], rel: f32, what: &str) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        assert_close(g, c, rel, &format!("{what}[{i}]"));
    }
}

/// Mixed segment sizes, some empty, some odd, some large.
pub fn mixed_lens(rng: &mut StdRng, count: usize) -> Vec<u64> {
    (0..count)
        .map(|i| match i % 7 {
            0 => 0,
            1 => 1,
            2 => rng.random_range(2..300),
            3 => 257,
            4 => rng.random_range(1000..20_000),
            5 => 4096 + 3,
            _ => rng.random_range(1..5000),
        })
        .collect()
}
