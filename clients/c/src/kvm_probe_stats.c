/* KVM's binary statistics: see kvm_probe_stats.h. */
#define _POSIX_C_SOURCE 200809L   /* pread */
#include "kvm_probe_stats.h"

#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int stats_open(stats_file *stats, int owner_fd) {
    memset(stats, 0, sizeof *stats);
    stats->fd = ioctl(owner_fd, KVM_GET_STATS_FD, NULL);
    if (stats->fd < 0) { stats->count = 0; return 0; }
    struct kvm_stats_header header;
    if (pread(stats->fd, &header, sizeof header, 0) != (ssize_t)sizeof header) { close(stats->fd); stats->fd = -1; return 0; }
    size_t descriptor_size = sizeof(struct kvm_stats_desc) + header.name_size;
    char *descriptors = calloc(header.num_desc, descriptor_size);
    if (!descriptors) return -1;
    if (pread(stats->fd, descriptors, descriptor_size * header.num_desc, header.desc_offset) != (ssize_t)(descriptor_size * header.num_desc)) {
        free(descriptors);
        close(stats->fd);
        stats->fd = -1;
        return 0;
    }
    for (uint32_t index = 0; index < header.num_desc && stats->count < MAX_STATS; index++) {
        struct kvm_stats_desc *descriptor = (struct kvm_stats_desc *)(descriptors + index * descriptor_size);
        /* Cumulative and instant counters of one value; histograms are left out. */
        if (descriptor->size != 1) continue;
        snprintf(stats->names[stats->count], sizeof stats->names[0], "%s", descriptor->name);
        stats->offsets[stats->count] = header.data_offset + descriptor->offset;
        stats->count++;
    }
    free(descriptors);
    return 0;
}

void stats_read(const stats_file *stats, uint64_t *values) {
    for (int index = 0; index < stats->count; index++) {
        values[index] = 0;
        if (pread(stats->fd, &values[index], sizeof(uint64_t), (off_t)stats->offsets[index]) != (ssize_t)sizeof(uint64_t)) values[index] = 0;
    }
}


long long stats_value(const stats_file *stats, const char *name) {
    uint64_t values[MAX_STATS];
    stats_read(stats, values);
    for (int index = 0; index < stats->count; index++)
        if (strcmp(stats->names[index], name) == 0) return (long long)values[index];
    return -1;
}
