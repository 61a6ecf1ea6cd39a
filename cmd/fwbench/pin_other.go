//go:build !linux

package main

import "errors"

// cpuSplit pins nothing where fwbench cannot set affinities.
type cpuSplit struct{}

func splitCPUs() (cpuSplit, error) { return cpuSplit{}, errors.New("CPU affinity is Linux only") }

func (*cpuSplit) pin([]int) error   { return nil }
func (*cpuSplit) unpin([]int) error { return nil }
func (*cpuSplit) String() string    { return "" }
