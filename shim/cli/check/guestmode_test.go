package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/guest-assets/initrd"
	"github.com/coco-runtime/coco/hypervisor/tee"
)

// writeInitrd writes a small newc image, with the TEE marker or without,
// plus a large file so the marker does not sit in the first read.
func writeInitrd(t *testing.T, name string, marked bool, compression string) string {
	t.Helper()
	entries := []initrd.Entry{
		initrd.Dir("/etc", 0o755),
		{Path: "/big", Mode: 0o644, Data: make([]byte, 3<<20)},
		{Path: "/etc/coco/kernel.release", Mode: 0o644, Data: []byte("6.1\n")},
	}
	if marked {
		entries = append(entries, initrd.Entry{Path: "/etc/coco/tee", Mode: 0o644, Data: []byte("tee\n")})
	}
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := initrd.Write(f, entries, compression); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestGuestModeMatchesTheClass(t *testing.T) {
	for _, tc := range []struct {
		name        string
		kind        tee.Kind
		marked      bool
		compression string
		want        status
		says        string
	}{
		{"TEE class, TEE initrd", tee.SNP, true, initrd.None, statusOK, "fails closed"},
		{"TEE class, TEE initrd, gzip", tee.TDX, true, "gzip", statusOK, "fails closed"},
		{"TEE class, plain initrd", tee.SNP, false, initrd.None, statusFail, "host's word"},
		{"TEE class, plain initrd, gzip", tee.SEV, false, "gzip", statusFail, "host's word"},
		{"plain class, TEE initrd", tee.None, true, initrd.None, statusWarn, "refuses every pod"},
		{"plain class, plain initrd", tee.None, false, initrd.None, statusOK, "plain guest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &configs.Config{}
			cfg.Hypervisor.Initrd = writeInitrd(t, "initrd.img", tc.marked, tc.compression)
			facts := guestMode(cfg, tc.kind)
			if len(facts) != 1 || facts[0].status != tc.want || !strings.Contains(facts[0].detail, tc.says) {
				t.Fatalf("facts = %+v, want %v saying %q", facts, tc.want, tc.says)
			}
		})
	}
}

// The marker's name split across two reads is still found.
func TestContainsStreamAcrossReads(t *testing.T) {
	needle := []byte(teeMarkerName)
	data := make([]byte, 1<<20-5)
	data = append(data, needle...)
	data = append(data, make([]byte, 100)...)
	got, err := containsStream(strings.NewReader(string(data)), needle)
	if err != nil || !got {
		t.Fatalf("containsStream = %v, %v", got, err)
	}
	got, _ = containsStream(strings.NewReader(string(data[:len(data)-110])), needle)
	if got {
		t.Fatal("found a needle cut short")
	}
}
