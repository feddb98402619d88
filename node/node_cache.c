/*
 * node_cache: the read path. See node_cache.h for the route a block takes; the machinery is
 * spread over four files: this one (buffers, worker pools, reading, read-ahead, life cycle),
 * node_cache_fetch.c (single flight, owners, S3, streaming), node_cache_meta.c (object metadata
 * and directory listings) and node_cache_serve.c (answering peers, pushing written blocks).
 *
 * Buffers. A fetched block lives in a reference-counted buffer shared by the leader, the waiters
 * and peer replies (handed to ZeroMQ with a free function that drops a reference), so a block is
 * never copied on its way to a waiter or a peer. Those buffers come from a budget (see "Block
 * buffers" below), which bounds the memory of fetches. A block already in the store is mapped
 * (node_store_map) and sent or written from the mapping, or, for node_cache_read_lazy, opened
 * (node_store_open_lazy) and read into the reader's buffer.
 *
 * Threads. Peer GETs arrive on the transport's I/O thread, which must not block, so they go to the
 * serve pool. Serving never forwards a request, so a serve worker waits only for S3, for a fetch in
 * its own node, or for a hand-off holder's store. Requests answered from the store alone (hand-off
 * GETs, PUTs) have a pool of their own, `local`, whose workers wait on nothing remote: if they
 * shared the serve pool, two owners asking each other for hand-offs could fill both pools with
 * requests waiting on each other. Read-ahead has a pool of its own for the same reason: two nodes
 * reading ahead from each other could otherwise fill both serve pools.
 */
#include "node_cache_internal.h"

#include "shoal_thread.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

/* ---- reference-counted block buffers ------------------------------------------------------- */

/* Block buffers come from a budget of the cache's own (cache_bufs): buffers of BUF_POOL_MIN
 * bytes and more are mapped in power-of-two sizes, and every byte mapped counts against a budget
 * of node_cache_config.buffer_blocks (--fetch-buffers) such buffers of the block size, whether a
 * buffer is in use or kept free for the next fetch. A freed buffer is kept (a fresh 4 MiB mapping
 * costs a page fault and a zeroed page per 4 KiB, a tenth of a cold read's CPU once), so the budget
 * is both the most these buffers ever take and what they keep after a burst. Nothing maps past it.
 *
 * Two uses share the budget. A buffer is taken either for a block somebody waits for (CACHE_BUF_NEED:
 * a reader's own block, a block a peer asked this node for, a preload, a hand-off, a random read's
 * held copy, a written block pushed, a drain) or for read-ahead nobody waits for yet
 * (CACHE_BUF_AHEAD). Read-ahead may hold at most the budget less a reserve of
 * cache_buf_reserve(B) blocks (a quarter of B, at least one); the rest is there for the blocks
 * that are needed, as a kernel mempool keeps a reserve for forward progress. A fetch that finds no
 * room waits for a buffer to come back, and counts in cache.buffer_waits (read-ahead's waits for
 * its share also in cache.readahead_waits). No wait has a timeout, and none needs one:
 *
 *   - What holds a buffer is a fetch in progress (its S3 GET, its store read or write; a peer's
 *     answer is copied into a buffer only once it arrived, so no buffer is held while waiting on
 *     another node), a reader copying from it, or the transport sending it to a peer (it comes back
 *     when the peer takes it or its link closes). None of them waits for another buffer.
 *   - A needed fetch that waits finds the read-ahead's share in use and at least the rest held by
 *     other needed fetches, which end without waiting on read-ahead; once they are done, read-ahead
 *     holds at most its share and the reserve is free. So a peer's block is never starved by this
 *     node's read-ahead on a slow S3, and a serving fetch never waits on a read-ahead that waits on
 *     the asking peer (a read-ahead holds no buffer while it asks a peer).
 *   - Read-ahead waits only for buffers that come back as above.
 *
 * The use is the buffer's from its taking to its last reference, so read-ahead a reader joined
 * still counts in the read-ahead's share (and a reader that joins a read-ahead still waiting for
 * its share waits with it, for read-ahead in flight, which ends on its own). A caller holds one
 * large buffer at a time: a `get` keeps a fetched block's buffer only for the block it sends next
 * (node_cache_block_in_buffer), else blocks waiting their turn could hold all of them. Buffers are mapped rather than malloc'd so that what is
 * given back leaves the process at once, and no allocator arena keeps it. Smaller buffers (blocks
 * of small objects) are plain malloc and not counted: their size is that of the objects, not of
 * the block. */
#define BUF_POOL_MIN (256u << 10)
#define BUF_POOL_CLASSES 13 /* 256 KiB .. 1 GiB */

struct cache_bufs {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a buffer came back */
    size_t budget; /* bytes mapped at most (in use and kept) */
    size_t ahead_budget; /* bytes read-ahead buffers may hold at most (the budget less the reserve) */
    size_t mapped; /* bytes mapped now */
    size_t ahead; /* bytes of read-ahead buffers in use now */
    bool closed; /* the cache is gone: buffers coming back are unmapped */
    unsigned refs; /* the cache's, and one per buffer mapped */
    node_stats *stats;
    cache_buf *kept[BUF_POOL_CLASSES];
};

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

/* A mapped buffer is laid out as the start of the block's file: the store's header (scratch),
 * then the cap bytes of data, so that the store writes the block with O_DIRECT straight from it
 * (node_store_put_framed); the cache_buf record follows the data. The record used to come first,
 * which left the data unaligned for that write and cost a copy of every block stored. */
static size_t buf_map_len(size_t cap)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (NODE_STORE_HEADER_LEN + cap + sizeof(cache_buf) + page - 1) / page * page;
}

/* The mapping that holds a buffer from the budget. */
static void *buf_map(cache_buf *b) { return cache_buf_frame(b); }

size_t node_cache_buffer_cost(uint64_t len)
{
    size_t cap;
    return len >= BUF_POOL_MIN && len <= SIZE_MAX / 2 && buf_class((size_t)len, &cap) >= 0 ? buf_map_len(cap) : 0;
}

unsigned cache_buf_reserve(unsigned blocks) { return blocks / 4 > 1 ? blocks / 4 : 1; }

cache_bufs *cache_bufs_new(unsigned blocks, size_t block_cost, node_stats *stats)
{
    cache_bufs *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    unsigned reserve = cache_buf_reserve(blocks);
    p->budget = (size_t)blocks * block_cost;
    p->ahead_budget = blocks > reserve ? (size_t)(blocks - reserve) * block_cost : 0;
    p->refs = 1;
    p->stats = stats;
    atomic_store_explicit(&stats->buffer_budget_bytes, p->budget, memory_order_relaxed);
    return p;
}

/* Drops a reference with p->mu held (it is released); the last one frees the budget. */
static void bufs_unref_locked(cache_bufs *p)
{
    bool last = --p->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (last) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free(p);
    }
}

void cache_bufs_release(cache_bufs *p)
{
    if (p == NULL)
        return;
    cache_buf *drop = NULL;
    pthread_mutex_lock(&p->mu);
    p->closed = true;
    for (int i = 0; i < BUF_POOL_CLASSES; i++) {
        while (p->kept[i] != NULL) {
            cache_buf *b = p->kept[i];
            p->kept[i] = b->next_free;
            b->next_free = drop;
            drop = b;
        }
    }
    while (drop != NULL) {
        cache_buf *b = drop;
        drop = b->next_free;
        p->mapped -= buf_map_len(b->cap);
        p->refs--;
        munmap(buf_map(b), buf_map_len(b->cap));
    }
    bufs_unref_locked(p);
}

size_t node_cache_buffer_budget(const node_cache *c) { return c->bufs->budget; }

size_t node_cache_buffer_mapped(node_cache *c)
{
    cache_bufs *p = c->bufs;
    pthread_mutex_lock(&p->mu);
    size_t n = p->mapped;
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* A buffer of class cls (cap bytes) for `use` from the budget: a kept one, or a new mapping,
 * after waiting for room when there is none (unless !wait: then NULL). NULL with NOMEM when mmap
 * fails. */
static cache_buf *bufs_take(cache_bufs *p, int cls, size_t cap, cache_buf_use use, bool wait)
{
    size_t len = buf_map_len(cap);
    bool ahead = use == CACHE_BUF_AHEAD;
    cache_buf *b = NULL, *unmap = NULL;
    bool waited = false, none = false;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        /* Read-ahead takes nothing past its share, kept buffers included. A budget smaller than
         * one buffer (a block larger than the budget's blocks, never with the daemon's sizes)
         * still lets one fetch go at a time. */
        bool share = !ahead || p->ahead + len <= p->ahead_budget || p->ahead == 0;
        if (share && (b = p->kept[cls]) != NULL) {
            p->kept[cls] = b->next_free;
            break;
        }
        if (share && (p->mapped + len <= p->budget || p->mapped == 0))
            break;
        /* Kept buffers of other sizes make room first. */
        int other = -1;
        for (int i = 0; i < BUF_POOL_CLASSES && other < 0 && share; i++)
            if (p->kept[i] != NULL)
                other = i;
        if (other >= 0) {
            cache_buf *v = p->kept[other];
            p->kept[other] = v->next_free;
            p->mapped -= buf_map_len(v->cap);
            p->refs--;
            v->next_free = unmap;
            unmap = v;
            continue;
        }
        if (!wait) {
            none = true;
            break;
        }
        if (!waited) {
            waited = true;
            node_stats_add(&p->stats->buffer_waits, 1);
            if (!share)
                node_stats_add(&p->stats->buffer_readahead_waits, 1);
        }
        pthread_cond_wait(&p->cv, &p->mu);
    }
    if (none) {
        pthread_mutex_unlock(&p->mu); /* no room now, and the caller does not wait */
        while (unmap != NULL) {
            cache_buf *v = unmap;
            unmap = v->next_free;
            munmap(buf_map(v), buf_map_len(v->cap));
        }
        return NULL;
    }
    bool fresh = b == NULL;
    if (fresh) {
        p->mapped += len;
        p->refs++;
        if (p->mapped > atomic_load_explicit(&p->stats->buffer_peak_bytes, memory_order_relaxed))
            atomic_store_explicit(&p->stats->buffer_peak_bytes, p->mapped, memory_order_relaxed);
    }
    if (ahead)
        p->ahead += len;
    pthread_mutex_unlock(&p->mu);
    while (unmap != NULL) {
        cache_buf *v = unmap;
        unmap = v->next_free;
        munmap(buf_map(v), buf_map_len(v->cap));
    }
    if (fresh) {
        void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            pthread_mutex_lock(&p->mu);
            p->mapped -= len;
            if (ahead)
                p->ahead -= len;
            pthread_cond_broadcast(&p->cv);
            bufs_unref_locked(p);
            return NULL;
        }
        /* The record after the data; cap is a power of two, so it is aligned for it. */
        b = (cache_buf *)((uint8_t *)m + NODE_STORE_HEADER_LEN + cap);
        b->data = (uint8_t *)m + NODE_STORE_HEADER_LEN;
        b->cap = cap;
    }
    b->pool = p;
    b->ahead = ahead;
    return b;
}

static cache_buf *buf_new(node_cache *c, size_t len, cache_buf_use use, bool wait)
{
    size_t cap = len ? len : 1;
    int cls = len >= BUF_POOL_MIN ? buf_class(len, &cap) : -1;
    cache_buf *b = cls >= 0 ? bufs_take(c->bufs, cls, cap, use, wait) : malloc(sizeof *b + NODE_STORE_HEADER_LEN + cap);
    if (b == NULL) {
        if (wait)
            shoal_error_set(SHOAL_ERR_NOMEM, "block buffer of %zu bytes", len);
        return NULL;
    }
    if (cls < 0) {
        b->pool = NULL;
        b->ahead = false;
        b->data = (uint8_t *)(b + 1) + NODE_STORE_HEADER_LEN;
    }
    atomic_init(&b->refs, 1);
    b->len = len;
    b->cap = cap;
    b->next_free = NULL;
    b->sum = NULL;
    return b;
}

cache_buf *cache_buf_new(node_cache *c, size_t len, cache_buf_use use) { return buf_new(c, len, use, true); }

cache_buf *cache_buf_try(node_cache *c, size_t len, cache_buf_use use) { return buf_new(c, len, use, false); }

cache_buf *cache_buf_ref(cache_buf *b)
{
    atomic_fetch_add(&b->refs, 1);
    return b;
}

void cache_buf_unref(cache_buf *b)
{
    if (b == NULL || atomic_fetch_sub(&b->refs, 1) != 1)
        return;
    node_store_sum_free(b->sum);
    b->sum = NULL;
    cache_bufs *p = b->pool;
    if (p == NULL) {
        free(b);
        return;
    }
    size_t cap, len = buf_map_len(b->cap);
    int cls = buf_class(b->cap, &cap);
    pthread_mutex_lock(&p->mu);
    if (b->ahead)
        p->ahead -= len;
    /* Waiters of both uses may wait on one buffer: wake them all, the one it fits takes it. */
    pthread_cond_broadcast(&p->cv);
    if (!p->closed && cls >= 0) {
        b->next_free = p->kept[cls];
        p->kept[cls] = b;
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->mapped -= len; /* the cache is gone: the buffer goes back to the system */
    bufs_unref_locked(p);
    munmap(buf_map(b), len);
}

/* node_peer_payload free functions: the transport calls them once ZeroMQ has sent the bytes. */
void cache_payload_free_buf(void *data, void *hint) { cache_buf_unref(hint); }

void cache_payload_free_heap(void *data, void *hint) { free(data); }

void cache_payload_free_view(void *data, void *hint)
{
    node_store_view_release(hint);
    free(hint);
}
/* ---- worker pools ----------------------------------------------------------------------------- */


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
        if (shoal_thread_start(&p->threads[p->n_threads], "cache-pool", pool_main, p) != 0)
            return -1;
    return 0;
}

/* Queues a task at the back, or at the front when `first`; -1 when the queue is full or the pool
 * stops (the caller keeps `arg`). */
static int pool_submit(pool *p, pool_fn fn, pool_drop_fn drop, void *arg, bool first)
{
    int rc = -1;
    pthread_mutex_lock(&p->mu);
    if (!p->stopping && p->count < p->cap) {
        if (first)
            p->head = (p->head + p->cap - 1) % p->cap;
        p->ring[first ? p->head : (p->head + p->count) % p->cap] = (pool_task){fn, drop, arg};
        p->count++;
        pthread_cond_signal(&p->cv);
        rc = 0;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int cache_pool_submit(pool *p, pool_fn fn, pool_drop_fn drop, void *arg)
{
    return pool_submit(p, fn, drop, arg, false);
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

dht_id cache_id_did(const uint8_t id[NODE_STORE_ID_LEN])
{
    dht_id d = {0, 0};
    for (int i = 0; i < 8; i++) {
        d.hi = d.hi << 8 | id[i];
        d.lo = d.lo << 8 | id[8 + i];
    }
    return d;
}

void cache_block_req_init(block_req *b, const char *bucket, const char *key, const char *etag, uint64_t index,
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
    dht_id_bytes(b->did, b->id);
    b->use = CACHE_BUF_NEED;
}

int cache_block_req_from_object(const node_cache *c, const node_cache_object *obj, uint64_t index, block_req *b)
{
    uint64_t n = node_cache_block_count(c, obj->size);
    if (index >= n)
        return shoal_error_set(SHOAL_ERR_INVAL, "block %llu of s3://%s/%s: the object has %llu blocks",
                               (unsigned long long)index, obj->bucket, obj->key, (unsigned long long)n);
    uint64_t off = index * c->cfg.block_size;
    uint64_t len = obj->size - off < c->cfg.block_size ? obj->size - off : c->cfg.block_size;
    cache_block_req_init(b, obj->bucket, obj->key, obj->etag, index, off, len);
    b->object_size = obj->size;
    return 0;
}

void cache_block_msg(node_peer_msg *m, const block_req *b)
{
    memcpy(m->block.id, b->id, NODE_PEER_BLOCK_ID_LEN);
    m->block.bucket = shoal_cursor_from_str(b->bucket);
    m->block.key = shoal_cursor_from_str(b->key);
    m->block.etag = shoal_cursor_from_str(b->etag);
    m->block.index = b->index;
    m->block.offset = b->offset;
    m->block.length = b->length;
}

uint64_t node_cache_block_count(const node_cache *c, uint64_t size)
{
    return (size + c->cfg.block_size - 1) / c->cfg.block_size;
}

void cache_count_read(node_cache *c, node_cache_source s, uint64_t started_us)
{
    node_stats *st = c->cfg.stats;
    uint64_t us = shoal_clock_mono_us() - started_us;
    switch (s) {
    case NODE_CACHE_LOCAL:
        node_stats_add(&st->reads_local, 1);
        shoal_hist_observe(&st->first_byte[NODE_STATS_SRC_LOCAL], us);
        break;
    case NODE_CACHE_PEER:
        node_stats_add(&st->reads_peer, 1);
        shoal_hist_observe(&st->first_byte[NODE_STATS_SRC_PEER], us);
        break;
    case NODE_CACHE_S3:
        node_stats_add(&st->reads_s3, 1);
        shoal_hist_observe(&st->first_byte[NODE_STATS_SRC_S3], us);
        break;
    }
}
/* ---- read-ahead --------------------------------------------------------------------------------- */

/* A block to fetch ahead; from its submission to its end (run or dropped) it counts in the
 * reads.readahead_pending gauge. A sequential reader asks for the same window past its block at
 * every read (4 times per 4 MiB block with 1 MiB reads), so a block queued and not begun yet is in the table c->ra_queued, and asking for it again queues nothing; a block being
 * fetched (a flight) or stored is skipped too. A task that finds its block's fetch already begun
 * ends at once rather than waiting on it: the read-ahead workers are the fetches in flight for
 * every reader, and one that waited on another's fetch would leave a block unfetched. */
typedef struct ra_task {
    struct ra_task *next; /* in c->ra_queued while queued */
    struct ra_task *next_batch; /* in cache_prefetch's list of tasks to submit */
    node_cache *c;
    bool queued; /* linked in c->ra_queued (seq_mu) */
    uint8_t id[NODE_STORE_ID_LEN];
    char *bucket, *key, *etag;
    uint64_t size, index;
    bool urgent; /* a reader waits on it (node_cache_read_stream): its buffer is a needed one */
    node_stats *stats; /* NULL until submitted */
} ra_task;

static ra_task **ra_slot(node_cache *c, const uint8_t id[NODE_STORE_ID_LEN])
{
    uint64_t h;
    memcpy(&h, id, sizeof h);
    return &c->ra_queued[h % CACHE_RA_BUCKETS];
}

/* Takes t out of the table of queued blocks, if it is there. */
static void ra_unqueue(ra_task *t)
{
    node_cache *c = t->c;
    pthread_mutex_lock(&c->seq_mu);
    if (t->queued) {
        ra_task **pp = ra_slot(c, t->id);
        while (*pp != t)
            pp = &(*pp)->next;
        *pp = t->next;
        t->queued = false;
    }
    pthread_mutex_unlock(&c->seq_mu);
}

/* Puts t in the table unless a task for its block is there; false when one is. */
static bool ra_enqueue(ra_task *t)
{
    node_cache *c = t->c;
    pthread_mutex_lock(&c->seq_mu);
    ra_task **pp = ra_slot(c, t->id);
    ra_task *q = *pp;
    while (q != NULL && memcmp(q->id, t->id, NODE_STORE_ID_LEN) != 0)
        q = q->next;
    if (q == NULL) {
        t->next = *pp;
        *pp = t;
        t->queued = true;
    }
    pthread_mutex_unlock(&c->seq_mu);
    return q == NULL;
}

bool cache_ra_take(node_cache *c, const uint8_t id[NODE_STORE_ID_LEN])
{
    pthread_mutex_lock(&c->seq_mu);
    ra_task **pp = ra_slot(c, id);
    while (*pp != NULL && memcmp((*pp)->id, id, NODE_STORE_ID_LEN) != 0)
        pp = &(*pp)->next;
    ra_task *t = *pp;
    if (t != NULL) {
        *pp = t->next;
        t->queued = false;
    }
    pthread_mutex_unlock(&c->seq_mu);
    return t != NULL;
}

/* Whether block `id` is queued for read-ahead and not begun. */
static bool ra_is_queued(node_cache *c, const uint8_t id[NODE_STORE_ID_LEN])
{
    pthread_mutex_lock(&c->seq_mu);
    ra_task *q = *ra_slot(c, id);
    while (q != NULL && memcmp(q->id, id, NODE_STORE_ID_LEN) != 0)
        q = q->next;
    pthread_mutex_unlock(&c->seq_mu);
    return q != NULL;
}

static void ra_free(void *arg)
{
    ra_task *t = arg;
    ra_unqueue(t);
    if (t->stats != NULL)
        node_stats_add(&t->stats->reads_readahead_pending, (uint64_t)-1);
    free(t->bucket);
    free(t->key);
    free(t->etag);
    free(t);
}

static void ra_run(node_cache *c, void *arg)
{
    ra_task *t = arg;
    ra_unqueue(t); /* from now on the flight, or the store, stands for the block */
    node_cache_object obj = {t->bucket, t->key, t->etag, t->size, false};
    block_req b;
    cache_buf *buf = NULL;
    node_cache_source src;
    bool coalesced;
    bool ok = cache_block_req_from_object(c, &obj, t->index, &b) == 0;
    b.use = t->urgent ? CACHE_BUF_NEED : CACHE_BUF_AHEAD;
    if (ok && !node_store_contains(c->cfg.store, b.id, NULL, NULL) && !cache_flight_active(c, b.id) &&
        cache_fetch_block(c, &b, FETCH_READ, &buf, &src, &coalesced) == 0) {
        node_stats_add(&c->cfg.stats->reads_readahead, 1);
        cache_buf_unref(buf);
    }
    /* A streaming reader waiting for this fetch to begin learns that it ended (or never began:
     * the block was stored meanwhile) without waiting out its bound. */
    pthread_mutex_lock(&c->fl_mu);
    c->ra_ended++;
    pthread_cond_broadcast(&c->fl_cv);
    pthread_mutex_unlock(&c->fl_mu);
    ra_free(t);
}

/* Whether block i of obj is neither stored, nor being fetched, nor queued: read-ahead would fetch it. */
static bool ra_missing(node_cache *c, const node_cache_object *obj, uint64_t i)
{
    block_req b;
    return cache_block_req_from_object(c, obj, i, &b) == 0 && !node_store_contains(c->cfg.store, b.id, NULL, NULL) &&
           !cache_flight_active(c, b.id) && !ra_is_queued(c, b.id);
}

/*
 * Read-ahead is asked for in runs. A sequential reader asks for the same window past its block at
 * every read, and each time the window's far end has moved by about one block; queued one by one,
 * those blocks would each be begun alone by an idle worker, one S3 GET per block. So a window is
 * filled again only once half of it (or its nearest block) is missing, as the kernel's readahead
 * starts its next batch only when the reader reaches the mark of the last one: then the missing
 * blocks are all put in the table of queued blocks, and each run's worth of them (run_bytes) goes to
 * the pool as one task, whose worker begins the first block, finds the next ones still queued and
 * fetches them with one GET (see "Runs" in node_cache_fetch.c), then looks at each of the others
 * in turn (each taken into the run ends at once). A window of w blocks keeps between w/2 and w of
 * them ahead.
 */
static void ra_free_tasks(void *arg)
{
    for (ra_task *t = arg, *next; t != NULL; t = next) {
        next = t->next_batch;
        ra_free(t);
    }
}

/* The tasks after the one this read-ahead worker is running, of its batch (see cache_prefetch). */
static _Thread_local ra_task *ra_rest;

static void ra_run_tasks(node_cache *c, void *arg);

void cache_ra_release_rest(node_cache *c)
{
    /* The blocks still queued first, in order; those the run took after them (each ends at once
     * when its turn comes; never run here, where the caller may hold a block buffer). */
    ra_task *rest = ra_rest, *keep = NULL, **tail = &keep, *taken = NULL, **taken_tail = &taken;
    ra_rest = NULL;
    while (rest != NULL) {
        ra_task *t = rest;
        rest = t->next_batch;
        t->next_batch = NULL;
        pthread_mutex_lock(&c->seq_mu);
        bool queued = t->queued;
        pthread_mutex_unlock(&c->seq_mu);
        ra_task ***at = queued ? &tail : &taken_tail;
        **at = t;
        *at = &t->next_batch;
    }
    *tail = taken;
    if (keep != NULL && pool_submit(&c->readahead, ra_run_tasks, ra_free_tasks, keep, false) != 0)
        ra_free_tasks(keep);
}

/* A pool task: the read-ahead tasks chained from arg by next_batch. The first one leads its
 * block's fetch; once its run is formed (cache_ra_release_rest, called by the fetch, or here when
 * the block needed no GET), the blocks it did not take go back to the queue as a batch of their
 * own, for the next free worker: a run cut short (no buffer free) leaves them to other workers
 * rather than behind its GET. At the back: the front is for the blocks readers wait on. */
static void ra_run_tasks(node_cache *c, void *arg)
{
    ra_task *head = arg;
    ra_rest = head->next_batch;
    head->next_batch = NULL;
    ra_run(c, head);
    cache_ra_release_rest(c);
}

uint64_t cache_prefetch(node_cache *c, const node_cache_object *obj, uint64_t first, uint64_t count, bool urgent)
{
    uint64_t n = node_cache_block_count(c, obj->size), queued = 0;
    uint64_t end = first + count < n ? first + count : n;
    if (!urgent && first < end && !ra_missing(c, obj, first)) {
        uint64_t missing = 0;
        for (uint64_t i = first + 1; i < end; i++)
            missing += ra_missing(c, obj, i);
        if (missing * 2 < end - first)
            return 0;
    }
    ra_task *batch = NULL, **tail = &batch; /* queued in the table, submitted below in order */
    for (uint64_t i = first; i < end; i++) {
        block_req b;
        if (cache_block_req_from_object(c, obj, i, &b) != 0)
            break;
        if (node_store_contains(c->cfg.store, b.id, NULL, NULL) || cache_flight_active(c, b.id))
            continue;
        ra_task *t = calloc(1, sizeof *t);
        if (t == NULL)
            break;
        t->c = c;
        memcpy(t->id, b.id, NODE_STORE_ID_LEN);
        /* A reader's own block (urgent) goes first even when it is queued behind other
         * read-ahead already; that task then finds the block fetched or being fetched. */
        if (!urgent && !ra_enqueue(t)) {
            free(t);
            continue;
        }
        t->bucket = strdup(obj->bucket);
        t->key = strdup(obj->key);
        t->etag = strdup(obj->etag);
        t->size = obj->size;
        t->index = i;
        t->urgent = urgent;
        if (t->bucket == NULL || t->key == NULL || t->etag == NULL) {
            ra_free(t);
            break;
        }
        t->stats = c->cfg.stats;
        node_stats_add(&c->cfg.stats->reads_readahead_pending, 1);
        *tail = t;
        tail = &t->next_batch;
    }
    /* Each run's worth of blocks is one task, so the worker that begins its first block finds the
     * others still queued rather than begun by other workers at the same moment. */
    unsigned per_task = cache_run_blocks(c);
    while (batch != NULL) {
        ra_task *head = batch;
        unsigned k = 1;
        for (ra_task *t = head; k < per_task && t->next_batch != NULL; t = t->next_batch)
            k++;
        ra_task *last = head;
        for (unsigned i = 1; i < k; i++)
            last = last->next_batch;
        batch = last->next_batch;
        last->next_batch = NULL;
        if (pool_submit(&c->readahead, ra_run_tasks, ra_free_tasks, head, urgent) != 0) {
            ra_free_tasks(head);
            continue;
        }
        queued += k;
    }
    return queued;
}

void node_cache_prefetch(node_cache *c, const node_cache_object *obj, uint64_t first, uint64_t count)
{
    cache_prefetch(c, obj, first, count, false);
}

uint64_t node_cache_willneed(node_cache *c, const node_cache_object *obj, uint64_t first, uint64_t count)
{
    uint64_t stored = 0;
    for (uint64_t i = first; i < first + count && i < node_cache_block_count(c, obj->size); i++) {
        block_req b;
        if (cache_block_req_from_object(c, obj, i, &b) == 0 && node_store_willneed(c->cfg.store, b.id))
            stored++;
    }
    return stored;
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

/* How cache_read reads a block: mapped and verified whole, or opened with only the header checked
 * (lazy); from the store alone, or fetched on a miss. */
typedef enum read_how {
    READ_WHOLE, /* node_cache_read */
    READ_LAZY, /* node_cache_read_lazy */
    READ_STORED_LAZY, /* node_cache_read_stored: never fetches, never reads ahead */
} read_how;

static int cache_read(node_cache *c, const node_cache_object *obj, uint64_t index, node_cache_block *out, read_how how)
{
    bool lazy = how != READ_WHOLE, fetch = how != READ_STORED_LAZY;
    uint64_t started_us = shoal_clock_mono_us();
    memset(out, 0, sizeof *out);
    block_req b;
    if (cache_block_req_from_object(c, obj, index, &b) != 0)
        return -1;
    memcpy(out->id, b.id, NODE_STORE_ID_LEN);
    if (fetch && !obj->own_readahead && seq_follows(c, obj, index))
        node_cache_prefetch(c, obj, index + 1,
                            c->cfg.readahead_blocks ? c->cfg.readahead_blocks : CACHE_READAHEAD_BLOCKS);
    if ((lazy ? node_store_open_lazy : node_store_map)(c->cfg.store, b.id, &out->view) == 0) {
        if (out->view.len == b.length) {
            out->data = out->view.data;
            out->len = out->view.len;
            out->source = NODE_CACHE_LOCAL;
            cache_count_read(c, NODE_CACHE_LOCAL, started_us);
            return 0;
        }
        node_store_view_release(&out->view);
    }
    if (!fetch)
        return shoal_error_set(SHOAL_ERR_NOT_FOUND, "block %llu of s3://%s/%s is not stored here",
                               (unsigned long long)index, obj->bucket, obj->key);
    cache_buf *buf = NULL;
    bool coalesced = false;
    if (cache_fetch_block(c, &b, FETCH_READ, &buf, &out->source, &coalesced) != 0)
        return shoal_error_wrap("read block %llu of s3://%s/%s", (unsigned long long)index, obj->bucket, obj->key);
    if (coalesced)
        node_stats_add(&c->cfg.stats->reads_coalesced, 1);
    cache_count_read(c, out->source, started_us);
    out->buf = buf;
    out->data = buf->data;
    out->len = buf->len;
    return 0;
}

int node_cache_read(node_cache *c, const node_cache_object *obj, uint64_t index, node_cache_block *out)
{
    return cache_read(c, obj, index, out, READ_WHOLE);
}

int node_cache_read_lazy(node_cache *c, const node_cache_object *obj, uint64_t index, node_cache_block *out)
{
    return cache_read(c, obj, index, out, READ_LAZY);
}

int node_cache_read_stored(node_cache *c, const node_cache_object *obj, uint64_t index, node_cache_block *out)
{
    return cache_read(c, obj, index, out, READ_STORED_LAZY);
}

const uint8_t *node_cache_block_bytes(node_cache_block *b, size_t off, size_t len)
{
    if (b->view.open) {
        shoal_error_set(SHOAL_ERR_INVAL, "a block read lazily is read with node_cache_block_read");
        return NULL;
    }
    if (b->view.map != NULL) /* from the store: its chunks are checked on first use */
        return node_store_view_verify(&b->view, off, len) == 0 ? b->data + off : NULL;
    if (off > b->len || len > b->len - off) {
        shoal_error_set(SHOAL_ERR_RANGE, "bytes %zu..+%zu of a block of %zu", off, len, b->len);
        return NULL;
    }
    return b->data + off;
}

int node_cache_block_read(node_cache_block *b, size_t off, size_t len, void *dst)
{
    if (b->view.marks != NULL) /* from the store: its chunks are checked on first use */
        return node_store_view_read(&b->view, off, len, dst);
    if (off > b->len || len > b->len - off)
        return shoal_error_set(SHOAL_ERR_RANGE, "bytes %zu..+%zu of a block of %zu", off, len, b->len);
    memcpy(dst, b->data + off, len);
    return 0;
}

bool node_cache_block_in_buffer(const node_cache_block *b) { return b->buf != NULL; }

void node_cache_block_release(node_cache_block *b)
{
    if (b == NULL)
        return;
    node_store_view_release(&b->view);
    cache_buf_unref(b->buf);
    memset(b, 0, sizeof *b);
}

int node_cache_warm(node_cache *c, const node_cache_object *obj, uint64_t index, node_cache_source *source)
{
    block_req b;
    if (cache_block_req_from_object(c, obj, index, &b) != 0)
        return -1;
    node_cache_source src = NODE_CACHE_LOCAL;
    node_store_class cls;
    if (!node_store_contains(c->cfg.store, b.id, NULL, &cls) || cls != NODE_STORE_OWNED) {
        cache_buf *buf = NULL;
        bool coalesced;
        if (cache_fetch_block(c, &b, FETCH_WARM, &buf, &src, &coalesced) != 0)
            return -1;
        cache_buf_unref(buf);
    }
    if (source)
        *source = src;
    return 0;
}

/* ---- lifecycle ---------------------------------------------------------------------------------- */

node_cache *node_cache_new(const node_cache_config *cfg)
{
    bool s3_given = cfg->deps && cfg->deps->s3_get && cfg->deps->s3_head && cfg->deps->s3_list;
    if (cfg->store == NULL || (cfg->s3 == NULL && !s3_given) || cfg->peer == NULL || cfg->stats == NULL ||
        cfg->block_size == 0) {
        shoal_error_set(SHOAL_ERR_INVAL, "node_cache_new: store, S3 client, peer, stats and block size are required");
        return NULL;
    }
    node_cache *c = calloc(1, sizeof *c);
    if (c == NULL) {
        shoal_error_set(SHOAL_ERR_NOMEM, "node_cache_new");
        return NULL;
    }
    c->cfg = *cfg;
    node_cache_set_timeouts(c, cfg->metadata_ttl_s, cfg->negative_ttl_s, cfg->peer_timeout_ms);
    if (cfg->deps)
        c->deps = *cfg->deps;
    pthread_mutex_init(&c->fl_mu, NULL);
    pthread_cond_init(&c->fl_cv, NULL);
    pthread_mutex_init(&c->meta_mu, NULL);
    pthread_mutex_init(&c->seq_mu, NULL);
    pthread_mutex_init(&c->list_mu, NULL);
    pthread_cond_init(&c->list_cv, NULL);
    pthread_mutex_init(&c->work_mu, NULL);
    pthread_cond_init(&c->meta_cv, NULL);
    unsigned blocks = cfg->buffer_blocks;
    if (blocks == 0) {
        uint64_t fit = CACHE_BUF_BYTES / cfg->block_size;
        blocks = fit > CACHE_BUF_BLOCKS_MIN ? (unsigned)fit : CACHE_BUF_BLOCKS_MIN;
    }
    size_t cost = node_cache_buffer_cost(cfg->block_size);
    if ((c->bufs = cache_bufs_new(blocks, cost ? cost : BUF_POOL_MIN, cfg->stats)) == NULL) {
        shoal_error_set(SHOAL_ERR_NOMEM, "node_cache_new");
        goto fail;
    }
    if (pool_start(&c->serve, c, cfg->serve_threads ? cfg->serve_threads : CACHE_SERVE_THREADS, CACHE_POOL_QUEUE) != 0 ||
        pool_start(&c->readahead, c, cfg->readahead_threads ? cfg->readahead_threads : CACHE_READAHEAD_THREADS,
                   CACHE_POOL_QUEUE) != 0 ||
        pool_start(&c->local, c, CACHE_LOCAL_THREADS, CACHE_POOL_QUEUE) != 0)
        goto fail;
    return c;
fail:
    node_cache_delete(c);
    return NULL;
}

void node_cache_set_cluster(node_cache *c, node_cluster *cluster) { atomic_store(&c->cluster, cluster); }

void node_cache_set_timeouts(node_cache *c, uint32_t metadata_ttl_s, uint32_t negative_ttl_s, uint32_t peer_timeout_ms)
{
    atomic_store_explicit(&c->metadata_ttl_s, metadata_ttl_s, memory_order_relaxed);
    atomic_store_explicit(&c->negative_ttl_s, negative_ttl_s, memory_order_relaxed);
    atomic_store_explicit(&c->peer_timeout_ms, peer_timeout_ms, memory_order_relaxed);
}

/* ---- the dependency table ------------------------------------------------------------------------ */

int cache_s3_get(node_cache *c, const s3_get_args *a, uint64_t *got, s3_object_info *info)
{
    return c->deps.s3_get ? c->deps.s3_get(c->deps.ctx, a, got, info) : s3_get(c->cfg.s3, a, got, info);
}

int cache_s3_head(node_cache *c, const char *bucket, const char *key, s3_object_info *out)
{
    return c->deps.s3_head ? c->deps.s3_head(c->deps.ctx, bucket, key, out) : s3_head(c->cfg.s3, bucket, key, out);
}

int cache_s3_list(node_cache *c, const s3_list_args *a, s3_list_page *out)
{
    return c->deps.s3_list ? c->deps.s3_list(c->deps.ctx, a, out) : s3_list(c->cfg.s3, a, out);
}

int cache_owners(node_cache *c, dht_id did, int max, node_cache_owner *out, uint64_t *version)
{
    *version = 0;
    if (max > DHT_REPLICAS_MAX)
        max = DHT_REPLICAS_MAX;
    if (c->deps.owners)
        return c->deps.owners(c->deps.ctx, did, max, out, version);
    node_cluster *cl = atomic_load(&c->cluster);
    if (cl == NULL)
        return 0;
    node_cluster_view *v = node_cluster_view_get(cl);
    const node_cluster_member *m[DHT_REPLICAS_MAX];
    int n = node_cluster_owners(v, did, max, m);
    for (int i = 0; i < n; i++) {
        snprintf(out[i].id, sizeof out[i].id, "%s", m[i]->meta.id);
        out[i].link = m[i]->link;
        out[i].is_self = m[i]->is_self;
        memcpy(out[i].key, m[i]->meta.curve_public, sizeof out[i].key);
    }
    *version = node_cluster_view_version(v);
    node_cluster_view_put(v);
    return n < 0 ? 0 : n;
}

int cache_ask_order(node_cache *c, dht_id did, node_cache_owner *out, int *n_owners, uint64_t *version)
{
    int n = cache_owners(c, did, cache_replicas(c), out, version);
    node_cache_owner wide[DHT_REPLICAS_MAX];
    uint64_t wide_version;
    int w = cache_owners(c, did, cache_replicas(c) + CACHE_HANDOFF_EXTRA, wide, &wide_version);
    int k = n;
    for (int i = 0; i < w && k < DHT_REPLICAS_MAX; i++) {
        bool owner = false;
        for (int j = 0; j < n && !owner; j++)
            owner = strcmp(out[j].id, wide[i].id) == 0;
        if (!owner)
            out[k++] = wide[i];
    }
    *n_owners = n;
    return k;
}

void cache_count_standin(node_cache *c, bool standin, bool answered)
{
    if (!standin)
        return;
    node_stats_add(&c->cfg.stats->standin_asks, 1);
    if (answered)
        node_stats_add(&c->cfg.stats->standin_hits, 1);
}

int cache_replicas(const node_cache *c)
{
    int r = c->cfg.replicas ? (int)c->cfg.replicas : 1;
    return r > DHT_REPLICAS_MAX ? DHT_REPLICAS_MAX : r;
}

void node_cache_stop(node_cache *c)
{
    if (c == NULL)
        return;
    pool_stop(&c->readahead);
    pool_stop(&c->serve);
    pool_stop(&c->local);
}

void node_cache_delete(node_cache *c)
{
    if (c == NULL)
        return;
    pool_destroy(&c->readahead);
    pool_destroy(&c->serve);
    pool_destroy(&c->local);
    cache_meta_destroy(c);
    cache_bufs_release(c->bufs);
    pthread_mutex_destroy(&c->list_mu);
    pthread_cond_destroy(&c->list_cv);
    pthread_mutex_destroy(&c->fl_mu);
    pthread_cond_destroy(&c->fl_cv);
    pthread_mutex_destroy(&c->meta_mu);
    pthread_mutex_destroy(&c->seq_mu);
    pthread_mutex_destroy(&c->work_mu);
    pthread_cond_destroy(&c->meta_cv);
    free(c);
}

