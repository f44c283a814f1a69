//! One kernel cache per device: every pipeline compiled once however many objects use it,
//! and threads sharing the device get the same pipelines and the same results. One test,
//! so that nothing else in this binary compiles while it counts.
#![cfg(feature = "train")]

mod common;

use common::{gpu, upload};

use gradguard::kernels::KernelCache;
use gradguard::lab::{exploding_mlp, exploding_rnn};
use gradguard::readback::read_stats_blocking;
use gradguard::train::{ClipSetting, Trainer};
use gradguard::{ClipPolicy, GradClip, GradSet, NonFinitePolicy, NormKind};

#[test]
fn each_pipeline_compiles_once_per_device_and_threads_agree() {
    let g = gpu();
    let cache = KernelCache::of(&g.device);
    let compiled = || cache.compiled_pipelines();
    let policy = ClipPolicy::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 };

    let a = upload(&[3.0; 1000]);
    let before = compiled();
    let first = GradClip::new(&g.device, &GradSet::packed(&a, &[1000]), policy.clone(), NonFinitePolicy::SkipStep).unwrap();
    let after_first = compiled();
    assert!(after_first > before, "the first GradClip compiles its pipelines");
    let b = upload(&[1.0; 5000]);
    let second = GradClip::new(&g.device, &GradSet::packed(&b, &[2000, 3000]), policy.clone(), NonFinitePolicy::SkipStep).unwrap();
    assert_eq!(compiled(), after_first, "a second GradClip on the device compiles nothing");
    drop((first, second));

    for config in [exploding_mlp(4, 1), exploding_rnn(4, 30, 1)] {
        let config = gradguard::train::TrainConfig { clip: ClipSetting::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 }, ..config };
        let mut one = Trainer::new(g, config.clone()).unwrap();
        one.step().unwrap();
        let after_one = compiled();
        let mut two = Trainer::new(g, config).unwrap();
        two.step().unwrap();
        assert_eq!(compiled(), after_one, "a second Trainer on the device compiles nothing");
    }

    // Threads sharing the device build their own norms from the shared cache and agree bit
    // for bit with the main thread.
    let data: Vec<f32> = (0..100_003).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
    let stats_on_this_thread = {
        let buffer = upload(&data);
        let clip = GradClip::new(&g.device, &GradSet::packed(&buffer, &[40_000, 60_003]), policy.clone(), NonFinitePolicy::SkipStep).unwrap();
        let mut encoder = g.device.create_command_encoder(&Default::default());
        clip.encode(&mut encoder);
        g.queue.submit([encoder.finish()]);
        read_stats_blocking(&g.device, &g.queue, clip.stats_buffer()).unwrap()
    };
    let before_threads = compiled();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let buffer = upload(&data);
                    let set = GradSet::packed(&buffer, &[40_000, 60_003]);
                    let clip = GradClip::new(&g.device, &set, policy.clone(), NonFinitePolicy::SkipStep).unwrap();
                    let mut encoder = g.device.create_command_encoder(&Default::default());
                    clip.encode(&mut encoder);
                    g.queue.submit([encoder.finish()]);
                    read_stats_blocking(&g.device, &g.queue, clip.stats_buffer()).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(compiled(), before_threads, "threads reuse the cached pipelines");
    for stats in results {
        assert_eq!(stats.norm.to_bits(), stats_on_this_thread.norm.to_bits());
        assert_eq!(stats, stats_on_this_thread);
    }
}
