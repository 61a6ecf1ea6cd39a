package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/socksclient"
)

// logRecords returns the process's JSON log lines with message msg.
func (p *proxyProc) logRecords(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(p.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// udpAssociate opens a UDP ASSOCIATE for the client socket uc and returns
// the control connection and the relay address.
func udpAssociate(t *testing.T, proxyAddr string, uc *net.UDPConn) (net.Conn, netip.AddrPort) {
	t.Helper()
	return socksRequest(t, proxyAddr, socksclient.CmdUDPAssociate, uc.LocalAddr().(*net.UDPAddr).AddrPort())
}

// TestSessionLogLines: a UDP association's session line carries what it
// relayed each way and its external port, and one sid joins it with its
// lease's lines; JSON durations are seconds.
func TestSessionLogLines(t *testing.T) {
	p := startProxy(t)
	echo := udpEcho(t).AddrPort()
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer uc.Close()
	ctl, relay := udpAssociate(t, p.socks, uc)

	const n = 3
	var up, down int
	buf := make([]byte, 2048)
	for i := range n {
		payload := fmt.Sprintf("ping-%d", i)
		dg := []byte{0, 0, 0, 1}
		ip := echo.Addr().As4()
		dg = append(dg, ip[:]...)
		dg = binary.BigEndian.AppendUint16(dg, echo.Port())
		_, err := uc.WriteToUDPAddrPort(append(dg, payload...), relay)
		require.NoError(t, err)
		require.NoError(t, uc.SetReadDeadline(time.Now().Add(testTimeout)))
		m, _, err := uc.ReadFromUDPAddrPort(buf)
		require.NoError(t, err)
		require.Equal(t, "echo:"+payload, string(buf[10:m]))
		up += len(payload)
		down += m - 10
	}
	ctl.Close()
	p.waitLog(t, `"command":"udp_associate"`, 1)

	var assoc map[string]any
	for _, rec := range p.logRecords(t, "session") {
		if rec["command"] == "udp_associate" {
			assoc = rec
		}
	}
	require.NotNil(t, assoc)
	assert.EqualValues(t, n, assoc["datagrams_up"])
	assert.EqualValues(t, n, assoc["datagrams_down"])
	assert.EqualValues(t, up, assoc["bytes_up"])
	assert.EqualValues(t, down, assoc["bytes_down"])
	port, ok := assoc["external_port"].(float64)
	require.True(t, ok, "external_port is a number: %v", assoc)
	assert.NotZero(t, port)
	d, ok := assoc["duration"].(float64)
	assert.True(t, ok && d > 0 && d < testTimeout.Seconds(), "duration in seconds: %v", assoc["duration"])
	sid, ok := assoc["sid"].(float64)
	require.True(t, ok, "the session line has a sid: %v", assoc)

	// The lease's lines name the same session and the key as one string.
	key := fmt.Sprintf("127.0.0.1//%d", uc.LocalAddr().(*net.UDPAddr).Port)
	acquired := p.logRecords(t, "lease acquire")
	require.NotEmpty(t, acquired)
	var found bool
	for _, rec := range acquired {
		if rec["sid"] == sid {
			found = true
			assert.Equal(t, key, rec["key"])
			assert.EqualValues(t, port, rec["port"], "the session line's external port is the lease's")
			assert.Equal(t, "association", rec["kind"])
		}
	}
	assert.True(t, found, "a lease acquire line with sid %v", sid)
	p.waitLog(t, `"msg":"lease linger"`, 1)
	linger := p.logRecords(t, "lease linger")
	require.NotEmpty(t, linger)
	assert.Equal(t, sid, linger[len(linger)-1]["sid"])

	var listening map[string]any
	for _, rec := range p.logRecords(t, "listening") {
		listening = rec
	}
	assert.Equal(t, 10.0, listening["lease_linger"], "a duration setting in seconds")
}

// TestDrainEndsSessionsSaysSo: a session still in its handshake when the
// drain begins, and one still running when drain_timeout runs out, say who
// ended them.
func TestDrainEndsSessionsSaysSo(t *testing.T) {
	p := startProxy(t, "-drain-timeout", "200ms")
	socksConnect(t, p.socks, holdServer(t))
	idle, err := net.DialTimeout("tcp", p.socks, testTimeout)
	require.NoError(t, err)
	defer idle.Close()
	p.waitMetric(t, "fwproxy_socks_sessions_active 2\n")

	require.NoError(t, p.Signal(syscall.SIGTERM))
	select {
	case <-p.Done():
		require.NoError(t, p.Err())
	case <-time.After(testTimeout):
		t.Fatalf("fwproxy did not exit after the drain\n%s", p.logs)
	}
	endedBy := map[string]string{}
	for _, rec := range p.logRecords(t, "session") {
		cmd, _ := rec["command"].(string)
		by, _ := rec["ended_by"].(string)
		endedBy[cmd] = by
	}
	assert.Equal(t, "drain_timeout", endedBy["connect"], "the established session ran out the drain")
	assert.Equal(t, "drain", endedBy["unknown"], "the session in its handshake was closed when the drain began")
}
