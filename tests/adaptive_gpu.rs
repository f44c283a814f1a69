//! ZClip and AutoClip on the device against their twins (the reference algorithms, in f64)
//! over recorded sequences of norms with spikes, NaN and inf: the same threshold and
//! coefficient at every step, from step 0.

mod common;

use common::*;
use gradguard::cpu::adaptive::AdaptiveTwin;
use gradguard::readback::read_stats_blocking;
use gradguard::{cpu, AdaptivePolicy, AutoClip, ClipPolicy, GradClip, GradSet, NonFinitePolicy, ZClip};
use rand::Rng;

/// Gradients of three segments whose global L2 norm is `norm` (NaN and inf put in as such).
fn grads_with_norm(norm: f32) -> Vec<Vec<f32>> {
    if !norm.is_finite() {
        return vec![vec![1.0, norm, 0.5], vec![0.25; 5], vec![0.0; 2]];
    }
    // Components (3, 4, 12)/13 of the norm, spread over the segments.
    vec![vec![norm * 3.0 / 13.0, 0.0, 0.0], vec![0.0, norm * 4.0 / 13.0, 0.0, 0.0, 0.0], vec![0.0, norm * 12.0 / 13.0]]
}

/// Norms as a run sees them: noise around a trend, spikes of 10–1000×, a NaN and an inf.
fn recorded_norms(steps: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..steps)
        .map(|k| match k {
            k if k % 37 == 36 => 10f32.powi(r.random_range(1..4)) * 2.0,
            40 => f32::NAN,
            57 => f32::INFINITY,
            _ => (2.0 - k as f32 / steps as f32) * r.random_range(0.7f32..1.3),
        })
        .collect()
}

/// Runs `policy` over `norms` on the device (one GradClip, state carried across steps) and
/// on the twin, comparing the threshold, the coefficient and the clipped gradients.
fn check(policy: AdaptivePolicy, norms: &[f32], nonfinite: NonFinitePolicy) {
    let g = gpu();
    let lens = [3u64, 5, 2];
    let buffer = upload(&vec![0.0; 10]);
    let set = GradSet::packed(&buffer, &lens);
    let clip = GradClip::new(&g.device, &set, ClipPolicy::Adaptive(policy), nonfinite).unwrap();
    assert_eq!(clip.dispatch_count(), clip.norm().dispatch_count() + 2, "norm, threshold, clip");
    let mut twin = AdaptiveTwin::new(policy);
    for (k, &norm) in norms.iter().enumerate() {
        let grads = grads_with_norm(norm);
        g.queue.write_buffer(&buffer, 0, bytemuck::cast_slice(&grads.concat()));
        let mut encoder = g.device.create_command_encoder(&Default::default());
        clip.encode(&mut encoder);
        g.queue.submit([encoder.finish()]);
        let stats = read_stats_blocking(&g.device, &g.queue, clip.stats_buffer()).unwrap();
        let mut expect = grads.clone();
        let twin_stats = cpu::clip::clip_adaptive(&mut expect, &ClipPolicy::Adaptive(policy), None, nonfinite, Some(&mut twin));
        let what = format!("{policy:?} {nonfinite:?} step {k} (norm {norm})");
        assert_close(stats.limit, twin_stats.limit, 2e-5, &format!("{what}: threshold"));
        if twin_stats.clip_coef.is_nan() {
            assert!(stats.clip_coef.is_nan(), "{what}: coefficient {} where the twin's is NaN", stats.clip_coef);
        } else {
            assert_close(stats.clip_coef, twin_stats.clip_coef, 2e-5, &format!("{what}: coefficient"));
        }
        if !stats.skipped && norm.is_finite() {
            assert_all_close(&download(&buffer), &expect.concat(), 2e-5, &format!("{what}: clipped gradients"));
        }
    }
}

#[test]
fn zclip_matches_the_reference_step_by_step() {
    let norms = recorded_norms(160, 1);
    for nonfinite in [NonFinitePolicy::SkipStep, NonFinitePolicy::Propagate, NonFinitePolicy::ZeroNonFinite] {
        check(AdaptivePolicy::ZClip(ZClip::default()), &norms, nonfinite);
    }
    // No cap, a short warm-up, a low z: the adaptive threshold alone clips, often.
    check(AdaptivePolicy::ZClip(ZClip { alpha: 0.9, z: 1.0, warmup: 3, max_norm: None }), &norms, NonFinitePolicy::SkipStep);
}

#[test]
fn autoclip_matches_the_reference_step_by_step() {
    let norms = recorded_norms(150, 2);
    for nonfinite in [NonFinitePolicy::SkipStep, NonFinitePolicy::Propagate] {
        check(AdaptivePolicy::AutoClip(AutoClip { percentile: 10.0, capacity: 1000, max_norm: None }), &norms, nonfinite);
    }
    // A window smaller than the run (it slides past spikes), percentiles at the edges, a cap.
    for (percentile, capacity) in [(0.0, 7), (50.0, 64), (100.0, 65), (37.5, 130)] {
        let policy = AdaptivePolicy::AutoClip(AutoClip { percentile, capacity, max_norm: Some(3.0) });
        check(policy, &norms, NonFinitePolicy::SkipStep);
    }
}

#[test]
fn step_zero_is_clipped_by_max_norm() {
    // ZClip warms up under the fixed clip: a first norm of 1e6 comes out at max_norm.
    let g = gpu();
    let buffer = upload(&[1e6, 0.0, 0.0]);
    let set = GradSet::packed(&buffer, &[3]);
    let policy = AdaptivePolicy::ZClip(ZClip::default());
    let clip = GradClip::new(&g.device, &set, ClipPolicy::Adaptive(policy), NonFinitePolicy::SkipStep).unwrap();
    let mut encoder = g.device.create_command_encoder(&Default::default());
    clip.encode(&mut encoder);
    g.queue.submit([encoder.finish()]);
    let stats = read_stats_blocking(&g.device, &g.queue, clip.stats_buffer()).unwrap();
    assert_eq!(stats.limit, 1.0);
    assert_close(download(&buffer)[0], 1.0, 1e-6, "the first gradient, clipped to max_norm");
}

#[test]
fn a_nan_never_disables_the_statistics() {
    // The reference lets one NaN into its EMA, after which no spike is ever caught; here a
    // spike long after a NaN is still clipped below the cap.
    let mut norms = vec![1.0f32; 30];
    norms[27] = f32::NAN;
    norms.extend([1.0, 1.0, 50.0]);
    let policy = AdaptivePolicy::ZClip(ZClip { max_norm: Some(100.0), ..ZClip::default() });
    check(policy, &norms, NonFinitePolicy::SkipStep);
    let mut twin = AdaptiveTwin::new(policy);
    let limits: Vec<f64> = norms.iter().map(|&n| twin.step(n.is_finite().then_some(n))).collect();
    assert!(limits[32] < 2.0, "the spike after the NaN is clipped near the mean: {}", limits[32]);
}

#[test]
fn bad_policies_are_refused() {
    let g = gpu();
    let buffer = upload(&[1.0; 4]);
    let set = GradSet::packed(&buffer, &[4]);
    for bad in [
        AdaptivePolicy::ZClip(ZClip { alpha: 1.0, ..ZClip::default() }),
        AdaptivePolicy::ZClip(ZClip { warmup: 0, ..ZClip::default() }),
        AdaptivePolicy::AutoClip(AutoClip { percentile: -1.0, capacity: 10, max_norm: None }),
        AdaptivePolicy::AutoClip(AutoClip { percentile: 10.0, capacity: 0, max_norm: None }),
    ] {
        let err = GradClip::new(&g.device, &set, ClipPolicy::Adaptive(bad), NonFinitePolicy::SkipStep).unwrap_err();
        assert!(matches!(err, gradguard::Error::OutOfRange { .. }), "{bad:?}: {err}");
    }
}
