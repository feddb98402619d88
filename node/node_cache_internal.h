/*
 * node_cache_internal: what the read path's files share (node_cache.c, node_cache_fetch.c,
 * node_cache_meta.c, node_cache_serve.c). Private to the node_cache library: nothing outside it
 * includes this header (its tests included, which go through node_cache.h and its dependency
 * table). Functions that cross files carry the cache_ prefix; the rest are static in their file.
 */
#ifndef NODE_CACHE_INTERNAL_H
#define NODE_CACHE_INTERNAL_H

#include "node_cache.h"

#include "shoal_assert.h"
#include "shoal_log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CACHE_PEER_TIMEOUT_MS 2000
#define CACHE_RESEND_PAUSE_MS 20
#define CACHE_PEER_MAX_WAIT_MS 60000 /* longest wait for an owner that keeps reporting work (peer_get) */
#define CACHE_SERVE_THREADS 8
#define CACHE_LOCAL_THREADS 4  /* workers of requests answered from the store alone */
#define CACHE_HANDOFF_EXTRA 2 /* ranks past --replicas a missing owner asks (two joins deep), and stand-ins */
#define CACHE_HANDOFF_TIMEOUT_DIV 4 /* a hand-off ask waits the peer timeout divided by this */
#define CACHE_READAHEAD_THREADS 8 /* read-ahead fetches at once, each holding a block buffer of the budget */
#define CACHE_READAHEAD_BLOCKS 4
#define CACHE_RUN_BYTES (16u << 20) /* the most one S3 GET fetches for a run of blocks (see "Runs") */
#define CACHE_RUN_MAX 16 /* ... and at most this many blocks */
#define CACHE_POOL_QUEUE 1024
#define CACHE_FLIGHT_BUCKETS 1024
#define CACHE_META_BUCKETS 4096
#define CACHE_META_MAX 65536
#define CACHE_SEQ_SLOTS 64
#define CACHE_RA_BUCKETS 256 /* the table of read-ahead blocks queued and not begun */
#define CACHE_PENALTY_SLOTS 32
#define CACHE_PENALTY_US 3000000u /* an owner that timed out is skipped this long */
#define CACHE_LIST_BUCKETS 256
#define CACHE_LIST_MAX 4096        /* listing pages remembered at once */
#define CACHE_LIST_BYTES (64u << 20) /* and their bytes (a page of 1000 long keys is about 1 MiB) */
#define CACHE_STREAM_START_MS 1000 /* longest a streaming reader waits for its queued fetch to begin */
#define CACHE_BUF_BLOCKS_MIN 4 /* block buffers in the default budget: at least this many, */
#define CACHE_BUF_BYTES (64u << 20) /* or as many as fit in this */
#define CACHE_WORK_SLOTS 4096         /* work ids counted for PINGs; > 3 x (queue + workers) */

/* ---- block buffers (node_cache.c) --------------------------------------------------------------- */

typedef struct cache_bufs cache_bufs;

typedef struct cache_buf {
    atomic_uint refs;
    cache_bufs *pool; /* the budget it was mapped from; NULL: a small buffer, malloc'd */
    size_t len;
    size_t cap; /* bytes allocated for data: a power of two from BUF_POOL_MIN on, else len */
    struct cache_buf *next_free;
    bool ahead; /* taken for read-ahead (CACHE_BUF_AHEAD): counts in the read-ahead's share */
    node_store_sum *sum;     /* the store's chunk sums of data[0..len), taken as it arrived; NULL: none */
    /* cap bytes, preceded by NODE_STORE_HEADER_LEN bytes of scratch for the store's header
     * (cache_buf_frame). In a buffer from the budget, data - NODE_STORE_HEADER_LEN is the start
     * of the mapping, page-aligned, so the store writes the block from here without a copy. */
    uint8_t *data;
} cache_buf;

/* The NODE_STORE_HEADER_LEN bytes before b->data, for node_store_put_framed. */
static inline void *cache_buf_frame(const cache_buf *b) { return b->data - NODE_STORE_HEADER_LEN; }

/* What a buffer is taken for (see "Block buffers" in node_cache.c). */
typedef enum cache_buf_use {
    CACHE_BUF_NEED, /* a block somebody waits for: a reader's, a peer's, a preload's, ... */
    CACHE_BUF_AHEAD, /* read-ahead nobody waits for yet: at most the budget less the reserve */
} cache_buf_use;

/* A buffer for `len` bytes, refs 1. A large one (256 KiB and more) comes from the cache's budget
 * and may wait for one to come back (see "Block buffers" in node_cache.c); NULL with
 * SHOAL_ERR_NOMEM. Must not be called while the caller holds another large buffer. */
cache_buf *cache_buf_new(node_cache *c, size_t len, cache_buf_use use);
/* The same without waiting: NULL (no error set) when the budget has no room for `use` now. May be
 * called while the caller holds other buffers. */
cache_buf *cache_buf_try(node_cache *c, size_t len, cache_buf_use use);
cache_buf *cache_buf_ref(cache_buf *b);
/* Drops a reference; the last one returns the buffer to the pool or frees it. Accepts NULL. */
void cache_buf_unref(cache_buf *b);
/* The blocks of a budget of `blocks` that read-ahead never takes: a quarter, at least one. */
unsigned cache_buf_reserve(unsigned blocks);
/* The budget of large buffers: at most `blocks` buffers of `block_cost` bytes mapped, read-ahead's
 * at most blocks - cache_buf_reserve(blocks) of them, counted in stats.
 * cache_bufs_release drops the cache's reference (kept buffers are unmapped; buffers still in use
 * free it when they come back). */
cache_bufs *cache_bufs_new(unsigned blocks, size_t block_cost, node_stats *stats);
void cache_bufs_release(cache_bufs *p);

/* node_peer_payload free functions: a cache_buf (hint), heap bytes, a store view (hint). */
void cache_payload_free_buf(void *data, void *hint);
void cache_payload_free_heap(void *data, void *hint);
void cache_payload_free_view(void *data, void *hint);

/* ---- worker pools (node_cache.c) ----------------------------------------------------------------- */

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

/* Queues a task; -1 when the queue is full or the pool stops (the caller keeps `arg`). */
int cache_pool_submit(pool *p, pool_fn fn, pool_drop_fn drop, void *arg);
/* node_cache_prefetch; `urgent` queues the blocks before any read-ahead already waiting: a reader
 * waits on them now (node_cache_read_stream). Returns how many blocks it queued. */
uint64_t cache_prefetch(node_cache *c, const node_cache_object *obj, uint64_t first, uint64_t count, bool urgent);
/* Whether block `id` is queued for read-ahead and not begun; if so it leaves the table of queued
 * blocks (its task still runs, and finds the block's flight or the block stored). The caller is
 * about to claim the block's flight: a run of blocks takes only blocks somebody asked for. */
bool cache_ra_take(node_cache *c, const uint8_t id[NODE_STORE_ID_LEN]);
/* On a read-ahead worker, once the fetch it leads has taken its run: the blocks of its batch that
 * the run did not take go back to the queue for other workers (nothing on another thread). */
void cache_ra_release_rest(node_cache *c);
/* The most blocks one S3 GET fetches (run_bytes over the block size, within 1..CACHE_RUN_MAX). */
unsigned cache_run_blocks(const node_cache *c);

/* ---- the cache ------------------------------------------------------------------------------------ */

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
    uint64_t wake_at; /* the fewest arrived bytes a range waiter waits for (0: none waits) */
    /* Ended by a run's GET (see "Runs" in node_cache_fetch.c): done with its block while still in
     * the table until the block is stored, which whoever stores it removes. */
    bool handed;
    /* A failed flight that stands for no fetch of the block's own (a preload's, a random read's, a
     * run's block the GET did not complete): its waiters lead a fetch of their own. */
    bool redo;
    pthread_cond_t cv; /* its waiters: the bytes a range waiter wants arrived, or done (fl_mu) */
} flight;

struct list_entry;

typedef struct meta_entry {
    struct meta_entry *next;
    char *bucket;
    char *key;
    uint64_t expires_us;
    uint64_t fetched_us; /* when the answer was S3's (an owner's answer is as old as it says) */
    bool negative;
    bool pending;        /* a fetch is in progress (single flight; others wait on meta_cv) */
    bool pending_local;  /* ... and it is a local caller's, which may be asking another node */
    bool asking_peer; /* ... and that local fetch is waiting on another node right now, */
    uint8_t asking_key[NODE_PEER_KEY_LEN]; /* ... this one (its CURVE key) */
    bool refresh;        /* forgotten: the next fetch asks for an answer of age 0 */
    unsigned refs;       /* threads waiting on the fetch in progress */
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

/* Peer requests for one work id (a block id, or a listing's or object's, see cache_work_id)
 * queued in the serve pool or being served; count 0 is a free slot. */
typedef struct work_slot {
    uint8_t id[NODE_PEER_BLOCK_ID_LEN];
    unsigned count;
} work_slot;

/* A timeout as it is now (relaxed: each read takes one whole value, old or new). */
#define live(c, field) atomic_load_explicit(&(c)->field, memory_order_relaxed)

struct node_cache {
    node_cache_config cfg; /* its timeouts below are the start values: read the live ones */
    /* The timeouts a reload may change (node_cache_set_timeouts), read with live(). */
    _Atomic uint32_t metadata_ttl_s, negative_ttl_s, peer_timeout_ms;
    node_cache_deps deps; /* a copy of cfg.deps (all NULL without one): see cache_s3_get ... */
    _Atomic(node_cluster *) cluster;

    pthread_mutex_t fl_mu;
    pthread_cond_t fl_cv; /* a flight began or a read-ahead task ended (streaming readers wait on it) */
    uint64_t ra_ended; /* read-ahead tasks ended so far (fl_mu) */
    flight *flights[CACHE_FLIGHT_BUCKETS];

    pthread_mutex_t meta_mu;
    pthread_cond_t meta_cv; /* a metadata fetch ended */
    meta_entry *meta[CACHE_META_BUCKETS];
    size_t meta_count;

    pthread_mutex_t seq_mu; /* guards seq, penalties and ra_queued */
    seq_slot seq[CACHE_SEQ_SLOTS];
    penalty penalties[CACHE_PENALTY_SLOTS];
    struct ra_task *ra_queued[CACHE_RA_BUCKETS]; /* read-ahead queued and not begun, by block id */

    pthread_mutex_t list_mu;
    pthread_cond_t list_cv;
    struct list_entry *lists[CACHE_LIST_BUCKETS];
    size_t list_count;
    size_t list_bytes; /* page bytes held by the table */

    cache_bufs *bufs; /* the budget of block buffers */
    pool serve;
    pool readahead;
    /* Peer requests answered from this node's store alone (hand-off GETs, PUTs). They never wait
     * on another node, so a serve worker waiting on a hand-off GET never waits behind serve workers
     * of the other node that wait on it in turn (a cycle that would hold both pools). */
    pool local;

    pthread_mutex_t work_mu; /* guards work (taken on the transport's I/O thread: held briefly) */
    work_slot work[CACHE_WORK_SLOTS];
};

/* Why a block is wanted: it decides what happens on a miss. */
typedef enum fetch_mode {
    FETCH_READ, /* a local reader: owners in order, then S3; peer blocks are kept NEAR */
    FETCH_SERVE, /* a peer asked this node as owner: S3, stored OWNED; never asks another node */
    FETCH_WARM, /* preload: make the owner hold it; nothing kept here unless this node owns it */
    /* a random read (node_cache_read_part): only a copy an owner or stand-in holds, kept here as
     * FETCH_READ keeps it; none is made to fetch and S3 is never asked */
    FETCH_HELD,
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
    cache_buf_use use; /* what its buffer is taken for: CACHE_BUF_NEED unless read-ahead sets it */
} block_req;

/* A request for block `index` of (bucket, key, etag) covering [offset, offset+length). */
void cache_block_req_init(block_req *b, const char *bucket, const char *key, const char *etag, uint64_t index,
                          uint64_t offset, uint64_t length);
/* The same for a whole object: -1 with SHOAL_ERR_INVAL when index is past its end. */
int cache_block_req_from_object(const node_cache *c, const node_cache_object *obj, uint64_t index, block_req *b);
/* Fills the block fields of a GET or PUT for b (strings borrowed from b). */
void cache_block_msg(node_peer_msg *m, const block_req *b);
/* Counts a block read in reads.local/peer/s3 and its time since started_us (monotonic) in the
 * time-to-first-byte histogram of its source. */
void cache_count_read(node_cache *c, node_cache_source s, uint64_t started_us);

/* The dependency table's calls: its entry when the config gave one, else the real part (the S3
 * client; the attached cluster, whose owners are 0 until one is attached). */
int cache_s3_get(node_cache *c, const s3_get_args *a, uint64_t *got, s3_object_info *info);
int cache_s3_head(node_cache *c, const char *bucket, const char *key, s3_object_info *out);
int cache_s3_list(node_cache *c, const s3_list_args *a, s3_list_page *out);
int cache_owners(node_cache *c, dht_id did, int max, node_cache_owner *out, uint64_t *version);
/* Whom a reader asks for `did`, in order: its owners (cache_owners over --replicas, read order;
 * *n_owners of them), then its stand-ins, the members ranked after them within
 * CACHE_HANDOFF_EXTRA ranks (the ones that own it once owners leave the view). A reader asks a
 * stand-in as it asks an owner, and only when no owner answered (docs/placement.md, "Stand-in
 * owners"). Into out (DHT_REPLICAS_MAX entries); returns how many in all. */
int cache_ask_order(node_cache *c, dht_id did, node_cache_owner *out, int *n_owners, uint64_t *version);
/* Counts a request sent to a stand-in (standin.asks, and standin.hits when answered); nothing for
 * an owner (standin false). */
void cache_count_standin(node_cache *c, bool standin, bool answered);
/* How many owners a block has (--replicas, bounded). */
int cache_replicas(const node_cache *c);
/* The placement id of a block from its store id (the inverse of the id cache_block_req_init gives). */
dht_id cache_id_did(const uint8_t id[NODE_STORE_ID_LEN]);

/* ---- fetching (node_cache_fetch.c) ------------------------------------------------------------- */

/* A block through the single-flight table: leads the fetch or waits for the one in progress. On
 * success *out holds one reference, *src where the block came from, *coalesced whether this call
 * waited on another thread's fetch. -1 with the fetch's error. */
int cache_fetch_block(node_cache *c, const block_req *b, fetch_mode mode, cache_buf **out, node_cache_source *src,
                      bool *coalesced);
/* Whether a fetch of block `id` is in progress. */
bool cache_flight_active(node_cache *c, const uint8_t id[NODE_STORE_ID_LEN]);
/* Whether the owner `id` timed out recently (skipped for a while), and marking it so. */
bool cache_penalized(node_cache *c, const char *id);
void cache_penalize(node_cache *c, const char *id);
/* Sends `req` to a peer and waits while it is alive; the outcome's code (SHOAL_OK when a reply
 * came, whatever its status). *r may be set even on failure; the caller deletes it. */
shoal_err cache_peer_request(node_cache *c, int link, const node_peer_msg *req, node_peer_response **r);

/* ---- work in progress, for PINGs (node_cache_serve.c) ------------------------------------------ */

/* The id a PING names to ask about request `req` (GET, LIST or HEAD): the block id of a GET, a hash
 * of what a LIST or HEAD asks otherwise, so asker and owner derive it alike. */
void cache_work_id(const node_peer_msg *req, uint8_t out[NODE_PEER_BLOCK_ID_LEN]);
/* Counts a peer request for `id` from when it is queued until it is answered. */
void cache_work_begin(node_cache *c, const uint8_t id[NODE_PEER_BLOCK_ID_LEN]);
void cache_work_end(node_cache *c, const uint8_t id[NODE_PEER_BLOCK_ID_LEN]);

/* ---- pushing blocks (node_cache_serve.c) -------------------------------------------------------- */

/* Sends `req` (a PUT) with buf's bytes over `link`, a reference per attempt (no copy). With `wait`
 * a link with no room (NOSPACE) is tried again every few milliseconds up to the peer timeout;
 * without, it fails at once (a serve worker must not wait on another node's pace). 0 when
 * submitted (done runs later), -1 with the submission's error. */
int cache_submit_put(node_cache *c, int link, const node_peer_msg *req, cache_buf *buf, bool wait,
                     node_peer_done_fn done, void *ud);
/* PUTs block b (buf) to each of its owners other than this node, without waiting for the answers
 * (peer.pushes_started / pushes / push_failures). Returns how many owners it was sent to. */
unsigned cache_push(node_cache *c, const block_req *b, cache_buf *buf, bool wait);

/* ---- drain (node_cache_drain.c) ---------------------------------------------------------------- */

/* The owners of `did` once the member with CURVE key `leaver` is gone (NULL: this node), under
 * this node's view: owners over replicas+1 ranks without it when it is one of them, else the
 * current owners. Into out (DHT_REPLICAS_MAX entries); returns how many. */
int cache_owners_without(node_cache *c, dht_id did, const uint8_t *leaver, node_cache_owner *out, uint64_t *version);

/* ---- metadata and listings (node_cache_meta.c) ------------------------------------------------ */

/* An object's metadata in the HEAD_REPLY payload's form (strings borrowed from `in`). */
void cache_info_to_peer(const s3_object_info *in, node_peer_object_info *out);
/* An object's metadata for a peer (CURVE key `asker`) that takes this node for its metadata owner
 * or stand-in (serve: S3 is asked when the table holds nothing at most max_age_ms old, never
 * another node; a local fetch in progress is waited for unless it is asking `asker` itself), with
 * its age in ms. 0, or -1 with the S3 error (SHOAL_ERR_S3_NO_SUCH_KEY for a missing object). */
int cache_head_serve(node_cache *c, const char *bucket, const char *key, const uint8_t *asker, uint64_t max_age_ms,
                     s3_object_info *out, uint64_t *age_ms);

/* The page's payload form appended to out, and its age (since S3 listed it) in *age_us: from the
 * table while fresh and at most max_age_us old, else fetched once (serve: as the listing's owner,
 * never asking another node). */
int cache_list_page_bytes(node_cache *c, const s3_list_args *a, bool serve, uint64_t max_age_us, shoal_buf *out,
                          uint64_t *age_us);
/* Frees the metadata and listing tables (node_cache_delete). */
void cache_meta_destroy(node_cache *c);

#endif
