//! Result rows into the text form of [`QueryResult`].
//!
//! Text-protocol rows (COM_QUERY) are length-encoded strings and are copied
//! as they are. Binary-protocol rows (COM_STMT_EXECUTE) carry integers,
//! floats and temporals in binary; they are rendered here to exactly the text
//! the server would have sent for the same value in the text protocol
//! (MariaDB's formatting: `my_gcvt`/`my_fcvt` for floats, the column's
//! fractional-second precision for temporals, ZEROFILL padding), so a caller
//! sees the same strings whether or not the statement had parameters. The
//! integration tests compare both protocols value by value against a real
//! server.

use std::fmt::Write as _;

use mysql_common::constants::{ColumnFlags, ColumnType};

use super::packet::{lenenc, lenenc_bytes};
use crate::rows::QueryResult;

/// What decoding a binary value needs to know about its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ColumnMeta {
    pub kind: ColumnType,
    pub flags: ColumnFlags,
    /// Digits after the point: the fractional-second precision of a
    /// temporal, the scale of a FLOAT(M,D); 31 and above mean "not fixed".
    pub decimals: u8,
    /// Display width, for ZEROFILL.
    pub length: u32,
}

/// The collation id of the `binary` character set.
const BINARY_CHARSET: u16 = 63;

/// Whether a column's values are bytes rather than text (see
/// [`crate::rows::Column::binary`]). String and blob types share their codes
/// between text and binary columns, so their character set decides. Numbers
/// and temporals are also sent with charset 63 but are text, as is JSON
/// (MySQL 8 labels it binary although it is always utf8mb4).
pub(super) fn holds_bytes(kind: ColumnType, charset: u16) -> bool {
    use ColumnType::*;
    match kind {
        MYSQL_TYPE_BIT | MYSQL_TYPE_GEOMETRY => true,
        MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_STRING
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB => charset == BINARY_CHARSET,
        _ => false,
    }
}

/// MariaDB's NOT_FIXED_DEC: decimals at or above this mean "as many as
/// needed".
const NOT_FIXED_DEC: u8 = 31;

/// Appends a text-protocol row of `columns` values.
pub(super) fn text_row(
    payload: &[u8],
    columns: usize,
    out: &mut QueryResult,
) -> Result<(), String> {
    out.begin_row();
    let mut pos = 0;
    for i in 0..columns {
        let value = lenenc_bytes(payload, &mut pos)
            .ok_or_else(|| format!("text row truncated at column {}", i + 1))?;
        out.push_value(value)?;
    }
    if pos != payload.len() {
        return Err(format!(
            "text row has {} bytes after its {columns} values",
            payload.len() - pos
        ));
    }
    Ok(())
}

/// Appends a binary-protocol row, rendering each value as text.
pub(super) fn binary_row(
    payload: &[u8],
    columns: &[ColumnMeta],
    out: &mut QueryResult,
    scratch: &mut String,
) -> Result<(), String> {
    // 0x00 header, then the NULL bitmap with an offset of two bits.
    let bitmap_len = (columns.len() + 7 + 2) / 8;
    let bitmap = payload
        .get(1..1 + bitmap_len)
        .ok_or("binary row shorter than its NULL bitmap")?;
    let mut pos = 1 + bitmap_len;
    out.begin_row();
    for (i, col) in columns.iter().enumerate() {
        let bit = i + 2;
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            out.push_value(None)?;
            continue;
        }
        match binary_value(payload, &mut pos, col, scratch)? {
            Some(raw) => out.push_value(Some(raw))?,
            None => out.push_value(Some(scratch.as_bytes()))?,
        }
    }
    if pos != payload.len() {
        return Err(format!(
            "binary row has {} bytes after its {} values",
            payload.len() - pos,
            columns.len()
        ));
    }
    Ok(())
}

fn take<'a>(payload: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], String> {
    let bytes = payload
        .get(*pos..*pos + n)
        .ok_or_else(|| format!("binary row truncated ({n} bytes wanted at {pos})"))?;
    *pos += n;
    Ok(bytes)
}

/// Decodes one non-NULL value at `*pos`. Values sent as strings come back as
/// `Some(bytes)`; rendered ones are left in `scratch` (`None`).
fn binary_value<'a>(
    payload: &'a [u8],
    pos: &mut usize,
    col: &ColumnMeta,
    scratch: &mut String,
) -> Result<Option<&'a [u8]>, String> {
    use ColumnType::*;
    scratch.clear();
    let unsigned = col.flags.contains(ColumnFlags::UNSIGNED_FLAG);
    match col.kind {
        MYSQL_TYPE_TINY => {
            let b = take(payload, pos, 1)?[0];
            int(
                scratch,
                if unsigned {
                    i128::from(b)
                } else {
                    i128::from(b as i8)
                },
                col,
            );
        }
        MYSQL_TYPE_SHORT => {
            let b = take(payload, pos, 2)?;
            let v = u16::from_le_bytes([b[0], b[1]]);
            int(
                scratch,
                if unsigned {
                    i128::from(v)
                } else {
                    i128::from(v as i16)
                },
                col,
            );
        }
        MYSQL_TYPE_YEAR => {
            let b = take(payload, pos, 2)?;
            let _ = write!(scratch, "{:04}", u16::from_le_bytes([b[0], b[1]]));
        }
        MYSQL_TYPE_LONG | MYSQL_TYPE_INT24 => {
            let b = take(payload, pos, 4)?;
            let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            int(
                scratch,
                if unsigned {
                    i128::from(v)
                } else {
                    i128::from(v as i32)
                },
                col,
            );
        }
        MYSQL_TYPE_LONGLONG => {
            let b = take(payload, pos, 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            let v = u64::from_le_bytes(a);
            int(
                scratch,
                if unsigned {
                    i128::from(v)
                } else {
                    i128::from(v as i64)
                },
                col,
            );
        }
        MYSQL_TYPE_FLOAT => {
            let b = take(payload, pos, 4)?;
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            float(scratch, f64::from(v), Some(FLT_DIG), col);
        }
        MYSQL_TYPE_DOUBLE => {
            let b = take(payload, pos, 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            float(scratch, f64::from_le_bytes(a), None, col);
        }
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => {
            let t = temporal(payload, pos)?;
            let _ = write!(scratch, "{:04}-{:02}-{:02}", t.year, t.month, t.day);
        }
        MYSQL_TYPE_DATETIME
        | MYSQL_TYPE_TIMESTAMP
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIMESTAMP2 => {
            let t = temporal(payload, pos)?;
            let _ = write!(
                scratch,
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year, t.month, t.day, t.hour, t.minute, t.second
            );
            fraction(scratch, t.micros, col.decimals);
        }
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => {
            let len = usize::from(take(payload, pos, 1)?[0]);
            if !matches!(len, 0 | 8 | 12) {
                return Err(format!("TIME value of {len} bytes"));
            }
            let b = take(payload, pos, len)?;
            let (negative, hours, minute, second, micros) = if len == 0 {
                (false, 0u64, 0u8, 0u8, 0u32)
            } else {
                let days = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
                let micros = if len == 12 {
                    u32::from_le_bytes([b[8], b[9], b[10], b[11]])
                } else {
                    0
                };
                (
                    b[0] == 1,
                    u64::from(days) * 24 + u64::from(b[5]),
                    b[6],
                    b[7],
                    micros,
                )
            };
            let sign = if negative { "-" } else { "" };
            let _ = write!(scratch, "{sign}{hours:02}:{minute:02}:{second:02}");
            fraction(scratch, micros, col.decimals);
        }
        MYSQL_TYPE_NULL => return Ok(Some(b"")),
        // DECIMAL, strings, blobs, BIT, JSON, ENUM, SET, GEOMETRY and
        // anything newer: a length-encoded string, as in the text protocol.
        _ => {
            return match lenenc_bytes(payload, pos) {
                Some(Some(v)) => Ok(Some(v)),
                _ => Err(format!(
                    "binary row: bad string value for a {:?} column",
                    col.kind
                )),
            }
        }
    }
    Ok(None)
}

/// An integer as the text protocol prints it: ZEROFILL columns are padded
/// to their display width.
fn int(out: &mut String, v: i128, col: &ColumnMeta) {
    let _ = write!(out, "{v}");
    if col.flags.contains(ColumnFlags::ZEROFILL_FLAG) {
        zero_pad(out, col.length);
    }
}

fn zero_pad(out: &mut String, width: u32) {
    let width = width as usize;
    if out.len() < width {
        let pad = width - out.len();
        out.insert_str(0, &"0".repeat(pad));
    }
}

struct Temporal {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    micros: u32,
}

/// DATE/DATETIME/TIMESTAMP: a length byte (0, 4, 7 or 11) and the fields
/// that are not zero.
fn temporal(payload: &[u8], pos: &mut usize) -> Result<Temporal, String> {
    let len = usize::from(take(payload, pos, 1)?[0]);
    if !matches!(len, 0 | 4 | 7 | 11) {
        return Err(format!("DATE/DATETIME value of {len} bytes"));
    }
    let b = take(payload, pos, len)?;
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    Ok(Temporal {
        year: u16::from_le_bytes([at(0), at(1)]),
        month: at(2),
        day: at(3),
        hour: at(4),
        minute: at(5),
        second: at(6),
        micros: if len == 11 {
            u32::from_le_bytes([b[7], b[8], b[9], b[10]])
        } else {
            0
        },
    })
}

/// `.ffffff` cut to the column's precision; with no fixed precision, six
/// digits when there is a fraction and none otherwise (MariaDB's
/// AUTO_SEC_PART_DIGITS).
fn fraction(out: &mut String, micros: u32, decimals: u8) {
    let digits = if decimals > 6 {
        if micros == 0 {
            0
        } else {
            6
        }
    } else {
        u32::from(decimals)
    };
    if digits > 0 {
        let scaled = micros / 10u32.pow(6 - digits);
        let _ = write!(out, ".{:0width$}", scaled, width = digits as usize);
    }
}

/// FLT_DIG: the significant digits MariaDB prints for a FLOAT.
const FLT_DIG: usize = 6;

/// A FLOAT or DOUBLE: fixed decimals when the column has a scale below 31
/// (`my_fcvt`), else the shortest form (`my_gcvt`), at most `max_digits`
/// significant digits (FLOAT).
fn float(out: &mut String, v: f64, max_digits: Option<usize>, col: &ColumnMeta) {
    if col.decimals < NOT_FIXED_DEC {
        let _ = write!(out, "{:.*}", usize::from(col.decimals), v);
    } else {
        gcvt(out, v, max_digits);
    }
    if col.flags.contains(ColumnFlags::ZEROFILL_FLAG) {
        zero_pad(out, col.length);
    }
}

/// The exponent from which MariaDB switches to the `e` form (its
/// MAX_DECPT_FOR_F_FORMAT, which is DBL_DIG).
const MAX_DECPT_FOR_F_FORMAT: i32 = 15;

/// MariaDB's `my_gcvt` for the widths the text protocol uses (wide enough
/// for every finite value): the shortest digits that read back as the same
/// value (capped at `max_digits`), in plain form when the decimal point
/// falls within 15 places either side of the digits, else as `1.5e20` /
/// `1e-16` (no `+`, no exponent padding).
pub(super) fn gcvt(out: &mut String, v: f64, max_digits: Option<usize>) {
    if !v.is_finite() {
        // The server never stores these; dtoa prints 0 for them.
        out.push('0');
        return;
    }
    let sci = match max_digits {
        None => format!("{:e}", v.abs()),
        Some(n) => format!("{:.*e}", n.saturating_sub(1), v.abs()),
    };
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let mut digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    if v.is_sign_negative() {
        out.push('-');
    }
    if digits == "0" {
        out.push('0');
        return;
    }
    let len = digits.len() as i32;
    // dtoa's decpt: the value is 0.DIGITS × 10^decpt.
    let decpt = exponent + 1;
    let plain = decpt > -MAX_DECPT_FOR_F_FORMAT && (decpt <= MAX_DECPT_FOR_F_FORMAT || len > decpt);
    if plain {
        if decpt <= 0 {
            out.push_str("0.");
            for _ in decpt..0 {
                out.push('0');
            }
            out.push_str(&digits);
        } else if decpt < len {
            let (int, frac) = digits.split_at(decpt as usize);
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        } else {
            out.push_str(&digits);
            for _ in len..decpt {
                out.push('0');
            }
        }
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let _ = write!(out, "e{}", decpt - 1);
    }
}

/// The column count that starts a result set.
pub(super) fn column_count(payload: &[u8]) -> Option<u64> {
    let mut pos = 0;
    match lenenc(payload, &mut pos)? {
        Some(n) if pos == payload.len() && n > 0 => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(v: f64, max: Option<usize>) -> String {
        let mut s = String::new();
        gcvt(&mut s, v, max);
        s
    }

    #[test]
    fn doubles_print_as_mariadb_does() {
        assert_eq!(g(0.0, None), "0");
        assert_eq!(g(1.0, None), "1");
        assert_eq!(g(-2.5, None), "-2.5");
        assert_eq!(g(0.1 + 0.2, None), "0.30000000000000004");
        assert_eq!(g(1.0 / 3.0, None), "0.3333333333333333");
        assert_eq!(g(1e14, None), "100000000000000");
        assert_eq!(g(1e15, None), "1e15");
        assert_eq!(g(123456789012345680.0, None), "1.2345678901234568e17");
        assert_eq!(g(1234567890123456.7, None), "1234567890123456.8");
        assert_eq!(g(0.0001, None), "0.0001");
        assert_eq!(g(1e-14, None), "0.00000000000001");
        assert_eq!(g(1e-15, None), "0.000000000000001");
        assert_eq!(g(1.5e-15, None), "0.0000000000000015");
        assert_eq!(g(1e-16, None), "1e-16");
        assert_eq!(g(-1.5e-20, None), "-1.5e-20");
        assert_eq!(g(1.7976931348623157e308, None), "1.7976931348623157e308");
    }

    #[test]
    fn floats_keep_six_digits() {
        assert_eq!(g(f64::from(std::f32::consts::PI), Some(FLT_DIG)), "3.14159");
        assert_eq!(g(f64::from(0.1_f32), Some(FLT_DIG)), "0.1");
        assert_eq!(g(f64::from(1e10_f32), Some(FLT_DIG)), "10000000000");
        assert_eq!(g(f64::from(123456789_f32), Some(FLT_DIG)), "123457000");
        assert_eq!(g(f64::from(-1.25e-20_f32), Some(FLT_DIG)), "-1.25e-20");
    }

    fn meta(kind: ColumnType, flags: ColumnFlags, decimals: u8, length: u32) -> ColumnMeta {
        ColumnMeta {
            kind,
            flags,
            decimals,
            length,
        }
    }

    #[test]
    fn binary_rows_render_like_text() {
        use ColumnType::*;
        let cols = [
            meta(MYSQL_TYPE_LONG, ColumnFlags::empty(), 0, 11),
            meta(MYSQL_TYPE_TINY, ColumnFlags::UNSIGNED_FLAG, 0, 3),
            meta(
                MYSQL_TYPE_LONG,
                ColumnFlags::UNSIGNED_FLAG | ColumnFlags::ZEROFILL_FLAG,
                0,
                5,
            ),
            meta(MYSQL_TYPE_VAR_STRING, ColumnFlags::empty(), 0, 0),
            meta(MYSQL_TYPE_DATETIME, ColumnFlags::empty(), 3, 23),
            meta(MYSQL_TYPE_TIME, ColumnFlags::empty(), 0, 10),
            meta(MYSQL_TYPE_DATE, ColumnFlags::empty(), 0, 10),
            meta(MYSQL_TYPE_DOUBLE, ColumnFlags::empty(), 2, 10),
            meta(MYSQL_TYPE_LONGLONG, ColumnFlags::empty(), 0, 20),
        ];
        let mut row = vec![0x00];
        // NULL bitmap: 9 columns + 2 = 11 bits → 2 bytes; column 8 (index 8 → bit 10) is NULL.
        row.extend_from_slice(&[0x00, 0x04]);
        row.extend_from_slice(&(-42i32).to_le_bytes());
        row.push(200);
        row.extend_from_slice(&42u32.to_le_bytes());
        row.extend_from_slice(&[5, b'h', b'e', b'l', b'l', b'o']);
        row.extend_from_slice(&[11]);
        row.extend_from_slice(&2024u16.to_le_bytes());
        row.extend_from_slice(&[2, 29, 13, 5, 9]);
        row.extend_from_slice(&120_500u32.to_le_bytes());
        // TIME -1 day 02:03:04
        row.extend_from_slice(&[8, 1]);
        row.extend_from_slice(&1u32.to_le_bytes());
        row.extend_from_slice(&[2, 3, 4]);
        row.push(0); // DATE 0000-00-00
        row.extend_from_slice(&2.346f64.to_le_bytes());
        let mut r = QueryResult::new(
            (0..cols.len())
                .map(|i| crate::rows::Column::new(format!("c{i}"), 0, false))
                .collect(),
        );
        let mut scratch = String::new();
        binary_row(&row, &cols, &mut r, &mut scratch).expect("row");
        assert_eq!(r.get(0, 0), Some("-42"));
        assert_eq!(r.get(0, 1), Some("200"));
        assert_eq!(r.get(0, 2), Some("00042"));
        assert_eq!(r.get(0, 3), Some("hello"));
        assert_eq!(r.get(0, 4), Some("2024-02-29 13:05:09.120"));
        assert_eq!(r.get(0, 5), Some("-26:03:04"));
        assert_eq!(r.get(0, 6), Some("0000-00-00"));
        assert_eq!(r.get(0, 7), Some("2.35"));
        assert!(r.is_null(0, 8));
        // A truncated row is an error, not a panic.
        assert!(binary_row(&row[..row.len() - 3], &cols, &mut r, &mut scratch).is_err());
        assert!(binary_row(&[0x00], &cols, &mut r, &mut scratch).is_err());
    }

    #[test]
    fn bytes_by_type_and_charset() {
        use ColumnType::*;
        // utf8mb4_general_ci is 45, latin1_swedish_ci 8.
        for kind in [MYSQL_TYPE_BLOB, MYSQL_TYPE_VAR_STRING, MYSQL_TYPE_STRING] {
            assert!(holds_bytes(kind, 63), "{kind:?}");
            assert!(!holds_bytes(kind, 45), "{kind:?}");
            assert!(!holds_bytes(kind, 8), "{kind:?}");
        }
        assert!(holds_bytes(MYSQL_TYPE_BIT, 63));
        assert!(holds_bytes(MYSQL_TYPE_GEOMETRY, 63));
        for kind in [
            MYSQL_TYPE_LONG,
            MYSQL_TYPE_NEWDECIMAL,
            MYSQL_TYPE_DATETIME,
            MYSQL_TYPE_JSON,
        ] {
            assert!(!holds_bytes(kind, 63), "{kind:?}");
        }
    }

    #[test]
    fn text_rows_and_counts() {
        let mut r = QueryResult::new(vec![
            crate::rows::Column::new("a".into(), 3, false),
            crate::rows::Column::new("b".into(), 253, false),
        ]);
        text_row(&[1, b'7', 0xFB], 2, &mut r).expect("row");
        assert_eq!(r.get(0, 0), Some("7"));
        assert!(r.is_null(0, 1));
        assert!(text_row(&[1, b'7'], 2, &mut r).is_err());
        assert!(text_row(&[1, b'7', 0xFB, 0], 2, &mut r).is_err());
        assert_eq!(column_count(&[3]), Some(3));
        assert_eq!(column_count(&[0]), None);
        assert_eq!(column_count(&[0xFC, 0x00, 0x01]), Some(256));
    }
}
