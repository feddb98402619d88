/*
 * Hex both ways. The decoders check each digit before reading the next, which is what lets a
 * caller hand them a NUL-terminated name of unknown length.
 */
#include "shoal_bytes.h"
#include "shoal_error.h"

#include <stdbool.h>

void shoal_hex(char *out, const uint8_t *in, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

static int digit(char c, bool any_case)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (any_case && c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int unhex(uint8_t *out, const char *in, size_t n, bool any_case)
{
    for (size_t i = 0; i < 2 * n; i += 2) {
        int hi = digit(in[i], any_case);
        int lo = hi < 0 ? -1 : digit(in[i + 1], any_case);
        if (lo < 0)
            return shoal_error_set(SHOAL_ERR_INVAL, "not %shex digits at byte %zu of %zu",
                                   any_case ? "" : "lower-case ", i / 2, n);
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int shoal_unhex(uint8_t *out, const char *in, size_t n) { return unhex(out, in, n, false); }
int shoal_unhex_ci(uint8_t *out, const char *in, size_t n) { return unhex(out, in, n, true); }
