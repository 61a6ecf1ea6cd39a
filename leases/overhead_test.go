package leases

import (
	"net/netip"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBufferedOverheadIsHonest measures the heap that buffered datagrams
// really hold and compares it with what the caps charge them
// (bufferedCost), so bufferedOverhead cannot drift from the truth: the
// charge must cover the memory (else a byte cap does not bound it), and not
// by so much that the caps bite long before memory is at stake. Ratios of
// two measurements in the same run; no absolute number is assumed but the
// charge itself.
func TestBufferedOverheadIsHonest(t *testing.T) {
	tests := []struct {
		name     string
		payload  int
		perLease int
	}{
		{"zero-byte, full default count cap", 0, 256},
		{"zero-byte, array just grown (worst slack)", 0, 9},
		{"zero-byte, array half full", 0, 160},
		{"small", 1, 256},
		{"voice", 160, 256},
		{"odd size just above a size class", 1025, 200},
		{"media", 1200, 200},
	}
	const nLeases = 256
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxBufferedDatagrams = 0
			cfg.MaxBufferedBytes = 0
			cfg.MaxBufferedBytesTotal = 1 << 40
			env := newEnv(t, cfg)
			var ls []*lease
			for i := range nLeases {
				h, err := env.m.Acquire(ctxT(t), key(uint16(1000+i)), assoc(newSink()))
				require.NoError(t, err)
				h.Release()
				ls = append(ls, h.l)
			}
			payload := make([]byte, tt.payload)
			from := netip.MustParseAddrPort("192.0.2.1:5004")

			before := heapInUse()
			for _, l := range ls {
				l.mu.Lock()
				for range tt.perLease {
					require.Equal(t, ReasonNone, l.bufferLocked(payload, from))
				}
				l.mu.Unlock()
			}
			after := heapInUse()
			n := nLeases * tt.perLease
			measured := float64(after-before) / float64(n)
			charged := float64(env.m.Stats().BufferedBytes) / float64(n)
			ratio := measured / charged
			t.Logf("payload %d B: heap %.1f B, charged %.1f B per datagram (ratio %.2f)", tt.payload, measured, charged, ratio)
			assert.Equal(t, float64(bufferedCost(tt.payload)), charged)
			assert.LessOrEqual(t, ratio, 1.0, "the charge must cover the memory a buffered datagram holds")
			assert.GreaterOrEqual(t, ratio, 0.4, "the charge must not be far above the memory it stands for")
			runtime.KeepAlive(ls)
		})
	}
}

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
