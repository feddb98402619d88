/*
 * shoal_bytes: bytes as hex text, and integers in fixed byte order.
 *
 * Hex is how ids and digests become names (block files, ZAP user ids, ETags, SigV4 signatures).
 * shoal_hex writes lower case; shoal_unhex reads back exactly that, so each byte string has one
 * spelling and a name that is not ours is refused; shoal_unhex_ci also takes the upper case that
 * other writers may use (S3 ETags).
 *
 * The byte-order helpers read and write unaligned integers of fixed layouts (the block file
 * header, the peer listing page, the control socket's chunk headers, the inputs of block-id
 * hashes) one byte at a time, so they mean the same on every host. Little-endian is the
 * project's own layouts; big-endian is msgpack's and the block store's form of a 128-bit id.
 */
#ifndef SHOAL_BYTES_H
#define SHOAL_BYTES_H

#include <stddef.h>
#include <stdint.h>

/* Lower-case hex of `len` bytes into `out` (2*len+1 bytes, NUL-terminated). */
void shoal_hex(char *out, const uint8_t *in, size_t len);

/* Decodes the 2*n lower-case hex digits at `in` into n bytes at `out`. Reading stops at the first
 * character that is not one, so a shorter NUL-terminated string is never read past its end.
 * 0, or -1 with SHOAL_ERR_INVAL (out then holds the bytes before that character). */
int shoal_unhex(uint8_t *out, const char *in, size_t n);
/* The same with upper-case digits accepted too. */
int shoal_unhex_ci(uint8_t *out, const char *in, size_t n);

/* The n-byte (1..8) unsigned integer at p, least (le) or most (be) significant byte first. */
static inline uint64_t shoal_load_le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

static inline uint64_t shoal_load_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Writes the low n bytes (1..8) of v at p, least (le) or most (be) significant byte first. */
static inline void shoal_store_le(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void shoal_store_be(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static inline uint16_t shoal_load_le16(const uint8_t *p) { return (uint16_t)shoal_load_le(p, 2); }
static inline uint32_t shoal_load_le32(const uint8_t *p) { return (uint32_t)shoal_load_le(p, 4); }
static inline uint64_t shoal_load_le64(const uint8_t *p) { return shoal_load_le(p, 8); }
static inline void shoal_store_le16(uint8_t *p, uint16_t v) { shoal_store_le(p, v, 2); }
static inline void shoal_store_le32(uint8_t *p, uint32_t v) { shoal_store_le(p, v, 4); }
static inline void shoal_store_le64(uint8_t *p, uint64_t v) { shoal_store_le(p, v, 8); }
static inline void shoal_store_be64(uint8_t *p, uint64_t v) { shoal_store_be(p, v, 8); }

#endif
