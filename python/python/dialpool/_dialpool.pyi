"""Type stubs of the extension module (internal; the public API is ``dialpool``)."""

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from datetime import timedelta

_Params = Union[Sequence[Any], Mapping[str, Any], None]
_Timeout = Union[float, int, timedelta, str, None]

VERSION: str

class RawResult:
    description: Optional[List[Tuple[str, int, Optional[str], Optional[str]]]]
    rows: List[Tuple[Any, ...]]
    rowcount: int
    lastrowid: Optional[int]
    command_tag: str
    notices: List[str]
    warnings: int

class PoolEvent:
    """One pool event. Durations are in seconds; fields a kind does not use are None."""

    #: "connect_start", "connect", "acquire", "release", "close",
    #: "acquire_timeout", "leak" or "adjusted".
    kind: str
    #: The connect's time, the acquire's wait, the time held (release, leak),
    #: the connection's age (close), the wait before an acquire timeout.
    elapsed: Optional[float]
    #: A failed connect's or an acquire timeout's error (a dialpool.Error).
    error: Optional[BaseException]
    #: close: "max_lifetime", "max_idle_time", "max_idle", "dead", "broken", "pool_closed".
    reason: Optional[str]
    #: acquire, leak: the label given at acquire.
    label: Optional[str]
    #: connect: the dial phases (name resolution, TCP connect, TLS handshake).
    dns: Optional[float]
    tcp: Optional[float]
    tls: Optional[float]
    #: adjusted: the option, its value before (None: off) and after, and why.
    option: Optional[str]
    previous: Optional[float]
    value: Optional[float]
    why: Optional[str]

class RawPool:
    def __init__(
        self,
        url: str,
        options: Optional[Mapping[str, Any]] = None,
        on_event: Optional[Callable[[PoolEvent], Any]] = None,
    ) -> None: ...
    def metrics_text(self) -> str: ...
    def query(self, sql: str, params: _Params = None, timeout: _Timeout = None) -> RawResult: ...
    def rows(self, sql: str, params: _Params = None, timeout: _Timeout = None) -> List[Tuple[Any, ...]]: ...
    def acquire(self, timeout: _Timeout = None, label: Optional[str] = None) -> RawConn: ...
    def stats(self) -> Dict[str, Any]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def dialect(self) -> str: ...

class RawConn:
    def query(
        self, sql: str, params: _Params = None, timeout: _Timeout = None, begin: bool = False
    ) -> RawResult: ...
    def rows(
        self, sql: str, params: _Params = None, timeout: _Timeout = None, begin: bool = False
    ) -> List[Tuple[Any, ...]]: ...
    @property
    def in_transaction(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def pooled(self) -> bool: ...
    @property
    def dialect(self) -> str: ...
    def close(self) -> None: ...
    def discard(self) -> None: ...

def connect(url: str, options: Optional[Mapping[str, Any]] = None) -> RawConn: ...
def render(dialect: str, sql: str, params: _Params = None) -> Tuple[str, List[Optional[str]]]: ...
