// Package leases keeps the external UDP sockets of fwproxy's clients.
//
// A lease is one external UDP socket held for one Key (client IP, SOCKS user,
// client port). It exists for the media player that closes its UDP socket and
// binds the same port again at every playlist item: the proxy's external side
// of that binding must survive the gap without losing a datagram, and the new
// bind must never fail with "address already in use", whatever order the
// release and the new bind reach the proxy in.
//
// The rules, in short (README.md has the full set):
//
//   - Everything that happens to one key — acquire, release, linger expiry,
//     eviction — takes the key's turn, so it never interleaves; different keys
//     run in parallel, and the datagram path takes only a per-lease lock.
//   - Releasing the last holder does not close the socket: it lingers for
//     Config.Linger, keeps reading, and buffers (bounded) what arrives. An
//     Acquire of the key in that time reclaims the same socket and port and
//     gets the buffer first, in order.
//   - An Acquire that meets a live holder of the same kind hands the lease
//     over; the old holder's late Release is then stale and changes nothing.
//   - An Acquire that meets its key's socket being closed waits for the
//     close, then binds.
//   - Inbound datagrams are relayed only from permitted peers (hosts the
//     client sent to, and peers an application filter registered).
//   - No datagram is sent from a lease socket to one of the proxy's own
//     sockets (Deps.Self, which every lease socket joins while bound): it is
//     dropped and counted (own_socket), so a delivery cannot loop. A new
//     socket is never bound at its holder's delivery address.
//   - When the delivery target goes away, delivery returns to the newest
//     holder still alive, so a lease with a live holder is never stranded.
//   - AcquireGroup takes several keys on consecutive external ports (RTP on
//     an even port, RTCP on the next odd one) as one step, all or nothing,
//     taking the keys' turns in sorted order so that groups sharing keys
//     cannot deadlock; a released group lingers and is reclaimed whole.
//   - Config.Linger = 0 restores the old behaviour (no buffering, close on
//     the last release) so tests can show what it breaks.
//
// The package refuses to do some things: it never binds a wildcard address,
// never sets SO_REUSEADDR to paper over a conflict, never grows a buffer
// without a cap, and knows nothing about SOCKS framing — a DeliverFunc gets
// the plain datagram and the proxy encapsulates it.
package leases
