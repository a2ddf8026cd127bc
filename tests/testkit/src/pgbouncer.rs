//! A private PgBouncer in front of a PostgreSQL server, in a temp dir.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::install::{pg_bin_dir, pgbouncer_bin};
use crate::pg::pg_probe;
use crate::util::{
    chown, free_port, is_root, lookup_account, make_temp_dir, run_checked, spawn_daemon,
    stop_child, sweep_stale_dirs, tail_file, write_file, Account, SERVER_PID_FILE,
};
use crate::{PgServer, SharedServer, DB_NAME, DB_PASSWORD, DB_USER};

/// How long start() waits for PgBouncer to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// When a server connection is released back to PgBouncer's pool
/// (`pool_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PoolMode {
    /// After the client disconnects: the client owns one server session.
    Session,
    /// After each transaction: consecutive statements of one client may run
    /// on different server sessions, so session state (named prepared
    /// statements, `SET`, temp tables) does not carry over. The mode that
    /// needs `statement_cache=0` in dialpool.
    #[default]
    Transaction,
    /// After each statement; multi-statement transactions are refused.
    Statement,
}

impl PoolMode {
    /// The `pool_mode` value: `session`, `transaction` or `statement`.
    pub fn name(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// Options for [`PgBouncer::start`].
#[derive(Debug, Clone)]
pub struct PgBouncerOptions {
    /// `pool_mode`; transaction pooling by default.
    pub pool_mode: PoolMode,
    /// `auth_type` towards the clients: `scram-sha-256` (default; PgBouncer
    /// does SCRAM with the plain-text password in its userlist), `md5`,
    /// `plain` or `trust`.
    pub auth_type: String,
    /// `default_pool_size`: server connections per user/database pair.
    /// Small by default (3) so that a handful of client connections already
    /// share server sessions, as in production.
    pub default_pool_size: u32,
    /// `ignore_startup_parameters`. Empty by default: dialpool's
    /// StartupMessage carries only `user`, `database`, `client_encoding`
    /// and, when set, `application_name`, which PgBouncer knows. PgBouncer
    /// 1.18 (Debian 12) refuses `options` (SQLSTATE 08P01, "unsupported
    /// startup parameter") unless it is listed here, and then drops it
    /// silently; 1.20+ understands `options=-c name=value`.
    pub ignore_startup_parameters: Vec<String>,
    /// Extra `[pgbouncer]` settings, written after the harness's own so
    /// they win, e.g. `("server_idle_timeout", "5")`. Values are written
    /// as given (PgBouncer's ini has no quoting).
    pub settings: Vec<(String, String)>,
}

impl Default for PgBouncerOptions {
    fn default() -> Self {
        PgBouncerOptions {
            pool_mode: PoolMode::Transaction,
            auth_type: "scram-sha-256".into(),
            default_pool_size: 3,
            ignore_startup_parameters: Vec::new(),
            settings: Vec::new(),
        }
    }
}

/// The PostgreSQL server PgBouncer forwards to (IP address or host name
/// and port); it must accept `dialpool`/`dp-secret-pw` over TCP without
/// TLS, as the testkit's servers do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// An address or name PgBouncer resolves; the servers use `127.0.0.1`.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl From<&PgServer> for Upstream {
    fn from(s: &PgServer) -> Upstream {
        Upstream {
            host: "127.0.0.1".into(),
            port: s.port(),
        }
    }
}

impl From<&SharedServer> for Upstream {
    fn from(s: &SharedServer) -> Upstream {
        Upstream {
            host: "127.0.0.1".into(),
            port: s.port,
        }
    }
}

impl From<(&str, u16)> for Upstream {
    fn from((host, port): (&str, u16)) -> Upstream {
        Upstream {
            host: host.into(),
            port,
        }
    }
}

/// A throwaway PgBouncer: ini and userlist in a fresh temp dir, listening
/// on 127.0.0.1 on a free port (unix socket in the temp dir), database
/// `dialpool` forwarded to the upstream, user `dialpool` with password
/// `dp-secret-pw` (also admin of the `pgbouncer` console).
///
/// PgBouncer refuses to run as root, so as root it runs as the `postgres`
/// account, as the PostgreSQL servers do. Drop stops it (SIGTERM, SIGKILL
/// after 2 s) and removes the temp dir; if the owning process dies, it gets
/// SIGKILL through PR_SET_PDEATHSIG and the next start() removes the dir.
#[derive(Debug)]
pub struct PgBouncer {
    root: PathBuf,
    port: u16,
    upstream: Upstream,
    version: String,
    owner: Option<Account>,
    child: Option<Child>,
}

impl PgBouncer {
    /// Writes the configuration, starts PgBouncer and waits (≤ 15 s) until
    /// it answers a startup packet. The upstream need not be up yet:
    /// PgBouncer connects to it on demand. The error includes the log tail.
    pub fn start(
        upstream: impl Into<Upstream>,
        opts: PgBouncerOptions,
    ) -> Result<PgBouncer, String> {
        let bin = pgbouncer_bin().ok_or(
            "pgbouncer not found; call dialpool_testkit::ensure_installed() or \
             `apt-get install pgbouncer`",
        )?;
        sweep_stale_dirs("pgbouncer");
        let owner = if is_root() {
            Some(lookup_account("postgres")?.ok_or(
                "running as root but there is no `postgres` account to run pgbouncer as \
                 (it comes with the postgresql-common package)",
            )?)
        } else {
            None
        };
        let version = pgbouncer_version(&bin)?;
        let root = make_temp_dir("pgbouncer")?;
        let mut bouncer = PgBouncer {
            root,
            port: 0,
            upstream: upstream.into(),
            version,
            owner,
            child: None,
        };
        // On any error below, dropping `bouncer` removes the dir.
        if let Some(a) = owner {
            chown(&bouncer.root, a)?;
        }
        fs::set_permissions(&bouncer.root, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", bouncer.root.display()))?;
        // Plain-text password: PgBouncer can then do SCRAM (or md5, plain)
        // with the client and SCRAM with the server.
        write_file(
            &bouncer.userlist_path(),
            format!("\"{DB_USER}\" \"{DB_PASSWORD}\"\n").as_bytes(),
            0o600,
            owner,
        )?;
        bouncer.launch(&bin, &opts)?;
        Ok(bouncer)
    }

    fn ini_text(&self, opts: &PgBouncerOptions) -> String {
        let root = self.root.display();
        let mut ini = format!(
            "; dialpool testkit\n[databases]\n{DB_NAME} = host={} port={} dbname={DB_NAME}\n\n\
             [pgbouncer]\n",
            self.upstream.host, self.upstream.port
        );
        let mut set = |k: &str, v: &str| ini.push_str(&format!("{k} = {v}\n"));
        set("listen_addr", "127.0.0.1");
        set("listen_port", &self.port.to_string());
        set("unix_socket_dir", &root.to_string());
        set(
            "pidfile",
            &self.root.join("pgbouncer.pid").display().to_string(),
        );
        set("auth_type", &opts.auth_type);
        set("auth_file", &self.userlist_path().display().to_string());
        set("admin_users", DB_USER);
        set("pool_mode", opts.pool_mode.name());
        set("default_pool_size", &opts.default_pool_size.to_string());
        set("max_client_conn", "500");
        // Tests restart upstreams: retry a failed server login after 1 s,
        // not the default 15 s.
        set("server_login_retry", "1");
        set("server_connect_timeout", "5");
        if !opts.ignore_startup_parameters.is_empty() {
            set(
                "ignore_startup_parameters",
                &opts.ignore_startup_parameters.join(","),
            );
        }
        for (k, v) in &opts.settings {
            set(k, v);
        }
        ini
    }

    fn launch(&mut self, bin: &Path, opts: &PgBouncerOptions) -> Result<(), String> {
        let mut last_err = String::new();
        // A free port can be taken before PgBouncer binds it: retry.
        for _attempt in 0..3 {
            self.port = free_port(false)?;
            write_file(
                &self.ini_path(),
                self.ini_text(opts).as_bytes(),
                0o644,
                self.owner,
            )?;
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .map_err(|e| format!("open pgbouncer log: {e}"))?;
            if let Some(a) = self.owner {
                chown(&self.log_path(), a)?;
            }
            let log2 = log.try_clone().map_err(|e| format!("dup log fd: {e}"))?;
            let mut cmd = Command::new(bin);
            cmd.arg(self.ini_path())
                .current_dir(&self.root)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2);
            if let Some(a) = self.owner {
                cmd.uid(a.uid).gid(a.gid).env("HOME", &self.root);
            }
            let child = spawn_daemon(cmd, libc::SIGKILL)
                .map_err(|e| format!("cannot start pgbouncer: {e}"))?;
            let _ = fs::write(self.root.join(SERVER_PID_FILE), child.id().to_string());
            self.child = Some(child);
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.stop();
                    let log = self.log_tail(30);
                    let in_use = log.contains("Address already in use");
                    last_err = format!("{e}\n--- pgbouncer log tail ---\n{log}");
                    if !in_use {
                        break;
                    }
                }
            }
        }
        Err(format!("PgBouncer did not start: {last_err}"))
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("pgbouncer exited during start-up ({status})"));
                }
            }
            // PgBouncer authenticates the client itself: an authentication
            // request comes without any server connection.
            if pg_probe(addr, DB_USER, DB_NAME) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not accepting connections on {addr} after {}s",
                    START_TIMEOUT.as_secs()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `postgres://dialpool:dp-secret-pw@127.0.0.1:PORT/dialpool`
    pub fn url(&self) -> String {
        format!(
            "postgres://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{}/{DB_NAME}",
            self.port
        )
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server it forwards `dialpool` to.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// `PgBouncer 1.18.0` (the first line of `pgbouncer --version`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The temp dir holding the ini, userlist, log and socket; Drop removes it.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The configuration file.
    pub fn ini_path(&self) -> PathBuf {
        self.root.join("pgbouncer.ini")
    }

    fn userlist_path(&self) -> PathBuf {
        self.root.join("userlist.txt")
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("pgbouncer.log")
    }

    /// PgBouncer's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The last `lines` lines of PgBouncer's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.log_path(), lines)
    }

    /// Runs a command on PgBouncer's admin console (database `pgbouncer`,
    /// as `dialpool` over the unix socket) with psql and returns its
    /// unaligned, tuples-only output, e.g. `admin("SHOW SERVERS")`.
    pub fn admin(&self, command: &str) -> Result<String, String> {
        let psql = pg_bin_dir()
            .ok_or("psql not found; call dialpool_testkit::ensure_installed()")?
            .join("psql");
        let mut cmd = Command::new(psql);
        cmd.args(["-X", "-q", "-A", "-t", "-U", DB_USER, "-d", "pgbouncer"])
            .arg("-h")
            .arg(&self.root)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(command)
            .env("PGPASSWORD", DB_PASSWORD)
            .env("LC_ALL", "C")
            .env_remove("PGHOST")
            .env_remove("PGPORT");
        let out = run_checked(&mut cmd, "psql (pgbouncer console)")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops PgBouncer now (SIGTERM, its immediate shutdown in 1.18;
    /// SIGKILL after 2 s), keeping the files; Drop removes them.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, libc::SIGTERM, Duration::from_secs(2));
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.stop();
        if let Err(e) = fs::remove_dir_all(&self.root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("testkit: could not remove {}: {e}", self.root.display());
            }
        }
    }
}

/// The first line of `pgbouncer --version`.
fn pgbouncer_version(bin: &Path) -> Result<String, String> {
    let out = run_checked(Command::new(bin).arg("--version"), "pgbouncer --version")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ensure_installed, PgOptions};

    fn psql_tcp(port: u16, password: &str, sql: &str) -> std::process::Output {
        let psql = pg_bin_dir().expect("psql").join("psql");
        Command::new(psql)
            .arg(format!(
                "host=127.0.0.1 port={port} user={DB_USER} dbname={DB_NAME} sslmode=disable"
            ))
            .args(["-X", "-A", "-t", "-c", sql])
            .env("PGPASSWORD", password)
            .env_remove("PGOPTIONS")
            .output()
            .expect("run psql")
    }

    #[test]
    fn forwards_with_scram_and_drop_cleans_up() {
        ensure_installed().expect("ensure_installed");
        let pg = PgServer::start(PgOptions::default()).expect("PgServer::start");
        let bouncer = PgBouncer::start(&pg, PgBouncerOptions::default()).expect("start");
        let port = bouncer.port();
        assert_ne!(port, pg.port());
        assert_eq!(
            bouncer.url(),
            format!("postgres://dialpool:dp-secret-pw@127.0.0.1:{port}/dialpool")
        );
        assert!(
            bouncer.version().starts_with("PgBouncer 1."),
            "{}",
            bouncer.version()
        );
        assert_eq!(bouncer.upstream(), &Upstream::from(&pg));

        // Through PgBouncer to the upstream: the server port proves it.
        let ok = psql_tcp(
            port,
            DB_PASSWORD,
            "SELECT current_user || ' ' || current_database() || ' ' || inet_server_port()",
        );
        assert!(
            ok.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&ok.stderr),
            bouncer.log_tail(20)
        );
        assert_eq!(
            String::from_utf8_lossy(&ok.stdout).trim(),
            format!("dialpool dialpool {}", pg.port())
        );
        let bad = psql_tcp(port, "wrong-password", "SELECT 1");
        assert!(!bad.status.success());
        // PgBouncer 1.18 says "SASL authentication failed" for SCRAM.
        let why = String::from_utf8_lossy(&bad.stderr);
        assert!(why.contains("authentication failed"), "{why}");

        // The console answers and shows the configured mode.
        let config = bouncer.admin("SHOW CONFIG").expect("SHOW CONFIG");
        assert!(
            config
                .lines()
                .any(|l| l.starts_with("pool_mode|transaction")),
            "{config}"
        );
        let pools = bouncer.admin("SHOW POOLS").expect("SHOW POOLS");
        assert!(
            pools.lines().any(|l| l.starts_with("dialpool|dialpool|")),
            "{pools}"
        );

        let root = bouncer.root_dir().to_path_buf();
        let pid = bouncer.pid().expect("pid");
        drop(bouncer);
        assert!(!root.exists(), "{} left behind", root.display());
        assert!(
            !crate::util::pid_alive(pid as i32),
            "pgbouncer {pid} still running"
        );
    }

    #[test]
    fn session_mode_and_settings() {
        ensure_installed().expect("ensure_installed");
        let pg = PgServer::start(PgOptions::default()).expect("PgServer::start");
        let bouncer = PgBouncer::start(
            ("127.0.0.1", pg.port()),
            PgBouncerOptions {
                pool_mode: PoolMode::Session,
                auth_type: "plain".into(),
                default_pool_size: 2,
                ignore_startup_parameters: vec!["extra_float_digits".into()],
                settings: vec![("server_idle_timeout".into(), "7".into())],
            },
        )
        .expect("start");
        let config = bouncer.admin("SHOW CONFIG").expect("SHOW CONFIG");
        for want in [
            "pool_mode|session",
            "auth_type|plain",
            "default_pool_size|2",
            "ignore_startup_parameters|extra_float_digits",
            "server_idle_timeout|7",
        ] {
            assert!(
                config.lines().any(|l| l.starts_with(want)),
                "{want} not in\n{config}"
            );
        }
        let ok = psql_tcp(bouncer.port(), DB_PASSWORD, "SELECT 40 + 2");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "42");
    }
}
