//! The Go side of `dialpool demo`: builds `go/cmd/contrast` (plain
//! `database/sql` with pgx's stdlib driver and go-sql-driver/mysql, no
//! dialpool) into the cargo target directory, runs it against the demo's
//! servers and faults, and reads back what each call returned. Everything
//! it reports comes from that real run; when Go is missing or the build
//! fails, the demo says why and shows its own table alone.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use dialpool::config::fmt_duration;
use serde_json::{json, Value};

/// The build runs while the servers start; on a machine without the Go
/// module cache it downloads pgx and the MySQL driver first. Past this the
/// demo goes on without the contrast, to stay under a minute.
const BUILD_LIMIT: Duration = Duration::from_secs(40);
/// The Go run itself takes about five seconds (its slowest calls are the
/// 1 s query deadlines); this only bounds a hang.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// The built program; a temporary build directory is removed on drop.
pub struct Program {
    path: PathBuf,
    temp_dir: Option<PathBuf>,
}

impl Drop for Program {
    fn drop(&mut self) {
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What the Go program is pointed at, and the limits it runs under.
pub struct Inputs {
    pub pg_url: String,
    pub mysql_url: String,
    pub ca: String,
    pub black_hole: Option<SocketAddr>,
    pub refused: SocketAddr,
    pub stall: Option<SocketAddr>,
    pub dial_timeout: Duration,
    pub acquire_timeout: Duration,
    pub query_timeout: Duration,
    pub idle_timeout: Duration,
}

/// One scenario as the Go program saw it.
pub struct GoOutcome {
    pub driver: String,
    pub ms: f64,
    /// The error text the caller got; empty when the call succeeded.
    pub error: String,
    pub cancelled: Option<bool>,
    pub stopped_after_ms: Option<f64>,
    pub server_saw: String,
    /// Why the scenario could not run at all; empty when it ran.
    pub setup: String,
}

impl GoOutcome {
    pub fn to_json(&self) -> Value {
        json!({
            "driver": self.driver,
            "ms": self.ms,
            "error": if self.error.is_empty() { Value::Null } else { json!(self.error) },
            "statement_cancelled": self.cancelled,
            "stopped_after_ms": self.stopped_after_ms,
            "server_saw": self.server_saw,
            "setup_error": if self.setup.is_empty() { Value::Null } else { json!(self.setup) },
        })
    }
}

/// The whole Go run.
pub struct Contrast {
    pub go_version: String,
    pub drivers: BTreeMap<String, String>,
    results: Vec<(String, GoOutcome)>,
}

impl Contrast {
    /// Takes the outcome of the scenario with this id.
    pub fn take(&mut self, id: &str) -> Option<GoOutcome> {
        let i = self.results.iter().position(|(r, _)| r == id)?;
        Some(self.results.remove(i).1)
    }

    pub fn drivers_text(&self) -> String {
        self.drivers
            .iter()
            .map(|(name, version)| format!("{name} {version}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The Go module, found through the source tree this binary was built from.
fn go_module() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("go")
}

/// Where the program goes: the cargo target directory this binary lives in
/// (`target/<profile>/dialpool`; cargo marks `target/` with CACHEDIR.TAG),
/// so it is rebuilt from the Go build cache in a second and never lands in
/// the source tree; otherwise a temporary directory removed afterwards.
fn output_dir() -> (PathBuf, bool) {
    let target = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?.parent()?.to_path_buf();
        dir.join("CACHEDIR.TAG").is_file().then_some(dir)
    });
    match target {
        Some(dir) => (dir.join("contrast"), false),
        None => (
            std::env::temp_dir().join(format!("dialpool-contrast-{}", std::process::id())),
            true,
        ),
    }
}

/// Builds the contrast program, or says why it cannot be shown.
pub fn build() -> Result<Program, String> {
    let module = go_module();
    if !module.join("cmd/contrast/main.go").is_file() {
        return Err(format!(
            "its source ({}) is not where this binary was built from",
            module.join("cmd/contrast").display()
        ));
    }
    match Command::new("go")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(format!("`go version` failed ({s})")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("Go is not installed (no `go` on PATH)".into())
        }
        Err(e) => return Err(format!("cannot run go: {e}")),
    }
    let (dir, temporary) = output_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let program = Program {
        path: dir.join("dialpool-contrast"),
        temp_dir: temporary.then(|| dir.clone()),
    };
    // Built under a private name and renamed, so two demos at once never
    // run a half-written file.
    let partial = dir.join(format!("dialpool-contrast.{}.partial", std::process::id()));
    let mut cmd = Command::new("go");
    cmd.args(["build", "-buildvcs=false", "-o"])
        .arg(&partial)
        .arg("./cmd/contrast")
        .current_dir(&module)
        // Pure Go: no C toolchain needed, and the program does not link the
        // dialpool library it is contrasted with.
        .env("CGO_ENABLED", "0");
    let out = run_bounded(cmd, BUILD_LIMIT, true).map_err(|e| format!("go build: {e}"));
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(format!("go build failed: {}", tail(&out.stderr)));
    }
    std::fs::rename(&partial, &program.path)
        .map_err(|e| format!("cannot move the built program into place: {e}"))?;
    Ok(program)
}

/// Runs the program and parses its report.
pub fn run(program: &Program, inputs: &Inputs) -> Result<Contrast, String> {
    let mut cmd = Command::new(&program.path);
    cmd.arg("-pg")
        .arg(&inputs.pg_url)
        .arg("-mysql")
        .arg(&inputs.mysql_url)
        .arg("-ca")
        .arg(&inputs.ca)
        .arg("-refused")
        .arg(inputs.refused.to_string())
        .arg("-dial-timeout")
        .arg(go_duration(inputs.dial_timeout))
        .arg("-acquire-timeout")
        .arg(go_duration(inputs.acquire_timeout))
        .arg("-query-timeout")
        .arg(go_duration(inputs.query_timeout))
        .arg("-idle-timeout")
        .arg(go_duration(inputs.idle_timeout));
    if let Some(a) = inputs.black_hole {
        cmd.arg("-blackhole").arg(a.to_string());
    }
    if let Some(a) = inputs.stall {
        cmd.arg("-stall").arg(a.to_string());
    }
    let out = run_bounded(cmd, RUN_LIMIT, false)?;
    if !out.status.success() {
        return Err(format!(
            "the Go program failed ({}): {}",
            out.status,
            tail(&out.stderr)
        ));
    }
    parse(&out.stdout)
}

/// `fmt_duration` writes `1m30s` and `500ms`, which Go's
/// `time.ParseDuration` reads too; `0` needs a unit there.
fn go_duration(d: Duration) -> String {
    if d.is_zero() {
        "0s".into()
    } else {
        fmt_duration(d)
    }
}

fn parse(stdout: &[u8]) -> Result<Contrast, String> {
    let doc: Value = serde_json::from_slice(stdout)
        .map_err(|e| format!("the Go program printed no valid report: {e}"))?;
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    let drivers = doc
        .get("drivers")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let results = doc
        .get("results")
        .and_then(Value::as_array)
        .ok_or("the Go report has no results")?
        .iter()
        .map(|r| {
            (
                text(r, "id"),
                GoOutcome {
                    driver: text(r, "driver"),
                    ms: r.get("ms").and_then(Value::as_f64).unwrap_or(0.0),
                    error: text(r, "error"),
                    cancelled: r.get("cancelled").and_then(Value::as_bool),
                    stopped_after_ms: r.get("stopped_after_ms").and_then(Value::as_f64),
                    server_saw: text(r, "server_saw"),
                    setup: text(r, "setup"),
                },
            )
        })
        .collect();
    Ok(Contrast {
        go_version: text(&doc, "go"),
        drivers,
        results,
    })
}

struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs a command with its output captured and kills it past `limit`.
/// With `own_group` it runs in a process group of its own and the whole
/// group is killed (a `go build` leaves compiler children); without, it
/// stays in ours, so a Ctrl-C at the terminal reaches it too.
fn run_bounded(mut cmd: Command, limit: Duration, own_group: bool) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if own_group {
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    // Read both pipes on threads, so a chatty child never blocks on a full
    // pipe while we wait for it.
    let stdout = reader(&mut child, true);
    let stderr = reader(&mut child, false);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if start.elapsed() >= limit => {
                kill(&mut child, own_group);
                break Err(format!("did not finish within {}", fmt_duration(limit)));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                kill(&mut child, own_group);
                break Err(e.to_string());
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    status.map(|status| Output {
        status,
        stdout,
        stderr,
    })
}

fn reader(child: &mut Child, stdout: bool) -> std::thread::JoinHandle<Vec<u8>> {
    let pipe: Option<Box<dyn Read + Send>> = if stdout {
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>)
    } else {
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>)
    };
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

fn kill(child: &mut Child, own_group: bool) {
    if let (true, Ok(pgid)) = (own_group, i32::try_from(child.id())) {
        // SAFETY: kill(2) with a negative pid signals that process group,
        // which the child leads (process_group(0) above); no memory involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last lines of a child's stderr, for a one-line reason.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    let joined = lines[start..].join(" / ");
    if joined.is_empty() {
        "no output".into()
    } else {
        joined
    }
}
