package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// memory repeats the hardening issue's reproduction: it reports fat
// incidents (every field at its limit, of characters JSON encoders like to
// escape), then lists them and replays their events from several clients at
// once, and reports the server's peak resident memory.
//
//	go run ./bench memory -url http://127.0.0.1:8080 -pid <server pid>
//
// The reports are paced under the default anonymous ingest limit (20/s,
// a burst of 100), honouring Retry-After; -fill=false skips them to measure
// an already filled server again.
func runMemory(args []string) error {
	fs := flag.NewFlagSet("memory", flag.ContinueOnError)
	base := fs.String("url", "http://127.0.0.1:8080", "the server")
	pid := fs.Int("pid", 0, "the server's process id, for its resident memory (required)")
	incidents := fs.Int("incidents", 1000, "fat incidents to report")
	fill := fs.Bool("fill", true, "report the incidents first")
	lists := fs.Int("lists", 8, "concurrent clients listing every incident (limit=1000, following Link)")
	replays := fs.Int("replays", 8, "concurrent WebSocket clients replaying every event (since=0)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pid <= 0 {
		return fmt.Errorf("-pid is required")
	}
	client := &http.Client{Timeout: 5 * time.Minute}
	if *fill {
		start := time.Now()
		if err := fillFat(client, *base, *incidents); err != nil {
			return err
		}
		fmt.Printf("reported %d fat incidents in %s\n", *incidents, time.Since(start).Round(time.Millisecond))
		// The last report's event reaches the stream a moment after its
		// response: let it, so that every replay's hello names it.
		time.Sleep(time.Second)
	}
	fmt.Printf("rss before: %s\n", kib(readRSS(*pid)))

	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // sample often: the peak of a request lasts as long as it does
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss := readRSS(*pid); rss > peak.Load() {
				peak.Store(rss)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, *lists+*replays)
	type listResult struct{ items, pages, maxPage int }
	listed := make([]listResult, *lists)
	for i := range *lists {
		wg.Go(func() {
			items, pages, maxPage, err := listAll(client, *base)
			listed[i] = listResult{items, pages, maxPage}
			if err != nil {
				errs <- fmt.Errorf("list: %w", err)
			}
		})
	}
	replayed := make([]int, *replays)
	for i := range *replays {
		wg.Go(func() {
			n, err := replayAll(*base)
			replayed[i] = n
			if err != nil {
				errs <- fmt.Errorf("replay: %w", err)
			}
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	close(errs)
	for _, l := range listed {
		fmt.Printf("list: %d incidents in %d pages, largest page %s\n", l.items, l.pages, kib(int64(l.maxPage)/1024))
	}
	for _, n := range replayed {
		fmt.Printf("replay: %d events\n", n)
	}
	fmt.Printf("elapsed: %s\n", time.Since(start).Round(time.Millisecond))
	fmt.Printf("rss peak (sampled every 5 ms): %s\n", kib(peak.Load()))
	fmt.Printf("rss high-water mark (VmHWM, since the server started): %s\n", kib(readStatus(*pid, "VmHWM:")))
	var failed error
	for err := range errs {
		fmt.Println("error:", err)
		failed = errors.New("some clients failed")
	}
	return failed
}

// fatIncident is a report with every field at its limit, of '<', which
// encoding/json by default writes as six bytes.
func fatIncident(i int) []byte {
	fat := func(n int) string { return strings.Repeat("<", n) }
	labels := map[string]string{}
	for l := range 64 {
		key := fmt.Sprintf("%03d", l) + fat(97)
		labels[key] = fat(1000)
	}
	body, _ := json.Marshal(map[string]any{
		"title":       fmt.Sprintf("%d", i) + fat(200-len(strconv.Itoa(i))),
		"description": fat(10000),
		"severity":    "low",
		"labels":      labels,
	})
	return body
}

// fillFat reports n fat incidents, waiting as Retry-After says when the
// server limits the rate.
func fillFat(client *http.Client, base string, n int) error {
	for i := 0; i < n; {
		resp, err := client.Post(base+"/api/v1/incidents", "application/json", bytes.NewReader(fatIncident(i)))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusCreated:
			i++
		case http.StatusTooManyRequests:
			wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			time.Sleep(time.Duration(max(wait, 1)) * time.Second)
		default:
			return fmt.Errorf("report %d: status %d", i, resp.StatusCode)
		}
	}
	return nil
}

// listAll reads every incident, limit=1000 a page, following the Link
// header.
func listAll(client *http.Client, base string) (items, pages, maxPage int, err error) {
	next := "/api/v1/incidents?limit=1000"
	for next != "" {
		resp, err := client.Get(base + next)
		if err != nil {
			return items, pages, maxPage, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return items, pages, maxPage, err
		}
		if resp.StatusCode != http.StatusOK {
			return items, pages, maxPage, fmt.Errorf("GET %s: status %d", next, resp.StatusCode)
		}
		var page []json.RawMessage
		if err := json.Unmarshal(body, &page); err != nil {
			return items, pages, maxPage, err
		}
		items, pages, maxPage = items+len(page), pages+1, max(maxPage, len(body))
		next = ""
		if link := resp.Header.Get("Link"); link != "" {
			next = strings.TrimPrefix(link[:strings.Index(link, ">")], "<")
		}
	}
	return items, pages, maxPage, nil
}

// replayAll opens a WebSocket with since=0 and reads until it has every
// event up to the hello's position, returning how many it read.
func replayAll(base string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ws, err := dialWS(ctx, "ws"+strings.TrimPrefix(base, "http")+"/api/v1/ws?since=0", "")
	if err != nil {
		return 0, err
	}
	defer ws.conn.Close()
	ws.conn.SetReadDeadline(time.Now().Add(5 * time.Minute))
	hello, err := ws.readHello()
	if err != nil {
		return 0, err
	}
	upTo, _ := decodeEvent(hello)
	n := 0
	for seen := int64(0); seen < upTo.Seq; n++ {
		msg, err := readMessage(ws.br)
		if err != nil {
			return n, err
		}
		ev, _ := decodeEvent(msg)
		seen = ev.Seq
	}
	return n, nil
}

// readMessage reads the next text frame, skipping control frames. Frames
// from the server are final and unmasked.
func readMessage(r io.Reader) ([]byte, error) {
	for {
		var head [2]byte
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return nil, err
		}
		n := uint64(head[1] & 0x7f)
		switch n {
		case 126:
			var ext [2]byte
			if _, err := io.ReadFull(r, ext[:]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(ext[:]))
		case 127:
			var ext [8]byte
			if _, err := io.ReadFull(r, ext[:]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(ext[:])
		}
		if n > maxFrame {
			return nil, fmt.Errorf("frame of %d bytes", n)
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return nil, err
		}
		switch head[0] & 0x0f {
		case opText:
			return payload, nil
		case opClose:
			return nil, errClosed
		}
	}
}
