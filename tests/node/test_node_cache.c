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
#include <fcntl.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>
#include <xxhash.h>

#define BUCKET "bkt"
#define BS (256 * 1024) /* block size */
#define MAX_NODES 6

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
    atomic_int cuts; /* the next `cuts` GETs fail after delivering `cut_after` bytes of their body */
    size_t cut_after;
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
        if (done >= s->cut_after && atomic_load(&s->cuts) > 0) {
            atomic_fetch_sub(&s->cuts, 1);
            return shoal_error_set(SHOAL_ERR_S3_TRUNCATED, "fake S3: body cut after %llu bytes",
                                   (unsigned long long)done);
        }
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
    bool drop_heads; /* HEADs too */
    bool always_working; /* PINGs are answered WORKING whatever the cache says (a stuck owner) */
    atomic_int pongs_working, pongs_idle; /* what PINGs that named a work item were answered */
    uint8_t allowed[MAX_NODES][NODE_PEER_KEY_LEN]; /* keys its transport admits */
    int n_allowed;
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
static void on_head(void *ud, node_peer_incoming *in)
{
    tnode *n = ud;
    if (n->drop_heads)
        node_peer_incoming_discard(in);
    else
        node_cache_on_head(n->cache, in);
}
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

/* Node number `idx`: its own store, peer transport (serving on loopback) and read path over the
 * fake `s3` and the fake placement (no owners until set_owner: then it reads S3 directly), with
 * `replicas` owners per block and a bound on the wait for an owner that keeps reporting work
 * (0: the default). */
/* What the next nodes started take for read-ahead workers and for the bytes of one GET of a run of
 * blocks (0: the defaults), for the tests of runs. */
static unsigned g_readahead_threads;
static uint64_t g_run_bytes;

static void tnode_start_with(tnode *n, int idx, fake_s3 *s3, uint32_t peer_timeout_ms, uint32_t metadata_ttl_s,
                             unsigned replicas, uint32_t peer_max_wait_ms)
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
    node_cache_config cc = {.store = n->store,
                            .peer = n->peer,
                            .stats = &n->stats,
                            .block_size = BS,
                            .readahead_threads = g_readahead_threads,
                            .run_bytes = g_run_bytes,
                            .replicas = replicas,
                            .peer_timeout_ms = peer_timeout_ms,
                            .peer_max_wait_ms = peer_max_wait_ms,
                            .metadata_ttl_s = metadata_ttl_s,
                            .negative_ttl_s = 1,
                            .deps = &n->deps};
    n->cache = node_cache_new(&cc);
    TT_CHECK(n->cache, "cache: %s", shoal_error_message());
    for (int i = 0; i < MAX_NODES; i++)
        n->links[i] = -1;
}

static void tnode_start_r(tnode *n, int idx, fake_s3 *s3, uint32_t peer_timeout_ms, uint32_t metadata_ttl_s,
                          unsigned replicas)
{
    tnode_start_with(n, idx, s3, peer_timeout_ms, metadata_ttl_s, replicas, 0);
}

static void tnode_start(tnode *n, int idx, fake_s3 *s3, uint32_t peer_timeout_ms, uint32_t metadata_ttl_s)
{
    tnode_start_with(n, idx, s3, peer_timeout_ms, metadata_ttl_s, 2, 0);
}

/* tnode_start with a bound on the wait for an owner that keeps reporting work. */
static void tnode_start_bounded(tnode *n, int idx, fake_s3 *s3, uint32_t peer_timeout_ms, uint32_t metadata_ttl_s,
                                uint32_t peer_max_wait_ms)
{
    tnode_start_with(n, idx, s3, peer_timeout_ms, metadata_ttl_s, 2, peer_max_wait_ms);
}

/* Nodes 0.. of the NULL-terminated list, over one fake S3, `replicas` owners per block. */
static void tnodes_start(fake_s3 *s3, unsigned replicas, tnode *first, ...)
{
    va_list ap;
    va_start(ap, first);
    int idx = 0;
    for (tnode *n = first; n; n = va_arg(ap, tnode *))
        tnode_start_r(n, idx++, s3, 2000, 60, replicas);
    va_end(ap);
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
    TT_CHECK(to->n_allowed < MAX_NODES, "too many links");
    memcpy(to->allowed[to->n_allowed++], from->pub, NODE_PEER_KEY_LEN);
    TT_OK(node_peer_allow_set(to->peer, (const uint8_t(*)[NODE_PEER_KEY_LEN])to->allowed, (size_t)to->n_allowed));
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

/* Reader a (node 0) and owner b (node 1) of one object, each over a fake S3 of its own, with the
 * peer timeout and a's bound on waiting for a working owner (0: the default). */
static void pair_link(tnode *a, tnode *b, fake_s3 *s3a, fake_s3 *s3b, uint32_t peer_timeout_ms, uint32_t max_wait_ms)
{
    tnode_start_bounded(a, 0, s3a, peer_timeout_ms, 60, max_wait_ms);
    tnode_start(b, 1, s3b, peer_timeout_ms, 60);
    set_owner(a, 0, "b", tnode_link(a, b, 1), false);
    set_owner(b, 0, "b", -1, true);
}

/* Stops pair_link's nodes, then frees their fake S3s. */
static void pair_stop(tnode *a, tnode *b, fake_s3 *s3a, fake_s3 *s3b)
{
    tnode_stop(a);
    tnode_stop(b);
    fake_s3_fini(s3a);
    fake_s3_fini(s3b);
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
    pair_link(&a, &b, &s3a, &s3b, 2000, 0);
    check_read(&a, &s3a, 0, NODE_CACHE_PEER);
    check_read(&a, &s3a, 0, NODE_CACHE_LOCAL);
    TT_CHECK(atomic_load(&s3a.gets) == 0 && atomic_load(&s3b.gets) == 1, "GETs: reader %d, owner %d; want 0 and 1",
             atomic_load(&s3a.gets), atomic_load(&s3b.gets));
    pair_stop(&a, &b, &s3a, &s3b);
}

/* Cases with a silent peer tell it from a live one by the peer timeout. On a loaded machine a live
 * peer's answer can come later than any timeout, and the reader then rightly stops waiting for it:
 * such a round proves nothing about what the case checks. The reader's own count of peer timeouts
 * shows it (more than the silent peers explain), so the case runs the round again, at most
 * DISTURBED_ROUNDS_MAX times, and asserts on the first round no late answer disturbed. The bytes
 * read are checked in every round. A reader that wrongly gave up on live peers would be disturbed
 * in every round and fail the case. */
#define DISTURBED_ROUNDS_MAX 4

/* Runs round(key, seed) with a new object each time (prefix + round number) until one runs
 * undisturbed, at most DISTURBED_ROUNDS_MAX times; false when none did. */
static bool rounds_until_undisturbed(bool (*round)(const char *key, unsigned seed), const char *prefix, unsigned seed)
{
    for (unsigned r = 0; r < DISTURBED_ROUNDS_MAX; r++) {
        char key[32];
        snprintf(key, sizeof key, "data/%s%u.bin", prefix, r);
        if (round(key, seed + r))
            return true;
    }
    return false;
}

/* One round of the fail-over case (key names the object, new each round). true when it ran
 * undisturbed and its counts were checked; false when a live owner's answer came late. */
static bool failover_round(const char *key, unsigned seed)
{
    fake_s3 s3a, s3c;
    fake_s3_init(&s3a, key, "\"e1\"", BS, seed);
    fake_s3_init(&s3c, key, "\"e1\"", BS, seed);
    tnode a, c, dead;
    tnode_start(&a, 0, &s3a, 1000, 60);
    tnode_start(&dead, 1, &s3a, 1000, 60);
    tnode_start(&c, 2, &s3c, 1000, 60);
    int ad = tnode_link(&a, &dead, 1);
    int ac = tnode_link(&a, &c, 2);
    tnode_stop(&dead); /* its address now refuses connections */
    set_owner(&a, 0, "dead", ad, false);
    set_owner(&a, 1, "c", ac, false);
    set_owner(&c, 0, "c", -1, true);
    check_read(&a, &s3a, 0, (node_cache_source)-1);
    unsigned long long timeouts = atomic_load(&a.stats.peer_timeouts);
    bool undisturbed = timeouts <= 1; /* the dead owner's */
    if (undisturbed) {
        TT_CHECK(timeouts == 1, "the reader counted no timeout for the dead owner");
        TT_CHECK(atomic_load(&s3c.gets) == 1 && atomic_load(&s3a.gets) == 0, "GETs: owner c %d, reader %d",
                 atomic_load(&s3c.gets), atomic_load(&s3a.gets));
    } else
        fprintf(stderr, "# %s: the live owner answered later than the peer timeout (%llu timeouts); again\n", key,
                timeouts);
    tnode_stop(&a);
    tnode_stop(&c);
    fake_s3_fini(&s3a);
    fake_s3_fini(&s3c);
    return undisturbed;
}

/* The first owner does not answer (no one listens at its address): the reader goes on to the next
 * owner, and S3 is asked once, by that owner. */
TT_TEST(test_node_cache_failover_to_the_next_owner)
{
    TT_CHECK(rounds_until_undisturbed(failover_round, "c", 3),
             "in each of %d rounds the reader gave up on the live owner too", DISTURBED_ROUNDS_MAX);
}

/* The owner finds the version gone (S3 answers CHANGED to its If-Match): the read ends with that
 * error, and the reader does not go to S3 itself for a version that no longer exists. */
TT_TEST(test_node_cache_changed_etag_ends_the_read)
{
    fake_s3 s3a, s3b;
    fake_s3_init(&s3a, "data/d.bin", "\"old\"", BS, 4);
    fake_s3_init(&s3b, "data/d.bin", "\"new\"", BS, 5);
    tnode a, b;
    pair_link(&a, &b, &s3a, &s3b, 2000, 0);
    node_cache_object o = object_of(&s3a); /* the reader still knows "old" */
    node_cache_block blk;
    TT_CHECK(node_cache_read(a.cache, &o, 0, &blk) == -1, "a read of a gone version succeeded");
    TT_CHECK(shoal_error_code() == SHOAL_ERR_S3_CHANGED, "error %s, want S3_CHANGED", shoal_error_name(shoal_error_code()));
    TT_CHECK(atomic_load(&s3a.gets) == 0, "the reader asked S3 itself (%d GETs)", atomic_load(&s3a.gets));
    pair_stop(&a, &b, &s3a, &s3b);
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
    pair_link(a, b, s3a, s3b, SLOW_TIMEOUT_MS, max_wait_ms);
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
    pair_stop(&a, &b, &s3a, &s3b);
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
    pair_stop(&a, &b, &s3a, &s3b);
}

/* An owner that reports work forever without answering (a stuck worker) holds the reader only up to
 * the bound (peer_max_wait_ms, here 4 s); then the reader reads S3. The peer timeout is 1.5 s, not
 * SLOW_TIMEOUT_MS: a reader gives up early, rightly, when a PONG comes later than the timeout, and
 * on a loaded machine under a sanitizer one may come 300 ms late; 1.5 s late it does not. */
#define BOUNDED_TIMEOUT_MS 1500
#define BOUNDED_MAX_WAIT_MS 4000
TT_TEST(test_node_cache_wait_for_a_working_owner_is_bounded)
{
    fake_s3 s3a, s3b;
    tnode a, b;
    fake_s3_init(&s3a, "data/stuck.bin", "\"e1\"", BS, 13);
    fake_s3_init(&s3b, "data/stuck.bin", "\"e1\"", BS, 13);
    pair_link(&a, &b, &s3a, &s3b, BOUNDED_TIMEOUT_MS, BOUNDED_MAX_WAIT_MS);
    b.drop_gets = true;
    b.always_working = true;
    timed_read t = {&a, &s3a, -1, 0, 0, false};
    timed_reader(&t);
    TT_CHECK(t.rc == 0 && t.source == NODE_CACHE_S3, "read: rc %d, source %d (want S3 at the bound)", t.rc, t.source);
    TT_CHECK(t.took_us >= BOUNDED_MAX_WAIT_MS * 1000u, "the read gave up after %llu ms, before the %d ms bound",
             (unsigned long long)(t.took_us / 1000), BOUNDED_MAX_WAIT_MS);
    TT_CHECK(atomic_load(&a.stats.peer_timeouts) == 1, "peer timeouts %llu, want 1",
             (unsigned long long)atomic_load(&a.stats.peer_timeouts));
    pair_stop(&a, &b, &s3a, &s3b);
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
    gate_close(&s3, 128 * 1024); /* past the 4 KiB the reader waits for */
    node_cache_object o = object_of(&s3);
    uint8_t buf[4096];
    /* 0 means the read-ahead worker had not begun the fetch within the stream's short start wait
     * (a busy machine): the caller may ask again, and then joins the fetch that has begun. */
    ssize_t n = 0;
    for (int tries = 0; n == 0 && tries < 500; tries++)
        n = node_cache_read_stream(a.cache, &o, 0, 0, sizeof buf, buf);
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

/* A block fetched into a buffer of the budget is stored from that buffer: the buffer is laid out
 * as the start of the block file (the store's header before the bytes, on a page boundary), so
 * the store's direct write takes the bytes where they are and copies only the payload's last
 * partial 4 KiB and the chunk sums. A block under 256 KiB (a malloc'd buffer, written buffered)
 * copies nothing either. The stored blocks then read back from the store. */
TT_TEST(test_node_cache_fetched_block_is_stored_from_its_buffer_without_a_copy)
{
    fake_s3 s3;
    fake_s3_init(&s3, "data/f.bin", "\"e1\"", 2 * BS + 1000, 7);
    tnode a;
    tnode_start(&a, 0, &s3, 2000, 60);
    int probe = open(a.dir, O_RDWR | O_TMPFILE | O_DIRECT, 0600);
    if (probe < 0) {
        tnode_stop(&a);
        fake_s3_fini(&s3);
        TT_SKIP("the file system of the test directory refuses O_DIRECT: the store writes buffered here");
    }
    close(probe);
    node_cache_object o = object_of(&s3);
    for (uint64_t i = 0; i < 3; i++)
        check_read(&a, &s3, i, (node_cache_source)-1);
    for (uint64_t i = 0; i < 3; i++)
        while (!node_store_contains(a.store, blk_id(&o, i), NULL, NULL)) /* the test's deadline ends a hang */
            usleep(1000);
    node_store_stats st;
    node_store_get_stats(a.store, &st);
    uint64_t tail = node_store_file_size(BS) - (NODE_STORE_HEADER_LEN + BS) / 4096 * 4096;
    TT_CHECK(st.puts == 3 && st.direct_copied_bytes == 2 * tail,
             "%llu blocks stored, %llu bytes copied for their direct writes, want 3 and %llu (two blocks' tails)",
             (unsigned long long)st.puts, (unsigned long long)st.direct_copied_bytes, (unsigned long long)(2 * tail));
    for (uint64_t i = 0; i < 3; i++)
        check_read(&a, &s3, i, NODE_CACHE_LOCAL);
    /* each block fetched once: read-ahead may take consecutive blocks with one GET */
    TT_CHECK(atomic_load(&s3.gets) >= 1 && atomic_load(&s3.gets) <= 3, "%d GETs for 3 blocks", atomic_load(&s3.gets));
    tnode_stop(&a);
    fake_s3_fini(&s3);
}

/* A sequential reader asks for the same window ahead at every read. Asked again, a block queued
 * and not begun, or being fetched, queues nothing more: with every GET held at the gate (8 blocks
 * begun by the 8 read-ahead workers, 8 queued behind them), ten more asks for all 16 blocks leave
 * 16 blocks pending, not 96; once the gate opens each block is fetched once. */
TT_TEST(test_node_cache_read_ahead_asked_again_queues_each_block_once)
{
    fake_s3 s3;
    fake_s3_init(&s3, "data/ra.bin", "\"ra1\"", 16 * BS, 9);
    tnode a;
    g_run_bytes = BS; /* one GET per block, so the GETs at the gate are the blocks begun */
    tnode_start(&a, 0, &s3, 2000, 60);
    gate_close(&s3, 0);
    node_cache_object o = object_of(&s3);
    node_cache_prefetch(a.cache, &o, 0, 16);
    wait_at_gate(&s3, 8);
    for (int i = 0; i < 10; i++)
        node_cache_prefetch(a.cache, &o, 0, 16);
    uint64_t pending = atomic_load(&a.stats.reads_readahead_pending);
    TT_CHECK(pending == 16, "%llu read-ahead blocks pending for 16 blocks", (unsigned long long)pending);
    gate_open(&s3);
    while (atomic_load(&a.stats.reads_readahead_pending) > 0)
        usleep(1000); /* the test's own deadline ends a hang */
    for (uint64_t i = 0; i < 16; i++)
        TT_CHECK(node_store_contains(a.store, blk_id(&o, i), NULL, NULL), "block %llu was not fetched ahead",
                 (unsigned long long)i);
    TT_CHECK(atomic_load(&s3.gets) == 16, "%d GETs for 16 blocks", atomic_load(&s3.gets));
    tnode_stop(&a);
    fake_s3_fini(&s3);
}

/* ---- runs: one GET for consecutive blocks read ahead --------------------------------------------- */

/* Blocks [first, first + count) of the fake's object are stored here with the fake's bytes. */
static void check_stored(tnode *n, const fake_s3 *truth, uint64_t first, uint64_t count)
{
    node_cache_object o = object_of(truth);
    for (uint64_t i = first; i < first + count; i++) {
        /* A run's block is stored by a worker once complete: wait for it (the test's deadline ends a
         * hang), then read it back. */
        while (!node_store_contains(n->store, blk_id(&o, i), NULL, NULL))
            usleep(1000);
        check_read(n, truth, i, NODE_CACHE_LOCAL);
    }
}

static void wait_readahead_idle(tnode *n)
{
    while (atomic_load(&n->stats.reads_readahead_pending) > 0)
        usleep(1000); /* the test's own deadline ends a hang */
}

/* A node with one read-ahead worker (so no other worker begins a block of a window meanwhile) over
 * a fake object of `blocks` blocks; *o names the object. */
static void run_node_start(tnode *a, fake_s3 *s3, const char *key, size_t blocks, unsigned seed, node_cache_object *o)
{
    fake_s3_init(s3, key, "\"r1\"", blocks * BS, seed);
    g_readahead_threads = 1;
    tnode_start(a, 0, s3, 2000, 60);
    *o = object_of(s3);
}

/* Read-ahead of 16 consecutive blocks (4 MiB in all, within a run's 16 MiB) is one S3 GET, not 16:
 * the worker that begins the first block finds the others queued and takes them into its GET. One
 * read-ahead worker, so no other worker begins a block of the window meanwhile. */
TT_TEST(test_node_cache_read_ahead_of_consecutive_blocks_is_one_get)
{
    fake_s3 s3;
    tnode a;
    node_cache_object o;
    run_node_start(&a, &s3, "data/run.bin", 16, 11, &o);
    node_cache_prefetch(a.cache, &o, 0, 16);
    wait_readahead_idle(&a);
    TT_CHECK(atomic_load(&s3.gets) == 1, "%d GETs for 16 consecutive blocks read ahead, want 1", atomic_load(&s3.gets));
    TT_CHECK(atomic_load(&a.stats.reads_run_gets) == 1 && atomic_load(&a.stats.reads_run_blocks) == 16,
             "reads.run_gets %llu, reads.run_blocks %llu; want 1 and 16",
             (unsigned long long)atomic_load(&a.stats.reads_run_gets),
             (unsigned long long)atomic_load(&a.stats.reads_run_blocks));
    check_stored(&a, &s3, 0, 16);
    TT_CHECK(atomic_load(&s3.gets) == 1, "reading the blocks back cost %d more GETs", atomic_load(&s3.gets) - 1);
    tnode_stop(&a);
    fake_s3_fini(&s3);
}

/* A run's GET is bounded: 16 blocks of 256 KiB with runs of at most 1 MiB are 4 GETs of 4 blocks. */
TT_TEST(test_node_cache_run_of_blocks_stays_within_its_bound)
{
    fake_s3 s3;
    tnode a;
    node_cache_object o;
    g_run_bytes = 4 * BS;
    run_node_start(&a, &s3, "data/bound.bin", 16, 12, &o);
    node_cache_prefetch(a.cache, &o, 0, 16);
    wait_readahead_idle(&a);
    TT_CHECK(atomic_load(&s3.gets) == 4, "%d GETs for 16 blocks in runs of 4, want 4", atomic_load(&s3.gets));
    check_stored(&a, &s3, 0, 16);
    tnode_stop(&a);
    fake_s3_fini(&s3);
}

static void *block1_reader(void *p)
{
    tnode *n = p;
    check_read(n, n->s3, 1, (node_cache_source)-1);
    return NULL;
}

/* While a run's GET is held after its first block and 4 KiB of the second: the first block is
 * published and stored (its readers do not wait for the rest of the run), a reader of the second
 * block's first bytes gets them from the GET in flight, and a whole-block reader of the second
 * joins its flight; once the GET goes on, nothing was fetched twice. */
TT_TEST(test_node_cache_readers_of_a_run_share_its_get)
{
    fake_s3 s3;
    tnode a;
    node_cache_object o;
    run_node_start(&a, &s3, "data/share.bin", 4, 13, &o);
    gate_close(&s3, BS + 8192);
    node_cache_prefetch(a.cache, &o, 0, 4);
    wait_at_gate(&s3, 1);
    check_read(&a, &s3, 0, (node_cache_source)-1); /* from the run's published block */
    while (!node_store_contains(a.store, blk_id(&o, 0), NULL, NULL))
        usleep(1000); /* stored by a worker while the GET is held; the test's deadline ends a hang */
    uint8_t buf[4096];
    TT_CHECK(node_cache_read_stream(a.cache, &o, 1, 0, sizeof buf, buf) == (ssize_t)sizeof buf &&
                 memcmp(buf, s3.data + BS, sizeof buf) == 0,
             "the first bytes of block 1 did not come from the run's GET in flight");
    /* A whole-block reader of block 1 finds its flight (or, if it comes late, the block stored). */
    pthread_t t;
    pthread_create(&t, NULL, block1_reader, &a);
    gate_open(&s3);
    pthread_join(t, NULL);
    check_read(&a, &s3, 1, (node_cache_source)-1);
    wait_readahead_idle(&a);
    TT_CHECK(atomic_load(&s3.gets) == 1, "%d GETs for 4 blocks with readers joining the run, want 1",
             atomic_load(&s3.gets));
    check_stored(&a, &s3, 0, 4);
    tnode_stop(&a);
    fake_s3_fini(&s3);
}

/* A run's GET cut after its first block and half of the second (the fake fails it as the S3 client
 * fails a body cut after its retries): the first block stays stored, the others' flights fail so
 * that their fetches begin again, and every block ends stored with the right bytes. */
TT_TEST(test_node_cache_run_cut_midway_keeps_complete_blocks_and_refetches_the_rest)
{
    fake_s3 s3;
    tnode a;
    node_cache_object o;
    run_node_start(&a, &s3, "data/cut.bin", 4, 14, &o);
    s3.cut_after = BS + BS / 2;
    atomic_store(&s3.cuts, 1);
    node_cache_prefetch(a.cache, &o, 0, 4);
    wait_readahead_idle(&a);
    /* Block 0 stored by the cut GET; 1, 2, 3 each by the task that asked for it, whose run cannot
     * take the next ones (the cut run took them out of the queue): 4 GETs. */
    TT_CHECK(atomic_load(&s3.gets) == 4, "%d GETs for 4 blocks with one run cut after 1.5 blocks, want 4",
             atomic_load(&s3.gets));
    check_stored(&a, &s3, 0, 4);
    TT_CHECK(atomic_load(&a.stats.cache_corrupt_blocks) == 0, "a block failed its checksum");
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
    pair_link(&a, &b, &s3a, &s3b, 2000, 0);
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
    pair_stop(&a, &b, &s3a, &s3b);
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

/* ---- hand-off, replicas, drain, preload ------------------------------------------------------- */

/* Makes `who` owner slot `slot` of n's placement, with its CURVE key (how a sender is known). */
static void owner_is(tnode *n, int slot, const char *id, const tnode *who, int link)
{
    set_owner(n, slot, id, link, who == n);
    memcpy(n->owners[slot].key, who->pub, NODE_PEER_KEY_LEN);
}

/* Stores block `index` of the fake's object in n's store as `cls`, as if n had fetched it. */
static void hold(tnode *n, const fake_s3 *truth, uint64_t index, node_store_class cls)
{
    node_cache_object o = object_of(truth);
    uint64_t off = index * BS;
    size_t len = truth->len - off < BS ? truth->len - off : BS;
    TT_OK(node_store_put(n->store, blk_id(&o, index), truth->data + off, len, cls));
}

static bool holds(tnode *n, const fake_s3 *truth, uint64_t index, node_store_class want)
{
    node_cache_object o = object_of(truth);
    node_store_class cls;
    return node_store_contains(n->store, blk_id(&o, index), NULL, &cls) && cls == want;
}

/* Waits (the test's deadline ends a hang) until every push n started has ended. */
static void wait_pushes(tnode *n)
{
    while (atomic_load(&n->stats.peer_pushes) + atomic_load(&n->stats.peer_push_failures) <
           atomic_load(&n->stats.peer_pushes_started))
        usleep(1000);
}

/* A member joined and took the block over (b); the previous owner (c), now the next-ranked
 * member, still holds it. b asks c before S3: the reader gets the block and S3 sees no GET. */
TT_TEST(test_node_cache_new_owner_takes_a_missing_block_from_the_previous_owner_not_s3)
{
    fake_s3 s3;
    fake_s3_init(&s3, "data/h.bin", "\"e1\"", 2 * BS, 11);
    tnode a, b, c;
    tnodes_start(&s3, 1, &a, &b, &c, NULL);
    owner_is(&a, 0, "b", &b, tnode_link(&a, &b, 1));
    owner_is(&b, 0, "b", &b, -1);
    owner_is(&b, 1, "c", &c, tnode_link(&b, &c, 2));
    owner_is(&c, 0, "b", &b, -1);
    owner_is(&c, 1, "c", &c, -1);
    hold(&c, &s3, 0, NODE_STORE_OWNED);
    check_read(&a, &s3, 0, NODE_CACHE_PEER);
    TT_CHECK(atomic_load(&s3.gets) == 0, "%d S3 GETs for a block the previous owner held", atomic_load(&s3.gets));
    TT_CHECK(holds(&b, &s3, 0, NODE_STORE_OWNED), "the new owner did not keep the block as owned");
    TT_CHECK(atomic_load(&b.stats.handoff_asks) == 1 && atomic_load(&b.stats.handoff_hits) == 1,
             "hand-off asks %llu hits %llu, want 1 and 1", (unsigned long long)atomic_load(&b.stats.handoff_asks),
             (unsigned long long)atomic_load(&b.stats.handoff_hits));
    TT_CHECK(atomic_load(&b.stats.peer_errors) == 0, "a holder's answer was counted as a peer error");
    /* A block nobody holds: c answers ERROR (it holds none, and never fetches for a hand-off), and b
     * goes to S3, once. */
    check_read(&a, &s3, 1, NODE_CACHE_PEER);
    TT_CHECK(atomic_load(&s3.gets) == 1 && atomic_load(&c.s3->gets) == 1, "%d S3 GETs for one cold block",
             atomic_load(&s3.gets));
    TT_CHECK(!holds(&c, &s3, 1, NODE_STORE_OWNED) && !holds(&c, &s3, 1, NODE_STORE_NEAR),
             "the holder fetched a block it was only asked to look up");
    tnode_stop(&a);
    tnode_stop(&b);
    tnode_stop(&c);
    fake_s3_fini(&s3);
}

/* Cold misses on an owner with two hand-off candidates: each costs one round trip per candidate
 * (not itself), then one S3 GET. The time per candidate is printed: misses with and without the
 * candidates alternate, so both see the same load (loopback, in one process). */
TT_TEST(test_node_cache_cold_miss_asks_each_candidate_once_then_s3)
{
    enum { BLOCKS = 64 };
    fake_s3 s3;
    fake_s3_init(&s3, "data/i.bin", "\"e1\"", BLOCKS * BS, 12);
    tnode b, c, d;
    tnodes_start(&s3, 1, &b, &c, &d, NULL);
    owner_is(&b, 0, "b", &b, -1);
    owner_is(&b, 1, "c", &c, tnode_link(&b, &c, 1));
    owner_is(&b, 2, "d", &d, tnode_link(&b, &d, 2));
    uint64_t spent[2] = {0, 0};
    for (uint64_t i = BLOCKS; i-- > 0;) { /* backwards: no read-ahead */
        b.n_owners = i % 2 ? 3 : 1;
        uint64_t t0 = shoal_clock_mono_us();
        check_read(&b, &s3, i, NODE_CACHE_S3);
        if (i < BLOCKS - 2) /* the first two set the connections up */
            spent[i % 2] += shoal_clock_mono_us() - t0;
    }
    TT_CHECK(atomic_load(&b.stats.handoff_asks) == BLOCKS && atomic_load(&b.stats.handoff_hits) == 0,
             "%llu hand-off asks for %d cold blocks with 2 candidates",
             (unsigned long long)atomic_load(&b.stats.handoff_asks), BLOCKS / 2);
    TT_CHECK(atomic_load(&s3.gets) == BLOCKS, "%d S3 GETs for %d cold blocks", atomic_load(&s3.gets), BLOCKS);
    double n = BLOCKS / 2 - 1;
    tt_note("cold miss of a 256 KiB block with 2 hand-off candidates: %.0f us, without: %.0f us: %.0f us per "
            "candidate", (double)spent[1] / n, (double)spent[0] / n, ((double)spent[1] - (double)spent[0]) / n / 2);
    tnode_stop(&b);
    tnode_stop(&c);
    tnode_stop(&d);
    fake_s3_fini(&s3);
}

/* A hand-off candidate answers from its store alone, so it is given a quarter of the peer timeout
 * and no PING: one that lost the request and would answer every PING "working" (a FAKE of a stuck
 * member) is never asked, and the owner goes to S3 after the one short wait, penalizing it. */
TT_TEST(test_node_cache_stuck_handoff_candidate_is_not_pinged_and_costs_one_short_wait)
{
    fake_s3 s3;
    fake_s3_init(&s3, "data/k.bin", "\"e1\"", BS, 14);
    tnode b, c;
    tnodes_start(&s3, 1, &b, &c, NULL);
    owner_is(&b, 0, "b", &b, -1);
    owner_is(&b, 1, "c", &c, tnode_link(&b, &c, 1));
    c.drop_gets = true;
    c.always_working = true;
    check_read(&b, &s3, 0, NODE_CACHE_S3);
    TT_CHECK(atomic_load(&c.pongs_working) == 0 && atomic_load(&c.pongs_idle) == 0,
             "the hand-off candidate was PINGed about its work (%d working, %d idle answers)",
             atomic_load(&c.pongs_working), atomic_load(&c.pongs_idle));
    TT_CHECK(atomic_load(&b.stats.handoff_asks) == 1 && atomic_load(&b.stats.peer_timeouts) == 1,
             "hand-off asks %llu, peer timeouts %llu; want 1 and 1",
             (unsigned long long)atomic_load(&b.stats.handoff_asks),
             (unsigned long long)atomic_load(&b.stats.peer_timeouts));
    TT_CHECK(atomic_load(&s3.gets) == 1, "%d S3 GETs for one cold block", atomic_load(&s3.gets));
    tnode_stop(&b);
    tnode_stop(&c);
    fake_s3_fini(&s3);
}

/* ---- stand-in owners ----------------------------------------------------------------------------- */

/* A cluster of 4 with one owner per block where the owner (b) has gone silent: it drops every GET
 * and HEAD and answers PINGs idle (a FAKE of a stopped owner that gossip has not declared dead
 * yet). a, c and d each rank b first and c second (c is the block's stand-in: it owns it once b
 * leaves the view). Each reader leaves b after a peer timeout (1 s) of silence; a round in which a
 * live peer's answer came later than that is run again (DISTURBED_ROUNDS_MAX). */
static void silent_owner_start(fake_s3 *s3, tnode *a, tnode *b, tnode *c, tnode *d)
{
    tnode *all[4] = {a, b, c, d};
    for (int i = 0; i < 4; i++)
        tnode_start_r(all[i], i, s3, 1000, 60, 1);
    tnode *readers[3] = {a, c, d};
    for (int i = 0; i < 3; i++) {
        tnode *r = readers[i];
        owner_is(r, 0, "b", b, tnode_link(r, b, 1));
        owner_is(r, 1, "c", c, r == c ? -1 : tnode_link(r, c, 2));
    }
    b->drop_gets = b->drop_heads = true;
}

static void silent_owner_stop(fake_s3 *s3, tnode *a, tnode *b, tnode *c, tnode *d)
{
    tnode_stop(a);
    tnode_stop(b);
    tnode_stop(c);
    tnode_stop(d);
    fake_s3_fini(s3);
}

typedef struct head_arg {
    tnode *n;
    const char *key;
    int rc;
    s3_object_info info;
} head_arg;

static void *header(void *p)
{
    head_arg *h = p;
    h->rc = node_cache_head(h->n->cache, BUCKET, h->key, &h->info);
    return NULL;
}

/* true when no reader counted more peer timeouts than the silent owner explains (one each): no
 * live peer's answer came late (see DISTURBED_ROUNDS_MAX). */
static bool silent_owner_undisturbed(const char *key, tnode *const readers[3])
{
    for (int i = 0; i < 3; i++) {
        unsigned long long t = atomic_load(&readers[i]->stats.peer_timeouts);
        if (t > 1) {
            fprintf(stderr, "# %s: reader %d counted %llu peer timeouts, a live peer answered late; again\n", key, i,
                    t);
            return false;
        }
    }
    return true;
}

/* One round of the block case; see the case below. */
static bool silent_owner_block_round(const char *key, unsigned seed)
{
    fake_s3 s3;
    fake_s3_init(&s3, key, "\"e1\"", BS, seed);
    tnode a, b, c, d;
    silent_owner_start(&s3, &a, &b, &c, &d);
    tnode *readers[3] = {&a, &c, &d};
    pthread_t th[3];
    reader_arg args[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (reader_arg){readers[i], &s3, -1};
        TT_CHECK(pthread_create(&th[i], NULL, reader, &args[i]) == 0, "thread");
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        TT_CHECK(args[i].rc == 0, "reader %d: rc %d (%s)", i, args[i].rc, shoal_error_message());
    }
    bool undisturbed = silent_owner_undisturbed(key, readers);
    if (undisturbed) {
        TT_CHECK(atomic_load(&s3.gets) == 1, "%d S3 GETs for one block read by 3 nodes whose owner is silent, want 1",
                 atomic_load(&s3.gets));
        TT_CHECK(holds(&c, &s3, 0, NODE_STORE_OWNED), "the stand-in did not keep the block as owned");
        TT_CHECK(holds(&a, &s3, 0, NODE_STORE_NEAR) && holds(&d, &s3, 0, NODE_STORE_NEAR),
                 "a reader did not keep its copy near");
        for (int i = 0; i < 3; i += 2)
            TT_CHECK(atomic_load(&readers[i]->stats.standin_asks) == 1 &&
                         atomic_load(&readers[i]->stats.standin_hits) == 1,
                     "reader %d: stand-in asks %llu, hits %llu; want 1 and 1", i,
                     (unsigned long long)atomic_load(&readers[i]->stats.standin_asks),
                     (unsigned long long)atomic_load(&readers[i]->stats.standin_hits));
    }
    silent_owner_stop(&s3, &a, &b, &c, &d);
    return undisturbed;
}

/* The three readers of a block whose only owner is silent all read it at once: each leaves the
 * owner and the two that are not the stand-in ask it, which fetches the block once under its
 * single flight (its own read included). S3 sees one GET, not one per reader; the stand-in keeps
 * the block as owned (it owns it once the silent owner leaves), the others near. */
TT_TEST(test_node_cache_readers_of_a_silent_owner_share_one_fetch_at_its_stand_in)
{
    TT_CHECK(rounds_until_undisturbed(silent_owner_block_round, "s", 21),
             "in each of %d rounds a reader gave up on a live peer too", DISTURBED_ROUNDS_MAX);
}

/* One round of the metadata case; see the case below. */
static bool silent_owner_head_round(const char *key, unsigned seed)
{
    fake_s3 s3;
    fake_s3_init(&s3, key, "\"e1\"", 2 * BS + 7, seed);
    tnode a, b, c, d;
    silent_owner_start(&s3, &a, &b, &c, &d);
    tnode *readers[3] = {&a, &c, &d};
    pthread_t th[3];
    head_arg args[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (head_arg){.n = readers[i], .key = key, .rc = -1};
        TT_CHECK(pthread_create(&th[i], NULL, header, &args[i]) == 0, "thread");
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        TT_CHECK(args[i].rc == 0 && args[i].info.size == 2 * BS + 7 && strcmp(args[i].info.etag, "\"e1\"") == 0,
                 "reader %d: rc %d, size %llu, ETag %s", i, args[i].rc, (unsigned long long)args[i].info.size,
                 args[i].info.etag);
    }
    bool undisturbed = silent_owner_undisturbed(key, readers);
    if (undisturbed)
        TT_CHECK(atomic_load(&s3.heads) == 1,
                 "%d S3 HEADs for one object 3 nodes asked while its owner was silent, want 1", atomic_load(&s3.heads));
    silent_owner_stop(&s3, &a, &b, &c, &d);
    return undisturbed;
}

/* The same for an object's metadata: its owner is silent, three nodes ask for it at once, and the
 * stand-in sends the one HEAD for all of them, its own read included: a peer's HEAD waits for the
 * stand-in's own fetch although that fetch is asking the silent owner (only a fetch asking the
 * very peer that asks is not waited for). */
TT_TEST(test_node_cache_metadata_of_a_silent_owner_is_asked_of_s3_once_by_its_stand_in)
{
    TT_CHECK(rounds_until_undisturbed(silent_owner_head_round, "m", 22),
             "in each of %d rounds a reader gave up on a live peer too", DISTURBED_ROUNDS_MAX);
}

/* --replicas 2: the owner that fetched a block from S3 pushes it to the other owner, so when the
 * first owner is lost the block is still in the cluster: a new reader gets it with no S3 GET. */
TT_TEST(test_node_cache_block_fetched_from_s3_is_pushed_to_the_other_owners)
{
    fake_s3 s3;
    fake_s3_init(&s3, "data/j.bin", "\"e1\"", BS, 13);
    tnode a, b, c, d;
    tnodes_start(&s3, 2, &a, &b, &c, &d, NULL);
    owner_is(&a, 0, "b", &b, tnode_link(&a, &b, 1));
    owner_is(&a, 1, "c", &c, tnode_link(&a, &c, 2));
    owner_is(&b, 0, "b", &b, -1);
    owner_is(&b, 1, "c", &c, tnode_link(&b, &c, 2));
    owner_is(&c, 0, "b", &b, -1);
    owner_is(&c, 1, "c", &c, -1);
    check_read(&a, &s3, 0, NODE_CACHE_PEER);
    wait_pushes(&b);
    TT_CHECK(atomic_load(&b.stats.peer_pushes) == 1, "the owner pushed %llu copies to the one other owner",
             (unsigned long long)atomic_load(&b.stats.peer_pushes));
    TT_CHECK(holds(&c, &s3, 0, NODE_STORE_OWNED), "the second owner does not hold the block");
    /* b is lost: d's placement names c alone. */
    owner_is(&d, 0, "c", &c, tnode_link(&d, &c, 2));
    check_read(&d, &s3, 0, NODE_CACHE_PEER);
    TT_CHECK(atomic_load(&s3.gets) == 1, "%d S3 GETs: the second owner's copy did not pay", atomic_load(&s3.gets));
    tnode_stop(&a);
    tnode_stop(&b);
    tnode_stop(&c);
    tnode_stop(&d);
    fake_s3_fini(&s3);
}

typedef struct stopper {
    int calls;
    int stop_at; /* 0: never */
    node_cache_drain_progress last;
} stopper;

static bool drain_fn(void *ud, const node_cache_drain_progress *p)
{
    stopper *s = ud;
    s->last = *p;
    return ++s->calls != s->stop_at;
}

/* A drain hands every owned block to the member that owns it once the drainer is gone; a reader
 * then finds each at its new owner and S3 sees no GET. Near blocks stay. */
TT_TEST(test_node_cache_drain_hands_owned_blocks_to_their_next_owner)
{
    fake_s3 s3;
    fake_s3_init(&s3, "data/k.bin", "\"e1\"", 3 * BS, 14);
    tnode a, b, c;
    tnodes_start(&s3, 1, &a, &b, &c, NULL);
    owner_is(&b, 0, "b", &b, -1); /* b owns every block; c is ranked next */
    owner_is(&b, 1, "c", &c, tnode_link(&b, &c, 2));
    owner_is(&c, 0, "b", &b, -1);
    owner_is(&c, 1, "c", &c, -1);
    tnode_link(&c, &b, 1); /* c admits b's key */
    for (uint64_t i = 0; i < 2; i++)
        hold(&b, &s3, i, NODE_STORE_OWNED);
    hold(&b, &s3, 2, NODE_STORE_NEAR);
    stopper st = {0};
    node_cache_drain_progress p;
    TT_CHECK(node_cache_drain(b.cache, drain_fn, &st, &p) == 0, "drain: %s", shoal_error_message());
    TT_CHECK(p.blocks_total == 2 && p.blocks_done == 2 && p.blocks_sent == 2 && p.bytes_sent == 2 * BS &&
                 p.blocks_failed == 0,
             "drain: total %llu done %llu sent %llu bytes %llu failed %llu", (unsigned long long)p.blocks_total,
             (unsigned long long)p.blocks_done, (unsigned long long)p.blocks_sent, (unsigned long long)p.bytes_sent,
             (unsigned long long)p.blocks_failed);
    TT_CHECK(st.calls > 0 && st.last.blocks_sent == 2, "the progress function saw %d calls", st.calls);
    TT_CHECK(atomic_load(&b.stats.drain_blocks_sent) == 2 && atomic_load(&b.stats.drain_bytes_sent) == 2 * BS,
             "drain.* counters");
    TT_CHECK(atomic_load(&c.stats.handoff_blocks_in) == 2, "the next owner accepted %llu blocks",
             (unsigned long long)atomic_load(&c.stats.handoff_blocks_in));
    TT_CHECK(holds(&c, &s3, 0, NODE_STORE_OWNED) && holds(&c, &s3, 1, NODE_STORE_OWNED) &&
                 !holds(&c, &s3, 2, NODE_STORE_OWNED),
             "the next owner holds the wrong blocks");
    /* b is gone: the reader's placement names c. */
    owner_is(&a, 0, "c", &c, tnode_link(&a, &c, 2));
    owner_is(&c, 0, "c", &c, -1);
    c.n_owners = 1;
    check_read(&a, &s3, 1, NODE_CACHE_PEER); /* backwards: no read-ahead of the near block */
    check_read(&a, &s3, 0, NODE_CACHE_PEER);
    TT_CHECK(atomic_load(&s3.gets) == 0, "%d S3 GETs after a drain", atomic_load(&s3.gets));
    tnode_stop(&a);
    tnode_stop(&b);
    tnode_stop(&c);
    fake_s3_fini(&s3);
}

/* --replicas 2: the co-owner holds the block already (it was pushed to it), so a drain sends it to
 * the member that becomes an owner and to nobody else. */
TT_TEST(test_node_cache_drain_sends_nothing_to_a_co_owner)
{
    fake_s3 s3;
    fake_s3_init(&s3, "data/l.bin", "\"e1\"", BS, 15);
    tnode b, c, d;
    tnodes_start(&s3, 2, &b, &c, &d, NULL);
    tnode *all[] = {&b, &c, &d};
    const char *names[] = {"b", "c", "d"};
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 3; j++)
            owner_is(all[k], j, names[j], all[j], all[k] == all[j] ? -1 : tnode_link(all[k], all[j], j));
    hold(&b, &s3, 0, NODE_STORE_OWNED);
    hold(&c, &s3, 0, NODE_STORE_OWNED);
    node_cache_drain_progress p;
    TT_CHECK(node_cache_drain(b.cache, NULL, NULL, &p) == 0, "drain: %s", shoal_error_message());
    TT_CHECK(p.blocks_sent == 1 && atomic_load(&d.stats.handoff_blocks_in) == 1 &&
                 atomic_load(&c.stats.handoff_blocks_in) == 0,
             "sent %llu; the new owner took %llu, the co-owner %llu", (unsigned long long)p.blocks_sent,
             (unsigned long long)atomic_load(&d.stats.handoff_blocks_in),
             (unsigned long long)atomic_load(&c.stats.handoff_blocks_in));
    TT_CHECK(holds(&d, &s3, 0, NODE_STORE_OWNED), "the member that becomes an owner does not hold the block");
    tnode_stop(&b);
    tnode_stop(&c);
    tnode_stop(&d);
    fake_s3_fini(&s3);
}

/* A hand-off PUT the receiver would not own once the sender is gone, with a bad checksum, or longer
 * than a block is refused, counted and logged, and nothing is stored; a drain that meets a refusal
 * says how many blocks it could not hand off, and one told to stop says so. */
TT_TEST(test_node_cache_bad_handoff_puts_are_refused_and_the_drain_says_so)
{
    fake_s3 s3;
    fake_s3_init(&s3, "data/m.bin", "\"e1\"", 2 * BS, 16);
    tnode b, c, x;
    tnodes_start(&s3, 1, &b, &c, &x, NULL);
    int bc = tnode_link(&b, &c, 1);
    owner_is(&b, 0, "b", &b, -1); /* b's view: c comes next */
    owner_is(&b, 1, "c", &c, bc);
    owner_is(&c, 0, "x", &x, -1); /* c's view: x owns the block, b next; c is third */
    owner_is(&c, 1, "b", &b, -1);
    owner_is(&c, 2, "c", &c, -1);
    hold(&b, &s3, 0, NODE_STORE_OWNED);
    hold(&b, &s3, 1, NODE_STORE_OWNED);
    node_cache_drain_progress p;
    TT_CHECK(node_cache_drain(b.cache, NULL, NULL, &p) == -1 && shoal_error_code() == SHOAL_ERR_NODE_PEER,
             "a drain every PUT of which was refused returned %s", shoal_error_name(shoal_error_code()));
    TT_CHECK(strstr(shoal_error_message(), "2 of 2") != NULL, "the message counts the blocks: %s",
             shoal_error_message());
    TT_CHECK(p.blocks_failed == 2 && p.blocks_sent == 0 && atomic_load(&b.stats.drain_failures) == 2,
             "failed %llu sent %llu", (unsigned long long)p.blocks_failed, (unsigned long long)p.blocks_sent);
    TT_CHECK(!holds(&c, &s3, 0, NODE_STORE_OWNED) && atomic_load(&c.stats.peer_puts_refused) >= 2,
             "a receiver that does not own the block took it");

    /* Hand-made PUTs from b: a wrong checksum, and a payload longer than a block. */
    owner_is(&c, 0, "b", &b, -1); /* now c is next once b is gone */
    owner_is(&c, 1, "c", &c, -1);
    c.n_owners = 2;
    node_cache_object o = object_of(&s3);
    static uint8_t big[BS + 1];
    struct {
        const void *data;
        size_t len;
        uint64_t ck;
    } bad[] = {{s3.data, BS, 12345}, {big, sizeof big, 0}};
    bad[1].ck = XXH3_64bits(big, sizeof big);
    uint64_t refused = atomic_load(&c.stats.peer_puts_refused);
    for (size_t i = 0; i < 2; i++) {
        node_peer_msg put = {.type = NODE_PEER_PUT, .flags = NODE_PEER_F_HANDOFF, .checksum = bad[i].ck};
        memcpy(put.block.id, blk_id(&o, 0), NODE_PEER_BLOCK_ID_LEN);
        node_peer_response *r =
            node_peer_call(b.peer, bc, &put, (node_peer_payload){bad[i].data, bad[i].len, NULL, NULL}, 2000);
        TT_CHECK(r && node_peer_response_result(r) == SHOAL_OK && node_peer_response_msg(r)->status == NODE_PEER_ERROR,
                 "bad hand-off PUT %zu was not answered ERROR", i);
        node_peer_response_delete(r);
    }
    TT_CHECK(atomic_load(&c.stats.peer_puts_refused) == refused + 2 && !holds(&c, &s3, 0, NODE_STORE_OWNED) &&
                 atomic_load(&c.stats.handoff_blocks_in) == 0,
             "a bad hand-off PUT was taken");

    /* Told to stop at its first report, the drain ends at once and says so. */
    stopper st = {.stop_at = 1};
    TT_CHECK(node_cache_drain(b.cache, drain_fn, &st, &p) == -1 && shoal_error_code() == SHOAL_ERR_CLOSED,
             "a stopped drain returned %s", shoal_error_name(shoal_error_code()));
    tnode_stop(&b);
    tnode_stop(&c);
    tnode_stop(&x);
    fake_s3_fini(&s3);
}

/* Preload: the owner fetches and keeps the block and answers without its bytes; the preloading
 * node keeps nothing and receives no block payload. A second preload finds it cached; an owner's
 * near copy becomes owned without a fetch. A WARM_ONLY GET without OWNER_FETCH only asks. */
TT_TEST(test_node_cache_preload_keeps_blocks_at_their_owner_and_ships_no_bytes)
{
    fake_s3 s3;
    fake_s3_init(&s3, "data/n.bin", "\"e1\"", 3 * BS, 17);
    tnode a, b;
    tnode_start_r(&a, 0, &s3, 2000, 60, 1);
    tnode_start_r(&b, 1, &s3, 2000, 60, 1);
    int ab = tnode_link(&a, &b, 1);
    owner_is(&a, 0, "b", &b, ab);
    owner_is(&b, 0, "b", &b, -1);
    node_cache_object o = object_of(&s3);
    node_cache_source src = NODE_CACHE_LOCAL;
    TT_OK(node_cache_warm(a.cache, &o, 0, &src));
    TT_CHECK(src == NODE_CACHE_S3 && atomic_load(&s3.gets) == 1, "first preload: source %d, %d GETs", src,
             atomic_load(&s3.gets));
    TT_CHECK(holds(&b, &s3, 0, NODE_STORE_OWNED), "the owner did not keep the block");
    TT_CHECK(!holds(&a, &s3, 0, NODE_STORE_NEAR) && !holds(&a, &s3, 0, NODE_STORE_OWNED),
             "the preloading node kept the block");
    node_peer_stats ps;
    node_peer_stats_get(a.peer, &ps);
    TT_CHECK(ps.bytes_in == 0, "the owner shipped %llu bytes back to the preloading node",
             (unsigned long long)ps.bytes_in);
    TT_OK(node_cache_warm(a.cache, &o, 0, &src));
    TT_CHECK(src == NODE_CACHE_LOCAL && atomic_load(&s3.gets) == 1, "second preload: source %d", src);
    hold(&b, &s3, 1, NODE_STORE_NEAR);
    TT_OK(node_cache_warm(a.cache, &o, 1, &src));
    TT_CHECK(src == NODE_CACHE_LOCAL && holds(&b, &s3, 1, NODE_STORE_OWNED) && atomic_load(&s3.gets) == 1,
             "a near copy at the owner: source %d, owned %d", src, holds(&b, &s3, 1, NODE_STORE_OWNED));
    /* A reader of a block a preload left at its owner reads it from there. */
    check_read(&a, &s3, 0, NODE_CACHE_PEER);

    for (uint64_t index = 0; index < 3; index += 2) { /* b holds block 0, not block 2 */
        node_peer_msg get = {.type = NODE_PEER_GET, .flags = NODE_PEER_F_NO_FORWARD | NODE_PEER_F_WARM_ONLY};
        memcpy(get.block.id, blk_id(&o, index), NODE_PEER_BLOCK_ID_LEN);
        get.block = (node_peer_block){.bucket = shoal_cursor_from_str(o.bucket), .key = shoal_cursor_from_str(o.key),
                                      .etag = shoal_cursor_from_str(o.etag), .index = index, .offset = index * BS,
                                      .length = BS};
        memcpy(get.block.id, blk_id(&o, index), NODE_PEER_BLOCK_ID_LEN);
        node_peer_response *r = node_peer_call(a.peer, ab, &get, (node_peer_payload){0}, 2000);
        const node_peer_msg *rep = r ? node_peer_response_msg(r) : NULL;
        size_t len = 1;
        if (rep)
            node_peer_response_payload(r, &len);
        node_peer_status want = index == 0 ? NODE_PEER_OK : NODE_PEER_ERROR;
        TT_CHECK(rep && rep->status == want && len == 0 && (want != NODE_PEER_OK || rep->source == NODE_PEER_SRC_STORE),
                 "a lookup of block %llu: status %s, %zu bytes", (unsigned long long)index,
                 rep ? node_peer_status_name(rep->status) : "-", len);
        node_peer_response_delete(r);
    }
    TT_CHECK(atomic_load(&s3.gets) == 1 && !holds(&b, &s3, 2, NODE_STORE_OWNED), "a lookup made the owner fetch");
    tnode_stop(&a);
    tnode_stop(&b);
    fake_s3_fini(&s3);
}

/* A block read lazily from the store (as the mount reads) serves the 64 KiB chunks that match their
 * sums, each checked when first asked for; a damaged chunk is never served: the store drops the
 * block, and the next read fetches it from S3 whole. */
TT_TEST(test_node_cache_lazy_read_serves_sound_chunks_and_refetches_a_damaged_block)
{
    enum { CHUNK = 64 << 10 };
    fake_s3 s3;
    fake_s3_init(&s3, "data/lazy.bin", "\"e1\"", 2 * BS, 5);
    tnode a;
    tnode_start(&a, 0, &s3, 2000, 60);
    set_owner(&a, 0, "a", -1, true);
    hold(&a, &s3, 0, NODE_STORE_OWNED);
    node_cache_object o = object_of(&s3);
    char rel[NODE_STORE_RELPATH_LEN], path[700];
    snprintf(path, sizeof path, "%s/blocks/%s", a.dir, node_store_relpath(blk_id(&o, 0), rel));
    FILE *f = fopen(path, "r+b");
    TT_CHECK(f != NULL && fseek(f, NODE_STORE_HEADER_LEN + 2 * CHUNK + 10, SEEK_SET) == 0 &&
                 fputc(s3.data[2 * CHUNK + 10] ^ 0x20, f) != EOF && fclose(f) == 0,
             "damaging %s", path);

    node_cache_block b;
    TT_CHECK(node_cache_read_lazy(a.cache, &o, 0, &b) == 0 && b.source == NODE_CACHE_LOCAL,
             "the stored block was not read from the store: %s", shoal_error_message());
    uint8_t got[4096];
    TT_CHECK(node_cache_block_read(&b, 4096, 4096, got) == 0 && memcmp(got, s3.data + 4096, 4096) == 0,
             "a sound chunk of the block was not served");
    TT_CHECK(node_cache_block_read(&b, 2 * CHUNK - 100, 200, got) == -1 && shoal_error_code() == SHOAL_ERR_NOT_FOUND,
             "a range reaching into the damaged chunk was served");
    node_cache_block_release(&b);
    TT_CHECK(atomic_load(&s3.gets) == 0, "%d S3 GETs before the damage was found", atomic_load(&s3.gets));

    TT_CHECK(node_cache_read_lazy(a.cache, &o, 0, &b) == 0 && b.source == NODE_CACHE_S3,
             "the damaged block was not fetched again (source %d): %s", b.source, shoal_error_message());
    const uint8_t *p = node_cache_block_bytes(&b, 0, BS);
    TT_CHECK(p != NULL && memcmp(p, s3.data, BS) == 0, "the block fetched again has wrong bytes");
    node_cache_block_release(&b);
    node_store_stats st;
    node_store_get_stats(a.store, &st);
    TT_CHECK(st.corrupt_drops == 1 && atomic_load(&s3.gets) == 1, "corrupt_drops=%llu (1), S3 GETs %d (1)",
             (unsigned long long)st.corrupt_drops, atomic_load(&s3.gets));
    tnode_stop(&a);
    fake_s3_fini(&s3);
}

TT_MAIN()
