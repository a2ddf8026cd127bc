//! pool_interleaved: the acquire+release throughput of `pool_throughput`,
//! with the three pools alternating in short batches so that the noise of a
//! shared machine hits all of them alike (criterion measures one pool after
//! the other, seconds apart).
//!
//! For each concurrency (1, 2, 8, 32 tasks; pools of `--max`, default 16,
//! warmed), `--rounds` rounds (default 30): each pool in turn, the first
//! rotating every round, runs `--batch` acquire+release cycles (default
//! 100,000, split between the tasks). Per batch it records wall time and the
//! process's CPU time (CLOCK_PROCESS_CPUTIME_ID: all threads; less sensitive
//! to the process being descheduled than wall time). Reported: median ns per
//! operation of each pool, and the median over rounds of dialpool's
//! throughput over the faster peer's in the same round.
//!
//! ```sh
//! cargo run --release -p dialpool-bench --bin pool_interleaved -- [--rounds 30] [--batch 100000] [--max 16]
//! ```

#[path = "../db_harness.rs"]
mod db_harness;
#[path = "../pool_noop.rs"]
mod pool_noop;

use std::time::Instant;

use db_harness::{median, Flags};
use pool_noop::{AnyPool, Side};

const CONCURRENCY: [u64; 4] = [1, 2, 8, 32];

/// CPU time of the whole process, in nanoseconds.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() {
    let flags = Flags::parse(&["rounds", "batch", "max"]);
    let rounds = flags.num("rounds", 30) as usize;
    let batch = flags.num("batch", 100_000);
    let max = flags.num("max", 16) as u32;
    let rt = pool_noop::runtime();
    println!(
        "acquire+release, pools of {max}, {rounds} rounds of {batch} cycles per pool, interleaved; medians"
    );
    println!(
        "| tasks | dialpool ns/op | deadpool ns/op | bb8 ns/op | ratio wall (dp vs faster peer) | dialpool CPU ns/op | deadpool CPU ns/op | bb8 CPU ns/op | ratio CPU |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    rt.block_on(async {
        for tasks in CONCURRENCY {
            let mut pools = Vec::new();
            for side in Side::ALL {
                pools.push(AnyPool::new(side, max).await);
            }
            let per_task = (batch / tasks).max(1);
            let done = (per_task * tasks) as f64;
            let mut wall: [Vec<f64>; 3] = Default::default();
            let mut cpu: [Vec<f64>; 3] = Default::default();
            let mut ratio_wall = Vec::new();
            let mut ratio_cpu = Vec::new();
            for round in 0..=rounds {
                let mut w = [0.0f64; 3];
                let mut c = [0.0f64; 3];
                for k in 0..3 {
                    let i = (round + k) % 3;
                    let cpu0 = process_cpu_ns();
                    let start = Instant::now();
                    pools[i].cycles_concurrently(tasks, per_task).await;
                    w[i] = start.elapsed().as_nanos() as f64 / done;
                    c[i] = (process_cpu_ns() - cpu0) as f64 / done;
                }
                if round == 0 {
                    continue; // warm-up
                }
                for i in 0..3 {
                    wall[i].push(w[i]);
                    cpu[i].push(c[i]);
                }
                ratio_wall.push(w[1].min(w[2]) / w[0]);
                ratio_cpu.push(c[1].min(c[2]) / c[0]);
            }
            let m = |v: &Vec<f64>| median(v);
            println!(
                "| {tasks} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.2} |",
                m(&wall[0]),
                m(&wall[1]),
                m(&wall[2]),
                m(&ratio_wall),
                m(&cpu[0]),
                m(&cpu[1]),
                m(&cpu[2]),
                m(&ratio_cpu)
            );
            println!(
                "RESULT pool_interleaved tasks={tasks} max={max} dialpool_ns={:.1} deadpool_ns={:.1} bb8_ns={:.1} ratio_wall={:.3} dialpool_cpu_ns={:.1} deadpool_cpu_ns={:.1} bb8_cpu_ns={:.1} ratio_cpu={:.3}",
                m(&wall[0]),
                m(&wall[1]),
                m(&wall[2]),
                m(&ratio_wall),
                m(&cpu[0]),
                m(&cpu[1]),
                m(&cpu[2]),
                m(&ratio_cpu)
            );
        }
    });
}
