package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/socksclient"
)

// rtspResponder answers every RTSP request on its connections with 200
// and the request's CSeq: enough of a server to see whether a CONNECT ran
// through the filter.
func rtspResponder(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(daemonTimeout))
				br := bufio.NewReader(c)
				cseq := ""
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if v, ok := cutHeader(line, "CSeq"); ok {
						cseq = v
					}
					if line == "\r\n" {
						fmt.Fprintf(c, "RTSP/1.0 200 OK\r\nCSeq: %s\r\n\r\n", cseq)
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func cutHeader(line, name string) (string, bool) {
	m := regexp.MustCompile(`(?i)^` + name + `:\s*(\S+)`).FindStringSubmatch(line)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// options sends one OPTIONS through the proxy and reads the answer.
func options(t *testing.T, socks string, server netip.AddrPort) {
	t.Helper()
	d := socksclient.Dialer{Proxy: socks, Timeout: daemonTimeout}
	c, err := d.Connect(context.Background(), socksclient.AddrFromAddrPort(server))
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(daemonTimeout))
	_, err = io.WriteString(c, "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
	require.NoError(t, err)
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "RTSP/1.0 200 OK\r\n", line)
}

// TestRTSPPortsThroughTheBinary: -rtsp-ports puts the filter on a port,
// a reload that would give the port to two filters changes nothing, and
// rtsp_ports: [] turns the filter off.
func TestRTSPPortsThroughTheBinary(t *testing.T) {
	server := rtspResponder(t)
	const base = "listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\nrules:\n  allow: [{network: 127.0.0.0/8}]\n"
	path := writeFile(t, base)
	d := startDaemon(t, "-config", path, "-rtsp-ports", fmt.Sprint(server.Port()))
	socks, metricsAddr := d.addrs()
	assert.Contains(t, d.log(), fmt.Sprintf("rtsp_ports=[%d]", server.Port()), "the listening line names the ports")
	const series = `fwproxy_rtsp_requests_total{direction="client_to_server",method="OPTIONS"}`
	assert.Equal(t, "0", scrape(t, metricsAddr, series))

	options(t, socks, server)
	assert.Equal(t, "1", scrape(t, metricsAddr, series), "the CONNECT ran through the RTSP filter")

	// The flag keeps overriding the file, so a clash comes from mms_ports.
	require.NoError(t, os.WriteFile(path, []byte(base+fmt.Sprintf("mms_ports: [%d]\n", server.Port())), 0o600))
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
	d.waitLog(regexp.QuoteMeta(fmt.Sprintf("-rtsp-ports: port %d is also in mms_ports; a port has at most one filter", server.Port())))
	d.waitLog(`msg="config reload failed; the running configuration is unchanged"`)
	options(t, socks, server)
	assert.Equal(t, "2", scrape(t, metricsAddr, series), "still the RTSP filter")
	assert.Equal(t, "0", scrape(t, metricsAddr, `fwproxy_mms_connections_active`))
}

// TestRTSPDisabled: an empty rtsp_ports leaves the default ports plain.
func TestRTSPDisabled(t *testing.T) {
	server := rtspResponder(t)
	path := writeFile(t, "listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\nrules:\n  allow: [{network: 127.0.0.0/8}]\n"+
		fmt.Sprintf("rtsp_ports: [%d]\n", server.Port()))
	d := startDaemon(t, "-config", path, "-rtsp-ports", "")
	socks, metricsAddr := d.addrs()
	options(t, socks, server)
	assert.Equal(t, "0", scrape(t, metricsAddr, `fwproxy_rtsp_requests_total{direction="client_to_server",method="OPTIONS"}`), "no filter: plain relay")
}
