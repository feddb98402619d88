/*
 * sim_world: a virtual-time world for protocol cores (Tarantool's fakeev + fakenet, as an
 * instance rather than globals). One world holds a virtual clock, an event queue, a simulated
 * datagram network and any number of nodes; each node gets its own shoal_env (clock, seeded
 * random, wakeup timer, send) so N real gossip instances run in one process, deterministically:
 * the same seed and the same calls give the same run, event for event.
 *
 * Faults are first-class: loss on every link or on one node's traffic, delay, a cut between two
 * nodes, partitions into groups, a blocked node (its packets vanish and its timers are frozen until
 * unblocked), and failing the next N sends of a node.
 *
 * Not thread-safe: one world is driven by one thread.
 */
#ifndef SHOAL_SIM_WORLD_H
#define SHOAL_SIM_WORLD_H

#include "shoal_env.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest datagram the simulated network carries; a larger send fails with SHOAL_ERR_RANGE. */
#define SIM_DATAGRAM_MAX 1500

typedef struct sim_world sim_world;

/* What a node does with the world's events. */
typedef struct sim_node_ops {
    void (*receive)(void *ud, const shoal_addr *from, const void *data, size_t len);
    void (*wakeup)(void *ud); /* the time asked with env->wakeup_at has come */
} sim_node_ops;

/* A world with its clock at 0 and randomness from `seed`. NULL with SHOAL_ERR_NOMEM. */
sim_world *sim_world_new(uint64_t seed);
/* Frees the world and every packet in flight; does not touch the nodes' user data. Accepts NULL. */
void sim_world_delete(sim_world *w);

/* The virtual clock (microseconds since the world began) and the seed it was made with. */
uint64_t sim_world_now(const sim_world *w);
uint64_t sim_world_seed(const sim_world *w);

/* Adds a node listening at `addr` (unique in the world). ops/ud receive its events (ops borrowed,
 * may be NULL: packets to it vanish). Returns the node's number (0, 1, ...) or -1 (NOMEM, INVAL
 * when the address is taken). */
int sim_world_add_node(sim_world *w, const shoal_addr *addr, const sim_node_ops *ops, void *ud);
/* Replaces a node's handlers (a restart) and forgets its pending wakeup. */
void sim_world_set_handler(sim_world *w, int node, const sim_node_ops *ops, void *ud);
/* The node's environment, valid as long as the world. */
const shoal_env *sim_world_env(sim_world *w, int node);
/* The node's address, and the number of nodes ever added. */
const shoal_addr *sim_world_addr(const sim_world *w, int node);
size_t sim_world_node_count(const sim_world *w);

/* One-way delay of every packet: uniform in [min_us, max_us] (default 1000-2000 us). */
void sim_world_set_latency(sim_world *w, uint64_t min_us, uint64_t max_us);
/* One-way delay lognormal instead: median `median_us`, sigma in log space (capped at 1000 x the
 * median). It draws from the same random number per packet as the uniform delay, so loss and
 * partitions fall on the same packets whichever delay is chosen. */
void sim_world_set_latency_lognormal(sim_world *w, uint64_t median_us, double sigma);
/* Probability that any packet is lost (default 0). */
void sim_world_set_loss(sim_world *w, double p);
/* Probability that a packet from or to `node` is lost, on top of the world's loss. */
void sim_world_set_node_loss(sim_world *w, int node, double p);
/* Extra one-way delay for packets from `node`. */
void sim_world_set_node_delay(sim_world *w, int node, uint64_t extra_us);
/* Cuts (or restores) the link between a and b in both directions. */
void sim_world_cut(sim_world *w, int a, int b, bool cut);
/* Puts a node in a partition group: packets cross only between nodes of one group (all start in 0). */
void sim_world_set_group(sim_world *w, int node, uint32_t group);
/* Blocks a node: its packets in and out vanish and its wakeups wait until it is unblocked. */
void sim_world_block(sim_world *w, int node, bool blocked);
/* The node's next n sends fail locally (env->send returns -1 with SHOAL_ERR_IO). */
void sim_world_fail_sends(sim_world *w, int node, uint32_t n);

/* Calls tap(ud, from, to, data, len) for every datagram a node sends, before any fault applies
 * (a capture point, for tests that replay or inspect traffic). NULL removes it. */
typedef void (*sim_tap_fn)(void *ud, int from, const shoal_addr *to, const void *data, size_t len);
void sim_world_set_tap(sim_world *w, sim_tap_fn tap, void *ud);
/* Delivers `data` to node `to` now, as if node `from` had sent it (a replay or a forged packet).
 * -1 with SHOAL_ERR_RANGE when it is larger than SIM_DATAGRAM_MAX. */
int sim_world_inject(sim_world *w, int from, int to, const void *data, size_t len);

/* Runs the next event; false when the queue is empty. */
bool sim_world_step(sim_world *w);
/* Runs every event up to time t (inclusive) and leaves the clock at t. */
void sim_world_run_until(sim_world *w, uint64_t t);
void sim_world_run_for(sim_world *w, uint64_t dt_us);
/* Runs until cond(ud) holds, checking every check_us of virtual time, for at most limit_us.
 * Returns true when the condition held (the clock is then at the first check where it did). */
bool sim_world_run_until_cond(sim_world *w, uint64_t limit_us, uint64_t check_us,
                              bool (*cond)(void *ud), void *ud);

/* Datagrams sent, delivered and dropped (by any fault), and events run, since the world began. */
typedef struct sim_world_stats {
    uint64_t sent, delivered, dropped, events;
} sim_world_stats;
sim_world_stats sim_world_get_stats(const sim_world *w);
/* Datagrams sent by one node so far (for per-member load figures). */
uint64_t sim_world_node_sent(const sim_world *w, int node);

/* splitmix64: the world's generator, exported for simulators that want the same streams. */
uint64_t sim_splitmix64(uint64_t *state);

#endif
