//go:build !linux

package udpio

import "net"

// NewReader returns the portable reader: see NewPortableReader.
func NewReader(c *net.UDPConn, p Policy) (Reader, error) {
	return NewPortableReader(c, p)
}
