//! The step recorder: each step's record (the norm's stats, the loss, the norm the optimizer
//! applied, the forward watch's words) is copied into a readback ring in the step's own
//! encoder and read `LAG` steps later, so that monitoring never stalls the queue.

use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::norm::GradNorm;
use crate::readback::ReadbackRing;

use super::checkpoint::InFlight;
use super::clipping::Clipping;
use super::{StepRecord, LAG};

/// The words of the forward watch's `NormStats` a step record carries (through the
/// first non-finite segment, word 6).
const FORWARD_WORDS: usize = 7;

/// The records of the submitted steps: those in the ring, those a resumed run had not
/// read yet, and those read.
pub(super) struct StepRecorder {
    /// Each step's `[NormStats words…, loss, norm after clipping, forward words…]`.
    ring: ReadbackRing,
    /// Whether records carry the forward watch's words.
    forward: bool,
    /// The learning rate each submitted step still in the ring ran with.
    pending_lr: VecDeque<f32>,
    /// Records of steps before a resume that the stopped run had not read yet; they are
    /// read before the ring, each at the step it would have been.
    preloaded: VecDeque<InFlight>,
    /// The first step whose record the host has not read.
    next_read: u64,
    records: Vec<StepRecord>,
}

impl StepRecorder {
    /// A ring sized for `clipping`'s record (and the forward watch's, where there is one).
    pub(super) fn new(device: &wgpu::Device, clipping: &Clipping, loss: &wgpu::Buffer, forward: Option<&GradNorm>) -> Result<Self> {
        let bytes = sources(clipping, loss, forward).iter().map(|(_, size)| size).sum::<u64>();
        // LAG + 1 slots: steps k - LAG … k are in flight when step k's copy is recorded.
        let ring = ReadbackRing::new(device, bytes, LAG as usize + 1)?;
        let (pending_lr, preloaded) = (VecDeque::new(), VecDeque::new());
        Ok(Self { ring, forward: forward.is_some(), pending_lr, preloaded, next_read: 0, records: Vec::new() })
    }

    /// Records step `k`'s copy into its encoder.
    pub(super) fn encode(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        k: u64,
        clipping: &Clipping,
        loss: &wgpu::Buffer,
        forward: Option<&GradNorm>,
    ) -> Result<()> {
        if !self.ring.encode_copy(encoder, k, &sources(clipping, loss, forward))? {
            // Never with LAG + 1 slots and every record read at its step.
            return Err(Error::Readback(format!("no free record slot for step {k}")));
        }
        Ok(())
    }

    /// After the step's submission: it ran at learning rate `lr`.
    pub(super) fn submitted(&mut self, submission: wgpu::SubmissionIndex, lr: f32) {
        self.ring.after_submit(submission);
        self.pending_lr.push_back(lr);
    }

    /// The first step whose record has not been read.
    pub(super) fn next_read(&self) -> u64 {
        self.next_read
    }

    /// The record of step [`StepRecorder::next_read`], unread until [`StepRecorder::push`].
    pub(super) fn take(&mut self, device: &wgpu::Device, clipping: &Clipping, fallback_lr: f32) -> Result<InFlight> {
        let j = self.next_read;
        if self.preloaded.front().is_some_and(|r| r.step == j) {
            return Ok(self.preloaded.pop_front().expect("just seen"));
        }
        let words = self.ring.take(device, j)?;
        let lr = self.pending_lr.pop_front().unwrap_or(fallback_lr);
        split(j, words, lr, self.forward, clipping)
    }

    /// Step `record.step`'s record, as the host saw it; the next one is read next.
    pub(super) fn push(&mut self, record: StepRecord) {
        self.next_read = record.step + 1;
        self.records.push(record);
    }

    /// Every record read so far, in step order.
    pub(super) fn records(&self) -> &[StepRecord] {
        &self.records
    }

    /// Record reads that had to wait for the device.
    pub(super) fn waits(&self) -> u64 {
        self.ring.waits()
    }

    /// The records of every step submitted before `next_step` and not read yet, left
    /// unread (for a checkpoint: a resumed run reads them at the steps this one would).
    pub(super) fn in_flight(&mut self, device: &wgpu::Device, next_step: u64, clipping: &Clipping) -> Result<Vec<InFlight>> {
        let mut out: Vec<InFlight> = self.preloaded.iter().cloned().collect();
        let first_in_ring = self.next_read + self.preloaded.len() as u64;
        for (j, lr) in (first_in_ring..next_step).zip(self.pending_lr.clone()) {
            let words = self.ring.peek(device, j)?;
            out.push(split(j, words, lr, self.forward, clipping)?);
        }
        Ok(out)
    }

    /// Continues a checkpointed run: its records read, and those it had in flight, read
    /// next from `step` on.
    pub(super) fn restore(&mut self, step: u64, records: Vec<StepRecord>, in_flight: Vec<InFlight>) {
        self.next_read = in_flight.first().map_or(step, |r| r.step);
        self.preloaded = in_flight.into();
        self.records = records;
    }
}

/// A ring record split into its parts (`forward`: it ends with the forward watch's words).
fn split(step: u64, mut words: Vec<u32>, lr: f32, forward: bool, clipping: &Clipping) -> Result<InFlight> {
    let forward = match forward {
        true => {
            if words.len() < FORWARD_WORDS {
                return Err(Error::Readback(format!("a step record of {} words has no forward watch", words.len())));
            }
            // The non-finite count (word 3) and the first output holding one (word 6).
            let tail = words.split_off(words.len() - FORWARD_WORDS);
            Some((tail[3], tail[6]))
        }
        false => None,
    };
    let (words, loss, applied_norm) = clipping.split_record(words)?;
    Ok(InFlight { step, words, loss, applied_norm, lr, forward })
}

/// What each step's record copies: the clipping's part, then the forward watch's words.
fn sources<'a>(clipping: &'a Clipping, loss: &'a wgpu::Buffer, forward: Option<&'a GradNorm>) -> Vec<(&'a wgpu::Buffer, u64)> {
    let mut sources = clipping.record_sources(loss);
    if let Some(watch) = forward {
        sources.push((watch.stats_buffer(), FORWARD_WORDS as u64 * 4));
    }
    sources
}
