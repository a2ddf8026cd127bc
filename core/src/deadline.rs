//! Deadlines that remember where they came from.
//!
//! Each layer runs under the earlier of its own limit (`connect_timeout`, …)
//! and what is left of the caller's overall deadline. When the combined
//! deadline fires, the error must say which of the two it was, so a deadline
//! carries the name and configured value of the limit it came from.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::Limit;

/// The limit name used for the caller's own deadline.
pub const CALLER: &str = "deadline";

/// An instant plus the limit it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    limit: Limit,
}

impl Deadline {
    /// A deadline `value` from now, named after the option `name`.
    pub fn after(name: &'static str, value: Duration) -> Deadline {
        Deadline::starting_at(Instant::now(), name, value)
    }

    /// A deadline `value` after `start`, named after the option `name`.
    pub fn starting_at(start: Instant, name: &'static str, value: Duration) -> Deadline {
        Deadline {
            // A duration so large that it overflows the clock means "never"
            // in practice; saturate rather than panic.
            at: start
                .checked_add(value)
                .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 24 * 3600)),
            limit: Limit { name, value },
        }
    }

    /// A layer's limit started at `start`, if the option is set.
    pub fn starting_at_opt(
        start: Instant,
        name: &'static str,
        value: Option<Duration>,
    ) -> Option<Deadline> {
        value.map(|v| Deadline::starting_at(start, name, v))
    }

    /// The caller's overall deadline, `timeout` from now.
    pub fn caller(timeout: Duration) -> Deadline {
        Deadline::after(CALLER, timeout)
    }

    /// The caller's overall deadline at a given instant (e.g. a Go context's
    /// deadline); its reported value is the time that was left when it was made.
    pub fn caller_at(at: Instant) -> Deadline {
        Deadline {
            at,
            limit: Limit {
                name: CALLER,
                value: at.saturating_duration_since(Instant::now()),
            },
        }
    }

    /// A layer's own limit started now, if the option is set.
    pub fn from_option(name: &'static str, value: Option<Duration>) -> Option<Deadline> {
        value.map(|v| Deadline::after(name, v))
    }

    /// The earlier of two optional deadlines; on a tie the layer's own limit
    /// (`a`) is reported, since that is the setting a reader can change.
    pub fn earliest(a: Option<Deadline>, b: Option<Deadline>) -> Option<Deadline> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.at < a.at { b } else { a }),
            (a, None) => a,
            (None, b) => b,
        }
    }

    pub fn instant(&self) -> Instant {
        self.at
    }

    /// The limit this deadline came from.
    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// Whether this is the caller's own deadline rather than a layer's limit.
    pub fn is_caller(&self) -> bool {
        self.limit.name == CALLER
    }

    /// Time left; zero once passed.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.at
    }
}

/// The deadline that fired, returned by [`run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired(pub Deadline);

/// Runs `fut` until it finishes or `deadline` passes, whichever is first.
/// With no deadline the future runs to completion.
///
/// tokio's timer wheel counts whole milliseconds and rounds a deadline up,
/// so on its own it fires 1–2 ms late. Every limit must fire within a few
/// milliseconds of its instant, so the wait is split: tokio's timer until
/// [`PRECISE_MARGIN`] before the deadline (free for the many futures that
/// finish long before), then a kernel timer (timerfd) registered with the
/// runtime's reactor for the rest. Without a timerfd it falls back to
/// tokio's timer alone. On a blocking caller's thread (inside
/// [`crate::runtime::block_on`]) neither is used: see the inline branch.
pub fn run<F: Future>(deadline: Option<Deadline>, fut: F) -> Run<F> {
    Run {
        fut,
        deadline,
        wait: Wait::Start,
    }
}

/// The future of [`run`]. Written by hand rather than as an `async fn`:
/// every read and write of a statement runs under one, and the compiler's
/// layout of the `async fn` (the timers of every branch side by side) made
/// each 400 bytes, which every future above it carried and copied. The
/// tokio timers are boxed here, since only a runtime thread with a
/// deadline needs them.
pub struct Run<F> {
    fut: F,
    deadline: Option<Deadline>,
    wait: Wait,
}

/// How a [`Run`] waits for its deadline, chosen at its first poll.
enum Wait {
    Start,
    /// On a blocking caller's thread no timer is needed: the caller's
    /// thread parks no longer than the deadline.
    Inline,
    /// tokio's timer, until [`PRECISE_MARGIN`] before the deadline.
    Early(Pin<Box<tokio::time::Sleep>>),
    /// The kernel timer for the rest.
    Precise(precise::Timer),
    /// tokio's timer alone, when no timerfd could be made.
    Late(Pin<Box<tokio::time::Sleep>>),
}

impl Wait {
    fn last_stretch(at: Instant) -> Wait {
        match precise::Timer::at(at) {
            Ok(timer) => Wait::Precise(timer),
            Err(_) => Wait::Late(Box::pin(tokio::time::sleep_until(at.into()))),
        }
    }
}

impl<F: Future> Future for Run<F> {
    type Output = Result<F::Output, Fired>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is pinned with the Run and never moved out of it
        // (Run has no Drop and no method that takes `fut` by value); the
        // other fields are not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        let mut fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        let Some(d) = this.deadline else {
            return fut.poll(cx).map(Ok);
        };
        loop {
            // The future is polled before any timer, as in a biased select:
            // a reply that is there wins over a deadline that just passed.
            match &mut this.wait {
                Wait::Start => {
                    this.wait = if crate::runtime::inline::active() {
                        Wait::Inline
                    } else {
                        match d.at.checked_sub(PRECISE_MARGIN) {
                            Some(early) => {
                                Wait::Early(Box::pin(tokio::time::sleep_until(early.into())))
                            }
                            None => Wait::last_stretch(d.at),
                        }
                    };
                }
                Wait::Inline => {
                    return match crate::runtime::inline::poll_until(d.at, || fut.as_mut().poll(cx))
                    {
                        Poll::Ready(v) => Poll::Ready(Ok(v)),
                        Poll::Pending if d.expired() => Poll::Ready(Err(Fired(d))),
                        Poll::Pending => Poll::Pending,
                    };
                }
                Wait::Early(sleep) => {
                    if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                        return Poll::Ready(Ok(v));
                    }
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // Free for the many futures that finish long before their
                    // deadline: the timerfd is only made now.
                    this.wait = Wait::last_stretch(d.at);
                }
                Wait::Precise(timer) => {
                    if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                        return Poll::Ready(Ok(v));
                    }
                    return timer.poll_expired(cx).map(|()| Err(Fired(d)));
                }
                Wait::Late(sleep) => {
                    if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                        return Poll::Ready(Ok(v));
                    }
                    return sleep.as_mut().poll(cx).map(|()| Err(Fired(d)));
                }
            }
        }
    }
}

/// How long before a deadline [`run`] hands over from tokio's timer to the
/// kernel's: more than tokio's worst lateness, so the handover is on time.
pub const PRECISE_MARGIN: Duration = Duration::from_millis(3);

/// A one-shot kernel timer the runtime's reactor waits on.
mod precise {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::{Duration, Instant};

    use std::task::{Context, Poll};

    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    pub struct Timer {
        fd: AsyncFd<OwnedFd>,
    }

    impl Timer {
        /// Arms a CLOCK_MONOTONIC timerfd (the clock `Instant` uses on
        /// Linux) to fire at `at`.
        pub fn at(at: Instant) -> io::Result<Timer> {
            // SAFETY: a plain syscall; the result is checked.
            let raw = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh fd that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // A zero value would disarm the timer; a nanosecond fires at once.
            let after = at
                .saturating_duration_since(Instant::now())
                .max(Duration::from_nanos(1));
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
            // SAFETY: a valid timerfd and itimerspec; no old value wanted.
            let rc =
                unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Timer {
                // SAFETY: the timerfd is owned by the AsyncFd from here on;
                // nothing else closes or replaces it.
                fd: unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? },
            })
        }

        /// Ready once the timer has fired (or the reactor failed, which
        /// ends the wait rather than hanging it).
        pub fn poll_expired(&self, cx: &mut Context<'_>) -> Poll<()> {
            self.fd.poll_read_ready(cx).map(|_| ())
        }
    }
}

/// A caller's cancel signal (a Go ctx, a C `dp_ctx`, Ctrl-C in Python):
/// cheap to clone, safe to trigger from any thread, once.
#[derive(Clone, Default)]
pub struct CancelToken(std::sync::Arc<CancelInner>);

#[derive(Default)]
struct CancelInner {
    cancelled: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Cancels every operation waiting on this token, now and later.
    pub fn cancel(&self) {
        self.0
            .cancelled
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once [`CancelToken::cancel`] has been called.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Register before checking the flag so a cancel in between wakes us.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CancelToken({})", self.is_cancelled())
    }
}

/// Why [`run_until`] stopped a future.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Deadline(Deadline),
    Cancelled,
}

/// Runs `fut` until it finishes, `deadline` passes or `cancel` fires.
pub fn run_until<F: Future>(
    deadline: Option<Deadline>,
    cancel: Option<&CancelToken>,
    fut: F,
) -> RunUntil<'_, F> {
    RunUntil {
        run: run(deadline, fut),
        cancel,
        notified: None,
    }
}

/// The future of [`run_until`], by hand for the reason given at [`Run`].
pub struct RunUntil<'a, F> {
    run: Run<F>,
    cancel: Option<&'a CancelToken>,
    /// Registered before the flag is checked, so a cancel in between
    /// wakes the task.
    notified: Option<tokio::sync::futures::Notified<'a>>,
}

impl<F: Future> Future for RunUntil<'_, F> {
    type Output = Result<F::Output, Stop>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `run` and `notified` are pinned with the RunUntil: neither
        // is moved out (no Drop, no by-value method), and `notified` is only
        // replaced in place through `Pin::set`.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        let run = unsafe { Pin::new_unchecked(&mut this.run) };
        if let Some(cancel) = this.cancel {
            // SAFETY: as above.
            let mut notified = unsafe { Pin::new_unchecked(&mut this.notified) };
            // The cancel is looked at first, as in a biased select.
            loop {
                if notified.is_none() {
                    notified.set(Some(cancel.0.notify.notified()));
                    if let Some(n) = notified.as_mut().as_pin_mut() {
                        n.enable();
                    }
                }
                if cancel.is_cancelled() {
                    return Poll::Ready(Err(Stop::Cancelled));
                }
                match notified.as_mut().as_pin_mut().map(|n| n.poll(cx)) {
                    // Woken by a cancel (checked above on the next turn).
                    Some(Poll::Ready(())) => notified.set(None),
                    _ => break,
                }
            }
        }
        run.poll(cx)
            .map(|r| r.map_err(|Fired(d)| Stop::Deadline(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_keeps_the_earlier_and_its_name() {
        let own = Deadline::after("connect_timeout", Duration::from_secs(3));
        let caller = Deadline::caller(Duration::from_secs(1));
        let d = Deadline::earliest(Some(own), Some(caller)).expect("some");
        assert_eq!(d.limit().name, "deadline");
        assert!(d.is_caller());
        let caller_late = Deadline::caller(Duration::from_secs(10));
        let d = Deadline::earliest(Some(own), Some(caller_late)).expect("some");
        assert_eq!(d.limit().name, "connect_timeout");
        assert_eq!(d.limit().value, Duration::from_secs(3));
        assert_eq!(Deadline::earliest(None, None), None);
        assert_eq!(Deadline::earliest(None, Some(caller)), Some(caller));
    }

    #[test]
    fn huge_values_saturate() {
        let d = Deadline::after("query_timeout", Duration::MAX);
        assert!(!d.expired());
        assert!(d.remaining() > Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn run_reports_which_fired() {
        let d = Deadline::after("tls_timeout", Duration::from_millis(20));
        let r = run(Some(d), tokio::time::sleep(Duration::from_secs(5))).await;
        assert_eq!(r, Err(Fired(d)));
        let r = run(None, async { 7 }).await;
        assert_eq!(r, Ok(7));
    }

    #[tokio::test]
    async fn cancel_from_another_thread_stops_at_once() {
        let token = CancelToken::new();
        let t2 = token.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            t2.cancel();
        });
        let start = Instant::now();
        let r = run_until(
            None,
            Some(&token),
            tokio::time::sleep(Duration::from_secs(5)),
        )
        .await;
        assert_eq!(r, Err(Stop::Cancelled));
        assert!(start.elapsed() < Duration::from_secs(1));
        // Already cancelled: stops before polling.
        let r = run_until(None, Some(&token), async { 1 }).await;
        assert_eq!(r, Err(Stop::Cancelled));
    }
}
