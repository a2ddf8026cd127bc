package dialpool

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"time"
)

// How database/sql and the core's pool share the work
//
// The core pool is the only pool. A driver.Conn is a lightweight handle
// that holds no core connection while it sits in database/sql's idle list:
//
//   - its first statement acquires a core connection (acquire and
//     statement in one C call, under one ctx);
//   - it keeps that connection while database/sql has it checked out, so a
//     *sql.Tx, a *sql.Conn and the rows of a query each see one session
//     (SET, temporary tables and BEGIN…COMMIT work as with any driver);
//   - it gives it back in IsValid, which database/sql calls every time it
//     takes the handle back (putConn), and in Close.
//
// So database/sql's idle pool never holds core connections idle (the core
// then keeps its liveness probe, ping_after, max_idle_time and max_lifetime
// for every idle connection), SetMaxIdleConns does not change how many
// database connections stay open (max_idle in the URL does), and a wait for
// a connection happens in the core, bounded by acquire_timeout and reported
// as ErrAcquireTimeout with the pool's numbers, instead of database/sql's
// unbounded wait that ends in a bare context.DeadlineExceeded. Leave
// database/sql's SetMaxOpenConns unset (use max_open in the URL).

// Driver is the database/sql driver, registered as "dialpool". The data
// source name is a dialpool URL (postgres://… or mysql://…).
type Driver struct{}

func init() {
	sql.Register("dialpool", &Driver{})
}

var (
	_ driver.Driver        = (*Driver)(nil)
	_ driver.DriverContext = (*Driver)(nil)
)

// Open opens a one-off pool for name and returns a connection that closes
// the pool with itself. database/sql does not use it (it calls
// OpenConnector, so all of a DB's connections share one pool).
func (d *Driver) Open(name string) (driver.Conn, error) {
	c, err := NewConnector(name)
	if err != nil {
		return nil, err
	}
	cn := c.newConn()
	cn.ownsPool = true
	return cn, nil
}

// OpenConnector opens the core pool for a database/sql DB.
func (d *Driver) OpenConnector(name string) (driver.Connector, error) {
	return NewConnector(name)
}

// Connector is a core pool as a driver.Connector. sql.OpenDB(c) uses it;
// DB.Close closes it.
type Connector struct {
	pool    *cpool
	dialect dialect
}

var (
	_ driver.Connector = (*Connector)(nil)
	_ io.Closer        = (*Connector)(nil)
)

// NewConnector opens a core pool for url (postgres://, postgresql://,
// mysql://, mariadb://, with the options of the URL form). No connection is
// made yet. An invalid URL is an *Error with CodeInvalidArgument. opts:
// WithEvents.
func NewConnector(url string, opts ...Option) (*Connector, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	p, err := openPool(url, o.onEvent)
	if err != nil {
		return nil, err
	}
	c := &Connector{pool: p, dialect: dialectOf(url)}
	// A safety net for a Connector dropped without Close.
	runtime.AddCleanup(c, func(p *cpool) { p.close() }, p)
	return c, nil
}

// OpenDB opens a *sql.DB over a core pool for url. database/sql keeps up
// to 64 idle handles, which hold no database connection (see the package
// documentation). opts: WithEvents.
func OpenDB(url string, opts ...Option) (*sql.DB, error) {
	c, err := NewConnector(url, opts...)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(c)
	db.SetMaxIdleConns(64)
	return db, nil
}

// Connect returns a handle; it does not touch the network (the first
// statement acquires a core connection).
func (c *Connector) Connect(ctx context.Context) (driver.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.newConn(), nil
}

// Driver returns the dialpool driver.
func (c *Connector) Driver() driver.Driver { return &Driver{} }

// Close closes the pool: idle connections are closed at once; connections
// in use are closed when their statement or transaction ends. It waits for
// calls that are acquiring a connection.
func (c *Connector) Close() error {
	c.pool.close()
	return nil
}

// Stats returns the core pool's numbers.
func (c *Connector) Stats() (PoolStats, error) {
	return c.pool.stats()
}

// MetricsText returns the core pool's numbers and latency histograms in the
// Prometheus text exposition format, under the OpenTelemetry
// database-client names (db_client_connection_count,
// db_client_connection_wait_time_seconds, …) plus dialpool's own
// (dialpool_dial_duration_seconds, …).
func (c *Connector) MetricsText() (string, error) {
	return c.pool.metricsText()
}

func (c *Connector) newConn() *conn {
	cn := &conn{cn: c, h: &connHandle{}}
	// A safety net for a handle dropped while it holds a core connection.
	runtime.AddCleanup(cn, func(h *connHandle) { h.release() }, cn.h)
	return cn
}

// conn is a driver.Conn: a handle that holds a core connection only while
// database/sql has it checked out (see the package documentation). As
// database/sql promises, one goroutine at a time uses it.
type conn struct {
	cn       *Connector
	h        *connHandle
	tx       *tx
	bad      bool // the session may be gone: database/sql must drop this handle
	closed   bool
	ownsPool bool
	// The buffers the last statement was encoded in (appendStatement).
	text []byte
	offs []int64
}

var (
	_ driver.Conn               = (*conn)(nil)
	_ driver.ConnBeginTx        = (*conn)(nil)
	_ driver.ConnPrepareContext = (*conn)(nil)
	_ driver.QueryerContext     = (*conn)(nil)
	_ driver.ExecerContext      = (*conn)(nil)
	_ driver.Pinger             = (*conn)(nil)
	_ driver.SessionResetter    = (*conn)(nil)
	_ driver.Validator          = (*conn)(nil)
	_ driver.NamedValueChecker  = (*conn)(nil)
)

// run runs one statement, acquiring a core connection first when the
// handle holds none.
func (c *conn) run(ctx context.Context, query string, args []driver.NamedValue) (*result, error) {
	if c.closed {
		return nil, driver.ErrBadConn
	}
	if c.bad {
		return nil, driver.ErrBadConn
	}
	text, offs, err := appendStatement(c.text, c.offs, c.cn.dialect, query, args)
	if err != nil {
		return nil, err
	}
	// Kept for the next statement unless a large one grew them: the
	// library copies what it keeps, so they are free once query returns.
	if cap(text) <= 4096 && cap(offs) <= 256 {
		c.text, c.offs = text, offs
	}
	r, acquireErr, err := c.cn.pool.query(ctx, c.h, text, offs)
	// c owns the cleanup that would release c.h: keep it alive until the C
	// call that uses c.h has returned.
	runtime.KeepAlive(c)
	if err == nil {
		return r, nil
	}
	var e *Error
	if !errors.As(err, &e) {
		return nil, err // ctx already done: nothing was called
	}
	if acquireErr {
		// No connection was held: the handle is fine; database/sql must not
		// retry (the core already waited its acquire_timeout).
		return nil, err
	}
	if e.Code == CodeServerError {
		if c.tx != nil && c.cn.dialect == postgres {
			c.tx.failed = true // PostgreSQL aborts the transaction
		}
		return nil, err
	}
	// The session may be unusable (or was cancelled mid-statement): give it
	// back, the core decides whether to keep it, and have database/sql drop
	// this handle, since whatever session state it carried is gone.
	if c.tx == nil {
		c.h.release()
	}
	c.bad = true
	if e.Retryable && e.Layer == LayerQuery && !e.Timeout() && e.Code != CodeCancelled && c.tx == nil {
		// Nothing reached the server: database/sql may retry elsewhere.
		return nil, badConnError{e}
	}
	return nil, err
}

// QueryContext runs a statement and returns its rows, read in full.
func (c *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	r, err := c.run(ctx, query, args)
	if err != nil {
		return nil, err
	}
	return newRows(r, c.cn.dialect), nil
}

// ExecContext runs a statement and returns its affected row count.
func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	r, err := c.run(ctx, query, args)
	if err != nil {
		return nil, err
	}
	return execResult{affected: r.affected, lastID: r.lastID, hasID: r.hasID}, nil
}

// Ping runs "SELECT 1" (acquiring a connection: a dial or login problem
// shows here with its own code).
func (c *conn) Ping(ctx context.Context) error {
	_, err := c.run(ctx, "SELECT 1", nil)
	return err
}

// Prepare returns a statement; the core prepares it on the server on first
// use and caches it per connection (statement_cache in the URL).
func (c *conn) Prepare(query string) (driver.Stmt, error) {
	return &stmt{c: c, query: query}, nil
}

// PrepareContext is Prepare.
func (c *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Prepare(query)
}

// Begin starts a transaction.
//
// Deprecated: database/sql calls BeginTx.
func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

// BeginTx starts a transaction with an isolation level and read-only mode;
// the handle keeps its core connection until Commit or Rollback.
func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if c.tx != nil {
		return nil, &Error{Code: CodeInvalidState, Message: "a transaction is already open on this connection", Elapsed: -1}
	}
	level := ""
	switch sql.IsolationLevel(opts.Isolation) {
	case sql.LevelDefault:
	case sql.LevelReadUncommitted:
		level = "READ UNCOMMITTED"
	case sql.LevelReadCommitted:
		level = "READ COMMITTED"
	case sql.LevelRepeatableRead:
		level = "REPEATABLE READ"
	case sql.LevelSerializable:
		level = "SERIALIZABLE"
	default:
		return nil, &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf("isolation level %v is not supported", sql.IsolationLevel(opts.Isolation)), Elapsed: -1}
	}
	var stmts []string
	if c.cn.dialect == mysql {
		if level != "" {
			stmts = append(stmts, "SET TRANSACTION ISOLATION LEVEL "+level)
		}
		begin := "START TRANSACTION"
		if opts.ReadOnly {
			begin += " READ ONLY"
		}
		stmts = append(stmts, begin)
	} else {
		begin := "BEGIN"
		if level != "" {
			begin += " ISOLATION LEVEL " + level
		}
		if opts.ReadOnly {
			begin += " READ ONLY"
		}
		stmts = append(stmts, begin)
	}
	for _, s := range stmts {
		if _, err := c.run(ctx, s, nil); err != nil {
			return nil, err
		}
	}
	c.tx = &tx{c: c}
	return c.tx, nil
}

// ResetSession is called before database/sql reuses the handle; the handle
// holds no core connection by then (IsValid gave it back).
func (c *conn) ResetSession(ctx context.Context) error {
	if c.bad || c.closed {
		return driver.ErrBadConn
	}
	if c.tx == nil {
		c.h.release()
	}
	return nil
}

// IsValid is called each time database/sql takes the handle back: the core
// connection goes back to the core pool here.
func (c *conn) IsValid() bool {
	if c.tx == nil {
		c.h.release()
	}
	return !c.bad && !c.closed
}

// Close gives back the core connection, if one is held (rolled back by the
// core when a transaction is open).
func (c *conn) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	c.tx = nil
	c.h.release()
	if c.ownsPool {
		c.cn.pool.close()
	}
	return nil
}

// CheckNamedValue lets uint64 values above MaxInt64 through (the default
// converter refuses them); everything else takes database/sql's default.
func (c *conn) CheckNamedValue(nv *driver.NamedValue) error {
	switch v := nv.Value.(type) {
	case uint64:
		return nil
	case uint:
		nv.Value = uint64(v)
		return nil
	}
	return driver.ErrSkip
}

// tx is a transaction on one core connection.
type tx struct {
	c      *conn
	failed bool // PostgreSQL: a statement failed, so COMMIT would roll back
}

// ErrTxAborted is returned by Commit when the transaction cannot commit: on
// PostgreSQL a statement in it failed (the server has rolled it back), or a
// statement in it timed out, was cancelled or lost its connection. The
// error also matches the cause.
var ErrTxAborted = errors.New("dialpool: the transaction was rolled back because a statement in it failed")

// Commit commits. A transaction that cannot commit any more is rolled back
// and Commit returns ErrTxAborted.
func (t *tx) Commit() error {
	c := t.c
	if c.tx != t {
		return &Error{Code: CodeInvalidState, Message: "the transaction has already ended", Elapsed: -1}
	}
	if c.bad {
		// The session was interrupted mid-transaction: giving the connection
		// back makes the core roll back (or close) it.
		c.tx = nil
		c.h.release()
		return ErrTxAborted
	}
	if t.failed {
		_ = t.end("ROLLBACK")
		return ErrTxAborted
	}
	return t.end("COMMIT")
}

// Rollback rolls back. After an interrupted statement the connection is
// given back instead, which the core rolls back or closes.
func (t *tx) Rollback() error {
	c := t.c
	if c.tx != t {
		return &Error{Code: CodeInvalidState, Message: "the transaction has already ended", Elapsed: -1}
	}
	if c.bad {
		c.tx = nil
		c.h.release()
		return nil
	}
	return t.end("ROLLBACK")
}

func (t *tx) end(stmt string) error {
	c := t.c
	_, err := c.run(context.Background(), stmt, nil)
	c.tx = nil
	if err != nil && c.bad {
		c.h.release()
	}
	return err
}

// stmt is a prepared statement: the SQL, run through the connection (the
// core keeps server-side prepared statements per connection).
type stmt struct {
	c     *conn
	query string
}

var (
	_ driver.StmtQueryContext  = (*stmt)(nil)
	_ driver.StmtExecContext   = (*stmt)(nil)
	_ driver.NamedValueChecker = (*stmt)(nil)
)

func (s *stmt) Close() error  { return nil }
func (s *stmt) NumInput() int { return -1 }

func (s *stmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), named(args))
}

func (s *stmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), named(args))
}

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.c.ExecContext(ctx, s.query, args)
}

func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.c.QueryContext(ctx, s.query, args)
}

func (s *stmt) CheckNamedValue(nv *driver.NamedValue) error { return s.c.CheckNamedValue(nv) }

func named(args []driver.Value) []driver.NamedValue {
	out := make([]driver.NamedValue, len(args))
	for i, v := range args {
		out[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return out
}

// execResult is a statement's driver.Result.
type execResult struct {
	affected int64
	lastID   int64
	hasID    bool
}

func (r execResult) LastInsertId() (int64, error) {
	if !r.hasID {
		return 0, errors.New("dialpool: no last insert id (PostgreSQL has none: use RETURNING; MySQL needs a library with dp_result_last_insert_id)")
	}
	return r.lastID, nil
}

func (r execResult) RowsAffected() (int64, error) { return r.affected, nil }

// rows are a result already read in full into Go memory.
type rows struct {
	r     *result
	kinds []kind
	d     dialect
	row   int
	cell  int
	off   int
	// Room for the kinds of a few columns, so that a small result's rows
	// are one allocation.
	few [8]kind
}

var (
	_ driver.RowsColumnTypeDatabaseTypeName = (*rows)(nil)
	_ driver.RowsColumnTypeScanType         = (*rows)(nil)
)

func newRows(r *result, d dialect) *rows {
	rs := &rows{r: r, d: d}
	k := rs.few[:0]
	if len(r.names) > len(rs.few) {
		k = make([]kind, 0, len(r.names))
	}
	for i := range r.names {
		var t uint32
		if r.types != nil {
			t = r.types[i]
		}
		k = append(k, kindOf(d, t, r.types != nil))
	}
	rs.kinds = k
	return rs
}

func (r *rows) Columns() []string { return r.r.names }

// Close lets the values go (the result is this rows' own); the columns
// stay readable.
func (r *rows) Close() error {
	r.r.data, r.r.cells, r.r.rows = nil, nil, 0
	return nil
}

func (r *rows) Next(dest []driver.Value) error {
	if r.row >= r.r.rows {
		return io.EOF
	}
	r.row++
	for i := range r.kinds {
		n := int(r.r.cells[r.cell])
		r.cell++
		if n < 0 {
			dest[i] = nil
			continue
		}
		v := r.r.data[r.off : r.off+n : r.off+n]
		r.off += n
		dest[i] = decode(r.kinds[i], v)
	}
	return nil
}

// ColumnTypeDatabaseTypeName is the column's type ("INT4", "TIMESTAMPTZ",
// "VARCHAR", …), or "" when the linked library does not report types.
func (r *rows) ColumnTypeDatabaseTypeName(index int) string {
	if r.r.types == nil {
		return ""
	}
	return typeName(r.d, r.r.types[index], true)
}

// ColumnTypeScanType is the Go type Next gives for the column.
func (r *rows) ColumnTypeScanType(index int) reflect.Type {
	switch r.kinds[index] {
	case kString, kMaybeUint:
		return reflect.TypeFor[string]()
	case kInt:
		return reflect.TypeFor[int64]()
	case kFloat:
		return reflect.TypeFor[float64]()
	case kBool:
		return reflect.TypeFor[bool]()
	case kTime, kTimeNoTZ, kDate:
		return reflect.TypeFor[time.Time]()
	default:
		return reflect.TypeFor[[]byte]()
	}
}

// PoolStats are the core pool's numbers (dp_stats), next to what
// db.Stats() says about database/sql's handles.
type PoolStats struct {
	MaxOpen    int // max_open
	Open       int // connections open (in use + idle)
	InUse      int
	Idle       int
	Waiting    int // callers waiting in acquire now
	Connecting int // connects in progress

	WaitCount        int64         // acquires that had to wait
	WaitDuration     time.Duration // their total wait
	AcquireCount     int64
	AcquireTimeouts  int64
	AcquireCancelled int64
	Connects         int64
	ConnectFailures  int64

	ClosedMaxLifetime int64
	ClosedMaxIdleTime int64
	ClosedMaxIdle     int64
	ClosedDead        int64 // found dead by the liveness probe or ping
	ClosedBroken      int64 // broken while in use
	Leaks             int64 // leak_threshold warnings

	MaxIdleTime time.Duration // the max_idle_time in force (0: off)
}

// MetricsText returns the core pool's metrics in the Prometheus text
// format (see Connector.MetricsText) for a DB opened with the dialpool
// driver. Serve it from a /metrics handler:
//
//	http.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
//		text, err := dialpool.MetricsText(db)
//		if err != nil {
//			http.Error(w, err.Error(), http.StatusServiceUnavailable)
//			return
//		}
//		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
//		io.WriteString(w, text)
//	})
func MetricsText(db *sql.DB) (string, error) {
	var out string
	err := withConnector(db, "MetricsText", func(c *Connector) error {
		var err error
		out, err = c.MetricsText()
		return err
	})
	return out, err
}

// withConnector runs f with the Connector of a DB opened with the dialpool
// driver, through a handle it takes for a moment (which holds no database
// connection).
func withConnector(db *sql.DB, what string, f func(*Connector) error) error {
	c, err := db.Conn(context.Background())
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Raw(func(dc any) error {
		cn, ok := dc.(*conn)
		if !ok {
			return fmt.Errorf("dialpool.%s: the DB's driver is %T, not dialpool", what, db.Driver())
		}
		return f(cn.cn)
	})
}

// Stats returns the core pool's numbers for a DB opened with the dialpool
// driver (sql.Open("dialpool", …) or OpenDB). It takes a handle from db for
// a moment, which holds no database connection.
func Stats(db *sql.DB) (PoolStats, error) {
	c, err := db.Conn(context.Background())
	if err != nil {
		return PoolStats{}, err
	}
	defer c.Close()
	var out PoolStats
	err = c.Raw(func(dc any) error {
		cn, ok := dc.(*conn)
		if !ok {
			return fmt.Errorf("dialpool.Stats: the DB's driver is %T, not dialpool", db.Driver())
		}
		var err error
		out, err = cn.cn.Stats()
		return err
	})
	return out, err
}
