package proxy

// udpDir is the direction of a relayed datagram.
type udpDir uint8

const (
	udpOut udpDir = iota // client -> remote
	udpIn                // remote -> client
	numUDPDirs
)

var udpDirNames = [numUDPDirs]string{"client_to_remote", "remote_to_client"}

// udpOutcome is what became of a datagram at the association.
type udpOutcome uint8

const (
	udpRelayed       udpOutcome = iota
	udpForeignSource            // from an IP (or port) other than the client's
	udpBadHeader                // SOCKS UDP header malformed
	udpFragmented               // FRAG != 0: fragmentation is not supported
	udpUnresolved               // destination name did not resolve
	udpNotAllowed               // rules deny the destination
	udpNoLease                  // no external port could be leased
	udpSendFailed               // the socket write failed
	udpUnspecified              // to 0.0.0.0 or ::, which is the proxy's host
	udpOwnSocket                // to one of the proxy's own sockets
	udpProxyHost                // to the proxy's host (loopback, its addresses)
	udpMulticast                // to a multicast group
	udpBroadcast                // to a broadcast address
	udpClientNetwork            // to a host of the client networks (the inside)
	numUDPOutcomes
)

var udpOutcomeNames = [numUDPOutcomes]string{
	"relayed", "foreign_source", "bad_header", "fragmented", "unresolved", "not_allowed", "no_lease", "send_failed",
	"unspecified", "own_socket", "proxy_host", "multicast", "broadcast", "client_network",
}

// udpRefusalOutcome is the outcome of a datagram whose destination the
// judge refused, by reason.
var udpRefusalOutcome = [numRefusals]udpOutcome{
	refusedNone:          udpRelayed,
	refusedUnspecified:   udpUnspecified,
	refusedMulticast:     udpMulticast,
	refusedBroadcast:     udpBroadcast,
	refusedProxyHost:     udpProxyHost,
	refusedOwnSocket:     udpOwnSocket,
	refusedRules:         udpNotAllowed,
	refusedClientNetwork: udpClientNetwork,
}

// udpCounters holds one resolved counter pair per direction and outcome.
type udpCounters [numUDPDirs][numUDPOutcomes]struct{ datagrams, bytes Counter }

func newUDPCounters(obs Observer) *udpCounters {
	var c udpCounters
	for d := range numUDPDirs {
		for o := range numUDPOutcomes {
			c[d][o].datagrams, c[d][o].bytes = obs.UDPCounters(udpDirNames[d], udpOutcomeNames[o])
		}
	}
	return &c
}

// count records one datagram of n payload bytes.
func (c *udpCounters) count(d udpDir, o udpOutcome, n int) {
	e := &c[d][o]
	e.datagrams.Add(1)
	e.bytes.Add(float64(n))
}
