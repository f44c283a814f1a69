//! Evaluation: the weights checked every `eval_every` steps on the validation set (the
//! paper's criterion: fewer than 1% wrong is solved), scored on the test set at the end,
//! beside the trivial answer's score. Evaluated on the CPU twin of the model.

use crate::data::{Dataset, Score, SOLVED_BELOW};
use crate::nn::cpu::CpuModel;

/// A periodic check of the weights on the validation set.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Check {
    /// Steps done when the weights were checked.
    pub step: u64,
    /// The fraction of validation samples wrong.
    pub error_rate: f64,
}

/// The held-out data and the checks so far.
pub(super) struct Evaluation {
    validation: Dataset,
    test: Dataset,
    checks: Vec<Check>,
}

impl Evaluation {
    /// Checks on `validation`, scores on `test`.
    pub(super) fn new(validation: Dataset, test: Dataset) -> Self {
        Self { validation, test, checks: Vec::new() }
    }

    /// Checks `model` (the weights after `step` steps) on the validation set.
    pub(super) fn check(&mut self, step: u64, model: &CpuModel) {
        let score = self.validation.score(&model.predict(&self.validation));
        self.checks.push(Check { step, error_rate: score.error_rate });
    }

    /// The checks so far.
    pub(super) fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// Continues after the checks of a saved run.
    pub(super) fn restore(&mut self, checks: Vec<Check>) {
        self.checks = checks;
    }

    /// The first check that found the task solved.
    pub(super) fn solved_at(&self) -> Option<u64> {
        self.checks.iter().find(|c| c.error_rate < SOLVED_BELOW).map(|c| c.step)
    }

    /// `model` on the test set.
    pub(super) fn test_score(&self, model: &CpuModel) -> Score {
        self.test.score(&model.predict(&self.test))
    }

    /// The trivial answer learnt from `train` (the majority class, or the mean target),
    /// scored on the test set: at the end of a run, not at start-up.
    pub(super) fn trivial(&self, train: &Dataset) -> Score {
        self.test.trivial_score(train)
    }
}
