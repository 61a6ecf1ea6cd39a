package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one value", ms(7), 0.99, 7 * time.Millisecond},
		{"median of odd count, unsorted", ms(5, 1, 3), 0.5, 3 * time.Millisecond},
		{"median of even count is the lower middle", ms(4, 1, 3, 2), 0.5, 2 * time.Millisecond},
		{"p99 of 100 is the 99th", ms(seq(100)...), 0.99, 99 * time.Millisecond},
		{"p99 of 1000 is the 990th", ms(seq(1000)...), 0.99, 990 * time.Millisecond},
		{"p100 is the maximum", ms(seq(10)...), 1, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, percentile(tt.in, tt.p))
		})
	}
}

// seq is 1..n.
func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func TestSampleMergeAndRate(t *testing.T) {
	var s sample
	s.merge(sample{lat: []time.Duration{1, 2}, ok: 2, lost: 1})
	s.merge(sample{lat: []time.Duration{3}, ok: 1})
	assert.Len(t, s.lat, 3)
	assert.Equal(t, 3, s.ok)
	assert.Equal(t, 1, s.lost)
	assert.Equal(t, 1500.0, perSecond(3000, 2*time.Second))
	assert.Zero(t, perSecond(5, 0))
	assert.Equal(t, 2.5, micros(2500*time.Nanosecond))
}
