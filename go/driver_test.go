package dialpool_test

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	dialpool "github.com/dialpool/dialpool/go"
)

func TestVersion(t *testing.T) {
	if v := dialpool.Version(); v == "" || !strings.Contains(v, ".") {
		t.Fatalf("version %q", v)
	}
}

func TestSQLOpenAndOpenDB(t *testing.T) {
	db, err := sql.Open("dialpool", pgURL(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("sql.Open: %d %v", n, err)
	}
	// The driver's own Open: a one-connection handle that closes its pool.
	dc, err := (&dialpool.Driver{}).Open(pgURL(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := dc.(driver.QueryerContext).QueryContext(context.Background(), "SELECT 5", nil)
	if err != nil {
		t.Fatal(err)
	}
	vals := make([]driver.Value, 1)
	if err := rows.Next(vals); err != nil {
		t.Fatal(err)
	}
	switch v := vals[0].(type) {
	case []byte: // without column types
		if string(v) != "5" {
			t.Fatalf("Driver.Open: %q", v)
		}
	case int64:
		if v != 5 {
			t.Fatalf("Driver.Open: %d", v)
		}
	default:
		t.Fatalf("Driver.Open: %T %v", v, v)
	}
	rows.Close()
	dc.Close()
	if _, err := sql.Open("dialpool", "postgres://u@h/db?conect_timeout=1s"); !errors.Is(err, dialpool.ErrInvalidArgument) {
		t.Fatalf("a bad URL: %v", err)
	}
	if _, err := dialpool.OpenDB("postgres://u:secret@h/db?max_open=zero"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("a bad value must fail without the password: %v", err)
	}
}

func TestScanByColumnType(t *testing.T) {
	db := openPg(t, "")
	var (
		i  int64
		f  float64
		b  bool
		s  string
		bs []byte
		ns sql.NullString
		ni sql.NullInt64
		u  uint64
	)
	err := db.QueryRow(`SELECT 42::int8, 1.5::float8, true, 'héllo'::text, '\x00ff10'::bytea,
		NULL::text, NULL::int, 18446744073709551615::numeric`).Scan(&i, &f, &b, &s, &bs, &ns, &ni, &u)
	if err != nil {
		t.Fatal(err)
	}
	if i != 42 || f != 1.5 || !b || s != "héllo" || ns.Valid || ni.Valid || u != math.MaxUint64 {
		t.Fatalf("got %v %v %v %q %v %v %v", i, f, b, s, ns, ni, u)
	}
	if !bytes.Equal(bs, []byte{0, 0xff, 0x10}) {
		t.Fatalf("bytea: %x", bs)
	}

	t.Run("time.Time", func(t *testing.T) {
		var tz, ts, d time.Time
		err := db.QueryRow(`SELECT '2024-02-03 04:05:06.789+05:30'::timestamptz, '2024-02-03 04:05:06.5'::timestamp, '2024-02-03'::date`).Scan(&tz, &ts, &d)
		if err != nil {
			t.Fatal(err)
		}
		if !tz.Equal(time.Date(2024, 2, 2, 22, 35, 6, 789000000, time.UTC)) || !ts.Equal(time.Date(2024, 2, 3, 4, 5, 6, 500000000, time.UTC)) || !d.Equal(time.Date(2024, 2, 3, 0, 0, 0, 0, time.UTC)) {
			t.Fatalf("got %v %v %v", tz, ts, d)
		}
		rows, err := db.Query(`SELECT 1::int4 AS a, now() AS b`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		cts, _ := rows.ColumnTypes()
		if cts[0].DatabaseTypeName() != "INT4" || cts[1].DatabaseTypeName() != "TIMESTAMPTZ" || cts[1].ScanType().String() != "time.Time" {
			t.Fatalf("column types %s %s %s", cts[0].DatabaseTypeName(), cts[1].DatabaseTypeName(), cts[1].ScanType())
		}
	})
}

func TestArgumentsRoundTrip(t *testing.T) {
	db := openPg(t, "")
	if _, err := db.Exec(`CREATE TEMP TABLE IF NOT EXISTS x (i int8, f float8, b bool, s text, by bytea, t timestamptz, n text)`); err != nil {
		t.Fatal(err)
	}
	// A temp table lives in one session: pin one with a *sql.Conn.
	ctx := context.Background()
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, `CREATE TEMP TABLE args (i int8, f float8, b bool, s text, by bytea, t timestamptz, n text)`); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2024, 2, 3, 4, 5, 6, 123456000, time.FixedZone("IST", 5*3600+30*60))
	res, err := c.ExecContext(ctx, `INSERT INTO args VALUES ($1, $2, $3, $4, $5, $6, $7), ($1, $2, $3, $4, $5, $6, $7)`,
		int64(-9), 2.25, true, "it's \"quoted\"", []byte{0, 1, 2, 0xff}, when, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 2 {
		t.Fatalf("RowsAffected %d", n)
	}
	if _, err := res.LastInsertId(); err == nil {
		t.Fatal("PostgreSQL has no LastInsertId")
	}
	var (
		i      int64
		f      float64
		b      bool
		s      string
		by     []byte
		tText  string
		n      sql.NullString
		byHex  string
		tEpoch float64
	)
	err = c.QueryRowContext(ctx, `SELECT i, f, b, s, by, t::text, n, encode(by, 'hex'), extract(epoch from t)::float8 FROM args LIMIT 1`).
		Scan(&i, &f, &b, &s, &by, &tText, &n, &byHex, &tEpoch)
	if err != nil {
		t.Fatal(err)
	}
	if i != -9 || f != 2.25 || !b || s != `it's "quoted"` || n.Valid || byHex != "000102ff" {
		t.Fatalf("got %v %v %v %q %v %q", i, f, b, s, n, byHex)
	}
	if math.Abs(tEpoch-float64(when.UnixMicro())/1e6) > 1e-6 {
		t.Fatalf("timestamptz %s (epoch %f), want %v", tText, tEpoch, when)
	}
}

func TestPrepare(t *testing.T) {
	db := openPg(t, "")
	st, err := db.Prepare("SELECT $1::int * 2")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for k := 1; k <= 5; k++ {
		var got int
		if err := st.QueryRow(k).Scan(&got); err != nil || got != 2*k {
			t.Fatalf("%d: %d %v", k, got, err)
		}
	}
	if _, err := st.Exec(3); err != nil {
		t.Fatal(err)
	}
}

func TestSessionStateOnAConn(t *testing.T) {
	db := openPg(t, "max_open=4")
	ctx := context.Background()
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, "SET application_name = 'pinned-session'"); err != nil {
		t.Fatal(err)
	}
	var name string
	var pid1, pid2 int
	if err := c.QueryRowContext(ctx, "SELECT current_setting('application_name'), pg_backend_pid()").Scan(&name, &pid1); err != nil || name != "pinned-session" {
		t.Fatalf("a *sql.Conn keeps its session: %q %v", name, err)
	}
	if err := c.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid2); err != nil || pid1 != pid2 {
		t.Fatalf("same backend: %d %d %v", pid1, pid2, err)
	}
	st, _ := dialpool.Stats(db)
	if st.InUse != 1 {
		t.Fatalf("the *sql.Conn holds one core connection: %+v", st)
	}
	c.Close()
	st, _ = dialpool.Stats(db)
	if st.InUse != 0 || st.Idle < 1 {
		t.Fatalf("closing the *sql.Conn gives the core connection back: %+v", st)
	}
}

func TestTransactions(t *testing.T) {
	db := openPg(t, "")
	ctx := context.Background()
	if _, err := db.Exec("CREATE TABLE IF NOT EXISTS go_tx (id int primary key, v text)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec("DROP TABLE IF EXISTS go_tx") })
	db.Exec("DELETE FROM go_tx")

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("INSERT INTO go_tx VALUES (1, 'a')"); err != nil {
		t.Fatal(err)
	}
	st, _ := dialpool.Stats(db)
	if st.InUse != 1 {
		t.Fatalf("a transaction holds one core connection: %+v", st)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if st, _ := dialpool.Stats(db); st.InUse != 0 {
		t.Fatalf("after commit: %+v", st)
	}

	tx, _ = db.BeginTx(ctx, nil)
	tx.Exec("INSERT INTO go_tx VALUES (2, 'b')")
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	var n int
	db.QueryRow("SELECT count(*) FROM go_tx").Scan(&n)
	if n != 1 {
		t.Fatalf("rows after commit + rollback: %d", n)
	}

	// Isolation level and read-only mode reach the server.
	tx, err = db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var iso, ro string
	tx.QueryRow("SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')").Scan(&iso, &ro)
	if iso != "serializable" || ro != "on" {
		t.Fatalf("isolation %q read-only %q", iso, ro)
	}
	_, err = tx.Exec("INSERT INTO go_tx VALUES (3, 'c')")
	if e := mustDpError(t, err); e.Code != dialpool.CodeServerError || e.SQLState != "25006" {
		t.Fatalf("write in a read-only transaction: %v", err)
	}
	// A failed statement aborted the transaction: Commit says so.
	if err := tx.Commit(); !errors.Is(err, dialpool.ErrTxAborted) {
		t.Fatalf("commit after a failed statement: %v", err)
	}
	for _, level := range []sql.IsolationLevel{sql.LevelReadCommitted, sql.LevelRepeatableRead, sql.LevelReadUncommitted} {
		tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: level})
		if err != nil {
			t.Fatalf("%v: %v", level, err)
		}
		tx.QueryRow("SELECT current_setting('transaction_isolation')").Scan(&iso)
		if iso != strings.ToLower(level.String()) {
			t.Fatalf("%v: server says %q", level, iso)
		}
		tx.Rollback()
	}
	if _, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelLinearizable}); err == nil {
		t.Fatal("an unsupported isolation level must be refused")
	}

	// A statement that times out inside a transaction: the transaction can
	// only end; Commit says it was rolled back, the connection goes back.
	tx, _ = db.BeginTx(ctx, nil)
	tx.Exec("INSERT INTO go_tx VALUES (5, 'e')")
	tctx, tcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = tx.ExecContext(tctx, "SELECT pg_sleep(5)")
	tcancel()
	if !errors.Is(err, dialpool.ErrQueryTimeout) {
		t.Fatalf("timeout in a transaction: %v", err)
	}
	if err := tx.Commit(); !errors.Is(err, dialpool.ErrTxAborted) {
		t.Fatalf("commit after a timeout: %v", err)
	}
	// The core rolls the session back in the background before it is idle.
	waitIdle(t, db)
	tx, _ = db.BeginTx(ctx, nil)
	tctx, tcancel = context.WithTimeout(ctx, 200*time.Millisecond)
	tx.ExecContext(tctx, "SELECT pg_sleep(5)")
	tcancel()
	if err := tx.Rollback(); err != nil {
		t.Fatalf("rollback after a timeout: %v", err)
	}

	// A ctx cancelled during a transaction rolls it back.
	cctx, cancel := context.WithCancel(ctx)
	tx, _ = db.BeginTx(cctx, nil)
	tx.Exec("INSERT INTO go_tx VALUES (4, 'd')")
	cancel()
	time.Sleep(50 * time.Millisecond)
	if err := tx.Commit(); err == nil {
		t.Fatal("commit after the ctx was cancelled must fail")
	}
	db.QueryRow("SELECT count(*) FROM go_tx").Scan(&n)
	if n != 1 {
		t.Fatalf("rows after a cancelled transaction: %d", n)
	}
}

func TestServerErrors(t *testing.T) {
	db := openPg(t, "")
	_, err := db.Exec("SELECT * FROM no_such_table")
	e := mustDpError(t, err)
	if e.Code != dialpool.CodeServerError || e.SQLState != "42P01" || e.Layer != dialpool.LayerQuery || !errors.Is(err, dialpool.ErrServer) {
		t.Fatalf("server error: %+v", e)
	}
	// The connection is fine afterwards.
	var n int
	if err := db.QueryRow("SELECT 1").Scan(&n); err != nil {
		t.Fatal(err)
	}
}

// The three layers, told apart through database/sql.
func TestLayersThroughDatabaseSQL(t *testing.T) {
	t.Run("pool: exhausted pool is ErrAcquireTimeout", func(t *testing.T) {
		db := openPg(t, "max_open=1&acquire_timeout=300ms")
		ctx := context.Background()
		tx, err := db.BeginTx(ctx, nil) // holds the only connection
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		start := time.Now()
		_, err = db.ExecContext(ctx, "SELECT 1")
		took := time.Since(start)
		e := mustDpError(t, err)
		if !errors.Is(err, dialpool.ErrAcquireTimeout) || !errors.Is(err, context.DeadlineExceeded) || !e.Timeout() {
			t.Fatalf("exhausted pool: %v", err)
		}
		if e.Layer != dialpool.LayerPool || e.Limit != "acquire_timeout" || errors.Is(err, dialpool.ErrQueryTimeout) {
			t.Fatalf("layer %v limit %q", e.Layer, e.Limit)
		}
		if took < 250*time.Millisecond || took > 2*time.Second {
			t.Fatalf("acquire_timeout=300ms fired after %v", took)
		}
		if !strings.Contains(e.Message, "1/1 open") {
			t.Errorf("the message should carry the pool's numbers: %s", e.Message)
		}
		// The caller's ctx, earlier than acquire_timeout, is named.
		dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err = db.ExecContext(dctx, "SELECT 1")
		if e := mustDpError(t, err); !errors.Is(err, dialpool.ErrAcquireTimeout) || e.Limit != "deadline" {
			t.Fatalf("ctx deadline while waiting: %v", err)
		}
		if st, _ := dialpool.Stats(db); st.AcquireTimeouts < 2 {
			t.Fatalf("stats: %+v", st)
		}
	})

	t.Run("query: pg_sleep(5) under a 2 s ctx is ErrQueryTimeout and the backend is idle after", func(t *testing.T) {
		db := openPg(t, "")
		admin := openPg(t, "")
		marker := fmt.Sprintf("go-layers-%d", time.Now().UnixNano())
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err := db.ExecContext(ctx, "SELECT pg_sleep(5) /* "+marker+" */")
		took := time.Since(start)
		e := mustDpError(t, err)
		if !errors.Is(err, dialpool.ErrQueryTimeout) || !errors.Is(err, context.DeadlineExceeded) || !e.Timeout() {
			t.Fatalf("query deadline: %v", err)
		}
		if e.Layer != dialpool.LayerQuery || e.Limit != "deadline" || errors.Is(err, dialpool.ErrAcquireTimeout) {
			t.Fatalf("layer %v limit %q", e.Layer, e.Limit)
		}
		if took < 1900*time.Millisecond || took > 2500*time.Millisecond {
			t.Fatalf("a 2 s ctx fired after %v", took)
		}
		if n := activeBackends(t, admin, marker); n != 0 {
			t.Fatalf("%d backends still run the statement right after the error", n)
		}
		// query_timeout from the URL is named as such.
		db2 := openPg(t, "query_timeout=300ms")
		_, err = db2.Exec("SELECT pg_sleep(5)")
		if e := mustDpError(t, err); !errors.Is(err, dialpool.ErrQueryTimeout) || e.Limit != "query_timeout" {
			t.Fatalf("query_timeout: %v", err)
		}
		var n int
		if err := db.QueryRow("SELECT 1").Scan(&n); err != nil {
			t.Fatalf("the pool goes on: %v", err)
		}
	})

	t.Run("dial: SYN black hole is ErrConnectTimeout", func(t *testing.T) {
		hole := newBlackHole(t)
		db, err := dialpool.OpenDB("postgres://u:p@" + hole.addr + "/db?sslmode=disable&connect_timeout=300ms&acquire_timeout=1s")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.PingContext(context.Background())
		e := mustDpError(t, err)
		// The pool connects in the background; a waiter gets ACQUIRE_TIMEOUT
		// whose cause is the dial error.
		if !errors.Is(err, dialpool.ErrAcquireTimeout) || !e.Timeout() || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("black hole through the pool: %v", err)
		}
		if !strings.Contains(e.Message, "timed out") {
			t.Fatalf("the message should name the dial timeout: %s", e.Message)
		}
		if !errors.Is(err, dialpool.ErrConnectTimeout) || e.Source == nil || !e.Source.Timeout() || e.Source.Layer != dialpool.LayerDial || e.Source.Limit != "connect_timeout" {
			t.Fatalf("cause: %+v", e.Source)
		}
	})

	t.Run("dial: closed port is ErrConnectionRefused", func(t *testing.T) {
		db, err := dialpool.OpenDB("postgres://u:p@" + refusedAddr(t) + "/db?sslmode=disable&acquire_timeout=300ms")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.PingContext(context.Background())
		e := mustDpError(t, err)
		if !errors.Is(err, dialpool.ErrAcquireTimeout) || !strings.Contains(e.Message, "refused") {
			t.Fatalf("refused through the pool: %v", err)
		}
		if !errors.Is(err, dialpool.ErrConnectionRefused) || e.Source == nil || e.Source.Timeout() || e.Source.Layer != dialpool.LayerDial {
			t.Fatalf("cause: %+v", e.Source)
		}
	})

	t.Run("login: wrong password is ErrAuthFailed at once", func(t *testing.T) {
		u := strings.Replace(pgURL(t, "acquire_timeout=5s"), "dp-secret-pw", "wrong-pw", 1)
		db, err := dialpool.OpenDB(u)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		start := time.Now()
		err = db.Ping()
		e := mustDpError(t, err)
		if !errors.Is(err, dialpool.ErrAuthFailed) || e.Layer != dialpool.LayerLogin || e.Timeout() {
			t.Fatalf("wrong password: %v", err)
		}
		if strings.Contains(e.Message, "wrong-pw") {
			t.Fatal("the password leaked into the message")
		}
		if time.Since(start) > 2*time.Second {
			t.Fatalf("a permanent error should come at once, not after acquire_timeout: %v", time.Since(start))
		}
	})
}

// ctx cancel interrupts a dial, an acquire and a query at once.
func TestCancelInterrupts(t *testing.T) {
	cancelAfter := func(d time.Duration) (context.Context, func()) {
		ctx, cancel := context.WithCancel(context.Background())
		tm := time.AfterFunc(d, cancel)
		return ctx, func() { tm.Stop(); cancel() }
	}
	check := func(t *testing.T, err error, took time.Duration) {
		t.Helper()
		if !errors.Is(err, context.Canceled) || !errors.Is(err, dialpool.ErrCancelled) || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("want CANCELLED, got %v", err)
		}
		if took > time.Second {
			t.Fatalf("cancelled at 200ms, returned after %v", took)
		}
	}

	t.Run("dial", func(t *testing.T) {
		hole := newBlackHole(t)
		db, err := dialpool.OpenDB("postgres://u:p@" + hole.addr + "/db?sslmode=disable&connect_timeout=30s&acquire_timeout=30s")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		ctx, stop := cancelAfter(200 * time.Millisecond)
		defer stop()
		start := time.Now()
		err = db.PingContext(ctx)
		check(t, err, time.Since(start))
	})

	t.Run("acquire", func(t *testing.T) {
		db := openPg(t, "max_open=1&acquire_timeout=30s")
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		ctx, stop := cancelAfter(200 * time.Millisecond)
		defer stop()
		start := time.Now()
		_, err = db.ExecContext(ctx, "SELECT 1")
		check(t, err, time.Since(start))
		if mustDpError(t, err).Layer != dialpool.LayerPool {
			t.Fatalf("the cancel hit the acquire: %v", err)
		}
		if st, _ := dialpool.Stats(db); st.AcquireCancelled != 1 || st.Waiting != 0 {
			t.Fatalf("stats: %+v", st)
		}
	})

	t.Run("query", func(t *testing.T) {
		db := openPg(t, "")
		admin := openPg(t, "")
		marker := fmt.Sprintf("go-cancel-%d", time.Now().UnixNano())
		ctx, stop := cancelAfter(300 * time.Millisecond)
		defer stop()
		start := time.Now()
		_, err := db.ExecContext(ctx, "SELECT pg_sleep(10) /* "+marker+" */")
		check(t, err, time.Since(start))
		if mustDpError(t, err).Layer != dialpool.LayerQuery {
			t.Fatalf("the cancel hit the query: %v", err)
		}
		if n := activeBackends(t, admin, marker); n != 0 {
			t.Fatalf("%d backends still run the cancelled statement", n)
		}
	})
}

// A connection the server closed is never handed out: the core's liveness
// probe on checkout finds it, and database/sql sees no error at all.
func TestServerClosedConnectionIsNotHandedOut(t *testing.T) {
	db := openPg(t, "application_name=go-terminated")
	admin := openPg(t, "")
	var n int
	if err := db.QueryRow("SELECT 1").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'go-terminated'"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := db.QueryRow("SELECT 1").Scan(&n); err != nil {
		t.Fatalf("after the server closed the idle connection: %v", err)
	}
	if st, _ := dialpool.Stats(db); st.ClosedDead < 1 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestStats(t *testing.T) {
	db := openPg(t, "max_open=3")
	for i := 0; i < 5; i++ {
		if _, err := db.Exec("SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	st, err := dialpool.Stats(db)
	if err != nil {
		t.Fatal(err)
	}
	if st.MaxOpen != 3 || st.Open != 1 || st.InUse != 0 || st.Idle != 1 || st.AcquireCount < 5 || st.Connects != 1 {
		t.Fatalf("stats: %+v", st)
	}
	// database/sql's own numbers count handles, not database connections.
	if s := db.Stats(); s.InUse != 0 {
		t.Fatalf("db.Stats: %+v", s)
	}
	db.Close()
	if _, err := dialpool.Stats(db); err == nil {
		t.Fatal("Stats on a closed DB must fail")
	}
}

func TestTLSVerifyFull(t *testing.T) {
	ca := os.Getenv(envPgCA)
	if ca == "" {
		skipf(t, "%s is not set", envPgCA)
	}
	u := strings.Replace(pgURL(t, ""), "127.0.0.1", "localhost", 1)
	u = strings.Replace(u, "sslmode=disable", "sslmode=verify-full&sslrootcert="+ca, 1)
	db, err := dialpool.OpenDB(u)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ssl bool
	if err := db.QueryRow("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
		t.Fatalf("TLS with verify-full to localhost: %v %v", ssl, err)
	}
	// The certificate has no IP SAN: verify-full to 127.0.0.1 fails at once.
	u = strings.Replace(u, "localhost", "127.0.0.1", 1)
	db2, _ := dialpool.OpenDB(u)
	defer db2.Close()
	if err := db2.Ping(); !errors.Is(err, dialpool.ErrTLS) {
		t.Fatalf("verify-full to an IP the certificate does not name: %v", err)
	}
}

// Many goroutines, random deadlines and cancels: for the race detector and
// for the pool's accounting.
func TestConcurrentUse(t *testing.T) {
	db := openPg(t, "max_open=4&acquire_timeout=2s")
	for _, err := range inParallel(16, func(g int) error {
		for i := 0; i < 25; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+(g*7+i)%40)*time.Millisecond)
			if i%5 == 0 {
				go cancel()
			}
			var n int
			err := db.QueryRowContext(ctx, "SELECT $1::int FROM pg_sleep(0.001)", i).Scan(&n)
			cancel()
			if err == nil && n != i {
				return fmt.Errorf("got %d want %d", n, i)
			}
			if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				return err
			}
		}
		return nil
	}) {
		t.Error(err)
	}
	st, _ := dialpool.Stats(db)
	if st.InUse != 0 || st.Waiting != 0 || st.Open > 4 {
		t.Fatalf("after the storm: %+v", st)
	}
	var n int
	if err := db.QueryRow("SELECT 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("the pool works after the storm: %v", err)
	}
}

// Results of every size come back whole, from a statement alone in its
// pool (waits in C) and from statements with company (poll mode): a small
// one is copied in the call that finishes it, a larger one (more bytes,
// values or columns than that copy has room for) in a call of its own.
func TestResultsOfEverySize(t *testing.T) {
	db := openPg(t, "max_open=4")
	type shape struct{ rows, width, cols int }
	shapes := []shape{
		{0, 1, 1}, {1, 0, 1}, {1, 1, 1}, {3, 5, 2},
		{1, 600, 1},   // more bytes than the small copy holds
		{70, 1, 1},    // more values
		{1, 1, 40},    // more columns
		{2000, 20, 3}, // all of them
	}
	query := func(sh shape) string {
		cols := make([]string, sh.cols)
		for c := range cols {
			// Every 7th row has NULL in the last column.
			if c == sh.cols-1 && sh.cols > 1 {
				cols[c] = fmt.Sprintf("CASE WHEN i %% 7 = 0 THEN NULL ELSE lpad(i::text, %d, '%c') END AS c%d", sh.width, 'a'+c, c)
			} else {
				cols[c] = fmt.Sprintf("lpad(i::text, %d, '%c') AS c%d", sh.width, 'a'+c, c)
			}
		}
		return fmt.Sprintf("SELECT %s FROM generate_series(1, %d) AS i", strings.Join(cols, ", "), sh.rows)
	}
	check := func(sh shape) error {
		rows, err := db.Query(query(sh))
		if err != nil {
			return err
		}
		defer rows.Close()
		names, err := rows.Columns()
		if err != nil || len(names) != sh.cols || names[sh.cols-1] != fmt.Sprintf("c%d", sh.cols-1) {
			return fmt.Errorf("%+v: columns %v, %v", sh, names, err)
		}
		vals := make([]sql.NullString, sh.cols)
		ptrs := make([]any, sh.cols)
		for c := range vals {
			ptrs[c] = &vals[c]
		}
		n := 0
		for rows.Next() {
			n++
			if err := rows.Scan(ptrs...); err != nil {
				return err
			}
			for c, v := range vals {
				text := fmt.Sprint(n)
				if sh.width > len(text) {
					text = strings.Repeat(string(rune('a'+c)), sh.width-len(text)) + text
				} else {
					text = text[:sh.width]
				}
				null := c == sh.cols-1 && sh.cols > 1 && n%7 == 0
				if v.Valid == null || (!null && v.String != text) {
					return fmt.Errorf("%+v: row %d column %d: %+v, want %q (NULL %v)", sh, n, c, v, text, null)
				}
			}
		}
		if n != sh.rows {
			return fmt.Errorf("%+v: %d rows", sh, n)
		}
		return rows.Err()
	}
	for _, sh := range shapes {
		if err := check(sh); err != nil {
			t.Fatalf("alone: %v", err)
		}
	}
	for _, err := range inParallel(4, func(g int) error {
		for i := 0; i < 3*len(shapes); i++ {
			if err := check(shapes[(g+i)%len(shapes)]); err != nil {
				return err
			}
		}
		return nil
	}) {
		t.Errorf("with company: %v", err)
	}
}

// No goroutine or file descriptor is left behind by dials, acquires,
// queries, cancels and closes.
func TestNoGoroutineOrFDLeak(t *testing.T) {
	hole := newBlackHole(t)
	// Warm up: the core's runtime and its descriptors exist for good.
	warm := openPg(t, "")
	warm.Ping()
	warm.Close()
	done := leakCheck(t)

	d := newDialer(t, "connect_timeout=200ms")
	for i := 0; i < 5; i++ {
		if c, err := d.DialContext(context.Background(), "tcp", pgHostPort(t)); err == nil {
			c.Close()
		} else {
			t.Fatal(err)
		}
		d.DialContext(context.Background(), "tcp", hole.addr)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		d.DialContext(ctx, "tcp", hole.addr)
		cancel()
	}
	db, err := dialpool.OpenDB(pgURL(t, "max_open=2&acquire_timeout=300ms"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		db.Exec("SELECT 1")
	}
	tx, _ := db.Begin()
	tx2, _ := db.Begin()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	db.ExecContext(ctx, "SELECT 1") // cancelled while waiting
	db.Exec("SELECT 1")             // acquire timeout
	tx.Rollback()
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	db.ExecContext(ctx, "SELECT pg_sleep(5)") // cancelled on the server
	cancel()
	tx2.Rollback()
	db.Close()
	done()
}

// Closing the DB while connections are in use and callers wait: nothing
// crashes, the waiter gets a pool error, a running statement finishes, and
// Close does not wait for it.
func TestCloseWhileInUse(t *testing.T) {
	db, err := dialpool.OpenDB(pgURL(t, "max_open=2&acquire_timeout=1s"))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	running := make(chan error, 1)
	go func() {
		_, err := db.Exec("SELECT pg_sleep(3)")
		running <- err
	}()
	time.Sleep(200 * time.Millisecond) // both connections in use now
	waiting := make(chan error, 1)
	go func() {
		_, err := db.Exec("SELECT 1")
		waiting <- err
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	db.Close()
	// Close waits for the acquire in progress (up to acquire_timeout), not
	// for the statement (3 s).
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Close took %v", took)
	}
	if err := <-waiting; !errors.Is(err, dialpool.ErrAcquireTimeout) && !errors.Is(err, dialpool.ErrPoolClosed) && !strings.Contains(fmt.Sprint(err), "database is closed") {
		t.Fatalf("the waiter: %v", err)
	}
	if err := <-running; err != nil {
		t.Fatalf("the running statement: %v", err)
	}
	tx.Rollback() // on a closed pool: released and closed, no crash
}

// waitIdle waits (up to 2 s) until the core pool has no connection in use:
// a connection given back inside a transaction is rolled back first.
func waitIdle(t *testing.T, db *sql.DB) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		st, err := dialpool.Stats(db)
		if err != nil {
			t.Fatal(err)
		}
		if st.InUse == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a connection is still in use: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A database/sql connection gets back the server session it held last
// while that is idle (dp_pool_acquire_prefer), so its statements keep
// meeting the same server process: here the other session, returned after
// it, would otherwise come first.
func TestAConnectionGetsItsServerSessionBack(t *testing.T) {
	c, err := dialpool.NewConnector(pgURL(t, "max_open=2"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	pid := func(d driver.Conn) string {
		t.Helper()
		rows, err := d.(driver.QueryerContext).QueryContext(ctx, "SELECT pg_backend_pid()", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		v := make([]driver.Value, 1)
		if err := rows.Next(v); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(v[0])
	}
	reset := func(d driver.Conn) {
		t.Helper()
		if err := d.(driver.SessionResetter).ResetSession(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var conns [2]driver.Conn
	var pids [2]string
	for i := range conns {
		if conns[i], err = c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
		pids[i] = pid(conns[i])
	}
	if pids[0] == pids[1] {
		t.Fatalf("two held connections share the server process %s", pids[0])
	}
	for round := 0; round < 3; round++ {
		// Both sessions go back to the core pool, the second one last.
		reset(conns[0])
		reset(conns[1])
		for i, d := range conns {
			if got := pid(d); got != pids[i] {
				t.Errorf("round %d, connection %d: server process %s, want %s", round, i, got, pids[i])
			}
		}
	}
}
