//! A tiny line-protocol TCP server on 127.0.0.1 for the pool's tests: a real
//! peer whose connections the test can close behind the client's back (an
//! idle cut like MySQL `wait_timeout` / PostgreSQL `idle_session_timeout`, a
//! reset, a restart) and whose view of each connection the test can read.
//!
//! Protocol, one command per `\n`-terminated line, one reply line each:
//!
//! | command | reply |
//! |---|---|
//! | `PING` | `PONG` |
//! | `BEGIN`, `COMMIT`, `ROLLBACK` | `OK` |
//! | `SLEEP <ms>` | `DONE` after sleeping (at most 10 s) |
//! | `IDLE_LIMIT` | `close_idle_after` in milliseconds, `0` when off (like `SHOW idle_session_timeout`) |
//! | `QUIT` | none: the server closes the connection |
//! | anything else | `ERR unknown command` |
//!
//! Plain std threads: one acceptor, one thread per connection (at most
//! [`MAX_CONNECTIONS`] at a time; more are closed at once). Every thread
//! wakes at least every [`TICK`] to notice a stop, so stopping is bounded.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};

/// Connections served at the same time; more are accepted and closed at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// How often a connection thread checks for a stop or an idle cut.
pub const TICK: Duration = Duration::from_millis(2);
/// The longest `SLEEP` honoured.
const MAX_SLEEP: Duration = Duration::from_secs(10);
/// A reply that cannot be written within this is given up (and the
/// connection closed).
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// A line longer than this closes the connection.
const MAX_LINE: usize = 4096;

/// How the server treats its connections.
#[derive(Debug, Clone, Default)]
pub struct LineOptions {
    /// Close a connection that sent nothing for this long (the server's idle
    /// cut). `None`: never.
    pub close_idle_after: Option<Duration>,
    /// Close with SO_LINGER 0, so the client sees a RST instead of a FIN
    /// (idle cuts, `close_all`, `stop`, `QUIT`).
    pub reset_instead_of_close: bool,
}

struct Shared {
    opts: LineOptions,
    accepted: AtomicUsize,
    open: AtomicUsize,
    idle_closed: AtomicUsize,
    /// Bumped by `close_all`/`stop`: connections of an older generation end.
    generation: AtomicU64,
    /// Tells the acceptor to stop listening.
    stop_listening: AtomicBool,
    /// Threads of the connections of the current generation.
    handlers: Mutex<Vec<JoinHandle<()>>>,
    commands: Mutex<HashMap<String, usize>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The line server. Listens until [`LineServer::stop`] or Drop; Drop also
/// closes every connection and joins every thread.
pub struct LineServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for LineServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineServer")
            .field("addr", &self.addr)
            .field("accepted", &self.accepted())
            .field("open", &self.open())
            .finish()
    }
}

impl LineServer {
    /// Starts a server on 127.0.0.1 and a free port.
    pub fn start(opts: LineOptions) -> io::Result<LineServer> {
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            opts,
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            idle_closed: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            stop_listening: AtomicBool::new(false),
            handlers: Mutex::new(Vec::new()),
            commands: Mutex::new(HashMap::new()),
        });
        let server = LineServer {
            addr,
            shared,
            acceptor: Mutex::new(None),
        };
        server.spawn_acceptor(listener)?;
        Ok(server)
    }

    /// Where it listens (the same after a restart).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted since the start (over restarts).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Connections the server closed because they were idle for
    /// `close_idle_after`.
    pub fn idle_closed(&self) -> usize {
        self.shared.idle_closed.load(Ordering::SeqCst)
    }

    /// How many times the command `name` (`PING`, `ROLLBACK`, …) was received.
    pub fn seen(&self, name: &str) -> usize {
        lock(&self.shared.commands).get(name).copied().unwrap_or(0)
    }

    /// Closes every open connection from the server's side (like a server
    /// restart, without the downtime) and returns once they are all closed.
    /// The server keeps listening.
    pub fn close_all(&self) {
        let handlers: Vec<_> = {
            let mut h = lock(&self.shared.handlers);
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
            h.drain(..).collect()
        };
        for h in handlers {
            let _ = h.join();
        }
    }

    /// Stops listening (new connects are refused) and closes every
    /// connection. Returns once the port is closed and every connection
    /// thread has ended. A no-op when already stopped.
    pub fn stop(&self) {
        let acceptor = lock(&self.acceptor).take();
        if let Some(acceptor) = acceptor {
            self.shared.stop_listening.store(true, Ordering::SeqCst);
            // Wake the blocking accept; the acceptor sees the flag and ends.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = acceptor.join();
        }
        self.close_all();
    }

    /// Listens again on the same port after [`LineServer::stop`]. A no-op
    /// when listening.
    pub fn start_again(&self) -> io::Result<()> {
        if lock(&self.acceptor).is_some() {
            return Ok(());
        }
        let listener = bind(self.addr)?;
        self.shared.stop_listening.store(false, Ordering::SeqCst);
        self.spawn_acceptor(listener)
    }

    /// [`LineServer::stop`], then [`LineServer::start_again`] on the same
    /// port: every connection is gone, and connects in between are refused.
    pub fn restart(&self) -> io::Result<()> {
        self.stop();
        self.start_again()
    }

    fn spawn_acceptor(&self, listener: TcpListener) -> io::Result<()> {
        let shared = self.shared.clone();
        let handle = thread::Builder::new()
            .name("testkit-line-accept".into())
            .spawn(move || accept_loop(listener, shared))?;
        *lock(&self.acceptor) = Some(handle);
        Ok(())
    }
}

impl Drop for LineServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A listener with SO_REUSEADDR, so a restart can bind the port again while
/// the old connections sit in TIME_WAIT.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.stop_listening.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(_) => {
                thread::sleep(TICK);
                continue;
            }
        };
        let mut handlers = lock(&shared.handlers);
        handlers.retain(|h| !h.is_finished());
        if handlers.len() >= MAX_CONNECTIONS {
            continue; // dropped: closed at once
        }
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        shared.open.fetch_add(1, Ordering::SeqCst);
        let generation = shared.generation.load(Ordering::SeqCst);
        let conn_shared = shared.clone();
        let spawned = thread::Builder::new()
            .name("testkit-line-conn".into())
            .spawn(move || {
                serve(&stream, &conn_shared, generation);
                if conn_shared.opts.reset_instead_of_close {
                    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                }
                drop(stream);
                conn_shared.open.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(h) => handlers.push(h),
            Err(_) => {
                shared.open.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Serves one connection until the client leaves, `QUIT`, an idle cut, or
/// the connection's generation ends.
fn serve(stream: &TcpStream, shared: &Shared, generation: u64) {
    let ended = || shared.generation.load(Ordering::SeqCst) != generation;
    if stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
        return;
    }
    let mut reader = stream;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 1024];
    let mut last_activity = Instant::now();
    loop {
        if ended() {
            return;
        }
        let wait = match shared.opts.close_idle_after {
            Some(cut) => {
                let idle = last_activity.elapsed();
                if idle >= cut {
                    shared.idle_closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                (cut - idle).min(TICK)
            }
            None => TICK,
        };
        if stream
            .set_read_timeout(Some(wait.max(Duration::from_micros(100))))
            .is_err()
        {
            return;
        }
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                last_activity = Instant::now();
                pending.extend_from_slice(&buf[..n]);
                while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&line[..pos]).trim().to_string();
                    if !answer(stream, shared, &line, &ended) {
                        return;
                    }
                    last_activity = Instant::now();
                }
                if pending.len() > MAX_LINE {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Answers one command; false when the connection must close.
fn answer(mut stream: &TcpStream, shared: &Shared, line: &str, ended: &dyn Fn() -> bool) -> bool {
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or("").to_ascii_uppercase();
    *lock(&shared.commands).entry(name.clone()).or_insert(0) += 1;
    let reply = match name.as_str() {
        "PING" => "PONG",
        "BEGIN" | "COMMIT" | "ROLLBACK" => "OK",
        "SLEEP" => {
            let ms = words
                .next()
                .and_then(|w| w.parse::<u64>().ok())
                .unwrap_or(0);
            let until = Instant::now() + Duration::from_millis(ms).min(MAX_SLEEP);
            while Instant::now() < until {
                if ended() {
                    return false;
                }
                thread::sleep(until.saturating_duration_since(Instant::now()).min(TICK));
            }
            "DONE"
        }
        "IDLE_LIMIT" => {
            let ms = shared.opts.close_idle_after.map_or(0, |d| d.as_millis());
            return stream.write_all(format!("{ms}\n").as_bytes()).is_ok();
        }
        "QUIT" => return false,
        _ => "ERR unknown command",
    };
    stream.write_all(format!("{reply}\n").as_bytes()).is_ok()
}
