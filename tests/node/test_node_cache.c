/*
 * The read path (node/node_cache*.c) in one process, through its dependency table
 * (node_cache_deps): each test node is a real node_cache with a real block store in a temporary
 * directory and a real peer transport (node_peer, CURVE over loopback), while S3 and placement
 * are FAKES the test controls: an in-memory object table that counts requests and can hold a GET
 * at a gate, and an owner list the test sets per node. The daemon's end-to-end tests
 * (tests/node/test_daemon.c) run the same paths against the real S3 server; these run in
 * milliseconds and make the interleavings they test deterministic (a gate, not a sleep).
 */
#include "node_cache.h"
#include "node_peer.h"
#include "node_stats.h"
#include "node_store.h"
#include "shoal_env.h"
#include "shoal_error.h"
#include "tt.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#define BUCKET "bkt"
#define BS (256 * 1024) /* block size */
#define MAX_NODES 4

/* ---- the fake S3 ------------------------------------------------------------------------------- */

typedef struct fake_s3 {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char key[64];
    char etag[64];
    uint8_t *data;
    size_t len;
    atomic_int gets, heads, lists;
    bool gate_closed;    /* GETs wait here after delivering `gate_after` bytes */
    size_t gate_after;
    atomic_int at_gate;  /* GETs waiting at the gate */
} fake_s3;

static void fake_s3_init(fake_s3 *s, const char *key, const char *etag, size_t len, unsigned seed)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    snprintf(s->key, sizeof s->key, "%s", key);
    snprintf(s->etag, sizeof s->etag, "%s", etag);
    s->data = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        s->data[i] = (uint8_t)(i * 7 + seed + (i >> 11));
    s->len = len;
}

static void fake_s3_fini(fake_s3 *s)
{
    free(s->data);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

static void gate_close(fake_s3 *s, size_t after)
{
    pthread_mutex_lock(&s->mu);
    s->gate_closed = true;
    s->gate_after = after;
    pthread_mutex_unlock(&s->mu);
}

static void gate_open(fake_s3 *s)
{
    pthread_mutex_lock(&s->mu);
    s->gate_closed = false;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Waits (unbounded: the test's own deadline ends a hang) until `n` GETs stand at the gate. */
static void wait_at_gate(fake_s3 *s, int n)
{
    while (atomic_load(&s->at_gate) < n)
        usleep(1000);
}

static int f_s3_get(void *ctx, const s3_get_args *a, uint64_t *got, s3_object_info *info)
{
    fake_s3 *s = ctx;
    atomic_fetch_add(&s->gets, 1);
    if (strcmp(a->key, s->key) != 0)
        return shoal_error_set(SHOAL_ERR_S3_NO_SUCH_KEY, "fake S3: no key %s", a->key);
    if (a->if_match && strcmp(a->if_match, s->etag) != 0)
        return shoal_error_set(SHOAL_ERR_S3_CHANGED, "fake S3: %s is %s now", a->key, s->etag);
    uint64_t off = a->ranged ? a->offset : 0;
    uint64_t len = a->ranged ? a->length : s->len;
    if (off >= s->len)
        return shoal_error_set(SHOAL_ERR_S3_RANGE, "fake S3: range past the end");
    if (len > s->len - off)
        len = s->len - off;
    const uint8_t *p = s->data + off;
    uint64_t done = 0;
    while (done < len) {
        uint64_t step = len - done < 4096 ? len - done : 4096;
        pthread_mutex_lock(&s->mu);
        if (s->gate_closed && done >= s->gate_after) {
            atomic_fetch_add(&s->at_gate, 1);
            while (s->gate_closed)
                pthread_cond_wait(&s->cv, &s->mu);
            atomic_fetch_sub(&s->at_gate, 1);
        }
        pthread_mutex_unlock(&s->mu);
        if (a->sink) {
            if (a->sink(a->sink_ud, done, p + done, (size_t)step) != 0)
                return shoal_error_set(SHOAL_ERR_S3, "fake S3: the sink refused");
        } else {
            memcpy((uint8_t *)a->buf + done, p + done, (size_t)step);
        }
        done += step;
    }
    if (got)
        *got = done;
    if (info) {
        memset(info, 0, sizeof *info);
        info->size = s->len;
        snprintf(info->etag, sizeof info->etag, "%s", s->etag);
    }
    return 0;
}

static int f_s3_head(void *ctx, const char *bucket, const char *key, s3_object_info *out)
{
    fake_s3 *s = ctx;
    atomic_fetch_add(&s->heads, 1);
    if (strcmp(key, s->key) != 0)
        return shoal_error_set(SHOAL_ERR_S3_NO_SUCH_KEY, "fake S3: no key %s", key);
    memset(out, 0, sizeof *out);
    out->size = s->len;
    snprintf(out->etag, sizeof out->etag, "%s", s->etag);
    return 0;
}

/* A listing of one object (the fake's) under any prefix it starts with. */
static int f_s3_list(void *ctx, const s3_list_args *a, s3_list_page *out)
{
    fake_s3 *s = ctx;
    atomic_fetch_add(&s->lists, 1);
    if (a->prefix && strncmp(s->key, a->prefix, strlen(a->prefix)) != 0)
        return 0;
    out->objects = calloc(1, sizeof *out->objects);
    out->objects[0].key = strdup(s->key);
    out->objects[0].key_len = strlen(s->key);
    out->objects[0].size = s->len;
    snprintf(out->objects[0].etag, sizeof out->objects[0].etag, "%s", s->etag);
    out->n_objects = 1;
    return 0;
}

/* ---- test nodes ------------------------------------------------------------------------------- */

typedef struct tnode {
    char dir[512];
    node_store *store;
    node_stats stats;
    node_peer *peer;
    node_cache *cache;
    uint8_t pub[NODE_PEER_KEY_LEN], sec[NODE_PEER_KEY_LEN];
    fake_s3 *s3;
    node_cache_deps deps;
    /* the fake placement: every block's owners, in read order */
    node_cache_owner owners[MAX_NODES];
    int n_owners;
    int links[MAX_NODES]; /* this node's link to node i */
    /* fault injection on the serving side (FAKES of a broken owner): */
    bool drop_gets;      /* GETs are dropped unanswered (an owner that lost the request) */
    bool always_working; /* PINGs are answered WORKING whatever the cache says (a stuck owner) */
    atomic_int pongs_working, pongs_idle; /* what PINGs that named a work item were answered */
} tnode;

/* The fakes' ctx: the S3 table for S3 calls and the node for placement. */
typedef struct both {
    fake_s3 *s3;
    tnode *node;
} both;

static void on_get(void *ud, node_peer_incoming *in)
{
    tnode *n = ud;
    if (n->drop_gets)
        node_peer_incoming_discard(in);
    else
        node_cache_on_get_block(n->cache, in);
}
static void on_put(void *ud, node_peer_incoming *in) { node_cache_on_put_block(((tnode *)ud)->cache, in); }
static void on_list(void *ud, node_peer_incoming *in) { node_cache_on_list(((tnode *)ud)->cache, in); }
static void on_head(void *ud, node_peer_incoming *in) { node_cache_on_head(((tnode *)ud)->cache, in); }
static node_peer_work on_work(void *ud, const uint8_t *id)
{
    tnode *n = ud;
    node_peer_work w = n->always_working ? NODE_PEER_WORKING : node_cache_on_work(n->cache, id);
    atomic_fetch_add(w == NODE_PEER_WORKING ? &n->pongs_working : &n->pongs_idle, 1);
    return w;
}
static const node_peer_handlers HANDLERS = {
    .on_get_block = on_get, .on_put_block = on_put, .on_list = on_list, .on_head = on_head, .on_work = on_work};

static int f_owners(void *ctx, dht_id did, int max, node_cache_owner *out, uint64_t *version)
{
    tnode *n = ctx;
    int k = n->n_owners < max ? n->n_owners : max;
    memcpy(out, n->owners, (size_t)k * sizeof *out);
    *version = 1;
    return k;
}

/* A node with its own store, peer transport (serving on loopback) and read path over `s3`. */
static both g_both[MAX_NODES];
static int b_get(void *ctx, const s3_get_args *a, uint64_t *got, s3_object_info *info);
static int b_head(void *ctx, const char *bucket, const char *key, s3_object_info *out);
static int b_list(void *ctx, const s3_list_args *a, s3_list_page *out);
static int b_owners(void *ctx, dht_id did, int max, node_cache_owner *out, uint64_t *version);

static void tnode_start_bounded(tnode *n, int idx, fake_s3 *s3, uint32_t peer_timeout_ms, uint32_t metadata_ttl_s,
                                uint32_t peer_max_wait_ms);

/* Node number `idx`: its own store, peer transport (serving on loopback) and read path over the
 * fake `s3` and the fake placement (no owners until set_owner: then it reads S3 directly). */
static void tnode_start(tnode *n, int idx, fake_s3 *s3, uint32_t peer_timeout_ms, uint32_t metadata_ttl_s)
{
    tnode_start_bounded(n, idx, s3, peer_timeout_ms, metadata_ttl_s, 0);
}

/* tnode_start with a bound on the wait for an owner that keeps reporting work (0: the default). */
static void tnode_start_bounded(tnode *n, int idx, fake_s3 *s3, uint32_t peer_timeout_ms, uint32_t metadata_ttl_s,
                                uint32_t peer_max_wait_ms)
{
    memset(n, 0, sizeof *n);
    char *d = tt_tmpdir("cache");
    snprintf(n->dir, sizeof n->dir, "%s", d);
    free(d);
    n->store = node_store_new(n->dir, 64ull << 20, NULL);
    TT_CHECK(n->store, "store: %s", shoal_error_message());
    node_stats_create(&n->stats);
    char zp[41], zs[41];
    TT_CHECK(zmq_curve_keypair(zp, zs) == 0, "libzmq without CURVE");
    zmq_z85_decode(n->pub, zp);
    zmq_z85_decode(n->sec, zs);
    node_peer_config pc = {.bind = "127.0.0.1:0", .handlers = &HANDLERS, .handlers_ud = n};
    memcpy(pc.public_key, n->pub, sizeof n->pub);
    memcpy(pc.secret_key, n->sec, sizeof n->sec);
    n->peer = node_peer_new(&pc);
    TT_CHECK(n->peer, "peer: %s", shoal_error_message());
    n->s3 = s3;
    g_both[idx] = (both){s3, n};
    n->deps = (node_cache_deps){.ctx = &g_both[idx], .s3_get = b_get, .s3_head = b_head, .s3_list = b_list,
                                .owners = b_owners};
    node_cache_config cc = {.store = n->store, .peer = n->peer, .stats = &n->stats, .block_size = BS,
                            .replicas = 2, .peer_timeout_ms = peer_timeout_ms, .peer_max_wait_ms = peer_max_wait_ms,
                            .metadata_ttl_s = metadata_ttl_s, .negative_ttl_s = 1, .deps = &n->deps};
    n->cache = node_cache_new(&cc);
    TT_CHECK(n->cache, "cache: %s", shoal_error_message());
    for (int i = 0; i < MAX_NODES; i++)
        n->links[i] = -1;
}


static int b_get(void *ctx, const s3_get_args *a, uint64_t *got, s3_object_info *info)
{
    return f_s3_get(((both *)ctx)->s3, a, got, info);
}
static int b_head(void *ctx, const char *bucket, const char *key, s3_object_info *out)
{
    return f_s3_head(((both *)ctx)->s3, bucket, key, out);
}
static int b_list(void *ctx, const s3_list_args *a, s3_list_page *out)
{
    return f_s3_list(((both *)ctx)->s3, a, out);
}
static int b_owners(void *ctx, dht_id did, int max, node_cache_owner *out, uint64_t *version)
{
    return f_owners(((both *)ctx)->node, did, max, out, version);
}


/* Lets `from` reach `to` (numbered i) over the peer transport; returns the link. */
static int tnode_link(tnode *from, tnode *to, int i)
{
    const uint8_t(*keys)[NODE_PEER_KEY_LEN] = (const uint8_t(*)[NODE_PEER_KEY_LEN])from->pub;
    TT_OK(node_peer_allow_set(to->peer, keys, 1));
    int link = node_peer_connect(from->peer, node_peer_endpoint(to->peer), to->pub);
    TT_CHECK(link >= 0, "connect: %s", shoal_error_message());
    from->links[i] = link;
    return link;
}

static void set_owner(tnode *n, int slot, const char *id, int link, bool self)
{
    snprintf(n->owners[slot].id, sizeof n->owners[slot].id, "%s", id);
    n->owners[slot].link = link;
    n->owners[slot].is_self = self;
    if (slot + 1 > n->n_owners)
        n->n_owners = slot + 1;
}

static void tnode_stop(tnode *n)
{
    node_cache_stop(n->cache);
    node_peer_delete(n->peer);
    node_cache_delete(n->cache);
    node_store_delete(n->store);
    tt_rmtree(n->dir);
}

static node_cache_object object_of(const fake_s3 *s)
{
    return (node_cache_object){.bucket = BUCKET, .key = s->key, .etag = s->etag, .size = s->len};
}

/* Block `index` through `n`'s read path equals the fake's bytes. */
static void check_read(tnode *n, const fake_s3 *truth, uint64_t index, node_cache_source want)
{
    node_cache_object o = object_of(truth);
    node_cache_block b;
    TT_CHECK(node_cache_read(n->cache, &o, index, &b) == 0, "read of block %llu: %s", (unsigned long long)index,
             shoal_error_message());
    uint64_t off = index * BS;
    size_t len = truth->len - off < BS ? truth->len - off : BS;
    TT_CHECK(b.len == len && memcmp(b.data, truth->data + off, len) == 0, "block %llu: wrong bytes",
             (unsigned long long)index);
    TT_CHECK((int)want < 0 || b.source == want, "block %llu came from source %d, want %d", (unsigned long long)index,
             b.source, want);
    node_cache_block_release(&b);
}

/* ---- single flight ---------------------------------------------------------------------------- */

typedef struct reader_arg {
    tnode *n;
    const fake_s3 *truth;
    int rc;
} reader_arg;

static void *reader(void *p)
{
    reader_arg *r = p;
    node_cache_object o = object_of(r->truth);
    node_cache_block b;
    r->rc = node_cache_read(r->n->cache, &o, 0, &b);
    if (r->rc == 0) {
        r->rc = b.len == BS && memcmp(b.data, r->truth->data, BS) == 0 ? 0 : 2;
        node_cache_block_release(&b);
    }
    return NULL;
}

/* Sixteen readers of one block nobody holds: one GET, the others wait for it. The GET is held at
 * the fake's gate until every reader has joined, so the interleaving is the same on any machine. */
TT_TEST(test_node_cache_many_readers_share_one_fetch)
{
    fake_s3 s3;
    fake_s3_init(&s3, "data/a.bin", "\"e1\"", 3 * BS, 1);
    tnode a;
    tnode_start(&a, 0, &s3, 2000, 60); /* no owners: this node fetches from S3 */
    gate_close(&s3, 0);
    enum { N = 16 };
    pthread_t th[N];
    reader_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (reader_arg){&a, &s3, -1};
        TT_CHECK(pthread_create(&th[i], NULL, reader, &args[i]) == 0, "thread");
    }
    wait_at_gate(&s3, 1);
    gate_open(&s3);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        TT_CHECK(args[i].rc == 0, "reader %d: %d (%s)", i, args[i].rc, shoal_error_message());
    }
    TT_CHECK(atomic_load(&s3.gets) == 1, "%d GETs for one block read by %d threads", atomic_load(&s3.gets), N);
    uint64_t local = atomic_load(&a.stats.reads_local), coalesced = atomic_load(&a.stats.reads_coalesced);
    TT_CHECK(coalesced + local == N - 1, "coalesced %llu + local %llu, want %d", (unsigned long long)coalesced,
             (unsigned long long)local, N - 1);
    check_read(&a, &s3, 0, NODE_CACHE_LOCAL);
    tnode_stop(&a);
    fake_s3_fini(&s3);
}

/* ---- owners ------------------------------------------------------------------------------------ */

/* A reader asks the block's owner, which fetches it from its S3 once and keeps it; the reader keeps
 * a near copy, so a second read stays local. */
TT_TEST(test_node_cache_reader_gets_the_block_from_its_owner)
{
    fake_s3 s3a, s3b;
    fake_s3_init(&s3a, "data/b.bin", "\"e1\"", 2 * BS, 2);
    fake_s3_init(&s3b, "data/b.bin", "\"e1\"", 2 * BS, 2);
    tnode a, b;
    tnode_start(&a, 0, &s3a, 2000, 60);
    tnode_start(&b, 1, &s3b, 2000, 60);
    int ab = tnode_link(&a, &b, 1);
    set_owner(&a, 0, "b", ab, false);
    set_owner(&b, 0, "b", -1, true);
    check_read(&a, &s3a, 0, NODE_CACHE_PEER);
    check_read(&a, &s3a, 0, NODE_CACHE_LOCAL);
    TT_CHECK(atomic_load(&s3a.gets) == 0 && atomic_load(&s3b.gets) == 1, "GETs: reader %d, owner %d; want 0 and 1",
             atomic_load(&s3a.gets), atomic_load(&s3b.gets));
    tnode_stop(&a);
    tnode_stop(&b);
    fake_s3_fini(&s3a);
    fake_s3_fini(&s3b);
}

/* The first owner does not answer (no one listens at its address): the reader goes on to the next
 * owner, and S3 is asked once, by that owner. */
TT_TEST(test_node_cache_failover_to_the_next_owner)
{
    fake_s3 s3a, s3c;
    fake_s3_init(&s3a, "data/c.bin", "\"e1\"", BS, 3);
    fake_s3_init(&s3c, "data/c.bin", "\"e1\"", BS, 3);
    tnode a, c, dead;
    tnode_start(&a, 0, &s3a, 200, 60);
    tnode_start(&dead, 1, &s3a, 200, 60);
    tnode_start(&c, 2, &s3c, 200, 60);
    int ad = tnode_link(&a, &dead, 1);
    int ac = tnode_link(&a, &c, 2);
    tnode_stop(&dead); /* its address now refuses connections */
    set_owner(&a, 0, "dead", ad, false);
    set_owner(&a, 1, "c", ac, false);
    set_owner(&c, 0, "c", -1, true);
    check_read(&a, &s3a, 0, NODE_CACHE_PEER);
    TT_CHECK(atomic_load(&s3c.gets) == 1 && atomic_load(&s3a.gets) == 0, "GETs: owner c %d, reader %d",
             atomic_load(&s3c.gets), atomic_load(&s3a.gets));
    tnode_stop(&a);
    tnode_stop(&c);
    fake_s3_fini(&s3a);
    fake_s3_fini(&s3c);
}

/* The owner finds the version gone (S3 answers CHANGED to its If-Match): the read ends with that
 * error, and the reader does not go to S3 itself for a version that no longer exists. */
TT_TEST(test_node_cache_changed_etag_ends_the_read)
{
    fake_s3 s3a, s3b;
    fake_s3_init(&s3a, "data/d.bin", "\"old\"", BS, 4);
    fake_s3_init(&s3b, "data/d.bin", "\"new\"", BS, 5);
    tnode a, b;
    tnode_start(&a, 0, &s3a, 2000, 60);
    tnode_start(&b, 1, &s3b, 2000, 60);
    set_owner(&a, 0, "b", tnode_link(&a, &b, 1), false);
    set_owner(&b, 0, "b", -1, true);
    node_cache_object o = object_of(&s3a); /* the reader still knows "old" */
    node_cache_block blk;
    TT_CHECK(node_cache_read(a.cache, &o, 0, &blk) == -1, "a read of a gone version succeeded");
    TT_CHECK(shoal_error_code() == SHOAL_ERR_S3_CHANGED, "error %s, want S3_CHANGED", shoal_error_name(shoal_error_code()));
    TT_CHECK(atomic_load(&s3a.gets) == 0, "the reader asked S3 itself (%d GETs)", atomic_load(&s3a.gets));
    tnode_stop(&a);
    tnode_stop(&b);
    fake_s3_fini(&s3a);
    fake_s3_fini(&s3b);
}

/* ---- progress: an owner is waited for while it works on the block ------------------------------ */

typedef struct timed_read {
    tnode *n;
    const fake_s3 *truth;
    int rc;
    node_cache_source source;
    uint64_t took_us;
    atomic_bool done;
} timed_read;

static void *timed_reader(void *p)
{
    timed_read *t = p;
    node_cache_object o = object_of(t->truth);
    node_cache_block b;
    uint64_t t0 = shoal_clock_mono_us();
    t->rc = node_cache_read(t->n->cache, &o, 0, &b);
    t->took_us = shoal_clock_mono_us() - t0;
    if (t->rc == 0) {
        t->source = b.source;
        t->rc = b.len == BS && memcmp(b.data, t->truth->data, BS) == 0 ? 0 : 2;
        node_cache_block_release(&b);
    }
    atomic_store(&t->done, true);
    return NULL;
}

#define SLOW_TIMEOUT_MS 300

/* Reader a and owner b of one block-sized object `key` (b reads its own fake S3), with the slow
 * owner tests' peer timeout and a's bound on waiting for work (0: the default). */
static void pair_start(tnode *a, tnode *b, fake_s3 *s3a, fake_s3 *s3b, const char *key, unsigned seed,
                       uint32_t max_wait_ms)
{
    fake_s3_init(s3a, key, "\"e1\"", BS, seed);
    fake_s3_init(s3b, key, "\"e1\"", BS, seed);
    tnode_start_bounded(a, 0, s3a, SLOW_TIMEOUT_MS, 60, max_wait_ms);
    tnode_start(b, 1, s3b, SLOW_TIMEOUT_MS, 60);
    set_owner(a, 0, "b", tnode_link(a, b, 1), false);
    set_owner(b, 0, "b", -1, true);
}

/* Frees pair_start's fake S3s (after both nodes stopped). */
static void pair_fini(fake_s3 *s3a, fake_s3 *s3b)
{
    fake_s3_fini(s3a);
    fake_s3_fini(s3b);
}

/* The owner's S3 fetch is held at the fake's gate far beyond the reader's peer timeout; the owner
 * answers the reader's PINGs "working on it", so the reader waits and makes no GET of its own. The
 * gate opens only after the owner said so at least eight times (two timeouts' worth of PINGs) and
 * three timeouts have passed, so the wait outlasted the timeout on any machine. */
TT_TEST(test_node_cache_reader_waits_for_an_owner_working_longer_than_the_peer_timeout)
{
    fake_s3 s3a, s3b;
    tnode a, b;
    pair_start(&a, &b, &s3a, &s3b, "data/slow.bin", 11, 0);
    gate_close(&s3b, 0);
    timed_read t = {&a, &s3a, -1, 0, 0, false};
    pthread_t th;
    uint64_t t0 = shoal_clock_mono_us();
    TT_CHECK(pthread_create(&th, NULL, timed_reader, &t) == 0, "thread");
    wait_at_gate(&s3b, 1);
    /* (A reader that gave up and fetched the block itself ends the wait too, and fails below.) */
    while ((atomic_load(&b.pongs_working) < 8 || shoal_clock_mono_us() - t0 < 3 * SLOW_TIMEOUT_MS * 1000u) &&
           !atomic_load(&t.done))
        usleep(1000);
    gate_open(&s3b);
    pthread_join(th, NULL);
    TT_CHECK(t.rc == 0 && t.source == NODE_CACHE_PEER, "read: rc %d, source %d (want the owner's block)", t.rc,
             t.source);
    TT_CHECK(atomic_load(&s3a.gets) == 0 && atomic_load(&s3b.gets) == 1,
             "GETs: reader %d, owner %d; want 0 and 1 (the reader must not fetch while the owner works)",
             atomic_load(&s3a.gets), atomic_load(&s3b.gets));
    TT_CHECK(atomic_load(&a.stats.peer_timeouts) == 0, "the reader counted %llu peer timeouts",
             (unsigned long long)atomic_load(&a.stats.peer_timeouts));
    tt_note("waited %llu ms for the owner (peer timeout %d ms), %d PINGs answered working",
            (unsigned long long)(t.took_us / 1000), SLOW_TIMEOUT_MS, atomic_load(&b.pongs_working));
    tnode_stop(&a);
    tnode_stop(&b);
    pair_fini(&s3a, &s3b);
}

/* An owner that answers PING but has lost the request (it never reached its queue) says it is
 * idle on the block: the reader gives up after one timeout of that, not at the bound, and reads S3. */
TT_TEST(test_node_cache_owner_idle_on_the_request_is_left_after_one_timeout)
{
    fake_s3 s3a, s3b;
    tnode a, b;
    pair_start(&a, &b, &s3a, &s3b, "data/idle.bin", 12, 60000);
    b.drop_gets = true;
    timed_read t = {&a, &s3a, -1, 0, 0, false};
    timed_reader(&t);
    TT_CHECK(t.rc == 0 && t.source == NODE_CACHE_S3, "read: rc %d, source %d (want S3 after the idle owner)", t.rc,
             t.source);
    TT_CHECK(atomic_load(&b.pongs_idle) >= 1 && atomic_load(&b.pongs_working) == 0,
             "the owner answered %d PINGs idle and %d working; want at least one idle and none working",
             atomic_load(&b.pongs_idle), atomic_load(&b.pongs_working));
    TT_CHECK(atomic_load(&a.stats.peer_timeouts) == 1, "peer timeouts %llu, want 1",
             (unsigned long long)atomic_load(&a.stats.peer_timeouts));
    /* Idle answers never extend the wait: it ended near one timeout, far below the 60 s bound. */
    TT_CHECK(t.took_us < 30000000u, "the read took %llu ms", (unsigned long long)(t.took_us / 1000));
    tnode_stop(&a);
    tnode_stop(&b);
    pair_fini(&s3a, &s3b);
}

/* An owner that reports work forever without answering (a stuck worker) holds the reader only up to
 * the bound (peer_max_wait_ms, here 1.5 s against a 300 ms timeout); then the reader reads S3. */
TT_TEST(test_node_cache_wait_for_a_working_owner_is_bounded)
{
    fake_s3 s3a, s3b;
    tnode a, b;
    pair_start(&a, &b, &s3a, &s3b, "data/stuck.bin", 13, 1500);
    b.drop_gets = true;
    b.always_working = true;
    timed_read t = {&a, &s3a, -1, 0, 0, false};
    timed_reader(&t);
    TT_CHECK(t.rc == 0 && t.source == NODE_CACHE_S3, "read: rc %d, source %d (want S3 at the bound)", t.rc, t.source);
    TT_CHECK(t.took_us >= 1500000u, "the read gave up after %llu ms, before the 1500 ms bound",
             (unsigned long long)(t.took_us / 1000));
    TT_CHECK(atomic_load(&a.stats.peer_timeouts) == 1, "peer timeouts %llu, want 1",
             (unsigned long long)atomic_load(&a.stats.peer_timeouts));
    tnode_stop(&a);
    tnode_stop(&b);
    pair_fini(&s3a, &s3b);
}

/* The store id of block `index` of `o` (as the read path names it). */
static const uint8_t *blk_id(const node_cache_object *o, uint64_t index)
{
    static uint8_t id[NODE_STORE_ID_LEN];
    dht_id d = dht_block_id(o->bucket, o->key, o->etag, index);
    for (int i = 0; i < 8; i++) {
        id[i] = (uint8_t)(d.hi >> (56 - 8 * i));
        id[8 + i] = (uint8_t)(d.lo >> (56 - 8 * i));
    }
    return id;
}

/* ---- streaming ---------------------------------------------------------------------------------- */

/* A reader of the first bytes of a block nobody holds gets them while the rest of the block is
 * still on its way: the fake holds the GET after 128 KiB, and the read of 4 KiB returns. */
TT_TEST(test_node_cache_streaming_read_returns_before_the_block_arrived)
{
    fake_s3 s3;
    fake_s3_init(&s3, "data/e.bin", "\"e1\"", BS, 6);
    tnode a;
    tnode_start(&a, 0, &s3, 2000, 60);
    gate_close(&s3, 128 * 1024); /* past the 64 KiB a stream wakes its readers at */
    node_cache_object o = object_of(&s3);
    uint8_t buf[4096];
    ssize_t n = node_cache_read_stream(a.cache, &o, 0, 0, sizeof buf, buf);
    TT_CHECK(n == (ssize_t)sizeof buf && memcmp(buf, s3.data, sizeof buf) == 0,
             "the first 4 KiB did not come while the GET was held (%zd)", n);
    /* The GET cannot end while the gate is shut: the bytes came from a block still arriving. */
    wait_at_gate(&s3, 1);
    TT_CHECK(!node_store_contains(a.store, blk_id(&o, 0), NULL, NULL), "the block was stored before the gate opened");
    gate_open(&s3);
    check_read(&a, &s3, 0, (node_cache_source)-1); /* joins the fetch, or finds it stored */
    TT_CHECK(atomic_load(&s3.gets) == 1, "%d GETs", atomic_load(&s3.gets));
    tnode_stop(&a);
    fake_s3_fini(&s3);
}

/* ---- metadata and listings --------------------------------------------------------------------- */

TT_TEST(test_node_cache_head_is_cached_for_the_ttl_and_forgotten_on_demand)
{
    fake_s3 s3;
    fake_s3_init(&s3, "data/f.bin", "\"e1\"", 100, 7);
    tnode a;
    tnode_start(&a, 0, &s3, 2000, 60);
    s3_object_info info;
    for (int i = 0; i < 5; i++)
        TT_OK(node_cache_head(a.cache, BUCKET, "data/f.bin", &info));
    TT_CHECK(atomic_load(&s3.heads) == 1 && info.size == 100, "%d HEADs for 5 asks", atomic_load(&s3.heads));
    node_cache_forget(a.cache, BUCKET, "data/f.bin");
    TT_OK(node_cache_head(a.cache, BUCKET, "data/f.bin", &info));
    TT_CHECK(atomic_load(&s3.heads) == 2, "forget did not make the next ask go to S3");
    TT_CHECK(node_cache_head(a.cache, BUCKET, "data/none", &info) == -1 &&
                 node_cache_head(a.cache, BUCKET, "data/none", &info) == -1 &&
                 shoal_error_code() == SHOAL_ERR_S3_NO_SUCH_KEY,
             "a missing key");
    TT_CHECK(atomic_load(&s3.heads) == 3, "a miss was asked twice within the negative TTL");
    tnode_stop(&a);
    fake_s3_fini(&s3);
}

/* Metadata has one owner per object: a node that does not own it asks the owner, which HEADs S3
 * once and answers every node from its table (with the answer's age); the asker keeps the answer
 * too. A forget makes the next ask demand an answer of age 0, so the owner asks S3 again; a missing
 * object comes back as a miss and is remembered as one. */
TT_TEST(test_node_cache_head_goes_to_the_objects_metadata_owner_once_for_every_node)
{
    fake_s3 s3a, s3b;
    fake_s3_init(&s3a, "data/h.bin", "\"e1\"", 3 * BS + 5, 9);
    fake_s3_init(&s3b, "data/h.bin", "\"e1\"", 3 * BS + 5, 9);
    tnode a, b;
    tnode_start(&a, 0, &s3a, 2000, 60);
    tnode_start(&b, 1, &s3b, 2000, 60);
    int ab = tnode_link(&a, &b, 1);
    set_owner(&a, 0, "b", ab, false);
    set_owner(&b, 0, "b", -1, true);
    s3_object_info info;
    for (int i = 0; i < 3; i++) {
        memset(&info, 0, sizeof info);
        TT_OK(node_cache_head(a.cache, BUCKET, "data/h.bin", &info));
        TT_CHECK(info.size == 3 * BS + 5 && strcmp(info.etag, "\"e1\"") == 0, "ask %d: size %llu ETag %s", i,
                 (unsigned long long)info.size, info.etag);
    }
    TT_OK(node_cache_head(b.cache, BUCKET, "data/h.bin", &info));
    TT_CHECK(atomic_load(&s3a.heads) == 0 && atomic_load(&s3b.heads) == 1,
             "HEADs: asker %d, owner %d; want 0 and 1", atomic_load(&s3a.heads), atomic_load(&s3b.heads));
    node_cache_forget(a.cache, BUCKET, "data/h.bin");
    TT_OK(node_cache_head(a.cache, BUCKET, "data/h.bin", &info));
    TT_CHECK(atomic_load(&s3a.heads) == 0 && atomic_load(&s3b.heads) == 2,
             "after a forget: HEADs asker %d, owner %d; want 0 and 2", atomic_load(&s3a.heads),
             atomic_load(&s3b.heads));
    for (int i = 0; i < 2; i++)
        TT_CHECK(node_cache_head(a.cache, BUCKET, "data/none", &info) == -1 &&
                     shoal_error_code() == SHOAL_ERR_S3_NO_SUCH_KEY,
                 "a missing key: %s", shoal_error_name(shoal_error_code()));
    TT_CHECK(atomic_load(&s3a.heads) == 0 && atomic_load(&s3b.heads) == 3,
             "a miss: HEADs asker %d, owner %d; want 0 and 3", atomic_load(&s3a.heads), atomic_load(&s3b.heads));
    tnode_stop(&a);
    tnode_stop(&b);
    fake_s3_fini(&s3a);
    fake_s3_fini(&s3b);
}

/* A listing page is fetched once per metadata TTL however often it is asked; with a TTL of 0 every
 * ask lists. */
TT_TEST(test_node_cache_listing_pages_are_fetched_once_per_ttl)
{
    for (int ttl = 60; ttl >= 0; ttl -= 60) {
        fake_s3 s3;
        fake_s3_init(&s3, "dir/g.bin", "\"e1\"", 10, 8);
        tnode a;
        tnode_start(&a, 0, &s3, 2000, (uint32_t)ttl);
        for (int i = 0; i < 10; i++) {
            s3_list_args la = {.bucket = BUCKET, .prefix = "dir/", .delimiter = "/"};
            s3_list_page pg;
            s3_list_page_create(&pg);
            TT_OK(node_cache_list(a.cache, &la, &pg));
            TT_CHECK(pg.n_objects == 1 && !strcmp(pg.objects[0].key, "dir/g.bin") && pg.objects[0].size == 10,
                     "the page lost its entry");
            s3_list_page_destroy(&pg);
        }
        int want = ttl ? 1 : 10;
        TT_CHECK(atomic_load(&s3.lists) == want, "TTL %d: %d LISTs for 10 asks, want %d", ttl, atomic_load(&s3.lists),
                 want);
        tnode_stop(&a);
        fake_s3_fini(&s3);
    }
}

TT_MAIN()
