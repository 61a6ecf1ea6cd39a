// Command mmsserver runs fwproxy's emulated Windows Media server on its
// own, for trying players against it by hand:
//
//	go run ./cmd/mmsserver -listen 127.0.0.1:1755
//	vlc mmsu://127.0.0.1:1755/file
//	vlc --socks=127.0.0.1:1080 mmsu://127.0.0.1:1755/file   # through fwproxy
//
// It serves two names: "file", the asset as one entry, and "playlist", a
// server-side playlist of -entries entries of -packets packets each. It
// stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"fwproxy/e2e/asf"
	"fwproxy/e2e/mmsserver"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "mmsserver:", err)
		os.Exit(1)
	}
}

func run(args []string, stderr io.Writer) error {
	cfg := mmsserver.DefaultConfig()
	fs := flag.NewFlagSet("mmsserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:1755", "TCP and UDP `ADDR` to serve on (port 0 picks one)")
	asset := fs.String("asset", "e2e/testdata/sine440.asf", "ASF `FILE` to stream")
	entries := fs.Int("entries", 5, "entries of the \"playlist\" playlist")
	packets := fs.Int("packets", 0, "packets per playlist entry (0: the whole asset)")
	fs.DurationVar(&cfg.PacketInterval, "interval", cfg.PacketInterval, "time between data packets (0: as fast as possible)")
	fs.IntVar(&cfg.TailPackets, "tail", cfg.TailPackets, "packets of each entry still in flight after StreamChange (MMSU)")
	fs.DurationVar(&cfg.TailDelay, "tail-delay", cfg.TailDelay, "longest wait for the client before the tail is sent (0: wait for the client)")
	fs.DurationVar(&cfg.PingInterval, "ping", cfg.PingInterval, "ping interval (0: never)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	f, err := asf.ReadFile(*asset)
	if err != nil {
		return err
	}
	entry := f
	if *packets > 0 {
		if entry, err = f.Truncate(*packets); err != nil {
			return err
		}
	}
	if *entries < 1 {
		return fmt.Errorf("-entries %d: want at least 1", *entries)
	}
	cfg.Playlists = map[string]mmsserver.Playlist{
		"file":     {{Name: "file", File: f}},
		"playlist": mmsserver.Repeat("playlist", entry, *entries),
	}
	srv, err := mmsserver.Listen(*listen, cfg, log)
	if err != nil {
		return err
	}
	log.Info("listening", "addr", srv.Addr().String(), "names", "file, playlist", "entries", *entries,
		"packets", len(entry.Packets), "packet_size", f.Info.PacketSize)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	srv.Close()
	st := srv.Stats()
	log.Info("stopped", "sessions", st.Sessions, "data_packets", st.DataPackets, "stream_changes", st.StreamChanges)
	return nil
}
