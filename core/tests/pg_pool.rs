//! The public pool API against real PostgreSQL servers and PgBouncer:
//! a server restart under a running query loop, and PgBouncer in
//! transaction and session pooling modes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialpool::{Code, Deadline, Error, Layer, Pool};
use dialpool_testkit::{
    ensure_installed, shared_pg, PgBouncer, PgBouncerOptions, PgOptions, PgServer, PoolMode,
};

/// Scheduling and CI noise allowed on top of a limit.
const SLACK: Duration = Duration::from_millis(500);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn with_options(url: &str, options: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{options}")
}

/// `CODE` or `CODE/SQLSTATE`, for the histogram.
fn label(e: &Error) -> String {
    match e.sqlstate() {
        Some(s) => format!("{}/{s}", e.code().name()),
        None => e.code().name().to_string(),
    }
}

/// What a client may see while the server restarts: its session
/// terminated (57P01, or just a closed socket), refused connects while it
/// is down, the server starting up or shutting down (57P03), and the limits
/// firing around all that.
fn expected_during_restart(e: &Error) -> bool {
    match e.code() {
        Code::ConnectionLost
        | Code::ConnectionRefused
        | Code::AcquireTimeout
        | Code::QueryTimeout
        | Code::ConnectTimeout
        | Code::LoginTimeout => e.layer() != Layer::None,
        Code::ServerError => matches!(e.sqlstate(), Some("57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// One call made by the query loop.
struct Outcome {
    task: usize,
    /// `acquire`, `query` (on an acquired connection) or `pool.query`.
    call: &'static str,
    started: Instant,
    took: Duration,
    /// The limit the call runs under.
    bound: Duration,
    result: Result<(), Error>,
}

#[test]
fn server_restart_under_a_query_loop() {
    ensure_installed().expect("ensure_installed");
    let server = PgServer::start(PgOptions::default()).expect("PgServer::start");
    let url = with_options(
        &server.url(),
        "sslmode=disable&acquire_timeout=1s&query_timeout=1s&connect_timeout=500ms&max_open=4",
    );
    let acquire_timeout = Duration::from_secs(1);
    let query_timeout = Duration::from_secs(1);
    let caller_timeout = Duration::from_millis(1500);
    let outage = Duration::from_secs(1);
    let rt = rt();
    let (outcomes, stopping, down, up, stats) = rt.block_on(async move {
        let pool = Pool::open(&url).await.expect("open");
        pool.query("SELECT 1", &[], None).await.expect("warm-up");
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for task in 0..3usize {
            let pool = pool.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                let loop_start = Instant::now();
                // Bounded: the main task sets `stop`; 30 s is the backstop.
                while !stop.load(Ordering::Relaxed)
                    && loop_start.elapsed() < Duration::from_secs(30)
                {
                    // Every call is bounded here too, so a hang is a
                    // failure of its own rather than a stuck test.
                    let hang_guard = Duration::from_secs(5);
                    if task < 2 {
                        // acquire and query separately: each error belongs
                        // to exactly one limit.
                        let started = Instant::now();
                        let r = tokio::time::timeout(hang_guard, pool.acquire(None)).await;
                        let took = started.elapsed();
                        let r = r.unwrap_or_else(|_| {
                            panic!("task {task}: acquire hung for {hang_guard:?}")
                        });
                        let mut conn = match r {
                            Ok(c) => c,
                            Err(e) => {
                                out.push(Outcome {
                                    task,
                                    call: "acquire",
                                    started,
                                    took,
                                    bound: acquire_timeout,
                                    result: Err(e),
                                });
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        };
                        let started = Instant::now();
                        let r = tokio::time::timeout(hang_guard, conn.query("SELECT 1", &[], None))
                            .await
                            .unwrap_or_else(|_| {
                                panic!("task {task}: query hung for {hang_guard:?}")
                            });
                        let took = started.elapsed();
                        let result = r.map(|res| {
                            assert_eq!(res.get(0, 0), Some("1"));
                        });
                        out.push(Outcome {
                            task,
                            call: "query",
                            started,
                            took,
                            bound: query_timeout,
                            result,
                        });
                    } else {
                        // One deadline over acquire and query, with a
                        // parameter (extended protocol, statement cache).
                        let started = Instant::now();
                        let r = tokio::time::timeout(
                            hang_guard,
                            pool.query(
                                "SELECT $1::int + 1",
                                &[Some("41")],
                                Some(Deadline::caller(caller_timeout)),
                            ),
                        )
                        .await
                        .unwrap_or_else(|_| {
                            panic!("task {task}: pool.query hung for {hang_guard:?}")
                        });
                        let took = started.elapsed();
                        let result = r.map(|res| {
                            assert_eq!(res.get(0, 0), Some("42"));
                        });
                        out.push(Outcome {
                            task,
                            call: "pool.query",
                            started,
                            took,
                            bound: caller_timeout,
                            result,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                out
            }));
        }

        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = pool.stats();
        let restart = tokio::task::spawn_blocking(move || {
            let mut server = server;
            let stopping = Instant::now();
            server.stop_fast();
            let down = Instant::now();
            std::thread::sleep(outage);
            let r = server.start_again();
            (server, r, stopping, down, Instant::now())
        });
        let (server, r, stopping, down, up) = restart.await.expect("restart thread");
        r.expect("start_again");
        // Long enough to see the pool recover, bounded.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        stop.store(true, Ordering::Relaxed);
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.extend(t.await.expect("query task"));
        }
        let after = pool.stats();
        eprintln!("pool before the restart: {before:?}\npool after: {after:?}");
        assert!(
            after.connects > before.connects,
            "the pool never reconnected: {before:?} → {after:?}"
        );
        pool.close();
        drop(server);
        (outcomes, stopping, down, up, after)
    });

    // A small histogram of what the loop saw.
    let mut histogram: BTreeMap<String, (u32, Duration)> = BTreeMap::new();
    for o in &outcomes {
        let key = match &o.result {
            Ok(()) => "OK".to_string(),
            Err(e) => label(e),
        };
        let entry = histogram
            .entry(format!("{:<10} {key}", o.call))
            .or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(o.took);
    }
    println!(
        "server down {:?} after the stop began, up again {:?} later; stats: connects={} failures={:?}",
        down - stopping,
        up - down,
        stats.connects,
        stats.connect_failures
    );
    println!("{:<40} {:>6} {:>10}", "call / outcome", "count", "max took");
    for (k, (n, max)) in &histogram {
        println!("{k:<40} {n:>6} {:>9.0?}", max);
    }

    // Before the stop: everything that ended before it worked. A call
    // still running when the stop began may lose its connection, as the
    // calls after it may.
    let early: Vec<_> = outcomes
        .iter()
        .filter(|o| o.started + o.took < stopping)
        .collect();
    assert!(
        early.len() >= 10,
        "only {} calls before the stop",
        early.len()
    );
    for o in &early {
        if let Err(e) = &o.result {
            panic!("task {} {} failed before the restart: {e}", o.task, o.call);
        }
    }

    // During the outage: every error is one of the expected kinds and came
    // within its limit plus slack.
    let mut errors = 0;
    for o in &outcomes {
        let Err(e) = &o.result else { continue };
        errors += 1;
        let at = o.started.saturating_duration_since(stopping);
        assert!(
            expected_during_restart(e),
            "task {} {} at +{at:?}: unexpected error {e:?}",
            o.task,
            o.call
        );
        assert!(
            o.took <= o.bound + SLACK,
            "task {} {} at +{at:?} took {:?} (limit {:?}): {e}",
            o.task,
            o.call,
            o.took,
            o.bound
        );
        if e.is_timeout() {
            assert!(e.limit().is_some(), "a timeout without its limit: {e:?}");
        }
    }
    assert!(
        errors > 0,
        "the restart went unnoticed: was the server down?"
    );

    // After it: every task recovers on its own within a bounded time, and
    // the last second of the loop is clean.
    let recovery_bound = Duration::from_millis(2500);
    let end = outcomes.iter().map(|o| o.started).max().expect("outcomes");
    for task in 0..3 {
        let first_ok = outcomes
            .iter()
            .filter(|o| o.task == task && o.started >= up && o.result.is_ok())
            .map(|o| o.started + o.took)
            .min()
            .unwrap_or_else(|| panic!("task {task} never succeeded after the restart"));
        let recovery = first_ok - up;
        println!("task {task}: first success {recovery:?} after the server was up");
        assert!(
            recovery <= recovery_bound,
            "task {task} took {recovery:?} to recover"
        );
        for o in outcomes.iter().filter(|o| {
            o.task == task && o.started + Duration::from_secs(1) >= end && o.started > up
        }) {
            if let Err(e) = &o.result {
                panic!(
                    "task {task} {} failed {:?} after the server was up: {e}",
                    o.call,
                    o.started - up
                );
            }
        }
    }
}

/// Starts a PgBouncer in front of the shared PostgreSQL server.
fn bouncer(mode: PoolMode, default_pool_size: u32) -> PgBouncer {
    ensure_installed().expect("ensure_installed");
    let upstream = shared_pg().expect("PostgreSQL");
    PgBouncer::start(
        &upstream,
        PgBouncerOptions {
            pool_mode: mode,
            default_pool_size,
            ..Default::default()
        },
    )
    .expect("PgBouncer::start")
}

/// Many tasks run parameterised statements at once; returns the backend
/// pids that served them.
async fn parameterised_from_many_tasks(pool: &Pool, tasks: usize, rounds: usize) -> BTreeSet<i64> {
    let mut handles = Vec::new();
    for task in 0..tasks {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            let mut pids = BTreeSet::new();
            for round in 0..rounds {
                let n = (task * 1000 + round).to_string();
                // Two statements per task, so a session sees several
                // different statements interleaved.
                let r = pool
                    .query(
                        "SELECT $1::int * 2, $2::text || '-' || $1, pg_backend_pid()",
                        &[Some(&n), Some("żółw")],
                        None,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("task {task} round {round}: {e}"));
                let doubled = (task * 1000 + round) * 2;
                assert_eq!(r.get(0, 0), Some(doubled.to_string().as_str()));
                assert_eq!(r.get(0, 1), Some(format!("żółw-{n}").as_str()));
                pids.insert(r.get(0, 2).expect("pid").parse::<i64>().expect("pid"));
                let r = pool
                    .query("SELECT $1::text IS NULL", &[None], None)
                    .await
                    .unwrap_or_else(|e| panic!("task {task} round {round}: {e}"));
                assert_eq!(r.get(0, 0), Some("t"));
            }
            pids
        }));
    }
    let mut pids = BTreeSet::new();
    for h in handles {
        pids.extend(h.await.expect("task"));
    }
    pids
}

/// `SELECT pg_sleep(5)` under `query_timeout=1s`: QUERY_TIMEOUT with 57014
/// at about 1 s, and the backend is no longer running it. `tag` makes the
/// statement text unique, as tests share the upstream server.
async fn sleep_is_cancelled_on_the_server(pool: &Pool, tag: &str) {
    let sql = format!("SELECT pg_sleep(5) /* {tag} */");
    let start = Instant::now();
    let e = pool
        .query(&sql, &[], None)
        .await
        .expect_err("pg_sleep(5) under query_timeout=1s");
    let took = start.elapsed();
    assert_eq!(e.code(), Code::QueryTimeout, "{e:?}");
    assert_eq!(e.layer(), Layer::Query);
    assert_eq!(e.limit(), Some("query_timeout"));
    assert!(e.is_timeout());
    assert_eq!(
        e.sqlstate(),
        Some("57014"),
        "not confirmed as cancelled: {e}"
    );
    assert!(
        took >= Duration::from_millis(950) && took <= Duration::from_secs(1) + SLACK,
        "took {took:?}: {e}"
    );
    // The server is not sleeping on for us.
    let r = pool
        .query(
            "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
            &[Some(&sql)],
            None,
        )
        .await
        .expect("pg_stat_activity");
    assert_eq!(r.get(0, 0), Some("0"), "the statement still runs");
}

#[test]
fn pgbouncer_transaction_mode_with_statement_cache_off() {
    let bouncer = bouncer(PoolMode::Transaction, 2);
    let url = with_options(
        &bouncer.url(),
        "sslmode=disable&statement_cache=0&query_timeout=1s&acquire_timeout=3s&max_open=6",
    );
    rt().block_on(async {
        let pool = Pool::open(&url).await.expect("open");

        // Simple queries.
        let r = pool
            .query("SELECT current_user, current_database(), 1 + 1", &[], None)
            .await
            .expect("simple query through PgBouncer");
        assert_eq!(r.get(0, 0), Some("dialpool"));
        assert_eq!(r.get(0, 1), Some("dialpool"));
        assert_eq!(r.get(0, 2), Some("2"));

        // Parameterised statements from six tasks over two server
        // sessions: consecutive statements of one client connection land
        // on different backends, which named prepared statements would not
        // survive.
        let pids = parameterised_from_many_tasks(&pool, 6, 40).await;
        let stats = pool.stats();
        println!(
            "transaction mode: {} client connections shared {} backends {pids:?}",
            stats.connects,
            pids.len()
        );
        assert!(pids.len() <= 2, "default_pool_size=2 but {pids:?}");
        assert!(
            stats.connects > pids.len() as u64,
            "no multiplexing exercised: {stats:?}"
        );

        // A query deadline: PgBouncer forwards the CancelRequest.
        sleep_is_cancelled_on_the_server(&pool, "transaction mode").await;

        // The caller's deadline on one connection, then the same
        // connection goes on.
        let mut conn = pool.acquire(None).await.expect("acquire");
        let e = conn
            .query(
                "SELECT pg_sleep(5)",
                &[],
                Some(Deadline::caller(Duration::from_millis(600))),
            )
            .await
            .expect_err("deadline");
        assert_eq!(e.code(), Code::QueryTimeout, "{e:?}");
        assert_eq!(e.limit(), Some("deadline"));
        assert_eq!(e.sqlstate(), Some("57014"), "{e}");
        let r = conn
            .query("SELECT $1::int", &[Some("7")], None)
            .await
            .expect("the same connection after the cancel");
        assert_eq!(r.get(0, 0), Some("7"));
        drop(conn);

        // The pool keeps working after the cancels.
        let pids = parameterised_from_many_tasks(&pool, 4, 10).await;
        assert!(pids.len() <= 2, "{pids:?}");
        let stats = pool.stats();
        assert_eq!(
            stats.closed_broken, 0,
            "a cancel cost a connection: {stats:?}"
        );
        pool.close();
    });
    drop(bouncer);
}

#[test]
fn pgbouncer_session_mode_with_the_default_statement_cache() {
    let bouncer = bouncer(PoolMode::Session, 4);
    // statement_cache stays at its default (100): named statements are
    // fine when a client keeps its server session.
    let url = with_options(
        &bouncer.url(),
        "sslmode=disable&query_timeout=1s&acquire_timeout=3s&max_open=4",
    );
    rt().block_on(async {
        let pool = Pool::open(&url).await.expect("open");
        assert_eq!(pool.config().statement_cache, 100);
        let pids = parameterised_from_many_tasks(&pool, 4, 40).await;
        assert!(pids.len() <= 4, "{pids:?}");

        // The cache is really used: named statements exist on the backend.
        let mut conn = pool.acquire(None).await.expect("acquire");
        for i in 0..3 {
            let r = conn
                .query("SELECT $1::int + 1", &[Some(&i.to_string())], None)
                .await
                .expect("cached statement");
            assert_eq!(r.get(0, 0), Some((i + 1).to_string().as_str()));
        }
        let r = conn
            .query(
                "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'dp\\_%'",
                &[],
                None,
            )
            .await
            .expect("pg_prepared_statements");
        let named: u32 = r.get(0, 0).expect("count").parse().expect("count");
        assert!(named >= 1, "no named statements on the backend");
        drop(conn);

        sleep_is_cancelled_on_the_server(&pool, "session mode").await;
        let pids_after = parameterised_from_many_tasks(&pool, 4, 5).await;
        assert!(pids_after.len() <= 4, "{pids_after:?}");
        pool.close();
    });
    drop(bouncer);
}

/// A login refused for a passing reason (53300 "too many clients", 57P03
/// "starting up / shutting down", which `login_error` marks retryable) is
/// not permanent: the pool should retry it within `acquire_timeout`
/// instead of failing the waiter at once. Here the server is full for
/// 300 ms of a 3 s acquire wait.
#[test]
fn a_passing_login_refusal_is_retried_within_acquire_timeout() {
    ensure_installed().expect("ensure_installed");
    let server = PgServer::start(PgOptions {
        settings: vec![
            ("max_connections".into(), "2".into()),
            ("superuser_reserved_connections".into(), "0".into()),
        ],
        ..Default::default()
    })
    .expect("PgServer::start");
    let base = with_options(&server.url(), "sslmode=disable&acquire_timeout=3s");
    rt().block_on(async {
        // Another pool fills both connection slots.
        let filler = Pool::open(&with_options(&base, "max_open=2"))
            .await
            .expect("open");
        let first = filler.acquire(None).await.expect("slot 1");
        let _second = filler.acquire(None).await.expect("slot 2");
        // One slot frees up after 300 ms.
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            first.discard();
        });
        let pool = Pool::open(&with_options(&base, "max_open=1"))
            .await
            .expect("open");
        let start = Instant::now();
        let r = pool.query("SELECT 1", &[], None).await;
        let took = start.elapsed();
        release.await.expect("release");
        let stats = pool.stats();
        match r {
            Ok(_) => assert!(
                stats.connect_failures_of(Code::ServerError) >= 1,
                "the server was never full: {stats:?}"
            ),
            Err(e) => panic!(
                "a passing refusal failed the acquire after {took:?} instead of being retried \
                 within acquire_timeout=3s: {e:?}"
            ),
        }
    });
}
