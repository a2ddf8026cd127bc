"""Fixtures: the throwaway servers the test runner starts, and real faults.

Run under the runner, which exports the servers' URLs:

    cargo run -q -p dialpool-testkit -- run -- python -m pytest python/tests -q
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Callable, Iterator, List, Optional

import pytest

import dialpool

PG_ENV = "DIALPOOL_TEST_PG_URL"
MARIADB_ENV = "DIALPOOL_TEST_MARIADB_URL"


def _url(env: str) -> str:
    url = os.environ.get(env)
    if not url:
        pytest.skip(
            f"{env} is not set: run under the test runner "
            "(cargo run -q -p dialpool-testkit -- run -- python -m pytest python/tests)"
        )
    return url


@pytest.fixture(scope="session")
def pg_url() -> str:
    return _url(PG_ENV)


@pytest.fixture(scope="session")
def pg_ca() -> str:
    ca = os.environ.get("DIALPOOL_TEST_PG_CA")
    if not ca:
        pytest.skip("DIALPOOL_TEST_PG_CA is not set: run under the test runner")
    return ca


_mariadb_unavailable: Optional[str] = None


@pytest.fixture(scope="session")
def mariadb_url() -> str:
    """The MariaDB server's URL; the tests skip while this build's core has
    no MySQL sessions yet (they pass once it has)."""
    url = _url(MARIADB_ENV)
    try:
        conn = dialpool.connect(url, connect_timeout=5)
    except dialpool.InvalidArgument as e:
        if "not available yet" in str(e):
            pytest.skip(f"MySQL/MariaDB sessions are not in this build of the core yet: {e}")
        raise
    conn.close()
    return url


def with_options(url: str, **options: object) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{k}={v}" for k, v in options.items())


def replace_port(url: str, port: int) -> str:
    """The URL with another port on 127.0.0.1."""
    scheme, rest = url.split("://", 1)
    userinfo, hostpart = rest.rsplit("@", 1)
    path = hostpart[hostpart.index("/") :] if "/" in hostpart else ""
    return f"{scheme}://{userinfo}@127.0.0.1:{port}{path}"


def replace_host(url: str, host: str) -> str:
    scheme, rest = url.split("://", 1)
    userinfo, hostpart = rest.rsplit("@", 1)
    hostport, _, path = hostpart.partition("/")
    port = hostport.rsplit(":", 1)[1]
    return f"{scheme}://{userinfo}@{host}:{port}/{path}"


def replace_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    userinfo, hostpart = rest.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:{password}@{hostpart}"


@pytest.fixture
def pool(pg_url: str) -> Iterator[dialpool.Pool]:
    with dialpool.Pool(pg_url, max_open=8) as p:
        yield p


@pytest.fixture
def conn(pg_url: str) -> Iterator[dialpool.Connection]:
    c = dialpool.connect(pg_url)
    yield c
    c.close()


@pytest.fixture
def table(pool: dialpool.Pool) -> Iterator[str]:
    """A fresh table name (t_<hex>), dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    yield name
    pool.execute(f"DROP TABLE IF EXISTS {name}")


def marker() -> str:
    """A unique comment to find one statement in pg_stat_activity."""
    return "dp_" + uuid.uuid4().hex


def active_statements(pool: dialpool.Pool, mark: str) -> List[str]:
    """States of backends (other than ours) running a statement containing `mark`."""
    rows = pool.query(
        "SELECT state FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND query LIKE %s AND state = 'active'",
        (f"%{mark}%",),
    )
    return [r[0] for r in rows]


def wait_until(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()


def refused_port() -> int:
    """A port on 127.0.0.1 that nobody listens on (just bound and released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class FullBacklog:
    """A listener whose accept queue is full, so the kernel drops new SYNs:
    a connect hangs until its own timeout, like a black-holed host."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers: List[socket.socket] = []
        for _ in range(16):
            s = socket.socket()
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", self.port))
            except (socket.timeout, OSError):
                s.close()
                return
            self.fillers.append(s)
        raise RuntimeError("the accept queue never filled")

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.listener.close()


@pytest.fixture
def full_backlog() -> Iterator[FullBacklog]:
    f = FullBacklog()
    yield f
    f.close()


class SilentServer:
    """Accepts TCP connections and never says a word; with `answer_ssl`, it
    answers a PostgreSQL SSLRequest with 'S' (go ahead with TLS) and then
    stalls the handshake."""

    def __init__(self, answer_ssl: bool = False) -> None:
        self.answer_ssl = answer_ssl
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.conns: List[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            self.conns.append(c)
            if self.answer_ssl:
                c.settimeout(2)
                try:
                    if len(c.recv(8)) == 8:
                        c.sendall(b"S")
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for c in self.conns:
            c.close()
        self.listener.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    s = SilentServer()
    yield s
    s.close()


@pytest.fixture
def tls_stall_server() -> Iterator[SilentServer]:
    s = SilentServer(answer_ssl=True)
    yield s
    s.close()
