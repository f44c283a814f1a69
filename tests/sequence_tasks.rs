//! The sequence tasks against the definitions of Pascanu, Mikolov & Bengio (2013) and their
//! code (`pascanur/trainingRNNs`): marker positions, targets, and the error criterion on
//! hand-made predictions.
#![cfg(feature = "train")]

use gradguard::data::{
    adding_problem, multiplication_problem, temporal_order, temporal_order_3bit, Dataset, Metric, Targets, Task, SOLVED_BELOW,
};

fn values(d: &Dataset) -> &[f32] {
    match &d.targets {
        Targets::Values { values, .. } => values,
        Targets::Classes { .. } => panic!("a regression task"),
    }
}

fn labels(d: &Dataset) -> &[u32] {
    match &d.targets {
        Targets::Classes { labels, .. } => labels,
        Targets::Values { .. } => panic!("a classification task"),
    }
}

/// (marked steps, their values) of sample `i` of an adding/multiplication set.
fn marked(d: &Dataset, i: usize) -> Vec<(usize, f32)> {
    let s = &d.inputs[i * d.sample_len..(i + 1) * d.sample_len];
    s.chunks_exact(2).enumerate().filter(|(_, x)| x[0] == 1.0).map(|(t, x)| (t, x[1])).collect()
}

#[test]
fn adding_marks_two_values_and_targets_their_mean() {
    for t in [10u32, 50, 57, 200] {
        let d = adding_problem(t, 500, 3).unwrap();
        assert_eq!((d.len(), d.sample_len), (500, 2 * t as usize));
        let tenth = t as usize / 10;
        for i in 0..d.len() {
            let m = marked(&d, i);
            assert_eq!(m.len(), 2, "T={t} sample {i}: exactly two markers");
            assert!(m[0].0 < tenth, "the first in [0, T/10): {}", m[0].0);
            assert!((tenth..tenth + 4 * t as usize / 10).contains(&m[1].0), "the second in [T/10, T/2): {}", m[1].0);
            assert_eq!(values(&d)[i], (m[0].1 + m[1].1) / 2.0, "the target is the mean");
            let s = &d.inputs[i * d.sample_len..(i + 1) * d.sample_len];
            assert!(s.chunks_exact(2).all(|x| (0.0..1.0).contains(&x[1]) && (x[0] == 0.0 || x[0] == 1.0)));
        }
    }
}

#[test]
fn multiplication_targets_the_product() {
    let d = multiplication_problem(60, 300, 4).unwrap();
    for i in 0..d.len() {
        let m = marked(&d, i);
        assert_eq!(values(&d)[i], m[0].1 * m[1].1);
    }
}

/// The relevant symbols (A = 0, B = 1) of a temporal-order sample: (step, symbol).
fn relevant(d: &Dataset, i: usize) -> Vec<(usize, usize)> {
    let s = &d.inputs[i * d.sample_len..(i + 1) * d.sample_len];
    s.chunks_exact(6)
        .enumerate()
        .map(|(t, x)| {
            assert_eq!(x.iter().sum::<f32>(), 1.0, "one-hot");
            (t, x.iter().position(|&v| v == 1.0).unwrap())
        })
        .filter(|&(_, sym)| sym < 2)
        .collect()
}

#[test]
fn temporal_order_places_its_symbols_in_the_papers_windows() {
    for (windows, generate) in [
        (vec![1usize, 5], temporal_order as fn(u32, usize, u64) -> gradguard::Result<Dataset>),
        (vec![1, 3, 6], temporal_order_3bit),
    ] {
        for t in [10u32, 50, 120] {
            let d = generate(t, 400, 5).unwrap();
            let classes = 1u32 << windows.len();
            assert_eq!(d.outputs(), classes);
            let mut seen = vec![0; classes as usize];
            for i in 0..d.len() {
                let r = relevant(&d, i);
                assert_eq!(r.len(), windows.len(), "T={t}: one relevant symbol per window");
                let mut class = 0;
                for (bit, (&(step, sym), &w)) in r.iter().zip(&windows).enumerate() {
                    let start = t as usize * w / 10;
                    assert!((start..start + t as usize / 10).contains(&step), "T={t}: symbol at {step}, window from {start}");
                    class += (sym as u32) << bit;
                }
                assert_eq!(labels(&d)[i], class, "the class is v0 + 2·v1 (+ 4·v2)");
                seen[class as usize] += 1;
            }
            assert!(seen.iter().all(|&n| n > 0), "every class occurs: {seen:?}");
        }
    }
}

#[test]
fn short_sequences_are_refused() {
    let refused = |r: gradguard::Result<_>| matches!(r, Err(gradguard::Error::OutOfRange { what: "sequence steps", .. }));
    assert!(refused(adding_problem(9, 10, 0).map(drop)));
    assert!(refused(temporal_order_3bit(5, 10, 0).map(drop)));
    assert!(refused(Task::Multiplication { steps: 2 }.load(0).map(drop)));
}

#[test]
fn a_sequence_is_wrong_when_its_squared_error_exceeds_0_04() {
    let d = Dataset { inputs: vec![0.0; 4], sample_len: 1, targets: Targets::Values { values: vec![0.5, 0.5, 0.5, 0.5], outputs: 1 } };
    // Errors of 0.1 and 0.19 (right), 0.25 and NaN (wrong).
    let s = d.score(&[0.6, 0.31, 0.75, f64::NAN]);
    assert_eq!(s.error_rate, 0.5);
    assert!(!s.solved());
    assert!(matches!(s.metric, Metric::Mse(m) if m.is_nan()), "a NaN prediction makes the MSE NaN");
    let s = d.score(&[0.5, 0.51, 0.49, 0.55]);
    assert_eq!(s.error_rate, 0.0);
    assert!(s.solved());
    assert!(SOLVED_BELOW == 0.01);
}

#[test]
fn misclassified_and_non_finite_outputs_are_wrong() {
    let d = Dataset { inputs: vec![0.0; 3], sample_len: 1, targets: Targets::Classes { labels: vec![0, 1, 1], classes: 2 } };
    let s = d.score(&[2.0, 1.0, 0.0, 3.0, f64::NAN, 9.0]);
    assert_eq!(s.metric, Metric::Accuracy(2.0 / 3.0));
    assert!((s.error_rate - 1.0 / 3.0).abs() < 1e-12);
}

#[test]
fn the_trivial_answers_score_as_expected() {
    // Predicting the mean of the adding task leaves about 36% of sequences wrong (the mean
    // of two uniforms is triangular: P(|m - 1/2| > 0.2) = 2·2·0.3² = 0.36).
    let split = Task::Adding { steps: 50 }.load(7).unwrap();
    let s = split.test.trivial_score(&split.train);
    assert_eq!(split.test.len(), 10_000, "the paper's 10,000 test sequences");
    assert!((s.error_rate - 0.36).abs() < 0.02, "{}", s.error_rate);
    let Metric::Mse(mse) = s.metric else { panic!() };
    assert!((mse - 1.0 / 24.0).abs() < 0.003, "the variance of the mean of two uniforms, 1/24: {mse}");
    // The majority class of temporal order is right about a quarter of the time.
    let split = Task::TemporalOrder { steps: 20 }.load(8).unwrap();
    let s = split.test.trivial_score(&split.train);
    assert!((s.error_rate - 0.75).abs() < 0.02, "{}", s.error_rate);
}
