package check

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/hypervisor/tee"
)

// teeMarkerName is the TEE initrd's marker (guest-assets/agent/trust
// MarkerPath) as an initrd (newc) entry name: no leading slash, NUL-ended.
const teeMarkerName = "etc/coco/tee\x00"

// guestMode says whether the class's initrd matches its TEE kind: a TEE
// class booting an initrd without the marker gets an agent that trusts the
// host (allow-all, the host's tools disk), and a plain class booting the
// TEE initrd gets one that refuses every pod for want of a report.
func guestMode(cfg *configs.Config, kind tee.Kind) []fact {
	p := cfg.Hypervisor.Initrd
	if p == "" {
		return nil
	}
	marked, err := initrdIsTEE(p)
	if err != nil {
		return nil // the asset fact already says what is wrong with the file
	}
	switch {
	case kind.Confidential() && !marked:
		return []fact{{status: statusFail, name: "guest mode",
			detail: fmt.Sprintf("TEE %q boots %s, an initrd not marked TEE (/etc/coco/tee): its agent would take the host's word", kind, p),
			fix:    `set hypervisor.initrd = "initrd.img" (make guest-assets builds it with mkinitrd -tee)`}}
	case !kind.Confidential() && marked:
		return []fact{{status: statusWarn, name: "guest mode",
			detail: fmt.Sprintf("%s is a TEE guest's initrd: without a TEE its agent finds no attestation report and refuses every pod", p),
			fix:    `set hypervisor.initrd = "initrd-dev.img" and tools_image = "tools.erofs" (the coco-dev class's), or tee.kind to the TEE this host has`}}
	case kind.Confidential():
		return []fact{{status: statusOK, name: "guest mode", detail: "the initrd is marked TEE: its agent fails closed"}}
	}
	return []fact{{status: statusOK, name: "guest mode", detail: "plain guest (no TEE marker in the initrd)"}}
}

// initrdIsTEE reports whether the initrd at path (newc, uncompressed or
// gzip) has the TEE marker entry. It reads the whole image once, as a
// stream; the marker's name cannot straddle a read because the scanner
// keeps an overlap.
func initrdIsTEE(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	var r io.Reader = br
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return false, err
		}
		defer zr.Close()
		r = zr
	}
	return containsStream(r, []byte(teeMarkerName))
}

// containsStream looks for needle in r without holding all of r.
func containsStream(r io.Reader, needle []byte) (bool, error) {
	buf := make([]byte, 0, 1<<20+len(needle))
	chunk := make([]byte, 1<<20)
	for {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if bytes.Contains(buf, needle) {
			return true, nil
		}
		if keep := len(needle) - 1; len(buf) > keep {
			buf = append(buf[:0], buf[len(buf)-keep:]...)
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}
