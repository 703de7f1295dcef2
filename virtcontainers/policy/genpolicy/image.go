package genpolicy

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// ImageConfig is what the policy needs from an image: what containerd
// merges into the container's process, and the manifest digest a tag
// resolved to.
type ImageConfig struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	WorkingDir string
	Volumes    []string // VOLUME destinations, sorted
	Digest     string   // "sha256:..." of the manifest (or index) the name resolves to
}

// Images finds image configs by reference (as the pod spec writes it).
type Images interface {
	Config(ctx context.Context, ref string) (*ImageConfig, error)
}

// Registry reads images from their registries (credentials from the
// Docker config, as docker and crane find them).
type Registry struct{}

// Config implements Images.
func (Registry) Config(ctx context.Context, ref string) (*ImageConfig, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", ref, err)
	}
	desc, err := remote.Get(r, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}))
	if err != nil {
		return nil, fmt.Errorf("image %q: %w (offline: give an OCI layout with --image-layout)", ref, err)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", ref, err)
	}
	return configOf(ref, img, desc.Digest.String())
}

// Layout reads images from an OCI image layout directory (offline use):
// an image is found by its io.containerd.image.name or
// org.opencontainers.image.ref.name annotation (full name or tag), or by
// the digest in the reference.
type Layout struct{ Dir string }

// Config implements Images.
func (l Layout) Config(_ context.Context, ref string) (*ImageConfig, error) {
	idx, err := layout.ImageIndexFromPath(l.Dir)
	if err != nil {
		return nil, fmt.Errorf("image layout %s: %w", l.Dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image layout %s: %w", l.Dir, err)
	}
	full, tag, dgst := refParts(ref)
	var found *v1.Descriptor
	for i, d := range m.Manifests {
		n, r := d.Annotations["io.containerd.image.name"], d.Annotations["org.opencontainers.image.ref.name"]
		if (dgst != "" && d.Digest.String() == dgst) || (n != "" && (n == ref || n == full)) ||
			(r != "" && (r == ref || r == full || (tag != "" && r == tag))) {
			found = &m.Manifests[i]
			break
		}
	}
	if found == nil {
		return nil, fmt.Errorf("image %q: not in the image layout %s", ref, l.Dir)
	}
	var img v1.Image
	if found.MediaType.IsIndex() {
		child, err := idx.ImageIndex(found.Digest)
		if err != nil {
			return nil, fmt.Errorf("image %q: %w", ref, err)
		}
		if img, err = platformImage(child); err != nil {
			return nil, fmt.Errorf("image %q: %w", ref, err)
		}
	} else if img, err = idx.Image(found.Digest); err != nil {
		return nil, fmt.Errorf("image %q: %w", ref, err)
	}
	return configOf(ref, img, found.Digest.String())
}

func platformImage(idx v1.ImageIndex) (v1.Image, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range m.Manifests {
		if d.Platform != nil && d.Platform.OS == "linux" && d.Platform.Architecture == runtime.GOARCH {
			return idx.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("no linux/%s image in the index", runtime.GOARCH)
}

func configOf(ref string, img v1.Image, digest string) (*ImageConfig, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %q: config: %w", ref, err)
	}
	c := cf.Config
	vols := make([]string, 0, len(c.Volumes))
	for v := range c.Volumes {
		vols = append(vols, v)
	}
	slices.Sort(vols)
	return &ImageConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, User: c.User, WorkingDir: c.WorkingDir, Volumes: vols, Digest: digest}, nil
}

// refParts returns the normalized name as containerd records it
// ("docker.io/library/busybox:1.36", ":latest" added to a bare name), the
// tag, and the digest in ref. (go-containerregistry spells Docker Hub
// "index.docker.io"; containerd and the kubelet say "docker.io".)
func refParts(ref string) (full, tag, digest string) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return ref, "", ""
	}
	repo := repoName(r.Context())
	switch v := r.(type) {
	case name.Digest:
		digest = v.DigestStr()
		if i := strings.LastIndex(ref, "@"); i >= 0 {
			if t, err := name.NewTag(ref[:i]); err == nil && strings.Contains(ref[:i], ":") && t.TagStr() != "" {
				tag = t.TagStr()
			}
		}
		if tag != "" {
			return repo + ":" + tag + "@" + digest, tag, digest
		}
		return repo + "@" + digest, "", digest
	case name.Tag:
		tag = v.TagStr()
	}
	return repo + ":" + tag, tag, digest
}

func repoName(r name.Repository) string {
	reg := r.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + r.RepositoryStr()
}

// familiar is the short Docker Hub form ("busybox" for
// docker.io/library/busybox), or the full repository name.
func familiar(r name.Repository) string {
	full := repoName(r)
	if rest, ok := strings.CutPrefix(full, "docker.io/"); ok {
		return strings.TrimPrefix(rest, "library/")
	}
	return full
}

// imageNames are the values io.kubernetes.cri.image-name may take for ref:
// the kubelet passes the image as the pod spec writes it
// (UserSpecifiedImage), an older kubelet lets containerd name it by the
// normalized name it was pulled as.
func imageNames(ref string) []string {
	full, _, _ := refParts(ref)
	if full == ref {
		return []string{ref}
	}
	return []string{ref, full}
}

// pullRefs are the references a guest pull may use for ref: only ones
// that carry the manifest digest, so what the guest pulls is what the
// owner's generator saw. "" digest: unknown, nothing is allowed.
func pullRefs(ref, digest string) []string {
	if digest == "" {
		return []string{}
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return []string{}
	}
	out := []string{repoName(r.Context()) + "@" + digest}
	if short := familiar(r.Context()) + "@" + digest; short != out[0] {
		out = append(out, short)
	}
	return out
}
