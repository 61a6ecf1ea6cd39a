package rtspfilter

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadHead(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		check   func(t *testing.T, h head)
		problem Problem
		err     error
	}{
		{"RTSP/1.0 request", "SETUP rtsp://192.0.2.1/s/trackID=0 RTSP/1.0\r\nCSeq: 3\r\ntransport:  RTP/AVP;client_port=4000-4001 \r\n\r\n", func(t *testing.T, h head) {
			assert.True(t, h.request)
			assert.Equal(t, "SETUP", h.method)
			assert.Equal(t, "rtsp://192.0.2.1/s/trackID=0", h.uri)
			assert.Equal(t, "RTSP/1.0", h.version)
			v, ok := h.get("Transport")
			assert.True(t, ok, "names are case-insensitive")
			assert.Equal(t, "RTP/AVP;client_port=4000-4001", v)
			assert.Equal(t, int64(0), h.bodyLen)
		}, 0, nil},
		{"RTSP/2.0 request", "PLAY rtsp://192.0.2.1/s RTSP/2.0\r\nCSeq: 4\r\nSession: 12ab\r\n\r\n", func(t *testing.T, h head) {
			assert.Equal(t, "RTSP/2.0", h.version)
			v, _ := h.get("session")
			assert.Equal(t, "12ab", v)
		}, 0, nil},
		{"status line with a body", "RTSP/1.0 200 OK\r\nContent-Length: 12\r\nContent-Type: application/sdp\r\n\r\n", func(t *testing.T, h head) {
			assert.False(t, h.request)
			assert.Equal(t, 200, h.code)
			assert.Equal(t, int64(12), h.bodyLen)
		}, 0, nil},
		{"status line without a reason, bare LF", "RTSP/2.0 461\nCSeq: 1\n\n", func(t *testing.T, h head) {
			assert.Equal(t, 461, h.code)
		}, 0, nil},
		{"continuation line", "RTSP/1.0 200 OK\r\nTransport: RTP/AVP;unicast;\r\n client_port=4000-4001\r\nCSeq: 9\r\n\r\n", func(t *testing.T, h head) {
			v, _ := h.get("Transport")
			assert.Equal(t, "RTP/AVP;unicast; client_port=4000-4001", v)
			require.Len(t, h.fields, 2)
			assert.Equal(t, "Transport: RTP/AVP;unicast;\r\n client_port=4000-4001\r\n", string(h.raw[h.fields[0].start:h.fields[0].end]), "the field spans both lines")
		}, 0, nil},
		{"two equal lengths", "RTSP/1.0 200 OK\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n", func(t *testing.T, h head) {
			assert.Equal(t, int64(3), h.bodyLen)
		}, 0, nil},

		{"HTTP is not RTSP", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", nil, ProblemBadStartLine, errNotStartLine},
		{"binary is not RTSP", "\x00\x01\x02\x03\n", nil, ProblemBadStartLine, errNotStartLine},
		{"bad status code", "RTSP/1.0 2x0 OK\r\n\r\n", nil, ProblemBadStartLine, errNotStartLine},
		{"header without colon", "OPTIONS * RTSP/1.0\r\nCSeq 1\r\n\r\n", nil, ProblemBadHeader, ErrBadHeader},
		{"continuation first", "OPTIONS * RTSP/1.0\r\n folded\r\n\r\n", nil, ProblemBadHeader, ErrBadHeader},
		{"negative length", "RTSP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n", nil, ProblemBadHeader, ErrBadLength},
		{"length not a number", "RTSP/1.0 200 OK\r\nContent-Length: 12abc\r\n\r\n", nil, ProblemBadHeader, ErrBadLength},
		{"huge length", "RTSP/1.0 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", nil, ProblemBadHeader, ErrBadLength},
		{"two lengths that differ", "RTSP/1.0 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", nil, ProblemBadHeader, ErrBadLength},
		{"too many headers", "OPTIONS * RTSP/1.0\r\n" + strings.Repeat("X-A: b\r\n", MaxHeaders+1) + "\r\n", nil, ProblemTooManyHeaders, ErrTooManyHeaders},
		{"head too large", "OPTIONS * RTSP/1.0\r\nX-A: " + strings.Repeat("a", MaxHeadBytes) + "\r\n\r\n", nil, ProblemHeaderTooLarge, ErrHeaderTooLarge},
		{"one endless line", "OPTIONS * RTSP/1.0\r\nX-A: " + strings.Repeat("a", 3*MaxHeadBytes), nil, ProblemHeaderTooLarge, ErrHeaderTooLarge},
		{"truncated", "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n", nil, ProblemTruncated, ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := readHead(bufio.NewReaderSize(strings.NewReader(tt.in), readBufSize), nil)
			if tt.err != nil {
				require.Error(t, err)
				assert.ErrorIs(t, err, tt.err)
				var he *HeadError
				require.True(t, errors.As(err, &he))
				assert.Equal(t, tt.problem, he.Problem)
				assert.LessOrEqual(t, len(h.raw), MaxHeadBytes+readBufSize, "never more than the bound is kept")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.in, string(h.raw), "raw is the head as read")
			tt.check(t, h)
		})
	}
}

func TestReadHeadEOF(t *testing.T) {
	_, err := readHead(bufio.NewReader(strings.NewReader("")), nil)
	assert.ErrorIs(t, err, io.EOF, "a clean end between messages")
}

func TestStatusClass(t *testing.T) {
	for code, want := range map[int]StatusClass{100: Status1xx, 200: Status2xx, 302: Status3xx, 461: Status4xx, 551: Status5xx, 99: StatusOther, 600: StatusOther} {
		assert.Equal(t, want, statusClassOf(code), "%d", code)
	}
	assert.Equal(t, MethodSetup, methodOf("SETUP"))
	assert.Equal(t, MethodOther, methodOf("setup"), "methods are case-sensitive")
	assert.Equal(t, MethodPlayNotify, methodOf("PLAY_NOTIFY"))
}
