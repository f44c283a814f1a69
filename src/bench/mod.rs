//! Benchmarks shared by `gradguard bench` and `cargo bench`: each kernel against a
//! reference measured in the same run (the copy kernel for memory-bound kernels).

pub mod clip;
pub mod matmul;
pub mod train;

use crate::error::Result;
use crate::gpu::Gpu;

/// One measured kernel.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    /// What was timed, and so its minimum traffic: `copy` (read + write), `norm_l2` (one read),
    /// `clip_scale` (read + write), `clip_grad_norm` (norm then clip; read + write counted).
    pub kernel: String,
    /// f32 elements processed per call.
    pub elements: u64,
    /// Segments the elements were cut into.
    pub segments: u32,
    /// Median over the repetitions.
    pub millis: f64,
    /// The kernel's minimum traffic (see [`BenchResult::kernel`]) over its time.
    pub gbytes_per_s: f64,
    /// `gbytes_per_s` over the copy kernel's, measured in the same run (1 for the copy itself).
    pub ratio_to_copy: f64,
}

/// One run of a benchmark: the adapter, how it was timed, and one entry per measurement
/// ([`BenchResult`] for the memory-bound kernels, [`matmul::MatmulResult`] for GEMM).
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport<R = BenchResult> {
    /// Adapter name.
    pub adapter: String,
    /// wgpu backend.
    pub backend: String,
    /// "timestamp" (GPU timestamp queries) or "wall" (submit-to-idle wall clock).
    pub timing: &'static str,
    /// One entry per measurement.
    pub results: Vec<R>,
}

impl<R> BenchReport<R> {
    /// The report of `results` measured on `gpu` with `timer`.
    pub fn new(gpu: &Gpu, timer: &Timer, results: Vec<R>) -> Self {
        Self {
            adapter: gpu.info.name.clone(),
            backend: format!("{:?}", gpu.info.backend),
            timing: timer.kind(),
            results,
        }
    }
}

/// Times recorded GPU work: timestamp queries when the device has them, else wall clock.
pub struct Timer {
    queries: Option<(wgpu::QuerySet, wgpu::Buffer, f64)>,
}

impl Timer {
    /// A timer for `gpu`: timestamp queries if the device has `TIMESTAMP_QUERY`, else wall clock.
    pub fn new(gpu: &Gpu) -> Self {
        let queries = gpu.device.features().contains(wgpu::Features::TIMESTAMP_QUERY).then(|| {
            let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench timestamps"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (set, resolve, gpu.queue.get_timestamp_period() as f64)
        });
        Self { queries }
    }

    /// `"timestamp"` or `"wall"`: how [`Timer::time`] measures.
    pub fn kind(&self) -> &'static str {
        if self.queries.is_some() { "timestamp" } else { "wall" }
    }

    /// Milliseconds per call of `record`, the median of `reps` passes of `inner` calls each.
    pub fn time(&self, gpu: &Gpu, reps: u32, inner: u32, record: &dyn Fn(&mut wgpu::ComputePass<'_>)) -> Result<f64> {
        self.pass(gpu, inner, record)?; // warms up
        self.median(gpu, reps, inner, record)
    }

    /// [`Timer::time`] with as many repetitions (1 to `max_reps`) as fit in about
    /// `budget_ms`, judged by the warm-up pass: for work whose duration spans orders of
    /// magnitude (a 256³ and a 2048³ product).
    pub fn time_within(
        &self,
        gpu: &Gpu,
        budget_ms: f64,
        max_reps: u32,
        inner: u32,
        record: &dyn Fn(&mut wgpu::ComputePass<'_>),
    ) -> Result<f64> {
        let warm_up = self.pass(gpu, inner, record)? * inner as f64;
        let reps = (budget_ms / warm_up.max(1e-3)).clamp(1.0, max_reps.max(1) as f64) as u32;
        self.median(gpu, reps, inner, record)
    }

    fn median(&self, gpu: &Gpu, reps: u32, inner: u32, record: &dyn Fn(&mut wgpu::ComputePass<'_>)) -> Result<f64> {
        let samples = (0..reps.max(1)).map(|_| self.pass(gpu, inner, record)).collect::<Result<Vec<_>>>()?;
        Ok(median(samples))
    }

    /// Milliseconds per call of each of `records`, measured in turns: one warm-up pass
    /// each, then `reps` rounds of one pass each, and the median of every kernel's
    /// rounds. A drift in the machine's speed (shared hosts drift by ±15 % over minutes)
    /// then hits all of them alike, and the ratios between them hold.
    pub fn time_interleaved(
        &self,
        gpu: &Gpu,
        reps: u32,
        inner: u32,
        records: &[&dyn Fn(&mut wgpu::ComputePass<'_>)],
    ) -> Result<Vec<f64>> {
        for record in records {
            self.pass(gpu, inner, *record)?;
        }
        let mut samples = vec![Vec::new(); records.len()];
        for _ in 0..reps.max(1) {
            for (record, samples) in records.iter().zip(&mut samples) {
                samples.push(self.pass(gpu, inner, *record)?);
            }
        }
        Ok(samples.into_iter().map(median).collect())
    }

    /// Milliseconds per call of `record` in one pass of `inner` calls.
    fn pass(&self, gpu: &Gpu, inner: u32, record: &dyn Fn(&mut wgpu::ComputePass<'_>)) -> Result<f64> {
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let timestamp_writes = self.queries.as_ref().map(|(set, _, _)| wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            });
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("bench"), timestamp_writes });
            for _ in 0..inner {
                record(&mut pass);
            }
        }
        if let Some((set, resolve, _)) = &self.queries {
            encoder.resolve_query_set(set, 0..2, resolve, 0);
        }
        let start = std::time::Instant::now();
        gpu.queue.submit([encoder.finish()]);
        gpu.wait()?;
        let wall = start.elapsed().as_secs_f64() * 1e3;
        let ms = match &self.queries {
            None => wall,
            Some((_, resolve, period)) => {
                let ticks = crate::readback::read_u64s(&gpu.device, &gpu.queue, resolve)?;
                ticks[1].saturating_sub(ticks[0]) as f64 * period / 1e6
            }
        };
        Ok(ms / inner as f64)
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

impl BenchReport<BenchResult> {
    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut out = format!("{} ({}, {} timing)\n", self.adapter, self.backend, self.timing);
        out += &format!("{:<16} {:>12} {:>9} {:>10} {:>10} {:>8}\n", "kernel", "elements", "segments", "ms", "GB/s", "vs copy");
        for r in &self.results {
            out += &format!(
                "{:<16} {:>12} {:>9} {:>10.3} {:>10.2} {:>8.2}\n",
                r.kernel, r.elements, r.segments, r.millis, r.gbytes_per_s, r.ratio_to_copy
            );
        }
        out
    }
}
