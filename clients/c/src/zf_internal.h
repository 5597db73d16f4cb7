/*
 * zf_internal.h: what the programs and the library in clients/c share and do not export: the
 * monotonic clock and strict number parsing. Not installed; include it from src/ only.
 */
#ifndef ZF_INTERNAL_H
#define ZF_INTERNAL_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t zf_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Parses a whole decimal number in [minimum, maximum]: digits only (no sign, space, exponent or
 * trailing text; strtoull alone takes "-1" as 2^64 - 1 and " 7x" as 7). 0 on success; -1 with
 * errno EINVAL (not a number) or ERANGE (out of range) otherwise.
 */
static inline int zf_parse_u64(const char *text, uint64_t minimum, uint64_t maximum, uint64_t *value) {
    if (text == NULL || *text < '0' || *text > '9') {
        errno = EINVAL;
        return -1;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long parsed = strtoull(text, &end, 10);
    if (*end != '\0') {
        errno = EINVAL;
        return -1;
    }
    if (errno == ERANGE || parsed < minimum || parsed > maximum) {
        errno = ERANGE;
        return -1;
    }
    *value = (uint64_t)parsed;
    return 0;
}

#endif /* ZF_INTERNAL_H */
