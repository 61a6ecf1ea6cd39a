package mmsplayer_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/e2e/asf"
	"fwproxy/e2e/mmsplayer"
	"fwproxy/e2e/mmsserver"
	"fwproxy/mmsfilter"
)

// These tests play against the emulated server directly (no proxy); the
// e2e package plays through fwproxy.

const testTimeout = 30 * time.Second

// playerIP is the players' address: a loopback address picked at random
// for this test process, so that no other test on the machine binds the
// port a player is between closing and binding again.
var playerIP = netip.AddrFrom4([4]byte{127, byte(64 + rand.IntN(64)), byte(rand.IntN(256)), byte(1 + rand.IntN(254))})

func entry(t testing.TB, packets int) *asf.File {
	t.Helper()
	f, err := asf.ReadFile("../testdata/sine440.asf")
	require.NoError(t, err)
	e, err := f.Truncate(packets)
	require.NoError(t, err)
	return e
}

// server runs the emulated server with "pl": entries of e, the last tail
// packets of each held back until the player speaks.
func server(t *testing.T, e *asf.File, entries, tail int) *mmsserver.Server {
	t.Helper()
	cfg := mmsserver.DefaultConfig()
	cfg.PacketInterval = time.Millisecond
	cfg.TailPackets = tail
	cfg.PingInterval = 5 * time.Millisecond
	cfg.Playlists = map[string]mmsserver.Playlist{"pl": mmsserver.Repeat("e", e, entries)}
	s, err := mmsserver.Listen("127.0.0.1:0", cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func config(s *mmsserver.Server, mode mmsplayer.Mode) mmsplayer.Config {
	c := mmsplayer.DefaultConfig()
	c.Server = s.Addr()
	c.Path = "pl"
	c.Mode = mode
	// A loopback address of the players' own (see Config.LocalIP).
	c.LocalIP = playerIP
	c.LossWait = 200 * time.Millisecond
	return c
}

func play(t *testing.T, c mmsplayer.Config) *mmsplayer.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	return mmsplayer.Play(ctx, c)
}

// TestPlayDirect: every entry, every packet, in MMSU and MMST, with the
// payloads checked against the asset.
func TestPlayDirect(t *testing.T) {
	e := entry(t, 6)
	for _, mode := range []mmsplayer.Mode{mmsplayer.ModeAnnounced, mmsplayer.ModeTCP} {
		t.Run(mode.String(), func(t *testing.T) {
			s := server(t, e, 4, 2)
			c := config(s, mode)
			c.Verify = func(_ int, loc uint32, p []byte) error {
				if !bytes.Equal(p, e.Packets[loc]) {
					return errors.New("differs")
				}
				return nil
			}
			r := play(t, c)
			require.NoError(t, r.Err)
			assert.Empty(t, r.Failures)
			require.Len(t, r.Entries, 4)
			for _, er := range r.Entries {
				assert.Equal(t, mmsplayer.EntryReport{Index: er.Index, Expected: 6, Received: 6}, er)
			}
			assert.Equal(t, 24, r.Received())
			assert.Zero(t, r.Lost())
			assert.Zero(t, r.Stray)
			if mode == mmsplayer.ModeTCP {
				assert.Zero(t, r.Port)
			} else {
				assert.NotZero(t, r.Port)
			}
		})
	}
}

// TestRebindWithoutProxyLosesTheTail: straight to the server, a player that
// closes its port and binds it again misses what arrives in between: the
// held tail, which the server sends when the player's Logging comes, after
// its socket is closed. The player names exactly those packets: the loss
// report is honest, and needs no proxy to be shown.
func TestRebindWithoutProxyLosesTheTail(t *testing.T) {
	e := entry(t, 6)
	s := server(t, e, 4, 2)
	c := config(s, mmsplayer.ModeAnnounced)
	c.Plan = mmsplayer.Always(mmsplayer.Step{Order: mmsplayer.OrderCloseFirst, Gap: 100 * time.Millisecond})
	r := play(t, c)
	require.NoError(t, r.Err)
	assert.Empty(t, r.Failures, "binding the port again works")
	require.Len(t, r.Entries, 4)
	for i, er := range r.Entries {
		if i > 0 {
			assert.Equal(t, mmsplayer.OrderCloseFirst, er.Step.Order)
		}
		for _, loc := range er.Lost {
			assert.GreaterOrEqual(t, loc, uint32(4), "entry %d: only the tail is lost", i)
		}
		if i == 3 {
			assert.Empty(t, er.Lost, "the last entry has no transition after it")
		}
	}
	assert.Positive(t, r.Lost(), "the tail landed on a closed port")
	assert.Equal(t, r.Expected(), r.Received()+r.Lost())
	assert.Positive(t, s.Stats().TailPackets)
}

// TestVerifyCountsCorrupt: a packet that fails Verify is corrupt and lost.
func TestVerifyCountsCorrupt(t *testing.T) {
	s := server(t, entry(t, 4), 1, 0)
	c := config(s, mmsplayer.ModeAnnounced)
	c.Verify = func(_ int, loc uint32, _ []byte) error {
		if loc == 2 {
			return errors.New("bad")
		}
		return nil
	}
	r := play(t, c)
	require.NoError(t, r.Err)
	require.Len(t, r.Entries, 1)
	assert.Equal(t, 1, r.Entries[0].Corrupt)
	assert.Equal(t, []uint32{2}, r.Entries[0].Lost)
}

// dropFirstReadBlock relays client commands to the server except the
// first ReadBlock, so that the player's Header timer fires.
func dropFirstReadBlock(t *testing.T, to *mmsserver.Server) *net.TCPAddr {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// Dial from the player's address: the server sends UDP to its
		// TCP peer's IP.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: c.RemoteAddr().(*net.TCPAddr).IP}}
		up, err := d.Dial("tcp", to.Addr().String())
		if err != nil {
			return
		}
		defer up.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(c, up)
			c.Close()
		}()
		br := bufio.NewReader(c)
		dropped := false
		for {
			head, err := br.Peek(16)
			if err != nil {
				up.Close()
				return
			}
			pkt := make([]byte, binary.LittleEndian.Uint32(head[8:])+16)
			if _, err := io.ReadFull(br, pkt); err != nil {
				return
			}
			if !dropped && binary.LittleEndian.Uint32(pkt[36:]) == uint32(mmsfilter.MIDReadBlock) {
				dropped = true
				continue
			}
			if _, err := up.Write(pkt); err != nil {
				return
			}
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// TestHeaderTimerRetries: no header after ReadBlock: the player cancels
// and asks again ([MS-MMSP] §3.1.6), and plays.
func TestHeaderTimerRetries(t *testing.T) {
	s := server(t, entry(t, 3), 1, 0)
	c := config(s, mmsplayer.ModeAnnounced)
	c.Server = dropFirstReadBlock(t, s).AddrPort()
	c.HeaderTimeout = 50 * time.Millisecond
	r := play(t, c)
	require.NoError(t, r.Err)
	require.Len(t, r.Entries, 1)
	assert.Equal(t, 1, r.Entries[0].HeaderRetries)
	assert.Equal(t, 3, r.Entries[0].Received)
}

// fakeSocks answers every request with reply code rep.
func fakeSocks(t *testing.T, rep byte) string {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(testTimeout))
			greeting := make([]byte, 3)
			request := make([]byte, 10)
			if _, err := io.ReadFull(c, greeting); err == nil {
				c.Write([]byte{5, 0})
				if _, err := io.ReadFull(c, request); err == nil {
					c.Write([]byte{5, rep, 0, 1, 0, 0, 0, 0, 0, 0})
				}
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestFailuresAreReported: every way a session can fail ends it with the
// failure named, never a hang.
func TestFailuresAreReported(t *testing.T) {
	s := server(t, entry(t, 2), 1, 0)
	taken, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(playerIP, 0)))
	require.NoError(t, err)
	defer taken.Close()
	silent, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer silent.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	closed, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	closedAddr := closed.Addr().(*net.TCPAddr).AddrPort()
	closed.Close()

	tests := []struct {
		name string
		edit func(*mmsplayer.Config)
		want mmsplayer.FailureKind
	}{
		{"port taken", func(c *mmsplayer.Config) { c.Port = uint16(taken.LocalAddr().(*net.UDPAddr).Port) }, mmsplayer.FailBind},
		{"association refused", func(c *mmsplayer.Config) {
			c.Mode = mmsplayer.ModeFirewall
			c.Proxy = fakeSocks(t, 0x07)
		}, mmsplayer.FailAssociate},
		{"CONNECT refused", func(c *mmsplayer.Config) { c.Proxy = fakeSocks(t, 0x05) }, mmsplayer.FailConnect},
		{"server down", func(c *mmsplayer.Config) { c.Server = closedAddr }, mmsplayer.FailConnect},
		{"server silent", func(c *mmsplayer.Config) {
			c.Server = silent.Addr().(*net.TCPAddr).AddrPort()
			c.StepTimeout = 100 * time.Millisecond
		}, mmsplayer.FailTimeout},
		{"no such file", func(c *mmsplayer.Config) { c.Path = "nope" }, mmsplayer.FailProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := config(s, mmsplayer.ModeAnnounced)
			tt.edit(&c)
			r := play(t, c)
			require.Error(t, r.Err)
			require.Len(t, r.Failures, 1, "%v", r.Failures)
			assert.Equal(t, tt.want, r.Failures[0].Kind, "%v", r.Failures[0])
			assert.Equal(t, 1, r.Count(tt.want))
		})
	}
}

func TestConfigValidate(t *testing.T) {
	ok := mmsplayer.DefaultConfig()
	ok.Server = netip.MustParseAddrPort("127.0.0.1:1755")
	tests := []struct {
		name   string
		edit   func(*mmsplayer.Config)
		wantOK bool
	}{
		{"default with a server", func(*mmsplayer.Config) {}, true},
		{"no server", func(c *mmsplayer.Config) { c.Server = mmsplayer.Config{}.Server }, false},
		{"firewall client without a proxy", func(c *mmsplayer.Config) { c.Mode = mmsplayer.ModeFirewall }, false},
		{"no step timeout", func(c *mmsplayer.Config) { c.StepTimeout = 0 }, false},
		{"no loss wait", func(c *mmsplayer.Config) { c.LossWait = 0 }, false},
		{"negative retries", func(c *mmsplayer.Config) { c.HeaderRetries = -1 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			if tt.wantOK {
				assert.NoError(t, c.Validate())
			} else {
				assert.Error(t, c.Validate())
				assert.Error(t, mmsplayer.Play(context.Background(), c).Err, "Play refuses it too")
			}
		})
	}
}

func TestPortsNeverShared(t *testing.T) {
	p := mmsplayer.NewPorts(30000, 30003)
	var got []uint16
	for range 4 {
		port, err := mmsplayer.TakePort(p, func(uint16) error { return nil })
		require.NoError(t, err)
		got = append(got, port)
	}
	assert.ElementsMatch(t, []uint16{30000, 30001, 30002, 30003}, got)
	_, err := mmsplayer.TakePort(p, func(uint16) error { return nil })
	assert.Error(t, err, "all four are in use")
	mmsplayer.PutPort(p, 30002)
	port, err := mmsplayer.TakePort(p, func(port uint16) error { return nil })
	require.NoError(t, err)
	assert.Equal(t, uint16(30002), port)

	q := mmsplayer.NewPorts(31000, 31001)
	port, err = mmsplayer.TakePort(q, func(port uint16) error {
		if port == 31000 {
			return fmt.Errorf("taken elsewhere")
		}
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, uint16(31001), port, "a port bind refuses is skipped")
}
