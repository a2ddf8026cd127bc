//! Proves the loopback fault fixtures do what they claim, with std only.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dialpool_testkit::fault::{refused_addr, SilentPeer, SynBlackHole};

#[test]
fn refused_addr_refuses() {
    let addr = refused_addr();
    assert!(addr.ip().is_loopback());
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect_err("connected");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn syn_black_hole_connect_times_out() {
    let hole = SynBlackHole::new().expect("SynBlackHole::new");
    assert!(hole.addr.ip().is_loopback());
    // Twice: the queue stays full, the second SYN is dropped as well.
    for _ in 0..2 {
        let started = Instant::now();
        let err = TcpStream::connect_timeout(&hole.addr, Duration::from_millis(300))
            .expect_err("connect completed");
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
}

#[test]
fn silent_peer_accepts_and_never_writes() {
    let peer = SilentPeer::new().expect("SilentPeer::new");
    let mut s = TcpStream::connect_timeout(&peer.addr, Duration::from_secs(2)).expect("connect");
    s.write_all(b"\x16\x03\x01 hello, anybody there?")
        .expect("write");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let err = s.read(&mut buf).expect_err("peer sent something or closed");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while peer.accepted() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(peer.accepted(), 1);
    // Drop closes the connection: the client then sees EOF (or a reset).
    drop(peer);
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("peer sent {n} bytes"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
}
