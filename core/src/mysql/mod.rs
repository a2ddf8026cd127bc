//! MySQL and MariaDB sessions over the dialer's stream: login (the SSL
//! request packet and the dialer's TLS upgrade, mysql_native_password,
//! caching_sha2_password, client_ed25519, plugin switches), COM_QUERY text
//! results, prepared statements with a per-connection cache, and query
//! deadlines that kill the statement on the server (`KILL QUERY` over a
//! fresh connection) and keep the session when it is provably back at a
//! packet boundary.
//!
//! The protocol position lives in the session (`expect`), not in the query
//! future: a future dropped at a deadline leaves enough behind to read the
//! rest of the killed statement's answer and reuse the connection.

mod auth;
mod error;
mod packet;
mod value;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    CommonOkPacket, OkPacketDeserializer, OldEofPacket, ResultSetTerminator, SslRequest, StmtPacket,
};
use mysql_common::proto::MySerialize;
use tokio::io::AsyncWriteExt;

use crate::config::{Config, HostPort};
use crate::deadline::{self, CancelToken, Deadline, Stop};
use crate::dial::{Dialer, PhaseTimings};
use crate::error::{Code, Error, Layer, Result};
use crate::pool::Liveness;
use crate::rows::{Column, QueryResult};
use crate::stream::{Stream, Wire, MAX_MESSAGE};

use self::error::{ServerFields, ER_QUERY_INTERRUPTED, SQLSTATE_INTERRUPTED};
use self::packet::{
    Link, Packet, COM_PING, COM_QUERY, COM_QUIT, COM_RESET_CONNECTION, COM_STMT_CLOSE,
    COM_STMT_EXECUTE, COM_STMT_PREPARE,
};
use self::value::ColumnMeta;

pub use self::error::server_error;

/// Whether the protocol is at a packet boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The last command's answer was read in full; a command may be sent.
    Ready,
    /// A command is in progress (or was abandoned mid-way).
    Busy,
    /// Unusable: close it.
    Broken,
}

/// Where in a command's answer the session is: what the next packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Nothing outstanding.
    Idle,
    /// The start of a result: OK, ERR, a LOCAL INFILE request or a column
    /// count.
    Result { binary: bool },
    /// Column definitions, `left` still to come.
    Columns { left: u64, binary: bool },
    /// The EOF after the column definitions (servers without
    /// CLIENT_DEPRECATE_EOF).
    ColumnsEof { binary: bool },
    /// Rows until the terminator.
    Rows { binary: bool },
    /// COM_STMT_PREPARE's answer: the statement, or ERR.
    Prepared,
    /// Parameter and column definitions after it (and their EOFs), which
    /// are skipped: COM_STMT_EXECUTE describes its columns again.
    PrepareDefs { left: u32 },
    /// One OK or ERR (COM_PING, COM_RESET_CONNECTION).
    Ok,
}

/// One packet of an answer, classified by where it came.
enum Step {
    /// An OK that is a command's (or one result's) whole answer.
    Ok(OkInfo),
    Err(ServerFields),
    /// A result set starts with this many columns.
    ResultSet(u64),
    /// A column definition: its packet is the caller's (see `step_keep`).
    Column,
    /// A row: its packet is the caller's (see `step_keep`).
    Row,
    /// The end of a result set's rows.
    RowsDone(OkInfo),
    /// The server asks for a local file (never wanted: refused).
    LocalInfile,
    Prepared {
        params: u16,
    },
    /// A packet with nothing in it for the caller.
    Skip,
}

/// The facts of an OK or end-of-rows packet.
#[derive(Debug, Clone, Copy, Default)]
struct OkInfo {
    affected_rows: u64,
    last_insert_id: Option<u64>,
    warnings: u16,
}

/// How long, after `KILL QUERY` went through, the session waits for the
/// statement's interrupted answer before giving the connection up.
const CANCEL_GRACE_MIN: Duration = Duration::from_millis(500);

/// utf8mb4_general_ci, the character set asked for in the SSL request (the
/// handshake response picks the same).
const UTF8MB4_GENERAL_CI: u8 = 45;

/// Opens MySQL/MariaDB sessions with one configuration.
#[derive(Clone)]
pub struct MysqlConnector {
    config: Arc<Config>,
    dialer: Dialer,
    /// Tests: talk like a client without CLIENT_DEPRECATE_EOF (MySQL 5.6
    /// and older servers), to exercise the EOF-packet paths.
    #[cfg(test)]
    legacy_eof: bool,
}

impl MysqlConnector {
    pub fn new(config: Arc<Config>) -> Result<MysqlConnector> {
        let dialer = Dialer::new(&config.dial)?;
        Ok(MysqlConnector {
            config,
            dialer,
            #[cfg(test)]
            legacy_eof: false,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Dials and logs in: the dial under its own limits, the login under
    /// `login_timeout`, all under the caller's deadline.
    pub async fn connect(&self, caller: Option<Deadline>) -> Result<MysqlConnection> {
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
        let login = self.login(connected.stream, &host, addr, caller, &mut timings);
        match deadline::run(limit, login).await {
            Ok(Ok(mut conn)) => {
                conn.timings = timings;
                conn.link.wire.layer = Layer::Query;
                Ok(conn)
            }
            Ok(Err(e)) => Err(e.with_phases(timings)),
            Err(deadline::Fired(d)) => {
                let hint = if d.is_caller() {
                    "the caller's deadline passed during login"
                } else {
                    "the server accepted the connection but did not finish the handshake and authentication; is it overloaded, is its DNS lookup of clients slow (skip-name-resolve), or is this port not a MySQL server?"
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

    /// The handshake on an established TCP connection: the greeting, TLS
    /// through the SSL request when the sslmode says so, authentication.
    async fn login(
        &self,
        tcp: tokio::net::TcpStream,
        host: &str,
        addr: SocketAddr,
        caller: Option<Deadline>,
        timings: &mut PhaseTimings,
    ) -> Result<MysqlConnection> {
        let cfg = &self.config;
        let peer = addr.to_string();
        let mode = cfg.dial.tls.sslmode;
        let mut link = Link::new(self.wire(Stream::plain(tcp), &peer));
        let greeting = link.read_packet().await?;
        let greeting = auth::parse_greeting(&greeting, &peer)?;
        let mut caps = auth::client_capabilities() & greeting.capabilities;
        #[cfg(test)]
        if self.legacy_eof {
            caps.remove(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        }
        let server_tls = greeting.capabilities.contains(CapabilityFlags::CLIENT_SSL);
        let mut tls = false;
        if mode.wants_tls() && server_tls {
            caps |= CapabilityFlags::CLIENT_SSL;
            let mut buf = Vec::with_capacity(32);
            SslRequest::new(caps, MAX_MESSAGE as u32, UTF8MB4_GENERAL_CI).serialize(&mut buf);
            link.write_packet(&[&buf]);
            link.wire.flush().await?;
            if !link.wire.rbuf.is_empty() {
                return Err(Error::new(
                    Code::ProtocolError,
                    format!("{peer} sent data before the TLS handshake"),
                )
                .with_peer(&peer)
                .with_retryable(false));
            }
            let seq = link.seq;
            let Stream::Plain(tcp) = link.wire.stream else {
                return Err(Error::internal("TLS requested on a TLS stream"));
            };
            let (stream, took) = self.dialer.upgrade_tls(tcp, host, &peer, caller).await?;
            timings.tls = Some(took);
            link = Link::new(self.wire(Stream::Tls(Box::new(stream)), &peer));
            link.seq = seq;
            tls = true;
        } else if mode.requires_tls() {
            return Err(
                Error::new(Code::TlsError, format!("{peer} does not accept TLS"))
                    .with_peer(&peer)
                    .with_cause(format!(
                        "the server's handshake does not offer SSL and sslmode={}",
                        mode.name()
                    ))
                    .with_hint("enable TLS on the server (ssl_cert, ssl_key), or use sslmode=prefer or disable")
                    .with_retryable(false),
            );
        }
        let user = cfg
            .user
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "root".into());
        let creds = auth::Credentials {
            user: &user,
            password: cfg.password.as_ref().map(|p| p.expose()),
            database: cfg.dbname.as_deref().filter(|d| !d.is_empty()),
            application_name: cfg.application_name.as_deref(),
        };
        if creds.database.is_none() {
            caps.remove(CapabilityFlags::CLIENT_CONNECT_WITH_DB);
        }
        let status = auth::authenticate(&mut link, &greeting, caps, &creds, tls).await?;
        Ok(MysqlConnection {
            link,
            addr,
            host: host.to_string(),
            connection_id: greeting.connection_id,
            server_version: greeting.server_version,
            caps,
            status,
            tx_unknown: false,
            state: State::Ready,
            expect: Expect::Idle,
            sent: false,
            last_errno: None,
            preparing: None,
            cache: StatementCache::new(cfg.statement_cache as usize),
            connector: self.clone(),
            timings: PhaseTimings::default(),
            user,
            scratch: String::new(),
            columns_raw: Vec::new(),
            last_columns: None,
        })
    }

    fn wire(&self, stream: Stream, peer: &str) -> Wire {
        let mut wire = Wire::new(stream, peer.to_string());
        wire.read_timeout = self.config.query.read_timeout;
        wire.write_timeout = self.config.query.write_timeout;
        wire
    }

    /// `KILL QUERY <id>` over a fresh connection to `addr` (dial, TLS as
    /// configured, login), all within `bound`.
    async fn kill_query(
        &self,
        addr: SocketAddr,
        host: &str,
        id: u32,
        bound: Duration,
    ) -> Result<()> {
        let limit = Some(Deadline::after("cancel_timeout", bound));
        let target = HostPort {
            host: addr.ip().to_string(),
            port: addr.port(),
        };
        let work = async {
            let c = self.dialer.connect_host(&target, limit).await?;
            let mut timings = PhaseTimings::default();
            let mut killer = self
                .login(c.stream, host, c.peer, limit, &mut timings)
                .await?;
            killer.link.wire.layer = Layer::Query;
            killer.state = State::Busy;
            let sql = format!("KILL QUERY {id}");
            let r = killer.exchange(&sql, &[]).await;
            killer.close().await;
            r.map(|_| ())
        };
        match deadline::run(limit, work).await {
            Ok(r) => r,
            Err(deadline::Fired(d)) => Err(Error::new(
                Code::ConnectTimeout,
                format!("KILL QUERY {id} through a new connection to {addr} timed out"),
            )
            .with_limit(d.limit())
            .with_elapsed(bound)),
        }
    }
}

/// One MySQL or MariaDB session.
pub struct MysqlConnection {
    link: Link,
    addr: SocketAddr,
    /// The URL's host name, for verifying TLS on the kill connection.
    host: String,
    connection_id: u32,
    server_version: String,
    /// The capabilities in force (the client's and the server's common ones).
    caps: CapabilityFlags,
    /// The status flags of the last OK or end-of-rows packet.
    status: StatusFlags,
    /// An ERR arrived while a transaction may have been open (or autocommit
    /// was off); ERR packets carry no status, so assume the worst until the
    /// next OK says otherwise.
    tx_unknown: bool,
    state: State,
    expect: Expect,
    /// Whether any byte of the current statement was handed to the socket.
    sent: bool,
    /// The error number of the last ERR packet turned into an error.
    last_errno: Option<u16>,
    /// A statement id from COM_STMT_PREPARE_OK not yet in the cache.
    preparing: Option<u32>,
    cache: StatementCache,
    connector: MysqlConnector,
    timings: PhaseTimings,
    user: String,
    /// Reused while rendering binary values.
    scratch: String,
    /// The column definition packets of the result set being read, and
    /// those of the last one with what they parsed to: a statement run
    /// again sends the same definitions, which then cost a comparison
    /// instead of a parse and seven allocations.
    columns_raw: Vec<u8>,
    last_columns: Option<LastColumns>,
}

/// Parses column definition packets kept as length + bytes.
fn parse_columns(mut raw: &[u8]) -> std::io::Result<(Vec<Column>, Vec<ColumnMeta>)> {
    let mut columns = Vec::new();
    let mut metas = Vec::new();
    while let Some((len, tail)) = raw.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let Some((packet, tail)) = tail.split_at_checked(len) else {
            break;
        };
        raw = tail;
        let col: mysql_common::packets::Column = ParseBuf(packet).parse(())?;
        columns.push(Column::new(
            col.name_str().into_owned(),
            u32::from(col.column_type() as u8),
            value::holds_bytes(col.column_type(), col.character_set()),
        ));
        metas.push(ColumnMeta {
            kind: col.column_type(),
            flags: col.flags(),
            decimals: col.decimals(),
            length: col.column_length(),
        });
    }
    Ok((columns, metas))
}

/// See `MysqlConnection::last_columns`.
struct LastColumns {
    raw: Vec<u8>,
    columns: std::sync::Arc<Vec<Column>>,
    metas: std::sync::Arc<Vec<ColumnMeta>>,
}

impl MysqlConnection {
    /// The server's thread id for this session (`CONNECTION_ID()`), the one
    /// `KILL` takes.
    pub fn connection_id(&self) -> u32 {
        self.connection_id
    }

    /// The server's version, e.g. `10.11.19-MariaDB-0+deb12u1` (MariaDB's
    /// `5.5.5-` compatibility prefix removed).
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    pub fn is_tls(&self) -> bool {
        self.link.wire.stream.is_tls()
    }

    pub fn timings(&self) -> PhaseTimings {
        self.timings
    }

    pub fn peer(&self) -> &str {
        &self.link.wire.peer
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether the server reported an open transaction last
    /// (SERVER_STATUS_IN_TRANS), or it cannot be ruled out after an error.
    pub fn in_transaction(&self) -> bool {
        self.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS) || self.tx_unknown
    }

    /// Whether the session is at a packet boundary and may take a statement.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Whether the session can go back to a pool: ready and outside a
    /// transaction.
    pub fn is_clean(&self) -> bool {
        self.state == State::Ready && !self.in_transaction()
    }

    /// Whether the session must be closed.
    pub fn is_broken(&self) -> bool {
        self.state == State::Broken
    }

    /// The session socket's descriptor and id (see
    /// [`crate::runtime::SocketWait`]).
    pub fn socket_ident(&self) -> (std::os::fd::RawFd, u64) {
        self.link.wire.stream.socket().ident()
    }

    /// The checkout probe: a peek at the socket, no round trip. A server
    /// that cut the session (`wait_timeout`, KILL) has closed the socket or
    /// left an ERR packet in it.
    pub fn probe(&self) -> Liveness {
        if self.state != State::Ready || !self.link.wire.rbuf.is_empty() {
            return Liveness::Dead;
        }
        crate::dial::probe(&self.link.wire.stream)
    }

    /// Runs `sql` with text parameters (`None` for NULL) under the earlier of
    /// `query_timeout` and `caller`; `cancel` stops it at once. Without
    /// parameters it goes as COM_QUERY (text protocol); with them as a
    /// prepared statement. A statement stopped either way is killed on the
    /// server with `KILL QUERY`.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[Option<&str>],
        caller: Option<Deadline>,
        cancel: Option<&CancelToken>,
    ) -> Result<QueryResult> {
        let start = Instant::now();
        let limit = Deadline::earliest(
            Deadline::starting_at_opt(start, "query_timeout", self.config().query.query_timeout),
            caller,
        );
        if self.state != State::Ready {
            return Err(Error::invalid_state(
                "the connection is not ready for a statement (a previous one was interrupted and the session is unusable)",
            )
            .with_layer(Layer::Query));
        }
        if params.len() > usize::from(u16::MAX) {
            return Err(Error::invalid_argument(format!(
                "{} parameters given; MySQL takes at most 65535",
                params.len()
            )));
        }
        self.state = State::Busy;
        self.sent = false;
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

    /// As [`MysqlConnection::query`], returning the affected row count.
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

    /// COM_PING: one round trip. A ping that does not finish in time leaves
    /// the session broken.
    pub async fn ping(&mut self, deadline: Option<Deadline>) -> Result<()> {
        if self.state != State::Ready {
            return Err(Error::invalid_state("ping on a busy connection"));
        }
        self.state = State::Busy;
        let start = Instant::now();
        let r = deadline::run(deadline, self.simple_command(COM_PING)).await;
        match r {
            Ok(r) => r,
            Err(deadline::Fired(d)) => {
                self.state = State::Broken;
                Err(Error::new(
                    Code::ReadTimeout,
                    format!("ping to {} timed out", self.link.wire.peer),
                )
                .with_layer(Layer::Pool)
                .with_limit(d.limit())
                .with_elapsed(start.elapsed())
                .with_peer(&self.link.wire.peer))
            }
        }
    }

    /// The session's `wait_timeout`: how long the server keeps it idle
    /// before closing it. Read with a short bound so a slow server cannot
    /// stall the pool.
    pub async fn server_idle_limit(&mut self) -> Option<Duration> {
        let bound = Some(Deadline::after("login_timeout", Duration::from_secs(5)));
        let r = self
            .query("SELECT @@SESSION.wait_timeout", &[], bound, None)
            .await
            .ok()?;
        let secs: u64 = r.get(0, 0)?.parse().ok()?;
        (secs > 0).then(|| Duration::from_secs(secs))
    }

    /// Rolls back an open transaction, bounded by `cancel_timeout`.
    pub async fn reset(&mut self) -> Result<()> {
        if self.is_clean() {
            return Ok(());
        }
        let bound = self.cancel_bound();
        self.query(
            "ROLLBACK",
            &[],
            Some(Deadline::after("cancel_timeout", bound)),
            None,
        )
        .await
        .map(|_| ())
    }

    /// COM_RESET_CONNECTION, bounded by `cancel_timeout`: rolls back, drops
    /// temporary tables, user variables and prepared statements, and
    /// restores session variables — a fresh session without a new login.
    /// Heavier than [`MysqlConnection::reset`]; for pools that promise a
    /// pristine session.
    pub async fn reset_session(&mut self) -> Result<()> {
        if self.state != State::Ready {
            return Err(Error::invalid_state("reset on a busy connection"));
        }
        self.state = State::Busy;
        let bound = self.cancel_bound();
        let start = Instant::now();
        match deadline::run(
            Some(Deadline::after("cancel_timeout", bound)),
            self.simple_command(COM_RESET_CONNECTION),
        )
        .await
        {
            Ok(r) => {
                // The server dropped every prepared statement.
                self.cache.clear();
                r
            }
            Err(deadline::Fired(d)) => {
                self.state = State::Broken;
                Err(Error::new(
                    Code::ReadTimeout,
                    format!("COM_RESET_CONNECTION to {} timed out", self.link.wire.peer),
                )
                .with_layer(Layer::Pool)
                .with_limit(d.limit())
                .with_elapsed(start.elapsed()))
            }
        }
    }

    /// Says goodbye (COM_QUIT) and closes, bounded so a dead peer cannot
    /// hold the caller.
    pub async fn close(mut self) {
        if self.state != State::Broken {
            self.link.write_command(COM_QUIT, &[]);
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            let _ = self.link.wire.flush().await;
            let _ = self.link.wire.stream.shutdown().await;
        })
        .await;
    }

    fn config(&self) -> &Config {
        &self.connector.config
    }

    fn cancel_bound(&self) -> Duration {
        self.config()
            .query
            .cancel_timeout
            .unwrap_or(Duration::from_secs(5))
    }

    // ---- the exchange ----

    /// Writes queued bytes; a failure breaks the session.
    async fn flush(&mut self) -> Result<()> {
        self.sent = true;
        self.link
            .wire
            .flush()
            .await
            .inspect_err(|_| self.state = State::Broken)
    }

    fn protocol_error(&mut self, what: String) -> Error {
        self.state = State::Broken;
        Error::new(
            Code::ProtocolError,
            format!("{what} from {}", self.link.wire.peer),
        )
        .with_layer(self.link.wire.layer)
        .with_peer(&self.link.wire.peer)
        .with_retryable(false)
    }

    fn unexpected(&mut self, when: &str) -> Error {
        self.protocol_error(format!("unexpected packet {when}"))
    }

    /// A command answered by one OK or ERR.
    async fn simple_command(&mut self, command: u8) -> Result<()> {
        self.link.write_command(command, &[]);
        self.expect = Expect::Ok;
        self.flush().await?;
        let step = self.step().await?;
        self.state = State::Ready;
        match step {
            Step::Ok(_) => Ok(()),
            Step::Err(f) => Err(self.server_error(&f)),
            _ => Err(self.unexpected("in answer to a simple command")),
        }
    }

    fn server_error(&mut self, f: &ServerFields) -> Error {
        self.last_errno = Some(f.errno);
        let mut broken = false;
        let e = error::query_error(f, &self.link.wire.peer, &mut broken);
        if broken {
            self.state = State::Broken;
        }
        e
    }

    /// Reads one packet and moves `expect` on. Cancel-safe: the packet is
    /// consumed and `expect` advanced in one synchronous step.
    async fn step(&mut self) -> Result<Step> {
        let (step, packet) = self.step_keep().await?;
        self.link.consume(packet);
        Ok(step)
    }

    /// As [`Self::step`], but the packet of a column definition or a row
    /// stays in the read buffer for the caller, who reads it there
    /// ([`Packet::payload`]) and must [`Link::consume`] it before its next
    /// `.await`: the same synchronous stretch as the step, so the same
    /// cancel safety, with no copy or split of the buffer per packet.
    async fn step_keep(&mut self) -> Result<(Step, Packet)> {
        let packet = match self.link.read_in_place().await {
            Ok(p) => p,
            Err(e) => {
                self.state = State::Broken;
                return Err(e);
            }
        };
        // The buffer is lent out while the packet is looked at, so that the
        // session's methods (a bad packet marks the session broken) can run
        // beside it. Taking and giving back an empty BytesMut costs nothing.
        let rbuf = std::mem::take(&mut self.link.wire.rbuf);
        let step = self.classify(packet.payload(&rbuf));
        self.link.wire.rbuf = rbuf;
        match step {
            Ok(kept @ (Step::Column | Step::Row)) => Ok((kept, packet)),
            other => {
                self.link.consume(packet);
                // Nothing left for the caller: an empty packet at offset 0,
                // whose consume takes nothing.
                other.map(|s| (s, Packet::InBuf(0)))
            }
        }
    }

    /// What one packet means where the command stands; moves `expect` on.
    fn classify(&mut self, packet: &[u8]) -> Result<Step> {
        let first = packet.first().copied();
        let deprecate_eof = self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        match self.expect {
            Expect::Idle => Err(self.unexpected("while no command was running")),
            Expect::Result { binary } => match first {
                Some(0x00) => {
                    let ok = self.parse_ok(packet)?;
                    self.after_status(binary);
                    Ok(Step::Ok(ok))
                }
                Some(0xFF) => self.err_step(packet),
                // LOCAL INFILE: `expect` stays, the server answers our
                // (empty) reply with OK or ERR.
                Some(0xFB) => Ok(Step::LocalInfile),
                _ => match value::column_count(packet) {
                    Some(n) => {
                        self.expect = Expect::Columns { left: n, binary };
                        Ok(Step::ResultSet(n))
                    }
                    None => Err(self.protocol_error("a malformed result header".into())),
                },
            },
            Expect::Columns { left, binary } => {
                if first == Some(0xFF) {
                    return self.err_step(packet);
                }
                self.expect = if left > 1 {
                    Expect::Columns {
                        left: left - 1,
                        binary,
                    }
                } else if deprecate_eof {
                    Expect::Rows { binary }
                } else {
                    Expect::ColumnsEof { binary }
                };
                Ok(Step::Column)
            }
            Expect::ColumnsEof { binary } => {
                if first != Some(0xFE) || packet.len() >= 9 {
                    return Err(self.unexpected("where the end of the column definitions was due"));
                }
                self.expect = Expect::Rows { binary };
                Ok(Step::Skip)
            }
            Expect::Rows { binary } => match first {
                // The terminator: an OK with the 0xFE header (or the old
                // EOF). A row can start with 0xFE only when its first value
                // is 16 MiB or longer, so its packet is that long too.
                Some(0xFE)
                    if (deprecate_eof && packet.len() < packet::MAX_PAYLOAD)
                        || (!deprecate_eof && packet.len() < 9) =>
                {
                    let ok = self.parse_terminator(packet)?;
                    self.after_status(binary);
                    Ok(Step::RowsDone(ok))
                }
                Some(0xFF) => self.err_step(packet),
                _ => Ok(Step::Row),
            },
            Expect::Prepared => match first {
                Some(0x00) => {
                    let stmt: StmtPacket = ParseBuf(packet).parse(()).map_err(|e| {
                        self.protocol_error(format!("a malformed COM_STMT_PREPARE answer ({e})"))
                    })?;
                    let with_eof = |n: u16| u32::from(n) + u32::from(n > 0 && !deprecate_eof);
                    let left = with_eof(stmt.num_params()) + with_eof(stmt.num_columns());
                    self.expect = if left == 0 {
                        Expect::Idle
                    } else {
                        Expect::PrepareDefs { left }
                    };
                    // Kept in the session, not the future: a statement whose
                    // preparation is interrupted must still be closed.
                    self.preparing = Some(stmt.statement_id());
                    Ok(Step::Prepared {
                        params: stmt.num_params(),
                    })
                }
                Some(0xFF) => self.err_step(packet),
                _ => Err(self.unexpected("in answer to COM_STMT_PREPARE")),
            },
            Expect::PrepareDefs { left } => {
                self.expect = if left > 1 {
                    Expect::PrepareDefs { left: left - 1 }
                } else {
                    Expect::Idle
                };
                Ok(Step::Skip)
            }
            Expect::Ok => match first {
                Some(0x00) => {
                    let ok = self.parse_ok(packet)?;
                    self.expect = Expect::Idle;
                    Ok(Step::Ok(ok))
                }
                Some(0xFF) => self.err_step(packet),
                _ => Err(self.unexpected("where OK or ERR was due")),
            },
        }
    }

    /// After an OK or end-of-rows: another result follows, or the command
    /// is done.
    fn after_status(&mut self, binary: bool) {
        self.tx_unknown = false;
        self.expect = if self
            .status
            .contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS)
        {
            Expect::Result { binary }
        } else {
            Expect::Idle
        };
    }

    /// An ERR ends the command (also in the middle of rows or of a
    /// multi-result).
    fn err_step(&mut self, packet: &[u8]) -> Result<Step> {
        let Some(f) = auth::parse_err(packet) else {
            return Err(self.protocol_error("a malformed ERR packet".into()));
        };
        self.expect = Expect::Idle;
        // Outside a transaction in autocommit mode a failed statement
        // leaves none open; otherwise it may have (autocommit off) or may
        // have rolled it back (a deadlock): unknown until the next OK.
        if self.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
            || !self.status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
        {
            self.tx_unknown = true;
        }
        Ok(Step::Err(f))
    }

    fn parse_ok(&mut self, packet: &[u8]) -> Result<OkInfo> {
        let ok: OkPacketDeserializer<'_, CommonOkPacket> = ParseBuf(packet)
            .parse(self.caps)
            .map_err(|e| self.protocol_error(format!("a malformed OK packet ({e})")))?;
        let ok = ok.into_inner();
        self.status = ok.status_flags();
        Ok(OkInfo {
            affected_rows: ok.affected_rows(),
            last_insert_id: ok.last_insert_id(),
            warnings: ok.warnings(),
        })
    }

    fn parse_terminator(&mut self, packet: &[u8]) -> Result<OkInfo> {
        let parsed = if self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF) {
            ParseBuf(packet)
                .parse::<OkPacketDeserializer<'_, ResultSetTerminator>>(self.caps)
                .map(OkPacketDeserializer::into_inner)
        } else {
            ParseBuf(packet)
                .parse::<OkPacketDeserializer<'_, OldEofPacket>>(self.caps)
                .map(OkPacketDeserializer::into_inner)
        };
        let ok =
            parsed.map_err(|e| self.protocol_error(format!("a malformed end of rows ({e})")))?;
        self.status = ok.status_flags();
        Ok(OkInfo {
            affected_rows: 0,
            last_insert_id: None,
            warnings: ok.warnings(),
        })
    }

    /// Sends the statement and reads its whole answer.
    async fn exchange(&mut self, sql: &str, params: &[Option<&str>]) -> Result<QueryResult> {
        self.queue_closes();
        // Looked up first: a statement without parameters in the cache is
        // run prepared, as one with parameters is.
        let hit = self.cache.get(sql);
        let fresh = hit.is_none();
        if fresh && params.is_empty() && !self.prepares_without_params(sql) {
            self.text_query(sql).await
        } else {
            let (id, count) = match hit {
                Some(entry) => entry,
                None => match self.prepare(sql).await? {
                    Ok(entry) => entry,
                    // A statement without parameters runs as text when it
                    // cannot be prepared (a command the prepared-statement
                    // protocol does not take), or fails there with the
                    // error it fails with as text.
                    Err(_) if params.is_empty() => {
                        self.cache.refuse(sql);
                        return self.text_query(sql).await;
                    }
                    Err(e) => {
                        self.state = State::Ready;
                        return Err(e);
                    }
                },
            };
            if count > 0 && params.is_empty() {
                // Placeholders and no parameters: the server's answer to
                // the text, whatever it is, as on the first run. A statement
                // prepared just now for this is of no use; one cached for
                // callers that pass parameters stays.
                if fresh {
                    self.cache.forget(sql);
                }
                self.cache.refuse(sql);
                return self.text_query(sql).await;
            }
            if usize::from(count) != params.len() {
                self.state = State::Ready;
                self.flush_closes().await?;
                return Err(Error::invalid_argument(format!(
                    "the statement has {count} placeholders and {} parameters were given",
                    params.len()
                ))
                .with_layer(Layer::Query));
            }
            self.write_execute(id, params);
            self.expect = Expect::Result { binary: true };
            self.last_errno = None;
            self.flush().await?;
            let r = self.read_results(true).await;
            // ER_UNKNOWN_STMT_HANDLER, ER_NEED_REPREPARE: the cached
            // statement is gone or stale; prepare anew next time.
            if matches!(self.last_errno, Some(1243 | 1615)) {
                self.cache.forget(sql);
            }
            let r = self.finish(r);
            if r.is_ok() || self.state == State::Ready {
                // Statements the cache does not keep are closed now rather
                // than with the next command.
                self.flush_closes().await?;
            }
            r
        }
    }

    /// COM_QUERY: the statement as text, its rows in the text protocol.
    async fn text_query(&mut self, sql: &str) -> Result<QueryResult> {
        self.link.write_command(COM_QUERY, sql.as_bytes());
        self.expect = Expect::Result { binary: false };
        self.flush().await?;
        let r = self.read_results(false).await;
        self.finish(r)
    }

    /// Whether a statement without parameters is worth preparing: the
    /// cache allows it ([`StatementCache::may_prepare_text`]), the server
    /// has not refused it, and it came before (a statement run once would
    /// pay a round trip for the preparation, which MySQL's protocol cannot
    /// pipeline with the execution). Prepared, it skips the server's parser
    /// on every run after (SELECT 1 from 4 goroutines: 10–15 % more
    /// throughput).
    fn prepares_without_params(&mut self, sql: &str) -> bool {
        self.cache.may_prepare_text(sql) && !self.cache.refused(sql) && self.cache.seen_before(sql)
    }

    /// The end of an exchange: ready again when the answer was read in full.
    fn finish(&mut self, r: Result<QueryResult>) -> Result<QueryResult> {
        if self.expect == Expect::Idle && self.state != State::Broken {
            self.state = State::Ready;
        }
        r
    }

    /// COM_STMT_PREPARE; the outer error is the connection's, the inner
    /// the server's answer to this statement.
    async fn prepare(&mut self, sql: &str) -> Result<Result<(u32, u16)>> {
        self.link.write_command(COM_STMT_PREPARE, sql.as_bytes());
        self.expect = Expect::Prepared;
        self.flush().await?;
        let mut params = None;
        let mut failed = None;
        while self.expect != Expect::Idle {
            match self.step().await? {
                Step::Prepared { params: n } => params = Some(n),
                Step::Err(f) => failed = Some(self.server_error(&f)),
                Step::Skip => {}
                _ => return Err(self.unexpected("in answer to COM_STMT_PREPARE")),
            }
        }
        if let Some(e) = failed {
            return Ok(Err(e));
        }
        let (Some(id), Some(params)) = (self.preparing.take(), params) else {
            return Err(self.unexpected("in answer to COM_STMT_PREPARE"));
        };
        // Kept by the cache, or (capacity 0) queued for closing; either way
        // whatever the cache let go is closed right after this execution.
        self.cache.insert(sql, id, params);
        Ok(Ok((id, params)))
    }

    /// COM_STMT_CLOSE for statements the cache let go. They have no answer,
    /// so they need no round trip: sent after the execution that evicted
    /// them, or (after an error or a kill) in front of the next command.
    fn queue_closes(&mut self) {
        for id in self.cache.take_evicted() {
            self.link.write_command(COM_STMT_CLOSE, &id.to_le_bytes());
        }
    }

    async fn flush_closes(&mut self) -> Result<()> {
        if self.cache.has_evicted() {
            self.queue_closes();
            self.flush().await?;
        }
        Ok(())
    }

    /// COM_STMT_EXECUTE with every parameter sent as a string (the server
    /// converts, as it does for text in SQL) or NULL.
    fn write_execute(&mut self, id: u32, params: &[Option<&str>]) {
        let values: usize = params.iter().flatten().map(|p| p.len() + 9).sum();
        let mut body = Vec::with_capacity(12 + params.len() * 3 + values);
        body.extend_from_slice(&id.to_le_bytes());
        body.push(0); // CURSOR_TYPE_NO_CURSOR
        body.extend_from_slice(&1u32.to_le_bytes()); // iteration count
        let mut bitmap = vec![0u8; params.len().div_ceil(8)];
        for (i, p) in params.iter().enumerate() {
            if p.is_none() {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        if params.is_empty() {
            // No bitmap, no types: the packet ends with the iteration count.
            self.link.write_command(COM_STMT_EXECUTE, &body);
            return;
        }
        body.extend_from_slice(&bitmap);
        body.push(1); // new-params-bound: the types follow
        for p in params {
            // MYSQL_TYPE_NULL (6) or MYSQL_TYPE_VAR_STRING (253), signed.
            body.extend_from_slice(&[if p.is_some() { 253 } else { 6 }, 0]);
        }
        for p in params.iter().flatten() {
            packet::put_lenenc(&mut body, p.len() as u64);
            body.extend_from_slice(p.as_bytes());
        }
        self.link.write_command(COM_STMT_EXECUTE, &body);
    }

    /// Reads a statement's results to the end. With several (a CALL, which
    /// ends with the CALL's own OK), the last result set that returned
    /// columns is kept; without any, the last OK's counts.
    /// The columns of the result set whose definitions are in
    /// `columns_raw`: the last result set's when the definitions are the
    /// same bytes, parsed otherwise.
    #[allow(clippy::type_complexity)]
    fn result_columns(
        &mut self,
    ) -> Result<(std::sync::Arc<Vec<Column>>, std::sync::Arc<Vec<ColumnMeta>>)> {
        if let Some(last) = &self.last_columns {
            if last.raw == self.columns_raw {
                return Ok((last.columns.clone(), last.metas.clone()));
            }
        }
        let raw = std::mem::take(&mut self.columns_raw);
        let parsed = parse_columns(&raw);
        self.columns_raw = raw;
        let (columns, metas) = parsed
            .map_err(|e| self.protocol_error(format!("a malformed column definition ({e})")))?;
        let last = LastColumns {
            raw: self.columns_raw.clone(),
            columns: std::sync::Arc::new(columns),
            metas: std::sync::Arc::new(metas),
        };
        let out = (last.columns.clone(), last.metas.clone());
        self.last_columns = Some(last);
        Ok(out)
    }

    async fn read_results(&mut self, binary: bool) -> Result<QueryResult> {
        // Whether `current` holds a whole result set: a later one replaces
        // it only by starting, and one that starts also ends (or fails the
        // statement), so the last whole set is what is returned.
        let mut have_set = false;
        let mut last_ok: Option<OkInfo> = None;
        let mut current = QueryResult::default();
        // None until a result set's columns are in (no allocation for an OK).
        let mut metas: Option<std::sync::Arc<Vec<ColumnMeta>>> = None;
        let mut expected_columns = 0u64;
        let mut failed: Option<Error> = None;
        while self.expect != Expect::Idle {
            // Answered after the match: nothing awaited inside it keeps the
            // step (and its packet) in the future.
            let mut refuse_infile = false;
            let (step, packet) = self.step_keep().await?;
            match step {
                Step::Ok(ok) => last_ok = Some(ok),
                Step::Err(f) => failed = Some(self.server_error(&f)),
                Step::ResultSet(n) => {
                    current = QueryResult::default();
                    have_set = false;
                    self.columns_raw.clear();
                    expected_columns = n;
                }
                Step::Column => {
                    // Kept as length + bytes; parsed once the last one is in.
                    let len = u32::try_from(self.link.payload(&packet).len()).map_err(|_| {
                        self.protocol_error("a column definition larger than 4 GiB".to_string())
                    })?;
                    self.columns_raw.extend_from_slice(&len.to_le_bytes());
                    self.columns_raw
                        .extend_from_slice(packet.payload(&self.link.wire.rbuf));
                    self.link.consume(packet);
                    if matches!(self.expect, Expect::Rows { .. } | Expect::ColumnsEof { .. }) {
                        let (columns, parsed) = self.result_columns()?;
                        if columns.len() as u64 != expected_columns {
                            return Err(self.protocol_error(format!(
                                "{} column definitions for a result set of {expected_columns} columns",
                                columns.len()
                            )));
                        }
                        current.set_shared_columns(columns);
                        metas = Some(parsed);
                    }
                }
                Step::Row => {
                    let p = packet.payload(&self.link.wire.rbuf);
                    let decoded = if binary {
                        value::binary_row(
                            p,
                            metas.as_deref().map_or(&[], |m| &m[..]),
                            &mut current,
                            &mut self.scratch,
                        )
                    } else {
                        value::text_row(p, metas.as_ref().map_or(0, |m| m.len()), &mut current)
                    };
                    self.link.consume(packet);
                    decoded
                        .map_err(|why| self.protocol_error(format!("a malformed row: {why}")))?;
                }
                Step::RowsDone(ok) => {
                    current.affected_rows = current.row_count() as u64;
                    current.warnings = ok.warnings;
                    have_set = true;
                }
                Step::LocalInfile => refuse_infile = true,
                Step::Skip => {}
                Step::Prepared { .. } => return Err(self.unexpected("in a result")),
            }
            if refuse_infile {
                // Never asked for (no CLIENT_LOCAL_FILES): an empty packet
                // says "no file", the server answers with ERR.
                self.link.write_packet(&[]);
                self.flush().await?;
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(match (have_set, last_ok) {
            (true, _) => current,
            (false, Some(ok)) => {
                let mut r = QueryResult::default();
                r.affected_rows = ok.affected_rows;
                r.last_insert_id = ok.last_insert_id;
                r.warnings = ok.warnings;
                r
            }
            (false, None) => QueryResult::default(),
        })
    }

    // ---- deadlines ----

    /// The statement's deadline passed or the caller cancelled: kill it on
    /// the server, then read on to the end of its answer so the session can
    /// be reused; if that does not come in time, the session is broken.
    async fn interrupt(&mut self, stop: Stop, start: Instant) -> Error {
        let bound = self.cancel_bound();
        let (code, what, limit) = match stop {
            Stop::Deadline(d) => (Code::QueryTimeout, "statement timed out", Some(d.limit())),
            Stop::Cancelled => (Code::Cancelled, "statement cancelled by the caller", None),
        };
        let elapsed = start.elapsed();
        let peer = self.link.wire.peer.clone();
        let id = self.connection_id;
        let base = |cause: String, hint: &str, retryable: bool| {
            let mut e = Error::new(code, what.to_string())
                .with_layer(Layer::Query)
                .with_elapsed(elapsed)
                .with_peer(peer.clone())
                .with_cause(cause)
                .with_hint(hint.to_string())
                .with_retryable(retryable);
            if let Some(l) = limit {
                e = e.with_limit(l);
            }
            e
        };
        let hint = if code == Code::QueryTimeout {
            "raise query_timeout or the caller's deadline, or make the statement faster"
        } else {
            "the caller stopped waiting"
        };
        if self.state == State::Broken {
            return base(
                "the connection broke at the same moment".into(),
                "the connection is closed",
                false,
            );
        }
        if !self.sent && self.expect == Expect::Idle {
            // Stopped before a byte went out: nothing to kill, nothing ran.
            self.link.wire.wbuf.clear();
            self.state = State::Ready;
            return base(
                "stopped before the statement was sent; the connection is reusable".into(),
                hint,
                true,
            );
        }
        // Whatever of the statement is still unsent must go first: a
        // half-sent packet would corrupt the session.
        let flushed = deadline::run(
            Some(Deadline::after("cancel_timeout", bound)),
            self.link.wire.flush(),
        )
        .await;
        if !matches!(flushed, Ok(Ok(()))) {
            self.state = State::Broken;
            return base(
                "the statement could not be sent in full; nothing was killed".into(),
                "the connection is closed",
                false,
            );
        }
        if self.expect == Expect::Idle {
            // The answer was complete when the deadline struck (only the
            // trailing COM_STMT_CLOSE was pending): nothing runs.
            self.state = State::Ready;
            return base(
                "the statement had finished as the deadline passed; its result was discarded"
                    .into(),
                hint,
                false,
            );
        }
        let kill_start = Instant::now();
        let killed = self
            .connector
            .kill_query(self.addr, &self.host, id, bound)
            .await;
        let left = bound
            .saturating_sub(kill_start.elapsed())
            .max(CANCEL_GRACE_MIN);
        let drained =
            deadline::run(Some(Deadline::after("cancel_timeout", left)), self.drain()).await;
        match (killed, drained) {
            (Err(kill_err), Ok(Err(_)) | Err(_)) => {
                self.state = State::Broken;
                base(
                    format!("KILL QUERY {id} failed ({kill_err}); the statement may still run on the server"),
                    "the connection is closed; check the network path to the server and max_connections",
                    false,
                )
            }
            (Ok(()), Ok(Err(e))) => {
                self.state = State::Broken;
                base(
                    format!("KILL QUERY {id} was accepted, but the connection failed while the statement's answer was read ({e})"),
                    "the connection is closed",
                    false,
                )
            }
            (_, Ok(Ok(interrupted))) => {
                self.state = State::Ready;
                if interrupted {
                    base(
                        format!("killed on the server (KILL QUERY {id}: error {ER_QUERY_INTERRUPTED}, SQLSTATE {SQLSTATE_INTERRUPTED}); the connection is reusable"),
                        hint,
                        false,
                    )
                    .with_sqlstate(SQLSTATE_INTERRUPTED)
                } else {
                    base(
                        "the statement finished as the kill arrived; its result was discarded and the connection is reusable".into(),
                        hint,
                        false,
                    )
                }
            }
            (Ok(()), Err(_)) => {
                self.state = State::Broken;
                base(
                    format!(
                        "KILL QUERY {id} was accepted, but the statement's answer did not end within {}",
                        crate::config::fmt_duration(left)
                    ),
                    "the connection is closed; the server may be overloaded",
                    false,
                )
            }
        }
    }

    /// Reads and discards the rest of the current answer. Ok(true) when the
    /// statement ended with ER_QUERY_INTERRUPTED.
    async fn drain(&mut self) -> Result<bool> {
        let mut interrupted = false;
        while self.expect != Expect::Idle {
            match self.step().await? {
                Step::Err(f) if f.errno == ER_QUERY_INTERRUPTED => interrupted = true,
                Step::Err(f) => {
                    // The connection may be ending (KILL CONNECTION).
                    let _ = self.server_error(&f);
                }
                Step::LocalInfile => {
                    self.link.write_packet(&[]);
                    self.flush().await?;
                }
                _ => {}
            }
        }
        // Interrupted while being prepared: the statement exists on the
        // server but in no cache; close it with the next command.
        if let Some(id) = self.preparing.take() {
            self.cache.push_evicted(id);
        }
        if self.state == State::Broken {
            return Err(Error::new(
                Code::ConnectionLost,
                "the server ended the session",
            ));
        }
        // A statement prepared (and cached) just before the kill stays
        // valid; ones the cache let go are closed with the next command.
        Ok(interrupted)
    }
}

/// Prepared statements per connection: statement id and parameter count.
/// Capacity 0 keeps none: each statement is closed right after it ran.
type StatementCache = crate::stmt_cache::StatementCache<u32, u16>;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The pool's manager needs every future to be Send (it runs them on
    /// other tasks) and the session to be Send + Sync + 'static.
    #[allow(dead_code)]
    fn futures_are_send(c: &MysqlConnector, mut conn: MysqlConnection) {
        fn session<T: Send + Sync + 'static>() {}
        session::<MysqlConnection>();
        session::<MysqlConnector>();
        assert_send(&c.connect(None));
        assert_send(&conn.query("", &[], None, None));
        assert_send(&conn.execute("", &[], None, None));
        assert_send(&conn.ping(None));
        assert_send(&conn.reset());
        assert_send(&conn.reset_session());
        assert_send(&conn.server_idle_limit());
        assert_send(&conn.close());
    }

    /// The EOF-packet variant of the protocol (no CLIENT_DEPRECATE_EOF) on
    /// the real server: text and binary results, prepared statements with
    /// parameter definitions, multi-results and a killed statement.
    #[test]
    fn legacy_eof_packets_against_the_server() {
        let server = dialpool_testkit::shared_mariadb().expect("MariaDB");
        let url = format!("{}?sslmode=disable&query_timeout=500ms", server.url);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut connector =
                MysqlConnector::new(Arc::new(Config::parse(&url).expect("url"))).expect("connector");
            connector.legacy_eof = true;
            let mut conn = connector.connect(None).await.expect("login");
            assert!(!conn.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF));
            let r = conn
                .query("SELECT 1 AS a, NULL AS b, 'x' AS c", &[], None, None)
                .await
                .expect("text");
            assert_eq!((r.get(0, 0), r.is_null(0, 1), r.get(0, 2)), (Some("1"), true, Some("x")));
            for _ in 0..2 {
                let r = conn
                    .query("SELECT ? + 1 AS n, ? AS s", &[Some("41"), Some("y")], None, None)
                    .await
                    .expect("binary");
                assert_eq!((r.get(0, 0), r.get(0, 1)), (Some("42"), Some("y")));
            }
            conn.execute("DROP PROCEDURE IF EXISTS dp_legacy_two", &[], None, None)
                .await
                .expect("drop");
            conn.execute(
                "CREATE PROCEDURE dp_legacy_two() BEGIN SELECT 1 AS first; SELECT 2 AS second; END",
                &[],
                None,
                None,
            )
            .await
            .expect("create");
            let r = conn.query("CALL dp_legacy_two()", &[], None, None).await.expect("call");
            assert_eq!(r.columns()[0].name, "second");
            assert_eq!(r.get(0, 0), Some("2"));
            let e = conn
                .query("SELECT SLEEP(3)", &[], None, None)
                .await
                .expect_err("timeout");
            assert_eq!(e.code(), Code::QueryTimeout, "{e}");
            assert_eq!(e.sqlstate(), Some("70100"), "{e}");
            assert!(conn.is_clean());
            let r = conn
                .query(
                    "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 1000) SELECT n FROM s",
                    &[],
                    None,
                    None,
                )
                .await
                .expect("rows");
            assert_eq!(r.row_count(), 1000);
            conn.close().await;
        });
    }

    #[test]
    fn cache_evicts_the_least_recently_used() {
        let mut c = StatementCache::new(2);
        c.insert("a", 1, 0);
        c.insert("b", 2, 1);
        assert_eq!(c.get("a"), Some((1, 0)));
        c.insert("c", 3, 2);
        assert_eq!(c.get("b"), None, "b was least recently used");
        assert_eq!(c.take_evicted(), vec![2]);
        assert_eq!(c.len(), 2);
        c.forget("a");
        assert_eq!(c.take_evicted(), vec![1]);
        // Capacity 0: every statement is closed after its run.
        let mut c = StatementCache::new(0);
        c.insert("a", 7, 0);
        assert_eq!(c.get("a"), None);
        assert!(c.has_evicted());
        assert_eq!(c.take_evicted(), vec![7]);
    }
}
