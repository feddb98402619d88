/*
 * mount_meta: what an inode stands for, in the terms every room of the mount needs: the key of a
 * path (the mount's prefix, the path, and a '/' after a directory), the version of its object
 * the inode holds, and the attributes stat shows for it. Nothing here calls the backend; what
 * reads or changes an inode runs under m->lock.
 *
 * Versions. A file inode stands for one version (ETag) of its object, and every read asks the
 * backend for that ETag, so a reader never gets a splice of two versions (-ESTALE instead). When
 * a lookup, a listing or a HEAD learns another version, the path gets a new inode
 * (mount_supersede): the kernel, revalidating the name after the entry TTL, sees another node id
 * and drops the old dentry with its pages; descriptors open on the old inode keep its version.
 * That is close-to-open: an open after --metadata-ttl revalidates the name, which asks the store.
 * A staged file is the exception: its staged bytes are the truth until they are uploaded, so
 * what the store says of it waits (mount_learn).
 *
 * Attributes. stat shows what the object carries as metadata (mode, owner, group, times), the
 * mount's defaults for the rest, and S3's LastModified as the mtime of a file that carries none.
 */
#include "mount_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shoal_assert.h"

char *mount_child_path(const char *parent, const char *name)
{
    char *p;
    if (asprintf(&p, "%s%s%s", parent, *parent ? "/" : "", name) < 0)
        return NULL;
    return p;
}

/* The parent's path of `path` in a new string ("" for top-level names). */
char *mount_parent_path(const char *path)
{
    const char *slash = strrchr(path, '/');
    return strndup(path, slash ? (size_t)(slash - path) : 0);
}

/* The key of a file, or the key prefix of a directory (ending with '/', the root's is the
 * mount's prefix itself). */
char *mount_key_of(const mount_view *m, const char *path, bool dir)
{
    char *k;
    bool slash = dir && *path;
    if (asprintf(&k, "%s%s%s", m->prefix, path, slash ? "/" : "") < 0)
        return NULL;
    return k;
}

void mount_drop_listing(mount_inode *dir)
{
    if (dir) {
        mount_listing_unref(dir->listing);
        dir->listing = NULL;
        dir->list_gen++;
    }
}

/* Forgets the listing of the directory holding `path` (it changed); m->lock held. */
void mount_invalidate_parent(mount_view *m, const char *path)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    char *pp = mount_parent_path(path);
    if (pp)
        mount_drop_listing(mount_inodes_find(m->inodes, pp));
    free(pp);
}

/* `in` now stands for the version `info` describes (m->lock held). */
void mount_adopt(mount_inode *in, const mount_obj_info *info, uint64_t until)
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
void mount_learn(mount_inode *in, const mount_obj_info *info, uint64_t until)
{
    if (in->stage)
        return; /* the staged bytes are the truth until they are uploaded */
    mount_adopt(in, info, until);
}

/* An inode stands for one version of its object. When the path learns another version (or that
 * the object is gone), its inode is superseded: detached from the path, so the next lookup gets
 * a new inode number; the kernel, seeing another number for the name, drops the old dentry and
 * its pages. Descriptors still open on the old inode keep reading the old ETag (ESTALE once that
 * version is gone), never the new bytes. m->lock held; `in` stays allocated. */
void mount_supersede(mount_view *m, mount_inode *in)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    in->stale = true;
    mount_inodes_detach(m->inodes, in);
}

static struct timespec to_timespec(mount_time t)
{
    return (struct timespec){.tv_sec = (time_t)t.sec, .tv_nsec = (long)t.nsec};
}

/* What stat shows: the attributes the object carries, the mount's defaults for the rest (and
 * S3's LastModified as the mtime of a file that carries none). */
void mount_fill_attr(const mount_view *m, const mount_inode *in, struct stat *st)
{
    SHOAL_ASSERT_LOCKED((pthread_mutex_t *)&m->lock); /* the mutex only: m is const */
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

mount_time mount_time_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (mount_time){.sec = ts.tv_sec, .nsec = (uint32_t)ts.tv_nsec};
}

/* The file changed now (m->lock held): its mtime, and the stored one when it carries one. */
void mount_touch_mtime(mount_inode *in)
{
    mount_time now = mount_time_now();
    in->info.mtime = now.sec;
    if (in->info.attrs.set & MOUNT_ATTR_MTIME)
        in->info.attrs.mtime = now;
}

/* Attributes of something created now by the caller of `req`: its mode, the caller's ids, now. */
void mount_created_attrs(fuse_req_t req, mode_t mode, mount_attrs *a)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    memset(a, 0, sizeof *a);
    a->set = MOUNT_ATTR_MODE | MOUNT_ATTR_UID | MOUNT_ATTR_GID | MOUNT_ATTR_MTIME;
    a->mode = (uint32_t)mode;
    a->uid = (uint32_t)ctx->uid;
    a->gid = (uint32_t)ctx->gid;
    a->mtime = mount_time_now();
}

void mount_fill_entry(const mount_view *m, const mount_inode *in, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    e->ino = in->ino;
    e->generation = 1;
    mount_fill_attr(m, in, &e->attr);
    e->attr_timeout = m->cfg.metadata_ttl;
    e->entry_timeout = m->cfg.metadata_ttl;
}

/* The attached inode at `path` of the given type, replacing one of the other type unless that
 * one is staged (then NULL: the local file wins until it is uploaded). m->lock held. */
mount_inode *mount_inode_at(mount_view *m, const char *path, bool is_dir)
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
int mount_check_name(const char *name)
{
    switch (mount_names_check(name, strlen(name))) {
    case MOUNT_NAME_OK: return 0;
    case MOUNT_NAME_TOO_LONG: return -ENAMETOOLONG;
    default: return -EINVAL;
    }
}

/* Resolves parent + name to a new path string; m->lock held. */
int mount_name_path(mount_view *m, fuse_ino_t parent, const char *name, char **out)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    int rc = mount_check_name(name);
    if (rc)
        return rc;
    mount_inode *p = mount_get_inode(m, parent);
    if (!p)
        return -ENOENT;
    if (!p->is_dir)
        return -ENOTDIR;
    *out = mount_child_path(p->path, name);
    if (*out && strlen(m->prefix) + strlen(*out) > MOUNT_MAX_KEY) {
        free(*out);
        *out = NULL;
        return -ENAMETOOLONG;
    }
    return *out ? 0 : -ENOMEM;
}
