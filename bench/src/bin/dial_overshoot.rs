//! dial-overshoot: how late does a connect timeout reach the caller?
//!
//! Against one loopback listener whose accept queue is full (SYNs dropped, so
//! a connect hangs until the client gives up), this alternates
//!
//! * (a) `dialpool::Dialer::connect` with `connect_timeout=<timeout>`, awaited
//!   on the runtime and (a') through the blocking facade (`runtime::block_on`
//!   on a plain thread, as C, Go and Python call it), and
//! * (b) `tokio::time::timeout(<timeout>, TcpStream::connect(addr))`,
//!
//! on one multi-thread tokio runtime with 2 workers, and measures from just
//! before the call to the moment the error is in the caller's hands. The
//! overshoot is that time minus the timeout. Every dialpool try must end in
//! CONNECT_TIMEOUT and every tokio try in `Elapsed`; anything else is counted
//! as a failure, reported, and makes the exit status 1.
//!
//! With `--diagnose`, three more sides are interleaved to show where the
//! overshoot comes from: `tokio::time::sleep` alone (tokio's timer, no
//! socket), `TcpStream::connect` under `dialpool_bench::timerfd::run` (tokio's
//! timer until 2 ms before the deadline, then a Linux timerfd: a
//! microsecond-precision deadline on the same runtime), and
//! `std::thread::sleep` on a blocking thread (what the OS and this machine
//! give any timer).
//!
//! Usage: dial-overshoot [--tries N] [--timeout-ms MS] [--warmup N] [--diagnose] [--json [--samples]]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use dialpool_bench::{json_string, ratio, ratio_json, summary_json, table, Row, Summary};
use dialpool_testkit::fault::SynBlackHole;
use tokio::net::TcpStream;

const USAGE: &str =
    "usage: dial-overshoot [--tries N] [--timeout-ms MS] [--warmup N] [--diagnose] [--json [--samples]]
  --tries N       measured tries of each side, at least 50 (default 100)
  --timeout-ms MS the connect timeout for both sides (default 100)
  --warmup N      unmeasured tries of each side first (default 3)
  --diagnose      also time tokio's sleep alone, connect under a timerfd-backed
                  deadline, and std::thread::sleep (where the overshoot comes from)
  --json          print one JSON object instead of the table
  --samples       with --json, also every overshoot in try order (\"samples_us\")";

/// Worker threads of the runtime all sides share.
const WORKERS: usize = 2;
const MIN_TRIES: usize = 50;
/// The target for dialpool's p99 overshoot.
const TARGET_P99_US: i64 = 2000;

struct Args {
    tries: usize,
    timeout_ms: u64,
    warmup: usize,
    diagnose: bool,
    json: bool,
    samples: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        tries: 100,
        timeout_ms: 100,
        warmup: 3,
        diagnose: false,
        json: false,
        samples: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<u64, String> {
            let text = inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))?;
            text.parse::<u64>()
                .map_err(|_| format!("{name}: {text:?} is not a non-negative integer"))
        };
        match key.as_str() {
            "--tries" => args.tries = value("--tries")? as usize,
            "--timeout-ms" => args.timeout_ms = value("--timeout-ms")?,
            "--warmup" => args.warmup = value("--warmup")? as usize,
            "--diagnose" => args.diagnose = true,
            "--json" => args.json = true,
            "--samples" => args.samples = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.tries < MIN_TRIES {
        return Err(format!(
            "--tries must be at least {MIN_TRIES} (a p99 needs them)"
        ));
    }
    if args.timeout_ms == 0 {
        return Err("--timeout-ms must be positive".into());
    }
    Ok(args)
}

/// What one side of the comparison does in a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// (a) dialpool's connect with `connect_timeout`.
    Dialpool,
    /// (a') the same through the blocking facade that C, Go and Python use
    /// (`runtime::block_on` on a plain thread: the deadline is the timeout
    /// of the caller's own ppoll, no runtime timer).
    DialpoolBlocking,
    /// (b) `tokio::time::timeout` around `TcpStream::connect`.
    Tokio,
    /// `--diagnose`: `tokio::time::sleep` alone, no socket: tokio's timer.
    TokioSleep,
    /// `--diagnose`: `TcpStream::connect` under tokio's timer until 2 ms
    /// before the deadline and a timerfd after (Linux; the suggested fix).
    #[cfg(target_os = "linux")]
    Timerfd,
    /// `--diagnose`: `std::thread::sleep` on a blocking thread: the OS floor.
    ThreadSleep,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Dialpool => "dialpool",
            Kind::DialpoolBlocking => "dialpool blocking",
            Kind::Tokio => "tokio timeout+connect",
            Kind::TokioSleep => "tokio sleep alone",
            #[cfg(target_os = "linux")]
            Kind::Timerfd => "timerfd+connect",
            Kind::ThreadSleep => "thread::sleep",
        }
    }

    fn json_key(self) -> &'static str {
        match self {
            Kind::Dialpool => "dialpool",
            Kind::DialpoolBlocking => "dialpool_blocking",
            Kind::Tokio => "tokio",
            Kind::TokioSleep => "tokio_sleep",
            #[cfg(target_os = "linux")]
            Kind::Timerfd => "timerfd_connect",
            Kind::ThreadSleep => "thread_sleep",
        }
    }
}

/// The samples of one side, in microseconds of overshoot, and what went
/// wrong in the tries that did not end as expected (message -> count).
struct Side {
    kind: Kind,
    overshoot_us: Vec<i64>,
    failures: BTreeMap<String, usize>,
}

impl Side {
    fn new(kind: Kind) -> Side {
        Side {
            kind,
            overshoot_us: Vec::new(),
            failures: BTreeMap::new(),
        }
    }

    fn failed(&self) -> usize {
        self.failures.values().sum()
    }

    fn fail(&mut self, what: String) {
        *self.failures.entry(what).or_default() += 1;
    }
}

struct Results {
    /// In the order of the table: dialpool, tokio, then the diagnostics.
    sides: Vec<Side>,
    /// dialpool's own account: the error's `elapsed()` minus the timeout.
    dialpool_reported: Vec<i64>,
}

fn overshoot_us(elapsed: Duration, timeout: Duration) -> i64 {
    elapsed.as_micros() as i64 - timeout.as_micros() as i64
}

/// How one try ended: the time from just before the call to the error in
/// hand, or what went wrong instead.
enum Outcome {
    TimedOut(Duration),
    Other(String),
}

async fn try_once(
    kind: Kind,
    dialer: &dialpool::Dialer,
    hosts: &[dialpool::config::HostPort],
    target: SocketAddr,
    timeout: Duration,
    reported: &mut Option<Duration>,
) -> Outcome {
    match kind {
        Kind::Dialpool => {
            let start = Instant::now();
            let outcome = dialer.connect(hosts, None).await;
            let elapsed = start.elapsed();
            match outcome {
                Err(e) if e.code() == dialpool::Code::ConnectTimeout => {
                    *reported = e.elapsed();
                    Outcome::TimedOut(elapsed)
                }
                Err(e) => Outcome::Other(format!("{}: {e}", e.code())),
                Ok(c) => Outcome::Other(format!("connected to {} (queue not full?)", c.peer)),
            }
        }
        Kind::DialpoolBlocking => {
            let opts = dialer.options().clone();
            let hosts = hosts.to_vec();
            // A plain thread: spawn_blocking's threads belong to the
            // runtime, where block_on is refused.
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let run = || {
                    let dialer = dialpool::Dialer::new(&opts).map_err(|e| e.to_string())?;
                    let start = Instant::now();
                    let outcome = dialpool::runtime::block_on(dialer.connect(&hosts, None))
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>((start.elapsed(), outcome))
                };
                let _ = tx.send(run());
            });
            let measured = rx.await;
            match measured {
                Ok(Ok((elapsed, Err(e)))) if e.code() == dialpool::Code::ConnectTimeout => {
                    Outcome::TimedOut(elapsed)
                }
                Ok(Ok((_, Err(e)))) => Outcome::Other(format!("{}: {e}", e.code())),
                Ok(Ok((_, Ok(c)))) => {
                    Outcome::Other(format!("connected to {} (queue not full?)", c.peer))
                }
                Ok(Err(e)) => Outcome::Other(e),
                Err(e) => Outcome::Other(format!("blocking task: {e}")),
            }
        }
        Kind::Tokio => {
            let start = Instant::now();
            let outcome = tokio::time::timeout(timeout, TcpStream::connect(target)).await;
            let elapsed = start.elapsed();
            match outcome {
                Err(_elapsed) => Outcome::TimedOut(elapsed),
                Ok(Err(e)) => Outcome::Other(format!("io error: {e}")),
                Ok(Ok(_)) => Outcome::Other("connected (queue not full?)".into()),
            }
        }
        Kind::TokioSleep => {
            let start = Instant::now();
            tokio::time::sleep(timeout).await;
            Outcome::TimedOut(start.elapsed())
        }
        #[cfg(target_os = "linux")]
        Kind::Timerfd => {
            let start = Instant::now();
            let outcome =
                dialpool_bench::timerfd::run(start + timeout, TcpStream::connect(target)).await;
            let elapsed = start.elapsed();
            match outcome {
                None => Outcome::TimedOut(elapsed),
                Some(Err(e)) => Outcome::Other(format!("io error: {e}")),
                Some(Ok(_)) => Outcome::Other("connected (queue not full?)".into()),
            }
        }
        Kind::ThreadSleep => {
            let measured = tokio::task::spawn_blocking(move || {
                let start = Instant::now();
                std::thread::sleep(timeout);
                start.elapsed()
            })
            .await;
            match measured {
                Ok(elapsed) => Outcome::TimedOut(elapsed),
                Err(e) => Outcome::Other(format!("blocking task: {e}")),
            }
        }
    }
}

async fn run(
    target: SocketAddr,
    timeout: Duration,
    tries: usize,
    warmup: usize,
    kinds: Vec<Kind>,
) -> Result<Results, String> {
    let url = format!("tcp://{target}?connect_timeout={}ms", timeout.as_millis());
    let config = dialpool::Config::parse(&url).map_err(|e| format!("{url}: {e}"))?;
    let dialer = dialpool::Dialer::new(&config.dial).map_err(|e| e.to_string())?;
    let hosts = config.hosts;

    let mut results = Results {
        sides: kinds.iter().map(|&k| Side::new(k)).collect(),
        dialpool_reported: Vec::new(),
    };
    let n = kinds.len();
    for round in 0..warmup + tries {
        // Rotate which side goes first, so none always runs right after
        // another's socket teardown and noise is spread alike.
        for j in 0..n {
            let side = &mut results.sides[(round + j) % n];
            let mut reported = None;
            let outcome =
                try_once(side.kind, &dialer, &hosts, target, timeout, &mut reported).await;
            if round < warmup {
                continue;
            }
            match outcome {
                Outcome::TimedOut(elapsed) => {
                    side.overshoot_us.push(overshoot_us(elapsed, timeout))
                }
                Outcome::Other(what) => side.fail(what),
            }
            if let Some(r) = reported {
                results.dialpool_reported.push(overshoot_us(r, timeout));
            }
        }
    }
    Ok(results)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("dial-overshoot: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let hole = match SynBlackHole::new() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("dial-overshoot: cannot make a full-queue listener: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dial-overshoot: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut kinds = vec![Kind::Dialpool, Kind::DialpoolBlocking, Kind::Tokio];
    if args.diagnose {
        kinds.push(Kind::TokioSleep);
        #[cfg(target_os = "linux")]
        kinds.push(Kind::Timerfd);
        kinds.push(Kind::ThreadSleep);
    }
    // All sides run inside one task on a worker, as application code would;
    // block_on only waits for it.
    let task = runtime.spawn(run(hole.addr, timeout, args.tries, args.warmup, kinds));
    let results = match runtime.block_on(task) {
        Ok(Ok(r)) => r,
        Ok(Err(msg)) => {
            eprintln!("dial-overshoot: {msg}");
            return ExitCode::from(2);
        }
        Err(join) => {
            eprintln!("dial-overshoot: the measuring task failed: {join}");
            return ExitCode::from(2);
        }
    };

    let summaries: Vec<Option<Summary>> = results
        .sides
        .iter()
        .map(|s| Summary::of(&s.overshoot_us))
        .collect();
    let reported = Summary::of(&results.dialpool_reported);
    let of = |kind: Kind| {
        results
            .sides
            .iter()
            .zip(&summaries)
            .find(|(side, _)| side.kind == kind)
            .and_then(|(_, summary)| *summary)
    };
    let (dp, blocking, tk) = (
        of(Kind::Dialpool),
        of(Kind::DialpoolBlocking),
        of(Kind::Tokio),
    );
    let (r50, r99) = match (dp, tk) {
        (Some(d), Some(t)) => (ratio(d.p50, t.p50), ratio(d.p99, t.p99)),
        _ => (None, None),
    };
    // Both of dialpool's paths must meet the target.
    let meets = match (dp, blocking) {
        (Some(d), Some(b)) => Some(d.p99 <= TARGET_P99_US && b.p99 <= TARGET_P99_US),
        _ => None,
    };
    let failed: usize = results.sides.iter().map(Side::failed).sum();

    if args.json {
        let mut sides = String::new();
        for (side, summary) in results.sides.iter().zip(&summaries) {
            sides.push_str(&format!(
                "{}:{},",
                json_string(side.kind.json_key()),
                summary_json(summary.as_ref(), side.failed(), "us")
            ));
        }
        if args.samples {
            let list: Vec<String> = results
                .sides
                .iter()
                .map(|side| {
                    let values: Vec<String> =
                        side.overshoot_us.iter().map(|v| v.to_string()).collect();
                    format!(
                        "{}:[{}]",
                        json_string(side.kind.json_key()),
                        values.join(",")
                    )
                })
                .collect();
            sides.push_str(&format!("\"samples_us\":{{{}}},", list.join(",")));
        }
        println!(
            "{{\"target\":{},\"timeout_ms\":{},\"tries\":{},\"warmup\":{},\"workers\":{},\
             {sides}\"dialpool_reported_elapsed\":{},\
             \"ratio_dialpool_tokio\":{{\"p50\":{},\"p99\":{}}},\
             \"target_p99_us\":{},\"meets_target\":{}}}",
            json_string(&hole.addr.to_string()),
            args.timeout_ms,
            args.tries,
            args.warmup,
            WORKERS,
            summary_json(reported.as_ref(), 0, "us"),
            ratio_json(r50),
            ratio_json(r99),
            TARGET_P99_US,
            meets.map_or("null".to_string(), |m| m.to_string()),
        );
    } else {
        println!(
            "dial-overshoot: {} tries each (+{} warm-up), timeout {} ms, full-queue listener {}, \
             multi-thread runtime with {} workers",
            args.tries, args.warmup, args.timeout_ms, hole.addr, WORKERS
        );
        println!();
        let mut rows: Vec<Row> = results
            .sides
            .iter()
            .zip(&summaries)
            .map(|(side, summary)| Row {
                label: side.kind.label().into(),
                summary: *summary,
                failures: side.failed(),
            })
            .collect();
        rows.push(Row {
            label: "(dialpool e.elapsed())".into(),
            summary: reported,
            failures: 0,
        });
        print!("{}", table("overshoot (us)", &rows));
        println!();
        let show = |r: Option<f64>| r.map_or("n/a".to_string(), |v| format!("{v:.2}"));
        println!("ratio dialpool/tokio: p50 {}, p99 {}", show(r50), show(r99));
        match meets {
            Some(true) => println!("target p99 overshoot <= {TARGET_P99_US} us: met"),
            Some(false) => println!("target p99 overshoot <= {TARGET_P99_US} us: MISSED"),
            None => println!("target p99 overshoot <= {TARGET_P99_US} us: no successful tries"),
        }
    }
    for side in &results.sides {
        for (what, n) in &side.failures {
            eprintln!(
                "dial-overshoot: {}: {n} tries failed: {what}",
                side.kind.label()
            );
        }
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
