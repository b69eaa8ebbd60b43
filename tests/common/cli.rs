//! The client binary as a user runs it: `monovirt ARGS` with stdin fed and none of the
//! caller's server settings (MONOVIRT_SERVER, MONOVIRT_TOKEN, MONOVIRT_CA_FILE) inherited,
//! with what it printed and how it ended.

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

/// What one CLI run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The output of a run that succeeded (exit code 0).
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        &self.stdout
    }

    /// The output of a run that succeeded, as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Checks that the run failed with exit code 1 and printed just `stderr_line`.
    pub fn failed_with(&self, stderr_line: &str) {
        assert_eq!(self.code, 1, "expected exit code 1: {self:?}");
        assert_eq!(self.stderr.trim_end(), stderr_line, "{self:?}");
    }
}

/// Runs `monovirt ARGS` with `envs`, feeding `stdin`.
pub fn run_with(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_monovirt"))
        .args(args)
        .env_remove("MONOVIRT_SERVER")
        .env_remove("MONOVIRT_TOKEN")
        .env_remove("MONOVIRT_CA_FILE")
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn monovirt");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}
