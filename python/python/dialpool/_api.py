"""Pool, Connection, Cursor: the Python shape over the extension module.

Nothing here decides a limit or a default: options go to the core as text,
``timeout=`` becomes the call's own deadline, and errors are the core's.
"""

from __future__ import annotations

import datetime as _dt
import time as _time
from types import TracebackType
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
)

from . import _dialpool
from ._errors import InterfaceError, ProgrammingError

__all__ = [
    "Pool",
    "Connection",
    "Cursor",
    "Transaction",
    "TypeCode",
    "connect",
    "Params",
    "Timeout",
    "Row",
    "Date",
    "Time",
    "Timestamp",
    "DateFromTicks",
    "TimeFromTicks",
    "TimestampFromTicks",
    "Binary",
    "STRING",
    "BINARY",
    "NUMBER",
    "DATETIME",
    "ROWID",
]

#: Parameters: a sequence for ``%s`` placeholders, a mapping for ``%(name)s``.
Params = Union[Sequence[Any], Mapping[str, Any], None]
#: A call's own deadline: seconds, a timedelta, a duration text ("250ms"), or None.
Timeout = Union[float, int, _dt.timedelta, str, None]
#: One result row.
Row = Tuple[Any, ...]
#: A PEP 249 description entry.
Column = Tuple[str, "TypeCode", None, None, None, None, None]


class TypeCode(int):
    """A column's type in ``cursor.description``: the PostgreSQL type OID or
    the MySQL column type code, as an int, with its name and PEP 249 type
    object category (``STRING``, ``BINARY``, ``NUMBER``, ``DATETIME``,
    ``ROWID`` or None)."""

    name: Optional[str]
    category: Optional[str]

    def __new__(cls, value: int, name: Optional[str], category: Optional[str]) -> "TypeCode":
        self = super().__new__(cls, value)
        self.name = name
        self.category = category
        return self

    def __repr__(self) -> str:
        return f"TypeCode({int(self)}, {self.name!r})"


class _TypeObject:
    """A PEP 249 type object: equal to every TypeCode of its category."""

    def __init__(self, category: str) -> None:
        self.category = category

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TypeCode) and other.category == self.category

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.category)

    def __repr__(self) -> str:
        return f"dialpool.{self.category}"


STRING = _TypeObject("STRING")
BINARY = _TypeObject("BINARY")
NUMBER = _TypeObject("NUMBER")
DATETIME = _TypeObject("DATETIME")
ROWID = _TypeObject("ROWID")

Date = _dt.date
Time = _dt.time
Timestamp = _dt.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> _dt.date:
    return Date(*_time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> _dt.time:
    return Time(*_time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> _dt.datetime:
    return Timestamp(*_time.localtime(ticks)[:6])


_TYPE_CODES: Dict[Tuple[int, Optional[str]], TypeCode] = {}


def _description(raw: Optional[List[Tuple[str, int, Optional[str], Optional[str]]]]) -> Optional[List[Column]]:
    if raw is None:
        return None
    out: List[Column] = []
    for name, type_id, type_name, category in raw:
        key = (type_id, type_name)
        code = _TYPE_CODES.get(key)
        if code is None:
            code = _TYPE_CODES.setdefault(key, TypeCode(type_id, type_name, category))
        out.append((name, code, None, None, None, None, None))
    return out


class Pool:
    """A pool of connections to one database, safe to share between threads.

    ``Pool(url, **options)``: keyword options override the URL's, with the
    same names, validation and errors (durations as seconds, a timedelta, or
    text such as ``"250ms"``). Opening makes no connection (beyond
    ``min_idle``, in the background): the first acquire reports what the
    database says.

    ``on_event``: a callable receiving the pool's events, one
    ``dialpool.PoolEvent`` each (connects, acquires, releases, closes with
    their reason, acquire timeouts, leaks, settings adjusted to the
    server), in order, on one thread of the pool's own, never on the
    caller's. Exceptions it raises are logged (logger ``"dialpool"``) and
    go no further. A callable slower than the pool makes it drop events
    (the number dropped is logged). ``close()`` delivers what is queued and
    returns once the callable is no longer running.
    """

    def __init__(
        self,
        url: str,
        on_event: Optional[Callable[["_dialpool.PoolEvent"], Any]] = None,
        **options: Any,
    ) -> None:
        self._raw = _dialpool.RawPool(url, options, on_event)

    def query(self, sql: str, params: Params = (), timeout: Timeout = None) -> List[Row]:
        """Runs one statement on a pooled connection and returns its rows.
        ``timeout`` is one deadline for the acquire and the query together."""
        return self._raw.rows(sql, params, timeout)

    def execute(self, sql: str, params: Params = (), timeout: Timeout = None) -> int:
        """Runs one statement and returns the affected row count (-1 when the
        server does not report one)."""
        return self._raw.query(sql, params, timeout).rowcount

    def acquire(self, timeout: Timeout = None, label: Optional[str] = None) -> "Connection":
        """Checks out a connection within the earlier of ``acquire_timeout``
        and ``timeout``. Use it as a context manager (it goes back to the
        pool at the end) or call ``close()``. ``label`` names it in leak
        warnings."""
        return Connection(self._raw.acquire(timeout, label), autocommit=True)

    def stats(self) -> Dict[str, Any]:
        """A snapshot of the pool's numbers (durations in seconds)."""
        return self._raw.stats()

    def metrics_text(self) -> str:
        """The pool's numbers and latency histograms in the Prometheus text
        exposition format, under the OpenTelemetry database-client names
        (``db_client_connection_count``,
        ``db_client_connection_wait_time_seconds``, ...) plus dialpool's own
        (``dialpool_dial_duration_seconds``, ...). Serve it from a
        ``/metrics`` endpoint, or feed it to ``prometheus_client`` (see the
        README)."""
        return self._raw.metrics_text()

    def close(self) -> None:
        """Closes the pool: waiters fail with PoolClosed, idle connections
        close, checked-out ones close when returned. With ``on_event``, the
        events so far are delivered first and none come after. Idempotent."""
        self._raw.close()

    @property
    def closed(self) -> bool:
        return self._raw.closed

    @property
    def dialect(self) -> str:
        """``"postgres"`` or ``"mysql"``."""
        return self._raw.dialect

    def __enter__(self) -> "Pool":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<dialpool.Pool {self._raw!r}>"


class Connection:
    """A database connection: from ``pool.acquire()`` (autocommit; use
    ``transaction()``) or from ``dialpool.connect()`` (PEP 249: a transaction
    opens with the first statement; ``commit()`` / ``rollback()`` end it).

    One thread at a time: use from another thread while a call runs raises
    InterfaceError. Closing a pooled connection returns it to the pool (an
    open transaction is rolled back there).
    """

    def __init__(self, raw: "_dialpool.RawConn", autocommit: bool) -> None:
        self._raw = raw
        self._autocommit = autocommit
        self._savepoints = 0

    # -- the dialpool methods ------------------------------------------------

    def query(self, sql: str, params: Params = (), timeout: Timeout = None) -> List[Row]:
        """Runs one statement and returns its rows."""
        return self._raw.rows(sql, params, timeout, not self._autocommit)

    def execute(self, sql: str, params: Params = (), timeout: Timeout = None) -> int:
        """Runs one statement and returns the affected row count."""
        return self._raw.query(sql, params, timeout, not self._autocommit).rowcount

    def transaction(self) -> "Transaction":
        """A context manager: BEGIN, then COMMIT at the end or ROLLBACK on an
        exception. Nested, it uses a savepoint."""
        return Transaction(self)

    @property
    def in_transaction(self) -> bool:
        return self._raw.in_transaction

    @property
    def pooled(self) -> bool:
        return self._raw.pooled

    @property
    def dialect(self) -> str:
        return self._raw.dialect

    def discard(self) -> None:
        """Closes the session instead of returning it to the pool (for a
        connection whose session state should not be reused)."""
        self._raw.discard()

    # -- PEP 249 -------------------------------------------------------------

    @property
    def autocommit(self) -> bool:
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        if value and self._raw.in_transaction:
            self.commit()
        self._autocommit = bool(value)

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def cursor(self) -> "Cursor":
        if self._raw.closed:
            raise InterfaceError("the connection is closed", code="DP_INVALID_STATE")
        return Cursor(self)

    def commit(self) -> None:
        if self._raw.in_transaction:
            self._raw.query("COMMIT")

    def rollback(self) -> None:
        if self._raw.in_transaction:
            self._raw.query("ROLLBACK")

    def close(self) -> None:
        """Returns a pooled connection to its pool; closes a ``connect()``
        session (an uncommitted transaction is rolled back by the server).
        Idempotent."""
        self._raw.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if not self._raw.pooled and not self._raw.closed and exc_type is None:
            self.commit()
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("pooled" if self.pooled else "open")
        return f"<dialpool.Connection {self.dialect} {state}>"


class Transaction:
    """``with conn.transaction():`` commits on success, rolls back on an
    exception (the exception propagates). Nested blocks use savepoints."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._savepoint: Optional[str] = None

    def __enter__(self) -> Connection:
        raw = self._conn._raw
        if raw.in_transaction:
            self._conn._savepoints += 1
            self._savepoint = f"dialpool_sp_{self._conn._savepoints}"
            raw.query(f"SAVEPOINT {self._savepoint}")
        else:
            raw.query("BEGIN")
        return self._conn

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        raw = self._conn._raw
        if self._savepoint is not None:
            self._conn._savepoints -= 1
            if exc_type is None:
                raw.query(f"RELEASE SAVEPOINT {self._savepoint}")
            elif raw.in_transaction:
                raw.query(f"ROLLBACK TO SAVEPOINT {self._savepoint}")
            return
        if exc_type is None:
            raw.query("COMMIT")
        elif raw.in_transaction and not raw.closed:
            try:
                raw.query("ROLLBACK")
            except BaseException:
                # The original exception matters more; the pool rolls back
                # or closes the session on release anyway.
                pass


class Cursor:
    """A PEP 249 cursor. Results are fetched whole by ``execute`` and
    handed out by the fetch methods."""

    arraysize: int

    def __init__(self, conn: Connection) -> None:
        self._conn: Optional[Connection] = conn
        self.arraysize = 1
        self._rows: List[Row] = []
        self._pos = 0
        self._description: Optional[List[Column]] = None
        self._rowcount = -1
        self._lastrowid: Optional[int] = None
        self._notices: List[str] = []
        self._command_tag = ""

    @property
    def connection(self) -> Connection:
        return self._live()

    @property
    def description(self) -> Optional[List[Column]]:
        """``(name, type_code, None, None, None, None, None)`` per column of
        the last statement, or None if it returned no rows."""
        return self._description

    @property
    def rowcount(self) -> int:
        """Rows returned or affected by the last statement; -1 before any
        statement or when the server does not say."""
        return self._rowcount

    @property
    def lastrowid(self) -> Optional[int]:
        """MySQL's last insert id; None for PostgreSQL (use RETURNING)."""
        return self._lastrowid

    @property
    def rownumber(self) -> Optional[int]:
        return self._pos if self._description is not None else None

    @property
    def notices(self) -> List[str]:
        """The server's notices from the last statement."""
        return self._notices

    @property
    def statusmessage(self) -> str:
        """PostgreSQL's command tag of the last statement (``INSERT 0 1``)."""
        return self._command_tag

    @property
    def closed(self) -> bool:
        return self._conn is None

    def _live(self) -> Connection:
        if self._conn is None:
            raise InterfaceError("the cursor is closed", code="DP_INVALID_STATE")
        return self._conn

    def execute(self, sql: str, params: Params = None, timeout: Timeout = None) -> "Cursor":
        """Runs one statement. Parameters: ``%s`` with a sequence, or
        ``%(name)s`` with a mapping; ``%%`` is a literal ``%``. Without
        parameters the SQL is sent exactly as written."""
        conn = self._live()
        raw = conn._raw.query(sql, params, timeout, not conn._autocommit)
        self._rows = raw.rows
        self._pos = 0
        self._description = _description(raw.description)
        self._rowcount = raw.rowcount
        self._lastrowid = raw.lastrowid
        self._notices = raw.notices
        self._command_tag = raw.command_tag
        return self

    def executemany(self, sql: str, seq_of_params: Sequence[Params], timeout: Timeout = None) -> "Cursor":
        """Runs the statement once per parameter set; ``rowcount`` is the total."""
        total = 0
        counted = True
        for params in seq_of_params:
            self.execute(sql, params, timeout)
            if self._rowcount < 0:
                counted = False
            else:
                total += self._rowcount
        self._rowcount = total if counted else -1
        return self

    def _check_result(self) -> None:
        self._live()
        if self._description is None:
            raise ProgrammingError("the last statement returned no rows to fetch", code="DP_INVALID_STATE")

    def fetchone(self) -> Optional[Row]:
        self._check_result()
        if self._pos >= len(self._rows):
            return None
        row = self._rows[self._pos]
        self._pos += 1
        return row

    def fetchmany(self, size: Optional[int] = None) -> List[Row]:
        self._check_result()
        n = self.arraysize if size is None else size
        rows = self._rows[self._pos : self._pos + n]
        self._pos += len(rows)
        return rows

    def fetchall(self) -> List[Row]:
        self._check_result()
        rows = self._rows[self._pos :] if self._pos else self._rows
        self._pos = len(self._rows)
        return rows

    def setinputsizes(self, sizes: Any) -> None:
        """PEP 249: accepted and ignored."""

    def setoutputsize(self, size: Any, column: Optional[int] = None) -> None:
        """PEP 249: accepted and ignored."""

    def close(self) -> None:
        self._conn = None
        self._rows = []

    def __iter__(self) -> Iterator[Row]:
        while True:
            row = self.fetchone()
            if row is None:
                return
            yield row

    def __enter__(self) -> "Cursor":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


def connect(url: str, **options: Any) -> Connection:
    """PEP 249: opens one connection without a pool, so its dial and login
    errors come back directly. ``autocommit`` is off: the first statement
    opens a transaction; ``commit()`` or ``rollback()`` ends it. Keyword
    options override the URL's, as for ``Pool``."""
    autocommit = bool(options.pop("autocommit", False))
    return Connection(_dialpool.connect(url, options), autocommit=autocommit)
