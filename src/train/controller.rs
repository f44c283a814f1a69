//! The controller: reads each step's record as the monitor judged it and responds as the
//! run's [`Responses`] say, at the step the record is read (so two runs with the same seed
//! respond alike): cuts the learning rate on a spike, stops after an explosion, and reports
//! the step at which the device halted under `NonFinitePolicy::Error`.

use super::config::{LrDrop, Responses};
use crate::error::Error;
use crate::monitor::Explosion;
use crate::norm::{NonFinitePolicy, NormStats};

/// The responses so far, and why the run stopped, if it did.
pub(super) struct Controller {
    responses: Responses,
    on_nonfinite: NonFinitePolicy,
    /// The factor the learning-rate cuts have left.
    pub(super) lr_scale: f32,
    /// The step whose record last cut the learning rate.
    pub(super) last_lr_drop: Option<u64>,
    stopped: Option<String>,
}

impl Controller {
    pub(super) fn new(responses: Responses, on_nonfinite: NonFinitePolicy) -> Self {
        Self { responses, on_nonfinite, lr_scale: 1.0, last_lr_drop: None, stopped: None }
    }

    /// Why the run stopped, if it did.
    pub(super) fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Stops the run for `why` (the first reason stays).
    pub(super) fn stop(&mut self, why: String) {
        self.stopped.get_or_insert(why);
    }

    /// Responds to step `j`'s `events` and `stats`, read when `submitted` steps were
    /// submitted; `tensor` names a segment.
    pub(super) fn respond(&mut self, j: u64, submitted: u64, events: &[Explosion], stats: &NormStats, tensor: impl Fn(u32) -> String) {
        if let Some(drop) = self.responses.lr_drop {
            let cooled = self.last_lr_drop.is_none_or(|last| j >= last + drop.cooldown);
            if cooled && events.iter().any(|e| LrDrop::reacts_to(e.detector)) && self.lr_scale > drop.min_scale {
                self.lr_scale = (self.lr_scale * drop.factor).max(drop.min_scale);
                self.last_lr_drop = Some(j);
            }
        }
        if self.stopped.is_some() {
            return;
        }
        if let Some(e) = events.iter().find(|e| self.responses.stop_on_explosion && e.detector.is_explosion()) {
            self.stopped = Some(format!("stopped at step {submitted} after an explosion: {e}"));
        } else if stats.skipped && self.on_nonfinite == NonFinitePolicy::Error {
            // A skipped step has non-finite gradients; a tampered checkpoint's record may say
            // otherwise, and is reported as it is.
            let why = match stats.check_finite() {
                // Named as the events and checkpoints name it, not by segment index.
                Err(Error::NonFinite { segment, nan, inf }) => {
                    format!("non-finite gradient: {nan} NaN and {inf} inf elements, first in {}", tensor(segment))
                }
                Err(e) => e.to_string(),
                Ok(()) => "skipped with finite gradients (an inconsistent record)".into(),
            };
            let after = submitted - j - 1;
            self.stopped = Some(format!("stopped at step {j}: {why} (the device halted there: the {after} steps submitted after it were skipped)"));
        }
    }
}
