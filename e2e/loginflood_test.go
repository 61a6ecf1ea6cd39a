package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// socksGreetLogin connects from src to the proxy at addr, offers methods
// and, when the proxy picks username/password, logs in as user. It returns
// the method the proxy chose and the RFC 1929 status (0 without a login),
// after the proxy closed the connection when the login failed.
func socksGreetLogin(ctx context.Context, src, addr string, methods []byte, user, pass string) (method, status byte, err error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	msg := append([]byte{5, byte(len(methods))}, methods...)
	if slices.Contains(methods, 2) {
		msg = append(msg, 1, byte(len(user)))
		msg = append(append(msg, user...), byte(len(pass)))
		msg = append(msg, pass...)
	}
	if _, err := c.Write(msg); err != nil {
		return 0, 0, err
	}
	var b [2]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, 0, err
	}
	method = b[1]
	if method == 2 {
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return method, 0, err
		}
		status = b[1]
	}
	if method != 2 || status != 0 {
		// Wait for the proxy to close: its side keeps the TIME_WAIT.
		if _, err := c.Read(b[:1]); !errors.Is(err, io.EOF) {
			return method, status, fmt.Errorf("proxy did not close after refusing: %v", err)
		}
	}
	return method, status, nil
}

// floodWhile runs conns goroutines repeating attempt from the moment it is
// called until measure returns, once the attempts have been answered conns
// times; it returns how many were answered.
func floodWhile(t *testing.T, conns int, attempt func(ctx context.Context) error, measure func()) int64 {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	var (
		wg       sync.WaitGroup
		answered atomic.Int64
		going    = make(chan struct{}) // closed at the conns-th answer
		failed   = make(chan error, conns)
	)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				actx, cancel := context.WithTimeout(ctx, testTimeout)
				err := attempt(actx)
				cancel()
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					failed <- err
					return
				}
				if answered.Add(1) == int64(conns) {
					close(going)
				}
			}
		}()
	}
	var err error
	select {
	case <-going:
		measure()
	case err = <-failed:
	case <-time.After(testTimeout):
		err = errors.New("flood did not get going")
	}
	stop()
	wg.Wait()
	require.NoError(t, err, "flood")
	select {
	case err := <-failed:
		t.Fatalf("flood: %v", err)
	default:
	}
	return answered.Load()
}

// TestLoginFloodThroughTheBinary is issue 10's case 6 end to end: while 64
// connections from 127.0.0.2 send wrong passwords to the real fwproxy, a
// valid login from 127.0.0.3 is about as fast as while the same flood is
// refused before authentication (the flood's connections cost CPU either
// way; the passwords must not add to it), and the flooder is counted and
// logged as rate-limited.
func TestLoginFloodThroughTheBinary(t *testing.T) {
	const (
		flooder, legitimate = "127.0.0.2", "127.0.0.3"
		floodConns          = 64
		// Without the limits the password flood made a login over ten
		// times slower than the connection flood did; with them, about one.
		maxSlowdown = 4
	)
	// The flood's connections come from one address: lift the per-client
	// session cap so that only the login limits are measured here.
	p := startProxy(t, "-users", cheapUsersFile(t, map[string]string{"alice": "s3cret"}), "-log-level", "info",
		"-max-sessions-per-client", "0")

	login := func() time.Duration {
		var times []time.Duration
		for range 5 {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			start := time.Now()
			_, status, err := socksGreetLogin(ctx, legitimate, p.socks, []byte{2}, "alice", "s3cret")
			times = append(times, time.Since(start))
			cancel()
			require.NoError(t, err)
			require.Equal(t, byte(0), status, "a valid login failed")
		}
		slices.Sort(times)
		return times[len(times)/2]
	}
	alone := login()

	var underConnections, underPasswords time.Duration
	connections := floodWhile(t, floodConns, func(ctx context.Context) error {
		method, _, err := socksGreetLogin(ctx, flooder, p.socks, []byte{0}, "", "")
		if err == nil && method != 0xff {
			err = fmt.Errorf("no-auth greeting got method %d", method)
		}
		return err
	}, func() { underConnections = login() })
	passwordsStart := time.Now()
	refused := floodWhile(t, floodConns, func(ctx context.Context) error {
		_, status, err := socksGreetLogin(ctx, flooder, p.socks, []byte{2}, "alice", "guess")
		if err == nil && status != 1 {
			err = fmt.Errorf("wrong password got status %d", status)
		}
		return err
	}, func() { underPasswords = login() })
	floodTime := time.Since(passwordsStart)

	t.Logf("valid login: %v alone, %v under %d refused connections, %v under %d refused logins",
		alone, underConnections, connections, underPasswords, refused)
	assert.Less(t, underPasswords, maxSlowdown*underConnections, "a valid login is starved by the password flood")

	// The default burst of 5 was checked, and what refilled at the
	// default 10 a minute while the flood ran; the rest was refused
	// unchecked.
	allowed := 5 + int(floodTime.Minutes()*10) + 1
	m := p.scrape(t)
	failures := metricValue(t, m, `fwproxy_socks_authentications_total{method="username_password",result="failure"}`)
	limited := metricValue(t, m, `fwproxy_socks_authentications_total{method="username_password",result="rate_limited"}`)
	assert.LessOrEqual(t, failures, float64(allowed), "wrong passwords checked")
	assert.GreaterOrEqual(t, limited, float64(refused)-failures, "refused without a check")
	assert.Equal(t, 15.0, metricValue(t, m, `fwproxy_socks_authentications_total{method="username_password",result="success"}`))
	assert.Equal(t, int(failures), strings.Count(p.logs.String(), `"msg":"login failed","client":"127.0.0.2:`))
	assert.Equal(t, 1, strings.Count(p.logs.String(), `"msg":"login refused: too many failures","client":"127.0.0.2:`),
		"refusals are logged once a minute per source, not once each")
}

// metricValue returns the value of the series named exactly by series in
// a scrape.
func metricValue(t *testing.T, scrape, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err, line)
			return f
		}
	}
	t.Fatalf("series %s not in the scrape", series)
	return 0
}
