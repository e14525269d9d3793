package main

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// readableQuery is raw with what the original service (Starlette) read
// as plain characters escaped, so Go reads them the same way and drops
// nothing: a ';' is part of a value, not a separator, and a '%' not
// followed by two hex digits is a '%'.
func readableQuery(raw string) string {
	if !strings.ContainsAny(raw, ";%") {
		return raw
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		switch {
		case raw[i] == ';':
			b.WriteString("%3B")
		case raw[i] == '%' && (i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2])):
			b.WriteString("%25")
		default:
			b.WriteByte(raw[i])
		}
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// queryProblems checks a request's query string once for every handler:
// one Go still cannot read whole (over 10,000 parameters) is refused, as
// the handlers would see it without its filters; so are values PostgreSQL
// cannot store.
func queryProblems(raw string) []fieldError {
	values, err := url.ParseQuery(raw)
	if err != nil {
		return []fieldError{{Type: "value_error", Loc: []string{"query"}, Msg: "Value error, the query string cannot be read: " + err.Error()}}
	}
	return badTextValues("query", values)
}

// badTextValues reports values PostgreSQL cannot store as text: invalid
// UTF-8 (a query string or form may carry any bytes) and NUL characters.
func badTextValues(where string, values url.Values) []fieldError {
	var problems []fieldError
	for name, vs := range values {
		for _, v := range vs {
			if !utf8.ValidString(name) || !utf8.ValidString(v) || strings.ContainsRune(name+v, 0) {
				problems = append(problems, fieldError{Type: "string_unicode", Loc: []string{where, strings.ToValidUTF8(name, "\ufffd")},
					Msg: "Input should be a valid string: UTF-8 without NUL characters"})
				break
			}
		}
	}
	return problems
}

// parseIntParam parses an integer path or query parameter within [min, max].
func parseIntParam(loc []string, raw string, min, max int64) (int64, *fieldError) {
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return 0, &fieldError{Type: "int_parsing", Loc: loc, Msg: "Input should be a valid integer, unable to parse string as an integer"}
	}
	if n < min {
		return 0, &fieldError{Type: "greater_than_equal", Loc: loc, Msg: fmt.Sprintf("Input should be greater than or equal to %d", min)}
	}
	if n > max {
		return 0, &fieldError{Type: "less_than_equal", Loc: loc, Msg: fmt.Sprintf("Input should be less than or equal to %d", max)}
	}
	return n, nil
}

// queryEnum reads a query parameter that may repeat or hold a
// comma-separated list, every value one of allowed.
func queryEnum(problems []fieldError, q url.Values, name string, allowed []string) ([]string, []fieldError) {
	var values []string
	for _, raw := range q[name] {
		for _, v := range strings.Split(raw, ",") {
			v = strings.TrimSpace(v)
			if v == "" {
				continue
			}
			if !slices.Contains(allowed, v) {
				problems = append(problems, fieldError{Type: "enum", Loc: []string{"query", name}, Msg: "Input should be " + quoteList(allowed)})
				continue
			}
			values = append(values, v)
		}
	}
	return values, problems
}

// queryInt reads an integer query parameter within [min, max], def when absent.
func queryInt(problems []fieldError, q url.Values, name string, def, min, max int64) (int64, []fieldError) {
	v := q.Get(name)
	if v == "" {
		return def, problems
	}
	n, perr := parseIntParam([]string{"query", name}, v, min, max)
	if perr != nil {
		return def, append(problems, *perr)
	}
	return n, problems
}

// queryTime reads an RFC 3339 time query parameter, in UTC.
func queryTime(problems []fieldError, q url.Values, name string) (*time.Time, []fieldError) {
	v := q.Get(name)
	if v == "" {
		return nil, problems
	}
	t, ok := parseClientTime(v)
	if !ok {
		return nil, append(problems, fieldError{Type: "datetime_parsing", Loc: []string{"query", name}, Msg: msgClientTime})
	}
	return &t, problems
}

// msgClientTime is the message of a time parseClientTime refuses.
const msgClientTime = "Input should be a valid datetime in RFC 3339 format, such as 2026-11-26T21:58:00Z, in the years 0001 to 9999 in UTC"

// parseClientTime reads a time a client sent, in RFC 3339, and returns it
// in UTC. It is the one parser of client times: PostgreSQL refuses an
// offset of 16 hours or more ("time zone displacement out of range"), which
// Go accepts, so the time goes to the database in UTC; and a time whose UTC
// year is outside 1 to 9999 (0001-01-01T00:00:00+01:00 is in year 0) is
// refused: the API writes no time outside those years, and year 0 and
// before are BC dates to PostgreSQL.
func parseClientTime(v string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, false
	}
	t = t.UTC()
	if t.Year() < 1 || t.Year() > 9999 {
		return time.Time{}, false
	}
	return t, true
}

func cloneQuery(q url.Values) url.Values {
	c := url.Values{}
	for k, v := range q {
		c[k] = append([]string(nil), v...)
	}
	return c
}

// pathID reads the {id} path parameter.
func pathID(r *http.Request) (int64, error) {
	id, perr := parseIntParam([]string{"path", "id"}, r.PathValue("id"), -1<<63, 1<<63-1)
	if perr != nil {
		return 0, invalid(*perr)
	}
	return id, nil
}

// pageParams reads limit and after for the lists that page forward by id.
func pageParams(q url.Values) (limit int, after int64, err error) {
	var problems []fieldError
	l, problems := queryInt(problems, q, "limit", 100, 1, 1000)
	after, problems = queryInt(problems, q, "after", 0, 0, 1<<63-1)
	return int(l), after, invalid(problems...)
}

// setNextPage sets the Link header (RFC 8288) to the next page: this
// request with param set to value.
func setNextPage(w http.ResponseWriter, r *http.Request, param, value string) {
	next := cloneQuery(r.URL.Query())
	next.Set(param, value)
	w.Header().Set("Link", "<"+r.URL.Path+"?"+next.Encode()+`>; rel="next"`)
}

// nextAfter makes the Link to the next page of a list paged with limit
// and after, from the last item's key.
func nextAfter[T any](key func(T) int64) func(T) (string, string) {
	return func(last T) (string, string) { return "after", strconv.FormatInt(key(last), 10) }
}
