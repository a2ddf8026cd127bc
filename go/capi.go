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

// A statement the goroutine waits for in Go's netpoller (poller.go).
// dpg_start and dpg_step return 1 when the statement waits (*wait says for
// what) and 0 when it has finished (*code, and *result with *shape or
// *err); dpg_finish ends it, blocking if need be.
static int dpg_finish(dp_op *op, dp_result **result, dpg_shape *shape, dp_code *code, dp_error **err) {
	*code = dp_op_finish(op, result, err);
	if (*code == DP_OK) dpg_fill_shape(*result, shape);
	return 0;
}

static int dpg_step(dp_op *op, dp_wait *wait, dp_result **result, dpg_shape *shape, dp_code *code, dp_error **err) {
	if (dp_op_poll(op, wait)) return 1;
	return dpg_finish(op, result, shape, code, err);
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

// Starts the statement and takes it as far as it goes without waiting.
static int dpg_start(dp_conn *conn, const dp_ctx *ctx,
                     const char *text, const int64_t *offs, size_t nparams,
                     dp_op **op, dp_wait *wait, dp_result **result, dpg_shape *shape,
                     dp_code *code, dp_error **err) {
	*code = dpg_call(conn, ctx, text, offs, nparams, op, NULL, err);
	if (*code != DP_OK) return 0;
	return dpg_step(*op, wait, result, shape, code, err);
}

// Runs the statement with its waits in C (the calling thread blocks): no
// copy of the SQL and no dp_op, as the statement never leaves this call.
static void dpg_run(dp_conn *conn, const dp_ctx *ctx,
                    const char *text, const int64_t *offs, size_t nparams,
                    dp_result **result, dpg_shape *shape, dp_code *code, dp_error **err) {
	*code = dpg_call(conn, ctx, text, offs, nparams, NULL, result, err);
	if (*code == DP_OK) dpg_fill_shape(*result, shape);
}

// Acquires a connection and reads its socket, in one crossing.
static dp_code dpg_acquire(const dp_pool *pool, const dp_ctx *ctx, dp_conn **conn, int *fd, uint64_t *socket_id, dp_error **err) {
	dp_code code = dp_pool_acquire(pool, ctx, conn, err);
	if (code == DP_OK) code = dp_conn_socket(*conn, fd, socket_id, err);
	return code;
}

// Copies a result into Go memory and frees it: buf gets the column names
// and then every value back to back; lens gets each name's length and then
// each value's (-1 for SQL NULL), row by row; types (cols entries) gets each
// column's type id (0 when the library cannot say).
static void dpg_copy_free(dp_result *r, size_t rows, size_t cols, char *buf, int64_t *lens, uint32_t *types) {
	size_t off = 0;
	for (size_t c = 0; c < cols; c++) {
		const char *name = dp_result_column_name(r, c);
		size_t n = name ? strlen(name) : 0;
		if (n) memcpy(buf + off, name, n);
		off += n;
		lens[c] = (int64_t)n;
		types[c] = dp_result_column_type(r, c);
	}
	int64_t *cell = lens + cols;
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
*/
import "C"

import (
	"context"
	"errors"
	"os"
	"runtime/cgo"
	"sync"
	"sync/atomic"
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
	// so far that waited in the netpoller (beside it: the same cache line,
	// already touched per statement; a test reads it).
	running   atomic.Int32
	netpolled atomic.Int64
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

// connHandle is one checked-out core connection (nil when none is held)
// and its socket.
type connHandle struct {
	p        *C.dp_conn
	fd       int
	socketID uint64
}

func (h *connHandle) release() {
	if h.p != nil {
		C.dp_conn_release(h.p)
		h.p = nil
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
	var cc callCtx
	if err := cc.begin(ctx); err != nil {
		return nil, h.p == nil, err
	}
	defer cc.end()
	if h.p == nil {
		// The acquire alone holds the pool handle, so that closing the pool
		// waits for acquires but never for a running statement.
		p.mu.RLock()
		if p.p == nil {
			p.mu.RUnlock()
			return nil, true, errPoolClosedLocally()
		}
		var fd C.int
		var id C.uint64_t
		var e *C.dp_error
		code := C.dpg_acquire(p.p, cc.p, &h.p, &fd, &id, &e)
		p.mu.RUnlock()
		if code != C.DP_OK {
			h.release() // acquired, but its socket could not be read
			return nil, true, takeError(Code(code), e)
		}
		h.fd, h.socketID = int(fd), uint64(id)
	}
	s := statement{h: h, cc: &cc, text: text, offs: offs}
	// A statement alone in its pool waits in C: its goroutine's thread
	// blocks, but nobody needs that thread's P meanwhile, and a wait in C
	// costs less than a park in the netpoller. With company, a blocked
	// thread would cost a P handoff per statement, so it waits in Go.
	alone := p.running.Add(1) == 1
	defer p.running.Add(-1)
	if alone {
		s.inC()
	} else if pf := pollerFor(p, h.fd, h.socketID); pf != nil && cc.waitOn(pf) {
		p.netpolled.Add(1)
		s.inNetpoller(pf)
	} else {
		s.inC()
	}
	if s.code != C.DP_OK {
		return nil, false, takeError(Code(s.code), s.e)
	}
	return copyResult(s.res, &s.shape), false, nil
}

// statement is one statement's trip through the C calls.
type statement struct {
	h     *connHandle
	cc    *callCtx
	text  []byte
	offs  []int64
	op    *C.dp_op
	wait  C.dp_wait
	res   *C.dp_result
	shape C.dpg_shape
	code  C.dp_code
	e     *C.dp_error
}

func (s *statement) offsPtr() *C.int64_t {
	if len(s.offs) == 0 {
		return nil
	}
	return (*C.int64_t)(unsafe.Pointer(&s.offs[0]))
}

// start sends the statement; 1 means it waits (s.wait).
func (s *statement) start() C.int {
	return C.dpg_start(s.h.p, s.cc.p, (*C.char)(unsafe.Pointer(&s.text[0])), s.offsPtr(), C.size_t(len(s.offs)),
		&s.op, &s.wait, &s.res, &s.shape, &s.code, &s.e)
}

// inC runs the statement with its waits in C, in one crossing.
func (s *statement) inC() {
	C.dpg_run(s.h.p, s.cc.p, (*C.char)(unsafe.Pointer(&s.text[0])), s.offsPtr(), C.size_t(len(s.offs)),
		&s.res, &s.shape, &s.code, &s.e)
}

// inNetpoller runs the statement with its waits for its own socket in Go's
// netpoller. The statement is sent from inside RawRead: RawRead forgets
// any readiness from before it starts, and a reply can only come after
// the send.
func (s *statement) inNetpoller(pf *pollFile) {
	state := C.int(-1) // not started
	write := false
	for {
		ours := true
		next := func(uintptr) bool {
			if state < 0 {
				state = s.start()
			} else {
				state = C.dpg_step(s.op, &s.wait, &s.res, &s.shape, &s.code, &s.e)
			}
			if state != 1 {
				return true
			}
			if int(s.wait.fd) != pf.fd || uint64(s.wait.socket_id) != pf.id || (s.wait.events&C.POLLOUT != 0) != write {
				ours = false // another socket (a server-side cancel) or direction
				return true
			}
			timeout := time.Duration(-1)
			if s.wait.timeout_us >= 0 {
				timeout = time.Duration(s.wait.timeout_us) * time.Microsecond
			}
			if pf.setTimeout(timeout) != nil || s.cc.cancelled() {
				ours = false
				return true
			}
			return false
		}
		var err error
		if write {
			err = pf.rc.Write(next)
		} else {
			err = pf.rc.Read(next)
		}
		switch {
		case state == 0:
			return
		case state < 0:
			// The duplicate is gone (closed by a sweep or the pool's close)
			// before the statement started: C does it all.
			s.inC()
			return
		case err != nil && !errors.Is(err, os.ErrDeadlineExceeded):
			// ... or while it waited: C does the rest.
			C.dpg_finish(s.op, &s.res, &s.shape, &s.code, &s.e)
			return
		case state == 1 && !ours:
			if s.wait.events&C.POLLOUT != 0 != write && int(s.wait.fd) == pf.fd && !s.cc.cancelled() {
				write = !write
				continue
			}
			C.dpg_finish(s.op, &s.res, &s.shape, &s.code, &s.e)
			return
		}
		// The deadline passed or a cancel interrupted: the core looks, in
		// the next RawRead, which would fail at once on the past deadline;
		// so that deadline goes first (a cancel from now on is seen after
		// the next setTimeout, in next).
		if s.cc.cancelled() {
			C.dpg_finish(s.op, &s.res, &s.shape, &s.code, &s.e)
			return
		}
		pf.deadline = interruptAt // whichever it was, it is in the past
		if pf.setTimeout(-1) != nil {
			C.dpg_finish(s.op, &s.res, &s.shape, &s.code, &s.e)
			return
		}
	}
}

func copyResult(res *C.dp_result, shape *C.dpg_shape) *result {
	rows, cols := int(shape.rows), int(shape.cols)
	r := &result{
		rows:     rows,
		affected: int64(shape.affected),
		hasID:    shape.has_last_id != 0,
		lastID:   int64(shape.last_id),
	}
	lens := make([]int64, cols+rows*cols)
	types := make([]uint32, cols+1) // +1: never empty, so &types[0] is valid
	buf := make([]byte, int(shape.bytes)+1)
	var lensPtr *C.int64_t
	if len(lens) > 0 {
		lensPtr = (*C.int64_t)(unsafe.Pointer(&lens[0]))
	}
	C.dpg_copy_free(res, shape.rows, shape.cols, (*C.char)(unsafe.Pointer(&buf[0])), lensPtr, (*C.uint32_t)(unsafe.Pointer(&types[0])))
	r.names = make([]string, cols)
	off := 0
	for c := 0; c < cols; c++ {
		n := int(lens[c])
		r.names[c] = string(buf[off : off+n])
		off += n
	}
	r.data = buf[off : len(buf)-1]
	r.cells = lens[cols:]
	r.types = types[:cols]
	return r
}

// ---- dialing ----

// dialFD dials url with the core's dialer and returns the connected
// socket's file descriptor, which the caller owns.
func dialFD(ctx context.Context, url string) (int, error) {
	var cc callCtx
	if err := cc.begin(ctx); err != nil {
		return -1, err
	}
	defer cc.end()
	curl := C.CString(url)
	defer C.free(unsafe.Pointer(curl))
	var fd C.int = -1
	var e *C.dp_error
	if code := C.dp_dial(curl, cc.p, &fd, &e); code != C.DP_OK {
		return -1, takeError(Code(code), e)
	}
	return int(fd), nil
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
