/*
 * node_seeds: --seeds resolved lazily and retried, and the members remembered across restarts.
 *
 * Why a thread. getaddrinfo blocks, for seconds when a DNS server does not answer; run on the
 * gossip thread it would stall probes and acks until the others suspect this node. So names are
 * resolved here, one at a time, and each result is handed to the caller's callback, which only
 * queues it (node_cluster wakes its gossip thread to join through it). A name that fails is tried
 * again after a backoff that doubles from backoff_min_us to backoff_max_us (the same schedule as a
 * join that gets no answer: a name that does not resolve is one more way for a seed to be absent),
 * and the first failure of each name is logged at warn level, later ones at info, so a long wait
 * costs at most one line per name per backoff_max_us. A name is resolved once: after that, gossip
 * keeps trying its addresses until one answers, and once the node has joined, seeds no longer
 * matter (node_cluster cancels the thread).
 *
 * The members file. One "ID ADDRESS" line per member under a comment header, rewritten whole
 * through a temporary file, fsync and rename, so a crash leaves the old list or the new one, never
 * half of one. Reading is forgiving: a line that does not parse is skipped with a warning, since
 * losing one remembered member must not stop a daemon from starting.
 */
#include "node_seeds.h"

#include "shoal_error.h"
#include "shoal_log.h"
#include "shoal_thread.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- resolution ------------------------------------------------------------------------------ */

/* Appends `a` to out[0..*n) unless it is there already or out is full. */
static void add_unique(shoal_addr *out, size_t max, size_t *n, const shoal_addr *a)
{
    for (size_t i = 0; i < *n; i++)
        if (shoal_addr_eq(&out[i], a))
            return;
    if (*n < max)
        out[(*n)++] = *a;
}

/* A numeric IPv4 or IPv6 text as an address of `family` with `port`; false for anything else. */
static bool numeric(const char *text, uint8_t family, uint16_t port, shoal_addr *out)
{
    memset(out, 0, sizeof *out);
    out->port = port;
    if (family == 4 && inet_pton(AF_INET, text, out->ip) == 1)
        return out->family = 4, true;
    if (family == 6 && inet_pton(AF_INET6, text, out->ip) == 1)
        return out->family = 6, true;
    return false;
}

static int resolve_dns(const char *host, uint16_t port, uint8_t family, shoal_addr *out, size_t max)
{
    struct addrinfo hints = {.ai_family = family == 6 ? AF_INET6 : AF_INET, .ai_socktype = SOCK_DGRAM}, *res = NULL;
    int e = getaddrinfo(host, NULL, &hints, &res);
    if (e != 0)
        return shoal_error_set(SHOAL_ERR_NOT_FOUND, "%s: %s", host, e == EAI_SYSTEM ? strerror(errno) : gai_strerror(e));
    size_t n = 0;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        shoal_addr a = {.family = family, .port = port};
        if (ai->ai_family == AF_INET && family == 4)
            memcpy(a.ip, &((const struct sockaddr_in *)ai->ai_addr)->sin_addr, 4);
        else if (ai->ai_family == AF_INET6 && family == 6)
            memcpy(a.ip, &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, 16);
        else
            continue;
        add_unique(out, max, &n, &a);
    }
    freeaddrinfo(res);
    if (n == 0)
        return shoal_error_set(SHOAL_ERR_NOT_FOUND, "%s: no IPv%u address", host, (unsigned)family);
    return (int)n;
}

int node_seeds_resolve(const char *host, uint16_t port, uint8_t family, shoal_addr *out, size_t max)
{
    if (max == 0)
        return shoal_error_set(SHOAL_ERR_RANGE, "%s: no room for an address", host);
    if (numeric(host, family, port, out))
        return 1;
    shoal_addr other;
    if (numeric(host, family == 4 ? 6 : 4, port, &other))
        return shoal_error_set(SHOAL_ERR_NOT_FOUND, "%s: an IPv%u address, but gossip runs on IPv%u", host,
                               family == 4 ? 6u : 4u, (unsigned)family);
    return resolve_dns(host, port, family, out, max);
}

/* ---- the resolver thread --------------------------------------------------------------------- */

typedef struct seed_name {
    char *host;
    uint16_t port;
    bool done;
    unsigned failures;
    uint64_t next_at, backoff;
} seed_name;

struct node_seeds {
    node_seeds_config cfg;
    seed_name *names;
    size_t n_names;
    pthread_t thread;
    bool thread_running;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled by node_seeds_cancel */
    bool cancelled;    /* under mu */
};

/* The name to try next (the earliest due), or NULL when every name is resolved. */
static seed_name *next_name(node_seeds *s)
{
    seed_name *best = NULL;
    for (size_t i = 0; i < s->n_names; i++)
        if (!s->names[i].done && (!best || s->names[i].next_at < best->next_at))
            best = &s->names[i];
    return best;
}

/* Waits until `at` (monotonic microseconds) or a cancel; true when cancelled. */
static bool wait_until(node_seeds *s, uint64_t at)
{
    pthread_mutex_lock(&s->mu);
    for (uint64_t now; !s->cancelled && (now = shoal_clock_mono_us()) < at;) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (at - now) * 1000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    bool cancelled = s->cancelled;
    pthread_mutex_unlock(&s->mu);
    return cancelled;
}

static void *resolver_main(void *arg)
{
    node_seeds *s = arg;
    seed_name *n;
    while ((n = next_name(s)) != NULL && !wait_until(s, n->next_at)) {
        shoal_addr addrs[NODE_SEEDS_ADDRS_MAX];
        int k = node_seeds_resolve(n->host, n->port, s->cfg.family, addrs, NODE_SEEDS_ADDRS_MAX);
        char q[300];
        if (k > 0) {
            char a[SHOAL_ADDR_STRLEN];
            n->done = true;
            LOG_INFO("cluster", "seed_resolved", "seed=%s addresses=%d first=%s attempts=%u",
                     shoal_log_q(q, sizeof q, n->host), k, shoal_addr_format(&addrs[0], a), n->failures + 1);
            pthread_mutex_lock(&s->mu);
            bool cancelled = s->cancelled;
            pthread_mutex_unlock(&s->mu);
            if (!cancelled)
                s->cfg.found(s->cfg.ud, addrs, (size_t)k);
            continue;
        }
        n->failures++;
        char err[300];
        const char *host = shoal_log_q(q, sizeof q, n->host), *why = shoal_log_q(err, sizeof err, shoal_error_message());
        if (n->failures == 1)
            LOG_WARN("cluster", "seed_unresolved", "seed=%s attempts=1 retry_in_ms=%llu error=%s", host,
                     (unsigned long long)(n->backoff / 1000u), why);
        else
            LOG_INFO("cluster", "seed_unresolved", "seed=%s attempts=%u retry_in_ms=%llu error=%s", host, n->failures,
                     (unsigned long long)(n->backoff / 1000u), why);
        n->next_at = shoal_clock_mono_us() + n->backoff;
        n->backoff = n->backoff * 2 < s->cfg.backoff_max_us ? n->backoff * 2 : s->cfg.backoff_max_us;
    }
    return NULL;
}

node_seeds *node_seeds_new(const node_seeds_config *cfg)
{
    node_seeds *s = calloc(1, sizeof *s);
    if (!s) {
        shoal_error_set(SHOAL_ERR_NOMEM, "seeds");
        return NULL;
    }
    s->cfg = *cfg;
    s->cfg.seeds = NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!(s->names = calloc(cfg->n_seeds ? cfg->n_seeds : 1, sizeof *s->names))) {
        shoal_error_set(SHOAL_ERR_NOMEM, "seeds");
        goto fail;
    }
    uint64_t now = shoal_clock_mono_us(), backoff = cfg->backoff_min_us ? cfg->backoff_min_us : 1000000u;
    if (s->cfg.backoff_max_us < backoff)
        s->cfg.backoff_max_us = backoff;
    for (size_t i = 0; i < cfg->n_seeds; i++) {
        const node_config_seed *c = &cfg->seeds[i];
        shoal_addr a;
        char q[300];
        if (numeric(c->host, cfg->family, c->port, &a)) {
            cfg->found(cfg->ud, &a, 1);
            continue;
        }
        if (numeric(c->host, cfg->family == 4 ? 6 : 4, c->port, &a)) {
            LOG_WARN("cluster", "seed_skipped", "seed=%s reason=\"an IPv%u address, but gossip runs on IPv%u "
                     "(--bind)\"", shoal_log_q(q, sizeof q, c->host), cfg->family == 4 ? 6u : 4u, (unsigned)cfg->family);
            continue;
        }
        seed_name *n = &s->names[s->n_names];
        if (!(n->host = strdup(c->host))) {
            shoal_error_set(SHOAL_ERR_NOMEM, "seeds");
            goto fail;
        }
        n->port = c->port;
        n->next_at = now;
        n->backoff = backoff;
        s->n_names++;
    }
    if (s->n_names) {
        if (shoal_thread_start(&s->thread, "seeds", resolver_main, s) != 0)
            goto fail;
        s->thread_running = true;
    }
    return s;
fail:
    node_seeds_delete(s);
    return NULL;
}

void node_seeds_cancel(node_seeds *s)
{
    pthread_mutex_lock(&s->mu);
    s->cancelled = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void node_seeds_delete(node_seeds *s)
{
    if (!s)
        return;
    if (s->thread_running) {
        node_seeds_cancel(s);
        pthread_join(s->thread, NULL);
    }
    for (size_t i = 0; i < s->n_names; i++)
        free(s->names[i].host);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->names);
    free(s);
}

/* ---- the members file ------------------------------------------------------------------------ */

static void members_path(const char *state_dir, char *out, size_t len, const char *suffix)
{
    snprintf(out, len, "%s/members%s", state_dir, suffix);
}

int node_seeds_load_members(const char *state_dir, node_seeds_member *out, size_t max)
{
    char path[4200];
    members_path(state_dir, path, sizeof path, "");
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        return shoal_error_errno(errno, "cannot read %s", path);
    }
    char line[512], q[300];
    size_t n = 0;
    int lineno = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "#\n")] = '\0';
        char *save = NULL, *id = strtok_r(line, " \t", &save);
        if (!id)
            continue;
        char *addr = strtok_r(NULL, " \t", &save);
        node_seeds_member *m = &out[n];
        if (strlen(id) > GOSSIP_ID_MAX || !addr || strtok_r(NULL, " \t", &save) ||
            shoal_addr_parse(addr, 0, &m->addr) < 0) {
            LOG_WARN("cluster", "members_file_line_skipped", "file=%s line=%d hint=\"expected: NODE-ID ADDRESS:PORT\"",
                     shoal_log_q(q, sizeof q, path), lineno);
            continue;
        }
        snprintf(m->id, sizeof m->id, "%s", id);
        n++;
    }
    fclose(f);
    return (int)n;
}

int node_seeds_save_members(const char *state_dir, const node_seeds_member *members, size_t n)
{
    char path[4200], tmp[4200];
    members_path(state_dir, path, sizeof path, "");
    members_path(state_dir, tmp, sizeof tmp, ".tmp");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return shoal_error_errno(errno, "cannot write %s", tmp);
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return shoal_error_errno(errno, "cannot write %s", tmp);
    }
    fprintf(f, "# shoald: the members this node last saw live; without --seeds it dials them at start\n");
    for (size_t i = 0; i < n; i++) {
        char a[SHOAL_ADDR_STRLEN];
        fprintf(f, "%s %s\n", members[i].id, shoal_addr_format(&members[i].addr, a));
    }
    int rc = 0;
    if (fflush(f) != 0 || fsync(fd) != 0)
        rc = shoal_error_errno(errno, "cannot write %s", tmp);
    if (fclose(f) != 0 && rc == 0)
        rc = shoal_error_errno(errno, "cannot write %s", tmp);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = shoal_error_errno(errno, "cannot rename %s to %s", tmp, path);
    if (rc != 0)
        unlink(tmp);
    return rc;
}
