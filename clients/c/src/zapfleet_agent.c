/* zapfleet_agent.c: the fleet protocol for external agents over libzmq, with protobuf-c. */
#define _POSIX_C_SOURCE 200809L
#include "zapfleet_agent.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "zapfleet.pb-c.h"

/* The largest frame accepted from the coordinator (as the Swift worker). */
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
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void say(char *out, size_t size, const char *format, ...) {
    if (out == NULL || size == 0) return;
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(out, size, format, arguments);
    va_end(arguments);
}

/* Reads the first line of a key file that is not a comment: a 40-character Z85 key. */
static int read_key(const char *path, char key[41], char *error, size_t error_size) {
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        say(error, error_size, "%s: cannot read the key file (%s)", path, strerror(errno));
        return -1;
    }
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
    if (found != 0) say(error, error_size, "%s: no 40-character Z85 key in it; make one with `zapfleet keygen`", path);
    return found;
}

/* Packs an envelope around body and sends it as one frame. */
static int send_envelope(zf_agent *agent, Zapfleet__V1__Envelope *envelope) {
    envelope->protocol_version = agent->protocol_version;
    size_t size = zapfleet__v1__envelope__get_packed_size(envelope);
    uint8_t *buffer = malloc(size > 0 ? size : 1);
    if (buffer == NULL) return -1;
    zapfleet__v1__envelope__pack(envelope, buffer);
    int sent = zmq_send(agent->socket, buffer, size, ZMQ_DONTWAIT);
    free(buffer);
    if (sent < 0) return -1;
    agent->last_sent = now_ns();
    return 0;
}

static int send_hello(zf_agent *agent) {
    Zapfleet__V1__Hello hello = ZAPFLEET__V1__HELLO__INIT;
    hello.build_version = "zapfleet-agent-c 0.1.0";
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

zf_agent *zf_agent_connect(const zf_agent_options *options, char *error, size_t error_size) {
    if (options == NULL || options->endpoint == NULL || options->name == NULL || options->name[0] == '\0') {
        say(error, error_size, "an endpoint and a name are required");
        return NULL;
    }
    if ((options->coordinator_key_file == NULL) != (options->secret_key_file == NULL)) {
        say(error, error_size, "the coordinator's public key and this agent's secret key go together");
        return NULL;
    }
    zf_agent *agent = calloc(1, sizeof *agent);
    if (agent == NULL) {
        say(error, error_size, "out of memory");
        return NULL;
    }
    agent->name = strdup(options->name);
    agent->protocol_version = options->protocol_version != 0 ? options->protocol_version : ZF_PROTOCOL_VERSION;
    agent->interval_ns = 1000000000u;
    agent->liveness = 3;
    if (gethostname(agent->host, sizeof agent->host - 1) != 0) strcpy(agent->host, "?");
    agent->context = zmq_ctx_new();
    agent->socket = agent->context != NULL ? zmq_socket(agent->context, ZMQ_DEALER) : NULL;
    if (agent->name == NULL || agent->socket == NULL) {
        say(error, error_size, "cannot create a ZeroMQ socket: %s", zmq_strerror(zmq_errno()));
        zf_agent_close(agent);
        return NULL;
    }
    int linger = 2000;
    int64_t maximum = ZF_MAXIMUM_MESSAGE;
    zmq_setsockopt(agent->socket, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(agent->socket, ZMQ_MAXMSGSIZE, &maximum, sizeof maximum);
    zmq_setsockopt(agent->socket, ZMQ_ROUTING_ID, agent->name, strlen(agent->name));
    if (options->coordinator_key_file != NULL) {
        char server[41], secret[41], public_key[41];
        if (read_key(options->coordinator_key_file, server, error, error_size) != 0
            || read_key(options->secret_key_file, secret, error, error_size) != 0) {
            zf_agent_close(agent);
            return NULL;
        }
        if (zmq_curve_public(public_key, secret) != 0
            || zmq_setsockopt(agent->socket, ZMQ_CURVE_SERVERKEY, server, 40) != 0
            || zmq_setsockopt(agent->socket, ZMQ_CURVE_PUBLICKEY, public_key, 40) != 0
            || zmq_setsockopt(agent->socket, ZMQ_CURVE_SECRETKEY, secret, 40) != 0) {
            say(error, error_size, "cannot set up CURVE: %s", zmq_strerror(zmq_errno()));
            memset(secret, 0, sizeof secret);
            zf_agent_close(agent);
            return NULL;
        }
        memset(secret, 0, sizeof secret);
    }
    if (zmq_connect(agent->socket, options->endpoint) != 0) {
        say(error, error_size, "cannot connect to %s: %s", options->endpoint, zmq_strerror(zmq_errno()));
        zf_agent_close(agent);
        return NULL;
    }
    agent->last_heard = now_ns();
    send_hello(agent);
    return agent;
}

/* Copies a protobuf-c string (never NULL) into a new C string. */
static char *copy(const char *text) { return strdup(text != NULL ? text : ""); }

/* Handles one frame from the coordinator. */
static zf_event handle_frame(zf_agent *agent, const uint8_t *data, size_t size, zf_job *job, char *reason, size_t reason_size) {
    Zapfleet__V1__Envelope *envelope = zapfleet__v1__envelope__unpack(NULL, size, data);
    if (envelope == NULL) return ZF_EVENT_NONE; /* not an envelope: dropped, as the Swift worker does */
    agent->last_heard = now_ns();
    zf_event event = ZF_EVENT_NONE;
    switch (envelope->body_case) {
    case ZAPFLEET__V1__ENVELOPE__BODY_WELCOME:
        agent->welcomed = 1;
        if (envelope->welcome->heartbeat_interval_ms >= 10) agent->interval_ns = (uint64_t)envelope->welcome->heartbeat_interval_ms * 1000000u;
        if (envelope->welcome->heartbeat_liveness >= 2) agent->liveness = envelope->welcome->heartbeat_liveness;
        break;
    case ZAPFLEET__V1__ENVELOPE__BODY_REFUSAL:
        say(reason, reason_size, "%s", envelope->refusal->reason);
        event = ZF_EVENT_REFUSED;
        break;
    case ZAPFLEET__V1__ENVELOPE__BODY_STOP:
        say(reason, reason_size, "%s", envelope->stop->reason);
        event = ZF_EVENT_STOP;
        break;
    case ZAPFLEET__V1__ENVELOPE__BODY_RESULT_ACK:
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

zf_event zf_agent_poll(zf_agent *agent, int timeout_ms, int extra_fd, int *extra_ready, zf_job *job,
                       char *reason, size_t reason_size) {
    if (extra_ready != NULL) *extra_ready = 0;
    uint64_t deadline = now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
    for (;;) {
        uint64_t now = now_ns();
        /* A coordinator silent past its liveness may be a new one: say hello again. */
        if (agent->welcomed && now - agent->last_heard > agent->interval_ns * agent->liveness) agent->welcomed = 0;
        if (now - agent->last_sent >= agent->interval_ns) {
            if (agent->welcomed) send_heartbeat(agent); else send_hello(agent);
        }
        zmq_pollitem_t items[2] = {{agent->socket, 0, ZMQ_POLLIN, 0}, {NULL, extra_fd, ZMQ_POLLIN, 0}};
        uint64_t wait_ns = agent->interval_ns / 4;
        if (deadline > now && deadline - now < wait_ns) wait_ns = deadline - now;
        if (deadline <= now) wait_ns = 0;
        int ready = zmq_poll(items, extra_fd >= 0 ? 2 : 1, (long)(wait_ns / 1000000u));
        if (ready < 0 && zmq_errno() != EINTR) {
            say(reason, reason_size, "zmq_poll: %s", zmq_strerror(zmq_errno()));
            return ZF_EVENT_ERROR;
        }
        if (ready > 0 && (items[0].revents & ZMQ_POLLIN)) {
            zmq_msg_t message;
            zmq_msg_init(&message);
            while (zmq_msg_recv(&message, agent->socket, ZMQ_DONTWAIT) >= 0) {
                int more = zmq_msg_more(&message);
                zf_event event = more ? ZF_EVENT_NONE  /* a multi-frame message is not ours: dropped */
                    : handle_frame(agent, zmq_msg_data(&message), zmq_msg_size(&message), job, reason, reason_size);
                if (event != ZF_EVENT_NONE) {
                    zmq_msg_close(&message);
                    return event;
                }
            }
            zmq_msg_close(&message);
        }
        /* A closed pipe reports POLLHUP, which zmq_poll turns into ZMQ_POLLERR: readable too (read gives EOF). */
        if (extra_fd >= 0 && ready > 0 && (items[1].revents & (ZMQ_POLLIN | ZMQ_POLLERR))) {
            if (extra_ready != NULL) *extra_ready = 1;
            return ZF_EVENT_NONE;
        }
        if (now_ns() >= deadline) return ZF_EVENT_NONE;
    }
}

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
    int status = send_envelope(agent, &envelope);
    free(samples);
    free(pointers);
    return status;
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
    free(agent->name);
    free(agent);
}
