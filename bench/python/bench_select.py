"""dialpool against the usual Python drivers, side by side in one run.

    cargo run -q -p dialpool-testkit -- run -- python/.venv/bin/python bench/python/bench_select.py

It needs dialpool installed (bash python/test.sh does that into python/.venv)
and, for the other side, any of:

    pip install 'psycopg[binary]' psycopg_pool asyncpg PyMySQL mysqlclient

(mysqlclient builds against libmariadb: `apt-get install libmariadb-dev
pkg-config` first). A driver that is not installed is left out and named.
The servers come from DIALPOOL_TEST_PG_URL and DIALPOOL_TEST_MARIADB_URL, as
the test runner exports them.

What it measures, each case as the median of several rounds:

- SELECT 1, one thread: the per-call latency of a round trip,
  - on a pool: dialpool `pool.query` and psycopg_pool `with pool.connection()`;
  - on one held connection: dialpool `conn.query`, psycopg `conn.execute`,
    PyMySQL and mysqlclient `cursor.execute` + `fetchall`.
- SELECT 1 with 8 threads: the throughput of one pool of 8 (dialpool,
  psycopg_pool); PyMySQL and mysqlclient have no pool, so each thread has a
  connection of its own.
- Fetching 100,000 rows of (int, text, numeric) into Python tuples.
- acquire + release of a pooled connection.

asyncpg is the async reference point (PostgreSQL only), timed inside its
event loop: `await conn.fetch("SELECT 1")` on one connection, 8 tasks on an
asyncpg pool of 8 (`await pool.fetch`), and the 100,000-row fetch (asyncpg
returns Record objects rather than tuples, and uses the binary protocol).

The ratio column is the other driver's time over dialpool's: above 1 means
dialpool is faster. The drivers take turns within each round (blocks of
100 calls; throughput rounds alternate), so load from elsewhere falls on
all of them alike. The one-thread cases also show the CPU time of the
calling thread per call (every driver here does its I/O and conversions on
that thread): steadier than wall time on a shared machine. The numbers
depend on the machine and its load; compare ratios from the same run only.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import platform
import statistics
import sys
import threading
import time
from typing import Awaitable, Callable, List, Optional, Tuple

import dialpool

ROWS_SQL_PG = "SELECT g, 'row ' || g, g * 0.5 FROM generate_series(1, {n}) g"
ROWS_SQL_MY = "SELECT seq, CONCAT('row ', seq), seq * 0.5 FROM seq_1_to_{n}"


Timed = Tuple[str, float, Optional[float]]
#: Calls per turn when the one-thread cases take turns (see compare()).
BLOCK = 100


def compare(cases: List[Tuple[str, Callable[[], object]]], n: int, rounds: int) -> List[Timed]:
    """(name, median seconds per call, median CPU seconds per call) for each
    case over `rounds` rounds of `n` calls. Within a round the cases take
    turns in blocks of up to BLOCK calls, so a burst of load from elsewhere
    on the machine (on this shared 2-core machine such bursts last a few
    hundred ms and slow everything 2-5x) falls on all the drivers alike
    rather than on whichever ran then. The CPU time is the calling
    thread's (time.thread_time): every driver here does its socket I/O
    and its conversions on the calling thread, so it is the driver's own
    cost, steadier than wall time on a loaded machine."""
    for _, fn in cases:
        for _ in range(min(n, 200)):
            fn()
    walls: List[List[float]] = [[] for _ in cases]
    cpus: List[List[float]] = [[] for _ in cases]
    for _ in range(rounds):
        wall = [0.0] * len(cases)
        cpu = [0.0] * len(cases)
        done = 0
        while done < n:
            block = min(BLOCK, n - done)
            for i, (_, fn) in enumerate(cases):
                c0 = time.thread_time()
                t0 = time.perf_counter()
                for _ in range(block):
                    fn()
                wall[i] += time.perf_counter() - t0
                cpu[i] += time.thread_time() - c0
            done += block
        for i in range(len(cases)):
            walls[i].append(wall[i] / n)
            cpus[i].append(cpu[i] / n)
    return [
        (name, statistics.median(w), statistics.median(c)) for (name, _), w, c in zip(cases, walls, cpus)
    ]


def compare_throughput(cases: List[Tuple[str, List[Callable[[], object]]]], seconds: float, rounds: int) -> List[Timed]:
    """(name, median calls per second, None) for each case, a thread per
    function of the case; rounds interleaved as in compare()."""
    results: List[List[float]] = [[] for _ in cases]
    for _ in range(rounds):
        for i, (_, fns) in enumerate(cases):
            results[i].append(throughput_round(fns, seconds))
    return [(name, statistics.median(r), None) for (name, _), r in zip(cases, results)]


def throughput_round(fns: List[Callable[[], object]], seconds: float) -> float:
    """Calls per second over one round of `seconds`, thread i calling fns[i]."""
    threads = len(fns)
    stop = threading.Event()
    counts = [0] * threads

    def work(i: int) -> None:
        fn = fns[i]
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
    return sum(counts) / (time.perf_counter() - t0)


Row = Tuple[str, str, float, Optional[float], str]


def dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


async def a_per_call(fn: Callable[[], Awaitable[object]], n: int, rounds: int) -> Tuple[float, float]:
    """compare() for one coroutine function, inside the running event loop:
    (median seconds per call, median CPU seconds per call)."""
    for _ in range(min(n, 200)):
        await fn()
    walls, cpus = [], []
    for _ in range(rounds):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        for _ in range(n):
            await fn()
        walls.append((time.perf_counter() - t0) / n)
        cpus.append((time.thread_time() - c0) / n)
    return statistics.median(walls), statistics.median(cpus)


async def a_throughput(fn: Callable[[int], Awaitable[object]], tasks: int, seconds: float, rounds: int) -> float:
    """Median calls per second with `tasks` tasks, task i awaiting fn(i) in
    a loop."""
    results = []
    for _ in range(rounds):
        stop = False
        counts = [0] * tasks

        async def work(i: int) -> None:
            c = 0
            while not stop:
                await fn(i)
                c += 1
            counts[i] = c

        t0 = time.perf_counter()
        running = [asyncio.ensure_future(work(i)) for i in range(tasks)]
        await asyncio.sleep(seconds)
        stop = True
        await asyncio.gather(*running)
        results.append(sum(counts) / (time.perf_counter() - t0))
    return statistics.median(results)


class AsyncpgBench:
    """asyncpg's figures for one run: measured in its own event loop, then
    added to the tables beside the threaded drivers."""

    def __init__(self, url: str, args: argparse.Namespace, rows_sql: str) -> None:
        self.ok = False
        self.version = ""
        self.threads = self.threads_held = 0.0
        self.select1 = self.rows = (0.0, 0.0)
        try:
            import asyncpg
        except ImportError as e:
            print(f"\nPostgreSQL: asyncpg is not installed ({e}); left out")
            return
        self.version = asyncpg.__version__

        async def run() -> None:
            conn = await asyncpg.connect(url)
            pool = await asyncpg.create_pool(url, min_size=args.threads, max_size=args.threads)
            try:

                async def select1() -> object:
                    return await conn.fetch("SELECT 1")

                async def pooled(_task: int) -> object:
                    return await pool.fetch("SELECT 1")

                async def rows() -> object:
                    return await conn.fetch(rows_sql)

                # Each task holding one pooled connection: the driver's
                # round trip without the pool's reset on release.
                held = [await pool.acquire() for _ in range(args.threads)]

                async def on_held(task: int) -> object:
                    return await held[task].fetch("SELECT 1")

                self.select1 = await a_per_call(select1, args.n, args.rounds)
                self.threads_held = await a_throughput(on_held, args.threads, args.seconds, args.rounds)
                for c in held:
                    await pool.release(c)
                self.threads = await a_throughput(pooled, args.threads, args.seconds, args.rounds)
                self.rows = await a_per_call(rows, 1, max(args.rounds, 5))
            finally:
                await pool.close()
                await conn.close()

        asyncio.run(run())
        self.ok = True


def report(title: str, unit: str, rows: List[Timed], higher_is_better: bool = False) -> None:
    """Prints one case: the first row is dialpool, the ratio column is the
    other driver's time over dialpool's (or dialpool's throughput over the
    other's): above 1 means dialpool is faster."""
    print(f"\n{title}")
    base = rows[0][1]
    for name, value, cpu in rows:
        if higher_is_better:
            ratio = base / value
            shown = f"{value:12,.0f} {unit}"
        else:
            ratio = value / base
            shown = f"{value * 1e6:12,.1f} {unit}"
        cpu_shown = f"   cpu {cpu * 1e6:10,.1f} {unit}" if cpu is not None else ""
        print(f"  {name:<44} {shown}   x{ratio:5.2f}{cpu_shown}")


def bench_pg(url: str, args: argparse.Namespace) -> None:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as e:
        print(f"\nPostgreSQL: psycopg or psycopg_pool is not installed ({e}); dialpool only")
        psycopg = None  # type: ignore[assignment]
    n, rounds = args.n, args.rounds

    rows_sql = ROWS_SQL_PG.format(n=args.rows)
    # First, while no other driver holds connections: asyncio's own run.
    apg = AsyncpgBench(url, args, rows_sql)
    pool = dialpool.Pool(url, max_open=args.threads)
    held = pool.acquire()
    if psycopg is not None:
        ppool = psycopg_pool.ConnectionPool(
            url, min_size=args.threads, max_size=args.threads, kwargs={"autocommit": True}, open=True
        )
        ppool.wait()
        pconn = psycopg.connect(url, autocommit=True)
        impl = f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__}), psycopg_pool {psycopg_pool.__version__}"
    else:
        impl = "none"
    if apg.ok:
        impl += f", asyncpg {apg.version}"
    print(f"\nPostgreSQL {held.query('SHOW server_version')[0][0]}; {impl}")

    def d_pool() -> object:
        return pool.query("SELECT 1")

    def d_conn() -> object:
        return held.query("SELECT 1")

    def p_pool() -> object:
        with ppool.connection() as c:
            return c.execute("SELECT 1").fetchall()

    def p_conn() -> object:
        return pconn.execute("SELECT 1").fetchall()

    cases = [("dialpool pool.query", d_pool)]
    if psycopg is not None:
        cases.append(("psycopg_pool connection()+execute", p_pool))
    report("SELECT 1 on a pool, one thread (per call)", "us", compare(cases, n, rounds))

    cases = [("dialpool conn.query", d_conn)]
    if psycopg is not None:
        cases.append(("psycopg conn.execute().fetchall()", p_conn))
    results = compare(cases, n, rounds)
    if apg.ok:
        results.append(("asyncpg await conn.fetch() (async)", *apg.select1))
    report("SELECT 1 on one held connection (per call)", "us", results)

    held.close()
    tcases = [("dialpool pool.query", [d_pool] * args.threads)]
    if psycopg is not None:
        tcases.append(("psycopg_pool connection()+execute", [p_pool] * args.threads))
    results = compare_throughput(tcases, args.seconds, rounds)
    if apg.ok:
        results.append((f"asyncpg pool.fetch() ({args.threads} tasks, async)", apg.threads, None))
        results.append((f"asyncpg conn.fetch(), {args.threads} tasks, a conn each", apg.threads_held, None))
    report(f"SELECT 1 with {args.threads} threads on one pool (throughput)", "calls/s", results, True)

    def d_rows() -> object:
        return pool.query(rows_sql)

    def p_rows() -> object:
        return pconn.execute(rows_sql).fetchall()

    cases = [(f"dialpool pool.query ({args.rows:,} rows)", d_rows)]
    if psycopg is not None:
        cases.append((f"psycopg execute().fetchall() ({args.rows:,} rows)", p_rows))
    results = compare(cases, 1, max(rounds, 5))
    if apg.ok:
        results.append((f"asyncpg conn.fetch() ({args.rows:,} rows, async)", *apg.rows))
    report(f"Fetching {args.rows:,} rows of (int, text, numeric)", "us", results)

    def d_acq() -> None:
        with pool.acquire():
            pass

    def p_acq() -> None:
        with ppool.connection():
            pass

    cases = [("dialpool with pool.acquire()", d_acq)]
    if psycopg is not None:
        cases.append(("psycopg_pool with pool.connection()", p_acq))
    report("acquire + release (per call)", "us", compare(cases, n, rounds))

    pool.close()
    if psycopg is not None:
        pconn.close()
        ppool.close()


def mysql_drivers(url: str) -> List[Tuple[str, Callable[[], object]]]:
    """(label, connect) for each installed blocking MySQL driver; each
    connect() opens an autocommit connection to `url`."""
    rest = url.split("://", 1)[1]
    userinfo, hostpart = rest.rsplit("@", 1)
    user, password = userinfo.split(":", 1)
    hostport, _, db = hostpart.partition("/")
    db = db.split("?", 1)[0]
    host, port = hostport.rsplit(":", 1)
    drivers: List[Tuple[str, Callable[[], object]]] = []
    try:
        import pymysql

        def pymysql_connect() -> object:
            return pymysql.connect(
                host=host, port=int(port), user=user, password=password, database=db, autocommit=True
            )

        # pymysql.__version__ is a MySQLdb-compatible stand-in: ask pip's metadata.
        drivers.append((f"PyMySQL {dist_version('PyMySQL')}", pymysql_connect))
    except ImportError as e:
        print(f"\nMariaDB: PyMySQL is not installed ({e}); left out")
    try:
        import MySQLdb

        def mysqlclient_connect() -> object:
            return MySQLdb.connect(
                host=host, port=int(port), user=user, password=password, database=db, autocommit=True
            )

        drivers.append((f"mysqlclient {dist_version('mysqlclient')}", mysqlclient_connect))
    except ImportError as e:
        print(f"\nMariaDB: mysqlclient (MySQLdb) is not installed ({e}); left out")
    return drivers


def bench_mariadb(url: str, args: argparse.Namespace) -> None:
    try:
        pool = dialpool.Pool(url, max_open=args.threads)
        pool.query("SELECT 1")
    except dialpool.Error as e:
        print(f"\nMariaDB: skipped, dialpool cannot use it here: {e}")
        return
    n, rounds = args.n, args.rounds
    drivers = mysql_drivers(url)
    names = ", ".join(label for label, _ in drivers) or "no other driver"
    print(f"\nMariaDB {pool.query('SELECT VERSION()')[0][0]}; {names}")

    def fetch(cursor: object, sql: str) -> Callable[[], object]:
        def run() -> object:
            cursor.execute(sql)  # type: ignore[attr-defined]
            return cursor.fetchall()  # type: ignore[attr-defined]

        return run

    # One held connection (and cursor) per driver for the one-thread cases.
    conns = [(label.split()[0], connect()) for label, connect in drivers]
    cursors = [(name, c.cursor()) for name, c in conns]  # type: ignore[attr-defined]
    held = pool.acquire()
    cases: List[Tuple[str, Callable[[], object]]] = [("dialpool conn.query", lambda: held.query("SELECT 1"))]
    for name, cur in cursors:
        cases.append((f"{name} cursor.execute().fetchall()", fetch(cur, "SELECT 1")))
    report("SELECT 1 on one held connection (per call)", "us", compare(cases, n, rounds))

    results = compare([("dialpool pool.query", lambda: pool.query("SELECT 1"))], n, rounds)
    report("SELECT 1 on a pool, one thread (per call; the others have no pool)", "us", results)

    rows_sql = ROWS_SQL_MY.format(n=args.rows)
    cases = [(f"dialpool conn.query ({args.rows:,} rows)", lambda: held.query(rows_sql))]
    for name, cur in cursors:
        cases.append((f"{name} fetchall() ({args.rows:,} rows)", fetch(cur, rows_sql)))
    report(f"Fetching {args.rows:,} rows of (int, text, decimal)", "us", compare(cases, 1, max(rounds, 5)))
    held.close()

    def d_pool() -> object:
        return pool.query("SELECT 1")

    own: List[object] = []
    tcases: List[Tuple[str, List[Callable[[], object]]]] = [("dialpool pool.query", [d_pool] * args.threads)]
    for label, connect in drivers:
        mine = [connect() for _ in range(args.threads)]
        own.extend(mine)
        fns = [fetch(c.cursor(), "SELECT 1") for c in mine]  # type: ignore[attr-defined]
        tcases.append((f"{label.split()[0]}, a connection per thread", fns))
    results = compare_throughput(tcases, args.seconds, rounds)
    report(f"SELECT 1 with {args.threads} threads (throughput)", "calls/s", results, True)
    for c in own:
        c.close()  # type: ignore[attr-defined]

    pool.close()
    for _, c in conns:
        c.close()  # type: ignore[attr-defined]


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
