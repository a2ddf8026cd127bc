//! What the pool counts and what it tells subscribers.

use std::time::Duration;

use crate::dial::PhaseTimings;
use crate::error::{Code, Error};

/// A snapshot of the pool: a superset of Go's `DBStats` and pgxpool's `Stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// The `max_open` limit.
    pub max_open: u32,
    /// The `max_idle` limit.
    pub max_idle: u32,
    /// The `min_idle` setting.
    pub min_idle: u32,
    /// Established connections, idle plus in use.
    pub open: u32,
    /// Connections handed out (including those being cleaned after release).
    pub in_use: u32,
    /// Connections waiting in the pool.
    pub idle: u32,
    /// Callers waiting for a connection now.
    pub waiting: u32,
    /// Connects in progress.
    pub connecting: u32,
    /// Acquires that had to wait (no idle connection at once).
    pub wait_count: u64,
    /// Total time acquires spent waiting.
    pub wait_duration_total: Duration,
    /// Successful acquires.
    pub acquire_count: u64,
    /// Acquires that failed with ACQUIRE_TIMEOUT.
    pub acquire_timeouts: u64,
    /// Acquires abandoned by the caller (future dropped) while waiting.
    pub acquire_cancelled: u64,
    /// Connections opened.
    pub connects: u64,
    /// Failed connects, by error code (`DP_*` name, count), in code order.
    pub connect_failures: Vec<(Code, u64)>,
    /// Closed because they reached their (jittered) `max_lifetime`.
    pub closed_max_lifetime: u64,
    /// Closed because they were idle longer than `max_idle_time`.
    pub closed_max_idle_time: u64,
    /// Closed on release because `max_idle` connections were already idle.
    pub closed_max_idle: u64,
    /// Found closed by the server or a proxy (liveness probe) and discarded.
    pub closed_dead: u64,
    /// Closed because they were unusable: failed ping, failed reset, broken
    /// protocol state, or discarded by the caller.
    pub closed_broken: u64,
    /// Connections held longer than `leak_threshold`.
    pub leaks: u64,
    /// The `max_idle_time` in force: the configured one, or lower when the
    /// server's idle cut required it.
    pub max_idle_time: Option<Duration>,
    /// The server's idle cut, once read (idle_session_timeout, wait_timeout).
    pub server_idle_limit: Option<Duration>,
}

impl Stats {
    /// Failed connects with `code`.
    pub fn connect_failures_of(&self, code: Code) -> u64 {
        self.connect_failures
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(0, |(_, n)| *n)
    }
}

/// Why the pool closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    MaxLifetime,
    MaxIdleTime,
    MaxIdle,
    /// The liveness probe found the peer gone.
    Dead,
    /// Failed ping or reset, broken state, or discarded by its user.
    Broken,
    /// The pool was closed.
    PoolClosed,
}

impl CloseReason {
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::MaxLifetime => "max_lifetime",
            CloseReason::MaxIdleTime => "max_idle_time",
            CloseReason::MaxIdle => "max_idle",
            CloseReason::Dead => "dead",
            CloseReason::Broken => "broken",
            CloseReason::PoolClosed => "pool_closed",
        }
    }
}

/// Something that happened in the pool, for metrics and tracing.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A connect began.
    ConnectStart,
    /// A connect ended; `timings` holds the dial phases when the manager
    /// reports them.
    ConnectEnd {
        elapsed: Duration,
        result: Result<(), &'a Error>,
        timings: Option<PhaseTimings>,
    },
    /// A caller got a connection after waiting `wait`.
    Acquire {
        wait: Duration,
        label: Option<&'a str>,
    },
    /// A caller gave its connection back after holding it `held`.
    Release { held: Duration },
    /// A connection was closed.
    Close { reason: CloseReason, age: Duration },
    /// A caller's acquire timed out.
    AcquireTimeout { error: &'a Error },
    /// A connection has been held longer than `leak_threshold`.
    Leak {
        held: Duration,
        label: Option<&'a str>,
    },
    /// A setting was adjusted to what the server allows (e.g. max_idle_time
    /// kept below the server's idle cut).
    Adjusted {
        option: &'static str,
        from: Option<Duration>,
        to: Duration,
        why: &'a str,
    },
}

impl Event<'_> {
    /// The event's name, the same in every binding: `connect_start`,
    /// `connect` (succeeded or failed), `acquire`, `release`, `close`,
    /// `acquire_timeout`, `leak`, `adjusted`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Event::ConnectStart => "connect_start",
            Event::ConnectEnd { .. } => "connect",
            Event::Acquire { .. } => "acquire",
            Event::Release { .. } => "release",
            Event::Close { .. } => "close",
            Event::AcquireTimeout { .. } => "acquire_timeout",
            Event::Leak { .. } => "leak",
            Event::Adjusted { .. } => "adjusted",
        }
    }
}

/// Receives the pool's events. Called synchronously on the thread where the
/// event happens (never under the pool's lock): keep it quick.
pub trait EventHandler: Send + Sync + 'static {
    fn event(&self, event: &Event<'_>);
}
