//! Helpers: run the real binary, run the independent Python readers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const DATE: &str = "2026-11-21";

/// The nightrec binary cargo built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nightrec"))
}

/// Run nightrec with args and extra environment; no config file unless given.
pub fn nightrec(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(cwd).env("NIGHTREC_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("nightrec runs")
}

pub fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The Python with pyarrow and duckdb (`make test` sets NIGHTREC_PYTHON).
pub fn python() -> String {
    std::env::var("NIGHTREC_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Run a Python script with args; panics with its output on failure.
pub fn py(script: &str, args: &[&str]) -> String {
    let out = Command::new(python()).arg("-c").arg(script).args(args).output().expect("python runs");
    assert!(out.status.success(), "python check failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A generated dataset plus a fresh output folder.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new(users: &str, items: &str, events: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        let o = nightrec(
            &[
                "gen",
                "--out",
                input.to_str().unwrap(),
                "--users",
                users,
                "--items",
                items,
                "--events",
                events,
                "--days",
                "20",
                "--seed",
                "7",
            ],
            &[],
            dir.path(),
        );
        assert!(o.status.success(), "gen failed: {}", text(&o));
        Fixture { dir }
    }
    pub fn input(&self) -> String {
        self.dir.path().join("in").display().to_string()
    }
    pub fn output(&self) -> String {
        self.dir.path().join("out").display().to_string()
    }
}

/// Environment for a small, quick run.
pub fn small_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("NIGHTREC_MODEL__EPOCHS", "6"),
        ("NIGHTREC_MODEL__DIM", "32"),
        ("NIGHTREC_CANDIDATES__K", "20"),
        ("NIGHTREC_RUN__THREADS", "2"),
    ]
}
