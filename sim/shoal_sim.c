/*
 * shoal-sim: the cluster simulator's command line (SPEC.md section 5). main() parses and checks
 * every flag (a bad one prints one line naming it and exits 2), runs the model, prints the summary
 * and the run's wall time and peak memory (stdout only: the files stay deterministic), writes the
 * files and the plots. Exit 1 is a runtime failure.
 */
#include "shoal_error.h"
#include "shoal_log.h"
#include "shoal_size.h"
#include "sim_model.h"
#include "sim_report.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

static const char usage[] =
    "usage: shoal-sim [--nodes N] [--seed S] [--duration T] [--workload SPEC] [--churn SPEC] [--loss P]\n"
    "                 [--latency DIST] [--bandwidth GBIT_PER_S] [--s3-latency DIST] [--s3-throughput SIZE]\n"
    "                 [--s3-rate REQUESTS_PER_S] [--s3-connections K] [--prices PRESET] [--egress-price USD]\n"
    "                 [--xzone-price USD] [--get-price USD] [--put-price USD] [--epochs-per-day N]\n"
    "                 [--access mount|get] [--metadata-ttl T] [--peer-timeout T] [--eviction lru|no-evict]\n"
    "                 [--sweep cache=SIZE,SIZE,...] [--baseline-sample K] [--bootstrap preload|join]\n"
    "                 [--push-pull-interval T] [--private-views] [--out DIR] [--no-plots]\n"
    "\n"
    "Runs N real gossip and placement instances over a simulated network and clock, with a model of\n"
    "the data path, and compares Shoal with independent per-node caches and with no cache. With no\n"
    "flags it runs the default scenario: 64 nodes, 10,000 objects of 16 MiB, three epochs, and the\n"
    "churn kill@100:2,restart@180:1,join@240:1.\n"
    "\n"
    "  --nodes N              nodes at the start (default 64)\n"
    "  --seed S               seed of every random choice (default 1); same seed, same files\n"
    "  --duration T           simulated time, e.g. 300, 5m (default 300 s)\n"
    "  --workload SPEC        key=value,... (defaults): files=10000 file-size=16MiB block=4MiB epochs=3\n"
    "                         start=10 epoch-time=(duration-start)/epochs consume=RATE (per node, sets\n"
    "                         epoch-time) read=shard|full cache=64GiB near=10% replicas=1 zones=1\n"
    "                         prefixes=1 checkpoint=0 checkpoint-size=10GiB\n"
    "                         sizes=FILE (object sizes, one per line; replaces files= and file-size=)\n"
    "  --churn SPEC           events kill@T[:K] restart@T[:K] join@T[:K] stall@T[:K][+D] partition@T+D\n"
    "                         and rates kill-rate=PER_NODE_HOUR join-rate=PER_HOUR stall-rate=PER_NODE_HOUR\n"
    "                         preempt-rate=PER_NODE_HOUR (a fresh empty node replaces the one taken)\n"
    "                         restart-after=T stall-for=T (10 s) from=T (0)\n"
    "  --loss P               packet loss on every gossip link, 0..1 (default 0)\n"
    "  --latency DIST         one-way link latency: fixed:X, uniform:MIN:MAX or lognormal:MEDIAN:SIGMA\n"
    "                         (default uniform:100us:500us)\n"
    "  --bandwidth G          per-node network bandwidth (NIC), Gbit/s (default 25)\n"
    "  --s3-latency DIST      S3 time to first byte: fixed:X, uniform:A:B, lognormal:MEDIAN:SIGMA\n"
    "                         (default lognormal:30ms:0.6)\n"
    "  --s3-throughput SIZE   bytes per second of one S3 connection (default 100MB)\n"
    "  --s3-rate R            GET and HEAD requests per second per prefix before S3 answers 503 (5500)\n"
    "  --s3-connections K     S3 connections one node keeps busy (default 16)\n"
    "  --prices PRESET        internet (default: $0.09/GB egress), aws-same-region ($0 egress, $0.02/GB\n"
    "                         between zones), aws-cross-region ($0.02/GB egress and between zones)\n"
    "  --egress-price USD     per GB leaving S3 (overrides the preset)\n"
    "  --xzone-price USD      per GB of peer traffic between zones (overrides the preset)\n"
    "  --get-price USD        per 1,000 GETs or HEADs (default 0.0004)\n"
    "  --put-price USD        per 1,000 PUTs or LISTs (default 0.005)\n"
    "  --epochs-per-day N     for the monthly cost (default: as many as the epoch time allows)\n"
    "  --access HOW           mount (default: a listing shared by the cluster, revalidated once per TTL)\n"
    "                         or get (`shoal get`: one HEAD per object per TTL, by its metadata owner)\n"
    "  --metadata-ttl T       how long object metadata is trusted (default 60 s, as shoald)\n"
    "  --peer-timeout T       how long a reader waits for a silent owner (default 2 s, as shoald)\n"
    "  --eviction POLICY      lru (default) or no-evict (a full cache keeps what it has)\n"
    "  --sweep cache=S,S,...  run once per cache size and print hit ratio and cost per size (sweep.csv)\n"
    "  --baseline-sample K    simulate the independent caches of K nodes and scale (default 0: all)\n"
    "  --bootstrap HOW        preload: start converged (default); join: every node joins through\n"
    "                         node 0 at t=0 (set the workload's start= after the views settle)\n"
    "  --push-pull-interval T gossip's anti-entropy base interval (default 30 s, stretched with log2 N);\n"
    "                         a push-pull between equal views exchanges digests only\n"
    "  --private-views        every node keeps its whole gossip view to itself (memory N^2) instead of\n"
    "                         sharing what all views agree on; the same run, for checking\n"
    "  --out DIR              output folder (default shoal-sim-out)\n"
    "  --no-plots             do not run gnuplot\n"
    "  --help, --version\n"
    "\n"
    "Writes summary.json, timeseries.csv, epochs.csv, detections.csv, latency.csv, report.md, plots.gp\n"
    "and PNG plots into DIR. docs/simulator.md explains the model.\n";

static int bad(const char *flag, const char *why)
{
    fprintf(stderr, "shoal-sim: %s: %s\n", flag, why);
    return 2;
}

static int number(const char *flag, const char *text, double min, double max, double *out)
{
    char *end;
    double v = strtod(text, &end);
    if (!*text || *end || !isfinite(v) || v < min || v > max) {
        char why[160];
        snprintf(why, sizeof why, "'%s' is not a number in [%g, %g]", text, min, max);
        return bad(flag, why);
    }
    *out = v;
    return 0;
}

#define SWEEP_MAX 32
#define DEFAULT_CHURN "kill@100:2,restart@180:1,join@240:1"

/* "cache=SIZE,SIZE,...": up to SWEEP_MAX cache sizes. */
static int parse_sweep(const char *text, uint64_t *sizes, size_t *n)
{
    if (strncmp(text, "cache=", 6) != 0)
        return shoal_error_set(SHOAL_ERR_INVAL, "'%s': only cache=SIZE,SIZE,... can be swept", text);
    char buf[1024];
    if (strlen(text + 6) >= sizeof buf)
        return shoal_error_set(SHOAL_ERR_INVAL, "'%s' is too long", text);
    strcpy(buf, text + 6);
    *n = 0;
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (*n == SWEEP_MAX)
            return shoal_error_set(SHOAL_ERR_INVAL, "more than %d sizes to sweep", SWEEP_MAX);
        if (shoal_parse_size(item, &sizes[*n]) < 0)
            return -1;
        (*n)++;
    }
    if (!*n)
        return shoal_error_set(SHOAL_ERR_INVAL, "'%s': no size to sweep", text);
    return 0;
}

/* Hits over reads of the warm epochs (2 on; epoch 1 when there is one). */
static double warm_hit_ratio(const sim_result *r, int sys)
{
    double reads = 0, hits = 0;
    for (size_t e = r->n_epochs > 1 ? 1 : 0; e < r->n_epochs; e++) {
        reads += (double)r->epochs[e].sys[sys].reads;
        hits += (double)(r->epochs[e].sys[sys].local_hits + r->epochs[e].sys[sys].peer_hits);
    }
    return reads > 0 ? hits / reads : 0;
}

/* Runs the model once per cache size; prints and writes (sweep.csv) hit ratio and cost per size. */
static int run_sweep(const sim_config *base, const uint64_t *sizes, size_t n, const char *out)
{
    if (mkdir(out, 0777) < 0 && errno != EEXIST) {
        fprintf(stderr, "shoal-sim: cannot create %s: %s\n", out, strerror(errno));
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/sweep.csv", out);
    FILE *csv = fopen(path, "w");
    if (!csv) {
        fprintf(stderr, "shoal-sim: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(csv, "cache_bytes,cache_fraction,hit_ratio_shoal,hit_ratio_independent,usd_shoal,usd_independent,"
                 "usd_nocache,usd_month_shoal,usd_month_independent,usd_month_nocache\n");
    printf("sweep of the cache per node: %u nodes, %s eviction; hit ratios of the warm epochs (2 on)\n",
           base->nodes, base->eviction == SIM_POLICY_NO_EVICT ? "no-evict" : "lru");
    printf("%14s %10s %12s %12s %12s %12s %12s %14s\n", "cache/node", "of data", "Shoal hits", "indep hits",
           "Shoal USD", "indep USD", "no cache USD", "Shoal USD/mo");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        sim_config c = *base;
        c.wl.cache_bytes = sizes[i];
        sim_model *m = sim_model_run(&c);
        if (!m) {
            fprintf(stderr, "shoal-sim: cache %llu bytes: %s\n", (unsigned long long)sizes[i], shoal_error_message());
            rc = shoal_error_code() == SHOAL_ERR_INVAL ? 2 : 1;
            break;
        }
        const sim_result *r = sim_model_result(m);
        sim_summary s;
        sim_summary_compute(m, &s);
        double frac = (double)sizes[i] * c.nodes / (double)r->dataset_bytes;
        printf("%11.2f GiB %9.1f%% %12.4f %12.4f %12.2f %12.2f %12.2f %14.2f\n", (double)sizes[i] / 1073741824.0,
               100 * frac, warm_hit_ratio(r, SIM_SHOAL), warm_hit_ratio(r, SIM_INDEP), s.dollars[SIM_SHOAL],
               s.dollars[SIM_INDEP], s.dollars[SIM_NOCACHE], s.month_usd[SIM_SHOAL]);
        fprintf(csv, "%llu,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f\n", (unsigned long long)sizes[i], frac,
                warm_hit_ratio(r, SIM_SHOAL), warm_hit_ratio(r, SIM_INDEP), s.dollars[SIM_SHOAL], s.dollars[SIM_INDEP],
                s.dollars[SIM_NOCACHE], s.month_usd[SIM_SHOAL], s.month_usd[SIM_INDEP], s.month_usd[SIM_NOCACHE]);
        sim_model_delete(m);
    }
    if (fclose(csv) != 0 && rc == 0) {
        fprintf(stderr, "shoal-sim: writing %s failed\n", path);
        rc = 1;
    }
    if (rc == 0)
        printf("(\"of data\": the cluster's cache, nodes x size, over the dataset; files in %s)\n", out);
    return rc;
}

static double wall_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* MemAvailable from /proc/meminfo in bytes; 0 when it cannot be read (then nothing is refused). */
static uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

/* Run at exit: output that could not be written (a full disk, a closed pipe) is a failure, not
 * a silent success with an empty report. */
static void close_stdout(void)
{
    if (fclose(stdout) != 0) {
        fprintf(stderr, "shoal-sim: cannot write the output: %s\n", strerror(errno));
        _exit(1);
    }
}

int main(int argc, char **argv)
{
    atexit(close_stdout);
    enum {
        O_NODES = 256, O_SEED, O_DURATION, O_WORKLOAD, O_CHURN, O_LOSS, O_LATENCY, O_BANDWIDTH, O_S3_LATENCY,
        O_S3_THROUGHPUT, O_S3_RATE, O_EGRESS, O_GET, O_PUT, O_SAMPLE, O_BOOTSTRAP, O_PUSH_PULL, O_PRIVATE, O_OUT,
        O_NO_PLOTS, O_HELP, O_VERSION, O_S3_CONNS, O_PRICES, O_XZONE, O_EPD, O_ACCESS, O_META_TTL, O_PEER_TIMEOUT,
        O_EVICTION, O_SWEEP,
    };
    static const struct option opts[] = {
        {"nodes", required_argument, NULL, O_NODES},
        {"seed", required_argument, NULL, O_SEED},
        {"duration", required_argument, NULL, O_DURATION},
        {"workload", required_argument, NULL, O_WORKLOAD},
        {"churn", required_argument, NULL, O_CHURN},
        {"loss", required_argument, NULL, O_LOSS},
        {"latency", required_argument, NULL, O_LATENCY},
        {"bandwidth", required_argument, NULL, O_BANDWIDTH},
        {"s3-latency", required_argument, NULL, O_S3_LATENCY},
        {"s3-throughput", required_argument, NULL, O_S3_THROUGHPUT},
        {"s3-rate", required_argument, NULL, O_S3_RATE},
        {"egress-price", required_argument, NULL, O_EGRESS},
        {"get-price", required_argument, NULL, O_GET},
        {"put-price", required_argument, NULL, O_PUT},
        {"baseline-sample", required_argument, NULL, O_SAMPLE},
        {"bootstrap", required_argument, NULL, O_BOOTSTRAP},
        {"push-pull-interval", required_argument, NULL, O_PUSH_PULL},
        {"private-views", no_argument, NULL, O_PRIVATE},
        {"out", required_argument, NULL, O_OUT},
        {"no-plots", no_argument, NULL, O_NO_PLOTS},
        {"help", no_argument, NULL, O_HELP},
        {"version", no_argument, NULL, O_VERSION},
        {"s3-connections", required_argument, NULL, O_S3_CONNS},
        {"prices", required_argument, NULL, O_PRICES},
        {"xzone-price", required_argument, NULL, O_XZONE},
        {"epochs-per-day", required_argument, NULL, O_EPD},
        {"access", required_argument, NULL, O_ACCESS},
        {"metadata-ttl", required_argument, NULL, O_META_TTL},
        {"peer-timeout", required_argument, NULL, O_PEER_TIMEOUT},
        {"eviction", required_argument, NULL, O_EVICTION},
        {"sweep", required_argument, NULL, O_SWEEP},
        {NULL, 0, NULL, 0},
    };
    sim_config cfg;
    sim_config_defaults(&cfg);
    const char *out = "shoal-sim-out";
    bool plots = true;
    cfg.nodes = 64;
    /* Prices set by hand win over a preset, whichever comes first on the line. */
    double egress = -1, xzone = -1, get = -1, put = -1;
    uint64_t sweep[SWEEP_MAX];
    size_t n_sweep = 0;
    double v;
    uint64_t size;
    if (argc == 1) {
        /* No flags: the default scenario, with a little churn so every plot has something to show. */
        if (sim_parse_churn(DEFAULT_CHURN, &cfg.churn) < 0)
            return bad("--churn", shoal_error_message());
        printf("(no flags: the default scenario, as `shoal-sim --nodes 64 --churn %s`)\n\n", DEFAULT_CHURN);
    }
    opterr = 0;
    for (;;) {
        int idx = 0;
        int o = getopt_long(argc, argv, ":", opts, &idx);
        if (o == -1)
            break;
        const char *flag = o >= O_NODES ? opts[o - O_NODES].name : NULL;
        char name[64];
        if (flag)
            snprintf(name, sizeof name, "--%s", flag);
        switch (o) {
        case O_NODES:
            if (number(name, optarg, 1, 1000000, &v))
                return 2;
            if (v != floor(v))
                return bad(name, "expected a whole number of nodes");
            cfg.nodes = (uint32_t)v;
            break;
        case O_SEED: {
            char *end;
            unsigned long long s = strtoull(optarg, &end, 10);
            if (!*optarg || *end || optarg[0] == '-')
                return bad(name, "expected a non-negative whole number");
            cfg.seed = s;
            break;
        }
        case O_DURATION:
            if (sim_parse_seconds(optarg, &cfg.duration_s) < 0)
                return bad(name, shoal_error_message());
            break;
        case O_WORKLOAD:
            if (sim_parse_workload(optarg, &cfg.wl) < 0)
                return bad(name, shoal_error_message());
            break;
        case O_CHURN:
            if (sim_parse_churn(optarg, &cfg.churn) < 0)
                return bad(name, shoal_error_message());
            break;
        case O_LOSS:
            if (number(name, optarg, 0, 1, &cfg.loss))
                return 2;
            break;
        case O_LATENCY:
            if (sim_parse_dist(optarg, true, &cfg.latency) < 0)
                return bad(name, shoal_error_message());
            break;
        case O_BANDWIDTH:
            if (number(name, optarg, 0.001, 100000, &v))
                return 2;
            cfg.bandwidth_bps = v * 1e9 / 8;
            break;
        case O_S3_LATENCY:
            if (sim_parse_dist(optarg, true, &cfg.s3_latency) < 0)
                return bad(name, shoal_error_message());
            break;
        case O_S3_THROUGHPUT:
            if (sim_parse_size(optarg, &size) < 0 || size == 0)
                return bad(name, size == 0 ? "must be positive" : shoal_error_message());
            cfg.s3_throughput = (double)size;
            break;
        case O_S3_RATE:
            if (number(name, optarg, 1, 1e9, &cfg.s3_rate))
                return 2;
            break;
        case O_EGRESS:
            if (number(name, optarg, 0, 1000, &egress))
                return 2;
            break;
        case O_XZONE:
            if (number(name, optarg, 0, 1000, &xzone))
                return 2;
            break;
        case O_GET:
            if (number(name, optarg, 0, 1000, &get))
                return 2;
            break;
        case O_PUT:
            if (number(name, optarg, 0, 1000, &put))
                return 2;
            break;
        case O_PRICES:
            if (sim_set_prices(&cfg, optarg) < 0)
                return bad(name, shoal_error_message());
            break;
        case O_EPD:
            if (number(name, optarg, 0.001, 1e6, &cfg.epochs_per_day))
                return 2;
            break;
        case O_S3_CONNS:
            if (number(name, optarg, 1, 1e6, &v))
                return 2;
            if (v != floor(v))
                return bad(name, "expected a whole number of connections");
            cfg.s3_conns = (uint32_t)v;
            break;
        case O_ACCESS:
            if (strcmp(optarg, "mount") && strcmp(optarg, "get"))
                return bad(name, "expected mount or get");
            cfg.access_get = strcmp(optarg, "get") == 0;
            break;
        case O_META_TTL:
            if (sim_parse_seconds(optarg, &cfg.metadata_ttl_s) < 0)
                return bad(name, shoal_error_message());
            break;
        case O_PEER_TIMEOUT:
            if (sim_parse_seconds(optarg, &cfg.peer_timeout_s) < 0)
                return bad(name, shoal_error_message());
            if (cfg.peer_timeout_s <= 0)
                return bad(name, "must be positive");
            break;
        case O_EVICTION:
            if (strcmp(optarg, "lru") && strcmp(optarg, "no-evict"))
                return bad(name, "expected lru or no-evict");
            cfg.eviction = strcmp(optarg, "no-evict") == 0 ? SIM_POLICY_NO_EVICT : SIM_POLICY_LRU;
            break;
        case O_SWEEP:
            if (parse_sweep(optarg, sweep, &n_sweep) < 0)
                return bad(name, shoal_error_message());
            break;
        case O_SAMPLE:
            if (number(name, optarg, 0, 1000000, &v))
                return 2;
            if (v != floor(v))
                return bad(name, "expected a whole number of nodes");
            cfg.baseline_sample = (uint32_t)v;
            break;
        case O_BOOTSTRAP:
            if (strcmp(optarg, "preload") && strcmp(optarg, "join"))
                return bad(name, "expected preload or join");
            cfg.join_bootstrap = strcmp(optarg, "join") == 0;
            break;
        case O_PUSH_PULL:
            if (sim_parse_seconds(optarg, &cfg.push_pull_s) < 0)
                return bad(name, shoal_error_message());
            if (cfg.push_pull_s < 1)
                return bad(name, "must be at least 1 s");
            break;
        case O_PRIVATE: cfg.private_views = true; break;
        case O_OUT:
            if (!*optarg)
                return bad(name, "empty folder name");
            out = optarg;
            break;
        case O_NO_PLOTS:
            plots = false;
            break;
        case O_HELP:
            fputs(usage, stdout);
            return 0;
        case O_VERSION:
            printf("shoal-sim %s\n", SHOAL_VERSION);
            return 0;
        case ':':
            return bad(argv[optind - 1], "needs a value");
        default:
            if (optopt && optopt >= O_NODES)
                return bad(argv[optind - 1], "needs a value");
            return bad(argv[optind - 1], "unknown flag (see --help)");
        }
    }
    if (optind < argc)
        return bad(argv[optind], "unexpected argument (flags only; see --help)");
    if (egress >= 0 || xzone >= 0 || get >= 0 || put >= 0)
        cfg.prices[0] = '\0'; /* some prices by hand: say so */
    cfg.egress_price = egress >= 0 ? egress : cfg.egress_price;
    cfg.xzone_price = xzone >= 0 ? xzone : cfg.xzone_price;
    cfg.get_price = get >= 0 ? get : cfg.get_price;
    cfg.put_price = put >= 0 ? put : cfg.put_price;
    if (cfg.wl.start_s >= cfg.duration_s)
        return bad("--workload", "start= must be before the end of --duration");
    shoal_log_set_level(SHOAL_LOG_ERROR);
    uint64_t need = sim_model_memory_estimate(&cfg), avail = mem_available();
    if (avail && need > avail) {
        fprintf(stderr,
                "shoal-sim: %u nodes need about %.1f GiB (sim_model_memory_estimate: views, churn, bitsets); "
                "%.1f GiB are available\n",
                cfg.nodes, (double)need / 1073741824.0, (double)avail / 1073741824.0);
        return 1;
    }

    if (n_sweep)
        return run_sweep(&cfg, sweep, n_sweep, out);
    double t0 = wall_s();
    sim_model *m = sim_model_run(&cfg);
    if (!m) {
        fprintf(stderr, "shoal-sim: %s\n", shoal_error_message());
        return shoal_error_code() == SHOAL_ERR_INVAL ? 2 : 1;
    }
    double t_run = wall_s() - t0;
    sim_summary s;
    sim_summary_compute(m, &s);
    sim_report_print(m, &s, stdout);
    int rc = 0;
    if (sim_report_write(m, &s, out) < 0 || (plots && sim_report_plot(m, out) < 0) ||
        sim_report_page(m, &s, out, plots) < 0) {
        fprintf(stderr, "shoal-sim: %s\n", shoal_error_message());
        rc = 1;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\nrun: %.2f s wall for %.0f simulated s, peak memory %.1f MiB; files in %s\n", t_run, cfg.duration_s,
           (double)ru.ru_maxrss / 1024.0, out);
    sim_model_delete(m);
    return rc;
}
