//go:build !linux

package fwproc

import "syscall"

// procAttr puts fwproxy in its own process group (Kill ends the group).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
