/* The mount tests' shared fixture (mount_fx.h). */
#include "mount_fx.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shoal_error.h"
#include "shoal_mix.h"
#include "tt.h"


fixture *fx_live;        /* the mount to take down if a check fails */
char fx_live_other[512]; /* and another mount a test made (a tmpfs, a dead FUSE mount) */
pid_t fx_live_child;     /* and a child process that mounted */

static void unmount_live(void)
{
    if (fx_live_child > 0) {
        kill(fx_live_child, SIGKILL);
        waitpid(fx_live_child, NULL, 0);
    }
    if (fx_live && fx_live->m) {
        mount_delete(fx_live->m);
        fx_live->m = NULL;
    }
    if (fx_live_other[0])
        umount2(fx_live_other, MNT_DETACH);
}

/* Makes sure unmount_live runs at exit, also when a check fails. */
void fx_arm_cleanup(void)
{
    static bool armed;
    if (!armed)
        atexit(unmount_live);
    armed = true;
}

void require_fuse(void)
{
    if (access("/dev/fuse", R_OK | W_OK) != 0)
        TT_SKIP("/dev/fuse is missing or not accessible here (%s): no FUSE mounts possible",
                strerror(errno));
}

/* A temporary directory with an empty mount point and a staging directory, an empty store and
 * the default configuration; the test may fill the store and tune f->cfg before fx_mount. */
void fx_prepare(fixture *f)
{
    require_fuse();
    memset(f, 0, sizeof *f);
    f->dir = tt_tmpdir("mount");
    snprintf(f->mnt, sizeof f->mnt, "%s/mnt", f->dir);
    snprintf(f->stage, sizeof f->stage, "%s/staging", f->dir);
    TT_CHECK(mkdir(f->mnt, 0755) == 0, "mkdir %s: %s", f->mnt, strerror(errno));
    f->mem = mem_backend_new();
    mount_config_defaults(&f->cfg);
    f->cfg.mountpoint = f->mnt;
    f->cfg.staging_dir = f->stage;
}

void fx_mount(fixture *f)
{
    f->m = mount_new(&f->cfg, &mem_backend_ops, f->mem);
    TT_CHECK(f->m, "mount_new: %s", shoal_error_message());
    if (mount_start(f->m) != 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", shoal_error_message());
        mount_delete(f->m);
        f->m = NULL;
        TT_SKIP("mounting is not permitted here: %s", why);
    }
    fx_live = f;
    fx_arm_cleanup();
}

void fx_up(fixture *f)
{
    fx_prepare(f);
    fx_mount(f);
}

void fx_done(fixture *f)
{
    TT_CHECK(mount_stop(f->m) == 0, "unmount: %s", shoal_error_message());
    mount_delete(f->m);
    f->m = NULL;
    fx_live = NULL;
    mem_backend_delete(f->mem);
    tt_rmtree(f->dir);
    free(f->dir);
}

/* mnt/rel in one of a few rotating buffers of this thread (several may be used in one call). */
const char *P(const fixture *f, const char *fmt, ...)
{
    static __thread char bufs[4][4096];
    static __thread int next;
    char *b = bufs[next++ % 4];
    int n = snprintf(b, sizeof bufs[0], "%s/", f->mnt);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b + n, sizeof bufs[0] - (size_t)n, fmt, ap);
    va_end(ap);
    return b;
}

/* The whole file read with read(2); NULL (errno set) on failure. */
char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n == cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            errno = e;
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *len = n;
    return buf;
}

/* Creates (or truncates) `path` through the mount, opened with O_CREAT|O_TRUNC and `mode`
 * (O_WRONLY or O_RDWR), and writes `len` bytes; returns the still open descriptor. */
int begin_file(const char *path, int mode, const void *data, size_t len)
{
    int fd = open(path, mode | O_CREAT | O_TRUNC, 0644);
    TT_CHECK(fd >= 0, "open %s for writing: %s", path, strerror(errno));
    TT_CHECK(write(fd, data, len) == (ssize_t)len, "write %s: %s", path, strerror(errno));
    return fd;
}

/* Writes `len` bytes to a new file through the mount; returns close()'s result (errno set). */
int spit(const char *path, const void *data, size_t len)
{
    return close(begin_file(path, O_WRONLY, data, len));
}

/* Deterministic bytes that differ at every offset a splice could hide in. */
char *pattern(size_t len, unsigned seed)
{
    char *b = malloc(len ? len : 1);
    uint64_t x = seed;
    shoal_mix_fill(b, len, &x);
    return b;
}

void check_content(const char *path, const char *want, size_t want_len)
{
    size_t len = 0;
    char *got = slurp(path, &len);
    TT_CHECK(got, "read %s: %s", path, strerror(errno));
    TT_CHECK(len == want_len, "%s: %zu bytes, want %zu", path, len, want_len);
    TT_CHECK(memcmp(got, want, len) == 0, "%s: bytes differ", path);
    free(got);
}

void check_backend(fixture *f, const char *key, const char *want, size_t want_len)
{
    size_t len = 0;
    char *got = mem_backend_get(f->mem, key, &len);
    TT_CHECK(got, "key '%s' missing from the store", key);
    TT_CHECK(len == want_len && memcmp(got, want, len) == 0, "key '%s': %zu bytes, want %zu%s", key,
             len, want_len, len == want_len ? " (bytes differ)" : "");
    free(got);
}

/* The names in directory `path`, sorted, without . and .., joined by '|'. */
char *names(const char *path)
{
    DIR *d = opendir(path);
    TT_CHECK(d, "opendir %s: %s", path, strerror(errno));
    char **v = NULL;
    size_t n = 0, total = 1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        v = realloc(v, (n + 1) * sizeof *v);
        v[n++] = strdup(e->d_name);
        total += strlen(e->d_name) + 1;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(v[j], v[i]) < 0) {
                char *t = v[i];
                v[i] = v[j];
                v[j] = t;
            }
    char *out = calloc(1, total);
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(out, "|");
        strcat(out, v[i]);
        free(v[i]);
    }
    free(v);
    return out;
}

void check_names(const char *path, const char *want)
{
    char *got = names(path);
    TT_CHECK(!strcmp(got, want), "listing of %s: '%s', want '%s'", path, got, want);
    free(got);
}

void check_errno(int rc, int want, const char *what)
{
    int e = errno;
    TT_CHECK(rc == -1 && e == want, "%s: rc=%d errno=%s, want %s", what, rc, strerror(e),
             strerror(want));
}

void check_dir(const char *path)
{
    struct stat st;
    TT_CHECK(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
    TT_CHECK(S_ISDIR(st.st_mode), "%s is not a directory (mode %o)", path, st.st_mode);
}
