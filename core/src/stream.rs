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
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::deadline::{self, Deadline};
use crate::error::{classify_io, Code, Error, Layer};

/// Plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
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
        self.tcp().as_fd()
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
