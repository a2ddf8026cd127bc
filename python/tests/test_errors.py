"""Every exception class from its real fault, with its attributes."""

from __future__ import annotations

import os
import time

import pytest

import dialpool
from conftest import (
    FullBacklog,
    SilentServer,
    active_statements,
    check_error,
    marker,
    refused_port,
    replace_host,
    replace_password,
    replace_port,
    wait_until,
    with_options,
)


def test_query_timeout_cancels_on_the_server(pool: dialpool.Pool) -> None:
    mark = marker()
    start = time.monotonic()
    with pytest.raises(dialpool.QueryTimeout) as info:
        pool.query(f"SELECT pg_sleep(5) /* {mark} */", timeout=1)
    took = time.monotonic() - start
    assert 0.9 < took < 2.0, took
    e = info.value
    assert isinstance(e, TimeoutError)
    check_error(
        e, dialpool.QueryTimeout, "DP_QUERY_TIMEOUT", "query", limit="deadline", sqlstate="57014", elapsed=(0.9, 2.0)
    )
    assert e.is_timeout and not e.is_retryable
    # The statement is stopped on the server, not left running.
    assert wait_until(lambda: not active_statements(pool, mark), 1.0)
    assert pool.query("SELECT 1") == [(1,)]


def test_query_timeout_option_names_its_limit(pg_url: str) -> None:
    with dialpool.Pool(pg_url, query_timeout=0.3) as p:
        with pytest.raises(TimeoutError) as info:
            p.query("SELECT pg_sleep(3)")
        assert isinstance(info.value, dialpool.QueryTimeout)
        assert info.value.limit == "query_timeout"
        assert "query_timeout=300ms" in str(info.value)


def test_timeout_on_a_connection(pool: dialpool.Pool) -> None:
    with pool.acquire() as c:
        with pytest.raises(dialpool.QueryTimeout):
            c.query("SELECT pg_sleep(3)", timeout=0.2)
        # The session came back clean and is usable.
        assert c.query("SELECT 2") == [(2,)]


def test_acquire_timeout_from_an_exhausted_pool(pg_url: str) -> None:
    with dialpool.Pool(pg_url, max_open=1, acquire_timeout=0.3) as p:
        with p.acquire():
            start = time.monotonic()
            with pytest.raises(dialpool.AcquireTimeout) as info:
                p.query("SELECT 1")
            took = time.monotonic() - start
            e = info.value
            assert isinstance(e, TimeoutError)
            check_error(
                e, dialpool.AcquireTimeout, "DP_ACQUIRE_TIMEOUT", "pool", limit="acquire_timeout", elapsed=(0.25, 1.5)
            )
            assert 0.25 < took < 1.5, took
            assert e.is_retryable
            # The caller's own deadline, when earlier, is the one named.
            with pytest.raises(dialpool.AcquireTimeout) as info:
                p.acquire(timeout=0.1)
            assert info.value.limit == "deadline"
        assert p.stats()["acquire_timeouts"] == 2


def test_three_layers_three_classes(pg_url: str, full_backlog: FullBacklog) -> None:
    errors = []
    with dialpool.Pool(pg_url, max_open=1, acquire_timeout=0.3) as p:
        with p.acquire():
            with pytest.raises(TimeoutError) as info:
                p.query("SELECT 1")
            errors.append(info.value)
        with pytest.raises(TimeoutError) as info:
            p.query("SELECT pg_sleep(5)", timeout=0.5)
        errors.append(info.value)
    dead = replace_port(pg_url, full_backlog.port)
    with pytest.raises(TimeoutError) as info:
        dialpool.connect(dead, connect_timeout=0.5)
    errors.append(info.value)
    assert [type(e) for e in errors] == [dialpool.AcquireTimeout, dialpool.QueryTimeout, dialpool.ConnectTimeout]
    assert [e.layer for e in errors] == ["pool", "query", "dial"]


def test_connect_timeout(pg_url: str, full_backlog: FullBacklog) -> None:
    start = time.monotonic()
    with pytest.raises(dialpool.ConnectTimeout) as info:
        dialpool.connect(replace_port(pg_url, full_backlog.port), connect_timeout=0.5)
    assert time.monotonic() - start < 1.5
    e = info.value
    check_error(e, dialpool.ConnectTimeout, "DP_CONNECT_TIMEOUT", "dial", limit="connect_timeout", elapsed=(0.45, 1.5))
    assert isinstance(e, TimeoutError) and e.is_retryable


def test_connection_refused(pg_url: str) -> None:
    url = replace_port(pg_url, refused_port())
    with pytest.raises(ConnectionRefusedError) as info:
        dialpool.connect(url)
    e = info.value
    assert isinstance(e, dialpool.ConnectionRefused)
    assert isinstance(e, dialpool.OperationalError)
    check_error(e, dialpool.ConnectionRefused, "DP_CONNECTION_REFUSED", "dial", elapsed=(0, 1), contains=("ECONNREFUSED",))
    # Through a pool a refused port is not taken as permanent (the server
    # may be restarting): waiters get AcquireTimeout naming the last connect
    # error.
    with dialpool.Pool(url, acquire_timeout=0.5) as p:
        with pytest.raises(dialpool.AcquireTimeout, match="refused"):
            p.query("SELECT 1")


def test_auth_failed_fast_through_the_pool(pg_url: str) -> None:
    url = replace_password(pg_url, "wrong-password")
    with pytest.raises(dialpool.AuthError) as info:
        dialpool.connect(url)
    e = info.value
    check_error(e, dialpool.AuthError, "DP_AUTH_FAILED", "login", sqlstate="28P01")
    assert "wrong-password" not in str(e)
    with dialpool.Pool(url, acquire_timeout=5) as p:
        start = time.monotonic()
        with pytest.raises(dialpool.AuthError):
            p.query("SELECT 1")
        # A permanent failure is reported at once, not after acquire_timeout.
        assert time.monotonic() - start < 2.5


def test_tls_verification(pg_url: str, pg_ca: str, tmp_path: "os.PathLike[str]") -> None:
    # The runner gives the CA as a file path (or, from older runners, as PEM text).
    ca = pg_ca
    if not os.path.exists(ca):
        ca = os.path.join(str(tmp_path), "ca.pem")
        with open(ca, "w") as f:
            f.write(pg_ca)
    # The certificate names only "localhost": verify-full to 127.0.0.1 fails.
    with pytest.raises(dialpool.TlsError) as info:
        dialpool.connect(pg_url, sslmode="verify-full", sslrootcert=ca)
    check_error(info.value, dialpool.TlsError, "DP_TLS_ERROR", "dial", contains=("not valid for name",))
    with dialpool.connect(replace_host(pg_url, "localhost"), sslmode="verify-full", sslrootcert=ca) as c:
        assert c.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [(True,)]


def test_tls_timeout(pg_url: str, tls_stall_server: SilentServer) -> None:
    url = replace_port(pg_url, tls_stall_server.port)
    with pytest.raises(TimeoutError) as info:
        dialpool.connect(url, sslmode="require", tls_timeout=0.3)
    check_error(info.value, dialpool.TlsTimeout, "DP_TLS_TIMEOUT", "dial", limit="tls_timeout", elapsed=(0.25, 1.5))


def test_login_timeout(pg_url: str, silent_server: SilentServer) -> None:
    url = replace_port(pg_url, silent_server.port)
    with pytest.raises(TimeoutError) as info:
        dialpool.connect(url, sslmode="disable", login_timeout=0.3)
    check_error(
        info.value, dialpool.LoginTimeout, "DP_LOGIN_TIMEOUT", "login", limit="login_timeout", elapsed=(0.25, 1.5)
    )


def test_pool_closed(pg_url: str) -> None:
    p = dialpool.Pool(pg_url)
    p.close()
    assert p.closed
    with pytest.raises(dialpool.PoolClosed) as info:
        p.query("SELECT 1")
    check_error(info.value, dialpool.PoolClosed, "DP_POOL_CLOSED", "pool", contains=("closed",))


def test_invalid_options(pg_url: str) -> None:
    with pytest.raises(dialpool.InvalidArgument) as info:
        dialpool.Pool(pg_url, acquire_timeot=1)
    assert "acquire_timeout" in str(info.value)  # the suggestion
    assert isinstance(info.value, ValueError)
    check_error(info.value, dialpool.InvalidArgument, "DP_INVALID_ARGUMENT", None)
    with pytest.raises(dialpool.InvalidArgument, match="max_open"):
        dialpool.Pool(pg_url, max_open="many")
    with pytest.raises(dialpool.InvalidArgument, match="min_idle"):
        dialpool.Pool(pg_url, max_open=2, min_idle=3)
    with pytest.raises(dialpool.InvalidArgument, match="scheme"):
        dialpool.Pool("oracle://x")
    with dialpool.Pool(pg_url) as p:
        with pytest.raises(dialpool.InvalidArgument, match="invalid timeout"):
            p.query("SELECT 1", timeout=-1)


def test_option_values_in_python_types(pg_url: str) -> None:
    import datetime as dt

    with dialpool.Pool(
        pg_url,
        acquire_timeout=dt.timedelta(milliseconds=1500),
        query_timeout="2s",
        connect_timeout=2.5,
        max_open=3,
        application_name=None,
    ) as p:
        assert p.stats()["max_open"] == 3
        assert p.query("SELECT 1", timeout=dt.timedelta(seconds=1)) == [(1,)]
        assert p.query("SELECT 1", timeout="500ms") == [(1,)]


@pytest.mark.parametrize(
    "sqlstate,cls",
    [
        ("23505", dialpool.IntegrityError),
        ("23503", dialpool.IntegrityError),
        ("42601", dialpool.ProgrammingError),
        ("42P01", dialpool.ProgrammingError),
        ("22012", dialpool.DataError),
        ("22003", dialpool.DataError),
        ("0A000", dialpool.NotSupportedError),
        ("40001", dialpool.OperationalError),
        ("53300", dialpool.OperationalError),
        ("25P02", dialpool.InternalError),
        ("XX000", dialpool.InternalError),
        ("P0001", dialpool.InternalError),
        ("99999", dialpool.DatabaseError),
    ],
)
def test_sqlstate_classes(pool: dialpool.Pool, sqlstate: str, cls: type) -> None:
    with pytest.raises(dialpool.DatabaseError) as info:
        pool.execute(f"DO $$ BEGIN RAISE EXCEPTION 'boom %', 1 USING ERRCODE = '{sqlstate}'; END $$")
    check_error(info.value, cls, "DP_SERVER_ERROR", "query", sqlstate=sqlstate, contains=("boom 1", sqlstate))
    assert pool.query("SELECT 1") == [(1,)]


def test_real_server_errors(pool: dialpool.Pool, table: str) -> None:
    pool.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    pool.execute(f"INSERT INTO {table} VALUES (1)")
    with pytest.raises(dialpool.IntegrityError) as info:
        pool.execute(f"INSERT INTO {table} VALUES (%s)", (1,))
    check_error(info.value, dialpool.IntegrityError, "DP_SERVER_ERROR", "query", sqlstate="23505")
    with pytest.raises(dialpool.ProgrammingError) as info:
        pool.query("SELEC 1")
    check_error(info.value, dialpool.ProgrammingError, "DP_SERVER_ERROR", "query", sqlstate="42601")
    with pytest.raises(dialpool.ProgrammingError) as info:
        pool.query("SELECT * FROM no_such_table_xyz")
    check_error(info.value, dialpool.ProgrammingError, "DP_SERVER_ERROR", "query", sqlstate="42P01")
    with pytest.raises(dialpool.DataError) as info:
        pool.query("SELECT 1 / %s", (0,))
    check_error(info.value, dialpool.DataError, "DP_SERVER_ERROR", "query", sqlstate="22012")


def test_failed_transaction_state(pg_url: str) -> None:
    with dialpool.connect(pg_url) as c:
        cur = c.cursor()
        with pytest.raises(dialpool.DataError):
            cur.execute("SELECT 1 / 0")
        with pytest.raises(dialpool.InternalError) as info:
            cur.execute("SELECT 1")
        check_error(info.value, dialpool.InternalError, "DP_SERVER_ERROR", "query", sqlstate="25P02")
        c.rollback()
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_connection_lost(pg_url: str, pool: dialpool.Pool) -> None:
    with dialpool.connect(pg_url, autocommit=True) as c:
        [(pid,)] = c.query("SELECT pg_backend_pid()")
        pool.query("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(ConnectionError) as info:
            # The backend's goodbye may take a moment to arrive; bounded.
            for _ in range(50):
                c.query("SELECT 1")
                time.sleep(0.02)
        check_error(info.value, dialpool.ConnectionLost, "DP_CONNECTION_LOST", "query", contains=("lost",))
        assert not info.value.is_retryable


def test_connection_shared_between_threads_is_refused(pool: dialpool.Pool) -> None:
    import threading

    with pool.acquire() as c:
        started = threading.Event()

        def sleeper() -> None:
            started.set()
            c.query("SELECT pg_sleep(0.5)")

        t = threading.Thread(target=sleeper)
        t.start()
        started.wait()
        time.sleep(0.15)
        with pytest.raises(dialpool.InterfaceError, match="another thread"):
            c.query("SELECT 1")
        t.join()
        assert c.query("SELECT 1") == [(1,)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_pool_after_fork_is_a_clear_error(pool: dialpool.Pool) -> None:
    assert pool.query("SELECT 1") == [(1,)]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            pool.query("SELECT 1")
            msg = "no error"
        except dialpool.InterfaceError as e:
            msg = f"{type(e).__name__}|{e.code}|{e}"
        except BaseException as e:  # noqa: BLE001
            msg = f"other {type(e).__name__}: {e}"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode()
    os.waitpid(pid, 0)
    name, code, text = msg.split("|", 2)
    assert (name, code) == ("InvalidState", "DP_INVALID_STATE"), msg
    assert "fork" in text
    assert pool.query("SELECT 1") == [(1,)]
