/*
 * bench_dht: placement lookups per second for 1,000 members, R = 1 and R = 3, measured side by
 * side in one run (and once more with the members spread over 3 zones, where R = 3 takes the
 * zone-aware path), printed with the ratio R3/R1. Each case runs the same precomputed block ids;
 * the two cases alternate in short rounds and each keeps its best round, so a burst of load from
 * other processes on a shared machine skews neither side. A checksum of the owners keeps the
 * compiler from dropping the lookups.
 *
 *   bench_dht [members] [seconds-per-case]      defaults: 1000 1
 */
#include "dht.h"
#include "shoal_error.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define NBLOCKS 4096
#define ROUNDS 10

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static dht_view *make_view(size_t n, size_t zones, char (*ids)[32], char (*zn)[16], dht_member *m)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], sizeof ids[i], "node-%04zu", i);
        snprintf(zn[i], sizeof zn[i], "zone-%zu", i % zones);
        m[i] = (dht_member){.node_id = ids[i], .zone = zn[i], .capacity = 10ULL << 30,
                            .serving = true, .alive = true};
    }
    return dht_view_new(m, n, 1);
}

/* Lookups per second for r owners, run for `secs` seconds. */
static double rate(const dht_view *v, const dht_id *blocks, int r, double secs, uintptr_t *sum)
{
    const dht_member *out[DHT_REPLICAS_MAX];
    uint64_t done = 0;
    double t0 = now_s(), t;
    do {
        for (int i = 0; i < NBLOCKS; i++) {
            int k = dht_owners(v, blocks[i], r, out);
            *sum += (uintptr_t)out[k - 1];
        }
        done += NBLOCKS;
        t = now_s();
    } while (t - t0 < secs);
    return (double)done / (t - t0);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000;
    double secs = argc > 2 ? strtod(argv[2], NULL) : 1.0;
    if (n < 3 || secs <= 0) {
        fprintf(stderr, "usage: bench_dht [members>=3] [seconds-per-case>0]\n");
        return 2;
    }
    char (*ids)[32] = calloc(n, sizeof *ids);
    char (*zn)[16] = calloc(n, sizeof *zn);
    dht_member *m = calloc(n, sizeof *m);
    dht_id *blocks = calloc(NBLOCKS, sizeof *blocks);
    if (!ids || !zn || !m || !blocks) {
        fprintf(stderr, "bench_dht: out of memory\n");
        return 1;
    }
    for (int i = 0; i < NBLOCKS; i++)
        blocks[i] = dht_block_id("bench", "data/shard-0001.tar", "\"etag\"", (uint64_t)i);

    uintptr_t sum = 0;
    printf("placement lookups, %zu members, %.2f s per case (best of %d rounds)\n", n, secs, ROUNDS);
    for (size_t zones = 1; zones <= 3; zones += 2) {
        dht_view *v = make_view(n, zones, ids, zn, m);
        if (!v) {
            fprintf(stderr, "bench_dht: %s\n", shoal_error_message());
            return 1;
        }
        double r1 = 0, r3 = 0;
        for (int round = 0; round < ROUNDS; round++) {
            double a = rate(v, blocks, 1, secs / ROUNDS, &sum);
            double b = rate(v, blocks, 3, secs / ROUNDS, &sum);
            r1 = a > r1 ? a : r1;
            r3 = b > r3 ? b : r3;
        }
        printf("zones=%zu  R=1: %10.0f lookups/s (%6.2f ns/member)  R=3: %10.0f lookups/s "
               "(%6.2f ns/member)  R3/R1 = %.2f\n",
               zones, r1, 1e9 / r1 / (double)n, r3, 1e9 / r3 / (double)n, r3 / r1);
        dht_view_delete(v);
    }
    printf("(owner checksum %lx)\n", (unsigned long)sum);
    free(ids);
    free(zn);
    free(m);
    free(blocks);
    return 0;
}
