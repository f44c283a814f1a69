//! The wine MLP beats the majority-class baseline on the test split, and two runs with
//! the same seed write identical metrics.

mod common;

use common::gpu;

use gradguard::kernels::activation::Activation;
use gradguard::lab::exploding_mlp;
use gradguard::nn::InitScheme;
use gradguard::train::{write_run, ClipSetting, ModelChoice, Trainer};

#[test]
fn wine_mlp_beats_the_majority_baseline() {
    let mut config = exploding_mlp(400, 0);
    config.model = ModelChoice::Mlp { depth: 2, width: 64, activation: Activation::Relu, batchnorm: true };
    config.init = InitScheme::Kaiming;
    let mut trainer = Trainer::new(gpu(), config).unwrap();
    let s = trainer.run(|_| {}).unwrap();
    assert_eq!(s.metric_name, "accuracy");
    assert!(s.metric > s.baseline + 0.05, "test accuracy {} vs majority baseline {}", s.metric, s.baseline);
}

#[test]
fn same_seed_writes_identical_metrics() {
    let dir = std::env::temp_dir().join(format!("gradguard-determinism-{}", std::process::id()));
    let mut files = Vec::new();
    for run in 0..2 {
        let mut config = exploding_mlp(60, 9);
        // Adaptive clipping and a learning-rate response: host decisions must land on the same steps.
        config.clip = ClipSetting::Adaptive(gradguard::train::AdaptiveClip::Percentile { p: 50.0, warmup: 3 });
        config.responses.lr_drop_on_spike = Some(0.5);
        let mut trainer = Trainer::new(gpu(), config).unwrap();
        let summary = trainer.run(|_| {}).unwrap();
        let out = dir.join(run.to_string());
        let layers = trainer.monitor().layers().to_vec();
        write_run(&out, trainer.config(), trainer.records(), trainer.monitor().events(), &layers, &summary).unwrap();
        files.push(std::fs::read(out.join("metrics.csv")).unwrap());
        assert!(out.join("plot.svg").exists() && out.join("summary.json").exists() && out.join("events.jsonl").exists());
    }
    assert_eq!(files[0], files[1], "metrics.csv differs between two runs with the same seed");
    assert_eq!(String::from_utf8_lossy(&files[0]).lines().count(), 61);
    let _ = std::fs::remove_dir_all(&dir);
}
