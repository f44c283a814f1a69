//! Deferred readback: stats of step k arrive later, in order, without blocking the queue.

mod common;

use common::*;
use gradguard::readback::{ReadbackRing, StatsRing};
use gradguard::{GradNorm, GradSet, NormConfig};

#[test]
fn ring_returns_every_step_in_order() {
    let g = gpu();
    let buffer = upload(&[0.0; 1000]);
    let norm = GradNorm::new(&g.device, &GradSet::packed(&buffer, &[600, 400]), &NormConfig::default()).unwrap();
    let mut ring = StatsRing::new(&g.device, norm.stats_size(), 4).unwrap();
    let mut seen = Vec::new();
    for step in 0..20u64 {
        // Each step's gradients are the constant `step`: its L2 norm is step·sqrt(1000).
        g.queue.write_buffer(&buffer, 0, bytemuck::cast_slice(&vec![step as f32; 1000]));
        let mut encoder = g.device.create_command_encoder(&Default::default());
        norm.encode(&mut encoder);
        ring.encode_copy(&mut encoder, norm.stats_buffer(), step).unwrap();
        let submission = g.queue.submit([encoder.finish()]);
        ring.after_submit(submission);
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

#[test]
fn raw_ring_takes_one_step_and_survives_a_cancelled_encoder() {
    let g = gpu();
    let a = upload(&[1.0, 2.0, 3.0, 4.0]);
    let b = upload(&[5.0, 6.0]);
    let mut ring = ReadbackRing::new(&g.device, 24, 2).unwrap();
    // Copies recorded into an encoder that is dropped must not hold a slot forever.
    for _ in 0..3 {
        let mut encoder = g.device.create_command_encoder(&Default::default());
        assert!(ring.encode_copy(&mut encoder, 0, &[(&a, 16), (&b, 8)]).unwrap());
        ring.cancel_recorded();
    }
    for step in 0..2u64 {
        let mut encoder = g.device.create_command_encoder(&Default::default());
        assert!(ring.encode_copy(&mut encoder, step, &[(&a, 16), (&b, 8)]).unwrap());
        let submission = g.queue.submit([encoder.finish()]);
        ring.after_submit(submission);
    }
    // Both slots in flight: a third copy is dropped rather than waited for.
    let mut encoder = g.device.create_command_encoder(&Default::default());
    assert!(!ring.encode_copy(&mut encoder, 2, &[(&a, 16)]).unwrap());
    assert_eq!(ring.dropped(), 1);
    let words = ring.take(&g.device, 1).unwrap();
    let values: Vec<f32> = words.iter().map(|&w| f32::from_bits(w)).collect();
    assert_eq!(values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(ring.drain(&g.device).unwrap().len(), 1);
    assert!(ring.take(&g.device, 7).is_err(), "a step never recorded is an error");
    let mut encoder = g.device.create_command_encoder(&Default::default());
    assert!(ring.encode_copy(&mut encoder, 3, &[(&a, 16), (&b, 8), (&b, 8)]).is_err(), "too big a record");
}

#[test]
fn an_allocation_beyond_the_device_is_a_typed_error() {
    let g = gpu();
    let too_big = g.device.limits().max_buffer_size + 4;
    let err = ReadbackRing::new(&g.device, too_big / 4 * 4 + 4, 2).err().expect("must fail");
    assert!(matches!(err, gradguard::Error::Device { .. }), "{err}");
    // The device is still usable afterwards.
    assert!(ReadbackRing::new(&g.device, 64, 2).is_ok());
}

#[test]
fn rings_on_threads_sharing_a_device_take_every_record() {
    // Whichever thread polls the device may run another thread's map callback, a moment
    // after that thread's own wait returned: `take` must wait for it to land, not report
    // a failed mapping.
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            std::thread::spawn(move || {
                let g = gpu();
                let source = upload(&[t as f32; 64]);
                let mut ring = ReadbackRing::new(&g.device, 256, 2).unwrap();
                for step in 0..400u64 {
                    let mut encoder = g.device.create_command_encoder(&Default::default());
                    assert!(ring.encode_copy(&mut encoder, step, &[(&source, 256)]).unwrap());
                    ring.after_submit(g.queue.submit([encoder.finish()]));
                    let words = ring.take(&g.device, step).unwrap();
                    assert_eq!(f32::from_bits(words[63]), t as f32, "thread {t}, step {step}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
