//! Criterion bench of the tiled matmul kernel at 512³ (all four transpose cases), after
//! checking it, the naive kernel and the CPU sgemm against the CPU twin on small shapes.
//! `gradguard bench matmul` reports the same kernel as ratios to a CPU sgemm and a naive
//! kernel measured in one run; this is for criterion's statistics. Each iteration records
//! one product, submits and waits.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gradguard::bench::matmul::check_correct;
use gradguard::kernels::matmul::{MatmulKernel, MatmulOp};
use gradguard::wgpu::{self, util::DeviceExt};
use gradguard::Gpu;

const EDGE: u32 = 512;

fn buffer(gpu: &Gpu, data: &[f32]) -> wgpu::Buffer {
    gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(data),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    })
}

fn benches(c: &mut Criterion) {
    let gpu = Gpu::new().expect("benches need a GPU adapter");
    let kernel = MatmulKernel::new(&gpu.device).unwrap();
    check_correct(&gpu, &kernel).expect("the matmul kernels must agree with their CPU twin before timing");

    let len = (EDGE * EDGE) as usize;
    let data: Vec<f32> = (0..len).map(|i| (((i * 2_654_435_761) >> 8) % 65_536) as f32 / 32_768.0 - 1.0).collect();
    let (a, b, out) = (buffer(&gpu, &data), buffer(&gpu, &data), buffer(&gpu, &data));
    let mut group = c.benchmark_group("matmul 512³");
    group.sample_size(20);
    group.throughput(Throughput::Elements(2 * (EDGE as u64).pow(3))); // flop
    for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
        let op = MatmulOp { m: EDGE, n: EDGE, k: EDGE, trans_a, trans_b, ..MatmulOp::default() };
        let binding = kernel.bind(&gpu.device, &op, &a, &b, None, &out).unwrap();
        let name = format!("tiled {}{} (flop)", if trans_a { 'T' } else { 'N' }, if trans_b { 'T' } else { 'N' });
        group.bench_function(name, |bench| {
            bench.iter(|| {
                let mut encoder = gpu.device.create_command_encoder(&Default::default());
                kernel.encode(&mut encoder.begin_compute_pass(&Default::default()), &binding);
                gpu.queue.submit([encoder.finish()]);
                gpu.wait().unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(matmul, benches);
criterion_main!(matmul);
