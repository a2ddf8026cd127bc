package dialpool_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/lib/pq"

	dialpool "github.com/dialpool/dialpool/go"
)

func newDialer(t testing.TB, options string) *dialpool.Dialer {
	t.Helper()
	d, err := dialpool.NewDialer(options)
	if err != nil {
		t.Fatalf("NewDialer(%q): %v", options, err)
	}
	return d
}

func TestNewDialerValidatesOptions(t *testing.T) {
	if _, err := dialpool.NewDialer(""); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if _, err := dialpool.NewDialer("?connect_timeout=250ms&tcp_user_timeout=10s&keepalive_idle=5s&syn_retries=2"); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	_, err := dialpool.NewDialer("conect_timeout=3s")
	e := mustDpError(t, err)
	if e.Code != dialpool.CodeInvalidArgument || !strings.Contains(e.Message, "connect_timeout") {
		t.Fatalf("a misspelt key must be INVALID_ARGUMENT naming the right one: %v", err)
	}
	if _, err := dialpool.NewDialer("connect_timeout=soon"); !errors.Is(err, dialpool.ErrInvalidArgument) {
		t.Fatalf("a bad value: %v", err)
	}
}

func TestDialerWithPgx(t *testing.T) {
	d := newDialer(t, "connect_timeout=3s&tcp_user_timeout=10s")
	cfg, err := pgx.ParseConfig(pgDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DialFunc = d.DialContext
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgx over the dialpool dialer: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	var s string
	if err := conn.QueryRow(ctx, "SELECT 41 + $1::int, current_user", 1).Scan(&n, &s); err != nil || n != 42 || s != "dialpool" {
		t.Fatalf("query: %d %q %v", n, s, err)
	}

	// pgxpool too: every pooled connection dials through dialpool.
	pcfg, err := pgxpool.ParseConfig(pgDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.DialFunc = d.DialContext
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := pool.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("pgxpool: %d %v", n, err)
	}
}

func TestDialerWithLibPQ(t *testing.T) {
	d := newDialer(t, "connect_timeout=3s")
	c, err := pq.NewConnector(pgDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	c.Dialer(d) // lib/pq calls DialContext when the dialer has it
	db := sql.OpenDB(c)
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT 40 + $1::int", 2).Scan(&n); err != nil || n != 42 {
		t.Fatalf("lib/pq over the dialpool dialer: %d %v", n, err)
	}
	// pq.DialOpen takes the Dialer interface (Dial, DialTimeout).
	conn, err := pq.DialOpen(d, pgDSN(t))
	if err != nil {
		t.Fatalf("pq.DialOpen: %v", err)
	}
	conn.Close()
}

func TestDialerWithGoSQLDriverMySQL(t *testing.T) {
	u, err := url.Parse(mariaURL(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	d := newDialer(t, "connect_timeout=3s&tcp_user_timeout=10s")
	mysql.RegisterDialContext("dialpool", func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	})
	pw, _ := u.User.Password()
	dsn := fmt.Sprintf("%s:%s@dialpool(%s)%s", u.User.Username(), pw, u.Host, u.Path)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	var v string
	if err := db.QueryRow("SELECT 40 + ?, VERSION()", 2).Scan(&n, &v); err != nil || n != 42 {
		t.Fatalf("go-sql-driver/mysql over the dialpool dialer: %d %v", n, err)
	}
	t.Logf("MariaDB %s", v)
}

func TestDialerWithNetHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	defer srv.Close()
	d := newDialer(t, "connect_timeout=2s")
	tr := &http.Transport{DialContext: d.DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for i := 0; i < 3; i++ { // keep-alive reuses the dialled connection
		resp, err := client.Get(srv.URL + "/dialpool")
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hello /dialpool" {
			t.Fatalf("body %q", body)
		}
	}
}

func TestDialerConnIsARealSocket(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c)
		c.Close()
	}()
	c, err := newDialer(t, "").DialContext(context.Background(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*net.TCPConn); !ok {
		t.Fatalf("want *net.TCPConn, got %T", c)
	}
	if c.RemoteAddr().String() != l.Addr().String() {
		t.Fatalf("remote %v, want %v", c.RemoteAddr(), l.Addr())
	}
	// Deadlines work: the socket is in Go's poller.
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		t.Fatalf("read deadline: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestDialerErrors(t *testing.T) {
	d := newDialer(t, "connect_timeout=300ms")

	t.Run("refused", func(t *testing.T) {
		_, err := d.DialContext(context.Background(), "tcp", refusedAddr(t))
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			t.Fatalf("want *net.OpError{Op: dial}, got %T %v", err, err)
		}
		e := mustDpError(t, err)
		if !errors.Is(err, dialpool.ErrConnectionRefused) || e.Layer != dialpool.LayerDial || e.Timeout() || op.Timeout() {
			t.Fatalf("refused: %+v", e)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatal("a refusal is no timeout")
		}
	})

	t.Run("black hole", func(t *testing.T) {
		hole := newBlackHole(t)
		netpolled := dialpool.DialsNetpolled()
		start := time.Now()
		_, err := d.DialContext(context.Background(), "tcp", hole.addr)
		took := time.Since(start)
		// The handshake's wait, and connect_timeout with it, ran in the
		// netpoller, not in a blocked cgo call.
		if dialpool.DialsNetpolled() == netpolled {
			t.Fatal("the dial did not wait in the netpoller")
		}
		e := mustDpError(t, err)
		if !errors.Is(err, dialpool.ErrConnectTimeout) || !e.Timeout() || !isTimeout(err) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("black hole: %v", err)
		}
		if e.Limit != "connect_timeout" || e.Layer != dialpool.LayerDial {
			t.Fatalf("limit %q layer %v", e.Limit, e.Layer)
		}
		if took < 250*time.Millisecond || took > 2*time.Second {
			t.Fatalf("connect_timeout=300ms fired after %v", took)
		}

		// The caller's deadline, earlier than connect_timeout, is named.
		long := newDialer(t, "connect_timeout=10s")
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start = time.Now()
		_, err = long.DialContext(ctx, "tcp", hole.addr)
		took = time.Since(start)
		e = mustDpError(t, err)
		if !errors.Is(err, dialpool.ErrConnectTimeout) || e.Limit != "deadline" || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("ctx deadline: %v (limit %q)", err, e.Limit)
		}
		if took > 2*time.Second {
			t.Fatalf("ctx deadline of 300ms fired after %v", took)
		}
	})

	t.Run("expired ctx does not dial", func(t *testing.T) {
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		_, err := d.DialContext(ctx, "tcp", refusedAddr(t))
		if !errors.Is(err, context.DeadlineExceeded) || !isTimeout(err) {
			t.Fatalf("expired ctx: %v", err)
		}
		ctx, cancel = context.WithCancel(context.Background())
		cancel()
		if _, err := d.DialContext(ctx, "tcp", refusedAddr(t)); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled ctx: %v", err)
		}
	})

	t.Run("unknown network", func(t *testing.T) {
		if _, err := d.DialContext(context.Background(), "udp", "127.0.0.1:53"); err == nil {
			t.Fatal("udp must be refused")
		}
	})
}

// A ctx cancel reaches dp_ctx_cancel while the dial blocks in C.
func TestDialerCancelInterruptsADial(t *testing.T) {
	hole := newBlackHole(t)
	d := newDialer(t, "connect_timeout=30s")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	netpolled := dialpool.DialsNetpolled()
	start := time.Now()
	_, err := d.DialContext(ctx, "tcp", hole.addr)
	took := time.Since(start)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, dialpool.ErrCancelled) {
		t.Fatalf("cancelled dial: %v", err)
	}
	if dialpool.DialsNetpolled() == netpolled {
		t.Fatal("the dial did not wait in the netpoller, so the cancel did not end a netpoller wait")
	}
	if isTimeout(err) {
		t.Fatal("a cancel is no timeout")
	}
	if took > time.Second {
		t.Fatalf("the cancel took effect after %v (cancelled at 200ms)", took)
	}
}
