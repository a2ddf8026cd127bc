//! The public async API the bindings wrap: a [`Pool`] of database sessions
//! opened from one URL, and the [`Connection`]s it hands out. Which database
//! is behind the URL does not change the API, the errors or the limits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, DbKind};
use crate::deadline::{CancelToken, Deadline};
use crate::dial::PhaseTimings;
use crate::error::{Error, Result};
use crate::mysql::{MysqlConnection, MysqlConnector};
use crate::pg::{PgConnection, PgConnector};
use crate::pool::{
    self, EventHandler, Liveness, MetricLabels, MetricsSnapshot, ReleaseState, Stats,
};
use crate::rows::QueryResult;

/// A deadline and a cancel signal together: what a Go ctx, a C `dp_ctx` or
/// a Python call with `timeout=` carries.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    pub deadline: Option<Deadline>,
    pub cancel: Option<CancelToken>,
}

impl Ctx {
    /// No deadline of the caller's own, no cancel: only the configured limits.
    pub fn none() -> Ctx {
        Ctx::default()
    }

    /// A caller deadline `timeout` from now.
    pub fn timeout(timeout: Duration) -> Ctx {
        Ctx {
            deadline: Some(Deadline::caller(timeout)),
            cancel: None,
        }
    }

    pub fn with_cancel(mut self, cancel: CancelToken) -> Ctx {
        self.cancel = Some(cancel);
        self
    }
}

impl From<Option<Deadline>> for Ctx {
    fn from(deadline: Option<Deadline>) -> Ctx {
        Ctx {
            deadline,
            cancel: None,
        }
    }
}

/// One session of either database.
pub enum Session {
    Postgres(PgConnection),
    Mysql(MysqlConnection),
}

impl Session {
    /// One session without a pool (DB-API's `connect`): its dial and login
    /// errors come straight back, under the configured limits and `ctx`.
    pub async fn connect(config: Arc<Config>, ctx: &Ctx) -> Result<Session> {
        let connect = async {
            match config.kind {
                DbKind::Postgres => PgConnector::new(config.clone())?
                    .connect(ctx.deadline)
                    .await
                    .map(Session::Postgres),
                DbKind::Mysql => MysqlConnector::new(config.clone())?
                    .connect(ctx.deadline)
                    .await
                    .map(Session::Mysql),
                DbKind::Tcp => Err(Error::invalid_argument(
                    "tcp:// URLs are for plain dials, not database sessions; use postgres:// or mysql://",
                )),
            }
        };
        match crate::deadline::run_until(None, ctx.cancel.as_ref(), connect).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                crate::error::Code::Cancelled,
                "connect cancelled by the caller",
            )
            .with_layer(crate::error::Layer::Dial)),
        }
    }

    /// Whether the session is ready and outside a transaction.
    pub fn is_clean(&self) -> bool {
        self.release_state() == ReleaseState::Clean
    }

    /// Whether a transaction is open (or failed and not yet rolled back).
    pub fn in_transaction(&self) -> bool {
        self.release_state() == ReleaseState::NeedsReset
    }

    /// Rolls back an open transaction.
    pub async fn reset(&mut self) -> Result<()> {
        match self {
            Session::Postgres(c) => c.reset().await,
            Session::Mysql(c) => c.reset().await,
        }
    }

    /// Closes the session politely.
    pub async fn close(self) {
        match self {
            Session::Postgres(c) => c.close().await,
            Session::Mysql(c) => c.close().await,
        }
    }

    pub async fn query(
        &mut self,
        sql: &str,
        params: &[Option<&str>],
        ctx: &Ctx,
    ) -> Result<QueryResult> {
        // Boxed: a statement's future is KBs, and every async layer above
        // (the pool, the blocking facade) would otherwise hold and copy it.
        match self {
            Session::Postgres(c) => {
                Box::pin(c.query(sql, params, ctx.deadline, ctx.cancel.as_ref())).await
            }
            Session::Mysql(c) => {
                Box::pin(c.query(sql, params, ctx.deadline, ctx.cancel.as_ref())).await
            }
        }
    }

    /// The socket's descriptor and its id, for a caller that waits for it
    /// in its own event loop (see [`crate::runtime::step`]).
    pub fn socket_ident(&self) -> (std::os::fd::RawFd, u64) {
        match self {
            Session::Postgres(c) => c.socket_ident(),
            Session::Mysql(c) => c.socket_ident(),
        }
    }

    fn probe(&self) -> Liveness {
        match self {
            Session::Postgres(c) => c.probe(),
            Session::Mysql(c) => c.probe(),
        }
    }

    fn release_state(&self) -> ReleaseState {
        match self {
            Session::Postgres(c) if c.is_clean() => ReleaseState::Clean,
            Session::Postgres(c) if c.is_ready() => ReleaseState::NeedsReset,
            Session::Postgres(_) => ReleaseState::Broken,
            Session::Mysql(c) if c.is_clean() => ReleaseState::Clean,
            Session::Mysql(c) if c.is_ready() => ReleaseState::NeedsReset,
            Session::Mysql(_) => ReleaseState::Broken,
        }
    }

    pub fn timings(&self) -> PhaseTimings {
        match self {
            Session::Postgres(c) => c.timings(),
            Session::Mysql(c) => c.timings(),
        }
    }

    /// The address that answered, `ip:port`.
    pub fn peer(&self) -> &str {
        match self {
            Session::Postgres(c) => c.peer(),
            Session::Mysql(c) => c.peer(),
        }
    }

    pub fn is_tls(&self) -> bool {
        match self {
            Session::Postgres(c) => c.is_tls(),
            Session::Mysql(c) => c.is_tls(),
        }
    }

    /// The user the session logged in as.
    pub fn user(&self) -> &str {
        match self {
            Session::Postgres(c) => c.user(),
            Session::Mysql(c) => c.user(),
        }
    }

    /// The server's product and version, e.g. `PostgreSQL 15.18` or
    /// `MariaDB 10.11.19-MariaDB`.
    pub fn server_version(&self) -> String {
        match self {
            Session::Postgres(c) => format!(
                "PostgreSQL {}",
                c.parameter("server_version").unwrap_or("?")
            ),
            Session::Mysql(c) => {
                let v = c.server_version();
                if v.contains("MariaDB") {
                    format!("MariaDB {v}")
                } else {
                    format!("MySQL {v}")
                }
            }
        }
    }

    /// The PostgreSQL session, if that is what this is.
    pub fn as_postgres(&mut self) -> Option<&mut PgConnection> {
        match self {
            Session::Postgres(c) => Some(c),
            Session::Mysql(_) => None,
        }
    }

    /// The MySQL/MariaDB session, if that is what this is.
    pub fn as_mysql(&mut self) -> Option<&mut MysqlConnection> {
        match self {
            Session::Mysql(c) => Some(c),
            Session::Postgres(_) => None,
        }
    }
}

/// Opens sessions for the pool.
pub struct DbManager {
    connector: Connector,
    /// A mysql:// server said it is MariaDB (for the metrics' db.system.name).
    mariadb: AtomicBool,
}

enum Connector {
    Postgres(PgConnector),
    Mysql(MysqlConnector),
}

impl DbManager {
    pub fn new(config: Arc<Config>) -> Result<DbManager> {
        let connector = match config.kind {
            DbKind::Postgres => Connector::Postgres(PgConnector::new(config)?),
            DbKind::Mysql => Connector::Mysql(MysqlConnector::new(config)?),
            DbKind::Tcp => {
                return Err(Error::invalid_argument(
                    "tcp:// URLs are for plain dials (dp_dial, DialContext), not pools; use postgres:// or mysql://",
                ))
            }
        };
        Ok(DbManager {
            connector,
            mariadb: AtomicBool::new(false),
        })
    }

    /// The OpenTelemetry `db.system.name` of the sessions.
    fn db_system(&self) -> &'static str {
        match &self.connector {
            Connector::Postgres(_) => "postgresql",
            Connector::Mysql(_) if self.mariadb.load(Ordering::Relaxed) => "mariadb",
            Connector::Mysql(_) => "mysql",
        }
    }
}

impl pool::Manager for DbManager {
    type Connection = Session;

    async fn connect(&self) -> Result<Session> {
        match &self.connector {
            Connector::Postgres(c) => c.connect(None).await.map(Session::Postgres),
            Connector::Mysql(c) => {
                let session = c.connect(None).await?;
                if session.server_version().contains("MariaDB") {
                    self.mariadb.store(true, Ordering::Relaxed);
                }
                Ok(Session::Mysql(session))
            }
        }
    }

    fn probe(&self, conn: &mut Session) -> Liveness {
        conn.probe()
    }

    async fn ping(&self, conn: &mut Session, deadline: Option<Deadline>) -> Result<()> {
        match conn {
            Session::Postgres(c) => c.ping(deadline).await,
            Session::Mysql(c) => c.ping(deadline).await,
        }
    }

    fn release_state(&self, conn: &mut Session) -> ReleaseState {
        conn.release_state()
    }

    async fn reset(&self, conn: &mut Session) -> Result<()> {
        conn.reset().await
    }

    async fn close(&self, conn: Session) {
        conn.close().await
    }

    async fn server_idle_limit(&self, conn: &mut Session) -> Option<Duration> {
        match conn {
            Session::Postgres(c) => c.server_idle_limit().await,
            Session::Mysql(c) => c.server_idle_limit().await,
        }
    }

    fn timings(&self, conn: &Session) -> Option<PhaseTimings> {
        Some(conn.timings())
    }
}

/// A pool of sessions to one database. Cheap to clone; thread-safe.
#[derive(Clone)]
pub struct Pool {
    inner: pool::Pool<DbManager>,
    config: Arc<Config>,
    /// `db.client.connection.pool.name` in the metrics.
    name: Arc<str>,
}

thread_local! {
    /// The pool (by [`pool::Pool::key`]) and connection of the calling
    /// thread's last [`Pool::query_ctx`].
    static LAST_ON_THREAD: std::cell::Cell<(usize, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// A session checked out of a [`Pool`]; goes back when dropped.
pub struct Connection {
    pooled: pool::Pooled<DbManager>,
}

impl Pool {
    /// Opens a pool for `url` on the current tokio runtime. No connection is
    /// made here (beyond `min_idle`, in the background): the first acquire
    /// reports what the database says.
    pub async fn open(url: &str) -> Result<Pool> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid_state(
                "Pool::open needs a tokio runtime; use Pool::open_blocking from plain threads",
            )
        })?;
        Pool::open_config(Config::parse(url)?, handle, None)
    }

    /// Opens a pool from a validated configuration; background work runs on
    /// `handle`; `events` receives the pool's events.
    pub fn open_config(
        config: Config,
        handle: tokio::runtime::Handle,
        events: Option<Arc<dyn EventHandler>>,
    ) -> Result<Pool> {
        let config = Arc::new(config);
        let manager = DbManager::new(config.clone())?;
        let inner = pool::Pool::with_handle(manager, config.pool.clone(), handle, events);
        let name = Arc::from(pool_name(&config));
        Ok(Pool {
            inner,
            config,
            name,
        })
    }

    /// Opens a pool on dialpool's internal runtime (for the blocking
    /// facade: C, Python, Go).
    pub fn open_blocking(config: Config, events: Option<Arc<dyn EventHandler>>) -> Result<Pool> {
        let handle = crate::runtime::handle()?;
        Pool::open_config(config, handle, events)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Checks out a session within the earlier of `acquire_timeout` and
    /// `deadline`.
    pub async fn acquire(&self, deadline: Option<Deadline>) -> Result<Connection> {
        self.acquire_ctx(&deadline.into(), None).await
    }

    /// Checks out a session under `ctx`, with a label for leak warnings.
    pub async fn acquire_ctx(&self, ctx: &Ctx, label: Option<&str>) -> Result<Connection> {
        self.acquire_ctx_preferring(ctx, label, None).await
    }

    /// As [`Pool::acquire_ctx`], taking the connection with id `prefer`
    /// ([`Connection::id`], kept from an earlier checkout) when it is idle:
    /// a caller that checks out per statement then keeps its server
    /// session (see [`crate::pool::Pool::acquire_preferring`]).
    pub async fn acquire_ctx_preferring(
        &self,
        ctx: &Ctx,
        label: Option<&str>,
        prefer: Option<u64>,
    ) -> Result<Connection> {
        let pooled = self
            .inner
            .acquire_preferring(ctx.deadline, ctx.cancel.as_ref(), label, prefer)
            .await?;
        Ok(Connection { pooled })
    }

    /// The acquire's common case, at once and without a future: an idle
    /// connection (the one with id `prefer` when it is idle) that needs no
    /// ping. `None` when the acquire must wait, connect or ping: then call
    /// [`Pool::acquire_ctx_preferring`]. The caller's ctx is not needed, as
    /// nothing here waits.
    pub fn try_acquire_idle(
        &self,
        label: Option<&str>,
        prefer: Option<u64>,
    ) -> Option<Result<Connection>> {
        self.inner
            .try_acquire_idle(label, prefer)
            .map(|r| r.map(|pooled| Connection { pooled }))
    }

    /// Acquire and query under one deadline.
    pub async fn query(
        &self,
        sql: &str,
        params: &[Option<&str>],
        deadline: Option<Deadline>,
    ) -> Result<QueryResult> {
        self.query_ctx(sql, params, &deadline.into()).await
    }

    /// Acquire and query under one [`Ctx`]: the query gets what the acquire
    /// left of the caller's deadline.
    ///
    /// The statement asks for the connection the calling thread's last
    /// statement on this pool ran on (see [`Pool::acquire_ctx_preferring`]):
    /// a thread that runs its statements through the pool keeps meeting the
    /// same server session while it is idle.
    pub async fn query_ctx(
        &self,
        sql: &str,
        params: &[Option<&str>],
        ctx: &Ctx,
    ) -> Result<QueryResult> {
        let key = self.inner.key();
        let prefer = LAST_ON_THREAD.with(|last| {
            let (pool, id) = last.get();
            (pool == key).then_some(id)
        });
        let mut conn = self.acquire_ctx_preferring(ctx, None, prefer).await?;
        LAST_ON_THREAD.with(|last| last.set((key, conn.id())));
        conn.query_ctx(sql, params, ctx).await
    }

    /// Acquire and execute under one deadline; the affected row count.
    pub async fn execute(
        &self,
        sql: &str,
        params: &[Option<&str>],
        deadline: Option<Deadline>,
    ) -> Result<u64> {
        self.query(sql, params, deadline)
            .await
            .map(|r| r.affected_rows)
    }

    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// The pool's numbers and latency histograms as they are now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics()
    }

    /// What names this pool's series: the `pool_name` option (default
    /// `host:port/dbname`) and the database system.
    pub fn metric_labels(&self) -> MetricLabels {
        MetricLabels {
            pool_name: self.name.to_string(),
            db_system: self.inner.manager().db_system(),
        }
    }

    /// The pool's metrics in the Prometheus text exposition format, under
    /// the OpenTelemetry database-client names (see [`metrics_text`] for
    /// several pools in one scrape).
    pub fn metrics_text(&self) -> String {
        metrics_text(&[self])
    }

    /// Closes the pool (see [`pool::Pool::close`]). Idempotent.
    pub fn close(&self) {
        self.inner.close()
    }

    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

/// Several pools' metrics in one Prometheus text: each family once, with a
/// series per pool (tell pools to the same database apart with `pool_name`).
pub fn metrics_text(pools: &[&Pool]) -> String {
    let taken: Vec<(MetricLabels, MetricsSnapshot)> = pools
        .iter()
        .map(|p| (p.metric_labels(), p.metrics()))
        .collect();
    let refs: Vec<(&MetricLabels, &MetricsSnapshot)> = taken.iter().map(|(l, m)| (l, m)).collect();
    pool::render_prometheus(&refs)
}

/// The `pool_name` option, or the form the OpenTelemetry conventions
/// suggest: `host:port/dbname` (PostgreSQL's database defaults to the user).
fn pool_name(config: &Config) -> String {
    if let Some(name) = &config.pool_name {
        return name.clone();
    }
    let mut name = match config.hosts.first() {
        Some(h) if h.host.contains(':') => format!("[{}]:{}", h.host, h.port),
        Some(h) => format!("{}:{}", h.host, h.port),
        None => String::new(),
    };
    let db = match config.kind {
        DbKind::Postgres => config.dbname.as_ref().or(config.user.as_ref()),
        _ => config.dbname.as_ref(),
    };
    if let Some(db) = db {
        name.push('/');
        name.push_str(db);
    }
    name
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({}, {:?})", self.config, self.inner)
    }
}

impl Connection {
    /// The connection's id in its pool: never 0, the same for its whole
    /// life; pass it to [`Pool::acquire_ctx_preferring`] to get this
    /// connection back when it is idle.
    pub fn id(&self) -> u64 {
        self.pooled.id()
    }

    /// Runs a statement under the earlier of `query_timeout` and `deadline`.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[Option<&str>],
        deadline: Option<Deadline>,
    ) -> Result<QueryResult> {
        self.query_ctx(sql, params, &deadline.into()).await
    }

    pub async fn query_ctx(
        &mut self,
        sql: &str,
        params: &[Option<&str>],
        ctx: &Ctx,
    ) -> Result<QueryResult> {
        // Two clock reads per statement: nothing beside a network round trip.
        let start = Instant::now();
        let result = self.pooled.query(sql, params, ctx).await;
        self.pooled
            .metrics()
            .record_statement(start.elapsed(), result.as_ref().map(|_| ()));
        result
    }

    /// The affected row count of a statement.
    pub async fn execute(
        &mut self,
        sql: &str,
        params: &[Option<&str>],
        deadline: Option<Deadline>,
    ) -> Result<u64> {
        self.query(sql, params, deadline)
            .await
            .map(|r| r.affected_rows)
    }

    /// The underlying session.
    pub fn session(&mut self) -> &mut Session {
        &mut self.pooled
    }

    /// How long this connection has been checked out.
    pub fn held(&self) -> Duration {
        self.pooled.held()
    }

    /// Closes the session instead of returning it to the pool.
    pub fn discard(self) {
        self.pooled.discard()
    }
}
