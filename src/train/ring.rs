//! Deferred readback of each step's record (the norm stats and the loss) through a ring
//! of staging buffers. The trainer reads step `k`'s record `LAG` steps later, when it has
//! normally long arrived; if it has not, it waits for that one submission only.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

const FREE: u8 = 0;
const MAPPING: u8 = 1;
const MAPPED: u8 = 2;
const FAILED: u8 = 3;

struct Slot {
    buffer: wgpu::Buffer,
    state: Arc<AtomicU8>,
    step: u64,
    submission: Option<wgpu::SubmissionIndex>,
}

/// Staging slots for `[NormStats words…, loss, norm after clipping]` records.
pub(crate) struct RecordRing {
    slots: Vec<Slot>,
    stats_size: u64,
    /// Reads that had to wait for the device.
    pub waits: u64,
}

impl RecordRing {
    pub fn new(device: &wgpu::Device, stats_size: u64, depth: usize) -> Self {
        let slots = (0..depth)
            .map(|_| Slot {
                buffer: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("gradguard step record"),
                    size: stats_size + 8,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                state: Arc::new(AtomicU8::new(FREE)),
                step: 0,
                submission: None,
            })
            .collect();
        Self { slots, stats_size, waits: 0 }
    }

    /// Records the copies of step `step`'s stats, loss and applied norm (the first word of
    /// `applied`). The slot must have been read.
    pub fn encode_copy(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        step: u64,
        stats: &wgpu::Buffer,
        loss: &wgpu::Buffer,
        applied: &wgpu::Buffer,
    ) -> Result<()> {
        let n = self.slots.len() as u64;
        let slot = &mut self.slots[(step % n) as usize];
        if slot.state.load(Ordering::Acquire) != FREE {
            return Err(Error::Readback(format!("the record slot of step {step} still holds step {}", slot.step)));
        }
        encoder.copy_buffer_to_buffer(stats, 0, &slot.buffer, 0, self.stats_size);
        encoder.copy_buffer_to_buffer(loss, 0, &slot.buffer, self.stats_size, 4);
        encoder.copy_buffer_to_buffer(applied, 0, &slot.buffer, self.stats_size + 4, 4);
        slot.step = step;
        Ok(())
    }

    /// Starts mapping step `step`'s slot, submitted as `submission`.
    pub fn after_submit(&mut self, step: u64, submission: wgpu::SubmissionIndex) {
        let n = self.slots.len() as u64;
        let slot = &mut self.slots[(step % n) as usize];
        let state = slot.state.clone();
        state.store(MAPPING, Ordering::Release);
        slot.submission = Some(submission);
        slot.buffer.map_async(wgpu::MapMode::Read, .., move |r| {
            state.store(if r.is_ok() { MAPPED } else { FAILED }, Ordering::Release);
        });
    }

    /// Step `step`'s record, waiting for its submission only if it has not arrived yet.
    /// Returns the `NormStats` words, the loss and the applied norm.
    pub fn take(&mut self, device: &wgpu::Device, step: u64) -> Result<(Vec<u32>, f32, f32)> {
        let record = self.read(device, step, true);
        let n = self.slots.len() as u64;
        let slot = &mut self.slots[(step % n) as usize];
        if slot.step != step {
            return record;
        }
        if slot.state.load(Ordering::Acquire) == MAPPED {
            slot.buffer.unmap();
        }
        slot.state.store(FREE, Ordering::Release);
        record
    }

    /// Step `step`'s record, left in its slot for [`RecordRing::take`]: a checkpoint saves
    /// the records still in flight without acting on them. Its wait is not counted.
    pub fn peek(&mut self, device: &wgpu::Device, step: u64) -> Result<(Vec<u32>, f32, f32)> {
        self.read(device, step, false)
    }

    fn read(&mut self, device: &wgpu::Device, step: u64, count_wait: bool) -> Result<(Vec<u32>, f32, f32)> {
        let n = self.slots.len() as u64;
        let slot = &self.slots[(step % n) as usize];
        if slot.step != step || slot.state.load(Ordering::Acquire) == FREE {
            return Err(Error::Readback(format!("step {step} was never recorded")));
        }
        let device_error = |e: wgpu::PollError| Error::Device { during: "reading a step record", message: e.to_string() };
        device.poll(wgpu::PollType::Poll).map_err(device_error)?;
        if slot.state.load(Ordering::Acquire) == MAPPING {
            self.waits += count_wait as u64;
            device
                .poll(wgpu::PollType::Wait { submission_index: slot.submission.clone(), timeout: None })
                .map_err(device_error)?;
        }
        if slot.state.load(Ordering::Acquire) != MAPPED {
            return Err(Error::Readback(format!("mapping the record of step {step} failed")));
        }
        let words: Vec<u32> = {
            let view = slot.buffer.slice(..).get_mapped_range().map_err(|e| Error::Readback(e.to_string()))?;
            bytemuck::pod_collect_to_vec(&view)
        };
        let (stats, tail) = words.split_at(words.len() - 2);
        Ok((stats.to_vec(), f32::from_bits(tail[0]), f32::from_bits(tail[1])))
    }
}
