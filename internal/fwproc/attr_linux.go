package fwproc

import "syscall"

// procAttr puts fwproxy in its own process group (Kill ends the group, a
// terminal's Ctrl-C reaches only the caller, which stops it) and has the
// kernel kill it if the caller dies without stopping it.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
