//! Bad input to `gradguard train`: a clear message, a non-zero exit, nothing written.
#![cfg(feature = "cli")]

use std::process::Command;

fn train(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .arg("train")
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the binary runs");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn out_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("gradguard-cli-{name}-{}", std::process::id()))
}

#[test]
fn unknown_flag_values_are_refused() {
    for (flag, value, says) in [
        ("--clip", "bogus", "--clip"),
        ("--clip", "norm:-1", "positive"),
        ("--init", "normal", "--init"),
        ("--schedule", "step:10", "--schedule"),
        ("--activation", "swish", "--activation"),
        ("--on-nonfinite", "ignore", "ignore"),
    ] {
        let dir = out_dir("flag");
        let (ok, stderr) = train(&[flag, value, "--steps", "2", "--out", dir.to_str().unwrap()]);
        assert!(!ok, "{flag} {value} was accepted");
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
        assert!(!dir.exists(), "{flag} {value} wrote {}", dir.display());
    }
}

#[test]
fn task_model_mismatch_is_refused_before_writing() {
    let dir = out_dir("mismatch");
    let (ok, stderr) = train(&["--model", "rnn", "--task", "wine", "--steps", "2", "--out", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("--model cannot go with the wine task: a tabular task needs the MLP"), "{stderr}");
    let (ok, stderr) = train(&["--model", "mlp", "--task", "adding", "--steps", "2", "--out", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("--model cannot go with the adding (T=50) task: a sequence task needs the RNN"), "{stderr}");
    let (ok, stderr) = train(&["--inject-nan", "3:linear99", "--steps", "4", "--out", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("linear99") && stderr.contains("linear1"), "{stderr}");
    assert!(!dir.exists());
}

/// Every file of `dir` with its bytes.
fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// The tensors and the step and host metadata of a checkpoint (not the config: `steps`
/// may differ).
fn checkpoint_contents(path: &std::path::Path) -> (Vec<(String, Vec<u8>)>, String, String) {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<u8>)> = file.tensors().into_iter().map(|(n, v)| (n, v.data().to_vec())).collect();
    tensors.sort();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    (tensors, meta["step"].clone(), meta["host"].clone())
}

const REMEDIES: &[&str] =
    &["--optimizer", "adamw", "--clip", "zclip", "--batchnorm", "--init", "normal:0.3", "--lr-drop-on-spike", "0.5", "--lr", "0.01"];

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let (a, b) = (out_dir("straight"), out_dir("resumed"));
    let run = |steps: &str, dir: &std::path::Path, resume: Option<&std::path::Path>| {
        let mut args: Vec<&str> = REMEDIES.to_vec();
        args.extend(["--steps", steps, "--checkpoint-every", "20", "--out", dir.to_str().unwrap()]);
        let ckpt = resume.map(|p| p.to_str().unwrap().to_string());
        if let Some(p) = &ckpt {
            args.extend(["--resume", p.as_str()]);
        }
        let (ok, stderr) = train(&args);
        assert!(ok, "{stderr}");
    };
    run("40", &a, None);
    run("20", &b, None);
    let ckpt = b.join("checkpoint.safetensors");
    run("40", &b, Some(&ckpt));
    let (metrics_a, metrics_b) = (std::fs::read_to_string(a.join("metrics.csv")).unwrap(), std::fs::read_to_string(b.join("metrics.csv")).unwrap());
    let after_20 = |m: &str| m.lines().skip(21).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(after_20(&metrics_a).len(), 20);
    assert_eq!(after_20(&metrics_a), after_20(&metrics_b), "rows after step 20");
    assert_eq!(metrics_a, metrics_b, "the resumed run's metrics.csv holds every step");
    assert_eq!(std::fs::read(a.join("events.jsonl")).unwrap(), std::fs::read(b.join("events.jsonl")).unwrap());
    // Weights, optimizer state, step counters, running stats and host state, bit for bit.
    assert_eq!(checkpoint_contents(&a.join("checkpoint.safetensors")), checkpoint_contents(&ckpt));
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn corrupt_checkpoint_is_refused_and_out_untouched() {
    let dir = out_dir("corrupt");
    let (ok, stderr) = train(&["--steps", "4", "--checkpoint-every", "2", "--out", dir.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let ckpt = dir.join("checkpoint.safetensors");
    let good = std::fs::read(&ckpt).unwrap();
    let elsewhere = out_dir("corrupt-inputs");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let truncated = elsewhere.join("truncated.safetensors");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let garbage = elsewhere.join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\x00 not a checkpoint at all, just bytes \x13\x37").unwrap();
    let header_only = elsewhere.join("header.safetensors");
    std::fs::write(&header_only, &good[..12]).unwrap();
    let missing = elsewhere.join("missing.safetensors");
    for bad in [&truncated, &garbage, &header_only, &missing] {
        let before = snapshot(&dir);
        let (ok, stderr) =
            train(&["--steps", "8", "--resume", bad.to_str().unwrap(), "--checkpoint-every", "2", "--out", dir.to_str().unwrap()]);
        assert!(!ok, "{} was accepted", bad.display());
        assert!(stderr.contains("error: checkpoint") && stderr.contains(bad.to_str().unwrap()), "{stderr}");
        assert_eq!(before, snapshot(&dir), "{} changed --out", bad.display());
    }
    // The checkpoint in --out itself cut short (as a non-atomic writer would leave it).
    std::fs::write(&ckpt, &good[..good.len() - 7]).unwrap();
    let before = snapshot(&dir);
    let (ok, stderr) = train(&["--steps", "8", "--resume", ckpt.to_str().unwrap(), "--checkpoint-every", "2", "--out", dir.to_str().unwrap()]);
    assert!(!ok && stderr.contains("not a readable safetensors file"), "{stderr}");
    assert_eq!(before, snapshot(&dir));
    for d in [dir, elsewhere] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn mismatched_checkpoint_is_refused_and_out_untouched() {
    let dir = out_dir("mismatch-ckpt");
    let (ok, stderr) = train(&["--steps", "6", "--checkpoint-every", "3", "--out", dir.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let ckpt = dir.join("checkpoint.safetensors");
    let ckpt = ckpt.to_str().unwrap();
    for (args, says) in [
        (vec!["--steps", "9", "--width", "32"], "model"),
        (vec!["--steps", "9", "--model", "rnn", "--task", "adding"], "task"),
        (vec!["--steps", "9", "--optimizer", "adamw"], "optimizer"),
        (vec!["--steps", "9", "--seed", "1"], "seed"),
        (vec!["--steps", "4"], "past --steps 4"),
    ] {
        let before = snapshot(&dir);
        let mut all = vec!["--resume", ckpt, "--checkpoint-every", "3", "--out", dir.to_str().unwrap()];
        all.extend(&args);
        let (ok, stderr) = train(&all);
        assert!(!ok, "{args:?} was accepted");
        assert!(stderr.contains("error: checkpoint") && stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(before, snapshot(&dir), "{args:?} changed --out");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn interrupted_checkpoint_write_leaves_the_previous_one() {
    let dir = out_dir("interrupted");
    let (ok, stderr) = train(&["--steps", "4", "--checkpoint-every", "2", "--out", dir.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let ckpt = dir.join("checkpoint.safetensors");
    // A crash between writing the temporary file and the rename leaves this behind.
    let tmp = gradguard::train::temp_path(&ckpt);
    let good = std::fs::read(&ckpt).unwrap();
    std::fs::write(&tmp, &good[..good.len() / 3]).unwrap();
    assert_eq!(gradguard::train::checkpoint::read_info(&ckpt).unwrap().step, 4);
    let (ok, stderr) = train(&["--steps", "6", "--resume", ckpt.to_str().unwrap(), "--checkpoint-every", "2", "--out", dir.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert_eq!(gradguard::train::checkpoint::read_info(&ckpt).unwrap().step, 6);
    assert!(!tmp.exists(), "the next checkpoint replaces the stale temporary file");

    // A real crash: SIGKILL while checkpointing every step, so the kill most likely lands
    // in a write. Whatever it hit, the checkpoint on disk is whole and resumes.
    for wait_ms in [150, 420] {
        std::fs::remove_dir_all(&dir).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gradguard"))
            .args(["train", "--depth", "1", "--width", "8", "--batch", "8", "--steps", "1000000", "--checkpoint-every", "1"])
            .args(["--out", dir.to_str().unwrap()])
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while !ckpt.exists() {
            assert!(started.elapsed().as_secs() < 120, "no checkpoint after 2 minutes");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let step = gradguard::train::checkpoint::read_info(&ckpt).unwrap().step;
        assert!(step >= 1);
        let steps = (step + 2).to_string();
        let (ok, stderr) = train(&[
            "--depth", "1", "--width", "8", "--batch", "8", "--steps", &steps, "--resume", ckpt.to_str().unwrap(),
            "--checkpoint-every", "1", "--out", dir.to_str().unwrap(),
        ]);
        assert!(ok, "resuming from step {step}: {stderr}");
        assert_eq!(gradguard::train::checkpoint::read_info(&ckpt).unwrap().step, step + 2);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn checkpoint_flags_are_checked_before_training() {
    let dir = out_dir("ckpt-flags");
    let (ok, stderr) = train(&["--steps", "2", "--checkpoint-every", "1"]);
    assert!(!ok && stderr.contains("--out"), "{stderr}");
    let (ok, stderr) = train(&["--steps", "2", "--checkpoint-every", "0", "--out", dir.to_str().unwrap()]);
    assert!(!ok && stderr.contains("≥ 1"), "{stderr}");
    assert!(!dir.exists());
}

#[test]
fn error_policy_stops_with_a_report_and_an_intact_checkpoint() {
    let dir = out_dir("error-stop");
    let out = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .args(["train", "--steps", "20", "--depth", "2", "--inject-nan", "6:linear2", "--on-nonfinite", "error"])
        .args(["--checkpoint-every", "2", "--out", dir.to_str().unwrap()])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stopped early has its own status: {stderr}");
    assert!(stderr.contains("step 6") && stderr.contains("first in linear2.weight"), "the report names step and tensor: {stderr}");
    assert!(stderr.contains("nonfinite-grad in linear2: 1 NaN or infinite gradient elements"), "a count reads as a count: {stderr}");
    let summary = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    assert!(summary.contains("NonFiniteGradient") && summary.contains("linear2"), "{summary}");
    // The last checkpoint loads: resuming it (into another folder) reaches the same stop.
    let again = out_dir("error-stop-resumed");
    let checkpoint = dir.join("checkpoint.safetensors");
    let resumed = Command::new(env!("CARGO_BIN_EXE_gradguard"))
        .args(["train", "--steps", "20", "--depth", "2", "--inject-nan", "6:linear2", "--on-nonfinite", "error"])
        .args(["--out", again.to_str().unwrap(), "--resume", checkpoint.to_str().unwrap()])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the binary runs");
    let resumed_err = String::from_utf8_lossy(&resumed.stderr);
    assert!(!resumed_err.contains("checkpoint"), "the checkpoint was unreadable: {resumed_err}");
    assert_eq!(resumed.status.code(), Some(3), "{resumed_err}");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(again);
}

/// `--resume` of a stream that never ends (or a file far larger than a checkpoint of the
/// run) is refused after its header, not read until memory runs out.
#[test]
fn endless_resume_file_is_refused_at_once() {
    let dir = out_dir("resume-zero");
    let start = std::time::Instant::now();
    let (ok, stderr) = train(&["--steps", "5", "--resume", "/dev/zero", "--out", dir.to_str().unwrap()]);
    assert!(!ok && stderr.contains("/dev/zero") && stderr.contains("header"), "{stderr}");
    assert!(start.elapsed().as_secs() < 60, "it read on: {:?}", start.elapsed());
    assert!(!dir.exists(), "--out must not be created");
}

/// `WGPU_BACKEND` empty means unset; a name wgpu does not know is named, not reported as a
/// missing driver.
#[test]
fn wgpu_backend_values_are_read_as_a_user_means_them() {
    let devices = |value: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_gradguard"))
            .arg("devices")
            .env("WGPU_BACKEND", value)
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .output()
            .expect("the binary runs");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stdout, stderr) = devices("");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.trim().is_empty(), "an empty WGPU_BACKEND lists every adapter");
    let (code, _, stderr) = devices("nonsense");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("`nonsense` is not a backend") && !stderr.contains("apt-get"), "{stderr}");
}

/// Where tensor `name`'s bytes start in a safetensors file.
fn tensor_start(bytes: &[u8], name: &str) -> usize {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    8 + header_len + header[name]["data_offsets"][0].as_u64().unwrap() as usize
}

#[test]
fn a_damaged_checkpoint_fails_its_checksum() {
    let dir = out_dir("damaged");
    let (ok, stderr) = train(&["--steps", "4", "--checkpoint-every", "2", "--out", dir.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let good = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    let weight = tensor_start(&good, "param/linear1.weight");
    let elsewhere = out_dir("damaged-inputs");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let flip = |name: &str, at: usize, mask: u8| {
        let mut bytes = good.clone();
        bytes[at] ^= mask;
        let path = elsewhere.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    // The last byte of the data, one exponent bit of the first weight (little-endian f32:
    // the top byte holds the sign and 7 exponent bits), a byte of the optimizer's state.
    let momentum = tensor_start(&good, "optim/linear2.weight/momentum_buffer");
    for bad in [flip("last.safetensors", good.len() - 1, 0x01), flip("exponent.safetensors", weight + 3, 0x08), flip("state.safetensors", momentum + 1, 0x80)] {
        let before = snapshot(&dir);
        let (ok, stderr) = train(&["--steps", "8", "--resume", bad.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
        assert!(!ok && stderr.contains("checksum"), "{}: {stderr}", bad.display());
        assert_eq!(before, snapshot(&dir), "{} changed --out", bad.display());
    }
    for d in [dir, elsewhere] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn nonfinite_weights_resume_only_when_asked() {
    let dir = out_dir("nan-weights");
    let run = ["--depth", "2", "--inject-nan", "1:linear2", "--on-nonfinite", "propagate", "--checkpoint-every", "3"];
    let (ok, stderr) = train(&[&run[..], &["--steps", "3", "--out", dir.to_str().unwrap()]].concat());
    assert!(ok, "{stderr}");
    let ckpt = dir.join("checkpoint.safetensors");
    let resume = [&run[..], &["--steps", "6", "--resume", ckpt.to_str().unwrap(), "--out", dir.to_str().unwrap()]].concat();
    let (ok, stderr) = train(&resume);
    assert!(!ok && stderr.contains("NaN or infinite") && stderr.contains("--resume-nonfinite"), "{stderr}");
    let (ok, stderr) = train(&[&resume[..], &["--resume-nonfinite"]].concat());
    assert!(ok, "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn checkpoints_are_byte_reproducible_and_the_last_k_kept() {
    let (a, b) = (out_dir("repro-a"), out_dir("repro-b"));
    for dir in [&a, &b] {
        let args = ["--steps", "10", "--checkpoint-every", "2", "--keep-checkpoints", "3", "--out", dir.to_str().unwrap()];
        let (ok, stderr) = train(&args);
        assert!(ok, "{stderr}");
    }
    let kept = |dir: &std::path::Path| snapshot(dir).into_keys().filter(|n| n.starts_with("checkpoint")).collect::<Vec<_>>();
    assert_eq!(kept(&a), ["checkpoint-6.safetensors", "checkpoint-8.safetensors", "checkpoint.safetensors"]);
    for name in kept(&a) {
        assert_eq!(std::fs::read(a.join(&name)).unwrap(), std::fs::read(b.join(&name)).unwrap(), "{name} differs between equal runs");
    }
    assert_eq!(gradguard::train::checkpoint::read_info(&a.join("checkpoint-6.safetensors")).unwrap().step, 6);
    // Rewind to step 6 and continue with a fix; the refused changes are named.
    let earlier = a.join("checkpoint-6.safetensors");
    let (ok, stderr) = train(&["--steps", "10", "--resume", earlier.to_str().unwrap(), "--clip", "norm:1", "--lr", "0.01", "--out", b.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let (ok, stderr) = train(&["--steps", "10", "--resume", earlier.to_str().unwrap(), "--batch", "32", "--out", b.to_str().unwrap()]);
    assert!(!ok && stderr.contains("batch") && stderr.contains("may change only"), "{stderr}");
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// A flag the run would ignore is refused, naming what it applies to; messages name the
/// setting in words, never a Rust structure.
#[test]
fn ignored_flags_are_refused_and_messages_read_as_words() {
    for (args, says) in [
        (vec!["--model", "rnn", "--task", "adding", "--depth", "3"], "--depth applies to the MLP only"),
        (vec!["--model", "rnn", "--task", "adding", "--width", "16"], "--width applies to the MLP only"),
        (vec!["--hidden", "16"], "--hidden applies to the RNN"),
        (vec!["--seq-len", "20"], "--seq-len applies to the sequence tasks"),
        (vec!["--optimizer", "adamw", "--momentum", "0.5"], "--momentum applies to SGD"),
        (vec!["--steps", "10", "--inject-nan", "10:linear2"], "a fault's step must be below 10, got 10"),
        (vec!["--keep-checkpoints", "3"], "--checkpoint-every"),
        (vec!["--width", "0"], "MLP width must be at least 1, got 0"),
        (vec!["--model", "rnn", "--task", "adding", "--hidden", "0"], "RNN hidden size must be at least 1, got 0"),
        (vec!["--momentum", "nan"], "SGD momentum must be finite and ≥ 0, got NaN"),
        (vec!["--batch", "100000"], "--batch must be at most 1279, got 100000"),
        (vec!["--model", "rnn", "--task", "adding", "--hidden", "100000"], "tensor rnn.weight_hh (100000 × 100000) needs 40000000000 bytes"),
        (vec!["--model", "rnn", "--task", "adding", "--seq-len", "10000000"], "more than the host budget for generated sequences"),
        // The library names its settings; the command line speaks of flags.
        (vec!["--steps", "0"], "--steps must be at least 1, got 0"),
        (vec!["--lr", "nan"], "--lr must be finite and ≥ 0, got NaN"),
        (vec!["--weight-decay=-1"], "--weight-decay must be finite and ≥ 0, got -1"),
        (vec!["--optimizer", "adamw", "--l2", "0.1"], "--l2 cannot go with AdamW: coupled L2 is for SGD"),
        (vec!["--model", "rnn"], "--model cannot go with the wine task: a tabular task needs the MLP"),
    ] {
        let (ok, stderr) = train(&args);
        assert!(!ok, "{args:?} was accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains('{') && !stderr.contains("Spec"), "{args:?} prints a structure: {stderr}");
    }
}
