// Package mmsserver is an emulated Windows Media server for fwproxy's
// end-to-end tests and demo: the MMS control protocol on TCP, data over UDP
// (MMSU) or interleaved on the control connection (MMST), server-side
// playlists of any number of entries, keep-alive pings.
//
// It follows the sequences of mmsfilter/PROTOCOL.md §4 and serves what VLC needs
// (§5.1): valid ASF (package asf), openFileId 1, the header as Data packets
// marked with the ReadBlock's incarnation, media marked with the
// StartPlaying's. Between playlist entries it sends EndOfStream hr 1 and
// ReportStreamChange, then waits for ReadBlock (MMSU) or sends the next
// header at once (MMST).
//
// Loss is detectable per entry: each entry's header states its packet
// count, data packets carry their number in the entry as LocationId and
// the StartPlaying's incarnation, so a player can name every packet it
// missed.
//
// It models the network as it is: with Config.TailPackets the last packets
// of an entry are still in flight on the UDP path when the end-of-entry
// messages arrive over TCP (see Config).
//
// What it does not do: authentication, redirects, striding, packet-pair,
// resending on RequestPacketListResend (it only counts those datagrams).
// It listens where it is told and sends only to its clients; tests keep it
// on loopback.
package mmsserver
