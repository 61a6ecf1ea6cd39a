package mmsplayer

import (
	"net/netip"

	"fwproxy/e2e/mmsserver"
	"fwproxy/mmsfilter"
)

// Client-to-server message bodies (from absolute offset 40), with the
// values of mmsfilter/PROTOCOL.md §2.2 that WMP, VLC and libmms send.

// fields is the server's body builder: one implementation of the layout
// for both peers.
type fields = mmsserver.Fields

func msg(mid mmsfilter.MID, f fields) mmsfilter.Message { return mmsfilter.Message{MID: mid, Body: f} }

const (
	noPacketPair   = 0xF0F0F0EF
	macToViewerRev = 0x0004000B
	viewerToMacRev = 0x0003001C
	maxBlockBytes  = 0xFFFFFFFF
	maxBitRate     = 0x00989680
	funnelModeData = 2
	openFileID     = 1
	readBlockLen   = 0x8000
	readDeadline   = 3600.0
	noLocation     = 0xFFFFFFFF
	playPadding    = 0x0001FFFF
	playToEnd      = 0x00FFFFFF
	noStream       = 0xFFFF
	// subscriber names the player the way WMP 9 does; the GUID is the
	// player's instance and fixed here.
	subscriber = "NSPlayer/9.0.0.2980; {3300AD50-2C39-46c0-AE0A-6A2F8B3A5E6D}"
	// clientLogLen is the size of CLIENT_LOG in Logging ([MS-MMSP] §2.2.1.1).
	clientLogLen = 1490
	// fakeTCPFunnelPort is what libmms announces in a TCP funnel; the
	// server ignores it.
	fakeTCPFunnelPort = 1037
)

// connectMsg is LinkViewerToMacConnect; the subscriber string names the
// server, as every player's does (it needs no rewriting through a proxy).
func connectMsg(server netip.AddrPort) mmsfilter.Message {
	return msg(mmsfilter.MIDConnect, fields{}.U32(noPacketPair, macToViewerRev, viewerToMacRev).
		UTF16Z(subscriber+"; Host: "+server.String()))
}

// funnelInfoMsg asks for the server's transport info without packet-pair
// (modern clients SHOULD send it; VLC and libmms do not).
func funnelInfoMsg() mmsfilter.Message {
	return msg(mmsfilter.MIDFunnelInfo, fields{}.U32(noPacketPair))
}

// connectFunnelMsg announces \\ip\UDP\port (or \TCP\) with a NUL.
func connectFunnelMsg(f mmsfilter.Funnel) mmsfilter.Message {
	b := fields{}.U32(0, maxBlockBytes, 0, maxBitRate, funnelModeData)
	b = mmsfilter.AppendFunnelName(b, f)
	return msg(mmsfilter.MIDConnectFunnel, append(b, 0, 0))
}

func openFileMsg(name string, inc uint8) mmsfilter.Message {
	return msg(mmsfilter.MIDOpenFile, fields{}.U32(uint32(inc), 0, 0, 0).UTF16Z(name))
}

func readBlockMsg(inc uint8) mmsfilter.Message {
	return msg(mmsfilter.MIDReadBlock, fields{}.U32(openFileID, 0, 0, readBlockLen, 0xFFFFFFFF, 0).
		F64(0).F64(readDeadline).U32(uint32(inc), 0))
}

func cancelReadBlockMsg(inc uint8) mmsfilter.Message {
	return msg(mmsfilter.MIDCancelReadBlock, fields{}.U32(uint32(inc)))
}

// streamSwitchMsg selects every stream at full rate.
func streamSwitchMsg(ids []uint16) mmsfilter.Message {
	b := fields{}.U32(uint32(len(ids)))
	for _, id := range ids {
		b = b.U16(noStream, id, 0)
	}
	return msg(mmsfilter.MIDStreamSwitch, b)
}

func startPlayingMsg(inc uint8) mmsfilter.Message {
	return msg(mmsfilter.MIDStartPlaying, fields{}.U32(openFileID, playPadding).F64(0).
		U32(0xFFFFFFFF, noLocation, playToEnd, uint32(inc)))
}

func pongMsg() mmsfilter.Message { return msg(mmsfilter.MIDPong, fields{}.U32(0, 0)) }

func closeFileMsg() mmsfilter.Message {
	return msg(mmsfilter.MIDCloseFile, fields{}.U32(1, openFileID))
}

// loggingMsg is Logging with a CLIENT_LOG that says little: its size, the
// source ID, 0xFFFFFFFF for the client IP (as new clients SHOULD, so no
// address needs rewriting), protocol "mms" and the transport.
func loggingMsg(transport string) mmsfilter.Message {
	b := fields{}.U32(clientLogLen).Zeros(1142).U32(openFileID, 0xFFFFFFFF).Zeros(260 + 16 + 8 + 16)
	b = append(b, padASCII("mms", 8)...)
	b = append(b, padASCII(transport, 8)...)
	return msg(mmsfilter.MIDLogging, b.Zeros(5*4))
}

func padASCII(s string, n int) []byte {
	out := make([]byte, n)
	copy(out[:n-1], s)
	return out
}
