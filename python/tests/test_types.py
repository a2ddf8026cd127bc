"""Python values to PostgreSQL and back."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

import pytest

import dialpool

UTC = dt.timezone.utc
PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))

ROUND_TRIPS = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**70,  # beyond int8: sent as numeric, comes back as Decimal
    1.5,
    -0.1,
    1e300,
    5e-324,
    Decimal("3.14159265358979323846264338327950288"),
    Decimal("-1E+20"),
    Decimal("NaN"),
    "",
    "plain",
    "żółw 🐢 \\ ' \" %s",
    b"",
    b"plain ascii, valid UTF-8",
    b"\x00\x01\xff binary \\x",
    bytearray(b"\x02\x03"),
    dt.date(2024, 2, 29),
    dt.date(1, 1, 1),
    dt.date(9999, 12, 31),
    dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
    dt.datetime(2024, 1, 2, 3, 4, 5),
    dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=PLUS_0530),
    dt.time(0, 0),
    dt.time(23, 59, 59, 999999),
    dt.time(12, 30, tzinfo=PLUS_0530),
    dt.timedelta(0),
    dt.timedelta(days=3, seconds=7, microseconds=11),
    dt.timedelta(days=-1, seconds=86399),
    dt.timedelta(microseconds=-1),
    dt.timedelta(days=10000),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Decimal) and a.is_nan():
        return isinstance(b, Decimal) and b.is_nan()
    if isinstance(a, dt.datetime) and a.tzinfo is not None:
        # The server returns the instant in its session time zone.
        return isinstance(b, dt.datetime) and b.tzinfo is not None and a == b
    if isinstance(a, (bytes, bytearray)):
        return isinstance(b, bytes) and bytes(a) == b
    if isinstance(a, int) and a > 2**63 - 1:
        return b == Decimal(a)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=repr)
def test_round_trip_select(pool: dialpool.Pool, value: Any) -> None:
    [(back,)] = pool.query("SELECT %s", (value,))
    assert _same(value, back), (value, back)


def test_special_floats(pool: dialpool.Pool) -> None:
    [(nan, inf, ninf)] = pool.query("SELECT %s, %s, %s", (math.nan, math.inf, -math.inf))
    assert math.isnan(nan) and inf == math.inf and ninf == -math.inf
    [(a, b)] = pool.query("SELECT 'NaN'::float8, '-Infinity'::float4")
    assert math.isnan(a) and b == -math.inf


def test_integer_text_at_every_width(pool: dialpool.Pool) -> None:
    """Integers are read from the text without a Python str: the i64 range
    at its ends, every digit count, signs and zero; numeric integers past
    int8 stay Decimal."""
    values = [0, -0, 7, -7, 2**63 - 1, -(2**63)] + [10**k - 1 for k in range(1, 19)] + [-(10**k) for k in range(19)]
    sql = "SELECT " + ", ".join(f"'{v}'::int8" for v in values)
    [row] = pool.query(sql)
    assert list(row) == values and all(type(v) is int for v in row)
    [(small, word)] = pool.query("SELECT (-32768)::int2, 2147483647::int4")
    assert (small, word) == (-32768, 2147483647)
    [(big,)] = pool.query("SELECT 99999999999999999999::numeric")
    assert big == Decimal("99999999999999999999") and type(big) is Decimal


def test_many_rows_with_nulls(pool: dialpool.Pool) -> None:
    """A larger result through the row builder: NULLs in every column,
    every type of the fast path, the row count and order."""
    rows = pool.query(
        "SELECT g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'r' || g END, "
        "CASE WHEN g % 5 = 0 THEN NULL ELSE g * 0.5 END, g::float8 / 4, g % 2 = 0, "
        "CASE WHEN g % 7 = 0 THEN NULL ELSE g END "
        "FROM generate_series(1, 5000) g"
    )
    assert len(rows) == 5000
    for g, row in enumerate(rows, start=1):
        assert row == (
            g,
            None if g % 3 == 0 else f"r{g}",
            None if g % 5 == 0 else Decimal(g) * Decimal("0.5"),
            g / 4,
            g % 2 == 0,
            None if g % 7 == 0 else g,
        )


def test_rows_untracked_by_the_gc_unless_a_uuid(pool: dialpool.Pool) -> None:
    """Rows of atomic values are left out of the cyclic GC (as CPython
    does at its next collection anyway); a row with a UUID stays in it."""
    import gc

    [plain] = pool.query("SELECT 1, 'a', 1.5::numeric, now(), NULL")
    assert not gc.is_tracked(plain)
    [with_uuid] = pool.query("SELECT 1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid")
    assert gc.is_tracked(with_uuid)
    assert with_uuid[1] == uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")


def test_memoryview(pool: dialpool.Pool) -> None:
    assert pool.query("SELECT %s", (memoryview(b"mv"),)) == [(b"mv",)]


def test_columns_of_every_common_type(pool: dialpool.Pool, table: str) -> None:
    pool.execute(
        f"""CREATE TABLE {table} (
            i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric(10, 3), b bool,
            t text, v varchar(10), c char(3), by bytea, d date, tm time, ttz timetz,
            ts timestamp, tstz timestamptz, iv interval, u uuid, j json, jb jsonb)"""
    )
    row = (
        1,
        2,
        3,
        1.5,
        2.25,
        Decimal("1234567.125"),
        True,
        "text",
        "varchar",
        "ab",
        b"\x00\xff",
        dt.date(2020, 5, 17),
        dt.time(1, 2, 3, 4),
        dt.time(1, 2, 3, tzinfo=PLUS_0530),
        dt.datetime(2020, 5, 17, 1, 2, 3, 456),
        dt.datetime(2020, 5, 17, 1, 2, 3, tzinfo=UTC),
        dt.timedelta(hours=25, milliseconds=5),
        uuid.uuid4(),
        '{"a": 1}',
        '{"b": [1, 2]}',
    )
    placeholders = ", ".join(["%s"] * len(row))
    assert pool.execute(f"INSERT INTO {table} VALUES ({placeholders})", row) == 1
    pool.execute(f"INSERT INTO {table} DEFAULT VALUES")
    [got, nulls] = pool.query(f"SELECT * FROM {table} ORDER BY i2 NULLS LAST")
    expected = list(row)
    expected[9] = "ab "  # char(3) pads
    for want, have in zip(expected, got):
        if isinstance(want, dt.datetime) and want.tzinfo is not None:
            assert have == want
        else:
            assert have == want and type(have) is type(want), (want, have)
    assert nulls == (None,) * len(row)


def test_result_types_from_sql(pool: dialpool.Pool) -> None:
    [row] = pool.query(
        "SELECT 1::int2, 2::int4, 3::int8, 1.25::float4, 12.5::numeric, true, 'x'::name, "
        "'\\x0102'::bytea, '2024-01-02'::date, '10:11:12.5'::time, "
        "'2024-01-02 03:04:05.25+02'::timestamptz, '1 year 2 mons 3 days 04:05:06'::interval, "
        "'-1 days -00:00:01'::interval, 'infinity'::date, '0044-03-15 BC'::date, "
        "'{1,2}'::int[], '127.0.0.1'::inet, 42::oid, '12:00'::time at time zone 'UTC'"
    )
    assert row[:9] == (1, 2, 3, 1.25, Decimal("12.5"), True, "x", b"\x01\x02", dt.date(2024, 1, 2))
    assert row[9] == dt.time(10, 11, 12, 500000)
    assert row[10] == dt.datetime(2024, 1, 2, 1, 4, 5, 250000, tzinfo=UTC)
    # A year counts 365 days and a month 30, as timedelta has neither.
    assert row[11] == dt.timedelta(days=365 + 60 + 3, hours=4, minutes=5, seconds=6)
    assert row[12] == -dt.timedelta(days=1, seconds=1)
    # What does not fit a Python type comes back as the server's text.
    assert row[13] == "infinity"
    assert row[14] == "0044-03-15 BC"
    assert row[15] == "{1,2}"
    assert row[16] == "127.0.0.1"
    assert row[17] == 42
    assert isinstance(row[18], dt.time) and row[18].utcoffset() == dt.timedelta(0)


def test_timestamptz_keeps_the_instant_in_any_session_zone(pg_url: str) -> None:
    when = dt.datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    with dialpool.connect(pg_url, options="-c TimeZone=Asia/Kolkata", autocommit=True) as c:
        [(back,)] = c.query("SELECT %s", (when,))
        assert back == when
        assert back.utcoffset() == dt.timedelta(hours=5, minutes=30)


def test_big_result(pool: dialpool.Pool) -> None:
    rows = pool.query("SELECT g, g::text, g * 0.5 FROM generate_series(1, 100000) g")
    assert len(rows) == 100000
    assert rows[-1] == (100000, "100000", Decimal("50000.0"))


def test_unsupported_parameter_type(pool: dialpool.Pool) -> None:
    with pytest.raises(dialpool.InvalidArgument, match="cannot send a Python dict"):
        pool.query("SELECT %s", ({"a": 1},))


def test_bytea_is_bytes_with_and_without_parameters(pool: dialpool.Pool, table: str) -> None:
    # Valid UTF-8 too: bytea is bytes by its type, never guessed from content.
    pool.execute(f"CREATE TABLE {table} (id int, b bytea, t text)")
    pool.execute(f"INSERT INTO {table} VALUES (1, %s, %s), (2, NULL, NULL)", (b"abc", "abc"))
    simple = pool.query(f"SELECT b, t FROM {table} ORDER BY id")
    extended = pool.query(f"SELECT b, t FROM {table} WHERE id >= %s ORDER BY id", (0,))
    assert simple == extended == [(b"abc", "abc"), (None, None)]
    assert type(simple[0][0]) is bytes and type(extended[0][0]) is bytes
    assert pool.query("SELECT 'abc'::bytea, convert_to('żółw', 'UTF8')") == [(b"abc", "żółw".encode())]
