//! pg_bench: dialpool's PostgreSQL sessions beside tokio-postgres
//! (deadpool-postgres for more than one task), side by side in one run
//! against one throwaway server (`dialpool_testkit::PgServer`, sslmode=disable
//! for both clients). Everything runs on one multi-thread tokio runtime with
//! 2 workers; the server shares the machine's 2 cores.
//!
//! 1. `SELECT 1` round trips per second at 1, 4 and 16 concurrent tasks, each
//!    task looping for `--seconds` (default 1) per round, `--rounds` rounds
//!    (default 5) after a warm-up round; the sides alternate, and which goes
//!    first swaps every round.
//!    * dialpool: `Pool::open(url?sslmode=disable&max_open=N)`, then
//!      `pool.query("SELECT 1", &[], None)` (acquire + simple-protocol query +
//!      release per call);
//!    * 1 task: one `tokio_postgres::Client`, `simple_query("SELECT 1")`;
//!    * 4 and 16 tasks: a deadpool-postgres pool of the same max size
//!      (RecyclingMethod::Fast, its default), `pool.get()` + `simple_query`.
//! 2. Fetching 100,000 rows (`SELECT g, 'row ' || g FROM
//!    generate_series(1,100000) g`), `--fetches` (default 3) per side per
//!    round: dialpool's `pool.query` (simple protocol, text values) beside
//!    tokio-postgres `simple_query` (the same protocol and text values) and,
//!    for information, tokio-postgres `query` (extended protocol, binary
//!    values decoded to i32 and String).
//! 3. Query-timeout overshoot, `--samples` (default 60) per side, alternating:
//!    * dialpool: `query_timeout=100ms`, `SELECT pg_sleep(1)` on a checked-out
//!      connection, which returns QUERY_TIMEOUT once the server confirmed the
//!      cancel (CancelRequest, then read to ReadyForQuery);
//!    * tokio-postgres, the same semantics by hand: the query raced against a
//!      100 ms sleep; on the sleep, `cancel_token().cancel_query(NoTls)`,
//!      then the query awaited to its 57014 error.
//!
//!    Overshoot = elapsed (call to error in hand) − 100 ms.
//!    Cancel-to-idle: from the error in hand until `pg_stat_activity` shows the
//!    session's backend `idle`, polled in a loop over a separate
//!    tokio-postgres connection (one poll ≈ one round trip).
//!
//! ```sh
//! cargo run --release -p dialpool-bench --bin pg_bench -- [--rounds 5] [--seconds 1] [--fetches 3] [--samples 60]
//! ```

#[path = "../db_harness.rs"]
mod db_harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use db_harness::{median, ops_per_sec, overshoot_us, us, Flags};
use dialpool_bench::{ratio, table, Row, Summary};
use tokio_postgres::{NoTls, SimpleQueryMessage};

const CONCURRENCY: [usize; 3] = [1, 4, 16];
const ROWS_SQL: &str = "SELECT g, 'row ' || g FROM generate_series(1,100000) g";
const SLEEP_SQL: &str = "SELECT pg_sleep(1)";
const QUERY_TIMEOUT: Duration = Duration::from_millis(100);

fn main() {
    let flags = Flags::parse(&["rounds", "seconds", "fetches", "samples"]);
    let rounds = flags.num("rounds", 5) as usize;
    let seconds = Duration::from_secs(flags.num("seconds", 1));
    let fetches = flags.num("fetches", 3) as usize;
    let samples = flags.num("samples", 60) as usize;

    let server = dialpool_testkit::PgServer::start(Default::default()).expect("start PostgreSQL");
    let url = format!("{}?sslmode=disable", server.url());
    println!("PostgreSQL {} on port {}", server.version(), server.port());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        select_one(&url, rounds, seconds).await;
        hundred_k_rows(&url, rounds, fetches).await;
        query_timeout(&url, samples).await;
    });
    drop(server);
}

/// The port of a `postgres://…@127.0.0.1:PORT/…` URL.
fn port_of(url: &str) -> u16 {
    let after = url.rsplit_once("127.0.0.1:").expect("loopback URL").1;
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in URL")
}

async fn tp_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("tokio-postgres connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn deadpool_pg(url: &str, max: usize) -> deadpool_postgres::Pool {
    let cfg: tokio_postgres::Config = url.parse().expect("tokio-postgres config");
    let mgr = deadpool_postgres::Manager::from_config(
        cfg,
        NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(mgr)
        .max_size(max)
        .build()
        .expect("deadpool-postgres pool")
}

/// A `SELECT 1` result that is one row holding "1".
fn check_simple(msgs: &[SimpleQueryMessage]) {
    let rows = msgs
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("1")))
        .count();
    assert_eq!(rows, 1, "SELECT 1 gave one row");
}

enum Peer {
    Client(Arc<tokio_postgres::Client>),
    Pool(deadpool_postgres::Pool),
}

async fn select_one(url: &str, rounds: usize, seconds: Duration) {
    println!(
        "\n## SELECT 1 round trips per second ({rounds} rounds of {seconds:?} per side, medians)"
    );
    let mut lines = Vec::new();
    for tasks in CONCURRENCY {
        let dp = dialpool::Pool::open(&format!("{url}&max_open={tasks}"))
            .await
            .expect("dialpool pool");
        let peer = if tasks == 1 {
            Peer::Client(Arc::new(tp_client(url).await))
        } else {
            Peer::Pool(deadpool_pg(url, tasks))
        };
        let dp_op = {
            let dp = dp.clone();
            move || {
                let dp = dp.clone();
                async move {
                    let r = dp
                        .query("SELECT 1", &[], None)
                        .await
                        .expect("dialpool SELECT 1");
                    assert_eq!(r.get(0, 0), Some("1"));
                }
            }
        };
        let mut dp_rates = Vec::new();
        let mut peer_rates = Vec::new();
        let mut ratios = Vec::new();
        for round in 0..=rounds {
            let mut rate = [0.0f64; 2];
            for k in 0..2 {
                let side = (round + k) % 2;
                rate[side] = if side == 0 {
                    ops_per_sec(tasks, seconds, dp_op.clone()).await
                } else {
                    match &peer {
                        Peer::Client(c) => {
                            let c = c.clone();
                            ops_per_sec(tasks, seconds, move || {
                                let c = c.clone();
                                async move {
                                    check_simple(
                                        &c.simple_query("SELECT 1").await.expect("tp SELECT 1"),
                                    );
                                }
                            })
                            .await
                        }
                        Peer::Pool(p) => {
                            let p = p.clone();
                            ops_per_sec(tasks, seconds, move || {
                                let p = p.clone();
                                async move {
                                    let c = p.get().await.expect("deadpool-postgres get");
                                    check_simple(
                                        &c.simple_query("SELECT 1").await.expect("tp SELECT 1"),
                                    );
                                }
                            })
                            .await
                        }
                    }
                };
            }
            if round == 0 {
                continue; // warm-up: connections opened, caches filled
            }
            dp_rates.push(rate[0]);
            peer_rates.push(rate[1]);
            ratios.push(rate[0] / rate[1]);
        }
        let peer_name = if tasks == 1 {
            "tokio-postgres"
        } else {
            "deadpool-postgres"
        };
        lines.push(format!(
            "| {tasks} | {:.0} | {:.0} ({peer_name}) | {:.2} | {} |",
            median(&dp_rates),
            median(&peer_rates),
            median(&ratios),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        println!(
            "RESULT pg_select1 tasks={tasks} dialpool_qps={:.0} peer_qps={:.0} ratio={:.3}",
            median(&dp_rates),
            median(&peer_rates),
            median(&ratios)
        );
        dp.close();
    }
    println!("| tasks | dialpool q/s | peer q/s | ratio (median of rounds) | per-round ratios |");
    println!("|---:|---:|---:|---:|---|");
    for l in lines {
        println!("{l}");
    }
}

async fn hundred_k_rows(url: &str, rounds: usize, fetches: usize) {
    println!(
        "\n## 100,000 rows ({rounds} rounds × {fetches} fetches per side, ms per fetch, medians)"
    );
    let dp = dialpool::Pool::open(&format!("{url}&max_open=1"))
        .await
        .expect("dialpool pool");
    let client = tp_client(url).await;
    let mut times: [Vec<f64>; 3] = Default::default();
    let mut ratios = Vec::new();
    for round in 0..=rounds {
        let mut round_ms = [0.0f64; 3];
        for k in 0..3 {
            let side = (round + k) % 3;
            let mut mine = Vec::new();
            for _ in 0..fetches {
                let start = Instant::now();
                let n = match side {
                    0 => dp
                        .query(ROWS_SQL, &[], None)
                        .await
                        .expect("dialpool rows")
                        .row_count(),
                    1 => client
                        .simple_query(ROWS_SQL)
                        .await
                        .expect("tp simple rows")
                        .iter()
                        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
                        .count(),
                    _ => client
                        .query(ROWS_SQL, &[])
                        .await
                        .expect("tp rows")
                        .iter()
                        // Decode every value, as the text sides keep theirs.
                        .filter(|r| {
                            std::hint::black_box((r.get::<_, i32>(0), r.get::<_, String>(1)));
                            true
                        })
                        .count(),
                };
                mine.push(start.elapsed().as_secs_f64() * 1e3);
                assert_eq!(n, 100_000);
            }
            round_ms[side] = median(&mine);
        }
        if round == 0 {
            continue;
        }
        for i in 0..3 {
            times[i].push(round_ms[i]);
        }
        // Rows per second relative to the peer: peer time / dialpool time.
        ratios.push(round_ms[1] / round_ms[0]);
    }
    println!("| client | ms per 100k-row fetch | rows/s |");
    println!("|---|---:|---:|");
    for (i, name) in [
        "dialpool `pool.query` (simple protocol, text)",
        "tokio-postgres `simple_query` (simple protocol, text)",
        "tokio-postgres `query` (extended protocol, binary → i32, String)",
    ]
    .iter()
    .enumerate()
    {
        let ms = median(&times[i]);
        println!("| {name} | {ms:.1} | {:.0} |", 100_000.0 / ms * 1e3);
    }
    println!(
        "ratio dialpool/tokio-postgres simple_query (throughput): {:.2}; per round: {}",
        median(&ratios),
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "RESULT pg_rows dialpool_ms={:.1} tp_simple_ms={:.1} tp_query_ms={:.1} ratio={:.3}",
        median(&times[0]),
        median(&times[1]),
        median(&times[2]),
        median(&ratios)
    );
    dp.close();
}

/// Polls pg_stat_activity until backend `pid` is idle; returns how long that
/// took and how many polls it needed.
async fn until_idle(
    monitor: &tokio_postgres::Client,
    stmt: &tokio_postgres::Statement,
    pid: i32,
) -> (Duration, u32) {
    let start = Instant::now();
    let mut polls = 0;
    loop {
        polls += 1;
        let row = monitor
            .query_one(stmt, &[&pid])
            .await
            .expect("poll pg_stat_activity");
        let state: Option<String> = row.get(0);
        if state.as_deref() == Some("idle") {
            return (start.elapsed(), polls);
        }
        if start.elapsed() > Duration::from_secs(5) {
            panic!("backend {pid} not idle after 5 s: {state:?}");
        }
    }
}

async fn query_timeout(url: &str, samples: usize) {
    println!(
        "\n## Query-timeout overshoot and cancel-to-idle ({samples} samples per side, alternating)"
    );
    let dp = dialpool::Pool::open(&format!("{url}&max_open=1&query_timeout=100ms"))
        .await
        .expect("dialpool pool");
    let mut conn = dp.acquire(None).await.expect("dialpool acquire");
    let dp_pid: i32 = conn
        .query("SELECT pg_backend_pid()", &[], None)
        .await
        .expect("pid")
        .get(0, 0)
        .and_then(|v| v.parse().ok())
        .expect("pid value");
    let client = tp_client(url).await;
    let tp_pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let monitor = tp_client(url).await;
    let stmt = monitor
        .prepare("SELECT state FROM pg_stat_activity WHERE pid = $1")
        .await
        .expect("prepare poll");

    let mut over: [Vec<i64>; 2] = Default::default();
    let mut idle: [Vec<i64>; 2] = Default::default();
    let mut polls: [Vec<i64>; 2] = Default::default();
    let mut failures = [0usize; 2];
    let mut reported: Vec<i64> = Vec::new();
    // tokio-postgres side, split: timer late past 100 ms; cancel_query
    // (fresh connection, CancelRequest sent); cancel sent → error in hand.
    let mut split: [Vec<i64>; 3] = Default::default();
    for i in 0..samples {
        for k in 0..2 {
            let side = (i + k) % 2;
            let start = Instant::now();
            let ok = if side == 0 {
                match conn.query(SLEEP_SQL, &[], None).await {
                    Err(e)
                        if e.code() == dialpool::Code::QueryTimeout
                            && e.sqlstate() == Some("57014") =>
                    {
                        if let Some(r) = e.elapsed() {
                            reported.push(overshoot_us(r, QUERY_TIMEOUT));
                        }
                        true
                    }
                    other => {
                        eprintln!("dialpool: unexpected {:?}", other.map(|r| r.row_count()));
                        false
                    }
                }
            } else {
                let fut = client.simple_query(SLEEP_SQL);
                tokio::pin!(fut);
                tokio::select! {
                    r = &mut fut => {
                        eprintln!("tokio-postgres: finished before the timeout: {:?}", r.map(|m| m.len()));
                        false
                    }
                    _ = tokio::time::sleep(QUERY_TIMEOUT) => {
                        let fired = start.elapsed();
                        client.cancel_token().cancel_query(NoTls).await.expect("cancel_query");
                        let sent = start.elapsed();
                        match fut.await {
                            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => {
                                let done = start.elapsed();
                                split[0].push(overshoot_us(fired, QUERY_TIMEOUT));
                                split[1].push(us(sent - fired));
                                split[2].push(us(done - sent));
                                true
                            }
                            other => {
                                eprintln!("tokio-postgres: unexpected {:?}", other.map(|m| m.len()));
                                false
                            }
                        }
                    }
                }
            };
            let elapsed = start.elapsed();
            if !ok {
                failures[side] += 1;
                continue;
            }
            let pid = if side == 0 { dp_pid } else { tp_pid };
            let (to_idle, n) = until_idle(&monitor, &stmt, pid).await;
            over[side].push(overshoot_us(elapsed, QUERY_TIMEOUT));
            idle[side].push(us(to_idle));
            polls[side].push(n as i64);
        }
    }
    // The connection ran on after every timeout.
    assert_eq!(
        conn.query(
            "SELECT 1",
            &[],
            Some(dialpool::Deadline::caller(Duration::from_secs(5)))
        )
        .await
        .expect("reuse after timeouts")
        .get(0, 0),
        Some("1")
    );
    drop(conn);
    let names = [
        "dialpool",
        "tokio-postgres (timeout + cancel_query + await error)",
    ];
    let rows = |v: &[Vec<i64>; 2]| -> Vec<Row> {
        (0..2)
            .map(|i| Row {
                label: names[i].to_string(),
                summary: Summary::of(&v[i]),
                failures: failures[i],
            })
            .collect()
    };
    print!("{}", table("overshoot past 100 ms (µs)", &rows(&over)));
    print!("{}", table("cancel-to-idle (µs)", &rows(&idle)));
    print!("{}", table("polls until idle", &rows(&polls)));
    let parts: Vec<Row> = [
        "timer fired late by",
        "cancel_query (dial + CancelRequest)",
        "cancel sent → 57014 error in hand",
    ]
    .iter()
    .enumerate()
    .map(|(i, label)| Row {
        label: label.to_string(),
        summary: Summary::of(&split[i]),
        failures: 0,
    })
    .collect();
    print!("{}", table("tokio-postgres overshoot, split (µs)", &parts));
    // The cancel handshake alone, as dialpool does it: a fresh TCP
    // connection, a CancelRequest (here with a wrong key, so nothing is
    // cancelled), and the wait until the server closes the connection.
    let mut handshake = Vec::new();
    for _ in 0..samples {
        let start = Instant::now();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port_of(url)))
            .await
            .expect("dial for cancel");
        let mut frame = Vec::with_capacity(16);
        frame.extend_from_slice(&16u32.to_be_bytes());
        frame.extend_from_slice(&80_877_102u32.to_be_bytes());
        frame.extend_from_slice(&tp_pid.to_be_bytes());
        frame.extend_from_slice(&0x5eed_i32.to_be_bytes());
        tokio::io::AsyncWriteExt::write_all(&mut s, &frame)
            .await
            .expect("write cancel");
        let mut sink = [0u8; 16];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut sink).await;
        handshake.push(us(start.elapsed()));
    }
    print!(
        "{}",
        table(
            "cancel handshake alone (µs)",
            &[Row {
                label: "dial + CancelRequest + server closes".into(),
                summary: Summary::of(&handshake),
                failures: 0,
            }]
        )
    );
    if let Some(h) = Summary::of(&handshake) {
        println!(
            "RESULT pg_cancel_handshake p50_us={} p99_us={}",
            h.p50, h.p99
        );
    }
    if let Some(s) = Summary::of(&reported) {
        println!(
            "dialpool's error reports elapsed at the deadline: its elapsed() − 100 ms p50 {} µs, p99 {} µs",
            s.p50, s.p99
        );
    }
    for i in 0..2 {
        if let (Some(o), Some(d)) = (Summary::of(&over[i]), Summary::of(&idle[i])) {
            println!(
                "RESULT pg_timeout side={} n={} over_p50_us={} over_p99_us={} idle_p50_us={} idle_p99_us={} failures={}",
                if i == 0 { "dialpool" } else { "tokio-postgres" },
                o.count, o.p50, o.p99, d.p50, d.p99, failures[i]
            );
        }
    }
    let p99 = |i: usize| Summary::of(&over[i]).map_or(0, |s| s.p99);
    println!(
        "ratio dialpool/tokio-postgres overshoot p99: {}",
        ratio(p99(0), p99(1)).map_or("-".into(), |r| format!("{r:.2}"))
    );
    dp.close();
}
