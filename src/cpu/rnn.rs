//! Twin of `shaders/rnn.wgsl`: the recurrence over the whole sequence, in f64 per step
//! and rounding to f32 where the shader stores.

use crate::cpu::activation;
use crate::kernels::rnn::RnnShape;

/// The weights of one layer, as `RnnForward` binds them.
#[derive(Clone, Copy, Debug)]
pub struct RnnWeights<'a> {
    /// `[hidden, inputs]`.
    pub w_x: &'a [f32],
    /// `[hidden]`.
    pub bias: &'a [f32],
    /// `[hidden, hidden]`.
    pub w_h: &'a [f32],
}

/// `rnn_forward`: z_t = W_x·x_t + b + W_h·h_{t-1} into `pre` (`[steps, batch, hidden]`),
/// h_t into slice t + 1 of `hs` (`[steps + 1, batch, hidden]`, slice 0 zero) and the last
/// step's into `last` (`[batch, hidden]`), from `x` (`[steps, batch, inputs]`).
pub fn forward(shape: &RnnShape, w: RnnWeights<'_>, x: &[f32], pre: &mut [f32], hs: &mut [f32], last: &mut [f32]) {
    let (b_len, h, n) = (shape.batch as usize, shape.hidden as usize, shape.inputs as usize);
    let w_h = w.w_h;
    for t in 0..shape.steps as usize {
        for b in 0..b_len {
            let row = (t * b_len + b) * h;
            let x_row = &x[(t * b_len + b) * n..][..n];
            for j in 0..h {
                let mut z = w.bias[j] as f64 + (0..n).map(|i| w.w_x[j * n + i] as f64 * x_row[i] as f64).sum::<f64>();
                if t > 0 {
                    z += (0..h).map(|k| w_h[j * h + k] as f64 * hs[row + k] as f64).sum::<f64>();
                }
                pre[row + j] = z as f32;
                let value = activation::forward(shape.activation, pre[row + j] as f64) as f32;
                hs[row + b_len * h + j] = value;
                if t + 1 == shape.steps as usize {
                    last[b * h + j] = value;
                }
            }
        }
    }
}

/// `rnn_backward`: `pre` holds z_t on entry and dL/dz_t on exit, from the gradient of the
/// last hidden state `d_last`.
pub fn backward(shape: &RnnShape, w_h: &[f32], pre: &mut [f32], d_last: &[f32]) {
    let (b_len, h) = (shape.batch as usize, shape.hidden as usize);
    for t in (0..shape.steps as usize).rev() {
        for b in 0..b_len {
            let row = (t * b_len + b) * h;
            let next = row + b_len * h;
            let g: Vec<f64> = (0..h)
                .map(|j| match t + 1 == shape.steps as usize {
                    true => d_last[b * h + j] as f64,
                    false => (0..h).map(|i| w_h[i * h + j] as f64 * pre[next + i] as f64).sum(),
                })
                .collect();
            for j in 0..h {
                pre[row + j] = activation::grad_through(shape.activation, g[j], pre[row + j] as f64) as f32;
            }
        }
    }
}
