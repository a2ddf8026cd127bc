"""PEP 249: module attributes, exception tree, connections, cursors and the
%s / %(name)s parameter style."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import dialpool
from dialpool import _dialpool


# -- module -------------------------------------------------------------------


def test_module_attributes() -> None:
    assert dialpool.apilevel == "2.0"
    assert dialpool.threadsafety == 1
    assert dialpool.paramstyle == "pyformat"
    assert isinstance(dialpool.__version__, str) and dialpool.__version__
    assert dialpool.Date(2024, 1, 2) == dt.date(2024, 1, 2)
    assert dialpool.Time(3, 4, 5) == dt.time(3, 4, 5)
    assert dialpool.Timestamp(2024, 1, 2, 3, 4, 5) == dt.datetime(2024, 1, 2, 3, 4, 5)
    assert dialpool.Binary(b"\x00") == b"\x00"
    assert isinstance(dialpool.DateFromTicks(0), dt.date)
    assert isinstance(dialpool.TimeFromTicks(0), dt.time)
    assert isinstance(dialpool.TimestampFromTicks(0), dt.datetime)
    for name in dialpool.__all__:
        assert hasattr(dialpool, name), name


def test_exception_tree() -> None:
    d = dialpool
    assert issubclass(d.Warning, Exception)
    assert issubclass(d.Error, Exception)
    assert not issubclass(d.Warning, d.Error)
    assert issubclass(d.InterfaceError, d.Error)
    assert issubclass(d.DatabaseError, d.Error)
    for cls in (
        d.DataError,
        d.OperationalError,
        d.IntegrityError,
        d.InternalError,
        d.ProgrammingError,
        d.NotSupportedError,
    ):
        assert issubclass(cls, d.DatabaseError), cls
    timeouts = (
        d.DnsTimeout,
        d.ConnectTimeout,
        d.TlsTimeout,
        d.LoginTimeout,
        d.AcquireTimeout,
        d.QueryTimeout,
        d.ReadTimeout,
        d.WriteTimeout,
    )
    for cls in timeouts:
        assert issubclass(cls, d.OperationalError), cls
        assert issubclass(cls, TimeoutError), cls
    for cls in (d.ConnectionRefused, d.AuthError, d.TlsError, d.PoolClosed, d.Cancelled, d.ConnectionLost, d.DnsError):
        assert issubclass(cls, d.OperationalError), cls
        assert not issubclass(cls, TimeoutError), cls
    assert issubclass(d.ConnectionRefused, ConnectionRefusedError)
    assert issubclass(d.ConnectionLost, ConnectionError)
    assert issubclass(d.InvalidArgument, d.ProgrammingError)
    assert issubclass(d.InvalidArgument, ValueError)
    assert issubclass(d.InvalidState, d.InterfaceError)


def test_errors_pickle() -> None:
    import pickle

    e = dialpool.QueryTimeout("query: timed out", code="DP_QUERY_TIMEOUT", layer="query", limit="deadline", elapsed=1.0)
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is dialpool.QueryTimeout
    assert (back.code, back.layer, back.limit, back.elapsed, str(back)) == (
        "DP_QUERY_TIMEOUT",
        "query",
        "deadline",
        1.0,
        "query: timed out",
    )


# -- connections and cursors --------------------------------------------------


def test_cursor_basics(conn: dialpool.Connection) -> None:
    cur = conn.cursor()
    assert cur.description is None
    assert cur.rowcount == -1
    assert cur.arraysize == 1
    assert cur.execute("SELECT 1 AS a, 'x'::text AS b UNION ALL SELECT 2, 'y' UNION ALL SELECT 3, NULL") is cur
    assert cur.rowcount == 3
    desc = cur.description
    assert desc is not None and [c[0] for c in desc] == ["a", "b"]
    assert len(desc[0]) == 7
    assert desc[0][1] == dialpool.NUMBER and desc[0][1] == 23 and desc[0][1].name == "int4"
    assert desc[1][1] == dialpool.STRING and desc[1][1] != dialpool.NUMBER
    assert cur.fetchone() == (1, "x")
    assert cur.fetchmany() == [(2, "y")]
    assert cur.fetchmany(5) == [(3, None)]
    assert cur.fetchone() is None
    assert cur.fetchall() == []
    cur.execute("SELECT generate_series(1, 10)")
    cur.arraysize = 4
    assert cur.fetchmany() == [(1,), (2,), (3,), (4,)]
    assert cur.fetchall() == [(i,) for i in range(5, 11)]
    cur.execute("SELECT generate_series(1, 3)")
    assert [r[0] for r in cur] == [1, 2, 3]
    cur.setinputsizes([None])
    cur.setoutputsize(10)
    cur.close()
    assert cur.closed
    with pytest.raises(dialpool.InterfaceError):
        cur.execute("SELECT 1")
    with pytest.raises(dialpool.InterfaceError):
        cur.fetchone()


def test_fetch_without_result_is_an_error(conn: dialpool.Connection) -> None:
    cur = conn.cursor()
    with pytest.raises(dialpool.ProgrammingError):
        cur.fetchone()
    cur.execute("SET application_name = 'dbapi'")
    assert cur.description is None
    with pytest.raises(dialpool.ProgrammingError):
        cur.fetchall()


def test_rowcount_and_executemany(conn: dialpool.Connection, table: str) -> None:
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text)")
    assert cur.rowcount == -1  # DDL: the server reports no count
    cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)", [(1, "a"), (2, "b"), (3, "c")])
    assert cur.rowcount == 3
    cur.execute(f"UPDATE {table} SET name = %s WHERE id >= %s", ("z", 2))
    assert cur.rowcount == 2
    assert cur.statusmessage == "UPDATE 2"
    cur.execute(f"DELETE FROM {table} WHERE id = %(id)s", {"id": 1})
    assert cur.rowcount == 1
    cur.execute(f"SELECT id, name FROM {table} ORDER BY id")
    assert cur.fetchall() == [(2, "z"), (3, "z")]
    assert cur.lastrowid is None
    conn.commit()


def test_commit_and_rollback(pg_url: str, pool: dialpool.Pool, table: str) -> None:
    pool.execute(f"CREATE TABLE {table} (id int)")
    with dialpool.connect(pg_url) as c:
        assert not c.autocommit
        cur = c.cursor()
        cur.execute(f"INSERT INTO {table} VALUES (1)")
        assert c.in_transaction
        # Not visible elsewhere before commit.
        assert pool.query(f"SELECT count(*) FROM {table}") == [(0,)]
        c.commit()
        assert not c.in_transaction
        assert pool.query(f"SELECT count(*) FROM {table}") == [(1,)]
        cur.execute(f"INSERT INTO {table} VALUES (2)")
        c.rollback()
        assert pool.query(f"SELECT count(*) FROM {table}") == [(1,)]
        # commit/rollback with no transaction open are no-ops.
        c.commit()
        c.rollback()
        cur.execute(f"INSERT INTO {table} VALUES (3)")
    # Leaving the block without an exception commits, then closes.
    assert pool.query(f"SELECT count(*) FROM {table}") == [(2,)]
    assert c.closed
    with pytest.raises(dialpool.InterfaceError):
        c.cursor()


def test_close_without_commit_rolls_back(pg_url: str, pool: dialpool.Pool, table: str) -> None:
    pool.execute(f"CREATE TABLE {table} (id int)")
    c = dialpool.connect(pg_url)
    c.cursor().execute(f"INSERT INTO {table} VALUES (1)")
    c.close()
    c.close()  # idempotent
    assert pool.query(f"SELECT count(*) FROM {table}") == [(0,)]


def test_autocommit(pg_url: str, pool: dialpool.Pool, table: str) -> None:
    pool.execute(f"CREATE TABLE {table} (id int)")
    with dialpool.connect(pg_url, autocommit=True) as c:
        c.cursor().execute(f"INSERT INTO {table} VALUES (1)")
        assert not c.in_transaction
        assert pool.query(f"SELECT count(*) FROM {table}") == [(1,)]
        c.autocommit = False
        c.cursor().execute(f"INSERT INTO {table} VALUES (2)")
        assert c.in_transaction
        c.autocommit = True  # commits the open transaction
        assert pool.query(f"SELECT count(*) FROM {table}") == [(2,)]


def test_pooled_connection_has_cursors(pool: dialpool.Pool) -> None:
    with pool.acquire() as c:
        assert c.pooled and c.autocommit
        cur = c.cursor()
        cur.execute("SELECT %s + %s", (2, 3))
        assert cur.fetchone() == (5,)
        assert not c.in_transaction


def test_connect_with_options_overrides_url(pg_url: str) -> None:
    with dialpool.connect(pg_url, application_name="dialpool-dbapi-test") as c:
        assert c.query("SHOW application_name") == [("dialpool-dbapi-test",)]


def test_notices(conn: dialpool.Connection) -> None:
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS no_such_table_here_xyz")
    assert any("does not exist" in n for n in cur.notices), cur.notices


# -- the parameter style --------------------------------------------------------


def render(sql: str, params: Any = None, dialect: str = "postgres") -> Any:
    return _dialpool.render(dialect, sql, params)


def test_placeholders_are_numbered_and_typed() -> None:
    sql, params = render("SELECT %s, %s, %s, %s", (1, "x", None, 2.5))
    assert sql == "SELECT $1::int4, $2, $3, $4::float8"
    assert params == ["1", "x", None, "2.5"]
    sql, params = render("SELECT %s", (1,), "mysql")
    assert (sql, params) == ("SELECT ?", ["1"])


def test_literals_comments_and_identifiers_are_left_alone() -> None:
    sql, _ = render(
        "SELECT '%s', 'it''s %s', E'\\'%s', \"col%s\", $$ %s $$, $tag$ %s $tag$ -- %s\n/* %s /* %s */ %s */ %s",
        (1,),
    )
    assert sql == (
        "SELECT '%s', 'it''s %s', E'\\'%s', \"col%s\", $$ %s $$, $tag$ %s $tag$ -- %s\n/* %s /* %s */ %s */ $1::int4"
    )
    # A plain string takes no backslash escapes in PostgreSQL: '\' ends it.
    sql, _ = render("SELECT 'a\\', %s", (1,))
    assert sql == "SELECT 'a\\', $1::int4"
    # $1 and identifiers with $ are not dollar quotes.
    sql, _ = render("SELECT a$b, %s", (1,))
    assert sql == "SELECT a$b, $1::int4"


def test_mysql_literals() -> None:
    sql, _ = render(
        "SELECT 'a\\'%s', \"b%s\", `c%s`, %s # %s\n-- %s\n/* %s */ %s",
        ("x", "y"),
        "mysql",
    )
    assert sql == "SELECT 'a\\'%s', \"b%s\", `c%s`, ? # %s\n-- %s\n/* %s */ ?"
    # `--` without a space is not a MySQL comment.
    sql, _ = render("SELECT 1--%s", (1,), "mysql")
    assert sql == "SELECT 1--?"


def test_percent_escapes() -> None:
    sql, _ = render("SELECT 10 %% 3, %s LIKE 'a%%'", ("x",))
    assert sql == "SELECT 10 % 3, $1 LIKE 'a%%'"
    # Without parameters the SQL goes as written: % needs no doubling.
    sql, params = render("SELECT 10 % 3")
    assert (sql, params) == ("SELECT 10 % 3", [])
    sql, _ = render("SELECT 10 % 3", ())
    assert sql == "SELECT 10 % 3"


def test_named_placeholders() -> None:
    sql, params = render("SELECT %(a)s, %(b)s, %(a)s", {"a": 1, "b": "x", "unused": 3})
    assert sql == "SELECT $1::int4, $2, $1::int4"
    assert params == ["1", "x"]
    sql, params = render("SELECT %(a)s, %(b)s, %(a)s", {"a": 1, "b": "x"}, "mysql")
    assert sql == "SELECT ?, ?, ?"
    assert params == ["1", "x", "1"]


@pytest.mark.parametrize(
    "sql,params,fragment",
    [
        ("SELECT %s, %s", (1,), "2 %s placeholder(s) but 1 parameter(s)"),
        ("SELECT 1", (1,), "0 %s placeholder(s) but 1 parameter(s)"),
        ("SELECT %d", (1,), "unsupported placeholder"),
        ("SELECT 5 % 2, %s", (1,), "unsupported placeholder"),
        ("SELECT %s, %(a)s", (1,), "mixes"),
        ("SELECT %(a)s", (1,), "must be a mapping"),
        ("SELECT %s", {"a": 1}, "params is a mapping"),
        ("SELECT %(b)s", {"a": 1}, 'no key "b"'),
        ("SELECT %(a", {"a": 1}, "%(name)s"),
        ("SELECT %s", "x", "not a string"),
        ("SELECT %s", (object(),), "cannot send a Python object"),
    ],
)
def test_placeholder_errors(sql: str, params: Any, fragment: str) -> None:
    with pytest.raises(dialpool.ProgrammingError) as info:
        render(sql, params)
    assert fragment in str(info.value)
    assert info.value.code == "DP_INVALID_ARGUMENT"


def test_placeholders_against_the_server(pool: dialpool.Pool) -> None:
    rows = pool.query(
        "SELECT %s AS a, '%s' AS lit, 10 %% 3 AS m, \"q\".\"%s\" FROM (SELECT 1 AS \"%s\") q -- %s",
        ("x",),
    )
    assert rows == [("x", "%s", 1, 1)]
    assert pool.query("SELECT %(n)s + %(n)s", {"n": 21}) == [(42,)]
    assert pool.query("SELECT 7 % 4") == [(3,)]
