"""The exception tree: PEP 249's classes, with dialpool's errors beneath them.

Every exception raised by dialpool carries the core's facts:

- ``code``: the error code's name shared with C and Go (``"DP_QUERY_TIMEOUT"``)
- ``layer``: ``"dial"``, ``"login"``, ``"pool"``, ``"query"`` or None
- ``limit``: the option that fired (``"query_timeout"``), ``"deadline"`` for a
  call's own ``timeout=``, or None
- ``sqlstate``: the server's SQLSTATE, or None
- ``elapsed``: seconds spent in the failed operation, or None
- ``is_timeout`` and ``is_retryable`` (true only when nothing of the statement
  reached the server, so a retry cannot run it twice)

``str(error)`` is the core's one-line message.

The class is chosen from the code; for ``DP_SERVER_ERROR`` from the SQLSTATE's
class (its first two characters) as psycopg does: 23 → IntegrityError,
42 → ProgrammingError, 22 → DataError, and so on (``SQLSTATE_CLASSES``).
"""

from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
    "Warning",
    "Error",
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "InvalidArgument",
    "InvalidState",
    "DnsError",
    "DnsTimeout",
    "ConnectTimeout",
    "ConnectionRefused",
    "NetworkUnreachable",
    "NetworkError",
    "TlsError",
    "TlsTimeout",
    "AuthError",
    "LoginTimeout",
    "ProtocolError",
    "AcquireTimeout",
    "PoolClosed",
    "QueryTimeout",
    "ReadTimeout",
    "WriteTimeout",
    "Cancelled",
    "ConnectionLost",
    "SQLSTATE_CLASSES",
]

_builtin_Warning = Warning


class Warning(_builtin_Warning):  # noqa: A001 - the PEP 249 name
    """PEP 249 Warning (not raised by dialpool; notices are on the cursor)."""


class Error(Exception):
    """Base class of every dialpool error (PEP 249 ``Error``)."""

    code: str
    layer: Optional[str]
    limit: Optional[str]
    sqlstate: Optional[str]
    elapsed: Optional[float]
    is_timeout: bool
    is_retryable: bool

    def __init__(
        self,
        message: str = "",
        *,
        code: str = "DP_INTERNAL",
        layer: Optional[str] = None,
        limit: Optional[str] = None,
        sqlstate: Optional[str] = None,
        elapsed: Optional[float] = None,
        is_timeout: bool = False,
        is_retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.layer = layer
        self.limit = limit
        self.sqlstate = sqlstate
        self.elapsed = elapsed
        self.is_timeout = is_timeout
        self.is_retryable = is_retryable

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, code={self.code!r})"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (
            _rebuild,
            (
                type(self),
                str(self),
                {
                    "code": self.code,
                    "layer": self.layer,
                    "limit": self.limit,
                    "sqlstate": self.sqlstate,
                    "elapsed": self.elapsed,
                    "is_timeout": self.is_timeout,
                    "is_retryable": self.is_retryable,
                },
            ),
        )


def _rebuild(cls: Type[Error], message: str, attrs: Dict[str, object]) -> Error:
    e = cls.__new__(cls)
    Error.__init__(e, message, **attrs)  # type: ignore[arg-type]
    return e


class InterfaceError(Error):
    """Misuse of the interface: a closed connection or cursor, a connection
    shared between threads, a pool used after ``fork()``."""


class DatabaseError(Error):
    """Errors that concern the database."""


class DataError(DatabaseError):
    """Bad data: division by zero, a value out of range (SQLSTATE 22)."""


class OperationalError(DatabaseError):
    """The database's operation failed: network, login, pool, limits."""


class IntegrityError(DatabaseError):
    """A constraint was violated (SQLSTATE 23)."""


class InternalError(DatabaseError):
    """The database (or dialpool, code ``DP_INTERNAL``) is in an unexpected state."""


class ProgrammingError(DatabaseError):
    """Bad SQL, a missing table, wrong parameters (SQLSTATE 42, ...)."""


class NotSupportedError(DatabaseError):
    """A feature the database does not support (SQLSTATE 0A)."""


# -- dialpool's errors, by code ------------------------------------------------


class InvalidArgument(ProgrammingError, ValueError):
    """DP_INVALID_ARGUMENT: a bad URL, option, timeout or parameter."""


class InvalidState(InterfaceError):
    """DP_INVALID_STATE: not allowed now (closed, busy, after ``fork()``)."""


class DnsError(OperationalError):
    """DP_DNS_ERROR: the host name could not be resolved."""


class DnsTimeout(OperationalError, TimeoutError):
    """DP_DNS_TIMEOUT: name resolution did not finish in time."""


class ConnectTimeout(OperationalError, TimeoutError):
    """DP_CONNECT_TIMEOUT: the TCP connect did not complete in time."""


class ConnectionRefused(OperationalError, ConnectionRefusedError):
    """DP_CONNECTION_REFUSED: nothing listens on that port."""


class NetworkUnreachable(OperationalError, ConnectionError):
    """DP_NETWORK_UNREACHABLE: no route to the network or host."""


class NetworkError(OperationalError, ConnectionError):
    """DP_NETWORK_ERROR: another operating-system error during the dial."""


class TlsError(OperationalError):
    """DP_TLS_ERROR: certificate verification or handshake failed, or TLS was
    required and refused."""


class TlsTimeout(OperationalError, TimeoutError):
    """DP_TLS_TIMEOUT: the TLS handshake did not complete in time."""


class AuthError(OperationalError):
    """DP_AUTH_FAILED: the server rejected the credentials."""


class LoginTimeout(OperationalError, TimeoutError):
    """DP_LOGIN_TIMEOUT: startup and authentication did not finish in time."""


class ProtocolError(OperationalError):
    """DP_PROTOCOL_ERROR: the peer broke the protocol."""


class AcquireTimeout(OperationalError, TimeoutError):
    """DP_ACQUIRE_TIMEOUT: no pooled connection became free in time."""


class PoolClosed(OperationalError):
    """DP_POOL_CLOSED: the pool was closed."""


class QueryTimeout(OperationalError, TimeoutError):
    """DP_QUERY_TIMEOUT: the statement did not finish in time (it was
    cancelled on the server)."""


class ReadTimeout(OperationalError, TimeoutError):
    """DP_READ_TIMEOUT: the socket stayed silent while a reply was due."""


class WriteTimeout(OperationalError, TimeoutError):
    """DP_WRITE_TIMEOUT: the socket did not accept data in time."""


class Cancelled(OperationalError):
    """DP_CANCELLED: the caller cancelled the operation."""


class ConnectionLost(OperationalError, ConnectionError):
    """DP_CONNECTION_LOST: an established connection broke."""


_BY_CODE: Dict[str, Type[Error]] = {
    "DP_INVALID_ARGUMENT": InvalidArgument,
    "DP_INVALID_STATE": InvalidState,
    "DP_INTERNAL": InternalError,
    "DP_DNS_ERROR": DnsError,
    "DP_DNS_TIMEOUT": DnsTimeout,
    "DP_CONNECT_TIMEOUT": ConnectTimeout,
    "DP_CONNECTION_REFUSED": ConnectionRefused,
    "DP_NETWORK_UNREACHABLE": NetworkUnreachable,
    "DP_TLS_ERROR": TlsError,
    "DP_TLS_TIMEOUT": TlsTimeout,
    "DP_AUTH_FAILED": AuthError,
    "DP_LOGIN_TIMEOUT": LoginTimeout,
    "DP_PROTOCOL_ERROR": ProtocolError,
    "DP_ACQUIRE_TIMEOUT": AcquireTimeout,
    "DP_POOL_CLOSED": PoolClosed,
    "DP_QUERY_TIMEOUT": QueryTimeout,
    "DP_READ_TIMEOUT": ReadTimeout,
    "DP_WRITE_TIMEOUT": WriteTimeout,
    "DP_CANCELLED": Cancelled,
    "DP_CONNECTION_LOST": ConnectionLost,
    "DP_NETWORK_ERROR": NetworkError,
}

#: PEP 249 class of a server error, by SQLSTATE class (first two characters).
#: The classes are the SQL standard's, which PostgreSQL and MySQL share;
#: a class not listed gives DatabaseError.
SQLSTATE_CLASSES: Dict[str, Type[DatabaseError]] = {
    "08": OperationalError,  # connection exception
    "0A": NotSupportedError,  # feature not supported
    "20": ProgrammingError,  # case not found
    "21": ProgrammingError,  # cardinality violation
    "22": DataError,  # data exception
    "23": IntegrityError,  # integrity constraint violation
    "24": InternalError,  # invalid cursor state
    "25": InternalError,  # invalid transaction state
    "26": ProgrammingError,  # invalid SQL statement name
    "27": OperationalError,  # triggered data change violation
    "28": OperationalError,  # invalid authorization specification
    "2B": InternalError,  # dependent privilege descriptors still exist
    "2D": InternalError,  # invalid transaction termination
    "2F": InternalError,  # SQL routine exception
    "34": ProgrammingError,  # invalid cursor name
    "38": InternalError,  # external routine exception
    "39": InternalError,  # external routine invocation exception
    "3B": InternalError,  # savepoint exception
    "3D": ProgrammingError,  # invalid catalog name
    "3F": ProgrammingError,  # invalid schema name
    "40": OperationalError,  # transaction rollback (serialization, deadlock)
    "42": ProgrammingError,  # syntax error or access rule violation
    "44": ProgrammingError,  # WITH CHECK OPTION violation
    "53": OperationalError,  # insufficient resources
    "54": OperationalError,  # program limit exceeded
    "55": OperationalError,  # object not in prerequisite state
    "57": OperationalError,  # operator intervention
    "58": OperationalError,  # system error
    "70": OperationalError,  # MySQL: statement interrupted (KILL QUERY, max_statement_time)
    "72": OperationalError,  # snapshot too old
    "F0": InternalError,  # configuration file error
    "HV": OperationalError,  # foreign data wrapper error
    "HY": OperationalError,  # MySQL's general error
    "P0": InternalError,  # PL/pgSQL error
    "XX": InternalError,  # internal error
}


def _from_core(
    code: str,
    message: str,
    layer: Optional[str],
    limit: Optional[str],
    sqlstate: Optional[str],
    elapsed: Optional[float],
    is_timeout: bool,
    is_retryable: bool,
) -> Error:
    """Called by the extension module for every core error."""
    cls: Type[Error]
    if code == "DP_SERVER_ERROR":
        cls = SQLSTATE_CLASSES.get((sqlstate or "")[:2].upper(), DatabaseError)
    else:
        cls = _BY_CODE.get(code, DatabaseError)
    return cls(
        message,
        code=code,
        layer=layer,
        limit=limit,
        sqlstate=sqlstate,
        elapsed=elapsed,
        is_timeout=is_timeout,
        is_retryable=is_retryable,
    )
