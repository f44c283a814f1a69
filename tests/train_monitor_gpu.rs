//! Explosion end to end: the exploding configuration is detected within a bounded number
//! of steps, naming the layer; global-norm clipping prevents it; a non-finite gradient
//! under skip-step leaves every weight and optimizer state bitwise unchanged and training
//! continues; an injected spike is reported in the right layer.
#![cfg(feature = "train")]

mod common;

use common::gpu;

use std::hash::{Hash, Hasher};

use gradguard::lab::exploding_mlp;
use gradguard::monitor::Detector;
use gradguard::nn::InitScheme;
use gradguard::readback::read_f32s;
use gradguard::train::{ClipSetting, Fault, FaultKind, Trainer, LAG};
use gradguard::{NonFinitePolicy, NormKind};

#[test]
fn exploding_mlp_is_detected_within_bounded_steps_naming_the_layer() {
    let mut trainer = Trainer::new(gpu(), exploding_mlp(40, 0)).unwrap();
    let summary = trainer.run(|_, _| Ok(())).unwrap();
    let first = summary.first_explosion.expect("the exploding configuration explodes");
    assert!(first.step < 30, "detected only at step {}", first.step);
    assert!(trainer.monitor().layers().contains(&first.layer), "names a real layer: {}", first.layer);
    let nonfinite = trainer.monitor().events().iter().find(|e| e.detector == Detector::NonFiniteGradient);
    let nonfinite = nonfinite.expect("it ends in non-finite gradients");
    assert!(trainer.monitor().layers().contains(&nonfinite.layer));
}

#[test]
fn global_norm_clipping_prevents_the_explosion() {
    let mut config = exploding_mlp(120, 0);
    config.clip = ClipSetting::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 };
    let mut trainer = Trainer::new(gpu(), config).unwrap();
    let summary = trainer.run(|_, _| Ok(())).unwrap();
    assert!(!summary.exploded, "clipped run exploded: {:?}", summary.first_explosion);
    assert!(trainer.records().iter().all(|r| r.loss.is_finite() && r.norm.is_finite()));
    let first = trainer.records()[0].loss;
    assert!(summary.final_loss < first as f64, "loss went from {first} to {}", summary.final_loss);
}

/// A hash of every parameter and optimizer-state bit.
fn weights_hash(trainer: &Trainer) -> u64 {
    let g = gpu();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in trainer.read_params().unwrap() {
        p.iter().for_each(|v| v.to_bits().hash(&mut h));
    }
    read_f32s(&g.device, &g.queue, trainer.optimizer_state().buffer()).unwrap().iter().for_each(|v| v.to_bits().hash(&mut h));
    h.finish()
}

#[test]
fn skipped_nonfinite_step_leaves_weights_bitwise_unchanged_and_training_continues() {
    let mut config = exploding_mlp(20, 1);
    config.init = InitScheme::Kaiming;
    config.on_nonfinite = NonFinitePolicy::SkipStep;
    config.faults = vec![Fault { step: 6, layer: "linear3".into(), kind: FaultKind::Nan, rank: None }];
    let mut trainer = Trainer::new(gpu(), config).unwrap();
    for _ in 0..6 {
        trainer.step().unwrap();
    }
    let before = weights_hash(&trainer);
    trainer.step().unwrap(); // step 6: NaN in linear3's gradient
    assert_eq!(weights_hash(&trainer), before, "the skipped step changed weights or optimizer state");
    trainer.step().unwrap();
    assert_ne!(weights_hash(&trainer), before, "training did not continue after the skipped step");
    let summary = trainer.run(|_, _| Ok(())).unwrap();
    let skipped: Vec<u64> = trainer.records().iter().filter(|r| r.skipped).map(|r| r.step).collect();
    assert_eq!(skipped, [6]);
    assert_eq!(summary.skipped_steps, 1);
    let e = trainer.monitor().events().iter().find(|e| e.detector == Detector::NonFiniteGradient).unwrap();
    assert_eq!((e.step, e.layer.as_str()), (6, "linear3"));
    assert!(trainer.records().iter().filter(|r| r.step > 6).all(|r| r.loss.is_finite()));
    assert_eq!(summary.submits, 20);
    assert!(summary.blocking_waits <= LAG + 1, "waited {} times", summary.blocking_waits);
}

#[test]
fn injected_gradient_spike_is_reported_in_its_layer() {
    let mut config = exploding_mlp(40, 2);
    config.init = InitScheme::Kaiming;
    config.faults = vec![Fault { step: 32, layer: "linear2".into(), kind: FaultKind::Scale(1e7), rank: None }];
    let mut trainer = Trainer::new(gpu(), config).unwrap();
    trainer.run(|_, _| Ok(())).unwrap();
    let events = trainer.monitor().events();
    let at_32: Vec<_> = events.iter().filter(|e| e.step == 32).collect();
    assert!(at_32.iter().any(|e| e.detector == Detector::AbsoluteNorm && e.layer == "linear2"), "{events:?}");
    assert!(at_32.iter().any(|e| e.detector == Detector::Spike && e.layer == "linear2"), "{events:?}");
    assert!(events.iter().all(|e| e.step >= 32 || !e.detector.is_explosion()), "{events:?}");
}

/// The learning-rate drop reacts to every sign of instability (here norm spikes that the
/// clip contains, and a NaN that the step skips), at most once per cool-down, and never
/// below its floor.
#[test]
fn lr_drop_reacts_to_explosions_with_a_cooldown_and_a_floor() {
    let mut config = exploding_mlp(90, 2);
    config.init = InitScheme::Kaiming;
    config.on_nonfinite = NonFinitePolicy::SkipStep;
    config.clip = ClipSetting::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 };
    config.responses.lr_drop = Some(gradguard::train::LrDrop { factor: 0.5, min_scale: 0.2, cooldown: 10 });
    let spike = |step| Fault { step, layer: "linear2".into(), kind: FaultKind::Scale(1e7), rank: None };
    config.faults = vec![spike(30), spike(33), Fault { step: 45, layer: "linear4".into(), kind: FaultKind::Nan, rank: None }, spike(60), spike(75)];
    let base = config.lr;
    let mut trainer = Trainer::new(gpu(), config).unwrap();
    trainer.run(|_, _| Ok(())).unwrap();
    let mut cuts: Vec<(u64, f32)> = Vec::new();
    for pair in trainer.records().windows(2) {
        if pair[1].lr != pair[0].lr {
            cuts.push((pair[1].step, (1e4 * pair[1].lr / base).round() / 1e4));
        }
    }
    // Each event's record is read LAG steps later; the next step runs at the new rate.
    let at = |event: u64| event + LAG + 1;
    assert_eq!(cuts, [(at(30), 0.5), (at(45), 0.25), (at(60), 0.2)], "33 is in 30's cool-down; 75 finds the floor");
}

/// Healthy runs that converge raise no explosion: the lab's MLP from Kaiming's init, and
/// the README's adding example (`examples/false_alarms.rs` measures more seeds).
#[test]
fn healthy_runs_raise_no_explosion() {
    let mut mlp = exploding_mlp(300, 1);
    mlp.init = InitScheme::Kaiming;
    let mut rnn = gradguard::lab::exploding_rnn(1500, 50, 0);
    rnn.init = InitScheme::Identity { gain: 1.0 };
    rnn.lr = 0.005;
    rnn.clip = ClipSetting::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 };
    rnn.responses.stop_when_solved = false;
    for config in [mlp, rnn] {
        let mut trainer = Trainer::new(gpu(), config).unwrap();
        let summary = trainer.run(|_, _| Ok(())).unwrap();
        assert!(!summary.exploded, "{}: {:?}", summary.task, summary.first_explosion);
        assert!(summary.final_loss < trainer.records()[0].loss as f64 / 2.0, "{}: it must converge", summary.task);
    }
}

/// `NonFinitePolicy::Error` stops at the step that fired: the device skips it and every step
/// submitted before the host read its record, so the weights are those of the steps before.
#[test]
fn the_error_policy_stops_at_the_step_that_fired() {
    let mut config = exploding_mlp(30, 4);
    config.init = InitScheme::Kaiming;
    config.on_nonfinite = NonFinitePolicy::Error;
    let mut clean = Trainer::new(gpu(), config.clone()).unwrap();
    for _ in 0..9 {
        clean.step().unwrap();
    }
    config.faults = vec![Fault { step: 9, layer: "linear3".into(), kind: FaultKind::Nan, rank: None }];
    let mut faulty = Trainer::new(gpu(), config).unwrap();
    let summary = faulty.run(|_, _| Ok(())).unwrap();
    let stopped = summary.stopped.expect("the NaN stops the run");
    assert!(stopped.starts_with("stopped at step 9:") && stopped.contains("first in linear3.weight"), "{stopped}");
    assert_eq!(weights_hash(&faulty), weights_hash(&clean), "the state is that after steps 0..9, not after the steps that followed");
    let skipped: Vec<u64> = faulty.records().iter().filter(|r| r.skipped).map(|r| r.step).collect();
    assert_eq!(skipped, (9..9 + LAG + 1).collect::<Vec<_>>());
}

/// With the forward pass watched, an explosion that starts there is reported first and in
/// the layer whose output overflowed: weights of 1e30 overflow the second Linear's output
/// (the first's stays finite: 11 inputs of order 1). The watch costs a norm over the nine
/// Linear outputs: one dispatch per buffer and two.
#[test]
fn a_forward_explosion_is_reported_in_its_layer() {
    let mut config = exploding_mlp(5, 0);
    config.init = InitScheme::Normal { std: 1e30 };
    config.watch_forward = true;
    let mut trainer = Trainer::new(gpu(), config.clone()).unwrap();
    assert_eq!(trainer.dispatches_per_step(), 33 + 9 + 2);
    let summary = trainer.run(|_, _| Ok(())).unwrap();
    let first = summary.first_explosion.expect("it explodes at once");
    assert_eq!((first.step, first.detector, first.layer.as_str()), (0, Detector::NonFiniteForward, "linear2"), "{first}");
    config.watch_forward = false;
    let unwatched = Trainer::new(gpu(), config).unwrap().run(|_, _| Ok(())).unwrap();
    assert_eq!(unwatched.first_explosion.map(|e| e.detector), Some(Detector::NonFiniteGradient));
}
