/*
 * node_cache: the daemon's read path — how one block of one object version reaches a reader.
 *
 *   (bucket, key, ETag, block index) -> dht_block_id -> this node's store
 *     -> one fetch per block at a time (concurrent readers wait on it, reads.coalesced)
 *     -> the owners in read order: this node or a peer (GET with OWNER_FETCH|NO_FORWARD; timeout,
 *        BUSY or ERROR -> the next owner). An owner that misses the block asks the block's next
 *        ranked members for a stored copy (hand-off: after a join the previous owner is one of
 *        them), then S3 (ranged GET with If-Match), and keeps it OWNED; with --replicas > 1 a
 *        block it fetched from S3 is pushed to the other owners.
 *     -> S3 directly when every owner failed.
 *
 * It also serves peers: node_cache_on_get_block is the peer transport's GET handler. It never
 * blocks the transport's I/O thread (requests go to a small pool of worker threads), serves from
 * the store without copying (a mapped block handed to ZeroMQ), fetches a block it owns from S3
 * once (sharing the fetch with local readers) and never passes a request on to another node: the
 * only other node an owner asks is a hand-off holder, with a GET that holder answers from its
 * store alone, so no chain is ever longer than one lookup.
 *
 * Drain: node_cache_drain hands every owned block to the members that own it once this node is
 * gone (hand-off PUTs), so a node that leaves for good costs the cluster no S3 GET.
 *
 * Object metadata (size, ETag) is cached for the metadata TTL, misses for the negative TTL.
 * Sequential readers trigger read-ahead of the next blocks on a second small pool (a caller that
 * knows its reader's access pattern, the mount, asks for read-ahead itself).
 *
 * Random reads: node_cache_read_part serves a few bytes of a block without fetching the whole
 * block from S3. A block this node holds, or one being fetched, serves them; else the block's
 * owners are asked for their stored copy (never made to fetch it); else one ranged GET of just
 * those bytes, pinned to the ETag, which is not stored: only whole blocks are.
 *
 * Directory listings are owned like blocks: every page of (bucket, prefix, delimiter) has one
 * owner, placed by dht_block_id over a "list:"-tagged tuple. node_cache_list asks the owner (LIST
 * over the peer protocol), which answers from its table of pages or lists S3 once per metadata
 * TTL however many nodes ask; a dead or failing owner costs the next owner, then S3 directly.
 * Each node keeps the pages it got for the TTL too, so the cluster lists a directory once per TTL.
 */
#ifndef NODE_CACHE_H
#define NODE_CACHE_H

#include "node_cluster.h"
#include "node_peer.h"
#include "node_stats.h"
#include "node_store.h"
#include "s3_client.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct node_cache node_cache;

/* One owner of a block as the read path sees it. */
typedef struct node_cache_owner {
    char id[GOSSIP_ID_MAX + 1];
    int link;     /* node_peer link to it; -1 for this node or a member not reachable */
    bool is_self;
    uint8_t key[NODE_PEER_KEY_LEN]; /* its CURVE public key: how a request's sender is recognised */
} node_cache_owner;

/*
 * What the read path needs from the world beyond its store and its peer transport: S3 and the
 * placement of blocks (the aws-c-s3 client vtable pattern). node_cache_new fills the entries left
 * NULL with the real parts (the S3 client of the config, the cluster attached with
 * node_cache_set_cluster); tests fill them with fakes, so single flight, failover, streaming and
 * listings are tested in one process in milliseconds (tests/node/test_node_cache.c). Every entry
 * may be called from any thread at once.
 */
typedef struct node_cache_deps {
    void *ctx;
    /* As s3_get, s3_head, s3_list (s3_client.h): 0, or -1 with the shoal_error set. */
    int (*s3_get)(void *ctx, const s3_get_args *a, uint64_t *got, s3_object_info *info);
    int (*s3_head)(void *ctx, const char *bucket, const char *key, s3_object_info *out);
    int (*s3_list)(void *ctx, const s3_list_args *a, s3_list_page *out);
    /* The members that own `did`, best first (read order: same zone first), at most `max`, into
     * out; *version the membership version they come from. Returns how many (0: none known). */
    int (*owners)(void *ctx, dht_id did, int max, node_cache_owner *out, uint64_t *version);
} node_cache_deps;

typedef struct node_cache_config {
    node_store *store;          /* borrowed: the block store */
    s3_client *s3;              /* borrowed: the S3 client (unused when deps give every S3 call) */
    node_peer *peer;            /* borrowed: the peer transport (client side) */
    node_stats *stats;          /* borrowed: reads.* counters are added here */
    uint64_t block_size;        /* cluster-wide block size in bytes */
    unsigned replicas;          /* owners per block (--replicas) */
    uint32_t peer_timeout_ms;   /* an owner silent or idle on a request this long is given up; 0 means 2000 */
    uint32_t peer_max_wait_ms;  /* the longest wait for an owner that keeps reporting work; 0 means 60000 */
    uint32_t metadata_ttl_s;    /* --metadata-ttl */
    uint32_t negative_ttl_s;    /* --negative-ttl */
    unsigned serve_threads;     /* workers answering peer GETs; 0 means 8 */
    unsigned readahead_threads; /* workers fetching ahead of readers; 0 means 8 */
    unsigned readahead_blocks;  /* blocks fetched ahead of a sequential reader; 0 means 4 */
    unsigned buffer_blocks; /* block buffers mapped at most, in use or kept (--fetch-buffers):
                                 * fetches past it wait for one, read-ahead takes at most 3/4 of
                                 * them; at least 2; 0 means max(4, 64 MiB / block_size) */
    uint64_t run_bytes; /* the most bytes one S3 GET fetches for a run of consecutive blocks read
                         * ahead; 0 means 16 MiB; the block size or less: one block per GET */
    const node_cache_deps *deps; /* borrowed, may be NULL: the parts above and the cluster */
} node_cache_config;

/* Where a block read was served from. */
typedef enum node_cache_source {
    NODE_CACHE_LOCAL = 0, /* this node's store */
    NODE_CACHE_PEER = 1,  /* an owner, over the peer protocol */
    NODE_CACHE_S3 = 2,    /* S3 */
} node_cache_source;

/* One object version, as the read path names it (strings borrowed for the call). */
typedef struct node_cache_object {
    const char *bucket;
    const char *key;
    const char *etag; /* as S3 sends it, quotes included */
    uint64_t size;
    bool own_readahead; /* the caller asks for read-ahead itself (node_cache_prefetch): no read of
                           it triggers any here */
} node_cache_object;

/* A block handed to a reader: data/len are valid until node_cache_block_release; id is the block's
 * name in the store (when source is LOCAL and it came from node_cache_read, the block was just
 * verified there, so a reader may send it straight from its file, blocks/<node_store_relpath(id)>, which never changes under its id).
 * The other fields are private. */
typedef struct node_cache_block {
    const uint8_t *data;
    size_t len;
    node_cache_source source;
    uint8_t id[NODE_STORE_ID_LEN];
    node_store_view view;
    void *buf;
} node_cache_block;

/* Creates the read path and starts its worker pools (S3 and placement through cfg->deps where it
 * fills them). The cluster is attached later with
 * node_cache_set_cluster (it needs the peer transport, whose handler needs this cache); until
 * then every block is read from S3. NULL with SHOAL_ERR_INVAL (missing part, zero block size) or
 * SHOAL_ERR_NOMEM / SHOAL_ERR_IO (a thread did not start). */
node_cache *node_cache_new(const node_cache_config *cfg);

/* The most bytes this cache's block buffers map at once: buffer_blocks x node_cache_buffer_cost
 * (block_size), a bound that always holds (a fetch waits for a buffer rather than map past it; the
 * most mapped at once is the cache.buffer_peak_bytes gauge); and the bytes they map now. Any
 * thread. */
size_t node_cache_buffer_budget(const node_cache *c);
size_t node_cache_buffer_mapped(node_cache *c);
/* The bytes a block buffer of `len` bytes maps: its power-of-two size from 256 KiB on, with its
 * header, in whole pages; 0 for a smaller one (malloc'd, the object's size, outside the budget). */
size_t node_cache_buffer_cost(uint64_t len);

/* Attaches the membership (borrowed; must outlive the cache or be detached with NULL); the
 * placement of blocks comes from it unless the config's deps give owners. */
void node_cache_set_cluster(node_cache *c, node_cluster *cluster);

/* Replaces the metadata TTLs and the peer timeout of the config (a reload, SIGHUP). Any thread;
 * reads already under way finish with the values they started with. */
void node_cache_set_timeouts(node_cache *c, uint32_t metadata_ttl_s, uint32_t negative_ttl_s, uint32_t peer_timeout_ms);

/* Stops the worker pools: tasks in progress finish, queued peer requests are answered ERROR,
 * queued read-ahead is dropped, and peer requests arriving later are answered BUSY. The cache
 * stays valid for the transport's handler until node_cache_delete. Idempotent; accepts NULL. */
void node_cache_stop(node_cache *c);

/* Stops the pools (if node_cache_stop was not called) and frees everything. Accepts NULL. No
 * read may be in progress and the transport must no longer call the handler. */
void node_cache_delete(node_cache *c);

/* Size, ETag and metadata of s3://bucket/key: from this node's table while fresh, else from the
 * object's metadata owner (placed like a block; one owner per object, so the cluster sends S3 one
 * HEAD per object per --metadata-ttl), else from S3 itself when no owner answers. Concurrent
 * callers for one object share one request. -1 with the S3 error (SHOAL_ERR_S3_NO_SUCH_KEY for a
 * missing key, also when a cached miss is still trusted). */
int node_cache_head(node_cache *c, const char *bucket, const char *key, s3_object_info *out);

/* Forgets what the metadata cache knows of s3://bucket/key (e.g. after a read found it changed). */
void node_cache_forget(node_cache *c, const char *bucket, const char *key);

/* After this node changed s3://bucket/key (wrote, copied onto or deleted it): forgets it and asks
 * its metadata owner for an answer of age 0, so the owner's copy, which every node reads, shows
 * the change at once instead of a miss or an old version kept for the TTL. One HEAD at the
 * owner; its failure is not an error (the TTLs still bound what others see). */
void node_cache_publish(node_cache *c, const char *bucket, const char *key);

/* Number of blocks of an object of `size` bytes. */
uint64_t node_cache_block_count(const node_cache *c, uint64_t size);

/* Reads block `index` of `obj` through the cluster into *out (release it with
 * node_cache_block_release) and counts where it came from (reads.local/peer/s3). A reader that
 * reads block i right after block i-1 of the same object triggers read-ahead. -1 with
 * SHOAL_ERR_INVAL (index past the end), SHOAL_ERR_S3_CHANGED (the object no longer has this ETag:
 * S3 or the owner said so) or another S3 error when S3 itself failed. */
int node_cache_read(node_cache *c, const node_cache_object *obj, uint64_t index, node_cache_block *out);

/* As node_cache_read, for a reader that wants parts of the block: a block from this node's store
 * comes open with only its header checked (node_store_open_lazy: nothing mapped, out->data NULL),
 * and is read with node_cache_block_read, which reads the range asked and verifies the chunks it
 * touches the first time. A block from a peer or S3 comes whole, as from node_cache_read. */
int node_cache_read_lazy(node_cache *c, const node_cache_object *obj, uint64_t index, node_cache_block *out);

/* As node_cache_read_lazy, from this node's store alone: never fetches, never triggers read-ahead.
 * -1 with SHOAL_ERR_NOT_FOUND when the store holds no whole copy of the block, SHOAL_ERR_INVAL for
 * an index past the end. Read and release the block as one of node_cache_read_lazy. */
int node_cache_read_stored(node_cache *c, const node_cache_object *obj, uint64_t index, node_cache_block *out);

/* Bytes [off, off+len) of a block filled by node_cache_read (or by node_cache_read_lazy when it
 * came from a peer or S3; SHOAL_ERR_INVAL for one open on the store), verified
 * against their chunk sums if they come from this node's store and were not yet (once per block
 * handed out: the check is remembered while the block is held). NULL with SHOAL_ERR_NOT_FOUND
 * when a chunk failed (the store dropped the block: release it and read it again, which fetches
 * it), SHOAL_ERR_RANGE past the block's end. Safe from many threads on one block. */
const uint8_t *node_cache_block_bytes(node_cache_block *b, size_t off, size_t len);

/* Copies bytes [off, off+len) of a block filled by node_cache_read or node_cache_read_lazy into
 * dst, verified as node_cache_block_bytes says; the way to read a block of node_cache_read_lazy. 0,
 * or -1 with the errors of node_cache_block_bytes. */
int node_cache_block_read(node_cache_block *b, size_t off, size_t len, void *dst);

/* Releases a block filled by node_cache_read or node_cache_read_lazy. Accepts an empty block. */
void node_cache_block_release(node_cache_block *b);

/* Whether a block read holds one of the read path's block buffers (it was fetched, not opened in
 * the store) until it is released. A caller that holds such a block must not wait, while holding
 * it, for another read of its own: that read's fetch may wait for this very buffer. */
bool node_cache_block_in_buffer(const node_cache_block *b);

/* Bytes [off, off+len) of block `index` of `obj` (clamped to the block) into dst, for a reader that
 * wants its first bytes before the whole block arrived: when the block is not stored, it is fetched
 * by a read-ahead worker, queued before the read-ahead already waiting, and waited for until the
 * worker begins it (at most CACHE_STREAM_START_MS), or the fetch already in progress is joined; the
 * range is copied as soon as it arrived from S3 (a block from a peer arrives whole). Returns the
 * bytes copied, or 0 when it did not serve the range (the block is stored, the fetch failed or did
 * not start in time): the
 * caller then reads the whole block with node_cache_read, which also reports errors. -1 only for
 * a bad index. */
ssize_t node_cache_read_stream(node_cache *c, const node_cache_object *obj, uint64_t index, uint64_t off, size_t len,
                               void *dst);

/* Bytes [off, off+len) of block `index` of `obj` (clamped to the block) into dst, for a random
 * reader, without fetching the whole block from S3: from this node's store (one pread of the
 * range, only the chunks it touches verified; a damaged one drops the block and the read goes on
 * as a miss), from a fetch of the block in flight (as soon as the range arrived), from an owner or
 * stand-in that holds the block (asked for its stored copy with a GET it answers from its store
 * alone; the block is then kept here as node_cache_read keeps it, and only this path takes a block
 * buffer), else with one ranged GET of just the range with If-Match straight into dst, whose bytes
 * are not stored (counted in reads.parts and reads.part_bytes). Never triggers read-ahead. Returns
 * the bytes copied (len clamped), or -1 with SHOAL_ERR_INVAL (index past the end),
 * SHOAL_ERR_S3_CHANGED (the object no longer has this ETag) or another S3 error; on -1, dst holds
 * no bytes to serve. Any thread. */
ssize_t node_cache_read_part(node_cache *c, const node_cache_object *obj, uint64_t index, uint64_t off, size_t len,
                             void *dst);

/* Queues read-ahead of blocks [first, first + count) of obj (those not stored, being fetched or
 * queued already), once half of them or the first is missing (a window is refilled in batches,
 * whose consecutive blocks go to S3 in one GET each run_bytes); silently drops what the read-ahead
 * queue has no room for. */
void node_cache_prefetch(node_cache *c, const node_cache_object *obj, uint64_t first, uint64_t count);

/* Has the kernel start reading blocks [first, first + count) of obj from this node's store into
 * the page cache (node_store_willneed), for those stored here; fetches nothing and waits for
 * nothing. A sequential reader of stored blocks calls it for the blocks ahead of the one it reads,
 * so the disk works ahead of it across block files. Returns how many of them are stored. Any
 * thread. */
uint64_t node_cache_willneed(node_cache *c, const node_cache_object *obj, uint64_t first, uint64_t count);

/* Makes sure block `index` of obj is held by its owner (preload): an owned block this node does
 * not hold is fetched (hand-off, else S3) and stored; a block another node owns is asked of that
 * owner with OWNER_FETCH|WARM_ONLY, which keeps it and sends no bytes back, and nothing is kept
 * here. *source (may be NULL) says where the owner found it: LOCAL (it held the block already),
 * PEER (another member handed it over), S3 (the owner fetched it from S3). -1 when no owner could
 * be made to hold it (the error says why). */
int node_cache_warm(node_cache *c, const node_cache_object *obj, uint64_t index, node_cache_source *source);

/* One ListObjectsV2 page through the cluster, with s3_list's contract: `a` as for s3_list (strings
 * borrowed for the call), *out created and empty, filled with the page (pass out->next_token as
 * the next continuation token while out->truncated; free with s3_list_page_destroy). Served from
 * this node's table while fresh (--metadata-ttl), else from the listing's owner, else from S3
 * directly; concurrent callers asking the same page share one fetch. -1 with the S3 error when S3
 * itself failed (SHOAL_ERR_INVAL without a bucket, SHOAL_ERR_NOMEM). A caller of s3_list switches
 * to the cluster by calling this instead with the node_cache. */
int node_cache_list(node_cache *c, const s3_list_args *a, s3_list_page *out);
/* node_cache_list, with the page's age in *age_us (how long ago S3 listed it, at whichever node
 * did: a page kept here expires when its owner's does, --metadata-ttl after that). */
int node_cache_list_aged(node_cache *c, const s3_list_args *a, s3_list_page *out, uint64_t *age_us);

/* The peer transport's LIST handler (node_peer_handlers.on_list; ud is the node_cache). Hands the
 * request to a serve worker; answers BUSY at once when their queue is full. */
void node_cache_on_list(void *ud, node_peer_incoming *in);

/* The peer transport's GET handler (node_peer_handlers.on_get_block; ud is the node_cache).
 * Hands the request to a worker; answers BUSY at once when the workers' queue is full. A GET
 * without OWNER_FETCH (a hand-off lookup) is answered from the store alone, by workers of their
 * own that never wait on another node. With WARM_ONLY the answer carries no bytes, only where the
 * block was found (NODE_PEER_SRC_*). */
void node_cache_on_get_block(void *ud, node_peer_incoming *in);

/* The peer transport's HEAD handler (node_peer_handlers.on_head; ud is the node_cache): a worker
 * answers with the object's metadata from this node's table when it is no older than the request's
 * max age, else from one S3 HEAD (shared with local callers), NOT_FOUND for a missing object;
 * BUSY at once when the workers' queue is full. */
void node_cache_on_head(void *ud, node_peer_incoming *in);

/* The peer transport's work handler (node_peer_handlers.on_work; ud is the node_cache), called on
 * its I/O thread for a PING that names a work item: WORKING while a peer request for it (a GET of
 * that block, or the LIST or HEAD whose id it is) is queued or being served here, or a fetch of
 * that block is in flight; IDLE otherwise. Takes two short mutexes, never blocks on I/O. */
node_peer_work node_cache_on_work(void *ud, const uint8_t *id);

/* The peer transport's PUT handler (node_peer_handlers.on_put_block; ud is the node_cache). A worker
 * checks the block (its id against its coordinates, its length, the payload's XXH3-64 against the
 * "ck" field, and that this node is one of its owners in its current view), stores it as OWNED and
 * answers OK; anything else is answered ERROR, logged and counted (peer.puts_refused), and the
 * node keeps serving. A hand-off PUT (NODE_PEER_F_HANDOFF: id, bytes, checksum) is accepted when
 * its length and checksum hold and this node owns the block once the sender (known by its CURVE
 * key) is gone (counted in handoff.blocks_in). BUSY at once when the workers' queue is full. */
void node_cache_on_put_block(void *ud, node_peer_incoming *in);

/* Sends block `index` of the version `obj` (bytes data/len, just uploaded to S3) to each of its
 * owners other than this node, without waiting: an owner that accepts counts in peer.pushes, one
 * that refuses or does not answer in peer.push_failures (it fetches the block from S3 when it is
 * read; the object is in S3 already, so this is never the writer's error). Returns how many owners
 * it was sent to. */
unsigned node_cache_push(node_cache *c, const node_cache_object *obj, uint64_t index, const void *data, size_t len);

/* What a drain did so far. */
typedef struct node_cache_drain_progress {
    uint64_t blocks_total;  /* owned blocks found (a later pass adds those stored meanwhile) */
    uint64_t blocks_done;   /* of them, dealt with: handed off, failed, or gone from the store */
    uint64_t bytes_total, bytes_done;
    uint64_t blocks_sent;   /* hand-off PUTs the next owners accepted */
    uint64_t bytes_sent;
    uint64_t blocks_failed; /* blocks not handed to every next owner (refused, unanswered, nobody to
                               take them); at the end, those still so after the last pass */
} node_cache_drain_progress;

/* Called about every 250 ms and once at the end of each pass, on the draining thread; returning
 * false stops the drain (a deadline, a cancelled client). */
typedef bool (*node_cache_drain_fn)(void *ud, const node_cache_drain_progress *p);

/* Hands every OWNED block of this node to the members that own it once this node is gone, under
 * the current view: the owners over replicas+1 ranks without this node, less the current owners
 * (which hold it already), or the current owners themselves for a block this node no longer owns.
 * Each goes as a hand-off PUT (id, bytes, checksum), a few at a time. The node keeps serving
 * meanwhile; blocks stored during the drain are handed off by a second pass, failed ones retried
 * (at most three passes). Counts drain.blocks_sent, drain.bytes_sent, drain.failures. fn (may be
 * NULL) sees the progress; *out (may be NULL) gets the final figures. 0 when every block found
 * was handed off; -1 with SHOAL_ERR_CLOSED when fn stopped it, SHOAL_ERR_NODE_PEER when some
 * blocks could not be handed off (the message says how many), SHOAL_ERR_NOMEM. */
int node_cache_drain(node_cache *c, node_cache_drain_fn fn, void *ud, node_cache_drain_progress *out);

#endif
