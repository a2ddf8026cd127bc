//! Deadlines that remember where they came from.
//!
//! Each layer runs under the earlier of its own limit (`connect_timeout`, …)
//! and what is left of the caller's overall deadline. When the combined
//! deadline fires, the error must say which of the two it was, so a deadline
//! carries the name and configured value of the limit it came from.

use std::future::Future;
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
pub async fn run<F: Future>(deadline: Option<Deadline>, fut: F) -> Result<F::Output, Fired> {
    match deadline {
        None => Ok(fut.await),
        Some(d) => tokio::time::timeout_at(tokio::time::Instant::from_std(d.at), fut)
            .await
            .map_err(|_| Fired(d)),
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
}
