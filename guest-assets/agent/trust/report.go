//go:build linux

package trust

import (
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	"github.com/google/go-sev-guest/client"

	"github.com/coco-runtime/coco/virtcontainers/initdata"
)

// SEVGuestDevice is the SEV-SNP guest driver's report interface (the
// sev-guest module; Linux 5.19+).
const SEVGuestDevice = "/dev/sev-guest"

// Report fetches an attestation report with reportData (at most 64 bytes)
// from the first source the guest kernel offers: configfs-tsm (Linux 6.7+,
// SNP and TDX), then /dev/sev-guest. It returns the evidence and its
// configfs-tsm provider name ("sev_guest", "tdx_guest"), the form
// initdata.GuestOptions.Report takes. No source at all is
// errdefs.ErrNotFound naming every place it looked.
func Report(reportData []byte) ([]byte, string, error) {
	blob, provider, err := initdata.ReadTSMReport(initdata.TSMReportDir, reportData)
	if err == nil || !errdefs.IsNotFound(err) {
		return blob, provider, err
	}
	if _, serr := os.Stat(SEVGuestDevice); serr != nil {
		return nil, "", fmt.Errorf("%v; %s does not exist: %w", err, SEVGuestDevice, errdefs.ErrNotFound)
	}
	return sevReport(reportData)
}

// sevReport asks the SEV-SNP firmware for a report through /dev/sev-guest
// (SNP_GET_REPORT), at VMPL 0, with go-sev-guest.
func sevReport(reportData []byte) ([]byte, string, error) {
	var data [64]byte
	copy(data[:], reportData)
	d, err := client.OpenDevice()
	if err != nil {
		return nil, "", fmt.Errorf("open %s: %w", SEVGuestDevice, err)
	}
	defer d.Close()
	r, err := client.GetRawReport(d, data)
	if err != nil {
		return nil, "", fmt.Errorf("SNP report through %s: %w", SEVGuestDevice, err)
	}
	return r, "sev_guest", nil
}
