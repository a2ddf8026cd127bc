//! Proves the line server: it answers, cuts idle connections with a FIN or a
//! RST, closes everything on demand, and restarts on the same port.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dialpool_testkit::line::{LineOptions, LineServer};

fn connect(server: &LineServer) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect_timeout(&server.addr(), Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let r = BufReader::new(s.try_clone().expect("clone"));
    (s, r)
}

fn ask(s: &mut TcpStream, r: &mut BufReader<TcpStream>, cmd: &str) -> String {
    s.write_all(format!("{cmd}\n").as_bytes()).expect("write");
    let mut line = String::new();
    r.read_line(&mut line).expect("read");
    line.trim_end().to_string()
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(2);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn answers_commands_and_counts() {
    let server = LineServer::start(LineOptions::default()).expect("start");
    let (mut s, mut r) = connect(&server);
    assert_eq!(ask(&mut s, &mut r, "PING"), "PONG");
    assert_eq!(ask(&mut s, &mut r, "BEGIN"), "OK");
    assert_eq!(ask(&mut s, &mut r, "ROLLBACK"), "OK");
    let start = Instant::now();
    assert_eq!(ask(&mut s, &mut r, "SLEEP 50"), "DONE");
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(ask(&mut s, &mut r, "what"), "ERR unknown command");
    assert_eq!((server.accepted(), server.open()), (1, 1));
    assert_eq!((server.seen("PING"), server.seen("ROLLBACK")), (1, 1));
    s.write_all(b"QUIT\n").expect("quit");
    let mut buf = [0u8; 8];
    assert_eq!(r.read(&mut buf).expect("eof"), 0);
    eventually("close", || server.open() == 0);
}

#[test]
fn idle_cut_sends_fin_or_rst() {
    for reset in [false, true] {
        let server = LineServer::start(LineOptions {
            close_idle_after: Some(Duration::from_millis(50)),
            reset_instead_of_close: reset,
        })
        .expect("start");
        let (mut s, mut r) = connect(&server);
        assert_eq!(ask(&mut s, &mut r, "IDLE_LIMIT"), "50");
        // Activity keeps it open past the cut.
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(ask(&mut s, &mut r, "PING"), "PONG");
        }
        let start = Instant::now();
        let mut buf = [0u8; 8];
        match r.read(&mut buf) {
            Ok(0) => assert!(!reset, "FIN where a RST was asked for"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => assert!(reset, "RST: {e}"),
            other => panic!("expected the server to close: {other:?}"),
        }
        assert!(start.elapsed() >= Duration::from_millis(40));
        eventually("idle cut counted", || {
            server.idle_closed() == 1 && server.open() == 0
        });
    }
}

#[test]
fn close_all_and_restart_keep_the_port() {
    let server = LineServer::start(LineOptions::default()).expect("start");
    let (_s1, mut r1) = connect(&server);
    let (_s2, _r2) = connect(&server);
    eventually("two open", || server.open() == 2);
    server.close_all();
    assert_eq!(server.open(), 0);
    let mut buf = [0u8; 8];
    assert_eq!(r1.read(&mut buf).expect("eof"), 0);
    let addr = server.addr();
    server.stop();
    let e = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).expect_err("stopped");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    server.start_again().expect("listen again");
    let (_s3, _r3) = connect(&server);
    eventually("accepted", || server.open() == 1);
    server.restart().expect("restart");
    assert_eq!(server.addr(), addr);
    let (mut s4, mut r4) = connect(&server);
    assert_eq!(ask(&mut s4, &mut r4, "PING"), "PONG");
    assert_eq!(server.accepted(), 4);
}
