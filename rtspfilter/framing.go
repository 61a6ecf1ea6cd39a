package rtspfilter

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Limits of one message head (start line, header lines and the blank line
// that ends them). RFC 2326 and RFC 7826 set none; real heads are a few
// hundred bytes (a SETUP with a handful of transports under 1 KiB), so
// these leave room while bounding what a hostile peer can make the proxy
// keep per direction. Bodies and interleaved frames are streamed, never
// held.
const (
	// MaxHeadBytes bounds a head, CRLFs included.
	MaxHeadBytes = 16 << 10
	// MaxHeaders bounds the header lines of a head (continuation lines
	// count as lines).
	MaxHeaders = 64
	// readBufSize is the per-direction read buffer.
	readBufSize = 4 << 10
)

// head is one parsed message head. raw is the head as read; the strings
// are copies and do not alias it. Field offsets index raw.
type head struct {
	raw     []byte
	request bool
	// Request line: method, URI and version; status line: version, code
	// and reason.
	method  string
	uri     string
	version string
	code    int
	fields  []field
	// bodyLen is Content-Length, 0 without one (RFC 7826 §18.17: a
	// message without it has no body).
	bodyLen int64
}

// field is one header: raw[start:end] is its whole line (continuation
// lines included), CRLF included.
type field struct {
	name, value string
	start, end  int
}

// get is the value of the first header called name (case-insensitive).
func (h *head) get(name string) (string, bool) {
	for _, f := range h.fields {
		if equalFold(f.name, name) {
			return f.value, true
		}
	}
	return "", false
}

// errNotStartLine says the first line is not an RTSP start line; the
// caller decides between pass-through and refusal.
var errNotStartLine = errors.New("not an RTSP request or status line")

// readHead reads one head from br into buf (reused; grown up to
// MaxHeadBytes plus one read buffer) and parses it. On error it returns what it read (for a
// pass-through) and a *HeadError wrapping a sentinel.
func readHead(br *bufio.Reader, buf []byte) (head, error) {
	buf = buf[:0]
	lines := 0
	for {
		line, err := br.ReadSlice('\n')
		if len(buf)+len(line) > MaxHeadBytes {
			// Keep the whole read (at most one read buffer more): it
			// is consumed, and a pass-through must forward it.
			buf = append(buf, line...)
			if lines == 0 {
				// No start line is that long: not RTSP.
				return head{raw: buf}, &HeadError{Problem: ProblemBadStartLine, Err: fmt.Errorf("%w: first line above %d bytes", errNotStartLine, MaxHeadBytes)}
			}
			return head{raw: buf}, &HeadError{Problem: ProblemHeaderTooLarge, Err: ErrHeaderTooLarge}
		}
		buf = append(buf, line...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue // a line longer than the read buffer; keep reading it
		}
		if err != nil {
			if len(buf) == 0 {
				return head{}, err
			}
			return head{raw: buf}, &HeadError{Problem: ProblemTruncated, Err: fmt.Errorf("%w: %w", ErrTruncated, err)}
		}
		lines++
		if lines == 1 {
			if _, perr := parseStartLine(trimEOL(buf)); perr != nil {
				// Said at once, so that a stream that is not RTSP is
				// never held back waiting for a blank line.
				return head{raw: buf}, &HeadError{Problem: ProblemBadStartLine, Err: perr}
			}
		}
		if isBlank(line) {
			break
		}
		if lines > MaxHeaders+1 {
			return head{raw: buf}, &HeadError{Problem: ProblemTooManyHeaders, Err: ErrTooManyHeaders}
		}
	}
	h, err := parseHead(buf)
	h.raw = buf
	return h, err
}

// plausibleStart reports whether b, the first bytes of a message, can
// begin a request or status line: a token then a space (a method, or
// "RTSP/x.y"), in printable ASCII up to the line's end. A stream that
// fails it is not RTSP and is passed on at once, never held back waiting
// for a line end that another protocol may never send.
func plausibleStart(b []byte) bool {
	inToken := true
	for _, c := range b {
		switch {
		case c == '\r' || c == '\n':
			return !inToken
		case c == ' ':
			inToken = false
		case c < 0x20 || c >= 0x7f:
			return false
		case inToken && c != '/' && c != '.' && !isToken([]byte{c}):
			return false
		}
	}
	return true
}

func isBlank(line []byte) bool { return len(trimEOL(line)) == 0 }

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// parseHead parses a complete head (ending with its blank line).
//
//	Request-Line = Method SP Request-URI SP RTSP-Version CRLF
//	Status-Line  = RTSP-Version SP Status-Code SP Reason-Phrase CRLF
//	header       = field-name ":" [LWS] field-value CRLF
//	               (a line starting with SP or HT continues the previous)
func parseHead(b []byte) (head, error) {
	var h head
	off := bytes.IndexByte(b, '\n') + 1
	sl, err := parseStartLine(trimEOL(b[:off]))
	if err != nil {
		return h, &HeadError{Problem: ProblemBadStartLine, Err: err}
	}
	h.request, h.method, h.uri, h.version, h.code = sl.request, sl.method, sl.uri, sl.version, sl.code
	seenLength := false
	for off < len(b) {
		n := bytes.IndexByte(b[off:], '\n') + 1
		if n == 0 {
			n = len(b) - off
		}
		line := trimEOL(b[off : off+n])
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(h.fields) == 0 {
				return h, &HeadError{Problem: ProblemBadHeader, Err: fmt.Errorf("%w: continuation line before any header", ErrBadHeader)}
			}
			f := &h.fields[len(h.fields)-1]
			f.value = strings.TrimSpace(f.value + " " + strings.TrimSpace(string(line)))
			f.end = off + n
			off += n
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return h, &HeadError{Problem: ProblemBadHeader, Err: fmt.Errorf("%w: %q", ErrBadHeader, clip(line))}
		}
		h.fields = append(h.fields, field{
			name:  string(line[:colon]),
			value: strings.TrimSpace(string(line[colon+1:])),
			start: off, end: off + n,
		})
		off += n
	}
	for _, f := range h.fields {
		if !equalFold(f.name, "Content-Length") {
			continue
		}
		n, err := parseContentLength(f.value)
		if err != nil || (seenLength && n != h.bodyLen) {
			return h, &HeadError{Problem: ProblemBadHeader, Err: fmt.Errorf("%w: Content-Length %q", ErrBadLength, clip([]byte(f.value)))}
		}
		h.bodyLen, seenLength = n, true
	}
	return h, nil
}

// maxBodyLen bounds Content-Length: bodies are streamed, so this only
// keeps the number sane (an SDP is a few KiB).
const maxBodyLen = 1 << 40

func parseContentLength(s string) (int64, error) {
	if s == "" || len(s) > 13 {
		return 0, ErrBadLength
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, ErrBadLength
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > maxBodyLen {
		return 0, ErrBadLength
	}
	return n, nil
}

type startLine struct {
	request              bool
	method, uri, version string
	code                 int
}

func parseStartLine(line []byte) (startLine, error) {
	var sl startLine
	s := string(line)
	a, rest, ok1 := strings.Cut(s, " ")
	b, c, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		// A status line may lack a reason phrase ("RTSP/1.0 200").
		if ok1 && isVersion(a) && len(rest) == 3 {
			b, c, ok2 = rest, "", true
		} else {
			return sl, fmt.Errorf("%w: %q", errNotStartLine, clip(line))
		}
	}
	if isVersion(a) {
		if len(b) != 3 || !isDigits(b) {
			return sl, fmt.Errorf("%w: status %q", errNotStartLine, clip(line))
		}
		sl.version, sl.code = a, int(b[0]-'0')*100+int(b[1]-'0')*10+int(b[2]-'0')
		return sl, nil
	}
	if !isToken([]byte(a)) || b == "" || strings.ContainsAny(b, " \t") || !isVersion(c) {
		return sl, fmt.Errorf("%w: %q", errNotStartLine, clip(line))
	}
	sl.request, sl.method, sl.uri, sl.version = true, a, b, c
	return sl, nil
}

// isVersion accepts "RTSP/" DIGIT "." DIGIT: 1.0 (RFC 2326) and 2.0 (RFC
// 7826) in practice.
func isVersion(s string) bool {
	return len(s) == 8 && strings.HasPrefix(s, "RTSP/") && isDigits(s[5:6]) && s[6] == '.' && isDigits(s[7:8])
}

func isDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// isToken: RFC 2326 §15.1 token characters (as HTTP's tchar).
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// clip shortens what an error quotes from the wire.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// Interleaved binary data (RFC 2326 §10.12, RFC 7826 §14):
//
//	+------+---------+----------------+-----------------+
//	| '$'  | channel | length (16 BE) | length bytes    |
//	+------+---------+----------------+-----------------+
const interleavedHeaderLen = 4

// copyInterleaved forwards one interleaved frame whose '$' is next in br.
func copyInterleaved(dst io.Writer, br *bufio.Reader, buf []byte) error {
	hdr, err := br.Peek(interleavedHeaderLen)
	if err != nil {
		// The stream ended inside the frame header: forward what
		// there is.
		rest, _ := br.Peek(br.Buffered())
		if _, werr := dst.Write(rest); werr != nil {
			return werr
		}
		br.Discard(len(rest))
		return fmt.Errorf("%w: interleaved frame header: %w", ErrTruncated, err)
	}
	n := int64(hdr[2])<<8 | int64(hdr[3])
	return copyN(dst, br, interleavedHeaderLen+n, buf)
}

// copyN forwards exactly n bytes of br, through buf.
func copyN(dst io.Writer, br *bufio.Reader, n int64, buf []byte) error {
	got, err := io.CopyBuffer(dst, io.LimitReader(br, n), buf)
	if err != nil {
		return err
	}
	if got < n {
		return fmt.Errorf("%w: %d of %d bytes", ErrTruncated, got, n)
	}
	return nil
}
