//! pool_throughput: acquire+release throughput of dialpool's generic pool
//! beside deadpool's managed pool and bb8, with the same no-op manager
//! (`src/pool_noop.rs`), in one criterion run.
//!
//! For each concurrency (1 task = uncontended, then 2, 8 and 32 tasks) the
//! three pools are measured back to back, so that they share the machine's
//! state of the moment. Every pool holds `POOL_MAX` connections (default 16,
//! the same for all three), opened before measuring. All tasks run on one
//! multi-thread tokio runtime with 2 workers; an iteration is one
//! acquire+release, timed with `iter_custom` over `iters` cycles split
//! evenly between the tasks (spawn and join included, amortised).
//!
//! After criterion's own report the binary prints a table: the median time
//! per acquire+release of the measured samples, operations per second, and
//! dialpool's throughput over the faster peer's.
//!
//! ```sh
//! POOL_MAX=16 cargo run --release -p dialpool-bench --bin pool_throughput -- --bench [criterion options]
//! ```

#[path = "../pool_noop.rs"]
mod pool_noop;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use pool_noop::{runtime, AnyPool, Side};

const CONCURRENCY: [u64; 4] = [1, 2, 8, 32];
const SAMPLE_SIZE: usize = 30;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "note: without --bench criterion only tests that each benchmark runs once \
             (as `cargo test` would); pass --bench to measure"
        );
    }
    let max: u32 = std::env::var("POOL_MAX")
        .ok()
        .map(|v| v.parse().expect("POOL_MAX takes a number"))
        .unwrap_or(16);
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(SAMPLE_SIZE)
        .without_plots()
        .configure_from_args();
    let rt = runtime();
    let mut results: Vec<(Side, u64, f64)> = Vec::new();

    let mut group = criterion.benchmark_group(format!("pool_acquire_release_max{max}"));
    group.throughput(Throughput::Elements(1));
    for tasks in CONCURRENCY {
        for side in Side::ALL {
            let pool = rt.block_on(AnyPool::new(side, max));
            let record: Samples = Arc::default();
            group.bench_function(BenchmarkId::new(side.name(), tasks), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let pool = pool.clone();
                    let record = record.clone();
                    async move {
                        let per_task = iters.div_ceil(tasks).max(1);
                        let start = Instant::now();
                        pool.cycles_concurrently(tasks, per_task).await;
                        let elapsed = start.elapsed();
                        let done = per_task * tasks;
                        record
                            .lock()
                            .expect("samples")
                            .push(elapsed.as_nanos() as f64 / done as f64);
                        // Criterion divides by `iters`; scale to the cycles done.
                        elapsed.mul_f64(iters as f64 / done as f64)
                    }
                });
            });
            // Criterion calls the routine during the warm-up first, then
            // once per sample: the last SAMPLE_SIZE calls are the samples.
            let mut measured = record.lock().expect("samples").clone();
            if !measured.is_empty() {
                let keep = measured.len().min(SAMPLE_SIZE);
                measured.drain(..measured.len() - keep);
                measured.sort_by(f64::total_cmp);
                results.push((side, tasks, measured[measured.len() / 2]));
            }
            drop(pool);
        }
    }
    group.finish();
    criterion.final_summary();
    print_table(max, &results);
}

/// Per-op nanoseconds of each call of the timed routine.
type Samples = Arc<Mutex<Vec<f64>>>;

fn print_table(max: u32, results: &[(Side, u64, f64)]) {
    if results.is_empty() {
        return;
    }
    println!();
    println!("acquire+release, pool max {max}, median of the measured samples (ns/op, Mops/s)");
    println!(
        "{:>6} {:>12} {:>12} {:>12} {:>9} {:>9} {:>9} {:>14}",
        "tasks",
        "dialpool",
        "deadpool",
        "bb8",
        "dp Mop/s",
        "dpl Mop/s",
        "bb8 Mop/s",
        "dp/best peer"
    );
    for tasks in CONCURRENCY {
        let get = |side: Side| {
            results
                .iter()
                .find(|(s, t, _)| *s == side && *t == tasks)
                .map(|r| r.2)
        };
        let (Some(dp), Some(dpl), Some(b8)) =
            (get(Side::Dialpool), get(Side::Deadpool), get(Side::Bb8))
        else {
            continue;
        };
        let best_peer = dpl.min(b8);
        println!(
            "{tasks:>6} {dp:>12.1} {dpl:>12.1} {b8:>12.1} {:>9.3} {:>9.3} {:>9.3} {:>14.2}",
            1e3 / dp,
            1e3 / dpl,
            1e3 / b8,
            best_peer / dp
        );
    }
    // One line per result, for scripts.
    for (side, tasks, ns) in results {
        println!(
            "RESULT pool_throughput max={max} side={} tasks={tasks} ns_per_op={ns:.1}",
            side.name()
        );
    }
}
