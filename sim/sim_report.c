/*
 * Reports of a run. The summary is derived from the model's counters only; every number written to
 * a file is formatted with a fixed precision, so two runs with one seed write identical bytes.
 * Prices: GETs and PUTs per 1,000 requests, egress per GiB (2^30 bytes, as AWS bills a "GB").
 * 503 answers are counted but not billed. Plots are one gnuplot script over the CSVs, kept in the
 * output folder so a user can restyle and rerun it.
 */
#include "sim_report.h"
#include "shoal_error.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const sys_name[SIM_SYSTEMS] = {"shoal", "independent", "nocache"};
static const char *const sys_title[SIM_SYSTEMS] = {"Shoal", "independent caches", "no cache"};

#define GIB 1073741824.0

static double dollars(const sim_config *c, double gets, double bytes, double puts)
{
    return gets / 1000 * c->get_price + bytes / GIB * c->egress_price + puts / 1000 * c->put_price;
}

static double percentile(const uint64_t *h, double q)
{
    uint64_t total = 0;
    for (int i = 0; i < SIM_LAT_BUCKETS; i++)
        total += h[i];
    if (!total)
        return 0;
    uint64_t want = (uint64_t)ceil(q * (double)total), acc = 0;
    for (int i = 0; i < SIM_LAT_BUCKETS; i++) {
        acc += h[i];
        if (acc >= want)
            return SIM_LAT_BASE_US * pow(1.25, i + 0.5) * 1e-6;
    }
    return SIM_LAT_BASE_US * pow(1.25, SIM_LAT_BUCKETS) * 1e-6;
}

void sim_summary_compute(const sim_model *m, sim_summary *s)
{
    const sim_result *r = sim_model_result(m);
    const sim_config *c = sim_model_config(m);
    memset(s, 0, sizeof *s);
    for (int k = 0; k < SIM_SYSTEMS; k++) {
        double reads = 0, hits = 0, puts = 0;
        for (size_t e = 0; e < r->n_epochs; e++) {
            const sim_sys_stats *st = &r->epochs[e].sys[k];
            s->s3_gets[k] += (double)st->s3_gets;
            s->s3_bytes[k] += (double)st->s3_bytes;
            s->s3_503[k] += (double)st->s3_503;
            reads += (double)st->reads;
            hits += (double)(st->local_hits + st->peer_hits);
            puts += (double)st->puts;
        }
        s->dollars[k] = dollars(c, s->s3_gets[k], s->s3_bytes[k], puts);
        s->hit_ratio[k] = reads > 0 ? hits / reads : 0;
        s->lat_p50[k] = percentile(r->latency[k], 0.5);
        s->lat_p99[k] = percentile(r->latency[k], 0.99);
    }
    s->msgs_per_node_period = r->node_seconds_steady > 0
                                  ? (double)r->packets_steady / r->node_seconds_steady * r->probe_interval_s
                                  : 0;
    double sum_p = 0, sum_s = 0, sum_d = 0, sum_a = 0;
    size_t n_s = 0, n_d = 0;
    s->victims = r->n_victims;
    for (size_t v = 0; v < r->n_victims; v++) {
        const sim_victim *x = &r->victims[v];
        if (x->first_probe >= 0) {
            s->victims_probed++;
            sum_p += x->probe_periods;
        }
        if (x->first_suspect >= 0) {
            n_s++;
            sum_s += x->first_suspect - x->killed;
        }
        if (x->first_dead >= 0) {
            n_d++;
            sum_d += x->first_dead - x->killed;
        }
        if (x->all_dead >= 0) {
            double p = (x->all_dead - x->killed) / r->probe_interval_s;
            s->victims_all_dead++;
            sum_a += p;
            if (p > s->max_all_dead_periods)
                s->max_all_dead_periods = p;
        }
    }
    s->mean_probe_periods = s->victims_probed ? sum_p / (double)s->victims_probed : 0;
    s->mean_first_suspect_s = n_s ? sum_s / (double)n_s : 0;
    s->mean_first_dead_s = n_d ? sum_d / (double)n_d : 0;
    s->mean_all_dead_periods = s->victims_all_dead ? sum_a / (double)s->victims_all_dead : 0;
    for (size_t t = 0; t < r->n_ticks; t++) {
        s->false_suspicions += r->ticks[t].false_suspicions;
        s->false_deaths += r->ticks[t].false_deaths;
        s->moved_blocks += r->ticks[t].moved_blocks;
        s->moved_bytes += r->ticks[t].moved_bytes;
    }
    s->join_move_ratio = r->join_ideal_milli ? (double)r->join_moved_blocks * 1000.0 / (double)r->join_ideal_milli : 0;
}

static double epoch_dollars(const sim_config *c, const sim_sys_stats *st)
{
    return dollars(c, (double)st->s3_gets, (double)st->s3_bytes, (double)st->puts);
}

void sim_report_print(const sim_model *m, const sim_summary *s, FILE *f)
{
    const sim_result *r = sim_model_result(m);
    const sim_config *c = sim_model_config(m);
    fprintf(f, "shoal-sim: %u nodes (%u with joins), seed %llu, %.0f s simulated\n", c->nodes, r->nodes_total,
            (unsigned long long)c->seed, c->duration_s);
    fprintf(f, "dataset: %u objects, %llu blocks of up to %u bytes, %.2f GiB; %s reads; cache %.1f GiB/node; R=%u\n",
            r->files, (unsigned long long)r->blocks, c->wl.block_size, (double)r->dataset_bytes / GIB,
            c->wl.full ? "full-dataset" : "sharded", (double)c->wl.cache_bytes / GIB, c->wl.replicas);
    fprintf(f, "prices: $%.4f/GiB egress%s, $%.4f per 1,000 GETs, $%.4f per 1,000 PUTs\n\n", c->egress_price,
            c->egress_price == 0.09 ? " (internet egress; same-region EC2 is $0: --egress-price 0)" : "",
            c->get_price, c->put_price);
    fprintf(f, "%-6s %-20s %14s %12s %10s %10s %12s\n", "epoch", "system", "S3 GETs", "egress GiB", "503s",
            "hit ratio", "USD");
    for (size_t e = 0; e < r->n_epochs; e++) {
        for (int k = 0; k < SIM_SYSTEMS; k++) {
            const sim_sys_stats *st = &r->epochs[e].sys[k];
            double hr = st->reads ? (double)(st->local_hits + st->peer_hits) / (double)st->reads : 0;
            fprintf(f, "%-6zu %-20s %14llu %12.2f %10llu %10.4f %12.4f\n", e + 1, sys_title[k],
                    (unsigned long long)st->s3_gets, (double)st->s3_bytes / GIB, (unsigned long long)st->s3_503,
                    hr, epoch_dollars(c, st));
        }
        fprintf(f, "%-6s %-20s %14llu %12.2f\n", "", "(unique blocks)",
                (unsigned long long)r->epochs[e].unique_blocks, (double)r->epochs[e].unique_bytes / GIB);
    }
    fprintf(f, "\n%-20s %14s %12s %10s %12s %10s %10s\n", "total", "S3 GETs", "egress GiB", "503s", "USD",
            "p50 ms", "p99 ms");
    for (int k = 0; k < SIM_SYSTEMS; k++)
        fprintf(f, "%-20s %14.0f %12.2f %10.0f %12.4f %10.2f %10.2f\n", sys_title[k], s->s3_gets[k],
                s->s3_bytes[k] / GIB, s->s3_503[k], s->dollars[k], s->lat_p50[k] * 1e3, s->lat_p99[k] * 1e3);
    fprintf(f,
            "\ngossip: %.3f messages per node per probe period from the workload start on; %llu false "
            "suspicions, %llu false deaths\n",
            s->msgs_per_node_period, (unsigned long long)s->false_suspicions, (unsigned long long)s->false_deaths);
    if (s->victims)
        fprintf(f,
                "failures: %zu; first probe after %.3f periods on average (SWIM: e/(e-1) = 1.582); first suspicion "
                "%.2f s, declared dead %.2f s; known to every node after %.1f periods on average, %.1f at most "
                "(6*log2(N) = %.1f); %zu of %zu reached everyone\n",
                s->victims, s->mean_probe_periods, s->mean_first_suspect_s, s->mean_first_dead_s,
                s->mean_all_dead_periods, s->max_all_dead_periods, 6 * log2((double)c->nodes), s->victims_all_dead,
                s->victims);
    fprintf(f, "placement: %llu replicas moved by churn (%.2f GiB)", (unsigned long long)s->moved_blocks,
            (double)s->moved_bytes / GIB);
    if (r->join_moves)
        fprintf(f, "; on joins %.3f x the ideal R/(N+1)", s->join_move_ratio);
    fprintf(f, "; %llu views built, %llu owner lookups\n", (unsigned long long)r->views_built,
            (unsigned long long)r->owner_lookups);
    if (r->ckpt_puts)
        fprintf(f, "checkpoints: %llu PUTs, %.2f GiB written\n", (unsigned long long)r->ckpt_puts,
                (double)r->ckpt_bytes / GIB);
}

static FILE *open_in(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        shoal_error_errno(errno, "sim: cannot write %s", path);
    return f;
}

static int close_checked(FILE *f, const char *dir, const char *name)
{
    int bad = ferror(f);
    if (fclose(f) != 0 || bad)
        return shoal_error_set(SHOAL_ERR_IO, "sim: writing %s/%s failed", dir, name);
    return 0;
}

static void json_dist(FILE *f, const char *name, const sim_dist *d, bool last)
{
    static const char *const kinds[] = {"fixed", "uniform", "lognormal"};
    fprintf(f, "    \"%s\": {\"kind\": \"%s\", \"a\": %.9g, \"b\": %.9g}%s\n", name, kinds[d->kind], d->a, d->b,
            last ? "" : ",");
}

static int write_json(const sim_model *m, const sim_summary *s, const char *dir)
{
    const sim_result *r = sim_model_result(m);
    const sim_config *c = sim_model_config(m);
    FILE *f = open_in(dir, "summary.json");
    if (!f)
        return -1;
    fprintf(f, "{\n  \"version\": \"%s\",\n  \"config\": {\n", SHOAL_VERSION);
    fprintf(f, "    \"nodes\": %u, \"seed\": %llu, \"duration_s\": %.6f, \"loss\": %.6f, \"bootstrap\": \"%s\", "
               "\"push_pull_interval_s\": %.6f,\n",
            c->nodes, (unsigned long long)c->seed, c->duration_s, c->loss, c->join_bootstrap ? "join" : "preload",
            c->push_pull_s > 0 ? c->push_pull_s : 30.0);
    fprintf(f, "    \"bandwidth_bytes_per_s\": %.6g, \"s3_throughput_bytes_per_s\": %.6g, "
               "\"s3_rate_per_prefix\": %.6g,\n",
            c->bandwidth_bps, c->s3_throughput, c->s3_rate);
    fprintf(f, "    \"egress_usd_per_gib\": %.6f, \"get_usd_per_1000\": %.6f, \"put_usd_per_1000\": %.6f,\n",
            c->egress_price, c->get_price, c->put_price);
    fprintf(f, "    \"files\": %u, \"block_size\": %u, \"epochs\": %u, \"read\": \"%s\", \"cache_bytes\": %llu,\n",
            r->files, c->wl.block_size, c->wl.epochs, c->wl.full ? "full" : "shard",
            (unsigned long long)c->wl.cache_bytes);
    fprintf(f, "    \"replicas\": %u, \"zones\": %u, \"prefixes\": %u, \"start_s\": %.6f, \"checkpoint_s\": %.6f, "
               "\"checkpoint_bytes\": %llu, \"sizes_from_file\": %s,\n",
            c->wl.replicas, c->wl.zones, c->wl.prefixes, c->wl.start_s, c->wl.checkpoint_s,
            (unsigned long long)c->wl.checkpoint_bytes, c->wl.sizes_path[0] ? "true" : "false");
    json_dist(f, "file_size", &c->wl.file_size, false);
    json_dist(f, "latency_s", &c->latency, false);
    json_dist(f, "s3_latency_s", &c->s3_latency, true);
    fprintf(f, "  },\n  \"dataset\": {\"blocks\": %llu, \"bytes\": %llu},\n", (unsigned long long)r->blocks,
            (unsigned long long)r->dataset_bytes);
    fprintf(f, "  \"systems\": {\n");
    for (int k = 0; k < SIM_SYSTEMS; k++) {
        fprintf(f, "    \"%s\": {\"s3_gets\": %.0f, \"egress_bytes\": %.0f, \"s3_503\": %.0f, \"usd\": %.6f, "
                   "\"hit_ratio\": %.6f, \"latency_p50_s\": %.6f, \"latency_p99_s\": %.6f, \"epochs\": [",
                sys_name[k], s->s3_gets[k], s->s3_bytes[k], s->s3_503[k], s->dollars[k], s->hit_ratio[k],
                s->lat_p50[k], s->lat_p99[k]);
        for (size_t e = 0; e < r->n_epochs; e++) {
            const sim_sys_stats *st = &r->epochs[e].sys[k];
            fprintf(f, "%s{\"reads\": %llu, \"local_hits\": %llu, \"peer_hits\": %llu, \"s3_gets\": %llu, "
                       "\"egress_bytes\": %llu, \"s3_503\": %llu, \"peer_bytes\": %llu, \"fallbacks\": %llu, "
                       "\"puts\": %llu, \"usd\": %.6f}",
                    e ? ", " : "", (unsigned long long)st->reads, (unsigned long long)st->local_hits,
                    (unsigned long long)st->peer_hits, (unsigned long long)st->s3_gets,
                    (unsigned long long)st->s3_bytes, (unsigned long long)st->s3_503,
                    (unsigned long long)st->peer_bytes, (unsigned long long)st->fallbacks,
                    (unsigned long long)st->puts, epoch_dollars(c, st));
        }
        fprintf(f, "]}%s\n", k + 1 < SIM_SYSTEMS ? "," : "");
    }
    fprintf(f, "  },\n  \"epochs\": [");
    for (size_t e = 0; e < r->n_epochs; e++)
        fprintf(f, "%s{\"start_s\": %.6f, \"end_s\": %.6f, \"unique_blocks\": %llu, \"unique_bytes\": %llu}",
                e ? ", " : "", r->epochs[e].start_s, r->epochs[e].end_s,
                (unsigned long long)r->epochs[e].unique_blocks, (unsigned long long)r->epochs[e].unique_bytes);
    fprintf(f, "],\n  \"gossip\": {\"packets\": %llu, \"messages_per_node_per_period\": %.6f, "
               "\"false_suspicions\": %llu, \"false_deaths\": %llu, \"probe_interval_s\": %.6f},\n",
            (unsigned long long)r->packets_total, s->msgs_per_node_period, (unsigned long long)s->false_suspicions,
            (unsigned long long)s->false_deaths, r->probe_interval_s);
    fprintf(f, "  \"failures\": {\"count\": %zu, \"probed\": %zu, \"reached_everyone\": %zu, "
               "\"mean_probe_periods_to_first_detection\": %.6f, \"mean_first_suspect_s\": %.6f, "
               "\"mean_first_dead_s\": %.6f, \"mean_periods_to_everyone\": %.6f, \"max_periods_to_everyone\": %.6f},\n",
            s->victims, s->victims_probed, s->victims_all_dead, s->mean_probe_periods, s->mean_first_suspect_s,
            s->mean_first_dead_s, s->mean_all_dead_periods, s->max_all_dead_periods);
    fprintf(f, "  \"placement\": {\"moved_replicas\": %llu, \"moved_bytes\": %llu, \"join_changes\": %llu, "
               "\"join_moved_replicas\": %llu, \"join_move_ratio_to_ideal\": %.6f, \"views_built\": %llu, "
               "\"owner_lookups\": %llu},\n",
            (unsigned long long)s->moved_blocks, (unsigned long long)s->moved_bytes,
            (unsigned long long)r->join_moves, (unsigned long long)r->join_moved_blocks, s->join_move_ratio,
            (unsigned long long)r->views_built, (unsigned long long)r->owner_lookups);
    fprintf(f, "  \"checkpoints\": {\"puts\": %llu, \"bytes\": %llu}\n}\n", (unsigned long long)r->ckpt_puts,
            (unsigned long long)r->ckpt_bytes);
    return close_checked(f, dir, "summary.json");
}

static void ratio_or_nan(FILE *f, uint64_t num, uint64_t den)
{
    if (den)
        fprintf(f, ",%.6f", (double)num / (double)den);
    else
        fprintf(f, ",NaN");
}

static int write_csvs(const sim_model *m, const char *dir)
{
    const sim_result *r = sim_model_result(m);
    const sim_config *c = sim_model_config(m);
    FILE *f = open_in(dir, "timeseries.csv");
    if (!f)
        return -1;
    fprintf(f, "t,running,seen_mean,seen_min,seen_max,views,suspicions,false_suspicions,false_deaths,detections,"
               "packets,hit_ratio_shoal,hit_ratio_independent,s3_gets_shoal,s3_gets_independent,s3_gets_nocache,"
               "s3_503_shoal,s3_503_independent,s3_503_nocache,moved_replicas,moved_bytes\n");
    for (size_t i = 0; i < r->n_ticks; i++) {
        const sim_tick *t = &r->ticks[i];
        fprintf(f, "%u,%u,%.4f,%u,%u,%u,%u,%u,%u,%u,%llu", t->t, t->running, t->seen_mean, t->seen_min, t->seen_max,
                t->views, t->suspicions, t->false_suspicions, t->false_deaths, t->detections,
                (unsigned long long)t->packets);
        ratio_or_nan(f, t->hits[SIM_SHOAL], t->reads[SIM_SHOAL]);
        ratio_or_nan(f, t->hits[SIM_INDEP], t->reads[SIM_INDEP]);
        for (int k = 0; k < SIM_SYSTEMS; k++)
            fprintf(f, ",%llu", (unsigned long long)t->s3_gets[k]);
        for (int k = 0; k < SIM_SYSTEMS; k++)
            fprintf(f, ",%llu", (unsigned long long)t->s3_503[k]);
        fprintf(f, ",%llu,%llu\n", (unsigned long long)t->moved_blocks, (unsigned long long)t->moved_bytes);
    }
    if (close_checked(f, dir, "timeseries.csv") < 0)
        return -1;

    if (!(f = open_in(dir, "epochs.csv")))
        return -1;
    fprintf(f, "epoch,system,reads,local_hits,peer_hits,s3_gets,egress_bytes,s3_503,peer_bytes,fallbacks,puts,usd\n");
    for (size_t e = 0; e < r->n_epochs; e++)
        for (int k = 0; k < SIM_SYSTEMS; k++) {
            const sim_sys_stats *st = &r->epochs[e].sys[k];
            fprintf(f, "%zu,%s,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%.6f\n", e + 1, sys_name[k],
                    (unsigned long long)st->reads, (unsigned long long)st->local_hits,
                    (unsigned long long)st->peer_hits, (unsigned long long)st->s3_gets,
                    (unsigned long long)st->s3_bytes, (unsigned long long)st->s3_503,
                    (unsigned long long)st->peer_bytes, (unsigned long long)st->fallbacks,
                    (unsigned long long)st->puts, epoch_dollars(c, st));
        }
    if (close_checked(f, dir, "epochs.csv") < 0)
        return -1;

    if (!(f = open_in(dir, "detections.csv")))
        return -1;
    fprintf(f, "node,killed_s,first_probe_s,probe_periods,first_suspect_s,first_dead_s,everyone_s\n");
    for (size_t v = 0; v < r->n_victims; v++) {
        const sim_victim *x = &r->victims[v];
        fprintf(f, "%u,%.6f,%.6f,%u,%.6f,%.6f,%.6f\n", x->node, x->killed, x->first_probe, x->probe_periods,
                x->first_suspect, x->first_dead, x->all_dead);
    }
    if (close_checked(f, dir, "detections.csv") < 0)
        return -1;

    if (!(f = open_in(dir, "latency.csv")))
        return -1;
    fprintf(f, "latency_ms,shoal,independent,nocache\n");
    for (int i = 0; i < SIM_LAT_BUCKETS; i++)
        fprintf(f, "%.6f,%llu,%llu,%llu\n", SIM_LAT_BASE_US * pow(1.25, i + 0.5) * 1e-3,
                (unsigned long long)r->latency[0][i], (unsigned long long)r->latency[1][i],
                (unsigned long long)r->latency[2][i]);
    return close_checked(f, dir, "latency.csv");
}

int sim_report_write(const sim_model *m, const sim_summary *s, const char *dir)
{
    if (mkdir(dir, 0777) < 0 && errno != EEXIST)
        return shoal_error_errno(errno, "sim: cannot create %s", dir);
    if (write_json(m, s, dir) < 0 || write_csvs(m, dir) < 0)
        return -1;
    return 0;
}

static const char plot_script[] =
    "# shoal-sim plots: run `gnuplot plots.gp` in this folder.\n"
    "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
    "  set terminal pngcairo size 960,540 font 'sans,10'\n"
    "} else {\n"
    "  set terminal png size 960,540\n"
    "}\n"
    "set datafile separator ','\n"
    "set key outside right top\n"
    "set grid\n"
    "set xlabel 'simulated time (s)'\n"
    "\n"
    "set output 'membership.png'\n"
    "set title 'Membership: live members seen by each running node'\n"
    "set ylabel 'members'\n"
    "plot 'timeseries.csv' using 1:2 skip 1 with lines lw 2 title 'running nodes', \\\n"
    "     '' using 1:3 skip 1 with lines title 'seen (mean)', \\\n"
    "     '' using 1:4 skip 1 with lines title 'seen (min)', \\\n"
    "     '' using 1:5 skip 1 with lines title 'seen (max)'\n"
    "\n"
    "set output 'failures.png'\n"
    "set title 'Failure detector events per second'\n"
    "set ylabel 'events / s'\n"
    "set yrange [0:*]\n"
    "set offsets 0, 0, 1, 0\n"
    "plot 'timeseries.csv' using 1:7 skip 1 with impulses lw 2 title 'suspicions', \\\n"
    "     '' using 1:($10 > 0 ? $10 : NaN) skip 1 with points pt 7 ps 1.5 title 'failures detected', \\\n"
    "     '' using 1:($8 > 0 ? $8 : NaN) skip 1 with points pt 2 ps 1.5 title 'false suspicions', \\\n"
    "     '' using 1:($9 > 0 ? $9 : NaN) skip 1 with points pt 6 ps 1.5 title 'false deaths'\n"
    "set offsets 0, 0, 0, 0\n"
    "\n"
    "set output 'hit_ratio.png'\n"
    "set title 'Cache hit ratio per second'\n"
    "set ylabel 'hits / reads'\n"
    "set yrange [0:1.05]\n"
    "plot 'timeseries.csv' using 1:12 skip 1 with lines lw 2 title 'Shoal', \\\n"
    "     '' using 1:13 skip 1 with lines lw 2 title 'independent caches'\n"
    "set yrange [*:*]\n"
    "\n"
    "set output 's3_requests.png'\n"
    "set title 'S3 GET requests per second'\n"
    "set ylabel 'GETs / s'\n"
    "set logscale y\n"
    "plot 'timeseries.csv' using 1:($14 > 0 ? $14 : NaN) skip 1 with lines lw 2 title 'Shoal', \\\n"
    "     '' using 1:($15 > 0 ? $15 : NaN) skip 1 with lines lw 2 title 'independent caches', \\\n"
    "     '' using 1:($16 > 0 ? $16 : NaN) skip 1 with lines lw 2 title 'no cache'\n"
    "unset logscale y\n"
    "\n"
    "set output 'churn_moves.png'\n"
    "set title 'Data whose owner changed (churn)'\n"
    "set ylabel 'MiB / s'\n"
    "set y2label 'running nodes'\n"
    "set y2tics\n"
    "plot 'timeseries.csv' using 1:($21 / 1048576) skip 1 with impulses lw 2 title 'bytes moved', \\\n"
    "     '' using 1:2 skip 1 axes x1y2 with lines title 'running nodes (right)'\n"
    "unset y2tics\n"
    "unset y2label\n"
    "\n"
    "set output 'cost.png'\n"
    "set title 'Cost per epoch (S3 GETs + egress + PUTs)'\n"
    "set xlabel 'epoch'\n"
    "set ylabel 'USD'\n"
    "set style data histograms\n"
    "set style histogram clustered\n"
    "set style fill solid 0.8\n"
    "set boxwidth 0.9\n"
    "set logscale y\n"
    "plot '< grep ,shoal, epochs.csv' using 12:xtic(1) title 'Shoal', \\\n"
    "     '< grep ,independent, epochs.csv' using 12 title 'independent caches', \\\n"
    "     '< grep ,nocache, epochs.csv' using 12 title 'no cache'\n";

int sim_report_plot(const char *dir)
{
    FILE *f = open_in(dir, "plots.gp");
    if (!f)
        return -1;
    fputs(plot_script, f);
    if (close_checked(f, dir, "plots.gp") < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return shoal_error_errno(errno, "sim: fork for gnuplot");
    if (pid == 0) {
        if (chdir(dir) == 0)
            execlp("gnuplot", "gnuplot", "plots.gp", (char *)NULL);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0)
        return shoal_error_errno(errno, "sim: waiting for gnuplot");
    if (!WIFEXITED(st) || WEXITSTATUS(st) == 127)
        return shoal_error_set(SHOAL_ERR_IO, "sim: gnuplot could not be run in %s (install gnuplot-nox)", dir);
    if (WEXITSTATUS(st) != 0)
        return shoal_error_set(SHOAL_ERR_IO, "sim: gnuplot failed on %s/plots.gp (exit %d)", dir, WEXITSTATUS(st));
    return 0;
}
