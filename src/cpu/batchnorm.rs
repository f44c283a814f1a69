//! Twin of `shaders/batchnorm.wgsl`, in f64, over `[batch, features]` row-major data.

use crate::kernels::batchnorm::BatchNorm;

/// Column `f`'s values.
fn column<'a>(x: &'a [f64], bn: &BatchNorm, f: usize) -> impl Iterator<Item = f64> + 'a {
    x.iter().skip(f).step_by(bn.features as usize).copied()
}

/// Training forward: returns (y, mean, inv_std) and updates the running stats.
pub fn train(
    bn: &BatchNorm,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    running_mean: &mut [f64],
    running_var: &mut [f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (nf, n) = (bn.features as usize, bn.batch as f64);
    let mean: Vec<f64> = (0..nf).map(|f| column(x, bn, f).sum::<f64>() / n).collect();
    let var: Vec<f64> = (0..nf).map(|f| column(x, bn, f).map(|v| (v - mean[f]).powi(2)).sum::<f64>() / n).collect();
    let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + bn.eps as f64).sqrt()).collect();
    running(bn, &mean, &var, running_mean, running_var, false);
    let y = x
        .iter()
        .enumerate()
        .map(|(i, v)| (v - mean[i % nf]) * inv_std[i % nf] * gamma[i % nf] + beta[i % nf])
        .collect();
    (y, mean, inv_std)
}

/// The running-stat update from the batch mean and biased variance (the shader's
/// `running` entry point, and the end of [`train`]); a `skipped` step leaves them alone.
pub fn running(bn: &BatchNorm, mean: &[f64], var_biased: &[f64], running_mean: &mut [f64], running_var: &mut [f64], skipped: bool) {
    if skipped {
        return;
    }
    let (n, m) = (bn.batch as f64, bn.momentum as f64);
    for f in 0..bn.features as usize {
        running_mean[f] = (1.0 - m) * running_mean[f] + m * mean[f];
        running_var[f] = (1.0 - m) * running_var[f] + m * var_biased[f] * n / (n - 1.0);
    }
}

/// Evaluation forward from the running stats.
pub fn eval(
    bn: &BatchNorm,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    running_mean: &[f64],
    running_var: &[f64],
) -> Vec<f64> {
    let nf = bn.features as usize;
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            let f = i % nf;
            (v - running_mean[f]) / (running_var[f] + bn.eps as f64).sqrt() * gamma[f] + beta[f]
        })
        .collect()
}

/// Backward from the training forward's saved mean and inv_std: (dx, dγ, dβ).
pub fn backward(
    bn: &BatchNorm,
    x: &[f64],
    gamma: &[f64],
    mean: &[f64],
    inv_std: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (nf, n) = (bn.features as usize, bn.batch as f64);
    let xhat: Vec<f64> = x.iter().enumerate().map(|(i, v)| (v - mean[i % nf]) * inv_std[i % nf]).collect();
    let dbeta: Vec<f64> = (0..nf).map(|f| column(dy, bn, f).sum()).collect();
    let dgamma: Vec<f64> =
        (0..nf).map(|f| column(dy, bn, f).zip(column(&xhat, bn, f)).map(|(d, h)| d * h).sum()).collect();
    let dx = dy
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let f = i % nf;
            gamma[f] * inv_std[f] / n * (n * d - dbeta[f] - xhat[i] * dgamma[f])
        })
        .collect();
    (dx, dgamma, dbeta)
}
