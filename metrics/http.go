package metrics

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// maxScrapesInFlight bounds concurrent scrapes; a scrape is cheap, so more
// than a few at once means something is hammering the endpoint.
const maxScrapesInFlight = 4

// Handler serves /metrics from g, /healthz, and any extra routes (for
// example /debug/leases) given by the caller.
func Handler(g prometheus.Gatherer, log *slog.Logger, extra map[string]http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelError),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: maxScrapesInFlight,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	for path, h := range extra {
		mux.Handle("GET "+path, h)
	}
	return mux
}
