// Command contrast runs the failures of `dialpool demo` through plain
// database/sql with the drivers a Go program would normally use — pgx's
// stdlib driver for PostgreSQL and go-sql-driver/mysql for MariaDB — under
// the same limits, given the way such a program gives them (a ctx deadline,
// SetMaxOpenConns), and prints what each call returned as one JSON document.
//
// `dialpool demo` builds it into the cargo target directory, runs it against
// its own throwaway servers and fault fixtures, and prints the errors beside
// its own. Nothing here is simulated: every error text is what the driver
// returned in this run, and "server_saw" is read from the server right after.
//
// It deliberately does not use dialpool: it is the "before" picture.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
)

// result is one scenario's outcome. The ids are the demo's scenario ids.
type result struct {
	ID     string  `json:"id"`
	Driver string  `json:"driver"`
	Ms     float64 `json:"ms"`
	// Error is the error text the caller got; empty when the call succeeded.
	Error string `json:"error"`
	// Cancelled: for the statement scenarios, whether the statement had
	// stopped on the server right after the caller got its error; null where
	// no statement was running.
	Cancelled *bool `json:"cancelled"`
	// StoppedAfterMs: when, after the caller got its error, the look began
	// that first found the statement stopped on the server.
	StoppedAfterMs *float64 `json:"stopped_after_ms"`
	ServerSaw      string   `json:"server_saw"`
	// Setup is set when the scenario could not be run at all (a server
	// unreachable): then the other fields mean nothing.
	Setup string `json:"setup,omitempty"`
}

type report struct {
	Go      string            `json:"go"`
	Drivers map[string]string `json:"drivers"`
	Results []result          `json:"results"`
}

type options struct {
	pgURL, mysqlURL, ca            string
	blackHole, refused, stall      string
	dialTimeout, acquireTimeout    time.Duration
	queryTimeout, idleCheckTimeout time.Duration
}

const (
	pgDriver    = "pgx/v5 stdlib"
	mysqlDriver = "go-sql-driver/mysql"
	// How long the server is watched after a slow query's error for the
	// statement to stop; the demo watches its own the same.
	watchStatement = time.Second
	// Every call below runs under a ctx deadline; this only bounds a bug.
	watchdog = 45 * time.Second
)

func main() {
	var o options
	flag.StringVar(&o.pgURL, "pg", "", "postgres://user:password@host:port/db of the throwaway PostgreSQL")
	flag.StringVar(&o.mysqlURL, "mysql", "", "mysql://user:password@host:port/db of the throwaway MariaDB")
	flag.StringVar(&o.ca, "ca", "", "CA file of the PostgreSQL server's certificate")
	flag.StringVar(&o.blackHole, "blackhole", "", "host:port whose SYNs are dropped")
	flag.StringVar(&o.refused, "refused", "", "host:port nobody listens on")
	flag.StringVar(&o.stall, "stall", "", "host:port that accepts SSLRequest and never completes TLS")
	flag.DurationVar(&o.dialTimeout, "dial-timeout", 500*time.Millisecond, "ctx deadline of the dial scenarios")
	flag.DurationVar(&o.acquireTimeout, "acquire-timeout", 500*time.Millisecond, "ctx deadline of the exhausted-pool scenario")
	flag.DurationVar(&o.queryTimeout, "query-timeout", time.Second, "ctx deadline of the slow queries")
	flag.DurationVar(&o.idleCheckTimeout, "idle-timeout", 2*time.Second, "ctx deadline of the query after the idle cut")
	flag.Parse()
	if o.pgURL == "" || o.mysqlURL == "" || o.ca == "" || o.refused == "" {
		fmt.Fprintln(os.Stderr, "usage: contrast -pg URL -mysql URL -ca FILE -refused ADDR [-blackhole ADDR] [-stall ADDR]")
		flag.PrintDefaults()
		os.Exit(2)
	}
	time.AfterFunc(watchdog, func() {
		fmt.Fprintf(os.Stderr, "contrast: still running after %s, giving up\n", watchdog)
		os.Exit(3)
	})

	rep := report{Go: runtime.Version(), Drivers: driverVersions()}
	for _, run := range []func(options) result{
		synBlackHole, refusedPort, stalledTLS, wrongCertificateName,
		exhaustedPool, slowQueryPostgres, slowQueryMariaDB, idleConnectionCut,
	} {
		rep.Results = append(rep.Results, run(o))
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		fmt.Fprintln(os.Stderr, "contrast:", err)
		os.Exit(1)
	}
}

// driverVersions reads the drivers' module versions from the build info, so
// the demo names exactly what ran.
func driverVersions() map[string]string {
	out := map[string]string{}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return out
	}
	for _, m := range info.Deps {
		switch m.Path {
		case "github.com/jackc/pgx/v5":
			out[pgDriver] = m.Version
		case "github.com/go-sql-driver/mysql":
			out[mysqlDriver] = m.Version
		}
	}
	return out
}

// pgDSN is the PostgreSQL URL with its host:port replaced by addr (when not
// empty) and the given query string.
func pgDSN(o options, addr, query string) (string, error) {
	u, err := url.Parse(o.pgURL)
	if err != nil {
		return "", err
	}
	if addr != "" {
		u.Host = addr
	}
	u.RawQuery = query
	return u.String(), nil
}

// mysqlDSN turns mysql://user:pw@host:port/db into the driver's DSN form.
func mysqlDSN(o options) (string, error) {
	u, err := url.Parse(o.mysqlURL)
	if err != nil {
		return "", err
	}
	cfg := mysql.NewConfig()
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.Net = "tcp"
	cfg.Addr = u.Host
	cfg.DBName = strings.TrimPrefix(u.Path, "/")
	return cfg.FormatDSN(), nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func setupFailed(id, driver string, err error) result {
	return result{ID: id, Driver: driver, Setup: err.Error()}
}

// ping opens a database/sql handle on dsn and pings it under timeout: what a
// Go program does to find out whether its database is there.
func ping(id, dsn string, timeout time.Duration) result {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return setupFailed(id, pgDriver, err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err = db.PingContext(ctx)
	return result{ID: id, Driver: pgDriver, Ms: ms(time.Since(start)), Error: errText(err), ServerSaw: "-"}
}

func synBlackHole(o options) result {
	if o.blackHole == "" {
		return setupFailed("syn_black_hole", pgDriver, errors.New("the demo has no such fixture on this machine"))
	}
	dsn, err := pgDSN(o, o.blackHole, "sslmode=disable")
	if err != nil {
		return setupFailed("syn_black_hole", pgDriver, err)
	}
	return ping("syn_black_hole", dsn, o.dialTimeout)
}

func refusedPort(o options) result {
	dsn, err := pgDSN(o, o.refused, "sslmode=disable")
	if err != nil {
		return setupFailed("refused_port", pgDriver, err)
	}
	return ping("refused_port", dsn, o.dialTimeout)
}

func stalledTLS(o options) result {
	if o.stall == "" {
		return setupFailed("stalled_tls", pgDriver, errors.New("the demo has no such fixture on this machine"))
	}
	dsn, err := pgDSN(o, o.stall, "sslmode=require")
	if err != nil {
		return setupFailed("stalled_tls", pgDriver, err)
	}
	return ping("stalled_tls", dsn, o.dialTimeout)
}

func wrongCertificateName(o options) result {
	dsn, err := pgDSN(o, "", "sslmode=verify-full&sslrootcert="+url.QueryEscape(o.ca))
	if err != nil {
		return setupFailed("wrong_certificate_name", pgDriver, err)
	}
	// A generous deadline: this one fails on its own, not on a limit.
	return ping("wrong_certificate_name", dsn, 5*time.Second)
}

func exhaustedPool(o options) result {
	const id = "exhausted_pool"
	dsn, err := pgDSN(o, "", "sslmode=disable")
	if err != nil {
		return setupFailed(id, pgDriver, err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return setupFailed(id, pgDriver, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(2)
	setup, cancelSetup := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelSetup()
	for range 2 {
		c, err := db.Conn(setup)
		if err != nil {
			return setupFailed(id, pgDriver, err)
		}
		defer c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.acquireTimeout)
	defer cancel()
	start := time.Now()
	var n int
	err = db.QueryRowContext(ctx, "SELECT 1").Scan(&n)
	return result{ID: id, Driver: pgDriver, Ms: ms(time.Since(start)), Error: errText(err),
		ServerSaw: "nothing: no statement was sent"}
}

// slowQuery runs sleepSQL on one connection under the query deadline and
// then asks the server, over another connection, what that session is doing.
func slowQuery(id, driverName, label, dsn, idSQL, sleepSQL, stateSQL string, running func(string) bool, o options) result {
	db, err := sql.Open(driverName, dsn)
	if err != nil {
		return setupFailed(id, label, err)
	}
	defer db.Close()
	admin, err := sql.Open(driverName, dsn)
	if err != nil {
		return setupFailed(id, label, err)
	}
	defer admin.Close()
	setup, cancelSetup := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelSetup()
	conn, err := db.Conn(setup)
	if err != nil {
		return setupFailed(id, label, err)
	}
	defer conn.Close()
	var session string
	if err := conn.QueryRowContext(setup, idSQL).Scan(&session); err != nil {
		return setupFailed(id, label, err)
	}
	// Connected beforehand, so the look at the server follows the error at once.
	if err := admin.PingContext(setup); err != nil {
		return setupFailed(id, label, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.queryTimeout)
	defer cancel()
	start := time.Now()
	var ignored any
	err = conn.QueryRowContext(ctx, sleepSQL).Scan(&ignored)
	errAt := time.Now()
	r := result{ID: id, Driver: label, Ms: ms(errAt.Sub(start)), Error: errText(err)}
	// Watched for a while, not looked at once: a driver may cancel in the
	// background after returning (pgx does, from a goroutine).
	var state string
	for {
		// The time a look starts: a look that finds the statement stopped
		// bounds when it stopped.
		after := time.Since(errAt)
		err := admin.QueryRowContext(setup, stateSQL, session).Scan(&state)
		if errors.Is(err, sql.ErrNoRows) {
			state = "gone"
		} else if err != nil {
			r.ServerSaw = "could not look: " + err.Error()
			return r
		}
		if !running(state) {
			stopped, afterMs := true, ms(after)
			r.Cancelled, r.StoppedAfterMs = &stopped, &afterMs
			r.ServerSaw = fmt.Sprintf("session %s '%s' at a look %.1fms after the error: statement stopped", session, state, afterMs)
			return r
		}
		if time.Since(errAt) >= watchStatement {
			stopped := false
			r.Cancelled = &stopped
			r.ServerSaw = fmt.Sprintf("session %s '%s' %s after the error: %s still running", session, state, watchStatement, sleepSQL)
			return r
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func slowQueryPostgres(o options) result {
	dsn, err := pgDSN(o, "", "sslmode=disable")
	if err != nil {
		return setupFailed("slow_query_postgres", pgDriver, err)
	}
	return slowQuery("slow_query_postgres", "pgx", pgDriver, dsn,
		"SELECT pg_backend_pid()::text", "SELECT pg_sleep(5)",
		"SELECT state FROM pg_stat_activity WHERE pid = $1::int",
		func(state string) bool { return state == "active" }, o)
}

func slowQueryMariaDB(o options) result {
	dsn, err := mysqlDSN(o)
	if err != nil {
		return setupFailed("slow_query_mariadb", mysqlDriver, err)
	}
	return slowQuery("slow_query_mariadb", "mysql", mysqlDriver, dsn,
		"SELECT CONNECTION_ID()", "SELECT SLEEP(5)",
		"SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = ?",
		func(command string) bool { return command == "Query" }, o)
}

// idleConnectionCut: the server ends a pooled connection while it is idle
// (as idle_session_timeout or a proxy would); the next caller's query.
func idleConnectionCut(o options) result {
	const id = "idle_connection_cut"
	dsn, err := pgDSN(o, "", "sslmode=disable")
	if err != nil {
		return setupFailed(id, pgDriver, err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return setupFailed(id, pgDriver, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		return setupFailed(id, pgDriver, err)
	}
	defer admin.Close()
	setup, cancelSetup := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelSetup()
	var pid int
	if err := db.QueryRowContext(setup, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		return setupFailed(id, pgDriver, err)
	}
	var done bool
	if err := admin.QueryRowContext(setup, "SELECT pg_terminate_backend($1)", pid).Scan(&done); err != nil {
		return setupFailed(id, pgDriver, err)
	}
	// The same pause as the demo's own run: the backend has exited by then.
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), o.idleCheckTimeout)
	defer cancel()
	start := time.Now()
	var now int
	err = db.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&now)
	r := result{ID: id, Driver: pgDriver, Ms: ms(time.Since(start)), Error: errText(err)}
	if err != nil {
		r.ServerSaw = fmt.Sprintf("backend %d terminated while idle; the next query failed", pid)
	} else {
		r.ServerSaw = fmt.Sprintf("backend %d terminated while idle; the next query ran on backend %d", pid, now)
	}
	return r
}
