package main

import (
	"flag"
	"fmt"
	"io"
	"reflect"
)

// configFlag binds a flag to a configuration key; its value is parsed as
// that key's YAML value would be (decode.go).
type configFlag struct{ name, key, usage string }

// allowKey is the key -allow appends to.
const allowKey = "rules.allow"

// configFlags lists the flags that set configuration keys, in -h order.
// A new key gets a flag by one line here.
func configFlags() []configFlag {
	return []configFlag{
		{"listen", "listen", "SOCKS5 listen `ADDR`"},
		{"metrics-listen", "metrics_listen", "metrics listen `ADDR`, empty to disable"},
		{"metrics-users", "metrics_users", "users `PATH` whose users alone may read /metrics and /debug/leases (HTTP basic auth; same format as -users)"},
		{"users", "users", "users `PATH` (name:bcrypt-hash lines); requires username/password"},
		{"auth-failures-per-minute", "auth_failures_per_minute", "failed logins a source may make a minute once its burst is spent; then refused unchecked; 0 no limit"},
		{"auth-failure-burst", "auth_failure_burst", "failed logins a source may make in a row before -auth-failures-per-minute applies"},
		{"auth-concurrency", "auth_concurrency", "password (bcrypt) checks at once; 0 one per CPU"},
		{"log-format", "log_format", "log `FORMAT`: text or json"},
		{"log-level", "log_level", "log `LEVEL`: debug, info, warn, error"},
		{"handshake-timeout", "handshake_timeout", "time limit from accept to request answered"},
		{"dial-timeout", "dial_timeout", "time limit to reach a CONNECT destination"},
		{"idle-timeout", "idle_timeout", "close a TCP session idle this long both ways; 0 never"},
		{"tcp-keepalive", "tcp_keepalive", "TCP keep-alive probe period of sessions; 0 sends none"},
		{"max-sessions", "max_sessions", "cap on concurrent client connections"},
		{"max-sessions-per-client", "max_sessions_per_client", "cap on one client IP's concurrent connections; 0 no cap"},
		{"bind-ports", "bind_ports", "port range `LO-HI` BIND listens on"},
		{"allow", allowKey, "add a destination allow rule `NETWORK[,PORTS]` to rules.allow (repeatable); a rule narrower than /0 also lifts the refusal of the proxy's host, and with PORTS of its own sockets at those ports"},
		{"external-ip", "external_ip", "the proxy's `IP` towards media servers: lease sockets and BIND listen there"},
		{"advertise-ip", "advertise_ip", "`IP` sent as BND.ADDR of UDP ASSOCIATE and BIND (default: the address the client connected to)"},
		{"udp-ports", "udp_ports", "external UDP port range `LO-HI` of leases"},
		{"lease-linger", "lease_linger", "keep a released UDP lease open and buffering this long; 0 closes at once"},
		{"udp-idle-timeout", "udp_idle_timeout", "end a UDP association idle this long; 0 never"},
		{"bind-timeout", "bind_timeout", "how long BIND waits for the incoming connection"},
		{"drain-timeout", "drain_timeout", "how long shutdown waits for sessions"},
		{"relay-ports", "relay_ports", "client-facing UDP relay port range `LO-HI` of associations; empty: ephemeral ports"},
		{"proxy-protocol-from", "proxy_protocol_from", "comma-separated balancer `NETWORKS` whose connections must carry a PROXY protocol header (v1 or v2); empty: none"},
		{"mms-ports", "mms_ports", "comma-separated TCP `PORTS` whose sessions run through the MMS filter; empty disables it"},
		{"rtsp-ports", "rtsp_ports", "comma-separated TCP `PORTS` whose sessions run through the RTSP filter; empty disables it"},
	}
}

type actionKind int

const (
	actionServe actionKind = iota
	actionPrintConfig
	actionCheckConfig
	actionHashPassword
	actionVersion
)

// flagValue is one configuration flag as given on the command line.
type flagValue struct{ name, key, value string }

// invocation is what the command line asks for. The configuration itself
// is built by load, so that SIGHUP can build it again from the same file
// and flags.
type invocation struct {
	action     actionKind
	user       string // for -hash-password
	configPath string
	flags      []flagValue // in command-line order
}

const usageText = `Usage: fwproxy [flags]

fwproxy is a SOCKS5 proxy for media clients. It reads the YAML file given by
-config (if any), then applies the flags over it. SIGHUP reloads the file.

Examples:
  fwproxy -check-config -config /etc/fwproxy/config.yaml
      check a configuration and print it as the daemon would run it
  fwproxy -listen 192.0.2.10:1080 -external-ip 203.0.113.10 -users /etc/fwproxy/users
      serve inside clients, reaching media servers from 203.0.113.10
  fwproxy -hash-password alice < password.txt >> /etc/fwproxy/users
      add a user

Flags (durations are written 30s, 5m, 1h30m; a bare 0 turns a timeout off):
`

// parseArgs reads the command line.
func parseArgs(args []string, usageOut io.Writer) (invocation, error) {
	var inv invocation
	fs, acts := inv.flagSet(usageOut)
	if err := fs.Parse(args); err != nil {
		return inv, err
	}
	if fs.NArg() > 0 {
		return inv, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	inv.action = acts.action(inv.user)
	return inv, nil
}

// actionFlags are the flags that do something other than serve.
type actionFlags struct {
	printConfig, checkConfig, version *bool
}

// flagSet defines every flag; parsing fills inv and the actionFlags.
func (inv *invocation) flagSet(usageOut io.Writer) (*flag.FlagSet, actionFlags) {
	fs := flag.NewFlagSet("fwproxy", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	fs.Usage = func() {
		fmt.Fprint(usageOut, usageText)
		fs.PrintDefaults()
	}
	fs.StringVar(&inv.configPath, "config", "", "YAML configuration `file`; flags override it")
	var acts actionFlags
	acts.printConfig = fs.Bool("print-config", false, "check the configuration, print it as YAML and exit (non-zero when it is invalid)")
	acts.checkConfig = fs.Bool("check-config", false, "check the configuration as a start would (users file included), print it or every error, and exit")
	acts.version = fs.Bool("version", false, "print the version, commit and Go version and exit")
	fs.StringVar(&inv.user, "hash-password", "", "print a users-file line for `USER` with the password read from standard input, and exit")
	inv.addConfigFlags(fs)
	return fs, acts
}

// addConfigFlags defines a flag per configuration key; each use is kept in
// command-line order, for load to apply over the file.
func (inv *invocation) addConfigFlags(fs *flag.FlagSet) {
	def := reflect.ValueOf(DefaultConfig())
	for _, f := range configFlags() {
		usage := f.usage
		if v, ok := fieldByKey(def, f.key); ok {
			usage += fmt.Sprintf(" (config key %s, default %s)", f.key, defaultText(v))
		}
		fs.Func(f.name, usage, func(v string) error {
			inv.flags = append(inv.flags, flagValue{name: f.name, key: f.key, value: v})
			return nil
		})
	}
}

// action picks what to do; the first of these flags set wins.
func (a actionFlags) action(user string) actionKind {
	switch {
	case *a.version:
		return actionVersion
	case user != "":
		return actionHashPassword
	case *a.checkConfig:
		return actionCheckConfig
	case *a.printConfig:
		return actionPrintConfig
	}
	return actionServe
}

func defaultText(v reflect.Value) string {
	if v.Kind() == reflect.String && v.String() == "" {
		return `""`
	}
	if v.Kind() == reflect.Slice {
		s := ""
		for i := range v.Len() {
			if i > 0 {
				s += ","
			}
			s += fmt.Sprint(v.Index(i))
		}
		return s
	}
	return fmt.Sprint(v)
}

// load builds the effective configuration: defaults, then the -config
// file, then every flag in command-line order. It returns every problem
// with the file and the flags, and where each setting came from.
func (inv invocation) load() (Config, origins, configErrors) {
	cfg := DefaultConfig()
	origin := origins{}
	var errs configErrors
	if inv.configPath != "" {
		data, err := readConfigFile(inv.configPath)
		if err != nil {
			return cfg, origin, configErrors{{Where: inv.configPath, Msg: fmt.Sprintf("cannot read the configuration file: %v", err)}}
		}
		errs = append(errs, decodeYAML(inv.configPath, data, &cfg, origin)...)
	}
	v := reflect.ValueOf(&cfg).Elem()
	for _, f := range inv.flags {
		where := "-" + f.name
		if f.key == allowKey {
			// -allow adds a rule rather than replacing the list, so that
			// a file's rules and the flag's can be combined.
			cfg.Rules.Allow = append(cfg.Rules.Allow, parseDestRuleFlag(f.value))
			origin[f.key] = where
			continue
		}
		field, ok := fieldByKey(v, f.key)
		if !ok { // a mistake in configFlags, which TestConfigFlags catches
			errs = append(errs, configError{Where: where, Msg: "names no configuration key " + f.key})
			continue
		}
		origin[f.key] = where
		var msgs []string
		if field.Kind() == reflect.Slice {
			var out reflect.Value
			out, msgs = parseScalarList(field.Type().Elem(), f.value)
			field.Set(out)
		} else if msg := setScalar(field, f.value); msg != "" {
			msgs = []string{msg}
		}
		for _, m := range msgs {
			errs = append(errs, configError{Where: where, Msg: m})
		}
	}
	return cfg, origin, errs
}
