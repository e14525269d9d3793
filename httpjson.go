package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
)

// maxBodyBytes bounds every request body.
const maxBodyBytes = 1 << 20

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
		return nil, errBodyTimeout
	}
	return nil, errBodyUnreadable
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
	if err := unmarshalExact(raw, dst); err != nil {
		// Only a field type without a lenient decoder gets here.
		return invalid(fieldError{Type: "json_invalid", Loc: []string{loc}, Msg: "JSON decode error"})
	}
	return nil
}

// unmarshalExact decodes the JSON object raw into the struct dst points to,
// its field names matched exactly, as the original's were: encoding/json
// would also take "Title" for "title", and the last of two spellings.
// Unknown fields are ignored. Objects inside a body (an escalation
// policy's steps) are read with it too.
func unmarshalExact(raw []byte, dst any) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return err
	}
	names := jsonFieldNames(reflect.TypeOf(dst).Elem())
	dropped := false
	for name := range fields {
		if !names[name] {
			delete(fields, name)
			dropped = true
		}
	}
	if dropped { // the usual object has only known fields: decode it as it came
		raw, _ = marshalJSON(fields)
	}
	return json.Unmarshal(raw, dst)
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

// decodeForeign decodes body, one JSON object in a format its sender
// defines (a hook's payload), into the typed dst and lists what is wrong
// with it: a value of the wrong type, text that is not UTF-8, a key given
// twice. Unknown fields are ignored, as every such format asks.
func decodeForeign(body []byte, dst any) []fieldError {
	dec := json.NewDecoder(bytes.NewReader(body))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return []fieldError{{Type: "json_invalid", Loc: []string{"body"}, Msg: "JSON decode error"}}
	}
	if _, err := dec.Token(); err != io.EOF {
		return []fieldError{{Type: "json_invalid", Loc: []string{"body"}, Msg: "JSON decode error: unexpected data after the JSON value"}}
	}
	if raw[0] != '{' {
		return []fieldError{{Type: "model_attributes_type", Loc: []string{"body"}, Msg: "Input should be a JSON object"}}
	}
	if problems := jsonBodyProblems(raw, "body"); len(problems) > 0 {
		return problems
	}
	if hasEscapedNUL(raw) { // PostgreSQL stores no NUL, in text or in jsonb
		return []fieldError{{Type: "string_unicode", Loc: []string{"body"}, Msg: "Input should be a valid string: UTF-8 without NUL characters"}}
	}
	err := json.Unmarshal(raw, dst)
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &typeErr):
		return []fieldError{{Type: "type_error", Loc: append([]string{"body"}, strings.Split(typeErr.Field, ".")...),
			Msg: "Input should be " + typeErr.Type.String()}}
	}
	return []fieldError{{Type: "value_error", Loc: []string{"body"}, Msg: "Value error, " + err.Error()}}
}
