//! Embedding: gradguard inside someone else's device, encoder and compute pass, and from
//! several threads on one device.

mod common;

use common::*;
use gradguard::readback::read_stats_blocking;
use gradguard::{cpu, ClipPolicy, Gpu, GradClip, GradSet, NonFinitePolicy, NormKind};

#[test]
fn records_inside_the_callers_compute_pass() {
    let g = gpu();
    let wrapped = Gpu::from_device(g.device.clone(), g.queue.clone());
    let data = random(&mut rng(20), 5000, 1.0);
    let buffer = upload(&data);
    let policy = ClipPolicy::GlobalNorm { max_norm: 0.5, kind: NormKind::L2 };
    let clip = GradClip::new(&wrapped.device, &GradSet::packed(&buffer, &[4000, 1000]), policy.clone(), NonFinitePolicy::Propagate)
        .unwrap();
    let mut encoder = wrapped.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        clip.encode_in_pass(&mut pass);
    }
    wrapped.queue.submit([encoder.finish()]);
    let mut expect = vec![data[..4000].to_vec(), data[4000..].to_vec()];
    cpu::clip::clip(&mut expect, &policy, None, NonFinitePolicy::Propagate);
    assert_all_close(&download(&buffer), &expect.concat(), 2e-5, "clipped in the caller's pass");
}

#[test]
fn two_threads_share_one_device() {
    let results: Vec<(f32, f32)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u64)
            .map(|t| {
                s.spawn(move || {
                    let g = gpu();
                    let data = random(&mut rng(30 + t), 20_000 + t as usize * 999, 1.0 + t as f32);
                    let buffer = upload(&data);
                    let set = GradSet::packed(&buffer, &[data.len() as u64]);
                    let clip = GradClip::new(&g.device, &set, ClipPolicy::None, NonFinitePolicy::Propagate).unwrap();
                    let mut last = 0.0;
                    for _ in 0..10 {
                        let mut encoder = g.device.create_command_encoder(&Default::default());
                        clip.encode(&mut encoder);
                        g.queue.submit([encoder.finish()]);
                        last = read_stats_blocking(&g.device, &g.queue, clip.stats_buffer()).unwrap().l2;
                    }
                    let expect = cpu::norm::norm(&[&data], NormKind::L2, None, 1e-6, NonFinitePolicy::Propagate).l2;
                    (last, expect)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (got, expect) in results {
        assert_close(got, expect, 1e-5, "norm computed from a second thread");
    }
}

#[test]
fn exposes_what_embedders_need() {
    assert!(gradguard::required_features().is_empty());
    assert_eq!(gradguard::required_limits(), gradguard::wgpu::Limits::default());
    for shader in gradguard::shaders::ALL {
        assert!(!shader.source.is_empty() && !shader.entry_points.is_empty());
    }
}

/// Processes of one machine take its adapters in turn by local rank; with one adapter of
/// the best kind (here: one CPU implementation per backend), every rank gets that one.
#[test]
fn local_ranks_take_the_best_adapters_in_turn() {
    let first = Gpu::for_local_rank(0).unwrap();
    let fourth = Gpu::for_local_rank(3).unwrap();
    assert_eq!(first.info.name, gpu().info.name, "rank 0 takes what Gpu::new takes");
    assert_eq!((fourth.info.backend, fourth.info.device_type), (first.info.backend, first.info.device_type));
}
