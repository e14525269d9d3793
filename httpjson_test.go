package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
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

// TestBodyTextMustBeUnicode sends JSON strings encoding/json would store as
// U+FFFD: raw bytes that are not UTF-8 and escaped surrogates that are not
// half of a pair. Each is a 422 naming the field, on every route and in
// every field, the ignored ones too; a pair and an escaped backslash are
// text like any other.
func TestBodyTextMustBeUnicode(t *testing.T) {
	ts := newTestServer(t)
	report := func(title string) string { return `{"severity":"low","title":"` + title + `"}` }
	for _, tt := range []struct {
		name, path, body string
		wantTypes        []string
	}{
		{"raw 0xff", "/api/v1/incidents", report("disk \xff full"), []string{"string_unicode@body.title"}},
		{"truncated sequence", "/api/v1/incidents", report("disk \xe2\x82"), []string{"string_unicode@body.title"}},
		{"encoded surrogate", "/api/v1/incidents", report("\xed\xa0\x80"), []string{"string_unicode@body.title"}},
		{"lone high surrogate", "/api/v1/incidents", report(`\ud800`), []string{"string_unicode@body.title"}},
		{"lone high surrogate, upper case", "/api/v1/incidents", report(`x\uD83Dy`), []string{"string_unicode@body.title"}},
		{"lone low surrogate", "/api/v1/incidents", report(`\udc00`), []string{"string_unicode@body.title"}},
		{"high then not low", "/api/v1/incidents", report(`\ud800\u0041`), []string{"string_unicode@body.title"}},
		{"high then high", "/api/v1/incidents", report(`\ud800\ud800\udc00`), []string{"string_unicode@body.title"}},
		{"high at the end", "/api/v1/incidents", report(`abc\ud83d`), []string{"string_unicode@body.title"}},
		{"escaped backslash, then a surrogate", "/api/v1/incidents", report(`\\\ud800`), []string{"string_unicode@body.title"}},
		{"two fields", "/api/v1/incidents", `{"title":"\udfff","description":"` + "\xc0\xaf" + `","severity":"low"}`,
			[]string{"string_unicode@body.title", "string_unicode@body.description"}},
		{"label value", "/api/v1/incidents", `{"title":"t","severity":"low","labels":{"env":"\udead"}}`, []string{"string_unicode@body.labels.env"}},
		{"label key", "/api/v1/incidents", `{"title":"t","severity":"low","labels":{"e\ud800":"prod"}}`, []string{"string_unicode@body.labels.e\ufffd"}},
		{"ignored field", "/api/v1/incidents", `{"title":"t","severity":"low","extra":"` + "\xff" + `"}`, []string{"string_unicode@body.extra"}},
		{"in an array", "/api/v1/incidents", `{"title":"t","severity":"low","extra":[1,"ok",{"a":"\ud800"}]}`, []string{"string_unicode@body.extra.2.a"}},
		{"register", "/api/v1/register", `{"username":"alice","password":"pass\ud800word"}`, []string{"string_unicode@body.password"}},
		{"login", "/api/v1/login", `{"username":"` + "\xff" + `","password":"password1"}`, []string{"string_unicode@body.username"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts.request(t, "POST", tt.path, tt.body).mustProblems(t, "POST "+tt.path, tt.wantTypes...)
		})
	}

	t.Run("problems are capped", func(t *testing.T) {
		var labels []string
		for i := range 30 {
			labels = append(labels, fmt.Sprintf(`"k%d":"\ud800"`, i))
		}
		r := ts.request(t, "POST", "/api/v1/incidents", `{"title":"t","severity":"low","labels":{`+strings.Join(labels, ",")+`}}`)
		if got := problemTypes(t, r.mustStatus(t, "POST /api/v1/incidents", http.StatusUnprocessableEntity)); len(got) != maxBodyProblems {
			t.Errorf("30 bad labels gave %d problems, want %d", len(got), maxBodyProblems)
		}
	})

	for _, tt := range []struct {
		name, title, want string
	}{
		{"surrogate pair", `\ud83d\ude00 fire`, "\U0001F600 fire"},
		{"surrogate pair, upper case", `\uD83D\uDE00`, "\U0001F600"},
		{"escaped backslash before ud800", `C:\\ud800`, `C:\ud800`},
		{"two escaped backslashes before ud800", `\\\\ud800`, `\\ud800`},
		{"raw UTF-8", "caf\u00e9 \u2603", "caf\u00e9 \u2603"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var inc incident
			ts.request(t, "POST", "/api/v1/incidents", report(tt.title)).mustStatus(t, "POST /api/v1/incidents", http.StatusCreated).json(t, &inc)
			if inc.Title != tt.want {
				t.Errorf("title = %q, want %q", inc.Title, tt.want)
			}
		})
	}
}

// TestBodyDuplicateKeys sends objects with a key twice, which
// encoding/json would read as the last value: a 422 naming the key, at the
// top level, in labels, in ignored fields and at any depth. The same key in
// two objects is no duplicate.
func TestBodyDuplicateKeys(t *testing.T) {
	ts := newTestServer(t)
	many := func(last string) string { // more keys than a linear search is used for
		var b strings.Builder
		for i := range 40 {
			fmt.Fprintf(&b, `"k%d":"v",`, i)
		}
		return `{"title":"t","severity":"low","labels":{` + b.String() + `"` + last + `":"v"}}`
	}
	for _, tt := range []struct {
		name, path, body string
		wantLoc          []string
		wantMsg          string
	}{
		{"top level", "/api/v1/incidents", `{"severity":"bogus","severity":"low","title":"t"}`,
			[]string{"body", "severity"}, `JSON decode error: duplicate key "severity"`},
		{"escaped spelling", "/api/v1/incidents", `{"title":"t","ti\u0074le":"u","severity":"low"}`,
			[]string{"body", "title"}, `JSON decode error: duplicate key "title"`},
		{"labels", "/api/v1/incidents", `{"title":"t","severity":"low","labels":{"env":"prod","team":"db","env":"dev"}}`,
			[]string{"body", "labels", "env"}, `JSON decode error: duplicate key "env"`},
		{"many labels", "/api/v1/incidents", many("k39"),
			[]string{"body", "labels", "k39"}, `JSON decode error: duplicate key "k39"`},
		{"ignored field", "/api/v1/incidents", `{"title":"t","severity":"low","x":1,"x":1}`,
			[]string{"body", "x"}, `JSON decode error: duplicate key "x"`},
		{"in an array", "/api/v1/incidents", `{"title":"t","severity":"low","x":[{"a":1},{"b":1,"a":2,"b":3}]}`,
			[]string{"body", "x", "1", "b"}, `JSON decode error: duplicate key "b"`},
		{"register", "/api/v1/register", `{"username":"alice","password":"password1","username":"bob"}`,
			[]string{"body", "username"}, `JSON decode error: duplicate key "username"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.request(t, "POST", tt.path, tt.body).mustStatus(t, "POST "+tt.path, http.StatusUnprocessableEntity)
			var body struct{ Detail []fieldError }
			r.json(t, &body)
			want := []fieldError{{Type: "json_invalid", Loc: tt.wantLoc, Msg: tt.wantMsg}}
			if !reflect.DeepEqual(body.Detail, want) {
				t.Errorf("detail = %+v, want %+v", body.Detail, want)
			}
		})
	}
	for _, tt := range []struct{ name, body string }{
		{"same key in sibling objects", `{"title":"t","severity":"low","labels":{"a":"1"},"x":{"a":1,"labels":2}}`},
		{"same keys in objects of an array", `{"title":"t","severity":"low","x":[{"a":1,"b":2},{"b":3,"a":4},{"a":{"a":{"a":5}}}]}`},
		{"keys differing in case", `{"title":"t","Title":"u","severity":"low"}`},
		{"many labels", many("k40")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts.request(t, "POST", "/api/v1/incidents", tt.body).mustStatus(t, "POST /api/v1/incidents", http.StatusCreated)
		})
	}
}
