//! The pool's events for a Python callable (`Pool(url, on_event=fn)`).
//!
//! The core calls the handler synchronously on the thread where an event
//! happens: a runtime thread, or a Python thread that may hold the GIL (a
//! release). Calling Python there would make runtime threads wait for the
//! GIL, which stalls every connection they serve and can deadlock with a
//! thread that holds the GIL and waits for the runtime. So the handler only
//! queues an owned copy of the event; one dispatcher thread per pool takes
//! the GIL and calls the callable, in order. A callable slower than the
//! pool fills the bounded queue: further events are dropped and counted,
//! and the count is logged, rather than memory growing without bound.
//! Exceptions from the callable are logged (logger `dialpool`) and never
//! reach the pool.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use dialpool::pool::{Event, EventHandler};
use dialpool::Error;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::core_err;

/// Events waiting for the callable; more are dropped (and counted).
const QUEUE: usize = 10_000;
/// Events delivered per hold of the GIL.
const BATCH: usize = 256;

/// One event, as the Python callable receives it. Durations are in seconds;
/// fields a kind does not use are None.
#[pyclass(frozen, get_all, module = "dialpool._dialpool")]
pub struct PoolEvent {
    /// `connect_start`, `connect`, `acquire`, `release`, `close`,
    /// `acquire_timeout`, `leak` or `adjusted`.
    kind: &'static str,
    /// The connect's time, the acquire's wait, the time held (release,
    /// leak), the connection's age (close), the wait before the timeout.
    elapsed: Option<f64>,
    /// A failed connect's or an acquire timeout's error (a dialpool.Error).
    error: Option<Py<PyAny>>,
    /// Why a connection was closed: `max_lifetime`, `max_idle_time`,
    /// `max_idle`, `dead`, `broken`, `pool_closed`.
    reason: Option<&'static str>,
    /// The label given at acquire (acquire, leak).
    label: Option<String>,
    /// A connect's dial phases: name resolution, TCP connect, TLS.
    dns: Option<f64>,
    tcp: Option<f64>,
    tls: Option<f64>,
    /// An adjusted option, its value before (None: off) and after, and why.
    option: Option<&'static str>,
    previous: Option<f64>,
    value: Option<f64>,
    why: Option<String>,
}

#[pymethods]
impl PoolEvent {
    fn __repr__(&self, py: Python<'_>) -> String {
        let mut parts = vec![format!("kind={:?}", self.kind)];
        let mut secs = |name: &str, v: Option<f64>| {
            if let Some(v) = v {
                parts.push(format!("{name}={v:.6}"));
            }
        };
        secs("elapsed", self.elapsed);
        secs("dns", self.dns);
        secs("tcp", self.tcp);
        secs("tls", self.tls);
        secs("previous", self.previous);
        secs("value", self.value);
        for (name, v) in [
            ("reason", self.reason.map(str::to_string)),
            ("label", self.label.clone()),
            ("option", self.option.map(str::to_string)),
            ("why", self.why.clone()),
        ] {
            if let Some(v) = v {
                parts.push(format!("{name}={v:?}"));
            }
        }
        if let Some(e) = &self.error {
            let text = e
                .bind(py)
                .repr()
                .map_or_else(|_| "?".to_string(), |r| r.to_string());
            parts.push(format!("error={text}"));
        }
        format!("PoolEvent({})", parts.join(", "))
    }
}

/// An event copied out of the core's borrowed one, to cross threads.
struct Owned {
    kind: &'static str,
    elapsed: Option<Duration>,
    error: Option<Error>,
    reason: Option<&'static str>,
    label: Option<String>,
    phases: Option<dialpool::PhaseTimings>,
    option: Option<&'static str>,
    previous: Option<Duration>,
    value: Option<Duration>,
    why: Option<String>,
}

impl Owned {
    fn from_event(event: &Event<'_>) -> Option<Owned> {
        let mut o = Owned {
            kind: event.kind_name(),
            elapsed: None,
            error: None,
            reason: None,
            label: None,
            phases: None,
            option: None,
            previous: None,
            value: None,
            why: None,
        };
        match event {
            Event::ConnectStart => {}
            Event::ConnectEnd {
                elapsed,
                result,
                timings,
            } => {
                o.elapsed = Some(*elapsed);
                o.error = result.err().cloned();
                o.phases = *timings;
            }
            Event::Acquire { wait, label } => {
                o.elapsed = Some(*wait);
                o.label = label.map(str::to_string);
            }
            Event::Release { held } => o.elapsed = Some(*held),
            Event::Close { reason, age } => {
                o.elapsed = Some(*age);
                o.reason = Some(reason.name());
            }
            Event::AcquireTimeout { error } => {
                o.elapsed = error.elapsed();
                o.error = Some((*error).clone());
            }
            Event::Leak { held, label } => {
                o.elapsed = Some(*held);
                o.label = label.map(str::to_string);
            }
            Event::Adjusted {
                option,
                from,
                to,
                why,
            } => {
                o.option = Some(*option);
                o.previous = *from;
                o.value = Some(*to);
                o.why = Some(why.to_string());
            }
            // A kind this binding does not know yet.
            _ => return None,
        }
        Some(o)
    }

    fn into_py(self, py: Python<'_>) -> PoolEvent {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        PoolEvent {
            kind: self.kind,
            elapsed: secs(self.elapsed),
            error: self
                .error
                .map(|e| core_err(py, &e).into_value(py).into_any()),
            reason: self.reason,
            label: self.label,
            dns: secs(self.phases.and_then(|p| p.dns)),
            tcp: secs(self.phases.and_then(|p| p.connect)),
            tls: secs(self.phases.and_then(|p| p.tls)),
            option: self.option,
            previous: secs(self.previous),
            value: secs(self.value),
            why: self.why,
        }
    }
}

enum Msg {
    Event(Box<Owned>),
    Stop,
}

/// The core's event handler for one pool, and its dispatcher thread.
pub struct PyEvents {
    tx: SyncSender<Msg>,
    /// False once the pool was closed: nothing more is queued.
    open: AtomicBool,
    dropped: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

impl EventHandler for PyEvents {
    fn event(&self, event: &Event<'_>) {
        if !self.open.load(Ordering::Relaxed) {
            return;
        }
        let Some(owned) = Owned::from_event(event) else {
            return;
        };
        match self.tx.try_send(Msg::Event(Box::new(owned))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The dispatcher has ended (interpreter shutting down).
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl PyEvents {
    /// Starts the dispatcher thread for `callback`.
    pub fn start(py: Python<'_>, callback: Py<PyAny>) -> PyResult<Arc<PyEvents>> {
        if !callback.bind(py).is_callable() {
            return Err(crate::errors::invalid_argument(
                py,
                "on_event must be a callable taking one dialpool.PoolEvent",
            ));
        }
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let thread = std::thread::Builder::new()
            .name("dialpool-events".into())
            .spawn(move || dispatch(rx, callback, counter))
            .map_err(|e| {
                crate::errors::invalid_state(py, format!("cannot start the event thread: {e}"))
            })?;
        Ok(Arc::new(PyEvents {
            tx,
            open: AtomicBool::new(true),
            dropped,
            thread_id: thread.thread().id(),
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Delivers the events queued so far, then stops the thread and waits
    /// for it (without the GIL, which it needs). Called by `Pool.close()`,
    /// so that no callback runs once close has returned. Idempotent.
    pub fn stop(&self, py: Python<'_>) {
        if !self.open.swap(false, Ordering::SeqCst) {
            return;
        }
        if std::thread::current().id() == self.thread_id {
            // Closed from inside the callback: it cannot wait for itself.
            let _ = self.tx.try_send(Msg::Stop);
            return;
        }
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        py.detach(|| {
            // Blocks only while the queue is full, which the dispatcher
            // drains; fails only if it has already ended.
            let _ = self.tx.send(Msg::Stop);
            if let Some(h) = handle {
                let _ = h.join();
            }
        });
    }

    /// As `stop`, without waiting (the pool object is being collected).
    pub fn stop_nowait(&self) {
        if self.open.swap(false, Ordering::SeqCst) {
            let _ = self.tx.try_send(Msg::Stop);
        }
    }
}

/// The dispatcher: blocks for events without the GIL, then delivers a batch
/// under one hold of it.
fn dispatch(rx: Receiver<Msg>, callback: Py<PyAny>, dropped: Arc<AtomicU64>) {
    let mut batch: Vec<Box<Owned>> = Vec::with_capacity(BATCH);
    loop {
        let mut stop = false;
        match rx.recv() {
            Ok(Msg::Event(e)) => batch.push(e),
            Ok(Msg::Stop) | Err(_) => stop = true,
        }
        while !stop && batch.len() < BATCH {
            match rx.try_recv() {
                Ok(Msg::Event(e)) => batch.push(e),
                Ok(Msg::Stop) => stop = true,
                Err(_) => break,
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        let delivered = Python::try_attach(|py| {
            if lost > 0 {
                log(
                    py,
                    "warning",
                    &format!(
                        "dialpool: {lost} pool event(s) dropped: the on_event callback is slower than the pool"
                    ),
                    None,
                );
            }
            for e in batch.drain(..) {
                let event = e.into_py(py);
                let result = Py::new(py, event).and_then(|ev| callback.call1(py, (ev,)));
                if let Err(err) = result {
                    log(
                        py,
                        "error",
                        "dialpool: the on_event callback raised an exception (the pool goes on)",
                        Some(err),
                    );
                }
            }
        });
        // None: the interpreter is shutting down; stop quietly.
        if delivered.is_none() || stop {
            break;
        }
    }
    // Release the callable under the GIL while the interpreter is there
    // (otherwise pyo3 defers it, and the process is ending anyway).
    let _ = Python::try_attach(move |_py| drop(callback));
}

/// Logs through `logging.getLogger("dialpool")`; if even that fails, the
/// exception goes to `sys.unraisablehook`.
fn log(py: Python<'_>, level: &str, message: &str, error: Option<PyErr>) {
    let logged = (|| -> PyResult<()> {
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("dialpool",))?;
        let kwargs = PyDict::new(py);
        if let Some(e) = &error {
            kwargs.set_item("exc_info", e.value(py))?;
        }
        logger.call_method(level, (message,), Some(&kwargs))?;
        Ok(())
    })();
    if let Err(failed) = logged {
        error.unwrap_or(failed).write_unraisable(py, None);
    }
}
