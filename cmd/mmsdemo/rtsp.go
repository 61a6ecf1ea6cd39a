package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"fwproxy/e2e/rtspplayer"
	"fwproxy/e2e/rtspserver"
)

// The RTSP players beside the MMS ones: gortsplib's server plays each
// playlist item its own numbered sequence, and two players (a firewall
// client and a plain SOCKS client) play the items on the same client
// ports, tearing down, closing and binding again between items, through
// the same fwproxy with its RTSP filter on the server's port.

// rtspDemo is the RTSP server and the players' port pairs.
type rtspDemo struct {
	srv     *rtspserver.Server
	ports   []uint16
	packets int
}

// rtspPlayers are the RTSP rows of the table.
var rtspPlayers = []struct {
	label string
	mode  rtspplayer.Mode
}{
	{"RTSP firewall client", rtspplayer.ModeFirewall},
	{"RTSP SOCKS player, UDP announced", rtspplayer.ModeAnnounced},
}

func startRTSPDemo(o options) (*rtspDemo, error) {
	cfg := rtspserver.DefaultConfig()
	cfg.Packets = o.packets * 4
	srv, err := rtspserver.Listen(cfg)
	if err != nil {
		return nil, err
	}
	d := &rtspDemo{srv: srv, packets: cfg.Packets}
	ext, err := netip.ParseAddr(o.externalIP)
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("-external-ip %q: %w", o.externalIP, err)
	}
	for port := uint16(16000); len(d.ports) < len(rtspPlayers) && port < 18000; port += 2 {
		if pairFree(o.local, port) && pairFree(ext, port) {
			d.ports = append(d.ports, port)
		}
	}
	if len(d.ports) < len(rtspPlayers) {
		srv.Close()
		return nil, fmt.Errorf("no free UDP port pairs for the RTSP players in 16000-18000 on %v and %v", o.local, ext)
	}
	return d, nil
}

// pairFree tells whether port and port+1 can be bound on ip.
func pairFree(ip netip.Addr, port uint16) bool {
	a, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port)))
	if err != nil {
		return false
	}
	defer a.Close()
	b, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port+1)))
	if err != nil {
		return false
	}
	return b.Close() == nil
}

func (d *rtspDemo) close() { d.srv.Close() }

// proxyArgs put the RTSP filter on the server's port.
func (d *rtspDemo) proxyArgs() []string {
	return []string{"-rtsp-ports", strconv.Itoa(int(d.srv.Addr().Port()))}
}

// play runs the RTSP players through p, tagged with round so that the
// server's record tells the rounds apart.
func (d *rtspDemo) play(ctx context.Context, o options, p *fwproxy, round int) []*rtspplayer.Report {
	reports := make([]*rtspplayer.Report, len(rtspPlayers))
	done := make(chan struct{})
	for i, pl := range rtspPlayers {
		go func() {
			defer func() { done <- struct{}{} }()
			reports[i] = rtspplayer.Play(ctx, rtspplayer.Config{
				Server: d.srv.Addr(), Tag: fmt.Sprintf("r%dp%d", round, i), Proxy: p.socks, Mode: pl.mode,
				LocalIP: o.local, Port: d.ports[i], Items: o.entries, Packets: d.packets, StepTimeout: stepTimeout,
			})
		}()
	}
	for range rtspPlayers {
		<-done
	}
	return reports
}

// rows writes the RTSP players' rows in the MMS table's columns; ok is
// false if one lost a packet or failed.
func (d *rtspDemo) rows(tw io.Writer, o options, reports []*rtspplayer.Report) bool {
	ok := true
	for i, r := range reports {
		var lostIn []string
		for _, it := range r.Items {
			if len(it.Lost) > 0 {
				lostIn = append(lostIn, strconv.Itoa(it.Index+1))
			}
		}
		errText := "-"
		if r.Err != nil {
			errText = r.Err.Error()
		}
		fails := r.Count(rtspplayer.FailBind) + r.Count(rtspplayer.FailAssociate) + r.Count(rtspplayer.FailSetup)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%d\t%s\n", rtspPlayers[i].label, len(r.Items), o.entries*d.packets, r.Received(),
			r.Lost(), orDash(strings.Join(lostIn, ",")), fails, errText)
		if r.Err != nil || r.Lost() > 0 || fails > 0 || len(r.Items) != o.entries {
			ok = false
		}
	}
	return ok
}

// externalPorts says, per RTSP player of round, which client ports the
// server was asked to send to at each item: the proxy's lease group.
func (d *rtspDemo) externalPorts(round int) string {
	var parts []string
	for i, pl := range rtspPlayers {
		prefix := fmt.Sprintf("%s/r%dp%d-", rtspserver.SeqPath, round, i)
		var seen []string
		for _, s := range d.srv.Setups() {
			if strings.HasPrefix(s.Path, prefix) {
				seen = append(seen, fmt.Sprintf("%d-%d", s.ClientPorts[0], s.ClientPorts[1]))
			}
		}
		text := strings.Join(seen, " ")
		if len(seen) > 0 && strings.Count(text, seen[0]) == len(seen) {
			text = fmt.Sprintf("%s at all %d items", seen[0], len(seen))
		}
		parts = append(parts, fmt.Sprintf("%s (own %d-%d): %s", pl.label, d.ports[i], d.ports[i]+1, orDash(text)))
	}
	return strings.Join(parts, "; ")
}
