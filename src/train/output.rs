//! What a run leaves in its `--out` directory: metrics.csv and events.jsonl, streamed as
//! the run goes, and summary.json and plot.svg at its end, each written to a temporary name
//! and renamed, so a crash never leaves half a file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{StepRecord, TrainSummary, Trainer};
use crate::error::{Error, Result};
use crate::monitor::Explosion;
use crate::plot::{self, Chart, Series};

/// Where [`write_atomic`] puts `path`'s bytes before renaming them into place: the same
/// name with `.tmp` appended (`foo` → `foo.tmp`, `run.csv` → `run.csv.tmp`).
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `contents` to `path` through a temporary file in the same directory, synced to
/// disk before the rename: a crash at any point leaves either the old file or the new one.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    write_synced(path, contents).map_err(|source| Error::Io { action: "writing", path: path.to_path_buf(), source })
}

pub(super) fn write_synced(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    // A full disk leaves no half-written temporary behind.
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename itself is durable once the directory is synced (where directories can be
    // opened as files: Unix).
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Creates `dir` and its parents (an existing one is fine).
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { action: "creating", path: dir.to_path_buf(), source })
}

/// metrics.csv's header: one column per layer norm.
fn metrics_header(layers: &[String]) -> String {
    let mut out = String::from("step,loss,global_norm,clipped_norm");
    layers.iter().for_each(|l| out.push_str(&format!(",norm_{l}")));
    out.push_str(",lr,skipped,events\n");
    out
}

/// One row of metrics.csv. Floats in Rust's shortest round-trip form, so equal runs give
/// equal files.
fn metrics_row(r: &StepRecord) -> String {
    let mut out = format!("{},{},{},{}", r.step, r.loss, r.norm, r.applied_norm);
    r.layer_norms.iter().for_each(|n| out.push_str(&format!(",{n}")));
    let events: Vec<&str> = r.events.iter().map(|e| e.name()).collect();
    let _ = writeln!(out, ",{},{},{}", r.lr, r.skipped as u8, events.join(";"));
    out
}

/// metrics.csv: one row per step, one column per layer norm.
pub fn metrics_csv(records: &[StepRecord], layers: &[String]) -> String {
    records.iter().fold(metrics_header(layers), |out, r| out + &metrics_row(r))
}

fn event_line(e: &Explosion) -> Result<String> {
    serde_json::to_string(e).map(|line| line + "\n").map_err(|e| Error::Encode { what: "an event", message: e.to_string() })
}

/// metrics.csv and events.jsonl in `--out`, written as the run goes and flushed at every
/// record: a killed run keeps every step the host had read. Created before the first
/// step, so an unwritable `--out` fails before any training.
pub struct RunStream {
    metrics: (PathBuf, std::fs::File),
    events: (PathBuf, std::fs::File),
}

impl RunStream {
    /// Creates `dir` and both files, starting with what a resumed run already holds.
    pub fn create(dir: &Path, layers: &[String], records: &[StepRecord], events: &[Explosion]) -> Result<Self> {
        create_dir(dir)?;
        let open = |name: &str| {
            let path = dir.join(name);
            std::fs::File::create(&path).map(|f| (path.clone(), f)).map_err(|source| Error::Io { action: "creating", path, source })
        };
        let mut stream = Self { metrics: open("metrics.csv")?, events: open("events.jsonl")? };
        let text = events.iter().map(event_line).collect::<Result<String>>()?;
        append(&mut stream.events, &text)?;
        append(&mut stream.metrics, &metrics_csv(records, layers))?;
        Ok(stream)
    }

    /// Appends one step and the events it fired.
    pub fn record(&mut self, record: &StepRecord, events: &[Explosion]) -> Result<()> {
        if !events.is_empty() {
            let text = events.iter().map(event_line).collect::<Result<String>>()?;
            append(&mut self.events, &text)?;
        }
        append(&mut self.metrics, &metrics_row(record))
    }
}

/// One unbuffered write: the text reaches the kernel at once, and survives a killed process.
fn append((path, file): &mut (PathBuf, std::fs::File), text: &str) -> Result<()> {
    file.write_all(text.as_bytes()).map_err(|source| Error::Io { action: "writing", path: path.clone(), source })
}

/// The three panels of a run: global norm with events, loss, per-layer norm against depth.
pub fn run_plot(title: &str, records: &[StepRecord], events: &[Explosion], layers: &[String]) -> Result<String> {
    let steps = |f: &dyn Fn(&StepRecord) -> f64| records.iter().map(|r| (r.step as f64, f(r))).collect::<Vec<_>>();
    let norm = Chart {
        title: format!("{title}: global gradient norm"),
        x_label: "step".into(),
        y_label: "L2 norm (log)".into(),
        log_y: true,
        series: vec![
            Series { name: "before clipping".into(), points: steps(&|r| r.norm as f64) },
            Series { name: "after clipping".into(), points: steps(&|r| r.applied_norm as f64) },
        ],
        marks: events.iter().map(|e| (e.step as f64, e.to_string())).collect(),
    };
    let loss = Chart {
        title: "training loss".into(),
        x_label: "step".into(),
        y_label: "loss (log)".into(),
        log_y: true,
        series: vec![Series { name: "loss".into(), points: steps(&|r| r.loss as f64) }],
        marks: Vec::new(),
    };
    // A few snapshots over the run: how the norm changes from the input layer to the head.
    let picks: Vec<&StepRecord> = match records.len() {
        0 => Vec::new(),
        n => {
            let mut idx: Vec<usize> = [0, n / 4, n / 2, n - 1].into();
            idx.dedup();
            idx.into_iter().map(|i| &records[i]).collect()
        }
    };
    let depth = Chart {
        title: "per-layer gradient norm by depth".into(),
        x_label: format!("layer: 0 = {} (input side) … {} = {}", layers.first().map_or("-", |l| l.as_str()), layers.len().saturating_sub(1), layers.last().map_or("-", |l| l.as_str())),
        y_label: "L2 norm (log)".into(),
        log_y: true,
        series: picks
            .iter()
            .map(|r| Series {
                name: format!("step {}", r.step),
                points: r.layer_norms.iter().enumerate().map(|(i, &n)| (i as f64, n)).collect(),
            })
            .collect(),
        marks: Vec::new(),
    };
    plot::svg(&[norm, loss, depth])
}

/// Writes `trainer`'s summary.json and plot.svg into `dir` (created if missing), beside
/// the streamed metrics.csv and events.jsonl.
pub fn write_summary(dir: &Path, trainer: &Trainer, summary: &TrainSummary) -> Result<()> {
    create_dir(dir)?;
    let (config, layers, events) = (trainer.config(), trainer.monitor().layers(), trainer.monitor().events());
    let summary_json = serde_json::json!({ "config": config, "layers": layers, "summary": summary });
    let text = serde_json::to_string_pretty(&summary_json).map_err(|e| Error::Encode { what: "summary.json", message: e.to_string() })?;
    write_atomic(&dir.join("summary.json"), text.as_bytes())?;
    write_atomic(&dir.join("plot.svg"), run_plot(&config.task.name(), trainer.records(), events, layers)?.as_bytes())
}

/// Writes `trainer`'s four files into `dir` at once (a run that was not streamed).
pub fn write_run(dir: &Path, trainer: &Trainer, summary: &TrainSummary) -> Result<()> {
    create_dir(dir)?;
    let layers = trainer.monitor().layers();
    write_atomic(&dir.join("metrics.csv"), metrics_csv(trainer.records(), layers).as_bytes())?;
    let jsonl = trainer.monitor().events().iter().map(event_line).collect::<Result<String>>()?;
    write_atomic(&dir.join("events.jsonl"), jsonl.as_bytes())?;
    write_summary(dir, trainer, summary)
}
