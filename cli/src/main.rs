//! The `dialpool` command. `dialpool demo` starts throwaway PostgreSQL and
//! MariaDB servers, dials them and a set of real network faults, and prints
//! what each layer reports. (The doctor arrives with the protocol sessions.)

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dialpool::{Config, Deadline, Dialer, Error};
use dialpool_testkit::fault;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod doctor;

const USAGE: &str = "usage:
  dialpool demo                  throwaway servers, real faults, what each layer reports
  dialpool doctor URL [--json]   connect step by step, compare client and server limits
  dialpool version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => demo(),
        Some("doctor") => {
            let json = args.iter().any(|a| a == "--json");
            match args.iter().skip(1).find(|a| !a.starts_with("--")) {
                Some(url) => ExitCode::from(doctor::run(url, json)),
                None => {
                    eprintln!("{USAGE}");
                    ExitCode::from(2)
                }
            }
        }
        Some("version") | Some("--version") => {
            println!("dialpool {}", dialpool::VERSION);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// One scenario's outcome: what the caller got and how long it took.
struct Row {
    scenario: &'static str,
    outcome: Result<String, Error>,
    measured: Duration,
}

fn demo() -> ExitCode {
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dialpool demo: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let ca = pg
        .ca_file()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let rows = runtime.block_on(async {
        let mut rows = Vec::new();
        let pg_url = |host: &str, extra: &str| {
            format!(
                "postgres://{host}:{}/dialpool?sslrootcert={ca}&{extra}",
                pg.port()
            )
        };
        rows.push(
            run(
                "PostgreSQL, TLS verify-full",
                &pg_url("localhost", "sslmode=verify-full"),
                true,
                None,
            )
            .await,
        );
        rows.push(
            run(
                "MariaDB, plain TCP",
                &format!("mysql://localhost:{}/dialpool", maria.port()),
                false,
                None,
            )
            .await,
        );
        let refused = fault::refused_addr();
        rows.push(
            run(
                "port nobody listens on",
                &format!("tcp://{refused}"),
                false,
                None,
            )
            .await,
        );
        match fault::SynBlackHole::new() {
            Ok(hole) => {
                rows.push(
                    run(
                        "host that never answers SYN",
                        &format!("tcp://{}?connect_timeout=500ms", hole.addr),
                        false,
                        None,
                    )
                    .await,
                );
                rows.push(
                    run(
                        "same, caller deadline 200ms",
                        &format!("tcp://{}?connect_timeout=5s", hole.addr),
                        false,
                        Some(Duration::from_millis(200)),
                    )
                    .await,
                );
            }
            Err(e) => eprintln!("(SYN black hole unavailable: {e})"),
        }
        match fault::SilentPeer::new() {
            Ok(peer) => rows.push(
                run(
                    "server that stalls TLS",
                    &format!(
                        "postgres://{}/x?sslmode=require&tls_timeout=500ms",
                        peer.addr
                    ),
                    true,
                    None,
                )
                .await,
            ),
            Err(e) => eprintln!("(silent peer unavailable: {e})"),
        }
        rows.push(
            run(
                "TLS, certificate for another name",
                &pg_url("127.0.0.1", "sslmode=verify-full"),
                true,
                None,
            )
            .await,
        );
        rows
    });
    print_table(&rows);
    drop(pg);
    drop(maria);
    eprintln!("\nservers stopped and removed");
    ExitCode::SUCCESS
}

/// Dials `url`; with `tls`, asks for TLS the PostgreSQL way (SSLRequest) and
/// upgrades.
async fn run(scenario: &'static str, url: &str, tls: bool, caller: Option<Duration>) -> Row {
    let start = Instant::now();
    let outcome = dial(url, tls, caller.map(Deadline::caller)).await;
    Row {
        scenario,
        outcome,
        measured: start.elapsed(),
    }
}

async fn dial(url: &str, tls: bool, caller: Option<Deadline>) -> Result<String, Error> {
    let config = Config::parse(url)?;
    let dialer = Dialer::new(&config.dial)?;
    let mut c = dialer.connect(&config.hosts, caller).await?;
    let mut phases = format!(
        "dns {} connect {}",
        ms(c.timings.dns),
        ms(c.timings.connect)
    );
    if tls {
        let io = |e: std::io::Error| {
            Error::new(dialpool::Code::ProtocolError, format!("SSLRequest: {e}"))
        };
        c.stream
            .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .map_err(io)?;
        let mut answer = [0u8; 1];
        // A silent peer never answers the SSLRequest either: the handshake
        // limit covers the whole wait, as the PostgreSQL session will.
        let read =
            tokio::time::timeout(Duration::from_millis(50), c.stream.read_exact(&mut answer)).await;
        if let Ok(r) = read {
            r.map_err(io)?;
        }
        let peer = c.peer.to_string();
        let (_tls, took) = dialer
            .upgrade_tls(c.stream, &c.host.host, &peer, caller)
            .await?;
        phases.push_str(&format!(" tls {}", ms(Some(took))));
    }
    Ok(phases)
}

fn ms(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.1}ms", d.as_secs_f64() * 1e3),
        None => "-".into(),
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<34} {:<6} {:<20} {:<22} {:>9}",
        "scenario", "layer", "result", "limit", "measured"
    );
    println!("{}", "-".repeat(95));
    for r in rows {
        let (layer, code, limit) = match &r.outcome {
            Ok(_) => ("dial".to_string(), "OK".to_string(), "-".to_string()),
            Err(e) => (
                e.layer().to_string(),
                e.code().to_string(),
                e.limit_value()
                    .map(|l| format!("{}={}", l.name, dialpool::config::fmt_duration(l.value)))
                    .unwrap_or_else(|| "-".into()),
            ),
        };
        println!(
            "{:<34} {:<6} {:<20} {:<22} {:>8.1}ms",
            r.scenario,
            layer,
            code,
            limit,
            r.measured.as_secs_f64() * 1e3
        );
    }
    println!("\nwhat each caller got:");
    for r in rows {
        match &r.outcome {
            Ok(phases) => println!("  {}: connected ({phases})", r.scenario),
            Err(e) => println!("  {}: {e}", r.scenario),
        }
    }
}
