// The Linux scheduler calls that glibc declares only under _GNU_SOURCE, which Swift's Glibc
// module does not define: the calling thread's CPU, pinning it to one CPU, and letting it run
// on any CPU the process started with again. Also glibc's malloc_trim, from <malloc.h>, which
// the Glibc module does not include, stdout's buffering, and eventfd, from <sys/eventfd.h>.
#ifndef ZAPFLEET_C_LINUX_SCHEDULING_H
#define ZAPFLEET_C_LINUX_SCHEDULING_H

/// The CPU the calling thread runs on (sched_getcpu), or -1.
int zf_current_cpu(void);

/// Pins the calling thread to `cpu` (sched_setaffinity); 0 on success, -1 with errno set.
int zf_pin_calling_thread(int cpu);

/// Lets the calling thread run on every CPU the process was allowed when it started (its main
/// thread's affinity before main): a thread created by a pinned thread inherits the pin, which
/// an unbound kernel worker does not. 0 on success, -1 with errno set.
int zf_unpin_calling_thread(void);

/// How many CPUs the calling thread may run on (sched_getaffinity), or -1 with errno set.
int zf_allowed_cpu_count(void);

/// Gives the system back the free memory at the top of every malloc arena and the free pages
/// inside them (malloc_trim(0)); 1 if any memory went back, else 0.
int zf_return_free_memory(void);

/// Makes stdout line-buffered, as on a terminal, also when it is a file or a pipe (stdout is
/// a C global that Swift 6 will not touch without a data-race diagnostic).
void zf_line_buffer_standard_output(void);

/// A new non-blocking, close-on-exec eventfd with a count of 0, or -1 with errno set.
int zf_make_eventfd(void);

#endif
