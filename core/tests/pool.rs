//! The pool over real TCP connections: a line-protocol server on loopback
//! (testkit's `LineServer`) that can cut idle connections, reset them and
//! restart, plus the loopback fault fixtures (refused port, SYN black hole).
//!
//! Time assertions allow a generous slack past a limit and never assert
//! tighter: precision is the benchmarks' job. Every loop is bounded in count
//! and time.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialpool::deadline::CancelToken;
use dialpool::pool::{CloseReason, Pool};
use dialpool::{Code, Deadline, Error, Layer};
use dialpool_testkit::fault;
use dialpool_testkit::line::{LineOptions, LineServer};
use parking_lot::Mutex;
use support::{auth_failed, config, eventually, open_fds, Counts, LineManager, Recorder};

/// How far past a limit an error may arrive in these tests.
const SLACK: Duration = Duration::from_millis(100);

/// Options every test starts from: maintenance and the idle limits off, so
/// each test turns on only what it looks at.
const QUIET: &str = "health_check_period=0&max_lifetime=0&max_idle_time=0&ping_after=1h";

struct Setup {
    pool: Pool<LineManager>,
    counts: Arc<Counts>,
    events: Arc<Recorder>,
}

/// `tcp://addr?` with the `QUIET` options, overridden by `opts`.
fn url(addr: std::net::SocketAddr, opts: &str) -> String {
    let mut merged: Vec<(&str, &str)> = Vec::new();
    for pair in QUIET.split('&').chain(opts.split('&')) {
        let (key, value) = pair.split_once('=').expect("key=value");
        merged.retain(|(k, _)| *k != key);
        merged.push((key, value));
    }
    let query: Vec<String> = merged.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("tcp://{addr}?{}", query.join("&"))
}

/// A pool of [`LineManager`] connections to `addr` with `QUIET` plus `opts`.
fn open(addr: std::net::SocketAddr, opts: &str) -> Setup {
    let config = config(&url(addr, opts));
    with_manager(LineManager::new(&config), &config)
}

fn with_manager(manager: LineManager, config: &dialpool::Config) -> Setup {
    let counts = manager.counts();
    let events = Recorder::new();
    let pool = Pool::with_handle(
        manager,
        config.pool.clone(),
        tokio::runtime::Handle::current(),
        Some(events.clone()),
    );
    Setup {
        pool,
        counts,
        events,
    }
}

fn server() -> LineServer {
    LineServer::start(LineOptions::default()).expect("line server")
}

fn n(counter: &std::sync::atomic::AtomicUsize) -> usize {
    Counts::get(counter)
}

/// The error of an acquire that must fail.
async fn acquire_err(pool: &Pool<LineManager>, caller: Option<Deadline>) -> Error {
    match pool.acquire(caller).await {
        Ok(c) => panic!("acquire succeeded with connection {}", c.serial),
        Err(e) => e,
    }
}

/// Asserts an ACQUIRE_TIMEOUT from `limit` (value `value`) that arrived
/// within [value, value + SLACK] by its own account and by the wall clock.
fn assert_acquire_timeout(e: &Error, limit: &str, value: Duration, waited: Duration) {
    assert_eq!(e.code(), Code::AcquireTimeout, "{e}");
    assert_eq!(e.layer(), Layer::Pool, "{e}");
    assert!(e.is_timeout(), "{e}");
    assert_eq!(e.limit(), Some(limit), "{e}");
    let elapsed = e.elapsed().expect("elapsed");
    // A caller's deadline is made just before the acquire starts its clock.
    let early = value.saturating_sub(Duration::from_millis(1));
    assert!(elapsed >= early, "fired early: {elapsed:?}: {e}");
    assert!(elapsed <= value + SLACK, "fired late: {elapsed:?}: {e}");
    assert!(
        waited >= value && waited <= value + SLACK,
        "caller waited {waited:?}: {e}"
    );
    assert!(
        e.to_string().contains(&format!(
            "({limit}={})",
            dialpool::config::fmt_duration(value)
        )),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// Exhaustion

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_times_out_at_the_deadline_with_the_numbers() {
    let server = server();
    let s = open(server.addr(), "max_open=4&acquire_timeout=500ms");
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = s.pool.acquire(None).await.expect("acquire");
        c.ping(None).await.expect("ping");
        held.push(c);
    }
    // A second waiter arrives later and still waits when the first fires.
    let later = {
        let pool = s.pool.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let start = Instant::now();
            let e = acquire_err(&pool, None).await;
            (e, start.elapsed())
        })
    };
    let start = Instant::now();
    let e = acquire_err(&s.pool, None).await;
    let waited = start.elapsed();
    assert_acquire_timeout(&e, "acquire_timeout", Duration::from_millis(500), waited);
    let text = e.to_string();
    assert!(
        text.contains("4/4 open, 4 in use, 0 idle, 1 waiting"),
        "{text}"
    );
    assert!(!text.contains("last connect error"), "{text}");
    assert!(text.contains("raise max_open or acquire_timeout"), "{text}");

    let (e, waited) = later.await.expect("task");
    assert_acquire_timeout(&e, "acquire_timeout", Duration::from_millis(500), waited);
    assert!(
        e.to_string()
            .contains("4/4 open, 4 in use, 0 idle, 0 waiting"),
        "{e}"
    );

    // The caller's deadline is shorter: it fires, and says so.
    let start = Instant::now();
    let e = acquire_err(&s.pool, Some(Deadline::caller(Duration::from_millis(100)))).await;
    assert_acquire_timeout(&e, "deadline", Duration::from_millis(100), start.elapsed());
    assert!(e.to_string().contains("4/4 open, 4 in use"), "{e}");

    // Nothing was lost: the held connections come back and serve again.
    drop(held);
    let mut c = s.pool.acquire(None).await.expect("after release");
    c.ping(None).await.expect("ping");
    drop(c);
    let st = s.pool.stats();
    assert_eq!((st.open, st.in_use, st.idle, st.waiting), (4, 0, 4, 0));
    assert_eq!((st.acquire_timeouts, st.connects), (3, 4));
    assert_eq!(server.accepted(), 4);
    assert_eq!(n(&s.counts.connects), 4);
}

// ---------------------------------------------------------------------------
// The server cuts idle connections behind the pool's back

/// 20 rounds of 4 tasks × 13 checkouts (1,040 in all), each a PING round
/// trip that must succeed; between rounds the server cuts every connection
/// (idle for 100 ms). Only the checkout probe protects: `ping_after` is an
/// hour and the pool's own pings are counted.
async fn never_hands_out_a_dead_connection(reset: bool) {
    const ROUNDS: usize = 20;
    const TASKS: usize = 4;
    const PER_TASK: usize = 13;
    let server = LineServer::start(LineOptions {
        close_idle_after: Some(Duration::from_millis(100)),
        reset_instead_of_close: reset,
    })
    .expect("line server");
    let s = open(server.addr(), "max_open=4&acquire_timeout=2s");
    let started = Instant::now();
    let mut checkouts = 0;
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let pool = s.pool.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let mut c = pool.acquire(None).await.expect("acquire");
                    let limit = Deadline::after("ping_timeout", Duration::from_secs(1));
                    if let Err(e) = c.ping(Some(limit)).await {
                        panic!(
                            "round {round}, checkout {i}: a dead connection was handed out: {e}"
                        );
                    }
                }
                PER_TASK
            }));
        }
        for t in tasks {
            checkouts += t.await.expect("task");
        }
        // The server cuts every connection once idle; wait for it, then give
        // the FIN/RST a moment to land in the client socket (a goodbye
        // still in flight is a race no pool can win).
        assert!(
            eventually(Duration::from_secs(2), || server.open() == 0).await,
            "server kept {} connections",
            server.open()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // One more checkout discards whatever the last cut left idle.
    let mut c = s.pool.acquire(None).await.expect("acquire");
    c.ping(None).await.expect("ping");
    drop(c);
    checkouts += 1;

    let st = s.pool.stats();
    assert!(checkouts > 1000);
    assert_eq!(st.acquire_count, checkouts as u64);
    assert_eq!(n(&s.counts.pings), 0, "the pool pinged: {st:?}");
    assert!(st.closed_dead >= ROUNDS as u64, "{st:?}");
    // Every connection the server cut was found dead by the probe, once.
    assert_eq!(st.closed_dead, server.idle_closed() as u64, "{st:?}");
    assert_eq!(st.closed_broken, 0, "{st:?}");
    assert!(
        eventually(Duration::from_secs(2), || server.accepted() as u64
            == st.connects)
        .await,
        "{st:?}, server accepted {}",
        server.accepted()
    );
    assert_eq!(
        s.events.closes(CloseReason::Dead).len() as u64,
        st.closed_dead
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_idle_cut_fin_never_hands_out_a_dead_connection() {
    never_hands_out_a_dead_connection(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_idle_cut_rst_never_hands_out_a_dead_connection() {
    never_hands_out_a_dead_connection(true).await;
}

// ---------------------------------------------------------------------------
// Connect failures

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_server_waiters_get_acquire_timeout_naming_the_refusal() {
    let addr = fault::refused_addr();
    let s = open(addr, "max_open=2&acquire_timeout=300ms");
    let mut waiters = Vec::new();
    for _ in 0..5 {
        let pool = s.pool.clone();
        waiters.push(tokio::spawn(async move {
            let start = Instant::now();
            let e = acquire_err(&pool, None).await;
            (e, start.elapsed())
        }));
    }
    for w in waiters {
        let (e, waited) = w.await.expect("task");
        assert_acquire_timeout(&e, "acquire_timeout", Duration::from_millis(300), waited);
        let text = e.to_string();
        assert!(
            text.contains(&format!(
                "last connect error: dial: connect to {addr} refused"
            )),
            "{text}"
        );
        assert!(text.contains("ECONNREFUSED"), "{text}");
        assert!(text.contains("cannot be reached"), "{text}");
    }
    let st = s.pool.stats();
    // Retried with backoff while the waiters stayed.
    assert!(
        st.connect_failures_of(Code::ConnectionRefused) >= 3,
        "{st:?}"
    );
    assert_eq!((st.connects, st.open, st.acquire_timeouts), (0, 0, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_server_reports_the_connect_in_progress_then_the_timeout() {
    let hole = fault::SynBlackHole::new().expect("black hole");
    let addr = hole.addr;
    let s = open(addr, "max_open=2&acquire_timeout=1s&connect_timeout=200ms");
    let early = {
        let pool = s.pool.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let e = acquire_err(&pool, Some(Deadline::caller(Duration::from_millis(100)))).await;
            (e, start.elapsed())
        })
    };
    let late = {
        let pool = s.pool.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let e = acquire_err(&pool, None).await;
            (e, start.elapsed())
        })
    };
    // While the first connects still hang: "in progress", no error yet.
    let (e, waited) = early.await.expect("task");
    assert_acquire_timeout(&e, "deadline", Duration::from_millis(100), waited);
    let text = e.to_string();
    assert!(text.contains(" in progress for 0."), "{text}");
    assert!(!text.contains("last connect error"), "{text}");

    // Once a connect has timed out, the waiter's error names it.
    let (e, waited) = late.await.expect("task");
    assert_acquire_timeout(&e, "acquire_timeout", Duration::from_secs(1), waited);
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "last connect error: dial: connect to {addr} timed out"
        )),
        "{text}"
    );
    assert!(text.contains("(connect_timeout=200ms)"), "{text}");
    let st = s.pool.stats();
    assert!(st.connect_failures_of(Code::ConnectTimeout) >= 1, "{st:?}");
    assert_eq!(st.connects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_connect_failure_reaches_every_waiter_at_once() {
    const WAITERS: usize = 8;
    let server = server();
    let config = config(&url(server.addr(), "max_open=2&acquire_timeout=5s"));
    // Each connect dials for real, spends 100 ms in a "login" exchange, then
    // fails authentication.
    let manager = LineManager::failing_login(&config, auth_failed(), Duration::from_millis(100));
    let s = with_manager(manager, &config);
    let mut waiters = Vec::new();
    for _ in 0..WAITERS {
        let pool = s.pool.clone();
        waiters.push(tokio::spawn(async move {
            let start = Instant::now();
            let e = acquire_err(&pool, None).await;
            (e, start.elapsed())
        }));
    }
    for w in waiters {
        let (e, waited) = w.await.expect("task");
        assert_eq!(e.code(), Code::AuthFailed, "{e}");
        assert_eq!(e.layer(), Layer::Login, "{e}");
        assert!(!e.is_retryable());
        assert!(waited < Duration::from_secs(1), "{waited:?}: {e}");
    }
    // The other connect (if any) ends the same way, a moment later.
    assert!(eventually(Duration::from_secs(2), || s.pool.stats().connecting == 0).await);
    let st = s.pool.stats();
    assert_eq!(st.acquire_timeouts, 0, "{st:?}");
    // Eight waiters failed on at most max_open connects: the failure was
    // handed to waiters that had no connect of their own.
    let attempts = n(&s.counts.attempts);
    assert!((1..=2).contains(&attempts), "{attempts} connects");
    assert_eq!(st.connect_failures_of(Code::AuthFailed), attempts as u64);
    assert_eq!(server.accepted(), attempts);
    assert!(server.seen("SLEEP") >= 1);
}

// ---------------------------------------------------------------------------
// Lifetimes and maintenance

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_jitter_spreads_the_expiries() {
    const CONNS: usize = 10;
    let server = server();
    let s = open(
        server.addr(),
        "max_open=10&acquire_timeout=2s&max_lifetime=2s&health_check_period=20ms",
    );
    // Ten connections made together, then all idle.
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let pool = s.pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = pool.acquire(None).await.expect("acquire");
            c.ping(None).await.expect("ping");
            c
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.push(t.await.expect("task"));
    }
    drop(held);
    assert_eq!(server.accepted(), CONNS);
    assert!(
        eventually(Duration::from_secs(4), || {
            s.events.closes(CloseReason::MaxLifetime).len() == CONNS
        })
        .await,
        "{:?}",
        s.pool.stats()
    );
    let mut closes = s.events.closes(CloseReason::MaxLifetime);
    closes.sort_by_key(|(t, _)| *t);
    for (_, age) in &closes {
        // Lifetime 2 s shortened by up to 5 % (so spread over 100 ms), found
        // by a pass every 20 ms.
        assert!(*age >= Duration::from_millis(1900), "{age:?}");
        assert!(*age <= Duration::from_millis(2000) + SLACK, "{age:?}");
    }
    // One maintenance pass closes its connections within microseconds; a
    // gap of 5 ms or more means another pass.
    let passes = 1 + closes
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 >= Duration::from_millis(5))
        .count();
    let ages: Vec<_> = closes.iter().map(|(_, a)| a.as_millis()).collect();

    assert!(passes >= 2, "all expired in one pass: ages {ages:?} ms");
    let st = s.pool.stats();
    assert_eq!(
        (st.closed_max_lifetime, st.open),
        (CONNS as u64, 0),
        "{st:?}"
    );
    assert!(eventually(Duration::from_secs(2), || server.open() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_idle_is_refilled_after_the_server_restarts() {
    let server = server();
    let s = open(
        server.addr(),
        "max_open=4&min_idle=2&acquire_timeout=2s&health_check_period=20ms",
    );
    assert!(
        eventually(Duration::from_secs(2), || s.pool.stats().idle == 2).await,
        "pre-warm: {:?}",
        s.pool.stats()
    );
    assert!(eventually(Duration::from_secs(2), || server.accepted() == 2).await);
    // The server goes away for 200 ms (connects refused), then comes back
    // on the same port.
    server.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.start_again().expect("listen again");
    assert!(
        eventually(Duration::from_secs(5), || {
            let st = s.pool.stats();
            st.idle == 2 && st.closed_dead >= 2 && server.open() == 2
        })
        .await,
        "not refilled: {:?}, server open {}",
        s.pool.stats(),
        server.open()
    );
    let st = s.pool.stats();
    assert_eq!(st.closed_dead, 2, "{st:?}");
    assert!(
        st.connect_failures_of(Code::ConnectionRefused) >= 1,
        "{st:?}"
    );
    assert_eq!(server.accepted(), 4);
    let mut c = s.pool.acquire(None).await.expect("acquire");
    c.ping(None).await.expect("a refilled connection works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_idle_cut_lowers_max_idle_time_so_the_pool_closes_first() {
    let server = LineServer::start(LineOptions {
        close_idle_after: Some(Duration::from_secs(2)),
        reset_instead_of_close: false,
    })
    .expect("line server");
    let config = config(&url(
        server.addr(),
        "max_open=2&acquire_timeout=2s&health_check_period=20ms&max_idle_time=10m",
    ));
    let s = with_manager(LineManager::reading_idle_limit(&config), &config);
    let mut c = s.pool.acquire(None).await.expect("acquire");
    c.ping(None).await.expect("ping");
    drop(c);
    let st = s.pool.stats();
    assert_eq!(st.server_idle_limit, Some(Duration::from_secs(2)), "{st:?}");
    // 10 % below the server's cut.
    assert_eq!(
        st.max_idle_time,
        Some(Duration::from_millis(1800)),
        "{st:?}"
    );
    let adjusted: Vec<_> = s
        .events
        .events()
        .into_iter()
        .filter_map(|(_, e)| match e {
            support::Seen::Adjusted {
                option,
                from,
                to,
                why,
            } => Some((option, from, to, why)),
            _ => None,
        })
        .collect();
    assert_eq!(adjusted.len(), 1, "{adjusted:?}");
    let (option, from, to, why) = &adjusted[0];
    assert_eq!(
        (*option, *from, *to),
        (
            "max_idle_time",
            Some(Duration::from_secs(600)),
            Duration::from_millis(1800)
        )
    );
    assert!(why.contains("2s"), "{why}");
    // The idle connection is retired by the pool (a polite QUIT) before the
    // server cuts it.
    assert!(
        eventually(Duration::from_secs(3), || s
            .pool
            .stats()
            .closed_max_idle_time
            == 1)
        .await,
        "{:?}",
        s.pool.stats()
    );
    assert!(eventually(Duration::from_secs(1), || server.open() == 0).await);
    assert_eq!((server.idle_closed(), server.seen("QUIT")), (0, 1));
    assert_eq!(s.pool.stats().closed_dead, 0);
}

/// With `health_check_period=20ms` each pass closes the one idle connection
/// (`max_lifetime=1ms`) and `min_idle=1` makes the next, so the gaps between
/// the closes are the gaps between passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_runs_every_health_check_period() {
    let server = server();
    let s = open(
        server.addr(),
        "max_open=2&min_idle=1&acquire_timeout=2s&max_lifetime=1ms&health_check_period=20ms",
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let closes = s.events.closes(CloseReason::MaxLifetime);
    let mut gaps: Vec<Duration> = closes.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps.len() >= 10, "{} passes in 1 s", closes.len());
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    // The median is immune to a few late wake-ups on a loaded machine.
    assert!(
        median < Duration::from_millis(30),
        "median pass interval {median:?} for health_check_period=20ms ({} passes in 1 s)",
        closes.len()
    );
}

// ---------------------------------------------------------------------------
// Fairness, close, leaks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_in_order_of_arrival() {
    const WAITERS: usize = 10;
    let server = server();
    let s = open(server.addr(), "max_open=1&acquire_timeout=5s");
    let held = s.pool.acquire(None).await.expect("held");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..WAITERS {
        let pool = s.pool.clone();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = pool.acquire(None).await.expect("served");
            order.lock().push(i);
            c.ping(None).await.expect("ping");
        }));
        // The next one arrives only once this one is queued.
        assert!(
            eventually(Duration::from_secs(2), || s.pool.stats().waiting as usize
                == i + 1)
            .await
        );
    }
    drop(held);
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(*order.lock(), (0..WAITERS).collect::<Vec<_>>());
    let st = s.pool.stats();
    // Every waiter waited, and so did the first acquire (for the connect).
    assert_eq!((st.connects, st.wait_count), (1, WAITERS as u64 + 1));
    assert_eq!(server.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_recently_returned_connection_goes_out_first() {
    let server = server();
    let s = open(server.addr(), "max_open=3&acquire_timeout=2s");
    let a = s.pool.acquire(None).await.expect("a");
    let b = s.pool.acquire(None).await.expect("b");
    let c = s.pool.acquire(None).await.expect("c");
    assert_eq!((a.serial, b.serial, c.serial), (1, 2, 3));
    drop(a);
    drop(c);
    drop(b);
    let mut order = Vec::new();
    let mut held = Vec::new();
    for _ in 0..3 {
        let c = s.pool.acquire(None).await.expect("acquire");
        order.push(c.serial);
        held.push(c);
    }
    assert_eq!(order, vec![2, 3, 1]);
}

/// A caller that names the connection it held last gets it back while it
/// is idle, wherever it lies in the idle list; when it is not idle, the
/// caller gets the one idle longest (the most recently returned ones are
/// the likeliest to be wanted back); with no preference the order stays
/// last in, first out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preferred_connection_comes_back_to_its_caller() {
    let server = server();
    let s = open(server.addr(), "max_open=3&acquire_timeout=2s");
    let a = s.pool.acquire(None).await.expect("a");
    let b = s.pool.acquire(None).await.expect("b");
    let c = s.pool.acquire(None).await.expect("c");
    let (ida, idb, idc) = (a.id(), b.id(), c.id());
    assert!(ida != 0 && idb != 0 && idc != 0 && ida != idb && idb != idc);
    // Idle, oldest first: a, b, c.
    drop(a);
    drop(b);
    drop(c);
    let prefer = |id| s.pool.acquire_preferring(None, None, None, Some(id));
    let got = prefer(ida).await.expect("preferring a");
    assert_eq!(
        (got.id(), got.serial),
        (ida, 1),
        "a, from the bottom of the list"
    );
    let again = prefer(ida).await.expect("a is held: another");
    assert_eq!(again.id(), idb, "the one idle longest");
    let rest = s.pool.acquire(None).await.expect("no preference");
    assert_eq!(rest.id(), idc);
    drop(again);
    drop(rest);
    // Idle: b, c. An id the pool never gave out is a preferred connection
    // that is not idle: the one idle longest.
    let unknown = prefer(u64::MAX).await.expect("unknown id");
    assert_eq!(unknown.id(), idb);
    assert_eq!(
        n(&s.counts.connects),
        3,
        "no connection opened for a preference"
    );
}

/// The checkout without a future hands out what the async acquire would
/// (the preferred connection, else the one idle longest; with no preference
/// the newest), with the same accounting, and leaves to it everything that
/// needs I/O or a wait: an empty idle list, a ping that is due. A dead idle
/// connection is discarded on the way, as the async acquire does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_handed_out_at_once() {
    let server = server();
    let s = open(server.addr(), "max_open=3&acquire_timeout=2s");
    assert!(
        s.pool.try_acquire_idle(None, None).is_none(),
        "nothing idle yet: the async acquire connects"
    );
    let a = s.pool.acquire(None).await.expect("a");
    let b = s.pool.acquire(None).await.expect("b");
    let c = s.pool.acquire(None).await.expect("c");
    let (ida, idb, idc) = (a.id(), b.id(), c.id());
    drop(a);
    drop(b);
    drop(c);
    let take = |prefer| {
        s.pool
            .try_acquire_idle(Some("fast"), prefer)
            .expect("an idle connection")
            .expect("no error")
    };
    let got_a = take(Some(ida));
    assert_eq!(got_a.id(), ida, "the preferred one, from the bottom");
    let got_b = take(Some(ida));
    assert_eq!(got_b.id(), idb, "a is held: the one idle longest");
    let got_c = take(None);
    assert_eq!(got_c.id(), idc);
    assert!(s.pool.try_acquire_idle(None, None).is_none(), "all held");
    let st = s.pool.stats();
    assert_eq!((st.in_use, st.idle, st.acquire_count), (3, 0, 6));
    drop(got_a);
    drop(got_b);
    drop(got_c);
    assert_eq!(s.pool.stats().in_use, 0);

    // Dead idle connections are discarded on the way, and with nothing
    // else idle the caller is sent to the async acquire.
    server.close_all();
    assert!(
        eventually(Duration::from_secs(2), || server.open() == 0).await,
        "the server closed the connections"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(s.pool.try_acquire_idle(None, Some(ida)).is_none());
    let st = s.pool.stats();
    assert_eq!((st.closed_dead, st.open, st.idle), (3, 0, 0));

    // A connection idle past ping_after is the async acquire's to ping.
    drop(s);
    let server = self::server();
    let s = open(
        server.addr(),
        "max_open=1&acquire_timeout=2s&ping_after=50ms",
    );
    drop(s.pool.acquire(None).await.expect("first"));
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(
        s.pool.try_acquire_idle(None, None).is_none(),
        "a ping is due"
    );
    assert_eq!(s.pool.stats().idle, 1, "left where it was");
    let pinged = s.pool.acquire(None).await.expect("pinged");
    assert_eq!(n(&s.counts.pings), 1);
    drop(pinged);

    s.pool.close();
    match s.pool.try_acquire_idle(None, None) {
        Some(Err(e)) => assert_eq!(e.code(), Code::PoolClosed, "{e}"),
        other => panic!("a closed pool: {:?}", other.map(|r| r.map(|c| c.id()))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_fails_waiters_and_closes_connections_as_they_come_back() {
    let server = server();
    let s = open(server.addr(), "max_open=2&acquire_timeout=5s");
    let mut a = s.pool.acquire(None).await.expect("a");
    let mut b = s.pool.acquire(None).await.expect("b");
    // Served once each, so the server has surely accepted both.
    a.ping(None).await.expect("ping");
    b.ping(None).await.expect("ping");
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let pool = s.pool.clone();
        waiters.push(tokio::spawn(async move {
            let start = Instant::now();
            (acquire_err(&pool, None).await, start.elapsed())
        }));
    }
    assert!(eventually(Duration::from_secs(2), || s.pool.stats().waiting == 3).await);
    // Closed from another thread, twice at once.
    let closers: Vec<_> = (0..2)
        .map(|_| {
            let pool = s.pool.clone();
            std::thread::spawn(move || pool.close())
        })
        .collect();
    for c in closers {
        c.join().expect("close thread");
    }
    assert!(s.pool.is_closed());
    for w in waiters {
        let (e, waited) = w.await.expect("task");
        assert_eq!(e.code(), Code::PoolClosed, "{e}");
        assert_eq!(e.layer(), Layer::Pool, "{e}");
        assert!(waited < Duration::from_secs(1), "{waited:?}");
    }
    // In-use connections keep working until they come back, then close.
    a.ping(None).await.expect("still usable");
    assert_eq!(server.open(), 2);
    drop(a);
    assert!(eventually(Duration::from_secs(2), || server.open() == 1).await);
    drop(b);
    assert!(eventually(Duration::from_secs(2), || server.open() == 0).await);
    assert!(eventually(Duration::from_secs(2), || n(&s.counts.closes) == 2).await);
    assert_eq!(server.seen("QUIT"), 2);
    let st = s.pool.stats();
    assert_eq!((st.open, st.in_use, st.idle, st.waiting), (0, 0, 0, 0));
    // Later acquires fail at once; close stays idempotent.
    let start = Instant::now();
    assert_eq!(acquire_err(&s.pool, None).await.code(), Code::PoolClosed);
    assert!(start.elapsed() < SLACK);
    s.pool.close();
    assert_eq!(server.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_closes_idle_connections_at_once() {
    let server = server();
    let s = open(server.addr(), "max_open=4&acquire_timeout=5s");
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut c = s.pool.acquire(None).await.expect("acquire");
        c.ping(None).await.expect("ping");
        conns.push(c);
    }
    let mut kept = conns.pop().expect("one");
    drop(conns);
    assert_eq!(s.pool.stats().idle, 3);
    assert_eq!(server.open(), 4);
    let pool = s.pool.clone();
    std::thread::spawn(move || pool.close())
        .join()
        .expect("close thread");
    // The server sees the three idle ones go (QUIT, then close).
    assert!(
        eventually(Duration::from_secs(1), || server.open() == 1).await,
        "server still has {}",
        server.open()
    );
    assert_eq!(server.seen("QUIT"), 3);
    let st = s.pool.stats();
    assert_eq!((st.open, st.in_use, st.idle), (1, 1, 0));
    assert_eq!(s.events.closes(CloseReason::PoolClosed).len(), 3);
    kept.ping(None).await.expect("in use, still open");
    drop(kept);
    assert!(eventually(Duration::from_secs(1), || server.open() == 0).await);
    assert_eq!(s.pool.stats().open, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_held_too_long_is_reported_once_with_its_label() {
    let server = server();
    let s = open(
        server.addr(),
        "max_open=2&acquire_timeout=2s&leak_threshold=50ms",
    );
    let mut c = s
        .pool
        .acquire_labeled(None, Some("nightly-report"))
        .await
        .expect("acquire");
    c.ping(None).await.expect("ping");
    // A short checkout beside it is no leak.
    drop(
        s.pool
            .acquire_labeled(None, Some("quick"))
            .await
            .expect("acquire"),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(c);
    // Several more sweeps: still one event.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let leaks = s.events.leaks();
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    let (held, label) = &leaks[0];
    assert_eq!(label.as_deref(), Some("nightly-report"));
    assert!(
        *held >= Duration::from_millis(50) && *held < Duration::from_millis(200),
        "{held:?}"
    );
    assert_eq!(s.pool.stats().leaks, 1);
}

// ---------------------------------------------------------------------------
// Release: reset and broken connections

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_is_rolled_back_before_reuse() {
    let server = server();
    let s = open(server.addr(), "max_open=1&acquire_timeout=2s");
    let mut c = s.pool.acquire(None).await.expect("acquire");
    assert_eq!(c.command("BEGIN", None).await.expect("begin"), "OK");
    assert!(c.in_transaction());
    let first = c.serial;
    drop(c);
    // The only connection comes back after its ROLLBACK, not before.
    let mut c = s.pool.acquire(None).await.expect("after reset");
    assert_eq!(c.serial, first, "the same connection, reused");
    assert!(!c.in_transaction());
    assert_eq!(server.seen("ROLLBACK"), 1);
    assert_eq!(n(&s.counts.resets), 1);
    c.ping(None).await.expect("ping");
    // A committed transaction needs no reset.
    c.command("BEGIN", None).await.expect("begin");
    c.command("COMMIT", None).await.expect("commit");
    drop(c);
    let c = s.pool.acquire(None).await.expect("acquire");
    assert_eq!(c.serial, first);
    assert_eq!(server.seen("ROLLBACK"), 1);
    assert_eq!(n(&s.counts.resets), 1);
    assert_eq!(server.accepted(), 1);
    let st = s.pool.stats();
    assert_eq!((st.closed_broken, st.connects), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_connection_is_closed_not_reused() {
    let server = server();
    let s = open(server.addr(), "max_open=1&acquire_timeout=2s");
    let mut c = s.pool.acquire(None).await.expect("acquire");
    // Cut off mid-reply: the DONE would be read as the next command's answer.
    let e = c
        .command(
            "SLEEP 300",
            Some(Deadline::after("query_timeout", Duration::from_millis(30))),
        )
        .await
        .expect_err("timed out");
    assert_eq!(e.code(), Code::QueryTimeout, "{e}");
    assert!(c.is_broken());
    let first = c.serial;
    drop(c);
    let mut c = s.pool.acquire(None).await.expect("a new connection");
    assert_ne!(c.serial, first);
    c.ping(None).await.expect("ping");
    assert_eq!(s.pool.stats().closed_broken, 1);
    // The broken one is gone on the server too (after its SLEEP).
    assert!(eventually(Duration::from_secs(2), || server.open() == 1).await);
    assert_eq!(server.accepted(), 2);
    // A connection its user discards is closed as well.
    c.discard();
    let c = s.pool.acquire(None).await.expect("another");
    assert_eq!(c.serial, 3);
    let st = s.pool.stats();
    assert_eq!((st.closed_broken, st.open), (2, 1));
    assert_eq!(s.events.closes(CloseReason::Broken).len(), 2);
}

// ---------------------------------------------------------------------------
// Cancellation and dropping

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_returns_at_once_and_loses_nothing() {
    // The peer never answers, so a ping of an idle connection hangs.
    let peer = fault::SilentPeer::new().expect("silent peer");
    let s = open(
        peer.addr,
        "max_open=1&acquire_timeout=5s&ping_after=0&ping_timeout=5s",
    );
    let held = s.pool.acquire(None).await.expect("fresh, not pinged");
    // Cancelled while waiting, from another thread.
    let token = CancelToken::new();
    let waiter = {
        let (pool, token) = (s.pool.clone(), token.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let r = pool.acquire_with(None, Some(&token), None).await;
            (r.map(|_| ()), start.elapsed())
        })
    };
    assert!(eventually(Duration::from_secs(2), || s.pool.stats().waiting == 1).await);
    std::thread::spawn(move || token.cancel())
        .join()
        .expect("cancel thread");
    let (r, waited) = waiter.await.expect("task");
    let e = r.expect_err("cancelled");
    assert_eq!((e.code(), e.layer()), (Code::Cancelled, Layer::Pool), "{e}");
    assert!(waited < Duration::from_secs(1), "{waited:?}");
    assert_eq!(s.pool.stats().waiting, 0);
    drop(held);

    // Cancelled during the checkout ping: the connection is closed (its
    // state is unknown) and its slot comes back.
    let token = CancelToken::new();
    let waiter = {
        let (pool, token) = (s.pool.clone(), token.clone());
        tokio::spawn(async move {
            pool.acquire_with(None, Some(&token), None)
                .await
                .map(|_| ())
        })
    };
    assert!(eventually(Duration::from_secs(2), || n(&s.counts.pings) == 1).await);
    token.cancel();
    let e = waiter.await.expect("task").expect_err("cancelled");
    assert_eq!(e.code(), Code::Cancelled, "{e}");
    let st = s.pool.stats();
    assert_eq!((st.open, st.in_use, st.idle), (0, 0, 0), "{st:?}");
    assert_eq!((st.closed_broken, st.acquire_cancelled), (1, 2), "{st:?}");
    let c = s.pool.acquire(None).await.expect("a new connection");
    assert_eq!(c.serial, 2);
}

/// A caller that drops its acquire (a `select!` that lost, a timeout
/// wrapper, a Go ctx cancelled through a binding that drops the future)
/// while the pool pings the idle connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_dropped_during_its_ping_gives_its_slot_back() {
    let peer = fault::SilentPeer::new().expect("silent peer");
    let s = open(
        peer.addr,
        "max_open=1&acquire_timeout=300ms&ping_after=0&ping_timeout=5s",
    );
    drop(s.pool.acquire(None).await.expect("fresh, not pinged"));
    let outer = tokio::time::timeout(Duration::from_millis(50), s.pool.acquire(None)).await;
    assert!(outer.is_err(), "the silent peer answered a ping");
    assert_eq!(n(&s.counts.pings), 1);
    // The connection under the ping went with the future; its slot must not.
    assert!(
        eventually(Duration::from_secs(1), || {
            let st = s.pool.stats();
            (st.open, st.in_use) == (0, 0)
        })
        .await,
        "nobody holds a connection, yet {:?}",
        s.pool.stats()
    );
    let c = s.pool.acquire(None).await.expect("a new connection");
    assert_eq!(c.serial, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_pool_handle_stops_its_background_connects() {
    let addr = fault::refused_addr();
    let s = open(addr, "max_open=2&min_idle=1&acquire_timeout=1s");
    let counts = s.counts.clone();
    // min_idle is retried in the background while the server is down.
    assert!(eventually(Duration::from_secs(2), || n(&counts.attempts) >= 2).await);
    drop(s);
    // The pool (and with it the manager's handle on the counts) goes away.
    let gone = eventually(Duration::from_millis(1500), || {
        Arc::strong_count(&counts) == 1
    })
    .await;
    let attempts = n(&counts.attempts);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        gone,
        "the pool outlived its last handle; {} more connects since",
        n(&counts.attempts) - attempts
    );
    assert_eq!(n(&counts.attempts), attempts, "connects after the drop");
}

// ---------------------------------------------------------------------------
// File descriptors

/// Set in the child process that runs the descriptor count alone.
const FD_CHILD: &str = "DIALPOOL_POOL_FD_CHILD";

/// /proc/self/fd counts the whole process, so the other tests' sockets
/// would disturb it: the test re-runs itself alone in a child process.
#[test]
fn no_descriptor_leak_over_100k_cycles_and_1k_failed_connects() {
    if std::env::var_os(FD_CHILD).is_some() {
        return fd_child();
    }
    let name = "no_descriptor_leak_over_100k_cycles_and_1k_failed_connects";
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = std::process::Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(FD_CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let read = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = read(child.stdout.take().map(|r| Box::new(r) as _));
    let err = read(child.stderr.take().map(|r| Box::new(r) as _));
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let report = format!("child stdout:\n{out}\nchild stderr:\n{err}");
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("child failed ({s}):\n{report}"),
        None => panic!("child still running after 60 s:\n{report}"),
    }
    assert!(out.contains("1 passed"), "the child ran no test:\n{report}");
}

fn fd_child() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        const CYCLES: usize = 100_000;
        const FAILED_CONNECTS: usize = 1_000;
        let server = server();
        // Warm the runtime and the server (threads, timer, I/O driver).
        {
            let s = open(server.addr(), "max_open=2&acquire_timeout=2s");
            for _ in 0..100 {
                s.pool.acquire(None).await.expect("warm").ping(None).await.expect("ping");
            }
            s.pool.close();
            assert!(eventually(Duration::from_secs(2), || server.open() == 0).await);
        }
        let baseline = open_fds();

        let s = open(server.addr(), "max_open=2&acquire_timeout=2s");
        let mut c = s.pool.acquire(None).await.expect("acquire");
        c.ping(None).await.expect("ping");
        drop(c);
        let with_pool = open_fds();
        let start = Instant::now();
        for _ in 0..CYCLES {
            drop(s.pool.acquire(None).await.expect("acquire"));
        }
        let cycles_took = start.elapsed();
        let after_cycles = open_fds();
        assert_eq!(
            after_cycles, with_pool,
            "descriptors after {CYCLES} acquire/release cycles"
        );
        let st = s.pool.stats();
        assert_eq!(st.acquire_count, CYCLES as u64 + 1);
        assert_eq!((st.connects, st.open), (1, 1));
        s.pool.close();
        drop(s);
        assert!(eventually(Duration::from_secs(2), || server.open() == 0).await);
        assert!(
            eventually(Duration::from_secs(2), || open_fds() == baseline).await,
            "after the pool closed: {} descriptors, baseline {baseline}",
            open_fds()
        );

        // 1,000 refused connects, each failing its acquire at once.
        let addr = fault::refused_addr();
        let config = config(&url(addr, "max_open=2&acquire_timeout=2s"));
        let s = with_manager(LineManager::fail_fast(&config), &config);
        let start = Instant::now();
        for _ in 0..FAILED_CONNECTS {
            let e = acquire_err(&s.pool, None).await;
            assert_eq!(e.code(), Code::ConnectionRefused, "{e}");
        }
        let failures_took = start.elapsed();
        assert_eq!(
            s.pool.stats().connect_failures_of(Code::ConnectionRefused),
            FAILED_CONNECTS as u64
        );
        assert!(
            eventually(Duration::from_secs(2), || open_fds() == baseline).await,
            "after {FAILED_CONNECTS} refused connects: {} descriptors, baseline {baseline}",
            open_fds()
        );
        eprintln!(
            "fd test: {CYCLES} cycles in {cycles_took:?}, {FAILED_CONNECTS} refused connects in {failures_took:?}, {baseline} descriptors throughout"
        );
    });
}
