/* zapfleet_agent.c: the fleet protocol for external agents over libzmq, with protobuf-c. */
#define _POSIX_C_SOURCE 200809L
#include "zapfleet_agent.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "zapfleet.pb-c.h"
#include "zf_internal.h"

/* The largest frame a coordinator takes by default, and the largest accepted from it (as the Swift worker). */
#define ZF_MAXIMUM_MESSAGE (64LL << 20)

struct zf_agent {
    void *context;
    void *socket;
    char *name;
    char host[256];
    uint32_t protocol_version;
    int welcomed;
    uint64_t interval_ns;   /* heartbeat interval, from the welcome */
    uint64_t liveness;      /* silent intervals before the coordinator is presumed gone */
    uint64_t last_sent;
    uint64_t last_heard;
    char reason[512];       /* the last stop or refusal reason */
    uint8_t *pending;       /* the packed result envelope, kept until acknowledged */
    size_t pending_size;
    uint64_t pending_sent;  /* when it last went out (0: not yet) */
};

/* --- Errors ------------------------------------------------------------------------------- */

const char *zf_strerror(int errnum) {
    switch (errnum) {
    case ZF_EBADKEY: return "not a CURVE key file: no 40-character Z85 key in it (make one with `zapfleet keygen`)";
    case ZF_EPROTO: return "refused by the coordinator";
    default: return zmq_strerror(errnum); /* libzmq's own codes, and strerror for the system's */
    }
}

/* --- What Proto/ defines ------------------------------------------------------------------ */

uint32_t zf_protocol_version(void) { return (uint32_t)ZAPFLEET__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT; }

#define ZF_MAXIMUM_OPERATIONS 64
static char operation_names[ZF_MAXIMUM_OPERATIONS][32];
static size_t operation_total;
static pthread_once_t operations_once = PTHREAD_ONCE_INIT;

/* The names of enum Operation's values after OPERATION_UNSPECIFIED: "OPERATION_FAST_ZAP" is "fast_zap". */
static void load_operation_names(void) {
    const ProtobufCEnumDescriptor *descriptor = &zapfleet__v1__operation__descriptor;
    const char *prefix = "OPERATION_";
    for (unsigned index = 0; index < descriptor->n_values && operation_total < ZF_MAXIMUM_OPERATIONS; index++) {
        const char *name = descriptor->values[index].name;
        if (descriptor->values[index].value == 0 || strncmp(name, prefix, strlen(prefix)) != 0) continue;
        name += strlen(prefix);
        size_t length = 0;
        for (; name[length] != '\0' && length + 1 < sizeof operation_names[0]; length++)
            operation_names[operation_total][length] = (char)tolower((unsigned char)name[length]);
        operation_names[operation_total][length] = '\0';
        operation_total++;
    }
}

size_t zf_operation_count(void) {
    pthread_once(&operations_once, load_operation_names);
    return operation_total;
}

const char *zf_operation_name(size_t index) {
    if (index >= zf_operation_count()) {
        errno = EINVAL;
        return NULL;
    }
    return operation_names[index];
}

int zf_operation_index(const char *name) {
    for (size_t index = 0; name != NULL && index < zf_operation_count(); index++)
        if (strcmp(name, operation_names[index]) == 0) return (int)index;
    errno = EINVAL;
    return -1;
}

/* --- Sending ------------------------------------------------------------------------------ */

/* Packs an envelope into a new buffer (the caller frees it). NULL with errno EMSGSIZE or ENOMEM. */
static uint8_t *pack(zf_agent *agent, Zapfleet__V1__Envelope *envelope, size_t *size) {
    envelope->protocol_version = agent->protocol_version;
    *size = zapfleet__v1__envelope__get_packed_size(envelope);
    if (*size > (size_t)ZF_MAXIMUM_MESSAGE) {
        errno = EMSGSIZE;
        return NULL;
    }
    uint8_t *buffer = malloc(*size > 0 ? *size : 1);
    if (buffer == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    zapfleet__v1__envelope__pack(envelope, buffer);
    return buffer;
}

/* Sends packed bytes as one frame. 0, or -1 with libzmq's errno (EAGAIN: nowhere to send now). */
static int send_bytes(zf_agent *agent, const uint8_t *bytes, size_t size) {
    if (zmq_send(agent->socket, bytes, size, ZMQ_DONTWAIT) < 0) return -1;
    agent->last_sent = zf_now_ns();
    return 0;
}

static int send_envelope(zf_agent *agent, Zapfleet__V1__Envelope *envelope) {
    size_t size;
    uint8_t *buffer = pack(agent, envelope, &size);
    if (buffer == NULL) return -1;
    int status = send_bytes(agent, buffer, size);
    int saved = errno;
    free(buffer);
    errno = saved;
    return status;
}

static int send_hello(zf_agent *agent) {
    Zapfleet__V1__Hello hello = ZAPFLEET__V1__HELLO__INIT;
    hello.build_version = "zapfleet-agent-c 0.2.0";
    hello.host_name = agent->host;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    hello.cores = cores > 0 ? (uint32_t)cores : 1;
    /* An agent builds no page tables; the budget only has to be non-zero to be accepted. */
    hello.memory_budget_bytes = 1;
    hello.worker_name = agent->name;
    hello.role = ZAPFLEET__V1__WORKER_ROLE__WORKER_ROLE_EXTERNAL_AGENT;
    Zapfleet__V1__Envelope envelope = ZAPFLEET__V1__ENVELOPE__INIT;
    envelope.body_case = ZAPFLEET__V1__ENVELOPE__BODY_HELLO;
    envelope.hello = &hello;
    return send_envelope(agent, &envelope);
}

static int send_heartbeat(zf_agent *agent) {
    Zapfleet__V1__Heartbeat heartbeat = ZAPFLEET__V1__HEARTBEAT__INIT;
    Zapfleet__V1__Envelope envelope = ZAPFLEET__V1__ENVELOPE__INIT;
    envelope.body_case = ZAPFLEET__V1__ENVELOPE__BODY_HEARTBEAT;
    envelope.heartbeat = &heartbeat;
    return send_envelope(agent, &envelope);
}

/* Sends the result that waits for its acknowledgement, if any. A send that cannot go now is tried again later. */
static void send_pending(zf_agent *agent) {
    if (agent->pending != NULL && send_bytes(agent, agent->pending, agent->pending_size) == 0) agent->pending_sent = zf_now_ns();
}

/* --- Connecting ---------------------------------------------------------------------------- */

/* Reads the first line of a key file that is not a comment: a 40-character Z85 key. 0, or -1 with errno. */
static int read_key(const char *path, char key[41]) {
    FILE *file = fopen(path, "r");
    if (file == NULL) return -1;
    char line[512];
    int found = -1;
    while (fgets(line, sizeof line, file) != NULL) {
        size_t length = strcspn(line, "\r\n");
        line[length] = '\0';
        if (length == 0 || line[0] == '#') continue;
        if (length == 40) {
            memcpy(key, line, 41);
            found = 0;
        }
        break;
    }
    fclose(file);
    if (found != 0) errno = ZF_EBADKEY;
    return found;
}

/* Sets a socket option, or fails the connect: every option is checked. */
#define SET_OPTION(agent, option, value, size) \
    do { if (zmq_setsockopt((agent)->socket, (option), (value), (size)) != 0) goto failed; } while (0)

zf_agent *zf_agent_connect(const zf_agent_options *options) {
    if (options == NULL || options->endpoint == NULL || options->name == NULL || options->name[0] == '\0'
        || (options->coordinator_key_file == NULL) != (options->secret_key_file == NULL)) {
        errno = EINVAL;
        return NULL;
    }
    zf_agent *agent = calloc(1, sizeof *agent);
    if (agent == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    char secret[41] = {0};
    agent->name = strdup(options->name);
    agent->protocol_version = options->protocol_version != 0 ? options->protocol_version : zf_protocol_version();
    agent->interval_ns = 1000000000u;
    agent->liveness = 3;
    if (gethostname(agent->host, sizeof agent->host - 1) != 0) strcpy(agent->host, "?");
    if (agent->name == NULL) {
        errno = ENOMEM;
        goto failed;
    }
    agent->context = zmq_ctx_new();
    if (agent->context == NULL) goto failed;
    agent->socket = zmq_socket(agent->context, ZMQ_DEALER);
    if (agent->socket == NULL) goto failed;
    int linger = 2000;
    int64_t maximum = ZF_MAXIMUM_MESSAGE;
    SET_OPTION(agent, ZMQ_LINGER, &linger, sizeof linger);
    SET_OPTION(agent, ZMQ_MAXMSGSIZE, &maximum, sizeof maximum);
    SET_OPTION(agent, ZMQ_ROUTING_ID, agent->name, strlen(agent->name));
    if (options->coordinator_key_file != NULL) {
        char server[41], public_key[41];
        if (read_key(options->coordinator_key_file, server) != 0 || read_key(options->secret_key_file, secret) != 0) goto failed;
        if (zmq_curve_public(public_key, secret) != 0) goto failed;
        SET_OPTION(agent, ZMQ_CURVE_SERVERKEY, server, 40);
        SET_OPTION(agent, ZMQ_CURVE_PUBLICKEY, public_key, 40);
        SET_OPTION(agent, ZMQ_CURVE_SECRETKEY, secret, 40);
        memset(secret, 0, sizeof secret);
    }
    if (zmq_connect(agent->socket, options->endpoint) != 0) goto failed;
    agent->last_heard = zf_now_ns();
    /* A DEALER queues the hello until the connection is up; EAGAIN here only means "later". */
    if (send_hello(agent) != 0 && errno != EAGAIN) goto failed;
    return agent;
failed:;
    int saved = errno;
    memset(secret, 0, sizeof secret);
    zf_agent_close(agent);
    errno = saved;
    return NULL;
}

/* --- Receiving ----------------------------------------------------------------------------- */

/* Copies a protobuf-c string (never NULL) into a new C string. */
static char *copy(const char *text) { return strdup(text != NULL ? text : ""); }

/* Handles one frame from the coordinator. */
static zf_event handle_frame(zf_agent *agent, const uint8_t *data, size_t size, zf_job *job) {
    Zapfleet__V1__Envelope *envelope = zapfleet__v1__envelope__unpack(NULL, size, data);
    if (envelope == NULL) return ZF_EVENT_NONE; /* not an envelope: dropped, as the Swift worker does */
    agent->last_heard = zf_now_ns();
    zf_event event = ZF_EVENT_NONE;
    switch (envelope->body_case) {
    case ZAPFLEET__V1__ENVELOPE__BODY_WELCOME:
        agent->welcomed = 1;
        if (envelope->welcome->heartbeat_interval_ms >= 10) agent->interval_ns = (uint64_t)envelope->welcome->heartbeat_interval_ms * 1000000u;
        if (envelope->welcome->heartbeat_liveness >= 2) agent->liveness = envelope->welcome->heartbeat_liveness;
        /* Welcomed again after a reconnect (maybe by a restarted coordinator): what it has not acknowledged goes again. */
        send_pending(agent);
        break;
    case ZAPFLEET__V1__ENVELOPE__BODY_REFUSAL:
        snprintf(agent->reason, sizeof agent->reason, "%s", envelope->refusal->reason);
        event = ZF_EVENT_REFUSED;
        break;
    case ZAPFLEET__V1__ENVELOPE__BODY_STOP:
        snprintf(agent->reason, sizeof agent->reason, "%s", envelope->stop->reason);
        event = ZF_EVENT_STOP;
        break;
    case ZAPFLEET__V1__ENVELOPE__BODY_RESULT_ACK:
        free(agent->pending);
        agent->pending = NULL;
        agent->pending_size = 0;
        event = ZF_EVENT_ACK;
        break;
    case ZAPFLEET__V1__ENVELOPE__BODY_EXTERNAL_JOB:
        if (job != NULL) {
            job->job_id = envelope->external_job->job_id;
            job->scenario_name = copy(envelope->external_job->scenario_name);
            job->scenario_yaml = copy(envelope->external_job->scenario_yaml);
            job->guest_memory_bytes = envelope->external_job->guest_memory_bytes;
            job->vcpus = envelope->external_job->vcpus;
            event = ZF_EVENT_JOB;
        }
        break;
    default:
        break; /* heartbeats, and what an agent is never sent */
    }
    zapfleet__v1__envelope__free_unpacked(envelope, NULL);
    return event;
}

int zf_agent_poll(zf_agent *agent, int timeout_ms, int extra_fd, int *extra_ready, zf_job *job) {
    if (extra_ready != NULL) *extra_ready = 0;
    uint64_t deadline = zf_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
    for (;;) {
        uint64_t now = zf_now_ns();
        uint64_t silence_limit = agent->interval_ns * agent->liveness;
        /* A coordinator silent past its liveness may be a new one: say hello again. */
        if (agent->welcomed && now - agent->last_heard > silence_limit) agent->welcomed = 0;
        /* Failed sends are not errors here: a DEALER without a connection refuses (EAGAIN) until it is back. */
        if (now - agent->last_sent >= agent->interval_ns) {
            if (agent->welcomed) send_heartbeat(agent); else send_hello(agent);
        }
        /* A result with no acknowledgement for a liveness period went astray: send it again (the coordinator drops duplicates). */
        if (agent->pending != NULL && agent->welcomed && (agent->pending_sent == 0 || now - agent->pending_sent > silence_limit)) send_pending(agent);
        zmq_pollitem_t items[2] = {{agent->socket, 0, ZMQ_POLLIN, 0}, {NULL, extra_fd, ZMQ_POLLIN, 0}};
        uint64_t wait_ns = agent->interval_ns / 4;
        if (deadline > now && deadline - now < wait_ns) wait_ns = deadline - now;
        if (deadline <= now) wait_ns = 0;
        int ready = zmq_poll(items, extra_fd >= 0 ? 2 : 1, (long)(wait_ns / 1000000u));
        if (ready < 0 && zmq_errno() != EINTR) return -1;
        if (ready > 0 && (items[0].revents & ZMQ_POLLIN)) {
            zmq_msg_t message;
            zmq_msg_init(&message);
            while (zmq_msg_recv(&message, agent->socket, ZMQ_DONTWAIT) >= 0) {
                int more = zmq_msg_more(&message);
                zf_event event = more ? ZF_EVENT_NONE  /* a multi-frame message is not ours: dropped */
                    : handle_frame(agent, zmq_msg_data(&message), zmq_msg_size(&message), job);
                if (event != ZF_EVENT_NONE) {
                    zmq_msg_close(&message);
                    return (int)event;
                }
            }
            zmq_msg_close(&message);
        }
        /* A closed pipe reports POLLHUP, which zmq_poll turns into ZMQ_POLLERR: readable too (read gives EOF). */
        if (extra_fd >= 0 && ready > 0 && (items[1].revents & (ZMQ_POLLIN | ZMQ_POLLERR))) {
            if (extra_ready != NULL) *extra_ready = 1;
            return ZF_EVENT_NONE;
        }
        if (zf_now_ns() >= deadline) return ZF_EVENT_NONE;
    }
}

const char *zf_agent_reason(const zf_agent *agent) { return agent != NULL ? agent->reason : ""; }

int zf_agent_result_pending(const zf_agent *agent) { return agent != NULL && agent->pending != NULL; }

int zf_agent_send_progress(zf_agent *agent, uint32_t job_id, uint64_t samples, uint64_t elapsed_ns) {
    Zapfleet__V1__Progress progress = ZAPFLEET__V1__PROGRESS__INIT;
    progress.shard_id = job_id;
    progress.policy = "external";
    progress.step_name = "command";
    progress.sptes_installed = samples;
    progress.elapsed_ns = elapsed_ns;
    Zapfleet__V1__Envelope envelope = ZAPFLEET__V1__ENVELOPE__INIT;
    envelope.body_case = ZAPFLEET__V1__ENVELOPE__BODY_PROGRESS;
    envelope.progress = &progress;
    return send_envelope(agent, &envelope);
}

int zf_agent_send_result(zf_agent *agent, uint32_t job_id, const zf_samples *operations, size_t operation_count,
                         uint64_t wall_ns, int32_t exit_status, uint64_t lines_rejected) {
    Zapfleet__V1__OperationSamples *samples = calloc(operation_count > 0 ? operation_count : 1, sizeof *samples);
    Zapfleet__V1__OperationSamples **pointers = calloc(operation_count > 0 ? operation_count : 1, sizeof *pointers);
    if (samples == NULL || pointers == NULL) {
        free(samples);
        free(pointers);
        errno = ENOMEM;
        return -1;
    }
    for (size_t index = 0; index < operation_count; index++) {
        zapfleet__v1__operation_samples__init(&samples[index]);
        samples[index].operation = (char *)operations[index].operation;
        samples[index].n_nanoseconds = operations[index].count;
        samples[index].nanoseconds = (uint64_t *)operations[index].nanoseconds;
        pointers[index] = &samples[index];
    }
    Zapfleet__V1__ExternalResult result = ZAPFLEET__V1__EXTERNAL_RESULT__INIT;
    result.job_id = job_id;
    result.n_operations = operation_count;
    result.operations = pointers;
    result.wall_ns = wall_ns;
    result.exit_status = exit_status;
    result.lines_rejected = lines_rejected;
    Zapfleet__V1__Envelope envelope = ZAPFLEET__V1__ENVELOPE__INIT;
    envelope.body_case = ZAPFLEET__V1__ENVELOPE__BODY_EXTERNAL_RESULT;
    envelope.external_result = &result;
    size_t size;
    uint8_t *packed = pack(agent, &envelope, &size);
    int saved = errno;
    free(samples);
    free(pointers);
    if (packed == NULL) {
        errno = saved;
        return -1;
    }
    free(agent->pending);
    agent->pending = packed;
    agent->pending_size = size;
    agent->pending_sent = 0;
    if (agent->welcomed) send_pending(agent); /* otherwise at the next welcome */
    return 0;
}

void zf_job_free(zf_job *job) {
    if (job == NULL) return;
    free(job->scenario_name);
    free(job->scenario_yaml);
    job->scenario_name = NULL;
    job->scenario_yaml = NULL;
}

void zf_agent_close(zf_agent *agent) {
    if (agent == NULL) return;
    if (agent->socket != NULL) zmq_close(agent->socket);
    if (agent->context != NULL) zmq_ctx_term(agent->context);
    free(agent->pending);
    free(agent->name);
    free(agent);
}
