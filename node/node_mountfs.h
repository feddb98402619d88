/*
 * node_mountfs: `shoald --mount DIR`. Fills the mount's object table (fuse/mount.h, mount_backend)
 * with the daemon's parts and runs the mount for the daemon's lifetime:
 *
 *   head    the read path's metadata cache (node_cache_head: a HEAD at most once per TTL)
 *   list    ListObjectsV2 with the delimiter, page after page; the size and ETag of each entry
 *           are remembered so a read after `ls` needs no HEAD
 *   read    node_cache_read block by block (local store, owner peer, S3), pinned to the ETag the
 *           open saw: a changed object gives -ESTALE, never bytes of two versions
 *   put     s3_upload from the staged file (single PUT or parallel multipart), then the blocks go
 *           into this node's store: OWNED where this node owns them, NEAR otherwise
 *   copy    server-side copy;  remove  DeleteObject
 *
 * S3 errors become errno here, the one place that knows both: 404 ENOENT, 403 EACCES, 412
 * ESTALE, everything else (throttling, transport, malformed answers) EIO.
 */
#ifndef NODE_MOUNTFS_H
#define NODE_MOUNTFS_H

#include "node_cache.h"
#include "node_cluster.h"
#include "node_config.h"
#include "node_store.h"
#include "s3_client.h"

typedef struct node_mountfs node_mountfs;

/* The daemon's parts the mount uses, all borrowed: they must outlive the node_mountfs. */
typedef struct node_mountfs_parts {
    s3_client *s3;
    node_cache *cache;
    node_cluster *cluster; /* placement of uploaded blocks; NULL: every block is kept NEAR */
    node_store *store;
} node_mountfs_parts;

/* Mounts s3://cfg->bucket/cfg->prefix at cfg->mount with the TTLs and --read-only of cfg, staging
 * written files in <cache-dir>/staging, and starts serving (a stale mount left there by a crashed
 * daemon is detached first). cfg and parts are borrowed for the mount's life. NULL with a
 * shoal_error: SHOAL_ERR_INVAL (no mount point), SHOAL_ERR_IO (the staging directory),
 * SHOAL_ERR_MOUNT (mounting failed: no /dev/fuse, not permitted, mount point busy), NOMEM. */
node_mountfs *node_mountfs_new(const node_config *cfg, const node_mountfs_parts *parts);

/* Copies the mount's figures into st: uploads and their failures, delayed uploads
 * (--upload-delay) pending and retried, opens, bytes read and written, request latencies. Any
 * thread. */
void node_mountfs_sample(node_mountfs *fs, node_stats *st);

/* True once the mount was unmounted from outside the daemon (mount_unmounted). Any thread. */
bool node_mountfs_unmounted(node_mountfs *fs);

/* Unmounts (uploads in flight finish first; see mount_stop) and frees. Accepts NULL. */
void node_mountfs_delete(node_mountfs *fs);

#endif
