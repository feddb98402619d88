/*
 * shoald when the membership changes: a warm cluster that scales out, a node drained before it
 * leaves, a node killed with --replicas 2, a node stopped with --replicas 1 (its stand-ins), a
 * SIGTERM that drains, and preload's report. Real
 * daemons on loopback and the real S3 server; what S3 was asked is counted at the server.
 *
 * Every count here is deterministic, whatever the load of the machine: the daemons run with a
 * peer timeout no busy machine reaches (so no read gives up on a live owner and goes to S3), and
 * each membership change is waited for by polling `shoal status` on every node until it shows it,
 * never by sleeping. The stopped-owner test is the exception that has to be: its readers must
 * leave the silent owner before gossip calls it dead, so it keeps the default 2 s; a live owner is
 * left only when it answers no PING for 2 s (its transport answers them on its own thread).
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

#define KIB 1024u
#define BLOCK "256K"
#define BLOCK_BYTES (256u * KIB)

/* 60 objects of 1 to 4 blocks, the last one short: 150 unique blocks. */
#define DS_OBJECTS 60
static size_t ds_size(int k) { return (size_t)(k % 4) * BLOCK_BYTES + 1000u + (size_t)k * 13u; }
static void ds_key(int k, char *out, size_t n) { snprintf(out, n, "set/obj-%02d.bin", k); }

static long ds_blocks(void)
{
    long n = 0;
    for (int k = 0; k < DS_OBJECTS; k++)
        n += (long)((ds_size(k) + BLOCK_BYTES - 1) / BLOCK_BYTES);
    return n;
}

static void ds_read_all(td_cluster *c, int node)
{
    char key[64];
    for (int k = 0; k < DS_OBJECTS; k++) {
        ds_key(k, key, sizeof key);
        td_get_check(c, node, key, ds_size(k), (uint32_t)k + 100);
    }
}

/* Every running node reads the whole dataset, all at once. */
static void read_everywhere(td_cluster *c) { td_each_running_node(c, ds_read_all); }

/* A peer timeout no busy machine reaches: a read never gives up on a live owner. */
#define PATIENT "--peer-timeout", "120000"

/* Uploads the dataset and starts nodes [0, n) of a cluster of `slots` with `extra` flags (the last
 * one with `last_extra` when not NULL); returns once every node sees every other. */
static td_cluster *cold_cluster_2(int slots, int n, const char *const *extra, const char *const *last_extra)
{
    td_cluster *c = td_cluster_new(slots, BLOCK);
    char key[64];
    for (int k = 0; k < DS_OBJECTS; k++) {
        ds_key(k, key, sizeof key);
        td_put(c, key, ds_size(k), (uint32_t)k + 100);
    }
    for (int i = 0; i < n; i++)
        td_node_start(c, i, i == n - 1 && last_extra ? last_extra : extra);
    td_wait_cluster(c, 20000);
    return c;
}

/* cold_cluster_2, then the dataset preloaded (every block fetched once, by its owner, and kept
 * there), then the server's counters zeroed. */
static td_cluster *warm_cluster_2(int slots, int n, const char *const *extra, const char *const *last_extra)
{
    td_cluster *c = cold_cluster_2(slots, n, extra, last_extra);
    TT_CHECK(node_control_preload(c->nodes[0].control, TD_BUCKET, "set/", NULL, NULL) == 0, "preload: %s",
             shoal_error_message());
    long gets = tt_s3rver_stat(&c->s3, "gets");
    TT_CHECK(gets == ds_blocks(), "the preload cost %ld S3 GETs for %ld blocks", gets, ds_blocks());
    tt_s3rver_stats_reset(&c->s3);
    return c;
}

static td_cluster *warm_cluster(int slots, int n, const char *const *extra)
{
    return warm_cluster_2(slots, n, extra, NULL);
}

/* Waits until every running node but `who` lists member `who` in `state` (polling `shoal status`). */
static void wait_state_everywhere(td_cluster *c, int who, const char *state, int timeout_ms)
{
    uint64_t deadline = td_now_ms() + (uint64_t)timeout_ms;
    for (int i = 0; i < c->n; i++) {
        if (i == who || c->nodes[i].pid <= 0)
            continue;
        char seen[32];
        for (;;) {
            td_member_state(c, i, c->nodes[who].id, seen, sizeof seen);
            if (strcmp(seen, state) == 0)
                break;
            TT_CHECK(td_now_ms() < deadline, "%s sees %s as '%s' after %d ms, not '%s'", c->nodes[i].id,
                     c->nodes[who].id, seen, timeout_ms, state);
            td_sleep_ms(50);
        }
    }
}

/* Sums counter `name` over the running nodes but node `skip` (-1: none). */
static uint64_t stat_sum_but(td_cluster *c, int skip, const char *name)
{
    uint64_t sum = 0;
    for (int i = 0; i < c->n; i++)
        if (c->nodes[i].pid > 0 && i != skip)
            sum += td_stat(c, i, name);
    return sum;
}

static uint64_t stat_sum(td_cluster *c, const char *name) { return stat_sum_but(c, -1, name); }

/* Waits until every push any running node started has ended (accepted or refused). */
static void wait_pushes(td_cluster *c)
{
    for (int i = 0; i < c->n; i++)
        while (c->nodes[i].pid > 0 &&
               td_stat(c, i, "peer.pushes") + td_stat(c, i, "peer.push_failures") < td_stat(c, i, "peer.pushes_started"))
            td_sleep_ms(20);
}

/* Runs `shoal ARGS --json` against node i; returns its exit status, its stdout parsed in *out. */
static int shoal_json(td_cluster *c, int i, const char *args, node_json **out)
{
    char cmd[1200], path[400];
    snprintf(path, sizeof path, "%s/out.json", c->nodes[i].dir);
    snprintf(cmd, sizeof cmd, "'%s' --control '%s' %s --json > '%s'", td_shoal(), c->nodes[i].control, args, path);
    int st = system(cmd);
    FILE *f = fopen(path, "r");
    char text[4096] = "";
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f)
        fclose(f);
    text[n] = '\0';
    *out = node_json_parse(text, n);
    TT_CHECK(*out != NULL, "shoal %s --json printed no JSON object: '%s'", args, text);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A warm cluster of 4 scales out to 5, then 6 nodes; every node re-reads everything. The blocks
 * that moved to a joiner are handed over by their previous owners: S3 is (almost) not asked. */
TT_TEST(test_daemon_scale_out_of_a_warm_cluster_costs_no_s3_get)
{
    const char *const extra[] = {PATIENT, NULL};
    td_cluster *c = warm_cluster(6, 4, extra);
    td_node_start(c, 4, extra);
    td_wait_cluster(c, 20000);
    td_node_start(c, 5, extra);
    td_wait_cluster(c, 20000);
    read_everywhere(c);
    long gets = tt_s3rver_stat(&c->s3, "gets"), unique = ds_blocks();
    uint64_t hits = stat_sum(c, "handoff.hits");
    tt_note("6 nodes re-read %ld blocks after two joins: %ld S3 GETs, %llu blocks handed over", unique, gets,
            (unsigned long long)hits);
    TT_CHECK(gets * 100 <= unique, "%ld S3 GETs for %ld unique blocks after two joins (more than 0.01 per block)", gets,
             unique);
    TT_CHECK(hits > 0, "no joiner took a block from its previous owner");
    td_pass(c);
}

/* `shoal drain` on one of 5 warm nodes hands its blocks to their next owners, then the node
 * leaves; the 4 others re-read everything without one S3 GET, and the bytes went as peer traffic. */
TT_TEST(test_daemon_drained_node_leaves_without_costing_an_s3_get)
{
    const char *const extra[] = {PATIENT, NULL};
    td_cluster *c = warm_cluster(5, 5, extra);
    uint64_t bytes_in_before = stat_sum(c, "peer.bytes_in");
    node_json *j = NULL;
    int rc = shoal_json(c, 2, "drain", &j);
    uint64_t sent = node_json_get_u64(j, "blocks_sent", 0), bytes = node_json_get_u64(j, "bytes_sent", 0);
    TT_CHECK(rc == 0 && node_json_get_u64(j, "failed", 1) == 0, "shoal drain exited %d: %s", rc,
             node_json_get_str(j, "error", "-"));
    TT_CHECK(sent > 0 && sent == node_json_get_u64(j, "blocks", 0) && bytes > 0,
             "the drain sent %llu of %llu blocks (%llu bytes)", (unsigned long long)sent,
             (unsigned long long)node_json_get_u64(j, "blocks", 0), (unsigned long long)bytes);
    node_json_delete(j);
    int st = td_node_wait(c, 2, 20000);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the drained node ended with status %d", st);
    wait_state_everywhere(c, 2, "left", 20000);
    uint64_t taken = stat_sum(c, "handoff.blocks_in"), bytes_in = stat_sum(c, "peer.bytes_in") - bytes_in_before;
    tt_note("drain: %llu blocks (%llu bytes) handed off; the others took %llu and received %llu peer bytes",
            (unsigned long long)sent, (unsigned long long)bytes, (unsigned long long)taken,
            (unsigned long long)bytes_in);
    TT_CHECK(taken == sent && bytes_in >= bytes, "the others took %llu blocks and %llu bytes of %llu and %llu",
             (unsigned long long)taken, (unsigned long long)bytes_in, (unsigned long long)sent,
             (unsigned long long)bytes);
    read_everywhere(c);
    long gets = tt_s3rver_stat(&c->s3, "gets");
    TT_CHECK(gets == 0, "re-reading after a drain cost %ld S3 GETs", gets);
    td_pass(c);
}

/* --replicas 2 on 5 warm nodes: every block is held by both its owners, so after a kill -9 the
 * survivors re-read everything with no S3 GET and no failed read. */
TT_TEST(test_daemon_kill_with_replicas_costs_no_s3_get)
{
    const char *const extra[] = {PATIENT, "--replicas", "2", NULL};
    td_cluster *c = warm_cluster(5, 5, extra);
    wait_pushes(c);
    uint64_t pushed = stat_sum(c, "peer.pushes");
    TT_CHECK(stat_sum(c, "peer.push_failures") == 0 && pushed == (uint64_t)ds_blocks(),
             "%llu copies pushed for %ld blocks, %llu failed", (unsigned long long)pushed, ds_blocks(),
             (unsigned long long)stat_sum(c, "peer.push_failures"));
    td_node_signal(c, 3, SIGKILL);
    td_node_wait(c, 3, 10000);
    wait_state_everywhere(c, 3, "dead", 60000);
    tt_s3rver_stats_reset(&c->s3);
    read_everywhere(c); /* every read is checked: a failed one fails the test */
    long gets = tt_s3rver_stat(&c->s3, "gets");
    tt_note("after kill -9 of one of 5 nodes with --replicas 2: %ld S3 GETs, %llu blocks handed over", gets,
            (unsigned long long)stat_sum(c, "handoff.hits"));
    TT_CHECK(gets == 0, "re-reading after a kill cost %ld S3 GETs with --replicas 2", gets);
    td_pass(c);
}

/* --replicas 1: one of 4 nodes stops (SIGSTOP: it never answers again) and at once the 3 others
 * read the whole cold dataset, all together. The blocks and the metadata the stopped node owns
 * are fetched by their stand-in, the member ranked next, once for the 3 readers: S3 sees exactly
 * one GET per block and one HEAD per object, and every byte is checked.
 *
 * The counts hold whatever the timing. Readers leave the silent owner after the peer timeout
 * (2 s, the default) and go to the stand-in; once gossip declares the node dead (at least 4 s of
 * suspicion after it stopped answering probes), the stand-in is the owner, and every reader asks
 * it as such. Either way one member fetches each block. Without stand-ins, each reader that left
 * the silent owner before gossip did would have gone to S3 on its own: up to 3 GETs per block. */
TT_TEST(test_daemon_silent_owner_costs_one_s3_get_per_block_not_one_per_reader)
{
    td_cluster *c = cold_cluster_2(4, 4, NULL, NULL);
    tt_s3rver_stats_reset(&c->s3);
    td_node_signal(c, 3, SIGSTOP);
    td_each_node_but(c, 3, ds_read_all); /* every read is checked: a failed one fails the test */
    long gets = tt_s3rver_stat(&c->s3, "gets"), heads = tt_s3rver_stat(&c->s3, "heads");
    char seen[32];
    td_member_state(c, 0, c->nodes[3].id, seen, sizeof seen);
    tt_note("3 nodes read %ld blocks of %d objects while a 4th was stopped (now '%s' to node-0): %ld S3 GETs, "
            "%ld HEADs; %llu requests asked of stand-ins, %llu answered, %llu peer timeouts",
            ds_blocks(), DS_OBJECTS, seen, gets, heads, (unsigned long long)stat_sum_but(c, 3, "standin.asks"),
            (unsigned long long)stat_sum_but(c, 3, "standin.hits"),
            (unsigned long long)stat_sum_but(c, 3, "peer.timeouts"));
    TT_CHECK(gets == ds_blocks(), "%ld S3 GETs for %ld blocks read by 3 nodes while an owner was stopped", gets,
             ds_blocks());
    TT_CHECK(heads == DS_OBJECTS, "%ld S3 HEADs for %d objects read by 3 nodes while an owner was stopped", heads,
             DS_OBJECTS);
    td_node_signal(c, 3, SIGKILL);
    td_node_wait(c, 3, 10000);
    td_pass(c);
}

/* SIGTERM drains for at most --drain-timeout before the leave; with --drain-timeout 0 the node
 * leaves at once and hands nothing off. Both leave a cluster warmed by a preload, where every block
 * is held by its owner alone: the survivors' re-read then fetches from S3 exactly the blocks the
 * node that did not drain held (its own and those the drained node handed it), and none of those
 * the drained node owned. */
TT_TEST(test_daemon_sigterm_drains_before_leaving_unless_told_not_to)
{
    /* a drain budget no busy machine uses up: the verdict never depends on the load */
    const char *const extra[] = {PATIENT, "--drain-timeout", "600", NULL};
    const char *const no_drain[] = {PATIENT, "--drain-timeout", "0", NULL};
    td_cluster *c = warm_cluster_2(4, 4, extra, no_drain);
    uint64_t owned_by_1 = td_stat(c, 1, "cache.blocks");
    td_node_signal(c, 1, SIGTERM);
    int st = td_node_wait(c, 1, 60000);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: status %d", st);
    wait_state_everywhere(c, 1, "left", 20000);
    uint64_t taken = stat_sum(c, "handoff.blocks_in");
    TT_CHECK(owned_by_1 > 0 && taken == owned_by_1, "SIGTERM handed %llu of %llu blocks off",
             (unsigned long long)taken, (unsigned long long)owned_by_1);

    uint64_t held_by_3 = td_stat(c, 3, "cache.blocks");
    uint64_t taken_by_0_2 = td_stat(c, 0, "handoff.blocks_in") + td_stat(c, 2, "handoff.blocks_in");
    td_node_signal(c, 3, SIGTERM);
    st = td_node_wait(c, 3, 60000);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM with --drain-timeout 0: status %d", st);
    wait_state_everywhere(c, 3, "left", 20000);
    TT_CHECK(td_stat(c, 0, "handoff.blocks_in") + td_stat(c, 2, "handoff.blocks_in") == taken_by_0_2,
             "a node with --drain-timeout 0 handed blocks off");
    read_everywhere(c);
    long gets = tt_s3rver_stat(&c->s3, "gets");
    tt_note("SIGTERM: node1 handed off %llu blocks; node3 (--drain-timeout 0) left with %llu; the re-read cost %ld "
            "S3 GETs",
            (unsigned long long)taken, (unsigned long long)held_by_3, gets);
    TT_CHECK(held_by_3 > 0 && gets == (long)held_by_3,
             "the re-read cost %ld S3 GETs where the node that did not drain held %llu blocks", gets,
             (unsigned long long)held_by_3);
    td_pass(c);
}

/* `shoal preload --json` says how many blocks were cached already and how many came from S3; the
 * preloading node receives no block bytes; a prefix that matches nothing is exit 1. */
TT_TEST(test_daemon_preload_reports_cached_and_fetched_blocks)
{
    const char *const extra[] = {PATIENT, NULL};
    td_cluster *c = cold_cluster_2(3, 3, extra, NULL);
    tt_s3rver_stats_reset(&c->s3);
    long unique = ds_blocks();
    for (int pass = 0; pass < 2; pass++) {
        node_json *j = NULL;
        char args[200];
        snprintf(args, sizeof args, "preload s3://%s/set/", TD_BUCKET);
        TT_CHECK(shoal_json(c, 0, args, &j) == 0, "preload failed: %s", node_json_get_str(j, "error", "-"));
        uint64_t cached = node_json_get_u64(j, "cached", 99999), fetched = node_json_get_u64(j, "fetched", 99999);
        tt_note("preload pass %d: %llu blocks cached already, %llu fetched from S3", pass + 1,
                (unsigned long long)cached, (unsigned long long)fetched);
        TT_CHECK(node_json_get_u64(j, "objects", 0) == DS_OBJECTS && node_json_get_u64(j, "blocks", 0) == (uint64_t)unique,
                 "objects %llu blocks %llu", (unsigned long long)node_json_get_u64(j, "objects", 0),
                 (unsigned long long)node_json_get_u64(j, "blocks", 0));
        TT_CHECK(pass == 0 ? fetched == (uint64_t)unique && cached == 0 : cached == (uint64_t)unique && fetched == 0,
                 "pass %d: cached %llu fetched %llu of %ld", pass + 1, (unsigned long long)cached,
                 (unsigned long long)fetched, unique);
        node_json_delete(j);
    }
    TT_CHECK(tt_s3rver_stat(&c->s3, "gets") == unique, "two preloads cost %ld S3 GETs for %ld blocks",
             tt_s3rver_stat(&c->s3, "gets"), unique);
    TT_CHECK(td_stat(c, 0, "peer.bytes_in") == 0, "the preloading node received %llu block bytes",
             (unsigned long long)td_stat(c, 0, "peer.bytes_in"));
    node_json *j = NULL;
    char args[200];
    snprintf(args, sizeof args, "preload s3://%s/nothing-here/", TD_BUCKET);
    TT_CHECK(shoal_json(c, 0, args, &j) == 1, "a preload of an empty prefix did not exit 1");
    TT_CHECK(strstr(node_json_get_str(j, "error", ""), "nothing to preload"), "its error: %s",
             node_json_get_str(j, "error", "-"));
    node_json_delete(j);
    td_pass(c);
}

TT_MAIN()
