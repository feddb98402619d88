/*
 * Lookups without a kernel: the mount's lookup core (mount_lookup, mount_forget, mount_list_dir,
 * fuse/mount_lookup.c) called directly on a mount that is created but never mounted, over the
 * in-memory backend table (tests/mount/mem_backend.h, a stand-in for the daemon, not an S3 mock),
 * which counts every call. Each case runs in milliseconds: what a lookup asks the backend for,
 * and what it answers from the listings it holds, also after the kernel forgot the inodes.
 *
 * Times: a case that needs a listing to be fresh uses TTLs of an hour; one that needs it expired
 * uses 50 ms and sleeps past them, so no verdict depends on how fast the machine runs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mem_backend.h"
#include "mount_internal.h"
#include "shoal_error.h"
#include "tt.h"

#define FRESH 3600.0 /* seconds: never expires during a case */
#define SHORT 0.05 /* seconds: expired after short_wait() */

typedef struct fx {
    mem_backend *b;
    mount_view *m;
    char *dir;
} fx;

/* A mount over a store holding d/a, d/b, d/c (and e/x), created but not mounted. */
static fx fx_new(double ttl, double negative_ttl, const mount_backend *ops)
{
    fx f = {.b = mem_backend_new(), .dir = tt_tmpdir("lookup")};
    mem_backend_set_str(f.b, "d/a", "alpha");
    mem_backend_set_str(f.b, "d/b", "bravo!");
    mem_backend_set_str(f.b, "d/c", "c");
    mem_backend_set_str(f.b, "e/x", "x");
    mount_config cfg;
    mount_config_defaults(&cfg);
    char staging[1024];
    snprintf(staging, sizeof staging, "%s/staging", f.dir);
    cfg.mountpoint = f.dir; /* never mounted */
    cfg.staging_dir = staging;
    cfg.metadata_ttl = ttl;
    cfg.negative_ttl = negative_ttl;
    f.m = mount_new(&cfg, ops, f.b);
    TT_CHECK(f.m != NULL, "mount_new: %s", shoal_error_message());
    return f;
}

static void fx_delete(fx *f)
{
    mount_delete(f->m);
    mem_backend_delete(f->b);
    tt_rmtree(f->dir);
    free(f->dir);
}

/* Looks `name` up in `parent`; fails the case unless the lookup answers (an entry or absent). */
static struct fuse_entry_param look(fx *f, fuse_ino_t parent, const char *name)
{
    struct fuse_entry_param e;
    int rc = mount_lookup(f->m, parent, name, &e);
    TT_CHECK(rc == 0, "lookup of %s: %s", name, strerror(-rc));
    return e;
}

/* The kernel forgets `n` references to `ino`, as a FORGET request says. */
static void forget(fx *f, fuse_ino_t ino, uint64_t n)
{
    pthread_mutex_lock(&f->m->lock);
    mount_forget(f->m, ino, n);
    pthread_mutex_unlock(&f->m->lock);
}

/* What `ls` does: the directory's listing (opendir), dropped again (releasedir). */
static void list(fx *f, fuse_ino_t ino)
{
    mount_listing *l = NULL;
    int rc = mount_list_dir(f->m, ino, &l);
    TT_CHECK(rc == 0 && l, "listing inode %llu: %s", (unsigned long long)ino, strerror(-rc));
    pthread_mutex_lock(&f->m->lock);
    mount_listing_unref(l);
    pthread_mutex_unlock(&f->m->lock);
}

static void short_wait(void)
{
    struct timespec ts = {0, (long)(SHORT * 2e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static unsigned calls(fx *f)
{
    mem_counts c = mem_backend_counts(f->b);
    return c.head + c.list + c.list_shared + c.read;
}

/* `ls d` then the names under it: the listing answers, present and absent, with no call. */
TT_TEST(test_mount_lookup_answers_names_from_a_fresh_listing_without_a_backend_call)
{
    fx f = fx_new(FRESH, FRESH, &mem_backend_ops);
    struct fuse_entry_param d = look(&f, 1, "d");
    TT_CHECK(d.ino > 1 && S_ISDIR(d.attr.st_mode), "d is not a directory (ino %llu)", (unsigned long long)d.ino);
    list(&f, d.ino);
    mem_backend_reset_counts(f.b);
    struct fuse_entry_param b = look(&f, d.ino, "b");
    TT_CHECK(b.ino > 1 && S_ISREG(b.attr.st_mode) && b.attr.st_size == 6, "d/b: ino %llu, size %lld",
             (unsigned long long)b.ino, (long long)b.attr.st_size);
    TT_CHECK(b.entry_timeout == FRESH && b.attr_timeout == FRESH, "d/b cached for %g/%g s, not the TTL",
             b.entry_timeout, b.attr_timeout);
    struct fuse_entry_param none = look(&f, d.ino, "nope");
    TT_CHECK(none.ino == 0 && none.entry_timeout == FRESH, "d/nope: ino %llu for %g s, expected absent",
             (unsigned long long)none.ino, none.entry_timeout);
    TT_CHECK(calls(&f) == 0, "%u backend calls: the listing held the answers", calls(&f));
    fx_delete(&f);
}

/* The kernel forgot the files and the directory (memory pressure, drop_caches): looking them up
 * again is answered by the directory's listing, which the mount kept, with the same numbers. */
TT_TEST(test_mount_lookup_after_the_kernel_forgot_the_directory_answers_from_its_listing)
{
    fx f = fx_new(FRESH, FRESH, &mem_backend_ops);
    struct fuse_entry_param d = look(&f, 1, "d");
    list(&f, d.ino);
    struct fuse_entry_param a = look(&f, d.ino, "a"), b = look(&f, d.ino, "b");
    forget(&f, a.ino, 1);
    forget(&f, b.ino, 1);
    forget(&f, d.ino, 1);
    mem_backend_reset_counts(f.b);
    struct fuse_entry_param d2 = look(&f, 1, "d");
    struct fuse_entry_param a2 = look(&f, d2.ino, "a"), c = look(&f, d2.ino, "c");
    TT_CHECK(calls(&f) == 0, "%u backend calls after the forget: the listing still held every name", calls(&f));
    TT_CHECK(d2.ino == d.ino && a2.ino == a.ino, "numbers changed across the forget (d %llu -> %llu, a %llu -> %llu)",
             (unsigned long long)d.ino, (unsigned long long)d2.ino, (unsigned long long)a.ino,
             (unsigned long long)a2.ino);
    TT_CHECK(a2.attr.st_size == 5 && c.attr.st_size == 1, "sizes %lld and %lld, expected 5 and 1",
             (long long)a2.attr.st_size, (long long)c.attr.st_size);
    fx_delete(&f);
}

/* With no room for parked listings (a limit of 0) the forget loses the listing: a name costs its
 * probe again, a one-entry LIST (is it a directory?) and a HEAD. */
TT_TEST(test_mount_lookup_without_room_to_park_a_forgotten_directory_probes_its_names)
{
    fx f = fx_new(FRESH, FRESH, &mem_backend_ops);
    pthread_mutex_lock(&f.m->lock);
    mount_inodes_park_limit(f.m->inodes, 0);
    pthread_mutex_unlock(&f.m->lock);
    struct fuse_entry_param d = look(&f, 1, "d");
    list(&f, d.ino);
    forget(&f, d.ino, 1);
    mem_backend_reset_counts(f.b);
    d = look(&f, 1, "d");
    look(&f, d.ino, "a");
    mem_counts n = mem_backend_counts(f.b);
    TT_CHECK(n.list == 2 && n.head == 1, "%u LIST, %u HEAD: expected the probes of d and of d/a", n.list, n.head);
    fx_delete(&f);
}

/* A change in a directory the kernel forgot (here: what an upload into it does) drops its parked
 * listing like any other, so the listing never hides the change. */
TT_TEST(test_mount_lookup_a_change_in_a_forgotten_directory_drops_its_parked_listing)
{
    fx f = fx_new(FRESH, FRESH, &mem_backend_ops);
    struct fuse_entry_param d = look(&f, 1, "d");
    list(&f, d.ino);
    forget(&f, d.ino, 1);
    mem_backend_set_str(f.b, "d/new", "new");
    pthread_mutex_lock(&f.m->lock);
    mount_invalidate_parent(f.m, "d/new");
    pthread_mutex_unlock(&f.m->lock);
    d = look(&f, 1, "d");
    mem_backend_reset_counts(f.b);
    struct fuse_entry_param n = look(&f, d.ino, "new");
    TT_CHECK(n.ino > 1 && n.attr.st_size == 3, "d/new: ino %llu size %lld", (unsigned long long)n.ino,
             (long long)n.attr.st_size);
    TT_CHECK(mem_backend_counts(f.b).head == 1, "the name was not asked for: the dropped listing answered");
    fx_delete(&f);
}

/* A directory never listed is not listed for a lookup: the name is probed, and a directory wins
 * over a file of the same name. */
TT_TEST(test_mount_lookup_of_a_name_no_listing_holds_probes_directory_first)
{
    fx f = fx_new(FRESH, FRESH, &mem_backend_ops);
    mem_backend_set_str(f.b, "d/b/inner", "in"); /* d/b is a file and a directory */
    struct fuse_entry_param d = look(&f, 1, "d");
    mem_backend_reset_counts(f.b);
    struct fuse_entry_param a = look(&f, d.ino, "a");
    mem_counts n = mem_backend_counts(f.b);
    TT_CHECK(S_ISREG(a.attr.st_mode) && a.attr.st_size == 5, "d/a: mode %o size %lld", a.attr.st_mode,
             (long long)a.attr.st_size);
    TT_CHECK(n.list == 1 && n.head == 1, "%u LIST, %u HEAD for d/a: expected one of each", n.list, n.head);
    struct fuse_entry_param b = look(&f, d.ino, "b");
    TT_CHECK(S_ISDIR(b.attr.st_mode), "d/b is not shown as the directory");
    mem_backend_reset_counts(f.b);
    struct fuse_entry_param none = look(&f, d.ino, "nope");
    n = mem_backend_counts(f.b);
    TT_CHECK(none.ino == 0 && n.list == 1 && n.head == 1, "d/nope: ino %llu after %u LIST, %u HEAD",
             (unsigned long long)none.ino, n.list, n.head);
    fx_delete(&f);
}

/* After --metadata-ttl the listing is revalidated from the shared listing (whole, for every name),
 * never by probing each name. */
TT_TEST(test_mount_lookup_after_the_ttl_revalidates_the_listing_instead_of_probing_names)
{
    fx f = fx_new(SHORT, SHORT, &mem_backend_shared_ops);
    struct fuse_entry_param d = look(&f, 1, "d");
    list(&f, d.ino);
    short_wait();
    mem_backend_reset_counts(f.b);
    const char *names[] = {"a", "b", "c"};
    for (size_t i = 0; i < 3; i++) {
        struct fuse_entry_param e = look(&f, d.ino, names[i]);
        TT_CHECK(e.ino > 1 && S_ISREG(e.attr.st_mode), "d/%s not found", names[i]);
    }
    mem_counts n = mem_backend_counts(f.b);
    TT_CHECK(n.list_shared >= 1 && n.list == 0 && n.head == 0,
             "%u shared LIST, %u LIST, %u HEAD: expected the listing revalidated, no name probed", n.list_shared,
             n.list, n.head);
    fx_delete(&f);
}

/* An object replaced under a forgotten directory: the revalidated listing carries the new ETag,
 * the name gets a new inode for the new version, and the inode of the old one keeps its ETag, so
 * no read mixes the two versions. */
TT_TEST(test_mount_lookup_new_etag_in_a_revalidated_listing_gives_the_name_a_new_inode)
{
    fx f = fx_new(SHORT, SHORT, &mem_backend_shared_ops);
    struct fuse_entry_param d = look(&f, 1, "d");
    list(&f, d.ino);
    struct fuse_entry_param a = look(&f, d.ino, "a"); /* still open: the kernel holds it */
    forget(&f, d.ino, 1);
    char old_etag[MOUNT_ETAG_MAX], new_etag[MOUNT_ETAG_MAX];
    TT_CHECK(mem_backend_etag(f.b, "d/a", old_etag), "d/a is gone");
    mem_backend_set_str(f.b, "d/a", "a second version");
    TT_CHECK(mem_backend_etag(f.b, "d/a", new_etag) && strcmp(old_etag, new_etag) != 0, "no new ETag");
    short_wait();
    d = look(&f, 1, "d");
    struct fuse_entry_param a2 = look(&f, d.ino, "a");
    TT_CHECK(a2.ino != a.ino && a2.attr.st_size == 16, "d/a after the change: ino %llu (was %llu), size %lld",
             (unsigned long long)a2.ino, (unsigned long long)a.ino, (long long)a2.attr.st_size);
    pthread_mutex_lock(&f.m->lock);
    mount_inode *old = mount_get_inode(f.m, a.ino), *cur = mount_get_inode(f.m, a2.ino);
    bool ok =
        old && old->stale && strcmp(old->info.etag, old_etag) == 0 && cur && strcmp(cur->info.etag, new_etag) == 0;
    pthread_mutex_unlock(&f.m->lock);
    TT_CHECK(ok, "the old inode does not keep the old version apart from the new one");
    fx_delete(&f);
}

/* What the kernel sends that names nothing gets the errno it expects, and asks the backend nothing. */
TT_TEST(test_mount_lookup_refusals_give_their_errno_without_a_call)
{
    fx f = fx_new(FRESH, FRESH, &mem_backend_ops);
    struct fuse_entry_param d = look(&f, 1, "d");
    list(&f, d.ino);
    struct fuse_entry_param a = look(&f, d.ino, "a");
    mem_backend_reset_counts(f.b);
    struct fuse_entry_param e;
    char too_long[MOUNT_NAME_MAX + 2];
    memset(too_long, 'x', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = '\0';
    TT_CHECK(mount_lookup(f.m, a.ino, "x", &e) == -ENOTDIR, "lookup under a file: not ENOTDIR");
    TT_CHECK(mount_lookup(f.m, 987654321, "x", &e) == -ENOENT, "lookup under an unknown inode: not ENOENT");
    TT_CHECK(mount_lookup(f.m, d.ino, too_long, &e) == -ENAMETOOLONG, "256-byte name: not ENAMETOOLONG");
    TT_CHECK(mount_lookup(f.m, d.ino, "", &e) == -ENOENT, "empty name: not ENOENT");
    TT_CHECK(calls(&f) == 0, "%u backend calls for names that cannot exist", calls(&f));
    fx_delete(&f);
}

TT_MAIN()
