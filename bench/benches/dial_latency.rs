//! dial_latency: one successful loopback dial, dialpool beside plain tokio.
//!
//! A listener on 127.0.0.1 accepts and drops every connection
//! ([`AcceptAndDrop`]). In one criterion group, on one current-thread tokio
//! runtime driven by criterion's `to_async`:
//!
//! * `dialpool`: `Dialer::connect` with the default options, so the socket
//!   gets TCP_NODELAY, keepalive (idle/interval/count) and TCP_USER_TIMEOUT
//!   before connect, under `connect_timeout`;
//! * `tokio_tcpstream_connect`: `tokio::net::TcpStream::connect(addr)`.
//!
//! Each iteration includes dropping the stream (close), alike for both.
//!
//! A current-thread runtime, because `block_on` then drives the I/O itself:
//! on a multi-thread runtime every iteration adds a cross-thread wake-up
//! whose cost depends on thread placement (bimodal, ~25 or ~90 µs here),
//! which swamps the few µs that separate the two sides. Criterion runs the
//! two functions one after the other; `dial-interleaved` times the same
//! dials alternating, for a ratio that a noisy machine disturbs less.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dialpool_bench::AcceptAndDrop;

fn dial_latency(c: &mut Criterion) {
    let server = AcceptAndDrop::start().expect("listen on 127.0.0.1");
    let addr = server.addr;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config = dialpool::Config::parse(&format!("tcp://{addr}")).expect("url");
    let dialer = dialpool::Dialer::new(&config.dial).expect("dialer");
    let hosts = config.hosts;

    let mut group = c.benchmark_group("dial_latency");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("dialpool", |b| {
        b.to_async(&runtime).iter(|| async {
            dialer
                .connect(&hosts, None)
                .await
                .expect("dialpool connect")
                .stream
        })
    });
    group.bench_function("tokio_tcpstream_connect", |b| {
        b.to_async(&runtime).iter(|| async {
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("tokio connect")
        })
    });
    group.finish();
}

criterion_group!(benches, dial_latency);
criterion_main!(benches);
