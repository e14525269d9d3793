package main

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

func TestDecodeEvent(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want event
		fast bool
	}{
		{`{"type":"hello","seq":12}`, event{Type: "hello", Seq: 12}, true},
		{`{"type":"added","seq":2,"data":{"id":7,"title":"x","status":"open"}}`, event{Type: "added", Seq: 2, Data: eventData{7}}, true},
		{`{"type":"added","seq":3,"data":{"id":8}}`, event{Type: "added", Seq: 3, Data: eventData{8}}, true},
		{`{"type":"added","seq":4,"actor":null,"created_at":"2026-11-27T03:00:00Z","data":{"id":9,"title":"a,\"data\":{\"id\":1"}}`, event{Type: "added", Seq: 4, Data: eventData{9}}, true},
		// An earlier object value could hold its own "data": left to encoding/json.
		{`{"type":"added","seq":5,"actor":{"user":"x","data":{"id":1}},"data":{"id":10}}`, event{Type: "added", Seq: 5, Data: eventData{10}}, false},
		// Other key orders, spacing and escapes fall back to encoding/json.
		{`{"seq":4,"type":"added","data":{"title":"x","id":9}}`, event{Type: "added", Seq: 4, Data: eventData{9}}, false},
		{`{"type": "added", "seq": 5, "data": {"id": 10}}`, event{Type: "added", Seq: 5, Data: eventData{10}}, false},
		{`{"type":"add\u0065d","seq":6,"data":{"id":11}}`, event{Type: "added", Seq: 6, Data: eventData{11}}, false},
		{`{"type":"added","seq":7,"data":{"id":12.5}}`, event{Type: "added", Seq: 7}, false},
		{`not json`, event{}, false},
	} {
		got, fast := decodeEvent([]byte(tc.msg))
		if got != tc.want || fast != tc.fast {
			t.Errorf("decodeEvent(%s) = %+v, fast %v; want %+v, fast %v", tc.msg, got, fast, tc.want, tc.fast)
		}
	}
}

// analyze reports, per event, the delay to its first and to its last
// subscriber, counting one that arrived before its POST response as 0.
func TestAnalyzePerEventDelays(t *testing.T) {
	tr := &tracker{base: 100, posted: make([]atomic.Int64, 3), sent: make([]atomic.Int64, 3)}
	const ms = int64(time.Millisecond)
	added := func(id int64) []byte {
		return fmt.Appendf(nil, `{"type":"added","seq":%d,"data":{"id":%d}}`, id-100, id)
	}
	a, b := &subscriber{seen: make([]uint64, 1)}, &subscriber{seen: make([]uint64, 1)}
	tr.sent[0].Store(ms / 2)
	tr.posted[0].Store(1 * ms)
	a.receive(added(101), 4*ms, tr)
	b.receive(added(101), 8*ms, tr)
	a.receive(added(102), 1*ms, tr) // before the POST response is known
	tr.sent[1].Store(1 * ms)
	tr.posted[1].Store(2 * ms)
	b.receive(added(102), 7*ms, tr)
	// Slot 2 was never posted: nothing to report for it.

	var r result
	r.analyze(tr, []*subscriber{a, b}, 0)
	if r.received != 4 || r.lost != 0 || r.beforeResponse != 1 {
		t.Fatalf("received %d, lost %d, before response %d; want 4, 0, 1", r.received, r.lost, r.beforeResponse)
	}
	if want := []uint32{0, 3000}; !slices.Equal(r.firstDelays, want) {
		t.Errorf("first deliveries = %v µs, want %v", r.firstDelays, want)
	}
	if want := []uint32{5000, 7000}; !slices.Equal(r.lastDelays, want) {
		t.Errorf("last deliveries = %v µs, want %v", r.lastDelays, want)
	}
	if want := []uint32{0, 3500, 6000, 7500}; !slices.Equal(r.delaysFromStart, want) {
		t.Errorf("delays from the POST start = %v µs, want %v", r.delaysFromStart, want)
	}
}
