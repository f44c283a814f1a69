//! `gradguard lab --paper`: the paper's settings, a small sweep end to end, and bad input.
#![cfg(feature = "train")]

mod common;

use common::gpu;
use gradguard::lab::paper::{run, run_config, table, write, PaperConfig, STARTS};
use gradguard::nn::InitScheme;
use gradguard::train::{ClipSetting, ModelChoice, OptimizerChoice};
use gradguard::Error;

#[test]
fn each_run_is_set_up_as_the_papers_code() {
    let c = run_config(100, InitScheme::Sparse { radius: 0.95, nonzero: 15 }, true, 3, 500);
    assert_eq!(c.model, ModelChoice::Rnn { hidden: 50, activation: gradguard::kernels::activation::Activation::Tanh });
    assert_eq!((c.batch, c.lr, c.optimizer, c.seed, c.steps), (20, 0.01, OptimizerChoice::Sgd { momentum: 0.0 }, 3, 500));
    assert_eq!(c.clip, ClipSetting::GlobalNorm { max_norm: 1.0, kind: gradguard::NormKind::L2 });
    assert_eq!(run_config(100, STARTS[0].1, false, 0, 500).clip, ClipSetting::None);
    assert_eq!(STARTS[0].1, InitScheme::Normal { std: 0.1 });
    assert!(c.responses.stop_when_solved);
}

#[test]
fn a_small_sweep_runs_and_reports_every_cell() {
    let config = PaperConfig { lengths: vec![10, 12], seeds: 1, updates: 12 };
    let mut seen = 0;
    let runs = run(gpu(), &config, |runs| {
        seen = runs.len();
        Ok(())
    })
    .unwrap();
    assert_eq!((runs.len(), seen), (8, 8), "2 lengths × 2 starts × 2 methods × 1 seed");
    assert!(runs.iter().all(|r| r.summary.steps_run <= 12));
    let text = table(&runs);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[0].contains("basic tanh SGD-C") && rows[0].contains("smart tanh SGD"), "{text}");
    assert!(rows[1].starts_with("10") && rows[1].matches("/1 (").count() == 4, "{text}");
    let dir = std::env::temp_dir().join(format!("gradguard-paper-{}", std::process::id()));
    write(&dir, &runs, config.updates).unwrap();
    for file in ["paper.txt", "paper.svg", "paper.json"] {
        assert!(std::fs::metadata(dir.join(file)).unwrap().len() > 0, "{file}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_sweeps_are_refused_before_any_run() {
    let refused = |config: PaperConfig| run(gpu(), &config, |_| panic!("no run may start")).unwrap_err();
    assert!(matches!(refused(PaperConfig { lengths: vec![50, 5], ..PaperConfig::default() }), Error::OutOfRange { .. }));
    assert!(matches!(refused(PaperConfig { lengths: vec![], ..PaperConfig::default() }), Error::Empty { .. }));
}
