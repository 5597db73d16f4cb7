/*
 * zapfleet-kvm-probe: the max-guest-memory timeline on this host's real KVM.
 *
 * A 64-bit guest built by the host (GDT, identity page tables with 2 MiB guest pages, a loop
 * that writes one byte per 4 KiB page) runs on N vCPU threads, each over its part of guest
 * memory. The timeline, per VM:
 *
 *   populate   every vCPU touches all of its part (first touch: KVM builds the SPTEs), one
 *              sample per 2 MiB region, as the simulation records them
 *   reset      every vCPU's CR0.WP is toggled with KVM_SET_SREGS (the selftests' reset: the MMU
 *              role changes, the roots are reloaded)
 *   populate   every vCPU touches its part again, through the new roots
 *   fast_zap   half the memslots are deleted, one KVM_SET_USER_MEMORY_REGION at a time
 *   teardown   the VM's file descriptors are closed (kvm_destroy_vm)
 *
 * twice: with KVM_X86_QUIRK_SLOT_ZAP_ALL (the default: deleting a memslot zaps every SPTE of the
 * VM) and without it (KVM_CAP_DISABLE_QUIRKS2: only the slot's), where the kernel has the cap.
 *
 * Standard output is one sample per line in zapfleet-agent-c's format ("OPERATION NANOSECONDS"),
 * so `zapfleet-agent-c --connect … -- zapfleet-kvm-probe …` brings them to a coordinator as the
 * external column. --json FILE also writes every event with the KVM binary stats' deltas
 * (KVM_GET_STATS_FD: pages_4k, mmu_shadow_zapped, remote_tlb_flush, pf_fixed, …) and labels:
 * kernel version, which MMU (tdp_mmu parameter, kvm_pvm), quirks.
 *
 * Under PVM (a paravirtualised hypervisor) a guest at CPL0 is emulated instruction by
 * instruction and builds no SPTEs, so the loop runs at CPL3: DPL3 segments, U/S set in the guest
 * page tables, IOPL 3 for the `out` that ends a pass. That is as valid on any other host.
 *
 * Exit codes: 0 measured; 64 bad usage, or more guest memory than the host has available;
 * 69 no usable /dev/kvm; 70 a KVM call failed (the message names it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "kvm_probe_guest.h"
#include "kvm_probe_stats.h"
#include "zapfleet_agent.h"   /* ZF_EXIT_* */
#include "zf_internal.h"      /* zf_now_ns, zf_parse_u64 */

#define MAX_VCPUS 64
#define MAX_SLOTS 512

static void fail(int code, const char *format, ...) {
    va_list arguments;
    va_start(arguments, format);
    fputs("zapfleet-kvm-probe: ", stderr);
    vfprintf(stderr, format, arguments);
    fputc('\n', stderr);
    va_end(arguments);
    exit(code);
}

/* "1GiB", "256MiB", "4096" (bytes). */
static uint64_t parse_size(const char *text) {
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || !(value >= 0) || value > 1e15) return 0;
    uint64_t scale = 1;
    if (strcmp(end, "GiB") == 0) scale = GIB;
    else if (strcmp(end, "MiB") == 0) scale = MIB;
    else if (strcmp(end, "KiB") == 0) scale = 1024;
    else if (strcmp(end, "") != 0 && strcmp(end, "B") != 0) return 0;
    return (uint64_t)(value * (double)scale);
}

/* MemAvailable from /proc/meminfo, in bytes; 0 if unknown. */
static uint64_t available_memory(void) {
    FILE *file = fopen("/proc/meminfo", "r");
    if (!file) return 0;
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, file))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) break;
    fclose(file);
    return kib * 1024;
}

static void read_first_line(const char *path, char *out, size_t size) {
    snprintf(out, size, "unknown");
    FILE *file = fopen(path, "r");
    if (!file) return;
    if (fgets(out, (int)size, file)) out[strcspn(out, "\n")] = 0;
    fclose(file);
}

/* A module is present, loaded or built in, when /sys/module has it (/proc/modules lists only
 * loadable ones, and does not exist on a kernel without module support). */
static int module_present(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "/sys/module/%s", name);
    return access(path, F_OK) == 0;
}

/* ---- the VM ---- */

typedef struct probe_vm probe_vm;

typedef struct {
    probe_vm *vm;
    int index;
    int fd;
    struct kvm_run *run;
    size_t run_size;
    uint64_t first, last;   /* its part of guest memory: [first, last), whole 2 MiB regions */
    uint64_t *region_ns;    /* of its last pass, one per 2 MiB region */
    int regions;
    int failed;
    stats_file stats;
} probe_vcpu;

struct probe_vm {
    int kvm_fd, fd;
    uint64_t data_bytes, slot_bytes;
    int slots, vcpus;
    uint8_t *system;
    uint8_t *data[MAX_SLOTS];
    int slot_present[MAX_SLOTS];
    probe_vcpu vcpu[MAX_VCPUS];
    stats_file stats;
    int zap_all_quirk;      /* 1: deleting a memslot zaps everything */
};

/* The guest's CPL3 long mode on `vcpu`, CR0.WP as asked; a failed ioctl ends the probe. */
static void enter_cpl3_long_mode(const probe_vcpu *vcpu, int write_protect) {
    const char *failed = guest_enter_cpl3_long_mode(vcpu->fd, write_protect);
    if (failed) fail(ZF_EXIT_INTERNAL_ERROR, "%s on vCPU %d: %s", failed, vcpu->index, strerror(errno));
}

/* One pass of one vCPU over its part: KVM_RUN until the guest's `out`. */
static void *run_pass(void *argument) {
    probe_vcpu *vcpu = argument;
    const char *failed = guest_start_pass(vcpu->fd, vcpu->first, vcpu->last);
    if (failed) fail(ZF_EXIT_INTERNAL_ERROR, "%s: %s", failed, strerror(errno));
    uint64_t start = zf_now_ns();
    int region = 0;
    for (;;) {
        if (ioctl(vcpu->fd, KVM_RUN, NULL) < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            fprintf(stderr, "zapfleet-kvm-probe: KVM_RUN on vCPU %d: %s\n", vcpu->index, strerror(errno));
            vcpu->failed = 1;
            break;
        }
        if (vcpu->run->exit_reason == KVM_EXIT_IO && vcpu->run->io.port == REGION_PORT && region < vcpu->regions) {
            uint64_t now = zf_now_ns();
            vcpu->region_ns[region++] = now - start;
            start = now;
            continue;
        }
        if (vcpu->run->exit_reason == KVM_EXIT_IO && vcpu->run->io.port == DONE_PORT) {
            if (region != vcpu->regions) {
                fprintf(stderr, "zapfleet-kvm-probe: vCPU %d ended its pass after %d of %d regions\n", vcpu->index, region, vcpu->regions);
                vcpu->failed = 1;
            }
            break;
        }
        if (vcpu->run->exit_reason == KVM_EXIT_INTR) continue;
        struct kvm_regs regs;
        ioctl(vcpu->fd, KVM_GET_REGS, &regs);
        fprintf(stderr, "zapfleet-kvm-probe: vCPU %d stopped with exit reason %u at rip 0x%llx rdi 0x%llx\n",
                vcpu->index, vcpu->run->exit_reason, (unsigned long long)regs.rip, (unsigned long long)regs.rdi);
        vcpu->failed = 1;
        break;
    }
    return NULL;
}

static void set_memslot(probe_vm *vm, uint32_t slot, uint64_t gpa, uint64_t bytes, void *host) {
    struct kvm_userspace_memory_region region = {.slot = slot, .guest_phys_addr = gpa, .memory_size = bytes,
                                                  .userspace_addr = (uint64_t)(uintptr_t)host};
    if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        fail(ZF_EXIT_INTERNAL_ERROR, "KVM_SET_USER_MEMORY_REGION slot %u (%llu bytes): %s", slot, (unsigned long long)bytes, strerror(errno));
}

static void *anonymous(uint64_t bytes) {
    void *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED) fail(ZF_EXIT_INTERNAL_ERROR, "mmap of %llu bytes: %s", (unsigned long long)bytes, strerror(errno));
    /* 4 KiB host pages, so that there is one SPTE per guest page, as the simulation counts. */
    madvise(memory, bytes, MADV_NOHUGEPAGE);
    return memory;
}

static void create_vm(probe_vm *vm, int kvm_fd, uint64_t data_bytes, uint64_t slot_bytes, int vcpus, int zap_all_quirk) {
    memset(vm, 0, sizeof *vm);
    vm->kvm_fd = kvm_fd;
    vm->data_bytes = data_bytes;
    vm->slot_bytes = slot_bytes;
    vm->slots = (int)(data_bytes / slot_bytes);
    vm->vcpus = vcpus;
    vm->zap_all_quirk = zap_all_quirk;
    vm->fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
    if (vm->fd < 0) fail(ZF_EXIT_INTERNAL_ERROR, "KVM_CREATE_VM: %s", strerror(errno));
    if (!zap_all_quirk) {
        struct kvm_enable_cap cap = {.cap = KVM_CAP_DISABLE_QUIRKS2, .args = {1ULL << 7}};   /* KVM_X86_QUIRK_SLOT_ZAP_ALL */
        if (ioctl(vm->fd, KVM_ENABLE_CAP, &cap) < 0) fail(ZF_EXIT_INTERNAL_ERROR, "KVM_ENABLE_CAP(DISABLE_QUIRKS2, SLOT_ZAP_ALL): %s", strerror(errno));
    }
    ioctl(vm->fd, KVM_SET_TSS_ADDR, 0xfffbd000UL);
    vm->system = anonymous(SYSTEM_SLOT_BYTES);
    guest_build(vm->system, data_bytes);
    set_memslot(vm, 0, 0, SYSTEM_SLOT_BYTES, vm->system);
    for (int slot = 0; slot < vm->slots; slot++) {
        vm->data[slot] = anonymous(slot_bytes);
        set_memslot(vm, (uint32_t)slot + 1, DATA_GPA + (uint64_t)slot * slot_bytes, slot_bytes, vm->data[slot]);
        vm->slot_present[slot] = 1;
    }
    if (stats_open(&vm->stats, vm->fd) < 0) fail(ZF_EXIT_INTERNAL_ERROR, "out of memory reading KVM stats");

    int cpuid_entries = 256;
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof *cpuid + (size_t)cpuid_entries * sizeof(struct kvm_cpuid_entry2));
    if (!cpuid) fail(ZF_EXIT_INTERNAL_ERROR, "out of memory");
    cpuid->nent = (uint32_t)cpuid_entries;
    if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) < 0) fail(ZF_EXIT_INTERNAL_ERROR, "KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
    int run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size <= 0) fail(ZF_EXIT_INTERNAL_ERROR, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
    uint64_t part = data_bytes / (uint64_t)vcpus / REGION_BYTES * REGION_BYTES;
    for (int index = 0; index < vcpus; index++) {
        probe_vcpu *vcpu = &vm->vcpu[index];
        vcpu->vm = vm;
        vcpu->index = index;
        vcpu->fd = ioctl(vm->fd, KVM_CREATE_VCPU, index);
        if (vcpu->fd < 0) fail(ZF_EXIT_INTERNAL_ERROR, "KVM_CREATE_VCPU %d: %s", index, strerror(errno));
        /* CPUID first: it cannot change after the first KVM_RUN. */
        if (ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid) < 0) fail(ZF_EXIT_INTERNAL_ERROR, "KVM_SET_CPUID2: %s", strerror(errno));
        vcpu->run_size = (size_t)run_size;
        vcpu->run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
        if (vcpu->run == MAP_FAILED) fail(ZF_EXIT_INTERNAL_ERROR, "mmap of the kvm_run area: %s", strerror(errno));
        vcpu->first = DATA_GPA + part * (uint64_t)index;
        vcpu->last = index == vcpus - 1 ? DATA_GPA + data_bytes : vcpu->first + part;
        vcpu->regions = (int)((vcpu->last - vcpu->first) / REGION_BYTES);
        vcpu->region_ns = calloc((size_t)vcpu->regions, sizeof(uint64_t));
        if (!vcpu->region_ns) fail(ZF_EXIT_INTERNAL_ERROR, "out of memory");
        enter_cpl3_long_mode(vcpu, 0);
        if (stats_open(&vcpu->stats, vcpu->fd) < 0) fail(ZF_EXIT_INTERNAL_ERROR, "out of memory reading KVM stats");
    }
    free(cpuid);
}

/* ---- stats deltas per event ---- */

typedef struct {
    uint64_t vm[MAX_STATS];
    uint64_t vcpus[MAX_STATS];   /* summed over vCPUs (every vCPU has the same descriptors) */
} stats_snapshot;

static void snapshot(const probe_vm *vm, stats_snapshot *out) {
    memset(out, 0, sizeof *out);
    stats_read(&vm->stats, out->vm);
    for (int index = 0; index < vm->vcpus; index++) {
        uint64_t values[MAX_STATS];
        stats_read(&vm->vcpu[index].stats, values);
        for (int stat = 0; stat < vm->vcpu[index].stats.count; stat++) out->vcpus[stat] += values[stat];
    }
}

static FILE *json;
static int json_events;
static const char *watched_vm_stats[] = {"pages_4k", "pages_2m", "pages_1g", "mmu_shadow_zapped", "mmu_pde_zapped",
                                         "mmu_recycled", "mmu_cache_miss", "remote_tlb_flush", "remote_tlb_flush_requests",
                                         "nx_lpage_splits"};
static const char *watched_vcpu_stats[] = {"pf_taken", "pf_fixed", "pf_emulate", "pf_spurious", "pf_fast", "pf_mmio_spte_created",
                                           "tlb_flush", "exits", "io_exits", "insn_emulation"};

static void json_stats(const char *key, const stats_file *stats, const uint64_t *before, const uint64_t *after,
                       const char **watched, size_t watched_count) {
    fprintf(json, ", \"%s\": {", key);
    int first = 1;
    for (int index = 0; index < stats->count; index++) {
        for (size_t name = 0; name < watched_count; name++) {
            if (strcmp(stats->names[index], watched[name]) != 0) continue;
            fprintf(json, "%s\"%s\": %lld", first ? "" : ", ", stats->names[index], (long long)(after[index] - before[index]));
            first = 0;
        }
    }
    fputs("}", json);
}

/* One event: its samples on stdout (the agent's format) and, with --json, the record. */
static void report(const probe_vm *vm, const char *phase, const char *operation, const uint64_t *samples, int count,
                   const stats_snapshot *before, const stats_snapshot *after, long long sptes_zapped) {
    for (int index = 0; index < count; index++) printf("%s %llu\n", operation, (unsigned long long)samples[index]);
    fflush(stdout);
    if (!json) return;
    fprintf(json, "%s\n    {\"quirk_slot_zap_all\": %s, \"event\": \"%s\", \"operation\": \"%s\", \"samples_ns\": [",
            json_events++ ? "," : "", vm->zap_all_quirk ? "true" : "false", phase, operation);
    for (int index = 0; index < count; index++) fprintf(json, "%s%llu", index ? ", " : "", (unsigned long long)samples[index]);
    fputs("]", json);
    /* Calibration: the event's time over the leaf SPTEs it removed (pages_4k before less after). */
    if (sptes_zapped > 0) {
        uint64_t total = 0;
        for (int index = 0; index < count; index++) total += samples[index];
        fprintf(json, ", \"sptes_zapped\": %lld, \"ns_per_spte\": %.2f", sptes_zapped, (double)total / (double)sptes_zapped);
    }
    if (after) {
        json_stats("vm_stats", &vm->stats, before->vm, after->vm, watched_vm_stats, sizeof watched_vm_stats / sizeof *watched_vm_stats);
        if (vm->vcpus > 0 && vm->vcpu[0].stats.fd >= 0)
            json_stats("vcpu_stats", &vm->vcpu[0].stats, before->vcpus, after->vcpus, watched_vcpu_stats,
                       sizeof watched_vcpu_stats / sizeof *watched_vcpu_stats);
    }
    fputs("}", json);
}

static void all_vcpus_pass(probe_vm *vm, const char *phase) {
    stats_snapshot before, after;
    snapshot(vm, &before);
    pthread_t threads[MAX_VCPUS];
    for (int index = 0; index < vm->vcpus; index++) pthread_create(&threads[index], NULL, run_pass, &vm->vcpu[index]);
    uint64_t *samples = calloc(vm->data_bytes / REGION_BYTES, sizeof(uint64_t));
    if (!samples) fail(ZF_EXIT_INTERNAL_ERROR, "out of memory");
    int count = 0;
    for (int index = 0; index < vm->vcpus; index++) {
        pthread_join(threads[index], NULL);
        if (vm->vcpu[index].failed) fail(ZF_EXIT_INTERNAL_ERROR, "vCPU %d did not finish its pass (%s); see above", index, phase);
        for (int region = 0; region < vm->vcpu[index].regions; region++) samples[count++] = vm->vcpu[index].region_ns[region];
    }
    snapshot(vm, &after);
    report(vm, phase, "populate", samples, count, &before, &after, 0);
    free(samples);
}

static void reset_vcpus(probe_vm *vm) {
    stats_snapshot before, after;
    snapshot(vm, &before);
    uint64_t samples[MAX_VCPUS];
    for (int index = 0; index < vm->vcpus; index++) {
        uint64_t start = zf_now_ns();
        enter_cpl3_long_mode(&vm->vcpu[index], 1);
        samples[index] = zf_now_ns() - start;
    }
    snapshot(vm, &after);
    report(vm, "reset", "reset", samples, vm->vcpus, &before, &after, 0);
}

static void delete_half_the_memslots(probe_vm *vm) {
    stats_snapshot before, after;
    long long mapped = stats_value(&vm->stats, "pages_4k");
    snapshot(vm, &before);
    uint64_t samples[MAX_SLOTS];
    int count = 0;
    /* Every other memslot, as the selftest deletes them: the deleted ones spread over the VM. */
    for (int slot = 0; slot < vm->slots; slot += 2) {
        uint64_t start = zf_now_ns();
        set_memslot(vm, (uint32_t)slot + 1, DATA_GPA + (uint64_t)slot * vm->slot_bytes, 0, vm->data[slot]);
        samples[count++] = zf_now_ns() - start;
        vm->slot_present[slot] = 0;
    }
    snapshot(vm, &after);
    long long left = stats_value(&vm->stats, "pages_4k");
    report(vm, "delete_memslots", "fast_zap", samples, count, &before, &after, mapped >= 0 && left >= 0 ? mapped - left : 0);
}

static void destroy_vm(probe_vm *vm) {
    long long mapped = stats_value(&vm->stats, "pages_4k");   /* every leaf SPTE left goes with the VM */
    for (int index = 0; index < vm->vcpus; index++) {
        free(vm->vcpu[index].region_ns);
        munmap(vm->vcpu[index].run, vm->vcpu[index].run_size);
        if (vm->vcpu[index].stats.fd >= 0) close(vm->vcpu[index].stats.fd);
    }
    if (vm->stats.fd >= 0) close(vm->stats.fd);
    uint64_t start = zf_now_ns();
    for (int index = 0; index < vm->vcpus; index++) close(vm->vcpu[index].fd);
    close(vm->fd);   /* the last reference: kvm_destroy_vm runs here */
    uint64_t sample = zf_now_ns() - start;
    report(vm, "close", "teardown", &sample, 1, NULL, NULL, mapped);
    for (int slot = 0; slot < vm->slots; slot++) munmap(vm->data[slot], vm->slot_bytes);
    munmap(vm->system, SYSTEM_SLOT_BYTES);
}

static void usage(FILE *out) {
    fputs("usage: zapfleet-kvm-probe [--memory SIZE] [--memslot SIZE] [--vcpus N] [--json FILE] [--quirk on|off|both]\n"
          "Runs the max-guest-memory timeline (populate, reset, populate, delete half the memslots, close) on this\n"
          "host's KVM and prints one sample per line as \"OPERATION NANOSECONDS\" (zapfleet-agent-c's format).\n"
          "Defaults: --memory 1GiB, --memslot a quarter of it, --vcpus $ZAPFLEET_VCPUS or 2, --quirk both.\n"
          "Needs /dev/kvm (root here) and the guest memory free on the host: its pages are real host memory.\n", out);
}

int main(int argc, char **argv) {
    uint64_t memory = GIB, memslot = 0;
    /* Run as an agent's job (zapfleet-agent-c --kvm), the job gives the scenario's vCPUs. */
    const char *job_vcpus = getenv("ZAPFLEET_VCPUS");
    uint64_t vcpus_given = 2;
    if (job_vcpus != NULL && zf_parse_u64(job_vcpus, 1, UINT32_MAX, &vcpus_given) != 0)
        fail(ZF_EXIT_BAD_INPUT, "ZAPFLEET_VCPUS '%s' is not a number of vCPUs (1 or more)", job_vcpus);
    /* A job's vCPUs are clamped below to what the probe runs; --vcpus is taken exactly or refused. */
    int vcpus = vcpus_given > MAX_VCPUS ? MAX_VCPUS : (int)vcpus_given;
    const char *json_path = NULL, *quirk = "both";
    for (int index = 1; index < argc; index++) {
        const char *argument = argv[index];
        if (strcmp(argument, "--help") == 0 || strcmp(argument, "-h") == 0) { usage(stdout); return 0; }
        if (index + 1 >= argc) { usage(stderr); return ZF_EXIT_BAD_INPUT; }
        const char *value = argv[++index];
        if (strcmp(argument, "--memory") == 0) memory = parse_size(value);
        else if (strcmp(argument, "--memslot") == 0) memslot = parse_size(value);
        else if (strcmp(argument, "--vcpus") == 0) {
            if (zf_parse_u64(value, 1, MAX_VCPUS, &vcpus_given) != 0)
                fail(ZF_EXIT_BAD_INPUT, "--vcpus '%s' must be a whole number from 1 to %d", value, MAX_VCPUS);
            vcpus = (int)vcpus_given;
        }
        else if (strcmp(argument, "--json") == 0) json_path = value;
        else if (strcmp(argument, "--quirk") == 0) quirk = value;
        else { fprintf(stderr, "zapfleet-kvm-probe: unknown option %s\n", argument); usage(stderr); return ZF_EXIT_BAD_INPUT; }
    }
    /* Four memslots by default, each a whole number of 2 MiB regions. */
    if (memslot == 0) memslot = memory / 4 / (2 * MIB) * (2 * MIB);
    if (vcpus > MAX_VCPUS) vcpus = MAX_VCPUS;
    if (vcpus > 0 && (uint64_t)vcpus > memory / (2 * MIB)) vcpus = (int)(memory / (2 * MIB));
    if (memslot < 2 * MIB || memslot % (2 * MIB) != 0)
        fail(ZF_EXIT_BAD_INPUT, "--memslot must be a multiple of 2MiB (e.g. 256MiB)");
    if (memory < memslot || memory % memslot != 0 || memory > MAX_DATA_BYTES || memory / memslot > MAX_SLOTS)
        fail(ZF_EXIT_BAD_INPUT, "--memory must be a whole number of memslots, at most %d of them and 64GiB (e.g. 1GiB with --memslot 256MiB)", MAX_SLOTS);
    if (vcpus < 1 || vcpus > MAX_VCPUS || (uint64_t)vcpus > memory / (2 * MIB))
        fail(ZF_EXIT_BAD_INPUT, "--vcpus must be between 1 and %d, and at most one per 2MiB of --memory", MAX_VCPUS);
    if (strcmp(quirk, "on") != 0 && strcmp(quirk, "off") != 0 && strcmp(quirk, "both") != 0)
        fail(ZF_EXIT_BAD_INPUT, "--quirk must be on, off or both");
    /* The guest's pages are the host's: refuse what would push the host into reclaim or OOM. */
    uint64_t available = available_memory();
    uint64_t needed = memory + 64 * MIB;
    if (available > 0 && needed > available)
        fail(ZF_EXIT_BAD_INPUT, "asked for %llu MiB of guest memory, but the host has %llu MiB available (MemAvailable); "
                 "the guest's pages are real host memory: give a smaller --memory",
             (unsigned long long)(memory / MIB), (unsigned long long)(available / MIB));

    int kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm_fd < 0)
        fail(ZF_EXIT_UNAVAILABLE, "cannot open /dev/kvm (%s): no usable KVM on this host (it needs the kvm module and, here, root)", strerror(errno));
    if (ioctl(kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) fail(ZF_EXIT_UNAVAILABLE, "/dev/kvm speaks another KVM API version");
    int quirks_cap = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DISABLE_QUIRKS2);
    int can_disable_zap_all = quirks_cap > 0 && (quirks_cap & (1 << 7));

    struct utsname host;
    uname(&host);
    char tdp_mmu[32], ept[32];
    read_first_line("/sys/module/kvm/parameters/tdp_mmu", tdp_mmu, sizeof tdp_mmu);
    read_first_line("/sys/module/kvm_intel/parameters/ept", ept, sizeof ept);
    int pvm = module_present("kvm_pvm");
    const char *mmu = strcmp(tdp_mmu, "Y") == 0 ? "tdp" : "shadow";
    fprintf(stderr, "zapfleet-kvm-probe: kernel %s, %s MMU (kvm.tdp_mmu=%s)%s; %llu MiB in %llu MiB memslots, %d vCPUs\n",
            host.release, mmu, tdp_mmu, pvm ? ", nested under PVM (kvm_pvm)" : "",
            (unsigned long long)(memory / MIB), (unsigned long long)(memslot / MIB), vcpus);
    if (json_path) {
        json = fopen(json_path, "w");
        if (!json) fail(ZF_EXIT_BAD_INPUT, "--json %s: cannot write (%s)", json_path, strerror(errno));
        fprintf(json, "{\n  \"probe\": \"zapfleet-kvm-probe\", \"kernel\": \"%s\", \"machine\": \"%s\", \"host\": \"%s\",\n"
                      "  \"mmu\": \"%s\", \"tdp_mmu_parameter\": \"%s\", \"nested_under_pvm\": %s,\n"
                      "  \"guest_memory_bytes\": %llu, \"memslot_bytes\": %llu, \"vcpus\": %d, \"pages\": %llu,\n"
                      "  \"slot_zap_all_quirk_can_be_disabled\": %s,\n  \"events\": [",
                host.release, host.machine, host.nodename, mmu, tdp_mmu, pvm ? "true" : "false",
                (unsigned long long)memory, (unsigned long long)memslot, vcpus, (unsigned long long)(memory / PAGE),
                can_disable_zap_all ? "true" : "false");
    }
    int runs[2] = {strcmp(quirk, "off") != 0, strcmp(quirk, "on") != 0 && can_disable_zap_all};
    if (strcmp(quirk, "off") == 0 && !can_disable_zap_all)
        fail(ZF_EXIT_UNAVAILABLE, "this kernel cannot turn KVM_X86_QUIRK_SLOT_ZAP_ALL off (KVM_CAP_DISABLE_QUIRKS2 lacks it)");
    for (int pass = 0; pass < 2; pass++) {
        if (!runs[pass]) continue;
        probe_vm vm;
        create_vm(&vm, kvm_fd, memory, memslot, vcpus, pass == 0);
        all_vcpus_pass(&vm, "populate");
        reset_vcpus(&vm);
        all_vcpus_pass(&vm, "populate_after_reset");
        delete_half_the_memslots(&vm);
        destroy_vm(&vm);
    }
    if (json) {
        fputs("\n  ]\n}\n", json);
        fclose(json);
    }
    close(kvm_fd);
    return 0;
}
