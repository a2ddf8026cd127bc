//! The blocking facade's caller-thread I/O (`runtime::block_on` with a
//! database socket waiting in ppoll on the calling thread): deadlines fire
//! on time, a cancel or any other wake from another thread interrupts the
//! wait, and the same socket still works from the runtime's workers after.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdTcp};
use std::time::{Duration, Instant};

use dialpool::deadline::{self, CancelToken, Deadline, Stop};
use dialpool::runtime;
use dialpool::stream::{Stream, Wire};

/// A connected pair: our side as a `Wire` (made on the runtime, as the
/// pool's background connects do), the peer as a plain blocking socket.
fn pair() -> (Wire, StdTcp) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let ours =
        runtime::block_on(
            async move { tokio::net::TcpStream::connect(addr).await.expect("connect") },
        )
        .expect("runtime");
    let (peer, _) = listener.accept().expect("accept");
    (Wire::new(Stream::plain(ours), addr.to_string()), peer)
}

#[test]
fn data_arrives_on_the_calling_thread_and_the_socket_moves_back_to_the_runtime() {
    let (mut wire, mut peer) = pair();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        peer.write_all(b"hello").expect("write");
        let mut buf = [0u8; 4];
        peer.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"ping");
        peer.write_all(b"pong").expect("write");
        peer
    });
    // On the caller: wait for data that comes 50 ms later.
    let limit = Some(Deadline::after("read_timeout", Duration::from_secs(20)));
    let got = runtime::block_on(async {
        deadline::run(limit, async {
            while wire.rbuf.len() < 5 {
                wire.fill().await?;
            }
            Ok::<_, dialpool::Error>(())
        })
        .await
    })
    .expect("runtime");
    assert!(matches!(got, Ok(Ok(()))), "{got:?}");
    assert_eq!(&wire.rbuf[..5], b"hello");
    wire.rbuf.clear();

    // The same socket from a runtime worker: it rejoins the reactor.
    let handle = runtime::handle().expect("handle");
    let wire = runtime::block_on(async move {
        handle
            .spawn(async move {
                wire.wbuf.extend_from_slice(b"ping");
                wire.flush().await.expect("flush");
                while wire.rbuf.len() < 4 {
                    wire.fill().await.expect("fill");
                }
                wire
            })
            .await
            .expect("task")
    })
    .expect("runtime");
    assert_eq!(&wire.rbuf[..4], b"pong");
    writer.join().expect("writer");
}

#[test]
fn a_deadline_ends_a_wait_on_a_silent_peer_on_time() {
    let (mut wire, _peer) = pair();
    let limit = Some(Deadline::after("query_timeout", Duration::from_millis(150)));
    let start = Instant::now();
    let got =
        runtime::block_on(async { deadline::run(limit, wire.fill()).await }).expect("runtime");
    let took = start.elapsed();
    let Err(deadline::Fired(d)) = got else {
        panic!("expected the deadline to fire, got {got:?}");
    };
    assert_eq!(d.limit().name, "query_timeout");
    assert!(took >= Duration::from_millis(150), "fired early: {took:?}");
    // Generous: a loaded machine may be late, but not by seconds.
    assert!(took < Duration::from_secs(3), "fired late: {took:?}");
}

#[test]
fn a_cancel_from_another_thread_interrupts_the_wait() {
    let (mut wire, _peer) = pair();
    let token = CancelToken::new();
    let t2 = token.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        t2.cancel();
    });
    let start = Instant::now();
    let got = runtime::block_on(async {
        deadline::run_until(
            Some(Deadline::after("query_timeout", Duration::from_secs(30))),
            Some(&token),
            wire.fill(),
        )
        .await
    })
    .expect("runtime");
    assert!(matches!(got, Err(Stop::Cancelled)), "{got:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    canceller.join().expect("canceller");
}

#[test]
fn a_wake_for_another_branch_interrupts_the_socket_wait() {
    let (mut wire, _peer) = pair();
    let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let _ = tx.send(7);
    });
    let start = Instant::now();
    let got = runtime::block_on(async {
        tokio::select! {
            r = wire.fill() => Err(format!("the silent socket returned {r:?}")),
            v = rx => Ok(v.expect("sent")),
        }
    })
    .expect("runtime");
    assert_eq!(got, Ok(7));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    sender.join().expect("sender");
}

#[test]
fn a_closed_peer_is_a_lost_connection_not_a_signal() {
    let (mut wire, peer) = pair();
    drop(peer);
    let got = runtime::block_on(async {
        // Write until the reset shows (the first write may still succeed).
        for _ in 0..100 {
            wire.wbuf.extend_from_slice(&[0u8; 1024]);
            wire.flush().await?;
            wire.fill().await?;
        }
        Ok::<(), dialpool::Error>(())
    })
    .expect("runtime");
    let e: dialpool::Error = got.expect_err("must fail");
    assert_eq!(e.code(), dialpool::Code::ConnectionLost, "{e}");
}

fn dial_blocking(url: &str) -> Result<dialpool::Connected, dialpool::Error> {
    let config = dialpool::Config::parse(url).expect("url");
    let dialer = dialpool::Dialer::new(&config.dial).expect("dialer");
    runtime::block_on(async move { dialer.connect(&config.hosts, None).await }).expect("runtime")
}

#[test]
fn a_dial_on_the_calling_thread_connects_refuses_and_times_out() {
    use dialpool::Code;
    use dialpool_testkit::fault;

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let ok = dial_blocking(&format!("tcp://{addr}")).expect("connects");
    drop(ok);

    let refused = fault::refused_addr();
    let e = dial_blocking(&format!("tcp://{refused}")).expect_err("nobody listens");
    assert_eq!(e.code(), Code::ConnectionRefused, "{e}");
    assert_eq!(e.os_error(), Some(libc::ECONNREFUSED), "{e}");

    let hole = fault::SynBlackHole::new().expect("black hole");
    let start = Instant::now();
    let e = dial_blocking(&format!("tcp://{}?connect_timeout=300ms", hole.addr))
        .expect_err("SYNs are dropped");
    let took = start.elapsed();
    assert_eq!(e.code(), Code::ConnectTimeout, "{e}");
    assert_eq!(e.limit(), Some("connect_timeout"), "{e}");
    assert!(took >= Duration::from_millis(300), "early: {took:?}");
    assert!(took < Duration::from_secs(3), "late: {took:?}");
}

/// `connect_std` hands the socket over as a std stream, from a blocking
/// caller's thread and from a runtime worker alike, connected to the
/// listener and non-blocking (as the dialer made it); its errors are
/// `connect`'s.
#[test]
fn connect_std_hands_over_a_connected_socket_from_either_kind_of_caller() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = dialpool::Config::parse(&format!("tcp://{addr}")).expect("url");
    let dialer = dialpool::Dialer::new(&config.dial).expect("dialer");

    let check = |(mut socket, peer): (std::net::TcpStream, std::net::SocketAddr)| {
        assert_eq!(peer, addr);
        assert_eq!(socket.peer_addr().expect("peer"), addr);
        let (mut server, _) = listener.accept().expect("accept");
        socket.set_nonblocking(false).expect("blocking");
        socket.write_all(b"ping").expect("write");
        let mut got = [0u8; 4];
        server.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"ping");
    };
    let hosts = config.hosts.clone();
    let blocking = runtime::block_on(dialer.connect_std(&hosts, None)).expect("runtime");
    check(blocking.expect("connects from a blocking caller"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let on_worker = rt.block_on(async { dialer.connect_std(&hosts, None).await });
    check(on_worker.expect("connects from a runtime"));

    let refused = dialpool_testkit::fault::refused_addr();
    let config = dialpool::Config::parse(&format!("tcp://{refused}")).expect("url");
    let e = runtime::block_on(dialer.connect_std(&config.hosts, None))
        .expect("runtime")
        .expect_err("nobody listens");
    assert_eq!(e.code(), dialpool::Code::ConnectionRefused, "{e}");
}

/// A TCP-only dialer (the raw dial that hands its socket over) builds no
/// TLS configuration: TLS options that a full dialer rejects, a CA file
/// that does not exist, do not stop it, and it offers no TLS.
#[test]
fn a_tcp_only_dialer_ignores_the_tls_options() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let url = format!("tcp://{addr}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
    let config = dialpool::Config::parse(&url).expect("url");
    let e = dialpool::Dialer::new(&config.dial).expect_err("no CA file");
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    let dialer = dialpool::Dialer::tcp_only(&config.dial);
    assert!(dialer.tls().is_none());
    let (socket, peer) = runtime::block_on(dialer.connect_std(&config.hosts, None))
        .expect("runtime")
        .expect("connects");
    assert_eq!(peer, addr);
    assert_eq!(socket.peer_addr().expect("peer"), addr);
}

/// Waits with poll(2) for `fd` to have `events`, at most `limit`; whether
/// it did.
fn poll_fd(fd: std::os::fd::RawFd, events: i16, limit: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = limit.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut p, 1, ms) };
    rc == 1 && p.revents & events != 0
}

#[test]
fn step_hands_back_a_single_socket_wait_and_finishes_after_it() {
    use runtime::Step;

    let (mut wire, mut peer) = pair();
    // The descriptor number stays when the socket leaves the reactor.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&wire.stream));
    let mut fut = std::pin::pin!(async {
        while wire.rbuf.len() < 5 {
            wire.fill().await?;
        }
        Ok::<_, dialpool::Error>(wire.rbuf.split_to(5))
    });

    // Nothing to read yet: the one socket's wait comes back, no deadline.
    let w = match runtime::step(fut.as_mut()).expect("runtime") {
        Step::Wait(w) => w,
        Step::Ready(r) => panic!("a silent peer cannot finish the read: {r:?}"),
    };
    assert!(w.fd >= 0, "{w:?}");
    assert_eq!(w.fd, fd, "{w:?}");
    assert_eq!(w.events, libc::POLLIN, "{w:?}");
    assert_ne!(w.socket_id, 0, "{w:?}");
    assert_eq!(w.until, None, "no read_timeout, no deadline: {w:?}");

    // Still nothing: a second step hands back the same wait without
    // blocking.
    let start = Instant::now();
    let again = match runtime::step(fut.as_mut()).expect("runtime") {
        Step::Wait(again) => again,
        Step::Ready(r) => panic!("still nothing to read: {r:?}"),
    };
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(again, w);

    // The caller waits in its own poll(2), then steps the future to the end.
    peer.write_all(b"hello").expect("write");
    assert!(
        poll_fd(w.fd, w.events, Duration::from_secs(10)),
        "the socket never became readable"
    );
    let mut ready = None;
    for _ in 0..100 {
        match runtime::step(fut.as_mut()).expect("runtime") {
            Step::Ready(r) => {
                ready = Some(r);
                break;
            }
            // A short read (the 5 bytes in two segments): wait again.
            Step::Wait(next) => {
                assert_eq!(next.socket_id, w.socket_id, "{next:?}");
                assert!(poll_fd(next.fd, next.events, Duration::from_secs(10)));
            }
        }
    }
    let got = ready.expect("the read never finished");
    assert_eq!(&got.expect("read")[..], b"hello");
}

#[test]
fn step_waits_itself_for_a_deadline_without_a_socket() {
    use runtime::Step;

    let limit = Some(Deadline::after("read_timeout", Duration::from_millis(50)));
    let mut fut = std::pin::pin!(deadline::run(limit, std::future::pending::<()>()));
    let start = Instant::now();
    let got = runtime::step(fut.as_mut()).expect("runtime");
    let took = start.elapsed();
    let Step::Ready(Err(deadline::Fired(d))) = got else {
        panic!("expected step to wait for the deadline itself, got {got:?}");
    };
    assert_eq!(d.limit().name, "read_timeout");
    assert!(
        took >= Duration::from_millis(40),
        "returned early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "fired late: {took:?}");
}
