//! The default lab's verdict on the RNN: unremedied, the adding problem at T = 50 is not
//! solved; clipping the global norm at 1 solves it by Pascanu et al.'s criterion. The same
//! configuration and seed as `gradguard lab`.
#![cfg(feature = "train")]

mod common;

use common::gpu;
use gradguard::lab::{bases, REMEDIES};
use gradguard::train::Trainer;

#[test]
fn the_default_labs_rnn_fails_unclipped_and_is_solved_by_the_global_norm_clip() {
    let [_, (_, rnn)] = bases(false, 0);
    let remedy = |name: &str| REMEDIES.iter().find(|r| r.name == name).expect("a lab remedy");
    let mut baseline = Trainer::new(gpu(), (remedy("baseline").apply)(&rnn).unwrap()).unwrap();
    let unclipped = baseline.run(|_, _| Ok(())).unwrap();
    assert!(!unclipped.solved && unclipped.test.error_rate > 0.2, "{:?}", unclipped.test);

    let mut clipped = Trainer::new(gpu(), (remedy("clip global norm 1").apply)(&rnn).unwrap()).unwrap();
    let summary = clipped.run(|_, _| Ok(())).unwrap();
    assert!(summary.solved && summary.test.error_rate < 0.01, "{:?}", summary.test);
    assert!(summary.solved_at.is_some_and(|k| k <= rnn.steps), "{:?}", summary.solved_at);
    // The clip had work to do: gradients of ten times its threshold and more.
    let peak = clipped.records().iter().map(|r| r.norm).fold(0.0, f32::max);
    assert!(peak > 10.0, "{peak}");
}
