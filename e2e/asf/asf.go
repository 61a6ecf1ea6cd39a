// Package asf reads the parts of an Advanced Systems Format file that an MMS
// server streams and a player needs: the header (the Header Object and the
// first 50 bytes of the Data Object, which MMS sends as the stream header,
// [MS-MMSP] §2.2.2, mmsfilter/PROTOCOL.md §3.3) and the fixed-size data
// packets that follow.
//
// It is test infrastructure for fwproxy's emulated media server and
// players, not a demuxer: it does not look inside data packets, and it
// reads only the header objects it needs (File Properties and Stream
// Properties). It refuses files whose data packets are not all of one size
// (ASF allows nothing else for files a server streams).
package asf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
)

// Object GUIDs as they appear on the wire (the first three fields of a GUID
// are little-endian). From the ASF specification ([ASF] §10.1 and §10.2).
const (
	guidHeader           = "\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9\x00\xaa\x00\x62\xce\x6c" // 75B22630-668E-11CF-A6D9-00AA0062CE6C
	guidData             = "\x36\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9\x00\xaa\x00\x62\xce\x6c" // 75B22636-668E-11CF-A6D9-00AA0062CE6C
	guidFileProperties   = "\xa1\xdc\xab\x8c\x47\xa9\xcf\x11\x8e\xe4\x00\xc0\x0c\x20\x53\x65" // 8CABDCA1-A947-11CF-8EE4-00C00C205365
	guidStreamProperties = "\x91\x07\xdc\xb7\xb7\xa9\xcf\x11\x8e\xe6\x00\xc0\x0c\x20\x53\x65" // B7DC0791-A9B7-11CF-8EE6-00C00C205365
)

// Layout constants ([ASF] §3.1 to §3.3 and §5.1; mmsfilter/PROTOCOL.md §3.3).
const (
	// objectHeaderLen is GUID (16) + size (8), common to every object.
	objectHeaderLen = 24
	// headerObjectLen is the Header Object's own fields: object header,
	// number of header objects (4), two reserved bytes.
	headerObjectLen = objectHeaderLen + 6
	// DataObjectPrefixLen is the Data Object up to its first packet: object
	// header, file ID (16), total data packets (8), reserved (2). MMS sends
	// these 50 bytes as the end of the stream header.
	DataObjectPrefixLen = objectHeaderLen + 26

	// File Properties Object field offsets, from the object's start.
	fpFileSize     = 40
	fpPacketsCount = 56
	fpPlayDuration = 64
	fpPreroll      = 80
	fpFlags        = 88
	fpMinPacket    = 92
	fpMaxPacket    = 96
	fpMaxBitrate   = 100
	fpLen          = 104

	// Stream Properties Object: the flags word (stream number in its low
	// 7 bits) sits after the type GUIDs, time offset and the two data
	// lengths: 24 + 16 + 16 + 8 + 4 + 4.
	spFlags = 72

	// dataTotalPackets is the Data Object's packet count field.
	dataTotalPackets = 40

	// flagBroadcast: the File Properties flag that makes the packet count
	// and durations meaningless.
	flagBroadcast = 0x01

	// maxHeaderObjects bounds the walk over header objects; real files
	// have a dozen.
	maxHeaderObjects = 1024
	// maxStreams is the number of stream numbers ASF allows (1..127).
	maxStreams = 127
)

// Errors callers may test for.
var (
	// ErrFormat: the bytes are not the ASF this package reads.
	ErrFormat = errors.New("asf: unsupported or malformed file")
	// ErrShort: the bytes end before an object they announce.
	ErrShort = errors.New("asf: truncated")
)

// Info is what a player needs from a stream header.
type Info struct {
	// PacketCount is the number of data packets (File Properties); 0 for a
	// broadcast.
	PacketCount uint64
	// PacketSize is the size of every data packet.
	PacketSize uint32
	// MaxBitrate is in bits per second.
	MaxBitrate uint32
	// Duration is the play duration without the preroll.
	Duration time.Duration
	// Broadcast is the File Properties broadcast flag.
	Broadcast bool
	// StreamIDs are the stream numbers, in header order.
	StreamIDs []uint16
	// HeaderLen is the Header Object's length; the stream header is
	// HeaderLen+DataObjectPrefixLen bytes.
	HeaderLen int
}

// File is a parsed ASF file.
type File struct {
	Info Info
	// Header is the stream header: the Header Object and the first 50
	// bytes of the Data Object. It aliases the parsed buffer.
	Header []byte
	// Packets are the data packets, each Info.PacketSize bytes, aliasing
	// the parsed buffer.
	Packets [][]byte
}

// Parse parses a whole ASF file. b is retained: the result aliases it.
func Parse(b []byte) (*File, error) {
	info, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	hlen := info.HeaderLen + DataObjectPrefixLen
	dataSize := binary.LittleEndian.Uint64(b[info.HeaderLen+16:])
	if dataSize < DataObjectPrefixLen || dataSize > uint64(len(b)-info.HeaderLen) {
		return nil, fmt.Errorf("%w: data object of %d bytes in %d", ErrShort, dataSize, len(b)-info.HeaderLen)
	}
	body := b[hlen : info.HeaderLen+int(dataSize)]
	ps := int(info.PacketSize)
	if len(body)%ps != 0 {
		return nil, fmt.Errorf("%w: %d data bytes are not whole %d-byte packets", ErrFormat, len(body), ps)
	}
	n := len(body) / ps
	if !info.Broadcast && uint64(n) != info.PacketCount {
		return nil, fmt.Errorf("%w: %d packets, header says %d", ErrFormat, n, info.PacketCount)
	}
	f := &File{Info: info, Header: b[:hlen], Packets: make([][]byte, n)}
	for i := range f.Packets {
		f.Packets[i] = body[i*ps : (i+1)*ps : (i+1)*ps]
	}
	return f, nil
}

// ParseHeader parses a stream header: the Header Object followed by at
// least the Data Object's first 50 bytes (what MMS sends, or a whole file).
// The result does not alias b.
func ParseHeader(b []byte) (Info, error) {
	if len(b) < headerObjectLen {
		return Info{}, fmt.Errorf("%w: %d bytes", ErrShort, len(b))
	}
	if string(b[:16]) != guidHeader {
		return Info{}, fmt.Errorf("%w: no Header Object", ErrFormat)
	}
	size := binary.LittleEndian.Uint64(b[16:])
	if size < headerObjectLen || size > uint64(len(b)) {
		return Info{}, fmt.Errorf("%w: header object of %d bytes in %d", ErrShort, size, len(b))
	}
	hlen := int(size)
	if len(b) < hlen+DataObjectPrefixLen {
		return Info{}, fmt.Errorf("%w: %d bytes, want the header and the data object's %d", ErrShort, len(b), DataObjectPrefixLen)
	}
	if string(b[hlen:hlen+16]) != guidData {
		return Info{}, fmt.Errorf("%w: no Data Object after the header", ErrFormat)
	}

	info := Info{HeaderLen: hlen}
	var sawFP bool
	off := headerObjectLen
	for i := 0; off < hlen; i++ {
		if i == maxHeaderObjects {
			return Info{}, fmt.Errorf("%w: more than %d header objects", ErrFormat, maxHeaderObjects)
		}
		if hlen-off < objectHeaderLen {
			return Info{}, fmt.Errorf("%w: header object at %d", ErrShort, off)
		}
		osize := binary.LittleEndian.Uint64(b[off+16:])
		if osize < objectHeaderLen || osize > uint64(hlen-off) {
			return Info{}, fmt.Errorf("%w: object of %d bytes at %d", ErrFormat, osize, off)
		}
		obj := b[off : off+int(osize)]
		switch string(obj[:16]) {
		case guidFileProperties:
			if len(obj) < fpLen {
				return Info{}, fmt.Errorf("%w: file properties of %d bytes", ErrFormat, len(obj))
			}
			sawFP = true
			flags := binary.LittleEndian.Uint32(obj[fpFlags:])
			info.Broadcast = flags&flagBroadcast != 0
			info.PacketCount = binary.LittleEndian.Uint64(obj[fpPacketsCount:])
			minP := binary.LittleEndian.Uint32(obj[fpMinPacket:])
			maxP := binary.LittleEndian.Uint32(obj[fpMaxPacket:])
			if minP != maxP || minP == 0 {
				return Info{}, fmt.Errorf("%w: packet sizes %d..%d", ErrFormat, minP, maxP)
			}
			info.PacketSize = minP
			info.MaxBitrate = binary.LittleEndian.Uint32(obj[fpMaxBitrate:])
			// Play duration in 100 ns units; preroll in milliseconds.
			play := time.Duration(binary.LittleEndian.Uint64(obj[fpPlayDuration:])) * 100
			preroll := time.Duration(binary.LittleEndian.Uint64(obj[fpPreroll:])) * time.Millisecond
			info.Duration = max(play-preroll, 0)
		case guidStreamProperties:
			if len(obj) < spFlags+2 {
				return Info{}, fmt.Errorf("%w: stream properties of %d bytes", ErrFormat, len(obj))
			}
			if len(info.StreamIDs) == maxStreams {
				return Info{}, fmt.Errorf("%w: more than %d streams", ErrFormat, maxStreams)
			}
			info.StreamIDs = append(info.StreamIDs, binary.LittleEndian.Uint16(obj[spFlags:])&0x7f)
		}
		off += len(obj)
	}
	if !sawFP {
		return Info{}, fmt.Errorf("%w: no File Properties Object", ErrFormat)
	}
	if len(info.StreamIDs) == 0 {
		return Info{}, fmt.Errorf("%w: no stream", ErrFormat)
	}
	return info, nil
}

// Truncate returns a copy of f that holds only its first n packets (1 ≤ n
// ≤ len(f.Packets)), with the header's packet counts, sizes and durations
// adjusted so that it describes exactly those packets: a playlist entry
// shorter than the asset. The packets are shared with f; the header is a
// new slice.
func (f *File) Truncate(n int) (*File, error) {
	if n < 1 || n > len(f.Packets) {
		return nil, fmt.Errorf("asf: truncate to %d packets of %d", n, len(f.Packets))
	}
	h := append([]byte(nil), f.Header...)
	hlen := f.Info.HeaderLen
	ps := uint64(f.Info.PacketSize)
	for off := headerObjectLen; off+objectHeaderLen <= hlen; {
		osize := int(binary.LittleEndian.Uint64(h[off+16:]))
		if osize < objectHeaderLen {
			break
		}
		if string(h[off:off+16]) == guidFileProperties && osize >= fpLen {
			fp := h[off : off+osize]
			binary.LittleEndian.PutUint64(fp[fpFileSize:], uint64(hlen)+DataObjectPrefixLen+uint64(n)*ps)
			binary.LittleEndian.PutUint64(fp[fpPacketsCount:], uint64(n))
			// Play and send durations (100 ns) include the preroll (ms):
			// scale what follows the preroll.
			preroll := binary.LittleEndian.Uint64(fp[fpPreroll:]) * 10000
			for _, at := range []int{fpPlayDuration, fpPlayDuration + 8} {
				if d := binary.LittleEndian.Uint64(fp[at:]); d > preroll {
					binary.LittleEndian.PutUint64(fp[at:], preroll+(d-preroll)*uint64(n)/uint64(len(f.Packets)))
				}
			}
			break
		}
		off += osize
	}
	binary.LittleEndian.PutUint64(h[hlen+16:], DataObjectPrefixLen+uint64(n)*ps)
	binary.LittleEndian.PutUint64(h[hlen+dataTotalPackets:], uint64(n))
	info, err := ParseHeader(h)
	if err != nil {
		return nil, fmt.Errorf("asf: truncated header: %w", err)
	}
	return &File{Info: info, Header: h, Packets: f.Packets[:n:n]}, nil
}

// ReadFile reads and parses the ASF file at path.
func ReadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("asf: %w", err)
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}
