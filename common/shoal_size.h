/*
 * shoal_size: the one grammar for sizes on every command line of the project.
 *
 *   a number (decimals allowed), optionally followed by a unit, case-insensitive:
 *     B (or nothing)         bytes
 *     K, M, G, T             powers of 1024 (as dd, df -h and most tools read a bare letter)
 *     KiB, MiB, GiB, TiB     powers of 1024
 *     KB, MB, GB, TB         powers of 1000 (as disk and network vendors and AWS price sheets write)
 *
 * So "4M" = "4MiB" = 4,194,304 and "4MB" = 4,000,000. A negative, non-finite or unparsable number,
 * an unknown unit, trailing text and a result of 2^64 or more are errors. Pure; thread-safe.
 */
#ifndef SHOAL_SIZE_H
#define SHOAL_SIZE_H

#include <stdint.h>

/* Parses `text` into *out (bytes, rounded to the nearest byte). 0, or -1 with SHOAL_ERR_INVAL and
 * a message naming the text; *out is untouched on failure. */
int shoal_parse_size(const char *text, uint64_t *out);

#endif
