//! Training data: the red-wine quality table, and the exploding-gradient sequence tasks of
//! Pascanu, Mikolov & Bengio (2013), generated from a seed.

mod sequence;
mod wine;

pub use sequence::{adding_problem, multiplication_problem, temporal_order, temporal_order_3bit, MIN_STEPS};
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

    /// How `outputs` (`self.outputs()` per sample, row-major) score against the targets.
    /// A non-finite prediction is always wrong.
    pub fn score(&self, outputs: &[f64]) -> Score {
        let o = self.outputs() as usize;
        let rows = || outputs.chunks_exact(o.max(1));
        let n = self.len().max(1) as f64;
        match &self.targets {
            Targets::Classes { labels, .. } => {
                let correct = rows()
                    .zip(labels)
                    .filter(|(row, &l)| {
                        let best = (0..o).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0);
                        best == l as usize && row.iter().all(|v| v.is_finite())
                    })
                    .count() as f64;
                Score { metric: Metric::Accuracy(correct / n), error_rate: 1.0 - correct / n }
            }
            Targets::Values { values, .. } => {
                let mut total = 0.0;
                let mut wrong = 0usize;
                for (row, target) in rows().zip(values.chunks_exact(o.max(1))) {
                    let sq: f64 = row.iter().zip(target).map(|(p, &t)| (p - t as f64).powi(2)).sum();
                    total += sq;
                    wrong += !(sq <= WRONG_ABOVE) as usize;
                }
                Score { metric: Metric::Mse(total / (n * o.max(1) as f64)), error_rate: wrong as f64 / n }
            }
        }
    }

    /// The score of the trivial answer learnt from `train` on this set: always the most
    /// frequent training class, or always the mean training target.
    pub fn trivial_score(&self, train: &Dataset) -> Score {
        let answer: Vec<f64> = match &train.targets {
            Targets::Classes { labels, classes } => {
                let mut counts = vec![0usize; *classes as usize];
                labels.iter().for_each(|&l| counts[l as usize] += 1);
                let majority = (0..counts.len()).max_by_key(|&c| (counts[c], std::cmp::Reverse(c))).unwrap_or(0);
                (0..counts.len()).map(|c| (c == majority) as u8 as f64).collect()
            }
            Targets::Values { values, outputs } => {
                let o = *outputs as usize;
                let rows = (values.len() / o.max(1)).max(1) as f64;
                (0..o).map(|j| values.iter().skip(j).step_by(o.max(1)).map(|&v| v as f64).sum::<f64>() / rows).collect()
            }
        };
        self.score(&answer.repeat(self.len()))
    }
}

/// A regression sequence is wrong when its squared error exceeds this (Pascanu et al.
/// 2013: `((t - y)**2).sum(axis=1) > .04`).
pub const WRONG_ABOVE: f64 = 0.04;

/// A task is solved when fewer than this fraction of held-out sequences are wrong (the
/// paper's 1%; its code stops training at 0.0001%).
pub const SOLVED_BELOW: f64 = 0.01;

/// The headline metric of a set of predictions.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Metric {
    /// Fraction of samples classified correctly.
    Accuracy(f64),
    /// Mean squared error per output.
    Mse(f64),
}

impl Metric {
    /// `accuracy` or `mse`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Accuracy(_) => "accuracy",
            Self::Mse(_) => "mse",
        }
    }

    /// The number.
    pub fn value(&self) -> f64 {
        match *self {
            Self::Accuracy(v) | Self::Mse(v) => v,
        }
    }
}

/// How predictions did on a data set.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Score {
    /// Accuracy or MSE.
    pub metric: Metric,
    /// Fraction of samples wrong by the paper's criterion: misclassified, or a squared
    /// error above [`WRONG_ABOVE`].
    pub error_rate: f64,
}

impl Score {
    /// Fewer than [`SOLVED_BELOW`] of the samples wrong.
    pub fn solved(&self) -> bool {
        self.error_rate < SOLVED_BELOW
    }
}

/// Training data and two held-out sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// The training samples.
    pub train: Dataset,
    /// Held-out samples checked during the run (whether, and when, a task is solved).
    pub validation: Dataset,
    /// The held-out samples the summary's metric is measured on.
    pub test: Dataset,
}

/// Shuffles `data` with `seed` and puts `test_fraction` of it aside.
pub fn split(data: &Dataset, test_fraction: f64, seed: u64) -> Result<Split> {
    if !(0.0..1.0).contains(&test_fraction) {
        return Err(Error::OutOfRange { what: "test fraction", value: test_fraction, expected: "in [0, 1)" });
    }
    let mut rows: Vec<usize> = (0..data.len()).collect();
    rows.shuffle(&mut rng(seed));
    let test_len = (data.len() as f64 * test_fraction).round() as usize;
    let test = data.select(&rows[..test_len]);
    Ok(Split { validation: test.clone(), test, train: data.select(&rows[test_len..]) })
}

/// Which data a run trains on.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Task {
    /// Red-wine quality, 11 standardized features, 6 quality classes.
    Wine,
    /// The mean of the two marked values in a sequence of `steps` (2 inputs per step).
    Adding {
        /// Sequence length.
        steps: u32,
    },
    /// The product of the two marked values in a sequence of `steps`.
    Multiplication {
        /// Sequence length.
        steps: u32,
    },
    /// The order of two relevant symbols among distractors (4 classes), `steps` long.
    TemporalOrder {
        /// Sequence length.
        steps: u32,
    },
    /// The order of three relevant symbols among distractors (8 classes), `steps` long.
    TemporalOrder3 {
        /// Sequence length.
        steps: u32,
    },
}

/// Fresh sequences generated for training, for the periodic checks and for the final test
/// (the paper's 10,000).
const SEQUENCE_SAMPLES: (usize, usize, usize) = (8192, 1000, 10_000);

impl Task {
    /// A readable name: `wine`, `adding (T=…)`, `temporal order (T=…)`…
    pub fn name(&self) -> String {
        match self {
            Self::Wine => "wine".into(),
            Self::Adding { steps } => format!("adding (T={steps})"),
            Self::Multiplication { steps } => format!("multiplication (T={steps})"),
            Self::TemporalOrder { steps } => format!("temporal order (T={steps})"),
            Self::TemporalOrder3 { steps } => format!("3-bit temporal order (T={steps})"),
        }
    }

    /// `None` for tabular data; `Some((steps, features per step))` for sequences.
    pub fn sequence(&self) -> Option<(u32, u32)> {
        match *self {
            Self::Wine => None,
            Self::Adding { steps } | Self::Multiplication { steps } => Some((steps, 2)),
            Self::TemporalOrder { steps } | Self::TemporalOrder3 { steps } => Some((steps, sequence::SYMBOLS)),
        }
    }

    /// The same task at another sequence length (wine has none).
    pub fn with_steps(self, steps: u32) -> Self {
        match self {
            Self::Wine => Self::Wine,
            Self::Adding { .. } => Self::Adding { steps },
            Self::Multiplication { .. } => Self::Multiplication { steps },
            Self::TemporalOrder { .. } => Self::TemporalOrder { steps },
            Self::TemporalOrder3 { .. } => Self::TemporalOrder3 { steps },
        }
    }

    /// The task's data from `seed`: wine is split (80/20, the test set doubling as the
    /// periodic check) and standardized with the training statistics; the sequence tasks
    /// generate fresh training, validation and test sets from independent seeds.
    pub fn load(&self, seed: u64) -> Result<Split> {
        let generate: fn(u32, usize, u64) -> Result<Dataset> = match *self {
            Self::Wine => {
                let mut s = split(&wine_quality(), 0.2, seed)?;
                wine::standardize(&mut s);
                return Ok(Split { validation: s.test.clone(), ..s });
            }
            Self::Adding { .. } => adding_problem,
            Self::Multiplication { .. } => multiplication_problem,
            Self::TemporalOrder { .. } => temporal_order,
            Self::TemporalOrder3 { .. } => temporal_order_3bit,
        };
        let steps = self.sequence().map_or(0, |s| s.0);
        let (train, validation, test) = SEQUENCE_SAMPLES;
        let bytes = ((train + validation + test) as u64).saturating_mul(steps as u64 * 2 * 4);
        if bytes > SEQUENCE_BYTES {
            let what = format!("{} sequences of {}", train + validation + test, self.name());
            return Err(Error::TooLarge { what, amount: bytes, unit: "bytes", limit: SEQUENCE_BYTES, limit_name: "the host budget for generated sequences" });
        }
        Ok(Split {
            train: generate(steps, train, seed)?,
            validation: generate(steps, validation, seed ^ 0x0a11_da7e)?,
            test: generate(steps, test, seed ^ 0x7e57)?,
        })
    }
}

/// The most host memory the generated sequences of a task may take (inputs only; two
/// features a step): 4 GiB, far beyond any length the paper uses (T ≤ 200 needs 31 MB).
pub const SEQUENCE_BYTES: u64 = 4 << 30;

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
    /// Batches of `batch` rows from a training set of `len` samples. `Err(Error::OutOfRange)`
    /// unless `1 ≤ batch ≤ len`.
    pub fn new(len: usize, batch: usize, seed: u64) -> Result<Self> {
        if batch == 0 {
            return Err(Error::OutOfRange { what: "batch size", value: 0.0, expected: "at least 1" });
        }
        if batch > len {
            return Err(Error::AboveMax { what: "batch size", value: batch as u64, max: len as u64 });
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
