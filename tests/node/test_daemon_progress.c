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
#include <string.h>

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

TT_MAIN()
