//! dial-interleaved: the successful loopback dial of the `dial_latency`
//! criterion bench, timed one dial at a time with the two sides alternating.
//!
//! Criterion measures one function for seconds and then the other, so on a
//! shared machine a burst of someone else's work lands on one side only and
//! the ratio of one run swings widely. Here every round times one
//! `dialpool::Dialer::connect` (default options) and one
//! `tokio::net::TcpStream::connect`, in alternating order, against the same
//! accept-and-drop listener on the same current-thread runtime as the
//! criterion bench; each timing includes dropping the stream, as there.
//!
//! Usage: dial-interleaved [--rounds N] [--warmup N] [--json]

use std::process::ExitCode;
use std::time::Instant;

use dialpool_bench::{ratio, ratio_json, summary_json, table, AcceptAndDrop, Row, Summary};
use tokio::net::TcpStream;

const USAGE: &str = "usage: dial-interleaved [--rounds N] [--warmup N] [--json]
  --rounds N  measured dials of each side, at least 100 (default 20000)
  --warmup N  unmeasured dials of each side first (default 1000)
  --json      print one JSON object instead of the table";

struct Args {
    rounds: usize,
    warmup: usize,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rounds: 20_000,
        warmup: 1_000,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<usize, String> {
            let text = inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))?;
            text.parse::<usize>()
                .map_err(|_| format!("{name}: {text:?} is not a non-negative integer"))
        };
        match key.as_str() {
            "--rounds" => args.rounds = value("--rounds")?,
            "--warmup" => args.warmup = value("--warmup")?,
            "--json" => args.json = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.rounds < 100 {
        return Err("--rounds must be at least 100".into());
    }
    Ok(args)
}

/// Nanoseconds per dial of each side, and the first error of each, if any.
struct Samples {
    dialpool_ns: Vec<i64>,
    tokio_ns: Vec<i64>,
    dialpool_failed: usize,
    tokio_failed: usize,
    first_error: Option<String>,
}

async fn run(addr: std::net::SocketAddr, rounds: usize, warmup: usize) -> Result<Samples, String> {
    let config = dialpool::Config::parse(&format!("tcp://{addr}")).map_err(|e| e.to_string())?;
    let dialer = dialpool::Dialer::new(&config.dial).map_err(|e| e.to_string())?;
    let hosts = config.hosts;
    let mut s = Samples {
        dialpool_ns: Vec::with_capacity(rounds),
        tokio_ns: Vec::with_capacity(rounds),
        dialpool_failed: 0,
        tokio_failed: 0,
        first_error: None,
    };
    for round in 0..warmup + rounds {
        let measured = round >= warmup;
        for dialpool_side in [round % 2 == 0, round % 2 != 0] {
            if dialpool_side {
                let start = Instant::now();
                let outcome = dialer.connect(&hosts, None).await.map(|c| drop(c.stream));
                let ns = start.elapsed().as_nanos() as i64;
                match (measured, outcome) {
                    (false, _) => {}
                    (true, Ok(())) => s.dialpool_ns.push(ns),
                    (true, Err(e)) => {
                        s.dialpool_failed += 1;
                        s.first_error.get_or_insert(format!("dialpool: {e}"));
                    }
                }
            } else {
                let start = Instant::now();
                let outcome = TcpStream::connect(addr).await.map(drop);
                let ns = start.elapsed().as_nanos() as i64;
                match (measured, outcome) {
                    (false, _) => {}
                    (true, Ok(())) => s.tokio_ns.push(ns),
                    (true, Err(e)) => {
                        s.tokio_failed += 1;
                        s.first_error.get_or_insert(format!("tokio: {e}"));
                    }
                }
            }
        }
    }
    Ok(s)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("dial-interleaved: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let server = match AcceptAndDrop::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dial-interleaved: cannot listen on 127.0.0.1: {e}");
            return ExitCode::from(2);
        }
    };
    // The same runtime as the criterion bench: block_on drives the I/O itself.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dial-interleaved: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let s = match runtime.block_on(run(server.addr, args.rounds, args.warmup)) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("dial-interleaved: {msg}");
            return ExitCode::from(2);
        }
    };
    let dp = Summary::of(&s.dialpool_ns);
    let tk = Summary::of(&s.tokio_ns);
    let (r50, r90) = match (dp, tk) {
        (Some(d), Some(t)) => (ratio(d.p50, t.p50), ratio(d.p90, t.p90)),
        _ => (None, None),
    };
    if args.json {
        println!(
            "{{\"rounds\":{},\"warmup\":{},\"runtime\":\"current_thread\",\"unit\":\"ns\",\
             \"dialpool\":{},\"tokio\":{},\"ratio_dialpool_tokio\":{{\"p50\":{},\"p90\":{}}}}}",
            args.rounds,
            args.warmup,
            summary_json(dp.as_ref(), s.dialpool_failed, "ns"),
            summary_json(tk.as_ref(), s.tokio_failed, "ns"),
            ratio_json(r50),
            ratio_json(r90),
        );
    } else {
        println!(
            "dial-interleaved: {} dials each (+{} warm-up), alternating, to {} \
             (accept-and-drop), current-thread runtime",
            args.rounds, args.warmup, server.addr
        );
        println!();
        print!(
            "{}",
            table(
                "dial (ns)",
                &[
                    Row {
                        label: "dialpool".into(),
                        summary: dp,
                        failures: s.dialpool_failed,
                    },
                    Row {
                        label: "tokio_tcpstream_connect".into(),
                        summary: tk,
                        failures: s.tokio_failed,
                    },
                ]
            )
        );
        println!();
        let show = |r: Option<f64>| r.map_or("n/a".to_string(), |v| format!("{v:.3}"));
        println!("ratio dialpool/tokio: p50 {}, p90 {}", show(r50), show(r90));
    }
    if let Some(e) = &s.first_error {
        eprintln!(
            "dial-interleaved: {} dials failed; first: {e}",
            s.dialpool_failed + s.tokio_failed
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
