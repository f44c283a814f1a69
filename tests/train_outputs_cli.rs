//! A run never loses what it computed: `--out` is checked before the first step, the
//! metrics and events are streamed, and SIGINT/SIGTERM end a run with every output and a
//! checkpoint written.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn gradguard(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gradguard"));
    command.args(args).env("XDG_RUNTIME_DIR", std::env::temp_dir());
    command
}

fn out_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("gradguard-out-{name}-{}", std::process::id()))
}

/// A run long enough to be stopped halfway.
fn long_run(dir: &Path) -> Child {
    gradguard(&["train", "--depth", "1", "--width", "8", "--batch", "8", "--steps", "10000000", "--out", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until metrics.csv holds at least `rows` steps.
fn wait_for_rows(dir: &Path, rows: usize) {
    let started = Instant::now();
    while std::fs::read_to_string(dir.join("metrics.csv")).map_or(0, |m| m.lines().count().saturating_sub(1)) < rows {
        assert!(started.elapsed() < Duration::from_secs(120), "no {rows} rows in metrics.csv after 2 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_unwritable_out_fails_before_training() {
    for command in [vec!["train", "--steps", "100000"], vec!["lab"]] {
        let started = Instant::now();
        let out = gradguard(&[&command[..], &["--out", "/proc/gradguard-x"]].concat()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {stderr}");
        assert!(stderr.contains("/proc/gradguard-x"), "{command:?}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(30), "{command:?} trained first: {:?}", started.elapsed());
    }
}

#[test]
fn a_killed_run_keeps_its_metrics() {
    let dir = out_dir("killed");
    let mut child = long_run(&dir);
    wait_for_rows(&dir, 20);
    child.kill().unwrap();
    child.wait().unwrap();
    let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let rows: Vec<&str> = metrics.lines().skip(1).collect();
    assert!(rows.len() >= 20);
    // Whole rows, in step order (the last one may be cut by the kill).
    for (i, row) in rows[..rows.len() - 1].iter().enumerate() {
        assert!(row.starts_with(&format!("{i},")), "row {i}: {row}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sigint_and_sigterm_end_a_run_with_every_output_and_a_checkpoint() {
    for (signal, status) in [("INT", 130), ("TERM", 143)] {
        let dir = out_dir(&format!("signal-{signal}"));
        let child = long_run(&dir);
        wait_for_rows(&dir, 10);
        // The shell's builtin kill: present wherever sh is, unlike a kill binary.
        let sent = Command::new("sh").args(["-c", &format!("kill -{signal} {}", child.id())]).status().unwrap();
        assert!(sent.success());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "SIG{signal}: {stderr}");
        assert!(stderr.contains("interrupted by signal"), "{stderr}");
        let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
        let steps = summary["summary"]["steps_run"].as_u64().unwrap();
        let rows = std::fs::read_to_string(dir.join("metrics.csv")).unwrap().lines().count() as u64 - 1;
        assert_eq!(rows, steps, "SIG{signal}: every step submitted is read and written");
        assert!(dir.join("plot.svg").exists() && dir.join("events.jsonl").exists());
        let checkpoint = gradguard::train::checkpoint::read_info(&dir.join("checkpoint.safetensors")).unwrap();
        assert_eq!(checkpoint.step, steps, "SIG{signal}: the checkpoint is of the last step");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
