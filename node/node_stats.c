/*
 * node_stats: one table drives everything. Each field of struct node_stats appears once in
 * FIELDS with its SPEC name, kind and help text; the JSON and Prometheus renderers, the metrics
 * test and docs/configuration.md all follow that table, so a new counter is one struct field and
 * one table line. The JSON keys are the SPEC names verbatim ("s3.get_requests"); Prometheus names
 * replace the dots with underscores, add the shoal_ prefix and, for counters, the _total suffix
 * the exposition format's conventions ask for.
 */
#include "node_stats.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define F(field, name, kind, help) { name, offsetof(node_stats, field), kind, help }
#define C NODE_STATS_COUNTER
#define G NODE_STATS_GAUGE

static const node_stats_desc FIELDS[] = {
    F(s3_get_requests, "s3.get_requests", C, "GET requests sent to S3."),
    F(s3_head_requests, "s3.head_requests", C, "HEAD requests sent to S3."),
    F(s3_list_requests, "s3.list_requests", C, "LIST requests sent to S3."),
    F(s3_put_requests, "s3.put_requests", C, "PUT requests (whole objects and multipart parts) sent to S3."),
    F(s3_delete_requests, "s3.delete_requests", C, "DELETE requests sent to S3."),
    F(s3_copy_requests, "s3.copy_requests", C, "Server-side COPY requests sent to S3."),
    F(s3_errors, "s3.errors", C, "S3 requests that failed after all retries."),
    F(s3_retries, "s3.retries", C, "S3 requests retried after a throttle or transport error."),
    F(s3_stall_retries, "s3.stall_retries", C, "S3 requests abandoned after moving no byte for --s3-stall-timeout and sent again at once (counted in s3.retries too)."),
    F(s3_bytes_in, "s3.bytes_in", C, "Payload bytes received from S3."),
    F(s3_bytes_out, "s3.bytes_out", C, "Payload bytes sent to S3."),
    F(reads_local, "reads.local", C, "Block reads served from this node's store."),
    F(reads_peer, "reads.peer", C, "Block reads served by a peer."),
    F(reads_s3, "reads.s3", C, "Block reads that fetched from S3."),
    F(reads_coalesced, "reads.coalesced", C, "Block reads that waited on a fetch already in flight."),
    F(reads_readahead, "reads.readahead", C, "Blocks fetched ahead of a sequential reader."),
    F(peer_requests_in, "peer.requests_in", C, "Block requests received from peers."),
    F(peer_requests_out, "peer.requests_out", C, "Block requests sent to peers."),
    F(peer_bytes_in, "peer.bytes_in", C, "Block payload bytes received from peers."),
    F(peer_bytes_out, "peer.bytes_out", C, "Block payload bytes sent to peers."),
    F(peer_timeouts, "peer.timeouts", C, "Peer requests that timed out (the read moved on)."),
    F(peer_errors, "peer.errors", C, "Peer requests answered with an error."),
    F(peer_bad_frames, "peer.bad_frames", C, "Malformed peer frames dropped."),
    F(peer_handshakes_refused, "peer.handshakes_refused", C, "Peer connections refused at the CURVE handshake: the client's key is not a member's."),
    F(peer_pushes_started, "peer.pushes_started", C, "Blocks pushed to an owner (written through the mount, or copies for the other owners with --replicas > 1); each ends as a push or a push failure."),
    F(peer_pushes, "peer.pushes", C, "Pushed blocks their owner accepted."),
    F(peer_push_failures, "peer.push_failures", C, "Pushed blocks an owner refused or did not answer (it fetches them when read)."),
    F(peer_puts_refused, "peer.puts_refused", C, "Blocks peers pushed that this node refused (not an owner, bad length or checksum, store full)."),
    F(handoff_asks, "handoff.asks", C, "Stored copies this node, as an owner missing a block, asked of the block's other ranked members before S3."),
    F(handoff_hits, "handoff.hits", C, "Blocks this node got from another member that way instead of from S3."),
    F(handoff_blocks_in, "handoff.blocks_in", C, "Blocks a draining member handed to this node, accepted."),
    F(drain_blocks_sent, "drain.blocks_sent", C, "Owned blocks this node handed to their next owners while draining (one per owner that took one)."),
    F(drain_bytes_sent, "drain.bytes_sent", C, "Bytes of the blocks counted in drain.blocks_sent."),
    F(drain_failures, "drain.failures", C, "Owned blocks a drain could not hand off (their next owner refused, did not answer, or there was none)."),
    F(cache_bytes, "cache.bytes", G, "Bytes held by the block store."),
    F(cache_capacity, "cache.capacity", G, "Hard cap of the block store in bytes (--cache-size)."),
    F(cache_blocks, "cache.blocks", G, "Blocks held by the block store."),
    F(cache_evictions, "cache.evictions", C, "Blocks evicted to make room: under the cap, or for the file system (cache.free_space_evictions)."),
    F(cache_corrupt_blocks, "cache.corrupt_blocks", C, "Stored blocks found damaged (checksum, header, size, not a file) and dropped, each counted once."),
    F(cache_free_space_evictions, "cache.free_space_evictions", C, "Blocks evicted to keep --cache-free-space of the file system free, or after a write found it full (part of cache.evictions)."),
    F(cache_lost_blocks, "cache.lost_blocks", C, "Stored blocks whose files were removed behind the store (by hand, or with the blocks directory) and were forgotten."),
    F(members_alive, "members.alive", G, "Members this node sees alive (itself included)."),
    F(members_suspect, "members.suspect", G, "Members this node suspects."),
    F(members_dead, "members.dead", G, "Members this node knows dead or gone."),
    F(gossip_bad_packets, "gossip.bad_packets", C, "Gossip packets dropped because they did not open or decode."),
    F(gossip_push_pulls, "gossip.push_pulls", C, "Anti-entropy exchanges (views compared, whole states swapped when they differ) this node started."),
    F(mount_uploads, "mount.uploads", C, "Files uploaded through the mount."),
    F(mount_upload_errors, "mount.upload_errors", C, "Uploads through the mount that failed (close/fsync got EIO)."),
    F(mount_uploads_pending, "mount.uploads_pending", G, "Files closed through the mount and waiting for their delayed upload (--upload-delay)."),
    F(mount_upload_retries, "mount.upload_retries", C, "Delayed uploads that failed and were scheduled again (the file stays staged)."),
};

#undef F
#undef C
#undef G

void node_stats_create(node_stats *s)
{
    size_t n;
    const node_stats_desc *d = node_stats_fields(&n);
    for (size_t i = 0; i < n; i++)
        atomic_init((_Atomic uint64_t *)((char *)s + d[i].offset), 0);
}

const node_stats_desc *node_stats_fields(size_t *count)
{
    *count = sizeof FIELDS / sizeof FIELDS[0];
    return FIELDS;
}

uint64_t node_stats_get(const node_stats *s, const node_stats_desc *d)
{
    const _Atomic uint64_t *f = (const _Atomic uint64_t *)((const char *)s + d->offset);
    return atomic_load_explicit((_Atomic uint64_t *)f, memory_order_relaxed);
}

int node_stats_render_json(const node_stats *s, shoal_buf *out)
{
    if (shoal_buf_append_byte(out, '{') < 0)
        return -1;
    for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++) {
        if (shoal_buf_appendf(out, "%s\"%s\":%" PRIu64, i ? "," : "", FIELDS[i].name,
                              node_stats_get(s, &FIELDS[i])) < 0)
            return -1;
    }
    return shoal_buf_append_byte(out, '}');
}

/* "s3.get_requests" -> "shoal_s3_get_requests" (+ "_total" for a counter). */
static void prom_name(const node_stats_desc *d, char *out, size_t len)
{
    size_t j = (size_t)snprintf(out, len, "shoal_");
    for (const char *p = d->name; *p && j + 1 < len; p++)
        out[j++] = *p == '.' ? '_' : *p;
    out[j] = '\0';
    if (d->kind == NODE_STATS_COUNTER)
        snprintf(out + j, len - j, "_total");
}

int node_stats_render_prometheus(const node_stats *s, shoal_buf *out)
{
    char name[96];
    for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++) {
        const node_stats_desc *d = &FIELDS[i];
        prom_name(d, name, sizeof name);
        if (shoal_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, d->help, name,
                              d->kind == NODE_STATS_COUNTER ? "counter" : "gauge", name,
                              node_stats_get(s, d)) < 0)
            return -1;
    }
    return 0;
}
