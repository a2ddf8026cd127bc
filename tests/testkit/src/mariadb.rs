//! A private MariaDB server in a temp dir.

use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{
    chown, find_executable, free_port, is_root, lookup_account, make_temp_dir, run_checked,
    spawn_daemon, stop_child, sweep_stale_dirs, tail_file, write_file, Account, SERVER_PID_FILE,
};
use crate::{DB_NAME, DB_PASSWORD, DB_USER};

/// How long start() waits for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Options for [`MariaDbServer::start`].
#[derive(Debug, Clone, Default)]
pub struct MariaDbOptions {
    /// Generate a CA and a `localhost` certificate and pass them as
    /// `--ssl-ca/--ssl-cert/--ssl-key`.
    pub tls: bool,
    /// Extra server options, passed as `--NAME=VALUE` after the harness's own
    /// so they win, e.g. `("wait_timeout", "1")`.
    pub settings: Vec<(String, String)>,
}

/// A throwaway MariaDB server: `mariadb-install-db` into a temp dir,
/// `mariadbd --no-defaults` on 127.0.0.1 and a free port, user `dialpool`
/// (all privileges, `mysql_native_password`) and database `dialpool`.
///
/// Drop kills it (SIGKILL: nothing in it is worth a clean shutdown) and
/// removes the temp dir, also when the test panicked. If the owning process
/// dies without unwinding, the server gets SIGKILL through PR_SET_PDEATHSIG
/// and the next start() removes the orphaned dir.
#[derive(Debug)]
pub struct MariaDbServer {
    root: PathBuf,
    data: PathBuf,
    port: u16,
    tls: bool,
    version: String,
    child: Option<Child>,
}

impl MariaDbServer {
    /// Creates and starts the server and waits (≤ 30 s) until it sends its
    /// handshake. The user and database are created by an `--init-file`,
    /// which MariaDB runs before it accepts the first connection, so they
    /// exist once start() returns. The error includes the server log tail.
    pub fn start(opts: MariaDbOptions) -> Result<MariaDbServer, String> {
        let mariadbd = find_executable("mariadbd").ok_or(
            "mariadbd not found; call dialpool_testkit::ensure_installed() or \
             `apt-get install mariadb-server`",
        )?;
        let install_db = find_executable("mariadb-install-db").ok_or(
            "mariadb-install-db not found; call dialpool_testkit::ensure_installed() or \
             `apt-get install mariadb-server`",
        )?;
        sweep_stale_dirs("mariadb");
        // mariadbd refuses to run as root without --user=root; run it as
        // `mysql` instead, which also matches how it runs in production.
        let owner = if is_root() {
            Some(lookup_account("mysql")?.ok_or(
                "running as root but there is no `mysql` account to run mariadbd as \
                 (it comes with the mariadb-server package)",
            )?)
        } else {
            None
        };
        let root = make_temp_dir("mariadb")?;
        let mut server = MariaDbServer {
            data: root.join("data"),
            root,
            port: 0,
            tls: opts.tls,
            version: String::new(),
            child: None,
        };
        // On any error below, dropping `server` removes the dir.
        server.init(&install_db, owner)?;
        server.launch(&mariadbd, owner, &opts)?;
        Ok(server)
    }

    fn command(&self, program: &Path, owner: Option<Account>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root)
            .env_remove("MYSQL_HOME")
            .env_remove("MYSQL_UNIX_PORT")
            .env_remove("MYSQL_TCP_PORT");
        if let Some(a) = owner {
            cmd.uid(a.uid).gid(a.gid).env("HOME", &self.root);
        }
        cmd
    }

    fn init(&mut self, install_db: &Path, owner: Option<Account>) -> Result<(), String> {
        if let Some(a) = owner {
            chown(&self.root, a)?;
        }
        // World-traversable so ca.pem and the socket are usable by any local
        // user; the data dir inside stays private (PostgreSQL insists).
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", self.root.display()))?;
        run_checked(
            self.command(install_db, owner)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", self.data.display()))
                .args([
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                    "--skip-name-resolve",
                    "--innodb-buffer-pool-size=16M",
                    "--innodb-log-file-size=8M",
                ]),
            "mariadb-install-db",
        )?;
        let sql = format!(
            "CREATE USER IF NOT EXISTS '{DB_USER}'@'%' IDENTIFIED BY '{DB_PASSWORD}';\n\
             GRANT ALL PRIVILEGES ON *.* TO '{DB_USER}'@'%' WITH GRANT OPTION;\n\
             CREATE DATABASE IF NOT EXISTS {DB_NAME};\n"
        );
        write_file(&self.root.join("init.sql"), sql.as_bytes(), 0o644, None)?;
        if self.tls {
            let certs = crate::tls::generate(&["localhost"])?;
            write_file(
                &self.root.join("ca.pem"),
                certs.ca_pem.as_bytes(),
                0o644,
                None,
            )?;
            write_file(
                &self.root.join("server-cert.pem"),
                certs.cert_pem.as_bytes(),
                0o644,
                None,
            )?;
            write_file(
                &self.root.join("server-key.pem"),
                certs.key_pem.as_bytes(),
                0o600,
                owner,
            )?;
        }
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    fn launch(
        &mut self,
        mariadbd: &Path,
        owner: Option<Account>,
        opts: &MariaDbOptions,
    ) -> Result<(), String> {
        let mut last_err = String::new();
        // A free port can be taken by someone else before the server binds
        // it: retry a few times with a new one.
        for _attempt in 0..3 {
            self.port = free_port(false)?;
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .map_err(|e| format!("open server log: {e}"))?;
            let log2 = log.try_clone().map_err(|e| format!("dup log fd: {e}"))?;
            let r = |name: &str| self.root.join(name).display().to_string();
            let mut cmd = self.command(mariadbd, owner);
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", self.data.display()))
                .arg(format!("--socket={}", r("mysqld.sock")))
                .arg(format!("--pid-file={}", r("mariadbd.pid")))
                .arg(format!("--tmpdir={}", self.root.display()))
                .arg(format!("--init-file={}", r("init.sql")))
                .arg(format!("--port={}", self.port))
                .args([
                    "--bind-address=127.0.0.1",
                    "--skip-name-resolve",
                    "--performance-schema=OFF",
                    "--innodb-buffer-pool-size=16M",
                    "--innodb-log-file-size=8M",
                    "--innodb-flush-log-at-trx-commit=0",
                    "--skip-log-bin",
                    "--max-connections=200",
                ]);
            if self.tls {
                cmd.arg(format!("--ssl-ca={}", r("ca.pem")))
                    .arg(format!("--ssl-cert={}", r("server-cert.pem")))
                    .arg(format!("--ssl-key={}", r("server-key.pem")));
            }
            for (k, v) in &opts.settings {
                cmd.arg(format!("--{k}={v}"));
            }
            cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
            let child = spawn_daemon(cmd, libc::SIGKILL)
                .map_err(|e| format!("cannot start mariadbd: {e}"))?;
            let _ = fs::write(self.root.join(SERVER_PID_FILE), child.id().to_string());
            self.child = Some(child);
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.stop();
                    let log = self.log_tail(30);
                    let in_use = log.contains("Address already in use")
                        || log.contains("Can't start server: Bind");
                    last_err = format!("{e}\n--- server log tail ---\n{log}");
                    if !in_use {
                        break;
                    }
                }
            }
        }
        Err(format!("MariaDB did not start: {last_err}"))
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("mariadbd exited during start-up ({status})"));
                }
            }
            if let Some(v) = mysql_handshake_version(addr) {
                self.version = v;
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no handshake from {addr} after {}s",
                    START_TIMEOUT.as_secs()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs SQL as `dialpool` through the `mariadb` client over TCP and returns
    /// its tab-separated output without column names. Handy for `KILL` or
    /// `SET GLOBAL` in tests.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        let client = find_executable("mariadb")
            .ok_or("the `mariadb` client is not installed (package mariadb-client)")?;
        let out = run_checked(
            Command::new(client)
                .args([
                    "--no-defaults",
                    "-N",
                    "-B",
                    "-h",
                    "127.0.0.1",
                    "-u",
                    DB_USER,
                ])
                .arg(format!("--port={}", self.port))
                .args(["-D", DB_NAME, "-e", sql])
                .env("MYSQL_PWD", DB_PASSWORD),
            "mariadb client",
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `mysql://dialpool:dp-secret-pw@127.0.0.1:PORT/dialpool`
    pub fn url(&self) -> String {
        format!(
            "mysql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{}/{DB_NAME}",
            self.port
        )
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate (PEM) that signed the server certificate, when tls.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.root.join("ca.pem"))
    }

    /// The datadir.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The temp dir holding everything (datadir, socket, log, ca.pem); Drop
    /// removes it.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The unix socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.root.join("mysqld.sock")
    }

    /// The version from the server handshake, e.g. `10.11.19-MariaDB-0+deb12u1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.log_path(), lines)
    }

    /// Kills the server now but keeps its files; Drop still removes them.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, libc::SIGKILL, Duration::from_secs(10));
        }
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        self.stop();
        if let Err(e) = fs::remove_dir_all(&self.root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("testkit: could not remove {}: {e}", self.root.display());
            }
        }
    }
}

/// Connects and reads the server's initial handshake packet; returns the
/// server version (without MariaDB's `5.5.5-` compatibility prefix) when it
/// is a protocol-10 handshake, None otherwise.
fn mysql_handshake_version(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    let mut body = vec![0u8; len.min(1024)];
    s.read_exact(&mut body).ok()?;
    if body.first() != Some(&10) {
        return None;
    }
    let end = body[1..].iter().position(|&b| b == 0)? + 1;
    let v = String::from_utf8_lossy(&body[1..end]).into_owned();
    Some(v.strip_prefix("5.5.5-").unwrap_or(&v).to_string())
}
