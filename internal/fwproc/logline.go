package fwproc

import (
	"encoding/json"
	"strconv"
	"strings"
)

// ParseLogLine reads one line of fwproxy's log in either format: JSON, or
// slog's text format (key=value pairs, values with spaces, quotes or "="
// Go-quoted). ok is false for anything else.
func ParseLogLine(line string) (rec map[string]any, ok bool) {
	if strings.HasPrefix(line, "{") {
		return rec, json.Unmarshal([]byte(line), &rec) == nil
	}
	rec = map[string]any{}
	for rest := line; rest != ""; {
		key, value, found := strings.Cut(rest, "=")
		if !found || key == "" || strings.ContainsAny(key, " \"") {
			return nil, false
		}
		if strings.HasPrefix(value, `"`) {
			quoted, err := strconv.QuotedPrefix(value)
			if err != nil {
				return nil, false
			}
			unquoted, _ := strconv.Unquote(quoted)
			rec[key] = unquoted
			rest = value[len(quoted):]
		} else {
			v, after, _ := strings.Cut(value, " ")
			rec[key] = v
			rest = " " + after
			if after == "" {
				rest = ""
			}
		}
		if rest != "" && !strings.HasPrefix(rest, " ") {
			return nil, false
		}
		rest = strings.TrimPrefix(rest, " ")
	}
	return rec, len(rec) > 0
}

// listeningAddrs reports the SOCKS and metrics addresses of a "listening"
// line; ok is false for any other line.
func listeningAddrs(line string) (socks, metrics string, ok bool) {
	rec, ok := ParseLogLine(line)
	if !ok || rec["msg"] != "listening" {
		return "", "", false
	}
	socks, _ = rec["socks"].(string)
	metrics, _ = rec["metrics"].(string)
	return socks, metrics, socks != ""
}
