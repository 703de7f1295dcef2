package clh

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawServer answers each connection on a unix socket with handle; it stops
// with the test.
func rawServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return socket
}

// TestClientContextEndsHungRequest: a VMM that accepts and never answers
// must not hold the caller past its context.
func TestClientContextEndsHungRequest(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	socket := rawServer(t, func(c net.Conn) { <-release })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := newAPIClient(socket).ping(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("returned after %v", d)
	}
}

// TestClientChunkedAndConnectionClose: the request asks the VMM to close the
// connection, and a chunked answer is read whole.
func TestClientChunkedAndConnectionClose(t *testing.T) {
	got := make(chan string, 1)
	socket := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		var head []string
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
			head = append(head, strings.TrimSpace(line))
		}
		got <- strings.Join(head, "|")
		_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"c\r\n{\"version\":\"\r\n7\r\nv48.0\"}\r\n0\r\n\r\n"))
	})
	r, err := newAPIClient(socket).ping(ctxT(t))
	if err != nil || r.Version != "v48.0" {
		t.Fatalf("ping = %+v, %v", r, err)
	}
	head := <-got
	for _, want := range []string{"GET /api/v1/vmm.ping HTTP/1.1", "Connection: close", "Accept: application/json"} {
		if !strings.Contains(head, want) {
			t.Errorf("request head %q lacks %q", head, want)
		}
	}
}
