//go:build !linux

package udpio

import "net"

// NewWriter returns the portable writer: see NewPortableWriter.
func NewWriter(c *net.UDPConn) (Writer, error) { return NewPortableWriter(c), nil }
