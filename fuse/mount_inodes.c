/*
 * mount_inodes: two chained hash tables over the same inodes, one by number (the kernel names
 * inodes by number) and one by path (lookups and renames name them by path).
 *
 * The number of a path is its 64-bit FNV-1a hash, moved past 0 and 1 (0 is "no inode", 1 the
 * root) and past numbers in use by other paths. So `ls -i` shows the same number for a path
 * across forgets and remounts unless two live paths collide, which 64 bits make rare. A number
 * is reused only after the kernel forgot its inode, which is what the FUSE protocol requires.
 *
 * Detached inodes (unlinked, replaced by a rename, or superseded by a new version of their
 * object) leave the path table but stay in the number table until the kernel forgets them, so
 * requests on open files still find them. The path's next inode then gets another number (the
 * old one is in use), which is how the kernel learns that the name now stands for another file.
 * Both tables double when they hold as many inodes as buckets.
 *
 * Parking. The kernel forgets inodes under memory pressure (or `echo 3 > drop_caches`) and looks
 * the names up again when they are next used. Freeing a directory's inode would drop its listing
 * with it, and every name under it would then cost a LIST and a HEAD although the listing was still
 * fresh. So an attached directory holding a listing is not freed when its last reference goes:
 * it moves to the head of a list of parked inodes, costing the entries of its listing then, and
 * the tail is freed while the costs add up to more than the limit. A parked inode stays in both
 * tables, so a lookup finds it by path, with its number, listing and list_gen (a change in the
 * directory drops the listing of a parked directory as of any other). The kernel's next lookup
 * counts a reference on it again; it stays on the list, which then only frees it if it is
 * forgotten again (a referenced inode at the tail just leaves the list). Detaching it, or freeing
 * the table, takes it off the list.
 */
#include "mount_inodes.h"

#include <stdlib.h>
#include <string.h>

struct mount_inodes {
    mount_inode **by_ino;
    mount_inode **by_path;
    size_t nbuckets;  /* power of two, same for both tables */
    size_t count;
    mount_inode *root;
    mount_inode *park_head, *park_tail; /* parked inodes, newest first */
    size_t parked; /* sum of their park_cost */
    size_t park_limit;
};

static size_t ino_slot(const mount_inodes *t, uint64_t ino)
{
    return (size_t)((ino * 0x9e3779b97f4a7c15ull) >> 20) & (t->nbuckets - 1);
}

static size_t path_slot(const mount_inodes *t, const char *path)
{
    return (size_t)mount_names_hash(path) & (t->nbuckets - 1);
}

void mount_listing_unref(mount_listing *l)
{
    if (!l || --l->refs > 0)
        return;
    for (size_t i = 0; i < l->n_alloc; i++)
        free(l->e[i].name);
    free(l->e);
    free(l);
}

static void unpark(mount_inodes *t, mount_inode *in)
{
    if (!in->park_cost)
        return;
    if (in->park_prev)
        in->park_prev->park_next = in->park_next;
    else
        t->park_head = in->park_next;
    if (in->park_next)
        in->park_next->park_prev = in->park_prev;
    else
        t->park_tail = in->park_prev;
    t->parked -= in->park_cost;
    in->park_cost = 0;
    in->park_prev = in->park_next = NULL;
}

static void inode_free(mount_inode *in)
{
    mount_listing_unref(in->listing);
    free(in->path);
    free(in);
}

static void link_ino(mount_inodes *t, mount_inode *in)
{
    size_t s = ino_slot(t, in->ino);
    in->next_ino = t->by_ino[s];
    t->by_ino[s] = in;
}

static void link_path(mount_inodes *t, mount_inode *in)
{
    size_t s = path_slot(t, in->path);
    in->next_path = t->by_path[s];
    t->by_path[s] = in;
}

static void unlink_path(mount_inodes *t, mount_inode *in)
{
    mount_inode **pp = &t->by_path[path_slot(t, in->path)];
    while (*pp && *pp != in)
        pp = &(*pp)->next_path;
    if (*pp)
        *pp = in->next_path;
    in->next_path = NULL;
}

static void unlink_ino(mount_inodes *t, mount_inode *in)
{
    mount_inode **pp = &t->by_ino[ino_slot(t, in->ino)];
    while (*pp && *pp != in)
        pp = &(*pp)->next_ino;
    if (*pp)
        *pp = in->next_ino;
    in->next_ino = NULL;
}

/* Rehashes every inode into tables of twice the size; on NOMEM keeps the old (longer chains). */
static void grow(mount_inodes *t)
{
    size_t nb = t->nbuckets * 2;
    mount_inode **bi = calloc(nb, sizeof *bi), **bp = calloc(nb, sizeof *bp);
    if (!bi || !bp) {
        free(bi);
        free(bp);
        return;
    }
    mount_inode **old = t->by_ino;
    size_t on = t->nbuckets;
    free(t->by_path);
    t->by_ino = bi;
    t->by_path = bp;
    t->nbuckets = nb;
    for (size_t i = 0; i < on; i++) {
        mount_inode *in = old[i];
        while (in) {
            mount_inode *next = in->next_ino;
            link_ino(t, in);
            if (!in->detached)
                link_path(t, in);
            in = next;
        }
    }
    free(old);
}

mount_inodes *mount_inodes_new(void)
{
    mount_inodes *t = calloc(1, sizeof *t);
    if (!t)
        goto fail;
    t->nbuckets = 1024;
    t->park_limit = MOUNT_INODES_PARK_LIMIT;
    t->by_ino = calloc(t->nbuckets, sizeof *t->by_ino);
    t->by_path = calloc(t->nbuckets, sizeof *t->by_path);
    t->root = calloc(1, sizeof *t->root);
    if (!t->by_ino || !t->by_path || !t->root)
        goto fail_tables;
    t->root->path = strdup("");
    if (!t->root->path)
        goto fail_tables;
    t->root->ino = 1;
    t->root->is_dir = true;
    t->root->nlookup = 1;
    link_ino(t, t->root);
    link_path(t, t->root);
    t->count = 1;
    return t;

fail_tables:
    free(t->root);
    free(t->by_ino);
    free(t->by_path);
    free(t);
fail:
    return NULL;
}

void mount_inodes_delete(mount_inodes *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        mount_inode *in = t->by_ino[i];
        while (in) {
            mount_inode *next = in->next_ino;
            inode_free(in);
            in = next;
        }
    }
    free(t->by_ino);
    free(t->by_path);
    free(t);
}

mount_inode *mount_inodes_get(mount_inodes *t, uint64_t ino)
{
    mount_inode *in = t->by_ino[ino_slot(t, ino)];
    while (in && in->ino != ino)
        in = in->next_ino;
    return in;
}

mount_inode *mount_inodes_find(mount_inodes *t, const char *path)
{
    mount_inode *in = t->by_path[path_slot(t, path)];
    while (in && strcmp(in->path, path) != 0)
        in = in->next_path;
    return in;
}

uint64_t mount_inodes_number(mount_inodes *t, const char *path)
{
    mount_inode *in = mount_inodes_find(t, path);
    if (in)
        return in->ino;
    uint64_t ino = mount_names_hash(path);
    while (ino < 2 || mount_inodes_get(t, ino))
        ino++;
    return ino;
}

mount_inode *mount_inodes_get_path(mount_inodes *t, const char *path, bool is_dir)
{
    mount_inode *in = mount_inodes_find(t, path);
    if (in)
        return in;
    in = calloc(1, sizeof *in);
    if (!in)
        return NULL;
    in->path = strdup(path);
    if (!in->path) {
        free(in);
        return NULL;
    }
    in->ino = mount_inodes_number(t, path);
    in->is_dir = is_dir;
    if (t->count >= t->nbuckets)
        grow(t);
    link_ino(t, in);
    link_path(t, in);
    t->count++;
    return in;
}

/* Takes an unreferenced inode out of both tables and frees it. */
static void release(mount_inodes *t, mount_inode *in)
{
    unpark(t, in);
    if (!in->detached)
        unlink_path(t, in);
    unlink_ino(t, in);
    t->count--;
    inode_free(in);
}

static bool unreferenced(const mount_inodes *t, const mount_inode *in)
{
    return in != t->root && in->nlookup == 0 && !in->stage;
}

/* Frees parked inodes from the oldest while their costs exceed the limit. */
static void trim_parked(mount_inodes *t)
{
    while (t->parked > t->park_limit) {
        mount_inode *old = t->park_tail;
        unpark(t, old);
        if (unreferenced(t, old))
            release(t, old);
    }
}

void mount_inodes_maybe_free(mount_inodes *t, mount_inode *in)
{
    if (!unreferenced(t, in))
        return;
    if (in->detached || !in->is_dir || !in->listing) {
        release(t, in);
        return;
    }
    unpark(t, in); /* parked again: now the newest */
    in->park_cost = in->listing->n + 1;
    in->park_next = t->park_head;
    if (t->park_head)
        t->park_head->park_prev = in;
    else
        t->park_tail = in;
    t->park_head = in;
    t->parked += in->park_cost;
    trim_parked(t);
}

void mount_inodes_park_limit(mount_inodes *t, size_t entries)
{
    t->park_limit = entries;
    trim_parked(t);
}

size_t mount_inodes_parked(const mount_inodes *t) { return t->parked; }

void mount_inodes_forget(mount_inodes *t, mount_inode *in, uint64_t n)
{
    in->nlookup = n > in->nlookup ? 0 : in->nlookup - n;
    mount_inodes_maybe_free(t, in);
}

void mount_inodes_detach(mount_inodes *t, mount_inode *in)
{
    if (in->detached || in == t->root)
        return;
    unpark(t, in);
    unlink_path(t, in);
    in->detached = true;
}

void mount_inodes_rename(mount_inodes *t, mount_inode *in, char *new_path)
{
    mount_inode *old = mount_inodes_find(t, new_path);
    if (old && old != in) {
        mount_inodes_detach(t, old);
        mount_inodes_maybe_free(t, old);
    }
    if (!in->detached)
        unlink_path(t, in);
    free(in->path);
    in->path = new_path;
    in->detached = false;
    link_path(t, in);
}
