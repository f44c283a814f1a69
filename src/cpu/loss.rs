//! Twin of `shaders/loss.wgsl`, in f64: (mean loss, gradient of the loss).

/// Softmax cross-entropy of `[targets.len(), classes]` logits, mean over rows, and its
/// gradient `(softmax - onehot) / rows`. A target ≥ classes gives NaN, as the shader.
pub fn cross_entropy(logits: &[f64], targets: &[u32], classes: usize) -> (f64, Vec<f64>) {
    let rows = targets.len();
    let mut grad = vec![0.0; logits.len()];
    let mut total = 0.0;
    for (r, &t) in targets.iter().enumerate() {
        let x = &logits[r * classes..(r + 1) * classes];
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = x.iter().map(|v| (v - m).exp()).sum();
        let t = t as usize;
        for (j, g) in grad[r * classes..(r + 1) * classes].iter_mut().enumerate() {
            let onehot = if j == t { 1.0 } else { 0.0 };
            *g = if t < classes { ((x[j] - m).exp() / s - onehot) / rows as f64 } else { f64::NAN };
        }
        total += if t < classes { (m - x[t]) + s.ln() } else { f64::NAN };
    }
    (total / rows as f64, grad)
}

/// Mean squared error and its gradient `2(pred - target) / n`.
pub fn mse(pred: &[f64], target: &[f64]) -> (f64, Vec<f64>) {
    let n = pred.len() as f64;
    let loss = pred.iter().zip(target).map(|(p, t)| (p - t) * (p - t)).sum::<f64>() / n;
    (loss, pred.iter().zip(target).map(|(p, t)| 2.0 * (p - t) / n).collect())
}
