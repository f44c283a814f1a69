//! Criterion benches of the norm and the global-norm clip on 16M floats (one segment and
//! 1,000 mixed segments), beside the copy kernel they are judged against. Each kernel is
//! first checked against its CPU twin on a small set. `gradguard bench` reports the same
//! kernels as ratios to copy measured in one run; this is for criterion's statistics.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gradguard::bench::clip::segment_lens;
use gradguard::kernels::copy::CopyKernel;
use gradguard::readback::read_stats_blocking;
use gradguard::wgpu::{self, util::DeviceExt};
use gradguard::{cpu, ClipPolicy, Gpu, GradClip, GradSet, NonFinitePolicy, NormKind};

const ELEMS: u64 = 1 << 24;

fn buffer(gpu: &Gpu, data: &[f32]) -> wgpu::Buffer {
    gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(data),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    })
}

fn submit_and_wait(gpu: &Gpu, record: impl FnOnce(&mut wgpu::CommandEncoder)) {
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    record(&mut encoder);
    gpu.queue.submit([encoder.finish()]);
    gpu.wait().unwrap();
}

/// The norm must agree with its twin before anything is timed.
fn check(gpu: &Gpu) {
    let data: Vec<f32> = (0..100_003).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01).collect();
    let set = GradSet::packed(&buffer(gpu, &data), &[50_000, 50_003]);
    let clip = GradClip::new(&gpu.device, &set, ClipPolicy::None, NonFinitePolicy::Propagate).unwrap();
    submit_and_wait(gpu, |e| clip.encode(e));
    let got = read_stats_blocking(&gpu.device, &gpu.queue, clip.stats_buffer()).unwrap().l2;
    let want = cpu::norm::norm(&[&data[..50_000], &data[50_000..]], NormKind::L2, None, 1e-6, NonFinitePolicy::Propagate).l2;
    assert!((got - want).abs() <= 1e-5 * want, "norm {got} differs from its twin {want}");
}

fn benches(c: &mut Criterion) {
    let gpu = Gpu::new().expect("benches need a GPU adapter");
    check(&gpu);
    let data: Vec<f32> = (0..ELEMS).map(|i| (((i * 2_654_435_761) >> 8) % 65_536) as f32 / 32_768.0 - 1.0).collect();
    let grads = buffer(&gpu, &data);
    let bytes = ELEMS * 4;
    let mut group = c.benchmark_group("16M floats");
    group.sample_size(20);

    let copy = CopyKernel::new(&gpu.device).unwrap();
    let dst = buffer(&gpu, &data);
    let bind = copy.bind(&gpu.device, &grads, &dst, bytes).unwrap();
    group.throughput(Throughput::Bytes(2 * bytes));
    group.bench_function("copy (read + write)", |b| {
        b.iter(|| submit_and_wait(&gpu, |e| copy.encode(&mut e.begin_compute_pass(&Default::default()), &bind)))
    });

    for segments in [1, 1000] {
        let set = GradSet::packed(&grads, &segment_lens(ELEMS, segments));
        let norm = GradClip::new(&gpu.device, &set, ClipPolicy::None, NonFinitePolicy::Propagate).unwrap();
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(format!("norm L2, {segments} segments (read)"), |b| {
            b.iter(|| submit_and_wait(&gpu, |e| norm.norm().encode(e)))
        });
        // max_norm just below the norm: every element is scaled by ~0.9999.
        submit_and_wait(&gpu, |e| norm.encode(e));
        let l2 = read_stats_blocking(&gpu.device, &gpu.queue, norm.stats_buffer()).unwrap().l2;
        let policy = ClipPolicy::GlobalNorm { max_norm: l2 * 0.9999, kind: NormKind::L2 };
        let clip = GradClip::new(&gpu.device, &set, policy, NonFinitePolicy::Propagate).unwrap();
        submit_and_wait(&gpu, |e| clip.norm().encode(e));
        group.throughput(Throughput::Bytes(2 * bytes));
        group.bench_function(format!("clip scale, {segments} segments (read + write)"), |b| {
            b.iter(|| submit_and_wait(&gpu, |e| clip.encode_clip_only(&mut e.begin_compute_pass(&Default::default()))))
        });
        gpu.queue.write_buffer(&grads, 0, bytemuck::cast_slice(&data));
    }
    group.finish();
}

criterion_group!(clip, benches);
criterion_main!(clip);
