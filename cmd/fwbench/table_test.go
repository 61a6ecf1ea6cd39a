package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTableRatios(t *testing.T) {
	r := newResults()
	f := r.fig("connect/1", "CONNECT rate, 1 client", "conn/s", higherIsBetter)
	f.set(sysDirect, 20000)
	f.set(sysFwproxy, 9000)
	f.set(sysDanted, 2000)
	lat := r.fig("connect/1/p99", "CONNECT p99, 1 client", "µs", lowerIsBetter)
	lat.set(sysDirect, 50)
	lat.set(sysFwproxy, 125)
	mem := r.fig("rss", "RSS per idle lease", "KiB", lowerIsBetter)
	mem.set(sysFwproxy, 5.5)

	assert.Same(t, f, r.fig("connect/1", "ignored", "ignored", lowerIsBetter), "a key names one figure")
	q, ok := f.ratio(sysDanted)
	require.True(t, ok)
	assert.InDelta(t, 4.5, q, 1e-9)
	_, ok = lat.ratio(sysDanted)
	assert.False(t, ok, "no danted value, no ratio")

	var b strings.Builder
	r.writeTable(&b)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	require.Len(t, lines, 5)
	assert.Equal(t, "| CONNECT rate, 1 client | conn/s ↑ | 20000 | 9000 | 2000 | 0.45× | 4.50× |", lines[2])
	assert.Equal(t, "| CONNECT p99, 1 client | µs ↓ | 50.0 | 125 | — | 2.50× | — |", lines[3])
	assert.Equal(t, "| RSS per idle lease | KiB ↓ | — | 5.50 | — | — | — |", lines[4])
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 0.5: "0.50", 12.34: "12.3", 1234.5: "1234", -3: "-3.00"} {
		assert.Equal(t, want, formatValue(v), "%v", v)
	}
}
