package mmsfilter

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// LinkViewerToMacLogging carries, from absolute offset 40, a CLIENT_LOG
// ([MS-MMSP] §2.2.1.1, PROTOCOL.md §2.2): a structure of fixed-size fields
// in which two identify the client itself, dwIPAddress and szComputerDNS.
// Behind a firewall both name the inside host, so the filter overwrites
// them in place. The fields keep their size, so the message, its chunkLen
// and the packet's messageLength and chunkCount never change. Offsets below
// are relative to the message body (absolute offset 40 for the first
// message of a packet).
const (
	// logCbSize is cbSize, the length of the structure.
	logCbSize = 0
	// logAddrOff is dwIPAddress (absolute 1190): 4 bytes.
	logAddrOff = 1150
	// logNameOff is szComputerDNS (absolute 1194): 260 bytes of ANSI text,
	// NUL-terminated.
	logNameOff = 1154
	logNameLen = 260
	// logMinSize is the shortest cbSize that holds both fields. A Logging
	// message whose cbSize or body is shorter has a layout the filter does
	// not know; it is forwarded unchanged and counted.
	logMinSize = logNameOff + logNameLen

	// logNoAddress is the dwIPAddress a client should send: "none".
	logNoAddress uint32 = 0xFFFFFFFF
	// logNoName is the text an empty CLIENT_LOG string is sent as.
	logNoName = '-'
)

// LoggingField names a field of the Logging message the filter rewrites.
type LoggingField uint8

const (
	// LoggingAddress is dwIPAddress, the client's own IPv4 address.
	LoggingAddress LoggingField = iota
	// LoggingComputerName is szComputerDNS, the client's host name.
	LoggingComputerName

	// NumLoggingFields is the number of fields, for sizing arrays.
	NumLoggingFields
)

// String returns the label-safe name of the field.
func (f LoggingField) String() string {
	switch f {
	case LoggingAddress:
		return "address"
	case LoggingComputerName:
		return "computer_name"
	}
	return "unknown"
}

// LoggingPolicy says what ClientToServer does to the client's Logging
// messages. The zero value changes nothing.
type LoggingPolicy struct {
	// HideAddress replaces a dwIPAddress that names an address (anything
	// but 0xFFFFFFFF) with Address. An Address that is not IPv4 (the
	// field has room for nothing else) writes 0xFFFFFFFF, the spec's "no
	// address".
	HideAddress bool
	Address     netip.Addr
	// ScrubComputerName replaces a non-empty szComputerDNS with "-", the
	// spec's empty string, and zeros the rest of the field, so that no
	// byte of the name (nor of a stale one after its NUL) reaches the
	// server.
	ScrubComputerName bool
	// Rewritten is called once for each field a message had changed, on
	// the client-to-server goroutine (nil: not reported).
	Rewritten func(LoggingField)
}

// SetLogging sets how ClientToServer edits Logging messages. Call it
// before ClientToServer starts.
func (s *Streams) SetLogging(p LoggingPolicy) { s.client.logging = p }

// editLogging applies p to msg, one whole Logging message (chunkLen through
// padding), in place, and reports which fields it changed. An error
// (ErrLoggingLayout) means the layout is not the one the fields are known
// at; msg is then untouched.
func editLogging(msg []byte, p LoggingPolicy) (changed [NumLoggingFields]bool, err error) {
	if !p.HideAddress && !p.ScrubComputerName {
		return changed, nil
	}
	body := msg[messagePrefixLen:]
	if len(body) < logMinSize {
		return changed, fmt.Errorf("%w: %d-byte body", ErrLoggingLayout, len(body))
	}
	if n := binary.LittleEndian.Uint32(body[logCbSize:]); n < logMinSize || uint64(n) > uint64(len(body)) {
		return changed, fmt.Errorf("%w: cbSize %d in a %d-byte body", ErrLoggingLayout, n, len(body))
	}
	if p.HideAddress {
		changed[LoggingAddress] = hideAddress(body[logAddrOff:logAddrOff+4], p.Address)
	}
	if p.ScrubComputerName {
		changed[LoggingComputerName] = scrubName(body[logNameOff : logNameOff+logNameLen])
	}
	return changed, nil
}

// hideAddress overwrites field, a dwIPAddress, with to unless it already
// says "no address" or names to. The spec gives no byte order; the bytes
// are written in network order, the order of the in_addr a Windows client
// copies there (inferred). A client's own "none" stays as it is: it leaks
// nothing.
func hideAddress(field []byte, to netip.Addr) bool {
	if binary.LittleEndian.Uint32(field) == logNoAddress {
		return false
	}
	want := [4]byte{0xFF, 0xFF, 0xFF, 0xFF}
	if to = to.Unmap(); to.Is4() {
		want = to.As4()
	}
	if [4]byte(field) == want {
		return false
	}
	copy(field, want[:])
	return true
}

// scrubName overwrites field, a szComputerDNS, with "-" and zeros unless it
// is already empty (all zeros) or exactly that.
func scrubName(field []byte) bool {
	start := 0
	if field[0] == logNoName {
		start = 1
	}
	clean := true
	for _, c := range field[start:] {
		if c != 0 {
			clean = false
			break
		}
	}
	if clean {
		return false
	}
	field[0] = logNoName
	clear(field[1:])
	return true
}
