package dialpool

// A statement's wait for its reply happens in Go's netpoller, not in a
// blocked cgo call. A goroutine blocked in C holds its OS thread, and the
// runtime hands its P to another thread after ~20 µs: from a few goroutines
// up that handoff, not the database, was the cost of a statement. So the
// core starts a statement, says which socket it waits for
// (dp_conn_query_start, dp_op_poll), and the goroutine parks in the
// netpoller on that socket like any Go network read; only then does it
// call C again. The core reads once right after the send, as pgx does: on
// a busy machine the backend has usually replied by then (it took the
// CPU the send woke it on), and that statement never parks.
//
// The netpoller needs a descriptor it owns, so each core socket gets a
// duplicate here, registered once and reused by every statement on that
// connection. The core closes its socket with shutdown(2) first, so a
// duplicate never keeps a connection open; duplicates whose socket has
// gone are closed by a sweep, when the pool closes, or when the kernel
// reuses the descriptor number (the core's socket id tells).

/*
#define _GNU_SOURCE
#include <poll.h>

// Sets dead[i] for each fd whose socket is closed or failed, without
// waiting.
static void dpg_dead_sockets(const int *fds, int n, char *dead) {
	struct pollfd p[64];
	for (int base = 0; base < n; base += 64) {
		int m = n - base < 64 ? n - base : 64;
		for (int i = 0; i < m; i++) {
			p[i].fd = fds[base + i];
			p[i].events = POLLRDHUP;
			p[i].revents = 0;
		}
		if (poll(p, (nfds_t)m, 0) < 0) return;
		for (int i = 0; i < m; i++)
			dead[base + i] = (p[i].revents & (POLLHUP | POLLERR | POLLNVAL | POLLRDHUP)) != 0;
	}
}
*/
import "C"

import (
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// pollFile is Go's duplicate of one core socket.
type pollFile struct {
	f    *os.File
	rc   syscall.RawConn
	fd   int // the core's descriptor number: the cache key
	id   uint64
	pool *cpool
	// The deadline last set on f (zero: none). Only the goroutine whose
	// statement uses the socket touches it.
	deadline time.Time
}

// Long past: a deadline that ends a wait at once.
var interruptAt = time.Unix(1, 0)

var pollers = struct {
	mu      sync.Mutex
	byFD    map[int]*pollFile
	sweepAt int
}{byFD: map[int]*pollFile{}, sweepAt: 16}

// pollerFor returns Go's duplicate of the core socket fd (id tells it from
// an earlier socket with the same number), making it on first use; nil
// when none can be made, and the caller then waits in C.
func pollerFor(pool *cpool, fd int, id uint64) *pollFile {
	if id == 0 || fd < 0 {
		return nil
	}
	pollers.mu.Lock()
	defer pollers.mu.Unlock()
	if pf := pollers.byFD[fd]; pf != nil {
		if pf.isFor(fd, id) {
			return pf
		}
		// The core closed that socket and the number was reused.
		delete(pollers.byFD, fd)
		_ = pf.f.Close()
	}
	if len(pollers.byFD) >= pollers.sweepAt {
		sweepLocked()
		pollers.sweepAt = 2*len(pollers.byFD) + 16
	}
	pf := newPollFile(fd, id, pool)
	if pf != nil {
		pollers.byFD[fd] = pf
	}
	return pf
}

// isFor tells whether pf (nil: no) is the duplicate of the core socket
// fd with id: socket ids are unique in the process, so this holds across
// pools and descriptor reuse.
func (pf *pollFile) isFor(fd int, id uint64) bool {
	return pf != nil && pf.fd == fd && pf.id == id
}

// newPollFile makes a duplicate of the core's socket fd registered with
// the netpoller; nil when it cannot.
func newPollFile(fd int, id uint64, pool *cpool) *pollFile {
	dup, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return nil
	}
	// The socket is non-blocking (the flag belongs to the socket, which the
	// duplicate shares), so os.NewFile registers it with the netpoller.
	f := os.NewFile(dup, "dialpool-socket")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil
	}
	return &pollFile{f: f, rc: rc, fd: fd, id: id, pool: pool}
}

// sweepLocked closes the duplicates of sockets the core has closed.
func sweepLocked() {
	fds := make([]C.int, 0, len(pollers.byFD))
	keys := make([]int, 0, len(pollers.byFD))
	for key, pf := range pollers.byFD {
		var dup C.int = -1
		_ = pf.rc.Control(func(d uintptr) { dup = C.int(d) })
		fds = append(fds, dup)
		keys = append(keys, key)
	}
	if len(fds) == 0 {
		return
	}
	dead := make([]byte, len(fds))
	C.dpg_dead_sockets(&fds[0], C.int(len(fds)), (*C.char)(unsafe.Pointer(&dead[0])))
	for i, key := range keys {
		if dead[i] != 0 {
			_ = pollers.byFD[key].f.Close()
			delete(pollers.byFD, key)
		}
	}
}

// forgetPool closes the duplicates of a closed pool's sockets.
func forgetPool(pool *cpool) {
	pollers.mu.Lock()
	defer pollers.mu.Unlock()
	for key, pf := range pollers.byFD {
		if pf.pool == pool {
			_ = pf.f.Close()
			delete(pollers.byFD, key)
		}
	}
}

// setTimeout sets the deadline of the coming wait: timeout from now
// (negative: none).
func (pf *pollFile) setTimeout(timeout time.Duration) error {
	var want time.Time
	if timeout >= 0 {
		want = time.Now().Add(timeout)
	}
	if want.Equal(pf.deadline) {
		return nil
	}
	if err := pf.f.SetDeadline(want); err != nil {
		return err
	}
	pf.deadline = want
	return nil
}

// interrupt ends a wait in progress (a cancel from another goroutine).
func (pf *pollFile) interrupt() { _ = pf.f.SetDeadline(interruptAt) }
