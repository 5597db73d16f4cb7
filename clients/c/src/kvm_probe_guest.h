/*
 * The probe's guest: its physical layout, page tables, GDT and code, and the vCPU state that
 * runs the code at CPL3 in long mode (under PVM a CPL0 guest is emulated and builds no SPTE).
 */
#ifndef ZAPFLEET_KVM_PROBE_GUEST_H
#define ZAPFLEET_KVM_PROBE_GUEST_H

#include <stdint.h>

/* Guest physical layout: a 2 MiB system slot at 0 (page tables, GDT, TSS, code), data from 1 GiB. */
#define GIB (1ULL << 30)
#define MIB (1ULL << 20)
#define PAGE 4096ULL
/* Guest physical layout: a 2 MiB system slot at 0 (page tables, GDT, TSS, code), data from 1 GiB. */
#define SYSTEM_SLOT_BYTES (2 * MIB)
#define PML4_GPA 0x1000ULL
#define PDPT_GPA 0x2000ULL
#define PD_GPA 0x3000ULL         /* one page directory per GiB mapped, from here */
#define GDT_GPA 0x80000ULL
#define TSS_GPA 0x81000ULL
#define CODE_GPA 0x90000ULL
#define DATA_GPA (1ULL * GIB)
#define MAX_DATA_BYTES (64ULL * GIB)
#define REGION_PORT 0x10
#define DONE_PORT 0x11
#define REGION_BYTES (2 * MIB)

/* Writes the guest's page tables (identity map of [0, DATA_GPA + data_bytes) with 2 MiB user
 * pages), GDT and code into `system`, the host memory of the system slot. */
void guest_build(uint8_t *system, uint64_t data_bytes);

/* Puts vCPU `fd` in 64-bit mode at CPL3 on the guest's tables; `write_protect` sets CR0.WP
 * (toggling it is the selftests' reset). Returns NULL, or the failed ioctl's name (errno set). */
const char *guest_enter_cpl3_long_mode(int fd, int write_protect);

/* Points vCPU `fd` at the loop over [first, last). Returns NULL, or the failed ioctl's name. */
const char *guest_start_pass(int fd, uint64_t first, uint64_t last);

#endif
