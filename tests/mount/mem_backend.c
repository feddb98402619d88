/*
 * mem_backend: objects in a sorted array under one mutex. Keys are byte strings with a length
 * (so a test can store a key with a NUL byte, which the mount must skip); listing walks the array
 * in key order and rolls keys containing the delimiter after the prefix into common prefixes,
 * emitting each prefix once, as S3 does. Every version gets a fresh ETag, so a read that names an
 * older ETag gets -ESTALE, as an If-Match GET gets 412 from S3.
 */
#include "mem_backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shoal_error.h"

typedef struct mem_obj {
    char *key;
    size_t key_len;
    char *data;
    size_t len;
    char etag[MOUNT_ETAG_MAX];
    int64_t mtime;
    mount_attrs attrs; /* the object's metadata (set 0: none) */
} mem_obj;

struct mem_backend {
    pthread_mutex_t lock;
    mem_obj *o;
    size_t n, cap;
    uint64_t version;
    mem_counts counts;
    unsigned fail_puts;
    int fail_err;
};

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

static int key_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

/* Index of `key` or where it would go; *found says which. Lock held. */
static size_t find(mem_backend *b, const char *key, size_t len, bool *found)
{
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = key_cmp(key, len, b->o[mid].key, b->o[mid].key_len);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    *found = false;
    return lo;
}

static mem_obj *get(mem_backend *b, const char *key)
{
    bool found;
    size_t i = find(b, key, strlen(key), &found);
    return found ? &b->o[i] : NULL;
}

/* Stores a new version (lock held); takes `data`. */
static void info_of(const mem_obj *o, mount_obj_info *out);

static void store(mem_backend *b, const char *key, size_t key_len, char *data, size_t len,
                  int64_t mtime, const mount_attrs *attrs, mount_obj_info *out)
{
    bool found;
    size_t i = find(b, key, key_len, &found);
    if (!found) {
        if (b->n == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 64;
            b->o = realloc(b->o, b->cap * sizeof *b->o);
            if (!b->o)
                abort();
        }
        memmove(&b->o[i + 1], &b->o[i], (b->n - i) * sizeof *b->o);
        b->n++;
        b->o[i].key = xmalloc(key_len + 1);
        memcpy(b->o[i].key, key, key_len);
        b->o[i].key[key_len] = '\0';
        b->o[i].key_len = key_len;
    } else {
        free(b->o[i].data);
    }
    mem_obj *o = &b->o[i];
    o->data = data;
    o->len = len;
    o->mtime = mtime ? mtime : time(NULL);
    snprintf(o->etag, sizeof o->etag, "\"v%llu\"", (unsigned long long)++b->version);
    memset(&o->attrs, 0, sizeof o->attrs);
    if (attrs)
        o->attrs = *attrs;
    if (out)
        info_of(o, out);
}

static void drop(mem_backend *b, const char *key)
{
    bool found;
    size_t i = find(b, key, strlen(key), &found);
    if (!found)
        return;
    free(b->o[i].key);
    free(b->o[i].data);
    memmove(&b->o[i], &b->o[i + 1], (b->n - i - 1) * sizeof *b->o);
    b->n--;
}

static void info_of(const mem_obj *o, mount_obj_info *out)
{
    memset(out, 0, sizeof *out);
    out->size = o->len;
    out->mtime = o->mtime;
    snprintf(out->etag, sizeof out->etag, "%s", o->etag);
    out->has_attrs = true;
    out->attrs = o->attrs;
}

static int mem_head(void *ctx, const char *key, mount_obj_info *out)
{
    mem_backend *b = ctx;
    pthread_mutex_lock(&b->lock);
    b->counts.head++;
    mem_obj *o = get(b, key);
    if (o)
        info_of(o, out);
    pthread_mutex_unlock(&b->lock);
    return o ? 0 : -ENOENT;
}

static int list_counted(mem_backend *b, unsigned *counter, const char *prefix, const char *delimiter,
                        size_t max_entries, mount_list_fn cb, void *ud)
{
    size_t plen = strlen(prefix), dlen = strlen(delimiter), emitted = 0;
    char *last_prefix = NULL;
    size_t last_len = 0;
    pthread_mutex_lock(&b->lock);
    (*counter)++;
    bool found;
    for (size_t i = find(b, prefix, plen, &found); i < b->n; i++) {
        mem_obj *o = &b->o[i];
        if (o->key_len < plen || memcmp(o->key, prefix, plen) != 0)
            break;
        const char *d = dlen ? memmem(o->key + plen, o->key_len - plen, delimiter, dlen) : NULL;
        int stop;
        if (d) {
            size_t cp_len = (size_t)(d - o->key) + dlen;
            if (last_prefix && cp_len == last_len && memcmp(last_prefix, o->key, cp_len) == 0)
                continue;
            last_prefix = o->key;
            last_len = cp_len;
            stop = cb(ud, o->key, cp_len, true, NULL);
        } else {
            mount_obj_info info;
            info_of(o, &info);
            info.has_attrs = false; /* as S3: a listing carries no user metadata */
            memset(&info.attrs, 0, sizeof info.attrs);
            stop = cb(ud, o->key, o->key_len, false, &info);
        }
        if (stop || (max_entries && ++emitted >= max_entries))
            break;
    }
    pthread_mutex_unlock(&b->lock);
    return 0;
}

static int mem_list(void *ctx, const char *prefix, const char *delimiter, size_t max_entries, mount_list_fn cb,
                    void *ud)
{
    mem_backend *b = ctx;
    return list_counted(b, &b->counts.list, prefix, delimiter, max_entries, cb, ud);
}

static int mem_list_shared(void *ctx, const char *prefix, const char *delimiter, mount_list_fn cb, void *ud,
                           uint64_t *age_us)
{
    mem_backend *b = ctx;
    *age_us = 0;
    return list_counted(b, &b->counts.list_shared, prefix, delimiter, 0, cb, ud);
}

static ssize_t mem_read(void *ctx, const char *key, const char *etag, uint64_t offset, size_t len, void *buf,
                        uint64_t run)
{
    mem_backend *b = ctx;
    ssize_t n;
    pthread_mutex_lock(&b->lock);
    b->counts.read++;
    mem_obj *o = get(b, key);
    if (!o)
        n = -ENOENT;
    else if (strcmp(o->etag, etag) != 0)
        n = -ESTALE;
    else if (offset >= o->len)
        n = 0;
    else {
        n = (ssize_t)(o->len - offset < len ? o->len - offset : len);
        memcpy(buf, o->data + offset, (size_t)n);
    }
    pthread_mutex_unlock(&b->lock);
    return n;
}

static int mem_put(void *ctx, const char *key, int fd, uint64_t size, const mount_attrs *attrs,
                   mount_obj_info *out)
{
    mem_backend *b = ctx;
    char *data = xmalloc((size_t)size);
    for (uint64_t off = 0; off < size;) {
        ssize_t n = pread(fd, data + off, (size_t)(size - off), (off_t)off);
        if (n <= 0) {
            free(data);
            return -EIO;
        }
        off += (uint64_t)n;
    }
    int rc = 0;
    pthread_mutex_lock(&b->lock);
    b->counts.put++;
    if (b->fail_puts > 0) {
        b->fail_puts--;
        rc = b->fail_err;
        free(data);
    } else {
        store(b, key, strlen(key), data, (size_t)size, 0, attrs, out);
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}

static int mem_copy(void *ctx, const char *src, const char *dst, const mount_attrs *attrs,
                    mount_obj_info *out)
{
    mem_backend *b = ctx;
    int rc = 0;
    pthread_mutex_lock(&b->lock);
    b->counts.copy++;
    mem_obj *o = get(b, src);
    if (!o) {
        rc = -ENOENT;
    } else {
        char *data = xmalloc(o->len);
        memcpy(data, o->data, o->len);
        mount_attrs keep = o->attrs; /* o may move when dst is a new key */
        store(b, dst, strlen(dst), data, o->len, 0, attrs ? attrs : &keep, out);
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}

static int mem_remove(void *ctx, const char *key)
{
    mem_backend *b = ctx;
    pthread_mutex_lock(&b->lock);
    b->counts.remove++;
    drop(b, key);
    pthread_mutex_unlock(&b->lock);
    return 0;
}

const mount_backend mem_backend_ops = {
    .head = mem_head,
    .list = mem_list,
    .read = mem_read,
    .put = mem_put,
    .copy = mem_copy,
    .remove = mem_remove,
};

const mount_backend mem_backend_shared_ops = {
    .head = mem_head,
    .list = mem_list,
    .list_shared = mem_list_shared,
    .read = mem_read,
    .put = mem_put,
    .copy = mem_copy,
    .remove = mem_remove,
};

mem_backend *mem_backend_new(void)
{
    mem_backend *b = xmalloc(sizeof *b);
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->lock, NULL);
    return b;
}

void mem_backend_delete(mem_backend *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++) {
        free(b->o[i].key);
        free(b->o[i].data);
    }
    free(b->o);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

void mem_backend_set(mem_backend *b, const char *key, size_t key_len, const void *data,
                     size_t len, int64_t mtime)
{
    char *copy = xmalloc(len);
    memcpy(copy, data, len);
    pthread_mutex_lock(&b->lock);
    store(b, key, key_len, copy, len, mtime, NULL, NULL);
    pthread_mutex_unlock(&b->lock);
}

void mem_backend_set_str(mem_backend *b, const char *key, const char *data)
{
    mem_backend_set(b, key, strlen(key), data, strlen(data), 0);
}

void mem_backend_del(mem_backend *b, const char *key)
{
    pthread_mutex_lock(&b->lock);
    drop(b, key);
    pthread_mutex_unlock(&b->lock);
}

char *mem_backend_get(mem_backend *b, const char *key, size_t *len)
{
    char *out = NULL;
    pthread_mutex_lock(&b->lock);
    mem_obj *o = get(b, key);
    if (o) {
        out = xmalloc(o->len + 1);
        memcpy(out, o->data, o->len);
        out[o->len] = '\0';
        *len = o->len;
    }
    pthread_mutex_unlock(&b->lock);
    return out;
}

bool mem_backend_etag(mem_backend *b, const char *key, char *out)
{
    pthread_mutex_lock(&b->lock);
    mem_obj *o = get(b, key);
    if (o)
        snprintf(out, MOUNT_ETAG_MAX, "%s", o->etag);
    pthread_mutex_unlock(&b->lock);
    return o != NULL;
}

bool mem_backend_set_attrs(mem_backend *b, const char *key, const mount_attrs *a)
{
    pthread_mutex_lock(&b->lock);
    mem_obj *o = get(b, key);
    if (o)
        o->attrs = *a;
    pthread_mutex_unlock(&b->lock);
    return o != NULL;
}

bool mem_backend_attrs(mem_backend *b, const char *key, mount_attrs *out)
{
    pthread_mutex_lock(&b->lock);
    mem_obj *o = get(b, key);
    if (o)
        *out = o->attrs;
    pthread_mutex_unlock(&b->lock);
    return o != NULL;
}

size_t mem_backend_count(mem_backend *b)
{
    pthread_mutex_lock(&b->lock);
    size_t n = b->n;
    pthread_mutex_unlock(&b->lock);
    return n;
}

mem_counts mem_backend_counts(mem_backend *b)
{
    pthread_mutex_lock(&b->lock);
    mem_counts c = b->counts;
    pthread_mutex_unlock(&b->lock);
    return c;
}

void mem_backend_reset_counts(mem_backend *b)
{
    pthread_mutex_lock(&b->lock);
    memset(&b->counts, 0, sizeof b->counts);
    pthread_mutex_unlock(&b->lock);
}

void mem_backend_fail_puts(mem_backend *b, unsigned n, int err)
{
    pthread_mutex_lock(&b->lock);
    b->fail_puts = n;
    b->fail_err = err;
    pthread_mutex_unlock(&b->lock);
}

int mem_backend_mount(mem_backend *b, const mount_config *cfg, mount_view **out)
{
    *out = mount_new(cfg, &mem_backend_ops, b);
    if (!*out)
        return -1;
    if (mount_start(*out) == 0)
        return 0;
    char why[512];
    snprintf(why, sizeof why, "%s", shoal_error_message());
    mount_delete(*out);
    *out = NULL;
    shoal_error_set(SHOAL_ERR_MOUNT, "%s", why);
    return 1;
}
