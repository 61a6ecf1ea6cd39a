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

func TestFigureIsTheMedianOfRuns(t *testing.T) {
	f := newResults().fig("k", "n", "u", higherIsBetter)
	for _, v := range []float64{5, 100, 7} {
		f.set(sysFwproxy, v)
	}
	assert.Equal(t, 7.0, f.value[sysFwproxy])
	f.set(sysFwproxy, 1)
	assert.Equal(t, 5.0, f.value[sysFwproxy], "even count: the lower middle")
	assert.Equal(t, []float64{5, 100, 7, 1}, f.runs[sysFwproxy], "runs keep their order")
}

func TestTotalFigureSumsRuns(t *testing.T) {
	f := newResults().fig("lost", "lost", "count", lowerIsBetter)
	f.total = true
	for _, v := range []float64{0, 2, 0} {
		f.set(sysFwproxy, v)
	}
	assert.Equal(t, 2.0, f.value[sysFwproxy])
}

func TestTableBaselineColumns(t *testing.T) {
	r := newResults()
	f := r.fig("k", "rate", "rt/s", higherIsBetter)
	f.set(sysDirect, 100)
	f.set(sysFwproxy, 50)
	f.set(sysBaseline, 25)
	var b strings.Builder
	r.writeTable(&b)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	require.Len(t, lines, 3)
	assert.Contains(t, lines[0], "| baseline |")
	assert.Contains(t, lines[0], "fwproxy ÷ baseline")
	assert.Equal(t, "| rate | rt/s ↑ | 100 | 50.0 | — | 25.0 | 0.50× | — | 2.00× |", lines[2])
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 0.5: "0.50", 12.34: "12.3", 1234.5: "1234", -3: "-3.00"} {
		assert.Equal(t, want, formatValue(v), "%v", v)
	}
}

func TestTableOptionalColumns(t *testing.T) {
	tests := []struct {
		name string
		set  []system
		head string
		row  string
	}{
		{"microsocks", []system{sysMicrosocks},
			"| figure | unit | direct | fwproxy | danted | microsocks | fwproxy ÷ direct | fwproxy ÷ danted | fwproxy ÷ microsocks |",
			"| rate | conn/s ↑ | — | 100 | — | 50.0 | — | — | 2.00× |"},
		{"microsocks and the minimal CONNECT servers, in that order", []system{sysConnectMinThreads, sysConnectMin, sysMicrosocks},
			"| figure | unit | direct | fwproxy | danted | microsocks | minimal CONNECT (netpoll) | minimal CONNECT (threads) | fwproxy ÷ direct | fwproxy ÷ danted | fwproxy ÷ microsocks | fwproxy ÷ minimal CONNECT (netpoll) | fwproxy ÷ minimal CONNECT (threads) |",
			"| rate | conn/s ↑ | — | 100 | — | 50.0 | 50.0 | 50.0 | — | — | 2.00× | 2.00× | 2.00× |"},
		{"relay and baseline, in that order", []system{sysBaseline, sysRelay},
			"| figure | unit | direct | fwproxy | danted | minimal relay | baseline | fwproxy ÷ direct | fwproxy ÷ danted | fwproxy ÷ minimal relay | fwproxy ÷ baseline |",
			"| rate | conn/s ↑ | — | 100 | — | 50.0 | 50.0 | — | — | 2.00× | 2.00× |"},
		{"none", nil,
			"| figure | unit | direct | fwproxy | danted | fwproxy ÷ direct | fwproxy ÷ danted |",
			"| rate | conn/s ↑ | — | 100 | — | — | — |"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newResults()
			f := r.fig("k", "rate", "conn/s", higherIsBetter)
			f.set(sysFwproxy, 100)
			for _, s := range tt.set {
				f.set(s, 50)
			}
			var b strings.Builder
			r.writeTable(&b)
			lines := strings.Split(strings.TrimSpace(b.String()), "\n")
			require.Len(t, lines, 3)
			assert.Equal(t, tt.head, lines[0])
			assert.Equal(t, strings.Count(lines[0], "|"), strings.Count(lines[1], "|"), "the rule has a cell per column")
			assert.Equal(t, tt.row, lines[2])
		})
	}
}
