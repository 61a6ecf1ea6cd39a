//go:build !linux

package main

import "syscall"

// procAttr puts a server in its own process group (stop signals the group).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func becomeSubreaper() {}

func reapGroup(int) {}

// bindNoPort does nothing where IP_BIND_ADDRESS_NO_PORT does not exist.
func bindNoPort(string, string, syscall.RawConn) error { return nil }
