/*
 * shoal-sim: the cluster simulator's command line (SPEC.md section 5). main() parses and checks
 * every flag (a bad one prints one line naming it and exits 2), runs the model, prints the summary
 * and the run's wall time and peak memory (stdout only: the files stay deterministic), writes the
 * files and the plots. Exit 1 is a runtime failure.
 */
#include "shoal_error.h"
#include "shoal_log.h"
#include "sim_model.h"
#include "sim_report.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char usage[] =
    "usage: shoal-sim --nodes N [--seed S] [--duration T] [--workload SPEC] [--churn SPEC] [--loss P]\n"
    "                 [--latency DIST] [--bandwidth GBIT_PER_S] [--s3-latency DIST] [--s3-throughput SIZE]\n"
    "                 [--s3-rate GETS_PER_S] [--egress-price USD_PER_GB] [--get-price USD_PER_1000]\n"
    "                 [--put-price USD_PER_1000] [--baseline-sample K] [--bootstrap preload|join]\n"
    "                 [--push-pull-interval T] [--private-views] [--out DIR] [--no-plots]\n"
    "\n"
    "Runs N real gossip and placement instances over a simulated network and clock, with a model of\n"
    "the data path, and compares Shoal with independent per-node caches and with no cache.\n"
    "\n"
    "  --nodes N              nodes at the start (required)\n"
    "  --seed S               seed of every random choice (default 1); same seed, same files\n"
    "  --duration T           simulated time, e.g. 300, 5m (default 300 s)\n"
    "  --workload SPEC        key=value,... (defaults): files=10000 file-size=16MiB block=4MiB epochs=3\n"
    "                         start=10 epoch-time=(duration-start)/epochs read=shard|full cache=64GiB\n"
    "                         replicas=1 zones=1 prefixes=1 checkpoint=0 checkpoint-size=10GiB\n"
    "                         sizes=FILE (object sizes, one per line; replaces files= and file-size=)\n"
    "  --churn SPEC           events kill@T[:K] restart@T[:K] join@T[:K] stall@T[:K][+D] partition@T+D\n"
    "                         and rates kill-rate=PER_NODE_HOUR join-rate=PER_HOUR stall-rate=PER_NODE_HOUR\n"
    "                         restart-after=T stall-for=T (10 s) from=T (0)\n"
    "  --loss P               packet loss on every gossip link, 0..1 (default 0)\n"
    "  --latency DIST         one-way link latency: fixed:X, uniform:MIN:MAX or lognormal:MEDIAN:SIGMA\n"
    "                         (default uniform:100us:500us)\n"
    "  --bandwidth G          per-node bandwidth for block transfers, Gbit/s (default 25)\n"
    "  --s3-latency DIST      S3 time to first byte: fixed:X, uniform:A:B, lognormal:MEDIAN:SIGMA\n"
    "                         (default lognormal:30ms:0.6)\n"
    "  --s3-throughput SIZE   bytes per second of one GET (default 100MB)\n"
    "  --s3-rate R            GETs per second per prefix before S3 answers 503 (default 5500)\n"
    "  --egress-price USD     per GB leaving S3 (default 0.09: internet egress, us-east-1;\n"
    "                         same-region EC2 pays 0)\n"
    "  --get-price USD        per 1,000 GETs (default 0.0004)\n"
    "  --put-price USD        per 1,000 PUTs (default 0.005)\n"
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
    "Writes summary.json, timeseries.csv, epochs.csv, detections.csv, latency.csv, plots.gp and PNG plots\n"
    "into DIR. docs/simulator.md explains the model.\n";

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

int main(int argc, char **argv)
{
    enum {
        O_NODES = 256, O_SEED, O_DURATION, O_WORKLOAD, O_CHURN, O_LOSS, O_LATENCY, O_BANDWIDTH, O_S3_LATENCY,
        O_S3_THROUGHPUT, O_S3_RATE, O_EGRESS, O_GET, O_PUT, O_SAMPLE, O_BOOTSTRAP, O_PUSH_PULL, O_PRIVATE, O_OUT,
        O_NO_PLOTS, O_HELP, O_VERSION,
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
        {NULL, 0, NULL, 0},
    };
    sim_config cfg;
    sim_config_defaults(&cfg);
    const char *out = "shoal-sim-out";
    bool plots = true, have_nodes = false;
    double v;
    uint64_t size;
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
            have_nodes = true;
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
            if (number(name, optarg, 0, 1000, &cfg.egress_price))
                return 2;
            break;
        case O_GET:
            if (number(name, optarg, 0, 1000, &cfg.get_price))
                return 2;
            break;
        case O_PUT:
            if (number(name, optarg, 0, 1000, &cfg.put_price))
                return 2;
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
    if (!have_nodes)
        return bad("--nodes", "is required");
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
    if (sim_report_write(m, &s, out) < 0 || (plots && sim_report_plot(out) < 0)) {
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
