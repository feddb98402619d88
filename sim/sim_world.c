/*
 * The virtual world: a binary min-heap of events ordered by (time, sequence number), so two events
 * at the same instant always run in the order they were scheduled and a seed fixes the whole run.
 *
 * Two kinds of events exist: a packet delivery and a node's wakeup. A node keeps only its latest
 * wakeup time; re-arming pushes a new heap entry and the older one is recognised as stale when it
 * surfaces (its time no longer matches), which is cheaper than deleting from the middle of a heap.
 *
 * Packets are fixed-size buffers recycled through a free list, so a long run does not call malloc
 * per datagram. Node addresses are found through an open-addressing hash table. Every random choice
 * of the network (loss, delay) comes from the world's own splitmix64 stream; every node's env has
 * its own stream derived from the seed and its number, so adding a fault does not shift the random
 * numbers the protocol instances see.
 *
 * The per-event cost is O(log events); nothing in the world is O(nodes) per event, which is what
 * lets shoal-sim run ten thousand gossip instances.
 */
#include "sim_world.h"
#include "shoal_array.h"
#include "shoal_error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NO_NODE UINT32_MAX

typedef struct sim_packet {
    struct sim_packet *next_free;
    uint32_t from;
    uint32_t len;
    uint8_t data[SIM_DATAGRAM_MAX];
} sim_packet;

typedef struct sim_event {
    uint64_t at;
    uint64_t seq;
    uint32_t node;
    sim_packet *pkt; /* NULL: a wakeup */
} sim_event;

typedef struct sim_node {
    shoal_addr addr;
    const sim_node_ops *ops;
    void *ud;
    shoal_env env;
    struct sim_world *w;
    uint32_t index;
    uint64_t rng;
    uint64_t wake_at;
    bool wake_armed;
    bool blocked;
    uint32_t group;
    uint32_t fail_sends;
    double loss;
    uint64_t extra_delay;
    uint64_t sent;
} sim_node;

struct sim_world {
    uint64_t seed, rng, now, seq;
    sim_event *heap;
    size_t n_heap, cap_heap;
    sim_node **nodes;
    size_t n_nodes, cap_nodes;
    uint32_t *addr_ix; /* node index + 1, 0 = empty */
    size_t addr_cap;
    sim_packet *free_pkts;
    uint64_t lat_min, lat_max;
    double lat_sigma; /* > 0: lognormal delays of median lat_min */
    double loss;
    uint64_t *cuts; /* pairs (lo << 32 | hi) */
    size_t n_cuts, cap_cuts;
    sim_world_stats stats;
    sim_tap_fn tap;
    void *tap_ud;
};

uint64_t sim_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unit(uint64_t *rng) { return (double)(sim_splitmix64(rng) >> 11) * 0x1.0p-53; }

/* ---- heap ---- */

static bool ev_less(const sim_event *a, const sim_event *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

/* The standard normal quantile of u in (0, 1) (Acklam's rational approximation, relative error
 * below 1.2e-9), so one uniform draw gives one normal one. */
static double normal_quantile(double u)
{
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                               1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                               6.680131188771972e+01, -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                               -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    if (u < 1e-12)
        u = 1e-12;
    if (u > 1 - 1e-12)
        u = 1 - 1e-12;
    if (u < 0.02425 || u > 1 - 0.02425) {
        double q = sqrt(-2 * log(u < 0.5 ? u : 1 - u));
        double x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
                   ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
        return u < 0.5 ? x : -x;
    }
    double q = u - 0.5, r = q * q;
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

/* A lognormal delay from the packet's uniform draw r. */
static uint64_t lognormal_us(const sim_world *w, double r)
{
    double f = exp(w->lat_sigma * normal_quantile(r));
    if (f > 1000)
        f = 1000;
    return (uint64_t)((double)w->lat_min * f);
}

static int heap_push(sim_world *w, uint64_t at, uint32_t node, sim_packet *pkt)
{
    if (SHOAL_ARRAY_GROW(w->heap, w->n_heap, w->cap_heap) < 0)
        return shoal_error_wrap("sim: event queue of %zu events", w->n_heap + 1);
    sim_event e = {.at = at, .seq = w->seq++, .node = node, .pkt = pkt};
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_less(&e, &w->heap[p]))
            break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = e;
    return 0;
}

static sim_event heap_pop(sim_world *w)
{
    sim_event top = w->heap[0];
    sim_event last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && ev_less(&w->heap[c + 1], &w->heap[c]))
            c++;
        if (!ev_less(&w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0)
        w->heap[i] = last;
    return top;
}

/* ---- addresses ---- */

static uint64_t addr_hash(const shoal_addr *a)
{
    uint64_t h = 1469598103934665603ull;
    size_t iplen = a->family == 6 ? 16 : 4;
    for (size_t i = 0; i < iplen; i++)
        h = (h ^ a->ip[i]) * 1099511628211ull;
    h = (h ^ a->port) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint32_t addr_find(const sim_world *w, const shoal_addr *a)
{
    if (!w->addr_cap)
        return NO_NODE;
    size_t mask = w->addr_cap - 1;
    for (size_t s = addr_hash(a) & mask;; s = (s + 1) & mask) {
        uint32_t v = w->addr_ix[s];
        if (!v)
            return NO_NODE;
        if (shoal_addr_eq(&w->nodes[v - 1]->addr, a))
            return v - 1;
    }
}

static int addr_rehash(sim_world *w, size_t cap)
{
    uint32_t *ix = calloc(cap, sizeof *ix);
    if (!ix)
        return shoal_error_set(SHOAL_ERR_NOMEM, "sim: address table of %zu slots", cap);
    free(w->addr_ix);
    w->addr_ix = ix;
    w->addr_cap = cap;
    for (size_t i = 0; i < w->n_nodes; i++) {
        size_t s = addr_hash(&w->nodes[i]->addr) & (cap - 1);
        while (ix[s])
            s = (s + 1) & (cap - 1);
        ix[s] = (uint32_t)i + 1;
    }
    return 0;
}

/* ---- the env of each node ---- */

static uint64_t env_now(void *ctx) { return ((sim_node *)ctx)->w->now; }

static uint64_t env_random(void *ctx) { return sim_splitmix64(&((sim_node *)ctx)->rng); }

static void env_wakeup_at(void *ctx, uint64_t at)
{
    sim_node *n = ctx;
    if (n->wake_armed && n->wake_at == at)
        return;
    n->wake_at = at;
    n->wake_armed = true;
    if (at < n->w->now)
        at = n->w->now;
    heap_push(n->w, at, n->index, NULL);
}

static bool link_cut(const sim_world *w, uint32_t a, uint32_t b)
{
    uint64_t key = a < b ? (uint64_t)a << 32 | b : (uint64_t)b << 32 | a;
    for (size_t i = 0; i < w->n_cuts; i++)
        if (w->cuts[i] == key)
            return true;
    return false;
}

static int env_send(void *ctx, const shoal_addr *to, const void *data, size_t len)
{
    sim_node *n = ctx;
    sim_world *w = n->w;
    if (n->fail_sends > 0) {
        n->fail_sends--;
        return shoal_error_set(SHOAL_ERR_IO, "sim: injected send failure at node %u", n->index);
    }
    if (len > SIM_DATAGRAM_MAX)
        return shoal_error_set(SHOAL_ERR_RANGE, "sim: datagram of %zu bytes exceeds %d", len, SIM_DATAGRAM_MAX);
    w->stats.sent++;
    n->sent++;
    if (w->tap)
        w->tap(w->tap_ud, (int)n->index, to, data, len);
    uint32_t dst = addr_find(w, to);
    if (dst == NO_NODE || n->blocked) {
        w->stats.dropped++;
        return 0;
    }
    sim_node *d = w->nodes[dst];
    double loss = w->loss;
    if (d->blocked || d->group != n->group || (w->n_cuts && link_cut(w, n->index, dst))) {
        w->stats.dropped++;
        return 0;
    }
    /* Every packet draws the same random numbers whatever the fault settings. */
    double r1 = unit(&w->rng), r2 = unit(&w->rng), r3 = unit(&w->rng);
    uint64_t delay = (w->lat_sigma > 0 ? lognormal_us(w, r3)
                                        : w->lat_min + (uint64_t)(r3 * (double)(w->lat_max - w->lat_min))) +
                     n->extra_delay;
    if (r1 < loss || r2 < n->loss || r2 < d->loss) {
        w->stats.dropped++;
        return 0;
    }
    sim_packet *p = w->free_pkts;
    if (p) {
        w->free_pkts = p->next_free;
    } else {
        p = malloc(sizeof *p);
        if (!p)
            return shoal_error_set(SHOAL_ERR_NOMEM, "sim: packet buffer");
    }
    p->from = n->index;
    p->len = (uint32_t)len;
    memcpy(p->data, data, len);
    if (heap_push(w, w->now + delay, dst, p) < 0) {
        p->next_free = w->free_pkts;
        w->free_pkts = p;
        return -1;
    }
    return 0;
}

static const shoal_env_vtab sim_env_vtab = {
    .now = env_now,
    .random = env_random,
    .wakeup_at = env_wakeup_at,
    .send = env_send,
};

/* ---- world ---- */

sim_world *sim_world_new(uint64_t seed)
{
    sim_world *w = calloc(1, sizeof *w);
    if (!w) {
        shoal_error_set(SHOAL_ERR_NOMEM, "sim: new world");
        return NULL;
    }
    w->seed = seed;
    w->rng = seed ^ 0x5851f42d4c957f2dull;
    w->lat_min = 1000;
    w->lat_max = 2000;
    return w;
}

void sim_world_delete(sim_world *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_heap; i++)
        free(w->heap[i].pkt);
    for (sim_packet *p = w->free_pkts, *next; p; p = next) {
        next = p->next_free;
        free(p);
    }
    for (size_t i = 0; i < w->n_nodes; i++)
        free(w->nodes[i]);
    free(w->nodes);
    free(w->heap);
    free(w->addr_ix);
    free(w->cuts);
    free(w);
}

uint64_t sim_world_now(const sim_world *w) { return w->now; }
uint64_t sim_world_seed(const sim_world *w) { return w->seed; }
size_t sim_world_node_count(const sim_world *w) { return w->n_nodes; }

int sim_world_add_node(sim_world *w, const shoal_addr *addr, const sim_node_ops *ops, void *ud)
{
    char a[SHOAL_ADDR_STRLEN];
    if (addr_find(w, addr) != NO_NODE)
        return shoal_error_set(SHOAL_ERR_INVAL, "sim: address %s already has a node", shoal_addr_format(addr, a));
    if (SHOAL_ARRAY_GROW(w->nodes, w->n_nodes, w->cap_nodes) < 0)
        return shoal_error_wrap("sim: node table of %zu", w->n_nodes + 1);
    sim_node *n = calloc(1, sizeof *n);
    if (!n)
        return shoal_error_set(SHOAL_ERR_NOMEM, "sim: node %zu", w->n_nodes);
    n->addr = *addr;
    n->ops = ops;
    n->ud = ud;
    n->w = w;
    n->index = (uint32_t)w->n_nodes;
    n->rng = w->seed * 0x9e3779b97f4a7c15ull + n->index + 1;
    sim_splitmix64(&n->rng);
    n->env.vt = &sim_env_vtab;
    n->env.ctx = n;
    w->nodes[w->n_nodes++] = n;
    if (w->n_nodes * 2 > w->addr_cap) {
        if (addr_rehash(w, w->addr_cap ? w->addr_cap * 2 : 128) < 0) {
            w->n_nodes--;
            free(n);
            return -1;
        }
    } else {
        size_t s = addr_hash(addr) & (w->addr_cap - 1);
        while (w->addr_ix[s])
            s = (s + 1) & (w->addr_cap - 1);
        w->addr_ix[s] = n->index + 1;
    }
    return (int)n->index;
}

void sim_world_set_handler(sim_world *w, int node, const sim_node_ops *ops, void *ud)
{
    sim_node *n = w->nodes[node];
    n->ops = ops;
    n->ud = ud;
    n->wake_armed = false;
}

const shoal_env *sim_world_env(sim_world *w, int node) { return &w->nodes[node]->env; }
const shoal_addr *sim_world_addr(const sim_world *w, int node) { return &w->nodes[node]->addr; }

void sim_world_set_latency(sim_world *w, uint64_t min_us, uint64_t max_us)
{
    w->lat_min = min_us;
    w->lat_max = max_us < min_us ? min_us : max_us;
    w->lat_sigma = 0;
}

void sim_world_set_latency_lognormal(sim_world *w, uint64_t median_us, double sigma)
{
    w->lat_min = w->lat_max = median_us;
    w->lat_sigma = sigma > 0 ? sigma : 0;
}

void sim_world_set_loss(sim_world *w, double p) { w->loss = p; }
void sim_world_set_node_loss(sim_world *w, int node, double p) { w->nodes[node]->loss = p; }
void sim_world_set_node_delay(sim_world *w, int node, uint64_t extra_us) { w->nodes[node]->extra_delay = extra_us; }
void sim_world_set_group(sim_world *w, int node, uint32_t group) { w->nodes[node]->group = group; }
void sim_world_fail_sends(sim_world *w, int node, uint32_t n) { w->nodes[node]->fail_sends = n; }

void sim_world_cut(sim_world *w, int a, int b, bool cut)
{
    uint32_t x = (uint32_t)a, y = (uint32_t)b;
    uint64_t key = x < y ? (uint64_t)x << 32 | y : (uint64_t)y << 32 | x;
    for (size_t i = 0; i < w->n_cuts; i++) {
        if (w->cuts[i] == key) {
            if (!cut)
                w->cuts[i] = w->cuts[--w->n_cuts];
            return;
        }
    }
    if (!cut)
        return;
    if (SHOAL_ARRAY_GROW(w->cuts, w->n_cuts, w->cap_cuts) < 0)
        return;
    w->cuts[w->n_cuts++] = key;
}

void sim_world_block(sim_world *w, int node, bool blocked)
{
    sim_node *n = w->nodes[node];
    bool was = n->blocked;
    n->blocked = blocked;
    /* A frozen node's wakeup fires late, once it thaws. */
    if (was && !blocked && n->wake_armed)
        heap_push(w, n->wake_at < w->now ? w->now : n->wake_at, n->index, NULL);
}

void sim_world_set_tap(sim_world *w, sim_tap_fn tap, void *ud)
{
    w->tap = tap;
    w->tap_ud = ud;
}

int sim_world_inject(sim_world *w, int from, int to, const void *data, size_t len)
{
    if (len > SIM_DATAGRAM_MAX)
        return shoal_error_set(SHOAL_ERR_RANGE, "sim: injected datagram of %zu bytes", len);
    sim_node *d = w->nodes[to];
    if (d->ops && d->ops->receive)
        d->ops->receive(d->ud, &w->nodes[from]->addr, data, len);
    return 0;
}

bool sim_world_step(sim_world *w)
{
    if (w->n_heap == 0)
        return false;
    sim_event e = heap_pop(w);
    w->now = e.at;
    w->stats.events++;
    sim_node *n = w->nodes[e.node];
    if (e.pkt) {
        sim_packet *p = e.pkt;
        if (!n->blocked && n->ops && n->ops->receive) {
            w->stats.delivered++;
            n->ops->receive(n->ud, &w->nodes[p->from]->addr, p->data, p->len);
        } else {
            w->stats.dropped++;
        }
        p->next_free = w->free_pkts;
        w->free_pkts = p;
        return true;
    }
    /* A wakeup: stale when the node re-armed for another time, or frozen. */
    if (!n->wake_armed || n->blocked || (e.at != n->wake_at && !(n->wake_at < e.at)))
        return true;
    n->wake_armed = false;
    if (n->ops && n->ops->wakeup)
        n->ops->wakeup(n->ud);
    return true;
}

void sim_world_run_until(sim_world *w, uint64_t t)
{
    while (w->n_heap > 0 && w->heap[0].at <= t)
        sim_world_step(w);
    if (w->now < t)
        w->now = t;
}

void sim_world_run_for(sim_world *w, uint64_t dt_us) { sim_world_run_until(w, w->now + dt_us); }

bool sim_world_run_until_cond(sim_world *w, uint64_t limit_us, uint64_t check_us,
                              bool (*cond)(void *ud), void *ud)
{
    uint64_t end = w->now + limit_us;
    if (cond(ud))
        return true;
    while (w->now < end) {
        uint64_t next = w->now + check_us;
        sim_world_run_until(w, next < end ? next : end);
        if (cond(ud))
            return true;
    }
    return false;
}

sim_world_stats sim_world_get_stats(const sim_world *w) { return w->stats; }
uint64_t sim_world_node_sent(const sim_world *w, int node) { return w->nodes[node]->sent; }
