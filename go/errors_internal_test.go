package dialpool

import (
	"context"
	"database/sql/driver"
	"errors"
	"math"
	"net"
	"testing"
	"time"
)

func TestErrorMatchesSentinelsAndContextErrors(t *testing.T) {
	timeouts := map[Code]*Error{
		CodeDNSTimeout: ErrDNSTimeout, CodeConnectTimeout: ErrConnectTimeout, CodeTLSTimeout: ErrTLSTimeout,
		CodeLoginTimeout: ErrLoginTimeout, CodeAcquireTimeout: ErrAcquireTimeout, CodeQueryTimeout: ErrQueryTimeout,
		CodeReadTimeout: ErrReadTimeout, CodeWriteTimeout: ErrWriteTimeout,
	}
	for code, s := range timeouts {
		e := &Error{Code: code, timeout: true, Message: "x"}
		if !errors.Is(e, s) || !errors.Is(e, context.DeadlineExceeded) || errors.Is(e, context.Canceled) {
			t.Errorf("%v: Is(sentinel)=%v Is(DeadlineExceeded)=%v", code, errors.Is(e, s), errors.Is(e, context.DeadlineExceeded))
		}
		var ne net.Error
		if !errors.As(error(e), &ne) || !ne.Timeout() {
			t.Errorf("%v: not a timing-out net.Error", code)
		}
	}
	refused := &Error{Code: CodeConnectionRefused, Layer: LayerDial, Retryable: true}
	if !errors.Is(refused, ErrConnectionRefused) || errors.Is(refused, ErrConnectTimeout) || errors.Is(refused, context.DeadlineExceeded) || refused.Timeout() {
		t.Error("refused matches the wrong things")
	}
	cancelled := &Error{Code: CodeCancelled}
	if !errors.Is(cancelled, context.Canceled) || !errors.Is(cancelled, ErrCancelled) || errors.Is(cancelled, context.DeadlineExceeded) {
		t.Error("cancelled must match context.Canceled only")
	}
	// An acquire timeout caused by a refused connect matches both.
	acq := &Error{Code: CodeAcquireTimeout, Layer: LayerPool, timeout: true, Source: refused}
	if !errors.Is(acq, ErrAcquireTimeout) || !errors.Is(acq, ErrConnectionRefused) || errors.Is(acq, ErrQueryTimeout) {
		t.Error("source chain not followed")
	}
	// A plain *Error that is not a sentinel matches nothing by code.
	if errors.Is(&Error{Code: CodeQueryTimeout}, &Error{Code: CodeQueryTimeout}) {
		t.Error("non-sentinel targets must not match by code")
	}
	if CodeQueryTimeout.String() != "DP_QUERY_TIMEOUT" || LayerPool.String() != "pool" || Code(99).String() != "DP_UNKNOWN(99)" {
		t.Error("names")
	}
}

func TestBadConnErrorIsBothBadConnAndItsCode(t *testing.T) {
	e := &Error{Code: CodeConnectionLost, Layer: LayerQuery, Retryable: true, Message: "query: connection lost"}
	var err error = badConnError{e}
	if !errors.Is(err, driver.ErrBadConn) || !errors.Is(err, ErrConnectionLost) || err.Error() != e.Message {
		t.Fatal("badConnError must match driver.ErrBadConn and its code")
	}
	var got *Error
	if !errors.As(err, &got) || got != e {
		t.Fatal("errors.As must find the *Error")
	}
	if errors.Is(e, driver.ErrBadConn) {
		t.Fatal("a plain *Error is never ErrBadConn")
	}
}

func TestNamesMatchTheLibrary(t *testing.T) {
	for c := CodeOK; c <= CodeNetworkError; c++ {
		if got := cCodeName(c); got != c.String() {
			t.Errorf("code %d: library says %s, Go says %s", int(c), got, c.String())
		}
	}
	for l := LayerNone; l <= LayerQuery; l++ {
		if got := cLayerName(l); got != l.String() {
			t.Errorf("layer %d: library says %s, Go says %s", int(l), got, l.String())
		}
	}
}

func TestCallCtx(t *testing.T) {
	var c callCtx
	if err := c.begin(context.Background()); err != nil || c.p != nil {
		t.Fatal("a background context needs no dp_ctx")
	}
	c.end()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.begin(ctx); !errors.Is(err, context.Canceled) || c.p != nil {
		t.Fatalf("cancelled ctx: %v", err)
	}
	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if err := c.begin(ctx); !errors.Is(err, context.DeadlineExceeded) || c.p != nil {
		t.Fatalf("expired ctx: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Hour)
	if err := c.begin(ctx); err != nil || c.p == nil {
		t.Fatal("a live ctx gets a dp_ctx")
	}
	cancel() // the AfterFunc cancels the dp_ctx
	c.end()
	if c.p != nil {
		t.Fatal("end frees")
	}
}

func TestEncodeArguments(t *testing.T) {
	tm := time.Date(2024, 2, 3, 4, 5, 6, 789000000, time.FixedZone("x", 5*3600+30*60))
	args := []driver.NamedValue{
		{Ordinal: 1, Value: int64(-7)}, {Ordinal: 2, Value: nil}, {Ordinal: 3, Value: 1.5},
		{Ordinal: 4, Value: true}, {Ordinal: 5, Value: []byte{0, 1, 0xfe}}, {Ordinal: 6, Value: "héllo"},
		{Ordinal: 7, Value: tm}, {Ordinal: 8, Value: uint64(math.MaxUint64)}, {Ordinal: 9, Value: math.Inf(-1)},
	}
	want := []string{"-7", "", "1.5", "true", `\x0001fe`, "héllo", "2024-02-03 04:05:06.789+05:30", "18446744073709551615", "-Infinity"}
	buf, offs, err := encodeStatement(postgres, "SELECT 1", args)
	if err != nil {
		t.Fatal(err)
	}
	check := func(buf []byte, offs []int64, want []string) {
		t.Helper()
		for i, w := range want {
			if offs[i] < 0 {
				if i != 1 {
					t.Errorf("arg %d is NULL", i+1)
				}
				continue
			}
			end := offs[i]
			for buf[end] != 0 {
				end++
			}
			if got := string(buf[offs[i]:end]); got != w {
				t.Errorf("arg %d: %q, want %q", i+1, got, w)
			}
		}
	}
	check(buf, offs, want)
	if _, _, err := encodeStatement(mysql, "SELECT 1", args[:8]); err == nil {
		t.Error("MySQL: a NUL byte in []byte must be refused (text parameters)")
	}
	args[4].Value = []byte("raw")
	buf, offs, _ = encodeStatement(mysql, "SELECT 1", args[:8])
	check(buf, offs, []string{"-7", "", "1.5", "1", "raw", "héllo", "2024-02-02 22:35:06.789", "18446744073709551615"})
	if _, _, err := encodeStatement(postgres, "SELECT $1", []driver.NamedValue{{Ordinal: 1, Value: "a\x00b"}}); err == nil {
		t.Error("a NUL byte in a text parameter must be refused")
	}
	if _, _, err := encodeStatement(postgres, "SELECT $1", []driver.NamedValue{{Name: "x", Ordinal: 1, Value: "a"}}); err == nil {
		t.Error("named arguments must be refused")
	}
	if _, _, err := encodeStatement(mysql, "SELECT ?", []driver.NamedValue{{Ordinal: 1, Value: math.NaN()}}); err == nil {
		t.Error("NaN for MySQL must be refused")
	}
}

func TestDecodeByColumnType(t *testing.T) {
	cases := []struct {
		d    dialect
		typ  uint32
		text string
		want any
	}{
		{postgres, oidInt4, "-42", int64(-42)},
		{postgres, oidInt8, "9223372036854775807", int64(math.MaxInt64)},
		{postgres, oidFloat8, "1.25", 1.25},
		{postgres, oidBool, "t", true},
		{postgres, oidBool, "f", false},
		{postgres, 25, "text", "text"},
		{postgres, oidBytea, `\x00ff`, []byte{0, 0xff}},
		{postgres, oidTimestamptz, "2024-02-03 04:05:06.5+05:30", time.Date(2024, 2, 2, 22, 35, 6, 500000000, time.UTC)},
		{postgres, oidTimestamptz, "2024-02-03 04:05:06+00", time.Date(2024, 2, 3, 4, 5, 6, 0, time.UTC)},
		{postgres, oidTimestamp, "2024-02-03 04:05:06.123456", time.Date(2024, 2, 3, 4, 5, 6, 123456000, time.UTC)},
		{postgres, oidDate, "2024-02-03", time.Date(2024, 2, 3, 0, 0, 0, 0, time.UTC)},
		{postgres, oidTimestamptz, "infinity", []byte("infinity")},
		{mysql, myLongLong, "18446744073709551615", "18446744073709551615"},
		{mysql, myTiny, "1", int64(1)},
		{mysql, myDatetime, "2024-02-03 04:05:06", time.Date(2024, 2, 3, 4, 5, 6, 0, time.UTC)},
		{mysql, myDatetime, "0000-00-00 00:00:00", time.Time{}},
		{mysql, myBlob, "blob", []byte("blob")},
		{mysql, 253, "varchar", "varchar"},
	}
	for _, c := range cases {
		got := decode(kindOf(c.d, c.typ, true), []byte(c.text))
		switch w := c.want.(type) {
		case time.Time:
			g, ok := got.(time.Time)
			if !ok || !g.Equal(w) {
				t.Errorf("%d %q: got %#v, want %v", c.typ, c.text, got, w)
			}
		case []byte:
			g, ok := got.([]byte)
			if !ok || string(g) != string(w) {
				t.Errorf("%d %q: got %#v, want %v", c.typ, c.text, got, w)
			}
		default:
			if got != c.want {
				t.Errorf("%d %q: got %#v, want %#v", c.typ, c.text, got, c.want)
			}
		}
	}
	if v, ok := decode(kindOf(postgres, 0, false), []byte("12")).([]byte); !ok || string(v) != "12" {
		t.Error("unknown types stay []byte")
	}
}
