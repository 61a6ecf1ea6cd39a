package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzParseRequest feeds arbitrary bytes to the greeting and request
// parsers. Properties: no panic; a failure is a requestError with a reply or
// a read error; an accepted request re-encodes to exactly the bytes read.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80})
	f.Add([]byte{5, 2, 0, 2, 5, 1, 0, 3, 9, 'l', 'o', 'c', 'a', 'l', 'h', 'o', 's', 't', 1, 187})
	f.Add([]byte{5, 1, 0, 5, 3, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1b, 0x58})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 3, 9, '1', '2', '7', '.', '0', '.', '0', '.', '1', 0x06, 0xdb})
	f.Add([]byte{5, 0})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 9})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		methods, err := readGreeting(r)
		if err != nil {
			return
		}
		consumedGreeting := 2 + len(methods)
		req, err := readRequest(r)
		if err != nil {
			var re *requestError
			require.True(t, errors.As(err, &re), "error %v is not a requestError", err)
			return
		}
		consumed := len(data) - consumedGreeting - r.Buffered()
		raw := bytes.Clone(data[consumedGreeting : consumedGreeting+consumed])
		// RSV is ignored, as most servers do; it is not echoed.
		raw[2] = 0
		if req.DestAddr.FQDN != "" {
			// An IP literal sent as a name is kept as a name on the wire.
			req.DestAddr.IP = nil
		}
		require.Equal(t, raw, appendRequest(nil, Command(req.Command), req.DestAddr))
	})
}
