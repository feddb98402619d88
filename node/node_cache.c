/*
 * node_cache: the read path. See node_cache.h for the route a block takes; this comment explains
 * the machinery.
 *
 * Single flight. A table of fetches in progress, keyed by block id, under one mutex. The first
 * thread that misses the store for a block leads its fetch; threads that miss it meanwhile (local
 * readers, peer requests being served, read-ahead) join the entry and wait on the entry's own
 * condition variable for its outcome instead of fetching again (one variable per entry, so the
 * bytes streaming into one block wake that block's readers and no others). The leader looks at the store once more
 * after taking the lead (the block may have landed between the first look and the lead), stores
 * what it fetched *before* it removes the entry, so a thread that comes later finds the block in
 * the store: with the owner up, a block is fetched from S3 once.
 *
 * Buffers. A fetched block lives in a reference-counted buffer shared by the leader, the waiters
 * and peer replies (handed to ZeroMQ with a free function that drops a reference), so a block is
 * never copied on its way to a waiter or a peer. A block already in the store is mapped
 * (node_store_map) and sent or written from the mapping.
 *
 * Threads. Peer GETs arrive on the transport's I/O thread, which must not block, so they go to the
 * serve pool. Serving never asks another node (a request is never forwarded), so a serve worker
 * waits only for S3 or for a fetch in its own node. Read-ahead has a pool of its own: if it shared
 * the serve pool, two nodes reading ahead from each other could fill both pools with requests
 * that wait for each other until they time out.
 *
 * Owners. The owners of a block come from the cluster snapshot in read order. Walking them in
 * order, this node fetches from S3 itself when it reaches itself (it is an owner) and otherwise
 * asks the owner with OWNER_FETCH|NO_FORWARD; an owner that does not answer in time, is busy or
 * fails is skipped; when none is left the reader goes to S3. CHANGED or NOT_FOUND from an owner
 * ends the read: the owner asked S3 with If-Match and S3 said the version is gone. A block from a
 * peer is checked (length and XXH3-64 of the payload, the "ck" field) before it is used and kept
 * as a NEAR block so the next local read of it stays local.
 *
 * Written blocks. After the mount uploaded a file, each block of the new version is sent with PUT
 * to its owners (node_cache_push, without waiting for the answers); an owner checks the block's
 * name, length and checksum and that it owns the block in its own view, and keeps it OWNED. So a
 * reader on any node finds a fresh checkpoint at its owner and S3 is not asked again. A refused or
 * lost PUT only costs the owner a fetch from S3 when the block is first read.
 *
 * Streaming. A block fetched from S3 is filled through a sink that publishes, under the flight
 * table's mutex, how many of its first bytes arrived (the S3 client hands a sink no byte of another
 * version than If-Match names). node_cache_read_stream lets the mount's reader of a block nobody
 * holds have its range as soon as those bytes are in: a read-ahead worker leads the fetch, so the
 * reader returns while the rest arrives, and single flight still fetches the block once. A block
 * that comes from a peer arrives whole, and its readers wait for it, as before.
 *
 * Listings. A table of listing pages keyed by the whole request (bucket, prefix, delimiter, token,
 * start-after, max keys), each kept in the LIST payload encoding, which is both what a peer is
 * sent and what a local caller decodes. A page is fetched once at a time (an entry marked pending;
 * others wait on it, as with blocks) from the listing's owners in read order, then S3; a LIST a
 * peer sends is served from the same table, so the owner's local callers and every other node
 * share one S3 listing per TTL. Failures are not remembered: the next caller tries again. The
 * table is bounded in entries and in bytes.
 */
#include "node_cache.h"

#include "shoal_assert.h"
#include "shoal_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#define CACHE_PEER_TIMEOUT_MS 2000
#define CACHE_RESEND_PAUSE_MS 20
#define CACHE_PEER_MAX_WAIT_MS 60000 /* longest wait for an owner that keeps answering PING */
#define CACHE_SERVE_THREADS 8
#define CACHE_READAHEAD_THREADS 4
#define CACHE_READAHEAD_BLOCKS 4
#define CACHE_POOL_QUEUE 1024
#define CACHE_FLIGHT_BUCKETS 1024
#define CACHE_META_BUCKETS 4096
#define CACHE_META_MAX 65536
#define CACHE_SEQ_SLOTS 64
#define CACHE_PENALTY_SLOTS 32
#define CACHE_PENALTY_US 3000000u /* an owner that timed out is skipped this long */
#define CACHE_LIST_BUCKETS 256
#define CACHE_LIST_MAX 4096        /* listing pages remembered at once */
#define CACHE_LIST_BYTES (64u << 20) /* and their bytes (a page of 1000 long keys is about 1 MiB) */
#define CACHE_STREAM_STEP (64u << 10) /* a streaming block wakes its readers every this many bytes */
#define CACHE_STREAM_START_MS 20      /* how long a streaming reader waits for its fetch to begin */

/* ---- reference-counted block buffers ------------------------------------------------------- */

typedef struct cache_buf {
    atomic_uint refs;
    size_t len;
    size_t cap; /* bytes allocated for data: a power of two from BUF_POOL_MIN on, else len */
    struct cache_buf *next_free;
    bool summed;             /* sum is the store checksum of data[0..len), taken as it arrived */
    node_store_checksum sum;
    uint8_t data[];
} cache_buf;

/* Block buffers are reused: a fresh 4 MiB malloc is a fresh mapping, and filling it costs a page
 * fault and a zeroed page per 4 KiB, which was a tenth of a cold read's CPU. Buffers of
 * BUF_POOL_MIN bytes and more are allocated in power-of-two sizes and, when freed, kept in a
 * per-size free list of at most BUF_POOL_BYTES (at least one buffer). The lists are process-wide:
 * every cache in the process shares them. */
#define BUF_POOL_MIN (256u << 10)
#define BUF_POOL_CLASSES 9 /* 256 KiB .. 64 MiB */
#define BUF_POOL_BYTES (64u << 20)

static pthread_mutex_t buf_pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    cache_buf *head;
    unsigned count;
} buf_pool[BUF_POOL_CLASSES];

static int buf_class(size_t len, size_t *cap)
{
    size_t c = BUF_POOL_MIN;
    for (int i = 0; i < BUF_POOL_CLASSES; i++, c <<= 1) {
        if (len <= c) {
            *cap = c;
            return i;
        }
    }
    return -1;
}

static cache_buf *buf_new(size_t len)
{
    size_t cap = len ? len : 1;
    int cls = len >= BUF_POOL_MIN ? buf_class(len, &cap) : -1;
    cache_buf *b = NULL;
    if (cls >= 0) {
        pthread_mutex_lock(&buf_pool_mu);
        if ((b = buf_pool[cls].head) != NULL) {
            buf_pool[cls].head = b->next_free;
            buf_pool[cls].count--;
        }
        pthread_mutex_unlock(&buf_pool_mu);
    }
    if (b == NULL && (b = malloc(sizeof *b + cap)) == NULL) {
        shoal_error_set(SHOAL_ERR_NOMEM, "block buffer of %zu bytes", len);
        return NULL;
    }
    atomic_init(&b->refs, 1);
    b->len = len;
    b->cap = cap;
    b->next_free = NULL;
    b->summed = false;
    return b;
}

static cache_buf *buf_ref(cache_buf *b)
{
    atomic_fetch_add(&b->refs, 1);
    return b;
}

static void buf_unref(cache_buf *b)
{
    if (b == NULL || atomic_fetch_sub(&b->refs, 1) != 1)
        return;
    size_t cap;
    int cls = b->cap >= BUF_POOL_MIN ? buf_class(b->cap, &cap) : -1;
    if (cls >= 0 && cap == b->cap) {
        pthread_mutex_lock(&buf_pool_mu);
        bool keep = buf_pool[cls].count < (BUF_POOL_BYTES / cap > 1 ? BUF_POOL_BYTES / cap : 1);
        if (keep) {
            b->next_free = buf_pool[cls].head;
            buf_pool[cls].head = b;
            buf_pool[cls].count++;
        }
        pthread_mutex_unlock(&buf_pool_mu);
        if (keep)
            return;
    }
    free(b);
}

/* node_peer_payload free functions: the transport calls them once ZeroMQ has sent the bytes. */
static void payload_free_buf(void *data, void *hint) { buf_unref(hint); }

static void payload_free_heap(void *data, void *hint) { free(data); }

static void payload_free_view(void *data, void *hint)
{
    node_store_view_release(hint);
    free(hint);
}

/* ---- worker pools ----------------------------------------------------------------------------- */

typedef void (*pool_fn)(node_cache *c, void *arg);
/* What to do with a task still queued when the pool stops. */
typedef void (*pool_drop_fn)(void *arg);

typedef struct pool_task {
    pool_fn fn;
    pool_drop_fn drop;
    void *arg;
} pool_task;

typedef struct pool {
    node_cache *cache;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pool_task *ring;
    size_t cap, head, count;
    bool stopping;
    pthread_t *threads;
    unsigned n_threads;
} pool;

static void *pool_main(void *arg)
{
    pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->count == 0 && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->count == 0)
            break;
        pool_task t = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        pthread_mutex_unlock(&p->mu);
        t.fn(p->cache, t.arg);
        pthread_mutex_lock(&p->mu);
        if (p->stopping)
            break;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int pool_start(pool *p, node_cache *c, unsigned n_threads, size_t cap)
{
    memset(p, 0, sizeof *p);
    p->cache = c;
    p->cap = cap;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->ring = calloc(cap, sizeof *p->ring);
    p->threads = calloc(n_threads, sizeof *p->threads);
    if (p->ring == NULL || p->threads == NULL)
        return shoal_error_set(SHOAL_ERR_NOMEM, "cache worker pool");
    for (; p->n_threads < n_threads; p->n_threads++)
        if (pthread_create(&p->threads[p->n_threads], NULL, pool_main, p) != 0)
            return shoal_error_errno(errno, "cache worker thread");
    return 0;
}

/* Queues a task; -1 when the queue is full or the pool stops (the caller keeps `arg`). */
static int pool_submit(pool *p, pool_fn fn, pool_drop_fn drop, void *arg)
{
    int rc = -1;
    pthread_mutex_lock(&p->mu);
    if (!p->stopping && p->count < p->cap) {
        p->ring[(p->head + p->count) % p->cap] = (pool_task){fn, drop, arg};
        p->count++;
        pthread_cond_signal(&p->cv);
        rc = 0;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* Stops the threads after the tasks in progress and drops what is still queued; later
 * submissions fail. Idempotent. */
static void pool_stop(pool *p)
{
    if (p->ring == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    p->n_threads = 0;
    pthread_mutex_lock(&p->mu);
    for (; p->count > 0; p->count--) {
        pool_task *t = &p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        t->drop(t->arg);
    }
    pthread_mutex_unlock(&p->mu);
}

static void pool_destroy(pool *p)
{
    if (p->ring == NULL && p->threads == NULL)
        return;
    pool_stop(p);
    free(p->ring);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    p->ring = NULL;
    p->threads = NULL;
}

/* ---- the cache ---------------------------------------------------------------------------------- */

/* One fetch in progress. Lives while the leader or a waiter holds it (refs). */
typedef struct flight {
    struct flight *next;
    uint8_t id[NODE_STORE_ID_LEN];
    unsigned refs;
    bool done;
    shoal_err err;
    char msg[256];
    cache_buf *buf; /* the block when err == SHOAL_OK */
    node_cache_source source;
    int mode;       /* the leader's fetch_mode */
    cache_buf *partial; /* the block while it streams in from S3 (see "Streaming"), else NULL */
    uint64_t arrived;   /* bytes of partial from its start that arrived, of the asked version */
    uint64_t told;      /* arrived when waiters were last woken */
    pthread_cond_t cv;  /* its waiters: new bytes arrived, or done (with fl_mu) */
} flight;

typedef struct meta_entry {
    struct meta_entry *next;
    char *bucket;
    char *key;
    uint64_t expires_us;
    bool negative;
    s3_object_info info;
} meta_entry;

/* An owner that did not answer in time, skipped by later reads until `until_us`. */
typedef struct penalty {
    char id[GOSSIP_ID_MAX + 1];
    uint64_t until_us;
} penalty;

typedef struct seq_slot {
    uint64_t hash;
    uint64_t last_index;
} seq_slot;

struct node_cache {
    node_cache_config cfg;
    _Atomic(node_cluster *) cluster;

    pthread_mutex_t fl_mu;
    pthread_cond_t fl_cv; /* a flight began (streaming readers wait for the one they launched) */
    flight *flights[CACHE_FLIGHT_BUCKETS];

    pthread_mutex_t meta_mu;
    meta_entry *meta[CACHE_META_BUCKETS];
    size_t meta_count;

    pthread_mutex_t seq_mu; /* guards seq and penalties */
    seq_slot seq[CACHE_SEQ_SLOTS];
    penalty penalties[CACHE_PENALTY_SLOTS];

    pthread_mutex_t list_mu;
    pthread_cond_t list_cv;
    struct list_entry *lists[CACHE_LIST_BUCKETS];
    size_t list_count;
    size_t list_bytes; /* page bytes held by the table */

    pool serve;
    pool readahead;
};

/* Why a block is wanted: it decides what happens on a miss. */
typedef enum fetch_mode {
    FETCH_READ,  /* a local reader: owners in order, then S3; peer blocks are kept NEAR */
    FETCH_SERVE, /* a peer asked this node as owner: S3, stored OWNED; never asks another node */
    FETCH_WARM,  /* preload: make the owner hold it; nothing kept here unless this node owns it */
} fetch_mode;

/* A block request in the read path's own terms. */
typedef struct block_req {
    const char *bucket;
    const char *key;
    const char *etag;
    uint64_t object_size; /* UINT64_MAX when unknown (peer requests carry offset and length) */
    uint64_t index;
    uint64_t offset;
    uint64_t length;
    dht_id did;
    uint8_t id[NODE_STORE_ID_LEN];
} block_req;

static void id_bytes(dht_id d, uint8_t out[NODE_STORE_ID_LEN])
{
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(d.hi >> (56 - 8 * i));
        out[8 + i] = (uint8_t)(d.lo >> (56 - 8 * i));
    }
}

static void block_req_init(block_req *b, const char *bucket, const char *key, const char *etag, uint64_t index,
                           uint64_t offset, uint64_t length)
{
    b->bucket = bucket;
    b->key = key;
    b->etag = etag;
    b->object_size = UINT64_MAX;
    b->index = index;
    b->offset = offset;
    b->length = length;
    b->did = dht_block_id(bucket, key, etag, index);
    id_bytes(b->did, b->id);
}

static int block_req_from_object(const node_cache *c, const node_cache_object *obj, uint64_t index, block_req *b)
{
    uint64_t n = node_cache_block_count(c, obj->size);
    if (index >= n)
        return shoal_error_set(SHOAL_ERR_INVAL, "block %llu of s3://%s/%s: the object has %llu blocks",
                               (unsigned long long)index, obj->bucket, obj->key, (unsigned long long)n);
    uint64_t off = index * c->cfg.block_size;
    uint64_t len = obj->size - off < c->cfg.block_size ? obj->size - off : c->cfg.block_size;
    block_req_init(b, obj->bucket, obj->key, obj->etag, index, off, len);
    b->object_size = obj->size;
    return 0;
}

uint64_t node_cache_block_count(const node_cache *c, uint64_t size)
{
    return (size + c->cfg.block_size - 1) / c->cfg.block_size;
}

static void count_source(node_cache *c, node_cache_source s)
{
    switch (s) {
    case NODE_CACHE_LOCAL: node_stats_add(&c->cfg.stats->reads_local, 1); break;
    case NODE_CACHE_PEER: node_stats_add(&c->cfg.stats->reads_peer, 1); break;
    case NODE_CACHE_S3: node_stats_add(&c->cfg.stats->reads_s3, 1); break;
    }
}

/* ---- fetching one block ------------------------------------------------------------------------- */

typedef struct flight flight;

/* Bytes of a block arriving from S3 (the S3 client's worker thread): into the buffer, and, when the
 * fetch has a flight, made visible to readers waiting on it. The client delivers a sink no byte of
 * another version than If-Match asked for, and after a retry delivers again from 0, so `arrived`
 * only counts a contiguous prefix of good bytes. */
typedef struct stream_sink {
    node_cache *c;
    flight *f;
    cache_buf *buf;
    node_store_sum *sum; /* the store checksum, fed while the bytes are hot in cache; NULL: none */
    uint64_t summed;     /* bytes fed to it, a contiguous prefix */
} stream_sink;

static int stream_put(void *ud, uint64_t pos, const void *data, size_t len)
{
    stream_sink *k = ud;
    if (pos > k->buf->len || len > k->buf->len - pos)
        return -1;
    memcpy(k->buf->data + pos, data, len);
    if (k->sum != NULL) {
        if (pos == 0 && k->summed > 0) { /* a retry delivers again from the first byte */
            node_store_sum_reset(k->sum);
            k->summed = 0;
        }
        if (pos == k->summed) {
            node_store_sum_update(k->sum, k->buf->data + pos, len);
            k->summed += len;
        }
        /* anything else leaves a gap: node_store_sum_final fails and the store sums it itself */
    }
    if (k->f == NULL)
        return 0;
    node_cache *c = k->c;
    pthread_mutex_lock(&c->fl_mu);
    if (pos <= k->f->arrived && pos + len > k->f->arrived)
        k->f->arrived = pos + len;
    /* Waiters are woken every CACHE_STREAM_STEP bytes, not for each of curl's small writes. */
    if (k->f->arrived - k->f->told >= CACHE_STREAM_STEP || k->f->arrived == k->buf->len) {
        k->f->told = k->f->arrived;
        pthread_cond_broadcast(&k->f->cv);
    }
    pthread_mutex_unlock(&c->fl_mu);
    return 0;
}

/* Ranged GET of the block with If-Match; the body must be exactly the block's length. With a
 * flight, the bytes stream to its waiters as they arrive (node_cache_read_stream). */
static cache_buf *fetch_s3(node_cache *c, const block_req *b, flight *f)
{
    cache_buf *buf = buf_new((size_t)b->length);
    if (buf == NULL)
        return NULL;
    if (f != NULL) {
        pthread_mutex_lock(&c->fl_mu);
        if (f->partial == NULL)
            f->partial = buf_ref(buf);
        else
            f = NULL; /* a second S3 fetch of one flight (never happens today) streams nothing */
        pthread_mutex_unlock(&c->fl_mu);
    }
    uint64_t got = 0;
    s3_object_info info;
    stream_sink sink = {c, f, buf, node_store_sum_new(b->id, b->length), 0};
    s3_get_args a = {.bucket = b->bucket, .key = b->key, .ranged = true, .offset = b->offset,
                     .length = b->length, .if_match = b->etag, .sink = stream_put, .sink_ud = &sink};
    if (s3_get(c->cfg.s3, &a, &got, &info) != 0)
        goto fail;
    /* If-Match should have refused another version with 412; a server that ignores If-Match
     * (some S3-compatible stores do) is caught here by the ETag of the answer, so bytes of one
     * version are never stored under the block id of another. */
    if (info.etag[0] && strcmp(info.etag, b->etag) != 0) {
        shoal_error_set(SHOAL_ERR_S3_CHANGED, "block %llu of s3://%s/%s: asked for ETag %s, the answer has %s",
                        (unsigned long long)b->index, b->bucket, b->key, b->etag, info.etag);
        goto fail;
    }
    if (got != b->length) {
        shoal_error_set(SHOAL_ERR_S3_TRUNCATED, "block %llu of s3://%s/%s: %llu bytes of %llu",
                        (unsigned long long)b->index, b->bucket, b->key, (unsigned long long)got,
                        (unsigned long long)b->length);
        goto fail;
    }
    buf->summed = sink.sum != NULL && node_store_sum_final(sink.sum, &buf->sum);
    node_store_sum_free(sink.sum);
    return buf;
fail:
    node_store_sum_free(sink.sum);
    buf_unref(buf);
    return NULL;
}

/* Stores a fetched block; a full store or a failed write only costs the next reader a fetch. */
static void store_put(node_cache *c, const block_req *b, const cache_buf *buf, node_store_class cls)
{
    if (node_store_put_checked(c->cfg.store, b->id, buf->data, buf->len, cls, buf->summed ? &buf->sum : NULL) != 0 &&
        cls == NODE_STORE_OWNED)
        LOG_WARN("cache", "store_failed", "index=%llu error=%s", (unsigned long long)b->index,
                 shoal_error_name(shoal_error_code()));
}

/* Whether the owner `id` timed out recently: then a read does not wait for it again but goes on
 * to the next owner or S3 at once, so a stalled node costs one timeout every few seconds rather
 * than one per block until gossip declares it dead. */
static bool penalized(node_cache *c, const char *id)
{
    uint64_t now = shoal_clock_mono_us();
    bool hit = false;
    pthread_mutex_lock(&c->seq_mu);
    for (size_t i = 0; i < CACHE_PENALTY_SLOTS && !hit; i++)
        hit = c->penalties[i].until_us > now && strcmp(c->penalties[i].id, id) == 0;
    pthread_mutex_unlock(&c->seq_mu);
    return hit;
}

static void penalize(node_cache *c, const char *id)
{
    uint64_t now = shoal_clock_mono_us();
    pthread_mutex_lock(&c->seq_mu);
    penalty *slot = &c->penalties[0];
    for (size_t i = 0; i < CACHE_PENALTY_SLOTS; i++) {
        penalty *p = &c->penalties[i];
        if (strcmp(p->id, id) == 0 || p->until_us <= now) {
            slot = p;
            if (strcmp(p->id, id) == 0)
                break;
        }
    }
    snprintf(slot->id, sizeof slot->id, "%s", id);
    slot->until_us = now + CACHE_PENALTY_US;
    pthread_mutex_unlock(&c->seq_mu);
}

/* Outcome of asking one owner. */
typedef enum ask_result {
    ASK_OK,
    ASK_NEXT, /* timeout, busy, error: try the next owner */
    ASK_FINAL /* the owner says the version is gone: the read fails */
} ask_result;

/* A GET in flight whose requester may give up on it: the transport's callback and the waiting
 * thread share it, and whichever comes second frees it. */
typedef struct peer_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, abandoned;
    node_peer_response *r;
} peer_wait;

static void peer_wait_free(peer_wait *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

/* The transport's completion callback (I/O thread): hands the response over, never blocks. */
static void peer_wait_done(void *ud, node_peer_response *r)
{
    peer_wait *w = ud;
    pthread_mutex_lock(&w->mu);
    bool abandoned = w->abandoned;
    if (!abandoned) {
        w->r = r;
        w->done = true;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    if (abandoned) {
        node_peer_response_delete(r);
        peer_wait_free(w);
    }
}

/* Whether the peer answers a PING in time: its transport's I/O thread answers PINGs itself, at
 * once, so a live owner that is busy fetching from S3 still answers; a stalled or dead one does not. */
static bool peer_alive(node_cache *c, int link, uint32_t timeout_ms)
{
    node_peer_msg ping = {.type = NODE_PEER_PING};
    node_peer_response *r = node_peer_call(c->cfg.peer, link, &ping, (node_peer_payload){0}, timeout_ms);
    bool alive = r && node_peer_response_result(r) == SHOAL_OK;
    node_peer_response_delete(r);
    return alive;
}

/* Sends a GET and waits for the reply. The peer timeout bounds how long a silent peer can hold a
 * read, not how long an owner may take: after each timeout the peer is PINGed, and while it answers
 * (it is alive, its S3 fetch is slow: under load, or a large block) the wait goes on, up to
 * CACHE_PEER_MAX_WAIT_MS. Giving up on a live owner would only fetch the same block from S3 twice.
 * 0 with the response in *out (the caller deletes it; its result may still be a failure), or -1
 * with SHOAL_ERR_TIMEOUT when the peer went silent, or the submission's error. */
static int peer_get(node_cache *c, int link, const node_peer_msg *req, node_peer_response **out)
{
    uint32_t timeout = c->cfg.peer_timeout_ms ? c->cfg.peer_timeout_ms : CACHE_PEER_TIMEOUT_MS;
    peer_wait *w = calloc(1, sizeof *w);
    if (w == NULL)
        return shoal_error_set(SHOAL_ERR_NOMEM, "peer request");
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (node_peer_submit(c->cfg.peer, link, req, (node_peer_payload){0}, CACHE_PEER_MAX_WAIT_MS, peer_wait_done,
                         w) != 0) {
        peer_wait_free(w);
        return -1;
    }
    pthread_mutex_lock(&w->mu);
    for (;;) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += timeout / 1000;
        until.tv_nsec += (long)(timeout % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!w->done && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0) {
        }
        if (w->done)
            break;
        pthread_mutex_unlock(&w->mu);
        bool alive = peer_alive(c, link, timeout / 4 ? timeout / 4 : 1);
        pthread_mutex_lock(&w->mu);
        if (!alive && !w->done) {
            w->abandoned = true; /* the callback frees w when the GET completes */
            pthread_mutex_unlock(&w->mu);
            return shoal_error_set(SHOAL_ERR_TIMEOUT, "peer GET: no reply and no PONG within %u ms", timeout);
        }
    }
    *out = w->r;
    pthread_mutex_unlock(&w->mu);
    peer_wait_free(w);
    return 0;
}

/* peer_get, and the outcome's code (SHOAL_OK when a reply came, whatever its status). A request
 * that could not even be sent (the link is between connections: a peer that was refused at its
 * first handshake, before it knew this node, is being dialled again) is sent again every few
 * milliseconds within the peer timeout, rather than costing an S3 fetch. *r may be set even on
 * failure; the caller deletes it. */
static shoal_err peer_request(node_cache *c, int link, const node_peer_msg *req, node_peer_response **r)
{
    uint32_t timeout = c->cfg.peer_timeout_ms ? c->cfg.peer_timeout_ms : CACHE_PEER_TIMEOUT_MS;
    uint64_t give_up = shoal_clock_mono_us() + (uint64_t)timeout * 1000u;
    shoal_err e;
    for (;;) {
        e = peer_get(c, link, req, r) == 0 ? node_peer_response_result(*r) : shoal_error_code();
        if (e != SHOAL_ERR_NODE_PEER || shoal_clock_mono_us() >= give_up)
            break;
        if (*r)
            node_peer_response_delete(*r);
        *r = NULL;
        struct timespec pause = {0, CACHE_RESEND_PAUSE_MS * 1000000L};
        nanosleep(&pause, NULL);
    }
    return e;
}

/* Asks a peer for the block with OWNER_FETCH|NO_FORWARD; on ASK_OK *out holds a checked copy. */
static ask_result ask_peer(node_cache *c, const block_req *b, const node_cluster_member *m, uint64_t mv,
                           cache_buf **out)
{
    node_peer_msg req = {.type = NODE_PEER_GET, .membership_version = mv, .flags = NODE_PEER_F_ALL};
    memcpy(req.block.id, b->id, NODE_PEER_BLOCK_ID_LEN);
    req.block.bucket = shoal_cursor_from_str(b->bucket);
    req.block.key = shoal_cursor_from_str(b->key);
    req.block.etag = shoal_cursor_from_str(b->etag);
    req.block.index = b->index;
    req.block.offset = b->offset;
    req.block.length = b->length;
    char tmp[96];
    node_peer_response *r = NULL;
    shoal_err e = peer_request(c, m->link, &req, &r);
    const node_peer_msg *rep = e == SHOAL_OK ? node_peer_response_msg(r) : NULL;
    ask_result res = ASK_NEXT;
    if (rep == NULL) {
        if (e == SHOAL_ERR_TIMEOUT) {
            node_stats_add(&c->cfg.stats->peer_timeouts, 1);
            penalize(c, m->meta.id);
        } else {
            node_stats_add(&c->cfg.stats->peer_errors, 1);
        }
        LOG_INFO("cache", "peer_failed", "peer=%s error=%s index=%llu", shoal_log_q(tmp, sizeof tmp, m->meta.id),
                 shoal_error_name(e), (unsigned long long)b->index);
        goto done;
    }
    if (rep->status == NODE_PEER_CHANGED || rep->status == NODE_PEER_NOT_FOUND) {
        shoal_error_set(rep->status == NODE_PEER_CHANGED ? SHOAL_ERR_S3_CHANGED : SHOAL_ERR_S3_NO_SUCH_KEY,
                        "block %llu of s3://%s/%s at %s: owner %s answered %s", (unsigned long long)b->index,
                        b->bucket, b->key, b->etag, m->meta.id, node_peer_status_name(rep->status));
        res = ASK_FINAL;
        goto done;
    }
    if (rep->status != NODE_PEER_OK) {
        node_stats_add(&c->cfg.stats->peer_errors, 1);
        goto done;
    }
    size_t len = 0;
    const uint8_t *data = node_peer_response_payload(r, &len);
    if (len != b->length || XXH3_64bits(data, len) != rep->checksum) {
        node_stats_add(&c->cfg.stats->peer_errors, 1);
        LOG_WARN("cache", "peer_bad_block", "peer=%s index=%llu len=%zu want=%llu",
                 shoal_log_q(tmp, sizeof tmp, m->meta.id), (unsigned long long)b->index, len,
                 (unsigned long long)b->length);
        goto done;
    }
    cache_buf *buf = buf_new(len);
    if (buf == NULL)
        goto done;
    memcpy(buf->data, data, len);
    *out = buf;
    res = ASK_OK;
done:
    if (r)
        node_peer_response_delete(r);
    return res;
}

/* A copy of a stored block of class `want` (either class when want_owned is false); NULL when the
 * store does not hold it so. */
static cache_buf *store_copy(node_cache *c, const block_req *b, bool want_owned)
{
    size_t len = 0;
    node_store_class cls;
    if (!node_store_contains(c->cfg.store, b->id, &len, &cls) || (want_owned && cls != NODE_STORE_OWNED))
        return NULL;
    cache_buf *buf = buf_new(len);
    if (buf && node_store_get(c->cfg.store, b->id, buf->data, buf->len, &len) == 0 && len == buf->len)
        return buf;
    buf_unref(buf);
    return NULL;
}

/* The leader's work: the store again, then owners / S3 as the mode says. On success *out holds
 * the block (one reference) and *src where it came from. */
static int lead_fetch(node_cache *c, const block_req *b, fetch_mode mode, flight *f, cache_buf **out,
                      node_cache_source *src)
{
    /* A near copy does not satisfy a preload: the block's owner must hold it. */
    if ((*out = store_copy(c, b, mode == FETCH_WARM)) != NULL) {
        *src = NODE_CACHE_LOCAL;
        return 0;
    }
    if (mode == FETCH_SERVE)
        goto s3_owned;

    node_cluster *cl = atomic_load(&c->cluster);
    if (cl != NULL) {
        node_cluster_view *v = node_cluster_view_get(cl);
        const node_cluster_member *owners[DHT_REPLICAS_MAX];
        int r = c->cfg.replicas ? (int)c->cfg.replicas : 1;
        if (r > DHT_REPLICAS_MAX)
            r = DHT_REPLICAS_MAX;
        int n = node_cluster_owners(v, b->did, r, owners);
        uint64_t mv = node_cluster_view_version(v);
        for (int i = 0; i < n; i++) {
            if (owners[i]->is_self) {
                node_cluster_view_put(v);
                goto s3_owned;
            }
            if (owners[i]->link < 0 || penalized(c, owners[i]->meta.id))
                continue;
            cache_buf *buf = NULL;
            ask_result ar = ask_peer(c, b, owners[i], mv, &buf);
            if (ar == ASK_OK) {
                node_cluster_view_put(v);
                if (mode == FETCH_READ)
                    store_put(c, b, buf, NODE_STORE_NEAR);
                *out = buf;
                *src = NODE_CACHE_PEER;
                return 0;
            }
            if (ar == ASK_FINAL) {
                node_cluster_view_put(v);
                return -1;
            }
        }
        node_cluster_view_put(v);
        if (n > 0)
            LOG_INFO("cache", "owners_failed", "index=%llu owners=%d fallback=s3", (unsigned long long)b->index, n);
    }
    if (mode == FETCH_WARM)
        return shoal_error_set(SHOAL_ERR_NODE_PEER, "block %llu of s3://%s/%s: no owner could fetch it",
                               (unsigned long long)b->index, b->bucket, b->key);
    /* No owner answered (or none serves): read S3 directly and keep the block near. */
    *out = fetch_s3(c, b, f);
    if (*out == NULL)
        return -1;
    store_put(c, b, *out, NODE_STORE_NEAR);
    *src = NODE_CACHE_S3;
    return 0;

s3_owned:
    /* This node owns the block; a near copy of it (kept before placement made this node an owner)
     * becomes owned without a fetch. */
    if (mode == FETCH_WARM && (*out = store_copy(c, b, false)) != NULL) {
        store_put(c, b, *out, NODE_STORE_OWNED);
        *src = NODE_CACHE_LOCAL;
        return 0;
    }
    *out = fetch_s3(c, b, f);
    if (*out == NULL)
        return -1;
    store_put(c, b, *out, NODE_STORE_OWNED);
    *src = NODE_CACHE_S3;
    return 0;
}

static size_t flight_bucket(const uint8_t id[NODE_STORE_ID_LEN])
{
    uint64_t h;
    memcpy(&h, id, sizeof h);
    return (size_t)(h % CACHE_FLIGHT_BUCKETS);
}

static flight **flight_find(node_cache *c, const uint8_t id[NODE_STORE_ID_LEN])
{
    flight **pp = &c->flights[flight_bucket(id)];
    while (*pp && memcmp((*pp)->id, id, NODE_STORE_ID_LEN) != 0)
        pp = &(*pp)->next;
    return pp;
}

static bool flight_active(node_cache *c, const uint8_t id[NODE_STORE_ID_LEN])
{
    pthread_mutex_lock(&c->fl_mu);
    bool found = *flight_find(c, id) != NULL;
    pthread_mutex_unlock(&c->fl_mu);
    return found;
}

/* Drops a reference to a flight; the last one frees it. Called with fl_mu held. */
static void flight_unref(flight *f)
{
    SHOAL_ASSERT(f->refs > 0);
    if (--f->refs == 0) {
        pthread_cond_destroy(&f->cv);
        buf_unref(f->buf);
        buf_unref(f->partial);
        free(f);
    }
}

/* A block through the single-flight table: leads the fetch or waits for the one in progress.
 * On success *out holds one reference; *src is where the block came from; *coalesced says
 * whether this call waited on another thread's fetch. */
static int fetch_block(node_cache *c, const block_req *b, fetch_mode mode, cache_buf **out, node_cache_source *src,
                       bool *coalesced)
{
    *coalesced = false;
    pthread_mutex_lock(&c->fl_mu);
    flight *f;
    while ((f = *flight_find(c, b->id)) != NULL) {
        f->refs++;
        *coalesced = true;
        while (!f->done)
            pthread_cond_wait(&f->cv, &c->fl_mu);
        /* A preload's fetch gives up where a read goes on to S3: a reader that waited on a failed
         * preload fetch leads a fetch of its own. */
        if (f->err != SHOAL_OK && f->mode == FETCH_WARM && mode != FETCH_WARM) {
            flight_unref(f);
            continue;
        }
        int rc = 0;
        if (f->err == SHOAL_OK) {
            *out = buf_ref(f->buf);
            *src = f->source;
        } else {
            rc = shoal_error_set(f->err, "%s", f->msg);
        }
        flight_unref(f);
        pthread_mutex_unlock(&c->fl_mu);
        return rc;
    }
    f = calloc(1, sizeof *f);
    if (f == NULL) {
        pthread_mutex_unlock(&c->fl_mu);
        return shoal_error_set(SHOAL_ERR_NOMEM, "block fetch");
    }
    memcpy(f->id, b->id, NODE_STORE_ID_LEN);
    f->refs = 1;
    f->mode = mode;
    pthread_cond_init(&f->cv, NULL);
    *flight_find(c, b->id) = f;
    pthread_cond_broadcast(&c->fl_cv); /* a streaming reader may wait for this flight to begin */
    pthread_mutex_unlock(&c->fl_mu);

    cache_buf *buf = NULL;
    int rc = lead_fetch(c, b, mode, f, &buf, src);

    pthread_mutex_lock(&c->fl_mu);
    f->done = true;
    if (rc == 0) {
        f->buf = buf_ref(buf);
        f->source = *src;
        *out = buf;
    } else {
        f->err = shoal_error_code() ? shoal_error_code() : SHOAL_ERR_NODE;
        snprintf(f->msg, sizeof f->msg, "%s", shoal_error_message());
    }
    *flight_find(c, b->id) = f->next;
    pthread_cond_broadcast(&f->cv);
    flight_unref(f);
    pthread_mutex_unlock(&c->fl_mu);
    return rc;
}

/* ---- read-ahead --------------------------------------------------------------------------------- */

typedef struct ra_task {
    char *bucket, *key, *etag;
    uint64_t size, index;
} ra_task;

static void ra_free(void *arg)
{
    ra_task *t = arg;
    free(t->bucket);
    free(t->key);
    free(t->etag);
    free(t);
}

static void ra_run(node_cache *c, void *arg)
{
    ra_task *t = arg;
    node_cache_object obj = {t->bucket, t->key, t->etag, t->size};
    block_req b;
    cache_buf *buf = NULL;
    node_cache_source src;
    bool coalesced;
    if (block_req_from_object(c, &obj, t->index, &b) == 0 &&
        !node_store_contains(c->cfg.store, b.id, NULL, NULL) && fetch_block(c, &b, FETCH_READ, &buf, &src, &coalesced) == 0) {
        node_stats_add(&c->cfg.stats->reads_readahead, 1);
        buf_unref(buf);
    }
    ra_free(t);
}

void node_cache_prefetch(node_cache *c, const node_cache_object *obj, uint64_t first, uint64_t count)
{
    uint64_t n = node_cache_block_count(c, obj->size);
    for (uint64_t i = first; i < n && i < first + count; i++) {
        block_req b;
        if (block_req_from_object(c, obj, i, &b) != 0)
            return;
        if (node_store_contains(c->cfg.store, b.id, NULL, NULL) || flight_active(c, b.id))
            continue;
        ra_task *t = calloc(1, sizeof *t);
        if (t == NULL)
            return;
        t->bucket = strdup(obj->bucket);
        t->key = strdup(obj->key);
        t->etag = strdup(obj->etag);
        t->size = obj->size;
        t->index = i;
        if (t->bucket == NULL || t->key == NULL || t->etag == NULL ||
            pool_submit(&c->readahead, ra_run, ra_free, t) != 0) {
            ra_free(t);
            return;
        }
    }
}

/* Remembers the last block each recent object was read at; true when `index` follows it. */
static bool seq_follows(node_cache *c, const node_cache_object *obj, uint64_t index)
{
    uint64_t h = XXH3_64bits(obj->key, strlen(obj->key)) ^ XXH3_64bits(obj->etag, strlen(obj->etag));
    seq_slot *s = &c->seq[h % CACHE_SEQ_SLOTS];
    pthread_mutex_lock(&c->seq_mu);
    bool follows = s->hash == h && s->last_index + 1 == index;
    s->hash = h;
    s->last_index = index;
    pthread_mutex_unlock(&c->seq_mu);
    return follows;
}

/* ---- reading ------------------------------------------------------------------------------------ */

int node_cache_read(node_cache *c, const node_cache_object *obj, uint64_t index, node_cache_block *out)
{
    memset(out, 0, sizeof *out);
    block_req b;
    if (block_req_from_object(c, obj, index, &b) != 0)
        return -1;
    memcpy(out->id, b.id, NODE_STORE_ID_LEN);
    if (seq_follows(c, obj, index))
        node_cache_prefetch(c, obj, index + 1,
                            c->cfg.readahead_blocks ? c->cfg.readahead_blocks : CACHE_READAHEAD_BLOCKS);
    if (node_store_map(c->cfg.store, b.id, &out->view) == 0) {
        if (out->view.len == b.length) {
            out->data = out->view.data;
            out->len = out->view.len;
            out->source = NODE_CACHE_LOCAL;
            count_source(c, NODE_CACHE_LOCAL);
            return 0;
        }
        node_store_view_release(&out->view);
    }
    cache_buf *buf = NULL;
    bool coalesced = false;
    if (fetch_block(c, &b, FETCH_READ, &buf, &out->source, &coalesced) != 0)
        return shoal_error_wrap("read block %llu of s3://%s/%s", (unsigned long long)index, obj->bucket, obj->key);
    if (coalesced)
        node_stats_add(&c->cfg.stats->reads_coalesced, 1);
    count_source(c, out->source);
    out->buf = buf;
    out->data = buf->data;
    out->len = buf->len;
    return 0;
}

ssize_t node_cache_read_stream(node_cache *c, const node_cache_object *obj, uint64_t index, uint64_t off, size_t len,
                               void *dst)
{
    block_req b;
    if (block_req_from_object(c, obj, index, &b) != 0)
        return -1;
    if (off >= b.length || len == 0 || node_store_contains(c->cfg.store, b.id, NULL, NULL))
        return 0;
    if (len > b.length - off)
        len = (size_t)(b.length - off);
    bool launched = false;
    uint64_t give_up = 0;
    cache_buf *from = NULL;
    pthread_mutex_lock(&c->fl_mu);
    for (;;) {
        flight *f = *flight_find(c, b.id);
        if (f != NULL) {
            f->refs++;
            while (!f->done && (f->partial == NULL || f->arrived < off + len))
                pthread_cond_wait(&f->cv, &c->fl_mu);
            if (f->partial != NULL && f->arrived >= off + len)
                from = buf_ref(f->partial);
            else if (f->done && f->err == SHOAL_OK)
                from = buf_ref(f->buf);
            flight_unref(f);
            break;
        }
        if (!launched) {
            /* Nobody fetches the block yet: a read-ahead worker leads the fetch, so this thread is
             * free to return the first bytes while the rest arrives. */
            pthread_mutex_unlock(&c->fl_mu);
            if (node_store_contains(c->cfg.store, b.id, NULL, NULL))
                return 0;
            node_cache_prefetch(c, obj, index, 1);
            launched = true;
            give_up = shoal_clock_mono_us() + CACHE_STREAM_START_MS * 1000u;
            pthread_mutex_lock(&c->fl_mu);
            continue;
        }
        uint64_t now = shoal_clock_mono_us();
        if (now >= give_up)
            break; /* the worker did not start (its queue was full): the caller reads the whole block */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        uint64_t ns = (uint64_t)until.tv_nsec + (give_up - now) * 1000u;
        until.tv_sec += (time_t)(ns / 1000000000u);
        until.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&c->fl_cv, &c->fl_mu, &until);
    }
    pthread_mutex_unlock(&c->fl_mu);
    if (from == NULL)
        return 0;
    memcpy(dst, from->data + off, len);
    buf_unref(from);
    return (ssize_t)len;
}

void node_cache_block_release(node_cache_block *b)
{
    if (b == NULL)
        return;
    node_store_view_release(&b->view);
    buf_unref(b->buf);
    memset(b, 0, sizeof *b);
}

int node_cache_warm(node_cache *c, const node_cache_object *obj, uint64_t index, node_cache_source *source)
{
    block_req b;
    if (block_req_from_object(c, obj, index, &b) != 0)
        return -1;
    node_cache_source src = NODE_CACHE_LOCAL;
    node_store_class cls;
    if (!node_store_contains(c->cfg.store, b.id, NULL, &cls) || cls != NODE_STORE_OWNED) {
        cache_buf *buf = NULL;
        bool coalesced;
        if (fetch_block(c, &b, FETCH_WARM, &buf, &src, &coalesced) != 0)
            return -1;
        buf_unref(buf);
    }
    if (source)
        *source = src;
    return 0;
}

/* ---- metadata ----------------------------------------------------------------------------------- */

static size_t meta_bucket(const char *bucket, const char *key)
{
    return (size_t)((XXH3_64bits(bucket, strlen(bucket)) * 31u ^ XXH3_64bits(key, strlen(key))) %
                    CACHE_META_BUCKETS);
}

static meta_entry **meta_find(node_cache *c, const char *bucket, const char *key)
{
    meta_entry **pp = &c->meta[meta_bucket(bucket, key)];
    while (*pp && (strcmp((*pp)->bucket, bucket) != 0 || strcmp((*pp)->key, key) != 0))
        pp = &(*pp)->next;
    return pp;
}

static void meta_free(meta_entry *e)
{
    free(e->bucket);
    free(e->key);
    free(e);
}

/* Keeps the table bounded: drops expired entries, and everything when that is not enough. Locked. */
static void meta_trim(node_cache *c, uint64_t now)
{
    SHOAL_ASSERT_LOCKED(&c->meta_mu);
    for (int pass = 0; pass < 2 && c->meta_count >= CACHE_META_MAX; pass++)
        for (size_t i = 0; i < CACHE_META_BUCKETS; i++)
            for (meta_entry **pp = &c->meta[i]; *pp;) {
                meta_entry *e = *pp;
                if (pass == 1 || e->expires_us <= now) {
                    *pp = e->next;
                    meta_free(e);
                    c->meta_count--;
                } else {
                    pp = &e->next;
                }
            }
}

static void meta_remember(node_cache *c, const char *bucket, const char *key, const s3_object_info *info, uint64_t ttl_s)
{
    uint64_t now = shoal_clock_mono_us();
    pthread_mutex_lock(&c->meta_mu);
    meta_entry **pp = meta_find(c, bucket, key);
    meta_entry *e = *pp;
    if (e == NULL) {
        meta_trim(c, now);
        e = calloc(1, sizeof *e);
        if (e == NULL || (e->bucket = strdup(bucket)) == NULL || (e->key = strdup(key)) == NULL) {
            if (e)
                meta_free(e);
            goto out;
        }
        e->next = c->meta[meta_bucket(bucket, key)];
        c->meta[meta_bucket(bucket, key)] = e;
        c->meta_count++;
    }
    e->negative = info == NULL;
    if (info)
        e->info = *info;
    e->expires_us = now + ttl_s * 1000000u;
out:
    pthread_mutex_unlock(&c->meta_mu);
}

void node_cache_forget(node_cache *c, const char *bucket, const char *key)
{
    pthread_mutex_lock(&c->meta_mu);
    meta_entry **pp = meta_find(c, bucket, key);
    if (*pp) {
        meta_entry *e = *pp;
        *pp = e->next;
        meta_free(e);
        c->meta_count--;
    }
    pthread_mutex_unlock(&c->meta_mu);
}

int node_cache_head(node_cache *c, const char *bucket, const char *key, s3_object_info *out)
{
    uint64_t now = shoal_clock_mono_us();
    pthread_mutex_lock(&c->meta_mu);
    meta_entry *e = *meta_find(c, bucket, key);
    if (e && e->expires_us > now) {
        bool negative = e->negative;
        if (!negative)
            *out = e->info;
        pthread_mutex_unlock(&c->meta_mu);
        if (negative)
            return shoal_error_set(SHOAL_ERR_S3_NO_SUCH_KEY, "s3://%s/%s: no such key (cached)", bucket, key);
        return 0;
    }
    pthread_mutex_unlock(&c->meta_mu);
    if (s3_head(c->cfg.s3, bucket, key, out) != 0) {
        if (shoal_error_code() == SHOAL_ERR_S3_NO_SUCH_KEY && c->cfg.negative_ttl_s > 0)
            meta_remember(c, bucket, key, NULL, c->cfg.negative_ttl_s);
        return -1;
    }
    if (c->cfg.metadata_ttl_s > 0)
        meta_remember(c, bucket, key, out, c->cfg.metadata_ttl_s);
    return 0;
}


/* ---- directory listings --------------------------------------------------------------------------- */

/* One listing page: what was asked (the whole request, so two pages never share an entry) and,
 * once fetched, its payload encoding (node_peer_list_encode), the one form kept: it is what a
 * peer is sent and what a local reader decodes. */
typedef struct list_entry {
    struct list_entry *next;
    uint64_t hash;
    shoal_buf ask;       /* the request's fields, length-prefixed */
    unsigned refs;       /* threads waiting on a fetch in progress */
    bool pending;        /* a fetch is in progress (single flight) */
    bool ok;             /* page holds an answer, good until expires_us */
    uint64_t expires_us;
    shoal_buf page;
    shoal_err err;       /* the last fetch's failure, for the threads that waited on it */
    char msg[256];
} list_entry;

static void list_entry_free(list_entry *e)
{
    shoal_buf_destroy(&e->ask);
    shoal_buf_destroy(&e->page);
    free(e);
}

/* Appends s with a 4-byte length, so no two requests share an encoding. */
static int ask_part(shoal_buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    uint8_t len[4] = {(uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
    return shoal_buf_append(b, len, 4) | shoal_buf_append(b, s ? s : "", n);
}

static int list_ask(const s3_list_args *a, shoal_buf *out)
{
    char mk[24];
    snprintf(mk, sizeof mk, "%u", a->max_keys);
    if ((ask_part(out, a->bucket) | ask_part(out, a->prefix) | ask_part(out, a->delimiter) |
         ask_part(out, a->continuation_token) | ask_part(out, a->start_after) | ask_part(out, mk)) != 0)
        return shoal_error_set(SHOAL_ERR_NOMEM, "listing request");
    return 0;
}

/* The placement id of a listing: every page of (bucket, prefix, delimiter) has one owner. The
 * "list:" tag and the delimiter in the ETag slot (an S3 ETag is a quoted string, never "dl:...")
 * keep it apart from every block id. */
static dht_id list_owner_id(const s3_list_args *a)
{
    char key[NODE_PEER_MAX_KEY + 8], tag[NODE_PEER_MAX_DELIMITER + 8];
    snprintf(key, sizeof key, "list:%s", a->prefix ? a->prefix : "");
    snprintf(tag, sizeof tag, "dl:%s", a->delimiter ? a->delimiter : "");
    return dht_block_id(a->bucket, key, tag, 0);
}

/* Encodes an S3 page as the payload form. */
static int page_encode(const s3_list_page *pg, shoal_buf *out)
{
    node_peer_list_page p = {.truncated = pg->truncated};
    size_t n = pg->n_objects + pg->n_prefixes, k = 0;
    p.entries = calloc(n ? n : 1, sizeof *p.entries);
    if (p.entries == NULL)
        return shoal_error_set(SHOAL_ERR_NOMEM, "listing of %zu entries", n);
    for (size_t i = 0; i < pg->n_objects; i++) {
        const s3_list_object *o = &pg->objects[i];
        p.entries[k++] = (node_peer_list_entry){.key = shoal_cursor_from_mem(o->key, o->key_len),
                                                .etag = shoal_cursor_from_str(o->etag),
                                                .size = o->size,
                                                .mtime = o->last_modified};
    }
    for (size_t i = 0; i < pg->n_prefixes; i++)
        p.entries[k++] = (node_peer_list_entry){.is_prefix = true, .key = shoal_cursor_from_str(pg->prefixes[i])};
    p.n_entries = k;
    if (pg->truncated && pg->next_token)
        p.next_token = shoal_cursor_from_str(pg->next_token);
    int rc = node_peer_list_encode(&p, out);
    free(p.entries);
    return rc;
}

/* Fills an empty S3 page from the payload form (already checked when it was stored). */
static int page_decode(const shoal_buf *bytes, s3_list_page *out)
{
    node_peer_list_page p;
    if (node_peer_list_decode(shoal_cursor_from_buf(bytes), &p) != 0)
        return -1;
    size_t n_obj = 0, n_pre = 0;
    for (size_t i = 0; i < p.n_entries; i++)
        p.entries[i].is_prefix ? n_pre++ : n_obj++;
    out->objects = calloc(n_obj ? n_obj : 1, sizeof *out->objects);
    out->prefixes = calloc(n_pre ? n_pre : 1, sizeof *out->prefixes);
    if (out->objects == NULL || out->prefixes == NULL)
        goto nomem;
    for (size_t i = 0; i < p.n_entries; i++) {
        const node_peer_list_entry *e = &p.entries[i];
        char *key = malloc(e->key.len + 1);
        if (key == NULL)
            goto nomem;
        memcpy(key, e->key.ptr, e->key.len);
        key[e->key.len] = '\0';
        if (e->is_prefix) {
            out->prefixes[out->n_prefixes++] = key;
            continue;
        }
        s3_list_object *o = &out->objects[out->n_objects++];
        o->key = key;
        o->key_len = e->key.len;
        o->size = e->size;
        o->last_modified = e->mtime;
        snprintf(o->etag, sizeof o->etag, "%.*s", (int)e->etag.len, (const char *)e->etag.ptr);
    }
    out->truncated = p.truncated;
    if (p.next_token.len > 0 && (out->next_token = shoal_cursor_strdup(p.next_token)) == NULL)
        goto nomem;
    node_peer_list_page_destroy(&p);
    return 0;
nomem:
    node_peer_list_page_destroy(&p);
    s3_list_page_destroy(out);
    return shoal_error_set(SHOAL_ERR_NOMEM, "listing page");
}

/* One page from S3 itself, in payload form. */
static int list_from_s3(node_cache *c, const s3_list_args *a, shoal_buf *out)
{
    s3_list_page pg;
    s3_list_page_create(&pg);
    int rc = s3_list(c->cfg.s3, a, &pg) == 0 ? page_encode(&pg, out) : -1;
    s3_list_page_destroy(&pg);
    return rc;
}

/* Asks owner m for the page; 0 with the checked payload appended to out. */
static int list_from_peer(node_cache *c, const s3_list_args *a, const node_cluster_member *m, uint64_t mv,
                          shoal_buf *out)
{
    node_peer_msg req = {.type = NODE_PEER_LIST, .membership_version = mv, .flags = 0};
    req.list = (node_peer_list_req){
        .bucket = shoal_cursor_from_str(a->bucket),
        .prefix = shoal_cursor_from_str(a->prefix ? a->prefix : ""),
        .delimiter = shoal_cursor_from_str(a->delimiter ? a->delimiter : ""),
        .token = shoal_cursor_from_str(a->continuation_token ? a->continuation_token : ""),
        .start_after = shoal_cursor_from_str(a->start_after ? a->start_after : ""),
        .max_keys = a->max_keys,
    };
    node_peer_response *r = NULL;
    char tmp[96];
    int rc = -1;
    shoal_err e = peer_request(c, m->link, &req, &r);
    const node_peer_msg *rep = e == SHOAL_OK ? node_peer_response_msg(r) : NULL;
    if (rep == NULL || rep->status != NODE_PEER_OK) {
        if (e == SHOAL_ERR_TIMEOUT) {
            node_stats_add(&c->cfg.stats->peer_timeouts, 1);
            penalize(c, m->meta.id);
        } else {
            node_stats_add(&c->cfg.stats->peer_errors, 1);
        }
        LOG_INFO("cache", "peer_list_failed", "peer=%s error=%s status=%s", shoal_log_q(tmp, sizeof tmp, m->meta.id),
                 shoal_error_name(e), rep ? node_peer_status_name(rep->status) : "-");
        goto done;
    }
    size_t len = 0;
    const uint8_t *data = node_peer_response_payload(r, &len);
    node_peer_list_page check;
    if (node_peer_list_decode(shoal_cursor_from_mem(data, len), &check) != 0) {
        node_stats_add(&c->cfg.stats->peer_errors, 1);
        LOG_WARN("cache", "peer_bad_list", "peer=%s error=\"%s\"", shoal_log_q(tmp, sizeof tmp, m->meta.id),
                 shoal_error_message());
        goto done;
    }
    node_peer_list_page_destroy(&check);
    if (shoal_buf_append(out, data, len) != 0) {
        shoal_error_set(SHOAL_ERR_NOMEM, "listing page of %zu bytes", len);
        goto done;
    }
    rc = 0;
done:
    node_peer_response_delete(r);
    return rc;
}

/* The page from its owners in read order (this node among them lists S3 itself), then from S3
 * directly when none answered. Serving a peer (serve) never asks another node. */
static int list_fetch(node_cache *c, const s3_list_args *a, bool serve, shoal_buf *out)
{
    node_cluster *cl = atomic_load(&c->cluster);
    if (serve || cl == NULL)
        return list_from_s3(c, a, out);
    node_cluster_view *v = node_cluster_view_get(cl);
    const node_cluster_member *owners[DHT_REPLICAS_MAX];
    int r = c->cfg.replicas ? (int)c->cfg.replicas : 1;
    int n = node_cluster_owners(v, list_owner_id(a), r > DHT_REPLICAS_MAX ? DHT_REPLICAS_MAX : r, owners);
    uint64_t mv = node_cluster_view_version(v);
    int rc = -1;
    bool asked_s3 = false;
    for (int i = 0; i < n && rc != 0; i++) {
        if (owners[i]->is_self) {
            rc = list_from_s3(c, a, out);
            asked_s3 = true;
        } else if (owners[i]->link >= 0 && !penalized(c, owners[i]->meta.id)) {
            rc = list_from_peer(c, a, owners[i], mv, out);
        }
    }
    node_cluster_view_put(v);
    if (rc != 0 && !asked_s3) {
        if (n > 0)
            LOG_INFO("cache", "list_owners_failed", "owners=%d fallback=s3", n);
        rc = list_from_s3(c, a, out);
    }
    return rc;
}

static list_entry **list_find(node_cache *c, uint64_t hash, const shoal_buf *ask)
{
    list_entry **pp = &c->lists[hash % CACHE_LIST_BUCKETS];
    while (*pp && ((*pp)->hash != hash || (*pp)->ask.len != ask->len || memcmp((*pp)->ask.data, ask->data, ask->len)))
        pp = &(*pp)->next;
    return pp;
}

/* Keeps the table bounded in entries and bytes: drops expired idle entries, then every idle one.
 * Locked. */
static void list_trim(node_cache *c, uint64_t now)
{
    SHOAL_ASSERT_LOCKED(&c->list_mu);
    for (int pass = 0; pass < 2 && (c->list_count >= CACHE_LIST_MAX || c->list_bytes > CACHE_LIST_BYTES); pass++)
        for (size_t i = 0; i < CACHE_LIST_BUCKETS; i++)
            for (list_entry **pp = &c->lists[i]; *pp;) {
                list_entry *e = *pp;
                if (!e->pending && e->refs == 0 && (pass == 1 || e->expires_us <= now)) {
                    *pp = e->next;
                    c->list_bytes -= e->page.len;
                    list_entry_free(e);
                    c->list_count--;
                } else {
                    pp = &e->next;
                }
            }
}

/* The page's payload form appended to out: from the table while fresh, else fetched once however
 * many threads ask at the same moment (the others wait for that fetch and share its outcome). */
static int list_page_bytes(node_cache *c, const s3_list_args *a, bool serve, shoal_buf *out)
{
    shoal_buf ask = {0};
    if (list_ask(a, &ask) != 0)
        return -1;
    uint64_t hash = XXH3_64bits(ask.data, ask.len);
    int rc = -1;
    pthread_mutex_lock(&c->list_mu);
    uint64_t now = shoal_clock_mono_us();
    list_entry *e = *list_find(c, hash, &ask);
    if (e && e->pending) {
        e->refs++;
        while (e->pending)
            pthread_cond_wait(&c->list_cv, &c->list_mu);
        e->refs--;
        if (e->ok)
            rc = shoal_buf_append(out, e->page.data, e->page.len) == 0 ? 0
                                                                        : shoal_error_set(SHOAL_ERR_NOMEM, "listing");
        else
            shoal_error_set(e->err, "%s", e->msg);
        pthread_mutex_unlock(&c->list_mu);
        goto done;
    }
    if (e && e->ok && e->expires_us > now) {
        rc = shoal_buf_append(out, e->page.data, e->page.len) == 0 ? 0 : shoal_error_set(SHOAL_ERR_NOMEM, "listing");
        pthread_mutex_unlock(&c->list_mu);
        goto done;
    }
    if (e == NULL) {
        list_trim(c, now);
        e = calloc(1, sizeof *e);
        if (e == NULL) {
            pthread_mutex_unlock(&c->list_mu);
            shoal_error_set(SHOAL_ERR_NOMEM, "listing");
            goto done;
        }
        e->hash = hash;
        e->ask = ask;
        ask = (shoal_buf){0};
        e->next = c->lists[hash % CACHE_LIST_BUCKETS];
        c->lists[hash % CACHE_LIST_BUCKETS] = e;
        c->list_count++;
    }
    e->pending = true;
    e->ok = false;
    pthread_mutex_unlock(&c->list_mu);

    shoal_buf page = {0};
    rc = list_fetch(c, a, serve, &page);

    pthread_mutex_lock(&c->list_mu);
    c->list_bytes += page.len;
    c->list_bytes -= e->page.len;
    shoal_buf_destroy(&e->page);
    e->page = page;
    e->ok = rc == 0;
    e->expires_us = shoal_clock_mono_us() + (uint64_t)c->cfg.metadata_ttl_s * 1000000u;
    e->err = rc == 0 ? SHOAL_OK : shoal_error_code();
    snprintf(e->msg, sizeof e->msg, "%s", rc == 0 ? "" : shoal_error_message());
    e->pending = false;
    if (rc == 0 && shoal_buf_append(out, page.data, page.len) != 0)
        rc = shoal_error_set(SHOAL_ERR_NOMEM, "listing");
    pthread_cond_broadcast(&c->list_cv);
    pthread_mutex_unlock(&c->list_mu);
done:
    shoal_buf_destroy(&ask);
    return rc;
}

int node_cache_list(node_cache *c, const s3_list_args *a, s3_list_page *out)
{
    shoal_buf bytes = {0};
    if (a->bucket == NULL || a->bucket[0] == '\0')
        return shoal_error_set(SHOAL_ERR_INVAL, "list: no bucket");
    int rc = list_page_bytes(c, a, false, &bytes) == 0 ? page_decode(&bytes, out) : -1;
    shoal_buf_destroy(&bytes);
    if (rc != 0)
        shoal_error_wrap("list s3://%s/%s", a->bucket, a->prefix ? a->prefix : "");
    return rc;
}

/* ---- serving peers ------------------------------------------------------------------------------ */

static void serve_reply(node_peer_incoming *in, node_peer_status st, node_peer_payload payload, uint64_t ck)
{
    node_peer_msg rep = {.type = NODE_PEER_GET_REPLY, .status = st, .checksum = ck};
    if (node_peer_reply(in, &rep, payload) != 0 && shoal_error_code() != SHOAL_ERR_CLOSED)
        LOG_WARN("cache", "reply_failed", "error=%s", shoal_error_name(shoal_error_code()));
}

static node_peer_status status_of(shoal_err e)
{
    switch (e) {
    case SHOAL_ERR_S3_CHANGED: return NODE_PEER_CHANGED;
    case SHOAL_ERR_S3_NO_SUCH_KEY:
    case SHOAL_ERR_S3_RANGE: return NODE_PEER_NOT_FOUND;
    default: return NODE_PEER_ERROR;
    }
}

/* Strings of a request, NUL-terminated copies (the header's strings are not). */
typedef struct serve_strings {
    char bucket[NODE_PEER_MAX_BUCKET + 1];
    char key[NODE_PEER_MAX_KEY + 1];
    char etag[NODE_PEER_MAX_ETAG + 1];
} serve_strings;

static bool copy_cursor(char *dst, size_t cap, shoal_cursor cur)
{
    if (cur.len >= cap || memchr(cur.ptr, '\0', cur.len) != NULL)
        return false;
    memcpy(dst, cur.ptr, cur.len);
    dst[cur.len] = '\0';
    return true;
}

static void serve_run(node_cache *c, void *arg)
{
    node_peer_incoming *in = arg;
    const node_peer_msg *m = node_peer_incoming_msg(in);
    serve_strings *s = malloc(sizeof *s);
    block_req b;
    if (s == NULL || !copy_cursor(s->bucket, sizeof s->bucket, m->block.bucket) ||
        !copy_cursor(s->key, sizeof s->key, m->block.key) || !copy_cursor(s->etag, sizeof s->etag, m->block.etag))
        goto error;
    block_req_init(&b, s->bucket, s->key, s->etag, m->block.index, m->block.offset, m->block.length);
    /* The id must be the one its coordinates give, and the range the block's own: a request that
     * lies about either would store bytes under the wrong name. */
    if (memcmp(b.id, m->block.id, NODE_STORE_ID_LEN) != 0 || b.length == 0 || b.length > c->cfg.block_size ||
        b.offset != b.index * c->cfg.block_size) {
        char tmp[96];
        LOG_WARN("cache", "peer_bad_request", "key=%s index=%llu len=%llu", shoal_log_q(tmp, sizeof tmp, s->key),
                 (unsigned long long)b.index, (unsigned long long)b.length);
        goto error;
    }
    node_store_view *view = calloc(1, sizeof *view);
    if (view && node_store_map(c->cfg.store, b.id, view) == 0 && view->len == b.length) {
        uint64_t ck = XXH3_64bits(view->data, view->len);
        serve_reply(in, NODE_PEER_OK, (node_peer_payload){view->data, view->len, payload_free_view, view}, ck);
        free(s);
        return;
    }
    if (view) {
        node_store_view_release(view);
        free(view);
    }
    if (!(m->flags & NODE_PEER_F_OWNER_FETCH))
        goto error;
    cache_buf *buf = NULL;
    node_cache_source src;
    bool coalesced;
    if (fetch_block(c, &b, FETCH_SERVE, &buf, &src, &coalesced) != 0) {
        node_peer_status st = status_of(shoal_error_code());
        LOG_INFO("cache", "serve_failed", "index=%llu status=%s error=%s", (unsigned long long)b.index,
                 node_peer_status_name(st), shoal_error_name(shoal_error_code()));
        serve_reply(in, st, (node_peer_payload){0}, 0);
        free(s);
        return;
    }
    uint64_t ck = XXH3_64bits(buf->data, buf->len);
    serve_reply(in, NODE_PEER_OK, (node_peer_payload){buf->data, buf->len, payload_free_buf, buf}, ck);
    free(s);
    return;
error:
    free(s);
    serve_reply(in, NODE_PEER_ERROR, (node_peer_payload){0}, 0);
}

static void serve_drop(void *arg) { serve_reply(arg, NODE_PEER_ERROR, (node_peer_payload){0}, 0); }

/* A LIST from a peer that takes this node for the listing's owner: served from the table while
 * fresh, else listed at S3 once (shared with local listers), never passed on. */
static void list_serve_run(node_cache *c, void *arg)
{
    node_peer_incoming *in = arg;
    const node_peer_msg *m = node_peer_incoming_msg(in);
    char bucket[NODE_PEER_MAX_BUCKET + 1], prefix[NODE_PEER_MAX_KEY + 1], delim[NODE_PEER_MAX_DELIMITER + 1],
        token[NODE_PEER_MAX_KEY + 1], after[NODE_PEER_MAX_KEY + 1];
    node_peer_msg rep = {.type = NODE_PEER_LIST_REPLY, .status = NODE_PEER_ERROR};
    shoal_buf page = {0};
    if (copy_cursor(bucket, sizeof bucket, m->list.bucket) && copy_cursor(prefix, sizeof prefix, m->list.prefix) &&
        copy_cursor(delim, sizeof delim, m->list.delimiter) && copy_cursor(token, sizeof token, m->list.token) &&
        copy_cursor(after, sizeof after, m->list.start_after)) {
        s3_list_args a = {.bucket = bucket, .prefix = prefix, .delimiter = delim[0] ? delim : NULL,
                          .continuation_token = token[0] ? token : NULL, .start_after = after[0] ? after : NULL,
                          .max_keys = (unsigned)m->list.max_keys};
        if (list_page_bytes(c, &a, true, &page) == 0)
            rep.status = NODE_PEER_OK;
        else
            rep.status = status_of(shoal_error_code());
    }
    size_t len = 0;
    uint8_t *data = rep.status == NODE_PEER_OK ? shoal_buf_steal(&page, &len) : NULL;
    node_peer_payload payload = {data, data ? len : 0, data ? payload_free_heap : NULL, NULL};
    if (node_peer_reply(in, &rep, payload) != 0 && shoal_error_code() != SHOAL_ERR_CLOSED)
        LOG_WARN("cache", "reply_failed", "error=%s", shoal_error_name(shoal_error_code()));
    shoal_buf_destroy(&page);
}

static void list_serve_drop(void *arg)
{
    node_peer_msg rep = {.type = NODE_PEER_LIST_REPLY, .status = NODE_PEER_ERROR};
    node_peer_reply(arg, &rep, (node_peer_payload){0});
}

void node_cache_on_list(void *ud, node_peer_incoming *in)
{
    node_cache *c = ud;
    if (pool_submit(&c->serve, list_serve_run, list_serve_drop, in) != 0) {
        node_peer_msg rep = {.type = NODE_PEER_LIST_REPLY, .status = NODE_PEER_BUSY};
        node_peer_reply(in, &rep, (node_peer_payload){0});
    }
}

void node_cache_on_get_block(void *ud, node_peer_incoming *in)
{
    node_cache *c = ud;
    if (pool_submit(&c->serve, serve_run, serve_drop, in) != 0)
        serve_reply(in, NODE_PEER_BUSY, (node_peer_payload){0}, 0);
}

/* ---- written blocks: PUT to their owners ------------------------------------------------------- */

static void put_reply(node_peer_incoming *in, node_peer_status st)
{
    node_peer_msg rep = {.type = NODE_PEER_PUT_REPLY, .status = st};
    if (node_peer_reply(in, &rep, (node_peer_payload){0}) != 0 && shoal_error_code() != SHOAL_ERR_CLOSED)
        LOG_WARN("cache", "reply_failed", "error=%s", shoal_error_name(shoal_error_code()));
}

/* Whether this node is one of the owners of `did` in its current view. */
static bool owned_by_self(node_cache *c, dht_id did)
{
    node_cluster *cl = atomic_load(&c->cluster);
    if (cl == NULL)
        return false;
    node_cluster_view *v = node_cluster_view_get(cl);
    const node_cluster_member *owners[DHT_REPLICAS_MAX];
    int r = c->cfg.replicas ? (int)c->cfg.replicas : 1;
    int n = node_cluster_owners(v, did, r > DHT_REPLICAS_MAX ? DHT_REPLICAS_MAX : r, owners);
    bool mine = false;
    for (int i = 0; i < n && !mine; i++)
        mine = owners[i]->is_self;
    node_cluster_view_put(v);
    return mine;
}

static void put_run(node_cache *c, void *arg)
{
    node_peer_incoming *in = arg;
    const node_peer_msg *m = node_peer_incoming_msg(in);
    size_t len = 0;
    const uint8_t *data = node_peer_incoming_payload(in, &len);
    serve_strings *s = malloc(sizeof *s);
    const char *why = "bad_strings";
    block_req b;
    char tmp[96];
    if (s == NULL || !copy_cursor(s->bucket, sizeof s->bucket, m->block.bucket) ||
        !copy_cursor(s->key, sizeof s->key, m->block.key) || !copy_cursor(s->etag, sizeof s->etag, m->block.etag))
        goto refuse;
    block_req_init(&b, s->bucket, s->key, s->etag, m->block.index, m->block.offset, m->block.length);
    /* As for a GET: the id must be the one its coordinates give and the range the block's own, and
     * the bytes must be the ones the sender checksummed, or they would be kept under a wrong name. */
    why = "bad_block";
    if (memcmp(b.id, m->block.id, NODE_STORE_ID_LEN) != 0 || b.length == 0 || b.length > c->cfg.block_size ||
        b.offset != b.index * c->cfg.block_size || len != b.length)
        goto refuse;
    why = "bad_checksum";
    if (XXH3_64bits(data, len) != m->checksum)
        goto refuse;
    why = "not_owner";
    if (!owned_by_self(c, b.did))
        goto refuse;
    why = "store_failed";
    if (node_store_put(c->cfg.store, b.id, data, len, NODE_STORE_OWNED) != 0)
        goto refuse;
    free(s);
    put_reply(in, NODE_PEER_OK);
    return;
refuse:
    node_stats_add(&c->cfg.stats->peer_puts_refused, 1);
    LOG_INFO("cache", "put_refused", "reason=%s key=%s index=%llu len=%zu", why,
             s ? shoal_log_q(tmp, sizeof tmp, s->key) : "-", (unsigned long long)m->block.index, len);
    free(s);
    put_reply(in, NODE_PEER_ERROR);
}

static void put_drop(void *arg) { put_reply(arg, NODE_PEER_ERROR); }

void node_cache_on_put_block(void *ud, node_peer_incoming *in)
{
    node_cache *c = ud;
    if (pool_submit(&c->serve, put_run, put_drop, in) != 0)
        put_reply(in, NODE_PEER_BUSY);
}

/* The outcome of one PUT (on the transport's I/O thread: count, log, never block). */
static void push_done(void *ud, node_peer_response *r)
{
    node_cache *c = ud;
    const node_peer_msg *rep = node_peer_response_result(r) == SHOAL_OK ? node_peer_response_msg(r) : NULL;
    if (rep != NULL && rep->status == NODE_PEER_OK) {
        node_stats_add(&c->cfg.stats->peer_pushes, 1);
    } else {
        node_stats_add(&c->cfg.stats->peer_push_failures, 1);
        LOG_INFO("cache", "push_failed", "status=%s error=%s", rep ? node_peer_status_name(rep->status) : "-",
                 shoal_error_name(node_peer_response_result(r)));
    }
    node_peer_response_delete(r);
}

unsigned node_cache_push(node_cache *c, const node_cache_object *obj, uint64_t index, const void *data, size_t len)
{
    node_cluster *cl = atomic_load(&c->cluster);
    block_req b;
    if (cl == NULL || block_req_from_object(c, obj, index, &b) != 0 || b.length != len)
        return 0;
    node_peer_msg req = {.type = NODE_PEER_PUT, .checksum = XXH3_64bits(data, len), .has_object_size = true,
                         .object_size = obj->size};
    memcpy(req.block.id, b.id, NODE_PEER_BLOCK_ID_LEN);
    req.block.bucket = shoal_cursor_from_str(b.bucket);
    req.block.key = shoal_cursor_from_str(b.key);
    req.block.etag = shoal_cursor_from_str(b.etag);
    req.block.index = b.index;
    req.block.offset = b.offset;
    req.block.length = b.length;
    node_cluster_view *v = node_cluster_view_get(cl);
    req.membership_version = node_cluster_view_version(v);
    const node_cluster_member *owners[DHT_REPLICAS_MAX];
    int r = c->cfg.replicas ? (int)c->cfg.replicas : 1;
    int n = node_cluster_owners(v, b.did, r > DHT_REPLICAS_MAX ? DHT_REPLICAS_MAX : r, owners);
    uint32_t timeout = c->cfg.peer_timeout_ms ? c->cfg.peer_timeout_ms : CACHE_PEER_TIMEOUT_MS;
    unsigned sent = 0;
    for (int i = 0; i < n; i++) {
        if (owners[i]->is_self || owners[i]->link < 0)
            continue;
        /* The transport copies the bytes (free_fn NULL): the caller's buffer is reused at once. A
         * link with queue_per_peer requests in flight refuses more (NOSPACE): the writer waits for
         * room, up to the peer timeout, so a large file's blocks go out at the pace the owner takes
         * them rather than piling up in memory. */
        uint64_t give_up = shoal_clock_mono_us() + (uint64_t)timeout * 1000u;
        int rc;
        node_stats_add(&c->cfg.stats->peer_pushes_started, 1);
        while ((rc = node_peer_submit(c->cfg.peer, owners[i]->link, &req, (node_peer_payload){data, len, NULL, NULL},
                                      timeout, push_done, c)) != 0 &&
               shoal_error_code() == SHOAL_ERR_NOSPACE && shoal_clock_mono_us() < give_up) {
            struct timespec pause = {0, CACHE_RESEND_PAUSE_MS * 1000000L};
            nanosleep(&pause, NULL);
        }
        if (rc == 0) {
            sent++;
        } else {
            node_stats_add(&c->cfg.stats->peer_push_failures, 1);
            LOG_INFO("cache", "push_failed", "status=- error=%s", shoal_error_name(shoal_error_code()));
        }
    }
    node_cluster_view_put(v);
    return sent;
}

/* ---- lifecycle ---------------------------------------------------------------------------------- */

node_cache *node_cache_new(const node_cache_config *cfg)
{
    if (cfg->store == NULL || cfg->s3 == NULL || cfg->peer == NULL || cfg->stats == NULL || cfg->block_size == 0) {
        shoal_error_set(SHOAL_ERR_INVAL, "node_cache_new: store, S3 client, peer, stats and block size are required");
        return NULL;
    }
    node_cache *c = calloc(1, sizeof *c);
    if (c == NULL) {
        shoal_error_set(SHOAL_ERR_NOMEM, "node_cache_new");
        return NULL;
    }
    c->cfg = *cfg;
    pthread_mutex_init(&c->fl_mu, NULL);
    pthread_cond_init(&c->fl_cv, NULL);
    pthread_mutex_init(&c->meta_mu, NULL);
    pthread_mutex_init(&c->seq_mu, NULL);
    pthread_mutex_init(&c->list_mu, NULL);
    pthread_cond_init(&c->list_cv, NULL);
    if (pool_start(&c->serve, c, cfg->serve_threads ? cfg->serve_threads : CACHE_SERVE_THREADS, CACHE_POOL_QUEUE) != 0 ||
        pool_start(&c->readahead, c, cfg->readahead_threads ? cfg->readahead_threads : CACHE_READAHEAD_THREADS,
                   CACHE_POOL_QUEUE) != 0)
        goto fail;
    return c;
fail:
    node_cache_delete(c);
    return NULL;
}

void node_cache_set_cluster(node_cache *c, node_cluster *cluster) { atomic_store(&c->cluster, cluster); }

void node_cache_stop(node_cache *c)
{
    if (c == NULL)
        return;
    pool_stop(&c->readahead);
    pool_stop(&c->serve);
}

void node_cache_delete(node_cache *c)
{
    if (c == NULL)
        return;
    pool_destroy(&c->readahead);
    pool_destroy(&c->serve);
    for (size_t i = 0; i < CACHE_META_BUCKETS; i++)
        while (c->meta[i]) {
            meta_entry *e = c->meta[i];
            c->meta[i] = e->next;
            meta_free(e);
        }
    for (size_t i = 0; i < CACHE_LIST_BUCKETS; i++)
        while (c->lists[i]) {
            struct list_entry *e = c->lists[i];
            c->lists[i] = e->next;
            list_entry_free(e);
        }
    pthread_mutex_destroy(&c->list_mu);
    pthread_cond_destroy(&c->list_cv);
    pthread_mutex_destroy(&c->fl_mu);
    pthread_cond_destroy(&c->fl_cv);
    pthread_mutex_destroy(&c->meta_mu);
    pthread_mutex_destroy(&c->seq_mu);
    free(c);
}
