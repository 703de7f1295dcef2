package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// PullOptions are the caller's choices for one pull. Everything here must
// come from the owner (init-data, the KBS, the agent policy), not the host.
type PullOptions struct {
	Registry
	// Policy decides whether the image may run; nil accepts every image
	// (the agent should log that no policy is configured).
	Policy *Policy
	// Keys fetches KBS resources: key-encryption keys of encrypted layers
	// and kbs:/// public keys of the policy. nil: encrypted layers and
	// kbs:/// keyPaths are refused.
	Keys KeyFetcher
	// Jobs bounds concurrent layer downloads (default 3).
	Jobs int
	// Platform selects from an index (default linux/GOARCH).
	Platform *v1.Platform
}

// Config is the part of the image configuration the agent checks the OCI
// spec against.
type Config struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	WorkingDir string
	StopSignal string
	Volumes    []string
	Labels     map[string]string
}

// Image is a pulled image: verified, unpacked, ready to mount.
type Image struct {
	// Reference is the reference as pulled, normalised (e.g.
	// "index.docker.io/library/busybox:1.36").
	Reference string
	// Digest is what the reference resolved to: the index digest for a
	// multi-platform image, else the manifest digest. A tag's digest is
	// reported here so the caller can log and pin it.
	Digest string
	// ManifestDigest is the digest of the platform's image manifest.
	ManifestDigest string
	Config         Config
	// Layers are the unpacked layer directories, bottom layer first.
	Layers []string
	// Verified says which policy requirement admitted the image, e.g.
	// `sigstoreSigned (scope "registry/repo")`, or "no policy".
	Verified string
}

// LowerDir is the overlayfs lowerdir option for the image: the top layer
// first, as overlayfs wants.
func (im *Image) LowerDir() string {
	dirs := make([]string, len(im.Layers))
	for i, l := range im.Layers {
		dirs[len(im.Layers)-1-i] = l
	}
	return strings.Join(dirs, ":")
}

// Pull resolves ref, checks it against the policy, and unpacks its layers
// (those the store does not have yet) for the platform. Every blob's digest
// is checked: the manifest against a pinned digest, the config and layers
// against the manifest, the uncompressed layers against the config's diff_ids.
// Errors name the image, the registry, the layer digest and the reason.
func (s *Store) Pull(ctx context.Context, ref string, opts PullOptions) (*Image, error) {
	im, err := s.pull(ctx, ref, opts)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	return im, nil
}

func (s *Store) pull(ctx context.Context, ref string, opts PullOptions) (*Image, error) {
	start := time.Now()
	c, err := opts.Registry.client()
	if err != nil {
		return nil, err
	}
	r, err := c.parse(ref)
	if err != nil {
		return nil, err
	}
	registry := r.Context().RegistryStr()
	img, top, mdgst, err := resolve(ctx, c, r, platformOf(opts))
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", registry, err)
	}
	verified := "no policy"
	if opts.Policy != nil {
		verified, err = opts.Policy.check(ctx, &checkTarget{
			ref: r, digest: top, manifestDigest: mdgst, client: c, keys: opts.Keys,
		})
		if err != nil {
			return nil, err
		}
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("registry %s: manifest %s: %w", registry, mdgst, err)
	}
	cfg, err := readConfig(img, m)
	if err != nil {
		return nil, fmt.Errorf("registry %s: config %s: %w", registry, m.Config.Digest, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("registry %s: manifest %s lists %d layers but its config %d diff_ids", registry, mdgst, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	layers := make([]layerJob, len(m.Layers))
	for i, d := range m.Layers {
		kind, err := layerKind(string(d.MediaType))
		if err != nil {
			return nil, fmt.Errorf("registry %s: layer %s: %w", registry, d.Digest, err)
		}
		if kind.encrypted && opts.Keys == nil {
			return nil, fmt.Errorf("registry %s: layer %s is encrypted and the agent has no key source (KBS) configured", registry, d.Digest)
		}
		layers[i] = layerJob{desc: d, diffID: cfg.RootFS.DiffIDs[i].String(), kind: kind, registry: registry}
	}
	if err := s.fetchLayers(ctx, img, layers, opts); err != nil {
		return nil, err
	}
	im := &Image{
		Reference:      r.Name(),
		Digest:         top,
		ManifestDigest: mdgst,
		Config:         configOf(cfg),
		Verified:       verified,
	}
	for _, l := range layers {
		im.Layers = append(im.Layers, s.layerDir(l.desc.Digest.String()))
	}
	log.G(ctx).WithField("image", im.Reference).Infof("image pulled: %s, %d layers, %s (%s)", im.Digest, len(layers), time.Since(start).Round(time.Millisecond), verified)
	return im, nil
}

func platformOf(opts PullOptions) v1.Platform {
	if opts.Platform != nil {
		return *opts.Platform
	}
	return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

// resolve fetches the reference's manifest and, for an index, picks the
// platform's image. ggcr checks the manifest against a digest reference;
// the index's pick is fetched by digest, so it is checked too.
func resolve(ctx context.Context, c *remoteClient, r name.Reference, p v1.Platform) (v1.Image, string, string, error) {
	desc, err := remote.Get(r, c.options(ctx)...)
	if err != nil {
		return nil, "", "", err
	}
	top := desc.Digest.String()
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		if err != nil {
			return nil, "", "", fmt.Errorf("manifest %s: %w", top, err)
		}
		return img, top, top, nil
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, "", "", fmt.Errorf("index %s: %w", top, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, "", "", fmt.Errorf("index %s: %w", top, err)
	}
	var have []string
	for _, d := range im.Manifests {
		if d.Platform == nil {
			continue
		}
		if d.MediaType.IsImage() && d.Platform.OS == p.OS && d.Platform.Architecture == p.Architecture &&
			(p.Variant == "" || d.Platform.Variant == p.Variant) {
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, "", "", fmt.Errorf("index %s: manifest %s: %w", top, d.Digest, err)
			}
			return img, top, d.Digest.String(), nil
		}
		have = append(have, d.Platform.String())
	}
	return nil, "", "", fmt.Errorf("index %s has no %s image (it has: %s)", top, p.String(), strings.Join(have, ", "))
}

// readConfig fetches the config blob and checks its digest ourselves: the
// config carries the diff_ids every layer is checked against.
func readConfig(img v1.Image, m *v1.Manifest) (*v1.ConfigFile, error) {
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	if got := "sha256:" + hex.EncodeToString(sum[:]); m.Config.Digest.String() != got {
		return nil, fmt.Errorf("digest mismatch: got %s", got)
	}
	var cfg v1.ConfigFile
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&cfg); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func configOf(cfg *v1.ConfigFile) Config {
	c := cfg.Config
	out := Config{
		Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, User: c.User,
		WorkingDir: c.WorkingDir, StopSignal: c.StopSignal, Labels: c.Labels,
	}
	for v := range c.Volumes {
		out.Volumes = append(out.Volumes, v)
	}
	return out
}

// layerJob is one layer of the image being pulled.
type layerJob struct {
	desc     v1.Descriptor
	diffID   string
	kind     layerType
	registry string
}

// fetchLayers unpacks the layers the store lacks, at most opts.Jobs at a
// time; the first failure cancels the others.
func (s *Store) fetchLayers(ctx context.Context, img v1.Image, layers []layerJob, opts PullOptions) error {
	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = 3
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, jobs)
	errs := make([]error, len(layers))
	var wg sync.WaitGroup
	for i := range layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.ensureLayer(ctx, img, &layers[i], opts.Keys, sem); err != nil {
				errs[i] = err
				cancel()
			}
		}()
	}
	wg.Wait()
	// Report the first failure that is not another's cancellation.
	var first error
	for _, err := range errs {
		if err != nil && (first == nil || (ctx.Err() != nil && isCanceled(first) && !isCanceled(err))) {
			first = err
		}
	}
	return first
}

// ensureLayer makes sure the layer is in the store and is the one the config
// names.
func (s *Store) ensureLayer(ctx context.Context, img v1.Image, l *layerJob, keys KeyFetcher, sem chan struct{}) error {
	dgst := l.desc.Digest.String()
	e, mine := s.claim(dgst)
	if mine {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			s.finish(dgst, e, ctx.Err())
			return ctx.Err()
		}
		err := s.unpackLayer(ctx, img, l, keys, e)
		<-sem
		s.finish(dgst, e, err)
		if err != nil {
			return err
		}
	} else if err := e.wait(ctx); err != nil {
		return err
	}
	// The store holds one tree per blob digest; an image whose config
	// claims another diff_id for it is inconsistent.
	if e.diffID != l.diffID {
		return fmt.Errorf("registry %s: layer %s: uncompressed digest %s does not match the config's diff_id %s", l.registry, dgst, e.diffID, l.diffID)
	}
	return nil
}

func (s *Store) finish(dgst string, e *layerEntry, err error) {
	s.mu.Lock()
	e.err = err
	if err != nil {
		delete(s.layers, dgst)
	}
	s.mu.Unlock()
	close(e.done)
}
