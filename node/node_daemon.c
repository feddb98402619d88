/*
 * node_daemon: the wiring of shoald.
 *
 * Start order follows the dependencies: the block store and the S3 client first (they need
 * nothing), then the peer transport (its ZAP handler admits nobody until membership fills the
 * allow-list), the read path (which the transport's GET handler calls), membership (which opens
 * links to members and admits their keys), and last what users talk to: the metrics endpoint and
 * the control socket. Stop order is the reverse, with a graceful leave first so the others stop
 * routing to this node before it goes: leave, control socket, metrics, the read path's workers
 * (they finish what they hold; peer requests arriving meanwhile are answered BUSY), membership,
 * transport, the read path itself, S3 client, store.
 *
 * Signals: node_daemon_new blocks SIGTERM, SIGINT and SIGHUP before any thread starts, so every
 * thread inherits the mask and node_daemon_run receives them with sigtimedwait; no handler runs
 * in an arbitrary thread; SIGHUP re-reads the config file (daemon_reload). The same loop notices
 * `shoal leave` and the end of `shoal drain` (a flag), a mount taken away from outside (`umount DIR`: the daemon leaves and exits 0, as FUSE file
 * systems do) and a refusal by the cluster (a duplicate id or another block size), which ends the
 * daemon with exit status 1.
 *
 * Drain: SIGTERM (or SIGINT) first hands the node's owned blocks to their next owners for at most
 * --drain-timeout seconds (node_cache_drain; a second signal cuts it short), then leaves; `shoal
 * drain` does the same from a control connection, reporting progress, with no time limit. One
 * drain runs at a time: a signal during `shoal drain` only gives it --drain-timeout more seconds.
 * The node serves peers and readers all along; a departure after a drain costs no S3 GET.
 *
 * The control commands run on the control server's connection threads, which may block: `get`
 * has a few threads read (and so verify) the next blocks while the connection thread sends them in
 * order, a block held here as its file (node_control_reply_sendfile passes it to the client); `preload` lists the
 * prefix, then a few threads warm every block at its owner (node_cache_warm: this node fetches
 * what it owns, the owners fetch theirs when asked with OWNER_FETCH) while the connection thread
 * reports progress.
 */
#include "node_daemon.h"

#include "node_cache.h"
#include "node_cluster.h"
#include "node_control.h"
#include "node_metrics.h"
#include "node_mountfs.h"
#include "node_peer.h"
#include "node_stats.h"
#include "node_store.h"
#include "s3_client.h"
#include "s3_endpoint.h"
#include "shoal_array.h"
#include "shoal_error.h"
#include "shoal_log.h"
#include "shoal_thread.h"

#include <systemd/sd-daemon.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DAEMON_LEAVE_LINGER_MS 1000
#define DAEMON_GET_WINDOW 4        /* blocks read ahead of a `shoal get` */
#define DAEMON_GET_READERS 3       /* threads reading (and verifying) the blocks of one `get` */
#define DAEMON_PRELOAD_THREADS 8   /* blocks warmed at once by a preload */
#define DAEMON_PROGRESS_MS 250
#define DAEMON_STORE_MAINTAIN_US 1000000u /* node_store_maintain: about once a second */
#define DAEMON_S3_RETRY_MIN_MS 1000   /* first retry of a failed S3 check */
#define DAEMON_S3_RETRY_MAX_MS 30000
#define DAEMON_S3_RECHECK_MS 300000   /* a passed S3 check is made again this often */

/* Readiness: joined, S3 checked, mount up (see "readiness" below). */
typedef struct readiness {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    bool s3_ok;
    char s3_why[400];  /* why S3 is not usable, while !s3_ok */
    bool announced;    /* READY=1 sent to systemd */
    pthread_t thread;
    bool running;
} readiness;

struct node_daemon {
    const node_config *cfg; /* as started; a reload changes only the four values below */
    /* What SIGHUP applies live: the log level and the read path's timeouts, as now in force. */
    shoal_log_level log_level;
    uint32_t metadata_ttl, negative_ttl, peer_timeout_ms;
    node_stats stats;
    node_store *store;
    s3_creds_provider *creds;
    char *env_endpoint; /* the endpoint from AWS_ENDPOINT_URL(_S3) when --endpoint is not given */
    s3_client *s3;
    node_peer *peer;
    node_cache *_Atomic cache;
    node_cluster *cluster;
    node_metrics *metrics;
    node_control_server *control;
    node_mountfs *mount;
    uint64_t started_us;
    atomic_bool leave_requested;
    readiness ready;
    atomic_bool draining;               /* a drain runs (one at a time) */
    _Atomic uint64_t drain_deadline_us; /* 0: none; else the running drain stops then */
    char address[SHOAL_ADDR_STRLEN];
    char bucket_url[1400];
};

/* ---- counters ----------------------------------------------------------------------------------- */

_Static_assert(NODE_STATS_S3_OPS == S3_STATS_OPS && NODE_STATS_S3_CODES == S3_STATS_CODES,
               "node_stats names every kind of S3 operation and error s3_client counts");

/* Copies the parts' own counters into the SPEC counters (node_stats). The read path adds its
 * reads.* and peer failure counts directly; membership sets the members.* gauges. */
static void daemon_sample(node_daemon *d)
{
    node_stats *st = &d->stats;
    s3_client_stats s3;
    s3_client_stats_get(d->s3, &s3);
    node_stats_set(&st->s3_get_requests, s3.get_requests);
    node_stats_set(&st->s3_head_requests, s3.head_requests);
    node_stats_set(&st->s3_list_requests, s3.list_requests);
    node_stats_set(&st->s3_put_requests, s3.put_requests);
    node_stats_set(&st->s3_delete_requests, s3.delete_requests);
    node_stats_set(&st->s3_copy_requests, s3.copy_requests);
    node_stats_set(&st->s3_errors, s3.failures);
    node_stats_set(&st->s3_retries, s3.retries);
    node_stats_set(&st->s3_stall_retries, s3.stall_retries);
    node_stats_set(&st->s3_bytes_in, s3.bytes_in);
    node_stats_set(&st->s3_bytes_out, s3.bytes_out);
    for (int op = 0; op < S3_STATS_OPS; op++) {
        for (int code = 0; code < S3_STATS_CODES; code++)
            node_stats_set(&st->s3_failures[op][code], s3.errors[op][code]);
        shoal_hist_store(&st->s3_latency[op], &s3.latency[op]);
    }

    node_peer_stats p;
    node_peer_stats_get(d->peer, &p);
    node_stats_set(&st->peer_requests_in, p.requests_in);
    node_stats_set(&st->peer_requests_out, p.requests_out);
    node_stats_set(&st->peer_bytes_in, p.bytes_in);
    node_stats_set(&st->peer_bytes_out, p.bytes_out);
    node_stats_set(&st->peer_bad_frames, p.malformed);
    node_stats_set(&st->peer_handshakes_refused, p.zap_denied);

    node_store_stats ss;
    node_store_get_stats(d->store, &ss);
    node_stats_set(&st->cache_bytes, ss.bytes_used);
    node_stats_set(&st->cache_capacity, ss.capacity);
    node_stats_set(&st->cache_blocks, ss.blocks);
    node_stats_set(&st->cache_evictions, ss.evictions);
    node_stats_set(&st->cache_corrupt_blocks, ss.corrupt_drops);
    node_stats_set(&st->cache_free_space_evictions, ss.space_evictions);
    node_stats_set(&st->cache_lost_blocks, ss.lost_drops);

    if (d->mount)
        node_mountfs_sample(d->mount, st);
}

static void metrics_refresh(void *ctx, node_stats *stats) { daemon_sample(ctx); }

/* The store's use, published on gossip (node_cluster_config.cache_used). */
static uint64_t cache_used(void *ctx)
{
    node_daemon *d = ctx;
    node_store_stats ss;
    node_store_get_stats(d->store, &ss);
    return ss.bytes_used;
}

/* ---- readiness -------------------------------------------------------------------------------------
 *
 * The daemon is ready when it has joined (a node without seeds at once; a node with seeds once it
 * sees another live member), S3 answered a check (one ListObjectsV2 with max-keys 1 on the bucket
 * and prefix) and the mount is up (with --mount: node_mountfs_new mounted it). /readyz answers
 * 200 then and 503 with the first missing condition otherwise; systemd gets READY=1 the first
 * time (Type=notify) and STOPPING=1 when a signal starts its drain or the daemon leaves. A failing
 * S3 check logs one line per new reason (wrong credentials, a missing bucket, no endpoint) and is
 * made again with backoff, so a rotated credential or a bucket created later makes the node ready
 * without a restart; a passed check is made again every five minutes, so credentials that stop
 * working make it not ready. */

/* One line a person can act on for an S3 failure of the check. */
static void s3_check_reason(char *out, size_t cap)
{
    const char *what;
    switch (shoal_error_code()) {
    case SHOAL_ERR_S3_ACCESS_DENIED:
    case SHOAL_ERR_S3_SIGNATURE: what = "access denied: check the credentials and the bucket policy"; break;
    case SHOAL_ERR_S3_NO_SUCH_BUCKET: what = "the bucket does not exist"; break;
    case SHOAL_ERR_S3_TRANSPORT: what = "no answer from the S3 endpoint (address, port, TLS or DNS)"; break;
    case SHOAL_ERR_S3_CREDENTIALS: what = "no usable credentials"; break;
    default: what = "S3 refused the check"; break;
    }
    snprintf(out, cap, "%s (%s)", what, shoal_error_message());
}

static void *s3_check_main(void *arg)
{
    node_daemon *d = arg;
    readiness *r = &d->ready;
    uint64_t backoff_ms = DAEMON_S3_RETRY_MIN_MS;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        pthread_mutex_unlock(&r->mu);
        s3_list_page pg;
        s3_list_page_create(&pg);
        s3_list_args a = {.bucket = d->cfg->bucket, .prefix = d->cfg->prefix[0] ? d->cfg->prefix : NULL, .max_keys = 1};
        bool ok = s3_list(d->s3, &a, &pg) == 0;
        char why[sizeof r->s3_why] = "";
        if (!ok)
            s3_check_reason(why, sizeof why);
        s3_list_page_destroy(&pg);
        pthread_mutex_lock(&r->mu);
        char q[500];
        if (ok && !r->s3_ok)
            LOG_INFO("daemon", "s3_checked", "bucket=%s", d->bucket_url);
        else if (!ok && (r->s3_ok || strcmp(why, r->s3_why) != 0))
            LOG_ERROR("daemon", "s3_check_failed", "bucket=%s reason=%s retry=backoff", d->bucket_url,
                      shoal_log_q(q, sizeof q, why));
        r->s3_ok = ok;
        snprintf(r->s3_why, sizeof r->s3_why, "%s", why);
        uint64_t wait_ms = ok ? DAEMON_S3_RECHECK_MS : backoff_ms;
        backoff_ms = ok ? DAEMON_S3_RETRY_MIN_MS
                        : (backoff_ms * 2 > DAEMON_S3_RETRY_MAX_MS ? DAEMON_S3_RETRY_MAX_MS : backoff_ms * 2);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)(wait_ms / 1000);
        until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* Whether this node sees a live member other than itself. */
static bool sees_others(node_daemon *d)
{
    node_cluster_view *v = node_cluster_view_get(d->cluster);
    bool seen = false;
    for (size_t i = 0; i < node_cluster_view_count(v) && !seen; i++) {
        const node_cluster_member *m = node_cluster_view_member(v, i);
        seen = !m->is_self && m->state == GOSSIP_ALIVE;
    }
    node_cluster_view_put(v);
    return seen;
}

/* Fills the readiness fields of *s (each condition, and waiting_for = why, the first one missing,
 * or NULL) and returns s->ready. Any thread. */
static bool daemon_readiness(node_daemon *d, node_status *s, char *why, size_t cap)
{
    s->joined = d->cfg->n_seeds == 0 || sees_others(d);
    pthread_mutex_lock(&d->ready.mu);
    s->s3_checked = d->ready.s3_ok;
    char s3_why[sizeof d->ready.s3_why];
    snprintf(s3_why, sizeof s3_why, "%s", d->ready.s3_why[0] ? d->ready.s3_why : "the first check is under way");
    pthread_mutex_unlock(&d->ready.mu);
    s->has_mount = d->cfg->mount != NULL;
    s->mounted = s->has_mount && d->mount != NULL && !node_mountfs_unmounted(d->mount);
    if (!s->joined)
        snprintf(why, cap, "joining: no other member of the cluster answered yet (--seeds)");
    else if (!s->s3_checked)
        snprintf(why, cap, "S3: %s", s3_why);
    else if (s->has_mount && !s->mounted)
        snprintf(why, cap, "the mount at %s is not up", d->cfg->mount);
    s->ready = s->joined && s->s3_checked && (!s->has_mount || s->mounted);
    s->waiting_for = s->ready ? NULL : why;
    return s->ready;
}

/* Ready, or false with the first missing condition in why (/readyz). Any thread. */
static bool daemon_ready(void *ctx, char *why, size_t cap)
{
    node_status s;
    return daemon_readiness(ctx, &s, why, cap);
}

/* Tells systemd (Type=notify) the first time the daemon is ready. */
static void announce_ready(node_daemon *d)
{
    char why[400];
    if (d->ready.announced || !daemon_ready(d, why, sizeof why))
        return;
    d->ready.announced = true;
    sd_notify(0, "READY=1\nSTATUS=ready");
    LOG_INFO("daemon", "ready", "node=%s", d->cfg->node_id);
}

/* ---- control commands ----------------------------------------------------------------------------- */

static int check_bucket(node_daemon *d, const char *bucket)
{
    if (bucket == NULL || strcmp(bucket, d->cfg->bucket) != 0)
        return shoal_error_set(SHOAL_ERR_INVAL, "this cluster caches s3://%s, not s3://%s", d->cfg->bucket,
                               bucket ? bucket : "");
    return 0;
}

static int ctl_status(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    node_daemon *d = ctx;
    node_cluster_view *v = node_cluster_view_get(d->cluster);
    size_t n = node_cluster_view_count(v);
    node_status_member *members = calloc(n ? n : 1, sizeof *members);
    char (*addrs)[SHOAL_ADDR_STRLEN] = calloc(n ? n : 1, sizeof *addrs);
    shoal_buf out = {0};
    int rc = -1;
    if (members == NULL || addrs == NULL) {
        shoal_error_set(SHOAL_ERR_NOMEM, "status");
        goto done;
    }
    node_store_stats ss;
    node_store_get_stats(d->store, &ss);
    for (size_t i = 0; i < n; i++) {
        const node_cluster_member *m = node_cluster_view_member(v, i);
        members[i] = (node_status_member){
            .id = m->meta.id,
            .address = shoal_addr_format(&m->meta.addr, addrs[i]),
            .zone = m->meta.zone[0] ? m->meta.zone : NULL,
            .state = gossip_state_name(m->state),
            .incarnation = m->incarnation,
            .cache_bytes = m->is_self ? ss.bytes_used : 0,
            .cache_known = m->is_self,
            .cache_capacity = m->meta.capacity,
            .serves = m->meta.serving,
        };
        if (!m->is_self)
            members[i].cache_known = node_cluster_cache_used(d->cluster, m->meta.id, &members[i].cache_bytes);
    }
    node_status s = {
        .node_id = d->cfg->node_id,
        .address = d->address,
        .zone = d->cfg->zone,
        .bucket = d->bucket_url,
        .ring_version = node_cluster_view_version(v),
        .block_size = d->cfg->block_size,
        .uptime_seconds = (shoal_clock_mono_us() - d->started_us) / 1000000u,
        .members = members,
        .n_members = n,
    };
    char why[400];
    daemon_readiness(d, &s, why, sizeof why);
    if (node_status_render_json(&s, &out) != 0) {
        shoal_error_set(SHOAL_ERR_NOMEM, "status");
        goto done;
    }
    rc = node_control_reply_json(reply, shoal_buf_str(&out));
done:
    shoal_buf_destroy(&out);
    free(members);
    free(addrs);
    node_cluster_view_put(v);
    return rc;
}

static int ctl_stats(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    node_daemon *d = ctx;
    daemon_sample(d);
    shoal_buf out = {0};
    int rc = node_stats_render_json(&d->stats, &out) == 0 ? node_control_reply_json(reply, shoal_buf_str(&out))
                                                           : shoal_error_set(SHOAL_ERR_NOMEM, "stats");
    shoal_buf_destroy(&out);
    return rc;
}

/* Sends a block to a `get` client. A block just verified in the store goes from its file with
 * sendfile(2): for a Unix socket the kernel then passes page-cache pages instead of copying them
 * through this process, which is what lets a local read approach a plain `cat`. */
static int send_block(node_daemon *d, node_control_reply *reply, const node_cache_block *b, size_t lo, size_t len)
{
    if (b->source == NODE_CACHE_LOCAL) {
        char rel[NODE_STORE_RELPATH_LEN], path[4200];
        snprintf(path, sizeof path, "%s/blocks/%s", d->cfg->cache_dir, node_store_relpath(b->id, rel));
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_size == node_store_file_size(b->len)) {
            int rc = node_control_reply_sendfile(reply, fd, NODE_STORE_HEADER_LEN + lo, len);
            close(fd);
            return rc;
        }
        if (fd >= 0)
            close(fd);
    }
    return node_control_reply_write(reply, b->data + lo, len);
}

/* The blocks of one `get`, read (and so verified, for blocks on this node's disk) by a few
 * threads ahead of the connection thread, which sends them in order. Checking a block's checksum
 * (and mapping the block to do so) is most of the cost of sending a block held here, so a few
 * readers on the machine's cores keep the client busy; at most DAEMON_GET_WINDOW blocks are held
 * at once. */
typedef struct get_slot {
    node_cache_block b;
    bool ready;
    bool again; /* b is empty: read the block when it is sent next (see get_reader_main) */
    int rc;
    shoal_err err;
    char msg[512];
} get_slot;

typedef struct get_pipe {
    node_cache *cache;
    node_cache_object obj;
    uint64_t n;    /* one past the last block of the range */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t next; /* next block a reader takes */
    uint64_t sent; /* blocks the connection thread is done with */
    bool stop;
    get_slot slots[DAEMON_GET_WINDOW];
} get_pipe;

/* Whether block i is not the one the connection thread sends next. */
static bool get_later(get_pipe *g, uint64_t i)
{
    pthread_mutex_lock(&g->mu);
    bool later = i != g->sent;
    pthread_mutex_unlock(&g->mu);
    return later;
}

static void *get_reader_main(void *arg)
{
    get_pipe *g = arg;
    pthread_mutex_lock(&g->mu);
    for (;;) {
        while (!g->stop && g->next < g->n && g->next >= g->sent + DAEMON_GET_WINDOW)
            pthread_cond_wait(&g->cv, &g->mu);
        if (g->stop || g->next >= g->n)
            break;
        uint64_t i = g->next++;
        pthread_mutex_unlock(&g->mu);
        node_cache_block b;
        int rc = node_cache_read(g->cache, &g->obj, i, &b);
        /* A block that came in a block buffer is kept so only when it is sent next: a later one
         * would hold a buffer of the read path's budget while this get waits for its earlier
         * blocks, whose fetches may wait for buffers that such blocks of a few gets hold (three
         * gets of cold files could hold all 8 and wait on each other for ever). The fetch stored
         * the block: it is read again, from the store, which takes no buffer; should the store
         * not have kept it, the connection thread reads it when it is sent next. */
        bool again = false;
        if (rc == 0 && node_cache_block_in_buffer(&b) && get_later(g, i)) {
            node_cache_block_release(&b);
            rc = node_cache_read(g->cache, &g->obj, i, &b);
            if (rc == 0 && node_cache_block_in_buffer(&b) && get_later(g, i)) {
                node_cache_block_release(&b);
                again = true;
            }
        }
        pthread_mutex_lock(&g->mu);
        get_slot *s = &g->slots[i % DAEMON_GET_WINDOW];
        *s = (get_slot){.b = b, .ready = true, .again = again, .rc = rc, .err = rc ? shoal_error_code() : SHOAL_OK};
        if (rc != 0)
            snprintf(s->msg, sizeof s->msg, "%s", shoal_error_message());
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

/* `get`: the bytes [offset, offset + length) of the object, clamped to its end, block by block:
 * only the blocks the range touches are read (and read ahead), and each is sent from the first to
 * the last byte of it that the range holds. */
static int ctl_get(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    node_daemon *d = ctx;
    node_cache *cache = atomic_load(&d->cache);
    if (check_bucket(d, req->bucket) != 0)
        return -1;
    s3_object_info info;
    if (node_cache_head(cache, req->bucket, req->key, &info) != 0)
        return shoal_error_wrap("get s3://%s/%s", req->bucket, req->key);
    if (req->etag && strcmp(req->etag, info.etag) != 0)
        return shoal_error_set(SHOAL_ERR_S3_CHANGED, "get s3://%s/%s: the object changed (ETag %s, the reader has %s)",
                               req->bucket, req->key, info.etag, req->etag);
    uint64_t off = req->offset < info.size ? req->offset : info.size;
    uint64_t len = req->length < info.size - off ? req->length : info.size - off;
    if (node_control_reply_object_begin(reply, len, info.size, info.etag) != 0)
        return -1;
    if (len == 0)
        return 0;
    uint64_t bs = d->cfg->block_size, first = off / bs;
    get_pipe g = {.cache = cache, .obj = {req->bucket, req->key, info.etag, info.size}};
    g.n = (off + len - 1) / bs + 1;
    g.next = g.sent = first;
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    node_cache_prefetch(cache, &g.obj, first + 1, g.n - first - 1 < DAEMON_GET_WINDOW ? g.n - first - 1 : DAEMON_GET_WINDOW);
    pthread_t readers[DAEMON_GET_READERS];
    unsigned started = 0;
    while (started < DAEMON_GET_READERS && started < g.n - first &&
           shoal_thread_start(&readers[started], "get-reader", get_reader_main, &g) == 0)
        started++;
    int rc = 0;
    if (started == 0)
        rc = shoal_error_wrap("get");
    for (uint64_t i = first; i < g.n && rc == 0; i++) {
        get_slot *s = &g.slots[i % DAEMON_GET_WINDOW];
        pthread_mutex_lock(&g.mu);
        while (!s->ready)
            pthread_cond_wait(&g.cv, &g.mu);
        pthread_mutex_unlock(&g.mu);
        if (s->again && (s->rc = node_cache_read(cache, &g.obj, i, &s->b)) != 0) {
            s->err = shoal_error_code();
            snprintf(s->msg, sizeof s->msg, "%s", shoal_error_message());
        }
        if (s->rc != 0) {
            char tmp[160];
            shoal_error_set(s->err, "%s", s->msg);
            LOG_WARN("daemon", "get_failed", "key=%s block=%llu error=\"%s\"", shoal_log_q(tmp, sizeof tmp, req->key),
                     (unsigned long long)i, s->msg);
            if (s->err == SHOAL_ERR_S3_CHANGED)
                node_cache_forget(cache, req->bucket, req->key);
            rc = -1;
        } else {
            uint64_t lo = i == first ? off - i * bs : 0, hi = i == g.n - 1 ? off + len - i * bs : s->b.len;
            rc = send_block(d, reply, &s->b, (size_t)lo, (size_t)(hi - lo));
        }
        pthread_mutex_lock(&g.mu);
        node_cache_block_release(&s->b);
        s->ready = false;
        g.sent++;
        pthread_cond_broadcast(&g.cv);
        pthread_mutex_unlock(&g.mu);
    }
    pthread_mutex_lock(&g.mu);
    g.stop = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    for (unsigned k = 0; k < started; k++)
        pthread_join(readers[k], NULL);
    for (unsigned k = 0; k < DAEMON_GET_WINDOW; k++)
        if (g.slots[k].ready)
            node_cache_block_release(&g.slots[k].b);
    pthread_mutex_destroy(&g.mu);
    pthread_cond_destroy(&g.cv);
    return rc;
}

/* ---- preload ------------------------------------------------------------------------------------ */

typedef struct preload_object {
    char *key;
    char etag[S3_ETAG_MAX];
    uint64_t size;
    atomic_uint_fast64_t blocks_left;
} preload_object;

typedef struct preload_block {
    size_t object;
    uint64_t index;
} preload_block;

typedef struct preload {
    node_daemon *d;
    const char *bucket;
    preload_object *objects;
    size_t n_objects, cap_objects;
    preload_block *blocks;
    size_t n_blocks;
    atomic_size_t next;
    atomic_uint_fast64_t bytes_done, objects_done, failures;
    atomic_uint_fast64_t blocks_done, cached, fetched; /* where the owners found the blocks */
    atomic_uint running;
    pthread_mutex_t err_mu;
    char first_error[512];
} preload;

static int preload_list(preload *pl, const char *prefix)
{
    node_daemon *d = pl->d;
    char *token = NULL;
    int rc = -1;
    for (;;) {
        s3_list_page page;
        s3_list_page_create(&page);
        s3_list_args a = {.bucket = pl->bucket, .prefix = prefix, .continuation_token = token};
        if (s3_list(d->s3, &a, &page) != 0) {
            s3_list_page_destroy(&page);
            shoal_error_wrap("preload: list s3://%s/%s", pl->bucket, prefix);
            goto done;
        }
        for (size_t i = 0; i < page.n_objects; i++) {
            const s3_list_object *o = &page.objects[i];
            if (strlen(o->key) != o->key_len || o->size == 0)
                continue;
            if (SHOAL_ARRAY_GROW(pl->objects, pl->n_objects, pl->cap_objects) != 0) {
                s3_list_page_destroy(&page);
                shoal_error_wrap("preload listing");
                goto done;
            }
            preload_object *po = &pl->objects[pl->n_objects];
            memset(po, 0, sizeof *po);
            po->key = strdup(o->key);
            if (po->key == NULL) {
                s3_list_page_destroy(&page);
                shoal_error_set(SHOAL_ERR_NOMEM, "preload listing");
                goto done;
            }
            snprintf(po->etag, sizeof po->etag, "%s", o->etag);
            po->size = o->size;
            pl->n_objects++;
        }
        free(token);
        token = page.truncated && page.next_token ? strdup(page.next_token) : NULL;
        bool more = page.truncated && page.next_token;
        s3_list_page_destroy(&page);
        if (!more)
            break;
        if (token == NULL) {
            shoal_error_set(SHOAL_ERR_NOMEM, "preload listing");
            goto done;
        }
    }
    rc = 0;
done:
    free(token);
    return rc;
}

static void *preload_main(void *arg)
{
    preload *pl = arg;
    node_cache *cache = atomic_load(&pl->d->cache);
    for (;;) {
        size_t i = atomic_fetch_add(&pl->next, 1);
        if (i >= pl->n_blocks)
            break;
        preload_block *b = &pl->blocks[i];
        preload_object *o = &pl->objects[b->object];
        node_cache_object obj = {pl->bucket, o->key, o->etag, o->size, false};
        node_cache_source src = NODE_CACHE_LOCAL;
        if (node_cache_warm(cache, &obj, b->index, &src) == 0) {
            atomic_fetch_add(src == NODE_CACHE_S3 ? &pl->fetched : &pl->cached, 1);
        } else {
            atomic_fetch_add(&pl->failures, 1);
            pthread_mutex_lock(&pl->err_mu);
            if (pl->first_error[0] == '\0')
                snprintf(pl->first_error, sizeof pl->first_error, "%s", shoal_error_message());
            pthread_mutex_unlock(&pl->err_mu);
        }
        uint64_t off = b->index * pl->d->cfg->block_size;
        uint64_t len = o->size - off < pl->d->cfg->block_size ? o->size - off : pl->d->cfg->block_size;
        atomic_fetch_add(&pl->bytes_done, len);
        if (atomic_fetch_sub(&o->blocks_left, 1) == 1)
            atomic_fetch_add(&pl->objects_done, 1);
        atomic_fetch_add(&pl->blocks_done, 1);
    }
    atomic_fetch_sub(&pl->running, 1);
    return NULL;
}

static void preload_progress(preload *pl, node_control_progress *p, uint64_t bytes_total)
{
    *p = (node_control_progress){
        .objects_done = atomic_load(&pl->objects_done),
        .objects_total = pl->n_objects,
        .bytes_done = atomic_load(&pl->bytes_done),
        .bytes_total = bytes_total,
        .listed = true,
        .blocks_done = atomic_load(&pl->blocks_done),
        .blocks_total = pl->n_blocks,
        .cached = atomic_load(&pl->cached),
        .fetched = atomic_load(&pl->fetched),
        .failed = atomic_load(&pl->failures),
    };
}

static int ctl_preload(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    node_daemon *d = ctx;
    node_cache *cache = atomic_load(&d->cache);
    if (check_bucket(d, req->bucket) != 0)
        return -1;
    preload pl = {.d = d, .bucket = req->bucket};
    pthread_mutex_init(&pl.err_mu, NULL);
    pthread_t threads[DAEMON_PRELOAD_THREADS];
    unsigned started = 0;
    int rc = -1;
    node_control_progress p = {0};
    if (node_control_reply_progress(reply, &p) != 0 || preload_list(&pl, req->prefix ? req->prefix : "") != 0)
        goto done;
    if (pl.n_objects == 0) {
        shoal_error_set(SHOAL_ERR_NOT_FOUND, "nothing to preload: no object under s3://%s/%s", req->bucket,
                        req->prefix ? req->prefix : "");
        goto done;
    }

    uint64_t bytes_total = 0;
    for (size_t i = 0; i < pl.n_objects; i++) {
        pl.n_blocks += node_cache_block_count(cache, pl.objects[i].size);
        bytes_total += pl.objects[i].size;
    }
    pl.blocks = calloc(pl.n_blocks ? pl.n_blocks : 1, sizeof *pl.blocks);
    if (pl.blocks == NULL) {
        shoal_error_set(SHOAL_ERR_NOMEM, "preload of %zu blocks", pl.n_blocks);
        goto done;
    }
    size_t k = 0;
    for (size_t i = 0; i < pl.n_objects; i++) {
        uint64_t nb = node_cache_block_count(cache, pl.objects[i].size);
        atomic_init(&pl.objects[i].blocks_left, nb);
        for (uint64_t j = 0; j < nb; j++)
            pl.blocks[k++] = (preload_block){i, j};
    }
    LOG_INFO("daemon", "preload_started", "objects=%zu blocks=%zu bytes=%llu", pl.n_objects, pl.n_blocks,
             (unsigned long long)bytes_total);
    preload_progress(&pl, &p, bytes_total);
    if (node_control_reply_progress(reply, &p) != 0)
        goto done;
    for (; started < DAEMON_PRELOAD_THREADS; started++) {
        atomic_fetch_add(&pl.running, 1);
        if (shoal_thread_start(&threads[started], "preload", preload_main, &pl) != 0) {
            atomic_fetch_sub(&pl.running, 1);
            break;
        }
    }
    if (started == 0) {
        shoal_error_wrap("preload");
        goto done;
    }
    bool client_gone = false;
    while (atomic_load(&pl.running) > 0) {
        struct timespec ts = {0, DAEMON_PROGRESS_MS * 1000000L};
        nanosleep(&ts, NULL);
        preload_progress(&pl, &p, bytes_total);
        if (!client_gone && node_control_reply_progress(reply, &p) != 0) {
            /* Nobody to report to: stop handing out blocks; the workers finish the ones they hold. */
            client_gone = true;
            atomic_store(&pl.next, pl.n_blocks);
        }
    }
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    started = 0;
    if (client_gone)
        goto done;
    preload_progress(&pl, &p, bytes_total);
    uint64_t failures = atomic_load(&pl.failures);
    LOG_INFO("daemon", "preload_done", "objects=%zu blocks=%zu cached=%llu fetched=%llu failures=%llu", pl.n_objects,
             pl.n_blocks, (unsigned long long)p.cached, (unsigned long long)p.fetched, (unsigned long long)failures);
    if (failures > 0) {
        node_control_reply_progress(reply, &p); /* the figures, before the error line */
        shoal_error_set(SHOAL_ERR_NODE, "preload: %llu of %zu blocks could not be warmed (first: %s)",
                        (unsigned long long)failures, pl.n_blocks, pl.first_error);
        goto done;
    }
    rc = node_control_reply_progress_done(reply, &p);
done:
    atomic_store(&pl.next, pl.n_blocks);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    for (size_t i = 0; i < pl.n_objects; i++)
        free(pl.objects[i].key);
    free(pl.objects);
    free(pl.blocks);
    pthread_mutex_destroy(&pl.err_mu);
    return rc;
}

/* ---- drain ------------------------------------------------------------------------------------- */

/* Who runs a drain and whom it reports to. */
typedef struct daemon_drain {
    node_daemon *d;
    node_control_reply *reply; /* `shoal drain`'s connection, or NULL (a signal) */
    bool client_gone;
    bool watch_signals;        /* the main thread: a second SIGTERM/SIGINT stops the drain */
} daemon_drain;

static void drain_progress(const node_cache_drain_progress *in, node_control_progress *out)
{
    *out = (node_control_progress){
        .bytes_done = in->bytes_done,
        .bytes_total = in->bytes_total,
        .listed = true,
        .blocks_done = in->blocks_done,
        .blocks_total = in->blocks_total,
        .sent = in->blocks_sent,
        .bytes_sent = in->bytes_sent,
        .failed = in->blocks_failed,
    };
}

static void stop_signals(sigset_t *set);

/* node_cache_drain's progress function: reports to the client, and says stop when the client went
 * away (the drain is called off: the node stays), a second signal came or the deadline passed. */
static bool drain_continue(void *ud, const node_cache_drain_progress *p)
{
    daemon_drain *dd = ud;
    node_daemon *d = dd->d;
    if (dd->reply && !dd->client_gone) {
        node_control_progress cp;
        drain_progress(p, &cp);
        if (node_control_reply_progress(dd->reply, &cp) != 0) {
            LOG_INFO("daemon", "drain_cancelled", "reason=client_gone");
            dd->client_gone = true;
            return false;
        }
    }
    if (dd->watch_signals) {
        sigset_t set;
        stop_signals(&set);
        struct timespec now = {0, 0};
        int sig = sigtimedwait(&set, NULL, &now);
        if (sig == SIGTERM || sig == SIGINT) {
            LOG_INFO("daemon", "drain_cut_short", "reason=second_signal");
            atomic_store(&d->drain_deadline_us, 1);
        }
    }
    uint64_t deadline = atomic_load(&d->drain_deadline_us);
    return deadline == 0 || shoal_clock_mono_us() < deadline;
}

/* Runs one drain (false at once when another one runs). *rc and the shoal_error: the drain's. */
static bool daemon_drain_run(daemon_drain *dd, node_cache_drain_progress *out, int *rc)
{
    node_daemon *d = dd->d;
    if (atomic_exchange(&d->draining, true))
        return false;
    LOG_INFO("daemon", "drain_started", "source=%s", dd->reply ? "control" : "signal");
    sd_notify(0, "STATUS=draining: handing owned blocks to their next owners");
    *rc = node_cache_drain(atomic_load(&d->cache), drain_continue, dd, out);
    atomic_store(&d->draining, false);
    return true;
}

/* `shoal drain`: hand the owned blocks off, then leave (also when some could not be handed off:
 * the operator is removing the node; the client reports them and exits 1). A client that goes
 * away calls the drain off and the node stays. */
static int ctl_drain(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    node_daemon *d = ctx;
    daemon_drain dd = {.d = d, .reply = reply};
    node_cache_drain_progress p = {0};
    node_control_progress cp = {.listed = true};
    int rc = -1;
    if (node_control_reply_progress(reply, &cp) != 0)
        return -1;
    if (!daemon_drain_run(&dd, &p, &rc))
        return shoal_error_set(SHOAL_ERR_INVAL, "a drain is already running on this node");
    if (dd.client_gone)
        return -1;
    LOG_INFO("daemon", "leave_requested", "source=drain");
    atomic_store(&d->leave_requested, true);
    drain_progress(&p, &cp);
    if (rc != 0) {
        node_control_reply_progress(reply, &cp); /* the figures, before the error line */
        return shoal_error_wrap("drain (the node leaves all the same)");
    }
    return node_control_reply_progress_done(reply, &cp);
}

/* SIGTERM/SIGINT: at most --drain-timeout seconds of drain, then the caller leaves. A drain that
 * `shoal drain` runs already gets that long to end instead. */
static void drain_on_signal(node_daemon *d)
{
    if (d->cfg->drain_timeout == 0)
        return;
    sd_notify(0, "STOPPING=1");
    atomic_store(&d->drain_deadline_us, shoal_clock_mono_us() + (uint64_t)d->cfg->drain_timeout * 1000000u);
    daemon_drain dd = {.d = d, .watch_signals = true};
    node_cache_drain_progress p;
    int rc;
    if (daemon_drain_run(&dd, &p, &rc)) {
        if (rc != 0)
            LOG_WARN("daemon", "drain_incomplete", "error=\"%s\"", shoal_error_message());
        return;
    }
    while (atomic_load(&d->draining)) { /* `shoal drain`'s, which a second signal cuts short */
        node_cache_drain_progress none = {0};
        drain_continue(&dd, &none);
        struct timespec pause = {0, 50 * 1000000L};
        nanosleep(&pause, NULL);
    }
}

static int ctl_leave(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    node_daemon *d = ctx;
    LOG_INFO("daemon", "leave_requested", "source=control");
    atomic_store(&d->leave_requested, true);
    return 0;
}

static int ctl_forget(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    node_daemon *d = ctx;
    char q[160];
    if (node_cluster_forget(d->cluster, req->node) != 0)
        return -1;
    LOG_INFO("daemon", "forgot", "member=%s source=control", shoal_log_q(q, sizeof q, req->node));
    return 0;
}

/* Appends one listing page to the JSON arrays being built (objects and prefixes apart). */
static int list_page_json(const s3_list_page *pg, shoal_buf *objects, shoal_buf *prefixes)
{
    for (size_t i = 0; i < pg->n_objects; i++) {
        const s3_list_object *o = &pg->objects[i];
        if (strlen(o->key) != o->key_len)
            continue; /* a key holding a NUL byte cannot be a JSON string of ours */
        if (shoal_buf_append_str(objects, objects->len ? ",{\"key\":" : "{\"key\":") != 0 ||
            node_json_append_str(objects, o->key) != 0 || shoal_buf_append_str(objects, ",\"etag\":") != 0 ||
            node_json_append_str(objects, o->etag) != 0 ||
            shoal_buf_appendf(objects, ",\"size\":%llu,\"mtime\":%lld}", (unsigned long long)o->size,
                              (long long)o->last_modified) < 0)
            return shoal_error_set(SHOAL_ERR_NOMEM, "listing");
    }
    for (size_t i = 0; i < pg->n_prefixes; i++)
        if ((prefixes->len && shoal_buf_append_byte(prefixes, ',') != 0) ||
            node_json_append_str(prefixes, pg->prefixes[i]) != 0)
            return shoal_error_set(SHOAL_ERR_NOMEM, "listing");
    return 0;
}

/* `shoal ls`: every page of one directory through the cluster (node_cache_list), as one JSON body;
 * a paged request gets the one page it names and the token of the next ("next_token", null at
 * the end). */
static int ctl_list(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    node_daemon *d = ctx;
    node_cache *cache = atomic_load(&d->cache);
    if (check_bucket(d, req->bucket) != 0)
        return -1;
    shoal_buf objects = {0}, prefixes = {0}, out = {0};
    char *token = req->token ? strdup(req->token) : NULL;
    int rc = -1;
    if (req->token && token == NULL) {
        shoal_error_set(SHOAL_ERR_NOMEM, "listing");
        goto done;
    }
    for (;;) {
        s3_list_page pg;
        s3_list_page_create(&pg);
        s3_list_args a = {.bucket = req->bucket, .prefix = req->prefix,
                          .delimiter = req->delimiter[0] ? req->delimiter : NULL, .continuation_token = token,
                          .max_keys = req->max_keys};
        int r = node_cache_list(cache, &a, &pg) == 0 ? list_page_json(&pg, &objects, &prefixes) : -1;
        free(token);
        token = r == 0 && pg.truncated && pg.next_token ? strdup(pg.next_token) : NULL;
        bool more = r == 0 && pg.truncated && pg.next_token;
        s3_list_page_destroy(&pg);
        if (r != 0 || (more && token == NULL))
            goto done;
        if (!more || req->paged)
            break;
    }
    if (shoal_buf_appendf(&out, "{\"prefixes\":[%s],\"objects\":[%s]", shoal_buf_str(&prefixes),
                          shoal_buf_str(&objects)) < 0 ||
        (req->paged && (shoal_buf_append_str(&out, ",\"next_token\":") < 0 ||
                        (token ? node_json_append_str(&out, token) : shoal_buf_append_str(&out, "null")) < 0)) ||
        shoal_buf_append_byte(&out, '}') < 0) {
        shoal_error_set(SHOAL_ERR_NOMEM, "listing");
        goto done;
    }
    rc = node_control_reply_json(reply, shoal_buf_str(&out));
done:
    free(token);
    shoal_buf_destroy(&objects);
    shoal_buf_destroy(&prefixes);
    shoal_buf_destroy(&out);
    return rc;
}

/* `stat`: one object's size, ETag and modification time, from the metadata cache or a HEAD. */
static int ctl_stat(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    node_daemon *d = ctx;
    s3_object_info info;
    shoal_buf out = {0};
    int rc = -1;
    if (check_bucket(d, req->bucket) != 0)
        return -1;
    if (node_cache_head(atomic_load(&d->cache), req->bucket, req->key, &info) != 0)
        return shoal_error_wrap("stat s3://%s/%s", req->bucket, req->key);
    if (shoal_buf_append_str(&out, "{\"key\":") < 0 || node_json_append_str(&out, req->key) < 0 ||
        shoal_buf_appendf(&out, ",\"size\":%" PRIu64 ",\"etag\":", info.size) < 0 ||
        node_json_append_str(&out, info.etag) < 0 ||
        shoal_buf_appendf(&out, ",\"mtime\":%lld}", (long long)info.last_modified) < 0)
        shoal_error_set(SHOAL_ERR_NOMEM, "stat");
    else
        rc = node_control_reply_json(reply, shoal_buf_str(&out));
    shoal_buf_destroy(&out);
    return rc;
}

static const node_control_handlers CONTROL_HANDLERS = {
    .status = ctl_status,
    .stats = ctl_stats,
    .get = ctl_get,
    .preload = ctl_preload,
    .leave = ctl_leave,
    .list = ctl_list,
    .forget = ctl_forget,
    .drain = ctl_drain,
    .stat = ctl_stat,
};

/* ---- peer requests ------------------------------------------------------------------------------- */

/* The read path, or NULL after answering `in` ERROR with a reply of `type`. The read path is
 * attached before membership admits any key, so a request before it exists cannot come; answering
 * ERROR keeps that true even if it did. */
static node_cache *peer_cache(node_daemon *d, node_peer_incoming *in, node_peer_type type)
{
    node_cache *cache = atomic_load(&d->cache);
    if (cache == NULL) {
        node_peer_msg rep = {.type = type, .status = NODE_PEER_ERROR};
        node_peer_reply(in, &rep, (node_peer_payload){0});
    }
    return cache;
}

/* The transport's GET handler. */
static void peer_on_get(void *ud, node_peer_incoming *in)
{
    node_cache *cache = peer_cache(ud, in, NODE_PEER_GET_REPLY);
    if (cache)
        node_cache_on_get_block(cache, in);
}

/* The transport's LIST handler. */
static void peer_on_list(void *ud, node_peer_incoming *in)
{
    node_cache *cache = peer_cache(ud, in, NODE_PEER_LIST_REPLY);
    if (cache)
        node_cache_on_list(cache, in);
}

/* The transport's HEAD handler: an object's metadata, from this node as its metadata owner. */
static void peer_on_head(void *ud, node_peer_incoming *in)
{
    node_cache *cache = peer_cache(ud, in, NODE_PEER_HEAD_REPLY);
    if (cache)
        node_cache_on_head(cache, in);
}

/* The transport's PUT handler: a block written through another node's mount, sent to its owner. */
static void peer_on_put(void *ud, node_peer_incoming *in)
{
    node_cache *cache = peer_cache(ud, in, NODE_PEER_PUT_REPLY);
    if (cache)
        node_cache_on_put_block(cache, in);
}

/* The transport's work handler (a PING that names a request): IDLE until the read path exists. */
static node_peer_work peer_on_work(void *ud, const uint8_t *id)
{
    node_daemon *d = ud;
    node_cache *cache = atomic_load(&d->cache);
    return cache ? node_cache_on_work(cache, id) : NODE_PEER_IDLE;
}

static const node_peer_handlers PEER_HANDLERS = {
    .on_get_block = peer_on_get, .on_put_block = peer_on_put, .on_list = peer_on_list, .on_head = peer_on_head,
    .on_work = peer_on_work};

/* ---- lifecycle ---------------------------------------------------------------------------------- */

/* The signals node_daemon_run waits for (SIGHUP reloads the config: daemon_reload). */
static void stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

node_daemon *node_daemon_new(const node_config *cfg)
{
    sigset_t set;
    stop_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    node_daemon *d = calloc(1, sizeof *d);
    if (d == NULL) {
        shoal_error_set(SHOAL_ERR_NOMEM, "daemon");
        return NULL;
    }
    d->cfg = cfg;
    d->log_level = cfg->log_level;
    d->metadata_ttl = cfg->metadata_ttl;
    d->negative_ttl = cfg->negative_ttl;
    d->peer_timeout_ms = cfg->peer_timeout_ms;
    d->started_us = shoal_clock_mono_us();
    node_stats_create(&d->stats);
    shoal_addr_format(&cfg->advertise, d->address);
    snprintf(d->bucket_url, sizeof d->bucket_url, "s3://%s%s%s", cfg->bucket, cfg->prefix[0] ? "/" : "", cfg->prefix);

    node_store_options so = node_store_options_default();
    so.free_space_bp = cfg->cache_free_space_bp;
    d->store = node_store_new(cfg->cache_dir, cfg->cache_size, &so);
    if (d->store == NULL) {
        shoal_error_wrap("block store in %s", cfg->cache_dir);
        goto fail;
    }
    /* STS calls of the credentials chain go to --region's endpoint, as the S3 requests do. */
    s3_creds_options co = {.anonymous = cfg->no_sign_request, .region = cfg->region};
    d->creds = s3_creds_provider_new(&co);
    if (d->creds == NULL)
        goto fail;
    /* --endpoint, else AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL (as the AWS SDKs read them). */
    if (cfg->endpoint == NULL && s3_endpoint_from_env("S3", NULL, &d->env_endpoint) < 0)
        goto fail;
    s3_client_config sc;
    s3_client_config_defaults(&sc);
    sc.endpoint = cfg->endpoint ? cfg->endpoint : d->env_endpoint;
    sc.region = cfg->region;
    sc.path_style = cfg->path_style;
    sc.creds = d->creds;
    sc.stall_timeout_ms = cfg->s3_stall_timeout * 1000u;
    d->s3 = s3_client_new(&sc);
    if (d->s3 == NULL)
        goto fail;

    node_peer_config pc = {.handlers = &PEER_HANDLERS, .handlers_ud = d};
    if (node_peer_keypair_load_or_create(cfg->state_dir, pc.public_key, pc.secret_key) != 0)
        goto fail;
    char bind[SHOAL_ADDR_STRLEN];
    shoal_addr_format(&cfg->bind, bind);
    pc.bind = cfg->no_serve ? NULL : bind;
    d->peer = node_peer_new(&pc);
    uint8_t public_key[NODE_PEER_KEY_LEN];
    memcpy(public_key, pc.public_key, sizeof public_key);
    explicit_bzero(pc.secret_key, sizeof pc.secret_key);
    if (d->peer == NULL)
        goto fail;

    node_cache_config cc = {
        .store = d->store,
        .s3 = d->s3,
        .peer = d->peer,
        .stats = &d->stats,
        .block_size = cfg->block_size,
        .replicas = cfg->replicas,
        .buffer_blocks = cfg->fetch_buffers,
        .metadata_ttl_s = cfg->metadata_ttl,
        .negative_ttl_s = cfg->negative_ttl,
        .peer_timeout_ms = cfg->peer_timeout_ms,
    };
    node_cache *cache = node_cache_new(&cc);
    if (cache == NULL)
        goto fail;
    atomic_store(&d->cache, cache);

    node_cluster_config kc = {
        .bind = cfg->bind,
        .seeds = cfg->seeds,
        .n_seeds = cfg->n_seeds,
        .state_dir = cfg->state_dir,
        .peer = d->peer,
        .stats = &d->stats,
        .gossip_period_us = (uint64_t)cfg->test_gossip_period_ms * 1000u,
        .cache_used = cache_used,
        .cache_used_ud = d,
    };
    snprintf(kc.self.id, sizeof kc.self.id, "%s", cfg->node_id);
    kc.self.addr = cfg->advertise;
    snprintf(kc.self.zone, sizeof kc.self.zone, "%s", cfg->zone ? cfg->zone : "");
    memcpy(kc.self.curve_public, public_key, sizeof kc.self.curve_public);
    kc.self.capacity = cfg->no_serve ? 0 : cfg->cache_size;
    kc.self.serving = !cfg->no_serve;
    kc.self.proto_version = NODE_PEER_VERSION;
    kc.self.block_size = (uint32_t)cfg->block_size;
    memcpy(kc.cluster_key, cfg->cluster_key, sizeof kc.cluster_key);
    d->cluster = node_cluster_new(&kc);
    explicit_bzero(kc.cluster_key, sizeof kc.cluster_key);
    if (d->cluster == NULL)
        goto fail;
    node_cache_set_cluster(cache, d->cluster);
    if (cfg->mount != NULL) {
        node_mountfs_parts mp = {.s3 = d->s3, .cache = cache, .cluster = d->cluster, .store = d->store};
        if ((d->mount = node_mountfs_new(cfg, &mp)) == NULL)
            goto fail;
    }

    pthread_mutex_init(&d->ready.mu, NULL);
    pthread_cond_init(&d->ready.cv, NULL);
    if (shoal_thread_start(&d->ready.thread, "s3-check", s3_check_main, d) != 0)
        goto fail;
    d->ready.running = true;
    if (cfg->metrics_enabled) {
        d->metrics = node_metrics_new(&cfg->metrics, &d->stats, metrics_refresh, d);
        if (d->metrics == NULL)
            goto fail;
        node_metrics_set_ready(d->metrics, daemon_ready, d);
    }
    d->control = node_control_server_new(cfg->control, &CONTROL_HANDLERS, d);
    if (d->control == NULL)
        goto fail;

    char tmp[96], cdir[256];
    LOG_INFO("daemon", "started", "node=%s address=%s bucket=%s peer=%s cache_dir=%s cache_size=%llu block_size=%llu "
             "replicas=%u serving=%s",
             shoal_log_q(tmp, sizeof tmp, cfg->node_id), d->address, d->bucket_url,
             cfg->no_serve ? "off" : node_peer_endpoint(d->peer), shoal_log_q(cdir, sizeof cdir, cfg->cache_dir),
             (unsigned long long)cfg->cache_size, (unsigned long long)cfg->block_size, cfg->replicas,
             cfg->no_serve ? "false" : "true");
    return d;
fail:
    node_daemon_delete(d);
    return NULL;
}

/* ---- reload (SIGHUP) ------------------------------------------------------------------------------
 *
 * SIGHUP parses the command line again with the --config file as it is now, the flags still winning
 * as at start. The log level and the read path's timeouts (--metadata-ttl, --negative-ttl,
 * --peer-timeout) apply at once; every other option is read at start only, so a changed one is
 * named in the log as needing a restart and the running value stays. A file that does not parse
 * changes nothing: the error is logged and the daemon runs on. */

static const char *level_name(shoal_log_level l)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    return (unsigned)l < 4 ? names[l] : "?";
}

static bool seeds_eq(const node_config *a, const node_config *b)
{
    if (a->n_seeds != b->n_seeds)
        return false;
    for (size_t i = 0; i < a->n_seeds; i++)
        if (a->seeds[i].port != b->seeds[i].port || strcmp(a->seeds[i].host, b->seeds[i].host) != 0)
            return false;
    return true;
}

static bool str_eq(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

/* Appends to `out` the options of n that differ from the running a and need a restart. */
static void restart_needed(const node_config *a, const node_config *n, shoal_buf *out)
{
    const struct {
        const char *name;
        bool same;
    } opts[] = {
        {"node-id", str_eq(a->node_id, n->node_id)},
        {"bind", shoal_addr_eq(&a->bind, &n->bind)},
        {"advertise", shoal_addr_eq(&a->advertise, &n->advertise)},
        {"seeds", seeds_eq(a, n)},
        {"bucket", str_eq(a->bucket, n->bucket) && str_eq(a->prefix, n->prefix)},
        {"endpoint", str_eq(a->endpoint, n->endpoint)},
        {"path-style", a->path_style == n->path_style},
        {"region", str_eq(a->region, n->region)},
        {"cache-dir", str_eq(a->cache_dir, n->cache_dir)},
        {"cache-size", a->cache_size == n->cache_size},
        {"cache-free-space", a->cache_free_space_bp == n->cache_free_space_bp},
        {"block-size", a->block_size == n->block_size},
        {"replicas", a->replicas == n->replicas},
        {"fetch-buffers", a->fetch_buffers == n->fetch_buffers},
        {"zone", str_eq(a->zone, n->zone)},
        {"no-serve", a->no_serve == n->no_serve},
        {"mount", str_eq(a->mount, n->mount)},
        {"read-only", a->read_only == n->read_only},
        {"allow-other", a->allow_other == n->allow_other},
        {"uid", a->uid_set == n->uid_set && a->uid == n->uid},
        {"gid", a->gid_set == n->gid_set && a->gid == n->gid},
        {"file-mode", a->file_mode == n->file_mode},
        {"dir-mode", a->dir_mode == n->dir_mode},
        {"upload-delay", a->upload_delay == n->upload_delay},
        {"s3-stall-timeout", a->s3_stall_timeout == n->s3_stall_timeout},
        {"drain-timeout", a->drain_timeout == n->drain_timeout},
        {"cluster-key", !sodium_memcmp(a->cluster_key, n->cluster_key, sizeof a->cluster_key)},
        {"state-dir", str_eq(a->state_dir, n->state_dir)},
        {"control", str_eq(a->control, n->control)},
        {"metrics", a->metrics_enabled == n->metrics_enabled && shoal_addr_eq(&a->metrics, &n->metrics)},
        {"log-format", a->log_format == n->log_format},
        {"no-sign-request", a->no_sign_request == n->no_sign_request},
    };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (!opts[i].same)
            shoal_buf_appendf(out, "%s%s", out->len ? "," : "", opts[i].name);
}

/* Appends " name=old->new" for a number that changed. */
static void changed_u32(shoal_buf *out, const char *name, uint32_t was, uint32_t now)
{
    if (was != now)
        shoal_buf_appendf(out, "%s%s=%u->%u", out->len ? "," : "", name, was, now);
}

static void daemon_reload(node_daemon *d)
{
    node_config n;
    if (node_config_reload(d->cfg, &n) < 0) {
        LOG_ERROR("daemon", "reload_failed", "config=%s error=\"%s\" action=\"nothing changed; fix the file and send "
                  "SIGHUP again\"", d->cfg->config_file ? d->cfg->config_file : "-", shoal_error_message());
        return;
    }
    shoal_buf changed = {0}, restart = {0};
    if (n.log_level != d->log_level)
        shoal_buf_appendf(&changed, "log-level=%s->%s", level_name(d->log_level), level_name(n.log_level));
    changed_u32(&changed, "metadata-ttl", d->metadata_ttl, n.metadata_ttl);
    changed_u32(&changed, "negative-ttl", d->negative_ttl, n.negative_ttl);
    changed_u32(&changed, "peer-timeout", d->peer_timeout_ms, n.peer_timeout_ms);
    restart_needed(d->cfg, &n, &restart);
    /* The mount keeps its kernel and attribute timeouts from the start. */
    if (d->mount && (n.metadata_ttl != d->cfg->metadata_ttl || n.negative_ttl != d->cfg->negative_ttl))
        shoal_buf_appendf(&restart, "%smount's metadata-ttl/negative-ttl", restart.len ? "," : "");
    d->log_level = n.log_level;
    d->metadata_ttl = n.metadata_ttl;
    d->negative_ttl = n.negative_ttl;
    d->peer_timeout_ms = n.peer_timeout_ms;
    shoal_log_set_level(n.log_level);
    node_cache_set_timeouts(atomic_load(&d->cache), n.metadata_ttl, n.negative_ttl, n.peer_timeout_ms);
    LOG_INFO("daemon", "reloaded", "config=%s changed=%s restart_needed=%s", d->cfg->config_file ? d->cfg->config_file : "-",
             changed.len ? shoal_buf_str(&changed) : "none", restart.len ? shoal_buf_str(&restart) : "none");
    if (restart.len)
        LOG_WARN("daemon", "reload_needs_restart", "options=%s hint=\"these are read at start only; the running "
                 "values stay until shoald restarts\"", shoal_buf_str(&restart));
    shoal_buf_destroy(&changed);
    shoal_buf_destroy(&restart);
    node_config_destroy(&n);
}

int node_daemon_run(node_daemon *d)
{
    sigset_t set;
    stop_signals(&set);
    int rc = 0;
    uint64_t maintained_us = shoal_clock_mono_us();
    for (;;) {
        struct timespec ts = {0, 200 * 1000000L};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (shoal_clock_mono_us() - maintained_us >= DAEMON_STORE_MAINTAIN_US) {
            /* the store's free-space reserve, its directory, and an audit slice of its files */
            node_store_maintain(d->store);
            maintained_us = shoal_clock_mono_us();
        }
        if (sig == SIGHUP)
            daemon_reload(d);
        if (sig == SIGTERM || sig == SIGINT) {
            LOG_INFO("daemon", "signal", "signal=%s drain_timeout=%u", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                     d->cfg->drain_timeout);
            drain_on_signal(d);
            break;
        }
        if (atomic_load(&d->leave_requested))
            break;
        /* `umount DIR` ends a FUSE file system's daemon (what mount.shoal and fstab expect): a
         * shoald left running without its mount would hold the port and the next mount would fail. */
        if (node_mountfs_unmounted(d->mount)) {
            char q[256];
            LOG_INFO("daemon", "unmounted", "mountpoint=%s action=leave", shoal_log_q(q, sizeof q, d->cfg->mount));
            break;
        }
        announce_ready(d);
        if (node_cluster_refused(d->cluster)) {
            rc = shoal_error_set(SHOAL_ERR_GOSSIP_REFUSED, "the cluster refused node %s (duplicate node id, other "
                                 "block size or protocol version; see the cluster's logs)", d->cfg->node_id);
            break;
        }
    }
    sd_notify(0, "STOPPING=1\nSTATUS=leaving the cluster");
    if (rc == 0) {
        LOG_INFO("daemon", "leaving", "node=%s", d->cfg->node_id);
        node_cluster_leave(d->cluster, DAEMON_LEAVE_LINGER_MS);
    }
    return rc;
}

void node_daemon_delete(node_daemon *d)
{
    if (d == NULL)
        return;
    node_control_server_delete(d->control);
    node_metrics_delete(d->metrics); /* both sample d->mount (daemon_sample): stop them first */
    if (d->ready.running) {
        pthread_mutex_lock(&d->ready.mu);
        d->ready.stop = true;
        pthread_cond_broadcast(&d->ready.cv);
        pthread_mutex_unlock(&d->ready.mu);
        pthread_join(d->ready.thread, NULL);
        pthread_mutex_destroy(&d->ready.mu);
        pthread_cond_destroy(&d->ready.cv);
    }
    node_mountfs_delete(d->mount);
    node_cache_stop(atomic_load(&d->cache));
    node_cluster_delete(d->cluster);
    node_peer_delete(d->peer);
    node_cache_delete(atomic_load(&d->cache));
    s3_client_delete(d->s3);
    s3_creds_provider_delete(d->creds);
    free(d->env_endpoint);
    node_store_delete(d->store);
    free(d);
}
