//! Bad input to `gradguard train`: a clear message, a non-zero exit, nothing written.

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
    assert!(stderr.contains("tabular") && stderr.contains("--model mlp"), "{stderr}");
    let (ok, stderr) = train(&["--model", "mlp", "--task", "adding", "--steps", "2", "--out", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("--model rnn"), "{stderr}");
    let (ok, stderr) = train(&["--inject-nan", "3:linear99", "--steps", "4", "--out", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("linear99") && stderr.contains("linear1"), "{stderr}");
    assert!(!dir.exists());
}
