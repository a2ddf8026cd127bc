//! pool_overshoot: how late an acquire timeout reaches the caller when every
//! connection is held, dialpool beside deadpool's `timeout_get` and bb8's
//! `connection_timeout`, with the same no-op manager (`src/pool_noop.rs`).
//!
//! Each pool has `--max` connections (default 2), all held by the main task
//! for the whole run. A round starts `--waiters` tasks (default 4) at once
//! on one pool, each making one acquire with a 20 ms wait limit
//! (`--timeout-ms`), which must fail: dialpool with ACQUIRE_TIMEOUT
//! (`acquire_timeout=20ms`), deadpool with `PoolError::Timeout(Wait)`
//! (`Timeouts { wait: 20 ms }`), bb8 with `RunError::TimedOut`. The rounds
//! cycle through the three pools, rotating which goes first. Overshoot =
//! elapsed (from just before the call to the error in hand) − 20 ms, in µs.
//!
//! ```sh
//! cargo run --release -p dialpool-bench --bin pool_overshoot -- [--rounds 60] [--waiters 4] [--max 2] [--timeout-ms 20]
//! ```

#[path = "../pool_noop.rs"]
mod pool_noop;

use std::time::{Duration, Instant};

use dialpool_bench::{ratio, table, Row, Summary};
use pool_noop::{bb8_pool, deadpool_pool, dp_pool, Side};

struct Args {
    rounds: usize,
    waiters: usize,
    max: u32,
    timeout_ms: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        rounds: 60,
        waiters: 4,
        max: 2,
        timeout_ms: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} takes a number"))
        };
        match flag.as_str() {
            "--rounds" => args.rounds = value() as usize,
            "--waiters" => args.waiters = value() as usize,
            "--max" => args.max = value() as u32,
            "--timeout-ms" => args.timeout_ms = value(),
            other => panic!("unknown option {other}; valid: --rounds --waiters --max --timeout-ms"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    let timeout = Duration::from_millis(args.timeout_ms);
    let rt = pool_noop::runtime();
    rt.block_on(async {
        let dp = dp_pool(args.max, &format!("{}ms", args.timeout_ms)).await;
        let dpl = deadpool_pool(args.max as usize).await;
        let b8 = bb8_pool(args.max, timeout).await;
        // Hold every connection for the whole run.
        let mut held_dp = Vec::new();
        let mut held_dpl = Vec::new();
        let mut held_b8 = Vec::new();
        for _ in 0..args.max {
            held_dp.push(dp.acquire(None).await.expect("hold dialpool"));
            held_dpl.push(dpl.get().await.expect("hold deadpool"));
            held_b8.push(b8.get_owned().await.expect("hold bb8"));
        }

        let mut samples: [Vec<i64>; 3] = Default::default();
        let mut failures = [0usize; 3];
        let mut reported_us: Vec<i64> = Vec::new();
        for round in 0..args.rounds + 1 {
            for k in 0..3 {
                let side = Side::ALL[(round + k) % 3];
                let mut tasks = Vec::new();
                for _ in 0..args.waiters {
                    let (dp, dpl, b8) = (dp.clone(), dpl.clone(), b8.clone());
                    tasks.push(tokio::spawn(async move {
                        let start = Instant::now();
                        let (ok, reported) = match side {
                            Side::Dialpool => match dp.acquire(None).await {
                                Err(e) if e.code() == dialpool::Code::AcquireTimeout => {
                                    (true, e.elapsed())
                                }
                                _ => (false, None),
                            },
                            Side::Deadpool => {
                                let t = deadpool::managed::Timeouts {
                                    wait: Some(timeout),
                                    create: None,
                                    recycle: None,
                                };
                                let r = dpl.timeout_get(&t).await;
                                (
                                    matches!(
                                        r,
                                        Err(deadpool::managed::PoolError::Timeout(
                                            deadpool::managed::TimeoutType::Wait
                                        ))
                                    ),
                                    None,
                                )
                            }
                            Side::Bb8 => {
                                (matches!(b8.get().await, Err(bb8::RunError::TimedOut)), None)
                            }
                        };
                        (ok, start.elapsed(), reported)
                    }));
                }
                for t in tasks {
                    let (ok, elapsed, reported) = t.await.expect("waiter task");
                    // Round 0 is a warm-up.
                    if round == 0 {
                        continue;
                    }
                    let i = side as usize;
                    if ok {
                        samples[i].push(elapsed.as_micros() as i64 - timeout.as_micros() as i64);
                        if let Some(r) = reported {
                            reported_us.push(elapsed.as_micros() as i64 - r.as_micros() as i64);
                        }
                    } else {
                        failures[i] += 1;
                    }
                }
            }
        }
        drop((held_dp, held_dpl, held_b8));

        let rows: Vec<Row> = Side::ALL
            .iter()
            .map(|s| Row {
                label: s.name().to_string(),
                summary: Summary::of(&samples[*s as usize]),
                failures: failures[*s as usize],
            })
            .collect();
        println!(
            "acquire-timeout overshoot, µs past {} ms; max {} held, {} concurrent waiters, {} rounds",
            args.timeout_ms, args.max, args.waiters, args.rounds
        );
        print!("{}", table("overshoot (µs)", &rows));
        let p = |i: usize| rows[i].summary.map(|s| (s.p50, s.p99)).unwrap_or((0, 0));
        let (dp50, dp99) = p(0);
        for (i, name) in [(1, "deadpool"), (2, "bb8")] {
            let (q50, q99) = p(i);
            println!(
                "ratio dialpool/{name}: p50 {}  p99 {}",
                ratio(dp50, q50).map_or("-".into(), |r| format!("{r:.2}")),
                ratio(dp99, q99).map_or("-".into(), |r| format!("{r:.2}")),
            );
        }
        if let Some(s) = Summary::of(&reported_us) {
            println!(
                "dialpool: caller-measured minus the error's own elapsed(): p50 {} µs, p99 {} µs",
                s.p50, s.p99
            );
        }
        for (i, side) in Side::ALL.iter().enumerate() {
            if let Some(s) = rows[i].summary {
                println!(
                    "RESULT pool_overshoot side={} n={} p50_us={} p99_us={} max_us={} failures={}",
                    side.name(),
                    s.count,
                    s.p50,
                    s.p99,
                    s.max,
                    failures[i]
                );
            }
        }
    });
}
