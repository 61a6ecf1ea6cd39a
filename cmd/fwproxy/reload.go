package main

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"fwproxy/metrics"
	"fwproxy/proxy"
)

// daemon is what a SIGHUP reload changes in the running daemon.
type daemon struct {
	inv   invocation
	cur   settings // what is in force
	log   *slog.Logger
	level *slog.LevelVar
	users *proxy.ReloadableUsers // nil: no authentication
	srv   *proxy.Server
	// filters are the application filters, each with the config key that
	// lists its ports.
	filters []configuredFilter
	reloads *metrics.ConfigReloads
	// setLimits updates the fwproxy_limit_* gauges after a reload.
	setLimits func(metrics.Limits)
}

// configuredFilter is an application filter and the config key of its
// ports. A new filter adds its own key to Config and one entry here.
type configuredFilter struct {
	filter proxy.Filter
	key    string
	ports  func(Config) []uint16
}

// filterTable registers every filter for the ports cfg gives it. A port
// claimed twice (by two filters, or listed twice under one key) fails, with
// the keys named, so that start-up stops and a reload changes nothing.
func (d *daemon) filterTable(cfg Config) (*proxy.Filters, error) {
	var t proxy.Filters
	for _, f := range d.filters {
		if err := t.Register(f.filter, f.ports(cfg)...); err != nil {
			var clash *proxy.FilterClashError
			if errors.As(err, &clash) && clash.Registered != clash.Refused {
				return nil, fmt.Errorf("%s: port %d is also in %s: %w", f.key, clash.Port, d.keyOf(clash.Registered), err)
			}
			return nil, fmt.Errorf("%s: %w", f.key, err)
		}
	}
	return &t, nil
}

// keyOf is the config key of the filter called name.
func (d *daemon) keyOf(name string) string {
	for _, f := range d.filters {
		if f.filter.Name() == name {
			return f.key
		}
	}
	return "another filter's ports"
}

// reload reads the configuration file again, applies the same flags over
// it (they keep overriding the file), and puts it in force: all of it, or,
// when anything is wrong, none of it. Keys that a running daemon cannot
// change keep their running values, named in a warning.
func (d *daemon) reload() {
	next, warns, errs := d.inv.settings()
	if len(errs) == 0 {
		if kept := keepRestartOnly(&next.cfg, d.cur.cfg, next.users != nil, d.cur.users != nil); len(kept) > 0 {
			d.log.Warn("config reload: these settings need a restart; keeping their running values", "keys", strings.Join(kept, ", "))
			// Check again with the running values in place, so the
			// settings built for the packages agree with them.
			next, warns, errs = d.inv.withConfig(next.cfg)
		}
	}
	if len(errs) == 0 {
		table, err := d.filterTable(next.cfg)
		if err == nil {
			err = d.srv.Reconfigure(next.proxy, table)
		}
		if err != nil {
			errs = configErrors{{Msg: err.Error()}}
		}
	}
	if len(errs) > 0 {
		for _, e := range errs {
			d.log.Error("config reload: " + e.Error())
		}
		d.reloads.Reloaded(false, time.Now())
		d.log.Error("config reload failed; the running configuration is unchanged", "errors", len(errs))
		return
	}
	for _, w := range warns {
		d.log.Warn("config reload: " + w.Error())
	}
	if next.users != nil {
		d.users.Replace(next.users)
	}
	d.level.Set(next.level)
	changed := diffKeys(reflect.ValueOf(d.cur.cfg), reflect.ValueOf(next.cfg), "")
	d.cur = next
	if d.setLimits != nil {
		d.setLimits(limitsOf(d.cur))
	}
	d.reloads.Reloaded(true, time.Now())
	attrs := []any{"changed", strings.Join(changed, ", ")}
	if next.users != nil {
		attrs = append(attrs, "users", next.users.Len())
	}
	d.log.Info("config reloaded", attrs...)
}

// withConfig checks cfg as the invocation's own would be checked.
func (inv invocation) withConfig(cfg Config) (settings, configErrors, configErrors) {
	_, origin, _ := inv.load()
	s, errs, warns := resolve(cfg, origin)
	return s, warns, errs
}

// keepRestartOnly copies into next the running value of every key tagged
// `reload:"restart"` that the new file changes, and returns those keys.
// Turning authentication on or off also needs a restart (the SOCKS
// methods offered are fixed when the server starts); another users file,
// or the same one edited, is reloaded.
func keepRestartOnly(next *Config, running Config, nextAuth, runningAuth bool) []string {
	var kept []string
	nv, rv := reflect.ValueOf(next).Elem(), reflect.ValueOf(running)
	for i := range nv.NumField() {
		f := nv.Type().Field(i)
		if f.Tag.Get("reload") != "restart" {
			continue
		}
		if keys := diffKeys(rv.Field(i), nv.Field(i), yamlName(f)); len(keys) > 0 {
			kept = append(kept, keys...)
			nv.Field(i).Set(rv.Field(i))
		}
	}
	if nextAuth != runningAuth {
		kept = append(kept, "users (authentication on or off)")
		next.Users = running.Users
	}
	return kept
}

// diffKeys lists the keys whose values differ between a and b, struct by
// struct down to the leaves; a list counts as one value.
func diffKeys(a, b reflect.Value, key string) []string {
	if a.Kind() != reflect.Struct {
		if reflect.DeepEqual(a.Interface(), b.Interface()) || a.Kind() == reflect.Slice && a.Len() == 0 && b.Len() == 0 {
			return nil
		}
		return []string{key}
	}
	var out []string
	for i := range a.NumField() {
		name := yamlName(a.Type().Field(i))
		if name == "" {
			continue
		}
		out = append(out, diffKeys(a.Field(i), b.Field(i), joinKey(key, name))...)
	}
	return out
}
