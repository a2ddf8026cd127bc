"""dialpool: a connection pool and query-deadline engine for PostgreSQL and
MySQL/MariaDB, with a PEP 249 (DB-API 2.0) interface.

Every layer has its own limit and its own error: a dial that times out
raises ConnectTimeout, an exhausted pool AcquireTimeout, a slow statement
QueryTimeout (cancelled on the server) -- each also a builtin TimeoutError,
each with ``.code``, ``.layer``, ``.limit``, ``.sqlstate`` and ``.elapsed``.

    import dialpool
    with dialpool.Pool("postgres://app@db/app?query_timeout=2s", max_open=20) as pool:
        rows = pool.query("SELECT id, name FROM users WHERE id = %s", (42,), timeout=1.5)

Blocking calls release the GIL; Ctrl-C interrupts them and cancels the
statement on the server.
"""

from . import _errors
from ._errors import (
    SQLSTATE_CLASSES,
    AcquireTimeout,
    AuthError,
    Cancelled,
    ConnectionLost,
    ConnectionRefused,
    ConnectTimeout,
    DatabaseError,
    DataError,
    DnsError,
    DnsTimeout,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    InvalidArgument,
    InvalidState,
    LoginTimeout,
    NetworkError,
    NetworkUnreachable,
    NotSupportedError,
    OperationalError,
    PoolClosed,
    ProgrammingError,
    ProtocolError,
    QueryTimeout,
    ReadTimeout,
    TlsError,
    TlsTimeout,
    Warning,
    WriteTimeout,
)
from ._api import (
    BINARY,
    DATETIME,
    NUMBER,
    ROWID,
    STRING,
    Binary,
    Connection,
    Cursor,
    Date,
    DateFromTicks,
    Params,
    Pool,
    Row,
    Time,
    TimeFromTicks,
    Timeout,
    Timestamp,
    TimestampFromTicks,
    Transaction,
    TypeCode,
    connect,
)
from ._dialpool import VERSION as __version__
from ._dialpool import PoolEvent

#: PEP 249 module globals.
apilevel = "2.0"
#: Threads may share the module and pools; a connection serves one thread at a time.
threadsafety = 1
#: ``%s`` and ``%(name)s``, as psycopg and PyMySQL take them.
paramstyle = "pyformat"

__all__ = [
    "apilevel",
    "threadsafety",
    "paramstyle",
    "connect",
    "Pool",
    "PoolEvent",
    "Connection",
    "Cursor",
    "Transaction",
    "TypeCode",
    "Params",
    "Row",
    "Timeout",
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
    "__version__",
]
# The exception classes: listed once, in _errors.
__all__ += _errors.__all__
