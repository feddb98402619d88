/*
 * s3_client: the request engine and the single-request operations.
 *
 * One worker thread owns a libcurl multi handle and every easy handle in it; no other thread
 * touches curl. Callers build a request (s3_submit), put it on a mutex-protected inbox and wake
 * the worker with curl_multi_wakeup. The worker loop:
 *   1. takes the inbox into its own FIFO of waiting requests (new ones, and retries whose
 *      backoff has not elapsed yet, each with a due time);
 *   2. starts due requests while fewer than max_in_flight are on the wire: signs them (SigV4,
 *      fresh x-amz-date per attempt) and adds an easy handle to the multi;
 *   3. runs curl's timer when it is due and, for each finished transfer, decides: success, retry
 *      (with capped exponential backoff and full jitter: retry n waits a uniform delay in
 *      [0, min(cap, base * 2^(n-1))]), or failure; then calls the completion callback, on this
 *      thread;
 *   4. sleeps in epoll_wait until a socket is ready, curl's own timer, the next due retry, or a
 *      wakeup (an eventfd in the same epoll set), and hands each ready socket to
 *      curl_multi_socket_action.
 * Why epoll and curl's socket interface rather than curl_multi_perform and curl_multi_poll: those
 * look at every transfer on every turn, and curl checks each one's socket with a poll() of its own
 * before it reads, so with 8 GETs streaming a turn cost about ten poll calls for one or two recv
 * calls (77,000 polls for 13,600 recvs over 1 GiB of 4 MiB GETs, 16 % of the daemon's CPU in a cold
 * read of big files). With the socket interface curl is told which socket is ready and with what,
 * and touches only that transfer.
 * The multi handle keeps a connection cache, so successive requests to one host reuse
 * keep-alive connections; max_in_flight also caps connections per host.
 *
 * Body checks: a GET answer's body must be exactly Content-Length bytes (curl reports a short
 * one as CURLE_PARTIAL_FILE) and a 206 must carry the Content-Range asked for, ending either at
 * the asked end or at the object's last byte; anything else is SHOAL_ERR_S3_TRUNCATED, so a
 * short read is never handed out as data. Error bodies and result documents are collected in a
 * bounded buffer (S3_XML_MAX_DOC) and parsed with s3_xml.
 *
 * A failed attempt that may still have taken effect at the server (it went out, and the answer
 * was lost, late or a 5xx) marks the request maybe_applied; the writes built on top settle such a
 * failure with a HEAD (s3_commit.c) instead of trusting it.
 *
 * Counters are relaxed atomics: they are statistics, read by s3_client_stats_get from any thread.
 */
#include "s3_request.h"

#include "shoal_bytes.h"
#include "shoal_env.h"
#include "shoal_log.h"
#include "shoal_thread.h"

#include <curl/curl.h>
#include <openssl/evp.h>

#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define S3_ERR_BODY_MAX (64u << 10) /* bytes kept of a non-2xx answer's body */
#define S3_GET_RECV_BUF (256u << 10) /* curl's receive buffer for a GET of at least this many bytes */

static const char *const op_names[] = {
    [S3_OP_HEAD] = "HeadObject",
    [S3_OP_GET] = "GetObject",
    [S3_OP_PUT] = "PutObject",
    [S3_OP_DELETE] = "DeleteObject",
    [S3_OP_LIST] = "ListObjectsV2",
    [S3_OP_CREATE_MULTIPART] = "CreateMultipartUpload",
    [S3_OP_UPLOAD_PART] = "UploadPart",
    [S3_OP_UPLOAD_PART_COPY] = "UploadPartCopy",
    [S3_OP_COMPLETE_MULTIPART] = "CompleteMultipartUpload",
    [S3_OP_ABORT_MULTIPART] = "AbortMultipartUpload",
    [S3_OP_COPY] = "CopyObject",
};

static const char *const op_methods[] = {
    [S3_OP_HEAD] = "HEAD",
    [S3_OP_GET] = "GET",
    [S3_OP_PUT] = "PUT",
    [S3_OP_DELETE] = "DELETE",
    [S3_OP_LIST] = "GET",
    [S3_OP_CREATE_MULTIPART] = "POST",
    [S3_OP_UPLOAD_PART] = "PUT",
    [S3_OP_UPLOAD_PART_COPY] = "PUT",
    [S3_OP_COMPLETE_MULTIPART] = "POST",
    [S3_OP_ABORT_MULTIPART] = "DELETE",
    [S3_OP_COPY] = "PUT",
};

typedef struct s3_req s3_req;

/* When failures of one kind may be logged again, and how many were held back meanwhile. */
typedef struct s3_errlog_slot {
    uint64_t next_us;
    unsigned held;
} s3_errlog_slot;

struct s3_client {
    s3_client_config cfg;
    char *endpoint_scheme;   /* "http" or "https" */
    char *endpoint_host;     /* "host[:port]" */
    char *region;
    char *ca_bundle;         /* NULL: system store */
    s3_creds_provider *creds;
    bool owns_creds;

    pthread_t thread;
    CURLM *multi;
    int epfd; /* the sockets curl asked to watch, and wake_fd */
    int wake_fd; /* eventfd: written by s3_submit and s3_client_delete to wake the worker */
    uint64_t curl_due_us; /* when curl's timer fires (UINT64_MAX: not set); worker-thread state */
    pthread_mutex_t mu;      /* guards inbox and closing */
    s3_req *inbox, *inbox_tail;
    bool closing;

    /* Worker-thread state. */
    s3_req *waiting, *waiting_tail;
    s3_req *on_wire;         /* doubly linked through aprev/anext */
    unsigned active;

    _Atomic uint64_t n_get, n_head, n_list, n_put, n_delete, n_copy, bytes_in, bytes_out, retries, stall_retries,
        failures, connections;
    _Atomic uint64_t errors[S3_STATS_OPS][S3_STATS_CODES];
    shoal_hist latency[S3_STATS_OPS];

    /* Failures reported to callers, logged at most once per S3_ERRLOG_US per (operation, error);
     * the ones held back are counted in the next line. Worker-thread state. */
    s3_errlog_slot errlog[S3_OP_COPY + 1][16];
};

#define S3_ERRLOG_US (60ull * 1000000u)

struct s3_req {
    s3_client *c;
    s3_op op;
    char *bucket;
    char *key;
    s3_kv query[S3_REQ_MAX_KV];
    size_t n_query;
    s3_kv headers[S3_REQ_MAX_KV];
    size_t n_headers;

    /* Body. */
    const uint8_t *body;
    uint8_t *owned_body;
    int body_fd;
    uint64_t body_off, body_len, body_pos;
    char payload_sha[65];

    /* GET destination. */
    bool ranged;
    uint64_t range_off, range_len;
    uint8_t *buf;
    size_t buf_len;
    s3_sink_fn sink;
    void *sink_ud;
    const char *if_match;     /* the If-Match header's value (in headers), NULL without one */
    s3_xml_result_kind expect;

    /* Per attempt. */
    CURL *easy;
    struct curl_slist *hdrs;
    char *url;
    long status;
    bool has_length;
    uint64_t content_length;
    bool has_range;
    uint64_t cr_start, cr_end, cr_total;
    s3_object_info info;
    char request_id[128];
    uint64_t got;             /* body bytes of this attempt */
    shoal_buf resp;           /* error body or result document */
    bool overflow;            /* the body did not fit buf, or the document was too large */
    bool sink_failed;
    bool etag_mismatch;       /* the answer carried another ETag than If-Match asked for */
    char curl_err[CURL_ERROR_SIZE];
    uint64_t stall_us;        /* this attempt's stall limit (0: none), see "Stalls" */
    uint64_t progress_us;     /* when this attempt last moved a byte (or started) */
    bool stalled;             /* the worker abandoned it: stall_us passed without a byte */
    int fd; /* this attempt's socket, as curl's socket callback told (-1: none known) */
    int lowat; /* SO_RCVLOWAT this attempt set on fd (0: none), see "Receive size" */

    uint64_t submitted_us;    /* for the latency histogram */
    unsigned attempts;
    bool maybe_applied;       /* a failed attempt may have taken effect at the server */
    uint64_t due_us;
    s3_done_fn done;
    void *ud;
    s3_req *next;             /* inbox or waiting list */
    s3_req *aprev, *anext;    /* on_wire list */
};

/* --------------------------------------------------------------------------------------------
 * Configuration and lifetime
 */

void s3_client_config_defaults(s3_client_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->region = "us-east-1";
    cfg->max_in_flight = 64;
    cfg->connect_timeout_ms = 10000;
    cfg->stall_timeout_ms = 5000;
    cfg->complete_timeout_ms = 600000;
    cfg->max_retries = 5;
    cfg->backoff_base_ms = 100;
    cfg->backoff_cap_ms = 20000;
    cfg->verify_tls = true;
    cfg->multipart_threshold = 16u << 20;
    cfg->part_size = 8u << 20;
    cfg->copy_multipart_threshold = 5ull << 30;
    cfg->copy_part_size = 512u << 20;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* Splits "http[s]://host[:port][/]" into scheme and host[:port]. */
static int parse_endpoint(s3_client *c, const char *ep)
{
    const char *rest;
    if (strncmp(ep, "https://", 8) == 0) {
        c->endpoint_scheme = strdup("https");
        rest = ep + 8;
    } else if (strncmp(ep, "http://", 7) == 0) {
        c->endpoint_scheme = strdup("http");
        rest = ep + 7;
    } else {
        return shoal_error_set(SHOAL_ERR_INVAL, "S3 endpoint '%s': expected http:// or https://", ep);
    }
    size_t hl = strcspn(rest, "/?#");
    if (hl == 0 || (rest[hl] && strcmp(rest + hl, "/") != 0))
        return shoal_error_set(SHOAL_ERR_INVAL, "S3 endpoint '%s': expected scheme://host[:port] without a path", ep);
    c->endpoint_host = strndup(rest, hl);
    if (!c->endpoint_scheme || !c->endpoint_host)
        return shoal_error_set(SHOAL_ERR_NOMEM, "S3 endpoint: out of memory");
    return 0;
}

static void *worker_main(void *arg);

/* Wakes the worker from any thread (one counter write; wakeups that meet a busy worker merge). */
static void wake(s3_client *c)
{
    uint64_t one = 1;
    if (write(c->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        LOG_WARN("s3", "wakeup_failed", "error=\"%s\"", strerror(errno));
}

/* curl's socket callback (worker thread): watch s for what curl waits on, or stop watching it.
 * A socket is added on its first call and modified after; curl removes a socket before it closes
 * it. A failed epoll_ctl leaves the transfer unwatched: the stall watch abandons and retries it. */
static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)socketp;
    s3_client *c = userp;
    s3_req *r = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
    if (what == CURL_POLL_REMOVE) {
        if (r != NULL && r->fd == s)
            r->fd = -1;
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    if (r != NULL)
        r->fd = s; /* the transfer's connection, for its receive size (see "Receive size") */
    struct epoll_event ev = {.events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u),
                             .data.fd = s};
    if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, s, &ev) < 0 &&
        (errno != ENOENT || epoll_ctl(c->epfd, EPOLL_CTL_ADD, s, &ev) < 0))
        LOG_WARN("s3", "epoll_ctl_failed", "fd=%d error=\"%s\"", (int)s, strerror(errno));
    return 0;
}

/* curl's timer callback (worker thread): curl wants CURL_SOCKET_TIMEOUT in ms (-1: no timer). */
static int on_timer(CURLM *m, long ms, void *userp)
{
    (void)m;
    s3_client *c = userp;
    c->curl_due_us = ms < 0 ? UINT64_MAX : shoal_clock_mono_us() + (uint64_t)ms * 1000u;
    return 0;
}

s3_client *s3_client_new(const s3_client_config *cfg)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        shoal_error_set(SHOAL_ERR_S3_TRANSPORT, "curl_global_init: %s", curl_easy_strerror(curl_init_rc));
        return NULL;
    }
    s3_client *c = calloc(1, sizeof *c);
    if (!c) {
        shoal_error_set(SHOAL_ERR_NOMEM, "s3_client_new: out of memory");
        return NULL;
    }
    c->cfg = *cfg;
    c->epfd = c->wake_fd = -1;
    pthread_mutex_init(&c->mu, NULL);
    if (cfg->max_in_flight == 0 || cfg->part_size < (1u << 20) || cfg->copy_part_size < (1u << 20) ||
        cfg->backoff_base_ms == 0 || cfg->backoff_cap_ms < cfg->backoff_base_ms) {
        shoal_error_set(SHOAL_ERR_INVAL, "s3_client_new: max_in_flight, part sizes (>= 1 MiB) and backoff "
                                         "(0 < base <= cap) must be set; start from s3_client_config_defaults");
        goto fail;
    }
    c->region = strdup(cfg->region ? cfg->region : "us-east-1");
    if (!c->region)
        goto fail_nomem;
    if (cfg->endpoint) {
        if (parse_endpoint(c, cfg->endpoint) < 0)
            goto fail;
    } else {
        c->endpoint_scheme = strdup("https");
        if (asprintf(&c->endpoint_host, "s3.%s.amazonaws.com", c->region) < 0)
            c->endpoint_host = NULL;
        if (!c->endpoint_scheme || !c->endpoint_host)
            goto fail_nomem;
    }
    const char *ca = cfg->ca_bundle ? cfg->ca_bundle : getenv("AWS_CA_BUNDLE");
    if (ca && *ca && !(c->ca_bundle = strdup(ca)))
        goto fail_nomem;
    c->cfg.endpoint = NULL;
    c->cfg.region = c->region;
    c->cfg.ca_bundle = c->ca_bundle;
    if (cfg->creds) {
        c->creds = cfg->creds;
    } else {
        s3_creds_options opt = {0};
        if (!(c->creds = s3_creds_provider_new(&opt)))
            goto fail;
        c->owns_creds = true;
    }
    c->cfg.creds = c->creds;
    if (!(c->multi = curl_multi_init())) {
        shoal_error_set(SHOAL_ERR_NOMEM, "curl_multi_init failed");
        goto fail;
    }
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)cfg->max_in_flight);
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)cfg->max_in_flight);
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event wev = {.events = EPOLLIN, .data.fd = c->wake_fd};
    if (c->epfd < 0 || c->wake_fd < 0 || epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->wake_fd, &wev) < 0) {
        shoal_error_errno(errno, "s3_client_new: epoll_create1, eventfd");
        goto fail;
    }
    c->curl_due_us = UINT64_MAX;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    if (shoal_thread_start(&c->thread, "s3-client", worker_main, c) != 0) {
        shoal_error_wrap("s3_client_new");
        goto fail;
    }
    return c;
fail_nomem:
    shoal_error_set(SHOAL_ERR_NOMEM, "s3_client_new: out of memory");
fail:
    if (c->multi)
        curl_multi_cleanup(c->multi);
    if (c->epfd >= 0)
        close(c->epfd);
    if (c->wake_fd >= 0)
        close(c->wake_fd);
    if (c->owns_creds)
        s3_creds_provider_delete(c->creds);
    free(c->ca_bundle);
    free(c->endpoint_scheme);
    free(c->endpoint_host);
    free(c->region);
    pthread_mutex_destroy(&c->mu);
    free(c);
    return NULL;
}

void s3_client_delete(s3_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    pthread_mutex_unlock(&c->mu);
    wake(c);
    pthread_join(c->thread, NULL);
    curl_multi_cleanup(c->multi);
    close(c->epfd);
    close(c->wake_fd);
    if (c->owns_creds)
        s3_creds_provider_delete(c->creds);
    free(c->ca_bundle);
    free(c->endpoint_scheme);
    free(c->endpoint_host);
    free(c->region);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

const s3_client_config *s3_client_config_of(const s3_client *c) { return &c->cfg; }

bool s3_client_on_worker(const s3_client *c) { return pthread_equal(pthread_self(), c->thread); }

void s3_client_stats_get(const s3_client *c, s3_client_stats *out)
{
    s3_client *m = (s3_client *)c;
    out->get_requests = atomic_load_explicit(&m->n_get, memory_order_relaxed);
    out->head_requests = atomic_load_explicit(&m->n_head, memory_order_relaxed);
    out->list_requests = atomic_load_explicit(&m->n_list, memory_order_relaxed);
    out->put_requests = atomic_load_explicit(&m->n_put, memory_order_relaxed);
    out->delete_requests = atomic_load_explicit(&m->n_delete, memory_order_relaxed);
    out->copy_requests = atomic_load_explicit(&m->n_copy, memory_order_relaxed);
    out->bytes_in = atomic_load_explicit(&m->bytes_in, memory_order_relaxed);
    out->bytes_out = atomic_load_explicit(&m->bytes_out, memory_order_relaxed);
    out->retries = atomic_load_explicit(&m->retries, memory_order_relaxed);
    out->stall_retries = atomic_load_explicit(&m->stall_retries, memory_order_relaxed);
    out->failures = atomic_load_explicit(&m->failures, memory_order_relaxed);
    out->connections = atomic_load_explicit(&m->connections, memory_order_relaxed);
    for (unsigned op = 0; op < S3_STATS_OPS; op++) {
        for (unsigned code = 0; code < S3_STATS_CODES; code++)
            out->errors[op][code] = atomic_load_explicit(&m->errors[op][code], memory_order_relaxed);
        shoal_hist_read(&m->latency[op], &out->latency[op]);
    }
}

static unsigned stats_op(s3_op op)
{
    switch (op) {
    case S3_OP_GET: return S3_STATS_GET;
    case S3_OP_HEAD: return S3_STATS_HEAD;
    case S3_OP_LIST: return S3_STATS_LIST;
    case S3_OP_DELETE:
    case S3_OP_ABORT_MULTIPART: return S3_STATS_DELETE;
    case S3_OP_COPY:
    case S3_OP_UPLOAD_PART_COPY: return S3_STATS_COPY;
    default: return S3_STATS_PUT;
    }
}

static unsigned stats_code(shoal_err err)
{
    unsigned slot = (unsigned)(err - SHOAL_ERR_S3);
    return slot < S3_STATS_CODES - 1 ? slot : S3_STATS_CODES - 1;
}

static void count(_Atomic uint64_t *ctr, uint64_t n) { atomic_fetch_add_explicit(ctr, n, memory_order_relaxed); }

/* --------------------------------------------------------------------------------------------
 * Requests: creation and submission
 */

static void req_free(s3_req *r)
{
    if (!r)
        return;
    free(r->bucket);
    free(r->key);
    for (size_t i = 0; i < r->n_query; i++) {
        free((char *)r->query[i].name);
        free((char *)r->query[i].value);
    }
    for (size_t i = 0; i < r->n_headers; i++) {
        free((char *)r->headers[i].name);
        free((char *)r->headers[i].value);
    }
    free(r->owned_body);
    free(r->url);
    if (r->hdrs)
        curl_slist_free_all(r->hdrs);
    if (r->easy)
        curl_easy_cleanup(r->easy);
    shoal_buf_destroy(&r->resp);
    free(r);
}

static int copy_kvs(s3_kv *dst, const s3_kv *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dst[i].name = strdup(src[i].name);
        dst[i].value = strdup(src[i].value ? src[i].value : "");
        if (!dst[i].name || !dst[i].value)
            return -1;
    }
    return 0;
}

/* SHA-256 of the body for x-amz-content-sha256, read through pread for an fd body. */
static int hash_body(s3_req *r)
{
    char what[512], q[300];
    snprintf(what, sizeof what, "%s key=%s", op_names[r->op], shoal_log_q(q, sizeof q, r->key ? r->key : ""));
    uint8_t dg[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    if (s3_body_digest(EVP_sha256(), r->body, r->body ? -1 : r->body_fd, r->body_off, r->body_len, what, dg, &dl) < 0)
        return -1;
    shoal_hex(r->payload_sha, dg, dl);
    return 0;
}

int s3_submit(s3_client *c, const s3_req_spec *spec, s3_done_fn done, void *ud)
{
    if (!spec->bucket || !*spec->bucket || (spec->op != S3_OP_LIST && (!spec->key || !*spec->key)))
        return shoal_error_set(SHOAL_ERR_INVAL, "%s: bucket and key are required", op_names[spec->op]);
    if (spec->n_query > S3_REQ_MAX_KV || spec->n_headers > S3_REQ_MAX_KV)
        return shoal_error_set(SHOAL_ERR_INVAL, "%s: too many query parameters or headers", op_names[spec->op]);
    s3_req *r = calloc(1, sizeof *r);
    if (!r)
        return shoal_error_set(SHOAL_ERR_NOMEM, "%s: out of memory", op_names[spec->op]);
    r->c = c;
    r->op = spec->op;
    r->submitted_us = shoal_clock_mono_us();
    r->done = done;
    r->ud = ud;
    r->expect = spec->expect;
    r->body_fd = -1;
    r->bucket = strdup(spec->bucket);
    r->key = spec->key ? strdup(spec->key) : NULL;
    r->n_query = spec->n_query;
    r->n_headers = spec->n_headers;
    if (!r->bucket || (spec->key && !r->key) || copy_kvs(r->query, spec->query, spec->n_query) < 0 ||
        copy_kvs(r->headers, spec->headers, spec->n_headers) < 0)
        goto fail_nomem;
    if (spec->data) {
        r->body_len = spec->len;
        if (spec->copy_body) {
            if (!(r->owned_body = malloc(spec->len ? spec->len : 1)))
                goto fail_nomem;
            memcpy(r->owned_body, spec->data, spec->len);
            r->body = r->owned_body;
        } else {
            r->body = spec->data;
        }
    } else if (spec->fd >= 0 && (r->op == S3_OP_PUT || r->op == S3_OP_UPLOAD_PART)) {
        r->body_fd = spec->fd;
        r->body_off = spec->offset;
        r->body_len = spec->len;
    } else if (spec->len) {
        shoal_error_set(SHOAL_ERR_INVAL, "%s key=%s: a body of %llu bytes without data or a file descriptor",
                        op_names[r->op], r->key ? r->key : "", (unsigned long long)spec->len);
        goto fail;
    }
    if (hash_body(r) < 0)
        goto fail;
    if (spec->get) {
        const s3_get_args *g = spec->get;
        if (!g->buf && !g->sink) {
            shoal_error_set(SHOAL_ERR_INVAL, "GetObject key=%s: neither a buffer nor a sink", r->key);
            goto fail;
        }
        if (g->ranged && g->length == 0) {
            shoal_error_set(SHOAL_ERR_INVAL, "GetObject key=%s: a range of 0 bytes", r->key);
            goto fail;
        }
        r->ranged = g->ranged;
        r->range_off = g->offset;
        r->range_len = g->length;
        r->buf = g->buf;
        r->buf_len = g->buf_len;
        r->sink = g->buf ? NULL : g->sink;
        r->sink_ud = g->sink_ud;
        for (size_t i = 0; i < r->n_headers; i++)
            if (strcmp(r->headers[i].name, "if-match") == 0)
                r->if_match = r->headers[i].value;
    }
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        shoal_error_set(SHOAL_ERR_CLOSED, "%s key=%s: the S3 client is shutting down", op_names[r->op],
                        r->key ? r->key : "");
        goto fail;
    }
    if (c->inbox_tail)
        c->inbox_tail->next = r;
    else
        c->inbox = r;
    c->inbox_tail = r;
    pthread_mutex_unlock(&c->mu);
    wake(c);
    return 0;
fail_nomem:
    shoal_error_set(SHOAL_ERR_NOMEM, "%s: out of memory", op_names[spec->op]);
fail:
    req_free(r);
    return -1;
}

/* --------------------------------------------------------------------------------------------
 * Worker: one attempt on the wire
 */

/* Copies src into dst, truncated to cap - 1 bytes. */
static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t l = strnlen(src, cap - 1);
    memcpy(dst, src, l);
    dst[l] = '\0';
}

/* Keeps one x-amz-meta-* header of an answer: its name lower-cased, or counts it as dropped. */
static void keep_meta(s3_object_info *info, const char *name, size_t name_len, const char *value, size_t value_len)
{
    s3_meta_kv *m = &info->meta[info->n_meta];
    if (info->n_meta == S3_META_MAX || name_len >= sizeof m->name || value_len >= sizeof m->value) {
        info->meta_dropped++;
        return;
    }
    for (size_t i = 0; i < name_len; i++)
        m->name[i] = (char)tolower((unsigned char)name[i]);
    m->name[name_len] = '\0';
    memcpy(m->value, value, value_len);
    m->value[value_len] = '\0';
    info->n_meta++;
}

static size_t on_header(char *line, size_t size, size_t n, void *ud)
{
    s3_req *r = ud;
    size_t len = size * n;
    r->progress_us = shoal_clock_mono_us();
    shoal_cursor c = shoal_cursor_from_mem(line, len);
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        /* A new response (also after a 100 Continue): forget the previous one's headers. */
        r->has_length = r->has_range = false;
        memset(&r->info, 0, sizeof r->info);
        r->request_id[0] = '\0';
        return len;
    }
    shoal_cursor name = shoal_cursor_trim(shoal_cursor_split(&c, ':'));
    shoal_cursor val = shoal_cursor_trim(c);
    char v[512];
    if (val.len >= sizeof v) {
        if (name.len > 11 && strncasecmp((const char *)name.ptr, "x-amz-meta-", 11) == 0)
            r->info.meta_dropped++;
        return len;
    }
    memcpy(v, val.ptr, val.len);
    v[val.len] = '\0';
    if (shoal_cursor_eq_str_ci(name, "content-length")) {
        char *end;
        r->content_length = strtoull(v, &end, 10);
        r->has_length = *v && !*end;
    } else if (shoal_cursor_eq_str_ci(name, "etag")) {
        copy_str(r->info.etag, sizeof r->info.etag, v);
    } else if (shoal_cursor_eq_str_ci(name, "last-modified")) {
        time_t t = curl_getdate(v, NULL);
        r->info.last_modified = t > 0 ? (int64_t)t : 0;
    } else if (shoal_cursor_eq_str_ci(name, "content-type")) {
        copy_str(r->info.content_type, sizeof r->info.content_type, v);
    } else if (name.len > 11 && strncasecmp((const char *)name.ptr, "x-amz-meta-", 11) == 0) {
        keep_meta(&r->info, (const char *)name.ptr + 11, name.len - 11, v, val.len);
    } else if (shoal_cursor_eq_str_ci(name, "x-amz-request-id")) {
        copy_str(r->request_id, sizeof r->request_id, v);
    } else if (shoal_cursor_eq_str_ci(name, "content-range")) {
        unsigned long long a, b, t;
        if (sscanf(v, "bytes %llu-%llu/%llu", &a, &b, &t) == 3) {
            r->cr_start = a;
            r->cr_end = b;
            r->cr_total = t;
            r->has_range = true;
        }
    }
    return len;
}

static bool is_2xx(long s) { return s >= 200 && s < 300; }

/*
 * Receive size. A big GET's body is received S3_GET_RECV_BUF at a time at most (CURLOPT_BUFFERSIZE),
 * but a socket is ready as soon as any byte is in, so each wakeup of the worker read what the
 * server had sent since the last: about 80 KiB on loopback, 13,600 receives (each a wakeup, a
 * recv, and curl's poll to see whether more is pending) per GiB. While the body of a big GET
 * streams, the worker sets SO_RCVLOWAT on its connection before it waits, so that the socket
 * counts as ready only once S3_GET_RECV_BUF bytes are in, or all that is left of the body (curl
 * hands a receive over 16 KiB at a time, so the mark is set before a wait, not at each piece: one
 * call at the start, one or two near the end). It must never ask for more
 * than will come, or the socket never becomes ready: the body's length is what curl itself reads
 * up to (Content-Length), less what was delivered; over TLS, less another S3_LOWAT_TLS_SLACK,
 * since OpenSSL may hold part of a record it read from the socket but not yet returned. A closed or
 * failed connection is ready whatever the mark. The mark goes back to 1 with the body's last byte,
 * before the connection is reused; an attempt that ends earlier (an error, a sink that refuses,
 * a stall) closes its connection, which takes the mark with it.
 */
#define S3_LOWAT_TLS_SLACK (32u << 10)

static void recv_lowat(s3_req *r)
{
    if (r->op != S3_OP_GET || !is_2xx(r->status) || !r->ranged || r->range_len < S3_GET_RECV_BUF || !r->has_length)
        return;
    uint64_t left = r->content_length > r->got ? r->content_length - r->got : 0;
    uint64_t slack = strcmp(r->c->endpoint_scheme, "https") == 0 ? S3_LOWAT_TLS_SLACK : 0;
    int want = left > slack ? (int)(left - slack < S3_GET_RECV_BUF ? left - slack : S3_GET_RECV_BUF) : 1;
    if (want == r->lowat || (r->lowat == 0 && want == 1))
        return;
    if (r->fd >= 0 && setsockopt(r->fd, SOL_SOCKET, SO_RCVLOWAT, &want, sizeof want) == 0)
        r->lowat = want;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    s3_req *r = ud;
    size_t len = size * n;
    r->progress_us = shoal_clock_mono_us();
    if (r->status == 0)
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    count(&r->c->bytes_in, len);
    if (r->op == S3_OP_GET && is_2xx(r->status)) {
        if (r->buf) {
            if (r->got + len > r->buf_len) {
                r->overflow = true;
                return 0;
            }
            memcpy(r->buf + r->got, data, len);
        } else {
            /* A sink may hand bytes on before the answer is complete, so it never sees a byte of
             * another version: a server that ignores If-Match (some S3-compatible stores do) is
             * caught by the answer's ETag before the first byte is delivered. */
            if (r->got == 0 && r->if_match && r->info.etag[0] && strcmp(r->info.etag, r->if_match) != 0) {
                r->etag_mismatch = true;
                return 0;
            }
            if (r->sink(r->sink_ud, r->got, data, len) < 0) {
                r->sink_failed = true;
                return 0;
            }
        }
    } else {
        size_t cap = is_2xx(r->status) ? S3_XML_MAX_DOC : S3_ERR_BODY_MAX;
        if (r->resp.len + len > cap) {
            if (is_2xx(r->status)) {
                r->overflow = true;
                return 0;
            }
            len = cap - r->resp.len; /* keep the head of an error body: the code comes first */
        }
        if (shoal_buf_append(&r->resp, data, len) < 0)
            return 0;
        len = size * n;
    }
    r->got += len;
    if (r->lowat > 1 && r->got >= r->content_length)
        recv_lowat(r); /* the last byte: the mark goes back to 1 before the connection is reused */
    return len;
}

static size_t on_read(char *dst, size_t size, size_t n, void *ud)
{
    s3_req *r = ud;
    size_t want = size * n;
    uint64_t left = r->body_len - r->body_pos;
    if (want > left)
        want = (size_t)left;
    if (want == 0)
        return 0;
    if (r->body) {
        memcpy(dst, r->body + r->body_pos, want);
    } else {
        ssize_t got = pread(r->body_fd, dst, want, (off_t)(r->body_off + r->body_pos));
        if (got <= 0)
            return CURL_READFUNC_ABORT;
        want = (size_t)got;
    }
    r->body_pos += want;
    r->progress_us = shoal_clock_mono_us();
    count(&r->c->bytes_out, want);
    return want;
}

static int on_seek(void *ud, curl_off_t off, int origin)
{
    s3_req *r = ud;
    if (origin != SEEK_SET || off < 0 || (uint64_t)off > r->body_len)
        return CURL_SEEKFUNC_FAIL;
    r->body_pos = (uint64_t)off;
    return CURL_SEEKFUNC_OK;
}

/* Builds "k=v&k2=v2" with SigV4's encoding, the same bytes the signer canonicalizes. */
static int build_query(shoal_buf *out, const s3_kv *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i && shoal_buf_append_byte(out, '&') < 0)
            return -1;
        if (s3_uri_encode(out, q[i].name, strlen(q[i].name), false) < 0)
            return -1;
        if (*q[i].value && (shoal_buf_append_byte(out, '=') < 0 ||
                            s3_uri_encode(out, q[i].value, strlen(q[i].value), false) < 0))
            return -1;
    }
    return 0;
}

static struct curl_slist *add_header(struct curl_slist *l, bool *ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static struct curl_slist *add_header(struct curl_slist *l, bool *ok, const char *fmt, ...)
{
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) {
        *ok = false;
        return l;
    }
    struct curl_slist *nl = curl_slist_append(l, line);
    if (!nl)
        *ok = false;
    return nl ? nl : l;
}

/* Configures the easy handle for this attempt (r->url and r->hdrs are ready). */
static int easy_setup(s3_req *r)
{
    if (!r->easy && !(r->easy = curl_easy_init()))
        return shoal_error_set(SHOAL_ERR_NOMEM, "curl_easy_init failed");
    s3_client *c = r->c;
    CURL *e = r->easy;
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    /* r->hdrs carries the signed Host header, which replaces the one curl would derive. */
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->curl_err);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    /* A big ranged GET (at least S3_GET_RECV_BUF bytes) is received in reads of up to that many
     * bytes, not curl's default 16 KiB: a 4 MiB block then costs tens of recv calls and write
     * callbacks, not hundreds, and each callback takes the sink's lock. Small GETs and
     * whole-object ones (of unknown size) keep the default, so many at once cost little memory. */
    if (r->op == S3_OP_GET && r->ranged && r->range_len >= S3_GET_RECV_BUF)
        curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)S3_GET_RECV_BUF);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->cfg.connect_timeout_ms);
    /* Requests that answer only when the server has finished assembling or copying an object
     * may stay silent for minutes: one whole-attempt limit of their own, no stall limit. */
    bool server_work = r->op == S3_OP_COMPLETE_MULTIPART || r->op == S3_OP_COPY || r->op == S3_OP_UPLOAD_PART_COPY;
    unsigned request_ms = server_work ? c->cfg.complete_timeout_ms : c->cfg.request_timeout_ms;
    if (request_ms)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)request_ms);
    /* The stall limit is the worker's own watch (see "Stalls" at the worker loop), not curl's
     * LOW_SPEED_TIME, which counts whole seconds over a speed averaged across the last five. */
    r->stall_us = server_work ? 0 : (uint64_t)c->cfg.stall_timeout_ms * 1000u;
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, c->cfg.verify_tls ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, c->cfg.verify_tls ? 2L : 0L);
    if (c->ca_bundle)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_bundle);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    const char *m = op_methods[r->op];
    bool has_body = r->body || r->body_fd >= 0;
    if (strcmp(m, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(m, "PUT") == 0) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)(has_body ? r->body_len : 0));
    } else if (strcmp(m, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(has_body ? r->body_len : 0));
    } else if (strcmp(m, "DELETE") == 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_READDATA, r);
    curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
    curl_easy_setopt(e, CURLOPT_SEEKDATA, r);
    return 0;
}

/* Signs the request for this attempt and prepares its easy handle. */
static int req_prepare(s3_req *r)
{
    s3_client *c = r->c;
    int rc = -1;
    shoal_buf path, query, host;
    shoal_buf_create(&path, 0);
    shoal_buf_create(&query, 0);
    shoal_buf_create(&host, 0);
    s3_sigv4_result sig;
    s3_sigv4_result_create(&sig);
    s3_creds cr;
    memset(&cr, 0, sizeof cr);
    char range[64] = "";

    /* Addressing: path-style puts the bucket in the path, virtual-hosted in the host name. */
    if (c->cfg.path_style) {
        if (shoal_buf_append_str(&host, c->endpoint_host) < 0 ||
            shoal_buf_appendf(&path, "/%s%s%s", r->bucket, r->key ? "/" : "", r->key ? r->key : "") < 0)
            goto done;
    } else {
        if (shoal_buf_appendf(&host, "%s.%s", r->bucket, c->endpoint_host) < 0 ||
            shoal_buf_appendf(&path, "/%s", r->key ? r->key : "") < 0)
            goto done;
    }
    if (build_query(&query, r->query, r->n_query) < 0)
        goto done;

    s3_kv hv[S3_REQ_MAX_KV + 2];
    size_t nh = 0;
    hv[nh++] = (s3_kv){"host", shoal_buf_str(&host)};
    if (r->ranged) {
        snprintf(range, sizeof range, "bytes=%llu-%llu", (unsigned long long)r->range_off,
                 (unsigned long long)(r->range_off + r->range_len - 1));
        hv[nh++] = (s3_kv){"range", range};
    }
    for (size_t i = 0; i < r->n_headers; i++)
        hv[nh++] = r->headers[i];

    if (s3_creds_get(c->creds, &cr) < 0) {
        shoal_error_wrap("%s bucket=%s key=%s", op_names[r->op], r->bucket, r->key ? r->key : "");
        goto done;
    }
    bool ok = true;
    struct curl_slist *hl = NULL;
    const char *wire_path = shoal_buf_str(&path);
    shoal_buf enc_path;
    shoal_buf_create(&enc_path, 0);
    if (cr.anonymous) {
        if (s3_uri_encode(&enc_path, path.data ? (const char *)path.data : "", path.len, true) < 0)
            goto done_enc;
        wire_path = shoal_buf_str(&enc_path);
    } else {
        char amz_date[17];
        s3_amz_date((int64_t)time(NULL), amz_date);
        s3_sigv4_request sreq = {
            .method = op_methods[r->op],
            .path = shoal_buf_str(&path),
            .query = r->query,
            .n_query = r->n_query,
            .headers = hv,
            .n_headers = nh,
            .payload_sha256 = r->payload_sha,
        };
        s3_sigv4_params sp = {
            .access_key = cr.access_key,
            .secret_key = cr.secret_key,
            .session_token = cr.session_token[0] ? cr.session_token : NULL,
            .region = c->region,
            .service = "s3",
            .amz_date = amz_date,
            .s3 = true,
        };
        if (s3_sigv4_sign_header(&sreq, &sp, &sig) < 0) {
            shoal_error_wrap("%s bucket=%s key=%s: signing", op_names[r->op], r->bucket, r->key ? r->key : "");
            goto done_enc;
        }
        wire_path = shoal_buf_str(&sig.wire_path);
        hl = add_header(hl, &ok, "Authorization: %s", shoal_buf_str(&sig.authorization));
        /* added_headers: "name: value" lines the signer signed and we must send. */
        shoal_cursor ah = shoal_cursor_from_buf(&sig.added_headers);
        while (ah.len) {
            shoal_cursor line = shoal_cursor_split(&ah, '\n');
            if (line.len)
                hl = add_header(hl, &ok, "%.*s", (int)line.len, (const char *)line.ptr);
        }
    }
    /* Send exactly the headers that were signed, and keep curl from adding its own. */
    for (size_t i = 0; i < nh; i++)
        hl = add_header(hl, &ok, "%s: %s", hv[i].name, hv[i].value);
    hl = add_header(hl, &ok, "Expect:");
    if (r->op == S3_OP_CREATE_MULTIPART || r->op == S3_OP_COMPLETE_MULTIPART) {
        bool has_ct = false;
        for (size_t i = 0; i < r->n_headers; i++)
            has_ct |= strcasecmp(r->headers[i].name, "content-type") == 0;
        if (!has_ct)
            hl = add_header(hl, &ok, "Content-Type:");
    }
    if (!ok) {
        curl_slist_free_all(hl);
        shoal_error_set(SHOAL_ERR_NOMEM, "%s key=%s: cannot build the request headers", op_names[r->op],
                        r->key ? r->key : "");
        goto done_enc;
    }
    free(r->url);
    if (asprintf(&r->url, "%s://%s%s%s%s", c->endpoint_scheme, shoal_buf_str(&host), wire_path,
                 query.len ? "?" : "", shoal_buf_str(&query)) < 0) {
        r->url = NULL;
        curl_slist_free_all(hl);
        shoal_error_set(SHOAL_ERR_NOMEM, "%s: out of memory", op_names[r->op]);
        goto done_enc;
    }
    if (r->hdrs)
        curl_slist_free_all(r->hdrs);
    r->hdrs = hl;

    if (easy_setup(r) < 0)
        goto done_enc;
    rc = 0;
done_enc:
    shoal_buf_destroy(&enc_path);
done:
    explicit_bzero(&cr, sizeof cr);
    s3_sigv4_result_destroy(&sig);
    shoal_buf_destroy(&path);
    shoal_buf_destroy(&query);
    shoal_buf_destroy(&host);
    return rc;
}

static void req_reset_attempt(s3_req *r)
{
    r->status = 0;
    r->has_length = r->has_range = false;
    r->cr_start = r->cr_end = r->cr_total = 0;
    memset(&r->info, 0, sizeof r->info);
    r->request_id[0] = '\0';
    r->got = 0;
    r->body_pos = 0;
    shoal_buf_reset(&r->resp);
    r->overflow = r->sink_failed = r->etag_mismatch = r->stalled = false;
    r->fd = -1;
    r->lowat = 0;
    r->curl_err[0] = '\0';
}

static void count_request(s3_req *r)
{
    s3_client *c = r->c;
    _Atomic uint64_t *const by_op[S3_STATS_OPS] = {
        [S3_STATS_GET] = &c->n_get, [S3_STATS_HEAD] = &c->n_head,     [S3_STATS_LIST] = &c->n_list,
        [S3_STATS_PUT] = &c->n_put, [S3_STATS_DELETE] = &c->n_delete, [S3_STATS_COPY] = &c->n_copy};
    count(by_op[stats_op(r->op)], 1);
}

/* --------------------------------------------------------------------------------------------
 * Worker: deciding the outcome of an attempt
 */

typedef struct outcome {
    shoal_err err;
    bool retry;
    bool definitive;  /* S3 answered that it did not do the request (a 4xx, or a 200 with such an <Error>) */
    char msg[1024];
    s3_xml_result doc;
    bool has_doc;
    s3_list_page list;
    bool has_list;
} outcome;

static bool curl_retryable(CURLcode e)
{
    switch (e) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
        return true;
    default:
        return false;
    }
}

static bool code_retryable(const char *code)
{
    return strcmp(code, "SlowDown") == 0 || strcmp(code, "InternalError") == 0 ||
           strcmp(code, "ServiceUnavailable") == 0 || strcmp(code, "RequestTimeout") == 0;
}

/* Maps an HTTP status and S3 error code to the project's code. */
static shoal_err s3_err_of(long status, const char *code)
{
    if (strcmp(code, "NoSuchKey") == 0 || (status == 404 && !*code))
        return SHOAL_ERR_S3_NO_SUCH_KEY;
    if (strcmp(code, "NoSuchBucket") == 0)
        return SHOAL_ERR_S3_NO_SUCH_BUCKET;
    if (strcmp(code, "NoSuchUpload") == 0) /* a 404 about the upload, not the key */
        return SHOAL_ERR_S3;
    if (strcmp(code, "SignatureDoesNotMatch") == 0)
        return SHOAL_ERR_S3_SIGNATURE;
    if (strcmp(code, "AccessDenied") == 0 || strcmp(code, "InvalidAccessKeyId") == 0 || status == 403)
        return SHOAL_ERR_S3_ACCESS_DENIED;
    if (status == 412 || strcmp(code, "PreconditionFailed") == 0)
        return SHOAL_ERR_S3_CHANGED;
    if (status == 416 || strcmp(code, "InvalidRange") == 0)
        return SHOAL_ERR_S3_RANGE;
    /* S3 throttles with 503 SlowDown; a HEAD answer has no body to carry the code. */
    if (strcmp(code, "SlowDown") == 0 || status == 503)
        return SHOAL_ERR_S3_THROTTLED;
    if (status == 404)
        return SHOAL_ERR_S3_NO_SUCH_KEY;
    return SHOAL_ERR_S3;
}

/* "GetObject bucket=b key=k" prefix of every message. */
static int msg_head(const s3_req *r, char *out, size_t cap)
{
    char q[300];
    return snprintf(out, cap, "%s bucket=%s key=%s", op_names[r->op], r->bucket,
                    shoal_log_q(q, sizeof q, r->key ? r->key : ""));
}

/* What an error answer without a body (a HEAD's, or a server's that sends none) means. */
static const char *bodyless_meaning(long status)
{
    switch (status) {
    case 403: return "access denied: check the credentials and the bucket policy";
    case 404: return "no such key";
    case 412: return "the object changed (If-Match)";
    case 503: return "slow down: S3 throttled the request";
    default: return "(no message)";
    }
}

static void fail_s3(s3_req *r, outcome *o, const s3_xml_error *xe)
{
    char h[512];
    msg_head(r, h, sizeof h);
    const char *code = xe && xe->code[0] ? xe->code : "";
    o->err = s3_err_of(r->status, code);
    const char *rid = xe && xe->request_id[0] ? xe->request_id : r->request_id;
    const char *text = xe && xe->message[0] ? xe->message : bodyless_meaning(r->status);
    bool denied = o->err == SHOAL_ERR_S3_ACCESS_DENIED || o->err == SHOAL_ERR_S3_SIGNATURE;
    snprintf(o->msg, sizeof o->msg, "%.360s: HTTP %ld %s: %.300s%s (request id %s, %u attempt%s)", h, r->status,
             *code ? code : "(no code)", text,
             denied && xe && xe->message[0] ? "; access denied: check the credentials and the bucket policy" : "",
             *rid ? rid : "-", r->attempts, r->attempts == 1 ? "" : "s");
    o->retry = r->status >= 500 || code_retryable(code);
    /* NoSuchUpload to a completion is never proof that nothing was committed: the upload this
     * client created and did not abort is gone because an earlier try completed it, maybe one
     * curl re-sent by itself on a new connection when a kept-alive one died unanswered. */
    o->definitive = !o->retry && !(r->op == S3_OP_COMPLETE_MULTIPART && strcmp(code, "NoSuchUpload") == 0);
}

static void fail_with(s3_req *r, outcome *o, shoal_err err, bool retry, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void fail_with(s3_req *r, outcome *o, shoal_err err, bool retry, const char *fmt, ...)
{
    char h[512], what[512];
    msg_head(r, h, sizeof h);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    o->err = err;
    o->retry = retry;
    snprintf(o->msg, sizeof o->msg, "%.360s: HTTP %ld: %.400s (request id %s, %u attempt%s)", h, r->status, what,
             r->request_id[0] ? r->request_id : "-", r->attempts, r->attempts == 1 ? "" : "s");
}

/* A 2xx GET: the body must be what was announced and what was asked. */
static void check_get(s3_req *r, outcome *o)
{
    if (r->has_length && r->got != r->content_length) {
        fail_with(r, o, SHOAL_ERR_S3_TRUNCATED, true, "body of %llu bytes, Content-Length %llu",
                  (unsigned long long)r->got, (unsigned long long)r->content_length);
        return;
    }
    if (r->status == 206) {
        uint64_t want_end = r->range_off + r->range_len - 1;
        if (!r->ranged || !r->has_range) {
            fail_with(r, o, SHOAL_ERR_S3, false, "206 answer without a usable Content-Range");
            return;
        }
        if (r->cr_start != r->range_off || r->cr_end < r->cr_start || r->cr_end >= r->cr_total ||
            (r->cr_end != want_end && r->cr_end != r->cr_total - 1) || r->cr_end > want_end) {
            fail_with(r, o, SHOAL_ERR_S3_TRUNCATED, true, "Content-Range bytes %llu-%llu/%llu for a request of %llu-%llu",
                      (unsigned long long)r->cr_start, (unsigned long long)r->cr_end, (unsigned long long)r->cr_total,
                      (unsigned long long)r->range_off, (unsigned long long)want_end);
            return;
        }
        if (r->got != r->cr_end - r->cr_start + 1) {
            fail_with(r, o, SHOAL_ERR_S3_TRUNCATED, true, "body of %llu bytes for Content-Range %llu-%llu",
                      (unsigned long long)r->got, (unsigned long long)r->cr_start, (unsigned long long)r->cr_end);
            return;
        }
        r->info.size = r->cr_total;
    } else {
        /* 200: the whole object. Acceptable for a ranged request only when the range started at 0
         * and covered it (some servers answer 200 then). */
        if (r->ranged && (r->range_off != 0 || r->got > r->range_len)) {
            fail_with(r, o, SHOAL_ERR_S3, false, "the server ignored the Range header (200 for bytes %llu+%llu)",
                      (unsigned long long)r->range_off, (unsigned long long)r->range_len);
            return;
        }
        r->info.size = r->got;
    }
    o->err = SHOAL_OK;
}

static void decide(s3_req *r, CURLcode cc, outcome *o)
{
    memset(o, 0, sizeof *o);
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->overflow) {
        if (r->op == S3_OP_GET)
            fail_with(r, o, SHOAL_ERR_RANGE, false, "body larger than the %zu-byte buffer", r->buf_len);
        else
            fail_with(r, o, SHOAL_ERR_S3_XML, false, "answer document over %u bytes", S3_XML_MAX_DOC);
        return;
    }
    if (r->sink_failed) {
        fail_with(r, o, SHOAL_ERR_S3, false, "the body sink refused the data at offset %llu",
                  (unsigned long long)r->got);
        return;
    }
    if (r->etag_mismatch) {
        fail_with(r, o, SHOAL_ERR_S3_CHANGED, false, "If-Match %s, the answer has ETag %s", r->if_match,
                  r->info.etag);
        return;
    }
    if (r->stalled) {
        fail_with(r, o, SHOAL_ERR_S3_TRANSPORT, true, "stalled: no byte moved for %llu ms (the stall limit)",
                  (unsigned long long)(r->stall_us / 1000));
        return;
    }
    if (cc != CURLE_OK) {
        shoal_err e = cc == CURLE_PARTIAL_FILE ? SHOAL_ERR_S3_TRUNCATED : SHOAL_ERR_S3_TRANSPORT;
        fail_with(r, o, e, curl_retryable(cc), "%s%s%s", curl_easy_strerror(cc), r->curl_err[0] ? ": " : "",
                  r->curl_err);
        return;
    }
    if (!is_2xx(r->status)) {
        s3_xml_error xe;
        bool parsed = r->resp.len && s3_xml_parse_error(r->resp.data, r->resp.len, &xe) == 0;
        fail_s3(r, o, parsed ? &xe : NULL);
        return;
    }
    if (r->op == S3_OP_GET) {
        check_get(r, o);
        return;
    }
    if (r->op == S3_OP_HEAD) {
        r->info.size = r->has_length ? r->content_length : 0;
        if (!r->has_length)
            fail_with(r, o, SHOAL_ERR_S3, false, "HEAD answer without Content-Length");
        return;
    }
    if (r->op == S3_OP_LIST) {
        s3_list_page_create(&o->list);
        if (s3_xml_parse_list(r->resp.data, r->resp.len, &o->list) < 0) {
            fail_with(r, o, SHOAL_ERR_S3_XML, false, "%s", shoal_error_message());
            return;
        }
        o->has_list = true;
        return;
    }
    if (r->expect) {
        if (s3_xml_parse_result(r->resp.data, r->resp.len, r->expect, &o->doc) < 0) {
            fail_with(r, o, SHOAL_ERR_S3_XML, false, "%s", shoal_error_message());
            return;
        }
        if (o->doc.kind == S3_XML_ERROR) {
            /* A 200 carrying <Error>: S3 does this for Complete and copies that fail late. */
            fail_s3(r, o, &o->doc.error);
            return;
        }
        o->has_doc = true;
        if (o->doc.etag[0])
            snprintf(r->info.etag, sizeof r->info.etag, "%s", o->doc.etag);
    }
}

/* Whether a failed attempt may still have taken effect at the server. Not when the request never
 * went out (curl reports no pre-transfer time when resolving, connecting or the TLS handshake
 * failed) nor when S3 said it refused it; otherwise the request may have arrived whole and only
 * the answer is missing, late, or a 5xx from a server that failed after acting. */
static bool attempt_maybe_applied(s3_req *r, CURLcode cc, const outcome *o)
{
    if (cc != CURLE_OK) {
        curl_off_t pre = 0;
        curl_easy_getinfo(r->easy, CURLINFO_PRETRANSFER_TIME_T, &pre);
        return pre > 0;
    }
    return !o->definitive;
}

/* Full jitter: uniform in [0, min(cap, base * 2^(retry-1))] milliseconds, in microseconds. Spreads
 * clients throttled together instead of retrying in step. */
static uint64_t backoff_us(const s3_client *c, unsigned retry)
{
    uint64_t cap = c->cfg.backoff_base_ms;
    for (unsigned i = 1; i < retry && cap < c->cfg.backoff_cap_ms; i++)
        cap *= 2;
    if (cap > c->cfg.backoff_cap_ms)
        cap = c->cfg.backoff_cap_ms;
    return (shoal_random_u64() % (cap * 1000 + 1));
}

static void waiting_push(s3_client *c, s3_req *r)
{
    r->next = NULL;
    if (c->waiting_tail)
        c->waiting_tail->next = r;
    else
        c->waiting = r;
    c->waiting_tail = r;
}

/* Calls the callback with the final outcome and frees the request. */
/* Logs a failure handed to a caller, once per operation and error per minute (the rest are
 * counted and reported with the next line). A missing key or a changed object is a normal answer
 * of the read path (lookups, If-Match), logged at debug only. Worker thread. */
static void log_failure(s3_req *r, const outcome *o)
{
    if (o->err == SHOAL_ERR_S3_NO_SUCH_KEY || o->err == SHOAL_ERR_S3_CHANGED || o->err == SHOAL_ERR_CLOSED) {
        LOG_DEBUG("s3", "request_failed", "code=%s error=\"%.300s\"", shoal_error_name(o->err), o->msg);
        return;
    }
    unsigned slot = (unsigned)(o->err - SHOAL_ERR_S3) < 16 ? (unsigned)(o->err - SHOAL_ERR_S3) : 15;
    s3_errlog_slot *e = &r->c->errlog[r->op][slot];
    uint64_t now = shoal_clock_mono_us();
    if (now < e->next_us) {
        e->held++;
        return;
    }
    char q[1200];
    LOG_WARN("s3", "request_failed", "code=%s error=%s held_back=%u", shoal_error_name(o->err),
             shoal_log_q(q, sizeof q, o->msg), e->held);
    e->held = 0;
    e->next_us = now + S3_ERRLOG_US;
}

static void complete(s3_req *r, outcome *o)
{
    s3_result res = {
        .err = o->err,
        .message = o->err ? o->msg : "",
        .status = (int)r->status,
        .attempts = r->attempts,
        .maybe_applied = o->err && r->maybe_applied,
        .info = r->info,
        .bytes = r->op == S3_OP_GET ? r->got : 0,
        .list = o->has_list ? &o->list : NULL,
        .doc = o->has_doc ? &o->doc : NULL,
    };
    shoal_hist_observe(&r->c->latency[stats_op(r->op)], shoal_clock_mono_us() - r->submitted_us);
    if (o->err) {
        count(&r->c->failures, 1);
        count(&r->c->errors[stats_op(r->op)][stats_code(o->err)], 1);
        res.bytes = 0;
        log_failure(r, o);
    }
    r->done(r->ud, &res);
    if (o->has_list)
        s3_list_page_destroy(&o->list);
    req_free(r);
}

static void finish_attempt(s3_client *c, s3_req *r, CURLcode cc)
{
    long conns = 0;
    if (curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &conns) == CURLE_OK && conns > 0)
        count(&c->connections, (uint64_t)conns);
    outcome *o = malloc(sizeof *o);
    if (!o) {
        outcome small = {.err = SHOAL_ERR_NOMEM};
        snprintf(small.msg, sizeof small.msg, "%s: out of memory", op_names[r->op]);
        complete(r, &small);
        return;
    }
    decide(r, cc, o);
    if (o->err && attempt_maybe_applied(r, cc, o))
        r->maybe_applied = true;
    if (o->err && o->retry && r->attempts <= c->cfg.max_retries) {
        /* A stalled attempt is sent again at once: nothing says the server is overloaded (that
         * would be an answer: 503 SlowDown), only that one connection went silent. */
        uint64_t wait = r->stalled ? 0 : backoff_us(c, r->attempts);
        char q[256];
        LOG_WARN("s3", r->stalled ? "stall_retry" : "retry", "op=%s bucket=%s key=%s attempt=%u wait_ms=%llu error=%s",
                 op_names[r->op], r->bucket, shoal_log_q(q, sizeof q, r->key ? r->key : ""), r->attempts,
                 (unsigned long long)(wait / 1000), shoal_error_name(o->err));
        count(&c->retries, 1);
        if (r->stalled)
            count(&c->stall_retries, 1);
        if (o->has_list)
            s3_list_page_destroy(&o->list);
        r->due_us = shoal_clock_mono_us() + wait;
        waiting_push(c, r);
    } else {
        complete(r, o);
    }
    free(o);
}

static void start(s3_client *c, s3_req *r)
{
    r->attempts++;
    req_reset_attempt(r);
    if (req_prepare(r) < 0) {
        outcome o = {.err = shoal_error_code()};
        snprintf(o.msg, sizeof o.msg, "%s", shoal_error_message());
        complete(r, &o);
        return;
    }
    count_request(r);
    r->progress_us = shoal_clock_mono_us();
    CURLMcode mc = curl_multi_add_handle(c->multi, r->easy);
    if (mc != CURLM_OK) {
        outcome o = {.err = SHOAL_ERR_S3_TRANSPORT};
        snprintf(o.msg, sizeof o.msg, "%s: curl_multi_add_handle: %s", op_names[r->op], curl_multi_strerror(mc));
        complete(r, &o);
        return;
    }
    c->active++;
    r->aprev = NULL;
    r->anext = c->on_wire;
    if (c->on_wire)
        c->on_wire->aprev = r;
    c->on_wire = r;
}

static void off_wire(s3_client *c, s3_req *r)
{
    curl_multi_remove_handle(c->multi, r->easy);
    if (r->aprev)
        r->aprev->anext = r->anext;
    else
        c->on_wire = r->anext;
    if (r->anext)
        r->anext->aprev = r->aprev;
    r->aprev = r->anext = NULL;
    c->active--;
}

/* Fails every request still queued or in flight with SHOAL_ERR_CLOSED. */
static void drain(s3_client *c)
{
    outcome o = {.err = SHOAL_ERR_CLOSED};
    while (c->on_wire) {
        s3_req *r = c->on_wire;
        off_wire(c, r);
        snprintf(o.msg, sizeof o.msg, "%s key=%s: the S3 client shut down", op_names[r->op], r->key ? r->key : "");
        complete(r, &o);
    }
    pthread_mutex_lock(&c->mu);
    s3_req *in = c->inbox;
    c->inbox = c->inbox_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    for (int pass = 0; pass < 2; pass++) {
        s3_req *r = pass ? in : c->waiting;
        while (r) {
            s3_req *next = r->next;
            snprintf(o.msg, sizeof o.msg, "%s key=%s: the S3 client shut down", op_names[r->op], r->key ? r->key : "");
            complete(r, &o);
            r = next;
        }
    }
    c->waiting = c->waiting_tail = NULL;
}

/*
 * Stalls. An attempt that moves no byte (no header or body byte received, no body byte taken for
 * sending, nor a connection made) for stall_timeout_ms is abandoned: its transfer is removed from
 * the multi handle, which closes its connection, and the request is sent again at once, without
 * the backoff of other retries, on another connection. This is a degenerate hedge: the second
 * attempt starts when the first is given up, so only one attempt of a request is ever on the wire
 * and a sink never sees bytes of two attempts interleaved (the new attempt delivers from offset 0,
 * as every retry does). The watch is the worker's own rather than curl's LOW_SPEED_TIME, which
 * counts whole seconds against a speed averaged over the last five, so a connection that went
 * silent after sending bytes would be noticed only seconds late. Returns when the next stall
 * limit falls (UINT64_MAX: none), or 0 when an attempt was abandoned now.
 */
static uint64_t abandon_stalled(s3_client *c, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    s3_req *after;
    for (s3_req *r = c->on_wire; r; r = after) {
        after = r->anext; /* finish_attempt moves r off this list or frees it */
        if (r->stall_us == 0)
            continue;
        uint64_t due = r->progress_us + r->stall_us;
        if (due > now) {
            next = due < next ? due : next;
            continue;
        }
        off_wire(c, r);
        r->stalled = true;
        finish_attempt(c, r, CURLE_OPERATION_TIMEDOUT);
        next = 0;
    }
    return next;
}

static void *worker_main(void *arg)
{
    s3_client *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        bool closing = c->closing;
        s3_req *in = c->inbox;
        c->inbox = c->inbox_tail = NULL;
        pthread_mutex_unlock(&c->mu);
        while (in) {
            s3_req *next = in->next;
            in->due_us = 0;
            waiting_push(c, in);
            in = next;
        }
        if (closing)
            break;

        /* Start what is due, in FIFO order, while there is room on the wire. */
        uint64_t now = shoal_clock_mono_us();
        uint64_t next_due = UINT64_MAX;
        s3_req **pp = &c->waiting, *prev = NULL;
        while (*pp) {
            s3_req *r = *pp;
            if (c->active < c->cfg.max_in_flight && r->due_us <= now) {
                *pp = r->next;
                if (c->waiting_tail == r)
                    c->waiting_tail = prev;
                r->next = NULL;
                start(c, r);
                continue;
            }
            if (r->due_us > now && r->due_us < next_due)
                next_due = r->due_us;
            prev = r;
            pp = &r->next;
        }

        int running = 0;
        if (c->curl_due_us <= shoal_clock_mono_us()) {
            c->curl_due_us = UINT64_MAX; /* curl sets it again if it wants another turn */
            curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(c->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            CURL *e = msg->easy_handle;
            CURLcode cc = msg->data.result;
            s3_req *r = NULL;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
            off_wire(c, r);
            finish_attempt(c, r, cc);
            next_due = 0; /* a slot freed or a retry was queued: look again at once */
        }
        uint64_t stall_due = abandon_stalled(c, shoal_clock_mono_us());
        if (next_due == 0 || stall_due == 0)
            continue;

        long tmo = 1000;
        if (c->curl_due_us != UINT64_MAX) {
            uint64_t at = shoal_clock_mono_us();
            uint64_t ms = c->curl_due_us > at ? (c->curl_due_us - at + 999) / 1000 : 0;
            if ((long)ms < tmo)
                tmo = (long)ms;
        }
        if (next_due != UINT64_MAX && c->active < c->cfg.max_in_flight) {
            uint64_t ms = next_due > now ? (next_due - now + 999) / 1000 : 0;
            if ((long)ms < tmo)
                tmo = (long)ms;
        }
        if (stall_due != UINT64_MAX) {
            uint64_t at = shoal_clock_mono_us();
            uint64_t ms = stall_due > at ? (stall_due - at + 999) / 1000 : 0;
            if ((long)ms < tmo)
                tmo = (long)ms;
        }
        for (s3_req *r = c->on_wire; r; r = r->anext)
            recv_lowat(r);
        struct epoll_event evs[32];
        int n = epoll_wait(c->epfd, evs, 32, (int)tmo);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == c->wake_fd) {
                uint64_t v;
                if (read(c->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN)
                    LOG_WARN("s3", "wakeup_failed", "error=\"%s\"", strerror(errno));
                continue;
            }
            uint32_t ev = evs[i].events;
            int bits = (ev & EPOLLIN ? CURL_CSELECT_IN : 0) | (ev & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                       (ev & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
            curl_multi_socket_action(c->multi, evs[i].data.fd, bits, &running);
        }
    }
    drain(c);
    return NULL;
}

/* --------------------------------------------------------------------------------------------
 * Waiting for outcomes (blocking calls)
 */

void s3_wait_create(s3_wait *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

void s3_wait_destroy(s3_wait *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

void s3_wait_note(s3_wait *w, const s3_result *r)
{
    if (r->err == SHOAL_OK)
        return;
    pthread_mutex_lock(&w->mu);
    if (w->err == SHOAL_OK) {
        w->err = r->err;
        snprintf(w->msg, sizeof w->msg, "%s", r->message);
    }
    pthread_mutex_unlock(&w->mu);
}

void s3_wait_add(s3_wait *w, unsigned n)
{
    pthread_mutex_lock(&w->mu);
    w->pending += n;
    pthread_mutex_unlock(&w->mu);
}

void s3_wait_done(s3_wait *w)
{
    pthread_mutex_lock(&w->mu);
    if (--w->pending == 0)
        pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int s3_wait_finish(s3_wait *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->pending)
        pthread_cond_wait(&w->cv, &w->mu);
    shoal_err err = w->err;
    pthread_mutex_unlock(&w->mu);
    if (err)
        return shoal_error_set(err, "%s", w->msg);
    return 0;
}

static void call_done(void *ud, s3_result *r)
{
    s3_call *k = ud;
    s3_wait_note(&k->w, r);
    k->maybe_applied = r->maybe_applied;
    if (r->err == SHOAL_OK) {
        k->info = r->info;
        k->bytes = r->bytes;
        if (r->doc)
            k->doc = *r->doc;
        if (k->list && r->list) {
            *k->list = *r->list;
            memset(r->list, 0, sizeof *r->list);
        }
    }
    s3_wait_done(&k->w);
}

int s3_call_run(s3_client *c, const s3_req_spec *spec, s3_call *k)
{
    if (s3_client_on_worker(c))
        return shoal_error_set(SHOAL_ERR_INVAL, "%s: blocking S3 call from a completion callback", op_names[spec->op]);
    s3_wait_create(&k->w);
    s3_wait_add(&k->w, 1);
    int rc = s3_submit(c, spec, call_done, k);
    if (rc == 0)
        rc = s3_wait_finish(&k->w);
    s3_wait_destroy(&k->w);
    return rc;
}

/* --------------------------------------------------------------------------------------------
 * Operations
 */

void s3_req_spec_init(s3_req_spec *s, s3_op op, const char *bucket, const char *key)
{
    memset(s, 0, sizeof *s);
    s->op = op;
    s->bucket = bucket;
    s->key = key;
    s->fd = -1;
}

static void spec_get(s3_req_spec *s, const s3_get_args *a)
{
    s3_req_spec_init(s, S3_OP_GET, a->bucket, a->key);
    s->get = a;
    if (a->if_match)
        s->headers[s->n_headers++] = (s3_kv){"if-match", a->if_match};
}

/* Whether a metadata name or value breaks the rules of s3_meta_kv; the reason, or NULL. */
static const char *meta_kv_invalid(const s3_meta_kv *m)
{
    size_t nl = strnlen(m->name, sizeof m->name), vl = strnlen(m->value, sizeof m->value);
    if (nl == 0 || nl == sizeof m->name)
        return "the name must be 1 to 39 bytes";
    for (size_t i = 0; i < nl; i++)
        if (!(islower((unsigned char)m->name[i]) || isdigit((unsigned char)m->name[i]) || strchr("-_.", m->name[i])))
            return "the name may hold only a-z 0-9 '-' '_' '.' (S3 stores names lower-cased)";
    if (vl == sizeof m->value)
        return "the value must be at most 87 bytes";
    for (size_t i = 0; i < vl; i++)
        if (m->value[i] < 0x20 || m->value[i] > 0x7e)
            return "the value may hold only printable ASCII (S3 header values are ASCII)";
    if (vl && (m->value[0] == ' ' || m->value[vl - 1] == ' '))
        return "the value must not start or end with a space (HTTP strips it)";
    return NULL;
}

int s3_spec_add_meta(s3_req_spec *s, s3_meta_header names[S3_META_MAX], const s3_meta_kv *meta, unsigned n)
{
    char q[300];
    const char *key = shoal_log_q(q, sizeof q, s->key ? s->key : "");
    if (n > S3_META_MAX || s->n_headers + n > S3_REQ_MAX_KV)
        return shoal_error_set(SHOAL_ERR_INVAL, "%s key=%s: %u metadata entries, at most %d", op_names[s->op], key,
                               n, S3_META_MAX);
    for (unsigned i = 0; i < n; i++) {
        const char *why = meta_kv_invalid(&meta[i]);
        for (unsigned j = 0; !why && j < i; j++)
            if (strcmp(meta[i].name, meta[j].name) == 0)
                why = "the name repeats";
        if (why) {
            char qn[128], qv[256];
            return shoal_error_set(SHOAL_ERR_INVAL, "%s key=%s: metadata entry %u (name=%s value=%s): %s",
                                   op_names[s->op], key, i, shoal_log_q(qn, sizeof qn, meta[i].name),
                                   shoal_log_q(qv, sizeof qv, meta[i].value), why);
        }
    }
    for (unsigned i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "x-amz-meta-%s", meta[i].name);
        s->headers[s->n_headers++] = (s3_kv){names[i], meta[i].value};
    }
    return 0;
}

static int spec_put(s3_req_spec *s, const s3_put_args *a, s3_meta_header names[S3_META_MAX])
{
    s3_req_spec_init(s, S3_OP_PUT, a->bucket, a->key);
    s->data = a->data;
    s->fd = a->data ? -1 : a->fd;
    s->offset = a->offset;
    s->len = a->len;
    if (a->content_type)
        s->headers[s->n_headers++] = (s3_kv){"content-type", a->content_type};
    return s3_spec_add_meta(s, names, a->meta, a->n_meta);
}

static void spec_list(s3_req_spec *s, const s3_list_args *a, char *max_keys, size_t max_keys_len)
{
    s3_req_spec_init(s, S3_OP_LIST, a->bucket, NULL);
    s->query[s->n_query++] = (s3_kv){"list-type", "2"};
    s->query[s->n_query++] = (s3_kv){"encoding-type", "url"};
    if (a->prefix)
        s->query[s->n_query++] = (s3_kv){"prefix", a->prefix};
    if (a->delimiter)
        s->query[s->n_query++] = (s3_kv){"delimiter", a->delimiter};
    if (a->continuation_token)
        s->query[s->n_query++] = (s3_kv){"continuation-token", a->continuation_token};
    if (a->start_after)
        s->query[s->n_query++] = (s3_kv){"start-after", a->start_after};
    if (a->max_keys) {
        snprintf(max_keys, max_keys_len, "%u", a->max_keys);
        s->query[s->n_query++] = (s3_kv){"max-keys", max_keys};
    }
}

int s3_head_async(s3_client *c, const char *bucket, const char *key, s3_done_fn done, void *ud)
{
    s3_req_spec s;
    s3_req_spec_init(&s, S3_OP_HEAD, bucket, key);
    return s3_submit(c, &s, done, ud);
}

int s3_get_async(s3_client *c, const s3_get_args *a, s3_done_fn done, void *ud)
{
    s3_req_spec s;
    spec_get(&s, a);
    return s3_submit(c, &s, done, ud);
}

int s3_put_async(s3_client *c, const s3_put_args *a, s3_done_fn done, void *ud)
{
    s3_req_spec s;
    s3_meta_header names[S3_META_MAX];
    if (spec_put(&s, a, names) < 0)
        return -1;
    return s3_submit(c, &s, done, ud);
}

int s3_delete_async(s3_client *c, const char *bucket, const char *key, s3_done_fn done, void *ud)
{
    s3_req_spec s;
    s3_req_spec_init(&s, S3_OP_DELETE, bucket, key);
    return s3_submit(c, &s, done, ud);
}

int s3_list_async(s3_client *c, const s3_list_args *a, s3_done_fn done, void *ud)
{
    s3_req_spec s;
    char mk[16];
    spec_list(&s, a, mk, sizeof mk);
    return s3_submit(c, &s, done, ud);
}

int s3_head(s3_client *c, const char *bucket, const char *key, s3_object_info *out)
{
    s3_req_spec s;
    s3_req_spec_init(&s, S3_OP_HEAD, bucket, key);
    s3_call k = {0};
    if (s3_call_run(c, &s, &k) < 0)
        return -1;
    *out = k.info;
    return 0;
}

int s3_get(s3_client *c, const s3_get_args *a, uint64_t *got, s3_object_info *info)
{
    s3_req_spec s;
    spec_get(&s, a);
    s3_call k = {0};
    if (s3_call_run(c, &s, &k) < 0)
        return -1;
    if (got)
        *got = k.bytes;
    if (info)
        *info = k.info;
    return 0;
}

int s3_put(s3_client *c, const s3_put_args *a, char etag[S3_ETAG_MAX])
{
    s3_req_spec s;
    s3_meta_header names[S3_META_MAX];
    if (spec_put(&s, a, names) < 0)
        return -1;
    s3_call k = {0};
    if (s3_call_run(c, &s, &k) < 0) {
        if (!k.maybe_applied)
            return -1;
        s3_expect e = {.op = "PutObject", .body = a, .meta = a->meta, .n_meta = a->n_meta};
        return s3_commit_check(c, a->bucket, a->key, &e, etag);
    }
    if (etag)
        memcpy(etag, k.info.etag, S3_ETAG_MAX);
    return 0;
}

int s3_delete(s3_client *c, const char *bucket, const char *key)
{
    s3_req_spec s;
    s3_req_spec_init(&s, S3_OP_DELETE, bucket, key);
    s3_call k = {0};
    return s3_call_run(c, &s, &k);
}

int s3_list(s3_client *c, const s3_list_args *a, s3_list_page *out)
{
    s3_req_spec s;
    char mk[16];
    spec_list(&s, a, mk, sizeof mk);
    s3_call k = {.list = out};
    return s3_call_run(c, &s, &k);
}

int s3_copy_source(shoal_buf *out, const char *bucket, const char *key)
{
    if (shoal_buf_appendf(out, "/%s/", bucket) < 0)
        return -1;
    return s3_uri_encode(out, key, strlen(key), true);
}
