"""Every exception class from its real fault, with its attributes checked.

test_errors.py has the PostgreSQL faults that need no set-up and the
SQLSTATE table; this file adds those that need a namespace (DNS, an
unreachable network), a stopped server process, an exhausted descriptor
table, a peer of the wrong kind, MariaDB's side of the dial, login and query
faults, and the catalogue at the end that ties every exported class to the
test producing it (or the reason nothing can).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Dict, Iterator, Tuple

import pytest

import dialpool
import netns
from conftest import (
    FullBacklog,
    SilentServer,
    check_error,
    mysql_greeting,
    refused_port,
    replace_host,
    replace_password,
    replace_port,
    require_faults,
    url_port,
    wait_until,
)

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def mpool(mariadb_url: str) -> Iterator[dialpool.Pool]:
    with dialpool.Pool(mariadb_url, max_open=4) as p:
        yield p


# -- DNS and the network: inside a namespace of their own ----------------------------


def test_dns_error_from_nxdomain(request: pytest.FixtureRequest) -> None:
    if not netns.enter(request, resolver="nxdomain"):
        return
    start = time.monotonic()
    with pytest.raises(dialpool.DnsError) as info:
        dialpool.connect("postgres://u:p@no-such-db.example.test:5432/x", dns_timeout=3)
    assert time.monotonic() - start < 2.5, "NXDOMAIN is an answer, not a wait"
    e = info.value
    check_error(e, dialpool.DnsError, "DP_DNS_ERROR", "dial", contains=("EAI_NONAME",))
    assert not isinstance(e, TimeoutError)
    assert not e.is_retryable, "a name that does not exist will not appear on retry"


def test_dns_timeout_from_a_silent_resolver(request: pytest.FixtureRequest) -> None:
    if not netns.enter(request, resolver="silent"):
        return
    start = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        dialpool.connect("mysql://u:p@db.example.test:3306/x", dns_timeout=0.3)
    assert time.monotonic() - start < 1.5
    check_error(
        info.value, dialpool.DnsTimeout, "DP_DNS_TIMEOUT", "dial", limit="dns_timeout", elapsed=(0.25, 1.5)
    )
    assert isinstance(info.value, dialpool.OperationalError)
    # Through a pool the waiter's own limit is what it sees.
    with dialpool.Pool("postgres://u:p@db.example.test:5432/x", dns_timeout=5, acquire_timeout=0.3) as p:
        with pytest.raises(TimeoutError) as info:
            p.query("SELECT 1")
    assert type(info.value) is dialpool.AcquireTimeout, info.value


def test_network_unreachable_with_the_loopback_down(request: pytest.FixtureRequest) -> None:
    if not netns.enter(request, loopback_up=False):
        return
    with pytest.raises(ConnectionError) as info:
        dialpool.connect("postgres://u:p@127.0.0.1:5432/x")
    check_error(
        info.value, dialpool.NetworkUnreachable, "DP_NETWORK_UNREACHABLE", "dial", contains=("ENETUNREACH",)
    )
    assert not isinstance(info.value, ConnectionRefusedError)


# -- the dial's other faults ---------------------------------------------------------------

_OUT_OF_DESCRIPTORS = r"""
import json, os, resource, sys
import dialpool

url = sys.argv[1]
# Start the core's runtime first: it needs descriptors of its own.
dialpool.connect(url).close()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
held = []
for _ in range(300):
    try:
        held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        break
try:
    dialpool.connect(url)
    out = {"error": None}
except dialpool.Error as e:
    out = {"error": type(e).__name__, "code": e.code, "layer": e.layer, "limit": e.limit,
           "sqlstate": e.sqlstate, "elapsed": e.elapsed, "is_timeout": e.is_timeout, "text": str(e)}
for fd in held:
    os.close(fd)
print(json.dumps(out))
"""


def test_network_error_when_the_process_is_out_of_descriptors(pg_url: str) -> None:
    # In a child process: the exhausted descriptor table must not reach
    # pytest or the other tests.
    out = subprocess.run(
        [sys.executable, "-c", _OUT_OF_DESCRIPTORS, pg_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["error"] == "NetworkError", got
    assert (got["code"], got["layer"], got["limit"], got["sqlstate"]) == ("DP_NETWORK_ERROR", "dial", None, None)
    assert not got["is_timeout"]
    assert got["text"].startswith("dial: ") and "Too many open files" in got["text"], got["text"]
    assert issubclass(dialpool.NetworkError, ConnectionError)


@pytest.mark.parametrize("sslmode", ["disable", "prefer"])
def test_protocol_error_from_a_server_of_another_kind(pg_url: str, mariadb_url: str, sslmode: str) -> None:
    # postgres:// pointed at the MariaDB port: a real server, the wrong protocol.
    url = replace_port(pg_url, url_port(mariadb_url))
    with pytest.raises(dialpool.ProtocolError) as info:
        dialpool.connect(url, sslmode=sslmode, login_timeout=5)
    check_error(info.value, dialpool.ProtocolError, "DP_PROTOCOL_ERROR", "login")
    assert not info.value.is_retryable


def test_tls_error_from_a_ca_that_did_not_sign(pg_url: str, mariadb_ca: str) -> None:
    # Each server has its own CA: MariaDB's did not sign PostgreSQL's certificate.
    with pytest.raises(dialpool.TlsError) as info:
        dialpool.connect(replace_host(pg_url, "localhost"), sslmode="verify-ca", sslrootcert=mariadb_ca)
    check_error(info.value, dialpool.TlsError, "DP_TLS_ERROR", "dial")
    assert not info.value.is_retryable


# -- a server process that stops ----------------------------------------------------------


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The server process `pid` frozen (SIGSTOP) meanwhile: it neither
    reads nor answers, as a hung server or a stalled path would."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except PermissionError:
        require_faults(f"cannot stop the server backend {pid}: not root and not its owner")
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_write_timeout_when_the_server_stops_reading(pg_url: str, pool: dialpool.Pool) -> None:
    c = dialpool.connect(pg_url, autocommit=True, write_timeout=0.5)
    [(pid,)] = c.query("SELECT pg_backend_pid()")
    # More than the loopback socket buffers hold on both sides.
    big = "x" * (64 << 20)
    with stopped(pid):
        start = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            c.query("SELECT length(%s)", (big,))
        took = time.monotonic() - start
    check_error(
        info.value, dialpool.WriteTimeout, "DP_WRITE_TIMEOUT", "query", limit="write_timeout", elapsed=(0.45, 0.6)
    )
    assert took < 5, took
    assert not info.value.is_retryable, "part of the statement was sent"
    # The connection was closed: the backend goes away once it runs again.
    with pytest.raises(dialpool.InvalidState):
        c.query("SELECT 1")
    c.close()
    assert wait_until(lambda: pool.query("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)) == [(0,)], 5)


@pytest.mark.parametrize("db", ["pg", "mariadb"])
def test_read_timeout_when_the_server_is_silent(request: pytest.FixtureRequest, db: str) -> None:
    url = request.getfixturevalue("pg_url" if db == "pg" else "mariadb_url")
    sleep = "SELECT pg_sleep(3)" if db == "pg" else "SELECT SLEEP(3)"
    c = dialpool.connect(url, read_timeout=0.3)
    with pytest.raises(TimeoutError) as info:
        c.query(sleep)
    check_error(
        info.value, dialpool.ReadTimeout, "DP_READ_TIMEOUT", "query", limit="read_timeout", elapsed=(0.25, 1.0)
    )
    # The session was in the middle of a reply: it is closed, not reused.
    with pytest.raises(dialpool.InvalidState) as state:
        c.query("SELECT 1")
    check_error(state.value, dialpool.InvalidState, "DP_INVALID_STATE", "query", contains=("unusable",))
    assert isinstance(state.value, dialpool.InterfaceError)
    c.close()


def test_read_timeout_from_a_stopped_backend(pg_url: str) -> None:
    c = dialpool.connect(pg_url, autocommit=True, read_timeout=0.3)
    [(pid,)] = c.query("SELECT pg_backend_pid()")
    with stopped(pid):
        with pytest.raises(dialpool.ReadTimeout) as info:
            c.query("SELECT 1")
    check_error(info.value, dialpool.ReadTimeout, "DP_READ_TIMEOUT", "query", limit="read_timeout", elapsed=(0.25, 1.0))
    c.close()


# -- server errors of every PEP 249 class, from real statements ----------------------


def test_server_errors_from_real_statements(pool: dialpool.Pool, table: str) -> None:
    pool.execute(f"CREATE TABLE {table}_p (id int PRIMARY KEY)")
    try:
        pool.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, p int REFERENCES {table}_p, n int2)")
        cases: Dict[str, Tuple[type, str]] = {
            f"INSERT INTO {table} (id, p) VALUES (1, 42)": (dialpool.IntegrityError, "23503"),
            f"INSERT INTO {table} (id, n) VALUES (NULL, 1)": (dialpool.IntegrityError, "23502"),
            f"INSERT INTO {table} (id, n) VALUES (2, 40000)": (dialpool.DataError, "22003"),
            "SELECT 2147483647::int4 + 1": (dialpool.DataError, "22003"),
            "SELECT 'abc'::int": (dialpool.DataError, "22P02"),
            "SELECT nope FROM pg_class": (dialpool.ProgrammingError, "42703"),
            "SELECT count(*) FROM pg_class FOR UPDATE": (dialpool.NotSupportedError, "0A000"),
            # A diagnostics exception (class 0Z) is in no PEP 249 class.
            "DO $$ DECLARE t text; BEGIN GET STACKED DIAGNOSTICS t = MESSAGE_TEXT; END $$": (
                dialpool.DatabaseError,
                "0Z002",
            ),
        }
        for sql, (cls, sqlstate) in cases.items():
            with pytest.raises(dialpool.DatabaseError) as info:
                pool.query(sql)
            check_error(info.value, cls, "DP_SERVER_ERROR", "query", sqlstate=sqlstate, contains=(sqlstate,))
            assert not info.value.is_retryable
    finally:
        pool.execute(f"DROP TABLE IF EXISTS {table}, {table}_p")


def test_operational_errors_from_the_server(pg_url: str, pool: dialpool.Pool, table: str) -> None:
    pool.execute(f"CREATE TABLE {table} (id int)")
    # Another session's lock and a lock_timeout: 55P03.
    with dialpool.connect(pg_url) as holder, dialpool.connect(pg_url, autocommit=True) as waiter:
        holder.cursor().execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        waiter.query("SET lock_timeout = '100ms'")
        with pytest.raises(dialpool.OperationalError) as info:
            waiter.query(f"SELECT * FROM {table}")
        check_error(info.value, dialpool.OperationalError, "DP_SERVER_ERROR", "query", sqlstate="55P03")
        holder.rollback()
        # An administrator cancelling the statement: 57014, which is not
        # a QueryTimeout (nothing of ours fired).
        [(pid,)] = waiter.query("SELECT pg_backend_pid()")
        t = threading.Timer(0.3, lambda: pool.query("SELECT pg_cancel_backend(%s)", (pid,)))
        t.start()
        try:
            with pytest.raises(dialpool.OperationalError) as info:
                waiter.query("SELECT pg_sleep(5)")
        finally:
            t.join()
        check_error(info.value, dialpool.OperationalError, "DP_SERVER_ERROR", "query", sqlstate="57014")
        assert waiter.query("SELECT 1") == [(1,)]


def test_interface_error_from_a_closed_connection(pg_url: str) -> None:
    c = dialpool.connect(pg_url)
    c.close()
    with pytest.raises(dialpool.InterfaceError) as info:
        c.cursor()
    check_error(info.value, dialpool.InterfaceError, "DP_INVALID_STATE", None, contains=("closed",))
    with pytest.raises(dialpool.InterfaceError) as info:
        c.query("SELECT 1")
    assert info.value.code == "DP_INVALID_STATE"


# -- MariaDB's side ---------------------------------------------------------------------------


def test_mariadb_connect_timeout_refused_and_auth(mariadb_url: str, full_backlog: FullBacklog) -> None:
    with pytest.raises(TimeoutError) as info:
        dialpool.connect(replace_port(mariadb_url, full_backlog.port), connect_timeout=0.5)
    check_error(
        info.value,
        dialpool.ConnectTimeout,
        "DP_CONNECT_TIMEOUT",
        "dial",
        limit="connect_timeout",
        elapsed=(0.45, 1.5),
    )
    with pytest.raises(ConnectionRefusedError) as info:
        dialpool.connect(replace_port(mariadb_url, refused_port()))
    check_error(info.value, dialpool.ConnectionRefused, "DP_CONNECTION_REFUSED", "dial", elapsed=(0, 1))
    with pytest.raises(dialpool.AuthError) as info:
        dialpool.connect(replace_password(mariadb_url, "wrong-password"))
    check_error(info.value, dialpool.AuthError, "DP_AUTH_FAILED", "login", sqlstate="28000", contains=("1045",))
    assert "wrong-password" not in str(info.value)


def test_mariadb_tls_verification(mariadb_url: str, mariadb_ca: str, pg_ca: str) -> None:
    # The certificate names only "localhost".
    with pytest.raises(dialpool.TlsError) as info:
        dialpool.connect(mariadb_url, sslmode="verify-full", sslrootcert=mariadb_ca)
    check_error(info.value, dialpool.TlsError, "DP_TLS_ERROR", "dial")
    # The right name, but a CA that did not sign it.
    with pytest.raises(dialpool.TlsError) as info:
        dialpool.connect(replace_host(mariadb_url, "localhost"), sslmode="verify-ca", sslrootcert=pg_ca)
    check_error(info.value, dialpool.TlsError, "DP_TLS_ERROR", "dial")
    with dialpool.connect(replace_host(mariadb_url, "localhost"), sslmode="verify-full", sslrootcert=mariadb_ca) as c:
        [(cipher,)] = c.query("SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'")
        assert cipher


def test_mariadb_tls_timeout(mariadb_url: str) -> None:
    # A peer that greets like the real server, offering TLS, then goes silent.
    server = SilentServer(greeting=mysql_greeting(mariadb_url))
    try:
        with pytest.raises(TimeoutError) as info:
            dialpool.connect(replace_port(mariadb_url, server.port), sslmode="require", tls_timeout=0.3)
    finally:
        server.close()
    check_error(info.value, dialpool.TlsTimeout, "DP_TLS_TIMEOUT", "dial", limit="tls_timeout", elapsed=(0.25, 1.5))


def test_mariadb_login_timeout(mariadb_url: str, silent_server: SilentServer) -> None:
    with pytest.raises(TimeoutError) as info:
        dialpool.connect(replace_port(mariadb_url, silent_server.port), login_timeout=0.3)
    check_error(
        info.value, dialpool.LoginTimeout, "DP_LOGIN_TIMEOUT", "login", limit="login_timeout", elapsed=(0.25, 1.5)
    )


def test_mariadb_acquire_timeout_and_pool_closed(mariadb_url: str) -> None:
    p = dialpool.Pool(mariadb_url, max_open=1, acquire_timeout=0.3)
    with p.acquire():
        with pytest.raises(TimeoutError) as info:
            p.query("SELECT 1")
    check_error(
        info.value,
        dialpool.AcquireTimeout,
        "DP_ACQUIRE_TIMEOUT",
        "pool",
        limit="acquire_timeout",
        elapsed=(0.25, 1.5),
    )
    assert info.value.is_retryable
    p.close()
    with pytest.raises(dialpool.PoolClosed) as info:
        p.query("SELECT 1")
    check_error(info.value, dialpool.PoolClosed, "DP_POOL_CLOSED", "pool")


def _running(pool: dialpool.Pool, mark: str) -> int:
    [(n,)] = pool.query(
        "SELECT COUNT(*) FROM information_schema.processlist "
        "WHERE id <> CONNECTION_ID() AND info LIKE %s AND command = 'Query'",
        (f"%{mark}%",),
    )
    return int(n)


def test_mariadb_query_timeout_option(mariadb_url: str, mpool: dialpool.Pool) -> None:
    mark = "dp_" + uuid.uuid4().hex
    with dialpool.Pool(mariadb_url, query_timeout=0.5) as p:
        with pytest.raises(TimeoutError) as info:
            p.query(f"SELECT SLEEP(5) /* {mark} */")
        check_error(
            info.value,
            dialpool.QueryTimeout,
            "DP_QUERY_TIMEOUT",
            "query",
            limit="query_timeout",
            sqlstate="70100",
            elapsed=(0.45, 2.0),
            contains=("query_timeout=500ms",),
        )
        # KILL QUERY stopped the statement on the server.
        assert wait_until(lambda: _running(mpool, mark) == 0, 2.0)
        assert p.query("SELECT 1") == [(1,)]


def test_mariadb_connection_lost_when_killed(mariadb_url: str, mpool: dialpool.Pool) -> None:
    c = dialpool.connect(mariadb_url)
    [(cid,)] = c.query("SELECT CONNECTION_ID()")
    mpool.execute(f"KILL {int(cid)}")
    with pytest.raises(ConnectionError) as info:
        # The server's close may take a moment to arrive; bounded.
        for _ in range(50):
            c.query("SELECT 1")
            time.sleep(0.02)
    check_error(info.value, dialpool.ConnectionLost, "DP_CONNECTION_LOST", "query", contains=("lost",))
    assert not info.value.is_retryable
    c.close()


def test_mariadb_server_errors(mpool: dialpool.Pool, mariadb_url: str) -> None:
    t = "t_" + uuid.uuid4().hex[:12]
    mpool.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY, n TINYINT, v INT) ENGINE=InnoDB")
    try:
        mpool.execute(f"INSERT INTO {t} VALUES (1, 1, 1)")
        cases: Dict[str, Tuple[type, str]] = {
            f"INSERT INTO {t} VALUES (1, 1, 1)": (dialpool.IntegrityError, "23000"),
            f"INSERT INTO {t} VALUES (NULL, 1, 1)": (dialpool.IntegrityError, "23000"),
            f"INSERT INTO {t} VALUES (2, 1000, 1)": (dialpool.DataError, "22003"),
            f"INSERT INTO {t} VALUES (3, 1, 1 / 0)": (dialpool.DataError, "22012"),
            "SELECT 18446744073709551615 + 1": (dialpool.DataError, "22003"),
            "SELECT nope FROM DUAL": (dialpool.ProgrammingError, "42S22"),
            "SELEC 1": (dialpool.ProgrammingError, "42000"),
            # MariaDB's own limit on a statement: interrupted, 70100.
            "SET STATEMENT max_statement_time = 0.1 FOR SELECT SLEEP(2)": (dialpool.OperationalError, "70100"),
        }
        for sql, (cls, sqlstate) in cases.items():
            with pytest.raises(dialpool.DatabaseError) as info:
                mpool.execute(sql)
            check_error(info.value, cls, "DP_SERVER_ERROR", "query", sqlstate=sqlstate, contains=(sqlstate,))
        # Another session's row lock and innodb_lock_wait_timeout: HY000.
        with dialpool.connect(mariadb_url) as holder, dialpool.connect(mariadb_url, autocommit=True) as waiter:
            holder.cursor().execute(f"SELECT * FROM {t} WHERE id = 1 FOR UPDATE")
            waiter.query("SET SESSION innodb_lock_wait_timeout = 1")
            with pytest.raises(dialpool.OperationalError) as info:
                waiter.query(f"UPDATE {t} SET v = 2 WHERE id = 1")
            check_error(
                info.value, dialpool.OperationalError, "DP_SERVER_ERROR", "query", sqlstate="HY000", contains=("1205",)
            )
            holder.rollback()
    finally:
        mpool.execute(f"DROP TABLE IF EXISTS {t}")


def test_mariadb_invalid_argument(mariadb_url: str, mpool: dialpool.Pool) -> None:
    with pytest.raises(ValueError) as info:
        dialpool.Pool(mariadb_url, read_timeout="soon")
    check_error(info.value, dialpool.InvalidArgument, "DP_INVALID_ARGUMENT", None, contains=("read_timeout",))
    with pytest.raises(dialpool.InvalidArgument) as info:
        mpool.query("SELECT %s", (object(),))
    check_error(info.value, dialpool.InvalidArgument, "DP_INVALID_ARGUMENT", None, contains=("cannot send",))


# -- the catalogue -------------------------------------------------------------------------

#: Each exported exception class and the test that raises exactly it from a
#: real fault ("file::test").
PRODUCED_BY: Dict[type, str] = {
    dialpool.InterfaceError: "test_faults.py::test_interface_error_from_a_closed_connection",
    dialpool.DatabaseError: "test_faults.py::test_server_errors_from_real_statements",
    dialpool.DataError: "test_faults.py::test_server_errors_from_real_statements",
    dialpool.OperationalError: "test_faults.py::test_operational_errors_from_the_server",
    dialpool.IntegrityError: "test_faults.py::test_server_errors_from_real_statements",
    dialpool.InternalError: "test_errors.py::test_failed_transaction_state",
    dialpool.ProgrammingError: "test_faults.py::test_server_errors_from_real_statements",
    dialpool.NotSupportedError: "test_faults.py::test_server_errors_from_real_statements",
    dialpool.InvalidArgument: "test_faults.py::test_mariadb_invalid_argument",
    dialpool.InvalidState: "test_faults.py::test_read_timeout_when_the_server_is_silent",
    dialpool.DnsError: "test_faults.py::test_dns_error_from_nxdomain",
    dialpool.DnsTimeout: "test_faults.py::test_dns_timeout_from_a_silent_resolver",
    dialpool.ConnectTimeout: "test_errors.py::test_connect_timeout",
    dialpool.ConnectionRefused: "test_errors.py::test_connection_refused",
    dialpool.NetworkUnreachable: "test_faults.py::test_network_unreachable_with_the_loopback_down",
    dialpool.NetworkError: "test_faults.py::test_network_error_when_the_process_is_out_of_descriptors",
    dialpool.TlsError: "test_faults.py::test_tls_error_from_a_ca_that_did_not_sign",
    dialpool.TlsTimeout: "test_errors.py::test_tls_timeout",
    dialpool.AuthError: "test_errors.py::test_auth_failed_fast_through_the_pool",
    dialpool.LoginTimeout: "test_errors.py::test_login_timeout",
    dialpool.ProtocolError: "test_faults.py::test_protocol_error_from_a_server_of_another_kind",
    dialpool.AcquireTimeout: "test_errors.py::test_acquire_timeout_from_an_exhausted_pool",
    dialpool.PoolClosed: "test_errors.py::test_pool_closed",
    dialpool.QueryTimeout: "test_errors.py::test_query_timeout_cancels_on_the_server",
    dialpool.ReadTimeout: "test_faults.py::test_read_timeout_when_the_server_is_silent",
    dialpool.WriteTimeout: "test_faults.py::test_write_timeout_when_the_server_stops_reading",
    dialpool.ConnectionLost: "test_errors.py::test_connection_lost",
}

#: Exported classes no real fault raises as such, and why.
NOT_RAISED: Dict[type, str] = {
    dialpool.Warning: "PEP 249 name only: server notices are kept on the cursor, not raised",
    dialpool.Error: "the common base: every error is one of its subclasses",
    dialpool.Cancelled: (
        "the only canceller reachable from Python is a signal handler (Ctrl-C); its own exception "
        "(KeyboardInterrupt) is raised in place of the core's DP_CANCELLED (test_runtime.py covers "
        "the cancel on the server)"
    ),
}


def test_every_exported_exception_class_has_its_fault() -> None:
    exported = {
        obj
        for name in dialpool.__all__
        for obj in [getattr(dialpool, name)]
        if isinstance(obj, type) and issubclass(obj, (dialpool.Error, dialpool.Warning))
    }
    assert exported == set(PRODUCED_BY) | set(NOT_RAISED), exported ^ (set(PRODUCED_BY) | set(NOT_RAISED))
    assert not set(PRODUCED_BY) & set(NOT_RAISED)
    sources: Dict[str, str] = {}
    for cls, where in PRODUCED_BY.items():
        file, test = where.split("::")
        if file not in sources:
            with open(os.path.join(HERE, file)) as f:
                sources[file] = f.read()
        assert re.search(rf"^def {test}\(", sources[file], re.M), f"{cls.__name__}: no {where}"
        # The test names the class it expects.
        body = sources[file].split(f"def {test}(", 1)[1].split("\ndef ", 1)[0]
        assert f"dialpool.{cls.__name__}" in body, f"{where} does not mention dialpool.{cls.__name__}"
    # Timeouts are builtin TimeoutErrors; refusals ConnectionRefusedErrors.
    timeouts = {c for c in exported if c.__name__.endswith("Timeout")}
    assert timeouts == {c for c in exported if issubclass(c, TimeoutError)}
    assert {c for c in exported if issubclass(c, ConnectionRefusedError)} == {dialpool.ConnectionRefused}
