/*
 * The real-daemon harness (test_daemon_harness.h). Daemons are separate processes, so a test sees
 * them only as a user does: through the control socket (node_control client functions), their
 * exit status, their logs, and the S3 server's own request counters.
 */
#include "test_daemon_harness.h"

#include "node_control.h"
#include "s3_client.h"
#include "shoal_error.h"
#include "tt.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* What the exit handler cleans up: the one cluster of this test process. */
static td_cluster *g_cluster;
static bool g_passed;

uint64_t td_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void td_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

const char *td_shoald(void) { return SHOALD_PATH; }
const char *td_shoal(void) { return SHOAL_CLI_PATH; }

static void tail_log(const td_node *n)
{
    char cmd[400];
    fprintf(stderr, "---- last lines of %s (%s) ----\n", n->id, n->log);
    snprintf(cmd, sizeof cmd, "tail -n 25 '%s' >&2", n->log);
    if (system(cmd) != 0)
        fprintf(stderr, "(no log)\n");
}

static void at_exit(void)
{
    td_cluster *c = g_cluster;
    if (c == NULL)
        return;
    for (int i = 0; i < c->n; i++)
        if (c->nodes[i].pid > 0) {
            kill(c->nodes[i].pid, SIGCONT);
            kill(c->nodes[i].pid, SIGKILL);
            waitpid(c->nodes[i].pid, NULL, 0);
            c->nodes[i].pid = 0;
        }
    if (!g_passed) {
        for (int i = 0; i < c->n; i++)
            if (c->nodes[i].log[0])
                tail_log(&c->nodes[i]);
        fprintf(stderr, "daemon directories kept in %s\n", c->dir);
        return;
    }
    tt_s3rver_stop(&c->s3);
    tt_rmtree(c->dir);
}

void td_pass(td_cluster *c) { g_passed = true; }

typedef struct td_call {
    td_cluster *c;
    int i;
    void (*fn)(td_cluster *c, int i);
} td_call;

static void *td_call_main(void *arg)
{
    td_call *k = arg;
    k->fn(k->c, k->i);
    return NULL;
}

void td_each_running_node(td_cluster *c, void (*fn)(td_cluster *c, int i)) { td_each_node_but(c, -1, fn); }

void td_each_node_but(td_cluster *c, int skip, void (*fn)(td_cluster *c, int i))
{
    pthread_t t[TD_MAX_NODES];
    td_call k[TD_MAX_NODES];
    int n = 0;
    for (int i = 0; i < c->n; i++) {
        if (c->nodes[i].pid <= 0 || i == skip)
            continue;
        k[n] = (td_call){c, i, fn};
        TT_CHECK(pthread_create(&t[n], NULL, td_call_main, &k[n]) == 0, "pthread_create");
        n++;
    }
    for (int j = 0; j < n; j++)
        pthread_join(t[j], NULL);
}

td_cluster *td_cluster_new(int n, const char *block_size)
{
    static td_cluster cluster;
    td_cluster *c = &cluster;
    TT_CHECK(g_cluster == NULL, "one cluster per test process");
    TT_CHECK(n > 0 && n <= TD_MAX_NODES, "n=%d", n);
    if (access(SHOALD_PATH, X_OK) != 0)
        TT_SKIP("shoald is not built at %s", SHOALD_PATH);
    /* Every process of the daemon and the S3 client below find the S3 server's credentials here. */
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    setenv("AWS_REGION", "us-east-1", 1);
    unsetenv("AWS_SESSION_TOKEN");
    unsetenv("AWS_PROFILE");
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    tt_s3rver_start(&c->s3, TD_BUCKET, false);
    c->dir = tt_tmpdir("daemon");
    c->n = n;
    c->block_size = block_size;
    pid_t pid = getpid();
    c->net[0] = (uint8_t)(100 + (pid / 256) % 150);
    c->net[1] = (uint8_t)(pid % 256);
    c->port = 7400;
    g_cluster = c;
    atexit(at_exit);
    for (int i = 0; i < n; i++) {
        td_node *nd = &c->nodes[i];
        snprintf(nd->id, sizeof nd->id, "node%d", i);
        snprintf(nd->ip, sizeof nd->ip, "127.%u.%u.%d", c->net[0], c->net[1], i + 1);
        snprintf(nd->dir, sizeof nd->dir, "%s/%s", c->dir, nd->id);
        snprintf(nd->control, sizeof nd->control, "%s/ctl.sock", nd->dir);
        snprintf(nd->log, sizeof nd->log, "%s/log", nd->dir);
        TT_CHECK(mkdir(nd->dir, 0700) == 0, "mkdir %s", nd->dir);
    }
    snprintf(c->key, sizeof c->key, "%s/cluster.key", c->dir);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' keygen -o '%.299s'", SHOAL_CLI_PATH, c->key);
    TT_CHECK(system(cmd) == 0, "shoal keygen failed: %s", cmd);
    return c;
}

/* CPU time (user + system, in clock ticks) that process pid has used so far; 0 when unknown. */
static uint64_t cpu_ticks(pid_t pid)
{
    char path[64], stat[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(stat, 1, sizeof stat - 1, f) : 0;
    if (f)
        fclose(f);
    stat[n] = '\0';
    /* "pid (comm) state ppid ...": utime and stime are the 12th and 13th fields after comm. */
    const char *p = strrchr(stat, ')');
    unsigned long long utime = 0, stime = 0;
    if (p == NULL || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return 0;
    return utime + stime;
}

void td_node_start(td_cluster *c, int i, const char *const *extra)
{
    td_node *nd = &c->nodes[i];
    TT_CHECK(nd->pid == 0, "%s already runs", nd->id);
    char bind[64], seed[64 * TD_MAX_NODES] = "", cache[300];
    snprintf(bind, sizeof bind, "%s:%u", nd->ip, c->port);
    /* Every node started before this one is a seed: the join reaches all of them at once, so they
     * admit this node's key before it dials them (see the report on links refused by ZAP). */
    for (int k = 0; k < i; k++)
        snprintf(seed + strlen(seed), sizeof seed - strlen(seed), "%s%s:%u", k ? "," : "", c->nodes[k].ip, c->port);
    snprintf(cache, sizeof cache, "%s/cache", nd->dir);
    const char *endpoint = c->endpoint ? c->endpoint : c->s3.endpoint;
    const char *argv[64] = {SHOALD_PATH,       "--node-id",   nd->id,         "--bind",
                            bind,              "--bucket",    "s3://" TD_BUCKET, "--path-style",
                            "--region",        "us-east-1",
                            "--cache-dir",     cache,         "--cache-size", "256M",
                            "--block-size",    c->block_size, "--cluster-key", c->key,
                            "--control",       nd->control,   "--metrics",    "off",
                            "--log-level",     getenv("TD_LOG_LEVEL") ? getenv("TD_LOG_LEVEL") : "info"};
    /* A case that gives a --config file sets the log level there: a --log-level flag would win over
     * the file, also when SIGHUP reads it again. */
    bool own_config = false;
    for (int k = 0; extra && extra[k]; k++)
        own_config = own_config || strcmp(extra[k], "--config") == 0;
    int n = own_config ? 22 : 24;
    if (!c->endpoint_in_env) {
        argv[n++] = "--endpoint";
        argv[n++] = endpoint;
    }
    if (i != 0) {
        argv[n++] = "--seeds";
        argv[n++] = seed;
    }
    bool own_stall = false;
    for (int k = 0; extra && extra[k]; k++) {
        TT_CHECK(n < 62, "too many flags");
        own_stall = own_stall || strcmp(extra[k], "--s3-stall-timeout") == 0;
        argv[n++] = extra[k];
    }
    /* The local S3 server shares the machine with everything else a test run starts, and on a
     * loaded machine it can be silent for seconds; the 5 s default stall limit would turn that
     * into failed reads no case means to test. Cases about stalls set their own limit. */
    if (!own_stall) {
        TT_CHECK(n < 62, "too many flags");
        argv[n++] = "--s3-stall-timeout";
        argv[n++] = "60";
    }
    argv[n] = NULL;
    pid_t pid = fork();
    TT_CHECK(pid >= 0, "fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (nd->netns[0]) {
            int ns = open(nd->netns, O_RDONLY | O_CLOEXEC);
            if (ns < 0 || setns(ns, CLONE_NEWNET) != 0)
                _exit(126);
        }
        int fd = open(nd->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        /* No inherited descriptor (the S3 server's stdin pipe above all) may outlive the test. */
        for (int f = 3; f < 1024; f++)
            close(f);
        if (c->endpoint_in_env)
            setenv("AWS_ENDPOINT_URL_S3", endpoint, 1);
        execv(SHOALD_PATH, (char **)argv);
        _exit(127);
    }
    nd->pid = pid;
    /* The control socket appears once the daemon is up; a daemon that exits early is a failure,
     * and so is one that stops working without making it (no CPU time used for 10 s). One that
     * works is waited for however long it takes: a busy machine, or a sanitizer build, makes the
     * start slower, never a failure. */
    uint64_t cpu = cpu_ticks(pid), worked_ms = td_now_ms();
    while (access(nd->control, F_OK) != 0) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            nd->pid = 0;
            nd->exit_status = st;
            tail_log(nd);
            TT_CHECK(false, "%s exited at start (status %d)", nd->id, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        }
        uint64_t now_cpu = cpu_ticks(pid);
        if (now_cpu != cpu) {
            cpu = now_cpu;
            worked_ms = td_now_ms();
        }
        TT_CHECK(td_now_ms() - worked_ms < 10000, "%s: no control socket, and no CPU time used for 10 s", nd->id);
        td_sleep_ms(20);
    }
}

/* node i's status document (free with node_json_delete), or NULL. */
static node_json *status_of(td_cluster *c, int i)
{
    shoal_buf body = {0};
    node_json *j = NULL;
    if (node_control_call(c->nodes[i].control, "status", &body) == 0)
        j = node_json_parse((const char *)body.data, body.len);
    shoal_buf_destroy(&body);
    return j;
}

bool td_wait_alive(td_cluster *c, int i, int alive, int timeout_ms)
{
    uint64_t deadline = td_now_ms() + (uint64_t)timeout_ms;
    do {
        node_json *j = status_of(c, i);
        int n = 0;
        const node_json *members = node_json_get(j, "members");
        for (const node_json *m = members ? members->child : NULL; m; m = m->next)
            n += strcmp(node_json_get_str(m, "state", ""), "alive") == 0;
        node_json_delete(j);
        if (n == alive)
            return true;
        td_sleep_ms(50);
    } while (td_now_ms() < deadline);
    return false;
}

void td_wait_cluster(td_cluster *c, int timeout_ms)
{
    int running = 0;
    for (int i = 0; i < c->n; i++)
        running += c->nodes[i].pid > 0;
    for (int i = 0; i < c->n; i++)
        if (c->nodes[i].pid > 0)
            TT_CHECK(td_wait_alive(c, i, running, timeout_ms), "%s does not see %d alive members within %d ms",
                     c->nodes[i].id, running, timeout_ms);
}

void td_member_state(td_cluster *c, int i, const char *id, char *out, size_t out_len)
{
    out[0] = '\0';
    node_json *j = status_of(c, i);
    const node_json *members = node_json_get(j, "members");
    for (const node_json *m = members ? members->child : NULL; m; m = m->next)
        if (strcmp(node_json_get_str(m, "id", ""), id) == 0)
            snprintf(out, out_len, "%s", node_json_get_str(m, "state", ""));
    node_json_delete(j);
}

int td_member_count(td_cluster *c, int i)
{
    node_json *j = status_of(c, i);
    int n = 0;
    const node_json *members = node_json_get(j, "members");
    for (const node_json *m = members ? members->child : NULL; m; m = m->next)
        n++;
    node_json_delete(j);
    return n;
}

void td_node_signal(td_cluster *c, int i, int sig)
{
    TT_CHECK(c->nodes[i].pid > 0, "%s does not run", c->nodes[i].id);
    TT_CHECK(kill(c->nodes[i].pid, sig) == 0, "kill %s", c->nodes[i].id);
}

/* Prints every thread's stack of a daemon that hangs (when gdb is there), so a failure says where
 * it hung instead of only that it did. */
static void dump_stacks(const td_node *nd)
{
    if (system("command -v gdb >/dev/null 2>&1") != 0)
        return;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "gdb -batch -nx -p %d -ex 'thread apply all bt' 2>/dev/null | grep -E '^(Thread|#)' >&2",
             (int)nd->pid);
    fprintf(stderr, "---- threads of %s (pid %d) ----\n", nd->id, (int)nd->pid);
    fflush(stderr);
    if (system(cmd) != 0)
        fprintf(stderr, "(gdb could not attach)\n");
}

int td_node_wait(td_cluster *c, int i, int timeout_ms)
{
    td_node *nd = &c->nodes[i];
    uint64_t deadline = td_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int st;
        if (waitpid(nd->pid, &st, WNOHANG) == nd->pid) {
            nd->pid = 0;
            nd->exit_status = st;
            return st;
        }
        if (td_now_ms() >= deadline) {
            dump_stacks(nd);
            TT_CHECK(false, "%s did not exit within %d ms", nd->id, timeout_ms);
        }
        td_sleep_ms(20);
    }
}

uint8_t *td_content(size_t size, uint32_t seed)
{
    uint8_t *p = malloc(size ? size : 1);
    TT_CHECK(p != NULL, "malloc %zu", size);
    uint64_t x = 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed << 17 | seed);
    for (size_t i = 0; i < size; i++) {
        if (i % 8 == 0) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        p[i] = (uint8_t)(x >> (8 * (i % 8)));
    }
    return p;
}

s3_client *td_s3_client(td_cluster *c)
{
    s3_client_config cfg;
    s3_client_config_defaults(&cfg);
    cfg.endpoint = c->s3.endpoint;
    cfg.path_style = true;
    s3_client *s3 = s3_client_new(&cfg);
    TT_CHECK(s3 != NULL, "s3_client_new: %s", shoal_error_message());
    return s3;
}

void td_put(td_cluster *c, const char *key, size_t size, uint32_t seed)
{
    s3_client *s3 = td_s3_client(c);
    uint8_t *data = td_content(size, seed);
    s3_put_args a = {.bucket = TD_BUCKET, .key = key, .data = data, .fd = -1, .len = size};
    TT_OK(s3_put(s3, &a, NULL));
    free(data);
    s3_client_delete(s3);
}

uint8_t *td_get(td_cluster *c, int i, const char *key, size_t *len)
{
    return td_get_range(c, i, key, 0, UINT64_MAX, len);
}

uint8_t *td_get_range(td_cluster *c, int i, const char *key, uint64_t offset, uint64_t length, size_t *len)
{
    int fd = memfd_create("td_get", 0);
    TT_CHECK(fd >= 0, "memfd_create");
    uint64_t size = 0;
    uint8_t *out = NULL;
    if (node_control_get_range(c->nodes[i].control, TD_BUCKET, key, offset, length, fd, &size) != 0)
        goto done;
    off_t end = lseek(fd, 0, SEEK_END);
    out = malloc(end > 0 ? (size_t)end : 1);
    TT_CHECK(out != NULL, "malloc");
    TT_CHECK(pread(fd, out, (size_t)end, 0) == end, "pread");
    *len = (size_t)end;
done:
    close(fd);
    return out;
}

void td_get_check(td_cluster *c, int i, const char *key, size_t size, uint32_t seed)
{
    size_t len = 0;
    uint8_t *got = td_get(c, i, key, &len);
    TT_CHECK(got != NULL, "get %s on %s: %s", key, c->nodes[i].id, shoal_error_message());
    uint8_t *want = td_content(size, seed);
    TT_CHECK(len == size, "get %s on %s: %zu bytes, expected %zu", key, c->nodes[i].id, len, size);
    TT_CHECK(memcmp(got, want, size) == 0, "get %s on %s: the bytes differ from what was uploaded", key,
             c->nodes[i].id);
    free(got);
    free(want);
}

uint64_t td_stat(td_cluster *c, int i, const char *name)
{
    shoal_buf body = {0};
    TT_CHECK(node_control_call(c->nodes[i].control, "stats", &body) == 0, "stats of %s: %s", c->nodes[i].id,
             shoal_error_message());
    node_json *j = node_json_parse((const char *)body.data, body.len);
    TT_CHECK(j != NULL && node_json_get(j, name) != NULL, "stats of %s: no %s", c->nodes[i].id, name);
    uint64_t v = node_json_get_u64(j, name, 0);
    node_json_delete(j);
    shoal_buf_destroy(&body);
    return v;
}

bool td_wait_log(td_cluster *c, int i, const char *what, int timeout_ms)
{
    uint64_t until = td_now_ms() + (uint64_t)timeout_ms;
    char line[4096];
    do {
        FILE *f = fopen(c->nodes[i].log, "r");
        bool found = false;
        while (f && !found && fgets(line, sizeof line, f))
            found = strstr(line, what) != NULL;
        if (f)
            fclose(f);
        if (found)
            return true;
        td_sleep_ms(50);
    } while (td_now_ms() < until);
    return false;
}

int td_log_count(td_cluster *c, int i, const char *pattern)
{
    regex_t re;
    TT_CHECK(regcomp(&re, pattern, REG_NOSUB) == 0, "bad pattern '%s'", pattern);
    FILE *f = fopen(c->nodes[i].log, "r");
    char line[4096];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += regexec(&re, line, 0, NULL, 0) == 0;
    if (f)
        fclose(f);
    regfree(&re);
    return n;
}

bool td_wait_state(td_cluster *c, int i, const char *id, const char *state, int timeout_ms)
{
    uint64_t until = td_now_ms() + (uint64_t)timeout_ms;
    char got[32];
    for (;;) {
        td_member_state(c, i, id, got, sizeof got);
        if (strcmp(got, state) == 0)
            return true;
        if (td_now_ms() >= until)
            return false;
        td_sleep_ms(50);
    }
}

char *td_control_raw(td_cluster *c, int i, const char *request)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    TT_CHECK(strlen(c->nodes[i].control) < sizeof sa.sun_path, "control path too long");
    strcpy(sa.sun_path, c->nodes[i].control);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    TT_CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect to %s", c->nodes[i].control);
    size_t n = strlen(request);
    TT_CHECK(write(fd, request, n) == (ssize_t)n && write(fd, "\n", 1) == 1, "sending a request to %s",
             c->nodes[i].id);
    shoal_buf b = {0};
    char chunk[4096];
    ssize_t k;
    while ((k = read(fd, chunk, sizeof chunk)) > 0)
        TT_CHECK(shoal_buf_append(&b, chunk, (size_t)k) == 0, "out of memory");
    close(fd);
    TT_CHECK(shoal_buf_append_byte(&b, 0) == 0, "out of memory");
    return (char *)shoal_buf_steal(&b, NULL);
}
