//! Support for the pool's integration tests: a [`Manager`] over real TCP
//! connections to the testkit's line server, an event recorder, and small
//! bounded helpers.

#![allow(dead_code)] // each test file uses its own part

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialpool::config::HostPort;
use dialpool::deadline::{self, Deadline};
use dialpool::pool::{CloseReason, Event, EventHandler, Liveness, Manager, ReleaseState};
use dialpool::{dial, Code, Config, Dialer, Error, Layer, Result};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The bound on a reset (ROLLBACK) and on the goodbye (QUIT) at close.
pub const RESET_TIMEOUT: Duration = Duration::from_secs(1);
const QUIT_TIMEOUT: Duration = Duration::from_millis(200);

/// Parses and validates a `tcp://` URL with pool options.
pub fn config(url: &str) -> Config {
    let mut c = Config::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    c.validate().unwrap_or_else(|e| panic!("{url}: {e}"));
    c
}

/// One connection to the line server, tracking the protocol state the pool
/// asks about.
#[derive(Debug)]
pub struct LineConn {
    stream: BufReader<TcpStream>,
    /// A `BEGIN` was answered and no `COMMIT`/`ROLLBACK` since.
    in_tx: bool,
    /// A command was sent and its reply not (fully) read: the stream is
    /// mid-protocol and its next line would be the wrong answer.
    broken: bool,
    /// The manager's serial number of this connection (1, 2, …).
    pub serial: usize,
}

impl LineConn {
    /// Sends `cmd` and reads its one-line reply, within `deadline`. A
    /// deadline or an I/O error leaves the connection broken.
    pub async fn command(&mut self, cmd: &str, limit: Option<Deadline>) -> Result<String> {
        let start = Instant::now();
        self.broken = true;
        let exchange = async {
            self.stream
                .get_mut()
                .write_all(format!("{cmd}\n").as_bytes())
                .await?;
            let mut line = String::new();
            let n = self.stream.read_line(&mut line).await?;
            if n == 0 || !line.ends_with('\n') {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            Ok(line.trim_end().to_string())
        };
        match deadline::run(limit, exchange).await {
            Ok(Ok(reply)) => {
                self.broken = false;
                match (cmd, reply.as_str()) {
                    ("BEGIN", "OK") => self.in_tx = true,
                    ("COMMIT" | "ROLLBACK", "OK") => self.in_tx = false,
                    _ => {}
                }
                Ok(reply)
            }
            Ok(Err(io)) => Err(Error::new(
                Code::ConnectionLost,
                format!("{cmd} failed: the connection was lost"),
            )
            .with_layer(Layer::Query)
            .with_elapsed(start.elapsed())
            .with_cause(io.to_string())
            .with_source(io)),
            Err(deadline::Fired(d)) => {
                Err(Error::new(Code::QueryTimeout, format!("{cmd} timed out"))
                    .with_layer(Layer::Query)
                    .with_limit(d.limit())
                    .with_elapsed(start.elapsed()))
            }
        }
    }

    /// `PING`, expecting `PONG`.
    pub async fn ping(&mut self, limit: Option<Deadline>) -> Result<()> {
        match self.command("PING", limit).await?.as_str() {
            "PONG" => Ok(()),
            other => {
                self.broken = true;
                Err(Error::new(
                    Code::ProtocolError,
                    format!("PING answered {other:?}"),
                ))
            }
        }
    }

    pub fn in_transaction(&self) -> bool {
        self.in_tx
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }
}

/// What the manager did, for the tests to assert.
#[derive(Debug, Default)]
pub struct Counts {
    /// Connects attempted.
    pub attempts: AtomicUsize,
    /// Connections made (and handed to the pool).
    pub connects: AtomicUsize,
    /// Connections closed by the pool through [`Manager::close`].
    pub closes: AtomicUsize,
    /// Pings the pool made (checkout after `ping_after`).
    pub pings: AtomicUsize,
    /// Resets the pool asked for.
    pub resets: AtomicUsize,
}

impl Counts {
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

/// A [`Manager`] over the dialer: connect is a plain dial; probe is the
/// dialer's non-blocking probe; ping is `PING`; an open `BEGIN` needs a
/// reset (`ROLLBACK`); a command cut off mid-reply leaves it broken.
pub struct LineManager {
    dialer: Dialer,
    hosts: Vec<HostPort>,
    counts: Arc<Counts>,
    /// Returned by connect after a successful dial and a login exchange
    /// that takes the given time (a login failure).
    login_error: Option<(Error, Duration)>,
    /// Treat every connect error as permanent (fails waiters at once).
    all_permanent: bool,
    /// Ask the server for its idle cut (`IDLE_LIMIT`) when the pool wants it.
    reads_idle_limit: bool,
}

impl LineManager {
    pub fn new(config: &Config) -> LineManager {
        LineManager {
            dialer: Dialer::new(&config.dial).expect("dialer"),
            hosts: config.hosts.clone(),
            counts: Arc::new(Counts::default()),
            login_error: None,
            all_permanent: false,
            reads_idle_limit: false,
        }
    }

    /// A manager that tells the pool the server's idle cut, read with
    /// `IDLE_LIMIT` (as the real ones read `idle_session_timeout` or
    /// `wait_timeout`).
    pub fn reading_idle_limit(config: &Config) -> LineManager {
        LineManager {
            reads_idle_limit: true,
            ..LineManager::new(config)
        }
    }

    /// A manager whose connects dial, spend `login` in an exchange with the
    /// server (`SLEEP`), then fail the login with `error`.
    pub fn failing_login(config: &Config, error: Error, login: Duration) -> LineManager {
        LineManager {
            login_error: Some((error, login)),
            ..LineManager::new(config)
        }
    }

    /// A manager that treats every connect error as permanent, so each
    /// acquire makes exactly one connect and gets its error at once.
    pub fn fail_fast(config: &Config) -> LineManager {
        LineManager {
            all_permanent: true,
            ..LineManager::new(config)
        }
    }

    pub fn counts(&self) -> Arc<Counts> {
        self.counts.clone()
    }
}

/// The `AUTH_FAILED` a server's login would give.
pub fn auth_failed() -> Error {
    Error::new(
        Code::AuthFailed,
        "password authentication failed for user \"dialpool\"",
    )
    .with_layer(Layer::Login)
    .with_retryable(false)
}

impl Manager for LineManager {
    type Connection = LineConn;

    async fn connect(&self) -> Result<LineConn> {
        let serial = self.counts.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let connected = self.dialer.connect(&self.hosts, None).await?;
        let mut conn = LineConn {
            stream: BufReader::new(connected.stream),
            in_tx: false,
            broken: false,
            serial,
        };
        if let Some((e, login)) = &self.login_error {
            let limit = Deadline::after("login_timeout", *login + RESET_TIMEOUT);
            let cmd = format!("SLEEP {}", login.as_millis());
            conn.command(&cmd, Some(limit)).await?;
            return Err(e.clone());
        }
        self.counts.connects.fetch_add(1, Ordering::SeqCst);
        Ok(conn)
    }

    fn probe(&self, conn: &mut LineConn) -> Liveness {
        dial::probe(conn.stream.get_ref())
    }

    async fn ping(&self, conn: &mut LineConn, limit: Option<Deadline>) -> Result<()> {
        self.counts.pings.fetch_add(1, Ordering::SeqCst);
        conn.ping(limit).await
    }

    fn release_state(&self, conn: &mut LineConn) -> ReleaseState {
        if conn.broken {
            ReleaseState::Broken
        } else if conn.in_tx {
            ReleaseState::NeedsReset
        } else {
            ReleaseState::Clean
        }
    }

    async fn reset(&self, conn: &mut LineConn) -> Result<()> {
        self.counts.resets.fetch_add(1, Ordering::SeqCst);
        let limit = Deadline::after("reset_timeout", RESET_TIMEOUT);
        conn.command("ROLLBACK", Some(limit)).await.map(|_| ())
    }

    async fn close(&self, mut conn: LineConn) {
        let quit = Deadline::after("quit_timeout", QUIT_TIMEOUT);
        let _ = deadline::run(Some(quit), conn.stream.get_mut().write_all(b"QUIT\n")).await;
        drop(conn);
        self.counts.closes.fetch_add(1, Ordering::SeqCst);
    }

    async fn server_idle_limit(&self, conn: &mut LineConn) -> Option<Duration> {
        if !self.reads_idle_limit {
            return None;
        }
        let limit = Deadline::after("query_timeout", RESET_TIMEOUT);
        let ms: u64 = conn
            .command("IDLE_LIMIT", Some(limit))
            .await
            .ok()?
            .parse()
            .ok()?;
        Some(Duration::from_millis(ms))
    }

    fn is_permanent(&self, err: &Error) -> bool {
        // The trait's default, plus the fail-fast switch.
        self.all_permanent
            || matches!(
                err.code(),
                Code::AuthFailed | Code::TlsError | Code::InvalidArgument | Code::DnsError
            ) && !err.is_retryable()
            || (err.code() == Code::ServerError && err.layer() == Layer::Login)
    }
}

/// An owned copy of the pool events the tests look at.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Close {
        reason: CloseReason,
        age: Duration,
    },
    Leak {
        held: Duration,
        label: Option<String>,
    },
    AcquireTimeout {
        code: Code,
    },
    ConnectEnd {
        ok: bool,
    },
    Adjusted {
        option: &'static str,
        from: Option<Duration>,
        to: Duration,
        why: String,
    },
}

/// Records pool events with the instant they happened.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<(Instant, Seen)>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    pub fn events(&self) -> Vec<(Instant, Seen)> {
        self.events.lock().clone()
    }

    /// Close events with `reason`: when, and the connection's age.
    pub fn closes(&self, reason: CloseReason) -> Vec<(Instant, Duration)> {
        self.events
            .lock()
            .iter()
            .filter_map(|(t, e)| match e {
                Seen::Close { reason: r, age } if *r == reason => Some((*t, *age)),
                _ => None,
            })
            .collect()
    }

    pub fn leaks(&self) -> Vec<(Duration, Option<String>)> {
        self.events
            .lock()
            .iter()
            .filter_map(|(_, e)| match e {
                Seen::Leak { held, label } => Some((*held, label.clone())),
                _ => None,
            })
            .collect()
    }
}

impl EventHandler for Recorder {
    fn event(&self, event: &Event<'_>) {
        let seen = match event {
            Event::Close { reason, age } => Seen::Close {
                reason: *reason,
                age: *age,
            },
            Event::Leak { held, label } => Seen::Leak {
                held: *held,
                label: label.map(str::to_string),
            },
            Event::AcquireTimeout { error } => Seen::AcquireTimeout { code: error.code() },
            Event::ConnectEnd { result, .. } => Seen::ConnectEnd { ok: result.is_ok() },
            Event::Adjusted {
                option,
                from,
                to,
                why,
            } => Seen::Adjusted {
                option,
                from: *from,
                to: *to,
                why: why.to_string(),
            },
            _ => return,
        };
        self.events.lock().push((Instant::now(), seen));
    }
}

/// Polls `f` every 2 ms until it holds or `within` passes; false on timeout.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}
