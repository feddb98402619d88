/*
 * shoal_mix: SplitMix64, the one small deterministic generator for code that wants spread-out
 * numbers from a seed (test payloads, block ids in benchmarks) without a library or global
 * state. Not for anything secret. Header-only; each state belongs to its caller (thread-safe as
 * long as a state is not shared).
 */
#ifndef SHOAL_MIX_H
#define SHOAL_MIX_H

#include <stdint.h>

/* Advances *state and returns its next value: every 64-bit value once per 2^64 calls. */
static inline uint64_t shoal_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#endif
