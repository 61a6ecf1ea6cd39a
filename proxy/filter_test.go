package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
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
	var table Filters
	require.NoError(t, table.Register(f, filtered.Port()))
	ts := startServer(t, testConfig(), Deps{Credentials: users, Filters: &table})

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

// namedFilter is a filter that only has a name, for the registration tests.
type namedFilter string

func (f namedFilter) Name() string { return string(f) }
func (namedFilter) NewSession(context.Context, SessionInfo) (FilterSession, error) {
	return passThrough{}, nil
}

func TestFiltersRegister(t *testing.T) {
	tests := []struct {
		name    string
		first   []uint16
		second  Filter
		ports   []uint16
		wantErr string
		// want is the table afterwards: port to filter name.
		want map[uint16]string
	}{
		{"distinct ports", []uint16{1755}, namedFilter("line"), []uint16{554, 7070}, "",
			map[uint16]string{1755: "mms", 554: "line", 7070: "line"}},
		{"another filter's port", []uint16{1755, 8755}, namedFilter("line"), []uint16{554, 8755},
			`proxy: register filter "line" for port 8755: the port already runs filter "mms"; a port has at most one filter`,
			map[uint16]string{1755: "mms", 8755: "mms"}},
		{"a port listed twice", nil, namedFilter("line"), []uint16{554, 554},
			`proxy: register filter "line" for port 554: the port already runs filter "line"`,
			map[uint16]string{}},
		{"port 0", nil, namedFilter("line"), []uint16{0}, `proxy: register filter "line": port 0 is not a port`, map[uint16]string{}},
		{"no filter", nil, nil, []uint16{554}, "no filter for ports [554]", map[uint16]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var table Filters
			if tt.first != nil {
				require.NoError(t, table.Register(namedFilter("mms"), tt.first...))
			}
			err := table.Register(tt.second, tt.ports...)
			if tt.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tt.wantErr)
				if strings.Contains(tt.wantErr, "already runs") {
					assert.True(t, errors.Is(err, ErrFilterExists), "a clash is ErrFilterExists")
				}
			}
			got := map[uint16]string{}
			for p, f := range table.clone() {
				got[p] = f.Name()
			}
			assert.Equal(t, tt.want, got, "a refused registration registers nothing")
		})
	}
}
