/*
 * mount_names: the mapping between S3 keys and POSIX names (SPEC §4), as pure functions.
 *
 * A directory at relative path "a/b" is the key prefix "<prefix>a/b/"; a file is the key
 * "<prefix>a/b". A directory exists when any key starts with its prefix (implicit directories)
 * or when the marker object "a/b/" exists. Listing entries are sorted into children here; names
 * that cannot be POSIX names are reported, never returned; and when a file and a directory share
 * a name, the directory wins (as in mountpoint-s3) and the file is hidden.
 */
#ifndef SHOAL_MOUNT_NAMES_H
#define SHOAL_MOUNT_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mount.h"

#define MOUNT_NAME_MAX 255 /* longest component, in bytes (NAME_MAX) */

/* Why a key component is or is not a POSIX name. */
typedef enum mount_name_verdict {
    MOUNT_NAME_OK = 0,
    MOUNT_NAME_EMPTY,    /* "" (a key with "//" or starting with "/") */
    MOUNT_NAME_DOT,      /* "." or ".." */
    MOUNT_NAME_NUL,      /* holds a NUL byte */
    MOUNT_NAME_TOO_LONG, /* over MOUNT_NAME_MAX bytes */
    MOUNT_NAME_SLASH,    /* holds a '/' (only from callers that pass a whole name) */
} mount_name_verdict;

/* Checks one component of `len` bytes. Any other byte sequence is a valid name. */
mount_name_verdict mount_names_check(const char *name, size_t len);

/* Static text for a verdict, e.g. "component over 255 bytes". Never NULL. */
const char *mount_names_verdict_text(mount_name_verdict v);

/* What a listing entry is to the directory listed. */
typedef enum mount_child_kind {
    MOUNT_CHILD_FILE,  /* an object directly in the directory */
    MOUNT_CHILD_DIR,   /* a subdirectory (common prefix, marker, or a deeper key) */
    MOUNT_CHILD_SELF,  /* the directory's own marker object: not a child */
    MOUNT_CHILD_SKIP,  /* not a POSIX name (`why` says which rule), or not under the directory */
} mount_child_kind;

/*
 * Classifies the listing entry `key` (`key_len` bytes; `is_prefix` for a common prefix) of the
 * directory whose key prefix is `dir_prefix` ("" for the bucket root, else ending with '/').
 * On FILE or DIR, *name and *name_len point at the child's name inside `key`. On SKIP, *why
 * holds the reason (MOUNT_NAME_OK when the key is not under `dir_prefix` at all).
 */
mount_child_kind mount_names_child(const char *dir_prefix, size_t dir_len, const char *key,
                                   size_t key_len, bool is_prefix, const char **name,
                                   size_t *name_len, mount_name_verdict *why);

/* Checks every component of a relative key (e.g. "a/b/c", after the mount's prefix): the key
 * round-trips to a path only when all are valid. On failure *why says which rule broke. */
bool mount_names_key_ok(const char *rel, size_t len, mount_name_verdict *why);

/* One child of a directory listing. `name` is heap memory owned by the array's owner. */
typedef struct mount_dirent {
    char *name;
    bool is_dir;
    mount_obj_info info; /* files only */
} mount_dirent;

/* Called for each file hidden by a directory of the same name. */
typedef void (*mount_shadow_fn)(void *ud, const mount_dirent *hidden_file);

/*
 * Sorts `e[0..n)` by name (bytewise) and removes duplicates: a directory wins over a file of the
 * same name (the file is reported to `shadowed`, which may be NULL), and repeated directories
 * merge. Returns the number of children kept in e[0..kept); the dropped entries are moved to
 * e[kept..n) so the caller still frees every name.
 */
size_t mount_names_resolve(mount_dirent *e, size_t n, mount_shadow_fn shadowed, void *ud);

/* Binary search of a resolved array for `name`; NULL when absent. */
const mount_dirent *mount_names_find(const mount_dirent *e, size_t n, const char *name);

/* 64-bit FNV-1a hash of a NUL-terminated string (inode numbers, the logged-once set). */
uint64_t mount_names_hash(const char *s);

/* Normalizes a configured prefix: NULL or "" -> "", "data" or "data/" -> "data/", leading '/'
 * removed. Returns a heap string (caller frees) or NULL on NOMEM. */
char *mount_names_prefix(const char *configured);

#endif
