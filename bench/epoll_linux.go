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
	subs map[int32]*subscriber
}

// startReaders shares subs among n loops and starts them. Deliveries are
// recorded in the subscribers and tr, ended connections in down.
func startReaders(subs []*subscriber, n int, tr *tracker, down *failures) (*readers, error) {
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
		l := &readLoop{epfd: epfd, subs: make(map[int32]*subscriber, len(subs)/n+1)}
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
		l.subs[int32(s.fd)] = s
	}
	for _, l := range rd.loops {
		rd.wg.Go(func() {
			defer syscall.Close(l.epfd)
			l.run(rd.stopR, tr, down)
		})
	}
	return rd, nil
}

// watch adds fd to the loop's epoll, level-triggered: a socket with unread
// data is reported on every wait, so one read per report is enough and a
// read that only returns EAGAIN is never needed.
func (l *readLoop) watch(fd int) error {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// run reads the loop's sockets until stopFd becomes readable.
func (l *readLoop) run(stopFd int, tr *tracker, down *failures) {
	// The frames that came with the hello go first.
	at := tr.now()
	for _, s := range l.subs {
		if err := s.handle(nil, at, tr); err != nil {
			l.remove(s, err, tr, down)
		}
	}
	events := make([]syscall.EpollEvent, 1024)
	buf := make([]byte, 64<<10)
	for {
		ready, err := syscall.EpollWait(l.epfd, events, -1)
		if errors.Is(err, syscall.EINTR) {
			continue // a signal, such as the runtime's preemption
		}
		if err != nil {
			for _, s := range l.subs {
				l.remove(s, fmt.Errorf("epoll_wait: %w", err), tr, down)
			}
			return
		}
		for _, ev := range events[:ready] {
			if int(ev.Fd) == stopFd {
				return
			}
			s := l.subs[ev.Fd]
			n, err := syscall.Read(s.fd, buf)
			switch {
			case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR):
				// Reported but nothing to read after all; the next wait
				// reports it again if there is.
			case err != nil:
				l.remove(s, fmt.Errorf("read: %w", err), tr, down)
			case n == 0:
				l.remove(s, io.EOF, tr, down)
			default:
				// One clock reading per read rather than per wait, so a
				// loop busy with other sockets does not shorten the delays.
				if err := s.handle(buf[:n], tr.now(), tr); err != nil {
					l.remove(s, err, tr, down)
				}
			}
		}
	}
}

// remove takes an ended subscriber out of the loop. Its socket stays open,
// so the number is not reused while the loops run, until closeAll.
func (l *readLoop) remove(s *subscriber, err error, tr *tracker, down *failures) {
	syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, s.fd, nil)
	delete(l.subs, int32(s.fd))
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

// closeFDs closes the pipe and epoll instances of loops that never started.
func (rd *readers) closeFDs() {
	for _, l := range rd.loops {
		syscall.Close(l.epfd)
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
