/*
 * The virtual-time harness itself: ordering, determinism, and each fault it offers. The nodes here
 * are tiny echo handlers, not gossip, so a failure points at the harness.
 */
#include "shoal_error.h"
#include "sim_cluster.h"
#include "sim_world.h"
#include "tt.h"

#include <string.h>

typedef struct probe_node {
    sim_world *w;
    int self;
    int received;
    uint64_t last_at;
    int wakeups;
    uint64_t wake_times[8];
} probe_node;

static void pn_receive(void *ud, const shoal_addr *from, const void *data, size_t len)
{
    probe_node *p = ud;
    p->received++;
    p->last_at = sim_world_now(p->w);
}

static void pn_wakeup(void *ud)
{
    probe_node *p = ud;
    if (p->wakeups < 8)
        p->wake_times[p->wakeups] = sim_world_now(p->w);
    p->wakeups++;
}

static const sim_node_ops pn_ops = {.receive = pn_receive, .wakeup = pn_wakeup};

static sim_world *two_nodes(probe_node *a, probe_node *b)
{
    sim_world *w = sim_world_new(7);
    TT_CHECK(w != NULL, "world");
    shoal_addr x = shoal_addr_ipv4(0x0a000001u, 1), y = shoal_addr_ipv4(0x0a000002u, 1);
    *a = (probe_node){.w = w};
    *b = (probe_node){.w = w};
    a->self = sim_world_add_node(w, &x, &pn_ops, a);
    b->self = sim_world_add_node(w, &y, &pn_ops, b);
    TT_CHECK(a->self == 0 && b->self == 1, "node numbers %d %d", a->self, b->self);
    return w;
}

static int send_to(sim_world *w, int from, int to)
{
    const shoal_env *e = sim_world_env(w, from);
    return shoal_env_send(e, sim_world_addr(w, to), "hi", 2);
}

TT_TEST(test_sim_world_rearmed_wakeup_replaces_the_earlier_one)
{
    probe_node a, b;
    sim_world *w = two_nodes(&a, &b);
    const shoal_env *e = sim_world_env(w, 0);
    shoal_env_wakeup_at(e, 5000);
    shoal_env_wakeup_at(e, 3000); /* earlier: replaces */
    sim_world_run_until(w, 10000);
    TT_CHECK(a.wakeups == 1 && a.wake_times[0] == 3000, "%d wakeups, first at %llu", a.wakeups,
             (unsigned long long)a.wake_times[0]);
    shoal_env_wakeup_at(e, 12000);
    shoal_env_wakeup_at(e, 15000); /* later: replaces too */
    sim_world_run_until(w, 20000);
    TT_CHECK(a.wakeups == 2 && a.wake_times[1] == 15000, "%d wakeups, second at %llu", a.wakeups,
             (unsigned long long)a.wake_times[1]);
    sim_world_delete(w);
}

TT_TEST(test_sim_world_delivers_after_latency_and_counts)
{
    probe_node a, b;
    sim_world *w = two_nodes(&a, &b);
    sim_world_set_latency(w, 700, 700);
    TT_OK(send_to(w, 0, 1));
    sim_world_run_until(w, 10000);
    TT_CHECK(b.received == 1 && b.last_at == 700, "received %d at %llu", b.received, (unsigned long long)b.last_at);
    sim_world_stats s = sim_world_get_stats(w);
    TT_CHECK(s.sent == 1 && s.delivered == 1 && s.dropped == 0, "stats %llu/%llu/%llu",
             (unsigned long long)s.sent, (unsigned long long)s.delivered, (unsigned long long)s.dropped);
    TT_CHECK(sim_world_node_sent(w, 0) == 1, "per-node count");
    sim_world_delete(w);
}

/* Lognormal link delays: half the packets arrive before the median, a sigma of 1 sends about 16 %
 * later than e x the median, and the same seed gives the same delays. */
TT_TEST(test_sim_world_lognormal_latency_has_its_median_and_tail)
{
    uint64_t first_delays[4] = {0};
    for (int round = 0; round < 2; round++) {
        probe_node a, b;
        sim_world *w = two_nodes(&a, &b);
        sim_world_set_latency_lognormal(w, 1000, 1.0);
        int under_median = 0, over_e = 0;
        const int n = 2000;
        for (int i = 0; i < n; i++) {
            uint64_t t0 = sim_world_now(w);
            TT_OK(send_to(w, 0, 1));
            int before = b.received;
            sim_world_run_until(w, t0 + 10000000);
            TT_CHECK(b.received == before + 1, "packet %d not delivered", i);
            uint64_t d = b.last_at - t0;
            under_median += d < 1000;
            over_e += d > 2718;
            if (i < 4 && round == 0)
                first_delays[i] = d;
            else if (i < 4)
                TT_CHECK(first_delays[i] == d, "seed 7 gave delay %llu, then %llu", (unsigned long long)first_delays[i],
                         (unsigned long long)d);
        }
        TT_CHECK(under_median > n * 45 / 100 && under_median < n * 55 / 100, "%d of %d under the median",
                 under_median, n);
        TT_CHECK(over_e > n * 12 / 100 && over_e < n * 20 / 100, "%d of %d over e x the median (want ~16 %%)",
                 over_e, n);
        sim_world_delete(w);
    }
}

TT_TEST(test_sim_world_cut_partition_block_and_loss_drop_packets)
{
    probe_node a, b;
    sim_world *w = two_nodes(&a, &b);
    sim_world_cut(w, 0, 1, true);
    TT_OK(send_to(w, 0, 1));
    TT_OK(send_to(w, 1, 0));
    sim_world_cut(w, 0, 1, false);
    sim_world_set_group(w, 1, 2);
    TT_OK(send_to(w, 0, 1));
    sim_world_set_group(w, 1, 0);
    sim_world_block(w, 1, true);
    TT_OK(send_to(w, 0, 1));
    sim_world_block(w, 1, false);
    sim_world_set_node_loss(w, 0, 1.0);
    TT_OK(send_to(w, 0, 1));
    sim_world_set_node_loss(w, 0, 0.0);
    sim_world_run_for(w, 100000);
    TT_CHECK(a.received == 0 && b.received == 0, "a fault let a packet through: %d %d", a.received, b.received);
    TT_OK(send_to(w, 0, 1));
    sim_world_run_for(w, 100000);
    TT_CHECK(b.received == 1, "a healed link still drops");
    sim_world_delete(w);
}

TT_TEST(test_sim_world_blocked_node_timers_freeze_until_unblocked)
{
    probe_node a, b;
    sim_world *w = two_nodes(&a, &b);
    shoal_env_wakeup_at(sim_world_env(w, 0), 1000);
    sim_world_block(w, 0, true);
    sim_world_run_until(w, 50000);
    TT_CHECK(a.wakeups == 0, "a blocked node woke up");
    sim_world_block(w, 0, false);
    sim_world_run_until(w, 60000);
    TT_CHECK(a.wakeups == 1 && a.wake_times[0] == 50000, "thawed wakeup %d at %llu", a.wakeups,
             (unsigned long long)a.wake_times[0]);
    sim_world_delete(w);
}

TT_TEST(test_sim_world_fail_next_sends_injects_local_errors)
{
    probe_node a, b;
    sim_world *w = two_nodes(&a, &b);
    sim_world_fail_sends(w, 0, 2);
    TT_CHECK(send_to(w, 0, 1) < 0 && shoal_error_code() == SHOAL_ERR_IO, "first send should fail");
    TT_CHECK(send_to(w, 0, 1) < 0, "second send should fail");
    TT_OK(send_to(w, 0, 1));
    uint8_t big[SIM_DATAGRAM_MAX + 1] = {0};
    TT_CHECK(shoal_env_send(sim_world_env(w, 0), sim_world_addr(w, 1), big, sizeof big) < 0 &&
                 shoal_error_code() == SHOAL_ERR_RANGE,
             "an oversize datagram was accepted");
    sim_world_delete(w);
}

/* The whole run is a function of the seed: two clusters with one seed end byte-identical. */
static void run_cluster(uint64_t seed, sim_world_stats *st, uint64_t *inc_sum)
{
    gossip_config base;
    sim_cluster_base_config(&base);
    sim_cluster *c = sim_cluster_new(seed, &base);
    TT_CHECK(c != NULL, "cluster");
    TT_OK(sim_cluster_add_joined(c, 30, 0));
    sim_world *w = sim_cluster_world(c);
    sim_world_set_loss(w, 0.1);
    sim_world_run_for(w, 20000000);
    sim_cluster_kill(c, 5);
    sim_world_run_for(w, 40000000);
    *st = sim_world_get_stats(w);
    *inc_sum = 0;
    for (int i = 0; i < 30; i++)
        if (sim_cluster_node(c, i))
            *inc_sum += gossip_incarnation(sim_cluster_node(c, i)) * 1000 + gossip_version(sim_cluster_node(c, i));
    sim_cluster_delete(c);
}

TT_TEST(test_sim_world_same_seed_gives_the_same_run)
{
    sim_world_stats s1, s2, s3;
    uint64_t i1, i2, i3;
    run_cluster(99, &s1, &i1);
    run_cluster(99, &s2, &i2);
    run_cluster(100, &s3, &i3);
    TT_CHECK(memcmp(&s1, &s2, sizeof s1) == 0 && i1 == i2,
             "two runs with seed 99 differ: %llu vs %llu events", (unsigned long long)s1.events,
             (unsigned long long)s2.events);
    TT_CHECK(s1.events != s3.events || i1 != i3, "seeds 99 and 100 gave identical runs");
}

TT_MAIN()
