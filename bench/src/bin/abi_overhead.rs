//! abi_overhead: what the C ABI adds to an acquire+release, side by side
//! with the Rust API on the same server, in one process.
//!
//! Three sides, each with its own pool of one connection to the same
//! database, alternating batch by batch so that noise hits all three:
//!
//! - `c-abi`: `dp_pool_acquire` + `dp_conn_release`, the exported C
//!   functions called exactly as a C program calls them (NULL ctx);
//! - `rust-blocking`: `dialpool::runtime::block_on(pool.acquire(None))` and
//!   a drop: the blocking facade the C ABI wraps, without the ABI;
//! - `rust-async`: `pool.acquire(None).await` and a drop, a batch inside one
//!   `block_on` of a current-thread tokio runtime (a Rust user's path).
//!
//! Every acquire includes the pool's checkout probe (one recv(MSG_PEEK)
//! syscall) on a real connection; that cost is the same on every side.
//!
//! ```sh
//! cargo build --release -p dialpool-bench --bin abi-overhead
//! cargo run -q -p dialpool-testkit -- run -- \
//!   bash -c 'target/release/abi-overhead "$DIALPOOL_TEST_PG_URL?sslmode=disable"'
//! ```
//!
//! Arguments: `URL`, optional `PAIRS` per batch (default 20000) and
//! `BATCHES` per side (default 15). Prints ns per pair (median and quartiles
//! over batches) and the C ABI's overhead over each Rust side.

use std::ffi::CString;
use std::ptr;
use std::time::Instant;

use dialpool_ffi as ffi;

fn quartiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: abi-overhead URL [PAIRS] [BATCHES]";
    let url = args.first().expect(usage);
    let pairs: usize = args.get(1).map_or(20_000, |s| s.parse().expect(usage));
    let batches: usize = args.get(2).map_or(15, |s| s.parse().expect(usage));
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}max_open=1&min_idle=1");

    // C side.
    let c_url = CString::new(url.clone()).expect("URL without NUL");
    let mut c_pool: *mut ffi::dp_pool = ptr::null_mut();
    let mut err: *mut ffi::dp_error = ptr::null_mut();
    let rc = ffi::dp_pool_open(c_url.as_ptr(), &mut c_pool, &mut err);
    assert!(rc == ffi::dp_code::DP_OK, "dp_pool_open failed");
    let c_pair = || {
        let mut conn: *mut ffi::dp_conn = ptr::null_mut();
        let mut err: *mut ffi::dp_error = ptr::null_mut();
        let rc = ffi::dp_pool_acquire(c_pool, ptr::null(), &mut conn, &mut err);
        assert!(rc == ffi::dp_code::DP_OK, "dp_pool_acquire failed");
        ffi::dp_conn_release(conn);
    };

    // Rust sides.
    let config = || dialpool::Config::parse(&url).expect("valid URL");
    let blocking_pool = dialpool::Pool::open_blocking(config(), None).expect("pool");
    let async_pool = dialpool::Pool::open_blocking(config(), None).expect("pool");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let blocking_pair = || {
        let c = dialpool::runtime::block_on(blocking_pool.acquire(None))
            .expect("runtime")
            .expect("acquire");
        drop(c);
    };

    eprintln!(
        "acquire future: {} bytes",
        std::mem::size_of_val(&blocking_pool.acquire(None))
    );
    // Warm up: connect, fault in code paths.
    for _ in 0..2_000 {
        c_pair();
        blocking_pair();
    }
    rt.block_on(async {
        for _ in 0..2_000 {
            drop(async_pool.acquire(None).await.expect("acquire"));
        }
    });

    let mut c_ns = Vec::new();
    let mut blocking_ns = Vec::new();
    let mut async_ns = Vec::new();
    for round in 0..batches {
        // Rotate which side goes first.
        for k in 0..3 {
            let start = Instant::now();
            match (round + k) % 3 {
                0 => {
                    for _ in 0..pairs {
                        c_pair();
                    }
                    c_ns.push(start.elapsed().as_nanos() as f64 / pairs as f64);
                }
                1 => {
                    for _ in 0..pairs {
                        blocking_pair();
                    }
                    blocking_ns.push(start.elapsed().as_nanos() as f64 / pairs as f64);
                }
                _ => {
                    rt.block_on(async {
                        for _ in 0..pairs {
                            drop(async_pool.acquire(None).await.expect("acquire"));
                        }
                    });
                    async_ns.push(start.elapsed().as_nanos() as f64 / pairs as f64);
                }
            }
        }
    }
    ffi::dp_pool_close(c_pool);

    let (c25, c50, c75) = quartiles(&mut c_ns);
    let (b25, b50, b75) = quartiles(&mut blocking_ns);
    let (a25, a50, a75) = quartiles(&mut async_ns);
    println!("acquire+release, ns per pair ({batches} batches of {pairs}; median [p25, p75])");
    println!("  c-abi          {c50:8.0} [{c25:.0}, {c75:.0}]");
    println!("  rust-blocking  {b50:8.0} [{b25:.0}, {b75:.0}]");
    println!("  rust-async     {a50:8.0} [{a25:.0}, {a75:.0}]");
    println!(
        "C ABI overhead over rust-blocking: {:+.0} ns per pair",
        c50 - b50
    );
    println!(
        "C ABI overhead over rust-async:    {:+.0} ns per pair",
        c50 - a50
    );
}
