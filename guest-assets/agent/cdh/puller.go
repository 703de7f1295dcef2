package cdh

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/coco-runtime/coco/guest-assets/agent/image"
)

// Puller pulls container images in the guest the way the owner's init-data
// says: the signature policy and the registry credentials are KBS
// resources (or inline), encrypted layers' keys come from the KBS, and
// only the registries the owner marked insecure are reached over plain
// HTTP. Nothing here comes from the host but the image reference, which
// the agent policy has judged (PrepareContainerRequest.rootfs.guest_pull).
type Puller struct {
	store    *image.Store
	broker   Broker
	settings *ImageSettings
}

// NewPuller returns a puller into store.
func NewPuller(store *image.Store, b Broker, s *ImageSettings) *Puller {
	if s == nil {
		s = &ImageSettings{}
	}
	return &Puller{store: store, broker: b, settings: s}
}

// Pull pulls ref and returns the overlayfs lowerdir of its layers.
func (p *Puller) Pull(ctx context.Context, ref string) (string, error) {
	start := time.Now()
	opts := image.PullOptions{
		Registry: image.Registry{PlainHTTP: p.settings.PlainHTTP},
		Keys:     p.broker.Resource,
	}
	var err error
	if opts.Policy, err = p.policy(ctx); err != nil {
		return "", err
	}
	if p.settings.CredentialsURI != "" {
		if opts.Credentials, err = p.broker.Resource(ctx, p.settings.CredentialsURI); err != nil {
			return "", fmt.Errorf("registry credentials (init-data cdh.toml image.authenticated_registry_credentials_uri): %w", err)
		}
	}
	im, err := p.store.Pull(ctx, ref, opts)
	if err != nil {
		return "", classifyPull(err)
	}
	log.G(ctx).WithField("image", im.Reference).WithField("digest", im.Digest).
		Infof("pulled in the guest in %.3fs: %d layers, %s; store holds %d bytes", time.Since(start).Seconds(), len(im.Layers), im.Verified, p.store.Used())
	lower := im.LowerDir()
	if lower == "" {
		return "", fmt.Errorf("image %s has no layers: %w", ref, errdefs.ErrInvalidArgument)
	}
	return lower, nil
}

// policy is the owner's signature policy: the KBS resource, else the
// inline one, else none (every image accepted, and the log says so).
func (p *Puller) policy(ctx context.Context) (*image.Policy, error) {
	text := []byte(p.settings.Policy)
	if p.settings.PolicyURI != "" {
		b, err := p.broker.Resource(ctx, p.settings.PolicyURI)
		if err != nil {
			return nil, fmt.Errorf("image signature policy (init-data cdh.toml image.image_security_policy_uri): %w", err)
		}
		text = b
	}
	if len(text) == 0 {
		log.G(ctx).Warn("no image signature policy in init-data (cdh.toml image.image_security_policy_uri): every image is accepted")
		return nil, nil
	}
	pol, err := image.ParsePolicy(text)
	if err != nil {
		return nil, fmt.Errorf("image signature policy: %s: %w", err, errdefs.ErrInvalidArgument)
	}
	return pol, nil
}

// classifyPull gives the pull's refusals the class the CRI error carries,
// at the end of one chain (see classify).
func classifyPull(err error) error {
	var (
		pol   *image.PolicyError
		key   *image.KeyError
		limit *image.LimitError
	)
	switch {
	case errdefs.IsNotFound(err) || errdefs.IsPermissionDenied(err) || errdefs.IsUnavailable(err) || errdefs.IsInvalidArgument(err):
		return err
	case errors.As(err, &pol), errors.As(err, &key):
		return fmt.Errorf("%s: %w", err, errdefs.ErrPermissionDenied)
	case errors.As(err, &limit):
		return fmt.Errorf("%s: %w", err, errdefs.ErrResourceExhausted)
	}
	return err
}
