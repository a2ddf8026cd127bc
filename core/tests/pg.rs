//! PostgreSQL sessions against the throwaway server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialpool::deadline::CancelToken;
use dialpool::pg::{PgConnection, PgConnector, TxStatus};
use dialpool::{Code, Config, Deadline, Layer};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The shared server's URL with extra options.
fn url(extra: &str) -> String {
    let pg = dialpool_testkit::shared_pg().expect("PostgreSQL");
    let sep = if pg.url.contains('?') { '&' } else { '?' };
    format!("{}{sep}{extra}", pg.url)
}

fn connector(extra: &str) -> PgConnector {
    let config = Config::parse(&url(extra)).expect("url");
    PgConnector::new(Arc::new(config)).expect("connector")
}

async fn connect(extra: &str) -> PgConnection {
    connector(extra).connect(None).await.expect("connect")
}

#[test]
fn login_over_tls_with_scram_and_simple_queries() {
    let pg = dialpool_testkit::shared_pg().expect("PostgreSQL");
    let ca = pg.ca_file.expect("tls");
    let url = format!(
        "postgres://dialpool:dp-secret-pw@localhost:{}/dialpool?sslmode=verify-full&sslrootcert={}&application_name=dp-test",
        pg.port,
        ca.display()
    );
    rt().block_on(async {
        let c = PgConnector::new(Arc::new(Config::parse(&url).expect("url"))).expect("connector");
        let mut conn = c.connect(None).await.expect("login");
        assert!(conn.is_tls());
        assert!(conn.timings().tls.is_some());
        let r = conn
            .query("SELECT 1 AS one, NULL::text AS nothing, 'żółw' AS turtle, current_setting('application_name') AS app", &[], None, None)
            .await
            .expect("select");
        assert_eq!(r.row_count(), 1);
        let names: Vec<&str> = r.columns().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["one", "nothing", "turtle", "app"]);
        assert_eq!(r.columns()[0].type_id, 23);
        assert_eq!(r.get(0, 0), Some("1"));
        assert!(r.is_null(0, 1));
        assert_eq!(r.get(0, 2), Some("żółw"));
        assert_eq!(r.get(0, 3), Some("dp-test"));
        assert_eq!(r.command_tag, "SELECT 1");
        // Channel binding was used when the server offered it.
        let r = conn
            .query("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[], None, None)
            .await
            .expect("pg_stat_ssl");
        assert_eq!(r.get(0, 0), Some("t"));
        conn.close().await;
    });
}

#[test]
fn parameters_nulls_and_affected_rows() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable").await;
        let r = conn
            .query(
                "SELECT $1::int + $2::int, $3::text IS NULL",
                &[Some("2"), Some("40"), None],
                None,
                None,
            )
            .await
            .expect("params");
        assert_eq!(r.get(0, 0), Some("42"));
        assert_eq!(r.get(0, 1), Some("t"));
        conn.execute("CREATE TEMP TABLE t (id int, name text)", &[], None, None)
            .await
            .expect("create");
        let n = conn
            .execute(
                "INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, $1::int) g",
                &[Some("5")],
                None,
                None,
            )
            .await
            .expect("insert");
        assert_eq!(n, 5);
        let n = conn
            .execute(
                "UPDATE t SET name = $1 WHERE id > $2::int",
                &[Some("x"), Some("3")],
                None,
                None,
            )
            .await
            .expect("update");
        assert_eq!(n, 2);
        // The same statement again goes through the cache (no Parse).
        for i in 0..3 {
            let r = conn
                .query(
                    "SELECT name FROM t WHERE id = $1::int",
                    &[Some(&(i + 1).to_string())],
                    None,
                    None,
                )
                .await
                .expect("cached");
            assert_eq!(r.get(0, 0).map(str::to_string), Some(format!("n{}", i + 1)));
            assert_eq!(r.columns()[0].name, "name");
        }
    });
}

#[test]
fn server_errors_keep_the_session_usable() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable").await;
        let e = conn
            .query("SELECT * FROM no_such_table", &[], None, None)
            .await
            .expect_err("42P01");
        assert_eq!(e.code(), Code::ServerError);
        assert_eq!(e.layer(), Layer::Query);
        assert_eq!(e.sqlstate(), Some("42P01"));
        assert!(e.to_string().contains("no_such_table"), "{e}");
        let e = conn
            .query("SELECT $1::int", &[Some("not a number")], None, None)
            .await
            .expect_err("22P02");
        assert_eq!(e.sqlstate(), Some("22P02"));
        let r = conn
            .query("SELECT 2", &[], None, None)
            .await
            .expect("still usable");
        assert_eq!(r.get(0, 0), Some("2"));
        conn.execute("BEGIN", &[], None, None).await.expect("begin");
        assert_eq!(conn.tx_status(), TxStatus::InTransaction);
        let _ = conn
            .query("SELECT 1/0", &[], None, None)
            .await
            .expect_err("22012");
        assert_eq!(conn.tx_status(), TxStatus::Failed);
        conn.reset().await.expect("rollback");
        assert_eq!(conn.tx_status(), TxStatus::Idle);
        assert!(conn.is_clean());
    });
}

#[test]
fn wrong_password_is_auth_failed_without_the_password() {
    let pg = dialpool_testkit::shared_pg().expect("PostgreSQL");
    let url = format!(
        "postgres://dialpool:Wr0ngSecret@127.0.0.1:{}/dialpool?sslmode=disable",
        pg.port
    );
    rt().block_on(async {
        let c = PgConnector::new(Arc::new(Config::parse(&url).expect("url"))).expect("connector");
        let e = c.connect(None).await.map(|_| ()).expect_err("bad password");
        assert_eq!(e.code(), Code::AuthFailed, "{e}");
        assert_eq!(e.layer(), Layer::Login);
        assert!(!e.is_retryable());
        assert_eq!(e.sqlstate(), Some("28P01"));
        assert!(!format!("{e} {e:?}").contains("Wr0ngSecret"));
    });
    let url = format!(
        "postgres://dialpool:dp-secret-pw@127.0.0.1:{}/no_such_db?sslmode=disable",
        pg.port
    );
    rt().block_on(async {
        let c = PgConnector::new(Arc::new(Config::parse(&url).expect("url"))).expect("connector");
        let e = c.connect(None).await.map(|_| ()).expect_err("no db");
        assert_eq!(e.code(), Code::ServerError, "{e}");
        assert_eq!(e.layer(), Layer::Login);
        assert_eq!(e.sqlstate(), Some("3D000"));
    });
}

#[test]
fn query_timeout_cancels_on_the_server_and_keeps_the_connection() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable&query_timeout=1s").await;
        let pid = conn.backend_pid().expect("pid");
        let start = Instant::now();
        let e = conn
            .query("SELECT pg_sleep(5)", &[], None, None)
            .await
            .expect_err("timeout");
        let took = start.elapsed();
        assert_eq!(e.code(), Code::QueryTimeout, "{e}");
        assert_eq!(e.layer(), Layer::Query);
        assert_eq!(e.limit(), Some("query_timeout"));
        assert_eq!(e.sqlstate(), Some("57014"), "{e}");
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert!(conn.is_clean(), "kept after a confirmed cancel");
        // The server no longer runs it: check from another session.
        let mut other = connect("sslmode=disable").await;
        let r = other
            .query(
                "SELECT state FROM pg_stat_activity WHERE pid = $1::int",
                &[Some(&pid.to_string())],
                None,
                None,
            )
            .await
            .expect("activity");
        assert_eq!(r.get(0, 0), Some("idle"));
        let r = conn
            .query("SELECT 3", &[], None, None)
            .await
            .expect("reused");
        assert_eq!(r.get(0, 0), Some("3"));
        // A caller deadline shorter than query_timeout is named.
        let e = conn
            .query(
                "SELECT pg_sleep(5)",
                &[],
                Some(Deadline::caller(Duration::from_millis(300))),
                None,
            )
            .await
            .expect_err("deadline");
        assert_eq!(e.limit(), Some("deadline"));
        // A caller cancel gives CANCELLED, also cancelled on the server.
        let token = CancelToken::new();
        let t2 = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            t2.cancel();
        });
        let e = conn
            .query("SELECT pg_sleep(5)", &[], None, Some(&token))
            .await
            .expect_err("cancel");
        assert_eq!(e.code(), Code::Cancelled, "{e}");
        assert_eq!(e.sqlstate(), Some("57014"));
        assert!(conn.is_clean());
    });
}

// ---- through the pool ----

async fn pool(extra: &str) -> dialpool::Pool {
    dialpool::Pool::open(&url(extra)).await.expect("pool")
}

#[test]
fn pool_wrong_password_fails_at_once() {
    let pg = dialpool_testkit::shared_pg().expect("PostgreSQL");
    let url = format!(
        "postgres://dialpool:Wr0ngSecret@127.0.0.1:{}/dialpool?sslmode=disable&acquire_timeout=10s",
        pg.port
    );
    rt().block_on(async {
        let pool = dialpool::Pool::open(&url).await.expect("pool");
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                pool.query("SELECT 1", &[], None).await.map(|_| ())
            }));
        }
        for t in tasks {
            let e = t.await.expect("task").expect_err("bad password");
            assert_eq!(e.code(), Code::AuthFailed, "{e}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "not after acquire_timeout"
        );
        pool.close();
    });
}

#[test]
fn pool_never_hands_out_a_terminated_connection() {
    rt().block_on(async {
        let pool = pool("sslmode=disable&max_open=2&ping_after=1h").await;
        let mut admin = connect("sslmode=disable").await;
        for round in 0..20 {
            let pid = {
                let mut c = pool.acquire(None).await.expect("acquire");
                let r = c
                    .query("SELECT pg_backend_pid()", &[], None)
                    .await
                    .expect("pid");
                r.get(0, 0).expect("pid").to_string()
            };
            // Kill the idle pooled session behind the pool's back.
            admin
                .query(
                    "SELECT pg_terminate_backend($1::int)",
                    &[Some(&pid)],
                    None,
                    None,
                )
                .await
                .expect("terminate");
            // Give the server a moment to close the socket.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let r = pool.query("SELECT 1", &[], None).await;
            assert!(r.is_ok(), "round {round}: {:?}", r.err());
        }
        assert!(pool.stats().closed_dead >= 20, "{:?}", pool.stats());
        // A busy session killed mid-query: CONNECTION_LOST, not retryable.
        let mut c = pool.acquire(None).await.expect("acquire");
        let pid = c
            .query("SELECT pg_backend_pid()", &[], None)
            .await
            .expect("pid")
            .get(0, 0)
            .expect("pid")
            .to_string();
        let killer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            admin
                .query(
                    "SELECT pg_terminate_backend($1::int)",
                    &[Some(&pid)],
                    None,
                    None,
                )
                .await
                .expect("terminate");
        });
        let e = c
            .query("SELECT pg_sleep(5)", &[], None)
            .await
            .expect_err("killed");
        killer.await.expect("killer");
        assert!(
            matches!(e.code(), Code::ConnectionLost | Code::ServerError),
            "{e}"
        );
        assert!(!e.is_retryable());
        drop(c);
        pool.query("SELECT 1", &[], None)
            .await
            .expect("pool recovers");
    });
}

#[test]
fn pool_rolls_back_an_open_transaction_on_release() {
    rt().block_on(async {
        let pool = pool("sslmode=disable&max_open=1").await;
        pool.execute(
            "CREATE TABLE IF NOT EXISTS rollback_probe (v int)",
            &[],
            None,
        )
        .await
        .expect("create");
        pool.execute("TRUNCATE rollback_probe", &[], None)
            .await
            .expect("truncate");
        {
            let mut c = pool.acquire(None).await.expect("acquire");
            c.execute("BEGIN", &[], None).await.expect("begin");
            c.execute("INSERT INTO rollback_probe VALUES (1)", &[], None)
                .await
                .expect("insert");
        }
        let r = pool
            .query("SELECT count(*) FROM rollback_probe", &[], None)
            .await
            .expect("count");
        assert_eq!(
            r.get(0, 0),
            Some("0"),
            "the next user must not see the open transaction"
        );
        assert_eq!(pool.stats().open, 1, "the connection was reset, not closed");
    });
}

#[test]
fn pool_keeps_max_idle_time_below_idle_session_timeout() {
    rt().block_on(async {
        let mut admin = connect("sslmode=disable").await;
        admin.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dp_idle') THEN CREATE ROLE dp_idle LOGIN PASSWORD 'idle-pw'; END IF; END $$", &[], None, None).await.expect("role");
        admin.execute("ALTER ROLE dp_idle SET idle_session_timeout = '1s'", &[], None, None).await.expect("alter");
        admin.execute("GRANT CONNECT ON DATABASE dialpool TO dp_idle", &[], None, None).await.expect("grant");
        let pg = dialpool_testkit::shared_pg().expect("PostgreSQL");
        let url = format!(
            "postgres://dp_idle:idle-pw@127.0.0.1:{}/dialpool?sslmode=disable&max_open=3&ping_after=1h",
            pg.port
        );
        let pool = dialpool::Pool::open(&url).await.expect("pool");
        for _ in 0..3 {
            pool.query("SELECT 1", &[], None).await.expect("first");
        }
        let s = pool.stats();
        assert_eq!(s.server_idle_limit, Some(Duration::from_secs(1)));
        assert!(s.max_idle_time.expect("set") < Duration::from_secs(1), "{s:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        for _ in 0..10 {
            pool.query("SELECT 1", &[], None).await.expect("no error after the server's idle cut");
        }
    });
}

#[test]
fn big_results_many_parameters_and_text() {
    rt().block_on(async {
        let pool = pool("sslmode=disable").await;
        let r = pool
            .query("SELECT g, 'row ' || g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'ünï' END FROM generate_series(1, 100000) g", &[], None)
            .await
            .expect("100k rows");
        assert_eq!(r.row_count(), 100_000);
        assert_eq!(r.get(99_999, 1), Some("row 100000"));
        assert!(r.is_null(9, 2));
        assert_eq!(r.get(0, 2), Some("ünï"));
        let values: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let params: Vec<Option<&str>> = values.iter().map(|v| Some(v.as_str())).collect();
        let sql = format!(
            "SELECT {}",
            (1..=1000).map(|i| format!("${i}::int")).collect::<Vec<_>>().join(" + ")
        );
        let r = pool.query(&sql, &params, None).await.expect("1000 params");
        assert_eq!(r.get(0, 0), Some("499500"));
    });
}

#[test]
fn black_hole_on_an_established_session_gives_query_timeout_on_time() {
    if !dialpool_testkit::netns::enter(
        "black_hole_on_an_established_session_gives_query_timeout_on_time",
        dialpool_testkit::netns::NetnsSpec::default(),
    ) {
        return;
    }
    let server = dialpool_testkit::PgServer::start(dialpool_testkit::PgOptions::default())
        .expect("server in namespace");
    let url = format!(
        "{}?sslmode=disable&query_timeout=1s&cancel_timeout=500ms",
        server.url()
    );
    let c = PgConnector::new(Arc::new(Config::parse(&url).expect("url"))).expect("connector");
    let port = server.port();
    rt().block_on(async move {
        let mut conn = c.connect(None).await.expect("connect");
        conn.query("SELECT 1", &[], None, None)
            .await
            .expect("works before the hole");
        dialpool_testkit::netns::drop_tcp_port(port).expect("iptables DROP");
        let start = Instant::now();
        let e = conn
            .query("SELECT 1", &[], None, None)
            .await
            .expect_err("black hole");
        let took = start.elapsed();
        assert_eq!(e.code(), Code::QueryTimeout, "{e}");
        assert_eq!(e.limit(), Some("query_timeout"));
        let elapsed = e.elapsed().expect("elapsed");
        assert!(
            elapsed >= Duration::from_secs(1) && elapsed < Duration::from_millis(1100),
            "{e}"
        );
        // The cancel cannot get through either; it is bounded by cancel_timeout.
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert!(
            conn.is_broken(),
            "an unconfirmed cancel leaves the session unusable"
        );
        assert!(e.to_string().contains("cancel"), "{e}");
    });
}

#[test]
fn black_hole_without_query_timeout_is_cut_by_tcp_user_timeout() {
    if !dialpool_testkit::netns::enter(
        "black_hole_without_query_timeout_is_cut_by_tcp_user_timeout",
        dialpool_testkit::netns::NetnsSpec::default(),
    ) {
        return;
    }
    let server = dialpool_testkit::PgServer::start(dialpool_testkit::PgOptions::default())
        .expect("server in namespace");
    let url = format!(
        "{}?sslmode=disable&tcp_user_timeout=2s&keepalive_idle=1s&keepalive_interval=1s&keepalive_count=2",
        server.url()
    );
    let c = PgConnector::new(Arc::new(Config::parse(&url).expect("url"))).expect("connector");
    let port = server.port();
    rt().block_on(async move {
        let mut conn = c.connect(None).await.expect("connect");
        conn.query("SELECT 1", &[], None, None)
            .await
            .expect("works before the hole");
        dialpool_testkit::netns::drop_tcp_port(port).expect("iptables DROP");
        let start = Instant::now();
        let e = conn
            .query("SELECT 1", &[], None, None)
            .await
            .expect_err("black hole");
        let took = start.elapsed();
        assert_eq!(e.code(), Code::ConnectionLost, "{e}");
        assert_eq!(e.os_error(), Some(libc::ETIMEDOUT), "{e}");
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
            "{took:?}"
        );
        assert!(conn.is_broken());
    });
}

#[test]
fn every_authentication_method() {
    let server = dialpool_testkit::PgServer::start(dialpool_testkit::PgOptions {
        tls: true,
        hba: vec![
            "host all dp_trust 127.0.0.1/32 trust".into(),
            "host all dp_clear 127.0.0.1/32 password".into(),
            "host all dp_md5 127.0.0.1/32 md5".into(),
            "host all dp_scram 127.0.0.1/32 scram-sha-256".into(),
            "hostssl all dp_plus 127.0.0.1/32 scram-sha-256".into(),
            "hostnossl all dp_plus 127.0.0.1/32 reject".into(),
        ],
        ..Default::default()
    })
    .expect("server");
    server
        .psql(&[
            "CREATE ROLE dp_trust LOGIN",
            "CREATE ROLE dp_clear LOGIN PASSWORD 'clear-pw'",
            "CREATE ROLE dp_scram LOGIN PASSWORD 'scram-pw'",
            "CREATE ROLE dp_plus LOGIN PASSWORD 'plus-pw'",
            // Last: the setting may outlive the statement in psql's session.
            "SET password_encryption = 'md5'; CREATE ROLE dp_md5 LOGIN PASSWORD 'md5-pw'",
        ])
        .expect("roles");
    let ca = server.ca_file().expect("ca");
    let port = server.port();
    let cases = [
        ("dp_trust", "", "sslmode=disable"),
        ("dp_clear", "clear-pw", "sslmode=disable"),
        ("dp_md5", "md5-pw", "sslmode=disable"),
        ("dp_scram", "scram-pw", "sslmode=disable"),
        // Over TLS the server offers SCRAM-SHA-256-PLUS and dialpool binds
        // the channel to the server's certificate.
        (
            "dp_plus",
            "plus-pw",
            &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        ),
    ];
    rt().block_on(async {
        for (user, pw, extra) in cases {
            let host = if extra.contains("verify-full") {
                "localhost"
            } else {
                "127.0.0.1"
            };
            let url = format!("postgres://{user}:{pw}@{host}:{port}/dialpool?{extra}");
            let c =
                PgConnector::new(Arc::new(Config::parse(&url).expect("url"))).expect("connector");
            let mut conn = c
                .connect(None)
                .await
                .unwrap_or_else(|e| panic!("{user}: {e}"));
            let r = conn
                .query("SELECT current_user", &[], None, None)
                .await
                .expect("whoami");
            assert_eq!(r.get(0, 0), Some(user));
            let want = match user {
                "dp_trust" => "trust",
                "dp_clear" => "password",
                "dp_md5" => "md5",
                "dp_scram" => "SCRAM-SHA-256",
                _ => "SCRAM-SHA-256-PLUS",
            };
            assert_eq!(conn.auth_method(), want, "{user}");
            if !pw.is_empty() {
                let bad = format!("postgres://{user}:not-{pw}@{host}:{port}/dialpool?{extra}");
                let c = PgConnector::new(Arc::new(Config::parse(&bad).expect("url")))
                    .expect("connector");
                let e = c
                    .connect(None)
                    .await
                    .map(|_| ())
                    .expect_err("wrong password");
                assert_eq!(e.code(), Code::AuthFailed, "{user}: {e}");
                assert!(!e.to_string().contains(pw), "{e}");
            }
        }
        // The password-less URL against a password method says what to do.
        let url = format!("postgres://dp_scram@127.0.0.1:{port}/dialpool?sslmode=disable");
        let c = PgConnector::new(Arc::new(Config::parse(&url).expect("url"))).expect("connector");
        let e = c.connect(None).await.map(|_| ()).expect_err("no password");
        assert_eq!(e.code(), Code::AuthFailed, "{e}");
        assert!(e.to_string().contains("none was given"), "{e}");
    });
}

#[test]
fn a_peer_that_never_answers_the_ssl_request_is_a_tls_timeout() {
    let peer = dialpool_testkit::fault::SilentPeer::new().expect("silent peer");
    let url = format!(
        "postgres://u:p@{}/db?sslmode=prefer&tls_timeout=300ms&login_timeout=5s",
        peer.addr
    );
    rt().block_on(async {
        let c = PgConnector::new(Arc::new(Config::parse(&url).expect("url"))).expect("connector");
        let e = c.connect(None).await.map(|_| ()).expect_err("silent");
        assert_eq!(e.code(), Code::TlsTimeout, "{e}");
        assert_eq!(e.layer(), Layer::Dial);
        assert_eq!(e.limit(), Some("tls_timeout"));
        let elapsed = e.elapsed().expect("elapsed");
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(400),
            "{e}"
        );
        // Without TLS the same silence is the login's to time out.
        let url = format!(
            "postgres://u:p@{}/db?sslmode=disable&login_timeout=300ms",
            peer.addr
        );
        let c = PgConnector::new(Arc::new(Config::parse(&url).expect("url"))).expect("connector");
        let e = c.connect(None).await.map(|_| ()).expect_err("silent");
        assert_eq!(e.code(), Code::LoginTimeout, "{e}");
        assert_eq!(e.layer(), Layer::Login);
        assert_eq!(e.limit(), Some("login_timeout"));
    });
}

/// A statement without parameters is prepared once and then only bound and
/// executed (as pgx does), so the server skips parsing and planning it; a
/// string of several statements still runs through the simple protocol,
/// and dropping every prepared statement on the server does not break the
/// next use of a cached one.
#[test]
fn parameterless_statements_are_prepared_once_and_multi_statements_still_run() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable&statement_cache=10").await;
        let count_named = "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT 41 + 1 AS answer'";
        for _ in 0..3 {
            let r = conn
                .query("SELECT 41 + 1 AS answer", &[], None, None)
                .await
                .expect("select");
            assert_eq!(r.get(0, 0), Some("42"));
            assert_eq!(r.columns()[0].name, "answer");
            assert_eq!(r.command_tag, "SELECT 1");
        }
        let r = conn
            .query(count_named, &[], None, None)
            .await
            .expect("pg_prepared_statements");
        assert_eq!(r.get(0, 0), Some("1"), "prepared once, on the server");

        // Several statements in one string: the simple protocol, the last
        // result.
        let r = conn
            .query(
                "CREATE TEMP TABLE dp_multi (v int); INSERT INTO dp_multi VALUES (1), (2); SELECT count(*) FROM dp_multi",
                &[],
                None,
                None,
            )
            .await
            .expect("multi-statement string");
        assert_eq!(r.get(0, 0), Some("2"));

        // The server forgets every prepared statement; the cached one is
        // prepared again, with no error in between.
        conn.query("DEALLOCATE ALL", &[], None, None)
            .await
            .expect("deallocate");
        let r = conn
            .query("SELECT 41 + 1 AS answer", &[], None, None)
            .await
            .expect("select after DEALLOCATE ALL");
        assert_eq!(r.get(0, 0), Some("42"));

        // A cached statement whose result type changed is prepared again,
        // outside a transaction, without an error ...
        for sql in [
            "CREATE TEMP TABLE dp_shape (a int)",
            "INSERT INTO dp_shape VALUES (1)",
        ] {
            conn.query(sql, &[], None, None).await.expect(sql);
        }
        for _ in 0..2 {
            let r = conn
                .query("SELECT * FROM dp_shape", &[], None, None)
                .await
                .expect("select *");
            assert_eq!(r.column_count(), 1);
        }
        conn.query(
            "ALTER TABLE dp_shape ADD COLUMN b text DEFAULT 'x'",
            &[],
            None,
            None,
        )
        .await
        .expect("alter");
        let r = conn
            .query("SELECT * FROM dp_shape", &[], None, None)
            .await
            .expect("select * after ALTER TABLE");
        assert_eq!(r.column_count(), 2);
        assert_eq!(r.get(0, 1), Some("x"));
        // ... but inside one the error stands (the transaction is aborted).
        for sql in ["BEGIN", "ALTER TABLE dp_shape ADD COLUMN c int"] {
            conn.query(sql, &[], None, None).await.expect(sql);
        }
        let e = conn
            .query("SELECT * FROM dp_shape", &[], None, None)
            .await
            .expect_err("result type changed inside a transaction");
        assert_eq!(e.sqlstate(), Some("0A000"), "{e}");
        conn.query("ROLLBACK", &[], None, None)
            .await
            .expect("rollback");

        // COPY FROM STDIN is refused on the wire, so the server ends it
        // with an error and the session goes on, through either protocol.
        for sql in ["COPY dp_shape FROM STDIN", "COPY dp_shape (a) FROM STDIN;"] {
            let e = conn
                .query(sql, &[], None, None)
                .await
                .expect_err("COPY FROM STDIN");
            assert!(
                e.to_string().contains("COPY FROM STDIN is not supported"),
                "{e}"
            );
            let r = conn
                .query("SELECT count(*) FROM dp_shape", &[], None, None)
                .await
                .expect("the session goes on after a refused COPY");
            assert_eq!(r.get(0, 0), Some("1"));
        }

        // Without a cache (PgBouncer's transaction mode) nothing is named.
        let mut plain = connect("sslmode=disable&statement_cache=0").await;
        plain
            .query("SELECT 41 + 1 AS answer", &[], None, None)
            .await
            .expect("select");
        let r = plain
            .query(count_named, &[], None, None)
            .await
            .expect("pg_prepared_statements");
        assert_eq!(r.get(0, 0), Some("0"));
        conn.close().await;
        plain.close().await;
    });
}

/// A cancel right after the send stops the statement at once and keeps the
/// session (`runtime::step` sends the statement and returns; the cancel
/// follows at once). PostgreSQL drops a cancel that reaches the backend
/// while it still reads the statement, so the library asks again when the
/// first cancel shows no effect; this machine's cancel handshake (a fork
/// in the postmaster) is usually too slow to lose that race, so this test
/// does not prove the second ask, only that an early cancel works.
#[test]
fn a_cancel_right_after_the_send_still_stops_the_statement() {
    use dialpool::runtime::{self, Step};
    let mut conn = runtime::block_on(connector("sslmode=disable&cancel_timeout=5s").connect(None))
        .expect("runtime")
        .expect("connect");
    for round in 0..5 {
        let token = CancelToken::new();
        let start = Instant::now();
        let outcome = {
            let mut fut = std::pin::pin!(conn.query("SELECT pg_sleep(3)", &[], None, Some(&token)));
            let first = runtime::step(fut.as_mut()).expect("runtime");
            assert!(
                matches!(first, Step::Wait(_)),
                "round {round}: sent, so it waits"
            );
            token.cancel();
            runtime::block_on(fut).expect("runtime")
        };
        let took = start.elapsed();
        let err = outcome.expect_err("cancelled");
        assert_eq!(err.code(), Code::Cancelled, "round {round}: {err}");
        assert!(
            took < Duration::from_secs(2),
            "round {round}: the cancel took {took:?}: {err}"
        );
        runtime::block_on(conn.query("SELECT 1", &[], None, None))
            .expect("runtime")
            .unwrap_or_else(|e| panic!("round {round}: the session after the cancel: {e}"));
    }
}
