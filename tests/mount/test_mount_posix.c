/*
 * POSIX conformance of the mount, case by case, for the calls pjdfstest's groups open, truncate,
 * ftruncate, unlink, mkdir, rmdir and rename exercise. pjdfstest itself is not packaged in Debian
 * and nothing may be downloaded at test time, so these are Shoal's own cases, written from what
 * each of those groups checks, on REAL FUSE mounts (the kernel, libfuse3, fuse/mount.c) over
 * tests/mount/mem_backend.c (the mount's backend table in memory: a stand-in for the daemon, not a
 * mock of S3).
 *
 * Left out: what needs symbolic links, FIFOs, sockets, devices, hard links or BSD file flags
 * (S3 has none of them; their refusals are in docs/semantics.md), and what needs chmod, chown or
 * utimensat to set up (mode and owner of new files, sticky directories): those are the attribute
 * rules' own tests. Permission cases use the modes and owner the mount is configured to show
 * instead of chmod: a child process becomes nobody (uid/gid 65534) on a mount made with
 * allow_other, and the kernel checks its access against what the mount shows
 * (default_permissions).
 *
 * Where S3 cannot do what POSIX asks, the case checks the errno or behaviour docs/semantics.md
 * ("POSIX conformance") lists instead. Every check prints the case and what it got.
 *
 * Times are compared in whole seconds (S3's LastModified, which a file without stored attributes
 * shows, has no finer ones): a case that needs a change of time waits for the clock's next
 * second, never a fixed sleep.
 *
 * A test skips (exit 77) when /dev/fuse is missing, mounting is not permitted, or (permission
 * cases) the test does not run as root or nobody cannot reach the temporary directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mount_fx.h"
#include "tt.h"

#define NOBODY 65534
/* pjdfstest's "greater than the maximum file size": 909 TiB, beyond any S3 object (a multipart
 * upload holds at most 10,000 parts of 5 GiB). */
#define HUGE_SIZE 999999999999999LL

/* ---- helpers ------------------------------------------------------------------------------ */

static struct stat st_of(const char *path)
{
    struct stat st;
    TT_CHECK(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
    return st;
}

static void check_size(const char *path, off_t want)
{
    struct stat st = st_of(path);
    TT_CHECK(st.st_size == want, "%s: size %lld, want %lld", path, (long long)st.st_size,
             (long long)want);
}

static void check_absent(const char *path)
{
    struct stat st;
    int rc = stat(path, &st);
    TT_CHECK(rc == -1 && errno == ENOENT, "%s should not exist: rc=%d (%s)", path, rc,
             rc ? strerror(errno) : "it does");
}

static void check_key_absent(fixture *f, const char *key)
{
    size_t len;
    char *got = mem_backend_get(f->mem, key, &len);
    TT_CHECK(!got, "key '%s' should not be in the store (it holds %zu bytes)", key, len);
}

/* open(path, flags) fails with `want` (a descriptor it returns anyway is closed). */
static void check_open_errno(const char *path, int flags, int want, const char *what)
{
    int fd = open(path, flags, 0644);
    int e = errno;
    if (fd >= 0)
        close(fd);
    TT_CHECK(fd == -1 && e == want, "%s: open gave %s, want %s", what,
             fd >= 0 ? "a descriptor" : strerror(e), strerror(want));
}

/* Returns once time(NULL) is past `t` (at most a second of polling). */
static void wait_past(time_t t)
{
    while (time(NULL) <= t)
        usleep(10 * 1000);
}

/* `len` bytes of `c`, NUL-terminated (caller frees). */
static char *name_of(size_t len, char c)
{
    char *s = malloc(len + 1);
    memset(s, c, len);
    s[len] = '\0';
    return s;
}

/* The names pjdfstest's ENAMETOOLONG cases use, under the mount: a 255-byte name (the longest
 * allowed), a 256-byte one, and a path longer than PATH_MAX made of 255-byte components. */
typedef struct long_names {
    char *n255, *n256, *deep;
} long_names;

static long_names long_names_make(const fixture *f)
{
    long_names l = {name_of(255, 'n'), name_of(256, 'n'), malloc(PATH_MAX + 512)};
    size_t n = strlen(f->mnt);
    memcpy(l.deep, f->mnt, n);
    while (n <= PATH_MAX) {
        l.deep[n++] = '/';
        memset(l.deep + n, 'p', 255);
        n += 255;
    }
    l.deep[n] = '\0';
    return l;
}

static void long_names_free(long_names *l)
{
    free(l->n255);
    free(l->n256);
    free(l->deep);
}

/* A read-only mount of a store holding file "f" ("content") and directory "d" (with "d/x"). */
static void fx_up_read_only(fixture *f)
{
    fx_prepare(f);
    f->cfg.read_only = true;
    mem_backend_set_str(f->mem, "f", "content");
    mem_backend_set_str(f->mem, "d/x", "in d");
    mem_backend_set_str(f->mem, "e/", "");
    fx_mount(f);
}

/* A mount holding a copy of the `sleep` program as "prog" (created with mode 0755), which a child
 * runs from there (fx_live_child, so a failing check kills it). Returns the child once it has
 * exec'd the program. */
static pid_t fx_up_running_program(fixture *f)
{
    fx_up(f);
    char prog[4096];
    snprintf(prog, sizeof prog, "%s", P(f, "prog"));
    size_t len = 0;
    char *bytes = slurp("/bin/sleep", &len);
    if (!bytes)
        TT_SKIP("cannot read /bin/sleep to run from the mount: %s", strerror(errno));
    int fd = open(prog, O_CREAT | O_EXCL | O_WRONLY, 0755);
    TT_CHECK(fd >= 0 && write(fd, bytes, len) == (ssize_t)len, "copy /bin/sleep to %s: %s", prog,
             strerror(errno));
    TT_CHECK(fchmod(fd, 0755) == 0 && close(fd) == 0, "fchmod + close %s: %s", prog, strerror(errno));
    free(bytes);
    int p[2];
    TT_CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    TT_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(p[0]);
        execl(prog, "sleep", "600", (char *)NULL);
        int e = errno;
        (void)!write(p[1], &e, sizeof e);
        _exit(127);
    }
    fx_live_child = pid;
    close(p[1]);
    int e = 0;
    ssize_t n = read(p[0], &e, sizeof e); /* EOF: the exec closed the pipe */
    close(p[0]);
    TT_CHECK(n == 0, "exec %s from the mount: %s", prog, strerror(e));
    return pid;
}

static void stop_child(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fx_live_child = 0;
}

/* ---- acting as another user --------------------------------------------------------------- */

typedef enum nobody_call {
    NB_STAT,
    NB_OPEN,            /* open(a, n) then close */
    NB_CREATE_FTRUNCATE,/* open(a, O_CREAT|O_RDWR, 0), ftruncate(n), close */
    NB_TRUNCATE,        /* truncate(a, n) */
    NB_UNLINK,
    NB_MKDIR,
    NB_RMDIR,
    NB_RENAME,          /* rename(a, b) */
} nobody_call;

/* Runs one call as nobody (uid and gid 65534, no supplementary groups) in a forked child, on the
 * paths `a` and `b` (NULL when unused) relative to the mount ("" is the mount point). The child
 * makes nothing but system calls: the parent is multi-threaded (the mount's loop runs in it), so
 * the paths are formatted here, before the fork. 0 when the call succeeded, else its errno. */
static int as_nobody(const fixture *f, nobody_call call, const char *rel_a, const char *rel_b, long long n)
{
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s", P(f, "%s", rel_a));
    snprintf(b, sizeof b, "%s", P(f, "%s", rel_b ? rel_b : ""));
    pid_t pid = fork();
    TT_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        if (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0)
            _exit(255);
        struct stat st;
        int rc = -1, fd;
        switch (call) {
        case NB_STAT: rc = stat(a, &st); break;
        case NB_OPEN:
            fd = open(a, (int)n, 0644);
            rc = fd < 0 ? -1 : close(fd);
            break;
        case NB_CREATE_FTRUNCATE:
            fd = open(a, O_CREAT | O_RDWR, 0);
            rc = fd < 0 ? -1 : ftruncate(fd, (off_t)n);
            if (fd >= 0 && close(fd) != 0)
                rc = -1;
            break;
        case NB_TRUNCATE: rc = truncate(a, (off_t)n); break;
        case NB_UNLINK: rc = unlink(a); break;
        case NB_MKDIR: rc = mkdir(a, 0755); break;
        case NB_RMDIR: rc = rmdir(a); break;
        case NB_RENAME: rc = rename(a, b); break;
        }
        _exit(rc == 0 ? 0 : errno);
    }
    int status = 0;
    TT_CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
    TT_CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 255,
             "the child could not become nobody (status %#x)", status);
    return WEXITSTATUS(status);
}

static void check_nobody(int got, int want, const char *what)
{
    TT_CHECK(got == want, "%s as nobody: %s, want %s", what, got ? strerror(got) : "success",
             want ? strerror(want) : "success");
}

/* A mount other users may enter: allow_other, the fixture's directory open to them (0755), and
 * every file and directory shown owned by `owner` with `file_mode`/`dir_mode`. The caller fills
 * the store, then fx_mount. Skips unless this runs as root (to become nobody) and nobody can
 * reach the mount point. */
static void fx_prepare_shared(fixture *f, uid_t owner, mode_t file_mode, mode_t dir_mode)
{
    if (geteuid() != 0)
        TT_SKIP("permission cases run a child as nobody: this needs root");
    fx_prepare(f);
    TT_CHECK(chmod(f->dir, 0755) == 0, "chmod %s: %s", f->dir, strerror(errno));
    if (as_nobody(f, NB_STAT, "", NULL, 0) != 0)
        TT_SKIP("nobody cannot reach %s (is TMPDIR closed to other users?)", f->mnt);
    f->cfg.allow_other = true;
    f->cfg.uid = owner;
    f->cfg.gid = owner;
    f->cfg.file_mode = file_mode;
    f->cfg.dir_mode = dir_mode;
}

/* A mount of root's (files 0644, directories 0755) other users may enter, holding the file "d/f"
 * ("content") and the empty directories "d/e" and "e": nobody may search and read, not write. */
static void fx_up_roots(fixture *f)
{
    fx_prepare_shared(f, 0, 0644, 0755);
    mem_backend_set_str(f->mem, "d/f", "content");
    mem_backend_set_str(f->mem, "d/e/", "");
    mem_backend_set_str(f->mem, "e/", "");
    fx_mount(f);
}

/* Nothing was written to, copied in or deleted from the store since the mount started. */
static void check_store_unchanged(fixture *f, const char *after)
{
    mem_counts c = mem_backend_counts(f->mem);
    TT_CHECK(c.put == 0 && c.copy == 0 && c.remove == 0, "after %s: %u PUT, %u COPY, %u DELETE, want none",
             after, c.put, c.copy, c.remove);
}

/* `call` as nobody on the paths `a`, `b` of a mount whose directories are nobody's but mode 0600
 * (no search permission), holding "d/f" and the empty directory "d/e": EACCES, store unchanged.
 * The mount point itself stays reachable (a control: the refusal is the mount's modes'). */
static void check_search_denied(nobody_call call, const char *a, const char *b, long long n, const char *what)
{
    fixture f;
    fx_prepare_shared(&f, NOBODY, 0644, 0600);
    mem_backend_set_str(f.mem, "d/f", "content");
    mem_backend_set_str(f.mem, "d/e/", "");
    fx_mount(&f);
    check_nobody(as_nobody(&f, NB_STAT, "", NULL, 0), 0, "stat of the mount point");
    check_nobody(as_nobody(&f, call, a, b, n), EACCES, what);
    check_store_unchanged(&f, what);
    check_backend(&f, "d/f", "content", 7);
    fx_done(&f);
}

/* ==== open ================================================================================== */

TT_TEST(test_posix_open_o_creat_makes_an_empty_regular_file)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    int fd = open(P(&f, "d/new"), O_CREAT | O_WRONLY, 0644);
    TT_CHECK(fd >= 0, "open O_CREAT|O_WRONLY: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    struct stat st = st_of(P(&f, "d/new"));
    TT_CHECK(S_ISREG(st.st_mode) && st.st_size == 0,
             "new file: mode %o size %lld, want a regular, empty file",
             st.st_mode, (long long)st.st_size);
    check_backend(&f, "d/new", "", 0);
    fx_done(&f);
}

TT_TEST(test_posix_open_o_creat_of_an_existing_file_keeps_its_bytes)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "f", "kept");
    fx_mount(&f);
    int fd = open(P(&f, "f"), O_CREAT | O_RDONLY, 0644);
    TT_CHECK(fd >= 0, "open O_CREAT|O_RDONLY of an existing file: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_content(P(&f, "f"), "kept", 4);
    TT_CHECK(mem_backend_counts(f.mem).put == 0, "%u PUTs for opening an existing file, want 0",
             mem_backend_counts(f.mem).put);
    fx_done(&f);
}

TT_TEST(test_posix_open_o_creat_gives_the_new_file_times_of_the_call)
{
    fixture f;
    fx_up(&f);
    time_t before = time(NULL);
    wait_past(before);
    int fd = open(P(&f, "new"), O_CREAT | O_WRONLY, 0644);
    TT_CHECK(fd >= 0, "create: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    struct stat st = st_of(P(&f, "new"));
    TT_CHECK(st.st_atime > before && st.st_mtime > before && st.st_ctime > before,
             "new file: atime %lld mtime %lld ctime %lld, want all after %lld", (long long)st.st_atime,
             (long long)st.st_mtime, (long long)st.st_ctime, (long long)before);
    fx_done(&f);
}

TT_TEST(test_posix_open_o_trunc_empties_the_file_and_moves_mtime_and_ctime)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "test\n", 5) == 0, "write: %s", strerror(errno));
    struct stat st1 = st_of(P(&f, "f"));
    TT_CHECK(st1.st_size == 5, "size %lld before O_TRUNC, want 5", (long long)st1.st_size);
    wait_past(st1.st_mtime > st1.st_ctime ? st1.st_mtime : st1.st_ctime);
    int fd = open(P(&f, "f"), O_WRONLY | O_TRUNC);
    TT_CHECK(fd >= 0, "open O_WRONLY|O_TRUNC: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    struct stat st2 = st_of(P(&f, "f"));
    TT_CHECK(st2.st_size == 0, "size %lld after O_TRUNC, want 0", (long long)st2.st_size);
    TT_CHECK(st2.st_mtime > st1.st_mtime, "mtime %lld after O_TRUNC, want after %lld",
             (long long)st2.st_mtime,
             (long long)st1.st_mtime);
    TT_CHECK(st2.st_ctime > st1.st_ctime, "ctime %lld after O_TRUNC, want after %lld",
             (long long)st2.st_ctime,
             (long long)st1.st_ctime);
    check_backend(&f, "f", "", 0);
    fx_done(&f);
}

TT_TEST(test_posix_open_through_a_file_gives_enotdir)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "d/file", "x");
    fx_mount(&f);
    check_open_errno(P(&f, "d/file/test"), O_RDONLY, ENOTDIR, "open file/test O_RDONLY");
    check_open_errno(P(&f, "d/file/test"), O_CREAT | O_WRONLY, ENOTDIR, "open file/test O_CREAT");
    fx_done(&f);
}

TT_TEST(test_posix_open_name_over_255_bytes_or_path_over_path_max_gives_enametoolong)
{
    fixture f;
    fx_up(&f);
    long_names l = long_names_make(&f);
    int fd = open(P(&f, "%s", l.n255), O_CREAT | O_WRONLY, 0644);
    TT_CHECK(fd >= 0, "create a 255-byte name: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    TT_CHECK(S_ISREG(st_of(P(&f, "%s", l.n255)).st_mode), "the 255-byte name is a regular file");
    TT_CHECK(unlink(P(&f, "%s", l.n255)) == 0, "unlink the 255-byte name: %s", strerror(errno));
    check_open_errno(P(&f, "%s", l.n256), O_CREAT | O_WRONLY, ENAMETOOLONG, "create a 256-byte name");
    check_open_errno(l.deep, O_CREAT | O_WRONLY, ENAMETOOLONG, "create a path over PATH_MAX");
    long_names_free(&l);
    fx_done(&f);
}

/* S3 keys are at most 1024 bytes: the deepest paths the mount can hold. "A/B/C/d/" is 770 bytes
 * of key; a file name of 254 more makes a 1024-byte key. */
static void make_770_byte_directory(fixture *f, char **a, char **b, char **c)
{
    *a = name_of(255, 'a');
    *b = name_of(255, 'b');
    *c = name_of(255, 'c');
    TT_CHECK(mkdir(P(f, "%s", *a), 0755) == 0, "mkdir A: %s", strerror(errno));
    TT_CHECK(mkdir(P(f, "%s/%s", *a, *b), 0755) == 0, "mkdir A/B: %s", strerror(errno));
    TT_CHECK(mkdir(P(f, "%s/%s/%s", *a, *b, *c), 0755) == 0, "mkdir A/B/C: %s", strerror(errno));
    TT_CHECK(mkdir(P(f, "%s/%s/%s/d", *a, *b, *c), 0755) == 0, "mkdir A/B/C/d: %s", strerror(errno));
}

TT_TEST(test_posix_open_o_creat_of_a_1024_byte_key_works)
{
    fixture f;
    fx_up(&f);
    char *a, *b, *c, *n = name_of(254, 'n');
    make_770_byte_directory(&f, &a, &b, &c);
    TT_CHECK(spit(P(&f, "%s/%s/%s/d/%s", a, b, c, n), "deep", 4) == 0, "create a 1024-byte key: %s",
             strerror(errno));
    check_content(P(&f, "%s/%s/%s/d/%s", a, b, c, n), "deep", 4);
    char key[1100];
    snprintf(key, sizeof key, "%s/%s/%s/d/%s", a, b, c, n);
    TT_CHECK(strlen(key) == 1024, "the key is %zu bytes, want 1024", strlen(key));
    check_backend(&f, key, "deep", 4);
    free(a), free(b), free(c), free(n);
    fx_done(&f);
}

TT_TEST(test_posix_open_o_creat_of_a_key_over_1024_bytes_gives_enametoolong)
{
    fixture f;
    fx_up(&f);
    char *a, *b, *c, *n = name_of(255, 'n');
    make_770_byte_directory(&f, &a, &b, &c);
    check_open_errno(P(&f, "%s/%s/%s/d/%s", a, b, c, n), O_CREAT | O_WRONLY, ENAMETOOLONG,
                     "create a 1025-byte key");
    TT_CHECK(mem_backend_count(f.mem) == 4, "%zu objects in the store, want the 4 markers",
             mem_backend_count(f.mem));
    free(a), free(b), free(c), free(n);
    fx_done(&f);
}

TT_TEST(test_posix_open_missing_name_gives_enoent)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    check_open_errno(P(&f, "d/missing/test"), O_CREAT | O_WRONLY, ENOENT, "create under a missing directory");
    check_open_errno(P(&f, "d/missing"), O_RDONLY, ENOENT, "open a missing file without O_CREAT");
    TT_CHECK(mem_backend_count(f.mem) == 1, "%zu objects in the store, want the marker only",
             mem_backend_count(f.mem));
    fx_done(&f);
}

TT_TEST(test_posix_open_without_search_permission_gives_eacces)
{
    check_search_denied(NB_OPEN, "d/f", NULL, O_RDONLY, "open d/f O_RDONLY");
}

TT_TEST(test_posix_open_for_writing_without_write_permission_gives_eacces)
{
    fixture f;
    fx_up_roots(&f);
    check_nobody(as_nobody(&f, NB_OPEN, "d/f", NULL, O_RDONLY), 0, "open O_RDONLY");
    check_nobody(as_nobody(&f, NB_OPEN, "d/f", NULL, O_WRONLY), EACCES, "open O_WRONLY");
    check_nobody(as_nobody(&f, NB_OPEN, "d/f", NULL, O_RDWR), EACCES, "open O_RDWR");
    check_nobody(as_nobody(&f, NB_OPEN, "d/f", NULL, O_RDONLY | O_TRUNC), EACCES, "open O_RDONLY|O_TRUNC");
    check_content(P(&f, "d/f"), "content", 7);
    check_backend(&f, "d/f", "content", 7);
    check_store_unchanged(&f, "refused opens");
    fx_done(&f);
}

TT_TEST(test_posix_open_o_creat_in_a_directory_without_write_permission_gives_eacces)
{
    fixture f;
    fx_up_roots(&f);
    check_nobody(as_nobody(&f, NB_OPEN, "d/new", NULL, O_RDONLY | O_CREAT), EACCES, "create d/new");
    check_absent(P(&f, "d/new"));
    check_store_unchanged(&f, "a refused create");
    fx_done(&f);
}

TT_TEST(test_posix_open_directory_for_writing_gives_eisdir)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    int fd = open(P(&f, "d"), O_RDONLY);
    TT_CHECK(fd >= 0, "open a directory O_RDONLY: %s", strerror(errno));
    close(fd);
    check_open_errno(P(&f, "d"), O_WRONLY, EISDIR, "open a directory O_WRONLY");
    check_open_errno(P(&f, "d"), O_RDWR, EISDIR, "open a directory O_RDWR");
    check_open_errno(P(&f, "d"), O_RDONLY | O_TRUNC, EISDIR, "open a directory O_RDONLY|O_TRUNC");
    check_open_errno(P(&f, "d"), O_WRONLY | O_TRUNC, EISDIR, "open a directory O_WRONLY|O_TRUNC");
    check_open_errno(P(&f, "d"), O_RDWR | O_TRUNC, EISDIR, "open a directory O_RDWR|O_TRUNC");
    check_dir(P(&f, "d"));
    fx_done(&f);
}

TT_TEST(test_posix_open_for_writing_on_a_read_only_mount_gives_erofs)
{
    fixture f;
    fx_up_read_only(&f);
    check_open_errno(P(&f, "f"), O_WRONLY, EROFS, "open O_WRONLY");
    check_open_errno(P(&f, "f"), O_RDWR, EROFS, "open O_RDWR");
    check_open_errno(P(&f, "f"), O_RDONLY | O_TRUNC, EROFS, "open O_RDONLY|O_TRUNC");
    check_open_errno(P(&f, "new"), O_RDONLY | O_CREAT, EROFS, "open O_CREAT of a new name");
    /* O_CREAT of a name that exists creates nothing: not a modification. */
    int fd = open(P(&f, "f"), O_RDONLY | O_CREAT, 0644);
    TT_CHECK(fd >= 0, "open O_CREAT|O_RDONLY of an existing file: %s", strerror(errno));
    close(fd);
    check_content(P(&f, "f"), "content", 7);
    fx_done(&f);
}

TT_TEST(test_posix_open_o_excl_on_existing_file_gives_eexist)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "stored", "never looked up");
    mem_backend_set_str(f.mem, "implicit/x", "makes a directory");
    fx_mount(&f);
    TT_CHECK(spit(P(&f, "uploaded"), "x", 1) == 0, "write: %s", strerror(errno));
    TT_CHECK(mkdir(P(&f, "dir"), 0755) == 0, "mkdir: %s", strerror(errno));
    int staged = open(P(&f, "staged"), O_CREAT | O_WRONLY, 0644); /* not uploaded while open */
    TT_CHECK(staged >= 0, "create: %s", strerror(errno));
    const char *names[] = {"stored", "uploaded", "staged", "dir", "implicit"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char what[64];
        snprintf(what, sizeof what, "O_CREAT|O_EXCL of existing '%s'", names[i]);
        check_open_errno(P(&f, "%s", names[i]), O_CREAT | O_EXCL | O_WRONLY, EEXIST, what);
    }
    TT_CHECK(close(staged) == 0, "close: %s", strerror(errno));
    check_backend(&f, "stored", "never looked up", 15);
    check_backend(&f, "uploaded", "x", 1);
    fx_done(&f);
}

TT_TEST(test_posix_open_o_creat_o_excl_of_a_new_name_creates_it)
{
    fixture f;
    fx_up(&f);
    int fd = open(P(&f, "new"), O_CREAT | O_EXCL | O_WRONLY, 0644);
    TT_CHECK(fd >= 0, "O_CREAT|O_EXCL of a new name: %s", strerror(errno));
    TT_CHECK(write(fd, "made", 4) == 4, "write: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_backend(&f, "new", "made", 4);
    fx_done(&f);
}

TT_TEST(test_posix_open_with_both_access_modes_gives_a_descriptor_or_einval)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "f", "content");
    fx_mount(&f);
    int fd = open(P(&f, "f"), O_WRONLY | O_RDWR);
    int e = errno;
    TT_CHECK(fd >= 0 || e == EINVAL, "open O_WRONLY|O_RDWR: %s, want a descriptor or EINVAL", strerror(e));
    if (fd >= 0)
        TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_content(P(&f, "f"), "content", 7);
    check_backend(&f, "f", "content", 7);
    fx_done(&f);
}

TT_TEST(test_posix_open_o_append_writes_land_at_the_end)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "abc", 3) == 0, "write: %s", strerror(errno));
    int fd = open(P(&f, "f"), O_WRONLY | O_APPEND);
    TT_CHECK(fd >= 0, "open O_APPEND: %s", strerror(errno));
    TT_CHECK(lseek(fd, 0, SEEK_SET) == 0, "lseek: %s", strerror(errno));
    TT_CHECK(write(fd, "de", 2) == 2, "write: %s", strerror(errno));
    TT_CHECK(pwrite(fd, "f", 1, 0) == 1, "pwrite at 0: %s", strerror(errno)); /* Linux appends */
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_content(P(&f, "f"), "abcdef", 6);
    check_backend(&f, "f", "abcdef", 6);
    fx_done(&f);
}

TT_TEST(test_posix_open_o_directory_opens_directories_only)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    int fd = open(P(&f, "d"), O_RDONLY | O_DIRECTORY);
    TT_CHECK(fd >= 0, "open a directory O_DIRECTORY: %s", strerror(errno));
    close(fd);
    check_open_errno(P(&f, "f"), O_RDONLY | O_DIRECTORY, ENOTDIR, "open a file O_DIRECTORY");
    check_open_errno(P(&f, "missing"), O_RDONLY | O_DIRECTORY, ENOENT, "open a missing name O_DIRECTORY");
    fx_done(&f);
}

/* No name on the mount is a symbolic link (symlink(2) gives EPERM): O_NOFOLLOW opens files. */
TT_TEST(test_posix_open_o_nofollow_opens_a_file)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    int fd = open(P(&f, "f"), O_RDONLY | O_NOFOLLOW);
    TT_CHECK(fd >= 0, "open O_RDONLY|O_NOFOLLOW: %s", strerror(errno));
    close(fd);
    fd = open(P(&f, "f"), O_RDWR | O_NOFOLLOW);
    TT_CHECK(fd >= 0, "open O_RDWR|O_NOFOLLOW: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    fd = open(P(&f, "new"), O_CREAT | O_WRONLY | O_NOFOLLOW, 0644);
    TT_CHECK(fd >= 0, "open O_CREAT|O_NOFOLLOW: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_errno(symlink("f", P(&f, "link")), EPERM, "symlink (none can exist for O_NOFOLLOW to refuse)");
    fx_done(&f);
}

/* pjdfstest writes one byte past 2 GiB; here the file is unlinked before its close, so the
 * staged file is checked without a 2 GiB upload into the in-memory store. */
TT_TEST(test_posix_open_offsets_past_2_gib_read_back)
{
    fixture f;
    fx_up(&f);
    const off_t at = (off_t)2 * 1024 * 1024 * 1024 + 1;
    int fd = open(P(&f, "big"), O_CREAT | O_RDWR, 0644);
    TT_CHECK(fd >= 0, "create: %s", strerror(errno));
    TT_CHECK(pwrite(fd, "a", 1, at) == 1, "pwrite past 2 GiB: %s", strerror(errno));
    check_size(P(&f, "big"), at + 1);
    char c = 0;
    TT_CHECK(pread(fd, &c, 1, at) == 1 && c == 'a', "pread past 2 GiB: got '%c' (%s)", c, strerror(errno));
    TT_CHECK(pread(fd, &c, 1, at - 1) == 1 && c == 0, "the hole before it reads %d, want 0", c);
    TT_CHECK(unlink(P(&f, "big")) == 0, "unlink: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    TT_CHECK(mem_backend_counts(f.mem).put == 0, "%u PUTs of an unlinked file",
             mem_backend_counts(f.mem).put);
    fx_done(&f);
}

/* Created with mode 0000, as `mv -f` does: the creating descriptor still reads and writes. */
TT_TEST(test_posix_open_o_creat_with_mode_0_gives_a_usable_descriptor)
{
    fixture f;
    fx_up(&f);
    const int modes[] = {O_WRONLY, O_RDWR, O_RDONLY};
    for (int i = 0; i < 3; i++) {
        int fd = open(P(&f, "zero"), O_CREAT | O_EXCL | modes[i], 0);
        TT_CHECK(fd >= 0, "create with mode 0 (access mode %d): %s", modes[i], strerror(errno));
        if (modes[i] != O_RDONLY)
            TT_CHECK(write(fd, "w", 1) == 1, "write through it: %s", strerror(errno));
        TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
        check_backend(&f, "zero", "w", modes[i] != O_RDONLY ? 1 : 0);
        TT_CHECK(unlink(P(&f, "zero")) == 0, "unlink: %s", strerror(errno));
    }
    fx_done(&f);
}

TT_TEST(test_posix_open_for_writing_a_running_program_gives_etxtbsy)
{
    fixture f;
    pid_t pid = fx_up_running_program(&f);
    off_t size = st_of(P(&f, "prog")).st_size;
    check_open_errno(P(&f, "prog"), O_WRONLY, ETXTBSY, "open a running program O_WRONLY");
    check_open_errno(P(&f, "prog"), O_RDWR, ETXTBSY, "open a running program O_RDWR");
    check_open_errno(P(&f, "prog"), O_WRONLY | O_TRUNC, ETXTBSY, "open a running program O_WRONLY|O_TRUNC");
    check_size(P(&f, "prog"), size);
    stop_child(pid);
    check_size(P(&f, "prog"), size);
    TT_CHECK(mem_backend_counts(f.mem).put == 1, "%u PUTs, want 1 (the copy of the program)",
             mem_backend_counts(f.mem).put);
    fx_done(&f);
}

/* O_RDONLY|O_TRUNC asks for no write access, so the kernel checks for a running program only
 * after the mount's OPEN, which has already emptied the staged file (atomic O_TRUNC): the open
 * fails with ETXTBSY and the program's bytes must still be there. */
TT_TEST(test_posix_open_o_rdonly_o_trunc_of_a_running_program_gives_etxtbsy_and_keeps_it)
{
    fixture f;
    pid_t pid = fx_up_running_program(&f);
    off_t size = st_of(P(&f, "prog")).st_size;
    check_open_errno(P(&f, "prog"), O_RDONLY | O_TRUNC, ETXTBSY, "open a running program O_RDONLY|O_TRUNC");
    stop_child(pid);
    check_size(P(&f, "prog"), size);
    size_t len = 0;
    char *stored = mem_backend_get(f.mem, "prog", &len);
    TT_CHECK(stored && len == (size_t)size, "the store holds %zu bytes of the program, want %lld", len,
             (long long)size);
    free(stored);
    fx_done(&f);
}

/* ==== truncate ============================================================================== */

TT_TEST(test_posix_truncate_grows_and_shrinks_a_created_file)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    int fd = open(P(&f, "d/f"), O_CREAT | O_RDONLY, 0644);
    TT_CHECK(fd >= 0 && close(fd) == 0, "create: %s", strerror(errno));
    TT_CHECK(truncate(P(&f, "d/f"), 1234567) == 0, "truncate up: %s", strerror(errno));
    check_size(P(&f, "d/f"), 1234567);
    char *zeros = calloc(1, 1234567);
    check_backend(&f, "d/f", zeros, 1234567);
    TT_CHECK(truncate(P(&f, "d/f"), 567) == 0, "truncate down: %s", strerror(errno));
    check_size(P(&f, "d/f"), 567);
    check_backend(&f, "d/f", zeros, 567);
    check_content(P(&f, "d/f"), zeros, 567);
    free(zeros);
    fx_done(&f);
}

TT_TEST(test_posix_truncate_keeps_the_head_and_zero_fills_the_growth)
{
    fixture f;
    fx_up(&f);
    char *bytes = pattern(12345, 7), *want = calloc(1, 23456);
    memcpy(want, bytes, 12345);
    TT_CHECK(spit(P(&f, "f"), bytes, 12345) == 0, "write: %s", strerror(errno));
    TT_CHECK(truncate(P(&f, "f"), 23456) == 0, "truncate up: %s", strerror(errno));
    check_size(P(&f, "f"), 23456);
    check_content(P(&f, "f"), want, 23456);
    check_backend(&f, "f", want, 23456);
    TT_CHECK(truncate(P(&f, "f"), 1) == 0, "truncate down: %s", strerror(errno));
    check_content(P(&f, "f"), bytes, 1);
    check_backend(&f, "f", bytes, 1);
    free(bytes);
    free(want);
    fx_done(&f);
}

TT_TEST(test_posix_truncate_moves_mtime_and_ctime)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    struct stat st1 = st_of(P(&f, "f"));
    wait_past(st1.st_mtime > st1.st_ctime ? st1.st_mtime : st1.st_ctime);
    TT_CHECK(truncate(P(&f, "f"), 123) == 0, "truncate: %s", strerror(errno));
    struct stat st2 = st_of(P(&f, "f"));
    TT_CHECK(st2.st_ctime > st1.st_ctime, "ctime %lld after truncate, want after %lld",
             (long long)st2.st_ctime,
             (long long)st1.st_ctime);
    TT_CHECK(st2.st_mtime > st1.st_mtime, "mtime %lld after truncate, want after %lld",
             (long long)st2.st_mtime,
             (long long)st1.st_mtime);
    fx_done(&f);
}

TT_TEST(test_posix_truncate_through_a_file_gives_enotdir)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    check_errno(truncate(P(&f, "f/test"), 123), ENOTDIR, "truncate file/test");
    check_backend(&f, "f", "x", 1);
    fx_done(&f);
}

TT_TEST(test_posix_truncate_name_over_255_bytes_or_path_over_path_max_gives_enametoolong)
{
    fixture f;
    fx_up(&f);
    long_names l = long_names_make(&f);
    int fd = open(P(&f, "%s", l.n255), O_CREAT | O_RDONLY, 0644);
    TT_CHECK(fd >= 0 && close(fd) == 0, "create a 255-byte name: %s", strerror(errno));
    TT_CHECK(truncate(P(&f, "%s", l.n255), 123) == 0, "truncate a 255-byte name: %s", strerror(errno));
    check_size(P(&f, "%s", l.n255), 123);
    check_errno(truncate(P(&f, "%s", l.n256), 123), ENAMETOOLONG, "truncate a 256-byte name");
    check_errno(truncate(l.deep, 123), ENAMETOOLONG, "truncate a path over PATH_MAX");
    long_names_free(&l);
    fx_done(&f);
}

TT_TEST(test_posix_truncate_missing_name_gives_enoent)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    check_errno(truncate(P(&f, "d/missing/test"), 123), ENOENT, "truncate under a missing directory");
    check_errno(truncate(P(&f, "d/missing"), 123), ENOENT, "truncate a missing file");
    check_key_absent(&f, "d/missing");
    fx_done(&f);
}

TT_TEST(test_posix_truncate_without_search_permission_gives_eacces)
{
    check_search_denied(NB_TRUNCATE, "d/f", NULL, 1234, "truncate d/f");
}

/* pjdfstest also checks that a refused truncate leaves ctime alone. */
TT_TEST(test_posix_truncate_without_write_permission_gives_eacces_and_changes_nothing)
{
    fixture f;
    fx_up_roots(&f);
    struct stat st1 = st_of(P(&f, "d/f"));
    wait_past(st1.st_ctime);
    check_nobody(as_nobody(&f, NB_TRUNCATE, "d/f", NULL, 123), EACCES,
                 "truncate a file of root's, mode 0644");
    struct stat st2 = st_of(P(&f, "d/f"));
    TT_CHECK(st2.st_ctime == st1.st_ctime && st2.st_size == 7,
             "after the refused truncate: ctime %lld (was %lld), size %lld (was 7)", (long long)st2.st_ctime,
             (long long)st1.st_ctime, (long long)st2.st_size);
    check_backend(&f, "d/f", "content", 7);
    check_store_unchanged(&f, "a refused truncate");
    fx_done(&f);
}

TT_TEST(test_posix_truncate_of_a_directory_gives_eisdir)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    check_errno(truncate(P(&f, "d"), 123), EISDIR, "truncate a directory");
    check_dir(P(&f, "d"));
    fx_done(&f);
}

TT_TEST(test_posix_truncate_on_a_read_only_mount_gives_erofs)
{
    fixture f;
    fx_up_read_only(&f);
    check_errno(truncate(P(&f, "f"), 1), EROFS, "truncate");
    check_errno(truncate(P(&f, "f"), 0), EROFS, "truncate to 0");
    check_content(P(&f, "f"), "content", 7);
    fx_done(&f);
}

TT_TEST(test_posix_truncate_of_a_running_program_gives_etxtbsy)
{
    fixture f;
    pid_t pid = fx_up_running_program(&f);
    off_t size = st_of(P(&f, "prog")).st_size;
    check_errno(truncate(P(&f, "prog"), 123), ETXTBSY, "truncate a running program");
    stop_child(pid);
    check_size(P(&f, "prog"), size);
    TT_CHECK(mem_backend_counts(f.mem).put == 1, "%u PUTs, want 1 (the copy of the program)",
             mem_backend_counts(f.mem).put);
    fx_done(&f);
}

/* A mount with a staging cap of 1 GiB. The cap keeps the in-memory store from ever being handed
 * HUGE_SIZE when the mount lets it through (an ENOSPC from the cap then shows that): without a
 * cap, a staging filesystem that takes a sparse file that large (xfs, tmpfs) would send the
 * store 909 TiB of zeros, which S3 refuses only after the upload; ext4 refuses it itself (16 TiB
 * at most) with EFBIG. */
static void fx_up_capped(fixture *f)
{
    fx_prepare(f);
    f->cfg.max_staging_bytes = 1u << 30;
    fx_mount(f);
}

TT_TEST(test_posix_truncate_beyond_the_largest_object_gives_efbig)
{
    fixture f;
    fx_up_capped(&f);
    int fd = open(P(&f, "f"), O_CREAT | O_RDONLY, 0644);
    TT_CHECK(fd >= 0 && close(fd) == 0, "create: %s", strerror(errno));
    check_errno(truncate(P(&f, "f"), HUGE_SIZE), EFBIG, "truncate to 909 TiB");
    check_size(P(&f, "f"), 0);
    check_backend(&f, "f", "", 0);
    fx_done(&f);
}

TT_TEST(test_posix_truncate_to_a_negative_size_gives_einval)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    check_errno(truncate(P(&f, "f"), -1), EINVAL, "truncate to -1");
    check_errno(truncate(P(&f, "f"), -999999), EINVAL, "truncate to -999999");
    check_backend(&f, "f", "x", 1);
    fx_done(&f);
}

/* ==== ftruncate ============================================================================= */

static void ftruncate_through(const char *path, int flags, off_t size)
{
    int fd = open(path, flags);
    TT_CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    TT_CHECK(ftruncate(fd, size) == 0, "ftruncate to %lld: %s", (long long)size, strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
}

TT_TEST(test_posix_ftruncate_grows_and_shrinks_through_rdwr_and_wronly_descriptors)
{
    fixture f;
    fx_up(&f);
    int fd = open(P(&f, "f"), O_CREAT | O_RDONLY, 0644);
    TT_CHECK(fd >= 0 && close(fd) == 0, "create: %s", strerror(errno));
    char *zeros = calloc(1, 1234567);
    ftruncate_through(P(&f, "f"), O_RDWR, 1234567);
    check_size(P(&f, "f"), 1234567);
    check_backend(&f, "f", zeros, 1234567);
    ftruncate_through(P(&f, "f"), O_WRONLY, 567);
    check_size(P(&f, "f"), 567);
    check_backend(&f, "f", zeros, 567);

    char *bytes = pattern(12345, 3), *want = calloc(1, 23456);
    memcpy(want, bytes, 12345);
    TT_CHECK(spit(P(&f, "g"), bytes, 12345) == 0, "write: %s", strerror(errno));
    ftruncate_through(P(&f, "g"), O_RDWR, 23456);
    check_content(P(&f, "g"), want, 23456);
    check_backend(&f, "g", want, 23456);
    ftruncate_through(P(&f, "g"), O_WRONLY, 1);
    check_content(P(&f, "g"), bytes, 1);
    check_backend(&f, "g", bytes, 1);
    free(zeros);
    free(bytes);
    free(want);
    fx_done(&f);
}

TT_TEST(test_posix_ftruncate_moves_mtime_and_ctime)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    struct stat st1 = st_of(P(&f, "f"));
    wait_past(st1.st_mtime > st1.st_ctime ? st1.st_mtime : st1.st_ctime);
    ftruncate_through(P(&f, "f"), O_RDWR, 123);
    struct stat st2 = st_of(P(&f, "f"));
    TT_CHECK(st2.st_ctime > st1.st_ctime, "ctime %lld after ftruncate + close, want after %lld",
             (long long)st2.st_ctime, (long long)st1.st_ctime);
    TT_CHECK(st2.st_mtime > st1.st_mtime, "mtime %lld after ftruncate + close, want after %lld",
             (long long)st2.st_mtime, (long long)st1.st_mtime);
    fx_done(&f);
}

TT_TEST(test_posix_ftruncate_of_a_read_only_descriptor_gives_einval_and_changes_nothing)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "content", 7) == 0, "write: %s", strerror(errno));
    struct stat st1 = st_of(P(&f, "f"));
    wait_past(st1.st_ctime);
    int fd = open(P(&f, "f"), O_RDONLY);
    TT_CHECK(fd >= 0, "open O_RDONLY: %s", strerror(errno));
    check_errno(ftruncate(fd, 123), EINVAL, "ftruncate of an O_RDONLY descriptor");
    close(fd);
    struct stat st2 = st_of(P(&f, "f"));
    TT_CHECK(st2.st_ctime == st1.st_ctime && st2.st_size == 7,
             "after the refused ftruncate: ctime %lld (was %lld), size %lld (was 7)",
             (long long)st2.st_ctime, (long long)st1.st_ctime, (long long)st2.st_size);
    check_backend(&f, "f", "content", 7);
    fx_done(&f);
}

TT_TEST(test_posix_ftruncate_to_a_negative_size_gives_einval)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "content", 7) == 0, "write: %s", strerror(errno));
    int fd = open(P(&f, "f"), O_RDWR);
    TT_CHECK(fd >= 0, "open O_RDWR: %s", strerror(errno));
    check_errno(ftruncate(fd, -1), EINVAL, "ftruncate to -1 (O_RDWR)");
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    fd = open(P(&f, "f"), O_WRONLY);
    TT_CHECK(fd >= 0, "open O_WRONLY: %s", strerror(errno));
    check_errno(ftruncate(fd, -999999), EINVAL, "ftruncate to -999999 (O_WRONLY)");
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_backend(&f, "f", "content", 7);
    fx_done(&f);
}

/* What a new file's mode forbids does not apply to the descriptor that created it (FreeBSD bug
 * 154873 in pjdfstest), for root and for a user who owns the directory. */
TT_TEST(test_posix_ftruncate_of_a_descriptor_created_with_mode_0_works)
{
    fixture f;
    fx_prepare_shared(&f, NOBODY, 0644, 0755); /* nobody owns the mount's directories */
    fx_mount(&f);
    int fd = open(P(&f, "root"), O_CREAT | O_RDWR, 0);
    TT_CHECK(fd >= 0, "create with mode 0: %s", strerror(errno));
    TT_CHECK(ftruncate(fd, 0) == 0, "ftruncate: %s", strerror(errno));
    TT_CHECK(ftruncate(fd, 10) == 0, "ftruncate up: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_backend(&f, "root", "\0\0\0\0\0\0\0\0\0\0", 10);
    check_nobody(as_nobody(&f, NB_CREATE_FTRUNCATE, "nobody", NULL, 5), 0,
                 "create with mode 0, then ftruncate");
    check_backend(&f, "nobody", "\0\0\0\0\0", 5);
    fx_done(&f);
}

TT_TEST(test_posix_ftruncate_beyond_the_largest_object_gives_efbig)
{
    fixture f;
    fx_up_capped(&f);
    int fd = open(P(&f, "f"), O_CREAT | O_RDWR, 0644);
    TT_CHECK(fd >= 0, "create: %s", strerror(errno));
    check_errno(ftruncate(fd, HUGE_SIZE), EFBIG, "ftruncate to 909 TiB");
    struct stat st;
    TT_CHECK(fstat(fd, &st) == 0 && st.st_size == 0, "size %lld after the refused ftruncate, want 0",
             (long long)st.st_size);
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_backend(&f, "f", "", 0);
    fx_done(&f);
}

/* ==== unlink ================================================================================ */

TT_TEST(test_posix_unlink_removes_the_file_and_its_object)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(spit(P(&f, "d/f"), "x", 1) == 0, "write: %s", strerror(errno));
    TT_CHECK(S_ISREG(st_of(P(&f, "d/f")).st_mode), "a regular file before unlink");
    TT_CHECK(unlink(P(&f, "d/f")) == 0, "unlink: %s", strerror(errno));
    check_absent(P(&f, "d/f"));
    check_key_absent(&f, "d/f");
    check_names(P(&f, "d"), "");
    fx_done(&f);
}

TT_TEST(test_posix_unlink_through_a_file_gives_enotdir)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    check_errno(unlink(P(&f, "f/test")), ENOTDIR, "unlink file/test");
    check_backend(&f, "f", "x", 1);
    fx_done(&f);
}

TT_TEST(test_posix_unlink_name_over_255_bytes_or_path_over_path_max_gives_enametoolong)
{
    fixture f;
    fx_up(&f);
    long_names l = long_names_make(&f);
    TT_CHECK(spit(P(&f, "%s", l.n255), "x", 1) == 0, "create a 255-byte name: %s", strerror(errno));
    TT_CHECK(unlink(P(&f, "%s", l.n255)) == 0, "unlink a 255-byte name: %s", strerror(errno));
    check_errno(unlink(P(&f, "%s", l.n255)), ENOENT, "unlink it again");
    check_errno(unlink(P(&f, "%s", l.n256)), ENAMETOOLONG, "unlink a 256-byte name");
    check_errno(unlink(l.deep), ENAMETOOLONG, "unlink a path over PATH_MAX");
    long_names_free(&l);
    fx_done(&f);
}

TT_TEST(test_posix_unlink_of_a_missing_name_gives_enoent)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    TT_CHECK(unlink(P(&f, "f")) == 0, "unlink: %s", strerror(errno));
    check_errno(unlink(P(&f, "f")), ENOENT, "unlink the same name again");
    check_errno(unlink(P(&f, "never")), ENOENT, "unlink a name that never existed");
    fx_done(&f);
}

TT_TEST(test_posix_unlink_without_search_permission_gives_eacces)
{
    check_search_denied(NB_UNLINK, "d/f", NULL, 0, "unlink d/f");
}

TT_TEST(test_posix_unlink_without_write_permission_on_the_directory_gives_eacces_and_changes_nothing)
{
    fixture f;
    fx_up_roots(&f);
    struct stat st1 = st_of(P(&f, "d/f"));
    wait_past(st1.st_ctime);
    check_nobody(as_nobody(&f, NB_UNLINK, "d/f", NULL, 0), EACCES,
                 "unlink in a directory of root's, mode 0755");
    struct stat st2 = st_of(P(&f, "d/f"));
    TT_CHECK(st2.st_ctime == st1.st_ctime, "ctime %lld after the refused unlink, was %lld",
             (long long)st2.st_ctime,
             (long long)st1.st_ctime);
    check_backend(&f, "d/f", "content", 7);
    check_store_unchanged(&f, "a refused unlink");
    fx_done(&f);
}

TT_TEST(test_posix_unlink_of_a_directory_gives_eisdir)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    check_errno(unlink(P(&f, "d")), EISDIR, "unlink a directory");
    check_dir(P(&f, "d"));
    check_backend(&f, "d/", "", 0);
    fx_done(&f);
}

TT_TEST(test_posix_unlink_on_a_read_only_mount_gives_erofs)
{
    fixture f;
    fx_up_read_only(&f);
    check_errno(unlink(P(&f, "f")), EROFS, "unlink");
    check_errno(unlink(P(&f, "d/x")), EROFS, "unlink in a directory");
    check_content(P(&f, "f"), "content", 7);
    fx_done(&f);
}

/* The descriptor of an unlinked file keeps its bytes, written ones included; nothing is uploaded. */
TT_TEST(test_posix_unlink_of_an_open_file_keeps_it_readable_and_writable)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "Hello, World!", 13) == 0, "write: %s", strerror(errno));
    int fd = open(P(&f, "f"), O_RDWR);
    TT_CHECK(fd >= 0, "open O_RDWR: %s", strerror(errno));
    TT_CHECK(pwrite(fd, "Hello,_World!", 13, 0) == 13, "write: %s", strerror(errno));
    TT_CHECK(unlink(P(&f, "f")) == 0, "unlink: %s", strerror(errno));
    char buf[32] = {0};
    TT_CHECK(pread(fd, buf, 13, 0) == 13 && !memcmp(buf, "Hello,_World!", 13),
             "pread after unlink: '%s' (%s)", buf, strerror(errno));
    TT_CHECK(pwrite(fd, "!", 1, 13) == 1, "write after unlink: %s", strerror(errno));
    struct stat st;
    TT_CHECK(fstat(fd, &st) == 0 && st.st_size == 14, "fstat after unlink: size %lld, want 14",
             (long long)st.st_size);
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    check_absent(P(&f, "f"));
    check_key_absent(&f, "f");
    fx_done(&f);
}

TT_TEST(test_posix_unlink_of_an_open_file_leaves_it_no_links)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    int fd = open(P(&f, "f"), O_RDONLY);
    TT_CHECK(fd >= 0, "open: %s", strerror(errno));
    struct stat st;
    TT_CHECK(fstat(fd, &st) == 0 && st.st_nlink == 1, "nlink %lu before unlink, want 1",
             (unsigned long)st.st_nlink);
    TT_CHECK(unlink(P(&f, "f")) == 0, "unlink: %s", strerror(errno));
    TT_CHECK(fstat(fd, &st) == 0, "fstat after unlink: %s", strerror(errno));
    TT_CHECK(st.st_nlink == 0, "nlink %lu after unlink, want 0", (unsigned long)st.st_nlink);
    close(fd);
    fx_done(&f);
}

/* S3 keeps nothing of a deleted object: a descriptor opened for reading before the unlink reads
 * what the page cache holds, and a read that must go to the store fails with ESTALE (never other
 * bytes). docs/semantics.md, "POSIX conformance". */
TT_TEST(test_posix_unlink_of_a_file_open_for_reading_gives_estale_on_uncached_reads)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "f", "in the store only");
    fx_mount(&f);
    int fd = open(P(&f, "f"), O_RDONLY);
    TT_CHECK(fd >= 0, "open: %s", strerror(errno));
    TT_CHECK(unlink(P(&f, "f")) == 0, "unlink: %s", strerror(errno));
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    TT_CHECK(n == -1 && errno == ESTALE, "read after unlink: %zd (%s), want ESTALE", n,
             n < 0 ? strerror(errno) : "bytes");
    close(fd);
    fx_done(&f);
}

/* ==== mkdir ================================================================================= */

TT_TEST(test_posix_mkdir_makes_a_directory_and_its_marker)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(mkdir(P(&f, "d/e"), 0755) == 0, "mkdir in it: %s", strerror(errno));
    check_dir(P(&f, "d"));
    check_dir(P(&f, "d/e"));
    check_backend(&f, "d/", "", 0);
    check_backend(&f, "d/e/", "", 0);
    check_names(P(&f, "d"), "e");
    check_names(P(&f, "d/e"), "");
    fx_done(&f);
}

TT_TEST(test_posix_mkdir_through_a_file_gives_enotdir)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    check_errno(mkdir(P(&f, "f/test"), 0755), ENOTDIR, "mkdir file/test");
    check_key_absent(&f, "f/test/");
    fx_done(&f);
}

TT_TEST(test_posix_mkdir_name_over_255_bytes_or_path_over_path_max_gives_enametoolong)
{
    fixture f;
    fx_up(&f);
    long_names l = long_names_make(&f);
    TT_CHECK(mkdir(P(&f, "%s", l.n255), 0755) == 0, "mkdir a 255-byte name: %s", strerror(errno));
    TT_CHECK(rmdir(P(&f, "%s", l.n255)) == 0, "rmdir it: %s", strerror(errno));
    check_errno(mkdir(P(&f, "%s", l.n256), 0755), ENAMETOOLONG, "mkdir a 256-byte name");
    check_errno(mkdir(l.deep, 0755), ENAMETOOLONG, "mkdir a path over PATH_MAX");
    TT_CHECK(mem_backend_count(f.mem) == 0, "%zu objects left in the store", mem_backend_count(f.mem));
    long_names_free(&l);
    fx_done(&f);
}

/* A directory's marker is its path and a '/': at most 1023 bytes of path. */
TT_TEST(test_posix_mkdir_with_a_marker_key_over_1024_bytes_gives_enametoolong)
{
    fixture f;
    fx_up(&f);
    char *a, *b, *c, *n253 = name_of(253, 'm'), *n254 = name_of(254, 'm');
    make_770_byte_directory(&f, &a, &b, &c);
    TT_CHECK(mkdir(P(&f, "%s/%s/%s/d/%s", a, b, c, n253), 0755) == 0, "mkdir with a 1024-byte marker: %s",
             strerror(errno));
    check_errno(mkdir(P(&f, "%s/%s/%s/d/%s", a, b, c, n254), 0755), ENAMETOOLONG,
                "mkdir with a 1025-byte marker");
    TT_CHECK(mem_backend_count(f.mem) == 5, "%zu objects in the store, want 5 markers",
             mem_backend_count(f.mem));
    free(a), free(b), free(c), free(n253), free(n254);
    fx_done(&f);
}

TT_TEST(test_posix_mkdir_under_a_missing_directory_gives_enoent)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    check_errno(mkdir(P(&f, "d/missing/test"), 0755), ENOENT, "mkdir under a missing directory");
    check_key_absent(&f, "d/missing/test/");
    fx_done(&f);
}

TT_TEST(test_posix_mkdir_without_search_permission_gives_eacces)
{
    check_search_denied(NB_MKDIR, "d/new", NULL, 0, "mkdir d/new");
}

TT_TEST(test_posix_mkdir_without_write_permission_gives_eacces)
{
    fixture f;
    fx_up_roots(&f);
    check_nobody(as_nobody(&f, NB_STAT, "d", NULL, 0), 0, "stat d (search is allowed)");
    check_nobody(as_nobody(&f, NB_MKDIR, "d/new", NULL, 0), EACCES,
                 "mkdir in a directory of root's, mode 0755");
    check_absent(P(&f, "d/new"));
    check_store_unchanged(&f, "a refused mkdir");
    fx_done(&f);
}

TT_TEST(test_posix_mkdir_on_a_read_only_mount_gives_erofs)
{
    fixture f;
    fx_up_read_only(&f);
    check_errno(mkdir(P(&f, "new"), 0755), EROFS, "mkdir");
    check_errno(mkdir(P(&f, "d/new"), 0755), EROFS, "mkdir in a directory");
    TT_CHECK(mem_backend_counts(f.mem).put == 0, "%u PUTs", mem_backend_counts(f.mem).put);
    fx_done(&f);
}

TT_TEST(test_posix_mkdir_of_an_existing_name_gives_eexist)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "stored", "never looked up");
    mem_backend_set_str(f.mem, "implicit/x", "makes a directory");
    fx_mount(&f);
    TT_CHECK(spit(P(&f, "uploaded"), "x", 1) == 0, "write: %s", strerror(errno));
    TT_CHECK(mkdir(P(&f, "dir"), 0755) == 0, "mkdir: %s", strerror(errno));
    int staged = open(P(&f, "staged"), O_CREAT | O_WRONLY, 0644);
    TT_CHECK(staged >= 0, "create: %s", strerror(errno));
    const char *names[] = {"stored", "uploaded", "staged", "dir", "implicit"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char what[64];
        snprintf(what, sizeof what, "mkdir of existing '%s'", names[i]);
        check_errno(mkdir(P(&f, "%s", names[i]), 0755), EEXIST, what);
    }
    TT_CHECK(close(staged) == 0, "close: %s", strerror(errno));
    check_backend(&f, "stored", "never looked up", 15);
    check_key_absent(&f, "stored/");
    check_key_absent(&f, "staged/");
    fx_done(&f);
}

/* A new directory gets the time of the mkdir. Its parent's times do not move when entries are
 * created or removed in it: docs/semantics.md, "POSIX conformance". */
TT_TEST(test_posix_mkdir_gives_the_call_time_and_leaves_the_parents_times)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "p"), 0755) == 0, "mkdir: %s", strerror(errno));
    struct stat parent1 = st_of(P(&f, "p"));
    time_t before = time(NULL);
    wait_past(before > parent1.st_ctime ? before : parent1.st_ctime);
    TT_CHECK(mkdir(P(&f, "p/d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(spit(P(&f, "p/f"), "x", 1) == 0, "write: %s", strerror(errno));
    TT_CHECK(unlink(P(&f, "p/f")) == 0, "unlink: %s", strerror(errno));
    struct stat d = st_of(P(&f, "p/d")), parent2 = st_of(P(&f, "p"));
    TT_CHECK(d.st_atime > before && d.st_mtime > before && d.st_ctime > before,
             "new directory: atime %lld mtime %lld ctime %lld, want all after %lld", (long long)d.st_atime,
             (long long)d.st_mtime, (long long)d.st_ctime, (long long)before);
    TT_CHECK(parent2.st_mtime == parent1.st_mtime && parent2.st_ctime == parent1.st_ctime,
             "the parent's times moved: mtime %lld ctime %lld, were %lld %lld", (long long)parent2.st_mtime,
             (long long)parent2.st_ctime, (long long)parent1.st_mtime, (long long)parent1.st_ctime);
    fx_done(&f);
}

/* ==== rmdir ================================================================================= */

TT_TEST(test_posix_rmdir_removes_the_directory_and_its_marker)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(mkdir(P(&f, "d/e"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(rmdir(P(&f, "d/e")) == 0, "rmdir d/e: %s", strerror(errno));
    check_absent(P(&f, "d/e"));
    check_key_absent(&f, "d/e/");
    check_dir(P(&f, "d"));
    TT_CHECK(rmdir(P(&f, "d")) == 0, "rmdir d: %s", strerror(errno));
    check_absent(P(&f, "d"));
    TT_CHECK(mem_backend_count(f.mem) == 0, "%zu objects left", mem_backend_count(f.mem));
    fx_done(&f);
}

TT_TEST(test_posix_rmdir_through_or_of_a_file_gives_enotdir)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    check_errno(rmdir(P(&f, "f/test")), ENOTDIR, "rmdir file/test");
    check_errno(rmdir(P(&f, "f")), ENOTDIR, "rmdir of a file");
    check_backend(&f, "f", "x", 1);
    fx_done(&f);
}

TT_TEST(test_posix_rmdir_name_over_255_bytes_or_path_over_path_max_gives_enametoolong)
{
    fixture f;
    fx_up(&f);
    long_names l = long_names_make(&f);
    TT_CHECK(mkdir(P(&f, "%s", l.n255), 0755) == 0, "mkdir a 255-byte name: %s", strerror(errno));
    TT_CHECK(rmdir(P(&f, "%s", l.n255)) == 0, "rmdir it: %s", strerror(errno));
    check_errno(rmdir(P(&f, "%s", l.n255)), ENOENT, "rmdir it again");
    check_errno(rmdir(P(&f, "%s", l.n256)), ENAMETOOLONG, "rmdir a 256-byte name");
    check_errno(rmdir(l.deep), ENAMETOOLONG, "rmdir a path over PATH_MAX");
    long_names_free(&l);
    fx_done(&f);
}

TT_TEST(test_posix_rmdir_of_a_missing_directory_gives_enoent)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(rmdir(P(&f, "d")) == 0, "rmdir: %s", strerror(errno));
    check_errno(rmdir(P(&f, "d")), ENOENT, "rmdir the same name again");
    check_errno(rmdir(P(&f, "never")), ENOENT, "rmdir a name that never existed");
    fx_done(&f);
}

TT_TEST(test_posix_rmdir_of_non_empty_directory_gives_enotempty)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "implicit/x", "no marker");
    fx_mount(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(spit(P(&f, "d/file"), "x", 1) == 0, "write: %s", strerror(errno));
    check_errno(rmdir(P(&f, "d")), ENOTEMPTY, "rmdir with a file in it");
    TT_CHECK(unlink(P(&f, "d/file")) == 0, "unlink: %s", strerror(errno));
    TT_CHECK(mkdir(P(&f, "d/sub"), 0755) == 0, "mkdir: %s", strerror(errno));
    check_errno(rmdir(P(&f, "d")), ENOTEMPTY, "rmdir with a directory in it");
    TT_CHECK(rmdir(P(&f, "d/sub")) == 0, "rmdir: %s", strerror(errno));
    int fd = open(P(&f, "d/staged"), O_CREAT | O_WRONLY, 0644);
    TT_CHECK(fd >= 0, "create: %s", strerror(errno));
    check_errno(rmdir(P(&f, "d")), ENOTEMPTY, "rmdir with a file created and not uploaded yet");
    TT_CHECK(close(fd) == 0, "close: %s", strerror(errno));
    TT_CHECK(unlink(P(&f, "d/staged")) == 0, "unlink: %s", strerror(errno));
    check_errno(rmdir(P(&f, "implicit")), ENOTEMPTY, "rmdir of a directory made by a key under it");
    TT_CHECK(rmdir(P(&f, "d")) == 0, "rmdir of the emptied directory: %s", strerror(errno));
    check_backend(&f, "implicit/x", "no marker", 9);
    fx_done(&f);
}

TT_TEST(test_posix_rmdir_without_search_permission_gives_eacces)
{
    check_search_denied(NB_RMDIR, "d/e", NULL, 0, "rmdir d/e");
}

TT_TEST(test_posix_rmdir_without_write_permission_gives_eacces)
{
    fixture f;
    fx_up_roots(&f);
    check_nobody(as_nobody(&f, NB_RMDIR, "d/e", NULL, 0), EACCES,
                 "rmdir in a directory of root's, mode 0755");
    check_dir(P(&f, "d/e"));
    check_store_unchanged(&f, "a refused rmdir");
    fx_done(&f);
}

TT_TEST(test_posix_rmdir_of_dot_gives_einval_and_of_dotdot_enotempty)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(mkdir(P(&f, "d/e"), 0755) == 0, "mkdir: %s", strerror(errno));
    check_errno(rmdir(P(&f, "d/e/.")), EINVAL, "rmdir d/e/.");
    int rc = rmdir(P(&f, "d/e/.."));
    TT_CHECK(rc == -1 && (errno == ENOTEMPTY || errno == EEXIST),
             "rmdir d/e/..: %s, want ENOTEMPTY or EEXIST",
             rc ? strerror(errno) : "success");
    check_dir(P(&f, "d/e"));
    check_backend(&f, "d/e/", "", 0);
    fx_done(&f);
}

TT_TEST(test_posix_rmdir_of_the_mount_point_gives_ebusy)
{
    fixture f;
    fx_up(&f);
    check_errno(rmdir(f.mnt), EBUSY, "rmdir of the mount point");
    check_dir(f.mnt);
    fx_done(&f);
}

TT_TEST(test_posix_rmdir_on_a_read_only_mount_gives_erofs)
{
    fixture f;
    fx_up_read_only(&f);
    check_errno(rmdir(P(&f, "e")), EROFS, "rmdir of an empty directory");
    check_dir(P(&f, "e"));
    TT_CHECK(mem_backend_counts(f.mem).remove == 0, "%u DELETEs", mem_backend_counts(f.mem).remove);
    fx_done(&f);
}

/* ==== rename ================================================================================ */

TT_TEST(test_posix_rename_moves_a_file_and_keeps_its_inode)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(spit(P(&f, "a"), "bytes", 5) == 0, "write: %s", strerror(errno));
    struct stat st1 = st_of(P(&f, "a"));
    TT_CHECK(rename(P(&f, "a"), P(&f, "b")) == 0, "rename a b: %s", strerror(errno));
    check_absent(P(&f, "a"));
    struct stat st2 = st_of(P(&f, "b"));
    TT_CHECK(S_ISREG(st2.st_mode) && st2.st_ino == st1.st_ino && st2.st_nlink == 1,
             "after rename: mode %o ino %llu nlink %lu, want a regular file, ino %llu, nlink 1", st2.st_mode,
             (unsigned long long)st2.st_ino, (unsigned long)st2.st_nlink, (unsigned long long)st1.st_ino);
    TT_CHECK(rename(P(&f, "b"), P(&f, "d/c")) == 0, "rename into a directory: %s", strerror(errno));
    check_content(P(&f, "d/c"), "bytes", 5);
    check_backend(&f, "d/c", "bytes", 5);
    check_key_absent(&f, "a");
    check_key_absent(&f, "b");
    fx_done(&f);
}

TT_TEST(test_posix_rename_replaces_an_existing_file)
{
    fixture f;
    fx_prepare(&f);
    mem_backend_set_str(f.mem, "stored", "never looked up");
    fx_mount(&f);
    TT_CHECK(spit(P(&f, "src"), "new bytes", 9) == 0, "write: %s", strerror(errno));
    TT_CHECK(spit(P(&f, "dst"), "old", 3) == 0, "write: %s", strerror(errno));
    TT_CHECK(rename(P(&f, "src"), P(&f, "dst")) == 0, "rename onto a file: %s", strerror(errno));
    check_content(P(&f, "dst"), "new bytes", 9);
    check_backend(&f, "dst", "new bytes", 9);
    check_absent(P(&f, "src"));
    check_key_absent(&f, "src");
    TT_CHECK(rename(P(&f, "dst"), P(&f, "stored")) == 0, "rename onto an object not looked up: %s",
             strerror(errno));
    check_content(P(&f, "stored"), "new bytes", 9);
    check_backend(&f, "stored", "new bytes", 9);
    check_names(f.mnt, "stored");
    fx_done(&f);
}

/* The replaced file's writer still holds its descriptor: its close must not bring the old name
 * back (its inode has no name any more). */
TT_TEST(test_posix_rename_onto_a_file_being_written_drops_that_writers_bytes)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "src"), "winner", 6) == 0, "write: %s", strerror(errno));
    int fd = begin_file(P(&f, "dst"), O_WRONLY, "loser", 5);
    TT_CHECK(rename(P(&f, "src"), P(&f, "dst")) == 0, "rename onto a file being written: %s",
             strerror(errno));
    TT_CHECK(write(fd, "!", 1) == 1, "write to the replaced file: %s", strerror(errno));
    TT_CHECK(close(fd) == 0, "close of the replaced file: %s", strerror(errno));
    check_content(P(&f, "dst"), "winner", 6);
    check_backend(&f, "dst", "winner", 6);
    fx_done(&f);
}

/* Written, closed, then renamed at once (`torch.save(obj, tmp)` + `os.replace(tmp, final)`): the
 * kernel releases the closed descriptor after close(2) returns, so the rename may find the
 * writer's stage still there. The new name must read the bytes, never ESTALE. Repeated so that
 * both orders happen (the rename finding the stage is a few rounds in a thousand here). */
TT_TEST(test_posix_rename_right_after_close_reads_back_at_the_new_name)
{
    fixture f;
    fx_up(&f);
    for (int r = 0; r < 1000; r++) {
        TT_CHECK(spit(P(&f, "t%03d.tmp", r), "payload", 7) == 0, "round %d: write: %s", r, strerror(errno));
        TT_CHECK(rename(P(&f, "t%03d.tmp", r), P(&f, "t%03d", r)) == 0, "round %d: rename: %s", r,
                 strerror(errno));
        size_t len = 0;
        char *got = slurp(P(&f, "t%03d", r), &len);
        TT_CHECK(got && len == 7 && !memcmp(got, "payload", 7), "round %d: read of the new name: %s", r,
                 got ? "other bytes" : strerror(errno));
        free(got);
    }
    fx_done(&f);
}

TT_TEST(test_posix_rename_onto_itself_is_a_no_op)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "same", 4) == 0, "write: %s", strerror(errno));
    mem_backend_reset_counts(f.mem);
    TT_CHECK(rename(P(&f, "f"), P(&f, "f")) == 0, "rename f f: %s", strerror(errno));
    check_content(P(&f, "f"), "same", 4);
    check_backend(&f, "f", "same", 4);
    mem_counts c = mem_backend_counts(f.mem);
    TT_CHECK(c.copy == 0 && c.remove == 0 && c.put == 0,
             "rename onto itself: %u COPY, %u DELETE, %u PUT, want none",
             c.copy, c.remove, c.put);
    fx_done(&f);
}

TT_TEST(test_posix_rename_name_over_255_bytes_or_path_over_path_max_gives_enametoolong)
{
    fixture f;
    fx_up(&f);
    long_names l = long_names_make(&f);
    TT_CHECK(spit(P(&f, "%s", l.n255), "x", 1) == 0, "create a 255-byte name: %s", strerror(errno));
    TT_CHECK(rename(P(&f, "%s", l.n255), P(&f, "short")) == 0, "rename from a 255-byte name: %s",
             strerror(errno));
    TT_CHECK(rename(P(&f, "short"), P(&f, "%s", l.n255)) == 0, "rename to a 255-byte name: %s",
             strerror(errno));
    TT_CHECK(rename(P(&f, "%s", l.n255), P(&f, "short")) == 0, "rename back: %s", strerror(errno));
    check_errno(rename(P(&f, "short"), P(&f, "%s", l.n256)), ENAMETOOLONG, "rename to a 256-byte name");
    check_errno(rename(P(&f, "%s", l.n256), P(&f, "short")), ENAMETOOLONG, "rename from a 256-byte name");
    check_errno(rename(P(&f, "short"), l.deep), ENAMETOOLONG, "rename to a path over PATH_MAX");
    check_errno(rename(l.deep, P(&f, "short")), ENAMETOOLONG, "rename from a path over PATH_MAX");
    check_backend(&f, "short", "x", 1);
    long_names_free(&l);
    fx_done(&f);
}

TT_TEST(test_posix_rename_to_a_key_over_1024_bytes_gives_enametoolong)
{
    fixture f;
    fx_up(&f);
    char *a, *b, *c, *n = name_of(255, 'n');
    make_770_byte_directory(&f, &a, &b, &c);
    TT_CHECK(spit(P(&f, "short"), "x", 1) == 0, "write: %s", strerror(errno));
    check_errno(rename(P(&f, "short"), P(&f, "%s/%s/%s/d/%s", a, b, c, n)), ENAMETOOLONG,
                "rename to a 1025-byte key");
    check_backend(&f, "short", "x", 1);
    TT_CHECK(mem_backend_count(f.mem) == 5, "%zu objects in the store, want 4 markers and 'short'",
             mem_backend_count(f.mem));
    free(a), free(b), free(c), free(n);
    fx_done(&f);
}

TT_TEST(test_posix_rename_with_a_missing_component_gives_enoent)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    check_errno(rename(P(&f, "d/missing/test"), P(&f, "g")), ENOENT, "rename from under a missing directory");
    check_errno(rename(P(&f, "d/missing"), P(&f, "g")), ENOENT, "rename of a missing file");
    check_errno(rename(P(&f, "f"), P(&f, "d/missing/test")), ENOENT, "rename to under a missing directory");
    check_backend(&f, "f", "x", 1);
    fx_done(&f);
}

TT_TEST(test_posix_rename_without_search_permission_gives_eacces)
{
    check_search_denied(NB_RENAME, "d/f", "d/g", 0, "rename d/f d/g");
}

TT_TEST(test_posix_rename_without_write_permission_gives_eacces)
{
    fixture f;
    fx_up_roots(&f);
    struct stat st1 = st_of(P(&f, "d/f"));
    wait_past(st1.st_ctime);
    check_nobody(as_nobody(&f, NB_RENAME, "d/f", "d/g", 0), EACCES, "rename within a directory of root's");
    check_nobody(as_nobody(&f, NB_RENAME, "d/f", "e/g", 0), EACCES, "rename across directories of root's");
    struct stat st2 = st_of(P(&f, "d/f"));
    TT_CHECK(st2.st_ctime == st1.st_ctime, "ctime %lld after the refused renames, was %lld",
             (long long)st2.st_ctime, (long long)st1.st_ctime);
    check_backend(&f, "d/f", "content", 7);
    check_absent(P(&f, "d/g"));
    check_absent(P(&f, "e/g"));
    check_store_unchanged(&f, "refused renames");
    fx_done(&f);
}

/* pjdfstest's rename/21, for files: write permission on both directories is enough to move a
 * file between them; here nobody owns the directories. */
TT_TEST(test_posix_rename_by_the_directories_owner_across_directories_works)
{
    fixture f;
    fx_prepare_shared(&f, NOBODY, 0644, 0755);
    mem_backend_set_str(f.mem, "d/f", "content");
    mem_backend_set_str(f.mem, "e/", "");
    fx_mount(&f);
    check_nobody(as_nobody(&f, NB_RENAME, "d/f", "e/g", 0), 0, "rename d/f e/g");
    check_absent(P(&f, "d/f"));
    check_content(P(&f, "e/g"), "content", 7);
    check_backend(&f, "e/g", "content", 7);
    check_key_absent(&f, "d/f");
    fx_done(&f);
}

TT_TEST(test_posix_rename_through_a_file_gives_enotdir)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    TT_CHECK(spit(P(&f, "g"), "y", 1) == 0, "write: %s", strerror(errno));
    check_errno(rename(P(&f, "f/test"), P(&f, "h")), ENOTDIR, "rename from file/test");
    check_errno(rename(P(&f, "g"), P(&f, "f/test")), ENOTDIR, "rename to file/test");
    check_backend(&f, "f", "x", 1);
    check_backend(&f, "g", "y", 1);
    fx_done(&f);
}

TT_TEST(test_posix_rename_of_a_directory_onto_a_file_gives_enotdir)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    check_errno(rename(P(&f, "d"), P(&f, "f")), ENOTDIR, "rename a directory onto a file");
    check_dir(P(&f, "d"));
    check_backend(&f, "f", "x", 1);
    fx_done(&f);
}

TT_TEST(test_posix_rename_of_a_file_onto_a_directory_gives_eisdir)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(spit(P(&f, "f"), "x", 1) == 0, "write: %s", strerror(errno));
    check_errno(rename(P(&f, "f"), P(&f, "d")), EISDIR, "rename a file onto a directory");
    check_dir(P(&f, "d"));
    check_backend(&f, "f", "x", 1);
    fx_done(&f);
}

/* S3 cannot rename a prefix: every directory rename is EXDEV (mv then copies the tree), also
 * where POSIX names another errno (onto a non-empty directory: ENOTEMPTY). docs/semantics.md. */
TT_TEST(test_posix_rename_of_a_directory_gives_exdev)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(spit(P(&f, "d/f"), "x", 1) == 0, "write: %s", strerror(errno));
    TT_CHECK(mkdir(P(&f, "empty"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(mkdir(P(&f, "full"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(spit(P(&f, "full/g"), "y", 1) == 0, "write: %s", strerror(errno));
    mem_backend_reset_counts(f.mem);
    check_errno(rename(P(&f, "d"), P(&f, "new")), EXDEV, "rename a directory to a new name");
    check_errno(rename(P(&f, "d"), P(&f, "empty")), EXDEV, "rename a directory onto an empty one");
    check_errno(rename(P(&f, "d"), P(&f, "full")), EXDEV, "rename a directory onto a non-empty one");
    check_names(f.mnt, "d|empty|full");
    check_content(P(&f, "d/f"), "x", 1);
    check_backend(&f, "full/g", "y", 1);
    mem_counts c = mem_backend_counts(f.mem);
    TT_CHECK(c.copy == 0 && c.remove == 0 && c.put == 0, "refused renames: %u COPY, %u DELETE, %u PUT",
             c.copy,
             c.remove, c.put);
    fx_done(&f);
}

TT_TEST(test_posix_rename_of_a_directory_into_itself_gives_einval)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(mkdir(P(&f, "d/e"), 0755) == 0, "mkdir: %s", strerror(errno));
    check_errno(rename(P(&f, "d"), P(&f, "d/e")), EINVAL, "rename d d/e");
    check_errno(rename(P(&f, "d"), P(&f, "d/e/x")), EINVAL, "rename d d/e/x");
    check_dir(P(&f, "d/e"));
    fx_done(&f);
}

TT_TEST(test_posix_rename_of_dot_or_dotdot_gives_einval_or_ebusy)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(mkdir(P(&f, "d"), 0755) == 0, "mkdir: %s", strerror(errno));
    TT_CHECK(mkdir(P(&f, "d/e"), 0755) == 0, "mkdir: %s", strerror(errno));
    const char *from[] = {"d/e/.", "d/e/.."};
    for (int i = 0; i < 2; i++) {
        int rc = rename(P(&f, "%s", from[i]), P(&f, "x"));
        TT_CHECK(rc == -1 && (errno == EINVAL || errno == EBUSY), "rename %s x: %s, want EINVAL or EBUSY",
                 from[i], rc ? strerror(errno) : "success");
    }
    check_dir(P(&f, "d/e"));
    check_absent(P(&f, "x"));
    fx_done(&f);
}

TT_TEST(test_posix_rename_on_a_read_only_mount_gives_erofs)
{
    fixture f;
    fx_up_read_only(&f);
    check_errno(rename(P(&f, "f"), P(&f, "g")), EROFS, "rename a file");
    check_errno(rename(P(&f, "f"), P(&f, "d/x")), EROFS, "rename a file onto another");
    check_errno(rename(P(&f, "e"), P(&f, "e2")), EROFS, "rename a directory");
    check_content(P(&f, "f"), "content", 7);
    mem_counts c = mem_backend_counts(f.mem);
    TT_CHECK(c.copy == 0 && c.remove == 0, "%u COPY, %u DELETE", c.copy, c.remove);
    fx_done(&f);
}

/* rename keeps the file's mtime (the COPY keeps its stored attributes). Its ctime stays with it:
 * the ctime shown is the mtime (docs/semantics.md, "POSIX conformance"). */
TT_TEST(test_posix_rename_keeps_mtime)
{
    fixture f;
    fx_up(&f);
    TT_CHECK(spit(P(&f, "src"), "x", 1) == 0, "write: %s", strerror(errno));
    struct stat st1 = st_of(P(&f, "src"));
    wait_past(st1.st_mtime);
    TT_CHECK(rename(P(&f, "src"), P(&f, "dst")) == 0, "rename: %s", strerror(errno));
    struct stat st2 = st_of(P(&f, "dst"));
    TT_CHECK(st2.st_mtime == st1.st_mtime && st2.st_mtim.tv_nsec == st1.st_mtim.tv_nsec,
             "mtime %lld.%09ld after rename, was %lld.%09ld", (long long)st2.st_mtime, st2.st_mtim.tv_nsec,
             (long long)st1.st_mtime, st1.st_mtim.tv_nsec);
    TT_CHECK(st2.st_ctime == st2.st_mtime, "ctime %lld after rename, want the mtime %lld", (long long)st2.st_ctime,
             (long long)st2.st_mtime);
    fx_done(&f);
}

TT_MAIN()
