/*
 * Gossip load per member as the cluster grows: SWIM's claim is that the failure detector and the
 * dissemination cost each member a constant number of messages per protocol period whatever n is.
 *
 * For n = 1,000 and 10,000 real gossip instances in one virtual world (sim/), started converged
 * (sim_cluster_preload) and run for a number of probe periods with the default parameters, once
 * steady and once with `kills` members crashing at the start of the measurement (the same number
 * at both sizes, so the dissemination work is comparable), it prints per member per period: the datagrams of the failure detector and dissemination (ping,
 * ack, ping-req, nack, gossip), the push-pull chunks (anti-entropy, whose size grows with n by
 * nature and whose period memberlist stretches with log n), the bytes, and the ratio of the
 * 10,000-member figure to the 1,000-member one (target <= 1.1). Also the wall time and peak memory,
 * for whoever sizes shoal-sim runs.
 *
 *   bench_gossip [periods] [seed] [kills]     (defaults: 60 periods, seed 1, 5 kills)
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

static int run(size_t n, uint64_t periods, uint64_t seed, size_t kills, result *r)
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
        if (kills && i >= 1 && (i - 1) % (n / (kills + 1)) == 0 && (i - 1) / (n / (kills + 1)) < kills)
            continue; /* about to be killed: not part of the measurement */
        out0 += k->packets_out;
        pp0 += k->push_pull_packets;
        bytes0 += k->bytes_out;
    }
    /* Crash `kills` members spread over the cluster; their counters stop at their last packet. */
    for (size_t k = 0; k < kills; k++)
        sim_cluster_kill(c, (int)(1 + k * (n / (kills + 1))));
    sim_world_run_for(w, periods * base.probe_interval_us);
    uint64_t out = 0, pp = 0, bytes = 0;
    double live = 0;
    for (size_t i = 0; i < n; i++) {
        gossip *g = sim_cluster_node(c, (int)i);
        if (!g)
            continue;
        const gossip_counters *k = gossip_counters_get(g);
        out += k->packets_out;
        pp += k->push_pull_packets;
        bytes += k->bytes_out;
        live += (double)gossip_live_count(g);
    }
    double per = (double)(n - kills) * (double)periods;
    r->swim = (double)((out - out0) - (pp - pp0)) / per;
    r->pp = (double)(pp - pp0) / per;
    r->bytes = (double)(bytes - bytes0) / per;
    r->live = live / (double)(n - kills);
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
    size_t kills = argc > 3 ? (size_t)strtoull(argv[3], NULL, 10) : 5;
    if (periods == 0 || kills > 100) {
        fprintf(stderr, "bench_gossip: periods must be > 0 and kills at most 100\n");
        return 2;
    }
    shoal_log_set_level(SHOAL_LOG_ERROR);
    const size_t sizes[2] = {1000, 10000};
    const size_t churn[2] = {0, kills};
    result r[2][2];
    printf("gossip load per member per probe period, %llu periods, seed %llu\n",
           (unsigned long long)periods, (unsigned long long)seed);
    printf("%8s %6s %11s %14s %12s %10s %8s\n", "members", "kills", "swim_msgs", "pushpull_pkts", "bytes",
           "mean_view", "wall_s");
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 2; i++) {
            if (run(sizes[i], periods, seed, churn[k], &r[k][i]) < 0) {
                fprintf(stderr, "bench_gossip: %zu members: out of memory\n", sizes[i]);
                return 1;
            }
            printf("%8zu %6zu %11.3f %14.3f %12.1f %10.1f %8.1f\n", sizes[i], churn[k], r[k][i].swim,
                   r[k][i].pp, r[k][i].bytes, r[k][i].live, r[k][i].wall);
            fflush(stdout);
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double steady = r[0][1].swim / r[0][0].swim, churned = r[1][1].swim / r[1][0].swim;
    printf("ratio swim_msgs 10000/1000 steady = %.3f, with %zu failures = %.3f (target <= 1.1)\n", steady,
           kills, churned);
    printf("peak rss = %.0f MiB\n", (double)ru.ru_maxrss / 1024.0);
    return steady <= 1.1 && churned <= 1.1 ? 0 : 1;
}
