/*
 * SWIM membership with the Lifeguard refinements, following HashiCorp memberlist's state.go,
 * suspicion.go, awareness.go and broadcast.go, as a state machine over the environment seam.
 *
 * Failure detection. Each probe period (probe_interval scaled by the awareness score) the node
 * pings the next member of a shuffled round-robin list (reshuffled at each wrap, new members
 * inserted at a random place: SWIM section 4.3's time-bounded completeness). If no ack arrives
 * within probe_timeout it asks indirect_checks random members to probe the target for it (PING_REQ);
 * they relay the target's ack, or send a NACK when they heard nothing (Lifeguard: a missing nack
 * means the fault may be ours). When the period ends without an ack the target becomes suspect.
 *
 * Suspicion (Lifeguard section IV-B, memberlist suspicion.go; the arithmetic is gossip_suspicion.c). A suspicion runs for a time that
 * starts at max = suspicion_max_mult * min and shrinks toward min = suspicion_mult *
 * max(1, log10 n) * probe_interval as independent accusers confirm it: after c of the k =
 * suspicion_mult - 2 expected confirmations the timeout is max - (max - min) * log(c+1) / log(k+1).
 * When it expires the member is declared dead. A suspect that hears of its suspicion refutes it by
 * gossiping alive with a higher incarnation; incarnation numbers order every claim about a member:
 * alive(i) overrides suspect/dead(j) only when i > j, suspect(i) overrides alive(j) when i >= j,
 * dead(i) overrides alive/suspect(j) when i >= j. A replayed old packet therefore changes nothing.
 *
 * Local health awareness (Lifeguard section IV-A, memberlist awareness.go). A score in
 * [0, awareness_max) multiplies the probe interval and timeout by (score + 1). It rises when a
 * probe fails without the expected nacks and when this node must refute a suspicion of itself; it
 * falls with each successful probe. A node that is slow itself thus stops accusing others quickly.
 *
 * Dissemination. Every state change becomes one queued broadcast about that member (a newer one
 * about the same member replaces it, as memberlist's TransmitLimitedQueue invalidates by name).
 * Broadcasts ride piggybacked on every ping, ack, ping-req and nack, fewest-transmitted first, and
 * every gossip_interval up to gossip_nodes random members get a GOSSIP packet while any are queued.
 * Each broadcast is sent at most retransmit_mult * ceil(log10(n + 1)) times. The queue is a set of
 * intrusive lists, one per transmit count, threaded through the member table, so picking the next
 * broadcasts is O(1) per broadcast however large the cluster.
 *
 * Anti-entropy. Every push_pull_interval (scaled by ceil(log2 n - log2 32) + 1 above 32 members,
 * memberlist's pushPullScale) the node sends its whole state to one random member and merges the
 * answer. A state bigger than a datagram is cut into chunks under GOSSIP_DATAGRAM_MAX bytes, each a
 * self-contained list of member states merged on arrival, so no IP fragmentation and no sockets.
 * Joining is the same exchange with the join flag, sent to every seed with exponential backoff
 * until one answers. The answering member refuses a joiner with another block size or protocol
 * version, or with the id of a live member at another address, and says so to the joiner.
 *
 * Where views live (the member store, shared by many instances in a simulator) is gossip_store.c;
 * this file reaches it through mem() to read a member and mem_w() to change one.
 *
 * Departures from memberlist: no TCP fallback probe and no TCP push-pull (chunked datagrams
 * instead: gossip stays socket-free); dead and left members are kept for dead_reap_us (24 h rather
 * than memberlist's 30 s) so a replayed old "alive" cannot resurrect a member that is gone.
 */
#include "gossip.h"
#include "gossip_proto.h"
#include "gossip_sim.h"
#include "gossip_store.h"
#include "gossip_suspicion.h"
#include "shoal_array.h"
#include "shoal_error.h"
#include "shoal_log.h"

#include "shoal_assert.h"
#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define NONE GOSSIP_NONE
/* reap() clears a confirmer it frees to NONE, which a suspicion must then never count. */
_Static_assert(GOSSIP_NONE == GOSSIP_SUSPICION_NOBODY, "one 'nobody' for slots and confirmers");
#define TX_BUCKETS 64 /* transmit limits are capped below this */
#define RELAYS 32
#define SEEDS_MAX 64
#define FORGOTTEN_MAX 64 /* members forgotten by hand that are remembered as such */

/* A member forgotten by hand (gossip_forget): claims about it at or below its last incarnation are
 * not believed until dead_reap_us has passed, as if it were still held dead or left. */
typedef struct forgotten {
    char id[GOSSIP_ID_MAX + 1];
    uint64_t incarnation, at;
} forgotten;

typedef struct relay {
    bool used;
    uint64_t seq, req_seq, deadline;
    shoal_addr requester;
} relay;

struct gossip {
    gossip_config cfg;
    const shoal_env *env;

    gossip_member_store *st;
    bool own_store;
    uint32_t self; /* this node's slot */
    gossip_view dv; /* this view's own entries (shared store only) */
    uint32_t n_members, n_live, n_gone;
    uint64_t digest; /* sum of member hashes (state_digest) */
    uint64_t none_salt; /* added for an accuser this view does not know: never equal elsewhere */
    /* Probe order: a keyed permutation of the slots [0, round_n), a new key each round. */
    uint64_t round_key;
    uint32_t round_n, round_pos;
    uint32_t at_i, at_slot; /* gossip_member_at() cursor, valid while at_changes == changes */
    uint64_t changes, at_changes; /* members added or forgotten */

    gossip_suspicion *susp;
    uint32_t n_susp;
    size_t cap_susp;

    uint32_t bc_head[TX_BUCKETS];
    uint32_t n_bc;

    struct {
        bool active, acked, indirect_sent;
        uint32_t target;
        uint64_t seq, timeout_at, end_at;
        uint32_t expected_nacks, nacks;
    } probe;
    relay relays[RELAYS];

    uint64_t seq;
    uint32_t awareness;
    uint64_t version;
    uint64_t next_probe_at, next_gossip_at, next_pp_at, next_reap_at;
    uint64_t armed_at;

    shoal_addr seeds[SEEDS_MAX];
    uint32_t n_seeds;
    forgotten forgotten[FORGOTTEN_MAX];
    uint32_t n_forgotten;
    bool joining, joined, refused, leaving;
    uint64_t next_join_at, join_backoff;

    gossip_counters ctr;
    gossip_sim_event_fn tap; /* gossip_sim_set_tap() */
    void *tap_ud;
    bool in_callback; /* inside on_event or tap, which must not call back into the instance */
    gossip_msg tx;
    uint8_t raw[GOSSIP_PLAIN_MAX];
    uint8_t raw_used[GOSSIP_UPDATES_MAX * GOSSIP_CACHE_USED_MAX]; /* key 12 beside raw's updates */
    uint8_t plain[GOSSIP_PLAIN_MAX];
    uint8_t wire[GOSSIP_DATAGRAM_MAX];
};

static const char *const state_names[] = {"alive", "suspect", "dead", "left"};

const char *gossip_state_name(gossip_state s) { return (unsigned)s < 4 ? state_names[s] : "unknown"; }

void gossip_config_defaults(gossip_config *c)
{
    memset(c, 0, sizeof *c);
    c->probe_interval_us = 1000000;
    c->probe_timeout_us = 500000;
    c->indirect_checks = 3;
    c->retransmit_mult = 4;
    c->suspicion_mult = 4;
    c->suspicion_max_mult = 6;
    c->push_pull_interval_us = 30000000;
    c->awareness_max = 8;
    c->gossip_interval_us = 200000;
    c->gossip_nodes = 3;
    c->gossip_to_dead_us = 30000000;
    c->dead_reap_us = 24ull * 3600 * 1000000;
    c->join_backoff_min_us = 1000000;
    c->join_backoff_max_us = 30000000;
}

/* ---- small helpers ---- */

static bool is_live(uint8_t state) { return state == GOSSIP_ALIVE || state == GOSSIP_SUSPECT; }

static uint64_t now_us(const gossip *g) { return shoal_env_now(g->env); }

static uint64_t rnd(const gossip *g, uint64_t n) { return shoal_env_uniform(g->env, n); }

static uint64_t scaled(const gossip *g, uint64_t t) { return t * (g->awareness + 1); }

/* ---- the member store (gossip_store.c), as this instance reaches it ---- */

static const gossip_meta *meta_get(gossip *g, const gossip_meta *m) { return gossip_meta_get(g->st->pool, m); }
static void meta_put(gossip *g, const gossip_meta *m) { gossip_meta_put(g->st->pool, m); }
static const gossip_meta *meta_ref(gossip *g, const gossip_meta *m) { return gossip_meta_ref(g->st->pool, m); }
static const member *mem(const gossip *g, uint32_t s) { return gossip_store_get(g->st, &g->dv, s); }
static member *mem_w(gossip *g, uint32_t s) { return gossip_store_get_w(g->st, &g->dv, s, g->cfg.self.id); }
static bool present(const member *m) { return gossip_present(m); }
static const char *st_id(const gossip_member_store *st, uint32_t s) { return gossip_slot_id(st, s); }

/* Replaces member i's metadata; false (keeping the old) when memory ran out. */
static bool meta_set(gossip *g, uint32_t i, const gossip_meta *m)
{
    const gossip_meta *n = meta_get(g, m);
    if (!n)
        return false;
    member *e = mem_w(g, i);
    meta_put(g, e->meta);
    e->meta = n;
    return true;
}

/* ---- the state digest: a sum of one hash per member, kept as members change ---- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t bytes_hash(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* What a push-pull sends about member s that could change its receiver: id, state, incarnation,
 * metadata, and a suspect's accuser (a dead member's accuser is not hashed: a dead member merged
 * onto a dead member changes nothing, whoever declared it, and views would otherwise never agree
 * after a death). */
static uint64_t member_hash(const gossip *g, uint32_t s, const member *m)
{
    if (!present(m))
        return 0;
    const char *id = st_id(g->st, s);
    uint64_t h = bytes_hash(0xcbf29ce484222325ull, id, strlen(id) + 1);
    uint64_t nums[] = {m->state, m->incarnation};
    h = bytes_hash(h, nums, sizeof nums);
    if (m->state == GOSSIP_SUSPECT && m->accuser != NONE) {
        const char *a = st_id(g->st, m->accuser);
        h = bytes_hash(h, a, strlen(a) + 1);
    }
    const gossip_meta *mt = m->meta;
    h = bytes_hash(h, mt->zone, strlen(mt->zone) + 1);
    h = bytes_hash(h, &mt->addr.family, sizeof mt->addr.family);
    h = bytes_hash(h, mt->addr.ip, sizeof mt->addr.ip);
    h = bytes_hash(h, &mt->addr.port, sizeof mt->addr.port);
    h = bytes_hash(h, mt->curve_public, sizeof mt->curve_public);
    uint64_t more[] = {mt->capacity, mt->serving, mt->proto_version, mt->block_size};
    return mix64(bytes_hash(h, more, sizeof more));
}

/* A suspicion or death whose accuser this view does not know is sent as "accused by me": never
 * count it equal to another view's (merging it there would confirm the suspicion). */
static uint64_t salt_of(const gossip *g, const member *m)
{
    return m->state == GOSSIP_SUSPECT && m->accuser == NONE ? g->none_salt : 0;
}

/* Call before changing member s's view fields... */
static void untouch(gossip *g, uint32_t s)
{
    const member *m = mem(g, s);
    g->digest -= m->h + salt_of(g, m);
}

/* ...and after. */
static void touch(gossip *g, uint32_t s)
{
    member *m = mem_w(g, s);
    m->h = member_hash(g, s, m);
    g->digest += m->h + salt_of(g, m);
}

static void member_info(const gossip *g, uint32_t i, gossip_member_info *out)
{
    const member *m = mem(g, i);
    out->meta = m->meta;
    out->state = (gossip_state)m->state;
    out->incarnation = m->incarnation;
    out->state_since_us = m->state_at;
    out->is_self = i == g->self;
}

static void emit(gossip *g, gossip_event ev, uint32_t i)
{
    if (!g->cfg.on_event)
        return;
    gossip_member_info info;
    member_info(g, i, &info);
    g->in_callback = true;
    g->cfg.on_event(g->cfg.event_ud, ev, &info);
    g->in_callback = false;
}

/* ---- member table ---- */

/* The slot of member `id` when this view holds it, else NONE. */
static uint32_t find(const gossip *g, const char *id)
{
    uint32_t s = gossip_store_find(g->st, id);
    return s != NONE && present(mem(g, s)) ? s : NONE;
}

/* Adds a member (state alive) holding `meta`, already taken with meta_get() (released here on
 * failure). Returns its slot, or NONE when memory ran out. */
static uint32_t member_add_held(gossip *g, const gossip_meta *meta, uint64_t inc)
{
    uint32_t s = gossip_store_slot(g->st, meta->id);
    if (s == NONE) {
        meta_put(g, meta);
        return NONE;
    }
    member *m = mem_w(g, s);
    meta_put(g, m->meta);
    *m = (member){.meta = meta,
                  .incarnation = inc,
                  .state_at = now_us(g),
                  .accuser = NONE,
                  .bc_prev = NONE,
                  .bc_next = NONE,
                  .susp = NONE,
                  .state = GOSSIP_ALIVE};
    touch(g, s);
    g->changes++;
    g->n_members++;
    g->n_live++;
    return s;
}

static uint32_t member_add(gossip *g, const gossip_meta *meta, uint64_t inc)
{
    const gossip_meta *held = meta_get(g, meta);
    return held ? member_add_held(g, held, inc) : NONE;
}

/* ---- broadcast queue: lists by transmit count ---- */

static uint32_t retransmit_limit(const gossip *g)
{
    uint32_t lim = g->cfg.retransmit_mult * (uint32_t)ceil(log10((double)g->n_live + 1.0));
    if (lim < 1)
        lim = 1;
    return lim < TX_BUCKETS ? lim : TX_BUCKETS - 1;
}

static void bc_unlink(gossip *g, uint32_t i)
{
    if (!mem(g, i)->bc_queued)
        return;
    member *m = mem_w(g, i);
    SHOAL_ASSERT(m->bc_tx < TX_BUCKETS && g->n_bc > 0);
    if (m->bc_prev != NONE) {
        mem_w(g, m->bc_prev)->bc_next = m->bc_next;
    } else {
        SHOAL_ASSERT(g->bc_head[m->bc_tx] == i); /* the first of its list */
        g->bc_head[m->bc_tx] = m->bc_next;
    }
    if (m->bc_next != NONE)
        mem_w(g, m->bc_next)->bc_prev = m->bc_prev;
    m->bc_prev = m->bc_next = NONE;
    m->bc_queued = false;
    g->n_bc--;
}

static void bc_link(gossip *g, uint32_t i, uint8_t tx)
{
    member *m = mem_w(g, i);
    SHOAL_ASSERT(!m->bc_queued && tx < TX_BUCKETS); /* a member is in one list at most */
    m->bc_tx = tx;
    m->bc_prev = NONE;
    m->bc_next = g->bc_head[tx];
    if (m->bc_next != NONE)
        mem_w(g, m->bc_next)->bc_prev = i;
    g->bc_head[tx] = i;
    m->bc_queued = true;
    g->n_bc++;
}

/* Queues (or re-queues, resetting its count) the broadcast of member i's current state. */
static void bc_queue(gossip *g, uint32_t i)
{
    bc_unlink(g, i);
    bc_link(g, i, 0);
}

static void update_from_member(const gossip *g, uint32_t i, bool with_meta, gossip_update *u)
{
    const member *m = mem(g, i);
    u->kind = m->state;
    u->incarnation = m->incarnation;
    u->accuser[0] = '\0';
    if ((m->state == GOSSIP_SUSPECT || m->state == GOSSIP_DEAD))
        strcpy(u->accuser, st_id(g->st, m->accuser != NONE ? m->accuser : g->self));
    u->has_meta = with_meta || m->state == GOSSIP_ALIVE;
    u->meta_ref = m->meta;
}

/* Encodes member i's update at the end of upd (upd_cap bytes) and its cache use at the end of
 * used (room for one more is the caller's promise), both described by r, within `budget` bytes
 * for the two together; false when it does not fit. */
static bool raw_add(gossip *g, uint32_t i, bool with_meta, uint8_t *upd, size_t upd_cap, uint8_t *used,
                    gossip_raw_updates *r, size_t budget)
{
    gossip_update u;
    update_from_member(g, i, with_meta, &u);
    size_t taken = r->updates_len + r->cache_used_len;
    if (taken + GOSSIP_CACHE_USED_MAX >= budget)
        return false;
    size_t room = budget - taken - GOSSIP_CACHE_USED_MAX;
    if (room > upd_cap - r->updates_len)
        room = upd_cap - r->updates_len;
    size_t l = gossip_update_encode(&u, upd + r->updates_len, room);
    if (!l)
        return false;
    size_t lu = gossip_update_encode_cache_used(&u, used + r->cache_used_len, GOSSIP_CACHE_USED_MAX);
    SHOAL_ASSERT(lu > 0); /* GOSSIP_CACHE_USED_MAX holds the widest */
    r->updates_len += l;
    r->cache_used_len += lu;
    r->n++;
    return true;
}

/* Fills g->raw and g->raw_used with queued broadcasts, fewest transmits first, within `budget`
 * bytes, starting with `first` (a member whose state must go in, or NONE). */
static void bc_fill(gossip *g, size_t budget, uint32_t first, gossip_raw_updates *r)
{
    uint32_t picked[GOSSIP_UPDATES_MAX];
    uint32_t misses = 0;
    *r = (gossip_raw_updates){.updates = g->raw, .cache_used = g->raw_used};
    if (first != NONE)
        raw_add(g, first, false, g->raw, sizeof g->raw, g->raw_used, r, budget);
    uint32_t lim = retransmit_limit(g);
    uint32_t n_picked = 0;
    for (uint32_t tx = 0; tx < TX_BUCKETS && r->n < GOSSIP_UPDATES_MAX && misses < 4; tx++) {
        for (uint32_t i = g->bc_head[tx]; i != NONE && r->n < GOSSIP_UPDATES_MAX && misses < 4;
             i = mem(g, i)->bc_next) {
            if (i == first)
                continue;
            if (!raw_add(g, i, false, g->raw, sizeof g->raw, g->raw_used, r, budget)) {
                misses++;
                continue;
            }
            picked[n_picked++] = i;
        }
    }
    for (uint32_t j = 0; j < n_picked; j++) {
        uint32_t i = picked[j];
        uint8_t tx = mem(g, i)->bc_tx;
        bc_unlink(g, i);
        if ((uint32_t)tx + 1 < lim)
            bc_link(g, i, (uint8_t)(tx + 1));
    }
}

/* ---- sending ---- */

static void send_sealed(gossip *g, const shoal_addr *to, size_t plen)
{
    uint8_t nonce[GOSSIP_NONCE_LEN];
    for (size_t i = 0; i < GOSSIP_NONCE_LEN; i += 8) {
        uint64_t r = shoal_env_random(g->env);
        memcpy(nonce + i, &r, 8);
    }
    size_t wlen = gossip_seal(g->cfg.cluster_key, nonce, g->plain, plen, g->wire);
    if (shoal_env_send(g->env, to, g->wire, wlen) < 0) {
        g->ctr.send_errors++;
        LOG_DEBUG("gossip", "send_failed", "node=%s err=%s", g->cfg.self.id, shoal_error_name(shoal_error_code()));
        return;
    }
    g->ctr.packets_out++;
    g->ctr.bytes_out += wlen;
}

/* Sends g->tx (header fields set by the caller) to `to`, piggybacking queued broadcasts when
 * `piggyback`, with member `first`'s state forced in first (or NONE). */
static void send_msg(gossip *g, const shoal_addr *to, bool piggyback, uint32_t first)
{
    gossip_msg *m = &g->tx;
    strcpy(m->from, g->cfg.self.id);
    gossip_raw_updates raw = {0};
    if (piggyback && (g->n_bc > 0 || first != NONE)) {
        size_t hdr = gossip_msg_encode(m, NULL, g->plain, sizeof g->plain);
        if (hdr && hdr + GOSSIP_UPDATES_OVERHEAD < GOSSIP_PLAIN_MAX)
            bc_fill(g, GOSSIP_PLAIN_MAX - hdr - GOSSIP_UPDATES_OVERHEAD, first, &raw);
    }
    size_t plen = gossip_msg_encode(m, &raw, g->plain, sizeof g->plain);
    if (!plen)
        return;
    send_sealed(g, to, plen);
    if (g->tap && m->type == GOSSIP_MSG_PING) {
        gossip_sim_event ev = {.kind = GOSSIP_SIM_PING_SENT, .to = to, .target = m->target,
                               .relayed = !(g->probe.active && m->seq == g->probe.seq)};
        g->in_callback = true;
        g->tap(g->tap_ud, &ev);
        g->in_callback = false;
    }
}

static void tx_reset(gossip *g, uint32_t type)
{
    gossip_msg *m = &g->tx;
    m->type = type;
    m->seq = 0;
    m->target[0] = '\0';
    m->has_addr = false;
    m->join = false;
    m->chunk = m->chunks = m->reason = 0;
    m->has_digest = false;
    m->text[0] = '\0';
}

/* Sends this node's whole state to `to` as PP_REQ or PP_RESP chunks. */
static void send_state(gossip *g, const shoal_addr *to, uint32_t type, bool join)
{
    /* The encoded state lives only for this call: kept per instance it would cost a simulator of
     * ten thousand instances tens of gigabytes. */
    size_t cap = (size_t)g->n_members * GOSSIP_UPDATE_MAX;
    uint8_t *scratch = malloc(cap);
    uint8_t *used = malloc((size_t)g->n_members * GOSSIP_CACHE_USED_MAX);
    uint32_t *offs = malloc(((size_t)g->n_members + 1) * sizeof *offs);
    uint32_t *uoffs = malloc(((size_t)g->n_members + 1) * sizeof *uoffs);
    if (!scratch || !used || !offs || !uoffs) {
        g->ctr.send_errors++;
        goto done;
    }
    /* Encode every member once (this node first, so a join's first chunk carries the joiner). */
    gossip_raw_updates all = {.updates = scratch, .cache_used = used};
    for (uint32_t k = 0; k <= g->st->n_slots; k++) {
        uint32_t i = k == 0 ? g->self : k - 1;
        if ((k > 0 && i == g->self) || !present(mem(g, i)))
            continue;
        uint32_t n = all.n;
        offs[n] = (uint32_t)all.updates_len;
        uoffs[n] = (uint32_t)all.cache_used_len;
        raw_add(g, i, true, scratch, cap, used, &all, SIZE_MAX);
    }
    uint32_t n = all.n;
    offs[n] = (uint32_t)all.updates_len;
    uoffs[n] = (uint32_t)all.cache_used_len;
    tx_reset(g, type);
    g->tx.join = join;
    g->tx.chunks = UINT32_MAX; /* widest encoding, so the header size is an upper bound */
    g->tx.chunk = UINT32_MAX - 1;
    strcpy(g->tx.from, g->cfg.self.id);
    size_t hdr = gossip_msg_encode(&g->tx, NULL, g->plain, sizeof g->plain);
    size_t budget = GOSSIP_PLAIN_MAX - hdr - GOSSIP_UPDATES_OVERHEAD;
    /* Count chunks, then send them. */
#define CHUNK_BYTES(a, b) (offs[b] - offs[a] + uoffs[b] - uoffs[a])
    uint32_t chunks = 0;
    for (uint32_t a = 0; a < n;) {
        uint32_t b = a;
        while (b < n && CHUNK_BYTES(a, b + 1) <= budget && b - a < GOSSIP_UPDATES_MAX)
            b++;
        chunks += b > a;
        a = b > a ? b : a + 1;
    }
    g->tx.chunks = chunks;
    uint32_t c = 0;
    for (uint32_t a = 0; a < n;) {
        uint32_t b = a;
        while (b < n && CHUNK_BYTES(a, b + 1) <= budget && b - a < GOSSIP_UPDATES_MAX)
            b++;
        if (b == a) {
            a++;
            continue;
        }
        g->tx.chunk = c++;
        gossip_raw_updates part = {.updates = scratch + offs[a], .updates_len = offs[b] - offs[a],
                                   .cache_used = used + uoffs[a], .cache_used_len = uoffs[b] - uoffs[a],
                                   .n = b - a};
        size_t plen = gossip_msg_encode(&g->tx, &part, g->plain, sizeof g->plain);
        if (plen) {
            send_sealed(g, to, plen);
            g->ctr.push_pull_packets++;
        }
        a = b;
    }
#undef CHUNK_BYTES
done:
    free(scratch);
    free(used);
    free(offs);
    free(uoffs);
}

static void send_refusal(gossip *g, const shoal_addr *to, gossip_refusal reason, const char *text)
{
    tx_reset(g, GOSSIP_MSG_REFUSE);
    g->tx.reason = reason;
    snprintf(g->tx.text, sizeof g->tx.text, "%s", text);
    send_msg(g, to, false, NONE);
    g->ctr.refused_out++;
}

/* Picks up to k distinct random members that are live (or dead within gossip_to_dead when
 * `dead_too`), never this node nor `skip`. Expected O(k) when most members are live. */
static uint32_t pick_random(gossip *g, uint32_t skip, uint32_t k, bool dead_too, uint32_t *out)
{
    uint32_t n = 0;
    uint64_t now = now_us(g);
    uint32_t slots = g->st->n_slots;
    for (uint32_t tries = 0; n < k && tries < 8 * k + 3 * slots / 4 && g->n_members > 1; tries++) {
        uint32_t i = (uint32_t)rnd(g, slots);
        const member *m = mem(g, i);
        if (i == g->self || i == skip)
            continue;
        if (!is_live(m->state) &&
            !(dead_too && m->state == GOSSIP_DEAD && now - m->state_at < g->cfg.gossip_to_dead_us))
            continue;
        bool dup = false;
        for (uint32_t j = 0; j < n; j++)
            dup |= out[j] == i;
        if (!dup)
            out[n++] = i;
    }
    return n;
}

static void arm(gossip *g);

/* One random member declared dead (not left), or NONE: the reconnect target (Serf's reconnect,
 * which memberlist leaves to its user). Without it two halves of a healed partition that have
 * declared each other dead would never speak again. */
static uint32_t pick_dead(gossip *g)
{
    if (g->n_gone == 0)
        return NONE;
    for (uint32_t tries = 0; tries < 16 + g->st->n_slots / 4; tries++) {
        uint32_t i = (uint32_t)rnd(g, g->st->n_slots);
        if (mem(g, i)->state == GOSSIP_DEAD)
            return i;
    }
    return NONE;
}

/* ---- state transitions ---- */

/* Changes member i's state (the caller brackets view changes with untouch() and touch()). */
static void set_state(gossip *g, uint32_t i, uint8_t state)
{
    member *m = mem_w(g, i);
    bool was_live = is_live(m->state), live = is_live(state);
    SHOAL_ASSERT(present(m) && state != GOSSIP_ABSENT);
    SHOAL_ASSERT(i != g->self || state == GOSSIP_LEFT || state == GOSSIP_ALIVE); /* self is never suspect or dead here */
    if (m->state != state)
        m->state_at = now_us(g);
    if (was_live && !live) {
        SHOAL_ASSERT(g->n_live > 0);
        g->n_live--;
        g->n_gone++;
    } else if (!was_live && live) {
        SHOAL_ASSERT(g->n_gone > 0);
        g->n_live++;
        g->n_gone--;
    }
    if (was_live != live)
        g->version++;
    m->state = state;
}

static void susp_remove(gossip *g, uint32_t i)
{
    uint32_t s = mem(g, i)->susp;
    if (s == NONE)
        return;
    SHOAL_ASSERT(s < g->n_susp && g->susp[s].member == i); /* the member and its suspicion name each other */
    mem_w(g, i)->susp = NONE;
    g->susp[s] = g->susp[--g->n_susp];
    if (s < g->n_susp)
        mem_w(g, g->susp[s].member)->susp = s;
}

static void susp_start(gossip *g, uint32_t i, uint32_t accuser)
{
    SHOAL_ASSERT(i != g->self && mem(g, i)->susp == NONE); /* this node refutes, never suspects itself */
    if (SHOAL_ARRAY_GROW(g->susp, g->n_susp, g->cap_susp) < 0)
        return; /* without a timer the member stays suspect until refuted or pushed dead */
    uint64_t min = gossip_suspicion_min_us(g->cfg.suspicion_mult, g->n_live, g->cfg.probe_interval_us);
    uint32_t k = gossip_suspicion_k(g->cfg.suspicion_mult, g->n_live);
    gossip_suspicion_start(&g->susp[g->n_susp], i, accuser, k, now_us(g), min, min * g->cfg.suspicion_max_mult);
    mem_w(g, i)->susp = g->n_susp++;
}

/* Counts an independent accuser; true when it was new (and the timeout shrank). */
static bool susp_confirm(gossip *g, uint32_t i, uint32_t accuser)
{
    uint32_t si = mem(g, i)->susp;
    return si != NONE && gossip_suspicion_confirm(&g->susp[si], accuser);
}

static void refute(gossip *g, uint64_t accused_inc)
{
    untouch(g, g->self);
    member *self = mem_w(g, g->self);
    uint64_t inc = self->incarnation + 1;
    if (accused_inc >= inc)
        inc = accused_inc + 1;
    self->incarnation = inc;
    touch(g, g->self);
    g->ctr.refutations++;
    bc_queue(g, g->self);
    LOG_DEBUG("gossip", "refute", "node=%s incarnation=%llu", g->cfg.self.id, (unsigned long long)inc);
}

static void awareness_delta(gossip *g, int d)
{
    int64_t a = (int64_t)g->awareness + d;
    if (a < 0)
        a = 0;
    if (a > (int64_t)g->cfg.awareness_max - 1)
        a = (int64_t)g->cfg.awareness_max - 1;
    g->awareness = (uint32_t)a;
}

static const char *incompatible(const gossip *g, const gossip_meta *m, gossip_refusal *why)
{
    if (m->block_size != g->cfg.self.block_size) {
        *why = GOSSIP_REFUSE_BLOCK_SIZE;
        return "block size differs";
    }
    if (m->proto_version != g->cfg.self.proto_version) {
        *why = GOSSIP_REFUSE_PROTO_VERSION;
        return "protocol version differs";
    }
    return NULL;
}

/* True when `id` was forgotten by hand at incarnation `inc` or later, less than dead_reap_us ago:
 * a claim at `inc` is then an echo of the member's old life. A claim of a newer incarnation (the
 * member restarted) ends the record. */
static bool forgotten_holds(gossip *g, const char *id, uint64_t inc)
{
    uint64_t now = now_us(g);
    for (uint32_t j = 0; j < g->n_forgotten; j++) {
        forgotten *f = &g->forgotten[j];
        if (strcmp(f->id, id) != 0)
            continue;
        if (inc <= f->incarnation && now - f->at < g->cfg.dead_reap_us)
            return true;
        *f = g->forgotten[--g->n_forgotten];
        return false;
    }
    return false;
}

static void on_alive(gossip *g, const gossip_update *u)
{
    const gossip_meta *meta = &u->meta;
    uint32_t i = find(g, meta->id);
    if (i == g->self) {
        const member *self = mem(g, g->self);
        if (!shoal_addr_eq(&meta->addr, &self->meta->addr)) {
            LOG_DEBUG("gossip", "id_conflict", "node=%s other_incarnation=%llu", g->cfg.self.id,
                      (unsigned long long)u->incarnation);
            return;
        }
        if (u->incarnation < self->incarnation ||
            (u->incarnation == self->incarnation && gossip_meta_same_identity(meta, self->meta)))
            return; /* our own news (an older release relays it without the cache use) */
        if (!g->leaving)
            refute(g, u->incarnation);
        return;
    }
    gossip_refusal why;
    if (incompatible(g, meta, &why)) {
        g->ctr.updates_stale++;
        return;
    }
    if (i == NONE) {
        if (forgotten_holds(g, meta->id, u->incarnation)) {
            g->ctr.updates_stale++;
            return;
        }
        i = member_add(g, meta, u->incarnation);
        if (i == NONE)
            return;
        g->version++;
        bc_queue(g, i);
        emit(g, GOSSIP_EV_JOINED, i);
        return;
    }
    const member *m = mem(g, i);
    bool moved = !shoal_addr_eq(&m->meta->addr, &meta->addr);
    if (moved && is_live(m->state)) {
        /* A second live node claims this id from another address: keep the first one. */
        g->ctr.updates_stale++;
        return;
    }
    if (u->incarnation <= m->incarnation && !moved) {
        g->ctr.updates_stale++;
        return;
    }
    uint8_t old = m->state;
    bool changed = !gossip_meta_eq(m->meta, meta);
    bool identity = changed && !gossip_meta_same_identity(m->meta, meta); /* not just the cache use */
    untouch(g, i);
    if (changed && !meta_set(g, i, meta)) {
        touch(g, i);
        return;
    }
    mem_w(g, i)->incarnation = u->incarnation;
    susp_remove(g, i);
    set_state(g, i, GOSSIP_ALIVE);
    touch(g, i);
    if (identity && is_live(old))
        g->version++;
    bc_queue(g, i);
    if (!is_live(old))
        emit(g, GOSSIP_EV_JOINED, i);
    else if (identity || old == GOSSIP_SUSPECT)
        emit(g, GOSSIP_EV_UPDATED, i);
    else if (changed)
        emit(g, GOSSIP_EV_CACHE_USED, i);
}

static void on_suspect(gossip *g, const char *id, uint64_t inc, const char *accuser_id)
{
    uint32_t i = find(g, id);
    if (i == NONE)
        return;
    const member *m = mem(g, i);
    uint32_t accuser = find(g, accuser_id);
    if (inc < m->incarnation || !is_live(m->state)) {
        g->ctr.updates_stale++;
        return;
    }
    if (i == g->self) {
        if (g->leaving)
            return;
        refute(g, inc);
        awareness_delta(g, 1);
        return;
    }
    if (m->state == GOSSIP_SUSPECT) {
        if (susp_confirm(g, i, accuser)) {
            untouch(g, i);
            mem_w(g, i)->accuser = accuser;
            touch(g, i);
            bc_queue(g, i);
        }
        return;
    }
    untouch(g, i);
    member *w = mem_w(g, i);
    w->incarnation = inc;
    w->accuser = accuser;
    set_state(g, i, GOSSIP_SUSPECT);
    touch(g, i);
    susp_start(g, i, accuser);
    bc_queue(g, i);
    g->ctr.suspicions++;
    LOG_DEBUG("gossip", "suspect", "node=%s member=%s incarnation=%llu by=%s", g->cfg.self.id, id,
              (unsigned long long)inc, accuser_id);
    emit(g, GOSSIP_EV_SUSPECT, i);
}

static void on_dead(gossip *g, const char *id, uint64_t inc, const char *accuser_id, bool left)
{
    uint32_t i = find(g, id);
    if (i == NONE)
        return;
    const member *m = mem(g, i);
    if (inc < m->incarnation || !is_live(m->state)) {
        g->ctr.updates_stale++;
        return;
    }
    if (i == g->self) {
        if (!g->leaving)
            refute(g, inc);
        return;
    }
    uint32_t accuser = left ? i : find(g, accuser_id);
    untouch(g, i);
    member *w = mem_w(g, i);
    w->incarnation = inc;
    w->accuser = accuser;
    susp_remove(g, i);
    set_state(g, i, left ? GOSSIP_LEFT : GOSSIP_DEAD);
    touch(g, i);
    bc_queue(g, i);
    if (!left)
        g->ctr.deaths++;
    LOG_DEBUG("gossip", left ? "left" : "dead", "node=%s member=%s incarnation=%llu", g->cfg.self.id,
              id, (unsigned long long)inc);
    emit(g, left ? GOSSIP_EV_LEFT : GOSSIP_EV_DEAD, i);
}

static void apply_update(gossip *g, const gossip_update *u)
{
    g->ctr.updates_in++;
    switch (u->kind) {
    case GOSSIP_ALIVE: on_alive(g, u); break;
    case GOSSIP_SUSPECT: on_suspect(g, u->meta.id, u->incarnation, u->accuser); break;
    case GOSSIP_DEAD: on_dead(g, u->meta.id, u->incarnation, u->accuser, false); break;
    case GOSSIP_LEFT: on_dead(g, u->meta.id, u->incarnation, u->meta.id, true); break;
    default: break;
    }
}

/* Push-pull merge (memberlist mergeState): a remote "dead" is only a suspicion here, since the
 * remote may be behind; a remote "left" is taken as it is. */
static void merge_state(gossip *g, const gossip_msg *msg)
{
    for (uint32_t j = 0; j < msg->n_updates; j++) {
        gossip_update u = msg->updates[j];
        if (u.kind == GOSSIP_DEAD) {
            u.kind = GOSSIP_SUSPECT;
            strcpy(u.accuser, msg->from);
        }
        if (u.kind == GOSSIP_SUSPECT && find(g, u.meta.id) == NONE && u.has_meta) {
            /* Unknown member in a suspect state: learn it as it is claimed, alive at a lower
             * incarnation, so the suspicion below lands on a known member. */
            gossip_update a = u;
            a.kind = GOSSIP_ALIVE;
            on_alive(g, &a);
        }
        apply_update(g, &u);
    }
}

/* ---- message handlers ---- */

static void handle_pp(gossip *g, const shoal_addr *from, const gossip_msg *msg)
{
    if (msg->type == GOSSIP_MSG_PP_REQ && msg->join && msg->chunk == 0) {
        /* Admission: the joiner's own state comes first in its first chunk. */
        const gossip_update *self_u = NULL;
        for (uint32_t j = 0; j < msg->n_updates && !self_u; j++)
            if (strcmp(msg->updates[j].meta.id, msg->from) == 0 && msg->updates[j].has_meta)
                self_u = &msg->updates[j];
        if (self_u) {
            /* The member speaks for itself: whatever was forgotten about it is over. */
            forgotten_holds(g, msg->from, UINT64_MAX);
            gossip_refusal why = 0;
            const char *text = incompatible(g, &self_u->meta, &why);
            uint32_t i = find(g, msg->from);
            char ours[16], theirs[16];
            if (!text && i != NONE && is_live(mem(g, i)->state) &&
                !shoal_addr_eq(&mem(g, i)->meta->addr, &self_u->meta.addr)) {
                why = GOSSIP_REFUSE_DUPLICATE_ID;
                text = "a live member already has this node id";
            }
            if (text) {
                if (why == GOSSIP_REFUSE_DUPLICATE_ID) {
                    snprintf(ours, sizeof ours, "live");
                    snprintf(theirs, sizeof theirs, "joining");
                } else {
                    snprintf(ours, sizeof ours, "%u", why == GOSSIP_REFUSE_BLOCK_SIZE ? g->cfg.self.block_size : g->cfg.self.proto_version);
                    snprintf(theirs, sizeof theirs, "%u", why == GOSSIP_REFUSE_BLOCK_SIZE ? self_u->meta.block_size : self_u->meta.proto_version);
                }
                char a[SHOAL_ADDR_STRLEN];
                LOG_WARN("gossip", "refuse_member", "node=%s member=%s addr=%s reason=\"%s\" ours=%s theirs=%s",
                         g->cfg.self.id, msg->from, shoal_addr_format(from, a), text, ours, theirs);
                char detail[GOSSIP_TEXT_MAX + 1];
                snprintf(detail, sizeof detail, "%s (ours %s, yours %s)", text, ours, theirs);
                send_refusal(g, from, why, detail);
                return;
            }
        }
    }
    if (msg->type == GOSSIP_MSG_PP_REQ && msg->has_digest && msg->n_updates == 0 && !msg->join) {
        /* A digest offer. Equal views: a push-pull would change nothing, say so and stop. Else run
         * the full exchange the other way round: our state as a request, theirs as the answer. */
        if (msg->digest == g->digest) {
            g->ctr.push_pull_same++;
            tx_reset(g, GOSSIP_MSG_PP_RESP);
            g->tx.chunks = 1;
            g->tx.has_digest = true;
            g->tx.digest = g->digest;
            send_msg(g, from, false, NONE);
        } else {
            send_state(g, from, GOSSIP_MSG_PP_REQ, false);
        }
        return;
    }
    if (msg->type == GOSSIP_MSG_PP_RESP && msg->has_digest && msg->n_updates == 0)
        g->ctr.push_pull_same++;
    merge_state(g, msg);
    if (msg->type == GOSSIP_MSG_PP_REQ && msg->chunk == 0)
        send_state(g, from, GOSSIP_MSG_PP_RESP, false);
    if (msg->type == GOSSIP_MSG_PP_RESP && g->joining) {
        g->joining = false;
        g->joined = true;
        LOG_INFO("gossip", "joined", "node=%s via=%s members=%u", g->cfg.self.id, msg->from, g->n_members);
    }
}

static void handle_refuse(gossip *g, const gossip_msg *msg)
{
    g->ctr.refused_in++;
    g->refused = true;
    g->joining = false;
    char q[160];
    LOG_ERROR("gossip", "refused", "node=%s by=%s reason=%u detail=%s", g->cfg.self.id, msg->from,
              msg->reason, shoal_log_q(q, sizeof q, msg->text));
    emit(g, GOSSIP_EV_REFUSED, g->self);
}

static void handle_ping_req(gossip *g, const shoal_addr *from, const gossip_msg *msg)
{
    relay *r = &g->relays[0];
    for (uint32_t j = 0; j < RELAYS; j++) {
        if (!g->relays[j].used) {
            r = &g->relays[j];
            break;
        }
        if (g->relays[j].deadline < r->deadline)
            r = &g->relays[j];
    }
    *r = (relay){.used = true, .seq = ++g->seq, .req_seq = msg->seq, .requester = *from,
                 .deadline = now_us(g) + g->cfg.probe_timeout_us};
    g->ctr.relays++;
    tx_reset(g, GOSSIP_MSG_PING);
    g->tx.seq = r->seq;
    strcpy(g->tx.target, msg->target);
    send_msg(g, &msg->addr, true, NONE);
}

static void handle_ack(gossip *g, const gossip_msg *msg)
{
    if (g->probe.active && !g->probe.acked && msg->seq == g->probe.seq) {
        g->probe.acked = true;
        g->probe.active = false;
        g->ctr.probe_acks++;
        awareness_delta(g, -1);
        return;
    }
    for (uint32_t j = 0; j < RELAYS; j++) {
        relay *r = &g->relays[j];
        if (r->used && r->seq == msg->seq) {
            r->used = false;
            tx_reset(g, GOSSIP_MSG_ACK);
            g->tx.seq = r->req_seq;
            send_msg(g, &r->requester, true, NONE);
            return;
        }
    }
}

void gossip_receive(gossip *g, const shoal_addr *from, const void *data, size_t len)
{
    SHOAL_ASSERT(!g->in_callback); /* callbacks must not call back into the instance */
    gossip_msg *msg = g->st->rx;
    size_t plen;
    const char *why = NULL;
    g->ctr.packets_in++;
    g->ctr.bytes_in += len;
    if (g->refused)
        return;
    if (len > GOSSIP_DATAGRAM_MAX || gossip_open(g->cfg.cluster_key, data, len, g->plain, &plen) < 0) {
        g->ctr.seal_failures++;
        char a[SHOAL_ADDR_STRLEN];
        LOG_DEBUG("gossip", "unsealed_drop", "node=%s from=%s len=%zu", g->cfg.self.id,
                  shoal_addr_format(from, a), len);
        return;
    }
    if (gossip_msg_decode(g->plain, plen, msg, &why) < 0) {
        g->ctr.decode_errors++;
        char a[SHOAL_ADDR_STRLEN];
        LOG_DEBUG("gossip", "decode_drop", "node=%s from=%s reason=\"%s\"", g->cfg.self.id,
                  shoal_addr_format(from, a), why ? why : "?");
        return;
    }
    bool is_pp = msg->type == GOSSIP_MSG_PP_REQ || msg->type == GOSSIP_MSG_PP_RESP;
    if (strcmp(msg->from, g->cfg.self.id) == 0 && !(is_pp && msg->join) && msg->type != GOSSIP_MSG_REFUSE) {
        /* Our own id from elsewhere: a duplicate node; its claims about us are not believed. A
         * refusal is the exception: when this node is the duplicate, the member that refuses it
         * carries the same id, and the refusal is exactly what this node must hear. */
        g->ctr.updates_stale++;
        goto done;
    }
    if (!is_pp)
        for (uint32_t j = 0; j < msg->n_updates; j++)
            apply_update(g, &msg->updates[j]);
    switch (msg->type) {
    case GOSSIP_MSG_PING:
        if (strcmp(msg->target, g->cfg.self.id) != 0)
            break; /* meant for a node that was at this address before */
        tx_reset(g, GOSSIP_MSG_ACK);
        g->tx.seq = msg->seq;
        send_msg(g, from, true, NONE);
        break;
    case GOSSIP_MSG_ACK: handle_ack(g, msg); break;
    case GOSSIP_MSG_NACK:
        if (g->probe.active && msg->seq == g->probe.seq) {
            g->probe.nacks++;
            g->ctr.nacks_in++;
        }
        break;
    case GOSSIP_MSG_PING_REQ: handle_ping_req(g, from, msg); break;
    case GOSSIP_MSG_PP_REQ:
    case GOSSIP_MSG_PP_RESP: handle_pp(g, from, msg); break;
    case GOSSIP_MSG_REFUSE: handle_refuse(g, msg); break;
    default: break;
    }
done:
    arm(g);
}

/* ---- timers ---- */

/* Position p of this round's permutation of [0, round_n): a 4-round Feistel network over the
 * smallest even power of two that covers round_n, walking the cycle until it lands inside. */
static uint32_t permute(const gossip *g, uint32_t p)
{
    uint32_t bits = 2;
    while ((1ull << bits) < g->round_n)
        bits += 2;
    uint32_t half = bits / 2, mask = (1u << half) - 1;
    uint64_t x = p;
    do {
        uint32_t l = (uint32_t)(x >> half) & mask, r = (uint32_t)x & mask;
        for (uint32_t k = 0; k < 4; k++) {
            uint32_t f = (uint32_t)mix64(g->round_key ^ ((uint64_t)k << 32) ^ r) & mask;
            uint32_t t = r;
            r = l ^ f;
            l = t;
        }
        x = (uint64_t)l << half | r;
    } while (x >= g->round_n);
    return (uint32_t)x;
}

/* The next live member in this round's order; a new round (a new permutation over every slot the
 * store has then) starts when one ends, so every member is probed once per round. */
static uint32_t next_probe_target(gossip *g)
{
    for (uint32_t tries = 0; tries <= g->round_n + 1; tries++) {
        if (g->round_pos >= g->round_n) {
            g->round_n = g->st->n_slots;
            g->round_key = shoal_env_random(g->env);
            g->round_pos = 0;
        }
        uint32_t i = permute(g, g->round_pos++);
        if (i != g->self && is_live(mem(g, i)->state))
            return i;
    }
    return NONE;
}

static void probe_start(gossip *g, uint64_t now)
{
    g->next_probe_at = now + scaled(g, g->cfg.probe_interval_us);
    uint32_t t = next_probe_target(g);
    if (t == NONE)
        return;
    g->probe.active = true;
    g->probe.acked = g->probe.indirect_sent = false;
    g->probe.target = t;
    g->probe.seq = ++g->seq;
    g->probe.timeout_at = now + scaled(g, g->cfg.probe_timeout_us);
    g->probe.end_at = g->next_probe_at;
    g->probe.expected_nacks = g->probe.nacks = 0;
    g->ctr.probes++;
    tx_reset(g, GOSSIP_MSG_PING);
    g->tx.seq = g->probe.seq;
    const member *tm = mem(g, t);
    strcpy(g->tx.target, st_id(g->st, t));
    /* A suspect target hears of its suspicion at once, so it can refute (memberlist does this). */
    send_msg(g, &tm->meta->addr, true, tm->state == GOSSIP_SUSPECT ? t : NONE);
}

static void probe_indirect(gossip *g)
{
    uint32_t via[16];
    uint32_t k = g->cfg.indirect_checks < 16 ? g->cfg.indirect_checks : 16;
    uint32_t n = pick_random(g, g->probe.target, k, false, via);
    const member *t = mem(g, g->probe.target);
    g->probe.indirect_sent = true;
    g->probe.expected_nacks = n;
    for (uint32_t j = 0; j < n; j++) {
        tx_reset(g, GOSSIP_MSG_PING_REQ);
        g->tx.seq = g->probe.seq;
        strcpy(g->tx.target, t->meta->id);
        g->tx.addr = t->meta->addr;
        send_msg(g, &mem(g, via[j])->meta->addr, true, NONE);
        g->ctr.indirect_probes++;
    }
}

static void probe_fail(gossip *g)
{
    uint32_t t = g->probe.target;
    g->probe.active = false;
    g->ctr.probe_failures++;
    if (g->probe.expected_nacks > 0) {
        if (g->probe.nacks < g->probe.expected_nacks)
            awareness_delta(g, (int)(g->probe.expected_nacks - g->probe.nacks));
    } else {
        awareness_delta(g, 1);
    }
    if (t < g->st->n_slots && is_live(mem(g, t)->state))
        on_suspect(g, st_id(g->st, t), mem(g, t)->incarnation, g->cfg.self.id);
}

/* Forgets members dead or left for longer than dead_reap_us, or only member `only` (dead or left)
 * whatever its age when it is not NONE. A private store frees their slots for reuse, so what
 * pointed at them (an accuser, a suspicion's confirmers) is cleared; a shared store keeps slots for
 * good (a simulation lasts hours, the reap time is a day). */
static void reap(gossip *g, uint64_t now, uint32_t only)
{
    gossip_member_store *st = g->st;
    uint32_t freed = 0;
    for (uint32_t i = 0; i < st->n_slots; i++) {
        const member *m = mem(g, i);
        if (i == g->self || !present(m) || is_live(m->state) ||
            (only == NONE ? now - m->state_at < g->cfg.dead_reap_us : i != only))
            continue;
        bc_unlink(g, i);
        untouch(g, i);
        member *w = mem_w(g, i);
        meta_put(g, w->meta);
        *w = gossip_absent_member;
        g->changes++;
        g->n_members--;
        g->n_gone--;
        if (st->solo && gossip_store_free_slot(st, i))
            freed++;
    }
    if (!freed)
        return;
    for (uint32_t i = 0; i < st->n_slots; i++) {
        const member *m = mem(g, i);
        if (present(m) && m->accuser != NONE && !st->ids[m->accuser][0]) {
            untouch(g, i);
            mem_w(g, i)->accuser = NONE;
            touch(g, i);
        }
    }
    for (uint32_t s = 0; s < g->n_susp; s++)
        for (uint32_t j = 0; j <= g->susp[s].n; j++)
            if (g->susp[s].confirmers[j] != NONE && !st->ids[g->susp[s].confirmers[j]][0])
                g->susp[s].confirmers[j] = NONE;
    gossip_store_reindex(st); /* on failure the old index stays: still right, only fuller */
}

static void arm(gossip *g)
{
    uint64_t at = g->next_probe_at;
    if (g->refused)
        return;
    if (g->probe.active)
        at = g->probe.indirect_sent || g->probe.acked ? g->probe.end_at : g->probe.timeout_at;
    if (g->n_bc > 0 && g->next_gossip_at < at)
        at = g->next_gossip_at;
    if (g->next_pp_at < at)
        at = g->next_pp_at;
    if (g->joining && g->next_join_at < at)
        at = g->next_join_at;
    /* No wakeup for the reap: it runs at the first probe boundary after next_reap_at. (Waking at
     * next_reap_at itself, before that boundary, armed the same instant again and never woke.) */
    for (uint32_t s = 0; s < g->n_susp; s++)
        if (g->susp[s].deadline < at)
            at = g->susp[s].deadline;
    for (uint32_t j = 0; j < RELAYS; j++)
        if (g->relays[j].used && g->relays[j].deadline < at)
            at = g->relays[j].deadline;
    if (at != g->armed_at) {
        g->armed_at = at;
        shoal_env_wakeup_at(g->env, at);
    }
}

static uint64_t push_pull_interval(const gossip *g)
{
    uint64_t iv = g->cfg.push_pull_interval_us;
    if (g->n_live <= 32)
        return iv;
    double mult = ceil(log2((double)g->n_live) - log2(32.0)) + 1.0;
    return (uint64_t)(mult * (double)iv);
}

void gossip_tick(gossip *g)
{
    SHOAL_ASSERT(!g->in_callback); /* callbacks must not call back into the instance */
    if (g->refused)
        return;
    uint64_t now = now_us(g);
    if (g->probe.active) {
        if (!g->probe.indirect_sent && now >= g->probe.timeout_at)
            probe_indirect(g);
        if (g->probe.active && now >= g->probe.end_at)
            probe_fail(g);
    }
    if (!g->probe.active && now >= g->next_probe_at) {
        if (g->n_gone > 0 && now >= g->next_reap_at) {
            reap(g, now, NONE);
            uint64_t step = g->cfg.dead_reap_us / 4;
            g->next_reap_at = now + (step > g->cfg.probe_interval_us ? step : g->cfg.probe_interval_us);
        }
        if (g->leaving)
            g->next_probe_at = now + g->cfg.probe_interval_us;
        else
            probe_start(g, now);
    }
    for (uint32_t j = 0; j < RELAYS; j++) {
        relay *r = &g->relays[j];
        if (r->used && now >= r->deadline) {
            r->used = false;
            tx_reset(g, GOSSIP_MSG_NACK);
            g->tx.seq = r->req_seq;
            send_msg(g, &r->requester, true, NONE);
        }
    }
    for (uint32_t s = 0; s < g->n_susp;) {
        if (now >= g->susp[s].deadline) {
            uint32_t i = g->susp[s].member;
            on_dead(g, st_id(g->st, i), mem(g, i)->incarnation, g->cfg.self.id, false);
            continue; /* on_dead removed entry s; another took its place */
        }
        s++;
    }
    if (now >= g->next_gossip_at) {
        g->next_gossip_at = now + g->cfg.gossip_interval_us;
        if (g->n_bc > 0) {
            uint32_t to[16];
            uint32_t k = g->cfg.gossip_nodes < 16 ? g->cfg.gossip_nodes : 16;
            uint32_t n = pick_random(g, NONE, k, true, to);
            for (uint32_t j = 0; j < n && g->n_bc > 0; j++) {
                tx_reset(g, GOSSIP_MSG_GOSSIP);
                send_msg(g, &mem(g, to[j])->meta->addr, true, NONE);
            }
        }
    }
    if (now >= g->next_pp_at) {
        g->next_pp_at = now + push_pull_interval(g);
        uint32_t peer;
        if (!g->leaving && pick_random(g, NONE, 1, false, &peer) == 1) {
            /* Offer the digest first: the states follow only when the views differ. */
            g->ctr.push_pulls++;
            tx_reset(g, GOSSIP_MSG_PP_REQ);
            g->tx.chunks = 1;
            g->tx.has_digest = true;
            g->tx.digest = g->digest;
            send_msg(g, &mem(g, peer)->meta->addr, false, NONE);
        }
        if (!g->leaving && (peer = pick_dead(g)) != NONE) {
            g->ctr.push_pulls++;
            send_state(g, &mem(g, peer)->meta->addr, GOSSIP_MSG_PP_REQ, false);
        }
    }
    if (g->joining && now >= g->next_join_at) {
        g->ctr.join_attempts++;
        for (uint32_t j = 0; j < g->n_seeds; j++)
            send_state(g, &g->seeds[j], GOSSIP_MSG_PP_REQ, true);
        g->next_join_at = now + g->join_backoff;
        g->join_backoff = g->join_backoff * 2 < g->cfg.join_backoff_max_us ? g->join_backoff * 2
                                                                           : g->cfg.join_backoff_max_us;
    }
    arm(g);
}

/* ---- public API ---- */

static int check_meta(const gossip_meta *m)
{
    if (!m->id[0] || memchr(m->id, 0, sizeof m->id) == NULL)
        return shoal_error_set(SHOAL_ERR_INVAL, "gossip: node id must be 1-%d bytes", GOSSIP_ID_MAX);
    if (memchr(m->zone, 0, sizeof m->zone) == NULL)
        return shoal_error_set(SHOAL_ERR_INVAL, "gossip: zone of node '%s' longer than %d bytes", m->id,
                               GOSSIP_ZONE_MAX);
    return 0;
}

gossip *gossip_new(const gossip_config *config, const shoal_env *env)
{
    if (check_meta(&config->self) < 0)
        return NULL;
    if (!config->probe_interval_us || !config->probe_timeout_us || !config->gossip_interval_us ||
        !config->push_pull_interval_us || !config->awareness_max || !config->join_backoff_min_us) {
        shoal_error_set(SHOAL_ERR_INVAL, "gossip: node '%s': intervals, awareness_max and join backoff must be > 0",
                        config->self.id);
        return NULL;
    }
    if (config->member_store && !config->meta_pool) {
        shoal_error_set(SHOAL_ERR_INVAL, "gossip: node '%s': a shared member store needs a metadata pool",
                        config->self.id);
        return NULL;
    }
    if (sodium_init() < 0) {
        shoal_error_set(SHOAL_ERR_GOSSIP, "gossip: libsodium failed to initialize");
        return NULL;
    }
    gossip *g = calloc(1, sizeof *g);
    if (!g)
        goto fail_nomem;
    g->cfg = *config;
    g->env = env;
    g->self = NONE;
    g->dv.ix = NONE;
    g->none_salt = mix64(gossip_id_hash(config->self.id) ^ 0x9e3779b97f4a7c15ull) | 1;
    for (uint32_t t = 0; t < TX_BUCKETS; t++)
        g->bc_head[t] = NONE;
    if (config->member_store) {
        g->st = config->member_store;
        if (gossip_store_attach(g->st, &g->dv, config->meta_pool, config->self.id) < 0)
            goto fail_free;
    } else {
        g->st = gossip_store_new_solo(config->meta_pool);
        if (!g->st)
            goto fail_free;
        g->own_store = true;
    }
    g->self = member_add(g, &config->self, config->incarnation);
    if (g->self == NONE)
        goto fail_free;
    g->version = 1;
    uint64_t now = now_us(g);
    g->armed_at = UINT64_MAX;
    /* Spread the first probe and push-pull over one interval so a cluster started at one instant
     * does not probe in lockstep. */
    g->next_probe_at = now + rnd(g, config->probe_interval_us);
    g->next_gossip_at = now + config->gossip_interval_us;
    g->next_pp_at = now + config->push_pull_interval_us + rnd(g, config->push_pull_interval_us);
    g->next_reap_at = now + config->dead_reap_us;
    arm(g);
    return g;
fail_free:
    gossip_delete(g);
fail_nomem:
    shoal_error_set(SHOAL_ERR_NOMEM, "gossip: new instance for node '%s'", config->self.id);
    return NULL;
}

void gossip_delete(gossip *g)
{
    if (!g)
        return;
    if (g->st && g->own_store)
        gossip_store_free_solo(g->st);
    else if (g->st)
        gossip_store_detach(g->st, &g->dv);
    free(g->susp);
    sodium_memzero(g->cfg.cluster_key, sizeof g->cfg.cluster_key);
    free(g);
}

int gossip_join(gossip *g, const shoal_addr *seeds, size_t n)
{
    SHOAL_ASSERT(!g->in_callback); /* callbacks must not call back into the instance */
    if (n == 0 || n > SEEDS_MAX)
        return shoal_error_set(SHOAL_ERR_INVAL, "gossip: node '%s': join needs 1-%d seeds, got %zu",
                               g->cfg.self.id, SEEDS_MAX, n);
    memcpy(g->seeds, seeds, n * sizeof *seeds);
    g->n_seeds = (uint32_t)n;
    g->joining = true;
    g->join_backoff = g->cfg.join_backoff_min_us;
    g->next_join_at = now_us(g);
    gossip_tick(g);
    return 0;
}

/* What gossip_preload does after adding members. */
static void preload_done(gossip *g)
{
    g->version++;
    g->joined = true;
    /* The push-pull period depends on the cluster size, which just changed. */
    uint64_t now = now_us(g);
    g->next_pp_at = now + push_pull_interval(g) / 2 + rnd(g, push_pull_interval(g));
    arm(g);
}

int gossip_preload(gossip *g, const gossip *from)
{
    bool shared = g->cfg.meta_pool && g->cfg.meta_pool == from->cfg.meta_pool;
    for (uint32_t k = 0; k < from->st->n_slots; k++) {
        const member *fm = mem(from, k);
        gossip_refusal why;
        if (!present(fm) || !is_live(fm->state) || find(g, fm->meta->id) != NONE ||
            incompatible(g, fm->meta, &why))
            continue;
        const gossip_meta *held = fm->meta;
        held = shared ? meta_ref(g, held) : meta_get(g, held);
        if (!held || member_add_held(g, held, fm->incarnation) == NONE)
            return shoal_error_set(SHOAL_ERR_NOMEM, "gossip: node '%s': preloading member %u of %u",
                                   g->cfg.self.id, k, from->st->n_slots);
    }
    preload_done(g);
    return 0;
}

/* The fast path of gossip_preload_all(): false when its conditions do not hold. */
static bool preload_into_base(gossip *const *gs, size_t n, const gossip *from)
{
    gossip_member_store *st = from->st;
    if (!st->share || st->n_base || st->n_views != n + 1)
        return false;
    uint64_t now = now_us(from);
    for (size_t i = 0; i < n; i++) {
        const gossip *g = gs[i];
        if (g->st != st || now_us(g) != now || g->cfg.self.block_size != from->cfg.self.block_size ||
            g->cfg.self.proto_version != from->cfg.self.proto_version)
            return false;
        /* Every view knows only what its own entries hold (the base is empty), and nothing twice. */
        for (size_t j = 0; j < i; j++)
            if (gs[j] == g)
                return false;
    }
    /* The base gets what every preloaded view gains: from's live members, alive, as of now. */
    gossip *w = (gossip *)from; /* only its private entries are compared and dropped below */
    uint64_t sum = 0;
    for (uint32_t s = 0; s < st->n_slots; s++) {
        const member *fm = mem(from, s);
        if (!present(fm) || !is_live(fm->state))
            continue;
        member *b = gossip_base_at(st, s);
        *b = (member){.meta = meta_ref(w, fm->meta),
                      .incarnation = fm->incarnation,
                      .state_at = now,
                      .accuser = NONE,
                      .bc_prev = NONE,
                      .bc_next = NONE,
                      .susp = NONE,
                      .state = GOSSIP_ALIVE};
        b->h = member_hash(from, s, b);
        sum += b->h;
        st->n_base++;
    }
    /* Every view keeps what it held (its own entries, which now differ from the base or equal it)
     * and reads the rest from the base; entries equal to the base (and idle) are dropped. */
    for (size_t i = 0; i <= n; i++) {
        gossip *g = i < n ? gs[i] : w;
        uint32_t known = 0;
        uint64_t known_sum = 0;
        gossip_view *v = &g->dv;
        for (uint32_t j = 0; j < v->cap; j++) {
            uint32_t s = v->keys[j];
            if (s == NONE || !present(gossip_base_at(st, s)) || !present(v->vals[j]))
                continue;
            known++;
            known_sum += gossip_base_at(st, s)->h;
        }
        for (uint32_t j = 0; j < v->cap;) {
            uint32_t s = v->keys[j];
            member *d = s != NONE ? v->vals[j] : NULL;
            const member *b = d ? gossip_base_at(st, s) : NULL;
            /* Dropped: an entry equal to the base, or an ABSENT one the preload fills. */
            if (d && present(b) && ((gossip_fields_eq(d, b) && gossip_idle(d)) || !present(d))) {
                gossip_view_del(st, v, s); /* the shift may move another entry into j: look at j again */
                continue;
            }
            j++;
        }
        if (g == w)
            continue;
        uint32_t added = (uint32_t)st->n_base - known;
        g->n_members += added;
        g->changes++;
        g->n_live += added;
        g->digest += sum - known_sum;
        preload_done(g);
    }
    return true;
}

int gossip_preload_all(gossip *const *gs, size_t n, const gossip *from)
{
    for (size_t i = 0; i < n; i++)
        if (gs[i] == from)
            return shoal_error_set(SHOAL_ERR_INVAL, "gossip: preload_all: node '%s' preloads from itself",
                                   from->cfg.self.id);
    if (preload_into_base(gs, n, from))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (gossip_preload(gs[i], from) < 0)
            return -1;
    return 0;
}

bool gossip_joined(const gossip *g) { return g->joined; }
bool gossip_refused(const gossip *g) { return g->refused; }

void gossip_leave(gossip *g)
{
    SHOAL_ASSERT(!g->in_callback); /* callbacks must not call back into the instance */
    if (g->leaving)
        return;
    g->leaving = true;
    g->joining = false;
    g->probe.active = false;
    untouch(g, g->self);
    set_state(g, g->self, GOSSIP_LEFT);
    touch(g, g->self);
    bc_queue(g, g->self);
    LOG_INFO("gossip", "leave", "node=%s incarnation=%llu", g->cfg.self.id,
             (unsigned long long)mem(g, g->self)->incarnation);
    uint32_t to[16];
    uint32_t k = g->cfg.gossip_nodes < 16 ? g->cfg.gossip_nodes : 16;
    uint32_t n = pick_random(g, NONE, k, false, to);
    for (uint32_t j = 0; j < n; j++) {
        tx_reset(g, GOSSIP_MSG_GOSSIP);
        send_msg(g, &mem(g, to[j])->meta->addr, true, g->self);
    }
    arm(g);
}

int gossip_forget(gossip *g, const char *id)
{
    SHOAL_ASSERT(!g->in_callback); /* callbacks must not call back into the instance */
    uint32_t i = find(g, id);
    if (i == NONE)
        return shoal_error_set(SHOAL_ERR_NOT_FOUND, "node '%s' has no member '%s'", g->cfg.self.id, id);
    const member *m = mem(g, i);
    if (i == g->self)
        return shoal_error_set(SHOAL_ERR_INVAL, "'%s' is this node itself: only a dead or left member can be forgotten",
                               id);
    if (is_live(m->state))
        return shoal_error_set(SHOAL_ERR_INVAL, "member '%s' is %s: only a dead or left member can be forgotten", id,
                               gossip_state_name(m->state));
    uint64_t now = now_us(g);
    forgotten_holds(g, id, UINT64_MAX); /* drops an older record of the same id */
    forgotten *f = &g->forgotten[0];
    if (g->n_forgotten < FORGOTTEN_MAX)
        f = &g->forgotten[g->n_forgotten++];
    else /* full: the oldest record makes room */
        for (uint32_t j = 1; j < FORGOTTEN_MAX; j++)
            if (g->forgotten[j].at < f->at)
                f = &g->forgotten[j];
    snprintf(f->id, sizeof f->id, "%s", id);
    f->incarnation = m->incarnation;
    f->at = now;
    LOG_INFO("gossip", "forget", "node=%s member=%s state=%s incarnation=%llu", g->cfg.self.id, id,
             gossip_state_name(m->state), (unsigned long long)m->incarnation);
    reap(g, now, i);
    arm(g);
    return 0;
}

int gossip_set_meta(gossip *g, const gossip_meta *meta)
{
    SHOAL_ASSERT(!g->in_callback); /* callbacks must not call back into the instance */
    if (check_meta(meta) < 0)
        return -1;
    if (strcmp(meta->id, g->cfg.self.id) != 0)
        return shoal_error_set(SHOAL_ERR_INVAL, "gossip: node '%s' cannot change its id to '%s'",
                               g->cfg.self.id, meta->id);
    gossip_meta m = *meta; /* the published cache use stays as gossip_set_cache_used left it */
    m.cache_used = g->cfg.self.cache_used;
    m.cache_used_known = g->cfg.self.cache_used_known;
    untouch(g, g->self);
    if (!meta_set(g, g->self, &m)) {
        touch(g, g->self);
        return shoal_error_set(SHOAL_ERR_NOMEM, "gossip: node '%s': new metadata", meta->id);
    }
    g->cfg.self = m;
    mem_w(g, g->self)->incarnation++;
    touch(g, g->self);
    g->version++;
    bc_queue(g, g->self);
    arm(g);
    return 0;
}

void gossip_set_cache_used(gossip *g, uint64_t used)
{
    SHOAL_ASSERT(!g->in_callback); /* callbacks must not call back into the instance */
    gossip_meta meta = g->cfg.self;
    meta.cache_used = used;
    meta.cache_used_known = true;
    untouch(g, g->self);
    if (!meta_set(g, g->self, &meta)) {
        touch(g, g->self);
        return; /* out of memory: the figure is informational, the next call tries again */
    }
    g->cfg.self = meta;
    mem_w(g, g->self)->incarnation++;
    touch(g, g->self);
    bc_queue(g, g->self);
    arm(g);
}

size_t gossip_member_count(const gossip *g) { return g->n_members; }

int gossip_member_at(const gossip *g, size_t i, gossip_member_info *out)
{
    if (i >= g->n_members)
        return shoal_error_set(SHOAL_ERR_RANGE, "gossip: member %zu of %u", i, g->n_members);
    /* Members are numbered in slot order; a cursor makes a walk from 0 to count linear. */
    gossip *w = (gossip *)g;
    if (i < g->at_i || g->at_changes != g->changes || !present(mem(g, g->at_slot))) {
        w->at_changes = g->changes;
        w->at_i = 0;
        w->at_slot = 0;
        while (!present(mem(g, w->at_slot)))
            w->at_slot++;
    }
    while (w->at_i < i) {
        w->at_slot++;
        while (!present(mem(g, w->at_slot)))
            w->at_slot++;
        w->at_i++;
    }
    member_info(g, w->at_slot, out);
    return 0;
}

bool gossip_member_find(const gossip *g, const char *id, gossip_member_info *out)
{
    uint32_t i = find(g, id);
    if (i == NONE)
        return false;
    member_info(g, i, out);
    return true;
}

size_t gossip_live_count(const gossip *g) { return g->n_live; }
uint64_t gossip_version(const gossip *g) { return g->version; }
uint64_t gossip_incarnation(const gossip *g) { return mem(g, g->self)->incarnation; }
uint32_t gossip_awareness(const gossip *g) { return g->awareness; }
const gossip_counters *gossip_counters_get(const gossip *g) { return &g->ctr; }
uint64_t gossip_state_digest(const gossip *g) { return g->digest; }

void gossip_sim_set_tap(gossip *g, gossip_sim_event_fn fn, void *ud)
{
    g->tap = fn;
    g->tap_ud = ud;
}

int gossip_self_check(const gossip *g)
{
    uint64_t digest = 0;
    uint32_t n = 0, live = 0, gone = 0;
    for (uint32_t s = 0; s < g->st->n_slots; s++) {
        const member *m = mem(g, s);
        if (!present(m))
            continue;
        if (m->h != member_hash(g, s, m))
            return shoal_error_set(SHOAL_ERR_GOSSIP, "gossip: node '%s': stale hash of member '%s'",
                                   g->cfg.self.id, st_id(g->st, s));
        digest += m->h + salt_of(g, m);
        n++;
        live += is_live(m->state);
        gone += !is_live(m->state);
    }
    if (digest != g->digest || n != g->n_members || live != g->n_live || gone != g->n_gone)
        return shoal_error_set(SHOAL_ERR_GOSSIP,
                               "gossip: node '%s': digest %llx/%llx members %u/%u live %u/%u gone %u/%u",
                               g->cfg.self.id, (unsigned long long)digest, (unsigned long long)g->digest, n,
                               g->n_members, live, g->n_live, gone, g->n_gone);
    return 0;
}
