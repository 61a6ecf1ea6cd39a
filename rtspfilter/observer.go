package rtspfilter

// Observer receives what the filter sees, for metrics. Every argument is a
// small enum with a label-safe String() and a Num… bound. Methods are
// called from both stream goroutines of a connection at once, so they must
// be safe for concurrent use and quick: they run inline on the relay path.
type Observer interface {
	// Request counts one request seen, in either direction (servers
	// send a few: ANNOUNCE, SET_PARAMETER, REDIRECT, PLAY_NOTIFY).
	Request(dir Direction, m Method)
	// Response counts one response by its status class.
	Response(dir Direction, c StatusClass)
	// Interleaved counts frames of interleaved binary data.
	Interleaved(dir Direction, frames int)
	// Setup counts one SETUP once its outcome is known.
	Setup(mode SetupMode, outcome SetupOutcome)
	// Transport counts one transport spec of a SETUP request.
	Transport(a TransportAction)
	// DestinationRewritten counts one destination parameter (or RTSP
	// 2.0 dest_addr naming another host than the client) pointed at the
	// proxy's external address.
	DestinationRewritten()
	// Problem counts what the filter could not handle or refused; err is
	// the detail for a log line.
	Problem(dir Direction, p Problem, err error)
	// ConnectionsChanged adds delta to the count of filtered connections.
	ConnectionsChanged(delta int)
}

// NopObserver ignores everything; the default when Deps has none.
type NopObserver struct{}

var _ Observer = NopObserver{}

func (NopObserver) Request(Direction, Method)         {}
func (NopObserver) Response(Direction, StatusClass)   {}
func (NopObserver) Interleaved(Direction, int)        {}
func (NopObserver) Setup(SetupMode, SetupOutcome)     {}
func (NopObserver) Transport(TransportAction)         {}
func (NopObserver) DestinationRewritten()             {}
func (NopObserver) Problem(Direction, Problem, error) {}
func (NopObserver) ConnectionsChanged(int)            {}
