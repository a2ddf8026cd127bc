//! The pool's metrics after a known workload against the throwaway servers,
//! through the public API: the snapshot's numbers and the Prometheus text.

use std::collections::BTreeMap;
use std::time::Duration;

use dialpool::{Code, Deadline, Pool};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn pg_url(extra: &str) -> String {
    let pg = dialpool_testkit::shared_pg().expect("PostgreSQL");
    let sep = if pg.url.contains('?') { '&' } else { '?' };
    format!("{}{sep}sslmode=disable&{extra}", pg.url)
}

/// Sample lines as "name{labels}" → value; panics on a line that is
/// neither a comment nor a sample.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("{l}"));
            (key.to_string(), v)
        })
        .collect()
}

#[test]
fn postgres_workload_shows_in_the_metrics() {
    rt().block_on(async {
        let pool = Pool::open(&pg_url(
            "max_open=1&acquire_timeout=200ms&pool_name=rust-metrics",
        ))
        .await
        .expect("pool");
        const N: usize = 4;
        for _ in 0..N {
            pool.query("SELECT 1", &[], None).await.expect("select");
        }
        let held = pool.acquire(None).await.expect("held");
        let e = pool
            .query("SELECT 1", &[], None)
            .await
            .expect_err("exhausted");
        assert_eq!(e.code(), Code::AcquireTimeout);
        drop(held);
        let e = pool
            .query(
                "SELECT pg_sleep(5)",
                &[],
                Some(Deadline::caller(Duration::from_millis(300))),
            )
            .await
            .expect_err("slow");
        assert_eq!(e.code(), Code::QueryTimeout);
        let mut conn = pool.acquire(None).await.expect("conn");
        let e = conn
            .query("SELECT * FROM no_such_table", &[], None)
            .await
            .expect_err("server error");
        assert_eq!(e.code(), Code::ServerError);
        drop(conn);

        let m = pool.metrics();
        assert_eq!(m.stats.acquire_timeouts, 1);
        // N statements, the held connection, the slow one, the failing one.
        assert_eq!(m.wait_time.count(), N as u64 + 3);
        assert_eq!(m.use_time.count(), N as u64 + 3);
        assert!(m.use_time.sum >= Duration::from_millis(150), "{m:?}");
        assert!(m.create_time.count() >= 1);
        assert_eq!(m.dial_tcp.count(), m.create_time.count());
        assert_eq!(m.login.count(), m.create_time.count());
        assert_eq!(m.dial_tls.count(), 0, "sslmode=disable");
        let ops: Vec<_> = m
            .operations
            .iter()
            .map(|(c, h)| (*c, h.count()))
            .collect();
        assert_eq!(
            ops,
            [
                (None, N as u64),
                (Some(Code::QueryTimeout), 1),
                (Some(Code::ServerError), 1)
            ]
        );
        assert_eq!(m.cancel.count(), 1);
        assert!(m.cancel.sum < Duration::from_secs(5), "{:?}", m.cancel);

        let text = pool.metrics_text();
        let s = samples(&text);
        let p = r#"db_client_connection_pool_name="rust-metrics""#;
        for (key, want) in [
            (format!("db_client_connection_timeouts_total{{{p}}}"), 1.0),
            (
                format!("db_client_connection_wait_time_seconds_count{{{p}}}"),
                N as f64 + 3.0,
            ),
            (
                format!("db_client_operation_duration_seconds_count{{{p},db_system_name=\"postgresql\"}}"),
                N as f64,
            ),
            (
                format!("db_client_operation_duration_seconds_count{{{p},db_system_name=\"postgresql\",error_type=\"DP_SERVER_ERROR\"}}"),
                1.0,
            ),
            (
                format!("dialpool_query_cancel_duration_seconds_count{{{p}}}"),
                1.0,
            ),
            (format!("db_client_connection_max{{{p}}}"), 1.0),
            (format!("db_client_connection_idle_max{{{p}}}"), 1.0),
            (
                format!("db_client_connection_count{{{p},db_client_connection_state=\"used\"}}"),
                0.0,
            ),
        ] {
            assert_eq!(s.get(&key), Some(&want), "{key}\n{text}");
        }
        // Two pools in one text: each family once.
        let other = Pool::open(&pg_url("pool_name=second"))
            .await
            .expect("second pool");
        let both = dialpool::metrics_text(&[&pool, &other]);
        assert_eq!(
            both.matches("# TYPE db_client_connection_max gauge").count(),
            1
        );
        assert!(both.contains(r#"db_client_connection_max{db_client_connection_pool_name="second"} 10"#));
    });
}

#[test]
fn mariadb_is_named_as_such() {
    let m = dialpool_testkit::shared_mariadb().expect("MariaDB");
    let url = format!("{}?sslmode=disable", m.url);
    rt().block_on(async {
        let pool = Pool::open(&url).await.expect("pool");
        pool.query("SELECT 1", &[], None).await.expect("select");
        assert_eq!(pool.metric_labels().db_system, "mariadb");
        let text = pool.metrics_text();
        assert!(text.contains("db_system_name=\"mariadb\""), "{text}");
        // The default name: host:port/dbname.
        let name = &pool.metric_labels().pool_name;
        assert!(
            name.starts_with("127.0.0.1:") && name.ends_with("/dialpool"),
            "{name}"
        );
    });
}
