/*
 * node_stats: the daemon's counters (SPEC §3), one atomic 64-bit field each, and their two
 * renderings: one flat JSON object for `shoal stats --json` and the Prometheus text format for
 * /metrics.
 *
 * Counters only grow (totals since start); gauges (cache.bytes, cache.capacity, members.*) are
 * set to the current value by whoever owns the figure. Every field is updated with relaxed
 * atomics from any thread, so a rendering is a set of individually exact values, not a snapshot
 * taken under one lock; that is what a monitoring system expects of counters.
 */
#ifndef NODE_STATS_H
#define NODE_STATS_H

#include "shoal_buf.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct node_stats {
    /* requests sent to S3, and payload bytes from / to S3 */
    _Atomic uint64_t s3_get_requests;
    _Atomic uint64_t s3_head_requests;
    _Atomic uint64_t s3_list_requests;
    _Atomic uint64_t s3_put_requests;
    _Atomic uint64_t s3_delete_requests;
    _Atomic uint64_t s3_copy_requests;
    _Atomic uint64_t s3_errors;
    _Atomic uint64_t s3_retries;
    _Atomic uint64_t s3_stall_retries; /* of the retries, answers that stalled (--s3-stall-timeout) */
    _Atomic uint64_t s3_bytes_in;
    _Atomic uint64_t s3_bytes_out;
    /* where block reads were served from */
    _Atomic uint64_t reads_local;
    _Atomic uint64_t reads_peer;
    _Atomic uint64_t reads_s3;
    _Atomic uint64_t reads_coalesced;
    _Atomic uint64_t reads_readahead;
    /* the peer protocol */
    _Atomic uint64_t peer_requests_in;
    _Atomic uint64_t peer_requests_out;
    _Atomic uint64_t peer_bytes_in;
    _Atomic uint64_t peer_bytes_out;
    _Atomic uint64_t peer_timeouts;
    _Atomic uint64_t peer_errors;
    _Atomic uint64_t peer_bad_frames;
    _Atomic uint64_t peer_handshakes_refused; /* CURVE handshakes the ZAP handler refused (not a member) */
    _Atomic uint64_t peer_pushes_started; /* blocks pushed to an owner (each ends in one of: */
    _Atomic uint64_t peer_pushes;         /* blocks an owner accepted (PUT: written, or replicas) */
    _Atomic uint64_t peer_push_failures;  /* blocks an owner refused or never answered */
    _Atomic uint64_t peer_puts_refused;   /* PUTs this node refused (not its block, bad checksum, ...) */
    /* hand-off on a miss, and drains */
    _Atomic uint64_t handoff_asks;      /* stored copies asked of other ranked members before S3 */
    _Atomic uint64_t handoff_hits;      /* blocks an owner got that way instead of from S3 */
    _Atomic uint64_t handoff_blocks_in; /* blocks a draining member handed to this node */
    _Atomic uint64_t drain_blocks_sent; /* owned blocks this node handed off while draining */
    _Atomic uint64_t drain_bytes_sent;
    _Atomic uint64_t drain_failures;    /* owned blocks a drain could not hand off */
    /* the block store */
    _Atomic uint64_t cache_bytes;    /* gauge */
    _Atomic uint64_t cache_capacity; /* gauge */
    _Atomic uint64_t cache_blocks;   /* gauge */
    _Atomic uint64_t cache_evictions;
    _Atomic uint64_t cache_corrupt_blocks;
    _Atomic uint64_t cache_free_space_evictions; /* part of cache_evictions: for the file system */
    _Atomic uint64_t cache_lost_blocks;          /* blocks whose files were removed behind the store */
    /* membership, this node's view */
    _Atomic uint64_t members_alive;   /* gauge */
    _Atomic uint64_t members_suspect; /* gauge */
    _Atomic uint64_t members_dead;    /* gauge */
    _Atomic uint64_t gossip_bad_packets;
    _Atomic uint64_t gossip_push_pulls;
    /* the mount */
    _Atomic uint64_t mount_uploads;
    _Atomic uint64_t mount_upload_errors;
    _Atomic uint64_t mount_uploads_pending; /* gauge: closed files waiting for --upload-delay */
    _Atomic uint64_t mount_upload_retries;  /* delayed uploads that failed and were rescheduled */
} node_stats;

typedef enum node_stats_kind {
    NODE_STATS_COUNTER,
    NODE_STATS_GAUGE,
} node_stats_kind;

/* One entry of the static table that names every field. */
typedef struct node_stats_desc {
    const char *name;     /* SPEC name, e.g. "s3.get_requests" */
    size_t offset;        /* offsetof(node_stats, field) */
    node_stats_kind kind;
    const char *help;     /* one sentence, for # HELP and docs */
} node_stats_desc;

/* Zeroes every counter. */
void node_stats_create(node_stats *s);

/* The table of every field, in rendering order; *count receives its length. Static storage. */
const node_stats_desc *node_stats_fields(size_t *count);

/* Reads one field named by its table entry. */
uint64_t node_stats_get(const node_stats *s, const node_stats_desc *d);

/* Adds n to a counter / sets a gauge (relaxed atomics; safe from any thread). */
static inline void node_stats_add(_Atomic uint64_t *field, uint64_t n)
{
    atomic_fetch_add_explicit(field, n, memory_order_relaxed);
}
static inline void node_stats_set(_Atomic uint64_t *field, uint64_t v)
{
    atomic_store_explicit(field, v, memory_order_relaxed);
}

/* Appends one JSON object {"s3.get_requests":N,...} (no newline) to out. -1 on NOMEM. */
int node_stats_render_json(const node_stats *s, shoal_buf *out);

/* Appends the Prometheus text exposition (format 0.0.4): for each field "# HELP", "# TYPE" and
 * the sample, named shoal_<name with dots as underscores>, counters with a _total suffix.
 * -1 on NOMEM. */
int node_stats_render_prometheus(const node_stats *s, shoal_buf *out);

#endif
