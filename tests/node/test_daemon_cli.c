/*
 * The `shoal` client against real daemons (test_daemon_harness.h): what `shoal status` tells of
 * the other members, as their gossip carries it. Each case runs the built `shoal` as a user would
 * and reads what it prints.
 *
 * Waits are for events with budgets in gossip periods (--test-gossip-period 100: every timer ten
 * times shorter than the defaults), far beyond what the event takes, so a slow machine makes a case
 * take longer, never fail, while a daemon that never does the thing does.
 */
#include "test_daemon_harness.h"

#include "node_control.h"
#include "shoal_error.h"
#include "tt.h"

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

/* Runs `shoal --control <node i's socket> ARGS` (a shell word list); returns the exit status, with
 * its stdout in *out (free it) when out is not NULL. */
static int shoal_run(td_cluster *c, int i, const char *args, char **out)
{
    char cmd[2000], path[400];
    snprintf(path, sizeof path, "%s/cli.out", c->dir);
    snprintf(cmd, sizeof cmd, "'%s' --control '%s' %s >'%s' 2>&1", td_shoal(), c->nodes[i].control, args, path);
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

TT_MAIN()
