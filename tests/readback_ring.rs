//! Deferred readback: stats of step k arrive later, in order, without blocking the queue.

mod common;

use common::*;
use gradguard::readback::StatsRing;
use gradguard::{GradNorm, GradSet, NormConfig};

#[test]
fn ring_returns_every_step_in_order() {
    let g = gpu();
    let buffer = upload(&[0.0; 1000]);
    let norm = GradNorm::new(&g.device, &GradSet::packed(&buffer, &[600, 400]), &NormConfig::default()).unwrap();
    let mut ring = StatsRing::new(&g.device, norm.stats_size(), 4);
    let mut seen = Vec::new();
    for step in 0..20u64 {
        // Each step's gradients are the constant `step`: its L2 norm is step·sqrt(1000).
        g.queue.write_buffer(&buffer, 0, bytemuck::cast_slice(&vec![step as f32; 1000]));
        let mut encoder = g.device.create_command_encoder(&Default::default());
        norm.encode(&mut encoder);
        ring.encode_copy(&mut encoder, norm.stats_buffer(), step);
        g.queue.submit([encoder.finish()]);
        ring.after_submit();
        seen.extend(ring.poll(&g.device).unwrap());
    }
    seen.extend(ring.drain(&g.device).unwrap());
    assert_eq!(seen.len() as u64 + ring.dropped(), 20);
    let steps: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "steps out of order: {steps:?}");
    for (step, stats) in &seen {
        assert_close(stats.l2, *step as f32 * 1000f32.sqrt(), 1e-6, &format!("step {step}"));
        assert_eq!(stats.segments.len(), 2);
    }
}
