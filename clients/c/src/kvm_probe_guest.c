/* The probe's guest: see kvm_probe_guest.h. */
#include "kvm_probe_guest.h"

#include <linux/kvm.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>

/* The guest's loop: write a byte to [rdi], rdi += rbx (4 KiB); at the end of each 2 MiB region
 * `out 0x10` (the host takes the region's time, as the simulation records one populate sample
 * per 2 MiB region); at rsi `out 0x11`, the pass is over. */
static const uint8_t guest_code[] = {
    0x88, 0x07,                         /*  0: mov [rdi], al */
    0x48, 0x01, 0xdf,                   /*  2: add rdi, rbx */
    0xf7, 0xc7, 0xff, 0xff, 0x1f, 0x00, /*  5: test edi, 0x1fffff */
    0x75, 0xf3,                         /* 11: jnz 0 */
    0xe6, REGION_PORT,                  /* 13: out 0x10, al */
    0x48, 0x39, 0xf7,                   /* 15: cmp rdi, rsi */
    0x72, 0xec,                         /* 18: jb 0 */
    0xe6, DONE_PORT,                    /* 20: out 0x11, al */
    0xeb, 0xfe,                         /* 22: jmp $ */
};

/* Guest page tables, GDT and code, in the system slot. */
void guest_build(uint8_t *system, uint64_t data_bytes) {
    uint64_t *pml4 = (uint64_t *)(system + PML4_GPA);
    uint64_t *pdpt = (uint64_t *)(system + PDPT_GPA);
    const uint64_t user_table = 0x7;            /* present, writable, user */
    const uint64_t user_huge = 0x87;            /* present, writable, user, 2 MiB */
    pml4[0] = PDPT_GPA | user_table;
    uint64_t top = DATA_GPA + data_bytes;
    for (uint64_t gib = 0; gib * GIB < top; gib++) {
        uint64_t pd_gpa = PD_GPA + gib * PAGE;
        pdpt[gib] = pd_gpa | user_table;
        uint64_t *pd = (uint64_t *)(system + pd_gpa);
        for (uint64_t entry = 0; entry < 512; entry++) pd[entry] = (gib * GIB + entry * 2 * MIB) | user_huge;
    }
    /* GDT: null, kernel code, kernel data, user code (64-bit, DPL3), user data (DPL3), TSS. */
    uint64_t *gdt = (uint64_t *)(system + GDT_GPA);
    gdt[1] = 0x00af9b000000ffffULL;
    gdt[2] = 0x00cf93000000ffffULL;
    gdt[3] = 0x00affb000000ffffULL;
    gdt[4] = 0x00cff3000000ffffULL;
    uint64_t tss = TSS_GPA;
    gdt[5] = 0x67 | ((tss & 0xffffff) << 16) | (0x8bULL << 40) | (((tss >> 24) & 0xff) << 56);
    gdt[6] = tss >> 32;
    memcpy(system + CODE_GPA, guest_code, sizeof guest_code);
}

static struct kvm_segment segment(uint16_t selector, uint8_t type, uint8_t dpl, uint8_t code64) {
    struct kvm_segment s = {.base = 0, .limit = 0xffffffff, .selector = selector, .type = type, .present = 1,
                            .dpl = dpl, .db = code64 ? 0 : 1, .s = 1, .l = code64, .g = 1};
    return s;
}

const char *guest_enter_cpl3_long_mode(int fd, int write_protect) {
    struct kvm_sregs sregs;
    if (ioctl(fd, KVM_GET_SREGS, &sregs) < 0) return "KVM_GET_SREGS";
    sregs.cs = segment(0x1b, 0xb, 3, 1);
    sregs.ss = segment(0x23, 0x3, 3, 0);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss;
    sregs.tr = (struct kvm_segment){.base = TSS_GPA, .limit = 0x67, .selector = 0x28, .type = 0xb, .present = 1, .s = 0};
    sregs.ldt = (struct kvm_segment){.selector = 0, .type = 0x2, .present = 0, .unusable = 1};
    sregs.gdt.base = GDT_GPA;
    sregs.gdt.limit = 7 * 8 - 1;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr3 = PML4_GPA;
    sregs.cr4 = 0x20;                                   /* PAE */
    sregs.cr0 = 0x80000033 | (write_protect ? 0x10000 : 0);   /* PG NE ET MP PE, WP toggled by reset */
    sregs.efer = 0x500;                                 /* LME LMA */
    return ioctl(fd, KVM_SET_SREGS, &sregs) < 0 ? "KVM_SET_SREGS" : NULL;
}

const char *guest_start_pass(int fd, uint64_t first, uint64_t last) {
    struct kvm_regs regs;
    memset(&regs, 0, sizeof regs);
    regs.rip = CODE_GPA;
    regs.rdi = first;
    regs.rsi = last;
    regs.rbx = PAGE;
    regs.rflags = 0x3002;                               /* IOPL 3: `out` at CPL3 */
    return ioctl(fd, KVM_SET_REGS, &regs) < 0 ? "KVM_SET_REGS" : NULL;
}
