//! Long-range sequence tasks on which vanilla RNNs' gradients explode (Hochreiter &
//! Schmidhuber 1997; Pascanu, Mikolov & Bengio 2013), generated from a seed.

use rand::Rng;

use super::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::init::rng;

/// Temporal order's alphabet, one-hot: four distractors a–d, then the relevant X and Y.
pub(super) const SYMBOLS: u32 = 6;

/// The adding problem: each step carries `[value ~ U(0, 1), marker]`; exactly two steps are
/// marked, one in each half of the sequence, and the target is the sum of their values.
/// Predicting the mean (1) scores an MSE of about 0.167; success is an MSE below 0.04.
pub fn adding_problem(steps: u32, samples: usize, seed: u64) -> Result<Dataset> {
    if steps < 2 {
        return Err(Error::Invalid(format!("the adding problem needs a sequence of at least 2 steps, got {steps}")));
    }
    let t = steps as usize;
    let mut r = rng(seed);
    let mut inputs = Vec::with_capacity(samples * t * 2);
    let mut values = Vec::with_capacity(samples);
    for _ in 0..samples {
        let first = r.random_range(0..t / 2);
        let second = r.random_range(t / 2..t);
        let mut sum = 0.0;
        for step in 0..t {
            let v: f32 = r.random();
            let marked = step == first || step == second;
            if marked {
                sum += v;
            }
            inputs.extend([v, marked as u8 as f32]);
        }
        values.push(sum);
    }
    Ok(Dataset { inputs, sample_len: t * 2, targets: Targets::Values { values, outputs: 1 } })
}

/// Temporal order: random distractors a–d, except one X-or-Y in the second tenth of the
/// sequence and another in the sixth tenth; the class is their order (XX, XY, YX, YY).
/// Chance is 25%.
pub fn temporal_order(steps: u32, samples: usize, seed: u64) -> Result<Dataset> {
    if steps < 10 {
        return Err(Error::Invalid(format!("temporal order needs a sequence of at least 10 steps, got {steps}")));
    }
    let (t, k) = (steps as usize, SYMBOLS as usize);
    let mut r = rng(seed);
    let mut inputs = Vec::with_capacity(samples * t * k);
    let mut labels = Vec::with_capacity(samples);
    for _ in 0..samples {
        let first = r.random_range(t / 10..2 * t / 10);
        let second = r.random_range(5 * t / 10..6 * t / 10);
        let (a, b) = (r.random_range(0..2usize), r.random_range(0..2usize));
        for step in 0..t {
            let symbol = match step {
                s if s == first => 4 + a,
                s if s == second => 4 + b,
                _ => r.random_range(0..4),
            };
            inputs.extend((0..k).map(|j| (j == symbol) as u8 as f32));
        }
        labels.push((2 * a + b) as u32);
    }
    Ok(Dataset { inputs, sample_len: t * k, targets: Targets::Classes { labels, classes: 4 } })
}
