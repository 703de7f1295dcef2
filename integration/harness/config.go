//go:build integration

package harness

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Handler is one CRI runtime handler (a Kubernetes RuntimeClass handler).
type Handler struct {
	Name        string
	RuntimeType string // e.g. io.containerd.coco.v2
	// Sandboxer is "" (containerd's default "podsandbox": a pause container)
	// or "shim" (the shim serves the sandbox API itself).
	Sandboxer      string
	PodAnnotations []string
	// Options are the runtime options handed to the shim (ConfigPath for coco).
	Options map[string]string
	// Snapshotter is the handler's snapshotter: "" (the default,
	// overlayfs) or CocoSnapshotter (guest pull).
	Snapshotter string
	// RuntimePath, when set, is the shim binary containerd runs (a
	// wrapper giving one handler its own environment).
	RuntimePath string
}

// CocoSnapshotter is the proxy snapshotter's name in containerd's config.
const CocoSnapshotter = "coco"

// snapshotterSocket is where the harness runs coco-snapshotter.
func snapshotterSocket(root string) string { return filepath.Join(root, "coco-snapshotter.sock") }

// RegistryHostsDir holds containerd's per-registry hosts.toml files
// (certs.d layout), e.g. for a plain-HTTP test registry.
func RegistryHostsDir(root string) string { return filepath.Join(root, "certs.d") }

// RuncHandler is containerd's own runc shim: the same-run baseline.
func RuncHandler() Handler {
	return Handler{Name: "runc", RuntimeType: "io.containerd.runc.v2"}
}

// CocoHandler registers our shim under name with the given config file
// ("" = the shim's embedded default) and sandboxer ("" or "shim").
func CocoHandler(name, configPath, sandboxer string) Handler {
	h := Handler{
		Name:        name,
		RuntimeType: "io.containerd.coco.v2",
		Sandboxer:   sandboxer,
		// emptydir.coco-runtime.io/<volume> sizes a pod's emptyDir in the
		// guest (the CRI does not carry sizeLimit).
		PodAnnotations: []string{"io.katacontainers.*", "emptydir.coco-runtime.io/*"},
	}
	if configPath != "" {
		h.Options = map[string]string{"ConfigPath": configPath}
	}
	return h
}

// CocoDevConfig is the coco-dev runtime class config inside the repository.
func CocoDevConfig(repo string) string {
	return filepath.Join(repo, "configs", "configuration-qemu-coco-dev.toml")
}

// network is the test-only CNI network of one harness instance.
type network struct {
	Name   string
	Bridge string
	Subnet string
}

// renderConfig writes containerd's config (version 3). Everything containerd
// owns lives under root so that teardown is one recursive unmount + remove.
func renderConfig(root, sandboxImage string, handlers []Handler, netw network) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("version = 3")
	p("root = %s", q(filepath.Join(root, "root")))
	p("state = %s", q(filepath.Join(root, "state")))
	// NRI would listen on a fixed host path shared with any other containerd.
	p("disabled_plugins = [%s]", q("io.containerd.nri.v1.nri"))
	p("")
	p("[grpc]")
	p("  address = %s", q(filepath.Join(root, "containerd.sock")))
	p("[ttrpc]")
	p("  address = %s", q(filepath.Join(root, "containerd.sock.ttrpc")))
	p("")
	p(`[plugins."io.containerd.shim.v1.manager"]`)
	p("  socket_dir = %s", q(filepath.Join(root, "s")))
	p("")
	p(`[plugins."io.containerd.grpc.v1.cri"]`)
	p("  stream_server_address = %s", q("127.0.0.1"))
	p("  stream_server_port = %s", q("0"))
	p("")
	p(`[plugins."io.containerd.cri.v1.images"]`)
	p("  snapshotter = %s", q("overlayfs"))
	p(`  [plugins."io.containerd.cri.v1.images".registry]`)
	p("    config_path = %s", q(RegistryHostsDir(root)))
	p(`  [plugins."io.containerd.cri.v1.images".pinned_images]`)
	p("    sandbox = %s", q(sandboxImage))
	p("")
	p(`[plugins."io.containerd.cri.v1.runtime"]`)
	// These machines lack CAP_SYS_RESOURCE: runc cannot lower the sandbox's
	// oom_score_adj to -998 and the pod would fail to start.
	p("  restrict_oom_score_adj = true")
	p("  netns_mounts_under_state_dir = true")
	p(`  [plugins."io.containerd.cri.v1.runtime".cni]`)
	p("    bin_dirs = [%s]", q("/usr/lib/cni"))
	p("    conf_dir = %s", q(filepath.Join(root, "cni")))
	p("    max_conf_num = 1")
	p(`  [plugins."io.containerd.cri.v1.runtime".containerd]`)
	p("    default_runtime_name = %s", q("runc"))
	for _, h := range handlers {
		key := fmt.Sprintf(`plugins."io.containerd.cri.v1.runtime".containerd.runtimes.%s`, q(h.Name))
		p("    [%s]", key)
		p("      runtime_type = %s", q(h.RuntimeType))
		if h.RuntimePath != "" {
			p("      runtime_path = %s", q(h.RuntimePath))
		}
		if h.Sandboxer != "" {
			p("      sandboxer = %s", q(h.Sandboxer))
		}
		if h.Snapshotter != "" {
			p("      snapshotter = %s", q(h.Snapshotter))
		}
		if len(h.PodAnnotations) > 0 {
			p("      pod_annotations = [%s]", qlist(h.PodAnnotations))
		}
		if len(h.Options) > 0 {
			p("      [%s.options]", key)
			keys := make([]string, 0, len(h.Options))
			for k := range h.Options {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				p("        %s = %s", k, q(h.Options[k]))
			}
		}
	}
	if usesSnapshotter(handlers, CocoSnapshotter) {
		p("")
		p("[proxy_plugins.%s]", q(CocoSnapshotter))
		p("  type = %s", q("snapshot"))
		p("  address = %s", q(snapshotterSocket(root)))
		// CRI pulls through the transfer service, which unpacks only into
		// the snapshotters listed here (the default lists overlayfs alone).
		// The walking differ never runs for coco: no layer is applied.
		p("")
		p(`[plugins."io.containerd.transfer.v1.local"]`)
		for _, sn := range []string{"overlayfs", CocoSnapshotter} {
			p(`  [[plugins."io.containerd.transfer.v1.local".unpack_config]]`)
			p("    platform = %s", q("linux/amd64"))
			p("    snapshotter = %s", q(sn))
			p("    differ = %s", q("walking"))
		}
	}
	return b.String()
}

func usesSnapshotter(handlers []Handler, name string) bool {
	for _, h := range handlers {
		if h.Snapshotter == name {
			return true
		}
	}
	return false
}

// renderCNI is a bridge + host-local network. The loopback plugin is not in the
// chain (it would be handed eth0): containerd runs /usr/lib/cni/loopback for
// "lo" by itself before this network.
func renderCNI(root string, n network) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       n.Name,
		"plugins": []any{
			map[string]any{
				"type":      "bridge",
				"bridge":    n.Bridge,
				"isGateway": true,
				"ipMasq":    false,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": n.Subnet}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": filepath.Join(root, "cni-ipam"),
				},
			},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// q quotes a TOML basic string; the paths and names here are plain ASCII, for
// which Go's escapes are TOML's.
func q(s string) string { return strconv.Quote(s) }

func qlist(ss []string) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = q(s)
	}
	return strings.Join(out, ", ")
}
