// Command otel traces a dialpool pool's events with the OpenTelemetry SDK:
// each connect becomes a span carrying its dial phases (and its error as the
// span status), and so does each acquire timeout, leak, connection close and
// server-limit adjustment; the stdout exporter prints them. It runs a few
// statements and provokes one acquire timeout against the URL it is given:
//
//	go run . 'postgres://user:pw@127.0.0.1:5432/db?sslmode=disable'
//
// Build the static library first (cargo build --release -p dialpool-ffi).
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	dialpool "github.com/dialpool/dialpool/go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TraceEvents turns a pool's events into spans. The events come on
// dialpool's threads and must not block, so spans go to a batching span
// processor, never straight to an exporter. Acquire and release, which come
// with every statement, are left out: their times are in the pool's
// metrics (dialpool.MetricsText).
func TraceEvents(tracer trace.Tracer, poolName string) func(dialpool.Event) {
	return func(e dialpool.Event) {
		var name string
		attrs := []attribute.KeyValue{attribute.String("db.client.connection.pool.name", poolName)}
		switch e.Kind {
		case dialpool.EventConnect:
			name = "dialpool.connect"
			for _, phase := range []struct {
				key string
				d   time.Duration
			}{{"dialpool.dial.dns_ms", e.DNS}, {"dialpool.dial.tcp_ms", e.TCP}, {"dialpool.dial.tls_ms", e.TLS}} {
				if phase.d >= 0 {
					attrs = append(attrs, attribute.Float64(phase.key, float64(phase.d.Microseconds())/1000))
				}
			}
		case dialpool.EventAcquireTimeout:
			name = "dialpool.acquire"
		case dialpool.EventClose:
			name = "dialpool.close"
			attrs = append(attrs, attribute.String("dialpool.close.reason", e.Reason))
		case dialpool.EventLeak:
			name = "dialpool.leak"
			attrs = append(attrs, attribute.String("dialpool.label", e.Label))
		case dialpool.EventAdjusted:
			name = "dialpool.adjusted"
			attrs = append(attrs,
				attribute.String("dialpool.option", e.Option),
				attribute.String("dialpool.value", e.Value.String()),
				attribute.String("dialpool.why", e.Why))
		default:
			return
		}
		end := time.Now()
		start := end
		if e.Elapsed > 0 && e.Kind != dialpool.EventClose && e.Kind != dialpool.EventLeak {
			start = end.Add(-e.Elapsed) // the span covers the connect or the wait
		}
		_, span := tracer.Start(context.Background(), name,
			trace.WithTimestamp(start),
			trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attrs...))
		if e.Err != nil {
			span.SetAttributes(attribute.String("error.type", e.Err.Code.String()))
			span.RecordError(e.Err)
			span.SetStatus(codes.Error, e.Err.Error())
		}
		span.End(trace.WithTimestamp(end))
	}
}

// Run opens a pool on url with its events traced by tp, runs three
// statements and one acquire that times out, and closes the pool.
func Run(url string, tp *sdktrace.TracerProvider) error {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	url += sep + "max_open=1&acquire_timeout=200ms&pool_name=otel-example"
	db, err := dialpool.OpenDB(url, dialpool.WithEvents(TraceEvents(tp.Tracer("dialpool-example"), "otel-example")))
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := db.ExecContext(ctx, "SELECT 1"); err != nil {
			return err
		}
	}
	return provokeAcquireTimeout(ctx, db)
}

// provokeAcquireTimeout holds the only connection while another statement
// waits for one.
func provokeAcquireTimeout(ctx context.Context, db *sql.DB) error {
	held, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer held.Close()
	if _, err := held.ExecContext(ctx, "SELECT 1"); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, "SELECT 1"); !errors.Is(err, dialpool.ErrAcquireTimeout) {
		return fmt.Errorf("expected an acquire timeout, got %v", err)
	}
	return nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: otel URL")
		os.Exit(2)
	}
	exporter, err := stdouttrace.New(stdouttrace.WithPrettyPrint())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter))
	runErr := Run(os.Args[1], tp)
	// Shutdown flushes the batch to the exporter.
	if err := tp.Shutdown(context.Background()); err != nil && runErr == nil {
		runErr = err
	}
	if runErr != nil {
		fmt.Fprintln(os.Stderr, runErr)
		os.Exit(1)
	}
}
