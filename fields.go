package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on labels.
const (
	maxLabels        = 64
	maxLabelKeyLen   = 100
	maxLabelValueLen = 1000
)

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

// jsonValue is a request field of a type without its own lenient decoder
// (a boolean, a number, an array): it keeps the raw value for validation.
type jsonValue struct {
	Present bool
	Raw     json.RawMessage
}

func (v *jsonValue) UnmarshalJSON(b []byte) error {
	v.Present, v.Raw = true, slices.Clone(b)
	return nil
}

// boolField validates an optional boolean.
func boolField(problems []fieldError, loc []string, v jsonValue) (*bool, []fieldError) {
	if !v.Present {
		return nil, problems
	}
	var b bool
	if string(v.Raw) == "null" || json.Unmarshal(v.Raw, &b) != nil {
		return nil, append(problems, fieldError{Type: "bool_type", Loc: loc, Msg: "Input should be a valid boolean"})
	}
	return &b, problems
}

// intField reads an integer field within [min, max]; nil when absent or
// null (a problem if required).
func intField(problems []fieldError, loc []string, v jsonValue, required bool, min, max int64) (*int64, []fieldError) {
	if !v.Present || string(v.Raw) == "null" {
		if required {
			problems = append(problems, fieldError{Type: "missing", Loc: loc, Msg: "Field required"})
		}
		return nil, problems
	}
	var n int64
	if err := json.Unmarshal(v.Raw, &n); err != nil {
		return nil, append(problems, fieldError{Type: "int_type", Loc: loc, Msg: "Input should be a valid integer"})
	}
	if _, ferr := parseIntParam(loc, strconv.FormatInt(n, 10), min, max); ferr != nil {
		return nil, append(problems, *ferr)
	}
	return &n, problems
}
