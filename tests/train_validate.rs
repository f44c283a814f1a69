//! Settings, models and files a library caller gets wrong are typed errors, never panics.
//! No device needed.
#![cfg(feature = "train")]

use gradguard::kernels::activation::Activation;
use gradguard::lab::exploding_mlp;
use gradguard::monitor::{percentile, GradMonitor, MonitorConfig, NormHistory};
use gradguard::nn::{InitScheme, LayerSpec, ModelSpec};
use gradguard::train::{temp_path, write_file, ClipSetting};
use gradguard::{AdaptivePolicy, AutoClip, ZClip};
use gradguard::Error;
use rand::{rngs::StdRng, Rng, SeedableRng};

#[test]
fn percentile_beyond_its_range_picks_an_end() {
    let sorted = [1.0, 2.0, 3.0];
    assert_eq!(percentile(&sorted, 150.0), Some(3.0));
    assert_eq!(percentile(&sorted, 1e300), Some(3.0));
    assert_eq!(percentile(&sorted, f64::INFINITY), Some(3.0));
    assert_eq!(percentile(&sorted, -20.0), Some(1.0));
    assert_eq!(percentile(&sorted, f64::NAN), Some(1.0));
    assert_eq!(percentile(&sorted, 50.0), Some(2.0));
    assert_eq!(percentile(&[], 50.0), None);
}

#[test]
fn norm_history_matches_the_sorted_percentile() {
    let mut rng = StdRng::seed_from_u64(7);
    for p in [0.0, 10.0, 33.3, 50.0, 90.0, 100.0, 250.0] {
        let mut history = NormHistory::new(p);
        let mut sorted: Vec<f64> = Vec::new();
        assert_eq!(history.percentile(), None);
        for i in 0..300 {
            // Repeats and a spread of magnitudes.
            let v = if i % 7 == 0 { 1.0 } else { rng.random::<f64>() * 10f64.powi(rng.random_range(-3..4)) };
            assert!(history.insert(v));
            let at = sorted.partition_point(|&h| h < v);
            sorted.insert(at, v);
            assert_eq!(history.percentile(), percentile(&sorted, p), "p {p}, {} values", sorted.len());
        }
        assert!(!history.insert(f64::NAN) && !history.insert(f64::INFINITY), "non-finite values stay out");
        assert_eq!(history.sorted(), sorted);
        let restored = NormHistory::from_values(p, sorted.iter().rev().copied());
        assert_eq!(restored.percentile(), history.percentile());
    }
}

#[test]
fn train_config_refuses_bad_monitor_and_adaptive_settings() {
    let base = exploding_mlp(10, 1);
    assert!(base.validate().is_ok());
    let monitor = |f: fn(&mut MonitorConfig)| {
        let mut c = base.clone();
        f(&mut c.monitor);
        c.validate()
    };
    for result in [
        monitor(|m| m.percentile = 150.0),
        monitor(|m| m.percentile = f64::NAN),
        monitor(|m| m.percentile = -1.0),
        monitor(|m| m.ema_alpha = 1.5),
        monitor(|m| m.ema_alpha = f64::NAN),
        monitor(|m| m.z_threshold = -2.0),
        monitor(|m| m.z_threshold = f64::INFINITY),
        monitor(|m| m.warmup = 0),
        monitor(|m| m.max_norm = 0.0),
        monitor(|m| m.percentile_factor = f64::NAN),
        monitor(|m| m.depth_ratio = -1.0),
        monitor(|m| m.loss_factor = 0.0),
    ] {
        assert!(matches!(result, Err(Error::OutOfRange { .. })), "{result:?}");
    }
    assert!(monitor(|m| m.max_norm = f64::INFINITY).is_ok(), "+inf turns the absolute detector off");

    let clip = |clip: ClipSetting| {
        let mut c = base.clone();
        c.clip = clip;
        c.validate()
    };
    for bad in [
        ClipSetting::Adaptive(AdaptivePolicy::AutoClip(AutoClip { percentile: 101.0, capacity: 5, max_norm: None })),
        ClipSetting::Adaptive(AdaptivePolicy::AutoClip(AutoClip { percentile: f32::NAN, capacity: 5, max_norm: None })),
        ClipSetting::Adaptive(AdaptivePolicy::AutoClip(AutoClip { percentile: 10.0, capacity: 0, max_norm: None })),
        ClipSetting::Adaptive(AdaptivePolicy::AutoClip(AutoClip { percentile: 10.0, capacity: 5, max_norm: Some(0.0) })),
        ClipSetting::Adaptive(AdaptivePolicy::ZClip(ZClip { alpha: 2.0, ..ZClip::default() })),
        ClipSetting::Adaptive(AdaptivePolicy::ZClip(ZClip { z: -1.0, ..ZClip::default() })),
        ClipSetting::Adaptive(AdaptivePolicy::ZClip(ZClip { z: f32::NAN, ..ZClip::default() })),
        ClipSetting::Adaptive(AdaptivePolicy::ZClip(ZClip { warmup: 0, ..ZClip::default() })),
        ClipSetting::Adaptive(AdaptivePolicy::ZClip(ZClip { max_norm: Some(f32::INFINITY), ..ZClip::default() })),
        ClipSetting::Value { clip_value: -1.0 },
        ClipSetting::GlobalNorm { max_norm: f32::NAN, kind: gradguard::NormKind::L2 },
        ClipSetting::PerSegmentNorm { max_norm: 0.0, kind: gradguard::NormKind::L2 },
        ClipSetting::Agc { clipping: f32::INFINITY, eps: 1e-3 },
        ClipSetting::Agc { clipping: 0.01, eps: -1.0 },
    ] {
        assert!(matches!(clip(bad), Err(Error::OutOfRange { .. })), "{bad:?}: {:?}", clip(bad));
    }
    assert!(clip(ClipSetting::Adaptive(AdaptivePolicy::AutoClip(AutoClip { percentile: 100.0, capacity: 1, max_norm: None }))).is_ok());
    assert!(clip(ClipSetting::Adaptive(AdaptivePolicy::ZClip(ZClip { max_norm: None, ..ZClip::default() }))).is_ok());
}

#[test]
fn monitor_refuses_a_segment_of_no_layer() {
    let layers = vec!["linear1".to_string(), "linear2".to_string()];
    assert!(GradMonitor::new(MonitorConfig::default(), layers.clone(), vec![0, 0, 1, 1]).is_ok());
    assert!(matches!(GradMonitor::new(MonitorConfig::default(), layers.clone(), vec![0, 2]), Err(Error::NotBelow { value: 2, .. })));
    let bad = MonitorConfig { percentile: 200.0, ..MonitorConfig::default() };
    assert!(matches!(GradMonitor::new(bad, layers, vec![0]), Err(Error::OutOfRange { .. })));
}

#[test]
fn model_spec_refuses_zero_sizes() {
    let spec = |layers: Vec<LayerSpec>| ModelSpec { layers, init: InitScheme::Kaiming };
    let rnn = |inputs, hidden, steps| LayerSpec::Rnn { inputs, hidden, steps, activation: Activation::Tanh };
    let head = |inputs, outputs| LayerSpec::Linear { inputs, outputs };
    assert!(spec(vec![rnn(2, 4, 3), head(4, 1)]).validate().is_ok());
    let cases = [
        (spec(vec![rnn(2, 4, 0), head(4, 1)]), "steps"),
        (spec(vec![rnn(2, 0, 3), head(0, 1)]), "hidden"),
        (spec(vec![rnn(0, 4, 3), head(4, 1)]), "inputs"),
        (spec(vec![rnn(2, 4, 3), head(4, 0)]), "outputs"),
        (spec(vec![head(3, 0), LayerSpec::Activation(Activation::Relu), head(0, 2)]), "outputs"),
        (spec(vec![head(3, 5), LayerSpec::BatchNorm { features: 0 }]), "features"),
    ];
    for (spec, field) in cases {
        match spec.validate() {
            Err(Error::EmptyLayer { what, .. }) => assert_eq!(what, field, "{spec:?}"),
            other => panic!("{spec:?}: {other:?}"),
        }
        assert!(spec.init_params(1).is_err());
    }
}

#[test]
fn temp_path_appends_tmp() {
    use std::path::Path;
    assert_eq!(temp_path(Path::new("foo")), Path::new("foo.tmp"));
    assert_eq!(temp_path(Path::new("dir/metrics.csv")), Path::new("dir/metrics.csv.tmp"));
    assert_eq!(temp_path(Path::new("a.b/c")), Path::new("a.b/c.tmp"));
}

#[test]
fn a_failed_write_is_an_io_error() {
    let path = std::env::temp_dir().join(format!("gradguard-no-such-dir-{}", std::process::id())).join("metrics.csv");
    match write_file(&path, b"x") {
        Err(Error::Io { path: p, source, .. }) => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    let dir = std::env::temp_dir().join(format!("gradguard-write-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("plain");
    write_file(&file, b"ok").unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"ok");
    assert!(!temp_path(&file).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A write that fails after its temporary file was made (here the rename, onto a directory;
/// a full disk fails the same way one step earlier) leaves no `.tmp` behind.
#[test]
fn a_failed_write_leaves_no_temporary_file() {
    let dir = std::env::temp_dir().join(format!("gradguard-failed-write-{}", std::process::id()));
    let target = dir.join("metrics.csv");
    std::fs::create_dir_all(target.join("occupied")).unwrap();
    let err = write_file(&target, b"step,loss\n").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(!temp_path(&target).exists(), "the temporary file was left behind");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Library errors name the configuration's settings, never the command line's flags.
#[test]
fn train_config_errors_name_settings_not_flags() {
    let mut config = gradguard::lab::exploding_mlp(0, 0);
    let e = config.validate().unwrap_err().to_string();
    assert_eq!(e, "steps must be at least 1, got 0");
    config.steps = 5;
    config.lr = f32::NAN;
    assert_eq!(config.validate().unwrap_err().to_string(), "lr must be finite and ≥ 0, got NaN");
    let renamed = config.validate().unwrap_err().renamed(|s| if s == "lr" { "--lr" } else { s });
    assert_eq!(renamed.to_string(), "--lr must be finite and ≥ 0, got NaN");
}
