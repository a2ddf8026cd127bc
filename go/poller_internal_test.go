package dialpool

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// A statement waits in the netpoller only when another one runs in the same
// pool (alone, it waits in C). Here one long statement keeps the others
// company, so that a result, a deadline and a cancel all take the
// netpoller path; each must behave as on the C path and leave no statement
// running on the server.
func TestNetpollerPathResultDeadlineAndCancel(t *testing.T) {
	base := os.Getenv("DIALPOOL_TEST_PG_URL")
	if base == "" {
		if os.Getenv("DIALPOOL_REQUIRE_FAULTS") == "1" {
			t.Fatal("DIALPOOL_TEST_PG_URL is not set")
		}
		t.Skip("DIALPOOL_TEST_PG_URL is not set")
	}
	db, err := OpenDB(base + "?sslmode=disable&max_open=4&application_name=dp-netpoll")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	company := make(chan error, 1)
	go func() {
		_, err := db.Exec("SELECT pg_sleep(3)")
		company <- err
	}()
	time.Sleep(300 * time.Millisecond)
	before := statementsInNetpoller.Load()

	var n int
	if err := db.QueryRow("SELECT $1::int * 2", 21).Scan(&n); err != nil || n != 42 {
		t.Fatalf("result: %d, %v", n, err)
	}

	tctx, tcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	start := time.Now()
	_, err = db.ExecContext(tctx, "SELECT pg_sleep(5)")
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
	_, err = db.ExecContext(cctx, "SELECT pg_sleep(5)")
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the cancel took %v", took)
	}

	if got := statementsInNetpoller.Load() - before; got < 3 {
		t.Fatalf("%d of 3 statements waited in the netpoller", got)
	}
	if err := <-company; err != nil {
		t.Fatalf("the long statement: %v", err)
	}
	// Both interrupted statements were stopped on the server.
	var running int
	if err := db.QueryRow("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dp-netpoll' AND state = 'active' AND query LIKE 'SELECT pg_sleep(5)%'").Scan(&running); err != nil {
		t.Fatal(err)
	}
	if running != 0 {
		t.Fatalf("%d statements still running on the server", running)
	}
}
