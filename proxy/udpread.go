package proxy

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"fwproxy/internal/udpio"
)

// bufferHold is how long a client reader keeps a pooled buffer: the Keep of
// its udpio.Policy. A busy association does not go to the pool per datagram,
// and one that falls silent holds a buffer for at most bufferHold.
const bufferHold = 500 * time.Millisecond

// rawClientSource reads the client's datagrams from an association's relay
// socket with a udpio.Reader, so that an idle reader owns no buffer (a
// blocking ReadFromUDPAddrPort would pin a 64 KiB buffer to every idle
// association): it takes one from the server's pool only once a datagram is
// queued and gives it back bufferHold after taking it. Used by the
// association's clientLoop goroutine only.
type rawClientSource struct {
	r udpio.Reader
}

var _ clientSource = (*rawClientSource)(nil)

func newClientSource(c *net.UDPConn, bufs *sync.Pool) (clientSource, error) {
	r, err := udpio.NewReader(c, udpio.Policy{Buffers: datagramPool{bufs}, Keep: bufferHold})
	if err != nil {
		return nil, err
	}
	return &rawClientSource{r: r}, nil
}

// next hands over b as the reader read it: its buffers hold maxDatagram
// bytes, more than any UDP payload, so a datagram always fits.
func (s *rawClientSource) next() ([]byte, netip.AddrPort, error) {
	b, _, from, err := s.r.Next()
	return b, from, err
}

func (s *rawClientSource) close() { s.r.Close() }

// datagramPool lends the server's buffers (newDatagramBufs) to the client
// readers. It is one pointer, so it fits an interface without allocating,
// and the conversions between the array pointer and the slice allocate
// nothing either.
type datagramPool struct{ p *sync.Pool }

func (d datagramPool) Size() int           { return maxDatagram }
func (d datagramPool) Get() []byte         { return d.p.Get().(*[maxDatagram]byte)[:] }
func (d datagramPool) Put(b []byte, _ int) { d.p.Put((*[maxDatagram]byte)(b)) }

// rawClientSink sends header and payload as one datagram with a
// udpio.Writer (Linux: one sendmsg with two iovecs, the payload never
// copied). Used by deliver only, which the lease never calls concurrently
// for one holder.
type rawClientSink struct {
	w   udpio.Writer
	hdr [maxUDPAddrHeaderLen]byte
}

var _ clientSink = (*rawClientSink)(nil)

func newClientSink(c *net.UDPConn) (clientSink, error) {
	w, err := udpio.NewWriter(c)
	if err != nil {
		return nil, err
	}
	return &rawClientSink{w: w}, nil
}

func (s *rawClientSink) send(from netip.AddrPort, payload []byte, to netip.AddrPort) error {
	return s.w.WriteTo(appendUDPHeader(s.hdr[:0], from), payload, to)
}
