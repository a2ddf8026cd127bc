"""The same interface against MariaDB (mysql://).

These skip, naming the reason, while the core has no MySQL sessions yet;
they are written against the finished interface and start running as soon
as `mysql://` pools open.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from decimal import Decimal
from typing import Iterator, List

import pytest

import dialpool
from conftest import FullBacklog, marker, refused_port, replace_port, wait_until


@pytest.fixture
def mpool(mariadb_url: str) -> Iterator[dialpool.Pool]:
    with dialpool.Pool(mariadb_url, max_open=8) as p:
        yield p


@pytest.fixture
def mtable(mpool: dialpool.Pool) -> Iterator[str]:
    name = "t_" + uuid.uuid4().hex[:12]
    yield name
    mpool.execute(f"DROP TABLE IF EXISTS {name}")


def running(pool: dialpool.Pool, mark: str) -> int:
    [(n,)] = pool.query(
        "SELECT COUNT(*) FROM information_schema.processlist "
        "WHERE id <> CONNECTION_ID() AND info LIKE %s AND command = 'Query'",
        (f"%{mark}%",),
    )
    return int(n)


def test_dialect_and_basics(mpool: dialpool.Pool) -> None:
    assert mpool.dialect == "mysql"
    assert mpool.query("SELECT 1, 'x', NULL") == [(1, "x", None)]
    assert mpool.query("SELECT %s, %s", (5, "y")) == [("5", "y")]  # `SELECT ?` is text in MySQL
    assert mpool.query("SELECT %(a)s + %(a)s", {"a": 2}) == [(4.0,)]
    assert mpool.query("SELECT 7 % 4") == [(3,)]
    assert mpool.query("SELECT '%s' AS `a%s`, %s # %s", ("z",)) == [("%s", "z")]


def test_dbapi(mariadb_url: str, mpool: dialpool.Pool, mtable: str) -> None:
    mpool.execute(f"CREATE TABLE {mtable} (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20)) ENGINE=InnoDB")
    with dialpool.connect(mariadb_url) as c:
        cur = c.cursor()
        cur.executemany(f"INSERT INTO {mtable} (name) VALUES (%s)", [("a",), ("b",)])
        assert cur.rowcount == 2
        assert cur.lastrowid == 2
        assert c.in_transaction
        assert mpool.query(f"SELECT COUNT(*) FROM {mtable}") == [(0,)]
        c.commit()
        assert mpool.query(f"SELECT COUNT(*) FROM {mtable}") == [(2,)]
        cur.execute(f"DELETE FROM {mtable}")
        c.rollback()
        cur.execute(f"SELECT id, name FROM {mtable} ORDER BY id")
        assert cur.fetchall() == [(1, "a"), (2, "b")]
        desc = cur.description
        assert desc is not None
        assert desc[0][1] == dialpool.NUMBER and desc[1][1] == dialpool.STRING


def test_types_round_trip(mpool: dialpool.Pool, mtable: str) -> None:
    mpool.execute(
        f"""CREATE TABLE {mtable} (
            i INT, bi BIGINT, ub BIGINT UNSIGNED, f DOUBLE, d DECIMAL(20, 6), b BOOL,
            s VARCHAR(50), t TEXT, vb VARBINARY(10), bl BLOB, da DATE, ti TIME(6),
            dt DATETIME(6), ts TIMESTAMP(6) NULL, y YEAR, j JSON, u CHAR(36)
        ) DEFAULT CHARSET=utf8mb4"""
    )
    row = (
        -5,
        2**62,
        2**64 - 1,
        2.5,
        Decimal("12345.678901"),
        True,
        "żółw",
        "text",
        b"\x00\xff",
        b"\xfe\x00blob",
        dt.date(2024, 2, 29),
        dt.timedelta(hours=-30, microseconds=5),
        dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
        dt.datetime(2024, 1, 2, 3, 4, 5),
        2024,
        '{"a": 1}',
        str(uuid.UUID(int=1)),
    )
    mpool.execute(f"INSERT INTO {mtable} VALUES ({', '.join(['%s'] * len(row))})", row)
    mpool.execute(f"INSERT INTO {mtable} () VALUES ()")
    [got, nulls] = mpool.query(f"SELECT * FROM {mtable} ORDER BY i IS NULL")
    expected = list(row)
    expected[5] = 1  # BOOL is TINYINT(1)
    assert list(got) == expected
    assert nulls == (None,) * len(row)


def test_query_timeout_kills_the_statement(mpool: dialpool.Pool) -> None:
    mark = marker()
    start = time.monotonic()
    with pytest.raises(dialpool.QueryTimeout) as info:
        mpool.query(f"SELECT SLEEP(5) /* {mark} */", timeout=2)
    took = time.monotonic() - start
    assert 1.9 < took < 3.0
    e = info.value
    assert isinstance(e, TimeoutError)
    assert (e.code, e.layer, e.limit) == ("DP_QUERY_TIMEOUT", "query", "deadline")
    assert wait_until(lambda: running(mpool, mark) == 0, 1.0)


def test_acquire_timeout(mariadb_url: str) -> None:
    with dialpool.Pool(mariadb_url, max_open=1, acquire_timeout=0.3) as p:
        with p.acquire():
            with pytest.raises(dialpool.AcquireTimeout) as info:
                p.query("SELECT 1")
            assert info.value.layer == "pool"


def test_dial_errors(mariadb_url: str, full_backlog: FullBacklog) -> None:
    with pytest.raises(dialpool.ConnectionRefused):
        dialpool.connect(replace_port(mariadb_url, refused_port()))
    with pytest.raises(dialpool.ConnectTimeout):
        dialpool.connect(replace_port(mariadb_url, full_backlog.port), connect_timeout=0.5)
    scheme, rest = mariadb_url.split("://", 1)
    user, host = rest.split(":", 1)[0], rest.rsplit("@", 1)[1]
    with pytest.raises(dialpool.AuthError):
        dialpool.connect(f"{scheme}://{user}:wrong@{host}")


def test_server_errors(mpool: dialpool.Pool, mtable: str) -> None:
    mpool.execute(f"CREATE TABLE {mtable} (id INT PRIMARY KEY, s VARCHAR(2))")
    mpool.execute(f"INSERT INTO {mtable} VALUES (1, 'a')")
    with pytest.raises(dialpool.IntegrityError) as info:
        mpool.execute(f"INSERT INTO {mtable} VALUES (%s, 'b')", (1,))
    assert info.value.sqlstate == "23000"
    with pytest.raises(dialpool.ProgrammingError):
        mpool.query("SELEC 1")
    with pytest.raises(dialpool.ProgrammingError) as info:
        mpool.query("SELECT * FROM no_such_table_xyz")
    assert info.value.sqlstate == "42S02"
    with pytest.raises(dialpool.DataError):
        mpool.execute(f"INSERT INTO {mtable} VALUES (2, 'too long')")


def test_threads(mariadb_url: str) -> None:
    errors: List[BaseException] = []
    with dialpool.Pool(mariadb_url, max_open=4) as p:
        p.query("SELECT 1")

        def work() -> None:
            try:
                p.query("SELECT SLEEP(0.5)")
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        start = time.monotonic()
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert time.monotonic() - start < 1.5
        assert p.stats()["acquire_count"] >= 5


def test_transaction(mpool: dialpool.Pool, mtable: str) -> None:
    mpool.execute(f"CREATE TABLE {mtable} (id INT) ENGINE=InnoDB")
    with mpool.acquire() as c:
        with pytest.raises(RuntimeError):
            with c.transaction():
                c.execute(f"INSERT INTO {mtable} VALUES (1)")
                raise RuntimeError("roll back")
        with c.transaction():
            c.execute(f"INSERT INTO {mtable} VALUES (2)")
    assert mpool.query(f"SELECT id FROM {mtable}") == [(2,)]


def test_text_and_binary_columns(mpool: dialpool.Pool, mtable: str) -> None:
    """TEXT and BLOB, VARCHAR and VARBINARY share type codes: the column's
    character set decides str or bytes, whatever the content (b"abc" is
    valid UTF-8 and still bytes), in the text protocol (no parameters) and
    the binary one (prepared, with parameters) alike."""
    mpool.execute(
        f"""CREATE TABLE {mtable} (
            id INT, c CHAR(4), vc VARCHAR(10), tt TINYTEXT, t TEXT, mt MEDIUMTEXT, lt LONGTEXT,
            vcb VARCHAR(10) COLLATE utf8mb4_bin, l VARCHAR(10) CHARACTER SET latin1,
            e ENUM('abc', 'x'), st SET('abc', 'x'), j JSON,
            b BINARY(4), vb VARBINARY(10), tb TINYBLOB, bl BLOB, mb MEDIUMBLOB, lb LONGBLOB
        ) DEFAULT CHARSET=utf8mb4"""
    )
    texts = ("abc", "abc", "abc", "abc", "abc", "abc", "abc", "é", "abc", "abc", '"abc"')
    blobs = (b"abc", b"abc", b"abc", b"abc", b"abc", b"abc")
    row = (1, *texts, *blobs)
    mpool.execute(f"INSERT INTO {mtable} VALUES ({', '.join(['%s'] * len(row))})", row)
    mpool.execute(f"INSERT INTO {mtable} (id) VALUES (2)")
    expected = list(row)
    expected[len(texts) + 1] = b"abc\x00"  # BINARY(4) pads with zero bytes
    text_rows = mpool.query(f"SELECT * FROM {mtable} ORDER BY id")
    binary_rows = mpool.query(f"SELECT * FROM {mtable} WHERE id >= %s ORDER BY id", (0,))
    for rows in (text_rows, binary_rows):
        got, nulls = rows
        assert [type(v) for v in got] == [type(v) for v in expected], got
        assert list(got) == expected
        assert nulls == (2,) + (None,) * (len(row) - 1)
    # Expressions: string literals and conversions are text, hex literals,
    # BINARY casts and bytes parameters (sent as UNHEX) are bytes.
    exprs = "'abc', X'616263', CAST('abc' AS BINARY), CONVERT(X'616263' USING utf8mb4), HEX('a'), MD5('')"
    want = ("abc", b"abc", b"abc", "abc", "61", "d41d8cd98f00b204e9800998ecf8427e")
    [text_row] = mpool.query(f"SELECT {exprs}")
    [binary_row] = mpool.query(f"SELECT {exprs}, %s, %s", (b"abc", "abc"))
    assert text_row == want
    assert binary_row == (*want, b"abc", "abc")
    # What is not a string: numbers, temporals and NULL keep their types.
    assert mpool.query("SELECT 1, 2.5, DATE('2024-01-02'), NULL") == [(1, Decimal("2.5"), dt.date(2024, 1, 2), None)]
