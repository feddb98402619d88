/*
 * The POSIX checklist of issue 5 on REAL FUSE mounts (the kernel, libfuse3, fuse/mount.c), each
 * test mounting a fresh temporary directory from its own process and issuing ordinary system
 * calls to it.
 *
 * The backend is tests/mount/mem_backend.c: the mount's backend table filled in memory. It is
 * not a mock of S3 but a stand-in for the daemon (node/), which other engineers are building and
 * which fills the same table with S3 plus the cluster cache; the daemon gets its own end-to-end
 * tests against the real S3 server. Its call counters let these tests say how many HEAD, LIST,
 * PUT and COPY calls a POSIX operation cost; its one injected fault (failing PUTs) is what no real
 * store does on demand.
 *
 * Which requests a system call sends the daemon is seen from outside: a few tests mount from a
 * child process, freeze it with SIGSTOP, and check which calls still complete (those that sent
 * nothing) and which block.
 *
 * A test skips (exit 77) only when /dev/fuse is missing or mounting is not permitted here, and
 * says which. Every mount is unmounted at the end, and by an atexit handler when a check fails.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "mount_fx.h"
#include "shoal_error.h"
#include "tt.h"

#define FUSE_SUPER_MAGIC 0x65735546

/* ---- key mapping -------------------------------------------------------------------------- */

TT_TEST(test_mount_shows_implicit_and_marker_directories)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "a/b/c", "deep");
    mem_backend_set_str(f.mem, "m/", "");
    mem_backend_set_str(f.mem, "m2/", "");
    mem_backend_set_str(f.mem, "m2/f", "in marker dir");
    fx_mount(&f);
    check_dir(P(&f, "a"));
    check_dir(P(&f, "a/b"));
    check_dir(P(&f, "m"));
    check_content(P(&f, "a/b/c"), "deep", 4);
    check_names(f.mnt, "a|m|m2");
    check_names(P(&f, "a"), "b");
    check_names(P(&f, "m"), "");
    check_names(P(&f, "m2"), "f");
    fx_done(&f);
}

TT_TEST(test_mount_directory_hides_file_of_the_same_name)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "x", "the file");
    mem_backend_set_str(f.mem, "x/y", "inner");
    mem_backend_set_str(f.mem, "z/", "");
    mem_backend_set_str(f.mem, "z", "another file");
    fx_mount(&f);
    check_dir(P(&f, "x")); /* by lookup, before any listing */
    check_names(f.mnt, "x|z");
    check_dir(P(&f, "z")); /* and as the listing described it */
    check_content(P(&f, "x/y"), "inner", 5);
    fx_done(&f);
}

TT_TEST(test_mount_special_names_round_trip)
{
    static const char *keys[] = {"sp ace.txt", "unicode-\xe6\x97\xa5\xe6\x9c\xac-\xc3\xa9.txt",
                                 "cr\rname", "+$%&;=?@[]~", "d with space/inner +x"};
    fixture f;
    fx_prepare(&f);
    for (size_t i = 0; i < 5; i++)
        mem_backend_set_str(f.mem, keys[i], keys[i]);
    fx_mount(&f);
    check_names(f.mnt, "+$%&;=?@[]~|cr\rname|d with space|sp ace.txt|"
                       "unicode-\xe6\x97\xa5\xe6\x9c\xac-\xc3\xa9.txt");
    for (size_t i = 0; i < 5; i++)
        check_content(P(&f, "%s", keys[i]), keys[i], strlen(keys[i]));
    const char *made = "new +$%&;=?@[]~ \xc3\xa9\r.txt";
    TT_CHECK(spit(P(&f, "d with space/%s", made), "w", 1) == 0, "close: %s", strerror(errno));
    char key[256];
    snprintf(key, sizeof key, "d with space/%s", made);
    check_backend(&f, key, "w", 1);
    fx_done(&f);
}

TT_TEST(test_mount_unmappable_keys_are_skipped_not_fatal)
{
    fixture f;
    fx_prepare(&f);
    char longname[300];
    memset(longname, 'L', 256);
    longname[256] = '\0';
    mem_backend_set_str(f.mem, "ok.txt", "fine");
    mem_backend_set_str(f.mem, "bad//x", "empty component");
    mem_backend_set_str(f.mem, "./dot", "dot component");
    mem_backend_set_str(f.mem, "../up", "dotdot component");
    mem_backend_set_str(f.mem, longname, "256-byte component");
    mem_backend_set(f.mem, "nul\0byte", 8, "NUL", 3, 0);
    fx_mount(&f);
    check_names(f.mnt, "bad|ok.txt");
    check_names(P(&f, "bad"), "");
    check_content(P(&f, "ok.txt"), "fine", 4);
    struct stat st;
    check_errno(stat(P(&f, "%s", longname), &st), ENAMETOOLONG, "stat of a 256-byte name");
    fx_done(&f);
}

TT_TEST(test_mount_bucket_prefix_maps_keys_under_it)
{
    fixture f;
    fx_prepare(&f);
    f.cfg.prefix = "data";
    mem_backend_set_str(f.mem, "data/in.txt", "inside");
    mem_backend_set_str(f.mem, "other/out.txt", "outside");
    mem_backend_set_str(f.mem, "database", "sibling, not under data/");
    fx_mount(&f);
    check_names(f.mnt, "in.txt");
    TT_CHECK(spit(P(&f, "new.txt"), "n", 1) == 0, "close: %s", strerror(errno));
    check_backend(&f, "data/new.txt", "n", 1);
    fx_done(&f);
}

/* ---- attributes and reads ----------------------------------------------------------------- */

TT_TEST(test_mount_stat_reports_size_mtime_and_modes)
{
    fixture f;
    fx_prepare(&f);
    char *data = pattern(12345, 1);
    mem_backend_set(f.mem, "dir/file", 8, data, 12345, 1700000000);
    fx_mount(&f);
    struct stat st;
    TT_CHECK(stat(P(&f, "dir/file"), &st) == 0, "stat: %s", strerror(errno));
    TT_CHECK(S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0644, "mode %o", st.st_mode);
    TT_CHECK(st.st_size == 12345, "size %lld", (long long)st.st_size);
    TT_CHECK(st.st_mtime == 1700000000, "mtime %lld", (long long)st.st_mtime);
    TT_CHECK(st.st_uid == getuid() && st.st_gid == getgid(), "owner %u:%u", st.st_uid, st.st_gid);
    TT_CHECK(stat(P(&f, "dir"), &st) == 0 && (st.st_mode & 07777) == 0755, "dir mode %o",
             st.st_mode);
    free(data);
    fx_done(&f);
}

TT_TEST(test_mount_read_pread_and_lseek_return_exact_bytes)
{
    fixture f;
    fx_prepare(&f);
    size_t len = 3 * 1024 * 1024 + 17;
    char *data = pattern(len, 2);
    mem_backend_set(f.mem, "big.bin", 7, data, len, 0);
    fx_mount(&f);
    check_content(P(&f, "big.bin"), data, len);
    int fd = open(P(&f, "big.bin"), O_RDONLY);
    TT_CHECK(fd >= 0, "open: %s", strerror(errno));
    size_t offs[] = {0, 1, 4095, 4096, 1048575, 2097152 + 3, len - 10};
    char buf[100];
    for (size_t i = 0; i < sizeof offs / sizeof *offs; i++) {
        size_t want = len - offs[i] < sizeof buf ? len - offs[i] : sizeof buf;
        ssize_t n = pread(fd, buf, sizeof buf, (off_t)offs[i]);
        TT_CHECK(n == (ssize_t)want && memcmp(buf, data + offs[i], want) == 0,
                 "pread at %zu: %zd bytes, want %zu", offs[i], n, want);
    }
    TT_CHECK(pread(fd, buf, sizeof buf, (off_t)len) == 0, "pread at EOF returns 0");
    TT_CHECK(lseek(fd, 2000007, SEEK_SET) == 2000007, "lseek SEEK_SET");
    TT_CHECK(read(fd, buf, sizeof buf) == sizeof buf && !memcmp(buf, data + 2000007, sizeof buf),
             "read after lseek");
    TT_CHECK(lseek(fd, 0, SEEK_END) == (off_t)len, "lseek SEEK_END gives the size");
    TT_CHECK(lseek(fd, -5, SEEK_CUR) == (off_t)len - 5, "lseek SEEK_CUR");
    TT_CHECK(read(fd, buf, sizeof buf) == 5 && !memcmp(buf, data + len - 5, 5), "last 5 bytes");
    close(fd);
    free(data);
    fx_done(&f);
}

TT_TEST(test_mount_sequential_read_reaches_backend_in_large_requests)
{
    if (geteuid() != 0)
        TT_SKIP("raising the kernel's FUSE read-ahead needs root; reads stay at 128 KiB");
    fixture f;
    fx_prepare(&f);
    size_t len = 8 * 1024 * 1024;
    char *data = pattern(len, 9);
    mem_backend_set(f.mem, "seq", 3, data, len, 0);
    fx_mount(&f);
    check_content(P(&f, "seq"), data, len);
    unsigned reads = mem_backend_counts(f.mem).read;
    TT_CHECK(reads <= 16, "%u backend reads for 8 MiB: requests under 512 KiB on average", reads);
    free(data);
    fx_done(&f);
}

TT_TEST(test_mount_mmap_returns_exact_bytes)
{
    fixture f;
    fx_prepare(&f);
    size_t len = 1024 * 1024 + 333;
    char *data = pattern(len, 3);
    mem_backend_set(f.mem, "mapped", 6, data, len, 0);
    fx_mount(&f);
    int fd = open(P(&f, "mapped"), O_RDONLY);
    TT_CHECK(fd >= 0, "open: %s", strerror(errno));
    char *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    TT_CHECK(map != MAP_FAILED, "mmap: %s", strerror(errno));
    TT_CHECK(memcmp(map, data, len) == 0, "mapped bytes differ");
    munmap(map, len);
    close(fd);
    free(data);
    fx_done(&f);
}

typedef struct reader_arg {
    const char *path;
    const char *want;
    size_t len;
    int ok;
} reader_arg;

static void *reader(void *p)
{
    reader_arg *a = p;
    a->ok = 1;
    for (int round = 0; round < 3; round++) {
        size_t len = 0;
        char *got = slurp(a->path, &len);
        if (!got || len != a->len || memcmp(got, a->want, len) != 0)
            a->ok = 0;
        free(got);
    }
    return NULL;
}

TT_TEST(test_mount_concurrent_readers_get_exact_bytes)
{
    fixture f;
    fx_prepare(&f);
    enum { FILES = 4, THREADS = 8 };
    size_t len = 2 * 1024 * 1024 + 1;
    char *data[FILES];
    for (unsigned i = 0; i < FILES; i++) {
        char key[16];
        snprintf(key, sizeof key, "f%u", i);
        data[i] = pattern(len, 10 + i);
        mem_backend_set(f.mem, key, strlen(key), data[i], len, 0);
    }
    fx_mount(&f);
    pthread_t t[THREADS];
    reader_arg a[THREADS];
    char paths[FILES][600];
    for (unsigned i = 0; i < FILES; i++)
        snprintf(paths[i], sizeof paths[i], "%s/f%u", f.mnt, i);
    for (unsigned i = 0; i < THREADS; i++) {
        a[i] = (reader_arg){paths[i % FILES], data[i % FILES], len, 0};
        pthread_create(&t[i], NULL, reader, &a[i]);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        TT_CHECK(a[i].ok, "reader %u got wrong bytes from %s", i, a[i].path);
    }
    for (unsigned i = 0; i < FILES; i++)
        free(data[i]);
    fx_done(&f);
}

TT_TEST(test_mount_empty_object_reads_as_empty_file)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set(f.mem, "empty", 5, "", 0, 0);
    fx_mount(&f);
    struct stat st;
    TT_CHECK(stat(P(&f, "empty"), &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0,
             "stat: size %lld", (long long)st.st_size);
    check_content(P(&f, "empty"), "", 0);
    fx_done(&f);
}

TT_TEST(test_mount_lists_2500_entries_with_one_listing_and_no_head)
{
    fixture f;
    fx_prepare(&f);
    enum { N = 2500 };
    for (int i = 0; i < N; i++) {
        char key[32], body[32];
        snprintf(key, sizeof key, "big/f%05d", i);
        snprintf(body, sizeof body, "%d", i);
        mem_backend_set_str(f.mem, key, body);
    }
    fx_mount(&f);
    check_dir(P(&f, "big"));
    mem_backend_reset_counts(f.mem);
    DIR *d = opendir(P(&f, "big"));
    TT_CHECK(d, "opendir: %s", strerror(errno));
    static bool seen[N];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int i;
        if (sscanf(e->d_name, "f%05d", &i) == 1 && i >= 0 && i < N && !seen[i]) {
            seen[i] = true;
            n++;
        }
    }
    closedir(d);
    TT_CHECK(n == N, "listed %d distinct entries, want %d", n, N);
    for (int i = 0; i < N; i++) {
        struct stat st;
        char want[32];
        snprintf(want, sizeof want, "%d", i);
        TT_CHECK(stat(P(&f, "big/f%05d", i), &st) == 0 && st.st_size == (off_t)strlen(want),
                 "stat f%05d: size %lld", i, (long long)st.st_size);
    }
    check_content(P(&f, "big/f01234"), "1234", 4); /* open within the TTL: no HEAD either */
    mem_counts c = mem_backend_counts(f.mem);
    TT_CHECK(c.list == 1, "%u listings for one ls, want 1", c.list);
    TT_CHECK(c.head == 0, "%u HEADs after the listing described every entry, want 0", c.head);
    fx_done(&f);
}

/* Prepares `f` with a store holding "hot", `len` pattern bytes, which it returns (to free). */
static char *fx_prepare_hot(fixture *f, size_t len, unsigned seed)
{
    fx_prepare(f);
    char *data = pattern(len, seed);
    mem_backend_set(f->mem, "hot", 3, data, len, 0);
    return data;
}

TT_TEST(test_mount_page_cache_kept_across_opens_while_etag_unchanged)
{
    fixture f;
    size_t len = 256 * 1024;
    char *data = fx_prepare_hot(&f, len, 4);
    fx_mount(&f);
    check_content(P(&f, "hot"), data, len);
    unsigned reads = mem_backend_counts(f.mem).read;
    check_content(P(&f, "hot"), data, len);
    check_content(P(&f, "hot"), data, len);
    TT_CHECK(mem_backend_counts(f.mem).read == reads,
             "re-opening an unchanged file read the backend again (%u reads, then %u)", reads,
             mem_backend_counts(f.mem).read);
    free(data);
    fx_done(&f);
}

/* ---- round trips of a cached open+read+close ---------------------------------------------- */

/* Mounts f->cfg from a child process, the daemon, so the test can freeze it (SIGSTOP) and see
 * which system calls still complete: those that send the daemon no request. Returns its pid. */
static pid_t fx_mount_child(fixture *f)
{
    int ready[2];
    TT_CHECK(pipe(ready) == 0, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    TT_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(ready[0]);
        mount_view *m = mount_new(&f->cfg, &mem_backend_ops, f->mem);
        char ok = m && mount_start(m) == 0 ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(ready[1]);
    fx_live_child = pid;
    snprintf(fx_live_other, sizeof fx_live_other, "%s", f->mnt);
    fx_arm_cleanup();
    char ok = 'n';
    TT_CHECK(read(ready[0], &ok, 1) == 1, "the daemon child said nothing");
    close(ready[0]);
    if (ok != 'y') {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fx_live_child = 0;
        fx_live_other[0] = '\0';
        TT_SKIP("mounting is not permitted here (the child could not mount)");
    }
    return pid;
}

/* Thaws and kills the daemon child, cleans its dead mount and the fixture. */
static void fx_done_child(fixture *f, pid_t pid)
{
    kill(pid, SIGKILL);
    kill(pid, SIGCONT);
    waitpid(pid, NULL, 0);
    fx_live_child = 0;
    TT_CHECK(mount_cleanup_stale(f->mnt) == 0, "cleaning the killed daemon's mount: %s",
             shoal_error_message());
    fx_live_other[0] = '\0';
    mem_backend_delete(f->mem);
    tt_rmtree(f->dir);
    free(f->dir);
}

typedef struct read_job {
    const char *path; /* opened by the job when set */
    int fd;           /* else this descriptor is read and closed */
    const char *want;
    size_t len;
} read_job;

/* Reads the whole file, compares, closes: 0 when every step worked and the bytes are right. Runs
 * in a forked process: only plain returns (a failed check would run the parent's atexit). */
static int read_job_run(const read_job *j)
{
    int fd = j->path ? open(j->path, O_RDONLY) : j->fd;
    if (fd < 0)
        return 2;
    char *buf = malloc(j->len + 1);
    size_t n = 0;
    ssize_t r;
    while (buf && (r = read(fd, buf + n, j->len + 1 - n)) > 0)
        n += (size_t)r;
    int rc = buf && n == j->len && memcmp(buf, j->want, n) == 0 ? 0 : 3;
    free(buf);
    if (close(fd) != 0)
        rc = 4;
    return rc;
}

/* Runs the job in a child process. 0 when it succeeded within `ms` milliseconds, 1 when it
 * failed, -1 when it is still running (blocked): its pid is then in *left. */
static int job_within(const read_job *j, int ms, pid_t *left)
{
    pid_t pid = fork();
    TT_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        _exit(read_job_run(j));
    for (int waited = 0; waited < ms; waited += 10) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
        usleep(10 * 1000);
    }
    *left = pid;
    return -1;
}

TT_TEST(test_mount_read_only_cached_open_read_close_sends_the_daemon_nothing)
{
    fixture f;
    size_t len = 100 * 1000;
    char *data = fx_prepare_hot(&f, len, 11);
    f.cfg.read_only = true;
    pid_t daemon = fx_mount_child(&f);
    check_content(P(&f, "hot"), data, len); /* fills the page cache (reads with no handle) */
    TT_CHECK(kill(daemon, SIGSTOP) == 0, "SIGSTOP: %s", strerror(errno));
    read_job j = {P(&f, "hot"), -1, data, len};
    pid_t left = 0;
    int rc = job_within(&j, 3000, &left);
    kill(daemon, SIGCONT);
    if (left)
        waitpid(left, NULL, 0);
    TT_CHECK(rc == 0, "open+read+close of a cached file with the daemon frozen %s",
             rc < 0 ? "blocked: a request was sent (OPEN, FLUSH or RELEASE)" : "failed");
    free(data);
    fx_done_child(&f, daemon);
}

TT_TEST(test_mount_writable_mount_reader_close_sends_no_flush)
{
    fixture f;
    size_t len = 100 * 1000;
    char *data = fx_prepare_hot(&f, len, 12);
    pid_t daemon = fx_mount_child(&f);
    check_content(P(&f, "hot"), data, len);
    int fd = open(P(&f, "hot"), O_RDONLY);
    TT_CHECK(fd >= 0, "open: %s", strerror(errno));
    TT_CHECK(kill(daemon, SIGSTOP) == 0, "SIGSTOP: %s", strerror(errno));
    /* The child's close of its copy of the descriptor calls flush like any close. */
    read_job reader = {NULL, fd, data, len}, opener = {P(&f, "hot"), -1, data, len};
    pid_t left = 0, left_open = 0;
    int rc = job_within(&reader, 3000, &left);
    /* The contrast that shows the daemon is frozen: an open on a writable mount asks it. */
    int rc_open = rc == 0 ? job_within(&opener, 300, &left_open) : -1;
    kill(daemon, SIGCONT);
    if (left)
        waitpid(left, NULL, 0);
    int st = 0;
    if (left_open)
        waitpid(left_open, &st, 0);
    TT_CHECK(rc == 0, "read+close of an open cached file with the daemon frozen %s",
             rc < 0 ? "blocked: close sent FLUSH" : "failed");
    TT_CHECK(rc_open == -1, "an open completed with the daemon frozen (rc %d): the test proves "
             "nothing", rc_open);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the open blocked by the freeze then failed");
    close(fd);
    free(data);
    fx_done_child(&f, daemon);
}

/* ---- consistency -------------------------------------------------------------------------- */

TT_TEST(test_mount_reopen_after_ttl_sees_new_version_never_a_splice)
{
    fixture f;
    fx_prepare(&f);
    f.cfg.metadata_ttl = 1;
    f.cfg.negative_ttl = 1;
    size_t len = 1024 * 1024, blen = len + 4099; /* the new version is longer */
    char *a = malloc(len), *b = malloc(blen), *buf = malloc(blen);
    memset(a, 'A', len);
    memset(b, 'B', blen);
    mem_backend_set(f.mem, "v", 1, a, len, 0);
    fx_mount(&f);
    int fd = open(P(&f, "v"), O_RDONLY);
    TT_CHECK(fd >= 0, "open: %s", strerror(errno));
    TT_CHECK(pread(fd, buf, len / 2, 0) == (ssize_t)len / 2 && buf[0] == 'A', "first half");
    mem_backend_set(f.mem, "v", 1, b, blen, 0); /* an external overwrite */
    /* Drop the cached pages so the open handle must go to the backend for the rest. */
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ssize_t n = pread(fd, buf, len, 0);
    if (n < 0) {
        TT_CHECK(errno == ESTALE, "old handle: %s, want ESTALE or old bytes", strerror(errno));
    } else {
        for (ssize_t i = 0; i < n; i++)
            TT_CHECK(buf[i] == 'A', "old handle saw byte %zd of the new version: a splice", i);
    }
    close(fd);
    usleep(1200 * 1000);
    check_content(P(&f, "v"), b, blen);
    free(a);
    free(b);
    free(buf);
    fx_done(&f);
}

TT_TEST(test_mount_deleted_object_gives_enoent_after_the_ttl)
{
    fixture f;
    fx_prepare(&f);
    f.cfg.metadata_ttl = 1;
    f.cfg.negative_ttl = 1;
    mem_backend_set_str(f.mem, "doomed", "x");
    fx_mount(&f);
    struct stat st;
    TT_CHECK(stat(P(&f, "doomed"), &st) == 0, "stat before delete: %s", strerror(errno));
    mem_backend_del(f.mem, "doomed"); /* an external delete */
    usleep(1200 * 1000);
    check_errno(stat(P(&f, "doomed"), &st), ENOENT, "stat after external delete and TTL");
    check_errno(open(P(&f, "doomed"), O_RDONLY), ENOENT, "open after external delete and TTL");
    fx_done(&f);
}

/* Reads `fd` from offset 0 to its end into buf (room for cap bytes); the bytes read, with *err
 * the errno that stopped it early (0 at the end of the file). */
static size_t read_to_end(int fd, char *buf, size_t cap, int *err)
{
    size_t n = 0;
    *err = 0;
    while (n < cap) {
        ssize_t r = pread(fd, buf + n, cap - n, (off_t)n);
        if (r < 0) {
            *err = errno;
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    return n;
}

/* A descriptor opened before an external overwrite keeps reading the old version (its cached
 * pages, or ESTALE once the store no longer has it) while an open after the TTL gets the new
 * one: the new version is a new inode, so its pages never replace the old descriptor's. */
static void overwrite_case(bool read_only)
{
    fixture f;
    fx_prepare(&f);
    f.cfg.read_only = read_only;
    f.cfg.metadata_ttl = 1;
    f.cfg.negative_ttl = 1;
    size_t alen = 300 * 1000, blen = alen + 5000; /* the new version is longer */
    char *a = pattern(alen, 21), *b = pattern(blen, 22), *buf = malloc(blen + 1);
    mem_backend_set(f.mem, "v", 1, a, alen, 0);
    fx_mount(&f);
    int fd = open(P(&f, "v"), O_RDONLY);
    TT_CHECK(fd >= 0, "open: %s", strerror(errno));
    TT_CHECK(pread(fd, buf, 4096, 0) == 4096 && memcmp(buf, a, 4096) == 0, "first page");
    mem_backend_set(f.mem, "v", 1, b, blen, 0); /* an external overwrite */
    usleep(1200 * 1000);
    struct stat st;
    TT_CHECK(fstat(fd, &st) == 0 && st.st_size == (off_t)alen,
             "fstat of the old descriptor: size %lld, want the old version's %zu",
             (long long)st.st_size, alen);
    check_content(P(&f, "v"), b, blen); /* close-to-open: a new open sees the new version */
    int err;
    size_t n = read_to_end(fd, buf, blen + 1, &err);
    TT_CHECK(memcmp(buf, a, n < alen ? n : alen) == 0 && n <= alen,
             "the old descriptor read %zu bytes that are not the old version's: a splice", n);
    TT_CHECK(err == 0 ? n == alen : err == ESTALE, "old descriptor: %zu bytes then %s, want the "
             "old version's %zu bytes or ESTALE", n, strerror(err), alen);
    close(fd);
    TT_CHECK(stat(P(&f, "v"), &st) == 0 && st.st_size == (off_t)blen, "stat by name: %lld bytes, "
             "want the new version's %zu", (long long)st.st_size, blen);
    check_content(P(&f, "v"), b, blen);
    free(a);
    free(b);
    free(buf);
    fx_done(&f);
}

TT_TEST(test_mount_overwrite_old_descriptor_keeps_old_version_new_open_gets_new)
{
    overwrite_case(false);
}

TT_TEST(test_mount_read_only_overwrite_old_descriptor_keeps_old_version_new_open_gets_new)
{
    overwrite_case(true);
}

TT_TEST(test_mount_open_after_a_read_found_its_version_gone_sees_the_new_one)
{
    fixture f;
    fx_prepare(&f); /* the metadata TTL stays at 60 s: the name is not looked up again by age */
    size_t alen = 300 * 1000, blen = alen + 5000;
    char *a = pattern(alen, 31), *b = pattern(blen, 32), buf[4096];
    mem_backend_set(f.mem, "v", 1, a, alen, 0);
    fx_mount(&f);
    int fd = open(P(&f, "v"), O_RDONLY);
    TT_CHECK(fd >= 0, "open: %s", strerror(errno));
    TT_CHECK(pread(fd, buf, 1, 0) == 1 && buf[0] == a[0], "first byte");
    mem_backend_set(f.mem, "v", 1, b, blen, 0); /* an external overwrite */
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    check_errno((int)pread(fd, buf, sizeof buf, 200 * 1000), ESTALE,
                "read of the old version after the store replaced it");
    /* The open reaches a superseded inode: ESTALE makes open(2) look the name up again. */
    check_content(P(&f, "v"), b, blen);
    close(fd);
    free(a);
    free(b);
    fx_done(&f);
}

TT_TEST(test_mount_new_object_appears_within_negative_ttl)
{
    fixture f;
    fx_prepare(&f);
    f.cfg.negative_ttl = 1; /* the metadata TTL stays at its 60 s default */
    mem_backend_set_str(f.mem, "old", "o");
    fx_mount(&f);
    struct stat st;
    check_errno(stat(P(&f, "fresh"), &st), ENOENT, "stat before it exists");
    check_names(f.mnt, "old");
    mem_backend_set_str(f.mem, "fresh", "new object"); /* written by another client */
    usleep(1200 * 1000);
    TT_CHECK(stat(P(&f, "fresh"), &st) == 0 && st.st_size == 10, "stat after the negative TTL: %s",
             strerror(errno));
    check_names(f.mnt, "fresh|old");
    fx_done(&f);
}

/* ---- writes ------------------------------------------------------------------------------- */

TT_TEST(test_mount_write_and_close_upload_once_with_the_bytes)
{
    fixture f;
    fx_up(&f);
    size_t len = 3 * 1024 * 1024 + 5;
    char *data = pattern(len, 5);
    mem_backend_reset_counts(f.mem);
    int fd = open(P(&f, "out.bin"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    TT_CHECK(fd >= 0, "create: %s", strerror(errno));
    for (size_t off = 0; off < len; off += 65536) {
        size_t n = len - off < 65536 ? len - off : 65536;
        TT_CHECK(write(fd, data + off, n) == (ssize_t)n, "write at %zu: %s", off, strerror(errno));
    }
    TT_CHECK(mem_backend_counts(f.mem).put == 0, "nothing uploaded before close");
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    mem_counts c = mem_backend_counts(f.mem);
    TT_CHECK(c.put == 1 && c.copy == 0, "%u PUTs and %u COPYs, want 1 and 0", c.put, c.copy);
    check_backend(&f, "out.bin", data, len);
    check_content(P(&f, "out.bin"), data, len);
    struct stat st;
    TT_CHECK(stat(P(&f, "out.bin"), &st) == 0 && st.st_size == (off_t)len, "size after upload");
    free(data);
    fx_done(&f);
}

typedef struct writer_arg {
    const fixture *f;
    unsigned id;
    int ok;
} writer_arg;

/* Creates 40 files of its own in "par/", listing the directory between files. */
static void *writer(void *p)
{
    writer_arg *a = p;
    a->ok = 1;
    for (unsigned i = 0; i < 40; i++) {
        char body[64];
        int len = snprintf(body, sizeof body, "writer %u file %u", a->id, i);
        int fd = open(P(a->f, "par/w%u-%u", a->id, i), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, body, (size_t)len) != len || close(fd) != 0)
            a->ok = 0;
        DIR *d = opendir(P(a->f, "par"));
        if (!d)
            a->ok = 0;
        while (d && readdir(d))
            ;
        if (d)
            closedir(d);
    }
    return NULL;
}

TT_TEST(test_mount_parallel_writers_and_listings_lose_nothing)
{
    fixture f;
    fx_up(&f);
    enum { THREADS = 6 };
    TT_CHECK(mkdir(P(&f, "par"), 0755) == 0, "mkdir: %s", strerror(errno));
    pthread_t t[THREADS];
    writer_arg a[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        a[i] = (writer_arg){&f, i, 0};
        pthread_create(&t[i], NULL, writer, &a[i]);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        TT_CHECK(a[i].ok, "writer %u saw a failure", i);
    }
    for (unsigned w = 0; w < THREADS; w++)
        for (unsigned i = 0; i < 40; i++) {
            char key[64], body[64];
            snprintf(key, sizeof key, "par/w%u-%u", w, i);
            int len = snprintf(body, sizeof body, "writer %u file %u", w, i);
            check_backend(&f, key, body, (size_t)len);
        }
    char *all = names(P(&f, "par"));
    size_t n = 1;
    for (char *c = all; *c; c++)
        n += *c == '|';
    TT_CHECK(n == THREADS * 40, "listing shows %zu files, want %d", n, THREADS * 40);
    free(all);
    fx_done(&f);
}

TT_TEST(test_mount_fsync_uploads_and_close_does_not_upload_again)
{
    fixture f;
    fx_up(&f);
    int fd = begin_file(P(&f, "synced"), O_WRONLY, "durable", 7);
    TT_CHECK(fsync(fd) == 0, "fsync: %s", strerror(errno));
    check_backend(&f, "synced", "durable", 7);
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    TT_CHECK(mem_backend_counts(f.mem).put == 1, "%u PUTs, want 1", mem_backend_counts(f.mem).put);
    fx_done(&f);
}

/* ftruncate on a descriptor open for writing cuts the staged file; only the close uploads. */
TT_TEST(test_mount_ftruncate_while_writing_uploads_once_at_close)
{
    fixture f;
    fx_up(&f);
    int fd = begin_file(P(&f, "cut"), O_WRONLY, "0123456789", 10);
    TT_CHECK(ftruncate(fd, 4) == 0, "ftruncate: %s", strerror(errno));
    TT_CHECK(mem_backend_counts(f.mem).put == 0, "%u PUTs before close", mem_backend_counts(f.mem).put);
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_backend(&f, "cut", "0123", 4);
    TT_CHECK(mem_backend_counts(f.mem).put == 1, "%u PUTs, want 1", mem_backend_counts(f.mem).put);
    /* The same on an object that exists: open it for writing, cut it, close: one more PUT. */
    fd = open(P(&f, "cut"), O_WRONLY);
    TT_CHECK(fd >= 0, "open: %s", strerror(errno));
    TT_CHECK(ftruncate(fd, 2) == 0, "ftruncate: %s", strerror(errno));
    TT_CHECK(mem_backend_counts(f.mem).put == 1, "%u PUTs before the second close", mem_backend_counts(f.mem).put);
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_backend(&f, "cut", "01", 2);
    TT_CHECK(mem_backend_counts(f.mem).put == 2, "%u PUTs, want 2", mem_backend_counts(f.mem).put);
    fx_done(&f);
}

TT_TEST(test_mount_write_temp_then_rename_is_one_put_and_no_copy)
{
    fixture f;
    fx_up(&f);
    size_t len = 100000;
    char *data = pattern(len, 6);
    mem_backend_reset_counts(f.mem);
    int fd = begin_file(P(&f, "ckpt.tmp"), O_WRONLY, data, len);
    TT_CHECK(rename(P(&f, "ckpt.tmp"), P(&f, "ckpt")) == 0, "rename: %s", strerror(errno));
    check_names(f.mnt, "ckpt"); /* the staged file is listed under its new name before upload */
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    mem_counts c = mem_backend_counts(f.mem);
    TT_CHECK(c.put == 1 && c.copy == 0 && c.remove == 0, "put=%u copy=%u remove=%u, want 1 0 0",
             c.put, c.copy, c.remove);
    check_backend(&f, "ckpt", data, len);
    TT_CHECK(mem_backend_count(f.mem) == 1, "only 'ckpt' stored, %zu objects",
             mem_backend_count(f.mem));
    check_names(f.mnt, "ckpt");
    free(data);
    fx_done(&f);
}

TT_TEST(test_mount_rename_of_object_with_unsent_writes_copies_then_uploads)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "model.bin", "old bytes");
    fx_mount(&f);
    int fd = open(P(&f, "model.bin"), O_WRONLY | O_APPEND);
    TT_CHECK(fd >= 0 && write(fd, " + new", 6) == 6, "append: %s", strerror(errno));
    mem_backend_reset_counts(f.mem);
    TT_CHECK(rename(P(&f, "model.bin"), P(&f, "model.final")) == 0, "rename: %s", strerror(errno));
    check_backend(&f, "model.final", "old bytes", 9); /* the stored version moved first */
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_backend(&f, "model.final", "old bytes + new", 15);
    size_t len;
    TT_CHECK(!mem_backend_get(f.mem, "model.bin", &len), "old key still stored");
    mem_counts c = mem_backend_counts(f.mem);
    TT_CHECK(c.copy == 1 && c.remove == 1 && c.put == 1, "copy=%u remove=%u put=%u, want 1 1 1",
             c.copy, c.remove, c.put);
    fx_done(&f);
}

TT_TEST(test_mount_rename_of_uploaded_file_is_copy_and_remove)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "a.tmp"), "payload", 7) == 0, "close: %s", strerror(errno));
    mem_backend_reset_counts(f.mem);
    TT_CHECK(rename(P(&f, "a.tmp"), P(&f, "a")) == 0, "rename: %s", strerror(errno));
    mem_counts c = mem_backend_counts(f.mem);
    TT_CHECK(c.copy == 1 && c.remove == 1 && c.put == 0, "copy=%u remove=%u put=%u, want 1 1 0",
             c.copy, c.remove, c.put);
    check_backend(&f, "a", "payload", 7);
    size_t len;
    char *gone = mem_backend_get(f.mem, "a.tmp", &len);
    TT_CHECK(!gone, "a.tmp still stored");
    check_content(P(&f, "a"), "payload", 7);
    struct stat st;
    check_errno(stat(P(&f, "a.tmp"), &st), ENOENT, "stat of the old name");
    fx_done(&f);
}

TT_TEST(test_mount_o_trunc_o_append_and_rdwr_rewrite_the_object)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "f", "hello");
    fx_mount(&f);
    int fd = open(P(&f, "f"), O_WRONLY | O_APPEND);
    TT_CHECK(fd >= 0 && write(fd, " world", 6) == 6, "append: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_backend(&f, "f", "hello world", 11);
    fd = open(P(&f, "f"), O_RDWR);
    TT_CHECK(fd >= 0 && pwrite(fd, "J", 1, 0) == 1, "pwrite: %s", strerror(errno));
    char buf[16] = {0};
    TT_CHECK(pread(fd, buf, sizeof buf, 0) == 11 && !memcmp(buf, "Jello world", 11),
             "read back through the same handle: '%s'", buf);
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_backend(&f, "f", "Jello world", 11);
    fd = open(P(&f, "f"), O_WRONLY | O_TRUNC);
    TT_CHECK(fd >= 0 && write(fd, "new", 3) == 3, "truncating write: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_backend(&f, "f", "new", 3);
    check_content(P(&f, "f"), "new", 3);
    fx_done(&f);
}

TT_TEST(test_mount_truncate_of_closed_file_rewrites_the_object)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "t", "abcdef");
    fx_mount(&f);
    TT_CHECK(truncate(P(&f, "t"), 3) == 0, "truncate to 3: %s", strerror(errno));
    check_backend(&f, "t", "abc", 3);
    TT_CHECK(truncate(P(&f, "t"), 0) == 0, "truncate to 0: %s", strerror(errno));
    check_backend(&f, "t", "", 0);
    fx_done(&f);
}

TT_TEST(test_mount_unlink_deletes_the_object)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "gone", "x");
    mem_backend_set_str(f.mem, "kept", "y");
    fx_mount(&f);
    TT_CHECK(unlink(P(&f, "gone")) == 0, "unlink: %s", strerror(errno));
    size_t len;
    TT_CHECK(!mem_backend_get(f.mem, "gone", &len), "object still stored after unlink");
    struct stat st;
    check_errno(stat(P(&f, "gone"), &st), ENOENT, "stat after unlink");
    check_names(f.mnt, "kept");
    fx_done(&f);
}

TT_TEST(test_mount_unlink_of_new_file_still_open_uploads_nothing)
{
    fixture f;
    fx_up(&f);
    int fd = begin_file(P(&f, "scratch"), O_RDWR, "temp", 4);
    TT_CHECK(unlink(P(&f, "scratch")) == 0, "unlink: %s", strerror(errno));
    char buf[8] = {0};
    TT_CHECK(pread(fd, buf, sizeof buf, 0) == 4 && !memcmp(buf, "temp", 4),
             "the unlinked file stays readable through its descriptor");
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    mem_counts c = mem_backend_counts(f.mem);
    TT_CHECK(c.put == 0 && c.remove == 0, "put=%u remove=%u for a file that never reached the "
             "store", c.put, c.remove);
    TT_CHECK(mem_backend_count(f.mem) == 0, "%zu objects stored", mem_backend_count(f.mem));
    fx_done(&f);
}

TT_TEST(test_mount_reader_closing_does_not_publish_a_writers_partial_bytes)
{
    fixture f;
    fx_up(&f);
    int w = begin_file(P(&f, "growing"), O_WRONLY, "part", 4);
    int r = open(P(&f, "growing"), O_RDONLY);
    TT_CHECK(r >= 0, "open for reading: %s", strerror(errno));
    char buf[8] = {0};
    TT_CHECK(read(r, buf, sizeof buf) == 4 && !memcmp(buf, "part", 4), "reader sees local writes");
    TT_CHECK(close(r) == 0, "reader's close: %s", strerror(errno));
    TT_CHECK(mem_backend_counts(f.mem).put == 0, "the reader's close uploaded the file");
    TT_CHECK(write(w, "+rest", 5) == 5 && close(w) == 0, "writer: %s", strerror(errno));
    check_backend(&f, "growing", "part+rest", 9);
    TT_CHECK(mem_backend_counts(f.mem).put == 1, "%u PUTs, want 1", mem_backend_counts(f.mem).put);
    fx_done(&f);
}

TT_TEST(test_mount_mkdir_rmdir_and_enotempty)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "imp/x", "implicit dir content");
    fx_mount(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    check_backend(&f, "d/", "", 0);
    check_dir(P(&f, "d"));
    check_names(P(&f, "d"), "");
    TT_CHECK(spit(P(&f, "d/f"), "1", 1) == 0, "close: %s", strerror(errno));
    check_errno(rmdir(P(&f, "d")), ENOTEMPTY, "rmdir of a directory with a file");
    check_errno(rmdir(P(&f, "imp")), ENOTEMPTY, "rmdir of an implicit directory");
    TT_CHECK(unlink(P(&f, "d/f")) == 0, "unlink: %s", strerror(errno));
    TT_CHECK(rmdir(P(&f, "d")) == 0, "rmdir of the emptied directory: %s", strerror(errno));
    size_t len;
    TT_CHECK(!mem_backend_get(f.mem, "d/", &len), "marker still stored after rmdir");
    struct stat st;
    check_errno(stat(P(&f, "d"), &st), ENOENT, "stat after rmdir");
    check_errno(mkdir(P(&f, "imp"), 0755), EEXIST, "mkdir of an existing directory");
    fx_done(&f);
}

TT_TEST(test_mount_failed_upload_makes_close_return_eio)
{
    fixture f;
    fx_up(&f);
    mem_backend_fail_puts(f.mem, 1, -EIO);
    int fd = begin_file(P(&f, "lost"), O_WRONLY, "data", 4);
    check_errno(close(fd), EIO, "close when the upload fails");
    usleep(100 * 1000); /* let the kernel's release arrive: it must not retry the upload */
    size_t len;
    TT_CHECK(!mem_backend_get(f.mem, "lost", &len), "an object appeared despite the failure");
    struct stat st;
    check_errno(stat(P(&f, "lost"), &st), ENOENT, "stat of a file whose only upload failed");
    TT_CHECK(spit(P(&f, "lost"), "again", 5) == 0, "writing it again: %s", strerror(errno));
    check_backend(&f, "lost", "again", 5);
    fx_done(&f);
}

TT_TEST(test_mount_staging_cap_gives_enospc_and_keeps_what_was_written)
{
    fixture f;
    fx_prepare(&f);
    f.cfg.max_staging_bytes = 1024 * 1024;
    fx_mount(&f);
    char *chunk = pattern(65536, 7);
    int fd = open(P(&f, "huge"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    TT_CHECK(fd >= 0, "create: %s", strerror(errno));
    size_t total = 0;
    ssize_t n = 0;
    for (int i = 0; i < 32; i++) {
        n = write(fd, chunk, 65536);
        if (n < 0)
            break;
        total += (size_t)n;
    }
    TT_CHECK(n < 0 && errno == ENOSPC, "write past the cap: n=%zd errno=%s, want ENOSPC", n,
             strerror(errno));
    TT_CHECK(total == 1024 * 1024, "%zu bytes accepted, want exactly the 1 MiB cap", total);
    TT_CHECK(close(fd) == 0, "close uploads what was accepted: %s", strerror(errno));
    size_t len = 0;
    char *got = mem_backend_get(f.mem, "huge", &len);
    TT_CHECK(got && len == total, "stored %zu bytes, want %zu", len, total);
    free(got);
    free(chunk);
    fx_done(&f);
}

TT_TEST(test_mount_full_staging_filesystem_gives_enospc)
{
    fixture f;
    fx_prepare(&f);
    /* A small tmpfs as the staging directory: its ENOSPC, not the mount's cap, must reach the
     * writer. */
    TT_CHECK(mkdir(f.stage, 0700) == 0, "mkdir staging: %s", strerror(errno));
    if (mount("shoal-test", f.stage, "tmpfs", 0, "size=256k") != 0) {
        int e = errno;
        tt_rmtree(f.dir);
        TT_SKIP("cannot mount a small tmpfs for the staging directory here: %s", strerror(e));
    }
    snprintf(fx_live_other, sizeof fx_live_other, "%s", f.stage);
    fx_mount(&f);
    char *chunk = pattern(65536, 8);
    int fd = open(P(&f, "big"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    TT_CHECK(fd >= 0, "create: %s", strerror(errno));
    ssize_t n = 0;
    size_t total = 0;
    for (int i = 0; i < 16 && n >= 0; i++)
        if ((n = write(fd, chunk, 65536)) > 0)
            total += (size_t)n;
    int e = errno;
    TT_CHECK(n < 0 && e == ENOSPC, "write on a full staging filesystem: n=%zd errno=%s", n,
             strerror(e));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    size_t len = 0;
    char *got = mem_backend_get(f.mem, "big", &len);
    TT_CHECK(got && len == total, "stored %zu bytes, want the %zu accepted", len, total);
    free(got);
    free(chunk);
    TT_CHECK(mount_stop(f.m) == 0, "unmount: %s", shoal_error_message());
    TT_CHECK(umount2(f.stage, 0) == 0, "unmount the tmpfs: %s", strerror(errno));
    fx_live_other[0] = '\0';
    fx_done(&f);
}

/* ---- refusals ----------------------------------------------------------------------------- */

TT_TEST(test_mount_read_only_refuses_every_mutation_with_erofs)
{
    fixture f;
    fx_prepare(&f);
    f.cfg.read_only = true;
    mem_backend_set_str(f.mem, "f", "content");
    mem_backend_set_str(f.mem, "d/x", "in d");
    fx_mount(&f);
    struct timeval tv[2] = {{1, 0}, {1, 0}};
    check_errno(open(P(&f, "f"), O_WRONLY), EROFS, "open O_WRONLY");
    check_errno(open(P(&f, "f"), O_RDWR), EROFS, "open O_RDWR");
    check_errno(open(P(&f, "f"), O_RDONLY | O_TRUNC), EROFS, "open O_TRUNC");
    check_errno(open(P(&f, "new"), O_WRONLY | O_CREAT, 0644), EROFS, "create");
    check_errno(unlink(P(&f, "f")), EROFS, "unlink");
    check_errno(mkdir(P(&f, "nd"), 0755), EROFS, "mkdir");
    check_errno(rmdir(P(&f, "d")), EROFS, "rmdir");
    check_errno(rename(P(&f, "f"), P(&f, "g")), EROFS, "rename");
    check_errno(truncate(P(&f, "f"), 1), EROFS, "truncate");
    check_errno(chmod(P(&f, "f"), 0600), EROFS, "chmod");
    check_errno(chown(P(&f, "f"), 1, 1), EROFS, "chown");
    check_errno(utimes(P(&f, "f"), tv), EROFS, "utimes");
    check_errno(link(P(&f, "f"), P(&f, "h")), EROFS, "link");
    check_errno(symlink("f", P(&f, "s")), EROFS, "symlink");
    check_errno(mkfifo(P(&f, "p"), 0644), EROFS, "mkfifo");
    check_errno(setxattr(P(&f, "f"), "user.x", "1", 1, 0), EROFS, "setxattr");
    check_errno(removexattr(P(&f, "f"), "user.x"), EROFS, "removexattr");
    mem_counts c = mem_backend_counts(f.mem);
    TT_CHECK(c.put == 0 && c.copy == 0 && c.remove == 0, "store changed: put=%u copy=%u remove=%u",
             c.put, c.copy, c.remove);
    check_content(P(&f, "f"), "content", 7);
    fx_done(&f);
}

TT_TEST(test_mount_unsupported_calls_fail_with_documented_errno)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "f", "content");
    mem_backend_set_str(f.mem, "d/x", "in d");
    fx_mount(&f);
    char v[8];
    check_errno(link(P(&f, "f"), P(&f, "h")), EPERM, "link (hard links)");
    check_errno(symlink("f", P(&f, "s")), EPERM, "symlink");
    check_errno(mkfifo(P(&f, "p"), 0644), EPERM, "mkfifo");
    check_errno(setxattr(P(&f, "f"), "user.x", "1", 1, 0), ENOTSUP, "setxattr");
    check_errno((int)getxattr(P(&f, "f"), "user.x", v, sizeof v), ENOTSUP, "getxattr");
    check_errno(rename(P(&f, "d"), P(&f, "e")), EXDEV, "rename of a directory");
    int fd = open(P(&f, "f"), O_RDWR);
    TT_CHECK(fd >= 0, "open: %s", strerror(errno));
    check_errno(fallocate(fd, 0, 0, 4096), EOPNOTSUPP, "fallocate");
    close(fd);
    mem_counts c = mem_backend_counts(f.mem);
    TT_CHECK(c.copy == 0 && c.remove == 0, "a refused call changed the store");
    check_backend(&f, "f", "content", 7);
    fx_done(&f);
}

TT_TEST(test_mount_touch_moves_mtime_by_uploading)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set(f.mem, "old", 3, "aged", 4, 1700000000);
    fx_mount(&f);
    /* touch(1): open(O_WRONLY|O_CREAT) then futimens(now) on the open file. */
    int fd = open(P(&f, "touched"), O_WRONLY | O_CREAT, 0644);
    TT_CHECK(fd >= 0, "create: %s", strerror(errno));
    TT_CHECK(futimens(fd, NULL) == 0, "futimens(now) on a new file: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_backend(&f, "touched", "", 0);
    mem_backend_reset_counts(f.mem);
    fd = open(P(&f, "old"), O_WRONLY | O_CREAT, 0644);
    TT_CHECK(fd >= 0, "open existing: %s", strerror(errno));
    TT_CHECK(futimens(fd, NULL) == 0, "futimens(now) on an existing file: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    TT_CHECK(mem_backend_counts(f.mem).put == 1, "touch of an existing file: %u PUTs, want 1",
             mem_backend_counts(f.mem).put);
    check_backend(&f, "old", "aged", 4);
    struct stat st;
    TT_CHECK(stat(P(&f, "old"), &st) == 0 && st.st_mtime > 1700000000, "mtime %lld not moved",
             (long long)st.st_mtime);
    fx_done(&f);
}

TT_TEST(test_mount_statfs_reports_large_free_space)
{
    fixture f;
    fx_up(&f);
    struct statfs sf;
    TT_CHECK(statfs(f.mnt, &sf) == 0, "statfs: %s", strerror(errno));
    TT_CHECK(sf.f_type == FUSE_SUPER_MAGIC, "not a FUSE mount: type %lx", (long)sf.f_type);
    TT_CHECK(sf.f_bsize > 0 && (double)sf.f_bavail * (double)sf.f_bsize >= 1e12,
             "free space %g bytes", (double)sf.f_bavail * (double)sf.f_bsize);
    TT_CHECK(sf.f_namelen == 255, "name length %ld", (long)sf.f_namelen);
    fx_done(&f);
}

/* ---- life cycle --------------------------------------------------------------------------- */

TT_TEST(test_mount_stale_mount_of_a_killed_process_is_cleaned_at_start)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "f", "after restart");
    pid_t pid = fx_mount_child(&f); /* the crashing daemon */
    struct statfs sf;
    TT_CHECK(statfs(f.mnt, &sf) == 0 && sf.f_type == FUSE_SUPER_MAGIC, "child's mount is up");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fx_live_child = 0;
    check_errno(statfs(f.mnt, &sf), ENOTCONN, "statfs of the dead mount");
    fx_mount(&f);
    fx_live_other[0] = '\0';
    check_content(P(&f, "f"), "after restart", 13);
    fx_done(&f);
}

TT_TEST(test_mount_stop_with_a_file_still_open_ends_the_mount)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "held", "x");
    fx_mount(&f);
    int fd = open(P(&f, "held"), O_RDONLY);
    TT_CHECK(fd >= 0, "open: %s", strerror(errno));
    TT_CHECK(mount_stop(f.m) == 0, "stop with an open file: %s", shoal_error_message());
    struct statfs sf;
    TT_CHECK(statfs(f.mnt, &sf) == 0 && sf.f_type != FUSE_SUPER_MAGIC, "still mounted");
    char c;
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    TT_CHECK(pread(fd, &c, 1, 0) < 0, "a read through the ended mount succeeded");
    close(fd);
    fx_done(&f);
}

/* A copy of the mount in another mount namespace (one that `unshare -m`, a container's start or a
 * sandboxed tool made while the mount was up) keeps the kernel's connection alive after our
 * unmount: the device stays silent, and stop waited for the loop thread forever. Stop ends the
 * connection itself: it returns, and the copy answers ENOTCONN. */
TT_TEST(test_mount_stop_ends_the_connection_that_a_copy_in_another_mount_namespace_keeps)
{
    fixture f;
    fx_up(&f);
    int ready[2], go[2];
    TT_CHECK(pipe(ready) == 0 && pipe(go) == 0, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    TT_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) { /* holds the copy until told to look at it again */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* Only the copy may keep the connection: not the FUSE device inherited by fork. */
        for (int fd = 3; fd < 1024; fd++)
            if (fd != ready[1] && fd != go[0])
                close(fd);
        struct statfs sf;
        char state = 'y';
        if (unshare(CLONE_NEWNS) != 0)
            state = 'n';
        else if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) /* as unshare(1) does */
            state = 'p';
        else if (statfs(f.mnt, &sf) != 0 || sf.f_type != FUSE_SUPER_MAGIC)
            state = 'c';
        char c;
        if (write(ready[1], &state, 1) != 1 || read(go[0], &c, 1) != 1)
            _exit(1);
        int err = statfs(f.mnt, &sf) == 0 ? 0 : errno;
        _exit(write(ready[1], &err, sizeof err) == sizeof err ? 0 : 1);
    }
    fx_live_child = pid;
    close(ready[1]);
    close(go[0]);
    char state = 0;
    TT_CHECK(read(ready[0], &state, 1) == 1, "the child said nothing");
    if (state == 'n')
        TT_SKIP("creating a mount namespace is not permitted here");
    TT_CHECK(state == 'y', "the child's namespace: %s",
             state == 'p' ? "cannot make its mounts private" : "holds no copy of the mount");
    tt_note("stopping while a copy of the mount lives in another mount namespace");
    TT_CHECK(mount_stop(f.m) == 0, "stop: %s", shoal_error_message());
    struct statfs sf;
    TT_CHECK(statfs(f.mnt, &sf) == 0 && sf.f_type != FUSE_SUPER_MAGIC, "still mounted here");
    int err = -1;
    TT_CHECK(write(go[1], "g", 1) == 1 && read(ready[0], &err, sizeof err) == sizeof err,
             "the child did not answer");
    TT_CHECK(err == ENOTCONN, "the copy answers statfs with %s, want ENOTCONN",
             err ? strerror(err) : "success");
    waitpid(pid, NULL, 0);
    fx_live_child = 0;
    close(ready[0]);
    close(go[1]);
    fx_done(&f);
}

TT_TEST(test_mount_stop_unmounts_cleanly)
{
    fixture f;
    fx_up(&f);
    struct statfs sf;
    TT_CHECK(statfs(f.mnt, &sf) == 0 && sf.f_type == FUSE_SUPER_MAGIC, "mounted");
    TT_CHECK(mount_stop(f.m) == 0, "stop: %s", shoal_error_message());
    TT_CHECK(statfs(f.mnt, &sf) == 0 && sf.f_type != FUSE_SUPER_MAGIC,
             "still a FUSE mount after stop");
    TT_CHECK(mount_stop(f.m) == 0, "second stop is a no-op");
    fx_done(&f);
}

TT_MAIN()
