//! Twin of `shaders/optimizer.wgsl`: one update in f64, state stored back as f32 as on the
//! device. `completed` is the step count before this update; a skipped step is simply not
//! applied (and does not count).

use crate::kernels::optimizer::{AdamW, Sgd};

/// One `torch.optim.SGD` step in place. `momentum_buf` (one per parameter, unused without
/// momentum) is initialized from the gradient on the first step (`completed == 0`).
pub fn sgd(cfg: &Sgd, lr: f32, completed: u32, params: &mut [f32], grads: &[f32], momentum_buf: &mut [f32]) {
    let (lr, momentum, dampening, wd) = (lr as f64, cfg.momentum as f64, cfg.dampening as f64, cfg.weight_decay as f64);
    for (i, p) in params.iter_mut().enumerate() {
        let mut g = grads[i] as f64 + wd * *p as f64;
        if momentum != 0.0 {
            let buf = if completed == 0 { g } else { momentum * momentum_buf[i] as f64 + (1.0 - dampening) * g };
            momentum_buf[i] = buf as f32;
            g = if cfg.nesterov { g + momentum * buf } else { buf };
        }
        *p = (*p as f64 - lr * g) as f32;
    }
}

/// One `torch.optim.AdamW` step in place, with bias correction for step `completed + 1`.
pub fn adamw(
    cfg: &AdamW,
    lr: f32,
    completed: u32,
    params: &mut [f32],
    grads: &[f32],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
) {
    let (lr, b1, b2, eps, wd) =
        (lr as f64, cfg.betas.0 as f64, cfg.betas.1 as f64, cfg.eps as f64, cfg.weight_decay as f64);
    let t = completed as i32 + 1;
    let step_size = lr / (1.0 - b1.powi(t));
    let bias_correction2_sqrt = (1.0 - b2.powi(t)).sqrt();
    for (i, p) in params.iter_mut().enumerate() {
        let g = grads[i] as f64;
        let m = exp_avg[i] as f64 + (1.0 - b1) * (g - exp_avg[i] as f64);
        let v = b2 * exp_avg_sq[i] as f64 + (1.0 - b2) * g * g;
        exp_avg[i] = m as f32;
        exp_avg_sq[i] = v as f32;
        *p = (*p as f64 * (1.0 - lr * wd) - step_size * m / (v.sqrt() / bias_correction2_sqrt + eps)) as f32;
    }
}
