package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// maxBodyBytes bounds every request body.
const maxBodyBytes = 1 << 20

// fieldError is one validation problem, in the shape FastAPI clients parse.
type fieldError struct {
	Type string   `json:"type"`
	Loc  []string `json:"loc"`
	Msg  string   `json:"msg"`
}

// validationError is a 422 listing every problem found in a request.
type validationError struct {
	problems []fieldError
}

func (e *validationError) Error() string {
	msgs := make([]string, len(e.problems))
	for i, p := range e.problems {
		msgs[i] = strings.Join(p.Loc, ".") + ": " + p.Msg
	}
	return "validation: " + strings.Join(msgs, "; ")
}

// invalid wraps problems in a *validationError, or returns nil when there are none.
func invalid(problems ...fieldError) error {
	if len(problems) == 0 {
		return nil
	}
	return &validationError{problems: problems}
}

// httpError is an error whose status and client-facing detail are chosen by
// the handler. extra adds keys to the body next to "detail".
type httpError struct {
	status int
	detail string
	header http.Header
	extra  map[string]any
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s", e.status, e.detail) }

var (
	errNotAuthenticated = unauthorized("Not authenticated")
	errBadCredentials   = unauthorized("Could not validate credentials")
	errTokenExpired     = unauthorized("Token expired")
	errBodyTooLarge     = &httpError{status: http.StatusRequestEntityTooLarge, detail: "Request body too large"}
)

// unauthorized is a 401 that asks for a bearer token, as OAuth2 clients
// expect.
func unauthorized(detail string) *httpError {
	return &httpError{status: http.StatusUnauthorized, detail: detail, header: http.Header{"Www-Authenticate": {"Bearer"}}}
}

// readJSON decodes the request body, a single JSON object of at most
// maxBodyBytes, into dst. Unknown fields are ignored, as the original API
// did. Request fields are jsonString and friends, which never fail to
// decode, so the handler's validate reports every field problem at once.
func readJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	return readBody(w, r, dst, false)
}

// readOptionalJSON is readJSON for routes whose body may be left out (or
// empty), leaving dst as it is.
func readOptionalJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	return readBody(w, r, dst, true)
}

func readBody(w http.ResponseWriter, r *http.Request, dst any, optional bool) error {
	body, err := readRawBody(w, r)
	if err != nil {
		return err
	}
	if optional && len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return decodeObject(body, "body", dst)
}

// readRawBody reads the whole request body, whatever its encoding: at most
// maxBodyBytes, within the deadline bodyDeadline set.
func readRawBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return body, nil
	case errors.As(err, &tooLarge):
		return nil, errBodyTooLarge
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, &httpError{status: http.StatusRequestTimeout, detail: "Request body not received in time"}
	}
	return nil, &httpError{status: http.StatusBadRequest, detail: "Could not read request body"}
}

// decodeObject decodes one JSON object into dst; loc names it in errors.
func decodeObject(body []byte, loc string, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return invalid(fieldError{Type: "json_invalid", Loc: []string{loc}, Msg: "JSON decode error"})
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid(fieldError{Type: "json_invalid", Loc: []string{loc}, Msg: "JSON decode error: unexpected data after the JSON value"})
	}
	if raw[0] != '{' {
		return invalid(fieldError{Type: "model_attributes_type", Loc: []string{loc}, Msg: "Input should be a valid dictionary or object to extract fields from"})
	}
	// encoding/json would store U+FFFD for what it cannot decode, and
	// the last of two values of a key.
	if err := invalid(jsonBodyProblems(raw, loc)...); err != nil {
		return err
	}
	// Field names match exactly, as the original's did: encoding/json
	// would also take "Title" for "title", and the last of two spellings.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return invalid(fieldError{Type: "json_invalid", Loc: []string{loc}, Msg: "JSON decode error"})
	}
	names := jsonFieldNames(reflect.TypeOf(dst).Elem())
	dropped := false
	for name := range fields {
		if !names[name] {
			delete(fields, name) // unknown fields are ignored
			dropped = true
		}
	}
	if dropped { // the usual body has only known fields: decode it as it came
		raw, _ = marshalJSON(fields)
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		// Only a field type without a lenient decoder gets here.
		return invalid(fieldError{Type: "json_invalid", Loc: []string{loc}, Msg: "JSON decode error"})
	}
	return nil
}

// maxBodyProblems bounds the problems jsonBodyProblems reports: a body
// with more is not one a person corrects field by field.
const maxBodyProblems = 20

// jsonBodyProblems finds in raw, one valid JSON value, what encoding/json
// would decode without a word into something else than the client sent:
//   - a string (a key, or in a field the handler ignores, too) that is
//     not valid UTF-8 or has an escaped surrogate (\ud800 to \udfff)
//     outside a pair, which would become U+FFFD: string_unicode;
//   - a key that comes twice in one object, whose last value would win:
//     json_invalid.
//
// A problem's loc is loc and the path to the string or key:
// ["body", "labels", "env"]. It scans the bytes itself: json.Decoder's
// Token takes half a second over a 1 MiB array of numbers.
func jsonBodyProblems(raw []byte, loc string) []fieldError {
	var (
		problems []fieldError
		stack    []jsonFrame
		reported = map[string]bool{}
	)
	report := func(p fieldError) {
		key := p.Type + "\x00" + strings.Join(p.Loc, "\x00")
		if !reported[key] && len(problems) < maxBodyProblems {
			reported[key] = true
			problems = append(problems, p)
		}
	}
	path := func() []string {
		l := []string{loc}
		for _, f := range stack {
			l = append(l, f.at())
		}
		return l
	}
	for i := 0; i < len(raw); {
		top := len(stack) - 1
		switch c := raw[i]; c {
		case ' ', '\t', '\n', '\r', ':', ',':
			i++
			continue
		case '{', '[':
			f := jsonFrame{object: c == '{', wantKey: c == '{'}
			if len(stack) < cap(stack) { // reuse the keys of the object that was here
				f.keys = stack[:len(stack)+1][len(stack)].keys[:0]
			}
			stack = append(stack, f)
			i++
			continue
		case '}', ']':
			stack = stack[:top]
			i++
		case '"':
			end, escaped := jsonStringEnd(raw, i)
			lit := raw[i:end]
			i = end
			isKey := top >= 0 && stack[top].object && stack[top].wantKey
			if isKey {
				key := jsonKey(lit, escaped)
				stack[top].key, stack[top].wantKey = key, false
				if stack[top].seen(key) {
					report(fieldError{Type: "json_invalid", Loc: path(), Msg: fmt.Sprintf("JSON decode error: duplicate key %q", key)})
				}
			}
			if !utf8.Valid(lit) || escaped && hasLoneSurrogate(lit) {
				report(fieldError{Type: "string_unicode", Loc: path(), Msg: "Input should be a valid string: UTF-8 without unpaired surrogates"})
			}
			if isKey {
				continue
			}
		default: // a number, true, false or null
			for i < len(raw) && !jsonValueEnds(raw[i]) {
				i++
			}
		}
		// A value has ended: its container moves on.
		if top := len(stack) - 1; top >= 0 {
			stack[top].next()
		}
	}
	return problems
}

// jsonStringEnd returns the index just past the JSON string literal that
// starts at raw[start], and whether it has escapes.
func jsonStringEnd(raw []byte, start int) (end int, escaped bool) {
	for i := start + 1; i < len(raw); i++ {
		switch raw[i] {
		case '\\':
			escaped = true
			i++ // the escaped character
		case '"':
			return i + 1, escaped
		}
	}
	return len(raw), escaped
}

// jsonValueEnds tells whether c ends a number or literal.
func jsonValueEnds(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', ',', ']', '}':
		return true
	}
	return false
}

// jsonKey decodes a key's literal, as encoding/json would.
func jsonKey(lit []byte, escaped bool) string {
	if !escaped && utf8.Valid(lit) {
		return string(lit[1 : len(lit)-1])
	}
	var key string
	_ = json.Unmarshal(lit, &key)
	return key
}

// jsonFrame is an object or array jsonBodyProblems is in.
type jsonFrame struct {
	object  bool
	wantKey bool            // in an object: the next string is a key
	key     string          // in an object: the key of the value being read
	keys    []string        // in an object: the keys so far, while they are few
	set     map[string]bool // in an object: the keys so far, once they are many
	index   int             // in an array: the index of the value being read
}

// seen tells whether key came before in the object, and remembers it.
func (f *jsonFrame) seen(key string) bool {
	if f.set != nil {
		if f.set[key] {
			return true
		}
		f.set[key] = true
		return false
	}
	if slices.Contains(f.keys, key) {
		return true
	}
	f.keys = append(f.keys, key)
	if len(f.keys) > 16 { // a linear search no longer pays
		f.set = make(map[string]bool, 2*len(f.keys))
		for _, k := range f.keys {
			f.set[k] = true
		}
	}
	return false
}

// at is the frame's part of a loc: the key or index being read.
func (f *jsonFrame) at() string {
	if f.object {
		return f.key
	}
	return strconv.Itoa(f.index)
}

// next moves the frame past the value it was reading.
func (f *jsonFrame) next() {
	if f.object {
		f.wantKey = true
	} else {
		f.index++
	}
}

// hasLoneSurrogate tells whether lit, a JSON string literal, escapes a
// UTF-16 surrogate that is not half of a pair: a high one (\ud800 to
// \udbff) not followed by an escaped low one (\udc00 to \udfff), or a low
// one alone. An escaped backslash before "ud800" escapes only itself.
func hasLoneSurrogate(lit []byte) bool {
	for i := 0; i < len(lit); i++ {
		if lit[i] != '\\' {
			continue
		}
		i++ // the escaped character
		if lit[i] != 'u' {
			continue
		}
		r := hex4(lit[i+1 : i+5])
		i += 4
		switch {
		case 0xdc00 <= r && r <= 0xdfff:
			return true
		case 0xd800 <= r && r <= 0xdbff:
			if i+6 < len(lit) && lit[i+1] == '\\' && lit[i+2] == 'u' {
				if low := hex4(lit[i+3 : i+7]); 0xdc00 <= low && low <= 0xdfff {
					i += 6
					continue
				}
			}
			return true
		}
	}
	return false
}

// hex4 reads the four hex digits of a \u escape, which a valid JSON string
// has.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// jsonFieldNames are the JSON names of struct type t's fields.
func jsonFieldNames(t reflect.Type) map[string]bool {
	if names, ok := fieldNameCache.Load(t); ok {
		return names.(map[string]bool)
	}
	names := map[string]bool{}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case f.Anonymous && name == "" && indirect(f.Type).Kind() == reflect.Struct:
			// Promoted, as encoding/json does, even from an unexported type.
			maps.Copy(names, jsonFieldNames(indirect(f.Type)))
		case name == "-" || !f.IsExported():
		case name == "":
			names[f.Name] = true
		default:
			names[name] = true
		}
	}
	fieldNameCache.Store(t, names)
	return names
}

func indirect(t reflect.Type) reflect.Type {
	if t.Kind() == reflect.Pointer {
		return t.Elem()
	}
	return t
}

var fieldNameCache sync.Map // reflect.Type → map[string]bool

// marshalJSON is the one JSON encoder, for responses, stream events and
// stored event payloads alike. It leaves <, > and & as they are, as the
// original service did: encoding/json would write each as six bytes, and
// Content-Type with nosniff already keeps browsers from reading a response
// as HTML.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// writeJSON is the only writer of JSON responses.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := marshalJSON(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	return writeEncoded(w, status, b)
}

// writeEncoded writes b, JSON encoded by marshalJSON, as the response.
func writeEncoded(w http.ResponseWriter, status int, b []byte) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if _, err := w.Write(append(b, '\n')); err != nil {
		return errResponseStarted
	}
	return nil
}

// pageBudget bounds the bytes of one page of a list, so that the memory a
// list request takes does not grow with the size of what it lists. An
// ordinary incident encodes to about 500 bytes, so a page of 1,000 of them
// is never cut; one of large incidents stops early, and its Link header
// continues from there.
const pageBudget = 1 << 20

// page is one page of a list, encoded as it is read: a store's list method
// offers it rows through add until it holds limit items or pageBudget bytes
// (the item that passes the budget is kept, so every page makes progress).
// A row offered to a full page means that more follow.
type page[T any] struct {
	limit int
	view  func(T) any // the item as the API shows it
	body  []byte      // '[' and the items so far, comma-separated
	count int
	last  T
	more  bool
}

func newPage[T any](limit int, view func(T) any) *page[T] {
	return &page[T]{limit: limit, view: view, body: []byte{'['}}
}

// add encodes item into the page; false when the page was already full.
func (p *page[T]) add(item T) (bool, error) {
	if p.count == p.limit || len(p.body) >= pageBudget {
		p.more = true
		return false, nil
	}
	b, err := marshalJSON(p.view(item))
	if err != nil {
		return false, fmt.Errorf("encode list item: %w", err)
	}
	if p.count > 0 {
		p.body = append(p.body, ',')
	}
	p.body = append(p.body, b...)
	p.count++
	p.last = item
	return true, nil
}

// write sends the page as a JSON array and, when more follow, a Link to
// the next page: this request with the parameter next names (from the
// last item) set.
func (p *page[T]) write(w http.ResponseWriter, r *http.Request, next func(last T) (param, value string)) error {
	if p.more {
		param, value := next(p.last)
		setNextPage(w, r, param, value)
	}
	return writeEncoded(w, http.StatusOK, append(p.body, ']'))
}

// writeError is the one mapping from errors to HTTP responses. Errors it does
// not know become a 500 with a generic body; the error itself goes to the
// request log, never to the client.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		verr *validationError
		herr *httpError
	)
	switch {
	case errors.Is(err, errResponseStarted):
		return
	case errors.As(err, &verr):
		_ = writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"detail": verr.problems})
	case errors.As(err, &herr):
		for k, v := range herr.header {
			w.Header()[k] = v
		}
		body := map[string]any{"detail": herr.detail}
		for k, v := range herr.extra {
			body[k] = v
		}
		_ = writeJSON(w, herr.status, body)
	case errors.Is(err, errNotFound):
		_ = writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not Found"})
	case errors.Is(err, errConflict):
		_ = writeJSON(w, http.StatusConflict, map[string]any{"detail": "Conflict"})
	case errors.Is(err, errUnavailable):
		noteRequestError(r, err)
		_ = writeJSON(w, http.StatusServiceUnavailable, map[string]any{"detail": "Database unavailable"})
	default:
		noteRequestError(r, err)
		_ = writeJSON(w, http.StatusInternalServerError, map[string]any{"detail": "Internal Server Error"})
	}
}

// errResponseStarted tells writeError the client has gone or the response
// was already sent: nothing more can be written.
var errResponseStarted = errors.New("response already started")

// jsonString is a request field that remembers whether it was present and
// whether it held a JSON string, so validation can say exactly what is wrong.
type jsonString struct {
	Value   string
	Present bool
	Null    bool
	IsText  bool
}

func (s *jsonString) UnmarshalJSON(b []byte) error {
	s.Present = true
	s.Null = string(b) == "null"
	s.IsText = json.Unmarshal(b, &s.Value) == nil && b[0] == '"'
	return nil
}

// jsonLabels is the labels field: a flat JSON object of strings. Like
// jsonString it never fails to decode; check says what is wrong.
type jsonLabels struct {
	Present bool
	Object  map[string]json.RawMessage // nil unless the value is an object
}

func (l *jsonLabels) UnmarshalJSON(b []byte) error {
	l.Present = string(b) != "null"
	if json.Unmarshal(b, &l.Object) != nil || b[0] != '{' {
		l.Object = nil
	}
	return nil
}

// Limits on labels.
const (
	maxLabels        = 64
	maxLabelKeyLen   = 100
	maxLabelValueLen = 1000
)

// check validates the labels: at most 64 pairs, keys of 1 to 100
// characters without ':' (label filters are key:value), string values of at
// most 1,000 characters.
func (l jsonLabels) check(problems []fieldError, loc []string) []fieldError {
	switch {
	case !l.Present:
		return problems
	case l.Object == nil:
		return append(problems, fieldError{Type: "dict_type", Loc: loc, Msg: "Input should be a valid dictionary"})
	case len(l.Object) > maxLabels:
		return append(problems, fieldError{Type: "too_long", Loc: loc, Msg: fmt.Sprintf("Dictionary should have at most %d items", maxLabels)})
	}
	keys := make([]string, 0, len(l.Object))
	for k := range l.Object {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		keyLoc := append(slices.Clone(loc), k)
		if n := utf8.RuneCountInString(k); n == 0 || n > maxLabelKeyLen || strings.ContainsAny(k, ":\x00") {
			problems = append(problems, fieldError{Type: "value_error", Loc: keyLoc,
				Msg: fmt.Sprintf("Value error, a label key has 1 to %d characters and no ':'", maxLabelKeyLen)})
			continue
		}
		var v jsonString
		v.UnmarshalJSON(l.Object[k])
		problems = stringRule{required: true, max: maxLabelValueLen}.check(problems, keyLoc, v)
	}
	return problems
}

// values returns the labels as a map; validate them first.
func (l jsonLabels) values() map[string]string {
	m := make(map[string]string, len(l.Object))
	for k, raw := range l.Object {
		var v string
		json.Unmarshal(raw, &v)
		m[k] = v
	}
	return m
}

// stringRule is what one request string must satisfy.
type stringRule struct {
	required bool
	min, max int // in characters; max 0 means no limit
	notBlank bool
	oneOf    []string
	pattern  *regexp.Regexp
}

// check validates one string field, appending its problems.
func (rule stringRule) check(problems []fieldError, loc []string, s jsonString) []fieldError {
	switch {
	case !s.Present || (s.Null && !rule.required):
		if rule.required {
			return append(problems, fieldError{Type: "missing", Loc: loc, Msg: "Field required"})
		}
		return problems
	case !s.IsText:
		return append(problems, fieldError{Type: "string_type", Loc: loc, Msg: "Input should be a valid string"})
	case strings.ContainsRune(s.Value, 0):
		return append(problems, fieldError{Type: "value_error", Loc: loc, Msg: "Value error, string must not contain NUL characters"})
	}
	if len(rule.oneOf) > 0 {
		for _, v := range rule.oneOf {
			if s.Value == v {
				return problems
			}
		}
		return append(problems, fieldError{Type: "enum", Loc: loc, Msg: "Input should be " + quoteList(rule.oneOf)})
	}
	n := utf8.RuneCountInString(s.Value)
	switch {
	case n < rule.min:
		return append(problems, fieldError{Type: "string_too_short", Loc: loc, Msg: fmt.Sprintf("String should have at least %d %s", rule.min, plural(rule.min, "character"))})
	case rule.max > 0 && n > rule.max:
		return append(problems, fieldError{Type: "string_too_long", Loc: loc, Msg: fmt.Sprintf("String should have at most %d %s", rule.max, plural(rule.max, "character"))})
	case rule.notBlank && strings.TrimSpace(s.Value) == "":
		return append(problems, fieldError{Type: "string_too_short", Loc: loc, Msg: "String should not be blank"})
	case rule.pattern != nil && !rule.pattern.MatchString(s.Value):
		return append(problems, fieldError{Type: "string_pattern_mismatch", Loc: loc, Msg: fmt.Sprintf("String should match pattern '%s'", rule.pattern)})
	}
	return problems
}

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

// quoteList renders 'a', 'b' or 'c' the way pydantic lists allowed values.
func quoteList(values []string) string {
	q := make([]string, len(values))
	for i, v := range values {
		q[i] = "'" + v + "'"
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
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
