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

/*
 * Errors, as libzmq reports them: a call that fails returns -1 (or NULL) and sets errno;
 * zf_strerror(errno) says what it means, for the system's codes, libzmq's and zapfleet's below.
 */
#define ZF_HAUSNUMERO 0x5a460000       /* "ZF" << 16: clear of the system's and libzmq's codes */
#define ZF_EBADKEY (ZF_HAUSNUMERO + 1) /* a key file holds no 40-character Z85 key */
#define ZF_EPROTO (ZF_HAUSNUMERO + 2)  /* the coordinator refused this agent; zf_agent_reason says why */

/* What errnum means, in words (never NULL). */
const char *zf_strerror(int errnum);

/* The protocol version this library speaks: Proto/zapfleet.proto's PROTOCOL_VERSION_CURRENT. */
uint32_t zf_protocol_version(void);

/* The operations a sample may name (fault, populate, reset, fast_zap, ...), from Proto/'s enum Operation. */
size_t zf_operation_count(void);
/* The name of operation `index` (below zf_operation_count), or NULL with errno EINVAL. */
const char *zf_operation_name(size_t index);
/* The index of the operation called `name`, or -1 with errno EINVAL. */
int zf_operation_index(const char *name);

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
    uint32_t protocol_version;        /* 0 for zf_protocol_version(); tests set another to see the refusal */
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
    ZF_EVENT_STOP,        /* the coordinator ended the run; zf_agent_reason says why */
    ZF_EVENT_REFUSED      /* the coordinator refused this agent (version, key, name); zf_agent_reason says why */
} zf_event;

/* Samples of one operation ("reset", "fault", "fast_zap", ...), in nanoseconds. */
typedef struct zf_samples {
    const char *operation;
    const uint64_t *nanoseconds;
    size_t count;
} zf_samples;

/*
 * Connects and says hello. NULL with errno on failure: EINVAL (no endpoint or name, or only one
 * of the two key files), ENOENT or EACCES (a key file), ZF_EBADKEY, ENOMEM, or libzmq's code.
 */
zf_agent *zf_agent_connect(const zf_agent_options *options);

/*
 * Waits up to timeout_ms for the coordinator and keeps the connection alive (hello until
 * welcomed, then heartbeats; hello again if the coordinator falls silent; a result not yet
 * acknowledged is sent again after every welcome and every liveness period). When extra_fd is
 * not -1, also returns as soon as it is readable, setting *extra_ready. Returns a zf_event (job
 * filled in on ZF_EVENT_JOB), or -1 with errno (libzmq's) when the socket fails.
 */
int zf_agent_poll(zf_agent *agent, int timeout_ms, int extra_fd, int *extra_ready, zf_job *job);

/* Why the coordinator stopped the run or refused this agent: the last reason it gave ("" before any). */
const char *zf_agent_reason(const zf_agent *agent);

/* Tells the coordinator the job is still going: samples so far, time so far. 0, or -1 with errno. */
int zf_agent_send_progress(zf_agent *agent, uint32_t job_id, uint64_t samples, uint64_t elapsed_ns);

/*
 * Sends the job's samples, by operation. The agent keeps the result until the coordinator
 * acknowledges it (ZF_EVENT_ACK) and sends it again after a reconnect, so a frame lost on the way
 * does not lose the job (a newer result replaces one still waiting). 0 when it is sent or kept to
 * be sent; -1 with errno EMSGSIZE when it would be larger than a coordinator takes (64 MiB: fewer
 * samples, --max-samples), or ENOMEM.
 */
int zf_agent_send_result(zf_agent *agent, uint32_t job_id, const zf_samples *operations, size_t operation_count,
                         uint64_t wall_ns, int32_t exit_status, uint64_t lines_rejected);

/* Whether a result waits for its acknowledgement (1) or not (0). */
int zf_agent_result_pending(const zf_agent *agent);

/* Frees what zf_agent_poll put into a job. */
void zf_job_free(zf_job *job);

/* Closes the connection (pending messages get two seconds to leave) and frees the agent. */
void zf_agent_close(zf_agent *agent);

#ifdef __cplusplus
}
#endif

#endif /* ZAPFLEET_AGENT_H */
