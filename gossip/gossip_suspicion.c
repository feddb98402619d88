/*
 * The suspicion timeout, kept apart from gossip.c so it can be checked case by case against the
 * numbers of memberlist's own table (tests/gossip/test_gossip_suspicion.c). Times are integer
 * microseconds; the log-scale shrink is computed in double and floored to the millisecond, as
 * memberlist floors its time.Duration, so runs are the same on every machine with IEEE doubles.
 * Unlike memberlist the timer is not armed here: gossip.c compares the deadline with its clock at
 * each tick, so a confirmation after the deadline changes nothing that already happened.
 */
#include "gossip_suspicion.h"

#include "shoal_assert.h"
#include <math.h>

uint64_t gossip_suspicion_min_us(uint32_t mult, uint32_t n_live, uint64_t probe_interval_us)
{
    double n = n_live;
    double scale = fmax(1.0, log10(fmax(1.0, n)));
    return (uint64_t)(mult * scale * (double)probe_interval_us);
}

uint32_t gossip_suspicion_k(uint32_t mult, uint32_t n_live)
{
    uint32_t k = mult > 2 ? mult - 2 : 0;
    if (k > GOSSIP_SUSPICION_CONFIRMERS_MAX)
        k = GOSSIP_SUSPICION_CONFIRMERS_MAX;
    if ((double)n_live - 2 < k)
        k = 0;
    return k;
}

uint64_t gossip_suspicion_timeout(uint32_t n, uint32_t k, uint64_t min, uint64_t max)
{
    if (k < 1)
        return min;
    if (n == 0)
        return max;
    double frac = log((double)n + 1.0) / log((double)k + 1.0);
    double raw = (double)max - frac * (double)(max - min);
    uint64_t t = raw <= 0 ? 0 : (uint64_t)(floor(raw / 1000.0) * 1000.0);
    return t < min ? min : t;
}

int64_t gossip_suspicion_remaining(uint32_t n, uint32_t k, uint64_t elapsed, uint64_t min, uint64_t max)
{
    return (int64_t)gossip_suspicion_timeout(n, k, min, max) - (int64_t)elapsed;
}

void gossip_suspicion_start(gossip_suspicion *s, uint32_t member, uint32_t accuser, uint32_t k, uint64_t start,
                            uint64_t min, uint64_t max)
{
    SHOAL_ASSERT(k <= GOSSIP_SUSPICION_CONFIRMERS_MAX);
    *s = (gossip_suspicion){.member = member, .k = k, .start = start, .min = min, .max = max};
    s->confirmers[0] = accuser;
    s->deadline = start + gossip_suspicion_timeout(0, k, min, max);
}

bool gossip_suspicion_confirm(gossip_suspicion *s, uint32_t accuser)
{
    if (accuser == GOSSIP_SUSPICION_NOBODY || s->n >= s->k)
        return false;
    for (uint32_t j = 0; j <= s->n; j++)
        if (s->confirmers[j] == accuser)
            return false;
    s->confirmers[++s->n] = accuser;
    SHOAL_ASSERT(s->n <= s->k);
    s->deadline = s->start + gossip_suspicion_timeout(s->n, s->k, s->min, s->max);
    return true;
}
