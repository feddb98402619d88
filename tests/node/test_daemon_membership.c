/*
 * shoald's membership across restarts, and the mistakes it makes visible, end to end: real daemons
 * on loopback addresses of their own (test_daemon_harness.h), states and counters read through the
 * control socket as `shoal status` and `shoal stats` read them, warnings read in the daemons' logs.
 *
 * Waits are derived from gossip's own periods, with generous budgets, so a slow machine makes a
 * case take longer, never fail: most cases run gossip ten times faster than its defaults
 * (--test-gossip-period 100, every timer scaled alike) so they take seconds.
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

#define PERIOD_MS 100 /* --test-gossip-period of the fast cases */
static const char *const FAST[] = {"--test-gossip-period", "100", NULL};

/* Lines of node i's log that hold every one of the (NULL-terminated) strings. */
static int log_lines(td_cluster *c, int i, const char *const *all)
{
    FILE *f = fopen(c->nodes[i].log, "r");
    if (!f)
        return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        bool hit = true;
        for (int k = 0; all[k] && hit; k++)
            hit = strstr(line, all[k]) != NULL;
        n += hit;
    }
    fclose(f);
    return n;
}

/* Waits up to budget_ms for node i's log to hold `want` such lines; false when it does not. */
static bool wait_log(td_cluster *c, int i, const char *const *all, int want, uint64_t budget_ms)
{
    uint64_t deadline = td_now_ms() + budget_ms;
    while (log_lines(c, i, all) < want) {
        if (td_now_ms() > deadline)
            return false;
        td_sleep_ms(50);
    }
    return true;
}

/* Waits up to budget_ms for member `id` to be in `state` in node i's view. */
static bool wait_state(td_cluster *c, int i, const char *id, const char *state, uint64_t budget_ms)
{
    char got[32];
    uint64_t deadline = td_now_ms() + budget_ms;
    for (;;) {
        td_member_state(c, i, id, got, sizeof got);
        if (!strcmp(got, state))
            return true;
        if (td_now_ms() > deadline)
            return false;
        td_sleep_ms(50);
    }
}

/* Runs `shoal ARGS` against node i; returns the exit status and its stderr in err. */
static int shoal_cli(td_cluster *c, int i, const char *args, char *err, size_t err_len)
{
    char cmd[1200], path[400];
    snprintf(path, sizeof path, "%s/cli.err", c->dir);
    snprintf(cmd, sizeof cmd, "'%s' --control '%s' %s >/dev/null 2>'%s'", td_shoal(), c->nodes[i].control, args, path);
    int st = system(cmd);
    err[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(err, 1, err_len - 1, f);
        err[n] = '\0';
        fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void stop_gracefully(td_cluster *c, int i)
{
    td_node_signal(c, i, SIGTERM);
    int st = td_node_wait(c, i, 30000);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s after SIGTERM: wait status %d", c->nodes[i].id, st);
}

/* The first node of a cluster has no --seeds. Stopped with SIGTERM (the others list it as left and
 * never dial it again) and started again the same way, it dials the members it saw last, kept in
 * its state dir, and is a member again: gossip's default timing, 10 s at most. */
TT_TEST(test_daemon_first_node_restarted_without_seeds_rejoins_its_cluster)
{
    td_cluster *c = td_cluster_new(3, "1M");
    for (int i = 0; i < 3; i++)
        td_node_start(c, i, NULL);
    td_wait_cluster(c, 15000);
    char path[400], text[1024] = "";
    snprintf(path, sizeof path, "%s/cache/state/members", c->nodes[0].dir);
    stop_gracefully(c, 0);
    FILE *f = fopen(path, "r");
    TT_CHECK(f != NULL, "no %s after a graceful stop", path);
    text[fread(text, 1, sizeof text - 1, f)] = '\0';
    fclose(f);
    for (int i = 1; i < 3; i++) {
        char want[96];
        snprintf(want, sizeof want, "\n%s %s:%u\n", c->nodes[i].id, c->nodes[i].ip, c->port);
        TT_CHECK(strstr(text, want) != NULL, "%s does not list %s:\n%s", path, c->nodes[i].id, text);
    }
    TT_CHECK(wait_state(c, 1, "node0", "left", 10000), "node1 does not list node0 as left");

    uint64_t t0 = td_now_ms();
    td_node_start(c, 0, NULL);
    for (int i = 0; i < 3; i++)
        TT_CHECK(td_wait_alive(c, i, 3, 10000), "%s does not see 3 alive members 10 s after node0 restarted",
                 c->nodes[i].id);
    tt_note("node0 rejoined in %llu ms", (unsigned long long)(td_now_ms() - t0));
    td_pass(c);
}

/* A seed given by a name that does not resolve at start (a Kubernetes headless service before its
 * pods are ready) is no reason to exit: the daemon runs, retries the name with backoff, and joins
 * once it resolves. Names resolve through a hosts file (--test-hosts) the test edits, not DNS. */
TT_TEST(test_daemon_seed_name_that_resolves_late_is_retried_and_joined)
{
    td_cluster *c = td_cluster_new(2, "1M");
    char hosts[400], tmp[420], seed[96];
    snprintf(hosts, sizeof hosts, "%s/hosts", c->dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", hosts);
    FILE *f = fopen(hosts, "w");
    TT_CHECK(f && fprintf(f, "# nothing resolves yet\n") > 0 && fclose(f) == 0, "write %s", hosts);
    snprintf(seed, sizeof seed, "seed-0.shoal.test:%u", c->port);
    td_node_start(c, 0, FAST);
    const char *const extra[] = {"--test-gossip-period", "100", "--seeds", seed, "--test-hosts", hosts, NULL};
    td_node_start(c, 1, extra); /* fails the test if shoald exits */

    /* Retried: a second failed lookup of the name, the daemon still up and alone. */
    const char *const unresolved[] = {"event=seed_unresolved", "seed=seed-0.shoal.test", NULL};
    TT_CHECK(wait_log(c, 1, unresolved, 2, 30000), "node1 did not retry the unresolved seed (%d lookups logged)",
             log_lines(c, 1, unresolved));
    TT_CHECK(td_member_count(c, 1) == 1, "node1 lists %d members before its seed resolves", td_member_count(c, 1));
    const char *const warned[] = {"level=warn", "event=seed_unresolved", NULL};
    TT_CHECK(log_lines(c, 1, warned) == 1, "the first failed lookup is a warning, later ones are not: %d warnings",
             log_lines(c, 1, warned));

    /* The name appears (written whole, then renamed, as a resolver update would be). */
    f = fopen(tmp, "w");
    TT_CHECK(f && fprintf(f, "%s seed-0.shoal.test\n", c->nodes[0].ip) > 0 && fclose(f) == 0, "write %s", tmp);
    TT_CHECK(rename(tmp, hosts) == 0, "rename %s", tmp);
    /* The next lookup comes within the longest backoff (30 periods), then one join round trip. */
    td_wait_cluster(c, 30 * PERIOD_MS + 20000);
    const char *const resolved[] = {"event=seed_resolved", "seed=seed-0.shoal.test", NULL};
    TT_CHECK(log_lines(c, 1, resolved) == 1, "node1 did not log the resolved seed");
    td_pass(c);
}

/* `shoal forget` drops a member that left from this node's view at once (instead of after 24 h)
 * and keeps it out while the others still gossip it; an alive member and an unknown one are
 * refused with a clear message, and change nothing. */
TT_TEST(test_daemon_forget_removes_a_left_member_at_once_and_refuses_an_alive_one)
{
    td_cluster *c = td_cluster_new(3, "1M");
    for (int i = 0; i < 3; i++)
        td_node_start(c, i, FAST);
    td_wait_cluster(c, 15000);
    stop_gracefully(c, 2);
    TT_CHECK(wait_state(c, 0, "node2", "left", 10000), "node0 does not list node2 as left");

    char err[1024];
    int rc = shoal_cli(c, 0, "forget node1", err, sizeof err);
    TT_CHECK(rc == 1 && strstr(err, "shoal: member 'node1' is alive: only a dead or left member can be forgotten"),
             "forget of an alive member: exit %d, %s", rc, err);
    TT_CHECK(td_wait_alive(c, 0, 2, 0) && td_member_count(c, 0) == 3, "a refused forget changed node0's view");
    rc = shoal_cli(c, 0, "forget no-such-node", err, sizeof err);
    TT_CHECK(rc == 1 && strstr(err, "has no member 'no-such-node'"), "forget of an unknown member: exit %d, %s", rc,
             err);

    rc = shoal_cli(c, 0, "forget node2", err, sizeof err);
    TT_CHECK(rc == 0, "forget node2: exit %d, %s", rc, err);
    char state[32];
    td_member_state(c, 0, "node2", state, sizeof state);
    TT_CHECK(!state[0] && td_member_count(c, 0) == 2, "node0 still lists node2 (%s) right after forget", state);
    /* node1 still holds node2 as left and gossips it: four push-pull periods (30 gossip periods
     * each) later node0 still does not list it. */
    td_sleep_ms(4 * 30 * PERIOD_MS);
    td_member_state(c, 0, "node2", state, sizeof state);
    TT_CHECK(!state[0], "gossip brought node2 back into node0's view as %s", state);
    TT_CHECK(wait_state(c, 1, "node2", "left", 0), "node1 forgot node2 too: forget acts on one node");
    td_pass(c);
}

/* A node started with another cluster key: its join gets no answer, and it says so in its log at
 * warn level (within 15 gossip periods; a minute at the default timing). The members log the
 * address its packets come from, once, then at most once a minute with the count, not per packet. */
TT_TEST(test_daemon_wrong_key_is_logged_by_the_node_and_by_the_members_once_a_minute)
{
    td_cluster *c = td_cluster_new(3, "1M");
    td_node_start(c, 0, FAST);
    td_node_start(c, 1, FAST);
    td_wait_cluster(c, 15000);
    char other[400], cmd[1000];
    snprintf(other, sizeof other, "%s/other.key", c->dir);
    snprintf(cmd, sizeof cmd, "'%s' keygen -o '%s'", td_shoal(), other);
    TT_CHECK(system(cmd) == 0, "keygen");
    const char *const extra[] = {"--test-gossip-period", "100", "--cluster-key", other, NULL};
    uint64_t t0 = td_now_ms();
    td_node_start(c, 2, extra);

    const char *const unanswered[] = {"level=warn", "event=join_unanswered", NULL};
    TT_CHECK(wait_log(c, 2, unanswered, 1, 60000), "the node with another key logged no join_unanswered warning");
    tt_note("join_unanswered after %llu ms", (unsigned long long)(td_now_ms() - t0));

    /* Its joins go to both members; each drops them. Wait for several drops at node0. */
    uint64_t deadline = td_now_ms() + 60000;
    while (td_stat(c, 0, "gossip.bad_packets") < 4) {
        TT_CHECK(td_now_ms() < deadline, "node0 dropped only %llu packets",
                 (unsigned long long)td_stat(c, 0, "gossip.bad_packets"));
        td_sleep_ms(50);
    }
    char from[64];
    snprintf(from, sizeof from, "from=%s:%u ", c->nodes[2].ip, c->port);
    const char *const source[] = {"level=warn", "event=undecryptable_packets", from, NULL};
    const char *const first[] = {"event=undecryptable_packets", from, "dropped=1 ", NULL};
    int lines = log_lines(c, 0, source);
    uint64_t minutes = (td_now_ms() - t0) / 60000;
    TT_CHECK(lines >= 1 && (uint64_t)lines <= 1 + minutes,
             "node0 logged %d lines about %s for %llu dropped packets in %llu full minutes", lines, from,
             (unsigned long long)td_stat(c, 0, "gossip.bad_packets"), (unsigned long long)minutes);
    TT_CHECK(log_lines(c, 0, first) == 1, "node0's first line about %s does not say dropped=1", from);
    TT_CHECK(td_member_count(c, 0) == 2 && td_member_count(c, 2) == 1, "the node with another key got in");
    td_pass(c);
}

TT_MAIN()
