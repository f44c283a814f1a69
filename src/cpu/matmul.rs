//! Twin of `shaders/matmul.wgsl`, accumulating in f64 and rounding once.

use crate::kernels::matmul::MatmulOp;

/// `c = op(a)·op(b) (+ bias) (+ c when op.accumulate)`, the layouts of [`MatmulOp`].
pub fn matmul(op: &MatmulOp, a: &[f32], b: &[f32], bias: Option<&[f32]>, c: &mut [f32]) {
    let (m, n, k) = (op.m as usize, op.n as usize, op.k as usize);
    for row in 0..m {
        for col in 0..n {
            let mut sum = 0.0f64;
            for kk in 0..k {
                let x = if op.trans_a { a[kk * m + row] } else { a[row * k + kk] };
                let y = if op.trans_b { b[col * k + kk] } else { b[kk * n + col] };
                sum += x as f64 * y as f64;
            }
            if let Some(bias) = bias {
                sum += bias[col] as f64;
            }
            let out = &mut c[row * n + col];
            if op.accumulate {
                sum += *out as f64;
            }
            *out = sum as f32;
        }
    }
}

/// `db[j] (+)= Σ_i dy[i, j]` over a `[rows, cols]` gradient: the `bias_grad` entry point.
pub fn bias_grad(rows: usize, cols: usize, dy: &[f32], db: &mut [f32], accumulate: bool) {
    for (j, out) in db.iter_mut().enumerate().take(cols) {
        let sum: f64 = (0..rows).map(|i| dy[i * cols + j] as f64).sum();
        *out = if accumulate { (sum + *out as f64) as f32 } else { sum as f32 };
    }
}
