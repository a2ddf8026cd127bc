package dialpool_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	dialpool "github.com/dialpool/dialpool/go"
)

// MySQL/MariaDB through the dialpool database/sql driver. Each test skips
// (with the core's words) while the core's pool does not take mysql://.

func TestMariaDBQueriesAndTypes(t *testing.T) {
	db := openMaria(t, "")
	var (
		n  int64
		f  float64
		s  string
		bs []byte
		ns sql.NullString
		b  bool
	)
	err := db.QueryRow("SELECT 40 + ?, 1.5e0, CONCAT('h', ?), CAST('raw' AS BINARY), NULL, 1 = 1", 2, "éllo").Scan(&n, &f, &s, &bs, &ns, &b)
	if err != nil {
		t.Fatal(err)
	}
	if n != 42 || f != 1.5 || s != "héllo" || string(bs) != "raw" || ns.Valid || !b {
		t.Fatalf("got %v %v %q %q %v %v", n, f, s, bs, ns, b)
	}
	t.Run("time.Time", func(t *testing.T) {
		var dt, d time.Time
		if err := db.QueryRow("SELECT CAST('2024-02-03 04:05:06.5' AS DATETIME(6)), CAST('2024-02-03' AS DATE)").Scan(&dt, &d); err != nil {
			t.Fatal(err)
		}
		if !dt.Equal(time.Date(2024, 2, 3, 4, 5, 6, 500000000, time.UTC)) || !d.Equal(time.Date(2024, 2, 3, 0, 0, 0, 0, time.UTC)) {
			t.Fatalf("got %v %v", dt, d)
		}
	})
}

func TestMariaDBArgumentsAndTransactions(t *testing.T) {
	db := openMaria(t, "")
	ctx := context.Background()
	if _, err := db.Exec("CREATE TABLE IF NOT EXISTS go_args (id INT AUTO_INCREMENT PRIMARY KEY, i BIGINT, f DOUBLE, b BOOL, s TEXT, bin BLOB, t DATETIME(6), n TEXT)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec("DROP TABLE IF EXISTS go_args") })
	when := time.Date(2024, 2, 3, 4, 5, 6, 123456000, time.FixedZone("IST", 5*3600+30*60))
	res, err := db.Exec("INSERT INTO go_args (i, f, b, s, bin, t, n) VALUES (?, ?, ?, ?, ?, ?, ?)",
		int64(-9), 2.25, true, `it's "quoted" \ back`, []byte("bytes"), when, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("RowsAffected %d", n)
	}
	id, err := res.LastInsertId()
	if err != nil {
		if !strings.Contains(err.Error(), "dp_result_last_insert_id") {
			t.Fatalf("LastInsertId: %v", err)
		}
		t.Logf("LastInsertId: %v", err)
	} else if id < 1 {
		t.Fatalf("LastInsertId %d", id)
	}
	var (
		i     int64
		f     float64
		b     bool
		s     string
		by    []byte
		tText string
		n     sql.NullString
	)
	err = db.QueryRow("SELECT i, f, b, s, bin, CAST(t AS CHAR), n FROM go_args ORDER BY id DESC LIMIT 1").Scan(&i, &f, &b, &s, &by, &tText, &n)
	if err != nil {
		t.Fatal(err)
	}
	if i != -9 || f != 2.25 || !b || s != `it's "quoted" \ back` || string(by) != "bytes" || n.Valid || tText != "2024-02-02 22:35:06.123456" {
		t.Fatalf("got %v %v %v %q %q %q %v", i, f, b, s, by, tText, n)
	}

	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable})
	if err != nil {
		t.Fatal(err)
	}
	tx.Exec("INSERT INTO go_args (i) VALUES (100)")
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	var count int
	db.QueryRow("SELECT count(*) FROM go_args WHERE i = 100").Scan(&count)
	if count != 0 {
		t.Fatal("rollback did not roll back")
	}
	tx, err = db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec("INSERT INTO go_args (i) VALUES (101)")
	if e := mustDpError(t, err); e.Code != dialpool.CodeServerError || e.SQLState != "25006" {
		t.Fatalf("a write in a read-only transaction: %v", err)
	}
	tx.Rollback()
	tx, _ = db.BeginTx(ctx, nil)
	tx.Exec("INSERT INTO go_args (i) VALUES (102)")
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	db.QueryRow("SELECT count(*) FROM go_args WHERE i = 102").Scan(&count)
	if count != 1 {
		t.Fatal("commit did not commit")
	}
}

func TestMariaDBLayers(t *testing.T) {
	t.Run("pool", func(t *testing.T) {
		db := openMaria(t, "max_open=1&acquire_timeout=300ms")
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		_, err = db.Exec("SELECT 1")
		if e := mustDpError(t, err); !errors.Is(err, dialpool.ErrAcquireTimeout) || e.Limit != "acquire_timeout" || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("exhausted pool: %v", err)
		}
	})
	t.Run("query deadline kills the query on the server", func(t *testing.T) {
		db := openMaria(t, "")
		admin := openMaria(t, "")
		marker := fmt.Sprintf("go-maria-%d", time.Now().UnixNano())
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err := db.ExecContext(ctx, "SELECT SLEEP(5) /* "+marker+" */")
		took := time.Since(start)
		e := mustDpError(t, err)
		if !errors.Is(err, dialpool.ErrQueryTimeout) || e.Limit != "deadline" || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("query deadline: %v", err)
		}
		if took > 2500*time.Millisecond {
			t.Fatalf("a 2 s ctx fired after %v", took)
		}
		if n := runningMaria(t, admin, marker); n != 0 {
			t.Fatalf("%d sessions still run the statement (go-sql-driver/mysql would leave it running)", n)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		db := openMaria(t, "")
		admin := openMaria(t, "")
		marker := fmt.Sprintf("go-maria-cancel-%d", time.Now().UnixNano())
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(300*time.Millisecond, cancel)
		start := time.Now()
		_, err := db.ExecContext(ctx, "SELECT SLEEP(10) /* "+marker+" */")
		if !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
			t.Fatalf("cancel: %v after %v", err, time.Since(start))
		}
		if n := runningMaria(t, admin, marker); n != 0 {
			t.Fatalf("%d sessions still run the cancelled statement", n)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		u := strings.Replace(mariaURL(t, ""), "dp-secret-pw", "wrong-pw", 1)
		db, err := dialpool.OpenDB(u)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.Ping()
		if e := mustDpError(t, err); !errors.Is(err, dialpool.ErrAuthFailed) || e.Layer != dialpool.LayerLogin || strings.Contains(e.Message, "wrong-pw") {
			t.Fatalf("wrong password: %v", err)
		}
	})
}

// runningMaria counts sessions running a statement that contains marker.
func runningMaria(t testing.TB, admin *sql.DB, marker string) int {
	t.Helper()
	var n int
	err := admin.QueryRow("SELECT count(*) FROM information_schema.processlist WHERE id <> CONNECTION_ID() AND command = 'Query' AND INSTR(info, ?) > 0", marker).Scan(&n)
	if err != nil {
		t.Fatalf("processlist: %v", err)
	}
	return n
}
