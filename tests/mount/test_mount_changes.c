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
#include <sys/wait.h>
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
        int flags = r % 2 ? O_RDWR | O_TRUNC : O_WRONLY | O_TRUNC;
        int fd = open(P(&f, "o"), flags);
        TT_CHECK(fd >= 0, "round %d: open O_TRUNC: %s", r, strerror(errno));
        TT_CHECK(close(fd) == 0, "round %d: close: %s", r, strerror(errno));
        check_size_on_mount(P(&f, "o"), 0, r);
        check_store_size(&f, "o", 0, "", 0, r);
    }
    fx_done(&f);
}

/* ---- a failed upload is never moved ------------------------------------------------------ */

/* torch.save(obj, tmp) ignores close's EIO, then os.replace(tmp, final): the rename must fail with
 * the upload's error instead of publishing under `final` what `tmp` held before (or nothing). The
 * RELEASE may come before or after the rename, so each case runs many rounds. */
TT_TEST(test_mount_rename_of_a_file_whose_upload_failed_fails_with_its_error)
{
    fixture f;
    fx_up(&f);
    for (int r = 0; r < 20; r++) {
        bool existed = r % 2;
        if (existed)
            mem_backend_set_str(f.mem, "tmp", "previous checkpoint");
        mem_backend_fail_puts(f.mem, 1, -EIO);
        int fd = begin_file(P(&f, "tmp"), O_WRONLY, "new checkpoint", 14);
        int rc = close(fd);
        TT_CHECK(rc == -1 && errno == EIO, "round %d: close after a failed upload: rc %d (%s)", r, rc,
                 strerror(errno));
        rc = rename(P(&f, "tmp"), P(&f, "final"));
        TT_CHECK(rc == -1 && errno == EIO, "round %d: rename of a file whose upload failed: rc %d (%s)", r, rc,
                 rc ? strerror(errno) : "succeeded");
        size_t len = 0;
        char *got = mem_backend_get(f.mem, "final", &len);
        TT_CHECK(!got, "round %d: 'final' holds %zu bytes: something else was moved there", r, len);
        if (existed)
            check_backend(&f, "tmp", "previous checkpoint", 19);
        /* Written again successfully, the same rename goes through. */
        TT_CHECK(spit(P(&f, "tmp"), "good", 4) == 0, "round %d: rewrite: %s", r, strerror(errno));
        TT_CHECK(rename(P(&f, "tmp"), P(&f, "final")) == 0, "round %d: rename after a good upload: %s", r,
                 strerror(errno));
        check_backend(&f, "final", "good", 4);
        TT_CHECK(unlink(P(&f, "final")) == 0, "unlink: %s", strerror(errno));
    }
    fx_done(&f);
}

/* A rename that finds the closed writer's stage still in place (its RELEASE on its way, or, here,
 * another descriptor holding it) moves an object whose copy may have another ETag: the name must
 * read that copy afterwards, not ask for the old version and get ESTALE. */
TT_TEST(test_mount_rename_while_a_clean_stage_is_held_reads_the_copy_afterwards)
{
    fixture f;
    fx_up(&f);
    int w = begin_file(P(&f, "ckpt.tmp"), O_WRONLY, "weights", 7);
    int r = open(P(&f, "ckpt.tmp"), O_RDONLY); /* shares the stage and keeps it after the close */
    TT_CHECK(r >= 0, "open: %s", strerror(errno));
    TT_CHECK(close(w) == 0, "close: %s", strerror(errno));
    TT_CHECK(rename(P(&f, "ckpt.tmp"), P(&f, "ckpt")) == 0, "rename: %s", strerror(errno));
    TT_CHECK(close(r) == 0, "close: %s", strerror(errno));
    check_content(P(&f, "ckpt"), "weights", 7);
    check_backend(&f, "ckpt", "weights", 7);
    fx_done(&f);
}

/* ---- attributes as object metadata ------------------------------------------------------- */

static mount_attrs attrs_of(fixture *f, const char *key)
{
    mount_attrs a;
    TT_CHECK(mem_backend_attrs(f->mem, key, &a), "key '%s' missing from the store", key);
    return a;
}

static struct stat stat_of(const char *path)
{
    struct stat st;
    TT_CHECK(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
    return st;
}

/* chmod, chown and utimensat of a file that is in the store and not open: one server-side copy
 * each, onto itself, with the attributes replaced; the bytes stay, stat shows the change. */
TT_TEST(test_mount_chmod_chown_utimes_of_an_uploaded_file_copy_once_each)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "data.bin", "payload");
    fx_mount(&f);
    const char *p = P(&f, "data.bin");
    TT_CHECK(stat_of(p).st_size == 7, "size");
    mem_backend_reset_counts(f.mem);
    TT_CHECK(chmod(p, 0600) == 0, "chmod: %s", strerror(errno));
    mem_counts c = mem_backend_counts(f.mem);
    TT_CHECK(c.copy == 1 && c.put == 0, "chmod: %u COPY %u PUT, want 1 and 0", c.copy, c.put);
    mount_attrs a = attrs_of(&f, "data.bin");
    TT_CHECK((a.set & MOUNT_ATTR_MODE) && a.mode == (S_IFREG | 0600), "stored mode %o (set %x)", a.mode, a.set);
    TT_CHECK((stat_of(p).st_mode & 07777) == 0600, "stat shows mode %o", stat_of(p).st_mode & 07777);
    TT_CHECK(chown(p, 1234, 5678) == 0, "chown: %s", strerror(errno));
    a = attrs_of(&f, "data.bin");
    TT_CHECK(a.uid == 1234 && a.gid == 5678 && a.mode == (S_IFREG | 0600), "stored uid %u gid %u mode %o", a.uid,
             a.gid, a.mode);
    struct timespec ts[2] = {{1600000000, 111}, {1500000000, 123456789}};
    TT_CHECK(utimensat(AT_FDCWD, p, ts, 0) == 0, "utimensat: %s", strerror(errno));
    a = attrs_of(&f, "data.bin");
    TT_CHECK(a.mtime.sec == 1500000000 && a.mtime.nsec == 123456789 && a.atime.sec == 1600000000,
             "stored mtime %lld.%09u atime %lld", (long long)a.mtime.sec, a.mtime.nsec, (long long)a.atime.sec);
    struct stat st = stat_of(p);
    TT_CHECK(st.st_mtim.tv_sec == 1500000000 && st.st_mtim.tv_nsec == 123456789 && st.st_uid == 1234 &&
                 st.st_gid == 5678,
             "stat shows mtime %lld.%09ld uid %u gid %u", (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
             st.st_uid, st.st_gid);
    c = mem_backend_counts(f.mem);
    TT_CHECK(c.copy == 3 && c.put == 0 && c.remove == 0, "%u COPY %u PUT %u DELETE, want 3, 0, 0", c.copy, c.put,
             c.remove);
    check_backend(&f, "data.bin", "payload", 7);
    fx_done(&f);
}

/* Attributes set while a file is being written go up with its upload: no copy at all. */
TT_TEST(test_mount_attributes_of_a_file_being_written_go_up_with_its_upload)
{
    fixture f;
    fx_up(&f);
    int fd = begin_file(P(&f, "new"), O_WRONLY, "abc", 3);
    TT_CHECK(fchmod(fd, 0750) == 0, "fchmod: %s", strerror(errno));
    TT_CHECK(fchown(fd, 42, 43) == 0, "fchown: %s", strerror(errno));
    struct timespec ts[2] = {{0, UTIME_OMIT}, {1400000000, 5}};
    TT_CHECK(futimens(fd, ts) == 0, "futimens: %s", strerror(errno));
    TT_CHECK(mem_backend_counts(f.mem).put == 0, "something was sent before close");
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    mem_counts c = mem_backend_counts(f.mem);
    TT_CHECK(c.put == 1 && c.copy == 0, "%u PUT %u COPY, want 1 and 0", c.put, c.copy);
    mount_attrs a = attrs_of(&f, "new");
    TT_CHECK(a.mode == (S_IFREG | 0750) && a.uid == 42 && a.gid == 43 && a.mtime.sec == 1400000000 &&
                 a.mtime.nsec == 5,
             "stored mode %o uid %u gid %u mtime %lld.%u", a.mode, a.uid, a.gid, (long long)a.mtime.sec,
             a.mtime.nsec);
    TT_CHECK(!(a.set & MOUNT_ATTR_ATIME), "an omitted atime was stored (set %x, atime %lld)", a.set,
             (long long)a.atime.sec);
    check_backend(&f, "new", "abc", 3);
    fx_done(&f);
}

/* A created file carries the mode it was created with and its creator's ids; a directory made
 * with mkdir(2) too (on its marker), and chmod/utimes of a directory rewrite the marker. */
TT_TEST(test_mount_create_and_mkdir_store_mode_owner_and_time)
{
    fixture f;
    fx_up(&f);
    mode_t old = umask(0);
    int fd = open(P(&f, "secret"), O_WRONLY | O_CREAT | O_EXCL, 0600);
    TT_CHECK(fd >= 0 && close(fd) == 0, "create: %s", strerror(errno));
    TT_CHECK(mkdir(P(&f, "d"), 0700) == 0, "mkdir: %s", strerror(errno));
    umask(old);
    mount_attrs a = attrs_of(&f, "secret");
    TT_CHECK(a.mode == (S_IFREG | 0600) && a.uid == getuid() && a.gid == getgid() && (a.set & MOUNT_ATTR_MTIME),
             "file: mode %o uid %u gid %u set %x", a.mode, a.uid, a.gid, a.set);
    a = attrs_of(&f, "d/");
    TT_CHECK(a.mode == (S_IFDIR | 0700), "marker mode %o", a.mode);
    TT_CHECK((stat_of(P(&f, "d")).st_mode & 07777) == 0700, "stat of the directory: %o",
             stat_of(P(&f, "d")).st_mode & 07777);
    mem_backend_reset_counts(f.mem);
    TT_CHECK(chmod(P(&f, "d"), 0755) == 0, "chmod of a directory: %s", strerror(errno));
    struct timespec ts[2] = {{1300000000, 0}, {1300000000, 0}};
    TT_CHECK(utimensat(AT_FDCWD, P(&f, "d"), ts, 0) == 0, "utimes of a directory: %s", strerror(errno));
    a = attrs_of(&f, "d/");
    TT_CHECK(a.mode == (S_IFDIR | 0755) && a.mtime.sec == 1300000000, "marker mode %o mtime %lld", a.mode,
             (long long)a.mtime.sec);
    TT_CHECK(stat_of(P(&f, "d")).st_mtime == 1300000000, "stat of the directory shows mtime %lld",
             (long long)stat_of(P(&f, "d")).st_mtime);
    TT_CHECK(mem_backend_counts(f.mem).put == 2, "%u PUTs of the marker, want 2", mem_backend_counts(f.mem).put);
    /* An implicit directory (no marker) gets one. */
    mem_backend_set_str(f.mem, "imp/x", "x");
    TT_CHECK(chmod(P(&f, "imp"), 0711) == 0, "chmod of an implicit directory: %s", strerror(errno));
    TT_CHECK(attrs_of(&f, "imp/").mode == (S_IFDIR | 0711), "marker of the implicit directory");
    /* The root of a whole-bucket mount has no key to keep attributes on. */
    check_errno(chmod(f.mnt, 0700), EPERM, "chmod of the mount's root");
    fx_done(&f);
}

/* An object that carries attributes (written by this mount, or by s3fs) shows them once its
 * metadata was read, and a rewrite keeps them. */
TT_TEST(test_mount_stored_attributes_are_shown_and_kept_by_a_rewrite)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "kept", "old bytes");
    mount_attrs a = {.set = MOUNT_ATTR_MODE | MOUNT_ATTR_UID | MOUNT_ATTR_GID | MOUNT_ATTR_MTIME,
                     .mode = S_IFREG | 0640, .uid = 7, .gid = 8, .mtime = {1200000000, 0}};
    TT_CHECK(mem_backend_set_attrs(f.mem, "kept", &a), "set attrs");
    fx_mount(&f);
    struct stat st = stat_of(P(&f, "kept")); /* a lookup nothing answers: HEAD */
    TT_CHECK((st.st_mode & 07777) == 0640 && st.st_uid == 7 && st.st_gid == 8 && st.st_mtime == 1200000000,
             "stat shows mode %o uid %u gid %u mtime %lld", st.st_mode & 07777, st.st_uid, st.st_gid,
             (long long)st.st_mtime);
    int fd = open(P(&f, "kept"), O_WRONLY | O_TRUNC);
    TT_CHECK(fd >= 0 && write(fd, "new", 3) == 3 && close(fd) == 0, "rewrite: %s", strerror(errno));
    mount_attrs b = attrs_of(&f, "kept");
    TT_CHECK(b.mode == a.mode && b.uid == 7 && b.gid == 8, "the rewrite lost attributes: mode %o uid %u gid %u",
             b.mode, b.uid, b.gid);
    TT_CHECK(b.mtime.sec > 1200000000, "the rewrite kept the old mtime");
    check_backend(&f, "kept", "new", 3);
    fx_done(&f);
}

/* default_permissions: the kernel lets only the owner chmod and only root chown. */
TT_TEST(test_mount_non_owner_chmod_and_chown_fail_with_eperm)
{
    if (geteuid() != 0)
        TT_SKIP("needs root to act as another user");
    fixture f;
    fx_prepare(&f);
    f.cfg.allow_other = true;
    TT_CHECK(chmod(f.dir, 0755) == 0, "chmod %s: %s", f.dir, strerror(errno)); /* others may enter */
    fx_mount(&f);
    TT_CHECK(spit(P(&f, "mine"), "x", 1) == 0, "create: %s", strerror(errno));
    mem_backend_reset_counts(f.mem);
    pid_t pid = fork();
    TT_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(10);
        int rc = 0;
        if (chmod(P(&f, "mine"), 0777) != -1 || errno != EPERM)
            rc |= 1;
        if (chown(P(&f, "mine"), 65534, 65534) != -1 || errno != EPERM)
            rc |= 2;
        _exit(rc);
    }
    int st = 0;
    TT_CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 10, "the child could not become nobody");
    TT_CHECK(WIFEXITED(st) && !(WEXITSTATUS(st) & 1), "chmod by a non-owner did not fail with EPERM");
    TT_CHECK(WIFEXITED(st) && !(WEXITSTATUS(st) & 2), "chown by a non-root user did not fail with EPERM");
    TT_CHECK(mem_backend_counts(f.mem).copy == 0, "a refused call reached the store");
    TT_CHECK(attrs_of(&f, "mine").mode == (S_IFREG | 0644), "mode changed");
    fx_done(&f);
}

TT_MAIN()
