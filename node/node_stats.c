/*
 * node_stats: one table drives everything. Each counter and gauge of struct node_stats appears
 * once in FIELDS with its SPEC name, kind, Prometheus family and labels, and help text; the JSON
 * and Prometheus renderers, the metrics tests and docs/configuration.md all follow that table, so
 * a new counter is one struct field and one table line. The JSON keys are the SPEC names
 * verbatim ("s3.get_requests").
 *
 * /metrics renders FAMILIES in order: HELP and TYPE once, then the FIELDS that name the family
 * (several with labels, such as shoal_s3_requests_total{op="get"}), then what a family draws from
 * the tables of its own (S3 failures by operation and error, the histograms). Family names follow
 * Prometheus's conventions: the unit last (_bytes, _seconds), counters ending in _total, one
 * labelled family where the SPEC has one name per part. Label values come from the fixed tables
 * below, never from input, so none needs escaping and the series count is bounded.
 */
#include "node_stats.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define F(field, name, kind, family, labels, help) { name, offsetof(node_stats, field), kind, family, labels, help }
#define C NODE_STATS_COUNTER
#define G NODE_STATS_GAUGE

/* One entry per line, however long (here and in FAMILIES): a table reads as a table. */
/* clang-format off */
static const node_stats_desc FIELDS[] = {
    F(s3_get_requests, "s3.get_requests", C, "shoal_s3_requests_total", "op=\"get\"", "GET requests sent to S3."),
    F(s3_head_requests, "s3.head_requests", C, "shoal_s3_requests_total", "op=\"head\"", "HEAD requests sent to S3."),
    F(s3_list_requests, "s3.list_requests", C, "shoal_s3_requests_total", "op=\"list\"", "LIST requests sent to S3."),
    F(s3_put_requests, "s3.put_requests", C, "shoal_s3_requests_total", "op=\"put\"", "PUT requests (whole objects and multipart parts) sent to S3."),
    F(s3_delete_requests, "s3.delete_requests", C, "shoal_s3_requests_total", "op=\"delete\"", "DELETE requests sent to S3."),
    F(s3_copy_requests, "s3.copy_requests", C, "shoal_s3_requests_total", "op=\"copy\"", "Server-side COPY requests sent to S3."),
    F(s3_errors, "s3.errors", C, NULL, "", "S3 requests that failed after all retries."),
    F(s3_retries, "s3.retries", C, "shoal_s3_retries_total", "", "S3 requests retried after a throttle or transport error."),
    F(s3_stall_retries, "s3.stall_retries", C, "shoal_s3_stall_retries_total", "", "S3 requests abandoned after moving no byte for --s3-stall-timeout and sent again at once (counted in s3.retries too)."),
    F(s3_bytes_in, "s3.bytes_in", C, "shoal_s3_received_bytes_total", "", "Payload bytes received from S3."),
    F(s3_bytes_out, "s3.bytes_out", C, "shoal_s3_sent_bytes_total", "", "Payload bytes sent to S3."),
    F(reads_local, "reads.local", C, "shoal_block_reads_total", "source=\"local\"", "Block reads served from this node's store."),
    F(reads_peer, "reads.peer", C, "shoal_block_reads_total", "source=\"peer\"", "Block reads served by a peer."),
    F(reads_s3, "reads.s3", C, "shoal_block_reads_total", "source=\"s3\"", "Block reads that fetched from S3."),
    F(reads_coalesced, "reads.coalesced", C, "shoal_block_reads_coalesced_total", "", "Block reads that waited on a fetch already in flight."),
    F(reads_readahead, "reads.readahead", C, "shoal_readahead_blocks_total", "", "Blocks fetched ahead of a sequential reader."),
    F(reads_readahead_pending, "reads.readahead_pending", G, "shoal_readahead_pending_blocks", "", "Read-ahead blocks queued or being fetched right now."),
    F(reads_parts, "reads.parts", C, "shoal_part_reads_total", "", "Reads of a random reader that missed every store and fetched just their bytes from S3 (a ranged GET, not the whole block)."),
    F(reads_part_bytes, "reads.part_bytes", C, "shoal_part_read_bytes_total", "", "Bytes fetched from S3 by the reads counted in reads.parts."),
    F(reads_run_gets, "reads.run_gets", C, "shoal_block_run_gets_total", "", "S3 GETs that fetched a run of several consecutive blocks read ahead at once (one GET where one per block was sent before)."),
    F(reads_run_blocks, "reads.run_blocks", C, "shoal_block_run_blocks_total", "", "Blocks asked for by the GETs counted in reads.run_gets."),
    F(buffer_waits, "cache.buffer_waits", C, "shoal_buffer_waits_total", "",
      "Fetches that waited for a block buffer (all of --fetch-buffers were in use)."),
    F(buffer_readahead_waits, "cache.readahead_waits", C, "shoal_buffer_readahead_waits_total", "",
      "Read-ahead fetches that waited for a block buffer because read-ahead held all it may (the buffers less the reserve for needed blocks); counted in cache.buffer_waits too."),
    F(buffer_budget_bytes, "cache.buffer_budget_bytes", G, "shoal_buffer_budget_bytes", "",
      "Bytes the block buffers may map at most (--fetch-buffers buffers of the block size)."),
    F(buffer_peak_bytes, "cache.buffer_peak_bytes", G, "shoal_buffer_peak_bytes", "",
      "The most bytes the block buffers mapped at once since the daemon started (never above cache.buffer_budget_bytes)."),
    F(peer_requests_in, "peer.requests_in", C, "shoal_peer_requests_received_total", "", "Block requests received from peers."),
    F(peer_requests_out, "peer.requests_out", C, "shoal_peer_requests_sent_total", "", "Block requests sent to peers."),
    F(peer_bytes_in, "peer.bytes_in", C, "shoal_peer_received_bytes_total", "", "Block payload bytes received from peers."),
    F(peer_bytes_out, "peer.bytes_out", C, "shoal_peer_sent_bytes_total", "", "Block payload bytes sent to peers."),
    F(peer_timeouts, "peer.timeouts", C, "shoal_peer_timeouts_total", "", "Peer requests that timed out (the read moved on)."),
    F(peer_errors, "peer.errors", C, "shoal_peer_errors_total", "", "Peer requests answered with an error."),
    F(peer_bad_frames, "peer.bad_frames", C, "shoal_peer_bad_frames_total", "", "Malformed peer frames dropped."),
    F(peer_handshakes_refused, "peer.handshakes_refused", C, "shoal_peer_handshakes_refused_total", "", "Peer connections refused at the CURVE handshake: the client's key is not a member's."),
    F(peer_pushes_started, "peer.pushes_started", C, "shoal_peer_pushes_started_total", "", "Blocks pushed to an owner (written through the mount, or copies for the other owners with --replicas > 1); each ends as a push or a push failure."),
    F(peer_pushes, "peer.pushes", C, "shoal_peer_pushes_accepted_total", "", "Pushed blocks their owner accepted."),
    F(peer_push_failures, "peer.push_failures", C, "shoal_peer_push_failures_total", "", "Pushed blocks an owner refused or did not answer (it fetches them when read)."),
    F(peer_puts_refused, "peer.puts_refused", C, "shoal_peer_puts_refused_total", "", "Blocks peers pushed that this node refused (not an owner, bad length or checksum, store full)."),
    F(handoff_asks, "handoff.asks", C, "shoal_handoff_asks_total", "", "Stored copies this node, as an owner missing a block, asked of the block's other ranked members before S3."),
    F(handoff_hits, "handoff.hits", C, "shoal_handoff_hits_total", "", "Blocks this node got from another member that way instead of from S3."),
    F(handoff_blocks_in, "handoff.blocks_in", C, "shoal_handoff_received_blocks_total", "", "Blocks a draining member handed to this node, accepted."),
    F(standin_asks, "standin.asks", C, "shoal_standin_asks_total", "", "Block, metadata and listing requests this node sent to a stand-in owner (a member ranked after the owners) because no owner answered."),
    F(standin_hits, "standin.hits", C, "shoal_standin_hits_total", "", "Requests a stand-in owner answered (one fetch for the cluster instead of one per reader)."),
    F(drain_blocks_sent, "drain.blocks_sent", C, "shoal_drain_sent_blocks_total", "", "Owned blocks this node handed to their next owners while draining (one per owner that took one)."),
    F(drain_bytes_sent, "drain.bytes_sent", C, "shoal_drain_sent_bytes_total", "", "Bytes of the blocks counted in drain.blocks_sent."),
    F(drain_failures, "drain.failures", C, "shoal_drain_failures_total", "", "Owned blocks a drain could not hand off (their next owner refused, did not answer, or there was none)."),
    F(cache_bytes, "cache.bytes", G, "shoal_cache_used_bytes", "", "Bytes held by the block store."),
    F(cache_capacity, "cache.capacity", G, "shoal_cache_capacity_bytes", "", "Hard cap of the block store in bytes (--cache-size)."),
    F(cache_blocks, "cache.blocks", G, "shoal_cache_blocks", "", "Blocks held by the block store."),
    F(cache_evictions, "cache.evictions", C, "shoal_cache_evictions_total", "", "Blocks evicted to make room: under the cap, or for the file system (cache.free_space_evictions)."),
    F(cache_corrupt_blocks, "cache.corrupt_blocks", C, "shoal_cache_corrupt_blocks_total", "", "Stored blocks found damaged (checksum, header, size, not a file) and dropped, each counted once."),
    F(cache_free_space_evictions, "cache.free_space_evictions", C, "shoal_cache_free_space_evictions_total", "", "Blocks evicted to keep --cache-free-space of the file system free, or after a write found it full (part of cache.evictions)."),
    F(cache_lost_blocks, "cache.lost_blocks", C, "shoal_cache_lost_blocks_total", "", "Stored blocks whose files were removed behind the store (by hand, or with the blocks directory) and were forgotten."),
    F(members_alive, "members.alive", G, "shoal_members", "state=\"alive\"", "Members this node sees alive (itself included)."),
    F(members_suspect, "members.suspect", G, "shoal_members", "state=\"suspect\"", "Members this node suspects."),
    F(members_dead, "members.dead", G, "shoal_members", "state=\"dead\"", "Members this node knows dead or gone."),
    F(gossip_bad_packets, "gossip.bad_packets", C, "shoal_gossip_bad_packets_total", "", "Gossip packets dropped because they did not open or decode."),
    F(gossip_push_pulls, "gossip.push_pulls", C, "shoal_gossip_push_pulls_total", "", "Anti-entropy exchanges (views compared, whole states swapped when they differ) this node started."),
    F(mount_uploads, "mount.uploads", C, "shoal_mount_uploads_total", "", "Files uploaded through the mount."),
    F(mount_upload_errors, "mount.upload_errors", C, "shoal_mount_upload_errors_total", "", "Uploads through the mount that failed (close/fsync got EIO)."),
    F(mount_uploads_pending, "mount.uploads_pending", G, "shoal_mount_uploads_pending", "", "Files closed through the mount and waiting for their delayed upload (--upload-delay)."),
    F(mount_upload_retries, "mount.upload_retries", C, "shoal_mount_upload_retries_total", "", "Delayed uploads that failed and were scheduled again (the file stays staged)."),
    F(mount_opens, "mount.opens", C, "shoal_mount_opens_total", "", "Files opened or created through the mount (on a read-only mount the kernel opens files without asking, and none are counted)."),
    F(mount_bytes_read, "mount.bytes_read", C, "shoal_mount_read_bytes_total", "", "Bytes read through the mount."),
    F(mount_bytes_written, "mount.bytes_written", C, "shoal_mount_written_bytes_total", "", "Bytes written through the mount (accepted by write requests)."),
    F(mount_disk_hints, "mount.disk_hints", C, "shoal_mount_disk_hints_total", "", "Stored blocks the mount had the kernel read ahead from disk for a sequential reader (POSIX_FADV_WILLNEED), each once per run."),
};
/* clang-format on */

#undef F
#undef C
#undef G

void node_stats_create(node_stats *s)
{
    size_t n;
    const node_stats_desc *d = node_stats_fields(&n);
    for (size_t i = 0; i < n; i++)
        atomic_init((_Atomic uint64_t *)((char *)s + d[i].offset), 0);
    for (int op = 0; op < NODE_STATS_S3_OPS; op++) {
        for (int code = 0; code < NODE_STATS_S3_CODES; code++)
            atomic_init(&s->s3_failures[op][code], 0);
        shoal_hist_create(&s->s3_latency[op]);
    }
    for (int i = 0; i < NODE_STATS_SRCS; i++)
        shoal_hist_create(&s->first_byte[i]);
    shoal_hist_create(&s->peer_fetch);
    for (int i = 0; i < NODE_STATS_FUSE_OPS; i++)
        shoal_hist_create(&s->fuse_latency[i]);
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

/* ---- Prometheus --------------------------------------------------------------------------- */

/* Label values, in the order of the tables of struct node_stats. */
static const char *const S3_OPS[NODE_STATS_S3_OPS] = {"get", "head", "list", "put", "delete", "copy"};
static const char *const S3_CODES[NODE_STATS_S3_CODES] = {
    "s3",        "no_such_key", "no_such_bucket", "access_denied", "signature",   "changed", "range",
    "throttled", "transport",   "truncated",      "xml",           "credentials", "local"};
static const char *const SOURCES[NODE_STATS_SRCS] = {"local", "peer", "s3"};
static const char *const FUSE_OPS[NODE_STATS_FUSE_OPS] = {
    "lookup", "getattr", "setattr", "open",    "create", "read",   "write", "flush",
    "release", "fsync",  "readdir", "unlink", "rename", "mkdir", "rmdir"};

/* S3 failures: one series per (operation, error) that happened, so a quiet node shows none. */
static int render_s3_failures(const node_stats *s, const char *name, shoal_buf *out)
{
    for (int op = 0; op < NODE_STATS_S3_OPS; op++) {
        for (int code = 0; code < NODE_STATS_S3_CODES; code++) {
            uint64_t v = atomic_load_explicit((_Atomic uint64_t *)&s->s3_failures[op][code], memory_order_relaxed);
            if (v && shoal_buf_appendf(out, "%s{op=\"%s\",code=\"%s\"} %" PRIu64 "\n", name, S3_OPS[op],
                                       S3_CODES[code], v) < 0)
                return -1;
        }
    }
    return 0;
}

/* A row of histograms labelled `label` with the values names[0..n). */
static int render_hists(const shoal_hist *h, const char *const *names, int n, const char *label, const char *name,
                        shoal_buf *out)
{
    char labels[64];
    for (int i = 0; i < n; i++) {
        snprintf(labels, sizeof labels, "%s=\"%s\"", label, names[i]);
        if (shoal_hist_render(&h[i], name, labels, out) < 0)
            return -1;
    }
    return 0;
}

static int render_s3_latency(const node_stats *s, const char *name, shoal_buf *out)
{
    return render_hists(s->s3_latency, S3_OPS, NODE_STATS_S3_OPS, "op", name, out);
}
static int render_first_byte(const node_stats *s, const char *name, shoal_buf *out)
{
    return render_hists(s->first_byte, SOURCES, NODE_STATS_SRCS, "source", name, out);
}
static int render_peer_fetch(const node_stats *s, const char *name, shoal_buf *out)
{
    return shoal_hist_render(&s->peer_fetch, name, "", out);
}
static int render_fuse_latency(const node_stats *s, const char *name, shoal_buf *out)
{
    return render_hists(s->fuse_latency, FUSE_OPS, NODE_STATS_FUSE_OPS, "op", name, out);
}

typedef struct family {
    const char *name;
    const char *type;
    const char *help;
    int (*extra)(const node_stats *s, const char *name, shoal_buf *out); /* samples not in FIELDS */
} family;

/* clang-format off */
static const family FAMILIES[] = {
    {"shoal_s3_requests_total", "counter", "Requests sent to S3 (attempts on the wire, retries included), by operation: put is PutObject and the multipart steps, delete also AbortMultipartUpload, copy is CopyObject and UploadPartCopy.", NULL},
    {"shoal_s3_errors_total", "counter", "S3 requests that failed after all retries, by operation and error (no_such_key, access_denied, throttled, transport, ...; s3: another error S3 answered; local: this side failed).", render_s3_failures},
    {"shoal_s3_retries_total", "counter", "S3 requests retried after a throttle, a 5xx or a transport error.", NULL},
    {"shoal_s3_stall_retries_total", "counter", "S3 attempts abandoned after moving no byte for --s3-stall-timeout and sent again at once (counted in shoal_s3_retries_total too).", NULL},
    {"shoal_s3_received_bytes_total", "counter", "Payload bytes received from S3.", NULL},
    {"shoal_s3_sent_bytes_total", "counter", "Payload bytes sent to S3.", NULL},
    {"shoal_s3_request_duration_seconds", "histogram", "Time from the submission of an S3 request to its outcome, retries and their waits included, by operation.", render_s3_latency},
    {"shoal_block_reads_total", "counter", "Block reads, by where the block came from: this node's store, a peer, or S3.", NULL},
    {"shoal_block_reads_coalesced_total", "counter", "Block reads that waited on a fetch already in flight (also counted by source).", NULL},
    {"shoal_readahead_blocks_total", "counter", "Blocks fetched ahead of a sequential reader.", NULL},
    {"shoal_readahead_pending_blocks", "gauge", "Read-ahead blocks queued or being fetched right now.", NULL},
    {"shoal_part_reads_total", "counter", "Reads of a random reader that missed every store and fetched just their bytes from S3 with a ranged GET.", NULL},
    {"shoal_part_read_bytes_total", "counter", "Bytes fetched from S3 by the reads in shoal_part_reads_total.", NULL},
    {"shoal_block_run_gets_total", "counter", "S3 GETs that fetched a run of several consecutive blocks at once.", NULL},
    {"shoal_block_run_blocks_total", "counter", "Blocks asked for by the GETs in shoal_block_run_gets_total.", NULL},
    {"shoal_buffer_waits_total", "counter", "Fetches that waited for a block buffer (all of --fetch-buffers were in use).", NULL},
    {"shoal_buffer_readahead_waits_total", "counter", "Read-ahead fetches that waited for a block buffer because read-ahead held all it may.", NULL},
    {"shoal_buffer_budget_bytes", "gauge", "Bytes the block buffers may map at most (--fetch-buffers buffers of the block size).", NULL},
    {"shoal_buffer_peak_bytes", "gauge", "The most bytes the block buffers mapped at once since the daemon started.", NULL},
    {"shoal_read_time_to_first_byte_seconds", "histogram", "Time a block read waits until the block's bytes are there to return (its first byte), by where the block came from.", render_first_byte},
    {"shoal_peer_requests_received_total", "counter", "Block requests received from peers.", NULL},
    {"shoal_peer_requests_sent_total", "counter", "Block requests sent to peers.", NULL},
    {"shoal_peer_received_bytes_total", "counter", "Block payload bytes received from peers.", NULL},
    {"shoal_peer_sent_bytes_total", "counter", "Block payload bytes sent to peers.", NULL},
    {"shoal_peer_timeouts_total", "counter", "Peer requests that timed out (the read moved on to the next owner or S3).", NULL},
    {"shoal_peer_errors_total", "counter", "Peer requests answered with an error or a damaged block.", NULL},
    {"shoal_peer_bad_frames_total", "counter", "Malformed peer frames dropped.", NULL},
    {"shoal_peer_handshakes_refused_total", "counter", "Peer connections refused at the CURVE handshake: the client's key is not a member's.", NULL},
    {"shoal_peer_pushes_started_total", "counter", "Blocks pushed to an owner (written through the mount, or copies with --replicas > 1).", NULL},
    {"shoal_peer_pushes_accepted_total", "counter", "Pushed blocks their owner accepted.", NULL},
    {"shoal_peer_push_failures_total", "counter", "Pushed blocks an owner refused or did not answer.", NULL},
    {"shoal_peer_puts_refused_total", "counter", "Blocks peers pushed that this node refused.", NULL},
    {"shoal_peer_fetch_duration_seconds", "histogram", "Time of one block request to a peer, from sending to the answer, a timeout or an error.", render_peer_fetch},
    {"shoal_handoff_asks_total", "counter", "Stored copies asked of a block's other ranked members before S3.", NULL},
    {"shoal_handoff_hits_total", "counter", "Blocks got that way instead of from S3.", NULL},
    {"shoal_handoff_received_blocks_total", "counter", "Blocks a draining member handed to this node, accepted.", NULL},
    {"shoal_standin_asks_total", "counter", "Requests sent to a stand-in owner because no owner answered.", NULL},
    {"shoal_standin_hits_total", "counter", "Requests a stand-in owner answered.", NULL},
    {"shoal_drain_sent_blocks_total", "counter", "Owned blocks this node handed to their next owners while draining.", NULL},
    {"shoal_drain_sent_bytes_total", "counter", "Bytes of the blocks in shoal_drain_sent_blocks_total.", NULL},
    {"shoal_drain_failures_total", "counter", "Owned blocks a drain could not hand off.", NULL},
    {"shoal_cache_used_bytes", "gauge", "Bytes held by the block store.", NULL},
    {"shoal_cache_capacity_bytes", "gauge", "Hard cap of the block store in bytes (--cache-size).", NULL},
    {"shoal_cache_blocks", "gauge", "Blocks held by the block store.", NULL},
    {"shoal_cache_evictions_total", "counter", "Blocks evicted to make room, under the cap or for the file system.", NULL},
    {"shoal_cache_free_space_evictions_total", "counter", "Blocks evicted to keep --cache-free-space of the file system free (part of shoal_cache_evictions_total).", NULL},
    {"shoal_cache_corrupt_blocks_total", "counter", "Stored blocks found damaged and dropped.", NULL},
    {"shoal_cache_lost_blocks_total", "counter", "Stored blocks whose files were removed behind the store.", NULL},
    {"shoal_members", "gauge", "Members in this node's view, by state (alive includes this node; members that left are not counted).", NULL},
    {"shoal_gossip_bad_packets_total", "counter", "Gossip packets dropped because they did not open or decode.", NULL},
    {"shoal_gossip_push_pulls_total", "counter", "Anti-entropy exchanges this node started.", NULL},
    {"shoal_mount_opens_total", "counter", "Files opened or created through the mount (on a read-only mount the kernel opens files without asking, and none are counted).", NULL},
    {"shoal_mount_read_bytes_total", "counter", "Bytes read through the mount.", NULL},
    {"shoal_mount_written_bytes_total", "counter", "Bytes written through the mount.", NULL},
    {"shoal_mount_disk_hints_total", "counter", "Stored blocks the mount had the kernel read ahead from disk for a sequential reader.", NULL},
    {"shoal_mount_uploads_total", "counter", "Files uploaded through the mount.", NULL},
    {"shoal_mount_upload_errors_total", "counter", "Uploads through the mount that failed.", NULL},
    {"shoal_mount_uploads_pending", "gauge", "Files closed through the mount and waiting for their delayed upload (--upload-delay).", NULL},
    {"shoal_mount_upload_retries_total", "counter", "Delayed uploads that failed and were scheduled again.", NULL},
    {"shoal_fuse_operation_duration_seconds", "histogram", "Time from a FUSE request to the mount's reply, by request.", render_fuse_latency},
};
/* clang-format on */

int node_stats_render_prometheus(const node_stats *s, shoal_buf *out)
{
    for (size_t f = 0; f < sizeof FAMILIES / sizeof FAMILIES[0]; f++) {
        const family *fam = &FAMILIES[f];
        if (shoal_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", fam->name, fam->help, fam->name, fam->type) < 0)
            return -1;
        for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++) {
            const node_stats_desc *d = &FIELDS[i];
            if (!d->family || strcmp(d->family, fam->name) != 0)
                continue;
            if (shoal_buf_appendf(out, "%s%s%s%s %" PRIu64 "\n", fam->name, d->labels[0] ? "{" : "", d->labels,
                                  d->labels[0] ? "}" : "", node_stats_get(s, d)) < 0)
                return -1;
        }
        if (fam->extra && fam->extra(s, fam->name, out) < 0)
            return -1;
    }
    return 0;
}

/* ---- process metrics -------------------------------------------------------------------------- */

/* Counts the entries of /proc/self/fd (the descriptor used to read it included, as the
 * Prometheus clients count). -1 when it cannot be read. */
static long count_open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    if (!dir)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(dir)))
        n += e->d_name[0] != '.';
    closedir(dir);
    return n;
}

/* Reads `path` into buf (NUL-terminated); false when it cannot. */
static bool read_small(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return n > 0;
}

int node_stats_render_process(shoal_buf *out)
{
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    char stat[1024], btime_buf[4096];
    /* /proc/self/stat: fields after the command's closing parenthesis, which may hold spaces. */
    if (tick > 0 && read_small("/proc/self/stat", stat, sizeof stat)) {
        const char *p = strrchr(stat, ')');
        unsigned long long utime, stime, start, vsize;
        long long rss;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu "
                               "%llu %lld", &utime, &stime, &start, &vsize, &rss) == 5) {
            if (shoal_buf_appendf(out, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
                                       "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n"
                                       "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                                       "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %llu\n"
                                       "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                                       "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %lld\n",
                                  (double)(utime + stime) / (double)tick, vsize, rss * (long long)page) < 0)
                return -1;
            /* The start time is in ticks since boot; the boot time is in /proc/stat. */
            const char *bt = read_small("/proc/stat", btime_buf, sizeof btime_buf) ? strstr(btime_buf, "\nbtime ") : NULL;
            unsigned long long btime;
            if (bt && sscanf(bt, "\nbtime %llu", &btime) == 1 &&
                shoal_buf_appendf(out, "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
                                       "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
                                  (double)btime + (double)start / (double)tick) < 0)
                return -1;
        }
    }
    long fds = count_open_fds();
    if (fds >= 0 && shoal_buf_appendf(out, "# HELP process_open_fds Number of open file descriptors.\n"
                                           "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n", fds) < 0)
        return -1;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        shoal_buf_appendf(out, "# HELP process_max_fds Maximum number of open file descriptors.\n"
                               "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n", (unsigned long long)rl.rlim_cur) < 0)
        return -1;
    return 0;
}
