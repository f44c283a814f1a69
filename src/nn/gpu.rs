//! A model on the device: every buffer and bind group made once when it is built, so a
//! training step only records dispatches. Parameters and gradients live packed in one
//! buffer each ([`ParamArena`]); a Linear layer is one fused dispatch forward (product,
//! bias, activation) and two backward (weight and bias gradients together; the input
//! gradient times the derivative of the activation below); an RNN layer is two forward
//! and three backward at any sequence length (`kernels::rnn`).

use crate::kernels::buffer_init;

use super::arena::ParamArena;
use super::{LayerSpec, LossKind, ModelSpec};
use crate::data::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::grad_set::GradSet;
use crate::kernels::activation::{ActivationBinding, ActivationKernel};
use crate::kernels::batchnorm::{
    BatchNorm, BatchNormBackward, BatchNormBinding, BatchNormKernel, BatchNormRunning, BatchNormTrain,
};
use crate::kernels::loss::{LossBinding, LossKernel};
use crate::kernels::matmul::{Epilogue, MatmulBinding, MatmulKernel, MatmulOp, MatmulOperands};
use crate::kernels::optimizer::OptimizerKernel;
use crate::kernels::rnn::{RnnBackward, RnnBinding, RnnForward, RnnKernel, RnnShape};
use crate::kernels::View;

/// The pipelines a training step uses, from the device's kernel cache.
#[derive(Debug)]
pub struct TrainKernels {
    /// Linear forward and backward products (fused epilogues), fault scaling.
    pub matmul: MatmulKernel,
    /// Activation forward and backward, where no product fuses them.
    pub activation: ActivationKernel,
    /// Batch norm forward, backward and running-stat updates.
    pub batchnorm: BatchNormKernel,
    /// Loss and its gradient.
    pub loss: LossKernel,
    /// Parameter updates.
    pub optimizer: OptimizerKernel,
    /// The RNN's recurrence.
    pub rnn: RnnKernel,
}

impl TrainKernels {
    /// Gets every pipeline (compiled on the device's first use). `Err(Error::Device)` if the
    /// device refuses one.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        Ok(Self {
            matmul: MatmulKernel::new(device)?,
            activation: ActivationKernel::new(device)?,
            batchnorm: BatchNormKernel::new(device)?,
            loss: LossKernel::new(device)?,
            optimizer: OptimizerKernel::new(device)?,
            rnn: RnnKernel::new(device)?,
        })
    }
}

/// One recorded dispatch (or two, for the loss).
#[derive(Debug)]
enum Op {
    Matmul(MatmulBinding),
    Activation(ActivationBinding),
    BatchNorm(BatchNormBinding),
    Loss(LossBinding),
    Rnn(RnnBinding),
}

impl Op {
    fn encode(&self, k: &TrainKernels, pass: &mut wgpu::ComputePass<'_>) {
        match self {
            Self::Matmul(b) => k.matmul.encode(pass, b),
            Self::Activation(b) => k.activation.encode(pass, b),
            Self::BatchNorm(b) => k.batchnorm.encode(pass, b),
            Self::Loss(b) => k.loss.encode(pass, b),
            Self::Rnn(b) => k.rnn.encode(pass, b),
        }
    }

    fn dispatches(&self) -> usize {
        match self {
            Self::Loss(_) => 2,
            Self::Rnn(b) => b.dispatch_count(),
            _ => 1,
        }
    }
}

/// Bytes the model holds on the device, by role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ModelBytes {
    /// The packed parameters.
    pub params: u64,
    /// The packed gradients.
    pub grads: u64,
    /// Activations, their gradients, batch-norm statistics, inputs and targets.
    pub activations: u64,
}

/// Buffers every role shares: kernels bind them, checkpoints and tests copy them.
const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

struct Alloc<'a> {
    device: &'a wgpu::Device,
    activation_bytes: u64,
}

impl Alloc<'_> {
    /// A zeroed activation-class buffer of `len` f32 (at least one, never bound empty).
    fn zeros(&mut self, label: &str, len: u64) -> wgpu::Buffer {
        let size = 4 * len.max(1);
        self.activation_bytes += size;
        self.device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage: USAGE, mapped_at_creation: false })
    }

    fn data(&self, label: &str, values: &[f32]) -> Result<wgpu::Buffer> {
        buffer_init(self.device, label, bytemuck::cast_slice(values), USAGE)
    }
}

/// A model, its batch buffers, loss and gradients on the device.
#[derive(Debug)]
pub struct GpuModel {
    spec: ModelSpec,
    batch: u32,
    loss_kind: LossKind,
    arena: ParamArena,
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    /// Each batch-norm layer's running mean and running variance, in layer order.
    running: Vec<wgpu::Buffer>,
    /// Each batch-norm layer's shape and saved batch statistics (mean, inv_std, biased
    /// variance), which its running-stat update reads.
    batch_stats: Vec<(BatchNorm, wgpu::Buffer)>,
    /// The running-stat updates, one per batch-norm layer, bound to a skip flag.
    running_updates: Vec<BatchNormBinding>,
    input: wgpu::Buffer,
    targets: wgpu::Buffer,
    loss: wgpu::Buffer,
    /// What each Linear, batch-norm and RNN layer computed forward (before the activation
    /// a product fuses; an RNN's hidden states at every step): (layer, buffer, elements).
    outputs: Vec<(usize, wgpu::Buffer, u64)>,
    forward: Vec<Op>,
    backward: Vec<Op>,
    bytes: ModelBytes,
}

/// The product of a Linear layer or of an RNN's input projection and weight gradients.
fn product(device: &wgpu::Device, mm: &MatmulKernel, op: MatmulOp, v: MatmulOperands<'_>) -> Result<Op> {
    Ok(Op::Matmul(mm.bind_views(device, &op, v)?))
}

impl GpuModel {
    /// Uploads `params` (as [`ModelSpec::init_params`] makes them) and binds every step's
    /// dispatch for batches of `batch` samples.
    pub fn new(
        device: &wgpu::Device,
        kernels: &TrainKernels,
        spec: &ModelSpec,
        batch: u32,
        loss_kind: LossKind,
        params: &[Vec<f32>],
    ) -> Result<Self> {
        spec.validate()?;
        spec.check_fits(batch, &device.limits())?;
        spec.check_params(params)?;
        let tensors = spec.tensors();
        crate::error::check_sizes(&[("batch size", batch)])?;
        let mut alloc = Alloc { device, activation_bytes: 0 };
        let arena = ParamArena::new(&tensors);
        let param_buffer = alloc.data("parameters (packed)", &arena.pack(params))?;
        let grads = alloc.data("gradients (packed)", &vec![0.0; arena.len() as usize])?;
        let (w, g) = (|t: usize| arena.view(&param_buffer, t), |t: usize| arena.view(&grads, t));

        let widths = spec.widths();
        let b = batch as u64;
        let layers = &spec.layers;
        let n = layers.len();
        let input = alloc.zeros("model input", b * spec.input_len() as u64);
        let outputs = spec.output_len() as u64;
        let targets = alloc.zeros("targets", if loss_kind == LossKind::Mse { b * outputs } else { b });
        let loss = alloc.zeros("loss", 1);
        let mut acts = vec![input.clone()];
        for (i, w) in widths[1..].iter().enumerate() {
            acts.push(alloc.zeros(&format!("layer {i} output"), b * *w as u64));
        }
        // The gradient of layer output j lives in buffer j mod 3: a layer reads that of its
        // output (j + 1) and writes that of its input (j), or, fusing the activation below,
        // of the activation's input (j - 1); nothing reads a gradient after that.
        let widest = b * *widths.iter().max().expect("never empty") as u64;
        let pool: Vec<_> = (0..3).map(|k| alloc.zeros(&format!("activation grad {k}"), widest)).collect();
        let first_needs_grad = matches!(layers[0], LayerSpec::BatchNorm { .. });
        let dacts: Vec<Option<wgpu::Buffer>> =
            (0..widths.len()).map(|j| (j > 0 || first_needs_grad).then(|| pool[j % 3].clone())).collect();
        let dact = |j: usize| dacts[j].as_ref().expect("allocated for every layer output");
        let activation_at = |j: usize| match layers.get(j) {
            Some(LayerSpec::Activation(a)) => Some(*a),
            _ => None,
        };

        let (mm, act, bn) = (&kernels.matmul, &kernels.activation, &kernels.batchnorm);
        let mut forward = Vec::new();
        let mut backward_by_layer: Vec<Vec<Op>> = Vec::new();
        let mut running = Vec::new();
        let mut batch_stats = Vec::new();
        let mut layer_outputs = Vec::new();
        // Activation layers whose work a neighbouring product does.
        let (mut fused_forward, mut fused_backward) = (vec![false; n], vec![false; n]);
        let first_tensor: Vec<usize> = {
            let mut p = 0;
            layers
                .iter()
                .map(|l| {
                    let first = p;
                    p += match l {
                        LayerSpec::Linear { .. } | LayerSpec::BatchNorm { .. } => 2,
                        LayerSpec::Rnn { .. } => 3,
                        LayerSpec::Activation(_) => 0,
                    };
                    first
                })
                .collect()
        };
        for (i, layer) in layers.iter().enumerate() {
            let p = first_tensor[i];
            let (x, y) = (&acts[i], &acts[i + 1]);
            if matches!(layer, LayerSpec::Linear { .. } | LayerSpec::BatchNorm { .. }) {
                layer_outputs.push((i, y.clone(), b * widths[i + 1] as u64));
            }
            let mut back = Vec::new();
            match *layer {
                LayerSpec::Linear { inputs, outputs } => {
                    let dy = dact(i + 1);
                    let next = activation_at(i + 1);
                    let op = MatmulOp::linear_forward(batch, inputs, outputs);
                    let (op, aux) = match next {
                        Some(a) => {
                            fused_forward[i + 1] = true;
                            (op.with(Epilogue::Activate(a)), Some(View::from(&acts[i + 2])))
                        }
                        None => (op, None),
                    };
                    let v = MatmulOperands { a: x.into(), b: w(p), bias: Some(w(p + 1)), c: y.into(), aux };
                    forward.push(product(device, mm, op, v)?);
                    let op = MatmulOp::linear_weight_grad(batch, inputs, outputs).with(Epilogue::BiasGrad);
                    let v = MatmulOperands { a: dy.into(), b: x.into(), bias: None, c: g(p), aux: Some(g(p + 1)) };
                    back.push(product(device, mm, op, v)?);
                    let op = MatmulOp::linear_input_grad(batch, inputs, outputs);
                    match activation_at(i.wrapping_sub(1)) {
                        // Through the activation below, straight to its input's gradient.
                        Some(a) if i >= 2 => {
                            fused_backward[i - 1] = true;
                            let v = MatmulOperands { a: dy.into(), b: w(p), bias: None, c: dact(i - 1).into(), aux: Some((&acts[i - 1]).into()) };
                            back.push(product(device, mm, op.with(Epilogue::ThroughActivation(a)), v)?);
                        }
                        // An activation of the raw input: nothing below needs a gradient.
                        Some(_) => fused_backward[i - 1] = true,
                        None => {
                            if let Some(dx) = &dacts[i] {
                                let v = MatmulOperands { a: dy.into(), b: w(p), bias: None, c: dx.into(), aux: None };
                                back.push(product(device, mm, op, v)?);
                            }
                        }
                    }
                }
                LayerSpec::Activation(a) => {
                    let len = b * widths[i] as u64;
                    if !fused_forward[i] {
                        forward.push(Op::Activation(act.bind_forward(device, a, len, x, y)?));
                    }
                    // Bound later, once the layer above has said whether it fuses this one.
                }
                LayerSpec::BatchNorm { features } => {
                    let dy = dact(i + 1);
                    let spec_bn = BatchNorm::new(batch, features);
                    let saved = alloc.zeros("batch norm saved stats", 3 * features as u64);
                    let crate::kernels::batchnorm::RunningStats { mean, var } = spec_bn.running_stats(device, USAGE)?;
                    alloc.activation_bytes += mean.size() + var.size();
                    let (gamma, beta) = (w(p), w(p + 1));
                    let (x, y, saved_view) = (View::from(x), View::from(y), View::from(&saved));
                    let train = BatchNormTrain { x, gamma, beta, y, saved: saved_view, running_mean: (&mean).into(), running_var: (&var).into() };
                    forward.push(Op::BatchNorm(bn.bind_train_deferred(device, &spec_bn, train)?));
                    let dx = dacts[i].as_ref().expect("batch norm always gets an input gradient");
                    let bwd = BatchNormBackward { x, gamma, saved: saved_view, dy: dy.into(), dx: dx.into(), dgamma: g(p), dbeta: g(p + 1) };
                    back.push(Op::BatchNorm(bn.bind_backward(device, &spec_bn, bwd)?));
                    running.extend([mean, var]);
                    batch_stats.push((spec_bn, saved));
                }
                LayerSpec::Rnn { inputs, hidden, steps, activation } => {
                    let shape = RnnShape { batch, inputs, hidden, steps, activation };
                    let pre = alloc.zeros("rnn pre-activations", shape.pre_len());
                    let hs = alloc.zeros("rnn hidden states", shape.hs_len());
                    layer_outputs.push((i, hs.clone(), shape.hs_len()));
                    // The input [steps, batch, inputs] is a [steps·batch, inputs] matrix for the
                    // weight gradient below.
                    let rows = steps * batch;
                    let recur = RnnForward { x: x.into(), w_x: w(p), bias: w(p + 2), w_h: w(p + 1), pre: (&pre).into(), hs: (&hs).into(), last: y.into() };
                    forward.push(Op::Rnn(kernels.rnn.bind_forward(device, &shape, recur)?));
                    let recur = RnnBackward { w_h: w(p + 1), pre: (&pre).into(), d_last: dact(i + 1).into() };
                    back.push(Op::Rnn(kernels.rnn.bind_backward(device, &shape, recur)?));
                    // Backpropagation through time sums over the steps: dW_x = Σ_t dz_tᵀ·x_t
                    // (and db beside it), dW_h = Σ_t dz_tᵀ·h_{t-1}, each one product over all
                    // rows, reading the dz_t the recurrence left in `pre`.
                    let op = MatmulOp::linear_weight_grad(rows, inputs, hidden).with(Epilogue::BiasGrad);
                    let v = MatmulOperands { a: (&pre).into(), b: x.into(), bias: None, c: g(p), aux: Some(g(p + 2)) };
                    back.push(product(device, mm, op, v)?);
                    let op = MatmulOp::linear_weight_grad(rows, hidden, hidden);
                    let v = MatmulOperands { a: (&pre).into(), b: (&hs).into(), bias: None, c: g(p + 1), aux: None };
                    back.push(product(device, mm, op, v)?);
                }
            }
            backward_by_layer.push(back);
        }
        for (i, layer) in layers.iter().enumerate() {
            if let (LayerSpec::Activation(a), false, Some(dx)) = (*layer, fused_backward[i], &dacts[i]) {
                let len = b * widths[i] as u64;
                backward_by_layer[i].push(Op::Activation(act.bind_backward(device, a, len, &acts[i], dact(i + 1), dx)?));
            }
        }
        let logits = &acts[n];
        let loss_op = match loss_kind {
            LossKind::CrossEntropy => {
                kernels.loss.bind_cross_entropy(device, batch, outputs as u32, logits, &targets, dact(n), &loss)?
            }
            LossKind::Mse => kernels.loss.bind_mse(device, b * outputs, logits, &targets, dact(n), &loss)?,
        };
        forward.push(Op::Loss(loss_op));
        let backward = backward_by_layer.into_iter().rev().flatten().collect();
        // Until `bind_skip_flag`, the running stats follow every step.
        let never_skipped = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("batch norm: no skip flag"),
            size: crate::norm::STATS_SKIP_OFFSET + 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let running_updates = Self::bind_running(device, kernels, &batch_stats, &running, &never_skipped)?;
        let bytes = ModelBytes { params: param_buffer.size(), grads: grads.size(), activations: alloc.activation_bytes };
        Ok(Self {
            spec: spec.clone(),
            batch,
            loss_kind,
            arena,
            params: param_buffer,
            grads,
            running,
            batch_stats,
            running_updates,
            input,
            targets,
            loss,
            outputs: layer_outputs,
            forward,
            backward,
            bytes,
        })
    }

    /// Each Linear, batch-norm and RNN layer's forward output, as a gradient-set view (a
    /// norm over them finds the first layer whose values went non-finite): the layers'
    /// indices in [`ModelSpec::layers`], and the views.
    pub fn layer_outputs(&self) -> (Vec<usize>, Vec<crate::GradView>) {
        let views = self.outputs.iter().map(|(_, b, len)| crate::GradView { buffer: b.clone(), offset: 0, len: *len }).collect();
        (self.outputs.iter().map(|o| o.0).collect(), views)
    }

    /// The layers the model was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Samples per step the buffers are sized for.
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// The loss the model is trained against.
    pub fn loss_kind(&self) -> LossKind {
        self.loss_kind
    }

    /// Where each tensor lives in the packed buffers.
    pub fn arena(&self) -> &ParamArena {
        &self.arena
    }

    /// Every parameter tensor, packed as [`GpuModel::arena`] says (usage STORAGE |
    /// COPY_SRC | COPY_DST).
    pub fn params(&self) -> &wgpu::Buffer {
        &self.params
    }

    /// Every gradient, packed as the parameters (usage STORAGE | COPY_SRC | COPY_DST),
    /// overwritten by each backward.
    pub fn grads(&self) -> &wgpu::Buffer {
        &self.grads
    }

    /// Batch-norm running means and variances, alternating, in layer order.
    pub fn running_stats(&self) -> &[wgpu::Buffer] {
        &self.running
    }

    /// The mean loss of the last forward: one f32 (usage COPY_SRC).
    pub fn loss_buffer(&self) -> &wgpu::Buffer {
        &self.loss
    }

    /// The gradients as a norm/clip set: one segment per tensor.
    pub fn grad_set(&self) -> GradSet {
        self.arena.set(&self.grads)
    }

    /// The parameters, mirroring [`GpuModel::grad_set`] (AGC needs them).
    pub fn param_set(&self) -> GradSet {
        self.arena.set(&self.params)
    }

    fn bind_running(
        device: &wgpu::Device,
        kernels: &TrainKernels,
        batch_stats: &[(BatchNorm, wgpu::Buffer)],
        running: &[wgpu::Buffer],
        norm_stats: &wgpu::Buffer,
    ) -> Result<Vec<BatchNormBinding>> {
        batch_stats
            .iter()
            .zip(running.chunks(2))
            .map(|((bn, saved), pair)| {
                let b = BatchNormRunning { saved: saved.into(), running_mean: (&pair[0]).into(), running_var: (&pair[1]).into(), norm_stats: norm_stats.into() };
                kernels.batchnorm.bind_running(device, bn, b)
            })
            .collect()
    }

    /// Makes the batch-norm running statistics obey the skip flag of a `GradNorm`'s stats
    /// buffer (`stats`): a step that norm skips leaves them bitwise unchanged. Record
    /// [`GpuModel::encode_running_update`] after that norm.
    pub fn bind_skip_flag(&mut self, device: &wgpu::Device, kernels: &TrainKernels, stats: &wgpu::Buffer) -> Result<()> {
        self.running_updates = Self::bind_running(device, kernels, &self.batch_stats, &self.running, stats)?;
        Ok(())
    }

    /// Compute dispatches one [`GpuModel::encode`] and one
    /// [`GpuModel::encode_running_update`] record together.
    pub fn dispatch_count(&self) -> usize {
        self.forward.iter().chain(&self.backward).map(Op::dispatches).sum::<usize>() + self.running_updates.len()
    }

    /// Device bytes held by parameters, gradients and activations.
    pub fn bytes(&self) -> ModelBytes {
        self.bytes
    }

    /// Queues the batch `rows` of `data` (samples laid out as the model's input) for the
    /// next submission.
    pub fn write_batch(&self, queue: &wgpu::Queue, data: &Dataset, rows: &[usize]) -> Result<()> {
        if rows.len() != self.batch as usize {
            return Err(Error::LengthMismatch { what: "batch rows".into(), expected: self.batch as u64, actual: rows.len() as u64 });
        }
        let n = self.spec.input_len();
        if data.sample_len != n {
            return Err(Error::LengthMismatch { what: "input features per sample".into(), expected: n as u64, actual: data.sample_len as u64 });
        }
        let outputs = self.spec.output_len();
        Self::check_batch(data, rows, n)?;
        let inputs: Vec<f32> = match self.spec.layers[0] {
            // Samples are [steps, inputs]; the RNN wants [steps, batch, inputs].
            LayerSpec::Rnn { inputs, steps, .. } => {
                let k = inputs as usize;
                (0..steps as usize)
                    .flat_map(|t| rows.iter().flat_map(move |&r| &data.inputs[r * n + t * k..r * n + (t + 1) * k]))
                    .copied()
                    .collect()
            }
            _ => rows.iter().flat_map(|&r| &data.inputs[r * n..(r + 1) * n]).copied().collect(),
        };
        queue.write_buffer(&self.input, 0, bytemuck::cast_slice(&inputs));
        match (&data.targets, self.loss_kind) {
            (Targets::Classes { labels, classes }, LossKind::CrossEntropy) if *classes == outputs => {
                let t: Vec<u32> = rows.iter().map(|&r| labels[r]).collect();
                queue.write_buffer(&self.targets, 0, bytemuck::cast_slice(&t));
            }
            (Targets::Values { values, outputs: o }, LossKind::Mse) if *o == outputs => {
                let o = *o as usize;
                let t: Vec<f32> = rows.iter().flat_map(|&r| &values[r * o..(r + 1) * o]).copied().collect();
                queue.write_buffer(&self.targets, 0, bytemuck::cast_slice(&t));
            }
            _ => {
                return Err(ModelSpec::targets_mismatch(format!("a {:?} model with {outputs} outputs", self.loss_kind)));
            }
        }
        Ok(())
    }

    /// Refuses rows past the data and data whose inputs or targets are shorter than its
    /// rows need, before anything is indexed.
    fn check_batch(data: &Dataset, rows: &[usize], sample_len: usize) -> Result<()> {
        let samples = data.len();
        if let Some(&r) = rows.iter().find(|&&r| r >= samples) {
            return Err(Error::NotBelow { what: "batch row", value: r as u64, limit: samples as u64 });
        }
        if data.inputs.len() != samples * sample_len {
            return Err(Error::LengthMismatch {
                what: "input values (samples × features)".into(),
                expected: (samples * sample_len) as u64,
                actual: data.inputs.len() as u64,
            });
        }
        let (what, expected, actual) = match &data.targets {
            Targets::Classes { labels, classes } => {
                if let Some(&l) = rows.iter().map(|&r| labels.get(r)).find_map(|l| l.filter(|&&l| l >= *classes)) {
                    return Err(Error::NotBelow { what: "class label", value: l as u64, limit: *classes as u64 });
                }
                ("class labels (one per sample)", samples, labels.len())
            }
            Targets::Values { values, outputs: o } => ("target values (samples × outputs)", samples * *o as usize, values.len()),
        };
        if actual < expected {
            return Err(Error::LengthMismatch { what: what.into(), expected: expected as u64, actual: actual as u64 });
        }
        Ok(())
    }

    /// Records the batch-norm running-stat updates of the last [`GpuModel::encode`] (none
    /// without batch norm): after the gradient norm whose skip flag they obey (see
    /// [`GpuModel::bind_skip_flag`]); without one, after `encode`.
    pub fn encode_running_update(&self, kernels: &TrainKernels, pass: &mut wgpu::ComputePass<'_>) {
        for binding in &self.running_updates {
            kernels.batchnorm.encode(pass, binding);
        }
    }

    /// Records forward, loss and backward (layers in reverse) into `encoder`. The
    /// batch-norm running statistics move only with [`GpuModel::encode_running_update`].
    pub fn encode(&self, kernels: &TrainKernels, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("gradguard forward and backward"),
            timestamp_writes: None,
        });
        for op in self.forward.iter().chain(&self.backward) {
            op.encode(kernels, &mut pass);
        }
    }
}
