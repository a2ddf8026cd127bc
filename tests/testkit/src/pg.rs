//! A private PostgreSQL server in a temp dir.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::install::pg_bin_dir;
use crate::util::{
    chown, free_port, ipv6_loopback_available, is_root, lookup_account, make_temp_dir, run_checked,
    spawn_daemon, stop_child, sweep_stale_dirs, tail_file, write_file, Account, SERVER_PID_FILE,
};
use crate::{DB_NAME, DB_PASSWORD, DB_USER};

/// How long start() waits for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before the harness escalates to an
/// immediate one (SIGQUIT), and that one before SIGKILL.
const FAST_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long start_again() keeps retrying when the old port is still taken.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

/// Options for [`PgServer::start`].
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// Generate a CA and a `localhost` certificate and turn `ssl` on.
    pub tls: bool,
    /// Extra `postgresql.conf` settings, applied after the harness's own so
    /// they win, e.g. `("idle_session_timeout", "1s")`. Values are written
    /// quoted, so give them as you would inside quotes.
    pub settings: Vec<(String, String)>,
    /// Lines put at the top of `pg_hba.conf` (first match wins), e.g.
    /// `host all dp_md5 127.0.0.1/32 md5` to test one authentication method
    /// per user.
    pub hba: Vec<String>,
}

/// A throwaway PostgreSQL server: fresh `initdb` in a temp dir, listening on
/// 127.0.0.1 (and ::1 when available) on a free port, scram-sha-256 for TCP,
/// role `dialpool` / database `dialpool`.
///
/// Drop stops it with an immediate shutdown (no checkpoint: the data is thrown
/// away anyway) and removes the temp dir, also when the test panicked. If the
/// owning process dies without unwinding, the server gets SIGQUIT through
/// PR_SET_PDEATHSIG and the next start() removes the orphaned dir.
#[derive(Debug)]
pub struct PgServer {
    root: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    tls: bool,
    version: String,
    /// The account the server runs as (`postgres` when we are root).
    owner: Option<Account>,
    child: Option<Child>,
}

impl PgServer {
    /// Creates, configures and starts the server, and waits (≤ 30 s) until it
    /// accepts connections. The error includes the server log tail.
    pub fn start(opts: PgOptions) -> Result<PgServer, String> {
        let bin = pg_bin_dir().ok_or(
            "PostgreSQL binaries not found (initdb/postgres/psql); call \
             dialpool_testkit::ensure_installed() or `apt-get install postgresql`",
        )?;
        sweep_stale_dirs("pg");
        // initdb refuses to run as root: run everything as `postgres` then.
        let owner = if is_root() {
            Some(lookup_account("postgres")?.ok_or(
                "running as root but there is no `postgres` account to run initdb as \
                 (it comes with the postgresql package)",
            )?)
        } else {
            None
        };
        let root = make_temp_dir("pg")?;
        let mut server = PgServer {
            data: root.join("data"),
            root,
            bin,
            port: 0,
            tls: opts.tls,
            version: String::new(),
            owner,
            child: None,
        };
        // On any error below, dropping `server` removes the dir.
        server.init(owner, &opts)?;
        server.launch()?;
        server.create_role_and_db()?;
        Ok(server)
    }

    fn command(&self, program: &str, owner: Option<Account>) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(&self.root)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGHOST")
            .env_remove("PGPORT");
        if let Some(a) = owner {
            cmd.uid(a.uid).gid(a.gid).env("HOME", &self.root);
        }
        cmd
    }

    fn init(&mut self, owner: Option<Account>, opts: &PgOptions) -> Result<(), String> {
        if let Some(a) = owner {
            chown(&self.root, a)?;
        }
        // World-traversable so ca.pem and the socket are usable by any local
        // user; the data dir inside stays private (PostgreSQL insists).
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", self.root.display()))?;
        run_checked(
            self.command("initdb", owner)
                .arg("-D")
                .arg(&self.data)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]),
            "initdb",
        )?;

        if !opts.hba.is_empty() {
            let path = self.data.join("pg_hba.conf");
            let old =
                fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
            let mut new = String::from("# dialpool testkit: per-test entries first\n");
            for line in &opts.hba {
                new.push_str(line);
                new.push('\n');
            }
            new.push_str(&old);
            write_file(&path, new.as_bytes(), 0o600, owner)?;
        }

        let v6 = ipv6_loopback_available();
        let mut conf = String::from("\n# dialpool testkit\n");
        let listen = if v6 { "127.0.0.1,::1" } else { "127.0.0.1" };
        let mut set = |k: &str, v: &str| {
            conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        };
        set("listen_addresses", listen);
        set("unix_socket_directories", &self.root.to_string_lossy());
        set("max_connections", "200");
        set("shared_buffers", "32MB");
        set("fsync", "off");
        set("synchronous_commit", "off");
        set("full_page_writes", "off");
        set("logging_collector", "off");
        if opts.tls {
            let certs = crate::tls::generate(&["localhost"])?;
            write_file(
                &self.data.join("server.crt"),
                certs.cert_pem.as_bytes(),
                0o644,
                owner,
            )?;
            // PostgreSQL refuses a key readable by group/others.
            write_file(
                &self.data.join("server.key"),
                certs.key_pem.as_bytes(),
                0o600,
                owner,
            )?;
            write_file(
                &self.root.join("ca.pem"),
                certs.ca_pem.as_bytes(),
                0o644,
                None,
            )?;
            set("ssl", "on");
            set("ssl_cert_file", "server.crt");
            set("ssl_key_file", "server.key");
        }
        for (k, v) in &opts.settings {
            set(k, v);
        }
        // The port goes in a separate included file, rewritten per attempt.
        conf.push_str("include 'testkit_port.conf'\n");
        let path = self.data.join("postgresql.conf");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        f.write_all(conf.as_bytes())
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    fn launch(&mut self) -> Result<(), String> {
        let v6 = ipv6_loopback_available();
        let mut last_err = String::new();
        // A free port can be taken by someone else before the server binds
        // it: retry a few times with a new one.
        for _attempt in 0..3 {
            self.port = free_port(v6)?;
            write_file(
                &self.data.join("testkit_port.conf"),
                format!("port = {}\n", self.port).as_bytes(),
                0o644,
                self.owner,
            )?;
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err((e, in_use)) => {
                    last_err = e;
                    if !in_use {
                        break;
                    }
                }
            }
        }
        Err(format!("PostgreSQL did not start: {last_err}"))
    }

    /// Starts the postmaster on the configured port and waits until it
    /// accepts connections. On failure the process is stopped and the error
    /// carries the log tail, plus whether the port was taken.
    fn spawn_and_wait(&mut self) -> Result<(), (String, bool)> {
        // Only the lines written by this attempt count for "port in use".
        let log_start = fs::metadata(self.log_path()).map_or(0, |m| m.len());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| (format!("open server log: {e}"), false))?;
        let log2 = log
            .try_clone()
            .map_err(|e| (format!("dup log fd: {e}"), false))?;
        let mut cmd = self.command("postgres", self.owner);
        cmd.arg("-D")
            .arg(&self.data)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SIGQUIT is PostgreSQL's immediate shutdown.
        let child = spawn_daemon(cmd, libc::SIGQUIT)
            .map_err(|e| (format!("cannot start postgres: {e}"), false))?;
        let _ = fs::write(self.root.join(SERVER_PID_FILE), child.id().to_string());
        self.child = Some(child);
        match self.wait_ready() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stop();
                let new_lines = read_from(&self.log_path(), log_start);
                let in_use = new_lines.contains("could not bind")
                    || new_lines.contains("Address already in use");
                let log = self.log_tail(30);
                Err((format!("{e}\n--- server log tail ---\n{log}"), in_use))
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("postgres exited during start-up ({status})"));
                }
            }
            if pg_probe(addr, "postgres", "postgres") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not accepting connections on {addr} after {}s",
                    START_TIMEOUT.as_secs()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn create_role_and_db(&mut self) -> Result<(), String> {
        let out = self.psql_as_superuser(&[
            &format!("CREATE ROLE {DB_USER} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'"),
            &format!("CREATE DATABASE {DB_NAME} OWNER {DB_USER}"),
            "SHOW server_version",
        ])?;
        self.version = out.trim().to_string();
        Ok(())
    }

    fn psql_as_superuser(&self, statements: &[&str]) -> Result<String, String> {
        let mut cmd = self.command("psql", None);
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .arg("-h")
        .arg(&self.root)
        .arg("-p")
        .arg(self.port.to_string());
        for s in statements {
            cmd.arg("-c").arg(s);
        }
        let out = run_checked(&mut cmd, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs SQL as the `postgres` superuser over the unix socket and returns
    /// psql's unaligned, tuples-only output. Each statement runs on its own
    /// (so `CREATE DATABASE` works); handy for `pg_terminate_backend` in tests.
    pub fn psql(&self, statements: &[&str]) -> Result<String, String> {
        self.psql_as_superuser(statements)
    }

    /// `postgres://dialpool:dp-secret-pw@127.0.0.1:PORT/dialpool`
    pub fn url(&self) -> String {
        format!(
            "postgres://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{}/{DB_NAME}",
            self.port
        )
    }

    /// The TCP port (same on 127.0.0.1 and ::1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate (PEM) that signed the server certificate, when tls.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.root.join("ca.pem"))
    }

    /// The PGDATA directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The temp dir holding everything (data dir, socket, log, ca.pem); Drop
    /// removes it.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The directory of the unix socket `.s.PGSQL.PORT`.
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// `server_version`, e.g. `15.14 (Debian 15.14-0+deb12u1)`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.log_path(), lines)
    }

    /// Whether the postmaster is running (started and not stopped).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the server now (immediate shutdown) but keeps its files; Drop
    /// still removes them. For tests of a server that goes away.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, libc::SIGQUIT, Duration::from_secs(10));
        }
    }

    /// Stops the server with a fast shutdown (SIGINT: sessions are
    /// terminated with 57P01, a shutdown checkpoint is written) and waits
    /// for the postmaster to exit; keeps the files, so [`start_again`]
    /// finds the same data. Bounded: after 10 s it escalates to an
    /// immediate shutdown, then SIGKILL.
    ///
    /// [`start_again`]: PgServer::start_again
    pub fn stop_fast(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on our own child, which is not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + FAST_SHUTDOWN_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        eprintln!(
            "testkit: PostgreSQL on port {} ignored a fast shutdown for {}s; immediate shutdown",
            self.port,
            FAST_SHUTDOWN_GRACE.as_secs()
        );
        stop_child(&mut child, libc::SIGQUIT, Duration::from_secs(10));
    }

    /// Starts a stopped server again on the same port and data dir and
    /// waits (≤ 30 s) until it accepts connections. Keeps retrying for up to
    /// 5 s while the port is still taken. Does nothing when it runs.
    pub fn start_again(&mut self) -> Result<(), String> {
        if self.is_running() {
            return Ok(());
        }
        self.child = None;
        let rebind_until = Instant::now() + REBIND_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err((_, true)) if Instant::now() < rebind_until => {
                    thread::sleep(Duration::from_millis(100));
                }
                Err((e, _)) => {
                    return Err(format!(
                        "PostgreSQL did not start again on port {}: {e}",
                        self.port
                    ))
                }
            }
        }
    }

    /// A fast shutdown followed by a start on the same port and data dir;
    /// returns once the server accepts connections again (bounded: ≤ 10 s
    /// to stop, ≤ 30 s to start). Clients see their sessions terminated
    /// (57P01 or a closed socket), refused connects while it is down, and
    /// possibly 57P03 ("starting up" / "shutting down") around it.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop_for(Duration::ZERO)
    }

    /// As [`restart`](PgServer::restart) with the server down for
    /// `outage` (connects refused) between the stop and the start.
    pub fn stop_for(&mut self, outage: Duration) -> Result<(), String> {
        self.stop_fast();
        thread::sleep(outage);
        self.start_again()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        if let Err(e) = fs::remove_dir_all(&self.root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("testkit: could not remove {}: {e}", self.root.display());
            }
        }
    }
}

/// The bytes of `path` from `offset` on (lossy UTF-8, at most 64 KiB).
fn read_from(path: &Path, offset: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(64 * 1024).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// One readiness probe: sends a StartupMessage for `user`/`database` and
/// reads the first reply. An authentication request ('R') or any error
/// other than 57P03 ("the database system is starting up") means the server
/// (or PgBouncer) accepts connections.
pub(crate) fn pg_probe(addr: SocketAddr, user: &str, database: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut params = Vec::new();
    for (k, v) in [("user", user), ("database", database)] {
        params.extend_from_slice(k.as_bytes());
        params.push(0);
        params.extend_from_slice(v.as_bytes());
        params.push(0);
    }
    params.push(0);
    let mut msg = Vec::with_capacity(8 + params.len());
    msg.extend_from_slice(&((8 + params.len()) as u32).to_be_bytes());
    msg.extend_from_slice(&196608u32.to_be_bytes()); // protocol 3.0
    msg.extend_from_slice(&params);
    if s.write_all(&msg).is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    if s.read_exact(&mut head).is_err() {
        return false;
    }
    match head[0] {
        b'R' => true,
        b'E' => {
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut body = vec![0u8; len.saturating_sub(4).min(8192)];
            if s.read_exact(&mut body).is_err() {
                return false;
            }
            !body.windows(6).any(|w| w == b"C57P03")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ensure_installed;
    use std::net::TcpStream;

    fn connect_refused(port: u16) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        matches!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    }

    #[test]
    fn restart_keeps_port_and_data() {
        ensure_installed().expect("ensure_installed");
        let mut pg = PgServer::start(PgOptions::default()).expect("PgServer::start");
        let port = pg.port();
        let url = pg.url();
        pg.psql(&[
            "CREATE TABLE kept (v text)",
            "INSERT INTO kept VALUES ('before')",
        ])
        .expect("psql");
        let pid = pg.pid().expect("pid");
        assert!(pg.is_running());

        let t = Instant::now();
        pg.restart().expect("restart");
        eprintln!("restart took {:?}", t.elapsed());
        assert!(pg.is_running());
        assert_eq!(pg.port(), port);
        assert_eq!(pg.url(), url);
        assert_ne!(pg.pid(), Some(pid), "a new postmaster");
        assert!(!pid_is_alive(pid), "old postmaster {pid} still running");
        assert_eq!(
            pg.psql(&["SELECT v FROM kept"]).expect("psql").trim(),
            "before"
        );
        assert!(
            pg.log_tail(200).contains("received fast shutdown request"),
            "{}",
            pg.log_tail(30)
        );

        // stop_for: refused while down, back on the same port afterwards.
        let outage = Duration::from_millis(800);
        let t = Instant::now();
        let handle = thread::spawn(move || {
            let r = pg.stop_for(outage);
            (pg, r)
        });
        let mut refused_seen = false;
        while !handle.is_finished() && t.elapsed() < Duration::from_secs(30) {
            refused_seen |= connect_refused(port);
            thread::sleep(Duration::from_millis(20));
        }
        let (mut pg, r) = handle.join().expect("stop_for thread");
        r.expect("stop_for");
        assert!(t.elapsed() >= outage, "{:?}", t.elapsed());
        assert!(
            refused_seen,
            "connects were never refused during the outage"
        );
        assert!(!connect_refused(port));
        assert_eq!(pg.port(), port);
        assert_eq!(
            pg.psql(&["SELECT count(*) FROM kept"])
                .expect("psql")
                .trim(),
            "1"
        );

        // The building blocks: stopped is stopped, start_again is idempotent.
        pg.stop_fast();
        assert!(!pg.is_running());
        assert_eq!(pg.pid(), None);
        assert!(connect_refused(port));
        pg.start_again().expect("start_again");
        pg.start_again().expect("start_again when running");
        assert!(pg.is_running());
        let root = pg.root_dir().to_path_buf();
        let pid = pg.pid().expect("pid");
        drop(pg);
        assert!(!root.exists(), "{} left behind", root.display());
        assert!(!pid_is_alive(pid), "postmaster {pid} still running");
    }

    fn pid_is_alive(pid: u32) -> bool {
        crate::util::pid_alive(pid as i32)
    }
}
