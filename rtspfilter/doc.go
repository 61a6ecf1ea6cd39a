// Package rtspfilter is the RTSP application filter (RFC 2326, RTSP 1.0;
// RFC 7826, RTSP 2.0): it frames both directions of an RTSP control
// connection, rewrites each SETUP's unicast UDP transports to ports the
// proxy leases for the client, gives the client its own ports back in the
// reply, and permits the server to send RTP and RTCP (RFC 3550) to those
// leases. Everything else (other requests, bodies, interleaved binary
// frames) passes byte for byte, and a stream that is not RTSP passes
// untouched and counted.
//
// It refuses to: forward a SETUP that would make a server send UDP to a
// port the proxy did not lease (it answers 461 itself), follow a
// destination parameter anywhere but the proxy, hold more than bounded
// memory per direction, or parse RTSP tunnelled over HTTP, RDT or key
// exchange (see README.md, "Not handled").
package rtspfilter
