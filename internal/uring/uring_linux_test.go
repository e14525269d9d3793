package uring

import (
	"errors"
	"slices"
	"syscall"
	"testing"
	"unsafe"
)

// newTestRing returns a ring, or nil where the kernel refuses io_uring: its
// users then make a system call per operation, and their own tests cover
// that path. Any other failure fails the test.
func newTestRing(t *testing.T, entries int) *Ring {
	t.Helper()
	r, err := New(entries)
	if err != nil {
		if !errors.Is(err, syscall.ENOSYS) && !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EACCES) {
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
		ops[i] = Op{Opcode: OpRecv, Fd: int32(fd), Addr: unsafe.Pointer(&bufs[i*size]), Len: size, MsgFlags: syscall.MSG_DONTWAIT}
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

// TestSend checks a send, a sendmsg of two buffers, a send to a socket whose
// buffer is full (nothing sent, not waited for) and one to a closed peer,
// and that the bytes arrive in order.
func TestSend(t *testing.T) {
	r := newTestRing(t, 8)
	if r == nil {
		return
	}
	a, aPeer := socketPair(t)
	b, bPeer := socketPair(t)
	full, _ := socketPair(t)
	for {
		if _, err := syscall.Write(full, make([]byte, 64<<10)); err != nil {
			break // EAGAIN: the buffers are full
		}
	}
	gone, gonePeer := socketPair(t)
	syscall.Close(gonePeer)

	one, two, three := []byte("one"), []byte("two"), []byte("three")
	iov := []syscall.Iovec{{Base: &two[0]}, {Base: &three[0]}}
	iov[0].SetLen(len(two))
	iov[1].SetLen(len(three))
	msg := syscall.Msghdr{Iov: &iov[0]}
	msg.Iovlen = uint64(len(iov))
	ops := []Op{
		{Opcode: OpSend, Fd: int32(a), Addr: unsafe.Pointer(&one[0]), Len: uint32(len(one)), MsgFlags: syscall.MSG_DONTWAIT},
		{Opcode: OpSendmsg, Fd: int32(b), Addr: unsafe.Pointer(&msg), MsgFlags: syscall.MSG_DONTWAIT},
		{Opcode: OpSend, Fd: int32(full), Addr: unsafe.Pointer(&one[0]), Len: uint32(len(one)), MsgFlags: syscall.MSG_DONTWAIT},
		{Opcode: OpSend, Fd: int32(gone), Addr: unsafe.Pointer(&one[0]), Len: uint32(len(one)), MsgFlags: syscall.MSG_DONTWAIT | syscall.MSG_NOSIGNAL},
	}
	res := make([]int32, len(ops))
	if err := r.Run(ops, res); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if want := []int32{3, 8, -int32(syscall.EAGAIN), -int32(syscall.EPIPE)}; !slices.Equal(res, want) {
		t.Errorf("results %v, want %v", res, want)
	}
	for fd, want := range map[int]string{aPeer: "one", bPeer: "twothree"} {
		buf := make([]byte, 64)
		n, err := syscall.Read(fd, buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("peer read %q, %v; want %q", buf[:max(n, 0)], err, want)
		}
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
