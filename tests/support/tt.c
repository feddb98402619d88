/*
 * The runner behind tt.h. Registration is by constructor, so a test file is only its tests;
 * running one case per process keeps cases independent (no shared state, no leaked sockets).
 *
 * The budget watchdog is one detached thread per arming that sleeps until its deadline on the
 * monotonic clock and then fails the case, unless the arming it belongs to was replaced or
 * stopped meanwhile (a generation number, read under a lock). A thread rather than alarm():
 * failing runs atexit handlers and stdio, which a signal handler may not.
 */
#include "tt.h"

#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TT_MAX 512

static struct {
    const char *name;
    tt_fn fn;
} cases[TT_MAX];
static size_t ncases;
static const char *current;

void tt_register(const char *name, tt_fn fn)
{
    if (ncases == TT_MAX) {
        fprintf(stderr, "tt: too many cases\n");
        abort();
    }
    cases[ncases].name = name;
    cases[ncases].fn = fn;
    ncases++;
}

void tt_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL %s at %s:%d: check `%s`: ", current ? current : "?", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    exit(1);
}

void tt_skip(const char *fmt, ...)
{
    va_list ap;
    fprintf(stdout, "SKIP %s: ", current ? current : "?");
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    exit(77);
}

void tt_note(const char *fmt, ...)
{
    va_list ap;
    fputs("# ", stdout);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

static int run_one(size_t i)
{
    current = cases[i].name;
    cases[i].fn();
    printf("PASS %s\n", current);
    fflush(stdout);
    return 0;
}

int tt_main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < ncases; i++)
            printf("%s\n", cases[i].name);
        return 0;
    }
    if (argc > 1) {
        for (size_t i = 0; i < ncases; i++)
            if (strcmp(cases[i].name, argv[1]) == 0)
                return run_one(i);
        fprintf(stderr, "tt: no case named '%s' (try --list)\n", argv[1]);
        return 2;
    }
    for (size_t i = 0; i < ncases; i++)
        run_one(i);
    return 0;
}

uint64_t tt_budget_ms(uint64_t base_ms, uint64_t units, double per_unit_ms)
{
    double ms = (double)base_ms + (double)units * per_unit_ms;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    ms *= 3;
#endif
    const char *slow = getenv("SHOAL_TEST_SLOWDOWN");
    if (slow && *slow && atof(slow) > 0)
        ms *= atof(slow);
    return (uint64_t)ms;
}

static struct {
    pthread_mutex_t mu;
    uint64_t generation;
    char what[512];
    uint64_t budget_ms;
} watchdog = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *watchdog_main(void *arg)
{
    uint64_t mine = (uint64_t)(uintptr_t)arg;
    pthread_mutex_lock(&watchdog.mu);
    uint64_t budget_ms = watchdog.budget_ms;
    pthread_mutex_unlock(&watchdog.mu);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    uint64_t end_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec + budget_ms * 1000000u;
    struct timespec until = {.tv_sec = (time_t)(end_ns / 1000000000u), .tv_nsec = (long)(end_ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) != 0)
        ;
    char what[sizeof watchdog.what];
    pthread_mutex_lock(&watchdog.mu);
    bool current_arming = watchdog.generation == mine;
    memcpy(what, watchdog.what, sizeof what);
    pthread_mutex_unlock(&watchdog.mu);
    if (current_arming)
        tt_fail(__FILE__, __LINE__, "within budget", "%s took longer than its budget of %.1f s", what,
                (double)budget_ms / 1000);
    return NULL;
}

void tt_budget_start(uint64_t budget_ms, const char *fmt, ...)
{
    char what[sizeof watchdog.what];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&watchdog.mu);
    uint64_t mine = ++watchdog.generation;
    memcpy(watchdog.what, what, sizeof what);
    watchdog.budget_ms = budget_ms;
    pthread_mutex_unlock(&watchdog.mu);
    tt_note("budget %.1f s for %s", (double)budget_ms / 1000, what);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    TT_CHECK(pthread_create(&t, &attr, watchdog_main, (void *)(uintptr_t)mine) == 0, "the budget's watchdog thread");
    pthread_attr_destroy(&attr);
}

void tt_budget_stop(void)
{
    pthread_mutex_lock(&watchdog.mu);
    watchdog.generation++;
    pthread_mutex_unlock(&watchdog.mu);
}

char *tt_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *path;
    if (asprintf(&path, "%s/shoal-%s-XXXXXX", base && *base ? base : "/tmp", tag) < 0 || !mkdtemp(path))
        tt_fail(__FILE__, __LINE__, "mkdtemp", "cannot create a temporary directory");
    return path;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(p);
    return 0;
}

void tt_rmtree(const char *path)
{
    if (path)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *tt_source_path(const char *rel)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", SHOAL_SOURCE_DIR, rel);
    return buf;
}

int tt_spawn_server(char *const argv[], const char *env, const char *what, int *port, int *stdin_fd)
{
    int in[2], out[2];
    TT_CHECK(pipe(in) == 0 && pipe(out) == 0, "pipe");
    pid_t pid = fork();
    TT_CHECK(pid >= 0, "fork");
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        if (env)
            putenv((char *)env);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    *stdin_fd = in[1];
    char line[256];
    size_t got = 0;
    while (got < sizeof line - 1 && read(out[0], line + got, 1) == 1 && line[got] != '\n')
        got++;
    line[got] = '\0';
    close(out[0]);
    const char *p = strstr(line, "\"port\":");
    TT_CHECK(p != NULL, "%s did not start (said '%s')", what, line);
    *port = atoi(p + 7); /* skips the space some helpers print after the colon */
    return pid;
}
