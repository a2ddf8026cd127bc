package dialpool

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

// A statement waits in the netpoller only when another one runs in the same
// pool or its ctx can be cancelled (otherwise, it waits in C). Here one
// long statement keeps the others
// company, so that a result, a deadline and a cancel all take the
// netpoller path; each must behave as on the C path and leave no statement
// running on the server. PostgreSQL in plain TCP, MariaDB over TLS (its
// URL's default), so that a TLS session's waits are handed over too.
func TestNetpollerPathResultDeadlineAndCancel(t *testing.T) {
	type dialect struct {
		env, options           string
		result, company, sleep string
		running                string // counts statements with the marker still running
	}
	for name, d := range map[string]dialect{
		"postgres": {
			env: "DIALPOOL_TEST_PG_URL", options: "?sslmode=disable&max_open=4",
			result:  "SELECT $1::int * 2",
			company: "SELECT pg_sleep(3)",
			sleep:   "SELECT pg_sleep(5) /* dp-np-mark */",
			running: "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%dp' || '-np-mark%'",
		},
		"mariadb": {
			env: "DIALPOOL_TEST_MARIADB_URL", options: "?max_open=4",
			result:  "SELECT ? * 2",
			company: "SELECT SLEEP(3)",
			sleep:   "SELECT SLEEP(5) /* dp-np-mark */",
			running: "SELECT count(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query' AND INFO LIKE CONCAT('%dp', '-np-mark%')",
		},
	} {
		t.Run(name, func(t *testing.T) {
			db, pool := openWithPool(t, serverURL(t, d.env)+d.options)
			netpollerPath(t, db, pool, d.result, d.company, d.sleep, d.running)
		})
	}
}

func netpollerPath(t *testing.T, db *sql.DB, pool *cpool, result, company, sleep, running string) {
	done := make(chan error, 1)
	go func() {
		_, err := db.Exec(company)
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	before := pool.netpolled.Load()

	var n int
	if err := db.QueryRow(result, 21).Scan(&n); err != nil || n != 42 {
		t.Fatalf("result: %d, %v", n, err)
	}

	tctx, tcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	start := time.Now()
	_, err := db.ExecContext(tctx, sleep)
	tcancel()
	if !errors.Is(err, ErrQueryTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the deadline took %v", took)
	}

	cctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start = time.Now()
	_, err = db.ExecContext(cctx, sleep)
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the cancel took %v", took)
	}

	if got := pool.netpolled.Load() - before; got < 3 {
		t.Fatalf("%d of 3 statements waited in the netpoller", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("the long statement: %v", err)
	}
	// Both interrupted statements were stopped on the server.
	var left int
	if err := db.QueryRow(running).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d statements still running on the server", left)
	}
}

// A goroutine whose statements run alone in the pool waits in C and never
// parks; it must still go through the scheduler every few milliseconds, or
// sysmon preempts it and takes its P during each statement (see
// passScheduler).
func TestStatementsAloneGoThroughTheScheduler(t *testing.T) {
	db, pool := openWithPool(t, serverURL(t, "DIALPOOL_TEST_PG_URL")+"?sslmode=disable&max_open=2")
	// Bounded in count and time; on a loaded machine fewer statements fit,
	// and one yield per yieldEvery is all that is asserted.
	var yields, statements int
	last := pool.lastYield.Load()
	start := time.Now()
	for statements < 20000 && time.Since(start) < 300*time.Millisecond {
		var n int
		if err := db.QueryRow("SELECT 1").Scan(&n); err != nil || n != 1 {
			t.Fatalf("statement %d: %d, %v", statements, n, err)
		}
		statements++
		if at := pool.lastYield.Load(); at != last {
			if time.Duration(at-last) < yieldEvery && last != 0 {
				t.Fatalf("yielded after %v, sooner than every %v", time.Duration(at-last), yieldEvery)
			}
			last = at
			yields++
		}
	}
	// At most one yield per statement: on a loaded machine a statement
	// may take longer than yieldEvery.
	elapsed := time.Since(start)
	if want := min(statements, int(elapsed/yieldEvery)) / 4; yields < want || yields == 0 {
		t.Fatalf("%d yields in %v over %d statements; want at least %d", yields, elapsed, statements, want)
	}
}

// openWithPool opens a DB for url, closed when the test ends, and its core
// pool.
func openWithPool(t *testing.T, url string) (*sql.DB, *cpool) {
	t.Helper()
	db, err := OpenDB(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var pool *cpool
	if err := withConnector(db, "test", func(c *Connector) error { pool = c.pool; return nil }); err != nil {
		t.Fatal(err)
	}
	return db, pool
}

// serverURL is the throwaway server's URL from env: the in-package tests'
// counterpart of the external tests' pgURL and skipf (a skip, or a failure
// when the runner asked that nothing be skipped).
func serverURL(t testing.TB, env string) string {
	t.Helper()
	u := os.Getenv(env)
	if u == "" {
		if os.Getenv("DIALPOOL_REQUIRE_FAULTS") == "1" {
			t.Fatalf("%s is not set", env)
		}
		t.Skipf("%s is not set", env)
	}
	return u
}

// The first look of a read wait is a peek (netpollWait): it must find a
// reply that came before the wait began and that the netpoller has already
// seen, since RawRead forgets what the netpoller saw. Unfound, the
// goroutine would sleep until the wait's deadline.
func TestNetpollWaitFindsDataThatCameFirst(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	pf := newPollFile(fds[0], 1, nil)
	if pf == nil {
		t.Fatal("no duplicate for the netpoller")
	}
	defer pf.f.Close()

	// step reads what is there; true while nothing is.
	var steps int
	step := func() bool {
		steps++
		var b [16]byte
		n, err := syscall.Read(fds[0], b[:])
		return n <= 0 && errors.Is(err, syscall.EAGAIN)
	}
	finish := func() { t.Error("finish was called: the wait left the netpoller") }
	const deadline = 5 * time.Second
	for _, late := range []bool{false, true} {
		steps = 0
		if !late {
			if _, err := syscall.Write(fds[1], []byte("x")); err != nil {
				t.Fatal(err)
			}
			// The netpoller sees the socket readable while nobody waits.
			time.Sleep(50 * time.Millisecond)
		} else {
			time.AfterFunc(50*time.Millisecond, func() { _, _ = syscall.Write(fds[1], []byte("y")) })
		}
		start := time.Now()
		netpollWait(pf, &callCtx{}, newWait(fds[0], false, 1, deadline), step, finish)
		if took := time.Since(start); took > deadline/2 {
			t.Fatalf("late=%v: the reply was found after %v, at the wait's deadline", late, took)
		}
		if steps != 1 {
			t.Fatalf("late=%v: %d steps, want 1 (the peek finds nothing before the reply)", late, steps)
		}
	}
}
