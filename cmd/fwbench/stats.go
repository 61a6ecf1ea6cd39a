package main

import (
	"slices"
	"time"
)

// sample collects the durations of one measurement (setup times, round
// trips, rebinds) and the counts that go with them.
type sample struct {
	lat  []time.Duration
	ok   int // operations completed
	lost int // operations that timed out or lost their datagram
}

// merge adds o's durations and counts to s.
func (s *sample) merge(o sample) {
	s.lat = append(s.lat, o.lat...)
	s.ok += o.ok
	s.lost += o.lost
}

// percentile returns the p-quantile (0 < p <= 1) of d by the nearest-rank
// method, sorting d in place; 0 for no data.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	// Nearest rank: the smallest value with at least p of the data at or
	// below it.
	rank := int(float64(len(d))*p+0.999999) - 1
	return d[min(max(rank, 0), len(d)-1)]
}

// perSecond is n events over elapsed as a rate; 0 when nothing elapsed.
func perSecond(n int, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return float64(n) / elapsed.Seconds()
}

// micros is d in microseconds, for table cells.
func micros(d time.Duration) float64 {
	return float64(d) / float64(time.Microsecond)
}
