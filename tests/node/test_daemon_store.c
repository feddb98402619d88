/*
 * shoald's block store when the disk under it misbehaves, end to end: real daemons, the real
 * local S3 server, S3 requests counted at the server. The blocks directory removed under
 * readers, a cache directory on a file system smaller than --cache-size, and block files
 * damaged in a dozen ways found by each path that reads them (a local read, a peer's request,
 * the scan at start).
 *
 * Every reader waits for peers with --peer-timeout 60000, so a slow peer on a busy machine is
 * waited for instead of skipped: what S3 is asked, and which path finds a damaged block, do not
 * depend on how busy the machine is.
 */
#include "test_daemon_harness.h"

#include "shoal_error.h"
#include "tt.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1024u * 1024u)

/* The dataset: 30 objects from 0.5 to 2.7 MiB, 1 MiB blocks, 63 blocks in all. */
#define OBJECTS 30

static size_t obj_size(int k) { return MIB / 2 + (size_t)k * 80000u; }

static void obj_key(int k, char *out, size_t n) { snprintf(out, n, "store/obj-%02d.bin", k); }

static long obj_blocks(void)
{
    long n = 0;
    for (int k = 0; k < OBJECTS; k++)
        n += (long)((obj_size(k) + MIB - 1) / MIB);
    return n;
}

static void upload(td_cluster *c)
{
    char key[64];
    for (int k = 0; k < OBJECTS; k++) {
        obj_key(k, key, sizeof key);
        td_put(c, key, obj_size(k), 500u + (uint32_t)k);
    }
}

/* Reads every object through node i and checks every byte. */
static void read_all(td_cluster *c, int i)
{
    char key[64];
    for (int k = 0; k < OBJECTS; k++) {
        obj_key(k, key, sizeof key);
        td_get_check(c, i, key, obj_size(k), 500u + (uint32_t)k);
    }
}

static const char *const PATIENT[] = {"--peer-timeout", "60000", NULL};

/* Starts nodes 0..n-1 with the dataset uploaded and waits for the whole membership. */
static td_cluster *cluster_up(int slots, int n, const char *const *extra)
{
    td_cluster *c = td_cluster_new(slots, "1M");
    upload(c);
    for (int i = 0; i < n; i++)
        td_node_start(c, i, extra);
    td_wait_cluster(c, 15000);
    return c;
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    TT_CHECK(system(cmd) == 0, "%s", cmd);
}

/* ---- the blocks directory removed under load ----------------------------------------------- */

typedef struct looper {
    td_cluster *c;
    int node;
    atomic_bool *stop;
    atomic_uint reads; /* objects read and checked so far */
} looper;

/* Reads the dataset on one node, checking every byte, until told to stop. */
static void *read_loop(void *arg)
{
    looper *l = arg;
    char key[64];
    for (int k = 0; !atomic_load(l->stop); k = (k + 1) % OBJECTS) {
        obj_key(k, key, sizeof key);
        td_get_check(l->c, l->node, key, obj_size(k), 500u + (uint32_t)k);
        atomic_fetch_add(&l->reads, 1);
    }
    return NULL;
}

/* Waits until every reader has read `more` objects past `since` (counts taken by the caller).
 * Bounded by the work, not by a clock: a busy machine makes the wait longer, never shorter. */
static void wait_reads(looper *l, int n, const unsigned *since, unsigned more)
{
    for (int i = 0; i < n; i++)
        while (atomic_load(&l[i].reads) < since[i] + more)
            td_sleep_ms(10);
}

/* `rm -rf <cache-dir>/blocks` on a node while both nodes read: no read fails, the node makes its
 * blocks directory again and forgets what it lost, one full pass on each node stores everything
 * again, and the second pass asks S3 for nothing. */
TT_TEST(test_daemon_blocks_dir_removed_under_load_heals_and_second_pass_needs_no_s3)
{
    td_cluster *c = cluster_up(2, 2, PATIENT);
    read_all(c, 0);
    read_all(c, 1);

    atomic_bool stop = false;
    looper l[2] = {{c, 0, &stop, 0}, {c, 1, &stop, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        TT_CHECK(pthread_create(&t[i], NULL, read_loop, &l[i]) == 0, "pthread_create");
    /* Both readers are under way before the removal... */
    const unsigned zero[2] = {0, 0};
    wait_reads(l, 2, zero, 1);
    char blocks[400];
    snprintf(blocks, sizeof blocks, "%s/cache/blocks", c->nodes[0].dir);
    /* Under load, rm may find a directory refilled behind it (ENOTEMPTY): it tries until the
     * whole directory is gone, as an operator would. (Each try leaves less to remove; the bound
     * only turns a store that refills faster than rm empties into a failure instead of a hang.) */
    int tries = 0, st = -1;
    while (st != 0 && tries++ < 1000) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' 2>/dev/null", blocks);
        st = system(cmd);
    }
    TT_CHECK(st == 0, "rm -rf %s failed %d times", blocks, tries);
    /* ...and each reads the whole dataset once more after it, so every block node0 lost is asked
     * for while the store heals. */
    const unsigned removed_at[2] = {atomic_load(&l[0].reads), atomic_load(&l[1].reads)};
    wait_reads(l, 2, removed_at, OBJECTS);
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    tt_note("rm -rf took %d tries; the readers read %u and %u objects (%u and %u after the removal)", tries,
            atomic_load(&l[0].reads), atomic_load(&l[1].reads), atomic_load(&l[0].reads) - removed_at[0],
            atomic_load(&l[1].reads) - removed_at[1]);

    read_all(c, 0);
    read_all(c, 1);
    tt_s3rver_stats_reset(&c->s3);
    read_all(c, 0);
    read_all(c, 1);
    long gets = tt_s3rver_stat(&c->s3, "gets");
    uint64_t lost = td_stat(c, 0, "cache.lost_blocks");
    tt_note("second pass: %ld S3 GETs; node0 forgot %llu lost blocks", gets, (unsigned long long)lost);
    TT_CHECK(gets == 0, "the second pass after the removal cost %ld S3 GETs", gets);
    TT_CHECK(lost > 0, "node0 counted no lost block");
    TT_CHECK(td_stat(c, 0, "cache.blocks") > 0 && access(blocks, F_OK) == 0, "node0 holds no block in %s", blocks);
    sh("grep -q 'event=blocks_dir_remade' '%s'", c->nodes[0].log);
    td_pass(c);
}

/* ---- a cache directory on a disk smaller than --cache-size ---------------------------------- */

/* Mounts a tmpfs of `size` on dir in a private mount namespace of the test process (the daemons
 * it starts inherit it); skips where mounting is not permitted. */
static void private_tmpfs(const char *dir, const char *size)
{
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s", size);
    if (unshare(CLONE_NEWNS) != 0)
        TT_SKIP("unshare(CLONE_NEWNS) to mount a tmpfs: %s", strerror(errno));
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        TT_SKIP("making mounts private: %s", strerror(errno));
    TT_CHECK(mkdir(dir, 0700) == 0 || errno == EEXIST, "mkdir %s", dir);
    if (mount("tmpfs", dir, "tmpfs", 0, opts) != 0)
        TT_SKIP("mount -t tmpfs -o %s tmpfs %s: %s", opts, dir, strerror(errno));
}

/* Bytes free on the file system of dir, and its size. */
static uint64_t fs_avail(const char *dir, uint64_t *size)
{
    struct statvfs v;
    TT_CHECK(statvfs(dir, &v) == 0, "statvfs %s", dir);
    *size = (uint64_t)v.f_blocks * v.f_frsize;
    return (uint64_t)v.f_bavail * v.f_frsize;
}

/* --cache-size 256M on a 16 MiB disk with --cache-free-space 10: every read succeeds, the disk
 * has a tenth free after each one (the store makes room before it writes, so no moment between
 * reads is exempt), the store counts its evictions, and it still fills the rest. */
TT_TEST(test_daemon_cache_on_a_small_disk_keeps_its_free_space_reserve)
{
    td_cluster *c = td_cluster_new(1, "1M");
    upload(c);
    char cache[400];
    snprintf(cache, sizeof cache, "%s/cache", c->nodes[0].dir);
    private_tmpfs(cache, "16m");
    const char *const extra[] = {"--cache-size", "256M", "--cache-free-space", "10", NULL};
    td_node_start(c, 0, extra);
    td_wait_cluster(c, 10000);
    uint64_t size = 0, avail = 0, least = UINT64_MAX;
    char key[64];
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < OBJECTS; k++) {
            obj_key(k, key, sizeof key);
            td_get_check(c, 0, key, obj_size(k), 500u + (uint32_t)k);
            avail = fs_avail(cache, &size);
            least = avail < least ? avail : least;
            TT_CHECK(avail * 10 >= size, "after reading %s (pass %d): %llu of %llu bytes free, under the 10 %% reserve",
                     key, pass + 1, (unsigned long long)avail, (unsigned long long)size);
        }

    uint64_t evictions = td_stat(c, 0, "cache.evictions"), space = td_stat(c, 0, "cache.free_space_evictions");
    uint64_t bytes = td_stat(c, 0, "cache.bytes");
    tt_note("the least free after a read: %llu bytes", (unsigned long long)least);
    tt_note("%ld blocks read twice through a %llu-byte disk: %llu bytes cached, %llu free, %llu evictions (%llu for "
            "space)",
            obj_blocks(), (unsigned long long)size, (unsigned long long)bytes, (unsigned long long)avail,
            (unsigned long long)evictions, (unsigned long long)space);
    TT_CHECK(space > 0 && evictions >= space, "cache.free_space_evictions %llu, cache.evictions %llu",
             (unsigned long long)space, (unsigned long long)evictions);
    TT_CHECK(bytes * 2 >= size, "only %llu bytes cached on a %llu-byte disk", (unsigned long long)bytes,
             (unsigned long long)size);
    td_node_signal(c, 0, SIGTERM);
    td_node_wait(c, 0, 10000);
    umount2(cache, MNT_DETACH);
    td_pass(c);
}

TT_TEST(test_daemon_bad_cache_free_space_exits_2_with_one_line)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "'%s' --cache-free-space 60 2>&1 >/dev/null | grep -c . | grep -qx 1", td_shoald());
    TT_CHECK(system(cmd) == 0, "shoald --cache-free-space 60 does not print exactly one line");
    snprintf(cmd, sizeof cmd, "'%s' --cache-free-space 60 2>&1 >/dev/null | grep -q -- '--cache-free-space'",
             td_shoald());
    TT_CHECK(system(cmd) == 0, "the line does not name --cache-free-space");
    snprintf(cmd, sizeof cmd, "'%s' --cache-free-space lots >/dev/null 2>&1", td_shoald());
    int st = system(cmd);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "shoald --cache-free-space lots: status %d, expected exit 2", st);
}

/* ---- damaged block files, found by every path ----------------------------------------------- */

/* Ways a block file gets damaged, as shell commands on "$f" (and "$g", another block's file). */
static const char *const DAMAGE[] = {
    "printf '\\377' | dd of=\"$f\" bs=1 seek=4000 conv=notrunc status=none", /* payload */
    "printf '\\377' | dd of=\"$f\" bs=1 seek=0 conv=notrunc status=none",    /* magic */
    "printf '\\377' | dd of=\"$f\" bs=1 seek=6 conv=notrunc status=none",    /* class */
    "printf '\\377' | dd of=\"$f\" bs=1 seek=9 conv=notrunc status=none",    /* length field */
    "printf '\\377' | dd of=\"$f\" bs=1 seek=$(($(stat -c %s \"$f\") - 5)) conv=notrunc status=none", /* a chunk sum */
    "truncate -s 148 \"$f\"",                                                /* cut short */
    ": > \"$f\"",                                                            /* emptied */
    "printf junk >> \"$f\"",                                                 /* grown */
    "cp \"$g\" \"$f\"",                                                      /* another block's file */
    "ln -sfn /nonexistent/shoal-block \"$f\"",                               /* a dangling link */
    "rm \"$f\" && mkdir \"$f\"",                                             /* a directory */
    "rm \"$f\" && mkfifo \"$f\"",                                            /* a FIFO */
};
#define N_DAMAGE (int)(sizeof DAMAGE / sizeof DAMAGE[0])

/* Damages N_DAMAGE block files of node i, each in its own way: the first ones in name order after
 * the first (a file turned into a link, directory or FIFO leaves the list, so each damage takes a
 * file no other damage touched); "$g" is the first file, never one of them. */
static void damage_node(td_cluster *c, int i)
{
    const int skip = 1;
    char cmd[2048];
    bool running = c->nodes[i].pid > 0;
    if (running) /* a running node must not look at a file half-way through its damage */
        td_node_signal(c, i, SIGSTOP);
    for (int k = 0; k < N_DAMAGE; k++) {
        snprintf(cmd, sizeof cmd,
                 "cd '%s/cache/blocks' && set -- $(find . -mindepth 3 -type f -name '[0-9a-f]*' | sort) && "
                 "test $# -gt %d && eval f=\\${%d} && g=$1 && %s",
                 c->nodes[i].dir, skip + k + 1, skip + k + 1, DAMAGE[k]);
        TT_CHECK(system(cmd) == 0, "damage %d on %s: %s", k, c->nodes[i].id, cmd);
    }
    if (running)
        td_node_signal(c, i, SIGCONT);
}

/* Nothing but regular block files (and the lock) is left in node i's blocks directory. */
static void only_files_left(td_cluster *c, int i)
{
    sh("test -z \"$(find '%s/cache/blocks' -mindepth 3 ! -type f)\"", c->nodes[i].dir);
}

/* Twelve kinds of damage, found by a local read, by a peer's request, and by the scan at start:
 * cache.corrupt_blocks counts every damaged block once, on the node that dropped it, and no read
 * returns a wrong byte. */
TT_TEST(test_daemon_every_damaged_block_is_counted_by_the_path_that_finds_it)
{
    td_cluster *c = cluster_up(3, 2, PATIENT);
    read_all(c, 0); /* node0 holds every block (owned or near); node1 its owned ones */

    /* A local read finds them. */
    damage_node(c, 0);
    read_all(c, 0);
    uint64_t by_read = td_stat(c, 0, "cache.corrupt_blocks");
    only_files_left(c, 0);

    /* A peer's request finds them: a consumer-only node reads through the owners. */
    damage_node(c, 1);
    const char *const consumer[] = {"--no-serve", "--peer-timeout", "60000", NULL};
    td_node_start(c, 2, consumer);
    td_wait_cluster(c, 15000);
    read_all(c, 2);
    uint64_t by_serve = td_stat(c, 1, "cache.corrupt_blocks");
    only_files_left(c, 1);

    /* The scan at start finds those a header shows; a read after it the rest. (Node1 restarts:
     * it has node0 as its seed, so it rejoins at once.) */
    td_node_signal(c, 1, SIGTERM);
    int st = td_node_wait(c, 1, 10000);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "node1 after SIGTERM: status %d", st);
    damage_node(c, 1);
    td_node_start(c, 1, PATIENT);
    td_wait_cluster(c, 15000);
    uint64_t by_scan = td_stat(c, 1, "cache.corrupt_blocks");
    read_all(c, 1);
    uint64_t after_restart = td_stat(c, 1, "cache.corrupt_blocks");
    only_files_left(c, 1);

    tt_note("%d damaged per round: counted by reads %llu, by peer serves %llu, by the scan at start %llu (+%llu by "
            "reads after it)",
            N_DAMAGE, (unsigned long long)by_read, (unsigned long long)by_serve, (unsigned long long)by_scan,
            (unsigned long long)(after_restart - by_scan));
    TT_CHECK(by_read == (uint64_t)N_DAMAGE, "local reads counted %llu of %d damaged blocks",
             (unsigned long long)by_read, N_DAMAGE);
    TT_CHECK(by_serve == (uint64_t)N_DAMAGE, "peer serves counted %llu of %d damaged blocks",
             (unsigned long long)by_serve, N_DAMAGE);
    TT_CHECK(by_scan == (uint64_t)N_DAMAGE - 2 && after_restart == (uint64_t)N_DAMAGE,
             "the scan at start counted %llu (all but the payload and chunk sum damage show without reading the "
             "payload), %llu with the reads after it, of %d",
             (unsigned long long)by_scan, (unsigned long long)after_restart, N_DAMAGE);
    TT_CHECK(td_stat(c, 2, "cache.corrupt_blocks") == 0, "the consumer node counted damage it never stored");
    td_pass(c);
}

TT_MAIN()
