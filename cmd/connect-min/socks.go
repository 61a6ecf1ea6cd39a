package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"syscall"
)

// The parts of RFC 1928 this server speaks.
const (
	socksVersion = 0x05

	methodNoAuth       = 0x00 // §3
	methodNoAcceptable = 0xff

	cmdConnect      = 0x01 // §4
	cmdBind         = 0x02
	cmdUDPAssociate = 0x03

	atypIPv4   = 0x01 // §5
	atypDomain = 0x03
	atypIPv6   = 0x04

	repSucceeded           = 0x00 // §6
	repGeneralFailure      = 0x01
	repNetworkUnreachable  = 0x03
	repHostUnreachable     = 0x04
	repConnectionRefused   = 0x05
	repCommandNotSupported = 0x07
	repAddressNotSupported = 0x08
)

// maxRequestLen is the longest request: VER CMD RSV ATYP, a length octet
// and a 255-octet domain name, DST.PORT (RFC 1928 §4, §5).
const maxRequestLen = 4 + 1 + 255 + 2

var (
	errVersion = errors.New("not SOCKS version 5")
	errShort   = errors.New("short request")
	// errRefused: the request was answered with a failure reply; the
	// session ends.
	errRefused = errors.New("request refused")
)

// request is a parsed CONNECT (or other) request. dst is set for IPv4 and
// IPv6 addresses, name for a domain name.
type request struct {
	cmd  byte
	atyp byte
	dst  netip.AddrPort
	name string
}

// requestLen is how long the request whose first five octets are head is
// (the fifth is a domain name's length); ok is false for an unknown ATYP.
func requestLen(head [5]byte) (n int, ok bool) {
	switch head[3] {
	case atypIPv4:
		return 4 + 4 + 2, true
	case atypIPv6:
		return 4 + 16 + 2, true
	case atypDomain:
		return 4 + 1 + int(head[4]) + 2, true
	}
	return 0, false
}

// parseRequest parses one request from the start of b and returns it and
// its length. The result does not alias b.
//
//	+----+-----+-------+------+----------+----------+
//	|VER | CMD |  RSV  | ATYP | DST.ADDR | DST.PORT |
//	+----+-----+-------+------+----------+----------+
//	| 1  |  1  | X'00' |  1   | Variable |    2     |
//	+----+-----+-------+------+----------+----------+
func parseRequest(b []byte) (request, int, error) {
	if len(b) < 5 {
		return request{}, 0, errShort
	}
	if b[0] != socksVersion {
		return request{}, 0, errVersion
	}
	n, ok := requestLen([5]byte(b))
	if !ok {
		return request{}, 0, fmt.Errorf("address type %#02x", b[3])
	}
	if len(b) < n {
		return request{}, 0, errShort
	}
	r := request{cmd: b[1], atyp: b[3]}
	port := binary.BigEndian.Uint16(b[n-2:])
	switch r.atyp {
	case atypIPv4:
		r.dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port)
	case atypIPv6:
		r.dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[4:20])), port)
	case atypDomain:
		r.name = string(b[5 : n-2])
		r.dst = netip.AddrPortFrom(netip.Addr{}, port)
	}
	return r, n, nil
}

// appendReply appends a reply with code rep and BND.ADDR/BND.PORT bound
// (IPv4 0.0.0.0:0 when bound is invalid, as for a failure).
func appendReply(b []byte, rep byte, bound netip.AddrPort) []byte {
	b = append(b, socksVersion, rep, 0)
	switch ip := bound.Addr().Unmap(); {
	case ip.Is6():
		v := ip.As16()
		b = append(append(b, atypIPv6), v[:]...)
	case ip.Is4():
		v := ip.As4()
		b = append(append(b, atypIPv4), v[:]...)
	default:
		b = append(b, atypIPv4, 0, 0, 0, 0)
	}
	return binary.BigEndian.AppendUint16(b, bound.Port())
}

// handshakeBufLen holds the longest greeting (VER NMETHODS and 255
// methods, §3) and the longest request, read together: a client may send
// its request, and data after it, without waiting for our answers.
const handshakeBufLen = 2 + 255 + maxRequestLen

// handshake reads the greeting from c, selects "no authentication", reads
// the request and returns the IP destination of a CONNECT, and what the
// client sent after its request (a slice of buf, for the caller to pass to
// the destination first). Anything else is answered with RFC 1928's reply
// for it, and errRefused returned; a client that speaks no SOCKS 5 gets no
// answer. c stays the caller's; buf must hold handshakeBufLen bytes.
//
// c is read as the bytes come, into buf: a client that waits for each
// answer (curl, fwbench) costs one read for the greeting and one for the
// request, as in a C server.
func handshake(c io.ReadWriter, buf []byte) (netip.AddrPort, []byte, error) {
	buf = buf[:handshakeBufLen]
	have := 0
	// fill reads until buf holds need bytes.
	fill := func(need int) error {
		for have < need {
			n, err := c.Read(buf[have:])
			have += n
			if err != nil && have < need {
				return err
			}
		}
		return nil
	}
	// Greeting: VER NMETHODS METHODS (§3).
	if err := fill(2); err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("greeting: %w", err)
	}
	if buf[0] != socksVersion {
		return netip.AddrPort{}, nil, errVersion
	}
	greetingLen := 2 + int(buf[1])
	if err := fill(greetingLen); err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("greeting methods: %w", err)
	}
	selected := byte(methodNoAcceptable)
	for _, m := range buf[2:greetingLen] {
		if m == methodNoAuth {
			selected = methodNoAuth
		}
	}
	if _, err := c.Write([]byte{socksVersion, selected}); err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("method selection: %w", err)
	}
	if selected == methodNoAcceptable {
		return netip.AddrPort{}, nil, errRefused
	}
	req := buf[greetingLen:]
	if err := fill(greetingLen + 5); err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("request: %w", err)
	}
	n, ok := requestLen([5]byte(req))
	if !ok {
		return netip.AddrPort{}, nil, refuse(c, repAddressNotSupported)
	}
	// The whole request is read, a domain name too, so that the reply is
	// not lost to a reset for unread data when the connection closes.
	if err := fill(greetingLen + n); err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("request: %w", err)
	}
	r, _, err := parseRequest(req[:n])
	switch {
	case err != nil:
		return netip.AddrPort{}, nil, err
	case r.cmd != cmdConnect:
		return netip.AddrPort{}, nil, refuse(c, repCommandNotSupported)
	case r.atyp == atypDomain:
		// No resolver: fwbench's clients send IP literals.
		return netip.AddrPort{}, nil, refuse(c, repAddressNotSupported)
	}
	return r.dst, buf[greetingLen+n : have], nil
}

// refuse writes a failure reply and returns errRefused.
func refuse(c io.Writer, rep byte) error {
	if _, err := c.Write(appendReply(nil, rep, netip.AddrPort{})); err != nil {
		return fmt.Errorf("reply: %w", err)
	}
	return errRefused
}

// replyCode is the reply for a failed connection to the destination.
func replyCode(err error) byte {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return repConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return repNetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ETIMEDOUT),
		errors.Is(err, syscall.EINPROGRESS), errors.Is(err, syscall.EAGAIN),
		errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return repHostUnreachable
	}
	return repGeneralFailure
}
