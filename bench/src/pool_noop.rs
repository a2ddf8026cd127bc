//! The same no-op connection manager for the three pools the pool benchmarks
//! compare (dialpool's generic `Pool<M>`, deadpool's managed pool, bb8), and
//! the acquire+release loops they run. Included by the `pool_*` binaries with
//! `#[path]` (it is not part of the library, which another benchmark owns).
//!
//! Each manager's connection is a unit-like value; connect succeeds at once;
//! every per-checkout hook (dialpool's probe, deadpool's recycle, bb8's
//! `is_valid`, on by default as `test_on_check_out`) returns "fine" without
//! doing anything. So what is timed is each pool's own bookkeeping.

#![allow(dead_code)] // each binary uses a different part

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use dialpool::pool::{Liveness, Manager, ReleaseState};
use dialpool::{Deadline, Result as DpResult};

/// The connection every manager hands out.
#[derive(Debug)]
pub struct NoopConn;

/// dialpool's manager.
pub struct DpNoop;

impl Manager for DpNoop {
    type Connection = NoopConn;
    async fn connect(&self) -> DpResult<NoopConn> {
        Ok(NoopConn)
    }
    fn probe(&self, _: &mut NoopConn) -> Liveness {
        Liveness::Alive
    }
    async fn ping(&self, _: &mut NoopConn, _: Option<Deadline>) -> DpResult<()> {
        Ok(())
    }
    fn release_state(&self, _: &mut NoopConn) -> ReleaseState {
        ReleaseState::Clean
    }
    async fn reset(&self, _: &mut NoopConn) -> DpResult<()> {
        Ok(())
    }
    async fn close(&self, _: NoopConn) {}
}

/// deadpool's manager.
pub struct DeadpoolNoop;

impl deadpool::managed::Manager for DeadpoolNoop {
    type Type = NoopConn;
    type Error = Infallible;
    async fn create(&self) -> std::result::Result<NoopConn, Infallible> {
        Ok(NoopConn)
    }
    async fn recycle(
        &self,
        _: &mut NoopConn,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

/// bb8's manager.
pub struct Bb8Noop;

impl bb8::ManageConnection for Bb8Noop {
    type Connection = NoopConn;
    type Error = Infallible;
    async fn connect(&self) -> std::result::Result<NoopConn, Infallible> {
        Ok(NoopConn)
    }
    async fn is_valid(&self, _: &mut NoopConn) -> std::result::Result<(), Infallible> {
        Ok(())
    }
    fn has_broken(&self, _: &mut NoopConn) -> bool {
        false
    }
}

pub type DpPool = dialpool::pool::Pool<DpNoop>;
pub type DeadpoolPool = deadpool::managed::Pool<DeadpoolNoop>;
pub type Bb8Pool = bb8::Pool<Bb8Noop>;

/// dialpool's pool options: `max_open=max`, no maintenance task, and
/// `ping_after=24h` so that no checkout pings.
pub fn dp_options(max: u32, acquire_timeout: &str) -> dialpool::config::PoolOptions {
    dialpool::Config::parse(&format!(
        "tcp://127.0.0.1:1?max_open={max}&health_check_period=0&acquire_timeout={acquire_timeout}&ping_after=24h"
    ))
    .expect("pool URL")
    .pool
}

/// A dialpool pool of `max` no-op connections, all opened before it returns.
/// Call inside a tokio runtime.
pub async fn dp_pool(max: u32, acquire_timeout: &str) -> DpPool {
    let pool = DpPool::new(DpNoop, dp_options(max, acquire_timeout)).expect("dialpool pool");
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(pool.acquire(None).await.expect("warm-up acquire"));
    }
    drop(held);
    pool
}

/// A deadpool pool of `max` no-op objects, all created before it returns.
pub async fn deadpool_pool(max: usize) -> DeadpoolPool {
    let pool = DeadpoolPool::builder(DeadpoolNoop)
        .max_size(max)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .expect("deadpool pool");
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(pool.get().await.expect("warm-up get"));
    }
    drop(held);
    pool
}

/// A bb8 pool of `max` no-op connections (bb8's defaults otherwise, so
/// `test_on_check_out` is on and runs the no-op `is_valid`), all opened
/// before it returns. `connection_timeout` is bb8's wait limit.
pub async fn bb8_pool(max: u32, connection_timeout: Duration) -> Bb8Pool {
    let pool = bb8::Pool::builder()
        .max_size(max)
        .connection_timeout(connection_timeout)
        .build(Bb8Noop)
        .await
        .expect("bb8 pool");
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(pool.get_owned().await.expect("warm-up get"));
    }
    drop(held);
    pool
}

/// Which pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Dialpool,
    Deadpool,
    Bb8,
}

impl Side {
    pub const ALL: [Side; 3] = [Side::Dialpool, Side::Deadpool, Side::Bb8];

    pub fn name(self) -> &'static str {
        match self {
            Side::Dialpool => "dialpool",
            Side::Deadpool => "deadpool",
            Side::Bb8 => "bb8",
        }
    }

    pub fn parse(s: &str) -> Option<Side> {
        Side::ALL.into_iter().find(|side| side.name() == s)
    }
}

/// One of the three pools, warmed up.
#[derive(Clone)]
pub enum AnyPool {
    Dialpool(DpPool),
    Deadpool(DeadpoolPool),
    Bb8(Bb8Pool),
}

impl AnyPool {
    /// A warmed pool of `max` connections for `side`, with a long wait limit.
    pub async fn new(side: Side, max: u32) -> AnyPool {
        match side {
            Side::Dialpool => AnyPool::Dialpool(dp_pool(max, "10s").await),
            Side::Deadpool => AnyPool::Deadpool(deadpool_pool(max as usize).await),
            Side::Bb8 => AnyPool::Bb8(bb8_pool(max, Duration::from_secs(10)).await),
        }
    }

    /// `n` acquire+release cycles in a row, in this task.
    pub async fn cycles(&self, n: u64) {
        match self {
            AnyPool::Dialpool(p) => {
                for _ in 0..n {
                    drop(std::hint::black_box(
                        p.acquire(None).await.expect("dialpool acquire"),
                    ));
                }
            }
            AnyPool::Deadpool(p) => {
                for _ in 0..n {
                    drop(std::hint::black_box(p.get().await.expect("deadpool get")));
                }
            }
            AnyPool::Bb8(p) => {
                for _ in 0..n {
                    drop(std::hint::black_box(p.get().await.expect("bb8 get")));
                }
            }
        }
    }

    /// `tasks` tasks on the current runtime doing `per_task` cycles each;
    /// returns when all are done.
    pub async fn cycles_concurrently(&self, tasks: u64, per_task: u64) {
        let pool = Arc::new(self.clone());
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.cycles(per_task).await })
            })
            .collect();
        for h in handles {
            h.await.expect("bench task");
        }
    }
}

/// The runtime every pool benchmark runs on: multi-thread, 2 workers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
