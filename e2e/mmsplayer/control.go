package mmsplayer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"fwproxy/mmsfilter"
)

const (
	// commandPeek is what tells a command from a Data packet and gives
	// either's length (mmsfilter/PROTOCOL.md §1.3): bytes 4–7 are the sessionId
	// of a command, bytes 6–7 the size of a Data packet; a command's
	// length is at 8.
	commandPeek = 16
	// lengthBias: a command is messageLength+16 bytes long.
	lengthBias = 16
	// controlQueue is how many server messages wait for the player.
	controlQueue = 64
)

// control is the player's control connection. The reader goroutine frames
// what the server sends: commands go to msgs, Data packets (MMST) straight
// into the tally. Only the player's goroutine writes.
type control struct {
	conn    net.Conn
	t       *tally
	timeout time.Duration

	msgs chan mmsfilter.Message
	err  error // why msgs was closed; set before the close
	quit chan struct{}
	done chan struct{}

	seq  uint16
	wbuf []byte
}

func startControl(conn net.Conn, t *tally, timeout time.Duration) *control {
	c := &control{
		conn: conn, t: t, timeout: timeout,
		msgs: make(chan mmsfilter.Message, controlQueue),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	go c.readLoop()
	return c
}

func (c *control) readLoop() {
	defer close(c.done)
	defer close(c.msgs)
	c.err = c.read()
}

func (c *control) read() error {
	br := bufio.NewReaderSize(c.conn, maxDatagram)
	for {
		head, err := br.Peek(mmsfilter.DataHeaderLen)
		if err != nil {
			return err
		}
		if binary.LittleEndian.Uint32(head[4:]) != mmsfilter.SessionID {
			// A Data packet, interleaved with commands (MMST).
			h, _, err := mmsfilter.ParseDataHeader(head)
			if err != nil {
				return fmt.Errorf("data packet: %w", err)
			}
			pkt := make([]byte, h.PacketSize)
			if _, err := io.ReadFull(br, pkt); err != nil {
				return fmt.Errorf("data packet: %w", err)
			}
			c.t.record(h, pkt[mmsfilter.DataHeaderLen:])
			continue
		}
		head, err = br.Peek(commandPeek)
		if err != nil {
			return err
		}
		n := int(binary.LittleEndian.Uint32(head[8:])) + lengthBias
		if n < mmsfilter.HeaderLen+8 || n > mmsfilter.MaxCommandLen {
			return fmt.Errorf("command of %d bytes", n)
		}
		pkt := make([]byte, n)
		if _, err := io.ReadFull(br, pkt); err != nil {
			return fmt.Errorf("command: %w", err)
		}
		p, _, err := mmsfilter.ParsePacket(pkt)
		if err != nil {
			return fmt.Errorf("command: %w", err)
		}
		for rest := p.Messages; len(rest) > 0; {
			m, k, err := mmsfilter.ParseMessage(rest)
			if err != nil {
				return fmt.Errorf("message: %w", err)
			}
			rest = rest[k:]
			select {
			case c.msgs <- m: // m aliases pkt, which is never reused
			case <-c.quit:
				return net.ErrClosed
			}
		}
	}
}

// send writes one command packet with one message, as a client MUST.
func (c *control) send(m mmsfilter.Message) error {
	c.wbuf = mmsfilter.AppendCommand(c.wbuf[:0], c.seq, m)
	c.seq++
	c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	if _, err := c.conn.Write(c.wbuf); err != nil {
		return fmt.Errorf("send %v: %w", m.MID, err)
	}
	return nil
}

// close closes the connection and waits for the reader.
func (c *control) close() {
	close(c.quit)
	c.conn.Close()
	<-c.done
}

// readErr is why the server's side ended (io.EOF: it closed).
func (c *control) readErr() error {
	if c.err == nil || errors.Is(c.err, io.EOF) {
		return errors.New("server closed the control connection")
	}
	return c.err
}
