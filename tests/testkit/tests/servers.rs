//! Proves the server fixtures: they start, accept TLS + scram logins as
//! `dialpool`, honour settings, and Drop removes everything.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dialpool_testkit::{
    ensure_installed, pg_bin_dir, shared_mariadb, shared_pg, MariaDbOptions, MariaDbServer,
    PgOptions, PgServer,
};

fn pid_gone(pid: u32) -> bool {
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid as i32, 0) != 0 }
}

#[test]
fn postgres_starts_serves_tls_and_drop_cleans_up() {
    ensure_installed().expect("ensure_installed");
    let pg = PgServer::start(PgOptions {
        tls: true,
        settings: vec![("idle_session_timeout".into(), "7s".into())],
        ..Default::default()
    })
    .expect("PgServer::start");
    let port = pg.port();
    assert_eq!(
        pg.url(),
        format!("postgres://dialpool:dp-secret-pw@127.0.0.1:{port}/dialpool")
    );
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
        .expect("tcp connect");
    let ca = pg.ca_file().expect("ca_file");
    assert!(ca.is_file());
    assert!(pg.data_dir().join("PG_VERSION").is_file());
    assert_eq!(
        pg.psql(&["SHOW idle_session_timeout"])
            .expect("psql")
            .trim(),
        "7s"
    );

    let psql = pg_bin_dir().expect("pg bin").join("psql");
    let login = |host: &str| {
        Command::new(&psql)
            .arg(format!(
                "host={host} port={port} user=dialpool dbname=dialpool sslmode=verify-full \
                 sslrootcert={}",
                ca.display()
            ))
            .args(["-X", "-A", "-t", "-c"])
            .arg("SELECT current_user || ' ' || current_database() || ' ' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .env("PGPASSWORD", "dp-secret-pw")
            .output()
            .expect("run psql")
    };
    let ok = login("localhost");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "dialpool dialpool true"
    );
    // The certificate names only "localhost": verify-full to the IP must fail.
    let bad = login("127.0.0.1");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("does not match host name"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let root = pg.root_dir().to_path_buf();
    let pid = pg.pid().expect("pid");
    drop(pg);
    assert!(!root.exists(), "{} left behind", root.display());
    assert!(pid_gone(pid), "postmaster {pid} still running");
}

#[test]
fn mariadb_starts_serves_tls_and_drop_cleans_up() {
    ensure_installed().expect("ensure_installed");
    let db = MariaDbServer::start(MariaDbOptions {
        tls: true,
        settings: vec![("wait_timeout".into(), "7".into())],
    })
    .expect("MariaDbServer::start");
    let port = db.port();
    assert_eq!(
        db.url(),
        format!("mysql://dialpool:dp-secret-pw@127.0.0.1:{port}/dialpool")
    );
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
        .expect("tcp connect");
    assert!(db.version().contains("MariaDB"), "{}", db.version());
    assert_eq!(db.sql("SELECT @@wait_timeout").expect("sql").trim(), "7");
    let ca = db.ca_file().expect("ca_file");

    let login = |host: &str| {
        Command::new("mariadb")
            .args(["--no-defaults", "--protocol=TCP", "-N", "-B", "-u", "dialpool"])
            .args(["-h", host])
            .arg(format!("--port={port}"))
            .arg(format!("--ssl-ca={}", ca.display()))
            .arg("--ssl-verify-server-cert")
            .args(["-D", "dialpool", "-e"])
            .arg("SELECT CONCAT(CURRENT_USER(), ' ', DATABASE(), ' ', VARIABLE_VALUE <> '') FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'")
            .env("MYSQL_PWD", "dp-secret-pw")
            .output()
            .expect("run mariadb client")
    };
    let ok = login("localhost");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "dialpool@% dialpool 1"
    );
    let bad = login("127.0.0.1");
    assert!(
        !bad.status.success(),
        "verify-server-cert accepted 127.0.0.1"
    );

    let root = db.root_dir().to_path_buf();
    let pid = db.pid().expect("pid");
    drop(db);
    assert!(!root.exists(), "{} left behind", root.display());
    assert!(pid_gone(pid), "mariadbd {pid} still running");
}

#[test]
fn shared_servers_are_reused() {
    let pg = shared_pg().expect("shared_pg");
    assert_eq!(shared_pg().expect("shared_pg again"), pg);
    assert!(pg
        .url
        .starts_with("postgres://dialpool:dp-secret-pw@127.0.0.1:"));
    assert!(pg.ca_file.as_deref().is_some_and(Path::is_file));
    let my = shared_mariadb().expect("shared_mariadb");
    assert_eq!(shared_mariadb().expect("shared_mariadb again"), my);
    for port in [pg.port, my.port] {
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
            .expect("tcp connect");
    }
}
