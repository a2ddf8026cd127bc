//! `dialpool-testkit`: runs a command with one shared PostgreSQL and one
//! shared MariaDB server (both with TLS), or just keeps servers up for manual
//! work. See `tests/README.md`.

use std::io;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use dialpool_testkit::{
    ensure_installed, MariaDbOptions, MariaDbServer, PgOptions, PgServer, ENV_MARIADB_CA,
    ENV_MARIADB_URL, ENV_PG_CA, ENV_PG_URL, ENV_REQUIRE_FAULTS,
};

const USAGE: &str = "usage:
  dialpool-testkit run -- <command> [args...]
      start PostgreSQL and MariaDB (TLS on) in temp dirs on 127.0.0.1, run the command with
      DIALPOOL_TEST_PG_URL, DIALPOOL_TEST_PG_CA, DIALPOOL_TEST_MARIADB_URL,
      DIALPOOL_TEST_MARIADB_CA and DIALPOOL_REQUIRE_FAULTS=1 set, then stop and remove the
      servers and exit with the command's status
  dialpool-testkit servers
      start both servers, print their URLs, and keep them until Enter, EOF or a signal";

/// The last signal received (SIGINT/SIGTERM/SIGHUP), 0 if none.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Installs a handler that only records the signal, so cleanup runs in
/// normal code afterwards. A handler (unlike SIG_IGN) is reset to the default
/// in the child on exec, so the command still dies of Ctrl-C normally.
/// No SA_RESTART: a blocking poll returns EINTR and notices the flag.
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction plus a handler that only stores an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => {
            let rest = &args[1..];
            let cmd = match rest.first().map(String::as_str) {
                Some("--") => &rest[1..],
                _ => rest,
            };
            if cmd.is_empty() {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
            run(cmd)
        }
        Some("servers") => servers(),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

struct Servers {
    pg: PgServer,
    mariadb: MariaDbServer,
}

/// Installs what is missing and starts both servers in parallel.
fn start_servers() -> Result<Servers, String> {
    ensure_installed()?;
    let pg = thread::spawn(|| {
        PgServer::start(PgOptions {
            tls: true,
            ..Default::default()
        })
    });
    let mariadb = thread::spawn(|| {
        MariaDbServer::start(MariaDbOptions {
            tls: true,
            ..Default::default()
        })
    });
    let pg = pg
        .join()
        .unwrap_or_else(|_| Err("the PostgreSQL start-up thread panicked".into()));
    let mariadb = mariadb
        .join()
        .unwrap_or_else(|_| Err("the MariaDB start-up thread panicked".into()));
    // On partial failure the started one is dropped, i.e. stopped and removed.
    let (pg, mariadb) = match (pg, mariadb) {
        (Ok(p), Ok(m)) => (p, m),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    eprintln!(
        "testkit: PostgreSQL {} started on 127.0.0.1:{} (tls on)",
        short_version(pg.version()),
        pg.port()
    );
    eprintln!(
        "testkit: MariaDB {} started on 127.0.0.1:{} (tls on)",
        short_version(mariadb.version()),
        mariadb.port()
    );
    Ok(Servers { pg, mariadb })
}

/// `15.14 (Debian …)` → `15.14`; `10.11.19-MariaDB-0+deb12u1` → `10.11.19`.
fn short_version(v: &str) -> &str {
    v.split([' ', '-']).next().unwrap_or(v)
}

fn env_for(s: &Servers) -> Vec<(&'static str, String)> {
    let path =
        |p: Option<std::path::PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
    vec![
        (ENV_PG_URL, s.pg.url()),
        (ENV_PG_CA, path(s.pg.ca_file())),
        (ENV_MARIADB_URL, s.mariadb.url()),
        (ENV_MARIADB_CA, path(s.mariadb.ca_file())),
        (ENV_REQUIRE_FAULTS, "1".into()),
    ]
}

fn stop_servers(s: Servers) {
    drop(s);
    eprintln!("testkit: servers stopped and removed");
}

fn run(cmd: &[String]) -> ExitCode {
    install_signal_handlers();
    let servers = match start_servers() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("testkit: {e}");
            return ExitCode::from(1);
        }
    };
    if SIGNAL.load(Ordering::SeqCst) != 0 {
        stop_servers(servers);
        return ExitCode::from(130);
    }
    let mut child = match Command::new(&cmd[0])
        .args(&cmd[1..])
        .envs(env_for(&servers))
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("testkit: cannot run {:?}: {e}", cmd[0]);
            stop_servers(servers);
            return ExitCode::from(127);
        }
    };
    // Wait for the child. Ctrl-C reaches it directly from the terminal; a
    // SIGTERM/SIGHUP sent to us alone is passed on. If it is still alive 15 s
    // after a signal, it is killed so cleanup can proceed.
    let mut signalled_at: Option<Instant> = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => {
                eprintln!("testkit: waiting for the command: {e}");
                let _ = child.kill();
                break child.wait().ok();
            }
        }
        let sig = SIGNAL.load(Ordering::SeqCst);
        if sig != 0 {
            match signalled_at {
                None => {
                    signalled_at = Some(Instant::now());
                    if sig != libc::SIGINT {
                        // SAFETY: kill(2) on our own child, not yet reaped.
                        unsafe { libc::kill(child.id() as i32, sig) };
                    }
                }
                Some(t) if t.elapsed() > Duration::from_secs(15) => {
                    let _ = child.kill();
                }
                Some(_) => {}
            }
        }
        thread::sleep(Duration::from_millis(20));
    };
    stop_servers(servers);
    let code = match status {
        Some(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code()
                .or_else(|| s.signal().map(|sig| 128 + sig))
                .unwrap_or(1)
        }
        None => 1,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn servers() -> ExitCode {
    install_signal_handlers();
    let servers = match start_servers() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("testkit: {e}");
            return ExitCode::from(1);
        }
    };
    // Not DIALPOOL_REQUIRE_FAULTS: by hand, a skipped fault test is fine.
    for (k, v) in env_for(&servers) {
        if k != ENV_REQUIRE_FAULTS {
            println!("export {k}='{v}'");
        }
    }
    eprintln!("testkit: press Enter (or send EOF / Ctrl-C) to stop the servers");
    wait_for_stdin_or_signal();
    stop_servers(servers);
    ExitCode::SUCCESS
}

/// Returns on a line or EOF on stdin, or on a signal. Uses poll(2) so a
/// signal interrupts the wait (std's reads retry on EINTR).
fn wait_for_stdin_or_signal() {
    loop {
        if SIGNAL.load(Ordering::SeqCst) != 0 {
            return;
        }
        let mut fds = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut fds, 1, 200) };
        if rc < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if rc > 0 {
            if fds.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                return;
            }
            let mut buf = [0u8; 256];
            // SAFETY: reading into a local buffer of the given size.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 || buf[..n as usize].contains(&b'\n') {
                return;
            }
        }
    }
}
