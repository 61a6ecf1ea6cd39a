//go:build race

package testbin

// race: the tests run under the race detector, so the commands they drive
// are built with it too.
const race = true
