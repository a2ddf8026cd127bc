package dialpool

// The pool's events for a Go func. The C callback (capi.go) lands in
// dialpoolGoEvent with the cgo.Handle of the func; this file's preamble may
// only declare (a file with //export cannot define C functions).

/*
#include <stdint.h>
#include "dialpool.h"
*/
import "C"

import (
	"log"
	"runtime/cgo"
	"time"
)

// EventKind says what happened in the pool.
type EventKind int

// The kinds; their String names are those of the C and Python bindings.
const (
	EventConnectStart   EventKind = 1 // a connect began (in the background)
	EventConnect        EventKind = 2 // a connect ended; Err is set when it failed
	EventAcquire        EventKind = 3 // a caller got a connection after waiting Elapsed
	EventRelease        EventKind = 4 // a caller gave its connection back after holding it Elapsed
	EventClose          EventKind = 5 // the pool closed a connection aged Elapsed, for Reason
	EventAcquireTimeout EventKind = 6 // an acquire failed with ErrAcquireTimeout (Err) after Elapsed
	EventLeak           EventKind = 7 // a connection has been held Elapsed, longer than leak_threshold
	EventAdjusted       EventKind = 8 // Option was lowered from Previous to Value, because of Why
)

// String is the kind's name: "connect_start", "connect", "acquire",
// "release", "close", "acquire_timeout", "leak", "adjusted".
func (k EventKind) String() string {
	switch k {
	case EventConnectStart:
		return "connect_start"
	case EventConnect:
		return "connect"
	case EventAcquire:
		return "acquire"
	case EventRelease:
		return "release"
	case EventClose:
		return "close"
	case EventAcquireTimeout:
		return "acquire_timeout"
	case EventLeak:
		return "leak"
	case EventAdjusted:
		return "adjusted"
	}
	return "unknown"
}

// Event is one pool event. Durations a kind does not use are -1; strings
// it does not use are empty.
type Event struct {
	Kind EventKind
	// Elapsed: the connect's time, the acquire's wait, the time held
	// (release, leak), the connection's age (close), the wait before an
	// acquire timeout.
	Elapsed time.Duration
	// Err: a failed connect's error, or the acquire timeout.
	Err *Error
	// Reason (close): "max_lifetime", "max_idle_time", "max_idle", "dead"
	// (the server or a proxy closed it), "broken" or "pool_closed".
	Reason string
	// Label (acquire, leak): the label given at acquire.
	Label string
	// DNS, TCP, TLS (connect): the dial phases; -1 for a phase not gone
	// through (no DNS for an IP address, no TLS with sslmode=disable).
	DNS, TCP, TLS time.Duration
	// Option, Previous (-1: off), Value, Why (adjusted): a setting lowered
	// to what the server allows.
	Option          string
	Previous, Value time.Duration
	Why             string
}

// Option configures a pool opened by NewConnector or OpenDB.
type Option func(*options)

type options struct {
	onEvent func(Event)
}

// WithEvents has fn receive the pool's events: connects (with their dial
// phases, or their error), acquires, releases, closes with their reason,
// acquire timeouts, leaks, and settings adjusted to the server — to feed
// OpenTelemetry tracing or a logger (see examples/otel).
//
// fn runs synchronously on the thread where the event happens: a thread of
// dialpool's runtime (connects, closes), or the goroutine whose statement
// acquires or releases a connection; several calls may run at once. It must
// return quickly and must not block, nor use the DB or Connector whose
// events it receives. A panic in fn is recovered and logged. fn is not
// called any more once the DB (or Connector) has been closed.
func WithEvents(fn func(Event)) Option {
	return func(o *options) { o.onEvent = fn }
}

func usec(v C.int64_t) time.Duration {
	if v < 0 {
		return -1
	}
	return time.Duration(v) * time.Microsecond
}

func eventFromC(ev *C.dp_event) Event {
	e := Event{
		Kind:     EventKind(ev.kind),
		Elapsed:  usec(ev.elapsed_us),
		DNS:      usec(ev.dns_us),
		TCP:      usec(ev.tcp_us),
		TLS:      usec(ev.tls_us),
		Previous: usec(ev.previous_us),
		Value:    usec(ev.value_us),
	}
	if ev.error != nil {
		// Owned by the library for the length of the callback: copied.
		e.Err = readError(ev.error, 0)
	}
	str := func(p *C.char) string {
		if p == nil {
			return ""
		}
		return C.GoString(p)
	}
	e.Reason = str(ev.reason)
	e.Label = str(ev.label)
	e.Option = str(ev.option)
	e.Why = str(ev.why)
	return e
}

//export dialpoolGoEvent
func dialpoolGoEvent(ev *C.dp_event, handle C.uintptr_t) {
	fn, ok := cgo.Handle(handle).Value().(func(Event))
	if !ok || ev == nil {
		return
	}
	e := eventFromC(ev)
	// A panic must not unwind into the C and Rust frames below.
	defer func() {
		if r := recover(); r != nil {
			log.Printf("dialpool: the event handler panicked (the pool goes on): %v", r)
		}
	}()
	fn(e)
}
