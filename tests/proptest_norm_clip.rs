//! Random shapes, segment tables and values (NaN, ±inf, subnormals, 1e30) thrown at the
//! norm and at clipping, compared against the CPU twins.

mod common;

use common::*;
use gradguard::readback::read_stats_blocking;
use gradguard::{cpu, ClipPolicy, GradClip, GradSet, NonFinitePolicy, NormConfig, NormKind, TileLayout};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        20 => -10.0f32..10.0,
        2 => Just(f32::NAN),
        2 => Just(f32::INFINITY),
        2 => Just(f32::NEG_INFINITY),
        2 => Just(1e-40f32),          // subnormal
        2 => Just(-3e-39f32),         // subnormal
        2 => Just(1e30f32),
        2 => Just(-1e-30f32),
        1 => Just(0.0f32),
    ]
}

fn policy() -> impl Strategy<Value = (ClipPolicy, NonFinitePolicy)> {
    let kind = prop_oneof![Just(NormKind::L2), Just(NormKind::L1), Just(NormKind::Inf)];
    let clip = prop_oneof![
        Just(ClipPolicy::None),
        (0.01f32..100.0, kind.clone()).prop_map(|(max_norm, kind)| ClipPolicy::GlobalNorm { max_norm, kind }),
        (0.01f32..100.0, kind).prop_map(|(max_norm, kind)| ClipPolicy::PerSegmentNorm { max_norm, kind }),
        (0.01f32..5.0).prop_map(|clip_value| ClipPolicy::Value { clip_value }),
    ];
    let nonfinite = prop_oneof![
        Just(NonFinitePolicy::Propagate),
        Just(NonFinitePolicy::Error),
        Just(NonFinitePolicy::SkipStep),
        Just(NonFinitePolicy::ZeroNonFinite),
    ];
    (clip, nonfinite)
}

/// Relative closeness, with an absolute slack for subnormals (which a device may flush).
fn near(gpu: f32, cpu: f32) -> bool {
    if gpu.is_nan() || cpu.is_nan() {
        return gpu.is_nan() && cpu.is_nan();
    }
    if gpu.is_infinite() || cpu.is_infinite() {
        return gpu == cpu;
    }
    (gpu as f64 - cpu as f64).abs() <= 2e-5 * (cpu as f64).abs() + 1e-36
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn norm_and_clip_match_twins(
        segments in prop::collection::vec(prop::collection::vec(value(), 0..700), 1..12),
        (policy, nonfinite) in policy(),
        workgroup_size in prop_oneof![Just(None), Just(Some(256u32)), Just(Some(3u32))],
        tile_elems in prop_oneof![Just(None), Just(Some(64u32)), Just(Some(4u32))],
        tile_layout in prop_oneof![Just(None), Just(Some(TileLayout::Workgroup)), Just(Some(TileLayout::Invocation))],
    ) {
        let g = gpu();
        let buffer = upload(&segments.concat());
        let lens: Vec<u64> = segments.iter().map(|s| s.len() as u64).collect();
        let config = NormConfig { nonfinite, workgroup_size, tile_elems, tile_layout, ..Default::default() };
        let clip = GradClip::with_config(&g.device, &GradSet::packed(&buffer, &lens), policy.clone(), config).unwrap();
        let mut encoder = g.device.create_command_encoder(&Default::default());
        clip.encode(&mut encoder);
        g.queue.submit([encoder.finish()]);
        let stats = read_stats_blocking(&g.device, &g.queue, clip.stats_buffer()).unwrap();

        let mut expect = segments.clone();
        let want = cpu::clip::clip(&mut expect, &policy, None, nonfinite);
        prop_assert!(near(stats.norm, want.norm), "norm {} vs {}", stats.norm, want.norm);
        prop_assert!(near(stats.l1, want.l1) && near(stats.l2, want.l2) && near(stats.linf, want.linf));
        prop_assert_eq!(stats.skipped, want.skipped);
        prop_assert_eq!(stats.first_nonfinite_segment, want.first_nonfinite_segment);
        prop_assert_eq!((stats.nan_count, stats.inf_count), (want.nan_count, want.inf_count));
        let got = download(&buffer);
        for (i, (&a, &b)) in got.iter().zip(expect.concat().iter()).enumerate() {
            prop_assert!(near(a, b), "element {}: gpu {} vs cpu {}", i, a, b);
        }
    }
}
