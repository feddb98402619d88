/*
 * The mount end to end: real daemons (the built shoald with --mount), real FUSE mounts, the real
 * local S3 server (which verifies signatures), and awscli as the "other client" where the issue
 * names it. Everything S3 was asked is counted at the server (tt_s3rver_stat).
 *
 * The daemons come from the daemon tests' harness (tests/node/test_daemon_harness.h). Each case
 * stops its daemons with SIGTERM at the end, which unmounts; if a case fails, an exit handler
 * detaches whatever is still mounted before the harness kills the daemons, so no dead mount is
 * left behind. Cases skip (exit 77) only when /dev/fuse is missing or mounting is not permitted.
 *
 * Sizes are scaled down so each case takes seconds: 1 MiB blocks, a 64 MiB file for the multipart
 * case (8 parts of the S3 client's 8 MiB, above its 16 MiB threshold) and 96 MiB for the killed
 * upload (long enough to kill the daemon while parts are in flight).
 */
#include "test_daemon_harness.h"

#include "faultproxy.h"
#include "s3_client.h"
#include "shoal_error.h"
#include "tt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1024u * 1024u)
#define AWS "/usr/bin/aws"

/* ---- helpers ------------------------------------------------------------------------------------ */

static td_cluster *g_c;
static char g_mnt[TD_MAX_NODES][300];

/* Runs before the harness's own exit handler (registered later, so called earlier): a mount still
 * there after a failure is detached, so the tree can be removed and nothing is left mounted. */
static void detach_mounts(void)
{
    for (int i = 0; i < TD_MAX_NODES; i++)
        if (g_mnt[i][0] && umount2(g_mnt[i], MNT_DETACH) != 0 && errno == EPERM) {
            char cmd[sizeof g_mnt + 64];
            snprintf(cmd, sizeof cmd, "fusermount3 -u -z '%s' 2>/dev/null", g_mnt[i]);
            if (system(cmd) != 0)
                fprintf(stderr, "could not detach %s\n", g_mnt[i]);
        }
}

/* Skips the test when this machine cannot mount FUSE file systems. */
static void require_fuse(void)
{
    int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        TT_SKIP("/dev/fuse cannot be opened (%s): no FUSE here", strerror(errno));
    close(fd);
    if (geteuid() == 0) {
        FILE *f = fopen("/proc/self/status", "r");
        char line[256];
        unsigned long long caps = ~0ull;
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, "CapEff: %llx", &caps) == 1)
                break;
        if (f)
            fclose(f);
        if (!(caps & (1ull << 21)))
            TT_SKIP("running as root without CAP_SYS_ADMIN: mounting is not permitted");
    } else if (system("command -v fusermount3 >/dev/null 2>&1") != 0) {
        TT_SKIP("not root and no fusermount3: mounting is not permitted");
    }
}

static void require_aws(void)
{
    if (access(AWS, X_OK) != 0)
        TT_SKIP("%s (Debian's awscli) is not installed", AWS);
}

/* A cluster of n slots with 1 MiB blocks; the mount helpers below start its nodes. */
static td_cluster *cluster_bs(int n, const char *block_size)
{
    require_fuse();
    td_cluster *c = td_cluster_new(n, block_size);
    g_c = c;
    atexit(detach_mounts);
    return c;
}

static td_cluster *cluster(int n)
{
    require_fuse();
    td_cluster *c = td_cluster_new(n, "1M");
    g_c = c;
    atexit(detach_mounts);
    return c;
}

/* Starts node i with its mount at <node dir>/mnt, the TTLs given (seconds) and `extra` flags. */
/* Starts node i mounted with the TTLs and the extra arguments (NULL-terminated, may be NULL). */
static void start_mounted_flags(td_cluster *c, int i, const char *metadata_ttl, const char *negative_ttl,
                                const char *const *extra)
{
    snprintf(g_mnt[i], sizeof g_mnt[i], "%s/mnt", c->nodes[i].dir);
    TT_CHECK(mkdir(g_mnt[i], 0755) == 0 || errno == EEXIST, "mkdir %s: %s", g_mnt[i], strerror(errno));
    const char *flags[32] = {"--mount", g_mnt[i], "--metadata-ttl", metadata_ttl, "--negative-ttl", negative_ttl};
    for (int n = 6, k = 0; extra && extra[k]; k++, n++) {
        TT_CHECK(n < 31, "too many flags");
        flags[n] = extra[k];
    }
    td_node_start(c, i, flags);
}

/* Starts node i mounted with the TTLs and up to two extra arguments (NULL: none). */
static void start_mounted2(td_cluster *c, int i, const char *metadata_ttl, const char *negative_ttl,
                           const char *extra, const char *extra2)
{
    const char *flags[] = {extra, extra ? extra2 : NULL, NULL};
    start_mounted_flags(c, i, metadata_ttl, negative_ttl, flags);
}

static void start_mounted(td_cluster *c, int i, const char *metadata_ttl, const char *negative_ttl,
                          const char *extra)
{
    start_mounted2(c, i, metadata_ttl, negative_ttl, extra, NULL);
}

/* Path of `rel` inside node i's mount (into a buffer of the caller). */
static char *mpath(char *out, size_t n, int i, const char *rel)
{
    snprintf(out, n, "%s/%s", g_mnt[i], rel);
    return out;
}

/* How long a node may take to exit after SIGTERM: its drain may use all of --drain-timeout (20 s
 * by default) and, on a busy machine under sanitizers, the unmount and the rest of the shutdown as
 * long again. A daemon that hangs still fails the case. */
enum { STOP_WAIT_MS = 60000 };

/* Stops every running node with SIGTERM (which unmounts), checks that each exited 0 and that
 * its mount is gone, and marks the test passed. */
static void finish(td_cluster *c)
{
    for (int i = 0; i < c->n; i++)
        if (c->nodes[i].pid > 0) {
            td_node_signal(c, i, SIGTERM);
            int st = td_node_wait(c, i, STOP_WAIT_MS);
            TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: exit status %d after SIGTERM", c->nodes[i].id, st);
        }
    FILE *f = fopen("/proc/self/mounts", "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f))
        for (int i = 0; i < c->n; i++)
            TT_CHECK(!g_mnt[i][0] || strstr(line, g_mnt[i]) == NULL, "still mounted after SIGTERM: %s", line);
    if (f)
        fclose(f);
    memset(g_mnt, 0, sizeof g_mnt);
    td_pass(c);
}

/* Runs awscli against the test's server: `fmt` holds the arguments after `aws`. Exit status. */
static int aws(td_cluster *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int aws(td_cluster *c, const char *fmt, ...)
{
    char args[2048], cmd[2400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "AWS_DEFAULT_REGION=us-east-1 %s --endpoint-url %s %s >/dev/null", AWS,
             c->s3.endpoint, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The whole file at `path` (free it) and its length; fails the test when it cannot be read. */
static uint8_t *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    TT_CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (n == cap)
            buf = realloc(buf, cap *= 2);
        TT_CHECK(buf != NULL, "malloc");
        ssize_t r = read(fd, buf + n, cap - n);
        TT_CHECK(r >= 0, "read %s: %s", path, strerror(errno));
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *len = n;
    return buf;
}

/* Checks that `path` holds exactly the generated content of (size, seed). */
static void check_file(const char *path, size_t size, uint32_t seed)
{
    size_t n;
    uint8_t *got = slurp(path, &n), *want = td_content(size, seed);
    TT_CHECK(n == size, "%s: %zu bytes, expected %zu", path, n, size);
    TT_CHECK(memcmp(got, want, size) == 0, "%s: bytes differ from the object's", path);
    free(got);
    free(want);
}

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    TT_CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    for (size_t off = 0; off < len;) {
        size_t chunk = len - off < 128 * 1024 ? len - off : 128 * 1024;
        ssize_t w = write(fd, (const char *)data + off, chunk);
        TT_CHECK(w > 0, "write %s: %s", path, strerror(errno));
        off += (size_t)w;
    }
    TT_CHECK(close(fd) == 0, "close %s (the upload): %s", path, strerror(errno));
}

/* Names in directory `path`, one per line in a heap string; *n gets the count. */
static char **list_dir(const char *path, size_t *n)
{
    DIR *d = opendir(path);
    TT_CHECK(d != NULL, "opendir %s: %s", path, strerror(errno));
    size_t cap = 64;
    char **names = malloc(cap * sizeof *names);
    *n = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (*n == cap)
            names = realloc(names, (cap *= 2) * sizeof *names);
        names[(*n)++] = strdup(e->d_name);
    }
    TT_CHECK(errno == 0, "readdir %s: %s", path, strerror(errno));
    closedir(d);
    return names;
}

static bool has_name(char **names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* ---- the POSIX view of real S3 keys ------------------------------------------------------------- */

TT_TEST(test_mount_e2e_implicit_and_marker_directories)
{
    td_cluster *c = cluster(1);
    /* s3rver 4.0.4 leaves out the common prefix of keys two levels below the listed prefix
     * (tree/a/ for tree/a/b/c.bin alone), which S3 does not: tree/a/d.bin keeps the listing of
     * tree/ what S3 would answer; tree/a/b is still only implicit. */
    td_put(c, "tree/a/b/c.bin", 1000, 1);
    td_put(c, "tree/a/d.bin", 10, 2);
    td_put(c, "tree/marker/", 0, 0);
    start_mounted(c, 0, "60", "5", NULL);
    char p[1024];
    struct stat st;
    TT_CHECK(stat(mpath(p, sizeof p, 0, "tree/a"), &st) == 0 && S_ISDIR(st.st_mode), "tree/a is not a directory");
    TT_CHECK(stat(mpath(p, sizeof p, 0, "tree/a/b"), &st) == 0 && S_ISDIR(st.st_mode), "tree/a/b is not a directory");
    TT_CHECK(stat(mpath(p, sizeof p, 0, "tree/a/b/c.bin"), &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 1000,
             "tree/a/b/c.bin: not a 1000-byte file");
    TT_CHECK(stat(mpath(p, sizeof p, 0, "tree/marker"), &st) == 0 && S_ISDIR(st.st_mode),
             "the marker tree/marker/ is not shown as a directory");
    size_t n;
    char **names = list_dir(mpath(p, sizeof p, 0, "tree"), &n);
    TT_CHECK(n == 2 && has_name(names, n, "a") && has_name(names, n, "marker"), "tree lists %zu names, not {a, marker}",
             n);
    free_names(names, n);
    names = list_dir(mpath(p, sizeof p, 0, "tree/a"), &n);
    TT_CHECK(n == 2 && has_name(names, n, "b") && has_name(names, n, "d.bin"), "tree/a lists %zu names, not {b, d.bin}",
             n);
    free_names(names, n);
    names = list_dir(mpath(p, sizeof p, 0, "tree/marker"), &n);
    TT_CHECK(n == 0, "the marker directory lists %zu names (its own marker must not show)", n);
    free_names(names, n);
    check_file(mpath(p, sizeof p, 0, "tree/a/b/c.bin"), 1000, 1);
    finish(c);
}

static const char *const ODD_NAMES[] = {"with space.txt", "unicode-\xc3\xa9-\xe6\x97\xa5\xe6\x9c\xac.txt",
                                        "cr\rname.txt", "+$%&;=?@[]~.txt"};
#define N_ODD (sizeof ODD_NAMES / sizeof ODD_NAMES[0])

TT_TEST(test_mount_e2e_odd_names_round_trip_both_ways)
{
    td_cluster *c = cluster(1);
    char key[256], p[1024];
    for (size_t k = 0; k < N_ODD; k++) {
        snprintf(key, sizeof key, "names/%s", ODD_NAMES[k]);
        td_put(c, key, 100 + k, (uint32_t)k);
    }
    start_mounted(c, 0, "60", "5", NULL);
    /* Each name opened directly first (a lookup: HEAD of the exact key). */
    for (size_t k = 0; k < N_ODD; k++) {
        snprintf(key, sizeof key, "names/%s", ODD_NAMES[k]);
        check_file(mpath(p, sizeof p, 0, key), 100 + k, (uint32_t)k);
    }
    /* Then the listing. s3rver 4.0.4 ignores encoding-type=url: it sends a CR raw in its XML,
     * which every XML parser reads as LF, and it mangles '&' (awscli itself lists "&amp;"). S3
     * sends such keys URL-encoded and exact. So only the names it lists faithfully are looked for
     * in the listing here; the others are checked by lookup above and in the other direction. */
    size_t n;
    char **names = list_dir(mpath(p, sizeof p, 0, "names"), &n);
    TT_CHECK(n == N_ODD, "names/ lists %zu entries, expected %zu", n, N_ODD);
    for (size_t k = 0; k < N_ODD; k++)
        if (strpbrk(ODD_NAMES[k], "\r&") == NULL)
            TT_CHECK(has_name(names, n, ODD_NAMES[k]), "key names/%s is not listed under its own name", ODD_NAMES[k]);
    free_names(names, n);

    /* The other way: files written through the mount land under exactly their names. */
    s3_client *s3 = td_s3_client(c);
    TT_CHECK(mkdir(mpath(p, sizeof p, 0, "up"), 0755) == 0, "mkdir up: %s", strerror(errno));
    for (size_t k = 0; k < N_ODD; k++) {
        snprintf(key, sizeof key, "up/%s", ODD_NAMES[k]);
        uint8_t *data = td_content(200 + k, (uint32_t)(10 + k));
        write_file(mpath(p, sizeof p, 0, key), data, 200 + k);
        s3_object_info info;
        TT_OK(s3_head(s3, TD_BUCKET, key, &info));
        TT_CHECK(info.size == 200 + k, "s3://%s/%s is %llu bytes", TD_BUCKET, key, (unsigned long long)info.size);
        size_t len;
        uint8_t *back = td_get(c, 0, key, &len);
        TT_CHECK(back != NULL && len == 200 + k && memcmp(back, data, len) == 0, "s3://%s/%s does not hold the bytes written",
                 TD_BUCKET, key);
        free(back);
        free(data);
    }
    s3_client_delete(s3);
    finish(c);
}

TT_TEST(test_mount_e2e_stat_gives_s3_size_and_mtime)
{
    td_cluster *c = cluster(1);
    td_put(c, "st/x.bin", 12345, 3);
    start_mounted(c, 0, "60", "5", NULL);
    s3_client *s3 = td_s3_client(c);
    s3_object_info info;
    TT_OK(s3_head(s3, TD_BUCKET, "st/x.bin", &info));
    s3_client_delete(s3);
    char p[1024];
    struct stat st;
    TT_CHECK(stat(mpath(p, sizeof p, 0, "st/x.bin"), &st) == 0, "stat: %s", strerror(errno));
    TT_CHECK(st.st_size == 12345, "st_size %lld, expected 12345", (long long)st.st_size);
    TT_CHECK(st.st_mtime == info.last_modified, "st_mtime %lld, S3's LastModified %lld", (long long)st.st_mtime,
             (long long)info.last_modified);
    finish(c);
}

TT_TEST(test_mount_e2e_read_pread_mmap_lseek_give_exact_bytes)
{
    td_cluster *c = cluster(1);
    const size_t size = 3 * MIB + MIB / 2 + 17; /* four 1 MiB blocks, the last one short */
    td_put(c, "rd/obj.bin", size, 7);
    start_mounted(c, 0, "60", "5", NULL);
    char p[1024];
    mpath(p, sizeof p, 0, "rd/obj.bin");
    uint8_t *want = td_content(size, 7);
    check_file(p, size, 7);

    int fd = open(p, O_RDONLY);
    TT_CHECK(fd >= 0, "open: %s", strerror(errno));
    static const struct { uint64_t off, len; } cuts[] = {
        {0, 100}, {MIB - 3, 10}, {MIB, MIB + 7}, {5 * MIB / 2 + 1, MIB}, {3 * MIB + MIB / 2 + 7, 100}};
    uint8_t *buf = malloc(2 * MIB);
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        size_t expect = cuts[k].off + cuts[k].len > size ? size - cuts[k].off : cuts[k].len;
        ssize_t n = pread(fd, buf, cuts[k].len, (off_t)cuts[k].off);
        TT_CHECK(n == (ssize_t)expect, "pread(%llu, %llu) gave %zd, expected %zu", (unsigned long long)cuts[k].off,
                 (unsigned long long)cuts[k].len, n, expect);
        TT_CHECK(memcmp(buf, want + cuts[k].off, expect) == 0, "pread at %llu: wrong bytes",
                 (unsigned long long)cuts[k].off);
    }
    TT_CHECK(lseek(fd, 0, SEEK_END) == (off_t)size, "lseek(SEEK_END) is not the size");
    TT_CHECK(lseek(fd, (off_t)(2 * MIB + 5), SEEK_SET) == (off_t)(2 * MIB + 5), "lseek(SEEK_SET)");
    TT_CHECK(read(fd, buf, 64) == 64 && memcmp(buf, want + 2 * MIB + 5, 64) == 0, "read after lseek: wrong bytes");
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    TT_CHECK(map != MAP_FAILED, "mmap: %s", strerror(errno));
    TT_CHECK(memcmp(map, want, size) == 0, "mmap: bytes differ from the object's");
    munmap(map, size);
    close(fd);
    free(buf);
    free(want);
    finish(c);
}

/* Uploads `n` small objects "<dir>/f%05d" with 8 threads (one client; its calls are thread-safe). */
typedef int (*bulk_body_fn)(int k, char *out, size_t n);

typedef struct bulk {
    s3_client *s3;
    const char *dir;
    bulk_body_fn body;
    int n, next;
    pthread_mutex_t mu;
} bulk;

/* Object k of the listing case holds its number in decimal. */
static int body_number(int k, char *out, size_t n) { return snprintf(out, n, "%d", k); }

static void *bulk_main(void *arg)
{
    bulk *b = arg;
    for (;;) {
        pthread_mutex_lock(&b->mu);
        int k = b->next++;
        pthread_mutex_unlock(&b->mu);
        if (k >= b->n)
            return NULL;
        char key[128], body[256];
        snprintf(key, sizeof key, "%s/f%05d", b->dir, k);
        int len = b->body(k, body, sizeof body);
        s3_put_args a = {.bucket = TD_BUCKET, .key = key, .data = body, .fd = -1, .len = (uint64_t)len};
        TT_OK(s3_put(b->s3, &a, NULL));
    }
}

static void bulk_upload(td_cluster *c, const char *dir, int n, bulk_body_fn body)
{
    bulk b = {.s3 = td_s3_client(c), .dir = dir, .body = body, .n = n};
    uint64_t t0 = td_now_ms();
    pthread_mutex_init(&b.mu, NULL);
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        TT_CHECK(pthread_create(&t[i], NULL, bulk_main, &b) == 0, "pthread_create");
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    pthread_mutex_destroy(&b.mu);
    s3_client_delete(b.s3);
    tt_note("%d objects uploaded under %s/ in %.1f s", n, dir, (double)(td_now_ms() - t0) / 1000);
}

/* ---- budgets of the cases that grow with their files (tt_budget_ms) ---------------------------- *
 * A case with thousands of files gets a start-up allowance plus one per file, for the file's
 * upload and every read of it. Measured with stress-ng --cpu 2 on a 2-core machine that other
 * builds kept at a load average of 13 to 34: the listing case took 41 to 56 s (2,500 files), the
 * DataLoader case 198 to 280 s (2,000 samples, most of it torch and the checkpoints); the
 * warm-epoch case takes about 90 s on an idle machine. Each budget is well above such a loaded
 * run; CTest's TIMEOUT is only the backstop. */
#define BASE_MS 30000 /* a cluster, a mount */
#define TORCH_BASE_MS 120000 /* two mounts, torch in every DataLoader worker, checkpoints, TTL waits */
#define LIST_FILE_MS 40 /* a PUT, a listing entry, a stat */
#define TORCH_FILE_MS 180 /* a PUT, a read through each of 2 mounts */
#define WARM_FILE_MS 160 /* a PUT, 4 reads (2 epochs x 2 mounts) */

TT_TEST(test_mount_e2e_lists_2500_entries_completely_without_a_head_each)
{
    td_cluster *c = cluster(1);
    enum { N = 2500 };
    tt_budget_start(tt_budget_ms(BASE_MS, N, LIST_FILE_MS), "%d files uploaded, listed and stat'ed", N);
    bulk_upload(c, "many", N, body_number);
    start_mounted(c, 0, "60", "5", NULL);
    tt_s3rver_stats_reset(&c->s3);
    char p[1024];
    size_t n;
    char **names = list_dir(mpath(p, sizeof p, 0, "many"), &n);
    TT_CHECK(n == N, "many/ lists %zu entries, expected %d", n, N);
    static bool seen[N];
    for (size_t i = 0; i < n; i++) {
        int k = -1;
        TT_CHECK(sscanf(names[i], "f%05d", &k) == 1 && k >= 0 && k < N && !seen[k], "unexpected name %s", names[i]);
        seen[k] = true;
        /* What `ls -l` does next: stat every entry. The listing already said each size. */
        char rel[64];
        snprintf(rel, sizeof rel, "many/%s", names[i]);
        struct stat st;
        TT_CHECK(stat(mpath(p, sizeof p, 0, rel), &st) == 0, "stat %s: %s", rel, strerror(errno));
        TT_CHECK(st.st_size == snprintf(rel, sizeof rel, "%d", k), "%s: size %lld", names[i], (long long)st.st_size);
    }
    free_names(names, n);
    long heads = tt_s3rver_stat(&c->s3, "heads"), lists = tt_s3rver_stat(&c->s3, "lists");
    tt_note("2500 entries listed and stat'ed: %ld LIST, %ld HEAD", lists, heads);
    TT_CHECK(heads == 0, "%ld HEADs: a stat after the listing must use the listing's size", heads);
    TT_CHECK(lists >= 3 && lists <= 6, "%ld LISTs for 2500 entries (S3 pages hold 1000)", lists);
    finish(c);
}

/* ---- lookups after the kernel forgot its inodes ------------------------------------------------- */

/* Makes the kernel drop its page cache, dentries and inodes (what memory pressure does to a long
 * job's): every name of the mount is looked up again. False when not permitted. */
static bool drop_kernel_caches(void)
{
    sync();
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    bool ok = fd >= 0 && write(fd, "3", 1) == 1;
    if (fd >= 0)
        close(fd);
    return ok;
}

static void require_drop_caches(void)
{
    if (access("/proc/sys/vm/drop_caches", W_OK) != 0)
        TT_SKIP("cannot write /proc/sys/vm/drop_caches (%s): the kernel's inodes cannot be dropped", strerror(errno));
}

/* Opens and reads every file of fg/ (each name looked up unless the kernel still knows it) and
 * checks its bytes. */
static void read_all(int n)
{
    char p[1024], rel[64], want[32];
    for (int k = 0; k < n; k++) {
        snprintf(rel, sizeof rel, "fg/f%05d", k);
        size_t len;
        uint8_t *got = slurp(mpath(p, sizeof p, 0, rel), &len);
        int wl = body_number(k, want, sizeof want);
        TT_CHECK(len == (size_t)wl && memcmp(got, want, len) == 0, "%s: wrong bytes", rel);
        free(got);
    }
}

/* Lists fg/ (N files, uploaded by the caller), reads every file (now in the daemon's disk cache),
 * drops the kernel's caches and returns the monotonic ms at which the listing began. */
static uint64_t list_read_and_forget(int n)
{
    char p[1024];
    uint64_t t0 = td_now_ms();
    size_t listed;
    char **names = list_dir(mpath(p, sizeof p, 0, "fg"), &listed);
    free_names(names, listed);
    TT_CHECK(listed == (size_t)n, "fg/ lists %zu entries, expected %d", listed, n);
    read_all(n);
    TT_CHECK(drop_kernel_caches(), "echo 3 > /proc/sys/vm/drop_caches: %s", strerror(errno));
    return t0;
}

/* The kernel forgot the directory and its files (drop_caches): looking the names up again within
 * --metadata-ttl is answered by the directory's listing, which the mount keeps, and the bytes by
 * the daemon's disk cache: no LIST, no HEAD, no GET (before, one LIST and one HEAD per file). */
TT_TEST(test_mount_e2e_names_the_kernel_forgot_are_found_again_in_a_fresh_listing_without_a_request)
{
    require_drop_caches();
    td_cluster *c = cluster(1);
    enum { N = 60 };
    bulk_upload(c, "fg", N, body_number);
    start_mounted(c, 0, "3600", "5", NULL);
    list_read_and_forget(N);
    tt_s3rver_stats_reset(&c->s3);
    read_all(N);
    long heads = tt_s3rver_stat(&c->s3, "heads"), lists = tt_s3rver_stat(&c->s3, "lists");
    long gets = tt_s3rver_stat(&c->s3, "gets");
    tt_note("%d files read again after drop_caches: %ld LIST, %ld HEAD, %ld GET", N, lists, heads, gets);
    TT_CHECK(lists == 0 && heads == 0, "%ld LISTs and %ld HEADs: the listing was fresh and held every name", lists,
             heads);
    TT_CHECK(gets == 0, "%ld GETs: the daemon's disk cache holds every file", gets);
    finish(c);
}

/* The same once --metadata-ttl has passed: the listing is no longer trusted as it is, so the store
 * is asked again. The directory's listing is revalidated whole (a LIST for the directory, another
 * to find the directory itself), not one LIST and one HEAD per name; a slow machine that stretches
 * the reads over several TTLs may revalidate once per TTL. */
TT_TEST(test_mount_e2e_names_the_kernel_forgot_are_asked_for_again_after_the_ttl)
{
    require_drop_caches();
    td_cluster *c = cluster(1);
    enum { N = 60, TTL_MS = 2000 };
    bulk_upload(c, "fg", N, body_number);
    start_mounted(c, 0, "2", "1", NULL);
    uint64_t t0 = list_read_and_forget(N);
    uint64_t now = td_now_ms();
    if (now < t0 + TTL_MS + 100)
        td_sleep_ms((unsigned)(t0 + TTL_MS + 100 - now));
    tt_s3rver_stats_reset(&c->s3);
    uint64_t t1 = td_now_ms();
    read_all(N);
    uint64_t ttls = 1 + (td_now_ms() - t1) / TTL_MS;
    long heads = tt_s3rver_stat(&c->s3, "heads"), lists = tt_s3rver_stat(&c->s3, "lists");
    tt_note("%d files read again after the TTL: %ld LIST, %ld HEAD over %llu TTL(s)", N, lists, heads,
            (unsigned long long)ttls);
    TT_CHECK(lists + heads >= 1, "no request after the TTL: the expired listing answered as if fresh");
    TT_CHECK(heads == 0 && lists <= 2 * (long)ttls,
             "%ld LISTs and %ld HEADs: expected the listing revalidated "
             "(at most 2 LISTs per TTL, no HEAD), not every name probed",
             lists, heads);
    finish(c);
}

/* ---- other clients change the bucket ---------------------------------------------------------- */

TT_TEST(test_mount_e2e_object_created_by_awscli_appears_within_negative_ttl)
{
    require_aws();
    td_cluster *c = cluster(1);
    start_mounted(c, 0, "60", "2", NULL);
    char p[1024], src[512];
    struct stat st;
    TT_CHECK(stat(mpath(p, sizeof p, 0, "ext/new.txt"), &st) != 0 && errno == ENOENT, "ext/new.txt exists already");
    snprintf(src, sizeof src, "%s/new.txt", c->dir);
    uint8_t *data = td_content(5000, 9);
    FILE *f = fopen(src, "wb");
    TT_CHECK(f && fwrite(data, 1, 5000, f) == 5000 && fclose(f) == 0, "writing %s", src);
    TT_CHECK(aws(c, "s3 cp '%s' s3://%s/ext/new.txt", src, TD_BUCKET) == 0, "aws s3 cp failed");
    uint64_t t0 = td_now_ms();
    while (stat(p, &st) != 0) {
        TT_CHECK(errno == ENOENT, "stat: %s", strerror(errno));
        TT_CHECK(td_now_ms() - t0 < 2000 + 700, "ext/new.txt not visible %llu ms after the upload (--negative-ttl 2)",
                 (unsigned long long)(td_now_ms() - t0));
        td_sleep_ms(50);
    }
    tt_note("visible %llu ms after aws s3 cp returned", (unsigned long long)(td_now_ms() - t0));
    check_file(p, 5000, 9);
    free(data);
    finish(c);
}

/* s3rver 4.0.4 ignores If-Match (tests/s3/test_s3_client.c says so too): a ranged GET pinned to
 * the old ETag gets the new version's bytes with a 200. What keeps them out of an open file here is
 * the read path's check of the answer's ETag against the one asked for. */
TT_TEST(test_mount_e2e_external_overwrite_is_seen_on_reopen_and_never_spliced)
{
    td_cluster *c = cluster(1);
    const size_t size = 6 * MIB;
    td_put(c, "ow/x.bin", size, 1);
    start_mounted(c, 0, "1", "1", NULL);
    char p[1024];
    mpath(p, sizeof p, 0, "ow/x.bin");
    uint8_t *v1 = td_content(size, 1), *v2 = td_content(size, 2), *buf = malloc(64 * 1024);
    int fd = open(p, O_RDONLY);
    TT_CHECK(fd >= 0, "open: %s", strerror(errno));
    TT_CHECK(pread(fd, buf, 4096, 0) == 4096 && memcmp(buf, v1, 4096) == 0, "first read: not version 1");
    td_put(c, "ow/x.bin", size, 2);
    /* Every later read of this open file gives version 1's bytes or fails with ESTALE. */
    size_t off = 4096, stale_at = SIZE_MAX;
    while (off < size) {
        ssize_t n = pread(fd, buf, 64 * 1024, (off_t)off);
        if (n < 0) {
            TT_CHECK(errno == ESTALE, "read at %zu: %s, expected ESTALE or version 1", off, strerror(errno));
            stale_at = off;
            break;
        }
        TT_CHECK(n > 0, "early end of file at %zu", off);
        TT_CHECK(memcmp(buf, v1 + off, (size_t)n) == 0, "read at %zu: %s bytes inside a version-1 open", off,
                 memcmp(buf, v2 + off, (size_t)n) == 0 ? "version 2" : "foreign");
        off += (size_t)n;
    }
    tt_note(stale_at == SIZE_MAX ? "the open file read version 1 to the end (cached blocks)"
                                 : "the open file failed with ESTALE at %zu", stale_at);
    close(fd);
    td_sleep_ms(1300);
    check_file(p, size, 2);
    free(v1);
    free(v2);
    free(buf);
    finish(c);
}

TT_TEST(test_mount_e2e_external_delete_gives_enoent)
{
    td_cluster *c = cluster(1);
    td_put(c, "rm/x.bin", 3000, 4);
    start_mounted(c, 0, "1", "1", NULL);
    char p[1024];
    mpath(p, sizeof p, 0, "rm/x.bin");
    check_file(p, 3000, 4);
    s3_client *s3 = td_s3_client(c);
    TT_OK(s3_delete(s3, TD_BUCKET, "rm/x.bin"));
    s3_client_delete(s3);
    td_sleep_ms(1300);
    struct stat st;
    TT_CHECK(stat(p, &st) != 0 && errno == ENOENT, "stat after the delete: %s", stat(p, &st) == 0 ? "exists" : "");
    TT_CHECK(open(p, O_RDONLY) < 0 && errno == ENOENT, "open after the delete: not ENOENT");
    finish(c);
}

TT_TEST(test_mount_e2e_read_only_gives_erofs_and_reads)
{
    td_cluster *c = cluster(1);
    td_put(c, "ro/x.bin", 2000, 5);
    start_mounted(c, 0, "60", "5", "--read-only");
    char p[1024], q[1024];
    mpath(p, sizeof p, 0, "ro/x.bin");
    check_file(p, 2000, 5);
    errno = 0;
    TT_CHECK(open(p, O_WRONLY) < 0 && errno == EROFS, "open for writing: %s", strerror(errno));
    errno = 0;
    TT_CHECK(open(mpath(q, sizeof q, 0, "ro/new"), O_WRONLY | O_CREAT, 0644) < 0 && errno == EROFS, "creat: %s",
             strerror(errno));
    errno = 0;
    TT_CHECK(mkdir(mpath(q, sizeof q, 0, "ro/d"), 0755) != 0 && errno == EROFS, "mkdir: %s", strerror(errno));
    errno = 0;
    TT_CHECK(unlink(p) != 0 && errno == EROFS, "unlink: %s", strerror(errno));
    errno = 0;
    TT_CHECK(rename(p, mpath(q, sizeof q, 0, "ro/y.bin")) != 0 && errno == EROFS, "rename: %s", strerror(errno));
    errno = 0;
    TT_CHECK(truncate(p, 10) != 0 && errno == EROFS, "truncate: %s", strerror(errno));
    s3_client *s3 = td_s3_client(c);
    s3_object_info info;
    TT_OK(s3_head(s3, TD_BUCKET, "ro/x.bin", &info));
    TT_CHECK(info.size == 2000, "the object changed: %llu bytes", (unsigned long long)info.size);
    s3_client_delete(s3);
    finish(c);
}

/* `umount DIR` from outside ends the daemon, as it ends any FUSE file system's: it leaves the
 * cluster and exits 0 (mount.shoal and /etc/fstab rely on it: a daemon left running would hold
 * its port, and the next mount of the line would fail). */
TT_TEST(test_mount_e2e_umount_from_outside_makes_the_daemon_leave_and_exit_0)
{
    td_cluster *c = cluster(1);
    td_put(c, "u/x.bin", 3000, 9);
    start_mounted(c, 0, "60", "5", NULL);
    char p[1024];
    check_file(mpath(p, sizeof p, 0, "u/x.bin"), 3000, 9);
    if (umount2(g_mnt[0], 0) != 0) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "fusermount3 -u '%s'", g_mnt[0]);
        TT_CHECK(errno == EPERM && system(cmd) == 0, "umount %s: %s", g_mnt[0], strerror(errno));
    }
    int st = td_node_wait(c, 0, STOP_WAIT_MS);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d after the umount", st);
    size_t n;
    char *log = (char *)slurp(c->nodes[0].log, &n);
    log = realloc(log, n + 1); /* slurp's bytes end without a NUL */
    TT_CHECK(log != NULL, "realloc");
    log[n] = '\0';
    TT_CHECK(strstr(log, "event=unmounted") && strstr(log, "action=leave"), "no unmounted line in the log");
    TT_CHECK(strstr(log, "module=daemon event=leaving"), "the daemon did not leave the cluster gracefully");
    free(log);
    memset(g_mnt, 0, sizeof g_mnt);
    td_pass(c);
}

/* ---- uploads ---------------------------------------------------------------------------------- */

/* Downloads s3://bucket/key with awscli and checks its bytes. */
static void check_with_aws(td_cluster *c, const char *key, const uint8_t *want, size_t len)
{
    char dst[512];
    snprintf(dst, sizeof dst, "%s/aws-download", c->dir);
    TT_CHECK(aws(c, "s3 cp 's3://%s/%s' '%s'", TD_BUCKET, key, dst) == 0, "aws s3 cp of %s failed", key);
    size_t n;
    uint8_t *got = slurp(dst, &n);
    TT_CHECK(n == len && memcmp(got, want, len) == 0, "aws s3 cp of %s: %zu bytes, not those written (%zu)", key, n,
             len);
    free(got);
    unlink(dst);
}

TT_TEST(test_mount_e2e_close_uploads_what_was_written)
{
    require_aws();
    td_cluster *c = cluster(1);
    start_mounted(c, 0, "60", "5", NULL);
    const size_t size = 5 * MIB + 3;
    uint8_t *data = td_content(size, 11);
    char p[1024];
    tt_s3rver_stats_reset(&c->s3);
    write_file(mpath(p, sizeof p, 0, "out.bin"), data, size);
    TT_CHECK(tt_s3rver_stat(&c->s3, "puts") == 1, "%ld PUTs for one small file",
             tt_s3rver_stat(&c->s3, "puts"));
    check_with_aws(c, "out.bin", data, size);
    check_file(p, size, 11);
    free(data);
    finish(c);
}

TT_TEST(test_mount_e2e_dd_of_a_large_file_is_a_multipart_upload)
{
    require_aws();
    td_cluster *c = cluster(1);
    start_mounted(c, 0, "60", "5", NULL);
    const size_t size = 64 * MIB;
    uint8_t *data = td_content(size, 12);
    char src[512], p[1024], cmd[2200];
    snprintf(src, sizeof src, "%s/dd-source", c->dir);
    FILE *f = fopen(src, "wb");
    TT_CHECK(f && fwrite(data, 1, size, f) == size && fclose(f) == 0, "writing %s", src);
    tt_s3rver_stats_reset(&c->s3);
    snprintf(cmd, sizeof cmd, "dd if='%s' of='%s' bs=1M status=none", src, mpath(p, sizeof p, 0, "big.bin"));
    TT_CHECK(system(cmd) == 0, "dd failed: %s", cmd);
    long posts = tt_s3rver_stat(&c->s3, "posts"), puts = tt_s3rver_stat(&c->s3, "puts");
    tt_note("64 MiB through dd: %ld POST (initiate, complete), %ld PUT (parts)", posts, puts);
    TT_CHECK(posts == 2, "%ld POSTs: expected a multipart upload's initiate and complete", posts);
    /* 8 parts of 8 MiB; dd's ftruncate(0) of the file it just created costs one more, empty, PUT. */
    TT_CHECK(puts >= 8 && puts <= 9, "%ld PUTs: expected 8 parts of 8 MiB (and dd's empty truncate)", puts);
    check_with_aws(c, "big.bin", data, size);
    unlink(src);
    free(data);
    finish(c);
}

typedef struct writer {
    const char *path;
    const uint8_t *data;
    size_t len;
    int err; /* errno of the first failed call, 0 when every call succeeded */
    const char *call;
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    int fd = open(w->path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        w->err = errno;
        w->call = "open";
        return NULL;
    }
    for (size_t off = 0; off < w->len;) {
        ssize_t n = write(fd, w->data + off, w->len - off < MIB ? w->len - off : MIB);
        if (n <= 0) {
            w->err = n < 0 ? errno : EIO;
            w->call = "write";
            close(fd);
            return NULL;
        }
        off += (size_t)n;
    }
    if (close(fd) != 0) {
        w->err = errno;
        w->call = "close";
    }
    return NULL;
}

TT_TEST(test_mount_e2e_killed_daemon_leaves_no_partial_object_and_the_writer_fails)
{
    td_cluster *c = cluster(1);
    start_mounted(c, 0, "60", "5", NULL);
    const size_t size = 96 * MIB;
    uint8_t *data = td_content(size, 13);
    char p[1024];
    tt_s3rver_stats_reset(&c->s3);
    writer w = {.path = mpath(p, sizeof p, 0, "killed.bin"), .data = data, .len = size};
    pthread_t t;
    TT_CHECK(pthread_create(&t, NULL, writer_main, &w) == 0, "pthread_create");
    /* Kill the daemon once the multipart upload has begun and its first part went out. */
    uint64_t t0 = td_now_ms();
    while (tt_s3rver_stat(&c->s3, "posts") < 1 || tt_s3rver_stat(&c->s3, "puts") < 1) {
        TT_CHECK(td_now_ms() - t0 < 20000, "the upload did not start within 20 s");
        td_sleep_ms(5);
    }
    td_node_signal(c, 0, SIGKILL);
    td_node_wait(c, 0, 10000);
    pthread_join(t, NULL);
    tt_note("the writer's %s failed with %s", w.call ? w.call : "(nothing)", strerror(w.err));
    TT_CHECK(w.err != 0, "the writer got no error although the daemon died during its upload");
    s3_client *s3 = td_s3_client(c);
    s3_object_info info;
    TT_CHECK(s3_head(s3, TD_BUCKET, "killed.bin", &info) != 0 && shoal_error_code() == SHOAL_ERR_S3_NO_SUCH_KEY,
             "an object killed.bin exists (%llu bytes) after the daemon died during its upload",
             (unsigned long long)info.size);
    s3_client_delete(s3);
    /* The dead mount is still there; the next start detaches it and mounts again. The daemon
     * makes its control socket after the mount, so a new socket means the new mount is up. */
    unlink(c->nodes[0].control);
    start_mounted(c, 0, "60", "5", NULL);
    struct stat st;
    TT_CHECK(stat(p, &st) != 0 && errno == ENOENT, "killed.bin after the restart: %s", strerror(errno));
    free(data);
    finish(c);
}

/* With --upload-delay, close returns once the file is durable on the node's disk. A daemon killed
 * with SIGKILL while the upload waits uploads it when it starts again: the object appears in S3
 * with the bytes written, and nothing was uploaded before the crash. */
TT_TEST(test_mount_e2e_upload_delay_pending_upload_survives_kill_9)
{
    td_cluster *c = cluster(1);
    start_mounted(c, 0, "60", "1", "--upload-delay=60");
    const size_t size = 2 * MIB + 5;
    uint8_t *data = td_content(size, 21);
    char p[1024];
    tt_s3rver_stats_reset(&c->s3);
    write_file(mpath(p, sizeof p, 0, "pending.bin"), data, size);
    check_file(p, size, 21); /* this node shows the pending file */
    s3_client *s3 = td_s3_client(c);
    s3_object_info info;
    TT_CHECK(s3_head(s3, TD_BUCKET, "pending.bin", &info) != 0 && shoal_error_code() == SHOAL_ERR_S3_NO_SUCH_KEY,
             "pending.bin is in S3 before its delay ended");
    TT_CHECK(tt_s3rver_stat(&c->s3, "puts") == 0, "%ld PUTs before the delay ended", tt_s3rver_stat(&c->s3, "puts"));
    TT_CHECK(td_stat(c, 0, "mount.uploads_pending") == 1, "mount.uploads_pending is %llu, want 1",
             (unsigned long long)td_stat(c, 0, "mount.uploads_pending"));
    td_node_signal(c, 0, SIGKILL);
    td_node_wait(c, 0, 10000);
    unlink(c->nodes[0].control);
    start_mounted(c, 0, "60", "1", "--upload-delay=60");
    uint64_t t0 = td_now_ms();
    while (s3_head(s3, TD_BUCKET, "pending.bin", &info) != 0) {
        TT_CHECK(td_now_ms() - t0 < 20000, "pending.bin not in S3 20 s after the restart");
        td_sleep_ms(50);
    }
    uint8_t *got = malloc(size + 1);
    uint64_t n = 0;
    s3_get_args ga = {.bucket = TD_BUCKET, .key = "pending.bin", .buf = got, .buf_len = size + 1};
    TT_CHECK(s3_get(s3, &ga, &n, NULL) == 0, "GET pending.bin: %s", shoal_error_message());
    TT_CHECK(n == size && memcmp(got, data, size) == 0, "S3 holds %llu bytes, not the %zu written",
             (unsigned long long)n, size);
    TT_CHECK(tt_s3rver_stat(&c->s3, "puts") == 1, "%ld PUTs, want 1", tt_s3rver_stat(&c->s3, "puts"));
    t0 = td_now_ms();
    while (td_stat(c, 0, "mount.uploads_pending") != 0) { /* the gauge follows the upload */
        TT_CHECK(td_now_ms() - t0 < 5000, "mount.uploads_pending stays above 0 after the upload");
        td_sleep_ms(20);
    }
    check_file(p, size, 21);
    s3_client_delete(s3);
    free(got);
    free(data);
    finish(c);
}

/* ---- two nodes -------------------------------------------------------------------------------- */

#define DS_OBJECTS 40
#define DS_SMALL 100000u
#define DS_LARGE (3u * MIB)

static size_t ds_size(int k) { return k % 10 == 9 ? DS_LARGE : DS_SMALL + (size_t)k * 97u; }

typedef struct reader {
    int node;
} reader;

static void *reader_main(void *arg)
{
    reader *r = arg;
    char rel[64], p[1024];
    for (int k = 0; k < DS_OBJECTS; k++) {
        snprintf(rel, sizeof rel, "ds/part-%02d.bin", k);
        check_file(mpath(p, sizeof p, r->node, rel), ds_size(k), (uint32_t)k);
    }
    return NULL;
}

TT_TEST(test_mount_e2e_two_mounts_fetch_each_block_from_s3_once)
{
    td_cluster *c = cluster(2);
    long blocks = 0;
    char key[64];
    for (int k = 0; k < DS_OBJECTS; k++) {
        snprintf(key, sizeof key, "ds/part-%02d.bin", k);
        td_put(c, key, ds_size(k), (uint32_t)k);
        blocks += (long)((ds_size(k) + MIB - 1) / MIB);
    }
    /* A peer timeout no load reaches: a reader waits for its owner, so the count holds anywhere. */
    start_mounted2(c, 0, "60", "5", "--peer-timeout", "120000");
    start_mounted2(c, 1, "60", "5", "--peer-timeout", "120000");
    td_wait_cluster(c, 10000);
    tt_s3rver_stats_reset(&c->s3);
    reader r[2] = {{0}, {1}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        TT_CHECK(pthread_create(&t[i], NULL, reader_main, &r[i]) == 0, "pthread_create");
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    long gets = tt_s3rver_stat(&c->s3, "gets");
    tt_note("two mounts read %d objects (%ld blocks): %ld GETs at the server", DS_OBJECTS, blocks, gets);
    TT_CHECK(gets * 100 <= blocks * 102, "%ld GETs for %ld unique blocks (allowed: 1.02 x)", gets, blocks);
    finish(c);
}

/* The first bytes of an uncached file do not wait for their whole block: with one 48 MiB block,
 * the first 64 KiB read returns while the block is still arriving (nothing stored yet), the rest
 * reads back exact, and the block was fetched with one GET. */
TT_TEST(test_mount_e2e_first_bytes_of_an_uncached_block_come_before_the_whole_block)
{
    /* The fault proxy (a fake on purpose) sends the block's first MiB and then holds the GET's
     * connection open and silent: until the daemon's stall limit (30 s) sends the GET again, the
     * block cannot be whole, so a first read that returns before then came from the streamed
     * prefix, whatever the machine's load. */
    td_cluster *c = cluster_bs(1, "64M");
    const size_t size = 48 * MIB;
    td_put(c, "big/one.bin", size, 31);
    tt_proxy px;
    tt_proxy_start(&px, c->s3.port, NULL, NULL);
    c->endpoint = px.endpoint;
    start_mounted2(c, 0, "60", "5", "--read-only", "--s3-stall-timeout=30");
    char p[1024];
    size_t n = 0;
    char **names = list_dir(mpath(p, sizeof p, 0, "big"), &n); /* the listing answers the lookup */
    free_names(names, n);
    tt_s3rver_stats_reset(&c->s3);
    tt_proxy_rule(&px, "action=stall&count=1&method=GET&match=one.bin&bytes=1048576&ms=600000");
    uint8_t *want = td_content(size, 31);
    int fd = open(mpath(p, sizeof p, 0, "big/one.bin"), O_RDONLY);
    TT_CHECK(fd >= 0, "open %s: %s", p, strerror(errno));
    uint8_t head[65536];
    TT_CHECK(read(fd, head, sizeof head) == (ssize_t)sizeof head, "read: %s", strerror(errno));
    uint64_t stored = td_stat(c, 0, "cache.blocks");
    uint64_t resent = td_stat(c, 0, "s3.stall_retries");
    TT_CHECK(memcmp(head, want, sizeof head) == 0, "the first 64 KiB differ");
    TT_CHECK(stored == 0 && resent == 0,
             "the first 64 KiB came only after the whole 48 MiB block was stored (%llu blocks, %llu GETs resent)",
             (unsigned long long)stored, (unsigned long long)resent);
    close(fd);
    check_file(p, size, 31); /* waits for the stall limit: the GET sent again brings the rest */
    long gets = tt_s3rver_stat(&c->s3, "gets");
    resent = td_stat(c, 0, "s3.stall_retries");
    TT_CHECK(gets == 2 && resent == 1, "%ld GETs and %llu resent for a file of one block whose first GET stalled", gets,
             (unsigned long long)resent);
    free(want);
    finish(c);
    tt_proxy_stop(&px);
}

/* ---- memory ----------------------------------------------------------------------------------- */

/* The daemon's memory bound, as docs/operations.md ("Memory") derives it from the options, in two
 * parts. The block buffers (--fetch-buffers, by default max(4, 64 MiB / block size), each its block
 * size and a page) are counted by the daemon itself: cache.buffer_budget_bytes is what they may
 * map, cache.buffer_peak_bytes the most they mapped at once, exactly. The rest, which no counter
 * sees, is bounded from the resident size: the store's four direct-write buffers of 1 MiB, and per
 * mount worker thread (libfuse's 10) a read's reply of up to 1 MiB, libfuse's request buffer (1 MiB
 * and a page), the 64 KiB chunk a read verifies on its stack, and up to 1 MiB of freed replies the
 * allocator keeps for the thread. */
#define MEM_MOUNT_THREADS 10
static uint64_t mem_buffer_budget(uint64_t block_size, unsigned fetch_buffers)
{
    if (fetch_buffers == 0)
        fetch_buffers = 64 * MIB / block_size > 4 ? (unsigned)(64 * MIB / block_size) : 4;
    return fetch_buffers * (block_size + (uint64_t)sysconf(_SC_PAGESIZE));
}

static uint64_t mem_other_bound(void)
{
    uint64_t per_thread = MIB + (MIB + 4096) + 65536 + MIB;
    return 4 * MIB + MEM_MOUNT_THREADS * per_thread;
}

/* A line "Name:  N kB" of /proc/PID/status, in bytes. */
static uint64_t proc_status_bytes(pid_t pid, const char *name)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    TT_CHECK(f != NULL, "open %s: %s", path, strerror(errno));
    unsigned long long kb = 0;
    size_t n = strlen(name);
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strncmp(line, name, n) == 0 && line[n] == ':' && sscanf(line + n + 1, "%llu", &kb) == 1;
    fclose(f);
    TT_CHECK(found, "no %s in %s", name, path);
    return kb * 1024;
}

/* The daemon's resident memory now, after its peak is reset to it (clear_refs 5, when allowed). */
static uint64_t mem_idle(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/clear_refs", (int)pid);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
    return proc_status_bytes(pid, "VmRSS");
}

typedef struct mem_reader {
    int node;
    int file;
    size_t size;
    const uint8_t *want;
    unsigned random_reads; /* after the sequential pass, this many 4 KiB and 128 KiB preads */
    int failed;
} mem_reader;

static void *mem_reader_main(void *arg)
{
    mem_reader *r = arg;
    char rel[64], p[1024];
    snprintf(rel, sizeof rel, "big/f%d.bin", r->file);
    int fd = open(mpath(p, sizeof p, r->node, rel), O_RDONLY);
    uint8_t *buf = malloc(MIB);
    if (fd < 0 || buf == NULL) {
        r->failed = 1;
        goto done;
    }
    for (size_t off = 0; off < r->size && !r->failed; off += MIB) {
        ssize_t n = pread(fd, buf, MIB, (off_t)off);
        r->failed = n != (ssize_t)MIB || memcmp(buf, r->want + off, MIB) != 0 ? 2 : 0;
    }
    uint64_t x = 0x2545F4914F6CDD1Dull ^ (uint64_t)r->file;
    for (unsigned i = 0; i < r->random_reads && !r->failed; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t len = i % 8 == 0 ? 128 * 1024 : 4096, off = (size_t)(x % (r->size / len)) * len;
        ssize_t n = pread(fd, buf, len, (off_t)off);
        r->failed = n != (ssize_t)len || memcmp(buf, r->want + off, len) != 0 ? 3 : 0;
    }
done:
    if (fd >= 0)
        close(fd);
    free(buf);
    return NULL;
}

/* Four readers at once, one big file each; the daemon's peak resident memory above `idle`. */
static uint64_t mem_read_all(td_cluster *c, int files, size_t size, const uint8_t *want, unsigned random_reads,
                             uint64_t idle, const char *what)
{
    mem_reader r[8];
    pthread_t t[8];
    for (int k = 0; k < files; k++) {
        r[k] = (mem_reader){.node = 0, .file = k, .size = size, .want = want, .random_reads = random_reads};
        TT_CHECK(pthread_create(&t[k], NULL, mem_reader_main, &r[k]) == 0, "pthread_create");
    }
    for (int k = 0; k < files; k++) {
        pthread_join(t[k], NULL);
        TT_CHECK(r[k].failed == 0, "%s: reader of big/f%d.bin failed (%d: open, short read or wrong bytes)", what, k,
                 r[k].failed);
    }
    uint64_t peak = proc_status_bytes(c->nodes[0].pid, "VmHWM");
    return peak > idle ? peak - idle : 0;
}

/* Four readers of four big files at once on a daemon started with `fetch_buffers` (NULL: the
 * default): cold, then (when `from_store`) from the store after a restart, so that the kernel's
 * page cache of the mount is gone and every read reaches the daemon, sequentially and then at
 * random. Each pass keeps the daemon's peak resident memory (VmHWM) within its idle resident memory
 * plus what docs/operations.md ("Memory") derives from the block size and --fetch-buffers. */
static void mem_check_bound(const char *fetch_buffers, bool from_store)
{
#if defined(__SANITIZE_ADDRESS__)
    /* AddressSanitizer keeps freed memory in a quarantine (256 MiB by default) and adds its shadow
     * memory, so the daemon's resident size says nothing about the bound; the plain build checks it. */
    TT_SKIP("the daemon runs under AddressSanitizer, whose quarantine and shadow memory count in its RSS");
#endif
    enum { FILES = 4 };
    const uint64_t bs = 4 * MIB;
    const size_t size = 48 * MIB; /* 48 blocks in all: they fit the harness's 256 MiB store */
    td_cluster *c = cluster_bs(1, "4M");
    uint8_t *want = td_content(size, 43);
    char rel[64], p[1024];
    for (int k = 0; k < FILES; k++) {
        snprintf(rel, sizeof rel, "big/f%d.bin", k);
        td_put(c, rel, size, 43);
    }
    uint64_t budget = mem_buffer_budget(bs, fetch_buffers ? (unsigned)atoi(fetch_buffers) : 0);
    for (int pass = 0; pass < (from_store ? 2 : 1); pass++) {
        if (pass == 1) { /* the blocks are stored: a new daemon and mount read them from the store */
            td_node_signal(c, 0, SIGTERM);
            int st = td_node_wait(c, 0, STOP_WAIT_MS);
            TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d after SIGTERM", st);
        }
        const char *flags[] = {"--read-only", fetch_buffers ? "--fetch-buffers" : NULL, fetch_buffers, NULL};
        start_mounted_flags(c, 0, "60", "5", flags);
        size_t n = 0;
        char **names = list_dir(mpath(p, sizeof p, 0, "big"), &n); /* the listing answers the lookups */
        free_names(names, n);
        uint64_t idle = mem_idle(c->nodes[0].pid);
        const char *what = pass == 0 ? "cold" : "from the store";
        uint64_t above = mem_read_all(c, FILES, size, want, pass == 0 ? 0 : 2000, idle, what);
        /* The block buffers, exactly: the daemon's budget is the formula's, and it never mapped
         * past it (a fetch waits for a buffer instead). */
        uint64_t daemon_budget = td_stat(c, 0, "cache.buffer_budget_bytes");
        uint64_t buffers = td_stat(c, 0, "cache.buffer_peak_bytes");
        /* The rest from the resident size: what it grew by, less the most the buffers mapped (a
         * part of its peak at most), within the formula's other terms. */
        uint64_t other = above > buffers ? above - buffers : 0, other_bound = mem_other_bound();
        tt_note("%s, --fetch-buffers %s: idle %.1f MiB, peak %.1f MiB above it: block buffers %.1f MiB at most "
                "(budget %.1f MiB), the rest %.1f MiB (bound %.1f MiB)",
                what, fetch_buffers ? fetch_buffers : "default", idle / (double)MIB, above / (double)MIB,
                buffers / (double)MIB, budget / (double)MIB, other / (double)MIB, other_bound / (double)MIB);
        TT_CHECK(daemon_budget == budget, "%s: the daemon's buffer budget is %llu bytes, the formula's %llu", what,
                 (unsigned long long)daemon_budget, (unsigned long long)budget);
        TT_CHECK(buffers <= budget, "%s: the block buffers mapped %.1f MiB at once, past their budget of %.1f MiB",
                 what, buffers / (double)MIB, budget / (double)MIB);
        TT_CHECK(pass == 1 || buffers > 0, "%s: no block came through a block buffer", what);
        TT_CHECK(other <= other_bound,
                 "%s: the daemon's peak was %.1f MiB above its idle %.1f MiB, %.1f MiB past its block buffers' "
                 "%.1f MiB, more than the bound of %.1f MiB for the rest",
                 what, above / (double)MIB, idle / (double)MIB, other / (double)MIB, buffers / (double)MIB,
                 other_bound / (double)MIB);
        /* The last blocks may still be on their way to the store after the readers had their bytes. */
        for (uint64_t until = td_now_ms() + 30000;
             pass == 0 && td_stat(c, 0, "cache.blocks") < FILES * size / bs && td_now_ms() < until;)
            td_sleep_ms(50);
        if (pass == 0)
            TT_CHECK(td_stat(c, 0, "cache.blocks") == FILES * size / bs, "%llu blocks stored, %llu expected",
                     (unsigned long long)td_stat(c, 0, "cache.blocks"), (unsigned long long)(FILES * size / bs));
    }
    free(want);
    finish(c);
}

/* Memory is bounded by the options, not by the data, with the default options: the files hold six
 * times as many blocks as there are block buffers, so a read path that kept what it fetched, or
 * kept the blocks it reads mapped, would pass the bound. */
TT_TEST(test_mount_e2e_big_reads_keep_the_daemon_within_its_memory_bound) { mem_check_bound(NULL, true); }

/* The bound follows --fetch-buffers: with 2 block buffers, four readers of cold files (whose
 * read-ahead alone would fetch more blocks at once) wait for buffers instead of allocating. */
TT_TEST(test_mount_e2e_cold_reads_keep_the_daemon_within_the_memory_bound_of_fetch_buffers)
{
    mem_check_bound("2", false);
}

/* SPEC §4: the blocks of a file written through one node's mount are placed on their owners, so
 * the other nodes read a fresh checkpoint without asking S3 for it. */
TT_TEST(test_mount_e2e_written_blocks_reach_their_owners_so_other_nodes_read_no_s3)
{
    td_cluster *c = cluster(3);
    for (int i = 0; i < 3; i++) /* a peer timeout no busy machine reaches: every push is answered */
        start_mounted2(c, i, "60", "1", "--peer-timeout", "120000");
    td_wait_cluster(c, 10000);
    const size_t size = 7 * MIB + 5; /* 8 blocks of 1 MiB */
    uint8_t *data = td_content(size, 23);
    char p[1024];
    TT_CHECK(mkdir(mpath(p, sizeof p, 0, "ckpt"), 0755) == 0, "mkdir %s: %s", p, strerror(errno));
    write_file(mpath(p, sizeof p, 0, "ckpt/step-100.pt"), data, size);
    /* The pushes were started before close returned; they are answered in the background. Wait
     * for every one to end (accepted or failed), however long a busy machine takes. */
    uint64_t started = td_stat(c, 0, "peer.pushes_started");
    TT_CHECK(started > 0, "node0 pushed no block of an 8-block file to the other two owners");
    while (td_stat(c, 0, "peer.pushes") + td_stat(c, 0, "peer.push_failures") < started)
        td_sleep_ms(20);
    uint64_t pushes = td_stat(c, 0, "peer.pushes");
    TT_CHECK(td_stat(c, 0, "peer.push_failures") == 0, "%llu pushes failed",
             (unsigned long long)td_stat(c, 0, "peer.push_failures"));
    tt_s3rver_stats_reset(&c->s3);
    for (int i = 1; i < 3; i++)
        check_file(mpath(p, sizeof p, i, "ckpt/step-100.pt"), size, 23);
    long gets = tt_s3rver_stat(&c->s3, "gets");
    tt_note("node0 pushed %llu blocks; nodes 1 and 2 read the file with %ld S3 GETs", (unsigned long long)pushes,
            gets);
    TT_CHECK(gets == 0, "%ld S3 GETs to read a file just written through the cluster", gets);
    for (int i = 1; i < 3; i++)
        TT_CHECK(td_stat(c, i, "peer.puts_refused") == 0, "node%d refused a pushed block", i);
    free(data);
    finish(c);
}

/* ---- access patterns --------------------------------------------------------------------------- */

/* Reads `len` bytes at `off` of the O_DIRECT descriptor fd (no page cache, no kernel readahead:
 * the mount sees exactly this read) and checks them against want. */
static void direct_read_check(int fd, uint64_t off, size_t len, const uint8_t *want)
{
    void *buf = NULL;
    TT_CHECK(posix_memalign(&buf, 4096, len) == 0, "posix_memalign");
    ssize_t n = pread(fd, buf, len, (off_t)off);
    TT_CHECK(n == (ssize_t)len, "pread of %zu bytes at %llu: %zd (%s)", len, (unsigned long long)off, n,
             strerror(errno));
    TT_CHECK(memcmp(buf, want + off, len) == 0, "bytes at %llu differ from the object's", (unsigned long long)off);
    free(buf);
}

/* Waits until node i has no read-ahead queued or in flight (however long a busy machine takes). */
static void wait_readahead_idle(td_cluster *c, int i)
{
    while (td_stat(c, i, "reads.readahead_pending") != 0)
        td_sleep_ms(20);
}

/* Opens `rel` in node i's mount for O_DIRECT reads, after a listing answered its lookup. */
static int open_direct(td_cluster *c, int i, const char *dir, const char *rel)
{
    char p[1024];
    size_t n = 0;
    char **names = list_dir(mpath(p, sizeof p, i, dir), &n);
    free_names(names, n);
    int fd = open(mpath(p, sizeof p, i, rel), O_RDONLY | O_DIRECT);
    TT_CHECK(fd >= 0, "open %s: %s", p, strerror(errno));
    return fd;
}

/* One node with `block_size` blocks, mounted writable, and a cold object "<dir>/big.bin" of `size`
 * bytes from `seed`, open for O_DIRECT reads in *fd, its bytes in *want; the server's counts are
 * zero. */
static td_cluster *cold_file(const char *block_size, const char *dir, size_t size, uint32_t seed, uint8_t **want,
                             int *fd)
{
    td_cluster *c = cluster_bs(1, block_size);
    char key[256];
    snprintf(key, sizeof key, "%s/big.bin", dir);
    td_put(c, key, size, seed);
    start_mounted(c, 0, "60", "5", NULL);
    *want = td_content(size, seed);
    *fd = open_direct(c, 0, dir, key);
    tt_s3rver_stats_reset(&c->s3);
    return c;
}

/* Checks that node0's store holds `n` blocks, then closes the file and ends the case. */
static void end_cold_file(td_cluster *c, int fd, uint8_t *want, uint64_t n)
{
    uint64_t blocks = td_stat(c, 0, "cache.blocks");
    TT_CHECK(blocks == n, "%llu whole blocks fetched and stored, expected %llu", (unsigned long long)blocks,
             (unsigned long long)n);
    close(fd);
    free(want);
    finish(c);
}

#define RANDOM_READS 16

/* The block (of 16 of a 64 MiB file) each random read lands in: never next to the one before. */
static const unsigned RANDOM_BLOCKS[RANDOM_READS] = {9, 2, 14, 5, 11, 1, 7, 13, 3, 15, 6, 0, 10, 4, 12, 8};

/* Offset of random read k: a page of block RANDOM_BLOCKS[k] of 4 MiB, never the file's first byte. */
static uint64_t random_offset(int k)
{
    return (uint64_t)RANDOM_BLOCKS[k] * 4 * MIB + (uint64_t)(1 + (k * 389) % 1000) * 4096;
}

/* Random 4 KiB reads of a cold 64 MiB file (4 MiB blocks) fetch their own bytes: each read is one
 * ranged GET of its 4 KiB, so S3 sends exactly the bytes read (the bound asked is 2x, with no
 * fixed overhead: the open's metadata comes from the listing, and a HEAD is no GET); no block is
 * fetched whole and nothing is read ahead. */
TT_TEST(test_mount_e2e_random_reads_of_a_cold_file_fetch_only_their_bytes)
{
    uint8_t *want;
    int fd;
    td_cluster *c = cold_file("4M", "rand", 64 * MIB, 41, &want, &fd);
    for (int k = 0; k < RANDOM_READS; k++)
        direct_read_check(fd, random_offset(k), 4096, want);
    /* Read-ahead is queued before a read returns: none pending now means none was ever asked, or
     * it ended and its GETs are counted below. */
    uint64_t pending = td_stat(c, 0, "reads.readahead_pending");
    long gets = tt_s3rver_stat(&c->s3, "gets"), bytes = tt_s3rver_stat(&c->s3, "getBytes");
    long read_bytes = RANDOM_READS * 4096;
    tt_note("%d random reads of 4 KiB: %ld GETs, %ld bytes from S3", RANDOM_READS, gets, bytes);
    TT_CHECK(pending == 0, "%llu blocks read ahead for a random reader", (unsigned long long)pending);
    TT_CHECK(bytes <= 2 * read_bytes, "%ld bytes fetched from S3 to read %ld", bytes, read_bytes);
    TT_CHECK(gets == RANDOM_READS, "%ld GETs for %d reads", gets, RANDOM_READS);
    TT_CHECK(td_stat(c, 0, "reads.parts") == RANDOM_READS, "reads.parts is %llu",
             (unsigned long long)td_stat(c, 0, "reads.parts"));
    end_cold_file(c, fd, want, 0);
}

/* A sequential reader of a cold file (1 MiB blocks) has whole blocks read ahead, each fetched once,
 * in a window that doubles as the run grows: after reading blocks 0-2 (a 3 MiB run) the window is
 * 4 blocks past block 2, refilled once half of it is missing, so blocks 0-4 at least and 0-6 at
 * most are fetched. Blocks asked for together are fetched with one GET (a run: reads.run_gets,
 * reads.run_blocks), so there are fewer GETs than blocks. A seek starts over: a 4 KiB read at
 * block 20 is one ranged GET of those 4 KiB and reads nothing ahead; the next 4 KiB continue it,
 * so block 20 is fetched whole and the window is 1 again (block 21 only). */
TT_TEST(test_mount_e2e_sequential_reads_prefetch_a_growing_window_and_a_seek_resets_it)
{
    uint8_t *want;
    int fd;
    td_cluster *c = cold_file("1M", "seq", 32 * MIB, 43, &want, &fd);
    for (uint64_t off = 0; off < 3 * MIB; off += 128 * 1024)
        direct_read_check(fd, off, 128 * 1024, want);
    wait_readahead_idle(c, 0);
    long gets = tt_s3rver_stat(&c->s3, "gets"), bytes = tt_s3rver_stat(&c->s3, "getBytes");
    long runs = (long)td_stat(c, 0, "reads.run_gets"), in_runs = (long)td_stat(c, 0, "reads.run_blocks");
    tt_note("3 MiB read sequentially: %ld GETs (%ld of them for %ld blocks), %ld bytes from S3", gets, runs, in_runs,
            bytes);
    long stored = (long)td_stat(c, 0, "cache.blocks");
    TT_CHECK(stored >= 5 && stored <= 7 && bytes == stored * (long)MIB,
             "%ld blocks stored, %ld bytes from S3: expected blocks 0-4 to 0-6, each once", stored, bytes);
    TT_CHECK(gets == stored - (in_runs - runs), "%ld GETs for %ld blocks, %ld of them runs of %ld blocks", gets, stored,
             runs, in_runs);
    TT_CHECK(gets < stored, "%ld GETs for %ld blocks read ahead sequentially: one per block", gets, stored);

    direct_read_check(fd, 20 * (uint64_t)MIB, 4096, want);
    uint64_t pending = td_stat(c, 0, "reads.readahead_pending");
    gets = tt_s3rver_stat(&c->s3, "gets");
    bytes = tt_s3rver_stat(&c->s3, "getBytes");
    TT_CHECK(pending == 0, "the read after a seek had %llu blocks read ahead", (unsigned long long)pending);
    long seq_gets = stored - (in_runs - runs);
    TT_CHECK(gets == seq_gets + 1 && bytes == stored * (long)MIB + 4096, "after the seek: %ld GETs, %ld bytes", gets,
             bytes);

    direct_read_check(fd, 20 * (uint64_t)MIB + 4096, 4096, want);
    wait_readahead_idle(c, 0);
    gets = tt_s3rver_stat(&c->s3, "gets");
    TT_CHECK(gets == seq_gets + 3, "%ld GETs: expected block 20 whole and block 21 ahead of it, nothing more",
             gets - seq_gets - 1);
    end_cold_file(c, fd, want, (uint64_t)stored + 2);
}

/* A random read of a block another node holds is served from that node's copy, not from S3: node0
 * reads a file through (every block then held by its owner), then node1's random reads cost no
 * S3 GET. */
TT_TEST(test_mount_e2e_random_reads_of_blocks_a_peer_holds_cost_no_s3)
{
    td_cluster *c = cluster_bs(2, "1M");
    const size_t size = 16 * MIB;
    td_put(c, "peer/big.bin", size, 47);
    for (int i = 0; i < 2; i++) /* a peer timeout no busy machine reaches: owners always answer */
        start_mounted2(c, i, "60", "5", "--peer-timeout", "120000");
    td_wait_cluster(c, 10000);
    char p[1024];
    check_file(mpath(p, sizeof p, 0, "peer/big.bin"), size, 47);
    wait_readahead_idle(c, 0);
    uint8_t *want = td_content(size, 47);
    int fd = open_direct(c, 1, "peer", "peer/big.bin");
    tt_s3rver_stats_reset(&c->s3);
    for (unsigned k = 0; k < 16; k++)
        direct_read_check(fd, (uint64_t)((k * 7) % 16) * MIB + 65536 + 8192 * k, 4096, want);
    long gets = tt_s3rver_stat(&c->s3, "gets");
    TT_CHECK(gets == 0, "%ld S3 GETs for random reads of blocks the cluster holds", gets);
    TT_CHECK(td_stat(c, 1, "reads.peer") > 0, "node1 read no block from node0");
    close(fd);
    free(want);
    finish(c);
}

/* A node with a read-only mount that read `rel` (`size` bytes of seed `seed`, 1 MiB blocks) through,
 * so that all its blocks are stored, then stopped: started again, it holds no block, and its reads
 * of the file come from the store. */
static td_cluster *stored_then_stopped(const char *rel, size_t size, uint32_t seed)
{
    td_cluster *c = cluster(1);
    td_put(c, rel, size, seed);
    start_mounted(c, 0, "60", "5", "--read-only");
    char p[1024];
    check_file(mpath(p, sizeof p, 0, rel), size, seed);
    wait_readahead_idle(c, 0);
    uint64_t blocks = td_stat(c, 0, "cache.blocks");
    TT_CHECK(blocks == (size + MIB - 1) / MIB, "%llu blocks stored, expected %llu", (unsigned long long)blocks,
             (unsigned long long)((size + MIB - 1) / MIB));
    td_node_signal(c, 0, SIGTERM);
    int st = td_node_wait(c, 0, STOP_WAIT_MS);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d after SIGTERM", st);
    return c;
}

/* Reads through the mount check a stored block a 64 KiB chunk at a time, and a damaged chunk makes
 * its block a miss under the read policy, never a source of bytes. After a restart (no block held)
 * with chunk 5 of each of the 3 stored blocks (1 MiB) damaged on disk, every read O_DIRECT so the
 * mount sees exactly these:
 * - sequential from offset 0 in 64 KiB reads: chunks 0-4 of block 0 come from the store (no GET);
 *   the read of chunk 5 drops block 0 and fetches it whole (1 GET, 1 MiB); the window ahead is
 *   block 1, which is stored, so nothing else is fetched;
 * - a seek to block 1's damaged chunk, 4 KiB: block 1 is dropped and the random read fetches just
 *   its 4 KiB (1 ranged GET);
 * - the whole file again from offset 0: block 0 from the store, block 1 (dropped) and block 2
 *   (dropped at its chunk 5) fetched whole, once each (2 GETs).
 * 4 GETs, 3 MiB + 4 KiB from S3, 3 blocks counted corrupt, and every byte read is the object's. */
TT_TEST(test_mount_e2e_damaged_chunk_of_a_stored_block_is_never_read_through_the_mount)
{
    enum { CHUNK = 64 << 10, BAD = 5 * CHUNK + 100 };
    const size_t size = 3 * MIB;
    td_cluster *c = stored_then_stopped("rot/one.bin", size, 41);
    char cmd[700], path[1024];
    snprintf(cmd, sizeof cmd, "find '%s/cache/blocks' -mindepth 3 -type f -name '[0-9a-f]*'", c->nodes[0].dir);
    FILE *list = popen(cmd, "r");
    int damaged = 0;
    while (list && fgets(path, sizeof path, list)) {
        path[strcspn(path, "\n")] = '\0';
        FILE *f = fopen(path, "r+b");
        int b = f && fseek(f, 48 + BAD, SEEK_SET) == 0 ? fgetc(f) : EOF;
        TT_CHECK(b != EOF && fseek(f, 48 + BAD, SEEK_SET) == 0 && fputc(b ^ 0x55, f) != EOF && fclose(f) == 0,
                 "damaging %s", path);
        damaged++;
    }
    TT_CHECK(list && pclose(list) == 0 && damaged == 3, "%d block files damaged, 3 expected", damaged);

    start_mounted(c, 0, "60", "5", "--read-only");
    uint8_t *want = td_content(size, 41);
    int fd = open_direct(c, 0, "rot", "rot/one.bin");
    tt_s3rver_stats_reset(&c->s3);
    for (uint64_t off = 0; off < 5 * CHUNK; off += CHUNK)
        direct_read_check(fd, off, CHUNK, want);
    wait_readahead_idle(c, 0);
    long gets = tt_s3rver_stat(&c->s3, "gets");
    uint64_t corrupt = td_stat(c, 0, "cache.corrupt_blocks");
    TT_CHECK(gets == 0 && corrupt == 0, "sound chunks of a damaged block: %ld GETs, %llu corrupt (0, 0)", gets,
             (unsigned long long)corrupt);

    direct_read_check(fd, 5 * CHUNK, CHUNK, want);
    wait_readahead_idle(c, 0);
    gets = tt_s3rver_stat(&c->s3, "gets");
    long bytes = tt_s3rver_stat(&c->s3, "getBytes");
    corrupt = td_stat(c, 0, "cache.corrupt_blocks");
    TT_CHECK(corrupt == 1 && gets == 1 && bytes == (long)MIB,
             "sequential read of the damaged chunk: %llu corrupt (1), %ld GETs (1), %ld bytes (1 MiB)",
             (unsigned long long)corrupt, gets, bytes);

    direct_read_check(fd, MIB + 5 * CHUNK, 4096, want);
    gets = tt_s3rver_stat(&c->s3, "gets");
    bytes = tt_s3rver_stat(&c->s3, "getBytes");
    corrupt = td_stat(c, 0, "cache.corrupt_blocks");
    TT_CHECK(corrupt == 2 && gets == 2 && bytes == (long)MIB + 4096,
             "random read of the damaged chunk: %llu corrupt (2), %ld GETs (2), %ld bytes (1 MiB + 4 KiB)",
             (unsigned long long)corrupt, gets, bytes);

    for (uint64_t off = 0; off < size; off += CHUNK)
        direct_read_check(fd, off, CHUNK, want);
    wait_readahead_idle(c, 0);
    close(fd);
    gets = tt_s3rver_stat(&c->s3, "gets");
    bytes = tt_s3rver_stat(&c->s3, "getBytes");
    corrupt = td_stat(c, 0, "cache.corrupt_blocks");
    TT_CHECK(corrupt == 3 && gets == 4 && bytes == 3 * (long)MIB + 4096,
             "after reading the file through: %llu corrupt (3), %ld GETs (4), %ld bytes (3 MiB + 4 KiB)",
             (unsigned long long)corrupt, gets, bytes);
    TT_CHECK(td_stat(c, 0, "cache.blocks") == 3, "%llu blocks stored, expected 3",
             (unsigned long long)td_stat(c, 0, "cache.blocks"));
    free(want);
    finish(c);
}

/* "<dir>/<name>" of `size` bytes from `seed`, stored by node 0, which is restarted read-only
 * (nothing held) with the file open for O_DIRECT reads in *fd, its bytes in *want; the server's
 * counts are zero. */
static td_cluster *stored_restarted(const char *dir, const char *name, size_t size, uint32_t seed, uint8_t **want,
                                    int *fd)
{
    char rel[256];
    snprintf(rel, sizeof rel, "%s/%s", dir, name);
    td_cluster *c = stored_then_stopped(rel, size, seed);
    start_mounted(c, 0, "60", "5", "--read-only");
    *want = td_content(size, seed);
    *fd = open_direct(c, 0, dir, rel);
    tt_s3rver_stats_reset(&c->s3);
    return c;
}

/* A random reader of a block in the store reads it as a held block: its first read opens the block
 * and later reads of it use that open block (and the chunks it verified), so reads at random in one
 * stored block open it once and cost S3 nothing. After a restart (nothing held), 6 random 4 KiB
 * reads of block 1 (1 MiB blocks), each a seek, count one read from the store, not 6. */
TT_TEST(test_mount_e2e_random_reads_of_a_stored_block_open_it_once_while_it_is_held)
{
    enum { READS = 6, STEP = 192 << 10 };
    static const unsigned ORDER[READS] = {3, 0, 4, 1, 5, 2};
    const size_t size = 3 * MIB;
    uint8_t *want;
    int fd;
    td_cluster *c = stored_restarted("held", "one.bin", size, 53, &want, &fd);
    uint64_t local = td_stat(c, 0, "reads.local");
    for (int k = 0; k < READS; k++)
        direct_read_check(fd, MIB + (uint64_t)ORDER[k] * STEP, 4096, want);
    local = td_stat(c, 0, "reads.local") - local;
    long gets = tt_s3rver_stat(&c->s3, "gets");
    TT_CHECK(local == 1 && gets == 0,
             "%d random reads of one stored block: %llu reads from the store (1), %ld GETs (0)", READS,
             (unsigned long long)local, gets);
    close(fd);
    free(want);
    finish(c);
}

/* A sequential reader of stored blocks has each block ahead of it hinted to the kernel for disk
 * read-ahead once: the first block its run opens hints the window past it, every later one only
 * the block entering the window. 16 stored blocks of 1 MiB read through in 256 KiB reads after a
 * restart (nothing held, nothing in the page cache that matters) hint blocks 1-15, 15 hints
 * (each block opened hinting its whole window gave 99). */
TT_TEST(test_mount_e2e_sequential_read_of_stored_blocks_hints_each_block_once)
{
    enum { BLOCKS = 16, STEP = 256 << 10 };
    const size_t size = BLOCKS * MIB;
    uint8_t *want;
    int fd;
    td_cluster *c = stored_restarted("hint", "seq.bin", size, 57, &want, &fd);
    uint64_t hints = td_stat(c, 0, "mount.disk_hints");
    for (uint64_t off = 0; off < size; off += STEP)
        direct_read_check(fd, off, STEP, want);
    hints = td_stat(c, 0, "mount.disk_hints") - hints;
    long gets = tt_s3rver_stat(&c->s3, "gets");
    TT_CHECK(hints == BLOCKS - 1 && gets == 0,
             "%d stored blocks read through: %llu hints (want %d: each block past the first once), %ld GETs (0)",
             BLOCKS, (unsigned long long)hints, BLOCKS - 1, gets);
    close(fd);
    free(want);
    finish(c);
}

/* ---- other users ---------------------------------------------------------------------------------- */

/* Runs `cmd` as user nobody (setpriv); its exit status. */
static int as_nobody(const char *cmd)
{
    char full[2048];
    snprintf(full, sizeof full, "setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '%s' 2>/dev/null", cmd);
    int st = system(full);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* --allow-other with --uid/--gid/--file-mode/--dir-mode: another user (nobody) reads the files,
 * which show the owner and modes asked; without --allow-other the kernel refuses that user. */
TT_TEST(test_mount_e2e_allow_other_lets_other_users_read_with_the_modes_asked)
{
    if (geteuid() != 0 || system("command -v setpriv >/dev/null 2>&1") != 0)
        TT_SKIP("needs root and setpriv (util-linux) to act as another user");
    td_cluster *c = cluster(1);
    td_put(c, "shared/data.bin", 5000, 3);
    TT_CHECK(chmod(c->dir, 0755) == 0 && chmod(c->nodes[0].dir, 0755) == 0, "chmod: %s", strerror(errno));
    const char *flags[] = {"--allow-other", "--uid", "65534", "--gid", "65534", "--file-mode", "0440",
                           "--dir-mode", "0550", NULL};
    start_mounted_flags(c, 0, "60", "1", flags);
    char p[1024], cmd[1200];
    struct stat st;
    TT_CHECK(stat(mpath(p, sizeof p, 0, "shared/data.bin"), &st) == 0, "stat: %s", strerror(errno));
    TT_CHECK(st.st_uid == 65534 && st.st_gid == 65534 && (st.st_mode & 07777) == 0440,
             "the file shows uid %u gid %u mode %o, want 65534 65534 440", st.st_uid, st.st_gid, st.st_mode & 07777);
    TT_CHECK(stat(mpath(p, sizeof p, 0, "shared"), &st) == 0 && (st.st_mode & 07777) == 0550,
             "the directory shows mode %o, want 550", st.st_mode & 07777);
    snprintf(cmd, sizeof cmd, "test $(wc -c < %s) -eq 5000", mpath(p, sizeof p, 0, "shared/data.bin"));
    TT_CHECK(as_nobody(cmd) == 0, "nobody could not read the file through --allow-other");
    finish(c);

    /* The same mount without --allow-other: the kernel lets only the daemon's user in. */
    start_mounted(c, 0, "60", "1", NULL);
    snprintf(cmd, sizeof cmd, "cat %s >/dev/null", mpath(p, sizeof p, 0, "shared/data.bin"));
    TT_CHECK(as_nobody(cmd) != 0, "nobody read the file without --allow-other");
    snprintf(cmd, sizeof cmd, "setpriv --reuid=65534 --regid=65534 --clear-groups stat %s 2>&1 | grep -q 'Permission denied'",
             mpath(p, sizeof p, 0, "shared/data.bin"));
    TT_CHECK(system(cmd) == 0, "nobody's access without --allow-other did not fail with EACCES");
    finish(c);
}

/* A daemon that does not run as root cannot give other users the mount unless fuse.conf allows
 * it: --allow-other then stops it with one line saying what to change. */
TT_TEST(test_mount_e2e_allow_other_without_user_allow_other_stops_a_non_root_daemon_with_one_line)
{
    if (geteuid() != 0 || system("command -v setpriv >/dev/null 2>&1") != 0)
        TT_SKIP("needs root and setpriv (util-linux) to run the daemon as another user");
    if (system("grep -q '^[[:space:]]*user_allow_other' /etc/fuse.conf 2>/dev/null") == 0)
        TT_SKIP("/etc/fuse.conf allows other users here (user_allow_other): nothing to refuse");
    td_cluster *c = cluster(1);
    char home[600], cmd[4096];
    snprintf(home, sizeof home, "%s/nobody", c->dir);
    TT_CHECK(chmod(c->dir, 0755) == 0 && mkdir(home, 0755) == 0, "mkdir: %s", strerror(errno));
    snprintf(cmd, sizeof cmd, "mkdir '%s/mnt' && cp '%s' '%s/key' && chown -R 65534:65534 '%s'", home, c->key, home,
             home);
    TT_CHECK(system(cmd) == 0, "preparing nobody's directory: %s", cmd);
    snprintf(cmd, sizeof cmd,
             "setpriv --reuid=65534 --regid=65534 --clear-groups '%s' --bucket s3://%s --endpoint %s --path-style "
             "--cluster-key '%s/key' --cache-dir '%s/cache' --control '%s/ctl' --metrics off "
             "--bind 127.0.0.1:7398 --mount '%s/mnt' --allow-other >'%s/out' 2>'%s/err'",
             td_shoald(), TD_BUCKET, c->s3.endpoint, home, home, home, home, home, home);
    int st = system(cmd);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "shoald --allow-other as nobody: status %d, expected exit 1", st);
    snprintf(cmd, sizeof cmd, "grep -c -- \"--allow-other needs a line 'user_allow_other'\" '%s/err' | grep -qx 1", home);
    TT_CHECK(system(cmd) == 0, "the failure is not one line naming --allow-other and user_allow_other (see %s/err)",
             home);
}

/* ---- a real training client ------------------------------------------------------------------- */

/* Issue 12's checkpoint patterns with S3 losing or delaying the answer to the upload that commits
 * each checkpoint (the fault proxy, a fake on purpose, in front of the real server): every save
 * returns, and torch.load on the other node gives the saved tensors. */
TT_TEST(test_mount_e2e_torch_checkpoints_survive_lost_and_late_completions)
{
    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
        TT_SKIP("torch is not importable by /usr/bin/python3 (Debian's python3-torch is not installed)");
    td_cluster *c = cluster(2);
    tt_proxy px;
    tt_proxy_start(&px, c->s3.port, NULL, NULL);
    c->endpoint = px.endpoint;
    start_mounted(c, 0, "60", "1", NULL);
    start_mounted(c, 1, "60", "1", NULL);
    td_wait_cluster(c, 10000);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' --mounts '%s' '%s' --proxy %s",
             tt_source_path("tests/mount/test_mount_e2e_checkpoints.py"), g_mnt[0], g_mnt[1], px.endpoint);
    int st = system(cmd);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the checkpoint script failed (status %d): %s", st, cmd);
    finish(c);
    tt_proxy_stop(&px);
}

/* "<word> 00042 " repeated 1 + k % period times, into out. */
static int body_repeated(const char *word, int period, int k, char *out, size_t n)
{
    int len = 0;
    for (int r = 0; r < 1 + k % period; r++)
        len += snprintf(out + len, n - (size_t)len, "%s %05d ", word, k);
    return len;
}

/* Sample k of the torch case: "sample 00042 " repeated 1 + k % 7 times (the script rebuilds it). */
static int body_sample(int k, char *out, size_t n) { return body_repeated("sample", 7, k, out, n); }

TT_TEST(test_mount_e2e_torch_dataloader_and_checkpoint_on_two_nodes)
{
    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
        TT_SKIP("torch is not importable by /usr/bin/python3 (Debian's python3-torch is not installed)");
    td_cluster *c = cluster(2);
    enum { N = 2000 };
    tt_budget_start(tt_budget_ms(TORCH_BASE_MS, N, TORCH_FILE_MS),
                    "%d samples uploaded and read on 2 nodes, and the checkpoints", N);
    bulk_upload(c, "train", N, body_sample);
    /* Node 0 writes back after a delay (the checkpoint pattern costs one PUT); node 1 uploads at
     * close (the same pattern costs PUT + COPY + DELETE). */
    start_mounted(c, 0, "60", "1", "--upload-delay=2");
    start_mounted(c, 1, "60", "1", NULL);
    td_wait_cluster(c, 10000);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' --mounts '%s' '%s' --samples %d --upload-delay 2 "
             "--stats http://127.0.0.1:%d/_shoal/stats",
             tt_source_path("tests/mount/test_mount_e2e_torch.py"), g_mnt[0], g_mnt[1], N, c->s3.port);
    int st = system(cmd);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the torch script failed (status %d): %s", st, cmd);
    /* No object was ever left under a temporary name. */
    s3_client *s3 = td_s3_client(c);
    s3_object_info info;
    const char *temps[] = {"ckpt/model.pt.tmp", "ckpt/model2.pt.tmp", "ckpt/model3.pt.tmp"};
    for (size_t i = 0; i < sizeof temps / sizeof *temps; i++)
        TT_CHECK(s3_head(s3, TD_BUCKET, temps[i], &info) != 0 && shoal_error_code() == SHOAL_ERR_S3_NO_SUCH_KEY,
                 "%s exists in S3", temps[i]);
    s3_client_delete(s3);
    finish(c);
}

/* Sample k of the warm-epoch case: "warm 00042 " repeated 1 + k % 5 times. */
static int body_warm(int k, char *out, size_t n) { return body_repeated("warm", 5, k, out, n); }

/* 3,000 files in 6 directories read through the mounts of 2 nodes by a torch DataLoader with
 * workers, then read again once --metadata-ttl has passed: every name is looked up again, and the
 * mounts answer from their directories' listings, revalidated by one LIST per directory for the
 * cluster: the warm epoch costs at most 12 LISTs and no HEAD at the server (before, one LIST and one
 * HEAD per file and node). The script holds the verdict (tests/mount/test_mount_e2e_torch_warm.py). */
TT_TEST(test_mount_e2e_warm_epoch_after_the_ttl_costs_a_listing_per_directory_and_no_head)
{
    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
        TT_SKIP("torch is not importable by /usr/bin/python3 (Debian's python3-torch is not installed)");
    td_cluster *c = cluster(2);
    enum { DIRS = 6, FILES = 500 };
    tt_budget_start(tt_budget_ms(TORCH_BASE_MS, DIRS * FILES, WARM_FILE_MS),
                    "%d samples uploaded and read by 2 epochs on 2 nodes", DIRS * FILES);
    for (int d = 0; d < DIRS; d++) {
        char dir[16];
        snprintf(dir, sizeof dir, "d%02d", d);
        bulk_upload(c, dir, FILES, body_warm);
    }
    start_mounted(c, 0, "8", "1", NULL);
    start_mounted(c, 1, "8", "1", NULL);
    td_wait_cluster(c, 10000);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' --mounts '%s' '%s' --dirs %d --files %d --ttl 8 "
             "--stats http://127.0.0.1:%d/_shoal/stats",
             tt_source_path("tests/mount/test_mount_e2e_torch_warm.py"), g_mnt[0], g_mnt[1], DIRS, FILES, c->s3.port);
    int st = system(cmd);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the torch script failed (status %d): %s", st, cmd);
    finish(c);
}

TT_MAIN()
