package uring

import (
	"errors"
	"slices"
	"syscall"
	"testing"
)

// newTestRing returns a ring, or nil where the kernel refuses io_uring: its
// users then make a system call per operation, and their own tests cover
// that path. Any other failure fails the test.
func newTestRing(t *testing.T, entries int) *Ring {
	t.Helper()
	r, err := New(entries)
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("New: %v; want a ring, or the kernel's refusal", err)
		}
		t.Logf("io_uring is refused here (%v)", err)
		return nil
	}
	t.Cleanup(r.Close)
	return r
}

func socketPair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fds[0]); syscall.Close(fds[1]) })
	return fds[0], fds[1]
}

// TestRecv checks the outcomes a batch of receives reports: the bytes that
// were there (at most the buffer), nothing yet, and the end of the stream.
func TestRecv(t *testing.T) {
	r := newTestRing(t, 4)
	if r == nil {
		return
	}
	hasData, peer := socketPair(t)
	if _, err := syscall.Write(peer, []byte("0123456789")); err != nil {
		t.Fatalf("write: %v", err)
	}
	empty, _ := socketPair(t)
	ended, peer := socketPair(t)
	syscall.Shutdown(peer, syscall.SHUT_WR)

	const size = 8
	bufs, res := make([]byte, 3*size), make([]int32, 3)
	ops := make([]Op, 3)
	for i, fd := range []int{hasData, empty, ended} {
		ops[i] = Recv(fd, bufs[i*size:(i+1)*size])
	}
	for round, want := range [][]int32{
		{size, -int32(syscall.EAGAIN), 0},
		{2, -int32(syscall.EAGAIN), 0}, // the rest of the first socket's bytes
	} {
		if err := r.Run(ops, res); err != nil {
			t.Fatalf("round %d: Run: %v", round, err)
		}
		if !slices.Equal(res, want) {
			t.Errorf("round %d: results %v, want %v", round, res, want)
		}
	}
	if got := string(bufs[:2]); got != "89" {
		t.Errorf("the second round read %q, want %q", got, "89")
	}
}

// TestSend checks a send, one to a socket whose buffer is full (nothing
// sent, not waited for) and one to a closed peer (no SIGPIPE), and that the
// bytes arrive.
func TestSend(t *testing.T) {
	r := newTestRing(t, 8)
	if r == nil {
		return
	}
	a, aPeer := socketPair(t)
	full, _ := socketPair(t)
	for {
		if _, err := syscall.Write(full, make([]byte, 64<<10)); err != nil {
			break // EAGAIN: the buffers are full
		}
	}
	gone, gonePeer := socketPair(t)
	syscall.Close(gonePeer)

	msg := []byte("message")
	ops := []Op{Send(a, msg), Send(full, msg), Send(gone, msg)}
	res := make([]int32, len(ops))
	if err := r.Run(ops, res); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if want := []int32{int32(len(msg)), -int32(syscall.EAGAIN), -int32(syscall.EPIPE)}; !slices.Equal(res, want) {
		t.Errorf("results %v, want %v", res, want)
	}
	buf := make([]byte, 64)
	if n, err := syscall.Read(aPeer, buf); err != nil || string(buf[:n]) != string(msg) {
		t.Errorf("peer read %q, %v; want %q", buf[:max(n, 0)], err, msg)
	}
}

// TestRunTooMany checks that a batch larger than the ring is refused, not
// cut short.
func TestRunTooMany(t *testing.T) {
	r := newTestRing(t, 2)
	if r == nil {
		return
	}
	ops := make([]Op, r.Cap()+1)
	if err := r.Run(ops, make([]int32, len(ops))); err == nil {
		t.Fatalf("Run of %d operations on a ring of %d: no error", len(ops), r.Cap())
	}
}

// TestRunAfterFailure checks that a ring that failed takes nothing more,
// and says of every operation that the kernel never took it.
func TestRunAfterFailure(t *testing.T) {
	r := newTestRing(t, 2)
	if r == nil {
		return
	}
	r.broken = errors.New("io_uring_enter: some failure")
	a, _ := socketPair(t)
	res := []int32{7, 7}
	if err := r.Run([]Op{Send(a, []byte("x")), Send(a, []byte("y"))}, res); err == nil {
		t.Fatal("Run on a failed ring: no error")
	}
	if want := []int32{-int32(syscall.ECANCELED), -int32(syscall.ECANCELED)}; !slices.Equal(res, want) {
		t.Errorf("results %v, want %v (not taken)", res, want)
	}
}

// TestNewFailureIsNotRefusal checks that New keeps ErrUnavailable for the
// kernel's refusals: a request the kernel rejects as invalid is a failure
// to report, not a reason to fall back quietly.
func TestNewFailureIsNotRefusal(t *testing.T) {
	if newTestRing(t, 1) == nil {
		return // logged: refused here
	}
	r, err := New(0) // no ring has no entries
	if err == nil {
		r.Close()
		t.Fatal("New(0): a ring, want an error")
	}
	if errors.Is(err, ErrUnavailable) {
		t.Errorf("New(0) = %v, which wraps ErrUnavailable; want a plain failure", err)
	}
}
