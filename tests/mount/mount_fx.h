/*
 * The fixture the mount tests share: a REAL FUSE mount of fuse/mount.c over tests/mount/mem_backend.c
 * (the mount's backend table in memory: a stand-in for the daemon, not a mock of S3), mounted in
 * the test's own process on a fresh temporary directory, and the small file helpers the tests use.
 *
 * Every mount a test makes is taken down at exit, also when a check fails (fx_arm_cleanup): the
 * fixture in fx_live, another mount named in fx_live_other (a tmpfs, a dead FUSE mount) and a
 * mounting child process in fx_live_child.
 */
#ifndef SHOAL_TEST_MOUNT_FX_H
#define SHOAL_TEST_MOUNT_FX_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "mem_backend.h"
#include "mount.h"

typedef struct fixture {
    char *dir;
    char mnt[512], stage[512];
    mem_backend *mem;
    mount_config cfg;
    mount_view *m;
} fixture;

extern fixture *fx_live;        /* the mount to take down if a check fails */
extern char fx_live_other[512]; /* and another mount a test made (a tmpfs, a dead FUSE mount) */
extern pid_t fx_live_child;     /* and a child process that mounted */

/* Makes sure the live mounts above are taken down at exit, also when a check fails. */
void fx_arm_cleanup(void);
/* Skips the test (77) when /dev/fuse is missing or not accessible. */
void require_fuse(void);
/* A temporary directory with an empty mount point and a staging directory, an empty store and
 * the default configuration; the test may fill the store and tune f->cfg before fx_mount. */
void fx_prepare(fixture *f);
/* Mounts f->cfg over f->mem; skips the test when mounting is not permitted here. */
void fx_mount(fixture *f);
void fx_up(fixture *f);
/* Unmounts (a failure fails the test), frees the store, removes the directory. */
void fx_done(fixture *f);

/* mnt/rel in one of a few rotating buffers of this thread (several may be used in one call). */
const char *P(const fixture *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The whole file read with read(2); NULL (errno set) on failure. */
char *slurp(const char *path, size_t *len);
/* Creates (or truncates) `path` through the mount, opened with O_CREAT|O_TRUNC and `mode`
 * (O_WRONLY or O_RDWR), and writes `len` bytes; returns the still open descriptor. */
int begin_file(const char *path, int mode, const void *data, size_t len);
/* Writes `len` bytes to a new file through the mount; returns close()'s result (errno set). */
int spit(const char *path, const void *data, size_t len);
/* Deterministic bytes that differ at every offset a splice could hide in (caller frees). */
char *pattern(size_t len, unsigned seed);
/* The file's bytes through the mount are exactly `want`. */
void check_content(const char *path, const char *want, size_t want_len);
/* The store holds exactly `want` under `key`. */
void check_backend(fixture *f, const char *key, const char *want, size_t want_len);
/* The names in directory `path`, sorted, without . and .., joined by '|' (caller frees). */
char *names(const char *path);
void check_names(const char *path, const char *want);
/* rc is -1 with errno `want`. */
void check_errno(int rc, int want, const char *what);
void check_dir(const char *path);

#endif
