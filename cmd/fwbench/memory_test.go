package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestLeaseCountsWithin(t *testing.T) {
	for _, tc := range []struct {
		name          string
		counts        []int
		limit, fdsPer int
		fit           []int
		cut           int
	}{
		{"all fit", []int{1000, 10000}, 1 << 16, 3, []int{1000, 10000}, 0},
		{"the sandbox's limit cuts 10,000 held leases to 6,000", []int{1000, 10000}, 20000, 3, []int{1000, 6000}, 6000},
		{"lingering leases take one descriptor", []int{1000, 10000}, 20000, 1, []int{1000, 10000}, 0},
		{"a low limit measures hundreds, not nothing", []int{1000, 10000}, 4096, 3, []int{1000}, 1000},
		{"1,024 descriptors still measure 200", []int{1000, 10000}, 1024, 3, []int{200}, 200},
		{"no room at all", []int{1000}, 300, 3, nil, 0},
		{"counts stay ascending without repeats", []int{500, 2000, 3000}, 4000, 3, []int{500, 1000}, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fit, cut := leaseCountsWithin(tc.counts, tc.limit, tc.fdsPer)
			assert.Equal(t, tc.fit, fit)
			assert.Equal(t, tc.cut, cut)
		})
	}
}
