/*
 * mount_lookup: what a name is. LOOKUP, FORGET, GETATTR and the directory handlers, over the
 * listings and HEADs they learn from.
 *
 * An inode's size/ETag is trusted until attr_until (learnt + --metadata-ttl); the kernel's entry
 * and attribute timeouts are the same TTL. A directory listing is fetched whole on opendir (the
 * backend pages) unless the last one is younger than --negative-ttl, and it answers later
 * lookups of its children for --metadata-ttl (no HEAD per file after `ls`); a name it does not
 * hold is "no such file" only for --negative-ttl. A lookup nothing answers asks the backend: a
 * one-entry LIST of "name/" (a directory wins over a file: mount_names.h), then HEAD. Keys that
 * cannot be POSIX names, and files hidden by a directory of the same name, are logged once each.
 *
 * These caches are the mount's, not the kernel's: when the kernel forgets a directory's inode
 * (memory pressure, drop_caches), the inode table parks it with its listing (mount_inodes.h), so
 * the names under it are found again in that listing, within its TTL, at no request. A lookup runs
 * as a cached part under m->lock, a remote part without it, and one reply (see mount_lookup).
 */
#include "mount_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shoal_array.h"
#include "shoal_assert.h"
#include "shoal_log.h"

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
        mount_supersede(m, in);
        mount_inodes_maybe_free(m->inodes, in);
    }
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

/* Lists the directory at `path` into a new listing (refs 1): from the store itself, or (shared)
 * from the backend's shared listing when it has one, dated by its age. 0 or -errno. */
static int fetch_listing(mount_view *m, const char *path, bool shared, mount_listing **out)
{
    int rc = -ENOMEM;
    list_acc a = {.m = m};
    char *prefix = mount_key_of(m, path, true);
    mount_listing *l = calloc(1, sizeof *l);
    if (!prefix || !l)
        goto fail;
    a.dir_prefix = prefix;
    a.dir_len = strlen(prefix);
    l->listed_at = mount_now_us();
    if (shared && m->be->list_shared) {
        uint64_t age_us = 0;
        rc = m->be->list_shared(m->ctx, prefix, "/", on_list_entry, &a, &age_us);
        l->listed_at -= age_us < l->listed_at ? age_us : l->listed_at;
    } else {
        rc = m->be->list(m->ctx, prefix, "/", 0, on_list_entry, &a);
    }
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

/*
 * Adopts `l`, a listing of directory `dir` fetched by revalidation while the directory's
 * list_gen was `gen`, unless the directory changed meanwhile (then `l` is dropped). Takes `l`.
 * m->lock held. Returns whether the directory's listing now answers a lookup: `l` was adopted, or
 * another thread revalidated it meanwhile (its listing is as fresh as this one). The answer does
 * not compare clocks again: a listing that expires within a moment of its revalidation is still
 * the freshest the cluster has, and a second clock reading at that boundary would send the name
 * to a probe.
 */
static bool adopt_listing(mount_view *m, const char *dir, uint64_t gen, mount_listing *l)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    mount_inode *p = mount_inodes_find(m->inodes, dir);
    if (p && p->list_gen == gen && (!p->listing || p->listing->listed_at <= l->listed_at)) {
        merge_staged(m, dir, l);
        mount_listing_unref(p->listing);
        p->listing = l;
        return true;
    }
    mount_listing_unref(l); /* the directory changed meanwhile */
    return p && p->list_gen == gen && p->listing;
}

/*
 * Revalidates the expired listing of directory `dir` from the backend's shared listing (one LIST
 * per directory per TTL for every node of the cluster), so that after the TTL a lookup or an open
 * of a name the directory holds still costs no request of its own: only a name the listing lacks
 * is asked for (probe). A directory never listed is not listed for a lookup (a LIST of a large
 * directory would cost more than the name's probe). m->lock held on entry and on return, dropped
 * around the backend call; a failure leaves things as they were (the caller probes).
 *
 * Returns whether the directory's listing (dir's inode ->listing on return) answers a lookup that
 * began at `now`: it was fresh then, or it was just revalidated (adopt_listing).
 */
static bool revalidate_listing(mount_view *m, const char *dir, uint64_t now)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    mount_inode *p = mount_inodes_find(m->inodes, dir);
    if (!p || !p->is_dir || !p->listing)
        return false;
    if (now < p->listing->listed_at + m->ttl_us)
        return true;
    if (!m->be->list_shared)
        return false;
    uint64_t gen = p->list_gen;
    char *path = strdup(dir);
    mount_listing *l = NULL;
    pthread_mutex_unlock(&m->lock);
    int rc = path ? fetch_listing(m, path, true, &l) : -ENOMEM;
    pthread_mutex_lock(&m->lock);
    bool fresh = rc == 0 && adopt_listing(m, path, gen, l);
    free(path);
    return fresh;
}

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
    char *dkey = mount_key_of(m, path, true), *fkey = mount_key_of(m, path, false);
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

/*
 * A lookup goes in parts, as libfuse's passthrough_ll does its own: the cached part under m->lock
 * answers from what the mount holds (the inode's attributes, the parent's listing); when that
 * cannot, it says which remote part is needed, which runs without the lock (a revalidation of
 * the parent's expired listing, after which the cached part runs again; or a probe of the name,
 * whose answer is learnt under the lock); mount_op_lookup then replies once.
 */
typedef enum lookup_step {
    LOOKUP_ANSWERED, /* lk->rc, and lk->e when it is 0 */
    LOOKUP_REVALIDATE, /* the parent's listing expired: revalidate it (lk->dir, lk->gen) */
    LOOKUP_PROBE, /* nothing held answers: ask the backend what lk->path is */
} lookup_step;

typedef struct lookup_ctx {
    fuse_ino_t parent;
    const char *name;
    uint64_t now; /* when the lookup began */
    char *path; /* the name's path (owned; set by the first cached part) */
    char *dir; /* the parent's path, for a revalidation (owned) */
    uint64_t gen; /* the parent's list_gen when its listing was found expired */
    bool revalidated; /* a revalidation ran: the parent's listing is not asked again */
    bool trust_listing; /* it succeeded: the listing answers as it is */
    int rc;
    struct fuse_entry_param *e;
} lookup_ctx;

/* The name is `in` (NULL: NOMEM): the kernel gets a reference and its entry. m->lock held. */
static lookup_step answer_inode(mount_view *m, lookup_ctx *lk, mount_inode *in)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    lk->rc = in ? 0 : -ENOMEM;
    if (in) {
        in->nlookup++;
        mount_fill_entry(m, in, lk->e);
    }
    return LOOKUP_ANSWERED;
}

/* The name is absent: the negative entry, kept by the kernel for --negative-ttl, and the file
 * inode at its path (if any) is superseded. m->lock held. */
static lookup_step answer_absent(mount_view *m, lookup_ctx *lk)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    check_version(m, lk->path, false, NULL);
    memset(lk->e, 0, sizeof *lk->e);
    lk->e->entry_timeout = m->cfg.negative_ttl;
    lk->rc = 0;
    return LOOKUP_ANSWERED;
}

static lookup_step answer_error(lookup_ctx *lk, int rc)
{
    lk->rc = rc;
    return LOOKUP_ANSWERED;
}

/* The cached part: answers from the name's inode while its attributes are fresh, else from the
 * parent's listing while it is trusted (within --metadata-ttl, or just revalidated; a name it
 * lacks is absent while it is younger than --negative-ttl), else says what to ask. m->lock held. */
static lookup_step lookup_cached(mount_view *m, lookup_ctx *lk)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    mount_inode *p = mount_get_inode(m, lk->parent);
    if (!p || !p->is_dir)
        return answer_error(lk, p ? -ENOTDIR : -ENOENT);
    if (!lk->path && !(lk->path = mount_child_path(p->path, lk->name)))
        return answer_error(lk, -ENOMEM);
    if (strlen(m->prefix) + strlen(lk->path) > MOUNT_MAX_KEY)
        return answer_error(lk, -ENAMETOOLONG);
    mount_inode *in = mount_inodes_find(m->inodes, lk->path);
    if (in && (in->stage || lk->now < in->attr_until))
        return answer_inode(m, lk, in);
    mount_listing *l = p->detached ? NULL : p->listing;
    if (l && !lk->trust_listing && lk->now >= l->listed_at + m->ttl_us) {
        if (lk->revalidated || !m->be->list_shared)
            return LOOKUP_PROBE;
        free(lk->dir);
        lk->dir = strdup(p->path);
        lk->gen = p->list_gen;
        return lk->dir ? LOOKUP_REVALIDATE : answer_error(lk, -ENOMEM);
    }
    if (!l)
        return LOOKUP_PROBE;
    const mount_dirent *d = mount_names_find(l->e, l->n, lk->name);
    if (d) {
        check_version(m, lk->path, d->is_dir, &d->info);
        in = mount_inode_at(m, lk->path, d->is_dir);
        if (in)
            mount_learn(in, &d->info, l->listed_at + m->ttl_us);
        else /* a staged inode of the other type wins until it is uploaded */
            in = mount_inodes_find(m->inodes, lk->path);
        return answer_inode(m, lk, in);
    }
    if (mount_now_us() < l->listed_at + m->neg_ttl_us)
        return answer_absent(m, lk);
    return LOOKUP_PROBE;
}

/* The remote part of a revalidation: the shared listing of lk->dir, fetched without the lock,
 * adopted under it; then the cached part again. m->lock not held. */
static lookup_step lookup_revalidate(mount_view *m, lookup_ctx *lk)
{
    SHOAL_ASSERT_UNLOCKED(&m->lock);
    mount_listing *l = NULL;
    int rc = fetch_listing(m, lk->dir, true, &l);
    pthread_mutex_lock(&m->lock);
    lk->revalidated = true;
    lk->trust_listing = rc == 0 && adopt_listing(m, lk->dir, lk->gen, l);
    lookup_step next = lookup_cached(m, lk);
    pthread_mutex_unlock(&m->lock);
    return next;
}

/* The remote part of a probe: asks the backend without the lock, learns the answer under it. A
 * store that fails answers with its error. m->lock not held. */
static void lookup_probe(mount_view *m, lookup_ctx *lk)
{
    SHOAL_ASSERT_UNLOCKED(&m->lock);
    bool is_dir = false;
    mount_obj_info info;
    int rc = probe(m, lk->path, &is_dir, &info);
    if (rc != 0 && rc != -ENOENT) {
        answer_error(lk, rc);
        return;
    }
    pthread_mutex_lock(&m->lock);
    if (rc == -ENOENT) {
        answer_absent(m, lk);
    } else {
        check_version(m, lk->path, is_dir, &info);
        mount_inode *in = mount_inode_at(m, lk->path, is_dir);
        if (in)
            mount_learn(in, &info, mount_now_us() + m->ttl_us);
        else
            in = mount_inodes_find(m->inodes, lk->path);
        answer_inode(m, lk, in);
    }
    pthread_mutex_unlock(&m->lock);
}

int mount_lookup(mount_view *m, fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
    SHOAL_ASSERT_UNLOCKED(&m->lock);
    int rc = mount_check_name(name);
    if (rc != 0)
        return rc == -ENAMETOOLONG ? rc : -ENOENT;
    lookup_ctx lk = {.parent = parent, .name = name, .now = mount_now_us(), .e = e};
    pthread_mutex_lock(&m->lock);
    lookup_step step = lookup_cached(m, &lk);
    pthread_mutex_unlock(&m->lock);
    if (step == LOOKUP_REVALIDATE)
        step = lookup_revalidate(m, &lk);
    if (step == LOOKUP_PROBE)
        lookup_probe(m, &lk);
    free(lk.path);
    free(lk.dir);
    return lk.rc;
}

void mount_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fuse_entry_param e;
    int rc = mount_lookup(fuse_req_userdata(req), parent, name, &e);
    if (rc == 0)
        fuse_reply_entry(req, &e);
    else
        fuse_reply_err(req, -rc);
}

void mount_forget(mount_view *m, fuse_ino_t ino, uint64_t nlookup)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    mount_inode *in = mount_get_inode(m, ino);
    if (in)
        mount_inodes_forget(m->inodes, in, nlookup);
}

void mount_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    mount_view *m = fuse_req_userdata(req);
    pthread_mutex_lock(&m->lock);
    mount_forget(m, ino, nlookup);
    pthread_mutex_unlock(&m->lock);
    fuse_reply_none(req);
}

void mount_op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    mount_view *m = fuse_req_userdata(req);
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < count; i++)
        mount_forget(m, forgets[i].ino, forgets[i].nlookup);
    pthread_mutex_unlock(&m->lock);
    fuse_reply_none(req);
}

/* Makes sure `in`'s metadata is fresh (HEAD when older than the TTL). m->lock held on entry and
 * on return; dropped around the backend call. 0 or -errno. When the object has another version
 * now, or is gone, `in` is superseded (in->stale) and keeps describing its own version: 0. A file
 * never uploaded that the store does not hold either: -ENOENT. */
int mount_refresh(mount_view *m, mount_inode *in)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    if (in->is_dir || in->stage || in->detached || mount_now_us() < in->attr_until)
        return 0; /* an unlinked or superseded file open somewhere keeps what it had */
    mount_obj_info info;
    /* A fresh listing of its directory that shows this very version renews it without a HEAD. */
    char *dir = in->remote ? mount_parent_path(in->path) : NULL;
    if (dir) {
        bool trusted = revalidate_listing(m, dir, mount_now_us());
        mount_inode *p = mount_inodes_find(m->inodes, dir);
        const char *slash = strrchr(in->path, '/'), *name = slash ? slash + 1 : in->path;
        const mount_dirent *d = trusted && p && p->listing ? mount_names_find(p->listing->e, p->listing->n, name)
                                                           : NULL;
        bool same = d && !d->is_dir && !in->stage && !in->detached && strcmp(d->info.etag, in->info.etag) == 0;
        if (same)
            mount_learn(in, &d->info, p->listing->listed_at + m->ttl_us);
        free(dir);
        if (same || in->stage || in->detached)
            return 0;
    }
    char *key = mount_key_of(m, in->path, false);
    if (!key)
        return -ENOMEM;
    pthread_mutex_unlock(&m->lock);
    int rc = m->be->head(m->ctx, key, &info);
    free(key);
    pthread_mutex_lock(&m->lock);
    if (in->stage || in->detached)
        return 0; /* written, unlinked or superseded meanwhile: that is the truth now */
    if (rc == 0 && (!in->remote || strcmp(in->info.etag, info.etag) == 0)) {
        mount_learn(in, &info, mount_now_us() + m->ttl_us);
    } else if (in->remote && (rc == 0 || rc == -ENOENT)) {
        mount_supersede(m, in);
        mount_invalidate_parent(m, in->path); /* its listing shows the old version */
        rc = 0;
    }
    return rc;
}

void mount_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    struct stat st;
    int rc = -ENOENT;
    pthread_mutex_lock(&m->lock);
    mount_inode *in = mount_get_inode(m, ino);
    if (in)
        rc = mount_refresh(m, in);
    if (rc == 0)
        mount_fill_attr(m, in, &st);
    pthread_mutex_unlock(&m->lock);
    if (rc == 0)
        fuse_reply_attr(req, &st, m->cfg.metadata_ttl);
    else
        fuse_reply_err(req, -rc);
}
/* ---- directories -------------------------------------------------------------------------- */

int mount_list_dir(mount_view *m, fuse_ino_t ino, mount_listing **out)
{
    SHOAL_ASSERT_UNLOCKED(&m->lock);
    mount_listing *l = NULL;
    char *path = NULL;
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    mount_inode *in = mount_get_inode(m, ino);
    if (!in || !in->is_dir) {
        rc = in ? -ENOTDIR : -ENOENT;
        goto unlock;
    }
    /* A listing younger than the negative TTL is reused: a new object shows up in `ls` within
     * --negative-ttl, as it does in lookups. */
    if (in->listing && mount_now_us() < in->listing->listed_at + m->neg_ttl_us) {
        l = in->listing;
        l->refs++;
        goto unlock;
    }
    path = strdup(in->path);
    uint64_t gen = in->list_gen;
    pthread_mutex_unlock(&m->lock);
    rc = path ? fetch_listing(m, path, false, &l) : -ENOMEM;
    if (rc)
        goto out;
    pthread_mutex_lock(&m->lock);
    merge_staged(m, path, l);
    /* A change in the directory while the listing was fetched (an upload ended, a name went) may
     * be missing from it: the caller still reads it, but it is not kept for the next opendir. */
    if (in->list_gen == gen) {
        mount_drop_listing(in);
        in->listing = l;
        l->refs++;
    }
unlock:
    pthread_mutex_unlock(&m->lock);
out:
    free(path);
    *out = l;
    return rc;
}

void mount_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    mount_view *m = fuse_req_userdata(req);
    mount_handle *h = calloc(1, sizeof *h);
    int rc = h ? mount_list_dir(m, ino, &h->listing) : -ENOMEM;
    if (rc) {
        free(h);
        fuse_reply_err(req, -rc);
        return;
    }
    pthread_mutex_lock(&m->lock);
    mount_handle_link(m, h);
    pthread_mutex_unlock(&m->lock);
    fi->fh = (uint64_t)(uintptr_t)h;
    if (fuse_reply_open(req, fi) != 0)
        mount_handle_end(m, h);
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
            char *pp = mount_parent_path(dir->path);
            mount_inode *p = pp && *dir->path ? mount_inodes_find(m->inodes, pp) : NULL;
            e.attr.st_ino = p ? p->ino : 1;
            free(pp);
        } else if (i >= 2) {
            const mount_dirent *d = &l->e[i - 2];
            char *path = mount_child_path(dir->path, d->name);
            if (!path)
                break;
            name = d->name;
            e.attr.st_mode = d->is_dir ? S_IFDIR : S_IFREG;
            if (plus) {
                mount_inode *old = mount_inodes_find(m->inodes, path);
                if (old && old->attr_until < until)
                    check_version(m, path, d->is_dir, &d->info); /* the listing is newer */
                child = mount_inode_at(m, path, d->is_dir);
                if (!child)
                    child = mount_inodes_find(m->inodes, path);
                if (child && child->attr_until < until && !d->is_dir)
                    mount_learn(child, &d->info, until);
                else if (child && d->is_dir && child->attr_until < until)
                    child->attr_until = until;
                if (child)
                    mount_fill_entry(m, child, &e);
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
    mount_inode *dir = mount_get_inode(m, ino);
    size_t used = dir ? fill_dir(m, req, dir, l, buf, size, off, plus) : 0;
    pthread_mutex_unlock(&m->lock);
    if (dir)
        fuse_reply_buf(req, buf, used);
    else
        fuse_reply_err(req, ENOENT);
    free(buf);
}

void mount_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    readdir_common(req, ino, size, off, fi, false);
}

void mount_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    readdir_common(req, ino, size, off, fi, true);
}

void mount_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    mount_handle_end(fuse_req_userdata(req), (mount_handle *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

void mount_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    fuse_reply_err(req, 0); /* directory changes reach the store when they are made */
}
