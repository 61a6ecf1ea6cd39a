// Package fwproc starts fwproxy as a process, as the e2e tests, the demo
// and the benchmark run it: it waits for the "listening" log line and
// reads the SOCKS and metrics addresses from it (so fwproxy can choose
// free ports), keeps what the process logs, and stops it with SIGTERM,
// killing its process group when it does not exit in time.
package fwproc
