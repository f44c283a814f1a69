//! The red-wine quality table (Cortez et al. 2009) bundled with `linfa-datasets`.

use super::{Dataset, Split, Targets};

/// Quality grades in the red-wine table run from 3 to 8: six classes.
const LOWEST_GRADE: usize = 3;
const CLASSES: u32 = 6;

/// 1,599 wines, 11 physico-chemical features, quality grade − 3 as the class.
pub fn wine_quality() -> Dataset {
    let table = linfa_datasets::winequality();
    let inputs = table.records.iter().map(|&v| v as f32).collect();
    let labels = table.targets.iter().map(|&q| q.saturating_sub(LOWEST_GRADE).min(CLASSES as usize - 1) as u32).collect();
    Dataset { inputs, sample_len: table.records.ncols(), targets: Targets::Classes { labels, classes: CLASSES } }
}

/// Zero mean, unit variance per feature, with statistics from the training part only.
pub(super) fn standardize(split: &mut Split) {
    let n = split.train.sample_len;
    let rows = split.train.len().max(1) as f64;
    let mut mean = vec![0f64; n];
    let mut var = vec![0f64; n];
    for row in split.train.inputs.chunks_exact(n) {
        row.iter().zip(&mut mean).for_each(|(&v, m)| *m += v as f64 / rows);
    }
    for row in split.train.inputs.chunks_exact(n) {
        row.iter().zip(&mean).zip(&mut var).for_each(|((&v, m), s)| *s += (v as f64 - m).powi(2) / rows);
    }
    for data in [&mut split.train, &mut split.test] {
        for row in data.inputs.chunks_exact_mut(n) {
            for (j, v) in row.iter_mut().enumerate() {
                // A constant feature carries nothing: centre it only.
                let std = if var[j] > 0.0 { var[j].sqrt() } else { 1.0 };
                *v = ((*v as f64 - mean[j]) / std) as f32;
            }
        }
    }
}
