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
    if (cache_s3_head(c, bucket, key, out) != 0) {
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
    int rc = cache_s3_list(c, a, &pg) == 0 ? page_encode(&pg, out) : -1;
    s3_list_page_destroy(&pg);
    return rc;
}

/* Asks owner m for the page; 0 with the checked payload appended to out. */
static int list_from_peer(node_cache *c, const s3_list_args *a, const node_cache_owner *m, uint64_t mv,
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
    shoal_err e = cache_peer_request(c, m->link, &req, &r);
    const node_peer_msg *rep = e == SHOAL_OK ? node_peer_response_msg(r) : NULL;
    if (rep == NULL || rep->status != NODE_PEER_OK) {
        if (e == SHOAL_ERR_TIMEOUT) {
            node_stats_add(&c->cfg.stats->peer_timeouts, 1);
            cache_penalize(c, m->id);
        } else {
            node_stats_add(&c->cfg.stats->peer_errors, 1);
        }
        LOG_INFO("cache", "peer_list_failed", "peer=%s error=%s status=%s", shoal_log_q(tmp, sizeof tmp, m->id),
                 shoal_error_name(e), rep ? node_peer_status_name(rep->status) : "-");
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
    if (serve)
        return list_from_s3(c, a, out);
    node_cache_owner owners[DHT_REPLICAS_MAX];
    uint64_t mv = 0;
    int n = cache_owners(c, list_owner_id(a), cache_replicas(c), owners, &mv);
    int rc = -1;
    bool asked_s3 = false;
    for (int i = 0; i < n && rc != 0; i++) {
        if (owners[i].is_self) {
            rc = list_from_s3(c, a, out);
            asked_s3 = true;
        } else if (owners[i].link >= 0 && !cache_penalized(c, owners[i].id)) {
            rc = list_from_peer(c, a, &owners[i], mv, out);
        }
    }
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
int cache_list_page_bytes(node_cache *c, const s3_list_args *a, bool serve, shoal_buf *out)
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
    int rc = cache_list_page_bytes(c, a, false, &bytes) == 0 ? page_decode(&bytes, out) : -1;
    shoal_buf_destroy(&bytes);
    if (rc != 0)
        shoal_error_wrap("list s3://%s/%s", a->bucket, a->prefix ? a->prefix : "");
    return rc;
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
