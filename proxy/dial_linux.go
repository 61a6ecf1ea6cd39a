package proxy

import "syscall"

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (linux/in.h); the
// syscall package does not name it.
const ipBindAddressNoPort = 24

// bindNoPort lets the kernel choose the local port of a dial from a chosen
// address at connect time, as for an unbound socket, instead of at bind
// time, where it must skip every port a TIME_WAIT connection still holds:
// with many short CONNECTs from ExternalIP that search dominated the dial.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	}); err != nil {
		return err
	}
	return serr
}
