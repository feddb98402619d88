/*
 * Behaviour of the gossip state machine, cluster-wide, in virtual time: joining, failure
 * detection, suspicion and refutation, indirect probes, dissemination bounds, partitions, leave,
 * replayed packets, and admission (key, block size, duplicate id). The network faults come from the
 * simulated world (sim/sim_world.h): no real network can drop exactly these packets on demand.
 */
#include "gossip_proto.h"
#include "gossip_tt.h"

#include <stdlib.h>

TT_TEST(test_gossip_join_through_one_seed_gives_every_node_the_full_view)
{
    sim_cluster *c = gtt_cluster(1, 12, 90);
    for (int i = 0; i < 12; i++) {
        gossip *g = sim_cluster_node(c, i);
        TT_CHECK(gossip_member_count(g) == 12, "node %d knows %zu members", i, gossip_member_count(g));
        TT_CHECK(i == 0 || gossip_joined(g), "node %d never saw a join answer", i);
    }
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_thousand_nodes_converge)
{
    gossip_config base;
    gtt_config(&base);
    sim_cluster *c = sim_cluster_new(2, &base);
    TT_OK(sim_cluster_add_joined(c, 1000, 0));
    bool ok = sim_world_run_until_cond(sim_cluster_world(c), 120 * SEC, 5 * SEC, gtt_converged, c);
    tt_note("converged=%d at t=%.1f s", ok, (double)sim_world_now(sim_cluster_world(c)) / SEC);
    TT_CHECK(ok, "1000 nodes did not converge within 120 simulated seconds");
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_failed_node_suspected_then_dead_within_predicted_periods)
{
    const size_t n = 10;
    sim_cluster *c = gtt_cluster(3, n, 90);
    sim_world *w = sim_cluster_world(c);
    gossip_config cfg;
    gtt_config(&cfg);
    uint64_t t0 = sim_world_now(w);
    sim_cluster_kill(c, 4);
    gtt_seen s = {c, 4, GOSSIP_SUSPECT};
    /* Round-robin probing reaches every member within n-1 periods of each prober; the first
     * suspicion comes at the end of the first failed probe period. */
    TT_CHECK(sim_world_run_until_cond(w, (n + 1) * SEC, 100000, gtt_any_sees, &s),
             "nobody suspected the failed node within %zu periods", n + 1);
    uint64_t t_suspect = sim_world_now(w);
    /* Suspicion timeout: min = suspicion_mult * max(1, log10 n) * interval = 4 s; max = 6 * min. */
    double min_s = cfg.suspicion_mult * fmax(1.0, log10((double)n)) * 1.0;
    double max_s = cfg.suspicion_max_mult * min_s;
    s.state = GOSSIP_DEAD;
    uint64_t early = (uint64_t)((min_s - 0.5) * SEC);
    TT_CHECK(!sim_world_run_until_cond(w, early, 100000, gtt_any_sees, &s),
             "declared dead after %.1f s of suspicion, before the minimum %.1f s",
             (double)(sim_world_now(w) - t_suspect) / SEC, min_s);
    TT_CHECK(sim_world_run_until_cond(w, (uint64_t)((max_s + 5) * SEC), 100000, gtt_all_see, &s),
             "not dead everywhere within max suspicion %.0f s + 5 s", max_s);
    tt_note("suspected after %.1f s, dead everywhere after %.1f s", (double)(t_suspect - t0) / SEC,
            (double)(sim_world_now(w) - t0) / SEC);
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_suspected_alive_node_refutes_with_higher_incarnation)
{
    sim_cluster *c = gtt_cluster(4, 6, 90);
    sim_world *w = sim_cluster_world(c);
    uint64_t inc0 = gossip_incarnation(sim_cluster_node(c, 2));
    /* Freeze node 2 until someone suspects it, then let it go. */
    sim_world_block(w, 2, true);
    gtt_seen s = {c, 2, GOSSIP_SUSPECT};
    TT_CHECK(sim_world_run_until_cond(w, 10 * SEC, 50000, gtt_any_sees, &s), "node 2 never suspected");
    sim_world_block(w, 2, false);
    s.state = GOSSIP_ALIVE;
    TT_CHECK(sim_world_run_until_cond(w, 10 * SEC, 100000, gtt_all_see, &s), "node 2 not alive again everywhere");
    gossip *g2 = sim_cluster_node(c, 2);
    TT_CHECK(gossip_incarnation(g2) > inc0, "incarnation %llu not above %llu",
             (unsigned long long)gossip_incarnation(g2), (unsigned long long)inc0);
    TT_CHECK(gossip_counters_get(g2)->refutations >= 1, "no refutation counted");
    TT_CHECK(sim_cluster_count_seeing(c, 2, GOSSIP_DEAD) == 0, "someone declared node 2 dead");
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_indirect_probe_saves_node_whose_direct_link_is_cut)
{
    sim_cluster *c = gtt_cluster(5, 6, 90);
    sim_world *w = sim_cluster_world(c);
    sim_world_cut(w, 0, 1, true);
    sim_world_run_for(w, 40 * SEC);
    uint64_t indirect = gossip_counters_get(sim_cluster_node(c, 0))->indirect_probes +
                        gossip_counters_get(sim_cluster_node(c, 1))->indirect_probes;
    TT_CHECK(indirect > 0, "nodes 0 and 1 never probed each other indirectly");
    for (int i = 0; i < 6; i++) {
        const gossip_counters *k = gossip_counters_get(sim_cluster_node(c, i));
        TT_CHECK(k->suspicions == 0, "node %d raised %llu suspicions though every node is reachable",
                 i, (unsigned long long)k->suspicions);
    }
    TT_CHECK(sim_cluster_converged(c), "views diverged");
    sim_cluster_delete(c);
}

/* 20 nodes, loss on every link, one node at 100 %: everyone learns that node is dead. */
static void failure_under_loss(double loss, uint64_t seed)
{
    sim_cluster *c = gtt_cluster(seed, 20, 90);
    sim_world *w = sim_cluster_world(c);
    sim_world_set_loss(w, loss);
    sim_world_set_node_loss(w, 7, 1.0);
    gtt_seen s = {c, 7, GOSSIP_DEAD};
    bool ok = sim_world_run_until_cond(w, 300 * SEC, SEC, gtt_all_see, &s);
    tt_note("loss %.0f%%: dead at %zu of 19 after %.0f s", loss * 100, sim_cluster_count_seeing(c, 7, GOSSIP_DEAD),
            (double)sim_world_now(w) / SEC);
    TT_CHECK(ok, "with %.0f%% loss only %zu of 19 nodes learned node 7 is dead", loss * 100,
             sim_cluster_count_seeing(c, 7, GOSSIP_DEAD));
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_failure_reaches_everyone_at_5_percent_loss) { failure_under_loss(0.05, 61); }
TT_TEST(test_gossip_failure_reaches_everyone_at_10_percent_loss) { failure_under_loss(0.10, 62); }
TT_TEST(test_gossip_failure_reaches_everyone_at_20_percent_loss) { failure_under_loss(0.20, 63); }
TT_TEST(test_gossip_failure_reaches_everyone_at_50_percent_loss) { failure_under_loss(0.50, 64); }

static void death_within_bound(bool change_meta, uint64_t seed)
{
    const size_t n = 100;
    sim_cluster *c = gtt_cluster(seed, n, 120);
    sim_world *w = sim_cluster_world(c);
    uint64_t t0 = sim_world_now(w);
    sim_cluster_kill(c, 37);
    if (change_meta) {
        for (size_t i = 0; i < n; i++) {
            gossip *g = sim_cluster_node(c, (int)i);
            if (!g)
                continue;
            gossip_member_info me;
            TT_CHECK(gossip_member_find(g, sim_cluster_id(c, (int)i), &me), "self");
            gossip_meta m = *me.meta;
            m.capacity += 1u << 20;
            TT_OK(gossip_set_meta(g, &m));
        }
    }
    double bound = 6 * log2((double)n);
    gtt_seen s = {c, 37, GOSSIP_DEAD};
    bool ok = sim_world_run_until_cond(w, (uint64_t)(bound * SEC), 100000, gtt_all_see, &s);
    tt_note("dead at %zu of %zu after %.1f periods (bound %.1f)", sim_cluster_count_seeing(c, 37, GOSSIP_DEAD),
            n - 1, (double)(sim_world_now(w) - t0) / SEC, bound);
    TT_CHECK(ok, "death reached %zu of %zu nodes within 6*log2(N) = %.1f periods",
             sim_cluster_count_seeing(c, 37, GOSSIP_DEAD), n - 1, bound);
    if (change_meta) {
        /* The metadata changes reached everyone too. */
        for (size_t i = 0; i < n; i += 11) {
            gossip_member_info m;
            TT_CHECK(gossip_member_find(sim_cluster_node(c, 0), sim_cluster_id(c, (int)i), &m), "member");
            TT_CHECK(i == 37 || m.meta->capacity == (64ull << 30) + (1u << 20),
                     "node 0 has old metadata of node %zu", i);
        }
    }
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_death_reaches_hundred_nodes_within_6_log2_n_periods) { death_within_bound(false, 7); }

TT_TEST(test_gossip_death_reaches_everyone_in_bound_while_all_change_metadata) { death_within_bound(true, 8); }

TT_TEST(test_gossip_partition_into_halves_then_heal_reconverges)
{
    const int n = 16;
    sim_cluster *c = gtt_cluster(9, (size_t)n, 90);
    sim_world *w = sim_cluster_world(c);
    for (int i = n / 2; i < n; i++)
        sim_world_set_group(w, i, 1);
    gtt_seen s = {c, n - 1, GOSSIP_DEAD};
    gtt_seen s0 = {c, 0, GOSSIP_DEAD};
    TT_CHECK(sim_world_run_until_cond(w, 120 * SEC, SEC, gtt_any_sees, &s), "partition never detected");
    TT_CHECK(sim_world_run_until_cond(w, 120 * SEC, SEC, gtt_any_sees, &s0), "partition never detected");
    sim_world_run_for(w, 60 * SEC); /* long past gossip_to_dead: only the reconnect can heal it */
    TT_CHECK(sim_cluster_count_seeing(c, n - 1, GOSSIP_DEAD) == (size_t)n / 2,
             "the other half should all see node %d dead, %zu do", n - 1,
             sim_cluster_count_seeing(c, n - 1, GOSSIP_DEAD));
    for (int i = n / 2; i < n; i++)
        sim_world_set_group(w, i, 0);
    bool ok = sim_world_run_until_cond(w, 180 * SEC, SEC, gtt_converged, c);
    tt_note("healed views converged=%d after %.0f s", ok, (double)sim_world_now(w) / SEC);
    TT_CHECK(ok, "views did not reconverge within 180 s of the heal");
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_left_member_is_left_not_dead)
{
    sim_cluster *c = gtt_cluster(10, 8, 90);
    sim_world *w = sim_cluster_world(c);
    gossip_leave(sim_cluster_node(c, 3));
    sim_world_run_for(w, 100000);
    sim_cluster_kill(c, 3);
    gtt_seen s = {c, 3, GOSSIP_LEFT};
    TT_CHECK(sim_world_run_until_cond(w, 10 * SEC, 100000, gtt_all_see, &s), "not everyone saw the leave");
    sim_world_run_for(w, 60 * SEC);
    TT_CHECK(sim_cluster_count_seeing(c, 3, GOSSIP_LEFT) == 7, "left turned into something else: %zu left",
             sim_cluster_count_seeing(c, 3, GOSSIP_LEFT));
    for (int i = 0; i < 8; i++)
        if (i != 3)
            TT_CHECK(gossip_counters_get(sim_cluster_node(c, i))->deaths == 0, "node %d declared a death", i);
    sim_cluster_delete(c);
}

/* Node `i` has no member `id` in its view. */
static bool lacks(sim_cluster *c, int i, const char *id)
{
    gossip_member_info info;
    return !gossip_member_find(sim_cluster_node(c, i), id, &info);
}

TT_TEST(test_gossip_forgotten_left_member_is_gone_at_once_and_stays_gone)
{
    sim_cluster *c = gtt_cluster(14, 8, 90);
    sim_world *w = sim_cluster_world(c);
    gossip *g0 = sim_cluster_node(c, 0);
    gossip_leave(sim_cluster_node(c, 3));
    sim_world_run_for(w, 100000);
    sim_cluster_kill(c, 3);
    gtt_seen s = {c, 3, GOSSIP_LEFT};
    TT_CHECK(sim_world_run_until_cond(w, 10 * SEC, 100000, gtt_all_see, &s), "not everyone saw the leave");
    size_t before = gossip_member_count(g0);
    TT_OK(gossip_forget(g0, "n3"));
    TT_CHECK(lacks(c, 0, "n3") && gossip_member_count(g0) == before - 1, "n3 still in node 0's view");
    TT_OK(gossip_self_check(g0));
    /* The others still hold n3 as left and gossip it, push-pull included (several periods). */
    sim_world_run_for(w, 150 * SEC);
    TT_CHECK(lacks(c, 0, "n3"), "gossip brought the forgotten n3 back");
    TT_CHECK(sim_cluster_count_seeing(c, 3, GOSSIP_LEFT) == 6, "the others forgot n3 too: %zu still hold it",
             sim_cluster_count_seeing(c, 3, GOSSIP_LEFT));
    TT_OK(gossip_self_check(g0));
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_forgotten_dead_member_is_not_resurrected_by_push_pull_until_it_restarts)
{
    sim_cluster *c = gtt_cluster(15, 8, 90);
    sim_world *w = sim_cluster_world(c);
    gossip *g0 = sim_cluster_node(c, 0);
    sim_cluster_kill(c, 5);
    gtt_seen s = {c, 5, GOSSIP_DEAD};
    TT_CHECK(sim_world_run_until_cond(w, 60 * SEC, SEC / 2, gtt_all_see, &s), "node 5 not dead everywhere");
    TT_OK(gossip_forget(g0, "n5"));
    /* A push-pull merges a remote dead as a suspicion, which would learn an unknown member as alive. */
    sim_world_run_for(w, 150 * SEC);
    TT_CHECK(lacks(c, 0, "n5"), "push-pull brought the forgotten n5 back");
    TT_CHECK(gossip_counters_get(g0)->push_pulls > 0, "no push-pull ran");
    /* Its next life (a higher incarnation) is a member again. */
    TT_OK(sim_cluster_restart(c, 5, 100, 1));
    s.state = GOSSIP_ALIVE;
    TT_CHECK(sim_world_run_until_cond(w, 30 * SEC, SEC / 2, gtt_all_see, &s), "restarted node 5 not alive everywhere");
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_forget_refuses_live_unknown_and_self)
{
    sim_cluster *c = gtt_cluster(16, 4, 90);
    gossip *g0 = sim_cluster_node(c, 0);
    TT_CHECK(gossip_forget(g0, "n2") < 0 && shoal_error_code() == SHOAL_ERR_INVAL, "forgot a live member");
    TT_CHECK(strstr(shoal_error_message(), "alive") != NULL, "message: %s", shoal_error_message());
    TT_CHECK(gossip_forget(g0, "n0") < 0 && shoal_error_code() == SHOAL_ERR_INVAL, "forgot itself");
    TT_CHECK(gossip_forget(g0, "nobody") < 0 && shoal_error_code() == SHOAL_ERR_NOT_FOUND, "forgot a stranger");
    TT_CHECK(gossip_member_count(g0) == 4, "the view changed: %zu members", gossip_member_count(g0));
    sim_cluster_delete(c);
}

/* Captures sealed packets sent by one node (a fake capture point on the simulated wire). */
typedef struct capture {
    int from;
    int kind; /* update kind to look for, -1: any packet */
    const char *about;
    uint8_t key[GOSSIP_KEY_LEN];
    uint8_t data[SIM_DATAGRAM_MAX];
    size_t len;
} capture;

static void capture_tap(void *ud, int from, const shoal_addr *to, const void *data, size_t len)
{
    capture *cap = ud;
    if (cap->len || (cap->from >= 0 && from != cap->from))
        return;
    if (cap->kind >= 0) {
        static gossip_msg m;
        uint8_t plain[GOSSIP_DATAGRAM_MAX];
        size_t plen;
        if (gossip_open(cap->key, data, len, plain, &plen) < 0 || gossip_msg_decode(plain, plen, &m, NULL) < 0)
            return;
        bool hit = false;
        for (uint32_t j = 0; j < m.n_updates; j++)
            hit |= m.updates[j].kind == cap->kind && strcmp(m.updates[j].meta.id, cap->about) == 0;
        if (!hit)
            return;
    }
    memcpy(cap->data, data, len);
    cap->len = len;
}

TT_TEST(test_gossip_replayed_old_alive_never_resurrects_dead_member)
{
    gossip_config base;
    gtt_config(&base);
    sim_cluster *c = sim_cluster_new(11, &base);
    sim_world *w = sim_cluster_world(c);
    capture cap = {.from = 5, .kind = GOSSIP_ALIVE, .about = "n5"};
    memcpy(cap.key, base.cluster_key, GOSSIP_KEY_LEN);
    sim_world_set_tap(w, capture_tap, &cap);
    TT_OK(sim_cluster_add_joined(c, 8, 0));
    TT_CHECK(sim_world_run_until_cond(w, 90 * SEC, SEC / 2, gtt_converged, c), "converge");
    TT_CHECK(cap.len > 0, "no packet of node 5 carrying its alive was captured");
    sim_world_set_tap(w, NULL, NULL);
    sim_cluster_kill(c, 5);
    gtt_seen s = {c, 5, GOSSIP_DEAD};
    TT_CHECK(sim_world_run_until_cond(w, 60 * SEC, SEC / 2, gtt_all_see, &s), "node 5 not dead everywhere");
    for (int i = 0; i < 8; i++)
        if (i != 5)
            TT_OK(sim_world_inject(w, 5, i, cap.data, cap.len));
    sim_world_run_for(w, 20 * SEC);
    TT_CHECK(sim_cluster_count_seeing(c, 5, GOSSIP_DEAD) == 7, "a replayed alive resurrected node 5 at %zu nodes",
             7 - sim_cluster_count_seeing(c, 5, GOSSIP_DEAD));
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_stale_dead_gossip_never_kills_restarted_member)
{
    sim_cluster *c = gtt_cluster(12, 8, 90);
    sim_world *w = sim_cluster_world(c);
    gossip_config base;
    gtt_config(&base);
    capture cap = {.from = -1, .kind = GOSSIP_DEAD, .about = "n5"};
    memcpy(cap.key, base.cluster_key, GOSSIP_KEY_LEN);
    sim_world_set_tap(w, capture_tap, &cap);
    sim_cluster_kill(c, 5);
    gtt_seen s = {c, 5, GOSSIP_DEAD};
    TT_CHECK(sim_world_run_until_cond(w, 60 * SEC, SEC / 2, gtt_all_see, &s), "node 5 not dead everywhere");
    TT_CHECK(cap.len > 0, "no packet carrying dead(n5) captured");
    sim_world_set_tap(w, NULL, NULL);
    TT_OK(sim_cluster_restart(c, 5, 1, 0));
    s.state = GOSSIP_ALIVE;
    TT_CHECK(sim_world_run_until_cond(w, 30 * SEC, SEC / 2, gtt_all_see, &s), "restarted node 5 not alive everywhere");
    for (int i = 0; i < 8; i++)
        if (i != 5)
            TT_OK(sim_world_inject(w, 0, i, cap.data, cap.len));
    sim_world_run_for(w, 10 * SEC);
    TT_CHECK(gtt_all_see(&s), "stale dead gossip changed node 5: alive at %zu of 7",
             sim_cluster_count_seeing(c, 5, GOSSIP_ALIVE));
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_wrong_cluster_key_cannot_join_and_packets_are_counted)
{
    sim_cluster *c = gtt_cluster(13, 4, 90);
    sim_world *w = sim_cluster_world(c);
    gossip_config bad;
    gtt_config(&bad);
    memset(bad.cluster_key, 0x77, sizeof bad.cluster_key);
    snprintf(bad.self.id, sizeof bad.self.id, "intruder");
    bad.self.addr = shoal_addr_ipv4(0x0b000001u, 7400);
    int x = sim_cluster_add(c, &bad);
    TT_CHECK(x >= 0, "add intruder");
    TT_OK(sim_cluster_join(c, x, 0));
    sim_world_run_for(w, 30 * SEC);
    gossip *g0 = sim_cluster_node(c, 0);
    gossip_member_info m;
    TT_CHECK(!gossip_member_find(g0, "intruder", &m), "the seed admitted a node without the key");
    TT_CHECK(!gossip_joined(sim_cluster_node(c, x)), "the intruder believes it joined");
    TT_CHECK(gossip_counters_get(g0)->seal_failures >= 2, "seed counted %llu seal failures",
             (unsigned long long)gossip_counters_get(g0)->seal_failures);
    TT_CHECK(gossip_member_count(sim_cluster_node(c, x)) == 1, "the intruder learned members");
    sim_cluster_delete(c);
}

/* Log capture: the refusal must be logged on both sides. */
typedef struct logcap {
    int seed_lines, joiner_lines;
} logcap;

static void log_sink(void *ud, shoal_log_level level, const char *line)
{
    logcap *l = ud;
    if (strstr(line, "event=refuse_member") && strstr(line, "node=n0"))
        l->seed_lines++;
    if (strstr(line, "event=refused") && strstr(line, "node=odd"))
        l->joiner_lines++;
}

static void refused_join(gossip_config *joiner, gossip_refusal why, uint64_t seed)
{
    sim_cluster *c = gtt_cluster(seed, 4, 90);
    sim_world *w = sim_cluster_world(c);
    logcap lc = {0};
    shoal_log_set_sink(log_sink, &lc);
    int x = sim_cluster_add(c, joiner);
    TT_CHECK(x >= 0, "add joiner");
    TT_OK(sim_cluster_join(c, x, 0));
    sim_world_run_for(w, 20 * SEC);
    shoal_log_set_sink(NULL, NULL);
    TT_CHECK(gossip_refused(sim_cluster_node(c, x)), "the joiner was not told it is refused (reason %d)", why);
    TT_CHECK(lc.seed_lines >= 1, "no refuse_member log line at the seed");
    TT_CHECK(lc.joiner_lines >= 1, "no refused log line at the joiner");
    TT_CHECK(gossip_counters_get(sim_cluster_node(c, 0))->refused_out >= 1, "seed did not count the refusal");
    for (int i = 0; i < 4; i++)
        TT_CHECK(gossip_live_count(sim_cluster_node(c, i)) == 4, "node %d admitted the refused joiner", i);
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_block_size_mismatch_refused_with_log_line_on_both_sides)
{
    gossip_config j;
    gtt_config(&j);
    snprintf(j.self.id, sizeof j.self.id, "odd");
    j.self.addr = shoal_addr_ipv4(0x0b000002u, 7400);
    j.self.block_size = 8u << 20;
    refused_join(&j, GOSSIP_REFUSE_BLOCK_SIZE, 14);
}

TT_TEST(test_gossip_protocol_version_mismatch_refused)
{
    gossip_config j;
    gtt_config(&j);
    snprintf(j.self.id, sizeof j.self.id, "odd");
    j.self.addr = shoal_addr_ipv4(0x0b000003u, 7400);
    j.self.proto_version = 2;
    refused_join(&j, GOSSIP_REFUSE_PROTO_VERSION, 15);
}

TT_TEST(test_gossip_duplicate_node_id_refused)
{
    sim_cluster *c = gtt_cluster(16, 4, 90);
    sim_world *w = sim_cluster_world(c);
    gossip_config dup;
    gtt_config(&dup);
    snprintf(dup.self.id, sizeof dup.self.id, "n2");
    dup.self.addr = shoal_addr_ipv4(0x0b000004u, 7400);
    int x = sim_cluster_add(c, &dup);
    TT_CHECK(x >= 0, "add duplicate");
    TT_OK(sim_cluster_join(c, x, 0));
    sim_world_run_for(w, 20 * SEC);
    TT_CHECK(gossip_refused(sim_cluster_node(c, x)), "duplicate id not refused");
    gossip_member_info m;
    for (int i = 0; i < 4; i++) {
        TT_CHECK(gossip_member_find(sim_cluster_node(c, i), "n2", &m), "n2 unknown at %d", i);
        TT_CHECK(i == 2 || (m.state == GOSSIP_ALIVE && shoal_addr_eq(&m.meta->addr, sim_world_addr(w, 2))),
                 "node %d now has n2 at another address or not alive", i);
    }
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_lagging_node_raises_its_awareness_and_slows_down)
{
    sim_cluster *c = gtt_cluster(17, 8, 90);
    sim_world *w = sim_cluster_world(c);
    gossip *g = sim_cluster_node(c, 0);
    TT_CHECK(gossip_awareness(g) == 0, "healthy node starts at awareness %u", gossip_awareness(g));
    sim_world_set_node_loss(w, 0, 1.0);
    sim_world_run_for(w, 15 * SEC);
    uint32_t a = gossip_awareness(g);
    TT_CHECK(a >= 3, "a node that hears no acks and no nacks should distrust itself; awareness %u", a);
    uint64_t probes = gossip_counters_get(g)->probes;
    sim_world_run_for(w, 20 * SEC);
    uint64_t slow = gossip_counters_get(g)->probes - probes;
    TT_CHECK(slow < 10, "a lagging node should probe slower than once a second: %llu probes in 20 s",
             (unsigned long long)slow);
    sim_world_set_node_loss(w, 0, 0.0);
    sim_world_run_for(w, 60 * SEC);
    TT_CHECK(gossip_awareness(g) < a, "awareness did not recover: %u", gossip_awareness(g));
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_membership_version_changes_with_live_set_and_metadata)
{
    sim_cluster *c = gtt_cluster(18, 5, 90);
    sim_world *w = sim_cluster_world(c);
    gossip *g0 = sim_cluster_node(c, 0);
    uint64_t v0 = gossip_version(g0);
    sim_world_run_for(w, 10 * SEC);
    TT_CHECK(gossip_version(g0) == v0, "version moved in a quiet cluster: %llu -> %llu",
             (unsigned long long)v0, (unsigned long long)gossip_version(g0));
    gossip *g1 = sim_cluster_node(c, 1);
    gossip_member_info me;
    TT_CHECK(gossip_member_find(g1, "n1", &me), "self");
    gossip_meta m = *me.meta;
    m.serving = false;
    TT_OK(gossip_set_meta(g1, &m));
    sim_world_run_for(w, 5 * SEC);
    uint64_t v1 = gossip_version(g0);
    TT_CHECK(v1 != v0, "metadata change did not move node 0's version");
    TT_CHECK(gossip_member_find(g0, "n1", &me) && !me.meta->serving, "node 0 did not learn the new metadata");
    sim_cluster_kill(c, 4);
    gtt_seen s = {c, 4, GOSSIP_DEAD};
    TT_CHECK(sim_world_run_until_cond(w, 60 * SEC, SEC / 2, gtt_all_see, &s), "death");
    TT_CHECK(gossip_version(g0) != v1, "a death did not move the version");
    sim_cluster_delete(c);
}

typedef struct used_seen {
    sim_cluster *c;
    const char *id;
    uint64_t bytes;
} used_seen;

/* Condition: every running node sees member `id` publish `bytes` of cache use. */
static bool all_see_used(void *ud)
{
    used_seen *u = ud;
    for (size_t i = 0; i < sim_cluster_running(u->c); i++) {
        gossip_member_info m;
        if (!gossip_member_find(sim_cluster_node(u->c, (int)i), u->id, &m) || !m.meta->cache_used_known ||
            m.meta->cache_used != u->bytes)
            return false;
    }
    return true;
}

TT_TEST(test_gossip_published_cache_use_reaches_everyone_without_moving_the_version)
{
    sim_cluster *c = gtt_cluster(20, 12, 90);
    sim_world *w = sim_cluster_world(c);
    gossip *g0 = sim_cluster_node(c, 0);
    uint64_t v0 = gossip_version(g0);
    gossip_member_info m;
    TT_CHECK(gossip_member_find(g0, "n3", &m) && !m.meta->cache_used_known, "an unpublished use is not unknown");
    gossip_set_cache_used(sim_cluster_node(c, 3), 123456789);
    used_seen u = {c, "n3", 123456789};
    /* Dissemination within 6 log2(n) probe periods, the bound the death tests hold it to. */
    TT_CHECK(sim_world_run_until_cond(w, 6 * 4 * SEC, SEC / 10, all_see_used, &u),
             "not every node learned n3's cache use within 24 s");
    TT_CHECK(gossip_version(g0) == v0, "a cache use moved the membership version: %llu -> %llu",
             (unsigned long long)v0, (unsigned long long)gossip_version(g0));
    TT_CHECK(gossip_member_find(sim_cluster_node(c, 3), "n3", &m), "self");
    gossip_meta meta = *m.meta;
    meta.serving = false;
    TT_OK(gossip_set_meta(sim_cluster_node(c, 3), &meta));
    TT_CHECK(gossip_member_find(sim_cluster_node(c, 3), "n3", &m) && m.meta->cache_used == 123456789,
             "a metadata change dropped the published cache use");
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_failed_sends_are_counted_and_survived)
{
    sim_cluster *c = gtt_cluster(19, 5, 90);
    sim_world *w = sim_cluster_world(c);
    sim_world_fail_sends(w, 1, 5); /* injected local send failures */
    sim_world_run_for(w, 20 * SEC);
    TT_CHECK(gossip_counters_get(sim_cluster_node(c, 1))->send_errors == 5, "send errors %llu",
             (unsigned long long)gossip_counters_get(sim_cluster_node(c, 1))->send_errors);
    TT_CHECK(sim_cluster_converged(c), "views diverged after a few failed sends");
    sim_cluster_delete(c);
}

TT_MAIN()
