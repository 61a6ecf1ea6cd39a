// Command mmsdemo shows what fwproxy is for. It starts the emulated media
// server, fwproxy (as a process, with the MMS filter on the server's port)
// and a few emulated players: firewall clients that close their UDP port
// and bind it again at every playlist entry (closing first, racing the new
// association ahead of the old close, or both at once), a plain SOCKS
// player with its UDP port announced, and an MMST player. Beside them, two
// RTSP players (a firewall client and a plain SOCKS client) play as many
// items from gortsplib's RTSP server through the same fwproxy's RTSP
// filter, on the same client ports at every item. It prints what each
// player received, entry by entry summed up, and the proxy's view.
//
// Then it does the same against fwproxy with -lease-linger 0, the old
// behaviour, where the players that rebind lose the packets that reach the
// proxy while they are between close and bind.
//
//	make demo                     # builds bin/fwproxy and runs this
//	go run ./cmd/mmsdemo -fwproxy bin/fwproxy -entries 10
//
// Everything runs on loopback (the proxy's external address is 127.0.0.2)
// and is stopped before it exits. The exit status is 1 if a player lost a
// packet or failed with lingering leases.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"fwproxy/e2e/asf"
	"fwproxy/e2e/mmsplayer"
	"fwproxy/e2e/mmsserver"
	"fwproxy/e2e/rtspplayer"
	"fwproxy/internal/fwproc"
)

// stepTimeout bounds starting and stopping fwproxy and each scrape.
const stepTimeout = 30 * time.Second

type options struct {
	fwproxy    string
	asset      string
	externalIP string
	playerIP   string
	entries    int
	packets    int
	interval   time.Duration
	tail       int
	gap        time.Duration
	compare    bool
	verbose    bool
	local      netip.Addr // playerIP parsed
	rtsp       *rtspDemo
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "mmsdemo:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (bool, error) {
	var o options
	fs := flag.NewFlagSet("mmsdemo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.fwproxy, "fwproxy", defaultFwproxy(), "fwproxy `BINARY` to run")
	fs.StringVar(&o.asset, "asset", "e2e/testdata/sine440.asf", "ASF `FILE` the server streams")
	fs.StringVar(&o.externalIP, "external-ip", "127.0.0.2", "fwproxy's -external-ip (a loopback address other than the players')")
	fs.StringVar(&o.playerIP, "player-ip", "127.0.0.3", "the players' loopback address")
	fs.IntVar(&o.entries, "entries", 5, "playlist entries")
	fs.IntVar(&o.packets, "packets", 8, "packets per entry")
	fs.DurationVar(&o.interval, "interval", 10*time.Millisecond, "time between data packets")
	fs.IntVar(&o.tail, "tail", 3, "packets of each entry still in flight at the playlist change")
	fs.DurationVar(&o.gap, "gap", 30*time.Millisecond, "the players' pause between closing and binding again")
	fs.BoolVar(&o.compare, "compare", true, "run again against fwproxy -lease-linger 0")
	fs.BoolVar(&o.verbose, "v", false, "show fwproxy's log")
	if err := fs.Parse(args); err != nil {
		return false, err
	}
	var err error
	if o.local, err = netip.ParseAddr(o.playerIP); err != nil || !o.local.Is4() {
		return false, fmt.Errorf("-player-ip %q: want an IPv4 address", o.playerIP)
	}
	if o.fwproxy == "" {
		return false, errors.New("no fwproxy binary: build it (make build) and pass -fwproxy")
	}
	f, err := asf.ReadFile(o.asset)
	if err != nil {
		return false, err
	}
	entry, err := f.Truncate(min(o.packets, len(f.Packets)))
	if err != nil {
		return false, err
	}

	scfg := mmsserver.DefaultConfig()
	scfg.Playlists = map[string]mmsserver.Playlist{"playlist": mmsserver.Repeat("playlist", entry, o.entries)}
	scfg.PacketInterval = o.interval
	scfg.TailPackets = o.tail
	scfg.TailDelay = 5 * time.Second
	scfg.PingInterval = time.Second
	srv, err := mmsserver.Listen("127.0.0.1:0", scfg, nil)
	if err != nil {
		return false, err
	}
	defer srv.Close()
	fmt.Fprintf(stdout, "media server %v: playlist of %d entries x %d packets of %d bytes, the last %d of each still in flight at the change\n\n",
		srv.Addr(), o.entries, len(entry.Packets), entry.Info.PacketSize, o.tail)

	if o.rtsp, err = startRTSPDemo(o); err != nil {
		return false, err
	}
	defer o.rtsp.close()
	fmt.Fprintf(stdout, "RTSP server %v: each of %d items a sequence of %d packets\n\n", o.rtsp.srv.Addr(), o.entries, o.rtsp.packets)

	ports := mmsplayer.NewPorts(20000, 32767)
	ok, err := round(ctx, o, srv, ports, "fwproxy (lingering leases, the default)", nil, stdout, stderr)
	if err != nil || !o.compare {
		return ok, err
	}
	fmt.Fprintln(stdout)
	if _, err := round(ctx, o, srv, ports, "fwproxy -lease-linger 0 (the old behaviour: no buffering, no linger)", []string{"-lease-linger", "0"}, stdout, stderr); err != nil {
		return false, err
	}
	fmt.Fprintln(stdout, "\nWith lingering leases the players that close their UDP port and bind it again lose nothing;")
	fmt.Fprintln(stdout, "without, they lose what reaches the proxy between their close and their bind.")
	fmt.Fprintln(stdout, "The RTSP players lose nothing either way: each item's data starts after its own SETUP and PLAY.")
	return ok, nil
}

// defaultFwproxy is fwproxy next to this program, or bin/fwproxy, or the
// one on PATH.
func defaultFwproxy() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "fwproxy")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if st, err := os.Stat(filepath.Join("bin", "fwproxy")); err == nil && !st.IsDir() {
		return filepath.Join("bin", "fwproxy")
	}
	if p, err := exec.LookPath("fwproxy"); err == nil {
		return p
	}
	return ""
}

// player is one row of the table.
type player struct {
	label string
	cfg   mmsplayer.Config
}

// round runs every player once through a fresh fwproxy started with
// extra flags, and prints the table. ok is false if a player lost a packet
// or failed.
func round(ctx context.Context, o options, srv *mmsserver.Server, ports *mmsplayer.Ports, title string, extra []string, stdout, stderr io.Writer) (bool, error) {
	p, err := startFwproxy(ctx, o, srv, extra, stderr)
	if err != nil {
		return false, err
	}
	defer p.stop()

	step := func(order mmsplayer.Order) mmsplayer.Plan {
		return mmsplayer.Always(mmsplayer.Step{Order: order, Gap: o.gap})
	}
	players := []player{
		{"firewall client, close then bind", config(o, srv, p, ports, mmsplayer.ModeFirewall, step(mmsplayer.OrderCloseFirst))},
		{"firewall client, new association first", config(o, srv, p, ports, mmsplayer.ModeFirewall, step(mmsplayer.OrderNewFirst))},
		{"firewall client, both at once", config(o, srv, p, ports, mmsplayer.ModeFirewall, step(mmsplayer.OrderConcurrent))},
		{"SOCKS player, UDP announced", config(o, srv, p, ports, mmsplayer.ModeAnnounced, step(mmsplayer.OrderCloseFirst))},
		{"MMST player", config(o, srv, p, ports, mmsplayer.ModeTCP, nil)},
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	reports := make([]*mmsplayer.Report, len(players))
	var wg sync.WaitGroup
	var rtspReports []*rtspplayer.Report
	rtspRound := len(extra) // the rounds differ in their extra flags
	wg.Add(1)
	go func() {
		defer wg.Done()
		rtspReports = o.rtsp.play(pctx, o, p, rtspRound)
	}()
	for i, pl := range players {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reports[i] = mmsplayer.Play(pctx, pl.cfg)
		}()
	}
	wg.Wait()

	fmt.Fprintln(stdout, title)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "player\tentries\texpected\treceived\tlost\tlost in entries\tbind/assoc failures\terror")
	ok := true
	for i, r := range reports {
		var lostIn []string
		for _, e := range r.Entries {
			if len(e.Lost) > 0 {
				lostIn = append(lostIn, strconv.Itoa(e.Index+1))
			}
		}
		errText := "-"
		if r.Err != nil {
			errText = r.Err.Error()
		}
		fails := r.Count(mmsplayer.FailBind) + r.Count(mmsplayer.FailAssociate)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%d\t%s\n", players[i].label, len(r.Entries), r.Expected(), r.Received(),
			r.Lost(), orDash(strings.Join(lostIn, ",")), fails, errText)
		if r.Err != nil || r.Lost() > 0 || fails > 0 || len(r.Entries) != o.entries {
			ok = false
		}
	}
	if !o.rtsp.rows(tw, o, rtspReports) {
		ok = false
	}
	tw.Flush()

	m, err := p.metrics(ctx)
	if err != nil {
		return ok, err
	}
	fmt.Fprintf(stdout, "proxy: playlist changes %v; leases: %s; datagrams: %s\n",
		m.get(`fwproxy_mms_transitions_total{transition="stream_change"}`),
		m.list("fwproxy_leases_events_total", "event", "acquire", "join", "handover", "reclaim", "release"),
		m.list("fwproxy_leases_datagrams_total", "outcome", "delivered", "buffered", "flushed", "dropped"))
	fmt.Fprintf(stdout, "rtsp: setups %s; external ports the server was asked for: %s\n",
		m.list("fwproxy_rtsp_setups_total", "mode", "association", "announced"), o.rtsp.externalPorts(rtspRound))
	return ok, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func config(o options, srv *mmsserver.Server, p *fwproxy, ports *mmsplayer.Ports, mode mmsplayer.Mode, plan mmsplayer.Plan) mmsplayer.Config {
	c := mmsplayer.DefaultConfig()
	c.Server = srv.Addr()
	c.Path = "playlist"
	c.Proxy = p.socks
	c.Mode = mode
	c.LocalIP = o.local
	c.Ports = ports
	c.Plan = plan
	c.LossWait = time.Second
	return c
}

// fwproxy is a running fwproxy process.
type fwproxy struct {
	*fwproc.Proc
	socks       string
	metricsAddr string
}

// startFwproxy runs fwproxy on loopback ports of its choosing with the
// MMS filter on the server's port, and waits for its "listening" line.
func startFwproxy(ctx context.Context, o options, srv *mmsserver.Server, extra []string, stderr io.Writer) (*fwproxy, error) {
	cfg := fwproc.Config{
		Binary: o.fwproxy,
		Args: append([]string{"-listen", "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0", "-log-format", "json",
			"-mms-ports", strconv.Itoa(int(srv.Addr().Port())), "-external-ip", o.externalIP,
			// The emulated server is on loopback, which is the proxy's host:
			// not a destination unless a rule names it.
			"-allow", "127.0.0.0/8"}, append(o.rtsp.proxyArgs(), extra...)...),
		StartTimeout: stepTimeout,
		// The demo runs for minutes at most: a small log is enough for
		// an error message.
		MaxLogLines: 1000,
	}
	if o.verbose {
		cfg.OnLine = func(line string) { fmt.Fprintf(stderr, "fwproxy: %s\n", line) }
	}
	p, err := fwproc.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &fwproxy{Proc: p, socks: p.Socks, metricsAddr: p.Metrics}, nil
}

// stop sends SIGTERM, and kills fwproxy if it is still there after the
// step timeout; it always waits for the process.
func (p *fwproxy) stop() { p.Stop(stepTimeout) }

// metricSet is a scrape of /metrics: series to value.
type metricSet map[string]string

func (p *fwproxy) metrics(ctx context.Context) (metricSet, error) {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.metricsAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	m := metricSet{}
	for _, line := range bytes.Split(body, []byte("\n")) {
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if i := bytes.LastIndexByte(line, ' '); i > 0 {
			m[string(line[:i])] = string(line[i+1:])
		}
	}
	return m, nil
}

func (m metricSet) get(series string) string {
	if v, ok := m[series]; ok {
		return v
	}
	return "?"
}

// list shows name{label=v} for each v, summing series that carry more
// labels (dropped datagrams by reason).
func (m metricSet) list(name, label string, values ...string) string {
	var parts []string
	for _, v := range values {
		sum, found := 0.0, false
		for k, val := range m {
			if strings.HasPrefix(k, name+"{") && strings.Contains(k, label+`="`+v+`"`) {
				if f, err := strconv.ParseFloat(val, 64); err == nil {
					sum += f
					found = true
				}
			}
		}
		if found {
			parts = append(parts, fmt.Sprintf("%s %g", v, sum))
		}
	}
	return strings.Join(parts, ", ")
}
