/*
 * s3_creds_process: a profile's credential_process, run as the SDKs run it.
 *
 * The command line goes to /bin/sh -c (as aws-sdk-go-v2 does on Unix, so quoting works as a
 * user expects), with stdin from /dev/null, our environment, and stdout and stderr on pipes. It
 * must print one JSON object: {"Version": 1, "AccessKeyId", "SecretAccessKey", and optionally
 * "SessionToken" and "Expiration" (ISO 8601)}. Without Expiration the credentials do not expire
 * and the process is not run again (unless the profile file changes); with it, the provider runs
 * the process again five minutes before that time.
 *
 * posix_spawn, not fork: the daemon has many threads, and posix_spawn is the one way to start a
 * child from such a process that does not copy its memory or run anything between fork and exec.
 * Both pipes are read with poll() until they close, with a deadline (60 s unless the options say
 * otherwise); a process past it is killed. stdout is bounded to 64 KiB and never appears in a
 * message (it holds the secret); the last line of stderr (bounded) does, since that is where a
 * helper explains why it failed.
 */
#include "s3_creds_internal.h"

#include "shoal_error.h"
#include "shoal_log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PROCESS_MAX_STDOUT 65536
#define PROCESS_STDERR_KEPT 512
#define PROCESS_DEFAULT_TIMEOUT_MS 60000

static int64_t process_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Keeps the tail of stderr: at most PROCESS_STDERR_KEPT bytes. */
static void process_keep_err(shoal_buf *err, const char *data, size_t n)
{
    if (n >= PROCESS_STDERR_KEPT) {
        data += n - PROCESS_STDERR_KEPT;
        n = PROCESS_STDERR_KEPT;
    }
    if (err->len + n > PROCESS_STDERR_KEPT) {
        size_t drop = err->len + n - PROCESS_STDERR_KEPT;
        memmove(err->data, err->data + drop, err->len - drop);
        err->len -= drop;
    }
    shoal_buf_append(err, data, n);
}

/* The last non-empty line of stderr, printable bytes only, into out. */
static void process_err_line(const shoal_buf *err, char *out, size_t cap)
{
    size_t end = err->len;
    while (end > 0 && strchr(" \t\r\n", err->data[end - 1]))
        end--;
    size_t start = end;
    while (start > 0 && err->data[start - 1] != '\n')
        start--;
    size_t o = 0;
    for (size_t i = start; i < end && o + 1 < cap; i++)
        out[o++] = err->data[i] >= 0x20 && err->data[i] < 0x7f ? (char)err->data[i] : '?';
    out[o] = '\0';
}

/* Starts /bin/sh -c command with stdout and stderr on the write ends of the two pipes. */
static int process_spawn(const s3_creds_src *s, int out_w, int err_w, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    char *argv[] = {"/bin/sh", "-c", s->command, NULL};
    int err = posix_spawn_file_actions_init(&fa);
    if (err)
        return shoal_error_set(SHOAL_ERR_NOMEM, "%s: posix_spawn: %s", s->what, strerror(err));
    err = posix_spawnattr_init(&attr);
    if (err) {
        posix_spawn_file_actions_destroy(&fa);
        return shoal_error_set(SHOAL_ERR_NOMEM, "%s: posix_spawn: %s", s->what, strerror(err));
    }
    /* Its own process group, so a timeout kills whatever the shell started too. */
    err = posix_spawnattr_setpgroup(&attr, 0);
    if (!err)
        err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    if (!err)
        err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (!err)
        err = posix_spawn_file_actions_adddup2(&fa, out_w, 1);
    if (!err)
        err = posix_spawn_file_actions_adddup2(&fa, err_w, 2);
    if (!err)
        err = posix_spawn(pid, "/bin/sh", &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (err)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: cannot start /bin/sh: %s", s->what, strerror(err));
    return 0;
}

/* Reads both pipes until both close or the deadline passes. 1: finished, 0: timed out (*why
 * NULL) or too much output (*why says so), -1: poll failed. */
static int process_read(int out_r, int err_r, int64_t deadline, shoal_buf *out, shoal_buf *err, const char **why)
{
    struct pollfd fds[2] = {{.fd = out_r, .events = POLLIN}, {.fd = err_r, .events = POLLIN}};
    char chunk[4096];
    while (fds[0].fd >= 0 || fds[1].fd >= 0) {
        int64_t left = deadline - process_now_ms();
        if (left <= 0) {
            *why = NULL; /* the caller names the limit */
            return 0;
        }
        int n = poll(fds, 2, (int)(left > 1000 ? 1000 : left));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !fds[i].revents)
                continue;
            ssize_t got = read(fds[i].fd, chunk, sizeof chunk);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) {
                fds[i].fd = -1;
                continue;
            }
            if (i == 1) {
                process_keep_err(err, chunk, (size_t)got);
            } else if (out->len + (size_t)got > PROCESS_MAX_STDOUT) {
                *why = "printed more than 64 KiB";
                explicit_bzero(chunk, sizeof chunk);
                return 0;
            } else if (shoal_buf_append(out, chunk, (size_t)got) != 0) {
                *why = "printed more than memory allows";
                return 0;
            }
        }
    }
    explicit_bzero(chunk, sizeof chunk);
    return 1;
}

/* Reads the process's JSON into *out. */
static int process_parse(const s3_creds_src *s, const shoal_buf *text, s3_creds *out)
{
    char version[16] = "", expiration[64] = "";
    s3_creds_json_field fields[] = {
        {"Version", version, sizeof version, false, false},
        {"AccessKeyId", out->access_key, sizeof out->access_key, false, false},
        {"SecretAccessKey", out->secret_key, sizeof out->secret_key, false, false},
        {"SessionToken", out->session_token, sizeof out->session_token, false, false},
        {"Expiration", expiration, sizeof expiration, false, false},
    };
    if (text->len == 0)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: the process printed nothing", s->what);
    if (s3_creds_json_scan((const char *)text->data, text->len, fields, sizeof fields / sizeof *fields, s->what) != 0)
        return -1;
    if (!fields[0].seen || fields[0].is_string || strcmp(version, "1") != 0)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: the output's \"Version\" is %s%s, not the number 1",
                               s->what, fields[0].seen ? version : "missing", fields[0].is_string ? " (a string)" : "");
    if (!fields[1].seen || !fields[2].seen || !out->access_key[0] || !out->secret_key[0])
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: the output has no AccessKeyId/SecretAccessKey", s->what);
    out->expires = 0;
    if (fields[4].seen && (!fields[4].is_string || s3_creds_parse_time(expiration, &out->expires) != 0))
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: bad Expiration '%s' (want ISO 8601, e.g. "
                               "2026-01-02T03:04:05Z)", s->what, expiration);
    return 0;
}

int s3_creds_process_fetch(s3_creds_src *s, s3_creds *out)
{
    int rc = -1;
    int out_p[2] = {-1, -1}, err_p[2] = {-1, -1};
    pid_t pid = -1;
    shoal_buf text = {0}, err = {0};
    const char *why = NULL;
    char line[PROCESS_STDERR_KEPT + 1];
    s3_creds got = {0};
    if (pipe2(out_p, O_CLOEXEC) != 0 || pipe2(err_p, O_CLOEXEC) != 0) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: pipe: %s", s->what, strerror(errno));
        goto done;
    }
    int64_t deadline = process_now_ms() + (s->timeout_ms > 0 ? s->timeout_ms : PROCESS_DEFAULT_TIMEOUT_MS);
    if (process_spawn(s, out_p[1], err_p[1], &pid) != 0)
        goto done;
    close(out_p[1]);
    close(err_p[1]);
    out_p[1] = err_p[1] = -1;
    int done_reading = process_read(out_p[0], err_p[0], deadline, &text, &err, &why);
    if (done_reading <= 0) {
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        pid = -1;
        if (done_reading < 0)
            shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: poll: %s", s->what, strerror(errno));
        else if (why)
            shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: the process %s and was killed", s->what, why);
        else
            shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: the process did not finish within %d ms and was killed",
                            s->what, s->timeout_ms > 0 ? s->timeout_ms : PROCESS_DEFAULT_TIMEOUT_MS);
        goto done;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    pid = -1;
    process_err_line(&err, line, sizeof line);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char how[64];
        if (WIFEXITED(status))
            snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(status));
        else
            snprintf(how, sizeof how, "was killed by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: the process %s%s%s", s->what, how, line[0] ? ": " : "", line);
        goto done;
    }
    if (process_parse(s, &text, &got) != 0)
        goto done;
    *out = got;
    LOG_INFO("s3", "credentials", "source=credential_process expires=%lld", (long long)got.expires);
    rc = 0;
done:
    if (pid > 0) {
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    for (int i = 0; i < 2; i++) {
        if (out_p[i] >= 0)
            close(out_p[i]);
        if (err_p[i] >= 0)
            close(err_p[i]);
    }
    explicit_bzero(&got, sizeof got);
    if (text.data)
        explicit_bzero(text.data, text.cap);
    shoal_buf_destroy(&text);
    shoal_buf_destroy(&err);
    return rc;
}
