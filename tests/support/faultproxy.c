/* tests/s3/faultproxy.py driven from C (see faultproxy.h). */
#include "faultproxy.h"

#include "s3rver.h"
#include "tt.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Starts the proxy in front of upstream; over HTTPS with cert/key when cert is not NULL. */
void tt_proxy_start(tt_proxy *p, int upstream, const char *cert, const char *key)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        TT_SKIP("/usr/bin/python3 is missing: the fault proxy needs it");
    char port[16];
    snprintf(port, sizeof port, "%d", upstream);
    const char *argv[] = {"/usr/bin/python3", tt_source_path("tests/s3/faultproxy.py"), "--upstream", port,
                          cert ? "--tls" : NULL, cert, key, NULL};
    p->pid = tt_spawn_server((char *const *)argv, NULL, "the fault proxy", &p->port, &p->stdin_fd);
    snprintf(p->endpoint, sizeof p->endpoint, "%s://127.0.0.1:%d", cert ? "https" : "http", p->port);
}

void tt_proxy_stop(tt_proxy *p)
{
    if (p->pid > 0) {
        close(p->stdin_fd);
        kill(p->pid, SIGTERM);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
}

void tt_proxy_rule(tt_proxy *p, const char *query)
{
    char path[512];
    snprintf(path, sizeof path, "/_fault/rule?%s", query);
    free(tt_http(p->port, "POST", path));
}

long tt_proxy_stat(tt_proxy *p, const char *field)
{
    char *body = tt_http(p->port, "GET", "/_fault/stats");
    TT_CHECK(body != NULL, "the fault proxy did not answer");
    char key[32];
    snprintf(key, sizeof key, "\"%s\": ", field);
    const char *q = strstr(body, key);
    long v = q ? atol(q + strlen(key)) : 0;
    free(body);
    return v;
}

void tt_proxy_stat_str(tt_proxy *p, const char *field, char *out, size_t cap)
{
    char *body = tt_http(p->port, "GET", "/_fault/stats");
    TT_CHECK(body != NULL, "the fault proxy did not answer");
    char key[32];
    snprintf(key, sizeof key, "\"%s\": \"", field);
    const char *q = strstr(body, key);
    TT_CHECK(q != NULL, "no %s in %s", field, body);
    q += strlen(key);
    size_t n = strcspn(q, "\"");
    snprintf(out, cap, "%.*s", (int)n, q);
    free(body);
}

