/*
 * node_store: one file per block, a hash index and two LRU lists in memory, one mutex.
 *
 * Layout and format. Block files live in blocks/ab/cd/<hex id> (the first two id bytes pick the
 * two directory levels, so no directory grows large even with millions of blocks; directories are
 * made on first use and never removed, which keeps mkdir free of races with removal). A file is a
 * 48-byte little-endian header, the payload, and one XXH3-128 sum per chunk of the payload:
 *
 *   0  u32 magic "SHBK"     4  u16 version (2)     6  u16 class (0 owned, 1 near)
 *   8  u64 payload length   16 id (16 bytes)       32 u32 chunk size (64 KiB)   36 zeros (12)
 *   48 payload              48 + length: sums of the chunks, 16 bytes each (low, high u64)
 *
 * Chunk i is summed with the seed XXH3-64(bytes 8..35) + i, so a sum also binds the length, the
 * id, the chunk size and the chunk's place: a file renamed to another id, a damaged length, or
 * chunks swapped fail as surely as a damaged payload. The class is outside the sums on purpose, so
 * an owned put of a near block can promote it in place with a two-byte write. Files of version 1
 * (one checksum of the whole payload) are removed at open and counted apart (old_format_drops):
 * see docs/store.md.
 *
 * Verify once, serve many. A 4 KiB read that hashed its whole 4 MiB block spent almost all its
 * time in XXH3, so the sums are per chunk and a read hashes only the chunks it touches. Gets and
 * full maps (whole-block readers: peers, `shoal get`, drains) check every chunk. A lazy map
 * (node_store_map_lazy) checks the header only and hands out a view with a bitmap of verified
 * chunks; node_store_view_verify hashes the chunks a range touches that the bitmap lacks and sets
 * their bits (atomically: readers share a held view), so a chunk is hashed once per view, and a
 * view made again (the block evicted from the mount's held set, or the store reopened) starts
 * with an empty bitmap. An open view (node_store_open_lazy, what the mount reads through) is the
 * same without a mapping: it keeps the file open and its sums in memory, and node_store_view_read
 * preads the range asked into the caller's buffer and hashes the chunks it touches there (or, for a
 * chunk the range holds only part of, from a read of the whole chunk), so a held block costs no
 * resident pages and a read no page faults. A failed chunk marks the view bad, so not even its verified chunks are
 * served after the damage is known, and drops the block as any failed check does. The bytes hashed
 * are counted (verified_bytes): the tests see through it what a read verified.
 *
 * Crash safety. A put writes ab/cd/.tmp-<hex>-<seq>, optionally fsyncs it, and renames it over
 * the final name (optionally fsyncing the directory), so a block name only ever points at a whole
 * file. Without fsync a power loss can leave a renamed file whose data never reached the disk;
 * the chunk sums turn that into a miss, which is why fsync is an option and not a requirement.
 * Temporary files left by a crash are removed at open; the directory lock (flock on
 * blocks/.lock) guarantees none of them belongs to a live writer.
 *
 * Direct writes. Block files of STORE_DIRECT_MIN bytes and more are written with O_DIRECT when
 * the file system takes it (the default, node_store_options.direct_io): header, payload and sums are
 * copied, STORE_DIRECT_CHUNK at a time, into one of the store's few page-aligned buffers, written
 * in whole 4 KiB units, and the file is cut back to its exact size. A caller whose payload sits
 * NODE_STORE_HEADER_LEN bytes past a page boundary, with those bytes its scratch
 * (node_store_put_framed: the read path's block buffers are laid out so), has the header put
 * there and the file's whole units written straight from its memory; only the payload's last
 * partial unit and the sums are copied. That copy was 4-5 % of the daemon's CPU in a cold read of
 * big files, and it kept the block's bytes in the CPU cache's way twice. A fetched block's bytes already sit in memory twice on their way to readers (the fetch's
 * buffer and the mount's page cache); a buffered write would take a third copy in fresh
 * page-cache pages, which is where a cold read spent most of its CPU (docs/benchmarks.md, Mount
 * (c)). Reads stay buffered (pread, mmap), so a block served again is cached by the kernel as any
 * file. A file system that refuses O_DIRECT (EINVAL at open or at the first write) turns direct
 * writes off for the store, logged once, and the block is written buffered.
 *
 * Capacity. The cap counts file bytes (header + payload). A put reserves its bytes under the lock
 * before it writes anything, evicting least-recently-used blocks (near before owned) until
 * used + reserved + size fits; victims are unlinked under the lock before the reservation is
 * granted. So the bytes on disk never exceed the cap, except for an evicted block still open by a
 * reader, whose space the kernel frees when that reader closes it. Near blocks also reserve
 * against the near share, and never evict owned blocks.
 *
 * Concurrency. The mutex guards the index, the lists and the counters; reads, writes, fsync and
 * rename run outside it. Unlinks run under it, which makes "drop this corrupt block" safe against
 * an eviction and re-put of the same id in between: each stored entry carries a generation, and a
 * reader drops the file only if the entry it read is still the one in the index. A put of an id
 * that is already stored or being written returns at once: ids name immutable bytes.
 *
 * Recency across restarts: every get stamps the file's access time with futimens from an access
 * clock (wall time in ns, forced strictly increasing), and open sorts the files by access time.
 * Files are opened with O_NOATIME so neither our header reads at open nor the kernel's relatime
 * rules disturb that order; the explicit stamp works even on noatime mounts. The modification
 * time is never touched after the write, so it still says when the block was stored.
 *
 * Free space. The capacity is the operator's promise about the store; the file system may hold
 * less (something else fills it, or --cache-size is larger than the disk). So a put also keeps
 * free_space_bp of the file system free, evicting LRU blocks (near first) until the free bytes
 * and inodes after the write stay above the reserve. Asking the kernel (fstatvfs) on every put
 * would be a system call per block, so the store keeps an estimate under its mutex: measured at
 * most once a second or when the estimate says the put would cross the reserve, minus each put's
 * bytes (rounded up to the file system's unit), plus each removed file's. When it must evict, it
 * frees a little more than needed (an eighth of the reserve, at most 256 MiB), so at the edge
 * of the reserve a statvfs comes once per that many bytes, not once per block. The estimate can
 * be optimistic (an evicted file still open by a reader keeps its blocks), so a write that still
 * meets ENOSPC or EDQUOT evicts at least its own size and tries once more before it fails. A
 * file system filled while the store is idle is handled by node_store_maintain. Why not evict
 * only on ENOSPC? Because the disk is shared: the mount stages the files it writes in the same
 * cache directory, and a cache that fills the disk to the last byte makes those writes fail.
 *
 * Healing. An operator (or a cleaner) may remove blocks/ or parts of it under a running store.
 * The store keeps blocks/ open by descriptor, and a removed directory takes no new entries, so
 * without help every put would fail for good and the index would keep promising blocks that are
 * gone. Three things put it right. (1) A put that meets ENOENT, and a read that finds its file
 * missing, check whether blocks/ is still the directory the store has open (its link count and,
 * by path, its device and inode: two stat calls, only on those rare paths); if not, the index is
 * emptied (the files went with the directory), blocks/ and its lock file are made again, the new
 * directory is scanned as at open (empty, unless someone put a directory back), and the put is
 * tried once more in it. The old descriptor is kept open until the store is deleted, so a thread
 * that took it just before cannot end up using a recycled descriptor number; operations on it fail
 * with ENOENT and take the same path. A put that wrote into the old directory just before it
 * vanished sees the directory generation changed and writes again. (2) A read that finds its
 * file missing drops that entry (counted as lost, not corrupt: a removed file is not damage) and
 * makes the periodic audit run fast for a while, since files rarely vanish alone. (3) The
 * audit, in node_store_maintain, stats a slice of the index's files per call outside the lock
 * and drops the ones that are gone, not regular files, or of the wrong size.
 *
 * Counting damage. Every block found damaged is counted once in corrupt_drops, whoever finds it
 * (open's scan, a get or map, a peer serve, the audit): a block removed for another reason (an
 * eviction) between a reader's lookup and its check is still counted, and a short ring of the
 * generations counted last keeps two readers of one damaged block from counting it twice. Block
 * files are opened with O_NOFOLLOW and O_NONBLOCK, so a symbolic link or a FIFO in a block's place
 * is damage like any other rather than a file served from elsewhere or an open that never returns,
 * and a directory in its place is removed with rmdir.
 */
#include "node_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xxh_x86dispatch.h> /* the same hash, with AVX2 or AVX-512 when the CPU has them */
#define STORE_SUM XXH3_128bits_withSeed_dispatch
#define STORE_SUM_UPDATE XXH3_128bits_update_dispatch
#else
#define STORE_SUM XXH3_128bits_withSeed
#define STORE_SUM_UPDATE XXH3_128bits_update
#endif

#include "shoal_array.h"
#include "shoal_assert.h"
#include "shoal_bytes.h"
#include "shoal_error.h"
#include "shoal_log.h"

#define STORE_MAGIC 0x4B424853u /* "SHBK" little-endian */
#define STORE_VERSION 2
#define STORE_CHUNK (64u << 10)    /* payload bytes per chunk sum, in the files this store writes */
#define STORE_DIRECT_SLOTS 4 /* direct writes at once, each through a buffer of the store's */
#define STORE_CHUNK_MIN (4u << 10) /* chunk sizes a file may declare */
#define STORE_CHUNK_MAX (64u << 20)
#define STORE_SUM_LEN 16           /* bytes of one chunk sum (XXH3-128) */
#define STORE_TMP_PREFIX ".tmp-"
#define STORE_HEX_LEN (2 * NODE_STORE_ID_LEN)
#define STORE_TMP_NAME_LEN 80

typedef struct store_entry {
    uint8_t id[NODE_STORE_ID_LEN];
    uint64_t size; /* file bytes: header + payload + chunk sums */
    uint64_t len;  /* payload bytes */
    uint64_t gen;  /* changes each time the id is stored anew */
    int64_t atime_ns; /* access time found at open; used only to sort the rebuilt lists */
    node_store_class cls;
    bool pending; /* reserved, being written; not in an LRU list, invisible to get */
    struct store_entry *hnext;
    struct store_entry *prev, *next; /* LRU list of its class, head = most recent */
} store_entry;

typedef struct store_lru {
    store_entry *head, *tail;
} store_lru;

/* The file system under blocks/, as the free-space reserve sees it (all under s->mu). */
typedef struct store_fs {
    bool known;           /* fstatvfs answers here; without it there is no reserve */
    uint64_t unit;        /* allocation unit: a file takes a whole number of these */
    uint64_t reserve;     /* bytes to keep free */
    uint64_t reserve_files; /* inodes to keep free (0 where the file system does not count them) */
    uint64_t slack;       /* extra bytes freed once eviction for the reserve has started */
    int64_t avail;        /* estimate of the bytes available (f_bavail), puts in flight deducted */
    int64_t avail_files;  /* estimate of the inodes available, INT64_MAX when not counted */
    int64_t measured_ns;  /* monotonic time of the last fstatvfs; 0 = never */
    bool short_logged;    /* the reserve could not be kept, and that was logged */
} store_fs;

#define STORE_RECENT_CORRUPT 16

struct node_store {
    char *cache_dir;
    char *blocks_dir;
    int blocks_fd;        /* blocks/ (replaced under mu when healed; read under mu) */
    int lock_fd;
    uint64_t dir_gen;     /* bumped each time blocks/ is made again */
    int *retired_fds;     /* descriptors of vanished blocks/ directories, closed at delete */
    size_t n_retired, cap_retired;
    bool fsync;
    _Atomic bool direct; /* O_DIRECT block writes; cleared for good when the file system refuses */
    pthread_mutex_t direct_mu; /* guards the direct-write buffers (see "Direct writes") */
    pthread_cond_t direct_cv; /* one came back */
    uint8_t *direct_free[STORE_DIRECT_SLOTS];
    unsigned direct_nfree, direct_made;
    _Atomic uint64_t direct_copied; /* file bytes copied into those buffers (direct_copied_bytes) */
    /* Leaf directories ab/cd/ known to exist, one bit per (ab, cd): a put skips its two mkdirat
     * calls once its leaf is known (directories are never removed). */
    _Atomic uint8_t leaf_made[65536 / 8];
    uint64_t capacity;
    uint64_t near_capacity;

    pthread_mutex_t mu;
    store_entry **buckets;
    size_t nbuckets; /* power of two */
    size_t nentries;
    store_lru lru[2]; /* indexed by node_store_class */
    uint64_t used, reserved, near_used, near_reserved;
    uint64_t blocks, near_blocks;
    uint64_t next_gen;
    uint64_t tmp_seq;
    int64_t clock_ns;
    uint64_t hits, misses, puts, evictions, space_evictions, corrupt_drops, lost_drops, write_errors, dir_heals;
    uint64_t verified_bytes, old_format_drops;
    bool heal_failing;    /* blocks/ could not be made again, and that was logged */
    uint64_t recent_corrupt[STORE_RECENT_CORRUPT]; /* generations counted as corrupt last (a ring) */
    unsigned recent_next;

    unsigned free_bp;     /* the free-space reserve, hundredths of a percent */
    store_fs fs;
    size_t audit_bucket;  /* where the next audit slice starts */
    size_t audit_boost;   /* entries still to audit at the fast rate */
};

/* ---- small helpers ---------------------------------------------------------------------- */

char *node_store_relpath(const uint8_t id[NODE_STORE_ID_LEN], char *out)
{
    char hex[STORE_HEX_LEN + 1];
    shoal_hex(hex, id, NODE_STORE_ID_LEN);
    snprintf(out, NODE_STORE_RELPATH_LEN, "%.2s/%.2s/%s", hex, hex + 2, hex);
    return out;
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The access clock: wall time, but strictly increasing, so stamps order every access. Locked. */
static int64_t clock_tick(node_store *s)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    int64_t now = wall_ns();
    s->clock_ns = now > s->clock_ns ? now : s->clock_ns + 1;
    return s->clock_ns;
}

static struct timespec ns_to_ts(int64_t ns)
{
    return (struct timespec){.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
}

/* Sets the access time of an open file, leaving its modification time alone. */
static void stamp_atime(int fd, int64_t atime_ns)
{
    struct timespec ts[2] = {ns_to_ts(atime_ns), {.tv_sec = 0, .tv_nsec = UTIME_OMIT}};
    if (futimens(fd, ts) != 0)
        LOG_DEBUG("store", "stamp_failed", "errno=%d", errno);
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts); /* the vDSO: no system call */
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Opens a block file for reading without updating its access time where the kernel allows. A
 * symbolic link fails (ELOOP) and a FIFO opens without waiting for a writer: neither is a block. */
static int open_block_ro(int dirfd, const char *rel)
{
    int flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
    int fd = openat(dirfd, rel, flags | O_NOATIME);
    if (fd < 0 && errno == EPERM)
        fd = openat(dirfd, rel, flags);
    return fd;
}

/* Removes what sits at a block's name: a file, or a directory put there (if empty). 0 or -1 with
 * errno. */
static int remove_block_file(int dirfd, const char *rel)
{
    if (unlinkat(dirfd, rel, 0) == 0)
        return 0;
    if (errno != EISDIR)
        return -1;
    return unlinkat(dirfd, rel, AT_REMOVEDIR);
}

/* pread until n bytes or EOF; returns the bytes read or -1 with errno. */
static ssize_t pread_full(int fd, void *buf, size_t n, off_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (uint8_t *)buf + done, n - done, off + (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

/* ---- header and chunk sums ------------------------------------------------------------------ */

/* Chunks a payload of `len` bytes is checked in, with chunks of `chunk` bytes. */
static size_t chunk_count(uint64_t len, uint32_t chunk) { return (size_t)((len + chunk - 1) / chunk); }

uint64_t node_store_file_size(uint64_t payload_len)
{
    return NODE_STORE_HEADER_LEN + payload_len + STORE_SUM_LEN * (uint64_t)chunk_count(payload_len, STORE_CHUNK);
}

/* The chunk sums' base seed: XXH3-64 of the header's length, id and chunk size (bytes 8..35);
 * chunk i is summed with seed + i, so a chunk moved to another place fails as a damaged one. */
static XXH64_hash_t sum_seed(const uint8_t *hdr) { return XXH3_64bits(hdr + 8, 28); }

/* Writes the sum of chunk `i` (n bytes at data) into out[0..STORE_SUM_LEN). */
static void chunk_sum(XXH64_hash_t seed, size_t i, const void *data, size_t n, uint8_t *out)
{
    XXH128_hash_t h = STORE_SUM(data, n, seed + i);
    shoal_store_le64(out, h.low64);
    shoal_store_le64(out + 8, h.high64);
}

/* Sums every chunk of a payload into table (chunk_count entries). */
static void chunk_sums(XXH64_hash_t seed, uint32_t chunk, const uint8_t *data, size_t len, uint8_t *table)
{
    for (size_t i = 0, off = 0; off < len; i++, off += chunk)
        chunk_sum(seed, i, data + off, len - off < chunk ? len - off : chunk, table + i * STORE_SUM_LEN);
}

static void header_build(uint8_t hdr[NODE_STORE_HEADER_LEN], const uint8_t id[NODE_STORE_ID_LEN],
                         node_store_class cls, size_t len)
{
    memset(hdr, 0, NODE_STORE_HEADER_LEN);
    shoal_store_le32(hdr, STORE_MAGIC);
    shoal_store_le16(hdr + 4, STORE_VERSION);
    shoal_store_le16(hdr + 6, (uint16_t)cls);
    shoal_store_le64(hdr + 8, len);
    memcpy(hdr + 16, id, NODE_STORE_ID_LEN);
    shoal_store_le32(hdr + 32, STORE_CHUNK);
}

/* ---- checksums computed while a block arrives ---------------------------------------------- */

struct node_store_sum {
    XXH3_state_t *state; /* the chunk being fed */
    XXH64_hash_t seed;
    uint64_t len, fed;
    uint8_t *table; /* chunk_count(len) sums, filled as chunks complete */
};

node_store_sum *node_store_sum_new(const uint8_t id[NODE_STORE_ID_LEN], uint64_t len)
{
    size_t n = chunk_count(len, STORE_CHUNK);
    node_store_sum *sum = calloc(1, sizeof *sum);
    if (sum == NULL || (sum->state = XXH3_createState()) == NULL ||
        (sum->table = malloc(n ? n * STORE_SUM_LEN : 1)) == NULL) {
        node_store_sum_free(sum);
        shoal_error_set(SHOAL_ERR_NOMEM, "store: checksum state");
        return NULL;
    }
    uint8_t hdr[NODE_STORE_HEADER_LEN];
    header_build(hdr, id, NODE_STORE_OWNED, len);
    sum->seed = sum_seed(hdr);
    sum->len = len;
    node_store_sum_reset(sum);
    return sum;
}

void node_store_sum_reset(node_store_sum *sum)
{
    XXH3_128bits_reset_withSeed(sum->state, sum->seed);
    sum->fed = 0;
}

void node_store_sum_update(node_store_sum *sum, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0 && sum->fed < sum->len) {
        uint64_t room = STORE_CHUNK - sum->fed % STORE_CHUNK, left = sum->len - sum->fed;
        size_t take = (size_t)(len < room ? len : room);
        if (take > left)
            take = (size_t)left;
        STORE_SUM_UPDATE(sum->state, p, take);
        sum->fed += take;
        p += take;
        len -= take;
        if (sum->fed % STORE_CHUNK == 0 || sum->fed == sum->len) { /* a chunk is complete */
            size_t i = (size_t)((sum->fed - 1) / STORE_CHUNK);
            XXH128_hash_t h = XXH3_128bits_digest(sum->state);
            shoal_store_le64(sum->table + i * STORE_SUM_LEN, h.low64);
            shoal_store_le64(sum->table + i * STORE_SUM_LEN + 8, h.high64);
            XXH3_128bits_reset_withSeed(sum->state, sum->seed + i + 1);
        }
    }
    sum->fed += len; /* bytes past the block's length: never final */
}

bool node_store_sum_final(const node_store_sum *sum) { return sum->fed == sum->len; }

void node_store_sum_free(node_store_sum *sum)
{
    if (sum == NULL)
        return;
    XXH3_freeState(sum->state);
    free(sum->table);
    free(sum);
}

/* Checks everything in a header but the chunk sums: magic, version, class, the id it should carry,
 * the chunk size, reserved bytes, and that payload and chunk sums fill the file exactly. NULL when
 * sound, else the reason. */
static const char *header_check(const uint8_t hdr[NODE_STORE_HEADER_LEN], const uint8_t id[NODE_STORE_ID_LEN],
                                uint64_t file_size)
{
    static const uint8_t zeros[NODE_STORE_HEADER_LEN - 36];
    if (shoal_load_le32(hdr) != STORE_MAGIC)
        return "bad_magic";
    if (shoal_load_le16(hdr + 4) == 1)
        return "old_format"; /* one checksum over the whole payload: dropped, fetched again */
    if (shoal_load_le16(hdr + 4) != STORE_VERSION)
        return "bad_version";
    if (shoal_load_le16(hdr + 6) > NODE_STORE_NEAR)
        return "bad_class";
    if (memcmp(hdr + 16, id, NODE_STORE_ID_LEN) != 0)
        return "wrong_id";
    uint32_t chunk = shoal_load_le32(hdr + 32);
    if (chunk < STORE_CHUNK_MIN || chunk > STORE_CHUNK_MAX || (chunk & (chunk - 1)) != 0)
        return "bad_chunk_size";
    if (memcmp(hdr + 36, zeros, sizeof zeros) != 0)
        return "bad_reserved";
    uint64_t len = shoal_load_le64(hdr + 8);
    if (file_size < NODE_STORE_HEADER_LEN || len > file_size - NODE_STORE_HEADER_LEN ||
        file_size - NODE_STORE_HEADER_LEN - len != STORE_SUM_LEN * (uint64_t)chunk_count(len, chunk))
        return "bad_length";
    return NULL;
}

/* ---- index and lists (all under s->mu) ---------------------------------------------------- */

static size_t bucket_of(const node_store *s, const uint8_t id[NODE_STORE_ID_LEN])
{
    return (size_t)XXH3_64bits(id, NODE_STORE_ID_LEN) & (s->nbuckets - 1);
}

static store_entry *index_find(node_store *s, const uint8_t id[NODE_STORE_ID_LEN])
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    for (store_entry *e = s->buckets[bucket_of(s, id)]; e; e = e->hnext)
        if (memcmp(e->id, id, NODE_STORE_ID_LEN) == 0)
            return e;
    return NULL;
}

static int index_grow(node_store *s)
{
    size_t n = s->nbuckets * 2;
    store_entry **nb = calloc(n, sizeof *nb);
    if (!nb)
        return shoal_error_set(SHOAL_ERR_NOMEM, "store: growing the block index to %zu buckets", n);
    store_entry **old = s->buckets;
    size_t oldn = s->nbuckets;
    s->buckets = nb;
    s->nbuckets = n;
    for (size_t i = 0; i < oldn; i++) {
        store_entry *e = old[i];
        while (e) {
            store_entry *next = e->hnext;
            size_t b = bucket_of(s, e->id);
            e->hnext = nb[b];
            nb[b] = e;
            e = next;
        }
    }
    free(old);
    return 0;
}

static int index_insert(node_store *s, store_entry *e)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    if (s->nentries >= s->nbuckets && index_grow(s) != 0)
        return -1;
    size_t b = bucket_of(s, e->id);
    e->hnext = s->buckets[b];
    s->buckets[b] = e;
    s->nentries++;
    return 0;
}

static void index_remove(node_store *s, store_entry *e)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    store_entry **pp = &s->buckets[bucket_of(s, e->id)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    s->nentries--;
}

static void lru_push_head(store_lru *l, store_entry *e)
{
    e->prev = NULL;
    e->next = l->head;
    if (l->head)
        l->head->prev = e;
    else
        l->tail = e;
    l->head = e;
}

static void lru_unlink(store_lru *l, store_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->prev = e->next = NULL;
}

/* Adds a complete block to the accounting and to the head of its list. */
static void account_add(node_store *s, store_entry *e)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    s->used += e->size;
    s->blocks++;
    if (e->cls == NODE_STORE_NEAR) {
        s->near_used += e->size;
        s->near_blocks++;
    }
    lru_push_head(&s->lru[e->cls], e);
}

/* The file system bytes a file of `size` bytes takes: whole allocation units. */
static uint64_t fs_charge(const node_store *s, uint64_t size)
{
    uint64_t unit = s->fs.unit ? s->fs.unit : 4096;
    return (size + unit - 1) / unit * unit;
}

/* A file of `size` bytes left the file system: the estimate gets its space back. */
static void fs_credit(node_store *s, uint64_t size)
{
    if (s->free_bp == 0)
        return; /* no reserve: the estimate is not kept */
    s->fs.avail += (int64_t)fs_charge(s, size);
    if (s->fs.avail_files != INT64_MAX)
        s->fs.avail_files++;
}

/* Removes a complete block from index, list and accounting, frees the entry. The file is removed
 * too, unless `file_gone` says it no longer exists. */
static void entry_forget(node_store *s, store_entry *e, bool file_gone)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    char rel[NODE_STORE_RELPATH_LEN];
    node_store_relpath(e->id, rel);
    if (!file_gone && remove_block_file(s->blocks_fd, rel) == 0)
        fs_credit(s, e->size);
    else if (!file_gone && errno != ENOENT)
        LOG_WARN("store", "unlink_failed", "file=%s/%s errno=%d", s->blocks_dir, rel, errno);
    lru_unlink(&s->lru[e->cls], e);
    index_remove(s, e);
    s->used -= e->size;
    s->blocks--;
    if (e->cls == NODE_STORE_NEAR) {
        s->near_used -= e->size;
        s->near_blocks--;
    }
    free(e);
}

static void entry_remove(node_store *s, store_entry *e) { entry_forget(s, e, false); }

/* Evicts the least recently used block of class cls; its size (file bytes), or 0 when the class
 * holds none. `for_space` counts it as evicted for the file system rather than the cap. */
static uint64_t evict_tail_why(node_store *s, node_store_class cls, bool for_space)
{
    store_entry *e = s->lru[cls].tail;
    if (!e)
        return 0;
    uint64_t size = e->size;
    entry_remove(s, e);
    s->evictions++;
    if (for_space)
        s->space_evictions++;
    return size;
}

static bool evict_tail(node_store *s, node_store_class cls) { return evict_tail_why(s, cls, false) != 0; }

/* Evicts one block for the file system's sake: a near block, else an owned one unless the put
 * that asks is a near put (near puts never evict owned blocks). Its file bytes, or 0. */
static uint64_t evict_for_space(node_store *s, node_store_class cls)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    uint64_t freed = evict_tail_why(s, NODE_STORE_NEAR, true);
    if (freed == 0 && cls == NODE_STORE_OWNED)
        freed = evict_tail_why(s, NODE_STORE_OWNED, true);
    return freed;
}

/* ---- free space of the file system (all under s->mu) --------------------------------------- */

#define STORE_FS_MAX_AGE_NS 1000000000LL /* re-measure at least this often while puts come */
#define STORE_FS_MAX_SLACK (256ull << 20)

/* Asks the kernel how much of the file system is free and sets the reserve from its size. Bytes
 * reserved by puts in flight are deducted: what they already wrote is counted twice, which errs
 * on the side of the reserve. */
static void fs_measure(node_store *s)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    struct statvfs v;
    s->fs.measured_ns = mono_ns();
    if (fstatvfs(s->blocks_fd, &v) != 0) {
        if (s->fs.known)
            LOG_WARN("store", "statvfs_failed", "dir=%s errno=%d reserve=off", s->blocks_dir, errno);
        s->fs.known = false;
        return;
    }
    if (v.f_blocks == 0) { /* a file system that reports no size (ramfs): nothing to keep free */
        s->fs.known = false;
        return;
    }
    uint64_t unit = v.f_frsize ? v.f_frsize : v.f_bsize;
    s->fs.known = true;
    s->fs.unit = unit ? unit : 4096;
    s->fs.reserve = (uint64_t)((unsigned __int128)v.f_blocks * s->fs.unit * s->free_bp / 10000);
    s->fs.slack = s->fs.reserve / 8 < STORE_FS_MAX_SLACK ? s->fs.reserve / 8 : STORE_FS_MAX_SLACK;
    s->fs.avail = (int64_t)((uint64_t)v.f_bavail * s->fs.unit) - (int64_t)s->reserved;
    if (v.f_files > 0) {
        s->fs.reserve_files = (uint64_t)v.f_files * s->free_bp / 10000;
        s->fs.avail_files = (int64_t)v.f_favail;
    } else {
        s->fs.reserve_files = 0;
        s->fs.avail_files = INT64_MAX;
    }
}

/* Whether writing `need` bytes (one more file) would leave less than the reserve plus `extra`
 * bytes free. */
static bool fs_short(const node_store *s, uint64_t need, uint64_t extra)
{
    if (!s->fs.known || s->free_bp == 0)
        return false;
    bool files_short = s->fs.avail_files != INT64_MAX && s->fs.avail_files - 1 < (int64_t)s->fs.reserve_files;
    return s->fs.avail - (int64_t)need < (int64_t)(s->fs.reserve + extra) || files_short;
}

/* Evicts while the reserve (plus `extra`) is not kept with `need` more bytes written. The bytes
 * evicted. */
static uint64_t fs_evict_to_reserve(node_store *s, node_store_class cls, uint64_t need, uint64_t extra)
{
    uint64_t freed = 0, one;
    while (fs_short(s, need, extra) && (one = evict_for_space(s, cls)) != 0)
        freed += one;
    return freed;
}

/* The free-space part of a put's reservation: keeps the reserve with `size` more bytes on disk,
 * evicting as needed, and deducts them from the estimate. -1 with NOSPACE when the blocks this put
 * may evict are not enough. */
static int fs_reserve(node_store *s, node_store_class cls, uint64_t size)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    if (s->free_bp == 0)
        return 0;
    uint64_t need = fs_charge(s, size);
    /* (where fstatvfs cannot tell, only the age asks again: never a system call per put) */
    if (mono_ns() - s->fs.measured_ns > STORE_FS_MAX_AGE_NS || fs_short(s, need, 0))
        fs_measure(s);
    if (fs_short(s, need, 0)) {
        /* Past the reserve: free a little more than needed, so the next puts need no statvfs. */
        fs_evict_to_reserve(s, cls, need, s->fs.slack);
        if (fs_short(s, need, 0))
            return shoal_error_set(SHOAL_ERR_NOSPACE,
                                   "store: %s keeps %u.%02u%% of its file system free (--cache-free-space) and "
                                   "has no %sblock left to evict for a block of %" PRIu64 " bytes",
                                   s->blocks_dir, s->free_bp / 100, s->free_bp % 100,
                                   cls == NODE_STORE_NEAR ? "near " : "", size);
    }
    s->fs.avail -= (int64_t)need;
    if (s->fs.avail_files != INT64_MAX)
        s->fs.avail_files--;
    return 0;
}

/* Evicts until `size` more bytes of class cls fit next to what is stored and reserved, and the
 * file system keeps its free-space reserve with them written. Near blocks go first; a near put
 * never evicts owned blocks. -1 with NOSPACE when that is not enough. */
static int make_room(node_store *s, node_store_class cls, uint64_t size)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    if (cls == NODE_STORE_NEAR) {
        while (s->near_used + s->near_reserved + size > s->near_capacity)
            if (!evict_tail(s, NODE_STORE_NEAR))
                return shoal_error_set(SHOAL_ERR_NOSPACE,
                                       "store: the near-cache share (%" PRIu64 " bytes) is reserved by "
                                       "writes in flight",
                                       s->near_capacity);
    }
    while (s->used + s->reserved + size > s->capacity) {
        if (evict_tail(s, NODE_STORE_NEAR))
            continue;
        if (cls == NODE_STORE_NEAR)
            return shoal_error_set(SHOAL_ERR_NOSPACE,
                                   "store: no room for a near-cache block of %" PRIu64 " bytes without "
                                   "evicting owned blocks",
                                   size);
        if (!evict_tail(s, NODE_STORE_OWNED))
            return shoal_error_set(SHOAL_ERR_NOSPACE,
                                   "store: capacity %" PRIu64 " bytes is reserved by writes in flight",
                                   s->capacity);
    }
    return fs_reserve(s, cls, size);
}

/* ---- writing ------------------------------------------------------------------------------ */

/* Sets the shoal_error of a failed system call (NOSPACE for a full file system); errno keeps err. */
static int store_errno(int err, const char *what, const char *dir, const char *rel)
{
    if (err == ENOSPC || err == EDQUOT)
        shoal_error_set(SHOAL_ERR_NOSPACE, "store: %s %s/%s: file system full: %s", what, dir, rel, strerror(err));
    else
        shoal_error_errno(err, "store: %s %s/%s", what, dir, rel);
    errno = err;
    return -1;
}

/* The byte of s->leaf_made that holds the bit of id's leaf directory ab/cd/, and the bit. */
static _Atomic uint8_t *leaf_bit(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], uint8_t *bit)
{
    unsigned leaf = (unsigned)id[0] << 8 | id[1];
    *bit = (uint8_t)(1u << (leaf & 7));
    return &s->leaf_made[leaf >> 3];
}

/* Makes ab/ and ab/cd/ under blocks/ (an existing directory is fine), unless the store made them
 * before; `again` forgets that it did (the leaf was removed behind its back). */
static int ensure_leaf_dir(node_store *s, int dir_fd, const uint8_t id[NODE_STORE_ID_LEN], const char *rel,
                           bool again)
{
    uint8_t bit;
    _Atomic uint8_t *made = leaf_bit(s, id, &bit);
    if (!again && (atomic_load_explicit(made, memory_order_relaxed) & bit))
        return 0;
    char dir[8];
    for (int n = 2; n <= 5; n += 3) {
        memcpy(dir, rel, (size_t)n);
        dir[n] = '\0';
        if (mkdirat(dir_fd, dir, 0700) != 0 && errno != EEXIST)
            return store_errno(errno, "mkdir", s->blocks_dir, dir);
    }
    atomic_fetch_or_explicit(made, bit, memory_order_relaxed);
    return 0;
}

static int write_all(int fd, struct iovec *iov, int iovcnt)
{
    while (iovcnt > 0) {
        ssize_t w = writev(fd, iov, iovcnt);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        size_t left = (size_t)w;
        while (iovcnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

static int fsync_dir(node_store *s, int dir_fd, const char *rel_dir)
{
    int dfd = openat(dir_fd, rel_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return store_errno(errno, "open directory", s->blocks_dir, rel_dir);
    int rc = 0;
    if (fsync(dfd) != 0)
        rc = store_errno(errno, "fsync directory", s->blocks_dir, rel_dir);
    close(dfd);
    return rc;
}

#define STORE_DIRECT_ALIGN 4096u
/* Smaller blocks are written buffered: their page-cache cost is small, and a direct write would
 * wait for the device (and cut the file back to size) for every small file of a dataset. */
#define STORE_DIRECT_MIN (256u << 10)
#define STORE_DIRECT_CHUNK (1u << 20) /* file bytes copied and written at a time */

/* The store keeps at most STORE_DIRECT_SLOTS page-aligned buffers of STORE_DIRECT_CHUNK bytes
 * for direct writes, made on first use and reused (a fresh buffer per block would cost a page
 * fault per 4 KiB of every block); a block is written through one a chunk at a time, and a writer
 * that finds them all in use waits for one. So the memory is bounded whatever the block size and
 * however many threads write (one buffer per thread that ever wrote a block was 4 MiB per fetch
 * worker, kept for the thread's life), and four writes in flight keep a disk busy. */
static uint8_t *direct_buf_get(node_store *s)
{
    uint8_t *b = NULL;
    bool make = false;
    pthread_mutex_lock(&s->direct_mu);
    while (s->direct_nfree == 0 && s->direct_made == STORE_DIRECT_SLOTS)
        pthread_cond_wait(&s->direct_cv, &s->direct_mu);
    if (s->direct_nfree > 0)
        b = s->direct_free[--s->direct_nfree];
    else {
        s->direct_made++;
        make = true;
    }
    pthread_mutex_unlock(&s->direct_mu);
    if (make) {
        void *m = NULL;
        if (posix_memalign(&m, STORE_DIRECT_ALIGN, STORE_DIRECT_CHUNK) != 0) {
            pthread_mutex_lock(&s->direct_mu);
            s->direct_made--;
            pthread_cond_signal(&s->direct_cv);
            pthread_mutex_unlock(&s->direct_mu);
            return NULL;
        }
        b = m;
    }
    return b;
}

static void direct_buf_put(node_store *s, uint8_t *b)
{
    pthread_mutex_lock(&s->direct_mu);
    s->direct_free[s->direct_nfree++] = b;
    pthread_cond_signal(&s->direct_cv);
    pthread_mutex_unlock(&s->direct_mu);
}

static void direct_off(node_store *s, const char *why, int err)
{
    if (atomic_exchange(&s->direct, false))
        LOG_INFO("store", "direct_io_off", "dir=%s reason=\"%s: %s\" writes=buffered", s->blocks_dir, why,
                 strerror(err));
}

/* Copies file bytes [off, off + n) of the segments seg[0..nseg) (laid end to end) into out. */
static void segs_copy(const struct iovec *seg, int nseg, size_t off, uint8_t *out, size_t n)
{
    for (int i = 0; i < nseg && n > 0; i++) {
        if (off >= seg[i].iov_len) {
            off -= seg[i].iov_len;
            continue;
        }
        size_t take = seg[i].iov_len - off < n ? seg[i].iov_len - off : n;
        memcpy(out, (const uint8_t *)seg[i].iov_base + off, take);
        out += take;
        n -= take;
        off = 0;
    }
}

/* Writes the file's segments (header, payload, chunk sums) with O_DIRECT into the open file `fd`
 * (see "Direct writes"). `frame`, when not NULL, is the caller's NODE_STORE_HEADER_LEN bytes just
 * before the payload (seg[1]), the store's to overwrite: when it is 4 KiB-aligned the header is
 * put there and the file's whole 4 KiB units up to the payload's end are written straight from it,
 * and only the rest (the payload's last partial unit and the sums) goes through a buffer of the
 * store's. 0, -1 with errno set, or 1 when the file system refused O_DIRECT writes (the caller
 * writes buffered). */
static int write_direct_with(node_store *s, int fd, const struct iovec *seg, int nseg, size_t from, uint8_t *buf);
static int pwrite_direct(node_store *s, int fd, const uint8_t *p, size_t n, size_t at);

static int write_direct(node_store *s, int fd, const struct iovec *seg, int nseg, uint8_t *frame)
{
    size_t from = 0; /* file bytes written from the frame */
    if (frame != NULL && (uintptr_t)frame % STORE_DIRECT_ALIGN == 0) {
        memcpy(frame, seg[0].iov_base, seg[0].iov_len);
        from = (seg[0].iov_len + seg[1].iov_len) / STORE_DIRECT_ALIGN * STORE_DIRECT_ALIGN;
        int rc = from > 0 ? pwrite_direct(s, fd, frame, from, 0) : 0;
        if (rc != 0)
            return rc;
    }
    uint8_t *buf = direct_buf_get(s);
    if (buf == NULL) {
        errno = ENOMEM;
        return -1;
    }
    int rc = write_direct_with(s, fd, seg, nseg, from, buf);
    int err = errno;
    direct_buf_put(s, buf);
    errno = err;
    return rc;
}

/* Writes n bytes (whole 4 KiB units) from p at file offset `at` of a file opened O_DIRECT: 0, -1
 * with errno set, or 1 when the file system refused O_DIRECT at the file's first byte. */
static int pwrite_direct(node_store *s, int fd, const uint8_t *p, size_t n, size_t at)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = pwrite(fd, p + off, n - off, (off_t)(at + off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EINVAL && at + off == 0) {
            direct_off(s, "write", errno);
            return 1;
        }
        if (w < 0)
            return -1;
        if (w == 0 || (size_t)w % STORE_DIRECT_ALIGN != 0) {
            errno = ENOSPC; /* a short direct write (a full disk): the put fails, nothing is kept */
            return -1;
        }
        off += (size_t)w;
    }
    return 0;
}

/* write_direct of file bytes [from, end) through `buf`, a buffer of STORE_DIRECT_CHUNK bytes
 * (`from` is a multiple of 4 KiB), then the file cut back to its exact size. */
static int write_direct_with(node_store *s, int fd, const struct iovec *seg, int nseg, size_t from, uint8_t *buf)
{
    size_t total = 0;
    for (int i = 0; i < nseg; i++)
        total += seg[i].iov_len;
    size_t alen = (total + STORE_DIRECT_ALIGN - 1) / STORE_DIRECT_ALIGN * STORE_DIRECT_ALIGN;
    for (size_t done = from; done < alen;) { /* done: file bytes written */
        /* The next piece of the file, zeros after its end up to the 4 KiB boundary. */
        size_t n = alen - done < STORE_DIRECT_CHUNK ? alen - done : STORE_DIRECT_CHUNK;
        size_t take = done < total ? (total - done < n ? total - done : n) : 0;
        segs_copy(seg, nseg, done, buf, take);
        memset(buf + take, 0, n - take);
        atomic_fetch_add_explicit(&s->direct_copied, take, memory_order_relaxed);
        int rc = pwrite_direct(s, fd, buf, n, done);
        if (rc != 0)
            return rc;
        done += n;
    }
    return alen != total && ftruncate(fd, (off_t)total) != 0 ? -1 : 0;
}

/* Writes the block under a temporary name in the directory dir_fd (blocks/) and renames it into
 * place. On failure no file is left, and *err holds the errno of the call that failed (0 when it
 * was not a system call). */
static int write_block_file(node_store *s, int dir_fd, const uint8_t id[NODE_STORE_ID_LEN], uint8_t *frame,
                            const void *data, size_t len, const uint8_t *table, node_store_class cls, int64_t atime_ns,
                            uint64_t seq, int *err)
{
    char rel[NODE_STORE_RELPATH_LEN], tmp[STORE_TMP_NAME_LEN];
    node_store_relpath(id, rel);
    snprintf(tmp, sizeof tmp, "%.6s" STORE_TMP_PREFIX "%s-%" PRIu64, rel, rel + 6, seq);
    *err = 0;

    if (ensure_leaf_dir(s, dir_fd, id, rel, false) != 0) {
        *err = errno;
        return -1;
    }
    bool direct = len >= STORE_DIRECT_MIN && atomic_load(&s->direct);
    int create = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC;
    int fd = openat(dir_fd, tmp, create | (direct ? O_DIRECT : 0), 0600);
    if (fd < 0 && errno == ENOENT) { /* its leaf directory was removed behind the store's back */
        if (ensure_leaf_dir(s, dir_fd, id, rel, true) != 0) {
            *err = errno;
            return -1;
        }
        fd = openat(dir_fd, tmp, create | (direct ? O_DIRECT : 0), 0600);
    }
    if (fd < 0 && direct && errno == EINVAL) {
        /* The kernel refuses O_DIRECT after it created the file: remove it, then write buffered. */
        direct_off(s, "open", errno);
        direct = false;
        unlinkat(dir_fd, tmp, 0);
        fd = openat(dir_fd, tmp, create, 0600);
    }
    if (fd < 0) {
        *err = errno;
        return store_errno(errno, "create", s->blocks_dir, tmp);
    }

    uint8_t hdr[NODE_STORE_HEADER_LEN];
    header_build(hdr, id, cls, len);
    struct iovec seg[3] = {{.iov_base = hdr, .iov_len = sizeof hdr},
                           {.iov_base = (void *)data, .iov_len = len},
                           {.iov_base = (void *)table, .iov_len = STORE_SUM_LEN * chunk_count(len, STORE_CHUNK)}};
    int wr = direct ? write_direct(s, fd, seg, 3, frame) : 1;
    if (wr == 1) { /* buffered: direct writes are off, or were refused just now */
        if (direct && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_DIRECT) != 0) {
            *err = errno;
            store_errno(errno, "fcntl", s->blocks_dir, tmp);
            goto fail_fd;
        }
        wr = write_all(fd, seg, 3);
    }
    if (wr != 0) {
        *err = errno;
        store_errno(errno, "write", s->blocks_dir, tmp);
        goto fail_fd;
    }
    stamp_atime(fd, atime_ns);
    if (s->fsync && fsync(fd) != 0) {
        *err = errno;
        store_errno(errno, "fsync", s->blocks_dir, tmp);
        goto fail_fd;
    }
    if (close(fd) != 0) {
        *err = errno;
        store_errno(errno, "close", s->blocks_dir, tmp);
        goto fail_tmp;
    }
    int renamed = renameat(dir_fd, tmp, dir_fd, rel);
    if (renamed != 0 && errno == EISDIR && remove_block_file(dir_fd, rel) == 0) /* a directory at its name */
        renamed = renameat(dir_fd, tmp, dir_fd, rel);
    if (renamed != 0) {
        *err = errno;
        store_errno(errno, "rename", s->blocks_dir, tmp);
        goto fail_tmp;
    }
    if (s->fsync) {
        char dir[8];
        memcpy(dir, rel, 5);
        dir[5] = '\0';
        /* The block is complete and in place: a failed directory sync only weakens durability. */
        if (fsync_dir(s, dir_fd, dir) != 0)
            LOG_WARN("store", "fsync_dir_failed", "error=%s", shoal_error_name(shoal_error_code()));
    }
    return 0;

fail_fd:
    close(fd);
fail_tmp:
    unlinkat(dir_fd, tmp, 0);
    return -1;
}

/* ---- public: put, get, contains, stats -------------------------------------------------- */

static void dir_check(node_store *s);

/* A write met a full file system: evicts at least the block's bytes, and down to the free-space
 * reserve, so that its one retry finds room. Locked. Whether anything was evicted. */
static bool evict_for_full_disk(node_store *s, node_store_class cls, uint64_t size)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    fs_measure(s);
    uint64_t need = fs_charge(s, size), freed = 0, one;
    while ((freed < need || fs_short(s, need, s->fs.slack)) && (one = evict_for_space(s, cls)) != 0)
        freed += fs_charge(s, one);
    LOG_DEBUG("store", "full_disk_evicted", "dir=%s bytes=%" PRIu64 " for=%" PRIu64, s->blocks_dir, freed, size);
    return freed > 0;
}

/* Rewrites the class field of a stored block in place (outside the checksum by design). Locked. */
static void promote(node_store *s, store_entry *e)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    char rel[NODE_STORE_RELPATH_LEN];
    int fd = openat(s->blocks_fd, node_store_relpath(e->id, rel), O_WRONLY | O_CLOEXEC);
    uint8_t cls[2];
    shoal_store_le16(cls, NODE_STORE_OWNED);
    if (fd < 0 || pwrite(fd, cls, sizeof cls, 6) != (ssize_t)sizeof cls)
        LOG_WARN("store", "promote_failed", "file=%s/%s errno=%d", s->blocks_dir, rel, errno);
    if (fd >= 0)
        close(fd);
    lru_unlink(&s->lru[NODE_STORE_NEAR], e);
    s->near_used -= e->size;
    s->near_blocks--;
    e->cls = NODE_STORE_OWNED;
    lru_push_head(&s->lru[NODE_STORE_OWNED], e);
}

static int put_block(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], uint8_t *frame, const void *data, size_t len,
                     node_store_class cls, const node_store_sum *sum);

int node_store_put(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], const void *data, size_t len,
                   node_store_class cls)
{
    return put_block(s, id, NULL, data, len, cls, NULL);
}

int node_store_put_checked(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], const void *data, size_t len,
                           node_store_class cls, const node_store_sum *sum)
{
    return put_block(s, id, NULL, data, len, cls, sum);
}

int node_store_put_framed(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], void *frame, size_t len,
                          node_store_class cls, const node_store_sum *sum)
{
    return put_block(s, id, frame, (uint8_t *)frame + NODE_STORE_HEADER_LEN, len, cls, sum);
}

/* The chunk sums to write with a payload: those fed while it arrived when complete, else computed
 * now into a new table *own (freed by the caller). NULL with NOMEM. */
static const uint8_t *put_sums(const uint8_t id[NODE_STORE_ID_LEN], const void *data, size_t len,
                               const node_store_sum *sum, uint8_t **own)
{
    *own = NULL;
    if (sum != NULL && node_store_sum_final(sum))
        return sum->table;
    size_t n = chunk_count(len, STORE_CHUNK);
    if ((*own = malloc(n ? n * STORE_SUM_LEN : 1)) == NULL) {
        shoal_error_set(SHOAL_ERR_NOMEM, "store: chunk sums of %zu bytes", len);
        return NULL;
    }
    uint8_t hdr[NODE_STORE_HEADER_LEN];
    header_build(hdr, id, NODE_STORE_OWNED, len);
    chunk_sums(sum_seed(hdr), STORE_CHUNK, data, len, *own);
    return *own;
}

/* The puts: frame, when not NULL, is the NODE_STORE_HEADER_LEN bytes before data (see
 * node_store_put_framed). */
static int put_block(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], uint8_t *frame, const void *data, size_t len,
                     node_store_class cls, const node_store_sum *sum)
{
    if (cls != NODE_STORE_OWNED && cls != NODE_STORE_NEAR)
        return shoal_error_set(SHOAL_ERR_INVAL, "store: put with unknown block class %d", (int)cls);
    char hex[STORE_HEX_LEN + 1];
    shoal_hex(hex, id, NODE_STORE_ID_LEN);
    uint64_t size = node_store_file_size(len);
    if (size > s->capacity)
        return shoal_error_set(SHOAL_ERR_RANGE,
                               "store: block %s of %zu bytes (%" PRIu64 " on disk) is larger than the "
                               "store capacity of %" PRIu64 " bytes",
                               hex, len, size, s->capacity);
    if (cls == NODE_STORE_NEAR && size > s->near_capacity)
        return shoal_error_set(SHOAL_ERR_RANGE,
                               "store: near block %s of %zu bytes (%" PRIu64 " on disk) is larger than "
                               "the near-cache share of %" PRIu64 " bytes",
                               hex, len, size, s->near_capacity);

    pthread_mutex_lock(&s->mu);
    store_entry *e = index_find(s, id);
    if (e) {
        if (!e->pending && cls == NODE_STORE_OWNED && e->cls == NODE_STORE_NEAR)
            promote(s, e);
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    if (make_room(s, cls, size) != 0)
        goto fail_locked;
    e = calloc(1, sizeof *e);
    if (!e) {
        shoal_error_set(SHOAL_ERR_NOMEM, "store: index entry for block %s", hex);
        goto fail_locked;
    }
    memcpy(e->id, id, NODE_STORE_ID_LEN);
    e->size = size;
    e->len = len;
    e->cls = cls;
    e->pending = true;
    e->gen = ++s->next_gen;
    if (index_insert(s, e) != 0) {
        free(e);
        fs_credit(s, size);
        goto fail_locked;
    }
    s->reserved += size;
    if (cls == NODE_STORE_NEAR)
        s->near_reserved += size;
    int64_t atime = clock_tick(s);
    uint64_t seq = ++s->tmp_seq;
    int dir_fd = s->blocks_fd;
    uint64_t dir_gen = s->dir_gen;
    pthread_mutex_unlock(&s->mu);

    bool remade = false, evicted = false;
    uint8_t *own_sums;
    const uint8_t *table = put_sums(id, data, len, sum, &own_sums);
    int rc = table ? 0 : -1;
    while (table != NULL) {
        int err;
        rc = write_block_file(s, dir_fd, id, frame, data, len, table, cls, atime, seq, &err);
        pthread_mutex_lock(&s->mu);
        if (rc == 0 && dir_gen != s->dir_gen) {
            /* blocks/ vanished and was made again while this put wrote into the old one */
            rc = shoal_error_set(SHOAL_ERR_IO, "store: %s was removed while block %s was written", s->blocks_dir, hex);
            err = ENOENT;
        }
        bool again = false;
        if (rc != 0 && err == ENOENT && !remade) {
            /* Something removed blocks/ or part of it: make it again, look for other lost files. */
            remade = again = true;
            s->audit_boost = s->nentries;
            dir_check(s);
        } else if (rc != 0 && (err == ENOSPC || err == EDQUOT) && !evicted) {
            evicted = true;
            again = evict_for_full_disk(s, cls, size);
        }
        if (!again)
            break;
        dir_fd = s->blocks_fd;
        dir_gen = s->dir_gen;
        seq = ++s->tmp_seq;
        pthread_mutex_unlock(&s->mu);
    }
    free(own_sums);
    if (table == NULL)
        pthread_mutex_lock(&s->mu);
    s->reserved -= size;
    if (cls == NODE_STORE_NEAR)
        s->near_reserved -= size;
    if (rc == 0) {
        e->pending = false;
        account_add(s, e);
        s->puts++;
    } else {
        index_remove(s, e);
        free(e);
        s->write_errors++;
        fs_credit(s, size);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != 0)
        LOG_WARN("store", "write_failed", "block=%s error=%s", hex, shoal_error_name(shoal_error_code()));
    return rc;

fail_locked:
    pthread_mutex_unlock(&s->mu);
    return -1;
}

/* Why a block is dropped on finding it unusable. */
typedef enum drop_kind {
    DROP_CORRUPT, /* damaged: counted in corrupt_drops */
    DROP_LOST,    /* its file is gone: counted in lost_drops */
} drop_kind;

static bool recent_corrupt_has(const node_store *s, uint64_t gen)
{
    for (unsigned i = 0; i < STORE_RECENT_CORRUPT; i++)
        if (s->recent_corrupt[i] == gen)
            return true;
    return false;
}

/* A read or the audit found the block of generation `gen` unusable: remove it if the index still
 * holds that very entry (not one evicted and stored anew since), and count it. Damage is counted
 * once per generation even when the entry went meanwhile (an eviction between the lookup and the
 * check): the ring of recent generations keeps a second finder of the same damage from counting
 * it again. A missing file also checks that blocks/ itself is still there, and speeds up the
 * audit. `miss` counts a get's miss. Returns -1 with NOT_FOUND. */
static int drop_block(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], uint64_t gen, drop_kind kind,
                      const char *reason, bool miss)
{
    char hex[STORE_HEX_LEN + 1];
    shoal_hex(hex, id, NODE_STORE_ID_LEN);
    pthread_mutex_lock(&s->mu);
    store_entry *e = index_find(s, id);
    bool ours = e && !e->pending && e->gen == gen, counted = false;
    if (ours)
        entry_forget(s, e, kind == DROP_LOST);
    if (kind == DROP_CORRUPT && !recent_corrupt_has(s, gen)) {
        s->corrupt_drops++;
        s->recent_corrupt[s->recent_next++ % STORE_RECENT_CORRUPT] = gen;
        counted = true;
    }
    if (kind == DROP_LOST && ours) {
        s->lost_drops++;
        counted = true;
        s->audit_boost = s->nentries;
        dir_check(s);
    }
    if (miss)
        s->misses++;
    pthread_mutex_unlock(&s->mu);
    if (counted)
        LOG_WARN("store", kind == DROP_CORRUPT ? "corrupt_drop" : "vanished", "block=%s reason=%s%s", hex, reason,
                 ours ? "" : " evicted_meanwhile=true");
    else /* evicted between the lookup and the open, or already dropped by another reader */
        LOG_DEBUG("store", "dropped_meanwhile", "block=%s reason=%s", hex, reason);
    return shoal_error_set(SHOAL_ERR_NOT_FOUND, "store: block %s dropped: %s", hex, reason);
}

/* What a read has learnt of a block between the lookup and the payload check. */
typedef struct block_read {
    char rel[NODE_STORE_RELPATH_LEN];
    int dir_fd;
    uint8_t hdr[NODE_STORE_HEADER_LEN];
    uint64_t gen;
    int64_t atime; /* the stamp to set once the block is found sound */
    uint64_t size; /* file bytes */
    size_t len;    /* payload bytes */
    int fd;
} block_read;

/* Looks a block up, makes it the most recent, opens its file and checks size and header. 0 with
 * r->fd open, or -1 with NOT_FOUND (a miss; an unusable file was dropped and counted). */
static int block_open(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], block_read *r)
{
    node_store_relpath(id, r->rel);
    pthread_mutex_lock(&s->mu);
    store_entry *e = index_find(s, id);
    if (!e || e->pending) {
        s->misses++;
        pthread_mutex_unlock(&s->mu);
        return shoal_error_set(SHOAL_ERR_NOT_FOUND, "store: block %s is not stored", r->rel + 6);
    }
    uint64_t size = e->size;
    r->gen = e->gen;
    lru_unlink(&s->lru[e->cls], e);
    lru_push_head(&s->lru[e->cls], e);
    r->atime = clock_tick(s);
    r->dir_fd = s->blocks_fd;
    pthread_mutex_unlock(&s->mu);

    r->fd = open_block_ro(r->dir_fd, r->rel);
    if (r->fd < 0) {
        int err = errno;
        if (err == EMFILE || err == ENFILE || err == ENOMEM || err == EINTR) {
            /* the process, not the block, is short of something: an ordinary miss */
            pthread_mutex_lock(&s->mu);
            s->misses++;
            pthread_mutex_unlock(&s->mu);
            return shoal_error_set(SHOAL_ERR_NOT_FOUND, "store: open %s/%s: %s (block kept)", s->blocks_dir, r->rel,
                                   strerror(err));
        }
        return drop_block(s, id, r->gen, err == ENOENT ? DROP_LOST : DROP_CORRUPT,
                          err == ENOENT ? "file_missing" : err == ELOOP ? "symbolic_link" : strerror(err), true);
    }
    const char *bad;
    struct stat st;
    if (fstat(r->fd, &st) != 0 || !S_ISREG(st.st_mode))
        bad = "not_a_file";
    else if ((uint64_t)st.st_size != size)
        bad = "size_mismatch";
    else if (pread_full(r->fd, r->hdr, sizeof r->hdr, 0) != (ssize_t)sizeof r->hdr)
        bad = "short_header";
    else
        bad = header_check(r->hdr, id, size);
    if (bad) {
        close(r->fd);
        return drop_block(s, id, r->gen, DROP_CORRUPT, bad, true);
    }
    r->size = size;
    r->len = (size_t)shoal_load_le64(r->hdr + 8);
    return 0;
}

/* A view's record of its verified chunks. */
struct node_store_marks {
    _Atomic bool bad;          /* a chunk failed: nothing more of this view is served */
    _Atomic uint64_t bits[];   /* bit i: chunk i matched its sum */
};

/* Checks chunks [first, last] of a payload against their sums, skipping those `marks` (may be
 * NULL) holds as verified and marking those that match. Adds the bytes hashed to *hashed. Whether
 * all match. */
static bool chunks_match(XXH64_hash_t seed, uint32_t chunk, const uint8_t *payload, size_t len, const uint8_t *sums,
                         size_t first, size_t last, node_store_marks *marks, uint64_t *hashed)
{
    for (size_t i = first; i <= last; i++) {
        uint64_t bit = 1ull << (i % 64);
        if (marks && (atomic_load_explicit(&marks->bits[i / 64], memory_order_acquire) & bit))
            continue;
        size_t off = i * (size_t)chunk, n = len - off < chunk ? len - off : chunk;
        uint8_t got[STORE_SUM_LEN];
        chunk_sum(seed, i, payload + off, n, got);
        *hashed += n;
        if (memcmp(got, sums + i * STORE_SUM_LEN, STORE_SUM_LEN) != 0)
            return false;
        if (marks)
            atomic_fetch_or_explicit(&marks->bits[i / 64], bit, memory_order_release);
    }
    return true;
}

static void count_hit(node_store *s, uint64_t hashed)
{
    pthread_mutex_lock(&s->mu);
    s->hits++;
    s->verified_bytes += hashed;
    pthread_mutex_unlock(&s->mu);
}

int node_store_get(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], void *buf, size_t buf_len,
                   size_t *len_out)
{
    block_read r;
    if (block_open(s, id, &r) != 0)
        return -1;
    if (len_out)
        *len_out = r.len;
    if (r.len > buf_len) {
        close(r.fd);
        return shoal_error_set(SHOAL_ERR_RANGE, "store: block %s holds %zu bytes, buffer has %zu", r.rel + 6,
                               r.len, buf_len);
    }
    uint32_t chunk = shoal_load_le32(r.hdr + 32);
    size_t nsums = chunk_count(r.len, chunk), sums_len = nsums * STORE_SUM_LEN;
    uint8_t *sums = malloc(sums_len ? sums_len : 1);
    if (sums == NULL) {
        close(r.fd);
        return shoal_error_set(SHOAL_ERR_NOMEM, "store: chunk sums of block %s", r.rel + 6);
    }
    const char *bad = NULL;
    uint64_t hashed = 0;
    if (pread_full(r.fd, buf, r.len, NODE_STORE_HEADER_LEN) != (ssize_t)r.len ||
        pread_full(r.fd, sums, sums_len, (off_t)(NODE_STORE_HEADER_LEN + r.len)) != (ssize_t)sums_len)
        bad = "short_payload";
    else if (nsums > 0 && !chunks_match(sum_seed(r.hdr), chunk, buf, r.len, sums, 0, nsums - 1, NULL, &hashed))
        bad = "checksum_mismatch";
    free(sums);
    if (bad) {
        close(r.fd);
        return drop_block(s, id, r.gen, DROP_CORRUPT, bad, true);
    }
    stamp_atime(r.fd, r.atime);
    close(r.fd);
    count_hit(s, hashed);
    return 0;
}

/* Checks bytes [off, off + len) of a view (see node_store_view_verify); `miss` counts a failure
 * as a get's miss (a map that verifies everything before it returns). */
/* Whether bytes [off, off + len) of a view may be read: 0, or -1 with INVAL (an empty view), RANGE
 * or NOT_FOUND (a damaged chunk was found in this view before). */
static int view_usable(const node_store_view *v, size_t off, size_t len)
{
    if (v->marks == NULL)
        return shoal_error_set(SHOAL_ERR_INVAL, "store: read of an empty view");
    if (off > v->len || len > v->len - off)
        return shoal_error_set(SHOAL_ERR_RANGE, "store: bytes %zu..+%zu of a block of %zu", off, len, v->len);
    if (atomic_load(&v->marks->bad))
        return shoal_error_set(SHOAL_ERR_NOT_FOUND, "store: block dropped: checksum_mismatch");
    return 0;
}

static int view_check(node_store_view *v, size_t off, size_t len, bool miss)
{
    if (view_usable(v, off, len) != 0)
        return -1;
    if (len == 0)
        return 0;
    uint64_t hashed = 0;
    bool ok = chunks_match(v->seed, v->chunk, v->data, v->len, v->sums, off / v->chunk,
                           (off + len - 1) / v->chunk, v->marks, &hashed);
    node_store *s = v->store;
    if (hashed > 0) {
        pthread_mutex_lock(&s->mu);
        s->verified_bytes += hashed;
        pthread_mutex_unlock(&s->mu);
    }
    if (ok)
        return 0;
    atomic_store(&v->marks->bad, true);
    return drop_block(s, v->id, v->gen, DROP_CORRUPT, "checksum_mismatch", miss);
}

int node_store_view_verify(node_store_view *v, size_t off, size_t len) { return view_check(v, off, len, false); }

/* Maps a block (see node_store_map and node_store_map_lazy). */
static int view_map(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], node_store_view *out, bool lazy)
{
    *out = (node_store_view){0};
    block_read r;
    if (block_open(s, id, &r) != 0)
        return -1;
    uint32_t chunk = shoal_load_le32(r.hdr + 32);
    size_t nsums = chunk_count(r.len, chunk);
    node_store_marks *marks = calloc(1, sizeof *marks + ((nsums + 63) / 64) * sizeof marks->bits[0]);
    if (marks == NULL) {
        close(r.fd);
        return shoal_error_set(SHOAL_ERR_NOMEM, "store: marks of block %s", r.rel + 6);
    }
    /* The store never truncates or rewrites a block file (eviction unlinks, which keeps the pages of
     * a live mapping), so the mapping cannot fault under the reader. */
    void *map = mmap(NULL, (size_t)r.size, PROT_READ, MAP_SHARED, r.fd, 0);
    if (map == MAP_FAILED) {
        int err = errno;
        close(r.fd);
        free(marks);
        return shoal_error_errno(err, "store: mmap %s/%s", s->blocks_dir, r.rel);
    }
    const uint8_t *payload = (const uint8_t *)map + NODE_STORE_HEADER_LEN;
    node_store_view v = {.data = payload, .len = r.len, .map = map, .map_len = (size_t)r.size, .store = s,
                         .gen = r.gen, .sums = payload + r.len, .chunk = chunk, .seed = sum_seed(r.hdr),
                         .marks = marks};
    memcpy(v.id, id, NODE_STORE_ID_LEN);
    if (!lazy && view_check(&v, 0, v.len, true) != 0) {
        close(r.fd);
        node_store_view_release(&v);
        return -1;
    }
    stamp_atime(r.fd, r.atime);
    close(r.fd);
    count_hit(s, 0);
    *out = v;
    return 0;
}

int node_store_map(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], node_store_view *out)
{
    return view_map(s, id, out, false);
}

int node_store_map_lazy(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], node_store_view *out)
{
    return view_map(s, id, out, true);
}

int node_store_open_lazy(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], node_store_view *out)
{
    *out = (node_store_view){0};
    block_read r;
    if (block_open(s, id, &r) != 0)
        return -1;
    uint32_t chunk = shoal_load_le32(r.hdr + 32);
    size_t nsums = chunk_count(r.len, chunk), sums_len = nsums * STORE_SUM_LEN;
    node_store_marks *marks = calloc(1, sizeof *marks + ((nsums + 63) / 64) * sizeof marks->bits[0]);
    uint8_t *sums = malloc(sums_len ? sums_len : 1);
    if (marks == NULL || sums == NULL) {
        close(r.fd);
        free(marks);
        free(sums);
        return shoal_error_set(SHOAL_ERR_NOMEM, "store: marks of block %s", r.rel + 6);
    }
    if (pread_full(r.fd, sums, sums_len, (off_t)(NODE_STORE_HEADER_LEN + r.len)) != (ssize_t)sums_len) {
        close(r.fd);
        free(marks);
        free(sums);
        return drop_block(s, id, r.gen, DROP_CORRUPT, "short_payload", true);
    }
    node_store_view v = {.len = r.len,
                         .store = s,
                         .gen = r.gen,
                         .sums = sums,
                         .chunk = chunk,
                         .seed = sum_seed(r.hdr),
                         .marks = marks,
                         .fd = r.fd,
                         .open = true};
    memcpy(v.id, id, NODE_STORE_ID_LEN);
    stamp_atime(r.fd, r.atime);
    count_hit(s, 0);
    *out = v;
    return 0;
}

/* A damaged chunk seen through an open view: nothing more of the view is served, the block is
 * dropped (once). */
static int view_bad(node_store_view *v, const char *why)
{
    atomic_store(&v->marks->bad, true);
    return drop_block(v->store, v->id, v->gen, DROP_CORRUPT, why, false);
}

/* node_store_view_read of an open view: one pread of the range into dst, then each chunk it
 * touches that the view has not verified is hashed, in dst when the range holds all of it, else
 * read whole into `scratch` and its part copied over dst's (so every byte served is a byte
 * hashed, even if the file changed between the two reads). A range inside one unverified chunk
 * is read with the chunk alone. */
static int view_pread(node_store_view *v, size_t off, size_t len, uint8_t *dst)
{
    uint8_t stack[STORE_CHUNK], *scratch = v->chunk <= sizeof stack ? stack : NULL;
    size_t first = off / v->chunk;
    if (scratch != NULL && len < v->chunk && first == (off + len - 1) / v->chunk &&
        !(atomic_load_explicit(&v->marks->bits[first / 64], memory_order_acquire) & (1ull << (first % 64)))) {
        /* A read inside one chunk not yet verified (a random reader's first read of it): one pread of
         * the chunk, hashed, and the part asked copied out, not a pread of the part and one more of
         * the chunk. */
        size_t c_off = first * (size_t)v->chunk, c_len = v->len - c_off < v->chunk ? v->len - c_off : v->chunk;
        if (pread_full(v->fd, scratch, c_len, (off_t)(NODE_STORE_HEADER_LEN + c_off)) != (ssize_t)c_len)
            return view_bad(v, "short_payload");
        uint8_t got[STORE_SUM_LEN];
        chunk_sum(v->seed, first, scratch, c_len, got);
        pthread_mutex_lock(&v->store->mu);
        v->store->verified_bytes += c_len;
        pthread_mutex_unlock(&v->store->mu);
        if (memcmp(got, v->sums + first * STORE_SUM_LEN, STORE_SUM_LEN) != 0)
            return view_bad(v, "checksum_mismatch");
        atomic_fetch_or_explicit(&v->marks->bits[first / 64], 1ull << (first % 64), memory_order_release);
        memcpy(dst, scratch + (off - c_off), len);
        return 0;
    }
    if (pread_full(v->fd, dst, len, (off_t)(NODE_STORE_HEADER_LEN + off)) != (ssize_t)len)
        return view_bad(v, "short_payload");
    uint64_t hashed = 0;
    int rc = 0;
    for (size_t i = off / v->chunk, last = (off + len - 1) / v->chunk; i <= last && rc == 0; i++) {
        uint64_t bit = 1ull << (i % 64);
        if (atomic_load_explicit(&v->marks->bits[i / 64], memory_order_acquire) & bit)
            continue;
        size_t c_off = i * (size_t)v->chunk, c_len = v->len - c_off < v->chunk ? v->len - c_off : v->chunk;
        bool whole = c_off >= off && c_off + c_len <= off + len;
        const uint8_t *bytes = dst + (c_off - off);
        if (!whole) {
            if (scratch == NULL && (scratch = malloc(v->chunk)) == NULL) {
                rc = shoal_error_set(SHOAL_ERR_NOMEM, "store: a chunk of %u bytes", v->chunk);
                break;
            }
            if (pread_full(v->fd, scratch, c_len, (off_t)(NODE_STORE_HEADER_LEN + c_off)) != (ssize_t)c_len) {
                rc = view_bad(v, "short_payload");
                break;
            }
            bytes = scratch;
        }
        uint8_t got[STORE_SUM_LEN];
        chunk_sum(v->seed, i, bytes, c_len, got);
        hashed += c_len;
        if (memcmp(got, v->sums + i * STORE_SUM_LEN, STORE_SUM_LEN) != 0) {
            rc = view_bad(v, "checksum_mismatch");
            break;
        }
        if (!whole) {
            size_t lo = off > c_off ? off : c_off, hi = off + len < c_off + c_len ? off + len : c_off + c_len;
            memcpy(dst + (lo - off), scratch + (lo - c_off), hi - lo);
        }
        atomic_fetch_or_explicit(&v->marks->bits[i / 64], bit, memory_order_release);
    }
    if (scratch != stack)
        free(scratch);
    if (hashed > 0) {
        pthread_mutex_lock(&v->store->mu);
        v->store->verified_bytes += hashed;
        pthread_mutex_unlock(&v->store->mu);
    }
    return rc;
}

int node_store_view_read(node_store_view *v, size_t off, size_t len, void *dst)
{
    if (view_usable(v, off, len) != 0)
        return -1;
    if (len == 0)
        return 0;
    if (!v->open) {
        if (view_check(v, off, len, false) != 0)
            return -1;
        memcpy(dst, v->data + off, len);
        return 0;
    }
    return view_pread(v, off, len, dst);
}

void node_store_view_release(node_store_view *v)
{
    if (v && v->map)
        munmap(v->map, v->map_len);
    if (v && v->open) {
        close(v->fd);
        free((void *)v->sums);
    }
    if (v) {
        free(v->marks);
        *v = (node_store_view){0};
    }
}

bool node_store_willneed(node_store *s, const uint8_t id[NODE_STORE_ID_LEN])
{
    char rel[NODE_STORE_RELPATH_LEN];
    node_store_relpath(id, rel);
    pthread_mutex_lock(&s->mu);
    store_entry *e = index_find(s, id);
    bool found = e && !e->pending;
    int dir_fd = s->blocks_fd;
    pthread_mutex_unlock(&s->mu);
    if (!found)
        return false;
    /* Only a hint: a file evicted meanwhile, or one the kernel will not read ahead, costs the
     * reader nothing here and is found out by its read. */
    int fd = open_block_ro(dir_fd, rel);
    if (fd < 0)
        return false;
    posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
    close(fd);
    return true;
}

bool node_store_contains(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], size_t *len_out,
                         node_store_class *cls_out)
{
    pthread_mutex_lock(&s->mu);
    store_entry *e = index_find(s, id);
    bool found = e && !e->pending;
    if (found && len_out)
        *len_out = (size_t)e->len;
    if (found && cls_out)
        *cls_out = e->cls;
    pthread_mutex_unlock(&s->mu);
    return found;
}

int node_store_list(node_store *s, node_store_class cls, uint8_t (**ids)[NODE_STORE_ID_LEN], size_t *n)
{
    *ids = NULL;
    *n = 0;
    if (cls != NODE_STORE_OWNED && cls != NODE_STORE_NEAR)
        return shoal_error_set(SHOAL_ERR_INVAL, "store: list of unknown block class %d", (int)cls);
    pthread_mutex_lock(&s->mu);
    size_t count = cls == NODE_STORE_NEAR ? s->near_blocks : s->blocks - s->near_blocks;
    uint8_t(*out)[NODE_STORE_ID_LEN] = count ? malloc(count * sizeof *out) : NULL;
    if (count && out == NULL) {
        pthread_mutex_unlock(&s->mu);
        return shoal_error_set(SHOAL_ERR_NOMEM, "store: list of %zu blocks", count);
    }
    size_t k = 0;
    for (store_entry *e = s->lru[cls].head; e && k < count; e = e->next)
        memcpy(out[k++], e->id, NODE_STORE_ID_LEN);
    SHOAL_ASSERT(k == count); /* the list of a class holds exactly its stored blocks */
    pthread_mutex_unlock(&s->mu);
    *ids = out;
    *n = k;
    return 0;
}

void node_store_get_stats(node_store *s, node_store_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = (node_store_stats){
        .capacity = s->capacity,
        .bytes_used = s->used,
        .bytes_reserved = s->reserved,
        .near_capacity = s->near_capacity,
        .near_bytes = s->near_used,
        .blocks = s->blocks,
        .near_blocks = s->near_blocks,
        .hits = s->hits,
        .misses = s->misses,
        .puts = s->puts,
        .evictions = s->evictions,
        .space_evictions = s->space_evictions,
        .corrupt_drops = s->corrupt_drops,
        .lost_drops = s->lost_drops,
        .write_errors = s->write_errors,
        .dir_heals = s->dir_heals,
        .verified_bytes = s->verified_bytes,
        .direct_copied_bytes = atomic_load_explicit(&s->direct_copied, memory_order_relaxed),
        .old_format_drops = s->old_format_drops,
    };
    pthread_mutex_unlock(&s->mu);
}

/* ---- open: rebuild the index from the files ------------------------------------------- */

typedef struct scan_state {
    store_entry **found;
    size_t nfound, capfound;
    uint64_t tmp_removed;
    uint64_t foreign;
} scan_state;

static bool is_hex2_name(const char *name)
{
    uint8_t b;
    return shoal_unhex(&b, name, 1) == 0 && !name[2];
}

/* Loads one block file ab/cd/<hex> into a fresh entry, or removes it (counted) when it is not a
 * sound block: a header that fails its checks, a file that will not open (a symbolic link), or
 * something other than a regular file in its place. */
static int scan_block(node_store *s, scan_state *st, int leaf_fd, const char *rel_dir, const char *name)
{
    uint8_t id[NODE_STORE_ID_LEN];
    if (strlen(name) != STORE_HEX_LEN || shoal_unhex(id, name, NODE_STORE_ID_LEN) != 0 ||
        memcmp(name, rel_dir, 2) != 0 || memcmp(name + 2, rel_dir + 3, 2) != 0) {
        st->foreign++;
        LOG_WARN("store", "foreign_file", "file=%s/%s/%s action=kept", s->blocks_dir, rel_dir, name);
        return 0;
    }
    struct stat sb;
    uint8_t hdr[NODE_STORE_HEADER_LEN];
    const char *bad;
    int fd = open_block_ro(leaf_fd, name);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOMEM))
        return shoal_error_errno(errno, "store: open %s/%s/%s", s->blocks_dir, rel_dir, name);
    if (fd < 0 && errno == ENOENT)
        return 0; /* removed since the directory was read */
    if (fd < 0)
        bad = errno == ELOOP ? "symbolic_link" : "open_failed";
    else if (fstat(fd, &sb) != 0)
        bad = "stat_failed";
    else if (!S_ISREG(sb.st_mode))
        bad = "not_a_file";
    else if (pread_full(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr)
        bad = "short_header";
    else
        bad = header_check(hdr, id, (uint64_t)sb.st_size);
    if (fd >= 0)
        close(fd);
    if (bad) {
        /* A file of the first format is not damage (an upgrade left it): counted apart, so the
         * alarm on corrupt blocks does not fire at every upgraded node's first start. */
        bool old = strcmp(bad, "old_format") == 0;
        if (old)
            LOG_INFO("store", "old_format_drop", "file=%s/%s/%s", s->blocks_dir, rel_dir, name);
        else
            LOG_WARN("store", "corrupt_drop", "file=%s/%s/%s reason=%s", s->blocks_dir, rel_dir, name, bad);
        if (remove_block_file(leaf_fd, name) != 0) /* counted all the same: it is out of the index */
            LOG_WARN("store", "unlink_failed", "file=%s/%s/%s errno=%d", s->blocks_dir, rel_dir, name, errno);
        if (old)
            s->old_format_drops++;
        else
            s->corrupt_drops++;
        return 0;
    }
    if (SHOAL_ARRAY_GROW(st->found, st->nfound, st->capfound) != 0)
        return shoal_error_wrap("store: rebuilding the index");
    store_entry *e = calloc(1, sizeof *e);
    if (!e)
        return shoal_error_set(SHOAL_ERR_NOMEM, "store: rebuilding the index");
    memcpy(e->id, id, NODE_STORE_ID_LEN);
    e->size = (uint64_t)sb.st_size;
    e->len = shoal_load_le64(hdr + 8);
    e->cls = (node_store_class)shoal_load_le16(hdr + 6);
    e->atime_ns = (int64_t)sb.st_atim.tv_sec * 1000000000 + sb.st_atim.tv_nsec;
    st->found[st->nfound++] = e;
    return 0;
}

/* Opens blocks/<rel> ("." for blocks/ itself) for reading its entries; NULL with a shoal_error
 * naming the directory. *fd (when fd is not NULL) receives the directory's descriptor, which the
 * DIR owns. */
static DIR *open_blocks_dir(node_store *s, const char *rel, int *fd)
{
    int dfd = openat(s->blocks_fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        shoal_error_errno(errno, "store: list %s/%s", s->blocks_dir, rel);
        if (dfd >= 0)
            close(dfd);
    }
    if (fd)
        *fd = dfd;
    return d;
}

static int scan_leaf(node_store *s, scan_state *st, const char *rel_dir)
{
    int fd;
    DIR *d = open_blocks_dir(s, rel_dir, &fd);
    if (!d)
        return -1;
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        if (de->d_name[0] == '.' && (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2])))
            continue;
        if (strncmp(de->d_name, STORE_TMP_PREFIX, strlen(STORE_TMP_PREFIX)) != 0) {
            rc = scan_block(s, st, fd, rel_dir, de->d_name);
            continue;
        }
        /* A write interrupted by a crash: never renamed, so never a block. */
        if (unlinkat(fd, de->d_name, 0) != 0)
            rc = shoal_error_errno(errno, "store: removing leftover %s/%s/%s", s->blocks_dir, rel_dir, de->d_name);
        else
            st->tmp_removed++;
    }
    closedir(d);
    return rc;
}

/* Walks the two-hex-digit subdirectories of blocks/<parent> ("" for blocks/ itself): the first
 * level recurses once, the second scans the leaf directories that hold the block files. */
static int scan_level(node_store *s, scan_state *st, const char *parent)
{
    DIR *d = open_blocks_dir(s, *parent ? parent : ".", NULL);
    if (!d)
        return -1;
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        if (!is_hex2_name(de->d_name))
            continue;
        char rel[8];
        if (*parent) {
            snprintf(rel, sizeof rel, "%.2s/%.2s", parent, de->d_name);
            rc = scan_leaf(s, st, rel);
        } else {
            rc = scan_level(s, st, de->d_name);
        }
    }
    closedir(d);
    return rc;
}

static int by_atime(const void *a, const void *b)
{
    const store_entry *x = *(store_entry *const *)a, *y = *(store_entry *const *)b;
    return x->atime_ns < y->atime_ns ? -1 : x->atime_ns > y->atime_ns;
}

/* Indexes the block files under blocks/ (at open, and when blocks/ was made again: then ids that
 * a put in flight is writing are left to that put). `event` names the log line. Locked: at open
 * nothing else can reach the store yet, but the scan counts damage and the index and lists live
 * under the lock (see "index and lists"); when healing, the caller holds it anyway. */
static int rebuild(node_store *s, const char *event)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    scan_state st = {0};
    size_t inserted = 0;
    uint64_t corrupt = s->corrupt_drops;
    int rc = scan_level(s, &st, "");
    if (rc == 0 && st.nfound)
        /* Oldest first onto the list heads, so the most recently used ends up at the head. */
        qsort(st.found, st.nfound, sizeof *st.found, by_atime);
    for (; rc == 0 && inserted < st.nfound; inserted++) {
        store_entry *e = st.found[inserted];
        if (index_find(s, e->id) != NULL) {
            free(e);
            continue;
        }
        e->gen = ++s->next_gen;
        if (e->atime_ns > s->clock_ns)
            s->clock_ns = e->atime_ns;
        if ((rc = index_insert(s, e)) != 0)
            break;
        account_add(s, e);
    }
    for (size_t j = inserted; j < st.nfound; j++)
        free(st.found[j]);
    free(st.found);
    uint64_t evicted = s->evictions;
    while (rc == 0 && s->near_used > s->near_capacity && evict_tail(s, NODE_STORE_NEAR))
        ;
    while (rc == 0 && s->used > s->capacity && (evict_tail(s, NODE_STORE_NEAR) || evict_tail(s, NODE_STORE_OWNED)))
        ;
    if (rc != 0)
        return -1;
    LOG_INFO("store", event, "dir=%s blocks=%" PRIu64 " bytes=%" PRIu64 " capacity=%" PRIu64
             " evicted_over_cap=%" PRIu64 " temp_removed=%" PRIu64 " corrupt_dropped=%" PRIu64 " foreign=%" PRIu64,
             s->blocks_dir, s->blocks, s->used, s->capacity, s->evictions - evicted, st.tmp_removed,
             s->corrupt_drops - corrupt, st.foreign);
    return 0;
}

/* Opens blocks/, making it (and the cache directory) when missing, and takes its lock. 0 with
 * *dir_fd and *lock_fd open, or -1 with a shoal_error naming the path. */
static int dir_open(node_store *s, int *dir_fd, int *lock_fd)
{
    int dfd = -1, lfd = -1;
    if (mkdir(s->cache_dir, 0700) != 0 && errno != EEXIST) {
        shoal_error_errno(errno, "store: mkdir %s", s->cache_dir);
        goto fail;
    }
    if (mkdir(s->blocks_dir, 0700) != 0 && errno != EEXIST) {
        shoal_error_errno(errno, "store: mkdir %s", s->blocks_dir);
        goto fail;
    }
    dfd = open(s->blocks_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        shoal_error_errno(errno, "store: open %s", s->blocks_dir);
        goto fail;
    }
    lfd = openat(dfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lfd < 0) {
        shoal_error_errno(errno, "store: open %s/.lock", s->blocks_dir);
        goto fail;
    }
    if (flock(lfd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            shoal_error_set(SHOAL_ERR_IO, "store: %s is in use by another block store (locked)", s->blocks_dir);
        else
            shoal_error_errno(errno, "store: flock %s/.lock", s->blocks_dir);
        goto fail;
    }
    *dir_fd = dfd;
    *lock_fd = lfd;
    return 0;
fail:
    if (lfd >= 0)
        close(lfd);
    if (dfd >= 0)
        close(dfd);
    return -1;
}

/* ---- healing: blocks/ removed under a running store ----------------------------------------- */

/* Whether blocks/ is still the directory the store has open: not removed (link count 0), and its
 * path still names it. When it cannot tell, it says yes. Locked. */
static bool dir_intact(node_store *s)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    struct stat held, named;
    if (fstat(s->blocks_fd, &held) != 0)
        return true;
    if (held.st_nlink == 0)
        return false;
    if (stat(s->blocks_dir, &named) != 0)
        return errno != ENOENT && errno != ENOTDIR;
    return named.st_dev == held.st_dev && named.st_ino == held.st_ino;
}

/* blocks/ is gone, or another directory took its path: forget every stored block (the files went
 * with the directory; blocks being written are left to their puts, which write again), make
 * blocks/ and its lock again and index what the new directory already holds. Locked. When blocks/
 * cannot be made (logged once), the store stays without a directory and the next put tries again. */
static void dir_heal(node_store *s)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    uint64_t lost = 0;
    for (size_t i = 0; i < s->nbuckets; i++) {
        store_entry *next;
        for (store_entry *e = s->buckets[i]; e; e = next) {
            next = e->hnext;
            if (!e->pending) {
                entry_forget(s, e, true);
                lost++;
            }
        }
    }
    s->lost_drops += lost;
    for (size_t i = 0; i < sizeof s->leaf_made; i++)
        atomic_store_explicit(&s->leaf_made[i], 0, memory_order_relaxed);
    int dir_fd, lock_fd;
    if (dir_open(s, &dir_fd, &lock_fd) != 0) {
        if (!s->heal_failing)
            LOG_ERROR("store", "blocks_dir_lost", "dir=%s lost_blocks=%" PRIu64 " error=\"%s\" action=retry",
                      s->blocks_dir, lost, shoal_error_message());
        s->heal_failing = true;
        return;
    }
    /* The old descriptor stays open until the store is deleted: a thread that took it under the
     * lock may still use it, and must get ENOENT from it, never a recycled descriptor. */
    if (SHOAL_ARRAY_GROW(s->retired_fds, s->n_retired, s->cap_retired) == 0)
        s->retired_fds[s->n_retired++] = s->blocks_fd;
    /* else the descriptor leaks, which is the safe side */
    close(s->lock_fd);
    s->blocks_fd = dir_fd;
    s->lock_fd = lock_fd;
    s->dir_gen++;
    s->dir_heals++;
    s->heal_failing = false;
    s->audit_bucket = 0;
    s->audit_boost = 0;
    LOG_WARN("store", "blocks_dir_remade", "dir=%s lost_blocks=%" PRIu64, s->blocks_dir, lost);
    if (rebuild(s, "rescan") != 0)
        LOG_WARN("store", "rescan_failed", "dir=%s error=\"%s\"", s->blocks_dir, shoal_error_message());
    fs_measure(s);
}

static void dir_check(node_store *s)
{
    if (!dir_intact(s))
        dir_heal(s);
}

/* ---- maintenance: the reserve and the audit ------------------------------------------------- */

#define STORE_AUDIT_SLICE 1024  /* files checked per node_store_maintain */
#define STORE_AUDIT_FAST 65536  /* ... while files were recently found removed */
#define STORE_AUDIT_CHUNK 256   /* ... per turn of the lock */

typedef struct audit_item {
    uint8_t id[NODE_STORE_ID_LEN];
    uint64_t gen, size;
} audit_item;

/* Copies up to max complete entries from the buckets at the audit cursor on, whole buckets at a
 * time, moving the cursor; *wrapped when it went round the index. Locked. */
static size_t audit_collect(node_store *s, audit_item *out, size_t max, bool *wrapped)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    size_t n = 0;
    *wrapped = false;
    if (s->audit_bucket >= s->nbuckets)
        s->audit_bucket = 0;
    while (n < max) {
        size_t chain = 0;
        for (store_entry *e = s->buckets[s->audit_bucket]; e; e = e->hnext)
            chain++;
        if (n > 0 && n + chain > max)
            break;
        for (store_entry *e = s->buckets[s->audit_bucket]; e && n < max; e = e->hnext)
            if (!e->pending) {
                memcpy(out[n].id, e->id, NODE_STORE_ID_LEN);
                out[n].gen = e->gen;
                out[n++].size = e->size;
            }
        if (++s->audit_bucket == s->nbuckets) {
            s->audit_bucket = 0;
            *wrapped = true;
            break;
        }
    }
    return n;
}

/* Stats up to `budget` stored blocks' files (one pass of the index at most), outside the lock,
 * and drops those that are gone, are not regular files, or have the wrong size. */
static void audit(node_store *s, size_t budget)
{
    audit_item items[STORE_AUDIT_CHUNK];
    size_t done = 0;
    bool wrapped = false;
    while (done < budget && !wrapped) {
        pthread_mutex_lock(&s->mu);
        size_t n = audit_collect(s, items, STORE_AUDIT_CHUNK, &wrapped);
        int dir_fd = s->blocks_fd;
        pthread_mutex_unlock(&s->mu);
        for (size_t i = 0; i < n; i++) {
            char rel[NODE_STORE_RELPATH_LEN];
            struct stat st;
            node_store_relpath(items[i].id, rel);
            if (fstatat(dir_fd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0) {
                if (errno == ENOENT)
                    drop_block(s, items[i].id, items[i].gen, DROP_LOST, "file_missing", false);
            } else if (!S_ISREG(st.st_mode)) {
                drop_block(s, items[i].id, items[i].gen, DROP_CORRUPT, "not_a_file", false);
            } else if ((uint64_t)st.st_size != items[i].size) {
                drop_block(s, items[i].id, items[i].gen, DROP_CORRUPT, "size_mismatch", false);
            }
        }
        done += n;
        if (n == 0)
            break;
    }
    pthread_mutex_lock(&s->mu);
    s->audit_boost = s->audit_boost > done ? s->audit_boost - done : 0;
    pthread_mutex_unlock(&s->mu);
}

void node_store_maintain(node_store *s)
{
    pthread_mutex_lock(&s->mu);
    dir_check(s);
    if (s->free_bp) {
        fs_measure(s);
        if (fs_short(s, 0, 0)) {
            /* Something else filled the file system: give it back, a little more than needed. */
            uint64_t freed = fs_evict_to_reserve(s, NODE_STORE_OWNED, 0, s->fs.slack);
            if (freed)
                LOG_INFO("store", "reserve_evicted", "dir=%s bytes=%" PRIu64, s->blocks_dir, freed);
            if (fs_short(s, 0, 0) && !s->fs.short_logged)
                LOG_WARN("store", "reserve_unmet", "dir=%s free_bytes=%" PRId64 " reserve=%" PRIu64
                         " hint=\"the file system is full of other files; blocks are not kept until it has room\"",
                         s->blocks_dir, s->fs.avail, s->fs.reserve);
            s->fs.short_logged = fs_short(s, 0, 0);
        } else {
            s->fs.short_logged = false;
        }
    }
    size_t budget = s->audit_boost > 0 ? STORE_AUDIT_FAST : STORE_AUDIT_SLICE;
    pthread_mutex_unlock(&s->mu);
    audit(s, budget);
}


node_store_options node_store_options_default(void)
{
    return (node_store_options){.near_percent = 10, .fsync = false, .direct_io = true, .free_space_bp = 500};
}

static void free_index(node_store *s)
{
    for (size_t i = 0; s->buckets && i < s->nbuckets; i++) {
        store_entry *e = s->buckets[i];
        while (e) {
            store_entry *next = e->hnext;
            free(e);
            e = next;
        }
    }
    free(s->buckets);
}

node_store *node_store_new(const char *cache_dir, uint64_t capacity_bytes, const node_store_options *opts)
{
    node_store_options o = opts ? *opts : node_store_options_default();
    if (!cache_dir || !*cache_dir) {
        shoal_error_set(SHOAL_ERR_INVAL, "store: empty cache directory");
        return NULL;
    }
    if (capacity_bytes == 0) {
        shoal_error_set(SHOAL_ERR_INVAL, "store: capacity of %s must be greater than 0", cache_dir);
        return NULL;
    }
    if (o.near_percent > 100) {
        shoal_error_set(SHOAL_ERR_INVAL, "store: near-cache share %u%% is over 100%%", o.near_percent);
        return NULL;
    }
    if (o.free_space_bp > 5000) {
        shoal_error_set(SHOAL_ERR_INVAL, "store: free-space reserve %u.%02u%% is over 50%%", o.free_space_bp / 100,
                        o.free_space_bp % 100);
        return NULL;
    }
    node_store *s = calloc(1, sizeof *s);
    if (!s) {
        shoal_error_set(SHOAL_ERR_NOMEM, "store: opening %s", cache_dir);
        return NULL;
    }
    s->blocks_fd = s->lock_fd = -1;
    s->capacity = capacity_bytes;
    s->near_capacity = (uint64_t)((unsigned __int128)capacity_bytes * o.near_percent / 100);
    s->fsync = o.fsync;
    s->free_bp = o.free_space_bp;
    atomic_init(&s->direct, o.direct_io);
    s->nbuckets = 1024;
    pthread_mutex_init(&s->direct_mu, NULL);
    pthread_cond_init(&s->direct_cv, NULL);
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        shoal_error_set(SHOAL_ERR_NOMEM, "store: mutex for %s", cache_dir);
        goto fail_alloc;
    }
    s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
    s->cache_dir = strdup(cache_dir);
    if (!s->buckets || !s->cache_dir || asprintf(&s->blocks_dir, "%s/blocks", cache_dir) < 0) {
        s->blocks_dir = NULL;
        shoal_error_set(SHOAL_ERR_NOMEM, "store: opening %s", cache_dir);
        goto fail_mutex;
    }
    if (dir_open(s, &s->blocks_fd, &s->lock_fd) != 0)
        goto fail_mutex;
    pthread_mutex_lock(&s->mu);
    int rc = rebuild(s, "open");
    if (rc == 0)
        fs_measure(s);
    pthread_mutex_unlock(&s->mu);
    if (rc != 0)
        goto fail_fds;
    return s;

fail_fds:
    close(s->lock_fd);
    close(s->blocks_fd);
fail_mutex:
    free_index(s);
    free(s->blocks_dir);
    free(s->cache_dir);
    pthread_mutex_destroy(&s->mu);
fail_alloc:
    free(s);
    return NULL;
}

void node_store_delete(node_store *s)
{
    if (!s)
        return;
    free_index(s);
    close(s->lock_fd);
    close(s->blocks_fd);
    for (size_t i = 0; i < s->n_retired; i++)
        close(s->retired_fds[i]);
    free(s->retired_fds);
    free(s->blocks_dir);
    free(s->cache_dir);
    for (unsigned i = 0; i < s->direct_nfree; i++)
        free(s->direct_free[i]);
    pthread_mutex_destroy(&s->direct_mu);
    pthread_cond_destroy(&s->direct_cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
