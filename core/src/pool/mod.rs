//! The connection pool, generic over a [`Manager`] that opens, probes,
//! pings, resets and closes one kind of connection.
//!
//! Rules that make it behave under failure:
//! - new connections are opened by background tasks under the dial and login
//!   limits, never under one waiter's deadline, and go to the oldest waiter;
//! - waiters are served first in, first out, and each gets ACQUIRE_TIMEOUT at
//!   its own deadline with the pool's numbers and the last connect error;
//! - a permanent connect failure (bad password, unknown database, TLS
//!   verification) fails every waiter at once instead of after the full wait;
//! - every checkout probes the socket without a round trip, and pings a
//!   connection idle longer than `ping_after`, so a connection the server
//!   already closed is never handed out;
//! - release never blocks its caller: cleanup (rollback, close) runs on the
//!   runtime, bounded.
//!
//! The state sits behind one short-held mutex; the hot path (an idle
//! connection is there) takes it once to check out and once to give back.

mod metrics;
mod stats;

use std::collections::VecDeque;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

pub use metrics::{
    render_prometheus, Histogram, HistogramSnapshot, MetricLabels, Metrics, MetricsSnapshot,
    BUCKETS, BUCKET_BOUNDS,
};
pub use stats::{CloseReason, Event, EventHandler, Stats};

use crate::config::{fmt_duration, PoolOptions};
use crate::deadline::{self, CancelToken, Deadline, Stop};
use crate::dial::PhaseTimings;
use crate::error::{Code, Error, Layer, Result};

/// What the checkout probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Nothing pending, peer still there.
    Alive,
    /// The peer closed or reset the connection, or sent something while the
    /// connection was idle (usually a goodbye before closing).
    Dead,
}

/// What a connection needs before it can go back into the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseState {
    /// Ready for the next user.
    Clean,
    /// Usable after [`Manager::reset`] (e.g. an open transaction to roll back).
    NeedsReset,
    /// Unusable (mid-protocol, lost, unknown state): close it.
    Broken,
}

/// Opens and looks after one kind of connection. The PostgreSQL and MySQL
/// sessions implement it; so do the tests' line-protocol managers.
pub trait Manager: Send + Sync + 'static {
    type Connection: Send + 'static;

    /// Opens a connection under the configured dial and login limits.
    fn connect(&self) -> impl Future<Output = Result<Self::Connection>> + Send;

    /// A non-blocking check of the socket, no round trip.
    fn probe(&self, conn: &mut Self::Connection) -> Liveness;

    /// A round trip to the server, within `deadline`.
    fn ping(
        &self,
        conn: &mut Self::Connection,
        deadline: Option<Deadline>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Whether the connection can be reused as it is, after a reset, or not.
    fn release_state(&self, conn: &mut Self::Connection) -> ReleaseState;

    /// Puts the session back into a clean state (rollback, reset), bounded
    /// by the manager's own limits.
    fn reset(&self, conn: &mut Self::Connection) -> impl Future<Output = Result<()>> + Send;

    /// Closes the connection politely (a protocol goodbye where there is one).
    fn close(&self, conn: Self::Connection) -> impl Future<Output = ()> + Send;

    /// Whether a connect error will repeat on every try, so waiters should
    /// get it at once. The default: bad credentials, TLS verification and
    /// bad settings, and server errors during login (unknown database/role).
    fn is_permanent(&self, err: &Error) -> bool {
        // A refusal the server will lift (too many clients, starting up) is
        // marked retryable and waits out the acquire like any outage.
        !err.is_retryable()
            && (matches!(
                err.code(),
                Code::AuthFailed | Code::TlsError | Code::InvalidArgument | Code::DnsError
            ) || (err.code() == Code::ServerError && err.layer() == Layer::Login))
    }

    /// The server's own cut for idle sessions (PostgreSQL's
    /// `idle_session_timeout`, MySQL's `wait_timeout`), read on the pool's
    /// first connection; the pool keeps `max_idle_time` below it.
    fn server_idle_limit(
        &self,
        _conn: &mut Self::Connection,
    ) -> impl Future<Output = Option<Duration>> + Send {
        async { None }
    }

    /// Dial phase timings of the last connect, for the connect event.
    fn timings(&self, _conn: &Self::Connection) -> Option<PhaseTimings> {
        None
    }
}

/// The first retry of a failed connect waits this long (with jitter)...
const BACKOFF_START: Duration = Duration::from_millis(50);
/// ...doubling up to this.
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// The share of `max_lifetime` each connection may lose at random, so that
/// connections opened together do not expire together.
const LIFETIME_JITTER: f64 = 0.05;
/// The leak sweep runs at least this often when `leak_threshold` is set.
const MIN_LEAK_TICK: Duration = Duration::from_millis(10);

struct Conn<C> {
    /// Boxed: a session is hundreds of bytes, and a checkout and a release
    /// move its entry several times (idle list, delivery, lease).
    raw: Box<C>,
    id: u64,
    created: Instant,
    expires: Option<Instant>,
    last_used: Instant,
}

type Delivery<C> = std::result::Result<Conn<C>, Error>;

struct Waiter<C> {
    id: u64,
    tx: oneshot::Sender<Delivery<C>>,
}

/// An entry of the leak registry.
struct Lease {
    since: Instant,
    label: Option<Arc<str>>,
    reported: bool,
}

/// Counters bumped on every acquire, kept outside the lock.
#[derive(Default)]
struct HotCounters {
    acquire_count: AtomicU64,
    wait_count: AtomicU64,
    wait_nanos: AtomicU64,
}

#[derive(Default)]
struct Counters {
    acquire_timeouts: u64,
    acquire_cancelled: u64,
    connects: u64,
    connect_failures: Vec<(Code, u64)>,
    closed_max_lifetime: u64,
    closed_max_idle_time: u64,
    closed_max_idle: u64,
    closed_dead: u64,
    closed_broken: u64,
    leaks: u64,
}

struct State<C> {
    /// Most recently returned last: checkout pops from the end.
    idle: Vec<Conn<C>>,
    waiters: VecDeque<Waiter<C>>,
    open: u32,
    in_use: u32,
    connecting: u32,
    /// Start times of the connects in progress (for the timeout message).
    connect_started: Vec<Instant>,
    last_connect_error: Option<Error>,
    closed: bool,
    next_id: u64,
    leases: Vec<Option<Lease>>,
    free_leases: Vec<usize>,
    counters: Counters,
}

struct Inner<M: Manager> {
    manager: M,
    opts: PoolOptions,
    handle: tokio::runtime::Handle,
    state: Mutex<State<M::Connection>>,
    events: Option<Arc<dyn EventHandler>>,
    track_leases: bool,
    hot: HotCounters,
    /// Latency histograms (atomic, outside the lock).
    metrics: Metrics,
    /// `max_idle_time` in force, in nanoseconds (0: off); lowered once the
    /// server's idle cut is known.
    max_idle_nanos: AtomicU64,
    /// Whether the server's idle cut has been asked for.
    idle_limit_checked: AtomicBool,
    /// What the server said, for stats.
    server_idle_limit: Mutex<Option<Duration>>,
    clock: CoarseClock,
}

/// When an acquire began and its deadline, taken from the precise clock
/// only once the acquire has to wait or ping.
#[derive(Clone, Copy)]
struct Begun {
    at: Instant,
    limit: Option<Deadline>,
}

impl Begun {
    fn new(opts: &PoolOptions, caller: Option<Deadline>) -> Begun {
        let at = Instant::now();
        Begun {
            at,
            limit: Deadline::earliest(
                opts.acquire_timeout
                    .map(|v| Deadline::starting_at(at, "acquire_timeout", v)),
                caller,
            ),
        }
    }
}

/// `Instant`s from CLOCK_MONOTONIC_COARSE: the same timeline as
/// `Instant::now()` at the resolution of a kernel tick (1–4 ms), read in a
/// few nanoseconds instead of tens. Good for idle times and lifetimes, not
/// for deadlines.
struct CoarseClock {
    base: Instant,
    base_ns: Option<u64>,
}

impl CoarseClock {
    fn new() -> CoarseClock {
        CoarseClock {
            base: Instant::now(),
            base_ns: coarse_ns(),
        }
    }

    /// The coarse now, also as nanoseconds since the clock was made: the
    /// difference of two such numbers is one subtraction, where that of two
    /// `Instant`s is `Timespec` arithmetic (some 70 instructions), which the
    /// release path would otherwise pay for the held time.
    #[inline]
    fn now_ns(&self) -> (Instant, u64) {
        match (self.base_ns, coarse_ns()) {
            (Some(base), Some(ns)) => {
                let since = ns.saturating_sub(base);
                (self.base + Duration::from_nanos(since), since)
            }
            _ => {
                let t = Instant::now();
                (t, self.ns_of(t))
            }
        }
    }

    /// `t` on the scale of [`CoarseClock::now_ns`].
    fn ns_of(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(target_os = "linux")]
fn coarse_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(not(target_os = "linux"))]
fn coarse_ns() -> Option<u64> {
    None
}

/// Which idle connection an acquire takes. The idle list is in release
/// order, so the preferred one, when idle, is usually near its end. When it
/// is not idle, the oldest is taken: the most recently released ones are the
/// likeliest to be wanted back by their last holders. Without a preference,
/// the most recently released (warm caches, and the rest can reach
/// `max_idle_time`).
fn pick_idle<C>(idle: &[Conn<C>], prefer: Option<u64>) -> Option<usize> {
    match prefer {
        Some(id) => match idle.iter().rposition(|c| c.id == id) {
            Some(at) => Some(at),
            None if idle.is_empty() => None,
            None => Some(0),
        },
        None => idle.len().checked_sub(1),
    }
}

/// A pool of connections made by `M`. Cheap to clone; all clones share it.
/// Dropping the last clone closes the pool, so its background connects stop
/// and its idle connections are closed even if nobody called `close()`.
pub struct Pool<M: Manager> {
    inner: Arc<Inner<M>>,
    _handle: Arc<LastHandle<M>>,
}

/// Shared by every clone of a [`Pool`] (not by checked-out connections).
struct LastHandle<M: Manager>(Arc<Inner<M>>);

impl<M: Manager> Drop for LastHandle<M> {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
            _handle: self._handle.clone(),
        }
    }
}

/// A connection checked out of the pool; goes back when dropped.
pub struct Pooled<M: Manager> {
    conn: Option<Conn<M::Connection>>,
    inner: Arc<Inner<M>>,
    acquired: Instant,
    /// `acquired` on the clock's nanosecond scale, so that the time held is
    /// one subtraction at release.
    acquired_ns: u64,
    lease: Option<usize>,
}

impl<M: Manager> Pool<M> {
    /// Opens a pool on the current tokio runtime.
    pub fn new(manager: M, opts: PoolOptions) -> Result<Pool<M>> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid_state(
                "Pool::new outside a tokio runtime; use Pool::with_handle or the blocking facade",
            )
        })?;
        Ok(Pool::with_handle(manager, opts, handle, None))
    }

    /// Opens a pool whose background work runs on `handle`, with an optional
    /// event subscriber.
    pub fn with_handle(
        manager: M,
        opts: PoolOptions,
        handle: tokio::runtime::Handle,
        events: Option<Arc<dyn EventHandler>>,
    ) -> Pool<M> {
        let track_leases = opts.leak_threshold.is_some();
        let max_idle_nanos = opts.max_idle_time.map_or(0, |d| d.as_nanos() as u64);
        let inner = Arc::new(Inner {
            manager,
            opts,
            handle,
            state: Mutex::new(State {
                idle: Vec::new(),
                waiters: VecDeque::new(),
                open: 0,
                in_use: 0,
                connecting: 0,
                connect_started: Vec::new(),
                last_connect_error: None,
                closed: false,
                next_id: 1,
                leases: Vec::new(),
                free_leases: Vec::new(),
                counters: Counters::default(),
            }),
            events,
            track_leases,
            hot: HotCounters::default(),
            metrics: Metrics::default(),
            max_idle_nanos: AtomicU64::new(max_idle_nanos),
            idle_limit_checked: AtomicBool::new(false),
            server_idle_limit: Mutex::new(None),
            clock: CoarseClock::new(),
        });
        Inner::refill(&inner);
        Inner::start_maintenance(&inner);
        Pool {
            _handle: Arc::new(LastHandle(inner.clone())),
            inner,
        }
    }

    /// The manager, e.g. to read what it learned about the server.
    pub fn manager(&self) -> &M {
        &self.inner.manager
    }

    /// The pool's limits as in force.
    pub fn options(&self) -> &PoolOptions {
        &self.inner.opts
    }

    /// Checks out a connection within the earlier of `acquire_timeout` and
    /// the caller's deadline.
    pub async fn acquire(&self, caller: Option<Deadline>) -> Result<Pooled<M>> {
        self.acquire_labeled(caller, None).await
    }

    /// As [`Pool::acquire`], with a label that leak warnings repeat.
    pub async fn acquire_labeled(
        &self,
        caller: Option<Deadline>,
        label: Option<&str>,
    ) -> Result<Pooled<M>> {
        self.acquire_with(caller, None, label).await
    }

    /// This pool's identity, shared by its clones: the address of their
    /// common state (for a per-thread preference; a closed pool's address
    /// may come back for a new one, which costs only a missed preference).
    pub fn key(&self) -> usize {
        Arc::as_ptr(&self.inner) as *const () as usize
    }

    /// The general acquire: `cancel` stops the wait at once with CANCELLED.
    pub async fn acquire_with(
        &self,
        caller: Option<Deadline>,
        cancel: Option<&CancelToken>,
        label: Option<&str>,
    ) -> Result<Pooled<M>> {
        self.acquire_preferring(caller, cancel, label, None).await
    }

    /// As [`Pool::acquire_with`], taking the idle connection with id
    /// `prefer` ([`Pooled::id`]) when it is idle, and the most recently
    /// released one otherwise.
    ///
    /// For a caller that checks out per statement (a database/sql
    /// connection, a thread): with the same connection each time, its
    /// statements keep meeting the same server process. Shuffled between
    /// callers, the server processes are woken on whichever CPU they last
    /// ran on, which on a host shared with the server often means an idle
    /// one and an interrupt to wake it: with 4 goroutines on 2 CPUs that
    /// doubled the cross-CPU wakeups and cost ~25 % of the throughput.
    pub async fn acquire_preferring(
        &self,
        caller: Option<Deadline>,
        cancel: Option<&CancelToken>,
        label: Option<&str>,
        prefer: Option<u64>,
    ) -> Result<Pooled<M>> {
        let inner = &self.inner;
        let mut waited = false;
        // Idle time and lifetime are judged on the coarse clock; the
        // precise clock and the acquire deadline are needed only once the
        // acquire has to wait or ping.
        let (mut now, mut now_ns) = inner.clock.now_ns();
        let mut begun: Option<Begun> = None;
        loop {
            let (taken, spawn) = {
                let mut st = inner.state.lock();
                if st.closed {
                    return Err(pool_closed());
                }
                let taken = pick_idle(&st.idle, prefer).map(|at| st.idle.remove(at));
                match taken {
                    Some(conn) => {
                        st.in_use += 1;
                        (Taken::Idle(conn), 0)
                    }
                    None => {
                        let id = st.next_id;
                        st.next_id += 1;
                        let (tx, rx) = oneshot::channel();
                        st.waiters.push_back(Waiter { id, tx });
                        let spawn = inner.reserve_connects(&mut st);
                        (Taken::Wait(id, rx), spawn)
                    }
                }
            };
            for _ in 0..spawn {
                inner.spawn_connect();
            }
            let mut pinged = false;
            let conn = match taken {
                // The checks without I/O run here, so the common case (no
                // ping due) builds no future of its own.
                Taken::Idle(conn) => match inner.check_idle(conn, now) {
                    None => {
                        (now, now_ns) = inner.clock.now_ns();
                        continue;
                    }
                    Some((conn, false)) => conn,
                    Some((conn, true)) => {
                        // Boxed: a ping is a whole query future, many KB,
                        // which would otherwise make every acquire future
                        // that size, copied on every call that moves it.
                        match Box::pin(inner.ping_out(conn, &mut begun, caller, cancel)).await {
                            Ok(conn) => {
                                pinged = true;
                                conn
                            }
                            Err(Some(e)) => return Err(e),
                            Err(None) => {
                                (now, now_ns) = inner.clock.now_ns();
                                continue;
                            }
                        }
                    }
                },
                Taken::Wait(id, rx) => {
                    waited = true;
                    let Begun { at: start, limit } =
                        *begun.get_or_insert_with(|| Begun::new(&inner.opts, caller));
                    let mut guard = WaitGuard {
                        inner,
                        id,
                        rx,
                        done: false,
                    };
                    let outcome = deadline::run_until(limit, cancel, &mut guard.rx).await;
                    guard.done = true;
                    match outcome {
                        Ok(Ok(Ok(conn))) => conn,
                        Ok(Ok(Err(e))) => return Err(e),
                        Ok(Err(_)) => return Err(pool_closed()),
                        Err(Stop::Deadline(d)) => {
                            inner.abandon(id, &mut guard.rx);
                            return Err(inner.timed_out(d, start));
                        }
                        Err(Stop::Cancelled) => {
                            inner.abandon(id, &mut guard.rx);
                            inner.state.lock().counters.acquire_cancelled += 1;
                            return Err(acquire_cancelled(start));
                        }
                    }
                }
            };
            // The precise clock is read again only when the acquire took
            // time (a wait or a ping); otherwise the checkout took well under
            // a microsecond and the coarse `now` stands for it.
            let (acquired, acquired_ns, wait) = match begun {
                Some(b) if waited || pinged => {
                    let t = Instant::now();
                    (t, inner.clock.ns_of(t), t.saturating_duration_since(b.at))
                }
                _ => (now, now_ns, Duration::ZERO),
            };
            return Ok(inner.checked_out(conn, (acquired, acquired_ns), wait, waited, label));
        }
    }

    /// The acquire's common case without a future: an idle connection that
    /// passes the checks without I/O and is not due a ping. `None` when
    /// there is none (nothing idle, or a ping due): then [`Pool::acquire_preferring`]
    /// does the rest. It never waits, so it needs neither a runtime nor
    /// the caller's deadline; a blocking caller saves the executor's setup
    /// around a checkout that is over in one poll.
    pub fn try_acquire_idle(
        &self,
        label: Option<&str>,
        prefer: Option<u64>,
    ) -> Option<Result<Pooled<M>>> {
        let inner = &self.inner;
        let (mut now, mut now_ns) = inner.clock.now_ns();
        loop {
            let conn = {
                let mut st = inner.state.lock();
                if st.closed {
                    return Some(Err(pool_closed()));
                }
                let at = pick_idle(&st.idle, prefer)?;
                // Decided before the connection leaves the list, so that a
                // ping is left to the async path with nothing to undo.
                if now.saturating_duration_since(st.idle[at].last_used) >= inner.opts.ping_after {
                    return None;
                }
                st.in_use += 1;
                st.idle.remove(at)
            };
            match inner.check_idle(conn, now) {
                None => (now, now_ns) = inner.clock.now_ns(),
                Some((conn, _)) => {
                    return Some(Ok(inner.checked_out(
                        conn,
                        (now, now_ns),
                        Duration::ZERO,
                        false,
                        label,
                    )))
                }
            }
        }
    }

    /// A snapshot of the pool's numbers.
    pub fn stats(&self) -> Stats {
        let st = self.inner.state.lock();
        let c = &st.counters;
        let mut failures = c.connect_failures.clone();
        failures.sort_by_key(|(code, _)| *code as u32);
        Stats {
            max_open: self.inner.opts.max_open,
            max_idle: self.inner.opts.max_idle,
            min_idle: self.inner.opts.min_idle,
            open: st.open,
            in_use: st.in_use,
            idle: st.idle.len() as u32,
            waiting: st.waiters.len() as u32,
            connecting: st.connecting,
            wait_count: self.inner.hot.wait_count.load(Ordering::Relaxed),
            wait_duration_total: Duration::from_nanos(
                self.inner.hot.wait_nanos.load(Ordering::Relaxed),
            ),
            acquire_count: self.inner.hot.acquire_count.load(Ordering::Relaxed),
            acquire_timeouts: c.acquire_timeouts,
            acquire_cancelled: c.acquire_cancelled,
            connects: c.connects,
            connect_failures: failures,
            closed_max_lifetime: c.closed_max_lifetime,
            closed_max_idle_time: c.closed_max_idle_time,
            closed_max_idle: c.closed_max_idle,
            closed_dead: c.closed_dead,
            closed_broken: c.closed_broken,
            leaks: c.leaks,
            max_idle_time: self.inner.max_idle_time(),
            server_idle_limit: *self.inner.server_idle_limit.lock(),
        }
    }

    /// Closes the pool: idle connections now, in-use ones when they come
    /// back; current and later acquires get POOL_CLOSED. Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    pub fn is_closed(&self) -> bool {
        self.inner.state.lock().closed
    }
}

enum Taken<C> {
    Idle(Conn<C>),
    Wait(u64, oneshot::Receiver<Delivery<C>>),
}

/// Takes a waiter out of the queue when its acquire ends without a
/// connection (deadline or a dropped future), recovering a connection that
/// was sent at that very moment, so that none is lost with the receiver.
struct WaitGuard<'a, M: Manager> {
    inner: &'a Arc<Inner<M>>,
    id: u64,
    rx: oneshot::Receiver<Delivery<M::Connection>>,
    done: bool,
}

impl<M: Manager> Drop for WaitGuard<'_, M> {
    fn drop(&mut self) {
        if !self.done {
            self.inner.abandon(self.id, &mut self.rx);
            self.inner.state.lock().counters.acquire_cancelled += 1;
        }
    }
}

/// A checked-out connection in the middle of its checkout ping; dropped
/// with the acquire future, it is closed and its slot freed.
struct Held<'a, M: Manager> {
    inner: &'a Arc<Inner<M>>,
    conn: Option<Conn<M::Connection>>,
}

impl<M: Manager> Drop for Held<'_, M> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.inner.discard(conn, CloseReason::Broken);
        }
    }
}

fn acquire_cancelled(start: Instant) -> Error {
    Error::new(
        Code::Cancelled,
        "waiting for a connection was cancelled by the caller",
    )
    .with_layer(Layer::Pool)
    .with_elapsed(start.elapsed())
}

fn pool_closed() -> Error {
    Error::new(Code::PoolClosed, "the pool is closed")
        .with_hint("the application closed this pool; acquire from an open one")
}

impl<M: Manager> Inner<M> {
    /// See [`Pool::close`].
    fn close(self: &Arc<Self>) {
        let (idle, waiters) = {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            let idle: Vec<_> = st.idle.drain(..).collect();
            st.open -= idle.len() as u32;
            let waiters: Vec<_> = st.waiters.drain(..).collect();
            (idle, waiters)
        };
        for w in waiters {
            let _ = w.tx.send(Err(pool_closed()));
        }
        for conn in idle {
            self.close_conn(conn, CloseReason::PoolClosed);
        }
    }

    fn max_idle_time(&self) -> Option<Duration> {
        match self.max_idle_nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    /// Asks the server for its idle cut once per pool and keeps
    /// `max_idle_time` safely below it, so the pool retires a connection
    /// before the server does.
    async fn learn_server_idle_limit(&self, raw: &mut M::Connection) {
        if self.idle_limit_checked.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(limit) = self.manager.server_idle_limit(raw).await else {
            return;
        };
        if limit.is_zero() {
            return;
        }
        *self.server_idle_limit.lock() = Some(limit);
        let margin = (limit / 10).min(Duration::from_secs(5));
        let safe = limit - margin;
        let current = self.max_idle_time();
        if current.is_none_or(|c| c > safe) {
            self.max_idle_nanos
                .store(safe.as_nanos() as u64, Ordering::Relaxed);
            let why = format!(
                "the server closes sessions idle for {}",
                fmt_duration(limit)
            );
            self.emit(|| Event::Adjusted {
                option: "max_idle_time",
                from: current,
                to: safe,
                why: &why,
            });
        }
    }

    fn emit<'a>(&self, event: impl FnOnce() -> Event<'a>) {
        if let Some(h) = &self.events {
            h.event(&event());
        }
    }

    /// How many connects to start now so that every waiter, and `min_idle`,
    /// has one coming, within `max_open`. Reserves them in the counts.
    fn reserve_connects(&self, st: &mut State<M::Connection>) -> u32 {
        if st.closed {
            return 0;
        }
        let idle = st.idle.len() as u32;
        let wanted = (st.waiters.len() as u32)
            .saturating_add(self.opts.min_idle.saturating_sub(idle))
            .saturating_sub(st.connecting);
        let room = self.opts.max_open.saturating_sub(st.open + st.connecting);
        let n = wanted.min(room);
        st.connecting += n;
        n
    }

    fn spawn_connect(self: &Arc<Self>) {
        let inner = self.clone();
        self.handle.spawn(async move { inner.connect_loop().await });
    }

    /// Starts connects for `min_idle` (at open and after closes).
    fn refill(self: &Arc<Self>) {
        let n = {
            let mut st = self.state.lock();
            self.reserve_connects(&mut st)
        };
        for _ in 0..n {
            self.spawn_connect();
        }
    }

    /// One reserved connect slot: tries until it succeeds, a permanent error
    /// comes, or nobody needs the connection any more.
    async fn connect_loop(self: Arc<Self>) {
        let mut backoff = BACKOFF_START;
        // `reserve_connects` recorded a start time for this slot; the
        // attempt in progress is tracked by its own start.
        let mut slot_start = {
            let mut st = self.state.lock();
            let now = Instant::now();
            replace_start(&mut st.connect_started, None, now);
            now
        };
        loop {
            self.emit(|| Event::ConnectStart);
            let result = self.manager.connect().await;
            let elapsed = slot_start.elapsed();
            match result {
                Ok(mut raw) => {
                    let timings = self.manager.timings(&raw);
                    self.metrics.create_time.record(elapsed);
                    let dial = self.record_dial(timings.as_ref());
                    if timings.is_some() {
                        self.metrics.login.record(elapsed.saturating_sub(dial));
                    }
                    self.learn_server_idle_limit(&mut raw).await;
                    self.emit(|| Event::ConnectEnd {
                        elapsed,
                        result: Ok(()),
                        timings,
                    });
                    self.deliver_new(raw, slot_start);
                    return;
                }
                Err(e) => {
                    self.record_dial(e.phases());
                    self.emit(|| Event::ConnectEnd {
                        elapsed,
                        result: Err(&e),
                        timings: e.phases().copied(),
                    });
                    let permanent = self.manager.is_permanent(&e);
                    let (failed, retry) = {
                        let mut st = self.state.lock();
                        bump(&mut st.counters.connect_failures, e.code());
                        st.last_connect_error = Some(e.clone());
                        let others = st.connecting.saturating_sub(1);
                        let wanted = (st.waiters.len() as u32).saturating_add(
                            self.opts.min_idle.saturating_sub(st.idle.len() as u32),
                        );
                        let retry = !permanent && !st.closed && wanted > others;
                        if !retry {
                            st.connecting -= 1;
                            remove_start(&mut st.connect_started, slot_start);
                        }
                        let failed: Vec<_> = if permanent {
                            st.waiters.drain(..).collect()
                        } else {
                            Vec::new()
                        };
                        (failed, retry)
                    };
                    for w in failed {
                        let _ = w.tx.send(Err(e.clone()));
                    }
                    if !retry {
                        return;
                    }
                    let pause = jitter(backoff);
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                    tokio::time::sleep(pause).await;
                    let now = Instant::now();
                    replace_start(
                        &mut self.state.lock().connect_started,
                        Some(slot_start),
                        now,
                    );
                    slot_start = now;
                }
            }
        }
    }

    /// Counts the dial phases a connect went through; their total.
    fn record_dial(&self, timings: Option<&PhaseTimings>) -> Duration {
        let Some(t) = timings else {
            return Duration::ZERO;
        };
        let mut total = Duration::ZERO;
        for (phase, h) in [
            (t.dns, &self.metrics.dial_dns),
            (t.connect, &self.metrics.dial_tcp),
            (t.tls, &self.metrics.dial_tls),
        ] {
            if let Some(d) = phase {
                h.record(d);
                total += d;
            }
        }
        total
    }

    /// A new connection: to the oldest waiter, else idle.
    fn deliver_new(self: &Arc<Self>, raw: M::Connection, slot_start: Instant) {
        let now = Instant::now();
        let mut st = self.state.lock();
        st.connecting -= 1;
        remove_start(&mut st.connect_started, slot_start);
        st.counters.connects += 1;
        let id = st.next_id;
        st.next_id += 1;
        let expires = self
            .opts
            .max_lifetime
            .map(|life| now + life.mul_f64(1.0 - LIFETIME_JITTER * random_unit()));
        let conn = Conn {
            raw: Box::new(raw),
            id,
            created: now,
            expires,
            last_used: now,
        };
        st.open += 1;
        if st.closed {
            st.open -= 1;
            drop(st);
            self.close_conn(conn, CloseReason::PoolClosed);
            return;
        }
        st.in_use += 1;
        self.hand_over(st, conn);
    }

    /// Gives a usable connection (counted in `in_use`) to the oldest live
    /// waiter, or puts it idle, or closes it above `max_idle`.
    fn hand_over(
        self: &Arc<Self>,
        mut st: parking_lot::MutexGuard<'_, State<M::Connection>>,
        mut conn: Conn<M::Connection>,
    ) {
        if st.closed {
            st.in_use -= 1;
            st.open -= 1;
            drop(st);
            self.close_conn(conn, CloseReason::PoolClosed);
            return;
        }
        while let Some(w) = st.waiters.pop_front() {
            match w.tx.send(Ok(conn)) {
                Ok(()) => return,
                // That waiter gave up between its timeout and our send.
                Err(Ok(back)) => conn = back,
                Err(Err(_)) => return,
            }
        }
        st.in_use -= 1;
        if st.idle.len() as u32 >= self.opts.max_idle {
            st.open -= 1;
            st.counters.closed_max_idle += 1;
            drop(st);
            self.close_conn(conn, CloseReason::MaxIdle);
            return;
        }
        // Callers set `last_used` when the connection came back.
        st.idle.push(conn);
    }

    /// Hands out a connection the acquire has taken: the counters, the
    /// lease and the event.
    fn checked_out(
        self: &Arc<Self>,
        conn: Conn<M::Connection>,
        (acquired, acquired_ns): (Instant, u64),
        wait: Duration,
        waited: bool,
        label: Option<&str>,
    ) -> Pooled<M> {
        self.hot.acquire_count.fetch_add(1, Ordering::Relaxed);
        if waited {
            self.hot.wait_count.fetch_add(1, Ordering::Relaxed);
            self.hot
                .wait_nanos
                .fetch_add(wait.as_nanos() as u64, Ordering::Relaxed);
        }
        self.metrics.wait_time.record(wait);
        let lease = self.lease(label);
        self.emit(|| Event::Acquire { wait, label });
        Pooled {
            conn: Some(conn),
            inner: self.clone(),
            acquired,
            acquired_ns,
            lease,
        }
    }

    /// The checks of an idle connection that need no I/O: lifetime, idle
    /// time, the liveness probe. `None`: it was discarded, try another;
    /// otherwise the connection and whether it is due a ping.
    fn check_idle(
        self: &Arc<Self>,
        mut conn: Conn<M::Connection>,
        now: Instant,
    ) -> Option<(Conn<M::Connection>, bool)> {
        if conn.expires.is_some_and(|t| now >= t) {
            self.discard(conn, CloseReason::MaxLifetime);
            return None;
        }
        let idle_for = now.saturating_duration_since(conn.last_used);
        if self.max_idle_time().is_some_and(|t| idle_for >= t) {
            self.discard(conn, CloseReason::MaxIdleTime);
            return None;
        }
        if self.manager.probe(&mut conn.raw) == Liveness::Dead {
            self.discard(conn, CloseReason::Dead);
            return None;
        }
        Some((conn, idle_for >= self.opts.ping_after))
    }

    /// Pings a connection idle longer than `ping_after` before handing it
    /// out. `Err(None)`: it was discarded, try another; `Err(Some)`: give up.
    async fn ping_out(
        self: &Arc<Self>,
        conn: Conn<M::Connection>,
        begun: &mut Option<Begun>,
        caller: Option<Deadline>,
        cancel: Option<&CancelToken>,
    ) -> std::result::Result<Conn<M::Connection>, Option<Error>> {
        let Begun { at: start, limit } =
            *begun.get_or_insert_with(|| Begun::new(&self.opts, caller));
        let ping_limit = Deadline::earliest(
            Deadline::from_option("ping_timeout", self.opts.ping_timeout),
            limit,
        );
        // If the caller drops the acquire during the ping, the guard
        // closes the connection and frees its slot.
        let mut held = Held {
            inner: self,
            conn: Some(conn),
        };
        let Some(c) = held.conn.as_mut() else {
            return Err(None);
        };
        let outcome =
            deadline::run_until(limit, cancel, self.manager.ping(&mut c.raw, ping_limit)).await;
        let Some(conn) = held.conn.take() else {
            return Err(None);
        };
        match outcome {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(_)) => {
                self.discard(conn, CloseReason::Broken);
                Err(None)
            }
            Err(Stop::Cancelled) => {
                self.discard(conn, CloseReason::Broken);
                self.state.lock().counters.acquire_cancelled += 1;
                Err(Some(acquire_cancelled(start)))
            }
            Err(Stop::Deadline(d)) => {
                // The acquire deadline passed mid-ping: the session's
                // state is unknown, so it goes.
                self.discard(conn, CloseReason::Broken);
                let mut st = self.state.lock();
                st.counters.acquire_timeouts += 1;
                let e = self.timeout_error(&st, d, d.limit().value);
                drop(st);
                self.emit(|| Event::AcquireTimeout { error: &e });
                Err(Some(e))
            }
        }
    }

    /// Closes a checked-out connection and lets waiters get a new one.
    fn discard(self: &Arc<Self>, conn: Conn<M::Connection>, reason: CloseReason) {
        let spawn = {
            let mut st = self.state.lock();
            st.in_use -= 1;
            st.open -= 1;
            count_close(&mut st.counters, reason);
            self.reserve_connects(&mut st)
        };
        for _ in 0..spawn {
            self.spawn_connect();
        }
        self.close_conn(conn, reason);
    }

    fn close_conn(self: &Arc<Self>, conn: Conn<M::Connection>, reason: CloseReason) {
        let age = conn.created.elapsed();
        self.emit(|| Event::Close { reason, age });
        let inner = self.clone();
        self.handle
            .spawn(async move { inner.manager.close(*conn.raw).await });
    }

    /// Removes waiter `id`; if a releaser already took it off the queue, the
    /// connection it sent is in `rx` and goes to the next waiter or idle.
    fn abandon(self: &Arc<Self>, id: u64, rx: &mut oneshot::Receiver<Delivery<M::Connection>>) {
        let st = self.state.lock();
        let mut st = st;
        if let Some(pos) = st.waiters.iter().position(|w| w.id == id) {
            st.waiters.remove(pos);
            return;
        }
        // Senders of connections hold the lock while sending, so by now any
        // connection meant for us is in the channel.
        if let Ok(Ok(conn)) = rx.try_recv() {
            self.hand_over(st, conn);
        }
    }

    /// A waiter reached its deadline `d` (already taken off the queue).
    fn timed_out(self: &Arc<Self>, d: Deadline, start: Instant) -> Error {
        let mut st = self.state.lock();
        st.counters.acquire_timeouts += 1;
        let e = self.timeout_error(&st, d, start.elapsed());
        drop(st);
        self.emit(|| Event::AcquireTimeout { error: &e });
        e
    }

    fn timeout_error(&self, st: &State<M::Connection>, d: Deadline, waited: Duration) -> Error {
        let o = &self.opts;
        let mut cause = format!(
            "{}/{} open, {} in use, {} idle, {} waiting",
            st.open,
            o.max_open,
            st.in_use,
            st.idle.len(),
            st.waiters.len()
        );
        if let Some(oldest) = st.connect_started.iter().min() {
            cause.push_str(&format!(
                "; {} connect{} in progress for {:.2}s",
                st.connecting,
                if st.connecting == 1 { "" } else { "s" },
                oldest.elapsed().as_secs_f64()
            ));
        }
        let last_error = st.last_connect_error.clone();
        let hint = if let Some(last) = &st.last_connect_error {
            cause.push_str(&format!("; last connect error: {last}"));
            "the database cannot be reached: see the last connect error"
        } else if d.is_caller() {
            "the caller's deadline passed while waiting for a connection"
        } else {
            "every connection is in use: raise max_open or acquire_timeout, or look for connections held too long (leak_threshold)"
        };
        let e = Error::new(Code::AcquireTimeout, "no connection available")
            .with_limit(d.limit())
            .with_elapsed(waited)
            .with_cause(cause)
            .with_hint(hint);
        match last_error {
            // The caller can read the connect error's own code from the chain.
            Some(last) => e.with_source(last),
            None => e,
        }
    }

    /// Takes back a connection from a [`Pooled`]. Never blocks on I/O.
    fn release(
        self: &Arc<Self>,
        mut conn: Conn<M::Connection>,
        acquired_ns: u64,
        lease: Option<usize>,
    ) {
        let (now, now_ns) = self.clock.now_ns();
        let held_ns = now_ns.saturating_sub(acquired_ns);
        self.metrics.use_time.record_nanos(held_ns);
        self.emit(|| Event::Release {
            held: Duration::from_nanos(held_ns),
        });
        let verdict = if conn.expires.is_some_and(|t| now >= t) {
            Err(CloseReason::MaxLifetime)
        } else {
            Ok(self.manager.release_state(&mut conn.raw))
        };
        let mut st = self.state.lock();
        if let Some(slot) = lease {
            st.leases[slot] = None;
            st.free_leases.push(slot);
        }
        match verdict {
            Ok(ReleaseState::Clean) => {
                conn.last_used = now;
                self.hand_over(st, conn);
            }
            Ok(ReleaseState::NeedsReset) if !st.closed => {
                drop(st);
                let inner = self.clone();
                self.handle.spawn(async move {
                    match inner.manager.reset(&mut conn.raw).await {
                        Ok(())
                            if inner.manager.release_state(&mut conn.raw)
                                == ReleaseState::Clean =>
                        {
                            conn.last_used = Instant::now();
                            let st = inner.state.lock();
                            inner.hand_over(st, conn);
                        }
                        _ => inner.discard(conn, CloseReason::Broken),
                    }
                });
            }
            Ok(_) => {
                drop(st);
                self.discard(conn, CloseReason::Broken);
            }
            Err(reason) => {
                drop(st);
                self.discard(conn, reason);
            }
        }
    }

    fn lease(&self, label: Option<&str>) -> Option<usize> {
        if !self.track_leases {
            return None;
        }
        let lease = Lease {
            since: Instant::now(),
            label: label.map(Arc::from),
            reported: false,
        };
        let mut st = self.state.lock();
        Some(match st.free_leases.pop() {
            Some(slot) => {
                st.leases[slot] = Some(lease);
                slot
            }
            None => {
                st.leases.push(Some(lease));
                st.leases.len() - 1
            }
        })
    }

    fn start_maintenance(self: &Arc<Self>) {
        let health = self.opts.health_check_period;
        let leak_tick = self.opts.leak_threshold.map(|t| (t / 4).max(MIN_LEAK_TICK));
        let tick = match (health, leak_tick) {
            (Some(h), Some(l)) => h.min(l),
            (Some(h), None) => h,
            (None, Some(l)) => l,
            (None, None) => return,
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        self.handle.spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Compare scheduled instants, not wake-ups: a wake-up a moment
            // early would otherwise skip a whole period.
            let mut last_health = interval.tick().await;
            loop {
                let at = interval.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.state.lock().closed {
                    return;
                }
                if inner.track_leases {
                    inner.sweep_leaks();
                }
                if let Some(h) = health {
                    if at.duration_since(last_health) >= h {
                        last_health = at;
                        inner.sweep_idle();
                        inner.refill();
                    }
                }
            }
        });
    }

    /// Closes idle connections past their lifetime or idle time, dead ones,
    /// and any above `max_idle`.
    fn sweep_idle(self: &Arc<Self>) {
        let now = Instant::now();
        let mut closing = Vec::new();
        {
            let mut st = self.state.lock();
            let idle = std::mem::take(&mut st.idle);
            let mut keep = Vec::with_capacity(idle.len());
            for mut conn in idle {
                let reason = if conn.expires.is_some_and(|t| now >= t) {
                    Some(CloseReason::MaxLifetime)
                } else if self
                    .max_idle_time()
                    .is_some_and(|t| now.saturating_duration_since(conn.last_used) >= t)
                {
                    Some(CloseReason::MaxIdleTime)
                } else if self.manager.probe(&mut conn.raw) == Liveness::Dead {
                    Some(CloseReason::Dead)
                } else {
                    None
                };
                match reason {
                    Some(r) => closing.push((conn, r)),
                    None => keep.push(conn),
                }
            }
            // Above max_idle, the least recently used go first.
            while keep.len() as u32 > self.opts.max_idle {
                let conn = keep.remove(0);
                closing.push((conn, CloseReason::MaxIdle));
            }
            st.idle = keep;
            st.open -= closing.len() as u32;
            for (_, r) in &closing {
                count_close(&mut st.counters, *r);
            }
        }
        for (conn, r) in closing {
            self.close_conn(conn, r);
        }
    }

    fn sweep_leaks(&self) {
        let Some(threshold) = self.opts.leak_threshold else {
            return;
        };
        let mut found: Vec<(Duration, Option<Arc<str>>)> = Vec::new();
        {
            let mut st = self.state.lock();
            let mut n = 0;
            for lease in st.leases.iter_mut().flatten() {
                let held = lease.since.elapsed();
                if !lease.reported && held >= threshold {
                    lease.reported = true;
                    n += 1;
                    found.push((held, lease.label.clone()));
                }
            }
            st.counters.leaks += n;
        }
        for (held, label) in found {
            self.emit(|| Event::Leak {
                held,
                label: label.as_deref(),
            });
        }
    }
}

fn count_close(c: &mut Counters, reason: CloseReason) {
    match reason {
        CloseReason::MaxLifetime => c.closed_max_lifetime += 1,
        CloseReason::MaxIdleTime => c.closed_max_idle_time += 1,
        CloseReason::MaxIdle => c.closed_max_idle += 1,
        CloseReason::Dead => c.closed_dead += 1,
        CloseReason::Broken => c.closed_broken += 1,
        CloseReason::PoolClosed => {}
    }
}

/// Replaces the start time `old` (or adds one) with `new`.
fn replace_start(starts: &mut Vec<Instant>, old: Option<Instant>, new: Instant) {
    if let Some(old) = old {
        remove_start(starts, old);
    }
    starts.push(new);
}

fn remove_start(starts: &mut Vec<Instant>, start: Instant) {
    if let Some(pos) = starts.iter().position(|s| *s == start) {
        starts.swap_remove(pos);
    }
}

fn bump(counts: &mut Vec<(Code, u64)>, code: Code) {
    match counts.iter_mut().find(|(c, _)| *c == code) {
        Some((_, n)) => *n += 1,
        None => counts.push((code, 1)),
    }
}

/// A uniform number in [0, 1) from a per-thread xorshift generator; jitter
/// needs spread, not cryptographic quality.
fn random_unit() -> f64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(std::process::id() as u64);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// "Full jitter" backoff: a random pause between half and all of `base`.
fn jitter(base: Duration) -> Duration {
    base.mul_f64(0.5 + 0.5 * random_unit())
}

impl<M: Manager> Pooled<M> {
    /// How long this connection has been checked out.
    pub fn held(&self) -> Duration {
        self.acquired.elapsed()
    }

    /// Closes the connection instead of returning it (the caller knows it is
    /// broken).
    pub fn discard(mut self) {
        if let Some(conn) = self.conn.take() {
            self.inner.discard(conn, CloseReason::Broken);
        }
        if let Some(slot) = self.lease.take() {
            let mut st = self.inner.state.lock();
            st.leases[slot] = None;
            st.free_leases.push(slot);
        }
    }

    /// The pool-wide id of this connection (stable for its life).
    pub fn id(&self) -> u64 {
        self.conn.as_ref().map_or(0, |c| c.id)
    }
}

impl<M: Manager> Deref for Pooled<M> {
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        // Present until drop or discard, which consume the guard.
        match &self.conn {
            Some(c) => &c.raw,
            None => unreachable!("a Pooled always holds its connection until dropped"),
        }
    }
}

impl<M: Manager> DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        match &mut self.conn {
            Some(c) => &mut c.raw,
            None => unreachable!("a Pooled always holds its connection until dropped"),
        }
    }
}

impl<M: Manager> Drop for Pooled<M> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.inner
                .release(conn, self.acquired_ns, self.lease.take());
        }
    }
}

impl<M: Manager> std::fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.stats();
        write!(
            f,
            "Pool {{ open: {}/{}, in_use: {}, idle: {}, waiting: {}, acquire_timeout: {} }}",
            s.open,
            s.max_open,
            s.in_use,
            s.idle,
            s.waiting,
            self.inner
                .opts
                .acquire_timeout
                .map_or("off".into(), fmt_duration)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32};

    /// In-memory connections: enough to check the bookkeeping; the real
    /// socket behaviour is tested in tests/pool.rs.
    #[derive(Default)]
    struct Fake {
        fail: Mutex<Option<Error>>,
        connects: AtomicU32,
        closes: AtomicU32,
        dead: AtomicBool,
        delay: Mutex<Duration>,
    }

    struct FakeConn {
        dirty: bool,
    }

    impl Manager for Arc<Fake> {
        type Connection = FakeConn;
        async fn connect(&self) -> Result<FakeConn> {
            let delay = *self.delay.lock();
            tokio::time::sleep(delay).await;
            if let Some(e) = self.fail.lock().clone() {
                return Err(e);
            }
            self.connects.fetch_add(1, Ordering::SeqCst);
            Ok(FakeConn { dirty: false })
        }
        fn probe(&self, _: &mut FakeConn) -> Liveness {
            if self.dead.load(Ordering::SeqCst) {
                Liveness::Dead
            } else {
                Liveness::Alive
            }
        }
        async fn ping(&self, _: &mut FakeConn, _: Option<Deadline>) -> Result<()> {
            Ok(())
        }
        fn release_state(&self, c: &mut FakeConn) -> ReleaseState {
            if c.dirty {
                ReleaseState::NeedsReset
            } else {
                ReleaseState::Clean
            }
        }
        async fn reset(&self, c: &mut FakeConn) -> Result<()> {
            c.dirty = false;
            Ok(())
        }
        async fn close(&self, _: FakeConn) {
            self.closes.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn opts(max_open: u32, acquire_ms: u64) -> PoolOptions {
        let mut c = crate::Config::parse(&format!(
            "tcp://127.0.0.1:1?max_open={max_open}&acquire_timeout={acquire_ms}ms&health_check_period=0"
        ))
        .expect("url");
        c.validate().expect("valid");
        c.pool
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exhaustion_times_out_with_numbers() {
        let fake = Arc::new(Fake::default());
        let pool = Pool::new(fake.clone(), opts(2, 200)).expect("pool");
        let a = pool.acquire(None).await.expect("a");
        let b = pool.acquire(None).await.expect("b");
        let start = Instant::now();
        let e = pool.acquire(None).await.map(|_| ()).expect_err("exhausted");
        let waited = start.elapsed();
        assert_eq!(e.code(), Code::AcquireTimeout);
        assert_eq!(e.layer(), Layer::Pool);
        assert_eq!(e.limit(), Some("acquire_timeout"));
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_millis(300));
        let text = e.to_string();
        assert!(
            text.contains("2/2 open, 2 in use, 0 idle, 0 waiting"),
            "{text}"
        );
        let e = pool
            .acquire(Some(Deadline::caller(Duration::from_millis(50))))
            .await
            .map(|_| ())
            .expect_err("exhausted");
        assert_eq!(e.limit(), Some("deadline"));
        drop((a, b));
        let s = pool.stats();
        assert_eq!((s.open, s.idle, s.in_use, s.acquire_timeouts), (2, 2, 0, 2));
        assert_eq!(fake.connects.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn released_connection_goes_to_the_oldest_waiter() {
        let fake = Arc::new(Fake::default());
        let pool = Pool::new(fake.clone(), opts(1, 2000)).expect("pool");
        let held = pool.acquire(None).await.expect("held");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let pool = pool.clone();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let c = pool.acquire(None).await.expect("served");
                order.lock().push(i);
                tokio::time::sleep(Duration::from_millis(2)).await;
                drop(c);
            }));
            // Let each waiter queue before the next.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(held);
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(*order.lock(), vec![0, 1, 2, 3, 4]);
        assert_eq!(fake.connects.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn permanent_failure_reaches_waiters_at_once() {
        let fake = Arc::new(Fake::default());
        *fake.fail.lock() = Some(
            Error::new(Code::AuthFailed, "password authentication failed").with_retryable(false),
        );
        *fake.delay.lock() = Duration::from_millis(20);
        let pool = Pool::new(fake.clone(), opts(2, 5000)).expect("pool");
        let start = Instant::now();
        let e = pool.acquire(None).await.map(|_| ()).expect_err("auth");
        assert_eq!(e.code(), Code::AuthFailed);
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(pool.stats().connect_failures_of(Code::AuthFailed), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transient_failure_retries_and_names_the_last_error() {
        let fake = Arc::new(Fake::default());
        *fake.fail.lock() = Some(Error::new(
            Code::ConnectionRefused,
            "connect to 127.0.0.1:1 refused",
        ));
        let pool = Pool::new(fake.clone(), opts(2, 400)).expect("pool");
        let e = pool.acquire(None).await.map(|_| ()).expect_err("refused");
        assert_eq!(e.code(), Code::AcquireTimeout);
        assert!(
            e.to_string()
                .contains("last connect error: dial: connect to 127.0.0.1:1 refused"),
            "{e}"
        );
        assert!(
            pool.stats().connect_failures_of(Code::ConnectionRefused) >= 2,
            "retried"
        );
        // The server comes back: the next acquire gets through.
        *fake.fail.lock() = None;
        pool.acquire(None).await.expect("recovered");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dead_idle_connections_are_never_handed_out() {
        let fake = Arc::new(Fake::default());
        let pool = Pool::new(fake.clone(), opts(2, 1000)).expect("pool");
        drop(pool.acquire(None).await.expect("first"));
        fake.dead.store(true, Ordering::SeqCst);
        let c = pool.acquire(None).await;
        // The fresh connection is not probed (it was just made); the idle
        // one was discarded.
        assert!(c.is_ok());
        assert_eq!(pool.stats().closed_dead, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dirty_connections_are_reset_and_close_is_final() {
        let fake = Arc::new(Fake::default());
        let pool = Pool::new(fake.clone(), opts(1, 1000)).expect("pool");
        let mut c = pool.acquire(None).await.expect("c");
        c.dirty = true;
        drop(c);
        let c = pool.acquire(None).await.expect("after reset");
        assert!(!c.dirty);
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.acquire(None).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        pool.close();
        pool.close();
        let e = waiter.await.expect("task").expect_err("closed");
        assert_eq!(e.code(), Code::PoolClosed);
        drop(c);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(fake.closes.load(Ordering::SeqCst), 1);
        let s = pool.stats();
        assert_eq!((s.open, s.in_use, s.idle), (0, 0, 0));
        assert_eq!(
            pool.acquire(None)
                .await
                .map(|_| ())
                .expect_err("closed")
                .code(),
            Code::PoolClosed
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_count_connects_waits_and_uses() {
        let fake = Arc::new(Fake::default());
        *fake.delay.lock() = Duration::from_millis(20);
        let pool = Pool::new(fake.clone(), opts(1, 2000)).expect("pool");
        // The first acquire waits for the connect; the second finds it idle.
        drop(pool.acquire(None).await.expect("first"));
        drop(pool.acquire(None).await.expect("idle"));
        let m = pool.metrics();
        assert_eq!(m.create_time.count(), 1);
        assert!(m.create_time.sum >= Duration::from_millis(20), "{m:?}");
        assert_eq!(m.wait_time.count(), 2);
        assert_eq!(m.wait_time.buckets[0], 1, "the idle checkout waited 0");
        assert!(m.wait_time.sum >= Duration::from_millis(20), "{m:?}");
        assert_eq!(m.use_time.count(), 2);
        // This manager reports no dial phases, so no login time either.
        assert_eq!((m.dial_tcp.count(), m.login.count()), (0, 0));
        assert_eq!((m.stats.max_idle, m.stats.min_idle), (1, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_acquires_lose_nothing() {
        let fake = Arc::new(Fake::default());
        let pool = Pool::new(fake.clone(), opts(1, 5000)).expect("pool");
        for _ in 0..200 {
            let held = pool.acquire(None).await.expect("held");
            let p2 = pool.clone();
            let t = tokio::spawn(async move { p2.acquire(None).await.map(|_| ()) });
            tokio::task::yield_now().await;
            drop(held);
            t.abort();
            let _ = t.await;
        }
        let c = tokio::time::timeout(Duration::from_secs(1), pool.acquire(None))
            .await
            .expect("not lost")
            .expect("ok");
        drop(c);
        let s = pool.stats();
        assert_eq!((s.open, s.in_use, s.waiting), (1, 0, 0), "{s:?}");
    }
}
