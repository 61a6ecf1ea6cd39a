package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The spliced relay reports bytes per chunk, not per read: these tests pin
// that a trickle shorter than a chunk still counts as activity, in either
// direction alone, and that every byte is counted by the end.

// TestSplicedTrickleIsNotIdle: a stream that sends a little at intervals
// shorter than IdleTimeout (but never a whole chunk) stays open well past
// IdleTimeout, whichever direction it flows in.
func TestSplicedTrickleIsNotIdle(t *testing.T) {
	// Generous, so that a loaded machine stretching a pause by a few
	// hundred milliseconds does not look like an idle session.
	const idle = 600 * time.Millisecond
	for _, tt := range []struct {
		name     string
		download bool
	}{{"client to target", false}, {"target to client", true}} {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan int, 1)
			target := tcpTarget(t, "127.0.0.1:0", func(c net.Conn) {
				if tt.download {
					for range 8 {
						if _, err := c.Write([]byte{'t'}); err != nil {
							return
						}
						time.Sleep(idle / 6)
					}
					c.(*net.TCPConn).CloseWrite()
					io.Copy(io.Discard, c)
					return
				}
				n, _ := io.Copy(io.Discard, c)
				got <- int(n)
			})
			cfg := testConfig()
			cfg.IdleTimeout = idle
			ts := startServer(t, cfg, Deps{})
			c := dialClient(t, ts.addr)
			c.greet(methodNoAuth)
			rep, _ := c.request(CommandConnect, spec(target))
			require.Equal(t, ReplySucceeded, rep)
			if tt.download {
				// 8 bytes over more than one idle period, then EOF: not an
				// abort, which would cut the stream short.
				b, err := io.ReadAll(c.br)
				require.NoError(t, err)
				assert.Equal(t, bytes.Repeat([]byte{'t'}, 8), b)
				c.conn.Close()
			} else {
				for range 8 {
					c.write([]byte{'c'})
					time.Sleep(idle / 6)
				}
				require.NoError(t, c.conn.CloseWrite())
				select {
				case n := <-got:
					assert.Equal(t, 8, n, "the target got every byte before the client's EOF")
				case <-time.After(testTimeout):
					t.Fatal("target saw no EOF")
				}
			}
			require.True(t, waitFor(testTimeout, func() bool { return ts.rec.openSessions() == 0 }))
			ts.rec.mu.Lock()
			defer ts.rec.mu.Unlock()
			if tt.download {
				assert.Equal(t, 8, ts.rec.bytes[DirTargetToClient])
			} else {
				assert.Equal(t, 8, ts.rec.bytes[DirClientToTarget])
			}
		})
	}
}

// TestSplicedBulkCountsEveryByte: more than one chunk each way, and the
// metrics add up to exactly what was sent.
func TestSplicedBulkCountsEveryByte(t *testing.T) {
	const size = 3*spliceChunk + 12345
	target := echoTarget(t)
	ts := startServer(t, testConfig(), Deps{})
	c := dialClient(t, ts.addr)
	c.greet(methodNoAuth)
	rep, _ := c.request(CommandConnect, spec(target))
	require.Equal(t, ReplySucceeded, rep)
	payload := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
	go func() {
		c.conn.Write(payload)
		c.conn.CloseWrite()
	}()
	back, err := io.ReadAll(c.br)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(payload, back), "echoed stream differs")
	require.True(t, waitFor(testTimeout, func() bool { return ts.rec.openSessions() == 0 }))
	ts.rec.mu.Lock()
	defer ts.rec.mu.Unlock()
	assert.Equal(t, size, ts.rec.bytes[DirClientToTarget])
	assert.Equal(t, size, ts.rec.bytes[DirTargetToClient])
}
