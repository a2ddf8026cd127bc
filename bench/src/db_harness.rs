//! Timing helpers shared by the `pg_bench` and `mysql_bench` binaries
//! (included with `#[path]`; not part of the library).

#![allow(dead_code)] // each binary uses a different part

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `op` in a loop in `tasks` tasks for `dur`, and returns operations per
/// second (the operations in flight when time is up are finished and
/// counted, and so is the time they take).
pub async fn ops_per_sec<F, Fut>(tasks: usize, dur: Duration, op: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (stop, count, op) = (stop.clone(), count.clone(), op.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    op().await;
                    n += 1;
                }
                count.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.expect("benchmark task");
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Median of a non-empty set of floats.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Microseconds from `d`.
pub fn us(d: Duration) -> i64 {
    d.as_micros() as i64
}

/// Signed microseconds of `elapsed - limit`.
pub fn overshoot_us(elapsed: Duration, limit: Duration) -> i64 {
    us(elapsed) - us(limit)
}

/// Simple command-line flags: `--name value` pairs, all numeric.
pub struct Flags(Vec<(String, String)>);

impl Flags {
    /// Reads `--name value` pairs from the command line; panics on anything
    /// not in `valid`.
    pub fn parse(valid: &[&str]) -> Flags {
        let mut out = Vec::new();
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let name = flag.trim_start_matches("--").to_string();
            if !flag.starts_with("--") || !valid.contains(&name.as_str()) {
                panic!("unknown option {flag}; valid: --{}", valid.join(" --"));
            }
            let value = it.next().unwrap_or_else(|| panic!("{flag} takes a value"));
            out.push((name, value));
        }
        Flags(out)
    }

    pub fn num(&self, name: &str, default: u64) -> u64 {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map_or(default, |(_, v)| {
                v.parse()
                    .unwrap_or_else(|_| panic!("--{name} takes a whole number"))
            })
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, v)| n == name && v != "0")
    }
}
