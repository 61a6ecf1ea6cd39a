//go:build !linux

package main

import (
	"errors"
	"net/netip"
	"time"
)

// The streaming scenario's players use epoll and the kernel's receive
// time stamps (stream_socket_linux.go); elsewhere it does not run.
var errStreamLinux = errors.New("the streaming scenario runs on Linux only")

type playerSocket struct{ port uint16 }

func openPlayerSocket(netip.Addr) (*playerSocket, error) { return nil, errStreamLinux }

func (*playerSocket) close() error                        { return nil }
func (*playerSocket) sendTo([]byte, netip.AddrPort) error { return errStreamLinux }
func (*playerSocket) readFrom([]byte, time.Duration) (int, netip.AddrPort, error) {
	return 0, netip.AddrPort{}, errStreamLinux
}

type receivers struct{}

func newReceivers(int) (*receivers, error)       { return nil, errStreamLinux }
func (*receivers) close()                        {}
func (*receivers) add(*streamPlayer) error       { return errStreamLinux }
func (*receivers) start(stepWindow) func() error { return func() error { return errStreamLinux } }
