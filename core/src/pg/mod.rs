//! PostgreSQL sessions over the dialer's stream: login (SSLRequest, TLS,
//! startup, trust/cleartext/MD5/SCRAM-SHA-256(-PLUS)), simple and extended
//! queries with a prepared-statement cache, and query deadlines that cancel
//! the statement on the server and keep the session when it is provably
//! clean again.

mod auth;
mod error;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::deadline::{self, CancelToken, Deadline, Stop};
use crate::dial::{Dialer, PhaseTimings};
use crate::error::{Code, Error, Layer, Result};
use crate::pool::Liveness;
use crate::rows::{Column, QueryResult};
use crate::stream::{Stream, Wire, MAX_MESSAGE};

pub use error::server_error;

/// The transaction state ReadyForQuery reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

/// Whether the protocol is at a message boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// ReadyForQuery seen; a statement may be sent.
    Ready,
    /// An exchange is in progress (or was abandoned mid-way).
    Busy,
    /// Unusable: close it.
    Broken,
}

/// How long, after a cancel was sent, the session waits for the server to
/// confirm with ReadyForQuery before giving the connection up.
const CANCEL_GRACE_MIN: Duration = Duration::from_millis(500);
/// How long a statement may go on after the postmaster took its cancel
/// before the cancel is sent once more (PostgreSQL's own cancel handshake
/// takes a few ms).
const CANCEL_RESEND_AFTER: Duration = Duration::from_millis(100);

/// Notices kept per statement.
const MAX_NOTICES: usize = 100;

/// Opens PostgreSQL sessions with one configuration.
#[derive(Clone)]
pub struct PgConnector {
    config: Arc<Config>,
    dialer: Dialer,
}

impl PgConnector {
    pub fn new(config: Arc<Config>) -> Result<PgConnector> {
        let dialer = Dialer::new(&config.dial)?;
        Ok(PgConnector { config, dialer })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Dials and logs in: the dial under its own limits, the login under
    /// `login_timeout`, all under the caller's deadline.
    pub async fn connect(&self, caller: Option<Deadline>) -> Result<PgConnection> {
        let connected = self.dialer.connect(&self.config.hosts, caller).await?;
        let login_start = Instant::now();
        let limit = Deadline::earliest(
            Deadline::from_option("login_timeout", self.config.login_timeout),
            caller,
        );
        let peer = connected.peer.to_string();
        let mut timings = connected.timings;
        let host = connected.host.host.clone();
        let addr = connected.peer;
        let login = self.login(connected.stream, &host, &peer, caller, &mut timings);
        match deadline::run(limit, login).await {
            Ok(Ok(mut conn)) => {
                conn.addr = addr;
                conn.timings = timings;
                conn.wire.layer = Layer::Query;
                Ok(conn)
            }
            Ok(Err(e)) => Err(e.with_phases(timings)),
            Err(deadline::Fired(d)) => {
                let hint = if d.is_caller() {
                    "the caller's deadline passed during login"
                } else {
                    "the server accepted the connection but did not finish startup and authentication; is it overloaded, or is this port a proxy without a server behind it?"
                };
                Err(
                    Error::new(Code::LoginTimeout, format!("login to {peer} timed out"))
                        .with_limit(d.limit())
                        .with_elapsed(login_start.elapsed())
                        .with_peer(&peer)
                        .with_hint(hint)
                        .with_phases(timings),
                )
            }
        }
    }

    /// SSLRequest, then the TLS handshake when the server says 'S'. Returns
    /// the stream and the handshake time (None when TLS was not used).
    async fn negotiate_tls(
        &self,
        mut tcp: tokio::net::TcpStream,
        host: &str,
        peer: &str,
        caller: Option<Deadline>,
    ) -> Result<(Stream, Option<Duration>)> {
        let mode = self.config.dial.tls.sslmode;
        let start = Instant::now();
        let io_err = |e: std::io::Error| -> Error { Wire::new_lost(peer, e) };
        let mut buf = BytesMut::with_capacity(8);
        frontend::ssl_request(&mut buf);
        tcp.write_all(&buf).await.map_err(io_err)?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.map_err(io_err)?;
        match answer[0] {
            b'S' => {
                let (tls, _) = self
                    .dialer
                    .upgrade_tls(crate::stream::Socket::new(tcp), host, peer, caller)
                    .await?;
                Ok((Stream::Tls(Box::new(tls)), Some(start.elapsed())))
            }
            b'N' if mode.requires_tls() => Err(Error::new(
                Code::TlsError,
                format!("{peer} does not accept TLS"),
            )
            .with_peer(peer)
            .with_cause(format!(
                "the server answered the SSLRequest with 'N' and sslmode={}",
                mode.name()
            ))
            .with_hint("enable ssl on the server, or use sslmode=prefer or disable")
            .with_retryable(false)),
            b'N' => Ok((Stream::plain(tcp), None)),
            other => Err(Error::new(
                Code::ProtocolError,
                format!("{peer} answered the SSLRequest with byte {other:#04x}"),
            )
            .with_peer(peer)
            .with_hint("is this port a PostgreSQL server?")),
        }
    }

    async fn login(
        &self,
        tcp: tokio::net::TcpStream,
        host: &str,
        peer: &str,
        caller: Option<Deadline>,
        timings: &mut PhaseTimings,
    ) -> Result<PgConnection> {
        let cfg = &self.config;
        let mode = cfg.dial.tls.sslmode;
        let stream = if mode.wants_tls() {
            // The SSLRequest round trip is part of the TLS step: a peer that
            // accepts TCP but never answers it is stalling TLS, and gets
            // TLS_TIMEOUT under tls_timeout like a stalled handshake.
            let tls_start = Instant::now();
            let limit = Deadline::earliest(
                Deadline::from_option("tls_timeout", cfg.dial.tls_timeout),
                caller,
            );
            match deadline::run(limit, self.negotiate_tls(tcp, host, peer, caller)).await {
                Ok(Ok((stream, took))) => {
                    timings.tls = took;
                    stream
                }
                Ok(Err(e)) => return Err(e),
                Err(deadline::Fired(d)) => {
                    let hint = if d.is_caller() {
                        "the caller's deadline passed while negotiating TLS"
                    } else {
                        "the server accepted the connection but did not answer the TLS request; is this port a PostgreSQL server?"
                    };
                    return Err(Error::new(
                        Code::TlsTimeout,
                        format!("TLS negotiation with {peer} timed out"),
                    )
                    .with_limit(d.limit())
                    .with_elapsed(tls_start.elapsed())
                    .with_peer(peer)
                    .with_cause("no answer to the SSLRequest or the TLS handshake")
                    .with_hint(hint));
                }
            }
        } else {
            Stream::plain(tcp)
        };
        let mut wire = Wire::new(stream, peer.to_string());
        wire.read_timeout = cfg.query.read_timeout;
        wire.write_timeout = cfg.query.write_timeout;

        let user = cfg
            .user
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".into());
        let database = cfg.dbname.clone().unwrap_or_else(|| user.clone());
        let mut params: Vec<(&str, &str)> = vec![
            ("user", &user),
            ("database", &database),
            ("client_encoding", "UTF8"),
        ];
        if let Some(app) = &cfg.application_name {
            params.push(("application_name", app));
        }
        if let Some(opts) = &cfg.options {
            params.push(("options", opts));
        }
        frontend::startup_message(params.iter().copied(), &mut wire.wbuf)
            .map_err(|e| Error::invalid_argument(format!("startup parameters: {e}")))?;
        wire.flush().await?;

        let mut conn = PgConnection {
            wire,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            backend: None,
            params: HashMap::new(),
            tx: TxStatus::Idle,
            state: State::Busy,
            cache: StatementCache::new(cfg.statement_cache as usize),
            statements_prepared: 0,
            config: self.config.clone(),
            dialer: self.dialer.clone(),
            timings: PhaseTimings::default(),
            user: user.clone(),
            auth_method: "trust",
        };
        auth::authenticate(&mut conn, &user, cfg.password.as_ref().map(|p| p.expose())).await?;
        // After AuthenticationOk: parameters, the backend key, ReadyForQuery.
        loop {
            match conn.read_message().await? {
                Message::BackendKeyData(k) => conn.backend = Some((k.process_id(), k.secret_key())),
                Message::ParameterStatus(p) => conn.note_parameter(&p),
                Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(r) => {
                    conn.ready(r.status());
                    return Ok(conn);
                }
                Message::ErrorResponse(body) => {
                    return Err(error::login_error(&body, peer));
                }
                _ => return Err(conn.unexpected("during startup")),
            }
        }
    }
}

/// One PostgreSQL session.
pub struct PgConnection {
    wire: Wire,
    addr: SocketAddr,
    backend: Option<(i32, i32)>,
    params: HashMap<String, String>,
    tx: TxStatus,
    state: State,
    cache: StatementCache,
    /// Numbers the named statements this session prepares.
    statements_prepared: u64,
    config: Arc<Config>,
    dialer: Dialer,
    timings: PhaseTimings,
    user: String,
    auth_method: &'static str,
}

impl PgConnection {
    /// A server parameter as last reported (`server_version`, `TimeZone`, …).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The backend's process id (as `pg_backend_pid()` returns).
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend.map(|(pid, _)| pid)
    }

    pub fn tx_status(&self) -> TxStatus {
        self.tx
    }

    pub fn is_tls(&self) -> bool {
        self.wire.stream.is_tls()
    }

    pub fn timings(&self) -> PhaseTimings {
        self.timings
    }

    pub fn peer(&self) -> &str {
        &self.wire.peer
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// How the server authenticated us: `trust`, `password`, `md5`,
    /// `SCRAM-SHA-256` or `SCRAM-SHA-256-PLUS` (channel-bound to TLS).
    pub fn auth_method(&self) -> &'static str {
        self.auth_method
    }

    /// Whether the session is at a message boundary and may take a statement.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Whether the session can go back to a pool: ready and outside a
    /// transaction.
    pub fn is_clean(&self) -> bool {
        self.state == State::Ready && self.tx == TxStatus::Idle
    }

    /// Whether the session must be closed.
    pub fn is_broken(&self) -> bool {
        self.state == State::Broken
    }

    /// The session socket's descriptor and id (see
    /// [`crate::runtime::SocketWait`]).
    pub fn socket_ident(&self) -> (std::os::fd::RawFd, u64) {
        self.wire.stream.socket().ident()
    }

    /// The checkout probe: a peek at the socket, no round trip.
    pub fn probe(&self) -> Liveness {
        if self.state != State::Ready || !self.wire.rbuf.is_empty() {
            return Liveness::Dead;
        }
        crate::dial::probe(&self.wire.stream)
    }

    /// Runs `sql` with text parameters (`None` for NULL) under the earlier of
    /// `query_timeout` and `caller`; `cancel` stops it at once. A statement
    /// stopped either way is cancelled on the server.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[Option<&str>],
        caller: Option<Deadline>,
        cancel: Option<&CancelToken>,
    ) -> Result<QueryResult> {
        let start = Instant::now();
        let limit = Deadline::earliest(
            Deadline::starting_at_opt(start, "query_timeout", self.config.query.query_timeout),
            caller,
        );
        if self.state != State::Ready {
            return Err(Error::invalid_state(
                "the connection is not ready for a statement (a previous one was interrupted and the session is unusable)",
            )
            .with_layer(Layer::Query));
        }
        if params.len() > u16::MAX as usize {
            return Err(Error::invalid_argument(format!(
                "{} parameters given; PostgreSQL takes at most 65535",
                params.len()
            )));
        }
        self.state = State::Busy;
        // Pinned here and passed by reference: the deadline wrappers then
        // hold a pointer, not a copy of the exchange's state.
        let outcome = {
            let exchange = std::pin::pin!(self.exchange(sql, params));
            deadline::run_until(limit, cancel, exchange).await
        };
        // Taken apart before the await below, so that the outcome (a whole
        // result) is not kept in the future's state beside it.
        let stop = match outcome {
            Ok(result) => return result,
            Err(stop) => stop,
        };
        // Boxed: the cancel path dials a second connection, a future of
        // many KB that would otherwise enlarge every statement's future,
        // which is moved on every call.
        Err(Box::pin(self.interrupt(stop, start)).await)
    }

    /// As [`PgConnection::query`], returning the affected row count.
    pub async fn execute(
        &mut self,
        sql: &str,
        params: &[Option<&str>],
        caller: Option<Deadline>,
        cancel: Option<&CancelToken>,
    ) -> Result<u64> {
        self.query(sql, params, caller, cancel)
            .await
            .map(|r| r.affected_rows)
    }

    /// An empty query: one round trip.
    pub async fn ping(&mut self, deadline: Option<Deadline>) -> Result<()> {
        if self.state != State::Ready {
            return Err(Error::invalid_state("ping on a busy connection"));
        }
        self.state = State::Busy;
        let start = Instant::now();
        let r = deadline::run(deadline, self.exchange("", &[])).await;
        match r {
            Ok(r) => r.map(|_| ()),
            Err(deadline::Fired(d)) => {
                self.state = State::Broken;
                Err(Error::new(
                    Code::ReadTimeout,
                    format!("ping to {} timed out", self.wire.peer),
                )
                .with_layer(Layer::Pool)
                .with_limit(d.limit())
                .with_elapsed(start.elapsed())
                .with_peer(&self.wire.peer))
            }
        }
    }

    /// The server's `idle_session_timeout` (PostgreSQL 14 and later), when
    /// set; read with a short bound so a slow server cannot stall the pool.
    pub async fn server_idle_limit(&mut self) -> Option<Duration> {
        let bound = Some(Deadline::after("login_timeout", Duration::from_secs(5)));
        let r = self
            .query(
                "SELECT setting::bigint FROM pg_settings WHERE name = 'idle_session_timeout'",
                &[],
                bound,
                None,
            )
            .await
            .ok()?;
        let ms: u64 = r.get(0, 0)?.parse().ok()?;
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// Rolls back an open transaction, bounded by `cancel_timeout`.
    pub async fn reset(&mut self) -> Result<()> {
        if self.tx == TxStatus::Idle && self.state == State::Ready {
            return Ok(());
        }
        let bound = self
            .config
            .query
            .cancel_timeout
            .unwrap_or(Duration::from_secs(5));
        self.query(
            "ROLLBACK",
            &[],
            Some(Deadline::after("cancel_timeout", bound)),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Says goodbye (Terminate) and closes, bounded so a dead peer cannot
    /// hold the caller.
    pub async fn close(mut self) {
        if self.state != State::Broken {
            frontend::terminate(&mut self.wire.wbuf);
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                let _ = self.wire.flush().await;
                let _ = self.wire.stream.shutdown().await;
            })
            .await;
        }
    }

    /// Whether a statement without parameters goes through the statement
    /// cache too (Parse once, then Bind/Execute), as pgx does, instead of a
    /// simple Query: the server then skips parsing and planning it again,
    /// about a third of its work for a short statement. Within what the
    /// cache allows for any server ([`StatementCache::may_prepare_text`]),
    /// COPY and the commands that drop prepared statements keep the simple
    /// protocol.
    fn prepares_without_params(&self, sql: &str) -> bool {
        let text = sql.trim_start();
        let starts = |word: &str| {
            text.get(..word.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(word))
        };
        self.cache.may_prepare_text(sql)
            && !["copy", "discard", "deallocate"].into_iter().any(starts)
    }

    /// A fresh statement name, or the unnamed statement when the cache is
    /// off.
    fn next_statement_name(&mut self) -> String {
        if self.cache.capacity() == 0 {
            return String::new();
        }
        self.statements_prepared += 1;
        format!("dp_{}", self.statements_prepared)
    }

    fn ready(&mut self, status: u8) {
        self.tx = match status {
            b'T' => TxStatus::InTransaction,
            b'E' => TxStatus::Failed,
            _ => TxStatus::Idle,
        };
        self.state = State::Ready;
    }

    fn note_parameter(&mut self, p: &postgres_protocol::message::backend::ParameterStatusBody) {
        if let (Ok(name), Ok(value)) = (p.name(), p.value()) {
            self.params.insert(name.to_string(), value.to_string());
        }
    }

    fn unexpected(&mut self, when: &str) -> Error {
        self.state = State::Broken;
        Error::new(
            Code::ProtocolError,
            format!("unexpected message from {} {when}", self.wire.peer),
        )
        .with_layer(self.wire.layer)
        .with_peer(&self.wire.peer)
        .with_retryable(false)
    }

    /// The next complete message, reading more as needed (cancel-safe).
    async fn read_message(&mut self) -> Result<Message> {
        loop {
            if self.wire.rbuf.len() >= 5 {
                let len = u32::from_be_bytes([
                    self.wire.rbuf[1],
                    self.wire.rbuf[2],
                    self.wire.rbuf[3],
                    self.wire.rbuf[4],
                ]) as usize;
                if len > MAX_MESSAGE {
                    self.state = State::Broken;
                    return Err(Error::new(
                        Code::ProtocolError,
                        format!("{} sent a message of {len} bytes", self.wire.peer),
                    )
                    .with_layer(self.wire.layer));
                }
            }
            match Message::parse(&mut self.wire.rbuf) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => {
                    self.state = State::Broken;
                    return Err(Error::new(
                        Code::ProtocolError,
                        format!("malformed message from {}: {e}", self.wire.peer),
                    )
                    .with_layer(self.wire.layer));
                }
            }
            if let Err(e) = self.wire.fill().await {
                self.state = State::Broken;
                return Err(e);
            }
        }
    }

    /// Writes the statement and reads its result up to ReadyForQuery.
    async fn exchange(&mut self, sql: &str, params: &[Option<&str>]) -> Result<QueryResult> {
        let mut cached = false;
        // In a block of its own, so that the first outcome is not kept
        // (in the future's state) across the second exchange.
        {
            match self.exchange_once(sql, params, &mut cached).await {
                // The cached statement is gone or its result type changed
                // (a DEALLOCATE or DISCARD by hand, an ALTER TABLE since it
                // was prepared). Outside a transaction nothing ran, so it is
                // prepared again, once, instead of failing a statement that
                // would have worked as a simple Query.
                Err(e)
                    if cached
                        && matches!(e.sqlstate(), Some("26000") | Some("0A000"))
                        && self.tx == TxStatus::Idle
                        && self.state == State::Ready => {}
                other => return other,
            }
        }
        self.state = State::Busy;
        self.exchange_once(sql, params, &mut cached).await
    }

    /// One exchange; `cached` tells whether it used a cached statement.
    async fn exchange_once(
        &mut self,
        sql: &str,
        params: &[Option<&str>],
        cached: &mut bool,
    ) -> Result<QueryResult> {
        let mut cached_columns: Option<Arc<Vec<Column>>> = None;
        let mut caching: Option<Arc<str>> = None;
        // Looked up first: a cached statement passed the checks of
        // `prepares_without_params` when it was prepared.
        let hit = self.cache.get(sql);
        if hit.is_none() && params.is_empty() && !self.prepares_without_params(sql) {
            frontend::query(sql, &mut self.wire.wbuf).map_err(encode_error)?;
        } else {
            for name in self.cache.take_evicted() {
                frontend::close(b'S', &name, &mut self.wire.wbuf).map_err(encode_error)?;
            }
            let name = match hit {
                Some((name, cols)) => {
                    cached_columns = Some(cols);
                    *cached = true;
                    name
                }
                None => {
                    let name: Arc<str> = self.next_statement_name().into();
                    frontend::parse(&name, sql, std::iter::empty(), &mut self.wire.wbuf)
                        .map_err(encode_error)?;
                    if !name.is_empty() {
                        caching = Some(name.clone());
                    }
                    name
                }
            };
            let bound = frontend::bind(
                "",
                &name,
                std::iter::empty(),
                params.iter(),
                |p, buf| match p {
                    Some(v) => {
                        buf.extend_from_slice(v.as_bytes());
                        Ok(postgres_protocol::IsNull::No)
                    }
                    None => Ok(postgres_protocol::IsNull::Yes),
                },
                std::iter::empty(),
                &mut self.wire.wbuf,
            );
            if bound.is_err() {
                self.wire.wbuf.clear();
                self.state = State::Ready;
                return Err(Error::invalid_argument("parameters too large to encode"));
            }
            if cached_columns.is_none() {
                frontend::describe(b'P', "", &mut self.wire.wbuf).map_err(encode_error)?;
            }
            frontend::execute("", 0, &mut self.wire.wbuf).map_err(encode_error)?;
            frontend::sync(&mut self.wire.wbuf);
        }
        if let Err(e) = self.wire.flush().await {
            self.state = State::Broken;
            return Err(e);
        }
        let mut result = match &cached_columns {
            Some(cols) => QueryResult::with_shared_columns(cols.clone()),
            None => QueryResult::default(),
        };
        let mut error: Option<Error> = None;
        loop {
            match self.take_common_frame(&mut result, &mut caching)? {
                Head::Taken => continue,
                Head::Short => {
                    if let Err(e) = self.wire.fill().await {
                        self.state = State::Broken;
                        return Err(e);
                    }
                    continue;
                }
                Head::Other => {}
            }
            // Set by a COPY FROM STDIN, refused after the match: nothing
            // awaited inside the match keeps the message in the future.
            let mut refuse_copy = false;
            match self.read_message().await? {
                Message::RowDescription(desc) => {
                    let mut cols = Vec::new();
                    let mut fields = desc.fields();
                    while let Some(f) = fields.next().map_err(|e| self.malformed(e))? {
                        cols.push(Column::new(f.name().to_string(), f.type_oid(), false));
                    }
                    result.set_columns(cols);
                }
                Message::ErrorResponse(body) => {
                    let e = error::query_error(&body, &self.wire.peer);
                    if matches!(e.sqlstate(), Some("26000") | Some("0A000")) {
                        // The cached statement no longer exists or its
                        // result type changed: prepare it again next time.
                        self.cache.forget(sql);
                    }
                    caching = None;
                    if error.is_none() {
                        error = Some(e);
                    }
                }
                Message::ReadyForQuery(r) => {
                    self.ready(r.status());
                    if let Some(e) = error {
                        return Err(e);
                    }
                    if let Some(name) = caching {
                        self.cache.insert(sql, name, result.shared_columns());
                    }
                    return Ok(result);
                }
                Message::ParameterStatus(p) => self.note_parameter(&p),
                Message::NoticeResponse(body) => {
                    // Bounded: a statement that raises notices in a loop must
                    // not grow the result without end.
                    if result.notices.len() < MAX_NOTICES {
                        let f = error::fields_of(body.fields());
                        result
                            .notices
                            .push(format!("{}: {}", f.severity, f.message));
                    }
                }
                // DataRow, CommandComplete and the completions without a
                // body never get here: take_common_frame reads them.
                Message::EmptyQueryResponse | Message::NotificationResponse(_) => {}
                Message::CopyInResponse(_) => refuse_copy = true,
                Message::CopyOutResponse(_) | Message::CopyData(_) | Message::CopyDone => {}
                _ => return Err(self.unexpected("during a query")),
            }
            if refuse_copy {
                // COPY FROM STDIN is not supported: refuse it so the server
                // ends the COPY and the session stays usable.
                frontend::copy_fail(
                    "COPY FROM STDIN is not supported by dialpool",
                    &mut self.wire.wbuf,
                )
                .map_err(encode_error)?;
                self.wire
                    .flush()
                    .await
                    .inspect_err(|_| self.state = State::Broken)?;
            }
        }
    }

    /// Takes the frame at the head of the read buffer when it is one that
    /// every statement's answer is made of (DataRow, CommandComplete, and
    /// the completions without a body): these are read in place, and only
    /// here, where `Message::parse` would first split each off as a `Bytes`
    /// of its own (an atomic count, and a promotion of the buffer) for it
    /// to be dropped at once. [`Head::Short`]: read more first;
    /// [`Head::Other`]: any other frame, or a bad length, for
    /// [`Self::read_message`] (which reports the length).
    fn take_common_frame(
        &mut self,
        result: &mut QueryResult,
        caching: &mut Option<Arc<str>>,
    ) -> Result<Head> {
        let buf = &self.wire.rbuf[..];
        let (kind, len) = match buf {
            [kind @ (b'D' | b'C' | b'1' | b'2' | b'3' | b'n'), a, b, c, d, ..] => {
                (*kind, u32::from_be_bytes([*a, *b, *c, *d]) as usize)
            }
            [_, _, _, _, _, ..] => return Ok(Head::Other),
            _ => return Ok(Head::Short),
        };
        if !(4..=MAX_MESSAGE).contains(&len) {
            return Ok(Head::Other);
        }
        if buf.len() < 1 + len {
            return Ok(Head::Short);
        }
        let body = &buf[5..1 + len];
        let taken = match kind {
            b'D' => data_row(body, result),
            b'C' => match body.split_last() {
                Some((0, tag)) if !tag.contains(&0) => match std::str::from_utf8(tag) {
                    Ok(tag) => {
                        result.affected_rows = affected_rows(tag);
                        result.command_tag = tag.to_string();
                        if matches!(tag, "DISCARD ALL" | "DEALLOCATE ALL") {
                            // The server dropped every prepared statement.
                            self.cache.clear();
                            *caching = None;
                        }
                        Ok(())
                    }
                    Err(_) => Err("a command tag that is not UTF-8"),
                },
                _ => Err("a command tag that is not one C string"),
            },
            _ if body.is_empty() => Ok(()),
            _ => Err("a body where none belongs"),
        };
        match taken {
            Ok(()) => {
                bytes::Buf::advance(&mut self.wire.rbuf, 1 + len);
                Ok(Head::Taken)
            }
            Err(why) => {
                Err(self.malformed(std::io::Error::new(std::io::ErrorKind::InvalidData, why)))
            }
        }
    }

    fn malformed(&mut self, e: std::io::Error) -> Error {
        self.state = State::Broken;
        Error::new(
            Code::ProtocolError,
            format!("malformed message from {}: {e}", self.wire.peer),
        )
        .with_layer(self.wire.layer)
    }

    /// The statement's deadline passed or the caller cancelled: cancel it on
    /// the server, then read on to ReadyForQuery so the session can be
    /// reused; if the server does not confirm in time, the session is
    /// marked broken.
    async fn interrupt(&mut self, stop: Stop, start: Instant) -> Error {
        let cancel_timeout = self.config.query.cancel_timeout;
        let bound = cancel_timeout.unwrap_or(Duration::from_secs(5));
        let (code, what, limit) = match stop {
            Stop::Deadline(d) => (Code::QueryTimeout, "statement timed out", Some(d.limit())),
            Stop::Cancelled => (Code::Cancelled, "statement cancelled by the caller", None),
        };
        let elapsed = start.elapsed();
        let peer = self.wire.peer.clone();
        let base = |cause: String, hint: &str| {
            let mut e = Error::new(code, what.to_string())
                .with_layer(Layer::Query)
                .with_elapsed(elapsed)
                .with_peer(peer.clone())
                .with_cause(cause)
                .with_hint(hint.to_string())
                .with_retryable(false);
            if let Some(l) = limit {
                e = e.with_limit(l);
            }
            e
        };
        if self.state == State::Broken {
            return base(
                "the connection broke at the same moment".into(),
                "the connection is closed",
            );
        }
        // Whatever of the statement is still unsent must go first: the
        // server cannot cancel what it has not received, and a half-sent
        // message would corrupt the session.
        let flushed = deadline::run(
            Some(Deadline::after("cancel_timeout", bound)),
            self.wire.flush(),
        )
        .await;
        if !matches!(flushed, Ok(Ok(()))) {
            self.state = State::Broken;
            return base(
                "the statement could not be sent in full; nothing was cancelled".into(),
                "the connection is closed",
            );
        }
        let cancel_start = Instant::now();
        let mut sent = self.send_cancel(bound).await;
        let left = |since: Instant| bound.saturating_sub(since.elapsed()).max(CANCEL_GRACE_MIN);
        let mut saw_cancel = false;
        // PostgreSQL drops a cancel that reaches the backend while it still
        // reads the statement; when the statement has not ended shortly
        // after the postmaster took the cancel, ask once more (the drain
        // keeps what it read: reads are cancel-safe).
        let first = CANCEL_RESEND_AFTER.min(left(cancel_start));
        let mut drained = deadline::run(
            Some(Deadline::after("cancel_timeout", first)),
            self.drain(&mut saw_cancel),
        )
        .await;
        if drained.is_err() {
            if sent.is_ok() {
                sent = self.send_cancel(left(cancel_start)).await;
            }
            drained = deadline::run(
                Some(Deadline::after("cancel_timeout", left(cancel_start))),
                self.drain(&mut saw_cancel),
            )
            .await;
        }
        let left = bound
            .saturating_sub(cancel_start.elapsed())
            .max(CANCEL_GRACE_MIN);
        match (sent, drained) {
            (_, Ok(Ok(()))) => {
                let cause = if saw_cancel {
                    "cancelled on the server; the connection is reusable".to_string()
                } else {
                    "the statement finished as the cancel arrived; its result was discarded"
                        .to_string()
                };
                let hint = if code == Code::QueryTimeout {
                    "raise query_timeout or the caller's deadline, or make the statement faster"
                } else {
                    "the caller stopped waiting"
                };
                let mut e = base(cause, hint);
                if saw_cancel {
                    e = e.with_sqlstate("57014");
                }
                e
            }
            (Err(cancel_err), _) => {
                self.state = State::Broken;
                base(
                    format!("the cancel request failed ({cancel_err}); the statement may still run on the server"),
                    "the connection is closed; check the network path to the server",
                )
            }
            (Ok(()), _) => {
                self.state = State::Broken;
                base(
                    format!(
                        "cancel sent, but the server did not confirm within {}",
                        crate::config::fmt_duration(left)
                    ),
                    "the connection is closed; the server may be overloaded",
                )
            }
        }
    }

    /// CancelRequest with the backend key over a fresh connection to the
    /// same address, then waits for the server to close it, which it does
    /// once the signal is delivered (so the cancel cannot hit a later
    /// statement).
    async fn send_cancel(&self, bound: Duration) -> Result<()> {
        let Some((pid, key)) = self.backend else {
            return Err(Error::invalid_state("the server sent no cancel key"));
        };
        let host = crate::config::HostPort {
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
        };
        let limit = Some(Deadline::after("cancel_timeout", bound));
        let dialer = self.dialer.clone();
        let work = async move {
            let mut c = dialer.connect_host(&host, limit).await?;
            let mut buf = BytesMut::with_capacity(16);
            frontend::cancel_request(pid, key, &mut buf);
            c.stream
                .write_all(&buf)
                .await
                .map_err(|e| Wire::new_lost(&host.to_string(), e))?;
            let mut sink = [0u8; 64];
            // EOF (or a reset) tells that the postmaster has handled it.
            let _ = c.stream.read(&mut sink).await;
            Ok::<(), Error>(())
        };
        match deadline::run(limit, work).await {
            Ok(r) => r,
            Err(deadline::Fired(d)) => {
                Err(Error::new(Code::ConnectTimeout, "cancel request timed out")
                    .with_limit(d.limit())
                    .with_elapsed(bound))
            }
        }
    }

    /// Reads and discards up to ReadyForQuery; sets `cancelled` when the
    /// statement ended with query_canceled (57014). May be stopped and
    /// called again.
    async fn drain(&mut self, cancelled: &mut bool) -> Result<()> {
        loop {
            match self.read_message().await? {
                Message::ErrorResponse(body)
                    if error::sqlstate_of(&body).as_deref() == Some("57014") =>
                {
                    *cancelled = true;
                }
                Message::ReadyForQuery(r) => {
                    self.ready(r.status());
                    return Ok(());
                }
                Message::ParameterStatus(p) => self.note_parameter(&p),
                _ => {}
            }
        }
    }
}

fn encode_error(e: std::io::Error) -> Error {
    Error::invalid_argument(format!("cannot encode the statement: {e}"))
}

/// What [`PgConnection::take_common_frame`] found at the head of the read
/// buffer.
enum Head {
    Taken,
    /// Not all there yet.
    Short,
    Other,
}

/// A DataRow's body (a column count, then each value as a length, -1
/// for NULL, and its bytes) appended to `result` as a row.
fn data_row(body: &[u8], result: &mut QueryResult) -> std::result::Result<(), &'static str> {
    let Some((count, mut rest)) = body.split_first_chunk::<2>() else {
        return Err("a row without its column count");
    };
    result.begin_row();
    for _ in 0..u16::from_be_bytes(*count) {
        let Some((len, after)) = rest.split_first_chunk::<4>() else {
            return Err("a row that ends inside a value's length");
        };
        rest = after;
        let value = match i32::from_be_bytes(*len) {
            -1 => None,
            n => {
                let n = usize::try_from(n).map_err(|_| "a negative value length")?;
                if n > rest.len() {
                    return Err("a value longer than its row");
                }
                let (value, after) = rest.split_at(n);
                rest = after;
                Some(value)
            }
        };
        result.push_value(value)?;
    }
    if !rest.is_empty() {
        return Err("a row longer than its values");
    }
    Ok(())
}

/// The row count in a command tag: the last number of `INSERT 0 5`,
/// `UPDATE 3`, `SELECT 7`, `DELETE 0`, `MERGE 2`, `COPY 10`, `FETCH 4`.
fn affected_rows(tag: &str) -> u64 {
    // By hand: this runs for every statement, and splitting and parsing
    // the tag as text cost ~190 instructions.
    let bytes = tag.as_bytes();
    let digits = bytes
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let (words, count) = bytes.split_at(bytes.len() - digits);
    if count.is_empty() || !(words.is_empty() || words.ends_with(b" ")) {
        // No count ("CREATE TABLE"), or digits that end a word ("MOVE2").
        return 0;
    }
    count
        .iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .unwrap_or(0)
}

/// Named prepared statements per connection with their result columns.
/// Capacity 0 uses the unnamed statement (PgBouncer transaction mode).
/// Names are `Arc<str>`: a hit hands out the name without allocating.
type StatementCache = crate::stmt_cache::StatementCache<Arc<str>, Arc<Vec<Column>>>;

impl Wire {
    /// CONNECTION_LOST for a stream that is not a [`Wire`] yet.
    pub(crate) fn new_lost(peer: &str, e: std::io::Error) -> Error {
        let class = crate::error::classify_io(&e, true);
        Error::new(Code::ConnectionLost, format!("connection to {peer} lost"))
            .with_layer(Layer::Login)
            .with_peer(peer)
            .with_cause(format!("{} ({})", class.meaning, class.errno_name))
            .with_hint(class.hint)
            .with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::{affected_rows, data_row};
    use crate::rows::QueryResult;

    /// A DataRow body from values (None for NULL).
    fn row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b
    }

    #[test]
    fn data_rows_are_read_in_place_and_checked() {
        let mut r = QueryResult::default();
        data_row(&row(&[Some(b"42"), None, Some(b"")]), &mut r).expect("row");
        data_row(&row(&[]), &mut r).expect("a row of no columns");
        assert_eq!(r.row_count(), 2);
        assert_eq!(r.bytes(0, 0), None, "no columns were described");

        let good = row(&[Some(b"abc"), Some(b"de")]);
        for (body, why) in [
            (vec![0u8], "without its column count"),
            (good[..good.len() - 1].to_vec(), "longer than its row"),
            (good[..4].to_vec(), "ends inside a value's length"),
            ([good.clone(), vec![9]].concat(), "longer than its values"),
            (
                [vec![0, 1], (-2i32).to_be_bytes().to_vec()].concat(),
                "negative value length",
            ),
        ] {
            let e = data_row(&body, &mut QueryResult::default()).expect_err(why);
            assert!(e.contains(why), "{e} / {why}");
        }
    }

    #[test]
    fn affected_rows_reads_the_count_that_ends_the_tag() {
        for (tag, n) in [
            ("SELECT 1", 1),
            ("INSERT 0 5", 5),
            ("UPDATE 1234567", 1_234_567),
            ("DELETE 0", 0),
            ("7", 7),
            ("COPY 18446744073709551615", u64::MAX),
            // No count, or one that does not fit.
            ("CREATE TABLE", 0),
            ("", 0),
            ("SELECT ", 0),
            ("MOVE2", 0),
            ("COPY 18446744073709551616", 0),
            ("SELECT 99999999999999999999999", 0),
        ] {
            assert_eq!(affected_rows(tag), n, "{tag:?}");
        }
    }
}
