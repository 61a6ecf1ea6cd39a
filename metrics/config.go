package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// ConfigReloads counts SIGHUP reloads of the configuration file, the
// series Prometheus itself uses for its own reloads.
type ConfigReloads struct {
	success, failure prometheus.Counter
	lastSuccess      prometheus.Gauge
}

// NewConfigReloads creates the reload series, both results at 0, and sets
// the last-success time to loaded: the start-up load counts as one.
func NewConfigReloads(reg prometheus.Registerer, loaded time.Time) *ConfigReloads {
	f := promauto.With(reg)
	total := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "config_reloads_total",
		Help:      "Configuration reloads (SIGHUP) by result; a failed reload keeps the running configuration.",
	}, []string{"result"})
	c := &ConfigReloads{
		success: total.WithLabelValues("success"),
		failure: total.WithLabelValues("failure"),
		lastSuccess: f.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace,
			Name:      "config_last_reload_success_timestamp_seconds",
			Help:      "Unix time of the last configuration load that took effect (start-up or SIGHUP).",
		}),
	}
	c.lastSuccess.Set(float64(loaded.UnixNano()) / 1e9)
	return c
}

// Reloaded records one reload's result at now.
func (c *ConfigReloads) Reloaded(ok bool, now time.Time) {
	if !ok {
		c.failure.Inc()
		return
	}
	c.success.Inc()
	c.lastSuccess.Set(float64(now.UnixNano()) / 1e9)
}
