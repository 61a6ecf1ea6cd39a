// Package udpio moves UDP datagrams between a socket and the proxy without
// allocating per datagram and without pinning a read buffer to a socket that
// has nothing to read. It is the one UDP I/O layer under the lease sockets
// (leases) and the association relay sockets (proxy).
//
// A Reader receives. On Linux it waits for readability through
// syscall.RawConn and calls recvfrom(2) itself, so a parked reader owns no
// buffer: it borrows one from its Policy's Buffers only to read, and gives it
// back by the policy's rule (when the socket is drained, or a while after it
// took it). Elsewhere it blocks in ReadFromUDPAddrPort with a buffer of its
// own for its whole life. Either way Next reports the datagram's real size,
// so a datagram larger than the buffer is seen as such instead of being
// passed on cut. Each hands every datagram to a function instead: on Linux
// it reads with recvmmsg(2), BatchSize at a time, inside one wait of the
// poller, so a lone datagram costs one receive call, not two (see Each).
//
// A Writer sends one datagram made of a head and a payload. On Linux that is
// one sendmsg(2) with two iovecs, so neither part is copied; elsewhere both
// are copied into one buffer the writer keeps.
//
// Addresses: what a Reader reports is always unmapped (an IPv4 sender on an
// IPv6 socket arrives as ::ffff:a.b.c.d and is reported as a.b.c.d), so that
// callers compare peers like with like. A Writer on an IPv6 socket sends to an
// IPv4 destination in its IPv4-mapped form, which is the only form such a
// socket accepts; on an IPv4 socket an IPv4-mapped destination is sent to its
// IPv4 address and a real IPv6 destination is refused with ErrFamily. This is
// what net.UDPConn.WriteToUDPAddrPort does. IPv6 zones (scope ids) are neither
// reported nor sent: the proxy's relays never use link-local peers.
package udpio
