//! MySQL/MariaDB through the public pool: the same guarantees as PostgreSQL.

use std::time::{Duration, Instant};

use dialpool::{Code, Deadline, Layer, Pool};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn url(extra: &str) -> String {
    let m = dialpool_testkit::shared_mariadb().expect("MariaDB");
    format!("{}?sslmode=disable&{extra}", m.url)
}

#[test]
fn wrong_password_fails_every_waiter_at_once() {
    let m = dialpool_testkit::shared_mariadb().expect("MariaDB");
    let bad = format!(
        "mysql://dialpool:Wr0ngSecret@127.0.0.1:{}/dialpool?sslmode=disable&acquire_timeout=10s",
        m.port
    );
    rt().block_on(async {
        let pool = Pool::open(&bad).await.expect("pool");
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
            assert_eq!(e.layer(), Layer::Login);
            assert!(!format!("{e:?}").contains("Wr0ngSecret"));
        }
        assert!(start.elapsed() < Duration::from_secs(3));
    });
}

#[test]
fn slow_query_is_killed_and_the_connection_kept() {
    rt().block_on(async {
        let pool = Pool::open(&url("max_open=1&query_timeout=1s"))
            .await
            .expect("pool");
        let start = Instant::now();
        let e = pool
            .query("SELECT SLEEP(5)", &[], None)
            .await
            .expect_err("timeout");
        assert_eq!(e.code(), Code::QueryTimeout, "{e}");
        assert_eq!(e.limit(), Some("query_timeout"));
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(e.to_string().contains("KILL QUERY"), "{e}");
        let r = pool.query("SELECT 7", &[], None).await.expect("same pool");
        assert_eq!(r.get(0, 0), Some("7"));
        let s = pool.stats();
        assert_eq!(
            (s.open, s.closed_broken),
            (1, 0),
            "the connection was kept: {s:?}"
        );
        // A caller deadline shorter than query_timeout is named.
        let e = pool
            .query(
                "SELECT SLEEP(5)",
                &[],
                Some(Deadline::caller(Duration::from_millis(300))),
            )
            .await
            .expect_err("deadline");
        assert_eq!(e.limit(), Some("deadline"), "{e}");
    });
}

#[test]
fn killed_connections_are_never_handed_out() {
    rt().block_on(async {
        let pool = Pool::open(&url("max_open=2&ping_after=1h"))
            .await
            .expect("pool");
        let admin = Pool::open(&url("max_open=1")).await.expect("admin");
        for round in 0..20 {
            let id = pool
                .query("SELECT CONNECTION_ID()", &[], None)
                .await
                .expect("id")
                .get(0, 0)
                .expect("id")
                .to_string();
            admin
                .execute(&format!("KILL CONNECTION {id}"), &[], None)
                .await
                .expect("kill");
            tokio::time::sleep(Duration::from_millis(20)).await;
            let r = pool.query("SELECT 1", &[], None).await;
            assert!(r.is_ok(), "round {round}: {:?}", r.err());
        }
        assert!(pool.stats().closed_dead >= 20, "{:?}", pool.stats());
    });
}

#[test]
fn open_transaction_is_rolled_back_on_release() {
    rt().block_on(async {
        let pool = Pool::open(&url("max_open=1")).await.expect("pool");
        pool.execute(
            "CREATE TABLE IF NOT EXISTS rollback_probe (v INT) ENGINE=InnoDB",
            &[],
            None,
        )
        .await
        .expect("create");
        pool.execute("DELETE FROM rollback_probe", &[], None)
            .await
            .expect("clear");
        {
            let mut c = pool.acquire(None).await.expect("acquire");
            c.execute("BEGIN", &[], None).await.expect("begin");
            c.execute("INSERT INTO rollback_probe VALUES (1)", &[], None)
                .await
                .expect("insert");
        }
        let r = pool
            .query("SELECT COUNT(*) FROM rollback_probe", &[], None)
            .await
            .expect("count");
        assert_eq!(r.get(0, 0), Some("0"));
        assert_eq!(pool.stats().open, 1, "reset, not closed");
    });
}

#[test]
fn wait_timeout_below_max_idle_time_causes_no_errors() {
    let server = dialpool_testkit::MariaDbServer::start(dialpool_testkit::MariaDbOptions {
        settings: vec![("wait_timeout".into(), "2".into())],
        ..Default::default()
    })
    .expect("server");
    let url = format!("{}?sslmode=disable&max_open=3&ping_after=1h", server.url());
    rt().block_on(async {
        let pool = Pool::open(&url).await.expect("pool");
        for _ in 0..3 {
            pool.query("SELECT 1", &[], None).await.expect("first");
        }
        let s = pool.stats();
        assert_eq!(s.server_idle_limit, Some(Duration::from_secs(2)), "{s:?}");
        assert!(s.max_idle_time.expect("set") < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_secs(3)).await;
        for _ in 0..10 {
            pool.query("SELECT 1", &[], None)
                .await
                .expect("no error after the server's wait_timeout");
        }
    });
}
