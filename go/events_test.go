package dialpool_test

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dialpool "github.com/dialpool/dialpool/go"
)

// metricSamples reads Prometheus text into "name{labels}" → value, and the
// families' types.
func metricSamples(t *testing.T, text string) (map[string]float64, map[string]string) {
	t.Helper()
	samples := map[string]float64{}
	types := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			f := strings.Fields(rest)
			if len(f) != 2 {
				t.Fatalf("bad TYPE line %q", line)
			}
			if _, dup := types[f[0]]; dup {
				t.Fatalf("family %s twice", f[0])
			}
			types[f[0]] = f[1]
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad sample line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad value in %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples, types
}

func TestMetricsTextAfterAKnownWorkload(t *testing.T) {
	db, err := dialpool.OpenDB(pgURL(t, "max_open=1&acquire_timeout=200ms&pool_name=go-metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	const n = 5
	for i := 0; i < n; i++ {
		var v int
		if err := db.QueryRowContext(ctx, "SELECT $1::int", i).Scan(&v); err != nil || v != i {
			t.Fatalf("query %d: %v %d", i, err, v)
		}
	}
	held, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.ExecContext(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "SELECT 1"); !errors.Is(err, dialpool.ErrAcquireTimeout) {
		t.Fatalf("want ErrAcquireTimeout, got %v", err)
	}
	held.Close()
	slow, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = db.ExecContext(slow, "SELECT pg_sleep(5)")
	cancel()
	if !errors.Is(err, dialpool.ErrQueryTimeout) {
		t.Fatalf("want ErrQueryTimeout, got %v", err)
	}

	text, err := dialpool.MetricsText(db)
	if err != nil {
		t.Fatal(err)
	}
	samples, types := metricSamples(t, text)
	for name, want := range map[string]string{
		"db_client_connection_count":               "gauge",
		"db_client_connection_max":                 "gauge",
		"db_client_connection_pending_requests":    "gauge",
		"db_client_connection_timeouts_total":      "counter",
		"db_client_connection_wait_time_seconds":   "histogram",
		"db_client_connection_use_time_seconds":    "histogram",
		"db_client_connection_create_time_seconds": "histogram",
		"db_client_operation_duration_seconds":     "histogram",
		"dialpool_dial_duration_seconds":           "histogram",
		"dialpool_query_cancel_duration_seconds":   "histogram",
	} {
		if types[name] != want {
			t.Errorf("%s: type %q, want %q", name, types[name], want)
		}
	}
	p := `db_client_connection_pool_name="go-metrics"`
	for sample, want := range map[string]float64{
		`db_client_connection_count{` + p + `,db_client_connection_state="used"}`:                                                   0,
		`db_client_connection_max{` + p + `}`:                                                                                       1,
		`db_client_connection_timeouts_total{` + p + `}`:                                                                            1,
		`db_client_connection_wait_time_seconds_count{` + p + `}`:                                                                   n + 2,
		`db_client_connection_use_time_seconds_count{` + p + `}`:                                                                    n + 2,
		`db_client_operation_duration_seconds_count{` + p + `,db_system_name="postgresql"}`:                                         n + 1,
		`db_client_operation_duration_seconds_count{` + p + `,db_system_name="postgresql",error_type="DP_QUERY_TIMEOUT"}`:           1,
		`dialpool_query_cancel_duration_seconds_count{` + p + `}`:                                                                   1,
		`db_client_connection_wait_time_seconds_bucket{` + p + `,le="+Inf"}`:                                                        n + 2,
		`dialpool_connection_closed_total{` + p + `,dialpool_close_reason="broken"}`:                                                0,
		`db_client_connection_create_time_seconds_bucket{` + p + `,le="+Inf"}`:                                                      samples[`db_client_connection_create_time_seconds_count{`+p+`}`],
		`dialpool_dial_duration_seconds_count{` + p + `,dialpool_dial_phase="tcp"}`:                                                 samples[`db_client_connection_create_time_seconds_count{`+p+`}`],
		`db_client_operation_duration_seconds_bucket{` + p + `,db_system_name="postgresql",error_type="DP_QUERY_TIMEOUT",le="0.1"}`: 0,
	} {
		got, ok := samples[sample]
		if !ok {
			t.Errorf("missing %s", sample)
		} else if got != want {
			t.Errorf("%s = %v, want %v", sample, got, want)
		}
	}
	if samples[`db_client_connection_create_time_seconds_count{`+p+`}`] < 1 {
		t.Errorf("no connect counted:\n%s", text)
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", text)
	}
}

// eventLog collects events from the callback, which runs on other threads.
type eventLog struct {
	mu     sync.Mutex
	events []dialpool.Event
	closed bool
	late   int
}

func (l *eventLog) add(e dialpool.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		l.late++
	}
	l.events = append(l.events, e)
}

func (l *eventLog) of(kind dialpool.EventKind) []dialpool.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []dialpool.Event
	for _, e := range l.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func TestEventsReachTheGoFunc(t *testing.T) {
	var log eventLog
	db, err := dialpool.OpenDB(pgURL(t, "max_open=1&acquire_timeout=200ms"), dialpool.WithEvents(log.add))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	held, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.ExecContext(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "SELECT 1"); !errors.Is(err, dialpool.ErrAcquireTimeout) {
		t.Fatalf("want ErrAcquireTimeout, got %v", err)
	}
	held.Close()
	db.Close()
	log.mu.Lock()
	log.closed = true
	log.mu.Unlock()

	if got := log.of(dialpool.EventConnectStart); len(got) != 1 {
		t.Errorf("connect_start events: %d", len(got))
	}
	connects := log.of(dialpool.EventConnect)
	if len(connects) != 1 || connects[0].Err != nil || connects[0].Elapsed <= 0 || connects[0].TCP < 0 || connects[0].TCP > connects[0].Elapsed {
		t.Errorf("connect events: %+v", connects)
	} else if connects[0].TLS != -1 {
		t.Errorf("TLS phase with sslmode=disable: %v", connects[0].TLS)
	}
	if a, r := len(log.of(dialpool.EventAcquire)), len(log.of(dialpool.EventRelease)); a != 2 || r != 2 {
		t.Errorf("acquires %d, releases %d", a, r)
	}
	timeouts := log.of(dialpool.EventAcquireTimeout)
	if len(timeouts) != 1 || !errors.Is(timeouts[0].Err, dialpool.ErrAcquireTimeout) || timeouts[0].Err.Limit != "acquire_timeout" {
		t.Errorf("acquire_timeout events: %+v", timeouts)
	} else if timeouts[0].Elapsed < 150*time.Millisecond || timeouts[0].Elapsed > 5*time.Second {
		t.Errorf("acquire timeout after %v", timeouts[0].Elapsed)
	}
	closes := log.of(dialpool.EventClose)
	if len(closes) != 1 || closes[0].Reason != "pool_closed" || closes[0].Kind.String() != "close" {
		t.Errorf("close events: %+v", closes)
	}
	// Nothing once Close has returned.
	time.Sleep(50 * time.Millisecond)
	log.mu.Lock()
	late := log.late
	log.mu.Unlock()
	if late != 0 {
		t.Errorf("%d events after Close", late)
	}
}

func TestAFailedConnectEventCarriesItsError(t *testing.T) {
	var log eventLog
	url := strings.Replace(pgURL(t, "acquire_timeout=300ms"), pgHostPort(t), "127.0.0.1:1", 1)
	db, err := dialpool.OpenDB(url, dialpool.WithEvents(log.add))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("SELECT 1"); !errors.Is(err, dialpool.ErrAcquireTimeout) {
		t.Fatalf("want ErrAcquireTimeout, got %v", err)
	}
	db.Close()
	connects := log.of(dialpool.EventConnect)
	if len(connects) == 0 {
		t.Fatal("no connect event")
	}
	for _, e := range connects {
		if !errors.Is(e.Err, dialpool.ErrConnectionRefused) || e.Err.Layer != dialpool.LayerDial {
			t.Errorf("connect event error: %v", e.Err)
		}
	}
}

func TestAPanickingEventFuncDoesNotReachThePool(t *testing.T) {
	var calls sync.Map
	db, err := dialpool.OpenDB(pgURL(t, ""), dialpool.WithEvents(func(e dialpool.Event) {
		calls.Store(e.Kind, true)
		panic("from the event func")
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < 3; i++ {
		var v int
		if err := db.QueryRow("SELECT 7").Scan(&v); err != nil || v != 7 {
			t.Fatalf("query: %v %d", err, v)
		}
	}
	if _, ok := calls.Load(dialpool.EventRelease); !ok {
		t.Error("the func was not called")
	}
}

func TestMetricsTextNeedsTheDialpoolDriver(t *testing.T) {
	c, err := dialpool.NewConnector(pgURL(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	if _, err := dialpool.MetricsText(db); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := c.MetricsText(); !errors.Is(err, dialpool.ErrPoolClosed) {
		t.Errorf("after close: %v", err)
	}
}
