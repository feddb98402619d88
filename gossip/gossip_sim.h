/*
 * gossip_sim: what only a simulator (shoal-sim, sim/sim_cluster.h) and the tests need from gossip:
 * sharing views and metadata among thousands of instances in one process, starting them converged,
 * comparing their states, and watching the probes they send. The daemon includes gossip.h alone.
 *
 * Same rules as gossip.h: every call runs on the one thread that drives the instances; nothing here
 * changes what an instance does, only where it keeps its state and who watches it.
 */
#ifndef SHOAL_GOSSIP_SIM_H
#define SHOAL_GOSSIP_SIM_H

#include "gossip.h"

/*
 * A table of member metadata shared by many instances in one process (shoal-sim runs thousands):
 * each distinct metadata value is stored once and reference-counted instead of once per instance
 * per member. Not thread-safe: every instance using it runs on one thread. It must outlive them.
 */
/* NULL with SHOAL_ERR_NOMEM. */
gossip_meta_pool *gossip_meta_pool_new(void);
/* Frees the pool; call after deleting every instance that used it. Accepts NULL. */
void gossip_meta_pool_delete(gossip_meta_pool *p);

/*
 * Where member views live (docs/gossip.md, "Member store"). Without one (member_store NULL, the
 * daemon) each instance keeps one private table. A store shared by many instances in one process
 * (shoal-sim) keeps a base table of entries plus, per instance, the entries where that instance's
 * view differs from the base (copy-on-write); gossip_member_store_fold() moves entries that every
 * view holds alike back into the base. With `share` false every view keeps all of its entries to
 * itself (the base stays empty): the reference a shared store is checked against. What an instance
 * does is the same in every representation. Needs a shared gossip_meta_pool; not thread-safe; it
 * must outlive its instances and be deleted before the pool.
 */
/* NULL with SHOAL_ERR_NOMEM. */
gossip_member_store *gossip_member_store_new(bool share);
/* Frees the store; call after deleting every instance that used it. Accepts NULL. */
void gossip_member_store_delete(gossip_member_store *s);
/* Moves every entry that all instances hold alike (and none is broadcasting or suspecting) into the
 * base and drops their private copies. Changes no instance's behaviour. Returns entries folded. */
size_t gossip_member_store_fold(gossip_member_store *s);
/* Entries in the base, and private entries summed over instances. */
void gossip_member_store_stats(const gossip_member_store *s, size_t *base, size_t *private_entries);

/*
 * Copies the live members `from` knows (this node, known ids and incompatible ones skipped) into
 * g's view at their incarnations, without a packet or a broadcast, as if a push-pull had brought
 * them, and counts g as joined. When both share a metadata pool the metadata is shared, not copied.
 * For simulators that start from a converged cluster instead of paying for n joins.
 * -1 with SHOAL_ERR_NOMEM (members added so far stay).
 */
int gossip_preload(gossip *g, const gossip *from);
/*
 * gossip_preload(gs[i], from) for every i (from must not be among them). When every instance of a
 * shared store is `from` or in gs, its base was empty and all share one clock, the preloaded
 * entries go into the store's base once instead of into every view. -1 with SHOAL_ERR_NOMEM or
 * SHOAL_ERR_INVAL (from among gs).
 */
int gossip_preload_all(gossip *const *gs, size_t n, const gossip *from);

/*
 * A digest of the state a push-pull would send (every member's id, state, incarnation, accuser and
 * metadata): two instances with equal digests hold the same view, and a push-pull between them
 * changes nothing, so it is skipped (docs/gossip.md, "Anti-entropy").
 */
uint64_t gossip_state_digest(const gossip *g);
/* Recomputes what the instance keeps incrementally (digest, member counts) and compares: 0 when it
 * agrees, -1 with SHOAL_ERR_GOSSIP when not. For tests and fuzzing. */
int gossip_self_check(const gossip *g);

/*
 * The instance's own account of what it does on the wire, for a simulator that measures the
 * protocol without decoding its datagrams (the codec is private to gossip/).
 */
typedef enum gossip_sim_event_kind {
    GOSSIP_SIM_PING_SENT, /* a PING left: a direct probe, or one relayed for a PING_REQ */
} gossip_sim_event_kind;

typedef struct gossip_sim_event {
    gossip_sim_event_kind kind;
    const shoal_addr *to; /* where the datagram went; valid during the call */
    const char *target;   /* the probed member's id; valid during the call */
    bool relayed;         /* sent on another member's behalf (PING_REQ) */
} gossip_sim_event;

/* Called from inside gossip_receive/gossip_tick right after the datagram was handed to env->send
 * (whatever the send returned); must not call back into the instance. */
typedef void (*gossip_sim_event_fn)(void *ud, const gossip_sim_event *ev);
/* Sets (NULL: removes) the instance's event callback. */
void gossip_sim_set_tap(gossip *g, gossip_sim_event_fn fn, void *ud);

#endif
