/*
 * node_seeds: the addresses a node dials to find its cluster.
 *
 * Two sources. The --seeds entries are resolved lazily: numeric addresses at once, host names on a
 * thread of their own, each retried with exponential backoff until it resolves, so a name that
 * does not resolve yet (a Kubernetes headless service resolves only once its pods are ready) is
 * retried like a seed that does not answer instead of stopping the daemon. And the members a node
 * saw live at its last view change, kept in <state-dir>/members, which a node started without
 * --seeds dials, so the first node of a cluster rejoins it after a restart.
 *
 * Resolution goes through the system resolver (getaddrinfo: /etc/hosts, DNS, whatever nsswitch.conf
 * says), at every attempt, so a name that appears in any of them is found at the next retry.
 */
#ifndef NODE_SEEDS_H
#define NODE_SEEDS_H

#include "gossip.h"
#include "node_config.h"
#include "shoal_env.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NODE_SEEDS_ADDRS_MAX 8   /* addresses kept per resolved name (a headless service has one per pod) */
#define NODE_SEEDS_MEMBERS_MAX 16 /* members remembered in <state-dir>/members */

/* Called with the addresses one seed resolved to (1..NODE_SEEDS_ADDRS_MAX), on the resolver thread
 * or, for numeric seeds, inside node_seeds_new. Must not call back into the node_seeds. */
typedef void (*node_seeds_found_fn)(void *ud, const shoal_addr *addrs, size_t n);

typedef struct node_seeds_config {
    const node_config_seed *seeds; /* copied */
    size_t n_seeds;
    uint8_t family;            /* 4 or 6: only addresses of the gossip socket's family are useful */
    uint64_t backoff_min_us;   /* first retry of a name that failed; doubles up to backoff_max_us */
    uint64_t backoff_max_us;
    node_seeds_found_fn found;
    void *ud;
} node_seeds_config;

typedef struct node_seeds node_seeds;

/* Reports the numeric seeds through `found` at once and starts a thread that resolves the names
 * (none when every seed is numeric). NULL with SHOAL_ERR_NOMEM or SHOAL_ERR_IO (no thread). */
node_seeds *node_seeds_new(const node_seeds_config *cfg);
/* Asks the resolver thread to stop at its next step; returns at once (a lookup under way may still
 * finish, and `found` is then not called). Idempotent. */
void node_seeds_cancel(node_seeds *s);
/* Stops the thread (waiting for a lookup under way) and frees everything. Accepts NULL. */
void node_seeds_delete(node_seeds *s);

/* Resolves one host (a name, or a numeric address) to up to `max` addresses of `family` with
 * `port`: numeric addresses directly, names through getaddrinfo. Returns how many (>= 1), or -1
 * with SHOAL_ERR_NOT_FOUND naming the host and the resolver's reason. */
int node_seeds_resolve(const char *host, uint16_t port, uint8_t family, shoal_addr *out, size_t max);

/* One member remembered in <state-dir>/members. */
typedef struct node_seeds_member {
    char id[GOSSIP_ID_MAX + 1];
    shoal_addr addr;
} node_seeds_member;

/* Reads <state_dir>/members: up to `max` members, in file order. Returns how many; 0 when the file
 * does not exist. Lines that do not parse are skipped with a warning naming the file and line
 * (the file is rewritten at the next view change). -1 with SHOAL_ERR_IO when it cannot be read. */
int node_seeds_load_members(const char *state_dir, node_seeds_member *out, size_t max);
/* Writes <state_dir>/members atomically (a temporary file, fsync, rename). -1 with SHOAL_ERR_IO. */
int node_seeds_save_members(const char *state_dir, const node_seeds_member *members, size_t n);

#endif
