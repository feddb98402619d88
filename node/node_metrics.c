/*
 * node_metrics: libmicrohttpd in its internal-thread mode serves one resource.
 *
 * We create and bind the listening socket ourselves and hand it to the library
 * (MHD_OPTION_LISTEN_SOCKET): that gives one code path for IPv4 and IPv6, an error message that
 * names the address when the bind fails, and the real port when the caller asked for port 0
 * (tests use that to avoid port clashes). Each scrape renders node_stats into a fresh buffer whose
 * ownership passes to the library (MHD_RESPMEM_MUST_FREE), so nothing is shared between scrapes.
 */
#include "node_metrics.h"
#include "shoal_error.h"
#include "shoal_log.h"

#include <arpa/inet.h>
#include <stdatomic.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct node_metrics {
    struct MHD_Daemon *mhd;
    int fd;
    uint16_t port;
    node_stats *stats;
    node_metrics_refresh_fn refresh;
    void *ctx;
    _Atomic(node_metrics_ready_fn) ready;
    void *_Atomic ready_ctx;
};

static enum MHD_Result answer_text(struct MHD_Connection *conn, unsigned status, char *text, size_t len,
                                   enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, mode);
    if (!resp) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    node_metrics *m = cls;
    static const char not_found[] = "not found: /metrics, /healthz and /readyz are served here\n";
    static const char bad_method[] = "method not allowed\n";
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return answer_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, (char *)bad_method, sizeof bad_method - 1,
                           MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/healthz") == 0) {
        static const char ok[] = "ok\n";
        return answer_text(conn, MHD_HTTP_OK, (char *)ok, sizeof ok - 1, MHD_RESPMEM_PERSISTENT);
    }
    if (strcmp(url, "/readyz") == 0) {
        char why[400] = "starting";
        node_metrics_ready_fn ready = atomic_load(&m->ready);
        bool yes = ready && ready(atomic_load(&m->ready_ctx), why, sizeof why);
        char *text = NULL;
        int n = yes ? asprintf(&text, "ready\n") : asprintf(&text, "not ready: %s\n", why);
        if (n < 0)
            return MHD_NO;
        return answer_text(conn, yes ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, text, (size_t)n,
                           MHD_RESPMEM_MUST_FREE);
    }
    if (strcmp(url, "/metrics") != 0)
        return answer_text(conn, MHD_HTTP_NOT_FOUND, (char *)not_found, sizeof not_found - 1, MHD_RESPMEM_PERSISTENT);
    if (m->refresh)
        m->refresh(m->ctx, m->stats);
    shoal_buf b = {0};
    if (node_stats_render_prometheus(m->stats, &b) < 0 || node_stats_render_process(&b) < 0 ||
        shoal_buf_appendf(&b, "# HELP shoal_build_info The version of shoald that answers (always 1).\n"
                              "# TYPE shoal_build_info gauge\nshoal_build_info{version=\"%s\"} 1\n",
                          SHOAL_VERSION) < 0) {
        shoal_buf_destroy(&b);
        return MHD_NO;
    }
    size_t len;
    uint8_t *text = shoal_buf_steal(&b, &len);
    return answer_text(conn, MHD_HTTP_OK, (char *)text, len, MHD_RESPMEM_MUST_FREE);
}

/* libmicrohttpd's own messages, as key=value log lines like every other line of the daemon. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512], q[600];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    LOG_WARN("metrics", "http", "msg=%s", shoal_log_q(q, sizeof q, msg));
}

/* Binds and listens on addr; returns the fd and the bound port. */
static int listen_on(const shoal_addr *addr, uint16_t *port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    char text[SHOAL_ADDR_STRLEN];
    memset(&ss, 0, sizeof ss);
    if (addr->family == 4) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(addr->port);
        memcpy(&sin->sin_addr, addr->ip, 4);
        sl = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(addr->port);
        memcpy(&sin6->sin6_addr, addr->ip, 16);
        sl = sizeof *sin6;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        return shoal_error_errno(errno, "metrics: socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 64) < 0) {
        shoal_error_errno(errno, "metrics: cannot listen on %s (--metrics)", shoal_addr_format(addr, text));
        close(fd);
        return -1;
    }
    sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                          : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}

node_metrics *node_metrics_new(const shoal_addr *addr, node_stats *stats, node_metrics_refresh_fn refresh, void *ctx)
{
    node_metrics *m = calloc(1, sizeof *m);
    if (!m) {
        shoal_error_set(SHOAL_ERR_NOMEM, "out of memory for the metrics listener");
        return NULL;
    }
    m->stats = stats;
    m->refresh = refresh;
    m->ctx = ctx;
    m->fd = listen_on(addr, &m->port);
    if (m->fd < 0)
        goto fail;
    m->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, m,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET, m->fd, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                              MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_END);
    if (!m->mhd) {
        char text[SHOAL_ADDR_STRLEN];
        shoal_error_set(SHOAL_ERR_IO, "metrics: the HTTP server did not start on %s", shoal_addr_format(addr, text));
        close(m->fd);
        goto fail;
    }
    return m;
fail:
    free(m);
    return NULL;
}

void node_metrics_set_ready(node_metrics *m, node_metrics_ready_fn ready, void *ctx)
{
    atomic_store(&m->ready_ctx, ctx);
    atomic_store(&m->ready, ready);
}

uint16_t node_metrics_port(const node_metrics *m)
{
    return m->port;
}

void node_metrics_delete(node_metrics *m)
{
    if (!m)
        return;
    MHD_stop_daemon(m->mhd); /* closes the listening socket it was given */
    free(m);
}
