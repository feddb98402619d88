/*
 * The `shoal` client against real daemons (test_daemon_harness.h): what `shoal status` tells of
 * the other members, as their gossip carries it; `shoal stats` over an interval; per-command help;
 * `shoal ls` names as `aws s3 ls` prints them; and what an operator changes without a restart
 * (SIGHUP reads the config file again). Each case runs the built `shoal` as a user would and
 * reads what it prints.
 *
 * Waits are for events with budgets in gossip periods (--test-gossip-period 100: every timer ten
 * times shorter than the defaults), far beyond what the event takes, so a slow machine makes a case
 * take longer, never fail, while a daemon that never does the thing does.
 */
#include "test_daemon_harness.h"

#include "node_control.h"
#include "shoal_error.h"
#include "tt.h"

#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PERIOD_MS 100
static const char *const FAST[] = {"--test-gossip-period", "100", NULL};
/* Joining and settling, as the other daemon tests wait for it. */
#define BUDGET_MS 60000

/* Runs `shoal --control CONTROL ARGS` (a shell word list) with its output in dir; returns the exit
 * status, with its stdout and stderr in *out (free it) when out is not NULL. */
static int cli_run(const char *dir, const char *control, const char *args, char **out)
{
    char cmd[2000], path[400];
    snprintf(path, sizeof path, "%s/cli.out", dir);
    snprintf(cmd, sizeof cmd, "'%s' --control '%s' %s >'%s' 2>&1", td_shoal(), control, args, path);
    int st = system(cmd);
    if (out) {
        FILE *f = fopen(path, "r");
        TT_CHECK(f != NULL, "no output of shoal %s", args);
        size_t cap = 1 << 16, n = 0;
        *out = calloc(1, cap + 1);
        TT_CHECK(*out != NULL, "alloc");
        n = fread(*out, 1, cap, f);
        (*out)[n] = '\0';
        fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* cli_run against node i. */
static int shoal_run(td_cluster *c, int i, const char *args, char **out)
{
    return cli_run(c->dir, c->nodes[i].control, args, out);
}

/* `shoal status --json` of node i, parsed (node_json_delete it). */
static node_json *status_json(td_cluster *c, int i)
{
    char *out = NULL;
    int rc = shoal_run(c, i, "status --json", &out);
    TT_CHECK(rc == 0, "shoal status --json on %s: exit %d: %s", c->nodes[i].id, rc, out);
    node_json *j = node_json_parse(out, strlen(out));
    TT_CHECK(j != NULL, "shoal status --json printed no JSON: %s", out);
    free(out);
    return j;
}

/* Member `id` in a status document; fails the test when absent. */
static const node_json *member(const node_json *status, const char *id)
{
    const node_json *ms = node_json_get(status, "members");
    for (const node_json *m = ms ? ms->child : NULL; m; m = m->next)
        if (!strcmp(node_json_get_str(m, "id", ""), id))
            return m;
    TT_CHECK(false, "status lists no member %s", id);
    return NULL;
}

/* Member `id`'s cache use as a status document gives it; false when null (unknown). */
static bool member_used(const node_json *status, const char *id, uint64_t *used)
{
    const node_json *u = node_json_get(member(status, id), "cache_bytes");
    if (!u || u->type != NODE_JSON_NUMBER || !u->is_u64)
        return false;
    *used = u->u64;
    return true;
}

/* A node that caches data publishes its use on gossip: `shoal status` on another node shows the
 * real figure (the one the caching node gives for itself) within about one gossip period, and the
 * cluster line sums both nodes. The use published is rationed (docs/operations.md): a change of
 * 1/64 of the capacity goes out within half a period and reaches the other node in about one; the
 * poll allows 20 periods so a loaded machine cannot fail it, and prints what it took. */
TT_TEST(test_daemon_status_shows_another_nodes_cache_use_within_a_gossip_period)
{
    td_cluster *c = td_cluster_new(2, "1M");
    for (int i = 0; i < 2; i++)
        td_node_start(c, i, FAST);
    td_wait_cluster(c, BUDGET_MS);
    /* 16 MiB through node1: its share (the blocks it owns) is several times 1/64 of 256 MiB. */
    for (uint32_t k = 0; k < 4; k++) {
        char key[32];
        snprintf(key, sizeof key, "data/%u", k);
        td_put(c, key, 4u << 20, 100 + k);
        td_get_check(c, 1, key, 4u << 20, 100 + k);
    }
    uint64_t t0 = td_now_ms(), theirs = 0, mine = 0;
    bool seen = false;
    /* Settled: node1's own figure stays put while node0 shows it. */
    while (!seen && td_now_ms() - t0 < 20 * PERIOD_MS) {
        node_json *s1 = status_json(c, 1), *s0 = status_json(c, 0);
        TT_CHECK(member_used(s1, "node1", &mine), "node1 gives no cache use for itself");
        seen = member_used(s0, "node1", &theirs) && theirs == mine && mine >= (4u << 20);
        node_json_delete(s0);
        node_json_delete(s1);
        if (!seen)
            td_sleep_ms(PERIOD_MS / 10);
    }
    tt_note("node0 showed node1's %llu bytes after %llu ms", (unsigned long long)mine,
            (unsigned long long)(td_now_ms() - t0));
    TT_CHECK(seen, "after 20 gossip periods node0 shows node1's cache use as %llu bytes, node1 says %llu",
             (unsigned long long)theirs, (unsigned long long)mine);

    node_json *s0 = status_json(c, 0);
    uint64_t used0 = 0;
    TT_CHECK(member_used(s0, "node0", &used0), "node0 gives no cache use for itself");
    const node_json *k = node_json_get(s0, "cluster");
    TT_CHECK(k != NULL, "status --json has no cluster summary");
    TT_CHECK(node_json_get_u64(k, "alive", 0) == 2 && node_json_get_u64(k, "suspect", 9) == 0 &&
                 node_json_get_u64(k, "dead", 9) == 0 && node_json_get_u64(k, "left", 9) == 0,
             "cluster states: alive %llu", (unsigned long long)node_json_get_u64(k, "alive", 0));
    TT_CHECK(node_json_get_u64(k, "cache_capacity", 0) == 2 * (256ull << 20), "cluster capacity %llu",
             (unsigned long long)node_json_get_u64(k, "cache_capacity", 0));
    TT_CHECK(node_json_get_u64(k, "cache_reporting", 0) == 2, "members reporting their use: %llu",
             (unsigned long long)node_json_get_u64(k, "cache_reporting", 0));
    uint64_t total = node_json_get_u64(k, "cache_bytes", 0);
    TT_CHECK(total >= mine + used0 - (1u << 20) && total <= mine + used0 + (1u << 20) && total > mine,
             "cluster cache use %llu, members %llu + %llu", (unsigned long long)total, (unsigned long long)mine,
             (unsigned long long)used0);
    node_json_delete(s0);

    /* The table: node1's row shows its use (not "0 B"), and the cluster line follows. */
    char *text = NULL, want[64];
    TT_CHECK(shoal_run(c, 0, "status", &text) == 0, "shoal status: %s", text);
    snprintf(want, sizeof want, "%.1f MiB", (double)mine / (1 << 20));
    const char *row = strstr(text, "\nnode1 ");
    TT_CHECK(row && strstr(row, want) && strstr(row, want) < strchr(row + 1, '\n'),
             "node1's row lacks %s:\n%s", want, text);
    TT_CHECK(strstr(text, "\ncluster  2 alive, 0 suspect, 0 dead, 0 left; cache "), "no cluster line:\n%s", text);
    TT_CHECK(strstr(text, "of 512.0 MiB ("), "cluster line lacks the capacity:\n%s", text);
    free(text);
    td_pass(c);
}

/* ---- shoal stats over an interval ---------------------------------------------------------- */

typedef struct reader {
    td_cluster *c;
    _Atomic bool stop;
    _Atomic unsigned long reads;
} reader;

/* Reads the cached object again and again through node 0 until told to stop: every block read is
 * local, so the rates and the hit ratio of any interval it spans are known. */
static void *read_loop(void *arg)
{
    reader *r = arg;
    while (!atomic_load(&r->stop)) {
        td_get_check(r->c, 0, "hot", 1u << 20, 7);
        atomic_fetch_add(&r->reads, 1);
    }
    return NULL;
}

/* `shoal stats --watch 1 --count 2` while a reader reads through the node: two samples, each over
 * about a second, with a read rate above zero, all of it local (hit ratio 1), then it exits 0 by
 * itself. The text form says the same in words. */
TT_TEST(test_daemon_stats_watch_prints_count_samples_with_rates_and_hit_ratio)
{
    td_cluster *c = td_cluster_new(1, "1M");
    td_node_start(c, 0, FAST);
    td_wait_cluster(c, BUDGET_MS);
    td_put(c, "hot", 1u << 20, 7);
    td_get_check(c, 0, "hot", 1u << 20, 7); /* cached: from now on every read is local */
    reader r = {.c = c};
    pthread_t t;
    TT_CHECK(pthread_create(&t, NULL, read_loop, &r) == 0, "reader thread");
    while (atomic_load(&r.reads) == 0)
        td_sleep_ms(10);
    char *out = NULL, *text = NULL;
    int rc = shoal_run(c, 0, "stats --watch 1 --count 2 --json", &out);
    int rc_text = shoal_run(c, 0, "stats --watch 0.5 --count 2", &text);
    atomic_store(&r.stop, true);
    pthread_join(t, NULL);
    TT_CHECK(rc == 0, "stats --watch --json: exit %d: %s", rc, out);
    int samples = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        node_json *j = node_json_parse(line, strlen(line));
        TT_CHECK(j != NULL, "sample %d is not JSON: %s", samples + 1, line);
        samples++;
        const node_json *seconds = node_json_get(j, "seconds"), *ratio = node_json_get(j, "hit_ratio");
        const node_json *rates = node_json_get(j, "rates"), *gauges = node_json_get(j, "gauges");
        const node_json *local = rates ? node_json_get(rates, "reads.local") : NULL;
        const node_json *s3 = rates ? node_json_get(rates, "reads.s3") : NULL;
        TT_CHECK(node_json_get_u64(j, "sample", 0) == (uint64_t)samples, "sample number: %s", line);
        TT_CHECK(seconds && seconds->num >= 1.0 && seconds->num < 30, "sample %d over %g s", samples,
                 seconds ? seconds->num : -1);
        TT_CHECK(local && local->num > 0 && s3 && s3->num == 0, "sample %d: local reads %g/s, S3 %g/s: %s", samples,
                 local ? local->num : -1, s3 ? s3->num : -1, line);
        TT_CHECK(ratio && ratio->num == 1.0, "sample %d: hit ratio %g, every read was local", samples,
                 ratio ? ratio->num : -1);
        TT_CHECK(gauges && node_json_get_u64(gauges, "cache.bytes", 0) >= (1u << 20) &&
                     node_json_get(rates, "cache.bytes") == NULL,
                 "sample %d: cache.bytes is a gauge: %s", samples, line);
        node_json_delete(j);
    }
    TT_CHECK(samples == 2, "--count 2 printed %d samples", samples);
    TT_CHECK(rc_text == 0 && strstr(text, "sample   1, over ") && strstr(text, "\nsample   2, over ") &&
                 !strstr(text, "sample   3"),
             "stats --watch text: exit %d:\n%s", rc_text, text);
    TT_CHECK(strstr(text, "local 100.0 %, peer 0.0 %, S3 0.0 %; hit ratio 100.0 %"), "no hit ratio line:\n%s", text);
    const char *row = strstr(text, "\nreads.local ");
    TT_CHECK(row && strstr(row, "/s\n") && strstr(row, "/s\n") < strchr(row + 1, '\n') + 1,
             "no reads.local rate:\n%s", text);
    free(out);
    free(text);
    td_pass(c);
}

/* ---- help ----------------------------------------------------------------------------------- */

/* `shoal get --help` and `shoal help get` print get's usage and options (exit 0), the same text;
 * `shoal help` and `shoal --help` list every command; an unknown command is still exit 2 with one
 * clear line, whether named as a command or to help. No daemon is needed. */
TT_TEST(test_shoal_help_prints_one_commands_usage)
{
    char *dir = tt_tmpdir("help"), sock[300];
    snprintf(sock, sizeof sock, "%s/none.sock", dir);
    static const char *const cmds[] = {"status", "stats", "get", "preload", "drain", "ls",
                                       "keygen", "leave", "forget", "wait"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char args[64], *a = NULL, *b = NULL, want[64];
        snprintf(args, sizeof args, "%s --help", cmds[i]);
        TT_CHECK(cli_run(dir, sock, args, &a) == 0, "shoal %s: %s", args, a);
        snprintf(args, sizeof args, "help %s", cmds[i]);
        TT_CHECK(cli_run(dir, sock, args, &b) == 0, "shoal %s: %s", args, b);
        snprintf(want, sizeof want, "usage: shoal [--control PATH] %s", cmds[i]);
        TT_CHECK(strstr(a, want) == a, "shoal %s --help does not start with '%s':\n%s", cmds[i], want, a);
        TT_CHECK(!strcmp(a, b), "shoal %s --help and shoal help %s differ:\n%s\n----\n%s", cmds[i], cmds[i], a, b);
        TT_CHECK(!strstr(a, "commands:"), "shoal %s --help printed the whole list", cmds[i]);
        free(a);
        free(b);
    }
    char *g = NULL;
    TT_CHECK(cli_run(dir, sock, "get --help", &g) == 0 && strstr(g, "-o, --output FILE"), "get's options:\n%s", g);
    free(g);
    TT_CHECK(cli_run(dir, sock, "stats --help", &g) == 0 && strstr(g, "--watch S") && strstr(g, "--count N"),
             "stats' options:\n%s", g);
    free(g);
    for (int k = 0; k < 2; k++) {
        TT_CHECK(cli_run(dir, sock, k ? "--help" : "help", &g) == 0, "shoal %s: %s", k ? "--help" : "help", g);
        for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
            char row[32];
            snprintf(row, sizeof row, "\n  %s ", cmds[i]);
            TT_CHECK(strstr(g, row), "shoal %s does not list %s:\n%s", k ? "--help" : "help", cmds[i], g);
        }
        free(g);
    }
    static const char *const bad[] = {"fly", "help fly", "fly --help"};
    for (size_t i = 0; i < 3; i++) {
        TT_CHECK(cli_run(dir, sock, bad[i], &g) == 2, "shoal %s did not exit 2: %s", bad[i], g);
        TT_CHECK(strstr(g, "shoal: unknown command 'fly' (status, stats,") == g && strchr(g, '\n') == g + strlen(g) - 1,
                 "shoal %s: %s", bad[i], g);
        free(g);
    }
    tt_rmtree(dir);
    free(dir);
}

/* ---- ls ------------------------------------------------------------------------------------- */

/* Names as `aws s3 ls` prints them, relative to the prefix's last '/': s3://b/dir (no slash) is
 * the directory itself, "PRE dir/"; s3://b/di too; s3://b/dir/ lists what is in it. */
TT_TEST(test_daemon_ls_prints_prefixes_as_aws_s3_ls)
{
    td_cluster *c = td_cluster_new(1, "1M");
    td_node_start(c, 0, FAST);
    td_wait_cluster(c, BUDGET_MS);
    td_put(c, "dir/a", 10, 1);
    td_put(c, "dir/sub/b", 20, 2);
    td_put(c, "top", 30, 3);
    static const struct { const char *args, *want; } cases[] = {
        {"ls s3://" TD_BUCKET "/dir", "                 PRE dir/\n"},
        {"ls s3://" TD_BUCKET "/di", "                 PRE dir/\n"},
        {"ls s3://" TD_BUCKET "/dir/", "                 PRE sub/\n                  10 a\n"},
        {"ls s3://" TD_BUCKET "/dir/s", "                 PRE sub/\n"},
        {"ls s3://" TD_BUCKET "/", "                 PRE dir/\n                  30 top\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL;
        int rc = shoal_run(c, 0, cases[i].args, &out);
        TT_CHECK(rc == 0 && !strcmp(out, cases[i].want), "shoal %s: exit %d, printed\n%s\nwanted\n%s", cases[i].args, rc,
                 out, cases[i].want);
        free(out);
    }
    td_pass(c);
}

/* ---- SIGHUP --------------------------------------------------------------------------------- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    TT_CHECK(f != NULL && fputs(text, f) >= 0 && fclose(f) == 0, "writing %s", path);
}

/* The number of the first line of node i's log holding `what` (1-based), 0 when none. */
static int first_line(td_cluster *c, int i, const char *what)
{
    FILE *f = fopen(c->nodes[i].log, "r");
    char line[4096];
    int n = 0, hit = 0;
    while (f && !hit && fgets(line, sizeof line, f)) {
        n++;
        if (strstr(line, what))
            hit = n;
    }
    if (f)
        fclose(f);
    return hit;
}

/* SIGHUP reads the config file again: log-level info -> debug takes effect at once, in the same
 * process. A membership change makes node0 rebuild its view, which it logs at debug level: node1
 * joining before the reload leaves no debug line, node1 leaving after it does, below the reload
 * line. The TTL change is applied and a restart-only key (zone) is named as such. A file that no
 * longer parses changes nothing: the error is logged, the daemon runs on at debug level (node1
 * joining again is logged at debug), and a good file afterwards is read again. */
TT_TEST(test_daemon_sighup_reloads_the_log_level_live_and_survives_a_bad_file)
{
    td_cluster *c = td_cluster_new(2, "1M");
    char conf[400];
    snprintf(conf, sizeof conf, "%s/shoald.conf", c->dir);
    write_file(conf, "log-level = info\nmetadata-ttl = 60\n");
    const char *const extra[] = {"--test-gossip-period", "100", "--config", conf, NULL};
    td_node_start(c, 0, extra);
    td_wait_cluster(c, BUDGET_MS);
    pid_t pid = c->nodes[0].pid;
    td_node_start(c, 1, FAST);
    td_wait_cluster(c, BUDGET_MS);
    TT_CHECK(td_wait_log(c, 0, "event=member_joined member=node1", BUDGET_MS), "node0 did not log node1's join");
    TT_CHECK(td_log_count(c, 0, "level=debug") == 0, "debug lines at log-level info");

    write_file(conf, "log-level = debug\nmetadata-ttl = 5\nzone = rack-2\n");
    td_node_signal(c, 0, SIGHUP);
    TT_CHECK(td_wait_log(c, 0, "event=reloaded", BUDGET_MS), "no reload logged after SIGHUP");
    TT_CHECK(td_log_count(c, 0, "level=info .*event=reloaded .*changed=log-level=info->debug,metadata-ttl=60->5 "
                                "restart_needed=zone") == 1,
             "the reload line does not say what changed and what needs a restart");
    TT_CHECK(td_log_count(c, 0, "level=warn .*event=reload_needs_restart options=zone ") == 1,
             "no warning naming zone");
    td_node_signal(c, 1, SIGTERM);
    td_node_wait(c, 1, BUDGET_MS);
    TT_CHECK(td_wait_log(c, 0, "level=debug module=cluster event=view", BUDGET_MS),
             "no debug line after the reload to debug (node1 left)");
    int reloaded = first_line(c, 0, "event=reloaded"), debug = first_line(c, 0, "level=debug");
    TT_CHECK(debug > reloaded, "a debug line (line %d) came before the reload (line %d)", debug, reloaded);
    TT_CHECK(c->nodes[0].pid == pid && kill(pid, 0) == 0, "shoald did not survive SIGHUP");

    write_file(conf, "log-level = loud\n");
    td_node_signal(c, 0, SIGHUP);
    TT_CHECK(td_wait_log(c, 0, "event=reload_failed", BUDGET_MS), "a bad file was not reported");
    TT_CHECK(td_log_count(c, 0, "level=error .*event=reload_failed .*log-level.*loud") == 1,
             "the error does not name the key and the value");
    int debug_lines = td_log_count(c, 0, "level=debug module=cluster event=view");
    td_node_start(c, 1, FAST);
    bool more = false; /* still at debug: node1's return is logged at debug too */
    for (uint64_t t0 = td_now_ms(); !more && td_now_ms() - t0 < BUDGET_MS; td_sleep_ms(50))
        more = td_log_count(c, 0, "level=debug module=cluster event=view") > debug_lines;
    TT_CHECK(more, "no debug line after the bad file: the level did not stay debug");
    char *out = NULL;
    TT_CHECK(shoal_run(c, 0, "status", &out) == 0, "status after a bad reload: %s", out);
    free(out);
    TT_CHECK(kill(pid, 0) == 0 && c->nodes[0].pid == pid, "shoald did not survive a bad file");

    write_file(conf, "log-level = info\nmetadata-ttl = 5\nzone = rack-2\n");
    td_node_signal(c, 0, SIGHUP);
    TT_CHECK(td_wait_log(c, 0, "changed=log-level=debug->info restart_needed=zone", BUDGET_MS),
             "a good file after a bad one was not applied from the running values");
    td_pass(c);
}

TT_MAIN()
