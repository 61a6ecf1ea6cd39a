package udpio

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzWriteRead sends any head and payload through a Writer to a Reader
// whose buffers hold bufSize bytes, over loopback: the datagram arrives
// whole when it fits and is reported too large, with its first bytes, when
// it does not.
func FuzzWriteRead(f *testing.F) {
	f.Add([]byte{}, []byte{}, uint16(1), false)
	f.Add([]byte{0, 0, 0, 1, 127, 0, 0, 1, 0, 9}, []byte("payload"), uint16(2048), false)
	f.Add([]byte("head"), []byte("payload"), uint16(8), true)
	c := listen(f, "udp4", "127.0.0.1")
	peer := listen(f, "udp", "::")
	w, err := NewWriter(peer)
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, head, payload []byte, bufSize uint16, keep bool) {
		// 65507 is the largest UDP payload over IPv4.
		if len(head) > 65507 {
			head = head[:65507]
		}
		payload = payload[:min(len(payload), 65507-len(head))]
		size := int(bufSize%4096) + 1
		p := Policy{Buffers: NewPool(size, 1)}
		if keep {
			p.Keep = time.Hour // the reader owns the read deadline then
		} else {
			c.SetReadDeadline(time.Now().Add(testTimeout))
			defer c.SetReadDeadline(time.Time{})
		}
		r, err := NewReader(c, p)
		require.NoError(t, err)
		defer r.Close()
		require.NoError(t, w.WriteTo(head, payload, addrOf(c)))
		b, n, from, err := r.Next()
		require.NoError(t, err)
		require.Equal(t, addrOf(peer).Port(), from.Port())
		require.True(t, from.Addr().Is4(), "sender %v not unmapped", from)
		whole := append(append([]byte(nil), head...), payload...)
		require.Equal(t, len(whole), n)
		require.True(t, bytes.Equal(whole[:min(len(whole), size)], b))
	})
}
