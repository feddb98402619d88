/*
 * A cluster of real gossip instances over one sim_world. The world calls back into each node
 * through a small ops table; each node's instance lives in the node's slot so a restart swaps the
 * instance and keeps the address, the random stream and the node number.
 */
#include "sim_cluster.h"
#include "shoal_array.h"
#include "shoal_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sim_slot {
    gossip *g;
    gossip_config cfg;
    int node;
} sim_slot;

struct sim_cluster {
    sim_world *w;
    gossip_meta_pool *pool; /* every instance's metadata, stored once */
    gossip_member_store *store; /* every instance's view: a shared base + what each holds apart */
    gossip_config base;
    gossip_sim_event_fn tap;
    void *tap_ud;
    sim_slot **slots;
    size_t n, cap;
};

static void slot_receive(void *ud, const shoal_addr *from, const void *data, size_t len)
{
    sim_slot *s = ud;
    if (s->g)
        gossip_receive(s->g, from, data, len);
}

static void slot_wakeup(void *ud)
{
    sim_slot *s = ud;
    if (s->g)
        gossip_tick(s->g);
}

static const sim_node_ops slot_ops = {.receive = slot_receive, .wakeup = slot_wakeup};

void sim_cluster_base_config(gossip_config *c)
{
    gossip_config_defaults(c);
    memset(c->cluster_key, 0x5a, sizeof c->cluster_key);
    c->self.block_size = 4u << 20;
    c->self.proto_version = 1;
    c->self.capacity = 64ull << 30;
    c->self.serving = true;
    snprintf(c->self.zone, sizeof c->self.zone, "zone-a");
}

sim_cluster *sim_cluster_new(uint64_t seed, const gossip_config *base)
{
    return sim_cluster_new_views(seed, base, SIM_VIEWS_SHARED);
}

sim_cluster *sim_cluster_new_views(uint64_t seed, const gossip_config *base, sim_views views)
{
    sim_cluster *c = calloc(1, sizeof *c);
    if (!c)
        goto fail;
    c->base = *base;
    c->w = sim_world_new(seed);
    if (!c->w)
        goto fail_free;
    c->pool = gossip_meta_pool_new();
    if (!c->pool)
        goto fail_world;
    c->base.meta_pool = c->pool;
    c->store = views == SIM_VIEWS_OWN ? NULL : gossip_member_store_new(views == SIM_VIEWS_SHARED);
    if (!c->store && views != SIM_VIEWS_OWN)
        goto fail_pool;
    c->base.member_store = c->store;
    return c;
fail_pool:
    gossip_meta_pool_delete(c->pool);
fail_world:
    sim_world_delete(c->w);
fail_free:
    free(c);
fail:
    shoal_error_set(SHOAL_ERR_NOMEM, "sim: new cluster");
    return NULL;
}

void sim_cluster_delete(sim_cluster *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        gossip_delete(c->slots[i]->g);
        free(c->slots[i]);
    }
    free(c->slots);
    gossip_member_store_delete(c->store);
    gossip_meta_pool_delete(c->pool);
    sim_world_delete(c->w);
    free(c);
}

sim_world *sim_cluster_world(sim_cluster *c) { return c->w; }
size_t sim_cluster_size(const sim_cluster *c) { return c->n; }
gossip *sim_cluster_node(sim_cluster *c, int i) { return c->slots[i]->g; }
const char *sim_cluster_id(const sim_cluster *c, int i) { return c->slots[i]->cfg.self.id; }

int sim_cluster_add(sim_cluster *c, const gossip_config *cfg)
{
    if (SHOAL_ARRAY_GROW(c->slots, c->n, c->cap) < 0)
        return shoal_error_wrap("sim: cluster of %zu", c->n + 1);
    sim_slot *s = calloc(1, sizeof *s);
    if (!s)
        return shoal_error_set(SHOAL_ERR_NOMEM, "sim: cluster node %zu", c->n);
    uint32_t i = (uint32_t)c->n;
    if (cfg) {
        s->cfg = *cfg;
        s->cfg.meta_pool = c->pool;
        s->cfg.member_store = c->store;
    } else {
        s->cfg = c->base;
        snprintf(s->cfg.self.id, sizeof s->cfg.self.id, "n%u", i);
        s->cfg.self.addr = shoal_addr_ipv4(0x0a000000u + i + 1, 7400);
    }
    s->node = sim_world_add_node(c->w, &s->cfg.self.addr, &slot_ops, s);
    if (s->node < 0)
        goto fail_slot;
    s->g = gossip_new(&s->cfg, sim_world_env(c->w, s->node));
    if (!s->g)
        goto fail_slot;
    gossip_sim_set_tap(s->g, c->tap, c->tap_ud);
    c->slots[c->n++] = s;
    return (int)i;
fail_slot:
    /* The world keeps the node number (it cannot remove nodes); the address swallows packets. */
    if (s->node >= 0)
        sim_world_set_handler(c->w, s->node, NULL, NULL);
    free(s);
    return -1;
}

int sim_cluster_join(sim_cluster *c, int i, int seed)
{
    return gossip_join(c->slots[i]->g, &c->slots[seed]->cfg.self.addr, 1);
}

int sim_cluster_add_joined(sim_cluster *c, size_t n, int seed)
{
    for (size_t k = 0; k < n; k++) {
        int i = sim_cluster_add(c, NULL);
        if (i < 0)
            return -1;
        if (i != seed && sim_cluster_join(c, i, seed) < 0)
            return -1;
    }
    return 0;
}

void sim_cluster_set_tap(sim_cluster *c, gossip_sim_event_fn fn, void *ud)
{
    c->tap = fn;
    c->tap_ud = ud;
    for (size_t i = 0; i < c->n; i++)
        if (c->slots[i]->g)
            gossip_sim_set_tap(c->slots[i]->g, fn, ud);
}

void sim_cluster_kill(sim_cluster *c, int i)
{
    gossip_delete(c->slots[i]->g);
    c->slots[i]->g = NULL;
}

int sim_cluster_restart(sim_cluster *c, int i, uint64_t inc, int seed)
{
    sim_slot *s = c->slots[i];
    gossip_delete(s->g);
    s->g = NULL;
    s->cfg.incarnation = inc;
    sim_world_set_handler(c->w, s->node, &slot_ops, s);
    s->g = gossip_new(&s->cfg, sim_world_env(c->w, s->node));
    if (!s->g)
        return -1;
    gossip_sim_set_tap(s->g, c->tap, c->tap_ud);
    return sim_cluster_join(c, i, seed);
}

int sim_cluster_preload(sim_cluster *c)
{
    /* Node 0 first learns every node from the node itself, then every node copies node 0's view. */
    gossip *hub = NULL;
    for (size_t i = 0; i < c->n && !hub; i++)
        hub = c->slots[i]->g;
    for (size_t i = 0; hub && i < c->n; i++)
        if (c->slots[i]->g && c->slots[i]->g != hub && gossip_preload(hub, c->slots[i]->g) < 0)
            return -1;
    gossip **gs = malloc((c->n ? c->n : 1) * sizeof *gs);
    if (!gs)
        return shoal_error_set(SHOAL_ERR_NOMEM, "sim: preload of %zu nodes", c->n);
    size_t n = 0;
    for (size_t i = 0; hub && i < c->n; i++)
        if (c->slots[i]->g && c->slots[i]->g != hub)
            gs[n++] = c->slots[i]->g;
    int rc = hub ? gossip_preload_all(gs, n, hub) : 0;
    free(gs);
    return rc;
}

size_t sim_cluster_fold(sim_cluster *c) { return c->store ? gossip_member_store_fold(c->store) : 0; }

void sim_cluster_view_stats(const sim_cluster *c, size_t *base, size_t *private_entries)
{
    *base = *private_entries = 0;
    if (c->store)
        gossip_member_store_stats(c->store, base, private_entries);
}

size_t sim_cluster_count_seeing(const sim_cluster *c, int about, gossip_state state)
{
    size_t n = 0;
    const char *id = c->slots[about]->cfg.self.id;
    for (size_t i = 0; i < c->n; i++) {
        gossip_member_info m;
        if ((int)i == about || !c->slots[i]->g)
            continue;
        if (gossip_member_find(c->slots[i]->g, id, &m) && m.state == state)
            n++;
    }
    return n;
}

size_t sim_cluster_running(const sim_cluster *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++)
        n += c->slots[i]->g != NULL;
    return n;
}

bool sim_cluster_converged(const sim_cluster *c)
{
    size_t running = sim_cluster_running(c);
    for (size_t i = 0; i < c->n; i++) {
        gossip *g = c->slots[i]->g;
        if (g && gossip_live_count(g) != running)
            return false;
    }
    for (size_t i = 0; i < c->n; i++) {
        gossip *g = c->slots[i]->g;
        if (!g)
            continue;
        for (size_t j = 0; j < c->n; j++) {
            gossip_member_info m;
            if (c->slots[j]->g && !(gossip_member_find(g, c->slots[j]->cfg.self.id, &m) &&
                                    m.state == GOSSIP_ALIVE))
                return false;
        }
    }
    return true;
}
