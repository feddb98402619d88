/*
 * mount_names: keys to POSIX names and back, with no I/O, so every rule is unit-tested without
 * a mount (tests/mount/test_mount_names.c).
 *
 * The rules (SPEC §4, docs/semantics.md):
 * - A key is split on '/'. Every component must be a POSIX name: not empty, not "." or "..",
 *   no NUL byte, at most 255 bytes. Any other byte sequence (spaces, CR, "+$%&;=?@[]~", any
 *   UTF-8, even bytes that are not UTF-8) is a name and round-trips unchanged.
 * - A listing entry is classified relative to the directory listed: a key with no further '/'
 *   is a file; a common prefix, a marker "x/", or a deeper key (from a backend that ignores the
 *   delimiter) is the directory named by its first component; the directory's own marker is no
 *   child at all. Only the component that becomes the child's name is checked here; deeper
 *   components are checked when that directory is listed in turn.
 * - A file and a directory with the same name (keys "a" and "a/b"): the directory wins, as in
 *   mountpoint-s3, because hiding the directory would hide every key under it, while hiding the
 *   file hides one object. The caller logs the hidden key.
 */
#include "mount_names.h"

#include <stdlib.h>
#include <string.h>

mount_name_verdict mount_names_check(const char *name, size_t len)
{
    if (len == 0)
        return MOUNT_NAME_EMPTY;
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
        return MOUNT_NAME_DOT;
    if (len > MOUNT_NAME_MAX)
        return MOUNT_NAME_TOO_LONG;
    if (memchr(name, '\0', len))
        return MOUNT_NAME_NUL;
    if (memchr(name, '/', len))
        return MOUNT_NAME_SLASH;
    return MOUNT_NAME_OK;
}

const char *mount_names_verdict_text(mount_name_verdict v)
{
    switch (v) {
    case MOUNT_NAME_OK: return "valid name";
    case MOUNT_NAME_EMPTY: return "empty component";
    case MOUNT_NAME_DOT: return "'.' or '..' component";
    case MOUNT_NAME_NUL: return "NUL byte in component";
    case MOUNT_NAME_TOO_LONG: return "component over 255 bytes";
    case MOUNT_NAME_SLASH: return "'/' in name";
    }
    return "unknown";
}

mount_child_kind mount_names_child(const char *dir_prefix, size_t dir_len, const char *key,
                                   size_t key_len, bool is_prefix, const char **name,
                                   size_t *name_len, mount_name_verdict *why)
{
    *why = MOUNT_NAME_OK;
    if (key_len < dir_len || memcmp(key, dir_prefix, dir_len) != 0)
        return MOUNT_CHILD_SKIP;
    const char *rest = key + dir_len;
    size_t rest_len = key_len - dir_len;
    if (rest_len == 0)
        return MOUNT_CHILD_SELF;
    const char *slash = memchr(rest, '/', rest_len);
    size_t len = slash ? (size_t)(slash - rest) : rest_len;
    mount_child_kind kind = (slash || is_prefix) ? MOUNT_CHILD_DIR : MOUNT_CHILD_FILE;
    *why = mount_names_check(rest, len);
    if (*why != MOUNT_NAME_OK)
        return MOUNT_CHILD_SKIP;
    *name = rest;
    *name_len = len;
    return kind;
}

bool mount_names_key_ok(const char *rel, size_t len, mount_name_verdict *why)
{
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && rel[i] != '/')
            continue;
        *why = mount_names_check(rel + start, i - start);
        if (*why != MOUNT_NAME_OK)
            return false;
        start = i + 1;
    }
    *why = MOUNT_NAME_OK;
    return true;
}

/* Names never hold NUL (checked before they become entries), so strcmp is the bytewise order;
 * at equal names a directory sorts first so the resolver keeps it. */
static int dirent_cmp(const void *a, const void *b)
{
    const mount_dirent *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return (int)y->is_dir - (int)x->is_dir;
}

size_t mount_names_resolve(mount_dirent *e, size_t n, mount_shadow_fn shadowed, void *ud)
{
    if (n == 0)
        return 0;
    qsort(e, n, sizeof *e, dirent_cmp);
    /* Walk once, keeping the first of each name; the dropped ones are swapped behind the kept
     * ones, so e[0..kept) stays sorted and nothing leaks. */
    size_t kept = 1;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(e[i].name, e[kept - 1].name) == 0) {
            if (!e[i].is_dir && shadowed)
                shadowed(ud, &e[i]);
            continue;
        }
        if (i != kept) {
            mount_dirent t = e[kept];
            e[kept] = e[i];
            e[i] = t;
        }
        kept++;
    }
    return kept;
}

const mount_dirent *mount_names_find(const mount_dirent *e, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, e[mid].name);
        if (c == 0)
            return &e[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

char *mount_names_prefix(const char *configured)
{
    const char *p = configured ? configured : "";
    while (*p == '/')
        p++;
    size_t len = strlen(p);
    bool slash = len == 0 || p[len - 1] == '/';
    char *out = malloc(len + 2);
    if (!out)
        return NULL;
    memcpy(out, p, len);
    if (!slash)
        out[len++] = '/';
    out[len] = '\0';
    return out;
}

uint64_t mount_names_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}
