package attest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Service is what the agent holds for a pod: the guest's attestation
// client behind the CoCo workload API (/cdh/resource, /aa/token,
// /aa/evidence) and sealed-secret unsealing. It is safe for concurrent use;
// requests that need a token share one attestation at a time.
//
// A Service without a KBS (the init-data configures none) still answers
// Evidence and Tee; Resource, Token and Unseal then fail with an error
// wrapping ErrNoKBS that says which init-data entry to add.
type Service struct {
	attester Attester
	client   *Client // nil without a KBS
	noKBS    error
}

// NewService builds the service from the owner's init-data entries aa.toml
// and cdh.toml (nil when absent), the attester the measured boot chose, and
// the exact init-data TOML text ("" when the pod has none). Only a
// malformed configuration is an error; no KBS is not.
func NewService(aaTOML, cdhTOML []byte, attester Attester, initData string, opts ...Option) (*Service, error) {
	if attester == nil {
		return nil, errors.New("attest: no attester")
	}
	cfg, err := LoadConfig(aaTOML, cdhTOML)
	if errors.Is(err, ErrNoKBS) {
		return &Service{attester: attester, noKBS: err}, nil
	}
	if err != nil {
		return nil, err
	}
	c, err := NewClient(cfg, attester, initData, opts...)
	if err != nil {
		return nil, err
	}
	return &Service{attester: attester, client: c}, nil
}

// Tee is the attester's KBS tee name.
func (s *Service) Tee() string { return s.attester.Tee() }

// Resource returns the plaintext of a KBS resource (kbs:///repo/type/tag or
// repo/type/tag).
func (s *Service) Resource(ctx context.Context, uri string) ([]byte, error) {
	if s.client == nil {
		return nil, s.noKBS
	}
	return s.client.Resource(ctx, uri)
}

// Token returns the KBS attestation token (a JWT) alone.
//
// guest-components' AA GetToken("kbs"), which its REST server hands to any
// workload at /aa/token, returns {"token":..., "tee_keypair":"<private key
// PEM>"}: with it a workload, or whatever it leaks to, can decrypt every
// resource the KBS wraps to this guest. The private key stays in this
// package instead; a workload that needs a secret asks for it through
// Resource. A caller serving /aa/token should return {"token": <this>}.
func (s *Service) Token(ctx context.Context) (string, error) {
	if s.client == nil {
		return "", s.noKBS
	}
	return s.client.Token(ctx)
}

// Evidence returns the attester's evidence for runtimeData (at most 64
// bytes, placed into the report as given and zero-padded for SNP/TDX), as
// AA's GetEvidence does: no KBS involved.
func (s *Service) Evidence(ctx context.Context, runtimeData []byte) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(runtimeData) > 64 {
		return nil, fmt.Errorf("runtime data is %d bytes, at most 64", len(runtimeData))
	}
	return s.attester.Evidence(runtimeData)
}

// Unseal opens a sealed secret (see Client.Unseal).
func (s *Service) Unseal(ctx context.Context, sealed string) ([]byte, error) {
	if s.client == nil {
		return nil, s.noKBS
	}
	return s.client.Unseal(ctx, sealed)
}
