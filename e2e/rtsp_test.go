package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
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
// proxy and UDP direct (announced mode). The direct route must name bind:
// without a UDP route that allows it, libdsocks swallows ffmpeg's UDP
// bind() (getsockname then says port 0) and ffmpeg announces
// client_port=0-1, which no proxy can help.
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
	command: bind bindreply udpassociate udpreply
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

// requireTone asserts that the audio is the tone, at least least long.
func requireTone(t *testing.T, w wav, least time.Duration) {
	t.Helper()
	assert.GreaterOrEqual(t, w.duration(), least, "ffmpeg decoded the stream")
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
				// Not the exact length: ffmpeg may start a little late in the
				// live stream; most of what it was asked for is plainly played.
				requireTone(t, run.audio, rtspSeconds*time.Second*3/4)
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
				m := settledMetrics(t, p)
				assert.Equal(t, 1.0, m.sum("fwproxy_rtsp_setups_total", `mode="announced"`, `outcome="accepted"`), "one SETUP, announced mode")
				assert.Equal(t, 1.0, m.sum("fwproxy_rtsp_transports_total", `action="rewritten"`), "its transport rewritten")
			})
		}
	})
}

// unprivileged prefixes argv with setpriv to run it as nobody when the
// test runs as root (VLC refuses root), as vlcCommand does.
func unprivileged(t *testing.T, argv []string) []string {
	t.Helper()
	if os.Geteuid() != 0 {
		return argv
	}
	setpriv, err := exec.LookPath("setpriv")
	require.NoError(t, err, "setpriv (util-linux) runs VLC unprivileged")
	nobody, err := user.Lookup("nobody")
	require.NoError(t, err)
	return append([]string{setpriv, "--reuid=" + nobody.Uid, "--regid=" + nobody.Gid, "--clear-groups", "--"}, argv...)
}

// freeTCPPort is a TCP port free on ip on n's server side, for a server
// that cannot be told to pick one (VLC).
func freeTCPPort(t *testing.T, n *testNet, ip netip.Addr) uint16 {
	t.Helper()
	var port uint16
	require.NoError(t, n.inServer(func() error {
		ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
		if err != nil {
			return err
		}
		port = uint16(ln.Addr().(*net.TCPAddr).Port)
		return ln.Close()
	}))
	return port
}

// waitRTSP waits until url answers DESCRIBE with 200 on n's server side:
// VLC logs nothing reliable when its RTSP output is ready.
func waitRTSP(t *testing.T, n *testNet, url string, vlcLog fmt.Stringer) {
	t.Helper()
	u, err := base.ParseURL(url)
	require.NoError(t, err)
	deadline := time.Now().Add(testTimeout)
	for {
		err := n.inServer(func() error {
			c, err := net.DialTimeout("tcp", u.Host, time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			req := base.Request{Method: base.Describe, URL: u, Header: base.Header{"CSeq": base.HeaderValue{"1"}}}
			b, err := req.Marshal()
			if err != nil {
				return err
			}
			if _, err := c.Write(b); err != nil {
				return err
			}
			var res base.Response
			if err := res.Unmarshal(bufio.NewReader(c)); err != nil {
				return err
			}
			if res.StatusCode != base.StatusOK {
				return fmt.Errorf("DESCRIBE: %d %s", res.StatusCode, res.StatusMessage)
			}
			return nil
		})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered DESCRIBE: %v\nVLC:\n%s", url, err, tail(vlcLog.String(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRTSPFFmpegReadsVLC: VLC's RTSP output, a second server independent
// of gortsplib, serves the ASF test asset's tone (as G.711, which VLC can
// packetise) and ffmpeg reads it over UDP through fwproxy, its RTSP
// connection under socksify, and decodes the tone. The proxy starts
// first, so that ffmpeg joins the stream as soon as VLC serves it.
func TestRTSPFFmpegReadsVLC(t *testing.T) {
	vlc, err := exec.LookPath("vlc")
	require.NoError(t, err, "vlc is needed (Debian vlc-bin and vlc-plugin-base; make test installs them)")
	asset, err := filepath.Abs("testdata/sine440.asf")
	require.NoError(t, err)
	forEachNet(t, false, func(t *testing.T, n *testNet) {
		port := freeTCPPort(t, n, n.serverIP())
		p := startRTSPProxy(t, n, port)
		url := "rtsp://" + hostPort(n.serverIP(), strconv.Itoa(int(port))) + "/s"
		dir := vlcDir(t)
		ctx, cancel := context.WithCancel(context.Background())
		argv := unprivileged(t, []string{vlc, "-I", "dummy", "--no-video", "--no-plugins-cache", "--loop", "-vv", asset,
			"--sout", fmt.Sprintf("#transcode{acodec=ulaw,channels=1,samplerate=8000}:rtp{sdp=%s}", url)})
		cmd := serverCommand(ctx, n, argv[0], argv[1:]...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		cmd.Dir = dir
		log := fwproc.NewLogs(0)
		cmd.Stdout, cmd.Stderr = log, log
		require.NoError(t, cmd.Start())
		t.Cleanup(func() {
			cancel()
			cmd.Wait()
		})
		waitRTSP(t, n, url, log)
		run := ffmpegRead(t, n, danteTCPOnly(t, p), url)
		// VLC ends the RTP session at the end of the 4 s asset (each loop
		// starts a new one), and ffmpeg joined a moment after the start.
		requireTone(t, run.audio, time.Second)
		require.NotZero(t, run.announced[0], "ffmpeg's SETUP in its log: %s", tail(run.log, 60))
		assert.Equal(t, run.announced, run.replied, "ffmpeg saw its own ports in the SETUP reply")
		m := settledMetrics(t, p)
		assert.Equal(t, 1.0, m.sum("fwproxy_rtsp_setups_total", `mode="announced"`, `outcome="accepted"`), "ffmpeg's SETUP went through the filter, announced mode")
		assert.Equal(t, 1.0, m.sum("fwproxy_rtsp_transports_total", `action="rewritten"`), "and its transport was rewritten")
	})
}
