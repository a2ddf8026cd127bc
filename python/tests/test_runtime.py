"""Threads, the GIL, Ctrl-C, stats and transactions."""

from __future__ import annotations

import signal
import threading
import time
from typing import List

import pytest

import dialpool
from conftest import active_statements, marker, wait_until


def test_threads_overlap_with_the_gil_released(pg_url: str) -> None:
    with dialpool.Pool(pg_url, max_open=4) as p:
        p.query("SELECT 1")
        start = time.monotonic()
        threads = [threading.Thread(target=p.query, args=("SELECT pg_sleep(0.5)",)) for _ in range(4)]
        for t in threads:
            t.start()
        # The main thread keeps running Python while they wait.
        spins = 0
        while any(t.is_alive() for t in threads):
            spins += 1
        took = time.monotonic() - start
        for t in threads:
            t.join()
        assert took < 1.5, f"4 x pg_sleep(0.5) took {took:.2f}s: not concurrent"
        assert spins > 1000


def test_sixteen_threads_share_one_pool(pg_url: str) -> None:
    errors: List[BaseException] = []
    counts = [0] * 16
    with dialpool.Pool(pg_url, max_open=5, acquire_timeout=10) as p:

        def work(i: int) -> None:
            try:
                for j in range(25):
                    if j % 2:
                        [(v,)] = p.query("SELECT %s::int * 2", (i * 100 + j,))
                        assert v == (i * 100 + j) * 2
                    else:
                        with p.acquire() as c:
                            with c.transaction():
                                assert c.query("SELECT %s", (str(i),)) == [(str(i),)]
                    counts[i] += 1
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert counts == [25] * 16
        s = p.stats()
        assert s["open"] <= 5
        assert s["acquire_count"] >= 16 * 25
        assert s["in_use"] == 0


def _sigint_after(delay: float, sent: List[float]) -> threading.Timer:
    main = threading.main_thread().ident
    assert main is not None

    def fire() -> None:
        sent.append(time.monotonic())
        signal.pthread_kill(main, signal.SIGINT)

    t = threading.Timer(delay, fire)
    t.start()
    return t


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals go to the main thread")
def test_ctrl_c_interrupts_a_query_and_cancels_it(pool: dialpool.Pool) -> None:
    pool.query("SELECT 1")
    mark = marker()
    sent: List[float] = []
    timer = _sigint_after(0.5, sent)
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.query(f"SELECT pg_sleep(10) /* {mark} */")
        raised = time.monotonic()
    finally:
        timer.cancel()
    latency = raised - sent[0]
    assert latency < 0.5, f"KeyboardInterrupt {latency * 1000:.0f} ms after SIGINT"
    # The backend is idle: the statement was cancelled on the server.
    assert wait_until(lambda: not active_statements(pool, mark), 1.0)
    assert pool.query("SELECT 1") == [(1,)]
    assert pool.stats()["in_use"] == 0


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals go to the main thread")
def test_ctrl_c_interrupts_a_pool_wait(pg_url: str) -> None:
    with dialpool.Pool(pg_url, max_open=1, acquire_timeout=0) as p:
        with p.acquire() as held:
            sent: List[float] = []
            timer = _sigint_after(0.3, sent)
            try:
                with pytest.raises(KeyboardInterrupt):
                    p.acquire()
                latency = time.monotonic() - sent[0]
            finally:
                timer.cancel()
            assert latency < 0.5
            assert held.query("SELECT 1") == [(1,)]
        assert p.query("SELECT 1") == [(1,)]


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals go to the main thread")
def test_ctrl_c_on_a_connection_keeps_it_usable(pool: dialpool.Pool) -> None:
    with pool.acquire() as c:
        sent: List[float] = []
        timer = _sigint_after(0.3, sent)
        try:
            with pytest.raises(KeyboardInterrupt):
                c.query("SELECT pg_sleep(10)")
        finally:
            timer.cancel()
        assert c.query("SELECT 3") == [(3,)]


def test_stats(pg_url: str) -> None:
    with dialpool.Pool(pg_url, max_open=3) as p:
        s = p.stats()
        for key in (
            "max_open",
            "open",
            "in_use",
            "idle",
            "waiting",
            "connecting",
            "wait_count",
            "wait_duration_total",
            "acquire_count",
            "acquire_timeouts",
            "acquire_cancelled",
            "connects",
            "connect_failures",
            "closed_max_lifetime",
            "closed_max_idle_time",
            "closed_max_idle",
            "closed_dead",
            "closed_broken",
            "leaks",
            "max_idle_time",
            "server_idle_limit",
        ):
            assert key in s, key
        assert s["max_open"] == 3 and s["open"] == 0 and s["connect_failures"] == {}
        for _ in range(5):
            p.query("SELECT 1")
        with p.acquire():
            s = p.stats()
            assert s["in_use"] == 1
        s = p.stats()
        assert s["acquire_count"] == 6
        assert s["connects"] >= 1 and s["open"] >= 1 and s["in_use"] == 0
        assert isinstance(s["wait_duration_total"], float)


def test_stats_count_connect_failures(pg_url: str) -> None:
    from conftest import refused_port, replace_port

    with dialpool.Pool(replace_port(pg_url, refused_port()), acquire_timeout=0.5) as p:
        with pytest.raises(dialpool.AcquireTimeout):
            p.query("SELECT 1")
        assert p.stats()["connect_failures"].get("DP_CONNECTION_REFUSED", 0) >= 1


def test_transaction_commits_and_rolls_back(pool: dialpool.Pool, table: str) -> None:
    pool.execute(f"CREATE TABLE {table} (id int)")
    with pool.acquire() as c:
        with c.transaction():
            c.execute(f"INSERT INTO {table} VALUES (1)")
            assert c.in_transaction
            assert pool.query(f"SELECT count(*) FROM {table}") == [(0,)]
        assert not c.in_transaction
        assert pool.query(f"SELECT count(*) FROM {table}") == [(1,)]
        with pytest.raises(ZeroDivisionError):
            with c.transaction():
                c.execute(f"INSERT INTO {table} VALUES (2)")
                1 / 0
        assert not c.in_transaction
        assert pool.query(f"SELECT count(*) FROM {table}") == [(1,)]
        # Nested blocks are savepoints.
        with c.transaction():
            c.execute(f"INSERT INTO {table} VALUES (3)")
            with pytest.raises(dialpool.DataError):
                with c.transaction():
                    c.execute(f"INSERT INTO {table} VALUES (4)")
                    c.query("SELECT 1 / 0")
            c.execute(f"INSERT INTO {table} VALUES (5)")
        assert pool.query(f"SELECT id FROM {table} ORDER BY id") == [(1,), (3,), (5,)]


def test_open_transaction_is_rolled_back_on_release(pg_url: str, table: str) -> None:
    with dialpool.Pool(pg_url, max_open=1) as p:
        p.execute(f"CREATE TABLE {table} (id int)")
        with p.acquire() as c:
            c.execute("BEGIN")
            c.execute(f"INSERT INTO {table} VALUES (1)")
        # Same (only) session: its transaction did not survive the release.
        with p.acquire() as c:
            assert not c.in_transaction
            assert c.query(f"SELECT count(*) FROM {table}") == [(0,)]


def test_released_connection_is_closed_for_use(pool: dialpool.Pool) -> None:
    c = pool.acquire()
    c.close()
    assert c.closed
    with pytest.raises(dialpool.InterfaceError, match="closed"):
        c.query("SELECT 1")
    c.close()


def test_discard(pg_url: str) -> None:
    with dialpool.Pool(pg_url, max_open=1) as p:
        with p.acquire() as c:
            [(pid1,)] = c.query("SELECT pg_backend_pid()")
            c.discard()
        [(pid2,)] = p.query("SELECT pg_backend_pid()")
        assert pid1 != pid2
        assert p.stats()["closed_broken"] >= 1
