#define _GNU_SOURCE
#include <malloc.h>
#include <sys/eventfd.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include "CLinuxScheduling.h"

int zf_current_cpu(void) {
    return sched_getcpu();
}

int zf_pin_calling_thread(int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) {
        errno = EINVAL;
        return -1;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}

// The process's CPUs as it started: read before main, while the main thread is the only one.
static cpu_set_t process_cpus;
static int process_cpus_known;

__attribute__((constructor)) static void zf_record_process_cpus(void) {
    CPU_ZERO(&process_cpus);
    process_cpus_known = sched_getaffinity(0, sizeof process_cpus, &process_cpus) == 0;
}

int zf_unpin_calling_thread(void) {
    if (!process_cpus_known) {
        errno = ENOSYS;
        return -1;
    }
    return sched_setaffinity(0, sizeof process_cpus, &process_cpus);
}

int zf_allowed_cpu_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    return CPU_COUNT(&set);
}

int zf_return_free_memory(void) {
    return malloc_trim(0);
}

void zf_line_buffer_standard_output(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
}

int zf_make_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
