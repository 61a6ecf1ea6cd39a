package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// benchBulk measures TCP throughput with the given number of parallel
// streams in one direction: 'd' (target to client) or 'u' (client to
// target). A download counts what the client read in the window; an
// upload ends with an end mark in its framing and counts what the target
// says it got, timed until that answer arrives, so nothing still queued in
// a proxy is counted.
func (b *bench) benchBulk(ctx context.Context, streams int, dir byte) error {
	name := map[byte]string{'d': "download (target → client)", 'u': "upload (client → target)"}[dir]
	f := b.res.fig(fmt.Sprintf("bulk/%c/%d", dir, streams), fmt.Sprintf("bulk TCP %s, %d stream(s)", name, streams), "GB/s", higherIsBetter)
	for _, t := range b.targets {
		conns := make([]*net.TCPConn, 0, streams)
		closeAll := func() {
			for _, c := range conns {
				c.Close()
			}
		}
		for range streams {
			c, err := b.openBulk(ctx, t, dir)
			if err != nil {
				closeAll()
				return fmt.Errorf("%s: bulk stream: %w", t.sys, err)
			}
			conns = append(conns, c)
		}
		var wg sync.WaitGroup
		bytes := make([]int64, streams)
		errs := make([]error, streams)
		start := time.Now()
		end := start.Add(b.dur)
		for i, c := range conns {
			wg.Add(1)
			go bulkStream(c, dir, end, &bytes[i], &errs[i], &wg)
		}
		wg.Wait()
		elapsed := time.Since(start)
		closeAll()
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("%s: bulk: %w", t.sys, err)
		}
		var total int64
		for _, n := range bytes {
			total += n
		}
		f.set(t.sys, float64(total)/elapsed.Seconds()/1e9)
	}
	return ctx.Err()
}

// An upload's framing: uploadChunk before each bulkChunk bytes, uploadEnd
// after the last.
const (
	uploadChunk = 'c'
	uploadEnd   = 'e'
)

// openBulk connects one stream and sends its mode byte.
func (b *bench) openBulk(ctx context.Context, t target, dir byte) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	c, err := t.dialTCP(ctx, b.peers.bulkAddr())
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{dir}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// bulkStream moves bytes on c until end and stores the count in *n.
func bulkStream(c *net.TCPConn, dir byte, end time.Time, n *int64, errp *error, wg *sync.WaitGroup) {
	defer wg.Done()
	buf := make([]byte, bulkChunk)
	switch dir {
	case 'd':
		c.SetReadDeadline(end)
		for {
			k, err := c.Read(buf)
			*n += int64(k)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			if err != nil {
				*errp = err
				return
			}
		}
	case 'u':
		// Framed: each chunk follows a 'c', and an 'e' ends the upload, so
		// the target answers without the half-close that microsocks does
		// not pass on (it closes both ways at the first EOF).
		frame := append([]byte{uploadChunk}, buf...)
		c.SetWriteDeadline(end)
		for {
			k, err := c.Write(frame)
			if err == nil {
				continue
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				*errp = err
				return
			}
			// The deadline may have cut a frame: finish it, then end.
			c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if k > 0 {
				if _, err := c.Write(frame[k:]); err != nil {
					*errp = err
					return
				}
			}
			break
		}
		if _, err := c.Write([]byte{uploadEnd}); err != nil {
			*errp = err
			return
		}
		c.SetWriteDeadline(time.Time{})
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		var count [8]byte
		if _, err := io.ReadFull(c, count[:]); err != nil {
			*errp = fmt.Errorf("upload count: %w", err)
			return
		}
		*n = int64(binary.BigEndian.Uint64(count[:]))
	}
}
