/*
 * node_cache_fetch: how a block missing from the store is fetched, once.
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
 * Owners. The owners of a block come from the cluster snapshot in read order. Walking them in
 * order, this node fetches the block itself when it reaches itself (it is an owner: hand-off, then
 * S3) and otherwise asks the owner with OWNER_FETCH|NO_FORWARD; an owner that does not answer in
 * time, is busy or fails is skipped. CHANGED or NOT_FOUND from an owner ends the read: the owner
 * asked S3 with If-Match and S3 said the version is gone. A block from a peer is checked (length
 * and XXH3-64 of the payload, the "ck" field) before it is used and kept as a NEAR block so the
 * next local read of it stays local.
 *
 * Stand-ins. When no owner answered, the walk goes on over the block's stand-ins, the members
 * ranked after the owners within CACHE_HANDOFF_EXTRA ranks (cache_ask_order), in the same way: a
 * stand-in is asked exactly as an owner is, and this node, reaching itself, fetches as an owner
 * would. So the readers of a block whose owner died, in the seconds before gossip says so, all
 * come to one member (the one that owns the block once the dead one leaves the view), which
 * fetches the block once under its single flight; each going to S3 on its own would fetch it once
 * per reader. Only when no stand-in answered either does the reader go to S3 itself. A block
 * fetched as owner or stand-in is kept OWNED when this node ranks within replicas + 1 for it, else
 * NEAR (fetched_class).
 *
 * Streaming. A block fetched from S3 is filled through a sink that publishes, under the flight
 * table's mutex, how many of its first bytes arrived (the S3 client hands a sink no byte of another
 * version than If-Match names). node_cache_read_stream lets the mount's reader of a block nobody
 * holds have its range as soon as those bytes are in: a read-ahead worker leads the fetch, so the
 * reader returns while the rest arrives, and single flight still fetches the block once. The
 * reader's block is queued before the read-ahead already waiting, and the reader waits for a
 * worker to begin it (woken when a flight begins or a read-ahead task ends) rather than leading the
 * fetch itself: a leader in the reader's thread would have no byte before the whole block was in
 * and stored, and would hold one more block buffer. A block that comes from a peer arrives whole,
 * and its readers wait for it, as before.
 *
 * Runs. A reader's fetch (FETCH_READ: a read-ahead worker, or a reader leading its own block)
 * about to GET block N from S3 itself extends that GET to blocks N+1 .. N+k of the same version, up
 * to run_bytes (16 MiB by default), taking each next block only while all of these hold, and
 * stopping at the first that fails (run_extend):
 *   - somebody asked for it: it is queued for read-ahead and not begun (cache_ra_take takes it out
 *     of the queue; its task then finds the flight and ends). A random reader queues nothing, so
 *     it never has a byte fetched that it did not ask for;
 *   - this node would fetch it from S3 itself too, asking no other node first (fetches_itself: one
 *     node, or no other member of its owners, stand-ins and hand-off candidates reachable). In a
 *     cluster a block goes to its owner, or, at its owner, to a hand-off first, as before;
 *   - a block buffer is free for read-ahead at once (cache_buf_try: read-ahead's share of the
 *     budget, never the reserve, and no waiting: the run stops rather than wait);
 *   - its flight is claimed here (run_claim, under the flight table's mutex: a block with a flight
 *     is somebody else's fetch), and it is not stored (looked at after the claim, as a leader does).
 * The one GET streams into the blocks' buffers in turn (run_put). Each block, as soon as its last
 * byte is in, is checksummed and published, its flight done with it (its waiters wake; a reader
 * that comes later takes the block from the flight), and stored by a `local` worker, which then
 * removes the flight, so no reader of block N waits for N+k, and a reader always finds the flight
 * or the block. When the GET fails part-way (an S3 error, a body cut after the client's retries),
 * the complete blocks stay stored, and each unfinished block's flight fails with `redo`, so its
 * waiters lead a fetch of their own; the first block's readers get the error, as before. A retry
 * delivers the body again from its first byte: complete blocks are not written again (their bytes
 * are in readers' hands), an unfinished one starts its checksum again. Bytes are published before
 * the GET ends as a streamed block's are: the S3 client hands a sink no byte of an answer whose
 * ETag is not the one If-Match named.
 *
 * Parts. node_cache_read_part serves a random reader's few bytes without fetching the block from
 * S3: the store (a pread of the bytes, verifying only the chunks they touch, as the mount reads
 * a stored block), then a flight of the block (waited on for just those bytes), then a FETCH_HELD
 * flight, which asks the owners, then the stand-ins, for a copy they hold with the hand-off GET
 * (answered from their store alone, so it never makes one fetch), then one ranged GET of the bytes
 * with If-Match into the reader's buffer, kept nowhere. Only the FETCH_HELD copy takes a block
 * buffer (from the budget, as every fetch does). A failed FETCH_HELD flight sends any other reader that waited on it to lead a
 * fetch of its own, as a preload's does, so it never stands for a real fetch.
 */
#include "node_cache_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

/* ---- fetching one block ------------------------------------------------------------------------- */

typedef struct flight flight;

static flight **flight_find(node_cache *c, const uint8_t id[NODE_STORE_ID_LEN]);
static void flight_unlink(node_cache *c, flight *f);
static void flight_unref(flight *f);
static node_store_class fetched_class(node_cache *c, const block_req *b);

/* Stores a fetched block; a full store or a failed write only costs the next reader a fetch. */
static void store_put(node_cache *c, const block_req *b, const cache_buf *buf, node_store_class cls)
{
    if (node_store_put_framed(c->cfg.store, b->id, cache_buf_frame(buf), buf->len, cls, buf->sum) != 0 &&
        cls == NODE_STORE_OWNED)
        LOG_WARN("cache", "store_failed", "index=%llu error=%s", (unsigned long long)b->index,
                 shoal_error_name(shoal_error_code()));
}

/* One block of an S3 GET (see "Runs"): its buffer, its flight, its checksum as the bytes arrive. */
typedef struct run_block {
    block_req b; /* strings borrowed from the run's first block */
    flight *f; /* its flight; NULL: none (a fetch of one block without a flight) */
    cache_buf *buf; /* a reference of the run's */
    node_store_sum *sum; /* the store checksum, fed while the bytes are hot in cache; NULL: none */
    uint64_t start; /* where its bytes begin in the GET's body */
    uint64_t summed; /* bytes fed to sum, a contiguous prefix */
    uint64_t arrived; /* bytes arrived, a contiguous prefix */
    node_store_class cls; /* the class it is kept in */
    bool complete; /* a run of several: every byte arrived, and the block was published */
    bool store_left; /* ... but no worker took its storing: the leader stores it */
} run_block;

/* The blocks one GET fetches: blk[0] is the block the leader was asked for. */
typedef struct run {
    node_cache *c;
    unsigned n;
    uint64_t bytes; /* the GET's length: the blocks' lengths summed */
    run_block blk[CACHE_RUN_MAX];
} run;

/* A complete block of a run being stored by a `local` worker; its flight leaves the table once
 * the block is stored, so a thread that comes later finds either the flight or the block. */
typedef struct run_store_task {
    node_cache *c;
    block_req b; /* id and index only */
    cache_buf *buf;
    flight *f;
    node_store_class cls;
} run_store_task;

static void run_store_drop(void *arg)
{
    run_store_task *t = arg;
    node_cache *c = t->c;
    cache_buf_unref(t->buf);
    pthread_mutex_lock(&c->fl_mu);
    flight_unlink(c, t->f);
    flight_unref(t->f);
    pthread_mutex_unlock(&c->fl_mu);
    free(t);
}

static void run_store(node_cache *c, void *arg)
{
    run_store_task *t = arg;
    store_put(c, &t->b, t->buf, t->cls);
    run_store_drop(t);
}

/* Block k of a run of several has all its bytes (the S3 client's worker thread): its checksum is
 * final, its flight ends with the block (its waiters wake; later readers that find the flight
 * take the block from it), and a `local` worker stores it, so neither waits for the rest of the
 * GET. When no worker takes it (the cache stops), the leader stores it after the GET. */
static void run_block_complete(run *r, run_block *k)
{
    node_cache *c = r->c;
    if (k->sum != NULL && node_store_sum_final(k->sum))
        k->buf->sum = k->sum; /* the buffer owns it now */
    else
        node_store_sum_free(k->sum);
    k->sum = NULL;
    k->complete = true;
    run_store_task *t = calloc(1, sizeof *t);
    pthread_mutex_lock(&c->fl_mu);
    SHOAL_ASSERT(!k->f->done);
    k->f->done = true;
    k->f->handed = true;
    k->f->buf = cache_buf_ref(k->buf);
    k->f->source = NODE_CACHE_S3;
    pthread_cond_broadcast(&k->f->cv);
    if (t != NULL)
        k->f->refs++; /* the store task's */
    pthread_mutex_unlock(&c->fl_mu);
    if (t != NULL) {
        *t = (run_store_task){c, k->b, cache_buf_ref(k->buf), k->f, k->cls};
        t->b.bucket = t->b.key = t->b.etag = NULL;
        if (cache_pool_submit(&c->local, run_store, run_store_drop, t) == 0)
            return;
        cache_buf_unref(t->buf);
        pthread_mutex_lock(&c->fl_mu);
        flight_unref(t->f);
        pthread_mutex_unlock(&c->fl_mu);
        free(t);
    }
    k->store_left = true;
}

/* Bytes [q, q+len) of block k arrived. The client delivers a sink no byte of another version than
 * If-Match asked for, and after a retry delivers again from 0, so `arrived` only counts a
 * contiguous prefix of good bytes. */
static void run_block_put(run *r, run_block *k, uint64_t q, const uint8_t *data, size_t len)
{
    node_cache *c = r->c;
    memcpy(k->buf->data + q, data, len);
    if (k->sum != NULL) {
        if (q == 0 && k->summed > 0) { /* a retry delivers again from the first byte */
            node_store_sum_reset(k->sum);
            k->summed = 0;
        }
        if (q == k->summed) {
            node_store_sum_update(k->sum, k->buf->data + q, len);
            k->summed += len;
        }
        /* anything else leaves a gap: node_store_sum_final fails and the store sums it itself */
    }
    if (q <= k->arrived && q + len > k->arrived)
        k->arrived = q + len;
    if (k->f == NULL)
        return;
    pthread_mutex_lock(&c->fl_mu);
    k->f->arrived = k->arrived;
    /* Waiters are woken when the bytes the nearest one waits for are in (flight_wait_range), not
     * for every write: a reader of 1 MiB is woken once for it, and a thread that waits for the
     * whole block is woken only when the block is complete. */
    if (k->f->wake_at != 0 && k->f->arrived >= k->f->wake_at) {
        k->f->wake_at = 0;
        pthread_cond_broadcast(&k->f->cv);
    }
    pthread_mutex_unlock(&c->fl_mu);
    if (r->n > 1 && k->arrived == k->b.length)
        run_block_complete(r, k);
}

/* The GET's bytes from `pos` of its body (the S3 client's worker thread), into the blocks they
 * belong to. A complete block is not written again: a retry delivers the same bytes (the same
 * version), and the block is in its readers' hands already. */
static int run_put(void *ud, uint64_t pos, const void *data, size_t len)
{
    run *r = ud;
    const uint8_t *p = data;
    if (pos > r->bytes || len > r->bytes - pos)
        return -1;
    uint64_t bs = r->c->cfg.block_size;
    while (len > 0) {
        run_block *k = &r->blk[r->n > 1 ? pos / bs : 0];
        uint64_t q = pos - k->start;
        size_t n = k->b.length - q < len ? (size_t)(k->b.length - q) : len;
        if (!k->complete)
            run_block_put(r, k, q, p, n);
        pos += n;
        p += n;
        len -= n;
    }
    return 0;
}

/* Whether this node would fetch block b from S3 itself without asking another node first: no
 * other member among its owners, stand-ins and hand-off candidates is reachable (one node, or the
 * others unreachable). *cls is the class lead_fetch would keep it in. */
static bool fetches_itself(node_cache *c, const block_req *b, node_store_class *cls)
{
    node_cache_owner cand[DHT_REPLICAS_MAX];
    uint64_t mv = 0;
    int n = cache_owners(c, b->did, cache_replicas(c) + CACHE_HANDOFF_EXTRA, cand, &mv);
    for (int i = 0; i < n; i++)
        if (!cand[i].is_self && cand[i].link >= 0)
            return false;
    *cls = n == 0 ? NODE_STORE_NEAR : fetched_class(c, b);
    return true;
}

/* A flight for block b, which a run takes (refs 1: the run's), its bytes streaming into buf; NULL
 * when the block has a flight already. */
static flight *run_claim(node_cache *c, const block_req *b, cache_buf *buf)
{
    flight *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    memcpy(f->id, b->id, NODE_STORE_ID_LEN);
    f->refs = 1;
    f->mode = FETCH_READ;
    pthread_cond_init(&f->cv, NULL);
    pthread_mutex_lock(&c->fl_mu);
    flight **slot = flight_find(c, b->id);
    bool free_slot = *slot == NULL;
    if (free_slot) {
        f->partial = cache_buf_ref(buf);
        *slot = f;
        pthread_cond_broadcast(&c->fl_cv); /* a streaming reader may wait for this flight to begin */
    }
    pthread_mutex_unlock(&c->fl_mu);
    if (!free_slot) {
        pthread_cond_destroy(&f->cv);
        free(f);
        return NULL;
    }
    return f;
}

/* Ends the flight of a run's block that the GET did not complete, so that its waiters lead a
 * fetch of their own (redo), and drops the run's reference. */
static void run_fail(node_cache *c, flight *f, shoal_err err, const char *msg)
{
    pthread_mutex_lock(&c->fl_mu);
    f->done = true;
    f->redo = true;
    f->err = err != SHOAL_OK ? err : SHOAL_ERR_NODE;
    snprintf(f->msg, sizeof f->msg, "%s", msg);
    flight_unlink(c, f);
    pthread_cond_broadcast(&f->cv);
    flight_unref(f);
    pthread_mutex_unlock(&c->fl_mu);
}

/* Takes the blocks after b that its GET fetches too (see "Runs" above) into r; how many blocks the
 * GET fetches in all. */
unsigned cache_run_blocks(const node_cache *c)
{
    uint64_t want = c->cfg.run_bytes ? c->cfg.run_bytes : CACHE_RUN_BYTES;
    uint64_t n = want / c->cfg.block_size;
    return n < 1 ? 1 : n > CACHE_RUN_MAX ? CACHE_RUN_MAX : (unsigned)n;
}

static unsigned run_extend(node_cache *c, const block_req *b, run *r)
{
    uint64_t bs = c->cfg.block_size;
    unsigned max = cache_run_blocks(c);
    if (b->object_size == UINT64_MAX || b->length != bs || b->offset != b->index * bs)
        return 1;
    for (unsigned j = 1; j < max; j++) {
        uint64_t index = b->index + j, off = index * bs;
        if (off >= b->object_size)
            break;
        run_block *k = &r->blk[j];
        uint64_t len = b->object_size - off < bs ? b->object_size - off : bs;
        cache_block_req_init(&k->b, b->bucket, b->key, b->etag, index, off, len);
        k->b.object_size = b->object_size;
        k->b.use = CACHE_BUF_AHEAD;
        if (!fetches_itself(c, &k->b, &k->cls) || (k->buf = cache_buf_try(c, (size_t)len, CACHE_BUF_AHEAD)) == NULL)
            break;
        if (!cache_ra_take(c, k->b.id) || (k->f = run_claim(c, &k->b, k->buf)) == NULL) {
            cache_buf_unref(k->buf);
            break;
        }
        if (node_store_contains(c->cfg.store, k->b.id, NULL, NULL)) {
            run_fail(c, k->f, SHOAL_ERR_NODE, "stored meanwhile");
            cache_buf_unref(k->buf);
            break;
        }
        k->sum = node_store_sum_new(k->b.id, len);
        k->start = j * bs;
        r->n = j + 1;
        r->bytes += len;
    }
    return r->n;
}

/* Ranged GET of block b with If-Match, and of the run of blocks after it that run_extend takes
 * for a reader (FETCH_READ); the body must be exactly as long as asked. With a flight, the bytes
 * stream to its waiters as they arrive (node_cache_read_stream). The block is stored as `cls`
 * before this returns it, or, in a run, by the worker that stores it once complete. */
static cache_buf *fetch_s3(node_cache *c, const block_req *b, flight *f, fetch_mode mode, node_store_class cls)
{
    cache_buf *buf = cache_buf_new(c, (size_t)b->length, b->use);
    if (buf == NULL)
        return NULL;
    if (f != NULL) {
        pthread_mutex_lock(&c->fl_mu);
        if (f->partial == NULL)
            f->partial = cache_buf_ref(buf);
        else
            f = NULL; /* a second S3 fetch of one flight (never happens today) streams nothing */
        pthread_mutex_unlock(&c->fl_mu);
    }
    run *r = calloc(1, sizeof *r);
    if (r == NULL) {
        cache_buf_unref(buf);
        shoal_error_set(SHOAL_ERR_NOMEM, "block fetch");
        return NULL;
    }
    r->c = c;
    r->n = 1;
    r->bytes = b->length;
    r->blk[0] = (run_block){.b = *b, .f = f, .buf = buf, .sum = node_store_sum_new(b->id, b->length), .cls = cls};
    if (f != NULL && mode == FETCH_READ && run_extend(c, b, r) > 1) {
        node_stats_add(&c->cfg.stats->reads_run_gets, 1);
        node_stats_add(&c->cfg.stats->reads_run_blocks, r->n);
    }
    cache_ra_release_rest(c); /* what the run did not take goes to other workers, before the GET */
    uint64_t got = 0;
    s3_object_info info;
    s3_get_args a = {.bucket = b->bucket,
                     .key = b->key,
                     .ranged = true,
                     .offset = b->offset,
                     .length = r->bytes,
                     .if_match = b->etag,
                     .sink = run_put,
                     .sink_ud = r};
    int rc = cache_s3_get(c, &a, &got, &info);
    /* If-Match should have refused another version with 412; a server that ignores If-Match
     * (some S3-compatible stores do) is caught here by the ETag of the answer, so bytes of one
     * version are never stored under the block id of another. */
    if (rc == 0 && info.etag[0] && strcmp(info.etag, b->etag) != 0)
        rc = shoal_error_set(SHOAL_ERR_S3_CHANGED, "block %llu of s3://%s/%s: asked for ETag %s, the answer has %s",
                             (unsigned long long)b->index, b->bucket, b->key, b->etag, info.etag);
    else if (rc == 0 && got != r->bytes)
        rc = shoal_error_set(SHOAL_ERR_S3_TRUNCATED, "blocks %llu-%llu of s3://%s/%s: %llu bytes of %llu",
                             (unsigned long long)b->index, (unsigned long long)(b->index + r->n - 1), b->bucket, b->key,
                             (unsigned long long)got, (unsigned long long)r->bytes);
    shoal_err err = rc == 0 ? SHOAL_OK : shoal_error_code();
    char msg[256];
    snprintf(msg, sizeof msg, "%s", rc == 0 ? "the run's GET ended before this block" : shoal_error_message());
    cache_buf *out = NULL;
    for (unsigned j = 0; j < r->n; j++) {
        run_block *k = &r->blk[j];
        if (k->complete) { /* published; stored by a worker, or here */
            if (k->store_left) {
                store_put(c, &k->b, k->buf, k->cls);
                pthread_mutex_lock(&c->fl_mu);
                flight_unlink(c, k->f);
                pthread_mutex_unlock(&c->fl_mu);
            }
            if (j > 0)
                node_stats_add(&c->cfg.stats->reads_readahead, 1);
        } else if (r->n == 1 && rc == 0) { /* one block: stored here, published by the caller */
            if (k->sum != NULL && node_store_sum_final(k->sum)) {
                buf->sum = k->sum; /* the buffer owns it now */
                k->sum = NULL;
            }
            store_put(c, b, buf, cls);
        } else if (j > 0) {
            run_fail(c, k->f, err, msg);
        }
        node_store_sum_free(k->sum);
        if (j == 0 && (k->complete || (r->n == 1 && rc == 0)))
            out = k->buf;
        else
            cache_buf_unref(k->buf);
        if (j > 0 && k->complete) {
            pthread_mutex_lock(&c->fl_mu);
            flight_unref(k->f); /* the run's reference */
            pthread_mutex_unlock(&c->fl_mu);
        }
    }
    free(r);
    if (out == NULL)
        shoal_error_set(err != SHOAL_OK ? err : SHOAL_ERR_S3_TRUNCATED, "%s", msg);
    return out;
}

/* Whether the owner `id` timed out recently: then a read does not wait for it again but goes on
 * to the next owner or S3 at once, so a stalled node costs one timeout every few seconds rather
 * than one per block until gossip declares it dead. */
bool cache_penalized(node_cache *c, const char *id)
{
    uint64_t now = shoal_clock_mono_us();
    bool hit = false;
    pthread_mutex_lock(&c->seq_mu);
    for (size_t i = 0; i < CACHE_PENALTY_SLOTS && !hit; i++)
        hit = c->penalties[i].until_us > now && strcmp(c->penalties[i].id, id) == 0;
    pthread_mutex_unlock(&c->seq_mu);
    return hit;
}

void cache_penalize(node_cache *c, const char *id)
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

/* A request in flight whose requester may give up on it, with the PINGs that ask how it goes. The
 * waiting thread, the request's completion callback and a PING's callback each hold a reference;
 * the last one frees it (and a reply nobody took). */
typedef struct peer_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned refs;
    bool done;
    node_peer_response *r;
    bool ping_out;     /* a PING is in flight (one at a time) */
    uint64_t ping_us;  /* when it was sent */
    uint64_t heard_us; /* the latest moment the owner was known to be working on the request */
    bool asked;        /* a PING sent since heard_us came back without WORKING (IDLE, error, no PONG) */
} peer_wait;

/* Drops a reference; w->mu held on entry, released here. */
static void peer_wait_put(peer_wait *w)
{
    SHOAL_ASSERT_LOCKED(&w->mu);
    bool last = --w->refs == 0;
    pthread_mutex_unlock(&w->mu);
    if (last) {
        node_peer_response_delete(w->r);
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
    }
}

/* The request's completion callback (I/O thread): hands the response over, never blocks. */
static void peer_wait_done(void *ud, node_peer_response *r)
{
    peer_wait *w = ud;
    pthread_mutex_lock(&w->mu);
    w->r = r;
    w->done = true;
    pthread_cond_signal(&w->cv);
    peer_wait_put(w);
}

/* A PONG (I/O thread): an owner that says it works on the request, or an older node that answers
 * PING without saying (it cannot tell; alive is what it can show), was working when the PING was
 * sent. IDLE, a timeout or an error say nothing new. */
static void peer_wait_pong(void *ud, node_peer_response *r)
{
    peer_wait *w = ud;
    const node_peer_msg *m = node_peer_response_result(r) == SHOAL_OK ? node_peer_response_msg(r) : NULL;
    pthread_mutex_lock(&w->mu);
    bool working = m != NULL && (!m->has_work || m->work == NODE_PEER_WORKING);
    if (working && w->ping_us > w->heard_us) {
        w->heard_us = w->ping_us;
        w->asked = false;
    } else if (!working && w->ping_us > w->heard_us) {
        w->asked = true;
    }
    w->ping_out = false;
    pthread_cond_signal(&w->cv);
    node_peer_response_delete(r);
    peer_wait_put(w);
}

static void deadline_to_timespec(uint64_t at_us, struct timespec *ts)
{
    uint64_t now = shoal_clock_mono_us();
    clock_gettime(CLOCK_REALTIME, ts);
    uint64_t ns = (uint64_t)ts->tv_nsec + (at_us > now ? at_us - now : 0) * 1000u;
    ts->tv_sec += (time_t)(ns / 1000000000u);
    ts->tv_nsec = (long)(ns % 1000000000u);
}

/*
 * Sends a request (GET, LIST or HEAD) and waits for the reply while the owner makes progress on it.
 * When `patient` (an owner, who may have to fetch from S3), `timeout` bounds how long the owner
 * may go without progress, not how long it may take: every quarter of the timeout without a reply
 * the owner is PINGed with the request's work id (cache_work_id), and the wait ends only when the
 * owner has not said it is working on the request (its request queued or served, or a fetch of
 * that block in flight) for a whole timeout, counted from when the last such PING was sent.
 * Giving up on an owner that is busy fetching the block from S3 would only fetch it twice; a
 * silent owner (stopped, partitioned, overloaded to the point of not answering PING) or one idle
 * on the request (it lost it) is left after one timeout, as before.
 *
 * The patient wait is bounded all the same, by CACHE_PEER_MAX_WAIT_MS (peer_max_wait_ms): an owner
 * can only report work while its own fetch runs, and that fetch is bounded by the S3 client (each
 * attempt by the stall limit, at most max_retries + 1 of them with their backoff: about 36 s
 * with the defaults), so only an owner that is broken in a way that keeps it reporting work
 * (a worker stuck outside S3) reaches the bound, and then the reader fetches the block itself.
 *
 * Not patient (a hand-off holder, which answers from its store alone), the request gets `timeout`
 * and no PING: there is no work to report progress on.
 * 0 with the response in *out (the caller deletes it; its result may still be a failure), or -1
 * with SHOAL_ERR_TIMEOUT (no progress, no reply in time, or the bound), or the submission's error.
 */
static int peer_get(node_cache *c, int link, const node_peer_msg *req, uint32_t timeout, bool patient,
                    node_peer_response **out)
{
    uint64_t timeout_us = (uint64_t)timeout * 1000u;
    uint32_t max_ms = !patient ? timeout : c->cfg.peer_max_wait_ms ? c->cfg.peer_max_wait_ms : CACHE_PEER_MAX_WAIT_MS;
    node_peer_msg ping = {.type = NODE_PEER_PING, .membership_version = req->membership_version,
                          .has_work_id = true};
    cache_work_id(req, ping.work_id);
    peer_wait *w = calloc(1, sizeof *w);
    if (w == NULL)
        return shoal_error_set(SHOAL_ERR_NOMEM, "peer request");
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->refs = 2; /* this thread and the request's callback */
    uint64_t start = shoal_clock_mono_us();
    w->heard_us = w->ping_us = start;
    if (node_peer_submit(c->cfg.peer, link, req, (node_peer_payload){0}, max_ms, peer_wait_done, w) != 0) {
        pthread_mutex_lock(&w->mu);
        w->refs = 1;
        peer_wait_put(w);
        return -1;
    }
    uint64_t bound = start + (uint64_t)max_ms * 1000u;
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    while (!w->done) {
        uint64_t now = shoal_clock_mono_us();
        /* No progress for a timeout ends the wait only once the owner was asked since and did
         * not say WORKING: a reader that was itself descheduled past the deadline (a loaded
         * machine) asks before it blames the owner. */
        uint64_t give_up = w->heard_us + timeout_us < bound ? w->heard_us + timeout_us : bound;
        if (now >= bound || (now >= give_up && w->asked)) {
            rc = shoal_error_set(SHOAL_ERR_TIMEOUT, "peer %s: no progress for %llu ms (%llu ms in all)",
                                 node_peer_type_name(req->type), (unsigned long long)((now - w->heard_us) / 1000),
                                 (unsigned long long)((now - start) / 1000));
            break;
        }
        uint64_t next_ping = patient ? w->ping_us + timeout_us / 4 : bound;
        if (patient && !w->ping_out && now >= next_ping) {
            w->ping_out = true;
            w->ping_us = now;
            w->refs++;
            pthread_mutex_unlock(&w->mu);
            /* The PING's own limit is the timeout: a PONG later than that could not save the wait. */
            int sent = node_peer_submit(c->cfg.peer, link, &ping, (node_peer_payload){0},
                                        (uint32_t)(timeout_us / 1000), peer_wait_pong, w);
            pthread_mutex_lock(&w->mu);
            if (sent != 0) { /* no room on the link, or it closed: as good as no answer */
                w->ping_out = false;
                w->asked = true;
                w->refs--;
            }
            continue;
        }
        struct timespec until;
        /* A PING out comes back (a PONG, or its own limit) and signals; otherwise the next PING or
         * the deadline, whichever is first. */
        uint64_t wake = w->ping_out ? bound : next_ping;
        if (!w->ping_out && give_up > now && give_up < wake)
            wake = give_up;
        deadline_to_timespec(wake, &until);
        pthread_cond_timedwait(&w->cv, &w->mu, &until);
    }
    if (w->done) {
        *out = w->r;
        w->r = NULL;
        rc = 0;
    }
    peer_wait_put(w);
    return rc;
}

static uint32_t peer_timeout(const node_cache *c)
{
    return live(c, peer_timeout_ms) ? live(c, peer_timeout_ms) : CACHE_PEER_TIMEOUT_MS;
}

/* peer_get, and the outcome's code (SHOAL_OK when a reply came, whatever its status). A request
 * that could not even be sent (the link is between connections: a peer that was refused at its
 * first handshake, before it knew this node, is being dialled again) is sent again every few
 * milliseconds within the timeout, rather than costing an S3 fetch. *r may be set even on
 * failure; the caller deletes it. */
static shoal_err peer_request(node_cache *c, int link, const node_peer_msg *req, uint32_t timeout, bool patient,
                              node_peer_response **r)
{
    uint64_t give_up = shoal_clock_mono_us() + (uint64_t)timeout * 1000u;
    shoal_err e;
    for (;;) {
        e = peer_get(c, link, req, timeout, patient, r) == 0 ? node_peer_response_result(*r) : shoal_error_code();
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

shoal_err cache_peer_request(node_cache *c, int link, const node_peer_msg *req, node_peer_response **r)
{
    return peer_request(c, link, req, peer_timeout(c), true, r);
}

/* The read path's name for where a WARM_ONLY answer says the owner found the block. */
static node_cache_source source_of(const node_peer_msg *rep)
{
    if (!rep->has_source)
        return NODE_CACHE_PEER;
    return rep->source == NODE_PEER_SRC_STORE ? NODE_CACHE_LOCAL
           : rep->source == NODE_PEER_SRC_S3  ? NODE_CACHE_S3
                                              : NODE_CACHE_PEER;
}

/* Asks a peer for the block with `flags`: NODE_PEER_F_ALL (an owner), NO_FORWARD alone (a hand-off
 * holder, whose ERROR only means it does not hold the block: no error counted; it answers from its
 * store, so it gets a quarter of the peer timeout and no PING: a stalled or overloaded holder
 * costs the fetch that much, not a whole timeout), or with WARM_ONLY (preload: ASK_OK leaves *out
 * NULL and sets *src, which may be NULL otherwise). On ASK_OK otherwise *out holds a checked copy. */
static ask_result ask_peer(node_cache *c, const block_req *b, const node_cache_owner *m, uint64_t mv, uint32_t flags,
                           cache_buf **out, node_cache_source *src)
{
    node_peer_msg req = {.type = NODE_PEER_GET, .membership_version = mv, .flags = flags};
    cache_block_msg(&req, b);
    char tmp[96];
    node_peer_response *r = NULL;
    bool owner = (flags & NODE_PEER_F_OWNER_FETCH) != 0;
    uint32_t timeout = owner ? peer_timeout(c) : peer_timeout(c) / CACHE_HANDOFF_TIMEOUT_DIV;
    uint64_t started_us = shoal_clock_mono_us();
    shoal_err e = peer_request(c, m->link, &req, timeout ? timeout : 1, owner, &r);
    shoal_hist_observe(&c->cfg.stats->peer_fetch, shoal_clock_mono_us() - started_us);
    const node_peer_msg *rep = e == SHOAL_OK ? node_peer_response_msg(r) : NULL;
    ask_result res = ASK_NEXT;
    if (rep == NULL) {
        if (e == SHOAL_ERR_TIMEOUT) {
            node_stats_add(&c->cfg.stats->peer_timeouts, 1);
            cache_penalize(c, m->id);
        } else {
            node_stats_add(&c->cfg.stats->peer_errors, 1);
        }
        LOG_INFO("cache", "peer_failed", "peer=%s error=%s index=%llu", shoal_log_q(tmp, sizeof tmp, m->id),
                 shoal_error_name(e), (unsigned long long)b->index);
        goto done;
    }
    if (rep->status == NODE_PEER_CHANGED || rep->status == NODE_PEER_NOT_FOUND) {
        shoal_error_set(rep->status == NODE_PEER_CHANGED ? SHOAL_ERR_S3_CHANGED : SHOAL_ERR_S3_NO_SUCH_KEY,
                        "block %llu of s3://%s/%s at %s: owner %s answered %s", (unsigned long long)b->index,
                        b->bucket, b->key, b->etag, m->id, node_peer_status_name(rep->status));
        res = ASK_FINAL;
        goto done;
    }
    if (rep->status != NODE_PEER_OK) {
        if (owner)
            node_stats_add(&c->cfg.stats->peer_errors, 1);
        goto done;
    }
    if (flags & NODE_PEER_F_WARM_ONLY) {
        *out = NULL;
        if (src)
            *src = source_of(rep);
        res = ASK_OK;
        goto done;
    }
    size_t len = 0;
    const uint8_t *data = node_peer_response_payload(r, &len);
    if (len != b->length || XXH3_64bits(data, len) != rep->checksum) {
        node_stats_add(&c->cfg.stats->peer_errors, 1);
        LOG_WARN("cache", "peer_bad_block", "peer=%s index=%llu len=%zu want=%llu",
                 shoal_log_q(tmp, sizeof tmp, m->id), (unsigned long long)b->index, len,
                 (unsigned long long)b->length);
        goto done;
    }
    cache_buf *buf = cache_buf_new(c, len, b->use);
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
    cache_buf *buf = cache_buf_new(c, len, b->use);
    if (buf && node_store_get(c->cfg.store, b->id, buf->data, buf->len, &len) == 0 && len == buf->len)
        return buf;
    cache_buf_unref(buf);
    return NULL;
}

/* Hand-off. An owner that misses a block asks, before S3, the block's other ranked members under
 * its current view, over replicas + CACHE_HANDOFF_EXTRA ranks (not itself, not the owners the
 * reader already asked, not a peer penalized for a timeout), for a copy from their store: a GET
 * with NO_FORWARD and without OWNER_FETCH, which a holder answers from its store alone (ERROR when
 * it has none; it never asks anyone). Rendezvous placement moves a block only to a joiner, so
 * after one join the previous owner is the next-ranked member, after two the one after it: a
 * join costs no S3 GET. Each candidate costs one round trip on a cold miss; a silent one a quarter
 * of the peer timeout (it answers from its store, so it needs no more), after which it is skipped
 * for a few seconds like a silent owner. */
static cache_buf *handoff_fetch(node_cache *c, const block_req *b, const char *const *asked, int n_asked)
{
    node_cache_owner cand[DHT_REPLICAS_MAX];
    uint64_t mv = 0;
    int n = cache_owners(c, b->did, cache_replicas(c) + CACHE_HANDOFF_EXTRA, cand, &mv);
    for (int i = 0; i < n; i++) {
        bool skip = cand[i].is_self || cand[i].link < 0 || cache_penalized(c, cand[i].id);
        for (int k = 0; k < n_asked && !skip; k++)
            skip = strcmp(asked[k], cand[i].id) == 0;
        if (skip)
            continue;
        node_stats_add(&c->cfg.stats->handoff_asks, 1);
        cache_ra_release_rest(c); /* as before asking an owner */
        cache_buf *buf = NULL;
        if (ask_peer(c, b, &cand[i], mv, NODE_PEER_F_NO_FORWARD, &buf, NULL) == ASK_OK) {
            char tmp[96];
            node_stats_add(&c->cfg.stats->handoff_hits, 1);
            LOG_DEBUG("cache", "handoff", "from=%s index=%llu", shoal_log_q(tmp, sizeof tmp, cand[i].id),
                      (unsigned long long)b->index);
            return buf;
        }
    }
    return NULL;
}

/* The class a block this node fetched as owner or stand-in is kept in: OWNED when the node ranks
 * within replicas + 1 for it (an owner, or the member that owns it once one owner leaves the
 * view: a stand-in's copy is then the one the cluster keeps), NEAR when it ranks further (a
 * stand-in for a block it owns only if more members leave, or one asked across different views). */
static node_store_class fetched_class(node_cache *c, const block_req *b)
{
    node_cache_owner next[DHT_REPLICAS_MAX];
    uint64_t mv;
    int n = cache_owners(c, b->did, cache_replicas(c) + 1, next, &mv);
    if (n == 0) /* no placement known: asked as an owner, it keeps the block as one */
        return NODE_STORE_OWNED;
    for (int i = 0; i < n; i++)
        if (next[i].is_self)
            return NODE_STORE_OWNED;
    return NODE_STORE_NEAR;
}

/* The leader's work: the store again, then owners / S3 as the mode says. On success *out holds
 * the block (one reference; NULL for a preload that an owner answered without its bytes) and *src
 * where it came from. */
static int lead_fetch(node_cache *c, const block_req *b, fetch_mode mode, flight *f, cache_buf **out,
                      node_cache_source *src)
{
    node_cache_owner owners[DHT_REPLICAS_MAX]; /* the owners, then the stand-ins */
    const char *asked[DHT_REPLICAS_MAX]; /* members asked before this node: the hand-off skips them */
    int n_asked = 0;
    /* A near copy does not satisfy a preload: the block's owner must hold it. */
    if ((*out = store_copy(c, b, mode == FETCH_WARM)) != NULL) {
        *src = NODE_CACHE_LOCAL;
        return 0;
    }
    if (mode == FETCH_SERVE)
        goto s3_owned;

    uint64_t mv = 0;
    int n_owners = 0;
    int n = cache_ask_order(c, b->did, owners, &n_owners, &mv);
    bool self_owns = false; /* a reader that is a later owner keeps what an earlier one sends */
    for (int i = 0; i < n_owners; i++)
        self_owns = self_owns || owners[i].is_self;
    /* The owners in read order, then the stand-ins: reached only when no owner answered (a
     * CHANGED or NOT_FOUND ends the read first), and asked as an owner is. Reaching itself, this
     * node fetches the block as owner or stand-in, under this flight. A random read asks each for a
     * stored copy only (the hand-off GET, answered from the store alone): a stand-in holds one when
     * a silent owner made it fetch the block, or when it owned the block before a join. */
    uint32_t flags = mode == FETCH_HELD ? NODE_PEER_F_NO_FORWARD
                                        : NODE_PEER_F_ALL | (mode == FETCH_WARM ? NODE_PEER_F_WARM_ONLY : 0);
    for (int i = 0; i < n; i++) {
        if (owners[i].is_self && mode == FETCH_HELD)
            continue;
        if (owners[i].is_self)
            goto s3_owned;
        if (owners[i].link < 0 || cache_penalized(c, owners[i].id))
            continue;
        asked[n_asked++] = owners[i].id;
        cache_ra_release_rest(c); /* no run with a block asked of a peer: its batch goes on without it */
        cache_buf *buf = NULL;
        node_cache_source from = NODE_CACHE_PEER;
        ask_result ar = ask_peer(c, b, &owners[i], mv, flags, &buf, &from);
        cache_count_standin(c, i >= n_owners && mode != FETCH_HELD, ar == ASK_OK);
        if (ar == ASK_OK) {
            if (mode == FETCH_READ || mode == FETCH_HELD)
                store_put(c, b, buf, self_owns ? NODE_STORE_OWNED : NODE_STORE_NEAR);
            *out = buf;
            *src = from;
            return 0;
        }
        if (ar == ASK_FINAL)
            return -1;
    }
    if (mode == FETCH_HELD)
        return shoal_error_set(SHOAL_ERR_NOT_FOUND, "block %llu of s3://%s/%s: no owner holds it",
                               (unsigned long long)b->index, b->bucket, b->key);
    if (n > 0)
        LOG_INFO("cache", "owners_failed", "index=%llu owners=%d standins=%d fallback=s3", (unsigned long long)b->index,
                 n_owners, n - n_owners);
    if (mode == FETCH_WARM)
        return shoal_error_set(SHOAL_ERR_NODE_PEER, "block %llu of s3://%s/%s: no owner could fetch it",
                               (unsigned long long)b->index, b->bucket, b->key);
    /* No owner answered (or none serves): read S3 directly and keep the block near. */
    *out = fetch_s3(c, b, f, mode, NODE_STORE_NEAR);
    if (*out == NULL)
        return -1;
    *src = NODE_CACHE_S3;
    return 0;

s3_owned:;
    /* This node fetches as the block's owner, or as its stand-in (a reader whose owners did not
     * answer asked it, or it reached itself as one): hand-off, then S3. */
    node_store_class cls = fetched_class(c, b);
    /* A near copy (kept before placement made this node an owner) becomes owned without a fetch. */
    if (mode == FETCH_WARM && (*out = store_copy(c, b, false)) != NULL) {
        store_put(c, b, *out, cls);
        *src = NODE_CACHE_LOCAL;
        return 0;
    }
    if ((*out = handoff_fetch(c, b, asked, n_asked)) != NULL) {
        store_put(c, b, *out, cls);
        *src = NODE_CACHE_PEER;
        return 0;
    }
    *out = fetch_s3(c, b, f, mode, cls);
    if (*out == NULL)
        return -1;
    /* Replicas that pay: the other owners hold the block from now on, so losing any one owner
     * costs no S3 GET for it. A push that cannot go at once is dropped (counted): this thread may
     * be a serve worker, which must not wait on another node's pace. */
    if (cache_replicas(c) > 1)
        cache_push(c, b, *out, false);
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

/* Takes f out of the table, if it is still there (fl_mu held). */
static void flight_unlink(node_cache *c, flight *f)
{
    SHOAL_ASSERT_LOCKED(&c->fl_mu);
    flight **pp = &c->flights[flight_bucket(f->id)];
    while (*pp != NULL && *pp != f)
        pp = &(*pp)->next;
    if (*pp != NULL)
        *pp = f->next;
}

bool cache_flight_active(node_cache *c, const uint8_t id[NODE_STORE_ID_LEN])
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
        cache_buf_unref(f->buf);
        cache_buf_unref(f->partial);
        free(f);
    }
}

/* A block through the single-flight table: leads the fetch or waits for the one in progress.
 * On success *out holds one reference; *src is where the block came from; *coalesced says
 * whether this call waited on another thread's fetch. */
int cache_fetch_block(node_cache *c, const block_req *b, fetch_mode mode, cache_buf **out, node_cache_source *src,
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
        /* A preload's fetch gives up where a read goes on to S3, and brings no bytes when another
         * node owns the block; a random read's asks owners for a stored copy only. A reader that
         * waited on one of them leads a fetch of its own. */
        bool partial_mode =
            f->redo || (f->mode == FETCH_WARM && mode != FETCH_WARM) || (f->mode == FETCH_HELD && mode != FETCH_HELD);
        if ((f->err != SHOAL_OK || f->buf == NULL) && partial_mode) {
            flight_unref(f);
            continue;
        }
        int rc = 0;
        if (f->err == SHOAL_OK) {
            *out = f->buf ? cache_buf_ref(f->buf) : NULL;
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
    if (rc == 0)
        *out = buf;
    /* A block its run's GET completed was published then, and leaves the table once stored. */
    SHOAL_ASSERT(!f->handed || rc == 0);
    if (!f->handed) {
        f->done = true;
        if (rc == 0) {
            f->buf = buf ? cache_buf_ref(buf) : NULL;
            f->source = *src;
        } else {
            f->err = shoal_error_code() ? shoal_error_code() : SHOAL_ERR_NODE;
            snprintf(f->msg, sizeof f->msg, "%s", shoal_error_message());
        }
        flight_unlink(c, f);
        pthread_cond_broadcast(&f->cv);
    }
    flight_unref(f);
    pthread_mutex_unlock(&c->fl_mu);
    return rc;
}

/* Waits on fetch f (a reference counted here; fl_mu held) until bytes [off, off+len) of its block
 * arrived or it ended; a reference to a buffer that holds them, or NULL when it failed. */
static cache_buf *flight_wait_range(node_cache *c, flight *f, uint64_t off, size_t len)
{
    SHOAL_ASSERT_LOCKED(&c->fl_mu);
    cache_buf *from = NULL;
    f->refs++;
    while (!f->done && (f->partial == NULL || f->arrived < off + len)) {
        /* Every waiter woken sets its own mark again: the nearest one stands. */
        if (f->wake_at == 0 || off + len < f->wake_at)
            f->wake_at = off + len;
        pthread_cond_wait(&f->cv, &c->fl_mu);
    }
    if (f->partial != NULL && f->arrived >= off + len)
        from = cache_buf_ref(f->partial);
    else if (f->done && f->err == SHOAL_OK && f->buf != NULL)
        from = cache_buf_ref(f->buf);
    flight_unref(f);
    return from;
}

ssize_t node_cache_read_part(node_cache *c, const node_cache_object *obj, uint64_t index, uint64_t off, size_t len,
                             void *dst)
{
    block_req b;
    if (cache_block_req_from_object(c, obj, index, &b) != 0)
        return -1;
    if (off >= b.length || len == 0)
        return 0;
    if (len > b.length - off)
        len = (size_t)(b.length - off);
    uint64_t started_us = shoal_clock_mono_us();
    /* From the store, as the mount reads a block it holds: one pread of the bytes into dst, and
     * only the chunks they touch verified. A damaged one drops the block (counted corrupt) and the
     * read goes on as a miss, whose bytes overwrite dst, so none of the damaged ones is returned. */
    node_store_view v;
    if (node_store_open_lazy(c->cfg.store, b.id, &v) == 0) {
        bool sound = v.len == b.length && node_store_view_read(&v, (size_t)off, len, dst) == 0;
        node_store_view_release(&v);
        if (sound) {
            cache_count_read(c, NODE_CACHE_LOCAL, started_us);
            return (ssize_t)len;
        }
    }
    /* A fetch of the whole block in flight (a sequential reader's, read-ahead, a peer's): join it. */
    cache_buf *from = NULL;
    pthread_mutex_lock(&c->fl_mu);
    flight *f = *flight_find(c, b.id);
    if (f != NULL)
        from = flight_wait_range(c, f, off, len);
    pthread_mutex_unlock(&c->fl_mu);
    node_cache_source src = NODE_CACHE_LOCAL;
    bool coalesced = false;
    if (from == NULL && cache_fetch_block(c, &b, FETCH_HELD, &from, &src, &coalesced) == 0 && from != NULL)
        cache_count_read(c, src, started_us);
    if (from != NULL) {
        memcpy(dst, from->data + off, len);
        cache_buf_unref(from);
        return (ssize_t)len;
    }
    /* Nobody holds the block: just these bytes, pinned to the version like a block. */
    uint64_t got = 0;
    s3_object_info info;
    s3_get_args a = {.bucket = b.bucket,
                     .key = b.key,
                     .ranged = true,
                     .offset = b.offset + off,
                     .length = len,
                     .if_match = b.etag,
                     .buf = dst,
                     .buf_len = len};
    if (cache_s3_get(c, &a, &got, &info) != 0)
        return shoal_error_wrap("read %zu bytes of block %llu of s3://%s/%s", len, (unsigned long long)index, b.bucket,
                                b.key);
    if (info.etag[0] && strcmp(info.etag, b.etag) != 0)
        return shoal_error_set(SHOAL_ERR_S3_CHANGED,
                               "part of block %llu of s3://%s/%s: asked for ETag %s, the answer has %s",
                               (unsigned long long)index, b.bucket, b.key, b.etag, info.etag);
    if (got != len)
        return shoal_error_set(SHOAL_ERR_S3_TRUNCATED, "part of block %llu of s3://%s/%s: %llu bytes of %zu",
                               (unsigned long long)index, b.bucket, b.key, (unsigned long long)got, len);
    node_stats_add(&c->cfg.stats->reads_parts, 1);
    node_stats_add(&c->cfg.stats->reads_part_bytes, got);
    return (ssize_t)len;
}

ssize_t node_cache_read_stream(node_cache *c, const node_cache_object *obj, uint64_t index, uint64_t off, size_t len,
                               void *dst)
{
    block_req b;
    if (cache_block_req_from_object(c, obj, index, &b) != 0)
        return -1;
    if (off >= b.length || len == 0 || node_store_contains(c->cfg.store, b.id, NULL, NULL))
        return 0;
    if (len > b.length - off)
        len = (size_t)(b.length - off);
    bool launched = false;
    uint64_t give_up = 0, ended = 0;
    cache_buf *from = NULL;
    pthread_mutex_lock(&c->fl_mu);
    for (;;) {
        flight *f = *flight_find(c, b.id);
        if (f != NULL) {
            from = flight_wait_range(c, f, off, len);
            break;
        }
        if (launched && c->ra_ended == ended) {
            /* Nothing ended since the last look: wait for the fetch to begin, or a task to end. */
        } else {
            /* Nobody fetches the block yet: a read-ahead worker leads the fetch, queued before
             * the read-ahead of other readers, so this thread is free to return the first bytes
             * while the rest arrives. A task that ended may have stored the block instead. */
            ended = c->ra_ended;
            pthread_mutex_unlock(&c->fl_mu);
            if (node_store_contains(c->cfg.store, b.id, NULL, NULL))
                return 0;
            if (!launched) {
                if (cache_prefetch(c, obj, index, 1, true) == 0) {
                    /* Not queued (a fetch began meanwhile, or the queue is full): join or give up. */
                    pthread_mutex_lock(&c->fl_mu);
                    if ((f = *flight_find(c, b.id)) != NULL)
                        from = flight_wait_range(c, f, off, len);
                    break;
                }
                launched = true;
                give_up = shoal_clock_mono_us() + CACHE_STREAM_START_MS * 1000u;
            }
            pthread_mutex_lock(&c->fl_mu);
            continue;
        }
        uint64_t now = shoal_clock_mono_us();
        if (now >= give_up)
            break; /* the worker did not start in time: the caller reads the whole block */
        struct timespec until;
        deadline_to_timespec(give_up, &until);
        pthread_cond_timedwait(&c->fl_cv, &c->fl_mu, &until);
    }
    pthread_mutex_unlock(&c->fl_mu);
    if (from == NULL)
        return 0;
    memcpy(dst, from->data + off, len);
    cache_buf_unref(from);
    return (ssize_t)len;
}
