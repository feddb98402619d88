/*
 * Everyday tools writing into the mount, end to end: `rsync -a`, `tar x`, `cp -a` and `git clone`
 * of a local repository, each into a real FUSE mount of a real shoald over the real local S3
 * server (the daemon tests' harness, tests/node/test_daemon_harness.h). Each case checks the
 * tool's exit status, every file's bytes, and the attributes the tool preserves (permission bits
 * and modification times, of files and directories), then prints what the run cost at the S3
 * server, counted there (docs/semantics.md lists those counts).
 *
 * The source is a small tree made by the test in a local directory: nested directories with
 * their own modes, an executable, a private file, an empty file, a file of several blocks, and
 * times in the past with nanoseconds.
 *
 * Cases skip (exit 77) when /dev/fuse is missing, mounting is not permitted, or the tool is not
 * installed (scripts/deps installs rsync and git).
 */
#include "test_daemon_harness.h"

#include "shoal_mix.h"
#include "tt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_mnt[300];
static char g_work[512];

static void detach_mount(void)
{
    if (g_mnt[0] && umount2(g_mnt, MNT_DETACH) != 0 && errno == EPERM) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "fusermount3 -u -z '%s' 2>/dev/null", g_mnt);
        if (system(cmd) != 0)
            fprintf(stderr, "could not detach %s\n", g_mnt);
    }
}

static void require_tool(const char *tool)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", tool);
    if (system(cmd) != 0)
        TT_SKIP("%s is not installed (scripts/deps installs it)", tool);
}

/* One node with its mount at <node dir>/mnt and a working directory beside it. */
static td_cluster *one_mounted_node(void)
{
    if (access("/dev/fuse", R_OK | W_OK) != 0)
        TT_SKIP("/dev/fuse is missing or not accessible here (%s)", strerror(errno));
    td_cluster *c = td_cluster_new(1, "1M");
    snprintf(g_mnt, sizeof g_mnt, "%s/mnt", c->nodes[0].dir);
    snprintf(g_work, sizeof g_work, "%s/work", c->nodes[0].dir);
    TT_CHECK(mkdir(g_mnt, 0755) == 0 && mkdir(g_work, 0755) == 0, "mkdir: %s", strerror(errno));
    atexit(detach_mount);
    const char *flags[] = {"--mount", g_mnt, NULL};
    td_node_start(c, 0, flags);
    td_wait_cluster(c, 20000);
    for (int i = 0; i < 2000; i++) { /* the daemon mounts after it joined */
        struct stat a, b;
        if (stat(g_mnt, &a) == 0 && stat(c->nodes[0].dir, &b) == 0 && a.st_dev != b.st_dev)
            return c;
        td_sleep_ms(10);
    }
    TT_SKIP("the daemon did not mount %s (mounting may not be permitted here)", g_mnt);
}

/* <mount>/rel, in one of a few rotating buffers. */
static const char *in_mount(const char *rel)
{
    static char buf[4][700];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", g_mnt, rel);
    return b;
}

/* Runs a shell command; its exit status (output kept in <work>/out, printed on failure). */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[4096], full[4096 + 600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "(%s) >%s/out 2>&1", cmd, g_work);
    int st = system(full);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    if (rc != 0) {
        char out[600];
        snprintf(out, sizeof out, "%s/out", g_work);
        fprintf(stderr, "command failed (exit %d): %s\n", rc, cmd);
        FILE *f = fopen(out, "r");
        char line[512];
        for (int n = 0; f && n < 40 && fgets(line, sizeof line, f); n++)
            fprintf(stderr, "  | %s", line);
        if (f)
            fclose(f);
    }
    return rc;
}

static void write_bytes(const char *path, size_t len, unsigned seed, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    TT_CHECK(fd >= 0, "create %s: %s", path, strerror(errno));
    uint64_t x = seed;
    char buf[4096];
    for (size_t done = 0; done < len;) {
        size_t n = len - done < sizeof buf ? len - done : sizeof buf;
        shoal_mix_fill(buf, n, &x);
        TT_CHECK(write(fd, buf, n) == (ssize_t)n, "write %s: %s", path, strerror(errno));
        done += n;
    }
    TT_CHECK(close(fd) == 0 && chmod(path, mode) == 0, "finish %s: %s", path, strerror(errno));
}

static void set_mtime(const char *path, time_t sec, long nsec)
{
    struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
    TT_CHECK(utimensat(AT_FDCWD, path, ts, 0) == 0, "utimensat %s: %s", path, strerror(errno));
}

/* The source tree under <work>/src. Directory times are set last (files change them). */
static void make_source(char *src, size_t cap)
{
    snprintf(src, cap, "%s/src", g_work);
    char p[700];
    TT_CHECK(mkdir(src, 0755) == 0, "mkdir %s: %s", src, strerror(errno));
    snprintf(p, sizeof p, "%s/data", src);
    TT_CHECK(mkdir(p, 0750) == 0, "mkdir: %s", strerror(errno));
    snprintf(p, sizeof p, "%s/data/private", src);
    TT_CHECK(mkdir(p, 0700) == 0, "mkdir: %s", strerror(errno));
    static const struct {
        const char *name;
        size_t len;
        mode_t mode;
    } files[] = {
        {"README.txt", 1200, 0644},      {"run.sh", 300, 0755},          {"empty", 0, 0644},
        {"data/shard-0.bin", 2500000, 0644}, {"data/shard-1.bin", 70000, 0640}, {"data/private/key", 64, 0600},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", src, files[i].name);
        write_bytes(p, files[i].len, (unsigned)i + 1, files[i].mode);
        set_mtime(p, 1600000000 + (time_t)i * 1000, 123456789);
    }
    snprintf(p, sizeof p, "%s/data/private", src);
    set_mtime(p, 1500000000, 0);
    snprintf(p, sizeof p, "%s/data", src);
    set_mtime(p, 1500001000, 0);
}

static bool same_bytes(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    char x[65536], y[65536];
    while (same) {
        size_t na = fread(x, 1, sizeof x, fa), nb = fread(y, 1, sizeof y, fb);
        same = na == nb && memcmp(x, y, na) == 0;
        if (na == 0 || !same)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

/* Every entry under src exists under dst with the same type, bytes, permission bits and mtime
 * (seconds; nanoseconds too when `ns`); `skip` names a top-level entry to leave out (NULL: none).
 * Returns the number of entries compared. */
static int compare_tree(const char *src, const char *dst, bool ns, const char *skip)
{
    DIR *d = opendir(src);
    TT_CHECK(d, "opendir %s: %s", src, strerror(errno));
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || (skip && !strcmp(e->d_name, skip)))
            continue;
        char s[1024], t[1024];
        snprintf(s, sizeof s, "%s/%s", src, e->d_name);
        snprintf(t, sizeof t, "%s/%s", dst, e->d_name);
        struct stat a, b;
        TT_CHECK(lstat(s, &a) == 0, "lstat %s: %s", s, strerror(errno));
        TT_CHECK(lstat(t, &b) == 0, "%s is missing from the copy: %s", t, strerror(errno));
        TT_CHECK((a.st_mode & S_IFMT) == (b.st_mode & S_IFMT), "%s: type differs", t);
        TT_CHECK((a.st_mode & 07777) == (b.st_mode & 07777), "%s: mode %o, want %o", t, b.st_mode & 07777,
                 a.st_mode & 07777);
        if (S_ISDIR(a.st_mode))
            n += compare_tree(s, t, ns, NULL);
        else
            TT_CHECK(a.st_size == b.st_size && same_bytes(s, t), "%s: bytes differ", t);
        TT_CHECK(a.st_mtim.tv_sec == b.st_mtim.tv_sec && (!ns || a.st_mtim.tv_nsec == b.st_mtim.tv_nsec),
                 "%s: mtime %lld.%09ld, want %lld.%09ld", t, (long long)b.st_mtim.tv_sec, b.st_mtim.tv_nsec,
                 (long long)a.st_mtim.tv_sec, a.st_mtim.tv_nsec);
        n++;
    }
    closedir(d);
    return n;
}

/* What the run cost at the S3 server since the last reset, as one line: `entries` is what the
 * tool wrote (the source tree: 2 directories and 6 files under its top). */
static void note_requests(td_cluster *c, const char *what, int entries)
{
    tt_note("%s (%d entries): %ld PUT (copies included), %ld POST, %ld GET, %ld HEAD, %ld LIST, %ld DELETE", what,
            entries, tt_s3rver_stat(&c->s3, "puts"), tt_s3rver_stat(&c->s3, "posts"),
            tt_s3rver_stat(&c->s3, "gets"), tt_s3rver_stat(&c->s3, "heads"), tt_s3rver_stat(&c->s3, "lists"),
            tt_s3rver_stat(&c->s3, "deletes"));
}

static void finish(td_cluster *c)
{
    td_node_signal(c, 0, SIGTERM);
    int st = td_node_wait(c, 0, 60000);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "shoald did not stop cleanly (status %d)", st);
    g_mnt[0] = '\0';
}

TT_TEST(test_mount_tools_rsync_archive_copies_bytes_modes_and_times)
{
    require_tool("rsync");
    td_cluster *c = one_mounted_node();
    char src[600];
    make_source(src, sizeof src);
    tt_s3rver_stats_reset(&c->s3);
    TT_CHECK(run("rsync -a '%s/' '%s/rsync/'", src, g_mnt) == 0, "rsync -a into the mount failed");
    note_requests(c, "rsync -a", 8);
    compare_tree(src, in_mount("rsync"), true, NULL);
    /* A second run finds nothing to do: sizes and times match. */
    tt_s3rver_stats_reset(&c->s3);
    TT_CHECK(run("rsync -a --itemize-changes '%s/' '%s/rsync/' && test ! -s %s/out", src, g_mnt, g_work) == 0,
             "a second rsync -a transferred again");
    note_requests(c, "rsync -a again, nothing changed", 8);
    finish(c);
}

TT_TEST(test_mount_tools_tar_extract_keeps_bytes_modes_and_times)
{
    td_cluster *c = one_mounted_node();
    char src[600];
    make_source(src, sizeof src);
    TT_CHECK(run("tar -C '%s' -cf '%s/src.tar' .", src, g_work) == 0, "tar c");
    TT_CHECK(mkdir(in_mount("tarx"), 0755) == 0, "mkdir: %s", strerror(errno));
    tt_s3rver_stats_reset(&c->s3);
    TT_CHECK(run("tar -C '%s/tarx' -xpf '%s/src.tar'", g_mnt, g_work) == 0, "tar x into the mount failed");
    note_requests(c, "tar x", 8);
    compare_tree(src, in_mount("tarx"), false, NULL);
    finish(c);
}

TT_TEST(test_mount_tools_cp_archive_keeps_bytes_modes_and_times)
{
    td_cluster *c = one_mounted_node();
    char src[600];
    make_source(src, sizeof src);
    tt_s3rver_stats_reset(&c->s3);
    TT_CHECK(run("cp -a '%s' '%s/cpa'", src, g_mnt) == 0, "cp -a into the mount failed");
    note_requests(c, "cp -a", 8);
    compare_tree(src, in_mount("cpa"), true, NULL);
    finish(c);
}

TT_TEST(test_mount_tools_git_clone_of_a_local_repository_checks_out_and_verifies)
{
    require_tool("git");
    td_cluster *c = one_mounted_node();
    char src[600];
    make_source(src, sizeof src);
    const char *git = "git -c safe.directory='*' -c user.name=t -c user.email=t@example.com";
    TT_CHECK(run("cd '%s' && %s init -q && %s add -A && %s commit -qm first", src, git, git, git) == 0,
             "making the source repository");
    tt_s3rver_stats_reset(&c->s3);
    TT_CHECK(run("%s clone -q '%s' '%s/clone'", git, src, g_mnt) == 0, "git clone into the mount failed");
    note_requests(c, "git clone", 8);
    const char *dst = in_mount("clone");
    TT_CHECK(run("%s -C '%s' fsck --full --strict", git, dst) == 0, "git fsck of the clone failed");
    TT_CHECK(run("test -z \"$(%s -C '%s' status --porcelain)\"", git, dst) == 0, "the clone's work tree differs");
    TT_CHECK(run("test \"$(%s -C '%s' rev-parse HEAD)\" = \"$(%s -C '%s' rev-parse HEAD)\"", git, dst, git, src) == 0,
             "the clone's HEAD differs");
    static const char *names[] = {"README.txt", "run.sh", "empty", "data/shard-0.bin", "data/shard-1.bin",
                                  "data/private/key"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char a[1024], b[1024];
        snprintf(a, sizeof a, "%s/%s", src, names[i]);
        snprintf(b, sizeof b, "%s/%s", dst, names[i]);
        TT_CHECK(same_bytes(a, b), "%s: bytes differ", b);
    }
    struct stat st;
    TT_CHECK(stat(in_mount("clone/run.sh"), &st) == 0 && (st.st_mode & 0111),
             "git checked run.sh out without its executable bit");
    finish(c);
}

TT_MAIN()
