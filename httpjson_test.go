package main

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

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
