package main

import (
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
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
