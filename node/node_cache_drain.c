/*
 * node_cache_drain: handing this node's owned blocks to their next owners before it leaves.
 *
 * Who takes a block. Placement is rendezvous hashing, so when this node is gone a block it owns
 * goes to the member ranked just past the current owners, and nothing else moves: the owners once
 * this node is gone are the owners over replicas+1 ranks without it (cache_owners_without). The
 * current owners other than this node hold the block already (replicas pay: an owner that fetched
 * it from S3 pushed it to them), so only the members that become owners are sent it. A block this
 * node holds as OWNED but no longer owns (a member joined since) goes to its current owners, which
 * may not have asked for it yet; one that has it stores nothing and answers OK. The receiver
 * applies the same rule in its own view, with the sender known by its CURVE key, so both sides
 * agree on who may take the block whenever their views agree. Placed over zones, the set is the
 * nearest the views can tell without the leaver; docs/placement.md says where it differs.
 *
 * How. The store keeps block ids, not coordinates, so each block goes as a hand-off PUT (id, bytes,
 * XXH3-64). The bytes are read through the store, which checks them against their checksum first;
 * a few PUTs are in flight at once (DRAIN_WINDOW), each holding its buffer by reference. The node
 * serves all along, so blocks it stores meanwhile are taken by a second pass, which also retries
 * the blocks that failed; at most DRAIN_PASSES passes. The caller's function sees the progress and
 * may stop the drain (a deadline, a client gone); PUTs in flight are waited for either way.
 */
#include "node_cache_internal.h"

#include "shoal_array.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#define DRAIN_WINDOW 8       /* hand-off PUTs in flight at once */
#define DRAIN_PASSES 3
#define DRAIN_REPORT_US 250000u

int cache_owners_without(node_cache *c, dht_id did, const uint8_t *leaver, node_cache_owner *out, uint64_t *version)
{
    node_cache_owner wide[DHT_REPLICAS_MAX];
    int r = cache_replicas(c);
    int n = cache_owners(c, did, r + 1, wide, version);
    int gone = -1;
    for (int i = 0; i < n && gone < 0; i++)
        if (leaver ? memcmp(wide[i].key, leaver, NODE_PEER_KEY_LEN) == 0 : wide[i].is_self)
            gone = i;
    if (gone < 0) /* the leaver owns nothing of it, now or next: the owners stay */
        return cache_owners(c, did, r, out, version);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (i != gone)
            out[k++] = wide[i];
    return k;
}

/* A set of block ids: a sorted array and the ids added since it was sorted. */
typedef struct id_set {
    uint8_t (*ids)[NODE_STORE_ID_LEN];
    size_t n, cap, sorted;
} id_set;

static int id_cmp(const void *a, const void *b) { return memcmp(a, b, NODE_STORE_ID_LEN); }

static bool set_has(const id_set *s, const uint8_t id[NODE_STORE_ID_LEN])
{
    return s->sorted && bsearch(id, s->ids, s->sorted, NODE_STORE_ID_LEN, id_cmp) != NULL;
}

static int set_add(id_set *s, const uint8_t id[NODE_STORE_ID_LEN])
{
    if (SHOAL_ARRAY_GROW(s->ids, s->n, s->cap) != 0)
        return -1;
    memcpy(s->ids[s->n++], id, NODE_STORE_ID_LEN);
    return 0;
}

/* Makes the ids added since the last call visible to set_has. */
static void set_sort(id_set *s)
{
    if (s->n)
        qsort(s->ids, s->n, NODE_STORE_ID_LEN, id_cmp);
    s->sorted = s->n;
}

typedef struct drain {
    node_cache *c;
    pthread_mutex_t mu; /* guards what follows */
    pthread_cond_t cv;  /* a PUT ended */
    unsigned inflight;
    node_cache_drain_progress p;
    id_set seen;    /* blocks dispatched by an earlier pass */
    id_set handled; /* blocks handed off (or gone from the store): never sent again */
    bool add_failed; /* a set could not grow: the drain ends with NOMEM */
    char first_error[160];
    uint64_t last_report_us;
} drain;

/* One block's hand-off to its next owners: resolved when its last PUT ended. */
typedef struct drain_put {
    drain *d;
    uint8_t id[NODE_STORE_ID_LEN];
    uint64_t len;
    unsigned left; /* PUTs not yet ended, plus one while they are being sent */
    bool failed;
    bool retry;    /* it failed in an earlier pass: counted in blocks_total and blocks_failed already */
} drain_put;

/* Keeps the first reason a block was not handed off, for the final message. d->mu held. */
static void note_error(drain *d, const char *fmt, const char *a, const char *b)
{
    SHOAL_ASSERT_LOCKED(&d->mu);
    if (d->first_error[0] == '\0')
        snprintf(d->first_error, sizeof d->first_error, fmt, a, b);
}

/* One PUT of dp ended (or was never sent): with d->mu held. The last one resolves the block. */
static void put_ended(drain_put *dp)
{
    drain *d = dp->d;
    SHOAL_ASSERT_LOCKED(&d->mu);
    SHOAL_ASSERT(dp->left > 0);
    if (--dp->left > 0)
        return;
    if (dp->retry && !dp->failed) {
        d->p.blocks_failed--;
    } else if (!dp->retry) {
        d->p.blocks_done++;
        d->p.bytes_done += dp->len;
        d->p.blocks_failed += dp->failed;
    }
    if (!dp->failed && set_add(&d->handled, dp->id) != 0)
        d->add_failed = true;
    free(dp);
}

/* The outcome of one hand-off PUT (the transport's I/O thread: never blocks for long). */
static void drain_done(void *ud, node_peer_response *r)
{
    drain_put *dp = ud;
    drain *d = dp->d;
    const node_peer_msg *rep = node_peer_response_result(r) == SHOAL_OK ? node_peer_response_msg(r) : NULL;
    bool ok = rep != NULL && rep->status == NODE_PEER_OK;
    pthread_mutex_lock(&d->mu);
    if (ok) {
        d->p.blocks_sent++;
        d->p.bytes_sent += dp->len;
        node_stats_add(&d->c->cfg.stats->drain_blocks_sent, 1);
        node_stats_add(&d->c->cfg.stats->drain_bytes_sent, dp->len);
    } else {
        dp->failed = true;
        note_error(d, "a next owner answered %.32s (%.32s)", rep ? node_peer_status_name(rep->status) : "nothing",
                   shoal_error_name(node_peer_response_result(r)));
    }
    d->inflight--;
    put_ended(dp);
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    node_peer_response_delete(r);
}

/* Calls the caller's function when DRAIN_REPORT_US passed (or `force`); false when it says stop. */
static bool report(drain *d, node_cache_drain_fn fn, void *ud, bool force)
{
    uint64_t now = shoal_clock_mono_us();
    if (fn == NULL || (!force && now - d->last_report_us < DRAIN_REPORT_US))
        return true;
    d->last_report_us = now;
    pthread_mutex_lock(&d->mu);
    node_cache_drain_progress p = d->p;
    pthread_mutex_unlock(&d->mu);
    return fn(ud, &p);
}

/* Waits until fewer than `limit` PUTs are in flight, reporting meanwhile; *stop becomes true when
 * the caller's function asks to stop (the wait goes on: a PUT in flight ends by its timeout). */
static void wait_inflight(drain *d, unsigned limit, node_cache_drain_fn fn, void *ud, bool *stop)
{
    for (;;) {
        pthread_mutex_lock(&d->mu);
        if (d->inflight < limit) {
            pthread_mutex_unlock(&d->mu);
            return;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&d->cv, &d->mu, &until);
        pthread_mutex_unlock(&d->mu);
        if (!report(d, fn, ud, false))
            *stop = true;
    }
}

/* Whether a member with this id is among owners[0..n). */
static bool owner_in(const node_cache_owner *owners, int n, const char *id)
{
    for (int i = 0; i < n; i++)
        if (strcmp(owners[i].id, id) == 0)
            return true;
    return false;
}

/* The stored bytes of block `id` (checked against their checksum by the store), or NULL when it is
 * gone (evicted, or dropped as corrupt). */
static cache_buf *read_owned(node_cache *c, const uint8_t id[NODE_STORE_ID_LEN])
{
    size_t len = 0, got = 0;
    if (!node_store_contains(c->cfg.store, id, &len, NULL))
        return NULL;
    cache_buf *buf = cache_buf_new(c, len, CACHE_BUF_NEED);
    if (buf && node_store_get(c->cfg.store, id, buf->data, buf->len, &got) == 0 && got == len)
        return buf;
    cache_buf_unref(buf);
    return NULL;
}

/* Hands one owned block to the members that own it once this node is gone. */
static void drain_block(drain *d, const uint8_t id[NODE_STORE_ID_LEN], bool retry, node_cache_drain_fn fn,
                        void *ud, bool *stop)
{
    node_cache *c = d->c;
    drain_put *dp = calloc(1, sizeof *dp);
    if (dp == NULL) {
        d->add_failed = true;
        return;
    }
    dp->d = d;
    memcpy(dp->id, id, NODE_STORE_ID_LEN);
    dp->retry = retry;
    dp->left = 1; /* held while the PUTs are being sent */
    cache_buf *buf = read_owned(c, id);
    dp->len = buf ? buf->len : 0;
    pthread_mutex_lock(&d->mu);
    if (!retry) {
        d->p.blocks_total++;
        d->p.bytes_total += dp->len;
    }
    pthread_mutex_unlock(&d->mu);
    if (buf != NULL) {
        dht_id did = cache_id_did(id);
        node_cache_owner cur[DHT_REPLICAS_MAX], next[DHT_REPLICAS_MAX];
        uint64_t mv = 0;
        int nc = cache_owners(c, did, cache_replicas(c), cur, &mv);
        int nn = cache_owners_without(c, did, NULL, next, &mv);
        bool owner = false;
        for (int i = 0; i < nc; i++)
            owner = owner || cur[i].is_self;
        node_peer_msg req = {.type = NODE_PEER_PUT, .membership_version = mv, .flags = NODE_PEER_F_HANDOFF,
                             .checksum = XXH3_64bits(buf->data, buf->len)};
        memcpy(req.block.id, id, NODE_PEER_BLOCK_ID_LEN);
        unsigned targets = 0;
        for (int i = 0; i < nn; i++) {
            /* A co-owner holds the block already (it was pushed to it); a block this node no
             * longer owns goes to every current owner, which may not have it yet. */
            if (next[i].is_self || (owner && owner_in(cur, nc, next[i].id)))
                continue;
            targets++;
            if (next[i].link < 0) {
                pthread_mutex_lock(&d->mu);
                dp->failed = true;
                note_error(d, "next owner %.64s%s is not reachable", next[i].id, "");
                pthread_mutex_unlock(&d->mu);
                continue;
            }
            wait_inflight(d, DRAIN_WINDOW, fn, ud, stop);
            pthread_mutex_lock(&d->mu);
            d->inflight++;
            dp->left++;
            pthread_mutex_unlock(&d->mu);
            if (cache_submit_put(c, next[i].link, &req, buf, true, drain_done, dp) != 0) {
                pthread_mutex_lock(&d->mu);
                d->inflight--;
                dp->left--;
                dp->failed = true;
                note_error(d, "a hand-off PUT to %.64s could not be sent (%.32s)", next[i].id,
                           shoal_error_name(shoal_error_code()));
                pthread_mutex_unlock(&d->mu);
            }
        }
        cache_buf_unref(buf);
        if (targets == 0) {
            pthread_mutex_lock(&d->mu);
            dp->failed = true;
            note_error(d, "no other member to take the block%s%s", "", "");
            pthread_mutex_unlock(&d->mu);
        }
    }
    pthread_mutex_lock(&d->mu);
    put_ended(dp);
    pthread_mutex_unlock(&d->mu);
}

/* One pass over the owned blocks not handed off yet; *dispatched counts the blocks it took. */
static int drain_pass(drain *d, node_cache_drain_fn fn, void *ud, bool *stop, size_t *dispatched)
{
    uint8_t(*ids)[NODE_STORE_ID_LEN] = NULL;
    size_t n = 0;
    *dispatched = 0;
    if (node_store_list(d->c->cfg.store, NODE_STORE_OWNED, &ids, &n) != 0)
        return -1;
    size_t seen_before = d->seen.n;
    for (size_t i = 0; i < n && !*stop; i++) {
        pthread_mutex_lock(&d->mu);
        bool done = set_has(&d->handled, ids[i]);
        pthread_mutex_unlock(&d->mu);
        if (done)
            continue;
        bool retry = set_has(&d->seen, ids[i]);
        if (!retry && set_add(&d->seen, ids[i]) != 0)
            d->add_failed = true;
        drain_block(d, ids[i], retry, fn, ud, stop);
        (*dispatched)++;
        if (!report(d, fn, ud, false))
            *stop = true;
    }
    free(ids);
    wait_inflight(d, 1, fn, ud, stop);
    pthread_mutex_lock(&d->mu);
    set_sort(&d->handled);
    pthread_mutex_unlock(&d->mu);
    if (d->seen.n != seen_before)
        set_sort(&d->seen);
    if (d->add_failed)
        return shoal_error_set(SHOAL_ERR_NOMEM, "drain: the table of blocks handed off");
    return 0;
}

int node_cache_drain(node_cache *c, node_cache_drain_fn fn, void *ud, node_cache_drain_progress *out)
{
    drain d = {.c = c, .last_report_us = shoal_clock_mono_us()};
    pthread_mutex_init(&d.mu, NULL);
    pthread_cond_init(&d.cv, NULL);
    bool stop = false;
    int rc = -1;
    LOG_INFO("cache", "drain_started", "replicas=%d", cache_replicas(c));
    for (int pass = 1; pass <= DRAIN_PASSES && !stop; pass++) {
        size_t dispatched = 0;
        if (drain_pass(&d, fn, ud, &stop, &dispatched) != 0)
            goto done;
        LOG_INFO("cache", "drain_pass", "pass=%d blocks=%zu sent=%llu failed=%llu", pass, dispatched,
                 (unsigned long long)d.p.blocks_sent, (unsigned long long)d.p.blocks_failed);
        if (dispatched == 0)
            break;
        if (!report(&d, fn, ud, true))
            stop = true;
    }
    node_stats_add(&c->cfg.stats->drain_failures, d.p.blocks_failed);
    if (stop)
        shoal_error_set(SHOAL_ERR_CLOSED, "drain stopped with %llu of %llu owned blocks handed off",
                        (unsigned long long)(d.p.blocks_done - d.p.blocks_failed),
                        (unsigned long long)d.p.blocks_total);
    else if (d.p.blocks_failed > 0)
        shoal_error_set(SHOAL_ERR_NODE_PEER, "%llu of %llu owned blocks could not be handed off (first: %s)",
                        (unsigned long long)d.p.blocks_failed, (unsigned long long)d.p.blocks_total, d.first_error);
    else
        rc = 0;
done:
    LOG_INFO("cache", "drain_done", "blocks=%llu sent=%llu bytes_sent=%llu failed=%llu stopped=%s",
             (unsigned long long)d.p.blocks_total, (unsigned long long)d.p.blocks_sent,
             (unsigned long long)d.p.bytes_sent, (unsigned long long)d.p.blocks_failed, stop ? "true" : "false");
    if (out)
        *out = d.p;
    free(d.seen.ids);
    free(d.handled.ids);
    pthread_mutex_destroy(&d.mu);
    pthread_cond_destroy(&d.cv);
    return rc;
}
