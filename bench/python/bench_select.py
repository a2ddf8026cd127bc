"""dialpool against the usual Python drivers, side by side in one run.

    cargo run -q -p dialpool-testkit -- run -- python/.venv/bin/python bench/python/bench_select.py

It needs dialpool installed (bash python/test.sh does that into python/.venv),
plus `psycopg[binary]` and `psycopg_pool` for PostgreSQL, and optionally
`PyMySQL` for MariaDB (pip install 'psycopg[binary]' psycopg_pool PyMySQL).
A driver that is not installed is left out and named. The servers come from
DIALPOOL_TEST_PG_URL and DIALPOOL_TEST_MARIADB_URL, as the test runner
exports them.

What it measures, each case as the median of several rounds:

- SELECT 1, one thread: the per-call latency of a round trip,
  - on a pool: dialpool `pool.query` and psycopg_pool `with pool.connection()`;
  - on one held connection: dialpool `conn.query` and psycopg `conn.execute`.
- SELECT 1 with 8 threads on one pool of 8: the throughput.
- Fetching 100,000 rows of (int, text, numeric) into Python tuples.
- acquire + release of a pooled connection.

The ratio column is the other driver's time over dialpool's: above 1 means
dialpool is faster. The numbers depend on the machine and its load; compare
ratios from the same run only.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from typing import Callable, List, Optional, Tuple

import dialpool

ROWS_SQL_PG = "SELECT g, 'row ' || g, g * 0.5 FROM generate_series(1, {n}) g"
ROWS_SQL_MY = "SELECT seq, CONCAT('row ', seq), seq * 0.5 FROM seq_1_to_{n}"


def per_call(fn: Callable[[], object], n: int, rounds: int) -> float:
    """Median seconds per call over `rounds` rounds of `n` calls."""
    for _ in range(min(n, 200)):
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def throughput(fn: Callable[[], object], threads: int, seconds: float, rounds: int) -> float:
    """Median calls per second with `threads` threads calling `fn`."""
    results = []
    for _ in range(rounds):
        stop = threading.Event()
        counts = [0] * threads

        def work(i: int) -> None:
            c = 0
            while not stop.is_set():
                fn()
                c += 1
            counts[i] = c

        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in ts:
            t.join()
        results.append(sum(counts) / (time.perf_counter() - t0))
    return statistics.median(results)


Row = Tuple[str, str, float, Optional[float], str]


def report(title: str, unit: str, rows: List[Tuple[str, float]], higher_is_better: bool = False) -> None:
    print(f"\n{title}")
    base = rows[0][1]
    for name, value in rows:
        if higher_is_better:
            ratio = base / value
            shown = f"{value:12,.0f} {unit}"
        else:
            ratio = value / base
            shown = f"{value * 1e6:12,.1f} {unit}"
        print(f"  {name:<44} {shown}   x{ratio:5.2f}")


def bench_pg(url: str, args: argparse.Namespace) -> None:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as e:
        print(f"\nPostgreSQL: psycopg or psycopg_pool is not installed ({e}); dialpool only")
        psycopg = None  # type: ignore[assignment]
    n, rounds = args.n, args.rounds

    pool = dialpool.Pool(url, max_open=args.threads)
    held = pool.acquire()
    rows_sql = ROWS_SQL_PG.format(n=args.rows)
    if psycopg is not None:
        ppool = psycopg_pool.ConnectionPool(
            url, min_size=args.threads, max_size=args.threads, kwargs={"autocommit": True}, open=True
        )
        ppool.wait()
        pconn = psycopg.connect(url, autocommit=True)
        impl = f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__}), psycopg_pool {psycopg_pool.__version__}"
    else:
        impl = "none"
    print(f"\nPostgreSQL {held.query('SHOW server_version')[0][0]}; {impl}")

    def d_pool() -> object:
        return pool.query("SELECT 1")

    def d_conn() -> object:
        return held.query("SELECT 1")

    results = [("dialpool pool.query", per_call(d_pool, n, rounds))]
    if psycopg is not None:

        def p_pool() -> object:
            with ppool.connection() as c:
                return c.execute("SELECT 1").fetchall()

        results.append(("psycopg_pool connection()+execute", per_call(p_pool, n, rounds)))
    report("SELECT 1 on a pool, one thread (per call)", "us", results)

    results = [("dialpool conn.query", per_call(d_conn, n, rounds))]
    if psycopg is not None:

        def p_conn() -> object:
            return pconn.execute("SELECT 1").fetchall()

        results.append(("psycopg conn.execute().fetchall()", per_call(p_conn, n, rounds)))
    report("SELECT 1 on one held connection (per call)", "us", results)

    held.close()
    results = [("dialpool pool.query", throughput(d_pool, args.threads, args.seconds, rounds))]
    if psycopg is not None:
        results.append(("psycopg_pool connection()+execute", throughput(p_pool, args.threads, args.seconds, rounds)))
    report(f"SELECT 1 with {args.threads} threads on one pool (throughput)", "calls/s", results, True)

    def d_rows() -> object:
        return pool.query(rows_sql)

    results = [(f"dialpool pool.query ({args.rows:,} rows)", per_call(d_rows, 1, max(rounds, 5)))]
    if psycopg is not None:

        def p_rows() -> object:
            return pconn.execute(rows_sql).fetchall()

        results.append((f"psycopg execute().fetchall() ({args.rows:,} rows)", per_call(p_rows, 1, max(rounds, 5))))
    report(f"Fetching {args.rows:,} rows of (int, text, numeric)", "us", results)

    def d_acq() -> None:
        with pool.acquire():
            pass

    results = [("dialpool with pool.acquire()", per_call(d_acq, n, rounds))]
    if psycopg is not None:

        def p_acq() -> None:
            with ppool.connection():
                pass

        results.append(("psycopg_pool with pool.connection()", per_call(p_acq, n, rounds)))
    report("acquire + release (per call)", "us", results)

    pool.close()
    if psycopg is not None:
        pconn.close()
        ppool.close()


def bench_mariadb(url: str, args: argparse.Namespace) -> None:
    try:
        pool = dialpool.Pool(url, max_open=args.threads)
        pool.query("SELECT 1")
    except dialpool.Error as e:
        print(f"\nMariaDB: skipped, dialpool cannot use it here: {e}")
        return
    try:
        import pymysql
    except ImportError:
        pymysql = None  # type: ignore[assignment]
        print("\nMariaDB: PyMySQL is not installed; dialpool only")
    n, rounds = args.n, args.rounds
    rest = url.split("://", 1)[1]
    userinfo, hostpart = rest.rsplit("@", 1)
    user, password = userinfo.split(":", 1)
    hostport, _, db = hostpart.partition("/")
    host, port = hostport.rsplit(":", 1)
    print(f"\nMariaDB {pool.query('SELECT VERSION()')[0][0]}" + (f"; PyMySQL {pymysql.__version__}" if pymysql else ""))
    held = pool.acquire()
    results = [("dialpool conn.query", per_call(lambda: held.query("SELECT 1"), n, rounds))]
    if pymysql is not None:
        mconn = pymysql.connect(host=host, port=int(port), user=user, password=password, database=db, autocommit=True)
        mcur = mconn.cursor()

        def m_select() -> object:
            mcur.execute("SELECT 1")
            return mcur.fetchall()

        results.append(("PyMySQL cursor.execute().fetchall()", per_call(m_select, n, rounds)))
    report("SELECT 1 on one held connection (per call)", "us", results)
    rows_sql = ROWS_SQL_MY.format(n=args.rows)
    results = [(f"dialpool conn.query ({args.rows:,} rows)", per_call(lambda: held.query(rows_sql), 1, max(rounds, 5)))]
    if pymysql is not None:

        def m_rows() -> object:
            mcur.execute(rows_sql)
            return mcur.fetchall()

        results.append((f"PyMySQL fetchall() ({args.rows:,} rows)", per_call(m_rows, 1, max(rounds, 5))))
    report(f"Fetching {args.rows:,} rows of (int, text, decimal)", "us", results)
    held.close()
    pool.close()
    if pymysql is not None:
        mconn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="calls per round for per-call cases")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of a throughput round")
    args = ap.parse_args()
    print(
        f"dialpool {dialpool.__version__}; Python {platform.python_version()}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}"
    )
    pg = os.environ.get("DIALPOOL_TEST_PG_URL")
    my = os.environ.get("DIALPOOL_TEST_MARIADB_URL")
    if not pg and not my:
        print("no servers: run under the test runner (see the module docstring)", file=sys.stderr)
        return 2
    if pg:
        bench_pg(pg, args)
    if my:
        bench_mariadb(my, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
