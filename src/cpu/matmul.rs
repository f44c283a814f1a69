//! Twin of `shaders/matmul.wgsl`, accumulating in f64 and rounding once.

use crate::cpu::activation;
use crate::kernels::matmul::{Epilogue, MatmulOp};

/// `c = op(a)·op(b) (+ bias) (+ c when op.accumulate)`, the layouts of [`MatmulOp`], with
/// the epilogue's operand `aux` ([`MatmulOp::aux_len`] elements; empty for
/// [`Epilogue::Plain`]): written with act(C) (`Activate`) or the row sums of op(A)
/// (`BiasGrad`), read as the activation's input (`ThroughActivation`).
pub fn matmul(op: &MatmulOp, a: &[f32], b: &[f32], bias: Option<&[f32]>, c: &mut [f32], aux: &mut [f32]) {
    let (m, n, k) = (op.m as usize, op.n as usize, op.k as usize);
    let op_a = |row: usize, kk: usize| if op.trans_a { a[kk * m + row] } else { a[row * k + kk] } as f64;
    for row in 0..m {
        for col in 0..n {
            let mut sum = 0.0f64;
            for kk in 0..k {
                let y = if op.trans_b { b[col * k + kk] } else { b[kk * n + col] };
                sum += op_a(row, kk) * y as f64;
            }
            if let Some(bias) = bias {
                sum += bias[col] as f64;
            }
            let at = row * n + col;
            if op.accumulate {
                sum += c[at] as f64;
            }
            if let Epilogue::ThroughActivation(act) = op.epilogue {
                sum = activation::grad_through(act, sum, aux[at] as f64);
            }
            c[at] = sum as f32;
            if let Epilogue::Activate(act) = op.epilogue {
                aux[at] = activation::forward(act, c[at] as f64) as f32;
            }
        }
        if op.epilogue == Epilogue::BiasGrad {
            let sum: f64 = (0..k).map(|kk| op_a(row, kk)).sum();
            aux[row] = if op.accumulate { (sum + aux[row] as f64) as f32 } else { sum as f32 };
        }
    }
}
