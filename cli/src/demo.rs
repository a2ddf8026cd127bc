//! `dialpool demo`: starts throwaway PostgreSQL and MariaDB servers, runs the
//! failures this project is about against them and against real network
//! faults, and prints one table: what each caller got (layer, code, the
//! limit that fired), how long it took, and what the server saw. Beside it,
//! when Go is installed, the same scenarios through plain Go `database/sql`
//! (see `contrast.rs`). `--json` prints the same facts for machines.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dialpool::config::fmt_duration;
use dialpool::{Config, Ctx, Deadline, Dialer, Error, Pool, Session};
use dialpool_testkit::fault;
use serde_json::{json, Value};

use crate::contrast::{self, Contrast, GoOutcome};

/// The limits the scenarios run under; the Go contrast gets the same ones.
const DIAL_LIMIT: Duration = Duration::from_millis(500);
const ACQUIRE_LIMIT: Duration = Duration::from_millis(500);
const QUERY_LIMIT: Duration = Duration::from_secs(1);
/// The caller's deadline for the query after an idle connection was cut.
const IDLE_CHECK_DEADLINE: Duration = Duration::from_secs(2);
/// How long the server is watched after a slow query's error for the
/// statement to stop (the Go program watches as long).
const WATCH_STATEMENT: Duration = Duration::from_secs(1);

/// One scenario's outcome.
struct Row {
    id: &'static str,
    scenario: &'static str,
    outcome: Result<String, Error>,
    measured: Duration,
    /// For the scenarios that run a statement: whether it had stopped on the
    /// server right after the caller got its error (read from the server).
    cancelled: Option<bool>,
    /// When, after the caller got its error, the look began that first
    /// found the statement stopped on the server.
    stopped_after: Option<Duration>,
    server_saw: String,
    go: Option<GoOutcome>,
}

impl Row {
    fn new(
        id: &'static str,
        scenario: &'static str,
        measured: Duration,
        outcome: Result<String, Error>,
    ) -> Row {
        Row {
            id,
            scenario,
            // Measured here around the call, independently of the time
            // the error reports about itself.
            measured,
            outcome,
            cancelled: None,
            stopped_after: None,
            server_saw: "-".into(),
            go: None,
        }
    }
}

/// The faults, alive while both the Rust and the Go runs use them.
struct Faults {
    black_hole: Result<fault::SynBlackHole, String>,
    refused: SocketAddr,
    stall: Result<StalledTls, String>,
}

pub fn run(json: bool) -> ExitCode {
    let started = Instant::now();
    if let Err(e) = dialpool_testkit::ensure_installed() {
        eprintln!("dialpool demo: {e}");
        return ExitCode::from(2);
    }
    // The Go build (seconds when cached, longer on a fresh machine) runs
    // while the servers start.
    let go_build = std::thread::spawn(contrast::build);
    eprintln!("starting throwaway PostgreSQL and MariaDB on loopback…");
    let pg = std::thread::spawn(|| {
        dialpool_testkit::PgServer::start(dialpool_testkit::PgOptions {
            tls: true,
            ..Default::default()
        })
    });
    let maria = std::thread::spawn(|| {
        dialpool_testkit::MariaDbServer::start(dialpool_testkit::MariaDbOptions::default())
    });
    let (pg, maria) = match (pg.join(), maria.join()) {
        (Ok(Ok(pg)), Ok(Ok(maria))) => (pg, maria),
        (pg, maria) => {
            for r in [pg.map(|r| r.map(|_| ())), maria.map(|r| r.map(|_| ()))] {
                match r {
                    Ok(Err(e)) => eprintln!("dialpool demo: {e}"),
                    Err(_) => eprintln!("dialpool demo: a server start panicked"),
                    Ok(Ok(())) => {}
                }
            }
            return ExitCode::from(2);
        }
    };
    let versions = (pg.version().to_string(), maria.version().to_string());
    eprintln!(
        "PostgreSQL {} on 127.0.0.1:{} (TLS), MariaDB {} on 127.0.0.1:{}",
        versions.0,
        pg.port(),
        versions.1,
        maria.port()
    );
    let faults = Faults {
        black_hole: fault::SynBlackHole::new().map_err(|e| format!("no SYN black hole: {e}")),
        refused: fault::refused_addr(),
        stall: StalledTls::start().map_err(|e| format!("no stalling server: {e}")),
    };
    let pg_url = format!("{}?sslmode=disable", pg.url());
    let maria_url = format!("{}?sslmode=disable", maria.url());
    let ca = pg
        .ca_file()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let pg_port = pg.port();
    let rows = dialpool::runtime::block_on(async {
        vec![
            syn_black_hole(&faults).await,
            refused_port(&faults).await,
            stalled_tls(&faults).await,
            wrong_certificate_name(pg_port, &ca).await,
            exhausted_pool(&pg_url).await,
            slow_query_postgres(&pg_url).await,
            slow_query_mariadb(&maria_url).await,
            idle_connection_cut(&pg_url).await,
        ]
    });
    let mut rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("dialpool demo: {e}");
            return ExitCode::from(2);
        }
    };

    let go = match go_build.join() {
        Ok(Ok(program)) => {
            eprintln!("running the same scenarios through Go database/sql…");
            contrast::run(
                &program,
                &contrast::Inputs {
                    pg_url: pg.url(),
                    mysql_url: maria.url(),
                    ca: ca.clone(),
                    black_hole: faults.black_hole.as_ref().ok().map(|h| h.addr),
                    refused: faults.refused,
                    stall: faults.stall.as_ref().ok().map(|s| s.addr),
                    dial_timeout: DIAL_LIMIT,
                    acquire_timeout: ACQUIRE_LIMIT,
                    query_timeout: QUERY_LIMIT,
                    idle_timeout: IDLE_CHECK_DEADLINE,
                },
            )
        }
        Ok(Err(reason)) => Err(reason),
        Err(_) => Err("the Go build thread panicked".into()),
    };
    let go = match go {
        Ok(mut c) => {
            for row in &mut rows {
                row.go = c.take(row.id);
            }
            Ok(c)
        }
        Err(reason) => Err(reason),
    };
    drop(faults);
    drop(pg);
    drop(maria);
    if json {
        print_json(&rows, &go, &versions, started.elapsed());
    } else {
        print_table(&rows, &go);
    }
    eprintln!(
        "\nservers stopped and removed; the demo took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

async fn syn_black_hole(faults: &Faults) -> Row {
    let (id, scenario) = ("syn_black_hole", "host never answers SYN");
    let start = Instant::now();
    let outcome = match &faults.black_hole {
        Ok(hole) => {
            dial(&format!(
                "tcp://{}?connect_timeout={}",
                hole.addr,
                fmt_duration(DIAL_LIMIT)
            ))
            .await
        }
        Err(e) => Err(Error::internal(e.clone())),
    };
    Row::new(id, scenario, start.elapsed(), outcome)
}

async fn refused_port(faults: &Faults) -> Row {
    let start = Instant::now();
    let outcome = dial(&format!("tcp://{}", faults.refused)).await;
    Row::new(
        "refused_port",
        "port nobody listens on",
        start.elapsed(),
        outcome,
    )
}

async fn dial(url: &str) -> Result<String, Error> {
    let config = Config::parse(url)?;
    let dialer = Dialer::new(&config.dial)?;
    let c = dialer.connect(&config.hosts, None).await?;
    Ok(format!("connected to {}", c.peer))
}

async fn stalled_tls(faults: &Faults) -> Row {
    let start = Instant::now();
    let outcome = match &faults.stall {
        Ok(stall) => {
            session(&format!(
                "postgres://u:p@{}/db?sslmode=require&tls_timeout={}",
                stall.addr,
                fmt_duration(DIAL_LIMIT)
            ))
            .await
        }
        Err(e) => Err(Error::internal(e.clone())),
    };
    Row::new("stalled_tls", "server stalls TLS", start.elapsed(), outcome)
}

async fn wrong_certificate_name(port: u16, ca: &str) -> Row {
    let start = Instant::now();
    let outcome = session(&format!(
        "postgres://dialpool:dp-secret-pw@127.0.0.1:{port}/dialpool?sslmode=verify-full&sslrootcert={ca}"
    ))
    .await;
    Row::new(
        "wrong_certificate_name",
        "certificate for another name",
        start.elapsed(),
        outcome,
    )
}

async fn session(url: &str) -> Result<String, Error> {
    let config = Config::parse(url)?;
    let s = Session::connect(Arc::new(config), &Ctx::none()).await?;
    let peer = s.peer().to_string();
    s.close().await;
    Ok(format!("logged in to {peer}"))
}

async fn exhausted_pool(url: &str) -> Row {
    let mut measured = Duration::ZERO;
    let outcome = async {
        let pool = Pool::open(&format!(
            "{url}&max_open=2&acquire_timeout={}",
            fmt_duration(ACQUIRE_LIMIT)
        ))
        .await?;
        let a = pool.acquire(None).await?;
        let b = pool.acquire(None).await?;
        let start = Instant::now();
        let r = pool
            .query("SELECT 1", &[], None)
            .await
            .map(|_| "got a connection".to_string());
        measured = start.elapsed();
        drop((a, b));
        pool.close();
        r
    }
    .await;
    let mut row = Row::new(
        "exhausted_pool",
        "pool exhausted (2 of 2 held)",
        measured,
        outcome,
    );
    row.server_saw = "nothing: no statement was sent".into();
    row
}

/// A slow statement under `query_timeout`, then a look from another
/// connection at what the session is doing on the server.
struct SlowQuery {
    id: &'static str,
    scenario: &'static str,
    session_id_sql: &'static str,
    sleep_sql: &'static str,
    state_sql: &'static str,
    /// The state that means the statement is still running.
    running: &'static str,
    who: &'static str,
}

async fn slow_query(url: &str, q: SlowQuery) -> Row {
    let mut measured = Duration::ZERO;
    let mut cancelled = None;
    let mut stopped_after = None;
    let mut server_saw = "?".to_string();
    let outcome = async {
        let pool = Pool::open(&format!(
            "{url}&max_open=1&query_timeout={}",
            fmt_duration(QUERY_LIMIT)
        ))
        .await?;
        let admin = Pool::open(&format!("{url}&max_open=1")).await?;
        let id = pool
            .query(q.session_id_sql, &[], None)
            .await?
            .get(0, 0)
            .unwrap_or("0")
            .to_string();
        // Connected beforehand, so the look follows the error at once.
        admin.query("SELECT 1", &[], None).await?;
        let start = Instant::now();
        let r = pool.query(q.sleep_sql, &[], None).await;
        let error_at = Instant::now();
        measured = error_at - start;
        // Watched, not looked at once, exactly as the Go run does: a driver
        // may stop the statement in the background after returning.
        loop {
            // The time a look starts: a look that finds the statement
            // stopped bounds when it stopped.
            let after = error_at.elapsed();
            let state = admin.query(q.state_sql, &[Some(&id)], None).await?;
            let state = state.get(0, 0).unwrap_or("gone").to_string();
            if state != q.running {
                cancelled = Some(true);
                stopped_after = Some(after);
                server_saw = format!(
                    "{} {id} '{state}' at a look {:.1}ms after the error: statement cancelled",
                    q.who,
                    after.as_secs_f64() * 1e3
                );
                break;
            }
            if error_at.elapsed() >= WATCH_STATEMENT {
                cancelled = Some(false);
                server_saw = format!(
                    "{} {id} '{state}' {} after the error: still running",
                    q.who,
                    fmt_duration(WATCH_STATEMENT)
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        r.map(|_| "finished".to_string())
    }
    .await;
    let mut row = Row::new(q.id, q.scenario, measured, outcome);
    row.cancelled = cancelled;
    row.stopped_after = stopped_after;
    row.server_saw = server_saw;
    row
}

async fn slow_query_postgres(url: &str) -> Row {
    slow_query(
        url,
        SlowQuery {
            id: "slow_query_postgres",
            scenario: "slow query, PostgreSQL",
            session_id_sql: "SELECT pg_backend_pid()",
            sleep_sql: "SELECT pg_sleep(5)",
            state_sql: "SELECT state FROM pg_stat_activity WHERE pid = $1::int",
            running: "active",
            who: "backend",
        },
    )
    .await
}

async fn slow_query_mariadb(url: &str) -> Row {
    slow_query(
        url,
        SlowQuery {
            id: "slow_query_mariadb",
            scenario: "slow query, MariaDB",
            session_id_sql: "SELECT CONNECTION_ID()",
            sleep_sql: "SELECT SLEEP(5)",
            state_sql: "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = ?",
            running: "Query",
            who: "thread",
        },
    )
    .await
}

/// The server (as a proxy or `idle_session_timeout` would) closes an idle
/// pooled connection; the next caller must not get it.
async fn idle_connection_cut(url: &str) -> Row {
    let mut server_saw = "?".to_string();
    let mut measured = Duration::ZERO;
    let outcome = async {
        let pool = Pool::open(&format!("{url}&max_open=1&ping_after=1h")).await?;
        let admin = Pool::open(&format!("{url}&max_open=1")).await?;
        let pid = pool
            .query("SELECT pg_backend_pid()", &[], None)
            .await?
            .get(0, 0)
            .unwrap_or("0")
            .to_string();
        admin
            .query("SELECT pg_terminate_backend($1::int)", &[Some(&pid)], None)
            .await?;
        // The backend has exited by then; the Go run pauses the same.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = Instant::now();
        let r = pool
            .query("SELECT 1", &[], Some(Deadline::caller(IDLE_CHECK_DEADLINE)))
            .await;
        measured = start.elapsed();
        r?;
        let s = pool.stats();
        server_saw = format!(
            "backend {pid} terminated while idle; the pool discarded it (closed_dead={})",
            s.closed_dead
        );
        Ok(format!(
            "OK in {:.1}ms on a new connection",
            measured.as_secs_f64() * 1e3
        ))
    }
    .await;
    let mut row = Row::new(
        "idle_connection_cut",
        "server cut an idle connection",
        measured,
        outcome,
    );
    row.server_saw = server_saw;
    row
}

/// The "statement cancelled" cell: whether the server stopped it, and how
/// long after the caller's error it was seen stopped.
fn cancelled_cell(cancelled: Option<bool>, after_ms: Option<f64>) -> String {
    match (cancelled, after_ms) {
        (Some(true), Some(ms)) => format!("yes (+{ms:.1}ms)"),
        (Some(true), None) => "yes".into(),
        (Some(false), _) => format!("no ({} on)", fmt_duration(WATCH_STATEMENT)),
        (None, _) => "-".into(),
    }
}

fn print_table(rows: &[Row], go: &Result<Contrast, String>) {
    println!(
        "{:<30} {:<6} {:<19} {:<22} {:>9}  {:<19}  server saw",
        "scenario", "layer", "code", "limit", "measured", "statement cancelled"
    );
    println!("{}", "-".repeat(150));
    for r in rows {
        let (layer, code, limit) = match &r.outcome {
            Ok(_) => ("-".to_string(), "OK".to_string(), "-".to_string()),
            Err(e) => (
                e.layer().to_string(),
                e.code().to_string(),
                e.limit_value()
                    .map(|l| format!("{}={}", l.name, fmt_duration(l.value)))
                    .unwrap_or_else(|| "-".into()),
            ),
        };
        println!(
            "{:<30} {:<6} {:<19} {:<22} {:>7.1}ms  {:<19}  {}",
            r.scenario,
            layer,
            code,
            limit,
            r.measured.as_secs_f64() * 1e3,
            cancelled_cell(r.cancelled, r.stopped_after.map(|d| d.as_secs_f64() * 1e3)),
            r.server_saw
        );
    }
    println!("\nwhat each caller got:");
    for r in rows {
        match &r.outcome {
            Ok(what) => println!("  {}: {what}", r.scenario),
            Err(e) => println!("  {}: {e}", r.scenario),
        }
    }
    println!();
    match go {
        Err(reason) => println!("Go database/sql contrast not shown: {reason}"),
        Ok(c) => {
            println!(
                "the same scenarios through plain Go database/sql ({}; {}), the limits given as ctx deadlines and SetMaxOpenConns:",
                c.go_version,
                c.drivers_text()
            );
            println!(
                "{:<30} {:<20} {:>9}  {:<19}  what the caller got",
                "scenario", "driver", "after", "statement cancelled"
            );
            println!("{}", "-".repeat(150));
            for r in rows {
                match &r.go {
                    None => println!("{:<30} (no result from the Go run)", r.scenario),
                    Some(g) if !g.setup.is_empty() => {
                        println!(
                            "{:<30} {:<20} could not run: {}",
                            r.scenario, g.driver, g.setup
                        )
                    }
                    Some(g) => println!(
                        "{:<30} {:<20} {:>7.1}ms  {:<19}  {}",
                        r.scenario,
                        g.driver,
                        g.ms,
                        cancelled_cell(g.cancelled, g.stopped_after_ms),
                        if g.error.is_empty() { "OK" } else { &g.error }
                    ),
                }
            }
        }
    }
}

fn print_json(
    rows: &[Row],
    go: &Result<Contrast, String>,
    versions: &(String, String),
    took: Duration,
) {
    let scenarios: Vec<Value> = rows
        .iter()
        .map(|r| {
            let (code, layer, limit, sqlstate, message, ok) = match &r.outcome {
                Ok(what) => (
                    "DP_OK".to_string(),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    json!(what),
                ),
                Err(e) => (
                    format!("DP_{}", e.code().name()),
                    json!(e.layer().name()),
                    e.limit_value().map_or(Value::Null, |l| {
                        json!({
                            "name": l.name,
                            "value": fmt_duration(l.value),
                            "ms": l.value.as_secs_f64() * 1e3,
                        })
                    }),
                    e.sqlstate().map_or(Value::Null, |s| json!(s)),
                    json!(e.to_string()),
                    Value::Null,
                ),
            };
            json!({
                "id": r.id,
                "scenario": r.scenario,
                "code": code,
                "layer": layer,
                "limit": limit,
                "measured_ms": r.measured.as_secs_f64() * 1e3,
                "statement_cancelled": r.cancelled,
                "stopped_after_ms": r.stopped_after.map(|d| d.as_secs_f64() * 1e3),
                "server_saw": r.server_saw,
                "sqlstate": sqlstate,
                "message": message,
                "ok": ok,
                "go": r.go.as_ref().map(GoOutcome::to_json),
            })
        })
        .collect();
    let go = match go {
        Ok(c) => json!({
            "available": true,
            "reason": null,
            "version": c.go_version,
            "drivers": c.drivers,
        }),
        Err(reason) => json!({
            "available": false,
            "reason": reason,
            "version": null,
            "drivers": {},
        }),
    };
    let doc = json!({
        "servers": { "postgresql": versions.0, "mariadb": versions.1 },
        "scenarios": scenarios,
        "go": go,
        "took_ms": took.as_secs_f64() * 1e3,
    });
    // Serialising a Value built here cannot fail; print nothing rather than
    // panic if it ever did.
    if let Ok(text) = serde_json::to_string_pretty(&doc) {
        println!("{text}");
    }
}

/// How long a stalled connection is kept at most: longer than any client
/// here waits, so the stall is the client's limit, never ours.
const STALL_HOLD: Duration = Duration::from_secs(60);
/// The most connections held at once; older ones are closed first.
const STALL_MAX_HELD: usize = 32;

/// A server on 127.0.0.1 that accepts PostgreSQL's SSLRequest ('S') and
/// then never answers the TLS ClientHello: a database whose TLS stalls.
/// A plain thread, so both the Rust scenarios and the Go program can use it;
/// Drop stops it and closes every connection.
struct StalledTls {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StalledTls {
    fn start() -> std::io::Result<StalledTls> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let began = Instant::now();
            let mut held: Vec<TcpStream> = Vec::new();
            // Bounded by the stop flag and, should Drop never come, by time.
            while !stopped.load(Ordering::Relaxed) && began.elapsed() < STALL_HOLD {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(s) = answer_ssl_request(stream) {
                            if held.len() >= STALL_MAX_HELD {
                                held.remove(0);
                            }
                            held.push(s);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(StalledTls {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

/// Reads the 8-byte SSLRequest and answers 'S' (TLS accepted); the stream
/// is then held open and silent.
fn answer_ssl_request(mut s: TcpStream) -> Option<TcpStream> {
    s.set_nonblocking(false).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut req = [0u8; 8];
    s.read_exact(&mut req).ok()?;
    s.write_all(b"S").ok()?;
    Some(s)
}

impl Drop for StalledTls {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
