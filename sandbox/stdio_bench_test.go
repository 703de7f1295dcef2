package sandbox

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
)

// unixOpener stands in for the agent client: each stream is a real kernel
// unix-socket connection (as the hybrid vsock path is on the host), whose
// far end the benchmark plays as the guest.
type unixOpener struct{ path string }

func (u unixOpener) OpenStream(ctx context.Context, _, _, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", u.path)
}

// countSink is the host side's stdout: it counts bytes and reports Close.
type countSink struct {
	n      int64
	closed chan struct{}
}

func (c *countSink) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
func (c *countSink) Close() error                { close(c.closed); return nil }

// BenchmarkStdioCopy measures the stdout path of a guest process through
// connectStdio: guest writes → socket → the shim's copy loop → the
// containerd-side writer. One op is one chunk; MB/s is the throughput.
func BenchmarkStdioCopy(b *testing.B) {
	for _, chunk := range []int{512, 32 << 10} {
		b.Run(fmt.Sprintf("%dB", chunk), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "s")
			l, err := net.Listen("unix", path)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := l.Accept()
				if err == nil {
					accepted <- c
				}
			}()
			sink := &countSink{closed: make(chan struct{})}
			_, stdout, _, _, err := connectStdio(context.Background(), unixOpener{path: path}, "c1", "", IO{Stdout: sink})
			if err != nil || stdout == "" {
				b.Fatalf("connectStdio: %q, %v", stdout, err)
			}
			guest := <-accepted
			buf := make([]byte, chunk)
			b.SetBytes(int64(chunk))
			b.ResetTimer()
			for b.Loop() {
				if _, err := guest.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			guest.Close()
			<-sink.closed // every byte has reached the host writer
			b.StopTimer()
			if want := int64(chunk) * int64(b.N); sink.n != want {
				b.Fatalf("host received %d bytes, guest wrote %d", sink.n, want)
			}
		})
	}
}

var _ io.WriteCloser = (*countSink)(nil)
