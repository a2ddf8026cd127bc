//! Real network faults on loopback: a refused port, a listener whose accept
//! queue is full (SYNs dropped), and a peer that accepts and never speaks.
//!
//! For faults that need root (iptables DROP, unreachable network, broken DNS)
//! see [`crate::netns`].

use std::io::{self, ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// 127.0.0.1 and a port nobody listens on, so a connect fails at once with
/// ECONNREFUSED (the kernel answers the SYN with RST).
///
/// The port was just bound and released: it is free unless another process
/// happens to grab the same ephemeral port in between, which is rare enough
/// for tests and would show up as a connect that unexpectedly succeeds.
pub fn refused_addr() -> SocketAddr {
    let fallback = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
    let Ok(l) = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return fallback;
    };
    l.local_addr().unwrap_or(fallback)
}

/// How long a filler connect may take before we call the queue full.
const FILL_PROBE: Duration = Duration::from_millis(200);
/// Upper bound on filler connections (backlog 0 needs about two).
const MAX_FILLERS: usize = 16;

/// A listener on 127.0.0.1 whose accept queue is full, so the kernel drops
/// every new SYN: a client's connect hangs (SYN retransmits) until its own
/// timeout, like a host behind a firewall that drops packets.
///
/// How: listen with backlog 0 and never accept, then connect clients (kept
/// open here) until a connect no longer completes within 200 ms. Linux checks
/// "accept queue full" before it considers SYN cookies, so
/// `net.ipv4.tcp_syncookies` does not interfere: with a full accept queue the
/// SYN is dropped (counted as ListenOverflows) whatever that setting is.
/// Lives as long as the struct.
#[derive(Debug)]
pub struct SynBlackHole {
    /// Connect here to hang.
    pub addr: SocketAddr,
    _listener: Socket,
    _fillers: Vec<TcpStream>,
}

impl SynBlackHole {
    /// Creates the listener and fills its queue; Err if the queue never fills
    /// within 16 connections (then this kernel behaves unlike Linux ≥ 4.x).
    pub fn new() -> io::Result<Self> {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        listener.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
        listener.listen(0)?;
        let addr = listener
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener has no inet address"))?;
        let mut fillers = Vec::new();
        for _ in 0..MAX_FILLERS {
            match TcpStream::connect_timeout(&addr, FILL_PROBE) {
                Ok(s) => fillers.push(s),
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    return Ok(SynBlackHole {
                        addr,
                        _listener: listener,
                        _fillers: fillers,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "accept queue of {addr} still accepting after {MAX_FILLERS} connections"
        )))
    }
}

/// A TCP server on 127.0.0.1 that accepts every connection and never writes:
/// it reads and discards what the client sends and keeps the socket open.
/// Models a server that accepted TCP but hangs in the protocol (TLS or
/// startup handshake never answered). Stops, closing everything, on Drop.
#[derive(Debug)]
pub struct SilentPeer {
    /// Connect here.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentPeer {
    /// Binds 127.0.0.1:0 and starts the serving thread.
    pub fn new() -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, st) = (accepted.clone(), stop.clone());
        let thread = thread::Builder::new()
            .name("testkit-silent-peer".into())
            .spawn(move || silent_loop(listener, acc, st))?;
        Ok(SilentPeer {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        })
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn silent_loop(listener: TcpListener, accepted: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
    let mut conns: Vec<TcpStream> = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let mut busy = false;
        match listener.accept() {
            Ok((s, _)) => {
                if s.set_nonblocking(true).is_ok() {
                    conns.push(s);
                }
                accepted.fetch_add(1, Ordering::SeqCst);
                busy = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
        conns.retain_mut(|c| match c.read(&mut buf) {
            Ok(0) => false,
            Ok(_) => {
                busy = true;
                true
            }
            Err(e) => e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted,
        });
        if !busy {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
