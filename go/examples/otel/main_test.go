package main

import (
	"context"
	"os"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestEventsBecomeSpans(t *testing.T) {
	url := os.Getenv("DIALPOOL_TEST_PG_URL")
	if url == "" {
		if os.Getenv("DIALPOOL_REQUIRE_FAULTS") == "1" {
			t.Fatal("DIALPOOL_TEST_PG_URL is not set")
		}
		t.Skip("SKIPPED: DIALPOOL_TEST_PG_URL is not set: run under the test runner")
	}
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	if err := Run(url+"?sslmode=disable", tp); err != nil {
		t.Fatal(err)
	}
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, s := range spans.Ended() {
		seen[s.Name()]++
		if s.Name() == "dialpool.acquire" && s.Status().Description == "" {
			t.Errorf("the acquire timeout span has no error status")
		}
		if s.Name() == "dialpool.connect" && !s.EndTime().After(s.StartTime()) {
			t.Errorf("the connect span has no length")
		}
	}
	if seen["dialpool.connect"] != 1 || seen["dialpool.acquire"] != 1 || seen["dialpool.close"] != 1 {
		t.Errorf("spans: %v", seen)
	}
}
