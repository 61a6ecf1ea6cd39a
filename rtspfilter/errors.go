package rtspfilter

import "errors"

// Sentinel errors, returned bare or wrapped with detail; test with
// errors.Is.
var (
	// ErrHeaderTooLarge: a head above MaxHeadBytes.
	ErrHeaderTooLarge = errors.New("rtspfilter: message head too large")
	// ErrTooManyHeaders: more than MaxHeaders header lines.
	ErrTooManyHeaders = errors.New("rtspfilter: too many header lines")
	// ErrBadHeader: a header line that is not "name: value".
	ErrBadHeader = errors.New("rtspfilter: malformed header line")
	// ErrBadLength: a Content-Length that is not one decimal number up to
	// 2^40, or two that differ.
	ErrBadLength = errors.New("rtspfilter: bad Content-Length")
	// ErrTruncated: the stream ended inside a message.
	ErrTruncated = errors.New("rtspfilter: stream ended inside a message")
	// ErrTransportSyntax: a Transport header that does not parse.
	ErrTransportSyntax = errors.New("rtspfilter: malformed Transport header")
	// ErrTooManyTransports: more than MaxTransportSpecs specs.
	ErrTooManyTransports = errors.New("rtspfilter: too many transport specs")
	// ErrClientPort: a client_port that is not "A" or "A-B" with ports
	// 1-65535, A < B.
	ErrClientPort = errors.New("rtspfilter: bad client_port")
	// ErrAddrList: an RTSP 2.0 dest_addr or src_addr that is not a list
	// of quoted host:port addresses, or one the filter cannot carry.
	ErrAddrList = errors.New("rtspfilter: bad address list")
	// ErrUnfilteredSetup: a SETUP request inside a client stream relayed
	// untouched because it did not start as RTSP.
	ErrUnfilteredSetup = errors.New("rtspfilter: SETUP in a client stream that did not start as RTSP")
	// ErrClosed: the control connection is closing.
	ErrClosed = errors.New("rtspfilter: connection closed")
)

// HeadError is a head that could not be read or parsed; Problem is its
// counter.
type HeadError struct {
	Problem Problem
	Err     error
}

func (e *HeadError) Error() string { return "rtspfilter: read message head: " + e.Err.Error() }

// Unwrap returns the sentinel.
func (e *HeadError) Unwrap() error { return e.Err }
