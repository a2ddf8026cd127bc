//! The Python placeholder style (`%s` and `%(name)s`, as psycopg and PyMySQL
//! users write) translated to the server's own (`$1` for PostgreSQL, `?` for
//! MySQL). Only text outside literals is translated: quoted strings, quoted
//! identifiers, dollar-quoted bodies and comments pass through untouched, so
//! `'%s'` inside a string stays the three characters `'%s'`. Outside them
//! `%%` stands for one `%`, and any other `%` is an error.

/// Which server's lexical rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
}

/// One part of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// SQL text, sent as it is.
    Text(&'a str),
    /// `%s`.
    Positional,
    /// `%(name)s`.
    Named(&'a str),
}

/// A statement split at its placeholders.
#[derive(Debug)]
pub struct Template<'a> {
    pub pieces: Vec<Piece<'a>>,
    pub positional: usize,
    /// Distinct names in order of first appearance.
    pub names: Vec<&'a str>,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Splits `sql` at its placeholders. Errors name the offending position.
pub fn parse(sql: &str, dialect: Dialect) -> Result<Template<'_>, String> {
    let bytes = sql.as_bytes();
    let mut pieces = Vec::new();
    let mut positional = 0;
    let mut names: Vec<&str> = Vec::new();
    let mut start = 0; // start of the pending text
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' => {
                let backslash = match dialect {
                    Dialect::Mysql => true,
                    // E'...' strings take backslash escapes; a plain string
                    // does not (standard_conforming_strings, on since 9.1).
                    Dialect::Postgres => {
                        i >= 1
                            && (bytes[i - 1] == b'e' || bytes[i - 1] == b'E')
                            && (i < 2 || !is_ident(bytes[i - 2]))
                    }
                };
                i = skip_quoted(bytes, i, b'\'', backslash);
            }
            b'"' => i = skip_quoted(bytes, i, b'"', dialect == Dialect::Mysql),
            b'`' if dialect == Dialect::Mysql => i = skip_quoted(bytes, i, b'`', false),
            b'$' if dialect == Dialect::Postgres => i = skip_dollar(bytes, i),
            b'-' if bytes.get(i + 1) == Some(&b'-')
                && (dialect == Dialect::Postgres
                    || bytes
                        .get(i + 2)
                        .is_none_or(|c| c.is_ascii_whitespace() || *c < 0x20)) =>
            {
                i = skip_line(bytes, i)
            }
            b'#' if dialect == Dialect::Mysql => i = skip_line(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(bytes, i, dialect == Dialect::Postgres)
            }
            b'%' => {
                if start < i {
                    pieces.push(Piece::Text(&sql[start..i]));
                }
                match bytes.get(i + 1) {
                    Some(b'%') => {
                        pieces.push(Piece::Text("%"));
                        i += 2;
                    }
                    Some(b's') => {
                        pieces.push(Piece::Positional);
                        positional += 1;
                        i += 2;
                    }
                    Some(b'(') => {
                        let close = sql[i + 2..].find(')').map(|p| i + 2 + p);
                        let Some(close) = close.filter(|&c| bytes.get(c + 1) == Some(&b's')) else {
                            return Err(format!(
                                "a named placeholder at offset {i} is not of the form %(name)s; write %% for a literal %"
                            ));
                        };
                        let name = &sql[i + 2..close];
                        if name.is_empty() {
                            return Err(format!("an empty placeholder name %()s at offset {i}"));
                        }
                        pieces.push(Piece::Named(name));
                        if !names.contains(&name) {
                            names.push(name);
                        }
                        i = close + 2;
                    }
                    other => {
                        let shown = match other {
                            Some(_) => {
                                let end = sql[i + 1..]
                                    .char_indices()
                                    .nth(1)
                                    .map_or(sql.len(), |(p, _)| i + 1 + p);
                                format!("{:?}", &sql[i..end])
                            }
                            None => "a lone % at the end".to_string(),
                        };
                        return Err(format!(
                            "unsupported placeholder {shown} at offset {i}: use %s or %(name)s, and %% for a literal %"
                        ));
                    }
                }
                start = i;
                continue;
            }
            _ => i += 1,
        }
    }
    if start < bytes.len() {
        pieces.push(Piece::Text(&sql[start..]));
    }
    if positional > 0 && !names.is_empty() {
        return Err("the statement mixes %s and %(name)s placeholders; use one style".into());
    }
    Ok(Template {
        pieces,
        positional,
        names,
    })
}

/// From the opening quote at `i` to just past the closing one. A doubled
/// quote is part of the literal; with `backslash`, so is `\` plus any byte.
/// An unterminated literal runs to the end (the server reports it).
fn skip_quoted(bytes: &[u8], i: usize, quote: u8, backslash: bool) -> usize {
    let mut j = i + 1;
    while j < bytes.len() {
        let b = bytes[j];
        if backslash && b == b'\\' {
            j += 2;
        } else if b == quote {
            if bytes.get(j + 1) == Some(&quote) {
                j += 2;
            } else {
                return j + 1;
            }
        } else {
            j += 1;
        }
    }
    bytes.len()
}

/// A PostgreSQL dollar-quoted string (`$$...$$`, `$tag$...$tag$`), or a
/// plain `$` (a parameter `$1`, or part of an identifier).
fn skip_dollar(bytes: &[u8], i: usize) -> usize {
    if i > 0 && is_ident(bytes[i - 1]) {
        return i + 1;
    }
    let mut j = i + 1;
    if j < bytes.len() && !bytes[j].is_ascii_digit() {
        while j < bytes.len() && is_ident(bytes[j]) {
            j += 1;
        }
    }
    if bytes.get(j) != Some(&b'$') {
        return i + 1;
    }
    let tag = &bytes[i..=j];
    let body = j + 1;
    match bytes[body..].windows(tag.len()).position(|w| w == tag) {
        Some(p) => body + p + tag.len(),
        None => bytes.len(),
    }
}

fn skip_line(bytes: &[u8], i: usize) -> usize {
    match bytes[i..].iter().position(|&b| b == b'\n') {
        Some(p) => i + p + 1,
        None => bytes.len(),
    }
}

/// `/* ... */`; PostgreSQL nests them, MySQL does not.
fn skip_block_comment(bytes: &[u8], i: usize, nested: bool) -> usize {
    let mut depth = 1;
    let mut j = i + 2;
    while j < bytes.len() {
        if bytes[j] == b'*' && bytes.get(j + 1) == Some(&b'/') {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else if nested && bytes[j] == b'/' && bytes.get(j + 1) == Some(&b'*') {
            depth += 1;
            j += 2;
        } else {
            j += 1;
        }
    }
    bytes.len()
}

/// How a parameter's placeholder is written: PostgreSQL gets a cast naming
/// the Python value's type (`$1::int8`), so that `SELECT %s` returns an int
/// for an int; MySQL gets `UNHEX(?)` for bytes, which travel as hex text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoration {
    pub prefix: &'static str,
    pub suffix: &'static str,
}

impl Decoration {
    pub const NONE: Decoration = Decoration {
        prefix: "",
        suffix: "",
    };
}

impl Template<'_> {
    /// The statement in the server's placeholder style. `decorate(k)` says
    /// how to write parameter `k`; the returned list maps each server
    /// placeholder to its parameter (MySQL repeats a named parameter that is
    /// used twice, PostgreSQL reuses its `$n`).
    pub fn render(
        &self,
        dialect: Dialect,
        decorate: impl Fn(usize) -> Decoration,
    ) -> (String, Vec<usize>) {
        let mut out = String::with_capacity(
            self.pieces
                .iter()
                .map(|p| match p {
                    Piece::Text(t) => t.len(),
                    _ => 16,
                })
                .sum(),
        );
        let mut order = Vec::new();
        let mut next = 0;
        for piece in &self.pieces {
            let k = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Positional => {
                    next += 1;
                    next - 1
                }
                Piece::Named(name) => self.names.iter().position(|n| n == name).unwrap_or(0),
            };
            let d = decorate(k);
            out.push_str(d.prefix);
            match dialect {
                Dialect::Postgres => {
                    out.push('$');
                    out.push_str(&(k + 1).to_string());
                }
                Dialect::Mysql => out.push('?'),
            }
            out.push_str(d.suffix);
            if dialect == Dialect::Mysql || !order.contains(&k) {
                order.push(k);
            }
        }
        if dialect == Dialect::Postgres {
            order.sort_unstable();
        }
        (out, order)
    }
}
