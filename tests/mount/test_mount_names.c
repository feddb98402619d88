/*
 * The key mapping and the inode table, with no mount: every rule of SPEC §4 that is a pure
 * function of names (fuse/mount_names.c) and the inode numbering (fuse/mount_inodes.c).
 */
#include <stdlib.h>
#include <string.h>

#include "mount_inodes.h"
#include "mount_names.h"
#include "mount_ra.h"
#include "tt.h"

TT_TEST(test_mount_names_posix_names_accept_any_other_bytes)
{
    const char *ok[] = {"a b", "caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", "cr\rlf\n", "+$%&;=?@[]~",
                        "...", ".hidden", "\xff\xfe not utf-8", "tab\there"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        TT_CHECK(mount_names_check(ok[i], strlen(ok[i])) == MOUNT_NAME_OK, "'%s' refused: %s",
                 ok[i], mount_names_verdict_text(mount_names_check(ok[i], strlen(ok[i]))));
    char longest[MOUNT_NAME_MAX];
    memset(longest, 'x', sizeof longest);
    TT_CHECK(mount_names_check(longest, sizeof longest) == MOUNT_NAME_OK, "255 bytes refused");
}

TT_TEST(test_mount_names_rejects_empty_dot_nul_and_long_components)
{
    char too_long[MOUNT_NAME_MAX + 1];
    memset(too_long, 'x', sizeof too_long);
    TT_CHECK(mount_names_check("", 0) == MOUNT_NAME_EMPTY, "empty");
    TT_CHECK(mount_names_check(".", 1) == MOUNT_NAME_DOT, "dot");
    TT_CHECK(mount_names_check("..", 2) == MOUNT_NAME_DOT, "dotdot");
    TT_CHECK(mount_names_check("a\0b", 3) == MOUNT_NAME_NUL, "NUL");
    TT_CHECK(mount_names_check(too_long, sizeof too_long) == MOUNT_NAME_TOO_LONG, "256 bytes");
    TT_CHECK(mount_names_check("a/b", 3) == MOUNT_NAME_SLASH, "slash");
}

TT_TEST(test_mount_names_key_checks_every_component)
{
    mount_name_verdict why;
    TT_CHECK(mount_names_key_ok("a/b/c d", 7, &why), "valid key refused: %s",
             mount_names_verdict_text(why));
    TT_CHECK(!mount_names_key_ok("a//c", 4, &why) && why == MOUNT_NAME_EMPTY, "a//c: %d", why);
    TT_CHECK(!mount_names_key_ok("a/./c", 5, &why) && why == MOUNT_NAME_DOT, "a/./c: %d", why);
    TT_CHECK(!mount_names_key_ok("/a", 2, &why) && why == MOUNT_NAME_EMPTY, "/a: %d", why);
    TT_CHECK(!mount_names_key_ok("a/", 2, &why) && why == MOUNT_NAME_EMPTY, "a/: %d", why);
}

/* Classifies one entry of a listing of "d/"; returns the kind and the name in `name`. */
static mount_child_kind classify(const char *key, size_t len, bool is_prefix, char *name,
                                 mount_name_verdict *why)
{
    const char *n = NULL;
    size_t nl = 0;
    mount_child_kind k = mount_names_child("d/", 2, key, len, is_prefix, &n, &nl, why);
    name[0] = '\0';
    if (k == MOUNT_CHILD_FILE || k == MOUNT_CHILD_DIR) {
        memcpy(name, n, nl);
        name[nl] = '\0';
    }
    return k;
}

TT_TEST(test_mount_names_listing_entries_become_files_and_directories)
{
    char name[300];
    mount_name_verdict why;
    TT_CHECK(classify("d/f.bin", 7, false, name, &why) == MOUNT_CHILD_FILE &&
                 !strcmp(name, "f.bin"),
             "file: %s", name);
    TT_CHECK(classify("d/sub/", 6, true, name, &why) == MOUNT_CHILD_DIR && !strcmp(name, "sub"),
             "common prefix: %s", name);
    TT_CHECK(classify("d/m/", 4, false, name, &why) == MOUNT_CHILD_DIR && !strcmp(name, "m"),
             "marker key: %s", name);
    TT_CHECK(classify("d/x/y/z", 7, false, name, &why) == MOUNT_CHILD_DIR && !strcmp(name, "x"),
             "deeper key is an implicit directory: %s", name);
    TT_CHECK(classify("d/", 2, false, name, &why) == MOUNT_CHILD_SELF, "own marker");
    TT_CHECK(classify("d//", 3, true, name, &why) == MOUNT_CHILD_SKIP && why == MOUNT_NAME_EMPTY,
             "empty component skipped");
    TT_CHECK(classify("d/../", 5, true, name, &why) == MOUNT_CHILD_SKIP && why == MOUNT_NAME_DOT,
             "dotdot skipped");
    TT_CHECK(classify("d/a\0b", 5, false, name, &why) == MOUNT_CHILD_SKIP && why == MOUNT_NAME_NUL,
             "NUL skipped");
    TT_CHECK(classify("e/x", 3, false, name, &why) == MOUNT_CHILD_SKIP && why == MOUNT_NAME_OK,
             "outside the directory");
    const char *root_name = NULL;
    size_t root_len = 0;
    TT_CHECK(mount_names_child("", 0, "top", 3, false, &root_name, &root_len, &why) ==
                     MOUNT_CHILD_FILE && root_len == 3,
             "root listing");
}

static int shadow_count;
static char shadow_name[64];

static void on_shadow(void *ud, const mount_dirent *f)
{
    shadow_count++;
    snprintf(shadow_name, sizeof shadow_name, "%s", f->name);
}

TT_TEST(test_mount_names_directory_wins_over_file_of_same_name)
{
    const char *names[] = {"b", "a", "a", "c", "c"};
    bool dirs[] = {false, false, true, true, true};
    mount_dirent e[5];
    memset(e, 0, sizeof e);
    for (int i = 0; i < 5; i++) {
        e[i].name = strdup(names[i]);
        e[i].is_dir = dirs[i];
    }
    size_t kept = mount_names_resolve(e, 5, on_shadow, NULL);
    TT_CHECK(kept == 3, "kept %zu, want 3 (a b c)", kept);
    TT_CHECK(!strcmp(e[0].name, "a") && e[0].is_dir, "a is the directory: is_dir=%d", e[0].is_dir);
    TT_CHECK(!strcmp(e[1].name, "b") && !e[1].is_dir, "b: %s", e[1].name);
    TT_CHECK(!strcmp(e[2].name, "c") && e[2].is_dir, "c: %s", e[2].name);
    TT_CHECK(shadow_count == 1 && !strcmp(shadow_name, "a"),
             "one shadowed file reported (a), got %d (%s): duplicate directories merge silently",
             shadow_count, shadow_name);
    TT_CHECK(mount_names_find(e, kept, "b") == &e[1], "binary search finds b");
    TT_CHECK(mount_names_find(e, kept, "bb") == NULL, "absent name not found");
    for (int i = 0; i < 5; i++)
        free(e[i].name); /* dropped entries were kept at the tail: all five are freed */
}

TT_TEST(test_mount_names_prefix_is_normalized)
{
    const char *in[] = {NULL, "", "data", "data/", "/data/x", "/"};
    const char *want[] = {"", "", "data/", "data/", "data/x/", ""};
    for (int i = 0; i < 6; i++) {
        char *p = mount_names_prefix(in[i]);
        TT_CHECK(p && !strcmp(p, want[i]), "prefix '%s' -> '%s', want '%s'", in[i] ? in[i] : "NULL",
                 p ? p : "NULL", want[i]);
        free(p);
    }
}

TT_TEST(test_mount_inodes_number_is_stable_across_forget)
{
    mount_inodes *t = mount_inodes_new();
    TT_CHECK(t, "table");
    mount_inode *a = mount_inodes_get_path(t, "dir/a", false);
    TT_CHECK(a && a->ino > 1, "inode for dir/a");
    uint64_t ino = a->ino;
    a->nlookup = 2;
    mount_inodes_forget(t, a, 1);
    TT_CHECK(mount_inodes_get(t, ino) == a, "still known after a partial forget");
    mount_inodes_forget(t, a, 1);
    TT_CHECK(mount_inodes_get(t, ino) == NULL && mount_inodes_find(t, "dir/a") == NULL,
             "freed after the last forget");
    a = mount_inodes_get_path(t, "dir/a", false);
    TT_CHECK(a->ino == ino, "same number for the same path: %llu vs %llu",
             (unsigned long long)a->ino, (unsigned long long)ino);
    TT_CHECK(mount_inodes_get(t, 1) && mount_inodes_get(t, 1)->is_dir, "root is inode 1");
    mount_inodes_delete(t);
}

/* A listing of `n` entries (no names: only their count matters here). */
static mount_listing *listing_of(size_t n)
{
    mount_listing *l = calloc(1, sizeof *l);
    TT_CHECK(l != NULL, "calloc");
    l->refs = 1;
    l->n = n;
    return l;
}

/* A directory with a listing of `n` entries that the kernel looked up once. */
static mount_inode *listed_dir(mount_inodes *t, const char *path, size_t n)
{
    mount_inode *d = mount_inodes_get_path(t, path, true);
    TT_CHECK(d != NULL, "get_path %s", path);
    d->nlookup = 1;
    d->listing = listing_of(n);
    return d;
}

TT_TEST(test_mount_inodes_forgotten_directories_keep_their_listings_within_the_park_limit)
{
    mount_inodes *t = mount_inodes_new();
    mount_inodes_park_limit(t, 25); /* room for two listings of 10 (each costs its entries + 1) */
    mount_inode *a = listed_dir(t, "a", 10), *b = listed_dir(t, "b", 10);
    mount_inode *f = mount_inodes_get_path(t, "a/f", false), *bare = mount_inodes_get_path(t, "bare", true);
    f->nlookup = bare->nlookup = 1;
    mount_inodes_forget(t, f, 1);
    mount_inodes_forget(t, bare, 1);
    TT_CHECK(!mount_inodes_find(t, "a/f") && !mount_inodes_find(t, "bare"), "a file, or a directory with no "
                                                                            "listing, outlived the kernel's forget");
    mount_inodes_forget(t, a, 1);
    mount_inodes_forget(t, b, 1);
    TT_CHECK(mount_inodes_find(t, "a") == a && mount_inodes_find(t, "b") == b && mount_inodes_parked(t) == 22,
             "forgotten listed directories not parked (%zu entries parked)", mount_inodes_parked(t));
    mount_inode *c = listed_dir(t, "c", 10);
    mount_inodes_forget(t, c, 1);
    TT_CHECK(!mount_inodes_find(t, "a") && mount_inodes_find(t, "b") == b && mount_inodes_find(t, "c") == c,
             "over the limit, the oldest parked directory is not the one freed");
    TT_CHECK(mount_inodes_parked(t) == 22, "%zu entries parked, expected 22", mount_inodes_parked(t));
    b->nlookup = 1; /* looked up again: in use, never freed by the limit */
    mount_inode *d = listed_dir(t, "d", 10);
    mount_inodes_forget(t, d, 1);
    TT_CHECK(mount_inodes_find(t, "b") == b && mount_inodes_find(t, "c") == c && mount_inodes_find(t, "d") == d,
             "a parked directory in use again was freed");
    mount_inodes_detach(t, c); /* rmdir */
    TT_CHECK(mount_inodes_parked(t) == 11, "a detached directory still counts as parked (%zu)", mount_inodes_parked(t));
    mount_inodes_maybe_free(t, c);
    mount_inodes_park_limit(t, 0);
    TT_CHECK(!mount_inodes_find(t, "d") && mount_inodes_parked(t) == 0, "a limit of 0 keeps a parked directory");
    mount_inodes_delete(t);
}

TT_TEST(test_mount_inodes_rename_moves_path_and_detaches_target)
{
    mount_inodes *t = mount_inodes_new();
    mount_inode *a = mount_inodes_get_path(t, "a", false);
    mount_inode *b = mount_inodes_get_path(t, "b", false);
    a->nlookup = 1;
    b->nlookup = 1; /* the kernel still holds b: it must survive, detached */
    uint64_t bino = b->ino;
    mount_inodes_rename(t, a, strdup("b"));
    TT_CHECK(mount_inodes_find(t, "b") == a, "b is now the renamed inode");
    TT_CHECK(mount_inodes_find(t, "a") == NULL, "a is gone");
    TT_CHECK(mount_inodes_get(t, bino) == b && b->detached, "old b kept by number, detached");
    mount_inodes_forget(t, b, 1);
    TT_CHECK(mount_inodes_get(t, bino) == NULL, "old b freed after forget");
    mount_inodes_delete(t);
}

TT_TEST(test_mount_inodes_new_version_of_a_path_gets_another_number_while_the_old_lives)
{
    mount_inodes *t = mount_inodes_new();
    mount_inode *v1 = mount_inodes_get_path(t, "data/x", false);
    v1->nlookup = 1; /* a descriptor still reads the old version */
    uint64_t ino1 = v1->ino;
    mount_inodes_detach(t, v1); /* superseded by a new version */
    mount_inode *v2 = mount_inodes_get_path(t, "data/x", false);
    TT_CHECK(v2 && v2 != v1 && v2->ino != ino1, "the new version got number %llu, the old has %llu",
             (unsigned long long)(v2 ? v2->ino : 0), (unsigned long long)ino1);
    TT_CHECK(mount_inodes_get(t, ino1) == v1 && mount_inodes_find(t, "data/x") == v2,
             "old reachable by number only, new by path");
    v2->nlookup = 1;
    mount_inodes_forget(t, v1, 1);
    TT_CHECK(mount_inodes_get(t, ino1) == NULL, "old version freed after its forget");
    TT_CHECK(mount_inodes_get(t, v2->ino) == v2, "new version unaffected");
    mount_inodes_delete(t);
}

TT_TEST(test_mount_inodes_many_paths_all_found_after_growth)
{
    mount_inodes *t = mount_inodes_new();
    char path[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(path, sizeof path, "d/%d", i);
        mount_inode *in = mount_inodes_get_path(t, path, false);
        TT_CHECK(in, "insert %d", i);
        in->nlookup = 1;
    }
    for (int i = 0; i < 20000; i++) {
        snprintf(path, sizeof path, "d/%d", i);
        mount_inode *in = mount_inodes_find(t, path);
        TT_CHECK(in && mount_inodes_get(t, in->ino) == in, "path %s findable by path and number",
                 path);
    }
    mount_inodes_delete(t);
}

TT_MAIN()

/* mount_ra: a run grows while reads follow on (slightly out of order too), a seek is 0, and a
 * random reader's next read far away is a seek again. */
TT_TEST(test_mount_ra_runs_grow_on_sequential_reads_and_a_seek_is_zero)
{
    mount_ra ra = {0};
    TT_CHECK(mount_ra_note(&ra, 0, 4096) == 4096, "the first read at offset 0 begins a run");
    TT_CHECK(mount_ra_note(&ra, 4096, 4096) == 8192, "a read at the end continues it");
    TT_CHECK(mount_ra_note(&ra, 16384, 4096) == 20480, "a read a few of its lengths past the end continues it");
    TT_CHECK(mount_ra_note(&ra, 8192, 4096) == 20480, "a late read inside the run continues it");
    TT_CHECK(mount_ra_note(&ra, 64u << 20, 4096) == 0, "a seek far ahead is a random read");
    TT_CHECK(mount_ra_note(&ra, (64u << 20) + 4096, 4096) == 8192, "the next read turns it into a run of its own");
    TT_CHECK(mount_ra_note(&ra, 20480, 4096) == 24576, "the first stream is still there to go back to");
    mount_ra r2 = {0};
    TT_CHECK(mount_ra_note(&r2, 40u << 20, 4096) == 0, "a first read past offset 0 is random");
    mount_ra r3 = {0};
    TT_CHECK(mount_ra_note(&r3, 256u << 10, 128u << 10) == 384u << 10,
             "a request that overtook the first begins a run");
    TT_CHECK(mount_ra_note(&r3, 0, 128u << 10) == 384u << 10, "and the first one, late, continues it");
    for (uint64_t k = 0; k < 64; k++) /* scattered 4 KiB reads, each 3 MiB from the last */
        TT_CHECK(mount_ra_note(&r2, ((7 + 3 * k) % 61 + 1) << 20, 4096) == 0, "random read %llu taken for sequential",
                 (unsigned long long)k);
}
