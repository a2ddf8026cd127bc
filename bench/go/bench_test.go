// Package bench times the dialpool Go binding next to the Go drivers it
// replaces, side by side in one run against the same servers:
//
//   - SELECT 1 on PostgreSQL through database/sql with the dialpool driver,
//     with pgx's stdlib driver, and with pgxpool directly;
//   - SELECT 1 on MariaDB through database/sql with the dialpool driver and
//     with go-sql-driver/mysql;
//   - a TCP dial (+ close) with the dialpool Dialer and with net.Dialer,
//     against a listener in a child process;
//
// each at 1, 4 and 16 goroutines sharing b.N. Every pool has room for 16
// connections and is warmed up before the clock starts. Run it under the
// test runner, which starts the servers (see RESULTS.md for the command).
package bench

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"

	dialpool "github.com/dialpool/dialpool/go"
)

const poolSize = 16

// side is one contender of a comparison.
type side struct {
	name string
	op   func() error
}

// ordered returns the sides as given, or reversed when BENCH_REVERSE=1
// (run.sh alternates, so that neither side always runs first).
func ordered(sides []side) []side {
	if os.Getenv("BENCH_REVERSE") != "1" {
		return sides
	}
	out := make([]side, len(sides))
	for i, s := range sides {
		out[len(sides)-1-i] = s
	}
	return out
}

var parallelism = []int{1, 4, 16}

// runParallel runs op b.N times in total from exactly p goroutines.
func runParallel(b *testing.B, p int, op func() error) {
	b.Helper()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	before, cpuBefore := contextSwitches(), cpuTime()
	b.ResetTimer()
	for g := 0; g < p; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := op(); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	// Context switches of this process (every thread: Go's, the core's
	// runtime workers, threads blocked in cgo) per operation.
	b.ReportMetric(float64(contextSwitches()-before)/float64(b.N), "cs/op")
	// CPU time of this process (user + system, all threads) per operation:
	// on 2 CPUs shared with the database servers, what the client burns is
	// taken from them.
	b.ReportMetric(float64((cpuTime()-cpuBefore).Microseconds())/float64(b.N), "cpu-µs/op")
}

// cpuTime is this process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// contextSwitches is this process's voluntary plus involuntary context
// switches so far.
func contextSwitches() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Nvcsw + ru.Nivcsw
}

// warm opens n connections at once so the timed loop finds them idle.
func warm(b *testing.B, n int, op func() error) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if err := op(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

func env(b *testing.B, name string) string {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		b.Skipf("%s is not set: run under `cargo run -p dialpool-testkit -- run -- …`", name)
	}
	return v
}

func selectOne(db *sql.DB) func() error {
	return func() error {
		var n int
		if err := db.QueryRow("SELECT 1").Scan(&n); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("got %d", n)
		}
		return nil
	}
}

func BenchmarkPostgresSelect1(b *testing.B) {
	base := env(b, "DIALPOOL_TEST_PG_URL") + "?sslmode=disable"

	dp, err := dialpool.OpenDB(base + fmt.Sprintf("&max_open=%d", poolSize))
	if err != nil {
		b.Fatal(err)
	}
	defer dp.Close()

	std, err := sql.Open("pgx", base)
	if err != nil {
		b.Fatal(err)
	}
	defer std.Close()
	std.SetMaxOpenConns(poolSize)
	std.SetMaxIdleConns(poolSize)

	cfg, err := pgxpool.ParseConfig(base)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = poolSize
	pp, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pp.Close()
	pgxpoolOp := func() error {
		var n int
		return pp.QueryRow(context.Background(), "SELECT 1").Scan(&n)
	}

	sides := ordered([]side{
		{"dialpool", selectOne(dp)},
		{"pgx-stdlib", selectOne(std)},
		{"pgxpool", pgxpoolOp},
	})
	for _, s := range sides {
		warm(b, poolSize, s.op)
	}
	for _, p := range parallelism {
		for _, s := range sides {
			b.Run(fmt.Sprintf("p=%d/%s", p, s.name), func(b *testing.B) { runParallel(b, p, s.op) })
		}
	}
}

// The same through a context with a deadline, as a server handler has: the
// dialpool side then makes a dp_ctx and a context.AfterFunc per call.
func BenchmarkPostgresSelect1WithDeadline(b *testing.B) {
	base := env(b, "DIALPOOL_TEST_PG_URL") + "?sslmode=disable"
	dp, err := dialpool.OpenDB(base + fmt.Sprintf("&max_open=%d", poolSize))
	if err != nil {
		b.Fatal(err)
	}
	defer dp.Close()
	std, err := sql.Open("pgx", base)
	if err != nil {
		b.Fatal(err)
	}
	defer std.Close()
	std.SetMaxOpenConns(poolSize)
	std.SetMaxIdleConns(poolSize)
	withDeadline := func(db *sql.DB) func() error {
		return func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var n int
			return db.QueryRowContext(ctx, "SELECT 1").Scan(&n)
		}
	}
	sides := ordered([]side{
		{"dialpool", withDeadline(dp)},
		{"pgx-stdlib", withDeadline(std)},
	})
	for _, s := range sides {
		warm(b, poolSize, s.op)
	}
	for _, p := range parallelism {
		for _, s := range sides {
			b.Run(fmt.Sprintf("p=%d/%s", p, s.name), func(b *testing.B) { runParallel(b, p, s.op) })
		}
	}
}

func BenchmarkMariaDBSelect1(b *testing.B) {
	base := env(b, "DIALPOOL_TEST_MARIADB_URL")
	// Plain TCP on both sides: go-sql-driver/mysql's Config has TLS off,
	// and dialpool's default (sslmode=prefer) would take TLS.
	dp, err := dialpool.OpenDB(base + fmt.Sprintf("?sslmode=disable&max_open=%d", poolSize))
	if err != nil {
		b.Fatal(err)
	}
	defer dp.Close()
	if err := dp.Ping(); err != nil {
		if strings.Contains(err.Error(), "not available yet") {
			b.Skipf("the core's pool does not take mysql:// yet: %v", err)
		}
		b.Fatal(err)
	}

	u, err := url.Parse(base)
	if err != nil {
		b.Fatal(err)
	}
	pw, _ := u.User.Password()
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = u.User.Username(), pw, "tcp", u.Host, strings.TrimPrefix(u.Path, "/")
	my, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		b.Fatal(err)
	}
	defer my.Close()
	my.SetMaxOpenConns(poolSize)
	my.SetMaxIdleConns(poolSize)

	sides := ordered([]side{
		{"dialpool", selectOne(dp)},
		{"go-sql-driver", selectOne(my)},
	})
	for _, s := range sides {
		warm(b, poolSize, s.op)
	}
	for _, p := range parallelism {
		for _, s := range sides {
			b.Run(fmt.Sprintf("p=%d/%s", p, s.name), func(b *testing.B) { runParallel(b, p, s.op) })
		}
	}
}

// TestMain lets the test binary run as the Dial benchmark's listener (see
// startListener) when DIALPOOL_BENCH_LISTENER is set.
func TestMain(m *testing.M) {
	if os.Getenv("DIALPOOL_BENCH_LISTENER") == "1" {
		listen()
		return
	}
	os.Exit(m.Run())
}

// listen accepts and closes connections on a loopback port, which it
// prints, until its standard input closes.
func listen() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(l.Addr().String())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(1)
		}
		c.Close()
	}
}

// startListener runs the listener in a child process and returns its
// address. In this process its accept loop would be one goroutine among
// the dialers, and a dialer that completes quickly starves it: its accept
// queue overflows, the kernel drops SYNs, and a dial waits out the 1 s
// SYN retransmission. That happened to the dialpool side at p=16, which
// then measured the stalls, not the dials.
func startListener(b *testing.B) string {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "DIALPOOL_BENCH_LISTENER=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("the listener process: %v", err)
	}
	return strings.TrimSpace(addr)
}

// A loopback dial and close against a listener in another process that
// accepts and closes.
func BenchmarkDial(b *testing.B) {
	addr := startListener(b)
	dd, err := dialpool.NewDialer("connect_timeout=3s")
	if err != nil {
		b.Fatal(err)
	}
	var nd net.Dialer
	dial := func(f func(context.Context, string, string) (net.Conn, error)) func() error {
		return func() error {
			c, err := f(context.Background(), "tcp", addr)
			if err != nil {
				return err
			}
			// Reset rather than close politely, on both sides: otherwise
			// every dial leaves a TIME_WAIT socket, and with ~100,000 of
			// them the kernel's search for a free ephemeral port in
			// connect(2) took half the time, by an amount that depended on
			// what earlier runs had left.
			if tc, ok := c.(*net.TCPConn); ok {
				if err := tc.SetLinger(0); err != nil {
					return err
				}
			}
			return c.Close()
		}
	}
	sides := ordered([]side{
		{"dialpool", dial(dd.DialContext)},
		{"net.Dialer", dial(nd.DialContext)},
	})
	for _, p := range parallelism {
		for _, s := range sides {
			b.Run(fmt.Sprintf("p=%d/%s", p, s.name), func(b *testing.B) { runParallel(b, p, s.op) })
		}
	}
}
