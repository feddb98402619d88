/*
 * node_cache_meta: object metadata (size, ETag) kept for the metadata TTL, misses for the negative
 * TTL, and directory listings owned like blocks.
 *
 * Listings. A table of listing pages keyed by the whole request (bucket, prefix, delimiter, token,
 * start-after, max keys), each kept in the LIST payload encoding, which is both what a peer is
 * sent and what a local caller decodes. A page is fetched once at a time (an entry marked pending;
 * others wait on it, as with blocks) from the listing's owners in read order, then S3; a LIST a
 * peer sends is served from the same table, so the owner's local callers and every other node
 * share one S3 listing per TTL. Failures are not remembered: the next caller tries again. The
 * table is bounded in entries and in bytes.
 */
#include "node_cache_internal.h"

#include "shoal_bytes.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

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

/* Keeps the table bounded: drops expired idle entries, and every idle one when that is not enough.
 * Locked. An entry being fetched or waited on stays. */
static void meta_trim(node_cache *c, uint64_t now)
{
    SHOAL_ASSERT_LOCKED(&c->meta_mu);
    for (int pass = 0; pass < 2 && c->meta_count >= CACHE_META_MAX; pass++)
        for (size_t i = 0; i < CACHE_META_BUCKETS; i++)
            for (meta_entry **pp = &c->meta[i]; *pp;) {
                meta_entry *e = *pp;
                if (!e->pending && e->refs == 0 && (pass == 1 || e->expires_us <= now)) {
                    *pp = e->next;
                    meta_free(e);
                    c->meta_count--;
                } else {
                    pp = &e->next;
                }
            }
}

void node_cache_forget(node_cache *c, const char *bucket, const char *key)
{
    pthread_mutex_lock(&c->meta_mu);
    meta_entry *e = *meta_find(c, bucket, key);
    /* The entry stays, expired and marked: the next fetch must not take an owner's older answer
     * (this node has just changed the object, or seen that it changed). */
    if (e) {
        e->expires_us = 0;
        e->refresh = true;
    }
    pthread_mutex_unlock(&c->meta_mu);
}

void node_cache_publish(node_cache *c, const char *bucket, const char *key)
{
    node_cache_forget(c, bucket, key);
    s3_object_info info;
    if (node_cache_head(c, bucket, key, &info) != 0 && shoal_error_code() != SHOAL_ERR_S3_NO_SUCH_KEY)
        LOG_DEBUG("cache", "publish_failed", "error=%s", shoal_error_name(shoal_error_code()));
}

/* s3_object_info <-> the HEAD_REPLY payload's form. */
void cache_info_to_peer(const s3_object_info *in, node_peer_object_info *out)
{
    *out = (node_peer_object_info){.size = in->size, .mtime = in->last_modified,
                                   .etag = shoal_cursor_from_str(in->etag),
                                   .content_type = shoal_cursor_from_str(in->content_type),
                                   .meta_dropped = in->meta_dropped, .n_meta = in->n_meta};
    for (unsigned i = 0; i < in->n_meta && i < NODE_PEER_MAX_META; i++)
        out->meta[i] = (node_peer_meta_kv){shoal_cursor_from_str(in->meta[i].name),
                                           shoal_cursor_from_str(in->meta[i].value)};
}

static int info_from_peer(const node_peer_object_info *in, s3_object_info *out)
{
    memset(out, 0, sizeof *out);
    if (in->etag.len == 0 || in->etag.len >= sizeof out->etag || in->content_type.len >= sizeof out->content_type ||
        in->n_meta > S3_META_MAX)
        return shoal_error_set(SHOAL_ERR_NODE_PEER, "metadata over the local limits");
    out->size = in->size;
    out->last_modified = in->mtime;
    memcpy(out->etag, in->etag.ptr, in->etag.len);
    memcpy(out->content_type, in->content_type.ptr, in->content_type.len);
    out->meta_dropped = in->meta_dropped;
    for (size_t i = 0; i < in->n_meta; i++) {
        const node_peer_meta_kv *kv = &in->meta[i];
        if (kv->name.len >= sizeof out->meta[i].name || kv->value.len >= sizeof out->meta[i].value)
            return shoal_error_set(SHOAL_ERR_NODE_PEER, "metadata entry over the local limits");
        memcpy(out->meta[i].name, kv->name.ptr, kv->name.len);
        memcpy(out->meta[i].value, kv->value.ptr, kv->value.len);
    }
    out->n_meta = (unsigned)in->n_meta;
    return 0;
}

/* Counts and logs an owner's failure to answer a LIST or HEAD (e: the request's outcome, rep: the
 * reply when one came); a silent owner is skipped for a while, as for blocks. */
static void meta_peer_failed(node_cache *c, const node_cache_owner *m, shoal_err e, const node_peer_msg *rep,
                             const char *event)
{
    char tmp[96];
    if (e == SHOAL_ERR_TIMEOUT) {
        node_stats_add(&c->cfg.stats->peer_timeouts, 1);
        cache_penalize(c, m->id);
    } else {
        node_stats_add(&c->cfg.stats->peer_errors, 1);
    }
    LOG_INFO("cache", event, "peer=%s error=%s status=%s", shoal_log_q(tmp, sizeof tmp, m->id), shoal_error_name(e),
             rep ? node_peer_status_name(rep->status) : "-");
}

/* The placement id of an object's metadata: one owner per object, whatever its version. The ETag
 * slot holds "hd:", which no S3 ETag (a quoted string) can be, so it is no block's id. */
static dht_id head_owner_id(const char *bucket, const char *key)
{
    return dht_block_id(bucket, key, "hd:", 0);
}

/* How a fetch of metadata ended: an answer (ok), the object missing (missing), or a failure. */
typedef struct head_outcome {
    bool ok, missing;
    uint64_t age_us; /* of the answer, at the owner */
} head_outcome;

/* Asks owner m for the metadata, at most max_age_ms old. 0 with *out filled (o->ok) or the object
 * missing (o->missing); -1 when the owner failed, timed out or sent something malformed. */
static int head_from_peer(node_cache *c, const char *bucket, const char *key, uint64_t max_age_ms,
                          const node_cache_owner *m, uint64_t mv, s3_object_info *out, head_outcome *o)
{
    node_peer_msg req = {.type = NODE_PEER_HEAD, .membership_version = mv, .has_max_age = true,
                         .max_age_ms = max_age_ms};
    req.head = (node_peer_head_req){.bucket = shoal_cursor_from_str(bucket), .key = shoal_cursor_from_str(key)};
    node_peer_response *r = NULL;
    char tmp[96];
    int rc = -1;
    shoal_err e = cache_peer_request(c, m->link, &req, &r);
    const node_peer_msg *rep = e == SHOAL_OK ? node_peer_response_msg(r) : NULL;
    if (rep && rep->status == NODE_PEER_NOT_FOUND) {
        o->missing = true;
        rc = 0;
        goto done;
    }
    if (rep == NULL || rep->status != NODE_PEER_OK) {
        meta_peer_failed(c, m, e, rep, "peer_head_failed");
        goto done;
    }
    size_t len = 0;
    const uint8_t *data = node_peer_response_payload(r, &len);
    node_peer_object_info pi;
    if (node_peer_head_decode(shoal_cursor_from_mem(data, len), &pi) != 0 || info_from_peer(&pi, out) != 0) {
        node_stats_add(&c->cfg.stats->peer_errors, 1);
        LOG_WARN("cache", "peer_bad_head", "peer=%s error=\"%s\"", shoal_log_q(tmp, sizeof tmp, m->id),
                 shoal_error_message());
        goto done;
    }
    o->ok = true;
    o->age_us = rep->has_age ? rep->age_ms * 1000u : 0;
    rc = 0;
done:
    node_peer_response_delete(r);
    return rc;
}

/* S3's answer: 0 with o->ok or o->missing, -1 on any other failure. */
static int head_from_s3(node_cache *c, const char *bucket, const char *key, s3_object_info *out, head_outcome *o)
{
    if (cache_s3_head(c, bucket, key, out) == 0) {
        o->ok = true;
        return 0;
    }
    if (shoal_error_code() == SHOAL_ERR_S3_NO_SUCH_KEY) {
        o->missing = true;
        return 0;
    }
    return -1;
}

/* Marks the pending entry `e` as waiting on member m (NULL: no longer), under the table's lock. */
static void mark_asking_peer(node_cache *c, meta_entry *e, const node_cache_owner *m)
{
    pthread_mutex_lock(&c->meta_mu);
    e->asking_peer = m != NULL;
    if (m != NULL)
        memcpy(e->asking_key, m->key, sizeof e->asking_key);
    pthread_mutex_unlock(&c->meta_mu);
}

/* The metadata from its owners in read order (this node among them asks S3 itself), then, when no
 * owner answered, from its stand-ins the same way (cache_ask_order), then from S3 directly.
 * Serving a peer (serve) never asks another node. */
static int head_fetch(node_cache *c, meta_entry *e, const char *bucket, const char *key, bool serve,
                      uint64_t max_age_ms, s3_object_info *out, head_outcome *o)
{
    if (serve)
        return head_from_s3(c, bucket, key, out, o);
    node_cache_owner owners[DHT_REPLICAS_MAX];
    uint64_t mv = 0;
    int n_owners = 0;
    int n = cache_ask_order(c, head_owner_id(bucket, key), owners, &n_owners, &mv);
    int rc = -1;
    bool asked_s3 = false;
    for (int i = 0; i < n && rc != 0; i++) {
        if (owners[i].is_self) {
            rc = head_from_s3(c, bucket, key, out, o);
            asked_s3 = true;
        } else if (owners[i].link >= 0 && !cache_penalized(c, owners[i].id)) {
            mark_asking_peer(c, e, &owners[i]);
            rc = head_from_peer(c, bucket, key, max_age_ms, &owners[i], mv, out, o);
            mark_asking_peer(c, e, NULL);
            cache_count_standin(c, i >= n_owners, rc == 0);
        }
    }
    if (rc != 0 && !asked_s3) {
        if (n > 0)
            LOG_INFO("cache", "head_owners_failed", "owners=%d standins=%d fallback=s3", n_owners, n - n_owners);
        rc = head_from_s3(c, bucket, key, out, o);
    }
    return rc;
}

/*
 * The one way to metadata, for local callers (serve false) and for peers that take this node for
 * the object's metadata owner (serve true). An entry fresh enough answers at once; otherwise one
 * thread fetches (the entry marked pending) while the others wait for its outcome, so a node sends
 * one request per object however many threads ask. "Fresh enough" is younger than max_age_us and
 * unexpired; an answer an owner gave at age a is kept for the TTL less a, so every node's copy
 * expires when the owner's does and the cluster asks S3 once per object per TTL.
 */
static int head_get(node_cache *c, const char *bucket, const char *key, const uint8_t *asker, uint64_t max_age_us,
                    s3_object_info *out, uint64_t *age_us)
{
    bool serve = asker != NULL;
    int rc = -1;
    pthread_mutex_lock(&c->meta_mu);
    meta_entry *e;
    for (;;) {
        uint64_t now = shoal_clock_mono_us();
        e = *meta_find(c, bucket, key);
        if (e && e->pending && serve && e->pending_local && e->asking_peer &&
            memcmp(e->asking_key, asker, sizeof e->asking_key) == 0) {
            /* Serving a peer never waits for a local fetch that is asking that very peer (two
             * views that disagree for a moment on the owner): one more HEAD, no cycle. A local
             * fetch that asks S3 itself (this node is the owner), or another node (this node is
             * a stand-in whose own read asked the silent owner first), is waited for like any
             * other, so the node's own reads and its peers' share one HEAD. */
            pthread_mutex_unlock(&c->meta_mu);
            head_outcome o = {0};
            if (head_from_s3(c, bucket, key, out, &o) != 0)
                return -1;
            *age_us = 0;
            return o.missing ? shoal_error_set(SHOAL_ERR_S3_NO_SUCH_KEY, "s3://%s/%s: no such key", bucket, key) : 0;
        }
        if (e && e->pending) {
            e->refs++;
            while (e->pending)
                pthread_cond_wait(&c->meta_cv, &c->meta_mu);
            e->refs--;
            /* The fetch that just ended is as fresh as anything: take its outcome as it stands,
             * unless nothing was kept (it failed, or a forget came meanwhile): then fetch again. */
            max_age_us = UINT64_MAX;
            if (e->expires_us > shoal_clock_mono_us())
                continue;
        } else if (e && e->expires_us > now && now - e->fetched_us <= max_age_us) {
            if (age_us)
                *age_us = now - e->fetched_us;
            if (e->negative) {
                pthread_mutex_unlock(&c->meta_mu);
                return shoal_error_set(SHOAL_ERR_S3_NO_SUCH_KEY, "s3://%s/%s: no such key (cached)", bucket, key);
            }
            *out = e->info;
            pthread_mutex_unlock(&c->meta_mu);
            return 0;
        }
        break;
    }
    if (e == NULL) {
        meta_trim(c, shoal_clock_mono_us());
        e = calloc(1, sizeof *e);
        if (e == NULL || (e->bucket = strdup(bucket)) == NULL || (e->key = strdup(key)) == NULL) {
            if (e)
                meta_free(e);
            pthread_mutex_unlock(&c->meta_mu);
            return shoal_error_set(SHOAL_ERR_NOMEM, "metadata of s3://%s/%s", bucket, key);
        }
        e->next = c->meta[meta_bucket(bucket, key)];
        c->meta[meta_bucket(bucket, key)] = e;
        c->meta_count++;
    }
    uint64_t ask_age_ms = e->refresh ? 0 : (max_age_us == UINT64_MAX ? (uint64_t)live(c, metadata_ttl_s) * 1000u
                                                                      : max_age_us / 1000u);
    e->pending = true;
    e->pending_local = !serve;
    e->asking_peer = false;
    e->refresh = false;
    pthread_mutex_unlock(&c->meta_mu);

    s3_object_info info;
    head_outcome o = {0};
    rc = head_fetch(c, e, bucket, key, serve, ask_age_ms, &info, &o);
    shoal_err err = shoal_error_code();
    char msg[256];
    snprintf(msg, sizeof msg, "%s", rc == 0 ? "" : shoal_error_message());

    pthread_mutex_lock(&c->meta_mu);
    uint64_t now = shoal_clock_mono_us();
    uint64_t ttl_us = (uint64_t)(o.missing ? live(c, negative_ttl_s) : live(c, metadata_ttl_s)) * 1000000u;
    e->fetched_us = now - (o.age_us < now ? o.age_us : 0);
    e->negative = o.missing;
    if (o.ok)
        e->info = info;
    /* A failure is not remembered (expires 0): the next caller tries again. A forget while the
     * fetch ran (refresh set again) leaves the answer unkept too. */
    e->expires_us = rc == 0 && !e->refresh && ttl_us > o.age_us ? e->fetched_us + ttl_us : 0;
    if (rc == 0 && age_us)
        *age_us = now - e->fetched_us;
    e->pending = false;
    pthread_cond_broadcast(&c->meta_cv);
    pthread_mutex_unlock(&c->meta_mu);
    if (rc != 0)
        return shoal_error_set(err, "%s", msg);
    if (o.missing)
        return shoal_error_set(SHOAL_ERR_S3_NO_SUCH_KEY, "s3://%s/%s: no such key", bucket, key);
    *out = info;
    return 0;
}

int node_cache_head(node_cache *c, const char *bucket, const char *key, s3_object_info *out)
{
    return head_get(c, bucket, key, NULL, UINT64_MAX, out, NULL);
}

int cache_head_serve(node_cache *c, const char *bucket, const char *key, const uint8_t *asker, uint64_t max_age_ms,
                     s3_object_info *out, uint64_t *age_ms)
{
    uint64_t age_us = 0;
    int rc = head_get(c, bucket, key, asker, max_age_ms * 1000u, out, &age_us);
    *age_ms = age_us / 1000u;
    return rc;
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
    uint64_t fetched_us; /* when S3 listed it (an owner's page is as old as it says) */
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
    uint8_t len[4];
    shoal_store_le32(len, (uint32_t)n);
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
    int rc = cache_s3_list(c, a, &pg) == 0 ? page_encode(&pg, out) : -1;
    s3_list_page_destroy(&pg);
    return rc;
}

/* Asks owner m for the page; 0 with the checked payload appended to out. */
static int list_from_peer(node_cache *c, const s3_list_args *a, const node_cache_owner *m, uint64_t mv,
                          shoal_buf *out, uint64_t *age_us)
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
    shoal_err e = cache_peer_request(c, m->link, &req, &r);
    const node_peer_msg *rep = e == SHOAL_OK ? node_peer_response_msg(r) : NULL;
    if (rep == NULL || rep->status != NODE_PEER_OK) {
        meta_peer_failed(c, m, e, rep, "peer_list_failed");
        goto done;
    }
    size_t len = 0;
    const uint8_t *data = node_peer_response_payload(r, &len);
    node_peer_list_page check;
    if (node_peer_list_decode(shoal_cursor_from_mem(data, len), &check) != 0) {
        node_stats_add(&c->cfg.stats->peer_errors, 1);
        LOG_WARN("cache", "peer_bad_list", "peer=%s error=\"%s\"", shoal_log_q(tmp, sizeof tmp, m->id),
                 shoal_error_message());
        goto done;
    }
    node_peer_list_page_destroy(&check);
    *age_us = rep->has_age ? rep->age_ms * 1000u : 0;
    if (shoal_buf_append(out, data, len) != 0) {
        shoal_error_set(SHOAL_ERR_NOMEM, "listing page of %zu bytes", len);
        goto done;
    }
    rc = 0;
done:
    node_peer_response_delete(r);
    return rc;
}

/* The page from its owners in read order (this node among them lists S3 itself), then, when no
 * owner answered, from its stand-ins the same way, then from S3 directly. Serving a peer (serve)
 * never asks another node. */
static int list_fetch(node_cache *c, const s3_list_args *a, bool serve, shoal_buf *out, uint64_t *age_us)
{
    *age_us = 0;
    if (serve)
        return list_from_s3(c, a, out);
    node_cache_owner owners[DHT_REPLICAS_MAX];
    uint64_t mv = 0;
    int n_owners = 0;
    int n = cache_ask_order(c, list_owner_id(a), owners, &n_owners, &mv);
    int rc = -1;
    bool asked_s3 = false;
    for (int i = 0; i < n && rc != 0; i++) {
        if (owners[i].is_self) {
            rc = list_from_s3(c, a, out);
            asked_s3 = true;
        } else if (owners[i].link >= 0 && !cache_penalized(c, owners[i].id)) {
            rc = list_from_peer(c, a, &owners[i], mv, out, age_us);
            cache_count_standin(c, i >= n_owners, rc == 0);
        }
    }
    if (rc != 0 && !asked_s3) {
        if (n > 0)
            LOG_INFO("cache", "list_owners_failed", "owners=%d standins=%d fallback=s3", n_owners, n - n_owners);
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
int cache_list_page_bytes(node_cache *c, const s3_list_args *a, bool serve, uint64_t max_age_us, shoal_buf *out,
                          uint64_t *age_us)
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
        *age_us = shoal_clock_mono_us() - e->fetched_us;
        if (e->ok)
            rc = shoal_buf_append(out, e->page.data, e->page.len) == 0 ? 0
                                                                        : shoal_error_set(SHOAL_ERR_NOMEM, "listing");
        else
            shoal_error_set(e->err, "%s", e->msg);
        pthread_mutex_unlock(&c->list_mu);
        goto done;
    }
    if (e && e->ok && e->expires_us > now && now - e->fetched_us <= max_age_us) {
        *age_us = now - e->fetched_us;
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
    uint64_t age = 0;
    rc = list_fetch(c, a, serve, &page, &age);

    pthread_mutex_lock(&c->list_mu);
    c->list_bytes += page.len;
    c->list_bytes -= e->page.len;
    shoal_buf_destroy(&e->page);
    e->page = page;
    e->ok = rc == 0;
    /* An owner's page expires here when it expires there: the cluster lists S3 once per TTL. */
    uint64_t now2 = shoal_clock_mono_us(), ttl_us = (uint64_t)live(c, metadata_ttl_s) * 1000000u;
    e->fetched_us = now2 - (age < now2 ? age : 0);
    e->expires_us = ttl_us > age ? e->fetched_us + ttl_us : 0;
    *age_us = now2 - e->fetched_us;
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

int node_cache_list_aged(node_cache *c, const s3_list_args *a, s3_list_page *out, uint64_t *age_us)
{
    shoal_buf bytes = {0};
    uint64_t age = 0;
    if (a->bucket == NULL || a->bucket[0] == '\0')
        return shoal_error_set(SHOAL_ERR_INVAL, "list: no bucket");
    int rc = cache_list_page_bytes(c, a, false, UINT64_MAX, &bytes, &age) == 0 ? page_decode(&bytes, out) : -1;
    if (age_us)
        *age_us = age;
    shoal_buf_destroy(&bytes);
    if (rc != 0)
        shoal_error_wrap("list s3://%s/%s", a->bucket, a->prefix ? a->prefix : "");
    return rc;
}

int node_cache_list(node_cache *c, const s3_list_args *a, s3_list_page *out)
{
    return node_cache_list_aged(c, a, out, NULL);
}

void cache_meta_destroy(node_cache *c)
{
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
}
