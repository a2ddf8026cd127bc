//! Proves the network-namespace fixtures: each test re-runs itself inside a
//! fresh namespace (root only; skipped otherwise unless
//! DIALPOOL_REQUIRE_FAULTS=1).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dialpool_testkit::netns::{self, NetnsSpec, Resolver};

#[test]
fn loopback_down_gives_enetunreach() {
    let spec = NetnsSpec {
        loopback_up: false,
        resolver: Resolver::System,
    };
    if !netns::enter("loopback_down_gives_enetunreach", spec) {
        return;
    }
    let err =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, 5432).into(), Duration::from_secs(2))
            .expect_err("connected with loopback down");
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
}

#[test]
fn iptables_drop_black_holes_a_listening_port() {
    if !netns::enter(
        "iptables_drop_black_holes_a_listening_port",
        NetnsSpec::default(),
    ) {
        return;
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Before the rule: connects, and data flows.
    let mut established =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    let (mut server_side, _) = listener.accept().expect("accept");
    server_side
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");

    netns::drop_tcp_port(addr.port()).expect("drop_tcp_port");

    // New connections hang.
    let err = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).expect_err("connected");
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    // Established connections go silent: what the client sends never arrives.
    established.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    let err = server_side.read(&mut buf).expect_err("data got through");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );

    // And the hole can be lifted again.
    netns::undrop_tcp_port(addr.port()).expect("undrop_tcp_port");
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect after undrop");
}

#[test]
fn nxdomain_resolver_fails_fast() {
    let spec = NetnsSpec {
        loopback_up: true,
        resolver: Resolver::NxDomain,
    };
    if !netns::enter("nxdomain_resolver_fails_fast", spec) {
        return;
    }
    let started = Instant::now();
    let err = ("db.example.test", 5432)
        .to_socket_addrs()
        .expect_err("name resolved");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}: {err}");
    assert!(err.to_string().contains("not known"), "{err}");
}

#[test]
fn silent_resolver_hangs() {
    let spec = NetnsSpec {
        loopback_up: true,
        resolver: Resolver::Silent,
    };
    if !netns::enter("silent_resolver_hangs", spec) {
        return;
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(("db.example.test", 5432).to_socket_addrs().map(|_| ()));
    });
    // Not joined: the process exits after this test, taking the thread along.
    match rx.recv_timeout(Duration::from_millis(500)) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("lookup returned within 500 ms: {other:?}"),
    }
}

#[test]
fn firewall_refuses_outside_a_namespace() {
    if netns::inside() {
        return;
    }
    let err = netns::drop_tcp_port(1).expect_err("changed the host firewall");
    assert!(err.contains("inside netns::enter"), "{err}");
}

mod nested {
    use super::*;

    /// The libtest name here is `nested::enter_works_in_a_module`: `enter`
    /// must find it from the thread name so the inner run matches one test.
    #[test]
    fn enter_works_in_a_module() {
        let spec = NetnsSpec {
            loopback_up: false,
            resolver: Resolver::System,
        };
        if !netns::enter("enter_works_in_a_module", spec) {
            return;
        }
        assert_eq!(
            std::env::var(netns::ENV_INNER).as_deref(),
            Ok("nested::enter_works_in_a_module")
        );
    }
}
