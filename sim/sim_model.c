/*
 * The cluster model. One sim_cluster holds the N real gossip instances; the model steps virtual
 * time one second at a time and, at each step:
 *
 *   1. applies the churn scheduled inside the second at its exact instant (kill, restart, join,
 *      stall, partition, and their ends), then lets the world run to the end of the second;
 *   2. groups the running nodes by the membership view each one holds. A node's view is tracked
 *      from its own gossip events as a bitset of live members and an additive 64-bit fingerprint
 *      (sum of a hash per live member), checked against gossip_live_count() and rebuilt from
 *      gossip_member_at() when they disagree. Nodes with equal fingerprints hold the same view;
 *   3. for each distinct view that is needed, builds the real dht_view from that view's gossip
 *      member list and computes owners per block lazily (a block's owners are looked up once per
 *      view, not once per read), so placement is exactly what a daemon holding that view computes;
 *   4. takes the reads that arrived in this second (each node's reads jittered within their slots
 *      over the epoch) in arrival order across nodes, so concurrent readers of one block find the
 *      fetch of the first, through the three systems: Shoal, independent caches, no cache. Shoal's
 *      read is shoald's: the node's own store (owned blocks and near copies), the owners in its
 *      view's order (a silent one costs the peer timeout and is skipped for a while), then S3; an
 *      owner that misses hands the block off from the members ranked after it before S3, and with
 *      replicas pushes what it fetched to the other owners; a reader keeps what it got from a peer
 *      or S3 as a near copy. Opening an object needs its metadata: fresh at the node (the
 *      metadata TTL; through the mount, the listing too), else from its metadata owner, which
 *      HEADs it once per TTL for the cluster;
 *   5. records a row of the time series, with the run's cost so far.
 *
 * At each epoch's end the throughput model (sim_pace.c) turns what every node moved into the
 * epoch's wall time and the share of it the GPUs would wait.
 *
 * The S3 model is a fluid queue per prefix and system: up to s3_rate requests (GETs and HEADs) per
 * second pass; a request that finds k seconds of backlog ahead of it waits k seconds and collects k
 * 503 answers (one per retry). Latency = waits + time to first byte (drawn) + size / per-GET
 * throughput.
 *
 * The first probe of a failed node is gossip's own report (gossip_sim.h's typed event for each PING
 * sent), which gives SWIM's "protocol periods to first detection" exactly as the paper counts them.
 */
#include "sim_model.h"
#include "dht.h"
#include "gossip.h"
#include "shoal_array.h"
#include "shoal_error.h"
#include "sim_cluster.h"
#include "sim_lru.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEC 1000000ull
#define VIEW_CACHE_SOFT 16
#define PENALTY_S 3.0         /* an owner that timed out is skipped this long (shoald's CACHE_PENALTY_US) */
#define PENALTY_SLOTS 8
#define LIST_PAGE 1000        /* keys per S3 LIST page */
#define META_MAX 65536        /* object metadata entries one node keeps (shoald's CACHE_META_MAX) */
#define DISK_LATENCY_S 0.0002 /* local cache hit: NVMe read latency */
#define DISK_BPS 2e9          /* and throughput */
#define PART_BYTES (16u << 20) /* checkpoint upload: single PUT up to this, multipart above */
#define MOVE_WORK_MAX 40000000ull /* member evaluations allowed per comparison of two views */
/* Ranks past R that an owner's hand-off asks (shoald's CACHE_HANDOFF_EXTRA). */
#define HANDOFF_EXTRA 2

typedef struct view_entry {
    uint64_t fp;
    dht_view *v;
    /* Each block's first R + 2 ranked members as node indices (its R owners, then the next two,
     * which hand-off asks), blocks * (R + 2), lazily (ranked_get). Indices, not
     * the view's member pointers: half the memory, and a view is built per membership change. */
    uint32_t *ranked;
    uint8_t *n_ranked;
    uint64_t *members; /* bitset of the live members the view was built from */
    uint32_t size;
    uint32_t stamp;    /* last tick that used it */
} view_entry;

typedef struct group {
    uint64_t fp;
    uint32_t rep, count;
    view_entry *ve;
} group;

enum { P_UP, P_DOWN };

/* Object metadata a node holds: file + 1 (0 empty) -> fresh until (open addressing). */
typedef struct meta_table {
    uint32_t *key;
    double *until;
    uint32_t cap, n;
} meta_table;

typedef struct peer {
    struct sim_model *m;
    uint32_t ix, zone, group;
    uint8_t state;
    bool stalled, sampled, reading;
    uint64_t incarnation;
    uint64_t *seen; /* bitset: live members in this node's view */
    uint64_t fp;
    uint32_t live;
    int32_t victim;
    uint64_t suspect_inc, dead_inc; /* incarnation of the last suspicion / death counted (+1) */
    sim_store store; /* Shoal: owned blocks and near copies */
    sim_lru indep;   /* the independent cache */
    uint32_t pen_node[PENALTY_SLOTS]; /* owners this reader skips until pen_until */
    double pen_until[PENALTY_SLOTS];
    meta_table meta;  /* object metadata Shoal's daemon on this node holds */
    meta_table imeta; /* and the independent cache on this node (sampled readers) */
    double listed_until;  /* the mount's listing makes every object's metadata fresh until then */
    double ilisted_until; /* and the independent cache's own listing */
    bool listed;
    /* This epoch's bytes per system, for the throughput model. */
    double in_b[SIM_SYSTEMS], s3_b[SIM_SYSTEMS], out_b;
    double held_until; /* a reader waiting on a silent owner holds the node's later reads until then */
    uint32_t rank;
    uint64_t total, done; /* blocks this epoch, read so far */
    uint32_t file_ord, block_in_file;
    uint64_t perm_key;
} peer;

typedef enum sched_kind {
    S_KILL,
    S_RESTART_ANY,
    S_RESTART_NODE,
    S_JOIN,
    S_STALL,
    S_UNSTALL_NODE,
    S_PARTITION,
    S_HEAL,
    S_PREEMPT, /* a spot node is taken away and a fresh one (new id, empty cache) joins */
} sched_kind;

typedef struct sched_ev {
    double at;
    uint64_t seq;
    sched_kind kind;
    uint32_t count, node;
    double for_s;
} sched_ev;

typedef struct victim_track {
    uint32_t dead_seen;
    bool probe_pending, done;
} victim_track;

struct sim_model {
    sim_config cfg;
    gossip_config base;
    sim_cluster *c;
    sim_world *w;
    uint64_t rng;       /* latencies drawn by the data path */
    uint64_t churn_rng; /* the churn schedule and its targets: independent of the workload */
    uint64_t probe_us;

    peer **peers;
    uint32_t n_peers, cap_peers, words;
    uint32_t up;
    char (*zone_names)[16];

    /* dataset */
    uint32_t blocks, files;
    dht_id *ids;
    uint32_t *bsize, *bfile, *file_first;
    uint64_t *epoch_seen;

    /* views */
    view_entry **views;
    size_t n_views;
    group *groups;
    size_t n_groups;
    view_entry *majority;
    uint32_t tick_no;

    /* S3 backlog per system and prefix, in requests; requests this epoch per system and prefix */
    double *backlog[SIM_SYSTEMS];
    double *prefix_req[SIM_SYSTEMS];
    double list_until; /* the cluster's shared listing (the listing owner's) is fresh until then */

    /* churn */
    sched_ev *sched;
    size_t n_sched, cap_sched;
    uint64_t sched_seq;

    /* epoch in progress */
    int epoch;
    double epoch_len;
    uint32_t ranks, sampled_readers, readers;
    uint64_t epoch_key;
    uint32_t ckpt_no;
    uint64_t ckpt_block;
    double next_ckpt;

    sim_event *events;
    size_t n_events, cap_events;
    struct arrival_ev *arrivals; /* read_slice's reads of one second */
    size_t cap_arrivals;

    sim_tick cur;
    sim_tick *ticks;
    size_t n_ticks;
    sim_epoch_stats *epochs;
    sim_victim *victims;
    victim_track *vtrack;
    size_t n_victims, cap_victims, cap_vtrack, pending_probes;
    uint64_t last_sent;
    sim_result res;
};

/* ---- small helpers ---- */

static double unit(uint64_t *rng) { return (double)(sim_splitmix64(rng) >> 11) * 0x1.0p-53; }

static uint64_t member_hash(uint32_t ix)
{
    uint64_t s = 0x51afd7ed558ccd00ull ^ ix;
    return sim_splitmix64(&s);
}

static bool bit_get(const uint64_t *b, uint32_t i) { return b[i >> 6] >> (i & 63) & 1; }
static void bit_set(uint64_t *b, uint32_t i) { b[i >> 6] |= 1ull << (i & 63); }
static void bit_clear(uint64_t *b, uint32_t i) { b[i >> 6] &= ~(1ull << (i & 63)); }

/* Node ids are "n<index>"; anything else is not one of ours. */
static uint32_t id_index(const char *id)
{
    if (id[0] != 'n' || !id[1])
        return UINT32_MAX;
    uint64_t v = 0;
    for (const char *p = id + 1; *p; p++) {
        if (*p < '0' || *p > '9' || v > UINT32_MAX / 10)
            return UINT32_MAX;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    return v < UINT32_MAX ? (uint32_t)v : UINT32_MAX;
}

static shoal_addr node_addr(uint32_t ix) { return shoal_addr_ipv4(0x0a000000u + ix + 1, 7400); }

static uint32_t addr_index(const sim_model *m, const shoal_addr *a)
{
    if (a->family != 4)
        return UINT32_MAX;
    uint32_t v = (uint32_t)a->ip[0] << 24 | (uint32_t)a->ip[1] << 16 | (uint32_t)a->ip[2] << 8 | a->ip[3];
    uint32_t ix = v - 0x0a000001u;
    return ix < m->n_peers ? ix : UINT32_MAX;
}

static double now_s(const sim_model *m) { return (double)sim_world_now(m->w) / SEC; }

/* A pseudo-random permutation of [0, n): a 4-round Feistel network on the smallest even number of
 * bits covering n, cycle-walking back into range. No memory, any n, a fresh order per key. */
static uint32_t permute(uint64_t key, uint32_t x, uint32_t n)
{
    uint32_t bits = 2;
    while ((1ull << bits) < n)
        bits += 2;
    uint32_t half = bits / 2, mask = (1u << half) - 1;
    do {
        uint32_t l = x >> half, r = x & mask;
        for (uint64_t round = 0; round < 4; round++) {
            uint64_t s = key ^ round << 40 ^ r;
            uint32_t f = (uint32_t)sim_splitmix64(&s) & mask;
            uint32_t nl = r;
            r = l ^ f;
            l = nl;
        }
        x = l << half | r;
    } while (x >= n);
    return x;
}

/* ---- gossip events: each node's view ---- */

static void view_set(peer *p, uint32_t who, bool live)
{
    if (bit_get(p->seen, who) == live)
        return;
    if (live) {
        bit_set(p->seen, who);
        p->fp += member_hash(who);
        p->live++;
    } else {
        bit_clear(p->seen, who);
        p->fp -= member_hash(who);
        p->live--;
    }
}

static void view_reset_self(peer *p)
{
    memset(p->seen, 0, (size_t)p->m->words * sizeof *p->seen);
    p->fp = 0;
    p->live = 0;
    view_set(p, p->ix, true);
}

static void view_rebuild(peer *p, gossip *g)
{
    view_reset_self(p);
    size_t n = gossip_member_count(g);
    for (size_t i = 0; i < n; i++) {
        gossip_member_info mi;
        if (gossip_member_at(g, i, &mi) < 0)
            continue;
        uint32_t who = id_index(mi.meta->id);
        if (who < p->m->n_peers)
            view_set(p, who, mi.state == GOSSIP_ALIVE || mi.state == GOSSIP_SUSPECT);
    }
}

static void victim_check_all(sim_model *m, size_t v)
{
    if (m->vtrack[v].done || m->vtrack[v].dead_seen < m->up)
        return;
    m->vtrack[v].done = true;
    m->victims[v].all_dead = now_s(m);
}

static void on_event(void *ud, gossip_event ev, const gossip_member_info *mi)
{
    peer *p = ud;
    sim_model *m = p->m;
    if (mi->is_self || ev == GOSSIP_EV_REFUSED)
        return;
    uint32_t who = id_index(mi->meta->id);
    if (who >= m->n_peers)
        return;
    bool was = bit_get(p->seen, who);
    view_set(p, who, mi->state == GOSSIP_ALIVE || mi->state == GOSSIP_SUSPECT);
    peer *q = m->peers[who];
    bool healthy = q->state == P_UP && !q->stalled;
    /* Suspicions and deaths are counted once per declaration (member and incarnation), at the
     * first node that learns it, and are false when the member is healthy at that instant. */
    if (ev == GOSSIP_EV_SUSPECT && q->suspect_inc != mi->incarnation + 1) {
        q->suspect_inc = mi->incarnation + 1;
        m->cur.suspicions++;
        if (healthy)
            m->cur.false_suspicions++;
    }
    if (ev == GOSSIP_EV_DEAD && q->dead_inc != mi->incarnation + 1) {
        q->dead_inc = mi->incarnation + 1;
        if (healthy)
            m->cur.false_deaths++;
    }
    if (ev == GOSSIP_EV_SUSPECT) {
        if (q->victim >= 0 && m->victims[q->victim].first_suspect < 0)
            m->victims[q->victim].first_suspect = now_s(m);
    } else if (ev == GOSSIP_EV_DEAD) {
        if (q->victim >= 0 && was) {
            sim_victim *v = &m->victims[q->victim];
            if (v->first_dead < 0) {
                v->first_dead = now_s(m);
                m->cur.detections++;
            }
            m->vtrack[q->victim].dead_seen++;
            victim_check_all(m, (size_t)q->victim);
        }
    }
}

/* Gossip's own report of a PING sent: the first one addressed to a killed node is its first probe. */
static void on_gossip_event(void *ud, const gossip_sim_event *ev)
{
    sim_model *m = ud;
    if (!m->pending_probes || ev->kind != GOSSIP_SIM_PING_SENT)
        return;
    uint32_t ix = addr_index(m, ev->to);
    if (ix == UINT32_MAX || m->peers[ix]->victim < 0)
        return;
    size_t v = (size_t)m->peers[ix]->victim;
    if (!m->vtrack[v].probe_pending)
        return;
    sim_victim *vi = &m->victims[v];
    vi->first_probe = now_s(m);
    double periods = (vi->first_probe - vi->killed) / ((double)m->probe_us / SEC);
    vi->probe_periods = (uint32_t)ceil(periods - 1e-9);
    if (vi->probe_periods == 0)
        vi->probe_periods = 1;
    m->vtrack[v].probe_pending = false;
    m->pending_probes--;
}

/* ---- nodes ---- */

static int peer_add(sim_model *m)
{
    uint32_t ix = m->n_peers;
    if (ix == m->cap_peers)
        return shoal_error_set(SHOAL_ERR_SIM, "sim: more nodes than planned (%u)", m->cap_peers);
    peer *p = calloc(1, sizeof *p);
    if (!p)
        return shoal_error_set(SHOAL_ERR_NOMEM, "sim: node %u", ix);
    p->seen = calloc(m->words, sizeof *p->seen);
    if (!p->seen) {
        free(p);
        return shoal_error_set(SHOAL_ERR_NOMEM, "sim: view bitset of node %u", ix);
    }
    p->m = m;
    p->ix = ix;
    p->zone = ix % m->cfg.wl.zones;
    p->victim = -1;
    p->incarnation = 1;
    p->sampled = !m->cfg.baseline_sample || ix < m->cfg.baseline_sample;
    sim_store_create(&p->store, m->cfg.wl.cache_bytes, m->cfg.wl.near_percent, m->cfg.eviction);
    sim_lru_create(&p->indep, m->cfg.wl.cache_bytes);
    p->indep.no_evict = m->cfg.eviction == SIM_POLICY_NO_EVICT;
    m->peers[m->n_peers++] = p;
    view_reset_self(p);

    gossip_config cfg = m->base;
    snprintf(cfg.self.id, sizeof cfg.self.id, "n%u", ix);
    snprintf(cfg.self.zone, sizeof cfg.self.zone, "%s", m->zone_names[p->zone]);
    cfg.self.addr = node_addr(ix);
    cfg.incarnation = p->incarnation;
    cfg.event_ud = p;
    int got = sim_cluster_add(m->c, &cfg);
    if (got < 0)
        return shoal_error_wrap("sim: starting node %u", ix);
    if ((uint32_t)got != ix)
        return shoal_error_set(SHOAL_ERR_SIM, "sim: node %u got cluster slot %d", ix, got);
    p->state = P_UP;
    m->up++;
    return 0;
}

/* The lowest-numbered running node: the seed a joiner or a restarted node contacts. */
static int seed_node(const sim_model *m, uint32_t except)
{
    for (uint32_t i = 0; i < m->n_peers; i++)
        if (i != except && m->peers[i]->state == P_UP)
            return (int)i;
    return -1;
}

static uint32_t pick(sim_model *m, bool (*ok)(const peer *))
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < m->n_peers; i++)
        n += ok(m->peers[i]);
    if (!n)
        return UINT32_MAX;
    uint32_t k = (uint32_t)(sim_splitmix64(&m->churn_rng) % n);
    for (uint32_t i = 0; i < m->n_peers; i++)
        if (ok(m->peers[i]) && k-- == 0)
            return i;
    return UINT32_MAX;
}

static bool is_killable(const peer *p) { return p->state == P_UP && !p->stalled; }
static bool is_down(const peer *p) { return p->state == P_DOWN; }

static int sched_push(sim_model *m, sched_ev e)
{
    if (SHOAL_ARRAY_GROW(m->sched, m->n_sched, m->cap_sched) < 0)
        return shoal_error_wrap("sim: churn schedule of %zu", m->n_sched + 1);
    e.seq = m->sched_seq++;
    size_t i = m->n_sched++;
    while (i > 0 && (m->sched[i - 1].at > e.at || (m->sched[i - 1].at == e.at && m->sched[i - 1].seq > e.seq))) {
        m->sched[i] = m->sched[i - 1];
        i--;
    }
    m->sched[i] = e;
    return 0;
}

static int victim_new(sim_model *m, uint32_t ix)
{
    if (SHOAL_ARRAY_GROW(m->victims, m->n_victims, m->cap_victims) < 0 ||
        SHOAL_ARRAY_GROW(m->vtrack, m->n_victims, m->cap_vtrack) < 0)
        return shoal_error_wrap("sim: victims");
    m->victims[m->n_victims] = (sim_victim){.node = ix, .killed = now_s(m), .first_probe = -1,
                                            .first_suspect = -1, .first_dead = -1, .all_dead = -1};
    m->vtrack[m->n_victims] = (victim_track){.probe_pending = true};
    m->peers[ix]->victim = (int32_t)m->n_victims++;
    m->pending_probes++;
    return 0;
}

static int event_log(sim_model *m, const sched_ev *e)
{
    static const char *const names[] = {[S_KILL] = "kill",   [S_RESTART_ANY] = "restart", [S_JOIN] = "join",
                                        [S_STALL] = "stall", [S_PARTITION] = "partition", [S_PREEMPT] = "preempt"};
    if (e->kind >= sizeof names / sizeof names[0] || !names[e->kind])
        return 0; /* the ends of stalls and partitions, and the restarts restart-after schedules */
    if (SHOAL_ARRAY_GROW(m->events, m->n_events, m->cap_events) < 0)
        return shoal_error_wrap("sim: event log");
    m->events[m->n_events++] = (sim_event){.at = e->at, .what = names[e->kind], .count = e->count ? e->count : 1};
    return 0;
}

static int apply(sim_model *m, const sched_ev *e)
{
    if (event_log(m, e) < 0)
        return -1;
    switch (e->kind) {
    case S_KILL:
        for (uint32_t k = 0; k < e->count; k++) {
            uint32_t ix = pick(m, is_killable);
            if (ix == UINT32_MAX || m->up <= 1)
                break;
            sim_cluster_kill(m->c, (int)ix);
            m->peers[ix]->state = P_DOWN;
            m->up--;
            if (victim_new(m, ix) < 0)
                return -1;
            if (m->cfg.churn.restart_after > 0 &&
                sched_push(m, (sched_ev){.at = now_s(m) + m->cfg.churn.restart_after, .kind = S_RESTART_NODE,
                                         .node = ix}) < 0)
                return -1;
        }
        return 0;
    case S_RESTART_ANY:
    case S_RESTART_NODE:
        for (uint32_t k = 0; k < (e->kind == S_RESTART_ANY ? e->count : 1); k++) {
            uint32_t ix = e->kind == S_RESTART_ANY ? pick(m, is_down) : e->node;
            if (ix == UINT32_MAX || m->peers[ix]->state != P_DOWN)
                break;
            peer *p = m->peers[ix];
            int seed = seed_node(m, ix);
            if (seed < 0)
                break;
            if (p->victim >= 0 && m->vtrack[p->victim].probe_pending) {
                m->vtrack[p->victim].probe_pending = false;
                m->pending_probes--;
            }
            p->victim = -1;
            p->incarnation++;
            view_reset_self(p);
            /* The store is on disk and survives; the metadata tables were in memory. */
            free(p->meta.key);
            free(p->meta.until);
            free(p->imeta.key);
            free(p->imeta.until);
            p->meta = p->imeta = (meta_table){0};
            if (sim_cluster_restart(m->c, (int)ix, p->incarnation, seed) < 0)
                return shoal_error_wrap("sim: restarting node %u", ix);
            p->state = P_UP;
            m->up++;
        }
        return 0;
    case S_JOIN:
        for (uint32_t k = 0; k < e->count; k++) {
            int seed = seed_node(m, UINT32_MAX);
            if (peer_add(m) < 0)
                return -1;
            if (seed >= 0 && sim_cluster_join(m->c, (int)m->n_peers - 1, seed) < 0)
                return shoal_error_wrap("sim: node %u joining", m->n_peers - 1);
        }
        return 0;
    case S_PREEMPT: {
        uint32_t ix = pick(m, is_killable);
        if (ix == UINT32_MAX || m->up <= 1)
            return 0;
        sim_cluster_kill(m->c, (int)ix);
        m->peers[ix]->state = P_DOWN;
        m->up--;
        if (victim_new(m, ix) < 0)
            return -1;
        int seed = seed_node(m, UINT32_MAX);
        if (peer_add(m) < 0)
            return -1;
        if (seed >= 0 && sim_cluster_join(m->c, (int)m->n_peers - 1, seed) < 0)
            return shoal_error_wrap("sim: replacement node %u joining", m->n_peers - 1);
        m->res.preemptions++;
        return 0;
    }
    case S_STALL:
        for (uint32_t k = 0; k < e->count; k++) {
            uint32_t ix = pick(m, is_killable);
            if (ix == UINT32_MAX)
                break;
            m->peers[ix]->stalled = true;
            sim_world_block(m->w, (int)ix, true);
            if (sched_push(m, (sched_ev){.at = now_s(m) + e->for_s, .kind = S_UNSTALL_NODE, .node = ix}) < 0)
                return -1;
        }
        return 0;
    case S_UNSTALL_NODE:
        m->peers[e->node]->stalled = false;
        sim_world_block(m->w, (int)e->node, false);
        return 0;
    case S_PARTITION:
        for (uint32_t i = 0; i < m->n_peers; i++)
            sim_world_set_group(m->w, (int)i, i < m->n_peers / 2 ? 1 : 0);
        return sched_push(m, (sched_ev){.at = now_s(m) + e->for_s, .kind = S_HEAL});
    case S_HEAL:
        for (uint32_t i = 0; i < m->n_peers; i++)
            sim_world_set_group(m->w, (int)i, 0);
        return 0;
    }
    return 0;
}

/* Turns the churn spec into a schedule: the timed events as given, the rates as Poisson arrivals
 * drawn now from the seed. Returns the number of joins it planned. */
static int plan_churn(sim_model *m, uint32_t *joins)
{
    const sim_churn *c = &m->cfg.churn;
    static const sched_kind kinds[] = {
        [SIM_CHURN_KILL] = S_KILL, [SIM_CHURN_RESTART] = S_RESTART_ANY, [SIM_CHURN_JOIN] = S_JOIN,
        [SIM_CHURN_STALL] = S_STALL, [SIM_CHURN_PARTITION] = S_PARTITION,
    };
    *joins = 0;
    for (size_t i = 0; i < c->n; i++) {
        const sim_churn_event *e = &c->ev[i];
        if (sched_push(m, (sched_ev){.at = e->at, .kind = kinds[e->kind], .count = e->count, .for_s = e->for_s}) < 0)
            return -1;
        if (e->kind == SIM_CHURN_JOIN)
            *joins += e->count;
    }
    struct {
        double per_s;
        sched_kind kind;
    } rates[] = {
        {c->kill_rate * m->cfg.nodes / 3600.0, S_KILL},
        {c->join_rate / 3600.0, S_JOIN},
        {c->stall_rate * m->cfg.nodes / 3600.0, S_STALL},
        {c->preempt_rate * m->cfg.nodes / 3600.0, S_PREEMPT},
    };
    for (size_t r = 0; r < sizeof rates / sizeof rates[0]; r++) {
        if (rates[r].per_s <= 0)
            continue;
        for (double t = c->from_s;;) {
            t += -log(1 - unit(&m->churn_rng)) / rates[r].per_s;
            if (t >= m->cfg.duration_s)
                break;
            if (sched_push(m, (sched_ev){.at = t, .kind = rates[r].kind, .count = 1, .for_s = c->stall_s}) < 0)
                return -1;
            if (rates[r].kind == S_JOIN || rates[r].kind == S_PREEMPT)
                (*joins)++;
        }
    }
    return 0;
}

/* ---- dataset ---- */

/* Object sizes from a file, one decimal byte count per line (a real dataset's listing). */
static int sizes_read(const char *path, uint64_t **out, uint32_t *n)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return shoal_error_errno(errno, "sim: workload sizes=%s", path);
    uint64_t *v = NULL;
    size_t cap = 0, k = 0;
    unsigned long long x;
    int rc = 0;
    while ((rc = fscanf(f, "%llu", &x)) == 1) {
        if (SHOAL_ARRAY_GROW(v, k, cap) < 0) {
            free(v);
            fclose(f);
            return shoal_error_wrap("sim: sizes of %s", path);
        }
        v[k++] = x;
    }
    fclose(f);
    if (rc != EOF || k == 0 || k > 100000000) {
        free(v);
        return shoal_error_set(SHOAL_ERR_INVAL, "sim: %s is not a list of 1 to 100,000,000 object sizes", path);
    }
    *out = v;
    *n = (uint32_t)k;
    return 0;
}

static int dataset_build(sim_model *m)
{
    const sim_workload *wl = &m->cfg.wl;
    uint64_t rng = m->cfg.seed ^ 0xda7a5e7ull;
    uint64_t *sizes = NULL;
    if (wl->sizes_path[0]) {
        if (sizes_read(wl->sizes_path, &sizes, &m->files) < 0)
            return -1;
    } else {
        m->files = wl->files;
        sizes = malloc((size_t)m->files * sizeof *sizes);
    }
    m->file_first = malloc(((size_t)m->files + 1) * sizeof *m->file_first);
    if (!m->file_first || !sizes) {
        free(sizes);
        return shoal_error_set(SHOAL_ERR_NOMEM, "sim: dataset of %u files", m->files);
    }
    uint64_t blocks = 0;
    for (uint32_t f = 0; f < m->files; f++) {
        if (!wl->sizes_path[0]) {
            double s = sim_dist_sample(&wl->file_size, &rng);
            sizes[f] = s < 1 ? 1 : (uint64_t)s;
        }
        if (!sizes[f])
            sizes[f] = 1; /* an empty object still costs one request */
        m->file_first[f] = (uint32_t)blocks;
        blocks += (sizes[f] + wl->block_size - 1) / wl->block_size;
        if (blocks > 200000000ull) {
            free(sizes);
            return shoal_error_set(SHOAL_ERR_INVAL, "sim: the dataset has more than 200,000,000 blocks");
        }
    }
    m->file_first[m->files] = (uint32_t)blocks;
    m->blocks = (uint32_t)blocks;
    m->ids = malloc(blocks * sizeof *m->ids);
    m->bsize = malloc(blocks * sizeof *m->bsize);
    m->bfile = malloc(blocks * sizeof *m->bfile);
    m->epoch_seen = calloc((blocks + 63) / 64, sizeof *m->epoch_seen);
    if (!m->ids || !m->bsize || !m->bfile || !m->epoch_seen) {
        free(sizes);
        return shoal_error_set(SHOAL_ERR_NOMEM, "sim: dataset of %llu blocks", (unsigned long long)blocks);
    }
    for (uint32_t f = 0; f < m->files; f++) {
        char key[32];
        snprintf(key, sizeof key, "data/%08u", f);
        for (uint32_t b = m->file_first[f]; b < m->file_first[f + 1]; b++) {
            uint64_t idx = b - m->file_first[f];
            m->ids[b] = dht_block_id("dataset", key, "\"etag\"", idx);
            uint64_t rest = sizes[f] - idx * wl->block_size;
            m->bsize[b] = rest < wl->block_size ? (uint32_t)rest : wl->block_size;
            m->bfile[b] = f;
            m->res.dataset_bytes += m->bsize[b];
        }
    }
    free(sizes);
    m->res.blocks = blocks;
    m->res.files = m->files;
    return 0;
}

/* ---- views and owners ---- */

/* How many ranked members a view keeps per block: R + HANDOFF_EXTRA, as many as a lookup gives. */
static uint32_t ranked_len(const sim_model *m)
{
    uint32_t r = m->cfg.wl.replicas + HANDOFF_EXTRA;
    return r < DHT_REPLICAS_MAX ? r : DHT_REPLICAS_MAX;
}

static void view_free(view_entry *e)
{
    if (!e)
        return;
    dht_view_delete(e->v);
    free(e->ranked);
    free(e->n_ranked);
    free(e->members);
    free(e);
}

/* The dht view of node `rep`'s current gossip view: every live (alive or suspect) member. */
static view_entry *view_build(sim_model *m, uint64_t fp, uint32_t rep)
{
    gossip *g = sim_cluster_node(m->c, (int)rep);
    size_t n = gossip_member_count(g);
    dht_member *dm = calloc(n ? n : 1, sizeof *dm);
    view_entry *e = calloc(1, sizeof *e);
    if (!dm || !e)
        goto fail;
    e->members = calloc(m->words, sizeof *e->members);
    e->ranked = calloc((size_t)m->blocks * ranked_len(m), sizeof *e->ranked);
    e->n_ranked = calloc(m->blocks ? m->blocks : 1, 1);
    if (!e->members || !e->ranked || !e->n_ranked)
        goto fail;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        gossip_member_info mi;
        if (gossip_member_at(g, i, &mi) < 0 || !(mi.state == GOSSIP_ALIVE || mi.state == GOSSIP_SUSPECT))
            continue;
        uint32_t who = id_index(mi.meta->id);
        if (who >= m->n_peers)
            continue;
        bit_set(e->members, who);
        dm[k++] = (dht_member){.node_id = mi.meta->id, .zone = mi.meta->zone, .capacity = mi.meta->capacity,
                               .serving = mi.meta->serving, .alive = true, .user = (void *)(uintptr_t)(who + 1)};
    }
    e->v = dht_view_new(dm, k, fp);
    if (!e->v)
        goto fail;
    e->fp = fp;
    e->size = (uint32_t)k;
    free(dm);
    m->res.views_built++;
    return e;
fail:
    free(dm);
    view_free(e);
    if (shoal_error_code() == SHOAL_OK)
        shoal_error_set(SHOAL_ERR_NOMEM, "sim: placement view of %zu members", n);
    return NULL;
}

static view_entry *view_get(sim_model *m, uint64_t fp, uint32_t rep)
{
    for (size_t i = 0; i < m->n_views; i++) {
        if (m->views[i]->fp == fp) {
            m->views[i]->stamp = m->tick_no;
            return m->views[i];
        }
    }
    /* Evict the least recently used entry not in use this tick, beyond the soft limit. */
    if (m->n_views >= VIEW_CACHE_SOFT) {
        size_t victim = SIZE_MAX;
        for (size_t i = 0; i < m->n_views; i++) {
            view_entry *e = m->views[i];
            if (e == m->majority || e->stamp == m->tick_no)
                continue;
            if (victim == SIZE_MAX || e->stamp < m->views[victim]->stamp)
                victim = i;
        }
        if (victim != SIZE_MAX) {
            view_free(m->views[victim]);
            m->views[victim] = m->views[--m->n_views];
        }
    }
    view_entry **vv = realloc(m->views, (m->n_views + 1) * sizeof *vv);
    if (!vv) {
        shoal_error_set(SHOAL_ERR_NOMEM, "sim: view cache");
        return NULL;
    }
    m->views = vv;
    view_entry *e = view_build(m, fp, rep);
    if (!e)
        return NULL;
    e->stamp = m->tick_no;
    m->views[m->n_views++] = e;
    return e;
}

static uint32_t owner_ix(const dht_member *d) { return (uint32_t)((uintptr_t)d->user - 1); }

#define RANKED_FULL 0x80 /* n_ranked[b]: the R + HANDOFF_EXTRA ranks are in (else only the R owners) */
#define RANKED_NONE 0xff /* n_ranked[b]: the view has no member */

/* Block b's ranked members in view e (node indices, best first): its R owners, or with `full` its
 * first R + HANDOFF_EXTRA ranks, computed once per view and block, the extra ranks only when
 * asked (a lookup of R + 2 costs a third more than one of R, and most reads need only the
 * owners). dht_owners' first R of R + 2 are its R owners (the first owner never depends on r,
 * and each zone's best comes before the fill), so the longer lookup replaces the shorter. Returns
 * how many (0: the view has no member). */
static int ranked_get(sim_model *m, view_entry *e, uint32_t b, bool full, const uint32_t **out)
{
    uint32_t *o = &e->ranked[(size_t)b * ranked_len(m)];
    uint8_t *n = &e->n_ranked[b];
    if (*n == 0 || (full && !(*n & RANKED_FULL))) {
        uint32_t r = full ? ranked_len(m) : m->cfg.wl.replicas;
        const dht_member *d[DHT_REPLICAS_MAX];
        int k = dht_owners(e->v, m->ids[b], (int)r, d);
        m->res.owner_lookups++;
        for (int i = 0; i < k; i++)
            o[i] = owner_ix(d[i]);
        /* Fewer members than asked for: that is every rank there is. */
        *n = k < 0 ? RANKED_NONE : (uint8_t)k | (full || (uint32_t)k < r ? RANKED_FULL : 0);
    }
    *out = o;
    return *n == RANKED_NONE ? 0 : *n & ~RANKED_FULL;
}

/* Owners of block b in view e (node indices, in rank order). */
static int owners_of(sim_model *m, view_entry *e, uint32_t b, const uint32_t **out)
{
    int k = ranked_get(m, e, b, false, out);
    return k < (int)m->cfg.wl.replicas ? k : (int)m->cfg.wl.replicas;
}

/* Reorders owners[0..n) for reading from node p: those in p's zone first, each group keeping its
 * order (dht_prefer_zone on node indices). */
static void prefer_zone(const sim_model *m, const peer *p, uint32_t *owners, int n)
{
    int front = 0;
    for (int i = 0; i < n; i++) {
        if (m->peers[owners[i]]->zone != p->zone)
            continue;
        uint32_t o = owners[i];
        memmove(&owners[front + 1], &owners[front], (size_t)(i - front) * sizeof *owners);
        owners[front++] = o;
    }
}

static int cmp_group(const void *a, const void *b)
{
    const group *x = a, *y = b;
    if (x->fp != y->fp)
        return x->fp < y->fp ? -1 : 1;
    return x->rep < y->rep ? -1 : x->rep > y->rep;
}

/* Groups running nodes by view; picks the view most nodes hold. */
static int group_nodes(sim_model *m)
{
    group *g = realloc(m->groups, (m->n_peers ? m->n_peers : 1) * sizeof *g);
    if (!g)
        return shoal_error_set(SHOAL_ERR_NOMEM, "sim: view groups");
    m->groups = g;
    size_t n = 0;
    /* Nodes whose gossip states have one digest hold one view: the first rebuilt serves the rest
     * (after a preload every node needs a rebuild, and N walks of N members cost N^2). */
    const peer *last = NULL;
    uint64_t last_digest = 0;
    for (uint32_t i = 0; i < m->n_peers; i++) {
        peer *p = m->peers[i];
        if (p->state != P_UP)
            continue;
        gossip *gi = sim_cluster_node(m->c, (int)i);
        if (gi && gossip_live_count(gi) != p->live) {
            uint64_t d = gossip_state_digest(gi);
            if (last && d == last_digest) {
                memcpy(p->seen, last->seen, (size_t)m->words * sizeof *p->seen);
                p->fp = last->fp;
                p->live = last->live;
            } else {
                view_rebuild(p, gi);
                last = p;
                last_digest = d;
            }
        }
        g[n++] = (group){.fp = p->fp, .rep = i, .count = 1};
    }
    qsort(g, n, sizeof *g, cmp_group);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k && g[k - 1].fp == g[i].fp) {
            g[k - 1].count++;
        } else {
            g[k] = g[i];
            g[k].ve = NULL;
            k++;
        }
        m->peers[g[i].rep]->group = (uint32_t)(k - 1);
    }
    m->n_groups = k;
    return 0;
}

static view_entry *group_view(sim_model *m, uint32_t gi)
{
    group *g = &m->groups[gi];
    if (!g->ve)
        g->ve = view_get(m, g->fp, g->rep);
    return g->ve;
}

static bool is_subset(const uint64_t *a, const uint64_t *b, uint32_t words)
{
    for (uint32_t i = 0; i < words; i++)
        if (a[i] & ~b[i])
            return false;
    return true;
}

/* Blocks whose owner set changed when the view most nodes hold changed. */
static int track_majority(sim_model *m)
{
    if (!m->n_groups || now_s(m) < m->cfg.wl.start_s)
        return 0;
    uint32_t best = 0;
    for (uint32_t i = 1; i < m->n_groups; i++)
        if (m->groups[i].count > m->groups[best].count)
            best = i;
    view_entry *nv = group_view(m, best);
    if (!nv)
        return -1;
    view_entry *old = m->majority;
    if (old == nv)
        return 0;
    m->majority = nv;
    if (!old)
        return 0;
    /* Comparing every block costs a lookup per block and member in both views; above
     * MOVE_WORK_MAX of that, a regular sample of the blocks is compared and the counts scaled. */
    uint32_t stride = (uint32_t)(((uint64_t)m->blocks * (old->size + nv->size)) / MOVE_WORK_MAX + 1);
    uint32_t r = m->cfg.wl.replicas;
    uint64_t moved = 0, bytes = 0;
    for (uint32_t b = 0; b < m->blocks; b += stride) {
        const uint32_t *o1, *o2;
        int k1 = owners_of(m, old, b, &o1), k2 = owners_of(m, nv, b, &o2);
        for (int j = 0; j < k2; j++) {
            bool had = false;
            for (int i = 0; i < k1 && !had; i++)
                had = o1[i] == o2[j];
            if (!had) {
                moved++;
                bytes += m->bsize[b];
            }
        }
    }
    moved *= stride;
    bytes *= stride;
    m->cur.moved_blocks += moved;
    m->cur.moved_bytes += bytes;
    if (nv->size == old->size + 1 && is_subset(old->members, nv->members, m->words)) {
        m->res.join_moves++;
        m->res.join_moved_blocks += moved;
        m->res.join_ideal_milli += (uint64_t)llround(1000.0 * r * m->blocks / nv->size);
    }
    return 0;
}

/* ---- the data path ---- */

static void lat_add(sim_model *m, int sys, double s)
{
    double us = s * 1e6;
    int b = us <= SIM_LAT_BASE_US ? 0 : (int)(log(us / SIM_LAT_BASE_US) / log(1.25));
    if (b >= SIM_LAT_BUCKETS)
        b = SIM_LAT_BUCKETS - 1;
    m->res.latency[sys][b]++;
}

static sim_sys_stats *sys_stats(sim_model *m, int sys) { return &m->epochs[m->epoch].sys[sys]; }

/* One S3 request of system `sys` to the prefix of file f; `weight` is how many real requests it
 * stands for. Returns the seconds it waited for the prefix's backlog (one 503 per second). */
static double s3_request(sim_model *m, int sys, uint32_t f, double weight)
{
    uint32_t prefix = f % m->cfg.wl.prefixes;
    double *q = &m->backlog[sys][prefix];
    uint64_t wait = (uint64_t)(*q / m->cfg.s3_rate);
    *q += weight;
    m->prefix_req[sys][prefix] += weight;
    sys_stats(m, sys)->s3_503 += wait;
    m->cur.s3_503[sys] += wait;
    return (double)wait;
}

/* One GET of block b by system `sys` for node p; `weight` is how many real GETs it stands for.
 * Returns its latency. */
static double s3_get(sim_model *m, int sys, peer *p, uint32_t b, double weight)
{
    double wait = s3_request(m, sys, m->bfile[b], weight);
    sim_sys_stats *s = sys_stats(m, sys);
    s->s3_gets++;
    s->s3_bytes += m->bsize[b];
    m->cur.s3_gets[sys]++;
    p->s3_b[sys] += m->bsize[b];
    p->in_b[sys] += m->bsize[b];
    return wait + sim_dist_sample(&m->cfg.s3_latency, &m->rng) + m->bsize[b] / m->cfg.s3_throughput;
}

static double peer_transfer(sim_model *m, uint32_t size)
{
    return 2 * sim_dist_sample(&m->cfg.latency, &m->rng) + size / m->cfg.bandwidth_bps;
}

/*
 * Whom node p asks for block b (or for the metadata placed as block b): order[] gets its owners in
 * p's view, own zone first, *p_owns says whether p is one, and the return is how many. When none
 * of them answers, a node that is not an owner goes on with the stand-in owners (add_standins):
 * shoald asks the members ranked R + 1 and R + 2, the one that owns the block once one owner
 * leaves and the next, so that while a dead owner is still in the views one of them fetches for
 * every reader instead of each reader going to S3.
 */
static int ask_owners(sim_model *m, view_entry *e, const peer *p, uint32_t b, uint32_t *order, bool *p_owns)
{
    const uint32_t *own;
    int k = owners_of(m, e, b, &own);
    memcpy(order, own, (size_t)k * sizeof *order);
    prefer_zone(m, p, order, k);
    *p_owns = false;
    for (int j = 0; j < k; j++)
        *p_owns = *p_owns || own[j] == p->ix;
    return k;
}

/* Appends block b's stand-in owners (ranks R + 1 .. R + HANDOFF_EXTRA in view e) to order[0..k)
 * (room for ranked_len). Returns the new length. */
static int add_standins(sim_model *m, view_entry *e, uint32_t b, uint32_t *order, int k)
{
    const uint32_t *ranked;
    int n = ranked_get(m, e, b, true, &ranked);
    for (int j = k; j < n; j++)
        order[j] = ranked[j];
    return n > k ? n : k;
}

/* ---- metadata: HEAD and LIST under the metadata TTL ---- */

/* Until when table t holds file f's metadata (0 when it holds none). */
static double meta_until(const meta_table *t, uint32_t f)
{
    if (!t->n)
        return 0;
    uint32_t mask = t->cap - 1;
    for (uint32_t j = (f * 2654435761u) & mask; t->key[j]; j = (j + 1) & mask)
        if (t->key[j] == f + 1)
            return t->until[j];
    return 0;
}

static bool meta_fresh(double listed_until, const meta_table *t, uint32_t f, double now)
{
    return now < listed_until || now < meta_until(t, f);
}

static void meta_place(uint32_t *keys, double *until, uint32_t cap, uint32_t f, double t)
{
    uint32_t j = (f * 2654435761u) & (cap - 1);
    while (keys[j] && keys[j] != f + 1)
        j = (j + 1) & (cap - 1);
    keys[j] = f + 1;
    until[j] = t;
}

/* Remembers file f's metadata until `until`. The table keeps entries still fresh at `now` (a
 * rebuild drops the expired ones) and at most META_MAX, as shoald's; past that nothing new is kept. */
static int meta_remember(meta_table *t, uint32_t f, double now, double until)
{
    if ((t->n + 1) * 2 > t->cap) {
        uint32_t live = 0;
        for (uint32_t j = 0; j < t->cap; j++)
            live += t->key[j] && t->until[j] > now;
        if (live >= META_MAX)
            return 0;
        uint32_t cap = 64;
        while ((live + 1) * 2 > cap)
            cap *= 2;
        uint32_t *k = calloc(cap, sizeof *k);
        double *u = malloc(cap * sizeof *u);
        if (!k || !u) {
            free(k);
            free(u);
            return shoal_error_set(SHOAL_ERR_NOMEM, "sim: metadata table");
        }
        for (uint32_t j = 0; j < t->cap; j++)
            if (t->key[j] && t->until[j] > now)
                meta_place(k, u, cap, t->key[j] - 1, t->until[j]);
        free(t->key);
        free(t->until);
        t->key = k;
        t->until = u;
        t->cap = cap;
        t->n = live;
    }
    uint32_t mask = t->cap - 1, j = (f * 2654435761u) & mask;
    while (t->key[j] && t->key[j] != f + 1)
        j = (j + 1) & mask;
    t->n += !t->key[j];
    t->key[j] = f + 1;
    t->until[j] = until;
    return 0;
}

static bool penalized(const peer *p, uint32_t o, double now);
static void penalize(peer *p, uint32_t o, double until);
static double list_shared(sim_model *m, double now);

/* Node q asks S3 for file f's metadata (a HEAD) and keeps it for the TTL. Returns the latency. */
static double head_s3(sim_model *m, peer *q, uint32_t f, double now)
{
    if (meta_remember(&q->meta, f, now, now + m->cfg.metadata_ttl_s) < 0)
        return -1;
    sys_stats(m, SIM_SHOAL)->s3_heads++;
    return s3_request(m, SIM_SHOAL, f, 1) + sim_dist_sample(&m->cfg.s3_latency, &m->rng);
}

/*
 * Node p opens file f. A HEAD unless its metadata is fresh (shoald's per-node metadata table for
 * `shoal get`; the mount's listing or inode for the mount). Shoal's metadata is cooperative, as
 * shoald's (docs/placement.md): a node holding none fresh asks the object's metadata owner, which
 * answers from its table or sends the cluster's one HEAD per TTL, and the asker keeps the answer
 * until the owner's copy expires; an owner that does not answer costs the peer timeout and is
 * skipped for a while; then a node that is not an owner asks the stand-in owners (ask_owners),
 * which answer as an owner does, and with no one left it asks S3 itself. The model takes the
 * owners of the file's first block as its metadata owners: shoald places metadata under an id of
 * its own ("hd:"), which the same hashing spreads as evenly, so which member owns it differs and
 * how often it changes owner does not. An independent cache (s3fs, rclone: a stat per open) sends
 * a HEAD per node; a job reading S3 directly knows its keys and sends none. Returns Shoal's
 * latency.
 */
static double open_file(sim_model *m, peer *p, uint32_t f, double weight)
{
    double now = now_s(m), lat = 0;
    if (p->sampled && !meta_fresh(p->ilisted_until, &p->imeta, f, now)) {
        if (meta_remember(&p->imeta, f, now, now + m->cfg.metadata_ttl_s) < 0)
            return -1;
        sys_stats(m, SIM_INDEP)->s3_heads++;
        s3_request(m, SIM_INDEP, f, weight);
    }
    if (p->listed && now >= p->listed_until) {
        /* Through the mount an expired listing is revalidated by one LIST for the cluster, and
         * then the listed name needs no HEAD. */
        lat = list_shared(m, now);
        p->listed_until = m->list_until;
    }
    if (meta_fresh(p->listed_until, &p->meta, f, now))
        return lat;
    view_entry *e = group_view(m, p->group);
    if (!e)
        return -1;
    uint32_t order[DHT_REPLICAS_MAX];
    bool p_owns;
    int k = ask_owners(m, e, p, m->file_first[f], order, &p_owns), n = k;
    for (int j = 0;; j++) {
        if (j == k && !p_owns && n == k)
            n = add_standins(m, e, m->file_first[f], order, k);
        if (j >= n)
            break;
        uint32_t o = order[j];
        peer *q = m->peers[o];
        if (q == p)
            break; /* an owner, or a stand-in, asks S3 itself */
        if (penalized(p, o, now))
            continue;
        if (q->state != P_UP || q->stalled) {
            /* As for a block: the node's stream waits, and its reads due meanwhile go out after. */
            lat += m->cfg.peer_timeout_s * 1.25;
            p->held_until = fmax(p->held_until, now) + m->cfg.peer_timeout_s * 1.25;
            penalize(p, o, now + m->cfg.peer_timeout_s + PENALTY_S);
            continue;
        }
        double until = meta_until(&q->meta, f);
        if (now >= until) {
            double h = head_s3(m, q, f, now);
            if (h < 0)
                return -1;
            lat += h;
            until = now + m->cfg.metadata_ttl_s;
        }
        if (meta_remember(&p->meta, f, now, until) < 0)
            return -1;
        return lat + 2 * sim_dist_sample(&m->cfg.latency, &m->rng);
    }
    double h = head_s3(m, p, f, now);
    return h < 0 ? -1 : lat + h;
}

/* The dataset's listing through the mount: the listing's owner lists S3 (one LIST per 1,000
 * objects) at most once per TTL for the whole cluster, and every node's mount shares its answer.
 * Returns the latency for the node that asked. */
static double list_shared(sim_model *m, double now)
{
    if (now < m->list_until)
        return 2 * sim_dist_sample(&m->cfg.latency, &m->rng); /* the owner's fresh listing */
    uint64_t pages = ((uint64_t)m->files + LIST_PAGE - 1) / LIST_PAGE;
    double lat = 0;
    sys_stats(m, SIM_SHOAL)->s3_lists += pages;
    for (uint64_t k = 0; k < pages; k++)
        lat += s3_request(m, SIM_SHOAL, (uint32_t)k, 1) + sim_dist_sample(&m->cfg.s3_latency, &m->rng);
    m->list_until = now + m->cfg.metadata_ttl_s;
    return lat;
}

/* The mount's first listing on node p (a DataLoader lists its dataset once): shared by the
 * cluster for Shoal (list_shared); an independent cache lists per node. */
static void list_dataset(sim_model *m, peer *p, double weight)
{
    double now = now_s(m);
    uint64_t pages = ((uint64_t)m->files + LIST_PAGE - 1) / LIST_PAGE;
    list_shared(m, now);
    if (p->sampled) {
        sys_stats(m, SIM_INDEP)->s3_lists += pages;
        for (uint64_t k = 0; k < pages; k++)
            s3_request(m, SIM_INDEP, (uint32_t)k, weight); /* page k on prefix k mod prefixes */
    }
    p->listed = true;
    p->listed_until = m->list_until;
    p->ilisted_until = now + m->cfg.metadata_ttl_s;
}

/* ---- penalties: an owner that timed out is skipped for a while by that reader ---- */

static bool penalized(const peer *p, uint32_t o, double now)
{
    for (int i = 0; i < PENALTY_SLOTS; i++)
        if (p->pen_node[i] == o + 1 && p->pen_until[i] > now)
            return true;
    return false;
}

static void penalize(peer *p, uint32_t o, double until)
{
    int slot = 0;
    for (int i = 0; i < PENALTY_SLOTS; i++) {
        if (p->pen_node[i] == o + 1 || p->pen_until[i] < p->pen_until[slot]) {
            slot = i;
            if (p->pen_node[i] == o + 1)
                break;
        }
    }
    p->pen_node[slot] = o + 1;
    p->pen_until[slot] = until;
}

/*
 * Hand-off and replicas that pay, as shoald does them (docs/placement.md). An owner q that misses
 * block b asks, before S3, the block's first replicas + 2 ranked members under its view (not
 * itself) for a copy from their store: a member that holds it (owned or near) sends it and q keeps
 * it; a member that does not answer costs a quarter of the peer timeout and is skipped for a
 * while. Only then does q read S3, and with replicas above 1 an owner (`push`) sends the block to
 * the other owners at once. A stand-in owner fetches the same way without the push, and keeps the
 * block owned only when it ranks R + 1 (it owns the block once one owner leaves), near otherwise
 * (`owned`). Returns the latency, or -1.
 */
static double owner_fetch(sim_model *m, view_entry *e, peer *q, uint32_t b, bool owned, bool push)
{
    sim_sys_stats *s = sys_stats(m, SIM_SHOAL);
    uint32_t size = m->bsize[b];
    double now = now_s(m), lat = 0;
    const uint32_t *cand;
    int n = ranked_get(m, e, b, true, &cand);
    for (int i = 0; i < n; i++) {
        uint32_t o = cand[i];
        peer *h = m->peers[o];
        if (h == q || penalized(q, o, now))
            continue;
        if (h->state != P_UP || h->stalled) {
            lat += m->cfg.peer_timeout_s / 4;
            penalize(q, o, now + m->cfg.peer_timeout_s / 4 + PENALTY_S);
            continue;
        }
        lat += 2 * sim_dist_sample(&m->cfg.latency, &m->rng);
        if (sim_store_touch(&h->store, b)) {
            s->handoff_hits++;
            s->peer_bytes += size;
            h->out_b += size;
            q->in_b[SIM_SHOAL] += size;
            lat += size / m->cfg.bandwidth_bps;
            return sim_store_put(&q->store, b, size, !owned) < 0 ? -1 : lat;
        }
    }
    lat += s3_get(m, SIM_SHOAL, q, b, 1);
    if (sim_store_put(&q->store, b, size, !owned) < 0)
        return -1;
    int k = n < (int)m->cfg.wl.replicas ? n : (int)m->cfg.wl.replicas;
    for (int r = 0; push && r < k; r++) { /* replicas that pay */
        peer *o = m->peers[cand[r]];
        if (o == q || o->state != P_UP || o->stalled)
            continue;
        s->peer_bytes += size;
        q->out_b += size;
        o->in_b[SIM_SHOAL] += size;
        if (sim_store_put(&o->store, b, size, false) < 0)
            return -1;
    }
    return lat;
}

/*
 * A Shoal read, as shoald's read path does it (node/node_cache_fetch.c): the node's own store
 * first (owned or near); then the owners in its own view's order (own zone first, itself first
 * when it is one): itself fetches the block as an owner does (owner_fetch: hand-off, then S3) and
 * keeps it owned; a peer owner serves it from its store or fetches it as an owner for the reader,
 * and the reader keeps a copy (owned when it is a later owner, near otherwise); an owner that does
 * not answer costs the peer timeout plus the PING that confirms it is silent, and is skipped by
 * this reader for PENALTY_S. When no owner answered (one died and the views do not know yet), a
 * reader that is not an owner asks the stand-in owners (ask_owners) the same way: a stand-in
 * serves the block from its store or fetches it once for every reader, and when the reader is
 * itself the next stand-in it fetches as one. With no one left the reader reads S3 and keeps a
 * near copy.
 */
static int read_shoal(sim_model *m, peer *p, uint32_t b, double lat)
{
    sim_sys_stats *s = sys_stats(m, SIM_SHOAL);
    uint32_t size = m->bsize[b];
    s->reads++;
    s->read_bytes += size;
    m->cur.reads[SIM_SHOAL]++;
    if (sim_store_touch(&p->store, b)) {
        s->local_hits++;
        s->near_hits += sim_lru_touch(&p->store.near, b);
        m->cur.hits[SIM_SHOAL]++;
        lat_add(m, SIM_SHOAL, lat + DISK_LATENCY_S + size / DISK_BPS);
        return 0;
    }
    view_entry *e = group_view(m, p->group);
    if (!e)
        return -1;
    uint32_t order[DHT_REPLICAS_MAX];
    bool p_owns;
    int k = ask_owners(m, e, p, b, order, &p_owns), n = k;
    double now = now_s(m);
    for (int j = 0;; j++) {
        if (j == k && !p_owns && n == k)
            n = add_standins(m, e, b, order, k);
        if (j >= n)
            break;
        uint32_t o = order[j];
        peer *q = m->peers[o];
        /* An owner keeps what it fetches owned and pushes it to the other owners; a stand-in keeps
         * it owned only when it ranks R + 1 (j == k), and pushes nothing. */
        bool owner = j < k, owned = j <= k;
        if (q == p) {
            double f = owner_fetch(m, e, p, b, owned, owner);
            if (f < 0)
                return -1;
            lat_add(m, SIM_SHOAL, lat + f);
            return 0;
        }
        if (penalized(p, o, now))
            continue;
        if (q->state != P_UP || q->stalled) {
            s->fallbacks++;
            /* The reader's stream of blocks waits (shoal get and the mount deliver in order): the
             * node's reads due meanwhile go out when the wait ends, then it is back on its pace. */
            lat += m->cfg.peer_timeout_s * 1.25;
            p->held_until = fmax(p->held_until, now) + m->cfg.peer_timeout_s * 1.25;
            penalize(p, o, now + m->cfg.peer_timeout_s + PENALTY_S);
            continue;
        }
        if (sim_store_touch(&q->store, b)) {
            s->peer_hits++;
            m->cur.hits[SIM_SHOAL]++;
        } else {
            double f = owner_fetch(m, e, q, b, owned, owner);
            if (f < 0)
                return -1;
            lat += f;
        }
        s->peer_bytes += size;
        if (q->zone != p->zone)
            s->xzone_bytes += size;
        q->out_b += size;
        p->in_b[SIM_SHOAL] += size;
        lat_add(m, SIM_SHOAL, lat + peer_transfer(m, size));
        return sim_store_put(&p->store, b, size, !p_owns);
    }
    lat_add(m, SIM_SHOAL, lat + s3_get(m, SIM_SHOAL, p, b, 1));
    return sim_store_put(&p->store, b, size, true);
}

static int read_indep(sim_model *m, peer *p, uint32_t b, double weight)
{
    sim_sys_stats *s = sys_stats(m, SIM_INDEP);
    s->reads++;
    s->read_bytes += m->bsize[b];
    m->cur.reads[SIM_INDEP]++;
    if (sim_lru_touch(&p->indep, b)) {
        s->local_hits++;
        m->cur.hits[SIM_INDEP]++;
        lat_add(m, SIM_INDEP, DISK_LATENCY_S + m->bsize[b] / DISK_BPS);
        return 0;
    }
    lat_add(m, SIM_INDEP, s3_get(m, SIM_INDEP, p, b, weight));
    return sim_lru_insert(&p->indep, b, m->bsize[b]);
}

static void read_nocache(sim_model *m, peer *p, uint32_t b)
{
    sim_sys_stats *s = sys_stats(m, SIM_NOCACHE);
    s->reads++;
    s->read_bytes += m->bsize[b];
    m->cur.reads[SIM_NOCACHE]++;
    lat_add(m, SIM_NOCACHE, s3_get(m, SIM_NOCACHE, p, b, 1));
}

/* The file at position `ord` of node p's read order this epoch. */
static uint32_t file_at(const sim_model *m, const peer *p, uint32_t ord)
{
    if (m->cfg.wl.full)
        return permute(m->cfg.wl.same_order ? m->epoch_key : p->perm_key, ord, m->files);
    return permute(m->epoch_key, p->rank + ord * m->ranks, m->files);
}

static uint32_t next_block(sim_model *m, peer *p)
{
    uint32_t f = file_at(m, p, p->file_ord);
    uint32_t b = m->file_first[f] + p->block_in_file;
    if (++p->block_in_file == m->file_first[f + 1] - m->file_first[f]) {
        p->block_in_file = 0;
        p->file_ord++;
    }
    return b;
}

static void epoch_begin(sim_model *m, int e, double start)
{
    m->epoch = e;
    m->epochs[e].start_s = start;
    m->epochs[e].end_s = start + m->epoch_len;
    memset(m->epoch_seen, 0, ((size_t)m->blocks + 63) / 64 * sizeof *m->epoch_seen);
    uint64_t s = m->cfg.seed * 0x2545f4914f6cdd1dull + (uint64_t)e + 1;
    m->epoch_key = sim_splitmix64(&s);
    m->ranks = 0;
    m->readers = m->sampled_readers = 0;
    for (uint32_t i = 0; i < m->n_peers; i++) {
        peer *p = m->peers[i];
        p->reading = p->state == P_UP;
        if (p->reading)
            p->rank = m->ranks++;
    }
    for (int sys = 0; sys < SIM_SYSTEMS; sys++)
        memset(m->prefix_req[sys], 0, m->cfg.wl.prefixes * sizeof *m->prefix_req[sys]);
    for (uint32_t i = 0; i < m->n_peers; i++) {
        peer *p = m->peers[i];
        memset(p->in_b, 0, sizeof p->in_b);
        memset(p->s3_b, 0, sizeof p->s3_b);
        p->out_b = 0;
        p->held_until = 0;
        if (!p->reading)
            continue;
        m->readers++;
        m->sampled_readers += p->sampled;
        p->done = p->file_ord = p->block_in_file = 0;
        uint64_t ks = m->epoch_key ^ ((uint64_t)i << 20);
        p->perm_key = sim_splitmix64(&ks);
        if (m->cfg.wl.full) {
            p->total = m->blocks;
        } else {
            p->total = 0;
            for (uint32_t ord = 0; p->rank + (uint64_t)ord * m->ranks < m->files; ord++) {
                uint32_t f = file_at(m, p, ord);
                p->total += m->file_first[f + 1] - m->file_first[f];
            }
        }
    }
    /* Through the mount, a node's job lists its dataset once, when it starts reading. */
    double weight = m->sampled_readers ? (double)m->readers / m->sampled_readers : 1;
    for (uint32_t i = 0; i < m->n_peers && !m->cfg.access_get; i++)
        if (m->peers[i]->reading && !m->peers[i]->listed)
            list_dataset(m, m->peers[i], weight);
}

/* The throughput model on what each node moved this epoch (sim_pace_compute). */
static int epoch_pace(sim_model *m, sim_epoch_stats *es)
{
    double *in = malloc(3 * (size_t)m->n_peers * sizeof *in);
    if (!in)
        return shoal_error_set(SHOAL_ERR_NOMEM, "sim: throughput model of %u nodes", m->n_peers);
    double *out = in + m->n_peers, *s3 = out + m->n_peers;
    for (int sys = 0; sys < SIM_SYSTEMS; sys++) {
        size_t n = 0;
        for (uint32_t i = 0; i < m->n_peers; i++) {
            const peer *p = m->peers[i];
            in[n] = p->in_b[sys];
            out[n] = sys == SIM_SHOAL ? p->out_b : 0;
            s3[n] = p->s3_b[sys];
            n++;
        }
        sim_pace_input pi = {.pace_s = m->epoch_len, .nic_bps = m->cfg.bandwidth_bps,
                             .s3_conn_bps = m->cfg.s3_throughput, .s3_rate = m->cfg.s3_rate,
                             .s3_conns = m->cfg.s3_conns, .nodes = n, .prefixes = m->cfg.wl.prefixes,
                             .in_bytes = in, .out_bytes = out, .s3_bytes = s3, .prefix_requests = m->prefix_req[sys]};
        es->pace[sys] = sim_pace_compute(&pi);
    }
    free(in);
    return 0;
}

static int epoch_end(sim_model *m)
{
    sim_epoch_stats *es = &m->epochs[m->epoch];
    for (uint32_t b = 0; b < m->blocks; b++) {
        if (bit_get(m->epoch_seen, b)) {
            es->unique_blocks++;
            es->unique_bytes += m->bsize[b];
        }
    }
    /* Scale the sampled independent caches to every reader. */
    if (m->sampled_readers && m->sampled_readers < m->readers) {
        double f = (double)m->readers / m->sampled_readers;
        sim_sys_stats *s = &es->sys[SIM_INDEP];
        uint64_t *v[] = {&s->reads,    &s->local_hits, &s->s3_gets,  &s->s3_503,
                         &s->read_bytes, &s->s3_bytes, &s->s3_heads, &s->s3_lists};
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
            *v[i] = (uint64_t)llround((double)*v[i] * f);
    }
    return epoch_pace(m, es);
}

/* When read i of node p's epoch arrives: the reads are spread evenly over the epoch, each jittered
 * within its own slot (start + (i + U_i) * len / total, U_i uniform from the node's key), so the
 * nodes do not read in lock-step and a node's reads stay in order. */
static double arrival(const sim_model *m, const peer *p, uint64_t i)
{
    uint64_t s = p->perm_key ^ (i * 0x9e3779b97f4a7c15ull) ^ 0xa55a;
    double u = (double)(sim_splitmix64(&s) >> 11) * 0x1.0p-53;
    double slot = m->epochs[m->epoch].start_s + m->epoch_len * ((double)i + u) / (double)p->total;
    return slot > p->held_until ? slot : p->held_until;
}

typedef struct arrival_ev {
    double at;
    uint32_t node;
} arrival_ev;

static int cmp_arrival(const void *a, const void *b)
{
    const arrival_ev *x = a, *y = b;
    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    return x->node < y->node ? -1 : x->node > y->node;
}

/* Every read that arrives before `until` (seconds), in arrival order across the nodes, so two
 * nodes wanting one block find the first one's fetch. A stalled or down node reads nothing; it
 * catches up when it runs again. */
static int read_slice(sim_model *m, double until)
{
    double weight = m->sampled_readers ? (double)m->readers / m->sampled_readers : 1;
    size_t n = 0;
    for (uint32_t i = 0; i < m->n_peers; i++) {
        peer *p = m->peers[i];
        if (!p->reading || p->state != P_UP || p->stalled)
            continue;
        for (uint64_t k = p->done; k < p->total && arrival(m, p, k) < until; k++) {
            if (SHOAL_ARRAY_GROW(m->arrivals, n, m->cap_arrivals) < 0)
                return shoal_error_wrap("sim: reads in one second");
            m->arrivals[n++] = (arrival_ev){.at = arrival(m, p, k), .node = i};
        }
    }
    qsort(m->arrivals, n, sizeof *m->arrivals, cmp_arrival);
    for (size_t j = 0; j < n; j++) {
        peer *p = m->peers[m->arrivals[j].node];
        bool opens = p->block_in_file == 0;
        uint32_t b = next_block(m, p);
        p->done++;
        bit_set(m->epoch_seen, b);
        double lat = opens ? open_file(m, p, m->bfile[b], weight) : 0;
        if (lat < 0 || read_shoal(m, p, b, lat) < 0)
            return -1;
        if (p->sampled && read_indep(m, p, b, weight) < 0)
            return -1;
        read_nocache(m, p, b);
    }
    return 0;
}

/* A checkpoint: every reading node uploads an equal part; Shoal also places the part's blocks in
 * the cluster cache (at their owners), an independent cache keeps its own part. */
static int checkpoint(sim_model *m)
{
    uint32_t writers = 0;
    for (uint32_t i = 0; i < m->n_peers; i++)
        writers += m->peers[i]->state == P_UP && !m->peers[i]->stalled;
    if (!writers)
        return 0;
    uint64_t part = m->cfg.wl.checkpoint_bytes / writers;
    uint64_t puts = part <= PART_BYTES ? 1 : 2 + (part + PART_BYTES - 1) / PART_BYTES;
    uint32_t bs = m->cfg.wl.block_size;
    for (uint32_t i = 0; i < m->n_peers; i++) {
        peer *p = m->peers[i];
        if (p->state != P_UP || p->stalled)
            continue;
        m->res.ckpt_puts += puts;
        m->res.ckpt_bytes += part;
        for (int sys = 0; sys < SIM_SYSTEMS; sys++)
            m->epochs[m->epoch].sys[sys].puts += puts;
        view_entry *e = group_view(m, p->group);
        if (!e)
            return -1;
        char key[48];
        snprintf(key, sizeof key, "checkpoints/%u/rank-%u", m->ckpt_no, i);
        for (uint64_t off = 0, j = 0; off < part; off += bs, j++) {
            uint32_t size = part - off < bs ? (uint32_t)(part - off) : bs;
            uint32_t blk = (uint32_t)(m->ckpt_block++);
            const dht_member *own[DHT_REPLICAS_MAX];
            int k = dht_owners(e->v, dht_block_id("dataset", key, "\"ckpt\"", j), (int)m->cfg.wl.replicas, own);
            for (int r = 0; r < k; r++) {
                peer *q = m->peers[owner_ix(own[r])];
                if (q->state == P_UP && sim_store_put(&q->store, blk, size, false) < 0)
                    return -1;
            }
            if (p->sampled && sim_lru_insert(&p->indep, blk, size) < 0)
                return -1;
        }
    }
    m->ckpt_no++;
    return 0;
}

/* ---- the run ---- */

static void tick_record(sim_model *m, uint32_t t)
{
    sim_tick *k = &m->cur;
    k->t = t;
    k->running = m->up;
    k->views = (uint32_t)m->n_groups;
    uint64_t sum = 0;
    uint32_t mn = UINT32_MAX, mx = 0, n = 0;
    for (uint32_t i = 0; i < m->n_peers; i++) {
        peer *p = m->peers[i];
        if (p->state != P_UP)
            continue;
        sum += p->live;
        mn = p->live < mn ? p->live : mn;
        mx = p->live > mx ? p->live : mx;
        n++;
    }
    k->seen_mean = n ? (double)sum / n : 0;
    k->seen_min = n ? mn : 0;
    k->seen_max = mx;
    uint64_t sent = sim_world_get_stats(m->w).sent;
    k->packets = sent - m->last_sent;
    m->last_sent = sent;
    m->res.packets_total += k->packets;
    m->res.node_seconds += m->up;
    if (t > m->cfg.wl.start_s) {
        m->res.packets_steady += k->packets;
        m->res.node_seconds_steady += m->up;
    }
    /* The independent caches of a sample stand for every reader (as in epoch_end). */
    if (m->sampled_readers && m->sampled_readers < m->readers) {
        double f = (double)m->readers / m->sampled_readers;
        k->reads[SIM_INDEP] = (uint64_t)llround((double)k->reads[SIM_INDEP] * f);
        k->hits[SIM_INDEP] = (uint64_t)llround((double)k->hits[SIM_INDEP] * f);
        k->s3_gets[SIM_INDEP] = (uint64_t)llround((double)k->s3_gets[SIM_INDEP] * f);
        k->s3_503[SIM_INDEP] = (uint64_t)llround((double)k->s3_503[SIM_INDEP] * f);
    }
    /* The run's cost so far: the epochs done, and this one's counters (a sampled baseline scaled). */
    for (int sys = 0; sys < SIM_SYSTEMS && m->epoch >= 0; sys++) {
        for (int e = 0; e <= m->epoch; e++) {
            sim_sys_stats st = m->epochs[e].sys[sys];
            if (sys == SIM_INDEP && e == m->epoch && m->sampled_readers && m->sampled_readers < m->readers) {
                double f = (double)m->readers / m->sampled_readers;
                st.s3_gets = (uint64_t)llround((double)st.s3_gets * f);
                st.s3_bytes = (uint64_t)llround((double)st.s3_bytes * f);
                st.s3_heads = (uint64_t)llround((double)st.s3_heads * f);
                st.s3_lists = (uint64_t)llround((double)st.s3_lists * f);
            }
            k->usd[sys] += sim_dollars(&m->cfg, &st);
        }
    }
    m->ticks[m->n_ticks++] = *k;
    memset(&m->cur, 0, sizeof m->cur);
    for (int s = 0; s < SIM_SYSTEMS; s++)
        for (uint32_t p = 0; p < m->cfg.wl.prefixes; p++)
            m->backlog[s][p] = m->backlog[s][p] > m->cfg.s3_rate ? m->backlog[s][p] - m->cfg.s3_rate : 0;
    /* Victims whose death every running node has seen (in case an observer died meanwhile). */
    for (size_t v = 0; v < m->n_victims; v++) {
        if (m->vtrack[v].done || m->victims[v].first_dead < 0)
            continue;
        uint32_t who = m->victims[v].node;
        if (m->peers[who]->victim != (int32_t)v)
            continue;
        bool all = true;
        for (uint32_t i = 0; i < m->n_peers && all; i++)
            all = m->peers[i]->state != P_UP || i == who || !bit_get(m->peers[i]->seen, who);
        if (all) {
            m->vtrack[v].done = true;
            m->victims[v].all_dead = t;
        }
    }
}

static int run(sim_model *m)
{
    const sim_config *c = &m->cfg;
    uint32_t seconds = (uint32_t)ceil(c->duration_s);
    m->ticks = calloc(seconds ? seconds : 1, sizeof *m->ticks);
    m->epochs = calloc(c->wl.epochs, sizeof *m->epochs);
    if (!m->ticks || !m->epochs)
        return shoal_error_set(SHOAL_ERR_NOMEM, "sim: time series of %u seconds", seconds);
    m->epoch_len = c->wl.epoch_s > 0 ? c->wl.epoch_s : (c->duration_s - c->wl.start_s) / c->wl.epochs;
    if (c->wl.epoch_s <= 0 && c->wl.consume_bps > 0) {
        /* The job's pace sets the epoch: a node's share of the dataset at its consumption rate. */
        double share = c->wl.full ? (double)m->res.dataset_bytes : (double)m->res.dataset_bytes / c->nodes;
        m->epoch_len = share / c->wl.consume_bps;
    }
    m->res.epoch_s = m->epoch_len;
    m->next_ckpt = c->wl.checkpoint_s > 0 ? c->wl.start_s + c->wl.checkpoint_s : INFINITY;
    m->epoch = -1;
    int last_epoch = -1;
    size_t next = 0;
    for (uint32_t t = 1; t <= seconds; t++) {
        m->tick_no = t;
        uint64_t end_us = (uint64_t)t * SEC;
        while (next < m->n_sched && m->sched[next].at * SEC < (double)end_us) {
            sched_ev e = m->sched[next++];
            sim_world_run_until(m->w, (uint64_t)(e.at * SEC));
            if (apply(m, &e) < 0)
                return -1;
        }
        sim_world_run_until(m->w, end_us);
        sim_cluster_fold(m->c);
        if (group_nodes(m) < 0 || track_majority(m) < 0)
            return -1;
        /* The epoch running at the end of this second: one that starts inside the second begins
         * here, after the reads that ended the one before, so every second carries one second of
         * reads. */
        double ts = t - 1e-9;
        int e = ts >= c->wl.start_s ? (int)floor((ts - c->wl.start_s) / m->epoch_len) : -1;
        if (e >= (int)c->wl.epochs)
            e = -1;
        if (e >= 0 && e != last_epoch) {
            if (last_epoch >= 0) {
                /* The end of the last epoch may fall inside this second: its last reads first. */
                if (read_slice(m, INFINITY) < 0 || epoch_end(m) < 0)
                    return -1;
            }
            epoch_begin(m, e, c->wl.start_s + e * m->epoch_len);
            last_epoch = e;
        }
        if (last_epoch >= 0 && read_slice(m, (double)t) < 0) /* after the last epoch: its end */
            return -1;
        if (e >= 0) {
            if (t >= m->next_ckpt) {
                if (checkpoint(m) < 0)
                    return -1;
                m->next_ckpt += c->wl.checkpoint_s;
            }
        }
        tick_record(m, t);
    }
    if (last_epoch >= 0) {
        /* Reads of the last epoch due by the end of the run (all of them when it fits). */
        if (read_slice(m, fmin(c->duration_s, m->epochs[last_epoch].end_s)) < 0 || epoch_end(m) < 0)
            return -1;
    }
    m->res.n_epochs = last_epoch >= 0 ? (size_t)last_epoch + 1 : 0;
    return 0;
}

static int validate(const sim_config *c)
{
    if (c->nodes < 1)
        return shoal_error_set(SHOAL_ERR_INVAL, "--nodes must be at least 1");
    if (c->duration_s < 1 || c->duration_s > 1e7)
        return shoal_error_set(SHOAL_ERR_INVAL, "--duration must be between 1 s and 10,000,000 s");
    if (c->wl.start_s >= c->duration_s)
        return shoal_error_set(SHOAL_ERR_INVAL, "workload start=%g s is not before the end (%g s)",
                               c->wl.start_s, c->duration_s);

    if (c->s3_rate <= 0 || c->s3_throughput <= 0 || c->bandwidth_bps <= 0)
        return shoal_error_set(SHOAL_ERR_INVAL, "rates and bandwidths must be positive");
    if (c->wl.replicas > DHT_REPLICAS_MAX)
        return shoal_error_set(SHOAL_ERR_INVAL, "replicas must be at most %d", DHT_REPLICAS_MAX);
    return 0;
}

uint64_t sim_model_memory_estimate(const sim_config *cfg)
{
    uint64_t n = cfg->nodes;
    uint64_t views = cfg->private_views || cfg->join_bootstrap ? n * n * SIM_MEMBER_BYTES
                                                                : n * SIM_NODE_BYTES;
    /* Every crash, restart or join makes the views disagree on one member until it is reaped. */
    uint64_t changes = 16;
    for (size_t e = 0; e < cfg->churn.n; e++)
        changes += cfg->churn.ev[e].kind == SIM_CHURN_PARTITION ? n : 2ull * cfg->churn.ev[e].count;
    double hours = cfg->duration_s / 3600.0;
    changes += (uint64_t)((cfg->churn.kill_rate + cfg->churn.stall_rate + 2 * cfg->churn.preempt_rate) * n * hours * 2 +
                          cfg->churn.join_rate * hours);
    if (!(cfg->private_views || cfg->join_bootstrap))
        views += changes * n * SIM_MEMBER_BYTES;
    return views + n * n / 8 + 64ull * 1048576;
}

sim_model *sim_model_run(const sim_config *cfg)
{
    if (validate(cfg) < 0)
        return NULL;
    sim_model *m = calloc(1, sizeof *m);
    if (!m) {
        shoal_error_set(SHOAL_ERR_NOMEM, "sim: model");
        return NULL;
    }
    m->cfg = *cfg;
    m->rng = cfg->seed ^ 0x6a09e667f3bcc909ull;
    m->churn_rng = cfg->seed ^ 0xbb67ae8584caa73bull;
    gossip_config_defaults(&m->base);
    memset(m->base.cluster_key, 0x5a, sizeof m->base.cluster_key);
    m->base.self.block_size = cfg->wl.block_size;
    m->base.self.proto_version = 1;
    m->base.self.capacity = cfg->wl.cache_bytes ? cfg->wl.cache_bytes : 1;
    m->base.self.serving = true;
    m->base.on_event = on_event;
    if (cfg->push_pull_s > 0)
        m->base.push_pull_interval_us = (uint64_t)(cfg->push_pull_s * SEC);
    m->probe_us = m->base.probe_interval_us;
    m->res.probe_interval_s = (double)m->probe_us / SEC;

    uint32_t joins;
    if (plan_churn(m, &joins) < 0)
        goto fail;
    m->cap_peers = cfg->nodes + joins;
    m->words = (m->cap_peers + 63) / 64;
    m->peers = calloc(m->cap_peers, sizeof *m->peers);
    m->zone_names = calloc(cfg->wl.zones, sizeof *m->zone_names);
    bool prefixes_ok = true;
    for (int s = 0; s < SIM_SYSTEMS; s++) {
        m->backlog[s] = calloc(cfg->wl.prefixes, sizeof *m->backlog[s]);
        m->prefix_req[s] = calloc(cfg->wl.prefixes, sizeof *m->prefix_req[s]);
        prefixes_ok = prefixes_ok && m->backlog[s] && m->prefix_req[s];
    }
    if (!m->peers || !m->zone_names || !prefixes_ok) {
        shoal_error_set(SHOAL_ERR_NOMEM, "sim: %u nodes", m->cap_peers);
        goto fail;
    }
    for (uint32_t z = 0; z < cfg->wl.zones; z++)
        snprintf(m->zone_names[z], sizeof m->zone_names[z], "z%u", z);
    if (dataset_build(m) < 0)
        goto fail;
    m->ckpt_block = m->blocks;

    m->c = sim_cluster_new_views(cfg->seed, &m->base, cfg->private_views ? SIM_VIEWS_APART : SIM_VIEWS_SHARED);
    if (!m->c)
        goto fail;
    m->w = sim_cluster_world(m->c);
    double lo = cfg->latency.a, hi = cfg->latency.kind == SIM_DIST_UNIFORM ? cfg->latency.b : cfg->latency.a;
    if (cfg->latency.kind == SIM_DIST_LOGNORMAL)
        sim_world_set_latency_lognormal(m->w, (uint64_t)(cfg->latency.a * SEC), cfg->latency.b);
    else
        sim_world_set_latency(m->w, (uint64_t)(lo * SEC), (uint64_t)(hi * SEC));
    sim_world_set_loss(m->w, cfg->loss);
    sim_cluster_set_tap(m->c, on_gossip_event, m);
    for (uint32_t i = 0; i < cfg->nodes; i++) {
        if (peer_add(m) < 0)
            goto fail;
        if (cfg->join_bootstrap && i > 0 && sim_cluster_join(m->c, (int)i, 0) < 0) {
            shoal_error_wrap("sim: node %u joining", i);
            goto fail;
        }
    }
    /* A converged start: every view already holds every node (the first tick's reconciliation
     * fills the view bitsets, since a preload raises no events). */
    if (!cfg->join_bootstrap && sim_cluster_preload(m->c) < 0) {
        shoal_error_wrap("sim: preloading %u nodes", cfg->nodes);
        goto fail;
    }
    if (run(m) < 0)
        goto fail;
    m->res.nodes_total = m->n_peers;
    m->res.ticks = m->ticks;
    m->res.n_ticks = m->n_ticks;
    m->res.epochs = m->epochs;
    m->res.victims = m->victims;
    m->res.n_victims = m->n_victims;
    m->res.events = m->events;
    m->res.n_events = m->n_events;
    return m;
fail:
    sim_model_delete(m);
    return NULL;
}

void sim_model_delete(sim_model *m)
{
    if (!m)
        return;
    sim_cluster_delete(m->c);
    for (uint32_t i = 0; i < m->n_peers; i++) {
        sim_store_destroy(&m->peers[i]->store);
        free(m->peers[i]->meta.key);
        free(m->peers[i]->meta.until);
        free(m->peers[i]->imeta.key);
        free(m->peers[i]->imeta.until);
        sim_lru_destroy(&m->peers[i]->indep);
        free(m->peers[i]->seen);
        free(m->peers[i]);
    }
    for (size_t i = 0; i < m->n_views; i++)
        view_free(m->views[i]);
    for (int s = 0; s < SIM_SYSTEMS; s++) {
        free(m->backlog[s]);
        free(m->prefix_req[s]);
    }
    free(m->views);
    free(m->groups);
    free(m->peers);
    free(m->zone_names);
    free(m->file_first);
    free(m->ids);
    free(m->bsize);
    free(m->bfile);
    free(m->epoch_seen);
    free(m->arrivals);
    free(m->events);
    free(m->sched);
    free(m->ticks);
    free(m->epochs);
    free(m->victims);
    free(m->vtrack);
    free(m);
}

const sim_result *sim_model_result(const sim_model *m) { return &m->res; }

double sim_dollars(const sim_config *c, const sim_sys_stats *st)
{
    const double gib = 1073741824.0;
    return (double)(st->s3_gets + st->s3_heads) / 1000 * c->get_price +
           (double)(st->puts + st->s3_lists) / 1000 * c->put_price + (double)st->s3_bytes / gib * c->egress_price +
           (double)st->xzone_bytes / gib * c->xzone_price;
}
const sim_config *sim_model_config(const sim_model *m) { return &m->cfg; }
