/*
 * node_stats: the daemon's counters (SPEC §3), one atomic 64-bit field each, and their two
 * renderings: one flat JSON object for `shoal stats --json` and the Prometheus text format for
 * /metrics.
 *
 * Counters only grow (totals since start); gauges (cache.bytes, cache.capacity, members.*) are
 * set to the current value by whoever owns the figure. Every field is updated with relaxed
 * atomics from any thread, so a rendering is a set of individually exact values, not a snapshot
 * taken under one lock; that is what a monitoring system expects of counters.
 *
 * Beside the SPEC counters, the struct holds what only /metrics shows: S3 failures by operation
 * and error, and latency histograms (shoal_hist). The Prometheus names are not the SPEC names
 * with dots replaced: they follow Prometheus's naming conventions (one labelled family per
 * figure with several parts, the unit at the end, counters in _total); docs/operations.md lists
 * them and the names they replaced.
 */
#ifndef NODE_STATS_H
#define NODE_STATS_H

#include "shoal_buf.h"
#include "shoal_hist.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* The label values of the labelled tables below, in their order (node_stats.c names them):
 * S3 operations as s3_client_stats counts them (get, head, list, put, delete, copy), S3 error
 * classes (the S3 errors of shoal_error.h in order, then "local"), the sources of a block read,
 * and the FUSE requests the mount times (mount.h). node_daemon.c asserts they agree with s3/ and
 * fuse/. */
#define NODE_STATS_S3_OPS 6
#define NODE_STATS_S3_CODES 13
#define NODE_STATS_FUSE_OPS 15
enum { NODE_STATS_SRC_LOCAL, NODE_STATS_SRC_PEER, NODE_STATS_SRC_S3, NODE_STATS_SRCS };

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
    _Atomic uint64_t reads_readahead_pending; /* gauge: read-ahead blocks queued or being fetched */
    _Atomic uint64_t reads_parts; /* random reads served by a ranged GET of just their bytes */
    _Atomic uint64_t reads_part_bytes; /* the bytes those GETs brought */
    _Atomic uint64_t reads_run_gets; /* S3 GETs that fetched a run of several consecutive blocks */
    _Atomic uint64_t reads_run_blocks; /* the blocks those GETs asked for */
    _Atomic uint64_t buffer_waits; /* fetches that waited for a block buffer */
    _Atomic uint64_t buffer_readahead_waits; /* ... of them read-ahead, which had its share in use */
    _Atomic uint64_t buffer_budget_bytes; /* gauge: the most block buffers may map (--fetch-buffers) */
    _Atomic uint64_t buffer_peak_bytes; /* gauge: the most they mapped at once since the start */
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
    _Atomic uint64_t standin_asks; /* requests sent to a stand-in owner: no owner answered */
    _Atomic uint64_t standin_hits; /* ... that the stand-in answered */
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
    _Atomic uint64_t mount_opens;
    _Atomic uint64_t mount_bytes_read;
    _Atomic uint64_t mount_bytes_written;
    _Atomic uint64_t mount_disk_hints;
    /* only on /metrics */
    _Atomic uint64_t s3_failures[NODE_STATS_S3_OPS][NODE_STATS_S3_CODES];
    shoal_hist s3_latency[NODE_STATS_S3_OPS];   /* submission to completion, retries included */
    shoal_hist first_byte[NODE_STATS_SRCS];     /* a block read's wait for its bytes, by source */
    shoal_hist peer_fetch;                      /* one block request to a peer, whatever its end */
    shoal_hist fuse_latency[NODE_STATS_FUSE_OPS];
} node_stats;

typedef enum node_stats_kind {
    NODE_STATS_COUNTER,
    NODE_STATS_GAUGE,
} node_stats_kind;

/* One entry of the static table that names every counter and gauge. */
typedef struct node_stats_desc {
    const char *name;     /* SPEC name, e.g. "s3.get_requests" */
    size_t offset;        /* offsetof(node_stats, field) */
    node_stats_kind kind;
    const char *family;   /* Prometheus family, e.g. "shoal_s3_requests_total"; NULL: not on /metrics */
    const char *labels;   /* its labels, e.g. "op=\"get\"", or "" */
    const char *help;     /* one sentence, for docs and the JSON's readers */
} node_stats_desc;

/* Zeroes every counter and histogram. */
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

/* Appends the Prometheus text exposition (format 0.0.4): every family once, with "# HELP" and
 * "# TYPE" before its samples (docs/operations.md lists the families). -1 on NOMEM. */
int node_stats_render_prometheus(const node_stats *s, shoal_buf *out);

/* Appends the standard process_* families of the calling process, read from /proc/self
 * (process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds, process_max_fds, process_start_time_seconds). A figure /proc does not give
 * is left out. -1 on NOMEM. */
int node_stats_render_process(shoal_buf *out);

#endif
