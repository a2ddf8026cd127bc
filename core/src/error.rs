//! The one error type of dialpool.
//!
//! Every failure names the layer it happened in, the limit that fired (if a
//! limit fired), the time spent, the peer, and the operating-system or server
//! cause, so that a person reading one line can tell a black-holed host from a
//! refused port, an exhausted pool from a slow query.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::config::fmt_duration;
use crate::dial::PhaseTimings;

/// Stable error codes. The numbers are part of the C ABI and the bindings:
/// append new codes at the end, never renumber.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// A URL, option or argument is malformed or out of range.
    InvalidArgument = 1,
    /// The call is not allowed in the current state (e.g. a blocking call
    /// inside an async runtime, or after `fork()`).
    InvalidState = 2,
    /// A bug in dialpool; the message says where.
    Internal = 3,
    /// The host name could not be resolved.
    DnsError = 4,
    /// Name resolution did not finish within `dns_timeout` or the deadline.
    DnsTimeout = 5,
    /// The TCP connect did not complete within `connect_timeout` or the deadline.
    ConnectTimeout = 6,
    /// The peer answered the SYN with a reset: nothing listens on that port.
    ConnectionRefused = 7,
    /// No route to the network or host (ENETUNREACH, EHOSTUNREACH).
    NetworkUnreachable = 8,
    /// TLS failed: certificate verification, handshake, or the server
    /// refused TLS that the `sslmode` requires.
    TlsError = 9,
    /// The TLS handshake did not complete within `tls_timeout` or the deadline.
    TlsTimeout = 10,
    /// The server rejected the credentials.
    AuthFailed = 11,
    /// Startup and authentication did not finish within `login_timeout`.
    LoginTimeout = 12,
    /// The peer sent something the protocol does not allow.
    ProtocolError = 13,
    /// No pooled connection became available within `acquire_timeout`.
    AcquireTimeout = 14,
    /// The pool was closed.
    PoolClosed = 15,
    /// The statement did not finish within `query_timeout` or the deadline.
    QueryTimeout = 16,
    /// The socket stayed silent for `read_timeout` while a reply was due.
    ReadTimeout = 17,
    /// The socket did not accept data for `write_timeout`.
    WriteTimeout = 18,
    /// The caller cancelled the operation.
    Cancelled = 19,
    /// The server answered with an error (see `sqlstate()`).
    ServerError = 20,
    /// An established connection broke (reset, closed, or timed out by the kernel).
    ConnectionLost = 21,
    /// Any other operating-system network error during the dial.
    NetworkError = 22,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 22] = [
        Code::InvalidArgument,
        Code::InvalidState,
        Code::Internal,
        Code::DnsError,
        Code::DnsTimeout,
        Code::ConnectTimeout,
        Code::ConnectionRefused,
        Code::NetworkUnreachable,
        Code::TlsError,
        Code::TlsTimeout,
        Code::AuthFailed,
        Code::LoginTimeout,
        Code::ProtocolError,
        Code::AcquireTimeout,
        Code::PoolClosed,
        Code::QueryTimeout,
        Code::ReadTimeout,
        Code::WriteTimeout,
        Code::Cancelled,
        Code::ServerError,
        Code::ConnectionLost,
        Code::NetworkError,
    ];

    /// The name shared by every binding: `DP_` plus this (`DP_CONNECT_TIMEOUT`).
    pub const fn name(self) -> &'static str {
        match self {
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::InvalidState => "INVALID_STATE",
            Code::Internal => "INTERNAL",
            Code::DnsError => "DNS_ERROR",
            Code::DnsTimeout => "DNS_TIMEOUT",
            Code::ConnectTimeout => "CONNECT_TIMEOUT",
            Code::ConnectionRefused => "CONNECTION_REFUSED",
            Code::NetworkUnreachable => "NETWORK_UNREACHABLE",
            Code::TlsError => "TLS_ERROR",
            Code::TlsTimeout => "TLS_TIMEOUT",
            Code::AuthFailed => "AUTH_FAILED",
            Code::LoginTimeout => "LOGIN_TIMEOUT",
            Code::ProtocolError => "PROTOCOL_ERROR",
            Code::AcquireTimeout => "ACQUIRE_TIMEOUT",
            Code::PoolClosed => "POOL_CLOSED",
            Code::QueryTimeout => "QUERY_TIMEOUT",
            Code::ReadTimeout => "READ_TIMEOUT",
            Code::WriteTimeout => "WRITE_TIMEOUT",
            Code::Cancelled => "CANCELLED",
            Code::ServerError => "SERVER_ERROR",
            Code::ConnectionLost => "CONNECTION_LOST",
            Code::NetworkError => "NETWORK_ERROR",
        }
    }

    /// The code with this number, if there is one.
    pub fn from_u32(value: u32) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| *c as u32 == value)
    }

    /// Whether this code means a limit ran out.
    pub const fn is_timeout(self) -> bool {
        matches!(
            self,
            Code::DnsTimeout
                | Code::ConnectTimeout
                | Code::TlsTimeout
                | Code::LoginTimeout
                | Code::AcquireTimeout
                | Code::QueryTimeout
                | Code::ReadTimeout
                | Code::WriteTimeout
        )
    }

    /// The layer a code belongs to when nothing more specific is known.
    pub const fn default_layer(self) -> Layer {
        match self {
            Code::DnsError
            | Code::DnsTimeout
            | Code::ConnectTimeout
            | Code::ConnectionRefused
            | Code::NetworkUnreachable
            | Code::TlsError
            | Code::TlsTimeout
            | Code::NetworkError => Layer::Dial,
            Code::AuthFailed | Code::LoginTimeout | Code::ProtocolError => Layer::Login,
            Code::AcquireTimeout | Code::PoolClosed => Layer::Pool,
            Code::QueryTimeout
            | Code::ReadTimeout
            | Code::WriteTimeout
            | Code::Cancelled
            | Code::ServerError
            | Code::ConnectionLost => Layer::Query,
            Code::InvalidArgument | Code::InvalidState | Code::Internal => Layer::None,
        }
    }

    /// Whether an operation that failed this way can be retried without the
    /// risk of running a statement twice. Dial and pool failures never reached
    /// the server with a statement; query-layer failures may have.
    const fn default_retryable(self) -> bool {
        matches!(
            self,
            Code::DnsError
                | Code::DnsTimeout
                | Code::ConnectTimeout
                | Code::ConnectionRefused
                | Code::NetworkUnreachable
                | Code::TlsTimeout
                | Code::NetworkError
                | Code::LoginTimeout
                | Code::AcquireTimeout
        )
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where in the life of a request the error happened.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Not tied to a layer (bad arguments, internal state).
    None = 0,
    /// DNS, TCP connect, socket options, TLS.
    Dial = 1,
    /// Protocol startup, authentication, session setup.
    Login = 2,
    /// Waiting for a pooled connection.
    Pool = 3,
    /// Sending a statement and reading its result.
    Query = 4,
}

impl Layer {
    /// Lower-case name as printed in messages and returned by the bindings.
    pub const fn name(self) -> &'static str {
        match self {
            Layer::None => "none",
            Layer::Dial => "dial",
            Layer::Login => "login",
            Layer::Pool => "pool",
            Layer::Query => "query",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The limit that fired: an option name (`connect_timeout`) or `deadline`
/// for the caller's own deadline, with its configured value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub name: &'static str,
    pub value: Duration,
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shared so that one failure can be handed to many waiters.
type SharedSource = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Clone)]
struct Inner {
    code: Code,
    layer: Layer,
    message: String,
    limit: Option<Limit>,
    elapsed: Option<Duration>,
    peer: Option<String>,
    sqlstate: Option<String>,
    cause: Option<String>,
    hint: Option<String>,
    retryable: bool,
    os_error: Option<i32>,
    phases: Option<PhaseTimings>,
    source: Option<SharedSource>,
}

/// A dialpool error. Cheap to move (one box); built with [`Error::new`] and
/// the `with_*` methods. Cloning keeps the source chain (it is shared).
#[derive(Clone)]
pub struct Error(Box<Inner>);

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with `code` and a short description of what happened, e.g.
    /// `connect to 127.0.0.1:5432 timed out`.
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error(Box::new(Inner {
            code,
            layer: code.default_layer(),
            message: message.into(),
            limit: None,
            elapsed: None,
            peer: None,
            sqlstate: None,
            cause: None,
            hint: None,
            retryable: code.default_retryable(),
            os_error: None,
            phases: None,
            source: None,
        }))
    }

    /// Shorthand for [`Code::InvalidArgument`].
    pub fn invalid_argument(message: impl Into<String>) -> Error {
        Error::new(Code::InvalidArgument, message)
    }

    /// Shorthand for [`Code::InvalidState`].
    pub fn invalid_state(message: impl Into<String>) -> Error {
        Error::new(Code::InvalidState, message)
    }

    /// Shorthand for [`Code::Internal`].
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Code::Internal, message)
    }

    pub fn with_layer(mut self, layer: Layer) -> Error {
        self.0.layer = layer;
        self
    }
    pub fn with_limit(mut self, limit: Limit) -> Error {
        self.0.limit = Some(limit);
        self
    }
    pub fn with_elapsed(mut self, elapsed: Duration) -> Error {
        self.0.elapsed = Some(elapsed);
        self
    }
    pub fn with_peer(mut self, peer: impl Into<String>) -> Error {
        self.0.peer = Some(peer.into());
        self
    }
    pub fn with_sqlstate(mut self, sqlstate: impl Into<String>) -> Error {
        self.0.sqlstate = Some(sqlstate.into());
        self
    }
    /// The operating-system or server explanation, printed after the limit.
    pub fn with_cause(mut self, cause: impl Into<String>) -> Error {
        self.0.cause = Some(cause.into());
        self
    }
    /// What the reader can do about it, printed last.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.0.hint = Some(hint.into());
        self
    }
    pub fn with_retryable(mut self, retryable: bool) -> Error {
        self.0.retryable = retryable;
        self
    }
    pub fn with_phases(mut self, phases: PhaseTimings) -> Error {
        self.0.phases = Some(phases);
        self
    }
    /// Keeps `source` as the error's cause in the source chain.
    pub fn with_source(mut self, source: impl Into<Source>) -> Error {
        let source = source.into();
        if let Some(io) = source.downcast_ref::<io::Error>() {
            self.0.os_error = io.raw_os_error();
        }
        self.0.source = Some(SharedSource::from(source));
        self
    }

    pub fn code(&self) -> Code {
        self.0.code
    }
    pub fn layer(&self) -> Layer {
        self.0.layer
    }
    /// The name of the limit that fired (`connect_timeout`, …, or `deadline`).
    pub fn limit(&self) -> Option<&'static str> {
        self.0.limit.map(|l| l.name)
    }
    /// The limit that fired with its value.
    pub fn limit_value(&self) -> Option<Limit> {
        self.0.limit
    }
    /// Time spent in the failed operation.
    pub fn elapsed(&self) -> Option<Duration> {
        self.0.elapsed
    }
    /// The peer address or `host:port` involved.
    pub fn peer(&self) -> Option<&str> {
        self.0.peer.as_deref()
    }
    pub fn sqlstate(&self) -> Option<&str> {
        self.0.sqlstate.as_deref()
    }
    /// The short description of what happened, without layer and decorations.
    pub fn message(&self) -> &str {
        &self.0.message
    }
    pub fn cause(&self) -> Option<&str> {
        self.0.cause.as_deref()
    }
    pub fn hint(&self) -> Option<&str> {
        self.0.hint.as_deref()
    }
    /// The OS error number (errno) behind this error, when there is one.
    pub fn os_error(&self) -> Option<i32> {
        self.0.os_error
    }
    /// Dial phase timings, for errors from the dial layer.
    pub fn phases(&self) -> Option<&PhaseTimings> {
        self.0.phases.as_ref()
    }
    pub fn is_timeout(&self) -> bool {
        self.0.code.is_timeout()
    }
    /// True only when nothing of the statement reached the server, so that a
    /// retry cannot run it twice.
    pub fn is_retryable(&self) -> bool {
        self.0.retryable
    }
}

impl fmt::Display for Error {
    /// One line: `layer: what happened after 1.00s (limit=value): cause; hint`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.0;
        if e.layer != Layer::None {
            write!(f, "{}: ", e.layer)?;
        }
        f.write_str(&e.message)?;
        if let Some(elapsed) = e.elapsed {
            write!(f, " after {:.2}s", elapsed.as_secs_f64())?;
        }
        if let Some(limit) = e.limit {
            write!(f, " ({}={})", limit.name, fmt_duration(limit.value))?;
        }
        if let Some(state) = &e.sqlstate {
            write!(f, " [SQLSTATE {state}]")?;
        }
        if let Some(cause) = &e.cause {
            write!(f, ": {cause}")?;
        }
        if let Some(hint) = &e.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.0;
        let mut d = f.debug_struct("Error");
        d.field("code", &e.code)
            .field("layer", &e.layer)
            .field("message", &e.message);
        if let Some(l) = e.limit {
            d.field("limit", &l.name).field("limit_value", &l.value);
        }
        if let Some(v) = e.elapsed {
            d.field("elapsed", &v);
        }
        if let Some(v) = &e.peer {
            d.field("peer", v);
        }
        if let Some(v) = &e.sqlstate {
            d.field("sqlstate", v);
        }
        if let Some(v) = &e.cause {
            d.field("cause", v);
        }
        d.field("retryable", &e.retryable);
        if let Some(v) = &e.source {
            d.field("source", v);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// What an OS error means for a dialing client, in the terms of this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsClass {
    pub code: Code,
    /// Symbolic errno name, e.g. `ECONNREFUSED`.
    pub errno_name: &'static str,
    /// What the error means, e.g. `connection refused`.
    pub meaning: &'static str,
    /// What to check.
    pub hint: &'static str,
}

/// Classifies an OS error met while dialing (`connect`) or on an established
/// connection (`established` = true: resets and timeouts mean the connection
/// was lost, not that the dial failed).
pub fn classify_io(err: &io::Error, established: bool) -> OsClass {
    let raw = err.raw_os_error();
    let c = |code, errno_name, meaning, hint| OsClass {
        code,
        errno_name,
        meaning,
        hint,
    };
    match raw {
        Some(libc::ECONNREFUSED) => c(
            Code::ConnectionRefused,
            "ECONNREFUSED",
            "connection refused",
            "is the server running and listening on that address and port?",
        ),
        Some(libc::ENETUNREACH) => c(
            Code::NetworkUnreachable,
            "ENETUNREACH",
            "network is unreachable",
            "this host has no route to that network; check interfaces and routes",
        ),
        Some(libc::EHOSTUNREACH) => c(
            Code::NetworkUnreachable,
            "EHOSTUNREACH",
            "no route to host",
            "the host is down or a firewall rejects the traffic",
        ),
        Some(libc::ENETDOWN) => c(
            Code::NetworkUnreachable,
            "ENETDOWN",
            "network is down",
            "bring the network interface up",
        ),
        Some(libc::ETIMEDOUT) if established => c(
            Code::ConnectionLost,
            "ETIMEDOUT",
            "the kernel gave up on the connection (keepalive or tcp_user_timeout)",
            "the peer or the path to it stopped answering",
        ),
        Some(libc::ETIMEDOUT) => c(
            Code::ConnectTimeout,
            "ETIMEDOUT",
            "the kernel gave up after its SYN retries",
            "check routing and firewalls, or raise syn_retries",
        ),
        Some(libc::ECONNRESET) => c(
            Code::ConnectionLost,
            "ECONNRESET",
            "connection reset by peer",
            "the server or a proxy closed the connection",
        ),
        Some(libc::EPIPE) => c(
            Code::ConnectionLost,
            "EPIPE",
            "broken pipe",
            "the server or a proxy closed the connection",
        ),
        Some(libc::ECONNABORTED) => c(
            Code::ConnectionLost,
            "ECONNABORTED",
            "connection aborted",
            "the connection was torn down locally or by the peer",
        ),
        Some(libc::EADDRNOTAVAIL) => c(
            Code::NetworkError,
            "EADDRNOTAVAIL",
            "address not available",
            "no local address can reach it, or the local ports are exhausted",
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => c(
            Code::NetworkError,
            "EPERM",
            "operation not permitted",
            "a local firewall rule or policy blocks the connection",
        ),
        Some(libc::EMFILE) | Some(libc::ENFILE) => c(
            Code::NetworkError,
            "EMFILE",
            "too many open files",
            "raise the file-descriptor limit or lower max_open",
        ),
        _ => match err.kind() {
            io::ErrorKind::UnexpectedEof => c(
                Code::ConnectionLost,
                "EOF",
                "the peer closed the connection",
                "the server or a proxy closed the connection",
            ),
            io::ErrorKind::ConnectionReset => c(
                Code::ConnectionLost,
                "ECONNRESET",
                "connection reset by peer",
                "the server or a proxy closed the connection",
            ),
            _ if established => c(
                Code::ConnectionLost,
                "EIO",
                "I/O error",
                "the connection is unusable",
            ),
            _ => c(
                Code::NetworkError,
                "EIO",
                "network error",
                "see the operating-system error",
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_named() {
        for (i, code) in Code::ALL.iter().enumerate() {
            assert_eq!(*code as u32, i as u32 + 1, "{code:?} moved");
            assert_eq!(Code::from_u32(*code as u32), Some(*code));
        }
        assert_eq!(Code::from_u32(0), None);
        assert_eq!(Code::ConnectTimeout.name(), "CONNECT_TIMEOUT");
        assert_eq!(Code::QueryTimeout as u32, 16);
    }

    #[test]
    fn display_is_one_actionable_line() {
        let e = Error::new(Code::ConnectTimeout, "connect to 127.0.0.1:5432 timed out")
            .with_elapsed(Duration::from_millis(3000))
            .with_limit(Limit {
                name: "connect_timeout",
                value: Duration::from_secs(3),
            })
            .with_peer("127.0.0.1:5432")
            .with_cause("no answer to SYN")
            .with_hint("check routing and firewalls, or raise connect_timeout");
        assert_eq!(
            e.to_string(),
            "dial: connect to 127.0.0.1:5432 timed out after 3.00s (connect_timeout=3s): \
             no answer to SYN; check routing and firewalls, or raise connect_timeout"
        );
        assert!(e.is_timeout());
        assert!(e.is_retryable());
        assert_eq!(e.layer(), Layer::Dial);
        assert_eq!(e.limit(), Some("connect_timeout"));
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn source_chain_and_errno() {
        let io = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let class = classify_io(&io, false);
        assert_eq!(class.code, Code::ConnectionRefused);
        let e = Error::new(class.code, "connect refused").with_source(io);
        assert_eq!(e.os_error(), Some(libc::ECONNREFUSED));
        let src = std::error::Error::source(&e).expect("source kept");
        assert!(src.to_string().to_lowercase().contains("refused"));
    }

    #[test]
    fn classification_by_errno() {
        let cases = [
            (libc::ENETUNREACH, false, Code::NetworkUnreachable),
            (libc::EHOSTUNREACH, false, Code::NetworkUnreachable),
            (libc::ETIMEDOUT, false, Code::ConnectTimeout),
            (libc::ETIMEDOUT, true, Code::ConnectionLost),
            (libc::ECONNRESET, true, Code::ConnectionLost),
            (libc::EPIPE, true, Code::ConnectionLost),
            (libc::EADDRNOTAVAIL, false, Code::NetworkError),
        ];
        for (errno, established, want) in cases {
            let got = classify_io(&io::Error::from_raw_os_error(errno), established).code;
            assert_eq!(got, want, "errno {errno}");
        }
    }
}
