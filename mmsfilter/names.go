package mmsfilter

// MID is the message ID of an MMS message (u32 at offset 4 of the message,
// absolute offset 36 for the first message of a packet). The high 16 bits
// give the direction: 0x0003 client to server, 0x0004 server to client
// (PROTOCOL.md §1.1, §2.1).
type MID uint32

// The complete MID table of [MS-MMSP] §2.2.4 (PROTOCOL.md §2.1).
const (
	MIDConnect           MID = 0x00030001
	MIDConnectFunnel     MID = 0x00030002
	MIDOpenFile          MID = 0x00030005
	MIDStartPlaying      MID = 0x00030007
	MIDStopPlaying       MID = 0x00030009
	MIDCloseFile         MID = 0x0003000D
	MIDReadBlock         MID = 0x00030015
	MIDFunnelInfo        MID = 0x00030018
	MIDSecurityResponse  MID = 0x0003001A
	MIDPong              MID = 0x0003001B
	MIDCancelReadBlock   MID = 0x00030025
	MIDStartStriding     MID = 0x00030028
	MIDLogging           MID = 0x00030032
	MIDStreamSwitch      MID = 0x00030033
	MIDReportConnectedEX MID = 0x00040001

	MIDReportConnectedFunnel    MID = 0x00040002
	MIDReportDisconnectedFunnel MID = 0x00040003
	MIDReportStartedPlaying     MID = 0x00040005
	MIDReportOpenFile           MID = 0x00040006
	MIDReportStartStriding      MID = 0x0004000A
	MIDReportReadBlock          MID = 0x00040011
	MIDReportFunnelInfo         MID = 0x00040015
	MIDSecurityChallenge        MID = 0x0004001A
	MIDPing                     MID = 0x0004001B
	MIDReportEndOfStream        MID = 0x0004001E
	MIDReportStreamChange       MID = 0x00040020
	MIDReportStreamSwitch       MID = 0x00040021
	MIDReportRedirect           MID = 0x00040022
)

// MessageKind is a dense index over the known MIDs, so that a metrics
// implementation can hold one pre-resolved counter per kind in an array of
// NumMessageKinds and never look a label up on the per-message path.
type MessageKind uint8

// Message kinds; KindUnknown covers every MID not in the table.
const (
	KindUnknown MessageKind = iota
	KindConnect
	KindConnectFunnel
	KindOpenFile
	KindStartPlaying
	KindStopPlaying
	KindCloseFile
	KindReadBlock
	KindFunnelInfo
	KindSecurityResponse
	KindPong
	KindCancelReadBlock
	KindStartStriding
	KindLogging
	KindStreamSwitch
	KindReportConnectedEX
	KindReportConnectedFunnel
	KindReportDisconnectedFunnel
	KindReportStartedPlaying
	KindReportOpenFile
	KindReportStartStriding
	KindReportReadBlock
	KindReportFunnelInfo
	KindSecurityChallenge
	KindPing
	KindReportEndOfStream
	KindReportStreamChange
	KindReportStreamSwitch
	KindReportRedirect

	// NumMessageKinds is the number of kinds, for sizing arrays.
	NumMessageKinds
)

// Kind maps a MID to its dense index; unknown MIDs give KindUnknown.
func (m MID) Kind() MessageKind {
	switch m {
	case MIDConnect:
		return KindConnect
	case MIDConnectFunnel:
		return KindConnectFunnel
	case MIDOpenFile:
		return KindOpenFile
	case MIDStartPlaying:
		return KindStartPlaying
	case MIDStopPlaying:
		return KindStopPlaying
	case MIDCloseFile:
		return KindCloseFile
	case MIDReadBlock:
		return KindReadBlock
	case MIDFunnelInfo:
		return KindFunnelInfo
	case MIDSecurityResponse:
		return KindSecurityResponse
	case MIDPong:
		return KindPong
	case MIDCancelReadBlock:
		return KindCancelReadBlock
	case MIDStartStriding:
		return KindStartStriding
	case MIDLogging:
		return KindLogging
	case MIDStreamSwitch:
		return KindStreamSwitch
	case MIDReportConnectedEX:
		return KindReportConnectedEX
	case MIDReportConnectedFunnel:
		return KindReportConnectedFunnel
	case MIDReportDisconnectedFunnel:
		return KindReportDisconnectedFunnel
	case MIDReportStartedPlaying:
		return KindReportStartedPlaying
	case MIDReportOpenFile:
		return KindReportOpenFile
	case MIDReportStartStriding:
		return KindReportStartStriding
	case MIDReportReadBlock:
		return KindReportReadBlock
	case MIDReportFunnelInfo:
		return KindReportFunnelInfo
	case MIDSecurityChallenge:
		return KindSecurityChallenge
	case MIDPing:
		return KindPing
	case MIDReportEndOfStream:
		return KindReportEndOfStream
	case MIDReportStreamChange:
		return KindReportStreamChange
	case MIDReportStreamSwitch:
		return KindReportStreamSwitch
	case MIDReportRedirect:
		return KindReportRedirect
	}
	return KindUnknown
}

// String returns the stable, Prometheus-label-safe name of the MID
// ("connect_funnel", "report_end_of_stream", …), or "unknown".
func (m MID) String() string { return m.Kind().String() }

// String returns the label-safe name of the kind. The names follow the spec's
// message names without the LinkViewerToMac/LinkMacToViewer prefix; the
// direction is a separate label.
func (k MessageKind) String() string {
	switch k {
	case KindConnect:
		return "connect"
	case KindConnectFunnel:
		return "connect_funnel"
	case KindOpenFile:
		return "open_file"
	case KindStartPlaying:
		return "start_playing"
	case KindStopPlaying:
		return "stop_playing"
	case KindCloseFile:
		return "close_file"
	case KindReadBlock:
		return "read_block"
	case KindFunnelInfo:
		return "funnel_info"
	case KindSecurityResponse:
		return "security_response"
	case KindPong:
		return "pong"
	case KindCancelReadBlock:
		return "cancel_read_block"
	case KindStartStriding:
		return "start_striding"
	case KindLogging:
		return "logging"
	case KindStreamSwitch:
		return "stream_switch"
	case KindReportConnectedEX:
		return "report_connected_ex"
	case KindReportConnectedFunnel:
		return "report_connected_funnel"
	case KindReportDisconnectedFunnel:
		return "report_disconnected_funnel"
	case KindReportStartedPlaying:
		return "report_started_playing"
	case KindReportOpenFile:
		return "report_open_file"
	case KindReportStartStriding:
		return "report_start_striding"
	case KindReportReadBlock:
		return "report_read_block"
	case KindReportFunnelInfo:
		return "report_funnel_info"
	case KindSecurityChallenge:
		return "security_challenge"
	case KindPing:
		return "ping"
	case KindReportEndOfStream:
		return "report_end_of_stream"
	case KindReportStreamChange:
		return "report_stream_change"
	case KindReportStreamSwitch:
		return "report_stream_switch"
	case KindReportRedirect:
		return "report_redirect"
	}
	return "unknown"
}

// Direction is the direction of a byte stream through the filter.
type Direction uint8

// Directions.
const (
	DirClientToServer Direction = iota
	DirServerToClient

	// NumDirections is the number of directions, for sizing arrays.
	NumDirections
)

// String returns the label-safe name of the direction.
func (d Direction) String() string {
	switch d {
	case DirClientToServer:
		return "client_to_server"
	case DirServerToClient:
		return "server_to_client"
	}
	return "unknown"
}

// Transport is the data transport a funnel name announces.
type Transport uint8

// Transports. TransportNone is the zero value: no funnel seen yet.
const (
	TransportNone Transport = iota
	TransportUDP
	TransportTCP
)

// String returns "udp", "tcp" or "none"; label-safe.
func (t Transport) String() string {
	switch t {
	case TransportUDP:
		return "udp"
	case TransportTCP:
		return "tcp"
	}
	return "none"
}
