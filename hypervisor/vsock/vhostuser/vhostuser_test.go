package vhostuser

import (
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

func frontEnd(t *testing.T) (*Backend, *net.UnixConn) {
	t.Helper()
	dir := t.TempDir()
	b, err := Listen(filepath.Join(dir, "vu.sock"), Config{GuestCID: 42, UDS: filepath.Join(dir, "v.sock")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	c, err := net.Dial("unix", filepath.Join(dir, "vu.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return b, c.(*net.UnixConn)
}

func request(t *testing.T, c *net.UnixConn, req uint32, payload []byte, wantReply bool) []byte {
	t.Helper()
	m := make([]byte, headerSize+len(payload))
	binary.LittleEndian.PutUint32(m[0:], req)
	binary.LittleEndian.PutUint32(m[4:], flagVersion)
	binary.LittleEndian.PutUint32(m[8:], uint32(len(payload)))
	copy(m[headerSize:], payload)
	if _, err := c.Write(m); err != nil {
		t.Fatal(err)
	}
	if !wantReply {
		return nil
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatalf("request %d: no reply: %v", req, err)
	}
	if got := binary.LittleEndian.Uint32(hdr); got != req || binary.LittleEndian.Uint32(hdr[4:]) != flagVersion|flagReply {
		t.Fatalf("reply header %x to request %d", hdr, req)
	}
	out := make([]byte, binary.LittleEndian.Uint32(hdr[8:]))
	if _, err := io.ReadFull(c, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// The negotiation QEMU's vhost-user-vsock-pci runs: features, protocol
// features (CONFIG), and the guest CID read from the config space.
func TestNegotiation(t *testing.T) {
	_, c := frontEnd(t)
	if f := binary.LittleEndian.Uint64(request(t, c, reqGetFeatures, nil, true)); f != featVersion1|featProtocolFeatures {
		t.Errorf("features %#x", f)
	}
	if f := binary.LittleEndian.Uint64(request(t, c, reqGetProtocolFeatures, nil, true)); f != protoConfig {
		t.Errorf("protocol features %#x", f)
	}
	request(t, c, reqSetProtocolFeatures, u64(protoConfig), false)
	cfg := make([]byte, 12+8)
	binary.LittleEndian.PutUint32(cfg[4:], 8)
	got := request(t, c, reqGetConfig, cfg, true)
	if cid := binary.LittleEndian.Uint64(got[12:]); cid != 42 {
		t.Errorf("guest cid %d in %x", cid, got)
	}
}

// A front-end that sends what was not negotiated, or a malformed message,
// loses its connection and the back-end stops: no guessing.
func TestFrontEndRefused(t *testing.T) {
	for name, msg := range map[string]func(c *net.UnixConn){
		"unknown request": func(c *net.UnixConn) {
			m := make([]byte, headerSize)
			binary.LittleEndian.PutUint32(m, 99)
			c.Write(m)
		},
		"huge payload": func(c *net.UnixConn) {
			m := make([]byte, headerSize)
			binary.LittleEndian.PutUint32(m, reqSetFeatures)
			binary.LittleEndian.PutUint32(m[8:], 1<<20)
			c.Write(m)
		},
		"kick without fd": func(c *net.UnixConn) {
			m := make([]byte, headerSize+8)
			binary.LittleEndian.PutUint32(m, reqSetVringKick)
			binary.LittleEndian.PutUint32(m[8:], 8)
			c.Write(m) // no vringNoFD flag and no fd attached
		},
	} {
		t.Run(name, func(t *testing.T) {
			b, c := frontEnd(t)
			msg(c)
			select {
			case <-b.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("back-end still serving")
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Error("connection still open")
			}
		})
	}
}
