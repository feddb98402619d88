/*
 * mount: the POSIX view of the bucket (libfuse3 low-level API, multi-threaded).
 *
 * The mount knows nothing of S3, peers or the block cache. It declares here the small table of
 * object-level operations it needs (mount_backend) and the daemon fills it in (node/), so this
 * folder never includes the daemon's headers. Everything POSIX lives on this side: inode numbers,
 * the key mapping (mount_names.h), attribute and listing caches with their TTLs, staging of
 * written files, rename rules, and the errno of every refusal (docs/semantics.md).
 *
 *   mount_config cfg;
 *   mount_config_defaults(&cfg);
 *   cfg.mountpoint = "/mnt/data"; cfg.staging_dir = "/var/cache/shoal/staging";
 *   mount_view *m = mount_new(&cfg, &my_backend, my_ctx);
 *   mount_start(m);          ... the kernel now sends requests to the loop thread ...
 *   mount_delete(m);         unmounts and frees
 */
#ifndef SHOAL_MOUNT_H
#define SHOAL_MOUNT_H

#include "shoal_hist.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Room for an ETag as S3 sends it, quotes included ("<32 hex>-<parts>"), with its NUL. */
#define MOUNT_ETAG_MAX 96

/* File attributes kept with an object as user metadata, under the names s3fs uses
 * (x-amz-meta-mode, -uid, -gid, -mtime, -atime), so a bucket written by either shows the same
 * modes, owners and times through the other. `set` says which fields the object carries; the
 * mount shows its defaults for the others (docs/semantics.md, "Attributes"). */
#define MOUNT_ATTR_MODE 0x1u  /* mode: st_mode, type and permission bits (s3fs: decimal) */
#define MOUNT_ATTR_UID 0x2u
#define MOUNT_ATTR_GID 0x4u
#define MOUNT_ATTR_MTIME 0x8u /* mtime: seconds and nanoseconds ("S" or "S.NNNNNNNNN") */
#define MOUNT_ATTR_ATIME 0x10u

typedef struct mount_time {
    int64_t sec;
    uint32_t nsec;
} mount_time;

typedef struct mount_attrs {
    unsigned set;     /* MOUNT_ATTR_* bits of the fields below that hold a value */
    uint32_t mode;
    uint32_t uid, gid;
    mount_time mtime, atime;
} mount_attrs;

/* What the backend knows of one object. */
typedef struct mount_obj_info {
    uint64_t size;
    int64_t mtime;               /* Unix seconds (S3 LastModified) */
    char etag[MOUNT_ETAG_MAX];   /* NUL-terminated; "" when unknown */
    bool has_attrs;              /* `attrs` is what the object carries (HEAD, upload, copy);
                                    false when unknown (a listing says nothing of metadata) */
    mount_attrs attrs;
} mount_obj_info;

/* Called once per listing entry. `key` is the full key (the listed prefix included), `key_len`
 * bytes, not NUL-terminated in general. `is_prefix` marks a common prefix (a key ending with the
 * delimiter that stands for everything under it); `info` is NULL for a common prefix. Returns 0
 * to go on, anything else to stop the listing early (the list call then returns 0). */
typedef int (*mount_list_fn)(void *ud, const char *key, size_t key_len, bool is_prefix,
                             const mount_obj_info *info);

/*
 * The object operations the mount needs; node/ fills them in with S3 plus the cluster cache.
 * Every call may come from any of the loop's threads at once: the backend is thread-safe.
 * Errors come back as -errno, already translated by the backend (the mount passes them on to
 * the kernel as they are): -ENOENT no such key, -ESTALE the object no longer has the ETag asked
 * for, -EIO any other failure of the store or the network, -ENOSPC/-ENOMEM local exhaustion,
 * -EACCES access denied. Keys are full keys, the mount's prefix included, NUL-terminated.
 */
typedef struct mount_backend {
    /* Size, ETag, mtime and attributes (has_attrs true) of `key`. 0, -ENOENT, or another -errno. */
    int (*head)(void *ctx, const char *key, mount_obj_info *out);
    /* Lists keys starting with `prefix`, rolling keys that contain `delimiter` after the prefix
     * into common prefixes (S3 ListObjectsV2 semantics, sorted by key). Pages internally and
     * calls `cb` for every entry, stopping after `max_entries` entries when it is not 0. */
    int (*list)(void *ctx, const char *prefix, const char *delimiter, size_t max_entries,
                mount_list_fn cb, void *ud);
    /* Optional (NULL: list is used). Lists a whole directory like list, but may answer from a
     * listing shared by every client of the store, up to the metadata TTL old; *age_us gets how
     * old (of its oldest page). The mount uses it to revalidate an expired listing for lookups,
     * never for `ls`, which must show new objects sooner. 0 or -errno. */
    int (*list_shared)(void *ctx, const char *prefix, const char *delimiter, mount_list_fn cb, void *ud,
                       uint64_t *age_us);
    /* Reads up to `len` bytes at `offset` of the version of `key` whose ETag is `etag` into
     * `buf`. Returns the bytes read (fewer than `len` only at the end of the object, 0 at or past
     * it), -ESTALE when the object changed, -ENOENT when it is gone, or another -errno.
     * `run` says how the file is read (mount_ra.h): the bytes of the sequential run this read
     * ends, 0 for a random read (a seek); the backend decides from it what to fetch ahead. */
    ssize_t (*read)(void *ctx, const char *key, const char *etag, uint64_t offset, size_t len, void *buf, uint64_t run);
    /* Uploads `size` bytes read from `fd` (with pread, from offset 0; the fd stays the caller's)
     * as `key` with the attributes `attrs` (NULL or none set: no metadata), replacing any object
     * there; the backend picks a single PUT or a multipart upload. `fd` is -1 when `size` is 0
     * (directory markers, empty files). Returns only once the store acknowledged the object,
     * filling `out` with its size, ETag, mtime and attributes: 0 or -errno. An upload the store
     * may have committed although the answer was lost is resolved by asking it, never reported
     * as failed when it landed; after a failure the key holds what it held before. */
    int (*put)(void *ctx, const char *key, int fd, uint64_t size, const mount_attrs *attrs,
               mount_obj_info *out);
    /* Server-side copy of `src` to `dst` (replacing `dst`; `src` == `dst` is allowed): the
     * source's attributes kept when `attrs` is NULL, else replaced by `attrs`. Fills `out` with
     * the new object's metadata. 0, -ENOENT when `src` does not exist, or another -errno. */
    int (*copy)(void *ctx, const char *src, const char *dst, const mount_attrs *attrs,
                mount_obj_info *out);
    /* Deletes `key`; deleting a key that does not exist is a success (as in S3). 0 or -errno. */
    int (*remove)(void *ctx, const char *key);
} mount_backend;

typedef struct mount_config {
    const char *mountpoint;      /* existing, empty directory */
    const char *prefix;          /* key prefix the mount shows ("" or NULL: the whole bucket);
                                    "data" and "data/" both mean keys under "data/" */
    const char *staging_dir;     /* where written files are staged until uploaded (created 0700) */
    uint64_t max_staging_bytes;  /* cap of all staged bytes together; 0: only the disk's space */
    double upload_delay;         /* seconds a closed file waits, unchanged, before its upload
                                    starts (write-back). 0 (default): close uploads and returns
                                    the upload's error. > 0: close makes the staged bytes durable
                                    in staging_dir and returns; fsync still uploads at once.
                                    Pending uploads left by a crash are found at mount_new. */
    double metadata_ttl;         /* seconds a listing or size/ETag is trusted (default 60) */
    double negative_ttl;         /* seconds "no such key" is trusted (default 5) */
    bool read_only;              /* every mutating call fails with EROFS */
    bool allow_other;            /* let other users see the mount (needs user_allow_other) */
    uid_t uid;                   /* owner reported for every file and directory */
    gid_t gid;
    mode_t file_mode;            /* permission bits reported for files (default 0644) */
    mode_t dir_mode;             /* and for directories (default 0755) */
} mount_config;

typedef struct mount_view mount_view;

/* Fills `cfg` with the defaults: TTLs 60 s and 5 s, modes 0644/0755, the process's uid/gid,
 * read-write, no staging cap; mountpoint and staging_dir NULL (the caller must set them). */
void mount_config_defaults(mount_config *cfg);

/* Checks the configuration and creates a mount that is not mounted yet. Copies what it needs
 * from `cfg`; `backend` and `ctx` must outlive the mount. Pending uploads a previous run left in
 * the staging directory (upload_delay) are taken up: shown by the mount and uploaded at once by
 * the write-back thread, which starts here. NULL with SHOAL_ERR_INVAL (a bad value, named) or
 * SHOAL_ERR_IO (the staging directory cannot be created). */
mount_view *mount_new(const mount_config *cfg, const mount_backend *backend, void *ctx);

/* Cleans a stale mount left at the mount point (mount_cleanup_stale), mounts, and starts the
 * multi-threaded session loop on a thread of its own. -1 with SHOAL_ERR_MOUNT when mounting
 * fails (the message says why: no /dev/fuse, not permitted, mount point busy...).
 * Process-wide: installs a handler (one that does nothing) for the real-time signal SIGRTMIN + 4,
 * which mount_stop sends to the loop thread to wake it; the program must leave that signal to
 * the mount. */
int mount_start(mount_view *m);

/* Unmounts (lazily if files are still open) and waits for the loop to end. When open files
 * keep the connection alive for 2 s, aborts it (those files then fail with ENOTCONN) and waits
 * for the handlers in flight, uploads included, to finish. A copy of the mount in another mount
 * namespace does not keep the loop: the connection ends, and the copy answers ENOTCONN.
 * Idempotent; 0, or -1 with
 * SHOAL_ERR_MOUNT when the loop did not end and the connection could not be aborted. */
int mount_stop(mount_view *m);

/* True once the mount was taken away from outside (`umount DIR`, `fusermount3 -u DIR`): its
 * session loop ended without mount_stop. The owner decides what follows (shoald leaves the
 * cluster and exits, as FUSE file systems do when unmounted). Any thread; false for NULL. */
bool mount_unmounted(mount_view *m);

/* The delayed uploads (upload_delay > 0, and those recovered at start); counters since
 * mount_new, except `pending`. */
typedef struct mount_writeback_stats {
    uint64_t pending;   /* files closed and waiting for their upload (gauge) */
    uint64_t uploaded;  /* delayed uploads the store acknowledged */
    uint64_t retries;   /* delayed uploads that failed and were scheduled again (logged) */
    uint64_t recovered; /* pending uploads found in the staging directory by mount_new */
} mount_writeback_stats;

void mount_writeback_stats_get(mount_view *m, mount_writeback_stats *out);

/* The requests whose time the mount measures, from the kernel's request to the reply (READDIRPLUS
 * counts as READDIR). */
enum {
    MOUNT_STATS_LOOKUP, MOUNT_STATS_GETATTR, MOUNT_STATS_SETATTR, MOUNT_STATS_OPEN, MOUNT_STATS_CREATE,
    MOUNT_STATS_READ, MOUNT_STATS_WRITE, MOUNT_STATS_FLUSH, MOUNT_STATS_RELEASE, MOUNT_STATS_FSYNC,
    MOUNT_STATS_READDIR, MOUNT_STATS_UNLINK, MOUNT_STATS_RENAME, MOUNT_STATS_MKDIR, MOUNT_STATS_RMDIR,
    MOUNT_STATS_OPS
};

/* What went through the mount since mount_new. */
typedef struct mount_io_stats {
    uint64_t opens;         /* files opened or created (answered OPEN and CREATE requests; a
                               read-only mount lets the kernel open files without asking) */
    uint64_t bytes_read;    /* bytes READ requests answered */
    uint64_t bytes_written; /* bytes WRITE requests accepted */
    shoal_hist_counts latency[MOUNT_STATS_OPS];
} mount_io_stats;

/* Reads the counters (any thread). */
void mount_io_stats_get(mount_view *m, mount_io_stats *out);

/* Stops the mount if it runs, tries every pending delayed upload once (what still fails stays
 * in the staging directory for the next start), and frees it. Accepts NULL. */
void mount_delete(mount_view *m);

/* When `mountpoint` is a dead FUSE mount (statfs fails with ENOTCONN: its daemon crashed), detaches
 * it (umount2 MNT_DETACH, or `fusermount3 -u -z` when not permitted). 0 when the mount point is
 * usable afterwards (or was already), -1 with SHOAL_ERR_MOUNT otherwise. */
int mount_cleanup_stale(const char *mountpoint);

#endif
