// The CPU's time-stamp counter, for the block-time clock (ZapPlatform's BlockClock): RDTSC where
// the CPU has one, else nothing (the clock then falls back to CLOCK_MONOTONIC).
#ifndef ZAPFLEET_C_CYCLE_COUNTER_H
#define ZAPFLEET_C_CYCLE_COUNTER_H

#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
/// Whether this build can read a time-stamp counter at all (the CPU's flags say whether it is usable).
static inline int zf_cycle_counter_built(void) { return 1; }
/// The time-stamp counter (RDTSC: not serialising; an operation measured is microseconds long, the
/// reordering a few cycles).
static inline uint64_t zf_read_cycle_counter(void) { return __rdtsc(); }
#else
static inline int zf_cycle_counter_built(void) { return 0; }
static inline uint64_t zf_read_cycle_counter(void) { return 0; }
#endif

/// The same counter through a call: for callers that cannot inline the header.
uint64_t zf_read_cycle_counter_call(void);

#endif
