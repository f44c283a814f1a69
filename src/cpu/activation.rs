//! Twin of `shaders/activation.wgsl`, elementwise in f64 with the same formulas (including
//! the same erfc approximation for GELU).

use crate::kernels::activation::{Activation, GeluApproximate};

/// Numerical Recipes' erfcc for z ≥ 0 (fractional error < 1.2e-7), as the shader.
fn erfc_nonneg(z: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = [
        -1.26551223,
        1.00002368,
        0.37409196,
        0.09678418,
        -0.18628806,
        0.27886807,
        -1.13520398,
        1.48851587,
        -0.82215223,
        0.17087277,
    ]
    .iter()
    .rev()
    .fold(0.0, |acc, c| c + t * acc);
    t * (p - z * z).exp()
}

fn normal_cdf(x: f64) -> f64 {
    let tail = 0.5 * erfc_nonneg(x.abs() * std::f64::consts::FRAC_1_SQRT_2);
    if x > 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The tanh GELU's argument, `√(2/π)·(x + 0.044715·x³)`.
fn gelu_tanh_u(x: f64) -> f64 {
    (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)
}

/// f(x): the `forward` entry point.
pub fn forward(activation: Activation, x: f64) -> f64 {
    match activation {
        Activation::Identity => x,
        // torch.relu keeps NaN; f64::max would drop it.
        Activation::Relu => {
            if x.is_nan() || x > 0.0 {
                x
            } else {
                0.0
            }
        }
        Activation::LeakyRelu(slope) => {
            if x > 0.0 {
                x
            } else {
                slope as f64 * x
            }
        }
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => sigmoid(x),
        Activation::Gelu { approximate: GeluApproximate::None } => x * normal_cdf(x),
        Activation::Gelu { approximate: GeluApproximate::Tanh } => x * sigmoid(2.0 * gelu_tanh_u(x)),
    }
}

/// f'(x); the `backward` entry point computes `dy·f'(x)` (0 where f'(x) is 0).
pub fn derivative(activation: Activation, x: f64) -> f64 {
    match activation {
        Activation::Identity => 1.0,
        // Zero only where x <= 0 (torch's threshold_backward): NaN passes the gradient on.
        Activation::Relu => {
            if x <= 0.0 {
                0.0
            } else {
                1.0
            }
        }
        Activation::LeakyRelu(slope) => {
            if x > 0.0 {
                1.0
            } else {
                slope as f64
            }
        }
        Activation::Tanh => 1.0 - x.tanh().powi(2),
        Activation::Sigmoid => sigmoid(x) * (1.0 - sigmoid(x)),
        Activation::Gelu { approximate: GeluApproximate::None } => {
            normal_cdf(x) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
        }
        Activation::Gelu { approximate: GeluApproximate::Tanh } => {
            let s = sigmoid(2.0 * gelu_tanh_u(x));
            let ds = 2.0 * s * (1.0 - s);
            let du = (2.0 / std::f64::consts::PI).sqrt() * (1.0 + 3.0 * 0.044715 * x * x);
            s + if ds == 0.0 { 0.0 } else { x * ds * du }
        }
    }
}

/// `dy·f'(x)`, 0 where f'(x) is 0 (an inf upstream gradient stays masked, as torch's relu
/// backward): the `backward` entry point and the fused epilogues' `grad_through`.
pub fn grad_through(activation: Activation, dy: f64, x: f64) -> f64 {
    let d = derivative(activation, x);
    if d == 0.0 {
        0.0
    } else {
        dy * d
    }
}
