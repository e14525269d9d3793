package main

import (
	"bytes"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// This file is a small Prometheus text exposition (format 0.0.4) writer:
// counters and histograms with labels, kept in memory, and gauges read
// when a scrape asks. The design card allows no client library in the
// server; what the server exposes, and where it counts it, is in
// metrics_server.go.

// series is one labelled value of a counter or a histogram.
type series struct {
	labels []string // values, in the order of the family's label names
	value  float64  // a counter's total
	// A histogram's observations: counts[i] of them were ≤ buckets[i]
	// (not cumulative until written), their sum and their number.
	counts []uint64
	sum    float64
	count  uint64
}

// family is a counter or histogram: a name, its HELP text, its label
// names and a series per set of label values seen (or preset to zero).
type family struct {
	name, help, kind string // kind: counter or histogram
	labelNames       []string
	buckets          []float64 // upper bounds, ascending; histograms only

	mu     sync.Mutex
	series map[string]*series // by labelKey
}

func newCounter(name, help string, labelNames ...string) *family {
	return &family{name: name, help: help, kind: "counter", labelNames: labelNames, series: map[string]*series{}}
}

func newHistogram(name, help string, buckets []float64, labelNames ...string) *family {
	return &family{name: name, help: help, kind: "histogram", labelNames: labelNames, buckets: buckets, series: map[string]*series{}}
}

// labelKey joins label values into a map key; no value holds a NUL.
func labelKey(values []string) string { return strings.Join(values, "\x00") }

// get returns the series of values, creating it at zero; f.mu is held.
func (f *family) get(values []string) *series {
	if len(values) != len(f.labelNames) {
		panic("metric " + f.name + ": wrong number of label values")
	}
	k := labelKey(values)
	s, ok := f.series[k]
	if !ok {
		s = &series{labels: slices.Clone(values)}
		if f.kind == "histogram" {
			s.counts = make([]uint64, len(f.buckets))
		}
		f.series[k] = s
	}
	return s
}

// preset makes the series of values exist at zero, so that a rate over
// it starts from the first scrape and not from the first event.
func (f *family) preset(values ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.get(values)
}

// add adds v to a counter.
func (f *family) add(v float64, values ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.get(values).value += v
}

// inc adds one to a counter.
func (f *family) inc(values ...string) { f.add(1, values...) }

// observe records v in a histogram.
func (f *family) observe(v float64, values ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.get(values)
	if i, _ := slices.BinarySearch(f.buckets, v); i < len(s.counts) {
		s.counts[i]++
	}
	s.sum += v
	s.count++
}

// value returns a counter's value, for tests.
func (f *family) value(values ...string) float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.get(values).value
}

// write writes the family, its series sorted by label values.
func (f *family) write(e *exposition) {
	f.mu.Lock()
	list := make([]series, 0, len(f.series))
	for _, s := range f.series {
		c := *s
		c.counts = slices.Clone(s.counts)
		list = append(list, c)
	}
	f.mu.Unlock()
	if len(list) == 0 {
		return // a family without series is left out, as parsers drop it
	}
	slices.SortFunc(list, func(a, b series) int { return slices.Compare(a.labels, b.labels) })
	e.header(f.name, f.help, f.kind)
	for _, s := range list {
		if f.kind == "counter" {
			e.sample(f.name, f.labelNames, s.labels, s.value)
			continue
		}
		names, values := append(slices.Clone(f.labelNames), "le"), append(slices.Clone(s.labels), "")
		var cumulative uint64
		for i, le := range f.buckets {
			cumulative += s.counts[i]
			values[len(values)-1] = formatFloat(le)
			e.sample(f.name+"_bucket", names, values, float64(cumulative))
		}
		values[len(values)-1] = "+Inf"
		e.sample(f.name+"_bucket", names, values, float64(s.count))
		e.sample(f.name+"_sum", f.labelNames, s.labels, s.sum)
		e.sample(f.name+"_count", f.labelNames, s.labels, float64(s.count))
	}
}

// gaugeInt is a gauge the server moves up and down as things happen.
type gaugeInt struct{ atomic.Int64 }

// exposition builds a scrape's body.
type exposition struct {
	buf bytes.Buffer
}

// header writes a family's HELP and TYPE lines.
func (e *exposition) header(name, help, kind string) {
	e.buf.WriteString("# HELP " + name + " " + escape(help, `\`+"\n") + "\n")
	e.buf.WriteString("# TYPE " + name + " " + kind + "\n")
}

// sample writes one line: the name, the labels and the value.
func (e *exposition) sample(name string, labelNames, labelValues []string, v float64) {
	e.buf.WriteString(name)
	if len(labelNames) > 0 {
		e.buf.WriteByte('{')
		for i, n := range labelNames {
			if i > 0 {
				e.buf.WriteByte(',')
			}
			e.buf.WriteString(n + `="` + escapeLabelValue(labelValues[i]) + `"`)
		}
		e.buf.WriteByte('}')
	}
	e.buf.WriteString(" " + formatFloat(v) + "\n")
}

// gauge writes a gauge without labels.
func (e *exposition) gauge(name, help string, v float64) {
	e.header(name, help, "gauge")
	e.sample(name, nil, nil, v)
}

// counter writes a counter without labels whose value is read at scrape.
func (e *exposition) counter(name, help string, v float64) {
	e.header(name, help, "counter")
	e.sample(name, nil, nil, v)
}

// escapeLabelValue escapes a label value: backslash, double quote and
// newline. Most values have none, and are returned as they are.
func escapeLabelValue(s string) string { return escape(s, `\"`+"\n") }

// escape backslash-escapes the characters of special in s (a newline as
// \n).
func escape(s, special string) string {
	if !strings.ContainsAny(s, special) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' && strings.ContainsRune(special, r):
			b.WriteString(`\n`)
		case strings.ContainsRune(special, r):
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
