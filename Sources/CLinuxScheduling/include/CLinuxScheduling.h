// The Linux scheduler calls that glibc declares only under _GNU_SOURCE, which Swift's Glibc
// module does not define: the calling thread's CPU, and pinning it to one CPU.
#ifndef ZAPFLEET_C_LINUX_SCHEDULING_H
#define ZAPFLEET_C_LINUX_SCHEDULING_H

/// The CPU the calling thread runs on (sched_getcpu), or -1.
int zf_current_cpu(void);

/// Pins the calling thread to `cpu` (sched_setaffinity); 0 on success, -1 with errno set.
int zf_pin_calling_thread(int cpu);

#endif
