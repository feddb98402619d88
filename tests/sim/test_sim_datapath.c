/*
 * shoal-sim's data path against what shoald does (node/node_cache.c, docs/store.md): near copies
 * and their share of the cache, HEAD and LIST requests under the metadata TTL, eviction policies,
 * price presets with cross-zone traffic, spot preemption; and the throughput model on cases
 * computed by hand. Library calls on small configurations: each case runs in well under a second.
 */
#include "shoal_error.h"
#include "shoal_log.h"
#include "sim_model.h"
#include "sim_report.h"
#include "tt.h"

#include <math.h>
#include <string.h>

static void tiny(sim_config *c, uint32_t nodes, uint32_t files, uint32_t epochs)
{
    sim_config_defaults(c);
    c->nodes = nodes;
    c->duration_s = 10 + 30.0 * epochs;
    c->wl.files = files;
    c->wl.file_size = (sim_dist){SIM_DIST_FIXED, 1048576, 0};
    c->wl.block_size = 1u << 20;
    c->wl.epochs = epochs;
    c->wl.start_s = 10;
    c->wl.full = true;
    c->wl.cache_bytes = 1ull << 30;
    shoal_log_set_level(SHOAL_LOG_ERROR);
}

static sim_model *run_ok(const sim_config *c)
{
    sim_model *m = sim_model_run(c);
    TT_CHECK(m != NULL, "the model failed: %s", shoal_error_message());
    return m;
}

TT_TEST(test_sim_reader_keeps_near_copies_so_its_second_full_read_stays_local)
{
    /* 4 nodes read all 100 blocks twice. Each block is fetched from S3 once (by its owner, or by a
     * reader that owns it); every reader keeps a near copy of what it got from a peer (100 MiB fit
     * in a 10 % share of 1 GiB), so the second pass is local everywhere: as in a real cluster,
     * where every node held all the blocks after one full read. */
    sim_config c;
    tiny(&c, 4, 100, 2);
    sim_model *m = run_ok(&c);
    const sim_result *r = sim_model_result(m);
    const sim_sys_stats *e1 = &r->epochs[0].sys[SIM_SHOAL], *e2 = &r->epochs[1].sys[SIM_SHOAL];
    TT_CHECK(e1->s3_gets == 100, "epoch 1: %llu GETs for 100 blocks", (unsigned long long)e1->s3_gets);
    TT_CHECK(e2->s3_gets == 0 && e2->peer_hits == 0 && e2->local_hits == 400,
             "epoch 2: %llu GETs, %llu peer hits, %llu local hits of 400 reads", (unsigned long long)e2->s3_gets,
             (unsigned long long)e2->peer_hits, (unsigned long long)e2->local_hits);
    TT_CHECK(e2->near_hits > 250, "only %llu of the local hits were near copies", (unsigned long long)e2->near_hits);
    sim_model_delete(m);
}

TT_TEST(test_sim_near_copies_stay_within_their_share_of_the_cache)
{
    /* With near=0 no copy is kept: the second pass asks the owners again (about 3/4 of the reads);
     * with a share of 5 % of 1 GiB (51 blocks of 1 MiB) a node keeps at most 51 near copies. */
    sim_config c;
    tiny(&c, 4, 100, 2);
    c.wl.near_percent = 0;
    sim_model *m = run_ok(&c);
    const sim_sys_stats *e2 = &sim_model_result(m)->epochs[1].sys[SIM_SHOAL];
    TT_CHECK(e2->near_hits == 0 && e2->peer_hits > 250, "near=0: %llu near hits, %llu peer hits",
             (unsigned long long)e2->near_hits, (unsigned long long)e2->peer_hits);
    sim_model_delete(m);
    c.wl.near_percent = 5;
    m = run_ok(&c);
    e2 = &sim_model_result(m)->epochs[1].sys[SIM_SHOAL];
    TT_CHECK(e2->near_hits <= 4 * 51, "near=5%%: %llu near hits, more than 4 x 51 copies fit",
             (unsigned long long)e2->near_hits);
    TT_CHECK(e2->near_hits > 0, "near=5%%: no near copy was kept");
    sim_model_delete(m);
}

TT_TEST(test_sim_shoal_get_sends_one_head_per_object_for_the_cluster_within_the_ttl)
{
    /* Shoal's metadata is cooperative: an object's metadata owner HEADs it once per TTL (60 s by
     * default) and answers every node, so 4 nodes x 50 objects cost 50 HEADs in the first epoch
     * and none in the second (30 s later); independent caches HEAD once per object and node (200).
     * With a 1 s TTL the owner's answer has expired by the time most other nodes open the object,
     * so the second epoch HEADs again, at least once per object and at most once per open.
     * Reading S3 directly (no cache) sends no HEAD. */
    sim_config c;
    tiny(&c, 4, 50, 2);
    c.access_get = true;
    sim_model *m = run_ok(&c);
    const sim_result *r = sim_model_result(m);
    TT_CHECK(r->epochs[0].sys[SIM_SHOAL].s3_heads == 50 && r->epochs[1].sys[SIM_SHOAL].s3_heads == 0,
             "HEADs per epoch: %llu then %llu", (unsigned long long)r->epochs[0].sys[SIM_SHOAL].s3_heads,
             (unsigned long long)r->epochs[1].sys[SIM_SHOAL].s3_heads);
    TT_CHECK(r->epochs[0].sys[SIM_INDEP].s3_heads == 200, "independent caches: %llu HEADs",
             (unsigned long long)r->epochs[0].sys[SIM_INDEP].s3_heads);
    TT_CHECK(r->epochs[0].sys[SIM_NOCACHE].s3_heads == 0, "no cache sent HEADs");
    TT_CHECK(r->epochs[0].sys[SIM_SHOAL].s3_lists == 0, "shoal get listed");
    sim_model_delete(m);
    c.metadata_ttl_s = 1;
    m = run_ok(&c);
    r = sim_model_result(m);
    uint64_t h = r->epochs[1].sys[SIM_SHOAL].s3_heads;
    TT_CHECK(h > 50 && h <= 200, "TTL 1 s: %llu HEADs in epoch 2 (want more than one per object, at most 200)",
             (unsigned long long)h);
    sim_model_delete(m);
}

TT_TEST(test_sim_mount_lists_once_per_ttl_for_the_cluster_and_sends_no_head_for_listed_names)
{
    /* Through the mount each node's job lists the dataset once (2,500 objects: 3 pages); the
     * listing's owner lists S3 once for the cluster, an independent cache lists per node. The
     * listing's metadata is fresh for the TTL, so the first epoch (10-40 s, TTL 60 s) sends no HEAD. */
    sim_config c;
    tiny(&c, 4, 2500, 2);
    c.wl.file_size = (sim_dist){SIM_DIST_FIXED, 4096, 0};
    sim_model *m = run_ok(&c);
    const sim_result *r = sim_model_result(m);
    TT_CHECK(r->epochs[0].sys[SIM_SHOAL].s3_lists == 3, "Shoal listed %llu pages",
             (unsigned long long)r->epochs[0].sys[SIM_SHOAL].s3_lists);
    TT_CHECK(r->epochs[0].sys[SIM_INDEP].s3_lists == 12, "independent caches listed %llu pages",
             (unsigned long long)r->epochs[0].sys[SIM_INDEP].s3_lists);
    TT_CHECK(r->epochs[0].sys[SIM_SHOAL].s3_heads == 0, "%llu HEADs within the listing's TTL",
             (unsigned long long)r->epochs[0].sys[SIM_SHOAL].s3_heads);
    sim_model_delete(m);
    /* A 20 s TTL: the listing expires at 30 s and 50 s (and perhaps at 70 s, the end). Shoal's
     * mounts revalidate it with one shared listing (3 pages) per TTL and open listed names without
     * a HEAD, as shoald does; the independent caches stat (HEAD) every open after their TTL. */
    c.metadata_ttl_s = 20;
    m = run_ok(&c);
    r = sim_model_result(m);
    uint64_t heads = r->epochs[0].sys[SIM_SHOAL].s3_heads + r->epochs[1].sys[SIM_SHOAL].s3_heads;
    uint64_t lists = r->epochs[0].sys[SIM_SHOAL].s3_lists + r->epochs[1].sys[SIM_SHOAL].s3_lists;
    uint64_t iheads = r->epochs[0].sys[SIM_INDEP].s3_heads + r->epochs[1].sys[SIM_INDEP].s3_heads;
    TT_CHECK(heads == 0, "TTL 20 s: Shoal sent %llu HEADs for listed names", (unsigned long long)heads);
    TT_CHECK(lists >= 9 && lists <= 12, "TTL 20 s: Shoal listed %llu pages, want 3 per TTL", (unsigned long long)lists);
    TT_CHECK(iheads > 4 * 2500 / 3, "TTL 20 s: independent caches sent only %llu HEADs", (unsigned long long)iheads);
    sim_model_delete(m);
}

TT_TEST(test_sim_stand_in_owner_fetches_a_dead_owners_blocks_once_before_the_views_know)
{
    /* 4 nodes read the same 100 objects of two blocks in one order through `shoal get`; one node is
     * killed half way. Until the others' views drop it (several seconds, dozens of reads), a
     * reader meets a silent owner, waits the peer timeout, and then asks the stand-in owner (the
     * member ranked R + 1), which fetches the block and the metadata once for all: the kill costs
     * no S3 request, beyond the one or two reads the dead node had made ahead of the others.
     * Without the stand-in each survivor would fetch the dead owner's blocks itself, 2 extra
     * GETs and HEADs per such object in that window. */
    sim_config c;
    tiny(&c, 4, 100, 1);
    c.wl.file_size = (sim_dist){SIM_DIST_FIXED, 2 << 20, 0};
    c.wl.same_order = true;
    c.access_get = true;
    TT_OK(sim_parse_churn("kill@25", &c.churn));
    sim_model *m = run_ok(&c);
    const sim_result *r = sim_model_result(m);
    const sim_sys_stats *s = &r->epochs[0].sys[SIM_SHOAL];
    tt_note("%llu GETs, %llu HEADs for %llu blocks and 100 objects; %llu reads met the silent owner",
            (unsigned long long)s->s3_gets, (unsigned long long)s->s3_heads,
            (unsigned long long)r->epochs[0].unique_blocks, (unsigned long long)s->fallbacks);
    TT_CHECK(s->fallbacks > 0, "no read met the dead owner before the views dropped it");
    TT_CHECK(s->s3_gets >= 200 && s->s3_gets <= 202, "%llu GETs for 200 blocks", (unsigned long long)s->s3_gets);
    TT_CHECK(s->s3_heads >= 100 && s->s3_heads <= 101, "%llu HEADs for 100 objects", (unsigned long long)s->s3_heads);
    sim_model_delete(m);
}

TT_TEST(test_sim_no_evict_keeps_what_lru_loses_under_shuffled_epochs)
{
    /* One node, a cache of 64 % of the dataset, a new shuffle each epoch: LRU evicts blocks just
     * before they are read again (hit ratio well under the cache's share), no-evict keeps the first
     * 64 % and hits about that share (CoorDL's MinIO policy). */
    sim_config c;
    tiny(&c, 1, 1000, 4);
    c.wl.cache_bytes = 640ull << 20;
    c.wl.near_percent = 0;
    double hr[2];
    for (int pol = 0; pol < 2; pol++) {
        c.eviction = pol ? SIM_POLICY_NO_EVICT : SIM_POLICY_LRU;
        sim_model *m = run_ok(&c);
        const sim_result *r = sim_model_result(m);
        double reads = 0, hits = 0;
        for (size_t e = 1; e < r->n_epochs; e++) {
            reads += (double)r->epochs[e].sys[SIM_INDEP].reads;
            hits += (double)r->epochs[e].sys[SIM_INDEP].local_hits;
        }
        hr[pol] = hits / reads;
        sim_model_delete(m);
    }
    tt_note("warm hit ratio: lru %.3f, no-evict %.3f", hr[0], hr[1]);
    TT_CHECK(fabs(hr[1] - 0.64) < 0.02, "no-evict hit %.3f, not the cache's 0.64", hr[1]);
    TT_CHECK(hr[0] < 0.5, "LRU hit %.3f under shuffles", hr[0]);
}

TT_TEST(test_sim_price_presets_bill_cross_zone_peer_traffic)
{
    /* aws-same-region: no egress, $0.02 per GiB that crosses zones. With 2 zones and R = 1 about
     * half of Shoal's peer bytes cross; Shoal's dollars are its requests plus those bytes. */
    sim_config c;
    tiny(&c, 8, 200, 1);
    c.wl.zones = 2;
    TT_OK(sim_set_prices(&c, "aws-same-region"));
    TT_CHECK(c.egress_price == 0 && c.xzone_price == 0.02, "preset: egress %g, cross-zone %g", c.egress_price,
             c.xzone_price);
    sim_model *m = run_ok(&c);
    const sim_sys_stats *st = &sim_model_result(m)->epochs[0].sys[SIM_SHOAL];
    double frac = (double)st->xzone_bytes / (double)st->peer_bytes;
    double want = (double)(st->s3_gets + st->s3_heads) / 1000 * 0.0004 + (double)st->s3_lists / 1000 * 0.005 +
                  (double)st->xzone_bytes / 1073741824.0 * 0.02;
    TT_CHECK(frac > 0.35 && frac < 0.65, "%.2f of the peer bytes crossed zones", frac);
    TT_CHECK(fabs(sim_dollars(&c, st) - want) < 1e-9, "billed %.6f, expected %.6f", sim_dollars(&c, st), want);
    sim_model_delete(m);
    TT_CHECK(sim_set_prices(&c, "moon") < 0 && shoal_error_code() == SHOAL_ERR_INVAL, "an unknown preset passed");
}

TT_TEST(test_sim_preempted_spot_node_is_replaced_by_a_fresh_empty_one)
{
    /* At 10 preemptions per node-hour over 20 nodes for 100 s, about 5.6 are expected; each adds a
     * node under a new id (nodes_total grows) whose empty cache costs GETs in the next epoch. */
    sim_config c;
    tiny(&c, 20, 400, 3);
    c.wl.full = false;
    TT_OK(sim_parse_churn("preempt-rate=10", &c.churn));
    sim_model *m = run_ok(&c);
    const sim_result *r = sim_model_result(m);
    tt_note("%llu preemptions, %u nodes in all", (unsigned long long)r->preemptions, r->nodes_total);
    TT_CHECK(r->preemptions >= 1, "no preemption");
    TT_CHECK(r->nodes_total == 20 + r->preemptions, "%u nodes for %llu replacements", r->nodes_total,
             (unsigned long long)r->preemptions);
    TT_CHECK(r->epochs[2].sys[SIM_SHOAL].s3_gets > 0, "fresh nodes took over blocks without a GET");
    sim_model_delete(m);
}

TT_TEST(test_sim_epoch_time_matches_a_hand_computed_case)
{
    /*
     * The throughput model on numbers worked by hand. 4 nodes, the job asks 100 s per epoch;
     * NIC 1.25 GB/s (10 Gbit/s); S3: 8 connections of 100 MB/s per node, 5,500 requests/s per prefix.
     *   bytes in per node  100, 50, 50, 50 GB; out (served to peers) 20, 150, 0, 0 GB
     *   S3 bytes per node  80, 10, 10, 10 GB; requests per prefix 400,000 and 600,000
     *   NIC:       max(100, 150) GB / 1.25 GB/s        = 120 s   (node 2 serving its peers)
     *   S3 conns:  80 GB / (8 x 0.1 GB/s)              = 100 s
     *   S3 rate:   600,000 / 5,500                     = 109.09 s
     *   epoch = max(100, 120, 100, 109.09) = 120 s, limited by the NIC; GPUs wait 20 of 120 s: 1/6.
     */
    const double in[] = {100e9, 50e9, 50e9, 50e9}, out[] = {20e9, 150e9, 0, 0}, s3[] = {80e9, 10e9, 10e9, 10e9};
    const double req[] = {400000, 600000};
    sim_pace_input pi = {.pace_s = 100, .nic_bps = 1.25e9, .s3_conn_bps = 100e6, .s3_rate = 5500, .s3_conns = 8,
                         .nodes = 4, .prefixes = 2, .in_bytes = in, .out_bytes = out, .s3_bytes = s3,
                         .prefix_requests = req};
    sim_pace p = sim_pace_compute(&pi);
    TT_CHECK(fabs(p.wall_s - 120) < 1e-9 && p.limit == SIM_LIMIT_NIC, "epoch %.6f s limited by %d", p.wall_s, p.limit);
    TT_CHECK(fabs(p.stall - 1.0 / 6) < 1e-12, "stall %.6f, not 1/6", p.stall);
    TT_CHECK(fabs(p.limit_s[SIM_LIMIT_S3_CONNS] - 100) < 1e-9 && fabs(p.limit_s[SIM_LIMIT_S3_RATE] - 600000.0 / 5500) < 1e-9,
             "S3 times %.6f and %.6f s", p.limit_s[SIM_LIMIT_S3_CONNS], p.limit_s[SIM_LIMIT_S3_RATE]);
    /* Twice the NIC: nothing is slower than the job, which keeps its pace. */
    pi.nic_bps = 2.5e9;
    pi.s3_rate = 11000;
    p = sim_pace_compute(&pi);
    TT_CHECK(p.wall_s == 100 && p.stall == 0 && p.limit == SIM_LIMIT_PACE, "epoch %.3f s, stall %.3f, limit %d",
             p.wall_s, p.stall, p.limit);
}

TT_TEST(test_sim_no_cache_epoch_is_limited_by_the_prefix_rate_as_computed_by_hand)
{
    /*
     * The same model inside a run. One node reads 100 objects of 1 MiB with no cache: 100 GETs in an
     * epoch the job wants in 10 s. S3 passes 5 requests/s on the one prefix: 100 / 5 = 20 s, so the
     * epoch takes 20 s and the GPUs wait half of it. Shoal and the independent cache fetch the same
     * 100 blocks (cold), plus the mount's one LIST page: 101 / 5 = 20.2 s, stall 1 - 10/20.2.
     * The NIC (25 Gbit/s: 100 MiB in 0.03 s) and 16 connections of 100 MB/s (0.07 s) are far below.
     */
    sim_config c;
    tiny(&c, 1, 100, 1);
    c.wl.epoch_s = 10;
    c.s3_rate = 5;
    sim_model *m = run_ok(&c);
    const sim_epoch_stats *e = &sim_model_result(m)->epochs[0];
    const sim_pace *nc = &e->pace[SIM_NOCACHE], *sh = &e->pace[SIM_SHOAL];
    TT_CHECK(fabs(nc->wall_s - 20) < 1e-9 && fabs(nc->stall - 0.5) < 1e-12 && nc->limit == SIM_LIMIT_S3_RATE,
             "no cache: %.6f s, stall %.6f, limit %d", nc->wall_s, nc->stall, nc->limit);
    TT_CHECK(fabs(sh->wall_s - 20.2) < 1e-9 && fabs(sh->stall - (1 - 10 / 20.2)) < 1e-12,
             "Shoal: %.6f s, stall %.6f", sh->wall_s, sh->stall);
    sim_model_delete(m);
}

TT_MAIN()
