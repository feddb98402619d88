/*
 * node_store: the daemon's on-disk block store under <cache-dir>/blocks/.
 *
 * A block is an immutable run of bytes named by an opaque 16-byte id (the placement module derives
 * it from bucket, key, ETag and block index, so a block never changes under its id). Each block is
 * one file, blocks/ab/cd/<32 hex digits>, holding a 48-byte header (magic, version, class, payload
 * length, id, chunk size), the payload, and an XXH3-128 sum of each 64 KiB chunk of the payload.
 * A block becomes visible only when it is complete (written to a temporary file, then renamed).
 * No byte of it reaches a caller before the chunk holding it matched its sum: node_store_get and
 * node_store_map check every chunk, a lazy view (node_store_map_lazy) checks each chunk when a
 * read first touches it and trusts it for as long as the view lives. A block that fails is removed
 * and reported as a miss, never returned.
 *
 * The store is a hard-capped LRU cache: the bytes of stored blocks plus the bytes reserved by
 * writes in flight never exceed the capacity. Blocks come in two classes: owned blocks (this node
 * is an owner under the placement) and near blocks (read from a peer and kept so repeated local
 * reads stay local), which may use at most a configured share of the capacity and are evicted
 * first. The index is rebuilt from the files at open, so the store survives a restart.
 *
 * The store also keeps a share of its file system free (node_store_options.free_space_bp),
 * evicting least-recently-used blocks to do so, and heals what is removed behind its back: a
 * vanished blocks/ directory is made again and the index forgets blocks whose files are gone
 * (node_store_maintain does the periodic part of both).
 *
 * All functions are safe to call from many threads at once. docs/store.md describes the format.
 */
#ifndef NODE_STORE_H
#define NODE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NODE_STORE_ID_LEN 16
#define NODE_STORE_HEADER_LEN 48 /* bytes on disk before each payload */

typedef struct node_store node_store;

/* Why a block is kept. Owned blocks evict near blocks first; near blocks never evict owned ones. */
typedef enum node_store_class {
    NODE_STORE_OWNED = 0,
    NODE_STORE_NEAR = 1,
} node_store_class;

typedef struct node_store_options {
    /* Share of the capacity near blocks may use, in percent (0-100; 0 keeps no near blocks). */
    unsigned near_percent;
    /* fsync each block file and its directory before and after the rename. Without it a power
     * loss may leave a renamed block with missing bytes, which its checksum then catches. */
    bool fsync;
    /* Write block files with O_DIRECT (reads stay buffered), so storing a fetched block does not
     * take a page-cache copy of it; turned off by itself, logged, on a file system that refuses
     * O_DIRECT. */
    bool direct_io;
    /* Share of the file system under the cache directory to keep free, in hundredths of a percent
     * (500 = 5 %, at most 5000; 0 keeps no reserve): a put evicts least-recently-used blocks
     * until that much stays free after it, whatever the capacity says. */
    unsigned free_space_bp;
} node_store_options;

/* The defaults: near_percent 10, fsync off, direct_io on, free_space_bp 500. */
node_store_options node_store_options_default(void);

typedef struct node_store_stats {
    uint64_t capacity;       /* the hard cap, in bytes (headers included) */
    uint64_t bytes_used;     /* file bytes (header + payload) of the stored blocks */
    uint64_t bytes_reserved; /* bytes reserved by writes in flight; used + reserved <= capacity */
    uint64_t near_capacity;  /* the near share of the capacity */
    uint64_t near_bytes;     /* file bytes of stored near blocks (part of bytes_used) */
    uint64_t blocks;         /* stored blocks, both classes */
    uint64_t near_blocks;    /* stored near blocks */
    uint64_t hits;           /* gets answered with verified bytes */
    uint64_t misses;         /* gets that found no usable block (corrupt drops included) */
    uint64_t puts;           /* blocks written */
    uint64_t evictions;      /* blocks removed to make room (space_evictions included) */
    uint64_t space_evictions; /* of which for the file system: its free-space reserve, or a full disk */
    uint64_t corrupt_drops;  /* blocks removed because they failed their checks, each counted once */
    uint64_t lost_drops;     /* blocks forgotten because their files were gone (removed by hand) */
    uint64_t write_errors;   /* puts that failed while writing (full disk included) */
    uint64_t dir_heals;      /* times blocks/ was found gone and made again */
    uint64_t verified_bytes; /* payload bytes hashed to check them on reads (gets, maps, view checks) */
    uint64_t old_format_drops; /* files of the first format (one checksum per block) removed at open */
    uint64_t direct_copied_bytes; /* file bytes copied into the store's aligned buffers by direct writes */
} node_store_stats;

/* Opens the store in <cache_dir>/blocks/, creating cache_dir and blocks/ when missing, and
 * rebuilds the index from the block files there: leftover temporary files of an interrupted
 * write are removed, files with a bad header or the wrong size are removed and counted as corrupt
 * drops, and recency is restored from the files' access times. If the blocks found exceed the
 * capacity or the near share (the options changed), the least recently used are evicted.
 * Payload checksums are checked on read, not here, so opening is fast.
 * The directory is locked (flock) for as long as the store is open: a second store on the same
 * directory, in this process or another, is refused. opts may be NULL for the defaults.
 * Returns NULL with a shoal_error (INVAL for a zero capacity or a bad share or reserve, IO naming
 * the path and the system call otherwise). */
node_store *node_store_new(const char *cache_dir, uint64_t capacity_bytes, const node_store_options *opts);

/* Closes the store and frees the index; the block files stay. Accepts NULL. No call may be in
 * flight on other threads. */
void node_store_delete(node_store *s);

/* Stores a block. Space is reserved first (evicting least-recently-used blocks as needed: near
 * blocks before owned ones, both for the capacity and for the file system's free-space reserve),
 * then the file is written under a temporary name, optionally synced, and renamed into place, so
 * the cap holds at every moment and a reader never sees a partial block. A write that finds the
 * file system full (ENOSPC/EDQUOT) evicts at least the block's size and is tried once more; one
 * that finds blocks/ or its leaf directory removed makes them again and is tried once more.
 * When the id is already stored (or being written by another thread), nothing is written and 0 is
 * returned; an owned put of a stored near block promotes it to owned.
 * Fails with -1 and a shoal_error:
 *   RANGE    the block (header included) is larger than the capacity, or than the near share;
 *   NOSPACE  the file system stayed full after the eviction and second try, or the free-space
 *            reserve cannot be kept with what this put may evict (no partial file is left); or a
 *            near block finds no room without evicting owned blocks; or the capacity is all
 *            reserved by writes in flight;
 *   IO       any other failed system call (named in the message).
 * The payload is only read during the call. */
int node_store_put(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], const void *data, size_t len,
                   node_store_class cls);

/* A block's chunk sums, computed while its bytes arrive so that storing it does not read the
 * payload once more (node_store_sum_*). One thread at a time. */
typedef struct node_store_sum node_store_sum;

/* Starts the sums of a block `len` bytes long with this id. NULL (NOMEM) on failure. */
node_store_sum *node_store_sum_new(const uint8_t id[NODE_STORE_ID_LEN], uint64_t len);
/* Feeds the next bytes, in order. */
void node_store_sum_update(node_store_sum *sum, const void *data, size_t len);
/* Forgets the bytes fed so far (a transfer that starts again from the first byte). */
void node_store_sum_reset(node_store_sum *sum);
/* Whether exactly the block's length was fed, so the sums are complete. */
bool node_store_sum_final(const node_store_sum *sum);
/* Accepts NULL. */
void node_store_sum_free(node_store_sum *sum);

/* node_store_put with the payload's sums already known (NULL, or not final: computed here). Sums
 * that do not match the payload are not caught here: the block fails its check at the first read
 * of a chunk they miss, and is dropped as corrupt. */
int node_store_put_checked(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], const void *data, size_t len,
                           node_store_class cls, const node_store_sum *sum);

/* node_store_put_checked of the len bytes at frame + NODE_STORE_HEADER_LEN, where the
 * NODE_STORE_HEADER_LEN bytes at frame are the caller's scratch that the store may overwrite
 * during the call (with the block's header). When frame is 4 KiB-aligned and the block is written
 * with O_DIRECT, its file's whole 4 KiB units are written straight from frame, without the copy
 * into the store's aligned buffer; otherwise it is node_store_put_checked. Failures as
 * node_store_put. The payload is only read during the call. */
int node_store_put_framed(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], void *frame, size_t len,
                          node_store_class cls, const node_store_sum *sum);

/* Reads a block's payload into buf (buf_len bytes) and stores its length in *len_out (when not
 * NULL). Every chunk is verified before 0 is returned; the block becomes the most recently used.
 * Fails with -1 and a shoal_error:
 *   NOT_FOUND  a miss: not stored, still being written, its file is gone (forgotten, counted as
 *              lost), or it failed its checks (removed, counted as corrupt); the caller fetches
 *              it again. Also when the process is out of file descriptors (the block stays);
 *   RANGE      buf_len is smaller than the payload (*len_out holds the needed length; the block
 *              stays stored; node_store_contains tells the length beforehand);
 *   NOMEM      no memory for the chunk sums. */
int node_store_get(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], void *buf, size_t buf_len,
                   size_t *len_out);

/* A block mapped read-only from its file: data/len are the payload, for sending or copying
 * without a copy of the whole block. The other fields are private: the mapping, the block's
 * name in the store, and the record of which chunks were verified in this view. */
typedef struct node_store_marks node_store_marks;
typedef struct node_store_view {
    const uint8_t *data;
    size_t len;
    void *map;
    size_t map_len;
    node_store *store;
    uint64_t gen;
    uint8_t id[NODE_STORE_ID_LEN];
    const uint8_t *sums;
    uint32_t chunk;
    uint64_t seed;
    node_store_marks *marks;
    int fd; /* an open view's file (node_store_open_lazy) */
    bool open; /* fd is open and nothing is mapped */
} node_store_view;

/* Maps a block's file read-only, verifies every chunk over the mapping, and fills *out; the block
 * becomes the most recently used. The view stays valid (and keeps the file's pages) until
 * node_store_view_release, even if the block is evicted meanwhile; it may be released from any
 * thread, also after node_store_delete. -1 with NOT_FOUND on a miss (as node_store_get: a block
 * that fails its checks is dropped), IO when mmap fails, NOMEM; *out is then empty. */
int node_store_map(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], node_store_view *out);

/* As node_store_map, but only the header, size and chunk table's place are checked: no byte of
 * the payload is read. Before reading bytes of out->data the caller must have them accepted by
 * node_store_view_verify; a chunk is hashed on the first such call that touches it in this view
 * and trusted afterwards, for as long as the view lives (a new view hashes again). Counts a hit. */
int node_store_map_lazy(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], node_store_view *out);

/* Makes sure bytes [off, off + len) of a view's payload are sound: hashes each chunk they touch
 * that this view has not verified yet (the bytes hashed are counted in verified_bytes) and
 * compares it with its stored sum. 0 when all match: those bytes may be read for as long as the
 * view lives. -1 with NOT_FOUND when a chunk fails: the block is removed from the store and
 * counted corrupt (once), and every later call on this view fails too (release it and read the
 * block anew); RANGE when the range passes the payload's end; INVAL for an empty view. A view of
 * node_store_map has every chunk verified already. Safe from many threads on one view at once
 * (two may hash the same chunk); the store must still be open. */
int node_store_view_verify(node_store_view *v, size_t off, size_t len);

/* As node_store_map_lazy, but nothing is mapped: the view keeps the block's file open (and its
 * chunk sums in memory), data is NULL, and its bytes are read with node_store_view_read, which
 * hashes each chunk the first time a read touches it. A view costs a descriptor and a few bytes per
 * chunk, never resident pages of the block, and a read costs one pread, never a page fault. */
int node_store_open_lazy(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], node_store_view *out);

/* Copies bytes [off, off + len) of a view's payload into dst, verified: chunks the view has not
 * verified are hashed first (as node_store_view_verify; for an open view, from the bytes read, so
 * every byte copied is a byte hashed). 0, or -1 with the errors of node_store_view_verify (NOT_FOUND
 * when a chunk fails or the file is shorter than its header says: the block is dropped); NOMEM for
 * a chunk of more than 64 KiB. Safe from many threads on one view at once. */
int node_store_view_read(node_store_view *v, size_t off, size_t len, void *dst);

/* Unmaps (or closes) a view filled by node_store_map, node_store_map_lazy or node_store_open_lazy
 * and empties it. Accepts NULL and
 * an empty view. */
void node_store_view_release(node_store_view *v);

/* Asks the kernel to start reading a stored block's file into the page cache (POSIX_FADV_WILLNEED),
 * without waiting for it, changing its recency or counting a hit: a sequential reader names the
 * blocks it will read next so their disk reads overlap its reads of this one, as the kernel's
 * read-ahead does within a file. Nothing is verified: the bytes are checked when read. True when
 * the block is stored and the hint was given; false otherwise (nothing to do). Thread-safe. */
bool node_store_willneed(node_store *s, const uint8_t id[NODE_STORE_ID_LEN]);

/* Whether a block is stored (complete), without reading it, changing its recency or counting a
 * hit or miss. When it is and len_out is not NULL, *len_out is its payload length and *cls_out
 * (when not NULL) its class. */
bool node_store_contains(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], size_t *len_out,
                         node_store_class *cls_out);

/* The ids of the stored blocks of class `cls` (blocks being written are not listed), most recently
 * used first, in a new array *ids of *n entries the caller frees (NULL when none). A snapshot:
 * blocks may be evicted or stored right after; it changes no recency and counts no hit. A
 * draining node lists its owned blocks with it. -1 with SHOAL_ERR_NOMEM (*ids NULL, *n 0). */
int node_store_list(node_store *s, node_store_class cls, uint8_t (**ids)[NODE_STORE_ID_LEN], size_t *n);

/* A consistent snapshot of the counters. */
void node_store_get_stats(node_store *s, node_store_stats *out);

/* Housekeeping for a caller to run about once a second (the daemon's main loop does). Cheap: two
 * stat calls to see that blocks/ is still the directory the store has open (made again when not),
 * one statvfs to evict down to the free-space reserve when something else filled the file system,
 * and a stat of a slice of the stored blocks' files (1,024; 65,536 while a recent read or put
 * found files removed), dropping those that are gone or damaged. Never fails; problems are
 * logged and counted. */
void node_store_maintain(node_store *s);

/* The bytes of a block file with a payload of `payload_len` bytes: header, payload, then the chunk
 * sums (the payload starts at NODE_STORE_HEADER_LEN). What the capacity counts per block. */
uint64_t node_store_file_size(uint64_t payload_len);

/* The file name of a block relative to the blocks/ directory, "ab/cd/<32 hex digits>", written
 * into out (at least NODE_STORE_RELPATH_LEN bytes); returns out. */
#define NODE_STORE_RELPATH_LEN 40
char *node_store_relpath(const uint8_t id[NODE_STORE_ID_LEN], char *out);

#endif
