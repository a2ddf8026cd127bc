//! The C ABI of dialpool: a thin translation of the core, no rules of its
//! own. Every fallible call returns a `dp_code` and takes an optional
//! `dp_error **err`; every handle is opaque and freed by its own function,
//! which accepts NULL; no panic crosses the boundary (it becomes
//! `DP_INTERNAL`); there is no thread-local "last error".
//!
//! Blocking calls run on dialpool's internal runtime; a `dp_ctx` carries the
//! caller's deadline and a cancel that any thread may trigger.

#![allow(non_camel_case_types)]
// The C ABI takes raw pointers by design; every function checks them for
// NULL and documents what it reads and writes.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use dialpool::deadline::{CancelToken, CALLER};
use dialpool::pool::{CloseReason, Event, EventHandler};
use dialpool::{Code, Config, Ctx, Deadline, Error, Layer};

/// Result codes. `DP_OK` is 0; the others have the numbers of the core's
/// error codes and never change (new ones are appended).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dp_code {
    DP_OK = 0,
    DP_INVALID_ARGUMENT = 1,
    DP_INVALID_STATE = 2,
    DP_INTERNAL = 3,
    DP_DNS_ERROR = 4,
    DP_DNS_TIMEOUT = 5,
    DP_CONNECT_TIMEOUT = 6,
    DP_CONNECTION_REFUSED = 7,
    DP_NETWORK_UNREACHABLE = 8,
    DP_TLS_ERROR = 9,
    DP_TLS_TIMEOUT = 10,
    DP_AUTH_FAILED = 11,
    DP_LOGIN_TIMEOUT = 12,
    DP_PROTOCOL_ERROR = 13,
    DP_ACQUIRE_TIMEOUT = 14,
    DP_POOL_CLOSED = 15,
    DP_QUERY_TIMEOUT = 16,
    DP_READ_TIMEOUT = 17,
    DP_WRITE_TIMEOUT = 18,
    DP_CANCELLED = 19,
    DP_SERVER_ERROR = 20,
    DP_CONNECTION_LOST = 21,
    DP_NETWORK_ERROR = 22,
}

impl From<Code> for dp_code {
    fn from(code: Code) -> dp_code {
        // The numbers are the same by construction (a test checks every one).
        match code {
            Code::InvalidArgument => dp_code::DP_INVALID_ARGUMENT,
            Code::InvalidState => dp_code::DP_INVALID_STATE,
            Code::Internal => dp_code::DP_INTERNAL,
            Code::DnsError => dp_code::DP_DNS_ERROR,
            Code::DnsTimeout => dp_code::DP_DNS_TIMEOUT,
            Code::ConnectTimeout => dp_code::DP_CONNECT_TIMEOUT,
            Code::ConnectionRefused => dp_code::DP_CONNECTION_REFUSED,
            Code::NetworkUnreachable => dp_code::DP_NETWORK_UNREACHABLE,
            Code::TlsError => dp_code::DP_TLS_ERROR,
            Code::TlsTimeout => dp_code::DP_TLS_TIMEOUT,
            Code::AuthFailed => dp_code::DP_AUTH_FAILED,
            Code::LoginTimeout => dp_code::DP_LOGIN_TIMEOUT,
            Code::ProtocolError => dp_code::DP_PROTOCOL_ERROR,
            Code::AcquireTimeout => dp_code::DP_ACQUIRE_TIMEOUT,
            Code::PoolClosed => dp_code::DP_POOL_CLOSED,
            Code::QueryTimeout => dp_code::DP_QUERY_TIMEOUT,
            Code::ReadTimeout => dp_code::DP_READ_TIMEOUT,
            Code::WriteTimeout => dp_code::DP_WRITE_TIMEOUT,
            Code::Cancelled => dp_code::DP_CANCELLED,
            Code::ServerError => dp_code::DP_SERVER_ERROR,
            Code::ConnectionLost => dp_code::DP_CONNECTION_LOST,
            Code::NetworkError => dp_code::DP_NETWORK_ERROR,
            _ => dp_code::DP_INTERNAL,
        }
    }
}

/// The layer an error happened in.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dp_layer {
    DP_LAYER_NONE = 0,
    DP_LAYER_DIAL = 1,
    DP_LAYER_LOGIN = 2,
    DP_LAYER_POOL = 3,
    DP_LAYER_QUERY = 4,
}

/// An error: code, layer, limit, SQLSTATE, time spent and a one-line
/// message. Owned by the caller; free with `dp_error_free`.
pub struct dp_error {
    error: Error,
    message: CString,
    limit: Option<CString>,
    sqlstate: Option<CString>,
    source: Option<Box<dp_error>>,
}

/// A caller's deadline and cancel signal. Owned by the caller; free with
/// `dp_ctx_free` once no call uses it.
pub struct dp_ctx {
    deadline: Option<Deadline>,
    cancel: CancelToken,
}

/// A connection pool. Thread-safe: any thread may use it at any time.
pub struct dp_pool {
    pool: dialpool::Pool,
    /// The event callback given at open, closed by `dp_pool_close`.
    events: Option<Arc<CEvents>>,
}

/// A connection checked out of a pool. Use it from one thread at a time;
/// cancel its calls from another thread through their `dp_ctx`.
pub struct dp_conn {
    conn: dialpool::Connection,
}

/// A query result, read-only. Strings it returns stay valid until
/// `dp_result_free`.
pub struct dp_result {
    /// The core keeps a NUL after every value and a C-string copy of every
    /// column name, so the getters return pointers into it: no copy per
    /// result.
    result: dialpool::QueryResult,
}

/// The pool's numbers, filled by `dp_pool_stats`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct dp_stats {
    pub max_open: u32,
    pub open: u32,
    pub in_use: u32,
    pub idle: u32,
    pub waiting: u32,
    pub connecting: u32,
    pub wait_count: u64,
    pub wait_duration_us: u64,
    pub acquire_count: u64,
    pub acquire_timeouts: u64,
    pub acquire_cancelled: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub closed_max_lifetime: u64,
    pub closed_max_idle_time: u64,
    pub closed_max_idle: u64,
    pub closed_dead: u64,
    pub closed_broken: u64,
    pub leaks: u64,
    /// The max_idle_time in force in microseconds (0: off).
    pub max_idle_time_us: u64,
}

/// What a pool event reports (`dp_event.kind`). Kinds may be added in later
/// versions: ignore the ones you do not know.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dp_event_kind {
    /// A connect began (in the background).
    DP_EVENT_CONNECT_START = 1,
    /// A connect ended: `error` is NULL on success; `elapsed_us` is its
    /// time; `dns_us`, `tcp_us`, `tls_us` the dial phases it went through.
    DP_EVENT_CONNECT = 2,
    /// A caller got a connection after waiting `elapsed_us`.
    DP_EVENT_ACQUIRE = 3,
    /// A caller gave its connection back after holding it `elapsed_us`.
    DP_EVENT_RELEASE = 4,
    /// The pool closed a connection aged `elapsed_us`, for `reason`.
    DP_EVENT_CLOSE = 5,
    /// An acquire failed with DP_ACQUIRE_TIMEOUT (`error`) after
    /// `elapsed_us`.
    DP_EVENT_ACQUIRE_TIMEOUT = 6,
    /// A connection has been held `elapsed_us`, longer than leak_threshold.
    DP_EVENT_LEAK = 7,
    /// A setting was lowered to what the server allows: `option` went from
    /// `previous_us` to `value_us` because of `why`.
    DP_EVENT_ADJUSTED = 8,
}

/// One pool event, passed to the callback. Everything it points to is valid
/// during the callback only: copy what you keep. Fields a kind does not use
/// are -1 (durations) or NULL. Fields may be appended in later versions.
#[repr(C)]
pub struct dp_event {
    pub kind: dp_event_kind,
    /// Microseconds: the connect's time, the acquire's wait, the time held
    /// (release, leak), the connection's age (close), the wait before an
    /// acquire timeout.
    pub elapsed_us: i64,
    /// DP_EVENT_CONNECT that failed, DP_EVENT_ACQUIRE_TIMEOUT: the error
    /// (read it with the dp_error_* accessors; do not free it).
    pub error: *const dp_error,
    /// DP_EVENT_CLOSE: "max_lifetime", "max_idle_time", "max_idle", "dead"
    /// (the server or a proxy closed it), "broken" or "pool_closed".
    pub reason: *const c_char,
    /// DP_EVENT_ACQUIRE, DP_EVENT_LEAK: the label given at acquire, or NULL.
    pub label: *const c_char,
    /// DP_EVENT_CONNECT: name resolution (-1 for an IP address), TCP
    /// connect and TLS handshake (-1 without TLS), in microseconds.
    pub dns_us: i64,
    pub tcp_us: i64,
    pub tls_us: i64,
    /// DP_EVENT_ADJUSTED: the option ("max_idle_time"), its value before
    /// (-1: off) and after, in microseconds, and why.
    pub option: *const c_char,
    pub previous_us: i64,
    pub value_us: i64,
    pub why: *const c_char,
}

/// Receives the pool's events (see `dp_pool_open_with_events`).
pub type dp_event_fn = Option<unsafe extern "C" fn(event: *const dp_event, user_data: *mut c_void)>;

/// The caller's `user_data`, handed back untouched; the caller promised it
/// may be used from any thread.
struct UserData(*mut c_void);
// SAFETY: only passed back to the caller's callback, which the API
// documents as called from any thread.
unsafe impl Send for UserData {}
// SAFETY: as above; dialpool never dereferences it.
unsafe impl Sync for UserData {}

/// The C callback as the core's event handler.
struct CEvents {
    callback: unsafe extern "C" fn(*const dp_event, *mut c_void),
    user_data: UserData,
    /// True until `dp_pool_close`. Each call holds it for reading and close
    /// takes it for writing, so once close has returned no call is running
    /// and none starts: the caller may free `user_data` then.
    open: RwLock<bool>,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn micros_opt(d: Option<Duration>) -> i64 {
    d.map_or(-1, micros)
}

fn close_reason_name(reason: CloseReason) -> &'static CStr {
    match reason {
        CloseReason::MaxLifetime => c"max_lifetime",
        CloseReason::MaxIdleTime => c"max_idle_time",
        CloseReason::MaxIdle => c"max_idle",
        CloseReason::Dead => c"dead",
        CloseReason::Broken => c"broken",
        CloseReason::PoolClosed => c"pool_closed",
    }
}

impl CEvents {
    fn deliver(&self, event: &Event<'_>) {
        let text = |s: &str| CString::new(s.replace('\0', " ")).unwrap_or_default();
        let mut ev = dp_event {
            kind: dp_event_kind::DP_EVENT_CONNECT_START,
            elapsed_us: -1,
            error: ptr::null(),
            reason: ptr::null(),
            label: ptr::null(),
            dns_us: -1,
            tcp_us: -1,
            tls_us: -1,
            option: ptr::null(),
            previous_us: -1,
            value_us: -1,
            why: ptr::null(),
        };
        // Owners of what `ev` points to, alive until the callback returns.
        let mut error: Option<Box<dp_error>> = None;
        let mut label: Option<CString> = None;
        let mut option: Option<CString> = None;
        let mut why: Option<CString> = None;
        match event {
            Event::ConnectStart => {}
            Event::ConnectEnd {
                elapsed,
                result,
                timings,
            } => {
                ev.kind = dp_event_kind::DP_EVENT_CONNECT;
                ev.elapsed_us = micros(*elapsed);
                if let Some(t) = timings {
                    ev.dns_us = micros_opt(t.dns);
                    ev.tcp_us = micros_opt(t.connect);
                    ev.tls_us = micros_opt(t.tls);
                }
                if let Err(e) = result {
                    error = Some(boxed_error((*e).clone()));
                }
            }
            Event::Acquire { wait, label: l } => {
                ev.kind = dp_event_kind::DP_EVENT_ACQUIRE;
                ev.elapsed_us = micros(*wait);
                label = l.map(text);
            }
            Event::Release { held } => {
                ev.kind = dp_event_kind::DP_EVENT_RELEASE;
                ev.elapsed_us = micros(*held);
            }
            Event::Close { reason, age } => {
                ev.kind = dp_event_kind::DP_EVENT_CLOSE;
                ev.elapsed_us = micros(*age);
                ev.reason = close_reason_name(*reason).as_ptr();
            }
            Event::AcquireTimeout { error: e } => {
                ev.kind = dp_event_kind::DP_EVENT_ACQUIRE_TIMEOUT;
                ev.elapsed_us = micros_opt(e.elapsed());
                error = Some(boxed_error((*e).clone()));
            }
            Event::Leak { held, label: l } => {
                ev.kind = dp_event_kind::DP_EVENT_LEAK;
                ev.elapsed_us = micros(*held);
                label = l.map(text);
            }
            Event::Adjusted {
                option: o,
                from,
                to,
                why: w,
            } => {
                ev.kind = dp_event_kind::DP_EVENT_ADJUSTED;
                ev.previous_us = micros_opt(*from);
                ev.value_us = micros(*to);
                option = Some(text(o));
                why = Some(text(w));
            }
            // A kind this library does not pass on yet.
            _ => return,
        }
        ev.error = error
            .as_deref()
            .map_or(ptr::null(), |e| e as *const dp_error);
        ev.label = label.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        ev.option = option.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        ev.why = why.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        // SAFETY: the caller's callback with its own user_data, given a
        // pointer to an event that outlives the call.
        unsafe { (self.callback)(&ev, self.user_data.0) };
    }

    /// Stops the calls; waits for those running (see `open`).
    fn close(&self) {
        *self.open.write().unwrap_or_else(|p| p.into_inner()) = false;
    }
}

impl EventHandler for CEvents {
    fn event(&self, event: &Event<'_>) {
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        if *open {
            // A panic here must not unwind into the pool's caller.
            let _ = catch_unwind(AssertUnwindSafe(|| self.deliver(event)));
        }
    }
}

fn boxed_error(error: Error) -> Box<dp_error> {
    let cstring = |s: &str| CString::new(s.replace('\0', " ")).unwrap_or_default();
    let source = std::error::Error::source(&error)
        .and_then(|s| s.downcast_ref::<Error>())
        .map(|s| boxed_error(s.clone()));
    Box::new(dp_error {
        message: cstring(&error.to_string()),
        limit: error.limit().map(cstring),
        sqlstate: error.sqlstate().map(cstring),
        source,
        error,
    })
}

fn set_error(err: *mut *mut dp_error, error: Error) -> dp_code {
    let code = dp_code::from(error.code());
    if !err.is_null() {
        let boxed = boxed_error(error);
        // SAFETY: the caller gave a writable `dp_error **` (checked non-NULL).
        unsafe { *err = Box::into_raw(boxed) };
    }
    code
}

fn invalid(err: *mut *mut dp_error, what: &str) -> dp_code {
    set_error(err, Error::invalid_argument(what.to_string()))
}

/// Runs `body` behind the panic boundary: a panic becomes DP_INTERNAL.
fn guard(err: *mut *mut dp_error, body: impl FnOnce() -> Result<(), Error>) -> dp_code {
    if !err.is_null() {
        // SAFETY: a writable out-pointer; clear it so callers can test it.
        unsafe { *err = ptr::null_mut() };
    }
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => dp_code::DP_OK,
        Ok(Err(e)) => set_error(err, e),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_error(
                err,
                Error::internal(format!("panic inside dialpool: {what}")),
            )
        }
    }
}

/// A C string argument, or INVALID_ARGUMENT naming it.
fn text<'a>(p: *const c_char, name: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(Error::invalid_argument(format!("{name} is NULL")));
    }
    // SAFETY: non-NULL and, per the API contract, NUL-terminated.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Error::invalid_argument(format!("{name} is not valid UTF-8")))
}

fn ctx_of(ctx: *const dp_ctx) -> Ctx {
    if ctx.is_null() {
        return Ctx::none();
    }
    // SAFETY: a live dp_ctx per the API contract.
    let c = unsafe { &*ctx };
    Ctx {
        deadline: c.deadline,
        cancel: Some(c.cancel.clone()),
    }
}

fn params_of<'a>(
    nparams: usize,
    params: *const *const c_char,
) -> Result<Vec<Option<&'a str>>, Error> {
    if nparams == 0 {
        return Ok(Vec::new());
    }
    if params.is_null() {
        return Err(Error::invalid_argument(format!(
            "params is NULL but nparams is {nparams}"
        )));
    }
    (0..nparams)
        .map(|i| {
            // SAFETY: the caller gave an array of nparams pointers.
            let p = unsafe { *params.add(i) };
            if p.is_null() {
                Ok(None)
            } else {
                text(p, &format!("params[{i}]")).map(Some)
            }
        })
        .collect()
}

fn make_result(result: dialpool::QueryResult) -> Box<dp_result> {
    Box::new(dp_result { result })
}

/// Where a statement runs: through the pool (acquire, query and release
/// under one ctx) or on a connection the caller holds.
enum Target<'a> {
    Pool(&'a dp_pool),
    Conn(&'a mut dp_conn),
}

/// What the caller gets back: the rows, or only the affected row count
/// (the pointer may be NULL).
enum Out {
    Result(*mut *mut dp_result),
    Affected(*mut u64),
}

/// The four statement calls: reads the C arguments, runs the statement on
/// the internal runtime behind the panic boundary, hands back `out`.
fn statement(
    target: Target<'_>,
    ctx: *const dp_ctx,
    sql: *const c_char,
    nparams: usize,
    params: *const *const c_char,
    out: Out,
    err: *mut *mut dp_error,
) -> dp_code {
    guard(err, || {
        let sql = text(sql, "sql")?;
        let params = params_of(nparams, params)?;
        let ctx = ctx_of(ctx);
        let r = match target {
            Target::Pool(p) => dialpool::runtime::block_on(p.pool.query_ctx(sql, &params, &ctx))??,
            Target::Conn(c) => dialpool::runtime::block_on(c.conn.query_ctx(sql, &params, &ctx))??,
        };
        match out {
            Out::Result(result) => write_out(result, make_result(r)),
            Out::Affected(affected) if !affected.is_null() => {
                // SAFETY: a writable u64 per the API contract.
                unsafe { *affected = r.affected_rows };
            }
            Out::Affected(_) => {}
        }
        Ok(())
    })
}

fn write_out<T>(out: *mut *mut T, value: Box<T>) {
    // SAFETY: checked non-NULL by the caller of this helper.
    unsafe { *out = Box::into_raw(value) };
}

// ---- codes, version, runtime ----

/// The name of a code, e.g. "DP_QUERY_TIMEOUT"; "DP_UNKNOWN" for a number
/// that is not a code. Static storage; thread-safe.
#[no_mangle]
pub extern "C" fn dp_code_name(code: dp_code) -> *const c_char {
    let name: &'static [u8] = match Code::from_u32(code as u32) {
        Some(c) => match c {
            Code::InvalidArgument => b"DP_INVALID_ARGUMENT\0",
            Code::InvalidState => b"DP_INVALID_STATE\0",
            Code::Internal => b"DP_INTERNAL\0",
            Code::DnsError => b"DP_DNS_ERROR\0",
            Code::DnsTimeout => b"DP_DNS_TIMEOUT\0",
            Code::ConnectTimeout => b"DP_CONNECT_TIMEOUT\0",
            Code::ConnectionRefused => b"DP_CONNECTION_REFUSED\0",
            Code::NetworkUnreachable => b"DP_NETWORK_UNREACHABLE\0",
            Code::TlsError => b"DP_TLS_ERROR\0",
            Code::TlsTimeout => b"DP_TLS_TIMEOUT\0",
            Code::AuthFailed => b"DP_AUTH_FAILED\0",
            Code::LoginTimeout => b"DP_LOGIN_TIMEOUT\0",
            Code::ProtocolError => b"DP_PROTOCOL_ERROR\0",
            Code::AcquireTimeout => b"DP_ACQUIRE_TIMEOUT\0",
            Code::PoolClosed => b"DP_POOL_CLOSED\0",
            Code::QueryTimeout => b"DP_QUERY_TIMEOUT\0",
            Code::ReadTimeout => b"DP_READ_TIMEOUT\0",
            Code::WriteTimeout => b"DP_WRITE_TIMEOUT\0",
            Code::Cancelled => b"DP_CANCELLED\0",
            Code::ServerError => b"DP_SERVER_ERROR\0",
            Code::ConnectionLost => b"DP_CONNECTION_LOST\0",
            Code::NetworkError => b"DP_NETWORK_ERROR\0",
            _ => b"DP_UNKNOWN\0",
        },
        None if code as u32 == 0 => b"DP_OK\0",
        None => b"DP_UNKNOWN\0",
    };
    name.as_ptr() as *const c_char
}

/// The library version, e.g. "0.1.0". Static storage; thread-safe.
#[no_mangle]
pub extern "C" fn dp_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// Sets the internal runtime's worker thread count (1–1024). Only before the
/// first pool or dial: DP_INVALID_STATE afterwards. Thread-safe.
#[no_mangle]
pub extern "C" fn dp_set_worker_threads(count: u32, err: *mut *mut dp_error) -> dp_code {
    guard(err, || {
        dialpool::runtime::set_worker_threads(count as usize)
    })
}

// ---- errors ----

/// The error's code. 0 (DP_OK) for NULL.
#[no_mangle]
pub extern "C" fn dp_error_code(err: *const dp_error) -> dp_code {
    // SAFETY: NULL or a live dp_error.
    unsafe { err.as_ref() }.map_or(dp_code::DP_OK, |e| e.error.code().into())
}

/// The layer the error happened in (DP_LAYER_NONE for NULL).
#[no_mangle]
pub extern "C" fn dp_error_layer(err: *const dp_error) -> dp_layer {
    // SAFETY: NULL or a live dp_error.
    match unsafe { err.as_ref() }.map(|e| e.error.layer()) {
        Some(Layer::Dial) => dp_layer::DP_LAYER_DIAL,
        Some(Layer::Login) => dp_layer::DP_LAYER_LOGIN,
        Some(Layer::Pool) => dp_layer::DP_LAYER_POOL,
        Some(Layer::Query) => dp_layer::DP_LAYER_QUERY,
        _ => dp_layer::DP_LAYER_NONE,
    }
}

/// The layer's name: "none", "dial", "login", "pool" or "query". Static
/// storage; thread-safe.
#[no_mangle]
pub extern "C" fn dp_layer_name(layer: dp_layer) -> *const c_char {
    let name: &'static std::ffi::CStr = match layer {
        dp_layer::DP_LAYER_NONE => c"none",
        dp_layer::DP_LAYER_DIAL => c"dial",
        dp_layer::DP_LAYER_LOGIN => c"login",
        dp_layer::DP_LAYER_POOL => c"pool",
        dp_layer::DP_LAYER_QUERY => c"query",
    };
    name.as_ptr()
}

/// The one-line message. Valid until `dp_error_free`; "" for NULL.
#[no_mangle]
pub extern "C" fn dp_error_message(err: *const dp_error) -> *const c_char {
    // SAFETY: NULL or a live dp_error.
    unsafe { err.as_ref() }.map_or(c"".as_ptr(), |e| e.message.as_ptr())
}

/// The option that fired ("connect_timeout", …) or "deadline" for the
/// caller's; NULL when no limit fired. Valid until `dp_error_free`.
#[no_mangle]
pub extern "C" fn dp_error_limit(err: *const dp_error) -> *const c_char {
    // SAFETY: NULL or a live dp_error.
    unsafe { err.as_ref() }
        .and_then(|e| e.limit.as_ref())
        .map_or(ptr::null(), |s| s.as_ptr())
}

/// The server's SQLSTATE, or NULL. Valid until `dp_error_free`.
#[no_mangle]
pub extern "C" fn dp_error_sqlstate(err: *const dp_error) -> *const c_char {
    // SAFETY: NULL or a live dp_error.
    unsafe { err.as_ref() }
        .and_then(|e| e.sqlstate.as_ref())
        .map_or(ptr::null(), |s| s.as_ptr())
}

/// Time spent in the failed operation in microseconds; -1 when unknown.
#[no_mangle]
pub extern "C" fn dp_error_elapsed_us(err: *const dp_error) -> i64 {
    // SAFETY: NULL or a live dp_error.
    unsafe { err.as_ref() }
        .and_then(|e| e.error.elapsed())
        .map_or(-1, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// 1 when a limit ran out, else 0.
#[no_mangle]
pub extern "C" fn dp_error_is_timeout(err: *const dp_error) -> c_int {
    // SAFETY: NULL or a live dp_error.
    c_int::from(unsafe { err.as_ref() }.is_some_and(|e| e.error.is_timeout()))
}

/// 1 when nothing of the statement reached the server, so a retry cannot
/// run it twice; else 0.
#[no_mangle]
pub extern "C" fn dp_error_is_retryable(err: *const dp_error) -> c_int {
    // SAFETY: NULL or a live dp_error.
    c_int::from(unsafe { err.as_ref() }.is_some_and(|e| e.error.is_retryable()))
}

/// The error that caused this one (for ACQUIRE_TIMEOUT: the pool's last
/// connect error), or NULL. Owned by `err`: valid until `dp_error_free(err)`.
#[no_mangle]
pub extern "C" fn dp_error_source(err: *const dp_error) -> *const dp_error {
    // SAFETY: NULL or a live dp_error.
    unsafe { err.as_ref() }
        .and_then(|e| e.source.as_deref())
        .map_or(ptr::null(), |s| s as *const dp_error)
}

/// Frees an error. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dp_error_free(err: *mut dp_error) {
    if !err.is_null() {
        // SAFETY: made by Box::into_raw in this library, freed once.
        drop(unsafe { Box::from_raw(err) });
    }
}

// ---- contexts ----

/// A context whose deadline is `timeout_ms` from now (negative: no deadline
/// of its own). Never NULL. Thread-safe to share between calls.
#[no_mangle]
pub extern "C" fn dp_ctx_new(timeout_ms: i64) -> *mut dp_ctx {
    let deadline = u64::try_from(timeout_ms)
        .ok()
        .map(|ms| Deadline::starting_at(Instant::now(), CALLER, Duration::from_millis(ms)));
    Box::into_raw(Box::new(dp_ctx {
        deadline,
        cancel: CancelToken::new(),
    }))
}

/// Cancels every call running or later made with this context: each
/// returns DP_CANCELLED at once, a running statement is cancelled on the
/// server. Thread-safe, async-signal-unsafe. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dp_ctx_cancel(ctx: *const dp_ctx) {
    // SAFETY: NULL or a live dp_ctx.
    if let Some(c) = unsafe { ctx.as_ref() } {
        c.cancel.cancel();
    }
}

/// Frees a context no call is using any more. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dp_ctx_free(ctx: *mut dp_ctx) {
    if !ctx.is_null() {
        // SAFETY: made by dp_ctx_new, freed once.
        drop(unsafe { Box::from_raw(ctx) });
    }
}

// ---- pools ----

/// Opens a pool for `url` (postgres://, postgresql://, mysql://,
/// mariadb://). Does not block on the network: connections are made on
/// first use (and `min_idle` in the background). On success `*pool` is the
/// pool, to be closed with `dp_pool_close`. Thread-safe.
#[no_mangle]
pub extern "C" fn dp_pool_open(
    url: *const c_char,
    pool: *mut *mut dp_pool,
    err: *mut *mut dp_error,
) -> dp_code {
    if pool.is_null() {
        return invalid(err, "pool (the out-pointer) is NULL");
    }
    guard(err, || {
        let config = Config::parse(text(url, "url")?)?;
        let p = dialpool::Pool::open_blocking(config, None)?;
        write_out(
            pool,
            Box::new(dp_pool {
                pool: p,
                events: None,
            }),
        );
        Ok(())
    })
}

/// As `dp_pool_open`, with `callback` receiving the pool's events (connects,
/// acquires, releases, closes with their reason, acquire timeouts, leaks,
/// settings adjusted to the server) with `user_data`. NULL `callback`: no
/// events, as `dp_pool_open`.
///
/// The callback runs synchronously on the thread where the event happens —
/// a dialpool runtime thread (connects, closes, background work) or the
/// thread calling dp_pool_acquire, dp_pool_query or dp_conn_release — and
/// may run on several threads at once; never under the pool's lock. It
/// must return quickly and must not block: it holds up the pool's work on
/// that thread. It must not call dp_pool_close on this pool nor a blocking
/// dialpool call (inside dialpool's own work those fail with
/// DP_INVALID_STATE). It is not called any more once dp_pool_close has returned, so
/// `user_data` may be freed then. Thread-safe.
#[no_mangle]
pub extern "C" fn dp_pool_open_with_events(
    url: *const c_char,
    callback: dp_event_fn,
    user_data: *mut c_void,
    pool: *mut *mut dp_pool,
    err: *mut *mut dp_error,
) -> dp_code {
    if pool.is_null() {
        return invalid(err, "pool (the out-pointer) is NULL");
    }
    guard(err, || {
        let config = Config::parse(text(url, "url")?)?;
        let events = callback.map(|callback| {
            Arc::new(CEvents {
                callback,
                user_data: UserData(user_data),
                open: RwLock::new(true),
            })
        });
        let handler = events.clone().map(|e| -> Arc<dyn EventHandler> { e });
        let p = dialpool::Pool::open_blocking(config, handler)?;
        write_out(pool, Box::new(dp_pool { pool: p, events }));
        Ok(())
    })
}

/// The name of an event kind, e.g. "connect", "acquire_timeout" (the names
/// the Python and Go bindings use); "unknown" for another number. Static
/// storage; thread-safe. (An int, not the enum: any number is safe to pass.)
#[no_mangle]
pub extern "C" fn dp_event_kind_name(kind: c_int) -> *const c_char {
    let name: &'static CStr = match kind {
        1 => c"connect_start",
        2 => c"connect",
        3 => c"acquire",
        4 => c"release",
        5 => c"close",
        6 => c"acquire_timeout",
        7 => c"leak",
        8 => c"adjusted",
        _ => c"unknown",
    };
    name.as_ptr()
}

/// Closes the pool and frees the handle: idle connections are closed at
/// once, waiters get DP_POOL_CLOSED, connections still checked out are
/// closed when released (their dp_conn handles stay valid until then).
/// The event callback (dp_pool_open_with_events) gets the idle
/// connections' close events, then is never called again: this returns
/// once no call of it is running. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dp_pool_close(pool: *mut dp_pool) {
    if pool.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: made by dp_pool_open, closed once.
        let p = unsafe { Box::from_raw(pool) };
        p.pool.close();
        // After the close, so that the idle connections' close events still
        // reach the callback; then no call runs or starts.
        if let Some(events) = &p.events {
            events.close();
        }
    }));
}

/// Checks out a connection within the earlier of acquire_timeout and the
/// ctx deadline. Blocks. Thread-safe. Release with `dp_conn_release`.
#[no_mangle]
pub extern "C" fn dp_pool_acquire(
    pool: *const dp_pool,
    ctx: *const dp_ctx,
    conn: *mut *mut dp_conn,
    err: *mut *mut dp_error,
) -> dp_code {
    acquire(pool, ctx, None, conn, err)
}

/// As `dp_pool_acquire`, taking the connection whose id is `prefer` (from
/// `dp_conn_id` at an earlier checkout) when it is idle, and any other
/// otherwise; 0 prefers none. For a caller that checks out per statement
/// (a thread, a database/sql connection): with the same connection each
/// time, its statements keep meeting the same server process, which on a
/// host shared with the server saves cross-CPU wakeups (up to a quarter of
/// the throughput of short statements on 2 CPUs).
#[no_mangle]
pub extern "C" fn dp_pool_acquire_prefer(
    pool: *const dp_pool,
    ctx: *const dp_ctx,
    prefer: u64,
    conn: *mut *mut dp_conn,
    err: *mut *mut dp_error,
) -> dp_code {
    acquire(pool, ctx, (prefer != 0).then_some(prefer), conn, err)
}

fn acquire(
    pool: *const dp_pool,
    ctx: *const dp_ctx,
    prefer: Option<u64>,
    conn: *mut *mut dp_conn,
    err: *mut *mut dp_error,
) -> dp_code {
    // SAFETY: NULL or a live dp_pool.
    let Some(p) = (unsafe { pool.as_ref() }) else {
        return invalid(err, "pool is NULL");
    };
    if conn.is_null() {
        return invalid(err, "conn (the out-pointer) is NULL");
    }
    guard(err, || {
        // An idle connection is handed out without the executor; the
        // refusals of a blocking call still apply.
        dialpool::runtime::check_caller()?;
        let c = match p.pool.try_acquire_idle(None, prefer) {
            Some(c) => c?,
            None => {
                let ctx = ctx_of(ctx);
                dialpool::runtime::block_on(p.pool.acquire_ctx_preferring(&ctx, None, prefer))??
            }
        };
        write_out(conn, Box::new(dp_conn { conn: c }));
        Ok(())
    })
}

/// The connection's id in its pool: never 0, the same for the
/// connection's whole life, for `dp_pool_acquire_prefer`. 0 for NULL.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn dp_conn_id(conn: *const dp_conn) -> u64 {
    // SAFETY: NULL or a live dp_conn.
    unsafe { conn.as_ref() }.map_or(0, |c| c.conn.id())
}

/// Acquires, runs `sql` with `nparams` text parameters (NULL entries are SQL
/// NULL) and releases, all under one ctx. Blocks. Thread-safe. On success
/// `*result` is owned by the caller (`dp_result_free`). The acquire prefers
/// the connection of the calling thread's last `dp_pool_query` on this
/// pool, as `dp_pool_acquire_prefer` does.
#[no_mangle]
pub extern "C" fn dp_pool_query(
    pool: *const dp_pool,
    ctx: *const dp_ctx,
    sql: *const c_char,
    nparams: usize,
    params: *const *const c_char,
    result: *mut *mut dp_result,
    err: *mut *mut dp_error,
) -> dp_code {
    // SAFETY: NULL or a live dp_pool.
    let Some(p) = (unsafe { pool.as_ref() }) else {
        return invalid(err, "pool is NULL");
    };
    if result.is_null() {
        return invalid(err, "result (the out-pointer) is NULL");
    }
    statement(
        Target::Pool(p),
        ctx,
        sql,
        nparams,
        params,
        Out::Result(result),
        err,
    )
}

/// As `dp_pool_query` for statements without rows: `*affected` gets the
/// affected row count (may be NULL). Blocks. Thread-safe.
#[no_mangle]
pub extern "C" fn dp_pool_execute(
    pool: *const dp_pool,
    ctx: *const dp_ctx,
    sql: *const c_char,
    nparams: usize,
    params: *const *const c_char,
    affected: *mut u64,
    err: *mut *mut dp_error,
) -> dp_code {
    // SAFETY: NULL or a live dp_pool.
    let Some(p) = (unsafe { pool.as_ref() }) else {
        return invalid(err, "pool is NULL");
    };
    statement(
        Target::Pool(p),
        ctx,
        sql,
        nparams,
        params,
        Out::Affected(affected),
        err,
    )
}

/// Fills `*stats` with the pool's numbers. Thread-safe, non-blocking.
#[no_mangle]
pub extern "C" fn dp_pool_stats(
    pool: *const dp_pool,
    stats: *mut dp_stats,
    err: *mut *mut dp_error,
) -> dp_code {
    // SAFETY: NULL or a live dp_pool.
    let Some(p) = (unsafe { pool.as_ref() }) else {
        return invalid(err, "pool is NULL");
    };
    if stats.is_null() {
        return invalid(err, "stats is NULL");
    }
    guard(err, || {
        let s = p.pool.stats();
        let out = dp_stats {
            max_open: s.max_open,
            open: s.open,
            in_use: s.in_use,
            idle: s.idle,
            waiting: s.waiting,
            connecting: s.connecting,
            wait_count: s.wait_count,
            wait_duration_us: s.wait_duration_total.as_micros() as u64,
            acquire_count: s.acquire_count,
            acquire_timeouts: s.acquire_timeouts,
            acquire_cancelled: s.acquire_cancelled,
            connects: s.connects,
            connect_failures: s.connect_failures.iter().map(|(_, n)| n).sum(),
            closed_max_lifetime: s.closed_max_lifetime,
            closed_max_idle_time: s.closed_max_idle_time,
            closed_max_idle: s.closed_max_idle,
            closed_dead: s.closed_dead,
            closed_broken: s.closed_broken,
            leaks: s.leaks,
            max_idle_time_us: s.max_idle_time.map_or(0, |d| d.as_micros() as u64),
        };
        // SAFETY: a writable dp_stats (checked non-NULL).
        unsafe { *stats = out };
        Ok(())
    })
}

/// The pool's metrics in the Prometheus text exposition format (version
/// 0.0.4), under the OpenTelemetry database-client names as the
/// OpenTelemetry Prometheus exporter writes them (db_client_connection_count,
/// db_client_connection_wait_time_seconds, …) plus dialpool's own
/// (dialpool_dial_duration_seconds, …). On success `*text` is a
/// NUL-terminated string the caller frees with `dp_string_free`.
/// Thread-safe, non-blocking.
#[no_mangle]
pub extern "C" fn dp_pool_metrics_text(
    pool: *const dp_pool,
    text: *mut *mut c_char,
    err: *mut *mut dp_error,
) -> dp_code {
    // SAFETY: NULL or a live dp_pool.
    let Some(p) = (unsafe { pool.as_ref() }) else {
        return invalid(err, "pool is NULL");
    };
    if text.is_null() {
        return invalid(err, "text (the out-pointer) is NULL");
    }
    guard(err, || {
        let rendered = p.pool.metrics_text();
        let c = CString::new(rendered.replace('\0', " ")).unwrap_or_default();
        // SAFETY: a writable char * (checked non-NULL).
        unsafe { *text = c.into_raw() };
        Ok(())
    })
}

/// Frees a string the library gave the caller (dp_pool_metrics_text). NULL
/// is a no-op.
#[no_mangle]
pub extern "C" fn dp_string_free(text: *mut c_char) {
    if !text.is_null() {
        // SAFETY: made by CString::into_raw in this library, freed once.
        drop(unsafe { CString::from_raw(text) });
    }
}

// ---- connections ----

/// Gives the connection back to its pool (rolled back first when a
/// transaction is open) and frees the handle. Never blocks. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dp_conn_release(conn: *mut dp_conn) {
    if conn.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: made by dp_pool_acquire, released once.
        drop(unsafe { Box::from_raw(conn) });
    }));
}

/// Runs `sql` on this connection under the earlier of query_timeout and the
/// ctx deadline; a deadline or a cancel cancels it on the server. Blocks.
/// One thread at a time per connection.
#[no_mangle]
pub extern "C" fn dp_conn_query(
    conn: *mut dp_conn,
    ctx: *const dp_ctx,
    sql: *const c_char,
    nparams: usize,
    params: *const *const c_char,
    result: *mut *mut dp_result,
    err: *mut *mut dp_error,
) -> dp_code {
    // SAFETY: NULL or a live dp_conn used by this thread only.
    let Some(c) = (unsafe { conn.as_mut() }) else {
        return invalid(err, "conn is NULL");
    };
    if result.is_null() {
        return invalid(err, "result (the out-pointer) is NULL");
    }
    statement(
        Target::Conn(c),
        ctx,
        sql,
        nparams,
        params,
        Out::Result(result),
        err,
    )
}

/// As `dp_conn_query` for statements without rows; `*affected` (may be
/// NULL) gets the affected row count.
#[no_mangle]
pub extern "C" fn dp_conn_execute(
    conn: *mut dp_conn,
    ctx: *const dp_ctx,
    sql: *const c_char,
    nparams: usize,
    params: *const *const c_char,
    affected: *mut u64,
    err: *mut *mut dp_error,
) -> dp_code {
    // SAFETY: NULL or a live dp_conn used by this thread only.
    let Some(c) = (unsafe { conn.as_mut() }) else {
        return invalid(err, "conn is NULL");
    };
    statement(
        Target::Conn(c),
        ctx,
        sql,
        nparams,
        params,
        Out::Affected(affected),
        err,
    )
}

// ---- statements the caller waits for itself ----

/// An operation the caller waits for itself: a statement started with
/// `dp_conn_query_start` (ended by `dp_op_finish`) or a dial started with
/// `dp_dial_start` (ended by `dp_dial_finish`), driven by `dp_op_poll`.
/// Use it from one thread at a time; successive calls may come from
/// different threads.
pub struct dp_op {
    fut: Option<OpFuture>,
    done: Option<Result<OpOut, Error>>,
}

/// What an operation gives: a statement's rows or a dial's socket.
enum OpOut {
    Rows(dialpool::QueryResult),
    Socket(std::net::TcpStream),
}

type OpFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<OpOut, Error>> + Send>>;

/// What a statement waits for before `dp_op_poll` can take it further:
/// `fd` becoming readable (`events` has POLLIN) or writable (POLLOUT), or
/// `timeout_us` microseconds passing (negative: no limit), whichever comes
/// first. `socket_id` tells connections apart when the kernel reuses a
/// descriptor number: unique in the process for a database connection's
/// socket (never 0), 0 for a short-lived one (a server-side cancel).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct dp_wait {
    pub fd: c_int,
    pub events: i16,
    pub socket_id: u64,
    pub timeout_us: i64,
}

/// Starts `sql` with `nparams` text parameters (NULL entries are SQL NULL)
/// on this connection without blocking, for a caller that waits for the
/// socket in its own event loop: `dp_op_poll` takes it as far as it goes
/// without blocking, `dp_op_finish` ends it. `sql`, `params` and `ctx`'s
/// deadline are copied; `ctx` must stay alive until `dp_op_finish` (a
/// `dp_ctx_cancel` on it cancels the statement, on the server too). The
/// connection must not be used or released until then. On success `*op`
/// is the operation.
#[no_mangle]
pub extern "C" fn dp_conn_query_start(
    conn: *mut dp_conn,
    ctx: *const dp_ctx,
    sql: *const c_char,
    nparams: usize,
    params: *const *const c_char,
    op: *mut *mut dp_op,
    err: *mut *mut dp_error,
) -> dp_code {
    // SAFETY: NULL or a live dp_conn that, per the contract above, nobody
    // else uses until dp_op_finish.
    let Some(c) = (unsafe { conn.as_mut() }) else {
        return invalid(err, "conn is NULL");
    };
    if op.is_null() {
        return invalid(err, "op (the out-pointer) is NULL");
    }
    guard(err, || {
        let sql = text(sql, "sql")?.to_owned();
        let params: Vec<Option<String>> = params_of(nparams, params)?
            .into_iter()
            .map(|p| p.map(str::to_owned))
            .collect();
        let ctx = ctx_of(ctx);
        // SAFETY: the caller keeps the connection alive and unused until
        // dp_op_finish, which drops this future first.
        let conn: &'static mut dialpool::Connection = unsafe { &mut *(&mut c.conn as *mut _) };
        let fut: OpFuture = Box::pin(async move {
            let params: Vec<Option<&str>> = params.iter().map(Option::as_deref).collect();
            conn.query_ctx(&sql, &params, &ctx).await.map(OpOut::Rows)
        });
        write_op(op, fut);
        Ok(())
    })
}

/// Hands a started operation to the caller.
fn write_op(op: *mut *mut dp_op, fut: OpFuture) {
    write_out(
        op,
        Box::new(dp_op {
            fut: Some(fut),
            done: None,
        }),
    );
}

/// The connection's socket: `*fd` its descriptor (owned by the library:
/// never close it; it changes only when the connection does) and
/// `*socket_id` as in `dp_wait`, for a caller that prepares its wait before
/// `dp_conn_query_start`. Either out-pointer may be NULL.
#[no_mangle]
pub extern "C" fn dp_conn_socket(
    conn: *mut dp_conn,
    fd: *mut c_int,
    socket_id: *mut u64,
    err: *mut *mut dp_error,
) -> dp_code {
    // SAFETY: NULL or a live dp_conn used by this thread only.
    let Some(c) = (unsafe { conn.as_mut() }) else {
        return invalid(err, "conn is NULL");
    };
    guard(err, || {
        let (raw, id) = c.conn.session().socket_ident();
        if !fd.is_null() {
            // SAFETY: a writable int per the API contract.
            unsafe { *fd = raw };
        }
        if !socket_id.is_null() {
            // SAFETY: a writable u64 per the API contract.
            unsafe { *socket_id = id };
        }
        Ok(())
    })
}

/// Takes the statement as far as it goes without waiting. Returns 1 when
/// it must wait for one socket: `*wait` says which and for what; wait for
/// that in any way (poll(2), an event loop), then call again. The socket is
/// usually the connection's own (`dp_conn_socket`), but may be a
/// short-lived one (`socket_id` 0: the connection of a server-side
/// cancel). Returns 0 when it has finished: `dp_op_finish` gives the
/// outcome without blocking. Anything else the statement waits for
/// (several sockets, a deadline alone) is waited for inside this call. A
/// `dp_ctx_cancel` does not end the caller's own wait: whoever cancels
/// must end it too, then call again.
#[no_mangle]
pub extern "C" fn dp_op_poll(op: *mut dp_op, wait: *mut dp_wait) -> c_int {
    // SAFETY: NULL or a live dp_op used by this thread only.
    let Some(o) = (unsafe { op.as_mut() }) else {
        return 0;
    };
    let Some(fut) = o.fut.as_mut() else {
        return 0;
    };
    let polled = catch_unwind(AssertUnwindSafe(|| dialpool::runtime::step(fut.as_mut())));
    let outcome = match polled {
        Ok(Ok(dialpool::runtime::Step::Wait(w))) => {
            if !wait.is_null() {
                let timeout_us = w.until.map_or(-1, |at| {
                    let left = at.saturating_duration_since(Instant::now());
                    // Rounded up: the caller never wakes before the deadline.
                    i64::try_from(left.as_nanos().div_ceil(1000)).unwrap_or(i64::MAX)
                });
                // SAFETY: a writable dp_wait per the API contract.
                unsafe {
                    *wait = dp_wait {
                        fd: w.fd,
                        events: w.events,
                        socket_id: w.socket_id,
                        timeout_us,
                    }
                };
            }
            return 1;
        }
        Ok(Ok(dialpool::runtime::Step::Ready(r))) => r,
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::internal(
            "panic inside dialpool while running a statement",
        )),
    };
    finish_op(o, outcome);
    0
}

fn finish_op(o: &mut dp_op, outcome: Result<OpOut, Error>) {
    let fut = o.fut.take();
    // A future that panicked may panic again while dropped.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(fut)));
    o.done = Some(outcome);
}

/// Ends the statement, waiting for it (blocking) when `dp_op_poll` has not
/// seen it finish, and frees `op` in every case. On success `*result`
/// (when `result` is not NULL) is owned by the caller (`dp_result_free`).
/// NULL `op` is INVALID_ARGUMENT; so is a dial's op (its socket is closed:
/// end a dial with `dp_dial_finish`).
#[no_mangle]
pub extern "C" fn dp_op_finish(
    op: *mut dp_op,
    result: *mut *mut dp_result,
    err: *mut *mut dp_error,
) -> dp_code {
    if op.is_null() {
        return invalid(err, "op is NULL");
    }
    // SAFETY: made by dp_conn_query_start or dp_dial_start, finished once.
    let o = unsafe { Box::from_raw(op) };
    guard(err, move || {
        match run_op(o)? {
        OpOut::Rows(r) => {
            if !result.is_null() {
                write_out(result, make_result(r));
            }
            Ok(())
        }
        OpOut::Socket(_) => Err(Error::invalid_argument(
            "this operation is a dial (dp_dial_start): end it with dp_dial_finish; its socket was closed",
        )),
    }
    })
}

/// An operation's outcome, running it to its end (blocking) when
/// `dp_op_poll` has not seen it finish.
fn run_op(mut o: Box<dp_op>) -> Result<OpOut, Error> {
    if o.done.is_none() {
        let outcome = match o.fut.as_mut() {
            Some(fut) => dialpool::runtime::block_on(fut.as_mut()).and_then(|r| r),
            None => Err(Error::internal(
                "the operation has neither a future nor an outcome",
            )),
        };
        finish_op(&mut o, outcome);
    }
    o.done
        .take()
        .unwrap_or_else(|| Err(Error::internal("the operation has no outcome")))
}

// ---- results ----

fn result_ref<'a>(r: *const dp_result) -> Option<&'a dp_result> {
    // SAFETY: NULL or a live dp_result.
    unsafe { r.as_ref() }
}

/// Rows in the result (0 for NULL).
#[no_mangle]
pub extern "C" fn dp_result_row_count(result: *const dp_result) -> usize {
    result_ref(result).map_or(0, |r| r.result.row_count())
}

/// Columns in the result (0 for NULL).
#[no_mangle]
pub extern "C" fn dp_result_column_count(result: *const dp_result) -> usize {
    result_ref(result).map_or(0, |r| r.result.column_count())
}

/// A column's name, or NULL out of range. Valid until `dp_result_free`.
#[no_mangle]
pub extern "C" fn dp_result_column_name(result: *const dp_result, col: usize) -> *const c_char {
    result_ref(result)
        .and_then(|r| r.result.columns().get(col))
        .map_or(ptr::null(), |c| c.c_name().as_ptr())
}

/// A value as NUL-terminated text; NULL for SQL NULL or out of range. Valid
/// until `dp_result_free`. Use `dp_result_value_len` for values that may
/// contain NUL bytes.
#[no_mangle]
pub extern "C" fn dp_result_value(
    result: *const dp_result,
    row: usize,
    col: usize,
) -> *const c_char {
    let Some(r) = result_ref(result) else {
        return ptr::null();
    };
    r.result
        .bytes_with_nul(row, col)
        .map_or(ptr::null(), |v| v.as_ptr() as *const c_char)
}

/// The length in bytes of a value (0 for SQL NULL or out of range).
#[no_mangle]
pub extern "C" fn dp_result_value_len(result: *const dp_result, row: usize, col: usize) -> usize {
    let Some(r) = result_ref(result) else {
        return 0;
    };
    r.result.bytes(row, col).map_or(0, <[u8]>::len)
}

/// A column's type: the PostgreSQL type OID or the MySQL column type code;
/// 0 out of range.
#[no_mangle]
pub extern "C" fn dp_result_column_type(result: *const dp_result, col: usize) -> u32 {
    result_ref(result)
        .and_then(|r| r.result.columns().get(col))
        .map_or(0, |c| c.type_id)
}

/// MySQL's last insert id: 1 and `*id` set when the server sent one, else 0.
#[no_mangle]
pub extern "C" fn dp_result_last_insert_id(result: *const dp_result, id: *mut u64) -> c_int {
    match result_ref(result).and_then(|r| r.result.last_insert_id) {
        Some(v) if !id.is_null() => {
            // SAFETY: a writable u64 (checked non-NULL).
            unsafe { *id = v };
            1
        }
        _ => 0,
    }
}

/// Rows affected by an INSERT, UPDATE or DELETE.
#[no_mangle]
pub extern "C" fn dp_result_affected_rows(result: *const dp_result) -> u64 {
    result_ref(result).map_or(0, |r| r.result.affected_rows)
}

/// Frees a result. NULL is a no-op.
#[no_mangle]
pub extern "C" fn dp_result_free(result: *mut dp_result) {
    if !result.is_null() {
        // SAFETY: made by this library, freed once.
        drop(unsafe { Box::from_raw(result) });
    }
}

// ---- plain dial ----

/// Dials the URL's host(s) with its dial options (connect_timeout,
/// keepalive, tcp_user_timeout, syn_retries, …) and hands the connected
/// socket over as a blocking-mode file descriptor the caller owns (close it
/// with close(2)). Any scheme works; only the dial options apply. Blocks;
/// a ctx cancel stops it at once. Thread-safe.
#[no_mangle]
pub extern "C" fn dp_dial(
    url: *const c_char,
    ctx: *const dp_ctx,
    fd: *mut c_int,
    err: *mut *mut dp_error,
) -> dp_code {
    if fd.is_null() {
        return invalid(err, "fd (the out-pointer) is NULL");
    }
    guard(err, || {
        let dial = dial_future(text(url, "url")?, ctx_of(ctx))?;
        let socket = dialpool::runtime::block_on(dial)??;
        hand_over(socket, fd)
    })
}

/// As `dp_dial`, for a caller that waits in its own event loop: starts the
/// dial and returns at once; drive `*op` with `dp_op_poll` (its waits are
/// for the connecting socket, `socket_id` 0) and end it with
/// `dp_dial_finish`. A bad URL fails here, before any socket is made.
#[no_mangle]
pub extern "C" fn dp_dial_start(
    url: *const c_char,
    ctx: *const dp_ctx,
    op: *mut *mut dp_op,
    err: *mut *mut dp_error,
) -> dp_code {
    if op.is_null() {
        return invalid(err, "op (the out-pointer) is NULL");
    }
    guard(err, || {
        let dial = dial_future(text(url, "url")?, ctx_of(ctx))?;
        write_op(op, Box::pin(async move { dial.await.map(OpOut::Socket) }));
        Ok(())
    })
}

/// Ends a dial started with `dp_dial_start`, waiting for it (blocking) when
/// `dp_op_poll` has not seen it finish, and frees `op` in every case. On
/// success `*fd` is the connected socket, as `dp_dial` gives it. NULL `op`
/// or `fd` is INVALID_ARGUMENT (a NULL `fd` still ends and frees the op,
/// closing its socket); so is a statement's op (end it with
/// `dp_op_finish`; its result is dropped).
#[no_mangle]
pub extern "C" fn dp_dial_finish(
    op: *mut dp_op,
    fd: *mut c_int,
    err: *mut *mut dp_error,
) -> dp_code {
    if op.is_null() {
        return invalid(err, "op is NULL");
    }
    // SAFETY: made by dp_conn_query_start or dp_dial_start, finished once.
    let o = unsafe { Box::from_raw(op) };
    guard(err, move || {
        let out = run_op(o)?;
        if fd.is_null() {
            return Err(Error::invalid_argument("fd (the out-pointer) is NULL"));
        }
        match out {
            OpOut::Socket(socket) => hand_over(socket, fd),
            OpOut::Rows(_) => Err(Error::invalid_argument(
                "this operation is a statement (dp_conn_query_start): end it with dp_op_finish",
            )),
        }
    })
}

/// The dial of `url` under `ctx`: its options are read here, so a bad URL
/// fails before anything starts.
fn dial_future(
    url: &str,
    ctx: dialpool::Ctx,
) -> Result<impl std::future::Future<Output = Result<std::net::TcpStream, Error>> + Send, Error> {
    let config = Config::parse(url)?;
    // Only the dial options apply (see dp_dial): no TLS connector.
    let dialer = dialpool::Dialer::tcp_only(&config.dial);
    Ok(async move {
        let connected = dialpool::deadline::run_until(
            None,
            ctx.cancel.as_ref(),
            dialer.connect_std(&config.hosts, ctx.deadline),
        )
        .await;
        match connected {
            Ok(r) => r.map(|(socket, _)| socket),
            Err(_) => {
                Err(Error::new(Code::Cancelled, "dial cancelled by the caller")
                    .with_layer(Layer::Dial))
            }
        }
    })
}

/// Gives a connected socket to the caller in blocking mode.
fn hand_over(socket: std::net::TcpStream, fd: *mut c_int) -> Result<(), Error> {
    use std::os::fd::IntoRawFd;
    socket
        .set_nonblocking(false)
        .map_err(|e| Error::internal(format!("setting the socket to blocking mode: {e}")))?;
    // SAFETY: a writable int (checked non-NULL by the callers).
    unsafe { *fd = socket.into_raw_fd() };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_core() {
        for code in Code::ALL {
            let c = dp_code::from(code);
            assert_eq!(c as u32, code as u32, "{code:?}");
            // SAFETY: static strings.
            let name = unsafe { CStr::from_ptr(dp_code_name(c)) }
                .to_str()
                .expect("utf-8");
            assert_eq!(name, format!("DP_{}", code.name()));
        }
        // SAFETY: static string.
        let ok = unsafe { CStr::from_ptr(dp_code_name(dp_code::DP_OK)) };
        assert_eq!(ok.to_str().ok(), Some("DP_OK"));
    }

    #[test]
    fn version_is_a_c_string() {
        // SAFETY: dp_version returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(dp_version()) };
        assert_eq!(v.to_str().expect("utf-8"), dialpool::VERSION);
    }

    #[test]
    fn null_handles_are_errors_not_crashes() {
        let mut err: *mut dp_error = ptr::null_mut();
        let mut pool: *mut dp_pool = ptr::null_mut();
        assert_eq!(
            dp_pool_open(ptr::null(), &mut pool, &mut err),
            dp_code::DP_INVALID_ARGUMENT
        );
        assert!(!err.is_null());
        // SAFETY: a message from a live error.
        let msg = unsafe { CStr::from_ptr(dp_error_message(err)) }
            .to_string_lossy()
            .into_owned();
        assert!(msg.contains("url is NULL"), "{msg}");
        dp_error_free(err);
        assert_eq!(
            dp_pool_acquire(ptr::null(), ptr::null(), ptr::null_mut(), ptr::null_mut()),
            dp_code::DP_INVALID_ARGUMENT
        );
        assert_eq!(dp_result_row_count(ptr::null()), 0);
        assert!(dp_result_value(ptr::null(), 0, 0).is_null());
        dp_result_free(ptr::null_mut());
        dp_conn_release(ptr::null_mut());
        dp_pool_close(ptr::null_mut());
        dp_ctx_free(ptr::null_mut());
        dp_error_free(ptr::null_mut());
        dp_ctx_cancel(ptr::null());
    }

    #[test]
    fn bad_url_names_the_key() {
        let mut err: *mut dp_error = ptr::null_mut();
        let mut pool: *mut dp_pool = ptr::null_mut();
        let url = c"postgres://u:secret@h/db?conect_timeout=3s";
        assert_eq!(
            dp_pool_open(url.as_ptr(), &mut pool, &mut err),
            dp_code::DP_INVALID_ARGUMENT
        );
        // SAFETY: a live error.
        let msg = unsafe { CStr::from_ptr(dp_error_message(err)) }
            .to_string_lossy()
            .into_owned();
        assert!(
            msg.contains("connect_timeout") && !msg.contains("secret"),
            "{msg}"
        );
        assert_eq!(dp_error_layer(err), dp_layer::DP_LAYER_NONE);
        dp_error_free(err);
    }
}
