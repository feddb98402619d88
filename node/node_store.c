/*
 * node_store: one file per block, a hash index and two LRU lists in memory, one mutex.
 *
 * Layout and format. Block files live in blocks/ab/cd/<hex id> (the first two id bytes pick the
 * two directory levels, so no directory grows large even with millions of blocks; directories are
 * made on first use and never removed, which keeps mkdir free of races with removal). A file is a
 * 48-byte little-endian header followed by the payload:
 *
 *   0  u32 magic "SHBK"     4  u16 version (1)     6  u16 class (0 owned, 1 near)
 *   8  u64 payload length   16 id (16 bytes)       32 XXH3-128 of the payload (low, high u64)
 *
 * The checksum is seeded with XXH3-64 of bytes 8..31, so it also binds the length and the id: a
 * file renamed to another id, or with a damaged length, fails as surely as a damaged payload. The
 * class is outside the checksum on purpose, so an owned put of a near block can promote it in
 * place with a two-byte write.
 *
 * Crash safety. A put writes ab/cd/.tmp-<hex>-<seq>, optionally fsyncs it, and renames it over
 * the final name (optionally fsyncing the directory), so a block name only ever points at a whole
 * file. Without fsync a power loss can leave a renamed file whose data never reached the disk;
 * the checksum turns that into a miss, which is why fsync is an option and not a requirement.
 * Temporary files left by a crash are removed at open; the directory lock (flock on
 * blocks/.lock) guarantees none of them belongs to a live writer.
 *
 * Direct writes. Block files of STORE_DIRECT_MIN bytes and more are written with O_DIRECT when
 * the file system takes it (the default, node_store_options.direct_io): header and payload are
 * copied, STORE_DIRECT_CHUNK at a time, into a page-aligned buffer of the writing thread, written
 * in whole 4 KiB units, and the file is cut back to its exact size. A fetched block's bytes already sit in memory twice on their way to readers (the fetch's
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
#include "shoal_error.h"
#include "shoal_log.h"

#define STORE_MAGIC 0x4B424853u /* "SHBK" little-endian */
#define STORE_VERSION 1
#define STORE_TMP_PREFIX ".tmp-"
#define STORE_HEX_LEN (2 * NODE_STORE_ID_LEN)
#define STORE_TMP_NAME_LEN 80

typedef struct store_entry {
    uint8_t id[NODE_STORE_ID_LEN];
    uint64_t size; /* file bytes: header + payload */
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

struct node_store {
    char *blocks_dir;
    int blocks_fd;
    int lock_fd;
    bool fsync;
    _Atomic bool direct; /* O_DIRECT block writes; cleared for good when the file system refuses */
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
    uint64_t hits, misses, puts, evictions, corrupt_drops, write_errors;
};

/* ---- small helpers ---------------------------------------------------------------------- */

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void id_hex(const uint8_t id[NODE_STORE_ID_LEN], char out[STORE_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < NODE_STORE_ID_LEN; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[STORE_HEX_LEN] = '\0';
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Parses exactly n lowercase hex digits into n/2 bytes; false on anything else. */
static bool hex_parse(const char *s, size_t n, uint8_t *out)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hex_val(s[i]), lo = hex_val(s[i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

char *node_store_relpath(const uint8_t id[NODE_STORE_ID_LEN], char *out)
{
    char hex[STORE_HEX_LEN + 1];
    id_hex(id, hex);
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

/* Opens a block file for reading without updating its access time where the kernel allows. */
static int open_block_ro(int dirfd, const char *rel)
{
    int fd = openat(dirfd, rel, O_RDONLY | O_CLOEXEC | O_NOATIME);
    if (fd < 0 && errno == EPERM)
        fd = openat(dirfd, rel, O_RDONLY | O_CLOEXEC);
    return fd;
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

/* ---- header ----------------------------------------------------------------------------- */

/* The payload checksum's seed: XXH3-64 of the header's length and id (bytes 8..31). */
static XXH64_hash_t sum_seed(const uint8_t *hdr) { return XXH3_64bits(hdr + 8, 24); }

static XXH128_hash_t payload_sum(const uint8_t *hdr, const void *data, size_t len)
{
    return STORE_SUM(data, len, sum_seed(hdr));
}

static void header_build(uint8_t hdr[NODE_STORE_HEADER_LEN], const uint8_t id[NODE_STORE_ID_LEN],
                         node_store_class cls, const void *data, size_t len, const node_store_checksum *known)
{
    put_le32(hdr, STORE_MAGIC);
    put_le16(hdr + 4, STORE_VERSION);
    put_le16(hdr + 6, (uint16_t)cls);
    put_le64(hdr + 8, len);
    memcpy(hdr + 16, id, NODE_STORE_ID_LEN);
    XXH128_hash_t sum = known ? (XXH128_hash_t){.low64 = known->low, .high64 = known->high}
                              : payload_sum(hdr, data, len);
    put_le64(hdr + 32, sum.low64);
    put_le64(hdr + 40, sum.high64);
}

/* ---- checksums computed while a block arrives ---------------------------------------------- */

struct node_store_sum {
    XXH3_state_t *state;
    XXH64_hash_t seed;
    uint64_t len, fed;
};

node_store_sum *node_store_sum_new(const uint8_t id[NODE_STORE_ID_LEN], uint64_t len)
{
    node_store_sum *sum = calloc(1, sizeof *sum);
    if (sum == NULL || (sum->state = XXH3_createState()) == NULL) {
        free(sum);
        shoal_error_set(SHOAL_ERR_NOMEM, "store: checksum state");
        return NULL;
    }
    uint8_t hdr[NODE_STORE_HEADER_LEN];
    put_le64(hdr + 8, len);
    memcpy(hdr + 16, id, NODE_STORE_ID_LEN);
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
    STORE_SUM_UPDATE(sum->state, data, len);
    sum->fed += len;
}

bool node_store_sum_final(node_store_sum *sum, node_store_checksum *out)
{
    if (sum->fed != sum->len)
        return false;
    XXH128_hash_t h = XXH3_128bits_digest(sum->state);
    out->low = h.low64;
    out->high = h.high64;
    return true;
}

void node_store_sum_free(node_store_sum *sum)
{
    if (sum == NULL)
        return;
    XXH3_freeState(sum->state);
    free(sum);
}

/* Checks everything in a header but the checksum: magic, version, class, the id it should carry,
 * and that the payload length matches the file size. NULL when sound, else the reason. */
static const char *header_check(const uint8_t hdr[NODE_STORE_HEADER_LEN], const uint8_t id[NODE_STORE_ID_LEN],
                                uint64_t file_size)
{
    if (get_le32(hdr) != STORE_MAGIC)
        return "bad_magic";
    if (get_le16(hdr + 4) != STORE_VERSION)
        return "bad_version";
    if (get_le16(hdr + 6) > NODE_STORE_NEAR)
        return "bad_class";
    if (memcmp(hdr + 16, id, NODE_STORE_ID_LEN) != 0)
        return "wrong_id";
    if (file_size < NODE_STORE_HEADER_LEN || get_le64(hdr + 8) != file_size - NODE_STORE_HEADER_LEN)
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

/* Removes a complete block from index, list and accounting, unlinks its file, frees the entry. */
static void entry_remove(node_store *s, store_entry *e)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    char rel[NODE_STORE_RELPATH_LEN];
    if (unlinkat(s->blocks_fd, node_store_relpath(e->id, rel), 0) != 0 && errno != ENOENT)
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

static bool evict_tail(node_store *s, node_store_class cls)
{
    store_entry *e = s->lru[cls].tail;
    if (!e)
        return false;
    entry_remove(s, e);
    s->evictions++;
    return true;
}

/* Evicts until `size` more bytes of class cls fit next to what is stored and reserved. Near blocks
 * go first; a near put never evicts owned blocks. -1 with NOSPACE when that is not enough. */
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
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------ */

static int store_errno(int err, const char *what, const char *dir, const char *rel)
{
    if (err == ENOSPC || err == EDQUOT)
        return shoal_error_set(SHOAL_ERR_NOSPACE, "store: %s %s/%s: file system full: %s", what, dir, rel,
                               strerror(err));
    return shoal_error_errno(err, "store: %s %s/%s", what, dir, rel);
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
static int ensure_leaf_dir(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], const char *rel, bool again)
{
    uint8_t bit;
    _Atomic uint8_t *made = leaf_bit(s, id, &bit);
    if (!again && (atomic_load_explicit(made, memory_order_relaxed) & bit))
        return 0;
    char dir[8];
    for (int n = 2; n <= 5; n += 3) {
        memcpy(dir, rel, (size_t)n);
        dir[n] = '\0';
        if (mkdirat(s->blocks_fd, dir, 0700) != 0 && errno != EEXIST)
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

static int fsync_dir(node_store *s, const char *rel_dir)
{
    int dfd = openat(s->blocks_fd, rel_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
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
#define STORE_DIRECT_CHUNK ((4u << 20) + 4096u) /* a default 4 MiB block and its header in one write */

/* Each writing thread keeps one page-aligned buffer of STORE_DIRECT_CHUNK bytes for direct
 * writes, freed when the thread ends (a fresh buffer per block would cost a page fault per 4 KiB
 * of every block); a block is written through it a chunk at a time, so the memory is bounded
 * whatever the block size. */
static pthread_key_t direct_buf_key;
static pthread_once_t direct_buf_once = PTHREAD_ONCE_INIT;

static void direct_buf_key_make(void)
{
    if (pthread_key_create(&direct_buf_key, free) != 0)
        abort(); /* only fails without memory for one key at start-up */
}

/* This thread's STORE_DIRECT_CHUNK-byte buffer, made on first use. NULL without memory. */
static uint8_t *direct_buf_get(void)
{
    pthread_once(&direct_buf_once, direct_buf_key_make);
    void *b = pthread_getspecific(direct_buf_key);
    if (b == NULL) {
        if (posix_memalign(&b, STORE_DIRECT_ALIGN, STORE_DIRECT_CHUNK) != 0)
            return NULL;
        if (pthread_setspecific(direct_buf_key, b) != 0) {
            free(b);
            return NULL;
        }
    }
    return b;
}

static void direct_off(node_store *s, const char *why, int err)
{
    if (atomic_exchange(&s->direct, false))
        LOG_INFO("store", "direct_io_off", "dir=%s reason=\"%s: %s\" writes=buffered", s->blocks_dir, why,
                 strerror(err));
}

/* Writes header + payload with O_DIRECT into the open file `fd` (see "Direct writes"). 0, -1
 * with errno set, or 1 when the file system refused O_DIRECT writes (the caller writes buffered). */
static int write_direct(node_store *s, int fd, const uint8_t *hdr, const void *data, size_t len)
{
    size_t total = NODE_STORE_HEADER_LEN + len;
    size_t alen = (total + STORE_DIRECT_ALIGN - 1) / STORE_DIRECT_ALIGN * STORE_DIRECT_ALIGN;
    uint8_t *buf = direct_buf_get();
    if (buf == NULL) {
        errno = ENOMEM;
        return -1;
    }
    const uint8_t *payload = data;
    size_t done = 0; /* file bytes written */
    while (done < alen) {
        /* The next chunk of the file: header, payload, zeros up to the 4 KiB boundary. */
        size_t n = alen - done < STORE_DIRECT_CHUNK ? alen - done : STORE_DIRECT_CHUNK, at = 0;
        if (done < NODE_STORE_HEADER_LEN) {
            at = NODE_STORE_HEADER_LEN - done;
            memcpy(buf, hdr + done, at);
        }
        size_t from = done + at - NODE_STORE_HEADER_LEN; /* payload offset of buf[at] */
        size_t take = from < len ? (len - from < n - at ? len - from : n - at) : 0;
        memcpy(buf + at, payload + from, take);
        memset(buf + at + take, 0, n - at - take);
        size_t off = 0;
        while (off < n) {
            ssize_t w = pwrite(fd, buf + off, n - off, (off_t)(done + off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno == EINVAL && done + off == 0) {
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
        done += n;
    }
    return alen != total && ftruncate(fd, (off_t)total) != 0 ? -1 : 0;
}

/* Writes the block under a temporary name and renames it into place. On failure no file is left. */
static int write_block_file(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], const void *data, size_t len,
                            const node_store_checksum *sum,
                            node_store_class cls, int64_t atime_ns, uint64_t seq)
{
    char rel[NODE_STORE_RELPATH_LEN], tmp[STORE_TMP_NAME_LEN];
    node_store_relpath(id, rel);
    snprintf(tmp, sizeof tmp, "%.6s" STORE_TMP_PREFIX "%s-%" PRIu64, rel, rel + 6, seq);

    if (ensure_leaf_dir(s, id, rel, false) != 0)
        return -1;
    bool direct = len >= STORE_DIRECT_MIN && atomic_load(&s->direct);
    int create = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC;
    int fd = openat(s->blocks_fd, tmp, create | (direct ? O_DIRECT : 0), 0600);
    if (fd < 0 && errno == ENOENT) { /* its leaf directory was removed behind the store's back */
        if (ensure_leaf_dir(s, id, rel, true) != 0)
            return -1;
        fd = openat(s->blocks_fd, tmp, create | (direct ? O_DIRECT : 0), 0600);
    }
    if (fd < 0 && direct && errno == EINVAL) {
        /* The kernel refuses O_DIRECT after it created the file: remove it, then write buffered. */
        direct_off(s, "open", errno);
        direct = false;
        unlinkat(s->blocks_fd, tmp, 0);
        fd = openat(s->blocks_fd, tmp, create, 0600);
    }
    if (fd < 0)
        return store_errno(errno, "create", s->blocks_dir, tmp);

    uint8_t hdr[NODE_STORE_HEADER_LEN];
    header_build(hdr, id, cls, data, len, sum);
    int wr = direct ? write_direct(s, fd, hdr, data, len) : 1;
    if (wr == 1) { /* buffered: direct writes are off, or were refused just now */
        if (direct && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_DIRECT) != 0) {
            store_errno(errno, "fcntl", s->blocks_dir, tmp);
            goto fail_fd;
        }
        struct iovec iov[2] = {{.iov_base = hdr, .iov_len = sizeof hdr}, {.iov_base = (void *)data, .iov_len = len}};
        wr = write_all(fd, iov, 2);
    }
    if (wr != 0) {
        store_errno(errno, "write", s->blocks_dir, tmp);
        goto fail_fd;
    }
    stamp_atime(fd, atime_ns);
    if (s->fsync && fsync(fd) != 0) {
        store_errno(errno, "fsync", s->blocks_dir, tmp);
        goto fail_fd;
    }
    if (close(fd) != 0) {
        store_errno(errno, "close", s->blocks_dir, tmp);
        goto fail_tmp;
    }
    if (renameat(s->blocks_fd, tmp, s->blocks_fd, rel) != 0) {
        store_errno(errno, "rename", s->blocks_dir, tmp);
        goto fail_tmp;
    }
    if (s->fsync) {
        char dir[8];
        memcpy(dir, rel, 5);
        dir[5] = '\0';
        /* The block is complete and in place: a failed directory sync only weakens durability. */
        if (fsync_dir(s, dir) != 0)
            LOG_WARN("store", "fsync_dir_failed", "error=%s", shoal_error_name(shoal_error_code()));
    }
    return 0;

fail_fd:
    close(fd);
fail_tmp:
    unlinkat(s->blocks_fd, tmp, 0);
    return -1;
}

/* ---- public: put, get, contains, stats -------------------------------------------------- */

/* Rewrites the class field of a stored block in place (outside the checksum by design). Locked. */
static void promote(node_store *s, store_entry *e)
{
    SHOAL_ASSERT_LOCKED(&s->mu);
    char rel[NODE_STORE_RELPATH_LEN];
    int fd = openat(s->blocks_fd, node_store_relpath(e->id, rel), O_WRONLY | O_CLOEXEC);
    uint8_t cls[2];
    put_le16(cls, NODE_STORE_OWNED);
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

int node_store_put(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], const void *data, size_t len,
                   node_store_class cls)
{
    return node_store_put_checked(s, id, data, len, cls, NULL);
}

int node_store_put_checked(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], const void *data, size_t len,
                           node_store_class cls, const node_store_checksum *sum)
{
    if (cls != NODE_STORE_OWNED && cls != NODE_STORE_NEAR)
        return shoal_error_set(SHOAL_ERR_INVAL, "store: put with unknown block class %d", (int)cls);
    char hex[STORE_HEX_LEN + 1];
    id_hex(id, hex);
    uint64_t size = (uint64_t)len + NODE_STORE_HEADER_LEN;
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
    e->cls = cls;
    e->pending = true;
    e->gen = ++s->next_gen;
    if (index_insert(s, e) != 0) {
        free(e);
        goto fail_locked;
    }
    s->reserved += size;
    if (cls == NODE_STORE_NEAR)
        s->near_reserved += size;
    int64_t atime = clock_tick(s);
    uint64_t seq = ++s->tmp_seq;
    pthread_mutex_unlock(&s->mu);

    int rc = write_block_file(s, id, data, len, sum, cls, atime, seq);

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
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != 0)
        LOG_WARN("store", "write_failed", "block=%s error=%s", hex, shoal_error_name(shoal_error_code()));
    return rc;

fail_locked:
    pthread_mutex_unlock(&s->mu);
    return -1;
}

/* A get found the block unusable: remove it if the index still holds the very entry that was
 * read (not one evicted and stored anew since), count the miss, and report NOT_FOUND. */
static int drop_block(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], uint64_t gen, bool corrupt,
                      const char *reason)
{
    char hex[STORE_HEX_LEN + 1];
    id_hex(id, hex);
    pthread_mutex_lock(&s->mu);
    store_entry *e = index_find(s, id);
    bool ours = e && !e->pending && e->gen == gen;
    if (ours) {
        entry_remove(s, e);
        if (corrupt)
            s->corrupt_drops++;
    }
    s->misses++;
    pthread_mutex_unlock(&s->mu);
    if (ours)
        LOG_WARN("store", corrupt ? "corrupt_drop" : "vanished", "block=%s reason=%s", hex, reason);
    else /* evicted between the lookup and the open: an ordinary miss */
        LOG_DEBUG("store", "evicted_while_reading", "block=%s", hex);
    return shoal_error_set(SHOAL_ERR_NOT_FOUND, "store: block %s dropped: %s", hex, reason);
}

/* What a read has learnt of a block between the lookup and the payload check. */
typedef struct block_read {
    char rel[NODE_STORE_RELPATH_LEN];
    uint8_t hdr[NODE_STORE_HEADER_LEN];
    uint64_t gen;
    int64_t atime; /* the stamp to set once the block is verified */
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
    pthread_mutex_unlock(&s->mu);

    r->fd = open_block_ro(s->blocks_fd, r->rel);
    if (r->fd < 0) {
        int err = errno;
        return drop_block(s, id, r->gen, err != ENOENT, err == ENOENT ? "file_missing" : strerror(err));
    }
    const char *bad;
    struct stat st;
    if (fstat(r->fd, &st) != 0 || (uint64_t)st.st_size != size)
        bad = "size_mismatch";
    else if (pread_full(r->fd, r->hdr, sizeof r->hdr, 0) != (ssize_t)sizeof r->hdr)
        bad = "short_header";
    else
        bad = header_check(r->hdr, id, size);
    if (bad) {
        close(r->fd);
        return drop_block(s, id, r->gen, true, bad);
    }
    r->len = (size_t)(size - NODE_STORE_HEADER_LEN);
    return 0;
}

/* Ends a read whose payload is in `payload`: a hit when it matches the checksum (the file gets its
 * access stamp), else the block is dropped. Closes r->fd either way. 0 or -1 with NOT_FOUND. */
static int block_finish(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], block_read *r, const void *payload)
{
    XXH128_hash_t sum = payload_sum(r->hdr, payload, r->len);
    if (sum.low64 != get_le64(r->hdr + 32) || sum.high64 != get_le64(r->hdr + 40)) {
        close(r->fd);
        return drop_block(s, id, r->gen, true, "checksum_mismatch");
    }
    stamp_atime(r->fd, r->atime);
    close(r->fd);
    pthread_mutex_lock(&s->mu);
    s->hits++;
    pthread_mutex_unlock(&s->mu);
    return 0;
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
    if (pread_full(r.fd, buf, r.len, NODE_STORE_HEADER_LEN) != (ssize_t)r.len) {
        close(r.fd);
        return drop_block(s, id, r.gen, true, "short_payload");
    }
    return block_finish(s, id, &r, buf);
}

int node_store_map(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], node_store_view *out)
{
    *out = (node_store_view){0};
    block_read r;
    if (block_open(s, id, &r) != 0)
        return -1;
    size_t map_len = r.len + NODE_STORE_HEADER_LEN;
    /* The store never truncates or rewrites a block file (eviction unlinks, which keeps the pages of
     * a live mapping), so the mapping cannot fault under the reader. */
    void *map = mmap(NULL, map_len, PROT_READ, MAP_SHARED, r.fd, 0);
    if (map == MAP_FAILED) {
        int err = errno;
        close(r.fd);
        return shoal_error_errno(err, "store: mmap %s/%s", s->blocks_dir, r.rel);
    }
    const uint8_t *payload = (const uint8_t *)map + NODE_STORE_HEADER_LEN;
    if (block_finish(s, id, &r, payload) != 0) {
        munmap(map, map_len);
        return -1;
    }
    *out = (node_store_view){.data = payload, .len = r.len, .map = map, .map_len = map_len};
    return 0;
}

void node_store_view_release(node_store_view *v)
{
    if (v && v->map)
        munmap(v->map, v->map_len);
    if (v)
        *v = (node_store_view){0};
}

bool node_store_contains(node_store *s, const uint8_t id[NODE_STORE_ID_LEN], size_t *len_out,
                         node_store_class *cls_out)
{
    pthread_mutex_lock(&s->mu);
    store_entry *e = index_find(s, id);
    bool found = e && !e->pending;
    if (found && len_out)
        *len_out = (size_t)(e->size - NODE_STORE_HEADER_LEN);
    if (found && cls_out)
        *cls_out = e->cls;
    pthread_mutex_unlock(&s->mu);
    return found;
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
        .corrupt_drops = s->corrupt_drops,
        .write_errors = s->write_errors,
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

static bool is_hex2_name(const char *name) { return hex_val(name[0]) >= 0 && hex_val(name[1]) >= 0 && !name[2]; }

/* Loads one block file ab/cd/<hex> into a fresh entry, or removes it when its header is unsound. */
static int scan_block(node_store *s, scan_state *st, int leaf_fd, const char *rel_dir, const char *name)
{
    uint8_t id[NODE_STORE_ID_LEN];
    if (!hex_parse(name, STORE_HEX_LEN, id) || memcmp(name, rel_dir, 2) != 0 || memcmp(name + 2, rel_dir + 3, 2) != 0) {
        st->foreign++;
        LOG_WARN("store", "foreign_file", "file=%s/%s/%s action=kept", s->blocks_dir, rel_dir, name);
        return 0;
    }
    int fd = open_block_ro(leaf_fd, name);
    if (fd < 0)
        return shoal_error_errno(errno, "store: open %s/%s/%s", s->blocks_dir, rel_dir, name);
    struct stat sb;
    uint8_t hdr[NODE_STORE_HEADER_LEN];
    const char *bad;
    if (fstat(fd, &sb) != 0)
        bad = "stat_failed";
    else if (!S_ISREG(sb.st_mode))
        bad = "not_a_file";
    else if (pread_full(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr)
        bad = "short_header";
    else
        bad = header_check(hdr, id, (uint64_t)sb.st_size);
    close(fd);
    if (bad) {
        LOG_WARN("store", "corrupt_drop", "file=%s/%s/%s reason=%s", s->blocks_dir, rel_dir, name, bad);
        if (unlinkat(leaf_fd, name, 0) != 0)
            return shoal_error_errno(errno, "store: removing corrupt block %s/%s/%s", s->blocks_dir, rel_dir, name);
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
    e->cls = (node_store_class)get_le16(hdr + 6);
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

static int rebuild(node_store *s)
{
    scan_state st = {0};
    size_t inserted = 0;
    int rc = scan_level(s, &st, "");
    if (rc == 0 && st.nfound)
        /* Oldest first onto the list heads, so the most recently used ends up at the head. */
        qsort(st.found, st.nfound, sizeof *st.found, by_atime);
    /* Nothing else can reach the store yet; the lock is taken because index and lists live
     * under it (see "index and lists"). */
    pthread_mutex_lock(&s->mu);
    for (; rc == 0 && inserted < st.nfound; inserted++) {
        store_entry *e = st.found[inserted];
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
    pthread_mutex_unlock(&s->mu);
    if (rc != 0)
        return -1;
    LOG_INFO("store", "open", "dir=%s blocks=%" PRIu64 " bytes=%" PRIu64 " capacity=%" PRIu64
             " evicted_over_cap=%" PRIu64 " temp_removed=%" PRIu64 " corrupt_dropped=%" PRIu64 " foreign=%" PRIu64,
             s->blocks_dir, s->blocks, s->used, s->capacity, s->evictions - evicted, st.tmp_removed,
             s->corrupt_drops, st.foreign);
    return 0;
}

node_store_options node_store_options_default(void)
{
    return (node_store_options){.near_percent = 10, .fsync = false, .direct_io = true};
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
    node_store *s = calloc(1, sizeof *s);
    if (!s) {
        shoal_error_set(SHOAL_ERR_NOMEM, "store: opening %s", cache_dir);
        return NULL;
    }
    s->blocks_fd = s->lock_fd = -1;
    s->capacity = capacity_bytes;
    s->near_capacity = (uint64_t)((unsigned __int128)capacity_bytes * o.near_percent / 100);
    s->fsync = o.fsync;
    atomic_init(&s->direct, o.direct_io);
    s->nbuckets = 1024;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        shoal_error_set(SHOAL_ERR_NOMEM, "store: mutex for %s", cache_dir);
        goto fail_alloc;
    }
    s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
    if (!s->buckets || asprintf(&s->blocks_dir, "%s/blocks", cache_dir) < 0) {
        s->blocks_dir = NULL;
        shoal_error_set(SHOAL_ERR_NOMEM, "store: opening %s", cache_dir);
        goto fail_mutex;
    }
    if (mkdir(cache_dir, 0700) != 0 && errno != EEXIST) {
        shoal_error_errno(errno, "store: mkdir %s", cache_dir);
        goto fail_mutex;
    }
    if (mkdir(s->blocks_dir, 0700) != 0 && errno != EEXIST) {
        shoal_error_errno(errno, "store: mkdir %s", s->blocks_dir);
        goto fail_mutex;
    }
    s->blocks_fd = open(s->blocks_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->blocks_fd < 0) {
        shoal_error_errno(errno, "store: open %s", s->blocks_dir);
        goto fail_mutex;
    }
    s->lock_fd = openat(s->blocks_fd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) {
        shoal_error_errno(errno, "store: open %s/.lock", s->blocks_dir);
        goto fail_fds;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            shoal_error_set(SHOAL_ERR_IO, "store: %s is in use by another block store (locked)", s->blocks_dir);
        else
            shoal_error_errno(errno, "store: flock %s/.lock", s->blocks_dir);
        goto fail_fds;
    }
    if (rebuild(s) != 0)
        goto fail_fds;
    return s;

fail_fds:
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    if (s->blocks_fd >= 0)
        close(s->blocks_fd);
fail_mutex:
    free_index(s);
    free(s->blocks_dir);
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
    free(s->blocks_dir);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
