/*
 * dht: placement. Which members own a block, computed by every node alone from the same
 * membership view, with no coordination and no master.
 *
 *   dht_id id = dht_block_id("bucket", "key", "\"etag\"", 7);
 *   dht_view *v = dht_view_new(members, n, version);     // copies what it needs
 *   const dht_member *owners[3];
 *   int k = dht_owners(v, id, 3, owners);                // owners[0] is the primary
 *   dht_prefer_zone(owners, k, my_zone);                 // read order, same ownership
 *   dht_view_delete(v);
 *
 * Placement is weighted rendezvous hashing (docs/placement.md): every eligible member draws a
 * score for the block from a hash of (member, block); the best R scores own it, weighted by cache
 * capacity, with replicas spread over distinct zones when there are enough zones. The module is
 * pure: no sockets, clocks, threads or randomness; a view is immutable once built, so any number
 * of threads may look up in it at once.
 */
#ifndef SHOAL_DHT_H
#define SHOAL_DHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most owners one lookup may return (after R is clamped to the number of eligible members). */
#define DHT_REPLICAS_MAX 32

/* A 128-bit block identity: hi and lo halves of XXH3_128bits over the block's coordinates. */
typedef struct dht_id {
    uint64_t hi;
    uint64_t lo;
} dht_id;

/* One member as the caller knows it (value struct; the view copies the strings). A member owns
 * blocks only when it is alive, serving and has capacity > 0. The caller decides what "alive"
 * means for placement (the daemon counts suspected members as alive, so suspicion alone moves
 * nothing). `user` is opaque: the view hands it back unchanged so the caller finds its own
 * record (an index cast to a pointer, or a pointer). */
typedef struct dht_member {
    const char *node_id; /* unique, non-empty */
    const char *zone;    /* failure domain; NULL or "" = no zone (all such members share one) */
    uint64_t capacity;   /* cache capacity in bytes: the placement weight */
    bool serving;        /* false for consumer-only (--no-serve) members */
    bool alive;
    void *user;
} dht_member;

typedef struct dht_view dht_view;

/* The identity of block `index` of object `key` at version `etag` in `bucket`: XXH3_128bits over
 * a length-prefixed encoding, so no two different tuples share an encoding. Same inputs, same id,
 * on every machine. NULL strings count as "". Never fails. */
dht_id dht_block_id(const char *bucket, const char *key, const char *etag, uint64_t index);

/* Writes id as 32 lowercase hex digits (hi then lo) and a NUL into out. Returns out. */
char *dht_id_format(dht_id id, char out[33]);

/* Writes id as 16 bytes, hi then lo, most significant byte first (the order of dht_id_format's
 * digits): how the block store and the peer protocol name a block. */
void dht_id_bytes(dht_id id, uint8_t out[16]);

/* Builds a view of `n` members at membership `version` (chosen by the caller, e.g. gossip's view
 * counter; the view only carries it so requests can name the view they were routed with). The
 * order of `members` does not matter: the same set gives the same owners. Members that are not
 * alive, not serving or have zero capacity are left out. The view copies the strings; the caller
 * keeps ownership of `members`. NULL with SHOAL_ERR_INVAL for a missing/empty or duplicate node id
 * (the message names it), SHOAL_ERR_NOMEM on allocation failure. A view with no eligible member is
 * valid: every lookup in it fails with SHOAL_ERR_DHT_NO_OWNER. */
dht_view *dht_view_new(const dht_member *members, size_t n, uint64_t version);

/* Frees the view; the member pointers returned by lookups become invalid. Accepts NULL. */
void dht_view_delete(dht_view *view);

/* The membership version the view was built with. */
uint64_t dht_view_version(const dht_view *view);

/* Number of members that own blocks (alive, serving, capacity > 0). */
size_t dht_view_size(const dht_view *view);

/* Number of distinct zones among the members that own blocks. */
size_t dht_view_zones(const dht_view *view);

/* The owners of block `id`, best first, into out[0..]: up to `r` distinct members (all of them
 * when r exceeds the eligible count). When the view has at least that many zones the owners are
 * in distinct zones; otherwise each zone gives its best member first and the remaining places go
 * to the best remaining members. The first owner never depends on r. out must have room for
 * min(r, dht_view_size(view)) pointers; they point into the view (valid until dht_view_delete;
 * the `user` field is the caller's). Returns the number of owners,
 * or -1 with SHOAL_ERR_DHT_NO_OWNER when the view has no eligible member, SHOAL_ERR_INVAL when
 * r < 1 or more than DHT_REPLICAS_MAX owners would be returned. */
int dht_owners(const dht_view *view, dht_id id, int r, const dht_member *out[]);

/* Reorders owners[0..n) for reading: the owners in `zone` first, the others after, each group
 * keeping its order. Ownership is unchanged. With zone NULL or "" the order is left as it is. */
void dht_prefer_zone(const dht_member *owners[], size_t n, const char *zone);

#endif
