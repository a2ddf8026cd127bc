//! Small process, file and port helpers shared by the server and fault fixtures.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// True when running with effective uid 0.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A system account the database servers run as when we are root (both
/// initdb and mariadbd refuse to run as root, or should not).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Account {
    pub uid: u32,
    pub gid: u32,
}

/// Looks up a local account by name with the thread-safe `getpwnam_r`.
pub(crate) fn lookup_account(name: &str) -> Result<Option<Account>, String> {
    let cname = CString::new(name).map_err(|_| format!("bad account name {name:?}"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain old data; zeroed is a valid initial value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, correctly sized storage.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(format!(
            "getpwnam_r({name}) failed: {}",
            io::Error::from_raw_os_error(rc)
        ));
    }
    if result.is_null() {
        return Ok(None);
    }
    Ok(Some(Account {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    }))
}

/// Finds an executable in PATH and in the sbin directories, which a non-login
/// root shell (or CI) does not always have in PATH although `ip`, `iptables`
/// and `mariadbd` live there on Debian.
pub(crate) fn find_executable(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        dirs.push(PathBuf::from(extra));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// True when `path` is a regular file with an execute bit.
pub(crate) fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Prefix of every temp dir the servers create; the owner's pid follows so a
/// later run can tell which dirs were orphaned by a killed process.
pub(crate) fn temp_prefix(kind: &str) -> String {
    format!("dialpool-{kind}-")
}

/// Creates a fresh private directory `$TMPDIR/dialpool-KIND-PID-XXXXXX`.
pub(crate) fn make_temp_dir(kind: &str) -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    let template = base.join(format!(
        "{}{}-XXXXXX",
        temp_prefix(kind),
        std::process::id()
    ));
    let mut bytes = template.as_os_str().as_bytes().to_vec();
    bytes.push(0);
    // SAFETY: bytes is a NUL-terminated, writable buffer ending in XXXXXX.
    let p = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
    if p.is_null() {
        return Err(format!(
            "cannot create a temp dir under {}: {}",
            base.display(),
            io::Error::last_os_error()
        ));
    }
    bytes.pop();
    Ok(PathBuf::from(OsStr::from_bytes(&bytes)))
}

/// True when a process with this pid exists (a zombie counts as existing).
pub(crate) fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Name of the file in each server temp dir that records the server pid, so a
/// sweep can kill a server whose owner died without running its cleanup.
pub(crate) const SERVER_PID_FILE: &str = "testkit-server.pid";

/// Removes temp dirs of this `kind` whose owner process no longer exists,
/// killing a server still recorded in them. Such dirs are left behind when a
/// test process is killed (SIGKILL, Ctrl-C) before its cleanup ran; the server
/// itself normally died with it through PR_SET_PDEATHSIG.
pub(crate) fn sweep_stale_dirs(kind: &str) {
    let prefix = temp_prefix(kind);
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid_alive(owner) {
            continue;
        }
        let dir = entry.path();
        if let Ok(text) = fs::read_to_string(dir.join(SERVER_PID_FILE)) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let needle = dir.as_os_str().as_bytes();
                if cmdline.windows(needle.len()).any(|w| w == needle) {
                    // SAFETY: plain kill(2) on a pid whose command line names our dir.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// chown(2) one path.
pub(crate) fn chown(path: &Path, acct: Account) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(acct.uid), Some(acct.gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))
}

/// Writes a file with the given mode and, when given, owner.
pub(crate) fn write_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<Account>,
) -> Result<(), String> {
    fs::write(path, contents).map_err(|e| format!("write {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    if let Some(acct) = owner {
        chown(path, acct)?;
    }
    Ok(())
}

/// True when ::1 can be bound (IPv6 loopback configured and not disabled).
pub(crate) fn ipv6_loopback_available() -> bool {
    TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// Picks a port that is currently free on 127.0.0.1 (and on ::1 when
/// `also_v6`). Another process can take it before the server binds it; the
/// callers retry with a new port when the server reports the address in use.
pub(crate) fn free_port(also_v6: bool) -> Result<u16, String> {
    for _ in 0..20 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
        let port = l
            .local_addr()
            .map_err(|e| format!("local_addr: {e}"))?
            .port();
        if !also_v6 || TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).is_ok() {
            return Ok(port);
        }
    }
    Err("no port free on both 127.0.0.1 and ::1 after 20 tries".into())
}

/// The last `lines` lines of a text file (lossy UTF-8), reading at most the
/// last 64 KiB so a huge log cannot blow up an error message.
pub(crate) fn tail_file(path: &Path, lines: usize) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    tail_text(&String::from_utf8_lossy(&buf), lines)
}

/// The last `lines` lines of `text`.
pub(crate) fn tail_text(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a command to completion, turning a spawn failure or non-zero exit into
/// an error that names the command and shows the tail of its output.
pub(crate) fn run_checked(cmd: &mut Command, what: &str) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            tail_text(&String::from_utf8_lossy(&out.stdout), 20),
            tail_text(&String::from_utf8_lossy(&out.stderr), 20)
        ));
    }
    Ok(out)
}

type SpawnJob = (Command, libc::c_int, mpsc::Sender<io::Result<Child>>);

/// Spawns a long-lived server process from one permanent helper thread, with
/// PR_SET_PDEATHSIG set to `death_signal` and in its own process group.
///
/// Why a dedicated thread: the kernel delivers the parent-death signal when the
/// *thread* that forked the child exits, not the process. Test threads and the
/// runner's start-up threads end long before the server should, so they must
/// not be the parent. The helper thread lives until the process ends, so the
/// server gets the signal exactly when the owning process dies, even by
/// SIGKILL, which no atexit or Drop can cover. The own process group keeps a
/// terminal's Ctrl-C away from the server: the owner decides when it stops.
pub(crate) fn spawn_daemon(cmd: Command, death_signal: libc::c_int) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let spawn = thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                while let Ok((mut cmd, sig, reply)) = rx.recv() {
                    cmd.process_group(0);
                    // SAFETY: the closure only calls prctl(2), which is
                    // async-signal-safe, between fork and exec.
                    unsafe {
                        cmd.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) != 0 {
                                return Err(io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = spawn {
            eprintln!("testkit: cannot start the spawner thread: {e}");
        }
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, death_signal, reply_tx))
        .map_err(|_| io::Error::other("testkit spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("testkit spawner thread did not answer"))?
}

/// Sends `sig` to the child, waits up to `grace` for it to exit, then SIGKILLs
/// and reaps it. Bounded: never waits longer than `grace` plus a few seconds.
pub(crate) fn stop_child(child: &mut Child, sig: libc::c_int, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = child.id() as i32;
    // SAFETY: kill(2) on our own child, which is not yet reaped.
    unsafe { libc::kill(pid, sig) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
