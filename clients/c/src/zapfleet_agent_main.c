/*
 * zapfleet-agent-c: runs a command for each job a zapfleet coordinator hands out, reads the
 * block times it prints (one nanosecond value per line, optionally after an operation name:
 * "reset 1834000"), and reports them. The command sees the job in its environment:
 * ZAPFLEET_JOB_ID, ZAPFLEET_SCENARIO, ZAPFLEET_SCENARIO_FILE (the scenario's YAML),
 * ZAPFLEET_GUEST_MEMORY_BYTES, ZAPFLEET_VCPUS.
 *
 * Exit status: 0 the coordinator ended the run; 3 refused (protocol version, key); 64 bad
 * usage; 70 an internal or libzmq error; 130 interrupted.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zapfleet_agent.h"

/* The operations a sample may name: the report's operation names. */
static const char *const operation_names[] = {"fault", "populate", "reset", "fast_zap", "full_zap", "teardown", "root_lifetime"};
#define OPERATION_COUNT (sizeof operation_names / sizeof operation_names[0])
/* One hour, the longest block time a report's histograms track. */
#define LONGEST_SAMPLE 3600000000000ull

static volatile sig_atomic_t interrupted = 0;
static void on_signal(int number) { (void)number; interrupted = 1; }

typedef struct samples {
    uint64_t *values;
    size_t count, capacity;
} samples;

typedef struct measurement {
    samples by_operation[OPERATION_COUNT];
    size_t total, limit;
    uint64_t rejected;
} measurement;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int operation_index(const char *name) {
    for (size_t index = 0; index < OPERATION_COUNT; index++)
        if (strcmp(name, operation_names[index]) == 0) return (int)index;
    return -1;
}

static int parse_value(const char *text, uint64_t *value) {
    if (*text < '0' || *text > '9') return -1;
    char *end = NULL;
    errno = 0;
    unsigned long long parsed = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || parsed > LONGEST_SAMPLE) return -1;
    *value = parsed;
    return 0;
}

/* One line of the command's output: "VALUE" or "OPERATION VALUE". Anything else is rejected. */
static void take_line(measurement *m, char *line, int default_operation) {
    char *save = NULL;
    char *first = strtok_r(line, " \t\r", &save);
    if (first == NULL) return; /* a blank line is no sample */
    char *second = strtok_r(NULL, " \t\r", &save);
    int operation = default_operation;
    const char *number = first;
    if (second != NULL) {
        operation = operation_index(first);
        number = second;
    }
    uint64_t value;
    if (operation < 0 || strtok_r(NULL, " \t\r", &save) != NULL || parse_value(number, &value) != 0 || m->total >= m->limit) {
        m->rejected++;
        return;
    }
    samples *s = &m->by_operation[operation];
    if (s->count == s->capacity) {
        size_t capacity = s->capacity ? s->capacity * 2 : 256;
        uint64_t *grown = realloc(s->values, capacity * sizeof *grown);
        if (grown == NULL) {
            m->rejected++;
            return;
        }
        s->values = grown;
        s->capacity = capacity;
    }
    s->values[s->count++] = value;
    m->total++;
}

static void free_measurement(measurement *m) {
    for (size_t index = 0; index < OPERATION_COUNT; index++) free(m->by_operation[index].values);
    memset(m, 0, sizeof *m);
}

/* Starts the command with the job in its environment and its output on a pipe. */
static pid_t start_command(char *const command[], const zf_job *job, const char *scenario_file, int *output) {
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        return -1;
    }
    if (pid == 0) {
        char buffer[32];
        dup2(pipe_fds[1], STDOUT_FILENO);
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        snprintf(buffer, sizeof buffer, "%" PRIu32, job->job_id);
        setenv("ZAPFLEET_JOB_ID", buffer, 1);
        setenv("ZAPFLEET_SCENARIO", job->scenario_name, 1);
        setenv("ZAPFLEET_SCENARIO_FILE", scenario_file, 1);
        snprintf(buffer, sizeof buffer, "%" PRIu64, job->guest_memory_bytes);
        setenv("ZAPFLEET_GUEST_MEMORY_BYTES", buffer, 1);
        snprintf(buffer, sizeof buffer, "%" PRIu32, job->vcpus);
        setenv("ZAPFLEET_VCPUS", buffer, 1);
        execvp(command[0], command);
        fprintf(stderr, "zapfleet-agent-c: cannot run %s: %s\n", command[0], strerror(errno));
        _exit(127);
    }
    close(pipe_fds[1]);
    *output = pipe_fds[0];
    return pid;
}

/* run_job's answer when the coordinator ended the run during the job: leave, with exit 0. */
#define JOB_RUN_ENDED (-1)

/* Runs one job: the command, its samples, the result. Returns 0 to go on, JOB_RUN_ENDED, or the exit status to leave with. */
static int run_job(zf_agent *agent, const zf_job *job, char *const command[], int default_operation, size_t limit) {
    char scenario_file[] = "/tmp/zapfleet-agent-XXXXXX";
    int file = mkstemp(scenario_file);
    if (file < 0 || write(file, job->scenario_yaml, strlen(job->scenario_yaml)) < 0) {
        fprintf(stderr, "zapfleet-agent-c: cannot write the scenario file: %s\n", strerror(errno));
        if (file >= 0) close(file);
        return ZF_EXIT_INTERNAL_ERROR;
    }
    close(file);
    measurement m;
    memset(&m, 0, sizeof m);
    m.limit = limit;
    int output = -1;
    uint64_t started = now_ns(), last_progress = started;
    pid_t pid = start_command(command, job, scenario_file, &output);
    if (pid < 0) {
        fprintf(stderr, "zapfleet-agent-c: cannot start the command: %s\n", strerror(errno));
        unlink(scenario_file);
        return ZF_EXIT_INTERNAL_ERROR;
    }
    fprintf(stderr, "zapfleet-agent-c: job %" PRIu32 " (%s): running %s\n", job->job_id, job->scenario_name, command[0]);
    char buffer[65536];
    size_t used = 0;
    int open_output = 1, status = 0, discarding = 0;
    while (open_output && !interrupted) {
        int readable = 0;
        char reason[512];
        zf_event event = zf_agent_poll(agent, 1000, output, &readable, NULL, reason, sizeof reason);
        if (event == ZF_EVENT_STOP || event == ZF_EVENT_REFUSED || event == ZF_EVENT_ERROR) {
            fprintf(stderr, "zapfleet-agent-c: the coordinator ended the run during the job: %s\n", reason);
            kill(pid, SIGTERM);
            /* Nothing is sent after a stop: the run is over, and the samples are partial. */
            status = event == ZF_EVENT_STOP ? JOB_RUN_ENDED : event == ZF_EVENT_REFUSED ? ZF_EXIT_REFUSED : ZF_EXIT_INTERNAL_ERROR;
            break;
        }
        if (now_ns() - last_progress >= 1000000000u) {
            zf_agent_send_progress(agent, job->job_id, m.total, now_ns() - started);
            last_progress = now_ns();
        }
        if (!readable) continue;
        ssize_t got = read(output, buffer + used, sizeof buffer - 1 - used);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) open_output = 0; else used += (size_t)got;
        /* Whole lines are samples; a line longer than the buffer is rejected whole. */
        size_t start = 0;
        for (size_t index = 0; index < used; index++) {
            if (buffer[index] != '\n') continue;
            buffer[index] = '\0';
            /* The end of an over-long line is no sample of its own. */
            if (discarding) discarding = 0; else take_line(&m, buffer + start, default_operation);
            start = index + 1;
        }
        memmove(buffer, buffer + start, used - start);
        used -= start;
        if (used == sizeof buffer - 1) {
            if (!discarding) m.rejected++;
            used = 0;
            discarding = 1;
        }
        if (!open_output && used > 0 && !discarding) {
            buffer[used] = '\0';
            take_line(&m, buffer, default_operation);
        }
    }
    if (interrupted) kill(pid, SIGTERM);
    close(output);
    int wait_status = 0;
    while (waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {}
    unlink(scenario_file);
    int32_t exit_status = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : WIFSIGNALED(wait_status) ? -WTERMSIG(wait_status) : -1;
    uint64_t wall = now_ns() - started;
    if (status == 0 && !interrupted) {
        zf_samples operations[OPERATION_COUNT];
        size_t count = 0;
        for (size_t index = 0; index < OPERATION_COUNT; index++) {
            if (m.by_operation[index].count == 0) continue;
            operations[count].operation = operation_names[index];
            operations[count].nanoseconds = m.by_operation[index].values;
            operations[count].count = m.by_operation[index].count;
            count++;
        }
        if (zf_agent_send_result(agent, job->job_id, operations, count, wall, exit_status, m.rejected) != 0) {
            fprintf(stderr, "zapfleet-agent-c: cannot send the result\n");
            status = ZF_EXIT_INTERNAL_ERROR;
        } else {
            fprintf(stderr, "zapfleet-agent-c: job %" PRIu32 ": %zu sample(s) sent, %" PRIu64 " line(s) rejected, command exit %d\n",
                    job->job_id, m.total, m.rejected, exit_status);
        }
    }
    free_measurement(&m);
    return interrupted ? ZF_EXIT_INTERRUPTED : status;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: zapfleet-agent-c --connect ENDPOINT [--name NAME] [--operation OP] [--max-samples N]\n"
            "                        [--key FILE --coordinator-key FILE] (-- COMMAND [ARG...] | --kvm SIZE)\n"
            "Runs COMMAND for each job of a zapfleet coordinator and reports the block times it prints,\n"
            "one nanosecond value per line, optionally after an operation name (default --operation reset).\n"
            "--kvm SIZE runs zapfleet-kvm-probe (beside this program) with SIZE of guest memory and the job's\n"
            "vCPUs: this host's real KVM as the column.\n");
}

int main(int argc, char **argv) {
    zf_agent_options options = {0};
    const char *operation = "reset";
    size_t limit = 1000000;
    char host[128] = "agent";
    gethostname(host, sizeof host - 1);
    char default_name[160];
    snprintf(default_name, sizeof default_name, "%s-agent-%ld", host, (long)getpid());
    options.name = default_name;
    const char *kvm = NULL;
    int index = 1;
    for (; index < argc; index++) {
        const char *argument = argv[index];
        if (strcmp(argument, "--") == 0) { index++; break; }
        if (strcmp(argument, "--help") == 0 || strcmp(argument, "-h") == 0) { usage(stdout); return 0; }
        if (index + 1 >= argc) { usage(stderr); return ZF_EXIT_BAD_INPUT; }
        const char *value = argv[++index];
        if (strcmp(argument, "--connect") == 0) options.endpoint = value;
        else if (strcmp(argument, "--name") == 0) options.name = value;
        else if (strcmp(argument, "--operation") == 0) operation = value;
        else if (strcmp(argument, "--key") == 0) options.secret_key_file = value;
        else if (strcmp(argument, "--coordinator-key") == 0) options.coordinator_key_file = value;
        else if (strcmp(argument, "--max-samples") == 0) limit = (size_t)strtoull(value, NULL, 10);
        else if (strcmp(argument, "--protocol-version") == 0) options.protocol_version = (uint32_t)strtoul(value, NULL, 10);
        else if (strcmp(argument, "--kvm") == 0) kvm = value;
        else { fprintf(stderr, "zapfleet-agent-c: unknown option %s\n", argument); usage(stderr); return ZF_EXIT_BAD_INPUT; }
    }
    int default_operation = operation_index(operation);
    /* --kvm: the probe beside this program, its vCPUs from the job (ZAPFLEET_VCPUS). */
    char probe[4096];
    char *kvm_command[] = {probe, "--memory", (char *)kvm, NULL};
    if (kvm != NULL) {
        if (index < argc) { fprintf(stderr, "zapfleet-agent-c: give --kvm or a command, not both\n"); return ZF_EXIT_BAD_INPUT; }
        ssize_t length = readlink("/proc/self/exe", probe, sizeof probe - 32);
        if (length <= 0) { fprintf(stderr, "zapfleet-agent-c: cannot find this program's directory for --kvm\n"); return ZF_EXIT_INTERNAL_ERROR; }
        probe[length] = 0;
        char *slash = strrchr(probe, '/');
        strcpy(slash ? slash + 1 : probe, "zapfleet-kvm-probe");
    }
    if (options.endpoint == NULL || (index >= argc && kvm == NULL) || default_operation < 0 || limit == 0) {
        if (default_operation < 0) fprintf(stderr, "zapfleet-agent-c: --operation %s is not a report operation (reset, fault, fast_zap, ...)\n", operation);
        usage(stderr);
        return ZF_EXIT_BAD_INPUT;
    }
    char *const *command = kvm != NULL ? kvm_command : &argv[index];

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);

    char error[512];
    zf_agent *agent = zf_agent_connect(&options, error, sizeof error);
    if (agent == NULL) {
        fprintf(stderr, "zapfleet-agent-c: %s\n", error);
        return ZF_EXIT_BAD_INPUT;
    }
    int status = 0;
    while (!interrupted) {
        zf_job job = {0};
        char reason[512] = "";
        zf_event event = zf_agent_poll(agent, 1000, -1, NULL, &job, reason, sizeof reason);
        if (event == ZF_EVENT_JOB) {
            status = run_job(agent, &job, command, default_operation, limit);
            zf_job_free(&job);
            if (status == JOB_RUN_ENDED) {
                status = 0;
                break;
            }
            if (status != 0) break;
        } else if (event == ZF_EVENT_ACK) {
            fprintf(stderr, "zapfleet-agent-c: the coordinator has the result\n");
        } else if (event == ZF_EVENT_STOP) {
            fprintf(stderr, "zapfleet-agent-c: the coordinator says stop: %s\n", reason);
            break;
        } else if (event == ZF_EVENT_REFUSED) {
            fprintf(stderr, "zapfleet-agent-c: refused by the coordinator: %s\n", reason);
            status = ZF_EXIT_REFUSED;
            break;
        } else if (event == ZF_EVENT_ERROR) {
            fprintf(stderr, "zapfleet-agent-c: %s\n", reason);
            status = ZF_EXIT_INTERNAL_ERROR;
            break;
        }
    }
    if (interrupted && status == 0) status = ZF_EXIT_INTERRUPTED;
    zf_agent_close(agent);
    return status;
}
