package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, time.Second, o.dur)
	assert.Equal(t, 3, o.rounds)
	assert.Equal(t, []int{1000, 10000}, o.leases)
	assert.Equal(t, []int{2, 8}, o.churnPlayers)
	assert.Empty(t, o.connectMin, "no minimal CONNECT unless asked for (make bench passes bin/connect-min)")
	for _, s := range scenarios {
		assert.True(t, o.only[s], "every scenario runs by default: %s", s)
	}

	o, err = parseFlags([]string{"-only", "udp, churn", "-churn-players", "4", "-leases", "500", "-danted", "", "-connect-min", "bin/connect-min"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, map[string]bool{"udp": true, "churn": true}, o.only)
	assert.Equal(t, []int{4}, o.churnPlayers)
	assert.Equal(t, []int{500}, o.leases)
	assert.Empty(t, o.danted)
	assert.Equal(t, "bin/connect-min", o.connectMin)
	assert.Equal(t, []int{50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000}, mustParse(t).stream.steps)
	assert.Equal(t, 9600*time.Microsecond, mustParse(t).stream.interval())

	o, err = parseFlags([]string{"-stream-players", "2,4", "-stream-bitrate", "8000000", "-stream-size", "1000", "-stream-window", "1s", "-stream-max-p99", "2ms"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, []int{2, 4}, o.stream.steps)
	assert.Equal(t, time.Millisecond, o.stream.interval())
	assert.Equal(t, 2*time.Millisecond, o.stream.bound)

	for _, bad := range [][]string{
		{"-only", "connect,nope"},
		{"-leases", "0"},
		{"-leases", "50000"},
		{"-churn-players", "x"},
		{"-rounds", "0"},
		{"-duration", "-1s"},
		{"-only", "stream,streams"},
		{"-stream-players", "0"},
		{"-stream-size", "10"},
		{"-stream-size", "70000"},
		{"-stream-bitrate", "0"},
		{"-stream-window", "0s"},
		{"-stream-max-p99", "0s"},
	} {
		_, err := parseFlags(bad, io.Discard)
		assert.Error(t, err, "%q", bad)
	}
}

func TestWriteGoals(t *testing.T) {
	r := newResults()
	c := r.fig("connect/1/rate", "c", "conn/s", higherIsBetter)
	c.set(sysFwproxy, 6000)
	c.set(sysDanted, 2000)
	c.set(sysMicrosocks, 6000)
	c.set(sysConnectMin, 5000)
	c.set(sysConnectMinThreads, 6600)
	c16 := r.fig("connect/16/rate", "c", "conn/s", higherIsBetter)
	c16.set(sysFwproxy, 7200)
	c16.set(sysMicrosocks, 6000)
	u := r.fig("udp/16/100/p99", "p", "µs", lowerIsBetter)
	u.set(sysFwproxy, 600)
	u.set(sysDanted, 1000)
	lost := r.fig("churn/2/lost", "l", "count", lowerIsBetter)
	lost.total = true
	lost.set(sysFwproxy, 0)
	lost.set(sysFwproxy, 1)

	maxN := r.fig("stream/assoc/maxN", "n", "players", higherIsBetter)
	maxN.set(sysFwproxy, 400)
	maxN.set(sysDanted, 200)
	maxN.set(sysDirect, 700)
	maxN.set(sysRelay, 500)
	maxN.set(sysRelayPerPlayer, 300)
	cpu := r.fig("stream/assoc/cpu", "c", "s", lowerIsBetter)
	cpu.set(sysFwproxy, 20)
	cpu.set(sysDanted, 40)
	cpu.set(sysRelay, 16)
	cpu.set(sysRelayPerPlayer, 18)
	var b strings.Builder
	r.writeGoals(&b, []int{2})
	out := b.String()
	assert.Contains(t, out, "| CONNECT rate ≥ 3× danted, 1 client(s) | 3.00× danted | yes |")
	assert.Contains(t, out, "| UDP p99 ≤ ½ danted, 16 association(s), 100 B | 0.60× danted | **no** |")
	assert.Contains(t, out, "| churn, 2 players: 0 datagrams lost | 1.00 lost | **no** |", "a loss in any round fails")
	assert.Contains(t, out, "| CONNECT rate ≥ 3× danted, 16 client(s) | — | not measured |")
	assert.Contains(t, out, "| streaming, associations: largest zero-loss N ≥ 3× danted | 2.00× danted (direct 3.50×, minimal relay 2.50×, minimal relay, per player 1.50×) | **no** |",
		"the machine's and the bare hop's own ratios beside")
	assert.Contains(t, out, "| streaming, associations: CPU per datagram ≤ ⅓ danted | 0.50× danted (minimal relay 0.40×, minimal relay, per player 0.45×) | **no** |")
	assert.Contains(t, out, "| CONNECT rate ahead of microsocks, 1 client(s) | 1.00× microsocks (minimal CONNECT (netpoll) 0.83×, minimal CONNECT (threads) 1.10×) | **no** |",
		"level is not ahead; the floors' own ratios beside")
	assert.Contains(t, out, "| CONNECT rate ahead of microsocks, 16 client(s) | 1.20× microsocks | yes |", "no floors measured, none shown")
}

func mustParse(t *testing.T, args ...string) options {
	o, err := parseFlags(args, io.Discard)
	require.NoError(t, err)
	return o
}

func TestBitrateText(t *testing.T) {
	for bps, want := range map[int]string{1_000_000: "1.00 Mbit/s", 2_500_000: "2.50 Mbit/s", 64_000: "64.0 kbit/s", 500: "500 bit/s"} {
		assert.Equal(t, want, bitrateText(bps))
	}
}
