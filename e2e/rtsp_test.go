package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/e2e/rtspserver"
	"fwproxy/internal/fwproc"
)

// The RTSP tests: real servers (gortsplib's, and VLC's RTSP output) and a
// real player (ffmpeg), with fwproxy's RTSP filter between them.
//
// On loopback, ffmpeg binds its RTP/RTCP ports on 0.0.0.0, so it would
// get the server's data at the proxy's external address (127.0.0.2) even
// if the SETUP went through unchanged: there the rewrite is judged by what
// the server saw (the proxy's address, and ports other than the ones
// ffmpeg announced, which it holds on every address), and the audio only
// shows the stream went through. In the firewall topology there is no way
// around the proxy, and the audio proves the rewrite too.

const (
	// ffmpegTimeout bounds one ffmpeg run.
	ffmpegTimeout = time.Minute
	// rtspSeconds is how much audio the reading ffmpeg decodes.
	rtspSeconds = 3
)

// requireFFmpeg fails with the reason when ffmpeg is missing.
func requireFFmpeg(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("ffmpeg")
	require.NoError(t, err, "ffmpeg is needed (Debian ffmpeg; make test installs it)")
	return p
}

// startRTSPServer runs gortsplib's server on n's server side.
func startRTSPServer(t *testing.T, n *testNet, cfg rtspserver.Config) *rtspserver.Server {
	t.Helper()
	cfg.IP = n.serverIP()
	cfg.Sockets = n.inServer
	srv, err := rtspserver.Listen(cfg)
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	return srv
}

// startRTSPProxy runs fwproxy on n with the RTSP filter on port.
func startRTSPProxy(t *testing.T, n *testNet, port uint16, args ...string) *proxyProc {
	t.Helper()
	return startProxyIn(t, n, append([]string{"-rtsp-ports", strconv.Itoa(int(port)), "-external-ip", n.externalIP(),
		"-max-sessions-per-client", "0"}, args...)...)
}

// serverCommand runs a program on n's server side; a timeout kills its
// process group.
func serverCommand(ctx context.Context, n *testNet, name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if n.fw == nil {
		cmd = exec.CommandContext(ctx, name, args...)
	} else {
		cmd = n.fw.Outside.Command(ctx, name, args...)
	}
	ownGroup(cmd)
	return cmd
}

// ownGroup puts cmd in a process group of its own, which its context's
// end kills whole.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
}

// publishTone has ffmpeg publish a 440 Hz tone (lavfi's sine, at 1/8 of
// full scale) as G.711 µ-law to path on srv, over TCP, for the rest of the
// test; it returns once the server has the stream.
func publishTone(t *testing.T, n *testNet, srv *rtspserver.Server, path string) {
	t.Helper()
	ffmpeg := requireFFmpeg(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := serverCommand(ctx, n, ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-re",
		"-f", "lavfi", "-i", fmt.Sprintf("sine=frequency=%d:sample_rate=8000", toneHz),
		"-c:a", "pcm_mulaw", "-ar", "8000", "-ac", "1",
		"-f", "rtsp", "-rtsp_transport", "tcp", srv.URL(path))
	log := fwproc.NewLogs(0)
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	wctx, wcancel := context.WithTimeout(ctx, testTimeout)
	defer wcancel()
	require.NoError(t, srv.WaitPublished(wctx, path), "ffmpeg publisher: %s", log.String())
}

// danteTCPOnly is a socksify configuration that sends TCP through the
// proxy and UDP direct: libdsocks would take over ffmpeg's UDP bind()
// otherwise, and ffmpeg would announce client_port=0-1.
func danteTCPOnly(t *testing.T, p *proxyProc) []string {
	t.Helper()
	host, port, _ := net.SplitHostPort(p.socks)
	conf := filepath.Join(t.TempDir(), "socks.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`route {
	from: 0.0.0.0/0 to: 0.0.0.0/0 via: %s port = %s
	proxyprotocol: socks_v5
	protocol: tcp
	command: connect
	method: none
}
route {
	from: 0.0.0.0/0 to: 0.0.0.0/0 via: direct
	protocol: udp
	command: udpassociate udpreply
}
`, host, port)), 0o600))
	return []string{"SOCKS_CONF=" + conf, "SOCKS_AUTOADD_LANROUTES=no"}
}

// ffmpegRun is what one ffmpeg reader did.
type ffmpegRun struct {
	audio wav
	log   string
	// announced is the client_port of its SETUP, replied the one in the
	// server's reply as ffmpeg read it.
	announced, replied [2]int
}

// setupClientPort finds client_port=A-B in the SETUP request ffmpeg logs
// at trace level, replyClientPort the one in the reply's Transport line.
var (
	setupClientPort = regexp.MustCompile(`(?s)SETUP rtsp://\S+ RTSP/1\.0\r?\n.*?client_port=(\d+)-(\d+)`)
	replyClientPort = regexp.MustCompile(`line='Transport: [^']*client_port=(\d+)-(\d+)`)
)

// portPair reads the two ports a regexp above matched.
func portPair(re *regexp.Regexp, s string) [2]int {
	var p [2]int
	if m := re.FindStringSubmatch(s); m != nil {
		p[0], _ = strconv.Atoi(m[1])
		p[1], _ = strconv.Atoi(m[2])
	}
	return p
}

// ffmpegRead has ffmpeg read url over UDP (the RTSP connection through
// socksify when env says so) on n's player side and decode rtspSeconds
// of it to WAV.
func ffmpegRead(t *testing.T, n *testNet, env []string, url string) ffmpegRun {
	t.Helper()
	ffmpeg := requireFFmpeg(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.wav")
	argv := []string{ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "trace",
		"-rtsp_transport", "udp", "-i", url, "-t", strconv.Itoa(rtspSeconds), "-c:a", "pcm_s16le", "-y", out}
	if len(env) > 0 {
		argv = append([]string{"socksify"}, argv...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ffmpegTimeout)
	defer cancel()
	cmd := n.playerCommand(ctx, argv[0], argv[1:]...)
	ownGroup(cmd)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, env...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	err := cmd.Run()
	run := ffmpegRun{log: log.String()}
	require.NoError(t, err, "ffmpeg: %s", tail(run.log, 40))
	run.announced = portPair(setupClientPort, run.log)
	run.replied = portPair(replyClientPort, run.log)
	b, err := os.ReadFile(out)
	require.NoError(t, err, "ffmpeg wrote no audio: %s", tail(run.log, 40))
	run.audio, err = parseWAV(b)
	require.NoError(t, err)
	t.Logf("ffmpeg decoded %v of audio: %d Hz, tone %.1f Hz, RMS %.2f; announced client_port=%d-%d",
		run.audio.duration(), run.audio.rate, run.audio.frequency(), run.audio.rms(), run.announced[0], run.announced[1])
	return run
}

// requireTone asserts that the audio is the published tone.
func requireTone(t *testing.T, w wav) {
	t.Helper()
	// Not the exact length: on a loaded machine ffmpeg may start late in
	// the live stream; most of what it was asked for is plainly played.
	assert.GreaterOrEqual(t, w.duration(), rtspSeconds*time.Second*3/4, "ffmpeg decoded the stream")
	assert.InEpsilon(t, toneHz, w.frequency(), 0.01, "ffmpeg decoded the 440 Hz tone")
	assert.Greater(t, w.rms(), 0.05, "not silence (the tone is at 1/8 of full scale: RMS 0.088)")
}

// readerSetups are the SETUPs of path that were not the publisher's.
func readerSetups(srv *rtspserver.Server, path string) []rtspserver.Setup {
	var out []rtspserver.Setup
	for _, s := range srv.Setups() {
		if s.Path == path+"/trackID=0" || s.Path == path {
			out = append(out, s)
		}
	}
	return out
}

// TestRTSPFFmpegReadsTone: ffmpeg reads a 440 Hz tone that a second ffmpeg
// publishes to gortsplib's server, over RTP/UDP, directly and through
// fwproxy with its RTSP connection under socksify (announced mode), and
// decodes the tone; through the proxy the server saw the proxy's external
// address and the ports the filter put in client_port.
func TestRTSPFFmpegReadsTone(t *testing.T) {
	forEachNet(t, false, func(t *testing.T, n *testNet) {
		srv := startRTSPServer(t, n, rtspserver.DefaultConfig())
		publishTone(t, n, srv, "tone")
		tests := []struct {
			name    string
			proxied bool
		}{
			{"direct", false},
			{"through fwproxy, RTSP under socksify", true},
		}
		for _, tt := range tests {
			if n.fw != nil && !tt.proxied {
				continue // the boundary test shows there is no direct way
			}
			t.Run(tt.name, func(t *testing.T) {
				before := len(readerSetups(srv, "tone"))
				var env []string
				var p *proxyProc
				if tt.proxied {
					p = startRTSPProxy(t, n, srv.Addr().Port())
					env = danteTCPOnly(t, p)
				}
				run := ffmpegRead(t, n, env, srv.URL("tone"))
				requireTone(t, run.audio)
				require.NotZero(t, run.announced[0], "ffmpeg's SETUP in its log: %s", tail(run.log, 60))
				assert.Equal(t, run.announced, run.replied, "ffmpeg saw its own ports in the SETUP reply")

				setups := readerSetups(srv, "tone")[before:]
				require.Len(t, setups, 1, "one SETUP of the tone's track")
				got := setups[0]
				if !tt.proxied {
					assert.Equal(t, run.announced, got.ClientPorts, "direct: the server got ffmpeg's ports")
					return
				}
				assert.Equal(t, n.externalIP(), got.Remote.Addr().String(), "the server saw the proxy's external address")
				if n.fw == nil {
					assert.NotEqual(t, run.announced, got.ClientPorts,
						"the server was asked to send to the proxy's lease, not to the ports ffmpeg announced (it holds them on every address, so no lease could have kept them)")
				} else {
					assert.Equal(t, run.announced, got.ClientPorts, "the lease kept ffmpeg's ports, free on the proxy's outside address")
				}
				assert.Equal(t, got.ClientPorts[0]+1, got.ClientPorts[1], "an RTP/RTCP pair")
				assert.Zero(t, got.ClientPorts[0]%2, "RTP on an even port")
			})
		}
	})
}
