package measure

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// OVMF's reset-vector area ends with a GUIDed table (OvmfPkg/ResetVector,
// "OVMF footer table"): the last 32 bytes of the image are the reset vector
// itself; just before them sits an entry header {u16 size, GUID} whose GUID
// is the footer GUID and whose size covers the whole table. Entries are laid
// out backwards from there, each as data ‖ u16 size ‖ GUID, size counting the
// header. QEMU reads the same table to find what to measure.
const (
	footerTailLen  = 32
	tableHeaderLen = 2 + 16

	guidFooterTable    = "96b582de-1fb2-45f7-baea-a366c55a082d"
	guidSEVHashTableRV = "7255371f-3a3b-4b04-927b-1da6efa8d454" // u32 GPA of the kernel hashes table
	guidSEVESReset     = "00f771de-1a7e-4fcb-890e-68c77e2fb44e" // u32 AP reset EIP
	guidSEVMetadata    = "dc886566-984a-4798-a75e-5585a7bf67cc" // u32 offset from the end of the image

	fourGiB = 1 << 32
)

// SectionType is an OVMF SEV metadata section type (OvmfSevMetadata.asm).
type SectionType uint32

const (
	SectionSNPSecMem    SectionType = 1    // pre-validated memory, zero pages
	SectionSNPSecrets   SectionType = 2    // the SNP secrets page
	SectionCPUID        SectionType = 3    // the SNP CPUID page
	SectionSVSMCAA      SectionType = 4    // SVSM calling area, zero pages
	SectionKernelHashes SectionType = 0x10 // page holding the SEV hashes table
)

// SEV metadata: header {"ASEV", u32 size, u32 version = 1, u32 count}, then
// count items {u32 gpa, u32 size, u32 type}.
const (
	metadataSignature = "ASEV"
	metadataHeaderLen = 16
	metadataItemLen   = 12
	maxMetadataItems  = 1024
)

func (t SectionType) String() string {
	switch t {
	case SectionSNPSecMem:
		return "SNP_SEC_MEM"
	case SectionSNPSecrets:
		return "SNP_SECRETS"
	case SectionCPUID:
		return "CPUID"
	case SectionSVSMCAA:
		return "SVSM_CAA"
	case SectionKernelHashes:
		return "SNP_KERNEL_HASHES"
	}
	return fmt.Sprintf("unknown(%#x)", uint32(t))
}

// Section is one SEV metadata entry: a range of guest memory OVMF expects
// the VMM to populate before launch.
type Section struct {
	GPA  uint32
	Size uint32
	Type SectionType
}

// OVMF is a parsed firmware image mapped so that it ends at 4 GiB.
type OVMF struct {
	data     []byte
	table    map[string][]byte // GUID string → entry data
	sections []Section
}

// ParseOVMF reads the footer table and SEV metadata of a firmware image.
// An image without a footer table is valid (plain SEV works with it); one
// whose table or metadata is malformed is errdefs.ErrInvalidArgument.
func ParseOVMF(data []byte) (*OVMF, error) {
	if len(data) == 0 || len(data)%4096 != 0 {
		return nil, fmt.Errorf("OVMF image is %d bytes, want a non-zero multiple of 4096: %w", len(data), errdefs.ErrInvalidArgument)
	}
	if len(data) > fourGiB {
		return nil, fmt.Errorf("OVMF image is %d bytes, larger than the 4 GiB it is mapped below: %w", len(data), errdefs.ErrInvalidArgument)
	}
	o := &OVMF{data: data, table: map[string][]byte{}}
	if err := o.parseTable(); err != nil {
		return nil, err
	}
	if err := o.parseMetadata(); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *OVMF) parseTable() error {
	end := len(o.data) - footerTailLen
	if end < tableHeaderLen {
		return nil
	}
	hdr := o.data[end-tableHeaderLen : end]
	if guidString(hdr[2:]) != guidFooterTable {
		return nil
	}
	size := int(binary.LittleEndian.Uint16(hdr))
	if size < tableHeaderLen || size > end {
		return fmt.Errorf("OVMF footer table size %d is out of range: %w", size, errdefs.ErrInvalidArgument)
	}
	table := o.data[end-size : end-tableHeaderLen]
	for len(table) >= tableHeaderLen {
		h := table[len(table)-tableHeaderLen:]
		n := int(binary.LittleEndian.Uint16(h))
		if n < tableHeaderLen || n > len(table) {
			return fmt.Errorf("OVMF footer table entry %s has size %d, out of range: %w", guidString(h[2:]), n, errdefs.ErrInvalidArgument)
		}
		o.table[guidString(h[2:])] = table[len(table)-n : len(table)-tableHeaderLen]
		table = table[:len(table)-n]
	}
	return nil
}

func (o *OVMF) parseMetadata() error {
	entry, ok := o.table[guidSEVMetadata]
	if !ok {
		return nil
	}
	if len(entry) < 4 {
		return fmt.Errorf("OVMF SEV metadata entry is %d bytes: %w", len(entry), errdefs.ErrInvalidArgument)
	}
	off := int(binary.LittleEndian.Uint32(entry))
	start := len(o.data) - off
	if off > len(o.data) || start+metadataHeaderLen > len(o.data) {
		return fmt.Errorf("OVMF SEV metadata offset %#x is outside the image: %w", off, errdefs.ErrInvalidArgument)
	}
	h := o.data[start : start+metadataHeaderLen]
	if string(h[:4]) != metadataSignature {
		return fmt.Errorf("OVMF SEV metadata signature %q, want %q: %w", h[:4], metadataSignature, errdefs.ErrInvalidArgument)
	}
	if v := binary.LittleEndian.Uint32(h[8:]); v != 1 {
		return fmt.Errorf("OVMF SEV metadata version %d, want 1: %w", v, errdefs.ErrInvalidArgument)
	}
	n := int(binary.LittleEndian.Uint32(h[12:]))
	if n > maxMetadataItems || start+metadataHeaderLen+n*metadataItemLen > len(o.data) {
		return fmt.Errorf("OVMF SEV metadata lists %d sections, beyond the image: %w", n, errdefs.ErrInvalidArgument)
	}
	items := o.data[start+metadataHeaderLen:]
	for i := 0; i < n; i++ {
		it := items[i*metadataItemLen:]
		s := Section{
			GPA:  binary.LittleEndian.Uint32(it),
			Size: binary.LittleEndian.Uint32(it[4:]),
			Type: SectionType(binary.LittleEndian.Uint32(it[8:])),
		}
		// Sections describe memory below 4 GiB (the fields are 32-bit).
		if uint64(s.GPA)+uint64(s.Size) > fourGiB {
			return fmt.Errorf("OVMF SEV metadata section %d (%s at %#x, %#x bytes) ends above 4 GiB: %w", i, s.Type, s.GPA, s.Size, errdefs.ErrInvalidArgument)
		}
		o.sections = append(o.sections, s)
	}
	return nil
}

// Data is the firmware image.
func (o *OVMF) Data() []byte { return o.data }

// GPA is where the image starts in guest memory: it ends at 4 GiB.
func (o *OVMF) GPA() uint64 { return fourGiB - uint64(len(o.data)) }

// Sections lists the SEV metadata sections in image order.
func (o *OVMF) Sections() []Section { return append([]Section(nil), o.sections...) }

func (o *OVMF) hasSection(t SectionType) bool {
	for _, s := range o.sections {
		if s.Type == t {
			return true
		}
	}
	return false
}

// ResetEIP is the entry point of application processors under SEV-ES/SNP
// (the SEV-ES reset block). ok is false when the image has none.
func (o *OVMF) ResetEIP() (eip uint32, ok bool) {
	e, ok := o.table[guidSEVESReset]
	if !ok || len(e) < 4 {
		return 0, false
	}
	return binary.LittleEndian.Uint32(e), true
}

// HashesTableGPA is where QEMU writes the kernel/initrd/cmdline hashes
// table; ok is false when the image does not support measured direct boot.
func (o *OVMF) HashesTableGPA() (gpa uint32, ok bool) {
	e, found := o.table[guidSEVHashTableRV]
	if !found || len(e) < 4 {
		return 0, false
	}
	gpa = binary.LittleEndian.Uint32(e)
	return gpa, gpa != 0
}

// guidString formats 16 bytes in EFI (mixed-endian) layout as a GUID string.
func guidString(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%s-%s",
		binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint16(b[4:]), binary.LittleEndian.Uint16(b[6:]),
		hex.EncodeToString(b[8:10]), hex.EncodeToString(b[10:16]))
}

// guidBytes is the inverse of guidString for the constants above.
func guidBytes(s string) [16]byte {
	var out [16]byte
	h, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(h) != 16 {
		panic("measure: bad GUID constant " + s)
	}
	binary.LittleEndian.PutUint32(out[0:], binary.BigEndian.Uint32(h[0:]))
	binary.LittleEndian.PutUint16(out[4:], binary.BigEndian.Uint16(h[4:]))
	binary.LittleEndian.PutUint16(out[6:], binary.BigEndian.Uint16(h[6:]))
	copy(out[8:], h[8:])
	return out
}
