// coco-snapshotter is the node's snapshotter for runtime classes whose guest
// pulls the container image (see package shim/snapshotter): containerd
// reaches it as a proxy plugin and never fetches or unpacks image layers
// for those classes. One per node, started before containerd:
//
//	coco-snapshotter --root /var/lib/coco-snapshotter --address /run/coco/snapshotter.sock
//
// with, in containerd's config.toml,
//
//	[proxy_plugins.coco]
//	  type = "snapshot"
//	  address = "/run/coco/snapshotter.sock"
//
// and `snapshotter = "coco"` on the runtime handler of such a class.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/coco-runtime/coco/shim/snapshotter"
)

func main() {
	root := flag.String("root", "/var/lib/coco-snapshotter", "directory for the snapshots (the containers' writable layers)")
	address := flag.String("address", "/run/coco/snapshotter.sock", "unix socket containerd connects to (proxy_plugins address)")
	flag.Parse()
	if err := run(*root, *address); err != nil {
		fmt.Fprintln(os.Stderr, "coco-snapshotter:", err)
		os.Exit(1)
	}
}

func run(root, address string) error {
	sn, err := overlay.NewSnapshotter(root)
	if err != nil {
		return fmt.Errorf("overlay snapshotter in %s: %w", root, err)
	}
	defer sn.Close()
	if err := os.MkdirAll(filepath.Dir(address), 0o711); err != nil {
		return err
	}
	// A socket left by a previous run is ours to replace; anything else
	// at that path is not.
	if st, err := os.Lstat(address); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("%s exists and is not a socket: remove it or choose another --address", address)
		}
		os.Remove(address)
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return err
	}
	defer os.Remove(address)
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(snapshotter.Skipping{Snapshotter: sn}))
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	fmt.Fprintf(os.Stderr, "coco-snapshotter: serving %s on %s\n", root, address)
	if err := srv.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}
