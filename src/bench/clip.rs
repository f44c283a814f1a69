//! Throughput of the norm and clip kernels against our own copy kernel (the roofline),
//! all measured in one run on the same data.

use super::{BenchReport, BenchResult, Timer};
use crate::clip::{ClipPolicy, GradClip};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::grad_set::GradSet;
use crate::kernels::copy::CopyKernel;
use crate::kernels::{buffer_init, scoped};
use crate::norm::{NonFinitePolicy, NormKind};
use crate::readback::read_stats_blocking;

/// Which of the memory-bound kernels to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The norm alone (`norm_l2`).
    Norm,
    /// The clip pass alone and norm + clip (`clip_scale`, `clip_grad_norm`).
    Clip,
    /// Both.
    All,
}

/// Segment lengths summing to `total`: one segment, or `count` of mixed sizes (a
/// deterministic spread from tiny to large, like a real model's tensors), each at least one
/// element long. `count` must lie in `1..=total`.
pub fn segment_lens(total: u64, count: u32) -> Vec<u64> {
    let count = count as u64;
    let weights: Vec<u64> = (0..count).map(|i| 1 + (i * 2_654_435_761 % 97).pow(2)).collect();
    let sum: u64 = weights.iter().sum();
    let spread = total - count;
    let mut lens: Vec<u64> = weights.iter().map(|w| 1 + spread * w / sum).collect();
    let short = total - lens.iter().sum::<u64>();
    lens[0] += short;
    lens
}

/// Refuses a bench that would measure something other than what was asked: a set that is
/// not whole vec4s (the copy roofline moves vec4s), more segments than elements, no
/// repetitions, or a buffer larger than the device allows.
fn check_request(gpu: &Gpu, elements: u64, segment_counts: &[u32], reps: u32) -> Result<()> {
    if elements == 0 || !elements.is_multiple_of(4) {
        let expected = "a positive multiple of 4 (the copy kernel, the roofline, moves whole vec4s)";
        return Err(Error::OutOfRange { what: "elements", value: elements as f64, expected });
    }
    if let Some(&bad) = segment_counts.iter().find(|&&s| s == 0 || s as u64 > elements) {
        let expected = "between 1 and the number of elements (each segment holds at least one)";
        return Err(Error::OutOfRange { what: "segments", value: bad as f64, expected });
    }
    if segment_counts.is_empty() {
        return Err(Error::Empty { what: "the bench's segment counts".into() });
    }
    if reps == 0 {
        return Err(Error::OutOfRange { what: "repetitions", value: 0.0, expected: "at least 1" });
    }
    let limit = gpu.device.limits().max_buffer_size;
    if elements.saturating_mul(4) > limit {
        return Err(Error::TooLarge { what: format!("{elements} f32 elements"), amount: elements.saturating_mul(4), unit: "bytes", limit, limit_name: "the device's max_buffer_size" });
    }
    Ok(())
}

/// Deterministic values in [-1, 1).
fn data(n: u64) -> Vec<f32> {
    (0..n).map(|i| ((i.wrapping_mul(2_654_435_761) >> 8) % 65_536) as f32 / 32_768.0 - 1.0).collect()
}

/// A set cut into `segments`: the norm alone, and (when clipping is measured) a
/// global-norm clip whose coefficient the device already holds.
struct Case {
    segments: u32,
    measure: GradClip,
    clip: Option<GradClip>,
}

/// Measures copy and the chosen kernels on `elements` floats cut into `segments`, in
/// turns ([`Timer::time_interleaved`]) so that the ratios to copy hold on a drifting machine.
/// Exactly the `elements`, segment counts and `reps` asked for, or an error saying why not.
pub fn run(gpu: &Gpu, which: Which, elements: u64, segment_counts: &[u32], reps: u32) -> Result<BenchReport> {
    check_request(gpu, elements, segment_counts, reps)?;
    let bytes = elements * 4;
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    let values = data(elements);
    let grads = buffer_init(&gpu.device, "bench gradients", bytemuck::cast_slice(&values), usage)?;
    let copy = CopyKernel::new(&gpu.device)?;
    let dst = scoped(&gpu.device, "creating the copy's destination", || {
        gpu.device.create_buffer(&wgpu::BufferDescriptor { label: Some("bench copy"), size: bytes, usage, mapped_at_creation: false })
    })?;
    let copy_binding = copy.bind(&gpu.device, &grads, &dst, bytes)?;
    let cases = segment_counts
        .iter()
        .map(|&segments| {
            let set = GradSet::packed(&grads, &segment_lens(elements, segments));
            let measure = GradClip::new(&gpu.device, &set, ClipPolicy::None, NonFinitePolicy::Propagate)?;
            if which == Which::Norm {
                return Ok(Case { segments, measure, clip: None });
            }
            // Clip just below the norm: every element is scaled, and repeated scaling by
            // ~0.9999 keeps values far from subnormals. The clip-only passes reuse the
            // coefficient this first norm leaves on the device.
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            measure.encode(&mut encoder);
            gpu.queue.submit([encoder.finish()]);
            let norm = read_stats_blocking(&gpu.device, &gpu.queue, measure.stats_buffer())?.l2;
            let policy = ClipPolicy::GlobalNorm { max_norm: norm * 0.9999, kind: NormKind::L2 };
            let clip = GradClip::new(&gpu.device, &set, policy, NonFinitePolicy::Propagate)?;
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            clip.norm().encode(&mut encoder);
            gpu.queue.submit([encoder.finish()]);
            Ok(Case { segments, measure, clip: Some(clip) })
        })
        .collect::<Result<Vec<_>>>()?;

    type Record<'a> = Box<dyn Fn(&mut wgpu::ComputePass<'_>) + 'a>;
    let mut records: Vec<Record> = vec![Box::new(|pass: &mut wgpu::ComputePass<'_>| copy.encode(pass, &copy_binding))];
    for case in &cases {
        records.push(Box::new(|pass: &mut wgpu::ComputePass<'_>| case.measure.norm().encode_in_pass(pass)));
        if let Some(clip) = &case.clip {
            records.push(Box::new(|pass: &mut wgpu::ComputePass<'_>| clip.encode_clip_only(pass)));
        }
    }
    let timer = Timer::new(gpu);
    // Enough calls per pass that submit and wait overheads vanish (~4 GB of traffic).
    let inner = ((4u64 << 30) / (bytes * 2)).clamp(1, 50) as u32;
    let records: Vec<&dyn Fn(&mut wgpu::ComputePass<'_>)> = records.iter().map(|r| r.as_ref()).collect();
    let mut times = timer.time_interleaved(gpu, reps, inner, &records)?.into_iter();
    gpu.queue.write_buffer(&grads, 0, bytemuck::cast_slice(&values));

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
    let mut next = || times.next().expect("one time per record");
    let copy_rate = Some(push("copy", 1, next(), 2 * bytes, None));
    for case in &cases {
        let norm_ms = next();
        if matches!(which, Which::Norm | Which::All) {
            push("norm_l2", case.segments, norm_ms, bytes, copy_rate);
        }
        if case.clip.is_some() {
            let clip_ms = next();
            push("clip_scale", case.segments, clip_ms, 2 * bytes, copy_rate);
            // Norm then scale, as clip_grad_norm_ does. Timed as the sum of the two: run
            // back to back, the first clip would leave nothing for the next to scale.
            push("clip_grad_norm", case.segments, norm_ms + clip_ms, 2 * bytes, copy_rate);
        }
    }
    Ok(BenchReport::new(gpu, &timer, results))
}
