//! Weight initialization on the host from a seeded RNG, with `torch.nn.init`'s formulas;
//! upload the result with `create_buffer_init`. Every function returns the tensor flattened
//! row-major. Fans follow torch: for a shape `[out, in, k1, k2, …]`,
//! `fan_in = in·k1·k2·…` and `fan_out = out·k1·k2·…` (a Linear weight `[out, in]` has
//! fan_in = in). A shape with a zero dimension gives an empty tensor, as torch's no-op.
//!
//! Normal samples come from the Box–Muller transform in f64. The streams differ from
//! torch's generator; the distributions are the same.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// A reproducible generator for the functions below.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// The nonlinearity that follows a layer, for `torch.nn.init.calculate_gain`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Nonlinearity {
    /// Gain 1 (also right for convolutions without activation).
    Linear,
    /// Gain 1.
    Sigmoid,
    /// Gain 5/3.
    Tanh,
    /// Gain √2.
    Relu,
    /// Gain √(2 / (1 + slope²)) for the given negative slope.
    LeakyRelu(f32),
    /// Gain 3/4.
    Selu,
}

impl Nonlinearity {
    /// `torch.nn.init.calculate_gain`.
    pub fn gain(self) -> f64 {
        match self {
            Self::Linear | Self::Sigmoid => 1.0,
            Self::Tanh => 5.0 / 3.0,
            Self::Relu => 2f64.sqrt(),
            Self::LeakyRelu(slope) => (2.0 / (1.0 + (slope as f64).powi(2))).sqrt(),
            Self::Selu => 0.75,
        }
    }
}

/// Which fan Kaiming initialization preserves: the forward pass's variance (`FanIn`, torch's
/// default) or the backward pass's (`FanOut`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FanMode {
    /// Scale by fan-in: keeps the forward activations' variance (torch's default).
    #[default]
    FanIn,
    /// Scale by fan-out: keeps the backward gradients' variance.
    FanOut,
}

/// `(fan_in, fan_out)` of a weight shape, as torch's `_calculate_fan_in_and_fan_out`.
pub fn fans(shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() < 2 {
        return Err(Error::OutOfRange { what: "a fan's shape dimensions", value: shape.len() as f64, expected: "≥ 2" });
    }
    let receptive: usize = shape[2..].iter().product();
    Ok((shape[1] * receptive, shape[0] * receptive))
}

fn check_gain(gain: f64) -> Result<()> {
    if gain.is_finite() {
        Ok(())
    } else {
        Err(Error::OutOfRange { what: "gain", value: gain, expected: "finite" })
    }
}

/// One standard normal sample (Box–Muller; 1 - u keeps the logarithm's argument in (0, 1]).
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// `len` samples of U(-bound, bound).
fn uniform(rng: &mut impl Rng, len: usize, bound: f64) -> Vec<f32> {
    (0..len).map(|_| (bound * (2.0 * rng.random::<f64>() - 1.0)) as f32).collect()
}

/// `torch.nn.init.normal_`: `len` samples of N(mean, std²).
pub fn normal(rng: &mut impl Rng, len: usize, mean: f64, std: f64) -> Result<Vec<f32>> {
    if !mean.is_finite() {
        return Err(Error::OutOfRange { what: "normal init mean", value: mean, expected: "finite" });
    }
    if !(std.is_finite() && std >= 0.0) {
        return Err(Error::OutOfRange { what: "normal init std", value: std, expected: "finite and ≥ 0" });
    }
    Ok((0..len).map(|_| (mean + std * standard_normal(rng)) as f32).collect())
}

/// `torch.nn.init.xavier_uniform_`: U(-a, a) with `a = gain·√(6 / (fan_in + fan_out))`.
pub fn xavier_uniform(rng: &mut impl Rng, shape: &[usize], gain: f64) -> Result<Vec<f32>> {
    check_gain(gain)?;
    let (fan_in, fan_out) = fans(shape)?;
    let len = shape.iter().product();
    if len == 0 {
        return Ok(Vec::new());
    }
    Ok(uniform(rng, len, gain * (6.0 / (fan_in + fan_out) as f64).sqrt()))
}

/// `torch.nn.init.xavier_normal_`: N(0, std²) with `std = gain·√(2 / (fan_in + fan_out))`.
pub fn xavier_normal(rng: &mut impl Rng, shape: &[usize], gain: f64) -> Result<Vec<f32>> {
    check_gain(gain)?;
    let (fan_in, fan_out) = fans(shape)?;
    let len = shape.iter().product();
    if len == 0 {
        return Ok(Vec::new());
    }
    normal(rng, len, 0.0, gain * (2.0 / (fan_in + fan_out) as f64).sqrt())
}

/// `std = gain / √fan` of Kaiming (He) initialization, or None for an empty tensor.
fn kaiming_std(shape: &[usize], mode: FanMode, nonlinearity: Nonlinearity) -> Result<Option<f64>> {
    let gain = nonlinearity.gain();
    check_gain(gain)?;
    let (fan_in, fan_out) = fans(shape)?;
    let fan = match mode {
        FanMode::FanIn => fan_in,
        FanMode::FanOut => fan_out,
    };
    Ok((fan > 0 && shape.iter().all(|&d| d > 0)).then(|| gain / (fan as f64).sqrt()))
}

/// `torch.nn.init.kaiming_uniform_`: U(-b, b) with `b = √3·gain / √fan` (torch's default
/// is `FanIn` with `LeakyRelu(0.0)`, i.e. gain √2).
pub fn kaiming_uniform(
    rng: &mut impl Rng,
    shape: &[usize],
    mode: FanMode,
    nonlinearity: Nonlinearity,
) -> Result<Vec<f32>> {
    Ok(match kaiming_std(shape, mode, nonlinearity)? {
        Some(std) => uniform(rng, shape.iter().product(), 3f64.sqrt() * std),
        None => Vec::new(),
    })
}

/// `torch.nn.init.kaiming_normal_`: N(0, std²) with `std = gain / √fan`.
pub fn kaiming_normal(
    rng: &mut impl Rng,
    shape: &[usize],
    mode: FanMode,
    nonlinearity: Nonlinearity,
) -> Result<Vec<f32>> {
    match kaiming_std(shape, mode, nonlinearity)? {
        Some(std) => normal(rng, shape.iter().product(), 0.0, std),
        None => Ok(Vec::new()),
    }
}

/// The spectral radius (largest |eigenvalue|) of the `n × n` row-major matrix `w`, from
/// its growth rate: the mean of `ln ‖W v_i‖` over `iterations` normalized power steps
/// after as many discarded ones (Gelfand's formula, which also holds when the dominant
/// eigenvalues are a complex pair, where the power method's vector never settles).
pub fn spectral_radius(w: &[f64], n: usize, iterations: usize) -> f64 {
    let mut v: Vec<f64> = (0..n).map(|i| 1.0 + (i as f64 * 0.618).fract()).collect();
    let mut log_growth = 0.0;
    for step in 0..2 * iterations {
        let next: Vec<f64> = (0..n).map(|r| (0..n).map(|c| w[r * n + c] * v[c]).sum()).collect();
        let norm = next.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        if step >= iterations {
            log_growth += norm.ln();
        }
        v = next.into_iter().map(|x| x / norm).collect();
    }
    (log_growth / iterations as f64).exp()
}

/// Pascanu et al. 2013's "smart tanh" recurrent weights (`trainingRNNs/RNN.py`, after
/// Sutskever et al. 2013): an `n × n` matrix from N(0, 0.01²) keeping `nonzero` random
/// entries in each row, scaled so that its spectral radius is `radius`.
pub fn sparse_spectral(rng: &mut impl Rng, n: usize, nonzero: usize, radius: f64) -> Result<Vec<f32>> {
    if !(radius.is_finite() && radius > 0.0) {
        return Err(Error::NotPositive { what: "sparse init radius", value: radius });
    }
    if nonzero == 0 {
        return Err(Error::OutOfRange { what: "sparse init non-zeros a row", value: 0.0, expected: "≥ 1" });
    }
    let mut w = vec![0.0f64; n * n];
    for row in w.chunks_mut(n) {
        row.iter_mut().for_each(|x| *x = 0.01 * standard_normal(rng));
        // A random permutation's first `nonzero` columns stay (Fisher–Yates).
        let mut columns: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            columns.swap(i, rng.random_range(0..=i));
        }
        columns[nonzero.min(n)..].iter().for_each(|&c| row[c] = 0.0);
    }
    let rho = spectral_radius(&w, n, 400);
    let scale = if rho > 0.0 { radius / rho } else { 0.0 };
    Ok(w.into_iter().map(|x| (x * scale) as f32).collect())
}

/// `torch.nn.init.orthogonal_`: the tensor viewed as `[rows = shape[0], cols = rest]` gets
/// (semi-)orthonormal rows or columns, times `gain`. As torch: draw a standard normal
/// matrix, take the Q of its QR decomposition (of its transpose when rows < cols) with R's
/// diagonal made positive, and transpose back. Here Q comes from Gram–Schmidt run twice per
/// column, which yields exactly that positive-diagonal Q, orthonormal to f64 rounding.
pub fn orthogonal(rng: &mut impl Rng, shape: &[usize], gain: f64) -> Result<Vec<f32>> {
    check_gain(gain)?;
    if shape.len() < 2 {
        return Err(Error::OutOfRange { what: "orthogonal init's shape dimensions", value: shape.len() as f64, expected: "≥ 2" });
    }
    let (rows, cols) = (shape[0], shape[1..].iter().product::<usize>());
    if rows * cols == 0 {
        return Ok(Vec::new());
    }
    let a: Vec<f64> = (0..rows * cols).map(|_| standard_normal(rng)).collect();
    let wide = rows < cols;
    let (n, k) = if wide { (cols, rows) } else { (rows, cols) };
    // The k columns of the tall n x k matrix: A, or Aᵀ when A is wide.
    let mut q: Vec<Vec<f64>> =
        (0..k).map(|j| (0..n).map(|i| if wide { a[j * cols + i] } else { a[i * cols + j] }).collect()).collect();
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    for j in 0..k {
        let (done, rest) = q.split_at_mut(j);
        let v = &mut rest[0];
        for _ in 0..2 {
            for qi in done.iter() {
                let d = dot(qi, v);
                v.iter_mut().zip(qi).for_each(|(x, y)| *x -= d * y);
            }
        }
        let norm = dot(v, v).sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
    }
    Ok((0..rows * cols)
        .map(|idx| {
            let (r, c) = (idx / cols, idx % cols);
            (gain * if wide { q[r][c] } else { q[c][r] }) as f32
        })
        .collect())
}
