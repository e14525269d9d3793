package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// fatReport is a report with every field at its limit, of fill, which
// encoding/json would escape: '<' as six bytes by default, '\x01' always.
func fatReport(i int, fill string) string {
	labels := map[string]string{}
	for l := range maxLabels {
		labels[fmt.Sprintf("%02d", l)+strings.Repeat(fill, maxLabelKeyLen-2)] = strings.Repeat(fill, maxLabelValueLen)
	}
	body, _ := json.Marshal(map[string]any{
		"title":       fmt.Sprintf("%03d", i) + strings.Repeat(fill, 197),
		"description": strings.Repeat(fill, 10000),
		"severity":    severities[i%len(severities)],
		"labels":      labels,
	})
	return string(body)
}

// page is one page a list returned while following its Link headers.
type listPage struct {
	body  []byte
	items []json.RawMessage
}

// followPages reads a list from path to its last page.
func (ts *testServer) followPages(t *testing.T, path string, headers ...string) []listPage {
	t.Helper()
	var pages []listPage
	for path != "" {
		r := ts.request(t, "GET", path, "", headers...)
		r.mustStatus(t, "GET "+path, http.StatusOK)
		var p listPage
		p.body = r.body
		r.json(t, &p.items)
		pages = append(pages, p)
		path = ""
		if link := r.header.Get("Link"); link != "" {
			path = strings.TrimPrefix(link[:strings.Index(link, ">")], "<")
		}
		if len(pages) > 1000 {
			t.Fatalf("GET %s: more than 1000 pages", path)
		}
	}
	return pages
}

// checkPageSizes fails unless every page but the last passed pageBudget
// only with its last item: it was cut by bytes, and no larger than it had
// to be.
func checkPageSizes(t *testing.T, what string, pages []listPage) {
	t.Helper()
	if len(pages) < 2 {
		t.Fatalf("%s: %d page, want it cut by bytes into several", what, len(pages))
	}
	for i, p := range pages {
		last := len(p.items[len(p.items)-1])
		if len(p.body)-last-2 >= pageBudget {
			t.Errorf("%s: page %d is %d bytes, %d before its last item; want under the %d-byte budget before it", what, i, len(p.body), len(p.body)-last-2, pageBudget)
		}
		if i < len(pages)-1 && len(p.body) < pageBudget {
			t.Errorf("%s: page %d of %d is %d bytes with a next page, want it cut only past the %d-byte budget", what, i, len(pages), len(p.body), pageBudget)
		}
	}
}

func TestListPagesBoundedByBytes(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	const n = 30
	for i := range n {
		ts.request(t, "POST", "/api/v1/incidents", fatReport(i, "<")).mustStatus(t, "fat report", http.StatusCreated)
	}
	for _, tt := range []struct{ name, path string }{
		{"default order, before", "/api/v1/incidents?limit=1000"},
		{"sorted, cursor", "/api/v1/incidents?limit=1000&sort=severity"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pages := ts.followPages(t, tt.path)
			checkPageSizes(t, tt.path, pages)
			seen := map[int64]int{}
			for _, p := range pages {
				if bytes.Contains(p.body, []byte(`\u003c`)) || !bytes.Contains(p.body, []byte(`"<<<`)) {
					t.Fatalf("page body escapes '<' (%.80s...), want it written as it is", p.body)
				}
				for _, raw := range p.items {
					var inc incident
					json.Unmarshal(raw, &inc)
					seen[inc.ID]++
				}
			}
			if len(seen) != n {
				t.Errorf("followed pages hold %d distinct incidents, want %d", len(seen), n)
			}
			for id, c := range seen {
				if c != 1 {
					t.Errorf("incident %d appears %d times, want once", id, c)
				}
			}
		})
	}
}

// A page of a thousand ordinary incidents is never cut.
func TestOrdinaryPageNotCut(t *testing.T) {
	ts := newTestServer(t)
	_, err := ts.st.db.Exec(`INSERT INTO incidents (title, description, severity, status, created_at, updated_at, last_occurred_at, dedup_key, labels)
		SELECT 'Disk almost full on db-' || g, 'The data volume of db-' || g || ' is 93% full and growing 2% an hour; rotate the logs or grow the volume.',
			'high', 'open', now(), now(), now(), 'host-' || g || '/disk', '{"team":"storage","env":"production","region":"eu-west-1"}'
		FROM generate_series(1, 1001) g`)
	if err != nil {
		t.Fatalf("insert incidents: %v", err)
	}
	r := ts.request(t, "GET", "/api/v1/incidents?limit=1000", "")
	var list []incident
	r.json(t, &list)
	if len(list) != 1000 || !strings.Contains(r.header.Get("Link"), "before=") {
		t.Errorf("GET limit=1000 of 1001 ordinary incidents: %d items (%d bytes), Link %q; want 1000 and a next page", len(list), len(r.body), r.header.Get("Link"))
	}
}

// The budget counts bytes as encoded: a control character is six.
func TestNotesAndTimelineBoundedByEncodedBytes(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	token := ts.register(t, "oncall", "password1")
	inc := ts.createIncident(t, "chatty", "low")
	body, _ := json.Marshal(map[string]string{"body": strings.Repeat("\x01", 10000)})
	const n = 25 // 250 KB as stored, about 1.5 MB as JSON
	for range n {
		ts.request(t, "POST", fmt.Sprintf("/api/v1/incidents/%d/notes", inc.ID), string(body), bearer(token)...).mustStatus(t, "add note", http.StatusCreated)
	}
	for _, tt := range []struct {
		path  string
		items int
	}{
		{fmt.Sprintf("/api/v1/incidents/%d/notes?limit=1000", inc.ID), n},
		{fmt.Sprintf("/api/v1/incidents/%d/events?limit=1000", inc.ID), n + 1}, // and "added"
	} {
		pages := ts.followPages(t, tt.path)
		checkPageSizes(t, tt.path, pages)
		seen := map[string]bool{}
		for _, p := range pages {
			for _, raw := range p.items {
				var item struct {
					ID  int64 `json:"id"`
					Seq int64 `json:"seq"`
				}
				json.Unmarshal(raw, &item)
				key := fmt.Sprint(item.ID, item.Seq)
				if seen[key] {
					t.Errorf("%s: item %s twice", tt.path, key)
				}
				seen[key] = true
			}
		}
		if len(seen) != tt.items {
			t.Errorf("%s: %d items over %d pages, want %d", tt.path, len(seen), len(pages), tt.items)
		}
	}
}

// A stream's history is read a page at a time, bounded by bytes.
func TestEventsAfterBoundedByBytes(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	const n = 30
	for i := range n {
		ts.request(t, "POST", "/api/v1/incidents", fatReport(i, "<")).mustStatus(t, "fat report", http.StatusCreated)
	}
	var after int64
	var reads, events int
	for {
		page, _, err := ts.st.EventsAfter(context.Background(), after, 0, 500)
		if err != nil {
			t.Fatalf("EventsAfter(%d): %v", after, err)
		}
		if len(page) == 0 {
			break
		}
		size := 0
		for i, e := range page {
			if e.Seq != after+int64(i)+1 {
				t.Fatalf("EventsAfter(%d)[%d].Seq = %d, want %d", after, i, e.Seq, after+int64(i)+1)
			}
			size += len(e.Data)
		}
		if last := len(page[len(page)-1].Data); size-last >= pageBudget {
			t.Errorf("EventsAfter(%d) read %d bytes of payload, %d before its last event; want under %d before it", after, size, size-last, pageBudget)
		}
		after, reads, events = page[len(page)-1].Seq, reads+1, events+len(page)
	}
	if events != n || reads < 2 {
		t.Errorf("EventsAfter read %d events in %d pages, want %d in several", events, reads, n)
	}
}
