/*
 * shoal-sim at scale, side by side in one run: the same workload and failures at 1,000 and at
 * 10,000 nodes (or the sizes given), each for the same simulated time from a converged start.
 * Prints per size the wall and CPU time (CPU is the figure to trust on a shared machine), the
 * peak memory so far (getrusage), gossip messages per node per probe period before the failures
 * (steady) and from them to the end, and how long the deaths took to reach every node against
 * SWIM's 6*log2(N) periods; then the ratios of the per-node message load between the two sizes
 * (SWIM's claim: the failure detector's load does not grow with N; target <= 1.1 steady. With
 * failures, each update is retransmitted 4 * ceil(log10(n + 1)) times, 16 at 1,000 and 20 at
 * 10,000, so the dissemination part grows with log n by design).
 *
 *   bench_sim [seconds] [small] [large] [seed] [push-pull-s]   (defaults: 300 1000 10000 1 0)
 *
 * push-pull-s > 0 sets gossip's push-pull base interval (0: its default, 30 s stretched with log2 N;
 * between equal views an exchange is two digests).
 *
 * It checks issue 6's two 10,000-node claims and exits 1 when one fails: every death reaches every
 * node within 6*log2(N) periods at both sizes, and the steady per-node load ratio is <= 1.1.
 */
#include "shoal_error.h"
#include "shoal_log.h"
#include "sim_model.h"
#include "sim_report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static double wall_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec * 1e-6;
}

/* Gossip load in one run, split at the failures: before them (steady) and from them on. */
typedef struct load {
    double steady, failures;
} load;

/* Datagrams per running node per probe period over the seconds (from, to]. */
static double window_load(const sim_result *r, double from, double to)
{
    double packets = 0, node_s = 0;
    for (size_t i = 0; i < r->n_ticks; i++) {
        if (r->ticks[i].t > from && r->ticks[i].t <= to) {
            packets += (double)r->ticks[i].packets;
            node_s += r->ticks[i].running;
        }
    }
    return node_s > 0 ? packets / node_s * r->probe_interval_s : 0;
}

static int failed;

static int run(uint32_t nodes, double seconds, uint64_t seed, double push_pull_s, load *out)
{
    sim_summary sum, *s = &sum;
    sim_config c;
    sim_config_defaults(&c);
    c.nodes = nodes;
    c.seed = seed;
    c.duration_s = seconds;
    c.wl.files = 10000;
    c.wl.start_s = 10;
    c.wl.epochs = 2;
    c.push_pull_s = push_pull_s;
    /* Five failures, well after the start, so each death's spread is measured in a quiet cluster. */
    char churn[64];
    double kill_at = floor(seconds / 3);
    snprintf(churn, sizeof churn, "kill@%.0f:5", kill_at);
    if (sim_parse_churn(churn, &c.churn) < 0)
        return -1;
    double t0 = wall_s(), c0 = cpu_s();
    sim_model *m = sim_model_run(&c);
    if (!m)
        return -1;
    double wall = wall_s() - t0, cpu = cpu_s() - c0;
    sim_summary_compute(m, s);
    const sim_result *r = sim_model_result(m);
    out->steady = window_load(r, c.wl.start_s, kill_at);
    out->failures = window_load(r, kill_at, seconds);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%7u nodes: %8.1f s wall, %8.1f s CPU for %.0f simulated s, peak memory %8.1f MiB; "
           "messages/node/period %.3f steady, %.3f with 5 failures; deaths reached everyone in %.1f periods "
           "at most (%zu of %zu; bound 6*log2(N) = %.1f); first probe after %.2f periods\n",
           nodes, wall, cpu, seconds, (double)ru.ru_maxrss / 1024.0, out->steady, out->failures,
           s->max_all_dead_periods, s->victims_all_dead, s->victims, 6 * log2((double)nodes),
           s->mean_probe_periods);
    fflush(stdout);
    if (s->victims_all_dead != s->victims || s->max_all_dead_periods > 6 * log2((double)nodes)) {
        printf("FAIL: at %u nodes a death did not reach every node within 6*log2(N) periods\n", nodes);
        failed = 1;
    }
    sim_model_delete(m);
    return 0;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 300;
    uint32_t small = argc > 2 ? (uint32_t)atoi(argv[2]) : 1000;
    uint32_t large = argc > 3 ? (uint32_t)atoi(argv[3]) : 10000;
    uint64_t seed = argc > 4 ? strtoull(argv[4], NULL, 10) : 1;
    double push_pull_s = argc > 5 ? atof(argv[5]) : 0;
    if (seconds < 30 || small < 2 || large < small) {
        fprintf(stderr, "usage: bench_sim [seconds >= 30] [small >= 2] [large >= small] [seed] [push-pull-s]\n");
        return 2;
    }
    shoal_log_set_level(SHOAL_LOG_ERROR);
    load a, b;
    if (run(small, seconds, seed, push_pull_s, &a) < 0 || run(large, seconds, seed, push_pull_s, &b) < 0) {
        fprintf(stderr, "bench_sim: %s\n", shoal_error_message());
        return 1;
    }
    printf("messages per node per period, %u / %u nodes: %.3f steady (target <= 1.1), %.3f with failures\n",
           large, small, b.steady / a.steady, b.failures / a.failures);
    if (b.steady / a.steady > 1.1) {
        printf("FAIL: the steady per-node load grows more than 1.1 times from %u to %u nodes\n", small, large);
        failed = 1;
    }
    return failed;
}
