"""Fixtures: the throwaway servers the test runner starts, and real faults.

Run under the runner, which exports the servers' URLs:

    cargo run -q -p dialpool-testkit -- run -- python -m pytest python/tests -q
"""

from __future__ import annotations

import os
import pickle
import socket
import threading
import time
import uuid
from typing import Any, Callable, Iterator, List, Optional

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
    stalls the handshake; with `greeting`, it sends those bytes on accept
    (a real MySQL handshake: the client then asks for TLS and stalls)."""

    def __init__(self, answer_ssl: bool = False, greeting: bytes = b"") -> None:
        self.answer_ssl = answer_ssl
        self.greeting = greeting
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
            if self.greeting:
                try:
                    c.sendall(self.greeting)
                except OSError:
                    pass
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


# -- more real faults ------------------------------------------------------------


def require_faults(reason: str) -> None:
    """Skips a fault test that cannot run here, or fails it when the runner
    says every fault must run (DIALPOOL_REQUIRE_FAULTS=1, as in CI)."""
    if os.environ.get("DIALPOOL_REQUIRE_FAULTS") == "1":
        pytest.fail(f"{reason} (DIALPOOL_REQUIRE_FAULTS=1: fault tests may not skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mariadb_ca() -> str:
    ca = os.environ.get("DIALPOOL_TEST_MARIADB_CA")
    if not ca:
        pytest.skip("DIALPOOL_TEST_MARIADB_CA is not set: run under the test runner")
    return ca


def url_port(url: str) -> int:
    hostport = url.split("://", 1)[1].rsplit("@", 1)[1].split("/", 1)[0]
    return int(hostport.rsplit(":", 1)[1])


def mysql_greeting(url: str) -> bytes:
    """The first packet a MySQL server sends (its handshake), read from the
    real server: replayed by a SilentServer it makes a peer that looks like
    MariaDB, offers TLS, and then never answers."""
    with socket.create_connection(("127.0.0.1", url_port(url)), timeout=5) as s:
        data = b""
        # 3-byte length, 1-byte sequence number, payload; bounded reads.
        for _ in range(64):
            if len(data) >= 4 and len(data) >= 4 + int.from_bytes(data[:3], "little"):
                break
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        if len(data) < 4:
            raise RuntimeError("no handshake from the MariaDB server")
        return data[: 4 + int.from_bytes(data[:3], "little")]


def check_error(
    e: Any,
    cls: type,
    code: str,
    layer: Optional[str],
    *,
    limit: Optional[str] = None,
    sqlstate: Optional[str] = None,
    elapsed: Optional["tuple[float, float]"] = None,
    contains: "tuple[str, ...]" = (),
) -> None:
    """An error raised by a real fault: exactly `cls`, with these attributes
    and a one-line message. `elapsed` is (low, high) when the error must say
    how long the operation took; otherwise it may be None or any duration."""
    assert type(e) is cls, f"{type(e).__name__} instead of {cls.__name__}: {e}"
    assert isinstance(e, dialpool.Error)
    got = (e.code, e.layer, e.limit, e.sqlstate)
    assert got == (code, layer, limit, sqlstate), f"(code, layer, limit, sqlstate) = {got}: {e}"
    assert e.is_timeout == issubclass(cls, TimeoutError), e
    if elapsed is not None:
        assert e.elapsed is not None and elapsed[0] <= e.elapsed <= elapsed[1], (e.elapsed, str(e))
    else:
        assert e.elapsed is None or e.elapsed >= 0, e.elapsed
    text = str(e)
    assert text and "\n" not in text and text == e.args[0], repr(text)
    if layer is not None:
        assert text.startswith(f"{layer}: "), text
    for part in contains:
        assert part in text, (part, text)
    assert repr(e).startswith(f"{cls.__name__}("), repr(e)
    # The attributes survive pickling (multiprocessing, concurrent.futures).
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is cls and str(back) == text
    assert (back.code, back.layer, back.limit, back.sqlstate, back.elapsed) == (*got, e.elapsed)
