package mmsserver

import (
	"errors"
	"fmt"
	"time"

	"fwproxy/e2e/asf"
)

// Entry is one item of a server-side playlist.
type Entry struct {
	// Name labels the entry in logs.
	Name string
	// File is what the entry streams: its header and data packets. A File
	// cut with asf.File.Truncate makes a short entry whose header still
	// tells the player exactly how many packets to expect.
	File *asf.File
}

// Playlist is a server-side playlist: the entries play one after the
// other on one control connection (mmsfilter/PROTOCOL.md §4.b).
type Playlist []Entry

// Repeat is a playlist of n entries that all play f.
func Repeat(name string, f *asf.File, n int) Playlist {
	p := make(Playlist, n)
	for i := range p {
		p[i] = Entry{Name: fmt.Sprintf("%s#%d", name, i+1), File: f}
	}
	return p
}

// Config holds the server's settings. Start from DefaultConfig.
type Config struct {
	// Playlists maps the name a client opens (the URL path without its
	// leading '/', as OpenFile carries it) to what it plays. A one-entry
	// playlist is a plain file.
	Playlists map[string]Playlist

	// PacketInterval is the time between two data packets of an entry. 0
	// sends an entry's packets back to back. Negative is invalid.
	PacketInterval time.Duration

	// TailPackets models the network as it is (MMSU only): the last
	// TailPackets data packets of every entry but the last are still in
	// flight on the UDP path when EndOfStream (hr 1) and StreamChange
	// arrive over TCP. The server sends them after those two messages, as
	// soon as the client next speaks on the control connection (WMP sends
	// Logging then; a Pong does not count) or TailDelay after StreamChange,
	// whichever comes first. Holding them until the client speaks makes the
	// model deterministic: a player that closes its UDP binding before it
	// speaks gets the tail in its close→bind gap every time, which is when
	// a proxy without lingering loses it. 0 sends every packet before
	// EndOfStream. Negative is invalid.
	TailPackets int
	// TailDelay bounds how long the tail waits for the client to speak. 0
	// waits for the client only (the tail is dropped if the connection
	// ends first). Negative is invalid.
	TailDelay time.Duration

	// PingInterval is how often the server pings the client (LinkMacToViewerPing;
	// the spec's keep-alive is 30 s). 0 never pings. Negative is invalid.
	PingInterval time.Duration

	// HeaderPieceSize caps the bytes of stream header per Data packet; the
	// header of a larger entry is sent in pieces (AFFlags 0x04, last 0x0C).
	// 0 means the entry's packet size. Negative is invalid.
	HeaderPieceSize int

	// IdleTimeout closes a control connection the client has sent nothing
	// on for this long. 0 never does. Negative is invalid.
	IdleTimeout time.Duration
	// WriteTimeout bounds each write on a control connection. Must be > 0.
	WriteTimeout time.Duration
}

// DefaultConfig returns settings for a server that plays in real time at
// a test's pace: 10 ms between packets, no tail, a ping every 5 s.
func DefaultConfig() Config {
	return Config{
		PacketInterval: 10 * time.Millisecond,
		PingInterval:   5 * time.Second,
		IdleTimeout:    time.Minute,
		WriteTimeout:   10 * time.Second,
	}
}

// Validate reports the settings that cannot work.
func (c Config) Validate() error {
	var errs []error
	for name, p := range c.Playlists {
		if len(p) == 0 {
			errs = append(errs, fmt.Errorf("playlist %q is empty", name))
		}
		for i, e := range p {
			switch {
			case e.File == nil || len(e.File.Packets) == 0:
				errs = append(errs, fmt.Errorf("playlist %q entry %d has no packets", name, i+1))
			case e.File.Info.PacketSize > maxPiece:
				errs = append(errs, fmt.Errorf("playlist %q entry %d: packets of %d bytes do not fit a Data packet", name, i+1, e.File.Info.PacketSize))
			}
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"PacketInterval", c.PacketInterval},
		{"TailDelay", c.TailDelay},
		{"PingInterval", c.PingInterval},
		{"IdleTimeout", c.IdleTimeout},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", d.name, d.v))
		}
	}
	if c.TailPackets < 0 {
		errs = append(errs, fmt.Errorf("TailPackets %d is negative", c.TailPackets))
	}
	if c.HeaderPieceSize < 0 || c.HeaderPieceSize > maxPiece {
		errs = append(errs, fmt.Errorf("HeaderPieceSize %d outside 0..%d", c.HeaderPieceSize, maxPiece))
	}
	if c.WriteTimeout <= 0 {
		errs = append(errs, fmt.Errorf("WriteTimeout %v must be > 0", c.WriteTimeout))
	}
	if len(errs) > 0 {
		return fmt.Errorf("mmsserver: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// maxPiece is the largest Data payload: PacketSize is a u16 that counts
// the 8-byte header (mmsfilter/PROTOCOL.md §3.1).
const maxPiece = 0xFFFF - 8
