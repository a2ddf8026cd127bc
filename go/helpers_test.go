package dialpool_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dialpool "github.com/dialpool/dialpool/go"
)

// The throwaway servers come from the test runner
// (`cargo run -p dialpool-testkit -- run -- …`), which exports these.
const (
	envPgURL        = "DIALPOOL_TEST_PG_URL"
	envPgCA         = "DIALPOOL_TEST_PG_CA"
	envMariaURL     = "DIALPOOL_TEST_MARIADB_URL"
	envRequireAll   = "DIALPOOL_REQUIRE_FAULTS"
	notAvailableYet = "not available yet"
)

// skipf skips with a reason, or fails when the runner asked that nothing be
// skipped for want of a server or a fixture.
func skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(envRequireAll) == "1" {
		t.Fatalf("would skip, but %s=1: "+format, append([]any{envRequireAll}, args...)...)
	}
	t.Skipf("SKIPPED %s: "+format, append([]any{t.Name()}, args...)...)
}

// pgURL is the PostgreSQL server's URL with extra options ("k=v&k=v").
func pgURL(t testing.TB, options string) string {
	t.Helper()
	base := os.Getenv(envPgURL)
	if base == "" {
		skipf(t, "%s is not set: run under `cargo run -p dialpool-testkit -- run -- …`", envPgURL)
	}
	u := base + "?sslmode=disable"
	if options != "" {
		u += "&" + options
	}
	return u
}

// pgHostPort is the PostgreSQL server's "127.0.0.1:PORT".
func pgHostPort(t testing.TB) string {
	t.Helper()
	u, err := url.Parse(pgURL(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// pgKeyValue is a libpq-style DSN for pgx and lib/pq.
func pgDSN(t testing.TB) string {
	t.Helper()
	return pgURL(t, "")
}

// mariaURL is the MariaDB server's URL with extra options.
func mariaURL(t testing.TB, options string) string {
	t.Helper()
	base := os.Getenv(envMariaURL)
	if base == "" {
		skipf(t, "%s is not set: run under `cargo run -p dialpool-testkit -- run -- …`", envMariaURL)
	}
	if options != "" {
		return base + "?" + options
	}
	return base
}

// openPg opens a *sql.DB over the dialpool driver, closed with the test.
func openPg(t testing.TB, options string) *sql.DB {
	t.Helper()
	db, err := dialpool.OpenDB(pgURL(t, options))
	if err != nil {
		t.Fatalf("OpenDB: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// openMaria opens a *sql.DB over the dialpool driver against MariaDB, or
// skips while the core pool has no MySQL sessions.
func openMaria(t testing.TB, options string) *sql.DB {
	t.Helper()
	db, err := dialpool.OpenDB(mariaURL(t, options))
	if err == nil {
		err = db.PingContext(context.Background())
		if err != nil {
			db.Close()
		}
	}
	if err != nil {
		if strings.Contains(err.Error(), notAvailableYet) {
			// Not a missing fixture: the core's pool does not take mysql://
			// yet, so this skip is allowed even when nothing may skip.
			t.Skipf("SKIPPED %s: MySQL/MariaDB through the dialpool driver: the core says %q", t.Name(), err.Error())
		}
		t.Fatalf("OpenDB(mariadb): %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// mustDpError finds the *dialpool.Error in err's chain.
func mustDpError(t testing.TB, err error) *dialpool.Error {
	t.Helper()
	var e *dialpool.Error
	if !errors.As(err, &e) {
		t.Fatalf("want a *dialpool.Error in the chain, got %T: %v", err, err)
	}
	return e
}

// refusedAddr is 127.0.0.1 and a port nobody listens on.
func refusedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// blackHole is a loopback listener with backlog 0 that never accepts and
// whose accept queue is full, so Linux drops every further SYN: a connect
// to it hangs until the client's own limit.
type blackHole struct {
	fd      int
	fillers []net.Conn
	addr    string
}

func newBlackHole(t testing.TB) *blackHole {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := &blackHole{fd: fd}
	t.Cleanup(h.close)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	h.addr = fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for i := 0; i < 16; i++ {
		c, err := net.DialTimeout("tcp", h.addr, 200*time.Millisecond)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return h // the queue is full: SYNs are dropped now
			}
			t.Fatalf("filling the black hole: %v", err)
		}
		h.fillers = append(h.fillers, c)
	}
	skipf(t, "could not fill a backlog-0 accept queue with 16 connections")
	return nil
}

func (h *blackHole) close() {
	for _, c := range h.fillers {
		c.Close()
	}
	h.fillers = nil
	if h.fd >= 0 {
		syscall.Close(h.fd)
		h.fd = -1
	}
}

// countFDs is the number of open file descriptors of this process.
func countFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// leakCheck records goroutines and descriptors now; the returned func
// fails the test if, after up to 5 s of settling, more are left.
func leakCheck(t *testing.T) func() {
	t.Helper()
	runtime.GC()
	baseG, baseFD := runtime.NumGoroutine(), countFDs(t)
	return func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			runtime.GC()
			g, fds := runtime.NumGoroutine(), countFDs(t)
			if g <= baseG && fds <= baseFD {
				t.Logf("no leak: %d goroutines (baseline %d), %d fds (baseline %d)", g, baseG, fds, baseFD)
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Fatalf("leak: %d goroutines (baseline %d), %d fds (baseline %d)\n%s", g, baseG, fds, baseFD, buf[:n])
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// activeBackends counts PostgreSQL backends running a statement that
// contains marker, seen from another connection.
func activeBackends(t testing.TB, admin *sql.DB, marker string) int {
	t.Helper()
	var n int
	err := admin.QueryRow(`SELECT count(*) FROM pg_stat_activity
		WHERE state <> 'idle' AND pid <> pg_backend_pid() AND position($1 in query) > 0`, marker).Scan(&n)
	if err != nil {
		t.Fatalf("pg_stat_activity: %v", err)
	}
	return n
}

// inParallel runs f(0) … f(n-1) in n goroutines and returns their errors.
func inParallel(n int, f func(g int) error) []error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := 0; g < n; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			if err := f(g); err != nil {
				errs <- err
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	var out []error
	for err := range errs {
		out = append(out, err)
	}
	return out
}
