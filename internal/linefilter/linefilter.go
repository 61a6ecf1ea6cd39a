// Package linefilter is a second application filter, used only by tests:
// it shows that a filter is a package that implements proxy.Filter, asks
// internal/expect for its UDP and is registered with proxy.Filters, with
// no change to the proxy, the metrics or the leases. cmd/fwproxy does not
// register it.
//
// Its protocol is one line per command on a TCP connection. The client
// announces its UDP port with
//
//	PORT <n>\n
//
// (n a decimal port, 1–65535) and the server then sends UDP datagrams to
// the control connection's peer IP at port n, as an MMS server does with
// a UDP funnel. The filter expects UDP for (client, n) from the server and
// rewrites the line to the external port it got; every other line, and a
// line longer than MaxLine, passes unchanged. The server's direction
// passes untouched.
package linefilter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"fwproxy/internal/expect"
	"fwproxy/proxy"
)

// MaxLine bounds a line the filter reads whole; a longer one is forwarded
// as it comes and never parsed.
const MaxLine = 256

// acquireTimeout bounds getting the expectation for one PORT line.
const acquireTimeout = 5 * time.Second

// Filter is the line filter; one serves every session.
type Filter struct {
	leases expect.Leaser
}

var (
	_ proxy.Filter        = (*Filter)(nil)
	_ proxy.FilterSession = (*session)(nil)
)

// New returns the filter, taking its UDP from l.
func New(l expect.Leaser) *Filter { return &Filter{leases: l} }

// Name is the filter's name for the proxy.
func (f *Filter) Name() string { return "line" }

// NewSession starts filtering one connection.
func (f *Filter) NewSession(_ context.Context, info proxy.SessionInfo) (proxy.FilterSession, error) {
	return &session{f: f, info: info}, nil
}

type session struct {
	f    *Filter
	info proxy.SessionInfo

	// mu guards udp and closed (client-to-server goroutine and Close).
	mu     sync.Mutex
	udp    *expect.UDP
	closed bool
}

// ClientToServer forwards the client's lines, rewriting PORT lines.
func (s *session) ClientToServer(ctx context.Context, dst io.Writer, src io.Reader) error {
	br := bufio.NewReaderSize(src, MaxLine)
	long := false // inside a line longer than MaxLine
	for {
		line, err := br.ReadSlice('\n')
		if err == nil && !long {
			line = s.rewrite(ctx, line)
		}
		long = errors.Is(err, bufio.ErrBufferFull) || (long && err != nil)
		if len(line) > 0 {
			if _, werr := dst.Write(line); werr != nil {
				return fmt.Errorf("linefilter: write: %w", werr)
			}
		}
		switch {
		case err == nil || errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return nil
		default:
			return fmt.Errorf("linefilter: read: %w", err)
		}
	}
}

// ServerToClient passes the server's bytes through.
func (s *session) ServerToClient(_ context.Context, dst io.Writer, src io.Reader) error {
	_, err := io.Copy(dst, src)
	return err
}

// rewrite returns line with its port replaced by the expectation's
// external port, or line itself when it is not a PORT line or no UDP
// could be expected (the server then sends to a port nobody permitted).
func (s *session) rewrite(ctx context.Context, line []byte) []byte {
	port, ok := ParsePortLine(line)
	if !ok {
		return line
	}
	actx, cancel := context.WithTimeout(ctx, acquireTimeout)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return line
	}
	u, err := expect.ExpectUDP(actx, s.f.leases, expect.Want{
		Client: s.info.Client.Addr(), User: s.info.User, Port: port,
		Peer: s.info.Target.Addr(), Session: s.info.Session,
	})
	if err != nil {
		return line
	}
	if s.udp != nil {
		s.udp.Release()
	}
	s.udp = u
	return AppendPortLine(nil, u.Port())
}

// Close releases the session's expectation.
func (s *session) Close() error {
	s.mu.Lock()
	u := s.udp
	s.udp, s.closed = nil, true
	s.mu.Unlock()
	if u != nil {
		u.Release()
	}
	return nil
}

var portPrefix = []byte("PORT ")

// ParsePortLine reads "PORT <n>\n" (an optional \r before \n): n is
// decimal, 1–65535, without sign or leading zeros beyond one digit.
func ParsePortLine(line []byte) (uint16, bool) {
	rest, ok := bytes.CutPrefix(line, portPrefix)
	if !ok {
		return 0, false
	}
	rest, ok = bytes.CutSuffix(rest, []byte("\n"))
	if !ok {
		return 0, false
	}
	rest, _ = bytes.CutSuffix(rest, []byte("\r"))
	if len(rest) == 0 || len(rest) > 5 || (rest[0] == '0' && len(rest) > 1) {
		return 0, false
	}
	for _, c := range rest {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(string(rest), 10, 16)
	if err != nil || n == 0 {
		return 0, false
	}
	return uint16(n), true
}

// AppendPortLine appends "PORT <port>\n".
func AppendPortLine(dst []byte, port uint16) []byte {
	dst = append(dst, portPrefix...)
	dst = strconv.AppendUint(dst, uint64(port), 10)
	return append(dst, '\n')
}
