/*
 * gossip: cluster membership by SWIM with the Lifeguard refinements, as HashiCorp memberlist does
 * them, written as a pure state machine over the environment seam (common/shoal_env.h).
 *
 * The instance never touches a socket, a clock, a thread or rand(): the driver (node/ for the
 * daemon, sim/ for tests and shoal-sim) hands it every datagram that arrives with gossip_receive()
 * and calls gossip_tick() when the env's wakeup fires; the instance sends sealed datagrams (never
 * larger than GOSSIP_DATAGRAM_MAX bytes, so no IP fragmentation) through env->send and re-arms
 * its wakeup through env->wakeup_at. Everything happens on the caller's thread; one instance is not
 * thread-safe and needs no locks.
 *
 * docs/gossip.md describes the protocol, every parameter and its origin, and the wire format.
 */
#ifndef SHOAL_GOSSIP_H
#define SHOAL_GOSSIP_H

#include "shoal_env.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Wire format version carried in every packet; a packet of another version is rejected. */
#define GOSSIP_WIRE_VERSION 1
/* Largest sealed datagram the instance sends (well under a 1500-byte Ethernet MTU). */
#define GOSSIP_DATAGRAM_MAX 1400
#define GOSSIP_KEY_LEN 32
#define GOSSIP_ID_MAX 63   /* longest node id, in bytes */
#define GOSSIP_ZONE_MAX 31 /* longest zone name, in bytes */

typedef struct gossip gossip;

typedef enum gossip_state {
    GOSSIP_ALIVE = 0,
    GOSSIP_SUSPECT = 1,
    GOSSIP_DEAD = 2, /* declared failed by the failure detector */
    GOSSIP_LEFT = 3, /* announced a graceful leave */
} gossip_state;

/* What a member advertises about itself. Plain value; ids and zones are NUL-terminated. */
typedef struct gossip_meta {
    char id[GOSSIP_ID_MAX + 1];
    shoal_addr addr; /* where its gossip (UDP) and peer (TCP) port listen */
    char zone[GOSSIP_ZONE_MAX + 1];
    uint8_t curve_public[32];
    uint64_t capacity;      /* cache capacity in bytes */
    bool serving;           /* false: consumer-only, never an owner of blocks */
    uint32_t proto_version; /* Shoal protocol version; a member of another version is refused */
    uint32_t block_size;    /* a member of another block size is refused */
    /* Cache bytes in use, as the member last published it (gossip_set_cache_used). Informational:
     * placement ignores it, and a member that does not publish it (an older release) leaves
     * cache_used_known false. */
    uint64_t cache_used;
    bool cache_used_known;
} gossip_meta;

/* One member as the view holds it. `meta` stays valid until the next call into the instance. */
typedef struct gossip_member_info {
    const gossip_meta *meta;
    gossip_state state;
    uint64_t incarnation;
    uint64_t state_since_us; /* env time of the last state change */
    bool is_self;
} gossip_member_info;

typedef enum gossip_event {
    GOSSIP_EV_JOINED,  /* a member appeared (alive) or came back from dead/left */
    GOSSIP_EV_UPDATED, /* its metadata changed, or it refuted a suspicion */
    GOSSIP_EV_CACHE_USED, /* only its published cache use changed (placement is unaffected) */
    GOSSIP_EV_SUSPECT,
    GOSSIP_EV_DEAD,
    GOSSIP_EV_LEFT,
    GOSSIP_EV_REFUSED, /* this node was refused by the cluster; info describes this node */
} gossip_event;

/* Called from inside gossip_receive/gossip_tick; must not call back into the instance. */
typedef void (*gossip_event_fn)(void *ud, gossip_event ev, const gossip_member_info *member);

/* Counters, monotonically increasing; read with gossip_counters_get(). */
typedef struct gossip_counters {
    uint64_t packets_in, packets_out, bytes_in, bytes_out;
    uint64_t decode_errors; /* opened but malformed */
    uint64_t seal_failures; /* did not open with the cluster key */
    uint64_t send_errors;   /* env->send reported a local failure */
    uint64_t probes, probe_acks, probe_failures;
    uint64_t indirect_probes, nacks_in, relays;
    uint64_t suspicions, deaths, refutations;
    uint64_t updates_in, updates_stale;
    uint64_t push_pulls, push_pull_packets; /* exchanges started; state chunks sent (any reason) */
    uint64_t push_pull_same;                /* exchanges skipped: both digests were equal */
    uint64_t refused_in, refused_out;
    uint64_t join_attempts;
} gossip_counters;

/* Where views and their metadata live when many instances share a process (shoal-sim); the
 * functions that make and inspect them are in gossip_sim.h. NULL in the config (the daemon): each
 * instance keeps its own. */
typedef struct gossip_meta_pool gossip_meta_pool;
typedef struct gossip_member_store gossip_member_store;

/* Reasons a refusal carries on the wire. */
typedef enum gossip_refusal {
    GOSSIP_REFUSE_BLOCK_SIZE = 1,
    GOSSIP_REFUSE_PROTO_VERSION = 2,
    GOSSIP_REFUSE_DUPLICATE_ID = 3,
} gossip_refusal;

/*
 * Parameters. gossip_config_defaults() fills memberlist's DefaultLANConfig values; docs/gossip.md
 * gives each one's origin. Times are in microseconds.
 */
typedef struct gossip_config {
    gossip_meta self;
    uint8_t cluster_key[GOSSIP_KEY_LEN]; /* seals every datagram; never logged */
    uint64_t incarnation;                /* starting incarnation (a restart passes a higher one) */

    uint64_t probe_interval_us;    /* 1 s */
    uint64_t probe_timeout_us;     /* 500 ms */
    uint32_t indirect_checks;      /* 3 */
    uint32_t retransmit_mult;      /* 4 */
    uint32_t suspicion_mult;       /* 4 */
    uint32_t suspicion_max_mult;   /* 6 */
    uint64_t push_pull_interval_us; /* 30 s, scaled up with log2(n) above 32 members */
    uint32_t awareness_max;        /* 8 */
    uint64_t gossip_interval_us;   /* 200 ms */
    uint32_t gossip_nodes;         /* 3 */
    uint64_t gossip_to_dead_us;    /* 30 s: dead members still receive gossip this long */
    uint64_t dead_reap_us;         /* 24 h: dead/left members are forgotten after this */
    uint64_t join_backoff_min_us;  /* 1 s */
    uint64_t join_backoff_max_us;  /* 30 s */

    gossip_event_fn on_event; /* may be NULL */
    void *event_ud;
    gossip_meta_pool *meta_pool; /* NULL: each instance keeps private copies (the daemon) */
    gossip_member_store *member_store; /* NULL: a private member table (the daemon); needs meta_pool */
} gossip_config;

/* Fills `c` with the defaults above and zeroes the identity, key and callback. */
void gossip_config_defaults(gossip_config *c);

/*
 * Creates an instance that lives in `env` (borrowed: it must outlive the instance). The config is
 * copied. The instance starts alone (a cluster of one) and arms its first wakeup. NULL with
 * SHOAL_ERR_INVAL (empty id, id or zone too long, zero interval) or SHOAL_ERR_NOMEM.
 */
gossip *gossip_new(const gossip_config *config, const shoal_env *env);
/* Frees the instance without a word to the cluster (a crash, as others see it). Accepts NULL. */
void gossip_delete(gossip *g);

/* Hands the instance one datagram received from `from`. Never fails: bad datagrams are counted. */
void gossip_receive(gossip *g, const shoal_addr *from, const void *data, size_t len);
/* Runs every timer that is due (probe, suspicion, gossip, push-pull, join retry) and re-arms. */
void gossip_tick(gossip *g);

/*
 * Joins the cluster through `seeds` (copied): a join push-pull goes to every seed, repeated with
 * exponential backoff until one answers. Returns at once; gossip_joined() tells when it worked.
 * -1 with SHOAL_ERR_INVAL when n == 0 or n > 64.
 */
int gossip_join(gossip *g, const shoal_addr *seeds, size_t n);
bool gossip_joined(const gossip *g);
/* True once a member refused this node (block size, version or duplicate id): it stops joining. */
bool gossip_refused(const gossip *g);

/* Announces a graceful leave ("left", not "dead") to a few members at once and keeps gossiping it;
 * the node stops probing. The caller may delete the instance right after. */
void gossip_leave(gossip *g);

/*
 * Forgets member `id` at once instead of after dead_reap_us: it leaves this view (and this node's
 * push-pull state) without a word to the others. Until dead_reap_us has passed, claims about it at
 * the incarnation it was forgotten at or below are ignored (the others still hold it dead or left
 * and may gossip it); a newer incarnation, or a join from the member itself, brings it back.
 * -1 with SHOAL_ERR_NOT_FOUND when the view has no such member, SHOAL_ERR_INVAL when it is alive or
 * suspect, or is this node.
 */
int gossip_forget(gossip *g, const char *id);

/* Changes this node's metadata (its id must stay the same; the cache use it publishes is kept):
 * bumps the incarnation and gossips it.
 * -1 with SHOAL_ERR_INVAL when the id differs or a field is too long. */
int gossip_set_meta(gossip *g, const gossip_meta *meta);

/* Publishes this node's cache use (bytes): bumps the incarnation and gossips the metadata like
 * gossip_set_meta, but gossip_version() does not change, since placement does not depend on it.
 * The caller decides how often; each call costs one broadcast to the cluster. */
void gossip_set_cache_used(gossip *g, uint64_t used);

/* Members in the view, this node included, dead and left ones until they are reaped. */
size_t gossip_member_count(const gossip *g);
/* Fills `out` with member number i (0 <= i < count; order is unspecified). -1 when out of range. */
int gossip_member_at(const gossip *g, size_t i, gossip_member_info *out);
/* Looks up a member by id; false when unknown. */
bool gossip_member_find(const gossip *g, const char *id, gossip_member_info *out);
/* Members currently alive or suspect (suspects still own blocks until declared dead). */
size_t gossip_live_count(const gossip *g);

/* A number that changes whenever the set of live members or any live member's metadata changes. */
uint64_t gossip_version(const gossip *g);
/* This node's current incarnation (it rises with each refutation and metadata change). */
uint64_t gossip_incarnation(const gossip *g);
/* The current Lifeguard awareness score (0 = healthy). */
uint32_t gossip_awareness(const gossip *g);
/* The instance's counters, valid (and updated in place) as long as the instance. */
const gossip_counters *gossip_counters_get(const gossip *g);

/* "alive", "suspect", "dead", "left" (static strings). */
const char *gossip_state_name(gossip_state s);

#endif
