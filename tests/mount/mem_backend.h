/*
 * mem_backend: the mount's backend table (fuse/mount.h) filled in memory, for the mount tests.
 *
 * This is not a mock of S3: it is a stand-in for the daemon, which fills the same table with S3
 * plus the cluster cache (node/, built by other engineers, with its own end-to-end tests against
 * the real S3 server). Here the objects live in a sorted array with ListObjectsV2-like listing
 * (prefix, delimiter, sorted keys), per-version ETags, counters of every call (so a test can say
 * "no HEAD per entry" or "one PUT, no COPY"), and one injected fault: failing the next PUTs,
 * which no real store does on demand.
 */
#ifndef SHOAL_TEST_MEM_BACKEND_H
#define SHOAL_TEST_MEM_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mount.h"

typedef struct mem_backend mem_backend;

typedef struct mem_counts {
    unsigned head, list, list_shared, read, put, copy, remove;
} mem_counts;

extern const mount_backend mem_backend_ops;
/* The same table with list_shared, answered from the store itself (age 0) and counted apart: a
 * stand-in for the daemon's listing shared by the cluster. */
extern const mount_backend mem_backend_shared_ops;

/* A new, empty store (never NULL: aborts on NOMEM). */
mem_backend *mem_backend_new(void);
void mem_backend_delete(mem_backend *b);

/* Stores `len` bytes as `key` (`key_len` bytes, may hold any byte) with a new ETag and mtime
 * `mtime` (0: now). Does not count as a call. */
void mem_backend_set(mem_backend *b, const char *key, size_t key_len, const void *data,
                     size_t len, int64_t mtime);
/* The same for a NUL-terminated key, mtime now. */
void mem_backend_set_str(mem_backend *b, const char *key, const char *data);
/* Removes `key` (not counted). */
void mem_backend_del(mem_backend *b, const char *key);
/* A copy of the object's bytes (caller frees) and its length; NULL when absent. */
char *mem_backend_get(mem_backend *b, const char *key, size_t *len);
/* The ETag of `key` into out (MOUNT_ETAG_MAX); false when absent. */
bool mem_backend_etag(mem_backend *b, const char *key, char *out);
/* Sets the attributes `key` carries as metadata (not counted; the ETag stays); false when absent. */
bool mem_backend_set_attrs(mem_backend *b, const char *key, const mount_attrs *a);
/* The attributes `key` carries as metadata into out; false when absent. */
bool mem_backend_attrs(mem_backend *b, const char *key, mount_attrs *out);
/* Number of objects stored. */
size_t mem_backend_count(mem_backend *b);

/* The calls made through the table since the last reset. */
mem_counts mem_backend_counts(mem_backend *b);
void mem_backend_reset_counts(mem_backend *b);

/* The next `n` PUT calls fail with `err` (a negative errno) and store nothing. */
void mem_backend_fail_puts(mem_backend *b, unsigned n, int err);

/* Creates and starts a mount of `cfg` over `b` into *out: 0. 1 when mounting is not permitted
 * here (nothing is left mounted), -1 when mount_new refused the configuration; the reason is in
 * shoal_error_message() for both. */
int mem_backend_mount(mem_backend *b, const mount_config *cfg, mount_view **out);

#endif
