//! The pool's latency histograms, and its numbers in the Prometheus text
//! exposition format under the OpenTelemetry database-client names.
//!
//! Recording is on the hot path (every acquire, release and statement), so
//! a histogram is a fixed array of atomic counters: one relaxed add for the
//! bucket and one for the sum, no lock, no allocation. Rendering happens at
//! scrape time and may allocate.
//!
//! Names follow the OpenTelemetry semantic conventions for database clients
//! (`db.client.connection.*`, `db.client.operation.duration`) and are
//! written as the OpenTelemetry Prometheus exporter writes them: dots become
//! underscores, the unit `s` becomes a `_seconds` suffix, a `{connection}`
//! style unit is dropped, counters end in `_total`, up-down counters become
//! gauges, attributes become labels with dots turned into underscores
//! (`db.client.connection.pool.name` → `db_client_connection_pool_name`).
//! What the conventions do not name — the dial phases, the login, the
//! server-side cancel, connects and closes by cause — is `dialpool_*`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Code, Error};

use super::Stats;

/// Upper bounds of the histogram buckets, in seconds, as Prometheus `le`
/// labels. One set for every histogram, so they can be compared: it holds
/// every bound the conventions advise for `db.client.operation.duration`
/// (1 ms to 10 s) plus finer ones below a millisecond, where a pooled
/// checkout and a loopback query live, and coarser ones up to a minute.
pub const BUCKET_BOUNDS: [&str; 18] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "10", "30", "60",
];

/// The same bounds in nanoseconds, for recording.
const BOUND_NANOS: [u64; 18] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// Buckets including the last, unbounded one (`le="+Inf"`).
pub const BUCKETS: usize = BUCKET_BOUNDS.len() + 1;

/// A latency histogram with fixed buckets.
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is above every bound.
    counts: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS],
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    #[inline]
    pub fn record(&self, d: Duration) {
        self.record_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Counts one observation of `ns` nanoseconds.
    #[inline]
    pub fn record_nanos(&self, ns: u64) {
        // The first bound at or above the value (Prometheus buckets count
        // observations less than or equal to their bound). A scan from the
        // bottom: the hot path's values (a checkout, a short hold) sit in
        // the first buckets, where it beats a binary search.
        let i = BOUND_NANOS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(BOUND_NANOS.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if ns > 0 {
            self.sum_nanos.fetch_add(ns, Ordering::Relaxed);
        }
    }

    /// The counts as they are now. Taken without a lock, so an observation
    /// being recorded may be in its bucket and not yet in the sum; the
    /// count is the buckets' total, so `+Inf` always equals `_count`.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = [0u64; BUCKETS];
        for (out, c) in buckets.iter_mut().zip(&self.counts) {
            *out = c.load(Ordering::Relaxed);
        }
        HistogramSnapshot {
            buckets,
            sum: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistogramSnapshot {
    /// Observations per bucket, not cumulative: `buckets[i]` counts those
    /// above bound `i - 1` and at or below bound `i` ([`BUCKET_BOUNDS`]);
    /// the last counts those above every bound.
    pub buckets: [u64; BUCKETS],
    /// The sum of the observations.
    pub sum: Duration,
}

impl HistogramSnapshot {
    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// The statement outcomes the operation histogram tells apart: success,
/// then one per error code (by its number).
const OUTCOMES: usize = Code::ALL.len() + 1;

/// The histograms of one pool. The pool records the connection layers
/// itself; [`Metrics::record_statement`] is for whoever runs statements on
/// its connections (the client).
pub struct Metrics {
    /// Successful connects, dial and login together.
    pub(crate) create_time: Histogram,
    /// Successful acquires (0 when an idle connection was there).
    pub(crate) wait_time: Histogram,
    /// From acquire to release.
    pub(crate) use_time: Histogram,
    pub(crate) dial_dns: Histogram,
    pub(crate) dial_tcp: Histogram,
    pub(crate) dial_tls: Histogram,
    /// Startup and authentication: a successful connect's time after its
    /// dial phases.
    pub(crate) login: Histogram,
    /// Statements, by outcome (index 0: success; else the error code).
    operations: [Histogram; OUTCOMES],
    /// From a statement's deadline (or cancel) to the session being clean
    /// again or given up: the server-side cancel and the drain after it.
    cancel: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            create_time: Histogram::new(),
            wait_time: Histogram::new(),
            use_time: Histogram::new(),
            dial_dns: Histogram::new(),
            dial_tcp: Histogram::new(),
            dial_tls: Histogram::new(),
            login: Histogram::new(),
            operations: [const { Histogram::new() }; OUTCOMES],
            cancel: Histogram::new(),
        }
    }
}

impl Metrics {
    /// Counts one statement that took `elapsed` (as its caller saw it),
    /// with its outcome. A statement stopped by its deadline or a cancel
    /// also counts the time the cancel took after the stop.
    pub fn record_statement(&self, elapsed: Duration, outcome: Result<(), &Error>) {
        let slot = match outcome {
            Ok(()) => 0,
            Err(e) => e.code() as usize,
        };
        if let Some(h) = self.operations.get(slot) {
            h.record(elapsed);
        }
        if let Err(e) = outcome {
            // The error's elapsed time ends where the statement was stopped;
            // what follows until the caller got the error is the cancel.
            if matches!(e.code(), Code::QueryTimeout | Code::Cancelled) {
                if let Some(stopped_after) = e.elapsed() {
                    self.cancel.record(elapsed.saturating_sub(stopped_after));
                }
            }
        }
    }

    fn snapshot(&self, stats: Stats) -> MetricsSnapshot {
        let mut operations = Vec::new();
        for (i, h) in self.operations.iter().enumerate() {
            let s = h.snapshot();
            // Success always shows; an error code once it has happened.
            if i == 0 {
                operations.push((None, s));
            } else if s.count() > 0 {
                if let Some(code) = Code::from_u32(i as u32) {
                    operations.push((Some(code), s));
                }
            }
        }
        MetricsSnapshot {
            stats,
            create_time: self.create_time.snapshot(),
            wait_time: self.wait_time.snapshot(),
            use_time: self.use_time.snapshot(),
            dial_dns: self.dial_dns.snapshot(),
            dial_tcp: self.dial_tcp.snapshot(),
            dial_tls: self.dial_tls.snapshot(),
            login: self.login.snapshot(),
            operations,
            cancel: self.cancel.snapshot(),
        }
    }
}

impl<M: super::Manager> super::Pool<M> {
    /// The pool's numbers and histograms as they are now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot(self.stats())
    }
}

impl<M: super::Manager> super::Pooled<M> {
    /// The histograms of the pool this connection came from.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// A pool's numbers and histograms at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub stats: Stats,
    /// `db.client.connection.create_time`: successful connects.
    pub create_time: HistogramSnapshot,
    /// `db.client.connection.wait_time`: successful acquires.
    pub wait_time: HistogramSnapshot,
    /// `db.client.connection.use_time`: from acquire to release.
    pub use_time: HistogramSnapshot,
    /// The dial phases: name resolution, TCP connect, TLS handshake.
    pub dial_dns: HistogramSnapshot,
    pub dial_tcp: HistogramSnapshot,
    pub dial_tls: HistogramSnapshot,
    /// Startup and authentication.
    pub login: HistogramSnapshot,
    /// `db.client.operation.duration`: statements, by outcome (`None`:
    /// success; errors only once they have happened).
    pub operations: Vec<(Option<Code>, HistogramSnapshot)>,
    /// The server-side cancels after a deadline or a caller's cancel.
    pub cancel: HistogramSnapshot,
}

/// What identifies a pool's series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricLabels {
    /// `db.client.connection.pool.name`.
    pub pool_name: String,
    /// `db.system.name` of the statements: `postgresql`, `mysql`, `mariadb`.
    pub db_system: &'static str,
}

/// A family of one value per pool: name, help, how to read it.
type Scalar = (&'static str, &'static str, fn(&MetricsSnapshot) -> u64);
/// A histogram family of one series per pool.
type Hist = (
    &'static str,
    &'static str,
    fn(&MetricsSnapshot) -> &HistogramSnapshot,
);

/// Renders pools' metrics in the Prometheus text exposition format
/// (version 0.0.4), each family once with every pool's series in it, so
/// that several pools can be served from one scrape.
pub fn render_prometheus(pools: &[(&MetricLabels, &MetricsSnapshot)]) -> String {
    let mut out = String::with_capacity(4096 + pools.len() * 8192);
    let pool_label = |l: &MetricLabels| {
        format!(
            "db_client_connection_pool_name=\"{}\"",
            escape_label(&l.pool_name)
        )
    };

    family(
        &mut out,
        "db_client_connection_count",
        "gauge",
        "Connections open now, by state: idle in the pool or used by a caller.",
    );
    for (l, m) in pools {
        let p = pool_label(l);
        for (state, n) in [("idle", m.stats.idle), ("used", m.stats.in_use)] {
            let _ = writeln!(
                out,
                "db_client_connection_count{{{p},db_client_connection_state=\"{state}\"}} {n}"
            );
        }
    }
    let gauges: [Scalar; 5] = [
        (
            "db_client_connection_idle_max",
            "The most idle connections the pool keeps (max_idle).",
            |m| m.stats.max_idle.into(),
        ),
        (
            "db_client_connection_idle_min",
            "The idle connections the pool keeps ready (min_idle).",
            |m| m.stats.min_idle.into(),
        ),
        (
            "db_client_connection_max",
            "The most connections the pool opens (max_open).",
            |m| m.stats.max_open.into(),
        ),
        (
            "db_client_connection_pending_requests",
            "Callers waiting for a connection now.",
            |m| m.stats.waiting.into(),
        ),
        (
            "dialpool_connection_connecting",
            "Connects in progress.",
            |m| m.stats.connecting.into(),
        ),
    ];
    for (name, help, value) in gauges {
        family(&mut out, name, "gauge", help);
        for (l, m) in pools {
            let _ = writeln!(out, "{name}{{{}}} {}", pool_label(l), value(m));
        }
    }

    let counters: [Scalar; 4] = [
        (
            "db_client_connection_timeouts_total",
            "Acquires that ended with ACQUIRE_TIMEOUT (acquire_timeout or the caller's deadline).",
            |m| m.stats.acquire_timeouts,
        ),
        (
            "dialpool_acquire_cancelled_total",
            "Acquires abandoned by their caller while waiting.",
            |m| m.stats.acquire_cancelled,
        ),
        (
            "dialpool_connection_connects_total",
            "Connections opened.",
            |m| m.stats.connects,
        ),
        (
            "dialpool_connection_leaks_total",
            "Connections held longer than leak_threshold.",
            |m| m.stats.leaks,
        ),
    ];
    for (name, help, value) in counters {
        family(&mut out, name, "counter", help);
        for (l, m) in pools {
            let _ = writeln!(out, "{name}{{{}}} {}", pool_label(l), value(m));
        }
    }

    family(
        &mut out,
        "dialpool_connection_connect_failures_total",
        "counter",
        "Failed connects, by error code.",
    );
    for (l, m) in pools {
        let p = pool_label(l);
        for (code, n) in &m.stats.connect_failures {
            let _ = writeln!(
                out,
                "dialpool_connection_connect_failures_total{{{p},error_type=\"DP_{}\"}} {n}",
                code.name()
            );
        }
    }

    family(
        &mut out,
        "dialpool_connection_closed_total",
        "counter",
        "Connections the pool closed, by reason.",
    );
    for (l, m) in pools {
        let p = pool_label(l);
        let s = &m.stats;
        for (reason, n) in [
            ("max_lifetime", s.closed_max_lifetime),
            ("max_idle_time", s.closed_max_idle_time),
            ("max_idle", s.closed_max_idle),
            ("dead", s.closed_dead),
            ("broken", s.closed_broken),
        ] {
            let _ = writeln!(
                out,
                "dialpool_connection_closed_total{{{p},dialpool_close_reason=\"{reason}\"}} {n}"
            );
        }
    }

    family(
        &mut out,
        "dialpool_connection_max_idle_time_seconds",
        "gauge",
        "The max_idle_time in force (lowered below the server's idle cut when needed); 0: off.",
    );
    for (l, m) in pools {
        let secs = m.stats.max_idle_time.map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(
            out,
            "dialpool_connection_max_idle_time_seconds{{{}}} {secs}",
            pool_label(l)
        );
    }
    if pools
        .iter()
        .any(|(_, m)| m.stats.server_idle_limit.is_some())
    {
        family(
            &mut out,
            "dialpool_server_idle_limit_seconds",
            "gauge",
            "The server's own cut for idle sessions (idle_session_timeout, wait_timeout), once read.",
        );
        for (l, m) in pools {
            if let Some(d) = m.stats.server_idle_limit {
                let _ = writeln!(
                    out,
                    "dialpool_server_idle_limit_seconds{{{}}} {}",
                    pool_label(l),
                    d.as_secs_f64()
                );
            }
        }
    }

    let histograms: [Hist; 4] = [
        (
            "db_client_connection_create_time_seconds",
            "Time to open a connection: dial and login (successful connects).",
            |m| &m.create_time,
        ),
        (
            "db_client_connection_wait_time_seconds",
            "Time to obtain a connection from the pool (successful acquires; 0 when one was idle).",
            |m| &m.wait_time,
        ),
        (
            "db_client_connection_use_time_seconds",
            "Time from acquiring a connection to giving it back.",
            |m| &m.use_time,
        ),
        (
            "dialpool_login_duration_seconds",
            "Protocol startup and authentication of successful connects, after the dial.",
            |m| &m.login,
        ),
    ];
    for (name, help, get) in histograms {
        family(&mut out, name, "histogram", help);
        for (l, m) in pools {
            histogram(&mut out, name, &pool_label(l), get(m));
        }
    }

    let name = "dialpool_dial_duration_seconds";
    family(
        &mut out,
        name,
        "histogram",
        "Dial phases: name resolution (dns), TCP connect (tcp), TLS handshake (tls).",
    );
    for (l, m) in pools {
        let p = pool_label(l);
        for (phase, h) in [
            ("dns", &m.dial_dns),
            ("tcp", &m.dial_tcp),
            ("tls", &m.dial_tls),
        ] {
            histogram(
                &mut out,
                name,
                &format!("{p},dialpool_dial_phase=\"{phase}\""),
                h,
            );
        }
    }

    let name = "db_client_operation_duration_seconds";
    family(
        &mut out,
        name,
        "histogram",
        "Statements as their caller saw them, cancel included; failures by error code.",
    );
    for (l, m) in pools {
        let base = format!("{},db_system_name=\"{}\"", pool_label(l), l.db_system);
        for (code, h) in &m.operations {
            match code {
                None => histogram(&mut out, name, &base, h),
                Some(c) => histogram(
                    &mut out,
                    name,
                    &format!("{base},error_type=\"DP_{}\"", c.name()),
                    h,
                ),
            }
        }
    }

    let name = "dialpool_query_cancel_duration_seconds";
    family(
        &mut out,
        name,
        "histogram",
        "From a statement's deadline or cancel to the error: the server-side cancel and the drain after it.",
    );
    for (l, m) in pools {
        histogram(&mut out, name, &pool_label(l), &m.cancel);
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let mut cumulative = 0u64;
    for (i, n) in h.buckets.iter().enumerate() {
        cumulative += n;
        let le = BUCKET_BOUNDS.get(i).copied().unwrap_or("+Inf");
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum.as_secs_f64());
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

/// A label value as the text format wants it: backslash, double quote and
/// newline escaped.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_values_up_to_their_bound() {
        let h = Histogram::new();
        h.record(Duration::ZERO);
        h.record(Duration::from_micros(100)); // exactly on the first bound
        h.record(Duration::from_micros(101));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(3600));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[5], 1); // 2.5 ms < 3 ms <= 5 ms
        assert_eq!(s.buckets[BUCKETS - 1], 1);
        assert_eq!(s.count(), 5);
        assert_eq!(
            s.sum,
            Duration::from_micros(201) + Duration::from_millis(3) + Duration::from_secs(3600)
        );
        for (i, b) in BUCKET_BOUNDS.iter().enumerate() {
            let secs: f64 = b.parse().expect("a number");
            assert_eq!((secs * 1e9).round() as u64, BOUND_NANOS[i], "{b}");
        }
    }

    #[test]
    fn statements_count_by_outcome_and_cancels_by_what_follows_the_stop() {
        let m = Metrics::default();
        m.record_statement(Duration::from_millis(2), Ok(()));
        let timeout = Error::new(Code::QueryTimeout, "statement timed out")
            .with_elapsed(Duration::from_millis(500));
        m.record_statement(Duration::from_millis(530), Err(&timeout));
        let server = Error::new(Code::ServerError, "syntax error");
        m.record_statement(Duration::from_millis(1), Err(&server));
        let s = m.snapshot(Stats::default());
        let codes: Vec<_> = s.operations.iter().map(|(c, h)| (*c, h.count())).collect();
        assert_eq!(
            codes,
            [
                (None, 1),
                (Some(Code::QueryTimeout), 1),
                (Some(Code::ServerError), 1)
            ]
        );
        assert_eq!(s.cancel.count(), 1);
        assert_eq!(s.cancel.sum, Duration::from_millis(30));
    }

    #[test]
    fn text_has_every_family_once_with_escaped_labels() {
        let m = Metrics::default();
        m.wait_time.record(Duration::from_millis(7));
        let stats = Stats {
            max_open: 4,
            open: 3,
            in_use: 1,
            idle: 2,
            acquire_timeouts: 5,
            connect_failures: vec![(Code::ConnectionRefused, 2)],
            ..Stats::default()
        };
        let a = MetricLabels {
            pool_name: "db:5432/a\"b\\c".into(),
            db_system: "postgresql",
        };
        let b = MetricLabels {
            pool_name: "other".into(),
            db_system: "mysql",
        };
        let snap = m.snapshot(stats);
        let text = render_prometheus(&[(&a, &snap), (&b, &snap)]);
        let p = r#"db_client_connection_pool_name="db:5432/a\"b\\c""#;
        for line in [
            format!("db_client_connection_count{{{p},db_client_connection_state=\"idle\"}} 2"),
            format!("db_client_connection_count{{{p},db_client_connection_state=\"used\"}} 1"),
            format!("db_client_connection_max{{{p}}} 4"),
            format!("db_client_connection_timeouts_total{{{p}}} 5"),
            format!("dialpool_connection_connect_failures_total{{{p},error_type=\"DP_CONNECTION_REFUSED\"}} 2"),
            format!("db_client_connection_wait_time_seconds_bucket{{{p},le=\"0.005\"}} 0"),
            format!("db_client_connection_wait_time_seconds_bucket{{{p},le=\"0.01\"}} 1"),
            format!("db_client_connection_wait_time_seconds_bucket{{{p},le=\"+Inf\"}} 1"),
            format!("db_client_connection_wait_time_seconds_sum{{{p}}} 0.007"),
            format!("db_client_connection_wait_time_seconds_count{{{p}}} 1"),
            "db_client_connection_max{db_client_connection_pool_name=\"other\"} 4".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let mut unique = types.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(types.len(), unique.len(), "a family twice");
        assert!(types.contains(&"# TYPE db_client_connection_timeouts_total counter"));
        assert!(types.contains(&"# TYPE db_client_operation_duration_seconds histogram"));
        assert!(types.contains(&"# TYPE db_client_connection_pending_requests gauge"));
    }
}
