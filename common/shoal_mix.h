/*
 * shoal_mix: SplitMix64, the one small deterministic generator for code that wants spread-out
 * numbers or bytes from a seed (test payloads, block ids in benchmarks) without a library or
 * global state. Not for anything secret. Header-only; each state belongs to its caller
 * (thread-safe as long as a state is not shared).
 */
#ifndef SHOAL_MIX_H
#define SHOAL_MIX_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Advances *state and returns its next value: every 64-bit value once per 2^64 calls. */
static inline uint64_t shoal_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Fills buf with the next len bytes of the stream from *state: each value's 8 bytes in memory
 * order, the last cut short. Filling in pieces that are multiples of 8 gives the same bytes as
 * one fill. */
static inline void shoal_mix_fill(void *buf, size_t len, uint64_t *state)
{
    uint8_t *p = buf;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = shoal_splitmix64(state);
        memcpy(p + i, &v, len - i < 8 ? len - i : 8);
    }
}

#endif
