//go:build !pprof

package main

// startProfile is a no-op without the pprof build tag (profile_pprof.go).
func startProfile() (stop func()) { return func() {} }
