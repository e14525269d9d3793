// Package uring runs batches of non-blocking socket operations through
// Linux's io_uring: one system call for a whole batch, where read(2) and
// write(2) take one each. Where a system call is expensive (on the VM the
// stream was measured on, over a microsecond each), that is most of the
// cost of sending one small message to many sockets.
//
// Only what the stream's fan-out and its load tool need is here: a ring;
// Send and Recv, which do not wait for the socket; and Run, which submits
// a batch of them and returns when all have completed, at once.
package uring

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Op is one operation for Run, made by Send or Recv.
type Op struct {
	opcode uint8
	fd     int32
	addr   unsafe.Pointer
	len    uint32
	flags  uint32
}

// Operation codes (include/uapi/linux/io_uring.h).
const (
	opSend = 26
	opRecv = 27
)

// Send sends b on socket fd without waiting for room (MSG_DONTWAIT), and
// without SIGPIPE if the peer is gone. b must not be empty.
func Send(fd int, b []byte) Op {
	return Op{opcode: opSend, fd: int32(fd), addr: unsafe.Pointer(unsafe.SliceData(b)), len: uint32(len(b)), flags: syscall.MSG_DONTWAIT | syscall.MSG_NOSIGNAL}
}

// Recv receives into b from socket fd without waiting for data. b must not
// be empty.
func Recv(fd int, b []byte) Op {
	return Op{opcode: opRecv, fd: int32(fd), addr: unsafe.Pointer(unsafe.SliceData(b)), len: uint32(len(b)), flags: syscall.MSG_DONTWAIT}
}

// Ring is one io_uring instance. It is not safe for concurrent use.
type Ring struct {
	fd      int
	rings   []byte // the submission and completion rings, one mapping
	sqeMem  []byte
	sqHead  *uint32
	sqTail  *uint32
	sqMask  uint32
	sqes    []sqe
	cqHead  *uint32
	cqTail  *uint32
	cqMask  uint32
	cqes    []cqe
	entries int
	broken  error // set by a failed Run: every later Run fails at once
}

// The kernel's structures.
type (
	params struct {
		sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
		resv                                                                   [3]uint32
		sqOff                                                                  [10]uint32 // head, tail, ring_mask, ring_entries, flags, dropped, array, resv1, user_addr (u64)
		cqOff                                                                  [10]uint32 // head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1, user_addr (u64)
	}
	sqe struct {
		opcode      uint8
		flags       uint8
		ioprio      uint16
		fd          int32
		off         uint64
		addr        uint64
		len         uint32
		msgFlags    uint32
		userData    uint64
		bufIndex    uint16
		personality uint16
		spliceFdIn  int32
		addr3       uint64
		_           uint64
	}
	cqe struct {
		userData uint64
		res      int32
		flags    uint32
	}
)

const (
	sysSetup         = 425
	sysEnter         = 426
	sysRegister      = 427
	registerProbe    = 8
	opSupported      = 1 << 0
	offSQEs          = 0x10000000
	featSingleMmap   = 1 << 0
	enterGetEvents   = 1 << 0
	setupSubmitAll   = 1 << 7 // submit a whole batch even if one operation fails to start
	setupCoopTaskrun = 1 << 8 // no interrupt to run completions: Run collects them itself
)

// New sets up a ring for batches of up to entries operations. Where the
// kernel has no io_uring, refuses it (kernel.io_uring_disabled, a seccomp
// filter) or lacks send and receive, its error wraps ErrUnavailable.
func New(entries int) (*Ring, error) {
	var p params
	p.flags = setupSubmitAll | setupCoopTaskrun
	fd, _, errno := syscall.RawSyscall(sysSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno == syscall.EINVAL {
		// Before Linux 5.19 the flags are refused; the defaults work too.
		p = params{}
		fd, _, errno = syscall.RawSyscall(sysSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	}
	switch errno {
	case 0:
	case syscall.ENOSYS, syscall.EPERM, syscall.EACCES:
		return nil, fmt.Errorf("%w: io_uring_setup: %w", ErrUnavailable, errno)
	default:
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &Ring{fd: int(fd)}
	if p.features&featSingleMmap == 0 {
		r.Close()
		return nil, fmt.Errorf("%w: the kernel is too old (before Linux 5.4)", ErrUnavailable)
	}
	if err := r.supports(opSend, opRecv); err != nil {
		r.Close()
		return nil, err
	}
	size := max(p.sqOff[6]+p.sqEntries*4, p.cqOff[5]+p.cqEntries*uint32(unsafe.Sizeof(cqe{})))
	var err error
	if r.rings, err = syscall.Mmap(r.fd, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		r.Close()
		return nil, fmt.Errorf("io_uring mmap: %w", err)
	}
	if r.sqeMem, err = syscall.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		r.Close()
		return nil, fmt.Errorf("io_uring mmap: %w", err)
	}
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&r.rings[off])) }
	r.sqHead, r.sqTail, r.sqMask = at(p.sqOff[0]), at(p.sqOff[1]), *at(p.sqOff[2])
	r.cqHead, r.cqTail, r.cqMask = at(p.cqOff[0]), at(p.cqOff[1]), *at(p.cqOff[2])
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqes = unsafe.Slice((*cqe)(unsafe.Pointer(&r.rings[p.cqOff[5]])), p.cqEntries)
	// Slot i of the submission array always names entry i: entries are
	// used in ring order.
	array := unsafe.Slice((*uint32)(unsafe.Pointer(&r.rings[p.sqOff[6]])), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.entries = int(p.sqEntries)
	return r, nil
}

// supports checks that the kernel knows the operations: send and receive
// came in Linux 5.6, after io_uring itself.
func (r *Ring) supports(opcodes ...uint8) error {
	var probe struct {
		lastOp, opsLen uint8
		_              uint16
		_              [3]uint32
		ops            [256]struct {
			op, _ uint8
			flags uint16
			_     uint32
		}
	}
	if _, _, errno := syscall.Syscall6(sysRegister, uintptr(r.fd), registerProbe, uintptr(unsafe.Pointer(&probe)), uintptr(len(probe.ops)), 0, 0); errno != 0 {
		return fmt.Errorf("%w: the kernel is too old to list its operations (before Linux 5.6): %w", ErrUnavailable, errno)
	}
	for _, op := range opcodes {
		if op > probe.lastOp || probe.ops[op].flags&opSupported == 0 {
			return fmt.Errorf("%w: the kernel has no operation %d (send and receive came in Linux 5.6)", ErrUnavailable, op)
		}
	}
	return nil
}

// Cap is the most operations Run takes at once.
func (r *Ring) Cap() int { return r.entries }

// Run submits ops and returns once every one has completed, with ops[i]'s
// result in res[i]: bytes moved, or -errno (-EAGAIN: the socket had
// nothing to read, or no room to write). The memory the operations name
// must stay untouched until then. After an error the ring is unusable:
// the operations the kernel never took have -ECANCELED, those it took
// without Run seeing the outcome Unknown, and every later Run fails
// without submitting anything.
func (r *Ring) Run(ops []Op, res []int32) error {
	if len(ops) > r.entries || len(res) < len(ops) {
		return fmt.Errorf("io_uring: %d operations, %d results, room for %d", len(ops), len(res), r.entries)
	}
	for i := range ops {
		res[i] = -int32(syscall.ECANCELED)
	}
	if r.broken != nil {
		return r.broken
	}
	tail := atomic.LoadUint32(r.sqTail)
	for i, op := range ops {
		r.sqes[(tail+uint32(i))&r.sqMask] = sqe{
			opcode:   op.opcode,
			fd:       op.fd,
			addr:     uint64(uintptr(op.addr)),
			len:      op.len,
			msgFlags: op.flags,
			userData: uint64(i),
		}
	}
	atomic.StoreUint32(r.sqTail, tail+uint32(len(ops)))
	// The kernel moves the submission head past what it takes.
	taken := func() int { return int(atomic.LoadUint32(r.sqHead) - tail) }
	for done := 0; done < len(ops); {
		_, _, errno := syscall.Syscall6(sysEnter, uintptr(r.fd), uintptr(len(ops)-taken()), uintptr(len(ops)-done), enterGetEvents, 0, 0)
		head, ctail := atomic.LoadUint32(r.cqHead), atomic.LoadUint32(r.cqTail)
		for ; head != ctail; head++ {
			c := r.cqes[head&r.cqMask]
			res[c.userData] = c.res
			done++
		}
		atomic.StoreUint32(r.cqHead, head)
		if errno != 0 && errno != syscall.EINTR && done < len(ops) {
			r.broken = fmt.Errorf("io_uring_enter: %w", errno)
			for i := range taken() {
				if res[i] == -int32(syscall.ECANCELED) {
					res[i] = Unknown // taken, outcome not seen
				}
			}
			return r.broken
		}
	}
	return nil
}

// Close releases the ring.
func (r *Ring) Close() {
	if r.sqeMem != nil {
		syscall.Munmap(r.sqeMem)
	}
	if r.rings != nil {
		syscall.Munmap(r.rings)
	}
	syscall.Close(r.fd)
}
