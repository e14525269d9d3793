package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// hasEscapedNUL tells whether raw, valid JSON, has a \u0000 escape in a
// string (a raw NUL byte is not valid JSON).
func hasEscapedNUL(raw []byte) bool {
	for i := 0; i+5 < len(raw); i++ {
		if raw[i] == '\\' {
			if string(raw[i+1:i+6]) == "u0000" {
				return true
			}
			i++ // the escaped character, which may be a backslash
		}
	}
	return false
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
