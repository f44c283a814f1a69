//! `shaders/batchnorm.wgsl`: BatchNorm1d training forward (with the running-stat update,
//! or leaving it to a later pass that obeys the gradient norm's skip flag), evaluation
//! forward and backward.

use super::{
    bind_group, check_disjoint, dispatch, index_range, layout, pipeline, placeholder, storage_entry, storage_view,
    uniform, uniform_entry, View,
};
use crate::error::{Error, Result};
use crate::shaders;

/// `torch.nn.BatchNorm1d(features, eps, momentum)` (affine, tracking running stats) over
/// inputs of shape `[batch, features]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm {
    /// Rows of the input (≥ 2 to train, as torch).
    pub batch: u32,
    /// Columns of the input: the channels normalized, each over the batch.
    pub features: u32,
    /// 0.1, as torch: `running = (1 - momentum)·running + momentum·batch_stat`.
    pub momentum: f32,
    /// 1e-5, as torch.
    pub eps: f32,
}

impl BatchNorm {
    /// torch's defaults for momentum and eps.
    pub fn new(batch: u32, features: u32) -> Self {
        Self { batch, features, momentum: 0.1, eps: 1e-5 }
    }

    fn len(&self) -> u64 {
        self.batch as u64 * self.features as u64
    }

    /// The running statistics as `BatchNorm1d` starts them: `running_mean` zeros and
    /// `running_var` ones (not zeros: the evaluation forward divides by its square root),
    /// `features` f32 each, with `usage` (STORAGE at least, for the kernels).
    pub fn running_stats(&self, device: &wgpu::Device, usage: wgpu::BufferUsages) -> Result<RunningStats> {
        if self.features == 0 {
            return Err(Error::Empty { what: "batch norm running statistics".into() });
        }
        let init = |label, value: f32| super::buffer_init(device, label, bytemuck::cast_slice(&vec![value; self.features as usize]), usage);
        Ok(RunningStats { mean: init("batch norm running mean", 0.0)?, var: init("batch norm running var", 1.0)? })
    }

    fn params(&self, min_batch: u32) -> Result<[u32; 4]> {
        if self.features == 0 {
            return Err(Error::Empty { what: "batch norm features".into() });
        }
        if self.batch < min_batch {
            let expected = match min_batch {
                2 => "at least 2 to train (torch: more than 1 value per channel)",
                _ => "at least 1",
            };
            return Err(Error::OutOfRange { what: "batch norm batch", value: self.batch as f64, expected });
        }
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(Error::OutOfRange { what: "batch norm momentum", value: self.momentum as f64, expected: "in [0, 1]" });
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::NotPositive { what: "batch norm eps", value: self.eps as f64 });
        }
        index_range("batch norm input", self.len())?;
        Ok([self.batch, self.features, self.momentum.to_bits(), self.eps.to_bits()])
    }
}

/// A batch-norm layer's running mean and running (unbiased) variance, `features` f32 each.
#[derive(Clone, Debug)]
pub struct RunningStats {
    /// Running mean, starting at 0.
    pub mean: wgpu::Buffer,
    /// Running variance, starting at 1.
    pub var: wgpu::Buffer,
}

/// Views of the training forward. `saved` (2·features f32: mean, then inv_std) is what
/// the backward reads; the running stats (features f32 each) are updated in place.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormTrain<'a> {
    /// Input, `batch·features` f32.
    pub x: View<'a>,
    /// Scale γ, `features` f32.
    pub gamma: View<'a>,
    /// Shift β, `features` f32.
    pub beta: View<'a>,
    /// Output, `batch·features` f32, overwritten.
    pub y: View<'a>,
    /// Batch statistics for the backward: 2·features f32 (3·features for
    /// [`BatchNormKernel::bind_train_deferred`]), overwritten.
    pub saved: View<'a>,
    /// Running mean, `features` f32, updated in place (left alone when deferred).
    pub running_mean: View<'a>,
    /// Running unbiased variance, `features` f32, updated in place (left alone when deferred).
    pub running_var: View<'a>,
}

/// Views of the deferred running-stat update ([`BatchNormKernel::bind_running`]):
/// `saved` as the deferred training forward writes it (3·features f32: mean, inv_std,
/// biased variance), the running stats it moves, and a `GradNorm`'s stats buffer whose
/// skip flag (word 2) stops it.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormRunning<'a> {
    /// 3·features f32 written by the deferred training forward.
    pub saved: View<'a>,
    /// Running mean, `features` f32, updated in place.
    pub running_mean: View<'a>,
    /// Running unbiased variance, `features` f32, updated in place.
    pub running_var: View<'a>,
    /// A [`GradNorm`](crate::GradNorm) stats buffer; its skip flag cancels the update.
    pub norm_stats: View<'a>,
}

/// Views of the evaluation forward, from the running stats.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormEval<'a> {
    /// Input, `batch·features` f32.
    pub x: View<'a>,
    /// Scale γ, `features` f32.
    pub gamma: View<'a>,
    /// Shift β, `features` f32.
    pub beta: View<'a>,
    /// Output, `batch·features` f32, overwritten.
    pub y: View<'a>,
    /// Running mean, `features` f32 (read only, though bound writable).
    pub running_mean: View<'a>,
    /// Running variance, `features` f32 (read only, though bound writable).
    pub running_var: View<'a>,
}

/// Views of the backward: the forward's input and `saved`, the upstream `dy`, and the
/// gradients it writes (overwriting).
#[derive(Clone, Copy, Debug)]
pub struct BatchNormBackward<'a> {
    /// The forward's input, `batch·features` f32.
    pub x: View<'a>,
    /// Scale γ, `features` f32.
    pub gamma: View<'a>,
    /// The training forward's `saved` (mean, inv_std).
    pub saved: View<'a>,
    /// Gradient of the loss with respect to the output, `batch·features` f32.
    pub dy: View<'a>,
    /// Gradient with respect to the input, `batch·features` f32, overwritten.
    pub dx: View<'a>,
    /// Gradient with respect to γ, `features` f32, overwritten.
    pub dgamma: View<'a>,
    /// Gradient with respect to β, `features` f32, overwritten.
    pub dbeta: View<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Train,
    TrainDeferred,
    Eval,
    Backward,
    Running,
}

/// A bound batch-norm pass of one kind (train, deferred train, eval, backward, running
/// update); record it with [`BatchNormKernel::encode`].
#[derive(Debug)]
pub struct BatchNormBinding {
    group: wgpu::BindGroup,
    entry: Entry,
    features: u32,
}

/// The batch-norm pipelines. Every buffer needs STORAGE usage; a buffer bound twice where
/// one binding is written is refused with `Error::Aliased`.
#[derive(Debug)]
pub struct BatchNormKernel {
    /// 0 x, 1 γ, 2 β or dy (read-only), 3 y or dx, 4 saved, 5 running mean or dγ,
    /// 6 running var or dβ (read-write), 7 params.
    pub layout: wgpu::BindGroupLayout,
    /// 4 saved, 5 running mean, 6 running var (read-write), 7 params, 8 norm stats.
    pub running_layout: wgpu::BindGroupLayout,
    train: wgpu::ComputePipeline,
    train_deferred: wgpu::ComputePipeline,
    eval: wgpu::ComputePipeline,
    backward: wgpu::ComputePipeline,
    running: wgpu::ComputePipeline,
    placeholder: wgpu::Buffer,
}

/// (name, buffer, f32 elements or 0 for the placeholder, writable) of one binding.
type Slot<'a> = (&'static str, Option<View<'a>>, u64, bool);

impl BatchNormKernel {
    /// Builds the pipelines. `Err(Error::Device)` if the device refuses them.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let mut entries: Vec<_> = (0..7).map(|i| storage_entry(i, i < 3)).collect();
        entries.push(uniform_entry(7));
        let layout = layout(device, "batchnorm", &entries);
        let running_entries =
            [storage_entry(4, false), storage_entry(5, false), storage_entry(6, false), uniform_entry(7), storage_entry(8, true)];
        let running_layout = super::layout(device, "batchnorm running", &running_entries);
        let s = &shaders::BATCHNORM;
        Ok(Self {
            train: pipeline(device, s, "train", &[&layout], &[])?,
            train_deferred: pipeline(device, s, "train", &[&layout], &[("DEFER_RUNNING", 1.0)])?,
            eval: pipeline(device, s, "eval", &[&layout], &[])?,
            backward: pipeline(device, s, "backward", &[&layout], &[])?,
            running: pipeline(device, s, "running", &[&running_layout], &[])?,
            placeholder: placeholder(device),
            layout,
            running_layout,
        })
    }

    /// The training forward with batch statistics, updating the running stats in place
    /// (`saved`: 2·features f32). Needs `batch ≥ 2`.
    pub fn bind_train(&self, device: &wgpu::Device, bn: &BatchNorm, b: BatchNormTrain<'_>) -> Result<BatchNormBinding> {
        let (len, f) = (bn.len(), bn.features as u64);
        let slots = [
            ("batch norm x", Some(b.x), len, false),
            ("batch norm gamma", Some(b.gamma), f, false),
            ("batch norm beta", Some(b.beta), f, false),
            ("batch norm y", Some(b.y), len, true),
            ("batch norm saved stats", Some(b.saved), 2 * f, true),
            ("batch norm running mean", Some(b.running_mean), f, true),
            ("batch norm running var", Some(b.running_var), f, true),
        ];
        self.bind(device, bn, Entry::Train, 2, slots)
    }

    /// The training forward without the running-stat update: `saved` must hold
    /// 3·features f32 (the third row, the biased variance, is what
    /// [`BatchNormKernel::bind_running`]'s pass reads). The running stats are bound but
    /// left alone.
    pub fn bind_train_deferred(&self, device: &wgpu::Device, bn: &BatchNorm, b: BatchNormTrain<'_>) -> Result<BatchNormBinding> {
        let (len, f) = (bn.len(), bn.features as u64);
        let slots = [
            ("batch norm x", Some(b.x), len, false),
            ("batch norm gamma", Some(b.gamma), f, false),
            ("batch norm beta", Some(b.beta), f, false),
            ("batch norm y", Some(b.y), len, true),
            ("batch norm saved stats (deferred)", Some(b.saved), 3 * f, true),
            ("batch norm running mean", Some(b.running_mean), f, true),
            ("batch norm running var", Some(b.running_var), f, true),
        ];
        self.bind(device, bn, Entry::TrainDeferred, 2, slots)
    }

    /// The running-stat update after a deferred training forward, recorded after the
    /// gradient norm that wrote `norm_stats`: a skipped step leaves the stats unchanged.
    pub fn bind_running(&self, device: &wgpu::Device, bn: &BatchNorm, b: BatchNormRunning<'_>) -> Result<BatchNormBinding> {
        let params = uniform(device, "batch norm params", &bn.params(2)?)?;
        let f = bn.features as u64;
        let skip_words = super::norm::STATS_SKIP_OFFSET / 4 + 1;
        check_disjoint(&[
            ("batch norm saved stats (deferred)", b.saved, 3 * f, true),
            ("batch norm running mean", b.running_mean, f, true),
            ("batch norm running var", b.running_var, f, true),
            ("gradient norm stats", b.norm_stats, skip_words, false),
        ])?;
        let resources = [
            (4, storage_view("batch norm saved stats (deferred)", b.saved, 3 * f)?),
            (5, storage_view("batch norm running mean", b.running_mean, f)?),
            (6, storage_view("batch norm running var", b.running_var, f)?),
            (7, params.as_entire_binding()),
            (8, storage_view("gradient norm stats", b.norm_stats, skip_words)?),
        ];
        let entries: Vec<_> =
            resources.into_iter().map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource }).collect();
        let group = super::scoped(device, "batch norm running", || {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("batch norm running"),
                layout: &self.running_layout,
                entries: &entries,
            })
        })?;
        Ok(BatchNormBinding { group, entry: Entry::Running, features: bn.features })
    }

    /// The evaluation forward: normalizes with the running stats (torch's `eval()` mode).
    pub fn bind_eval(&self, device: &wgpu::Device, bn: &BatchNorm, b: BatchNormEval<'_>) -> Result<BatchNormBinding> {
        let (len, f) = (bn.len(), bn.features as u64);
        let slots = [
            ("batch norm x", Some(b.x), len, false),
            ("batch norm gamma", Some(b.gamma), f, false),
            ("batch norm beta", Some(b.beta), f, false),
            ("batch norm y", Some(b.y), len, true),
            ("unused", None, 0, true),
            ("batch norm running mean", Some(b.running_mean), f, true),
            ("batch norm running var", Some(b.running_var), f, true),
        ];
        self.bind(device, bn, Entry::Eval, 1, slots)
    }

    /// The backward of the training forward: writes `dx`, `dγ` and `dβ`.
    pub fn bind_backward(
        &self,
        device: &wgpu::Device,
        bn: &BatchNorm,
        b: BatchNormBackward<'_>,
    ) -> Result<BatchNormBinding> {
        let (len, f) = (bn.len(), bn.features as u64);
        let slots = [
            ("batch norm x", Some(b.x), len, false),
            ("batch norm gamma", Some(b.gamma), f, false),
            ("batch norm dy", Some(b.dy), len, false),
            ("batch norm dx", Some(b.dx), len, true),
            ("batch norm saved stats", Some(b.saved), 2 * f, true),
            ("batch norm dgamma", Some(b.dgamma), f, true),
            ("batch norm dbeta", Some(b.dbeta), f, true),
        ];
        self.bind(device, bn, Entry::Backward, 1, slots)
    }

    fn bind(
        &self,
        device: &wgpu::Device,
        bn: &BatchNorm,
        entry: Entry,
        min_batch: u32,
        slots: [Slot<'_>; 7],
    ) -> Result<BatchNormBinding> {
        let params = uniform(device, "batch norm params", &bn.params(min_batch)?)?;
        let named: Vec<_> = slots.iter().filter_map(|&(name, v, len, w)| v.map(|v| (name, v, len, w))).collect();
        check_disjoint(&named)?;
        let mut resources = slots
            .iter()
            .map(|&(name, view, len, _)| match view {
                Some(view) => storage_view(name, view, len),
                None => Ok(self.placeholder.as_entire_binding()),
            })
            .collect::<Result<Vec<_>>>()?;
        resources.push(params.as_entire_binding());
        let group = bind_group(device, &self.layout, "batch norm", resources)?;
        Ok(BatchNormBinding { group, entry, features: bn.features })
    }

    /// Records `binding`'s dispatch into `pass`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, binding: &BatchNormBinding) {
        let (pipeline, groups) = match binding.entry {
            Entry::Train => (&self.train, binding.features),
            Entry::TrainDeferred => (&self.train_deferred, binding.features),
            Entry::Eval => (&self.eval, binding.features),
            Entry::Backward => (&self.backward, binding.features),
            // One thread per feature.
            Entry::Running => (&self.running, binding.features.div_ceil(64)),
        };
        dispatch(pass, pipeline, &binding.group, groups);
    }
}
