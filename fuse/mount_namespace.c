/*
 * mount_namespace: changes to names. UNLINK, MKDIR and MKNOD, RMDIR and RENAME, and the calls
 * S3 has nothing for (links, extended attributes, fallocate), refused with the errno POSIX gives
 * a filesystem that does not support them (docs/semantics.md).
 *
 * A directory is a key prefix, so mkdir stores the marker object "name/" and rmdir removes it
 * once nothing else is under the prefix (files still staged inside count). rename of a file
 * whose bytes exist only in a stage moves the key it will be uploaded under; anything that exists
 * as an object is renamed by server-side copy + remove, and a dirty stage of it is uploaded to
 * the new key afterwards. Directories are not renamed (EXDEV: mv(1) copies the tree instead).
 * unlink and a replacing rename drop the stage of the file they remove, with its pending upload.
 */
#include "mount_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* After unlink or rmdir: `path` is gone; its inode lives on only for the kernel's references. */
static void forget_path(mount_view *m, const char *path)
{
    pthread_mutex_lock(&m->lock);
    mount_inode *in = mount_inodes_find(m->inodes, path);
    if (in) {
        mount_drop_listing(in);
        mount_inodes_detach(m->inodes, in);
        mount_inodes_maybe_free(m->inodes, in);
    }
    mount_invalidate_parent(m, path);
    pthread_mutex_unlock(&m->lock);
}

void mount_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    mount_view *m = fuse_req_userdata(req);
    char *path = NULL, *key = NULL;
    mount_stage *s = NULL;
    bool remote = true;
    int rc = m->cfg.read_only ? -EROFS : 0;
    if (rc)
        goto reply;
    pthread_mutex_lock(&m->lock);
    rc = mount_name_path(m, parent, name, &path);
    mount_inode *in = rc ? NULL : mount_inodes_find(m->inodes, path);
    if (in && in->is_dir)
        rc = -EISDIR;
    if (in)
        remote = in->remote; /* a file never uploaded has no object to delete */
    if (rc == 0 && !(key = mount_key_of(m, path, false)))
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
            mount_stage_upload(m, s); /* detached now: drops a pending upload and its record */
        mount_stage_put(m, s);
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
    mount_created_attrs(req, (is_dir ? S_IFDIR : S_IFREG) | (mode & 07777), &attrs);
    pthread_mutex_lock(&m->lock);
    rc = mount_name_path(m, parent, name, &path);
    if (rc == 0 && !(key = mount_key_of(m, path, is_dir)))
        rc = -ENOMEM;
    if (rc == 0 && strlen(key) > MOUNT_MAX_KEY)
        rc = -ENAMETOOLONG;
    pthread_mutex_unlock(&m->lock);
    if (rc == 0)
        rc = m->be->put(m->ctx, key, -1, 0, &attrs, &info);
    if (rc)
        goto reply;
    pthread_mutex_lock(&m->lock);
    mount_inode *in = mount_inode_at(m, path, is_dir);
    if (in) {
        if (!info.has_attrs) {
            info.has_attrs = true;
            info.attrs = attrs;
        }
        mount_learn(in, &info, mount_now_us() + m->ttl_us);
        in->nlookup++;
        mount_fill_entry(m, in, &e);
        mount_invalidate_parent(m, path);
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

void mount_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
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

void mount_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    mount_view *m = fuse_req_userdata(req);
    char *path = NULL, *key = NULL;
    int rc = m->cfg.read_only ? -EROFS : 0;
    if (rc)
        goto reply;
    pthread_mutex_lock(&m->lock);
    rc = mount_name_path(m, parent, name, &path);
    size_t plen = rc ? 0 : strlen(path);
    for (mount_stage *s = m->stages; rc == 0 && s; s = s->next)
        if (!s->in->detached && strncmp(s->in->path, path, plen) == 0 && s->in->path[plen] == '/')
            rc = -ENOTEMPTY; /* a file created inside and not uploaded yet */
    if (rc == 0 && !(key = mount_key_of(m, path, true)))
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

void mount_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
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
    rc = mount_name_path(m, parent, name, &src);
    if (rc == 0)
        rc = mount_name_path(m, newparent, newname, &dst);
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
        skey = mount_key_of(m, src, false);
        dkey = mount_key_of(m, dst, false);
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
            mount_invalidate_parent(m, src);
            mount_invalidate_parent(m, dst);
            mount_inodes_rename(m->inodes, in, moved);
            /* The copy is the version the name now has, also when a stage with nothing unsent
             * is still there (its writer's RELEASE on its way): reads must ask for its ETag. */
            if (copied && (!in->stage || (in->stage == s && !s->dirty)))
                mount_adopt(in, &info, mount_now_us() + m->ttl_us);
        } else {
            rc = -ENOMEM;
        }
        pthread_mutex_unlock(&m->lock);
    }
    /* A recorded pending upload goes to the new key, also after a crash. */
    if (rc == 0 && s && s->recorded)
        rc = mount_stage_record(m, s, dkey, copied);
    if (s) {
        pthread_mutex_unlock(&s->lock);
        mount_stage_put(m, s);
    }
    if (os) {
        if (rc == 0)
            mount_stage_upload(m, os); /* detached by the rename: drops its pending upload */
        mount_stage_put(m, os);
    }
reply:
    free(src);
    free(dst);
    free(skey);
    free(dkey);
    fuse_reply_err(req, -rc);
}

/* Only regular files exist in S3: mknod of one is an empty object, anything else EPERM. */
void mount_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    mount_view *m = fuse_req_userdata(req);
    if (!S_ISREG(mode))
        fuse_reply_err(req, m->cfg.read_only ? EROFS : EPERM);
    else
        make_empty(req, parent, name, false, mode);
}

/* Hard and symbolic links: S3 has neither. EPERM is link(2)'s and symlink(2)'s errno for "the
 * filesystem does not support" them. */
void mount_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    mount_view *m = fuse_req_userdata(req);
    fuse_reply_err(req, m->cfg.read_only ? EROFS : EPERM);
}

void mount_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    mount_view *m = fuse_req_userdata(req);
    fuse_reply_err(req, m->cfg.read_only ? EROFS : EPERM);
}

void mount_op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    fuse_reply_err(req, EINVAL); /* nothing here is a symbolic link */
}

/* Extended attributes: S3 user metadata is not exposed; every xattr call is ENOTSUP. */
void mount_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    mount_view *m = fuse_req_userdata(req);
    fuse_reply_err(req, m->cfg.read_only ? EROFS : ENOTSUP);
}

void mount_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    fuse_reply_err(req, ENOTSUP);
}

void mount_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    fuse_reply_err(req, ENOTSUP);
}

void mount_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    mount_view *m = fuse_req_userdata(req);
    fuse_reply_err(req, m->cfg.read_only ? EROFS : ENOTSUP);
}

void mount_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                         struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    fuse_reply_err(req, m->cfg.read_only ? EROFS : EOPNOTSUPP);
}
