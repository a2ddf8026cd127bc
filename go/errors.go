package dialpool

import (
	"context"
	"database/sql/driver"
	"fmt"
	"time"
)

// Code is a dialpool error code. The numbers are those of the C ABI's
// dp_code (and of the Rust and Python APIs) and never change.
type Code int

// The codes, as in include/dialpool.h.
const (
	CodeOK                 Code = 0
	CodeInvalidArgument    Code = 1
	CodeInvalidState       Code = 2
	CodeInternal           Code = 3
	CodeDNSError           Code = 4
	CodeDNSTimeout         Code = 5
	CodeConnectTimeout     Code = 6
	CodeConnectionRefused  Code = 7
	CodeNetworkUnreachable Code = 8
	CodeTLSError           Code = 9
	CodeTLSTimeout         Code = 10
	CodeAuthFailed         Code = 11
	CodeLoginTimeout       Code = 12
	CodeProtocolError      Code = 13
	CodeAcquireTimeout     Code = 14
	CodePoolClosed         Code = 15
	CodeQueryTimeout       Code = 16
	CodeReadTimeout        Code = 17
	CodeWriteTimeout       Code = 18
	CodeCancelled          Code = 19
	CodeServerError        Code = 20
	CodeConnectionLost     Code = 21
	CodeNetworkError       Code = 22
)

var codeNames = [...]string{
	"DP_OK", "DP_INVALID_ARGUMENT", "DP_INVALID_STATE", "DP_INTERNAL",
	"DP_DNS_ERROR", "DP_DNS_TIMEOUT", "DP_CONNECT_TIMEOUT", "DP_CONNECTION_REFUSED",
	"DP_NETWORK_UNREACHABLE", "DP_TLS_ERROR", "DP_TLS_TIMEOUT", "DP_AUTH_FAILED",
	"DP_LOGIN_TIMEOUT", "DP_PROTOCOL_ERROR", "DP_ACQUIRE_TIMEOUT", "DP_POOL_CLOSED",
	"DP_QUERY_TIMEOUT", "DP_READ_TIMEOUT", "DP_WRITE_TIMEOUT", "DP_CANCELLED",
	"DP_SERVER_ERROR", "DP_CONNECTION_LOST", "DP_NETWORK_ERROR",
}

// String is the C name of the code, e.g. "DP_QUERY_TIMEOUT".
func (c Code) String() string {
	if c >= 0 && int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("DP_UNKNOWN(%d)", int(c))
}

// Layer is where an error happened.
type Layer int

// The layers, as in include/dialpool.h.
const (
	LayerNone  Layer = 0
	LayerDial  Layer = 1
	LayerLogin Layer = 2
	LayerPool  Layer = 3
	LayerQuery Layer = 4
)

// String is "none", "dial", "login", "pool" or "query".
func (l Layer) String() string {
	switch l {
	case LayerDial:
		return "dial"
	case LayerLogin:
		return "login"
	case LayerPool:
		return "pool"
	case LayerQuery:
		return "query"
	default:
		return "none"
	}
}

// Error is every failure dialpool reports: the code, the layer, the limit
// that fired, the time spent and a one-line message. It implements
// net.Error. errors.Is matches it against the sentinel of its code
// (ErrQueryTimeout, …), against context.DeadlineExceeded when a limit ran
// out and against context.Canceled when the caller cancelled, so code
// written for the standard errors keeps working.
type Error struct {
	Code  Code
	Layer Layer
	// Limit is the option that fired ("connect_timeout", "acquire_timeout",
	// "query_timeout", …) or "deadline" for the caller's context; "" when
	// no limit fired.
	Limit string
	// SQLState is the server's SQLSTATE for server errors, else "".
	SQLState string
	// Elapsed is the time spent in the failed operation; -1 when unknown.
	Elapsed time.Duration
	// Message is the whole one-line description, e.g. "query: statement
	// timed out after 2.00s (deadline=2s): cancelled on the server".
	Message string
	// Retryable is true only when nothing of the statement reached the
	// server, so running it again cannot run it twice.
	Retryable bool
	// Source is the error that caused this one: for ACQUIRE_TIMEOUT, the
	// pool's last connect error (e.g. CONNECTION_REFUSED). errors.Is and
	// errors.As look through it.
	Source *Error

	timeout  bool
	sentinel bool
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// Timeout reports whether a limit ran out (net.Error).
func (e *Error) Timeout() bool { return e.timeout }

// Temporary reports whether running the operation again may succeed
// (net.Error; deprecated there). It is Retryable.
func (e *Error) Temporary() bool { return e.Retryable }

// Unwrap returns the cause, when there is one.
func (e *Error) Unwrap() error {
	if e.Source == nil {
		return nil
	}
	return e.Source
}

// Is matches the sentinels of the code, context.DeadlineExceeded for every
// timeout and context.Canceled for CANCELLED.
func (e *Error) Is(target error) bool {
	switch target {
	case context.DeadlineExceeded:
		return e.timeout
	case context.Canceled:
		return e.Code == CodeCancelled
	}
	if t, ok := target.(*Error); ok && t.sentinel {
		return t.Code == e.Code
	}
	return false
}

func sentinel(code Code, timeout bool) *Error {
	return &Error{Code: code, Message: "dialpool: " + code.String(), Elapsed: -1, timeout: timeout, sentinel: true}
}

// Sentinels, one per code: errors.Is(err, dialpool.ErrQueryTimeout).
var (
	ErrInvalidArgument    = sentinel(CodeInvalidArgument, false)
	ErrInvalidState       = sentinel(CodeInvalidState, false)
	ErrInternal           = sentinel(CodeInternal, false)
	ErrDNS                = sentinel(CodeDNSError, false)
	ErrDNSTimeout         = sentinel(CodeDNSTimeout, true)
	ErrConnectTimeout     = sentinel(CodeConnectTimeout, true)
	ErrConnectionRefused  = sentinel(CodeConnectionRefused, false)
	ErrNetworkUnreachable = sentinel(CodeNetworkUnreachable, false)
	ErrTLS                = sentinel(CodeTLSError, false)
	ErrTLSTimeout         = sentinel(CodeTLSTimeout, true)
	ErrAuthFailed         = sentinel(CodeAuthFailed, false)
	ErrLoginTimeout       = sentinel(CodeLoginTimeout, true)
	ErrProtocol           = sentinel(CodeProtocolError, false)
	ErrAcquireTimeout     = sentinel(CodeAcquireTimeout, true)
	ErrPoolClosed         = sentinel(CodePoolClosed, false)
	ErrQueryTimeout       = sentinel(CodeQueryTimeout, true)
	ErrReadTimeout        = sentinel(CodeReadTimeout, true)
	ErrWriteTimeout       = sentinel(CodeWriteTimeout, true)
	ErrCancelled          = sentinel(CodeCancelled, false)
	ErrServer             = sentinel(CodeServerError, false)
	ErrConnectionLost     = sentinel(CodeConnectionLost, false)
	ErrNetwork            = sentinel(CodeNetworkError, false)
)

// badConnError is an *Error that database/sql may retry on another
// connection: it matches driver.ErrBadConn as well as its own code, and
// errors.As finds the *Error inside.
type badConnError struct{ err *Error }

func (b badConnError) Error() string   { return b.err.Error() }
func (b badConnError) Timeout() bool   { return b.err.Timeout() }
func (b badConnError) Temporary() bool { return b.err.Temporary() }
func (b badConnError) Unwrap() error   { return b.err }
func (b badConnError) Is(target error) bool {
	return target == driver.ErrBadConn
}
