//! Installing the Debian packages the harness needs.

use std::fs;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::util::{find_executable, is_executable, is_root, run_checked};

/// Directory holding initdb, postgres and psql: the newest
/// `/usr/lib/postgresql/N/bin` (Debian's layout, where these are not in PATH),
/// else the directory of an `initdb` found in PATH.
pub fn pg_bin_dir() -> Option<PathBuf> {
    let complete = |d: &Path| {
        ["initdb", "postgres", "psql"]
            .iter()
            .all(|b| is_executable(&d.join(b)))
    };
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| complete(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Some(d);
    }
    let initdb = find_executable("initdb")?;
    let dir = fs::canonicalize(initdb).ok()?.parent()?.to_path_buf();
    complete(&dir).then_some(dir)
}

/// The `pgbouncer` program (Debian puts it in /usr/sbin).
pub fn pgbouncer_bin() -> Option<PathBuf> {
    find_executable("pgbouncer")
}

/// The Debian packages whose programs are missing, in install order. The one
/// place that says which package provides what the harness runs.
fn missing_packages() -> Vec<&'static str> {
    let mut missing = Vec::new();
    if pg_bin_dir().is_none() {
        missing.push("postgresql");
    }
    if pgbouncer_bin().is_none() {
        missing.push("pgbouncer");
    }
    if find_executable("mariadbd").is_none() || find_executable("mariadb-install-db").is_none() {
        missing.push("mariadb-server");
    }
    if find_executable("mariadb").is_none() {
        missing.push("mariadb-client");
    }
    if find_executable("iptables").is_none() {
        missing.push("iptables");
    }
    if find_executable("ip").is_none() {
        missing.push("iproute2");
    }
    missing
}

/// Installs what is missing (postgresql, pgbouncer, mariadb-server,
/// mariadb-client, iptables, iproute2) through apt-get when root; Err with a clear message
/// otherwise.
///
/// Quick and idempotent when everything is present: it only looks for the
/// binaries and never calls apt then. Otherwise it runs `apt-get update` once
/// and `apt-get install --no-install-recommends`, serialised across processes
/// with a lock file because nextest runs many test processes at once and
/// dpkg's own lock would make all but one fail. While installing it puts a
/// `policy-rc.d` that forbids starting services (unless one exists), so the
/// packages' own clusters are not started: the harness runs private servers
/// and a stray system server on 5432/3306 would only confuse.
pub fn ensure_installed() -> Result<(), String> {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    if missing_packages().is_empty() {
        return Ok(());
    }
    let _guard = IN_PROCESS.lock().unwrap_or_else(|p| p.into_inner());
    let missing = missing_packages();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        return Err(format!(
            "the test harness needs these Debian packages: {list}; run as root so it can install \
             them, or install them with `sudo apt-get install -y {list}`"
        ));
    }
    let Some(apt) = find_executable("apt-get") else {
        return Err(format!(
            "missing packages {list} and no apt-get to install them with"
        ));
    };

    let lock_path = "/var/lock/dialpool-testkit-apt.lock";
    let lock = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(lock_path)
        .map_err(|e| format!("cannot open {lock_path}: {e}"))?;
    // SAFETY: flock on a file descriptor we own; released when `lock` closes.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "flock {lock_path}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // Another process may have installed them while we waited for the lock.
    let missing = missing_packages();
    if missing.is_empty() {
        return Ok(());
    }

    eprintln!("testkit: installing {} with apt-get", missing.join(" "));
    let _policy = PolicyRcGuard::install();
    run_checked(
        Command::new(&apt)
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get update",
    )?;
    run_checked(
        Command::new(&apt)
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )?;
    let still = missing_packages();
    if !still.is_empty() {
        return Err(format!(
            "apt-get install succeeded but these are still missing: {}",
            still.join(" ")
        ));
    }
    Ok(())
}

/// Temporarily forbids package scripts from starting services.
struct PolicyRcGuard {
    path: Option<PathBuf>,
}

impl PolicyRcGuard {
    fn install() -> Self {
        let path = PathBuf::from("/usr/sbin/policy-rc.d");
        if path.exists() {
            return PolicyRcGuard { path: None };
        }
        let ok = crate::util::write_file(&path, b"#!/bin/sh\nexit 101\n", 0o755, None).is_ok();
        PolicyRcGuard {
            path: ok.then_some(path),
        }
    }
}

impl Drop for PolicyRcGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            if let Err(e) = fs::remove_file(p) {
                eprintln!(
                    "testkit: could not remove {}: {e}; remove it by hand",
                    p.display()
                );
            }
        }
    }
}
