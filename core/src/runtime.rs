//! The internal runtime behind the blocking facade that C, Python and Go use.
//!
//! One multi-thread tokio runtime is created on first use. Its worker count
//! can be set before that. Two misuses would otherwise panic or hang, so they
//! are refused with INVALID_STATE: blocking from inside an async runtime
//! (tokio panics), and using the runtime in a child after `fork()` (its
//! worker threads do not exist there, so every call would hang).
//!
//! A blocking call does its socket I/O on the calling thread, as libpq does:
//! [`block_on`] polls the future on the caller's thread, and a database
//! socket that would block waits in `ppoll(2)` on that thread (see
//! [`inline`]) instead of parking the caller while a runtime worker waits in
//! epoll and then wakes it. That halves the context switches of a short
//! statement (2.0 to 1.0 from C threads) and cuts its client CPU by about
//! 40 %.
//! The runtime's workers still run the pool's background work (connects,
//! maintenance) and anything the caller's future waits on besides its own
//! socket; such a wake reaches the caller through the thread's eventfd,
//! which every wait includes.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    let s = RUNTIME.get_or_init(|| {
        // SAFETY: registers a handler that only stores to an atomic, which is
        // async-signal-safe as a fork child handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(mark_forked)) };
        fresh.take().expect("taken once")
    });
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

/// Set in a child made by fork() (a pthread_atfork handler registered when
/// the runtime starts), so that the per-call check needs no getpid(2).
static FORKED: AtomicBool = AtomicBool::new(false);

/// Whether this process is a child made by fork() after the runtime
/// started.
pub(crate) fn forked() -> bool {
    FORKED.load(Ordering::Relaxed)
}

extern "C" fn mark_forked() {
    FORKED.store(true, Ordering::Relaxed);
}

fn check_pid(s: &Shared) -> Result<()> {
    if !FORKED.load(Ordering::Relaxed) {
        return Ok(());
    }
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

/// The checks every blocking call makes, also those that end without
/// the runtime (an idle connection handed out at once): the same refusals
/// whether or not the call would have waited.
pub fn check_caller() -> Result<()> {
    checked().map(|_| ())
}

fn checked() -> Result<&'static Shared> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::invalid_state(
            "a blocking dialpool call was made from inside an async runtime, where it would stall the \
             runtime's thread; use the async API there, or call from a plain thread (spawn_blocking)",
        ));
    }
    let s = shared()?;
    check_pid(s)?;
    Ok(s)
}

/// Runs `f` with the checks every call on the caller's thread makes done,
/// and that thread's parker, lent rather than cloned: two reference counts
/// fewer per call.
fn with_caller<R>(
    f: impl FnOnce(&'static Shared, &(std::sync::Arc<inline::Parker>, std::task::Waker)) -> R,
) -> Result<R> {
    let s = checked()?;
    inline::with_parker(|parker| f(s, parker))
        .map_err(|e| Error::internal(format!("cannot create the calling thread's eventfd: {e}")))
}

/// Runs `fut` to completion on the internal runtime, blocking this thread.
pub fn block_on<F: Future>(fut: F) -> Result<F::Output> {
    // Pinned here, once: an operation's future can be KBs, and every move
    // is a copy on every call.
    let fut = std::pin::pin!(fut);
    with_caller(|s, parker| {
        // The runtime's context, so the future can create tokio resources
        // (timers, sockets) that the workers drive.
        let _context = s.runtime.enter();
        match inline::drive(parker, fut, false) {
            Step::Ready(out) => out,
            Step::Wait(_) => unreachable!("drive hands no wait back when asked not to"),
        }
    })
}

/// What an operation run with [`step`] waits for before it can go on: one
/// socket becoming readable or writable, or `until` passing, whichever
/// comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketWait {
    pub fd: std::os::fd::RawFd,
    /// `libc::POLLIN` or `libc::POLLOUT`.
    pub events: i16,
    /// Tells sockets apart when the kernel reuses a descriptor number:
    /// unique in the process for a database session's socket, 0 for others.
    pub socket_id: u64,
    pub until: Option<std::time::Instant>,
}

/// One call of [`step`]: the operation finished, or it waits for a socket.
#[derive(Debug)]
pub enum Step<T> {
    Ready(T),
    Wait(SocketWait),
}

/// Runs `fut` on the calling thread until it finishes or would block on
/// exactly one socket (and maybe a deadline): then the wait is handed back,
/// so that the caller can wait in its own event loop (Go's netpoller) and
/// call again. Anything else the future waits for (several sockets, only a
/// deadline, a wake from another thread) is waited for here, as
/// [`block_on`] would. While the caller waits, only the socket and the
/// deadline end its wait: a wake from another thread (a cancel) is seen at
/// the next call, so whoever cancels must also end the caller's wait.
pub fn step<F: Future + ?Sized>(fut: std::pin::Pin<&mut F>) -> Result<Step<F::Output>> {
    with_caller(|s, parker| {
        let _context = s.runtime.enter();
        inline::drive(parker, fut, true)
    })
}

/// The calling thread's side of [`block_on`]: its parker, the thread-local
/// marks that tell a database socket it may wait here, and the wait itself.
pub mod inline {
    use std::cell::Cell;
    use std::future::Future;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::{Duration, Instant};

    use super::{SocketWait, Step};

    /// Wakes a thread parked in [`drive`]: sets a flag and,
    /// on the first wake since the flag was cleared, writes the thread's
    /// eventfd, which every wait of that thread includes.
    pub struct Parker {
        efd: OwnedFd,
        notified: AtomicBool,
    }

    impl Parker {
        fn new() -> io::Result<Parker> {
            // SAFETY: a plain syscall; the result is checked.
            let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Parker {
                // SAFETY: a fresh fd that nothing else owns.
                efd: unsafe { OwnedFd::from_raw_fd(raw) },
                notified: AtomicBool::new(false),
            })
        }

        fn drain(&self) {
            let mut value = 0u64;
            // SAFETY: reads 8 bytes into a u64 from our own non-blocking
            // eventfd; EAGAIN (nothing to drain) is fine.
            unsafe {
                libc::read(
                    self.efd.as_raw_fd(),
                    (&mut value as *mut u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }

    impl Wake for Parker {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            if !self.notified.swap(true, Ordering::SeqCst) {
                let one = 1u64;
                // SAFETY: writes 8 bytes from a u64 to our own eventfd. It
                // cannot fail short of the counter overflowing, which one
                // write per cleared flag never reaches.
                unsafe {
                    libc::write(
                        self.efd.as_raw_fd(),
                        (&one as *const u64).cast(),
                        std::mem::size_of::<u64>(),
                    )
                };
            }
        }
    }

    thread_local! {
        static PARKER: std::cell::OnceCell<(Arc<Parker>, Waker)> =
            const { std::cell::OnceCell::new() };
        /// Set while this thread runs [`drive`].
        static ACTIVE: Cell<bool> = const { Cell::new(false) };
        /// The earliest deadline that returned Pending during this poll
        /// pass: [`drive`] parks no longer than that.
        static NEXT_WAKE: Cell<Option<Instant>> = const { Cell::new(None) };
        /// The sockets that would block in this poll pass, with the events
        /// they wait for: [`drive`] parks on them beside the eventfd.
        static WAIT_FDS: std::cell::RefCell<Vec<libc::pollfd>> =
            const { std::cell::RefCell::new(Vec::new()) };
        /// The `socket_id` of the last [`wait_for`] in this poll pass.
        static WAIT_ID: Cell<u64> = const { Cell::new(0) };
        /// Set while [`drive`] may hand a wait back to its caller.
        static HAND_OFF: Cell<bool> = const { Cell::new(false) };
    }

    /// Runs `f` with this thread's parker and its waker, made once per
    /// thread.
    pub(super) fn with_parker<R>(f: impl FnOnce(&(Arc<Parker>, Waker)) -> R) -> io::Result<R> {
        PARKER.with(|slot| {
            let parker = match slot.get() {
                Some(p) => p,
                None => {
                    let p = Arc::new(Parker::new()?);
                    let made = (p.clone(), Waker::from(p));
                    slot.get_or_init(|| made)
                }
            };
            Ok(f(parker))
        })
    }

    fn earlier(a: Option<Instant>, b: Instant) -> Instant {
        match a {
            Some(a) if a < b => a,
            _ => b,
        }
    }

    /// Whether the current thread is inside [`super::block_on`], where a
    /// socket may wait on the thread itself.
    pub fn active() -> bool {
        ACTIVE.with(Cell::get)
    }

    /// Whether a socket wait may be handed to the caller (see
    /// [`super::step`]), who may then wait on a duplicate of the socket.
    pub fn hands_off() -> bool {
        HAND_OFF.with(Cell::get)
    }

    /// Polls `poll`; when it returns Pending and `at` has not passed, the
    /// caller's thread is woken at `at` at the latest. Only meaningful when
    /// [`active`].
    pub fn poll_until<T>(at: Instant, poll: impl FnOnce() -> Poll<T>) -> Poll<T> {
        let out = poll();
        if out.is_pending() {
            NEXT_WAKE.with(|n| n.set(Some(earlier(n.get(), at))));
        }
        out
    }

    /// Asks [`drive`] to wake the caller when `fd` has `events` (POLLIN or
    /// POLLOUT); `socket_id` as in [`super::SocketWait`]. The socket's poll
    /// then returns Pending. Only when [`active`].
    pub fn wait_for(fd: RawFd, events: libc::c_short, socket_id: u64) {
        WAIT_FDS.with(|w| w.borrow_mut().push(pollfd(fd, events)));
        WAIT_ID.with(|w| w.set(socket_id));
    }

    /// The caller-thread executor: polls `fut`; when it is Pending, parks in
    /// one ppoll on the thread's eventfd (any waker), the sockets that
    /// would block (see [`wait_for`]) and the earliest pending deadline.
    /// Every branch of the future is polled before the thread parks, so a
    /// socket wait never hides another branch's wake. With `hand_off`, a
    /// wait for exactly one socket is returned instead (see
    /// [`super::step`]).
    pub(super) fn drive<F: Future + ?Sized>(
        parker: &(Arc<Parker>, Waker),
        mut fut: std::pin::Pin<&mut F>,
        hand_off: bool,
    ) -> Step<F::Output> {
        struct Reset(bool, bool);
        impl Drop for Reset {
            fn drop(&mut self) {
                ACTIVE.with(|a| a.set(self.0));
                HAND_OFF.with(|h| h.set(self.1));
                WAIT_FDS.with(|w| w.borrow_mut().clear());
            }
        }
        let _reset = Reset(
            ACTIVE.with(|a| a.replace(true)),
            HAND_OFF.with(|h| h.replace(hand_off)),
        );
        let (parker, waker) = parker;
        let mut cx = Context::from_waker(waker);
        let mut fds: Vec<libc::pollfd> = Vec::new();
        loop {
            parker.notified.store(false, Ordering::SeqCst);
            NEXT_WAKE.with(|n| n.set(None));
            WAIT_FDS.with(|w| w.borrow_mut().clear());
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return Step::Ready(out);
            }
            if parker.notified.load(Ordering::SeqCst) {
                continue;
            }
            if hand_off {
                let one = WAIT_FDS.with(|w| match w.borrow().as_slice() {
                    [only] => Some(*only),
                    _ => None,
                });
                if let Some(p) = one {
                    return Step::Wait(SocketWait {
                        fd: p.fd,
                        events: p.events,
                        socket_id: WAIT_ID.with(Cell::get),
                        until: NEXT_WAKE.with(Cell::get),
                    });
                }
            }
            fds.clear();
            fds.push(pollfd(parker.efd.as_raw_fd(), libc::POLLIN));
            WAIT_FDS.with(|w| fds.extend_from_slice(&w.borrow()));
            let until = NEXT_WAKE.with(Cell::get);
            // Every way out (a socket ready, a wake, the deadline, a signal)
            // leads to a new poll, which finds out what happened.
            let alone = WAITING.fetch_add(1, Ordering::SeqCst) == 0;
            if !(alone && spin(&mut fds, until)) {
                let _ = ppoll(&mut fds, until);
            }
            WAITING.fetch_sub(1, Ordering::SeqCst);
            if fds[0].revents != 0 {
                parker.drain();
            }
        }
    }

    /// This thread's spins in a row that ran out of budget (tests).
    #[cfg(test)]
    pub(super) fn misses() -> u32 {
        MISSES.with(Cell::get)
    }

    /// Callers of this process parked in [`drive`] right now.
    pub(super) static WAITING: AtomicUsize = AtomicUsize::new(0);

    /// How long a caller that waits alone polls before it sleeps: up to
    /// 50 µs by default, `DIALPOOL_SPIN_US` (0 turns it off).
    ///
    /// A thread that sleeps in ppoll(2) leaves its CPU idle, and on a
    /// virtual machine an idle vCPU halts: waking it for the reply costs an
    /// interrupt and a VM entry, often more than a short statement itself.
    /// A Go program waiting in its netpoller gets the same effect for free
    /// (the runtime spins before it sleeps). Measured with SELECT 1 on 2
    /// vCPUs shared with the server, from one C thread: 110–124 µs per
    /// statement without the spin, 35–45 µs with it (and less CPU, the
    /// sleep and wake-up being dearer than the polls); from one goroutine:
    /// 63–92 µs, 36–56 µs. Only a caller alone in a wait spins, and it
    /// stops when another starts waiting, so callers never spin side by
    /// side, and a busy process, whose waits overlap, hardly spins at all
    /// (4 and 16 C threads: unchanged). A thread whose replies keep coming
    /// after the spin mostly stops spinning (see `MISS_LIMIT`).
    fn spin_budget() -> Duration {
        static BUDGET: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
        *BUDGET.get_or_init(|| {
            let us = std::env::var("DIALPOOL_SPIN_US")
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(DEFAULT_SPIN_US)
                .min(MAX_SPIN_US);
            Duration::from_micros(us)
        })
    }

    const DEFAULT_SPIN_US: u64 = 50;
    /// A spin longer than this only burns the CPU: a round trip that slow
    /// is not one that an idle CPU's wake-up delays noticeably.
    const MAX_SPIN_US: u64 = 1000;

    /// After this many spins in a row on a thread that ran out of budget
    /// (its replies come slower than the spin: long statements, a distant
    /// server), the thread spins only at every `MISS_PROBE`-th wait until
    /// one spin sees its reply again: a slow workload then burns an eighth
    /// of the budget per wait instead of all of it.
    const MISS_LIMIT: u32 = 8;
    const MISS_PROBE: u32 = 8;

    thread_local! {
        /// This thread's spins in a row that ran out of budget.
        static MISSES: Cell<u32> = const { Cell::new(0) };
    }

    /// Polls `fds` without sleeping until one is ready (true), the spin
    /// budget or `until` has passed, or another caller starts waiting
    /// (false: then sleep in ppoll).
    pub(super) fn spin(fds: &mut [libc::pollfd], until: Option<Instant>) -> bool {
        let budget = spin_budget();
        if budget.is_zero() {
            return false;
        }
        let misses = MISSES.with(Cell::get);
        if misses >= MISS_LIMIT && !misses.saturating_add(1).is_multiple_of(MISS_PROBE) {
            MISSES.with(|m| m.set(misses.saturating_add(1)));
            return false;
        }
        let start = Instant::now();
        let stop = match until {
            Some(at) => at.min(start + budget),
            None => start + budget,
        };
        loop {
            // SAFETY: `fds` is a valid slice of pollfd; a zero timeout.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
            if rc > 0 {
                MISSES.with(|m| m.set(0));
                return true;
            }
            if rc < 0 || WAITING.load(Ordering::Relaxed) > 1 {
                return false;
            }
            if Instant::now() >= stop {
                MISSES.with(|m| m.set(misses.saturating_add(1)));
                return false;
            }
            std::hint::spin_loop();
        }
    }

    fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
        libc::pollfd {
            fd,
            events,
            revents: 0,
        }
    }

    /// ppoll(2) until `until` (None: no limit); Ok(0) on timeout.
    fn ppoll(fds: &mut [libc::pollfd], until: Option<Instant>) -> io::Result<usize> {
        let spec = until.map(|at| {
            let left = at.saturating_duration_since(Instant::now());
            libc::timespec {
                tv_sec: left.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            }
        });
        let spec_ptr = spec
            .as_ref()
            .map_or(std::ptr::null(), |s| s as *const libc::timespec);
        // SAFETY: `fds` is a valid slice of pollfd, `spec_ptr` null or a
        // valid timespec; no signal mask change.
        let rc = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                spec_ptr,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
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

    /// A lone waiter polls its sockets for a moment before it sleeps: a
    /// socket that is ready ends the spin at once, one that is not ends it
    /// within the budget, and a second waiter ends it at once.
    #[test]
    fn a_lone_waiter_spins_briefly_then_sleeps() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        use std::sync::atomic::Ordering;
        use std::time::Instant;
        let (mut a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let mut fds = [libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // Other tests may be waiting at the same time, which only shortens
        // the spin: nothing here depends on it lasting.
        let start = Instant::now();
        assert!(!inline::spin(&mut fds, None), "nothing to read");
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        let past = Instant::now();
        assert!(
            !inline::spin(&mut fds, Some(past)),
            "the deadline has passed"
        );
        inline::WAITING.fetch_add(2, Ordering::SeqCst);
        let crowded = inline::spin(&mut fds, None);
        inline::WAITING.fetch_sub(2, Ordering::SeqCst);
        assert!(!crowded, "another waiter: no spin");
        a.write_all(b"x").expect("write");
        assert!(inline::spin(&mut fds, None), "readable");
        assert_ne!(fds[0].revents & libc::POLLIN, 0);
    }

    /// A thread whose spins keep running out of budget spins only now and
    /// then, until one sees its reply again.
    #[test]
    fn a_thread_whose_replies_come_late_stops_spinning() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        use std::time::{Duration, Instant};
        // A thread of its own: the miss count is per thread.
        std::thread::spawn(|| {
            let (mut a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
            let mut fds = [libc::pollfd {
                fd: b.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // A deadline far off: each spin runs its budget out (or is cut
            // short by another test's waiter, which counts no miss).
            let far = Some(Instant::now() + Duration::from_secs(60));
            let mut tries = 0;
            while inline::misses() < 8 && tries < 10_000 {
                assert!(!inline::spin(&mut fds, far));
                tries += 1;
            }
            assert_eq!(inline::misses(), 8, "8 misses in {tries} tries");
            // Now 7 of every 8 waits do not spin: they return at once even
            // with data waiting, and count on.
            a.write_all(b"x").expect("write");
            for i in 1..8 {
                assert!(!inline::spin(&mut fds, far), "skipped wait {i}");
            }
            assert_eq!(inline::misses(), 15);
            // The 8th probes, sees the reply, and spinning is back.
            assert!(inline::spin(&mut fds, far), "the probe");
            assert_eq!(inline::misses(), 0);
        })
        .join()
        .expect("test thread");
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
