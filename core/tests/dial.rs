//! The dial layer against real faults: every dial-layer code comes from the
//! fault that causes it in production, on loopback or in a network namespace
//! the test makes itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use dialpool::config::{Config, HostPort};
use dialpool::{Code, Deadline, Dialer, Error, Layer};
use dialpool_testkit::{fault, netns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The slack the tests allow past a limit: generous, so a loaded machine
/// never flakes; precision is measured by the benchmarks.
const SLACK: Duration = Duration::from_millis(100);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn dialer(url: &str) -> (Dialer, Config) {
    let config = Config::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    (Dialer::new(&config.dial).expect("dialer"), config)
}

fn dial(url: &str, caller: Option<Duration>) -> Result<dialpool::Connected, Error> {
    let (d, config) = dialer(url);
    rt().block_on(async move { d.connect(&config.hosts, caller.map(Deadline::caller)).await })
}

/// Checks the fields every timeout error must have.
fn assert_timeout(e: &Error, code: Code, limit: &str, value: Duration) {
    assert_eq!(e.code(), code, "{e}");
    assert_eq!(e.layer(), Layer::Dial, "{e}");
    assert!(e.is_timeout(), "{e}");
    assert_eq!(e.limit(), Some(limit), "{e}");
    let elapsed = e.elapsed().expect("elapsed");
    assert!(
        elapsed >= value,
        "fired early: {elapsed:?} < {value:?}: {e}"
    );
    assert!(elapsed <= value + SLACK, "fired late: {elapsed:?}: {e}");
    let text = e.to_string();
    assert!(text.starts_with("dial: "), "{text}");
    assert!(text.contains(&format!("({limit}=")), "{text}");
}

#[test]
fn refused_port_gives_connection_refused() {
    let addr = fault::refused_addr();
    let e = dial(&format!("tcp://{addr}"), None).expect_err("nobody listens");
    assert_eq!(e.code(), Code::ConnectionRefused, "{e}");
    assert_eq!(e.layer(), Layer::Dial);
    assert!(!e.is_timeout());
    assert!(e.is_retryable());
    assert_eq!(e.limit(), None);
    assert_eq!(e.os_error(), Some(libc::ECONNREFUSED));
    assert_eq!(e.peer(), Some(addr.to_string().as_str()));
    assert!(e.elapsed().expect("elapsed") < SLACK, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("refused") && text.contains("ECONNREFUSED"),
        "{text}"
    );
    assert!(
        std::error::Error::source(&e).is_some(),
        "OS error kept as source"
    );
}

#[test]
fn syn_black_hole_gives_connect_timeout() {
    let hole = fault::SynBlackHole::new().expect("black hole");
    let e = dial(&format!("tcp://{}?connect_timeout=300ms", hole.addr), None)
        .expect_err("SYNs are dropped");
    assert_timeout(
        &e,
        Code::ConnectTimeout,
        "connect_timeout",
        Duration::from_millis(300),
    );
    assert!(e.is_retryable());
    assert!(e.to_string().contains("no answer to SYN"), "{e}");
    let phases = e.phases().expect("phases kept");
    assert_eq!(phases.dns, None, "an IP literal needs no DNS");
    assert!(phases.connect.expect("connect phase") >= Duration::from_millis(300));
}

#[test]
fn caller_deadline_shorter_than_connect_timeout_is_named() {
    let hole = fault::SynBlackHole::new().expect("black hole");
    let e = dial(
        &format!("tcp://{}?connect_timeout=5s", hole.addr),
        Some(Duration::from_millis(200)),
    )
    .expect_err("SYNs are dropped");
    assert_timeout(
        &e,
        Code::ConnectTimeout,
        "deadline",
        Duration::from_millis(200),
    );
}

#[test]
fn black_hole_in_namespace_gives_connect_timeout() {
    if !netns::enter(
        "black_hole_in_namespace_gives_connect_timeout",
        netns::NetnsSpec::default(),
    ) {
        return;
    }
    // Inside the namespace: a real listener, and a DROP rule in front of it.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    netns::drop_tcp_port(port).expect("iptables DROP");
    let e = dial(
        &format!("tcp://127.0.0.1:{port}?connect_timeout=300ms"),
        None,
    )
    .expect_err("dropped");
    assert_timeout(
        &e,
        Code::ConnectTimeout,
        "connect_timeout",
        Duration::from_millis(300),
    );
}

#[test]
fn black_hole_on_established_connection_is_cut_by_tcp_user_timeout() {
    if !netns::enter(
        "black_hole_on_established_connection_is_cut_by_tcp_user_timeout",
        netns::NetnsSpec::default(),
    ) {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        std::thread::sleep(Duration::from_secs(5));
    });
    let (d, config) = dialer(&format!(
        "tcp://127.0.0.1:{port}?tcp_user_timeout=1s&keepalive_idle=1s&keepalive_interval=1s&keepalive_count=2"
    ));
    rt().block_on(async move {
        let mut c = d.connect(&config.hosts, None).await.expect("connect");
        c.stream.write_all(b"hello").await.expect("first write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        netns::drop_tcp_port(port).expect("iptables DROP");
        let start = Instant::now();
        c.stream
            .write_all(b"lost in the hole")
            .await
            .expect("buffered");
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(10), c.stream.read(&mut buf))
            .await
            .expect("the kernel must give up well before 10s");
        let io = read.expect_err("no data can arrive");
        let elapsed = start.elapsed();
        assert_eq!(io.raw_os_error(), Some(libc::ETIMEDOUT), "{io}");
        let class = dialpool::error::classify_io(&io, true);
        assert_eq!(class.code, Code::ConnectionLost);
        assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
        assert!(elapsed <= Duration::from_secs(4), "{elapsed:?}");
    });
    drop(server);
}

#[test]
fn loopback_down_gives_network_unreachable() {
    if !netns::enter(
        "loopback_down_gives_network_unreachable",
        netns::NetnsSpec {
            loopback_up: false,
            ..Default::default()
        },
    ) {
        return;
    }
    let e = dial("tcp://127.0.0.1:5432", None).expect_err("no route");
    assert_eq!(e.code(), Code::NetworkUnreachable, "{e}");
    assert_eq!(e.layer(), Layer::Dial);
    assert!(!e.is_timeout());
    assert_eq!(e.os_error(), Some(libc::ENETUNREACH));
    assert!(e.to_string().contains("ENETUNREACH"), "{e}");
}

#[test]
fn silent_resolver_gives_dns_timeout() {
    if !netns::enter(
        "silent_resolver_gives_dns_timeout",
        netns::NetnsSpec {
            resolver: netns::Resolver::Silent,
            ..Default::default()
        },
    ) {
        return;
    }
    let e = dial("postgres://db.example.test:5432/x?dns_timeout=300ms", None)
        .expect_err("resolver never answers");
    assert_timeout(
        &e,
        Code::DnsTimeout,
        "dns_timeout",
        Duration::from_millis(300),
    );
    assert_eq!(e.peer(), Some("db.example.test:5432"));
    assert!(e.phases().and_then(|p| p.dns).is_some());
    let e = dial(
        "postgres://db.example.test:5432/x?dns_timeout=5s",
        Some(Duration::from_millis(200)),
    )
    .expect_err("resolver never answers");
    assert_timeout(&e, Code::DnsTimeout, "deadline", Duration::from_millis(200));
}

#[test]
fn nxdomain_gives_dns_error() {
    if !netns::enter(
        "nxdomain_gives_dns_error",
        netns::NetnsSpec {
            resolver: netns::Resolver::NxDomain,
            ..Default::default()
        },
    ) {
        return;
    }
    let e =
        dial("postgres://no-such-db.example.test/x?dns_timeout=3s", None).expect_err("NXDOMAIN");
    assert_eq!(e.code(), Code::DnsError, "{e}");
    assert_eq!(e.layer(), Layer::Dial);
    assert!(!e.is_timeout());
    assert!(
        !e.is_retryable(),
        "a name that does not exist will not appear on retry"
    );
    assert_eq!(e.limit(), None);
    assert!(e.elapsed().expect("elapsed") < Duration::from_secs(3));
    assert!(e.to_string().contains("EAI_NONAME"), "{e}");
}

#[test]
fn silent_peer_gives_tls_timeout() {
    let peer = fault::SilentPeer::new().expect("silent peer");
    let (d, config) = dialer(&format!(
        "tcp://{}?sslmode=require&tls_timeout=300ms",
        peer.addr
    ));
    let e = rt().block_on(async move {
        let c = d.connect(&config.hosts, None).await.expect("TCP works");
        let peer = c.peer.to_string();
        d.upgrade_tls(c.stream, "localhost", &peer, None)
            .await
            .map(|_| ())
            .expect_err("no ServerHello ever")
    });
    assert_eq!(e.code(), Code::TlsTimeout, "{e}");
    assert_eq!(e.layer(), Layer::Dial);
    assert!(e.is_timeout());
    assert_eq!(e.limit(), Some("tls_timeout"));
    let elapsed = e.elapsed().expect("elapsed");
    assert!(elapsed >= Duration::from_millis(300) && elapsed <= Duration::from_millis(300) + SLACK);
}

/// Dials the shared PostgreSQL, asks for TLS in-band (SSLRequest) and
/// upgrades with the URL's TLS settings, connecting by `host`.
fn pg_tls(host: &str, extra: &str) -> Result<(), Error> {
    let pg = dialpool_testkit::shared_pg().expect("PostgreSQL");
    let ca = pg.ca_file.clone().expect("the shared server has TLS");
    let url = format!(
        "postgres://{host}:{}/x?sslrootcert={}&{extra}",
        pg.port,
        ca.display()
    );
    let (d, config) = dialer(&url);
    let host = host.to_string();
    rt().block_on(async move {
        let mut c = d.connect(&config.hosts, None).await?;
        // SSLRequest: length 8, code 80877103.
        c.stream
            .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .expect("write SSLRequest");
        let mut answer = [0u8; 1];
        c.stream.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"S", "the test server has ssl=on");
        let peer = c.peer.to_string();
        let (tls, took) = d.upgrade_tls(c.stream, &host, &peer, None).await?;
        assert!(took < Duration::from_secs(5));
        let (_, session) = tls.get_ref();
        assert!(session.peer_certificates().is_some());
        Ok(())
    })
}

#[test]
fn tls_verify_full_with_the_right_name_succeeds() {
    pg_tls("localhost", "sslmode=verify-full").expect("CA and name match");
}

#[test]
fn tls_verify_full_with_the_wrong_name_is_tls_error() {
    let e = pg_tls("127.0.0.1", "sslmode=verify-full").expect_err("cert names localhost only");
    assert_eq!(e.code(), Code::TlsError, "{e}");
    assert_eq!(e.layer(), Layer::Dial);
    assert!(!e.is_timeout());
    assert!(!e.is_retryable());
    let text = e.to_string();
    assert!(
        text.contains("not valid for name") && text.contains("verify-ca"),
        "{text}"
    );
}

#[test]
fn tls_verify_ca_ignores_the_name_but_not_the_chain() {
    pg_tls("127.0.0.1", "sslmode=verify-ca").expect("chain is trusted");
    // A CA that did not sign the server's certificate.
    let other = dialpool_testkit::tls::generate(&["localhost"]).expect("certs");
    let dir = std::env::temp_dir().join(format!("dialpool-other-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &other.ca_pem).expect("write CA");
    let pg = dialpool_testkit::shared_pg().expect("PostgreSQL");
    let url = format!(
        "postgres://localhost:{}/x?sslmode=verify-ca&sslrootcert={}",
        pg.port,
        ca.display()
    );
    let (d, config) = dialer(&url);
    let e = rt().block_on(async move {
        let mut c = d.connect(&config.hosts, None).await.expect("TCP");
        c.stream
            .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .expect("SSLRequest");
        let mut answer = [0u8; 1];
        c.stream.read_exact(&mut answer).await.expect("answer");
        let peer = c.peer.to_string();
        d.upgrade_tls(c.stream, "localhost", &peer, None)
            .await
            .map(|_| ())
            .expect_err("untrusted")
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(e.code(), Code::TlsError, "{e}");
    // Same subject as the real CA, so webpki finds it and the signature
    // fails; a CA with another subject gives UnknownIssuer. Both say why.
    let text = e.to_string();
    assert!(
        text.contains("UnknownIssuer") || text.contains("BadSignature"),
        "{text}"
    );
    assert!(text.contains("sslrootcert"), "{text}");
}

#[test]
fn bad_certificate_path_is_reported_when_the_dialer_is_built() {
    let config =
        Config::parse("postgres://h/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
            .expect("parses");
    let e = Dialer::new(&config.dial).expect_err("missing file");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

#[test]
fn socket_options_are_set_before_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    let (d, config) = dialer(&format!(
        "tcp://{addr}?keepalive_idle=7s&keepalive_interval=3s&keepalive_count=4&tcp_user_timeout=12s&syn_retries=2"
    ));
    rt().block_on(async move {
        let c = d.connect(&config.hosts, None).await.expect("connect");
        let s = dialpool::dial::sock_ref(&c.stream);
        assert!(s.tcp_nodelay().expect("nodelay"));
        assert!(s.keepalive().expect("keepalive"));
        assert_eq!(
            s.tcp_keepalive_time().expect("idle"),
            Duration::from_secs(7)
        );
        assert_eq!(
            s.tcp_keepalive_interval().expect("intvl"),
            Duration::from_secs(3)
        );
        assert_eq!(s.tcp_keepalive_retries().expect("cnt"), 4);
        assert_eq!(
            s.tcp_user_timeout().expect("uto"),
            Some(Duration::from_secs(12))
        );
        assert_eq!(dialpool::dial::syn_retries(&c.stream).expect("syncnt"), 2);
        assert!(c.timings.connect.is_some());
        assert_eq!(c.timings.dns, None);
    });
    // keepalive_idle=0 turns keepalive off; the defaults set TCP_USER_TIMEOUT.
    let (d, config) = dialer(&format!("tcp://{addr}?keepalive_idle=0"));
    rt().block_on(async move {
        let c = d.connect(&config.hosts, None).await.expect("connect");
        let s = dialpool::dial::sock_ref(&c.stream);
        assert!(!s.keepalive().expect("keepalive"));
        assert_eq!(
            s.tcp_user_timeout().expect("uto"),
            Some(Duration::from_secs(30))
        );
    });
}

#[test]
fn hosts_are_tried_in_order() {
    let refused = fault::refused_addr();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let good = listener.local_addr().expect("addr");
    let c = dial(&format!("tcp://{refused},{good}"), None).expect("second host answers");
    assert_eq!(c.peer, good);
    assert_eq!(
        c.host,
        HostPort {
            host: "127.0.0.1".into(),
            port: good.port()
        }
    );

    let refused2 = fault::refused_addr();
    let e = dial(&format!("tcp://{refused},{refused2}"), None).expect_err("both refuse");
    assert_eq!(e.code(), Code::ConnectionRefused);
    assert!(e.to_string().contains("earlier hosts failed too"), "{e}");
}

#[test]
fn localhost_resolves_and_both_families_are_tried() {
    // Listen on IPv4 only: "localhost" may resolve to ::1 first, which
    // refuses, and Happy Eyeballs moves on to 127.0.0.1 at once.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let start = Instant::now();
    let c = dial(&format!("postgres://localhost:{port}/x"), None).expect("reaches 127.0.0.1");
    assert_eq!(c.peer, SocketAddr::from(([127, 0, 0, 1], port)));
    assert!(c.timings.dns.is_some());
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn blocking_facade_dials() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    let config = Config::parse(&format!("tcp://{addr}")).expect("url");
    let d = Dialer::new(&config.dial).expect("dialer");
    let c = dialpool::runtime::block_on(async move { d.connect(&config.hosts, None).await })
        .expect("runtime")
        .expect("connect");
    let mut std = c.stream.into_std().expect("std");
    std.set_nonblocking(false).expect("blocking");
    std.write_all(b"x").expect("write");
}
