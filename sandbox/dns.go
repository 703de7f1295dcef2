package sandbox

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// DNSConfig is the pod's CRI dns_config.
type DNSConfig struct {
	Servers, Searches, Options []string
}

const resolvConfPath = "/etc/resolv.conf"

// resolvConf renders the pod's resolv.conf, as containerd does for runc
// pods. Every entry must be one word: a newline would add lines of its own.
func (d *DNSConfig) resolvConf() (string, error) {
	if d == nil {
		return "", nil
	}
	var b strings.Builder
	word := func(field string, i int, s string) error {
		if s == "" || strings.ContainsAny(s, " \t\r\n\x00#;") {
			return fmt.Errorf("dns_config.%s[%d] = %q: want one word: %w", field, i, s, errdefs.ErrInvalidArgument)
		}
		return nil
	}
	for i, s := range d.Servers {
		if _, err := netip.ParseAddr(s); err != nil {
			return "", fmt.Errorf("dns_config.servers[%d] = %q: not an IP address: %w", i, s, errdefs.ErrInvalidArgument)
		}
	}
	for i, s := range d.Searches {
		if err := word("searches", i, s); err != nil {
			return "", err
		}
	}
	for i, s := range d.Options {
		if err := word("options", i, s); err != nil {
			return "", err
		}
	}
	if len(d.Searches) > 0 {
		b.WriteString("search " + strings.Join(d.Searches, " ") + "\n")
	}
	for _, s := range d.Servers {
		b.WriteString("nameserver " + s + "\n")
	}
	if len(d.Options) > 0 {
		b.WriteString("options " + strings.Join(d.Options, " ") + "\n")
	}
	return b.String(), nil
}

// addResolvConf gives a container of a sandbox-API pod the pod's
// resolv.conf. containerd mounts one only when its own sandbox controller
// wrote it on the host; under the sandbox API that is ours to provide. A
// container that mounts its own keeps it.
func (s *vmSandbox) addResolvConf(prep *api.PrepareContainerRequest, sp *specs.Spec) error {
	if !s.opts.SandboxAPI || s.opts.DNS == nil {
		return nil
	}
	for _, m := range sp.Mounts {
		if m.Destination == resolvConfPath {
			return nil
		}
	}
	content, err := s.opts.DNS.resolvConf()
	if err != nil {
		return err
	}
	// The spec is edited as a document, so that fields this build's
	// runtime-spec does not know survive.
	var doc map[string]any
	if err := json.Unmarshal(prep.Spec, &doc); err != nil {
		return fmt.Errorf("container %s: spec: %w", prep.ContainerId, err)
	}
	mounts, _ := doc["mounts"].([]any)
	doc["mounts"] = append(mounts, map[string]any{
		"destination": resolvConfPath, "type": "bind", "source": resolvConfPath,
		"options": []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
	})
	if prep.Spec, err = json.Marshal(doc); err != nil {
		return err
	}
	prep.Files = append(prep.Files, &api.File{Destination: resolvConfPath, Content: []byte(content), Mode: 0o644})
	return nil
}
