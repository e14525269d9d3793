package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// readers are the loops that read every subscriber, each waiting on its own
// epoll instance for a shard of the sockets (see the package comment for
// why not a goroutine per subscriber).
type readers struct {
	loops []*readLoop
	wg    sync.WaitGroup
	// stopR and stopW are a pipe whose read end is in every loop's epoll:
	// closing the write end makes it readable for good, which wakes every
	// loop at once.
	stopR, stopW int
}

// readLoop is one epoll instance and the subscribers in it, by socket.
type readLoop struct {
	epfd int
	subs []*subscriber // by socket; nil once removed
}

// startReaders shares subs among n loops and starts them. Deliveries are
// recorded in the subscribers and tr, ended connections in down.
func startReaders(subs []*subscriber, n int, pause time.Duration, tr *tracker, down *failures) (*readers, error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	rd := &readers{stopR: p[0], stopW: p[1]}
	for range min(n, len(subs)) {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			rd.closeFDs()
			return nil, fmt.Errorf("epoll_create1: %w", err)
		}
		l := &readLoop{epfd: epfd}
		rd.loops = append(rd.loops, l)
		if err := l.watch(rd.stopR); err != nil {
			rd.closeFDs()
			return nil, err
		}
	}
	for i, s := range subs {
		l := rd.loops[i%len(rd.loops)]
		if err := l.watch(s.fd); err != nil {
			rd.closeFDs()
			return nil, err
		}
		if s.fd >= len(l.subs) {
			l.subs = append(l.subs, make([]*subscriber, s.fd+1-len(l.subs))...)
		}
		l.subs[s.fd] = s
	}
	for _, l := range rd.loops {
		rd.wg.Go(func() {
			defer l.close()
			l.run(rd.stopR, pause, tr, down)
		})
	}
	return rd, nil
}

// watch adds fd to the loop's epoll, edge-triggered: the socket is reported
// when data arrives, and not polled again on every wait after that, as a
// level-triggered one would be.
func (l *readLoop) watch(fd int) error {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLET&(1<<32-1), Fd: int32(fd)}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// run reads the loop's sockets until stopFd becomes readable. After a pass
// over the ready sockets it sleeps for pause, so that the sockets that
// become readable meanwhile are read in one pass rather than each waking
// the loop: the wake-up is a cross-CPU interrupt that the server's write
// pays for. Delays are measured at the read, so they include that wait. A
// pass that filled the event buffer goes on at once: more are waiting.
func (l *readLoop) run(stopFd int, pause time.Duration, tr *tracker, down *failures) {
	// The frames that came with the hello go first.
	at := tr.now()
	for _, s := range l.subs {
		if s == nil {
			continue
		}
		if err := s.handle(nil, at, tr); err != nil {
			l.remove(s, err, tr, down)
		}
	}
	events := make([]syscall.EpollEvent, 1024)
	buf := make([]byte, 64<<10)
	ready := make([]int32, 0, len(events))
	for {
		n, err := syscall.EpollWait(l.epfd, events, -1)
		if errors.Is(err, syscall.EINTR) {
			continue // a signal, such as the runtime's preemption
		}
		if err != nil {
			for _, s := range l.subs {
				if s != nil {
					l.remove(s, fmt.Errorf("epoll_wait: %w", err), tr, down)
				}
			}
			return
		}
		ready = ready[:0]
		for _, ev := range events[:n] {
			if int(ev.Fd) == stopFd {
				return
			}
			if l.subs[ev.Fd] != nil {
				ready = append(ready, ev.Fd)
			}
		}
		l.receive(ready, buf, tr, down)
		if pause > 0 && n < len(events) {
			ts := syscall.NsecToTimespec(int64(pause))
			syscall.Nanosleep(&ts, nil)
		}
	}
}

// read reads what s has with read(2). Edge-triggered, it must leave
// nothing behind: a read that does not fill buf took all there was, and
// data that arrives after it is reported again.
func (l *readLoop) read(s *subscriber, buf []byte, tr *tracker, down *failures) {
	for {
		n, err := syscall.Read(s.fd, buf)
		// One clock reading per read rather than per wait, so a loop busy
		// with other sockets does not shorten the delays.
		if !l.took(s, buf, n, err, tr.now(), tr, down) {
			return
		}
	}
}

// receive reads what the subscribers on fds have, each to the end.
func (l *readLoop) receive(fds []int32, buf []byte, tr *tracker, down *failures) {
	for _, fd := range fds {
		l.read(l.subs[fd], buf, tr, down)
	}
}

// took handles one read of s into buf at time at: n bytes, or err. It
// reports whether s may have more: the read was interrupted or filled buf.
func (l *readLoop) took(s *subscriber, buf []byte, n int, err error, at int64, tr *tracker, down *failures) bool {
	switch {
	case errors.Is(err, syscall.EINTR):
		return true
	case errors.Is(err, syscall.EAGAIN):
		return false
	case err != nil:
		l.remove(s, fmt.Errorf("read: %w", err), tr, down)
		return false
	case n == 0:
		l.remove(s, io.EOF, tr, down)
		return false
	}
	if err := s.handle(buf[:n], at, tr); err != nil {
		l.remove(s, err, tr, down)
		return false
	}
	return n == len(buf)
}

// remove takes an ended subscriber out of the loop. Its socket stays open,
// so the number is not reused while the loops run, until closeAll.
func (l *readLoop) remove(s *subscriber, err error, tr *tracker, down *failures) {
	syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, s.fd, nil)
	l.subs[s.fd] = nil
	s.end(err, tr, down)
}

// stop wakes every loop to return and waits, at most timeout, for them;
// false if some did not return.
func (rd *readers) stop(timeout time.Duration) bool {
	syscall.Close(rd.stopW)
	done := make(chan struct{})
	go func() {
		rd.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		syscall.Close(rd.stopR)
		return true
	case <-time.After(timeout):
		return false
	}
}

// close releases the loop's epoll instance.
func (l *readLoop) close() { syscall.Close(l.epfd) }

// closeFDs closes the pipe and epoll instances of loops that never
// started.
func (rd *readers) closeFDs() {
	for _, l := range rd.loops {
		l.close()
	}
	syscall.Close(rd.stopR)
	syscall.Close(rd.stopW)
}

// takeSocket returns a duplicate of conn's socket descriptor, which like
// the original is non-blocking, and closes conn. From then on the duplicate
// alone holds the connection, and closing conn took the socket out of the
// runtime's netpoller, which would otherwise be woken by every message too.
func takeSocket(conn net.Conn) (int, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return 0, fmt.Errorf("%T has no socket to read", conn)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	fd, dupErr := -1, error(nil)
	if err := rc.Control(func(f uintptr) { fd, dupErr = syscall.Dup(int(f)) }); err != nil {
		return 0, err
	}
	if dupErr != nil {
		return 0, fmt.Errorf("dup: %w", dupErr)
	}
	conn.Close()
	return fd, nil
}

// writeFrame sends one short masked frame without waiting: the socket is
// non-blocking, and a send buffer without room for a few bytes means the
// server has stopped reading, which ends the subscriber.
func (s *subscriber) writeFrame(op byte, payload []byte) error {
	frame := maskedFrame(op, payload)
	n, err := syscall.Write(s.fd, frame)
	if err == nil && n < len(frame) {
		err = io.ErrShortWrite
	}
	return err
}

// close sends a normal close frame, if the socket has room for it, and
// closes the socket.
func (s *subscriber) close() {
	s.writeFrame(opClose, []byte{0x03, 0xE8}) // status 1000, normal closure
	syscall.Close(s.fd)
}
