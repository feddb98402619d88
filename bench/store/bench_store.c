/*
 * bench_store: reads from a warm block store, whole-block verification against chunk verification
 * against a plain pread of a local file, in one run.
 *
 *   bench_store [--dir DIR] [--blocks N] [--seconds S] [--seed X]
 *
 * The store gets N blocks of 4 MiB (default 64: 256 MiB) in a fresh directory under DIR (default
 * $TMPDIR or /var/tmp, a disk file system), and the same bytes go into one plain file beside it.
 * Everything is read once first, so every case reads from the page cache: what is measured is the
 * cost of the store's read path, not of the disk. Each case runs for S seconds (default 2):
 *
 *   random 4k     4 KiB reads at random 4 KiB-aligned offsets of the N blocks
 *   random 128k   128 KiB reads at random 128 KiB-aligned offsets
 *   sequential    1 MiB reads from the first byte to the last, again and again
 *
 * each in three ways, as the mount reads (it keeps the last 16 blocks it read held between reads):
 *
 *   whole    a block not held is mapped with node_store_map, which hashes all of it (what every
 *            read cost before chunk sums: a 4 KiB read hashed 4 MiB unless its block was held)
 *   chunked  a block not held is mapped with node_store_map_lazy; each read verifies the 64 KiB
 *            chunks it touches (node_store_view_verify), each once while the block stays held
 *   pread    pread(2) of the same bytes from the plain file: no check at all, the ceiling
 *
 * For each: reads per second, MiB/s, CPU-seconds of the process and CPU-seconds per GiB read,
 * and the bytes the store hashed (its verified_bytes counter). The random offsets come from the
 * seed, which is printed; every way of a case reads the same offsets.
 */
#include "node_store.h"
#include "shoal_error.h"
#include "shoal_log.h"
#include "shoal_mix.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (4u << 20)
#define HELD 16 /* blocks held between reads, as the mount holds them */

typedef enum way { WAY_WHOLE, WAY_CHUNKED, WAY_PREAD, N_WAYS } way;
static const char *const WAY_NAME[N_WAYS] = {"whole", "chunked", "pread"};

typedef struct bench {
    node_store *store;
    int plain_fd;
    unsigned blocks;
    double seconds;
    uint64_t seed;
    uint8_t *buf;
    /* the held blocks: index (UINT32_MAX when empty) and view, replaced round robin */
    uint32_t held_index[HELD];
    node_store_view held[HELD];
    unsigned held_next;
} bench;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static void block_id(unsigned i, uint8_t id[NODE_STORE_ID_LEN])
{
    uint64_t x = 0xb10c0000ull + i, a = shoal_splitmix64(&x), b = shoal_splitmix64(&x);
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
}

static void die(const char *what)
{
    fprintf(stderr, "bench_store: %s: %s\n", what, shoal_error_message());
    exit(1);
}

static void held_clear(bench *b)
{
    for (unsigned i = 0; i < HELD; i++) {
        node_store_view_release(&b->held[i]);
        b->held_index[i] = UINT32_MAX;
    }
    b->held_next = 0;
}

/* The view of block `index`, held or mapped now (in place of the oldest held one). */
static node_store_view *held_view(bench *b, uint32_t index, way w)
{
    for (unsigned i = 0; i < HELD; i++)
        if (b->held_index[i] == index)
            return &b->held[i];
    unsigned slot = b->held_next++ % HELD;
    node_store_view_release(&b->held[slot]);
    uint8_t id[NODE_STORE_ID_LEN];
    block_id(index, id);
    if ((w == WAY_WHOLE ? node_store_map : node_store_map_lazy)(b->store, id, &b->held[slot]) != 0)
        die("map");
    b->held_index[slot] = index;
    return &b->held[slot];
}

/* One read of `len` bytes at byte `pos` of the N blocks laid end to end (never across a block). */
static void read_one(bench *b, way w, uint64_t pos, size_t len)
{
    if (w == WAY_PREAD) {
        if (pread(b->plain_fd, b->buf, len, (off_t)pos) != (ssize_t)len)
            die("pread");
        return;
    }
    node_store_view *v = held_view(b, (uint32_t)(pos / BLOCK), w);
    size_t off = (size_t)(pos % BLOCK);
    if (w == WAY_CHUNKED && node_store_view_verify(v, off, len) != 0)
        die("verify");
    memcpy(b->buf, v->data + off, len);
}

/* Runs one case in one way for b->seconds and prints its row. */
static void run_case(bench *b, const char *name, size_t len, bool sequential, way w)
{
    uint64_t total = (uint64_t)b->blocks * BLOCK, slots = total / len, x = b->seed, ops = 0, seq = 0;
    node_store_stats before, after;
    held_clear(b);
    node_store_get_stats(b->store, &before);
    double t0 = now_s(), c0 = cpu_s(), t = t0;
    while (t - t0 < b->seconds) {
        for (int k = 0; k < 16; k++, ops++) {
            uint64_t slot = sequential ? seq++ % slots : shoal_splitmix64(&x) % slots;
            read_one(b, w, slot * len, len);
        }
        t = now_s();
    }
    double cpu = cpu_s() - c0, wall = t - t0, gib = (double)ops * (double)len / (double)(1u << 30);
    node_store_get_stats(b->store, &after);
    held_clear(b);
    printf("%-12s %-8s %11.0f %9.1f %7.2f %9.2f %12.1f\n", name, WAY_NAME[w], (double)ops / wall,
           (double)ops * (double)len / wall / (1 << 20), cpu, gib > 0 ? cpu / gib : 0.0,
           (double)(after.verified_bytes - before.verified_bytes) / (double)ops / 1024.0);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
    bench b = {.blocks = 64, .seconds = 2.0, .seed = (uint64_t)time(NULL)};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            base = argv[++i];
        else if (strcmp(argv[i], "--blocks") == 0 && i + 1 < argc)
            b.blocks = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            b.seconds = strtod(argv[++i], NULL);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            b.seed = strtoull(argv[++i], NULL, 0);
        else {
            fprintf(stderr, "usage: bench_store [--dir DIR] [--blocks N] [--seconds S] [--seed X]\n");
            return 2;
        }
    }
    if (b.blocks < HELD + 1 || b.seconds <= 0) {
        fprintf(stderr, "bench_store: --blocks must be more than %d and --seconds positive\n", HELD);
        return 2;
    }
    shoal_log_set_level(SHOAL_LOG_WARN);

    char dir[4096], plain[4200];
    snprintf(dir, sizeof dir, "%s/bench-store-XXXXXX", base);
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "bench_store: mkdtemp %s: %s\n", dir, strerror(errno));
        return 1;
    }
    snprintf(plain, sizeof plain, "%s/plain", dir);
    b.store = node_store_new(dir, (uint64_t)b.blocks * (BLOCK + (1u << 20)), NULL);
    if (b.store == NULL)
        die("open store");
    b.plain_fd = open(plain, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    b.buf = malloc(BLOCK);
    uint8_t *data = malloc(BLOCK);
    if (b.plain_fd < 0 || b.buf == NULL || data == NULL) {
        fprintf(stderr, "bench_store: setting up in %s: %s\n", dir, strerror(errno));
        return 1;
    }
    for (unsigned i = 0; i < b.blocks; i++) {
        uint64_t x = 0xda7a0000ull + i;
        shoal_mix_fill(data, BLOCK, &x);
        uint8_t id[NODE_STORE_ID_LEN];
        block_id(i, id);
        if (node_store_put(b.store, id, data, BLOCK, NODE_STORE_OWNED) != 0)
            die("put");
        if (pwrite(b.plain_fd, data, BLOCK, (off_t)i * BLOCK) != (ssize_t)BLOCK) {
            fprintf(stderr, "bench_store: write %s: %s\n", plain, strerror(errno));
            return 1;
        }
    }
    /* Warm the page cache (block writes are direct, so the store's files are not in it yet). */
    for (unsigned i = 0; i < b.blocks; i++) {
        uint8_t id[NODE_STORE_ID_LEN];
        block_id(i, id);
        if (node_store_get(b.store, id, data, BLOCK, NULL) != 0)
            die("warm get");
        if (pread(b.plain_fd, data, BLOCK, (off_t)i * BLOCK) != (ssize_t)BLOCK)
            die("warm pread");
    }
    free(data);
    held_clear(&b);

    printf("bench_store: %u blocks of 4 MiB (%u MiB) in %s, warm; %.1f s per row; seed %#" PRIx64 "; %d blocks held\n",
           b.blocks, b.blocks * 4, dir, b.seconds, b.seed, HELD);
    printf("%-12s %-8s %11s %9s %7s %9s %12s\n", "case", "way", "reads/s", "MiB/s", "cpu_s", "cpu_s/GiB",
           "hashed_KiB/rd");
    struct {
        const char *name;
        size_t len;
        bool sequential;
    } cases[] = {{"random 4k", 4096, false}, {"random 128k", 128u << 10, false}, {"sequential", 1u << 20, true}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int w = 0; w < N_WAYS; w++)
            run_case(&b, cases[c].name, cases[c].len, cases[c].sequential, (way)w);

    node_store_delete(b.store);
    close(b.plain_fd);
    free(b.buf);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
