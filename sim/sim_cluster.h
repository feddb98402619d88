/*
 * sim_cluster: N real gossip instances in one sim_world (Tarantool's swim_test_utils, as an
 * instance). Node i is "n<i>" at 10.<i>:7400 unless the caller gives its own identity. Nodes can be
 * killed (the instance is freed: a crash), restarted with a higher incarnation at the same address,
 * and queried for what every running member believes about another. All instances share one
 * metadata pool, so a member's metadata is stored once, not once per observer, and one member store,
 * so what every view agrees on is stored once (docs/gossip.md, "Member store").
 */
#ifndef SHOAL_SIM_CLUSTER_H
#define SHOAL_SIM_CLUSTER_H

#include "gossip_sim.h"
#include "sim_world.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sim_cluster sim_cluster;

/* Fills `c` with gossip_config_defaults() plus what a simulated node needs: a fixed cluster key
 * (every byte 0x5a), 4 MiB blocks, protocol version 1, zone "zone-a", serving, 64 GiB capacity. */
void sim_cluster_base_config(gossip_config *c);

/*
 * A cluster in a new world seeded with `seed`. `base` (copied) gives every node's parameters, key,
 * block size and protocol version; its self.id and self.addr are replaced per node. NULL on NOMEM.
 */
sim_cluster *sim_cluster_new(uint64_t seed, const gossip_config *base);
/* Where the instances keep their views. */
typedef enum sim_views {
    SIM_VIEWS_SHARED, /* one shared member store: a base table plus what each view holds apart */
    SIM_VIEWS_APART,  /* one store that never shares: the reference SHARED is checked against */
    SIM_VIEWS_OWN,    /* no store: each instance its own private table, as in the daemon */
} sim_views;
/* sim_cluster_new() is SIM_VIEWS_SHARED. */
sim_cluster *sim_cluster_new_views(uint64_t seed, const gossip_config *base, sim_views views);
/* Frees every instance and the world. Accepts NULL. */
void sim_cluster_delete(sim_cluster *c);

/* The cluster's world (owned by the cluster), and the number of nodes ever added. */
sim_world *sim_cluster_world(sim_cluster *c);
size_t sim_cluster_size(const sim_cluster *c);

/* Adds node number sim_cluster_size(c) with `cfg` (NULL: the base config with id "n<i>" and address
 * 10.x.y.z:7400 from its number). Returns its number or -1 with the gossip_new error. */
int sim_cluster_add(sim_cluster *c, const gossip_config *cfg);
/* Adds n nodes and has each join through node `seed` (node `seed` itself does not join). */
int sim_cluster_add_joined(sim_cluster *c, size_t n, int seed);
/* The instance of node i, NULL while it is killed. */
gossip *sim_cluster_node(sim_cluster *c, int i);
/* Node i's id, also while it is killed. */
const char *sim_cluster_id(const sim_cluster *c, int i);
/* Node i joins through node `seed`. */
int sim_cluster_join(sim_cluster *c, int i, int seed);
/* Gives every running node the full membership at once (gossip_preload): a converged cluster
 * without the cost of n joins, for large simulations. -1 with SHOAL_ERR_NOMEM. */
int sim_cluster_preload(sim_cluster *c);
/* Moves entries every view holds alike into the shared base (gossip_member_store_fold): changes
 * nothing any node does, only memory. Returns entries folded. */
size_t sim_cluster_fold(sim_cluster *c);
/* Entries in the shared base, and entries views hold apart. */
void sim_cluster_view_stats(const sim_cluster *c, size_t *base, size_t *private_entries);
/* Every instance, running and started later, reports what it sends to fn (gossip_sim_set_tap). */
void sim_cluster_set_tap(sim_cluster *c, gossip_sim_event_fn fn, void *ud);
/* Frees node i's instance without a word (a crash); its address stays and swallows packets. */
void sim_cluster_kill(sim_cluster *c, int i);
/* Starts node i again with incarnation `inc` and the same identity, and joins through `seed`. */
int sim_cluster_restart(sim_cluster *c, int i, uint64_t inc, int seed);

/* Number of running nodes (other than `about` itself) that see node `about` in `state`. */
size_t sim_cluster_count_seeing(const sim_cluster *c, int about, gossip_state state);
/* Number of running nodes. */
size_t sim_cluster_running(const sim_cluster *c);
/* True when every running node sees every running node alive and nothing else live. */
bool sim_cluster_converged(const sim_cluster *c);

#endif
