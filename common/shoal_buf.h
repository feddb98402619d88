/*
 * shoal_buf: an owning, growable byte buffer; shoal_cursor: a borrowed view of bytes.
 *
 * As in aws-c-common (byte_buf / byte_cursor), ownership is in the type: a function that takes a
 * shoal_cursor only reads the bytes for the duration of the call; a function that takes a
 * shoal_buf * may grow it. A shoal_buf is caller-owned memory (create/destroy); its data is
 * always NUL-terminated past len so it can be handed to C string APIs, but it may hold NULs.
 */
#ifndef SHOAL_BUF_H
#define SHOAL_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct shoal_buf {
    uint8_t *data; /* NULL until the first byte is reserved */
    size_t len;
    size_t cap;
} shoal_buf;

typedef struct shoal_cursor {
    const uint8_t *ptr;
    size_t len;
} shoal_cursor;

/* Initializes an empty buffer with room for `cap` bytes (0 allocates nothing). -1 on NOMEM. */
int shoal_buf_create(shoal_buf *b, size_t cap);
/* Frees the bytes; the buffer is empty and reusable afterwards. Accepts a zeroed buffer. */
void shoal_buf_destroy(shoal_buf *b);
/* Ensures room for `extra` more bytes (plus the terminating NUL). -1 on NOMEM. */
int shoal_buf_reserve(shoal_buf *b, size_t extra);
int shoal_buf_append(shoal_buf *b, const void *data, size_t len);
int shoal_buf_append_cursor(shoal_buf *b, shoal_cursor c);
int shoal_buf_append_str(shoal_buf *b, const char *s);
int shoal_buf_append_byte(shoal_buf *b, uint8_t byte);
int shoal_buf_appendf(shoal_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int shoal_buf_vappendf(shoal_buf *b, const char *fmt, va_list ap);
/* Empties the buffer, keeping its memory. */
void shoal_buf_reset(shoal_buf *b);
/* The buffer as a C string ("" for an empty buffer; never NULL). */
const char *shoal_buf_str(const shoal_buf *b);
/* Hands the bytes to the caller (free() them); the buffer becomes empty. Never NULL on success. */
uint8_t *shoal_buf_steal(shoal_buf *b, size_t *len);

shoal_cursor shoal_cursor_from_buf(const shoal_buf *b);
shoal_cursor shoal_cursor_from_str(const char *s);
shoal_cursor shoal_cursor_from_mem(const void *p, size_t len);
bool shoal_cursor_eq(shoal_cursor a, shoal_cursor b);
bool shoal_cursor_eq_str(shoal_cursor a, const char *s);
bool shoal_cursor_eq_str_ci(shoal_cursor a, const char *s); /* ASCII case-insensitive */
/* Advances past n bytes (clamped to len); returns the skipped prefix. */
shoal_cursor shoal_cursor_advance(shoal_cursor *c, size_t n);
/* Strips ASCII white space (space, tab, CR, LF) from both ends. */
shoal_cursor shoal_cursor_trim(shoal_cursor c);
/* Splits at the first `sep`: returns the part before it and advances *c past it; when `sep`
 * does not occur, returns all of *c and leaves it empty. */
shoal_cursor shoal_cursor_split(shoal_cursor *c, char sep);
/* Heap copy as a NUL-terminated string (free() it); NULL on NOMEM. */
char *shoal_cursor_strdup(shoal_cursor c);

#endif
