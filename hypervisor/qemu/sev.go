package qemu

import (
	"context"
	"encoding/base64"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor/tee"
)

// SEV and SEV-ES have no hardware-rooted remote attestation from inside the
// guest; the guest owner attests the launch instead: QEMU starts with the
// vCPUs stopped, the host reads the launch measurement, the owner checks it
// and answers with a secret wrapped for this launch, which QEMU injects into
// guest memory before the vCPUs run. go-qemu has no SEV commands, so they go
// as raw QMP JSON.

// SetStartPaused makes Start launch QEMU with its vCPUs stopped (-S); the
// guest runs after Resume. Call before Start.
func (v *VM) SetStartPaused(paused bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.plan.paused = paused
}

// SEVLaunchMeasure returns the launch measurement of a paused SEV or
// SEV-ES guest (QMP query-sev-launch-measure), base64 as QEMU gives it.
func (v *VM) SEVLaunchMeasure(ctx context.Context) ([]byte, error) {
	if err := v.sevOnly("launch measure"); err != nil {
		return nil, err
	}
	mon, err := v.monitorFor("query-sev-launch-measure")
	if err != nil {
		return nil, err
	}
	var r struct {
		Data string `json:"data"`
	}
	if err := mon.run(ctx, "query-sev-launch-measure", nil, &r); err != nil {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		return nil, fmt.Errorf("query-sev-launch-measure: data is not base64: %w", err)
	}
	return b, nil
}

// SEVInjectLaunchSecret injects the guest owner's secret (QMP
// sev-inject-launch-secret). header and secret are the owner's packet
// header and encrypted secret; gpa is the guest physical address, or 0 for
// the firmware's secret area.
func (v *VM) SEVInjectLaunchSecret(ctx context.Context, header, secret []byte, gpa uint64) error {
	if err := v.sevOnly("inject launch secret"); err != nil {
		return err
	}
	if len(header) == 0 || len(secret) == 0 {
		return fmt.Errorf("%w: sev-inject-launch-secret needs a packet header and a secret", errdefs.ErrInvalidArgument)
	}
	mon, err := v.monitorFor("sev-inject-launch-secret")
	if err != nil {
		return err
	}
	args := map[string]any{
		"packet-header": base64.StdEncoding.EncodeToString(header),
		"secret":        base64.StdEncoding.EncodeToString(secret),
	}
	if gpa != 0 {
		args["gpa"] = gpa
	}
	return mon.run(ctx, "sev-inject-launch-secret", args, nil)
}

// sevOnly refuses the SEV launch flow for other TEEs: SNP and TDX attest
// from inside the guest, and without a TEE there is nothing to attest.
// A VM with no TEE is let through for the QMP plumbing tests (QEMU itself
// then answers that SEV is not enabled).
func (v *VM) sevOnly(what string) error {
	switch v.plan.tee.Kind {
	case tee.SEV, tee.SEVES, tee.None:
		return nil
	}
	return fmt.Errorf("%w: %s: tee.kind %q attests from inside the guest; the SEV launch flow is for \"sev\" and \"sev-es\"",
		errdefs.ErrFailedPrecondition, what, v.plan.tee.Kind)
}
