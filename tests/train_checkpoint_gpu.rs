//! A run saved and resumed continues bit for bit as if it had never stopped: same records,
//! same events, same weights and optimizer state.
#![cfg(feature = "train")]

mod common;

use common::gpu;
use gradguard::lab::{exploding_mlp, exploding_rnn};
use gradguard::monitor::Detector;
use gradguard::readback::read_buffer;
use gradguard::train::checkpoint::ResumeOptions;
use gradguard::{AdaptivePolicy, AutoClip, ZClip};
use gradguard::train::{ClipSetting, Fault, FaultKind, OptimizerChoice, Schedule, TrainConfig, Trainer};

fn checkpoint_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gradguard-ckpt-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("checkpoint.safetensors")
}

/// Every parameter and optimizer-state word of a trainer.
fn device_state(trainer: &Trainer) -> Vec<Vec<u32>> {
    let g = gpu();
    let buffers = [trainer.model().params(), trainer.optimizer_state().buffer()].into_iter().chain(trainer.model().running_stats());
    buffers.map(|b| read_buffer(&g.device, &g.queue, b).unwrap()).collect()
}

/// `steps` straight against `stop_at` steps, a checkpoint, a fresh trainer resumed from it
/// and the rest.
fn check_resume(name: &str, config: TrainConfig, stop_at: u64) {
    let mut straight = Trainer::new(gpu(), config.clone()).unwrap();
    let straight_summary = straight.run(|_, _| Ok(())).unwrap();

    let path = checkpoint_path(name);
    {
        let mut first = Trainer::new(gpu(), config.clone()).unwrap();
        for _ in 0..stop_at {
            first.step().unwrap();
        }
        first.save_checkpoint(&path).unwrap();
    } // dropped: nothing but the file carries over
    let info = gradguard::train::checkpoint::read_info(&path).unwrap();
    assert_eq!(info.step, stop_at);
    // A run may have saved NaN weights on purpose (an injected fault, propagated).
    let options = ResumeOptions { allow_nonfinite: true };
    let mut resumed = Trainer::resume(gpu(), config, &path, options).unwrap();
    let resumed_summary = resumed.run(|_, _| Ok(())).unwrap();

    assert_eq!(resumed.records().len(), straight.records().len());
    for (a, b) in straight.records().iter().zip(resumed.records()) {
        // Bitwise: NaN losses must match too.
        let bits = |r: &gradguard::train::StepRecord| {
            (r.step, r.loss.to_bits(), r.norm.to_bits(), r.applied_norm.to_bits(), r.lr.to_bits(), r.skipped, r.events.clone())
        };
        assert_eq!(bits(a), bits(b), "step {}", a.step);
        assert_eq!(a.layer_norms.iter().map(|n| n.to_bits()).collect::<Vec<_>>(), b.layer_norms.iter().map(|n| n.to_bits()).collect::<Vec<_>>());
    }
    // Through Debug: a NaN loss is an event's value, and NaN != NaN.
    assert_eq!(format!("{:?}", straight.monitor().events()), format!("{:?}", resumed.monitor().events()));
    assert_eq!(device_state(&straight), device_state(&resumed), "weights or optimizer state differ");
    assert_eq!(straight_summary.steps_run, resumed_summary.steps_run);
    assert_eq!(straight_summary.final_loss.to_bits(), resumed_summary.final_loss.to_bits());
    assert_eq!(straight_summary.stopped, resumed_summary.stopped);
}

#[test]
fn mlp_adamw_zclip_batchnorm_resumes_bitwise() {
    let mut config = exploding_mlp(40, 11);
    config.model = gradguard::train::ModelChoice::Mlp {
        depth: 4,
        width: 32,
        activation: gradguard::kernels::activation::Activation::Relu,
        batchnorm: true,
    };
    config.optimizer = OptimizerChoice::AdamW;
    config.lr = 0.01;
    config.schedule = Schedule::Step { every: 15, factor: 0.5 };
    config.clip = ClipSetting::Adaptive(AdaptivePolicy::ZClip(ZClip { alpha: 0.9, z: 1.5, warmup: 10, max_norm: Some(5.0) }));
    config.responses.lr_drop = Some(gradguard::train::LrDrop { factor: 0.5, min_scale: 0.1, cooldown: 3 });
    config.monitor.warmup = 5;
    // A spike just before the stop: its record is in flight when the checkpoint is taken,
    // and the learning-rate drop it causes must land at the same step after the resume.
    config.faults = vec![Fault { step: 18, layer: "linear2".into(), kind: FaultKind::Scale(1e3), rank: None }];
    check_resume("mlp", config.clone(), 19);
    // Stopped right after the spike's record was read, and at a step boundary of nothing.
    check_resume("mlp-b", config, 21);
}

#[test]
fn rnn_sgd_autoclip_cosine_resumes_bitwise() {
    let mut config = exploding_rnn(30, 12, 5);
    config.batch = 32;
    config.init = gradguard::nn::InitScheme::Orthogonal { gain: 1.0 }; // trains, so clipping bites
    config.optimizer = OptimizerChoice::Sgd { momentum: 0.9 };
    config.schedule = Schedule::Cosine;
    config.clip = ClipSetting::Adaptive(AdaptivePolicy::AutoClip(AutoClip { percentile: 50.0, capacity: 8, max_norm: None }));
    config.responses.lr_drop = Some(gradguard::train::LrDrop { factor: 0.1, min_scale: 0.01, cooldown: 2 });
    config.monitor.warmup = 5;
    config.faults = vec![
        Fault { step: 10, layer: "rnn".into(), kind: FaultKind::Nan, rank: None },
        Fault { step: 14, layer: "rnn".into(), kind: FaultKind::Scale(100.0), rank: None },
    ];
    config.on_nonfinite = gradguard::NonFinitePolicy::SkipStep;
    config.watch_forward = true; // its words ride in the records in flight
    check_resume("rnn", config, 15);
}

#[test]
fn stop_on_explosion_survives_a_resume() {
    let mut config = exploding_mlp(40, 2);
    config.init = gradguard::nn::InitScheme::Kaiming; // no explosion but the injected one
    config.responses.stop_on_explosion = true;
    config.faults = vec![Fault { step: 9, layer: "linear3".into(), kind: FaultKind::Inf, rank: None }];
    let mut straight = Trainer::new(gpu(), config.clone()).unwrap();
    let summary = straight.run(|_, _| Ok(())).unwrap();
    assert_eq!(straight.records().len(), 12, "the fault's record stops the run two steps later: {:?}", summary.stopped);
    assert!(straight.monitor().events().iter().any(|e| e.detector == Detector::NonFiniteGradient));
    // The fault's record is in flight at the checkpoint; the resumed run stops at the same step.
    check_resume("stop", config, 10);
}

/// A checkpoint whose host state was edited (an in-flight record claiming a skipped step)
/// fails its checksum: refused with a reason, never a panic or a replay of made-up records.
#[test]
fn an_edited_checkpoint_fails_its_checksum() {
    let mut config = exploding_mlp(8, 12);
    config.model = gradguard::train::ModelChoice::Mlp {
        depth: 2,
        width: 16,
        activation: gradguard::kernels::activation::Activation::Relu,
        batchnorm: false,
    };
    config.init = gradguard::nn::InitScheme::Kaiming;
    config.on_nonfinite = gradguard::NonFinitePolicy::Error;
    let path = checkpoint_path("tampered");
    {
        let mut first = Trainer::new(gpu(), config.clone()).unwrap();
        for _ in 0..4 {
            first.step().unwrap();
        }
        first.save_checkpoint(&path).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut metadata = header.metadata().clone().unwrap();
    let mut host: serde_json::Value = serde_json::from_str(&metadata["host"]).unwrap();
    let record = &mut host["in_flight"][0];
    assert!(record.is_object(), "the checkpoint must hold records in flight");
    record["words"][2] = 1.into();
    metadata.insert("host".into(), host.to_string());
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors.tensors();
    std::fs::write(&path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();

    let err = Trainer::resume(gpu(), config, &path, Default::default()).err().expect("an edited checkpoint is refused");
    assert!(matches!(err, gradguard::Error::Checkpoint { .. }) && err.to_string().contains("checksum"), "{err}");
}

/// Rewind and continue with a fix: a resume may change the remedies. The steps before the
/// checkpoint stay as they were; the ones after run under the new clip, from the saved weights.
#[test]
fn a_resume_may_change_the_remedies() {
    let zclip = ClipSetting::Adaptive(AdaptivePolicy::ZClip(ZClip { max_norm: Some(50.0), ..ZClip::default() }));
    let norm = ClipSetting::GlobalNorm { max_norm: 0.5, kind: gradguard::NormKind::L2 };
    for (name, before, after) in [("to-norm", zclip, norm), ("to-zclip", norm, zclip)] {
        let mut config = exploding_mlp(20, 3);
        config.clip = before;
        let path = checkpoint_path(name);
        let mut first = Trainer::new(gpu(), config.clone()).unwrap();
        for _ in 0..10 {
            first.step().unwrap();
        }
        first.save_checkpoint(&path).unwrap();
        let read_before = first.records().to_vec();
        let mut fixed = config.clone();
        (fixed.clip, fixed.lr, fixed.on_nonfinite) = (after, config.lr / 2.0, gradguard::NonFinitePolicy::SkipStep);
        let mut resumed = Trainer::resume(gpu(), fixed, &path, Default::default()).unwrap();
        resumed.run(|_, _| Ok(())).unwrap();
        assert_eq!(&resumed.records()[..read_before.len()], read_before.as_slice(), "{name}: the steps before");
        let later = &resumed.records()[10..];
        assert!(later.iter().all(|r| r.lr == config.lr / 2.0), "{name}: the new rate from step 10");
        if after == norm {
            assert!(later.iter().all(|r| r.applied_norm <= 0.5 * 1.0001), "{name}: the new clip from step 10");
        }
        let mut changed_model = config.clone();
        changed_model.batch += 1;
        let err = Trainer::resume(gpu(), changed_model, &path, Default::default()).err().expect("another batch is refused");
        assert!(err.to_string().contains("batch"), "{err}");
    }
}

/// A refusal speaks of the configuration's settings, never of the command line's flags;
/// `Error::renamed` turns them into a front end's words.
#[test]
fn a_refused_checkpoint_names_settings_not_flags() {
    let mut config = exploding_mlp(6, 3);
    let path = checkpoint_path("settings");
    let mut first = Trainer::new(gpu(), config.clone()).unwrap();
    for _ in 0..6 {
        first.step().unwrap();
    }
    first.save_checkpoint(&path).unwrap();
    config.steps = 4;
    let err = Trainer::resume(gpu(), config, &path, ResumeOptions::default()).err().expect("past its steps");
    let text = err.to_string();
    assert!(text.contains("past `steps` 4") && !text.contains("--"), "{text}");
    let renamed = err.renamed(|s| if s == "steps" { "--steps" } else { s }).to_string();
    assert!(renamed.contains("past --steps 4"), "{renamed}");
}
