/*
 * Write-back (--upload-delay, mount_config.upload_delay) and the PUT count of ftruncate, on REAL
 * FUSE mounts over tests/mount/mem_backend.c (the mount's backend table in memory: a stand-in
 * for the daemon, not a mock of S3; the daemon's own end-to-end tests use the real S3 server).
 * Its call counters let a test say "no PUT yet", "one PUT, no COPY"; its injected PUT failures
 * are what no real store does on demand.
 *
 * The crash test mounts from a child process and kills it with SIGKILL while an upload is
 * pending, then mounts the same staging directory again in the test process.
 *
 * A test skips (exit 77) only when /dev/fuse is missing or mounting is not permitted here.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mem_backend.h"
#include "mount.h"
#include "shoal_error.h"
#include "tt.h"

#define DELAY 0.3 /* seconds: short enough for fast tests, long enough to act before it */

typedef struct wb {
    char *dir;
    char mnt[512], stage[512];
    mem_backend *mem;
    mount_config cfg;
    mount_view *m;
    pid_t child; /* a mounting child process (the crash test) */
} wb;

static wb *g_live;

static void take_down(void)
{
    if (!g_live)
        return;
    if (g_live->child > 0) {
        kill(g_live->child, SIGKILL);
        waitpid(g_live->child, NULL, 0);
        umount2(g_live->mnt, MNT_DETACH);
    }
    mount_delete(g_live->m);
    g_live->m = NULL;
}

/* A temporary directory (mount point, staging directory), an empty store and a configuration
 * with the write-back delay `delay`; not mounted yet. */
static void wb_prepare(wb *w, double delay)
{
    if (access("/dev/fuse", R_OK | W_OK) != 0)
        TT_SKIP("/dev/fuse is missing or not accessible here (%s)", strerror(errno));
    memset(w, 0, sizeof *w);
    w->dir = tt_tmpdir("mountwb");
    snprintf(w->mnt, sizeof w->mnt, "%s/mnt", w->dir);
    snprintf(w->stage, sizeof w->stage, "%s/staging", w->dir);
    TT_CHECK(mkdir(w->mnt, 0755) == 0, "mkdir %s: %s", w->mnt, strerror(errno));
    w->mem = mem_backend_new();
    mount_config_defaults(&w->cfg);
    w->cfg.mountpoint = w->mnt;
    w->cfg.staging_dir = w->stage;
    w->cfg.upload_delay = delay;
    g_live = w;
    static bool armed;
    if (!armed)
        atexit(take_down);
    armed = true;
}

static void wb_mount(wb *w)
{
    int rc = mem_backend_mount(w->mem, &w->cfg, &w->m);
    TT_CHECK(rc >= 0, "mount_new: %s", shoal_error_message());
    if (rc > 0)
        TT_SKIP("mounting is not permitted here: %s", shoal_error_message());
}

static void wb_up(wb *w, double delay)
{
    wb_prepare(w, delay);
    wb_mount(w);
}

static void wb_done(wb *w)
{
    mount_delete(w->m);
    w->m = NULL;
    g_live = NULL;
    mem_backend_delete(w->mem);
    tt_rmtree(w->dir);
    free(w->dir);
}

static const char *at(const wb *w, const char *name)
{
    static __thread char buf[2][1024];
    static __thread int next;
    char *b = buf[next++ % 2];
    snprintf(b, sizeof buf[0], "%s/%s", w->mnt, name);
    return b;
}

/* Creates `name` through the mount with `data` and closes it; close's result. */
static int put_file(const wb *w, const char *name, const char *data)
{
    int fd = open(at(w, name), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    TT_CHECK(fd >= 0, "create %s: %s", name, strerror(errno));
    TT_CHECK(write(fd, data, strlen(data)) == (ssize_t)strlen(data), "write: %s", strerror(errno));
    return close(fd);
}

static unsigned puts_of(const wb *w)
{
    return mem_backend_counts(w->mem).put;
}

/* Waits up to `ms` for the store to hold `key` with exactly `want`. */
static bool store_has(const wb *w, const char *key, const char *want, int ms)
{
    for (int i = 0; i <= ms / 10; i++) {
        size_t len;
        char *got = mem_backend_get(w->mem, key, &len);
        bool same = got && len == strlen(want) && memcmp(got, want, len) == 0;
        free(got);
        if (same)
            return true;
        usleep(10 * 1000);
    }
    return false;
}

static void check_reads(const wb *w, const char *name, const char *want)
{
    char buf[256];
    int fd = open(at(w, name), O_RDONLY);
    TT_CHECK(fd >= 0, "open %s: %s", name, strerror(errno));
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    TT_CHECK(n == (ssize_t)strlen(want) && memcmp(buf, want, (size_t)n) == 0,
             "%s reads %zd bytes, want '%s'", name, n, want);
}

/* The number of write-back records (*.key) in the staging directory. */
static int records(const wb *w)
{
    int n = 0;
    DIR *d = opendir(w->stage);
    TT_CHECK(d, "opendir %s: %s", w->stage, strerror(errno));
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        n += len > 4 && strcmp(e->d_name + len - 4, ".key") == 0;
    }
    closedir(d);
    return n;
}

static bool listed(const wb *w, const char *name)
{
    bool found = false;
    DIR *d = opendir(w->mnt);
    TT_CHECK(d, "opendir: %s", strerror(errno));
    for (struct dirent *e; (e = readdir(d));)
        found |= strcmp(e->d_name, name) == 0;
    closedir(d);
    return found;
}

/* ---- ftruncate: one PUT at close, with and without a delay -------------------------------- */

/* Each way a program cuts a file it holds open for writing; the object is uploaded once, at
 * close, never as an extra empty PUT first. */
TT_TEST(test_mount_writeback_ftruncate_of_an_open_file_costs_no_extra_put)
{
    wb w;
    wb_up(&w, 0);
    /* A new file cut to 0 right after creation (Python's truncate(), numpy's tofile). */
    int fd = open(at(&w, "a"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    TT_CHECK(fd >= 0 && ftruncate(fd, 0) == 0, "create + ftruncate: %s", strerror(errno));
    TT_CHECK(write(fd, "abc", 3) == 3, "write: %s", strerror(errno));
    TT_CHECK(puts_of(&w) == 0, "%u PUTs before close", puts_of(&w));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    TT_CHECK(puts_of(&w) == 1 && store_has(&w, "a", "abc", 0), "%u PUTs, want 1", puts_of(&w));
    /* An existing object opened read-write, grown by ftruncate, then written. */
    fd = open(at(&w, "a"), O_RDWR);
    TT_CHECK(fd >= 0 && ftruncate(fd, 5) == 0 && pwrite(fd, "Z", 1, 4) == 1, "grow: %s",
             strerror(errno));
    TT_CHECK(puts_of(&w) == 1, "%u PUTs before close", puts_of(&w));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    TT_CHECK(puts_of(&w) == 2, "%u PUTs, want 2", puts_of(&w));
    size_t len;
    char *got = mem_backend_get(w.mem, "a", &len);
    TT_CHECK(got && len == 5 && memcmp(got, "abc\0Z", 5) == 0, "grown object wrong (%zu bytes)", len);
    free(got);
    /* open(O_TRUNC) of the existing object, then ftruncate to 0 again before writing. */
    fd = open(at(&w, "a"), O_WRONLY | O_TRUNC);
    TT_CHECK(fd >= 0 && ftruncate(fd, 0) == 0 && write(fd, "q", 1) == 1, "trunc: %s",
             strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    TT_CHECK(puts_of(&w) == 3 && store_has(&w, "a", "q", 0), "%u PUTs, want 3", puts_of(&w));
    /* truncate(path) while another descriptor writes: cuts the stage, the close uploads. */
    fd = open(at(&w, "a"), O_WRONLY | O_APPEND);
    TT_CHECK(fd >= 0 && write(fd, "rs", 2) == 2, "append: %s", strerror(errno));
    TT_CHECK(truncate(at(&w, "a"), 2) == 0, "truncate: %s", strerror(errno));
    TT_CHECK(puts_of(&w) == 3, "%u PUTs before close", puts_of(&w));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    TT_CHECK(puts_of(&w) == 4 && store_has(&w, "a", "qr", 0), "%u PUTs, want 4", puts_of(&w));
    TT_CHECK(mem_backend_counts(w.mem).copy == 0, "a COPY");
    wb_done(&w);
}

/* ---- the delay ------------------------------------------------------------------------------ */

TT_TEST(test_mount_writeback_close_returns_durable_and_uploads_after_the_delay)
{
    wb w;
    wb_up(&w, DELAY);
    TT_CHECK(put_file(&w, "f", "hello") == 0, "close: %s", strerror(errno));
    TT_CHECK(puts_of(&w) == 0, "close uploaded at once (%u PUTs)", puts_of(&w));
    TT_CHECK(records(&w) == 1, "%d records in the staging directory, want 1", records(&w));
    /* This node's mount shows the pending file: stat, read, ls. */
    struct stat st;
    TT_CHECK(stat(at(&w, "f"), &st) == 0 && st.st_size == 5, "stat: %s", strerror(errno));
    check_reads(&w, "f", "hello");
    TT_CHECK(listed(&w, "f"), "ls does not show the pending file");
    mount_writeback_stats s;
    mount_writeback_stats_get(w.m, &s);
    TT_CHECK(s.pending == 1 && s.uploaded == 0, "pending=%llu uploaded=%llu",
             (unsigned long long)s.pending, (unsigned long long)s.uploaded);
    TT_CHECK(store_has(&w, "f", "hello", 3000), "never uploaded");
    TT_CHECK(puts_of(&w) == 1, "%u PUTs, want 1", puts_of(&w));
    /* The upload ends by removing the record, then counting the file as no longer pending. */
    for (int i = 0; i < 100; i++) {
        mount_writeback_stats_get(w.m, &s);
        if (records(&w) == 0 && s.pending == 0)
            break;
        usleep(10 * 1000);
    }
    TT_CHECK(records(&w) == 0, "the record outlived the upload");
    mount_writeback_stats_get(w.m, &s);
    TT_CHECK(s.pending == 0 && s.uploaded == 1, "pending=%llu uploaded=%llu",
             (unsigned long long)s.pending, (unsigned long long)s.uploaded);
    check_reads(&w, "f", "hello");
    wb_done(&w);
}

/* torch.save(obj, tmp); os.replace(tmp, final): the temp file is closed before the rename. With
 * the delay the rename only retargets the pending upload: one PUT of the final key, no COPY,
 * nothing ever under the temp key. */
TT_TEST(test_mount_writeback_close_then_rename_is_one_put_and_no_copy)
{
    wb w;
    wb_prepare(&w, DELAY);
    mem_backend_set_str(w.mem, "ckpt.pt", "previous checkpoint");
    wb_mount(&w);
    TT_CHECK(put_file(&w, "ckpt.pt.tmp", "new checkpoint") == 0, "close: %s", strerror(errno));
    TT_CHECK(rename(at(&w, "ckpt.pt.tmp"), at(&w, "ckpt.pt")) == 0, "rename: %s", strerror(errno));
    check_reads(&w, "ckpt.pt", "new checkpoint");
    TT_CHECK(access(at(&w, "ckpt.pt.tmp"), F_OK) != 0 && errno == ENOENT, "temp name still there");
    TT_CHECK(store_has(&w, "ckpt.pt", "new checkpoint", 3000), "never uploaded");
    mem_counts c = mem_backend_counts(w.mem);
    TT_CHECK(c.put == 1 && c.copy == 0, "PUT %u COPY %u, want 1 and 0", c.put, c.copy);
    TT_CHECK(mem_backend_get(w.mem, "ckpt.pt.tmp", &(size_t){0}) == NULL, "the temp key was uploaded");
    TT_CHECK(records(&w) == 0 || (usleep(200 * 1000), records(&w) == 0), "a record is left");
    wb_done(&w);
}

/* A rename before the upload survives a crash too: the record names the new key. */
static char *record_text(const wb *w)
{
    DIR *d = opendir(w->stage);
    char *text = NULL;
    TT_CHECK(d, "opendir: %s", strerror(errno));
    for (struct dirent *e; (e = readdir(d)) && !text;) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".key") == 0) {
            char p[1200];
            snprintf(p, sizeof p, "%s/%s", w->stage, e->d_name);
            FILE *f = fopen(p, "r");
            text = calloc(1, 4096);
            if (f) {
                TT_CHECK(fread(text, 1, 4095, f) > 0, "empty record");
                fclose(f);
            }
        }
    }
    closedir(d);
    return text;
}

TT_TEST(test_mount_writeback_unlink_and_rename_before_upload)
{
    wb w;
    wb_up(&w, 60); /* nothing is uploaded during this test */
    TT_CHECK(put_file(&w, "gone", "x") == 0 && put_file(&w, "moved", "y") == 0, "close: %s",
             strerror(errno));
    TT_CHECK(records(&w) == 2, "%d records, want 2", records(&w));
    TT_CHECK(unlink(at(&w, "gone")) == 0, "unlink: %s", strerror(errno));
    TT_CHECK(records(&w) == 1, "unlink left its record (%d records)", records(&w));
    TT_CHECK(rename(at(&w, "moved"), at(&w, "there")) == 0, "rename: %s", strerror(errno));
    char *rec = record_text(&w);
    TT_CHECK(rec && strstr(rec, "\nthere") && !strstr(rec, "moved"), "record: %s", rec);
    free(rec);
    mount_writeback_stats s;
    mount_writeback_stats_get(w.m, &s);
    TT_CHECK(s.pending == 1, "pending=%llu, want 1", (unsigned long long)s.pending);
    mem_counts c = mem_backend_counts(w.mem);
    TT_CHECK(c.put == 0 && c.copy == 0 && c.remove == 0, "PUT %u COPY %u DELETE %u, want none",
             c.put, c.copy, c.remove);
    /* Stopping the mount tries the pending upload once: "there" lands, "gone" never. */
    mount_delete(w.m);
    w.m = NULL;
    TT_CHECK(store_has(&w, "there", "y", 0), "the pending upload was not made at stop");
    TT_CHECK(mem_backend_count(w.mem) == 1, "%zu objects, want 1", mem_backend_count(w.mem));
    TT_CHECK(records(&w) == 0, "records left after a successful stop");
    wb_done(&w);
}

/* A new open for writing holds the pending upload back until it is closed again. */
TT_TEST(test_mount_writeback_reopen_for_writing_holds_the_upload)
{
    wb w;
    wb_up(&w, DELAY);
    TT_CHECK(put_file(&w, "log", "one") == 0, "close: %s", strerror(errno));
    int fd = open(at(&w, "log"), O_WRONLY | O_APPEND);
    TT_CHECK(fd >= 0, "reopen: %s", strerror(errno));
    usleep((useconds_t)(DELAY * 3 * 1e6));
    TT_CHECK(puts_of(&w) == 0, "uploaded while open for writing (%u PUTs)", puts_of(&w));
    TT_CHECK(write(fd, "two", 3) == 3 && close(fd) == 0, "append: %s", strerror(errno));
    TT_CHECK(store_has(&w, "log", "onetwo", 3000), "never uploaded");
    TT_CHECK(puts_of(&w) == 1, "%u PUTs, want 1", puts_of(&w));
    wb_done(&w);
}

/* fsync uploads at once and reports the upload's error, with or without a delay. */
TT_TEST(test_mount_writeback_fsync_uploads_at_once_with_its_error)
{
    wb w;
    wb_up(&w, 60);
    int fd = open(at(&w, "s"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    TT_CHECK(fd >= 0 && write(fd, "sync", 4) == 4, "write: %s", strerror(errno));
    mem_backend_fail_puts(w.mem, 1, -EIO);
    errno = 0;
    TT_CHECK(fsync(fd) == -1 && errno == EIO, "fsync with a failing store: rc errno %d", errno);
    TT_CHECK(fsync(fd) == 0, "second fsync: %s", strerror(errno));
    TT_CHECK(store_has(&w, "s", "sync", 0), "fsync did not upload");
    TT_CHECK(close(fd) == 0 && puts_of(&w) == 2, "close: %s, %u PUTs", strerror(errno), puts_of(&w));
    TT_CHECK(records(&w) == 0, "a clean file left a record");
    /* fsync of a closed, pending file's new descriptor uploads it now too. */
    TT_CHECK(put_file(&w, "p", "pend") == 0 && records(&w) == 1, "close with a delay");
    fd = open(at(&w, "p"), O_WRONLY | O_APPEND);
    TT_CHECK(fd >= 0 && fsync(fd) == 0, "fsync: %s", strerror(errno));
    TT_CHECK(store_has(&w, "p", "pend", 0) && records(&w) == 0, "fsync did not settle the upload");
    TT_CHECK(close(fd) == 0 && puts_of(&w) == 3, "%u PUTs, want 3", puts_of(&w));
    wb_done(&w);
}

/* A failed delayed upload is retried with backoff, counted, never dropped; the staged file and
 * its record stay until the store has the bytes. */
TT_TEST(test_mount_writeback_failed_upload_is_retried_until_it_lands)
{
    wb w;
    wb_up(&w, 0.05);
    mem_backend_fail_puts(w.mem, 3, -EIO);
    TT_CHECK(put_file(&w, "r", "retry me") == 0, "close must not see the store: %s",
             strerror(errno));
    mount_writeback_stats s = {0};
    for (int i = 0; i < 300 && s.retries < 1; i++) {
        usleep(10 * 1000);
        mount_writeback_stats_get(w.m, &s);
    }
    TT_CHECK(s.retries >= 1 && records(&w) == 1, "after a failure: retries %llu, %d records",
             (unsigned long long)s.retries, records(&w));
    check_reads(&w, "r", "retry me"); /* still shown from the stage */
    TT_CHECK(store_has(&w, "r", "retry me", 5000), "never uploaded after the failures");
    mount_writeback_stats_get(w.m, &s);
    TT_CHECK(s.retries == 3 && puts_of(&w) == 4, "retries %llu PUTs %u, want 3 and 4",
             (unsigned long long)s.retries, puts_of(&w));
    wb_done(&w);
}

/* ---- crash ------------------------------------------------------------------------------- */

/* A daemon killed with SIGKILL while an upload is pending: the next mount of the same staging
 * directory uploads it with the right bytes; a file that was still open for writing at the crash
 * (never closed, so never promised) leaves nothing behind. */
TT_TEST(test_mount_writeback_pending_upload_survives_kill_9)
{
    wb w;
    wb_prepare(&w, 60);
    int ready[2];
    TT_CHECK(pipe(ready) == 0, "pipe: %s", strerror(errno));
    w.child = fork();
    TT_CHECK(w.child >= 0, "fork: %s", strerror(errno));
    if (w.child == 0) { /* the daemon that crashes: mounts, says so, waits for SIGKILL */
        mount_view *m;
        char ok = mem_backend_mount(w.mem, &w.cfg, &m) == 0 ? 'y' : 'n';
        _exit(write(ready[1], &ok, 1) == 1 ? (pause(), 0) : 1);
    }
    close(ready[1]);
    char ok = 'n';
    TT_CHECK(read(ready[0], &ok, 1) == 1, "the mounting child said nothing");
    close(ready[0]);
    if (ok != 'y')
        TT_SKIP("mounting is not permitted here (the child could not mount)");
    char *big = malloc(3 << 20);
    for (size_t i = 0; i < (3u << 20); i++)
        big[i] = (char)(i * 7 + i / 4096);
    int fd = open(at(&w, "ckpt.bin"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    TT_CHECK(fd >= 0 && write(fd, big, 3 << 20) == 3 << 20, "write: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    /* An attribute changed after the close rewrites the record: it survives the crash too. */
    TT_CHECK(chmod(at(&w, "ckpt.bin"), 0604) == 0, "chmod: %s", strerror(errno));
    int open_fd = open(at(&w, "half"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    TT_CHECK(open_fd >= 0 && write(open_fd, "partial", 7) == 7, "write: %s", strerror(errno));
    TT_CHECK(records(&w) == 1, "%d records before the crash, want 1", records(&w));
    kill(w.child, SIGKILL);
    waitpid(w.child, NULL, 0);
    w.child = 0;
    close(open_fd);
    /* The child's store died with it: the test's own (empty) store stands for S3 after the
     * restart. */
    wb_mount(&w);
    mount_writeback_stats s;
    mount_writeback_stats_get(w.m, &s);
    TT_CHECK(s.recovered == 1, "recovered %llu pending uploads, want 1", (unsigned long long)s.recovered);
    bool landed = false;
    for (int i = 0; i < 300 && !landed; i++) {
        size_t len = 0;
        char *got = mem_backend_get(w.mem, "ckpt.bin", &len);
        landed = got && len == (3u << 20) && memcmp(got, big, len) == 0;
        free(got);
        if (!landed)
            usleep(10 * 1000);
    }
    TT_CHECK(landed, "the pending upload did not land with the right bytes after the restart");
    mount_attrs a;
    TT_CHECK(mem_backend_attrs(w.mem, "ckpt.bin", &a) && a.mode == (S_IFREG | 0604),
             "the recovered upload carries mode %o, want %o", a.mode, S_IFREG | 0604);
    TT_CHECK(mem_backend_count(w.mem) == 1, "%zu objects, want 1 (the unclosed file is not one)",
             mem_backend_count(w.mem));
    struct stat st;
    TT_CHECK(stat(at(&w, "ckpt.bin"), &st) == 0 && st.st_size == 3 << 20, "stat after restart");
    /* The upload removes the record, then the staged file when the stage is released. */
    int left = -1;
    for (int i = 0; i < 100 && left != 0; i++) {
        if (i)
            usleep(10 * 1000);
        left = 0;
        DIR *d = opendir(w.stage);
        for (struct dirent *e; d && (e = readdir(d));)
            left += e->d_name[0] != '.';
        if (d)
            closedir(d);
    }
    TT_CHECK(left == 0, "%d files left in the staging directory", left);
    free(big);
    wb_done(&w);
}

/* A record in the first format (key only, no attributes) left by an older version is still
 * taken up and uploaded. */
TT_TEST(test_mount_writeback_first_format_record_is_still_recovered)
{
    wb w;
    wb_prepare(&w, 0.01);
    TT_CHECK(mkdir(w.stage, 0700) == 0, "mkdir %s: %s", w.stage, strerror(errno));
    char file[1100], rec[1200];
    snprintf(file, sizeof file, "%s/stage-OLDFMT", w.stage);
    snprintf(rec, sizeof rec, "%s.key", file);
    FILE *f = fopen(file, "w");
    TT_CHECK(f && fputs("from before", f) >= 0 && fclose(f) == 0, "write %s", file);
    f = fopen(rec, "w");
    TT_CHECK(f && fputs("shoal-stage 1 N\nold/format.txt", f) >= 0 && fclose(f) == 0, "write %s", rec);
    wb_mount(&w);
    TT_CHECK(store_has(&w, "old/format.txt", "from before", 3000), "the first-format record was not uploaded");
    wb_done(&w);
}

TT_MAIN()
