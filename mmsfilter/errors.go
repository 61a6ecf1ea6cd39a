package mmsfilter

import "errors"

// Sentinel errors. Parsers return them bare or wrapped with detail; test with
// errors.Is.
var (
	// ErrShortBuffer means the bytes end before the structure does; a stream
	// reader should read more and try again.
	ErrShortBuffer = errors.New("mmsfilter: short buffer")

	// ErrSessionID means bytes 4–7 are not 0xB00BFACE: not an MMS command.
	ErrSessionID = errors.New("mmsfilter: bad sessionId")

	// ErrSeal means bytes 12–15 are not "MMS ".
	ErrSeal = errors.New("mmsfilter: bad seal")

	// ErrLength means messageLength gives a packet shorter than one empty
	// message or longer than MaxCommandLen.
	ErrLength = errors.New("mmsfilter: impossible messageLength")

	// ErrChunkLen means a message's chunkLen is zero or runs past the end of
	// its packet.
	ErrChunkLen = errors.New("mmsfilter: bad chunkLen")

	// ErrDataLength means a Data packet's PacketSize is smaller than its own
	// 8-byte header.
	ErrDataLength = errors.New("mmsfilter: bad Data PacketSize")

	// ErrPayloadTooLong means a Data payload does not fit the 16-bit
	// PacketSize.
	ErrPayloadTooLong = errors.New("mmsfilter: Data payload too long")

	// ErrNotFunnel means a packet holds no ConnectFunnel message.
	ErrNotFunnel = errors.New("mmsfilter: no ConnectFunnel message")

	// ErrFunnelSyntax means the funnel name does not have the shape
	// \\<ip>\<UDP|TCP>\<port>.
	ErrFunnelSyntax = errors.New("mmsfilter: malformed funnel name")

	// ErrFunnelTooLong means the funnel name has more than maxFunnelNameUnits
	// characters before its NUL.
	ErrFunnelTooLong = errors.New("mmsfilter: funnel name too long")

	// ErrFunnelAddr means the funnel name's address is not an IP address.
	ErrFunnelAddr = errors.New("mmsfilter: bad funnel address")

	// ErrFunnelPort means the funnel name's port is not 1–5 digits in 1–65535.
	ErrFunnelPort = errors.New("mmsfilter: bad funnel port")

	// ErrReplacement means a FunnelFunc returned an address that cannot be
	// written into a funnel name (invalid IP or port 0).
	ErrReplacement = errors.New("mmsfilter: bad replacement address")

	// ErrNoRewriter is what a Streams built without a FunnelFunc reports for
	// every UDP funnel: it passes unchanged.
	ErrNoRewriter = errors.New("mmsfilter: no funnel rewriter configured")

	// errDataFirst means the server's first packet was not a command.
	errDataFirst = errors.New("mmsfilter: Data packet before any command")

	// ErrRewriteTooLong means the rewritten packet would exceed MaxCommandLen.
	ErrRewriteTooLong = errors.New("mmsfilter: rewritten packet too long")

	// ErrLoggingLayout means a Logging message is too short for the CLIENT_LOG
	// fields the filter rewrites, or its cbSize does not cover them.
	ErrLoggingLayout = errors.New("mmsfilter: Logging message without the CLIENT_LOG layout")
)
