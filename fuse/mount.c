/*
 * mount: the libfuse3 low-level filesystem over a mount_backend (docs/semantics.md is the
 * user-facing contract; this is how it is kept).
 *
 * Shape. As in libfuse's passthrough_ll, each handler in the const `mount_ops` table decodes its
 * request, does the work and replies exactly once. This file is the FUSE edge: its helpers return
 * 0 or -errno (what the kernel wants) and backend errors arrive as -errno already; only
 * mount_new/start/stop speak the project's shoal_error convention.
 *
 * Locking. One mutex (m->lock) guards the inode table, every inode field, listings, the list of
 * stages and the staging byte count; it is never held across a backend call or a read/write of
 * a staged file, so slow S3 calls of one request never stall the others. Each stage has its own
 * mutex serialising fill, write, truncate, upload and rename of that file. Order: a stage lock
 * may be taken first and m->lock inside it, never the other way round. The kernel does not
 * forget an inode while a request on it is in flight, so handlers keep inode pointers across
 * unlocked sections; a stage is kept alive by its `nopen` count (handles and in-flight users).
 *
 * Metadata. An inode's size/ETag is trusted until attr_until (learnt + --metadata-ttl); the
 * kernel's entry and attribute timeouts are the same TTL. A directory listing is fetched whole
 * on opendir (the backend pages) unless the last one is younger than --negative-ttl, and it
 * answers later lookups of its children for --metadata-ttl (no HEAD per file after `ls`); a name
 * it does not hold is "no such file" only for --negative-ttl. A lookup nothing answers asks the
 * backend: a one-entry LIST of "name/" (a directory wins over a file: mount_names.h), then HEAD.
 *
 * Reads. A file inode stands for one version (ETag) of its object, and every read asks the
 * backend for that ETag, so a reader never gets a splice of two versions (-ESTALE instead). When
 * a lookup, a listing or a HEAD learns another version, the path gets a new inode (supersede):
 * the kernel, revalidating the name after the entry TTL, sees another node id and drops the old
 * dentry with its pages; descriptors open on the old inode keep its version. That is
 * close-to-open: an open after --metadata-ttl revalidates the name, which asks the store.
 * On a --read-only mount nothing is left to do at open or close, so OPEN and FLUSH answer ENOSYS
 * and the kernel stops sending OPEN, FLUSH and RELEASE: a cached file costs no round trip, and
 * reads arrive with fh 0 (the inode names key and ETag). On a writable mount OPEN records the
 * ETag in a handle (an open of a superseded inode gets ESTALE, which makes open(2) look the name
 * up again), read-only descriptors skip FLUSH (FOPEN_NOFLUSH), and the page cache is kept across
 * opens while the ETag is the one the cache was filled with (inode->cache_etag).
 *
 * Writes. A file opened for writing is staged: a temporary file in the staging directory (already
 * unlinked, so a crash leaves nothing), filled with the object's bytes first unless O_TRUNC.
 * flush (each close of a descriptor open for writing) and fsync upload it when dirty and return
 * the backend's error; a failed upload is not retried behind the caller's back. rename of a
 * file whose bytes exist only in a stage moves the key it will be uploaded under; anything that
 * exists as an object is renamed by copy + remove. The staging cap counts the largest size each
 * staged file reached; a write past it gets ENOSPC before a byte is written.
 *
 * Write-back (upload_delay > 0, opt-in). Stages keep a name, and flush makes a dirty stage
 * durable instead of uploading it (stage_persist: fsync, then a record <stage>.key naming the
 * key) and marks it pending, which holds one use of the stage so it outlives its handles. The
 * write-back thread (wb_main) uploads a pending stage once it is due (closed and unchanged for
 * the delay) and no handle has it open for writing; a failure is retried with backoff. rename
 * rewrites the record, unlink and replacement drop it, fsync uploads at once; each successful
 * upload or drop ends with stage_settle (record removed, pending use released). mount_new takes
 * up the records a crash left (recover); mount_delete tries every pending upload once.
 */
#define FUSE_USE_VERSION 35

#include "mount.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mount_inodes.h"
#include "mount_names.h"
#include "shoal_array.h"
#include "shoal_assert.h"
#include "shoal_env.h"
#include "shoal_error.h"
#include "shoal_log.h"

#define MOUNT_IO_MAX (1u << 20)        /* max_read, max_write and the fetch chunk */
#define MOUNT_READAHEAD (4u << 20)
#define MOUNT_ONCE_SLOTS 8192          /* keys remembered by the logged-once set */
#define MOUNT_MAX_KEY 1024u              /* S3's longest key in bytes: longer paths give ENAMETOOLONG */
#define MOUNT_MAX_OBJECT (5ull << 40)  /* S3's largest object: bigger files give EFBIG */
#define MOUNT_STOP_WAIT_S 2            /* how long mount_stop waits before aborting the link */

typedef struct mount_stage {
    pthread_mutex_t lock;
    int fd;
    uint64_t size;      /* length of the staged file (read by getattr under m->lock) */
    uint64_t reserved;  /* bytes counted against max_staging_bytes */
    bool filled;        /* the object's bytes are in (or none were needed) */
    bool dirty;         /* holds bytes the backend has not acknowledged */
    bool failed;        /* the last upload failed and nothing was written since */
    int failed_err;     /* its -errno */
    unsigned nopen;     /* handles plus in-flight users; under m->lock */
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
    mount_inode *in;
    struct mount_stage *next, *prev;
} mount_stage;

/* An open file or directory. Live handles are listed in the mount: the kernel drops RELEASE
 * requests still queued when the mount goes away, so mount_delete frees what is left. */
typedef struct mount_handle {
    mount_stage *stage;     /* files being written, or read while staged */
    mount_listing *listing; /* directories */
    int flags;
    bool writer;            /* counted in stage->writers: created here, or opened to write; its
                               FLUSH uploads (or, with a delay, persists) what it changed */
    bool unflushed;         /* a writer changed the stage since its last FLUSH (m->lock) */
    bool flushed;           /* a FLUSH came: open(2) succeeded */
    char *key;              /* files read from the store: key and the version opened */
    char etag[MOUNT_ETAG_MAX];
    struct mount_handle *next, *prev;
} mount_handle;

struct mount_view {
    mount_config cfg;
    char *mountpoint, *staging_dir, *prefix;
    const mount_backend *be;
    void *ctx;
    uint64_t ttl_us, neg_ttl_us;
    int64_t started; /* wall seconds: the mtime of directories */
    bool no_open;    /* opens cost no request: the kernel opens files itself (op_init) */

    pthread_mutex_t lock;
    mount_inodes *inodes;
    mount_stage *stages;
    mount_handle *handles;
    uint64_t staged_bytes;

    /* The write-back thread (wb_main): uploads pending stages when due. Under m->lock. */
    uint64_t delay_us;
    pthread_cond_t wb_cond;
    pthread_t wb_thread;
    bool wb_running, wb_stop;
    mount_writeback_stats wb;

    pthread_mutex_t once_lock;
    char **once;     /* open-addressed set of keys already logged */
    size_t once_n;

    struct fuse_session *se;
    pthread_t thread;
    bool running;
    atomic_bool loop_over; /* the session loop returned (set by its thread) */
    atomic_bool stopping;  /* mount_stop began: the loop's end is ours, not an unmount from outside */
};

/* ---- small helpers ------------------------------------------------------------------------ */

static uint64_t now_us(void) { return shoal_clock_mono_us(); }

static char *child_path(const char *parent, const char *name)
{
    char *p;
    if (asprintf(&p, "%s%s%s", parent, *parent ? "/" : "", name) < 0)
        return NULL;
    return p;
}

/* The parent's path of `path` in a new string ("" for top-level names). */
static char *parent_path(const char *path)
{
    const char *slash = strrchr(path, '/');
    return strndup(path, slash ? (size_t)(slash - path) : 0);
}

/* The key of a file, or the key prefix of a directory (ending with '/', the root's is the
 * mount's prefix itself). */
static char *key_of(const mount_view *m, const char *path, bool dir)
{
    char *k;
    bool slash = dir && *path;
    if (asprintf(&k, "%s%s%s", m->prefix, path, slash ? "/" : "") < 0)
        return NULL;
    return k;
}

/* True the first time `key` is seen by this mount (so a bad key is logged once, not per ls).
 * After MOUNT_ONCE_SLOTS/2 keys it says so once and stops logging. */
static bool log_once(mount_view *m, const char *key)
{
    bool first = false;
    pthread_mutex_lock(&m->once_lock);
    if (m->once_n >= MOUNT_ONCE_SLOTS / 2) {
        if (m->once_n == MOUNT_ONCE_SLOTS / 2) {
            LOG_WARN("mount", "log_suppressed", "reason=\"too many unmappable keys\" shown=%zu",
                     m->once_n);
            m->once_n++;
        }
        goto out;
    }
    size_t i = (size_t)mount_names_hash(key) & (MOUNT_ONCE_SLOTS - 1);
    while (m->once[i] && strcmp(m->once[i], key) != 0)
        i = (i + 1) & (MOUNT_ONCE_SLOTS - 1);
    if (!m->once[i] && (m->once[i] = strdup(key)) != NULL) {
        m->once_n++;
        first = true;
    }
out:
    pthread_mutex_unlock(&m->once_lock);
    return first;
}

static void drop_listing(mount_inode *dir)
{
    if (dir) {
        mount_listing_unref(dir->listing);
        dir->listing = NULL;
        dir->list_gen++;
    }
}

/* Forgets the listing of the directory holding `path` (it changed); m->lock held. */
static void invalidate_parent(mount_view *m, const char *path)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    char *pp = parent_path(path);
    if (pp)
        drop_listing(mount_inodes_find(m->inodes, pp));
    free(pp);
}

/* `in` now stands for the version `info` describes (m->lock held). */
static void adopt(mount_inode *in, const mount_obj_info *info, uint64_t until)
{
    /* A listing says nothing of metadata: attributes known for this very version stay. */
    bool keep = !info->has_attrs && in->info.has_attrs && strcmp(in->info.etag, info->etag) == 0;
    mount_attrs kept = in->info.attrs;
    in->info = *info;
    if (keep) {
        in->info.has_attrs = true;
        in->info.attrs = kept;
    }
    in->remote = true;
    in->attr_until = until;
}

/* What the store says of `in`, unless a stage holds bytes of its own (m->lock held). */
static void learn(mount_inode *in, const mount_obj_info *info, uint64_t until)
{
    if (in->stage)
        return; /* the staged bytes are the truth until they are uploaded */
    adopt(in, info, until);
}

/* An inode stands for one version of its object. When the path learns another version (or that
 * the object is gone), its inode is superseded: detached from the path, so the next lookup gets
 * a new inode number; the kernel, seeing another number for the name, drops the old dentry and
 * its pages. Descriptors still open on the old inode keep reading the old ETag (ESTALE once that
 * version is gone), never the new bytes. m->lock held; `in` stays allocated. */
static void supersede(mount_view *m, mount_inode *in)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    in->stale = true;
    mount_inodes_detach(m->inodes, in);
}

/* Supersedes the file inode at `path` when `info` describes another version of its object (a
 * NULL `info`: no object). Staged files are left alone (their bytes are the truth until
 * uploaded). m->lock held. */
static void check_version(mount_view *m, const char *path, bool is_dir,
                          const mount_obj_info *info)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    mount_inode *in = mount_inodes_find(m->inodes, path);
    if (in && !in->is_dir && in->remote && !in->stage &&
        (!info || is_dir || strcmp(in->info.etag, info->etag) != 0)) {
        supersede(m, in);
        mount_inodes_maybe_free(m->inodes, in);
    }
}

static struct timespec to_timespec(mount_time t)
{
    return (struct timespec){.tv_sec = (time_t)t.sec, .tv_nsec = (long)t.nsec};
}

/* What stat shows: the attributes the object carries, the mount's defaults for the rest (and
 * S3's LastModified as the mtime of a file that carries none). */
static void fill_attr(const mount_view *m, const mount_inode *in, struct stat *st)
{
    const mount_attrs *a = &in->info.attrs; /* set is 0 when unknown */
    memset(st, 0, sizeof *st);
    st->st_ino = in->ino;
    st->st_uid = (a->set & MOUNT_ATTR_UID) ? a->uid : m->cfg.uid;
    st->st_gid = (a->set & MOUNT_ATTR_GID) ? a->gid : m->cfg.gid;
    st->st_nlink = !in->is_dir && in->detached ? 0 : 1; /* unlinked or replaced: no name */
    st->st_blksize = MOUNT_IO_MAX;
    mode_t perm = (a->set & MOUNT_ATTR_MODE) ? a->mode : in->is_dir ? m->cfg.dir_mode : m->cfg.file_mode;
    if (in->is_dir) {
        st->st_mode = S_IFDIR | (perm & 07777);
        st->st_size = 4096;
        st->st_mtim.tv_sec = m->started;
    } else {
        st->st_mode = S_IFREG | (perm & 07777);
        st->st_size = (off_t)(in->stage ? in->stage->size : in->info.size);
        st->st_mtim.tv_sec = in->info.mtime;
    }
    if (a->set & MOUNT_ATTR_MTIME)
        st->st_mtim = to_timespec(a->mtime);
    st->st_blocks = (st->st_size + 511) / 512;
    st->st_atim = (a->set & MOUNT_ATTR_ATIME) ? to_timespec(a->atime) : st->st_mtim;
    st->st_ctim = st->st_mtim;
}

static mount_time time_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (mount_time){.sec = ts.tv_sec, .nsec = (uint32_t)ts.tv_nsec};
}

/* The file changed now (m->lock held): its mtime, and the stored one when it carries one. */
static void touch_mtime(mount_inode *in)
{
    mount_time now = time_now();
    in->info.mtime = now.sec;
    if (in->info.attrs.set & MOUNT_ATTR_MTIME)
        in->info.attrs.mtime = now;
}

/* Attributes of something created now by the caller of `req`: its mode, the caller's ids, now. */
static void new_attrs(fuse_req_t req, mode_t mode, mount_attrs *a)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    memset(a, 0, sizeof *a);
    a->set = MOUNT_ATTR_MODE | MOUNT_ATTR_UID | MOUNT_ATTR_GID | MOUNT_ATTR_MTIME;
    a->mode = (uint32_t)mode;
    a->uid = (uint32_t)ctx->uid;
    a->gid = (uint32_t)ctx->gid;
    a->mtime = time_now();
}

static void fill_entry(const mount_view *m, const mount_inode *in, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    e->ino = in->ino;
    e->generation = 1;
    fill_attr(m, in, &e->attr);
    e->attr_timeout = m->cfg.metadata_ttl;
    e->entry_timeout = m->cfg.metadata_ttl;
}

static mount_inode *get_inode(mount_view *m, fuse_ino_t ino)
{
    return mount_inodes_get(m->inodes, ino);
}

/* The attached inode at `path` of the given type, replacing one of the other type unless that
 * one is staged (then NULL: the local file wins until it is uploaded). m->lock held. */
static mount_inode *inode_at(mount_view *m, const char *path, bool is_dir)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    mount_inode *in = mount_inodes_find(m->inodes, path);
    if (in && in->is_dir != is_dir) {
        if (in->stage)
            return NULL;
        mount_inodes_detach(m->inodes, in);
        mount_inodes_maybe_free(m->inodes, in);
    }
    return mount_inodes_get_path(m->inodes, path, is_dir);
}

/* Validates a name the kernel sent: 0, -ENAMETOOLONG, or -EINVAL for what cannot be a key. */
static int check_name(const char *name)
{
    switch (mount_names_check(name, strlen(name))) {
    case MOUNT_NAME_OK: return 0;
    case MOUNT_NAME_TOO_LONG: return -ENAMETOOLONG;
    default: return -EINVAL;
    }
}

/* Resolves parent + name to a new path string; m->lock held. */
static int name_path(mount_view *m, fuse_ino_t parent, const char *name, char **out)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    int rc = check_name(name);
    if (rc)
        return rc;
    mount_inode *p = get_inode(m, parent);
    if (!p)
        return -ENOENT;
    if (!p->is_dir)
        return -ENOTDIR;
    *out = child_path(p->path, name);
    if (*out && strlen(m->prefix) + strlen(*out) > MOUNT_MAX_KEY) {
        free(*out);
        *out = NULL;
        return -ENAMETOOLONG;
    }
    return *out ? 0 : -ENOMEM;
}

/* ---- listings ----------------------------------------------------------------------------- */

typedef struct list_acc {
    mount_view *m;
    const char *dir_prefix;
    size_t dir_len;
    mount_dirent *e;
    size_t n, cap;
    int err;
} list_acc;

static int acc_push(list_acc *a, const char *name, size_t len, bool is_dir,
                    const mount_obj_info *info)
{
    if (SHOAL_ARRAY_GROW(a->e, a->n, a->cap) != 0)
        return -ENOMEM;
    mount_dirent *d = &a->e[a->n];
    memset(d, 0, sizeof *d);
    d->name = strndup(name, len);
    if (!d->name)
        return -ENOMEM;
    d->is_dir = is_dir;
    if (info)
        d->info = *info;
    a->n++;
    return 0;
}

static int on_list_entry(void *ud, const char *key, size_t key_len, bool is_prefix,
                         const mount_obj_info *info)
{
    list_acc *a = ud;
    const char *name = NULL;
    size_t len = 0;
    mount_name_verdict why;
    mount_child_kind kind =
        mount_names_child(a->dir_prefix, a->dir_len, key, key_len, is_prefix, &name, &len, &why);
    if (kind == MOUNT_CHILD_SELF)
        return 0;
    if (kind == MOUNT_CHILD_SKIP) {
        char *k = strndup(key, key_len); /* stops at a NUL byte; key_len tells the rest */
        char q[512];
        if (k && log_once(a->m, k))
            LOG_WARN("mount", "key_skipped", "key=%s key_len=%zu reason=\"%s\"",
                     shoal_log_q(q, sizeof q, k), key_len, mount_names_verdict_text(why));
        free(k);
        return 0;
    }
    a->err = acc_push(a, name, len, kind == MOUNT_CHILD_DIR,
                      kind == MOUNT_CHILD_FILE ? info : NULL);
    return a->err;
}

typedef struct shadow_ctx {
    mount_view *m;
    const char *dir_prefix;
} shadow_ctx;

static void on_shadowed(void *ud, const mount_dirent *file)
{
    shadow_ctx *c = ud;
    char *key;
    char q[512];
    if (asprintf(&key, "%s%s", c->dir_prefix, file->name) < 0)
        return;
    if (log_once(c->m, key))
        LOG_WARN("mount", "file_shadowed", "key=%s reason=\"a directory has the same name\"",
                 shoal_log_q(q, sizeof q, key));
    free(key);
}

/* Lists the directory at `path` into a new listing (refs 1). 0 or -errno. */
static int fetch_listing(mount_view *m, const char *path, mount_listing **out)
{
    int rc = -ENOMEM;
    list_acc a = {.m = m};
    char *prefix = key_of(m, path, true);
    mount_listing *l = calloc(1, sizeof *l);
    if (!prefix || !l)
        goto fail;
    a.dir_prefix = prefix;
    a.dir_len = strlen(prefix);
    l->listed_at = now_us();
    rc = m->be->list(m->ctx, prefix, "/", 0, on_list_entry, &a);
    if (rc == 0)
        rc = a.err;
    if (rc != 0)
        goto fail;
    shadow_ctx sc = {m, prefix};
    l->refs = 1;
    l->e = a.e;
    l->n_alloc = a.n;
    l->cap = a.cap;
    l->n = mount_names_resolve(a.e, a.n, on_shadowed, &sc);
    free(prefix);
    *out = l;
    return 0;

fail:
    for (size_t i = 0; i < a.n; i++)
        free(a.e[i].name);
    free(a.e);
    free(l);
    free(prefix);
    return rc;
}

/* Adds the staged files of directory `path` that the listing does not show yet (created but not
 * uploaded). m->lock held; on NOMEM the listing simply lacks them. */
static void merge_staged(mount_view *m, const char *path, mount_listing *l)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    size_t plen = strlen(path);
    size_t added = 0;
    for (mount_stage *s = m->stages; s; s = s->next) {
        const char *p = s->in->path;
        if (s->in->detached || strncmp(p, path, plen) != 0)
            continue;
        const char *name = p + plen + (plen ? 1 : 0);
        if ((plen && p[plen] != '/') || strchr(name, '/') || mount_names_find(l->e, l->n, name))
            continue;
        if (SHOAL_ARRAY_GROW(l->e, l->n_alloc, l->cap) != 0)
            return;
        mount_dirent *e = l->e;
        /* Put the new entry at l->n, moving the first dropped duplicate to the end. */
        e[l->n_alloc] = e[l->n];
        memset(&e[l->n], 0, sizeof e[l->n]);
        l->n_alloc++;
        e[l->n].name = strdup(name);
        if (!e[l->n].name)
            break;
        l->n++;
        added++;
    }
    if (added)
        l->n = mount_names_resolve(l->e, l->n, NULL, NULL);
}

/* ---- lookups ------------------------------------------------------------------------------ */

static int count_entry(void *ud, const char *key, size_t key_len, bool is_prefix,
                       const mount_obj_info *info)
{
    (*(size_t *)ud)++;
    return 0;
}

/* Asks the backend what `path` is: a directory when anything is under "path/" (the directory
 * wins over a file of the same name), else a file when HEAD finds it. 0, -ENOENT or -errno. */
static int probe(mount_view *m, const char *path, bool *is_dir, mount_obj_info *info)
{
    int rc = -ENOMEM;
    size_t n = 0;
    char *dkey = key_of(m, path, true), *fkey = key_of(m, path, false);
    if (!dkey || !fkey)
        goto out;
    rc = m->be->list(m->ctx, dkey, "/", 1, count_entry, &n);
    if (rc == 0 && n > 0) {
        *is_dir = true;
        memset(info, 0, sizeof *info);
        goto out;
    }
    if (rc == 0) {
        *is_dir = false;
        rc = m->be->head(m->ctx, fkey, info);
    }
out:
    free(dkey);
    free(fkey);
    return rc;
}

static void reply_negative(mount_view *m, fuse_req_t req)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    e.entry_timeout = m->cfg.negative_ttl;
    fuse_reply_entry(req, &e);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    mount_view *m = fuse_req_userdata(req);
    struct fuse_entry_param e;
    int rc = check_name(name);
    if (rc != 0) {
        fuse_reply_err(req, rc == -ENAMETOOLONG ? ENAMETOOLONG : ENOENT);
        return;
    }
    uint64_t now = now_us();
    bool is_dir = false;
    mount_obj_info info;
    char *path = NULL;

    pthread_mutex_lock(&m->lock);
    mount_inode *p = get_inode(m, parent);
    if (!p || !p->is_dir) {
        rc = p ? -ENOTDIR : -ENOENT;
        goto unlock_reply;
    }
    path = child_path(p->path, name);
    if (!path) {
        rc = -ENOMEM;
        goto unlock_reply;
    }
    if (strlen(m->prefix) + strlen(path) > MOUNT_MAX_KEY) {
        rc = -ENAMETOOLONG;
        goto unlock_reply;
    }
    mount_inode *in = mount_inodes_find(m->inodes, path);
    if (in && (in->stage || now < in->attr_until))
        goto found;
    mount_listing *l = p->listing;
    if (l && now < l->listed_at + m->ttl_us) {
        const mount_dirent *d = mount_names_find(l->e, l->n, name);
        if (d) {
            check_version(m, path, d->is_dir, &d->info);
            in = inode_at(m, path, d->is_dir);
            if (!in) {
                in = mount_inodes_find(m->inodes, path);
                goto found;
            }
            learn(in, &d->info, l->listed_at + m->ttl_us);
            goto found;
        }
        if (now < l->listed_at + m->neg_ttl_us) {
            check_version(m, path, false, NULL);
            pthread_mutex_unlock(&m->lock);
            reply_negative(m, req);
            goto out;
        }
    }
    pthread_mutex_unlock(&m->lock);

    rc = probe(m, path, &is_dir, &info);
    if (rc == -ENOENT) {
        pthread_mutex_lock(&m->lock);
        check_version(m, path, false, NULL);
        pthread_mutex_unlock(&m->lock);
        reply_negative(m, req);
        goto out;
    }
    if (rc != 0) {
        fuse_reply_err(req, -rc);
        goto out;
    }
    pthread_mutex_lock(&m->lock);
    check_version(m, path, is_dir, &info);
    in = inode_at(m, path, is_dir);
    if (!in)
        in = mount_inodes_find(m->inodes, path);
    if (!in) {
        rc = -ENOMEM;
        goto unlock_reply;
    }
    learn(in, &info, now_us() + m->ttl_us);
found:
    if (!in) {
        rc = -ENOMEM;
        goto unlock_reply;
    }
    in->nlookup++;
    fill_entry(m, in, &e);
    pthread_mutex_unlock(&m->lock);
    fuse_reply_entry(req, &e);
    goto out;

unlock_reply:
    pthread_mutex_unlock(&m->lock);
    fuse_reply_err(req, -rc);
out:
    free(path);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    mount_view *m = fuse_req_userdata(req);
    pthread_mutex_lock(&m->lock);
    mount_inode *in = get_inode(m, ino);
    if (in)
        mount_inodes_forget(m->inodes, in, nlookup);
    pthread_mutex_unlock(&m->lock);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    mount_view *m = fuse_req_userdata(req);
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < count; i++) {
        mount_inode *in = get_inode(m, forgets[i].ino);
        if (in)
            mount_inodes_forget(m->inodes, in, forgets[i].nlookup);
    }
    pthread_mutex_unlock(&m->lock);
    fuse_reply_none(req);
}

/* Makes sure `in`'s metadata is fresh (HEAD when older than the TTL). m->lock held on entry and
 * on return; dropped around the backend call. 0 or -errno. When the object has another version
 * now, or is gone, `in` is superseded (in->stale) and keeps describing its own version: 0. A file
 * never uploaded that the store does not hold either: -ENOENT. */
static int refresh(mount_view *m, mount_inode *in)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    if (in->is_dir || in->stage || in->detached || now_us() < in->attr_until)
        return 0; /* an unlinked or superseded file open somewhere keeps what it had */
    mount_obj_info info;
    char *key = key_of(m, in->path, false);
    if (!key)
        return -ENOMEM;
    pthread_mutex_unlock(&m->lock);
    int rc = m->be->head(m->ctx, key, &info);
    free(key);
    pthread_mutex_lock(&m->lock);
    if (in->stage || in->detached)
        return 0; /* written, unlinked or superseded meanwhile: that is the truth now */
    if (rc == 0 && (!in->remote || strcmp(in->info.etag, info.etag) == 0)) {
        learn(in, &info, now_us() + m->ttl_us);
    } else if (in->remote && (rc == 0 || rc == -ENOENT)) {
        supersede(m, in);
        invalidate_parent(m, in->path); /* its listing shows the old version */
        rc = 0;
    }
    return rc;
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    struct stat st;
    int rc = -ENOENT;
    pthread_mutex_lock(&m->lock);
    mount_inode *in = get_inode(m, ino);
    if (in)
        rc = refresh(m, in);
    if (rc == 0)
        fill_attr(m, in, &st);
    pthread_mutex_unlock(&m->lock);
    if (rc == 0)
        fuse_reply_attr(req, &st, m->cfg.metadata_ttl);
    else
        fuse_reply_err(req, -rc);
}

/* ---- staging ------------------------------------------------------------------------------ */

/* Links a new stage (or one recovered at start) into the mount's list (m->lock held). */
static mount_stage *stage_link(mount_view *m, mount_inode *in, int fd, char *file)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    mount_stage *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    s->fd = fd;
    s->file = file;
    s->in = in;
    s->next = m->stages;
    if (m->stages)
        m->stages->prev = s;
    m->stages = s;
    in->stage = s;
    return s;
}

/* A new, empty stage for `in` (m->lock held). 0 or -errno. */
static int stage_new(mount_view *m, mount_inode *in, mount_stage **out)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    char *tmpl;
    if (asprintf(&tmpl, "%s/stage-XXXXXX", m->staging_dir) < 0)
        return -ENOMEM;
    int fd = mkostemp(tmpl, O_CLOEXEC);
    int err = errno;
    if (fd >= 0 && !m->delay_us) {
        unlink(tmpl); /* nameless from the start: a crash leaves no staged file behind */
        free(tmpl);
        tmpl = NULL;
    }
    if (fd < 0) {
        LOG_ERROR("mount", "stage_failed", "dir=%s errno=%d", m->staging_dir, err);
        free(tmpl);
        return -err;
    }
    /* With a delay the file keeps its name: a record beside it at close makes it survive a
     * crash; a name without a record is removed at the next start. */
    mount_stage *s = stage_link(m, in, fd, tmpl);
    if (!s) {
        if (tmpl)
            unlink(tmpl);
        free(tmpl);
        close(fd);
        return -ENOMEM;
    }
    *out = s;
    return 0;
}

/* Closes and frees an unlinked stage. Its file goes too, unless a record still names it: a
 * pending upload that did not happen stays on disk for the next start. */
static void stage_free(mount_stage *s)
{
    if (s->file && !s->recorded)
        unlink(s->file);
    close(s->fd);
    pthread_mutex_destroy(&s->lock);
    free(s->file);
    free(s);
}

/* Drops one use of `s`; the last one frees it and releases its staging bytes. */
static void stage_put(mount_view *m, mount_stage *s)
{
    pthread_mutex_lock(&m->lock);
    bool last = --s->nopen == 0;
    if (last) {
        if (s->prev)
            s->prev->next = s->next;
        else
            m->stages = s->next;
        if (s->next)
            s->next->prev = s->prev;
        m->staged_bytes -= s->reserved;
        s->in->stage = NULL;
        /* Never uploaded: what the store says is the truth again (asked on next use). A
         * file that was only ever staged no longer exists: lookups and getattr find ENOENT.
         * Only a failed upload (its error went to the caller) or an unlinked file may end so;
         * anything else is a change reported done and lost, which must never happen. */
        if (s->dirty) {
            s->in->attr_until = 0;
            if (s->failed)
                s->in->upload_err = s->failed_err; /* a rename must not move something else */
            char q[512];
            if (!s->failed && !s->in->detached)
                LOG_ERROR("mount", "unsent_changes_dropped", "path=%s size=%llu",
                          shoal_log_q(q, sizeof q, s->in->path), (unsigned long long)s->size);
        }
        mount_inodes_maybe_free(m->inodes, s->in);
    }
    pthread_mutex_unlock(&m->lock);
    if (last)
        stage_free(s);
}

/* Lists `h` among the live handles (m->lock held). */
static void handle_link(mount_view *m, mount_handle *h)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    h->prev = NULL;
    h->next = m->handles;
    if (m->handles)
        m->handles->prev = h;
    m->handles = h;
}

/* A writer `h` changed its stage: its next FLUSH publishes the change (m->lock held). */
static void handle_changed(mount_handle *h)
{
    if (!h->unflushed) {
        h->unflushed = true;
        h->stage->unflushed++;
    }
}

/* Ends a handle: unlists it, drops its listing and its use of the stage, frees it. */
static void handle_end(mount_view *m, mount_handle *h)
{
    pthread_mutex_lock(&m->lock);
    if (h->prev)
        h->prev->next = h->next;
    else if (m->handles == h)
        m->handles = h->next;
    if (h->next)
        h->next->prev = h->prev;
    mount_listing_unref(h->listing);
    if (h->unflushed)
        h->stage->unflushed--;
    if (h->writer && --h->stage->writers == 0)
        pthread_cond_signal(&m->wb_cond); /* a pending upload may go now */
    pthread_mutex_unlock(&m->lock);
    if (h->stage)
        stage_put(m, h->stage);
    free(h->key);
    free(h);
}

/* Counts the staged file as `size` bytes against the cap (s->lock held). 0 or -ENOSPC. */
static int stage_reserve(mount_view *m, mount_stage *s, uint64_t size)
{
    SHOAL_ASSERT_LOCKED(&s->lock);
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    if (size > s->reserved) {
        uint64_t grow = size - s->reserved;
        if (m->cfg.max_staging_bytes && m->staged_bytes + grow > m->cfg.max_staging_bytes) {
            rc = -ENOSPC;
        } else {
            m->staged_bytes += grow;
            s->reserved = size;
        }
    } else {
        m->staged_bytes -= s->reserved - size;
        s->reserved = size;
    }
    pthread_mutex_unlock(&m->lock);
    if (rc)
        LOG_WARN("mount", "staging_full", "staged=%llu cap=%llu",
                 (unsigned long long)m->staged_bytes, (unsigned long long)m->cfg.max_staging_bytes);
    return rc;
}

/* Sets the staged file's length (s->lock held). 0 or -errno. */
static int stage_truncate(mount_view *m, mount_stage *s, uint64_t size)
{
    SHOAL_ASSERT_LOCKED(&s->lock);
    int rc = stage_reserve(m, s, size > s->size ? size : s->size);
    if (rc)
        return rc;
    if (ftruncate(s->fd, (off_t)size) != 0)
        return -errno;
    pthread_mutex_lock(&m->lock);
    s->size = size;
    touch_mtime(s->in);
    pthread_mutex_unlock(&m->lock);
    s->dirty = true;
    s->failed = false;
    return stage_reserve(m, s, size);
}

static int write_all(int fd, const char *buf, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        buf += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Copies the object's bytes (version `etag`, `size` bytes) into the stage (s->lock held). */
static int stage_fill(mount_view *m, mount_stage *s, const char *key, const char *etag,
                      uint64_t size)
{
    SHOAL_ASSERT_LOCKED(&s->lock);
    int rc = stage_reserve(m, s, size);
    char *buf = rc ? NULL : malloc(MOUNT_IO_MAX);
    uint64_t off = 0;
    if (rc)
        return rc;
    if (!buf)
        return -ENOMEM;
    while (off < size) {
        size_t want = size - off < MOUNT_IO_MAX ? (size_t)(size - off) : MOUNT_IO_MAX;
        ssize_t n = m->be->read(m->ctx, key, etag, off, want, buf);
        if (n <= 0) {
            rc = n < 0 ? (int)n : -EIO; /* shorter than its size: it changed under us */
            goto out;
        }
        rc = write_all(s->fd, buf, (size_t)n, off);
        if (rc)
            goto out;
        off += (uint64_t)n;
    }
    pthread_mutex_lock(&m->lock);
    s->size = size;
    pthread_mutex_unlock(&m->lock);
    s->filled = true;
out:
    free(buf);
    return rc;
}

/* ---- write-back records -------------------------------------------------------------------
 *
 * With --upload-delay a closed file is made durable before close returns: its staged file is
 * fsynced and a record <file>.key beside it names the key it goes to and the attributes it is
 * uploaded with: "shoal-stage 2 R SET MODE UID GID MSEC MNSEC ASEC ANSEC\n" (R, or N when no
 * object existed at the key; the numbers are a mount_attrs), then the key's bytes. Records of
 * the first format ("shoal-stage 1 R\n", no attributes) are still read. The record is
 * written to <file>.key.tmp, fsynced and renamed, and the directory fsynced, so a crash leaves
 * either the old record or the new one. mount_new takes up every record it finds (recover). */

#define RECORD_MAGIC "shoal-stage "

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* Writes (or rewrites) the record of `s` naming `key` (s->lock held). 0 or -errno. */
static int stage_record(mount_view *m, mount_stage *s, const char *key, bool remote)
{
    SHOAL_ASSERT_LOCKED(&s->lock);
    pthread_mutex_lock(&m->lock);
    mount_attrs a = s->in->info.attrs;
    pthread_mutex_unlock(&m->lock);
    char *rec = NULL, *tmp = NULL;
    int rc = -ENOMEM, fd = -1;
    if (asprintf(&rec, "%s.key", s->file) < 0 || asprintf(&tmp, "%s.key.tmp", s->file) < 0)
        goto out;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    char head[256];
    int n = snprintf(head, sizeof head, "%s2 %c %u %u %u %u %lld %u %lld %u\n", RECORD_MAGIC, remote ? 'R' : 'N',
                     a.set, a.mode, a.uid, a.gid, (long long)a.mtime.sec, a.mtime.nsec, (long long)a.atime.sec,
                     a.atime.nsec);
    rc = write_all(fd, head, (size_t)n, 0);
    if (rc == 0)
        rc = write_all(fd, key, strlen(key), (uint64_t)n);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, rec) != 0)
        rc = -errno;
    if (rc == 0)
        rc = fsync_dir(m->staging_dir);
    if (rc == 0) {
        s->recorded = true;
        s->record_stale = false;
    }
out:
    if (fd >= 0)
        close(fd);
    if (rc && tmp)
        unlink(tmp);
    if (rc)
        LOG_ERROR("mount", "record_failed", "dir=%s errno=%d", m->staging_dir, -rc);
    free(rec);
    free(tmp);
    return rc;
}

/* Removes the record of `s` (s->lock held): its bytes are in the store, or nowhere to go. */
static void stage_unrecord(mount_view *m, mount_stage *s)
{
    SHOAL_ASSERT_LOCKED(&s->lock);
    char *rec;
    if (!s->recorded || asprintf(&rec, "%s.key", s->file) < 0)
        return;
    if (unlink(rec) == 0)
        fsync_dir(m->staging_dir); /* an unlinked file must not come back after a crash */
    s->recorded = false;
    free(rec);
}

/* The stage needs no delayed upload any more (s->lock held): drops its record and the use the
 * pending upload held. The caller holds a use of its own, so `s` stays allocated. */
static void stage_settle(mount_view *m, mount_stage *s)
{
    SHOAL_ASSERT_LOCKED(&s->lock);
    stage_unrecord(m, s);
    pthread_mutex_lock(&m->lock);
    if (s->pending) {
        s->pending = false;
        s->nopen--;
        m->wb.pending--;
    }
    pthread_mutex_unlock(&m->lock);
}

/* Close of a file written with --upload-delay (s->lock held): makes the staged bytes durable
 * (fsync, record) and schedules the upload for when the file stayed closed and unchanged for the
 * delay. 0 or -errno (EIO, ENOSPC: the bytes may not survive a crash). */
static int stage_persist(mount_view *m, mount_stage *s)
{
    SHOAL_ASSERT_LOCKED(&s->lock);
    if (!s->dirty || !s->file)
        return 0;
    if (fsync(s->fd) != 0)
        return -errno;
    pthread_mutex_lock(&m->lock);
    bool orphan = s->in->detached, remote = s->in->remote;
    char *key = orphan ? NULL : key_of(m, s->in->path, false);
    pthread_mutex_unlock(&m->lock);
    if (orphan)
        return 0;
    int rc = key ? 0 : -ENOMEM;
    if (rc == 0 && (!s->recorded || s->record_stale))
        rc = stage_record(m, s, key, remote);
    free(key);
    if (rc)
        return rc;
    pthread_mutex_lock(&m->lock);
    if (!s->pending) {
        s->pending = true;
        s->nopen++;
        m->wb.pending++;
    }
    s->tries = 0;
    s->due_us = now_us() + m->delay_us;
    pthread_cond_signal(&m->wb_cond);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* Uploads the stage when it holds unacknowledged bytes. 0 or the backend's -errno. A stage whose
 * file was unlinked or replaced meanwhile is dropped, not uploaded (POSIX: writes to an unlinked
 * file go nowhere). Either way a pending delayed upload is settled (stage_settle); a failed one
 * stays pending. */
static int stage_upload(mount_view *m, mount_stage *s)
{
    int rc = 0;
    char *key = NULL;
    pthread_mutex_lock(&s->lock);
    if (!s->dirty) {
        stage_settle(m, s);
        goto out;
    }
    pthread_mutex_lock(&m->lock);
    bool orphan = s->in->detached;
    if (!orphan)
        key = key_of(m, s->in->path, false);
    mount_attrs attrs = s->in->info.attrs; /* set 0: none known, none sent */
    pthread_mutex_unlock(&m->lock);
    if (orphan) {
        s->dirty = false;
        stage_settle(m, s);
        goto out;
    }
    if (!key) {
        rc = -ENOMEM;
        goto out;
    }
    mount_obj_info info;
    memset(&info, 0, sizeof info);
    rc = m->be->put(m->ctx, key, s->size ? s->fd : -1, s->size, attrs.set ? &attrs : NULL, &info);
    char q[512];
    if (rc != 0) {
        LOG_WARN("mount", "upload_failed", "key=%s size=%llu errno=%d",
                 shoal_log_q(q, sizeof q, key), (unsigned long long)s->size, -rc);
        s->failed = true;
        s->failed_err = rc;
        goto out;
    }
    LOG_DEBUG("mount", "uploaded", "key=%s size=%llu", shoal_log_q(q, sizeof q, key),
              (unsigned long long)s->size);
    s->dirty = false;
    pthread_mutex_lock(&m->lock);
    if (s->pending)
        m->wb.uploaded++;
    mount_inode *in = s->in;
    in->info = info;
    in->info.size = s->size;
    in->upload_err = 0;
    if (!info.has_attrs) { /* what was sent is what the object carries */
        in->info.has_attrs = true;
        in->info.attrs = attrs;
    }
    in->remote = true;
    in->attr_until = now_us() + m->ttl_us;
    /* The kernel's pages are the bytes just uploaded: they stay valid for this version. */
    snprintf(in->cache_etag, sizeof in->cache_etag, "%s", info.etag);
    invalidate_parent(m, in->path);
    pthread_mutex_unlock(&m->lock);
    stage_settle(m, s);
out:
    pthread_mutex_unlock(&s->lock);
    free(key);
    return rc;
}

/* Stages `in` for writing and takes one use of the stage into *out: shares the stage of another
 * writer, else fetches the object's bytes first unless `trunc`. Counts one writer (handle_end
 * drops it), which holds back a pending delayed upload. 0 or -errno. */
static int stage_open(mount_view *m, mount_inode *in, bool trunc, mount_stage **out)
{
    int rc = 0;
    mount_stage *s;
    char *key = NULL;
    mount_obj_info info;

    bool created = false;
    pthread_mutex_lock(&m->lock);
    s = in->stage;
    if (!s) {
        rc = stage_new(m, in, &s);
        if (rc) {
            pthread_mutex_unlock(&m->lock);
            return rc;
        }
        s->filled = trunc || !in->remote;
        s->dirty = !in->remote; /* not in the store yet: becomes an object at close, even empty */
        created = true;
    }
    s->nopen++;
    pthread_mutex_unlock(&m->lock);

    pthread_mutex_lock(&s->lock);
    pthread_mutex_lock(&m->lock);
    /* The upload replaces the object's metadata too: a rewrite must know the attributes it
     * keeps (a listing told their size and ETag only). */
    bool need_attrs = created && in->remote && !in->info.has_attrs;
    pthread_mutex_unlock(&m->lock);
    if (!s->filled || need_attrs) {
        pthread_mutex_lock(&m->lock);
        /* The stage hides the inode's metadata from refresh(): ask with the stage in place. */
        bool fresh = now_us() < in->attr_until;
        info = in->info;
        key = key_of(m, in->path, false);
        pthread_mutex_unlock(&m->lock);
        rc = key ? 0 : -ENOMEM;
        if (rc == 0 && (!fresh || need_attrs))
            rc = m->be->head(m->ctx, key, &info);
        bool gone = rc == -ENOENT && s->filled; /* cut to 0 anyway: a new object, no attributes */
        if (gone)
            rc = 0;
        if (rc == 0 && !s->filled)
            rc = stage_fill(m, s, key, info.etag, info.size);
        if (rc == 0 && !gone) {
            pthread_mutex_lock(&m->lock);
            in->info = info;
            in->attr_until = now_us() + m->ttl_us;
            pthread_mutex_unlock(&m->lock);
        }
    }
    if (rc == 0 && trunc)
        rc = stage_truncate(m, s, 0);
    pthread_mutex_unlock(&s->lock);
    free(key);
    if (rc) {
        stage_put(m, s);
        return rc;
    }
    pthread_mutex_lock(&m->lock);
    s->writers++;
    pthread_mutex_unlock(&m->lock);
    *out = s;
    return 0;
}

/* ---- files -------------------------------------------------------------------------------- */

/* Whether an open writes. O_TRUNC without write access (POSIX leaves its result undefined) is an
 * open for reading: the kernel checks for a running program (ETXTBSY) only after OPEN answered,
 * and a stage emptied by then could not be filled again if a writer that closed just before
 * still shares it. */
static bool wants_write(int flags)
{
    return (flags & O_ACCMODE) != O_RDONLY;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    if (m->no_open) {
        /* "Not implemented" here means: open every file yourself, keeping its page cache, and
         * send neither OPEN nor RELEASE again; reads come with fh 0 (op_read). */
        fuse_reply_err(req, ENOSYS);
        return;
    }
    int rc = 0;
    mount_handle *h = calloc(1, sizeof *h);
    if (!h) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    h->flags = fi->flags;
    pthread_mutex_lock(&m->lock);
    mount_inode *in = get_inode(m, ino);
    if (!in || in->is_dir) {
        rc = in ? -EISDIR : -ENOENT;
        goto unlock_fail;
    }
    if (!in->remote && !in->stage && !wants_write(fi->flags)) {
        rc = -ENOENT; /* staged once, never uploaded, released: it does not exist */
        goto unlock_fail;
    }
    if (in->stale && !in->stage) {
        rc = -ESTALE; /* open(2) looks the name up again (LOOKUP_REVAL) and finds the new inode */
        goto unlock_fail;
    }
    if (wants_write(fi->flags)) {
        if (m->cfg.read_only) {
            rc = -EROFS;
            goto unlock_fail;
        }
        pthread_mutex_unlock(&m->lock);
        rc = stage_open(m, in, (fi->flags & O_TRUNC) != 0, &h->stage);
        if (rc)
            goto fail;
        h->writer = true;
        pthread_mutex_lock(&m->lock);
        handle_changed(h); /* its close uploads even when nothing is written */
    } else if (in->stage) {
        h->stage = in->stage; /* read what local writers wrote */
        h->stage->nopen++;
    } else {
        rc = refresh(m, in); /* close-to-open: metadata older than the TTL is asked again */
        if (rc == 0 && in->stale)
            rc = -ESTALE;
        if (rc)
            goto unlock_fail;
        h->key = key_of(m, in->path, false);
        if (!h->key) {
            rc = -ENOMEM;
            goto unlock_fail;
        }
        snprintf(h->etag, sizeof h->etag, "%s", in->info.etag);
    }
    if (h->stage) {
        /* Writes go through the page cache, so it matches the stage unless O_TRUNC emptied it. */
        fi->keep_cache = !(fi->flags & O_TRUNC) && strcmp(in->cache_etag, in->info.etag) == 0;
        if (fi->flags & O_TRUNC)
            in->cache_etag[0] = '\0';
    } else {
        fi->keep_cache = strcmp(in->cache_etag, h->etag) == 0;
        snprintf(in->cache_etag, sizeof in->cache_etag, "%s", h->etag);
    }
    /* A descriptor that cannot write has nothing to upload at close: no FLUSH round trip. */
    fi->noflush = !h->writer;
    handle_link(m, h);
    pthread_mutex_unlock(&m->lock);
    fi->fh = (uint64_t)(uintptr_t)h;
    if (fuse_reply_open(req, fi) != 0)
        handle_end(m, h); /* the opener is gone: no release will come */
    return;

unlock_fail:
    pthread_mutex_unlock(&m->lock);
fail:
    free(h->key);
    free(h);
    fuse_reply_err(req, -rc);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    struct fuse_entry_param e;
    mount_stage *s = NULL;
    char *path = NULL;
    int rc = m->cfg.read_only ? -EROFS : check_name(name);
    mount_handle *h = calloc(1, sizeof *h);
    if (!h)
        rc = -ENOMEM;
    if (rc)
        goto fail;
    if (!S_ISREG(mode)) {
        rc = -EPERM;
        goto fail;
    }
    h->flags = fi->flags;
    pthread_mutex_lock(&m->lock);
    rc = name_path(m, parent, name, &path);
    mount_inode *in = rc ? NULL : mount_inodes_find(m->inodes, path);
    if (rc == 0 && in && in->is_dir)
        rc = -EISDIR;
    if (rc == 0 && !(in = inode_at(m, path, false)))
        rc = -ENOMEM;
    if (rc)
        goto unlock_fail;
    s = in->stage;
    if (!s)
        rc = stage_new(m, in, &s);
    if (rc) {
        mount_inodes_maybe_free(m->inodes, in);
        goto unlock_fail;
    }
    s->nopen++;
    s->writers++;
    s->filled = true;
    s->dirty = true; /* a created file is uploaded on close even when left empty */
    memset(&in->info, 0, sizeof in->info);
    new_attrs(req, S_IFREG | (mode & 07777), &in->info.attrs);
    in->info.has_attrs = true;
    in->info.mtime = in->info.attrs.mtime.sec;
    in->attr_until = now_us() + m->ttl_us;
    in->cache_etag[0] = '\0';
    in->nlookup++;
    invalidate_parent(m, path);
    fill_entry(m, in, &e);
    h->stage = s;
    h->writer = true; /* even O_CREAT|O_RDONLY: its close creates the object */
    handle_changed(h);
    handle_link(m, h);
    pthread_mutex_unlock(&m->lock);
    free(path);
    fi->fh = (uint64_t)(uintptr_t)h;
    if (fuse_reply_create(req, &e, fi) != 0)
        handle_end(m, h);
    return;

unlock_fail:
    pthread_mutex_unlock(&m->lock);
fail:
    free(path);
    free(h);
    fuse_reply_err(req, -rc);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    mount_handle *h = (mount_handle *)(uintptr_t)fi->fh;
    char *buf = malloc(size ? size : 1);
    char *ikey = NULL, ietag[MOUNT_ETAG_MAX];
    ssize_t n = -ENOMEM;
    if (!buf)
        goto reply;
    if (!h) {
        /* Opened without a request (no_open): the inode names the version it stands for. */
        bool known = false;
        pthread_mutex_lock(&m->lock);
        mount_inode *in = get_inode(m, ino);
        if (in && !in->is_dir) {
            known = true;
            ikey = key_of(m, in->path, false);
            snprintf(ietag, sizeof ietag, "%s", in->info.etag);
        }
        pthread_mutex_unlock(&m->lock);
        if (!ikey) {
            n = known ? -ENOMEM : -ESTALE;
            goto reply;
        }
    }
    if (h && h->stage) {
        n = pread(h->stage->fd, buf, size, off);
        if (n < 0)
            n = -errno;
    } else {
        const char *etag = h ? h->etag : ietag;
        n = m->be->read(m->ctx, h ? h->key : ikey, etag, (uint64_t)off, size, buf);
        if (n == -ENOENT)
            n = -ESTALE; /* deleted while open: the version read is gone */
        if (n == -ESTALE) {
            pthread_mutex_lock(&m->lock);
            mount_inode *in = get_inode(m, ino);
            if (in && !in->stage && !in->detached && strcmp(in->info.etag, etag) == 0) {
                supersede(m, in); /* the next lookup asks the store again */
                invalidate_parent(m, in->path);
            }
            pthread_mutex_unlock(&m->lock);
        }
    }
reply:
    free(ikey);
    if (n < 0)
        fuse_reply_err(req, (int)-n);
    else
        fuse_reply_buf(req, buf, (size_t)n);
    free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    mount_handle *h = (mount_handle *)(uintptr_t)fi->fh;
    mount_stage *s = h->stage;
    int rc;
    if (!s || !h->writer) {
        fuse_reply_err(req, EBADF);
        return;
    }
    pthread_mutex_lock(&s->lock);
    uint64_t at = (h->flags & O_APPEND) ? s->size : (uint64_t)off;
    uint64_t end = at + size;
    rc = end > MOUNT_MAX_OBJECT ? -EFBIG : stage_reserve(m, s, end > s->size ? end : s->size);
    if (rc == 0)
        rc = write_all(s->fd, buf, size, at);
    if (rc == 0) {
        s->dirty = true;
        s->failed = false;
        pthread_mutex_lock(&m->lock);
        if (end > s->size)
            s->size = end;
        touch_mtime(s->in);
        handle_changed(h);
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_unlock(&s->lock);
    if (rc)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_write(req, size);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    mount_handle *h = (mount_handle *)(uintptr_t)fi->fh;
    if (!h || m->cfg.read_only) {
        /* Nothing to upload. "Not implemented" makes the kernel stop sending FLUSH (and, from
         * op_fsync, FSYNC) on this mount: a close costs no round trip. */
        fuse_reply_err(req, ENOSYS);
        return;
    }
    /* Only a descriptor that may write uploads: a reader of a file being written closing its
     * descriptor must not publish the writer's half-written bytes. With --upload-delay close
     * only makes the bytes durable here; the write-back thread uploads them later. */
    int rc = 0;
    h->flushed = true;
    if (h->writer) {
        /* Before the upload takes the stage: a truncate by path that finds no unflushed writer
         * left publishes its change itself, one that finds this one still unflushed has cut
         * the stage before this upload reads it. */
        pthread_mutex_lock(&m->lock);
        if (h->unflushed) {
            h->unflushed = false;
            h->stage->unflushed--;
        }
        pthread_mutex_unlock(&m->lock);
    }
    if (h->writer && m->delay_us) {
        pthread_mutex_lock(&h->stage->lock);
        rc = stage_persist(m, h->stage);
        pthread_mutex_unlock(&h->stage->lock);
    } else if (h->writer) {
        rc = stage_upload(m, h->stage);
    }
    fuse_reply_err(req, -rc);
}

/* fsync uploads at once, also with --upload-delay, and returns the upload's error. */
static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    mount_handle *h = (mount_handle *)(uintptr_t)fi->fh;
    if (!h || m->cfg.read_only || !m->delay_us) {
        op_flush(req, ino, fi);
        return;
    }
    int rc = h->writer ? stage_upload(m, h->stage) : 0;
    fuse_reply_err(req, -rc);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    mount_handle *h = (mount_handle *)(uintptr_t)fi->fh;
    if (!h) {
        fuse_reply_err(req, 0); /* opened without a request: no handle to end */
        return;
    }
    if (h->stage) {
        pthread_mutex_lock(&m->lock);
        bool last = h->stage->nopen == 1;
        pthread_mutex_unlock(&m->lock);
        /* Bytes written after the last flush (through a shared mapping) still get uploaded.
         * Bytes whose upload failed at close are not retried: close() already returned the
         * error, and a later, silent success would contradict it. */
        pthread_mutex_lock(&h->stage->lock);
        bool retry = h->stage->dirty && !h->stage->failed;
        if (last && h->writer && !h->flushed) {
            retry = false; /* open(2) failed after OPEN: its O_TRUNC was never done */
            h->stage->dirty = false;
            pthread_mutex_lock(&m->lock);
            h->stage->in->attr_until = 0;
            pthread_mutex_unlock(&m->lock);
        }
        pthread_mutex_unlock(&h->stage->lock);
        if (last && retry)
            stage_upload(m, h->stage);
    }
    handle_end(m, h);
    fuse_reply_err(req, 0);
}

#define TIMES (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)
#define ATTRS (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | TIMES)

/* After a change to `s` by setattr: true when a writing descriptor will publish it at its close
 * (the change came through one, which is now marked changed, or another still has a FLUSH to
 * come); false when the caller must publish it. */
static bool flush_will_publish(mount_view *m, const struct fuse_file_info *fi, mount_stage *s)
{
    mount_handle *h = fi ? (mount_handle *)(uintptr_t)fi->fh : NULL;
    pthread_mutex_lock(&m->lock);
    if (h && h->writer && h->stage == s)
        handle_changed(h);
    bool will = s->unflushed > 0;
    pthread_mutex_unlock(&m->lock);
    return will;
}

/* Sends a change made to `s` without a writing descriptor to the store (s->lock not held):
 * uploads it and returns the upload's error, or with --upload-delay makes it durable and
 * schedules its upload, as a close would. 0 or -errno. */
static int stage_publish(mount_view *m, mount_stage *s)
{
    SHOAL_ASSERT_UNLOCKED(&s->lock);
    if (!m->delay_us)
        return stage_upload(m, s);
    pthread_mutex_lock(&s->lock);
    int rc = stage_persist(m, s);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Merges what a setattr sets (mode, owner, group, times; "now" resolved) into `a`. The kernel
 * checked the caller may (default_permissions): owner for chmod and times, root for chown. */
static void merge_attrs(mount_attrs *a, bool is_dir, const struct stat *attr, int to_set)
{
    mount_time now = time_now();
    if (to_set & FUSE_SET_ATTR_MODE) {
        a->mode = (uint32_t)((is_dir ? S_IFDIR : S_IFREG) | (attr->st_mode & 07777));
        a->set |= MOUNT_ATTR_MODE;
    }
    if (to_set & FUSE_SET_ATTR_UID) {
        a->uid = (uint32_t)attr->st_uid;
        a->set |= MOUNT_ATTR_UID;
    }
    if (to_set & FUSE_SET_ATTR_GID) {
        a->gid = (uint32_t)attr->st_gid;
        a->set |= MOUNT_ATTR_GID;
    }
    if (to_set & FUSE_SET_ATTR_MTIME) {
        a->mtime = (to_set & FUSE_SET_ATTR_MTIME_NOW)
                       ? now
                       : (mount_time){attr->st_mtim.tv_sec, (uint32_t)attr->st_mtim.tv_nsec};
        a->set |= MOUNT_ATTR_MTIME;
    }
    if (to_set & FUSE_SET_ATTR_ATIME) {
        a->atime = (to_set & FUSE_SET_ATTR_ATIME_NOW)
                       ? now
                       : (mount_time){attr->st_atim.tv_sec, (uint32_t)attr->st_atim.tv_nsec};
        a->set |= MOUNT_ATTR_ATIME;
    }
}

static bool times_equal(mount_time a, mount_time b) { return a.sec == b.sec && a.nsec == b.nsec; }

static bool attrs_equal(const mount_attrs *a, const mount_attrs *b)
{
    unsigned s = a->set;
    return s == b->set && (!(s & MOUNT_ATTR_MODE) || a->mode == b->mode) &&
           (!(s & MOUNT_ATTR_UID) || a->uid == b->uid) && (!(s & MOUNT_ATTR_GID) || a->gid == b->gid) &&
           (!(s & MOUNT_ATTR_MTIME) || times_equal(a->mtime, b->mtime)) &&
           (!(s & MOUNT_ATTR_ATIME) || times_equal(a->atime, b->atime));
}

/* Stores new attributes of something that exists in the store and is not staged: a file by a
 * server-side copy onto itself with replaced metadata, a directory by a PUT of its marker
 * "dir/" (made if the directory was implicit). The attributes the object carries already are
 * learnt first when unknown (a HEAD), so the copy keeps them. 0 or -errno: ENOENT for a file
 * that is neither staged nor stored, EPERM for the root of a whole-bucket mount (no key to keep
 * them on). */
static int store_attrs(mount_view *m, mount_inode *in, const struct stat *attr, int to_set)
{
    mount_obj_info info;
    pthread_mutex_lock(&m->lock);
    bool is_dir = in->is_dir, known = in->info.has_attrs;
    bool root_key = is_dir && !*in->path && !*m->prefix;
    int rc = !is_dir && !in->remote ? -ENOENT : root_key ? -EPERM : 0;
    char *key = rc ? NULL : key_of(m, in->path, is_dir);
    mount_attrs a = in->info.attrs;
    pthread_mutex_unlock(&m->lock);
    if (rc)
        return rc;
    if (!key)
        return -ENOMEM;
    if (!known) {
        rc = m->be->head(m->ctx, key, &info);
        if (rc == 0)
            a = info.attrs;
        else if (rc == -ENOENT && is_dir)
            rc = 0; /* an implicit directory: no marker, no attributes yet */
    }
    mount_attrs before = a;
    merge_attrs(&a, is_dir, attr, to_set);
    if (rc == 0 && attrs_equal(&a, &before))
        goto out; /* chmod to the mode it has (tar, cp -a do it): nothing to store */
    if (rc == 0)
        rc = is_dir ? m->be->put(m->ctx, key, -1, 0, &a, &info) : m->be->copy(m->ctx, key, key, &a, &info);
    if (rc == 0) {
        pthread_mutex_lock(&m->lock);
        if (!info.has_attrs) {
            info.has_attrs = true;
            info.attrs = a;
        }
        if (is_dir || in->stage) {
            /* A directory's marker, or a file whose stage holds nothing unsent: the store is the
             * truth, and the stage's next upload carries these attributes. */
            in->info.has_attrs = true;
            in->info.attrs = info.attrs;
            if (!is_dir)
                snprintf(in->info.etag, sizeof in->info.etag, "%s", info.etag);
        } else {
            learn(in, &info, now_us() + m->ttl_us);
        }
        if (!is_dir)
            invalidate_parent(m, in->path); /* its listing shows the old ETag */
        pthread_mutex_unlock(&m->lock);
    }
out:
    free(key);
    return rc;
}

/* setattr: size on the staged bytes; mode, owner, group and times as object metadata
 * (docs/semantics.md, "Attributes"). A staged file keeps them for its upload; anything else
 * stores them at once. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    struct stat st;
    int rc = m->cfg.read_only ? -EROFS : 0;
    mount_stage *s = NULL;
    mount_inode *in = NULL;
    if (rc)
        goto reply;
    pthread_mutex_lock(&m->lock);
    in = get_inode(m, ino);
    if (!in)
        rc = -ENOENT;
    else if ((to_set & FUSE_SET_ATTR_SIZE) && in->is_dir)
        rc = -EISDIR;
    else if ((to_set & FUSE_SET_ATTR_SIZE) && (uint64_t)attr->st_size > MOUNT_MAX_OBJECT)
        rc = -EFBIG;
    if (rc == 0 && in->stage) {
        s = in->stage;
        s->nopen++;
    }
    pthread_mutex_unlock(&m->lock);
    if (rc)
        goto reply;
    if (s && !(to_set & FUSE_SET_ATTR_SIZE) && !flush_will_publish(m, fi, s)) {
        /* Attributes of a file whose bytes are all in the store already (its writer closed, its
         * RELEASE may still be on its way): a copy with the new metadata, not a new upload. */
        pthread_mutex_lock(&s->lock);
        bool clean = !s->dirty && in->remote;
        pthread_mutex_unlock(&s->lock);
        if (clean) {
            stage_put(m, s);
            s = NULL;
        }
    }
    if (!s && (to_set & FUSE_SET_ATTR_SIZE)) {
        /* truncate(2) of a file nobody has staged: stage it (cut to 0 needs no bytes). */
        rc = stage_open(m, in, attr->st_size == 0, &s);
        if (rc)
            goto reply;
        pthread_mutex_lock(&m->lock);
        s->writers--; /* not a handle: nothing holds a delayed upload back */
        pthread_mutex_unlock(&m->lock);
    }
    if (s) {
        pthread_mutex_lock(&s->lock);
        if (to_set & FUSE_SET_ATTR_SIZE)
            rc = stage_truncate(m, s, (uint64_t)attr->st_size);
        if (rc == 0 && (to_set & ATTRS)) {
            pthread_mutex_lock(&m->lock);
            merge_attrs(&in->info.attrs, false, attr, to_set);
            in->info.has_attrs = true;
            if (to_set & FUSE_SET_ATTR_MTIME)
                in->info.mtime = in->info.attrs.mtime.sec;
            pthread_mutex_unlock(&m->lock);
            s->dirty = true;
            s->failed = false;
            s->record_stale = true;
        }
        pthread_mutex_unlock(&s->lock);
        /* Who sends the change to the store? A descriptor open for writing flushes it at its
         * close (ftruncate or futimens through it, or a truncate by path while it writes). A
         * change that no FLUSH is left to carry (truncate(2) or chmod(2) by path after the last
         * writer's close, maybe while its RELEASE is still on its way) is published here, or it
         * would be reported done and then lost. */
        if (rc == 0 && !flush_will_publish(m, fi, s))
            rc = stage_publish(m, s);
        stage_put(m, s);
    } else if (to_set & ATTRS) {
        rc = store_attrs(m, in, attr, to_set);
    }
reply:
    if (rc == 0) {
        pthread_mutex_lock(&m->lock);
        fill_attr(m, in, &st);
        pthread_mutex_unlock(&m->lock);
        fuse_reply_attr(req, &st, m->cfg.metadata_ttl);
    } else {
        fuse_reply_err(req, -rc);
    }
}

/* ---- namespace changes -------------------------------------------------------------------- */

/* After unlink or rmdir: `path` is gone; its inode lives on only for the kernel's references. */
static void forget_path(mount_view *m, const char *path)
{
    pthread_mutex_lock(&m->lock);
    mount_inode *in = mount_inodes_find(m->inodes, path);
    if (in) {
        drop_listing(in);
        mount_inodes_detach(m->inodes, in);
        mount_inodes_maybe_free(m->inodes, in);
    }
    invalidate_parent(m, path);
    pthread_mutex_unlock(&m->lock);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    mount_view *m = fuse_req_userdata(req);
    char *path = NULL, *key = NULL;
    mount_stage *s = NULL;
    bool remote = true;
    int rc = m->cfg.read_only ? -EROFS : 0;
    if (rc)
        goto reply;
    pthread_mutex_lock(&m->lock);
    rc = name_path(m, parent, name, &path);
    mount_inode *in = rc ? NULL : mount_inodes_find(m->inodes, path);
    if (in && in->is_dir)
        rc = -EISDIR;
    if (in)
        remote = in->remote; /* a file never uploaded has no object to delete */
    if (rc == 0 && !(key = key_of(m, path, false)))
        rc = -ENOMEM;
    if (rc == 0 && in && (s = in->stage) != NULL)
        s->nopen++;
    pthread_mutex_unlock(&m->lock);
    if (rc == 0 && remote)
        rc = m->be->remove(m->ctx, key);
    if (rc == 0)
        forget_path(m, path);
    if (s) {
        if (rc == 0)
            stage_upload(m, s); /* detached now: drops a pending upload and its record */
        stage_put(m, s);
    }
reply:
    free(path);
    free(key);
    fuse_reply_err(req, -rc);
}

/* mkdir and mknod: an empty object at the name, a marker "name/" for a directory. */
static void make_empty(fuse_req_t req, fuse_ino_t parent, const char *name, bool is_dir, mode_t mode)
{
    mount_view *m = fuse_req_userdata(req);
    struct fuse_entry_param e;
    mount_obj_info info;
    mount_attrs attrs;
    char *path = NULL, *key = NULL;
    int rc = m->cfg.read_only ? -EROFS : 0;
    if (rc)
        goto reply;
    new_attrs(req, (is_dir ? S_IFDIR : S_IFREG) | (mode & 07777), &attrs);
    pthread_mutex_lock(&m->lock);
    rc = name_path(m, parent, name, &path);
    if (rc == 0 && !(key = key_of(m, path, is_dir)))
        rc = -ENOMEM;
    if (rc == 0 && strlen(key) > MOUNT_MAX_KEY)
        rc = -ENAMETOOLONG;
    pthread_mutex_unlock(&m->lock);
    if (rc == 0)
        rc = m->be->put(m->ctx, key, -1, 0, &attrs, &info);
    if (rc)
        goto reply;
    pthread_mutex_lock(&m->lock);
    mount_inode *in = inode_at(m, path, is_dir);
    if (in) {
        if (!info.has_attrs) {
            info.has_attrs = true;
            info.attrs = attrs;
        }
        learn(in, &info, now_us() + m->ttl_us);
        in->nlookup++;
        fill_entry(m, in, &e);
        invalidate_parent(m, path);
    }
    pthread_mutex_unlock(&m->lock);
    rc = in ? 0 : -EEXIST;
reply:
    free(path);
    free(key);
    if (rc)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_entry(req, &e);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    make_empty(req, parent, name, true, mode);
}

typedef struct marker_count {
    const char *self;
    size_t self_len;
    size_t others;
    bool marker;
} marker_count;

static int count_children(void *ud, const char *key, size_t key_len, bool is_prefix,
                          const mount_obj_info *info)
{
    marker_count *c = ud;
    if (!is_prefix && key_len == c->self_len && memcmp(key, c->self, key_len) == 0)
        c->marker = true;
    else
        c->others++;
    return 0;
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    mount_view *m = fuse_req_userdata(req);
    char *path = NULL, *key = NULL;
    int rc = m->cfg.read_only ? -EROFS : 0;
    if (rc)
        goto reply;
    pthread_mutex_lock(&m->lock);
    rc = name_path(m, parent, name, &path);
    size_t plen = rc ? 0 : strlen(path);
    for (mount_stage *s = m->stages; rc == 0 && s; s = s->next)
        if (!s->in->detached && strncmp(s->in->path, path, plen) == 0 && s->in->path[plen] == '/')
            rc = -ENOTEMPTY; /* a file created inside and not uploaded yet */
    if (rc == 0 && !(key = key_of(m, path, true)))
        rc = -ENOMEM;
    pthread_mutex_unlock(&m->lock);
    /* Two entries are enough: the marker itself (it sorts first) and any other. */
    marker_count mc = {key, key ? strlen(key) : 0, 0, false};
    if (rc == 0)
        rc = m->be->list(m->ctx, key, "/", 2, count_children, &mc);
    if (rc == 0 && mc.others > 0)
        rc = -ENOTEMPTY;
    if (rc == 0 && mc.marker)
        rc = m->be->remove(m->ctx, key);
    if (rc == 0)
        forget_path(m, path);
reply:
    free(path);
    free(key);
    fuse_reply_err(req, -rc);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    mount_view *m = fuse_req_userdata(req);
    char *src = NULL, *dst = NULL, *skey = NULL, *dkey = NULL;
    mount_stage *s = NULL, *os = NULL;
    mount_inode *in = NULL;
    mount_obj_info info;
    bool remote = false, copied = false;
    int rc = m->cfg.read_only ? -EROFS : (flags & RENAME_EXCHANGE) ? -EINVAL : 0;
    if (rc)
        goto reply;
    pthread_mutex_lock(&m->lock);
    rc = name_path(m, parent, name, &src);
    if (rc == 0)
        rc = name_path(m, newparent, newname, &dst);
    in = rc ? NULL : mount_inodes_find(m->inodes, src);
    mount_inode *old = rc ? NULL : mount_inodes_find(m->inodes, dst);
    if (rc == 0 && !in)
        rc = -ENOENT;
    else if (rc == 0 && in->is_dir)
        rc = -EXDEV; /* no directory rename in S3: mv(1) copies the tree instead */
    else if (rc == 0 && old && old->is_dir)
        rc = -EISDIR;
    else if (rc == 0 && (flags & RENAME_NOREPLACE) && old)
        rc = -EEXIST;
    if (rc == 0) {
        skey = key_of(m, src, false);
        dkey = key_of(m, dst, false);
        rc = skey && dkey ? 0 : -ENOMEM;
    }
    if (rc == 0 && (s = in->stage) != NULL)
        s->nopen++;
    if (rc == 0 && old && old != in && (os = old->stage) != NULL)
        os->nopen++; /* a replaced file's pending upload is dropped below */
    pthread_mutex_unlock(&m->lock);
    if (rc)
        goto reply;

    if (s)
        pthread_mutex_lock(&s->lock); /* no upload under the old key while we move it */
    pthread_mutex_lock(&m->lock);
    remote = in->remote;
    /* The file's last upload failed and close returned the error: what exists under the name
     * is not what was written, so the rename fails with that error instead of moving it. (With
     * --upload-delay a failed upload is retried, under whatever key the file has by then.) */
    if (!m->delay_us)
        rc = s && s->failed ? s->failed_err : !s ? in->upload_err : 0;
    pthread_mutex_unlock(&m->lock);
    /* A file that exists only as a stage just changes the key it will be uploaded under. Bytes
     * already in the store move by server-side copy + delete (a dirty stage of such a file is
     * uploaded to the new key afterwards). */
    if (rc == 0 && remote) {
        rc = m->be->copy(m->ctx, skey, dkey, NULL, &info);
        if (rc == 0)
            rc = m->be->remove(m->ctx, skey);
        copied = rc == 0;
    }
    if (rc == 0) {
        pthread_mutex_lock(&m->lock);
        char *moved = strdup(dst);
        if (moved) {
            invalidate_parent(m, src);
            invalidate_parent(m, dst);
            mount_inodes_rename(m->inodes, in, moved);
            /* The copy is the version the name now has, also when a stage with nothing unsent
             * is still there (its writer's RELEASE on its way): reads must ask for its ETag. */
            if (copied && (!in->stage || (in->stage == s && !s->dirty)))
                adopt(in, &info, now_us() + m->ttl_us);
        } else {
            rc = -ENOMEM;
        }
        pthread_mutex_unlock(&m->lock);
    }
    /* A recorded pending upload goes to the new key, also after a crash. */
    if (rc == 0 && s && s->recorded)
        rc = stage_record(m, s, dkey, copied);
    if (s) {
        pthread_mutex_unlock(&s->lock);
        stage_put(m, s);
    }
    if (os) {
        if (rc == 0)
            stage_upload(m, os); /* detached by the rename: drops its pending upload */
        stage_put(m, os);
    }
reply:
    free(src);
    free(dst);
    free(skey);
    free(dkey);
    fuse_reply_err(req, -rc);
}

/* Only regular files exist in S3: mknod of one is an empty object, anything else EPERM. */
static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    mount_view *m = fuse_req_userdata(req);
    if (!S_ISREG(mode))
        fuse_reply_err(req, m->cfg.read_only ? EROFS : EPERM);
    else
        make_empty(req, parent, name, false, mode);
}

/* Hard and symbolic links: S3 has neither. EPERM is link(2)'s and symlink(2)'s errno for "the
 * filesystem does not support" them. */
static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    mount_view *m = fuse_req_userdata(req);
    fuse_reply_err(req, m->cfg.read_only ? EROFS : EPERM);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    mount_view *m = fuse_req_userdata(req);
    fuse_reply_err(req, m->cfg.read_only ? EROFS : EPERM);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    fuse_reply_err(req, EINVAL); /* nothing here is a symbolic link */
}

/* Extended attributes: S3 user metadata is not exposed; every xattr call is ENOTSUP. */
static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    mount_view *m = fuse_req_userdata(req);
    fuse_reply_err(req, m->cfg.read_only ? EROFS : ENOTSUP);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    fuse_reply_err(req, ENOTSUP);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    fuse_reply_err(req, ENOTSUP);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    mount_view *m = fuse_req_userdata(req);
    fuse_reply_err(req, m->cfg.read_only ? EROFS : ENOTSUP);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                         struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    fuse_reply_err(req, m->cfg.read_only ? EROFS : EOPNOTSUPP);
}

/* ---- directories -------------------------------------------------------------------------- */

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    mount_listing *l = NULL;
    char *path = NULL;
    mount_handle *h = calloc(1, sizeof *h);
    int rc = h ? 0 : -ENOMEM;
    if (rc)
        goto reply;
    pthread_mutex_lock(&m->lock);
    mount_inode *in = get_inode(m, ino);
    if (!in || !in->is_dir) {
        rc = in ? -ENOTDIR : -ENOENT;
        goto unlock;
    }
    /* A listing younger than the negative TTL is reused: a new object shows up in `ls` within
     * --negative-ttl, as it does in lookups. */
    if (in->listing && now_us() < in->listing->listed_at + m->neg_ttl_us) {
        l = in->listing;
        l->refs++;
        goto unlock;
    }
    path = strdup(in->path);
    uint64_t gen = in->list_gen;
    pthread_mutex_unlock(&m->lock);
    rc = path ? fetch_listing(m, path, &l) : -ENOMEM;
    if (rc)
        goto reply;
    pthread_mutex_lock(&m->lock);
    merge_staged(m, path, l);
    /* A change in the directory while the listing was fetched (an upload ended, a name went) may
     * be missing from it: this handle still reads it, but it is not kept for the next opendir. */
    if (in->list_gen == gen) {
        drop_listing(in);
        in->listing = l;
        l->refs++;
    }
unlock:
    if (rc == 0) {
        h->listing = l;
        handle_link(m, h);
    }
    pthread_mutex_unlock(&m->lock);
reply:
    free(path);
    if (rc) {
        free(h);
        fuse_reply_err(req, -rc);
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    if (fuse_reply_open(req, fi) != 0)
        handle_end(m, h);
}

/* Adds listing entries from index `off` (0 ".", 1 "..", then the children) to `buf`. In plus
 * mode each child becomes an inode described by the listing (no HEAD), and counts as a lookup
 * only when it fitted. m->lock held. Returns the bytes used. */
static size_t fill_dir(mount_view *m, fuse_req_t req, mount_inode *dir, mount_listing *l, char *buf,
                       size_t size, off_t off, bool plus)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    size_t pos = 0;
    uint64_t until = l->listed_at + m->ttl_us;
    for (size_t i = (size_t)off; i < l->n + 2; i++) {
        struct fuse_entry_param e;
        memset(&e, 0, sizeof e);
        const char *name = i == 0 ? "." : "..";
        mount_inode *child = NULL;
        e.attr.st_mode = S_IFDIR;
        e.attr.st_ino = dir->ino;
        if (i == 1) {
            char *pp = parent_path(dir->path);
            mount_inode *p = pp && *dir->path ? mount_inodes_find(m->inodes, pp) : NULL;
            e.attr.st_ino = p ? p->ino : 1;
            free(pp);
        } else if (i >= 2) {
            const mount_dirent *d = &l->e[i - 2];
            char *path = child_path(dir->path, d->name);
            if (!path)
                break;
            name = d->name;
            e.attr.st_mode = d->is_dir ? S_IFDIR : S_IFREG;
            if (plus) {
                mount_inode *old = mount_inodes_find(m->inodes, path);
                if (old && old->attr_until < until)
                    check_version(m, path, d->is_dir, &d->info); /* the listing is newer */
                child = inode_at(m, path, d->is_dir);
                if (!child)
                    child = mount_inodes_find(m->inodes, path);
                if (child && child->attr_until < until && !d->is_dir)
                    learn(child, &d->info, until);
                else if (child && d->is_dir && child->attr_until < until)
                    child->attr_until = until;
                if (child)
                    fill_entry(m, child, &e);
            } else {
                e.attr.st_ino = mount_inodes_number(m->inodes, path);
            }
            free(path);
            if (plus && !child)
                break;
        }
        size_t left = size - pos;
        size_t need = plus ? fuse_add_direntry_plus(req, buf + pos, left, name, &e, (off_t)i + 1)
                           : fuse_add_direntry(req, buf + pos, left, name, &e.attr, (off_t)i + 1);
        if (need > left) {
            if (child)
                mount_inodes_maybe_free(m->inodes, child);
            break;
        }
        if (child)
            child->nlookup++;
        pos += need;
    }
    return pos;
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi, bool plus)
{
    mount_view *m = fuse_req_userdata(req);
    mount_listing *l = ((mount_handle *)(uintptr_t)fi->fh)->listing;
    char *buf = malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    pthread_mutex_lock(&m->lock);
    mount_inode *dir = get_inode(m, ino);
    size_t used = dir ? fill_dir(m, req, dir, l, buf, size, off, plus) : 0;
    pthread_mutex_unlock(&m->lock);
    if (dir)
        fuse_reply_buf(req, buf, used);
    else
        fuse_reply_err(req, ENOENT);
    free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    readdir_common(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    readdir_common(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    handle_end(fuse_req_userdata(req), (mount_handle *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    fuse_reply_err(req, 0); /* directory changes reach the store when they are made */
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    /* A bucket has no size: report 1 PiB free in 4 KiB blocks so tools that check free space
     * (installers, dataset downloaders) go ahead, and a billion free inodes. */
    struct statvfs sv;
    memset(&sv, 0, sizeof sv);
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    sv.f_blocks = sv.f_bfree = sv.f_bavail = (1ull << 50) / 4096;
    sv.f_files = sv.f_ffree = sv.f_favail = 1000000000ull;
    sv.f_namemax = MOUNT_NAME_MAX;
    fuse_reply_statfs(req, &sv);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    mount_view *m = userdata;
    /* A read-only mount needs nothing at open or close: versions are checked at lookup (an
     * inode stands for one ETag), so op_open answers ENOSYS and the kernel opens files itself. */
    m->no_open = m->cfg.read_only && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT);
    conn->max_write = MOUNT_IO_MAX;
    conn->max_read = MOUNT_IO_MAX;
    conn->max_readahead = MOUNT_READAHEAD;
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    /* O_TRUNC must reach open(): a separate truncate to 0 would upload an empty object first. */
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    /* Write-through: every write reaches the stage, so flush sees all the bytes. */
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

static const struct fuse_lowlevel_ops mount_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .create = op_create,
    .fallocate = op_fallocate,
};

/* ---- write-back (--upload-delay) ---------------------------------------------------------- */

#define WB_BACKOFF_MIN_US (200u * 1000u) /* first retry of a failed delayed upload */
#define WB_BACKOFF_MAX_US (30u * 1000000u)

/* The write-back thread: uploads each pending stage once it has been closed and unchanged for
 * the delay and no descriptor has it open for writing. A failed upload stays pending and is
 * tried again with a doubling backoff (logged, counted in mount_writeback_stats.retries); the
 * staged file and its record stay until the store acknowledged the bytes. */
static void *wb_main(void *arg)
{
    mount_view *m = arg;
    pthread_mutex_lock(&m->lock);
    while (!m->wb_stop) {
        uint64_t now = now_us(), next = UINT64_MAX;
        mount_stage *due = NULL;
        for (mount_stage *s = m->stages; s && !due; s = s->next) {
            if (!s->pending || s->writers)
                continue;
            if (s->due_us <= now)
                due = s;
            else if (s->due_us < next)
                next = s->due_us;
        }
        if (!due) {
            if (next == UINT64_MAX) {
                pthread_cond_wait(&m->wb_cond, &m->lock);
            } else {
                struct timespec ts = {(time_t)(next / 1000000u), (long)(next % 1000000u) * 1000};
                pthread_cond_timedwait(&m->wb_cond, &m->lock, &ts);
            }
            continue;
        }
        due->nopen++;
        pthread_mutex_unlock(&m->lock);
        int rc = stage_upload(m, due);
        pthread_mutex_lock(&m->lock);
        if (rc != 0 && due->pending) {
            unsigned shift = due->tries < 8 ? due->tries : 8;
            uint64_t wait = (uint64_t)WB_BACKOFF_MIN_US << shift;
            if (wait > WB_BACKOFF_MAX_US)
                wait = WB_BACKOFF_MAX_US;
            due->tries++;
            due->due_us = now_us() + wait;
            m->wb.retries++;
            char q[512];
            LOG_WARN("mount", "upload_retry", "path=%s errno=%d tries=%u next_ms=%llu",
                     shoal_log_q(q, sizeof q, due->in->path), -rc, due->tries,
                     (unsigned long long)(wait / 1000));
        }
        pthread_mutex_unlock(&m->lock);
        stage_put(m, due);
        pthread_mutex_lock(&m->lock);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

/* Reads the record `rec` (a path): its key (heap) and whether an object existed there. */
/* Reads a record: the key (a new string) and, from its first line, whether an object existed
 * and the attributes (none in a first-format record). NULL when the record is unreadable. */
static char *record_read(const char *rec, bool *remote, mount_attrs *a)
{
    size_t len = 0;
    char *buf = NULL;
    FILE *f = fopen(rec, "re");
    if (!f)
        return NULL;
    buf = malloc(65536 + 1);
    if (buf)
        len = fread(buf, 1, 65536, f);
    fclose(f);
    char *nl = buf ? memchr(buf, '\n', len) : NULL;
    if (!nl || memchr(buf, '\0', len) || (size_t)(nl - buf) + 1 == len) {
        free(buf);
        return NULL;
    }
    *nl = '\0';
    memset(a, 0, sizeof *a);
    char kind = 0;
    long long ms = 0, as = 0;
    int got = sscanf(buf, RECORD_MAGIC "2 %c %u %u %u %u %lld %u %lld %u", &kind, &a->set, &a->mode, &a->uid,
                     &a->gid, &ms, &a->mtime.nsec, &as, &a->atime.nsec);
    if (got != 9) {
        memset(a, 0, sizeof *a);
        got = sscanf(buf, RECORD_MAGIC "1 %c", &kind) == 1 && strlen(buf) == strlen(RECORD_MAGIC) + 3 ? 1 : 0;
    }
    if (!got || (kind != 'R' && kind != 'N')) {
        free(buf);
        return NULL;
    }
    a->mtime.sec = ms;
    a->atime.sec = as;
    *remote = kind == 'R';
    buf[len] = '\0';
    size_t head = (size_t)(nl - buf) + 1;
    memmove(buf, buf + head, len - head + 1);
    return buf;
}

/* Takes up one record left by a previous run (m->lock held; mount_new): the staged file `file`
 * becomes a pending stage of its path, due at once. A record this mount cannot use (another
 * prefix, unreadable) is left on disk and logged: never dropped. */
static void recover_one(mount_view *m, const char *file)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    char *rec = NULL, *key = NULL, q[512];
    bool remote = false;
    mount_attrs attrs;
    struct stat st;
    if (asprintf(&rec, "%s.key", file) < 0)
        return;
    key = record_read(rec, &remote, &attrs);
    size_t plen = strlen(m->prefix);
    const char *path = key ? key + plen : NULL;
    if (!key || strncmp(key, m->prefix, plen) != 0 || !*path || path[strlen(path) - 1] == '/') {
        LOG_ERROR("mount", "record_kept", "record=%s reason=\"%s\"", shoal_log_q(q, sizeof q, rec),
                  key ? "the key is outside this mount's prefix" : "unreadable record");
        goto out;
    }
    mount_inode *in = mount_inodes_find(m->inodes, path);
    int fd = in && in->stage ? -1 : open(file, O_RDWR | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        LOG_ERROR("mount", "record_kept", "record=%s reason=\"%s\"", shoal_log_q(q, sizeof q, rec),
                  fd < 0 && in ? "another record names the same key" : "staged file unreadable");
        if (fd >= 0)
            close(fd);
        goto out;
    }
    char *name = strdup(file);
    mount_stage *s = NULL;
    in = mount_inodes_get_path(m->inodes, path, false);
    if (!name || !in || !(s = stage_link(m, in, fd, name))) {
        free(name);
        close(fd);
        goto out;
    }
    s->size = s->reserved = (uint64_t)st.st_size;
    m->staged_bytes += s->reserved;
    s->filled = s->dirty = s->recorded = s->pending = true;
    s->nopen = 1; /* the pending upload's use */
    in->remote = remote;
    in->info.size = s->size;
    in->info.mtime = st.st_mtim.tv_sec;
    in->info.has_attrs = attrs.set != 0;
    in->info.attrs = attrs;
    m->wb.pending++;
    m->wb.recovered++;
    LOG_INFO("mount", "upload_recovered", "key=%s size=%llu", shoal_log_q(q, sizeof q, key),
             (unsigned long long)s->size);
out:
    free(rec);
    free(key);
}

static int is_stage_name(const struct dirent *e)
{
    return strncmp(e->d_name, "stage-", 6) == 0;
}

/* At mount_new: takes up every record in the staging directory (recover_one), then removes what
 * no record names (files open for writing when the previous run ended, half-written records). */
static void recover(mount_view *m)
{
    struct dirent **names;
    int n = scandir(m->staging_dir, &names, is_stage_name, alphasort);
    if (n < 0)
        return;
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < n; i++) {
        const char *dot = strchr(names[i]->d_name, '.');
        char *file;
        if (!dot || strcmp(dot, ".key") != 0 ||
            asprintf(&file, "%s/%.*s", m->staging_dir, (int)(dot - names[i]->d_name),
                     names[i]->d_name) < 0)
            continue;
        recover_one(m, file);
        free(file);
    }
    for (int i = 0; i < n; i++) {
        char *p, *rec;
        if (asprintf(&p, "%s/%s", m->staging_dir, names[i]->d_name) < 0)
            continue;
        bool named = strchr(names[i]->d_name, '.') != NULL;
        if (!named && asprintf(&rec, "%s.key", p) >= 0) {
            named = access(rec, F_OK) == 0; /* a record kept (recover_one logged why) */
            free(rec);
        }
        if (!named || strstr(names[i]->d_name, ".key.tmp"))
            unlink(p);
        free(p);
        free(names[i]);
    }
    free(names);
    pthread_mutex_unlock(&m->lock);
}

void mount_writeback_stats_get(mount_view *m, mount_writeback_stats *out)
{
    pthread_mutex_lock(&m->lock);
    *out = m->wb;
    pthread_mutex_unlock(&m->lock);
}

/* ---- life cycle --------------------------------------------------------------------------- */

void mount_config_defaults(mount_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->metadata_ttl = 60;
    cfg->negative_ttl = 5;
    cfg->uid = getuid();
    cfg->gid = getgid();
    cfg->file_mode = 0644;
    cfg->dir_mode = 0755;
}

mount_view *mount_new(const mount_config *cfg, const mount_backend *backend, void *ctx)
{
    struct stat st;
    if (!cfg->mountpoint || !*cfg->mountpoint) {
        shoal_error_set(SHOAL_ERR_INVAL, "mount: no mount point given");
        goto fail;
    }
    if (!cfg->staging_dir || !*cfg->staging_dir) {
        shoal_error_set(SHOAL_ERR_INVAL, "mount %s: no staging directory given", cfg->mountpoint);
        goto fail;
    }
    if (!(cfg->upload_delay >= 0) || cfg->upload_delay > 86400 * 365) {
        shoal_error_set(SHOAL_ERR_INVAL, "mount %s: the upload delay must be >= 0 seconds (%g)",
                        cfg->mountpoint, cfg->upload_delay);
        goto fail;
    }
    if (!(cfg->metadata_ttl >= 0) || !(cfg->negative_ttl >= 0)) {
        shoal_error_set(SHOAL_ERR_INVAL, "mount %s: TTLs must be >= 0 seconds (metadata %g, "
                        "negative %g)", cfg->mountpoint, cfg->metadata_ttl, cfg->negative_ttl);
        goto fail;
    }
    if (!backend || !backend->head || !backend->list || !backend->read || !backend->put ||
        !backend->copy || !backend->remove) {
        shoal_error_set(SHOAL_ERR_INVAL, "mount %s: backend table incomplete", cfg->mountpoint);
        goto fail;
    }
    if (mkdir(cfg->staging_dir, 0700) != 0 && errno != EEXIST) {
        shoal_error_errno(errno, "mount: cannot create staging directory %s", cfg->staging_dir);
        goto fail;
    }
    if (stat(cfg->staging_dir, &st) != 0 || !S_ISDIR(st.st_mode) ||
        access(cfg->staging_dir, W_OK) != 0) {
        shoal_error_set(SHOAL_ERR_IO, "mount: staging directory %s is not a writable directory",
                        cfg->staging_dir);
        goto fail;
    }
    mount_view *m = calloc(1, sizeof *m);
    if (!m)
        goto fail_nomem;
    m->cfg = *cfg;
    m->be = backend;
    m->ctx = ctx;
    m->ttl_us = (uint64_t)(cfg->metadata_ttl * 1e6);
    m->neg_ttl_us = (uint64_t)(cfg->negative_ttl * 1e6);
    m->started = time(NULL);
    m->delay_us = (uint64_t)(cfg->upload_delay * 1e6);
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->once_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* wb_main waits on now_us() deadlines */
    pthread_cond_init(&m->wb_cond, &ca);
    pthread_condattr_destroy(&ca);
    m->mountpoint = strdup(cfg->mountpoint);
    m->staging_dir = strdup(cfg->staging_dir);
    m->prefix = mount_names_prefix(cfg->prefix);
    m->inodes = mount_inodes_new();
    m->once = calloc(MOUNT_ONCE_SLOTS, sizeof *m->once);
    if (!m->mountpoint || !m->staging_dir || !m->prefix || !m->inodes || !m->once) {
        shoal_error_set(SHOAL_ERR_NOMEM, "mount %s: out of memory", cfg->mountpoint);
        goto fail_mount;
    }
    m->cfg.mountpoint = m->mountpoint;
    m->cfg.staging_dir = m->staging_dir;
    m->cfg.prefix = m->prefix;
    recover(m);
    if (pthread_create(&m->wb_thread, NULL, wb_main, m) != 0) {
        shoal_error_set(SHOAL_ERR_NOMEM, "mount %s: cannot start the write-back thread",
                        cfg->mountpoint);
        goto fail_mount;
    }
    m->wb_running = true;
    return m;

fail_mount:
    mount_delete(m);
    return NULL;
fail_nomem:
    shoal_error_set(SHOAL_ERR_NOMEM, "mount %s: out of memory", cfg->mountpoint);
fail:
    return NULL;
}

static void *loop_main(void *arg)
{
    mount_view *m = arg;
    struct fuse_loop_config lc = {.clone_fd = 0, .max_idle_threads = 16};
    int rc = fuse_session_loop_mt(m->se, &lc);
    LOG_INFO("mount", "loop_ended", "mountpoint=%s rc=%d", m->mountpoint, rc);
    atomic_store(&m->loop_over, true);
    return NULL;
}

bool mount_unmounted(mount_view *m)
{
    return m && atomic_load(&m->loop_over) && !atomic_load(&m->stopping);
}

/* Runs `fusermount3 -u -z path` (for users who may not call umount2) and waits. 0 on success. */
static int run_fusermount(const char *path)
{
    pid_t pid;
    int status;
    char *argv[] = {"fusermount3", "-u", "-z", (char *)path, NULL};
    if (posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ) != 0)
        return -1;
    if (waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int mount_cleanup_stale(const char *mountpoint)
{
    struct stat st;
    struct statfs sf;
    /* statfs, not stat: the kernel may answer stat from cached attributes of a dead mount, but
     * always asks the daemon for statfs, and a dead connection answers ENOTCONN. */
    if (statfs(mountpoint, &sf) == 0)
        return 0;
    if (errno != ENOTCONN)
        return shoal_error_errno(errno, "mount: mount point %s", mountpoint);
    LOG_WARN("mount", "stale_mount", "mountpoint=%s action=\"lazy unmount\"", mountpoint);
    if (umount2(mountpoint, MNT_DETACH) != 0 && run_fusermount(mountpoint) != 0)
        return shoal_error_set(SHOAL_ERR_MOUNT, "mount: cannot unmount the stale mount at %s "
                               "(try: fusermount3 -u -z %s)", mountpoint, mountpoint);
    if (stat(mountpoint, &st) != 0)
        return shoal_error_set(SHOAL_ERR_MOUNT, "mount: %s still unusable after unmounting a "
                               "stale mount: %s", mountpoint, strerror(errno));
    return 0;
}

/* The kernel caps FUSE read-ahead at the backing device's default (128 KiB) whatever INIT asks
 * for, so reads would reach the backend in 128 KiB pieces. Root may raise it through sysfs;
 * others keep the default (logged). */
static void raise_readahead(mount_view *m)
{
    struct stat st;
    char path[96];
    if (stat(m->mountpoint, &st) != 0)
        return;
    snprintf(path, sizeof path, "/sys/class/bdi/%u:%u/read_ahead_kb", major(st.st_dev),
             minor(st.st_dev));
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%u", MOUNT_READAHEAD / 1024) < 0) {
        LOG_INFO("mount", "readahead_default", "mountpoint=%s reason=\"%s not writable\"",
                 m->mountpoint, path);
    }
    if (f)
        fclose(f);
}

/* True when fuse.conf (`path`) has a user_allow_other line: fusermount3 then lets a user that is
 * not root mount with allow_other. */
static bool fuse_conf_allows_other(const char *path)
{
    FILE *f = fopen(path, "re");
    char line[256];
    bool yes = false;
    while (f && !yes && fgets(line, sizeof line, f)) {
        char *p = line + strspn(line, " \t");
        yes = strncmp(p, "user_allow_other", 16) == 0 && (p[16] == '\0' || strchr(" \t\r\n", p[16]));
    }
    if (f)
        fclose(f);
    return yes;
}

int mount_start(mount_view *m)
{
    char opts[256];
    if (m->running)
        return 0;
    atomic_store(&m->loop_over, false);
    atomic_store(&m->stopping, false);
    if (m->cfg.allow_other && geteuid() != 0 && !fuse_conf_allows_other("/etc/fuse.conf"))
        return shoal_error_set(SHOAL_ERR_MOUNT, "mount %s: --allow-other needs a line 'user_allow_other' in "
                               "/etc/fuse.conf when the daemon does not run as root", m->mountpoint);
    if (mount_cleanup_stale(m->mountpoint) != 0)
        return -1;
    if (access("/dev/fuse", R_OK | W_OK) != 0)
        return shoal_error_set(SHOAL_ERR_MOUNT, "mount %s: /dev/fuse: %s", m->mountpoint,
                               strerror(errno));
    snprintf(opts, sizeof opts, "fsname=shoal,subtype=shoal,default_permissions,max_read=%u%s%s",
             MOUNT_IO_MAX, m->cfg.allow_other ? ",allow_other" : "",
             m->cfg.read_only ? ",ro" : "");
    char *argv[] = {"shoald", "-o", opts, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    m->se = fuse_session_new(&args, &mount_ops, sizeof mount_ops, m);
    fuse_opt_free_args(&args); /* libfuse may have copied argv while parsing */
    if (!m->se)
        return shoal_error_set(SHOAL_ERR_MOUNT, "mount %s: cannot create the FUSE session "
                               "(options %s)", m->mountpoint, opts);
    if (fuse_session_mount(m->se, m->mountpoint) != 0) {
        shoal_error_set(SHOAL_ERR_MOUNT, "mount %s: mounting failed (not permitted, or the mount "
                        "point is busy; libfuse printed the reason)", m->mountpoint);
        goto fail_session;
    }
    if (pthread_create(&m->thread, NULL, loop_main, m) != 0) {
        shoal_error_set(SHOAL_ERR_MOUNT, "mount %s: cannot start the loop thread", m->mountpoint);
        goto fail_mounted;
    }
    m->running = true;
    raise_readahead(m);
    LOG_INFO("mount", "mounted", "mountpoint=%s prefix=%s read_only=%d", m->mountpoint,
             *m->prefix ? m->prefix : "/", m->cfg.read_only);
    return 0;

fail_mounted:
    fuse_session_unmount(m->se);
fail_session:
    fuse_session_destroy(m->se);
    m->se = NULL;
    return -1;
}

/* Unmounts as root: a plain unmount ends the connection at once when no file is open; while
 * files stay open (EBUSY) it retries for MOUNT_STOP_WAIT_S, then MNT_FORCE aborts the FUSE
 * connection (the open files get ENOTCONN) and MNT_DETACH removes the mount. True when the
 * connection is over; false when not permitted (the caller falls back to fusermount3). */
static bool unmount_as_root(mount_view *m)
{
    for (int i = 0; i < MOUNT_STOP_WAIT_S * 10; i++) {
        if (umount2(m->mountpoint, 0) == 0)
            return true;
        if (errno != EBUSY)
            return false;
        usleep(100 * 1000);
    }
    LOG_WARN("mount", "abort_connection", "mountpoint=%s reason=\"files still open\"",
             m->mountpoint);
    if (umount2(m->mountpoint, MNT_FORCE) != 0 && errno != EBUSY)
        return false;
    umount2(m->mountpoint, MNT_DETACH);
    return true;
}

/* After a lazy unmount that open files keep alive: aborts the connection through the fusectl
 * filesystem when it is mounted. True when that was done. */
static bool abort_connection(const struct stat *st)
{
    char path[64];
    snprintf(path, sizeof path, "/sys/fs/fuse/connections/%u/abort", minor(st->st_dev));
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    fputs("1", f);
    fclose(f);
    return true;
}

int mount_stop(mount_view *m)
{
    struct stat st;
    int rc = 0;
    if (!m || !m->running)
        return 0;
    bool have_dev = stat(m->mountpoint, &st) == 0; /* names the connection, for fusectl */
    atomic_store(&m->stopping, true);
    fuse_session_exit(m->se);
    bool over = unmount_as_root(m);
    if (!over)
        run_fusermount(m->mountpoint); /* a lazy unmount, as a user without CAP_SYS_ADMIN may */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += MOUNT_STOP_WAIT_S;
    bool joined = false;
    if (!over && pthread_timedjoin_np(m->thread, NULL, &deadline) == 0)
        joined = over = true;
    if (!over && have_dev)
        over = abort_connection(&st);
    /* Once the connection is over, only handlers in flight (an upload) keep the loop: wait. */
    if (over && !joined)
        pthread_join(m->thread, NULL);
    if (!over) {
        rc = shoal_error_set(SHOAL_ERR_MOUNT, "mount %s: files are still open and the FUSE "
                             "connection cannot be aborted", m->mountpoint);
        pthread_detach(m->thread);
    }
    m->running = false;
    if (rc == 0) {
        /* Only now that no worker reads the device: libfuse closes it here (and finds the
         * mount already gone). */
        fuse_session_unmount(m->se);
        fuse_session_destroy(m->se);
        m->se = NULL;
        LOG_INFO("mount", "unmounted", "mountpoint=%s", m->mountpoint);
    }
    return rc;
}

void mount_delete(mount_view *m)
{
    if (!m)
        return;
    if (mount_stop(m) != 0) {
        /* The loop thread may still touch the mount: leaking it is the only safe choice. */
        LOG_ERROR("mount", "delete_leaked", "mountpoint=%s reason=\"%s\"", m->mountpoint,
                  shoal_error_message());
        return;
    }
    if (m->wb_running) {
        pthread_mutex_lock(&m->lock);
        m->wb_stop = true;
        pthread_cond_signal(&m->wb_cond);
        pthread_mutex_unlock(&m->lock);
        pthread_join(m->wb_thread, NULL);
    }
    /* Pending delayed uploads get one try now; what fails stays on disk for the next start. */
    for (mount_stage *s = m->stages; s; s = s->next)
        if (s->pending)
            stage_upload(m, s);
    while (m->handles) {
        mount_handle *h = m->handles;
        m->handles = h->next;
        mount_listing_unref(h->listing);
        free(h->key);
        free(h);
    }
    while (m->stages) {
        mount_stage *s = m->stages;
        m->stages = s->next;
        s->in->stage = NULL;
        stage_free(s);
    }
    mount_inodes_delete(m->inodes);
    if (m->once)
        for (size_t i = 0; i < MOUNT_ONCE_SLOTS; i++)
            free(m->once[i]);
    free(m->once);
    free(m->mountpoint);
    free(m->staging_dir);
    free(m->prefix);
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->once_lock);
    pthread_cond_destroy(&m->wb_cond);
    free(m);
}
