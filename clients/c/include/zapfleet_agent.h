/*
 * zapfleet_agent.h: the zapfleet fleet protocol for external agents, in C.
 *
 * An external agent joins a zapfleet coordinator like a worker (hello, heartbeats, the same
 * validation, CURVE if the coordinator uses keys) but takes no simulation shards: the
 * coordinator sends it one job per run, the agent measures a real kernel however it likes, and
 * reports block-time samples by operation. The coordinator builds the histograms and reports
 * them as the "external" column beside the simulated policies.
 *
 * The wire format is Proto/zapfleet.proto (package zapfleet.v1), one Envelope per ZeroMQ frame,
 * over a DEALER socket. This library owns the socket; it is not thread-safe: use an agent from
 * one thread at a time.
 */
#ifndef ZAPFLEET_AGENT_H
#define ZAPFLEET_AGENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The protocol version this library speaks (zapfleetProtocolVersion in the Swift code). */
#define ZF_PROTOCOL_VERSION 2u

/* Exit codes, as zapfleet's own (RunExitCode in the Swift code), for the programs in clients/c. */
enum {
    ZF_EXIT_OK = 0,               /* the run ended; or the probe measured */
    ZF_EXIT_REFUSED = 3,          /* refused by the coordinator (protocol version, key, hello) */
    ZF_EXIT_BAD_INPUT = 64,       /* bad usage, or more than the host can give */
    ZF_EXIT_UNAVAILABLE = 69,     /* the probe: no usable KVM on this host */
    ZF_EXIT_INTERNAL_ERROR = 70,  /* a call failed; the message names it */
    ZF_EXIT_INTERRUPTED = 130,    /* SIGINT or SIGTERM */
};

/* A connection to a coordinator. */
typedef struct zf_agent zf_agent;

/* How to connect. Strings are copied; NULL key files mean plain text (loopback coordinators only). */
typedef struct zf_agent_options {
    const char *endpoint;             /* the coordinator, e.g. "tcp://10.0.0.1:5555" */
    const char *name;                 /* unique among the run's workers and agents; also the socket identity */
    const char *coordinator_key_file; /* the coordinator's CURVE public key (zapfleet keygen's NAME.pub) */
    const char *secret_key_file;      /* this agent's CURVE secret key (NAME.key, mode 0600) */
    uint32_t protocol_version;        /* 0 for ZF_PROTOCOL_VERSION; tests set another to see the refusal */
} zf_agent_options;

/* One job: what the coordinator asks this agent to measure. Free with zf_job_free. */
typedef struct zf_job {
    uint32_t job_id;
    char *scenario_name;
    char *scenario_yaml;
    uint64_t guest_memory_bytes;
    uint32_t vcpus;
} zf_job;

/* What zf_agent_poll saw. */
typedef enum zf_event {
    ZF_EVENT_NONE = 0,    /* nothing yet (the timeout passed, or only heartbeats came) */
    ZF_EVENT_JOB,         /* *job is filled in */
    ZF_EVENT_ACK,         /* the coordinator acknowledged the result */
    ZF_EVENT_STOP,        /* the coordinator ended the run; reason says why */
    ZF_EVENT_REFUSED,     /* the coordinator refused this agent (version, key); reason says why */
    ZF_EVENT_ERROR        /* a libzmq error; reason says which */
} zf_event;

/* Samples of one operation ("reset", "fault", "fast_zap", ...), in nanoseconds. */
typedef struct zf_samples {
    const char *operation;
    const uint64_t *nanoseconds;
    size_t count;
} zf_samples;

/* Connects and says hello. Returns NULL and writes why into error on failure. */
zf_agent *zf_agent_connect(const zf_agent_options *options, char *error, size_t error_size);

/*
 * Waits up to timeout_ms for the coordinator and keeps the connection alive (hello until
 * welcomed, then heartbeats; hello again if the coordinator falls silent). When extra_fd is not
 * -1, also returns as soon as it is readable, setting *extra_ready. Fills *job on ZF_EVENT_JOB,
 * and reason (if not NULL) on STOP, REFUSED and ERROR.
 */
zf_event zf_agent_poll(zf_agent *agent, int timeout_ms, int extra_fd, int *extra_ready, zf_job *job,
                       char *reason, size_t reason_size);

/* Tells the coordinator the job is still going: samples so far, time so far. 0 on success. */
int zf_agent_send_progress(zf_agent *agent, uint32_t job_id, uint64_t samples, uint64_t elapsed_ns);

/* Sends the job's samples, by operation. 0 on success. */
int zf_agent_send_result(zf_agent *agent, uint32_t job_id, const zf_samples *operations, size_t operation_count,
                         uint64_t wall_ns, int32_t exit_status, uint64_t lines_rejected);

/* Frees what zf_agent_poll put into a job. */
void zf_job_free(zf_job *job);

/* Closes the connection (pending messages get two seconds to leave) and frees the agent. */
void zf_agent_close(zf_agent *agent);

#ifdef __cplusplus
}
#endif

#endif /* ZAPFLEET_AGENT_H */
