// Package netns builds test hosts out of Linux network namespaces: hosts
// joined by switched segments (a bridge in a namespace of its own, one
// veth leg per host), with the documentation addresses of RFC 5737 and
// RFC 3849 and no interface or route in the machine's own namespace.
//
// Firewall is the standard topology of the end-to-end tests: an inside
// host with the players, an outside host with the media servers, and
// proxy hosts with one leg on each side that do not forward, so that the
// proxy is the only path; optionally a balancer host on the inside.
//
// Every run names its namespaces with a prefix of its own (process id and
// a random part), tears them down with t.Cleanup, leaves a reaper process
// that tears them down if the test process dies first (a test timeout
// panics past t.Cleanup), and sweeps what dead runs left behind.
//
// It refuses to run without root: New skips the test with the reason, or
// fails it when CI=true, where the topology tests must run.
package netns
