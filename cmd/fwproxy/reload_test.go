package main

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/proxy"
)

func TestKeepRestartOnly(t *testing.T) {
	tests := []struct {
		name       string
		change     func(*Config)
		auth       [2]bool // next, running
		wantKept   []string
		wantChange []string // what still differs after the restart-only keys are kept
	}{
		{"live keys change", func(c *Config) { c.Rules.Clients = []string{"192.0.2.0/24"}; c.IdleTimeout = 0; c.MMSPorts = nil }, [2]bool{},
			nil, []string{"idle_timeout", "mms_ports", "rules.clients"}},
		{"listen addresses and external ip are kept", func(c *Config) {
			c.Listen = "127.0.0.1:1"
			c.MetricsListen = ""
			c.ExternalIP = "127.0.0.2"
			c.LogLevel = "debug"
		}, [2]bool{}, []string{"listen", "metrics_listen", "external_ip"}, []string{"log_level"}},
		{"lease limits are kept, by key", func(c *Config) { c.Leases.MaxLeases = 1; c.UDPPorts = "40000-40010" }, [2]bool{},
			[]string{"udp_ports", "leases.max_leases"}, nil},
		{"another users file is reloaded", func(c *Config) { c.Users = "/etc/fwproxy/users2" }, [2]bool{true, true},
			nil, []string{"users"}},
		{"authentication cannot be turned on", func(c *Config) { c.Users = "/etc/fwproxy/users" }, [2]bool{true, false},
			[]string{"users (authentication on or off)"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			running := DefaultConfig()
			next := DefaultConfig()
			tt.change(&next)
			kept := keepRestartOnly(&next, running, tt.auth[0], tt.auth[1])
			assert.Equal(t, tt.wantKept, kept)
			assert.Equal(t, tt.wantChange, diffKeys(reflect.ValueOf(running), reflect.ValueOf(next), ""))
		})
	}
}

// portFilter is a filter with a name only, for the table tests.
type portFilter string

func (f portFilter) Name() string { return string(f) }
func (portFilter) NewSession(context.Context, proxy.SessionInfo) (proxy.FilterSession, error) {
	return nil, errors.New("not for sessions")
}

// TestFilterTable: each filter gets the ports of its own key; a port
// claimed twice fails with the key and both filters named, which stops
// start-up and makes a reload keep the running table (reload refuses the
// whole configuration on this error).
func TestFilterTable(t *testing.T) {
	d := &daemon{filters: []configuredFilter{
		{filter: portFilter("mms"), key: "mms_ports", ports: func(c Config) []uint16 { return c.MMSPorts }},
		{filter: portFilter("line"), key: "line_ports", ports: func(Config) []uint16 { return []uint16{7000} }},
		{filter: portFilter("rtsp"), key: "rtsp_ports", ports: func(c Config) []uint16 { return c.RTSPPorts }},
	}}
	tests := []struct {
		name    string
		ports   []uint16
		wantErr string
		wantLen int
	}{
		{"default", []uint16{1755}, "", 4},
		{"no MMS ports", nil, "", 3},
		{"an RTSP port", []uint16{1755, 554}, `rtsp_ports: port 554 is also in mms_ports: proxy: register filter "rtsp" for port 554: the port already runs filter "mms"`, 0},
		{"listed twice", []uint16{1755, 8755, 1755}, `mms_ports: proxy: register filter "mms" for port 1755: the port already runs filter "mms"`, 0},
		{"another filter's port", []uint16{7000}, `line_ports: port 7000 is also in mms_ports: proxy: register filter "line" for port 7000: the port already runs filter "mms"`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.MMSPorts = tt.ports
			table, err := d.filterTable(cfg)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr+"; a port has at most one filter")
				require.ErrorIs(t, err, proxy.ErrFilterExists)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantLen, table.Len())
		})
	}
}
