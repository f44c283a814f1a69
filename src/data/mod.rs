//! Training data: the red-wine quality table, and the exploding-gradient sequence tasks of
//! Pascanu, Mikolov & Bengio (2013), generated from a seed.

mod sequence;
mod wine;

pub use sequence::{adding_problem, temporal_order};
pub use wine::wine_quality;

use rand::seq::SliceRandom;

use crate::error::{Error, Result};
use crate::init::rng;

/// What a sample is labelled with.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// One class id per sample, below `classes` (cross-entropy).
    Classes {
        /// One label per sample.
        labels: Vec<u32>,
        /// Number of classes.
        classes: u32,
    },
    /// `outputs` values per sample (mean squared error).
    Values {
        /// `outputs` values per sample, row-major.
        values: Vec<f32>,
        /// Values per sample.
        outputs: u32,
    },
}

/// Samples stored row-major: sample `i` is `inputs[i·sample_len .. (i+1)·sample_len]`.
/// A sequence sample is `[steps, features]`, time-major within the sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// All samples' features, row-major.
    pub inputs: Vec<f32>,
    /// Features per sample (`steps · features` for a sequence).
    pub sample_len: usize,
    /// The labels or values, one entry (or `outputs` values) per sample.
    pub targets: Targets,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.inputs.len().checked_div(self.sample_len).unwrap_or(0)
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Outputs the model must produce per sample: classes or regression values.
    pub fn outputs(&self) -> u32 {
        match &self.targets {
            Targets::Classes { classes, .. } => *classes,
            Targets::Values { outputs, .. } => *outputs,
        }
    }

    /// The samples at `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> Dataset {
        let n = self.sample_len;
        let inputs = rows.iter().flat_map(|&r| self.inputs[r * n..(r + 1) * n].iter().copied()).collect();
        let targets = match &self.targets {
            Targets::Classes { labels, classes } => {
                Targets::Classes { labels: rows.iter().map(|&r| labels[r]).collect(), classes: *classes }
            }
            Targets::Values { values, outputs } => {
                let o = *outputs as usize;
                Targets::Values {
                    values: rows.iter().flat_map(|&r| values[r * o..(r + 1) * o].iter().copied()).collect(),
                    outputs: *outputs,
                }
            }
        };
        Dataset { inputs, sample_len: n, targets }
    }

    /// Accuracy of always answering the training set's most frequent class, on `test`
    /// (None for regression).
    pub fn majority_baseline(&self, test: &Dataset) -> Option<f64> {
        let (Targets::Classes { labels, classes }, Targets::Classes { labels: test_labels, .. }) =
            (&self.targets, &test.targets)
        else {
            return None;
        };
        let mut counts = vec![0usize; *classes as usize];
        labels.iter().for_each(|&l| counts[l as usize] += 1);
        let majority = (0..counts.len()).max_by_key(|&c| (counts[c], std::cmp::Reverse(c)))? as u32;
        Some(test_labels.iter().filter(|&&l| l == majority).count() as f64 / test_labels.len().max(1) as f64)
    }
}

/// A train/test split.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// The training samples.
    pub train: Dataset,
    /// The held-out samples the summary's metric is measured on.
    pub test: Dataset,
}

/// Shuffles `data` with `seed` and puts `test_fraction` of it aside.
pub fn split(data: &Dataset, test_fraction: f64, seed: u64) -> Result<Split> {
    if !(0.0..1.0).contains(&test_fraction) {
        return Err(Error::Invalid(format!("test fraction must lie in [0, 1), got {test_fraction}")));
    }
    let mut rows: Vec<usize> = (0..data.len()).collect();
    rows.shuffle(&mut rng(seed));
    let test_len = (data.len() as f64 * test_fraction).round() as usize;
    Ok(Split { test: data.select(&rows[..test_len]), train: data.select(&rows[test_len..]) })
}

/// Which data a run trains on.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Task {
    /// Red-wine quality, 11 standardized features, 6 quality classes.
    Wine,
    /// Sum of the two marked values in a sequence of `steps` (2 inputs per step).
    Adding {
        /// Sequence length.
        steps: u32,
    },
    /// Order (XX, XY, YX, YY) of two relevant symbols among distractors, `steps` long.
    TemporalOrder {
        /// Sequence length.
        steps: u32,
    },
}

impl Task {
    /// A readable name: `wine`, `adding (T=…)`, `temporal order (T=…)`.
    pub fn name(&self) -> String {
        match self {
            Self::Wine => "wine".into(),
            Self::Adding { steps } => format!("adding (T={steps})"),
            Self::TemporalOrder { steps } => format!("temporal order (T={steps})"),
        }
    }

    /// `None` for tabular data; `Some((steps, features per step))` for sequences.
    pub fn sequence(&self) -> Option<(u32, u32)> {
        match *self {
            Self::Wine => None,
            Self::Adding { steps } => Some((steps, 2)),
            Self::TemporalOrder { steps } => Some((steps, sequence::SYMBOLS)),
        }
    }

    /// The task's data from `seed`: wine is split (80/20) and standardized with the
    /// training statistics; the sequence tasks generate fresh training and test sets.
    pub fn load(&self, seed: u64) -> Result<Split> {
        match *self {
            Self::Wine => {
                let mut s = split(&wine_quality(), 0.2, seed)?;
                wine::standardize(&mut s);
                Ok(s)
            }
            Self::Adding { steps } => Ok(Split {
                train: adding_problem(steps, 8192, seed)?,
                test: adding_problem(steps, 1024, seed ^ 0x7e57)?,
            }),
            Self::TemporalOrder { steps } => Ok(Split {
                train: temporal_order(steps, 8192, seed)?,
                test: temporal_order(steps, 1024, seed ^ 0x7e57)?,
            }),
        }
    }
}

/// Batches that are a pure function of (seed, step): every epoch is a fresh permutation of
/// the training set, cut into whole batches. A resumed run sees the same batches.
#[derive(Clone, Debug)]
pub struct BatchOrder {
    len: usize,
    batch: usize,
    seed: u64,
    epoch: Option<(u64, Vec<usize>)>,
}

impl BatchOrder {
    /// Batches of `batch` rows from a training set of `len` samples. `Err(Error::Invalid)`
    /// unless `1 ≤ batch ≤ len`.
    pub fn new(len: usize, batch: usize, seed: u64) -> Result<Self> {
        if batch == 0 || batch > len {
            return Err(Error::Invalid(format!("batch size must lie in 1..={len} (the training set), got {batch}")));
        }
        Ok(Self { len, batch, seed, epoch: None })
    }

    /// The sample rows of step `step`.
    pub fn rows(&mut self, step: u64) -> &[usize] {
        let per_epoch = (self.len / self.batch) as u64;
        let epoch = step / per_epoch;
        if self.epoch.as_ref().map(|e| e.0) != Some(epoch) {
            let mut rows: Vec<usize> = (0..self.len).collect();
            rows.shuffle(&mut rng(self.seed.wrapping_add(epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15))));
            self.epoch = Some((epoch, rows));
        }
        let start = (step % per_epoch) as usize * self.batch;
        &self.epoch.as_ref().expect("set above").1[start..start + self.batch]
    }
}
