package proxy

// The label values the server reports to its Observer, so that a metrics
// implementation can create every series at 0 before the first event: a
// failure series that appears only when it first happens is invisible to
// Prometheus's increase() for that first event. Whoever adds a reason to
// the server adds it here too (TestLabelsCoverReports checks the ones the
// tests provoke).

// RejectReasons are the reasons of Observer.ConnectionRejected.
func RejectReasons() []string {
	return []string{"client_not_allowed", "session_limit", "client_session_limit",
		RejectProxyHeaderMissing, RejectProxyHeaderInvalid, RejectProxyHeaderUntrusted}
}

// HandshakeFailureReasons are the reasons of Observer.HandshakeFailed.
func HandshakeFailureReasons() []string {
	return []string{"timeout", "truncated", "bad_version", "no_acceptable_method", "auth_failed",
		"auth_busy", "bad_address_type", "bad_domain", "bind_foreign_peer", "bind_peer_refused"}
}

// ConnectExpectOutcomes are the outcomes of Observer.ConnectExpectation.
func ConnectExpectOutcomes() []string {
	return []string{ExpectAdded, ExpectUsed, ExpectExpired, ExpectRefusedClientCap, ExpectRefusedTableFull, ExpectRefusedNotAllowed}
}

// AuthMethods are the methods of Observer.Authenticated.
func AuthMethods() []string { return []string{methodName(methodNoAuth), methodName(methodUserPass)} }

// Commands are the command labels of Observer.Request, "unknown" included.
func Commands() []string {
	return []string{CommandConnect.String(), CommandBind.String(), CommandAssociate.String(), Command(0).String()}
}

// Replies are the reply labels of Observer.Request.
func Replies() []string {
	out := make([]string, 0, int(ReplyAddressNotSupported)+1)
	for r := ReplySucceeded; r <= ReplyAddressNotSupported; r++ {
		out = append(out, r.String())
	}
	return out
}
