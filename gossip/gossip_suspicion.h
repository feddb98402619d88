/*
 * gossip_suspicion: the Lifeguard suspicion timeout (Lifeguard section IV-B, memberlist
 * suspicion.go) as pure arithmetic over virtual time: no clock, no timer, no member table.
 *
 * A suspicion runs for a time that starts at max = suspicion_max_mult * min and shrinks toward
 * min = suspicion_mult * max(1, log10 n) * probe_interval as independent accusers confirm it: after
 * c of the k expected confirmations the timeout is max - (max - min) * log(c + 1) / log(k + 1),
 * floored to the millisecond and never below min. gossip.c keeps one per suspect member and
 * declares the member dead when gossip's clock passes the deadline.
 *
 * Private to gossip/ (and its tests). Plain values; nothing allocates, nothing fails.
 */
#ifndef SHOAL_GOSSIP_SUSPICION_H
#define SHOAL_GOSSIP_SUSPICION_H

#include <stdbool.h>
#include <stdint.h>

#define GOSSIP_SUSPICION_CONFIRMERS_MAX 8 /* k is capped here */
#define GOSSIP_SUSPICION_NOBODY UINT32_MAX /* an accuser nobody can name: never counted */

typedef struct gossip_suspicion {
    uint32_t member; /* the suspect's slot (the caller's numbering) */
    uint32_t k, n;   /* confirmations expected, and counted so far */
    uint32_t confirmers[GOSSIP_SUSPICION_CONFIRMERS_MAX + 1]; /* [0] the first accuser, then n more */
    uint64_t start, min, max, deadline; /* microseconds */
} gossip_suspicion;

/* The shortest timeout: mult * max(1, log10 n_live) * probe_interval_us (memberlist's
 * suspicionTimeout). */
uint64_t gossip_suspicion_min_us(uint32_t mult, uint32_t n_live, uint64_t probe_interval_us);
/* Confirmations to expect: mult - 2 (capped at GOSSIP_SUSPICION_CONFIRMERS_MAX), or 0 when fewer
 * than that many other members could confirm (n_live - 2 < k). */
uint32_t gossip_suspicion_k(uint32_t mult, uint32_t n_live);
/* The timeout after n confirmations of k: max with none (min when k is 0), shrinking on a log
 * scale to min at n = k, floored to the millisecond, never below min. */
uint64_t gossip_suspicion_timeout(uint32_t n, uint32_t k, uint64_t min, uint64_t max);
/* What is left of that timeout after `elapsed` (negative once it has passed; memberlist's
 * remainingSuspicionTime). */
int64_t gossip_suspicion_remaining(uint32_t n, uint32_t k, uint64_t elapsed, uint64_t min, uint64_t max);

/* A suspicion of `member` raised by `accuser` at `start`: deadline start + timeout(0, k). */
void gossip_suspicion_start(gossip_suspicion *s, uint32_t member, uint32_t accuser, uint32_t k, uint64_t start,
                            uint64_t min, uint64_t max);
/* Counts `accuser` when it is new and fewer than k have confirmed: the deadline moves to start +
 * timeout(n, k). True when it counted (the caller re-gossips the suspicion then); false for the
 * first accuser again, a repeat, GOSSIP_SUSPICION_NOBODY, or once k have confirmed. */
bool gossip_suspicion_confirm(gossip_suspicion *s, uint32_t accuser);

#endif
