/*
 * Tests of the block store against real files in a fresh temporary directory. Damage (a flipped
 * byte, a truncation, a leftover temporary file) is made by hand on the files, as a crash or a
 * bad disk would leave it; the full disk is a real, small tmpfs mounted in a private mount
 * namespace of the test process, so it vanishes with the process even when a check fails.
 */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "node_store.h"
#include "shoal_error.h"
#include "shoal_mix.h"
#include "tt.h"

#define HDR NODE_STORE_HEADER_LEN

/* The id of test block n: spread like the placement's hashes. */
static void make_id(unsigned n, uint8_t id[NODE_STORE_ID_LEN])
{
    uint64_t x = n, a = shoal_splitmix64(&x), b = shoal_splitmix64(&x);
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
}

/* The payload of test block n: len bytes that differ from every other block's. */
static uint8_t *make_payload(unsigned n, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    TT_CHECK(p != NULL, "malloc %zu", len);
    uint64_t x = 0x5eed0000ull + n;
    shoal_mix_fill(p, len, &x);
    return p;
}

static void put_block(node_store *s, unsigned n, size_t len, node_store_class cls)
{
    uint8_t id[NODE_STORE_ID_LEN];
    make_id(n, id);
    uint8_t *p = make_payload(n, len);
    TT_OK(node_store_put(s, id, p, len, cls));
    free(p);
}

/* Whether block n is stored and reads back exactly; fails the test on wrong bytes. */
static bool block_reads_back(node_store *s, unsigned n, size_t len)
{
    uint8_t id[NODE_STORE_ID_LEN];
    make_id(n, id);
    uint8_t *want = make_payload(n, len), *got = malloc(len + 1);
    size_t got_len = 0;
    int rc = node_store_get(s, id, got, len + 1, &got_len);
    if (rc == 0) {
        TT_CHECK(got_len == len, "block %u: length %zu, stored %zu", n, got_len, len);
        TT_CHECK(memcmp(got, want, len) == 0, "block %u: bytes differ from what was stored", n);
    } else {
        TT_CHECK(shoal_error_code() == SHOAL_ERR_NOT_FOUND, "block %u: get failed with %s: %s", n,
                 shoal_error_name(shoal_error_code()), shoal_error_message());
    }
    free(want);
    free(got);
    return rc == 0;
}

/* Like block_reads_back, through node_store_map. */
static bool block_maps_back(node_store *s, unsigned n, size_t len)
{
    uint8_t id[NODE_STORE_ID_LEN];
    make_id(n, id);
    node_store_view v;
    int rc = node_store_map(s, id, &v);
    if (rc == 0) {
        uint8_t *want = make_payload(n, len);
        TT_CHECK(v.len == len && memcmp(v.data, want, len) == 0,
                 "block %u: mapped %zu bytes differ from the %zu stored", n, v.len, len);
        free(want);
        node_store_view_release(&v);
    } else {
        TT_CHECK(shoal_error_code() == SHOAL_ERR_NOT_FOUND && v.data == NULL, "block %u: map failed with %s: %s", n,
                 shoal_error_name(shoal_error_code()), shoal_error_message());
    }
    return rc == 0;
}

static char *block_path(const char *dir, unsigned n)
{
    uint8_t id[NODE_STORE_ID_LEN];
    char rel[NODE_STORE_RELPATH_LEN], *path;
    make_id(n, id);
    TT_CHECK(asprintf(&path, "%s/blocks/%s", dir, node_store_relpath(id, rel)) > 0, "asprintf");
    return path;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* What the files under blocks/ add up to (the lock file aside), counted by a walk of the tree. */
typedef struct disk_use {
    uint64_t bytes;
    unsigned files;
    unsigned temps;
} disk_use;

static disk_use walk_use;

static int walk_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    const char *name = path + ftw->base;
    if (flag != FTW_F || strcmp(name, ".lock") == 0)
        return 0;
    walk_use.bytes += (uint64_t)st->st_size;
    walk_use.files++;
    if (strncmp(name, ".tmp-", 5) == 0)
        walk_use.temps++;
    return 0;
}

static disk_use disk_usage(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/blocks", dir);
    walk_use = (disk_use){0};
    TT_CHECK(nftw(path, walk_one, 16, FTW_PHYS) == 0, "walking %s", path);
    return walk_use;
}

/* Opens a store with a free-space reserve of reserve_bp hundredths of a percent. */
static node_store *open_store_full(const char *dir, uint64_t capacity, unsigned near_percent, bool sync, bool direct,
                                   unsigned reserve_bp)
{
    node_store_options o = node_store_options_default();
    o.near_percent = near_percent;
    o.fsync = sync;
    o.direct_io = direct;
    o.free_space_bp = reserve_bp;
    node_store *s = node_store_new(dir, capacity, &o);
    TT_CHECK(s != NULL, "node_store_new(%s): %s", dir, shoal_error_message());
    return s;
}

/* Without a free-space reserve, so that how full this machine's disk is changes nothing. */
static node_store *open_store_io(const char *dir, uint64_t capacity, unsigned near_percent, bool sync, bool direct)
{
    return open_store_full(dir, capacity, near_percent, sync, direct, 0);
}

static node_store *open_store_opts(const char *dir, uint64_t capacity, unsigned near_percent, bool sync)
{
    return open_store_io(dir, capacity, near_percent, sync, true);
}

static node_store *open_store(const char *dir, uint64_t capacity, unsigned near_percent)
{
    return open_store_opts(dir, capacity, near_percent, false);
}

/* A closed store at dir holding blocks 0 and 1 (30000 bytes each), for a test that damages block
 * 0's file and reopens: returns that file's path (the caller frees it). */
static char *two_blocks_closed(const char *dir)
{
    node_store *s = open_store(dir, 1u << 20, 10);
    put_block(s, 0, 30000, NODE_STORE_OWNED);
    put_block(s, 1, 30000, NODE_STORE_OWNED);
    node_store_delete(s);
    return block_path(dir, 0);
}

/* Mounts a file system of `type` on dir in a private mount namespace of this process, so it is gone
 * when the process ends, whatever happens; skips the test where that is not permitted. */
static void private_mount(const char *dir, const char *type, const char *opts)
{
    if (unshare(CLONE_NEWNS) != 0)
        TT_SKIP("unshare(CLONE_NEWNS) to mount a %s: %s", type, strerror(errno));
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        TT_SKIP("making mounts private: %s", strerror(errno));
    if (mount(type, dir, type, 0, opts) != 0)
        TT_SKIP("mount -t %s%s%s %s %s: %s", type, opts ? " -o " : "", opts ? opts : "", type, dir, strerror(errno));
}

/* Closes the store and removes its directory. */
static void finish(node_store *s, char *dir)
{
    node_store_delete(s);
    tt_rmtree(dir);
    free(dir);
}

/* A fresh temporary directory with a private file system of `type` mounted on it. */
static char *mounted_tmpdir(const char *tag, const char *type, const char *opts)
{
    char *dir = tt_tmpdir(tag);
    private_mount(dir, type, opts);
    return dir;
}

/* finish() for a directory from mounted_tmpdir. */
static void finish_mounted(node_store *s, char *dir)
{
    node_store_delete(s);
    umount2(dir, MNT_DETACH);
    tt_rmtree(dir);
    free(dir);
}

/* Stores blocks first .. first+count-1, each of len bytes. */
static void put_blocks(node_store *s, unsigned first, unsigned count, size_t len, node_store_class cls)
{
    for (unsigned i = first; i < first + count; i++)
        put_block(s, i, len, cls);
}

TT_TEST(test_node_store_put_get_round_trip)
{
    char *dir = tt_tmpdir("store");
    node_store *s = open_store(dir, 8u << 20, 10);
    size_t lens[] = {0, 1, 4095, 100000, 4u << 20};
    for (unsigned i = 0; i < 5; i++)
        put_block(s, i, lens[i], NODE_STORE_OWNED);
    for (unsigned i = 0; i < 5; i++) {
        TT_CHECK(block_reads_back(s, i, lens[i]), "block %u of %zu bytes is missing", i, lens[i]);
        char *path = block_path(dir, i);
        struct stat st;
        TT_CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == node_store_file_size(lens[i]),
                 "%s should hold header + %zu bytes", path, lens[i]);
        free(path);
    }

    uint8_t id[NODE_STORE_ID_LEN], small[10];
    size_t len = 0;
    make_id(3, id);
    TT_CHECK(node_store_get(s, id, small, sizeof small, &len) == -1 && shoal_error_code() == SHOAL_ERR_RANGE &&
                 len == lens[3],
             "a too small buffer: want RANGE and the needed length %zu, got %s and %zu", lens[3],
             shoal_error_name(shoal_error_code()), len);
    make_id(99, id);
    TT_CHECK(node_store_get(s, id, small, sizeof small, &len) == -1 && shoal_error_code() == SHOAL_ERR_NOT_FOUND,
             "an unknown block: want NOT_FOUND, got %s", shoal_error_name(shoal_error_code()));

    node_store_stats st;
    node_store_get_stats(s, &st);
    uint64_t want_bytes = 0;
    for (unsigned i = 0; i < 5; i++)
        want_bytes += node_store_file_size(lens[i]);
    TT_CHECK(st.blocks == 5 && st.bytes_used == want_bytes && st.puts == 5 && st.hits == 5 && st.misses == 1,
             "stats: blocks=%llu (5) bytes=%llu (%llu) puts=%llu (5) hits=%llu (5) misses=%llu (1)",
             (unsigned long long)st.blocks, (unsigned long long)st.bytes_used, (unsigned long long)want_bytes,
             (unsigned long long)st.puts, (unsigned long long)st.hits, (unsigned long long)st.misses);
    finish(s, dir);
}

TT_TEST(test_node_store_reopen_keeps_blocks_without_rewriting)
{
    char *dir = tt_tmpdir("store");
    node_store *s = open_store_opts(dir, 4u << 20, 10, true); /* the durable mode a restart relies on */
    struct stat before[12];
    for (unsigned i = 0; i < 12; i++)
        put_block(s, i, 10000 + i, i % 3 ? NODE_STORE_OWNED : NODE_STORE_NEAR);
    node_store_stats st1, st2;
    node_store_get_stats(s, &st1);
    node_store_delete(s);
    for (unsigned i = 0; i < 12; i++) {
        char *path = block_path(dir, i);
        TT_CHECK(stat(path, &before[i]) == 0, "stat %s", path);
        free(path);
    }

    s = open_store(dir, 4u << 20, 10);
    node_store_get_stats(s, &st2);
    TT_CHECK(st2.blocks == 12 && st2.bytes_used == st1.bytes_used && st2.near_blocks == 4 &&
                 st2.near_bytes == st1.near_bytes,
             "after reopen: blocks=%llu (12) bytes=%llu (%llu) near_blocks=%llu (4)", (unsigned long long)st2.blocks,
             (unsigned long long)st2.bytes_used, (unsigned long long)st1.bytes_used,
             (unsigned long long)st2.near_blocks);
    for (unsigned i = 0; i < 12; i++) {
        TT_CHECK(block_reads_back(s, i, 10000 + i), "block %u lost across the restart", i);
        char *path = block_path(dir, i);
        struct stat after;
        TT_CHECK(stat(path, &after) == 0, "stat %s", path);
        TT_CHECK(after.st_ino == before[i].st_ino && after.st_mtim.tv_sec == before[i].st_mtim.tv_sec &&
                     after.st_mtim.tv_nsec == before[i].st_mtim.tv_nsec,
                 "%s was rewritten: inode %llu -> %llu", path, (unsigned long long)before[i].st_ino,
                 (unsigned long long)after.st_ino);
        free(path);
    }
    node_store_get_stats(s, &st2);
    TT_CHECK(st2.puts == 0 && st2.hits == 12, "after reopen: puts=%llu (0) hits=%llu (12)",
             (unsigned long long)st2.puts, (unsigned long long)st2.hits);
    finish(s, dir);
}

TT_TEST(test_node_store_capacity_holds_and_lru_evicts_least_recent)
{
    enum { LEN = 65536, FIT = 8 };
    char *dir = tt_tmpdir("store");
    uint64_t cap = FIT * node_store_file_size(LEN);
    node_store *s = open_store(dir, cap, 10);
    put_blocks(s, 0, FIT, LEN, NODE_STORE_OWNED);
    TT_CHECK(block_reads_back(s, 0, LEN), "block 0 missing before the store was full");
    put_block(s, FIT, LEN, NODE_STORE_OWNED);
    TT_CHECK(block_reads_back(s, 0, LEN), "block 0 was read last, so it must survive the eviction");
    TT_CHECK(!block_reads_back(s, 1, LEN), "block 1 was the least recently used and must be evicted");
    for (unsigned i = 2; i <= FIT; i++)
        TT_CHECK(block_reads_back(s, i, LEN), "block %u must survive: only one block was evicted", i);

    for (unsigned i = FIT + 1; i < FIT + 60; i++) {
        put_block(s, i, LEN - (i % 7) * 1000, NODE_STORE_OWNED);
        node_store_stats st;
        node_store_get_stats(s, &st);
        disk_use du = disk_usage(dir);
        TT_CHECK(st.bytes_used + st.bytes_reserved <= cap && du.bytes <= cap && du.bytes == st.bytes_used,
                 "after put %u: accounted %llu, on disk %llu, cap %llu", i, (unsigned long long)st.bytes_used,
                 (unsigned long long)du.bytes, (unsigned long long)cap);
    }
    node_store_stats st;
    node_store_get_stats(s, &st);
    TT_CHECK(st.evictions >= 55, "60 puts into a full store of 8 evict at least 55 blocks, saw %llu",
             (unsigned long long)st.evictions);
    finish(s, dir);
}

TT_TEST(test_node_store_lru_order_survives_restart)
{
    enum { LEN = 4096, FIT = 4 };
    char *dir = tt_tmpdir("store");
    uint64_t cap = FIT * node_store_file_size(LEN);
    node_store *s = open_store(dir, cap, 10);
    put_blocks(s, 0, FIT, LEN, NODE_STORE_OWNED);
    TT_CHECK(block_reads_back(s, 0, LEN), "block 0 missing");
    node_store_delete(s);

    s = open_store(dir, cap, 10);
    put_block(s, FIT, LEN, NODE_STORE_OWNED);
    TT_CHECK(!block_reads_back(s, 1, LEN), "block 1 was least recently used before the restart: must go first");
    TT_CHECK(block_reads_back(s, 0, LEN), "block 0 was read before the restart: must survive");
    finish(s, dir);
}

/* Damages block 0's file with fn, then checks a read (get or map) misses, removes the file and
 * counts it. */
static void check_damage_is_dropped(void (*damage)(const char *path), bool (*read_back)(node_store *, unsigned, size_t))
{
    char *dir = tt_tmpdir("store");
    node_store *s = open_store(dir, 1u << 20, 10);
    put_block(s, 0, 50000, NODE_STORE_OWNED);
    put_block(s, 1, 50000, NODE_STORE_OWNED);
    char *path = block_path(dir, 0);
    damage(path);

    TT_CHECK(!read_back(s, 0, 50000), "a damaged block must be a miss");
    TT_CHECK(!file_exists(path), "the damaged file %s must be removed", path);
    TT_CHECK(block_reads_back(s, 1, 50000), "the sound block 1 must still read back");
    node_store_stats st;
    node_store_get_stats(s, &st);
    TT_CHECK(st.corrupt_drops == 1 && st.misses == 1 && st.blocks == 1 && st.bytes_used == node_store_file_size(50000),
             "corrupt_drops=%llu (1) misses=%llu (1) blocks=%llu (1) bytes=%llu", (unsigned long long)st.corrupt_drops,
             (unsigned long long)st.misses, (unsigned long long)st.blocks, (unsigned long long)st.bytes_used);
    put_block(s, 0, 50000, NODE_STORE_OWNED);
    TT_CHECK(block_reads_back(s, 0, 50000), "block 0 stored again after the drop must read back");
    free(path);
    finish(s, dir);
}

static void flip_payload_byte(const char *path)
{
    FILE *f = fopen(path, "r+b");
    TT_CHECK(f != NULL, "open %s", path);
    TT_CHECK(fseek(f, HDR + 12345, SEEK_SET) == 0, "seek");
    int c = fgetc(f);
    TT_CHECK(fseek(f, HDR + 12345, SEEK_SET) == 0 && fputc(c ^ 0x01, f) != EOF && fclose(f) == 0, "flip %s", path);
}

static void truncate_half(const char *path)
{
    TT_CHECK(truncate(path, HDR + 25000) == 0, "truncate %s: %s", path, strerror(errno));
}

TT_TEST(test_node_store_corrupt_payload_is_dropped_and_counted)
{
    check_damage_is_dropped(flip_payload_byte, block_reads_back);
}

TT_TEST(test_node_store_map_of_corrupt_block_is_a_miss)
{
    check_damage_is_dropped(flip_payload_byte, block_maps_back);
}

TT_TEST(test_node_store_map_view_outlives_eviction)
{
    enum { LEN = 100000, FIT = 3 };
    char *dir = tt_tmpdir("store");
    node_store *s = open_store(dir, FIT * node_store_file_size(LEN), 10);
    put_block(s, 0, LEN, NODE_STORE_OWNED);
    TT_CHECK(block_maps_back(s, 0, LEN), "block 0 must map with its stored bytes");
    uint8_t id[NODE_STORE_ID_LEN];
    make_id(0, id);
    node_store_view v;
    TT_OK(node_store_map(s, id, &v));
    put_blocks(s, 1, FIT, LEN, NODE_STORE_OWNED);
    TT_CHECK(!node_store_contains(s, id, NULL, NULL), "block 0 should have been evicted by %d newer blocks", FIT);
    uint8_t *want = make_payload(0, LEN);
    TT_CHECK(v.len == LEN && memcmp(v.data, want, LEN) == 0, "a view must keep its bytes after its block is evicted");
    free(want);
    node_store_view_release(&v);
    TT_CHECK(v.data == NULL && v.map == NULL, "release empties the view");
    node_store_stats st;
    node_store_get_stats(s, &st);
    TT_CHECK(st.hits == 2, "two maps, two hits: saw %llu", (unsigned long long)st.hits);
    finish(s, dir);
}

TT_TEST(test_node_store_truncated_block_is_a_miss)
{
    check_damage_is_dropped(truncate_half, block_reads_back);
}

TT_TEST(test_node_store_open_drops_truncated_block)
{
    char *dir = tt_tmpdir("store"), *path = two_blocks_closed(dir);
    TT_CHECK(truncate(path, 100) == 0, "truncate %s", path);

    node_store *s = open_store(dir, 1u << 20, 10);
    node_store_stats st;
    node_store_get_stats(s, &st);
    TT_CHECK(!file_exists(path), "the truncated %s must be removed at open", path);
    TT_CHECK(st.blocks == 1 && st.corrupt_drops == 1, "blocks=%llu (1) corrupt_drops=%llu (1)",
             (unsigned long long)st.blocks, (unsigned long long)st.corrupt_drops);
    TT_CHECK(block_reads_back(s, 1, 30000), "the sound block must survive");
    free(path);
    finish(s, dir);
}

TT_TEST(test_node_store_open_removes_leftover_temp_files)
{
    char *dir = tt_tmpdir("store");
    node_store *s = open_store(dir, 1u << 20, 10);
    put_block(s, 0, 20000, NODE_STORE_OWNED);
    node_store_delete(s);
    /* What a crash between create and rename leaves: a temporary file beside the block. */
    char *path = block_path(dir, 0), *tmp;
    size_t slash = strrchr(path, '/') - path;
    TT_CHECK(asprintf(&tmp, "%.*s/.tmp-%s-7", (int)slash, path, path + slash + 1) > 0, "asprintf");
    FILE *f = fopen(tmp, "wb");
    TT_CHECK(f != NULL && fwrite("partial", 1, 7, f) == 7 && fclose(f) == 0, "create %s", tmp);

    s = open_store(dir, 1u << 20, 10);
    TT_CHECK(!file_exists(tmp), "leftover %s must be removed at open", tmp);
    TT_CHECK(block_reads_back(s, 0, 20000), "the complete block beside it must survive");
    disk_use du = disk_usage(dir);
    TT_CHECK(du.files == 1 && du.temps == 0, "files=%u (1) temps=%u (0)", du.files, du.temps);
    free(tmp);
    free(path);
    finish(s, dir);
}

typedef struct worker {
    node_store *s;
    unsigned seed;
    unsigned bad;
    unsigned hits;
} worker;

enum { CONC_IDS = 64, CONC_FIT = 12, CONC_OPS = 300 };

static size_t conc_len(unsigned n) { return 8192 + (n % 5) * 1000; }

static void *worker_run(void *arg)
{
    worker *w = arg;
    uint64_t x = w->seed;
    uint8_t *buf = malloc(conc_len(4));
    for (unsigned op = 0; op < CONC_OPS; op++) {
        unsigned n = (unsigned)(shoal_splitmix64(&x) % CONC_IDS);
        uint8_t id[NODE_STORE_ID_LEN];
        make_id(n, id);
        uint8_t *p = make_payload(n, conc_len(n));
        size_t len = 0;
        if (shoal_splitmix64(&x) % 2) {
            if (node_store_put(w->s, id, p, conc_len(n), n % 4 ? NODE_STORE_OWNED : NODE_STORE_NEAR) != 0 &&
                shoal_error_code() != SHOAL_ERR_NOSPACE)
                w->bad++;
        } else if (node_store_get(w->s, id, buf, conc_len(4), &len) == 0) {
            w->hits++;
            if (len != conc_len(n) || memcmp(buf, p, len) != 0)
                w->bad++;
        } else if (shoal_error_code() != SHOAL_ERR_NOT_FOUND) {
            w->bad++;
        }
        free(p);
    }
    free(buf);
    return NULL;
}

TT_TEST(test_node_store_concurrent_puts_and_gets_stay_consistent)
{
    char *dir = tt_tmpdir("store");
    uint64_t cap = CONC_FIT * node_store_file_size(conc_len(4));
    node_store *s = open_store(dir, cap, 25);
    worker w[8];
    pthread_t th[8];
    for (unsigned i = 0; i < 8; i++) {
        w[i] = (worker){.s = s, .seed = 1000 + i};
        TT_CHECK(pthread_create(&th[i], NULL, worker_run, &w[i]) == 0, "pthread_create");
    }
    /* Sample the accounting while the workers run: the cap must hold at every look. */
    bool joined[8] = {false};
    unsigned samples = 0, running = 8;
    while (running) {
        node_store_stats st;
        node_store_get_stats(s, &st);
        TT_CHECK(st.bytes_used + st.bytes_reserved <= cap && st.near_bytes <= st.near_capacity,
                 "used %llu + reserved %llu > cap %llu, or near %llu > %llu", (unsigned long long)st.bytes_used,
                 (unsigned long long)st.bytes_reserved, (unsigned long long)cap, (unsigned long long)st.near_bytes,
                 (unsigned long long)st.near_capacity);
        samples++;
        sched_yield();
        running = 0;
        for (unsigned i = 0; i < 8; i++) {
            if (!joined[i])
                joined[i] = pthread_tryjoin_np(th[i], NULL) == 0;
            running += !joined[i];
        }
    }
    unsigned hits = 0;
    for (unsigned i = 0; i < 8; i++) {
        TT_CHECK(w[i].bad == 0, "worker %u saw %u wrong results", i, w[i].bad);
        hits += w[i].hits;
    }
    node_store_stats st;
    node_store_get_stats(s, &st);
    disk_use du = disk_usage(dir);
    TT_CHECK(du.bytes == st.bytes_used && du.files == st.blocks && du.temps == 0 && st.bytes_reserved == 0,
             "at rest: disk %llu bytes in %u files (%u temp), accounted %llu in %llu blocks",
             (unsigned long long)du.bytes, du.files, du.temps, (unsigned long long)st.bytes_used,
             (unsigned long long)st.blocks);
    TT_CHECK(hits > 0 && st.hits == hits, "hits: workers %u, store %llu", hits, (unsigned long long)st.hits);
    unsigned stored = 0;
    for (unsigned n = 0; n < CONC_IDS; n++)
        stored += block_reads_back(s, n, conc_len(n));
    TT_CHECK(stored == st.blocks, "%u blocks read back, %llu accounted", stored, (unsigned long long)st.blocks);
    tt_note("%u samples of the accounting, %u hits, %llu evictions", samples, hits, (unsigned long long)st.evictions);
    finish(s, dir);
}

TT_TEST(test_node_store_block_larger_than_capacity_is_refused)
{
    char *dir = tt_tmpdir("store");
    node_store *s = open_store(dir, 1u << 20, 10);
    put_block(s, 0, 1000, NODE_STORE_OWNED);
    uint8_t id[NODE_STORE_ID_LEN];
    make_id(1, id);
    uint8_t *p = make_payload(1, 1u << 20);
    TT_CHECK(node_store_put(s, id, p, 1u << 20, NODE_STORE_OWNED) == -1 && shoal_error_code() == SHOAL_ERR_RANGE,
             "a block over the capacity: want RANGE, got %s", shoal_error_name(shoal_error_code()));
    TT_CHECK(strstr(shoal_error_message(), "larger than the store capacity") != NULL, "message: %s",
             shoal_error_message());
    free(p);
    TT_CHECK(block_reads_back(s, 0, 1000), "the refused put must not evict anything");
    disk_use du = disk_usage(dir);
    TT_CHECK(du.files == 1, "files on disk: %u (1)", du.files);
    finish(s, dir);
}

/* The bytes the file system under dir has free for its users (f_bavail), and its size. */
static uint64_t fs_free(const char *dir, uint64_t *size)
{
    struct statvfs v;
    TT_CHECK(statvfs(dir, &v) == 0, "statvfs %s: %s", dir, strerror(errno));
    if (size)
        *size = (uint64_t)v.f_blocks * v.f_frsize;
    return (uint64_t)v.f_bavail * v.f_frsize;
}

/* Fills the file system under dir with a file of its own (not the store's) until it is full, or
 * until `leave` bytes are left; returns its path (free it). */
static char *fill_disk(const char *dir, uint64_t leave)
{
    char *path;
    TT_CHECK(asprintf(&path, "%s/filler", dir) > 0, "asprintf");
    FILE *f = fopen(path, "ab");
    TT_CHECK(f != NULL, "create %s", path);
    static uint8_t chunk[4096];
    while (fs_free(dir, NULL) > leave && fwrite(chunk, 1, sizeof chunk, f) == sizeof chunk && fflush(f) == 0)
        ;
    fclose(f);
    return path;
}

/* --cache-size larger than the disk, no reserve: a put that meets ENOSPC evicts least recently
 * used blocks and writes again, so every put lands and the disk never holds a partial file. */
TT_TEST(test_node_store_full_disk_evicts_and_retries_the_put)
{
    char *dir = mounted_tmpdir("store-full", "tmpfs", "size=2m");

    enum { LEN = 256 * 1024, PUTS = 20 };
    node_store *s = open_store(dir, 64u << 20, 10);
    for (unsigned i = 0; i < PUTS; i++) {
        uint8_t id[NODE_STORE_ID_LEN];
        make_id(i, id);
        uint8_t *p = make_payload(i, LEN);
        int rc = node_store_put(s, id, p, LEN, NODE_STORE_OWNED);
        TT_CHECK(rc == 0, "put %u of %u blocks of 256 KiB on 2 MiB failed: %s (%s)", i, PUTS,
                 shoal_error_name(shoal_error_code()), shoal_error_message());
        free(p);
    }
    disk_use du = disk_usage(dir);
    node_store_stats st;
    node_store_get_stats(s, &st);
    tt_note("%u puts of 256 KiB on 2 MiB: %llu blocks kept, %llu evicted for the full disk", PUTS,
            (unsigned long long)st.blocks, (unsigned long long)st.space_evictions);
    TT_CHECK(du.temps == 0 && du.files == st.blocks && du.bytes == st.bytes_used,
             "on disk %u files (%u temporary) of %llu bytes; the store accounts %llu blocks of %llu bytes", du.files,
             du.temps, (unsigned long long)du.bytes, (unsigned long long)st.blocks,
             (unsigned long long)st.bytes_used);
    TT_CHECK(st.write_errors == 0 && st.puts == PUTS, "write_errors=%llu (0) puts=%llu (%u)",
             (unsigned long long)st.write_errors, (unsigned long long)st.puts, PUTS);
    TT_CHECK(st.space_evictions > 0 && st.space_evictions == st.evictions && st.blocks + st.evictions == PUTS,
             "space_evictions=%llu evictions=%llu blocks=%llu: every block not kept must be an eviction for space",
             (unsigned long long)st.space_evictions, (unsigned long long)st.evictions, (unsigned long long)st.blocks);
    TT_CHECK(block_reads_back(s, PUTS - 1, LEN), "the last block put must be kept");
    TT_CHECK(!block_reads_back(s, 0, LEN), "the least recently used block must be the one evicted");
    finish_mounted(s, dir);
}

/* A disk filled by something else: the put that meets ENOSPC evicts what the store holds, tries
 * once more, and then fails with NOSPACE, leaving no partial file. */
TT_TEST(test_node_store_disk_full_of_other_files_fails_the_put_after_one_retry)
{
    char *dir = mounted_tmpdir("store-other", "tmpfs", "size=2m");
    enum { SMALL = 16 * 1024, LEN = 512 * 1024 };
    node_store *s = open_store(dir, 64u << 20, 10);
    put_blocks(s, 0, 4, SMALL, NODE_STORE_OWNED);
    char *filler = fill_disk(dir, 0);

    uint8_t id[NODE_STORE_ID_LEN];
    make_id(100, id);
    uint8_t *p = make_payload(100, LEN);
    int rc = node_store_put(s, id, p, LEN, NODE_STORE_OWNED);
    TT_CHECK(rc == -1 && shoal_error_code() == SHOAL_ERR_NOSPACE, "a put on a disk full of other files: rc=%d %s (%s)",
             rc, shoal_error_name(shoal_error_code()), shoal_error_message());
    disk_use du = disk_usage(dir);
    node_store_stats st;
    node_store_get_stats(s, &st);
    TT_CHECK(du.temps == 0 && du.files == st.blocks, "after the failed put: %u files (%llu), %u temporary", du.files,
             (unsigned long long)st.blocks, du.temps);
    TT_CHECK(st.write_errors == 1 && st.space_evictions == 4 && st.blocks == 0 && st.bytes_reserved == 0,
             "write_errors=%llu (1) space_evictions=%llu (4: 64 KiB freed for 512 KiB) blocks=%llu (0) reserved=%llu",
             (unsigned long long)st.write_errors, (unsigned long long)st.space_evictions,
             (unsigned long long)st.blocks, (unsigned long long)st.bytes_reserved);
    /* Room again: the next put lands. */
    TT_CHECK(unlink(filler) == 0, "rm %s", filler);
    TT_OK(node_store_put(s, id, p, LEN, NODE_STORE_OWNED));
    TT_CHECK(block_reads_back(s, 100, LEN), "the block put once the disk had room again must read back");
    free(p);
    free(filler);
    finish_mounted(s, dir);
}

/* --cache-size far above the disk with a 25 % reserve: every put lands, the file system keeps a
 * quarter free after each one, least recently used blocks go first, and the store does not evict
 * much more than the reserve asks. */
TT_TEST(test_node_store_free_space_reserve_holds_by_evicting_lru_blocks)
{
    char *dir = mounted_tmpdir("store-reserve", "tmpfs", "size=4m");
    enum { LEN = 100000, PUTS = 60 };
    node_store *s = open_store_full(dir, 64u << 20, 10, false, true, 2500);
    uint64_t size = 0;
    fs_free(dir, &size);
    for (unsigned i = 0; i < PUTS; i++) {
        put_block(s, i, LEN, NODE_STORE_OWNED);
        uint64_t free_now = fs_free(dir, NULL);
        TT_CHECK(free_now * 4 >= size, "after put %u: %llu bytes free of %llu, under the 25 %% reserve", i,
                 (unsigned long long)free_now, (unsigned long long)size);
        if (i % 5 == 0) /* block 0 is kept recent, so it must outlive older blocks */
            TT_CHECK(block_reads_back(s, 0, LEN), "block 0, read every 5 puts, is gone at put %u", i);
    }
    node_store_stats st;
    node_store_get_stats(s, &st);
    tt_note("%u puts of %u bytes on %llu bytes, 25 %% reserve: %llu kept, %llu evicted for space", PUTS, LEN,
            (unsigned long long)size, (unsigned long long)st.blocks, (unsigned long long)st.space_evictions);
    TT_CHECK(st.write_errors == 0 && st.puts == PUTS, "write_errors=%llu puts=%llu", (unsigned long long)st.write_errors,
             (unsigned long long)st.puts);
    TT_CHECK(st.space_evictions > 0 && st.space_evictions == st.evictions, "space_evictions=%llu evictions=%llu",
             (unsigned long long)st.space_evictions, (unsigned long long)st.evictions);
    TT_CHECK(block_reads_back(s, 0, LEN), "block 0, read every 5 puts, must be kept");
    TT_CHECK(!block_reads_back(s, 1, LEN), "block 1 was the least recently used: it must be evicted");
    TT_CHECK(block_reads_back(s, PUTS - 1, LEN), "the last block put must be kept");
    /* Not too eager: what is kept fills most of what the reserve leaves (an eighth of the reserve
     * of slack, a block of rounding). */
    TT_CHECK(st.bytes_used * 8 >= size * 5, "only %llu bytes kept on %llu with a 25 %% reserve",
             (unsigned long long)st.bytes_used, (unsigned long long)size);
    finish_mounted(s, dir);
}

/* A file system filled by something else while the store is idle: node_store_maintain gives space
 * back down to the reserve. */
TT_TEST(test_node_store_maintain_evicts_when_other_files_eat_the_reserve)
{
    char *dir = mounted_tmpdir("store-eaten", "tmpfs", "size=4m");
    enum { LEN = 100000 };
    node_store *s = open_store_full(dir, 64u << 20, 10, false, true, 1000);
    uint64_t size = 0;
    fs_free(dir, &size);
    put_blocks(s, 0, 16, LEN, NODE_STORE_OWNED); /* about 1.6 MB of 4 MiB */
    char *filler = fill_disk(dir, size / 20);   /* others leave 5 %, under the 10 % reserve */
    node_store_maintain(s);
    uint64_t free_now = fs_free(dir, NULL);
    node_store_stats st;
    node_store_get_stats(s, &st);
    TT_CHECK(free_now * 10 >= size, "after maintain: %llu bytes free of %llu, under the 10 %% reserve",
             (unsigned long long)free_now, (unsigned long long)size);
    TT_CHECK(st.space_evictions > 0 && st.space_evictions < 16, "space_evictions=%llu (some, not all 16)",
             (unsigned long long)st.space_evictions);
    TT_CHECK(block_reads_back(s, 15, LEN), "the most recent block must be kept");
    TT_CHECK(unlink(filler) == 0, "rm %s", filler);
    free(filler);
    finish_mounted(s, dir);
}

/* The reserve never makes a near put evict an owned block: it is refused instead. */
TT_TEST(test_node_store_near_put_never_evicts_owned_blocks_for_the_reserve)
{
    char *dir = mounted_tmpdir("store-near-reserve", "tmpfs", "size=2m");
    enum { LEN = 100000 };
    node_store *s = open_store_full(dir, 64u << 20, 50, false, true, 2000);
    put_blocks(s, 0, 5, LEN, NODE_STORE_OWNED);
    uint64_t size = 0;
    fs_free(dir, &size);
    char *filler = fill_disk(dir, size / 5 + 50000); /* the 20 % reserve and half a block are left */
    node_store_maintain(s); /* the store learns of the filler; nothing to evict yet */
    node_store_stats before, after;
    node_store_get_stats(s, &before);
    uint8_t id[NODE_STORE_ID_LEN];
    make_id(1000, id);
    uint8_t *p = make_payload(1000, LEN);
    int rc = node_store_put(s, id, p, LEN, NODE_STORE_NEAR);
    node_store_get_stats(s, &after);
    TT_CHECK(rc == -1 && shoal_error_code() == SHOAL_ERR_NOSPACE, "a near put at the reserve: rc=%d %s", rc,
             shoal_error_name(shoal_error_code()));
    TT_CHECK(after.blocks == before.blocks && after.evictions == before.evictions,
             "the refused near put evicted %llu owned blocks", (unsigned long long)(after.evictions - before.evictions));
    TT_CHECK(before.evictions == 0, "maintain evicted %llu blocks above the reserve", (unsigned long long)before.evictions);
    TT_CHECK(unlink(filler) == 0, "rm %s", filler);
    free(filler);
    free(p);
    finish_mounted(s, dir);
}

TT_TEST(test_node_store_near_share_never_exceeds_its_fraction)
{
    enum { LEN = 10000, FIT = 10 };
    char *dir = tt_tmpdir("store");
    uint64_t cap = FIT * node_store_file_size(LEN);
    node_store *s = open_store(dir, cap, 20); /* room for 2 near blocks */
    node_store_stats st;
    for (unsigned i = 0; i < 6; i++) {
        put_block(s, i, LEN, NODE_STORE_NEAR);
        node_store_get_stats(s, &st);
        TT_CHECK(st.near_bytes <= st.near_capacity && st.near_blocks <= 2,
                 "after near put %u: near %llu bytes in %llu blocks, share %llu", i, (unsigned long long)st.near_bytes,
                 (unsigned long long)st.near_blocks, (unsigned long long)st.near_capacity);
    }
    TT_CHECK(block_reads_back(s, 4, LEN) && block_reads_back(s, 5, LEN), "the two newest near blocks must be kept");

    /* Owned blocks fill the store and push the near blocks out before any owned one. */
    put_blocks(s, 100, FIT, LEN, NODE_STORE_OWNED);
    node_store_get_stats(s, &st);
    TT_CHECK(st.near_blocks == 0 && st.blocks == FIT, "owned blocks evict near ones first: near=%llu blocks=%llu",
             (unsigned long long)st.near_blocks, (unsigned long long)st.blocks);
    for (unsigned i = 100; i < 100 + FIT; i++)
        TT_CHECK(block_reads_back(s, i, LEN), "owned block %u must be kept", i);

    /* A near block never evicts an owned one. */
    uint8_t id[NODE_STORE_ID_LEN];
    make_id(50, id);
    uint8_t *p = make_payload(50, LEN);
    TT_CHECK(node_store_put(s, id, p, LEN, NODE_STORE_NEAR) == -1 && shoal_error_code() == SHOAL_ERR_NOSPACE,
             "a near put into a store full of owned blocks: want NOSPACE, got %s",
             shoal_error_name(shoal_error_code()));
    free(p);
    node_store_get_stats(s, &st);
    TT_CHECK(st.blocks == FIT && st.near_blocks == 0, "blocks=%llu near=%llu", (unsigned long long)st.blocks,
             (unsigned long long)st.near_blocks);
    finish(s, dir);
}

TT_TEST(test_node_store_owned_put_promotes_near_block)
{
    char *dir = tt_tmpdir("store");
    node_store *s = open_store(dir, 1u << 20, 10);
    put_block(s, 0, 5000, NODE_STORE_NEAR);
    put_block(s, 0, 5000, NODE_STORE_OWNED);
    uint8_t id[NODE_STORE_ID_LEN];
    make_id(0, id);
    node_store_class cls = NODE_STORE_NEAR;
    size_t len = 0;
    TT_CHECK(node_store_contains(s, id, &len, &cls) && cls == NODE_STORE_OWNED && len == 5000,
             "after an owned put the block is owned (class %d, length %zu)", (int)cls, len);
    node_store_delete(s);

    s = open_store(dir, 1u << 20, 10);
    node_store_stats st;
    node_store_get_stats(s, &st);
    TT_CHECK(node_store_contains(s, id, NULL, &cls) && cls == NODE_STORE_OWNED && st.near_blocks == 0,
             "the promotion must survive a restart (class %d, near blocks %llu)", (int)cls,
             (unsigned long long)st.near_blocks);
    TT_CHECK(block_reads_back(s, 0, 5000), "the promoted block must still pass its checksum");
    finish(s, dir);
}

/* A draining node lists its owned blocks: every stored block of the class, most recent first,
 * none of the other class, none being written. */
TT_TEST(test_node_store_list_gives_the_ids_of_one_class_most_recent_first)
{
    char *dir = tt_tmpdir("store");
    node_store *s = open_store(dir, 1u << 20, 50);
    uint8_t(*ids)[NODE_STORE_ID_LEN] = (void *)1;
    size_t n = 99;
    TT_OK(node_store_list(s, NODE_STORE_OWNED, &ids, &n));
    TT_CHECK(ids == NULL && n == 0, "an empty store lists %zu blocks", n);
    for (unsigned i = 0; i < 3; i++)
        put_block(s, i, 1000 + i, NODE_STORE_OWNED);
    put_block(s, 10, 500, NODE_STORE_NEAR);
    put_block(s, 11, 500, NODE_STORE_NEAR);
    TT_CHECK(block_reads_back(s, 0, 1000), "block 0"); /* block 0 becomes the most recent */
    TT_OK(node_store_list(s, NODE_STORE_OWNED, &ids, &n));
    uint8_t want[NODE_STORE_ID_LEN];
    unsigned order[] = {0, 2, 1};
    TT_CHECK(n == 3, "%zu owned blocks listed, 3 stored", n);
    for (unsigned k = 0; k < 3; k++) {
        make_id(order[k], want);
        TT_CHECK(memcmp(ids[k], want, NODE_STORE_ID_LEN) == 0, "owned entry %u is not block %u", k, order[k]);
    }
    free(ids);
    TT_OK(node_store_list(s, NODE_STORE_NEAR, &ids, &n));
    make_id(11, want);
    TT_CHECK(n == 2 && memcmp(ids[0], want, NODE_STORE_ID_LEN) == 0, "near blocks: %zu listed", n);
    free(ids);
    TT_CHECK(node_store_list(s, (node_store_class)7, &ids, &n) == -1 && shoal_error_code() == SHOAL_ERR_INVAL,
             "an unknown class is refused");
    finish(s, dir);
}

TT_TEST(test_node_store_second_open_of_same_dir_is_refused)
{
    char *dir = tt_tmpdir("store");
    node_store *s = open_store(dir, 1u << 20, 10);
    node_store *again = node_store_new(dir, 1u << 20, NULL);
    TT_CHECK(again == NULL && strstr(shoal_error_message(), "in use") != NULL,
             "a second store on one directory must be refused, got %p: %s", (void *)again, shoal_error_message());
    node_store_delete(s);
    s = node_store_new(dir, 1u << 20, NULL);
    TT_CHECK(s != NULL, "after delete the directory opens again: %s", shoal_error_message());
    finish(s, dir);
}


/* Pages of a file in the page cache, by mincore on a mapping (which faults nothing in). */
static size_t resident_pages(const char *path)
{
    int fd = open(path, O_RDONLY);
    TT_CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    struct stat st;
    TT_CHECK(fstat(fd, &st) == 0, "fstat %s", path);
    size_t page = (size_t)sysconf(_SC_PAGESIZE), n = ((size_t)st.st_size + page - 1) / page, in = 0;
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    TT_CHECK(m != MAP_FAILED, "mmap %s: %s", path, strerror(errno));
    unsigned char *vec = malloc(n);
    TT_CHECK(mincore(m, (size_t)st.st_size, vec) == 0, "mincore %s: %s", path, strerror(errno));
    for (size_t i = 0; i < n; i++)
        in += vec[i] & 1;
    free(vec);
    munmap(m, (size_t)st.st_size);
    close(fd);
    return in;
}

/* Both write paths give the same files: exact sizes (a direct write is padded to 4 KiB and cut
 * back), the same bytes through get and map. A direct write leaves nothing in the page cache on a
 * disk file system (the point of it); a buffered one leaves the block there. (Blocks under 256 KiB
 * are written buffered either way; the sizes cover both sides of that.) */
TT_TEST(test_node_store_direct_and_buffered_writes_read_back_alike)
{
    /* and blocks larger than the 4 MiB + 4 KiB a direct write takes at once */
    size_t lens[] = {0, 1, 47, 4048, 4049, 4096, 100000, (256u << 10) - 1, 256u << 10, (1u << 20) + 4049,
                     4u << 20, (4u << 20) + 4048, (4u << 20) + 4049, (9u << 20) + 123};
    enum { N = sizeof lens / sizeof lens[0] };
    for (int direct = 1; direct >= 0; direct--) {
        char *dir = tt_tmpdir("store-io");
        struct statfs fs;
        TT_CHECK(statfs(dir, &fs) == 0, "statfs %s", dir);
        bool disk = fs.f_type == 0xEF53 /* ext2/3/4 */ || fs.f_type == 0x58465342 /* xfs */ ||
                    fs.f_type == (typeof(fs.f_type))0x9123683E /* btrfs */;
        node_store *s = open_store_io(dir, 48u << 20, 10, false, direct);
        for (unsigned i = 0; i < N; i++)
            put_block(s, i, lens[i], NODE_STORE_OWNED);
        size_t resident = 0;
        unsigned big = 0; /* the 4 MiB block's index */
        for (unsigned i = 0; i < N; i++) {
            char *path = block_path(dir, i);
            struct stat st;
            TT_CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == node_store_file_size(lens[i]),
                     "direct=%d: %s holds %lld bytes, want header + %zu", direct, path, (long long)st.st_size,
                     lens[i]);
            if (lens[i] == 4u << 20) {
                resident = resident_pages(path);
                big = i;
            }
            free(path);
        }
        if (disk && direct)
            TT_CHECK(resident == 0, "a direct write left %zu pages of a 4 MiB block in the page cache", resident);
        else if (disk) {
            /* The control: the count sees a block's pages. Another process dropping the page cache
             * (a benchmark's echo 1 > drop_caches) can empty it after a buffered write, so a block
             * read back through the page cache stands in for it then. */
            if (resident == 0) {
                char *path = block_path(dir, big);
                TT_CHECK(block_reads_back(s, big, lens[big]), "direct=%d: the 4 MiB block does not read back", direct);
                resident = resident_pages(path);
                free(path);
            }
            TT_CHECK(resident > 0, "a buffered write left no page of a 4 MiB block in the page cache");
        } else
            tt_note("%s is not a disk file system (f_type %#lx): page-cache residency not checked", dir,
                    (unsigned long)fs.f_type);
        for (unsigned i = 0; i < N; i++) {
            TT_CHECK(block_reads_back(s, i, lens[i]), "direct=%d: block %u of %zu bytes is missing", direct, i, lens[i]);
            TT_CHECK(block_maps_back(s, i, lens[i]), "direct=%d: block %u of %zu bytes does not map", direct, i, lens[i]);
        }
        node_store_stats st;
        node_store_get_stats(s, &st);
        TT_CHECK(st.write_errors == 0 && st.blocks == N, "direct=%d: write_errors=%llu blocks=%llu", direct,
                 (unsigned long long)st.write_errors, (unsigned long long)st.blocks);
        /* and the files are sound for a store opened on them later */
        node_store_delete(s);
        s = open_store_io(dir, 48u << 20, 10, false, !direct);
        for (unsigned i = 0; i < N; i++)
            TT_CHECK(block_reads_back(s, i, lens[i]), "direct=%d: block %u lost at reopen", direct, i);
        finish(s, dir);
    }
}

static node_store_stats stats_of(node_store *s);

/* A framed put (the payload NODE_STORE_HEADER_LEN bytes past a page boundary, those bytes the
 * store's scratch, as the read path's block buffers are laid out) is written straight from the
 * caller's memory: the store puts the header in the scratch and copies only the payload's last
 * partial 4 KiB unit and the chunk sums into its own aligned buffer. The file is the same as an
 * ordinary put's, and the payload is untouched. An unaligned frame is copied whole, as before, and
 * its scratch left alone. */
TT_TEST(test_node_store_framed_put_writes_the_block_from_the_callers_memory)
{
    char *dir = tt_tmpdir("store-framed");
    int probe = open(dir, O_RDWR | O_TMPFILE | O_DIRECT, 0600);
    if (probe < 0) {
        finish(NULL, dir);
        TT_SKIP("the file system of the test directory refuses O_DIRECT: nothing is written directly here");
    }
    close(probe);
    node_store *s = open_store_io(dir, 96u << 20, 10, false, true);
    /* 48 + len on a 4 KiB boundary (no partial unit), and on both sides of it */
    size_t lens[] = {256u << 10, (1u << 20) + 4049, (4u << 20) - HDR, 4u << 20, (4u << 20) + 4049, (9u << 20) + 123};
    enum { N = sizeof lens / sizeof lens[0] };
    for (unsigned i = 0; i <= N; i++) {
        bool aligned = i < N; /* the last: the same block size from an unaligned frame */
        size_t len = aligned ? lens[i] : 4u << 20;
        uint8_t *mem = NULL;
        TT_CHECK(posix_memalign((void **)&mem, 4096, HDR + len + 8) == 0, "posix_memalign %zu", len);
        uint8_t *frame = aligned ? mem : mem + 8;
        uint8_t *payload = make_payload(i, len);
        memset(frame, 0xA5, HDR);
        memcpy(frame + HDR, payload, len);
        uint8_t id[NODE_STORE_ID_LEN];
        make_id(i, id);
        uint64_t before = stats_of(s).direct_copied_bytes;
        TT_OK(node_store_put_framed(s, id, frame, len, NODE_STORE_OWNED, NULL));
        uint64_t copied = stats_of(s).direct_copied_bytes - before, size = node_store_file_size(len);
        uint64_t want = aligned ? size - (HDR + len) / 4096 * 4096 : size;
        TT_CHECK(copied == want, "block of %zu bytes from %s frame: %llu bytes copied, want %llu (of %llu)", len,
                 aligned ? "an aligned" : "an unaligned", (unsigned long long)copied, (unsigned long long)want,
                 (unsigned long long)size);
        TT_CHECK(memcmp(frame + HDR, payload, len) == 0, "the put changed the payload of %zu bytes", len);
        char *path = block_path(dir, i);
        uint8_t head[HDR];
        FILE *f = fopen(path, "rb");
        TT_CHECK(f != NULL && fread(head, 1, HDR, f) == HDR, "reading the header of %s", path);
        fclose(f);
        uint8_t untouched[HDR];
        memset(untouched, 0xA5, HDR);
        TT_CHECK(memcmp(frame, aligned ? head : untouched, HDR) == 0, "the scratch of %s frame %s",
                 aligned ? "an aligned" : "an unaligned", aligned ? "does not hold the header" : "was written");
        struct stat st;
        TT_CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == size, "%s holds %lld bytes, want %llu", path,
                 (long long)st.st_size, (unsigned long long)size);
        free(path);
        free(payload);
        free(mem);
    }
    for (unsigned i = 0; i <= N; i++) {
        size_t len = i < N ? lens[i] : 4u << 20;
        TT_CHECK(block_reads_back(s, i, len), "block %u of %zu bytes is missing", i, len);
        TT_CHECK(block_maps_back(s, i, len), "block %u of %zu bytes does not map", i, len);
    }
    node_store_delete(s);
    s = open_store_io(dir, 96u << 20, 10, false, false);
    for (unsigned i = 0; i <= N; i++)
        TT_CHECK(block_reads_back(s, i, i < N ? lens[i] : 4u << 20), "block %u lost at reopen", i);
    finish(s, dir);
}

/* A file system without O_DIRECT (ramfs refuses it at open, after creating the file): every put
 * still lands, written buffered, and no temporary file is left behind. */
TT_TEST(test_node_store_file_system_refusing_direct_io_gets_buffered_writes)
{
    char *dir = mounted_tmpdir("store-ramfs", "ramfs", NULL);
    int probe = open(dir, O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_TMPFILE, 0600);
    if (probe >= 0) {
        close(probe);
        TT_SKIP("this kernel's ramfs accepts O_DIRECT: nothing refuses it here");
    }
    node_store *s = open_store(dir, 16u << 20, 10);
    enum { LEN = 1u << 20 }; /* large enough to be written directly where the file system allows */
    for (unsigned i = 0; i < 4; i++)
        put_block(s, i, LEN + i, NODE_STORE_OWNED);
    for (unsigned i = 0; i < 4; i++)
        TT_CHECK(block_reads_back(s, i, LEN + i), "block %u is missing on a file system without O_DIRECT", i);
    disk_use du = disk_usage(dir);
    node_store_stats st;
    node_store_get_stats(s, &st);
    TT_CHECK(du.files == 4 && du.temps == 0 && st.write_errors == 0, "files=%u (4) temps=%u (0) write_errors=%llu (0)",
             du.files, du.temps, (unsigned long long)st.write_errors);
    finish_mounted(s, dir);
}

/* A checksum fed while the bytes arrive (in uneven pieces, restarted once as a retried transfer
 * does) is the one the store computes itself; one fed short is refused by node_store_sum_final;
 * a wrong one is written but caught at the first read, and the block dropped as corrupt. */
TT_TEST(test_node_store_checksum_fed_while_arriving_matches_the_stores_own)
{
    char *dir = tt_tmpdir("store-sum");
    node_store *s = open_store(dir, 16u << 20, 10);
    enum { LEN = 1000003 };
    uint8_t id[NODE_STORE_ID_LEN];
    make_id(1, id);
    uint8_t *p = make_payload(1, LEN);
    node_store_sum *sum = node_store_sum_new(id, LEN);
    TT_CHECK(sum != NULL, "node_store_sum_new: %s", shoal_error_message());
    node_store_sum_update(sum, p, 5000);
    node_store_sum_reset(sum); /* the transfer starts again */
    size_t pieces[] = {1, 7, 4093, 65536, 12345};
    size_t at = 0;
    for (unsigned i = 0; at < LEN; i++) {
        size_t n = i < 5 ? pieces[i] : 16384;
        if (n > LEN - at)
            n = LEN - at;
        TT_CHECK(!node_store_sum_final(sum), "a sum of %zu of %d bytes counts as final", at, LEN);
        node_store_sum_update(sum, p + at, n);
        at += n;
    }
    TT_CHECK(node_store_sum_final(sum), "the sum of all %d bytes is not final", LEN);
    TT_OK(node_store_put_checked(s, id, p, LEN, NODE_STORE_OWNED, sum));
    TT_CHECK(block_reads_back(s, 1, LEN), "a block stored with the streamed checksum fails its own check");
    /* the same block stored by the store's own sums gives the same file, chunk sums included */
    enum { FILE_LEN = LEN + 4096 };
    char *path1 = block_path(dir, 1);
    uint8_t *file1 = malloc(FILE_LEN), *file2 = malloc(FILE_LEN);
    FILE *f = fopen(path1, "rb");
    size_t n1 = f ? fread(file1, 1, FILE_LEN, f) : 0;
    TT_CHECK(f && n1 == node_store_file_size(LEN), "reading %s: %zu bytes", path1, n1);
    fclose(f);
    node_store_delete(s);
    tt_rmtree(dir);
    s = open_store(dir, 16u << 20, 10);
    TT_OK(node_store_put(s, id, p, LEN, NODE_STORE_OWNED));
    f = fopen(path1, "rb");
    size_t n2 = f ? fread(file2, 1, FILE_LEN, f) : 0;
    TT_CHECK(f && n2 == n1, "reading %s: %zu bytes", path1, n2);
    fclose(f);
    TT_CHECK(memcmp(file1, file2, n1) == 0, "the streamed checksum differs from the store's own");
    free(path1);
    free(file1);
    free(file2);

    make_id(2, id);
    uint8_t *q = make_payload(2, LEN);
    /* block 1's sums on block 2's bytes */
    TT_OK(node_store_put_checked(s, id, q, LEN, NODE_STORE_OWNED, sum));
    node_store_sum_free(sum);
    TT_CHECK(!block_reads_back(s, 2, LEN), "a block stored under a wrong checksum was served");
    node_store_stats st;
    node_store_get_stats(s, &st);
    TT_CHECK(st.corrupt_drops == 1 && st.blocks == 1, "corrupt_drops=%llu (1) blocks=%llu (1)",
             (unsigned long long)st.corrupt_drops, (unsigned long long)st.blocks);
    free(p);
    free(q);
    finish(s, dir);
}

/* The store remembers which leaf directories it made; one removed behind its back is made again
 * by the next put that needs it. */
TT_TEST(test_node_store_removed_leaf_directory_is_made_again)
{
    char *dir = tt_tmpdir("store-leaf");
    node_store *s = open_store(dir, 16u << 20, 10);
    put_block(s, 1, 1000, NODE_STORE_OWNED);
    char *path = block_path(dir, 1);
    char leaf[4200];
    snprintf(leaf, sizeof leaf, "%.*s", (int)(strrchr(path, '/') - path), path);
    tt_rmtree(leaf);
    TT_CHECK(!file_exists(leaf), "%s still exists", leaf);
    /* block 1 again under another id with the same two leading bytes: the same leaf */
    uint8_t id[NODE_STORE_ID_LEN], id1[NODE_STORE_ID_LEN];
    make_id(1, id1);
    make_id(2, id);
    id[0] = id1[0];
    id[1] = id1[1];
    uint8_t *p = make_payload(2, 1000);
    TT_OK(node_store_put(s, id, p, 1000, NODE_STORE_OWNED));
    uint8_t got[1000];
    size_t n = 0;
    TT_OK(node_store_get(s, id, got, sizeof got, &n));
    TT_CHECK(n == 1000 && memcmp(got, p, n) == 0, "the block put into the remade leaf reads back wrong");
    TT_CHECK(file_exists(leaf), "%s was not made again", leaf);
    free(p);
    free(path);
    finish(s, dir);
}

static node_store_stats stats_of(node_store *s)
{
    node_store_stats st;
    node_store_get_stats(s, &st);
    return st;
}

static char *blocks_dir_of(const char *dir)
{
    char *path;
    TT_CHECK(asprintf(&path, "%s/blocks", dir) > 0, "asprintf");
    return path;
}

/* `rm -rf <cache-dir>/blocks` under a running store: the next put makes the directory (and its
 * lock) again and lands, and the index forgets every block that went with the old one. */
TT_TEST(test_node_store_removed_blocks_dir_is_made_again_by_the_next_put)
{
    char *dir = tt_tmpdir("store-heal"), *blocks = blocks_dir_of(dir);
    node_store *s = open_store(dir, 16u << 20, 10);
    put_blocks(s, 0, 5, 30000, NODE_STORE_OWNED);
    tt_rmtree(blocks);
    TT_CHECK(!file_exists(blocks), "%s still exists", blocks);

    put_block(s, 9, 30000, NODE_STORE_OWNED);
    TT_CHECK(block_reads_back(s, 9, 30000), "the block put after the removal must read back");
    node_store_stats st = stats_of(s);
    TT_CHECK(st.blocks == 1 && st.bytes_used == node_store_file_size(30000) && st.lost_drops == 5 && st.dir_heals == 1 &&
                 st.write_errors == 0,
             "blocks=%llu (1) bytes=%llu lost_drops=%llu (5) dir_heals=%llu (1) write_errors=%llu (0)",
             (unsigned long long)st.blocks, (unsigned long long)st.bytes_used, (unsigned long long)st.lost_drops,
             (unsigned long long)st.dir_heals, (unsigned long long)st.write_errors);
    for (unsigned i = 0; i < 5; i++) {
        uint8_t id[NODE_STORE_ID_LEN];
        make_id(i, id);
        TT_CHECK(!node_store_contains(s, id, NULL, NULL), "block %u went with the directory but is still indexed", i);
    }
    disk_use du = disk_usage(dir);
    TT_CHECK(du.files == 1 && du.bytes == st.bytes_used, "on disk: %u files, %llu bytes", du.files,
             (unsigned long long)du.bytes);
    /* The new directory is locked like the first. */
    TT_CHECK(node_store_new(dir, 16u << 20, NULL) == NULL, "a second store opened the remade directory");
    put_blocks(s, 10, 3, 30000, NODE_STORE_OWNED);
    TT_CHECK(stats_of(s).dir_heals == 1, "puts into the remade directory must not heal again");
    free(blocks);
    finish(s, dir);
}

/* The whole cache directory removed, and the first call after it a read: the read misses, and the
 * store is whole again without waiting for a put. */
TT_TEST(test_node_store_read_after_cache_dir_removed_heals_the_store)
{
    char *dir = tt_tmpdir("store-heal-read"), *blocks = blocks_dir_of(dir);
    node_store *s = open_store(dir, 16u << 20, 10);
    put_blocks(s, 0, 6, 20000, NODE_STORE_OWNED);
    tt_rmtree(dir);
    TT_CHECK(!block_reads_back(s, 2, 20000), "a block whose file is gone must be a miss");
    node_store_stats st = stats_of(s);
    TT_CHECK(file_exists(blocks), "the read did not make %s again", blocks);
    TT_CHECK(st.blocks == 0 && st.bytes_used == 0 && st.lost_drops == 6 && st.corrupt_drops == 0 && st.misses == 1,
             "blocks=%llu (0) bytes=%llu (0) lost=%llu (6) corrupt=%llu (0: removed is not damaged) misses=%llu (1)",
             (unsigned long long)st.blocks, (unsigned long long)st.bytes_used, (unsigned long long)st.lost_drops,
             (unsigned long long)st.corrupt_drops, (unsigned long long)st.misses);
    put_block(s, 2, 20000, NODE_STORE_OWNED);
    TT_CHECK(block_reads_back(s, 2, 20000), "block 2 stored again must read back");
    free(blocks);
    finish(s, dir);
}

/* No read and no put: node_store_maintain finds blocks/ gone and makes it again. */
TT_TEST(test_node_store_maintain_heals_an_idle_store)
{
    char *dir = tt_tmpdir("store-heal-idle"), *blocks = blocks_dir_of(dir);
    node_store *s = open_store(dir, 16u << 20, 10);
    put_blocks(s, 0, 4, 10000, NODE_STORE_OWNED);
    tt_rmtree(blocks);
    node_store_maintain(s);
    node_store_stats st = stats_of(s);
    TT_CHECK(file_exists(blocks) && st.dir_heals == 1 && st.blocks == 0 && st.lost_drops == 4,
             "after maintain: %s %s, dir_heals=%llu (1) blocks=%llu (0) lost=%llu (4)", blocks,
             file_exists(blocks) ? "exists" : "is missing", (unsigned long long)st.dir_heals,
             (unsigned long long)st.blocks, (unsigned long long)st.lost_drops);
    node_store_maintain(s);
    TT_CHECK(stats_of(s).dir_heals == 1, "an intact directory was healed again");
    free(blocks);
    finish(s, dir);
}

/* A directory put back in blocks/'s place (a restored copy) is indexed when the store heals. */
TT_TEST(test_node_store_blocks_dir_put_back_is_indexed_again)
{
    char *dir = tt_tmpdir("store-putback"), *blocks = blocks_dir_of(dir), cmd[9000];
    node_store *s = open_store(dir, 16u << 20, 10);
    put_blocks(s, 0, 4, 10000, NODE_STORE_OWNED);
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s.copy' && rm -rf '%s' && mv '%s.copy' '%s'", blocks, blocks, blocks,
             blocks, blocks);
    TT_CHECK(system(cmd) == 0, "%s", cmd);
    node_store_maintain(s);
    node_store_stats st = stats_of(s);
    TT_CHECK(st.dir_heals == 1 && st.blocks == 4, "dir_heals=%llu (1) blocks=%llu (4)",
             (unsigned long long)st.dir_heals, (unsigned long long)st.blocks);
    for (unsigned i = 0; i < 4; i++)
        TT_CHECK(block_reads_back(s, i, 10000), "block %u of the restored directory must read back", i);
    free(blocks);
    finish(s, dir);
}

/* Files removed one by one by hand: the audit in node_store_maintain forgets them (and only them),
 * counted as lost, and the accounting matches the disk again. */
TT_TEST(test_node_store_audit_forgets_files_removed_by_hand)
{
    char *dir = tt_tmpdir("store-audit");
    node_store *s = open_store(dir, 16u << 20, 10);
    put_blocks(s, 0, 50, 10000, NODE_STORE_OWNED);
    for (unsigned i = 0; i < 50; i += 5) {
        char *path = block_path(dir, i);
        TT_CHECK(unlink(path) == 0, "rm %s", path);
        free(path);
    }
    node_store_maintain(s);
    node_store_stats st = stats_of(s);
    disk_use du = disk_usage(dir);
    TT_CHECK(st.lost_drops == 10 && st.blocks == 40 && st.bytes_used == du.bytes && st.corrupt_drops == 0,
             "lost=%llu (10) blocks=%llu (40) bytes=%llu (disk %llu) corrupt=%llu (0)",
             (unsigned long long)st.lost_drops, (unsigned long long)st.blocks, (unsigned long long)st.bytes_used,
             (unsigned long long)du.bytes, (unsigned long long)st.corrupt_drops);
    for (unsigned i = 0; i < 50; i++) {
        uint8_t id[NODE_STORE_ID_LEN];
        make_id(i, id);
        TT_CHECK(node_store_contains(s, id, NULL, NULL) == (i % 5 != 0), "block %u: indexed %d", i,
                 node_store_contains(s, id, NULL, NULL));
    }
    finish(s, dir);
}

/* One read that finds its file removed makes the next audits fast: with more blocks than one
 * ordinary slice checks, a single node_store_maintain then finds every other removed file. */
TT_TEST(test_node_store_read_of_a_removed_file_speeds_up_the_audit)
{
    enum { N = 1500, GONE = 50 };
    /* thousands of small files: in memory, not on a busy disk */
    char *dir = mounted_tmpdir("store-audit-fast", "tmpfs", "size=64m");
    node_store *s = open_store(dir, 64u << 20, 10);
    put_blocks(s, 0, N, 16, NODE_STORE_OWNED);
    for (unsigned i = 0; i < GONE; i++) {
        char *path = block_path(dir, i * (N / GONE));
        TT_CHECK(unlink(path) == 0, "rm %s", path);
        free(path);
    }
    TT_CHECK(!block_reads_back(s, 0, 16), "block 0's file is gone: a miss");
    node_store_maintain(s);
    node_store_stats st = stats_of(s);
    TT_CHECK(st.lost_drops == GONE && st.blocks == N - GONE, "lost=%llu (%u) blocks=%llu (%u)",
             (unsigned long long)st.lost_drops, GONE, (unsigned long long)st.blocks, N - GONE);
    finish_mounted(s, dir);
}

/* ---- chunk sums: verify once, serve many ------------------------------------------------------ */

#define CHUNK (64u << 10) /* the chunk size the store writes */
#define LAZY_LEN ((4u << 20) - 1000) /* 64 chunks, the last one short */

static uint64_t verified(node_store *s) { return stats_of(s).verified_bytes; }
static void damage_rewrite(const char *path, long off, uint8_t xor);

/* Block n of LAZY_LEN bytes in a fresh store, and a lazy view of it. */
static node_store *lazy_setup(char **dir, unsigned n, node_store_view *v)
{
    *dir = tt_tmpdir("store-lazy");
    node_store *s = open_store(*dir, 32u << 20, 10);
    put_block(s, n, LAZY_LEN, NODE_STORE_OWNED);
    uint8_t id[NODE_STORE_ID_LEN];
    make_id(n, id);
    TT_OK(node_store_map_lazy(s, id, v));
    TT_CHECK(v->len == LAZY_LEN, "lazy view of %zu bytes, stored %u", v->len, LAZY_LEN);
    return s;
}

/* Whether bytes [off, off+len) of the view verify and equal block n's. */
static bool range_reads_back(node_store_view *v, unsigned n, size_t off, size_t len)
{
    if (node_store_view_verify(v, off, len) != 0)
        return false;
    uint8_t *want = make_payload(n, LAZY_LEN);
    TT_CHECK(memcmp(v->data + off, want + off, len) == 0, "bytes %zu..+%zu differ from what was stored", off, len);
    free(want);
    return true;
}

TT_TEST(test_node_store_range_read_verifies_only_the_chunks_it_touches)
{
    char *dir;
    node_store_view v;
    node_store *s = lazy_setup(&dir, 1, &v);
    TT_CHECK(verified(s) == 0, "a lazy map hashed %llu bytes", (unsigned long long)verified(s));
    TT_CHECK(range_reads_back(&v, 1, 100000, 4096), "a 4 KiB read in chunk 1 failed");
    TT_CHECK(verified(s) == CHUNK, "a 4 KiB read inside one chunk hashed %llu bytes, not one chunk",
             (unsigned long long)verified(s));
    TT_CHECK(range_reads_back(&v, 1, 3 * CHUNK - 10, 20), "a read across chunks 2 and 3 failed");
    TT_CHECK(verified(s) == 3 * CHUNK, "a read across two more chunks: %llu bytes hashed in all, want %u",
             (unsigned long long)verified(s), 3 * CHUNK);
    TT_CHECK(range_reads_back(&v, 1, LAZY_LEN - 1, 1), "the last byte failed");
    TT_CHECK(verified(s) == 3 * CHUNK + (LAZY_LEN - 63 * CHUNK), "the short last chunk: %llu bytes hashed in all",
             (unsigned long long)verified(s));
    TT_CHECK(node_store_view_verify(&v, LAZY_LEN - 1, 2) == -1 && shoal_error_code() == SHOAL_ERR_RANGE,
             "a range past the end: want RANGE, got %s", shoal_error_name(shoal_error_code()));
    node_store_view_release(&v);
    TT_CHECK(stats_of(s).hits == 1 && stats_of(s).corrupt_drops == 0, "hits=%llu (1) corrupt_drops=%llu (0)",
             (unsigned long long)stats_of(s).hits, (unsigned long long)stats_of(s).corrupt_drops);
    finish(s, dir);
}

TT_TEST(test_node_store_verified_chunks_are_not_hashed_again_in_one_view)
{
    char *dir;
    node_store_view v;
    node_store *s = lazy_setup(&dir, 2, &v);
    TT_CHECK(range_reads_back(&v, 2, 5 * CHUNK, 128u << 10), "a 128 KiB read of chunks 5-6 failed");
    uint64_t first = verified(s);
    TT_CHECK(first == 2 * CHUNK, "a 128 KiB read of two chunks hashed %llu bytes", (unsigned long long)first);
    for (size_t off = 5 * CHUNK; off < 7 * CHUNK; off += 4096)
        TT_CHECK(range_reads_back(&v, 2, off, 4096), "4 KiB at %zu failed on a second read", off);
    TT_CHECK(verified(s) == first, "reads of verified chunks hashed %llu more bytes",
             (unsigned long long)(verified(s) - first));
    /* a whole-block read checks the rest once, then nothing more */
    TT_CHECK(range_reads_back(&v, 2, 0, LAZY_LEN), "the whole block failed");
    TT_CHECK(verified(s) == LAZY_LEN, "after a whole read %llu bytes hashed in all, want %u",
             (unsigned long long)verified(s), LAZY_LEN);
    TT_CHECK(range_reads_back(&v, 2, 0, LAZY_LEN), "the whole block failed on a second read");
    TT_CHECK(verified(s) == LAZY_LEN, "a second whole read hashed again");
    node_store_view_release(&v);
    finish(s, dir);
}

TT_TEST(test_node_store_block_mapped_again_is_verified_again)
{
    char *dir;
    node_store_view v;
    node_store *s = lazy_setup(&dir, 3, &v);
    TT_CHECK(range_reads_back(&v, 3, 7 * CHUNK, 4096), "the first read failed");
    node_store_view_release(&v); /* the block leaves memory: what was verified goes with it */
    uint8_t id[NODE_STORE_ID_LEN];
    make_id(3, id);
    TT_OK(node_store_map_lazy(s, id, &v));
    TT_CHECK(range_reads_back(&v, 3, 7 * CHUNK, 4096), "the read of the block mapped again failed");
    TT_CHECK(verified(s) == 2 * CHUNK, "a chunk read in a new view must be hashed again: %llu bytes hashed",
             (unsigned long long)verified(s));
    node_store_view_release(&v);
    /* and so after a restart of the store */
    node_store_delete(s);
    s = open_store(dir, 32u << 20, 10);
    TT_OK(node_store_map_lazy(s, id, &v));
    TT_CHECK(range_reads_back(&v, 3, 7 * CHUNK, 4096), "the read after a restart failed");
    TT_CHECK(verified(s) == CHUNK, "after a restart %llu bytes hashed, want one chunk", (unsigned long long)verified(s));
    node_store_view_release(&v);
    finish(s, dir);
}

/* Flips a byte inside chunk `chunk` of block n's file. */
static void damage_chunk(const char *dir, unsigned n, unsigned chunk)
{
    char *path = block_path(dir, n);
    damage_rewrite(path, HDR + (long)chunk * CHUNK + 777, 0x04);
    free(path);
}

/* After a damaged chunk was found: the block is gone from the store, counted once, and the view
 * (mapped or open) serves nothing more, not even chunks it verified before. */
static void check_view_dropped(node_store *s, const char *dir, unsigned n, node_store_view *v)
{
    char *path = block_path(dir, n);
    TT_CHECK(!file_exists(path), "the damaged file %s must be removed", path);
    free(path);
    uint8_t id[NODE_STORE_ID_LEN];
    make_id(n, id);
    TT_CHECK(!node_store_contains(s, id, NULL, NULL), "the damaged block is still indexed");
    uint8_t got[4096]; /* node_store_view_read serves mapped and open views alike */
    TT_CHECK(node_store_view_read(v, 0, sizeof got, got) == -1 && shoal_error_code() == SHOAL_ERR_NOT_FOUND,
             "a view of a damaged block served chunk 0 after the damage was found");
    TT_CHECK(stats_of(s).corrupt_drops == 1, "corrupt_drops=%llu (1)", (unsigned long long)stats_of(s).corrupt_drops);
    node_store_view_release(v);
}

TT_TEST(test_node_store_damaged_chunk_is_caught_when_it_is_read_first)
{
    char *dir;
    node_store_view v;
    node_store *s = lazy_setup(&dir, 4, &v);
    damage_chunk(dir, 4, 9); /* MAP_SHARED: the view sees the damage, as it would a bad disk's */
    TT_CHECK(node_store_view_verify(&v, 9 * CHUNK + 700, 4096) == -1 && shoal_error_code() == SHOAL_ERR_NOT_FOUND,
             "a read of a damaged chunk was served (%s)", shoal_error_name(shoal_error_code()));
    check_view_dropped(s, dir, 4, &v);
    finish(s, dir);
}

TT_TEST(test_node_store_damaged_chunk_is_caught_after_sound_chunks_were_served)
{
    char *dir;
    node_store_view v;
    node_store *s = lazy_setup(&dir, 5, &v);
    damage_chunk(dir, 5, 40);
    TT_CHECK(range_reads_back(&v, 5, 0, 4096), "a sound chunk of a block damaged elsewhere is served");
    TT_CHECK(range_reads_back(&v, 5, 39 * CHUNK, CHUNK), "the chunk before the damaged one is served");
    TT_CHECK(node_store_view_verify(&v, 39 * CHUNK + 100, CHUNK) == -1 && shoal_error_code() == SHOAL_ERR_NOT_FOUND,
             "a read reaching into the damaged chunk was served (%s)", shoal_error_name(shoal_error_code()));
    check_view_dropped(s, dir, 5, &v);
    /* a whole read of the block stored anew verifies every chunk */
    put_block(s, 5, LAZY_LEN, NODE_STORE_OWNED);
    uint64_t before = verified(s);
    TT_CHECK(block_maps_back(s, 5, LAZY_LEN), "the block stored again does not map");
    TT_CHECK(verified(s) - before == LAZY_LEN, "a full map hashed %llu bytes of %u",
             (unsigned long long)(verified(s) - before), LAZY_LEN);
    finish(s, dir);
}

/* ---- open views: pread, nothing mapped ---------------------------------------------------------- */

/* Block n of LAZY_LEN bytes in a fresh store, and an open view of it. */
static node_store *open_setup(char **dir, unsigned n, node_store_view *v)
{
    *dir = tt_tmpdir("store-open");
    node_store *s = open_store(*dir, 32u << 20, 10);
    put_block(s, n, LAZY_LEN, NODE_STORE_OWNED);
    uint8_t id[NODE_STORE_ID_LEN];
    make_id(n, id);
    TT_OK(node_store_open_lazy(s, id, v));
    TT_CHECK(v->len == LAZY_LEN && v->data == NULL && v->map == NULL, "open view of %zu bytes, mapped %p", v->len,
             v->map);
    return s;
}

/* Whether bytes [off, off+len) of an open view read back as block n's. */
static bool range_preads_back(node_store_view *v, unsigned n, size_t off, size_t len)
{
    uint8_t *got = malloc(len ? len : 1), *want = make_payload(n, LAZY_LEN);
    bool ok = node_store_view_read(v, off, len, got) == 0;
    TT_CHECK(!ok || memcmp(got, want + off, len) == 0, "bytes %zu..+%zu differ from what was stored", off, len);
    free(got);
    free(want);
    return ok;
}

TT_TEST(test_node_store_open_view_reads_hash_only_the_chunks_they_touch_once)
{
    char *dir;
    node_store_view v;
    node_store *s = open_setup(&dir, 11, &v);
    TT_CHECK(verified(s) == 0, "opening hashed %llu bytes", (unsigned long long)verified(s));
    TT_CHECK(range_preads_back(&v, 11, 100000, 4096), "a 4 KiB read inside chunk 1 failed");
    TT_CHECK(verified(s) == CHUNK, "a 4 KiB read hashed %llu bytes, not one chunk", (unsigned long long)verified(s));
    TT_CHECK(range_preads_back(&v, 11, 3 * CHUNK - 10, 2 * CHUNK + 20),
             "a read of chunks 3-4 and parts of 2 and 5 failed");
    TT_CHECK(verified(s) == 5 * CHUNK, "%llu bytes hashed in all, want 5 chunks", (unsigned long long)verified(s));
    for (size_t off = CHUNK; off < 6 * CHUNK; off += 4096)
        TT_CHECK(range_preads_back(&v, 11, off, 4096), "4 KiB at %zu failed", off);
    TT_CHECK(verified(s) == 5 * CHUNK, "reads of verified chunks hashed again: %llu bytes",
             (unsigned long long)verified(s));
    TT_CHECK(range_preads_back(&v, 11, 0, LAZY_LEN), "the whole block failed");
    TT_CHECK(verified(s) == LAZY_LEN, "after a whole read %llu bytes hashed, want %u", (unsigned long long)verified(s),
             LAZY_LEN);
    uint8_t two[2];
    TT_CHECK(node_store_view_read(&v, LAZY_LEN - 1, 2, two) == -1 && shoal_error_code() == SHOAL_ERR_RANGE,
             "a range past the end: want RANGE, got %s", shoal_error_name(shoal_error_code()));
    node_store_view_release(&v);
    TT_CHECK(stats_of(s).hits == 1 && stats_of(s).corrupt_drops == 0, "hits=%llu (1) corrupt_drops=%llu (0)",
             (unsigned long long)stats_of(s).hits, (unsigned long long)stats_of(s).corrupt_drops);
    finish(s, dir);
}

/* Read system calls this thread made so far (syscr of /proc/thread-self/io; reading it is one). */
static uint64_t thread_reads(void)
{
    FILE *f = fopen("/proc/thread-self/io", "re");
    char line[128];
    unsigned long long n = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "syscr: %llu", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

/* A random reader's first read inside a chunk costs one pread (the chunk, hashed, the part copied
 * out), not a pread of the part and another of the chunk; a read of the chunk once verified, one
 * pread of the part. Counted by the thread's read system calls (/proc/thread-self/io). */
TT_TEST(test_node_store_open_view_first_read_inside_a_chunk_is_one_pread)
{
    if (access("/proc/thread-self/io", R_OK) != 0)
        TT_SKIP("needs /proc/thread-self/io to count read system calls");
    char *dir;
    node_store_view v;
    node_store *s = open_setup(&dir, 16, &v);
    uint64_t t0 = thread_reads(), base = thread_reads() - t0; /* what the count itself costs */
    t0 = thread_reads();
    TT_CHECK(range_preads_back(&v, 16, 5 * CHUNK + 1000, 4096), "a 4 KiB read inside chunk 5 failed");
    uint64_t first = thread_reads() - t0 - base;
    t0 = thread_reads();
    TT_CHECK(range_preads_back(&v, 16, 5 * CHUNK + 9000, 4096), "a second 4 KiB read inside chunk 5 failed");
    uint64_t again = thread_reads() - t0 - base;
    TT_CHECK(first == 1 && again == 1,
             "read system calls: %llu for the first 4 KiB of an unverified chunk, %llu for "
             "the next (want 1 and 1)",
             (unsigned long long)first, (unsigned long long)again);
    TT_CHECK(verified(s) == CHUNK, "%llu bytes hashed, want one chunk", (unsigned long long)verified(s));
    node_store_view_release(&v);
    finish(s, dir);
}

/* A damaged chunk is never served, whether the read holds part of it (hashed from a read of the
 * whole chunk) or all of it (hashed where it was read). */
TT_TEST(test_node_store_open_view_never_serves_a_damaged_chunk)
{
    for (int whole = 0; whole < 2; whole++) {
        char *dir;
        node_store_view v;
        node_store *s = open_setup(&dir, 12, &v);
        TT_CHECK(range_preads_back(&v, 12, 8 * CHUNK, CHUNK), "the chunk before the damaged one is served");
        damage_chunk(dir, 12, 9);
        size_t off = whole ? 9 * CHUNK : 9 * CHUNK + 700, len = whole ? 2 * CHUNK : 4096;
        uint8_t *got = malloc(len);
        TT_CHECK(node_store_view_read(&v, off, len, got) == -1 && shoal_error_code() == SHOAL_ERR_NOT_FOUND,
                 "a read of %s damaged chunk was served (%s)", whole ? "a whole" : "part of a",
                 shoal_error_name(shoal_error_code()));
        free(got);
        check_view_dropped(s, dir, 12, &v);
        finish(s, dir);
    }
}

/* The disk read-ahead hint of a sequential reader: it names stored blocks only, changes nothing
 * of what a read sees, and a block damaged before the hint is still caught by the read after it. */
TT_TEST(test_node_store_willneed_hint_verifies_nothing_and_a_damaged_chunk_is_still_caught)
{
    char *dir = tt_tmpdir("store-willneed");
    node_store *s = open_store(dir, 32u << 20, 10);
    put_block(s, 14, LAZY_LEN, NODE_STORE_OWNED);
    uint8_t id[NODE_STORE_ID_LEN], absent[NODE_STORE_ID_LEN];
    make_id(14, id);
    make_id(15, absent);
    node_store_stats before = stats_of(s);
    TT_CHECK(!node_store_willneed(s, absent), "a hint for a block not stored was given");
    damage_chunk(dir, 14, 3);
    TT_CHECK(node_store_willneed(s, id), "no hint for a stored block");
    node_store_stats after = stats_of(s);
    TT_CHECK(after.verified_bytes == before.verified_bytes && after.hits == before.hits &&
                 after.misses == before.misses,
             "a hint hashed %llu bytes or counted a hit or miss",
             (unsigned long long)(after.verified_bytes - before.verified_bytes));
    node_store_view v;
    TT_OK(node_store_open_lazy(s, id, &v));
    uint8_t *got = malloc(CHUNK);
    TT_CHECK(node_store_view_read(&v, 3 * CHUNK, CHUNK, got) == -1 && shoal_error_code() == SHOAL_ERR_NOT_FOUND,
             "a damaged chunk was served after the hint (%s)", shoal_error_name(shoal_error_code()));
    free(got);
    check_view_dropped(s, dir, 14, &v);
    TT_CHECK(!node_store_willneed(s, id), "a hint was given for a block dropped as damaged");
    finish(s, dir);
}

/* A block file cut short after it was opened: the read finds fewer bytes than its header says, and
 * the block is dropped as damaged. */
TT_TEST(test_node_store_open_view_of_a_truncated_file_serves_nothing)
{
    char *dir;
    node_store_view v;
    node_store *s = open_setup(&dir, 13, &v);
    char *path = block_path(dir, 13);
    truncate_half(path);
    free(path);
    uint8_t got[4096];
    TT_CHECK(node_store_view_read(&v, 2 * CHUNK, sizeof got, got) == -1 && shoal_error_code() == SHOAL_ERR_NOT_FOUND,
             "a read past the cut was served (%s)", shoal_error_name(shoal_error_code()));
    check_view_dropped(s, dir, 13, &v);
    finish(s, dir);
}

/* A block file of the first format (one checksum over the whole payload) is not read: open removes
 * it and counts it apart from damage, and the block is fetched again by whoever wants it. */
TT_TEST(test_node_store_old_format_block_is_dropped_at_open_and_counted)
{
    char *dir = tt_tmpdir("store-old"), *path = two_blocks_closed(dir);
    damage_rewrite(path, 4, 0x03); /* version 2 -> 1 */
    node_store *s = open_store(dir, 1u << 20, 10);
    TT_CHECK(!file_exists(path), "the old-format file %s must be removed at open", path);
    TT_CHECK(stats_of(s).old_format_drops == 1 && stats_of(s).corrupt_drops == 0 && stats_of(s).blocks == 1,
             "old_format_drops=%llu (1) corrupt_drops=%llu (0) blocks=%llu (1)",
             (unsigned long long)stats_of(s).old_format_drops, (unsigned long long)stats_of(s).corrupt_drops,
             (unsigned long long)stats_of(s).blocks);
    TT_CHECK(block_reads_back(s, 1, 30000), "the current-format block must survive");
    free(path);
    finish(s, dir);
}

/* ---- damage of every kind, found by every path, counted once each ---------------------------- */

#define DMG_LEN 20000

static void damage_rewrite(const char *path, long off, uint8_t xor)
{
    FILE *f = fopen(path, "r+b");
    TT_CHECK(f != NULL, "open %s", path);
    TT_CHECK(fseek(f, off, SEEK_SET) == 0, "seek");
    int c = fgetc(f);
    TT_CHECK(fseek(f, off, SEEK_SET) == 0 && fputc(c ^ xor, f) != EOF && fclose(f) == 0, "damage %s", path);
}
static void dmg_payload(const char *path) { damage_rewrite(path, HDR + 777, 0x40); }
static void dmg_magic(const char *path) { damage_rewrite(path, 0, 0x01); }
static void dmg_class(const char *path) { damage_rewrite(path, 6, 0x08); }
static void dmg_length(const char *path) { damage_rewrite(path, 9, 0x01); }
static void dmg_id(const char *path) { damage_rewrite(path, 20, 0x10); }
static void dmg_chunk_size(const char *path) { damage_rewrite(path, 34, 0x01); }
static void dmg_reserved(const char *path) { damage_rewrite(path, 40, 0x80); }
static void dmg_sum(const char *path) { damage_rewrite(path, HDR + DMG_LEN + 5, 0x80); }
static void dmg_zeroed(const char *path)
{
    static const uint8_t zeros[4096];
    FILE *f = fopen(path, "r+b");
    TT_CHECK(f != NULL && fseek(f, HDR + 8192, SEEK_SET) == 0 && fwrite(zeros, 1, sizeof zeros, f) == sizeof zeros &&
                 fclose(f) == 0,
             "zero 4 KiB of %s", path);
}
static void dmg_truncate(const char *path) { TT_CHECK(truncate(path, HDR + 100) == 0, "truncate %s", path); }
static void dmg_empty(const char *path) { TT_CHECK(truncate(path, 0) == 0, "truncate %s", path); }
static void dmg_append(const char *path)
{
    FILE *f = fopen(path, "ab");
    TT_CHECK(f != NULL && fwrite("junk", 1, 4, f) == 4 && fclose(f) == 0, "append to %s", path);
}
static void dmg_symlink(const char *path)
{
    TT_CHECK(unlink(path) == 0 && symlink("/nonexistent/shoal-block", path) == 0, "symlink at %s", path);
}
static void dmg_directory(const char *path) { TT_CHECK(unlink(path) == 0 && mkdir(path, 0700) == 0, "mkdir %s", path); }
static void dmg_fifo(const char *path) { TT_CHECK(unlink(path) == 0 && mkfifo(path, 0600) == 0, "mkfifo %s", path); }

typedef struct damage_kind {
    const char *name;
    void (*fn)(const char *path);
    bool in_header; /* caught by open's scan (which does not read payloads) */
    bool by_stat;   /* caught by the audit, which only stats */
} damage_kind;

static const damage_kind DAMAGE[] = {
    {"payload byte", dmg_payload, false, false},  {"magic", dmg_magic, true, false},
    {"class", dmg_class, true, false},            {"length field", dmg_length, true, false},
    {"id", dmg_id, true, false},                  {"chunk size", dmg_chunk_size, true, false},
    {"reserved header bytes", dmg_reserved, true, false}, {"chunk sum", dmg_sum, false, false},
    {"zeroed range", dmg_zeroed, false, false},
    {"truncated", dmg_truncate, true, true},      {"emptied", dmg_empty, true, true},
    {"appended to", dmg_append, true, true},      {"symbolic link", dmg_symlink, true, true},
    {"directory", dmg_directory, true, true},     {"FIFO", dmg_fifo, true, true},
};
#define N_DAMAGE (sizeof DAMAGE / sizeof DAMAGE[0])

/* Puts N_DAMAGE blocks from `first` on and damages each in its own way. */
static void damage_blocks(node_store *s, const char *dir, unsigned first)
{
    put_blocks(s, first, N_DAMAGE, DMG_LEN, NODE_STORE_OWNED);
    for (unsigned k = 0; k < N_DAMAGE; k++) {
        char *path = block_path(dir, first + k);
        DAMAGE[k].fn(path);
        free(path);
    }
}

/* Every damaged block is a miss, none is served, and nothing is left at its name. */
static void check_all_dropped(node_store *s, const char *dir, unsigned first, bool (*read)(node_store *, unsigned, size_t))
{
    for (unsigned k = 0; k < N_DAMAGE; k++) {
        TT_CHECK(!read(s, first + k, DMG_LEN), "a block with a damaged %s was served", DAMAGE[k].name);
        char *path = block_path(dir, first + k);
        struct stat st;
        TT_CHECK(lstat(path, &st) != 0, "the damaged %s is still at %s", DAMAGE[k].name, path);
        free(path);
    }
}

TT_TEST(test_node_store_every_damaged_block_is_counted_once_whoever_finds_it)
{
    char *dir = tt_tmpdir("store-damage");
    node_store *s = open_store(dir, 64u << 20, 10);
    put_blocks(s, 1000, 4, DMG_LEN, NODE_STORE_OWNED); /* sound blocks beside them */

    /* Found by get, then by map: each path counts all of its own. */
    damage_blocks(s, dir, 0);
    check_all_dropped(s, dir, 0, block_reads_back);
    TT_CHECK(stats_of(s).corrupt_drops == N_DAMAGE, "get: %llu damaged blocks counted of %zu",
             (unsigned long long)stats_of(s).corrupt_drops, N_DAMAGE);
    damage_blocks(s, dir, 100);
    check_all_dropped(s, dir, 100, block_maps_back);
    TT_CHECK(stats_of(s).corrupt_drops == 2 * N_DAMAGE, "map: %llu damaged blocks counted of %zu",
             (unsigned long long)stats_of(s).corrupt_drops - N_DAMAGE, N_DAMAGE);

    /* Found by the audit (what a stat shows), then by reads (the rest). */
    damage_blocks(s, dir, 200);
    node_store_maintain(s);
    size_t by_stat = 0;
    for (unsigned k = 0; k < N_DAMAGE; k++)
        by_stat += DAMAGE[k].by_stat;
    TT_CHECK(stats_of(s).corrupt_drops == 2 * N_DAMAGE + by_stat, "audit: %llu damaged blocks counted, %zu expected",
             (unsigned long long)stats_of(s).corrupt_drops - 2 * N_DAMAGE, by_stat);
    check_all_dropped(s, dir, 200, block_reads_back);
    TT_CHECK(stats_of(s).corrupt_drops == 3 * N_DAMAGE && stats_of(s).lost_drops == 0,
             "audit and reads: %llu damaged blocks counted of %zu, %llu lost",
             (unsigned long long)stats_of(s).corrupt_drops - 2 * N_DAMAGE, N_DAMAGE,
             (unsigned long long)stats_of(s).lost_drops);

    /* Found by open's scan (the header), then by reads (the payload). */
    damage_blocks(s, dir, 300);
    node_store_delete(s);
    s = open_store(dir, 64u << 20, 10);
    size_t in_header = 0;
    for (unsigned k = 0; k < N_DAMAGE; k++)
        in_header += DAMAGE[k].in_header;
    TT_CHECK(stats_of(s).corrupt_drops == in_header, "open: %llu damaged blocks counted, %zu expected",
             (unsigned long long)stats_of(s).corrupt_drops, in_header);
    check_all_dropped(s, dir, 300, block_reads_back);
    TT_CHECK(stats_of(s).corrupt_drops == N_DAMAGE, "open and reads: %llu damaged blocks counted of %zu",
             (unsigned long long)stats_of(s).corrupt_drops, N_DAMAGE);

    for (unsigned i = 1000; i < 1004; i++)
        TT_CHECK(block_reads_back(s, i, DMG_LEN), "sound block %u was lost", i);
    TT_CHECK(stats_of(s).blocks == 4, "%llu blocks indexed, 4 sound ones expected", (unsigned long long)stats_of(s).blocks);
    finish(s, dir);
}

TT_MAIN()
