package proxy

import "errors"

var (
	// ErrServerClosed is returned by Serve after Shutdown or Close.
	ErrServerClosed = errors.New("proxy: server closed")
	// ErrBadVersion means the client did not speak SOCKS version 5.
	ErrBadVersion = errors.New("proxy: not SOCKS version 5")
	// ErrNoAcceptableMethod means the client offered no method the server accepts.
	ErrNoAcceptableMethod = errors.New("proxy: no acceptable authentication method")
	// ErrAuthFailed means username/password authentication was refused.
	ErrAuthFailed = errors.New("proxy: authentication failed")
	// ErrFilterExists is returned when a second filter is registered for a port.
	ErrFilterExists = errors.New("proxy: filter already registered for port")
)
