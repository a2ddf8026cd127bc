package dialpool

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Diagnostic benchmarks: where the time of one SELECT 1 goes below
// database/sql, with context switches per operation (see
// bench/go/RESULTS.md). They need DIALPOOL_TEST_PG_URL:
//   go test -run '^$' -bench Diag .

func diagURL(b *testing.B) string {
	return serverURL(b, "DIALPOOL_TEST_PG_URL") + "?sslmode=disable&max_open=16"
}

func contextSwitches() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Nvcsw + ru.Nivcsw
}

func diagRun(b *testing.B, op func() error) {
	b.Helper()
	cs := contextSwitches()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := op(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(contextSwitches()-cs)/float64(b.N), "cs/op")
}

// The statement below the driver: acquire + query in C, then release, with
// a context.Background (no dp_ctx), a deadline (a dp_ctx and an
// AfterFunc), and a deadline plus one goroutine started and ended around
// the call, as database/sql does for every Rows of a cancellable context.
func BenchmarkDiagStatement(b *testing.B) {
	p, err := openPool(diagURL(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.close()
	text := []byte("SELECT 1\x00")
	h := &connHandle{}
	defer h.release()
	once := func(ctx context.Context) error {
		_, _, err := p.query(ctx, h, text, nil)
		h.release()
		return err
	}
	b.Run("background", func(b *testing.B) {
		diagRun(b, func() error { return once(context.Background()) })
	})
	b.Run("deadline", func(b *testing.B) {
		diagRun(b, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return once(ctx)
		})
	})
	b.Run("deadline+goroutine", func(b *testing.B) {
		diagRun(b, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := once(ctx)
			done := make(chan struct{})
			go func() { <-done }()
			close(done)
			return err
		})
	})
	b.Run("background-16-goroutines", func(b *testing.B) {
		// The same from 16 goroutines at once (compare cfloor's 16 threads).
		var next atomic.Int64
		var wg sync.WaitGroup
		cs := contextSwitches()
		b.ResetTimer()
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				own := &connHandle{}
				for next.Add(1) <= int64(b.N) {
					if _, _, err := p.query(context.Background(), own, text, nil); err != nil {
						b.Error(err)
						return
					}
					own.release()
				}
			}()
		}
		wg.Wait()
		b.StopTimer()
		b.ReportMetric(float64(contextSwitches()-cs)/float64(b.N), "cs/op")
	})
	b.Run("pinned", func(b *testing.B) { // no acquire, no release
		diagRun(b, func() error {
			_, _, err := p.query(context.Background(), h, text, nil)
			return err
		})
	})
}

// A non-blocking cgo call (dp_pool_stats): the cost of one crossing.
func BenchmarkDiagCgoCrossing(b *testing.B) {
	p, err := openPool(diagURL(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.close()
	diagRun(b, func() error {
		_, err := p.stats()
		return err
	})
}

// One dp_ctx with a deadline and a context.AfterFunc, made and freed.
func BenchmarkDiagCallCtx(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	diagRun(b, func() error {
		var c callCtx
		if err := c.begin(ctx); err != nil {
			return err
		}
		c.end()
		return nil
	})
}
