package kvmprobe

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containerd/errdefs"
)

// DefaultCacheDir keeps verdicts under /run, which is empty after a reboot.
const DefaultCacheDir = "/run/coco/kvmprobe"

// verdict is one cached probe answer.
type verdict struct {
	Usable bool   `json:"usable"`
	Reason string `json:"reason,omitempty"`
}

// Cached returns a probe that answers from a file in dir when the same QEMU
// binary was already probed against the same /dev/kvm in this boot, and
// probes (and records the answer) otherwise. A negative probe costs its full
// deadline, so without the cache every pod on a host with an unusable
// /dev/kvm would pay it at start. Answers cut short by ctx are not recorded.
func Cached(dir string) func(ctx context.Context, qemuPath string) error {
	return func(ctx context.Context, qemuPath string) error {
		key, err := cacheKey(qemuPath)
		if err != nil {
			return Probe(ctx, qemuPath)
		}
		file := filepath.Join(dir, key+".json")
		if b, err := os.ReadFile(file); err == nil {
			var v verdict
			if json.Unmarshal(b, &v) == nil {
				if v.Usable {
					return nil
				}
				return fmt.Errorf("%s (cached in %s): %w", v.Reason, file, errdefs.ErrUnavailable)
			}
		}
		err = Probe(ctx, qemuPath)
		if ctx.Err() != nil {
			return err
		}
		v := verdict{Usable: err == nil}
		if err != nil {
			v.Reason = err.Error()
		}
		if b, merr := json.Marshal(v); merr == nil && os.MkdirAll(dir, 0o700) == nil {
			tmp := file + fmt.Sprintf(".%d", os.Getpid())
			if os.WriteFile(tmp, b, 0o600) == nil {
				os.Rename(tmp, file)
			}
		}
		return err
	}
}

// cacheKey names what the verdict depends on: this boot, the /dev/kvm node
// (a reloaded kvm module makes a new one) and the QEMU binary.
func cacheKey(qemuPath string) (string, error) {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write(boot)
	for _, p := range []string{"/dev/kvm", qemuPath} {
		fi, err := os.Stat(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && p == "/dev/kvm" {
				fmt.Fprintf(h, "%s:absent\n", p)
				continue
			}
			return "", err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		if st == nil {
			return "", errors.New("no stat data")
		}
		fmt.Fprintf(h, "%s:%d:%d:%d:%d:%d\n", p, st.Dev, st.Ino, st.Size, st.Mtim.Nano(), st.Ctim.Nano())
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}
