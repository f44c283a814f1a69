//! Clipping in place against the CPU twin, for every policy and non-finite policy.

mod common;

use common::*;
use gradguard::readback::read_stats_blocking;
use gradguard::{cpu, ClipPolicy, GradClip, GradSet, NonFinitePolicy, NormKind, NormStats, TileLayout};

/// Packs `segments` into one buffer, clips on the GPU, returns (clipped data, stats).
fn clip_gpu(segments: &[Vec<f32>], policy: ClipPolicy, nonfinite: NonFinitePolicy, buffer: &gradguard::wgpu::Buffer) -> (Vec<Vec<f32>>, NormStats) {
    let g = gpu();
    let lens: Vec<u64> = segments.iter().map(|s| s.len() as u64).collect();
    let set = GradSet::packed(buffer, &lens);
    let clip = GradClip::new(&g.device, &set, policy, nonfinite).unwrap();
    let mut encoder = g.device.create_command_encoder(&Default::default());
    clip.encode(&mut encoder);
    g.queue.submit([encoder.finish()]);
    let stats = read_stats_blocking(&g.device, &g.queue, clip.stats_buffer()).unwrap();
    let flat = download(buffer);
    let mut at = 0;
    let out = segments
        .iter()
        .map(|s| {
            at += s.len();
            flat[at - s.len()..at].to_vec()
        })
        .collect();
    (out, stats)
}

fn check(segments: &[Vec<f32>], policy: ClipPolicy, params: Option<&[Vec<f32>]>, nonfinite: NonFinitePolicy) -> NormStats {
    let buffer = upload(&segments.concat());
    let (got, stats) = clip_gpu(segments, policy.clone(), nonfinite, &buffer);
    let mut expect = segments.to_vec();
    let expect_stats = cpu::clip::clip(&mut expect, &policy, params, nonfinite);
    assert_close(stats.norm, expect_stats.norm, 1e-5, "pre-clip norm");
    assert_eq!(stats.skipped, expect_stats.skipped);
    for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
        assert_all_close(g, e, 2e-5, &format!("{policy:?} / {nonfinite:?}: segment {i}"));
    }
    stats
}

fn segments(seed: u64, lens: &[usize], scale: f32) -> Vec<Vec<f32>> {
    let mut r = rng(seed);
    lens.iter().map(|&n| random(&mut r, n, scale)).collect()
}

#[test]
fn global_norm_clip_matches_twin_for_every_kind() {
    let segs = segments(10, &[1, 255, 256, 257, 10_000, 3], 2.0);
    for kind in [NormKind::L2, NormKind::L1, NormKind::Inf] {
        let stats = check(&segs, ClipPolicy::GlobalNorm { max_norm: 0.5, kind }, None, NonFinitePolicy::Propagate);
        assert!(stats.clip_coef < 1.0);
    }
    // Below the threshold nothing changes, bit for bit.
    check(&segs, ClipPolicy::GlobalNorm { max_norm: 1e9, kind: NormKind::L2 }, None, NonFinitePolicy::Propagate);
}

#[test]
fn value_and_per_segment_clip_match_twin() {
    let mut segs = segments(11, &[7, 1000, 4099, 1], 3.0);
    check(&segs, ClipPolicy::Value { clip_value: 0.75 }, None, NonFinitePolicy::Propagate);
    check(&segs, ClipPolicy::PerSegmentNorm { max_norm: 2.0, kind: NormKind::L2 }, None, NonFinitePolicy::Propagate);
    // NaN stays NaN under value clipping, inf is clamped (torch.clamp).
    segs[1][3] = f32::NAN;
    segs[1][4] = f32::NEG_INFINITY;
    check(&segs, ClipPolicy::Value { clip_value: 0.75 }, None, NonFinitePolicy::Propagate);
}

#[test]
fn agc_matches_twin() {
    let grads = segments(12, &[6 * 5, 6, 4 * 17], 1.0);
    let params = segments(13, &[6 * 5, 6, 4 * 17], 0.1);
    let pbuf = upload(&params.concat());
    let lens: Vec<u64> = params.iter().map(|s| s.len() as u64).collect();
    let policy = ClipPolicy::Agc {
        clipping: 0.05,
        eps: 1e-3,
        params: GradSet::packed(&pbuf, &lens),
        unit_lens: vec![5, 6, 17],
    };
    check(&grads, policy, Some(&params), NonFinitePolicy::Propagate);
}

#[test]
fn nonfinite_policies() {
    let mut segs = segments(14, &[300, 2000, 50], 1.0);
    segs[1][1234] = f32::NAN;
    segs[1][5] = f32::INFINITY;
    let policy = ClipPolicy::GlobalNorm { max_norm: 0.1, kind: NormKind::L2 };

    // Skip and error: the gradients are left exactly as they were.
    for nonfinite in [NonFinitePolicy::SkipStep, NonFinitePolicy::Error] {
        let buffer = upload(&segs.concat());
        let (got, stats) = clip_gpu(&segs, policy.clone(), nonfinite, &buffer);
        assert!(stats.skipped);
        for (g, s) in got.iter().zip(&segs) {
            assert!(g.iter().zip(s).all(|(a, b)| a.to_bits() == b.to_bits()), "{nonfinite:?} changed gradients");
        }
        assert!(stats.check_finite().unwrap_err().to_string().contains("segment 1"));
    }
    // Propagate: as clip_grad_norm_, a NaN norm turns every gradient NaN.
    let stats = check(&segs, policy.clone(), None, NonFinitePolicy::Propagate);
    assert!(stats.norm.is_nan() && stats.clip_coef.is_nan());
    // Zero: non-finite elements become 0 and the rest is clipped by the finite norm.
    let stats = check(&segs, policy, None, NonFinitePolicy::ZeroNonFinite);
    assert!(stats.norm.is_finite() && stats.clip_coef < 1.0 && !stats.skipped);
    check(&segs, ClipPolicy::None, None, NonFinitePolicy::ZeroNonFinite);
}

#[test]
fn chunked_clip_matches_twin() {
    let segs = segments(15, &[9000, 1, 3, 20_001], 1.0);
    let lens: Vec<u64> = segs.iter().map(|s| s.len() as u64).collect();
    let g = gpu();
    // Both tile layouts: the clip reuses workgroup tiles and regroups invocation tiles.
    for (tile_layout, tile_elems) in [(TileLayout::Workgroup, 256), (TileLayout::Invocation, 64)] {
        let config = gradguard::NormConfig {
            max_binding_bytes: Some(4096),
            tile_elems: Some(tile_elems),
            workgroup_size: Some(16),
            tile_layout: Some(tile_layout),
            ..Default::default()
        };
        let policy = ClipPolicy::PerSegmentNorm { max_norm: 1.0, kind: NormKind::L2 };
        let buffer = upload(&segs.concat());
        let clip = GradClip::with_config(&g.device, &GradSet::packed(&buffer, &lens), policy.clone(), config).unwrap();
        let mut encoder = g.device.create_command_encoder(&Default::default());
        clip.encode(&mut encoder);
        g.queue.submit([encoder.finish()]);
        let mut expect = segs.clone();
        cpu::clip::clip(&mut expect, &policy, None, NonFinitePolicy::Propagate);
        assert_all_close(&download(&buffer), &expect.concat(), 2e-5, &format!("chunked clip, {tile_layout:?} tiles"));
    }
}

#[test]
fn agc_with_gpu_sized_workgroups_matches_twin() {
    let grads = segments(16, &[64 * 9, 9], 1.0);
    let params = segments(17, &[64 * 9, 9], 0.1);
    let (gbuf, pbuf) = (upload(&grads.concat()), upload(&params.concat()));
    let lens = [64 * 9, 9];
    let policy = ClipPolicy::Agc { clipping: 0.05, eps: 1e-3, params: GradSet::packed(&pbuf, &lens), unit_lens: vec![64, 9] };
    let config = gradguard::NormConfig { workgroup_size: Some(256), ..Default::default() };
    let g = gpu();
    let clip = GradClip::with_config(&g.device, &GradSet::packed(&gbuf, &lens), policy.clone(), config).unwrap();
    let mut encoder = g.device.create_command_encoder(&Default::default());
    clip.encode(&mut encoder);
    g.queue.submit([encoder.finish()]);
    let mut expect = grads.clone();
    cpu::clip::clip(&mut expect, &policy, Some(&params), NonFinitePolicy::Propagate);
    assert_all_close(&download(&gbuf), &expect.concat(), 2e-5, "AGC, 256 invocations");
}

#[test]
fn a_norm_beyond_f32_from_finite_elements_skips_or_zeroes() {
    let segs = vec![vec![3e38f32, -3e38, 3e38], vec![1.0, 2.0]];
    let policy = ClipPolicy::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 };
    // Skip and error: untouched, flagged, and reported as an overflow on readback.
    for nonfinite in [NonFinitePolicy::SkipStep, NonFinitePolicy::Error] {
        let stats = check(&segs, policy.clone(), None, nonfinite);
        assert!(stats.skipped && stats.norm.is_infinite() && stats.first_nonfinite_segment.is_none());
        assert!(matches!(stats.check_finite(), Err(gradguard::Error::NormOverflow { .. })));
    }
    // Propagate: as clip_grad_norm_, an inf norm gives a zero coefficient.
    let stats = check(&segs, policy, None, NonFinitePolicy::Propagate);
    assert!(!stats.skipped && stats.clip_coef == 0.0);
}

/// `dispatch_count` is the norm's dispatches plus the clip stage's: none when nothing is
/// written, one per bound window for the tile kernels, one per AGC group.
#[test]
fn dispatch_count_follows_the_clip_stage() {
    let g = gpu();
    let lens = [64 * 9, 9];
    let gbuf = upload(&segments(20, &[64 * 9, 9], 1.0).concat());
    let pbuf = upload(&segments(21, &[64 * 9, 9], 0.1).concat());
    let set = GradSet::packed(&gbuf, &lens);
    let count = |policy: ClipPolicy, nonfinite: NonFinitePolicy, config: gradguard::NormConfig| {
        let config = gradguard::NormConfig { nonfinite, ..config };
        let clip = GradClip::with_config(&g.device, &set, policy, config).unwrap();
        (clip.dispatch_count(), clip.norm().dispatch_count())
    };
    let global = ClipPolicy::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 };
    let plain = gradguard::NormConfig::default();
    // One window: the norm is 1 + 2 dispatches.
    let (n, norm) = count(ClipPolicy::None, NonFinitePolicy::Propagate, plain.clone());
    assert_eq!((n, norm), (3, 3), "measure only: the norm alone");
    assert_eq!(count(ClipPolicy::None, NonFinitePolicy::ZeroNonFinite, plain.clone()).0, norm + 1, "zeroing writes per window");
    assert_eq!(count(global.clone(), NonFinitePolicy::SkipStep, plain.clone()).0, norm + 1);
    assert_eq!(count(ClipPolicy::Value { clip_value: 0.5 }, NonFinitePolicy::Propagate, plain.clone()).0, norm + 1);
    let agc = ClipPolicy::Agc { clipping: 0.05, eps: 1e-3, params: GradSet::packed(&pbuf, &lens), unit_lens: vec![64, 9] };
    assert_eq!(count(agc, NonFinitePolicy::Propagate, plain).0, norm + 1, "one AGC group");
    // Many bound windows: one clip dispatch per window.
    let big_lens = [9000, 20_001];
    let big = upload(&segments(22, &[9000, 20_001], 1.0).concat());
    let big_set = GradSet::packed(&big, &big_lens);
    let chunked = gradguard::NormConfig { max_binding_bytes: Some(4096), tile_elems: Some(256), ..Default::default() };
    let count_big = |policy: ClipPolicy| {
        let clip = GradClip::with_config(&g.device, &big_set, policy, chunked.clone()).unwrap();
        (clip.dispatch_count(), clip.norm().dispatch_count())
    };
    let (n, norm) = count_big(global);
    let windows = norm - 2;
    assert!(windows > 1, "the set must span several windows");
    assert_eq!(n, norm + windows);
    assert_eq!(count_big(ClipPolicy::None).0, norm);
}

#[test]
fn clip_around_the_split_of_its_two_writable_views_matches_twin() {
    // The clip writes a window through a vec4 view below its last multiple of 256 bytes
    // and an f32 view above it (WebGPU forbids overlapping writable bindings). 1,001
    // floats split at element 960; segment 1 straddles the split inside one vec4, segment
    // 2 lies wholly above it, ending in a partial vec4.
    let segs = segments(18, &[957, 5, 39], 3.0);
    for policy in [
        ClipPolicy::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 },
        ClipPolicy::PerSegmentNorm { max_norm: 0.5, kind: NormKind::Inf },
        ClipPolicy::Value { clip_value: 0.25 },
    ] {
        check(&segs, policy, None, NonFinitePolicy::Propagate);
    }
    let mut with_nan = segs.clone();
    with_nan[1][2] = f32::NAN;
    with_nan[2][38] = f32::INFINITY;
    check(&with_nan, ClipPolicy::Value { clip_value: 0.25 }, None, NonFinitePolicy::ZeroNonFinite);
}
