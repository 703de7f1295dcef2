// Package measure precomputes the launch digests AMD SEV, SEV-ES and SEV-SNP
// hardware reports for a guest started by a VMM from OVMF firmware, with an
// optional directly booted kernel measured through the SEV hashes table.
// The results match virtee/sev-snp-measure bit for bit; the algorithm follows
// the AMD SEV and SEV-SNP firmware ABI specifications (LAUNCH_UPDATE_DATA,
// LAUNCH_UPDATE_VMSA, SNP_LAUNCH_UPDATE with PAGE_INFO) and the OVMF
// reset-vector metadata.
package measure

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// Mode is the SEV generation the guest launches with.
type Mode string

const (
	ModeSEV   Mode = "sev"
	ModeSEVES Mode = "seves"
	ModeSNP   Mode = "snp"
)

// ParseMode accepts the names sev-snp-measure accepts ("sev", "seves",
// "sev-es", "snp", "sev-snp", any case).
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "sev":
		return ModeSEV, nil
	case "seves", "sev-es":
		return ModeSEVES, nil
	case "snp", "sev-snp":
		return ModeSNP, nil
	}
	return "", fmt.Errorf("mode %q is not known; allowed: sev, seves, snp: %w", s, errdefs.ErrInvalidArgument)
}

// VMMType selects the VMM whose initial vCPU state and page order the digest
// reproduces.
type VMMType string

const (
	VMMQEMU VMMType = "QEMU"
	VMMEC2  VMMType = "ec2"
	VMMGCE  VMMType = "gce"
)

// ParseVMMType accepts QEMU, ec2 and gce in any case.
func ParseVMMType(s string) (VMMType, error) {
	switch strings.ToLower(s) {
	case "qemu", "":
		return VMMQEMU, nil
	case "ec2":
		return VMMEC2, nil
	case "gce":
		return VMMGCE, nil
	}
	return "", fmt.Errorf("vmm type %q is not known; allowed: QEMU, ec2, gce: %w", s, errdefs.ErrInvalidArgument)
}

// GuestFeaturesDefault is SEV_FEATURES with only SNPActive set, what QEMU
// programs for an SNP guest unless asked for more.
const GuestFeaturesDefault = 0x1

// Params describe one launch.
type Params struct {
	Mode Mode
	// VCPUs is the number of vCPUs (SEV-ES and SNP measure one VMSA each).
	VCPUs int
	// VCPUSig is the CPUID signature QEMU puts in RDX (see CPUSig,
	// CPUTypeSig). Unused for ec2 and gce.
	VCPUSig uint32
	VMM     VMMType // "" means QEMU
	// GuestFeatures is the SNP VMSA SEV_FEATURES value (SNP only).
	GuestFeatures uint64
	Firmware      *OVMF
	// Kernel is set for measured direct boot (kernel-hashes=on); nil when
	// the firmware boots on its own.
	Kernel *KernelHashes
	// OVMFHash, when set (SNP only), is a precomputed digest of the firmware
	// pages (see OVMFHash) that replaces hashing Firmware's contents;
	// Firmware still supplies the metadata and reset vector.
	OVMFHash []byte
}

// LaunchDigest computes the launch measurement: SHA-256 (32 bytes) for SEV
// and SEV-ES, SHA-384 (48 bytes) for SNP. Errors are
// errdefs.ErrInvalidArgument and say which input is wrong.
func LaunchDigest(p Params) ([]byte, error) {
	if p.Firmware == nil {
		return nil, fmt.Errorf("no OVMF firmware given: %w", errdefs.ErrInvalidArgument)
	}
	if len(p.OVMFHash) > 0 && p.Mode != ModeSNP {
		return nil, fmt.Errorf("a precomputed OVMF hash only works with mode snp, not %s: %w", p.Mode, errdefs.ErrInvalidArgument)
	}
	vmm := p.VMM
	if vmm == "" {
		vmm = VMMQEMU
	}
	if _, err := ParseVMMType(string(vmm)); err != nil {
		return nil, err
	}
	switch p.Mode {
	case ModeSEV:
		return sevDigest(p, nil)
	case ModeSEVES:
		vmsas, err := vmsaPages(p, vmm, 0)
		if err != nil {
			return nil, err
		}
		return sevDigest(p, vmsas)
	case ModeSNP:
		return snpDigest(p, vmm)
	}
	return nil, fmt.Errorf("mode %q is not known; allowed: sev, seves, snp: %w", p.Mode, errdefs.ErrInvalidArgument)
}

// sevDigest is the SEV/SEV-ES LAUNCH_MEASURE digest: SHA-256 over the pages
// encrypted with LAUNCH_UPDATE_DATA (firmware, then the hashes table QEMU
// appends) followed by each LAUNCH_UPDATE_VMSA page (SEV-ES only).
func sevDigest(p Params, vmsas [][]byte) ([]byte, error) {
	h := sha256.New()
	h.Write(p.Firmware.Data())
	if p.Kernel != nil {
		if _, ok := p.Firmware.HashesTableGPA(); !ok {
			return nil, fmt.Errorf("kernel given but the OVMF image does not support kernel/initrd/cmdline measurement (no SEV hashes table); use an AmdSev OVMF build: %w", errdefs.ErrInvalidArgument)
		}
		h.Write(p.Kernel.Table())
	}
	for _, v := range vmsas {
		h.Write(v)
	}
	return h.Sum(nil), nil
}

// vmsaPages returns one VMSA per vCPU: the boot processor starts at the
// reset vector, the others at the SEV-ES reset block's EIP.
func vmsaPages(p Params, vmm VMMType, features uint64) ([][]byte, error) {
	if p.VCPUs < 1 {
		return nil, fmt.Errorf("vcpus is %d; mode %s needs at least 1: %w", p.VCPUs, p.Mode, errdefs.ErrInvalidArgument)
	}
	apEIP, ok := p.Firmware.ResetEIP()
	if !ok {
		return nil, fmt.Errorf("the OVMF image has no SEV-ES reset block, so it cannot boot an SEV-ES or SNP guest: %w", errdefs.ErrInvalidArgument)
	}
	if apEIP == 0 && p.VCPUs > 1 {
		return nil, fmt.Errorf("the OVMF SEV-ES reset block has EIP 0, so only 1 vcpu can start, not %d: %w", p.VCPUs, errdefs.ErrInvalidArgument)
	}
	bsp := vmsaPage(vmm, bspEIP, p.VCPUSig, features)
	ap := bsp
	if p.VCPUs > 1 {
		ap = vmsaPage(vmm, apEIP, p.VCPUSig, features)
	}
	pages := [][]byte{bsp}
	for i := 1; i < p.VCPUs; i++ {
		pages = append(pages, ap)
	}
	return pages, nil
}

// SNP_LAUNCH_UPDATE page types (SEV-SNP ABI, PAGE_INFO.PAGE_TYPE).
const (
	pageNormal     = 0x1
	pageVMSA       = 0x2
	pageZero       = 0x3
	pageUnmeasured = 0x4
	pageSecrets    = 0x5
	pageCPUID      = 0x6

	// VMSA pages are recorded at GPA 2^64-1 reduced to a page-aligned
	// address with bits above 51 clear.
	vmsaGPA     = 0xFFFFFFFFF000
	pageInfoLen = 0x70
)

// snpContext folds pages into the SNP launch digest: for each page,
// digest = SHA-384(PAGE_INFO) where PAGE_INFO is
// {DIGEST_CUR[48], CONTENTS[48], u16 LENGTH=0x70, u8 PAGE_TYPE, u8 IMI_PAGE,
// u8 VMPL3_PERMS, u8 VMPL2_PERMS, u8 VMPL1_PERMS, u8 reserved, u64 GPA}.
// CONTENTS is SHA-384 of the page for normal and VMSA pages, zero otherwise.
type snpContext struct {
	ld [sha512.Size384]byte
}

func (c *snpContext) update(pageType byte, gpa uint64, contents []byte) {
	var info [pageInfoLen]byte
	copy(info[0:], c.ld[:])
	copy(info[48:], contents)
	binary.LittleEndian.PutUint16(info[96:], pageInfoLen)
	info[98] = pageType
	binary.LittleEndian.PutUint64(info[104:], gpa)
	c.ld = sha512.Sum384(info[:])
}

func (c *snpContext) measured(pageType byte, gpa uint64, data []byte) {
	for off := 0; off < len(data); off += pageSize {
		sum := sha512.Sum384(data[off : off+pageSize])
		c.update(pageType, gpa+uint64(off), sum[:])
	}
}

func (c *snpContext) unmeasured(pageType byte, gpa uint64, size uint32) {
	for off := uint64(0); off < uint64(size); off += pageSize {
		c.update(pageType, gpa+off, nil)
	}
}

// OVMFHash is the SNP launch digest after only the firmware pages: what
// sev-snp-measure's snp:ovmf-hash mode prints, reusable as Params.OVMFHash
// so that large firmware need not be rehashed per launch.
func OVMFHash(o *OVMF) []byte {
	var c snpContext
	c.measured(pageNormal, o.GPA(), o.Data())
	return append([]byte(nil), c.ld[:]...)
}

func snpDigest(p Params, vmm VMMType) ([]byte, error) {
	var c snpContext
	if len(p.OVMFHash) > 0 {
		if len(p.OVMFHash) != sha512.Size384 {
			return nil, fmt.Errorf("OVMF hash is %d bytes, want %d (SHA-384): %w", len(p.OVMFHash), sha512.Size384, errdefs.ErrInvalidArgument)
		}
		copy(c.ld[:], p.OVMFHash)
	} else {
		c.measured(pageNormal, p.Firmware.GPA(), p.Firmware.Data())
	}
	// Validate before folding anything, so errors do not depend on order.
	if p.Kernel != nil && !p.Firmware.hasSection(SectionKernelHashes) {
		return nil, fmt.Errorf("kernel given but the OVMF SEV metadata has no SNP_KERNEL_HASHES section; use an AmdSev OVMF build: %w", errdefs.ErrInvalidArgument)
	}
	vmsas, err := vmsaPages(p, vmm, p.GuestFeatures)
	if err != nil {
		return nil, err
	}
	for _, s := range p.Firmware.sections {
		if err := c.section(s, p, vmm); err != nil {
			return nil, err
		}
	}
	// EC2 adds the CPUID page after all other metadata sections.
	if vmm == VMMEC2 {
		for _, s := range p.Firmware.sections {
			if s.Type == SectionCPUID {
				c.update(pageCPUID, uint64(s.GPA), nil)
			}
		}
	}
	for _, v := range vmsas {
		sum := sha512.Sum384(v)
		c.update(pageVMSA, vmsaGPA, sum[:])
	}
	return append([]byte(nil), c.ld[:]...), nil
}

func (c *snpContext) section(s Section, p Params, vmm VMMType) error {
	if s.Size%pageSize != 0 && s.Type != SectionSNPSecrets && s.Type != SectionCPUID {
		return fmt.Errorf("OVMF metadata section %s at %#x has size %#x, not a multiple of 4096: %w", s.Type, s.GPA, s.Size, errdefs.ErrInvalidArgument)
	}
	switch s.Type {
	case SectionSNPSecMem:
		if vmm == VMMGCE {
			c.unmeasured(pageUnmeasured, uint64(s.GPA), s.Size)
		} else {
			c.unmeasured(pageZero, uint64(s.GPA), s.Size)
		}
	case SectionSNPSecrets:
		c.update(pageSecrets, uint64(s.GPA), nil)
	case SectionCPUID:
		if vmm != VMMEC2 {
			c.update(pageCPUID, uint64(s.GPA), nil)
		}
	case SectionSVSMCAA:
		c.unmeasured(pageZero, uint64(s.GPA), s.Size)
	case SectionKernelHashes:
		if p.Kernel == nil {
			c.unmeasured(pageZero, uint64(s.GPA), s.Size)
			return nil
		}
		gpa, ok := p.Firmware.HashesTableGPA()
		if !ok {
			return fmt.Errorf("OVMF has an SNP_KERNEL_HASHES section but no SEV hashes table entry: %w", errdefs.ErrInvalidArgument)
		}
		page := make([]byte, s.Size)
		off := int(gpa & (pageSize - 1))
		if off+paddedTableLen > len(page) {
			return fmt.Errorf("SEV hashes table at %#x does not fit the %#x-byte SNP_KERNEL_HASHES section: %w", gpa, s.Size, errdefs.ErrInvalidArgument)
		}
		copy(page[off:], p.Kernel.Table())
		c.measured(pageNormal, uint64(s.GPA), page)
	default:
		return fmt.Errorf("OVMF metadata section type %s at %#x is not known: %w", s.Type, s.GPA, errdefs.ErrInvalidArgument)
	}
	return nil
}
