//! Runs the built `dialpool` binary as a user would, with a bound: a hung
//! run is killed and fails the test instead of hanging the suite.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const DIALPOOL: &str = env!("CARGO_BIN_EXE_dialpool");

pub struct Run {
    pub pid: u32,
    /// The exit status; `None` when killed by a signal.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    /// Everything the run printed, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "exit {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.took, self.stdout, self.stderr
        )
    }
}

/// Runs `dialpool ARGS…`, killing it past `limit`.
pub fn dialpool(args: &[&str], limit: Duration) -> Run {
    let child = Command::new(DIALPOOL)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dialpool binary runs");
    let pid = child.id();
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.expect("waiting for dialpool"),
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: kill(2) on the child we started; no memory involved.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            panic!("dialpool {args:?} still running after {limit:?}: killed");
        }
    };
    Run {
        pid,
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}
