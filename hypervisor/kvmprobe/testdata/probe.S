/*
 * The kvmprobe guest: a 64 KiB x86 firmware image whose code runs from the
 * reset vector, enters 32-bit protected mode, then 64-bit long mode with
 * paging, and finally writes 0x21 to the isa-debug-exit port 0xf4, which
 * makes QEMU exit with status (0x21 << 1) | 1 = 67.
 *
 * Real mode alone is not enough: a PVM-backed /dev/kvm runs real-mode code
 * but hangs at the switch to protected mode, as every ordinary guest does.
 *
 * The image is mapped so that its first byte is at 0xF0000; the last 16
 * bytes (the reset vector at 0xFFFF0) hold "ljmp $0xf000, $0", which the Go
 * code adds. Build (what TestImageMatchesSource does):
 *   gcc -c -o probe.o probe.S
 *   ld -m elf_x86_64 -Ttext=0xF0000 -e _start -o probe.elf probe.o
 *   objcopy -O binary -j .text probe.elf probe.bin
 */
	.code16
	.globl _start
_start:
	cli
	lgdtl %cs:(gdtdesc - _start)
	movl %cr0, %eax
	orl $1, %eax			/* CR0.PE */
	movl %eax, %cr0
	ljmpl $0x08, $pm32
	.code32
pm32:
	movw $0x10, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	/* Page tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD): one 2 MiB
	 * identity page covers this code. */
	movl $0x1000, %edi
	xorl %eax, %eax
	movl $0xc00, %ecx
	rep stosl
	movl $0x2003, 0x1000
	movl $0x3003, 0x2000
	movl $0x83, 0x3000
	movl $0x1000, %eax
	movl %eax, %cr3
	movl %cr4, %eax
	orl $0x20, %eax			/* CR4.PAE */
	movl %eax, %cr4
	movl $0xc0000080, %ecx		/* EFER */
	rdmsr
	orl $0x100, %eax		/* EFER.LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000000, %eax		/* CR0.PG */
	movl %eax, %cr0
	ljmp $0x18, $lm64
	.code64
lm64:
	movb $0x21, %al
	outb %al, $0xf4
1:	hlt
	jmp 1b
	.align 8
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff	/* 0x08: 32-bit code */
	.quad 0x00cf92000000ffff	/* 0x10: data */
	.quad 0x00af9a000000ffff	/* 0x18: 64-bit code */
gdtdesc:
	.word gdtdesc - gdt - 1
	.long gdt
