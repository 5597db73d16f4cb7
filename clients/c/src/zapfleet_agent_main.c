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
#define _GNU_SOURCE /* asprintf */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zapfleet_agent.h"
#include "zf_internal.h"

extern char **environ;

/* The most operations Proto/'s enum Operation may grow to before this program needs a rebuild with a larger table. */
#define OPERATION_LIMIT 64
/* One hour, the longest block time a report's histograms track. */
#define LONGEST_SAMPLE 3600000000000ull
/* The most samples one result may carry (--max-samples); a result must also pack into 64 MiB. */
#define MAXIMUM_SAMPLES 100000000ull
/* How long a command gets to end after SIGTERM before SIGKILL. */
#define TERMINATION_GRACE_NS 5000000000ull

static volatile sig_atomic_t interrupted = 0;
static void on_signal(int number) { (void)number; interrupted = 1; }

typedef struct samples {
    uint64_t *values;
    size_t count, capacity;
} samples;

typedef struct measurement {
    samples by_operation[OPERATION_LIMIT];
    size_t total, limit;
    uint64_t rejected;
} measurement;


/* One line of the command's output: "VALUE" or "OPERATION VALUE". Anything else is rejected. */
static void take_line(measurement *m, char *line, int default_operation) {
    char *save = NULL;
    char *first = strtok_r(line, " \t\r", &save);
    if (first == NULL) return; /* a blank line is no sample */
    char *second = strtok_r(NULL, " \t\r", &save);
    int operation = default_operation;
    const char *number = first;
    if (second != NULL) {
        operation = zf_operation_index(first);
        number = second;
    }
    uint64_t value;
    if (operation < 0 || strtok_r(NULL, " \t\r", &save) != NULL || zf_parse_u64(number, 0, LONGEST_SAMPLE, &value) != 0
        || m->total >= m->limit) {
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
    for (size_t index = 0; index < OPERATION_LIMIT; index++) free(m->by_operation[index].values);
    memset(m, 0, sizeof *m);
}

/* The environment with the job in it: this process's own, minus any ZAPFLEET_* it has, plus the job's. */
/* The variables a job adds: the last entries of the environment job_environment makes. */
#define JOB_VARIABLES 5

static char **job_environment(const zf_job *job, const char *scenario_file) {
    size_t inherited = 0;
    while (environ[inherited] != NULL) inherited++;
    char **environment = calloc(inherited + JOB_VARIABLES + 1, sizeof *environment);
    if (environment == NULL) return NULL;
    size_t count = 0;
    for (size_t index = 0; index < inherited; index++)
        if (strncmp(environ[index], "ZAPFLEET_", 9) != 0) environment[count++] = environ[index];
    char *own[JOB_VARIABLES];
    const int lengths[JOB_VARIABLES] = {
        asprintf(&own[0], "ZAPFLEET_JOB_ID=%" PRIu32, job->job_id),
        asprintf(&own[1], "ZAPFLEET_SCENARIO=%s", job->scenario_name),
        asprintf(&own[2], "ZAPFLEET_SCENARIO_FILE=%s", scenario_file),
        asprintf(&own[3], "ZAPFLEET_GUEST_MEMORY_BYTES=%" PRIu64, job->guest_memory_bytes),
        asprintf(&own[4], "ZAPFLEET_VCPUS=%" PRIu32, job->vcpus),
    };
    int failed = 0;
    for (size_t index = 0; index < JOB_VARIABLES; index++) {
        /* A failed asprintf leaves its pointer undefined: nothing to free. */
        if (lengths[index] < 0) {
            own[index] = NULL;
            failed = 1;
        }
    }
    if (failed) {
        for (size_t index = 0; index < JOB_VARIABLES; index++) free(own[index]);
        free(environment);
        errno = ENOMEM;
        return NULL;
    }
    for (size_t index = 0; index < JOB_VARIABLES; index++) environment[count++] = own[index];
    return environment;
}

static void free_job_environment(char **environment) {
    if (environment == NULL) return;
    size_t count = 0;
    while (environment[count] != NULL) count++;
    for (size_t index = count - JOB_VARIABLES; index < count; index++) free(environment[index]);
    free(environment);
}

/*
 * Starts the command with the job in its environment and its output on a pipe: posix_spawnp,
 * so that nothing runs between fork and exec in this (libzmq-threaded) process. The pid, or -1
 * with errno.
 */
static pid_t start_command(char *const command[], const zf_job *job, const char *scenario_file, int *output) {
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) return -1;
    char **environment = job_environment(job, scenario_file);
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int error = environment == NULL ? ENOMEM : posix_spawn_file_actions_init(&actions);
    int actions_ready = error == 0;
    pid_t pid = -1;
    if (error == 0 && (error = posix_spawnattr_init(&attributes)) == 0) {
        /* The command starts with no signal blocked and SIGINT and SIGTERM at their defaults, whatever this process has. */
        sigset_t none, defaults;
        sigemptyset(&none);
        sigemptyset(&defaults);
        sigaddset(&defaults, SIGINT);
        sigaddset(&defaults, SIGTERM);
        error = posix_spawnattr_setsigmask(&attributes, &none);
        if (error == 0) error = posix_spawnattr_setsigdefault(&attributes, &defaults);
        if (error == 0) error = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        if (error == 0) error = posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
        if (error == 0) error = posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
        if (error == 0) error = posix_spawn_file_actions_addclose(&actions, pipe_fds[1]);
        if (error == 0) error = posix_spawnp(&pid, command[0], &actions, &attributes, command, environment);
        posix_spawnattr_destroy(&attributes);
    }
    if (actions_ready) posix_spawn_file_actions_destroy(&actions);
    free_job_environment(environment);
    close(pipe_fds[1]);
    if (error != 0) {
        close(pipe_fds[0]);
        errno = error;
        return -1;
    }
    *output = pipe_fds[0];
    return pid;
}

/* Whether the command has ended (1, *wait_status set) or not (0). */
static int reaped(pid_t pid, int *wait_status) {
    pid_t got;
    while ((got = waitpid(pid, wait_status, WNOHANG)) < 0 && errno == EINTR) {}
    return got == pid || got < 0;
}

/*
 * Ends the command: SIGTERM, then SIGKILL if it has not ended within the grace period (a command
 * that ignores SIGTERM must not hold the agent forever).
 */
static void terminate(pid_t pid, int *wait_status) {
    if (reaped(pid, wait_status)) return;
    kill(pid, SIGTERM);
    uint64_t deadline = zf_now_ns() + TERMINATION_GRACE_NS;
    while (zf_now_ns() < deadline) {
        if (reaped(pid, wait_status)) return;
        struct timespec pause = {0, 20000000};
        nanosleep(&pause, NULL);
    }
    fprintf(stderr, "zapfleet-agent-c: the command ignored SIGTERM for %llu s; SIGKILL\n", TERMINATION_GRACE_NS / 1000000000ull);
    kill(pid, SIGKILL);
    while (waitpid(pid, wait_status, 0) < 0 && errno == EINTR) {}
}

/* run_job's answer when the coordinator ended the run during the job: leave, with exit 0. */
#define JOB_RUN_ENDED (-1)

/* What ends a job early: the coordinator's stop or refusal, a socket error. 0 to go on, else run_job's answer. */
static int job_cut_short(int event) {
    if (event == ZF_EVENT_STOP) return JOB_RUN_ENDED;
    if (event == ZF_EVENT_REFUSED) return ZF_EXIT_REFUSED;
    if (event < 0) return ZF_EXIT_INTERNAL_ERROR;
    return 0;
}

static void say_cut_short(zf_agent *agent, int event) {
    if (event < 0) fprintf(stderr, "zapfleet-agent-c: the connection failed during the job: %s\n", zf_strerror(errno));
    else fprintf(stderr, "zapfleet-agent-c: the coordinator ended the run during the job: %s\n", zf_agent_reason(agent));
}

/* Runs one job: the command, its samples, the result. Returns 0 to go on, JOB_RUN_ENDED, or the exit status to leave with. */
static int run_job(zf_agent *agent, const zf_job *job, char *const command[], int default_operation, size_t limit) {
    char scenario_file[] = "/tmp/zapfleet-agent-XXXXXX";
    int file = mkstemp(scenario_file);
    size_t length = strlen(job->scenario_yaml);
    if (file < 0 || write(file, job->scenario_yaml, length) != (ssize_t)length) {
        fprintf(stderr, "zapfleet-agent-c: cannot write the scenario file: %s\n", strerror(errno));
        if (file >= 0) {
            close(file);
            unlink(scenario_file);
        }
        return ZF_EXIT_INTERNAL_ERROR;
    }
    close(file);
    measurement m;
    memset(&m, 0, sizeof m);
    m.limit = limit;
    int output = -1;
    uint64_t started = zf_now_ns(), last_progress = started;
    pid_t pid = start_command(command, job, scenario_file, &output);
    if (pid < 0) {
        fprintf(stderr, "zapfleet-agent-c: cannot run %s: %s\n", command[0], strerror(errno));
        unlink(scenario_file);
        return ZF_EXIT_INTERNAL_ERROR;
    }
    fprintf(stderr, "zapfleet-agent-c: job %" PRIu32 " (%s): running %s\n", job->job_id, job->scenario_name, command[0]);
    char buffer[65536];
    size_t used = 0;
    int open_output = 1, status = 0, discarding = 0, wait_status = 0, ended = 0;
    while (open_output && !interrupted) {
        int readable = 0;
        int event = zf_agent_poll(agent, 1000, output, &readable, NULL);
        if ((status = job_cut_short(event)) != 0) {
            /* Nothing is sent after a stop: the run is over, and the samples are partial. */
            say_cut_short(agent, event);
            break;
        }
        if (zf_now_ns() - last_progress >= 1000000000u) {
            zf_agent_send_progress(agent, job->job_id, m.total, zf_now_ns() - started); /* a lost progress report costs nothing */
            last_progress = zf_now_ns();
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
    close(output);
    /* The output is closed: wait for the command's end, keeping the connection alive meanwhile. */
    while (status == 0 && !interrupted && !(ended = reaped(pid, &wait_status))) {
        int event = zf_agent_poll(agent, 100, -1, NULL, NULL);
        if ((status = job_cut_short(event)) != 0) say_cut_short(agent, event);
    }
    if (!ended) terminate(pid, &wait_status);
    unlink(scenario_file);
    int32_t exit_status = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : WIFSIGNALED(wait_status) ? -WTERMSIG(wait_status) : -1;
    uint64_t wall = zf_now_ns() - started;
    if (status == 0 && !interrupted) {
        zf_samples operations[OPERATION_LIMIT];
        size_t count = 0;
        for (size_t index = 0; index < zf_operation_count() && index < OPERATION_LIMIT; index++) {
            if (m.by_operation[index].count == 0) continue;
            operations[count].operation = zf_operation_name(index);
            operations[count].nanoseconds = m.by_operation[index].values;
            operations[count].count = m.by_operation[index].count;
            count++;
        }
        if (zf_agent_send_result(agent, job->job_id, operations, count, wall, exit_status, m.rejected) != 0) {
            fprintf(stderr, "zapfleet-agent-c: cannot send the result of %zu sample(s): %s%s\n", m.total, zf_strerror(errno),
                    errno == EMSGSIZE ? "; give a smaller --max-samples" : "");
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
        else if (strcmp(argument, "--max-samples") == 0) {
            uint64_t parsed;
            if (zf_parse_u64(value, 1, MAXIMUM_SAMPLES, &parsed) != 0) {
                fprintf(stderr, "zapfleet-agent-c: --max-samples '%s' must be a whole number from 1 to %llu\n", value, MAXIMUM_SAMPLES);
                return ZF_EXIT_BAD_INPUT;
            }
            limit = (size_t)parsed;
        } else if (strcmp(argument, "--protocol-version") == 0) {
            uint64_t parsed;
            if (zf_parse_u64(value, 1, UINT32_MAX, &parsed) != 0) {
                fprintf(stderr, "zapfleet-agent-c: --protocol-version '%s' must be a whole number from 1 to %u\n", value, UINT32_MAX);
                return ZF_EXIT_BAD_INPUT;
            }
            options.protocol_version = (uint32_t)parsed;
        }
        else if (strcmp(argument, "--kvm") == 0) kvm = value;
        else { fprintf(stderr, "zapfleet-agent-c: unknown option %s\n", argument); usage(stderr); return ZF_EXIT_BAD_INPUT; }
    }
    int default_operation = zf_operation_index(operation);
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
    if (options.endpoint == NULL || (index >= argc && kvm == NULL) || default_operation < 0) {
        if (default_operation < 0) {
            fprintf(stderr, "zapfleet-agent-c: --operation %s is not a report operation (", operation);
            for (size_t known = 0; known < zf_operation_count(); known++) fprintf(stderr, "%s%s", known ? ", " : "", zf_operation_name(known));
            fprintf(stderr, ")\n");
        }
        usage(stderr);
        return ZF_EXIT_BAD_INPUT;
    }
    char *const *command = kvm != NULL ? kvm_command : &argv[index];

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    /* A parent may start us with these blocked (a signal mask is inherited across exec): unblock them. */
    sigset_t stops;
    sigemptyset(&stops);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGTERM);
    sigprocmask(SIG_UNBLOCK, &stops, NULL);

    zf_agent *agent = zf_agent_connect(&options);
    if (agent == NULL) {
        int error = errno;
        const char *what = error == ZF_EBADKEY || error == ENOENT || error == EACCES ? " (--key, --coordinator-key)"
            : error == EINVAL ? " (--connect, --name, and --key with --coordinator-key)" : "";
        fprintf(stderr, "zapfleet-agent-c: cannot connect to %s: %s%s\n", options.endpoint, zf_strerror(error), what);
        return ZF_EXIT_BAD_INPUT;
    }
    int status = 0;
    while (!interrupted) {
        zf_job job = {0};
        int event = zf_agent_poll(agent, 1000, -1, NULL, &job);
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
            fprintf(stderr, "zapfleet-agent-c: the coordinator says stop: %s\n", zf_agent_reason(agent));
            if (zf_agent_result_pending(agent)) fprintf(stderr, "zapfleet-agent-c: the run ended before the coordinator acknowledged the result\n");
            break;
        } else if (event == ZF_EVENT_REFUSED) {
            fprintf(stderr, "zapfleet-agent-c: refused by the coordinator: %s\n", zf_agent_reason(agent));
            status = ZF_EXIT_REFUSED;
            break;
        } else if (event < 0) {
            fprintf(stderr, "zapfleet-agent-c: the connection failed: %s\n", zf_strerror(errno));
            status = ZF_EXIT_INTERNAL_ERROR;
            break;
        }
    }
    if (interrupted && status == 0) status = ZF_EXIT_INTERRUPTED;
    zf_agent_close(agent);
    return status;
}
