package dialpool

// Every call into the C library goes through this file. The C helpers in the
// preamble only bundle several C ABI calls into one cgo crossing (acquire +
// query, copying a whole result into Go memory, reading every field of an
// error); no database logic lives here.

/*
#cgo CFLAGS: -I${SRCDIR}/../include
#cgo LDFLAGS: ${SRCDIR}/../target/release/libdialpool.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include "dialpool.h"

// The pool's event callback: hands the event to Go (events.go) with the
// cgo.Handle of the Go func, carried in user_data.
extern void dialpoolGoEvent(dp_event *event, uintptr_t handle);
static void dpg_on_event(const dp_event *event, void *user_data) {
	dialpoolGoEvent((dp_event *)event, (uintptr_t)user_data);
}

static dp_code dpg_pool_open_events(const char *url, uintptr_t handle, dp_pool **pool, dp_error **err) {
	return dp_pool_open_with_events(url, dpg_on_event, (void *)handle, pool, err);
}

// Every field of an error, read in one crossing.
typedef struct {
	int code;
	int layer;
	int timeout;
	int retryable;
	int64_t elapsed_us;
	const char *message;
	const char *limit;
	const char *sqlstate;
	const dp_error *source;
} dpg_errinfo;

static void dpg_error_info(const dp_error *e, dpg_errinfo *out) {
	out->code = (int)dp_error_code(e);
	out->layer = (int)dp_error_layer(e);
	out->timeout = dp_error_is_timeout(e);
	out->retryable = dp_error_is_retryable(e);
	out->elapsed_us = dp_error_elapsed_us(e);
	out->message = dp_error_message(e);
	out->limit = dp_error_limit(e);
	out->sqlstate = dp_error_sqlstate(e);
	out->source = dp_error_source(e);
}

// The size of a result, so that Go can allocate once before the copy.
typedef struct {
	size_t rows;
	size_t cols;
	size_t bytes;      // column names plus values
	uint64_t affected;
	int has_last_id;
	uint64_t last_id;
} dpg_shape;

static void dpg_fill_shape(const dp_result *r, dpg_shape *s) {
	size_t rows = dp_result_row_count(r), cols = dp_result_column_count(r), bytes = 0;
	for (size_t c = 0; c < cols; c++) {
		const char *name = dp_result_column_name(r, c);
		bytes += name ? strlen(name) : 0;
	}
	for (size_t i = 0; i < rows; i++)
		for (size_t c = 0; c < cols; c++)
			bytes += dp_result_value_len(r, i, c);
	s->rows = rows;
	s->cols = cols;
	s->bytes = bytes;
	s->affected = dp_result_affected_rows(r);
	s->has_last_id = dp_result_last_insert_id(r, &s->last_id);
}

// A statement's state between crossings. It lives in Go memory (in the
// connection handle) and holds only C pointers.
typedef struct {
	dp_conn *conn;      // the held connection; dpg_begin acquires into it when NULL
	dp_op *op;          // a statement in progress in poll mode
	dp_wait wait;       // what it waits for (dpg_begin, dpg_step returned 1)
	dp_result *res;     // a finished result not copied (too large for the scratch)
	dpg_shape shape;
	dp_code code;
	dp_error *err;
	int acquire_failed; // the error came from the acquire
	int copied;         // the result is in the scratch and freed
	uint64_t last_id;   // the connection held last (dp_conn_id), preferred at the next acquire
} dpg_stmt;

// Checks out a connection into s, preferring the one it held last: with
// the same connection for each statement of a handle, each statement
// meets the same server process (see dp_pool_acquire_prefer).
static dp_code dpg_acquire(const dp_pool *pool, const dp_ctx *ctx, dpg_stmt *s) {
	dp_code code = dp_pool_acquire_prefer(pool, ctx, s->last_id, &s->conn, &s->err);
	if (code != DP_OK) {
		s->conn = NULL;
		return code;
	}
	s->last_id = dp_conn_id(s->conn);
	return DP_OK;
}

// Copies a result into Go memory and frees it: buf gets the column names
// and then every value back to back; lens gets each name's length, then
// each column's type id (0 when the library cannot say), then each value's
// length row by row (-1 for SQL NULL).
static void dpg_copy_free(dp_result *r, size_t rows, size_t cols, char *buf, int64_t *lens) {
	size_t off = 0;
	for (size_t c = 0; c < cols; c++) {
		const char *name = dp_result_column_name(r, c);
		size_t n = name ? strlen(name) : 0;
		if (n) memcpy(buf + off, name, n);
		off += n;
		lens[c] = (int64_t)n;
		lens[cols + c] = (int64_t)dp_result_column_type(r, c);
	}
	int64_t *cell = lens + 2 * cols;
	for (size_t i = 0; i < rows; i++) {
		for (size_t c = 0; c < cols; c++) {
			const char *v = dp_result_value(r, i, c);
			if (v == NULL) {
				*cell++ = -1;
				continue;
			}
			size_t n = dp_result_value_len(r, i, c);
			if (n) memcpy(buf + off, v, n);
			off += n;
			*cell++ = (int64_t)n;
		}
	}
	dp_result_free(r);
}

// A statement has finished: reads its shape and, when it fits the
// caller's scratch (buf, lens), copies it there in the same crossing.
static void dpg_done(dpg_stmt *s, char *buf, size_t cap, int64_t *lens, size_t lcap) {
	s->copied = 0;
	if (s->code != DP_OK) return;
	dpg_fill_shape(s->res, &s->shape);
	size_t rows = s->shape.rows, cols = s->shape.cols;
	if (s->shape.bytes <= cap && cols <= lcap / 2 && (cols == 0 || rows <= (lcap - 2 * cols) / cols)) {
		dpg_copy_free(s->res, rows, cols, buf, lens);
		s->res = NULL;
		s->copied = 1;
	}
}

// dpg_begin and dpg_step return 1 when the statement waits (s->wait says
// for what) and 0 when it has finished (s->code, and a result or s->err);
// dpg_finish ends it, blocking if need be.
static int dpg_finish(dpg_stmt *s, char *buf, size_t cap, int64_t *lens, size_t lcap) {
	s->code = dp_op_finish(s->op, &s->res, &s->err);
	s->op = NULL;
	dpg_done(s, buf, cap, lens, lcap);
	return 0;
}

static int dpg_step(dpg_stmt *s, char *buf, size_t cap, int64_t *lens, size_t lcap) {
	if (dp_op_poll(s->op, &s->wait)) return 1;
	return dpg_finish(s, buf, cap, lens, lcap);
}

// Calls dp_conn_query_start (op not NULL) or, running the statement to its
// end with the waits in C, dp_conn_query. text holds the SQL and the
// parameters, each NUL-terminated; offs[i] is parameter i's offset in text,
// or -1 for SQL NULL.
static dp_code dpg_call(dp_conn *conn, const dp_ctx *ctx, const char *text, const int64_t *offs, size_t nparams,
                        dp_op **op, dp_result **result, dp_error **err) {
	const char *local[16];
	const char **params = local;
	if (nparams > 16) {
		params = malloc(nparams * sizeof *params);
		if (params == NULL) return DP_INTERNAL;
	}
	for (size_t i = 0; i < nparams; i++) params[i] = offs[i] < 0 ? NULL : text + offs[i];
	dp_code code = op ? dp_conn_query_start(conn, ctx, text, nparams, params, op, err)
	                  : dp_conn_query(conn, ctx, text, nparams, params, result, err);
	if (params != local) free(params);
	return code;
}

// Poll mode, in one crossing: acquires a connection when none is held,
// starts the statement and takes it as far as it goes without waiting
// (the core reads once right after the send, so most statements finish
// here, result copy included).
static int dpg_begin(const dp_pool *pool, const dp_ctx *ctx, const char *text, const int64_t *offs, size_t nparams,
                     dpg_stmt *s, char *buf, size_t cap, int64_t *lens, size_t lcap) {
	s->acquire_failed = 0;
	s->copied = 0;
	s->op = NULL;
	s->res = NULL;
	s->err = NULL;
	if (s->conn == NULL) {
		s->code = dpg_acquire(pool, ctx, s);
		if (s->code != DP_OK) {
			s->acquire_failed = 1;
			return 0;
		}
	}
	s->code = dpg_call(s->conn, ctx, text, offs, nparams, &s->op, NULL, &s->err);
	if (s->code != DP_OK) return 0;
	return dpg_step(s, buf, cap, lens, lcap);
}

// Runs the statement with its waits in C (the calling thread blocks): no
// copy of the SQL and no dp_op, as the statement never leaves this call.
static void dpg_run(const dp_ctx *ctx, const char *text, const int64_t *offs, size_t nparams,
                    dpg_stmt *s, char *buf, size_t cap, int64_t *lens, size_t lcap) {
	s->res = NULL;
	s->err = NULL;
	s->code = dpg_call(s->conn, ctx, text, offs, nparams, NULL, &s->res, &s->err);
	dpg_done(s, buf, cap, lens, lcap);
}
// A dial the goroutine waits for in Go's netpoller (dialFD).
typedef struct {
	dp_op *op;
	dp_wait wait;
	dp_code code;
	dp_error *err;
	int fd;
} dpg_dial;

static void dpg_dial_end(dpg_dial *d) {
	d->code = dp_dial_finish(d->op, &d->fd, &d->err);
	d->op = NULL;
}

// 1: the dial waits (d->wait); 0: it has ended (d->code, d->fd or d->err).
static int dpg_dial_step(dpg_dial *d) {
	if (dp_op_poll(d->op, &d->wait)) return 1;
	dpg_dial_end(d);
	return 0;
}

// Starts the dial and takes it as far as it goes without waiting: the
// first step sends the SYN, the second looks whether the handshake is
// done (on loopback and a LAN it usually is by then).
static int dpg_dial_begin(const char *url, const dp_ctx *ctx, dpg_dial *d) {
	d->fd = -1;
	d->err = NULL;
	d->op = NULL;
	d->code = dp_dial_start(url, ctx, &d->op, &d->err);
	if (d->code != DP_OK) return 0;
	return dpg_dial_step(d) && dpg_dial_step(d);
}
*/
import "C"

import (
	"context"
	"errors"
	"os"
	"runtime"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Version is the version of the linked dialpool library, e.g. "0.1.0".
func Version() string { return C.GoString(C.dp_version()) }

// ---- errors ----

// takeError turns a C error into an *Error and frees it. code is what the
// call returned (used when the library gave no error object).
func takeError(code Code, e *C.dp_error) *Error {
	if e == nil {
		return &Error{Code: code, Message: "dialpool: " + code.String(), Elapsed: -1}
	}
	err := readError(e, 0)
	C.dp_error_free(e)
	return err
}

func readError(e *C.dp_error, depth int) *Error {
	var info C.dpg_errinfo
	C.dpg_error_info(e, &info)
	err := &Error{
		Code:      Code(info.code),
		Layer:     Layer(info.layer),
		Message:   C.GoString(info.message),
		Elapsed:   -1,
		Retryable: info.retryable != 0,
		timeout:   info.timeout != 0,
	}
	if info.elapsed_us >= 0 {
		err.Elapsed = time.Duration(info.elapsed_us) * time.Microsecond
	}
	if info.limit != nil {
		err.Limit = C.GoString(info.limit)
	}
	if info.sqlstate != nil {
		err.SQLState = C.GoString(info.sqlstate)
	}
	if info.source != nil && depth < 8 {
		err.Source = readError(info.source, depth+1)
	}
	return err
}

// ---- contexts ----

// callCtx carries a Go context into one C call: its deadline becomes the
// dp_ctx deadline and its cancellation reaches dp_ctx_cancel from another
// goroutine while the call blocks. A context that can neither expire nor be
// cancelled costs nothing (no dp_ctx at all).
type callCtx struct {
	p     *C.dp_ctx
	stop  func() bool
	fired chan struct{}
	// Set when ctx can be cancelled: a cancel must also end a wait in the
	// netpoller, which dp_ctx_cancel cannot reach.
	cancel *cancelState
}

type cancelState struct {
	cancelled atomic.Bool
	waiting   atomic.Pointer[pollFile] // the socket a statement waits on
}

// waitOn records that the statement is about to wait on pf; false when
// ctx was cancelled meanwhile (then the statement ends in C).
func (c *callCtx) waitOn(pf *pollFile) bool {
	if c.cancel == nil {
		return true
	}
	c.cancel.waiting.Store(pf)
	return !c.cancel.cancelled.Load()
}

// cancelled tells whether ctx was cancelled (not expired).
func (c *callCtx) cancelled() bool { return c.cancel != nil && c.cancel.cancelled.Load() }

// begin prepares the dp_ctx. It fails without touching C when ctx is
// already done or its deadline has passed (with ctx.Err() or
// context.DeadlineExceeded).
func (c *callCtx) begin(ctx context.Context) error {
	done := ctx.Done()
	deadline, hasDeadline := ctx.Deadline()
	if done == nil && !hasDeadline {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ms := int64(-1)
	if hasDeadline {
		left := time.Until(deadline)
		if left <= 0 {
			return context.DeadlineExceeded
		}
		// Rounded up: never 0, and never earlier than the Go deadline.
		ms = int64((left + time.Millisecond - 1) / time.Millisecond)
	}
	p := C.dp_ctx_new(C.int64_t(ms))
	c.p = p
	if done != nil {
		fired := make(chan struct{})
		c.fired = fired
		cs := &cancelState{}
		c.cancel = cs
		c.stop = context.AfterFunc(ctx, func() {
			defer close(fired)
			// An expired deadline is the core's to report (it knows which
			// layer and limit fired); only a real cancel cancels.
			if hasDeadline && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return
			}
			C.dp_ctx_cancel(p)
			// Stored before the load below, as waitOn stores before its
			// load: one of the two sees the other.
			cs.cancelled.Store(true)
			if pf := cs.waiting.Load(); pf != nil {
				pf.interrupt()
			}
		})
	}
	return nil
}

// end frees the dp_ctx once no goroutine can cancel it any more.
func (c *callCtx) end() {
	if c.p == nil {
		return
	}
	if c.stop != nil && !c.stop() {
		<-c.fired // the cancel is running: wait before freeing
	}
	if cs := c.cancel; cs != nil && cs.cancelled.Load() {
		if pf := cs.waiting.Load(); pf != nil {
			// interrupt left a past deadline on the socket; the next
			// statement on it must set its own.
			pf.deadline = interruptAt
		}
	}
	C.dp_ctx_free(c.p)
	c.p = nil
}

// ---- pools ----

// cpool owns a dp_pool handle. dp_pool_close frees the handle, so it must
// not run while another goroutine is inside a call that uses it: calls
// that use the handle hold mu for reading, close takes it for writing.
type cpool struct {
	mu sync.RWMutex
	p  *C.dp_pool
	// Statements running now, on any connection of the pool, and those
	// so far that ran in poll mode, waiting in the netpoller if they
	// waited (beside it: the same cache line, already touched per
	// statement; a test reads it).
	running   atomic.Int32
	netpolled atomic.Int64
	// When a statement alone in the pool last went through the scheduler
	// (passScheduler), on processStart's clock.
	lastYield atomic.Int64
	// events holds the event func for the C callback (0: none); deleted
	// once dp_pool_close has returned, after which the library no longer
	// calls back.
	events cgo.Handle
}

func openPool(url string, onEvent func(Event)) (*cpool, error) {
	curl := C.CString(url)
	defer C.free(unsafe.Pointer(curl))
	var p *C.dp_pool
	var e *C.dp_error
	if onEvent == nil {
		if code := C.dp_pool_open(curl, &p, &e); code != C.DP_OK {
			return nil, takeError(Code(code), e)
		}
		return &cpool{p: p}, nil
	}
	h := cgo.NewHandle(onEvent)
	if code := C.dpg_pool_open_events(curl, C.uintptr_t(h), &p, &e); code != C.DP_OK {
		h.Delete()
		return nil, takeError(Code(code), e)
	}
	return &cpool{p: p, events: h}, nil
}

// close closes the pool: idle connections are closed, connections still
// held are closed when released. It waits for calls that are acquiring.
func (p *cpool) close() {
	p.mu.Lock()
	h := p.p
	p.p = nil
	events := p.events
	p.events = 0
	p.mu.Unlock()
	if h != nil {
		C.dp_pool_close(h)
		forgetPool(p)
	}
	if events != 0 {
		events.Delete()
	}
}

func (p *cpool) metricsText() (string, error) {
	p.mu.RLock()
	if p.p == nil {
		p.mu.RUnlock()
		return "", errPoolClosedLocally()
	}
	var text *C.char
	var e *C.dp_error
	code := C.dp_pool_metrics_text(p.p, &text, &e)
	p.mu.RUnlock()
	if code != C.DP_OK {
		return "", takeError(Code(code), e)
	}
	defer C.dp_string_free(text)
	return C.GoString(text), nil
}

func (p *cpool) stats() (PoolStats, error) {
	var s C.dp_stats
	p.mu.RLock()
	if p.p == nil {
		p.mu.RUnlock()
		return PoolStats{}, errPoolClosedLocally()
	}
	var e *C.dp_error
	code := C.dp_pool_stats(p.p, &s, &e)
	p.mu.RUnlock()
	if code != C.DP_OK {
		return PoolStats{}, takeError(Code(code), e)
	}
	us := func(v C.uint64_t) time.Duration { return time.Duration(v) * time.Microsecond }
	return PoolStats{
		MaxOpen:           int(s.max_open),
		Open:              int(s.open),
		InUse:             int(s.in_use),
		Idle:              int(s.idle),
		Waiting:           int(s.waiting),
		Connecting:        int(s.connecting),
		WaitCount:         int64(s.wait_count),
		WaitDuration:      us(s.wait_duration_us),
		AcquireCount:      int64(s.acquire_count),
		AcquireTimeouts:   int64(s.acquire_timeouts),
		AcquireCancelled:  int64(s.acquire_cancelled),
		Connects:          int64(s.connects),
		ConnectFailures:   int64(s.connect_failures),
		ClosedMaxLifetime: int64(s.closed_max_lifetime),
		ClosedMaxIdleTime: int64(s.closed_max_idle_time),
		ClosedMaxIdle:     int64(s.closed_max_idle),
		ClosedDead:        int64(s.closed_dead),
		ClosedBroken:      int64(s.closed_broken),
		Leaks:             int64(s.leaks),
		MaxIdleTime:       us(s.max_idle_time_us),
	}, nil
}

func errPoolClosedLocally() *Error {
	return &Error{Code: CodePoolClosed, Layer: LayerPool, Message: "pool: the pool is closed", Elapsed: -1}
}

// connHandle is one checked-out core connection (st.conn; nil when none is
// held), the state of its statement between crossings, and a scratch that
// a small result is copied into by the call that finishes the statement.
// One goroutine at a time uses it (database/sql's promise for a driver.Conn).
type connHandle struct {
	st      C.dpg_stmt
	scratch []byte
	lens    []int64
	// Reused by each statement instead of allocated: both would escape
	// (the netpoller's callback holds the statement).
	stmt statement
	cc   callCtx
	// The duplicate of the socket the last statement waited for.
	pf *pollFile
	// The last result's column names and types: a statement run again
	// gets the same strings and type list instead of new ones.
	names []string
	types []uint32
}

// Room for a small result: names and values, and 2 entries per column
// plus one per value.
const (
	scratchBytes = 512
	scratchLens  = 64
)

func (h *connHandle) held() bool { return h.st.conn != nil }

func (h *connHandle) release() {
	if h.st.conn != nil {
		C.dp_conn_release(h.st.conn)
		h.st.conn = nil
	}
}

// result is a statement's outcome copied into Go memory.
type result struct {
	names    []string
	types    []uint32 // each column's type id
	cells    []int64  // value lengths row by row, -1 for SQL NULL
	data     []byte   // the values back to back
	rows     int
	affected int64
	lastID   int64
	hasID    bool
}

// query runs one statement on h, acquiring a connection into h first when h
// holds none (the acquire and the statement share one dp_ctx, as in
// dp_pool_query). acquireErr tells whether the error came from the
// acquire. text holds the SQL and the parameters, each NUL-terminated, and
// offs the parameters' offsets (-1 for NULL).
func (p *cpool) query(ctx context.Context, h *connHandle, text []byte, offs []int64) (r *result, acquireErr bool, err error) {
	cc := &h.cc
	*cc = callCtx{}
	if err := cc.begin(ctx); err != nil {
		return nil, !h.held(), err
	}
	defer cc.end()
	if h.scratch == nil {
		h.scratch = make([]byte, scratchBytes)
		h.lens = make([]int64, scratchLens)
	}
	s := &h.stmt
	*s = statement{h: h, cc: cc, text: text, offs: offs}
	defer func() { *s = statement{} }() // keeps no reference to text
	// A statement alone in its pool waits in C: its goroutine's thread
	// blocks, but nobody needs that thread's P meanwhile, and a wait in C
	// costs less than a park in the netpoller. With company, a blocked
	// thread would cost a P handoff per statement, so it runs in poll
	// mode and any wait happens in Go's netpoller. A ctx that can be
	// cancelled is company too: database/sql runs a goroutine per Rows for
	// it, and its AfterFunc and timer need the runtime while the statement
	// runs (SELECT 1 with a 5 s deadline from one goroutine: 0.4-0.7x
	// pgx waiting in C, 0.8-1.2x in the netpoller).
	alone := p.running.Add(1) == 1 && cc.cancel == nil
	defer p.running.Add(-1)
	if alone {
		if !h.held() {
			if err := p.acquire(cc, h); err != nil {
				return nil, true, err
			}
		}
		s.inC()
		p.passScheduler()
	} else {
		// The pool handle is held for the first step only: the acquire
		// (which may wait for a connection, as before) and the send and
		// first read, which do not wait for the reply (see dp_op_poll);
		// closing the pool never waits for a running statement's reply.
		p.mu.RLock()
		if p.p == nil {
			p.mu.RUnlock()
			if !h.held() {
				return nil, true, errPoolClosedLocally()
			}
			s.inC()
		} else {
			p.netpolled.Add(1)
			waiting := s.begin(p.p)
			p.mu.RUnlock()
			if h.st.acquire_failed != 0 {
				return nil, true, h.takeError()
			}
			if waiting {
				s.wait(p)
			}
		}
	}
	if h.st.code != C.DP_OK {
		return nil, false, h.takeError()
	}
	return s.result(), false, nil
}

// yieldEvery is how often a goroutine that runs its statements in C goes
// through the scheduler: well under sysmon's 10 ms.
const yieldEvery = 2 * time.Millisecond

// processStart starts the monotonic clock of passScheduler.
var processStart = time.Now()

// passScheduler lets the goroutine of a statement alone in its pool through
// the scheduler every few milliseconds. Such a goroutine lives in cgo calls
// and never parks, so its P's schedule count never moves; after 10 ms sysmon
// takes it for a goroutine that hogs its P and, from then on, preempts it
// and takes the P away during every statement that waits in C, so that
// each return from C finds its P gone (measured: ~2,700 forced preemptions
// and 0.2 more context switches per statement over 20,000 statements from
// one goroutine; ~80 with this). Gosched here costs one trip through the
// scheduler per yieldEvery.
func (p *cpool) passScheduler() {
	now := int64(time.Since(processStart))
	if now-p.lastYield.Load() < int64(yieldEvery) {
		return
	}
	p.lastYield.Store(now)
	runtime.Gosched()
}

// takeError turns the failed statement's error into an *Error and frees it.
func (h *connHandle) takeError() *Error {
	err := takeError(Code(h.st.code), h.st.err)
	h.st.err = nil
	return err
}

// acquire checks a connection out into h (blocking in C).
func (p *cpool) acquire(cc *callCtx, h *connHandle) error {
	// The acquire alone holds the pool handle, so that closing the pool
	// waits for acquires but never for a running statement.
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.p == nil {
		return errPoolClosedLocally()
	}
	h.st.err = nil
	if code := C.dpg_acquire(p.p, cc.p, &h.st); code != C.DP_OK {
		err := takeError(Code(code), h.st.err)
		h.st.err = nil
		return err
	}
	return nil
}

// statement is one statement's trip through the C calls; its state
// between them is h.st.
type statement struct {
	h    *connHandle
	cc   *callCtx
	text []byte
	offs []int64
}

func (s *statement) offsPtr() *C.int64_t {
	if len(s.offs) == 0 {
		return nil
	}
	return (*C.int64_t)(unsafe.Pointer(&s.offs[0]))
}

func (s *statement) textPtr() *C.char { return (*C.char)(unsafe.Pointer(&s.text[0])) }

func (s *statement) scratch() (*C.char, C.size_t, *C.int64_t, C.size_t) {
	h := s.h
	return (*C.char)(unsafe.Pointer(&h.scratch[0])), C.size_t(len(h.scratch)),
		(*C.int64_t)(unsafe.Pointer(&h.lens[0])), C.size_t(len(h.lens))
}

// begin acquires if need be, sends the statement and takes it as far as
// it goes without waiting; true when it waits (h.st.wait).
func (s *statement) begin(pool *C.dp_pool) bool {
	buf, bufCap, lens, lensCap := s.scratch()
	return C.dpg_begin(pool, s.cc.p, s.textPtr(), s.offsPtr(), C.size_t(len(s.offs)),
		&s.h.st, buf, bufCap, lens, lensCap) == 1
}

func (s *statement) step() bool {
	buf, bufCap, lens, lensCap := s.scratch()
	return C.dpg_step(&s.h.st, buf, bufCap, lens, lensCap) == 1
}

func (s *statement) finish() {
	buf, bufCap, lens, lensCap := s.scratch()
	C.dpg_finish(&s.h.st, buf, bufCap, lens, lensCap)
}

// inC runs the statement with its waits in C, in one crossing.
func (s *statement) inC() {
	buf, bufCap, lens, lensCap := s.scratch()
	C.dpg_run(s.cc.p, s.textPtr(), s.offsPtr(), C.size_t(len(s.offs)), &s.h.st, buf, bufCap, lens, lensCap)
}

// wait takes a statement that waits (h.st.wait) to its end, waiting for
// its own socket in Go's netpoller. Any other wait (a server-side cancel's
// connection) is done in C.
func (s *statement) wait(p *cpool) {
	st := &s.h.st
	if st.wait.socket_id == 0 {
		s.finish()
		return
	}
	// The handle's last duplicate, when it is this socket's: a handle
	// mostly gets the same connection back (dpg_acquire prefers it), and
	// so skips pollerFor's process-wide lock.
	pf := s.h.pf
	if !pf.isFor(int(st.wait.fd), uint64(st.wait.socket_id)) {
		pf = pollerFor(p, int(st.wait.fd), uint64(st.wait.socket_id))
		s.h.pf = pf
	}
	if pf == nil || !s.cc.waitOn(pf) {
		s.finish()
		return
	}
	s.inNetpoller(pf)
}

// inNetpoller goes on with a statement that waits for pf's socket.
func (s *statement) inNetpoller(pf *pollFile) {
	netpollWait(pf, s.cc, &s.h.st.wait, s.step, s.finish)
}

// netpollWait takes an operation that waits for pf's socket (*wait says
// how) to its end, parking the goroutine in Go's netpoller: step takes it
// further (true: it waits again, *wait updated), finish ends it in C,
// blocking if need be, for anything the netpoller cannot wait for (another
// socket, such as a server-side cancel's connection; a cancel). The
// operation has just been stepped and waits (*wait). RawRead (or RawWrite)
// forgets any readiness from before it starts, so its callback must look
// for itself before the goroutine parks: the first look of a read wait,
// right after a step that found nothing, is a peek at the socket (a raw
// syscall, where a step would cost a cgo crossing and a turn of the
// core's state machine, to find the same nothing most of the time); every
// other look is a step.
func netpollWait(pf *pollFile, cc *callCtx, wait *C.dp_wait, step func() bool, finish func()) {
	write := wait.events&C.POLLOUT != 0
	waiting := true
	fresh := true // the operation stepped just now and waits
	for {
		ours := true
		// arm sets the coming wait's deadline; false when the goroutine
		// must not park (the deadline cannot be set, or a cancel came).
		arm := func() bool {
			timeout := time.Duration(-1)
			if wait.timeout_us >= 0 {
				timeout = time.Duration(wait.timeout_us) * time.Microsecond
			}
			if pf.setTimeout(timeout) != nil || cc.cancelled() {
				ours = false
				return false
			}
			return true
		}
		next := func(fd uintptr) bool {
			if fresh {
				fresh = false
				if !write && !readable(fd) {
					return !arm()
				}
			}
			waiting = step()
			if !waiting {
				return true
			}
			if int(wait.fd) != pf.fd || uint64(wait.socket_id) != pf.id || (wait.events&C.POLLOUT != 0) != write {
				ours = false // another socket (a server-side cancel) or direction
				return true
			}
			return !arm()
		}
		var err error
		if write {
			err = pf.rc.Write(next)
		} else {
			err = pf.rc.Read(next)
		}
		switch {
		case !waiting:
			return
		case err != nil && !errors.Is(err, os.ErrDeadlineExceeded):
			// The duplicate is gone (closed by a sweep or the pool's
			// close): C does the rest.
			finish()
			return
		case !ours:
			if wait.events&C.POLLOUT != 0 != write && int(wait.fd) == pf.fd && !cc.cancelled() {
				write = !write
				fresh = true
				continue
			}
			finish()
			return
		}
		// The deadline passed or a cancel interrupted: the core looks, in
		// the next RawRead, which would fail at once on the past deadline;
		// so that deadline goes first (a cancel from now on is seen after
		// the next setTimeout, in next).
		if cc.cancelled() {
			finish()
			return
		}
		pf.deadline = interruptAt // whichever it was, it is in the past
		if pf.setTimeout(-1) != nil {
			finish()
			return
		}
	}
}

// newWait is a wait as the core reports it: fd to become readable (or
// writable), up to timeout (negative: none); for the tests of netpollWait.
func newWait(fd int, write bool, socketID uint64, timeout time.Duration) *C.dp_wait {
	w := &C.dp_wait{fd: C.int(fd), events: C.POLLIN, socket_id: C.uint64_t(socketID), timeout_us: -1}
	if write {
		w.events = C.POLLOUT
	}
	if timeout >= 0 {
		w.timeout_us = C.int64_t(timeout / time.Microsecond)
	}
	return w
}

// readable tells whether a read on the non-blocking socket fd would not
// block: data, end of file or an error are there. A peek leaves them for
// the core to read.
func readable(fd uintptr) bool {
	var b [1]byte
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno != syscall.EAGAIN
}

// sameColumns tells whether the finished statement's columns (names in
// buf, then lengths and types in lens) are those of the handle's last
// result.
func (s *statement) sameColumns(buf []byte, lens []int64, cols int) bool {
	h := s.h
	if len(h.names) != cols || len(h.types) != cols {
		return false
	}
	off := 0
	for c := 0; c < cols; c++ {
		n := int(lens[c])
		if h.names[c] != string(buf[off:off+n]) || h.types[c] != uint32(lens[cols+c]) {
			return false
		}
		off += n
	}
	return true
}

// result builds the Go result of a finished statement: from the scratch,
// or, for a result too large for it, with one more crossing that copies
// it into memory of its size.
func (s *statement) result() *result {
	st := &s.h.st
	rows, cols := int(st.shape.rows), int(st.shape.cols)
	r := &result{
		rows:     rows,
		affected: int64(st.shape.affected),
		hasID:    st.shape.has_last_id != 0,
		lastID:   int64(st.shape.last_id),
	}
	var buf []byte
	var lens []int64
	if st.copied != 0 {
		buf, lens = s.h.scratch, s.h.lens
	} else {
		buf = make([]byte, int(st.shape.bytes)+1) // +1: never empty
		lens = make([]int64, 2*cols+rows*cols+1)
		C.dpg_copy_free(st.res, st.shape.rows, st.shape.cols, (*C.char)(unsafe.Pointer(&buf[0])), (*C.int64_t)(unsafe.Pointer(&lens[0])))
		st.res = nil
	}
	off := 0
	if s.sameColumns(buf, lens, cols) {
		r.names = append([]string(nil), s.h.names...) // callers may write to Columns()
		r.types = s.h.types
		for c := 0; c < cols; c++ {
			off += int(lens[c])
		}
	} else {
		r.names = make([]string, cols)
		r.types = make([]uint32, cols)
		for c := 0; c < cols; c++ {
			n := int(lens[c])
			r.names[c] = string(buf[off : off+n])
			off += n
			r.types[c] = uint32(lens[cols+c])
		}
		s.h.names = append(s.h.names[:0], r.names...)
		s.h.types = r.types // never written once made
	}
	end := int(st.shape.bytes)
	if st.copied != 0 {
		// The scratch is reused by the next statement: copy out.
		r.data = append([]byte(nil), buf[off:end]...)
		r.cells = append([]int64(nil), lens[2*cols:2*cols+rows*cols]...)
	} else {
		r.data = buf[off:end]
		r.cells = lens[2*cols : 2*cols+rows*cols]
	}
	return r
}

// ---- dialing ----

// Dials so far that waited in the netpoller (a test reads it).
var dialsNetpolled atomic.Int64

// dialFD dials url with the core's dialer and returns the connected
// socket's file descriptor, which the caller owns. The goroutine waits for
// the handshake in Go's netpoller, not in a blocked cgo call, so many
// goroutines dialing at once do not each hold an OS thread.
func dialFD(ctx context.Context, url string) (int, error) {
	var cc callCtx
	if err := cc.begin(ctx); err != nil {
		return -1, err
	}
	defer cc.end()
	curl := C.CString(url)
	defer C.free(unsafe.Pointer(curl))
	var d C.dpg_dial
	if C.dpg_dial_begin(curl, cc.p, &d) == 1 {
		end := func() { C.dpg_dial_end(&d) }
		if d.wait.socket_id != 0 {
			end() // not the connecting socket: C waits
		} else if pf := newPollFile(int(d.wait.fd), 0, nil); pf == nil || !cc.waitOn(pf) {
			end()
			if pf != nil {
				_ = pf.f.Close()
			}
		} else {
			dialsNetpolled.Add(1)
			netpollWait(pf, &cc, &d.wait, func() bool { return C.dpg_dial_step(&d) == 1 }, end)
			// Stops a cancel from interrupting a closed file, then closes it.
			cc.end()
			_ = pf.f.Close()
		}
	}
	if d.code != C.DP_OK {
		return -1, takeError(Code(d.code), d.err)
	}
	return int(d.fd), nil
}

// checkDialURL parses url as dp_dial would, without dialing: a cancelled
// dp_ctx stops dp_dial right after it has parsed the URL.
func checkDialURL(url string) error {
	curl := C.CString(url)
	defer C.free(unsafe.Pointer(curl))
	ctx := C.dp_ctx_new(-1)
	defer C.dp_ctx_free(ctx)
	C.dp_ctx_cancel(ctx)
	var fd C.int = -1
	var e *C.dp_error
	code := C.dp_dial(curl, ctx, &fd, &e)
	switch code {
	case C.DP_OK: // cannot happen with a cancelled ctx; do not leak the socket
		closeFD(int(fd))
		return nil
	case C.DP_CANCELLED:
		C.dp_error_free(e)
		return nil
	default:
		return takeError(Code(code), e)
	}
}

func cCodeName(c Code) string { return C.GoString(C.dp_code_name(C.enum_dp_code(c))) }

func cLayerName(l Layer) string { return C.GoString(C.dp_layer_name(C.enum_dp_layer(l))) }
