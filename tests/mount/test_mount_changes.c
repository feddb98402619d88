/*
 * Every change a system call reports as done reaches the store, on REAL FUSE mounts over
 * tests/mount/mem_backend.c (the mount's backend table in memory: a stand-in for the daemon, not
 * a mock of S3). The kernel sends RELEASE asynchronously after close(2) returns, so a call that
 * follows a close can reach the mount while the closed descriptor's handle still holds the
 * staged file: these tests repeat such sequences many times so that both orders happen, and
 * check the store after each round, not only the syscall's return value.
 *
 * A test skips (exit 77) only when /dev/fuse is missing or mounting is not permitted here.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mount_fx.h"
#include "tt.h"

#define ROUNDS 100

/* The store holds `key` with `len` bytes, all of them `fill` beyond the first `head_len`, which
 * are `head`. */
static void check_store_size(fixture *f, const char *key, size_t len, const char *head, size_t head_len,
                             int round)
{
    size_t got_len = 0;
    char *got = mem_backend_get(f->mem, key, &got_len);
    TT_CHECK(got, "round %d: key '%s' is missing from the store", round, key);
    TT_CHECK(got_len == len, "round %d: the store holds %zu bytes of '%s', want %zu", round, got_len, key, len);
    TT_CHECK(memcmp(got, head, head_len) == 0, "round %d: the first %zu bytes of '%s' differ", round, head_len,
             key);
    for (size_t i = head_len; i < len; i++)
        TT_CHECK(got[i] == 0, "round %d: byte %zu of '%s' is %d, want 0", round, i, key, got[i]);
    free(got);
}

static void check_size_on_mount(const char *path, off_t want, int round)
{
    struct stat st;
    TT_CHECK(stat(path, &st) == 0, "round %d: stat %s: %s", round, path, strerror(errno));
    TT_CHECK(st.st_size == want, "round %d: %s shows %lld bytes, want %lld", round, path, (long long)st.st_size,
             (long long)want);
}

/* A file created read-only (O_CREAT|O_RDONLY, as touch-like tools and test suites do), closed,
 * then cut to a size by path: truncate(2) must not report a size that never reaches the store. */
TT_TEST(test_mount_truncate_right_after_a_read_only_create_reaches_the_store)
{
    fixture f;
    fx_up(&f);
    for (int r = 0; r < ROUNDS; r++) {
        char name[32];
        snprintf(name, sizeof name, "t%03d", r);
        int fd = open(P(&f, "%s", name), O_CREAT | O_RDONLY, 0644);
        TT_CHECK(fd >= 0, "round %d: create %s: %s", r, name, strerror(errno));
        TT_CHECK(close(fd) == 0, "round %d: close: %s", r, strerror(errno));
        TT_CHECK(truncate(P(&f, "%s", name), 1234567) == 0, "round %d: truncate: %s", r, strerror(errno));
        check_size_on_mount(P(&f, "%s", name), 1234567, r);
        check_store_size(&f, name, 1234567, "", 0, r);
    }
    fx_done(&f);
}

/* The same without a race: a second descriptor keeps the staged file alive across the creator's
 * close, so the truncate always lands on the shared stage, and the store is checked while that
 * descriptor is still open (nothing else would upload the cut). */
TT_TEST(test_mount_truncate_of_a_created_file_another_descriptor_holds_reaches_the_store)
{
    fixture f;
    fx_up(&f);
    int creator = open(P(&f, "held"), O_CREAT | O_RDONLY, 0644);
    TT_CHECK(creator >= 0, "create: %s", strerror(errno));
    int reader = open(P(&f, "held"), O_RDONLY);
    TT_CHECK(reader >= 0, "second open: %s", strerror(errno));
    TT_CHECK(close(creator) == 0, "close: %s", strerror(errno));
    check_store_size(&f, "held", 0, "", 0, 0);
    TT_CHECK(truncate(P(&f, "held"), 4096) == 0, "truncate: %s", strerror(errno));
    check_store_size(&f, "held", 4096, "", 0, 0);
    char buf[8192];
    TT_CHECK(read(reader, buf, sizeof buf) == 4096, "the open descriptor reads the cut file: %s",
             strerror(errno));
    TT_CHECK(close(reader) == 0, "close: %s", strerror(errno));
    TT_CHECK(mem_backend_counts(f.mem).put == 2, "%u PUTs, want 2 (create, truncate)",
             mem_backend_counts(f.mem).put);
    fx_done(&f);
}

/* Written, closed, then cut by path while the close's RELEASE may still be on its way. */
TT_TEST(test_mount_truncate_right_after_a_write_and_close_reaches_the_store)
{
    fixture f;
    fx_up(&f);
    for (int r = 0; r < ROUNDS; r++) {
        TT_CHECK(spit(P(&f, "w"), "hello world", 11) == 0, "round %d: write + close: %s", r, strerror(errno));
        TT_CHECK(truncate(P(&f, "w"), 5) == 0, "round %d: truncate: %s", r, strerror(errno));
        check_size_on_mount(P(&f, "w"), 5, r);
        check_store_size(&f, "w", 5, "hello", 5, r);
        TT_CHECK(truncate(P(&f, "w"), 9) == 0, "round %d: truncate up: %s", r, strerror(errno));
        check_store_size(&f, "w", 9, "hello", 5, r);
    }
    fx_done(&f);
}

/* write, then ftruncate on the same descriptor, then close: the close uploads the cut file. */
TT_TEST(test_mount_write_then_ftruncate_then_close_reaches_the_store)
{
    fixture f;
    fx_up(&f);
    for (int r = 0; r < ROUNDS; r++) {
        int fd = begin_file(P(&f, "f"), O_WRONLY, "0123456789", 10);
        TT_CHECK(ftruncate(fd, 4) == 0, "round %d: ftruncate: %s", r, strerror(errno));
        TT_CHECK(close(fd) == 0, "round %d: close: %s", r, strerror(errno));
        check_store_size(&f, "f", 4, "0123", 4, r);
        fd = open(P(&f, "f"), O_RDWR);
        TT_CHECK(fd >= 0, "round %d: reopen: %s", r, strerror(errno));
        TT_CHECK(ftruncate(fd, 6) == 0, "round %d: ftruncate up: %s", r, strerror(errno));
        TT_CHECK(close(fd) == 0, "round %d: close: %s", r, strerror(errno));
        check_store_size(&f, "f", 6, "0123", 4, r);
    }
    fx_done(&f);
}

/* A writer closes; before its RELEASE lands another open with O_TRUNC empties the file and
 * closes: the store ends empty, not with the first writer's bytes. */
TT_TEST(test_mount_open_o_trunc_while_the_last_writer_releases_reaches_the_store)
{
    fixture f;
    fx_up(&f);
    for (int r = 0; r < ROUNDS; r++) {
        TT_CHECK(spit(P(&f, "o"), "some bytes", 10) == 0, "round %d: write + close: %s", r, strerror(errno));
        int flags = r % 2 ? O_RDONLY | O_TRUNC : O_WRONLY | O_TRUNC;
        int fd = open(P(&f, "o"), flags);
        TT_CHECK(fd >= 0, "round %d: open O_TRUNC: %s", r, strerror(errno));
        TT_CHECK(close(fd) == 0, "round %d: close: %s", r, strerror(errno));
        check_size_on_mount(P(&f, "o"), 0, r);
        check_store_size(&f, "o", 0, "", 0, r);
    }
    fx_done(&f);
}

TT_MAIN()
