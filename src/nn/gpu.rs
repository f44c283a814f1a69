//! A model on the device: every buffer and bind group made once when it is built, so a
//! training step only records dispatches.

use crate::kernels::buffer_init;

use super::{LayerSpec, LossKind, ModelSpec};
use crate::data::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::grad_set::{GradSet, GradView};
use crate::kernels::activation::{ActivationBinding, ActivationKernel};
use crate::kernels::batchnorm::{
    BatchNorm, BatchNormBackward, BatchNormBinding, BatchNormKernel, BatchNormRunning, BatchNormTrain,
};
use crate::kernels::loss::{LossBinding, LossKernel};
use crate::kernels::matmul::{BiasGradBinding, MatmulBinding, MatmulKernel, MatmulOp};
use crate::kernels::optimizer::OptimizerKernel;

/// The pipelines a training step uses, compiled once per device.
#[derive(Debug)]
pub struct TrainKernels {
    /// Linear forward and backward products, bias gradients, fault scaling.
    pub matmul: MatmulKernel,
    /// Activation forward and backward.
    pub activation: ActivationKernel,
    /// Batch norm forward, backward and running-stat updates.
    pub batchnorm: BatchNormKernel,
    /// Loss and its gradient.
    pub loss: LossKernel,
    /// Parameter updates.
    pub optimizer: OptimizerKernel,
}

impl TrainKernels {
    /// Builds every pipeline. `Err(Error::Device)` if the device refuses one.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        Ok(Self {
            matmul: MatmulKernel::new(device)?,
            activation: ActivationKernel::new(device)?,
            batchnorm: BatchNormKernel::new(device)?,
            loss: LossKernel::new(device)?,
            optimizer: OptimizerKernel::new(device)?,
        })
    }
}

/// One recorded dispatch (or two, for the loss).
#[derive(Debug)]
enum Op {
    Matmul(MatmulBinding),
    BiasGrad(BiasGradBinding),
    Activation(ActivationBinding),
    BatchNorm(BatchNormBinding),
    Loss(LossBinding),
}

impl Op {
    fn encode(&self, k: &TrainKernels, pass: &mut wgpu::ComputePass<'_>) {
        match self {
            Self::Matmul(b) => k.matmul.encode(pass, b),
            Self::BiasGrad(b) => k.matmul.encode_bias_grad(pass, b),
            Self::Activation(b) => k.activation.encode(pass, b),
            Self::BatchNorm(b) => k.batchnorm.encode(pass, b),
            Self::Loss(b) => k.loss.encode(pass, b),
        }
    }

    fn dispatches(&self) -> usize {
        if matches!(self, Self::Loss(_)) {
            2
        } else {
            1
        }
    }
}

/// Bytes the model holds on the device, by role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ModelBytes {
    pub params: u64,
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
    params: Vec<wgpu::Buffer>,
    grads: Vec<wgpu::Buffer>,
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
    /// An RNN's input `[steps, batch, inputs]` is cut into one buffer per step
    /// (bindings start at offset 0): (source offset, destination, bytes).
    input_copies: Vec<(u64, wgpu::Buffer, u64)>,
    forward: Vec<Op>,
    backward: Vec<Op>,
    bytes: ModelBytes,
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
        let tensors = spec.tensors();
        if params.len() != tensors.len() || params.iter().zip(&tensors).any(|(p, t)| p.len() != t.len()) {
            return Err(Error::Invalid(format!(
                "parameters do not fit the model: expected {} tensors of lengths {:?}",
                tensors.len(),
                tensors.iter().map(|t| t.len()).collect::<Vec<_>>()
            )));
        }
        if batch == 0 {
            return Err(Error::Invalid("batch size must be ≥ 1".into()));
        }
        let mut alloc = Alloc { device, activation_bytes: 0 };
        let param_buffers = params.iter().zip(&tensors).map(|(p, t)| alloc.data(&t.name, p)).collect::<Result<Vec<_>>>()?;
        let grads = tensors.iter().map(|t| alloc.data(&format!("{} grad", t.name), &vec![0.0; t.len()])).collect::<Result<Vec<_>>>()?;
        let param_bytes: u64 = param_buffers.iter().map(|b| b.size()).sum();

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
        // Layer i's backward reads the gradient of its output (i + 1) and writes that of its
        // input (i), and nothing reads a gradient after the layer below has consumed it: two
        // buffers, alternating by parity, hold every activation gradient.
        let widest = b * *widths.iter().max().expect("never empty") as u64;
        let grad_pair = [alloc.zeros("activation grad (even layers)", widest), alloc.zeros("activation grad (odd layers)", widest)];
        let first_needs_grad = matches!(layers[0], LayerSpec::BatchNorm { .. });
        let dacts: Vec<Option<wgpu::Buffer>> =
            (0..widths.len()).map(|i| (i > 0 || first_needs_grad).then(|| grad_pair[i % 2].clone())).collect();
        let dact = |i: usize| dacts[i].as_ref().expect("allocated for every layer output");

        let (mm, act, bn) = (&kernels.matmul, &kernels.activation, &kernels.batchnorm);
        let mut forward = Vec::new();
        let mut backward_by_layer: Vec<Vec<Op>> = Vec::new();
        let mut running = Vec::new();
        let mut batch_stats = Vec::new();
        let mut input_copies = Vec::new();
        let mut p = 0; // first tensor of the current layer
        for (i, layer) in layers.iter().enumerate() {
            let (x, y, dy) = (&acts[i], &acts[i + 1], dact(i + 1));
            let mut back = Vec::new();
            match *layer {
                LayerSpec::Linear { inputs, outputs } => {
                    let (w, bias) = (&param_buffers[p], &param_buffers[p + 1]);
                    let op = MatmulOp::linear_forward(batch, inputs, outputs);
                    forward.push(Op::Matmul(mm.bind(device, &op, x, w, Some(bias), y)?));
                    let op = MatmulOp::linear_weight_grad(batch, inputs, outputs);
                    back.push(Op::Matmul(mm.bind(device, &op, dy, x, None, &grads[p])?));
                    back.push(Op::BiasGrad(mm.bind_bias_grad(device, batch, outputs, dy, &grads[p + 1], false)?));
                    if let Some(dx) = &dacts[i] {
                        let op = MatmulOp::linear_input_grad(batch, inputs, outputs);
                        back.push(Op::Matmul(mm.bind(device, &op, dy, w, None, dx)?));
                    }
                    p += 2;
                }
                LayerSpec::Activation(a) => {
                    let len = b * widths[i] as u64;
                    forward.push(Op::Activation(act.bind_forward(device, a, len, x, y)?));
                    if let Some(dx) = &dacts[i] {
                        back.push(Op::Activation(act.bind_backward(device, a, len, x, dy, dx)?));
                    }
                }
                LayerSpec::BatchNorm { features } => {
                    let spec_bn = BatchNorm::new(batch, features);
                    let saved = alloc.zeros("batch norm saved stats", 3 * features as u64);
                    let mean = alloc.zeros("batch norm running mean", features as u64);
                    let var = alloc.data("batch norm running var", &vec![1.0; features as usize])?;
                    alloc.activation_bytes += var.size();
                    let (gamma, beta) = (&param_buffers[p], &param_buffers[p + 1]);
                    let train = BatchNormTrain { x, gamma, beta, y, saved: &saved, running_mean: &mean, running_var: &var };
                    forward.push(Op::BatchNorm(bn.bind_train_deferred(device, &spec_bn, train)?));
                    let dx = dacts[i].as_ref().expect("batch norm always gets an input gradient");
                    let bwd = BatchNormBackward {
                        x,
                        gamma,
                        saved: &saved,
                        dy,
                        dx,
                        dgamma: &grads[p],
                        dbeta: &grads[p + 1],
                    };
                    back.push(Op::BatchNorm(bn.bind_backward(device, &spec_bn, bwd)?));
                    running.extend([mean, var]);
                    batch_stats.push((spec_bn, saved));
                    p += 2;
                }
                LayerSpec::Rnn { inputs, hidden, steps, activation } => {
                    let t_len = steps as usize;
                    let (w_x, w_h, bias) = (&param_buffers[p], &param_buffers[p + 1], &param_buffers[p + 2]);
                    let (dw_x, dw_h, db) = (&grads[p], &grads[p + 1], &grads[p + 2]);
                    let step_bytes = 4 * b * inputs as u64;
                    let xs: Vec<_> = (0..t_len).map(|t| alloc.zeros(&format!("rnn x{t}"), b * inputs as u64)).collect();
                    for (t, xt) in xs.iter().enumerate() {
                        input_copies.push((t as u64 * step_bytes, xt.clone(), step_bytes));
                    }
                    let hb = b * hidden as u64;
                    let pre: Vec<_> = (0..t_len).map(|t| alloc.zeros(&format!("rnn pre{t}"), hb)).collect();
                    let mut hs: Vec<_> = (0..t_len - 1).map(|t| alloc.zeros(&format!("rnn h{t}"), hb)).collect();
                    hs.push(y.clone());
                    // Step t's backward reads dh_t and writes dh_{t-1}: two buffers alternate
                    // (the last step's is the layer's output gradient).
                    let dh_pair = [alloc.zeros("rnn dh (even steps)", hb), alloc.zeros("rnn dh (odd steps)", hb)];
                    let mut dhs: Vec<_> = (0..t_len - 1).map(|t| dh_pair[t % 2].clone()).collect();
                    dhs.push(dy.clone());
                    let dpre = alloc.zeros("rnn dpre", hb);
                    let input_op = MatmulOp::linear_forward(batch, inputs, hidden);
                    let recur_op = MatmulOp { accumulate: true, ..MatmulOp::linear_forward(batch, hidden, hidden) };
                    for t in 0..t_len {
                        forward.push(Op::Matmul(mm.bind(device, &input_op, &xs[t], w_x, Some(bias), &pre[t])?));
                        if t > 0 {
                            forward.push(Op::Matmul(mm.bind(device, &recur_op, &hs[t - 1], w_h, None, &pre[t])?));
                        }
                        forward.push(Op::Activation(act.bind_forward(device, activation, hb, &pre[t], &hs[t])?));
                    }
                    // Backpropagation through time: the weight gradients sum over the steps.
                    for t in (0..t_len).rev() {
                        let acc = t + 1 < t_len;
                        back.push(Op::Activation(act.bind_backward(device, activation, hb, &pre[t], &dhs[t], &dpre)?));
                        let op = MatmulOp { accumulate: acc, ..MatmulOp::linear_weight_grad(batch, inputs, hidden) };
                        back.push(Op::Matmul(mm.bind(device, &op, &dpre, &xs[t], None, dw_x)?));
                        back.push(Op::BiasGrad(mm.bind_bias_grad(device, batch, hidden, &dpre, db, acc)?));
                        if t > 0 {
                            let op = MatmulOp { accumulate: acc, ..MatmulOp::linear_weight_grad(batch, hidden, hidden) };
                            back.push(Op::Matmul(mm.bind(device, &op, &dpre, &hs[t - 1], None, dw_h)?));
                            let op = MatmulOp::linear_input_grad(batch, hidden, hidden);
                            back.push(Op::Matmul(mm.bind(device, &op, &dpre, w_h, None, &dhs[t - 1])?));
                        }
                    }
                    p += 3;
                }
            }
            backward_by_layer.push(back);
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
        let bytes = ModelBytes {
            params: param_bytes,
            grads: grads.iter().map(|g| g.size()).sum(),
            activations: alloc.activation_bytes,
        };
        Ok(Self {
            spec: spec.clone(),
            batch,
            loss_kind,
            params: param_buffers,
            grads,
            running,
            batch_stats,
            running_updates,
            input,
            targets,
            loss,
            input_copies,
            forward,
            backward,
            bytes,
        })
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

    /// One buffer per parameter tensor, in [`ModelSpec::tensors`] order.
    pub fn params(&self) -> &[wgpu::Buffer] {
        &self.params
    }

    /// One gradient buffer per parameter tensor, in [`ModelSpec::tensors`] order (usage
    /// STORAGE | COPY_SRC | COPY_DST), overwritten by each backward.
    pub fn grads(&self) -> &[wgpu::Buffer] {
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
        Self::set_of(&self.grads)
    }

    /// The parameters, mirroring [`GpuModel::grad_set`] (AGC needs them).
    pub fn param_set(&self) -> GradSet {
        Self::set_of(&self.params)
    }

    fn set_of(buffers: &[wgpu::Buffer]) -> GradSet {
        GradSet::new(buffers.iter().map(|b| GradView { buffer: b.clone(), offset: 0, len: b.size() / 4 }).collect())
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
                let b = BatchNormRunning { saved, running_mean: &pair[0], running_var: &pair[1], norm_stats };
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
                return Err(Error::Invalid(format!(
                    "the data's targets do not fit a {:?} model with {outputs} outputs",
                    self.loss_kind
                )))
            }
        }
        Ok(())
    }

    /// Refuses rows past the data and data whose inputs or targets are shorter than its
    /// rows need, before anything is indexed.
    fn check_batch(data: &Dataset, rows: &[usize], sample_len: usize) -> Result<()> {
        let samples = data.len();
        if let Some(&r) = rows.iter().find(|&&r| r >= samples) {
            return Err(Error::Invalid(format!("batch row {r} is past the data's {samples} samples")));
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
                    return Err(Error::Invalid(format!("class label {l} is not below the {classes} classes")));
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
        for (offset, dst, size) in &self.input_copies {
            encoder.copy_buffer_to_buffer(&self.input, *offset, dst, 0, *size);
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("gradguard forward and backward"),
            timestamp_writes: None,
        });
        for op in self.forward.iter().chain(&self.backward) {
            op.encode(kernels, &mut pass);
        }
    }
}
