package main

import "testing"

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
