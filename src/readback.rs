//! Getting results to the host: blocking reads for tools and tests, and a ring of staging
//! buffers that hands back step k's record a few steps later without the GPU ever
//! waiting on the host.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::norm::NormStats;

pub(crate) fn staging(device: &wgpu::Device, size: u64) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("gradguard readback staging"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Copies `stats` (a `GradNorm`'s stats buffer) to the host, submitting and waiting.
/// Use it outside hot loops; training steps use [`StatsRing`].
pub fn read_stats_blocking(device: &wgpu::Device, queue: &wgpu::Queue, stats: &wgpu::Buffer) -> Result<NormStats> {
    NormStats::from_words(&read_buffer::<u32>(device, queue, stats)?)
}

/// Maps `buffer` for reading and waits for it.
pub(crate) fn map_and_wait(device: &wgpu::Device, buffer: &wgpu::Buffer) -> Result<()> {
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
    let staging = crate::kernels::scoped(device, "allocating a readback buffer", || staging(device, buffer.size()))?;
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
const RECORDED: u8 = 1;
const MAPPING: u8 = 2;
const MAPPED: u8 = 3;
const FAILED: u8 = 4;

/// How long a finished submission's map callback may take to land when another thread
/// is the one running it.
const CALLBACK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

struct Slot {
    buffer: wgpu::Buffer,
    state: Arc<AtomicU8>,
    step: u64,
    submission: Option<wgpu::SubmissionIndex>,
}

impl Slot {
    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// The slot's words; frees it whatever happens, so one bad record never wedges it.
    fn take_words(&mut self) -> Result<Vec<u32>> {
        let words = match self.state() {
            MAPPED => {
                let words = self
                    .buffer
                    .slice(..)
                    .get_mapped_range()
                    .map(|view| bytemuck::pod_collect_to_vec(&view))
                    .map_err(|e| Error::Readback(e.to_string()));
                self.buffer.unmap();
                words
            }
            _ => Err(Error::Readback(format!("mapping the record of step {} failed", self.step))),
        };
        self.state.store(FREE, Ordering::Release);
        self.submission = None;
        words
    }
}

/// A ring of staging buffers for deferred readback of small per-step records (norm
/// stats, a loss, …) that never makes the GPU wait on the host.
///
/// Per step: [`ReadbackRing::encode_copy`] into the step's encoder, submit, then
/// [`ReadbackRing::after_submit`] with the submission index. Records come back through
/// [`ReadbackRing::poll`] (whatever has arrived, never blocking) or
/// [`ReadbackRing::take`] (one step's record, waiting for its submission only if it has
/// not arrived yet, counted in [`ReadbackRing::waits`]). When every slot is in flight a
/// step's copy is skipped and counted in [`ReadbackRing::dropped`] instead of waiting.
pub struct ReadbackRing {
    slots: Vec<Slot>,
    record_bytes: u64,
    dropped: u64,
    waits: u64,
}

impl ReadbackRing {
    /// `depth` slots of `record_bytes` each (a multiple of 4). Fails, typed, when the
    /// device cannot hold them.
    pub fn new(device: &wgpu::Device, record_bytes: u64, depth: usize) -> Result<Self> {
        if record_bytes == 0 || !record_bytes.is_multiple_of(4) {
            return Err(Error::OutOfRange { what: "record bytes", value: record_bytes as f64, expected: "a positive multiple of 4" });
        }
        let buffers = crate::kernels::scoped(device, "allocating readback slots", || {
            (0..depth.max(1)).map(|_| staging(device, record_bytes)).collect::<Vec<_>>()
        })?;
        let slots = buffers
            .into_iter()
            .map(|buffer| Slot { buffer, state: Arc::new(AtomicU8::new(FREE)), step: 0, submission: None })
            .collect();
        Ok(Self { slots, record_bytes, dropped: 0, waits: 0 })
    }

    /// Records copies of `sources` (buffer, bytes from offset 0), laid end to end, as
    /// `step`'s record. Returns false, counting a drop, when no slot is free.
    pub fn encode_copy(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        step: u64,
        sources: &[(&wgpu::Buffer, u64)],
    ) -> Result<bool> {
        let total: u64 = sources.iter().map(|(_, bytes)| bytes).sum();
        if total > self.record_bytes || sources.iter().any(|(b, bytes)| *bytes > b.size() || bytes % 4 != 0) {
            let what = "a record's bytes (whole words, each source at least its copy) against its slot".into();
            return Err(Error::LengthMismatch { what, expected: self.record_bytes, actual: total });
        }
        let Some(slot) = self.slots.iter_mut().find(|s| s.state() == FREE) else {
            self.dropped += 1;
            return Ok(false);
        };
        let mut at = 0;
        for (buffer, bytes) in sources {
            encoder.copy_buffer_to_buffer(buffer, 0, &slot.buffer, at, *bytes);
            at += bytes;
        }
        slot.step = step;
        slot.state.store(RECORDED, Ordering::Release);
        Ok(true)
    }

    /// Starts mapping every record copied in the encoder just submitted as `submission`.
    pub fn after_submit(&mut self, submission: wgpu::SubmissionIndex) {
        for slot in self.slots.iter_mut().filter(|s| s.state() == RECORDED) {
            let state = slot.state.clone();
            state.store(MAPPING, Ordering::Release);
            slot.submission = Some(submission.clone());
            slot.buffer.map_async(wgpu::MapMode::Read, .., move |r| {
                state.store(if r.is_ok() { MAPPED } else { FAILED }, Ordering::Release);
            });
        }
    }

    /// Forgets records copied into an encoder that was dropped instead of submitted.
    pub fn cancel_recorded(&mut self) {
        for slot in self.slots.iter_mut().filter(|s| s.state() == RECORDED) {
            slot.state.store(FREE, Ordering::Release);
        }
    }

    /// Every record that has arrived, oldest first. Never blocks. A record whose mapping
    /// failed frees its slot; it is reported as an error only when no good record came
    /// with it, so none is lost.
    pub fn poll(&mut self, device: &wgpu::Device) -> Result<Vec<(u64, Vec<u32>)>> {
        poll(device, wgpu::PollType::Poll, "polling readbacks")?;
        self.collect()
    }

    /// Waits for every record in flight and returns them (end of a run, tests).
    pub fn drain(&mut self, device: &wgpu::Device) -> Result<Vec<(u64, Vec<u32>)>> {
        poll(device, wgpu::PollType::wait_indefinitely(), "draining readbacks")?;
        self.await_callbacks(device, |_| true)?;
        self.collect()
    }

    fn collect(&mut self) -> Result<Vec<(u64, Vec<u32>)>> {
        let mut ready = Vec::new();
        let mut failed = None;
        for slot in self.slots.iter_mut().filter(|s| matches!(s.state(), MAPPED | FAILED)) {
            let step = slot.step;
            match slot.take_words() {
                Ok(words) => ready.push((step, words)),
                Err(e) => failed = Some(e),
            }
        }
        ready.sort_by_key(|(step, _)| *step);
        match failed {
            Some(e) if ready.is_empty() => Err(e),
            _ => Ok(ready),
        }
    }

    /// `step`'s record, freeing its slot; waits for its submission only if needed.
    pub fn take(&mut self, device: &wgpu::Device, step: u64) -> Result<Vec<u32>> {
        let i = self.arrive(device, step)?;
        self.slots[i].take_words()
    }

    /// `step`'s record, left in its slot for a later [`ReadbackRing::take`] (a checkpoint
    /// saves the records still in flight without acting on them). Its wait is not counted.
    pub fn peek(&mut self, device: &wgpu::Device, step: u64) -> Result<Vec<u32>> {
        let waits = self.waits;
        let i = self.arrive(device, step)?;
        self.waits = waits;
        let slot = &self.slots[i];
        if slot.state() != MAPPED {
            return Err(Error::Readback(format!("mapping the record of step {step} failed")));
        }
        let view = slot.buffer.slice(..).get_mapped_range().map_err(|e| Error::Readback(e.to_string()))?;
        Ok(bytemuck::pod_collect_to_vec(&view))
    }

    /// The slot holding `step`, once its mapping has finished.
    fn arrive(&mut self, device: &wgpu::Device, step: u64) -> Result<usize> {
        let i = self
            .slots
            .iter()
            .position(|s| s.step == step && matches!(s.state(), MAPPING | MAPPED | FAILED))
            .ok_or_else(|| Error::Readback(format!("step {step} was never recorded and submitted")))?;
        poll(device, wgpu::PollType::Poll, "reading a step record")?;
        if self.slots[i].state() == MAPPING {
            self.waits += 1;
            let submission_index = self.slots[i].submission.clone();
            poll(device, wgpu::PollType::Wait { submission_index, timeout: None }, "reading a step record")?;
            self.await_callbacks(device, |slot| slot.step == step)?;
        }
        Ok(i)
    }

    /// After a wait for their submissions: lets the map callbacks of the `chosen` slots
    /// land. A callback runs on whichever thread polls the device, so another thread may
    /// still be running it when this thread's wait returns.
    fn await_callbacks(&self, device: &wgpu::Device, chosen: impl Fn(&Slot) -> bool) -> Result<()> {
        let deadline = std::time::Instant::now() + CALLBACK_PATIENCE;
        while self.slots.iter().any(|slot| chosen(slot) && slot.state() == MAPPING) {
            if std::time::Instant::now() > deadline {
                return Err(Error::Readback("a finished readback's map callback never ran".into()));
            }
            std::thread::yield_now();
            poll(device, wgpu::PollType::Poll, "reading a step record")?;
        }
        Ok(())
    }

    /// Steps whose record was not copied because every slot was in flight.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Reads that had to wait for the device.
    pub fn waits(&self) -> u64 {
        self.waits
    }
}

fn poll(device: &wgpu::Device, how: wgpu::PollType, during: &'static str) -> Result<()> {
    device.poll(how).map(|_| ()).map_err(|e| Error::Device { during, message: e.to_string() })
}

/// [`ReadbackRing`] for a `GradNorm`'s stats: decoded `NormStats` per step.
pub struct StatsRing {
    ring: ReadbackRing,
}

impl StatsRing {
    /// `depth` slots for a stats buffer of `stats_size` bytes ([`crate::GradNorm::stats_size`]).
    pub fn new(device: &wgpu::Device, stats_size: u64, depth: usize) -> Result<Self> {
        Ok(Self { ring: ReadbackRing::new(device, stats_size, depth)? })
    }

    /// Records a copy of `stats` for `step`; false (a counted drop) if no slot is free.
    pub fn encode_copy(&mut self, encoder: &mut wgpu::CommandEncoder, stats: &wgpu::Buffer, step: u64) -> Result<bool> {
        self.ring.encode_copy(encoder, step, &[(stats, stats.size())])
    }

    /// See [`ReadbackRing::after_submit`].
    pub fn after_submit(&mut self, submission: wgpu::SubmissionIndex) {
        self.ring.after_submit(submission)
    }

    /// Every step whose stats have arrived, oldest first. Never blocks.
    pub fn poll(&mut self, device: &wgpu::Device) -> Result<Vec<(u64, NormStats)>> {
        decode_all(self.ring.poll(device)?)
    }

    /// Waits for every step in flight and returns them.
    pub fn drain(&mut self, device: &wgpu::Device) -> Result<Vec<(u64, NormStats)>> {
        decode_all(self.ring.drain(device)?)
    }

    /// Steps whose stats were not copied because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.ring.dropped()
    }
}

fn decode_all(records: Vec<(u64, Vec<u32>)>) -> Result<Vec<(u64, NormStats)>> {
    records.into_iter().map(|(step, words)| Ok((step, NormStats::from_words(&words)?))).collect()
}
