/*
 * node_mountfs: the mount's object table filled with the daemon's parts.
 *
 * Reads. The mount asks for (key, ETag, offset, length); the read path wants whole blocks of a
 * named object version, whose size it needs to know where the last block ends. The size comes
 * from a small table of (key, ETag) -> size filled by every listing, HEAD, upload and copy this
 * node saw, so reading a file that `ls` described costs no HEAD. A miss asks the read path's
 * metadata cache; when that holds another ETag than the one the open pinned, it is forgotten and
 * asked again once (the cache may be older than the mount's listing), and a second mismatch means
 * the object really changed: -ESTALE. Each block is read with node_cache_read under the pinned
 * ETag (ranged GETs carry If-Match and the answer's ETag is checked; owners answer CHANGED) and
 * copied into the caller's buffer, so a read never mixes versions. A changed object is forgotten
 * by the metadata cache so the next open sees the new version at once.
 *
 * Sequential and random. Each read comes with the sequential run it ends (the mount's streams,
 * fuse/mount_ra.h), and this file alone decides what to fetch ahead (the read path's own
 * read-ahead is turned off for the mount's objects, own_readahead). A sequential read (run > 0)
 * reads whole blocks as below and then asks for the next w blocks past the one it ended in
 * (node_cache_prefetch, which skips blocks stored or being fetched), w doubling as the run covers
 * more blocks: 1, 2, 4, up to FS_PREFETCH_BLOCKS. A random read (run 0) asks
 * for each block it touches that is not held here: a stored block is opened and held as below
 * (node_cache_read_stored), so a random reader's chunks are hashed once while the block stays
 * held; else node_cache_read_part fetches just its bytes: a block being fetched or held by an owner
 * serves them, else one ranged GET of those bytes; only an owner's copy takes a block buffer. It
 * asks for nothing ahead and never has a whole block fetched from S3: the block is completed
 * only when its reader's next read follows on, which makes the stream sequential (with a window of
 * 1 again). That is the whole policy for completing blocks behind random readers: never.
 *
 * Streaming. A read of a block nobody holds (not stored, not held) asks node_cache_read_stream
 * first: the block's fetch is led by a read-ahead worker and the read returns once its own range
 * arrived from S3, so the first byte of an uncached file waits for one round trip plus its bytes,
 * not for the whole block. Stored and peer-fetched blocks take the paths below.
 *
 * Held blocks. The kernel asks for at most 1 MiB at a time (a random reader 4 KiB), and a block is
 * 4 MiB by default. A stored block is read with node_cache_read_lazy: its file opened with the
 * header checked, each read a pread of the range asked straight into the reply, and each 64 KiB
 * chunk verified against its sum the first time a read touches it (node_cache_block_read), so a
 * 4 KiB read hashes 64 KiB, not the block. Reads are not served from a mapping: a mapped block
 * kept its pages resident for as long as it stayed held (then 16 blocks, 64 MiB), and giving them back
 * after each read cost a page fault per page on the next, where a pread costs neither. The last
 * FS_HELD_BLOCKS blocks read stay held (an open stored block with the record of its verified chunks; never
 * the buffer a fetch filled, which goes back to the read path's budget of --fetch-buffers as soon as
 * it is copied), keyed by (key, ETag, index), which name immutable bytes, so a held
 * block is never stale and a chunk is hashed once while its block stays held. Readers copy from a
 * held block without the lock, counted; a block evicted while read is released by its last reader.
 * A chunk that fails its check makes the store drop the block; the held block is dropped too and
 * the read asks for the block once more, which now fetches it from a peer or S3.
 *
 * Disk read-ahead. Block files are separate files, so the kernel's read-ahead of one stops at its
 * end, and each held block has its own descriptor: a reader going through stored blocks waited for
 * the disk at every block's first read, with nothing in flight meanwhile. A sequential read that
 * opens a stored block therefore has that block and the next FS_DISK_AHEAD bytes' worth of stored
 * blocks hinted to the kernel (node_cache_willneed: POSIX_FADV_WILLNEED on their files), so the
 * disk reads ahead across blocks as it does within a local file. Each block is hinted once per
 * run: the first block a run opens hints itself and the window past it, and each later one only
 * the block entering the window, as a small table of (object, next block not yet hinted) remembers
 * (hint_range); a hint costs an open, a close and the kernel's look through the file's pages, and
 * hinting each block three times, as every block opened hinting its whole window did, cost a
 * sequential reader a sixth of the daemon's CPU. Only a run of a block or more
 * gives the hint: a random reader whose read happens to land just past an earlier one is taken
 * for a short run, and a hint would have the disk read 12 MiB for its 128 KiB. The hint reads, it
 * verifies nothing: the chunks are checked when read, as always. Random reads give no hint.
 *
 * Listings for `ls` go to S3 (s3_list), not through the cluster's table of pages (node_cache_list):
 * that table keeps a page for --metadata-ttl and has no way to forget one, so a file this mount
 * just wrote, or one another client created, would stay out of `ls` for that long, where the mount
 * promises its own writes at once and new objects within --negative-ttl (docs/semantics.md). The
 * listing that revalidates an expired one for lookups does go through the table (list_shared):
 * one LIST per directory per TTL for the whole cluster, and a name it lacks is still asked for.
 *
 * Writes. The mount hands over a staged file; s3_upload sends it as one PUT or a parallel
 * multipart upload and aborts the upload on failure, so a failed put never leaves a partial
 * object. The file's attributes travel with it as x-amz-meta-* headers (see "attributes as user
 * metadata" below); when they hold no mtime, a HEAD afterwards gives S3's own LastModified for
 * the new version (the clock later listings report), so `stat` does not jump at a refresh.
 * A copy (rename, or new attributes) HEADs its source once and passes what it saw to s3_copy,
 * so the new object's metadata is known without asking again. Then the blocks of
 * the new version go into the cluster cache: blocks this node owns into its store as OWNED, the
 * others into its store as NEAR, and every block is sent to its other owners (node_cache_push: a
 * PUT each owner checks and keeps as OWNED), so a reader on any node gets a fresh checkpoint from
 * the cluster, not from S3. Every mutation forgets what the metadata cache knew of the key, so a HEAD after it
 * cannot answer from before it.
 *
 * Threads: every function may run on any of the mount's loop threads at once. The size table and
 * the held blocks have a mutex each; everything else they call is thread-safe.
 */
#include "node_mountfs.h"

#include "dht.h"
#include "mount.h"
#include "shoal_assert.h"
#include "shoal_error.h"
#include "shoal_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#define FS_SIZE_SETS 8192  /* (key, ETag) -> size: sets of FS_SIZE_WAYS entries, LRU within a set */
#define FS_SIZE_WAYS 8     /* so a dataset of tens of thousands of files loses next to none; a loss costs a HEAD */
#define FS_LIST_PAGE 1000   /* S3's largest listing page */
/* Blocks kept between reads (see "Held blocks"): an open descriptor and a record of verified chunks
 * each, no pages. 128 (512 MiB of 4 MiB blocks): with 16, random 4 KiB reads over a 256 MiB file
 * mostly missed the held set and paid an open, a header check and a chunk hash per read
 * (docs/benchmarks.md). */
#define FS_HELD_BLOCKS 128
#define FS_PREFETCH_BLOCKS 8 /* the largest read-ahead window of a sequential reader, in blocks */
#define FS_DISK_AHEAD (8u << 20) /* bytes of stored blocks read from disk ahead of a sequential reader */
#define FS_HINT_SLOTS 64 /* objects whose disk read-ahead is remembered (hint_range) */

/* A block kept after a read for the next reads of the same block. */
typedef struct held_block {
    char *key;
    char etag[MOUNT_ETAG_MAX];
    uint64_t index;
    node_cache_block b;
    unsigned readers;          /* reads copying from b right now */
    bool evicted;              /* replaced while read: the last reader releases b */
    uint64_t used;             /* tick of the last hit, for LRU */
} held_block;

/* How far the disk read-ahead of one object's sequential reader was hinted (hint_range). */
typedef struct hint_slot {
    uint64_t object; /* hash of (key, ETag); 0: free */
    uint64_t next; /* the first block past those hinted */
} hint_slot;

typedef struct size_slot {
    char *key;
    char etag[MOUNT_ETAG_MAX];
    uint64_t size;
    uint64_t used; /* tick of the last store or hit, for LRU within the set */
} size_slot;

struct node_mountfs {
    const node_config *cfg;
    node_mountfs_parts parts;
    char *staging;
    mount_view *view;
    bool mounted;
    pthread_mutex_t sizes_mu;
    size_slot sizes[FS_SIZE_SETS][FS_SIZE_WAYS];
    uint64_t size_tick;
    pthread_mutex_t held_mu;
    held_block *held[FS_HELD_BLOCKS];
    uint64_t held_tag[FS_HELD_BLOCKS]; /* held_tag_of each held block, 0 where none: held_get scans
                                          these, not the blocks, each in memory of its own */
    uint64_t tick;
    pthread_mutex_t hint_mu;
    hint_slot hints[FS_HINT_SLOTS];
    _Atomic uint64_t uploads, upload_errors; /* fs_put's outcomes (mount.uploads, .upload_errors) */
    _Atomic uint64_t disk_hints; /* stored blocks hinted to the kernel (mount.disk_hints) */
};

/* ---- errors ----------------------------------------------------------------------------------- */

/* The errno of the current shoal_error. Failures other than "no such key" and "changed" are
 * logged: the errno alone would not tell an operator which request failed and why. */
static int fs_errno(const char *op, const char *key)
{
    shoal_err e = shoal_error_code();
    int err;
    switch (e) {
    case SHOAL_ERR_S3_NO_SUCH_KEY:
    case SHOAL_ERR_S3_NO_SUCH_BUCKET:
    case SHOAL_ERR_NOT_FOUND: err = ENOENT; break;
    case SHOAL_ERR_S3_ACCESS_DENIED:
    case SHOAL_ERR_S3_SIGNATURE:
    case SHOAL_ERR_S3_CREDENTIALS: err = EACCES; break;
    case SHOAL_ERR_S3_CHANGED: err = ESTALE; break;
    case SHOAL_ERR_NOMEM: err = ENOMEM; break;
    case SHOAL_ERR_NOSPACE: err = ENOSPC; break;
    default: err = EIO; break;
    }
    if (err != ENOENT && err != ESTALE) {
        char q[256];
        LOG_WARN("mountfs", "request_failed", "op=%s key=%s errno=%d error=%s message=\"%s\"", op,
                 shoal_log_q(q, sizeof q, key), err, shoal_error_name(e), shoal_error_message());
    }
    return -err;
}

/* S3 allows longer ETags than the mount keeps; real ones (32 hex digits, quotes, a part count)
 * fit, and a cut one only fails to match (a HEAD more, or ESTALE), never matches wrongly. */
static void etag_copy(char out[MOUNT_ETAG_MAX], const char *in)
{
    size_t n = strnlen(in, MOUNT_ETAG_MAX - 1);
    memcpy(out, in, n);
    out[n] = '\0';
}

/* ---- (key, ETag) -> size ------------------------------------------------------------------------ */

/* The entry of `key` in its set, or (for a store) the entry to replace: an empty one, else the
 * least recently used; NULL when looking up a key the set lacks. Locked. */
static size_slot *size_slot_of(node_mountfs *fs, const char *key, size_t key_len, bool store)
{
    SHOAL_ASSERT_LOCKED(&fs->sizes_mu);
    size_slot *set = fs->sizes[XXH3_64bits(key, key_len) % FS_SIZE_SETS], *victim = &set[0];
    for (int w = 0; w < FS_SIZE_WAYS; w++) {
        size_slot *s = &set[w];
        if (s->key != NULL && strlen(s->key) == key_len && memcmp(s->key, key, key_len) == 0)
            return s;
        if (victim->key != NULL && (s->key == NULL || s->used < victim->used))
            victim = s;
    }
    return store ? victim : NULL;
}

static void size_remember(node_mountfs *fs, const char *key, size_t key_len, const char *etag, uint64_t size)
{
    if (etag[0] == '\0' || strlen(etag) >= MOUNT_ETAG_MAX)
        return;
    char *copy = strndup(key, key_len);
    if (copy == NULL)
        return; /* only a cache: the next read asks the metadata cache */
    pthread_mutex_lock(&fs->sizes_mu);
    size_slot *s = size_slot_of(fs, key, key_len, true);
    free(s->key);
    s->key = copy;
    etag_copy(s->etag, etag);
    s->size = size;
    s->used = ++fs->size_tick;
    pthread_mutex_unlock(&fs->sizes_mu);
}

static bool size_find(node_mountfs *fs, const char *key, const char *etag, uint64_t *size)
{
    pthread_mutex_lock(&fs->sizes_mu);
    size_slot *s = size_slot_of(fs, key, strlen(key), false);
    bool hit = s != NULL && strcmp(s->etag, etag) == 0;
    if (hit) {
        *size = s->size;
        s->used = ++fs->size_tick;
    }
    pthread_mutex_unlock(&fs->sizes_mu);
    return hit;
}

/* The size of version `etag` of `key`: 0, -ESTALE when the object has another ETag now, or the
 * errno of the failed HEAD. */
static int object_size(node_mountfs *fs, const char *key, const char *etag, uint64_t *size)
{
    if (size_find(fs, key, etag, size))
        return 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        s3_object_info info;
        if (node_cache_head(fs->parts.cache, fs->cfg->bucket, key, &info) != 0)
            return fs_errno("head", key);
        if (strcmp(info.etag, etag) == 0) {
            size_remember(fs, key, strlen(key), info.etag, info.size);
            *size = info.size;
            return 0;
        }
        node_cache_forget(fs->parts.cache, fs->cfg->bucket, key);
    }
    return -ESTALE;
}

/* ---- the table's operations ------------------------------------------------------------------- */

/* ---- attributes as user metadata ------------------------------------------------------------
 *
 * The mount's file attributes travel as x-amz-meta-mode, -uid, -gid, -mtime and -atime, with
 * s3fs's encodings (decimal st_mode and ids; times as seconds, or seconds.nanoseconds), so a
 * bucket written by s3fs shows its modes here and the other way round. A value that does not
 * parse is ignored (the mount shows its default), never an error: metadata written by other
 * tools must not make a file unreadable. */

static const struct {
    const char *name;
    unsigned bit;
} ATTR_NAMES[] = {
    {"mode", MOUNT_ATTR_MODE}, {"uid", MOUNT_ATTR_UID}, {"gid", MOUNT_ATTR_GID},
    {"mtime", MOUNT_ATTR_MTIME}, {"atime", MOUNT_ATTR_ATIME},
};

static void time_text(char *out, size_t cap, mount_time t)
{
    if (t.nsec)
        snprintf(out, cap, "%lld.%09u", (long long)t.sec, t.nsec);
    else
        snprintf(out, cap, "%lld", (long long)t.sec);
}

/* "S" or "S.F" (F up to nine digits) into *t; false when it is neither. */
static bool time_parse(const char *v, mount_time *t)
{
    char *end;
    errno = 0;
    long long sec = strtoll(v, &end, 10);
    if (errno || end == v)
        return false;
    uint32_t nsec = 0;
    if (*end == '.') {
        unsigned digits = 0;
        for (end++; *end >= '0' && *end <= '9'; end++)
            if (digits++ < 9)
                nsec = nsec * 10 + (uint32_t)(*end - '0');
        while (digits++ < 9)
            nsec *= 10;
    }
    if (*end)
        return false;
    *t = (mount_time){sec, nsec};
    return true;
}

static bool u32_parse(const char *v, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || x > UINT32_MAX)
        return false;
    *out = (uint32_t)x;
    return true;
}

/* The mount's attributes as metadata entries (kv has room for S3_META_MAX); their count. */
static unsigned attrs_to_meta(const mount_attrs *a, s3_meta_kv *kv)
{
    unsigned n = 0;
    for (size_t i = 0; a && i < sizeof ATTR_NAMES / sizeof ATTR_NAMES[0]; i++) {
        unsigned bit = ATTR_NAMES[i].bit;
        if (!(a->set & bit))
            continue;
        snprintf(kv[n].name, sizeof kv[n].name, "%s", ATTR_NAMES[i].name);
        if (bit == MOUNT_ATTR_MTIME || bit == MOUNT_ATTR_ATIME)
            time_text(kv[n].value, sizeof kv[n].value, bit == MOUNT_ATTR_MTIME ? a->mtime : a->atime);
        else
            snprintf(kv[n].value, sizeof kv[n].value, "%u",
                     bit == MOUNT_ATTR_MODE ? a->mode : bit == MOUNT_ATTR_UID ? a->uid : a->gid);
        n++;
    }
    return n;
}

/* The attributes an object's metadata carries (set 0 when none). */
static void attrs_from_meta(const s3_object_info *in, mount_attrs *a)
{
    memset(a, 0, sizeof *a);
    for (unsigned i = 0; i < in->n_meta; i++) {
        for (size_t k = 0; k < sizeof ATTR_NAMES / sizeof ATTR_NAMES[0]; k++) {
            if (strcmp(in->meta[i].name, ATTR_NAMES[k].name) != 0)
                continue;
            const char *v = in->meta[i].value;
            unsigned bit = ATTR_NAMES[k].bit;
            bool ok = bit == MOUNT_ATTR_MTIME   ? time_parse(v, &a->mtime)
                      : bit == MOUNT_ATTR_ATIME ? time_parse(v, &a->atime)
                      : bit == MOUNT_ATTR_MODE  ? u32_parse(v, &a->mode)
                      : bit == MOUNT_ATTR_UID   ? u32_parse(v, &a->uid)
                                                : u32_parse(v, &a->gid);
            if (ok)
                a->set |= bit;
        }
    }
}

/* Hands S3's metadata of `key` to the mount and remembers its size for reads. */
static void info_from_s3(node_mountfs *fs, const char *key, const s3_object_info *in, mount_obj_info *out)
{
    size_remember(fs, key, strlen(key), in->etag, in->size);
    memset(out, 0, sizeof *out);
    out->size = in->size;
    out->mtime = in->last_modified;
    etag_copy(out->etag, in->etag);
    out->has_attrs = true;
    attrs_from_meta(in, &out->attrs);
}

static int fs_head(void *ctx, const char *key, mount_obj_info *out)
{
    node_mountfs *fs = ctx;
    s3_object_info info;
    if (node_cache_head(fs->parts.cache, fs->cfg->bucket, key, &info) != 0)
        return fs_errno("head", key);
    info_from_s3(fs, key, &info, out);
    return 0;
}

/* Byte order of S3 keys (UTF-8 sorts as bytes). */
static int key_cmp(const char *a, size_t a_len, const char *b, size_t b_len)
{
    int c = memcmp(a, b, a_len < b_len ? a_len : b_len);
    return c != 0 ? c : (a_len > b_len) - (a_len < b_len);
}

/* Lists through S3 itself, or (shared) through the cluster's table of pages, where *age_us gets
 * the age of the oldest page. */
static int list_pages(node_mountfs *fs, const char *prefix, const char *delimiter, size_t max_entries, bool shared,
                      mount_list_fn cb, void *ud, uint64_t *age_us)
{
    char *token = NULL;
    size_t seen = 0;
    int rc = 0;
    bool more = true;
    while (more) {
        s3_list_page page;
        s3_list_page_create(&page);
        size_t left = max_entries ? max_entries - seen : 0;
        s3_list_args a = {.bucket = fs->cfg->bucket, .prefix = prefix, .delimiter = delimiter,
                          .continuation_token = token, .max_keys = left && left < FS_LIST_PAGE ? (unsigned)left : 0};
        uint64_t age = 0;
        if ((shared ? node_cache_list_aged(fs->parts.cache, &a, &page, &age) : s3_list(fs->parts.s3, &a, &page)) != 0) {
            rc = fs_errno("list", prefix);
            s3_list_page_destroy(&page);
            break;
        }
        /* S3 sorts objects and common prefixes together; the page holds them apart. */
        size_t i = 0, j = 0;
        bool stop = false;
        while (!stop && (i < page.n_objects || j < page.n_prefixes)) {
            const s3_list_object *o = i < page.n_objects ? &page.objects[i] : NULL;
            const char *p = j < page.n_prefixes ? page.prefixes[j] : NULL;
            if (o != NULL && (p == NULL || key_cmp(o->key, o->key_len, p, strlen(p)) < 0)) {
                mount_obj_info info = {.size = o->size, .mtime = o->last_modified};
                etag_copy(info.etag, o->etag);
                size_remember(fs, o->key, o->key_len, o->etag, o->size);
                stop = cb(ud, o->key, o->key_len, false, &info) != 0;
                i++;
            } else {
                stop = cb(ud, p, strlen(p), true, NULL) != 0;
                j++;
            }
            seen++;
            stop = stop || (max_entries && seen >= max_entries);
        }
        free(token);
        token = NULL;
        more = !stop && page.truncated && page.next_token != NULL;
        if (more && (token = strdup(page.next_token)) == NULL) {
            shoal_error_set(SHOAL_ERR_NOMEM, "listing s3://%s/%s", fs->cfg->bucket, prefix);
            rc = fs_errno("list", prefix);
            more = false;
        }
        s3_list_page_destroy(&page);
        if (age_us && age > *age_us)
            *age_us = age;
    }
    free(token);
    return rc;
}

static int fs_list(void *ctx, const char *prefix, const char *delimiter, size_t max_entries, mount_list_fn cb,
                   void *ud)
{
    return list_pages(ctx, prefix, delimiter, max_entries, false, cb, ud, NULL);
}

static int fs_list_shared(void *ctx, const char *prefix, const char *delimiter, mount_list_fn cb, void *ud,
                          uint64_t *age_us)
{
    *age_us = 0;
    return list_pages(ctx, prefix, delimiter, 0, true, cb, ud, age_us);
}

/* A hash naming an object version (key, ETag), never 0. */
static uint64_t object_hash(const char *key, const char *etag)
{
    return (XXH3_64bits(key, strlen(key)) ^ XXH3_64bits(etag, strlen(etag)) * 0x9E3779B97F4A7C15ull) | 1;
}

/* The tag of block `index` of the object of hash `object` in held_tag, never 0. */
static uint64_t held_tag_of(uint64_t object, uint64_t index) { return (object ^ (index * 0xC2B2AE3D27D4EB4Full)) | 1; }

/* A held block of (key, etag, index) whose object hashes to `object`, with a reader counted on
 * it; NULL when none. */
static held_block *held_get(node_mountfs *fs, const char *key, const char *etag, uint64_t object, uint64_t index)
{
    held_block *hit = NULL;
    uint64_t tag = held_tag_of(object, index);
    pthread_mutex_lock(&fs->held_mu);
    for (size_t i = 0; i < FS_HELD_BLOCKS && hit == NULL; i++) {
        held_block *h = fs->held[i];
        if (fs->held_tag[i] == tag && h->index == index && strcmp(h->key, key) == 0 && strcmp(h->etag, etag) == 0) {
            h->readers++;
            h->used = ++fs->tick;
            hit = h;
        }
    }
    pthread_mutex_unlock(&fs->held_mu);
    return hit;
}

static void held_free(held_block *h)
{
    if (h == NULL)
        return;
    node_cache_block_release(&h->b);
    free(h->key);
    free(h);
}

/* Ends a read on a held block; the last reader of an evicted one frees it. */
static void held_put(node_mountfs *fs, held_block *h)
{
    pthread_mutex_lock(&fs->held_mu);
    bool last = --h->readers == 0 && h->evicted;
    pthread_mutex_unlock(&fs->held_mu);
    if (last)
        held_free(h);
}

/* Takes a held block out of the set (its bytes failed their check): later reads of the block read
 * it anew, and the last reader frees it. */
static void held_drop(node_mountfs *fs, held_block *h)
{
    pthread_mutex_lock(&fs->held_mu);
    for (size_t i = 0; i < FS_HELD_BLOCKS; i++)
        if (fs->held[i] == h) {
            fs->held[i] = NULL;
            fs->held_tag[i] = 0;
        }
    h->evicted = true;
    pthread_mutex_unlock(&fs->held_mu);
}

/* Takes over block `b` (read just now) as held, with a reader counted on it, in place of the least
 * recently used one; an evicted block still being read is freed by its last reader. NULL (b
 * untouched) when there is no memory for it. */
static held_block *held_add(node_mountfs *fs, const char *key, const char *etag, uint64_t object, uint64_t index,
                            node_cache_block *b)
{
    held_block *h = calloc(1, sizeof *h), *old = NULL;
    if (h == NULL || strlen(etag) >= MOUNT_ETAG_MAX || (h->key = strdup(key)) == NULL) {
        free(h);
        return NULL;
    }
    snprintf(h->etag, sizeof h->etag, "%s", etag);
    h->index = index;
    h->b = *b;
    h->readers = 1;
    *b = (node_cache_block){0};
    pthread_mutex_lock(&fs->held_mu);
    size_t victim = 0;
    for (size_t i = 0; i < FS_HELD_BLOCKS; i++) {
        if (fs->held[i] == NULL) {
            victim = i;
            break;
        }
        if (fs->held[i]->used < fs->held[victim]->used)
            victim = i;
    }
    old = fs->held[victim];
    if (old != NULL && old->readers > 0) {
        old->evicted = true;
        old = NULL;
    }
    h->used = ++fs->tick;
    fs->held[victim] = h;
    fs->held_tag[victim] = held_tag_of(object, index);
    pthread_mutex_unlock(&fs->held_mu);
    held_free(old);
    return h;
}

/* Blocks to have fetched ahead of a sequential reader whose run is `run` bytes long: 1 in its first
 * block, doubling with each block the run covered (1, 2, 4, 8 ...) up to FS_PREFETCH_BLOCKS. */
static uint64_t prefetch_window(uint64_t run, uint64_t bs)
{
    uint64_t w = 1;
    while (w < FS_PREFETCH_BLOCKS && w <= run / bs)
        w <<= 1;
    return w;
}

/* Blocks past the one a sequential reader opens whose files the disk reads ahead: FS_DISK_AHEAD
 * bytes' worth, at least one. */
static uint64_t disk_ahead_blocks(uint64_t bs) { return (FS_DISK_AHEAD + bs - 1) / bs; }

/* The blocks [*first, end) to hint for a sequential reader opening block `index` of the object
 * named by hash `object` (see "Disk read-ahead"): the block and the window past it, less those
 * this run hinted already. A read inside the window last hinted (a run going on) has only the
 * blocks past it hinted; any other (a new run, a seek back) the whole window. */
static uint64_t hint_range(node_mountfs *fs, uint64_t object, uint64_t index, uint64_t window, uint64_t *first)
{
    uint64_t end = index + 1 + window;
    hint_slot *h = &fs->hints[object % FS_HINT_SLOTS];
    pthread_mutex_lock(&fs->hint_mu);
    bool going_on = h->object == object && h->next >= index && h->next <= end;
    *first = going_on ? h->next : index;
    h->object = object;
    h->next = end;
    pthread_mutex_unlock(&fs->hint_mu);
    return end - *first;
}

static ssize_t fs_read(void *ctx, const char *key, const char *etag, uint64_t offset, size_t len, void *buf,
                       uint64_t run)
{
    node_mountfs *fs = ctx;
    uint64_t size = 0, bs = fs->cfg->block_size;
    int rc = object_size(fs, key, etag, &size);
    if (rc != 0)
        return rc;
    if (offset >= size)
        return 0;
    if (len > size - offset)
        len = (size_t)(size - offset);
    node_cache_object obj = {fs->cfg->bucket, key, etag, size, .own_readahead = true};
    uint64_t object = object_hash(key, etag);
    size_t done = 0;
    bool retried = false; /* a block found damaged in the store is read again, once per block */
    while (done < len) {
        uint64_t pos = offset + done, index = pos / bs, in = pos - index * bs;
        held_block *h = held_get(fs, key, etag, object, index);
        node_cache_block local = {0};
        node_cache_block *b = h ? &h->b : &local;
        if (h == NULL && run == 0 && node_cache_read_stored(fs->parts.cache, &obj, index, &local) == 0) {
            /* A random read of a stored block reads it as a held block (below), so its chunks are
             * hashed once while it stays held. */
            if ((h = held_add(fs, key, etag, object, index, &local)) != NULL)
                b = &h->b;
        } else if (h == NULL && run == 0) {
            /* Else it fetches its own bytes, not the block (see "Sequential and random"). */
            ssize_t got = node_cache_read_part(fs->parts.cache, &obj, index, in, len - done, (char *)buf + done);
            if (got <= 0) {
                if (got == 0)
                    shoal_error_set(SHOAL_ERR_S3_TRUNCATED, "block %llu of %s ends before offset %llu",
                                    (unsigned long long)index, key, (unsigned long long)in);
                else if (shoal_error_code() == SHOAL_ERR_S3_CHANGED || shoal_error_code() == SHOAL_ERR_S3_NO_SUCH_KEY)
                    node_cache_forget(fs->parts.cache, fs->cfg->bucket, key);
                return fs_errno("read", key);
            }
            done += (size_t)got;
            continue;
        }
        if (h == NULL) {
            /* A block nobody holds streams in from S3: this read returns as soon as its own bytes
             * arrived (see "Streaming" in node_cache.c); later reads of the block find it held or
             * stored once it is complete. */
            ssize_t got = node_cache_read_stream(fs->parts.cache, &obj, index, in, len - done, (char *)buf + done);
            if (got > 0) {
                done += (size_t)got;
                continue;
            }
            if (node_cache_read_lazy(fs->parts.cache, &obj, index, &local) != 0) {
                if (shoal_error_code() == SHOAL_ERR_S3_CHANGED || shoal_error_code() == SHOAL_ERR_S3_NO_SUCH_KEY)
                    node_cache_forget(fs->parts.cache, fs->cfg->bucket, key);
                return fs_errno("read", key);
            }
            /* Only stored blocks are held: a fetched block's buffer goes back to the
             * read path's budget once copied (the fetch stored the block, so the next read of it
             * opens it), or it would hold a fetch's memory for as long as the block stays held. */
            if (local.buf == NULL && (h = held_add(fs, key, etag, object, index, &local)) != NULL)
                b = &h->b;
            /* A sequential reader opening a stored block has the disk read it and the next ones
             * ahead (see "Disk read-ahead"). */
            if (b->buf == NULL && run >= bs) {
                uint64_t first, count = hint_range(fs, object, index, disk_ahead_blocks(bs), &first);
                if (count > 0)
                    atomic_fetch_add_explicit(&fs->disk_hints, node_cache_willneed(fs->parts.cache, &obj, first, count),
                                              memory_order_relaxed);
            }
        }
        bool short_block = b->len <= in;
        size_t n = short_block ? 0 : b->len - in < len - done ? (size_t)(b->len - in) : len - done;
        /* A block from the store is read with pread and verified a chunk at a time, as reads first
         * touch it. */
        bool bad = n > 0 && node_cache_block_read(b, (size_t)in, n, (char *)buf + done) != 0;
        if (bad && h != NULL)
            held_drop(fs, h);
        if (h != NULL)
            held_put(fs, h);
        node_cache_block_release(&local);
        if (bad) {
            if (retried || shoal_error_code() != SHOAL_ERR_NOT_FOUND)
                return fs_errno("read", key);
            retried = true; /* the store dropped the damaged block: the next turn fetches it */
            continue;
        }
        if (short_block) {
            shoal_error_set(SHOAL_ERR_S3_TRUNCATED, "block %llu of %s ends before offset %llu",
                            (unsigned long long)index, key, (unsigned long long)in);
            return fs_errno("read", key);
        }
        done += n;
        retried = false;
    }
    /* A sequential reader wants the next blocks: the window past the block this read ended in,
     * asked after its own block so the reader's bytes do not queue behind them (blocks stored or
     * being fetched are skipped, so each is fetched once). */
    uint64_t last = (offset + len - 1) / bs;
    if (run > 0 && last + 1 < node_cache_block_count(fs->parts.cache, size))
        node_cache_prefetch(fs->parts.cache, &obj, last + 1, prefetch_window(run, bs));
    return (ssize_t)done;
}

static bool owned_here(node_mountfs *fs, const node_cluster_view *v, dht_id id)
{
    if (v == NULL)
        return false;
    const node_cluster_member *owners[DHT_REPLICAS_MAX];
    int n = node_cluster_owners(v, id, (int)fs->cfg->replicas, owners);
    for (int i = 0; i < n; i++)
        if (owners[i]->is_self)
            return true;
    return false;
}

static int pread_all(int fd, uint8_t *buf, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = pread(fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Puts the blocks of the version just uploaded into this node's store (see the essay). A block
 * that does not fit only costs a later reader a fetch. */
static void place_blocks(node_mountfs *fs, const char *key, const char *etag, int fd, uint64_t size)
{
    uint64_t bs = fs->cfg->block_size;
    uint8_t *buf = malloc((size_t)(size < bs ? size : bs));
    node_cluster_view *v = fs->parts.cluster ? node_cluster_view_get(fs->parts.cluster) : NULL;
    unsigned owned = 0, near = 0, skipped = 0, pushed = 0;
    for (uint64_t i = 0; buf != NULL && i * bs < size; i++) {
        size_t len = (size_t)(size - i * bs < bs ? size - i * bs : bs);
        if (pread_all(fd, buf, len, i * bs) != 0) {
            skipped++;
            break;
        }
        dht_id did = dht_block_id(fs->cfg->bucket, key, etag, i);
        uint8_t id[NODE_STORE_ID_LEN];
        dht_id_bytes(did, id);
        bool own = owned_here(fs, v, did);
        if (node_store_put(fs->parts.store, id, buf, len, own ? NODE_STORE_OWNED : NODE_STORE_NEAR) != 0)
            skipped++;
        else if (own)
            owned++;
        else
            near++;
        node_cache_object obj = {.bucket = fs->cfg->bucket, .key = key, .etag = etag, .size = size};
        pushed += node_cache_push(fs->parts.cache, &obj, i, buf, len);
    }
    if (v != NULL)
        node_cluster_view_put(v);
    free(buf);
    char q[256];
    LOG_DEBUG("mountfs", "blocks_placed", "key=%s owned=%u near=%u skipped=%u pushed=%u",
              shoal_log_q(q, sizeof q, key), owned, near, skipped, pushed);
}

/* The metadata of the version `etag` of `key` just written: S3's mtime when a HEAD still finds
 * that version, else now (it was overwritten meanwhile; the next refresh sees the newer one). */
static void written_info(node_mountfs *fs, const char *key, const char *etag, uint64_t size,
                         const mount_attrs *attrs, mount_obj_info *out)
{
    /* S3's LastModified is the mtime shown only for an object that carries none of its own. */
    s3_object_info info;
    bool own_mtime = attrs && (attrs->set & MOUNT_ATTR_MTIME);
    bool same = !own_mtime && s3_head(fs->parts.s3, fs->cfg->bucket, key, &info) == 0 && strcmp(info.etag, etag) == 0;
    memset(out, 0, sizeof *out);
    out->size = size;
    out->mtime = same && info.last_modified ? info.last_modified : (int64_t)time(NULL);
    etag_copy(out->etag, etag);
    out->has_attrs = true; /* what was sent */
    if (attrs)
        out->attrs = *attrs;
    size_remember(fs, key, strlen(key), etag, size);
}

static int fs_put(void *ctx, const char *key, int fd, uint64_t size, const mount_attrs *attrs,
                  mount_obj_info *out)
{
    node_mountfs *fs = ctx;
    s3_meta_kv meta[S3_META_MAX];
    s3_put_args a = {.bucket = fs->cfg->bucket, .key = key, .fd = -1, .len = size, .meta = meta};
    a.n_meta = attrs_to_meta(attrs, meta);
    if (fd >= 0 && size > 0)
        a.fd = fd;
    else
        a.data = "";
    char etag[S3_ETAG_MAX];
    int rc = s3_upload(fs->parts.s3, &a, etag);
    if (rc != 0) {
        atomic_fetch_add_explicit(&fs->upload_errors, 1, memory_order_relaxed);
        node_cache_forget(fs->parts.cache, fs->cfg->bucket, key);
        return fs_errno("put", key);
    }
    atomic_fetch_add_explicit(&fs->uploads, 1, memory_order_relaxed);
    node_cache_publish(fs->parts.cache, fs->cfg->bucket, key);
    written_info(fs, key, etag, size, attrs, out);
    if (a.fd >= 0)
        place_blocks(fs, key, etag, fd, size);
    return 0;
}

static int fs_copy(void *ctx, const char *src, const char *dst, const mount_attrs *attrs,
                   mount_obj_info *out)
{
    node_mountfs *fs = ctx;
    char etag[S3_ETAG_MAX];
    s3_meta_kv meta[S3_META_MAX];
    /* One HEAD of the source (the copy is pinned to its ETag, keeps its content type) tells all
     * the new object will be: its bytes, with the copy's ETag and the metadata asked. */
    s3_object_info info;
    if (s3_head(fs->parts.s3, fs->cfg->bucket, src, &info) != 0)
        return fs_errno("copy", src);
    s3_copy_args a = {.src_bucket = fs->cfg->bucket, .src_key = src, .dst_bucket = fs->cfg->bucket,
                      .dst_key = dst, .replace_meta = attrs != NULL, .meta = meta, .src_info = &info};
    a.n_meta = attrs_to_meta(attrs, meta);
    int rc = s3_copy(fs->parts.s3, &a, etag);
    if (rc != 0) {
        node_cache_forget(fs->parts.cache, fs->cfg->bucket, dst);
        return fs_errno("copy", src);
    }
    node_cache_publish(fs->parts.cache, fs->cfg->bucket, dst);
    snprintf(info.etag, sizeof info.etag, "%s", etag);
    info.last_modified = (int64_t)time(NULL);
    if (attrs) {
        memcpy(info.meta, meta, sizeof meta);
        info.n_meta = a.n_meta;
    }
    info_from_s3(fs, dst, &info, out);
    return 0;
}

static int fs_remove(void *ctx, const char *key)
{
    node_mountfs *fs = ctx;
    int rc = s3_delete(fs->parts.s3, fs->cfg->bucket, key);
    if (rc != 0) {
        node_cache_forget(fs->parts.cache, fs->cfg->bucket, key);
        return fs_errno("delete", key);
    }
    node_cache_publish(fs->parts.cache, fs->cfg->bucket, key);
    return 0;
}

static const mount_backend FS_BACKEND = {
    .head = fs_head,
    .list = fs_list,
    .list_shared = fs_list_shared,
    .read = fs_read,
    .put = fs_put,
    .copy = fs_copy,
    .remove = fs_remove,
};

/* ---- life cycle ------------------------------------------------------------------------------- */

node_mountfs *node_mountfs_new(const node_config *cfg, const node_mountfs_parts *parts)
{
    if (cfg->mount == NULL || parts->s3 == NULL || parts->cache == NULL || parts->store == NULL) {
        shoal_error_set(SHOAL_ERR_INVAL, "mount: %s", cfg->mount ? "a part of the daemon is missing" : "no mount point");
        return NULL;
    }
    node_mountfs *fs = calloc(1, sizeof *fs);
    if (fs == NULL) {
        shoal_error_set(SHOAL_ERR_NOMEM, "mount");
        return NULL;
    }
    fs->cfg = cfg;
    fs->parts = *parts;
    pthread_mutex_init(&fs->sizes_mu, NULL);
    pthread_mutex_init(&fs->held_mu, NULL);
    pthread_mutex_init(&fs->hint_mu, NULL);
    if (asprintf(&fs->staging, "%s/staging", cfg->cache_dir) < 0) {
        fs->staging = NULL;
        shoal_error_set(SHOAL_ERR_NOMEM, "mount");
        goto fail;
    }
    mount_config mc;
    mount_config_defaults(&mc);
    mc.mountpoint = cfg->mount;
    mc.prefix = cfg->prefix;
    mc.staging_dir = fs->staging;
    mc.metadata_ttl = cfg->metadata_ttl;
    mc.negative_ttl = cfg->negative_ttl;
    mc.read_only = cfg->read_only;
    mc.allow_other = cfg->allow_other;
    if (cfg->uid_set)
        mc.uid = (uid_t)cfg->uid;
    if (cfg->gid_set)
        mc.gid = (gid_t)cfg->gid;
    mc.file_mode = (mode_t)cfg->file_mode;
    mc.dir_mode = (mode_t)cfg->dir_mode;
    mc.upload_delay = cfg->upload_delay;
    fs->view = mount_new(&mc, &FS_BACKEND, fs);
    if (fs->view == NULL || mount_start(fs->view) != 0) {
        shoal_error_wrap("mount at %s", cfg->mount);
        goto fail;
    }
    fs->mounted = true;
    char q[256];
    LOG_INFO("mountfs", "mounted", "dir=%s bucket=%s prefix=%s read_only=%s metadata_ttl=%u negative_ttl=%u",
             shoal_log_q(q, sizeof q, cfg->mount), cfg->bucket, cfg->prefix, cfg->read_only ? "true" : "false",
             cfg->metadata_ttl, cfg->negative_ttl);
    return fs;
fail:
    node_mountfs_delete(fs);
    return NULL;
}

_Static_assert(NODE_STATS_FUSE_OPS == MOUNT_STATS_OPS, "node_stats names every request the mount times");

void node_mountfs_sample(node_mountfs *fs, node_stats *st)
{
    mount_writeback_stats wb;
    mount_writeback_stats_get(fs->view, &wb);
    node_stats_set(&st->mount_uploads_pending, wb.pending);
    node_stats_set(&st->mount_upload_retries, wb.retries);
    node_stats_set(&st->mount_uploads, atomic_load_explicit(&fs->uploads, memory_order_relaxed));
    node_stats_set(&st->mount_upload_errors, atomic_load_explicit(&fs->upload_errors, memory_order_relaxed));
    node_stats_set(&st->mount_disk_hints, atomic_load_explicit(&fs->disk_hints, memory_order_relaxed));
    mount_io_stats io;
    mount_io_stats_get(fs->view, &io);
    node_stats_set(&st->mount_opens, io.opens);
    node_stats_set(&st->mount_bytes_read, io.bytes_read);
    node_stats_set(&st->mount_bytes_written, io.bytes_written);
    for (int i = 0; i < MOUNT_STATS_OPS; i++)
        shoal_hist_store(&st->fuse_latency[i], &io.latency[i]);
}

bool node_mountfs_unmounted(node_mountfs *fs)
{
    return fs != NULL && mount_unmounted(fs->view);
}

void node_mountfs_delete(node_mountfs *fs)
{
    if (fs == NULL)
        return;
    mount_delete(fs->view);
    if (fs->mounted) {
        char q[256];
        LOG_INFO("mountfs", "unmounted", "dir=%s", shoal_log_q(q, sizeof q, fs->cfg->mount));
    }
    for (size_t i = 0; i < FS_SIZE_SETS; i++)
        for (size_t w = 0; w < FS_SIZE_WAYS; w++)
            free(fs->sizes[i][w].key);
    for (size_t i = 0; i < FS_HELD_BLOCKS; i++)
        held_free(fs->held[i]);
    pthread_mutex_destroy(&fs->sizes_mu);
    pthread_mutex_destroy(&fs->held_mu);
    pthread_mutex_destroy(&fs->hint_mu);
    free(fs->staging);
    free(fs);
}
