//! Checkpoints in safetensors. The tensors are every buffer that carries state from one
//! step to the next (parameters, optimizer state and step counters, batch-norm running
//! statistics, the adaptive clip's state); the metadata holds the configuration, the step and the host's state (the
//! monitor, the learning-rate scale, the records, and the records of
//! steps the device finished but the host had not read yet). Host floats are saved as
//! their bit patterns: JSON cannot hold NaN, and a resumed run must continue bit for bit.
//!
//! The file is written here rather than by `safetensors::serialize`, whose metadata map
//! comes out in a random order: the same state gives the same bytes. A checksum over the
//! metadata and every tensor lets a reader refuse a corrupted file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::{Check, StepRecord, TrainConfig};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::monitor::{Detector, Ema, Explosion, MonitorState};
use crate::readback::read_buffer;

/// Written into every checkpoint; a reader refuses any other.
const FORMAT: &str = "gradguard-checkpoint-v4";

/// The file `gradguard train --checkpoint-every` writes into `--out`.
pub const FILE_NAME: &str = "checkpoint.safetensors";

/// Where a run saves its checkpoints, how often, and how many it keeps: the latest at
/// `path`, up to `keep - 1` earlier ones beside it as `STEM-STEP.EXT`. A run stopped by
/// [`Trainer::stop_on`](super::Trainer::stop_on) saves one whatever the interval.
#[derive(Debug)]
pub struct CheckpointPlan {
    /// None: only when stopped from outside.
    every: Option<u64>,
    path: std::path::PathBuf,
    keep: u32,
    /// The step of the checkpoint now at `path`, written by this run.
    latest: Option<u64>,
    earlier: std::collections::VecDeque<std::path::PathBuf>,
}

impl CheckpointPlan {
    /// Every `every` (≥ 1) steps and after the last one, to `path`, keeping `keep` (≥ 1).
    pub fn new(every: u64, path: std::path::PathBuf, keep: u32) -> Result<Self> {
        if every == 0 {
            return Err(Error::OutOfRange { what: "checkpoint interval", value: 0.0, expected: "at least 1 step" });
        }
        if keep == 0 {
            return Err(Error::OutOfRange { what: "checkpoints kept", value: 0.0, expected: "at least 1" });
        }
        Ok(Self { every: Some(every), path, keep, latest: None, earlier: Default::default() })
    }

    /// One checkpoint at `path`, saved only if the run is stopped from outside.
    pub fn when_stopped(path: std::path::PathBuf) -> Self {
        Self { every: None, path, keep: 1, latest: None, earlier: Default::default() }
    }

    /// Whether a checkpoint is due after `step` steps of a run of `steps`.
    pub(super) fn due(&self, step: u64, steps: u64) -> bool {
        self.every.is_some_and(|every| step.is_multiple_of(every) || step == steps)
    }

    /// The step of the checkpoint now at `path`, if this run wrote it.
    pub(super) fn latest(&self) -> Option<u64> {
        self.latest
    }

    /// Where the checkpoint of `step` is kept once a later one takes `path`.
    pub fn earlier_path(&self, step: u64) -> std::path::PathBuf {
        let stem = self.path.file_stem().unwrap_or_default().to_string_lossy();
        let ext = self.path.extension().map_or(String::new(), |e| format!(".{}", e.to_string_lossy()));
        self.path.with_file_name(format!("{stem}-{step}{ext}"))
    }

    /// Saves through `write` (to `path`, atomically) the checkpoint of `step`, first moving
    /// the previous one aside when more than one is kept and dropping the oldest beyond `keep`.
    pub(super) fn save(&mut self, step: u64, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        if let Some(latest) = self.latest.filter(|&l| self.keep > 1 && l != step) {
            let aside = self.earlier_path(latest);
            std::fs::rename(&self.path, &aside).map_err(|source| Error::Io { action: "renaming", path: aside.clone(), source })?;
            self.earlier.push_back(aside);
            while self.earlier.len() >= self.keep as usize {
                let oldest = self.earlier.pop_front().expect("not empty");
                std::fs::remove_file(&oldest).map_err(|source| Error::Io { action: "removing", path: oldest, source })?;
            }
        }
        write(&self.path)?;
        self.latest = Some(step);
        Ok(())
    }
}

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
    /// The forward watch's non-finite count and first layer output holding one.
    pub forward: Option<(u32, u32)>,
}

/// The host's side of a run.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct HostState {
    pub lr_scale: f32,
    pub last_lr_drop: Option<u64>,
    pub monitor: MonitorState,
    pub records: Vec<StepRecord>,
    pub checks: Vec<Check>,
    pub in_flight: Vec<InFlight>,
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
    let mut metadata = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("step".to_string(), step.to_string()),
        ("config".to_string(), to_json(path, config)?),
        ("host".to_string(), to_json(path, &SavedHost::from(host))?),
    ]);
    let mut named: Vec<(&str, Dtype, &[usize], &[u8])> =
        tensors.iter().zip(&bytes).map(|(t, b)| (t.name.as_str(), t.dtype, t.shape.as_slice(), b.as_slice())).collect();
    named.sort_by_key(|t| t.0);
    metadata.insert(CHECKSUM.to_string(), checksum(&metadata, &named));
    let file = serialize(&named, &metadata).map_err(|e| refuse(path, e.to_string()))?;
    super::output::write_synced(path, &file).map_err(|e| refuse(path, format!("writing failed: {e}")))
}

/// The metadata key of the checksum.
const CHECKSUM: &str = "checksum";

/// FNV-1a (64-bit) over the metadata but the checksum itself, then every tensor's name,
/// dtype, shape and bytes, in name order. Each step of the hash is a bijection of its state,
/// so any single changed byte changes the sum for certain; other corruption almost surely.
fn checksum(metadata: &BTreeMap<String, String>, tensors: &[(&str, Dtype, &[usize], &[u8])]) -> String {
    let mut hash = Fnv1a::default();
    for (key, value) in metadata.iter().filter(|(k, _)| *k != CHECKSUM) {
        hash.feed(key.as_bytes());
        hash.feed(value.as_bytes());
    }
    for (name, dtype, shape, data) in tensors {
        hash.feed(name.as_bytes());
        hash.feed(format!("{dtype:?}{shape:?}").as_bytes());
        hash.feed(data);
    }
    format!("fnv1a64:{:016x}", hash.0)
}

/// FNV-1a, 64-bit, fed 8 bytes at a time and each input's length after it.
pub(crate) struct Fnv1a(pub u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word)).wrapping_mul(PRIME);
        }
        self.0 = (self.0 ^ bytes.len() as u64).wrapping_mul(PRIME);
    }
}

/// A safetensors file: the header (tensors and metadata as JSON objects, whose keys
/// serde_json keeps sorted), padded to 8 bytes, then the tensors' bytes in `tensors` order.
fn serialize(tensors: &[(&str, Dtype, &[usize], &[u8])], metadata: &BTreeMap<String, String>) -> serde_json::Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(metadata)?);
    let mut offset = 0;
    for (name, dtype, shape, data) in tensors {
        let end = offset + data.len();
        header.insert(
            name.to_string(),
            serde_json::json!({ "dtype": format!("{dtype:?}"), "shape": shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&header)?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut file = Vec::with_capacity(8 + json.len() + offset);
    file.extend_from_slice(&(json.len() as u64).to_le_bytes());
    file.extend_from_slice(&json);
    for (_, _, _, data) in tensors {
        file.extend_from_slice(data);
    }
    Ok(file)
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
    let mut named: Vec<_> = tensors.tensors().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let named: Vec<_> = named.iter().map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())).collect();
    let sorted: BTreeMap<String, String> = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if *field(CHECKSUM)? != checksum(&sorted, &named) {
        return Err(refuse(path, "its checksum does not match its contents: the file is corrupt"));
    }
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

/// What a resume accepts beyond an intact checkpoint of the same model, data and optimizer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResumeOptions {
    /// Load NaN or ±inf parameters and optimizer state (a run under
    /// `NonFinitePolicy::Propagate` saves them as they are); refused otherwise.
    pub allow_nonfinite: bool,
}

/// The configuration fields a resume may change: the remedies and the run's length, for
/// the workflow of rewinding to a checkpoint before a spike and continuing with a fix.
/// Everything else (task, model, init, batch, seed, optimizer) fixes what the tensors mean.
pub const RESUMABLE_CHANGES: [&str; 12] = [
    "steps", "lr", "schedule", "clip", "weight_decay", "l2", "on_nonfinite", "monitor", "responses", "faults", "eval_every",
    "watch_forward",
];

/// The adaptive clip's state: a resume that changes the clip starts it afresh.
const ADAPTIVE_STATE: &str = "clip/adaptive_state";

/// Checks `path` against `config` and `tensors` (every name, dtype and shape) before
/// touching the device, then writes the tensors into their buffers. Returns the step and
/// the host state to continue from.
pub(super) fn load(
    path: &Path,
    gpu: &Gpu,
    config: &TrainConfig,
    tensors: &[DeviceTensor],
    options: ResumeOptions,
) -> Result<(u64, HostState)> {
    let bytes = read_file(path, declared_size(path)?.min(size_limit(config, tensors)))?;
    let parsed = parse(path, &bytes)?;
    let changed = check_config(path, &parsed.metadata["config"], config)?;
    if parsed.step > config.steps {
        return Err(refuse(path, format!("it is at step {}, past `steps` {}: ask for more steps", parsed.step, config.steps)));
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
    let fresh_clip = changed.contains(&"clip");
    let mut views = Vec::with_capacity(tensors.len());
    for t in tensors.iter().filter(|t| !(fresh_clip && t.name == ADAPTIVE_STATE)) {
        let view = parsed.tensors.tensor(&t.name).map_err(|_| refuse(path, format!("no tensor `{}`", t.name)))?;
        if view.dtype() != t.dtype || view.shape() != t.shape.as_slice() {
            return Err(refuse(
                path,
                format!("tensor `{}` is {:?} {:?}, this run needs {:?} {:?}", t.name, view.dtype(), view.shape(), t.dtype, t.shape),
            ));
        }
        if view.dtype() == Dtype::F32 && !options.allow_nonfinite {
            let bad = view.data().chunks_exact(4).filter(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()).count();
            if bad > 0 {
                return Err(refuse(
                    path,
                    format!("tensor `{}` holds {bad} NaN or infinite values (resume it anyway with `allow_nonfinite`)", t.name),
                ));
            }
        }
        views.push((t, view));
    }
    let expected = views.len() + usize::from(fresh_clip && parsed.tensors.names().contains(&ADAPTIVE_STATE));
    if parsed.tensors.len() != expected {
        return Err(refuse(path, format!("{} tensors, this run has {}", parsed.tensors.len(), tensors.len())));
    }
    for (t, view) in &views {
        gpu.queue.write_buffer(t.buffer, t.offset, view.data());
    }
    if !changed.is_empty() {
        log::info!("resuming {} with changed {}", path.display(), changed.join(", "));
    }
    Ok((parsed.step, host))
}

/// The fields of [`RESUMABLE_CHANGES`] in which `config` differs from the checkpoint's;
/// an error naming every other field that differs.
fn check_config(path: &Path, saved: &str, config: &TrainConfig) -> Result<Vec<&'static str>> {
    let saved: serde_json::Value = serde_json::from_str(saved).map_err(|e| refuse(path, format!("its configuration: {e}")))?;
    // Through text, as the checkpoint went: `to_value` would widen f32s (0.3 → 0.30000001…).
    let current: serde_json::Value = serde_json::from_str(&to_json(path, config)?).map_err(|e| refuse(path, e.to_string()))?;
    let (Some(saved), Some(current)) = (saved.as_object(), current.as_object()) else {
        return Err(refuse(path, "its configuration is not an object"));
    };
    let differs = |key: &String| saved.get(key) != current.get(key);
    let changed = RESUMABLE_CHANGES.into_iter().filter(|k| differs(&k.to_string())).collect();
    let refused: Vec<String> = current
        .keys()
        .filter(|key| !RESUMABLE_CHANGES.contains(&key.as_str()) && differs(key))
        .map(|key| {
            let was = saved.get(key).map_or("nothing".to_string(), |v| v.to_string());
            format!("{key}: checkpoint {was}, this run {}", current[key])
        })
        .collect();
    if refused.is_empty() {
        Ok(changed)
    } else {
        Err(refuse(
            path,
            format!(
                "written by a different model, data or optimizer ({}); a resume may change only {}",
                refused.join("; "),
                RESUMABLE_CHANGES.join(", ")
            ),
        ))
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
    forward: Option<(u32, u32)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedHost {
    lr_scale: u32,
    last_lr_drop: Option<u64>,
    norm_ema: SavedEma,
    loss_ema: SavedEma,
    loss_start: Option<u64>,
    history: Vec<u64>,
    firing: Vec<Detector>,
    events: Vec<SavedEvent>,
    records: Vec<SavedRecord>,
    /// (step, error rate bits).
    checks: Vec<(u64, u64)>,
    in_flight: Vec<SavedInFlight>,
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
            last_lr_drop: h.last_lr_drop,
            norm_ema: (&m.norm_ema).into(),
            loss_ema: (&m.loss_ema).into(),
            loss_start: m.loss_start.map(f64::to_bits),
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
                    forward: r.forward,
                })
                .collect(),
        }
    }
}

impl From<SavedHost> for HostState {
    fn from(s: SavedHost) -> Self {
        Self {
            lr_scale: f32::from_bits(s.lr_scale),
            last_lr_drop: s.last_lr_drop,
            monitor: MonitorState {
                norm_ema: (&s.norm_ema).into(),
                loss_ema: (&s.loss_ema).into(),
                loss_start: s.loss_start.map(f64::from_bits),
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
                    forward: r.forward,
                })
                .collect(),
        }
    }
}
