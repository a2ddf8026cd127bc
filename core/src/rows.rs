//! Query results in text form, the same for PostgreSQL and MySQL.
//!
//! Values are kept in one buffer with a (start, end) range per cell rather
//! than a `String` per value: a 100,000-row result is then two allocations
//! that grow, not a million.

use std::fmt;

/// One result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `name` as a C string (a NUL in it becomes a space), made once with
    /// the column: a cached statement's columns serve every result, so C
    /// callers read names without a copy per statement.
    c_name: std::ffi::CString,
    /// PostgreSQL: the type OID. MySQL: the column type code.
    pub type_id: u32,
    /// MySQL: the values are bytes, not text. The type code alone cannot
    /// tell: BLOB and TEXT share codes, as do VARBINARY and VARCHAR; the
    /// column definition's character set (63, `binary`) does. True for
    /// BINARY, VARBINARY, the BLOBs and binary string expressions (`X'00'`,
    /// `CAST(… AS BINARY)`), and for BIT and GEOMETRY. PostgreSQL: always
    /// false (bytea is type 17 and arrives as hex text).
    pub binary: bool,
}

impl Column {
    pub fn new(name: String, type_id: u32, binary: bool) -> Column {
        let c_name = std::ffi::CString::new(name.replace('\0', " ")).unwrap_or_default();
        Column {
            name,
            c_name,
            type_id,
            binary,
        }
    }

    /// The name as a C string (see the field).
    pub fn c_name(&self) -> &std::ffi::CStr {
        &self.c_name
    }
}

/// Marks a SQL NULL in the cell table.
const NULL: (u32, u32) = (u32::MAX, u32::MAX);

/// The rows, columns and completion facts of one statement.
#[derive(Clone, PartialEq, Eq)]
pub struct QueryResult {
    /// Shared with the statement cache: a cached statement's result gets
    /// its columns without copying every name. None when there are none,
    /// so that an empty result touches no reference count: a shared empty
    /// list's count was one cache line that every thread's statements
    /// wrote to.
    columns: Option<std::sync::Arc<Vec<Column>>>,
    data: Vec<u8>,
    cells: Vec<(u32, u32)>,
    rows: usize,
    /// PostgreSQL's command tag (`SELECT 3`, `UPDATE 1`); MySQL: empty.
    pub command_tag: String,
    /// Rows inserted, updated or deleted (or returned, for SELECT in PostgreSQL).
    pub affected_rows: u64,
    /// MySQL's last insert id.
    pub last_insert_id: Option<u64>,
    /// MySQL's warning count.
    pub warnings: u16,
    /// Notices the server sent while running the statement (PostgreSQL
    /// NoticeResponse, e.g. `NOTICE: table "t" does not exist, skipping`).
    pub notices: Vec<String>,
}

impl Default for QueryResult {
    /// No columns yet: no allocation until the result has data.
    fn default() -> QueryResult {
        QueryResult {
            columns: None,
            data: Vec::new(),
            cells: Vec::new(),
            rows: 0,
            command_tag: String::new(),
            affected_rows: 0,
            last_insert_id: None,
            warnings: 0,
            notices: Vec::new(),
        }
    }
}

impl QueryResult {
    pub fn new(columns: Vec<Column>) -> QueryResult {
        QueryResult::with_shared_columns(std::sync::Arc::new(columns))
    }

    /// A result whose columns are shared with a statement cache.
    pub fn with_shared_columns(columns: std::sync::Arc<Vec<Column>>) -> QueryResult {
        let mut r = QueryResult::default();
        r.set_shared_columns(columns);
        r
    }

    pub fn columns(&self) -> &[Column] {
        self.columns.as_deref().map_or(&[], |c| &c[..])
    }

    pub fn set_columns(&mut self, columns: Vec<Column>) {
        self.columns = (!columns.is_empty()).then(|| std::sync::Arc::new(columns));
    }

    /// The columns as shared with a statement cache.
    pub fn shared_columns(&self) -> std::sync::Arc<Vec<Column>> {
        self.columns.clone().unwrap_or_default()
    }

    pub fn set_shared_columns(&mut self, columns: std::sync::Arc<Vec<Column>>) {
        self.columns = (!columns.is_empty()).then_some(columns);
    }

    pub fn column_count(&self) -> usize {
        self.columns().len()
    }

    pub fn row_count(&self) -> usize {
        self.rows
    }

    /// Starts a row; follow with one [`QueryResult::push_value`] per column.
    pub fn begin_row(&mut self) {
        self.rows += 1;
    }

    /// Appends a cell to the current row (`None` for SQL NULL). Fails only
    /// past 4 GiB of result text.
    pub fn push_value(&mut self, value: Option<&[u8]>) -> Result<(), &'static str> {
        match value {
            None => self.cells.push(NULL),
            Some(v) => {
                let start =
                    u32::try_from(self.data.len()).map_err(|_| "result larger than 4 GiB")?;
                self.data.extend_from_slice(v);
                let end = u32::try_from(self.data.len()).map_err(|_| "result larger than 4 GiB")?;
                // Every value ends with a NUL that is not part of it, so C
                // callers can take it as a C string in place
                // (`bytes_with_nul`).
                self.data.push(0);
                self.cells.push((start, end));
            }
        }
        Ok(())
    }

    /// Reserves room for about `bytes` more bytes of values.
    pub fn reserve(&mut self, bytes: usize, cells: usize) {
        self.data.reserve(bytes + cells);
        self.cells.reserve(cells);
    }

    /// Where a value lies in `data` (its NUL at `end`); `None` for SQL NULL
    /// or out of range.
    fn span(&self, row: usize, col: usize) -> Option<(usize, usize)> {
        if row >= self.rows || col >= self.column_count() {
            return None;
        }
        let (start, end) = *self.cells.get(row * self.column_count() + col)?;
        (start, end)
            .ne(&NULL)
            .then_some((start as usize, end as usize))
    }

    /// The raw bytes of a value; `None` for SQL NULL or out of range.
    pub fn bytes(&self, row: usize, col: usize) -> Option<&[u8]> {
        let (start, end) = self.span(row, col)?;
        self.data.get(start..end)
    }

    /// The raw bytes of a value followed by a NUL byte, for C callers that
    /// want a C string; `None` for SQL NULL or out of range.
    pub fn bytes_with_nul(&self, row: usize, col: usize) -> Option<&[u8]> {
        let (start, end) = self.span(row, col)?;
        self.data.get(start..=end)
    }

    /// A value as text; `None` for SQL NULL, out of range, or not UTF-8.
    pub fn get(&self, row: usize, col: usize) -> Option<&str> {
        self.bytes(row, col)
            .and_then(|b| std::str::from_utf8(b).ok())
    }

    /// Whether the cell is SQL NULL (false when out of range).
    pub fn is_null(&self, row: usize, col: usize) -> bool {
        row < self.rows
            && col < self.column_count()
            && self.cells.get(row * self.column_count() + col) == Some(&NULL)
    }

    /// The index of the column called `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns().iter().position(|c| c.name == name)
    }
}

impl fmt::Debug for QueryResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryResult")
            .field(
                "columns",
                &self.columns().iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .field("rows", &self.rows)
            .field("command_tag", &self.command_tag)
            .field("affected_rows", &self.affected_rows)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No columns is one state however it was reached, so results compare
    /// equal and a cache handed an empty list hands it back.
    #[test]
    fn an_empty_column_list_is_no_columns() {
        let empty = std::sync::Arc::new(Vec::new());
        let shared = QueryResult::with_shared_columns(empty);
        assert_eq!(shared, QueryResult::default());
        assert_eq!(QueryResult::new(Vec::new()), QueryResult::default());
        assert!(QueryResult::default().shared_columns().is_empty());
        assert_eq!(QueryResult::default().column_count(), 0);
        let cols = std::sync::Arc::new(vec![Column::new("a".into(), 23, false)]);
        let mut r = QueryResult::default();
        r.set_shared_columns(cols.clone());
        assert!(
            std::sync::Arc::ptr_eq(&r.shared_columns(), &cols),
            "shared, not copied"
        );
        assert_eq!(r.column_count(), 1);
    }

    #[test]
    fn cells_and_nulls() {
        let mut r = QueryResult::new(vec![
            Column::new("a".into(), 23, false),
            Column::new("b\0c".into(), 25, false),
        ]);
        r.begin_row();
        r.push_value(Some(b"1")).expect("push");
        r.push_value(None).expect("push");
        r.begin_row();
        r.push_value(Some("żółw".as_bytes())).expect("push");
        r.push_value(Some(b"")).expect("push");
        assert_eq!(r.row_count(), 2);
        assert_eq!(r.get(0, 0), Some("1"));
        assert_eq!(r.get(0, 1), None);
        assert!(r.is_null(0, 1));
        assert!(!r.is_null(1, 1));
        assert_eq!(r.get(1, 0), Some("żółw"));
        assert_eq!(r.get(1, 1), Some(""));
        assert_eq!(r.get(2, 0), None);
        assert_eq!(r.column_index("b\0c"), Some(1));
        assert_eq!(r.columns()[1].c_name().to_bytes(), b"b c");
        assert_eq!(r.bytes_with_nul(1, 0), Some("żółw\0".as_bytes()));
        assert_eq!(r.bytes_with_nul(1, 1), Some(&b"\0"[..]));
        assert_eq!(r.bytes_with_nul(0, 1), None);
        assert_eq!(r.bytes_with_nul(2, 0), None);
    }
}
