package main

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// FuzzDecodeYAML: any file decodes without a panic, every problem is
// located in the file, and a file that decodes cleanly prints (as
// -print-config does) to YAML that decodes to the same Config.
func FuzzDecodeYAML(f *testing.F) {
	for _, s := range []string{
		"", "listen: 127.0.0.1:1080\n", "lease_linger: 0\nmms_ports: 1755\n", "rtsp_ports: []\n", "rtsp_ports: \"554, 8554\"\n",
		"rules:\n  clients: [127.0.0.1]\n  deny:\n    - network: 10.0.0.0/8\n      ports: 1-2\n",
		"a: b: c\n", "x: &a [1, *a]\n", "leases: {max_leases: 1}\n", "idle_timeout: 30\n",
	} {
		f.Add([]byte(s))
	}
	if example, err := os.ReadFile("config.example.yaml"); err == nil {
		f.Add(example)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := DefaultConfig()
		errs := decodeYAML("f.yaml", data, &cfg, origins{})
		for _, e := range errs {
			require.Regexp(t, `^f\.yaml(:\d+)?$`, e.Where, "%v", e)
		}
		if len(errs) > 0 {
			return
		}
		out, err := yaml.Marshal(cfg)
		require.NoError(t, err)
		back := DefaultConfig()
		require.Empty(t, decodeYAML("back.yaml", out, &back, origins{}), "%s", out)
		assert.Equal(t, normalise(cfg), normalise(back), "%s", out)
	})
}

// normalise makes empty and missing lists equal, as YAML does not tell
// them apart once printed.
func normalise(c Config) Config {
	if len(c.MMSPorts) == 0 {
		c.MMSPorts = nil
	}
	if len(c.RTSPPorts) == 0 {
		c.RTSPPorts = nil
	}
	for _, l := range []*[]string{&c.Rules.Clients, &c.Rules.Commands} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	for _, l := range []*[]DestRuleYAML{&c.Rules.Allow, &c.Rules.Deny} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	return c
}
