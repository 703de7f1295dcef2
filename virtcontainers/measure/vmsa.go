package measure

import "encoding/binary"

// VMSA (VM save area) offsets, AMD64 APM vol. 2 table B-4 ("VMSA layout,
// state save area for SEV-ES"). Only the fields the initial vCPU state sets
// are named; everything else is zero in a launch VMSA.
const (
	vmsaES         = 0x000 // segment registers: {u16 selector, u16 attrib, u32 limit, u64 base}
	vmsaCS         = 0x010
	vmsaSS         = 0x020
	vmsaDS         = 0x030
	vmsaFS         = 0x040
	vmsaGS         = 0x050
	vmsaGDTR       = 0x060
	vmsaLDTR       = 0x070
	vmsaIDTR       = 0x080
	vmsaTR         = 0x090
	vmsaEFER       = 0x0D0
	vmsaCR4        = 0x148
	vmsaCR0        = 0x158
	vmsaDR7        = 0x160
	vmsaDR6        = 0x168
	vmsaRFLAGS     = 0x170
	vmsaRIP        = 0x178
	vmsaGPAT       = 0x268
	vmsaRDX        = 0x310
	vmsaSEVFeature = 0x3B0
	vmsaXCR0       = 0x3E8
	vmsaMXCSR      = 0x408
	vmsaX87FCW     = 0x410

	pageSize = 4096
	// bspEIP is the architectural reset vector the boot processor starts at.
	bspEIP = 0xFFFFFFF0
)

// vcpuState is the reset state a VMM programs into a launch VMSA. The VMMs
// differ in a few registers; see resetState.
type vcpuState struct {
	csAttrib, ssAttrib, trAttrib uint16
	rdx                          uint64
	gPAT                         uint64
	mxcsr                        uint32
	fcw                          uint16
}

// resetState gives the initial register values each VMM uses. QEMU puts the
// CPUID signature in RDX (as on real reset) and initialises the FPU control
// words; EC2 and GCE use a fixed RDX and leave the FPU state zero; GCE also
// programs its own PAT and EC2 marks CS and TR differently.
func resetState(vmm VMMType, eip uint32, sig uint32) vcpuState {
	s := vcpuState{csAttrib: 0x9b, ssAttrib: 0x93, trAttrib: 0x8b, gPAT: 0x0007040600070406}
	switch vmm {
	case VMMQEMU:
		s.rdx, s.mxcsr, s.fcw = uint64(sig), 0x1f80, 0x37f
	case VMMEC2:
		if eip == bspEIP {
			s.csAttrib = 0x9a
		}
		s.ssAttrib, s.trAttrib, s.rdx = 0x92, 0x83, 0x600
	case VMMGCE:
		s.gPAT, s.rdx = 0x00070106, 0x600
	}
	return s
}

// vmsaPage builds the launch VMSA of one vCPU that starts at eip, in real
// mode with CS based at eip's 64 KiB segment.
func vmsaPage(vmm VMMType, eip uint32, sig uint32, sevFeatures uint64) []byte {
	p := make([]byte, pageSize)
	st := resetState(vmm, eip, sig)
	seg := func(off int, sel, attrib uint16, limit uint32, base uint64) {
		binary.LittleEndian.PutUint16(p[off:], sel)
		binary.LittleEndian.PutUint16(p[off+2:], attrib)
		binary.LittleEndian.PutUint32(p[off+4:], limit)
		binary.LittleEndian.PutUint64(p[off+8:], base)
	}
	u64 := func(off int, v uint64) { binary.LittleEndian.PutUint64(p[off:], v) }

	seg(vmsaES, 0, 0x93, 0xffff, 0)
	seg(vmsaCS, 0xf000, st.csAttrib, 0xffff, uint64(eip&0xffff0000))
	seg(vmsaSS, 0, st.ssAttrib, 0xffff, 0)
	seg(vmsaDS, 0, 0x93, 0xffff, 0)
	seg(vmsaFS, 0, 0x93, 0xffff, 0)
	seg(vmsaGS, 0, 0x93, 0xffff, 0)
	seg(vmsaGDTR, 0, 0, 0xffff, 0)
	seg(vmsaLDTR, 0, 0x82, 0xffff, 0)
	seg(vmsaIDTR, 0, 0, 0xffff, 0)
	seg(vmsaTR, 0, st.trAttrib, 0xffff, 0)
	u64(vmsaEFER, 0x1000) // SVME: KVM sets it for SEV-ES guests
	u64(vmsaCR4, 0x40)    // MCE, set by KVM
	u64(vmsaCR0, 0x10)    // ET
	u64(vmsaDR7, 0x400)
	u64(vmsaDR6, 0xffff0ff0)
	u64(vmsaRFLAGS, 0x2)
	u64(vmsaRIP, uint64(eip&0xffff))
	u64(vmsaGPAT, st.gPAT)
	u64(vmsaRDX, st.rdx)
	u64(vmsaSEVFeature, sevFeatures)
	u64(vmsaXCR0, 0x1)
	binary.LittleEndian.PutUint32(p[vmsaMXCSR:], st.mxcsr)
	binary.LittleEndian.PutUint16(p[vmsaX87FCW:], st.fcw)
	return p
}
