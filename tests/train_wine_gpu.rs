//! The wine MLP beats the majority-class baseline on the test split, and two runs with
//! the same seed write identical metrics.
#![cfg(feature = "train")]

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
    let s = trainer.run(|_, _| Ok(())).unwrap();
    let (accuracy, majority) = (s.test.metric.value(), s.trivial.metric.value());
    assert_eq!(s.test.metric.name(), "accuracy");
    assert!(accuracy > majority + 0.05, "test accuracy {accuracy} vs majority baseline {majority}");
    assert!((s.test.error_rate - (1.0 - accuracy)).abs() < 1e-12, "an error is a misclassified sample");
}

#[test]
fn same_seed_writes_identical_metrics() {
    let dir = std::env::temp_dir().join(format!("gradguard-determinism-{}", std::process::id()));
    let mut files = Vec::new();
    for run in 0..2 {
        let mut config = exploding_mlp(60, 9);
        // Adaptive clipping (on the device) and a learning-rate response (on the host): both
        // must land on the same steps.
        config.clip = ClipSetting::Adaptive(gradguard::AdaptivePolicy::AutoClip(gradguard::AutoClip {
            percentile: 50.0,
            capacity: 100,
            max_norm: None,
        }));
        config.responses.lr_drop = Some(gradguard::train::LrDrop::new(0.5));
        let mut trainer = Trainer::new(gpu(), config).unwrap();
        let summary = trainer.run(|_, _| Ok(())).unwrap();
        let out = dir.join(run.to_string());
        write_run(&out, &trainer, &summary).unwrap();
        files.push(std::fs::read(out.join("metrics.csv")).unwrap());
        assert!(out.join("plot.svg").exists() && out.join("summary.json").exists() && out.join("events.jsonl").exists());
    }
    assert_eq!(files[0], files[1], "metrics.csv differs between two runs with the same seed");
    assert_eq!(String::from_utf8_lossy(&files[0]).lines().count(), 61);
    let _ = std::fs::remove_dir_all(&dir);
}
