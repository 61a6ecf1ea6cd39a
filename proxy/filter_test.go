package proxy

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// upperFilter is a test filter: it upper-cases what the client sends and
// passes the server's bytes through, and records what it was told.
type upperFilter struct {
	mu     sync.Mutex
	infos  []SessionInfo
	closed int
}

func (f *upperFilter) Name() string { return "upper" }

func (f *upperFilter) NewSession(_ context.Context, info SessionInfo) (FilterSession, error) {
	f.mu.Lock()
	f.infos = append(f.infos, info)
	f.mu.Unlock()
	return &upperSession{f: f}, nil
}

type upperSession struct{ f *upperFilter }

func (s *upperSession) ClientToServer(_ context.Context, dst io.Writer, src io.Reader) error {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(bytes.ToUpper(buf[:n])); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *upperSession) ServerToClient(_ context.Context, dst io.Writer, src io.Reader) error {
	_, err := io.Copy(dst, src)
	return err
}

func (s *upperSession) Close() error {
	s.f.mu.Lock()
	s.f.closed++
	s.f.mu.Unlock()
	return nil
}

func TestFilterHook(t *testing.T) {
	filtered := echoTarget(t)
	plain := echoTarget(t)
	f := &upperFilter{}
	users := testUsers(t)
	ts := startServer(t, testConfig(), Deps{Credentials: users, Filters: map[uint16]Filter{filtered.Port(): f}})

	tests := []struct {
		name   string
		target netip.AddrPort
		want   string
	}{
		{"registered port runs through the filter", filtered, "HELLO MEDIA"},
		{"other ports relay untouched", plain, "hello media"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialClient(t, ts.addr)
			c.greet(methodUserPass)
			require.Equal(t, byte(0), c.login("alice", "s3cret"))
			rep, _ := c.request(CommandConnect, spec(tt.target))
			require.Equal(t, ReplySucceeded, rep)
			c.write([]byte("hello media"))
			require.NoError(t, c.conn.CloseWrite())
			got, err := io.ReadAll(c.br)
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(got))
		})
	}
	require.True(t, waitFor(testTimeout, func() bool { return ts.rec.openSessions() == 0 }))
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(t, f.infos, 1)
	assert.Equal(t, 1, f.closed, "Close is called once the session ends")
	info := f.infos[0]
	assert.Equal(t, "alice", info.User)
	assert.Equal(t, filtered, info.Target)
	assert.True(t, info.Client.Addr().IsLoopback())
	assert.True(t, info.Local.IsValid())
	assert.NotZero(t, info.Session, "the filter gets the session id for its log lines")
}
