//! The pathological long-range tasks of Pascanu, Mikolov & Bengio (2013), as their code
//! (`pascanur/trainingRNNs`: `addition.py`, `multiplication.py`, `tempOrder.py`,
//! `tempOrder3bit.py`) generates them, from a seed.
//!
//! Where we differ from that code, and why:
//! - Every sequence is exactly `steps` long. The paper's adding and multiplication draw a
//!   length in `[T, 1.1·T)` per batch; our recurrent kernel is built for one length, and
//!   padding would change the task (the bias moves the state on every padded step).
//! - The fractions of the length are taken in integers (`T·k / 10`) where the code takes
//!   `int(T·0.k)` of a float; they agree for every `T` the float product does not round
//!   below an integer.
//! - Our random numbers are our own generator's, not numpy's: the same definitions, not the
//!   same sequences.

use rand::Rng;

use super::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::init::rng;

/// Temporal order's alphabet, one-hot: the relevant A and B (0, 1), then the distractors
/// c–f (2–5), as `tempOrder.py`.
pub(super) const SYMBOLS: u32 = 6;

/// The shortest sequence the tasks accept: a tenth of it must hold at least one step.
pub const MIN_STEPS: u32 = 10;

fn check_steps(steps: u32) -> Result<usize> {
    if steps < MIN_STEPS {
        return Err(Error::OutOfRange { what: "sequence steps", value: steps as f64, expected: "at least MIN_STEPS (10)" });
    }
    Ok(steps as usize)
}

/// The two marked steps of adding and multiplication: one in the first tenth, one in
/// `[T/10, T/10 + 4T/10)` (`addition.py`'s `p0` and `p1`).
fn marked_pair(r: &mut impl Rng, t: usize) -> (usize, usize) {
    let tenth = t / 10;
    (r.random_range(0..tenth), tenth + r.random_range(0..4 * t / 10))
}

/// Each step carries `[marker, value ~ U(0, 1)]` (the code's channels 0 and 1); two steps
/// are marked ([`marked_pair`]) and `combine` of their values is the target.
fn marked_values(steps: u32, samples: usize, seed: u64, combine: fn(f32, f32) -> f32) -> Result<Dataset> {
    let t = check_steps(steps)?;
    let mut r = rng(seed);
    let mut inputs = Vec::with_capacity(samples * t * 2);
    let mut values = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (p0, p1) = marked_pair(&mut r, t);
        let start = inputs.len();
        for step in 0..t {
            let marked = step == p0 || step == p1;
            inputs.extend([marked as u8 as f32, r.random::<f32>()]);
        }
        values.push(combine(inputs[start + 2 * p0 + 1], inputs[start + 2 * p1 + 1]));
    }
    Ok(Dataset { inputs, sample_len: t * 2, targets: Targets::Values { values, outputs: 1 } })
}

/// The adding problem: the target is the **mean** `(x₁ + x₂) / 2` of the two marked values
/// (`addition.py`). Predicting 0.5 leaves a squared error above 0.04 on 36% of sequences.
pub fn adding_problem(steps: u32, samples: usize, seed: u64) -> Result<Dataset> {
    marked_values(steps, samples, seed, |a, b| (a + b) / 2.0)
}

/// The multiplication problem: the target is the product `x₁ · x₂` of the two marked values
/// (`multiplication.py`).
pub fn multiplication_problem(steps: u32, samples: usize, seed: u64) -> Result<Dataset> {
    marked_values(steps, samples, seed, |a, b| a * b)
}

/// Temporal order with `windows.len()` relevant symbols: every step is a distractor c–f
/// except one A-or-B in each window `[T·w/10, T·w/10 + T/10)`; the class is
/// `Σ vᵢ·2ⁱ` over the relevant symbols' bits (A = 0, B = 1).
fn ordered_symbols(steps: u32, samples: usize, seed: u64, windows: &[usize]) -> Result<Dataset> {
    let (t, k) = (check_steps(steps)?, SYMBOLS as usize);
    let mut r = rng(seed);
    let mut inputs = Vec::with_capacity(samples * t * k);
    let mut labels = Vec::with_capacity(samples);
    for _ in 0..samples {
        let marks: Vec<(usize, usize)> =
            windows.iter().map(|w| (t * w / 10 + r.random_range(0..t / 10), r.random_range(0..2usize))).collect();
        for step in 0..t {
            let symbol = marks.iter().find(|(p, _)| *p == step).map_or_else(|| 2 + r.random_range(0..4), |m| m.1);
            inputs.extend((0..k).map(|j| (j == symbol) as u8 as f32));
        }
        labels.push(marks.iter().enumerate().map(|(i, m)| (m.1 << i) as u32).sum());
    }
    Ok(Dataset { inputs, sample_len: t * k, targets: Targets::Classes { labels, classes: 1 << windows.len() } })
}

/// Temporal order (`tempOrder.py`): A or B once in `[T/10, 2T/10)` and once in
/// `[5T/10, 6T/10)`; four classes (AA, BA, AB, BB as `v₀ + 2·v₁`). Chance is 25%.
pub fn temporal_order(steps: u32, samples: usize, seed: u64) -> Result<Dataset> {
    ordered_symbols(steps, samples, seed, &[1, 5])
}

/// 3-bit temporal order (`tempOrder3bit.py`): relevant symbols in `[T/10, 2T/10)`,
/// `[3T/10, 4T/10)` and `[6T/10, 7T/10)`; eight classes. Chance is 12.5%.
pub fn temporal_order_3bit(steps: u32, samples: usize, seed: u64) -> Result<Dataset> {
    ordered_symbols(steps, samples, seed, &[1, 3, 6])
}
