//go:build linux

package udpio

import (
	"errors"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batch is what one Each read needs beside the buffers: the kernel's
// headers, pointing into the batch itself. A reader holds one only while
// it holds buffers, so an idle reader costs none of it.
type batch struct {
	msgs  [BatchSize]unix.Mmsghdr
	iovs  [BatchSize]unix.Iovec
	names [BatchSize]syscall.RawSockaddrInet6 // large enough for both families
	bufs  [BatchSize][]byte
	used  [BatchSize]int // high-water mark of each buffer, for Put
}

// batches keeps idle batches for every reader: bounded, and not a
// sync.Pool, which drops items at random under the race detector and would
// then allocate per burst.
var batches = make(chan *batch, 256)

func getBatch() *batch {
	select {
	case b := <-batches:
		return b
	default:
	}
	b := new(batch)
	for i := range b.msgs {
		b.msgs[i].Hdr.Iov = &b.iovs[i]
		b.msgs[i].Hdr.SetIovlen(1)
	}
	return b
}

// takeBatch gives the reader a batch with a buffer in every slot.
func (r *rawReader) takeBatch() {
	b := getBatch()
	for i := range b.bufs {
		buf := r.bufs.Get()
		b.bufs[i], b.used[i] = buf, 0
		b.iovs[i].Base = &buf[0]
		b.iovs[i].SetLen(len(buf))
	}
	r.bat = b
}

// giveBatch gives back the batch's buffers and the batch.
func (r *rawReader) giveBatch() {
	b := r.bat
	if b == nil {
		return
	}
	r.bat = nil
	for i := range b.bufs {
		r.bufs.Put(b.bufs[i], b.used[i])
		b.bufs[i] = nil
		b.iovs[i].Base = nil
	}
	select {
	case batches <- b:
	default:
	}
}

func (r *rawReader) Each(fn DatagramFunc) error {
	r.fn = fn
	err := r.each()
	r.fn = nil
	return err
}

// each is Each's loop; the waiting reader's frames are on the stack for as
// long as the socket is idle, so they are kept small.
func (r *rawReader) each() error {
	for {
		r.err = nil
		err := r.rc.Read(r.eachFn)
		if r.taken {
			// readBatch took the buffers of a Keep policy and returned,
			// so that the deadline that gives them back is armed first.
			r.taken = false
			r.c.SetReadDeadline(time.Now().Add(r.keep))
			continue
		}
		if r.keep > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			r.Close()
			r.c.SetReadDeadline(time.Time{})
			continue
		}
		if err != nil {
			r.Close()
			return err
		}
		if r.err != nil {
			r.Close()
			return r.err
		}
	}
}

// readBatch is Each's RawConn callback: it reads and hands over datagrams
// until the socket is empty, then asks to be parked (false); true only to
// report an error, or for Each to arm a Keep deadline.
func (r *rawReader) readBatch(fd uintptr) bool {
	if r.bat == nil {
		if r.keep > 0 && !datagramQueued(fd) {
			r.wait()
			return false
		}
		r.takeBatch()
		if r.keep > 0 {
			r.taken = true
			return true
		}
	}
	b := r.bat
	for {
		for i := range b.msgs {
			b.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
			b.msgs[i].Hdr.Namelen = syscall.SizeofSockaddrInet6
			b.msgs[i].Hdr.Flags = 0
		}
		// MSG_TRUNC: each message's length is its datagram's real size,
		// as for recvfrom in readFD.
		n, _, errno := syscall.Syscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&b.msgs[0])), BatchSize,
			syscall.MSG_DONTWAIT|syscall.MSG_TRUNC, 0, 0)
		switch errno {
		case 0:
			for i := range int(n) {
				size := int(b.msgs[i].Len)
				b.used[i] = max(b.used[i], min(size, len(b.bufs[i])))
				name := (*[syscall.SizeofSockaddrInet6]byte)(unsafe.Pointer(&b.names[i]))[:min(int(b.msgs[i].Hdr.Namelen), syscall.SizeofSockaddrInet6)]
				if from, ok := parseRawSockaddr(name); ok {
					r.fn(b.bufs[i][:min(size, len(b.bufs[i]))], size, from)
				}
			}
			if int(n) == BatchSize {
				continue // maybe more queued
			}
			// A short batch: the queue was empty when the kernel returned.
			// A datagram queued since has set the poller's ready mark,
			// which the wait RawConn.Read now does will find.
			return r.park()
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return r.park()
		default:
			r.err = errno
			return true
		}
	}
}
