//! Getting `NormStats` to the host: a blocking read, or a ring of staging buffers that
//! hands back step k's stats a few steps later without ever waiting on the GPU.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::norm::NormStats;

fn staging(device: &wgpu::Device, size: u64) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("gradguard stats staging"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

fn decode(buffer: &wgpu::Buffer) -> Result<NormStats> {
    let words: Vec<u32> = {
        let view = buffer.slice(..).get_mapped_range().map_err(|e| Error::Readback(e.to_string()))?;
        bytemuck::cast_slice(&view).to_vec()
    };
    buffer.unmap();
    NormStats::from_words(&words)
}

/// Copies `stats` (a `GradNorm`'s stats buffer) to the host, submitting and waiting.
/// Use it outside hot loops; training steps use [`StatsRing`].
pub fn read_stats_blocking(device: &wgpu::Device, queue: &wgpu::Queue, stats: &wgpu::Buffer) -> Result<NormStats> {
    let staging = staging(device, stats.size());
    let mut encoder = device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(stats, 0, &staging, 0, stats.size());
    queue.submit([encoder.finish()]);
    map_and_wait(device, &staging)?;
    decode(&staging)
}

/// Maps `buffer` for reading and waits for it.
fn map_and_wait(device: &wgpu::Device, buffer: &wgpu::Buffer) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    buffer.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Device { during: "waiting for a readback", message: e.to_string() })?;
    rx.recv()
        .map_err(|_| Error::Readback("the map callback never ran".into()))?
        .map_err(|e| Error::Readback(e.to_string()))
}

/// Reads a whole buffer back as `T`s (it needs COPY_SRC). Submits and waits: for tests,
/// tools and checkpoints, never inside a training step.
pub fn read_buffer<T: bytemuck::Pod>(device: &wgpu::Device, queue: &wgpu::Queue, buffer: &wgpu::Buffer) -> Result<Vec<T>> {
    let staging = staging(device, buffer.size());
    let mut encoder = device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
    queue.submit([encoder.finish()]);
    map_and_wait(device, &staging)?;
    let values = bytemuck::pod_collect_to_vec(&staging.slice(..).get_mapped_range().map_err(|e| Error::Readback(e.to_string()))?);
    staging.unmap();
    Ok(values)
}

/// [`read_buffer`] for f32 data.
pub fn read_f32s(device: &wgpu::Device, queue: &wgpu::Queue, buffer: &wgpu::Buffer) -> Result<Vec<f32>> {
    read_buffer(device, queue, buffer)
}

/// [`read_buffer`] for u64 data (timestamps).
pub fn read_u64s(device: &wgpu::Device, queue: &wgpu::Queue, buffer: &wgpu::Buffer) -> Result<Vec<u64>> {
    read_buffer(device, queue, buffer)
}

const FREE: u8 = 0;
const COPIED: u8 = 1;
const MAPPING: u8 = 2;
const MAPPED: u8 = 3;
const FAILED: u8 = 4;

struct Slot {
    buffer: wgpu::Buffer,
    state: Arc<AtomicU8>,
    step: u64,
}

/// A ring of staging buffers for deferred `NormStats` readback.
///
/// Per step: [`StatsRing::encode_copy`] into the step's encoder, submit, then
/// [`StatsRing::after_submit`]. [`StatsRing::poll`] returns whatever has arrived, in step
/// order, without blocking. When every slot is still in flight, that step's copy is
/// skipped and counted in [`StatsRing::dropped`] rather than waiting.
pub struct StatsRing {
    slots: Vec<Slot>,
    next: usize,
    pending: Option<usize>,
    dropped: u64,
}

impl StatsRing {
    pub fn new(device: &wgpu::Device, stats_size: u64, depth: usize) -> Self {
        let slots = (0..depth.max(1))
            .map(|_| Slot { buffer: staging(device, stats_size), state: Arc::new(AtomicU8::new(FREE)), step: 0 })
            .collect();
        Self { slots, next: 0, pending: None, dropped: 0 }
    }

    /// Records a copy of `stats` for `step`; returns false (and counts a drop) if no slot is free.
    pub fn encode_copy(&mut self, encoder: &mut wgpu::CommandEncoder, stats: &wgpu::Buffer, step: u64) -> bool {
        let slot = &mut self.slots[self.next];
        if slot.state.load(Ordering::Acquire) != FREE {
            self.dropped += 1;
            return false;
        }
        encoder.copy_buffer_to_buffer(stats, 0, &slot.buffer, 0, stats.size());
        slot.state.store(COPIED, Ordering::Release);
        slot.step = step;
        self.pending = Some(self.next);
        self.next = (self.next + 1) % self.slots.len();
        true
    }

    /// Starts mapping the slot copied in the last submitted encoder.
    pub fn after_submit(&mut self) {
        if let Some(i) = self.pending.take() {
            let state = self.slots[i].state.clone();
            state.store(MAPPING, Ordering::Release);
            self.slots[i].buffer.map_async(wgpu::MapMode::Read, .., move |r| {
                state.store(if r.is_ok() { MAPPED } else { FAILED }, Ordering::Release);
            });
        }
    }

    /// Every step whose stats have arrived, oldest first. Never blocks.
    pub fn poll(&mut self, device: &wgpu::Device) -> Result<Vec<(u64, NormStats)>> {
        device
            .poll(wgpu::PollType::Poll)
            .map_err(|e| Error::Device { during: "polling readbacks", message: e.to_string() })?;
        self.collect()
    }

    /// Waits for every slot in flight and returns them (end of training, tests).
    pub fn drain(&mut self, device: &wgpu::Device) -> Result<Vec<(u64, NormStats)>> {
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device { during: "draining readbacks", message: e.to_string() })?;
        self.collect()
    }

    fn collect(&mut self) -> Result<Vec<(u64, NormStats)>> {
        let mut ready = Vec::new();
        for slot in &mut self.slots {
            match slot.state.load(Ordering::Acquire) {
                MAPPED => {
                    let stats = decode(&slot.buffer)?;
                    slot.state.store(FREE, Ordering::Release);
                    ready.push((slot.step, stats));
                }
                FAILED => {
                    slot.state.store(FREE, Ordering::Release);
                    return Err(Error::Readback(format!("mapping the stats of step {} failed", slot.step)));
                }
                _ => {}
            }
        }
        ready.sort_by_key(|(step, _)| *step);
        Ok(ready)
    }

    /// Steps whose stats were not copied because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}
