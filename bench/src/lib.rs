//! Shared helpers for dialpool's benchmarks: order statistics over timing
//! samples, a table and JSON rendering for them, a loopback listener that
//! accepts and drops connections (the far end of a successful dial), and
//! (Linux) a timerfd-backed deadline, the prototype of a more precise
//! `deadline::run`.
//!
//! The benchmarks themselves live in `src/bin/` (timed harnesses) and
//! `benches/` (criterion). See `bench/README.md` for the figures.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Order statistics of a set of samples, in microseconds. Samples are signed
/// because an overshoot may in principle be negative (a timer firing early).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// How many samples were summarised.
    pub count: usize,
    pub p50: i64,
    pub p90: i64,
    pub p99: i64,
    pub max: i64,
    pub min: i64,
}

impl Summary {
    /// Summarises `samples` (any order). `None` when there are none.
    pub fn of(samples: &[i64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Some(Summary {
            count: sorted.len(),
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
            min: sorted[0],
        })
    }

    /// The statistics in table order: p50, p90, p99, max, min.
    pub fn columns(&self) -> [i64; 5] {
        [self.p50, self.p90, self.p99, self.max, self.min]
    }
}

/// Nearest-rank percentile of an ascending, non-empty slice: the smallest
/// sample such that at least `p` percent of the samples are at or below it.
/// With 100 samples p99 is the second largest; with 50 it is the largest.
pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `a / b`, or `None` when `b` is not positive (a ratio to zero or to a
/// negative overshoot means nothing).
pub fn ratio(a: i64, b: i64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// One labelled row of a comparison.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    /// `None` when every try of this side failed.
    pub summary: Option<Summary>,
    /// Tries that did not end the expected way (counted, not summarised).
    pub failures: usize,
}

/// Renders rows as an aligned text table under the heading `title` (what
/// and in which unit): label, p50, p90, p99, max, min, successful tries and
/// failures.
pub fn table(title: &str, rows: &[Row]) -> String {
    let width = rows
        .iter()
        .map(|r| r.label.len())
        .max()
        .unwrap_or(0)
        .max(title.len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>8}",
        title, "p50", "p90", "p99", "max", "min", "n", "failed"
    );
    for row in rows {
        let _ = write!(out, "{:<width$}", row.label);
        match &row.summary {
            Some(s) => {
                for v in s.columns() {
                    let _ = write!(out, " {v:>8}");
                }
                let _ = write!(out, " {:>6}", s.count);
            }
            None => {
                let _ = write!(
                    out,
                    " {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
                    "-", "-", "-", "-", "-", 0
                );
            }
        }
        let _ = writeln!(out, " {:>8}", row.failures);
    }
    out
}

/// A summary as a JSON object whose keys carry `unit` (`p50_us`, `p50_ns`,
/// …); hand-written, since a handful of integers needs no serialiser.
pub fn summary_json(summary: Option<&Summary>, failures: usize, unit: &str) -> String {
    match summary {
        Some(s) => format!(
            "{{\"n\":{},\"failures\":{failures},\"p50_{unit}\":{},\"p90_{unit}\":{},\"p99_{unit}\":{},\"max_{unit}\":{},\"min_{unit}\":{}}}",
            s.count, s.p50, s.p90, s.p99, s.max, s.min
        ),
        None => format!("{{\"n\":0,\"failures\":{failures}}}"),
    }
}

/// A ratio as JSON: a number with three decimals, or `null`.
pub fn ratio_json(r: Option<f64>) -> String {
    match r {
        Some(v) => format!("{v:.3}"),
        None => "null".to_string(),
    }
}

/// A JSON string literal for plain ASCII text (escapes quotes, backslashes
/// and control characters).
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A listener on 127.0.0.1 whose thread accepts every connection and drops
/// it soon after: the far end of a successful dial, costing the client
/// nothing but the handshake. The thread lives as long as the process
/// (benchmarks make one and keep it).
///
/// Three details keep tens of thousands of dials a second steady:
/// * accepted sockets are closed with SO_LINGER 0 (a reset), so neither end
///   is left in TIME_WAIT holding ephemeral ports that later connects must
///   search past;
/// * the reset is sent only once [`KEEP_ACCEPTED`] newer connections have
///   been accepted: a sequential client has then long dropped its end, so the
///   reset can never reach a connect that has not yet seen its success (it
///   would fail as ECONNRESET);
/// * the backlog is deep, so a burst while the accept thread waits for a
///   core does not overflow the queue (a dropped SYN costs a 1 s retransmit).
#[derive(Debug)]
pub struct AcceptAndDrop {
    /// Connect here.
    pub addr: SocketAddr,
}

/// The listen backlog of [`AcceptAndDrop`] (the kernel caps it at somaxconn).
pub const ACCEPT_BACKLOG: i32 = 4096;
/// How many accepted connections [`AcceptAndDrop`] holds before resetting
/// the oldest.
pub const KEEP_ACCEPTED: usize = 16;

impl AcceptAndDrop {
    /// Binds 127.0.0.1:0 and starts the accepting thread.
    pub fn start() -> io::Result<AcceptAndDrop> {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        listener.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
        listener.listen(ACCEPT_BACKLOG)?;
        let addr = listener
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener has no inet address"))?;
        let listener = TcpListener::from(listener);
        thread::Builder::new()
            .name("bench-accept-drop".into())
            .spawn(move || {
                let mut held = VecDeque::with_capacity(KEEP_ACCEPTED + 1);
                // Accept errors (e.g. a client gone before accept) are
                // harmless here: the next connection is served.
                for conn in listener.incoming().flatten() {
                    let _ = SockRef::from(&conn).set_linger(Some(Duration::ZERO));
                    held.push_back(conn);
                    if held.len() > KEEP_ACCEPTED {
                        drop(held.pop_front());
                    }
                }
            })?;
        Ok(AcceptAndDrop { addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 90.0), 90);
        assert_eq!(percentile(&v, 99.0), 99);
        let v: Vec<i64> = (1..=50).collect();
        assert_eq!(percentile(&v, 99.0), 50);
        assert_eq!(percentile(&[7], 50.0), 7);
        let s = Summary::of(&[5, -1, 3]).expect("some");
        assert_eq!((s.min, s.max, s.p50, s.count), (-1, 5, 3, 3));
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(3, 2), Some(1.5));
        assert_eq!(ratio(3, 0), None);
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(ratio_json(None), "null");
        assert_eq!(ratio_json(Some(1.0)), "1.000");
        let s = Summary::of(&[1, 2]).expect("some");
        assert_eq!(
            summary_json(Some(&s), 3, "ns"),
            "{\"n\":2,\"failures\":3,\"p50_ns\":1,\"p90_ns\":2,\"p99_ns\":2,\"max_ns\":2,\"min_ns\":1}"
        );
    }
}

/// A one-shot timer with microsecond precision, for comparison with tokio's
/// millisecond timer wheel: a Linux timerfd registered with the runtime's I/O
/// driver, so expiry wakes the driver through epoll like any readable socket.
/// A prototype of the change suggested in `bench/README.md`, not a library.
#[cfg(target_os = "linux")]
pub mod timerfd {
    use std::future::Future;
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::pin::pin;
    use std::time::{Duration, Instant};

    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// A timerfd armed once; [`Timer::expired`] resolves when it fires.
    #[derive(Debug)]
    pub struct Timer {
        fd: AsyncFd<OwnedFd>,
    }

    impl Timer {
        /// Arms a CLOCK_MONOTONIC timer `after` from now. Must be called
        /// inside a tokio runtime with I/O enabled.
        pub fn after(after: Duration) -> io::Result<Timer> {
            // SAFETY: plain syscall; the result is checked.
            let raw = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // A zero it_value would disarm the timer; one nanosecond fires at once.
            let after = after.max(Duration::from_nanos(1));
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: after.as_secs() as libc::time_t,
                    tv_nsec: after.subsec_nanos() as libc::c_long,
                },
            };
            // SAFETY: a valid timerfd and a valid itimerspec; no old value.
            let rc = unsafe {
                libc::timerfd_settime(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    0,
                    &spec,
                    std::ptr::null_mut(),
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a valid timerfd owned by the AsyncFd from here
            // on; nothing else closes or replaces it.
            let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
            Ok(Timer { fd })
        }

        /// Resolves once the timer has fired.
        pub async fn expired(&self) -> io::Result<()> {
            let _ready = self.fd.readable().await?;
            Ok(())
        }
    }

    /// How long before the deadline [`run`] hands over from tokio's timer
    /// wheel to a timerfd (tokio fires up to ~2 ms late, never early).
    pub const COARSE_MARGIN: Duration = Duration::from_millis(2);

    /// Runs `fut` until it finishes (`Some`) or `deadline` passes (`None`):
    /// tokio's timer until [`COARSE_MARGIN`] before the deadline, so most
    /// futures, which finish long before, cost no more than today; then a
    /// timerfd for the rest. Falls back to tokio's timer if no timerfd can
    /// be made. The prototype of the change to `deadline::run` suggested in
    /// `bench/README.md`.
    pub async fn run<F: Future>(deadline: Instant, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        if let Some(early) = deadline.checked_sub(COARSE_MARGIN) {
            tokio::select! {
                biased;
                out = &mut fut => return Some(out),
                _ = tokio::time::sleep_until(early.into()) => {}
            }
        }
        match Timer::after(deadline.saturating_duration_since(Instant::now())) {
            Ok(timer) => tokio::select! {
                biased;
                out = fut => Some(out),
                _ = timer.expired() => None,
            },
            Err(_) => tokio::time::timeout_at(deadline.into(), fut).await.ok(),
        }
    }
}
