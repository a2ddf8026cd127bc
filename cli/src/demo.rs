//! `dialpool demo`: starts throwaway PostgreSQL and MariaDB servers, runs the
//! failures this project is about against them and against real network
//! faults, and prints one table: what each caller got (layer, code, the
//! limit that fired), how long it took, and what the server saw.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dialpool::config::fmt_duration;
use dialpool::{Config, Ctx, Deadline, Dialer, Error, Pool, Session};
use dialpool_testkit::fault;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One scenario's outcome.
struct Row {
    scenario: &'static str,
    outcome: Result<String, Error>,
    measured: Duration,
    server_saw: String,
}

impl Row {
    fn new(scenario: &'static str, start: Instant, outcome: Result<String, Error>) -> Row {
        Row {
            scenario,
            measured: start.elapsed(),
            outcome,
            server_saw: "-".into(),
        }
    }
}

pub fn run() -> ExitCode {
    if let Err(e) = dialpool_testkit::ensure_installed() {
        eprintln!("dialpool demo: {e}");
        return ExitCode::from(2);
    }
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
    eprintln!(
        "PostgreSQL {} on 127.0.0.1:{} (TLS), MariaDB {} on 127.0.0.1:{}\n",
        pg.version(),
        pg.port(),
        maria.version(),
        maria.port()
    );
    let pg_url = format!("{}?sslmode=disable", pg.url());
    let maria_url = format!("{}?sslmode=disable", maria.url());
    let ca = pg
        .ca_file()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let pg_port = pg.port();
    let rows = dialpool::runtime::block_on(async move {
        let mut rows = Vec::new();
        rows.push(syn_black_hole().await);
        rows.push(refused_port().await);
        rows.push(stalled_tls().await);
        rows.push(wrong_certificate_name(pg_port, &ca).await);
        rows.push(exhausted_pool(&pg_url).await);
        rows.push(slow_query_postgres(&pg_url).await);
        rows.push(slow_query_mariadb(&maria_url).await);
        rows.push(idle_connection_cut(&pg_url).await);
        rows
    });
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("dialpool demo: {e}");
            return ExitCode::from(2);
        }
    };
    print_table(&rows);
    drop(pg);
    drop(maria);
    eprintln!("\nservers stopped and removed");
    ExitCode::SUCCESS
}

async fn syn_black_hole() -> Row {
    let hole = fault::SynBlackHole::new();
    let start = Instant::now();
    let outcome = match hole {
        Ok(hole) => dial(&format!("tcp://{}?connect_timeout=500ms", hole.addr)).await,
        Err(e) => Err(Error::internal(format!("no SYN black hole: {e}"))),
    };
    Row::new("host never answers SYN", start, outcome)
}

async fn refused_port() -> Row {
    let start = Instant::now();
    let outcome = dial(&format!("tcp://{}", fault::refused_addr())).await;
    Row::new("port nobody listens on", start, outcome)
}

async fn dial(url: &str) -> Result<String, Error> {
    let config = Config::parse(url)?;
    let dialer = Dialer::new(&config.dial)?;
    let c = dialer.connect(&config.hosts, None).await?;
    Ok(format!("connected to {}", c.peer))
}

/// A server that accepts PostgreSQL's SSLRequest and then never answers the
/// TLS ClientHello.
async fn stalled_tls() -> Row {
    let start = Instant::now();
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            return Row::new(
                "server stalls TLS",
                start,
                Err(Error::internal(e.to_string())),
            )
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let server = tokio::spawn(async move {
        if let Ok((mut s, _)) = listener.accept().await {
            let mut req = [0u8; 8];
            if s.read_exact(&mut req).await.is_ok() && s.write_all(b"S").await.is_ok() {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        }
    });
    let start = Instant::now();
    let outcome = session(&format!(
        "postgres://u:p@{addr}/db?sslmode=require&tls_timeout=500ms"
    ))
    .await;
    server.abort();
    Row::new("server stalls TLS", start, outcome)
}

async fn wrong_certificate_name(port: u16, ca: &str) -> Row {
    let start = Instant::now();
    let outcome = session(&format!(
        "postgres://dialpool:dp-secret-pw@127.0.0.1:{port}/dialpool?sslmode=verify-full&sslrootcert={ca}"
    ))
    .await;
    Row::new("certificate for another name", start, outcome)
}

async fn session(url: &str) -> Result<String, Error> {
    let config = Config::parse(url)?;
    let s = Session::connect(std::sync::Arc::new(config), &Ctx::none()).await?;
    let peer = s.peer().to_string();
    s.close().await;
    Ok(format!("logged in to {peer}"))
}

async fn exhausted_pool(url: &str) -> Row {
    let start = Instant::now();
    let outcome = async {
        let pool = Pool::open(&format!("{url}&max_open=2&acquire_timeout=500ms")).await?;
        let a = pool.acquire(None).await?;
        let b = pool.acquire(None).await?;
        let start = Instant::now();
        let r = pool
            .query("SELECT 1", &[], None)
            .await
            .map(|_| "got a connection".to_string());
        let waited = start.elapsed();
        drop((a, b));
        pool.close();
        r.map_err(|e| e.with_elapsed(waited))
    }
    .await;
    let mut row = Row::new("pool exhausted (2 of 2 held)", start, outcome);
    row.measured = row
        .outcome
        .as_ref()
        .err()
        .and_then(Error::elapsed)
        .unwrap_or(row.measured);
    row.server_saw = "nothing: no statement was sent".into();
    row
}

async fn slow_query_postgres(url: &str) -> Row {
    let mut server_saw = "?".to_string();
    let start = Instant::now();
    let outcome = async {
        let pool = Pool::open(&format!("{url}&max_open=1&query_timeout=1s")).await?;
        let admin = Pool::open(&format!("{url}&max_open=1")).await?;
        let pid = pool
            .query("SELECT pg_backend_pid()", &[], None)
            .await?
            .get(0, 0)
            .unwrap_or("0")
            .to_string();
        let start = Instant::now();
        let r = pool.query("SELECT pg_sleep(5)", &[], None).await;
        let took = start.elapsed();
        let state = admin
            .query(
                "SELECT state FROM pg_stat_activity WHERE pid = $1::int",
                &[Some(&pid)],
                None,
            )
            .await?;
        server_saw = format!(
            "backend {pid} '{}' right after: statement cancelled",
            state.get(0, 0).unwrap_or("gone")
        );
        r.map(|_| "finished".to_string())
            .map_err(|e| e.with_elapsed(took))
    }
    .await;
    let mut row = Row::new("slow query, PostgreSQL", start, outcome);
    row.measured = row
        .outcome
        .as_ref()
        .err()
        .and_then(Error::elapsed)
        .unwrap_or(row.measured);
    row.server_saw = server_saw;
    row
}

async fn slow_query_mariadb(url: &str) -> Row {
    let mut server_saw = "?".to_string();
    let start = Instant::now();
    let outcome = async {
        let pool = Pool::open(&format!("{url}&max_open=1&query_timeout=1s")).await?;
        let admin = Pool::open(&format!("{url}&max_open=1")).await?;
        let id = pool
            .query("SELECT CONNECTION_ID()", &[], None)
            .await?
            .get(0, 0)
            .unwrap_or("0")
            .to_string();
        let start = Instant::now();
        let r = pool.query("SELECT SLEEP(5)", &[], None).await;
        let took = start.elapsed();
        let state = admin
            .query(
                "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = ?",
                &[Some(&id)],
                None,
            )
            .await?;
        server_saw = format!(
            "thread {id} '{}' right after: query killed",
            state.get(0, 0).unwrap_or("gone")
        );
        r.map(|_| "finished".to_string())
            .map_err(|e| e.with_elapsed(took))
    }
    .await;
    let mut row = Row::new("slow query, MariaDB", start, outcome);
    row.measured = row
        .outcome
        .as_ref()
        .err()
        .and_then(Error::elapsed)
        .unwrap_or(row.measured);
    row.server_saw = server_saw;
    row
}

/// The server (as a proxy or `idle_session_timeout` would) closes an idle
/// pooled connection; the next caller must not get it.
async fn idle_connection_cut(url: &str) -> Row {
    let mut server_saw = "?".to_string();
    let start = Instant::now();
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
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = Instant::now();
        pool.query(
            "SELECT 1",
            &[],
            Some(Deadline::caller(Duration::from_secs(2))),
        )
        .await?;
        let s = pool.stats();
        server_saw = format!(
            "backend {pid} terminated while idle; the pool discarded it (closed_dead={})",
            s.closed_dead
        );
        Ok(format!(
            "OK in {:.1}ms on a new connection",
            start.elapsed().as_secs_f64() * 1e3
        ))
    }
    .await;
    let mut row = Row::new("server cut an idle connection", start, outcome);
    row.server_saw = server_saw;
    row
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<30} {:<6} {:<19} {:<24} {:>9}  server saw",
        "scenario", "layer", "code", "limit", "measured"
    );
    println!("{}", "-".repeat(130));
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
            "{:<30} {:<6} {:<19} {:<24} {:>7.1}ms  {}",
            r.scenario,
            layer,
            code,
            limit,
            r.measured.as_secs_f64() * 1e3,
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
}
