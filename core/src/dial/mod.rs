//! The dial layer: DNS, TCP connect with socket options, and the TLS upgrade
//! step the protocol sessions call once they have asked for TLS in-band.
//!
//! Every step runs under the earlier of its own limit and the caller's
//! deadline, and every failure is classified and timed, so that "the host
//! never answered a SYN" and "nothing listens on that port" stay apart.

pub mod resolve;
pub mod tls;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::config::{DialOptions, HostPort, SslMode};
use crate::deadline::{self, Deadline};
use crate::error::{classify_io, Code, Error, Layer, Result};

pub use tls::TlsConnector;
pub use tokio_rustls::client::TlsStream;

/// RFC 8305's recommended "Connection Attempt Delay": how long one address
/// gets before the next is tried in parallel.
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// How long each phase of a dial took. Failures carry the phases that ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseTimings {
    /// Name resolution; `None` for an IP literal.
    pub dns: Option<Duration>,
    /// TCP connect, from the first attempt to the established socket.
    pub connect: Option<Duration>,
    /// TLS handshake, once upgraded.
    pub tls: Option<Duration>,
}

/// A connected socket as the attempt left it: still std on a blocking
/// caller's thread, already in the reactor for async callers.
#[derive(Debug)]
enum Dialed {
    Std(std::net::TcpStream),
    Tokio(TcpStream),
}

impl Dialed {
    fn into_tokio(self) -> Result<TcpStream> {
        match self {
            Dialed::Std(s) => TcpStream::from_std(s).map_err(|e| {
                Error::internal(format!("registering the socket with the runtime: {e}"))
            }),
            Dialed::Tokio(t) => Ok(t),
        }
    }

    fn into_std(self) -> Result<std::net::TcpStream> {
        match self {
            Dialed::Std(s) => Ok(s),
            Dialed::Tokio(t) => t
                .into_std()
                .map_err(|e| Error::internal(format!("taking the socket out of the runtime: {e}"))),
        }
    }
}

/// A connection as a dial reached it, before the socket takes its final
/// form ([`Connected`] or a std stream).
struct Reached {
    dialed: Dialed,
    peer: SocketAddr,
    host: HostPort,
    timings: PhaseTimings,
}

impl Reached {
    fn into_connected(self) -> Result<Connected> {
        Ok(Connected {
            stream: self.dialed.into_tokio()?,
            peer: self.peer,
            host: self.host,
            timings: self.timings,
        })
    }
}

/// An established TCP connection and how it was reached.
#[derive(Debug)]
pub struct Connected {
    pub stream: TcpStream,
    /// The address that answered.
    pub peer: SocketAddr,
    /// The URL host it belongs to.
    pub host: HostPort,
    pub timings: PhaseTimings,
}

/// Dials with one set of [`DialOptions`]. Cheap to clone; build one per pool.
#[derive(Debug, Clone)]
pub struct Dialer {
    opts: DialOptions,
    tls: Option<TlsConnector>,
}

impl Dialer {
    /// Builds the dialer, reading TLS certificate files now so that a bad
    /// path is reported when the pool opens, not on every connect.
    pub fn new(opts: &DialOptions) -> Result<Dialer> {
        Ok(Dialer {
            opts: opts.clone(),
            tls: TlsConnector::new(&opts.tls)?,
        })
    }

    /// A dialer for TCP alone, one that never upgrades to TLS (the raw
    /// dial that hands its socket over): it builds no TLS configuration,
    /// which was a third of the work of a loopback dial, and [`Dialer::tls`]
    /// is None whatever the sslmode.
    pub fn tcp_only(opts: &DialOptions) -> Dialer {
        Dialer {
            opts: opts.clone(),
            tls: None,
        }
    }

    pub fn options(&self) -> &DialOptions {
        &self.opts
    }

    /// The TLS connector, when the sslmode uses TLS at all.
    pub fn tls(&self) -> Option<&TlsConnector> {
        self.tls.as_ref()
    }

    /// Tries the hosts in order, as libpq does, and returns the first
    /// connection made. When all fail, the error of the last host is returned
    /// and names the others' failures.
    pub async fn connect(&self, hosts: &[HostPort], caller: Option<Deadline>) -> Result<Connected> {
        self.connect_any(hosts, caller).await?.into_connected()
    }

    /// As [`Dialer::connect`], handing the socket over as a std stream: on
    /// a blocking caller's thread it never joins the runtime's reactor,
    /// whose registration and release (two epoll_ctl, and a wake of the
    /// reactor's thread to free the entry) cost more than the rest of a
    /// loopback dial. For callers that give the socket away (the C ABI's
    /// dial).
    pub async fn connect_std(
        &self,
        hosts: &[HostPort],
        caller: Option<Deadline>,
    ) -> Result<(std::net::TcpStream, SocketAddr)> {
        let reached = self.connect_any(hosts, caller).await?;
        Ok((reached.dialed.into_std()?, reached.peer))
    }

    async fn connect_any(&self, hosts: &[HostPort], caller: Option<Deadline>) -> Result<Reached> {
        let mut earlier: Vec<String> = Vec::new();
        let mut last: Option<Error> = None;
        for host in hosts {
            if let (Some(d), Some(_)) = (caller, &last) {
                if d.expired() {
                    break;
                }
            }
            match self.connect_host_any(host, caller).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    if let Some(prev) = last.take() {
                        earlier.push(format!("{}: {}", prev.peer().unwrap_or("?"), prev.code()));
                    }
                    last = Some(e);
                }
            }
        }
        let err = last.ok_or_else(|| Error::invalid_argument("no host to dial"))?;
        if earlier.is_empty() {
            return Err(err);
        }
        let cause = match err.cause() {
            Some(c) => format!("{c} (earlier hosts failed too: {})", earlier.join(", ")),
            None => format!("earlier hosts failed too: {}", earlier.join(", ")),
        };
        Err(err.with_cause(cause))
    }

    /// Resolves one host and connects to one of its addresses.
    pub async fn connect_host(
        &self,
        host: &HostPort,
        caller: Option<Deadline>,
    ) -> Result<Connected> {
        self.connect_host_any(host, caller).await?.into_connected()
    }

    async fn connect_host_any(&self, host: &HostPort, caller: Option<Deadline>) -> Result<Reached> {
        let mut timings = PhaseTimings::default();
        let addrs = self.resolve(host, caller, &mut timings).await?;
        let start = Instant::now();
        let result = self.connect_addrs(host, addrs, caller).await;
        timings.connect = Some(start.elapsed());
        match result {
            Ok((dialed, peer)) => Ok(Reached {
                dialed,
                peer,
                host: host.clone(),
                timings,
            }),
            Err(e) => Err(e.with_phases(timings)),
        }
    }

    async fn resolve(
        &self,
        host: &HostPort,
        caller: Option<Deadline>,
        timings: &mut PhaseTimings,
    ) -> Result<Vec<SocketAddr>> {
        if let Some(addrs) = resolve::literal(&host.host, host.port) {
            return Ok(addrs);
        }
        let start = Instant::now();
        let limit = Deadline::earliest(
            Deadline::from_option("dns_timeout", self.opts.dns_timeout),
            caller,
        );
        let name = host.host.clone();
        let port = host.port;
        let lookup = tokio::task::spawn_blocking(move || resolve::getaddrinfo(&name, port));
        let outcome = deadline::run(limit, lookup).await;
        let elapsed = start.elapsed();
        timings.dns = Some(elapsed);
        let shown = host.to_string();
        match outcome {
            Ok(Ok(Ok(addrs))) => Ok(addrs),
            Ok(Ok(Err(e))) => {
                let hint = if e.is_temporary() {
                    "the resolver could not be reached or failed; check /etc/resolv.conf and the DNS servers"
                } else {
                    "check the host name in the URL"
                };
                let retryable = e.is_temporary();
                Err(
                    Error::new(Code::DnsError, format!("resolving {:?} failed", host.host))
                        .with_elapsed(elapsed)
                        .with_peer(shown)
                        .with_cause(e.to_string())
                        .with_hint(hint)
                        .with_retryable(retryable)
                        .with_phases(*timings)
                        .with_source(e),
                )
            }
            Ok(Err(join)) => Err(Error::internal(format!("DNS lookup task failed: {join}"))),
            Err(deadline::Fired(d)) => {
                let hint = if d.is_caller() {
                    "the caller's deadline passed while resolving"
                } else {
                    "check /etc/resolv.conf and that its DNS servers answer, or raise dns_timeout"
                };
                Err(Error::new(
                    Code::DnsTimeout,
                    format!("resolving {:?} timed out", host.host),
                )
                .with_limit(d.limit())
                .with_elapsed(elapsed)
                .with_peer(shown)
                .with_cause("the resolver did not answer")
                .with_hint(hint)
                .with_phases(*timings))
            }
        }
    }

    /// Happy Eyeballs (RFC 8305): addresses alternate by family; each gets
    /// [`ATTEMPT_DELAY`] before the next starts beside it, and a failed one
    /// starts the next at once. The first established connection wins and
    /// the others are dropped.
    async fn connect_addrs(
        &self,
        host: &HostPort,
        addrs: Vec<SocketAddr>,
        caller: Option<Deadline>,
    ) -> Result<(Dialed, SocketAddr)> {
        let addrs = resolve::interleave(addrs);
        if let [addr] = addrs[..] {
            // The common case (an IP literal or a single record) needs no task.
            return attempt(addr, &self.opts, caller)
                .await
                .map(|s| (s, addr))
                .map_err(|e| with_host(e, host));
        }
        let mut set: JoinSet<(usize, Result<Dialed>)> = JoinSet::new();
        let spawn = |set: &mut JoinSet<(usize, Result<Dialed>)>, i: usize| {
            let addr = addrs[i];
            let opts = self.opts.clone();
            set.spawn(async move { (i, attempt(addr, &opts, caller).await) });
        };
        spawn(&mut set, 0);
        let mut next = 1;
        let mut errors: Vec<Error> = Vec::new();
        loop {
            let stagger = tokio::time::sleep(ATTEMPT_DELAY);
            tokio::select! {
                biased;
                joined = set.join_next() => match joined {
                    Some(Ok((i, Ok(stream)))) => return Ok((stream, addrs[i])),
                    Some(Ok((_, Err(e)))) => {
                        errors.push(e);
                        if next < addrs.len() {
                            spawn(&mut set, next);
                            next += 1;
                        } else if set.is_empty() {
                            break;
                        }
                    }
                    Some(Err(join)) => {
                        return Err(Error::internal(format!("connect task failed: {join}")))
                    }
                    None => break,
                },
                _ = stagger, if next < addrs.len() => {
                    spawn(&mut set, next);
                    next += 1;
                }
            }
        }
        // A timeout says more about the path than a refusal on another
        // family (a host with a dead IPv6 route refuses nothing).
        let n = errors.len();
        let pick = errors.iter().position(|e| e.is_timeout()).unwrap_or(0);
        let others: Vec<String> = errors
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != pick)
            .map(|(_, e)| format!("{} {}", e.peer().unwrap_or("?"), e.code()))
            .collect();
        let err = errors.swap_remove(pick);
        let err = if n > 1 {
            let cause = format!(
                "{} (all {n} addresses failed; others: {})",
                err.cause().unwrap_or(""),
                others.join(", ")
            );
            err.with_cause(cause)
        } else {
            err
        };
        Err(with_host(err, host))
    }

    /// Upgrades `stream` to TLS under `tls_timeout` and the caller's
    /// deadline; for the protocol sessions, after their in-band TLS request
    /// was accepted.
    pub async fn upgrade_tls<S>(
        &self,
        stream: S,
        host: &str,
        peer: &str,
        caller: Option<Deadline>,
    ) -> Result<(TlsStream<S>, Duration)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match &self.tls {
            Some(tls) => {
                tls.upgrade(stream, host, peer, self.opts.tls_timeout, caller)
                    .await
            }
            None => Err(Error::invalid_state(format!(
                "TLS upgrade requested with sslmode={}",
                SslMode::name(self.opts.tls.sslmode)
            ))
            .with_layer(Layer::Dial)),
        }
    }
}

fn with_host(err: Error, host: &HostPort) -> Error {
    if err.peer().is_some() {
        err
    } else {
        err.with_peer(host.to_string())
    }
}

/// Creates a socket with every option set before connect, so that
/// TCP_SYNCNT applies to the handshake and keepalive/TCP_USER_TIMEOUT are in
/// force from the first byte.
fn new_socket(addr: SocketAddr, opts: &DialOptions) -> std::io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    configure(&socket, opts)?;
    Ok(socket)
}

/// Applies the dial options to a socket. Public for sockets made elsewhere
/// (e.g. a cancel connection built by a protocol session).
pub fn configure(socket: &Socket, opts: &DialOptions) -> std::io::Result<()> {
    socket.set_tcp_nodelay(true)?;
    match opts.keepalive.idle {
        Some(idle) => {
            // set_tcp_keepalive turns SO_KEEPALIVE on as well.
            let params = TcpKeepalive::new()
                .with_time(idle)
                .with_interval(opts.keepalive.interval)
                .with_retries(opts.keepalive.count);
            socket.set_tcp_keepalive(&params)?;
        }
        None => socket.set_keepalive(false)?,
    }
    if let Some(t) = opts.tcp_user_timeout {
        socket.set_tcp_user_timeout(Some(t))?;
    }
    if let Some(n) = opts.syn_retries {
        set_syn_retries(socket, n)?;
    }
    Ok(())
}

fn set_syn_retries(socket: &Socket, count: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = count as libc::c_int;
    // SAFETY: a valid socket fd and a c_int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SYNCNT,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads TCP_SYNCNT back (socket2 has no accessor for it).
pub fn syn_retries<S: std::os::fd::AsFd>(socket: &S) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid fd and a c_int-sized out buffer.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SYNCNT,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value as u32)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A non-blocking connect whose completion the blocking caller's thread
/// waits for itself (see [`crate::runtime::inline`]), rather than a
/// runtime worker's epoll waking it.
async fn connect_on_caller(socket: Socket, addr: SocketAddr) -> std::io::Result<Dialed> {
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
            let mut asked = false;
            std::future::poll_fn(|_| {
                if asked && connect_done(fd) {
                    return std::task::Poll::Ready(());
                }
                asked = true;
                crate::runtime::inline::wait_for(fd, libc::POLLOUT, 0);
                std::task::Poll::Pending
            })
            .await;
            if let Some(e) = socket.take_error()? {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    Ok(Dialed::Std(socket.into()))
}

/// Whether a connect in progress has finished (either way), without
/// waiting: the thread may have been woken for something else.
fn connect_done(fd: std::os::fd::RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents != 0
}

/// One connect attempt to one address under `connect_timeout` and the
/// caller's deadline.
async fn attempt(addr: SocketAddr, opts: &DialOptions, caller: Option<Deadline>) -> Result<Dialed> {
    let start = Instant::now();
    let peer = addr.to_string();
    let limit = Deadline::earliest(
        Deadline::from_option("connect_timeout", opts.connect_timeout),
        caller,
    );
    let socket = new_socket(addr, opts).map_err(|e| {
        Error::new(
            Code::NetworkError,
            format!("creating a socket for {peer} failed"),
        )
        .with_peer(&peer)
        .with_cause(e.to_string())
        .with_hint("check the process's file-descriptor limit and socket permissions")
        .with_source(e)
    })?;
    let connect = async move {
        if crate::runtime::inline::active() {
            connect_on_caller(socket, addr).await
        } else {
            TcpSocket::from_std_stream(socket.into())
                .connect(addr)
                .await
                .map(Dialed::Tokio)
        }
    };
    match deadline::run(limit, connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(io)) => {
            let class = classify_io(&io, false);
            let verb = match class.code {
                Code::ConnectionRefused => "refused",
                Code::ConnectTimeout => "timed out",
                _ => "failed",
            };
            Err(Error::new(class.code, format!("connect to {peer} {verb}"))
                .with_layer(Layer::Dial)
                .with_elapsed(start.elapsed())
                .with_peer(&peer)
                .with_cause(format!("{} ({})", class.meaning, class.errno_name))
                .with_hint(class.hint)
                .with_source(io))
        }
        Err(deadline::Fired(d)) => {
            let hint = if d.is_caller() {
                "the caller's deadline passed during the connect"
            } else {
                "check routing and firewalls, or raise connect_timeout"
            };
            Err(
                Error::new(Code::ConnectTimeout, format!("connect to {peer} timed out"))
                    .with_limit(d.limit())
                    .with_elapsed(start.elapsed())
                    .with_peer(&peer)
                    .with_cause("no answer to SYN")
                    .with_hint(hint),
            )
        }
    }
}

/// The socket behind a stream, for reading options back.
pub fn sock_ref(stream: &TcpStream) -> SockRef<'_> {
    SockRef::from(stream)
}

/// The pool's checkout probe: a non-blocking one-byte peek on the socket.
/// Nothing pending means the peer is still there; end-of-file, a reset, or
/// bytes arriving on a connection nobody is reading (a server's goodbye
/// before it closes) mean the connection must not be handed out.
pub fn probe<S: std::os::fd::AsFd>(socket: &S) -> crate::pool::Liveness {
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    // SAFETY: a valid fd and a one-byte buffer; MSG_PEEK leaves the data.
    let n = unsafe {
        libc::recv(
            socket.as_fd().as_raw_fd(),
            byte.as_mut_ptr() as *mut libc::c_void,
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => crate::pool::Liveness::Alive,
            _ => crate::pool::Liveness::Dead,
        }
    } else {
        crate::pool::Liveness::Dead
    }
}
