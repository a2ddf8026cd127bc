//! mysql_bench: dialpool's MySQL/MariaDB sessions beside mysql_async (with
//! its pool), side by side in one run against one throwaway MariaDB
//! (`dialpool_testkit::MariaDbServer`, no TLS for either client). One
//! multi-thread tokio runtime with 2 workers; the server shares the 2 cores.
//!
//! 1. `SELECT 1` round trips per second at 1, 4 and 16 concurrent tasks
//!    (`--rounds` rounds, default 5, of `--seconds`, default 1, per side after
//!    a warm-up round; sides alternate, which goes first swaps every round):
//!    * dialpool: `Pool::open(url?sslmode=disable&max_open=N)`, then
//!      `pool.query("SELECT 1", &[], None)` (COM_QUERY, text result);
//!    * mysql_async: `Pool` with `pool_max=N`, `pool.get_conn()` +
//!      `conn.query::<Row, _>("SELECT 1")` (COM_QUERY, text result), the
//!      connection dropped back to the pool. Its pool resets every connection
//!      it takes back by default (`reset_connection=true`, COM_RESET_CONNECTION,
//!      one more round trip); dialpool does not, so the run uses
//!      `reset_connection=false` unless `--peer-reset 1` is given.
//! 2. 100,000 rows (`SELECT seq, CONCAT('row ', seq) FROM seq_1_to_100000`,
//!    MariaDB's sequence engine), `--fetches` per side per round: dialpool's
//!    `pool.query` beside mysql_async's `query::<Row, _>` (both text protocol,
//!    all rows collected).
//! 3. Kill-timeout overshoot, `--samples` (default 60) per side, alternating:
//!    * dialpool: `query_timeout=100ms`, `SELECT SLEEP(1)` on a checked-out
//!      connection; QUERY_TIMEOUT comes once `KILL QUERY` over a fresh
//!      connection went through and the killed statement's answer was read;
//!    * mysql_async, the same by hand: the query raced against a 100 ms
//!      sleep; on the sleep, a fresh `Conn::new` runs `KILL QUERY <id>`, then
//!      the query is awaited to its end.
//!
//!    Overshoot = elapsed − 100 ms. Kill-to-stopped: from the error (or end)
//!    in hand until `information_schema.PROCESSLIST` shows the session's
//!    COMMAND as `Sleep`, polled over a separate connection.
//!
//! ```sh
//! cargo run --release -p dialpool-bench --bin mysql_bench -- [--rounds 5] [--seconds 1] [--fetches 3] [--samples 60] [--peer-reset 0]
//! ```

#[path = "../db_harness.rs"]
mod db_harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use db_harness::{median, ops_per_sec, overshoot_us, us, Flags};
use dialpool_bench::{ratio, table, Row, Summary};
use mysql_async::prelude::Queryable;

const CONCURRENCY: [usize; 3] = [1, 4, 16];
const ROWS_SQL: &str = "SELECT seq, CONCAT('row ', seq) FROM seq_1_to_100000";
const SLEEP_SQL: &str = "SELECT SLEEP(1)";
const QUERY_TIMEOUT: Duration = Duration::from_millis(100);

fn main() {
    let flags = Flags::parse(&["rounds", "seconds", "fetches", "samples", "peer-reset"]);
    let rounds = flags.num("rounds", 5) as usize;
    let seconds = Duration::from_secs(flags.num("seconds", 1));
    let fetches = flags.num("fetches", 3) as usize;
    let samples = flags.num("samples", 60) as usize;
    let peer_reset = flags.has("peer-reset");

    let server = dialpool_testkit::MariaDbServer::start(Default::default()).expect("start MariaDB");
    let url = server.url();
    println!("MariaDB {} on port {}", server.version(), server.port());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        select_one(&url, rounds, seconds, peer_reset).await;
        hundred_k_rows(&url, rounds, fetches).await;
        kill_timeout(&url, samples).await;
    });
    drop(server);
}

fn peer_pool(url: &str, max: usize, reset: bool) -> mysql_async::Pool {
    mysql_async::Pool::from_url(format!(
        "{url}?pool_min=0&pool_max={max}&reset_connection={reset}"
    ))
    .expect("mysql_async pool")
}

async fn select_one(url: &str, rounds: usize, seconds: Duration, peer_reset: bool) {
    println!(
        "\n## SELECT 1 round trips per second ({rounds} rounds of {seconds:?} per side, medians; mysql_async reset_connection={peer_reset})"
    );
    let mut lines = Vec::new();
    for tasks in CONCURRENCY {
        let dp = dialpool::Pool::open(&format!("{url}?sslmode=disable&max_open={tasks}"))
            .await
            .expect("dialpool pool");
        let peer = peer_pool(url, tasks, peer_reset);
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
        let peer_op = {
            let peer = peer.clone();
            move || {
                let peer = peer.clone();
                async move {
                    let mut c = peer.get_conn().await.expect("mysql_async get_conn");
                    let rows: Vec<mysql_async::Row> =
                        c.query("SELECT 1").await.expect("mysql_async SELECT 1");
                    assert_eq!(rows.len(), 1);
                }
            }
        };
        // With one task, also one mysql_async `Conn` without a pool, as
        // tokio-postgres is measured in pg_bench (information only).
        let single = if tasks == 1 {
            let conn = mysql_async::Conn::from_url(url)
                .await
                .expect("mysql_async conn");
            Some(Arc::new(tokio::sync::Mutex::new(conn)))
        } else {
            None
        };
        let sides = if single.is_some() { 3 } else { 2 };
        let mut rates: [Vec<f64>; 3] = Default::default();
        let mut ratios = Vec::new();
        for round in 0..=rounds {
            let mut rate = [0.0f64; 3];
            for k in 0..sides {
                let side = (round + k) % sides;
                rate[side] = match side {
                    0 => ops_per_sec(tasks, seconds, dp_op.clone()).await,
                    1 => ops_per_sec(tasks, seconds, peer_op.clone()).await,
                    _ => {
                        let single = single.clone().expect("single conn");
                        ops_per_sec(tasks, seconds, move || {
                            let single = single.clone();
                            async move {
                                let mut c = single.lock().await;
                                let rows: Vec<mysql_async::Row> =
                                    c.query("SELECT 1").await.expect("mysql_async SELECT 1");
                                assert_eq!(rows.len(), 1);
                            }
                        })
                        .await
                    }
                };
            }
            if round == 0 {
                continue;
            }
            for (i, r) in rate.iter().enumerate().take(sides) {
                rates[i].push(*r);
            }
            ratios.push(rate[0] / rate[1]);
        }
        lines.push(format!(
            "| {tasks} | {:.0} | {:.0} | {:.2} | {} |",
            median(&rates[0]),
            median(&rates[1]),
            median(&ratios),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        if single.is_some() {
            let single_ratios: Vec<f64> =
                rates[0].iter().zip(&rates[2]).map(|(a, b)| a / b).collect();
            lines.push(format!(
                "| {tasks} (one mysql_async `Conn`, no pool) | {:.0} | {:.0} | {:.2} | {} |",
                median(&rates[0]),
                median(&rates[2]),
                median(&single_ratios),
                single_ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            println!(
                "RESULT mysql_select1_single_conn tasks=1 peer_qps={:.0} ratio={:.3}",
                median(&rates[2]),
                median(&single_ratios)
            );
        }
        println!(
            "RESULT mysql_select1 tasks={tasks} peer_reset={peer_reset} dialpool_qps={:.0} peer_qps={:.0} ratio={:.3}",
            median(&rates[0]),
            median(&rates[1]),
            median(&ratios)
        );
        dp.close();
        let _ = peer.disconnect().await;
    }
    println!(
        "| tasks | dialpool q/s | mysql_async q/s | ratio (median of rounds) | per-round ratios |"
    );
    println!("|---:|---:|---:|---:|---|");
    for l in lines {
        println!("{l}");
    }
}

async fn hundred_k_rows(url: &str, rounds: usize, fetches: usize) {
    println!(
        "\n## 100,000 rows ({rounds} rounds × {fetches} fetches per side, ms per fetch, medians)"
    );
    let dp = dialpool::Pool::open(&format!("{url}?sslmode=disable&max_open=1"))
        .await
        .expect("dialpool pool");
    let peer = peer_pool(url, 1, false);
    let mut times: [Vec<f64>; 2] = Default::default();
    let mut ratios = Vec::new();
    for round in 0..=rounds {
        let mut round_ms = [0.0f64; 2];
        for k in 0..2 {
            let side = (round + k) % 2;
            let mut mine = Vec::new();
            for _ in 0..fetches {
                let start = Instant::now();
                let n = if side == 0 {
                    dp.query(ROWS_SQL, &[], None)
                        .await
                        .expect("dialpool rows")
                        .row_count()
                } else {
                    let mut c = peer.get_conn().await.expect("get_conn");
                    let rows: Vec<mysql_async::Row> = c.query(ROWS_SQL).await.expect("rows");
                    rows.len()
                };
                mine.push(start.elapsed().as_secs_f64() * 1e3);
                assert_eq!(n, 100_000);
            }
            round_ms[side] = median(&mine);
        }
        if round == 0 {
            continue;
        }
        times[0].push(round_ms[0]);
        times[1].push(round_ms[1]);
        ratios.push(round_ms[1] / round_ms[0]);
    }
    println!("| client | ms per 100k-row fetch | rows/s |");
    println!("|---|---:|---:|");
    for (i, name) in ["dialpool `pool.query`", "mysql_async `query::<Row, _>`"]
        .iter()
        .enumerate()
    {
        let ms = median(&times[i]);
        println!("| {name} | {ms:.1} | {:.0} |", 100_000.0 / ms * 1e3);
    }
    println!(
        "ratio dialpool/mysql_async (throughput): {:.2}; per round: {}",
        median(&ratios),
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "RESULT mysql_rows dialpool_ms={:.1} peer_ms={:.1} ratio={:.3}",
        median(&times[0]),
        median(&times[1]),
        median(&ratios)
    );
    dp.close();
    let _ = peer.disconnect().await;
}

/// Polls the process list until session `id` is idle (`Sleep`); returns how
/// long that took and how many polls it needed.
async fn until_stopped(monitor: &mut mysql_async::Conn, id: u32) -> (Duration, u32) {
    let sql = format!("SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = {id}");
    let start = Instant::now();
    let mut polls = 0;
    loop {
        polls += 1;
        let command: Option<String> = monitor.query_first(sql.as_str()).await.expect("poll");
        if command.as_deref() == Some("Sleep") {
            return (start.elapsed(), polls);
        }
        if start.elapsed() > Duration::from_secs(5) {
            panic!("session {id} still busy after 5 s: {command:?}");
        }
    }
}

async fn kill_timeout(url: &str, samples: usize) {
    println!(
        "\n## Kill-timeout overshoot and kill-to-stopped ({samples} samples per side, alternating)"
    );
    let dp = dialpool::Pool::open(&format!(
        "{url}?sslmode=disable&max_open=1&query_timeout=100ms"
    ))
    .await
    .expect("dialpool pool");
    let mut conn = dp.acquire(None).await.expect("dialpool acquire");
    let dp_id: u32 = conn
        .query("SELECT CONNECTION_ID()", &[], None)
        .await
        .expect("id")
        .get(0, 0)
        .and_then(|v| v.parse().ok())
        .expect("id value");
    let peer_opts = mysql_async::Opts::from_url(url).expect("opts");
    let mut peer = mysql_async::Conn::new(peer_opts.clone())
        .await
        .expect("peer conn");
    let peer_id = peer.id();
    let mut monitor = mysql_async::Conn::new(peer_opts.clone())
        .await
        .expect("monitor");

    let mut over: [Vec<i64>; 2] = Default::default();
    let mut stopped: [Vec<i64>; 2] = Default::default();
    let mut failures = [0usize; 2];
    let mut peer_outcomes: Vec<String> = Vec::new();
    for i in 0..samples {
        for k in 0..2 {
            let side = (i + k) % 2;
            let start = Instant::now();
            let ok = if side == 0 {
                match conn.query(SLEEP_SQL, &[], None).await {
                    Err(e) if e.code() == dialpool::Code::QueryTimeout => true,
                    other => {
                        eprintln!("dialpool: unexpected {:?}", other.map(|r| r.row_count()));
                        false
                    }
                }
            } else {
                let outcome = {
                    let fut = peer.query_first::<Option<i64>, _>(SLEEP_SQL);
                    tokio::pin!(fut);
                    tokio::select! {
                        r = &mut fut => Err(format!("finished before the timeout: {r:?}")),
                        _ = tokio::time::sleep(QUERY_TIMEOUT) => {
                            let mut killer = mysql_async::Conn::new(peer_opts.clone()).await.expect("kill conn");
                            killer.query_drop(format!("KILL QUERY {peer_id}")).await.expect("KILL QUERY");
                            tokio::spawn(async move { let _ = killer.disconnect().await; });
                            Ok(fut.await)
                        }
                    }
                };
                match outcome {
                    // MariaDB ends a killed SLEEP() either with error 1317 or
                    // by returning 1 early; both mean the statement stopped.
                    Ok(r) => {
                        if peer_outcomes.len() < 3 {
                            peer_outcomes.push(format!("{r:?}"));
                        }
                        true
                    }
                    Err(why) => {
                        eprintln!("mysql_async: {why}");
                        false
                    }
                }
            };
            let elapsed = start.elapsed();
            if !ok {
                failures[side] += 1;
                continue;
            }
            let id = if side == 0 { dp_id } else { peer_id };
            let (to_stop, _) = until_stopped(&mut monitor, id).await;
            over[side].push(overshoot_us(elapsed, QUERY_TIMEOUT));
            stopped[side].push(us(to_stop));
        }
    }
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
    println!(
        "mysql_async's killed statements ended as: {}",
        peer_outcomes.join("; ")
    );
    let names = [
        "dialpool",
        "mysql_async (timeout + KILL QUERY on a new Conn + await end)",
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
    print!("{}", table("kill-to-stopped (µs)", &rows(&stopped)));
    // What a kill costs before it reaches the server: a fresh connection
    // with its login, then one statement (here `DO 1`).
    let mut fresh = Vec::new();
    for _ in 0..samples {
        let start = Instant::now();
        let mut c = mysql_async::Conn::new(peer_opts.clone())
            .await
            .expect("fresh conn");
        c.query_drop("DO 1").await.expect("DO 1");
        fresh.push(us(start.elapsed()));
        tokio::spawn(async move {
            let _ = c.disconnect().await;
        });
    }
    print!(
        "{}",
        table(
            "kill path alone (µs)",
            &[Row {
                label: "mysql_async Conn::new (dial + login) + DO 1".into(),
                summary: Summary::of(&fresh),
                failures: 0,
            }]
        )
    );
    if let Some(f) = Summary::of(&fresh) {
        println!("RESULT mysql_fresh_conn p50_us={} p99_us={}", f.p50, f.p99);
    }
    for i in 0..2 {
        if let (Some(o), Some(d)) = (Summary::of(&over[i]), Summary::of(&stopped[i])) {
            println!(
                "RESULT mysql_timeout side={} n={} over_p50_us={} over_p99_us={} stopped_p50_us={} stopped_p99_us={} failures={}",
                if i == 0 { "dialpool" } else { "mysql_async" },
                o.count, o.p50, o.p99, d.p50, d.p99, failures[i]
            );
        }
    }
    let p99 = |i: usize| Summary::of(&over[i]).map_or(0, |s| s.p99);
    println!(
        "ratio dialpool/mysql_async overshoot p99: {}",
        ratio(p99(0), p99(1)).map_or("-".into(), |r| format!("{r:.2}"))
    );
    let _ = monitor.disconnect().await;
    let _ = peer.disconnect().await;
    dp.close();
}
