package mmsfilter

import (
	"encoding/binary"
	"fmt"
)

// Wire constants of the MMST control channel. All integers are little-endian
// (PROTOCOL.md §1, [MS-MMSP] §2.2).
const (
	// SessionID is the TcpMessageHeader sessionId; on the wire CE FA 0B B0.
	// Bytes 4–7 equal to it are what tells a command from a Data packet
	// (PROTOCOL.md §1.3).
	SessionID uint32 = 0xB00BFACE
	// Seal is the TcpMessageHeader seal, ASCII "MMS " on the wire.
	Seal uint32 = 0x20534D4D
	// Rep is the value of the first header byte (spec: MUST be 0x01).
	Rep = 0x01

	// HeaderLen is the size of the TcpMessageHeader (§1.1).
	HeaderLen = 32
	// DataHeaderLen is the size of a Data packet header (§3.1).
	DataHeaderLen = 8

	// MaxCommandLen bounds a TcpMessageHeader packet (header included). The
	// spec sets no limit ([MS-MMSP] §5.1 only asks implementers to validate
	// lengths). The largest messages in practice are Logging (40+1490
	// bytes), the 1056-byte packet-pair ReportFunnelInfo and NTLM tokens of a
	// few KiB; 64 KiB is far above all of them and equals the ceiling the
	// protocol puts on a Data packet (16-bit PacketSize). A longer command is
	// taken as "not MMS". The stream processors buffer at most one command,
	// so this is also their per-direction memory bound.
	MaxCommandLen = 64 << 10

	// MaxDataPayload is the largest Data payload: PacketSize is a u16 that
	// counts the 8-byte header too (§3.1).
	MaxDataPayload = 0xFFFF - DataHeaderLen
)

// Header field offsets, absolute (§1.1).
const (
	offSessionID     = 4
	offMessageLength = 8
	offSeal          = 12
	offChunkCount    = 16
	offSeq           = 20
	offMBZ           = 22
	offTimeSent      = 24

	// lengthBias: messageLength counts the bytes from offset 16 on, so a
	// packet is messageLength+16 bytes long (§1.2).
	lengthBias = 16
	// framePeekLen is how many bytes framing needs: up to the seal (§1.2).
	framePeekLen = 16
)

// Message field offsets, relative to the start of the message (absolute
// offset 32 for the first message of a packet).
const (
	offChunkLen      = 0
	offMID           = 4
	messagePrefixLen = 8 // chunkLen + MID
	chunkSize        = 8 // chunkLen, chunkCount and padding count 8-byte chunks

	// minCommandLen is a header holding one message with no fields.
	minCommandLen = HeaderLen + messagePrefixLen
)

// Header is a TcpMessageHeader. sessionId and seal are not fields: parsing
// checks them and appending writes the constants.
type Header struct {
	Rep          uint8
	Version      uint8
	VersionMinor uint8
	Padding      uint8
	// MessageLength is the byte count from offset 16 to the end of the
	// packet: total length − 16.
	MessageLength uint32
	// ChunkCount is MessageLength/8 in every implementation (§1.2).
	ChunkCount uint32
	Seq        uint16
	MBZ        uint16
	// TimeSent is milliseconds since the first packet; receivers ignore it
	// and WMS 2003 fills it with garbage.
	TimeSent uint64
}

// Len is the total packet length the header announces.
func (h Header) Len() int { return int(h.MessageLength) + lengthBias }

// matchLE reports whether the bytes of b that overlap [off, off+4) agree with
// the little-endian encoding of v. Missing bytes agree, so a prefix of a
// valid header is never rejected, while a foreign protocol is rejected as
// soon as its first disagreeing byte arrives.
func matchLE(b []byte, off int, v uint32) bool {
	for i := 0; i < 4 && off+i < len(b); i++ {
		if b[off+i] != byte(v>>(8*i)) {
			return false
		}
	}
	return true
}

// commandLen frames a command from the start of b and returns its total
// length. It fails early on a wrong sessionId or seal, returns ErrShortBuffer
// while those agree but fewer than 16 bytes are present, and rejects a
// length outside [minCommandLen, MaxCommandLen].
//
//	 0      4          8               12     16
//	+------+----------+---------------+------+
//	| rep… | CEFA0BB0 | messageLength | MMS  |
//	+------+----------+---------------+------+
func commandLen(b []byte) (int, error) {
	if !matchLE(b, offSessionID, SessionID) {
		return 0, ErrSessionID
	}
	if !matchLE(b, offSeal, Seal) {
		return 0, ErrSeal
	}
	if len(b) < framePeekLen {
		return 0, ErrShortBuffer
	}
	ml := binary.LittleEndian.Uint32(b[offMessageLength:])
	if ml < minCommandLen-lengthBias || ml > MaxCommandLen-lengthBias {
		return 0, ErrLength
	}
	return int(ml) + lengthBias, nil
}

// isCommand reports whether an 8-byte prefix starts a command rather than a
// Data packet (§1.3). b must hold at least 8 bytes.
func isCommand(b []byte) bool { return binary.LittleEndian.Uint32(b[offSessionID:]) == SessionID }

// ParseHeader parses the TcpMessageHeader at the start of b. It checks
// sessionId, seal and that messageLength gives a packet of 40 to
// MaxCommandLen bytes; it does not need the rest of the packet.
//
//	 0     1       2            3        4          8               12
//	+-----+-------+------------+--------+----------+---------------+
//	| rep | vers. | versMinor  | pad    | CEFA0BB0 | messageLength |
//	+-----+-------+------------+--------+----------+---------------+
//	12     16           20    22    24          32
//	+------+------------+-----+-----+-----------+
//	| MMS  | chunkCount | seq | MBZ | timeSent  |
//	+------+------------+-----+-----+-----------+
func ParseHeader(b []byte) (Header, int, error) {
	if _, err := commandLen(b); err != nil {
		return Header{}, 0, err
	}
	if len(b) < HeaderLen {
		return Header{}, 0, ErrShortBuffer
	}
	return Header{
		Rep:           b[0],
		Version:       b[1],
		VersionMinor:  b[2],
		Padding:       b[3],
		MessageLength: binary.LittleEndian.Uint32(b[offMessageLength:]),
		ChunkCount:    binary.LittleEndian.Uint32(b[offChunkCount:]),
		Seq:           binary.LittleEndian.Uint16(b[offSeq:]),
		MBZ:           binary.LittleEndian.Uint16(b[offMBZ:]),
		TimeSent:      binary.LittleEndian.Uint64(b[offTimeSent:]),
	}, HeaderLen, nil
}

// AppendHeader appends h to dst exactly as given (length fields included),
// with the constant sessionId and seal. AppendCommand computes the lengths;
// this one is for round trips and for building deliberately odd packets.
func AppendHeader(dst []byte, h Header) []byte {
	dst = append(dst, h.Rep, h.Version, h.VersionMinor, h.Padding)
	dst = binary.LittleEndian.AppendUint32(dst, SessionID)
	dst = binary.LittleEndian.AppendUint32(dst, h.MessageLength)
	dst = binary.LittleEndian.AppendUint32(dst, Seal)
	dst = binary.LittleEndian.AppendUint32(dst, h.ChunkCount)
	dst = binary.LittleEndian.AppendUint16(dst, h.Seq)
	dst = binary.LittleEndian.AppendUint16(dst, h.MBZ)
	return binary.LittleEndian.AppendUint64(dst, h.TimeSent)
}

// Packet is one framed TcpMessageHeader packet.
type Packet struct {
	Header Header
	// Messages is everything after the header up to the packet's end. It
	// aliases the parsed buffer; walk it with ParseMessage.
	Messages []byte
}

// ParsePacket parses a whole command packet at the start of b; n is its
// length (messageLength+16). ErrShortBuffer means b holds only part of it.
// The messages inside are not checked: walk them with ParseMessage.
func ParsePacket(b []byte) (Packet, int, error) {
	h, _, err := ParseHeader(b)
	if err != nil {
		return Packet{}, 0, err
	}
	n := h.Len()
	if len(b) < n {
		return Packet{}, 0, ErrShortBuffer
	}
	return Packet{Header: h, Messages: b[HeaderLen:n]}, n, nil
}

// Message is one MMS message inside a packet.
type Message struct {
	// ChunkLen is the message length in 8-byte chunks, padding included.
	// AppendMessage ignores it and computes it from Body.
	ChunkLen uint32
	MID      MID
	// Body is the fields after the MID (absolute offset 40 for the first
	// message). A parsed Body includes the padding and aliases the parsed
	// buffer; a Body given to AppendMessage is padded by it.
	Body []byte
}

// ParseMessage parses the message at the start of b, which must be cut to
// the message area of its packet (Packet.Messages or what follows the
// previous message). A chunkLen of 0 or one that runs past b is ErrChunkLen.
//
//	 0          4     8
//	+----------+-----+------------------------+
//	| chunkLen | MID | fields… zero padding   |   chunkLen*8 bytes
//	+----------+-----+------------------------+
func ParseMessage(b []byte) (Message, int, error) {
	if len(b) < messagePrefixLen {
		return Message{}, 0, ErrShortBuffer
	}
	cl := binary.LittleEndian.Uint32(b[offChunkLen:])
	if cl == 0 || uint64(cl)*chunkSize > uint64(len(b)) {
		return Message{}, 0, fmt.Errorf("%w: %d chunks in %d bytes", ErrChunkLen, cl, len(b))
	}
	n := int(cl) * chunkSize
	return Message{ChunkLen: cl, MID: MID(binary.LittleEndian.Uint32(b[offMID:])), Body: b[messagePrefixLen:n]}, n, nil
}

// BodyU32 reads the u32 at offset i of the body (absolute offset 40+i for
// the first message); ok is false when the body is too short.
func (m Message) BodyU32(i int) (v uint32, ok bool) {
	if i < 0 || len(m.Body)-i < 4 {
		return 0, false
	}
	return binary.LittleEndian.Uint32(m.Body[i:]), true
}

// HR is the result code at body offset 0 of the server's Report* messages.
func (m Message) HR() (uint32, bool) { return m.BodyU32(0) }

// paddedLen rounds n up to a whole number of chunks.
func paddedLen(n int) int { return (n + chunkSize - 1) / chunkSize * chunkSize }

// AppendMessage appends m with its chunkLen computed and its body padded with
// zeros to a multiple of 8, as VLC, libmms and the spec do (§1.2).
func AppendMessage(dst []byte, m Message) []byte {
	n := paddedLen(messagePrefixLen + len(m.Body))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(n/chunkSize))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(m.MID))
	dst = append(dst, m.Body...)
	for range n - messagePrefixLen - len(m.Body) {
		dst = append(dst, 0)
	}
	return dst
}

// AppendCommand appends one TcpMessageHeader packet carrying msgs (a client
// MUST send exactly one; a server may pack several). rep is 1, timeSent 0,
// and messageLength, chunkCount and every chunkLen are computed as the real
// implementations do: messageLength = total−16, chunkCount =
// messageLength/8 (§1.2). The seq counter is the caller's: it starts at 0
// and goes up by one per packet in each direction.
func AppendCommand(dst []byte, seq uint16, msgs ...Message) []byte {
	total := HeaderLen
	for _, m := range msgs {
		total += paddedLen(messagePrefixLen + len(m.Body))
	}
	ml := uint32(total - lengthBias)
	dst = AppendHeader(dst, Header{Rep: Rep, MessageLength: ml, ChunkCount: ml / chunkSize, Seq: seq})
	for _, m := range msgs {
		dst = AppendMessage(dst, m)
	}
	return dst
}

// DataHeader is the 8-byte header of a Data packet (§3.1), the same on UDP
// and, interleaved with commands, on the server's TCP stream.
type DataHeader struct {
	// LocationID is the ASF packet number, or the header piece number.
	LocationID uint32
	// PlayIncarnation is the low byte of the incarnation of the request
	// that triggered the packet (0xFF: packet-pair or TCP playlist header).
	PlayIncarnation uint8
	// AFFlags is a sequence number for data, 0x04/0x0C for header pieces.
	AFFlags uint8
	// PacketSize is the total length, these 8 bytes included.
	PacketSize uint16
}

// ParseDataHeader parses a Data packet header at the start of b. It does not
// need the payload; n is 8. A PacketSize below 8 is ErrDataLength.
//
//	 0            4      5         6            8
//	+------------+------+---------+------------+---------+
//	| LocationId | inc. | AFFlags | PacketSize | payload |
//	+------------+------+---------+------------+---------+
func ParseDataHeader(b []byte) (DataHeader, int, error) {
	if len(b) < DataHeaderLen {
		return DataHeader{}, 0, ErrShortBuffer
	}
	h := DataHeader{
		LocationID:      binary.LittleEndian.Uint32(b[0:]),
		PlayIncarnation: b[4],
		AFFlags:         b[5],
		PacketSize:      binary.LittleEndian.Uint16(b[6:]),
	}
	if h.PacketSize < DataHeaderLen {
		return DataHeader{}, 0, ErrDataLength
	}
	return h, DataHeaderLen, nil
}

// AppendDataPacket appends a Data packet with h's fields and payload;
// PacketSize is computed (h.PacketSize is ignored). A payload longer than
// MaxDataPayload is ErrPayloadTooLong and dst is returned unchanged.
func AppendDataPacket(dst []byte, h DataHeader, payload []byte) ([]byte, error) {
	if len(payload) > MaxDataPayload {
		return dst, fmt.Errorf("%w: %d bytes", ErrPayloadTooLong, len(payload))
	}
	dst = binary.LittleEndian.AppendUint32(dst, h.LocationID)
	dst = append(dst, h.PlayIncarnation, h.AFFlags)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(DataHeaderLen+len(payload)))
	return append(dst, payload...), nil
}
