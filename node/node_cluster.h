/*
 * node_cluster: the daemon's membership, as the rest of the daemon uses it.
 *
 * It owns the gossip instance and drives it with a real UDP socket and clock on a thread of its
 * own (gossip/ is a pure state machine; this is its real-world driver). Whenever gossip's view
 * changes it publishes a new immutable snapshot — the placement view (dht/) plus, for each live
 * member, what is needed to reach it: its peer address, its CURVE public key and the node_peer link
 * opened to it — and it keeps node_peer's ZAP allow-list equal to the CURVE keys of the live
 * members. Readers take a snapshot with node_cluster_view_get() (a reference count, no lock held
 * while they use it), so placement lookups on the read path never wait for gossip.
 *
 * Gossip (UDP) and peer data (TCP) share one port number (SPEC §2): a member's peer endpoint is
 * its gossip address.
 *
 * It also finds the cluster (--seeds resolved lazily and retried, or the members remembered in the
 * state dir from the last run, node_seeds.h), forgets departed members on request, and logs what
 * a wrong cluster key looks like from this node (node_gossip_watch.h).
 */
#ifndef NODE_CLUSTER_H
#define NODE_CLUSTER_H

#include "dht.h"
#include "gossip.h"
#include "node_config.h"
#include "node_peer.h"
#include "node_stats.h"
#include "shoal_env.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct node_cluster node_cluster;

typedef struct node_cluster_config {
    gossip_meta self;                    /* id, advertised address, zone, CURVE key, capacity, ... */
    uint8_t cluster_key[GOSSIP_KEY_LEN]; /* copied; never logged */
    shoal_addr bind;                     /* UDP address to bind (port 0: any free port) */
    /* --seeds (copied): numeric addresses, or host names resolved lazily and retried (node_seeds).
     * None: dial the members remembered in <state_dir>/members, if any, else start a new cluster. */
    const node_config_seed *seeds;
    size_t n_seeds;
    const char *state_dir;               /* the incarnation and the remembered members, across restarts */
    node_peer *peer;                     /* borrowed: links to members and the allow-list */
    node_stats *stats;                   /* borrowed, may be NULL: members.* gauges, gossip counters */
    /* Tests: every gossip timer scaled from memberlist's, whose probe period is 1 s, to this period
     * (0 keeps memberlist's defaults). */
    uint64_t gossip_period_us;
    /* This node's cache use in bytes, asked on the gossip thread every gossip interval (it must
     * be quick and thread-safe); NULL: none is published. See publish_cache_used() for how often
     * a change goes out. */
    uint64_t (*cache_used)(void *ud);
    void *cache_used_ud;
} node_cluster_config;

/* One live member in a snapshot. */
typedef struct node_cluster_member {
    gossip_meta meta;
    gossip_state state;
    uint64_t incarnation;
    bool is_self;
    int link; /* node_peer link to it; -1 for this node itself or a member not reachable */
} node_cluster_member;

typedef struct node_cluster_view node_cluster_view;

/* Binds the UDP socket, starts the gossip thread and joins through the seeds (retried with backoff
 * in the background). NULL with a shoal_error (SHOAL_ERR_IO naming the address when the bind
 * fails). */
node_cluster *node_cluster_new(const node_cluster_config *cfg);

/* Announces a graceful leave and keeps gossiping for up to `linger_ms` so the news spreads, then
 * stops. Idempotent. */
void node_cluster_leave(node_cluster *c, unsigned linger_ms);

/* Stops the thread and frees everything (without a leave: others will detect the node as dead).
 * Accepts NULL. */
void node_cluster_delete(node_cluster *c);

/* The UDP address actually bound. */
shoal_addr node_cluster_bound(const node_cluster *c);

/* True once the join worked (or there were no seeds); false while refused. */
bool node_cluster_joined(const node_cluster *c);
bool node_cluster_refused(const node_cluster *c);

/* The current snapshot with a reference taken; release it with node_cluster_view_put. Never NULL. */
node_cluster_view *node_cluster_view_get(node_cluster *c);
void node_cluster_view_put(node_cluster_view *v);

/* The membership version of the snapshot (gossip's view counter), carried by peer requests. */
uint64_t node_cluster_view_version(const node_cluster_view *v);
/* The placement view (owned by the snapshot). */
const dht_view *node_cluster_view_dht(const node_cluster_view *v);
/* Members of the snapshot (all of gossip's view, dead and left included, for `shoal status`). */
size_t node_cluster_view_count(const node_cluster_view *v);
const node_cluster_member *node_cluster_view_member(const node_cluster_view *v, size_t i);
/* The owners of a block in read order (same zone first), up to r; returns how many, or -1 with
 * SHOAL_ERR_DHT_NO_OWNER when no member serves. The pointers live as long as the snapshot. */
int node_cluster_owners(const node_cluster_view *v, dht_id id, int r, const node_cluster_member *out[]);

/* Removes member `id`, dead or left, from this node's view at once instead of after a day
 * (gossip_forget); waits for the gossip thread to do it. -1 with SHOAL_ERR_NOT_FOUND (no such
 * member), SHOAL_ERR_INVAL (it is alive or suspect, or is this node) or SHOAL_ERR_CLOSED (the node
 * is leaving), each with a message for the user. */
int node_cluster_forget(node_cluster *c, const char *id);

/* Member `id`'s cache use as it last published it, into *used; false when unknown (no such
 * member, or one that does not publish it). Refreshed from gossip at most every gossip interval;
 * any thread. */
bool node_cluster_cache_used(node_cluster *c, const char *id, uint64_t *used);

/* Replaces this node's advertised metadata; gossiped with a new incarnation. -1 with
 * SHOAL_ERR_INVAL if the id differs. */
int node_cluster_set_meta(node_cluster *c, const gossip_meta *meta);

#endif
