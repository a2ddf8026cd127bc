package dialpool

import (
	"context"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// Dialer dials TCP with dialpool's dialer: every address of the host in
// turn (Happy Eyeballs), each attempt bounded by connect_timeout, with
// TCP_USER_TIMEOUT, keepalive and SYN-retry options set on the socket, and
// errors that say which step failed and which limit fired. It is a drop-in
// for net.Dialer.DialContext: pgx's DialFunc, go-sql-driver/mysql's
// RegisterDialContext, lib/pq's Dialer and DialerContext, and net/http's
// Transport.DialContext all take it.
//
// The zero Dialer is not valid; use NewDialer.
type Dialer struct {
	options string // "?key=value&…" or ""
	// fallback dials the networks the core does not handle ("unix").
	fallback net.Dialer
}

// NewDialer returns a Dialer with the dial-layer options of the URL form,
// e.g. "connect_timeout=3s&tcp_user_timeout=10s&keepalive_idle=15s" (a
// leading '?' is allowed; "" keeps every default). An unknown key or a bad
// value is an *Error with CodeInvalidArgument naming it.
func NewDialer(options string) (*Dialer, error) {
	options = strings.TrimPrefix(strings.TrimSpace(options), "?")
	d := &Dialer{}
	if options != "" {
		d.options = "?" + options
	}
	if err := checkDialURL("tcp://127.0.0.1:9" + d.options); err != nil {
		return nil, err
	}
	return d, nil
}

// DialContext connects to address ("host:port", "[v6]:port") on network
// "tcp", "tcp4" or "tcp6" (the core tries every address the name resolves
// to, so "tcp4" and "tcp6" do not restrict the family of a host name).
// "unix" and "unixpacket" are dialled with a plain net.Dialer.
//
// The ctx deadline bounds the whole dial together with connect_timeout and
// dns_timeout (whichever is earlier fires, and the error names it);
// cancelling ctx interrupts the dial at once. Errors are *net.OpError with
// Op "dial" wrapping an *Error, so Timeout(), errors.Is(err,
// dialpool.ErrConnectTimeout) and errors.Is(err, context.DeadlineExceeded)
// all work.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	case "unix", "unixpacket":
		return d.fallback.DialContext(ctx, network, address)
	default:
		return nil, &net.OpError{Op: "dial", Net: network, Addr: dialAddr(address), Err: net.UnknownNetworkError(network)}
	}
	fd, err := dialFD(ctx, "tcp://"+address+d.options)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: dialAddr(address), Err: err}
	}
	f := os.NewFile(uintptr(fd), "dialpool:"+address)
	c, err := net.FileConn(f) // dups the descriptor
	f.Close()
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: dialAddr(address), Err: err}
	}
	return c, nil
}

// Dial is DialContext without a context (lib/pq's Dialer interface).
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialTimeout is DialContext bounded by timeout (lib/pq's Dialer
// interface); timeout <= 0 means none.
func (d *Dialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		return d.Dial(network, address)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

// dialAddr is the address a dial was for, as net.OpError wants it.
type dialAddr string

func (a dialAddr) Network() string { return "tcp" }
func (a dialAddr) String() string  { return string(a) }

func closeFD(fd int) { _ = syscall.Close(fd) }
