/* KVM's binary statistics (KVM_GET_STATS_FD) of a VM or a vCPU: the single-value counters. */
#ifndef ZAPFLEET_KVM_PROBE_STATS_H
#define ZAPFLEET_KVM_PROBE_STATS_H

#include <stdint.h>

#define MAX_STATS 128
typedef struct {
    int fd;                 /* -1 when the kernel has no binary stats */
    int count;
    char names[MAX_STATS][64];
    uint64_t offsets[MAX_STATS];
} stats_file;

/* Opens the stats of the VM or vCPU `owner_fd` and reads their descriptors. Returns 0 (with
 * `fd` -1 and no stats if the kernel has none), or -1 when out of memory. */
int stats_open(stats_file *stats, int owner_fd);

/* Reads every counter into `values` (MAX_STATS of them), in descriptor order. */
void stats_read(const stats_file *stats, uint64_t *values);

/* The current value of counter `name`, or -1 if there is no such counter. */
long long stats_value(const stats_file *stats, const char *name);

#endif
