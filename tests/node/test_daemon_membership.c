/*
 * shoald's membership across restarts, and the mistakes it makes visible, end to end: real daemons
 * on loopback addresses of their own (test_daemon_harness.h), states and counters read through the
 * control socket as `shoal status` and `shoal stats` read them, warnings read in the daemons' logs.
 *
 * Every wait is for an event (a state, a log line, a counter), with a budget far beyond what the
 * event takes, so a slow machine makes a case take longer, never fail: most cases run gossip ten
 * times faster than its defaults (--test-gossip-period 100, every timer scaled alike) so they
 * take seconds.
 */
#include "test_daemon_harness.h"

#include "node_control.h"
#include "shoal_error.h"
#include "tt.h"
#include "tt_hosts.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* A wait for something gossip does within a few periods: long enough that only a node that does
 * not do it at all runs out of it. */
#define BUDGET_MS 60000
/* The fast cases' gossip: every timer ten times shorter than the defaults (a 100 ms period). */
static const char *const FAST[] = {"--test-gossip-period", "100", NULL};

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
    int st = td_node_wait(c, i, BUDGET_MS);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s after SIGTERM: wait status %d", c->nodes[i].id, st);
}

/* The first node of a cluster has no --seeds. Stopped with SIGTERM (the others list it as left and
 * never dial it again) and started again the same way, it dials the members it saw last, kept in
 * its state dir, and is a member again. At gossip's default timing this takes about a second; the
 * test waits up to BUDGET_MS and prints the time, so a busy machine cannot fail it, while a node
 * that does not dial its remembered members (it stays alone for good) does. */
TT_TEST(test_daemon_first_node_restarted_without_seeds_rejoins_its_cluster)
{
    td_cluster *c = td_cluster_new(3, "1M");
    for (int i = 0; i < 3; i++)
        td_node_start(c, i, NULL);
    td_wait_cluster(c, BUDGET_MS);
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
    TT_CHECK(td_wait_state(c, 1, "node0", "left", BUDGET_MS), "node1 does not list node0 as left");

    uint64_t t0 = td_now_ms();
    td_node_start(c, 0, NULL);
    TT_CHECK(td_wait_log(c, 0, "event=rejoin node=node0 members=2 ", BUDGET_MS),
             "node0 does not say it dials the 2 members it remembered");
    for (int i = 0; i < 3; i++)
        TT_CHECK(td_wait_alive(c, i, 3, BUDGET_MS), "%s does not see 3 alive members after node0 restarted",
                 c->nodes[i].id);
    tt_note("node0 rejoined in %llu ms (default timing: about a second, 10 s promised)",
            (unsigned long long)(td_now_ms() - t0));
    td_pass(c);
}

/* A seed given by a name that does not resolve at start (a Kubernetes headless service before its
 * pods are ready) is no reason to exit: the daemon runs, retries the name with backoff, and joins
 * once it resolves. The name lives in an /etc/hosts of the test's own (tt_hosts.h), which the
 * daemon's getaddrinfo reads like any other; the test adds the name while the daemon waits. */
TT_TEST(test_daemon_seed_name_that_resolves_late_is_retried_and_joined)
{
    td_cluster *c = td_cluster_new(2, "1M");
    char hosts[400], seed[96], line[96];
    snprintf(hosts, sizeof hosts, "%s/hosts", c->dir);
    tt_hosts_private(hosts, "# seed-0.shoal.test does not resolve yet\n");
    snprintf(seed, sizeof seed, "seed-0.shoal.test:%u", c->port);
    td_node_start(c, 0, FAST);
    const char *const extra[] = {"--test-gossip-period", "100", "--seeds", seed, NULL};
    td_node_start(c, 1, extra); /* fails the test if shoald exits */

    /* Retried: a second failed lookup of the name, the daemon still up and alone. */
    TT_CHECK(td_wait_log(c, 1, "event=seed_unresolved seed=seed-0.shoal.test attempts=2 ", BUDGET_MS),
             "node1 did not retry the unresolved seed");
    TT_CHECK(td_member_count(c, 1) == 1, "node1 lists %d members before its seed resolves", td_member_count(c, 1));
    int warned = td_log_count(c, 1, "level=warn module=cluster event=seed_unresolved");
    TT_CHECK(warned == 1, "the first failed lookup is a warning, later ones are not: %d warnings", warned);

    snprintf(line, sizeof line, "%s seed-0.shoal.test\n", c->nodes[0].ip);
    tt_hosts_write(hosts, line);
    td_wait_cluster(c, BUDGET_MS);
    TT_CHECK(td_log_count(c, 1, "event=seed_resolved seed=seed-0.shoal.test ") == 1,
             "node1 did not log the resolved seed once");
    td_pass(c);
}

/* `shoal forget` drops a member that left and one that died from this node's view at once (instead
 * of after 24 h), and keeps them out while the others still gossip them; an alive member and an
 * unknown one are refused with a clear message, and change nothing. */
TT_TEST(test_daemon_forget_removes_left_and_dead_members_at_once_and_refuses_an_alive_one)
{
    td_cluster *c = td_cluster_new(4, "1M");
    for (int i = 0; i < 4; i++)
        td_node_start(c, i, FAST);
    td_wait_cluster(c, BUDGET_MS);
    stop_gracefully(c, 2);
    td_node_signal(c, 3, SIGKILL);
    td_node_wait(c, 3, BUDGET_MS);
    TT_CHECK(td_wait_state(c, 0, "node2", "left", BUDGET_MS), "node0 does not list node2 as left");
    TT_CHECK(td_wait_state(c, 0, "node3", "dead", BUDGET_MS), "node0 does not list node3 as dead");

    char err[1024];
    int rc = shoal_cli(c, 0, "forget node1", err, sizeof err);
    TT_CHECK(rc == 1 && strstr(err, "shoal: member 'node1' is alive: only a dead or left member can be forgotten"),
             "forget of an alive member: exit %d, %s", rc, err);
    TT_CHECK(td_wait_alive(c, 0, 2, 0) && td_member_count(c, 0) == 4, "a refused forget changed node0's view");
    rc = shoal_cli(c, 0, "forget no-such-node", err, sizeof err);
    TT_CHECK(rc == 1 && strstr(err, "has no member 'no-such-node'"), "forget of an unknown member: exit %d, %s", rc,
             err);

    char state[32];
    for (int i = 2; i < 4; i++) {
        char args[64];
        snprintf(args, sizeof args, "forget %s", c->nodes[i].id);
        rc = shoal_cli(c, 0, args, err, sizeof err);
        TT_CHECK(rc == 0, "%s: exit %d, %s", args, rc, err);
        td_member_state(c, 0, c->nodes[i].id, state, sizeof state);
        TT_CHECK(!state[0], "node0 still lists %s (%s) right after forget", c->nodes[i].id, state);
    }
    TT_CHECK(td_member_count(c, 0) == 2, "node0 lists %d members after two forgets", td_member_count(c, 0));
    /* node1 still holds node2 as left and node3 as dead and sends them in every anti-entropy
     * exchange, whose views now differ (a dead member arrives as a suspicion, which would add it
     * back as alive). Wait for node0 to start three exchanges after the forgets: the first one's
     * answer has had two exchange periods to arrive. */
    uint64_t pp = td_stat(c, 0, "gossip.push_pulls");
    for (uint64_t until = td_now_ms() + BUDGET_MS; td_stat(c, 0, "gossip.push_pulls") < pp + 3; td_sleep_ms(100))
        TT_CHECK(td_now_ms() < until, "node0 started %llu anti-entropy exchanges since the forgets, want 3",
                 (unsigned long long)(td_stat(c, 0, "gossip.push_pulls") - pp));
    for (int i = 2; i < 4; i++) {
        td_member_state(c, 0, c->nodes[i].id, state, sizeof state);
        TT_CHECK(!state[0], "gossip brought %s back into node0's view as %s", c->nodes[i].id, state);
    }
    TT_CHECK(td_wait_state(c, 1, "node2", "left", 0) && td_wait_state(c, 1, "node3", "dead", 0),
             "node1 forgot node2 or node3 too: forget acts on one node");
    td_pass(c);
}

/* A node started with another cluster key: its join gets no answer, and it says so in its log at
 * warn level (after 15 gossip periods: 15 s at the default timing, 1.5 s here). The members log the
 * address its packets come from, once, then at most once a minute with the count, not per packet. */
TT_TEST(test_daemon_wrong_key_is_logged_by_the_node_and_by_the_members_once_a_minute)
{
    td_cluster *c = td_cluster_new(3, "1M");
    td_node_start(c, 0, FAST);
    td_node_start(c, 1, FAST);
    td_wait_cluster(c, BUDGET_MS);
    char other[400], cmd[1000];
    snprintf(other, sizeof other, "%s/other.key", c->dir);
    snprintf(cmd, sizeof cmd, "'%s' keygen -o '%s'", td_shoal(), other);
    TT_CHECK(system(cmd) == 0, "keygen");
    const char *const extra[] = {"--test-gossip-period", "100", "--cluster-key", other, NULL};
    uint64_t t0 = td_now_ms();
    td_node_start(c, 2, extra);

    TT_CHECK(td_wait_log(c, 2, "level=warn module=cluster event=join_unanswered", BUDGET_MS),
             "the node with another key logged no join_unanswered warning");
    tt_note("join_unanswered after %llu ms", (unsigned long long)(td_now_ms() - t0));

    /* Its joins go to both members; each drops them. Wait for several drops at node0. */
    for (uint64_t until = td_now_ms() + BUDGET_MS; td_stat(c, 0, "gossip.bad_packets") < 4; td_sleep_ms(50))
        TT_CHECK(td_now_ms() < until, "node0 dropped only %llu packets",
                 (unsigned long long)td_stat(c, 0, "gossip.bad_packets"));
    char source[160], first[200];
    snprintf(source, sizeof source, "level=warn module=cluster event=undecryptable_packets from=%s:%u ",
             c->nodes[2].ip, c->port);
    snprintf(first, sizeof first, "%s.*dropped=1 ", source);
    int lines = td_log_count(c, 0, source);
    uint64_t minutes = (td_now_ms() - t0) / 60000;
    TT_CHECK(lines >= 1 && (uint64_t)lines <= 1 + minutes,
             "node0 logged %d lines about node2 for %llu dropped packets in %llu full minutes", lines,
             (unsigned long long)td_stat(c, 0, "gossip.bad_packets"), (unsigned long long)minutes);
    TT_CHECK(td_log_count(c, 0, first) == 1, "node0's first line about node2 does not say dropped=1");
    TT_CHECK(td_member_count(c, 0) == 2 && td_member_count(c, 2) == 1, "the node with another key got in");
    td_pass(c);
}

TT_MAIN()
