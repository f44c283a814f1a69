//! Data-parallel replicas of one run: each rank trains on its share of every global batch,
//! and once per step, between the backward and the norm, one collective sums every rank's
//! gradients and loss, each weighted by its share of the batch's rows, staged through the
//! host (wgpu has no path between devices of different processes). Every rank then holds
//! the gradient and the mean loss of the whole global batch, and its norm, clip, skip
//! decision and update are those of a single process training on that batch.
//!
//! A batch of B rows over N ranks: the first B mod N ranks take ⌈B/N⌉ consecutive rows of
//! it, the others ⌊B/N⌋, and rank r's gradient (the mean over its rows) is weighted by
//! rows_r / B, so the sum is the mean over all B rows whether or not N divides B.

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::collective::Collective;
use crate::error::{Error, Result};
use crate::readback::{map_and_wait, staging};

/// What the collectives of the steps so far moved and cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct ReduceCounters {
    /// Ranks in the group.
    pub ranks: usize,
    /// Bytes each rank contributes to one step's sum (the gradients, the loss, one word
    /// saying whether a rank was asked to stop).
    pub bytes_per_step: u64,
    /// Steps reduced.
    pub steps: u64,
    /// Seconds spent waiting for the device to finish the backward and copying the
    /// gradients to the host (and back).
    pub staging_seconds: f64,
    /// Seconds spent in the collective itself.
    pub reduce_seconds: f64,
}

/// One rank of a data-parallel group, with its staging buffer and host scratch.
pub struct Replicas<'c> {
    collective: &'c dyn Collective,
    rows: Range<usize>,
    share: f32,
    staging: wgpu::Buffer,
    grad_len: usize,
    send: Vec<f32>,
    recv: Vec<f32>,
    counters: ReduceCounters,
    staging_time: Duration,
    reduce_time: Duration,
}

/// Rank `rank`'s rows of a batch of `batch` rows split over `ranks`.
pub fn shard(batch: usize, ranks: usize, rank: usize) -> Range<usize> {
    let (q, rem) = (batch / ranks, batch % ranks);
    let start = rank * q + rank.min(rem);
    start..start + q + (rank < rem) as usize
}

impl<'c> Replicas<'c> {
    /// This rank's share of batches of `batch` rows, staging `grad_len` gradients.
    /// `Error::OutOfRange` when the batch has fewer rows than there are ranks.
    pub fn new(device: &wgpu::Device, collective: &'c dyn Collective, batch: usize, grad_len: usize) -> Result<Self> {
        let ranks = collective.size();
        if batch < ranks {
            return Err(Error::OutOfRange {
                what: "the batch size",
                value: batch as f64,
                expected: "at least the number of ranks (each trains on ≥ 1 row of every batch)",
            });
        }
        let rows = shard(batch, ranks, collective.rank());
        let words = grad_len + 2;
        let staging = crate::kernels::scoped(device, "allocating the gradient staging buffer", || staging(device, 4 * (grad_len as u64 + 1)))?;
        Ok(Self {
            collective,
            share: rows.len() as f32 / batch as f32,
            rows,
            staging,
            grad_len,
            send: vec![0.0; words],
            recv: vec![0.0; words],
            counters: ReduceCounters { ranks, bytes_per_step: 4 * words as u64, ..ReduceCounters::default() },
            staging_time: Duration::ZERO,
            reduce_time: Duration::ZERO,
        })
    }

    /// This rank's rows of each global batch (indices into it).
    pub fn rows(&self) -> Range<usize> {
        self.rows.clone()
    }

    /// This rank and the group.
    pub fn collective(&self) -> &'c dyn Collective {
        self.collective
    }

    /// What the collectives so far moved and cost.
    pub fn counters(&self) -> ReduceCounters {
        ReduceCounters { staging_seconds: self.staging_time.as_secs_f64(), reduce_seconds: self.reduce_time.as_secs_f64(), ..self.counters }
    }

    /// Records the copy of this rank's gradients and loss to the staging buffer, at the end
    /// of the step's first submission.
    pub fn encode_stage(&self, encoder: &mut wgpu::CommandEncoder, grads: &wgpu::Buffer, loss: &wgpu::Buffer) {
        let grad_bytes = 4 * self.grad_len as u64;
        encoder.copy_buffer_to_buffer(grads, 0, &self.staging, 0, grad_bytes);
        encoder.copy_buffer_to_buffer(loss, 0, &self.staging, grad_bytes, 4);
    }

    /// After the first submission: waits for it, sums the weighted gradients and loss of
    /// every rank, and queues them over `grads` and `loss` for the next submission. `stop` is
    /// this rank's stop request (a signal number, or 0); returns the group's (non-zero when
    /// any rank was asked to stop: every rank then stops after the same step).
    pub fn reduce(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, grads: &wgpu::Buffer, loss: &wgpu::Buffer, stop: usize) -> Result<usize> {
        let t0 = Instant::now();
        map_and_wait(device, &self.staging)?;
        {
            let view = self.staging.slice(..).get_mapped_range().map_err(|e| Error::Readback(e.to_string()))?;
            let local: &[f32] = bytemuck::cast_slice(&view);
            for (s, &g) in self.send.iter_mut().zip(local) {
                *s = g * self.share;
            }
        }
        self.staging.unmap();
        *self.send.last_mut().expect("never empty") = stop as f32;
        let t1 = Instant::now();
        self.collective.sum_f32(&self.send, &mut self.recv)?;
        let t2 = Instant::now();
        queue.write_buffer(grads, 0, bytemuck::cast_slice(&self.recv[..self.grad_len]));
        queue.write_buffer(loss, 0, bytemuck::cast_slice(&self.recv[self.grad_len..self.grad_len + 1]));
        self.staging_time += (t1 - t0) + t2.elapsed();
        self.reduce_time += t2 - t1;
        self.counters.steps += 1;
        let group = self.recv[self.grad_len + 1];
        Ok(match group {
            0.0 => 0,
            // Ours where we were asked; else another rank's (or their sum: still non-zero).
            _ if stop != 0 => stop,
            g => g as usize,
        })
    }
}
