package api

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestStreamHeaderRoundTrip(t *testing.T) {
	for _, h := range []StreamHeader{
		{ContainerID: "c1", Kind: StreamStdout},
		{ContainerID: "c1", ExecID: "exec-7", Kind: StreamStdin},
	} {
		line := h.String()
		if !strings.HasSuffix(line, "\n") {
			t.Fatalf("%q lacks the newline", line)
		}
		got, err := ParseStreamHeader(line)
		if err != nil || got != h {
			t.Errorf("ParseStreamHeader(%q) = %+v, %v; want %+v", line, got, err, h)
		}
	}
	if got := (StreamHeader{ContainerID: "c", Kind: "stderr"}).String(); got != "STREAM c - stderr\n" {
		t.Errorf("init header = %q", got)
	}
}

func TestStreamHeaderRejects(t *testing.T) {
	for _, line := range []string{
		"", "STREAM\n", "STREAM c1 - stdout extra\n", "stream c1 - stdout\n",
		"STREAM ../x - stdout\n", "STREAM c1 - stdlog\n", "STREAM c1  stdout\n",
		"STREAM c1 - " + strings.Repeat("x", MaxStreamHeader) + "\n",
	} {
		if _, err := ParseStreamHeader(line); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseStreamHeader(%q) err = %v, want InvalidArgument", line, err)
		}
	}
}

func TestValidateRequests(t *testing.T) {
	okBlock := &Rootfs{Source: &Rootfs_Block{Block: &BlockDevice{Serial: "r1", Fstype: "erofs"}}}
	cases := []struct {
		name  string
		req   interface{ Validate() error }
		field string // "" = valid
	}{
		{"setup ok", &SetupSandboxRequest{SandboxId: "pod-1", Hostname: "web-0", Sysctls: map[string]string{"kernel.shm_rmid_forced": "1"}}, ""},
		{"setup bad id", &SetupSandboxRequest{SandboxId: "a/b"}, "sandbox_id"},
		{"setup bad hostname", &SetupSandboxRequest{SandboxId: "p", Hostname: "-x"}, "hostname"},
		{"setup sysctl escape", &SetupSandboxRequest{SandboxId: "p", Sysctls: map[string]string{"../../etc/x": "1"}}, "sysctls"},
		{"setup sysctl newline", &SetupSandboxRequest{SandboxId: "p", Sysctls: map[string]string{"kernel.x": "1\n2"}}, "sysctls[kernel.x]"},
		{"prepare ok", &PrepareContainerRequest{ContainerId: "c", Spec: []byte("{}"), Rootfs: okBlock}, ""},
		{"prepare no spec", &PrepareContainerRequest{ContainerId: "c", Rootfs: okBlock}, "spec"},
		{"prepare no rootfs", &PrepareContainerRequest{ContainerId: "c", Spec: []byte("{}")}, "rootfs"},
		{"prepare bad serial", &PrepareContainerRequest{ContainerId: "c", Spec: []byte("{}"),
			Rootfs: &Rootfs{Source: &Rootfs_Block{Block: &BlockDevice{Serial: "../../sda"}}}}, "rootfs.block.serial"},
		{"prepare ext4", &PrepareContainerRequest{ContainerId: "c", Spec: []byte("{}"),
			Rootfs: &Rootfs{Source: &Rootfs_Block{Block: &BlockDevice{Serial: "r1", Fstype: "ext4"}}}}, "rootfs.block.fstype"},
		{"prepare agent rootfs for app", &PrepareContainerRequest{ContainerId: "c", Spec: []byte("{}"),
			Rootfs: &Rootfs{Source: &Rootfs_Agent{}}}, "rootfs"},
		{"prepare relative file", &PrepareContainerRequest{ContainerId: "c", Spec: []byte("{}"), Rootfs: okBlock,
			Files: []*File{{Destination: "etc/hosts"}}}, "files[0].destination"},
		{"prepare setuid file", &PrepareContainerRequest{ContainerId: "c", Spec: []byte("{}"), Rootfs: okBlock,
			Files: []*File{{Destination: "/etc/hosts", Mode: 0o4755}}}, "files[0].mode"},
		{"prepare duplicate file", &PrepareContainerRequest{ContainerId: "c", Spec: []byte("{}"), Rootfs: okBlock,
			Files: []*File{{Destination: "/a"}, {Destination: "/a"}}}, "files[1].destination"},
		{"policy too big", &SetPolicyRequest{Policy: strings.Repeat("x", MaxPolicyBytes+1)}, "policy"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.req.Validate()
			if c.field == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if !errdefs.IsInvalidArgument(err) || !strings.HasPrefix(err.Error(), c.field+":") {
				t.Errorf("err = %v, want InvalidArgument starting with %q", err, c.field)
			}
		})
	}
}

func FuzzParseStreamHeader(f *testing.F) {
	f.Add("STREAM c1 - stdout\n")
	f.Add("STREAM c1 e1 stdin\n")
	f.Add("STREAM \x00 - stderr")
	f.Fuzz(func(t *testing.T, line string) {
		h, err := ParseStreamHeader(line)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		// A parsed header formats back to a line that parses to itself,
		// and its ids are safe path elements.
		again, err := ParseStreamHeader(h.String())
		if err != nil || again != h {
			t.Fatalf("round trip of %q: %+v, %v", line, again, err)
		}
		if strings.ContainsAny(h.ContainerID+h.ExecID, "/ \n") || strings.HasPrefix(h.ContainerID, ".") {
			t.Fatalf("unsafe id in %+v", h)
		}
	})
}
