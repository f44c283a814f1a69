// Activation functions shared by the activation, matmul (fused epilogues) and rnn shaders;
// the registry prepends this file to each (WGSL has no includes). They compute what
// torch.nn.functional computes: GELU is the exact erf form (approximate='none') or the tanh
// form (approximate='tanh'), as x·σ(2u), which is the same function. tanh,
// sigmoid and the normal CDF are built from exp of a non-positive argument, so they never
// overflow to inf/inf = NaN for large |x|.

const IDENTITY: u32 = 0u;
const RELU: u32 = 1u;
const LEAKY_RELU: u32 = 2u;
const TANH: u32 = 3u;
const SIGMOID: u32 = 4u;
const GELU: u32 = 5u;
const GELU_TANH: u32 = 6u;

// The tanh GELU's argument u = √(2/π)·(x + 0.044715·x³) and its derivative.
fn gelu_tanh_u(v: f32) -> f32 {
    return 0.7978845608028654 * (v + 0.044715 * v * v * v);
}

fn gelu_tanh_du(v: f32) -> f32 {
    return 0.7978845608028654 * (1.0 + 0.134145 * v * v);
}

fn tanh_stable(v: f32) -> f32 {
    let a = abs(v);
    if (a < 0.625) {
        // Cephes tanhf's odd polynomial: keeps relative accuracy where 1 - 2/(e^2a + 1) cancels.
        let z = v * v;
        return ((((-5.70498872745e-3 * z + 2.06390887954e-2) * z - 5.37397155531e-2) * z
            + 1.33314422036e-1) * z - 3.33332819422e-1) * z * v + v;
    }
    let e = exp(-2.0 * a);
    return sign(v) * (1.0 - e) / (1.0 + e);
}

fn sigmoid(v: f32) -> f32 {
    let e = exp(-abs(v));
    let s = 1.0 / (1.0 + e);
    return select(e * s, s, v >= 0.0);
}

// erfc(z) for z ≥ 0: Numerical Recipes' erfcc, fractional error below 1.2e-7.
fn erfc_nonneg(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(p - z * z);
}

// Φ(v), the standard normal CDF, from the tail erfc(|v|/√2)/2 so that it keeps relative
// accuracy for v < 0.
fn normal_cdf(v: f32) -> f32 {
    let tail = 0.5 * erfc_nonneg(abs(v) * 0.70710678118654752);
    return select(tail, 1.0 - tail, v > 0.0);
}

fn normal_pdf(v: f32) -> f32 {
    return 0.39894228040143268 * exp(-0.5 * v * v);
}

// NaN by its bits: compilers may fold `v != v` away.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// relu keeps NaN, as torch.relu does (WGSL's max may return either operand).
fn activate(kind: u32, slope: f32, v: f32) -> f32 {
    switch kind {
        case RELU: { return select(max(v, 0.0), v, is_nan(v)); }
        case LEAKY_RELU: { return select(slope * v, v, v > 0.0); }
        case TANH: { return tanh_stable(v); }
        case SIGMOID: { return sigmoid(v); }
        case GELU: { return v * normal_cdf(v); }
        case GELU_TANH: { return v * sigmoid(2.0 * gelu_tanh_u(v)); }
        default: { return v; }
    }
}

// f'(v); at 0, relu and leaky relu take the left derivative, as torch does. At NaN relu
// passes the gradient on, as torch's threshold_backward (zero only where v <= 0).
fn derivative(kind: u32, slope: f32, v: f32) -> f32 {
    switch kind {
        case RELU: { return select(1.0, 0.0, v <= 0.0); }
        case LEAKY_RELU: { return select(slope, 1.0, v > 0.0); }
        case TANH: { let t = tanh_stable(v); return 1.0 - t * t; }
        case SIGMOID: { let s = sigmoid(v); return s * (1.0 - s); }
        case GELU: { return normal_cdf(v) + v * normal_pdf(v); }
        case GELU_TANH: {
            // σ + x·2σ(1−σ)·u'; the second term is 0 where σ saturates (u' may be inf there).
            let s = sigmoid(2.0 * gelu_tanh_u(v));
            let ds = 2.0 * s * (1.0 - s);
            return s + select(v * ds * gelu_tanh_du(v), 0.0, ds == 0.0);
        }
        default: { return 1.0; }
    }
}

// dy·f'(v), where v is the forward input. relu's zero derivative must not turn an inf
// upstream gradient into NaN (torch masks).
fn grad_through(kind: u32, slope: f32, dy: f32, v: f32) -> f32 {
    let d = derivative(kind, slope, v);
    return select(dy * d, 0.0, d == 0.0);
}
