// Package socksclient is the SOCKS5 client (RFC 1928, with RFC 1929
// username/password) of fwproxy's own tools: the benchmark, the emulated
// players, the demo and the tests. It is not used by the proxy itself.
//
// A Dialer opens one control connection per request and waits for each of
// the proxy's answers before the next step (greeting, login, request), as
// curl and Dante's client do, so that no proxy gets a pipelined handshake
// it might not expect. Connect returns the established stream; Associate
// returns a net.PacketConn that adds and strips the UDP request header
// (RFC 1928 §7) and owns the association's control connection.
//
// The wire helpers (AppendUDPHeader, ParseUDPHeader, ReadReply) are
// exported for load loops that drive their own sockets and must not
// allocate per datagram.
package socksclient
