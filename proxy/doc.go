// Package proxy is fwproxy's SOCKS5 server (RFC 1928, with RFC 1929
// username/password authentication).
//
// It negotiates the method, authenticates, reads the request, applies the
// access rules and serves CONNECT, relaying both byte streams with
// half-close. A CONNECT to a port with a registered application Filter
// (Filters.Register), or one a filter expected (ConnectExpecter), has its
// streams run through that filter, which may rewrite them. Every phase
// has a time limit from Config; Shutdown drains sessions, Close ends them.
//
// The package parses requests with github.com/armon/go-socks5 and uses its
// credential-store and rule-set interfaces; it adds what that package
// lacks: contexts, time limits, session limits, rules by network and port,
// filters, metrics hooks and graceful shutdown. It runs RFC 1929 itself, so
// that password checks are bounded: a fixed number at once, and none for a
// source that failed too often.
//
// Every destination (CONNECT, each address of a requested name, each UDP
// datagram a client relays, BIND's DST.ADDR and its peer) is judged in one
// place, Server.judge: the unspecified address never, the proxy's host,
// its own sockets (a selfaddr.Set shared with the daemon), multicast,
// broadcast and the client networks (the inside a client must not pivot
// back into) only when an explicit allow rule names them.
//
// It refuses to listen anywhere it is not told to, to trust a client it has
// no rule for, to let one client IP hold more than its share of sessions,
// to be its own destination, and to hold a session past its time limits.
package proxy
