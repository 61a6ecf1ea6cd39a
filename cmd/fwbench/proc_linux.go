package main

import (
	"syscall"
	"time"
)

// procAttr puts a server in its own process group (stop signals the group)
// and has the kernel kill it if the driver dies without stopping it.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// becomeSubreaper makes orphaned descendants (danted's children, whose
// parent exits first) the driver's children, so reapGroup can collect them
// instead of leaving zombies to init.
func becomeSubreaper() {
	const prSetChildSubreaper = 36
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
}

// reapGroup waits for the exited members of process group pgid, for up to
// a second.
func reapGroup(pgid int) {
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-pgid, &ws, syscall.WNOHANG, nil)
		switch {
		case err != nil: // ECHILD: nothing of the group is left
			return
		case pid == 0: // members still exiting
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (linux/in.h).
const ipBindAddressNoPort = 24

// bindNoPort is a net.Dialer Control for dials from a chosen local address:
// the kernel picks the port at connect time, as for an unbound socket,
// instead of at bind time, where every TIME_WAIT connection the churn
// leaves behind makes the search for a free port slower.
func bindNoPort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
