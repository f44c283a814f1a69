//! The trainer's checkpoint I/O: which device buffers and host state a checkpoint holds,
//! saving them on a plan, and loading them to continue a run (the file format is
//! [`super::checkpoint`]'s).

use std::path::Path;

use super::checkpoint::{self, CheckpointPlan, DeviceTensor, HostState, ResumeOptions};
use super::{OptimizerChoice, TrainConfig, Trainer};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

impl<'g> Trainer<'g> {
    /// Makes [`Trainer::run`] save checkpoints as `plan` says.
    pub fn save_checkpoints(&mut self, plan: CheckpointPlan) {
        self.checkpoints = Some(plan);
    }

    /// Saves a checkpoint through the plan, where there is one and `due` says so.
    pub(super) fn save_planned(&mut self, due: impl FnOnce(&CheckpointPlan) -> bool) -> Result<()> {
        let Some(mut plan) = self.checkpoints.take() else { return Ok(()) };
        let saved = match due(&plan) {
            true => plan.save(self.next_step, |path| self.save_checkpoint(path)),
            false => Ok(()),
        };
        self.checkpoints = Some(plan);
        saved
    }

    /// Every buffer that carries state from one step to the next, named as in checkpoints.
    fn device_tensors(&self) -> Vec<DeviceTensor<'_>> {
        let state_names: &[&str] = match self.config.optimizer {
            OptimizerChoice::Sgd { .. } => &["momentum_buffer"],
            OptimizerChoice::AdamW => &["exp_avg", "exp_avg_sq"],
        };
        let f32s = |name: String, buffer, offset, shape| DeviceTensor { name, buffer, offset, shape, dtype: safetensors::Dtype::F32 };
        let (arena, state) = (self.model.arena(), self.update.state());
        let mut out = Vec::new();
        for (t, tensor) in self.spec.tensors().into_iter().enumerate() {
            let offset = 4 * arena.ranges()[t].0;
            out.push(f32s(format!("param/{}", tensor.name), self.model.params(), offset, tensor.shape.clone()));
            for (slot, name) in state_names.iter().enumerate() {
                let slot_offset = 4 * slot as u64 * state.len() + offset;
                out.push(f32s(format!("optim/{}/{name}", tensor.name), state.buffer(), slot_offset, tensor.shape.clone()));
            }
        }
        out.push(f32s("optim/step".into(), state.buffer(), state.step_offset(), vec![1]));
        if let Some(adaptive) = self.clipping.adaptive() {
            let words = adaptive.state_buffer().size() as usize / 4;
            out.push(DeviceTensor {
                name: "clip/adaptive_state".into(),
                buffer: adaptive.state_buffer(),
                offset: 0,
                shape: vec![words],
                dtype: safetensors::Dtype::U32,
            });
        }
        let bn_layers = self.spec.layers.iter().enumerate().filter(|(_, l)| matches!(l, crate::nn::LayerSpec::BatchNorm { .. }));
        for ((i, layer), pair) in bn_layers.zip(self.model.running_stats().chunks(2)) {
            let crate::nn::LayerSpec::BatchNorm { features } = *layer else { unreachable!("filtered") };
            let name = self.spec.layer_name(i);
            out.push(f32s(format!("buffer/{name}.running_mean"), &pair[0], 0, vec![features as usize]));
            out.push(f32s(format!("buffer/{name}.running_var"), &pair[1], 0, vec![features as usize]));
        }
        out
    }

    /// Saves everything a resumed run needs to continue exactly as this one would: the
    /// device state after the last submitted step, the host state up to the last record
    /// read, and the records still in flight, saved unread so that their responses land
    /// at the same steps after a resume. Blocks until the device is done.
    pub fn save_checkpoint(&mut self, path: &Path) -> Result<()> {
        let in_flight = self.recorder.in_flight(&self.gpu.device, self.next_step, &self.clipping)?;
        let host = HostState {
            lr_scale: self.controller.lr_scale,
            last_lr_drop: self.controller.last_lr_drop,
            monitor: self.monitor.state(),
            records: self.recorder.records().to_vec(),
            checks: self.evaluation.checks().to_vec(),
            in_flight,
        };
        checkpoint::save(path, self.gpu, &self.config, self.next_step, &self.device_tensors(), &host)
    }

    /// A trainer for `config` that continues the run saved at `path`: bit for bit under the
    /// same configuration (`steps` may grow), or with other remedies
    /// ([`RESUMABLE_CHANGES`]: clip, learning rate and schedule, weight decay,
    /// non-finite policy, responses); a changed clip starts its adaptive state afresh. A run
    /// that had stopped continues.
    pub fn resume(gpu: &'g Gpu, config: TrainConfig, path: &Path, options: ResumeOptions) -> Result<Self> {
        let mut trainer = Self::new(gpu, config)?;
        trainer.load_checkpoint(path, options)?;
        Ok(trainer)
    }

    /// Continues, from here, the run saved at `path`, as [`Trainer::resume`] does, for a
    /// trainer not stepped yet. The state is the same on every data-parallel rank, so a
    /// run saved by N ranks resumes on any number (each loads the same file).
    pub fn load_checkpoint(&mut self, path: &Path, options: ResumeOptions) -> Result<()> {
        if self.next_step != 0 {
            let other = format!("a trainer that ran {} steps", self.next_step);
            return Err(Error::Incompatible { setting: "load_checkpoint", other, why: "a checkpoint loads into a trainer that has not stepped" });
        }
        let (step, host) = checkpoint::load(path, self.gpu, &self.config, &self.device_tensors(), options)?;
        self.monitor.restore(host.monitor);
        self.recorder.restore(step, host.records, host.in_flight);
        self.next_step = step;
        (self.controller.lr_scale, self.controller.last_lr_drop) = (host.lr_scale, host.last_lr_drop);
        self.evaluation.restore(host.checks);
        Ok(())
    }
}
