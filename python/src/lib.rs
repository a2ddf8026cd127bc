//! `dialpool._dialpool`: the extension module under the Python package.
//!
//! A translation layer only: Python arguments become core calls (options as
//! text for `Config::set`, a `timeout=` as the caller's deadline, Ctrl-C as
//! a cancel token), core results become Python rows, core errors become the
//! exceptions of `dialpool._errors`. Every limit, default and check is the
//! core's. The public classes are in `dialpool/_api.py`.

mod convert;
mod errors;
mod events;
mod sql;
mod wait;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dialpool::config::{parse_duration, DbKind};
use dialpool::deadline::CancelToken;
use dialpool::{Config, Connection, Ctx, Deadline, QueryResult, Session};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

use crate::convert::{to_param, type_info, Param};
use crate::errors::{core_err, invalid_argument, invalid_state};
use crate::events::{PoolEvent, PyEvents};
use crate::sql::Dialect;
use crate::wait::wait;

fn dialect_of(config: &Config) -> Dialect {
    match config.kind {
        DbKind::Mysql => Dialect::Mysql,
        // tcp:// is refused by the core when a pool or session is opened.
        _ => Dialect::Postgres,
    }
}

fn dialect_name(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => "postgres",
        Dialect::Mysql => "mysql",
    }
}

/// A Python value as option text, the form `Config::set` validates: a
/// number of seconds for durations (`2.5`, `timedelta(seconds=2.5)`), the
/// digits of an int, a path, or a string as it is (`"250ms"`).
fn option_text(value: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if value.is_none() {
        return Ok(None);
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Some(s.to_cow()?.into_owned()));
    }
    if value.is_instance_of::<PyBool>() {
        return Ok(Some(
            if value.is_truthy()? { "true" } else { "false" }.into(),
        ));
    }
    if value.is_instance_of::<PyInt>() {
        return Ok(Some(value.str()?.to_cow()?.into_owned()));
    }
    if value.is_instance_of::<PyFloat>() {
        let f: f64 = value.extract()?;
        // Display never uses an exponent: 1e-05 is written 0.00001.
        return Ok(Some(f.to_string()));
    }
    if let Ok(secs) = value.call_method0("total_seconds") {
        let f: f64 = secs.extract()?;
        return Ok(Some(f.to_string()));
    }
    if value.hasattr("__fspath__")? {
        let path = value.call_method0("__fspath__")?;
        if let Ok(s) = path.cast::<PyString>() {
            return Ok(Some(s.to_cow()?.into_owned()));
        }
    }
    let ty = value.get_type().fully_qualified_name()?.to_string();
    Err(invalid_argument(
        value.py(),
        format!("cannot read a Python {ty} as an option value; give a str, int, float, timedelta or path"),
    ))
}

/// The URL with keyword overrides, validated by the core.
fn build_config(
    py: Python<'_>,
    url: &str,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Config> {
    let mut config = Config::parse_unvalidated(url).map_err(|e| core_err(py, &e))?;
    if let Some(options) = options {
        for (key, value) in options.iter() {
            let key: String = key.extract()?;
            if let Some(text) = option_text(&value)? {
                config.set(&key, &text).map_err(|e| core_err(py, &e))?;
            }
        }
    }
    config.validate().map_err(|e| core_err(py, &e))?;
    Ok(config)
}

/// A `timeout=` argument as the caller's deadline, plus the cancel token
/// that Ctrl-C triggers.
fn caller_ctx(py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<(Ctx, CancelToken)> {
    let token = CancelToken::new();
    let deadline = match timeout {
        None => None,
        Some(t) => match option_text(t)? {
            None => None,
            Some(text) => {
                let d: Duration = parse_duration(&text).map_err(|why| {
                    invalid_argument(
                        py,
                        format!(
                            "invalid timeout {text:?}: {why}; valid: a number of seconds (2.5), a timedelta, \
                             or a duration such as \"250ms\"; None for no deadline of the call's own"
                        ),
                    )
                })?;
                Some(Deadline::caller(d))
            }
        },
    };
    Ok((
        Ctx {
            deadline,
            cancel: Some(token.clone()),
        },
        token,
    ))
}

/// The statement in the server's placeholder style and its parameters as
/// text. Without parameters (None or empty) the SQL is sent as written.
fn bind(
    py: Python<'_>,
    dialect: Dialect,
    sql: &str,
    params: Option<&Bound<'_, PyAny>>,
) -> PyResult<(String, Vec<Option<String>>)> {
    let Some(params) = params.filter(|p| !p.is_none()) else {
        return Ok((sql.to_owned(), Vec::new()));
    };
    if params.is_instance_of::<PyString>()
        || params.is_instance_of::<PyBytes>()
        || params.is_instance_of::<PyByteArray>()
    {
        return Err(invalid_argument(
            py,
            "params must be a sequence (for %s) or a mapping (for %(name)s), not a string; \
             write (value,) for one parameter",
        ));
    }
    let mapping = if params.is_instance_of::<PyTuple>() || params.is_instance_of::<PyList>() {
        None
    } else {
        params.cast::<pyo3::types::PyMapping>().ok()
    };
    if params.len()? == 0 {
        return Ok((sql.to_owned(), Vec::new()));
    }
    let template = sql::parse(sql, dialect).map_err(|m| invalid_argument(py, m))?;
    let values: Vec<Param> = if let Some(mapping) = mapping {
        if template.positional > 0 {
            return Err(invalid_argument(
                py,
                "the statement uses %s placeholders but params is a mapping; give a sequence, or write %(name)s",
            ));
        }
        if template.names.is_empty() {
            return Err(invalid_argument(
                py,
                "params were given but the statement has no %(name)s placeholder",
            ));
        }
        let mut values = Vec::with_capacity(template.names.len());
        for name in &template.names {
            let value = mapping.get_item(*name).map_err(|_| {
                invalid_argument(
                    py,
                    format!("the statement uses %({name})s but params has no key {name:?}"),
                )
            })?;
            values.push(to_param(&value, dialect)?);
        }
        values
    } else {
        if !template.names.is_empty() {
            return Err(invalid_argument(
                py,
                "the statement uses %(name)s placeholders; params must be a mapping",
            ));
        }
        let mut values = Vec::with_capacity(template.positional);
        for item in params.try_iter()? {
            values.push(to_param(&item?, dialect)?);
        }
        if values.len() != template.positional {
            return Err(invalid_argument(
                py,
                format!(
                    "the statement has {} %s placeholder(s) but {} parameter(s) were given (write %% for a literal %)",
                    template.positional,
                    values.len()
                ),
            ));
        }
        values
    };
    let (text, order) = template.render(dialect, |k| {
        convert::decoration(
            dialect,
            values.get(k).map_or(convert::ParamType::Untyped, |p| p.ty),
        )
    });
    let texts = order
        .iter()
        .map(|&k| values.get(k).and_then(|p| p.text.clone()))
        .collect();
    Ok((text, texts))
}

/// The result of one statement, converted.
#[pyclass(frozen, get_all, module = "dialpool._dialpool")]
pub struct RawResult {
    /// `(name, type_id, type_name, category)` per column, or None when the
    /// statement returns no rows.
    description: Option<Py<PyList>>,
    rows: Py<PyList>,
    /// Rows returned, or rows affected, or -1 when the server does not say.
    rowcount: i64,
    lastrowid: Option<u64>,
    command_tag: String,
    notices: Vec<String>,
    warnings: u16,
}

fn convert_result(py: Python<'_>, dialect: Dialect, r: QueryResult) -> PyResult<RawResult> {
    let infos: Vec<convert::TypeInfo> = r
        .columns()
        .iter()
        .map(|c| type_info(dialect, c.type_id))
        .collect();
    let description = if r.column_count() == 0 {
        None
    } else {
        let list = PyList::empty(py);
        for (c, info) in r.columns().iter().zip(&infos) {
            list.append(PyTuple::new(
                py,
                [
                    c.name.as_str().into_pyobject(py)?.into_any(),
                    c.type_id.into_pyobject(py)?.into_any(),
                    info.name.into_pyobject(py)?.into_any(),
                    info.category.into_pyobject(py)?.into_any(),
                ],
            )?)?;
        }
        Some(list.unbind())
    };
    let kinds: Vec<convert::Kind> = infos.iter().map(|i| i.kind).collect();
    let rows = convert::rows(py, &r, &kinds)?;
    // PostgreSQL's command tag carries the count when there is one
    // (`UPDATE 2`, not `CREATE TABLE`).
    let counted =
        dialect != Dialect::Postgres || r.command_tag.ends_with(|c: char| c.is_ascii_digit());
    let rowcount = if r.column_count() > 0 {
        i64::try_from(r.row_count()).unwrap_or(i64::MAX)
    } else if counted {
        i64::try_from(r.affected_rows).unwrap_or(i64::MAX)
    } else {
        -1
    };
    Ok(RawResult {
        description,
        rows: rows.unbind(),
        rowcount,
        lastrowid: r.last_insert_id,
        command_tag: r.command_tag,
        notices: r.notices,
        warnings: r.warnings,
    })
}

/// Only the rows of a result.
fn convert_rows<'py>(
    py: Python<'py>,
    dialect: Dialect,
    r: &QueryResult,
) -> PyResult<Bound<'py, PyList>> {
    let kinds: Vec<convert::Kind> = r
        .columns()
        .iter()
        .map(|c| type_info(dialect, c.type_id).kind)
        .collect();
    convert::rows(py, r, &kinds)
}

fn params_ref(texts: &[Option<String>]) -> Vec<Option<&str>> {
    texts.iter().map(|t| t.as_deref()).collect()
}

/// A pool (`dialpool.Pool` wraps it).
#[pyclass(frozen, module = "dialpool._dialpool")]
pub struct RawPool {
    pool: dialpool::Pool,
    dialect: Dialect,
    /// The `on_event` callable's dispatcher, if one was given.
    events: Option<Arc<PyEvents>>,
}

impl Drop for RawPool {
    fn drop(&mut self) {
        // Collected without close(): the dispatcher ends after what is queued.
        if let Some(events) = &self.events {
            events.stop_nowait();
        }
    }
}

impl RawPool {
    fn run(
        &self,
        py: Python<'_>,
        sql: &str,
        params: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<QueryResult> {
        let (sql, texts) = bind(py, self.dialect, sql, params)?;
        let (ctx, token) = caller_ctx(py, timeout)?;
        let params = params_ref(&texts);
        let waited = wait(py, &token, self.pool.query_ctx(&sql, &params, &ctx))?;
        waited.into_result()?.map_err(|e| core_err(py, &e))
    }
}

#[pymethods]
impl RawPool {
    #[new]
    #[pyo3(signature = (url, options=None, on_event=None))]
    fn new(
        py: Python<'_>,
        url: &str,
        options: Option<&Bound<'_, PyDict>>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<RawPool> {
        let config = build_config(py, url, options)?;
        let dialect = dialect_of(&config);
        let events = match on_event.filter(|f| !f.is_none(py)) {
            Some(callback) => Some(PyEvents::start(py, callback)?),
            None => None,
        };
        let handler = events
            .clone()
            .map(|e| -> Arc<dyn dialpool::pool::EventHandler> { e });
        let pool = match dialpool::Pool::open_blocking(config, handler) {
            Ok(pool) => pool,
            Err(e) => {
                if let Some(events) = &events {
                    events.stop(py);
                }
                return Err(core_err(py, &e));
            }
        };
        Ok(RawPool {
            pool,
            dialect,
            events,
        })
    }

    /// The pool's metrics in the Prometheus text exposition format.
    fn metrics_text(&self) -> String {
        self.pool.metrics_text()
    }

    /// Acquire, run, release, under one deadline.
    #[pyo3(signature = (sql, params=None, timeout=None))]
    fn query(
        &self,
        py: Python<'_>,
        sql: &str,
        params: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<RawResult> {
        let result = self.run(py, sql, params, timeout)?;
        convert_result(py, self.dialect, result)
    }

    /// `query(...).rows` without the rest of the result (`Pool.query`'s
    /// per-call cost: no description or result object to build).
    #[pyo3(signature = (sql, params=None, timeout=None))]
    fn rows<'py>(
        &self,
        py: Python<'py>,
        sql: &str,
        params: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let result = self.run(py, sql, params, timeout)?;
        convert_rows(py, self.dialect, &result)
    }

    #[pyo3(signature = (timeout=None, label=None))]
    fn acquire(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        label: Option<String>,
    ) -> PyResult<RawConn> {
        let (ctx, token) = caller_ctx(py, timeout)?;
        let waited = wait(py, &token, self.pool.acquire_ctx(&ctx, label.as_deref()))?;
        // On Ctrl-C a connection that arrived anyway goes back with the drop.
        let conn = waited.into_result()?.map_err(|e| core_err(py, &e))?;
        Ok(RawConn::new(Held::Pooled(conn), self.dialect))
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.pool.stats();
        let d = PyDict::new(py);
        let secs = |v: Option<Duration>| v.map(|d| d.as_secs_f64());
        d.set_item("max_open", s.max_open)?;
        d.set_item("open", s.open)?;
        d.set_item("in_use", s.in_use)?;
        d.set_item("idle", s.idle)?;
        d.set_item("waiting", s.waiting)?;
        d.set_item("connecting", s.connecting)?;
        d.set_item("wait_count", s.wait_count)?;
        d.set_item("wait_duration_total", s.wait_duration_total.as_secs_f64())?;
        d.set_item("acquire_count", s.acquire_count)?;
        d.set_item("acquire_timeouts", s.acquire_timeouts)?;
        d.set_item("acquire_cancelled", s.acquire_cancelled)?;
        d.set_item("connects", s.connects)?;
        let failures = PyDict::new(py);
        for (code, n) in &s.connect_failures {
            failures.set_item(format!("DP_{}", code.name()), n)?;
        }
        d.set_item("connect_failures", failures)?;
        d.set_item("closed_max_lifetime", s.closed_max_lifetime)?;
        d.set_item("closed_max_idle_time", s.closed_max_idle_time)?;
        d.set_item("closed_max_idle", s.closed_max_idle)?;
        d.set_item("closed_dead", s.closed_dead)?;
        d.set_item("closed_broken", s.closed_broken)?;
        d.set_item("leaks", s.leaks)?;
        d.set_item("max_idle_time", secs(s.max_idle_time))?;
        d.set_item("server_idle_limit", secs(s.server_idle_limit))?;
        Ok(d)
    }

    /// Closes the pool; with `on_event`, delivers the events so far (the
    /// idle connections' closes included) and returns once no callback runs.
    fn close(&self, py: Python<'_>) {
        self.pool.close();
        if let Some(events) = &self.events {
            events.stop(py);
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        self.pool.is_closed()
    }

    #[getter]
    fn dialect(&self) -> &'static str {
        dialect_name(self.dialect)
    }

    /// The pool's URL with the password hidden.
    fn __repr__(&self) -> String {
        format!("{:?}", self.pool)
    }
}

/// A session: checked out of a pool, or opened alone by `connect()`.
enum Held {
    Pooled(Connection),
    Single(Box<Session>),
}

impl Held {
    fn session(&mut self) -> &mut Session {
        match self {
            Held::Pooled(c) => c.session(),
            Held::Single(s) => s,
        }
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[Option<&str>],
        ctx: &Ctx,
    ) -> dialpool::Result<QueryResult> {
        match self {
            Held::Pooled(c) => c.query_ctx(sql, params, ctx).await,
            Held::Single(s) => s.query(sql, params, ctx).await,
        }
    }
}

enum Slot {
    Ready(Box<Held>),
    /// A call is running on it (from another thread, as this one waits).
    Busy,
    Closed,
}

/// A connection (`dialpool.Connection` wraps it).
#[pyclass(frozen, module = "dialpool._dialpool")]
pub struct RawConn {
    slot: Mutex<Slot>,
    dialect: Dialect,
    pooled: bool,
}

impl RawConn {
    fn new(held: Held, dialect: Dialect) -> RawConn {
        RawConn {
            pooled: matches!(held, Held::Pooled(_)),
            slot: Mutex::new(Slot::Ready(Box::new(held))),
            dialect,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A panic cannot happen while the lock is held; recover regardless.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, py: Python<'_>) -> PyResult<Held> {
        let mut slot = self.lock();
        match std::mem::replace(&mut *slot, Slot::Busy) {
            Slot::Ready(h) => Ok(*h),
            Slot::Busy => Err(invalid_state(
                py,
                "the connection is in use by another thread; a connection serves one thread at a time \
                 (threadsafety 1): give each thread its own connection from the pool",
            )),
            Slot::Closed => {
                *slot = Slot::Closed;
                Err(invalid_state(py, "the connection is closed"))
            }
        }
    }

    fn put(&self, held: Held) {
        *self.lock() = Slot::Ready(Box::new(held));
    }

    /// Runs one statement; with `begin`, opens a transaction first unless
    /// one is open (DB-API's implicit transactions).
    fn run(
        &self,
        py: Python<'_>,
        sql: &str,
        params: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
        begin: bool,
    ) -> PyResult<QueryResult> {
        let (sql, texts) = bind(py, self.dialect, sql, params)?;
        let (ctx, token) = caller_ctx(py, timeout)?;
        let mut held = self.take(py)?;
        let params = params_ref(&texts);
        let outcome = wait(py, &token, async {
            if begin && !held.session().in_transaction() {
                held.query("BEGIN", &[], &ctx).await?;
            }
            held.query(&sql, &params, &ctx).await
        });
        // Back in its slot whatever happened (the core reports a session
        // that a failure left unusable on its next use).
        self.put(held);
        let waited = outcome?;
        let result = waited.value;
        if let Some(signal) = waited.interrupted {
            return Err(signal);
        }
        result.map_err(|e| core_err(py, &e))
    }
}

#[pymethods]
impl RawConn {
    /// Runs one statement; with `begin`, opens a transaction first unless
    /// one is open (DB-API's implicit transactions).
    #[pyo3(signature = (sql, params=None, timeout=None, begin=false))]
    fn query(
        &self,
        py: Python<'_>,
        sql: &str,
        params: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
        begin: bool,
    ) -> PyResult<RawResult> {
        let result = self.run(py, sql, params, timeout, begin)?;
        convert_result(py, self.dialect, result)
    }

    /// `query(...).rows` without the rest of the result.
    #[pyo3(signature = (sql, params=None, timeout=None, begin=false))]
    fn rows<'py>(
        &self,
        py: Python<'py>,
        sql: &str,
        params: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
        begin: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let result = self.run(py, sql, params, timeout, begin)?;
        convert_rows(py, self.dialect, &result)
    }

    /// Whether a transaction is open (or failed and not yet rolled back).
    #[getter]
    fn in_transaction(&self) -> bool {
        match &mut *self.lock() {
            Slot::Ready(h) => h.session().in_transaction(),
            _ => false,
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        matches!(*self.lock(), Slot::Closed)
    }

    #[getter]
    fn pooled(&self) -> bool {
        self.pooled
    }

    #[getter]
    fn dialect(&self) -> &'static str {
        dialect_name(self.dialect)
    }

    /// Gives the connection back to its pool (which rolls back an open
    /// transaction), or closes a `connect()` session politely. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let held = {
            let mut slot = self.lock();
            match std::mem::replace(&mut *slot, Slot::Closed) {
                Slot::Ready(h) => *h,
                Slot::Closed => return Ok(()),
                Slot::Busy => {
                    *slot = Slot::Busy;
                    return Err(invalid_state(
                        py,
                        "the connection is in use by another thread and cannot be closed now",
                    ));
                }
            }
        };
        match held {
            Held::Pooled(conn) => drop(conn),
            Held::Single(session) => {
                let token = CancelToken::new();
                wait(py, &token, (*session).close())?.into_result()?;
            }
        }
        Ok(())
    }

    /// Closes the session instead of returning it to the pool.
    /// (A connection in use by another thread is left alone.)
    fn discard(&self) {
        let held = {
            let mut slot = self.lock();
            if matches!(*slot, Slot::Busy) {
                return;
            }
            std::mem::replace(&mut *slot, Slot::Closed)
        };
        if let Slot::Ready(h) = held {
            match *h {
                Held::Pooled(conn) => conn.discard(),
                Held::Single(session) => drop(session),
            }
        }
    }
}

/// One session without a pool (PEP 249 `connect`): its dial and login errors
/// come straight back.
#[pyfunction]
#[pyo3(signature = (url, options=None))]
fn connect(py: Python<'_>, url: &str, options: Option<&Bound<'_, PyDict>>) -> PyResult<RawConn> {
    let config = Arc::new(build_config(py, url, options)?);
    let dialect = dialect_of(&config);
    let token = CancelToken::new();
    let ctx = Ctx {
        deadline: None,
        cancel: Some(token.clone()),
    };
    let waited = wait(py, &token, Session::connect(config, &ctx))?;
    let session = waited.into_result()?.map_err(|e| core_err(py, &e))?;
    Ok(RawConn::new(Held::Single(Box::new(session)), dialect))
}

/// The statement and parameter texts that would be sent (for tests and
/// debugging): `dialect` is "postgres" or "mysql".
#[pyfunction]
#[pyo3(signature = (dialect, sql, params=None))]
fn render(
    py: Python<'_>,
    dialect: &str,
    sql: &str,
    params: Option<&Bound<'_, PyAny>>,
) -> PyResult<(String, Vec<Option<String>>)> {
    let dialect = match dialect {
        "postgres" => Dialect::Postgres,
        "mysql" => Dialect::Mysql,
        other => {
            return Err(invalid_argument(
                py,
                format!("unknown dialect {other:?}; valid: postgres, mysql"),
            ))
        }
    };
    bind(py, dialect, sql, params)
}

#[pymodule]
fn _dialpool(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RawPool>()?;
    m.add_class::<RawConn>()?;
    m.add_class::<RawResult>()?;
    m.add_class::<PoolEvent>()?;
    m.add_function(wrap_pyfunction!(connect, m)?)?;
    m.add_function(wrap_pyfunction!(render, m)?)?;
    m.add("VERSION", dialpool::VERSION)?;
    wait::init(m.py())?;
    Ok(())
}
