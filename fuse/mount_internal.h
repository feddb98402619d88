/*
 * mount_internal.h: what the rooms of fuse/ share, and nothing else sees (as libuv's
 * src/unix/internal.h). Only the rooms of fuse/ include it.
 *
 * The rooms, one concern each (mount.c's opening essay is the map):
 *
 *   mount.c            the const operations table, INIT, STATFS, and the life cycle
 *   mount_meta.c       paths, keys, versions and attributes of inodes, as every room needs them
 *   mount_lookup.c     lookups, listings and directories
 *   mount_file.c       open, read, write, close, fsync, setattr
 *   mount_stage.c      staging: stages, handles, the upload
 *   mount_writeback.c  --upload-delay: records, the write-back thread, recovery at start
 *   mount_namespace.c  unlink, mkdir, mknod, rmdir, rename, and the calls S3 cannot do
 *
 * Functions shared between rooms carry the module prefix; what one room uses alone stays static
 * in it. Handlers (mount_op_*) reply to the kernel exactly once and speak -errno; helpers return
 * 0 or -errno unless said.
 *
 * Locks. Two kinds, taken in one order: a stage's lock (s->lock) first, the mount's (m->lock)
 * inside it, never the other way round. Neither is held across a backend call except s->lock,
 * which serialises the slow work on one file (fill, upload) and nothing else.
 *
 *   m->lock        the inode table and every field of every inode (mount_inodes.h), listings,
 *                  the lists of stages and handles, m->staged_bytes, the write-back schedule
 *                  (each stage's nopen, pending, writers, unflushed, tries, due_us; wb_stop and
 *                  the wb counters) and each handle's `unflushed`
 *   s->lock        a stage's file and the state of its bytes: filled, dirty, failed,
 *                  failed_err, recorded, record_stale
 *   both           s->size and s->reserved change with both held, so either one reads them
 *   m->once_lock   the logged-once set (once, once_n); taken alone
 *   m->ra_lock     each handle's streams (h->ra; an inode's, in->ra, are m->lock's); taken alone
 *   none           what mount_new sets and nothing changes after (cfg, paths, backend, TTLs,
 *                  delay_us, started), no_open (set by INIT before any other request), and the
 *                  owner's fields (se, thread, running, wb_thread, wb_running), used only by the
 *                  thread that calls mount_start, mount_stop and mount_delete
 *
 * A function that needs a lock held says so and asserts it (SHOAL_ASSERT_LOCKED), one that
 * takes the lock itself asserts that it is not held where a caller might hold it
 * (SHOAL_ASSERT_UNLOCKED). A stage's `in` and `fd` are set when it is linked and do not change;
 * the kernel does not forget an inode while a request on it is in flight, so handlers keep
 * inode pointers across the unlocked part of their work, and a stage lives while `nopen` counts
 * a use of it.
 */
#ifndef SHOAL_MOUNT_INTERNAL_H
#define SHOAL_MOUNT_INTERNAL_H

#define FUSE_USE_VERSION 35

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "mount.h"
#include "mount_inodes.h"
#include "mount_names.h"
#include "shoal_env.h"
#include "shoal_hist.h"

#define MOUNT_IO_MAX (1u << 20)        /* max_read, max_write and the fetch chunk */
#define MOUNT_READAHEAD (4u << 20)
#define MOUNT_ONCE_SLOTS 8192          /* keys remembered by the logged-once set */
#define MOUNT_MAX_KEY 1024u              /* S3's longest key in bytes: longer paths give ENAMETOOLONG */
#define MOUNT_MAX_OBJECT (5ull << 40)  /* S3's largest object: bigger files give EFBIG */
#define MOUNT_STOP_WAIT_S 2            /* how long mount_stop waits before aborting the link */

/* The bytes of a file being written (mount_stage.c). Each field names its lock (see above). */
typedef struct mount_stage {
    pthread_mutex_t lock;
    int fd;             /* the staged file (fixed) */
    uint64_t size;      /* length of the staged file (both locks to change, either to read) */
    uint64_t reserved;  /* bytes counted against max_staging_bytes (both locks to change) */
    bool filled;        /* the object's bytes are in, or none were needed (s->lock) */
    bool dirty;         /* holds bytes the backend has not acknowledged (s->lock) */
    bool failed;        /* the last upload failed and nothing was written since (s->lock) */
    int failed_err;     /* its -errno (s->lock) */
    unsigned nopen;     /* handles plus in-flight users (m->lock) */
    /* Write-back (--upload-delay > 0). The staged file keeps a name (`file`) so a record beside
     * it (<file>.key: the key it goes to) can make a closed file survive a crash. */
    char *file;         /* the staged file's path; NULL: unnamed (upload_delay 0) */
    bool recorded;      /* its record is on disk (s->lock) */
    bool record_stale;  /* the attributes changed since the record was written (s->lock) */
    bool pending;       /* closed, waiting for its delayed upload: holds one use (m->lock) */
    unsigned writers;   /* handles open for writing: no delayed upload while any (m->lock) */
    unsigned unflushed; /* of those, the ones whose FLUSH is still to come since their last
                           change: each will publish the stage at its close (m->lock) */
    unsigned tries;     /* delayed uploads that failed in a row (m->lock) */
    uint64_t due_us;    /* when the delayed upload may start, monotonic (m->lock) */
    mount_inode *in;    /* the file it stages (fixed; the inode's fields: m->lock) */
    struct mount_stage *next, *prev; /* m->stages (m->lock) */
} mount_stage;

/* An open file or directory. Live handles are listed in the mount: the kernel drops RELEASE
 * requests still queued when the mount goes away, so mount_delete frees what is left. */
typedef struct mount_handle {
    mount_stage *stage;     /* files being written, or read while staged (fixed) */
    mount_listing *listing; /* directories (set by OPENDIR, its own thread until RELEASEDIR) */
    int flags;
    bool writer;            /* counted in stage->writers: created here, or opened to write; its
                               FLUSH uploads (or, with a delay, persists) what it changed */
    bool unflushed;         /* a writer changed the stage since its last FLUSH (m->lock) */
    bool flushed;           /* a FLUSH came: open(2) succeeded */
    char *key;              /* files read from the store: key and the version opened (fixed) */
    char etag[MOUNT_ETAG_MAX];
    mount_ra ra; /* files read from the store: the descriptor's streams (m->ra_lock) */
    struct mount_handle *next, *prev; /* m->handles (m->lock) */
} mount_handle;

/* The mount. Fields are grouped by the lock that guards them (see above). */
struct mount_view {
    /* Counters (mount_io_stats): relaxed atomics, no lock. */
    _Atomic uint64_t opens, bytes_read, bytes_written;
    shoal_hist latency[MOUNT_STATS_OPS];

    /* Set by mount_new, never changed: no lock. */
    mount_config cfg;
    char *mountpoint, *staging_dir, *prefix;
    const mount_backend *be;
    void *ctx;
    uint64_t ttl_us, neg_ttl_us;
    int64_t started;   /* wall seconds: the mtime of directories */
    uint64_t delay_us; /* --upload-delay; 0: every close uploads */
    bool no_open;      /* opens cost no request: the kernel opens files itself (set by INIT) */

    pthread_mutex_t ra_lock; /* the streams of open descriptors (mount_handle.ra): held briefly */
    pthread_mutex_t lock; /* m->lock: everything down to `wb` */
    mount_inodes *inodes;
    mount_stage *stages;
    mount_handle *handles;
    uint64_t staged_bytes;
    /* The write-back thread (mount_writeback_main) waits on wb_cond under m->lock for the next
     * due upload, a writer's close (stage->writers back to 0) or wb_stop. */
    pthread_cond_t wb_cond;
    bool wb_stop;
    mount_writeback_stats wb;

    pthread_mutex_t once_lock; /* alone: the set of keys already logged */
    char **once;               /* open-addressed */
    size_t once_n;

    /* The owner's: only the thread calling mount_start, mount_stop and mount_delete. */
    struct fuse_session *se;
    pthread_t thread; /* the session loop */
    bool running;
    atomic_bool loop_over; /* the session loop returned (set by its thread) */
    atomic_bool stopping;  /* mount_stop began: the loop's end is ours, not an unmount from outside */
    pthread_t wb_thread;
    bool wb_running;
};

/* Monotonic microseconds: the clock of every TTL and deadline of the mount. */
static inline uint64_t mount_now_us(void) { return shoal_clock_mono_us(); }

/* The inode numbered `ino`, NULL when the kernel names one the mount no longer has. m->lock held. */
static inline mount_inode *mount_get_inode(mount_view *m, fuse_ino_t ino)
{
    return mount_inodes_get(m->inodes, ino);
}

/* ---- mount_meta.c: paths, keys, versions, attributes -------------------------------------- */

/* parent + "/" + name ("name" under the root) in a new string; NULL on NOMEM. */
char *mount_child_path(const char *parent, const char *name);
/* The parent's path of `path` in a new string ("" for top-level names); NULL on NOMEM. */
char *mount_parent_path(const char *path);
/* The key of a file, or the key prefix of a directory (ending with '/'; the root's is the
 * mount's prefix itself), in a new string; NULL on NOMEM. */
char *mount_key_of(const mount_view *m, const char *path, bool dir);
/* Validates a name the kernel sent: 0, -ENAMETOOLONG, or -EINVAL for what cannot be a key. */
int mount_check_name(const char *name);
/* Resolves parent + name to a new path string in *out. m->lock held. 0, -ENOENT, -ENOTDIR,
 * -ENAMETOOLONG, -EINVAL or -ENOMEM. */
int mount_name_path(mount_view *m, fuse_ino_t parent, const char *name, char **out);
/* The attached inode at `path` of the given type, replacing one of the other type unless that
 * one is staged (then NULL, as on NOMEM). m->lock held. */
mount_inode *mount_inode_at(mount_view *m, const char *path, bool is_dir);

/* Drops a directory's listing (NULL: nothing) so the next opendir lists again. m->lock held. */
void mount_drop_listing(mount_inode *dir);
/* Forgets the listing of the directory holding `path` (it changed). m->lock held. */
void mount_invalidate_parent(mount_view *m, const char *path);
/* `in` now stands for the version `info` describes, trusted until `until`. m->lock held. */
void mount_adopt(mount_inode *in, const mount_obj_info *info, uint64_t until);
/* mount_adopt, unless a stage holds bytes of its own. m->lock held. */
void mount_learn(mount_inode *in, const mount_obj_info *info, uint64_t until);
/* Detaches `in` from its path (it stands for a version the path no longer holds); it stays
 * allocated. m->lock held. */
void mount_supersede(mount_view *m, mount_inode *in);

/* What stat shows of `in`; what the kernel caches of an entry. m->lock held. */
void mount_fill_attr(const mount_view *m, const mount_inode *in, struct stat *st);
void mount_fill_entry(const mount_view *m, const mount_inode *in, struct fuse_entry_param *e);
/* The wall clock as a file time. */
mount_time mount_time_now(void);
/* The file changed now: its mtime, and the stored one when it carries one. m->lock held. */
void mount_touch_mtime(mount_inode *in);
/* Attributes of something created now by the caller of `req`: its mode, the caller's ids, now. */
void mount_created_attrs(fuse_req_t req, mode_t mode, mount_attrs *a);

/* ---- mount_lookup.c: lookups, listings, directories --------------------------------------- */

/* Makes sure `in`'s metadata is fresh (a HEAD when older than the TTL); a file whose object has
 * another version now, or is gone, is superseded. 0 or -errno. m->lock held, dropped around the
 * backend call. */
int mount_refresh(mount_view *m, mount_inode *in);

/* What `name` in directory `parent` is, into *e (e->ino 0: a negative entry, for
 * e->entry_timeout), with a reference counted for the kernel: from the mount's caches when they
 * answer, else asking the backend (docs/semantics.md, "Metadata"). 0, or -ENOENT, -ENOTDIR,
 * -ENAMETOOLONG, -ENOMEM or the backend's -errno. m->lock not held. */
int mount_lookup(mount_view *m, fuse_ino_t parent, const char *name, struct fuse_entry_param *e);
/* Drops `nlookup` of the kernel's references on inode `ino` (unknown: nothing). m->lock held. */
void mount_forget(mount_view *m, fuse_ino_t ino, uint64_t nlookup);
/* The listing of directory `ino` for a reader, with a reference for the caller (*out; NULL on
 * failure): the directory's own when younger than --negative-ttl, else a new one from the backend,
 * which the directory keeps unless it changed meanwhile. 0 or -ENOENT, -ENOTDIR, -ENOMEM, the
 * backend's -errno. m->lock not held. */
int mount_list_dir(mount_view *m, fuse_ino_t ino, mount_listing **out);

void mount_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void mount_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void mount_op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets);
void mount_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mount_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mount_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void mount_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void mount_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mount_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);

/* ---- mount_file.c: open files and their attributes ---------------------------------------- */

void mount_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mount_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                     struct fuse_file_info *fi);
void mount_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void mount_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi);
void mount_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mount_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void mount_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mount_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                      struct fuse_file_info *fi);

/* ---- mount_stage.c: staged files and handles ---------------------------------------------- */

/* Links a new stage of `in` over the open file `fd` (`file`: its name, taken; NULL when it has
 * none) into the mount. NULL on NOMEM. m->lock held. */
mount_stage *mount_stage_link(mount_view *m, mount_inode *in, int fd, char *file);
/* A new, empty stage for `in`, linked, no uses yet. 0 or -errno. m->lock held. */
int mount_stage_new(mount_view *m, mount_inode *in, mount_stage **out);
/* Stages `in` for writing (shares a writer's stage, else fills a new one from the store unless
 * `trunc`) and takes one use and one writer of it into *out. 0 or -errno. Neither lock held. */
int mount_stage_open(mount_view *m, mount_inode *in, bool trunc, mount_stage **out);
/* Drops one use of `s`; the last one unlinks and frees it. m->lock not held. */
void mount_stage_put(mount_view *m, mount_stage *s);
/* Closes and frees a stage unlinked from the mount; its file goes too unless a record names it.
 * (mount_stage_put's last use; mount_delete.) */
void mount_stage_free(mount_stage *s);
/* Counts the staged file as `size` bytes against the cap. 0 or -ENOSPC. s->lock held. */
int mount_stage_reserve(mount_view *m, mount_stage *s, uint64_t size);
/* Sets the staged file's length. 0 or -errno. s->lock held. */
int mount_stage_truncate(mount_view *m, mount_stage *s, uint64_t size);
/* Uploads the stage when it holds unacknowledged bytes (drops it when its file was unlinked or
 * replaced). 0 or the backend's -errno. Neither lock held. */
int mount_stage_upload(mount_view *m, mount_stage *s);
/* pwrite of all `len` bytes at `off`, through EINTR. 0 or -errno. */
int mount_write_all(int fd, const char *buf, size_t len, uint64_t off);

/* Lists `h` among the live handles. m->lock held. */
void mount_handle_link(mount_view *m, mount_handle *h);
/* A writer `h` changed its stage: its next FLUSH publishes the change. m->lock held. */
void mount_handle_changed(mount_handle *h);
/* Ends a handle: unlists it, drops its listing and its use of the stage, frees it. m->lock not
 * held. */
void mount_handle_end(mount_view *m, mount_handle *h);

/* ---- mount_writeback.c: --upload-delay ---------------------------------------------------- */

/* Writes (or rewrites) the record of `s` naming `key` (`remote`: an object exists there).
 * 0 or -errno. s->lock held. */
int mount_stage_record(mount_view *m, mount_stage *s, const char *key, bool remote);
/* Close of a file written with --upload-delay: fsync, record, and its upload scheduled after the
 * delay. 0 or -errno (the bytes may not survive a crash). s->lock held. */
int mount_stage_persist(mount_view *m, mount_stage *s);
/* The stage needs no delayed upload any more: its record goes, and the use its pending upload
 * held. The caller holds a use of its own. s->lock held. */
void mount_stage_settle(mount_view *m, mount_stage *s);
/* The write-back thread (started by mount_new, `arg` the mount): uploads pending stages when due
 * until m->wb_stop. */
void *mount_writeback_main(void *arg);
/* At mount_new: takes up the records a previous run left in the staging directory. */
void mount_writeback_recover(mount_view *m);

/* ---- mount_namespace.c: changes to names, and the calls S3 cannot do ---------------------- */

void mount_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void mount_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void mount_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void mount_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void mount_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                     const char *newname, unsigned int flags);
void mount_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);
void mount_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void mount_op_readlink(fuse_req_t req, fuse_ino_t ino);
void mount_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                       size_t size, int flags);
void mount_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void mount_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void mount_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);
void mount_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                        struct fuse_file_info *fi);

#endif
