/*
 * shoal-sim: the model's figures against theory (SWIM's first detection, dissemination, placement
 * movement, one fetch per block cluster-wide), and the program's contract (same seed, same files;
 * bad flags exit 2 with one line; plots written). The model tests call the library directly; the
 * contract tests run the real shoal-sim binary.
 */
#include "shoal_error.h"
#include "shoal_log.h"
#include "sim_model.h"
#include "sim_report.h"
#include "tt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* A small, quick configuration: few objects, reads start once the initial join settled. */
static void small_config(sim_config *c, uint32_t nodes, double duration)
{
    sim_config_defaults(c);
    c->nodes = nodes;
    c->duration_s = duration;
    c->wl.files = 200;
    c->wl.start_s = 10;
    c->wl.epochs = 1;
    shoal_log_set_level(SHOAL_LOG_ERROR);
}

static sim_model *run_or_fail(const sim_config *c)
{
    sim_model *m = sim_model_run(c);
    TT_CHECK(m != NULL, "the model failed: %s", shoal_error_message());
    return m;
}

/* Runs shoal-sim with `args` (a shell fragment); stdout and stderr go to files in `dir`. Returns
 * the exit code. */
static int run_bin(const char *dir, const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s/stdout' 2>'%s/stderr'", SHOAL_SIM_BIN, args, dir, dir);
    int st = system(cmd);
    TT_CHECK(st != -1 && WIFEXITED(st), "could not run %s", cmd);
    return WEXITSTATUS(st);
}

static char *slurp(const char *dir, const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    TT_CHECK(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    TT_CHECK(buf && fread(buf, 1, (size_t)n, f) == (size_t)n, "cannot read %s", path);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Runs shoal-sim with `common` plus `extra`, its output in dir/out. */
static void run_into(const char *dir, const char *common, const char *extra)
{
    char args[1024];
    snprintf(args, sizeof args, "%s %s --out '%s/out'", common, extra, dir);
    TT_CHECK(run_bin(dir, args) == 0, "shoal-sim %s failed", args);
}

/* Fails the test unless the output files of the runs in dirs a and b are identical. */
static void same_files(const char *a, const char *b, const char *why)
{
    static const char *const files[] = {"out/summary.json", "out/timeseries.csv", "out/epochs.csv",
                                        "out/detections.csv", "out/latency.csv"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t la, lb;
        char *x = slurp(a, files[i], &la), *y = slurp(b, files[i], &lb);
        TT_CHECK(la > 0 && la == lb && memcmp(x, y, la) == 0, "%s differs %s", files[i], why);
        free(x);
        free(y);
    }
}

TT_TEST(test_shoal_sim_same_seed_writes_identical_files)
{
    char *a = tt_tmpdir("sim-a"), *b = tt_tmpdir("sim-b"), *c = tt_tmpdir("sim-c");
    const char *common = "--nodes 40 --duration 100 --workload files=300,start=30,epochs=2,checkpoint=20,"
                         "checkpoint-size=1GiB --churn kill@50:2,join@60,stall@70:1+5,restart@80 --loss 0.01 "
                         "--no-plots";
    run_into(a, common, "--seed 7");
    run_into(b, common, "--seed 7");
    run_into(c, common, "--seed 8");
    same_files(a, b, "between two runs with seed 7");
    size_t la, lc;
    char *x = slurp(a, "out/summary.json", &la), *z = slurp(c, "out/summary.json", &lc);
    TT_CHECK(la != lc || memcmp(x, z, la) != 0, "seeds 7 and 8 gave the same summary.json: the seed is not used");
    free(x);
    free(z);
    tt_rmtree(a);
    free(a);
    tt_rmtree(b);
    free(b);
    tt_rmtree(c);
    free(c);
}

TT_TEST(test_shoal_sim_shared_views_write_the_same_files_as_private_views)
{
    /* The views of a run live in one shared member store (a base plus what each view holds apart);
     * --private-views keeps every view whole and apart. Through crashes, a restart, joins, a stall
     * and a partition, both must give the same files: the representation changes no behaviour. */
    char *a = tt_tmpdir("sim-shared"), *b = tt_tmpdir("sim-private");
    const char *common = "--nodes 60 --duration 120 --seed 11 --workload files=300,start=20,epochs=2 "
                         "--churn kill@30:3,restart@50:2,join@55:2,stall@65:2+8,partition@80+15 --loss 0.01 "
                         "--push-pull-interval 10 --no-plots";
    run_into(a, common, "");
    run_into(b, common, "--private-views");
    same_files(a, b, "between shared and private views");
    tt_rmtree(a);
    free(a);
    tt_rmtree(b);
    free(b);
}

TT_TEST(test_shoal_sim_bad_flag_exits_2_with_one_line_naming_it)
{
    static const struct {
        const char *args, *names;
    } cases[] = {
        {"--nodes 10 --bogus", "--bogus"},
        {"--nodes ten", "--nodes"},
        {"--nodes 10 --prices cheap", "--prices"},
        {"--nodes 10 --access fuse", "--access"},
        {"--nodes 10 --eviction fifo", "--eviction"},
        {"--nodes 10 --sweep cache=1Q", "--sweep"},
        {"--nodes 10 --sweep files=3", "--sweep"},
        {"--nodes 10 --workload near=120", "--workload"},
        {"--nodes 10 --workload consume=fast", "--workload"},
        {"--nodes 10 --churn preempt-rate=-1", "--churn"},
        {"--nodes 10 --peer-timeout 0", "--peer-timeout"},
        {"--nodes 10 --s3-connections 0", "--s3-connections"},
        {"--nodes 10 --loss 2", "--loss"},
        {"--nodes 10 --duration -5", "--duration"},
        {"--nodes 10 --workload files=0", "--workload"},
        {"--nodes 10 --workload colour=blue", "--workload"},
        {"--nodes 10 --churn kill@x", "--churn"},
        {"--nodes 10 --churn explode@10", "--churn"},
        {"--nodes 10 --s3-latency weibull:1:2", "--s3-latency"},
        {"--nodes 10 --latency pareto:1ms:0.5", "--latency"},
        {"--nodes 10 --egress-price cheap", "--egress-price"},
        {"--nodes 10 --get-price -1", "--get-price"},
        {"--nodes 10 --seed", "--seed"},
        {"--nodes 10 stray", "stray"},
    };
    char *d = tt_tmpdir("sim-flags");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[512];
        snprintf(args, sizeof args, "%s --out '%s/out'", cases[i].args, d);
        int rc = run_bin(d, args);
        size_t n;
        char *err = slurp(d, "stderr", &n);
        size_t lines = 0;
        for (size_t k = 0; k < n; k++)
            lines += err[k] == '\n';
        TT_CHECK(rc == 2, "'%s' exited %d, not 2 (stderr: %s)", cases[i].args, rc, err);
        TT_CHECK(lines == 1, "'%s' printed %zu lines to stderr: %s", cases[i].args, lines, err);
        TT_CHECK(strstr(err, cases[i].names) != NULL, "'%s': stderr does not name %s: %s", cases[i].args,
                 cases[i].names, err);
        free(err);
    }
    tt_rmtree(d);
    free(d);
}

/* Output that cannot be written is a failure with a message, not exit 0 with nothing printed. */
TT_TEST(test_shoal_sim_output_it_cannot_write_exits_1)
{
    if (access("/dev/full", W_OK) != 0)
        TT_SKIP("/dev/full is not writable here");
    char *d = tt_tmpdir("sim-full");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' --version >/dev/full 2>'%s/stderr'", SHOAL_SIM_BIN, d);
    int st = system(cmd);
    size_t n;
    char *err = slurp(d, "stderr", &n);
    TT_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1, "--version into a full device: status %d", st);
    TT_CHECK(strstr(err, "cannot write the output") != NULL, "stderr: %s", err);
    free(err);
    tt_rmtree(d);
    free(d);
}

TT_TEST(test_shoal_sim_help_and_version_exit_0)
{
    char *d = tt_tmpdir("sim-help");
    size_t n;
    TT_CHECK(run_bin(d, "--help") == 0, "--help did not exit 0");
    char *out = slurp(d, "stdout", &n);
    static const char *const flags[] = {"--nodes", "--seed", "--duration", "--workload", "--churn", "--loss",
                                        "--s3-latency", "--egress-price", "--get-price", "--put-price", "--out"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        TT_CHECK(strstr(out, flags[i]) != NULL, "--help does not document %s", flags[i]);
    free(out);
    TT_CHECK(run_bin(d, "--version") == 0, "--version did not exit 0");
    out = slurp(d, "stdout", &n);
    TT_CHECK(strstr(out, SHOAL_VERSION) != NULL, "--version printed '%s', not %s", out, SHOAL_VERSION);
    free(out);
    tt_rmtree(d);
    free(d);
}

TT_TEST(test_shoal_sim_large_caches_fetch_each_block_once_cluster_wide)
{
    sim_config c;
    small_config(&c, 30, 110);
    c.wl.files = 400;
    c.wl.epochs = 2;
    c.wl.start_s = 30;
    c.wl.full = true;
    sim_model *m = run_or_fail(&c);
    const sim_result *r = sim_model_result(m);
    TT_CHECK(r->n_epochs == 2, "%zu epochs ran", r->n_epochs);
    const sim_epoch_stats *e1 = &r->epochs[0], *e2 = &r->epochs[1];
    tt_note("unique %llu; epoch 1 GETs: shoal %llu, independent %llu, none %llu; epoch 2 shoal %llu indep %llu",
            (unsigned long long)e1->unique_blocks, (unsigned long long)e1->sys[SIM_SHOAL].s3_gets,
            (unsigned long long)e1->sys[SIM_INDEP].s3_gets, (unsigned long long)e1->sys[SIM_NOCACHE].s3_gets,
            (unsigned long long)e2->sys[SIM_SHOAL].s3_gets, (unsigned long long)e2->sys[SIM_INDEP].s3_gets);
    TT_CHECK(e1->unique_blocks == r->blocks, "every node reads everything: %llu unique of %llu",
             (unsigned long long)e1->unique_blocks, (unsigned long long)r->blocks);
    TT_CHECK(e1->sys[SIM_SHOAL].s3_gets == e1->unique_blocks, "Shoal fetched %llu blocks for %llu unique",
             (unsigned long long)e1->sys[SIM_SHOAL].s3_gets, (unsigned long long)e1->unique_blocks);
    TT_CHECK(e1->sys[SIM_INDEP].s3_gets == c.nodes * e1->unique_blocks,
             "independent caches fetched %llu, not N x unique = %llu",
             (unsigned long long)e1->sys[SIM_INDEP].s3_gets, (unsigned long long)(c.nodes * e1->unique_blocks));
    TT_CHECK(e1->sys[SIM_NOCACHE].s3_gets == e1->sys[SIM_NOCACHE].reads, "no cache: a GET per read");
    TT_CHECK(e2->sys[SIM_SHOAL].s3_gets == 0 && e2->sys[SIM_INDEP].s3_gets == 0,
             "warm caches still fetched: shoal %llu independent %llu", (unsigned long long)e2->sys[SIM_SHOAL].s3_gets,
             (unsigned long long)e2->sys[SIM_INDEP].s3_gets);
    sim_model_delete(m);
}

TT_TEST(test_shoal_sim_every_epoch_reads_its_whole_share_when_the_epoch_length_is_not_exact)
{
    /* 3 epochs over 270.7 s: 90.2333... s each, not exact in binary. Every epoch, the last one
     * included, reads the whole dataset once (sharded): the reads of a node are its share, all of
     * them, however the epoch ends inside a second. */
    sim_config c;
    small_config(&c, 50, 300);
    c.wl.files = 1013;
    c.wl.epochs = 3;
    c.wl.start_s = 29.3;
    sim_model *m = run_or_fail(&c);
    const sim_result *r = sim_model_result(m);
    TT_CHECK(r->n_epochs == 3, "%zu epochs ran", r->n_epochs);
    for (size_t e = 0; e < r->n_epochs; e++)
        TT_CHECK(r->epochs[e].sys[SIM_NOCACHE].reads == r->blocks, "epoch %zu read %llu of %llu blocks", e + 1,
                 (unsigned long long)r->epochs[e].sys[SIM_NOCACHE].reads, (unsigned long long)r->blocks);
    sim_model_delete(m);
}

TT_TEST(test_shoal_sim_reads_arrive_per_node_without_lock_step_spikes)
{
    /* 200 nodes, each reading 3.33 blocks a second: in lock-step per-second pacing every node reads
     * 3 or 4 in the same second, so the cluster's count jumps between 600 and 800. Jittered
     * arrivals per node add up to an even 667 or so every second (a node's count varies by at most
     * one, independently: standard deviation about 7). */
    sim_config c;
    small_config(&c, 200, 130);
    c.wl.files = 10000;
    c.wl.file_size = (sim_dist){SIM_DIST_FIXED, 1048576, 0};
    c.wl.start_s = 10;
    c.wl.epoch_s = 15;
    sim_model *m = run_or_fail(&c);
    const sim_result *r = sim_model_result(m);
    double expect = 10000.0 / 15.0, worst = 0;
    for (size_t i = 0; i < r->n_ticks; i++) {
        uint32_t t = r->ticks[i].t;
        if (t < 12 || t > 24) /* whole seconds inside the epoch [10, 25) */
            continue;
        double d = fabs((double)r->ticks[i].reads[SIM_NOCACHE] / expect - 1);
        worst = d > worst ? d : worst;
    }
    tt_note("reads per second within %.1f %% of %.0f", 100 * worst, expect);
    TT_CHECK(worst < 0.05, "a second's reads strayed %.1f %% from the even pace of %.0f", 100 * worst, expect);
    sim_model_delete(m);
}

TT_TEST(test_shoal_sim_join_moves_one_over_n_plus_one_of_the_blocks)
{
    sim_config c;
    small_config(&c, 100, 100);
    c.wl.files = 25000; /* 100,000 blocks: about 990 move, so sampling noise stays near 3 % */
    c.wl.start_s = 40;
    c.wl.epoch_s = 10;
    TT_OK(sim_parse_churn("join@60", &c.churn));
    sim_model *m = run_or_fail(&c);
    const sim_result *r = sim_model_result(m);
    sim_summary s;
    sim_summary_compute(m, &s);
    double ideal = (double)r->blocks / 101.0;
    tt_note("join changes %llu, moved %llu, ideal %.1f, ratio %.4f", (unsigned long long)r->join_moves,
            (unsigned long long)r->join_moved_blocks, ideal, s.join_move_ratio);
    TT_CHECK(r->join_moves == 1, "the majority view changed %llu times by a single join, not once",
             (unsigned long long)r->join_moves);
    TT_CHECK(fabs(s.join_move_ratio - 1) <= 0.10, "moved %.4f x the ideal 1/(N+1) of %llu blocks",
             s.join_move_ratio, (unsigned long long)r->blocks);
    sim_model_delete(m);
}

TT_TEST(test_shoal_sim_s3_answers_503_above_the_prefix_rate)
{
    sim_config c;
    small_config(&c, 20, 80);
    c.wl.files = 2000;
    c.wl.file_size = (sim_dist){SIM_DIST_FIXED, 1048576, 0};
    c.wl.full = true;
    c.wl.start_s = 30;
    c.wl.epoch_s = 10; /* 20 nodes x 2,000 blocks in 10 s: 4,000 GETs/s without a cache */
    c.s3_rate = 1000;
    sim_model *m = run_or_fail(&c);
    sim_summary s1;
    sim_summary_compute(m, &s1);
    sim_model_delete(m);
    c.wl.prefixes = 8; /* 500 GETs/s per prefix: under the limit */
    m = run_or_fail(&c);
    sim_summary s8;
    sim_summary_compute(m, &s8);
    sim_model_delete(m);
    tt_note("no cache, 1 prefix: %.0f GETs %.0f 503s, p99 %.3f s; 8 prefixes: %.0f 503s", s1.s3_gets[SIM_NOCACHE],
            s1.s3_503[SIM_NOCACHE], s1.lat_p99[SIM_NOCACHE], s8.s3_503[SIM_NOCACHE]);
    TT_CHECK(s1.s3_503[SIM_NOCACHE] > s1.s3_gets[SIM_NOCACHE] / 2, "4x over the limit gave only %.0f 503s",
             s1.s3_503[SIM_NOCACHE]);
    TT_CHECK(s1.lat_p99[SIM_NOCACHE] > 1.0, "throttled GETs did not wait: p99 %.3f s", s1.lat_p99[SIM_NOCACHE]);
    TT_CHECK(s8.s3_503[SIM_NOCACHE] == 0, "under the limit S3 still answered %.0f 503s", s8.s3_503[SIM_NOCACHE]);
    TT_CHECK(s1.s3_503[SIM_SHOAL] < s1.s3_503[SIM_NOCACHE] / 10, "Shoal met %.0f 503s against %.0f without a cache",
             s1.s3_503[SIM_SHOAL], s1.s3_503[SIM_NOCACHE]);
}

TT_TEST(test_shoal_sim_first_detection_takes_e_over_e_minus_1_periods_at_1000_nodes)
{
    sim_config c;
    small_config(&c, 1000, 400);
    /* 150 failures in rounds of 10, 25 s apart: each round is detected and forgotten before the
     * next, so nearly every member probes, at its normal rate, as SWIM's figure assumes (many dead
     * at once, or probers slowed by Lifeguard after probing a dead member, lengthen it). */
    char churn[1024] = "";
    for (int i = 0; i < 15; i++)
        snprintf(churn + strlen(churn), sizeof churn - strlen(churn), "%skill@%d:10", i ? "," : "", 10 + 25 * i);
    TT_OK(sim_parse_churn(churn, &c.churn));
    sim_model *m = run_or_fail(&c);
    sim_summary s;
    sim_summary_compute(m, &s);
    double ideal = M_E / (M_E - 1);
    tt_note("%zu failures, %zu probed; mean periods to first detection %.4f (ideal %.4f)", s.victims,
            s.victims_probed, s.mean_probe_periods, ideal);
    TT_CHECK(s.victims_probed == 150, "only %zu of %zu failures were probed", s.victims_probed, s.victims);
    TT_CHECK(fabs(s.mean_probe_periods / ideal - 1) <= 0.10, "mean %.4f periods is not within 10 %% of %.4f",
             s.mean_probe_periods, ideal);
    TT_CHECK(s.false_deaths == 0, "%llu healthy members were declared dead", (unsigned long long)s.false_deaths);
    sim_model_delete(m);
}

TT_TEST(test_shoal_sim_death_reaches_every_node_within_6_log2_n_periods_at_1000_nodes)
{
    sim_config c;
    small_config(&c, 1000, 60);
    TT_OK(sim_parse_churn("kill@15:5", &c.churn));
    sim_model *m = run_or_fail(&c);
    sim_summary s;
    sim_summary_compute(m, &s);
    double bound = 6 * log2(1000.0);
    tt_note("%zu failures, %zu reached everyone; mean %.1f periods, max %.1f (bound %.1f)", s.victims,
            s.victims_all_dead, s.mean_all_dead_periods, s.max_all_dead_periods, bound);
    TT_CHECK(s.victims == 5 && s.victims_all_dead == 5, "%zu of %zu deaths reached every node", s.victims_all_dead,
             s.victims);
    TT_CHECK(s.max_all_dead_periods <= bound, "a death took %.1f periods to reach everyone (bound %.1f)",
             s.max_all_dead_periods, bound);
    sim_model_delete(m);
}

TT_TEST(test_shoal_sim_writes_png_plots_with_gnuplot)
{
    if (system("gnuplot --version >/dev/null 2>&1") != 0)
        TT_SKIP("gnuplot is not installed (scripts/deps installs gnuplot-nox)");
    char *d = tt_tmpdir("sim-plots");
    char args[512];
    snprintf(args, sizeof args, "--nodes 20 --duration 60 --workload files=100,start=20,epochs=2 "
                                "--churn kill@30 --out '%s/out'", d);
    TT_CHECK(run_bin(d, args) == 0, "shoal-sim failed");
    static const char *const pngs[] = {"membership.png", "failures.png", "hit_ratio.png", "s3_requests.png",
                                       "churn_moves.png", "cost.png"};
    for (size_t i = 0; i < sizeof pngs / sizeof pngs[0]; i++) {
        char name[64];
        size_t n;
        snprintf(name, sizeof name, "out/%s", pngs[i]);
        char *png = slurp(d, name, &n);
        TT_CHECK(n > 1000 && memcmp(png, "\x89PNG", 4) == 0, "%s is not a PNG (%zu bytes)", pngs[i], n);
        free(png);
    }
    /* gnuplot says nothing on the terminal, and the one-page report shows every plot. */
    size_t n;
    char *err = slurp(d, "stderr", &n);
    TT_CHECK(n == 0, "shoal-sim wrote to stderr: %s", err);
    free(err);
    char *page = slurp(d, "out/report.md", &n);
    for (size_t i = 0; i < sizeof pngs / sizeof pngs[0]; i++)
        TT_CHECK(strstr(page, pngs[i]) != NULL, "report.md does not show %s", pngs[i]);
    free(page);
    tt_rmtree(d);
    free(d);
}

TT_TEST(test_shoal_sim_draws_no_empty_plot)
{
    /* No failure and no churn: nothing for failures.png and churn_moves.png to show, so neither
     * is drawn (nor named in report.md); the others are. */
    if (system("gnuplot --version >/dev/null 2>&1") != 0)
        TT_SKIP("gnuplot is not installed (scripts/deps installs gnuplot-nox)");
    char *d = tt_tmpdir("sim-noplot");
    char args[512];
    snprintf(args, sizeof args, "--nodes 10 --duration 40 --workload files=100,start=10 --out '%s/out'", d);
    TT_CHECK(run_bin(d, args) == 0, "shoal-sim failed");
    char path[1024];
    snprintf(path, sizeof path, "%s/out/failures.png", d);
    TT_CHECK(access(path, F_OK) != 0, "failures.png drawn without a failure");
    snprintf(path, sizeof path, "%s/out/churn_moves.png", d);
    TT_CHECK(access(path, F_OK) != 0, "churn_moves.png drawn without churn");
    snprintf(path, sizeof path, "%s/out/s3_requests.png", d);
    TT_CHECK(access(path, F_OK) == 0, "s3_requests.png is missing");
    size_t n;
    char *page = slurp(d, "out/report.md", &n);
    TT_CHECK(!strstr(page, "failures.png") && strstr(page, "cost.png"), "report.md names the wrong plots");
    free(page);
    tt_rmtree(d);
    free(d);
}

TT_TEST(test_shoal_sim_without_flags_runs_the_default_scenario)
{
    char *d = tt_tmpdir("sim-default");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' >stdout 2>stderr", d, SHOAL_SIM_BIN);
    int st = system(cmd);
    TT_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "shoal-sim without flags exited %d",
             WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    size_t n;
    char *out = slurp(d, "stdout", &n);
    TT_CHECK(strstr(out, "64 nodes") && strstr(out, "the default scenario"), "stdout: %.300s", out);
    free(out);
    char *json = slurp(d, "shoal-sim-out/summary.json", &n);
    TT_CHECK(strstr(json, "\"saved_usd_vs_nocache\"") && strstr(json, "\"savings\""), "no savings in summary.json");
    free(json);
    tt_rmtree(d);
    free(d);
}

TT_TEST(test_shoal_sim_sweep_prints_hit_ratio_and_cost_per_cache_size)
{
    /* 8 nodes reading 2 shuffled shards of 200 objects of 16 MiB (3.1 GiB): a cache of 64 MiB per
     * node holds almost nothing, 1 GiB per node all of it, so the warm hit ratio rises with the
     * size and the cost falls. */
    char *d = tt_tmpdir("sim-sweep");
    char args[512];
    snprintf(args, sizeof args, "--nodes 8 --duration 60 --workload files=200,epochs=2 "
                                "--sweep cache=64MiB,1GiB --out '%s/out'", d);
    TT_CHECK(run_bin(d, args) == 0, "shoal-sim --sweep failed");
    size_t n;
    char *csv = slurp(d, "out/sweep.csv", &n);
    unsigned long long c1, c2;
    double f1, f2, h1, h2, hi1, hi2, u1, u2;
    const char *row = strchr(csv, '\n');
    TT_CHECK(row && sscanf(row + 1, "%llu,%lf,%lf,%lf,%lf", &c1, &f1, &h1, &hi1, &u1) == 5, "sweep.csv: %s", csv);
    row = strchr(row + 1, '\n');
    TT_CHECK(row && sscanf(row + 1, "%llu,%lf,%lf,%lf,%lf", &c2, &f2, &h2, &hi2, &u2) == 5, "sweep.csv: %s", csv);
    TT_CHECK(c1 == 64ull << 20 && c2 == 1ull << 30, "sizes %llu and %llu", c1, c2);
    TT_CHECK(h1 < 0.2 && h2 > 0.95 && u2 < u1, "hit ratios %.3f -> %.3f, Shoal USD %.4f -> %.4f", h1, h2, u1, u2);
    free(csv);
    tt_rmtree(d);
    free(d);
}

TT_TEST(test_shoal_sim_spec_parsers_reject_garbage)
{
    uint64_t size;
    double secs;
    sim_dist d;
    sim_workload w;
    sim_churn ch;
    sim_config c;
    sim_config_defaults(&c);
    w = c.wl;
    ch = c.churn;
    TT_OK(sim_parse_size("4MiB", &size));
    TT_CHECK(size == 4194304, "4MiB = %llu", (unsigned long long)size);
    TT_OK(sim_parse_size("2GB", &size));
    TT_CHECK(size == 2000000000ull, "2GB = %llu", (unsigned long long)size);
    TT_OK(sim_parse_seconds("250ms", &secs));
    TT_CHECK(fabs(secs - 0.25) < 1e-12, "250ms = %g", secs);
    TT_OK(sim_parse_dist("lognormal:30ms:0.6", true, &d));
    TT_CHECK(d.kind == SIM_DIST_LOGNORMAL && fabs(d.a - 0.03) < 1e-12 && fabs(d.b - 0.6) < 1e-12, "lognormal");
    TT_OK(sim_parse_workload("files=10,read=full,replicas=3,zones=3,cache=1GiB", &w));
    TT_CHECK(w.files == 10 && w.full && w.replicas == 3 && w.zones == 3 && w.cache_bytes == 1073741824ull,
             "workload fields not set");
    TT_OK(sim_parse_churn("kill@10:3,stall@20+5,partition@30+10,kill-rate=2", &ch));
    TT_CHECK(ch.n == 3 && ch.ev[0].count == 3 && ch.ev[1].for_s == 5 && ch.ev[2].kind == SIM_CHURN_PARTITION &&
                 ch.kill_rate == 2,
             "churn fields not set");
    static const char *const bad_sizes[] = {"", "x", "-1", "4QB", "1e400"};
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++)
        TT_CHECK(sim_parse_size(bad_sizes[i], &size) < 0 && shoal_error_code() == SHOAL_ERR_INVAL,
                 "size '%s' accepted", bad_sizes[i]);
    static const char *const bad_dists[] = {"uniform:5:1", "lognormal:1:-1", "pareto:1:2", "fixed:", "uniform:1"};
    for (size_t i = 0; i < sizeof bad_dists / sizeof bad_dists[0]; i++)
        TT_CHECK(sim_parse_dist(bad_dists[i], true, &d) < 0, "distribution '%s' accepted", bad_dists[i]);
    static const char *const bad_wl[] = {"files", "files=-1", "read=some", "block=1", "replicas=0", "x=1"};
    for (size_t i = 0; i < sizeof bad_wl / sizeof bad_wl[0]; i++)
        TT_CHECK(sim_parse_workload(bad_wl[i], &w) < 0, "workload '%s' accepted", bad_wl[i]);
    static const char *const bad_churn[] = {"kill", "kill@", "partition@10", "kill@10+5", "nuke@1", "kill-rate=x"};
    for (size_t i = 0; i < sizeof bad_churn / sizeof bad_churn[0]; i++)
        TT_CHECK(sim_parse_churn(bad_churn[i], &ch) < 0, "churn '%s' accepted", bad_churn[i]);
}

TT_MAIN()
