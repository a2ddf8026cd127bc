//! Blocking calls: the calling thread drives the core's future on the core's
//! runtime (`dialpool::runtime::block_on`) without the GIL, and on Python's
//! main thread looks for signals every [`SLICE`] meanwhile.
//!
//! Python runs signal handlers only on the main thread, and only when that
//! thread holds the GIL and calls `PyErr_CheckSignals`. A main thread parked
//! for the whole query would not raise KeyboardInterrupt until the query
//! ended; so its wait wakes every [`SLICE`], takes the GIL briefly and
//! checks. On a pending exception (KeyboardInterrupt, or whatever a handler
//! raised) it triggers the call's cancel token: the core stops the operation
//! (a query is cancelled on the server, within `cancel_timeout`), the wait
//! collects that outcome, so a connection is never lost, and the caller
//! raises the signal's exception. Other threads never see signals and wait
//! without waking.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::OnceLock;
use std::task::Poll;
use std::time::{Duration, Instant};

use dialpool::deadline::CancelToken;
use pyo3::prelude::*;

use crate::errors::core_err;

/// How often the main thread looks for signals while it waits.
const SLICE: Duration = Duration::from_millis(20);

/// The outcome of a blocking call; `interrupted` holds the exception a
/// signal handler raised while it ran (the value is still the operation's,
/// usually a CANCELLED error), for the caller to raise after tidying up.
pub struct Waited<T> {
    pub value: T,
    pub interrupted: Option<PyErr>,
}

impl<T> Waited<T> {
    /// The value, or the signal's exception if one came.
    pub fn into_result(self) -> PyResult<T> {
        match self.interrupted {
            Some(e) => Err(e),
            None => Ok(self.value),
        }
    }
}

static MAIN_THREAD: OnceLock<u64> = OnceLock::new();

/// Records Python's main thread (`threading.main_thread().ident`).
pub fn init(py: Python<'_>) -> PyResult<()> {
    let ident: u64 = py
        .import("threading")?
        .call_method0("main_thread")?
        .getattr("ident")?
        .extract()?;
    let _ = MAIN_THREAD.set(ident);
    Ok(())
}

/// Whether signal handlers run on this thread: Python's thread ident is
/// `pthread_self()`.
fn on_main_thread() -> bool {
    #[cfg(unix)]
    {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as u64;
        MAIN_THREAD.get().is_none_or(|main| *main == me)
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// Runs `work` to completion; see the module comment.
pub fn wait<T, F>(py: Python<'_>, cancel: &CancelToken, work: F) -> PyResult<Waited<T>>
where
    T: Send,
    F: Future<Output = T> + Send,
{
    let watch = on_main_thread();
    // No box here: the core boxes a statement's large future itself
    // (Session::query), so what moves below is small.
    let outcome = py.detach(move || {
        dialpool::runtime::block_on(async move {
            let mut work = pin!(work);
            if !watch {
                return (work.await, None);
            }
            // The next signal check. The calling thread does the query's
            // socket I/O itself and parks in ppoll (see dialpool::runtime),
            // so the check time goes in as a deadline it parks no longer than.
            let mut check_at = Instant::now() + SLICE;
            let mut signal: Option<PyErr> = None;
            let value = poll_fn(|cx| {
                let polled = if signal.is_none() {
                    dialpool::runtime::inline::poll_until(check_at, || work.as_mut().poll(cx))
                } else {
                    work.as_mut().poll(cx)
                };
                if let Poll::Ready(v) = polled {
                    return Poll::Ready(v);
                }
                if signal.is_none() && Instant::now() >= check_at {
                    match Python::attach(|py| py.check_signals()) {
                        // Cancelling wakes `work`, which then ends at once.
                        Err(e) => {
                            signal = Some(e);
                            cancel.cancel();
                        }
                        Ok(()) => check_at = Instant::now() + SLICE,
                    }
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            })
            .await;
            (value, signal)
        })
    });
    match outcome {
        Ok((value, interrupted)) => Ok(Waited { value, interrupted }),
        Err(e) => Err(core_err(py, &e)),
    }
}
