/*
 * node_cache_serve: the owner side of the peer protocol (GET and LIST of blocks and pages this
 * node owns, PUT of written, replicated and handed-off blocks) and the pushing of blocks to their
 * owners.
 *
 * Written blocks. After the mount uploaded a file, each block of the new version is sent with PUT
 * to its owners (node_cache_push, without waiting for the answers); an owner checks the block's
 * name, length and checksum and that it owns the block in its own view, and keeps it OWNED. So a
 * reader on any node finds a fresh checkpoint at its owner and S3 is not asked again. A refused or
 * lost PUT only costs the owner a fetch from S3 when the block is first read. The same PUT carries
 * a block an owner fetched from S3 to the other owners when --replicas > 1 (node_cache_fetch.c).
 *
 * Work in progress. A reader waiting for a block PINGs its owner with the block's id, and the
 * owner says whether it is working on it (node_cache_on_work, on the transport's I/O thread): a
 * request for it queued in a serve pool or being served (counted per id in a small table from
 * the moment the request is queued until it is answered), or a fetch of it in flight. LISTs and
 * HEADs are counted the same way under an id hashed from what they ask (cache_work_id), which the
 * asker computes alike. So a reader can wait for an owner that is slow because S3 is slow, and
 * give up on one that is stuck or idle on its request (docs/peer-protocol.md, "Progress").
 *
 * Handed-off blocks. A draining node's store knows block ids, not their coordinates, so its PUT
 * (NODE_PEER_F_HANDOFF) carries the id, the bytes and their XXH3-64. The receiver cannot check the
 * id against coordinates; it takes the block when the checksum holds (nothing was damaged on the
 * way), the length is at most a block, and it owns the block once the sender is gone, in its own
 * view. That is enough: the sender is a member (CURVE with the cluster's allow-list), its store
 * verified the bytes against the checksum bound to the id before sending them, and a member that
 * lied could already serve wrong bytes as an owner; the owner check keeps a confused sender from
 * filling caches with blocks nobody will ask there.
 *
 * Warm-only GETs (preload). The owner makes sure it holds the block (its store, a hand-off, S3)
 * and answers OK without the bytes, saying where it found them; a near copy it held becomes owned.
 */
#include "node_cache_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

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

/* The answer to a WARM_ONLY GET: no bytes, where the block was found. */
static void warm_reply(node_peer_incoming *in, node_peer_status st, node_cache_source src)
{
    node_peer_msg rep = {.type = NODE_PEER_GET_REPLY, .status = st, .has_source = st == NODE_PEER_OK,
                         .source = src == NODE_CACHE_LOCAL ? NODE_PEER_SRC_STORE
                                   : src == NODE_CACHE_S3  ? NODE_PEER_SRC_S3
                                                           : NODE_PEER_SRC_PEER};
    if (node_peer_reply(in, &rep, (node_peer_payload){0}) != 0 && shoal_error_code() != SHOAL_ERR_CLOSED)
        LOG_WARN("cache", "reply_failed", "error=%s", shoal_error_name(shoal_error_code()));
}

/* A WARM_ONLY GET: an owned block is answered at once; a near copy is promoted, a missing block
 * fetched (hand-off, else S3) when OWNER_FETCH allows it. */
static void warm_run(node_cache *c, node_peer_incoming *in, const block_req *b, uint32_t flags)
{
    size_t len = 0;
    node_store_class cls = NODE_STORE_NEAR;
    bool held = node_store_contains(c->cfg.store, b->id, &len, &cls) && len == b->length;
    if (held && (cls == NODE_STORE_OWNED || !(flags & NODE_PEER_F_OWNER_FETCH))) {
        warm_reply(in, NODE_PEER_OK, NODE_CACHE_LOCAL);
        return;
    }
    if (!(flags & NODE_PEER_F_OWNER_FETCH)) {
        warm_reply(in, NODE_PEER_ERROR, NODE_CACHE_LOCAL);
        return;
    }
    cache_buf *buf = NULL;
    node_cache_source src;
    bool coalesced;
    if (cache_fetch_block(c, b, FETCH_SERVE, &buf, &src, &coalesced) != 0) {
        warm_reply(in, status_of(shoal_error_code()), NODE_CACHE_LOCAL);
        return;
    }
    if (src == NODE_CACHE_LOCAL) /* promotes the near copy the fetch found */
        node_store_put(c->cfg.store, b->id, buf->data, buf->len, NODE_STORE_OWNED);
    cache_buf_unref(buf);
    warm_reply(in, NODE_PEER_OK, src);
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
    cache_block_req_init(&b, s->bucket, s->key, s->etag, m->block.index, m->block.offset, m->block.length);
    /* The id must be the one its coordinates give, and the range the block's own: a request that
     * lies about either would store bytes under the wrong name. */
    if (memcmp(b.id, m->block.id, NODE_STORE_ID_LEN) != 0 || b.length == 0 || b.length > c->cfg.block_size ||
        b.offset != b.index * c->cfg.block_size) {
        char tmp[96];
        LOG_WARN("cache", "peer_bad_request", "key=%s index=%llu len=%llu", shoal_log_q(tmp, sizeof tmp, s->key),
                 (unsigned long long)b.index, (unsigned long long)b.length);
        goto error;
    }
    if (m->flags & NODE_PEER_F_WARM_ONLY) {
        warm_run(c, in, &b, m->flags);
        free(s);
        return;
    }
    node_store_view *view = calloc(1, sizeof *view);
    if (view && node_store_map(c->cfg.store, b.id, view) == 0 && view->len == b.length) {
        uint64_t ck = XXH3_64bits(view->data, view->len);
        serve_reply(in, NODE_PEER_OK, (node_peer_payload){view->data, view->len, cache_payload_free_view, view}, ck);
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
    if (cache_fetch_block(c, &b, FETCH_SERVE, &buf, &src, &coalesced) != 0) {
        node_peer_status st = status_of(shoal_error_code());
        LOG_INFO("cache", "serve_failed", "index=%llu status=%s error=%s", (unsigned long long)b.index,
                 node_peer_status_name(st), shoal_error_name(shoal_error_code()));
        serve_reply(in, st, (node_peer_payload){0}, 0);
        free(s);
        return;
    }
    uint64_t ck = XXH3_64bits(buf->data, buf->len);
    serve_reply(in, NODE_PEER_OK, (node_peer_payload){buf->data, buf->len, cache_payload_free_buf, buf}, ck);
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
        uint64_t age_us = 0;
        uint64_t max_age_us = m->has_max_age ? m->max_age_ms * 1000u : UINT64_MAX;
        if (cache_list_page_bytes(c, &a, true, max_age_us, &page, &age_us) == 0) {
            rep.status = NODE_PEER_OK;
            rep.has_age = true;
            rep.age_ms = age_us / 1000u;
        } else {
            rep.status = status_of(shoal_error_code());
        }
    }
    size_t len = 0;
    uint8_t *data = rep.status == NODE_PEER_OK ? shoal_buf_steal(&page, &len) : NULL;
    node_peer_payload payload = {data, data ? len : 0, data ? cache_payload_free_heap : NULL, NULL};
    if (node_peer_reply(in, &rep, payload) != 0 && shoal_error_code() != SHOAL_ERR_CLOSED)
        LOG_WARN("cache", "reply_failed", "error=%s", shoal_error_name(shoal_error_code()));
    shoal_buf_destroy(&page);
}

static void list_serve_drop(void *arg)
{
    node_peer_msg rep = {.type = NODE_PEER_LIST_REPLY, .status = NODE_PEER_ERROR};
    node_peer_reply(arg, &rep, (node_peer_payload){0});
}

/* ---- work in progress ---------------------------------------------------------------------------- */

void cache_work_id(const node_peer_msg *req, uint8_t out[NODE_PEER_BLOCK_ID_LEN])
{
    if (req->type == NODE_PEER_GET) {
        memcpy(out, req->block.id, NODE_PEER_BLOCK_ID_LEN);
        return;
    }
    /* Every field with its length, behind a tag of the request type, so no two requests share a
     * hash input; the 128-bit hash of that stands for the request. */
    const node_peer_list_req *l = &req->list;
    const node_peer_head_req *h = &req->head;
    shoal_cursor parts[6];
    size_t n = 0;
    if (req->type == NODE_PEER_LIST) {
        parts[n++] = l->bucket, parts[n++] = l->prefix, parts[n++] = l->delimiter;
        parts[n++] = l->token, parts[n++] = l->start_after;
    } else {
        parts[n++] = h->bucket, parts[n++] = h->key;
    }
    XXH3_state_t *st = XXH3_createState();
    uint8_t tag[9] = {(uint8_t)req->type};
    uint64_t mk = req->type == NODE_PEER_LIST ? l->max_keys : 0;
    memcpy(tag + 1, &mk, sizeof mk);
    XXH128_hash_t hash = {0, 0};
    if (st != NULL && XXH3_128bits_reset(st) == XXH_OK) {
        XXH3_128bits_update(st, tag, sizeof tag);
        for (size_t i = 0; i < n; i++) {
            uint64_t len = parts[i].len;
            XXH3_128bits_update(st, &len, sizeof len);
            XXH3_128bits_update(st, parts[i].ptr, parts[i].len);
        }
        hash = XXH3_128bits_digest(st);
    }
    XXH3_freeState(st);
    memcpy(out, &hash.high64, 8);
    memcpy(out + 8, &hash.low64, 8);
}

/* The slot of `id` in the open-addressed table (linear probing), or the free slot where it would
 * go. Locked. The table never fills: at most queue + workers requests are counted at once. */
static work_slot *work_find(node_cache *c, const uint8_t id[NODE_PEER_BLOCK_ID_LEN])
{
    SHOAL_ASSERT_LOCKED(&c->work_mu);
    uint64_t h;
    memcpy(&h, id, sizeof h);
    size_t i = (size_t)(h % CACHE_WORK_SLOTS);
    for (size_t probes = 0; probes < CACHE_WORK_SLOTS; probes++, i = (i + 1) % CACHE_WORK_SLOTS) {
        work_slot *w = &c->work[i];
        if (w->count == 0 || memcmp(w->id, id, NODE_PEER_BLOCK_ID_LEN) == 0)
            return w;
    }
    return NULL;
}

void cache_work_begin(node_cache *c, const uint8_t id[NODE_PEER_BLOCK_ID_LEN])
{
    pthread_mutex_lock(&c->work_mu);
    work_slot *w = work_find(c, id);
    SHOAL_ASSERT(w != NULL);
    if (w != NULL) {
        memcpy(w->id, id, NODE_PEER_BLOCK_ID_LEN);
        w->count++;
    }
    pthread_mutex_unlock(&c->work_mu);
}

void cache_work_end(node_cache *c, const uint8_t id[NODE_PEER_BLOCK_ID_LEN])
{
    pthread_mutex_lock(&c->work_mu);
    work_slot *w = work_find(c, id);
    if (w != NULL && w->count > 0 && --w->count == 0) {
        /* Backward-shift deletion: move later entries of the probe run into the hole, so every
         * entry stays reachable from its home slot without tombstones. */
        size_t hole = (size_t)(w - c->work);
        for (size_t j = (hole + 1) % CACHE_WORK_SLOTS; c->work[j].count != 0; j = (j + 1) % CACHE_WORK_SLOTS) {
            uint64_t h;
            memcpy(&h, c->work[j].id, sizeof h);
            size_t home = (size_t)(h % CACHE_WORK_SLOTS);
            /* j's entry may fill the hole when its home is not inside (hole, j] (cyclically). */
            bool home_in_range = hole < j ? (home > hole && home <= j) : (home > hole || home <= j);
            if (!home_in_range) {
                c->work[hole] = c->work[j];
                c->work[j].count = 0;
                hole = j;
            }
        }
    }
    pthread_mutex_unlock(&c->work_mu);
}

node_peer_work node_cache_on_work(void *ud, const uint8_t *id)
{
    node_cache *c = ud;
    pthread_mutex_lock(&c->work_mu);
    work_slot *w = work_find(c, id);
    bool queued = w != NULL && w->count > 0;
    pthread_mutex_unlock(&c->work_mu);
    return queued || cache_flight_active(c, id) ? NODE_PEER_WORKING : NODE_PEER_IDLE;
}

/* A serve task counted in the work table: the request's id is taken before the task answers it
 * (the answer frees the request), and the count ends once it is answered. */
typedef struct counted_task {
    pool_fn run;
    pool_drop_fn drop;
    node_peer_incoming *in;
    uint8_t id[NODE_PEER_BLOCK_ID_LEN];
} counted_task;

static void counted_run(node_cache *c, void *arg)
{
    counted_task t = *(counted_task *)arg;
    free(arg);
    t.run(c, t.in);
    cache_work_end(c, t.id);
}

/* A queued task dropped at stop: answered by its own drop; nobody asks about its work any more. */
static void counted_drop(void *arg)
{
    counted_task *t = arg;
    t->drop(t->in);
    free(t);
}

/* Queues `run` for request `in` on pool `p` (serve or local), counted under the request's work id;
 * -1 when the queue is full (the caller keeps `in` and answers BUSY). */
static int serve_counted(node_cache *c, pool *p, pool_fn run, pool_drop_fn drop, node_peer_incoming *in)
{
    counted_task *t = malloc(sizeof *t);
    if (t == NULL)
        return -1;
    *t = (counted_task){.run = run, .drop = drop, .in = in};
    cache_work_id(node_peer_incoming_msg(in), t->id);
    cache_work_begin(c, t->id);
    if (cache_pool_submit(p, counted_run, counted_drop, t) != 0) {
        cache_work_end(c, t->id);
        free(t);
        return -1;
    }
    return 0;
}

/* A HEAD from a peer that takes this node for the object's metadata owner: answered from the
 * table when what it holds is young enough for the asker ("ma"), else from one S3 HEAD shared with
 * local callers; never passed on. The reply says how old the answer is ("ag"). */
static void head_serve_run(node_cache *c, void *arg)
{
    node_peer_incoming *in = arg;
    const node_peer_msg *m = node_peer_incoming_msg(in);
    char bucket[NODE_PEER_MAX_BUCKET + 1], key[NODE_PEER_MAX_KEY + 1];
    node_peer_msg rep = {.type = NODE_PEER_HEAD_REPLY, .status = NODE_PEER_ERROR};
    shoal_buf payload = {0};
    if (copy_cursor(bucket, sizeof bucket, m->head.bucket) && copy_cursor(key, sizeof key, m->head.key)) {
        uint64_t max_age_ms = m->has_max_age ? m->max_age_ms : (uint64_t)live(c, metadata_ttl_s) * 1000u;
        s3_object_info info;
        node_peer_object_info pi;
        uint64_t age_ms = 0;
        if (cache_head_serve(c, bucket, key, node_peer_incoming_key(in), max_age_ms, &info, &age_ms) != 0) {
            rep.status = status_of(shoal_error_code());
        } else {
            cache_info_to_peer(&info, &pi);
            if (node_peer_head_encode(&pi, &payload) == 0) {
                rep.status = NODE_PEER_OK;
                rep.has_age = true;
                rep.age_ms = age_ms;
            }
        }
    }
    size_t len = 0;
    uint8_t *data = rep.status == NODE_PEER_OK ? shoal_buf_steal(&payload, &len) : NULL;
    node_peer_payload out = {data, data ? len : 0, data ? cache_payload_free_heap : NULL, NULL};
    if (node_peer_reply(in, &rep, out) != 0 && shoal_error_code() != SHOAL_ERR_CLOSED)
        LOG_WARN("cache", "reply_failed", "error=%s", shoal_error_name(shoal_error_code()));
    shoal_buf_destroy(&payload);
}

static void head_serve_drop(void *arg)
{
    node_peer_msg rep = {.type = NODE_PEER_HEAD_REPLY, .status = NODE_PEER_ERROR};
    node_peer_reply(arg, &rep, (node_peer_payload){0});
}

void node_cache_on_head(void *ud, node_peer_incoming *in)
{
    node_cache *c = ud;
    if (serve_counted(c, &c->serve, head_serve_run, head_serve_drop, in) != 0) {
        node_peer_msg rep = {.type = NODE_PEER_HEAD_REPLY, .status = NODE_PEER_BUSY};
        node_peer_reply(in, &rep, (node_peer_payload){0});
    }
}

void node_cache_on_list(void *ud, node_peer_incoming *in)
{
    node_cache *c = ud;
    if (serve_counted(c, &c->serve, list_serve_run, list_serve_drop, in) != 0) {
        node_peer_msg rep = {.type = NODE_PEER_LIST_REPLY, .status = NODE_PEER_BUSY};
        node_peer_reply(in, &rep, (node_peer_payload){0});
    }
}

void node_cache_on_get_block(void *ud, node_peer_incoming *in)
{
    node_cache *c = ud;
    bool store_only = !(node_peer_incoming_msg(in)->flags & NODE_PEER_F_OWNER_FETCH);
    if (serve_counted(c, store_only ? &c->local : &c->serve, serve_run, serve_drop, in) != 0)
        serve_reply(in, NODE_PEER_BUSY, (node_peer_payload){0}, 0);
}

/* ---- PUT: written, replicated and handed-off blocks --------------------------------------------- */

static void put_reply(node_peer_incoming *in, node_peer_status st)
{
    node_peer_msg rep = {.type = NODE_PEER_PUT_REPLY, .status = st};
    if (node_peer_reply(in, &rep, (node_peer_payload){0}) != 0 && shoal_error_code() != SHOAL_ERR_CLOSED)
        LOG_WARN("cache", "reply_failed", "error=%s", shoal_error_name(shoal_error_code()));
}

/* Whether this node is among owners[0..n). */
static bool has_self(const node_cache_owner *owners, int n)
{
    for (int i = 0; i < n; i++)
        if (owners[i].is_self)
            return true;
    return false;
}

/* Whether this node is one of the owners of `did` in its current view. */
static bool owned_by_self(node_cache *c, dht_id did)
{
    node_cache_owner owners[DHT_REPLICAS_MAX];
    uint64_t mv;
    return has_self(owners, cache_owners(c, did, cache_replicas(c), owners, &mv));
}

/* Refuses a PUT: answered ERROR, counted, logged with `why`. */
static void put_refuse(node_cache *c, node_peer_incoming *in, const char *why, const char *key, size_t len)
{
    char tmp[96];
    node_stats_add(&c->cfg.stats->peer_puts_refused, 1);
    LOG_INFO("cache", "put_refused", "reason=%s key=%s index=%llu len=%zu", why,
             key ? shoal_log_q(tmp, sizeof tmp, key) : "-", (unsigned long long)node_peer_incoming_msg(in)->block.index,
             len);
    put_reply(in, NODE_PEER_ERROR);
}

/* A hand-off PUT (a draining member's block: id, bytes, checksum): kept when the checksum holds and
 * this node owns the block once the sender is gone (the file's opening comment says why that is
 * enough). */
static void handoff_put_run(node_cache *c, node_peer_incoming *in)
{
    const node_peer_msg *m = node_peer_incoming_msg(in);
    size_t len = 0;
    const uint8_t *data = node_peer_incoming_payload(in, &len);
    const char *why = "bad_block";
    if (len == 0 || len > c->cfg.block_size)
        goto refuse;
    why = "bad_checksum";
    if (XXH3_64bits(data, len) != m->checksum)
        goto refuse;
    why = "not_owner";
    node_cache_owner next[DHT_REPLICAS_MAX];
    uint64_t mv;
    if (!has_self(next, cache_owners_without(c, cache_id_did(m->block.id), node_peer_incoming_key(in), next, &mv)))
        goto refuse;
    why = "store_failed";
    if (node_store_put(c->cfg.store, m->block.id, data, len, NODE_STORE_OWNED) != 0)
        goto refuse;
    node_stats_add(&c->cfg.stats->handoff_blocks_in, 1);
    put_reply(in, NODE_PEER_OK);
    return;
refuse:
    put_refuse(c, in, why, NULL, len);
}

static void put_run(node_cache *c, void *arg)
{
    node_peer_incoming *in = arg;
    const node_peer_msg *m = node_peer_incoming_msg(in);
    if (m->flags & NODE_PEER_F_HANDOFF) {
        handoff_put_run(c, in);
        return;
    }
    size_t len = 0;
    const uint8_t *data = node_peer_incoming_payload(in, &len);
    serve_strings *s = malloc(sizeof *s);
    const char *why = "bad_strings";
    block_req b;
    if (s == NULL || !copy_cursor(s->bucket, sizeof s->bucket, m->block.bucket) ||
        !copy_cursor(s->key, sizeof s->key, m->block.key) || !copy_cursor(s->etag, sizeof s->etag, m->block.etag))
        goto refuse;
    cache_block_req_init(&b, s->bucket, s->key, s->etag, m->block.index, m->block.offset, m->block.length);
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
    put_refuse(c, in, why, s ? s->key : NULL, len);
    free(s);
}

static void put_drop(void *arg) { put_reply(arg, NODE_PEER_ERROR); }

/* PUTs go to the `local` workers: storing a block waits on nothing remote. */
void node_cache_on_put_block(void *ud, node_peer_incoming *in)
{
    node_cache *c = ud;
    if (cache_pool_submit(&c->local, put_run, put_drop, in) != 0)
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

int cache_submit_put(node_cache *c, int link, const node_peer_msg *req, cache_buf *buf, bool wait,
                     node_peer_done_fn done, void *ud)
{
    uint32_t timeout = live(c, peer_timeout_ms) ? live(c, peer_timeout_ms) : CACHE_PEER_TIMEOUT_MS;
    uint64_t give_up = shoal_clock_mono_us() + (uint64_t)timeout * 1000u;
    /* A link with queue_per_peer requests in flight refuses more (NOSPACE): a writer waits for room,
     * so a large file's blocks go out at the pace the owner takes them rather than piling up. */
    for (;;) {
        node_peer_payload pl = {buf->data, buf->len, cache_payload_free_buf, cache_buf_ref(buf)};
        if (node_peer_submit(c->cfg.peer, link, req, pl, timeout, done, ud) == 0)
            return 0;
        if (!wait || shoal_error_code() != SHOAL_ERR_NOSPACE || shoal_clock_mono_us() >= give_up)
            return -1;
        struct timespec pause = {0, CACHE_RESEND_PAUSE_MS * 1000000L};
        nanosleep(&pause, NULL);
    }
}

unsigned cache_push(node_cache *c, const block_req *b, cache_buf *buf, bool wait)
{
    node_peer_msg req = {.type = NODE_PEER_PUT, .checksum = XXH3_64bits(buf->data, buf->len),
                         .has_object_size = b->object_size != UINT64_MAX, .object_size = b->object_size};
    cache_block_msg(&req, b);
    node_cache_owner owners[DHT_REPLICAS_MAX];
    int n = cache_owners(c, b->did, cache_replicas(c), owners, &req.membership_version);
    unsigned sent = 0;
    for (int i = 0; i < n; i++) {
        if (owners[i].is_self || owners[i].link < 0)
            continue;
        node_stats_add(&c->cfg.stats->peer_pushes_started, 1);
        if (cache_submit_put(c, owners[i].link, &req, buf, wait, push_done, c) == 0) {
            sent++;
        } else {
            node_stats_add(&c->cfg.stats->peer_push_failures, 1);
            LOG_INFO("cache", "push_failed", "status=- error=%s", shoal_error_name(shoal_error_code()));
        }
    }
    return sent;
}

unsigned node_cache_push(node_cache *c, const node_cache_object *obj, uint64_t index, const void *data, size_t len)
{
    block_req b;
    if (cache_block_req_from_object(c, obj, index, &b) != 0 || b.length != len)
        return 0;
    /* One copy shared by every owner's PUT: the caller's buffer is reused at once. */
    cache_buf *buf = cache_buf_new(c, len, CACHE_BUF_NEED);
    if (buf == NULL)
        return 0;
    memcpy(buf->data, data, len);
    unsigned sent = cache_push(c, &b, buf, true);
    cache_buf_unref(buf);
    return sent;
}
