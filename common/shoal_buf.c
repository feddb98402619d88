/*
 * Growth doubles the capacity so appends are amortized O(1); one byte past len is always
 * reserved and kept NUL so the buffer can be read as a C string without another copy.
 */
#include "shoal_buf.h"
#include "shoal_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int shoal_buf_create(shoal_buf *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return cap ? shoal_buf_reserve(b, cap) : 0;
}

void shoal_buf_destroy(shoal_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

int shoal_buf_reserve(shoal_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1)
        return shoal_error_set(SHOAL_ERR_NOMEM, "buffer of %zu bytes cannot grow by %zu", b->len, extra);
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return shoal_error_set(SHOAL_ERR_NOMEM, "cannot grow buffer to %zu bytes", cap);
    b->data = p;
    b->cap = cap;
    b->data[b->len] = '\0';
    return 0;
}

int shoal_buf_append(shoal_buf *b, const void *data, size_t len)
{
    if (shoal_buf_reserve(b, len) < 0)
        return -1;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int shoal_buf_append_cursor(shoal_buf *b, shoal_cursor c) { return shoal_buf_append(b, c.ptr, c.len); }
int shoal_buf_append_str(shoal_buf *b, const char *s) { return shoal_buf_append(b, s, strlen(s)); }
int shoal_buf_append_byte(shoal_buf *b, uint8_t byte) { return shoal_buf_append(b, &byte, 1); }

int shoal_buf_vappendf(shoal_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return shoal_error_set(SHOAL_ERR_INVAL, "bad format string");
    if (shoal_buf_reserve(b, (size_t)n) < 0)
        return -1;
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int shoal_buf_appendf(shoal_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = shoal_buf_vappendf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void shoal_buf_reset(shoal_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

const char *shoal_buf_str(const shoal_buf *b) { return b->data ? (const char *)b->data : ""; }

uint8_t *shoal_buf_steal(shoal_buf *b, size_t *len)
{
    if (!b->data && shoal_buf_reserve(b, 0) < 0)
        return NULL;
    uint8_t *p = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}

shoal_cursor shoal_cursor_from_buf(const shoal_buf *b) { return (shoal_cursor){b->data, b->len}; }
shoal_cursor shoal_cursor_from_str(const char *s) { return (shoal_cursor){(const uint8_t *)s, s ? strlen(s) : 0}; }
shoal_cursor shoal_cursor_from_mem(const void *p, size_t len) { return (shoal_cursor){p, len}; }

bool shoal_cursor_eq(shoal_cursor a, shoal_cursor b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

bool shoal_cursor_eq_str(shoal_cursor a, const char *s) { return shoal_cursor_eq(a, shoal_cursor_from_str(s)); }

bool shoal_cursor_eq_str_ci(shoal_cursor a, const char *s)
{
    size_t n = strlen(s);
    if (n != a.len)
        return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t x = a.ptr[i], y = (uint8_t)s[i];
        if (x >= 'A' && x <= 'Z')
            x = (uint8_t)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (uint8_t)(y + 32);
        if (x != y)
            return false;
    }
    return true;
}

shoal_cursor shoal_cursor_advance(shoal_cursor *c, size_t n)
{
    if (n > c->len)
        n = c->len;
    shoal_cursor head = {c->ptr, n};
    c->ptr += n;
    c->len -= n;
    return head;
}

static bool is_ws(uint8_t ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'; }

shoal_cursor shoal_cursor_trim(shoal_cursor c)
{
    while (c.len && is_ws(c.ptr[0])) {
        c.ptr++;
        c.len--;
    }
    while (c.len && is_ws(c.ptr[c.len - 1]))
        c.len--;
    return c;
}

shoal_cursor shoal_cursor_split(shoal_cursor *c, char sep)
{
    const uint8_t *hit = c->len ? memchr(c->ptr, sep, c->len) : NULL;
    if (!hit)
        return shoal_cursor_advance(c, c->len);
    shoal_cursor head = shoal_cursor_advance(c, (size_t)(hit - c->ptr));
    shoal_cursor_advance(c, 1);
    return head;
}

char *shoal_cursor_strdup(shoal_cursor c)
{
    char *s = malloc(c.len + 1);
    if (!s) {
        shoal_error_set(SHOAL_ERR_NOMEM, "cannot copy %zu bytes", c.len);
        return NULL;
    }
    if (c.len)
        memcpy(s, c.ptr, c.len);
    s[c.len] = '\0';
    return s;
}
