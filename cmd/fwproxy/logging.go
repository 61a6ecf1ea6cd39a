package main

import (
	"log/slog"
)

// jsonAttr is the JSON log handler's ReplaceAttr: durations become seconds
// as a number ("duration":1.25), which log pipelines can compare and sum,
// instead of slog's nanosecond integers. Text logs keep Go's "1.25s".
func jsonAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.Float64(a.Key, a.Value.Duration().Seconds())
	}
	return a
}
