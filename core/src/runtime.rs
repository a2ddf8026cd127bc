//! The internal runtime behind the blocking facade that C, Python and Go use.
//!
//! One multi-thread tokio runtime is created on first use. Its worker count
//! can be set before that. Two misuses would otherwise panic or hang, so they
//! are refused with INVALID_STATE: blocking from inside an async runtime
//! (tokio panics), and using the runtime in a child after `fork()` (its
//! worker threads do not exist there, so every call would hang).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::runtime::Runtime;

use crate::error::{Error, Result};

/// The largest worker count accepted: far above any useful value, well below
/// what would exhaust threads.
pub const MAX_WORKER_THREADS: usize = 1024;

struct Shared {
    runtime: Runtime,
    pid: u32,
}

static RUNTIME: OnceLock<Shared> = OnceLock::new();
/// 0 means "not set": tokio's default (one per core).
static WORKERS: AtomicUsize = AtomicUsize::new(0);

/// Sets how many worker threads the runtime gets. Only before first use.
pub fn set_worker_threads(count: usize) -> Result<()> {
    if count == 0 || count > MAX_WORKER_THREADS {
        return Err(Error::invalid_argument(format!(
            "invalid worker thread count {count}; valid: 1 to {MAX_WORKER_THREADS}"
        )));
    }
    if RUNTIME.get().is_some() {
        return Err(Error::invalid_state(
            "the runtime is already running; set the worker thread count before the first pool or dial",
        ));
    }
    WORKERS.store(count, Ordering::SeqCst);
    // A runtime created concurrently may have missed the value; say so.
    if RUNTIME.get().is_some() {
        return Err(Error::invalid_state(
            "the runtime started while the worker thread count was being set; it keeps its own count",
        ));
    }
    Ok(())
}

/// The worker count the runtime has or will have (0 = tokio's default).
pub fn worker_threads() -> usize {
    WORKERS.load(Ordering::SeqCst)
}

fn shared() -> Result<&'static Shared> {
    if let Some(s) = RUNTIME.get() {
        return Ok(s);
    }
    let workers = WORKERS.load(Ordering::SeqCst);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("dialpool-worker");
    if workers > 0 {
        builder.worker_threads(workers);
    }
    let runtime = builder
        .build()
        .map_err(|e| Error::internal(format!("cannot start the runtime: {e}")))?;
    let mut fresh = Some(Shared {
        runtime,
        pid: std::process::id(),
    });
    let s = RUNTIME.get_or_init(|| fresh.take().expect("taken once"));
    if let Some(unused) = fresh {
        // Lost a race: another thread's runtime won; shut ours down quietly.
        unused.runtime.shutdown_background();
    }
    Ok(s)
}

/// The runtime's handle, for spawning background work. Fails after fork().
pub fn handle() -> Result<tokio::runtime::Handle> {
    let s = shared()?;
    check_pid(s)?;
    Ok(s.runtime.handle().clone())
}

fn check_pid(s: &Shared) -> Result<()> {
    let pid = std::process::id();
    if s.pid != pid {
        return Err(Error::invalid_state(format!(
            "dialpool's runtime was started in process {} and this is process {pid}, a child made by fork(); \
             its threads do not exist here, so open pools and dial in the child after fork(), or use exec",
            s.pid
        )));
    }
    Ok(())
}

/// Runs `fut` to completion on the internal runtime, blocking this thread.
pub fn block_on<F: Future>(fut: F) -> Result<F::Output> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::invalid_state(
            "a blocking dialpool call was made from inside an async runtime, where it would stall the \
             runtime's thread; use the async API there, or call from a plain thread (spawn_blocking)",
        ));
    }
    let s = shared()?;
    check_pid(s)?;
    Ok(s.runtime.block_on(fut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    #[test]
    fn blocking_inside_a_runtime_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let err = rt
            .block_on(async { block_on(async { 1 }) })
            .expect_err("must refuse");
        assert_eq!(err.code(), Code::InvalidState);
        assert!(err.to_string().contains("async runtime"), "{err}");
    }

    #[test]
    fn blocks_and_rejects_bad_counts() {
        assert_eq!(block_on(async { 2 + 2 }).expect("runs"), 4);
        assert_eq!(
            set_worker_threads(0).expect_err("zero").code(),
            Code::InvalidArgument
        );
        // Already running by now.
        assert_eq!(
            set_worker_threads(2).expect_err("late").code(),
            Code::InvalidState
        );
    }

    #[test]
    fn refused_in_a_forked_child() {
        block_on(async {}).expect("runtime up");
        // SAFETY: the child only calls async-signal-tolerable code paths we
        // control and leaves with _exit, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = matches!(block_on(async {}), Err(e) if e.code() == Code::InvalidState)
                && matches!(handle(), Err(e) if e.code() == Code::InvalidState);
            // SAFETY: leave the child at once without running destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child we made.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child saw no INVALID_STATE"
        );
    }
}
