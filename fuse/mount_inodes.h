/*
 * mount_inodes: the mount's inode table (internal to fuse/).
 *
 * Each inode the kernel knows is a path relative to the mount's prefix ("" is the root, inode 1)
 * with the metadata last learnt for it. A file inode stands for one version (ETag) of its object:
 * a new version at the path gets a new inode (fuse/mount.c, supersede). Inode numbers come from a hash of the path (probing past
 * collisions), so a path keeps its number across forgets and remounts in the common case. The
 * table is not locked: the mount holds its lock around every call and every field access.
 *
 * What the mount knows outlives what the kernel remembers: a directory the kernel forgot while it
 * held a listing is parked (kept, nlookup 0) with its listing, so a later lookup of its children
 * is answered from that listing within its TTL, as before the forget. Parked directories are
 * bounded by the entries of their listings (mount_inodes_park_limit); beyond it the one parked
 * longest ago is freed first.
 */
#ifndef SHOAL_MOUNT_INODES_H
#define SHOAL_MOUNT_INODES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mount.h"
#include "mount_names.h"
#include "mount_ra.h"

struct mount_stage;

/* Listing entries kept in all for directories the kernel forgot (about 200 bytes each). */
#define MOUNT_INODES_PARK_LIMIT 65536u

/* A directory's listing snapshot, shared by open directory handles and the directory's inode. */
typedef struct mount_listing {
    unsigned refs;
    uint64_t listed_at;   /* monotonic microseconds */
    size_t n;
    mount_dirent *e;      /* resolved (sorted, unique) children */
    size_t n_alloc;       /* entries allocated, dropped duplicates included (freed too) */
    size_t cap;           /* room in e */
} mount_listing;

typedef struct mount_inode {
    uint64_t ino;
    uint64_t nlookup;          /* the kernel's references (lookup count) */
    char *path;                /* relative path, "" for the root */
    bool is_dir;
    bool detached;             /* unlinked or replaced: no longer reachable by path */
    bool stale;                /* superseded: the path now holds another version of the object
                                  (or none); this inode keeps standing for its own version */
    bool remote;               /* an object is known to exist at the key (not just staged) */
    mount_obj_info info;       /* files: size, ETag, mtime as last learnt */
    uint64_t attr_until;       /* monotonic microseconds until which `info` is trusted */
    char cache_etag[MOUNT_ETAG_MAX]; /* the version the kernel's page cache holds */
    struct mount_stage *stage; /* the staged copy while the file is open for writing */
    int upload_err;            /* -errno of an upload that failed and was dropped with its stage;
                                  0 once an upload of this file succeeds */
    mount_ra ra; /* files read without an open request (no_open): their streams (mount_view.lock) */
    mount_listing *listing;    /* directories: the last listing */
    uint64_t list_gen;       /* bumped each time the listing is dropped (directories) */
    struct mount_inode *next_path, *next_ino;
    struct mount_inode *park_prev, *park_next; /* the parked list, newest first (when parked) */
    size_t park_cost; /* entries it counts against the park limit; 0: not parked */
} mount_inode;

typedef struct mount_inodes mount_inodes;

/* A table holding the root (inode 1, path "", a directory). NULL on NOMEM. */
mount_inodes *mount_inodes_new(void);
/* Frees every inode (and drops their listings). Stages must already be gone. Accepts NULL. */
void mount_inodes_delete(mount_inodes *t);

/* The inode numbered `ino`, NULL when unknown. */
mount_inode *mount_inodes_get(mount_inodes *t, uint64_t ino);
/* The attached inode at `path`, NULL when none. */
mount_inode *mount_inodes_find(mount_inodes *t, const char *path);
/* The attached inode at `path`, created (nlookup 0) when none. NULL on NOMEM. */
mount_inode *mount_inodes_get_path(mount_inodes *t, const char *path, bool is_dir);
/* The number `path` has or would get (for readdir entries that create no inode). */
uint64_t mount_inodes_number(mount_inodes *t, const char *path);

/* Drops `n` kernel references; frees the inode when none are left and nothing else holds it
 * (no stage), or parks it (see above) when it is an attached directory holding a listing. The
 * root is never freed. Parking may free other parked inodes that nothing references. */
void mount_inodes_forget(mount_inodes *t, mount_inode *in, uint64_t n);
/* Frees (or parks) `in` if nothing references it (after a failed reply, or when a stage ends),
 * as mount_inodes_forget does. */
void mount_inodes_maybe_free(mount_inodes *t, mount_inode *in);
/* Sets how many listing entries parked directories may hold in all (MOUNT_INODES_PARK_LIMIT by
 * default; 0 parks nothing), freeing the oldest parked inodes that nothing references beyond it. */
void mount_inodes_park_limit(mount_inodes *t, size_t entries);
/* The listing entries parked directories hold now (their cost when parked). */
size_t mount_inodes_parked(const mount_inodes *t);

/* Moves `in` to `new_path` (taking the string). An attached inode already at `new_path` is
 * detached first. */
void mount_inodes_rename(mount_inodes *t, mount_inode *in, char *new_path);
/* Makes `in` unreachable by path (unlink, rmdir, replaced by a rename). */
void mount_inodes_detach(mount_inodes *t, mount_inode *in);

/* Listing reference counting: unref frees at zero. Accept NULL. */
void mount_listing_unref(mount_listing *l);

#endif
