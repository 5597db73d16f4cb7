#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
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
