package initdata

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor/tee"
)

// GuestDir is where the guest publishes init-data for the attestation agent
// and the confidential data hub (the CoCo convention).
const GuestDir = "/run/confidential-containers/initdata"

// WriteFiles publishes a validated document in dir: initdata.toml (the raw
// bytes, so the attestation agent recomputes the same digest), plus aa.toml
// and cdh.toml when present. It returns the policy.rego entry ("" when
// absent) for the policy engine; the policy is not written to disk. id must
// be the result of Parse(raw).
func WriteFiles(dir string, raw []byte, id *InitData) (policy string, err error) {
	if id == nil || !bytes.Equal(id.Raw(), raw) {
		return "", fmt.Errorf("init-data: WriteFiles needs the document parsed from raw: %w", errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("init-data dir: %w", err)
	}
	if err := writeAtomic(filepath.Join(dir, "initdata.toml"), raw); err != nil {
		return "", err
	}
	for _, k := range []string{KeyAA, KeyCDH} {
		p := filepath.Join(dir, k)
		v, ok := id.Get(k)
		if !ok {
			// A stale file from an earlier document must not survive.
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return "", fmt.Errorf("init-data: %w", err)
			}
			continue
		}
		if err := writeAtomic(p, []byte(v)); err != nil {
			return "", err
		}
	}
	policy, _ = id.Get(KeyPolicy)
	return policy, nil
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("init-data: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("init-data %s: %w", path, err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("init-data %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("init-data %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("init-data: %w", err)
	}
	return nil
}

// TSMReportDir is where Linux (6.7+) exposes configfs-tsm attestation reports.
const TSMReportDir = "/sys/kernel/config/tsm/report"

// ReadTSMReport asks the guest kernel for a TEE report through configfs-tsm
// under root (TSMReportDir in a guest): it creates an entry, writes
// reportData (at most 64 bytes) as inblob and returns outblob (an SNP
// ATTESTATION_REPORT or a TDX quote) and the provider ("sev_guest",
// "tdx_guest"). The entry is removed again. No configfs-tsm — every non-TEE
// guest, and these development machines — is errdefs.ErrNotFound.
func ReadTSMReport(root string, reportData []byte) (outblob []byte, provider string, err error) {
	if len(reportData) > 64 {
		return nil, "", fmt.Errorf("report data is %d bytes, at most 64: %w", len(reportData), errdefs.ErrInvalidArgument)
	}
	if _, err := os.Stat(root); err != nil {
		return nil, "", fmt.Errorf("configfs-tsm %s: %v: %w", root, err, errdefs.ErrNotFound)
	}
	entry, err := os.MkdirTemp(root, "coco-initdata-")
	if errors.Is(err, syscall.ENXIO) {
		// The kernel has configfs-tsm (TSM_REPORTS built in) but no TEE
		// driver registered as its provider: a guest without a TEE.
		return nil, "", fmt.Errorf("configfs-tsm %s has no provider (no SNP or TDX guest driver bound): %v: %w", root, err, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, "", fmt.Errorf("configfs-tsm: %w", err)
	}
	// configfs entries are removed with rmdir, never by deleting their files.
	defer os.Remove(entry)
	if err := os.WriteFile(filepath.Join(entry, "inblob"), Fit(reportData, 64), 0o600); err != nil {
		return nil, "", fmt.Errorf("configfs-tsm inblob: %w", err)
	}
	outblob, err = os.ReadFile(filepath.Join(entry, "outblob"))
	if err != nil {
		return nil, "", fmt.Errorf("configfs-tsm outblob: %w", err)
	}
	p, err := os.ReadFile(filepath.Join(entry, "provider"))
	if err != nil {
		return nil, "", fmt.Errorf("configfs-tsm provider: %w", err)
	}
	return outblob, strings.TrimSpace(string(p)), nil
}

// ProviderKind maps a configfs-tsm provider name to the TEE kind.
func ProviderKind(provider string) (tee.Kind, error) {
	switch provider {
	case "sev_guest":
		return tee.SNP, nil
	case "tdx_guest":
		return tee.TDX, nil
	}
	return "", fmt.Errorf("configfs-tsm provider %q is not known (want sev_guest or tdx_guest): %w", provider, errdefs.ErrNotImplemented)
}

// VerifyInGuest is what the agent runs at sandbox setup: if the guest has a
// TEE report interface under tsmRoot, fetch a report and compare its binding
// field with id's digest. It returns the TEE kind found, or ErrNotFound when
// there is no TEE report interface (then only the verifier can check the
// init-data; the agent should log that and go on). A mismatch is
// errdefs.ErrFailedPrecondition and must stop the sandbox.
func VerifyInGuest(tsmRoot string, id *InitData) (tee.Kind, error) {
	blob, provider, err := ReadTSMReport(tsmRoot, nil)
	if err != nil {
		return "", err
	}
	return verifyEvidence(provider, blob, id)
}

func verifyEvidence(provider string, blob []byte, id *InitData) (tee.Kind, error) {
	kind, err := ProviderKind(provider)
	if err != nil {
		return "", err
	}
	field, err := ReportField(kind, blob)
	if err != nil {
		return kind, err
	}
	return kind, VerifyAgainstReport(kind, id.Digest(), field)
}

// GuestOptions say where the guest looks for init-data and where it puts it.
// Zero fields take the CoCo defaults.
type GuestOptions struct {
	Devices []string // glob patterns of block devices; GuestDevicePatterns()
	Dir     string   // where WriteFiles publishes; GuestDir
	TSMRoot string   // configfs-tsm report directory; TSMReportDir
	// Report, when set, replaces ReadTSMReport (guests with another report
	// interface, e.g. /dev/sev-guest through go-sev-guest; tests).
	Report func(reportData []byte) (evidence []byte, provider string, err error)
	// Strict is set in a TEE guest (its measured boot says so). The guest
	// then must read its report, and the report's binding field must match
	// the init-data exactly: no report, a field set while no init-data is
	// attached, or a mismatch are errdefs.ErrFailedPrecondition. Without
	// Strict (a plain VM) a missing report is only noted.
	Strict bool
}

// GuestResult is what the guest learned from its init-data.
type GuestResult struct {
	// InitData is nil when the pod has none (no device carries the magic).
	InitData *InitData
	Device   string
	// Policy is the policy.rego entry ("" when absent); the agent loads it.
	Policy string
	// TEE is the kind whose report was compared ("" when the guest has no
	// report interface, and then Note says so).
	TEE  tee.Kind
	Note string
}

// LoadInGuest is the agent's init-data step, run once before any policy is
// applied: find the image, validate it (version, algorithm, limits), compare
// its digest with the TEE report, and only then publish the files. A
// mismatch with the report is errdefs.ErrFailedPrecondition: the host
// changed the init-data after launch, and the sandbox must not start. A pod
// without init-data is not an error (InitData is nil) unless Strict finds
// the report's binding field set. The guest must have devtmpfs on /dev and
// a report source (configfs-tsm on Linux 6.7+, or opts.Report); without one
// a plain VM's result carries a note and only the verifier checks the digest.
func LoadInGuest(opts GuestOptions) (*GuestResult, error) {
	if len(opts.Devices) == 0 {
		opts.Devices = GuestDevicePatterns()
	}
	if opts.Dir == "" {
		opts.Dir = GuestDir
	}
	if opts.TSMRoot == "" {
		opts.TSMRoot = TSMReportDir
	}
	report := opts.Report
	if report == nil {
		report = func(d []byte) ([]byte, string, error) { return ReadTSMReport(opts.TSMRoot, d) }
	}
	raw, dev, err := Scan(opts.Devices)
	absent := errdefs.IsNotFound(err)
	if err != nil && !absent {
		return nil, err
	}
	var id *InitData
	if !absent {
		if id, err = Parse(raw); err != nil {
			return nil, fmt.Errorf("init-data on %s: %w", dev, err)
		}
	}
	res := &GuestResult{InitData: id, Device: dev}
	switch {
	case opts.Strict:
		if res.TEE, err = verifyStrict(report, id); err != nil {
			return nil, err
		}
	case id != nil:
		blob, provider, err := report(nil)
		if err == nil {
			res.TEE, err = verifyEvidence(provider, blob, id)
		}
		switch {
		case err == nil:
		case errdefs.IsNotFound(err) || errdefs.IsNotImplemented(err):
			res.Note = fmt.Sprintf("init-data %s digest not compared in the guest (%v); only the verifier can check it", id.Algorithm, err)
		default:
			return nil, fmt.Errorf("init-data on %s: %w", dev, err)
		}
	}
	if id == nil {
		res.Note = "no init-data image attached"
		return res, nil
	}
	if res.Policy, err = WriteFiles(opts.Dir, raw, id); err != nil {
		return nil, err
	}
	return res, nil
}

// verifyStrict is the TEE guest's binding check: the report must exist and
// its binding field must be digest(id) fitted to the field, or all zero when
// no init-data is attached (the owner sent none). Every refusal is
// errdefs.ErrFailedPrecondition and names the field and both values.
func verifyStrict(report func([]byte) ([]byte, string, error), id *InitData) (tee.Kind, error) {
	blob, provider, err := report(nil)
	if err != nil {
		return "", fmt.Errorf("cannot read its own attestation report (%v), so it cannot check that its init-data and policy are the owner's, "+
			"and refuses to run containers; its kernel needs configfs-tsm (Linux 6.7+) or, on SEV-SNP, /dev/sev-guest: %w", err, errdefs.ErrFailedPrecondition)
	}
	kind, err := ProviderKind(provider)
	if err != nil {
		return "", fmt.Errorf("TEE report: %v: %w", err, errdefs.ErrFailedPrecondition)
	}
	field, err := ReportField(kind, blob)
	if err != nil {
		return kind, fmt.Errorf("TEE report: %v: %w", err, errdefs.ErrFailedPrecondition)
	}
	if id == nil {
		if !allZero(field) {
			return kind, fmt.Errorf("%s in the TEE report is %s, but no init-data disk is attached: the host withheld the init-data the owner launched with; "+
				"attach it (pod annotation io.katacontainers.config.hypervisor.cc_init_data) or launch with an all-zero %s: %w",
				FieldName(kind), hex.EncodeToString(field), FieldName(kind), errdefs.ErrFailedPrecondition)
		}
		return kind, nil
	}
	if err := VerifyAgainstReport(kind, id.Digest(), field); err != nil {
		return kind, fmt.Errorf("init-data: %w", err)
	}
	return kind, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
