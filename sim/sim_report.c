/*
 * Reports of a run. The summary is derived from the model's counters only; every number written to
 * a file is formatted with a fixed precision, so two runs with one seed write identical bytes.
 * Prices (sim_dollars): GETs and HEADs, PUTs and LISTs per 1,000 requests, egress and cross-zone
 * peer traffic per GiB (2^30 bytes, as AWS bills a "GB"). 503 answers are counted but not billed. Plots are one gnuplot script over the CSVs, kept in the
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

const char *sim_limit_name(sim_limit l)
{
    static const char *const names[] = {"the job's pace", "NIC", "S3 connections", "S3 request rate"};
    return (unsigned)l < 4 ? names[l] : "?";
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
        double reads = 0, hits = 0, warm = 0;
        s->sustained[k] = true;
        for (size_t e = 0; e < r->n_epochs; e++) {
            const sim_sys_stats *st = &r->epochs[e].sys[k];
            const sim_pace *pc = &r->epochs[e].pace[k];
            s->s3_gets[k] += (double)st->s3_gets;
            s->s3_bytes[k] += (double)st->s3_bytes;
            s->s3_503[k] += (double)st->s3_503;
            s->s3_heads[k] += (double)st->s3_heads;
            s->s3_lists[k] += (double)st->s3_lists;
            s->xzone_bytes[k] += (double)st->xzone_bytes;
            s->peer_bytes[k] += (double)st->peer_bytes;
            double usd = sim_dollars(c, st);
            s->dollars[k] += usd;
            if (e > 0 || r->n_epochs == 1)
                warm += usd;
            reads += (double)st->reads;
            hits += (double)(st->local_hits + st->peer_hits);
            s->wall_mean_s[k] += pc->wall_s / (double)r->n_epochs;
            if (pc->stall > s->stall_max[k]) {
                s->stall_max[k] = pc->stall;
                s->worst_limit[k] = pc->limit;
            }
            if (pc->stall > 1e-9)
                s->sustained[k] = false;
        }
        s->epoch_usd[k] = r->n_epochs > 1 ? warm / (double)(r->n_epochs - 1) : warm;
        s->hit_ratio[k] = reads > 0 ? hits / reads : 0;
        s->lat_p50[k] = percentile(r->latency[k], 0.5);
        s->lat_p99[k] = percentile(r->latency[k], 0.99);
    }
    /* A job that trains around the clock runs 86,400 / (epoch wall time) epochs a day. */
    double wall = s->wall_mean_s[SIM_SHOAL] > 0 ? s->wall_mean_s[SIM_SHOAL] : r->epoch_s;
    s->epochs_per_day = c->epochs_per_day > 0 ? c->epochs_per_day : (wall > 0 ? 86400 / wall : 0);
    for (int k = 0; k < SIM_SYSTEMS; k++) {
        s->month_usd[k] = 30 * s->epochs_per_day * s->epoch_usd[k];
        s->saved_vs_nocache[k] = s->dollars[SIM_NOCACHE] - s->dollars[k];
        s->saved_pct_vs_nocache[k] =
            s->dollars[SIM_NOCACHE] > 0 ? 100 * s->saved_vs_nocache[k] / s->dollars[SIM_NOCACHE] : 0;
    }
    s->saved_vs_indep = s->dollars[SIM_INDEP] - s->dollars[SIM_SHOAL];
    s->saved_pct_vs_indep = s->dollars[SIM_INDEP] > 0 ? 100 * s->saved_vs_indep / s->dollars[SIM_INDEP] : 0;
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

void sim_report_print(const sim_model *m, const sim_summary *s, FILE *f)
{
    const sim_result *r = sim_model_result(m);
    const sim_config *c = sim_model_config(m);
    fprintf(f, "shoal-sim: %u nodes (%u with joins), seed %llu, %.0f s simulated\n", c->nodes, r->nodes_total,
            (unsigned long long)c->seed, c->duration_s);
    fprintf(f, "dataset: %u objects, %llu blocks of up to %u bytes, %.2f GiB; %s reads; cache %.1f GiB/node; R=%u\n",
            r->files, (unsigned long long)r->blocks, c->wl.block_size, (double)r->dataset_bytes / GIB,
            c->wl.full ? "full-dataset" : "sharded", (double)c->wl.cache_bytes / GIB, c->wl.replicas);
    fprintf(f, "prices (%s): $%.4f/GiB S3 egress, $%.4f/GiB between zones, $%.4f per 1,000 GETs or HEADs, "
               "$%.4f per 1,000 PUTs or LISTs\n",
            c->prices[0] ? c->prices : "set by hand", c->egress_price, c->xzone_price, c->get_price, c->put_price);
    fprintf(f, "access: %s, metadata trusted %.0f s; eviction %s, near copies up to %u %% of a cache; peer timeout "
               "%.1f s\n\n",
            c->access_get ? "shoal get (a HEAD per object for the cluster, by its metadata owner)"
                          : "the mount (a listing shared by the cluster, revalidated once per TTL; no HEAD for a "
                            "listed name)",
            c->metadata_ttl_s, c->eviction == SIM_POLICY_NO_EVICT ? "no-evict" : "lru", c->wl.near_percent,
            c->peer_timeout_s);
    fprintf(f, "%-6s %-20s %12s %10s %11s %8s %10s %11s %9s %7s\n", "epoch", "system", "S3 GETs", "HEADs",
            "egress GiB", "503s", "hit ratio", "USD", "wall s", "stall");
    for (size_t e = 0; e < r->n_epochs; e++) {
        for (int k = 0; k < SIM_SYSTEMS; k++) {
            const sim_sys_stats *st = &r->epochs[e].sys[k];
            const sim_pace *pc = &r->epochs[e].pace[k];
            double hr = st->reads ? (double)(st->local_hits + st->peer_hits) / (double)st->reads : 0;
            fprintf(f, "%-6zu %-20s %12llu %10llu %11.2f %8llu %10.4f %11.4f %9.1f %6.1f%%\n", e + 1, sys_title[k],
                    (unsigned long long)st->s3_gets, (unsigned long long)st->s3_heads, (double)st->s3_bytes / GIB,
                    (unsigned long long)st->s3_503, hr, sim_dollars(c, st), pc->wall_s, 100 * pc->stall);
        }
        fprintf(f, "%-6s %-20s %12llu %10s %11.2f\n", "", "(unique blocks)",
                (unsigned long long)r->epochs[e].unique_blocks, "", (double)r->epochs[e].unique_bytes / GIB);
    }
    fprintf(f, "\n%-20s %12s %10s %8s %11s %8s %12s %12s %8s %9s %9s\n", "total", "S3 GETs", "HEADs", "LISTs",
            "egress GiB", "503s", "USD", "saved USD", "saved", "p50 ms", "p99 ms");
    for (int k = 0; k < SIM_SYSTEMS; k++)
        fprintf(f, "%-20s %12.0f %10.0f %8.0f %11.2f %8.0f %12.4f %12.4f %7.1f%% %9.2f %9.2f\n", sys_title[k],
                s->s3_gets[k], s->s3_heads[k], s->s3_lists[k], s->s3_bytes[k] / GIB, s->s3_503[k], s->dollars[k],
                s->saved_vs_nocache[k], s->saved_pct_vs_nocache[k], s->lat_p50[k] * 1e3, s->lat_p99[k] * 1e3);
    fprintf(f, "(saved: against no cache; Shoal against the independent caches: $%.4f, %.1f %%)\n", s->saved_vs_indep,
            s->saved_pct_vs_indep);
    if (s->xzone_bytes[SIM_SHOAL] > 0)
        fprintf(f, "Shoal's peer traffic between zones: %.2f GiB of %.2f GiB, $%.4f\n", s->xzone_bytes[SIM_SHOAL] / GIB,
                s->peer_bytes[SIM_SHOAL] / GIB, s->xzone_bytes[SIM_SHOAL] / GIB * c->xzone_price);
    fprintf(f, "\nper month (30 days at %.1f warm epochs a day):", s->epochs_per_day);
    for (int k = 0; k < SIM_SYSTEMS; k++)
        fprintf(f, "%s %s $%.2f", k ? "," : "", sys_title[k], s->month_usd[k]);
    fprintf(f, "\nepoch time (the job asks %.1f s per epoch):\n", r->epoch_s);
    for (int k = 0; k < SIM_SYSTEMS; k++)
        fprintf(f, "  %-20s %s: %.1f s on average, GPUs waiting for data up to %.1f %% of an epoch%s%s\n",
                sys_title[k], s->sustained[k] ? "keeps the pace" : "cannot keep the pace", s->wall_mean_s[k],
                100 * s->stall_max[k], s->sustained[k] ? "" : "; limited by ",
                s->sustained[k] ? "" : sim_limit_name(s->worst_limit[k]));
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
    if (r->preemptions)
        fprintf(f, "spot preemptions: %llu nodes replaced by fresh ones with empty caches\n",
                (unsigned long long)r->preemptions);
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
    fprintf(f, "    \"prices\": \"%s\", \"egress_usd_per_gib\": %.6f, \"xzone_usd_per_gib\": %.6f, "
               "\"get_usd_per_1000\": %.6f, \"put_usd_per_1000\": %.6f, \"epochs_per_day\": %.6f,\n",
            c->prices, c->egress_price, c->xzone_price, c->get_price, c->put_price, s->epochs_per_day);
    fprintf(f, "    \"access\": \"%s\", \"metadata_ttl_s\": %.6f, \"eviction\": \"%s\", \"near_percent\": %u, "
               "\"peer_timeout_s\": %.6f, \"s3_connections\": %u, \"consume_bytes_per_s\": %.6g, "
               "\"epoch_s\": %.6f,\n",
            c->access_get ? "get" : "mount", c->metadata_ttl_s, c->eviction == SIM_POLICY_NO_EVICT ? "no-evict" : "lru",
            c->wl.near_percent, c->peer_timeout_s, c->s3_conns, c->wl.consume_bps, r->epoch_s);
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
        fprintf(f, "    \"%s\": {\"s3_gets\": %.0f, \"s3_heads\": %.0f, \"s3_lists\": %.0f, \"egress_bytes\": %.0f, "
                   "\"s3_503\": %.0f, \"xzone_bytes\": %.0f, \"usd\": %.6f, \"saved_usd_vs_nocache\": %.6f, "
                   "\"saved_pct_vs_nocache\": %.4f, \"usd_per_warm_epoch\": %.6f, \"usd_per_month\": %.6f, "
                   "\"hit_ratio\": %.6f, \"latency_p50_s\": %.6f, \"latency_p99_s\": %.6f, "
                   "\"epoch_wall_mean_s\": %.6f, \"stall_max\": %.6f, \"keeps_pace\": %s, \"limit\": \"%s\", "
                   "\"epochs\": [",
                sys_name[k], s->s3_gets[k], s->s3_heads[k], s->s3_lists[k], s->s3_bytes[k], s->s3_503[k],
                s->xzone_bytes[k], s->dollars[k], s->saved_vs_nocache[k], s->saved_pct_vs_nocache[k], s->epoch_usd[k],
                s->month_usd[k], s->hit_ratio[k], s->lat_p50[k], s->lat_p99[k], s->wall_mean_s[k], s->stall_max[k],
                s->sustained[k] ? "true" : "false", sim_limit_name(s->worst_limit[k]));
        for (size_t e = 0; e < r->n_epochs; e++) {
            const sim_sys_stats *st = &r->epochs[e].sys[k];
            const sim_pace *pc = &r->epochs[e].pace[k];
            fprintf(f, "%s{\"reads\": %llu, \"local_hits\": %llu, \"near_hits\": %llu, \"peer_hits\": %llu, "
                       "\"s3_gets\": %llu, \"s3_heads\": %llu, \"s3_lists\": %llu, \"egress_bytes\": %llu, "
                       "\"s3_503\": %llu, \"peer_bytes\": %llu, \"xzone_bytes\": %llu, \"fallbacks\": %llu, "
                       "\"handoff_hits\": %llu, "
                       "\"puts\": %llu, \"usd\": %.6f, \"wall_s\": %.6f, \"stall\": %.6f, \"limit\": \"%s\"}",
                    e ? ", " : "", (unsigned long long)st->reads, (unsigned long long)st->local_hits,
                    (unsigned long long)st->near_hits, (unsigned long long)st->peer_hits,
                    (unsigned long long)st->s3_gets, (unsigned long long)st->s3_heads,
                    (unsigned long long)st->s3_lists, (unsigned long long)st->s3_bytes,
                    (unsigned long long)st->s3_503, (unsigned long long)st->peer_bytes,
                    (unsigned long long)st->xzone_bytes, (unsigned long long)st->fallbacks,
                    (unsigned long long)st->handoff_hits, (unsigned long long)st->puts, sim_dollars(c, st), pc->wall_s, pc->stall, sim_limit_name(pc->limit));
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
    fprintf(f, "  \"savings\": {\"shoal_vs_nocache_usd\": %.6f, \"shoal_vs_nocache_pct\": %.4f, "
               "\"shoal_vs_independent_usd\": %.6f, \"shoal_vs_independent_pct\": %.4f, "
               "\"shoal_vs_nocache_usd_per_month\": %.6f, \"shoal_vs_independent_usd_per_month\": %.6f},\n",
            s->saved_vs_nocache[SIM_SHOAL], s->saved_pct_vs_nocache[SIM_SHOAL], s->saved_vs_indep, s->saved_pct_vs_indep,
            s->month_usd[SIM_NOCACHE] - s->month_usd[SIM_SHOAL], s->month_usd[SIM_INDEP] - s->month_usd[SIM_SHOAL]);
    fprintf(f, "  \"checkpoints\": {\"puts\": %llu, \"bytes\": %llu},\n", (unsigned long long)r->ckpt_puts,
            (unsigned long long)r->ckpt_bytes);
    fprintf(f, "  \"preemptions\": %llu\n}\n", (unsigned long long)r->preemptions);
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
               "s3_503_shoal,s3_503_independent,s3_503_nocache,moved_replicas,moved_bytes,usd_shoal,"
               "usd_independent,usd_nocache\n");
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
        fprintf(f, ",%llu,%llu,%.6f,%.6f,%.6f\n", (unsigned long long)t->moved_blocks,
                (unsigned long long)t->moved_bytes, t->usd[0], t->usd[1], t->usd[2]);
    }
    if (close_checked(f, dir, "timeseries.csv") < 0)
        return -1;

    if (!(f = open_in(dir, "epochs.csv")))
        return -1;
    fprintf(f, "epoch,system,reads,local_hits,peer_hits,s3_gets,egress_bytes,s3_503,peer_bytes,fallbacks,puts,usd,"
               "s3_heads,s3_lists,near_hits,xzone_bytes,wall_s,stall\n");
    for (size_t e = 0; e < r->n_epochs; e++)
        for (int k = 0; k < SIM_SYSTEMS; k++) {
            const sim_sys_stats *st = &r->epochs[e].sys[k];
            fprintf(f, "%zu,%s,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%.6f,%llu,%llu,%llu,%llu,%.6f,%.6f\n", e + 1,
                    sys_name[k], (unsigned long long)st->reads, (unsigned long long)st->local_hits,
                    (unsigned long long)st->peer_hits, (unsigned long long)st->s3_gets,
                    (unsigned long long)st->s3_bytes, (unsigned long long)st->s3_503,
                    (unsigned long long)st->peer_bytes, (unsigned long long)st->fallbacks,
                    (unsigned long long)st->puts, sim_dollars(c, st), (unsigned long long)st->s3_heads,
                    (unsigned long long)st->s3_lists, (unsigned long long)st->near_hits,
                    (unsigned long long)st->xzone_bytes, r->epochs[e].pace[k].wall_s, r->epochs[e].pace[k].stall);
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

/* ---- plots ---- */

static const char plot_head[] =
    "# shoal-sim plots: run `gnuplot plots.gp` in this folder.\n"
    "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
    "  set terminal pngcairo size 960,540 font 'sans,10'\n"
    "} else {\n"
    "  set terminal png size 960,540\n"
    "}\n"
    "set datafile separator ','\n"
    "set datafile missing 'NaN'\n"
    "set key outside right top\n"
    "set grid\n"
    "set xlabel 'simulated time (s)'\n"
    "set xrange [0:*]\n"
    "# Room at the top for the labels of the churn events (dashed lines).\n"
    "set offsets 0, 0, graph 0.18, 0\n";

/* Dashed vertical lines at the churn events (one per second and kind), labelled. */
static void plot_events(FILE *f, const sim_result *r)
{
    size_t marks = 0;
    for (size_t i = 0; i < r->n_events && marks < 120; i++) {
        const sim_event *e = &r->events[i];
        uint32_t count = e->count;
        while (i + 1 < r->n_events && floor(r->events[i + 1].at) == floor(e->at) &&
               strcmp(r->events[i + 1].what, e->what) == 0)
            count += r->events[++i].count;
        fprintf(f, "set arrow %zu from %.3f, graph 0 to %.3f, graph 1 nohead dashtype 2 lc rgb '#909090'\n", marks + 1,
                e->at, e->at);
        fprintf(f, "set label %zu '%s%s%.0u' at %.3f, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'\n",
                marks + 1, e->what, count > 1 ? " x" : "", count > 1 ? count : 0, e->at + 0.5);
        marks++;
    }
}

static bool any_tick(const sim_result *r, bool (*has)(const sim_tick *))
{
    for (size_t i = 0; i < r->n_ticks; i++)
        if (has(&r->ticks[i]))
            return true;
    return false;
}

static bool tick_failures(const sim_tick *t) { return t->suspicions || t->detections || t->false_deaths; }
static bool tick_moves(const sim_tick *t) { return t->moved_bytes > 0; }
static bool tick_detections(const sim_tick *t) { return t->detections > 0; }
static bool tick_false_suspicions(const sim_tick *t) { return t->false_suspicions > 0; }
static bool tick_false_deaths(const sim_tick *t) { return t->false_deaths > 0; }
static bool tick_reads(const sim_tick *t) { return t->reads[SIM_SHOAL] > 0; }

/* The plots a run has something to show in; `names` gets their file names. */
static size_t plot_list(const sim_result *r, const char **names)
{
    size_t n = 0;
    names[n++] = "membership.png";
    if (any_tick(r, tick_failures))
        names[n++] = "failures.png";
    if (any_tick(r, tick_reads)) {
        names[n++] = "hit_ratio.png";
        names[n++] = "s3_requests.png";
        names[n++] = "cost.png";
    }
    if (any_tick(r, tick_moves))
        names[n++] = "churn_moves.png";
    return n;
}

static void plot_one(FILE *f, const char *name, const sim_result *r)
{
    if (strcmp(name, "membership.png") == 0)
        fputs("set output 'membership.png'\n"
              "set title 'Membership: live members seen by each running node'\n"
              "set ylabel 'members'\n"
              "set yrange [0:*]\n"
              "plot 'timeseries.csv' using 1:2 skip 1 with lines lw 3 lc rgb '#000000' title 'running nodes', \\\n"
              "     '' using 1:3 skip 1 with lines lw 2 title 'seen (mean)', \\\n"
              "     '' using 1:4 skip 1 with lines title 'seen (min)', \\\n"
              "     '' using 1:5 skip 1 with lines title 'seen (max)'\n\n",
              f);
    else if (strcmp(name, "failures.png") == 0) {
        /* Only the series that have points: gnuplot warns about an empty one. */
        static const struct {
            int col;
            const char *style, *title;
            bool (*has)(const sim_tick *);
        } series[] = {
            {10, "points pt 7 ps 1.5", "failures detected", tick_detections},
            {8, "points pt 2 ps 1.5", "false suspicions", tick_false_suspicions},
            {9, "points pt 6 ps 1.5", "false deaths", tick_false_deaths},
        };
        fputs("set output 'failures.png'\n"
              "set title 'Failure detector events per second'\n"
              "set ylabel 'events / s'\n"
              "set yrange [0:*]\n"
              "plot 'timeseries.csv' using 1:7 skip 1 with impulses lw 2 title 'suspicions'",
              f);
        for (size_t i = 0; i < sizeof series / sizeof series[0]; i++)
            if (any_tick(r, series[i].has))
                fprintf(f, ", \\\n     '' using 1:($%d > 0 ? $%d : NaN) skip 1 with %s title '%s'", series[i].col,
                        series[i].col, series[i].style, series[i].title);
        fputs("\n\n", f);
    }
    else if (strcmp(name, "hit_ratio.png") == 0)
        fputs("set output 'hit_ratio.png'\n"
              "set title 'Reads served by a cache, per second'\n"
              "set ylabel 'hits / reads'\n"
              "set yrange [0:1.25]\n"
              "set ytics 0, 0.2, 1\n"
              "plot 'timeseries.csv' using 1:13 skip 1 with lines lw 2 lc rgb '#e69f00' title 'independent caches', \\\n"
              "     '' using 1:12 skip 1 with lines lw 3 lc rgb '#0072b2' title 'Shoal'\n"
              "set ytics autofreq\n\n",
              f);
    else if (strcmp(name, "s3_requests.png") == 0)
        fputs("set output 's3_requests.png'\n"
              "set title 'S3 GET requests per second (linear: zero is zero)'\n"
              "set ylabel 'GETs / s'\n"
              "set yrange [0:*]\n"
              "plot 'timeseries.csv' using 1:16 skip 1 with lines lw 2 lc rgb '#999999' title 'no cache', \\\n"
              "     '' using 1:15 skip 1 with lines lw 2 lc rgb '#e69f00' title 'independent caches', \\\n"
              "     '' using 1:14 skip 1 with lines lw 3 lc rgb '#0072b2' title 'Shoal'\n\n",
              f);
    else if (strcmp(name, "cost.png") == 0)
        fputs("set output 'cost.png'\n"
              "set title 'Cumulative cost: S3 requests + egress + cross-zone traffic + PUTs'\n"
              "set ylabel 'USD since the start'\n"
              "set yrange [0:*]\n"
              "set key inside left top\n"
              "plot 'timeseries.csv' using 1:24 skip 1 with lines lw 2 lc rgb '#999999' title 'no cache', \\\n"
              "     '' using 1:23 skip 1 with lines lw 2 lc rgb '#e69f00' title 'independent caches', \\\n"
              "     '' using 1:22 skip 1 with lines lw 3 lc rgb '#0072b2' title 'Shoal'\n"
              "set key outside right top\n\n",
              f);
    else if (strcmp(name, "churn_moves.png") == 0)
        fputs("set output 'churn_moves.png'\n"
              "set title 'Data whose owner changed (churn)'\n"
              "set ylabel 'MiB / s'\n"
              "set yrange [0:*]\n"
              "set y2label 'running nodes'\n"
              "set y2range [0:*]\n"
              "set y2tics\n"
              "plot 'timeseries.csv' using 1:($21 / 1048576) skip 1 with impulses lw 2 title 'bytes moved', \\\n"
              "     '' using 1:2 skip 1 axes x1y2 with lines title 'running nodes (right)'\n"
              "unset y2tics\n"
              "unset y2label\n\n",
              f);
}

int sim_report_plot(const sim_model *m, const char *dir)
{
    const sim_result *r = sim_model_result(m);
    FILE *f = open_in(dir, "plots.gp");
    if (!f)
        return -1;
    fputs(plot_head, f);
    plot_events(f, r);
    const char *names[8];
    size_t n = plot_list(r, names);
    for (size_t i = 0; i < n; i++)
        plot_one(f, names[i], r);
    if (close_checked(f, dir, "plots.gp") < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return shoal_error_errno(errno, "sim: fork for gnuplot");
    if (pid == 0) {
        /* gnuplot's warnings (fonts, empty ranges) go to plots.log, never to the terminal. */
        if (chdir(dir) == 0) {
            FILE *log = freopen("plots.log", "w", stderr);
            if (log && dup2(fileno(log), 1) >= 0)
                execlp("gnuplot", "gnuplot", "plots.gp", (char *)NULL);
        }
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0)
        return shoal_error_errno(errno, "sim: waiting for gnuplot");
    if (!WIFEXITED(st) || WEXITSTATUS(st) == 127)
        return shoal_error_set(SHOAL_ERR_IO, "sim: gnuplot could not be run in %s (install gnuplot-nox)", dir);
    if (WEXITSTATUS(st) != 0)
        return shoal_error_set(SHOAL_ERR_IO, "sim: gnuplot failed on %s/plots.gp (exit %d; see %s/plots.log)", dir,
                               WEXITSTATUS(st), dir);
    return 0;
}

/* ---- the one-page report ---- */

int sim_report_page(const sim_model *m, const sim_summary *s, const char *dir, bool plots)
{
    const sim_result *r = sim_model_result(m);
    const sim_config *c = sim_model_config(m);
    FILE *f = open_in(dir, "report.md");
    if (!f)
        return -1;
    fprintf(f, "# shoal-sim: %u nodes, %u objects (%.1f GiB), %u epochs\n\n", c->nodes, r->files,
            (double)r->dataset_bytes / GIB, c->wl.epochs);
    fprintf(f, "Seed %llu, %.0f simulated seconds; %s reads of %u-byte blocks; %.1f GiB of cache per node "
               "(eviction %s, near copies up to %u %%), R = %u, %u zone(s), %u prefix(es); prices `%s` "
               "($%.4f/GiB egress, $%.4f/GiB between zones). The files beside this page hold every figure.\n\n",
            (unsigned long long)c->seed, c->duration_s, c->wl.full ? "full-dataset" : "sharded", c->wl.block_size,
            (double)c->wl.cache_bytes / GIB, c->eviction == SIM_POLICY_NO_EVICT ? "no-evict" : "LRU",
            c->wl.near_percent, c->wl.replicas, c->wl.zones, c->wl.prefixes, c->prices[0] ? c->prices : "by hand",
            c->egress_price, c->xzone_price);
    fprintf(f, "## Cost and pace\n\n");
    fprintf(f, "| system | S3 GETs | HEADs | egress GiB | USD (run) | saved vs no cache | USD / month | hit ratio | "
               "epoch s | GPUs waiting | keeps pace |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int k = 0; k < SIM_SYSTEMS; k++)
        fprintf(f, "| %s | %.0f | %.0f | %.2f | %.2f | %.2f (%.1f %%) | %.2f | %.3f | %.1f | %.1f %% | %s |\n",
                sys_title[k], s->s3_gets[k], s->s3_heads[k], s->s3_bytes[k] / GIB, s->dollars[k],
                s->saved_vs_nocache[k], s->saved_pct_vs_nocache[k], s->month_usd[k], s->hit_ratio[k],
                s->wall_mean_s[k], 100 * s->stall_max[k],
                s->sustained[k] ? "yes" : sim_limit_name(s->worst_limit[k]));
    fprintf(f, "\nShoal against the independent caches: $%.2f saved over the run (%.1f %%), $%.2f a month at %.1f "
               "epochs a day. The job asks %.1f s per epoch; \"GPUs waiting\" is the worst epoch's share of wall "
               "time spent waiting for data, and \"keeps pace\" names the bottleneck when it does not.\n\n",
            s->saved_vs_indep, s->saved_pct_vs_indep, s->month_usd[SIM_INDEP] - s->month_usd[SIM_SHOAL],
            s->epochs_per_day, r->epoch_s);
    fprintf(f, "## Membership and failures\n\n");
    fprintf(f, "%zu failures; first probe after %.2f periods on average (SWIM: 1.58); death declared after %.1f s and "
               "known everywhere after %.1f periods on average; %llu false suspicions, %llu false deaths; %.3f gossip "
               "messages per node per period. %llu replicas (%.2f GiB) changed owner with churn.\n\n",
            s->victims, s->mean_probe_periods, s->mean_first_dead_s, s->mean_all_dead_periods,
            (unsigned long long)s->false_suspicions, (unsigned long long)s->false_deaths, s->msgs_per_node_period,
            (unsigned long long)s->moved_blocks, (double)s->moved_bytes / GIB);
    if (plots) {
        const char *names[8];
        size_t n = plot_list(r, names);
        fprintf(f, "## Plots\n\nDashed lines mark churn events.\n\n");
        for (size_t i = 0; i < n; i++)
            fprintf(f, "![%.*s](%s)\n", (int)(strlen(names[i]) - 4), names[i], names[i]);
    }
    return close_checked(f, dir, "report.md");
}
