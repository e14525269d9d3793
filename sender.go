package main

import (
	"syscall"
	"unsafe"

	"incidents/internal/uring"
)

// directBatch is the most direct writes one system call sends. Each
// subscriber in a batch stays locked until the call returns, and a kernel
// that does not preempt system calls runs nothing else on that CPU
// meanwhile, so batches are kept short (64 sends, about 0.4 ms on the
// measured VM). More per call saved nothing measurable (BENCHMARKS.md).
const directBatch = 64

// directWrite is one subscriber's share of a publish that goes straight to
// its socket: b, of which n bytes went out.
type directWrite struct {
	sub *subscriber
	b   batch
	n   int
}

// sender makes one fan-out goroutine's direct writes: through an io_uring
// ring, one system call per batch of sockets, or with a write(2) each
// where the kernel refuses io_uring. A system call per socket was most of
// the server's cost of an event with many subscribers (see BENCHMARKS.md).
type sender struct {
	ring   *uring.Ring
	ops    []uring.Op
	res    []int32
	writes []directWrite // the batch deliver is gathering
	hub    *hub          // for its log
	failed error         // why the ring failed while in use
}

// newSender makes a sender, with a ring unless the kernel refused one or
// a ring failed in use before. h.mu is held.
func (h *hub) newSender() *sender {
	if h.noRing != nil {
		return h.senderWith(nil, h.noRing)
	}
	return h.senderWith(uring.New(directBatch))
}

// senderWith makes a sender around ring, or, if making it failed with
// err, one that writes with write(2); it logs the failure, which later
// senders then do not repeat. h.mu is held.
func (h *hub) senderWith(ring *uring.Ring, err error) *sender {
	out := &sender{hub: h, writes: make([]directWrite, 0, directBatch)}
	if err != nil {
		if h.noRing == nil {
			h.noRing = err
			h.log.Info("io_uring unavailable: the stream writes to each subscriber with its own system call", "err", err)
		}
		return out
	}
	out.ring, out.ops, out.res = ring, make([]uring.Op, directBatch), make([]int32, directBatch)
	return out
}

// send writes each write's events to its socket without waiting and
// records how many bytes went out: -1 for none, or uring.Unknown when the
// ring failed and nobody knows.
func (out *sender) send(writes []directWrite) {
	if len(writes) == 0 {
		return
	}
	if out.ring == nil {
		for i := range writes {
			writes[i].n = writeNow(writes[i].sub.direct.fd, writes[i].b.wire)
		}
		return
	}
	ops, res := out.ops[:len(writes)], out.res[:len(writes)]
	for i, w := range writes {
		ops[i] = uring.Send(w.sub.direct.fd, w.b.wire)
	}
	if err := out.ring.Run(ops, res); err != nil {
		out.hub.log.Error("io_uring failed: the stream goes on with a system call per write", "err", err)
		out.failed = err
		out.close()
	}
	for i, n := range res {
		writes[i].n = int(n)
		if n < 0 && n != uring.Unknown {
			writes[i].n = -1
		}
	}
	clear(ops) // the batch's memory is not kept alive by the next one
}

// distrustRings drops every sender's ring once one has failed in use: a
// kernel whose io_uring failed once is trusted neither with the others nor
// with new ones. h.mu is held, and no publish is delivering.
func (h *hub) distrustRings() {
	if h.noRing != nil {
		return // no rings, or dropped already
	}
	for _, failed := range h.senders {
		if failed.failed != nil {
			h.noRing = failed.failed
			for _, out := range h.senders {
				out.close()
			}
			return
		}
	}
}

func (out *sender) close() {
	if out.ring != nil {
		out.ring.Close()
		out.ring = nil
	}
}

// writeNow is write(2) on a non-blocking socket, without the runtime's
// bookkeeping for calls that may block: it returns at once. It reports the
// bytes written, or -1.
func writeNow(fd int, b []byte) int {
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if errno != 0 {
		return -1
	}
	return int(n)
}
