// Command bench is a load tool for the incidents server's real-time stream.
//
//	go run ./bench fanout -url http://127.0.0.1:8080 -subscribers 10000 -rate 10 -duration 30s -pid <server pid>
//	go run ./bench fanout -scenario a -pid <server pid>   # 10,000 subscribers, 10 events/s, 30 s
//	go run ./bench fanout -scenario b -pid <server pid>   # 100 subscribers, 500 events/s, 20 s
//	go run ./bench memory -url http://127.0.0.1:8080 -pid <server pid>
//
// memory (memory.go) reports large incidents, then lists and replays them
// from several clients at once, and reports the server's peak RSS.
// fanout opens many WebSocket subscribers on /api/v1/ws, waits until they
// are idle, then creates incidents with POST /api/v1/incidents at a fixed
// rate. For every event and subscriber it measures the delay from the POST
// response arriving to the "added" frame arriving at the subscriber, and it
// checks that every subscriber got every event exactly once. With -pid it
// also reads the server's resident memory from /proc.
//
// Assumptions and limits:
//   - The tool runs on Linux only. The subscribers are read by a few reader
//     loops (-readers, default GOMAXPROCS), each waiting on one epoll
//     instance for a shard of the sockets, rather than by a goroutine each:
//     with a goroutine per subscriber every message cost a read, a second
//     read that returned EAGAIN, and parking and waking the goroutine, which
//     at 10,000 subscribers took about 75% of a core from the machine the
//     server shares. The epoll is edge-triggered, and a read that does not
//     fill the buffer took everything, so one read per socket and message
//     suffices. After a pass that did not fill its event buffer a loop
//     sleeps for -read-pause (1 ms): a loop that sleeps in epoll_wait
//     instead is woken by the server's write, a cross-CPU wake-up that took
//     about a fifth of the server's CPU on the measured VM. The delays are
//     measured at the read, so they include up to that pause.
//   - The loops read the TCP socket itself, so -url must be http://: there is
//     no TLS layer to read through. The server sends each message as one
//     unmasked frame; a fragmented message ends its subscriber.
//   - The tool should be the only writer of incidents during a run: events
//     are matched to POSTs by incident id, and incidents created by others
//     are ignored (or, if there are very many, push ids out of the tracking
//     window, which is reported).
//   - All subscribers connect from one source address to one server port, so
//     each needs its own ephemeral port: 10,000 fit in Linux's default range
//     (32768-60999, about 28,000 ports). Closed connections linger in
//     TIME_WAIT on the client side for a minute; Linux reuses them for new
//     loopback connections (net.ipv4.tcp_tw_reuse=2, the default).
//   - Each subscriber is one socket, so the open file limit must exceed the
//     subscriber count; the tool raises its soft limit to the hard limit.
//     After the handshake the subscriber keeps a duplicate of the socket's
//     descriptor and closes the net.Conn: that takes the socket out of the
//     Go runtime's netpoller, which would otherwise wake for every message
//     too, with nobody to read it.
//   - client_cpu and server_cpu are percentages of one core (the server's
//     read from /proc assuming the usual 100 clock ticks per second, and
//     without PostgreSQL); machine_cpu_busy is of all cores, every process.
//     The tool shares the machine with the server: when machine_cpu_busy is
//     near 100%, the delays include waiting for a CPU on both sides.
//   - A delivery can arrive before the POST response (the server commits,
//     then PostgreSQL notifies the stream while the response is on its way);
//     its delay counts as 0 and it is counted in
//     delivered_before_post_response.
//   - event_first_delivery and event_last_delivery are, per event, the delay
//     (from the POST response, like every delay here) to the first and to
//     the last subscriber that got it. The first is about the server's path
//     from the commit through the notification to the start of the fan-out
//     (a delivery that overtook the response counts 0, so it understates
//     that path by up to the response's own way back); the gap between them
//     is the fan-out. Subscribers that never got an event count in lost.
//   - RSS includes memory the Go runtime has freed but not yet returned to
//     the OS, so measure on a freshly started server.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) >= 2 && os.Args[1] == "memory" {
		if err := runMemory(os.Args[2:]); err != nil && !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) < 2 || os.Args[1] != "fanout" {
		fmt.Fprintln(os.Stderr, "usage: bench fanout|memory [flags]   (bench fanout -h for the flags)")
		os.Exit(2)
	}
	opts, err := parseOptions(os.Args[2:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	res, err := runFanout(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	res.print(os.Stdout)
	if !res.passed() {
		os.Exit(1)
	}
}

// options are the fanout flags.
type options struct {
	url         string
	subscribers int
	rate        float64
	duration    time.Duration
	pid         int
	readers     int
	readPause   time.Duration

	connectConcurrency int
	maxInflight        int
	settle             time.Duration
	drain              time.Duration
	timeout            time.Duration
	cpuProfile         string
}

// scenarios are the presets -scenario selects; flags given explicitly win.
var scenarios = map[string]struct {
	subscribers int
	rate        float64
	duration    time.Duration
}{
	"a": {10000, 10, 30 * time.Second}, // many idle subscribers, few events
	"b": {100, 500, 20 * time.Second},  // few subscribers, many events
}

func parseOptions(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench fanout", flag.ContinueOnError)
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8080", "base URL of the server")
	fs.IntVar(&o.subscribers, "subscribers", 100, "WebSocket subscribers to open")
	fs.Float64Var(&o.rate, "rate", 10, "incidents to create per second")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to create incidents")
	fs.IntVar(&o.pid, "pid", 0, "server process id, to report its RSS and CPU from /proc (0: skip)")
	fs.IntVar(&o.readers, "readers", runtime.GOMAXPROCS(0), "epoll loops that read the subscribers")
	fs.DurationVar(&o.readPause, "read-pause", time.Millisecond, "how long a reader loop sleeps after each pass over its ready sockets (0: none)")
	scenario := fs.String("scenario", "", "preset: a = 10000 subscribers, 10/s, 30s; b = 100 subscribers, 500/s, 20s (explicit flags win)")
	fs.IntVar(&o.connectConcurrency, "connect-concurrency", 200, "WebSocket handshakes in flight at once")
	fs.IntVar(&o.maxInflight, "max-inflight", 64, "POSTs in flight at once; a POST due while all are busy is skipped and counted")
	fs.DurationVar(&o.settle, "settle", 2*time.Second, "idle time after the last subscriber connects, before measuring RSS and starting the load")
	fs.DurationVar(&o.drain, "drain", 5*time.Second, "how long to wait for late deliveries after the last POST")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "timeout of one handshake or one POST")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write this tool's CPU profile of the load phase to this file (to see whether the client is the bottleneck)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *scenario != "" {
		sc, ok := scenarios[*scenario]
		if !ok {
			return o, fmt.Errorf("-scenario must be a or b, not %q", *scenario)
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["subscribers"] {
			o.subscribers = sc.subscribers
		}
		if !set["rate"] {
			o.rate = sc.rate
		}
		if !set["duration"] {
			o.duration = sc.duration
		}
	}
	switch {
	case o.subscribers < 1 || o.subscribers > 60000:
		return o, errors.New("-subscribers must be from 1 to 60000")
	case !(o.rate > 0 && o.rate <= 10000):
		return o, errors.New("-rate must be above 0 and at most 10000")
	case o.duration <= 0 || o.duration > time.Hour:
		return o, errors.New("-duration must be above 0 and at most 1h")
	case o.connectConcurrency < 1 || o.maxInflight < 1 || o.readers < 1:
		return o, errors.New("-connect-concurrency, -max-inflight and -readers must be at least 1")
	case o.settle < 0 || o.drain < 0 || o.timeout <= 0:
		return o, errors.New("-settle and -drain must not be negative, -timeout must be positive")
	case o.readPause < 0 || o.readPause > time.Second:
		return o, errors.New("-read-pause must be from 0 to 1s")
	}
	u, err := url.Parse(o.url)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return o, fmt.Errorf("-url must be an http:// URL (the subscribers' sockets are read without TLS), not %q", o.url)
	}
	o.url = strings.TrimRight(o.url, "/")
	return o, nil
}

// tracker is the state the poster and every subscriber share. Incidents are
// identified by id; ids above base (the id of a warm-up incident created
// before the run) map to a slot in a fixed window.
type tracker struct {
	t0   time.Time
	base int64
	// posted holds, per slot, when the POST response for that incident
	// arrived, in nanoseconds since t0 (monotonic); 0 while unknown.
	posted []atomic.Int64
	// sent holds, per slot, when that incident's POST started.
	sent []atomic.Int64
	// delivered counts first receipts of ids in the window, for the
	// straggler wait.
	delivered atomic.Int64
	// stopping is set before the tool closes the subscribers, so their read
	// errors from then on are not counted as disconnects.
	stopping atomic.Bool
}

func (t *tracker) now() int64 { return int64(time.Since(t.t0)) }

// slot returns the window slot of incident id, or -1 outside the window.
func (t *tracker) slot(id int64) int {
	s := id - t.base - 1
	if s < 0 || s >= int64(len(t.posted)) {
		return -1
	}
	return int(s)
}

// failures counts errors of one kind and keeps the first few.
type failures struct {
	mu    sync.Mutex
	n     int
	first []string
}

func (f *failures) add(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if len(f.first) < 5 {
		f.first = append(f.first, fmt.Sprintf(format, args...))
	}
}

func (f *failures) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// subscriber is one WebSocket connection after its hello. It is owned by
// the reader loop it is in until the loops stop.
type subscriber struct {
	// fd is the socket, non-blocking. It stays open when the connection
	// ends, so its number is not reused while a loop runs; closeAll closes
	// it.
	fd int
	// pending holds the start of a frame whose end has not arrived yet; at
	// first, the frames that came with the hello.
	pending []byte

	seen    []uint64 // bitmap of received "added" ids, by slot
	lastSeq int64    // highest seq received, from the hello on
	delays  []uint32 // µs from POST response to receipt, when the POST time was known at receipt
	slots   []int32  // the window slot of each of delays
	early   []receipt
	lastAt  int64 // ns since t0 of the last receipt in the window

	duplicates int // an id's "added" received again
	outOfOrder int // a seq not above the previous one
	outside    int // "added" ids above the window
	fallbacks  int // frames the fast decoder left to encoding/json
	err        error
}

// receipt is an "added" frame that arrived before its POST response had been
// recorded (the event can overtake the HTTP response); resolved after the run.
type receipt struct {
	slot int32
	at   int64
}

// handle processes data read from the socket at time at: the complete
// frames in it, after any partial frame left by earlier reads. data may be
// overwritten once handle returns. An error, errClosed for a close frame,
// ends the subscriber.
func (s *subscriber) handle(data []byte, at int64, tr *tracker) error {
	if len(s.pending) > 0 {
		s.pending = append(s.pending, data...)
		data = s.pending
	}
	for {
		f, n, err := parseFrame(data)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		data = data[n:]
		switch f.op {
		case opText, opBinary:
			s.receive(f.payload, at, tr)
		case opPing:
			if err := s.writeFrame(opPong, f.payload); err != nil {
				return fmt.Errorf("write pong: %w", err)
			}
		case opPong:
		case opClose:
			return errClosed
		default:
			return fmt.Errorf("frame with opcode %#x from the server", f.op)
		}
	}
	// Copied, since data is the loop's read buffer or pending itself (then
	// the copy moves the rest to the front).
	s.pending = append(s.pending[:0], data...)
	return nil
}

// receive records one message that arrived at time at.
func (s *subscriber) receive(msg []byte, at int64, tr *tracker) {
	ev, fast := decodeEvent(msg)
	if !fast {
		s.fallbacks++
	}
	if ev.Seq > 0 {
		if ev.Seq <= s.lastSeq {
			s.outOfOrder++
		} else {
			s.lastSeq = ev.Seq
		}
	}
	if ev.Type != "added" {
		return // resolved, and types added later
	}
	slot := tr.slot(ev.Data.ID)
	if slot < 0 {
		if ev.Data.ID > tr.base {
			s.outside++
		}
		return
	}
	word, bit := slot/64, uint64(1)<<(slot%64)
	if s.seen[word]&bit != 0 {
		s.duplicates++
		return
	}
	s.seen[word] |= bit
	s.lastAt = at
	tr.delivered.Add(1)
	if p := tr.posted[slot].Load(); p != 0 {
		s.delays = append(s.delays, micros(at-p))
		s.slots = append(s.slots, int32(slot))
	} else {
		s.early = append(s.early, receipt{int32(slot), at})
	}
}

// end records why the subscriber's connection ended, unless the tool is
// closing it.
func (s *subscriber) end(err error, tr *tracker, down *failures) {
	if tr.stopping.Load() {
		return
	}
	s.err = err
	if errors.Is(err, io.EOF) {
		err = errors.New("EOF (the connection was closed)")
	}
	down.add("%s", err)
}

// event is the part of a stream message the tool needs.
type event struct {
	Type string    `json:"type"`
	Seq  int64     `json:"seq"`
	Data eventData `json:"data"`
}

// eventData is the part of the incident an event carries that the tool needs.
type eventData struct {
	ID int64 `json:"id"`
}

// decodeEvent reads type, seq and data.id. The server writes
// {"type":"...","seq":N,...,"data":{"id":N,...},...} (jsonb puts the
// shortest key, "id", first), so a byte scan handles every frame in
// practice; anything else goes to encoding/json, and fast reports which path
// was taken. In JSON text a quote inside a string is escaped, so the first
// `,"data":{"id":` is the top-level key unless an earlier top-level value is
// an object holding a "data" object; the server's actor and created_at are
// not.
func decodeEvent(msg []byte) (ev event, fast bool) {
	if ev, ok := scanEvent(msg); ok {
		return ev, true
	}
	ev = event{}
	_ = json.Unmarshal(msg, &ev) // a frame that is not an event decodes to zero values
	return ev, false
}

func scanEvent(b []byte) (event, bool) {
	var ev event
	b, ok := bytes.CutPrefix(b, []byte(`{"type":"`))
	if !ok {
		return ev, false
	}
	end := bytes.IndexByte(b, '"')
	if end < 0 || bytes.IndexByte(b[:end], '\\') >= 0 {
		return ev, false
	}
	ev.Type = string(b[:end])
	if b, ok = bytes.CutPrefix(b[end+1:], []byte(`,"seq":`)); !ok {
		return ev, false
	}
	if ev.Seq, b, ok = scanInt(b); !ok {
		return ev, false
	}
	if bytes.Equal(b, []byte("}")) {
		return ev, true // no data, like hello
	}
	const dataKey = `,"data":{"id":`
	at := bytes.Index(b, []byte(dataKey))
	if at < 0 || bytes.Contains(b[:at], []byte("{")) {
		return ev, false
	}
	if ev.Data.ID, b, ok = scanInt(b[at+len(dataKey):]); !ok || len(b) == 0 || (b[0] != ',' && b[0] != '}') {
		return ev, false
	}
	return ev, true
}

// scanInt reads a non-negative JSON integer and returns the rest.
func scanInt(b []byte) (int64, []byte, bool) {
	i := 0
	for i < len(b) && i < 18 && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == 0 || i == 18 || (b[0] == '0' && i > 1) {
		return 0, b, false
	}
	n, err := strconv.ParseInt(string(b[:i]), 10, 64)
	return n, b[i:], err == nil
}

// micros converts a non-negative duration in ns to µs, saturating.
func micros(ns int64) uint32 {
	if ns <= 0 {
		return 0
	}
	return uint32(min(ns/1000, math.MaxUint32))
}

// result is everything the summary reports.
type result struct {
	opts options

	connected       int
	connectErrors   failures
	connectTime     time.Duration
	postTarget      int
	posted          int
	postErrors      failures
	skipped         int
	postTime        time.Duration // from the first tick to the last POST response
	postedOutside   int
	postLatency     []uint32 // µs
	loadTime        time.Duration
	expected        int64
	received        int64
	lost            int64
	lostOnConnected int64
	duplicates      int
	outOfOrder      int
	beforeResponse  int
	outsideWindow   int
	fallbacks       int
	delays          []uint32 // µs from the POST response, sorted
	delaysFromStart []uint32 // µs from the POST start, sorted
	// firstDelays and lastDelays are, per event, the delay to its first and
	// to its last subscriber (µs, sorted): the server's path from commit to
	// fan-out, and the fan-out itself.
	firstDelays, lastDelays []uint32
	deliveryTime            time.Duration
	disconnects             failures
	clientCPU               float64
	machineBusy             float64  // percent of all cores, -1 unknown
	machineIdleBusy         float64  // the same during the settle time, before the load
	serverCPU               float64  // -1: not measured
	rss                     [3]int64 // KiB before connecting, connected and idle, at the end; -1 unknown
}

func (r *result) passed() bool {
	return r.lost == 0 && r.duplicates == 0 && r.outOfOrder == 0 && r.disconnects.count() == 0 &&
		r.connectErrors.count() == 0 && r.postErrors.count() == 0 && r.posted > 0
}

func runFanout(o options) (*result, error) {
	// A handshake holds two descriptors for a moment, in takeSocket.
	if err := raiseFileLimit(o.subscribers + o.connectConcurrency + o.maxInflight + o.readers + 64); err != nil {
		return nil, err
	}
	warnPortRange(o.subscribers + o.maxInflight)

	r := &result{opts: o, serverCPU: -1, rss: [3]int64{-1, -1, -1}}
	r.postTarget = int(math.Round(o.rate * o.duration.Seconds()))
	client := &http.Client{
		Timeout: o.timeout,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: o.timeout}).DialContext,
			MaxIdleConns:        o.maxInflight,
			MaxIdleConnsPerHost: o.maxInflight,
			IdleConnTimeout:     time.Minute,
		},
	}
	defer client.CloseIdleConnections()

	// A warm-up incident checks that POST works and fixes the id base: this
	// run's incidents have higher ids.
	tr := &tracker{t0: time.Now()}
	base, _, err := postIncident(client, tr, o.url, 0)
	if err != nil {
		return nil, fmt.Errorf("warm-up POST /api/v1/incidents: %w", err)
	}
	tr.base = base
	// Room for this run's incidents and as many again from other writers.
	window := 2*r.postTarget + 1024
	tr.posted, tr.sent = make([]atomic.Int64, window), make([]atomic.Int64, window)

	r.rss[0] = readRSS(o.pid)
	logf(tr, "server RSS before subscribers: %s", kib(r.rss[0]))

	subs, err := connectAll(o, tr, r, window)
	if err != nil {
		return nil, err
	}
	readers, err := startReaders(subs, o.readers, o.readPause, tr, &r.disconnects)
	if err != nil {
		for _, s := range subs {
			s.close()
		}
		return nil, err
	}
	logf(tr, "reading them with %d epoll loops", len(readers.loops))

	settle0 := readMachineCPU()
	time.Sleep(o.settle)
	r.machineIdleBusy = settle0.busySince()
	r.rss[1] = readRSS(o.pid)
	logf(tr, "server RSS with %d idle subscribers: %s", len(subs), kib(r.rss[1]))

	logf(tr, "creating %d incidents at %g/s", r.postTarget, o.rate)
	clientCPU0, serverCPU0, machine0 := clientCPUTime(), serverCPUTime(o.pid), readMachineCPU()
	stopProfile, err := startCPUProfile(o.cpuProfile)
	if err != nil {
		tr.stopping.Store(true)
		closeAll(subs, readers)
		return nil, err
	}
	loadStart := tr.now()
	runLoad(o, tr, r, client)
	waitDeliveries(o, tr, r, len(subs))
	stopProfile()
	r.loadTime = time.Duration(tr.now() - loadStart)
	r.clientCPU = percent(clientCPUTime()-clientCPU0, r.loadTime)
	r.machineBusy = machine0.busySince()
	if serverCPU0 >= 0 {
		if t := serverCPUTime(o.pid); t >= 0 {
			r.serverCPU = percent(t-serverCPU0, r.loadTime)
		}
	}
	r.rss[2] = readRSS(o.pid)

	tr.stopping.Store(true)
	if !closeAll(subs, readers) {
		return nil, errors.New("some reader loops did not stop")
	}
	r.analyze(tr, subs, loadStart)
	return r, nil
}

// startCPUProfile starts profiling this process to path, if set, and
// returns the function that stops it.
func startCPUProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// connectAll opens o.subscribers WebSockets, o.connectConcurrency at a time,
// and waits for each one's hello: once it arrives the server has registered
// the subscriber, so it gets every event published afterwards.
func connectAll(o options, tr *tracker, r *result, window int) ([]*subscriber, error) {
	wsURL := "ws" + strings.TrimPrefix(o.url, "http") + "/api/v1/ws"
	var (
		mu      sync.Mutex
		subs    []*subscriber
		errs    = &r.connectErrors
		next    atomic.Int64
		workers sync.WaitGroup
	)
	start := time.Now()
	logf(tr, "connecting %d subscribers to %s, %d at a time", o.subscribers, wsURL, o.connectConcurrency)
	for range min(o.connectConcurrency, o.subscribers) {
		workers.Go(func() {
			for next.Add(1) <= int64(o.subscribers) {
				s, err := dial(wsURL, o.url, o.timeout)
				if err != nil {
					errs.add("%s", err)
					continue
				}
				s.seen = make([]uint64, (window+63)/64)
				s.delays = make([]uint32, 0, r.postTarget)
				s.slots = make([]int32, 0, r.postTarget)
				mu.Lock()
				subs = append(subs, s)
				n := len(subs)
				mu.Unlock()
				if n%2000 == 0 {
					logf(tr, "  %d connected", n)
				}
			}
		})
	}
	workers.Wait()
	r.connectTime = time.Since(start)
	r.connected = len(subs)
	logf(tr, "%d subscribers connected in %s, %d failed", len(subs), r.connectTime.Round(time.Millisecond), errs.n)
	for _, e := range errs.first {
		logf(tr, "  connect error: %s", e)
	}
	if len(subs) == 0 {
		return nil, errors.New("no subscriber could connect")
	}
	return subs, nil
}

// dial opens one WebSocket, reads its hello and readies the subscriber for
// a reader loop.
func dial(wsURL, origin string, timeout time.Duration) (*subscriber, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ws, err := dialWS(ctx, wsURL, origin)
	if err != nil {
		return nil, err
	}
	ws.conn.SetReadDeadline(time.Now().Add(timeout))
	msg, err := ws.readHello()
	if err != nil {
		ws.conn.Close()
		return nil, fmt.Errorf("read hello: %w", err)
	}
	hello, _ := decodeEvent(msg)
	if hello.Type != "hello" {
		ws.conn.Close()
		return nil, fmt.Errorf("first message is not a hello: %.200s", msg)
	}
	// Frames that arrived with the hello are in the bufio.Reader; the loop
	// parses them before it reads the socket.
	buffered, _ := ws.br.Peek(ws.br.Buffered())
	s := &subscriber{lastSeq: hello.Seq, pending: bytes.Clone(buffered)}
	if s.fd, err = takeSocket(ws.conn); err != nil {
		ws.conn.Close()
		return nil, err
	}
	return s, nil
}

// closeAll stops the reader loops, waiting at most 10 s, then closes every
// subscriber; false if some loop did not stop. The loops stop first: they
// read the descriptors, whose numbers closing frees for reuse.
func closeAll(subs []*subscriber, readers *readers) bool {
	stopped := readers.stop(10 * time.Second)
	for _, s := range subs {
		s.close()
	}
	return stopped
}

// runLoad creates r.postTarget incidents at o.rate, open loop: on every
// tick it starts the POSTs that are due by the clock, so a late tick (a busy
// CPU) is caught up rather than lost. Each POST runs in its own goroutine so
// a slow response does not hold up the next; at most o.maxInflight run at
// once, and a POST that is due when none is free is skipped and counted: the
// server is not keeping up with the rate.
func runLoad(o options, tr *tracker, r *result, client *http.Client) {
	var (
		mu       sync.Mutex
		inflight sync.WaitGroup
		sem      = make(chan struct{}, o.maxInflight)
	)
	// POST i is due i periods after start, and the clock decides how many
	// are due at each tick. The clock is read before the ticker starts, so
	// tick i, which never fires early, always finds POST i due. The other
	// way round, a tick on time could find it not quite due by a fraction
	// of a microsecond, send nothing, and leave two POSTs to the next tick:
	// pairs of events at once, which the rate does not ask for and which
	// made the second of each wait for the first's fan-out (BENCHMARKS.md).
	start := time.Now()
	ticker := time.NewTicker(time.Duration(float64(time.Second) / o.rate))
	defer ticker.Stop()
	// A safety net: by o.duration every POST is due.
	deadline := time.NewTimer(o.duration + time.Second)
	defer deadline.Stop()
	progress := start
	sent := 0
	for sent+r.skipped < r.postTarget {
		select {
		case <-deadline.C:
			r.skipped = r.postTarget - sent
			continue
		case now := <-ticker.C:
			due := min(r.postTarget, int(now.Sub(start).Seconds()*o.rate))
			for sent+r.skipped < due {
				select {
				case sem <- struct{}{}:
				default:
					r.skipped++
					continue
				}
				sent++
				i := sent
				inflight.Go(func() {
					defer func() { <-sem }()
					start := tr.now()
					id, arrived, err := postIncident(client, tr, o.url, i)
					if err != nil {
						r.postErrors.add("%s", err)
						return
					}
					slot := tr.slot(id)
					if slot >= 0 {
						tr.sent[slot].Store(start)
						tr.posted[slot].Store(arrived)
					}
					mu.Lock()
					defer mu.Unlock()
					r.postLatency = append(r.postLatency, micros(arrived-start))
					if slot < 0 {
						r.postedOutside++
						return
					}
					r.posted++
				})
			}
		}
		if time.Since(progress) >= 5*time.Second {
			progress = time.Now()
			logf(tr, "  %d posted, %d skipped, %d delivered so far, %d subscribers disconnected",
				sent, r.skipped, tr.delivered.Load(), r.disconnects.count())
		}
	}
	inflight.Wait()
	r.postTime = time.Since(start)
	logf(tr, "load done after %s: %d incidents created, %d POST errors, %d skipped (no free POST slot)",
		time.Since(start).Round(time.Millisecond), r.posted, r.postErrors.count(), r.skipped)
}

// postIncident creates incident number i and returns its id and when the
// response arrived on the tracker clock.
func postIncident(client *http.Client, tr *tracker, base string, i int) (int64, int64, error) {
	body := fmt.Sprintf(`{"title":"bench incident %d","description":"created by the fanout load test","severity":%q}`,
		i, []string{"low", "medium", "high", "critical"}[i%4])
	resp, err := client.Post(base+"/api/v1/incidents", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	arrived := tr.now()
	if err != nil {
		return 0, 0, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		return 0, 0, fmt.Errorf("status %d: %.300s", resp.StatusCode, b)
	}
	var inc struct {
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal(b, &inc); err != nil || inc.ID <= 0 {
		return 0, 0, fmt.Errorf("response without an incident id: %.300s", b)
	}
	return inc.ID, arrived, nil
}

// waitDeliveries waits until every subscriber has every posted incident, or
// o.drain passes. Deliveries to subscribers that dropped out count too, so
// with disconnects it usually waits the whole o.drain.
func waitDeliveries(o options, tr *tracker, r *result, subscribers int) {
	want := int64(r.posted) * int64(subscribers)
	deadline := time.Now().Add(o.drain)
	for tr.delivered.Load() < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	logf(tr, "%d of %d deliveries arrived", tr.delivered.Load(), want)
}

// analyze merges the subscribers' records; the reader loops must be done.
func (r *result) analyze(tr *tracker, subs []*subscriber, loadStart int64) {
	var posted []int
	for slot := range tr.posted {
		if tr.posted[slot].Load() != 0 {
			posted = append(posted, slot)
		}
	}
	r.expected = int64(len(posted)) * int64(len(subs))
	total := 0
	for _, s := range subs {
		total += len(s.delays) + len(s.early)
	}
	r.delays = make([]uint32, 0, total)
	r.delaysFromStart = make([]uint32, 0, total)
	fromStart := func(slot int32, fromResponse uint32) uint32 {
		return fromResponse + micros(tr.posted[slot].Load()-tr.sent[slot].Load())
	}
	var lastAt int64
	first, last := make([]uint32, len(tr.posted)), make([]uint32, len(tr.posted))
	for i := range first {
		first[i] = math.MaxUint32
	}
	event := func(slot int, d uint32) {
		first[slot], last[slot] = min(first[slot], d), max(last[slot], d)
	}
	for _, s := range subs {
		for _, slot := range posted {
			if s.seen[slot/64]&(1<<(slot%64)) != 0 {
				r.received++
				continue
			}
			r.lost++
			if s.err == nil {
				r.lostOnConnected++
			}
		}
		r.delays = append(r.delays, s.delays...)
		for i, d := range s.delays {
			event(int(s.slots[i]), d)
			r.delaysFromStart = append(r.delaysFromStart, fromStart(s.slots[i], d))
		}
		for _, e := range s.early {
			p := tr.posted[e.slot].Load()
			if p == 0 {
				continue // an incident another client created
			}
			if e.at < p {
				r.beforeResponse++
			}
			r.delays = append(r.delays, micros(e.at-p))
			event(int(e.slot), micros(e.at-p))
			r.delaysFromStart = append(r.delaysFromStart, micros(e.at-tr.sent[e.slot].Load()))
		}
		r.duplicates += s.duplicates
		r.outOfOrder += s.outOfOrder
		r.outsideWindow += s.outside
		r.fallbacks += s.fallbacks
		lastAt = max(lastAt, s.lastAt)
	}
	for _, slot := range posted {
		if first[slot] != math.MaxUint32 {
			r.firstDelays = append(r.firstDelays, first[slot])
			r.lastDelays = append(r.lastDelays, last[slot])
		}
	}
	slices.Sort(r.firstDelays)
	slices.Sort(r.lastDelays)
	slices.Sort(r.delays)
	slices.Sort(r.delaysFromStart)
	slices.Sort(r.postLatency)
	r.deliveryTime = time.Duration(lastAt - loadStart)
}

// print writes the summary, one metric per line.
func (r *result) print(w io.Writer) {
	o := r.opts
	line := func(key string, format string, args ...any) {
		fmt.Fprintf(w, "%-34s %s\n", key+":", fmt.Sprintf(format, args...))
	}
	fmt.Fprintln(w, "== fanout summary ==")
	line("url", "%s", o.url)
	line("subscribers_requested", "%d", o.subscribers)
	line("subscribers_connected", "%d", r.connected)
	line("connect_errors", "%d", r.connectErrors.count())
	line("connect_time", "%s", r.connectTime.Round(time.Millisecond))
	line("rate_target", "%g/s", o.rate)
	line("duration", "%s", o.duration)
	line("events_target", "%d", r.postTarget)
	line("events_posted", "%d", r.posted)
	line("events_per_s_achieved", "%.1f", float64(r.posted)/max(r.postTime.Seconds(), 1e-9))
	line("post_errors", "%d", r.postErrors.count())
	line("posts_skipped", "%d (due while -max-inflight POSTs were pending)", r.skipped)
	if r.postedOutside > 0 {
		line("posted_outside_window", "%d (not tracked: other writers?)", r.postedOutside)
	}
	line("post_latency_p50", "%s ms", ms(pct(r.postLatency, 0.50)))
	line("post_latency_p99", "%s ms", ms(pct(r.postLatency, 0.99)))
	line("post_latency_max", "%s ms", ms(pct(r.postLatency, 1)))
	line("expected_deliveries", "%d", r.expected)
	line("received_deliveries", "%d", r.received)
	line("lost", "%d", r.lost)
	line("lost_on_still_connected", "%d", r.lostOnConnected)
	line("duplicates", "%d", r.duplicates)
	line("out_of_order", "%d", r.outOfOrder)
	line("delivered_before_post_response", "%d (delay counted as 0)", r.beforeResponse)
	if r.outsideWindow > 0 {
		line("received_outside_window", "%d", r.outsideWindow)
	}
	line("delay_p50", "%s ms", ms(pct(r.delays, 0.50)))
	line("delay_p90", "%s ms", ms(pct(r.delays, 0.90)))
	line("delay_p99", "%s ms", ms(pct(r.delays, 0.99)))
	line("delay_p99.9", "%s ms", ms(pct(r.delays, 0.999)))
	line("delay_max", "%s ms", ms(pct(r.delays, 1)))
	line("delay_from_post_start", "p50 %s ms, p99 %s ms, max %s ms (the same deliveries, from when each POST was sent)",
		ms(pct(r.delaysFromStart, 0.5)), ms(pct(r.delaysFromStart, 0.99)), ms(pct(r.delaysFromStart, 1)))
	spread := func(d []uint32) string {
		return fmt.Sprintf("p50 %s ms, p99 %s ms, max %s ms", ms(pct(d, 0.5)), ms(pct(d, 0.99)), ms(pct(d, 1)))
	}
	line("event_first_delivery", "%s (per event: to its first subscriber)", spread(r.firstDelays))
	line("event_last_delivery", "%s (per event: to its last subscriber)", spread(r.lastDelays))
	line("deliveries_per_s", "%.0f (received / time from first POST to last delivery, %s)",
		float64(r.received)/max(r.deliveryTime.Seconds(), 1e-9), r.deliveryTime.Round(time.Millisecond))
	line("subscribers_disconnected", "%d", r.disconnects.count())
	line("client_cpu", "%.0f%% of one core (load phase, %s)", r.clientCPU, r.loadTime.Round(time.Millisecond))
	if r.serverCPU >= 0 {
		line("server_cpu", "%.0f%% of one core (load phase, without PostgreSQL)", r.serverCPU)
		if r.received > 0 {
			line("server_cpu_per_delivery", "%.1f µs (server CPU time in the load phase / received deliveries)",
				r.serverCPU/100*r.loadTime.Seconds()*1e6/float64(r.received))
		}
	}
	if r.machineBusy >= 0 {
		line("machine_cpu_busy", "%.0f%% of %d cores (load phase, every process)", r.machineBusy, runtime.NumCPU())
	}
	if r.machineIdleBusy >= 0 {
		line("machine_cpu_busy_before_load", "%.0f%% (settle time: other processes competing for the CPU)", r.machineIdleBusy)
	}
	line("decoder_fallbacks", "%d", r.fallbacks)
	if o.pid == 0 {
		line("server_rss", "not measured (no -pid)")
	} else {
		line("server_rss_before", "%s", kib(r.rss[0]))
		line("server_rss_idle_subscribers", "%s", kib(r.rss[1]))
		line("server_rss_end", "%s", kib(r.rss[2]))
		if r.rss[0] >= 0 && r.rss[1] >= 0 && r.connected > 0 {
			note := ""
			if r.connected < 1000 {
				note = " (noisy with few subscribers: GC and scavenging move RSS by MiBs)"
			}
			line("rss_per_idle_subscriber", "%.1f KiB%s", float64(r.rss[1]-r.rss[0])/float64(r.connected), note)
		}
	}
	result := "PASS"
	if !r.passed() {
		result = "FAIL"
	}
	line("result", "%s", result)
	for _, e := range r.connectErrors.first {
		fmt.Fprintf(w, "connect error: %s\n", e)
	}
	for _, e := range r.postErrors.first {
		fmt.Fprintf(w, "post error: %s\n", e)
	}
	for _, e := range r.disconnects.first {
		fmt.Fprintf(w, "disconnect: %s\n", e)
	}
}

// pct returns the q quantile (nearest rank) of sorted µs values, or -1 for
// none.
func pct(sorted []uint32, q float64) int64 {
	if len(sorted) == 0 {
		return -1
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return int64(sorted[min(max(i, 0), len(sorted)-1)])
}

// ms formats µs as milliseconds.
func ms(us int64) string {
	if us < 0 {
		return "n/a"
	}
	return strconv.FormatFloat(float64(us)/1000, 'f', 2, 64)
}

func kib(v int64) string {
	if v < 0 {
		return "unknown"
	}
	return fmt.Sprintf("%d KiB (%.1f MiB)", v, float64(v)/1024)
}

func percent(cpu, wall time.Duration) float64 {
	if cpu < 0 || wall <= 0 {
		return -1
	}
	return 100 * cpu.Seconds() / wall.Seconds()
}

// logf reports progress on stderr, stamped with the time since the start.
func logf(tr *tracker, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%7.2fs] %s\n", time.Since(tr.t0).Seconds(), fmt.Sprintf(format, args...))
}

// raiseFileLimit raises the soft open file limit to the hard one; each
// subscriber holds a socket.
func raiseFileLimit(need int) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("read the open file limit: %w", err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return fmt.Errorf("raise the open file limit to %d: %w", rl.Max, err)
		}
	}
	if rl.Cur < uint64(need) {
		return fmt.Errorf("the open file limit is %d but this run needs about %d: raise the hard limit (ulimit -Hn, or LimitNOFILE under systemd) or use fewer -subscribers", rl.Cur, need)
	}
	return nil
}

// warnPortRange warns when the ephemeral port range cannot hold every
// connection: they all go from one source address to one server port.
func warnPortRange(need int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 == nil && err2 == nil && hi-lo+1 < need {
		fmt.Fprintf(os.Stderr, "bench: warning: the ephemeral port range %d-%d has %d ports, fewer than the %d connections: connects will fail (widen net.ipv4.ip_local_port_range)\n", lo, hi, hi-lo+1, need)
	}
}

// readRSS returns the VmRSS of pid in KiB, or -1 when pid is 0 or unreadable.
func readRSS(pid int) int64 { return readStatus(pid, "VmRSS:") }

// readStatus returns a field of /proc/pid/status in KiB, or -1 when pid is
// 0 or unreadable.
func readStatus(pid int, field string) int64 {
	if pid == 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: read RSS:", err)
		return -1
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, field); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// serverCPUTime returns the user+system CPU time of pid, or -1.
func serverCPUTime(pid int) time.Duration {
	if pid == 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The command name may hold spaces; the fields after it start with the
	// state (field 3), so utime and stime (fields 14 and 15) are 11 and 12.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clientCPUTime returns this process's user+system CPU time.
func clientCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineCPU is a reading of the first line of /proc/stat, in clock ticks.
type machineCPU struct{ busy, total int64 }

func readMachineCPU() machineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{-1, -1}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return machineCPU{-1, -1}
	}
	var m machineCPU
	// user nice system idle iowait irq softirq steal; guest time that may
	// follow is already counted in user and nice.
	for i, v := range f[1:min(len(f), 9)] {
		n, _ := strconv.ParseInt(v, 10, 64)
		m.total += n
		if i != 3 && i != 4 { // idle and iowait
			m.busy += n
		}
	}
	return m
}

// busySince is the share of all cores that was busy since m, in percent.
func (m machineCPU) busySince() float64 {
	now := readMachineCPU()
	if m.total < 0 || now.total <= m.total {
		return -1
	}
	return 100 * float64(now.busy-m.busy) / float64(now.total-m.total)
}
