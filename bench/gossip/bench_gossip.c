/*
 * Gossip load per member as the cluster grows: SWIM's claim is that the failure detector and the
 * dissemination cost each member a constant number of messages per protocol period whatever n is.
 *
 * For n = 1,000 and 10,000 real gossip instances in one virtual world (sim/), started converged
 * (sim_cluster_preload) and run for a number of probe periods with the default parameters, it
 * prints per member per period: the datagrams of the failure detector and dissemination (ping,
 * ack, ping-req, nack, gossip), the push-pull chunks (anti-entropy, whose size grows with n by
 * nature and whose period memberlist stretches with log n), the bytes, and the ratio of the
 * 10,000-member figure to the 1,000-member one (target <= 1.1). Also the wall time and peak memory,
 * for whoever sizes shoal-sim runs.
 *
 *   bench_gossip [periods] [seed]       (defaults: 60 periods, seed 1)
 */
#include "gossip.h"
#include "shoal_log.h"
#include "sim_cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

typedef struct result {
    double swim, pp, bytes, wall, live;
} result;

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run(size_t n, uint64_t periods, uint64_t seed, result *r)
{
    gossip_config base;
    sim_cluster_base_config(&base);
    double t0 = wall_s();
    sim_cluster *c = sim_cluster_new(seed, &base);
    if (!c)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (sim_cluster_add(c, NULL) < 0)
            goto fail;
    if (sim_cluster_preload(c) < 0)
        goto fail;
    sim_world *w = sim_cluster_world(c);
    /* Warm up two periods so every node's probe schedule is under way. */
    sim_world_run_for(w, 2 * base.probe_interval_us);
    uint64_t out0 = 0, pp0 = 0, bytes0 = 0;
    for (size_t i = 0; i < n; i++) {
        const gossip_counters *k = gossip_counters_get(sim_cluster_node(c, (int)i));
        out0 += k->packets_out;
        pp0 += k->push_pull_packets;
        bytes0 += k->bytes_out;
    }
    sim_world_run_for(w, periods * base.probe_interval_us);
    uint64_t out = 0, pp = 0, bytes = 0;
    double live = 0;
    for (size_t i = 0; i < n; i++) {
        gossip *g = sim_cluster_node(c, (int)i);
        const gossip_counters *k = gossip_counters_get(g);
        out += k->packets_out;
        pp += k->push_pull_packets;
        bytes += k->bytes_out;
        live += (double)gossip_live_count(g);
    }
    double per = (double)n * (double)periods;
    r->swim = (double)((out - out0) - (pp - pp0)) / per;
    r->pp = (double)(pp - pp0) / per;
    r->bytes = (double)(bytes - bytes0) / per;
    r->live = live / (double)n;
    r->wall = wall_s() - t0;
    sim_cluster_delete(c);
    return 0;
fail:
    sim_cluster_delete(c);
    return -1;
}

int main(int argc, char **argv)
{
    uint64_t periods = argc > 1 ? strtoull(argv[1], NULL, 10) : 60;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    if (periods == 0) {
        fprintf(stderr, "bench_gossip: periods must be > 0\n");
        return 2;
    }
    shoal_log_set_level(SHOAL_LOG_ERROR);
    const size_t sizes[2] = {1000, 10000};
    result r[2];
    printf("gossip load per member per probe period, %llu periods, seed %llu\n",
           (unsigned long long)periods, (unsigned long long)seed);
    printf("%8s %14s %14s %12s %12s %10s\n", "members", "swim_msgs", "pushpull_pkts", "bytes", "mean_view", "wall_s");
    for (int i = 0; i < 2; i++) {
        if (run(sizes[i], periods, seed, &r[i]) < 0) {
            fprintf(stderr, "bench_gossip: %zu members: out of memory\n", sizes[i]);
            return 1;
        }
        printf("%8zu %14.3f %14.3f %12.1f %12.1f %10.1f\n", sizes[i], r[i].swim, r[i].pp, r[i].bytes,
               r[i].live, r[i].wall);
        fflush(stdout);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("ratio swim_msgs 10000/1000 = %.3f (target <= 1.1)\n", r[1].swim / r[0].swim);
    printf("peak rss = %.0f MiB\n", (double)ru.ru_maxrss / 1024.0);
    return r[1].swim / r[0].swim <= 1.1 ? 0 : 1;
}
