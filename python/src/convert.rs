//! Python values to statement parameters and result text to Python values.
//!
//! This file is the one place where database types meet Python types, for
//! both databases: [`type_info`] is the table of result types (PostgreSQL
//! type OIDs and MySQL column type codes) and [`to_param`] the table of
//! parameter types. The core moves every value as text; here a result cell
//! is parsed by its column's type, and a parameter is written as text with
//! (for PostgreSQL) a cast naming its Python type. A value that does not
//! fit its Python type (PostgreSQL `infinity` dates, years past 9999, MySQL
//! zero dates, intervals in a non-default `IntervalStyle`) comes back as
//! the server's text rather than failing the whole result.

use std::collections::HashMap;
use std::fmt::Write as _;

use dialpool::Error;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyType,
};

use crate::errors::core_err;
use crate::sql::{Decoration, Dialect};

/// How a result column's text becomes a Python value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Float,
    Decimal,
    Bool,
    Text,
    /// MySQL strings and blobs, whose type codes are shared by text and
    /// binary columns: [`rows`] decides by the column's `binary` flag (its
    /// character set), so VARBINARY and BLOB give `bytes` and VARCHAR and
    /// TEXT `str` whatever the content, in both protocols.
    TextOrBytes,
    /// PostgreSQL bytea (hex output, or the old escape format).
    Bytea,
    /// Raw bytes (MySQL BIT, GEOMETRY).
    Bytes,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    /// PostgreSQL interval in the default `IntervalStyle` (postgres).
    Interval,
    /// MySQL TIME, a signed duration up to 838 hours.
    MysqlTime,
    Uuid,
    Null,
}

/// What a result column's type is, for conversion and for PEP 249's
/// `description` and type objects.
#[derive(Debug, Clone, Copy)]
pub struct TypeInfo {
    pub name: Option<&'static str>,
    pub kind: Kind,
    /// PEP 249 type object: STRING, BINARY, NUMBER, DATETIME or ROWID.
    pub category: Option<&'static str>,
}

const fn info(name: &'static str, kind: Kind, category: &'static str) -> TypeInfo {
    TypeInfo {
        name: Some(name),
        kind,
        category: if category.is_empty() {
            None
        } else {
            Some(category)
        },
    }
}

/// The result type table: PostgreSQL type OIDs (`pg_type.oid`) and MySQL
/// column type codes (`enum_field_types`). Anything else is text.
pub fn type_info(dialect: Dialect, type_id: u32) -> TypeInfo {
    use Kind::*;
    match dialect {
        Dialect::Postgres => match type_id {
            16 => info("bool", Bool, ""),
            17 => info("bytea", Bytea, "BINARY"),
            18 => info("char", Text, "STRING"),
            19 => info("name", Text, "STRING"),
            20 => info("int8", Int, "NUMBER"),
            21 => info("int2", Int, "NUMBER"),
            23 => info("int4", Int, "NUMBER"),
            25 => info("text", Text, "STRING"),
            26 => info("oid", Int, "ROWID"),
            114 => info("json", Text, "STRING"),
            142 => info("xml", Text, "STRING"),
            700 => info("float4", Float, "NUMBER"),
            701 => info("float8", Float, "NUMBER"),
            705 => info("unknown", Text, "STRING"),
            790 => info("money", Text, "NUMBER"),
            1042 => info("bpchar", Text, "STRING"),
            1043 => info("varchar", Text, "STRING"),
            1082 => info("date", Date, "DATETIME"),
            1083 => info("time", Time, "DATETIME"),
            1114 => info("timestamp", Timestamp, "DATETIME"),
            1184 => info("timestamptz", TimestampTz, "DATETIME"),
            1186 => info("interval", Interval, "DATETIME"),
            1266 => info("timetz", TimeTz, "DATETIME"),
            1700 => info("numeric", Decimal, "NUMBER"),
            2950 => info("uuid", Uuid, "STRING"),
            3802 => info("jsonb", Text, "STRING"),
            _ => TypeInfo {
                name: None,
                kind: Text,
                category: None,
            },
        },
        Dialect::Mysql => match type_id {
            0 => info("DECIMAL", Decimal, "NUMBER"),
            1 => info("TINY", Int, "NUMBER"),
            2 => info("SHORT", Int, "NUMBER"),
            3 => info("LONG", Int, "NUMBER"),
            4 => info("FLOAT", Float, "NUMBER"),
            5 => info("DOUBLE", Float, "NUMBER"),
            6 => info("NULL", Null, ""),
            7 => info("TIMESTAMP", Timestamp, "DATETIME"),
            8 => info("LONGLONG", Int, "NUMBER"),
            9 => info("INT24", Int, "NUMBER"),
            10 => info("DATE", Date, "DATETIME"),
            11 => info("TIME", MysqlTime, "DATETIME"),
            12 => info("DATETIME", Timestamp, "DATETIME"),
            13 => info("YEAR", Int, "NUMBER"),
            14 => info("NEWDATE", Date, "DATETIME"),
            15 => info("VARCHAR", TextOrBytes, "STRING"),
            16 => info("BIT", Bytes, "BINARY"),
            17 => info("TIMESTAMP2", Timestamp, "DATETIME"),
            18 => info("DATETIME2", Timestamp, "DATETIME"),
            19 => info("TIME2", MysqlTime, "DATETIME"),
            245 => info("JSON", Text, "STRING"),
            246 => info("NEWDECIMAL", Decimal, "NUMBER"),
            247 => info("ENUM", Text, "STRING"),
            248 => info("SET", Text, "STRING"),
            249 => info("TINY_BLOB", TextOrBytes, "BINARY"),
            250 => info("MEDIUM_BLOB", TextOrBytes, "BINARY"),
            251 => info("LONG_BLOB", TextOrBytes, "BINARY"),
            252 => info("BLOB", TextOrBytes, "BINARY"),
            253 => info("VAR_STRING", TextOrBytes, "STRING"),
            254 => info("STRING", TextOrBytes, "STRING"),
            255 => info("GEOMETRY", Bytes, "BINARY"),
            _ => TypeInfo {
                name: None,
                kind: TextOrBytes,
                category: None,
            },
        },
    }
}

/// A MySQL string or blob column's kind by its `binary` flag.
fn refine(kind: Kind, column: &dialpool::Column) -> Kind {
    match (kind, column.binary) {
        (Kind::TextOrBytes, true) => Kind::Bytes,
        (Kind::TextOrBytes, false) => Kind::Text,
        (other, _) => other,
    }
}

/// The Python classes the conversions build, imported once.
struct Classes<'py> {
    decimal: &'py Bound<'py, PyType>,
    datetime: &'py Bound<'py, PyType>,
    date: &'py Bound<'py, PyType>,
    time: &'py Bound<'py, PyType>,
    timedelta: &'py Bound<'py, PyType>,
    timezone: &'py Bound<'py, PyType>,
    uuid: &'py Bound<'py, PyType>,
}

static DECIMAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DATETIME: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DATE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TIME: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TIMEDELTA: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TIMEZONE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static UUID: PyOnceLock<Py<PyType>> = PyOnceLock::new();

impl<'py> Classes<'py> {
    fn get(py: Python<'py>) -> PyResult<Classes<'py>> {
        Ok(Classes {
            decimal: DECIMAL.import(py, "decimal", "Decimal")?,
            datetime: DATETIME.import(py, "datetime", "datetime")?,
            date: DATE.import(py, "datetime", "date")?,
            time: TIME.import(py, "datetime", "time")?,
            timedelta: TIMEDELTA.import(py, "datetime", "timedelta")?,
            timezone: TIMEZONE.import(py, "datetime", "timezone")?,
            uuid: UUID.import(py, "uuid", "UUID")?,
        })
    }
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

/// Turns a result's cells into Python values, one column type at a time.
pub struct Decoder<'py> {
    py: Python<'py>,
    classes: Classes<'py>,
    zones: HashMap<i32, Bound<'py, PyAny>>,
}

impl<'py> Decoder<'py> {
    pub fn new(py: Python<'py>) -> PyResult<Decoder<'py>> {
        Ok(Decoder {
            py,
            classes: Classes::get(py)?,
            zones: HashMap::new(),
        })
    }

    /// The value of one non-NULL cell.
    pub fn cell(&mut self, kind: Kind, raw: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        let Ok(text) = std::str::from_utf8(raw) else {
            return Ok(PyBytes::new(py, raw).into_any());
        };
        let value = match kind {
            Kind::Text | Kind::TextOrBytes => return Ok(PyString::new(py, text).into_any()),
            Kind::Bytes => return Ok(PyBytes::new(py, raw).into_any()),
            Kind::Null => return Ok(py.None().into_bound(py)),
            Kind::Int => self.int(text),
            Kind::Float => parse_float(text).map(|f| PyFloat::new(py, f).into_any()),
            Kind::Bool => match text {
                "t" | "true" | "1" => Some(PyBool::new(py, true).to_owned().into_any()),
                "f" | "false" | "0" => Some(PyBool::new(py, false).to_owned().into_any()),
                _ => None,
            },
            Kind::Decimal => self.classes.decimal.call1((text,)).ok(),
            Kind::Bytea => decode_bytea(text).map(|b| PyBytes::new(py, &b).into_any()),
            Kind::Uuid => self.classes.uuid.call1((text,)).ok(),
            Kind::Date => match parse_date(text) {
                Some((y, m, d, "")) => self.classes.date.call1((y, m, d)).ok(),
                _ => None,
            },
            Kind::Time | Kind::TimeTz => self.time(text, kind == Kind::TimeTz),
            Kind::Timestamp | Kind::TimestampTz => self.timestamp(text, kind == Kind::TimestampTz),
            Kind::Interval => parse_interval(text).and_then(|us| self.timedelta(us)),
            Kind::MysqlTime => parse_mysql_time(text).and_then(|us| self.timedelta(us)),
        };
        Ok(value.unwrap_or_else(|| PyString::new(py, text).into_any()))
    }

    fn int(&self, text: &str) -> Option<Bound<'py, PyAny>> {
        let py = self.py;
        if let Ok(v) = text.parse::<i64>() {
            return v.into_pyobject(py).ok().map(Bound::into_any);
        }
        if let Ok(v) = text.parse::<u64>() {
            return v.into_pyobject(py).ok().map(Bound::into_any);
        }
        None
    }

    fn zone(&mut self, offset: i32) -> Option<Bound<'py, PyAny>> {
        if let Some(z) = self.zones.get(&offset) {
            return Some(z.clone());
        }
        let delta = self.classes.timedelta.call1((0, offset)).ok()?;
        let zone = self.classes.timezone.call1((delta,)).ok()?;
        self.zones.insert(offset, zone.clone());
        Some(zone)
    }

    fn time(&mut self, text: &str, with_zone: bool) -> Option<Bound<'py, PyAny>> {
        let (h, m, s, us, rest) = parse_clock(text)?;
        let tz = if with_zone {
            Some(self.zone(parse_offset(rest)?)?)
        } else if rest.is_empty() {
            None
        } else {
            return None;
        };
        self.classes.time.call1((h, m, s, us, tz)).ok()
    }

    fn timestamp(&mut self, text: &str, with_zone: bool) -> Option<Bound<'py, PyAny>> {
        let (y, mo, d, rest) = parse_date(text)?;
        let rest = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('T'))?;
        let (h, mi, s, us, rest) = parse_clock(rest)?;
        let tz = if with_zone {
            Some(self.zone(parse_offset(rest)?)?)
        } else if rest.is_empty() {
            None
        } else {
            return None;
        };
        self.classes
            .datetime
            .call1((y, mo, d, h, mi, s, us, tz))
            .ok()
    }

    fn timedelta(&self, micros: i128) -> Option<Bound<'py, PyAny>> {
        let days = micros.div_euclid(86_400_000_000);
        let rest = micros.rem_euclid(86_400_000_000);
        let days = i64::try_from(days).ok()?;
        let secs = (rest / 1_000_000) as i64;
        let us = (rest % 1_000_000) as i64;
        self.classes.timedelta.call1((days, secs, us)).ok()
    }
}

/// Rows of `result` as a list of tuples. A MySQL string or blob column
/// given as [`Kind::TextOrBytes`] is decoded as its `binary` flag says.
///
/// The hot loop of a large fetch: it builds the list and the tuples with
/// the C API directly (no intermediate `Vec` of rows or cells), makes the
/// common cells (int, float, text, numeric, bool, NULL) from the bytes
/// without a Rust `String` or a Python `str` on the way, and leaves the
/// other types to [`Decoder::cell`].
pub fn rows<'py>(
    py: Python<'py>,
    result: &dialpool::QueryResult,
    kinds: &[Kind],
) -> PyResult<Bound<'py, PyList>> {
    let kinds: Vec<Kind> = kinds
        .iter()
        .zip(result.columns())
        .map(|(kind, column)| refine(*kind, column))
        .collect();
    let nrows = result.row_count();
    let ncols = kinds.len();
    let (Ok(py_nrows), Ok(py_ncols)) = (
        ffi::Py_ssize_t::try_from(nrows),
        ffi::Py_ssize_t::try_from(ncols),
    ) else {
        return Err(pyo3::exceptions::PyOverflowError::new_err(
            "result too large for a Python list",
        ));
    };
    // Imported once per result, and only when a column needs it.
    let decimal = if kinds.contains(&Kind::Decimal) {
        Some(DECIMAL.import(py, "decimal", "Decimal")?)
    } else {
        None
    };
    let mut decoder: Option<Decoder<'py>> = None;
    // The cyclic GC tracks every new tuple, and each collection then walks
    // the rows made so far until it finds they hold no containers. Every
    // value made here is atomic for the GC (int, float, str, bytes,
    // Decimal, datetime types) except uuid.UUID, a Python class: without a
    // UUID column a row can never be part of a cycle, so it is untracked at
    // once, as CPython itself would do at its next collection.
    let untrack = !kinds.contains(&Kind::Uuid);
    // SAFETY: PyList_New returns a new reference or NULL with an exception
    // set; from_owned_ptr_or_err takes either over. Its slots start NULL,
    // which list_dealloc and the GC accept if we return early on an error.
    let list = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyList_New(py_nrows))? };
    for row in 0..nrows {
        // SAFETY: as for the list; the Bound owns the tuple until it is
        // handed to the list, so an early return frees it.
        let tuple = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyTuple_New(py_ncols))? };
        for (col, kind) in kinds.iter().enumerate() {
            let value: *mut ffi::PyObject = match result.bytes(row, col) {
                None => py.None().into_ptr(),
                Some(raw) => match fast_cell(py, *kind, raw, decimal) {
                    Some(ptr) => ptr,
                    None => {
                        let decoder = match &mut decoder {
                            Some(d) => d,
                            None => decoder.insert(Decoder::new(py)?),
                        };
                        decoder.cell(*kind, raw)?.into_ptr()
                    }
                },
            };
            // SAFETY: `tuple` is a new tuple of `ncols` slots and col <
            // ncols; PyTuple_SetItem steals `value`, a new reference.
            if unsafe { ffi::PyTuple_SetItem(tuple.as_ptr(), col as ffi::Py_ssize_t, value) } != 0 {
                return Err(PyErr::fetch(py));
            }
        }
        if untrack {
            // SAFETY: a tuple is a GC object, tracked since PyTuple_New.
            unsafe { ffi::PyObject_GC_UnTrack(tuple.as_ptr().cast()) };
        }
        // SAFETY: row < nrows, the list's length; the list steals the tuple.
        if unsafe { ffi::PyList_SetItem(list.as_ptr(), row as ffi::Py_ssize_t, tuple.into_ptr()) }
            != 0
        {
            return Err(PyErr::fetch(py));
        }
    }
    // SAFETY: made by PyList_New above.
    Ok(unsafe { list.cast_into_unchecked::<PyList>() })
}

/// A new reference to the value of a non-NULL cell of the common kinds,
/// made straight from its bytes; None for everything else (other kinds,
/// text that is not what the type says), which [`Decoder::cell`] handles
/// with its fallbacks. Never leaves an exception set.
fn fast_cell(
    py: Python<'_>,
    kind: Kind,
    raw: &[u8],
    decimal: Option<&Bound<'_, PyType>>,
) -> Option<*mut ffi::PyObject> {
    let len = ffi::Py_ssize_t::try_from(raw.len()).ok()?;
    match kind {
        Kind::Int => {
            let v = parse_i64(raw)?;
            // SAFETY: returns a new reference or NULL with an exception set.
            new_or_clear(py, unsafe { ffi::PyLong_FromLongLong(v) })
        }
        Kind::Float => {
            let f = parse_float(std::str::from_utf8(raw).ok()?)?;
            // SAFETY: as above.
            new_or_clear(py, unsafe { ffi::PyFloat_FromDouble(f) })
        }
        Kind::Text => {
            // Python validates the UTF-8 itself; bytes that are not UTF-8
            // fail here and come back as bytes from the decoder.
            // SAFETY: `raw` is valid for `len` bytes.
            new_or_clear(py, unsafe {
                ffi::PyUnicode_FromStringAndSize(raw.as_ptr().cast(), len)
            })
        }
        Kind::Decimal => {
            let decimal = decimal?;
            // SAFETY: `raw` is valid for `len` bytes.
            let text = new_or_clear(py, unsafe {
                ffi::PyUnicode_FromStringAndSize(raw.as_ptr().cast(), len)
            })?;
            // SAFETY: `text` is a new reference, owned by the Bound.
            let text = unsafe { Bound::from_owned_ptr(py, text) };
            // A text Decimal() refuses ("NaN" is accepted) comes back as
            // text from the decoder, as before.
            decimal.call1((text,)).ok().map(Bound::into_ptr)
        }
        Kind::Bool => match raw {
            b"t" | b"true" | b"1" => Some(PyBool::new(py, true).to_owned().into_ptr()),
            b"f" | b"false" | b"0" => Some(PyBool::new(py, false).to_owned().into_ptr()),
            _ => None,
        },
        _ => None,
    }
}

/// `ptr` if the C API call made an object; on NULL, clears its exception
/// so the caller can fall back.
fn new_or_clear(py: Python<'_>, ptr: *mut ffi::PyObject) -> Option<*mut ffi::PyObject> {
    if ptr.is_null() {
        drop(PyErr::take(py));
        None
    } else {
        Some(ptr)
    }
}

/// A decimal integer that fits an i64 (an optional `-` and up to 18
/// digits, which cannot overflow); None for anything else, which the
/// decoder parses in full (u64, out-of-range values as text).
fn parse_i64(raw: &[u8]) -> Option<i64> {
    let (negative, digits) = match raw.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, raw),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(d - b'0');
    }
    Some(if negative { -v } else { v })
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// bytea text: `\x` plus hex (the default), or the escape format.
fn decode_bytea(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    if let Some(hex) = text.strip_prefix("\\x") {
        let hex = hex.as_bytes();
        if hex.len() % 2 != 0 {
            return None;
        }
        return hex
            .chunks(2)
            .map(|p| Some(hex_digit(p[0])? << 4 | hex_digit(p[1])?))
            .collect();
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let digits = b.get(i + 1..i + 4)?;
            let mut v: u32 = 0;
            for d in digits {
                if !(b'0'..=b'7').contains(d) {
                    return None;
                }
                v = v * 8 + u32::from(d - b'0');
            }
            out.push(u8::try_from(v).ok()?);
            i += 4;
        }
    }
    Some(out)
}

fn digits(s: &str, n: usize) -> Option<(u32, &str)> {
    let head = s.get(..n)?;
    if !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((head.parse().ok()?, &s[n..]))
}

/// `YYYY-MM-DD` and what follows it.
fn parse_date(text: &str) -> Option<(u32, u32, u32, &str)> {
    let (y, rest) = digits(text, 4)?;
    let (m, rest) = digits(rest.strip_prefix('-')?, 2)?;
    let (d, rest) = digits(rest.strip_prefix('-')?, 2)?;
    Some((y, m, d, rest))
}

/// `HH:MM:SS[.ffffff]` and what follows it.
fn parse_clock(text: &str) -> Option<(u32, u32, u32, u32, &str)> {
    let (h, rest) = digits(text, 2)?;
    let (m, rest) = digits(rest.strip_prefix(':')?, 2)?;
    let (s, mut rest) = digits(rest.strip_prefix(':')?, 2)?;
    let mut us = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 6 {
            return None;
        }
        us = frac[..n].parse::<u32>().ok()? * 10u32.pow((6 - n) as u32);
        rest = &frac[n..];
    }
    Some((h, m, s, us, rest))
}

/// `+HH`, `+HH:MM` or `+HH:MM:SS` as seconds east of UTC; nothing after it.
fn parse_offset(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (h, mut rest) = digits(rest, 2)?;
    let mut secs = h * 3600;
    if let Some(r) = rest.strip_prefix(':') {
        let (m, r) = digits(r, 2)?;
        secs += m * 60;
        rest = r;
        if let Some(r) = rest.strip_prefix(':') {
            let (s, r) = digits(r, 2)?;
            secs += s;
            rest = r;
        }
    }
    if !rest.is_empty() {
        return None;
    }
    Some(sign * i32::try_from(secs).ok()?)
}

/// `[-]H:MM:SS[.ffffff]` (any number of hour digits) as microseconds.
fn parse_signed_clock(text: &str) -> Option<i128> {
    let (negative, text) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let colon = text.find(':')?;
    let hours: i128 = text[..colon].parse().ok()?;
    if text[..colon].bytes().any(|b| !b.is_ascii_digit()) {
        return None;
    }
    let rest = &text[colon + 1..];
    let (m, rest) = digits(rest, 2)?;
    let (s, rest) = digits(rest.strip_prefix(':')?, 2)?;
    let mut us: i128 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        if frac.is_empty() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        us = i128::from(frac.parse::<u32>().ok()?) * 10i128.pow((6 - frac.len()) as u32);
    } else if !rest.is_empty() {
        return None;
    }
    if m > 59 || s > 59 {
        return None;
    }
    // Checked: the text comes from the network.
    let total = hours
        .checked_mul(3_600_000_000)?
        .checked_add((i128::from(m) * 60 + i128::from(s)) * 1_000_000 + us)?;
    Some(if negative { -total } else { total })
}

fn parse_mysql_time(text: &str) -> Option<i128> {
    parse_signed_clock(text)
}

/// PostgreSQL's default interval output (`IntervalStyle = postgres`):
/// `1 year 2 mons -3 days +04:05:06.5`. A year counts as 365 days and a
/// month as 30, as Python's `timedelta` has neither.
fn parse_interval(text: &str) -> Option<i128> {
    let mut total: i128 = 0;
    let mut tokens = text.split_ascii_whitespace();
    let mut any = false;
    while let Some(tok) = tokens.next() {
        any = true;
        if tok.contains(':') {
            total = total.checked_add(parse_signed_clock(tok)?)?;
            continue;
        }
        let n: i128 = tok.parse().ok()?;
        let days_per = match tokens.next()? {
            "year" | "years" => 365,
            "mon" | "mons" => 30,
            "day" | "days" => 1,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(days_per * 86_400_000_000)?)?;
    }
    any.then_some(total)
}

// ---------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------

/// The server type a parameter is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// Left for the server to infer (str, None).
    Untyped,
    Int4,
    Int8,
    Numeric,
    Float8,
    Bool,
    Bytes,
    Timestamp,
    TimestampTz,
    Date,
    Time,
    TimeTz,
    Interval,
    Uuid,
}

/// One parameter as text (`None` for SQL NULL) and its type.
#[derive(Debug, Clone)]
pub struct Param {
    pub text: Option<String>,
    pub ty: ParamType,
}

/// How parameter `ty` is written in the statement.
pub fn decoration(dialect: Dialect, ty: ParamType) -> Decoration {
    let suffix = match (dialect, ty) {
        (Dialect::Mysql, ParamType::Bytes) => {
            return Decoration {
                prefix: "UNHEX(",
                suffix: ")",
            }
        }
        (Dialect::Mysql, _) | (_, ParamType::Untyped) => return Decoration::NONE,
        (_, ParamType::Int4) => "::int4",
        (_, ParamType::Int8) => "::int8",
        (_, ParamType::Numeric) => "::numeric",
        (_, ParamType::Float8) => "::float8",
        (_, ParamType::Bool) => "::bool",
        (_, ParamType::Bytes) => "::bytea",
        (_, ParamType::Timestamp) => "::timestamp",
        (_, ParamType::TimestampTz) => "::timestamptz",
        (_, ParamType::Date) => "::date",
        (_, ParamType::Time) => "::time",
        (_, ParamType::TimeTz) => "::timetz",
        (_, ParamType::Interval) => "::interval",
        (_, ParamType::Uuid) => "::uuid",
    };
    Decoration { prefix: "", suffix }
}

fn param(text: String, ty: ParamType) -> Param {
    Param {
        text: Some(text),
        ty,
    }
}

fn hex(bytes: &[u8], prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + bytes.len() * 2);
    s.push_str(prefix);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn is_aware(value: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(!value.call_method0("utcoffset")?.is_none())
}

/// Python value → parameter text. Supported: None, bool, int, float, str,
/// bytes/bytearray/memoryview, Decimal, datetime, date, time, timedelta,
/// UUID (and their subclasses).
pub fn to_param(value: &Bound<'_, PyAny>, dialect: Dialect) -> PyResult<Param> {
    let py = value.py();
    let pg = dialect == Dialect::Postgres;
    if value.is_none() {
        return Ok(Param {
            text: None,
            ty: ParamType::Untyped,
        });
    }
    if value.is_instance_of::<PyString>() {
        let s: String = value.extract()?;
        return Ok(param(s, ParamType::Untyped));
    }
    if value.is_instance_of::<PyBool>() {
        let b = value.is_truthy()?;
        let text = match (pg, b) {
            (true, true) => "true",
            (true, false) => "false",
            (false, true) => "1",
            (false, false) => "0",
        };
        return Ok(param(text.into(), ParamType::Bool));
    }
    if value.is_instance_of::<PyInt>() {
        // The smallest of int4, int8 and numeric that holds the value:
        // PostgreSQL widens an int4 where an int8 is wanted, never the
        // reverse (pg_terminate_backend(int4) refuses an int8).
        return Ok(match value.extract::<i64>() {
            Ok(v) if i32::try_from(v).is_ok() => param(v.to_string(), ParamType::Int4),
            Ok(v) => param(v.to_string(), ParamType::Int8),
            Err(_) => param(value.str()?.to_cow()?.into_owned(), ParamType::Numeric),
        });
    }
    if value.is_instance_of::<PyFloat>() {
        let f: f64 = value.extract()?;
        let text = if f.is_nan() {
            "NaN".to_string()
        } else if f.is_infinite() {
            if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
        } else {
            // Shortest text that reads back as the same double.
            format!("{f:?}")
        };
        return Ok(param(text, ParamType::Float8));
    }
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(param(
            hex(b.as_bytes(), if pg { "\\x" } else { "" }),
            ParamType::Bytes,
        ));
    }
    if let Ok(b) = value.cast::<PyByteArray>() {
        return Ok(param(
            hex(&b.to_vec(), if pg { "\\x" } else { "" }),
            ParamType::Bytes,
        ));
    }
    if value.is_instance_of::<PyMemoryView>() {
        let b = value.call_method0("tobytes")?;
        let b = b.cast::<PyBytes>()?;
        return Ok(param(
            hex(b.as_bytes(), if pg { "\\x" } else { "" }),
            ParamType::Bytes,
        ));
    }
    let classes = Classes::get(py)?;
    if value.is_instance(classes.decimal)? {
        return Ok(param(
            value.str()?.to_cow()?.into_owned(),
            ParamType::Numeric,
        ));
    }
    if value.is_instance(classes.datetime)? {
        let aware = is_aware(value)?;
        let text: String = if aware && !pg {
            // MySQL DATETIME has no zone: the wall-clock time is sent, as
            // PyMySQL and mysqlclient do.
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("tzinfo", py.None())?;
            value
                .call_method("replace", (), Some(&kwargs))?
                .call_method1("isoformat", (" ",))?
                .extract()?
        } else {
            value.call_method1("isoformat", (" ",))?.extract()?
        };
        let ty = if aware {
            ParamType::TimestampTz
        } else {
            ParamType::Timestamp
        };
        return Ok(param(text, ty));
    }
    if value.is_instance(classes.date)? {
        let text: String = value.call_method0("isoformat")?.extract()?;
        return Ok(param(text, ParamType::Date));
    }
    if value.is_instance(classes.time)? {
        let aware = is_aware(value)?;
        let text: String = if aware && !pg {
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("tzinfo", py.None())?;
            value
                .call_method("replace", (), Some(&kwargs))?
                .call_method0("isoformat")?
                .extract()?
        } else {
            value.call_method0("isoformat")?.extract()?
        };
        let ty = if aware {
            ParamType::TimeTz
        } else {
            ParamType::Time
        };
        return Ok(param(text, ty));
    }
    if value.is_instance(classes.timedelta)? {
        let days: i64 = value.getattr("days")?.extract()?;
        let secs: i64 = value.getattr("seconds")?.extract()?;
        let us: i64 = value.getattr("microseconds")?.extract()?;
        let text = if pg {
            format!("{days} days {secs} seconds {us} microseconds")
        } else {
            let total = (i128::from(days) * 86_400 + i128::from(secs)) * 1_000_000 + i128::from(us);
            let sign = if total < 0 { "-" } else { "" };
            let t = total.unsigned_abs();
            format!(
                "{sign}{}:{:02}:{:02}.{:06}",
                t / 3_600_000_000,
                t / 60_000_000 % 60,
                t / 1_000_000 % 60,
                t % 1_000_000
            )
        };
        return Ok(param(text, ParamType::Interval));
    }
    if value.is_instance(classes.uuid)? {
        return Ok(param(value.str()?.to_cow()?.into_owned(), ParamType::Uuid));
    }
    let type_name = value
        .get_type()
        .fully_qualified_name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    Err(core_err(
        py,
        &Error::invalid_argument(format!(
            "cannot send a Python {type_name} as a parameter; supported: None, bool, int, float, \
             str, bytes, bytearray, memoryview, Decimal, datetime, date, time, timedelta, UUID \
             (convert other values first, e.g. json.dumps for JSON)"
        )),
    ))
}
