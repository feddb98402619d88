/*
 * The size grammar of shoal_size.h. A table of units, matched whole and case-insensitively after
 * the number; the number is read with strtod, so "1.5G" works, and multiplied in long double so a
 * whole count of any unit up to 16 EiB is exact.
 */
#include "shoal_size.h"
#include "shoal_error.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <strings.h>

int shoal_parse_size(const char *text, uint64_t *out)
{
    static const struct {
        const char *name;
        long double factor;
    } units[] = {
        {"", 1},           {"b", 1},
        {"k", 1024.0L},    {"kib", 1024.0L},    {"kb", 1e3L},
        {"m", 1048576.0L}, {"mib", 1048576.0L}, {"mb", 1e6L},
        {"g", 1073741824.0L}, {"gib", 1073741824.0L}, {"gb", 1e9L},
        {"t", 1099511627776.0L}, {"tib", 1099511627776.0L}, {"tb", 1e12L},
    };
    if (!text || !*text)
        return shoal_error_set(SHOAL_ERR_INVAL, "empty size");
    /* Decimal only: strtold would also take "0x10", "inf" and " 4". */
    bool decimal = (*text >= '0' && *text <= '9') || *text == '.';
    if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X'))
        decimal = false;
    char *end;
    long double v = decimal ? strtold(text, &end) : 0;
    if (!decimal || end == text || !isfinite(v) || v < 0)
        return shoal_error_set(SHOAL_ERR_INVAL, "'%s' is not a size", text);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(end, units[i].name) != 0)
            continue;
        long double bytes = v * units[i].factor + 0.5L; /* rounded by the truncation below */
        if (bytes >= 18446744073709551616.0L)
            return shoal_error_set(SHOAL_ERR_INVAL, "size '%s' is too large (2^64 bytes or more)", text);
        *out = (uint64_t)bytes;
        return 0;
    }
    return shoal_error_set(SHOAL_ERR_INVAL,
                           "'%s' is not a size (unknown unit '%s'; use B, K/M/G/T or KiB..TiB for powers of 1024, "
                           "KB/MB/GB/TB for powers of 1000)",
                           text, end);
}
