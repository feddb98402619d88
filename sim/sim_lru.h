/*
 * sim_lru: a byte-bounded least-recently-used set of block numbers, the model of one node's cache.
 * Caller-owned (sim_lru_create/sim_lru_destroy): the simulator embeds one or two per node.
 * Entries live in a growable pool with a free list and a chained hash index, so a touch, an insert
 * and an eviction are O(1) and memory follows the number of blocks actually cached.
 */
#ifndef SHOAL_SIM_LRU_H
#define SHOAL_SIM_LRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sim_lru_entry {
    uint32_t block, size;
    uint32_t prev, next, hnext;
} sim_lru_entry;

typedef struct sim_lru {
    uint64_t cap_bytes, used_bytes;
    sim_lru_entry *pool;
    uint32_t n_pool, free_head;
    size_t cap_pool;
    uint32_t *buckets; /* entry index + 1; 0 = empty */
    uint32_t n_buckets, count;
    uint32_t mru, lru;
    uint64_t evictions;
    bool no_evict; /* a full cache refuses new blocks instead of evicting (CoorDL's MinIO policy) */
} sim_lru;

/* An empty cache of cap_bytes. Never fails (memory is taken on insert). */
void sim_lru_create(sim_lru *l, uint64_t cap_bytes);
/* Frees the cache's memory. */
void sim_lru_destroy(sim_lru *l);
/* True when `block` is cached; it becomes the most recently used. */
bool sim_lru_touch(sim_lru *l, uint32_t block);
/* Caches `block` of `size` bytes as most recently used, evicting the least recently used blocks
 * until it fits; a block larger than the whole cache is not cached. Returns -1 with
 * SHOAL_ERR_NOMEM when the pool cannot grow, 0 otherwise. */
int sim_lru_insert(sim_lru *l, uint32_t block, uint32_t size);
/* Evicts the least recently used block; false when the cache is empty. */
bool sim_lru_evict(sim_lru *l);

/* Eviction policies (shoal-sim --eviction). */
typedef enum sim_policy { SIM_POLICY_LRU, SIM_POLICY_NO_EVICT } sim_policy;

/*
 * The model of one shoald block store (docs/store.md): owned blocks and near copies (blocks this
 * node read from a peer or from S3 without owning them) share one capacity; near copies may use at
 * most near_percent of it. A near put evicts near copies only, and is refused when the store is
 * full of owned blocks; an owned put evicts near copies first, then owned ones. With
 * SIM_POLICY_NO_EVICT nothing is ever evicted: a put that does not fit is refused.
 */
typedef struct sim_store {
    sim_lru owned, near;
    uint64_t cap, near_cap;
    bool no_evict;
} sim_store;

void sim_store_create(sim_store *s, uint64_t cap, unsigned near_percent, sim_policy policy);
void sim_store_destroy(sim_store *s);
/* True when the block is held, owned or near; it becomes the most recently used of its class. */
bool sim_store_touch(sim_store *s, uint32_t block);
/* Keeps a block (owned, or a near copy). -1 with SHOAL_ERR_NOMEM; a refused put is not an error. */
int sim_store_put(sim_store *s, uint32_t block, uint32_t size, bool near);
/* Bytes held, owned + near. */
uint64_t sim_store_used(const sim_store *s);

#endif
