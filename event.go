package main

import (
	"encoding/binary"
	"encoding/json"
	"time"
)

// eventView is an event as subscribers and the timeline see it. Clients
// must ignore types they do not know; more are added over time.
type eventView struct {
	Type      string          `json:"type"`
	Seq       int64           `json:"seq"`
	Actor     *actorView      `json:"actor"`
	CreatedAt time.Time       `json:"created_at"`
	Data      json.RawMessage `json:"data"` // the incident right after the event
	Note      *note           `json:"note,omitempty"`
	// Escalation is the step an escalated event notified (an
	// escalationNotice); Heartbeat, the heartbeat of a heartbeat_down or
	// heartbeat_up event, as the REST API shows it.
	Escalation json.RawMessage `json:"escalation,omitempty"`
	Heartbeat  json.RawMessage `json:"heartbeat,omitempty"`
}

// actorView is who caused an event; null in JSON for the system and
// anonymous reports. A user ({"user": ...}, with the API key it acted
// through, if any) or an integration ({"integration": ...}).
type actorView struct {
	User        string `json:"user,omitempty"`
	APIKey      string `json:"api_key,omitempty"`
	Integration string `json:"integration,omitempty"`
}

func newEventView(e storedEvent) eventView {
	v := eventView{Type: e.Type, Seq: e.Seq, CreatedAt: e.CreatedAt, Data: e.Data, Note: e.Note, Escalation: e.Escalation, Heartbeat: e.Heartbeat}
	switch {
	case e.Actor != nil:
		v.Actor = &actorView{User: *e.Actor}
		if e.ActorKey != nil {
			v.Actor.APIKey = *e.ActorKey
		}
	case e.Integration != nil:
		v.Actor = &actorView{Integration: *e.Integration}
	}
	return v
}

// streamEvent is an event ready to send, encoded once for each transport:
// a live event's bytes go to every subscriber as they are.
type streamEvent struct {
	seq      int64
	severity string // of the incident after the event, for filters
	status   string
	wsFrame  []byte // a complete WebSocket text frame
	sse      []byte // a complete Server-Sent Events message
}

// newStreamEvent encodes e for both transports: a live event in the log
// goes to subscribers of either.
func newStreamEvent(e storedEvent) *streamEvent {
	ev, msg := streamFields(e), eventMessage(e)
	wsOut{}.encode(ev, e, msg)
	sseOut{}.encode(ev, e, msg)
	return ev
}

// streamFields is what a subscriber's filter reads of e, not yet framed:
// a replay frames only what its filter keeps, for its own transport.
func streamFields(e storedEvent) *streamEvent {
	var fields struct {
		Severity string `json:"severity"`
		Status   string `json:"status"`
	}
	_ = json.Unmarshal(e.Data, &fields)
	return &streamEvent{seq: e.Seq, severity: fields.Severity, status: fields.Status}
}

// eventMessage is e as subscribers read it, the JSON both framings carry.
func eventMessage(e storedEvent) []byte {
	msg, _ := marshalJSON(newEventView(e))
	return msg
}

// size is what the event takes in memory, for the log's byte bound.
func (ev *streamEvent) size() int { return len(ev.wsFrame) + len(ev.sse) + 64 }

// helloMessage is the first message of every stream: where it starts.
func helloMessage(pos int64) []byte {
	b, _ := marshalJSON(map[string]any{"type": "hello", "seq": pos})
	return b
}

// sseMessage formats one Server-Sent Events message; id may be empty.
func sseMessage(id, event string, data []byte) []byte {
	b := make([]byte, 0, len(data)+len(id)+len(event)+24)
	if id != "" {
		b = append(b, "id: "+id+"\n"...)
	}
	b = append(b, "event: "+event+"\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

// wsOpText is the opcode of a text frame, which carries each event.
const wsOpText = 0x1

// wsFrame builds a final, unmasked server frame (RFC 6455 section 5.2):
// events are framed once, and the same bytes go to every WebSocket.
func wsFrame(opcode byte, payload []byte) []byte {
	n := len(payload)
	var b []byte
	switch {
	case n < 126:
		b = make([]byte, 2, 2+n)
		b[1] = byte(n)
	case n <= 0xFFFF:
		b = make([]byte, 4, 4+n)
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b = make([]byte, 10, 10+n)
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	b[0] = 0x80 | opcode
	return append(b, payload...)
}
