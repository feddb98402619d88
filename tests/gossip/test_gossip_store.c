/*
 * Where gossip views live: a cluster whose views share one member store (a base table plus what
 * each view holds apart, folded back when all agree) behaves exactly like the same cluster with
 * every view kept whole and apart, through joins, crashes, restarts, a partition, loss and metadata
 * changes; and a push-pull between equal views exchanges digests only.
 */
#include "gossip_tt.h"

#include <stdlib.h>

typedef struct run {
    sim_cluster *c;
    sim_world *w;
} run;

static run start(sim_views views, size_t n)
{
    gossip_config base;
    gtt_config(&base);
    base.push_pull_interval_us = 5 * SEC; /* many exchanges, so the digest path runs often */
    run r = {sim_cluster_new_views(4242, &base, views), NULL};
    TT_CHECK(r.c != NULL, "cluster");
    r.w = sim_cluster_world(r.c);
    for (size_t i = 0; i < n; i++)
        TT_CHECK(sim_cluster_add(r.c, NULL) == (int)i, "node %zu", i);
    TT_OK(sim_cluster_preload(r.c));
    sim_world_set_loss(r.w, 0.02);
    return r;
}

/* Everything a node's behaviour shows: its view, counters, version, awareness and digest. */
static void same_node(const gossip *a, const gossip *b, int node, double t)
{
    TT_CHECK((a == NULL) == (b == NULL), "node %d at %.0f s: running in one run only", node, t);
    if (!a)
        return;
    TT_OK(gossip_self_check(a));
    TT_OK(gossip_self_check(b));
    TT_CHECK(memcmp(gossip_counters_get(a), gossip_counters_get(b), sizeof(gossip_counters)) == 0,
             "node %d at %.0f s: counters differ", node, t);
    TT_CHECK(gossip_version(a) == gossip_version(b) && gossip_awareness(a) == gossip_awareness(b) &&
                 gossip_incarnation(a) == gossip_incarnation(b),
             "node %d at %.0f s: version, awareness or incarnation differ", node, t);
    TT_CHECK(gossip_state_digest(a) == gossip_state_digest(b), "node %d at %.0f s: digests differ", node, t);
    size_t n = gossip_member_count(a);
    TT_CHECK(n == gossip_member_count(b) && gossip_live_count(a) == gossip_live_count(b),
             "node %d at %.0f s: %zu members against %zu", node, t, n, gossip_member_count(b));
    for (size_t i = 0; i < n; i++) {
        gossip_member_info x, y;
        TT_OK(gossip_member_at(a, i, &x));
        TT_OK(gossip_member_at(b, i, &y));
        TT_CHECK(strcmp(x.meta->id, y.meta->id) == 0 && x.state == y.state && x.incarnation == y.incarnation &&
                     x.state_since_us == y.state_since_us && x.is_self == y.is_self &&
                     x.meta->capacity == y.meta->capacity,
                 "node %d at %.0f s: member %zu is %s/%s inc %llu in one run, %s/%s inc %llu in the other", node,
                 t, i, x.meta->id, gossip_state_name(x.state), (unsigned long long)x.incarnation, y.meta->id,
                 gossip_state_name(y.state), (unsigned long long)y.incarnation);
    }
}

/* One step of the script, applied to both runs alike. */
static void step(run *r, int k, int n)
{
    sim_cluster *c = r->c;
    switch (k) {
    case 2: sim_cluster_kill(c, 3); break;
    case 3: sim_cluster_kill(c, 11); break;
    case 5: TT_OK(sim_cluster_restart(c, 3, 5, 0)); break;
    case 6: TT_CHECK(sim_cluster_add(c, NULL) == n, "joiner"); TT_OK(sim_cluster_join(c, n, 1)); break;
    case 7:
        for (int i = 0; i < n / 2; i++)
            sim_world_set_group(r->w, i, 1);
        break;
    case 9:
        for (int i = 0; i < n / 2; i++)
            sim_world_set_group(r->w, i, 0);
        break;
    case 1: {
        gossip *g = sim_cluster_node(c, 5);
        gossip_member_info me;
        TT_CHECK(gossip_member_find(g, sim_cluster_id(c, 5), &me), "own entry");
        gossip_meta m = *me.meta;
        m.capacity /= 2;
        TT_OK(gossip_set_meta(g, &m));
        break;
    }
    case 11: gossip_leave(sim_cluster_node(c, 7)); break;
    default: break;
    }
}

TT_TEST(test_gossip_shared_member_store_behaves_like_private_views)
{
    const int n = 40;
    run s = start(SIM_VIEWS_SHARED, (size_t)n), p = start(SIM_VIEWS_APART, (size_t)n);
    size_t base = 0, priv = 0;
    sim_cluster_view_stats(s.c, &base, &priv);
    TT_CHECK(base == (size_t)n && priv == 0, "a preloaded shared store holds %zu base and %zu private entries, "
             "expected %d and 0", base, priv, n);
    sim_cluster_view_stats(p.c, &base, &priv);
    TT_CHECK(base == 0 && priv == (size_t)n * n, "private views hold %zu base and %zu private entries", base, priv);
    size_t folded = 0, peak_private = 0;
    for (int k = 0; k < 16; k++) {
        step(&s, k, n);
        step(&p, k, n);
        for (int sec = 0; sec < 15; sec++) {
            sim_world_run_for(s.w, SEC);
            sim_world_run_for(p.w, SEC);
            folded += sim_cluster_fold(s.c);
            TT_CHECK(sim_cluster_fold(p.c) == 0, "private views never fold");
            sim_cluster_view_stats(s.c, &base, &priv);
            peak_private = priv > peak_private ? priv : peak_private;
        }
        double t = (double)sim_world_now(s.w) / SEC;
        for (int i = 0; i < (int)sim_cluster_size(s.c); i++)
            same_node(sim_cluster_node(s.c, i), sim_cluster_node(p.c, i), i, t);
        if (k == 1) {
            /* Node 5's new metadata reached every view alike (a state change keeps each view's own
             * time of the change, so crashes and the partition below stay private). */
            sim_cluster_view_stats(s.c, &base, &priv);
            TT_CHECK(folded > 0 && priv < (size_t)n, "after a metadata change: %zu folded, %zu private entries",
                     folded, priv);
        }
    }
    sim_cluster_view_stats(s.c, &base, &priv);
    tt_note("shared store: %zu entries folded, %zu base and %zu private entries at the end (peak %zu); "
            "private views: %d x %d", folded, base, priv, peak_private, n, n);
    sim_cluster_delete(s.c);
    sim_cluster_delete(p.c);
}

TT_TEST(test_gossip_push_pull_between_equal_views_sends_digests_only)
{
    gossip_config base;
    gtt_config(&base);
    base.push_pull_interval_us = 2 * SEC;
    sim_cluster *c = sim_cluster_new(77, &base);
    TT_CHECK(c != NULL, "cluster");
    for (int i = 0; i < 20; i++)
        TT_CHECK(sim_cluster_add(c, NULL) == i, "node %d", i);
    TT_OK(sim_cluster_preload(c));
    sim_world *w = sim_cluster_world(c);
    sim_world_run_for(w, 30 * SEC);
    uint64_t same = 0, chunks = 0, pulls = 0;
    for (int i = 0; i < 20; i++) {
        const gossip_counters *k = gossip_counters_get(sim_cluster_node(c, i));
        same += k->push_pull_same;
        chunks += k->push_pull_packets;
        pulls += k->push_pulls;
        TT_CHECK(gossip_state_digest(sim_cluster_node(c, i)) == gossip_state_digest(sim_cluster_node(c, 0)),
                 "converged nodes 0 and %d have different digests", i);
    }
    tt_note("converged: %llu push-pulls, %llu answered 'same' (both ends count), %llu state chunks",
            (unsigned long long)pulls, (unsigned long long)same, (unsigned long long)chunks);
    TT_CHECK(pulls > 100 && same == 2 * pulls && chunks == 0,
             "equal views: %llu push-pulls should all end in a digest match (counted at both ends: %llu) "
             "with no state sent (%llu chunks)", (unsigned long long)pulls, (unsigned long long)same,
             (unsigned long long)chunks);
    /* Node 19 stops hearing anything: it is declared dead, and its view differs from the others' until
     * it learns of its death from a full push-pull after it is back, and refutes. */
    sim_world_block(w, 19, true);
    gtt_seen dead = {c, 19, GOSSIP_DEAD};
    TT_CHECK(sim_world_run_until_cond(w, 120 * SEC, SEC, gtt_all_see, &dead), "node 19 never declared dead");
    sim_world_block(w, 19, false);
    chunks = 0;
    TT_CHECK(sim_world_run_until_cond(w, 120 * SEC, SEC, gtt_converged, c), "no reconvergence after the block");
    for (int i = 0; i < 20; i++)
        chunks += gossip_counters_get(sim_cluster_node(c, i))->push_pull_packets;
    TT_CHECK(chunks > 0, "differing views exchanged no state");
    sim_cluster_delete(c);
}

TT_TEST(test_gossip_private_store_forgets_reaped_members_and_reuses_their_slots)
{
    gossip_config base;
    gtt_config(&base);
    base.dead_reap_us = 20 * SEC;
    base.push_pull_interval_us = 3600 * SEC; /* no push-pull brings the reaped member back */
    sim_cluster *c = sim_cluster_new_views(5, &base, SIM_VIEWS_OWN);
    TT_CHECK(c != NULL, "cluster");
    sim_world *w = sim_cluster_world(c);
    for (int i = 0; i < 8; i++)
        TT_CHECK(sim_cluster_add(c, NULL) == i, "node %d", i);
    TT_OK(sim_cluster_preload(c));
    sim_cluster_kill(c, 6);
    sim_world_run_for(w, 200 * SEC);
    for (int i = 0; i < 8; i++) {
        gossip *g = sim_cluster_node(c, i);
        if (!g)
            continue;
        gossip_member_info m;
        TT_CHECK(!gossip_member_find(g, sim_cluster_id(c, 6), &m), "node %d still holds the reaped node 6", i);
        TT_CHECK(gossip_member_count(g) == 7 && gossip_live_count(g) == 7, "node %d holds %zu members", i,
                 gossip_member_count(g));
        TT_OK(gossip_self_check(g));
    }
    /* A newcomer takes a freed slot; the views still converge and stay consistent. */
    TT_CHECK(sim_cluster_add(c, NULL) == 8, "joiner");
    TT_OK(sim_cluster_join(c, 8, 0));
    gtt_seen alive = {c, 8, GOSSIP_ALIVE};
    TT_CHECK(sim_world_run_until_cond(w, 60 * SEC, SEC, gtt_all_see, &alive), "the joiner never reached everyone");
    for (int i = 0; i < 9; i++)
        if (sim_cluster_node(c, i))
            TT_OK(gossip_self_check(sim_cluster_node(c, i)));
    sim_cluster_delete(c);
}

TT_MAIN()
