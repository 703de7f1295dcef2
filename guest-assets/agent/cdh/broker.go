package cdh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/guest-assets/agent/attest"
	"github.com/coco-runtime/coco/hypervisor/tee"
	"github.com/coco-runtime/coco/virtcontainers/initdata"
)

// Attester picks the evidence this guest gives the KBS from what its
// measured boot found: the TEE whose report bound the init-data, or the
// documented sample evidence in a guest without a TEE (coco-dev). The host
// never chooses it.
func Attester(kind tee.Kind, teeGuest bool) (attest.Attester, error) {
	switch {
	case kind == tee.SNP:
		return attest.NewSNP(), nil
	case kind == tee.TDX:
		return attest.NewTDX(), nil
	case teeGuest:
		return nil, fmt.Errorf("TEE guest without a report interface the attestation client knows (%q): %w", kind, errdefs.ErrNotImplemented)
	}
	return attest.Sample{}, nil
}

// NewBroker returns the attestation client the owner's init-data
// configures (aa.toml, cdh.toml; id nil when the pod has none). A pod
// without a KBS gets a broker that says so on every request.
func NewBroker(id *initdata.InitData, a attest.Attester) (Broker, error) {
	var aa, cdh []byte
	text := ""
	if id != nil {
		if v, ok := id.Data[initdata.KeyAA]; ok {
			aa = []byte(v)
		}
		if v, ok := id.Data[initdata.KeyCDH]; ok {
			cdh = []byte(v)
		}
		text = string(id.Raw())
	}
	s, err := attest.NewService(aa, cdh, a, text)
	if err != nil {
		return nil, err
	}
	return serviceBroker{s}, nil
}

// serviceBroker gives attest.Service's errors the errdefs classes the hub
// turns into HTTP statuses.
type serviceBroker struct{ s *attest.Service }

func (b serviceBroker) Tee() string { return b.s.Tee() }

func (b serviceBroker) Resource(ctx context.Context, path string) ([]byte, error) {
	d, err := b.s.Resource(ctx, path)
	return d, classify(err)
}

func (b serviceBroker) Token(ctx context.Context) ([]byte, error) {
	t, err := b.s.Token(ctx)
	if err != nil {
		return nil, classify(err)
	}
	// The token alone: the guest's private key never leaves the client.
	return json.Marshal(map[string]string{"token": t})
}

func (b serviceBroker) Evidence(ctx context.Context, runtimeData []byte) ([]byte, error) {
	ev, err := b.s.Evidence(ctx, runtimeData)
	return ev, classify(err)
}

func (b serviceBroker) Unseal(ctx context.Context, sealed string) ([]byte, error) {
	d, err := b.s.Unseal(ctx, sealed)
	return d, classify(err)
}

// classify gives an attestation client's error its errdefs class. The
// class ends a single chain (not "%w: %w"): errgrpc sends each of several
// wrapped errors as a detail, which would come back as extra lines in the
// CRI error.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var (
		refused     *attest.RefusedError
		resource    *attest.ResourceError
		unreachable *attest.UnreachableError
		sealed      *attest.SealedError
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, attest.ErrNoKBS):
		return fmt.Errorf("%s: %w", err, errdefs.ErrFailedPrecondition)
	case errors.As(err, &refused):
		return fmt.Errorf("%s: %w", err, errdefs.ErrPermissionDenied)
	case errors.As(err, &resource):
		if resource.Status == 404 {
			return fmt.Errorf("%s: %w", err, errdefs.ErrNotFound)
		}
		return fmt.Errorf("%s: %w", err, errdefs.ErrPermissionDenied)
	case errors.As(err, &unreachable):
		return fmt.Errorf("%s: %w", err, errdefs.ErrUnavailable)
	case errors.As(err, &sealed):
		return fmt.Errorf("%s: %w", err, errdefs.ErrInvalidArgument)
	}
	return err
}

// Owned is what the owner's init-data configures for the pod's secrets
// and images.
type Owned struct {
	Broker Broker
	Image  *ImageSettings
}

// NewOwned reads the owner's init-data (id nil when the pod has none):
// the attestation client and the image settings of cdh.toml.
func NewOwned(id *initdata.InitData, a attest.Attester) (*Owned, error) {
	b, err := NewBroker(id, a)
	if err != nil {
		return nil, err
	}
	img := &ImageSettings{}
	if id != nil {
		if img, err = ParseImageSettings([]byte(id.Data[initdata.KeyCDH])); err != nil {
			return nil, err
		}
	}
	return &Owned{Broker: b, Image: img}, nil
}

// Pending is what a hub and the container manager start with: requests
// wait until the owner's init-data is loaded and what it configures is set.
type Pending struct {
	once  sync.Once
	ready chan struct{}
	owned *Owned
	err   error
}

// NewPending returns a Pending not yet set.
func NewPending() *Pending { return &Pending{ready: make(chan struct{})} }

// Set sets what the owner configured, or why there is nothing; only the
// first call counts.
func (p *Pending) Set(o *Owned, err error) {
	p.once.Do(func() {
		p.owned, p.err = o, err
		close(p.ready)
	})
}

// Owned waits for Set.
func (p *Pending) Owned(ctx context.Context) (*Owned, error) {
	select {
	case <-p.ready:
		return p.owned, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Get waits for Set and returns the broker.
func (p *Pending) Get(ctx context.Context) (Broker, error) {
	o, err := p.Owned(ctx)
	if err != nil {
		return nil, err
	}
	return o.Broker, nil
}

// Unseal unseals through the broker once it is set.
func (p *Pending) Unseal(ctx context.Context, sealed string) ([]byte, error) {
	b, err := p.Get(ctx)
	if err != nil {
		return nil, err
	}
	return b.Unseal(ctx, sealed)
}
