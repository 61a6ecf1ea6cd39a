package mmsserver

import (
	"encoding/binary"
	"math"

	"fwproxy/mmsfilter"
)

// Server-to-client message bodies (from absolute offset 40), field by field
// as mmsfilter/PROTOCOL.md §2.2 lays them out, with the values a Windows Media
// server sends and VLC accepts (PROTOCOL.md §5.1).

// Fields builds a message body little-endian, field by field.
type Fields []byte

// U32 appends each v as a 32-bit field.
func (f Fields) U32(v ...uint32) Fields {
	for _, x := range v {
		f = binary.LittleEndian.AppendUint32(f, x)
	}
	return f
}

// U16 appends each v as a 16-bit field.
func (f Fields) U16(v ...uint16) Fields {
	for _, x := range v {
		f = binary.LittleEndian.AppendUint16(f, x)
	}
	return f
}

// U64 appends a 64-bit field.
func (f Fields) U64(v uint64) Fields { return binary.LittleEndian.AppendUint64(f, v) }

// F64 appends a double.
func (f Fields) F64(v float64) Fields { return f.U64(math.Float64bits(v)) }

// Zeros appends n zero bytes.
func (f Fields) Zeros(n int) Fields { return append(f, make([]byte, n)...) }

// UTF16Z appends s (ASCII) as UTF-16LE and a NUL unit.
func (f Fields) UTF16Z(s string) Fields {
	for i := 0; i < len(s); i++ {
		f = append(f, s[i], 0)
	}
	return append(f, 0, 0)
}

func message(mid mmsfilter.MID, f Fields) mmsfilter.Message {
	return mmsfilter.Message{MID: mid, Body: f}
}

// Result codes (MS-ERREF HRESULTs) the server sends.
const (
	hrOK           = 0x00000000
	hrEntryEnd     = 0x00000001 // EndOfStream: this entry is over, StreamChange follows
	hrFileNotFound = 0x80070002
	hrInvalidArg   = 0x80070057
)

// Values of ReportConnectedEX and ReportFunnelInfo (mmsfilter/PROTOCOL.md §2.2).
const (
	noPacketPair       = 0xF0F0F0EF
	macToViewerRev     = 0x0004000B
	viewerToMacRev     = 0x0003001C
	serverVersion      = "9.01.01.3841"
	funnelReply        = "Funnel Of The Gods"
	openFileID         = 1 // VLC takes this field for a status and wants 1 or 2
	maxBitRate         = 0x00989680
	blockMaxBytes      = 0x8000
	headerIncarnation  = 0xFF // MMST: the new entry's header follows StreamChange at once
	attrCanStride      = 0x00800000
	attrCanSeek        = 0x01000000
	attrBroadcast      = 0x02000000
	attrPlaylist       = 0x40000000
	fragmentBytes      = 0x10000
	transportMaskUDPIP = 8
)

// ReportConnectedEX (0x00040001): 96 bytes and more, which VLC requires,
// with the server version string and the other three strings empty.
func connectedEX() mmsfilter.Message {
	return message(mmsfilter.MIDReportConnectedEX, Fields{}.
		U32(hrOK, noPacketPair, macToViewerRev, viewerToMacRev).F64(1).
		U32(1, 1, blockMaxBytes, maxBitRate).
		U32(uint32(len(serverVersion)+1), 0, 0, 0).UTF16Z(serverVersion))
}

// ReportFunnelInfo (0x00040015) with the session's client ID in nCubs.
func funnelInfo(clientID uint32) mmsfilter.Message {
	return message(mmsfilter.MIDReportFunnelInfo, Fields{}.
		U32(hrOK, noPacketPair, transportMaskUDPIP, 1, fragmentBytes, clientID, 0, 1, 0, 0))
}

// ReportConnectedFunnel (0x00040002).
func connectedFunnel() mmsfilter.Message {
	return message(mmsfilter.MIDReportConnectedFunnel, Fields{}.U32(hrOK, 0, 0).UTF16Z(funnelReply))
}

// ReportDisconnectedFunnel (0x00040003).
func disconnectedFunnel(hr uint32) mmsfilter.Message {
	return message(mmsfilter.MIDReportDisconnectedFunnel, Fields{}.U32(hr, 0))
}

// openFileReport is what ReportOpenFile describes.
type openFileReport struct {
	hr, playIncarnation uint32
	attributes          uint32
	duration            float64 // seconds
	packetSize          uint32
	packetCount         uint64
	bitRate             uint32
	headerSize          uint32
}

// ReportOpenFile (0x00040006): a 108-byte body (116-byte message).
func reportOpenFile(r openFileReport) mmsfilter.Message {
	id := uint32(openFileID)
	if r.hr != hrOK {
		id = 0
	}
	return message(mmsfilter.MIDReportOpenFile, Fields{}.
		U32(r.hr, r.playIncarnation, id, 0, 0, r.attributes).
		F64(r.duration).U32(uint32(math.Ceil(r.duration))).Zeros(16).
		U32(r.packetSize).U64(r.packetCount).U32(r.bitRate, r.headerSize).Zeros(36))
}

// ReportReadBlock (0x00040011).
func reportReadBlock(inc uint32) mmsfilter.Message {
	return message(mmsfilter.MIDReportReadBlock, Fields{}.U32(hrOK, inc, 0))
}

// ReportStreamSwitch (0x00040021).
func reportStreamSwitch() mmsfilter.Message {
	return message(mmsfilter.MIDReportStreamSwitch, Fields{}.U32(hrOK))
}

// ReportStartedPlaying (0x00040005).
func startedPlaying(inc uint32) mmsfilter.Message {
	return message(mmsfilter.MIDReportStartedPlaying, Fields{}.U32(hrOK, inc, openFileID, 0).Zeros(12))
}

// ReportEndOfStream (0x0004001E): hr 1 ends an entry, hr 0 the playlist.
func endOfStream(hr, inc uint32) mmsfilter.Message {
	return message(mmsfilter.MIDReportEndOfStream, Fields{}.U32(hr, inc))
}

// ReportStreamChange (0x00040020) describing the next entry.
func streamChange(packetSize, headerSize, bitRate uint32) mmsfilter.Message {
	return message(mmsfilter.MIDReportStreamChange, Fields{}.U32(hrOK, headerIncarnation, packetSize, headerSize, bitRate, 0))
}

// Ping (0x0004001B); the client answers with Pong.
func ping() mmsfilter.Message {
	return message(mmsfilter.MIDPing, Fields{}.U32(0, 0))
}
