#include "CCycleCounter.h"

uint64_t zf_read_cycle_counter_call(void) { return zf_read_cycle_counter(); }
