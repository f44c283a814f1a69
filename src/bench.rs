//! Throughput of the norm and clip kernels against our own copy kernel (the roofline),
//! all measured in one run on the same data. Shared by `gradguard bench` and `cargo bench`.

use wgpu::util::DeviceExt;

use crate::clip::{ClipPolicy, GradClip};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::grad_set::GradSet;
use crate::kernels::copy::CopyKernel;
use crate::norm::{NonFinitePolicy, NormKind};
use crate::readback::read_stats_blocking;

/// One measured kernel.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    pub kernel: String,
    pub elements: u64,
    pub segments: u32,
    /// Median over the repetitions.
    pub millis: f64,
    /// The kernel's minimum traffic (see [`BenchResult::kernel`]) over its time.
    pub gbytes_per_s: f64,
    pub ratio_to_copy: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub adapter: String,
    pub backend: String,
    /// "timestamp" (GPU timestamp queries) or "wall" (submit-to-idle wall clock).
    pub timing: &'static str,
    pub results: Vec<BenchResult>,
}

/// Which kernels `gradguard bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    Norm,
    Clip,
    All,
}

/// Segment lengths summing to `total`: one segment, or `count` of mixed sizes (a
/// deterministic spread from tiny to large, like a real model's tensors).
pub fn segment_lens(total: u64, count: u32) -> Vec<u64> {
    let count = count.max(1) as u64;
    let weights: Vec<u64> = (0..count).map(|i| 1 + (i * 2_654_435_761 % 97).pow(2)).collect();
    let sum: u64 = weights.iter().sum();
    let mut lens: Vec<u64> = weights.iter().map(|w| total * w / sum).collect();
    let short = total - lens.iter().sum::<u64>();
    lens[0] += short;
    lens
}

/// Deterministic values in [-1, 1).
fn data(n: u64) -> Vec<f32> {
    (0..n).map(|i| ((i.wrapping_mul(2_654_435_761) >> 8) % 65_536) as f32 / 32_768.0 - 1.0).collect()
}

struct Timer {
    queries: Option<(wgpu::QuerySet, wgpu::Buffer, f64)>,
}

impl Timer {
    fn new(gpu: &Gpu) -> Self {
        let queries = gpu.device.features().contains(wgpu::Features::TIMESTAMP_QUERY).then(|| {
            let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench timestamps"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (set, resolve, gpu.queue.get_timestamp_period() as f64)
        });
        Self { queries }
    }

    fn kind(&self) -> &'static str {
        if self.queries.is_some() { "timestamp" } else { "wall" }
    }

    /// Milliseconds per call of `record`, the median of `reps` passes of `inner` calls each.
    fn time(&self, gpu: &Gpu, reps: u32, inner: u32, record: &dyn Fn(&mut wgpu::ComputePass<'_>)) -> Result<f64> {
        let mut samples = Vec::with_capacity(reps as usize);
        for rep in 0..reps + 1 {
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            {
                let timestamp_writes = self.queries.as_ref().map(|(set, _, _)| wgpu::ComputePassTimestampWrites {
                    query_set: set,
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                });
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("bench"), timestamp_writes });
                for _ in 0..inner {
                    record(&mut pass);
                }
            }
            if let Some((set, resolve, _)) = &self.queries {
                encoder.resolve_query_set(set, 0..2, resolve, 0);
            }
            let start = std::time::Instant::now();
            gpu.queue.submit([encoder.finish()]);
            gpu.wait()?;
            let wall = start.elapsed().as_secs_f64() * 1e3;
            let ms = match &self.queries {
                None => wall,
                Some((_, resolve, period)) => {
                    let ticks = crate::readback::read_u64s(&gpu.device, &gpu.queue, resolve)?;
                    ticks[1].saturating_sub(ticks[0]) as f64 * period / 1e6
                }
            };
            if rep > 0 {
                samples.push(ms / inner as f64); // rep 0 warms up
            }
        }
        samples.sort_by(f64::total_cmp);
        Ok(samples[samples.len() / 2])
    }
}

/// Measures copy, then the chosen kernels, on `elements` floats cut into `segments`.
pub fn run(gpu: &Gpu, which: Which, elements: u64, segment_counts: &[u32], reps: u32) -> Result<BenchReport> {
    let elements = elements.max(4) / 4 * 4;
    let bytes = elements * 4;
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    let values = data(elements);
    let grads = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("bench gradients"),
        contents: bytemuck::cast_slice(&values),
        usage,
    });
    let timer = Timer::new(gpu);
    // Enough calls per pass that submit and wait overheads vanish (~4 GB of traffic).
    let inner = ((4u64 << 30) / (bytes * 2)).clamp(1, 50) as u32;
    let mut results = Vec::new();
    let mut push = |kernel: &str, segments: u32, millis: f64, traffic: u64, copy_rate: Option<f64>| {
        let rate = traffic as f64 / (millis * 1e6);
        results.push(BenchResult {
            kernel: kernel.to_string(),
            elements,
            segments,
            millis,
            gbytes_per_s: rate,
            ratio_to_copy: copy_rate.map_or(1.0, |c| rate / c),
        });
        rate
    };

    let copy = CopyKernel::new(&gpu.device)?;
    let dst = gpu.device.create_buffer(&wgpu::BufferDescriptor { label: Some("bench copy"), size: bytes, usage, mapped_at_creation: false });
    let bind = copy.bind(&gpu.device, &grads, &dst, bytes);
    let copy_ms = timer.time(gpu, reps, inner, &|pass| copy.encode(pass, &bind, bytes))?;
    let copy_rate = Some(push("copy", 1, copy_ms, 2 * bytes, None));

    for &segments in segment_counts {
        let set = GradSet::packed(&grads, &segment_lens(elements, segments));
        let measure = GradClip::new(&gpu.device, &set, ClipPolicy::None, NonFinitePolicy::Propagate)?;
        if matches!(which, Which::Norm | Which::All) {
            let ms = timer.time(gpu, reps, inner, &|pass| measure.norm().encode_in_pass(pass))?;
            push("norm_l2", segments, ms, bytes, copy_rate);
        }
        if matches!(which, Which::Clip | Which::All) {
            // Clip just below the norm: every element is scaled, and repeated scaling by
            // ~0.9999 keeps values far from subnormals.
            gpu.queue.write_buffer(&grads, 0, bytemuck::cast_slice(&values));
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            measure.encode(&mut encoder);
            gpu.queue.submit([encoder.finish()]);
            let norm = read_stats_blocking(&gpu.device, &gpu.queue, measure.stats_buffer())?.l2;
            let policy = ClipPolicy::GlobalNorm { max_norm: norm * 0.9999, kind: NormKind::L2 };
            let clip = GradClip::new(&gpu.device, &set, policy, NonFinitePolicy::Propagate)?;
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            clip.norm().encode(&mut encoder);
            gpu.queue.submit([encoder.finish()]);
            let ms = timer.time(gpu, reps, inner, &|pass| clip.encode_clip_only(pass))?;
            push("clip_scale", segments, ms, 2 * bytes, copy_rate);
            let ms = timer.time(gpu, reps, inner, &|pass| clip.encode_in_pass(pass))?;
            push("clip_grad_norm", segments, ms, 2 * bytes, copy_rate);
            gpu.queue.write_buffer(&grads, 0, bytemuck::cast_slice(&values));
        }
    }
    Ok(BenchReport {
        adapter: gpu.info.name.clone(),
        backend: format!("{:?}", gpu.info.backend),
        timing: timer.kind(),
        results,
    })
}

impl BenchReport {
    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut out = format!("{} ({}, {} timing)\n", self.adapter, self.backend, self.timing);
        out += &format!("{:<16} {:>12} {:>9} {:>10} {:>10} {:>8}\n", "kernel", "elements", "segments", "ms", "GB/s", "vs copy");
        for r in &self.results {
            out += &format!(
                "{:<16} {:>12} {:>9} {:>10.3} {:>10.2} {:>8.2}\n",
                r.kernel, r.elements, r.segments, r.millis, r.gbytes_per_s, r.ratio_to_copy
            );
        }
        out
    }
}
