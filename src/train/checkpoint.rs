//! Checkpoints in safetensors. The tensors are every buffer that carries state from one
//! step to the next (parameters, optimizer state and step counters, batch-norm running
//! statistics, the adaptive clip's state); the metadata holds the configuration, the step and the host's state (the
//! monitor, the learning-rate scale, the records, and the records of
//! steps the device finished but the host had not read yet). Host floats are saved as
//! their bit patterns: JSON cannot hold NaN, and a resumed run must continue bit for bit.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::{Check, StepRecord, TrainConfig};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::monitor::{Detector, Ema, Explosion, MonitorState};
use crate::readback::read_buffer;

/// Written into every checkpoint; a reader refuses any other.
const FORMAT: &str = "gradguard-checkpoint-v3";

/// The file `gradguard train --checkpoint-every` writes into `--out`.
pub const FILE_NAME: &str = "checkpoint.safetensors";

/// A device buffer whose contents a checkpoint saves and restores.
pub(super) struct DeviceTensor<'a> {
    pub name: String,
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of the tensor in the buffer (packed tensors share one).
    pub offset: u64,
    pub shape: Vec<usize>,
    /// F32 or U32: both 4 bytes an element.
    pub dtype: Dtype,
}

/// A step the device finished whose record the host had not read yet.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct InFlight {
    pub step: u64,
    pub words: Vec<u32>,
    pub loss: f32,
    pub applied_norm: f32,
    pub lr: f32,
}

/// The host's side of a run.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct HostState {
    pub lr_scale: f32,
    pub monitor: MonitorState,
    pub records: Vec<StepRecord>,
    pub checks: Vec<Check>,
    pub in_flight: Vec<InFlight>,
    pub stopped: Option<String>,
}

/// What `gradguard` can tell about a checkpoint file without a device.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointInfo {
    /// Steps completed: a resumed run continues with this step.
    pub step: u64,
    /// The configuration the checkpoint was written by.
    pub config: TrainConfig,
}

fn refuse(path: &Path, reason: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads the device tensors and writes the checkpoint atomically (a temporary file, synced,
/// then renamed): a crash leaves the previous checkpoint intact.
pub(super) fn save(path: &Path, gpu: &Gpu, config: &TrainConfig, step: u64, tensors: &[DeviceTensor], host: &HostState) -> Result<()> {
    // Each buffer read once, however many tensors it packs.
    let mut read: Vec<(&wgpu::Buffer, Vec<u8>)> = Vec::new();
    let mut bytes = Vec::with_capacity(tensors.len());
    for t in tensors {
        if !read.iter().any(|(b, _)| *b == t.buffer) {
            read.push((t.buffer, read_buffer(&gpu.device, &gpu.queue, t.buffer)?));
        }
        let data = &read.iter().find(|(b, _)| *b == t.buffer).expect("just read").1;
        let start = t.offset as usize;
        bytes.push(data[start..start + 4 * t.shape.iter().product::<usize>()].to_vec());
    }
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| Ok((t.name.clone(), TensorView::new(t.dtype, t.shape.clone(), b).map_err(|e| refuse(path, e.to_string()))?)))
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("step".to_string(), step.to_string()),
        ("config".to_string(), to_json(path, config)?),
        ("host".to_string(), to_json(path, &SavedHost::from(host))?),
    ]);
    let file = safetensors::serialize(views, Some(metadata)).map_err(|e| refuse(path, e.to_string()))?;
    super::output::write_synced(path, &file).map_err(|e| refuse(path, format!("writing failed: {e}")))
}

fn to_json(path: &Path, value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| refuse(path, e.to_string()))
}

/// A checkpoint file read and checked against its own format (not yet against a run).
struct Parsed<'a> {
    tensors: SafeTensors<'a>,
    metadata: HashMap<String, String>,
    step: u64,
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<Parsed<'a>> {
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| refuse(path, format!("not a readable safetensors file ({e})")))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| refuse(path, e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let field = |key: &str| metadata.get(key).ok_or_else(|| refuse(path, format!("no `{key}` in its metadata: not a gradguard checkpoint")));
    if field("format")? != FORMAT {
        return Err(refuse(path, format!("format `{}`, expected `{FORMAT}`", field("format")?)));
    }
    let step = field("step")?.parse().map_err(|_| refuse(path, "its step is not a number"))?;
    field("config")?;
    field("host")?;
    Ok(Parsed { tensors, metadata, step })
}

/// Reads `path` and checks that it is a whole gradguard checkpoint.
pub fn read_info(path: &Path) -> Result<CheckpointInfo> {
    let bytes = read_file(path, declared_size(path)?)?;
    let parsed = parse(path, &bytes)?;
    let config = serde_json::from_str(&parsed.metadata["config"]).map_err(|e| refuse(path, format!("its configuration: {e}")))?;
    Ok(CheckpointInfo { step: parsed.step, config })
}

/// The file, read up to `limit` bytes: a checkpoint larger than that is none of this run's
/// (and `/dev/zero` ends there instead of filling memory).
fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| refuse(path, format!("cannot be read: {e}")))?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| refuse(path, format!("cannot be read: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(refuse(path, format!("it is larger than the {limit} bytes a checkpoint of this run can take")));
    }
    Ok(bytes)
}

/// The most bytes a checkpoint of `config` with `tensors` can take: the tensors, and a
/// header of the configuration and up to a step record a configured step.
fn size_limit(config: &TrainConfig, tensors: &[DeviceTensor]) -> u64 {
    let data: u64 = tensors.iter().map(|t| 4 * t.shape.iter().product::<usize>() as u64).sum();
    data + (16 << 20) + 4096 * config.steps
}

/// The size a safetensors file declares in its header (length, JSON, the tensors' data),
/// read without the data: what [`read_file`] may read of it.
fn declared_size(path: &Path) -> Result<u64> {
    use std::io::Read as _;
    let bad = |why: &str| refuse(path, why.to_string());
    let mut file = std::fs::File::open(path).map_err(|e| refuse(path, format!("cannot be read: {e}")))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| bad("too short to be a checkpoint"))?;
    let n = u64::from_le_bytes(len);
    // safetensors' own bound on the header.
    if n == 0 || n > 100 << 20 {
        return Err(bad("its header length is not that of a checkpoint"));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(|_| bad("its header is cut short"))?;
    let header: serde_json::Value = serde_json::from_slice(&header).map_err(|e| refuse(path, format!("its header: {e}")))?;
    let data = header
        .as_object()
        .ok_or_else(|| bad("its header is not a table of tensors"))?
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(_, t)| t["data_offsets"][1].as_u64())
        .max()
        .unwrap_or(0);
    Ok(8 + n + data)
}

/// Checks `path` against `config` and `tensors` (every name, dtype and shape) before
/// touching the device, then writes the tensors into their buffers. Returns the step and
/// the host state to continue from.
pub(super) fn load(path: &Path, gpu: &Gpu, config: &TrainConfig, tensors: &[DeviceTensor]) -> Result<(u64, HostState)> {
    let bytes = read_file(path, declared_size(path)?.min(size_limit(config, tensors)))?;
    let parsed = parse(path, &bytes)?;
    check_config(path, &parsed.metadata["config"], config)?;
    if parsed.step > config.steps {
        return Err(refuse(path, format!("it is at step {}, past --steps {}: ask for more steps", parsed.step, config.steps)));
    }
    let saved: SavedHost =
        serde_json::from_str(&parsed.metadata["host"]).map_err(|e| refuse(path, format!("its host state: {e}")))?;
    let host = HostState::from(saved);
    let read_to = host.in_flight.first().map_or(parsed.step, |r| r.step);
    let consecutive = host.records.iter().map(|r| r.step).eq(0..read_to)
        && host.in_flight.iter().map(|r| r.step).eq(read_to..parsed.step);
    if !consecutive {
        return Err(refuse(path, "its step records do not match its step"));
    }
    let mut views = Vec::with_capacity(tensors.len());
    for t in tensors {
        let view = parsed.tensors.tensor(&t.name).map_err(|_| refuse(path, format!("no tensor `{}`", t.name)))?;
        if view.dtype() != t.dtype || view.shape() != t.shape.as_slice() {
            return Err(refuse(
                path,
                format!("tensor `{}` is {:?} {:?}, this run needs {:?} {:?}", t.name, view.dtype(), view.shape(), t.dtype, t.shape),
            ));
        }
        views.push(view);
    }
    if parsed.tensors.len() != tensors.len() {
        return Err(refuse(path, format!("{} tensors, this run has {}", parsed.tensors.len(), tensors.len())));
    }
    for (t, view) in tensors.iter().zip(&views) {
        gpu.queue.write_buffer(t.buffer, t.offset, view.data());
    }
    Ok((parsed.step, host))
}

/// Every field of the configuration must match except `steps` (a run may be extended).
fn check_config(path: &Path, saved: &str, config: &TrainConfig) -> Result<()> {
    let saved: serde_json::Value = serde_json::from_str(saved).map_err(|e| refuse(path, format!("its configuration: {e}")))?;
    // Through text, as the checkpoint went: `to_value` would widen f32s (0.3 → 0.30000001…).
    let current: serde_json::Value = serde_json::from_str(&to_json(path, config)?).map_err(|e| refuse(path, e.to_string()))?;
    let (Some(saved), Some(current)) = (saved.as_object(), current.as_object()) else {
        return Err(refuse(path, "its configuration is not an object"));
    };
    let differ: Vec<String> = current
        .iter()
        .filter(|(key, _)| key.as_str() != "steps")
        .filter(|(key, value)| saved.get(*key) != Some(value))
        .map(|(key, value)| {
            let was = saved.get(key).map_or("nothing".to_string(), |v| v.to_string());
            format!("{key}: checkpoint {was}, this run {value}")
        })
        .collect();
    if differ.is_empty() {
        Ok(())
    } else {
        Err(refuse(path, format!("written by a different configuration ({})", differ.join("; "))))
    }
}

// The saved form of the host state: floats as bit patterns.

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedEma {
    mean: u64,
    var: u64,
    count: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedEvent {
    step: u64,
    detector: Detector,
    layer: String,
    value: u64,
    threshold: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedRecord {
    step: u64,
    loss: u32,
    norm: u32,
    applied_norm: u32,
    layer_norms: Vec<u64>,
    lr: u32,
    skipped: bool,
    events: Vec<Detector>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedInFlight {
    step: u64,
    words: Vec<u32>,
    loss: u32,
    applied_norm: u32,
    lr: u32,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedHost {
    lr_scale: u32,
    norm_ema: SavedEma,
    loss_ema: SavedEma,
    history: Vec<u64>,
    firing: Vec<Detector>,
    events: Vec<SavedEvent>,
    records: Vec<SavedRecord>,
    /// (step, error rate bits).
    checks: Vec<(u64, u64)>,
    in_flight: Vec<SavedInFlight>,
    stopped: Option<String>,
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn floats(v: &[u64]) -> Vec<f64> {
    v.iter().map(|&x| f64::from_bits(x)).collect()
}

impl From<&Ema> for SavedEma {
    fn from(e: &Ema) -> Self {
        Self { mean: e.mean.to_bits(), var: e.var.to_bits(), count: e.count }
    }
}

impl From<&SavedEma> for Ema {
    fn from(e: &SavedEma) -> Self {
        Self { mean: f64::from_bits(e.mean), var: f64::from_bits(e.var), count: e.count }
    }
}

impl From<&HostState> for SavedHost {
    fn from(h: &HostState) -> Self {
        let m = &h.monitor;
        Self {
            lr_scale: h.lr_scale.to_bits(),
            norm_ema: (&m.norm_ema).into(),
            loss_ema: (&m.loss_ema).into(),
            history: bits(&m.history),
            firing: m.firing.clone(),
            events: m
                .events
                .iter()
                .map(|e| SavedEvent {
                    step: e.step,
                    detector: e.detector,
                    layer: e.layer.clone(),
                    value: e.value.to_bits(),
                    threshold: e.threshold.to_bits(),
                })
                .collect(),
            records: h
                .records
                .iter()
                .map(|r| SavedRecord {
                    step: r.step,
                    loss: r.loss.to_bits(),
                    norm: r.norm.to_bits(),
                    applied_norm: r.applied_norm.to_bits(),
                    layer_norms: bits(&r.layer_norms),
                    lr: r.lr.to_bits(),
                    skipped: r.skipped,
                    events: r.events.clone(),
                })
                .collect(),
            checks: h.checks.iter().map(|c| (c.step, c.error_rate.to_bits())).collect(),
            in_flight: h
                .in_flight
                .iter()
                .map(|r| SavedInFlight {
                    step: r.step,
                    words: r.words.clone(),
                    loss: r.loss.to_bits(),
                    applied_norm: r.applied_norm.to_bits(),
                    lr: r.lr.to_bits(),
                })
                .collect(),
            stopped: h.stopped.clone(),
        }
    }
}

impl From<SavedHost> for HostState {
    fn from(s: SavedHost) -> Self {
        Self {
            lr_scale: f32::from_bits(s.lr_scale),
            monitor: MonitorState {
                norm_ema: (&s.norm_ema).into(),
                loss_ema: (&s.loss_ema).into(),
                history: floats(&s.history),
                firing: s.firing,
                events: s
                    .events
                    .into_iter()
                    .map(|e| Explosion {
                        step: e.step,
                        detector: e.detector,
                        layer: e.layer,
                        value: f64::from_bits(e.value),
                        threshold: f64::from_bits(e.threshold),
                    })
                    .collect(),
            },
            records: s
                .records
                .into_iter()
                .map(|r| StepRecord {
                    step: r.step,
                    loss: f32::from_bits(r.loss),
                    norm: f32::from_bits(r.norm),
                    applied_norm: f32::from_bits(r.applied_norm),
                    layer_norms: floats(&r.layer_norms),
                    lr: f32::from_bits(r.lr),
                    skipped: r.skipped,
                    events: r.events,
                })
                .collect(),
            checks: s.checks.iter().map(|&(step, e)| Check { step, error_rate: f64::from_bits(e) }).collect(),
            in_flight: s
                .in_flight
                .into_iter()
                .map(|r| InFlight {
                    step: r.step,
                    words: r.words,
                    loss: f32::from_bits(r.loss),
                    applied_norm: f32::from_bits(r.applied_norm),
                    lr: f32::from_bits(r.lr),
                })
                .collect(),
            stopped: s.stopped,
        }
    }
}
