package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/e2e/asf"
	"fwproxy/e2e/mmsserver"
)

// VLC as the real player: Debian's vlc-bin with vlc-plugin-base, whose
// access_mms module speaks MMSU (mmsfilter/PROTOCOL.md §5.1). It binds UDP port
// 7000 on its control connection's local address (hard-coded), announces
// it, tunnels only TCP through --socks, and treats StreamChange as the end
// of the stream: it plays the first entry of a server-side playlist.

const (
	// vlcUDPPort is the port VLC's mms access always binds (a FIXME in
	// its source).
	vlcUDPPort = 7000
	// vlcTimeout bounds one VLC run; playing the 4 s asset takes about 4 s.
	vlcTimeout = time.Minute
	// toneHz is the asset's tone.
	toneHz = 440
)

// vlcCommand builds the command that runs VLC headless, writing what it
// decodes to a WAV file. VLC refuses to run as root, so as root it runs
// as nobody through setpriv (which execs, so the PID is VLC's).
func vlcCommand(t *testing.T, ctx context.Context, n *testNet, dir string, args ...string) *exec.Cmd {
	t.Helper()
	vlc, err := exec.LookPath("vlc")
	require.NoError(t, err, "vlc is needed (Debian vlc-bin and vlc-plugin-base; make test installs them)")
	argv := append([]string{vlc, "-I", "dummy", "--no-video", "--no-plugins-cache",
		"--aout", "afile", "--audiofile-file", filepath.Join(dir, "out.wav"), "--audiofile-format", "s16",
		"--play-and-exit", "-vv"}, args...)
	if os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		require.NoError(t, err, "setpriv (util-linux) runs VLC unprivileged")
		nobody, err := user.Lookup("nobody")
		require.NoError(t, err)
		argv = append([]string{setpriv, "--reuid=" + nobody.Uid, "--regid=" + nobody.Gid, "--clear-groups", "--"}, argv...)
	}
	cmd := n.playerCommand(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	cmd.Dir = dir
	// Its own process group, so that a timeout kills VLC and anything it
	// started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// vlcDir is a directory the unprivileged VLC can write its output and
// settings to; removed with the test.
func vlcDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fwproxy-vlc-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	return dir
}

// requireVLCPortFree fails early, with the reason, when something holds
// the port VLC cannot change.
func requireVLCPortFree(t *testing.T) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: vlcUDPPort})
	require.NoError(t, err, "VLC always binds UDP 127.0.0.1:%d for MMSU; something else holds it", vlcUDPPort)
	c.Close()
}

// wav is the PCM content of a WAV file.
type wav struct {
	channels, rate, bits int
	samples              []int16 // first channel
}

// parseWAV reads a 16-bit PCM WAV file.
func parseWAV(b []byte) (wav, error) {
	if len(b) < 12 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return wav{}, errors.New("not a RIFF WAVE file")
	}
	var w wav
	var data []byte
	for off := 12; off+8 <= len(b); {
		id, size := string(b[off:off+4]), int(binary.LittleEndian.Uint32(b[off+4:]))
		body := b[off+8 : min(len(b), off+8+size)]
		switch id {
		case "fmt ":
			if len(body) < 16 || binary.LittleEndian.Uint16(body) != 1 {
				return wav{}, errors.New("not PCM")
			}
			w.channels = int(binary.LittleEndian.Uint16(body[2:]))
			w.rate = int(binary.LittleEndian.Uint32(body[4:]))
			w.bits = int(binary.LittleEndian.Uint16(body[14:]))
		case "data":
			data = body
		}
		off += 8 + size + size%2
	}
	if w.bits != 16 || w.channels < 1 || w.rate == 0 {
		return wav{}, fmt.Errorf("want 16-bit PCM, got %d bits, %d channels, %d Hz", w.bits, w.channels, w.rate)
	}
	frame := 2 * w.channels
	for i := 0; i+frame <= len(data); i += frame {
		w.samples = append(w.samples, int16(binary.LittleEndian.Uint16(data[i:])))
	}
	return w, nil
}

// duration is the length of the decoded audio.
func (w wav) duration() time.Duration {
	return time.Duration(len(w.samples)) * time.Second / time.Duration(w.rate)
}

// frequency estimates the tone from the upward crossings of the middle of
// the signal (the codec's start and end may be soft), with hysteresis so
// that noise near zero does not count: crossings per second between the
// first and the last one.
func (w wav) frequency() float64 {
	s := w.samples[len(w.samples)/8 : len(w.samples)*7/8]
	peak := 0
	for _, v := range s {
		peak = max(peak, int(v), -int(v))
	}
	low, high := -peak/4, peak/4
	first, last, n := -1, -1, 0
	armed := false
	for i, v := range s {
		switch {
		case int(v) < low:
			armed = true
		case armed && int(v) > high:
			armed = false
			if first < 0 {
				first = i
			}
			last = i
			n++
		}
	}
	if n < 2 {
		return 0
	}
	return float64(n-1) * float64(w.rate) / float64(last-first)
}

// rms is the signal's loudness, full scale 1.
func (w wav) rms() float64 {
	sum := 0.0
	for _, s := range w.samples {
		v := float64(s) / 32768
		sum += v * v
	}
	return math.Sqrt(sum / float64(max(1, len(w.samples))))
}

// TestVLCPlaysMMSU: VLC plays mmsu:// from the emulated server directly,
// and through fwproxy with --socks (announced mode: the MMS filter
// rewrites its funnel and relays the server's datagrams to its port 7000),
// and what it decodes is the asset's 440 Hz tone, whole.
func TestVLCPlaysMMSU(t *testing.T) {
	asset := loadAsset(t)
	cfg := mmsserver.DefaultConfig()
	cfg.PacketInterval = 20 * time.Millisecond
	cfg.PingInterval = time.Second
	cfg.Playlists = map[string]mmsserver.Playlist{
		"file": {{Name: "file", File: asset}},
		// VLC follows only the first entry: StreamChange is its end of
		// stream.
		"playlist": mmsserver.Repeat("playlist", asset, 3),
	}
	forEachNet(t, false, func(t *testing.T, n *testNet) { testVLCPlaysMMSU(t, n, cfg, asset) })
}

func testVLCPlaysMMSU(t *testing.T, n *testNet, cfg mmsserver.Config, asset *asf.File) {
	srv := listenMMS(t, n, cfg)
	port := strconv.Itoa(int(srv.Addr().Port()))

	tests := []struct {
		name    string
		path    string
		proxied bool
	}{
		{"direct", "file", false},
		{"through fwproxy with --socks, first playlist entry", "playlist", true},
	}
	for _, tt := range tests {
		if n.fw != nil && !tt.proxied {
			continue // the boundary test shows there is no direct way
		}
		t.Run(tt.name, func(t *testing.T) {
			if n.fw == nil {
				requireVLCPortFree(t)
			}
			var args []string
			var p *proxyProc
			if tt.proxied {
				p = startMMSProxy(t, n, srv)
				args = append(args, "--socks="+p.socks)
			}
			before := srv.Stats()
			dir := vlcDir(t)
			ctx, cancel := context.WithTimeout(context.Background(), vlcTimeout)
			defer cancel()
			cmd := vlcCommand(t, ctx, n, dir, append(args, "mmsu://"+hostPort(n.serverIP(), port)+"/"+tt.path)...)
			var log bytes.Buffer
			cmd.Stdout, cmd.Stderr = &log, &log
			err := cmd.Run()
			require.NoError(t, err, "vlc: %s", tail(log.String(), 40))
			require.Contains(t, log.String(), "streaming started", "VLC's mms access did not start streaming")

			b, err := os.ReadFile(filepath.Join(dir, "out.wav"))
			require.NoError(t, err, "VLC wrote no audio: %s", tail(log.String(), 40))
			w, err := parseWAV(b)
			require.NoError(t, err)
			t.Logf("VLC decoded %v of audio: %d Hz, %d channel(s), tone %.1f Hz, RMS %.2f",
				w.duration(), w.rate, w.channels, w.frequency(), w.rms())
			// VLC may drop the last audio block it buffered when the stream
			// ends; three quarters of the entry is plainly "played".
			assert.GreaterOrEqual(t, w.duration(), asset.Info.Duration*3/4, "VLC decoded the entry")
			assert.InEpsilon(t, toneHz, w.frequency(), 0.01, "VLC decoded the asset's tone")
			assert.Greater(t, w.rms(), 0.05, "not silence (the asset's tone is at 1/8 of full scale: RMS 0.088)")

			after := srv.Stats()
			assert.EqualValues(t, len(asset.Packets), after.DataPackets-before.DataPackets, "the server sent one entry")
			if tt.proxied {
				m := settledMetrics(t, p)
				assert.Equal(t, 1.0, m.sum("fwproxy_mms_funnel_rewrites_total", `mode="announced"`), "VLC's funnel was rewritten")
				// The header and every packet reached the proxy and went on
				// to VLC, but for the entry's tail if the server sent it
				// after StreamChange: the filter holds that for the
				// player's next ReadBlock, which VLC (for which
				// EndOfStream is the end of the stream) never sends.
				delivered := m.sum("fwproxy_leases_datagrams_total", `outcome="delivered"`)
				assert.Equal(t, float64(len(asset.Packets)+1), delivered+m.sum("fwproxy_leases_datagrams_total", `outcome="buffered"`),
					"the header and every packet reached the proxy")
				assert.GreaterOrEqual(t, delivered, float64(len(asset.Packets)*3/4), "and went on to VLC")
				assert.Equal(t, 1.0, m.sum("fwproxy_mms_transitions_total", `transition="stream_change"`))
			}
		})
	}
}
