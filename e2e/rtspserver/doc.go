// Package rtspserver is the RTSP server of fwproxy's end-to-end tests and
// demo: a real one, gortsplib's (the library behind mediamtx), serving
// RTP over UDP, with a record of what it saw so that a test can judge the
// proxy's Transport rewrite from the server's side.
//
// Two kinds of path:
//   - a publish path (any name but "seq"): a publisher (ffmpeg pushing a
//     tone with ANNOUNCE and RECORD) sends a stream there, and every
//     reader gets it relayed, as mediamtx does;
//   - "seq/<tag>": each PLAY gets a known sequence of its own, Config.Packets
//     G.711 packets numbered from 0, each payload saying which packet it
//     is, so a player names every packet it missed. The tag is free text a
//     test uses to tell its players apart in the record.
//
// Per SETUP it records the connection's remote address (for a proxied
// client: the proxy's external address), the client_port it was asked to
// send to, and the path; per session the RTCP packets that reached it
// from the client.
//
// It is test-only: fwproxy itself does not import it.
package rtspserver
