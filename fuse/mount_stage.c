/*
 * mount_stage: the bytes of files being written, until the store has them.
 *
 * A file opened for writing is staged: a temporary file in the staging directory (already
 * unlinked, so a crash leaves nothing; with --upload-delay it keeps a name: mount_writeback.c),
 * filled with the object's bytes first unless O_TRUNC. The writers of a file share its stage,
 * and a reader of a staged file reads the stage (what local writers wrote). flush (each close of
 * a descriptor open for writing) and fsync upload it when dirty (mount_stage_upload) and return
 * the backend's error; a failed upload is not retried behind the caller's back. The staging cap
 * counts the largest size each staged file reached; a write past it gets ENOSPC before a byte is
 * written.
 *
 * A stage lives while it has uses (`nopen`, under m->lock): its handles, the requests in flight
 * that work on it, and a pending delayed upload; the last mount_stage_put unlinks it from the
 * mount and frees it. Its own lock (s->lock) serialises fill, write, truncate, upload and rename
 * of the file; it may be taken before m->lock, never inside it.
 *
 * Every open file or directory is a mount_handle listed in the mount: the kernel drops RELEASE
 * requests still queued when the mount goes away, so mount_delete frees what is left.
 */
#include "mount_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shoal_assert.h"
#include "shoal_log.h"

/* Links a new stage (or one recovered at start) into the mount's list (m->lock held). */
mount_stage *mount_stage_link(mount_view *m, mount_inode *in, int fd, char *file)
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
int mount_stage_new(mount_view *m, mount_inode *in, mount_stage **out)
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
    mount_stage *s = mount_stage_link(m, in, fd, tmpl);
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
void mount_stage_free(mount_stage *s)
{
    if (s->file && !s->recorded)
        unlink(s->file);
    close(s->fd);
    pthread_mutex_destroy(&s->lock);
    free(s->file);
    free(s);
}

/* Drops one use of `s`; the last one frees it and releases its staging bytes. */
void mount_stage_put(mount_view *m, mount_stage *s)
{
    SHOAL_ASSERT_UNLOCKED(&m->lock);
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
        mount_stage_free(s);
}

/* Lists `h` among the live handles (m->lock held). */
void mount_handle_link(mount_view *m, mount_handle *h)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    h->prev = NULL;
    h->next = m->handles;
    if (m->handles)
        m->handles->prev = h;
    m->handles = h;
}

/* A writer `h` changed its stage: its next FLUSH publishes the change (m->lock held). */
void mount_handle_changed(mount_handle *h)
{
    if (!h->unflushed) {
        h->unflushed = true;
        h->stage->unflushed++;
    }
}

/* Ends a handle: unlists it, drops its listing and its use of the stage, frees it. */
void mount_handle_end(mount_view *m, mount_handle *h)
{
    SHOAL_ASSERT_UNLOCKED(&m->lock);
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
        mount_stage_put(m, h->stage);
    free(h->key);
    free(h);
}

/* Counts the staged file as `size` bytes against the cap (s->lock held). 0 or -ENOSPC. */
int mount_stage_reserve(mount_view *m, mount_stage *s, uint64_t size)
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
int mount_stage_truncate(mount_view *m, mount_stage *s, uint64_t size)
{
    SHOAL_ASSERT_LOCKED(&s->lock);
    int rc = mount_stage_reserve(m, s, size > s->size ? size : s->size);
    if (rc)
        return rc;
    if (ftruncate(s->fd, (off_t)size) != 0)
        return -errno;
    pthread_mutex_lock(&m->lock);
    s->size = size;
    mount_touch_mtime(s->in);
    pthread_mutex_unlock(&m->lock);
    s->dirty = true;
    s->failed = false;
    return mount_stage_reserve(m, s, size);
}

int mount_write_all(int fd, const char *buf, size_t len, uint64_t off)
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
    int rc = mount_stage_reserve(m, s, size);
    char *buf = rc ? NULL : malloc(MOUNT_IO_MAX);
    uint64_t off = 0;
    if (rc)
        return rc;
    if (!buf)
        return -ENOMEM;
    while (off < size) {
        size_t want = size - off < MOUNT_IO_MAX ? (size_t)(size - off) : MOUNT_IO_MAX;
        ssize_t n = m->be->read(m->ctx, key, etag, off, want, buf, off + want); /* one run from 0 */
        if (n <= 0) {
            rc = n < 0 ? (int)n : -EIO; /* shorter than its size: it changed under us */
            goto out;
        }
        rc = mount_write_all(s->fd, buf, (size_t)n, off);
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

/* Uploads the stage when it holds unacknowledged bytes. 0 or the backend's -errno. A stage whose
 * file was unlinked or replaced meanwhile is dropped, not uploaded (POSIX: writes to an unlinked
 * file go nowhere). Either way a pending delayed upload is settled (mount_stage_settle); a failed
 * one stays pending. */
int mount_stage_upload(mount_view *m, mount_stage *s)
{
    SHOAL_ASSERT_UNLOCKED(&s->lock);
    SHOAL_ASSERT_UNLOCKED(&m->lock);
    int rc = 0;
    char *key = NULL;
    pthread_mutex_lock(&s->lock);
    if (!s->dirty) {
        mount_stage_settle(m, s);
        goto out;
    }
    pthread_mutex_lock(&m->lock);
    bool orphan = s->in->detached;
    if (!orphan)
        key = mount_key_of(m, s->in->path, false);
    mount_attrs attrs = s->in->info.attrs; /* set 0: none known, none sent */
    pthread_mutex_unlock(&m->lock);
    if (orphan) {
        s->dirty = false;
        mount_stage_settle(m, s);
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
    in->attr_until = mount_now_us() + m->ttl_us;
    /* The kernel's pages are the bytes just uploaded: they stay valid for this version. */
    snprintf(in->cache_etag, sizeof in->cache_etag, "%s", info.etag);
    mount_invalidate_parent(m, in->path);
    pthread_mutex_unlock(&m->lock);
    mount_stage_settle(m, s);
out:
    pthread_mutex_unlock(&s->lock);
    free(key);
    return rc;
}

/* Stages `in` for writing and takes one use of the stage into *out: shares the stage of another
 * writer, else fetches the object's bytes first unless `trunc`. Counts one writer (mount_handle_end
 * drops it), which holds back a pending delayed upload. 0 or -errno. */
int mount_stage_open(mount_view *m, mount_inode *in, bool trunc, mount_stage **out)
{
    SHOAL_ASSERT_UNLOCKED(&m->lock);
    int rc = 0;
    mount_stage *s;
    char *key = NULL;
    mount_obj_info info;

    bool created = false;
    pthread_mutex_lock(&m->lock);
    s = in->stage;
    if (!s) {
        rc = mount_stage_new(m, in, &s);
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
        /* The stage hides the inode's metadata from mount_refresh(): ask with the stage in
         * place. */
        bool fresh = mount_now_us() < in->attr_until;
        info = in->info;
        key = mount_key_of(m, in->path, false);
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
            in->attr_until = mount_now_us() + m->ttl_us;
            pthread_mutex_unlock(&m->lock);
        }
    }
    if (rc == 0 && trunc)
        rc = mount_stage_truncate(m, s, 0);
    pthread_mutex_unlock(&s->lock);
    free(key);
    if (rc) {
        mount_stage_put(m, s);
        return rc;
    }
    pthread_mutex_lock(&m->lock);
    s->writers++;
    pthread_mutex_unlock(&m->lock);
    *out = s;
    return 0;
}
