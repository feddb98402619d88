/*
 * mount_file: what happens to an open file. OPEN and CREATE, READ and WRITE, FLUSH (each close),
 * FSYNC and RELEASE, and SETATTR with the attributes it keeps as object metadata.
 *
 * Reads. On a --read-only mount nothing is left to do at open or close, so OPEN and FLUSH answer
 * ENOSYS and the kernel stops sending OPEN, FLUSH and RELEASE: a cached file costs no round
 * trip, and reads arrive with fh 0 (the inode names key and ETag). On a writable mount OPEN
 * records the ETag in a handle (an open of a superseded inode gets ESTALE, which makes open(2)
 * look the name up again), read-only descriptors skip FLUSH (FOPEN_NOFLUSH), and the page cache
 * is kept across opens while the ETag is the one the cache was filled with (inode->cache_etag).
 *
 * Each read says how the file is read: the descriptor's streams (the inode's when the kernel
 * opens files itself) tell a seek from a sequential read (mount_ra.h), and the backend gets the
 * run with the read, so it prefetches for sequential readers only.
 *
 * A read costs the daemon one request, the backend's pread and one reply, and as little besides:
 * the reply is built in a buffer each loop thread keeps for its reads (reply_buf, at most
 * MOUNT_IO_MAX, given back when the thread ends), not one allocated per read, which for the
 * kernel's 1 MiB reads cost glibc an mmap, page faults and an munmap each; and the key of a file
 * read without an open is built on the stack.
 *
 * Writes go to the file's stage (mount_stage.c). Only a descriptor that may write publishes at
 * its close: FLUSH uploads the stage and returns the upload's error, or with --upload-delay makes
 * it durable (mount_writeback.c); FSYNC uploads at once either way.
 *
 * Attributes. A size change cuts the staged bytes; mode, owner, group and times are object
 * metadata: a staged file carries them to its upload, anything else stores them at once (a copy
 * of the object onto itself, or a directory's marker). A change no descriptor's close will carry
 * is published here, or it would be reported done and then lost.
 */
#include "mount_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shoal_assert.h"

/* ---- the reply buffer of a loop thread ------------------------------------------------------- */

typedef struct reply_buf {
    size_t cap;
    char bytes[];
} reply_buf;

static pthread_key_t reply_key;
static pthread_once_t reply_once = PTHREAD_ONCE_INIT;
static bool reply_key_ok;

static void reply_key_make(void) { reply_key_ok = pthread_key_create(&reply_key, free) == 0; }

/* This thread's buffer of at least `size` bytes (size <= MOUNT_IO_MAX, the largest read the kernel
 * sends), kept for its next reads; NULL on NOMEM. Freed when the thread ends. */
static char *reply_buf_get(size_t size)
{
    pthread_once(&reply_once, reply_key_make);
    if (!reply_key_ok)
        return NULL;
    reply_buf *b = pthread_getspecific(reply_key);
    if (b != NULL && b->cap >= size)
        return b->bytes;
    /* Grown to the read's size rounded up to 128 KiB: a thread that only serves 4 KiB reads keeps
     * 128 KiB, and one of the kernel's read-ahead threads MOUNT_IO_MAX. */
    size_t cap = (size + (128u << 10) - 1) & ~(size_t)((128u << 10) - 1);
    reply_buf *nb = malloc(sizeof *nb + (cap ? cap : 1));
    if (nb == NULL || pthread_setspecific(reply_key, nb) != 0) {
        free(nb);
        return NULL;
    }
    free(b);
    nb->cap = cap;
    return nb->bytes;
}

/* Room for a key on the stack: S3's keys are at most 1024 bytes, and a longer one (which S3 refuses
 * anyway) is allocated. */
#define READ_KEY_ROOM 1280

/* The key of `path` (mount_key_of) in `buf` when it fits, else allocated into *heap (the caller
 * frees it); NULL on NOMEM. */
static const char *key_into(const mount_view *m, const char *path, char *buf, size_t cap, char **heap)
{
    size_t lp = strlen(m->prefix), ln = strlen(path);
    if (lp + ln < cap) {
        memcpy(buf, m->prefix, lp);
        memcpy(buf + lp, path, ln + 1);
        return buf;
    }
    return *heap = mount_key_of(m, path, false);
}

/* Whether an open writes. O_TRUNC without write access (POSIX leaves its result undefined) is an
 * open for reading: the kernel checks for a running program (ETXTBSY) only after OPEN answered,
 * and a stage emptied by then could not be filled again if a writer that closed just before
 * still shares it. */
static bool wants_write(int flags)
{
    return (flags & O_ACCMODE) != O_RDONLY;
}

void mount_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    if (m->no_open) {
        /* "Not implemented" here means: open every file yourself, keeping its page cache, and
         * send neither OPEN nor RELEASE again; reads come with fh 0 (mount_op_read). */
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
    mount_inode *in = mount_get_inode(m, ino);
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
        rc = mount_stage_open(m, in, (fi->flags & O_TRUNC) != 0, &h->stage);
        if (rc)
            goto fail;
        h->writer = true;
        pthread_mutex_lock(&m->lock);
        mount_handle_changed(h); /* its close uploads even when nothing is written */
    } else if (in->stage) {
        h->stage = in->stage; /* read what local writers wrote */
        h->stage->nopen++;
    } else {
        rc = mount_refresh(m, in); /* close-to-open: metadata older than the TTL is asked again */
        if (rc == 0 && in->stale)
            rc = -ESTALE;
        if (rc)
            goto unlock_fail;
        h->key = mount_key_of(m, in->path, false);
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
    mount_handle_link(m, h);
    pthread_mutex_unlock(&m->lock);
    fi->fh = (uint64_t)(uintptr_t)h;
    if (fuse_reply_open(req, fi) != 0)
        mount_handle_end(m, h); /* the opener is gone: no release will come */
    else
        atomic_fetch_add_explicit(&m->opens, 1, memory_order_relaxed);
    return;

unlock_fail:
    pthread_mutex_unlock(&m->lock);
fail:
    free(h->key);
    free(h);
    fuse_reply_err(req, -rc);
}

void mount_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    struct fuse_entry_param e;
    mount_stage *s = NULL;
    char *path = NULL;
    int rc = m->cfg.read_only ? -EROFS : mount_check_name(name);
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
    rc = mount_name_path(m, parent, name, &path);
    mount_inode *in = rc ? NULL : mount_inodes_find(m->inodes, path);
    if (rc == 0 && in && in->is_dir)
        rc = -EISDIR;
    if (rc == 0 && !(in = mount_inode_at(m, path, false)))
        rc = -ENOMEM;
    if (rc)
        goto unlock_fail;
    s = in->stage;
    if (!s)
        rc = mount_stage_new(m, in, &s);
    if (rc) {
        mount_inodes_maybe_free(m->inodes, in);
        goto unlock_fail;
    }
    s->nopen++;
    s->writers++;
    s->filled = true;
    s->dirty = true; /* a created file is uploaded on close even when left empty */
    memset(&in->info, 0, sizeof in->info);
    mount_created_attrs(req, S_IFREG | (mode & 07777), &in->info.attrs);
    in->info.has_attrs = true;
    in->info.mtime = in->info.attrs.mtime.sec;
    in->attr_until = mount_now_us() + m->ttl_us;
    in->cache_etag[0] = '\0';
    in->nlookup++;
    mount_invalidate_parent(m, path);
    mount_fill_entry(m, in, &e);
    h->stage = s;
    h->writer = true; /* even O_CREAT|O_RDONLY: its close creates the object */
    mount_handle_changed(h);
    mount_handle_link(m, h);
    pthread_mutex_unlock(&m->lock);
    free(path);
    fi->fh = (uint64_t)(uintptr_t)h;
    if (fuse_reply_create(req, &e, fi) != 0)
        mount_handle_end(m, h);
    else
        atomic_fetch_add_explicit(&m->opens, 1, memory_order_relaxed);
    return;

unlock_fail:
    pthread_mutex_unlock(&m->lock);
fail:
    free(path);
    free(h);
    fuse_reply_err(req, -rc);
}

void mount_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    mount_handle *h = (mount_handle *)(uintptr_t)fi->fh;
    char *buf = reply_buf_get(size);
    char *iheap = NULL, ikbuf[READ_KEY_ROOM], ietag[MOUNT_ETAG_MAX];
    const char *ikey = NULL;
    uint64_t run = 0; /* the sequential run this read ends (mount_ra.h) */
    ssize_t n = -ENOMEM;
    if (!buf)
        goto reply;
    if (!h) {
        /* Opened without a request (no_open): the inode names the version it stands for. */
        bool known = false;
        pthread_mutex_lock(&m->lock);
        mount_inode *in = mount_get_inode(m, ino);
        if (in && !in->is_dir) {
            known = true;
            ikey = key_into(m, in->path, ikbuf, sizeof ikbuf, &iheap);
            size_t el = strnlen(in->info.etag, MOUNT_ETAG_MAX - 1);
            memcpy(ietag, in->info.etag, el);
            ietag[el] = '\0';
            run = mount_ra_note(&in->ra, (uint64_t)off, size); /* every reader of the file */
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
        if (h) {
            pthread_mutex_lock(&m->ra_lock);
            run = mount_ra_note(&h->ra, (uint64_t)off, size);
            pthread_mutex_unlock(&m->ra_lock);
        }
        n = m->be->read(m->ctx, h ? h->key : ikey, etag, (uint64_t)off, size, buf, run);
        if (n == -ENOENT)
            n = -ESTALE; /* deleted while open: the version read is gone */
        if (n == -ESTALE) {
            pthread_mutex_lock(&m->lock);
            mount_inode *in = mount_get_inode(m, ino);
            if (in && !in->stage && !in->detached && strcmp(in->info.etag, etag) == 0) {
                mount_supersede(m, in); /* the next lookup asks the store again */
                mount_invalidate_parent(m, in->path);
            }
            pthread_mutex_unlock(&m->lock);
        }
    }
reply:
    free(iheap);
    if (n < 0) {
        fuse_reply_err(req, (int)-n);
    } else {
        atomic_fetch_add_explicit(&m->bytes_read, (uint64_t)n, memory_order_relaxed);
        fuse_reply_buf(req, buf, (size_t)n);
    }
}

void mount_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
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
    rc = end > MOUNT_MAX_OBJECT ? -EFBIG : mount_stage_reserve(m, s, end > s->size ? end : s->size);
    if (rc == 0)
        rc = mount_write_all(s->fd, buf, size, at);
    if (rc == 0) {
        s->dirty = true;
        s->failed = false;
        pthread_mutex_lock(&m->lock);
        if (end > s->size)
            s->size = end;
        mount_touch_mtime(s->in);
        mount_handle_changed(h);
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_unlock(&s->lock);
    if (rc) {
        fuse_reply_err(req, -rc);
    } else {
        atomic_fetch_add_explicit(&m->bytes_written, size, memory_order_relaxed);
        fuse_reply_write(req, size);
    }
}

void mount_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    mount_handle *h = (mount_handle *)(uintptr_t)fi->fh;
    if (!h || m->cfg.read_only) {
        /* Nothing to upload. "Not implemented" makes the kernel stop sending FLUSH (and, from
         * mount_op_fsync, FSYNC) on this mount: a close costs no round trip. */
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
        rc = mount_stage_persist(m, h->stage);
        pthread_mutex_unlock(&h->stage->lock);
    } else if (h->writer) {
        rc = mount_stage_upload(m, h->stage);
    }
    fuse_reply_err(req, -rc);
}

/* fsync uploads at once, also with --upload-delay, and returns the upload's error. */
void mount_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    mount_handle *h = (mount_handle *)(uintptr_t)fi->fh;
    if (!h || m->cfg.read_only || !m->delay_us) {
        mount_op_flush(req, ino, fi);
        return;
    }
    int rc = h->writer ? mount_stage_upload(m, h->stage) : 0;
    fuse_reply_err(req, -rc);
}

void mount_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
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
            mount_stage_upload(m, h->stage);
    }
    mount_handle_end(m, h);
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
        mount_handle_changed(h);
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
        return mount_stage_upload(m, s);
    pthread_mutex_lock(&s->lock);
    int rc = mount_stage_persist(m, s);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Merges what a setattr sets (mode, owner, group, times; "now" resolved) into `a`. The kernel
 * checked the caller may (default_permissions): owner for chmod and times, root for chown. */
static void merge_attrs(mount_attrs *a, bool is_dir, const struct stat *attr, int to_set)
{
    mount_time now = mount_time_now();
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
    char *key = rc ? NULL : mount_key_of(m, in->path, is_dir);
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
            mount_learn(in, &info, mount_now_us() + m->ttl_us);
        }
        if (!is_dir)
            mount_invalidate_parent(m, in->path); /* its listing shows the old ETag */
        pthread_mutex_unlock(&m->lock);
    }
out:
    free(key);
    return rc;
}

/* setattr: size on the staged bytes; mode, owner, group and times as object metadata
 * (docs/semantics.md, "Attributes"). A staged file keeps them for its upload; anything else
 * stores them at once. */
void mount_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
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
    in = mount_get_inode(m, ino);
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
            mount_stage_put(m, s);
            s = NULL;
        }
    }
    if (!s && (to_set & FUSE_SET_ATTR_SIZE)) {
        /* truncate(2) of a file nobody has staged: stage it (cut to 0 needs no bytes). */
        rc = mount_stage_open(m, in, attr->st_size == 0, &s);
        if (rc)
            goto reply;
        pthread_mutex_lock(&m->lock);
        s->writers--; /* not a handle: nothing holds a delayed upload back */
        pthread_mutex_unlock(&m->lock);
    }
    if (s) {
        pthread_mutex_lock(&s->lock);
        if (to_set & FUSE_SET_ATTR_SIZE)
            rc = mount_stage_truncate(m, s, (uint64_t)attr->st_size);
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
        mount_stage_put(m, s);
    } else if (to_set & ATTRS) {
        rc = store_attrs(m, in, attr, to_set);
    }
reply:
    if (rc == 0) {
        pthread_mutex_lock(&m->lock);
        mount_fill_attr(m, in, &st);
        pthread_mutex_unlock(&m->lock);
        fuse_reply_attr(req, &st, m->cfg.metadata_ttl);
    } else {
        fuse_reply_err(req, -rc);
    }
}
