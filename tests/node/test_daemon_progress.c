/*
 * Slow owners and stalled S3 answers, end to end: real daemons over the real local S3 server, with
 * tests/s3/faultproxy.py, a FAULT INJECTOR (a fake on purpose), between one daemon and the server
 * where a test needs S3 slow or silent (td_cluster.endpoint routes the daemons started while it is
 * set through it). What S3 was asked is counted at the server (and at the proxy).
 */
#include "test_daemon_harness.h"

#include "faultproxy.h"
#include "tt.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIB (1024u * 1024u)

typedef struct reader {
    td_cluster *c;
    int node;
    const char *key;
    size_t size;
    uint32_t seed;
} reader;

static void *read_main(void *arg)
{
    reader *r = arg;
    td_get_check(r->c, r->node, r->key, r->size, r->seed);
    return NULL;
}

/* node0 owns every block (nodes 1 and 2 are --no-serve) and reaches S3 through the proxy, which
 * holds each of its GETs three peer timeouts before forwarding it. The peer timeout (5 s) is one no
 * load reaches with a PONG (a sanitized build under a load average of 40 missed 2 s). Readers on nodes 1 and 2 ask
 * node0 and wait while it reports work on their blocks: the server sees one GET per block, the
 * readers none of their own, and no peer request times out. */
TT_TEST(test_daemon_readers_wait_for_a_slow_owner_instead_of_fetching_themselves)
{
    td_cluster *c = td_cluster_new(3, "1M");
    const size_t size = 8 * MIB;
    td_put(c, "slow/big.bin", size, 31);
    tt_proxy px;
    tt_proxy_start(&px, c->s3.port, NULL, NULL);
    /* The holds are silence to the owner's S3 client: its stall limit must outlast them. */
    const char *owner_flags[] = {"--peer-timeout", "5000", "--s3-stall-timeout", "60", NULL};
    const char *reader_flags[] = {"--peer-timeout", "5000", "--no-serve", NULL};
    c->endpoint = px.endpoint;
    td_node_start(c, 0, owner_flags);
    c->endpoint = NULL;
    td_node_start(c, 1, reader_flags);
    td_node_start(c, 2, reader_flags);
    td_wait_cluster(c, 10000);
    tt_proxy_rule(&px, "action=delay&ms=15000&count=1000&method=GET&match=slow/big.bin");
    tt_s3rver_stats_reset(&c->s3);
    pthread_t t[4];
    reader r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (reader){c, 1 + i % 2, "slow/big.bin", size, 31};
        TT_CHECK(pthread_create(&t[i], NULL, read_main, &r[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    long gets = tt_s3rver_stat(&c->s3, "gets");
    tt_note("8 blocks, 4 readers on 2 nodes, owner's GETs held 15 s: S3 GETs %ld, proxy delays %ld", gets,
            tt_proxy_stat(&px, "faults"));
    TT_CHECK(gets == 8, "the server saw %ld GETs for 8 blocks: a reader fetched a block its owner was fetching", gets);
    for (int i = 1; i <= 2; i++) {
        TT_CHECK(td_stat(c, i, "s3.get_requests") == 0, "%s sent %llu GETs to S3 itself", c->nodes[i].id,
                 (unsigned long long)td_stat(c, i, "s3.get_requests"));
        TT_CHECK(td_stat(c, i, "peer.timeouts") == 0, "%s gave up on the working owner %llu times", c->nodes[i].id,
                 (unsigned long long)td_stat(c, i, "peer.timeouts"));
    }
    tt_proxy_stop(&px);
    td_pass(c);
}

/* One node reaches S3 through the proxy, which stops one block's answer after 1000 bytes and keeps
 * the connection open and silent for 30 s. With --s3-stall-timeout 1 the daemon abandons it after
 * a second and sends it again at once: the read ends within the stall limit plus one request (the
 * time a healthy read of the same size took, measured first, with a floor of a second against a
 * machine that is busy), the bytes are right, and the stall is counted. */
TT_TEST(test_daemon_stalled_s3_answer_is_sent_again_and_the_read_ends_within_the_stall_limit)
{
    td_cluster *c = td_cluster_new(1, "1M");
    const size_t size = 3 * MIB;
    td_put(c, "stall/healthy.bin", size, 41);
    td_put(c, "stall/stalled.bin", size, 42);
    tt_proxy px;
    tt_proxy_start(&px, c->s3.port, NULL, NULL);
    c->endpoint = px.endpoint;
    const char *flags[] = {"--s3-stall-timeout", "1", NULL};
    td_node_start(c, 0, flags);
    td_wait_cluster(c, 10000);
    uint64_t t0 = td_now_ms();
    td_get_check(c, 0, "stall/healthy.bin", size, 41);
    uint64_t healthy_ms = td_now_ms() - t0;
    tt_proxy_rule(&px, "action=stall&bytes=1000&ms=30000&count=1&method=GET&match=stall/stalled.bin");
    t0 = td_now_ms();
    td_get_check(c, 0, "stall/stalled.bin", size, 42);
    uint64_t stalled_ms = td_now_ms() - t0;
    uint64_t budget_ms = 1000 + (healthy_ms * 10 > 1000 ? healthy_ms * 10 : 1000);
    tt_note("healthy read %llu ms, read with a stalled answer %llu ms (stall limit 1000 ms, budget %llu ms)",
            (unsigned long long)healthy_ms, (unsigned long long)stalled_ms, (unsigned long long)budget_ms);
    TT_CHECK(tt_proxy_stat(&px, "faults") == 1, "the proxy stalled %ld answers, want 1", tt_proxy_stat(&px, "faults"));
    /* At least the injected stall: a loaded machine may add silences of its own to the count. */
    TT_CHECK(td_stat(c, 0, "s3.stall_retries") >= 1, "s3.stall_retries is %llu, want at least 1",
             (unsigned long long)td_stat(c, 0, "s3.stall_retries"));
    TT_CHECK(stalled_ms >= 1000 && stalled_ms <= budget_ms, "the read took %llu ms, want 1000..%llu",
             (unsigned long long)stalled_ms, (unsigned long long)budget_ms);
    tt_proxy_stop(&px);
    td_pass(c);
}

/* Blocks of node0 in GETs the proxy stalls: a GET fetches one block or a run of several
 * (reads.run_gets of them, for reads.run_blocks blocks). */
static long blocks_stalled(td_cluster *c, tt_proxy *px)
{
    return tt_proxy_stat(px, "faults") + (long)(td_stat(c, 0, "reads.run_blocks") - td_stat(c, 0, "reads.run_gets"));
}

/* Until `want` read-ahead blocks of node0 are stalled at the proxy or wait for the read-ahead's
 * share of the buffers. Fails the test after a minute (a wait for events, not a verdict: it only
 * ends early). */
static void wait_readahead_stuck(td_cluster *c, tt_proxy *px, long want)
{
    uint64_t until = td_now_ms() + 60000;
    long stuck = 0;
    while ((stuck = blocks_stalled(c, px) + (long)td_stat(c, 0, "cache.readahead_waits")) < want && td_now_ms() < until)
        td_sleep_ms(50);
    TT_CHECK(stuck >= want, "%ld of %ld read-ahead blocks stalled or waiting for a buffer", stuck, want);
}

/* Peers are never starved by read-ahead. node0 owns every block (node1 is --no-serve) and reaches
 * S3 through the proxy, a FAULT INJECTOR (a fake: no real server stalls on demand), which stalls
 * every GET of two objects after 1000 bytes for ten minutes. Two sequential reads on node0 queue 8
 * read-ahead blocks of them, as many as its read-ahead workers and its block buffers (4 MiB blocks,
 * --fetch-buffers 8). Read-ahead may hold 6 of them: 6 blocks stall, in one GET per object
 * (runs of consecutive blocks), and the others wait for a buffer (at least one read-ahead waits;
 * the second may wait behind it). node1 then reads a block of another object, which it asks node0 for: node0
 * fetches it into a buffer of the reserve and answers while all 6 stalls last. Counted, not
 * timed: node1 read the block from its owner and never from S3 itself, node0 waited for a buffer
 * only for read-ahead, no read-ahead ended, and the buffers never mapped past their budget. Without
 * the reserve node0's answer would wait for a stalled read-ahead (node1 gives up on the working
 * owner after a minute and reads S3 itself), or, as before, map a buffer past the budget. */
TT_TEST(test_daemon_read_ahead_on_a_stalled_s3_never_starves_a_peer_of_buffers)
{
    td_cluster *c = td_cluster_new(2, "4M");
    const uint64_t bs = 4 * MIB;
    const char *ahead[] = {"ahead/one.bin", "ahead/two.bin"};
    for (int i = 0; i < 2; i++)
        td_put(c, ahead[i], 6 * bs, 51 + (uint32_t)i);
    td_put(c, "free/asked.bin", bs, 53);
    tt_proxy px;
    tt_proxy_start(&px, c->s3.port, NULL, NULL);
    /* The stalls are silence to node0's S3 client: its stall limit must outlast the test. */
    const char *owner_flags[] = {"--s3-stall-timeout", "600", "--fetch-buffers", "8", NULL};
    const char *reader_flags[] = {"--no-serve", NULL};
    c->endpoint = px.endpoint;
    td_node_start(c, 0, owner_flags);
    c->endpoint = NULL;
    td_node_start(c, 1, reader_flags);
    td_wait_cluster(c, 10000);
    for (int i = 0; i < 2; i++) {
        /* Blocks 1 then 0 (nothing follows anything: no read-ahead), then the stall, then block 1
         * again, which follows 0: read-ahead of blocks 2 to 5, all stalled. */
        size_t len = 0;
        free(td_get_range(c, 0, ahead[i], bs, 1, &len));
        free(td_get_range(c, 0, ahead[i], 0, 1, &len));
        char rule[160];
        snprintf(rule, sizeof rule, "action=stall&bytes=1000&ms=600000&count=1000&method=GET&match=%s", ahead[i]);
        tt_proxy_rule(&px, rule);
        uint8_t *got = td_get_range(c, 0, ahead[i], bs, 1, &len);
        TT_CHECK(got != NULL && len == 1, "read of a stored block of %s", ahead[i]);
        free(got);
    }
    wait_readahead_stuck(c, &px, 7);
    long stalled = blocks_stalled(c, &px), stalled_gets = tt_proxy_stat(&px, "faults");
    td_get_check(c, 1, "free/asked.bin", bs, 53);
    uint64_t waits = td_stat(c, 0, "cache.buffer_waits"), ra_waits = td_stat(c, 0, "cache.readahead_waits");
    uint64_t peak = td_stat(c, 0, "cache.buffer_peak_bytes"), budget = td_stat(c, 0, "cache.buffer_budget_bytes");
    tt_note("stalled read-ahead GETs %ld, read-ahead buffer waits %llu, buffer waits %llu, peak %llu of %llu bytes",
            stalled, (unsigned long long)ra_waits, (unsigned long long)waits, (unsigned long long)peak,
            (unsigned long long)budget);
    TT_CHECK(stalled == 6 && ra_waits >= 1,
             "%ld read-ahead blocks stalled and %llu read-aheads waited, want 6 and at least 1 (8 buffers "
             "less a reserve of 2)",
             stalled, (unsigned long long)ra_waits);
    TT_CHECK(td_stat(c, 1, "reads.peer") == 1 && td_stat(c, 1, "s3.get_requests") == 0,
             "node1 read %llu blocks from its owner and sent %llu GETs to S3, want 1 and 0",
             (unsigned long long)td_stat(c, 1, "reads.peer"), (unsigned long long)td_stat(c, 1, "s3.get_requests"));
    TT_CHECK(waits == ra_waits, "node0 made %llu fetches wait for a buffer besides its read-ahead",
             (unsigned long long)(waits - ra_waits));
    TT_CHECK(td_stat(c, 0, "reads.readahead") == 0 && tt_proxy_stat(&px, "faults") == stalled_gets,
             "a read-ahead ended (%llu) before node1's block was served: its answer waited for the stall",
             (unsigned long long)td_stat(c, 0, "reads.readahead"));
    /* A buffer maps its block and a header, in whole pages: the block and a page. */
    uint64_t cost = bs + (uint64_t)sysconf(_SC_PAGESIZE);
    TT_CHECK(budget == 8 * cost && peak <= budget,
             "node0's buffers mapped at most %llu bytes, budget %llu (want 8 "
             "buffers of %llu)",
             (unsigned long long)peak, (unsigned long long)budget, (unsigned long long)cost);
    tt_proxy_stop(&px);
    td_pass(c);
}

TT_MAIN()
