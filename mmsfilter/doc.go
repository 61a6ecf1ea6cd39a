// Package mmsfilter is the protocol core of fwproxy's MMS application
// filter: the control channel of the Microsoft Media Server protocol
// ([MS-MMSP], TCP port 1755), seen by the proxy as two byte streams.
//
// What it does:
//   - frames each direction into TcpMessageHeader packets (and, from the
//     server, the Data packets interleaved with them), whatever the TCP
//     segmentation;
//   - rewrites the address and port in every client ConnectFunnel that
//     announces UDP (\\<ip>\UDP\<port>) to what a FunnelFunc returns, fixing
//     chunkLen, chunkCount and messageLength and nothing else;
//   - hides the client's own IPv4 address (always) and computer name (an
//     option) in its Logging messages, in place, so no length changes;
//   - follows the session (funnel, open, play, end of a playlist entry,
//     stream change, end, close) and reports messages, transitions and
//     problems to an Observer;
//   - as Filter, is a proxy.Filter: it expects the UDP of each rewritten
//     funnel (internal/expect), holds and resumes it from the session's
//     own state, and keeps itself on the connection a ReportRedirect to
//     another port of the same server sends the client to;
//   - exports the parsers and builders (ParsePacket, AppendCommand,
//     AppendDataPacket, ParseFunnelName, AppendFunnelName)
//     that test peers — an emulated server, emulated players — build on.
//
// What it refuses to do: it never drops, reorders or invents bytes, and it
// changes none but the funnel name's address and port, the three length
// fields and Logging's dwIPAddress and szComputerDNS. Anything it does not understand is forwarded untouched and
// counted: a malformed or refused funnel passes unchanged; a direction that
// turns out not to be MMS (wrong sessionId or seal, impossible length, a
// server that starts with a Data packet) is relayed raw for the rest of the
// connection. It does not rewrite the Host: part of Connect (it names the
// server), does not answer the client itself (a forged
// ReportDisconnectedFunnel would shift every later server seq), does not
// touch UDP, and does not trust the announced IP: the server sends to the
// control connection's peer ([MS-MMSP] §3.2.5.5).
//
// The facts behind every offset are in PROTOCOL.md beside this file, in our
// own words with the sections of the public specification ([MS-MMSP],
// Microsoft Media Server Protocol) they come from. In this package a bare
// §n cites PROTOCOL.md; [MS-MMSP] §x.y cites the specification. Memory is
// bounded per direction by MaxCommandLen.
package mmsfilter
