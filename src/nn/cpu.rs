//! The model's f64 twin: forward, loss and backward as the device computes them, built
//! from the kernels' CPU twins. Tests compare a device step against it; the trainer uses
//! its evaluation forward for test metrics.

use super::{LayerSpec, LossKind, ModelSpec};
use crate::cpu;
use crate::data::{Dataset, Targets};
use crate::error::Result;
use crate::kernels::activation::Activation;
use crate::kernels::batchnorm::BatchNorm;

/// What a layer's backward needs from its forward.
enum Saved {
    None,
    BatchNorm { mean: Vec<f64>, inv_std: Vec<f64> },
    Rnn { xs: Vec<Vec<f64>>, pre: Vec<Vec<f64>>, hs: Vec<Vec<f64>> },
}

/// A model's parameters and batch-norm running statistics in f64.
#[derive(Clone, Debug)]
pub struct CpuModel {
    spec: ModelSpec,
    params: Vec<Vec<f64>>,
    /// Running mean, running variance, alternating, per batch-norm layer.
    running: Vec<Vec<f64>>,
}

fn widen(v: &[Vec<f32>]) -> Vec<Vec<f64>> {
    v.iter().map(|t| t.iter().map(|&x| x as f64).collect()).collect()
}

impl CpuModel {
    /// `running`: as `GpuModel::running_stats` holds them (empty without batch norm).
    pub fn new(spec: &ModelSpec, params: &[Vec<f32>], running: &[Vec<f32>]) -> Result<Self> {
        spec.validate()?;
        spec.check_params(params)?;
        Ok(Self { spec: spec.clone(), params: widen(params), running: widen(running) })
    }

    /// Outputs for every sample of `data`, batch norm from its running statistics.
    pub fn predict(&self, data: &Dataset) -> Vec<f64> {
        let mut running = self.running.clone();
        let rows: Vec<usize> = (0..data.len()).collect();
        self.forward(&self.batch_input(data, &rows), rows.len(), false, &mut running).0.pop().unwrap_or_default()
    }

    /// One training-mode forward and backward on `rows` of `data`: the mean loss and the
    /// gradient of every tensor. Updates the running statistics, as the device does.
    pub fn gradients(&mut self, data: &Dataset, rows: &[usize], loss: LossKind) -> Result<(f64, Vec<Vec<f64>>)> {
        let mut running = std::mem::take(&mut self.running);
        let (acts, saved) = self.forward(&self.batch_input(data, rows), rows.len(), true, &mut running);
        self.running = running;
        let logits = acts.last().expect("never empty");
        let (value, mut dy) = match (&data.targets, loss) {
            (Targets::Classes { labels, classes }, LossKind::CrossEntropy) => {
                let t: Vec<u32> = rows.iter().map(|&r| labels[r]).collect();
                cpu::loss::cross_entropy(logits, &t, *classes as usize)
            }
            (Targets::Values { values, outputs }, LossKind::Mse) => {
                let o = *outputs as usize;
                let t: Vec<f64> = rows.iter().flat_map(|&r| &values[r * o..(r + 1) * o]).map(|&v| v as f64).collect();
                cpu::loss::mse(logits, &t)
            }
            _ => {
                return Err(ModelSpec::targets_mismatch(format!("the {loss:?} loss")));
            }
        };
        let mut grads: Vec<Vec<f64>> = self.params.iter().map(|p| vec![0.0; p.len()]).collect();
        let widths = self.spec.widths();
        let batch = rows.len();
        let mut p = self.params.len();
        for (i, layer) in self.spec.layers.iter().enumerate().rev() {
            let x = &acts[i];
            dy = match (*layer, &saved[i]) {
                (LayerSpec::Linear { inputs, outputs }, _) => {
                    p -= 2;
                    let (n, o) = (inputs as usize, outputs as usize);
                    let w = &self.params[p];
                    let mut dx = vec![0.0; batch * n];
                    for r in 0..batch {
                        for j in 0..o {
                            let d = dy[r * o + j];
                            grads[p + 1][j] += d;
                            for k in 0..n {
                                grads[p][j * n + k] += d * x[r * n + k];
                                dx[r * n + k] += d * w[j * n + k];
                            }
                        }
                    }
                    dx
                }
                (LayerSpec::Activation(a), _) => activation_backward(a, x, &dy),
                (LayerSpec::BatchNorm { features }, Saved::BatchNorm { mean, inv_std }) => {
                    p -= 2;
                    let bn = BatchNorm::new(batch as u32, features);
                    let (dx, dgamma, dbeta) = cpu::batchnorm::backward(&bn, x, &self.params[p], mean, inv_std, &dy);
                    grads[p] = dgamma;
                    grads[p + 1] = dbeta;
                    dx
                }
                (LayerSpec::Rnn { inputs, hidden, activation, .. }, Saved::Rnn { xs, pre, hs }) => {
                    p -= 3;
                    let (n, h) = (inputs as usize, hidden as usize);
                    let w_h = &self.params[p + 1];
                    let mut dh = dy;
                    for t in (0..xs.len()).rev() {
                        let dpre = activation_backward(activation, &pre[t], &dh);
                        let mut next = vec![0.0; batch * h];
                        for r in 0..batch {
                            for j in 0..h {
                                let d = dpre[r * h + j];
                                grads[p + 2][j] += d;
                                for k in 0..n {
                                    grads[p][j * n + k] += d * xs[t][r * n + k];
                                }
                                if t > 0 {
                                    for k in 0..h {
                                        grads[p + 1][j * h + k] += d * hs[t - 1][r * h + k];
                                        next[r * h + k] += d * w_h[j * h + k];
                                    }
                                }
                            }
                        }
                        dh = next;
                    }
                    Vec::new()
                }
                _ => unreachable!("saved state follows the layer kind"),
            };
            debug_assert!(dy.is_empty() || dy.len() == batch * widths[i] as usize);
        }
        Ok((value, grads))
    }

    /// Samples `rows` laid out as the first layer reads them (sample-major; for an RNN,
    /// still sample-major `[steps, inputs]` — [`CpuModel::forward`] slices the steps).
    fn batch_input(&self, data: &Dataset, rows: &[usize]) -> Vec<f64> {
        let n = data.sample_len;
        rows.iter().flat_map(|&r| &data.inputs[r * n..(r + 1) * n]).map(|&v| v as f64).collect()
    }

    /// Every layer's output (entry 0: the input) and what backward needs.
    fn forward(&self, input: &[f64], batch: usize, train: bool, running: &mut [Vec<f64>]) -> (Vec<Vec<f64>>, Vec<Saved>) {
        let mut acts = vec![input.to_vec()];
        let mut saved = Vec::new();
        let (mut p, mut bn_index) = (0, 0);
        for layer in &self.spec.layers {
            let x = acts.last().expect("never empty");
            let (y, s) = match *layer {
                LayerSpec::Linear { inputs, outputs } => {
                    let y = linear(x, &self.params[p], Some(&self.params[p + 1]), batch, inputs as usize, outputs as usize);
                    p += 2;
                    (y, Saved::None)
                }
                LayerSpec::Activation(a) => (x.iter().map(|&v| cpu::activation::forward(a, v)).collect(), Saved::None),
                LayerSpec::BatchNorm { features } => {
                    let bn = BatchNorm::new(batch as u32, features);
                    let (gamma, beta) = (&self.params[p], &self.params[p + 1]);
                    let [mean_r, var_r] = &mut running[2 * bn_index..2 * bn_index + 2] else { unreachable!() };
                    p += 2;
                    bn_index += 1;
                    if train {
                        let (y, mean, inv_std) = cpu::batchnorm::train(&bn, x, gamma, beta, mean_r, var_r);
                        (y, Saved::BatchNorm { mean, inv_std })
                    } else {
                        (cpu::batchnorm::eval(&bn, x, gamma, beta, mean_r, var_r), Saved::None)
                    }
                }
                LayerSpec::Rnn { inputs, hidden, steps, activation } => {
                    let (n, h, t_len) = (inputs as usize, hidden as usize, steps as usize);
                    let sample = n * t_len;
                    let xs: Vec<Vec<f64>> = (0..t_len)
                        .map(|t| (0..batch).flat_map(|r| &x[r * sample + t * n..r * sample + (t + 1) * n]).copied().collect())
                        .collect();
                    let (w_x, w_h, bias) = (&self.params[p], &self.params[p + 1], &self.params[p + 2]);
                    let (mut pre, mut hs) = (Vec::new(), Vec::<Vec<f64>>::new());
                    for xt in &xs {
                        let mut z = linear(xt, w_x, Some(bias), batch, n, h);
                        if let Some(prev) = hs.last() {
                            z.iter_mut().zip(linear(prev, w_h, None, batch, h, h)).for_each(|(a, b)| *a += b);
                        }
                        hs.push(z.iter().map(|&v| cpu::activation::forward(activation, v)).collect());
                        pre.push(z);
                    }
                    p += 3;
                    (hs.last().cloned().unwrap_or_default(), Saved::Rnn { xs, pre, hs })
                }
            };
            acts.push(y);
            saved.push(s);
        }
        (acts, saved)
    }
}

/// `x·Wᵀ (+ b)` for `x` `[batch, n]`, W `[o, n]`.
fn linear(x: &[f64], w: &[f64], b: Option<&Vec<f64>>, batch: usize, n: usize, o: usize) -> Vec<f64> {
    let mut y = vec![0.0; batch * o];
    for r in 0..batch {
        for j in 0..o {
            let dot: f64 = (0..n).map(|k| x[r * n + k] * w[j * n + k]).sum();
            y[r * o + j] = dot + b.map_or(0.0, |b| b[j]);
        }
    }
    y
}

/// `dy·f'(x)`, 0 where f' is 0 (as the shader, so an infinite dy stays masked).
fn activation_backward(a: Activation, x: &[f64], dy: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(dy)
        .map(|(&v, &d)| {
            let f = cpu::activation::derivative(a, v);
            if f == 0.0 {
                0.0
            } else {
                d * f
            }
        })
        .collect()
}
