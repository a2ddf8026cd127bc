//! Test harness for dialpool: throwaway PostgreSQL and MariaDB servers (and
//! PgBouncer in front of PostgreSQL) in temp dirs on loopback, and real network faults (refused port, full accept queue,
//! silent peer, network namespaces with iptables DROP, unreachable loopback,
//! dead or NXDOMAIN-answering resolvers).
//!
//! Everything is real and stays on this machine: servers listen on 127.0.0.1
//! (and ::1), faults use loopback or namespaces this crate creates and deletes.
//! It does not depend on the dialpool crates, so core's integration tests can
//! use it as a dev-dependency and the `dialpool demo` command can reuse it.
//!
//! See `tests/README.md` for the environment variables and how to run things.

#![deny(missing_docs)]

mod install;
mod mariadb;
mod pg;
mod pgbouncer;
mod util;

pub mod fault;
pub mod line;
pub mod netns;
pub mod tls;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, Once};

pub use install::{ensure_installed, pg_bin_dir, pgbouncer_bin};
pub use mariadb::{MariaDbOptions, MariaDbServer};
pub use pg::{PgOptions, PgServer};
pub use pgbouncer::{PgBouncer, PgBouncerOptions, PoolMode, Upstream};

/// Login role / user the servers create.
pub const DB_USER: &str = "dialpool";
/// Its password.
pub const DB_PASSWORD: &str = "dp-secret-pw";
/// The database the servers create, owned by / granted to [`DB_USER`].
pub const DB_NAME: &str = "dialpool";

/// Set by the runner: URL of the shared PostgreSQL server.
pub const ENV_PG_URL: &str = "DIALPOOL_TEST_PG_URL";
/// Set by the runner: CA file (PEM) of the shared PostgreSQL server.
pub const ENV_PG_CA: &str = "DIALPOOL_TEST_PG_CA";
/// Set by the runner: URL of the shared MariaDB server.
pub const ENV_MARIADB_URL: &str = "DIALPOOL_TEST_MARIADB_URL";
/// Set by the runner: CA file (PEM) of the shared MariaDB server.
pub const ENV_MARIADB_CA: &str = "DIALPOOL_TEST_MARIADB_CA";
/// `1` makes tests that would skip fail instead (runner and CI set it).
pub const ENV_REQUIRE_FAULTS: &str = "DIALPOOL_REQUIRE_FAULTS";

/// Connection facts of a server a test should use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedServer {
    /// `postgres://…` or `mysql://…` with user, password, 127.0.0.1, port, db.
    pub url: String,
    /// CA that signed the server certificate (SAN `localhost` only), if TLS.
    pub ca_file: Option<PathBuf>,
    /// TCP port on 127.0.0.1.
    pub port: u16,
}

/// True when the env var `DIALPOOL_REQUIRE_FAULTS=1` (set by the runner and
/// CI): a test that would skip must fail instead, so a CI machine that lost
/// root or iptables cannot turn the fault tests silently green.
pub fn faults_required() -> bool {
    std::env::var(ENV_REQUIRE_FAULTS).is_ok_and(|v| v == "1")
}

/// Call when a test cannot run here (not root, no `ip`, no iptables): prints
/// `SKIPPED <test>: <reason>` to stderr and returns, so a plain `cargo test`
/// on a developer laptop still passes; panics instead when
/// [`faults_required`].
///
/// The line is written to the stderr handle directly rather than with
/// `eprintln!`, which libtest captures and shows only for failing tests: a
/// skip must stay visible (and greppable with `^SKIPPED `) in a normal run.
pub fn skip(test: &str, reason: &str) {
    if faults_required() {
        panic!("{test} cannot run ({reason}) but {ENV_REQUIRE_FAULTS}=1 forbids skipping");
    }
    // One write, starting on a fresh line: libtest may have half a line
    // (`test x ... ` or progress dots) on the terminal already.
    let line = format!("\nSKIPPED {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The PostgreSQL server a test should use.
///
/// When `DIALPOOL_TEST_PG_URL` is set (by `dialpool-testkit run`), returns it
/// with `DIALPOOL_TEST_PG_CA`. Otherwise starts one private server with TLS
/// for this process (after [`ensure_installed`]), shared by all its tests and
/// stopped at process exit; a start-up error is remembered so later tests
/// fail at once instead of waiting again.
///
/// Trade-off of the private server: it is stopped by an `atexit` handler, as
/// statics are never dropped. That runs on a normal exit of the test binary
/// (including failed tests) but not when the process is killed by a signal
/// (Ctrl-C, a nextest timeout). Then the server still dies, through
/// PR_SET_PDEATHSIG, and its temp dir is removed by the next start. Under
/// `cargo nextest`, every test is its own process and would start its own
/// server (~2 s each): use the runner there.
pub fn shared_pg() -> Result<SharedServer, String> {
    if let Some(s) = from_env(ENV_PG_URL, ENV_PG_CA)? {
        return Ok(s);
    }
    static SLOT: Mutex<Option<Result<SharedServer, String>>> = Mutex::new(None);
    let mut slot = SLOT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = slot.as_ref() {
        return r.clone();
    }
    let result = ensure_installed().and_then(|()| {
        let server = PgServer::start(PgOptions {
            tls: true,
            ..Default::default()
        })?;
        let shared = SharedServer {
            url: server.url(),
            ca_file: server.ca_file(),
            port: server.port(),
        };
        keep_until_exit(KeptServer::Pg(server));
        Ok(shared)
    });
    *slot = Some(result.clone());
    result
}

/// The MariaDB server a test should use; like [`shared_pg`] with
/// `DIALPOOL_TEST_MARIADB_URL` / `DIALPOOL_TEST_MARIADB_CA`.
pub fn shared_mariadb() -> Result<SharedServer, String> {
    if let Some(s) = from_env(ENV_MARIADB_URL, ENV_MARIADB_CA)? {
        return Ok(s);
    }
    static SLOT: Mutex<Option<Result<SharedServer, String>>> = Mutex::new(None);
    let mut slot = SLOT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = slot.as_ref() {
        return r.clone();
    }
    let result = ensure_installed().and_then(|()| {
        let server = MariaDbServer::start(MariaDbOptions {
            tls: true,
            ..Default::default()
        })?;
        let shared = SharedServer {
            url: server.url(),
            ca_file: server.ca_file(),
            port: server.port(),
        };
        keep_until_exit(KeptServer::MariaDb(server));
        Ok(shared)
    });
    *slot = Some(result.clone());
    result
}

/// Reads a server from the runner's env vars, if set.
fn from_env(url_var: &str, ca_var: &str) -> Result<Option<SharedServer>, String> {
    let Some(url) = std::env::var(url_var).ok().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let port = port_of_url(&url).ok_or_else(|| format!("{url_var}={url:?} has no port"))?;
    let ca_file = std::env::var_os(ca_var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    Ok(Some(SharedServer { url, ca_file, port }))
}

/// The port of `scheme://user:pw@host:PORT/db`.
fn port_of_url(url: &str) -> Option<u16> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    hostport.rsplit_once(':')?.1.parse().ok()
}

enum KeptServer {
    Pg(PgServer),
    MariaDb(MariaDbServer),
}

static KEPT: Mutex<Vec<KeptServer>> = Mutex::new(Vec::new());

fn keep_until_exit(server: KeptServer) {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a plain extern "C" fn with no arguments.
        if unsafe { libc::atexit(stop_kept_servers) } != 0 {
            eprintln!(
                "testkit: atexit failed; the shared server stops only when this process dies"
            );
        }
    });
    KEPT.lock().unwrap_or_else(|p| p.into_inner()).push(server);
}

extern "C" fn stop_kept_servers() {
    // try_lock: never block process exit on a lock some dying thread holds.
    let servers = match KEPT.try_lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(std::sync::TryLockError::Poisoned(p)) => std::mem::take(&mut *p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for s in servers {
        match s {
            KeptServer::Pg(s) => drop(s),
            KeptServer::MariaDb(s) => drop(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::port_of_url;

    #[test]
    fn url_port() {
        assert_eq!(
            port_of_url("postgres://dialpool:dp-secret-pw@127.0.0.1:5433/dialpool"),
            Some(5433)
        );
        assert_eq!(port_of_url("mysql://u:p@[::1]:3307/db?x=1"), Some(3307));
        assert_eq!(port_of_url("mysql://127.0.0.1/db"), None);
    }
}
