//! A database connection's byte stream: plain TCP or TLS over it, with
//! cancel-safe buffered reads and writes bounded by the socket inactivity
//! limits (`read_timeout`, `write_timeout`).
//!
//! Cancel-safe matters here: a query deadline drops the query future in the
//! middle of I/O, and the session must still be able to finish the exchange
//! afterwards (read up to ReadyForQuery after a cancel). So bytes read live in
//! `rbuf`, bytes not yet written stay in `wbuf`, and nothing sits in a
//! future's local variables.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::deadline::{self, Deadline};
use crate::error::{classify_io, Code, Error, Layer};
use crate::runtime::inline;

/// A database connection's TCP socket. On a worker thread (async callers,
/// the pool's background work) it is a tokio socket driven by the runtime's
/// reactor; on a blocking caller's thread (inside
/// [`crate::runtime::block_on`]) it leaves the reactor and does its reads and
/// writes right there, waiting in ppoll(2) when it would block. Leaving the
/// reactor matters: a socket still in the reactor's epoll set wakes a worker
/// for every packet, even though nobody there waits for it.
pub struct Socket {
    io: SocketIo,
    /// The caller just sent something: a thread that blocks in ppoll(2)
    /// waits for the reply first (ppoll, then recv) instead of spending a
    /// recv(2) on EAGAIN, as libpq does. A caller with its own event loop
    /// (see [`crate::runtime::step`]) tries the recv all the same: when the
    /// server's process took the CPU during the send, the reply is already
    /// there, and a wait in that loop (a goroutine parked in Go's netpoller)
    /// costs far more than the recv. Parking after every send left a CPU
    /// idle between statements, and waking it cost more than the work.
    sent: bool,
    /// Unique in the process (see [`crate::runtime::SocketWait`]).
    id: u64,
    /// A caller may hold a duplicate of the descriptor: it asked for it
    /// ([`Socket::ident`]) or was handed a wait for it
    /// ([`crate::runtime::step`]).
    exported: std::sync::atomic::AtomicBool,
}

/// The next [`Socket`]'s id; 0 is never one.
static NEXT_SOCKET_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Drop for Socket {
    /// A caller that waits for this socket in its own event loop (see
    /// [`crate::runtime::step`]) holds a duplicate of its descriptor, which
    /// would keep the connection open after our close. shutdown(2) ends it
    /// for every descriptor at once, so the server sees the close on time.
    /// Never in a child made by fork(): there it would cut the parent's
    /// session too.
    fn drop(&mut self) {
        if !*self.exported.get_mut() || crate::runtime::forked() {
            return;
        }
        let fd = match &self.io {
            SocketIo::Reactor(t) => t.as_raw_fd(),
            SocketIo::Caller(s) => s.as_raw_fd(),
            SocketIo::Gone => return,
        };
        // SAFETY: a socket we still own; an error (already disconnected)
        // changes nothing.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

enum SocketIo {
    Reactor(TcpStream),
    Caller(std::net::TcpStream),
    /// Only between taking one form and making the other; a failed move
    /// leaves it here and every later call reports the connection lost.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the socket was lost while moving between the runtime and the calling thread",
    )
}

impl Socket {
    pub fn new(tcp: TcpStream) -> Socket {
        Socket {
            io: SocketIo::Reactor(tcp),
            sent: false,
            id: NEXT_SOCKET_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            exported: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The socket's descriptor and its id (see
    /// [`crate::runtime::SocketWait`]), for a caller that waits for it in
    /// its own event loop.
    pub fn ident(&self) -> (RawFd, u64) {
        self.exported
            .store(true, std::sync::atomic::Ordering::Relaxed);
        (self.as_fd().as_raw_fd(), self.id)
    }

    /// Asks the caller's thread to wake when the socket has `events`.
    fn wait_on_caller(&mut self, fd: RawFd, events: libc::c_short) {
        if inline::hands_off() {
            *self.exported.get_mut() = true;
        }
        inline::wait_for(fd, events, self.id);
    }

    /// The socket as the calling thread uses it, leaving the reactor if it
    /// was there (one epoll_ctl, once per switch).
    fn for_caller(&mut self) -> io::Result<RawFd> {
        if let SocketIo::Caller(s) = &self.io {
            return Ok(s.as_raw_fd());
        }
        match std::mem::replace(&mut self.io, SocketIo::Gone) {
            SocketIo::Reactor(t) => {
                let s = t.into_std()?;
                let fd = s.as_raw_fd();
                self.io = SocketIo::Caller(s);
                Ok(fd)
            }
            _ => Err(gone()),
        }
    }

    /// The socket as the reactor drives it, joining the current runtime's
    /// reactor if the calling thread had it.
    fn for_reactor(&mut self) -> io::Result<&mut TcpStream> {
        if matches!(self.io, SocketIo::Caller(_)) {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(io::Error::other(
                    "a dialpool connection was used asynchronously outside a tokio runtime",
                ));
            }
            if let SocketIo::Caller(s) = std::mem::replace(&mut self.io, SocketIo::Gone) {
                self.io = SocketIo::Reactor(TcpStream::from_std(s)?);
            }
        }
        match &mut self.io {
            SocketIo::Reactor(t) => Ok(t),
            _ => Err(gone()),
        }
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.io {
            SocketIo::Reactor(t) => t.as_fd(),
            SocketIo::Caller(s) => s.as_fd(),
            // SAFETY: -1 is never a valid fd: every call on it fails with
            // EBADF, which callers (the liveness probe) report as dead.
            SocketIo::Gone => unsafe { BorrowedFd::borrow_raw(-1) },
        }
    }
}

/// recv(2) or send(2) result: bytes moved, or the error (EAGAIN included).
fn syscall_len(rc: isize) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !inline::active() {
            return match this.for_reactor() {
                Ok(t) => Pin::new(t).poll_read(cx, buf),
                Err(e) => Poll::Ready(Err(e)),
            };
        }
        let fd = match this.for_caller() {
            Ok(fd) => fd,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if std::mem::take(&mut this.sent) && !inline::hands_off() {
            this.wait_on_caller(fd, libc::POLLIN);
            return Poll::Pending;
        }
        loop {
            // SAFETY: recv writes at most `len` bytes into the unfilled,
            // possibly uninitialised part of the buffer; the bytes it
            // reports are then marked initialised and filled.
            let got = unsafe {
                let dst = buf.unfilled_mut();
                syscall_len(libc::recv(
                    fd,
                    dst.as_mut_ptr().cast(),
                    dst.len(),
                    libc::MSG_DONTWAIT,
                ))
            };
            match got {
                Ok(n) => {
                    // SAFETY: recv initialised exactly `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    this.wait_on_caller(fd, libc::POLLIN);
                    return Poll::Pending;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !inline::active() {
            return match self.get_mut().for_reactor() {
                Ok(t) => Pin::new(t).poll_write(cx, buf),
                Err(e) => Poll::Ready(Err(e)),
            };
        }
        // On the caller's thread one buffer is a vector of one.
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }
    /// TLS writes its records as several buffers; one sendmsg(2) or
    /// writev(2) sends them all.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !inline::active() {
            return match this.for_reactor() {
                Ok(t) => Pin::new(t).poll_write_vectored(cx, bufs),
                Err(e) => Poll::Ready(Err(e)),
            };
        }
        let fd = match this.for_caller() {
            Ok(fd) => fd,
            Err(e) => return Poll::Ready(Err(e)),
        };
        // MSG_NOSIGNAL: a closed peer must give EPIPE, not kill a host
        // process (C, Go, Python) that did not ignore SIGPIPE.
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        loop {
            // One buffer (every plain-TCP statement) goes by send(2): the
            // kernel then copies no msghdr and no iovec array in.
            let sent = syscall_len(match bufs {
                // SAFETY: `one` is alive and readable for the call.
                [one] => unsafe { libc::send(fd, one.as_ptr().cast(), one.len(), flags) },
                _ => {
                    // SAFETY: an all-zero msghdr is valid (no address, no
                    // control data).
                    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                    // IoSlice is ABI-compatible with iovec on Unix; sendmsg
                    // only reads.
                    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
                    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
                    // SAFETY: `msg` points at `bufs`, alive for the call.
                    unsafe { libc::sendmsg(fd, &msg, flags) }
                }
            });
            match sent {
                Ok(n) => {
                    this.sent = n > 0;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    this.wait_on_caller(fd, libc::POLLOUT);
                    return Poll::Pending;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            SocketIo::Reactor(t) => Pin::new(t).poll_flush(cx),
            SocketIo::Caller(_) => Poll::Ready(Ok(())),
            SocketIo::Gone => Poll::Ready(Err(gone())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            SocketIo::Reactor(t) => Pin::new(t).poll_shutdown(cx),
            SocketIo::Caller(s) => Poll::Ready(s.shutdown(std::net::Shutdown::Write)),
            SocketIo::Gone => Poll::Ready(Err(gone())),
        }
    }
}

/// Plain or TLS.
pub enum Stream {
    Plain(Socket),
    Tls(Box<TlsStream<Socket>>),
}

impl Stream {
    /// A plain stream over a freshly dialled socket.
    pub fn plain(tcp: TcpStream) -> Stream {
        Stream::Plain(Socket::new(tcp))
    }
    pub fn socket(&self) -> &Socket {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket().as_fd()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A stream with its buffers and inactivity limits.
pub struct Wire {
    pub stream: Stream,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    /// `host:port` for messages.
    pub peer: String,
    /// The layer errors are reported in (login while logging in, then query).
    pub layer: Layer,
}

/// The largest message accepted from a server: far above any real row, far
/// below what would exhaust memory on a corrupt length.
pub const MAX_MESSAGE: usize = 1 << 30;

impl Wire {
    pub fn new(stream: Stream, peer: String) -> Wire {
        Wire {
            stream,
            rbuf: BytesMut::with_capacity(8192),
            wbuf: BytesMut::with_capacity(1024),
            read_timeout: None,
            write_timeout: None,
            peer,
            layer: Layer::Login,
        }
    }

    /// Reads more bytes into `rbuf`, under `read_timeout`.
    pub async fn fill(&mut self) -> Result<(), Error> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(8192);
        }
        let limit = Deadline::from_option("read_timeout", self.read_timeout);
        match deadline::run(limit, self.stream.read_buf(&mut self.rbuf)).await {
            Ok(Ok(0)) => Err(self.lost(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.lost(e)),
            Err(deadline::Fired(d)) => Err(Error::new(
                Code::ReadTimeout,
                format!("no data from {} while a reply was due", self.peer),
            )
            .with_layer(self.layer)
            .with_limit(d.limit())
            .with_elapsed(d.limit().value)
            .with_peer(&self.peer)
            .with_hint("the server or the network stalled; the connection is closed")
            .with_retryable(false)),
        }
    }

    /// Writes everything in `wbuf`, under `write_timeout` for each stall.
    pub async fn flush(&mut self) -> Result<(), Error> {
        while self.wbuf.has_remaining() {
            let limit = Deadline::from_option("write_timeout", self.write_timeout);
            match deadline::run(limit, self.stream.write_buf(&mut self.wbuf)).await {
                Ok(Ok(0)) => {
                    return Err(self.lost(io::Error::new(io::ErrorKind::WriteZero, "socket closed")))
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(self.lost(e)),
                Err(deadline::Fired(d)) => return Err(Error::new(
                    Code::WriteTimeout,
                    format!("{} did not accept data", self.peer),
                )
                .with_layer(self.layer)
                .with_limit(d.limit())
                .with_elapsed(d.limit().value)
                .with_peer(&self.peer)
                .with_hint(
                    "the server stopped reading or the network stalled; the connection is closed",
                )
                .with_retryable(false)),
            }
        }
        match self.stream.flush().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.lost(e)),
        }
    }

    /// The error for a broken connection.
    pub fn lost(&self, e: io::Error) -> Error {
        let class = classify_io(&e, true);
        Error::new(
            Code::ConnectionLost,
            format!("connection to {} lost", self.peer),
        )
        .with_layer(self.layer)
        .with_peer(&self.peer)
        .with_cause(format!("{} ({})", class.meaning, class.errno_name))
        .with_hint(class.hint)
        .with_retryable(false)
        .with_source(e)
    }
}
