//! pool_ops: a fixed number of acquire+release cycles on one pool, for
//! counting instructions under callgrind (not a timing benchmark).
//!
//! Run it twice with different counts and divide the difference in
//! instructions by the difference in cycles: what remains is the cost of one
//! acquire+release, without start-up, warm-up and shutdown.
//!
//! ```sh
//! cargo build --release -p dialpool-bench --bin pool_ops
//! for n in 2000 12000; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.dialpool.$n \
//!     target/release/pool_ops dialpool $n
//! done
//! ```
//!
//! Arguments: `SIDE` (dialpool, deadpool or bb8), `N` cycles, optional
//! `TASKS` (default 1: the N cycles in one task) and `MAX` (default 16).

#[path = "../pool_noop.rs"]
mod pool_noop;

use pool_noop::{AnyPool, Side};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: pool_ops dialpool|deadpool|bb8 N [TASKS] [MAX]";
    let side = args.first().and_then(|s| Side::parse(s)).expect(usage);
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).expect(usage);
    let tasks: u64 = args.get(2).map_or(1, |s| s.parse().expect(usage));
    let max: u32 = args.get(3).map_or(16, |s| s.parse().expect(usage));
    let rt = pool_noop::runtime();
    rt.block_on(async {
        let pool = AnyPool::new(side, max).await;
        pool.cycles_concurrently(tasks, n / tasks).await;
    });
}
