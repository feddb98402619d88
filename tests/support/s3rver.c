/*
 * Starting and stopping the local S3 server. The server's stdin is a pipe we hold: when the test
 * process exits for any reason, the pipe closes and start.js shuts down.
 */
#include "s3rver.h"
#include "tt.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *script(void) { return tt_source_path("tests/s3rver/start.js"); }

void tt_s3rver_start(tt_s3rver *s, const char *bucket, bool legacy)
{
    memset(s, 0, sizeof *s);
    char mods[4096];
    snprintf(mods, sizeof mods, "%s", tt_source_path(legacy ? "tests/s3rver/node_modules/s3rver"
                                                             : "tests/s3rver/node_modules/@20minutes/s3rver"));
    if (access(mods, R_OK) != 0)
        TT_SKIP("the local S3 server is not installed (%s missing): run scripts/deps", mods);
    if (system("node --version >/dev/null 2>&1") != 0)
        TT_SKIP("node is not installed: run scripts/deps");
    s->dir = tt_tmpdir("s3rver");
    const char *argv[12] = {"node", script(), "--dir", s->dir, "--port", "0"};
    int n = 6;
    if (bucket) {
        argv[n++] = "--bucket";
        argv[n++] = bucket;
    }
    if (legacy)
        argv[n++] = "--legacy";
    argv[n] = NULL;
    s->pid = tt_spawn_server((char *const *)argv, "NODE_OPTIONS=--openssl-legacy-provider", "the S3 server",
                             &s->port, &s->stdin_fd);
    snprintf(s->endpoint, sizeof s->endpoint, "http://127.0.0.1:%d", s->port);
}

void tt_s3rver_stop(tt_s3rver *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        close(s->stdin_fd);
        s->pid = 0;
    }
    if (s->dir) {
        tt_rmtree(s->dir);
        free(s->dir);
        s->dir = NULL;
    }
}

char *tt_http(int port, const char *method, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return NULL;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return NULL;
    }
    char req[1024];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", method, path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1024 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    char *body = strstr(buf, "\r\n\r\n");
    if (!body) {
        free(buf);
        return NULL;
    }
    memmove(buf, body + 4, strlen(body + 4) + 1);
    return buf;
}

long tt_s3rver_stat(const tt_s3rver *s, const char *field)
{
    char *body = tt_http(s->port, "GET", "/_shoal/stats");
    TT_CHECK(body != NULL, "the S3 server did not answer /_shoal/stats");
    char key[64];
    snprintf(key, sizeof key, "\"%s\":", field);
    char *p = strstr(body, key);
    TT_CHECK(p != NULL, "no field %s in %s", field, body);
    long v = atol(p + strlen(key));
    free(body);
    return v;
}

void tt_s3rver_stats_reset(const tt_s3rver *s) { free(tt_http(s->port, "POST", "/_shoal/stats/reset")); }
