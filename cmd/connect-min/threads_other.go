//go:build !linux

package main

import "errors"

// newThreadsServer: the threads mode uses Linux's system calls
// (accept4, SO_RCVTIMEO inherited by accepted sockets).
func newThreadsServer(config) (server, error) {
	return nil, errors.New("-mode threads needs Linux")
}
