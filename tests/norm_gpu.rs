//! GPU norm against its CPU twin: sizes, segments, non-finite values, huge and tiny
//! magnitudes, chunking past the binding limit, determinism.

mod common;

use common::*;
use gradguard::norm::{NonFinitePolicy, NormConfig, NormKind, NormStats, TileLayout};
use gradguard::readback::read_stats_blocking;
use gradguard::{cpu, GradNorm, GradSet, GradView};

fn run(set: &GradSet, config: &NormConfig) -> NormStats {
    let g = gpu();
    let norm = GradNorm::new(&g.device, set, config).unwrap();
    let mut encoder = g.device.create_command_encoder(&Default::default());
    norm.encode(&mut encoder);
    g.queue.submit([encoder.finish()]);
    read_stats_blocking(&g.device, &g.queue, norm.stats_buffer()).unwrap()
}

/// `config` once per tile layout: each device type defaults to one, lavapipe runs both.
fn layouts(config: NormConfig) -> impl Iterator<Item = NormConfig> {
    [TileLayout::Workgroup, TileLayout::Invocation]
        .into_iter()
        .map(move |layout| NormConfig { tile_layout: Some(layout), ..config.clone() })
}

fn twin(segments: &[&[f32]], config: &NormConfig) -> NormStats {
    cpu::norm::norm(segments, config.kind, config.max_norm, config.eps, config.nonfinite)
}

fn assert_stats(gpu: &NormStats, cpu: &NormStats, rel: f32) {
    assert_close(gpu.norm, cpu.norm, rel, "norm");
    assert_close(gpu.l2, cpu.l2, rel, "l2");
    assert_close(gpu.l1, cpu.l1, rel, "l1");
    assert_close(gpu.linf, cpu.linf, 0.0, "linf");
    assert_close(gpu.clip_coef, cpu.clip_coef, rel, "clip_coef");
    assert_eq!(
        (gpu.skipped, gpu.nan_count, gpu.inf_count, gpu.first_nonfinite_segment),
        (cpu.skipped, cpu.nan_count, cpu.inf_count, cpu.first_nonfinite_segment)
    );
    assert_eq!(gpu.segments.len(), cpu.segments.len());
    for (i, (g, c)) in gpu.segments.iter().zip(&cpu.segments).enumerate() {
        assert_close(g.l2, c.l2, rel, &format!("segment {i} l2"));
        assert_close(g.l1, c.l1, rel, &format!("segment {i} l1"));
        assert_close(g.linf, c.linf, 0.0, &format!("segment {i} linf"));
        assert_eq!(g.nonfinite, c.nonfinite, "segment {i} non-finite count");
    }
}

fn packed<'a>(data: &'a [f32], lens: &[u64]) -> (GradSet, Vec<&'a [f32]>) {
    let buffer = upload(data);
    let mut views = Vec::new();
    let mut at = 0;
    for &len in lens {
        views.push(&data[at..at + len as usize]);
        at += len as usize;
    }
    (GradSet::packed(&buffer, lens), views)
}

#[test]
fn single_segment_sizes_match_twin() {
    let mut r = rng(1);
    for n in [0usize, 1, 3, 4, 5, 255, 256, 257, 8191, 8192, 8193, (1 << 20) + 3] {
        let data = random(&mut r, n, 1.0);
        let (set, views) = packed(&data, &[n as u64]);
        for kind in [NormKind::L2, NormKind::L1, NormKind::Inf] {
            for config in layouts(NormConfig { kind, max_norm: Some(1.0), ..Default::default() }) {
                assert_stats(&run(&set, &config), &twin(&views, &config), 1e-5);
            }
        }
    }
}

#[test]
fn thousand_mixed_segments_match_twin() {
    let mut r = rng(2);
    let lens = mixed_lens(&mut r, 1000);
    let total: u64 = lens.iter().sum();
    let data = random(&mut r, total as usize, 3.0);
    let (set, views) = packed(&data, &lens);
    for config in layouts(NormConfig { max_norm: Some(5.0), ..Default::default() }) {
        let gpu_stats = run(&set, &config);
        assert_stats(&gpu_stats, &twin(&views, &config), 1e-5);
        assert!(gpu_stats.clip_coef < 1.0, "the test should clip");
    }
}

#[test]
fn segments_of_many_and_few_partials_match_twin() {
    // With 16-element tiles: 313 and 65 partials (a workgroup each in the second stage),
    // 64 and fewer (one invocation each), in an order that interleaves the two kinds.
    let mut r = rng(9);
    let mut lens = vec![5000u64, 3, 64 * 16, 65 * 16 + 1];
    lens.extend((0..40).map(|i| (i * 37 % 200) as u64));
    let data = random(&mut r, lens.iter().sum::<u64>() as usize, 2.0);
    let (set, views) = packed(&data, &lens);
    for workgroup_size in [3, 16, 256] {
        let config = NormConfig { tile_elems: Some(16), workgroup_size: Some(workgroup_size), ..Default::default() };
        for config in layouts(config) {
            assert_stats(&run(&set, &config), &twin(&views, &config), 1e-5);
        }
    }
}

#[test]
fn separate_buffers_with_offsets_match_twin() {
    let mut r = rng(3);
    let chunks: Vec<Vec<f32>> = [17usize, 1000, 3, 70_001].iter().map(|&n| random(&mut r, n, 2.0)).collect();
    // Each buffer holds its tensor after a few padding floats, at a 4-byte-aligned offset.
    let mut views = Vec::new();
    let mut slices = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let pad = i + 1;
        let mut host = vec![1e9f32; pad];
        host.extend(c);
        host.push(1e9);
        views.push(GradView { buffer: upload(&host), offset: 4 * pad as u64, len: c.len() as u64 });
        slices.push(c.as_slice());
    }
    let set = GradSet::new(views);
    let config = NormConfig::default();
    assert_stats(&run(&set, &config), &twin(&slices, &config), 1e-5);
}

#[test]
fn nonfinite_in_a_middle_segment_is_counted_and_named() {
    let mut r = rng(4);
    let lens = [100u64, 5000, 300, 7];
    let mut data = random(&mut r, lens.iter().sum::<u64>() as usize, 1.0);
    data[100 + 2500] = f32::NAN;
    data[100 + 2501] = f32::INFINITY;
    data[100 + 5000 + 10] = f32::NEG_INFINITY;
    let (set, views) = packed(&data, &lens);
    for nonfinite in
        [NonFinitePolicy::Propagate, NonFinitePolicy::Error, NonFinitePolicy::SkipStep, NonFinitePolicy::ZeroNonFinite]
    {
        for kind in [NormKind::L2, NormKind::L1, NormKind::Inf] {
            for config in layouts(NormConfig { kind, nonfinite, max_norm: Some(1.0), ..Default::default() }) {
                let stats = run(&set, &config);
                assert_stats(&stats, &twin(&views, &config), 1e-5);
                assert_eq!(stats.first_nonfinite_segment, Some(1));
                assert_eq!((stats.nan_count, stats.inf_count), (1, 2));
                assert_eq!(stats.segments[2].nonfinite, 1);
            }
        }
    }
    // PyTorch semantics under Propagate: NaN wins over inf.
    let stats = run(&set, &NormConfig::default());
    assert!(stats.norm.is_nan() && stats.segments[1].l2.is_nan() && stats.segments[2].l2.is_infinite());
    assert!(run(&set, &NormConfig { nonfinite: NonFinitePolicy::Error, ..Default::default() }).check_finite().is_err());
}

#[test]
fn huge_and_tiny_elements_do_not_overflow_or_underflow() {
    for (value, n) in [(1e25f32, 1000usize), (1e-25, 1000), (1e38, 3), (3e38, 1), (1e-40, 5), (1e19, (1 << 20) + 3)] {
        let data: Vec<f32> = (0..n).map(|i| if i % 2 == 0 { value } else { -value }).collect();
        let (set, views) = packed(&data, &[n as u64]);
        for config in layouts(NormConfig::default()) {
            let stats = run(&set, &config);
            let expect = twin(&views, &config);
            assert!(stats.l2.is_finite() && stats.l2 > 0.0 || value < f32::MIN_POSITIVE, "{value}: {}", stats.l2);
            if value >= f32::MIN_POSITIVE {
                // The f64 reference: |value|·sqrt(n).
                let want = (value as f64 * (n as f64).sqrt()) as f32;
                assert_close(stats.l2, want, 1e-5, &format!("l2 of {n}×{value}"));
                assert_stats(&stats, &expect, 1e-5);
            }
        }
    }
    // Mixed magnitudes across segments: the global reduction rescales exactly.
    let data = vec![1e30f32, 1e-30, 2.0, 1e20, -1e-20, 3e-38];
    let (set, views) = packed(&data, &[1, 1, 1, 1, 1, 1]);
    let config = NormConfig::default();
    assert_stats(&run(&set, &config), &twin(&views, &config), 1e-5);
}

#[test]
fn norm_is_bitwise_deterministic() {
    let mut r = rng(5);
    let lens = mixed_lens(&mut r, 300);
    let data = random(&mut r, lens.iter().sum::<u64>() as usize, 1.0);
    let (set, _) = packed(&data, &lens);
    for config in layouts(NormConfig::default()) {
        let first = run(&set, &config);
        for _ in 0..3 {
            let again = run(&set, &config);
            assert_eq!(again.norm.to_bits(), first.norm.to_bits());
            for (a, b) in again.segments.iter().zip(&first.segments) {
                assert_eq!((a.l2.to_bits(), a.l1.to_bits()), (b.l2.to_bits(), b.l1.to_bits()));
            }
        }
    }
}

#[test]
fn chunked_binding_matches_unchunked() {
    let mut r = rng(6);
    let lens = [5000u64, 1, 20_003, 0, 777, 40_000];
    let data = random(&mut r, lens.iter().sum::<u64>() as usize, 1.0);
    let (set, views) = packed(&data, &lens);
    for config in layouts(NormConfig { max_binding_bytes: Some(4096), tile_elems: Some(512), ..Default::default() }) {
        let norm = GradNorm::new(&gpu().device, &set, &config).unwrap();
        assert!(norm.dispatch_count() > 10, "the set must span many bound chunks");
        assert_stats(&run(&set, &config), &twin(&views, &config), 1e-5);
    }
}

#[test]
fn set_larger_than_the_binding_limit() {
    let g = gpu();
    let limit = g.device.limits().max_storage_buffer_binding_size.min(g.device.limits().max_buffer_size);
    let n = (limit / 4 + 1000).min(1 << 28) as usize;
    if (n as u64) * 4 > g.device.limits().max_buffer_size {
        panic!("the device cannot hold a buffer larger than its binding limit ({limit} bytes)");
    }
    let mut r = rng(7);
    let data = random(&mut r, n, 1.0);
    let lens = [3u64, n as u64 - 10, 7];
    let (set, views) = packed(&data, &lens);
    let config = NormConfig::default();
    let norm = GradNorm::new(&g.device, &set, &config).unwrap();
    assert!(norm.dispatch_count() >= 4, "a set above the binding limit needs at least two windows");
    assert_stats(&run(&set, &config), &twin(&views, &config), 1e-5);
}

#[test]
fn every_workgroup_size_matches_twin() {
    // The default differs by device (256 on GPUs, 16 on lavapipe): test them all here.
    let mut r = rng(8);
    let lens = mixed_lens(&mut r, 60);
    let mut data = random(&mut r, lens.iter().sum::<u64>() as usize, 1.0);
    data[5000] = 1e30;
    data[7000] = 1e-30;
    let (set, views) = packed(&data, &lens);
    for workgroup_size in [1, 7, 16, 64, 255, 256] {
        let config = NormConfig { workgroup_size: Some(workgroup_size), max_norm: Some(1.0), ..Default::default() };
        for config in layouts(config) {
            assert_stats(&run(&set, &config), &twin(&views, &config), 1e-5);
        }
    }
    data[9000] = f32::NAN;
    let (set, views) = packed(&data, &lens);
    for config in layouts(NormConfig { workgroup_size: Some(256), ..Default::default() }) {
        assert_stats(&run(&set, &config), &twin(&views, &config), 1e-5);
    }
}

#[test]
fn long_sums_of_equal_elements_stay_within_1e_6() {
    // Equal elements make rounding errors pile up instead of cancelling: a serial f32 sum
    // of 2^24 copies of 0.1 is off by percents. Short chains (blocks of trips in a tile,
    // pairwise folding of partials) keep both layouts near f32's own resolution.
    let n = (1usize << 24) + 12_345;
    for value in [0.1f32, 1.0 / 3.0] {
        let data = vec![value; n];
        let (set, _) = packed(&data, &[n as u64]);
        for config in layouts(NormConfig::default()) {
            let stats = run(&set, &config);
            let (l2, l1) = (value as f64 * (n as f64).sqrt(), value as f64 * n as f64);
            let what = format!("{n} × {value}, {:?} tiles", config.tile_layout);
            assert!((stats.l2 as f64 - l2).abs() <= 1e-6 * l2, "{what}: l2 {} vs {l2}", stats.l2);
            assert!((stats.l1 as f64 - l1).abs() <= 1e-6 * l1, "{what}: l1 {} vs {l1}", stats.l1);
        }
    }
}

/// Under `Error` the first non-finite step halts: later finite steps are skipped too, until
/// `clear_halt`; under `SkipStep` each step stands alone.
#[test]
fn the_error_policy_halts_until_cleared() {
    let g = gpu();
    let buffer = upload(&[1.0, f32::NAN, 2.0, 3.0]);
    let set = GradSet::packed(&buffer, &[4]);
    let step = |norm: &GradNorm| {
        let mut encoder = g.device.create_command_encoder(&Default::default());
        norm.encode(&mut encoder);
        g.queue.submit([encoder.finish()]);
        gradguard::readback::read_stats_blocking(&g.device, &g.queue, norm.stats_buffer()).unwrap()
    };
    for (policy, later_skipped) in [(NonFinitePolicy::Error, true), (NonFinitePolicy::SkipStep, false)] {
        g.queue.write_buffer(&buffer, 4, bytemuck::bytes_of(&f32::NAN));
        let norm = GradNorm::new(&g.device, &set, &NormConfig { nonfinite: policy, ..Default::default() }).unwrap();
        let first = step(&norm);
        assert!(first.skipped && first.halted == (policy == NonFinitePolicy::Error), "{policy:?}: {first:?}");
        g.queue.write_buffer(&buffer, 4, bytemuck::bytes_of(&2.0f32));
        let later = step(&norm);
        assert_eq!((later.skipped, later.halted), (later_skipped, later_skipped), "{policy:?}: a finite step after");
        assert!(later.norm.is_finite() && later.first_nonfinite_segment.is_none());
        norm.clear_halt(&g.queue);
        let cleared = step(&norm);
        assert!(!cleared.skipped && !cleared.halted, "{policy:?}: after clear_halt");
    }
}
