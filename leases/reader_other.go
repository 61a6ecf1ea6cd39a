//go:build !linux

package leases

import "net"

func newPlatformSource(c *net.UDPConn, pool *bufPool, idle func()) (datagramSource, error) {
	return newStdSource(c, pool, idle), nil
}
