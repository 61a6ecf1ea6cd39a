// Package mmsplayer holds emulated MMS players for fwproxy's end-to-end
// tests and demo, and their per-entry reports.
//
// Three players, one code path (Mode):
//   - the firewall client: control through SOCKS CONNECT, and its UDP
//     bind(port P) mirrored as a UDP ASSOCIATE with DST.PORT P; at every
//     playlist entry it closes its socket and association and binds P
//     again, in the order and with the gap its Plan says, including the new
//     association racing ahead of the old one's close;
//   - the announced-mode player (a plain SOCKS client such as VLC with
//     --socks): control through SOCKS, UDP bound locally and announced in
//     the funnel, data relayed to it unwrapped;
//   - the MMST player: data on the control connection.
//
// Each follows mmsfilter/PROTOCOL.md §4 (Connect, FunnelInfo, ConnectFunnel,
// OpenFile, ReadBlock with the Header timer and its retries, StreamSwitch,
// StartPlaying, Pong, and at a playlist change EndOfStream hr 1,
// StreamChange, Logging, ReadBlock again) and reports, per entry, the
// packets the entry's header announced, those received, those lost (by
// packet number), and every bind, association, connection, timeout or
// protocol failure.
//
// A player loses nothing by its own doing: before it closes a socket it
// makes sure nothing more is on its way to it (the proxy closed the
// association, which it does only after releasing the lease; or the MMS
// filter holds announced delivery from StreamChange to ReadBlock) and reads
// what the kernel already queued. When the new association races ahead of
// the old one's close, the new socket shares the port with the old one
// (SO_REUSEADDR, Linux) and the old one is connected to its own relay, so
// that each gets exactly its association's datagrams. So any loss a report
// shows happened outside the player: in the proxy, or on the way.
//
// It talks only to the addresses it is given; tests keep them on loopback.
package mmsplayer
