// Package e2e holds fwproxy's end-to-end tests: they build the real
// binaries, start them as processes on loopback, and drive them with real
// clients (curl) and with the emulated media server and players.
//
// Everything here uses the public surface only: flags, SOCKS5, HTTP.
package e2e
