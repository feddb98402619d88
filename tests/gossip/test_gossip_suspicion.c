/*
 * The suspicion timeout as a table, in the shape of memberlist's suspicion_test.go: the remaining
 * time after n of k confirmations (TestSuspicion_remainingSuspicionTime, the same rows), and the
 * deadline a sequence of confirmations leaves (TestSuspicion_Timer, the same rows). Virtual time:
 * a deadline is a number, so where memberlist sleeps and waits for a timer, these cases compare.
 */
#include "gossip_suspicion.h"
#include "tt.h"

#define MS 1000ll
#define S (1000 * MS)

TT_TEST(test_gossip_suspicion_remaining_time_matches_memberlists_table)
{
    static const struct {
        uint32_t n, k;
        int64_t elapsed, min, max, expected;
    } cases[] = {
        {0, 3, 0, 2 * S, 30 * S, 30 * S},
        {1, 3, 2 * S, 2 * S, 30 * S, 14 * S},
        {2, 3, 3 * S, 2 * S, 30 * S, 4810 * MS},
        {3, 3, 4 * S, 2 * S, 30 * S, -2 * S},
        {4, 3, 5 * S, 2 * S, 30 * S, -3 * S},
        {5, 3, 10 * S, 2 * S, 30 * S, -8 * S},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t r = gossip_suspicion_remaining(cases[i].n, cases[i].k, (uint64_t)cases[i].elapsed,
                                               (uint64_t)cases[i].min, (uint64_t)cases[i].max);
        TT_CHECK(r == cases[i].expected, "case %zu: remaining %lld us, expected %lld us", i, (long long)r,
                 (long long)cases[i].expected);
    }
}

TT_TEST(test_gossip_suspicion_confirmations_shrink_the_deadline_once_per_new_accuser)
{
    enum { ME = 0, FOO, BAR, BAZ, ZOO, LATE };
    const uint32_t k = 3;
    const int64_t min = 500 * MS, max = 2 * S, start = 100 * S;
    typedef struct {
        uint32_t from;
        bool new_info;
    } pair;
    static const struct {
        uint32_t confirmations; /* counted in the end */
        pair seq[6];
        size_t n_seq;
        int64_t expected; /* deadline - start */
    } cases[] = {
        {0, {{0}}, 0, 2 * S},
        {1, {{ME, false}, {FOO, true}}, 2, 1250 * MS},
        {1, {{ME, false}, {FOO, true}, {FOO, false}, {FOO, false}}, 4, 1250 * MS},
        /* memberlist's row says 810 ms, checked there within a 25 ms sleep fudge; the exact
         * value is 2000 - 1500 * log 3 / log 4 = 811.3 ms, floored to 811 ms. */
        {2, {{ME, false}, {FOO, true}, {BAR, true}}, 3, 811 * MS},
        {3, {{ME, false}, {FOO, true}, {BAR, true}, {BAZ, true}}, 4, 500 * MS},
        {3, {{ME, false}, {FOO, true}, {BAR, true}, {BAZ, true}, {ZOO, false}}, 5, 500 * MS},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gossip_suspicion s;
        gossip_suspicion_start(&s, 7, ME, k, (uint64_t)start, (uint64_t)min, (uint64_t)max);
        for (size_t j = 0; j < cases[i].n_seq; j++)
            TT_CHECK(gossip_suspicion_confirm(&s, cases[i].seq[j].from) == cases[i].seq[j].new_info,
                     "case %zu: confirmation %zu (from %u) new_info differs", i, j, cases[i].seq[j].from);
        TT_CHECK(s.n == cases[i].confirmations, "case %zu: %u confirmations, expected %u", i, s.n,
                 cases[i].confirmations);
        TT_CHECK((int64_t)s.deadline - start == cases[i].expected, "case %zu: timeout %lld us, expected %lld us", i,
                 (long long)((int64_t)s.deadline - start), (long long)cases[i].expected);
        /* A confirmation after the deadline (memberlist's "late") moves nothing once k have
         * confirmed, and a known accuser never does. */
        uint64_t before = s.deadline;
        gossip_suspicion_confirm(&s, ME);
        TT_CHECK(s.deadline == before, "case %zu: the first accuser again moved the deadline", i);
        if (s.n == k)
            TT_CHECK(!gossip_suspicion_confirm(&s, LATE) && s.deadline == before, "case %zu: late confirmation counted",
                     i);
    }
}

TT_TEST(test_gossip_suspicion_without_expected_confirmations_runs_the_minimum)
{
    /* k = 0 (too few members to confirm, or suspicion_mult <= 2): the timeout is min at once, and a
     * confirmation has nothing to shrink (memberlist's TestSuspicion_Timer_Immediate fires at once
     * for the same reason when k = 1 is reached by one confirmation). */
    gossip_suspicion s;
    gossip_suspicion_start(&s, 1, 0, 0, 0, 100 * MS, 30 * S);
    TT_CHECK(s.deadline == 100 * MS, "deadline %llu us", (unsigned long long)s.deadline);
    TT_CHECK(!gossip_suspicion_confirm(&s, 2), "a confirmation counted with k = 0");
    gossip_suspicion_start(&s, 1, 0, 1, 0, 100 * MS, 30 * S);
    TT_CHECK(gossip_suspicion_confirm(&s, 2) && s.deadline == 100 * MS, "k = 1: deadline %llu us after one",
             (unsigned long long)s.deadline);
    TT_CHECK(!gossip_suspicion_confirm(&s, GOSSIP_SUSPICION_NOBODY), "an unnamed accuser counted");
}

TT_TEST(test_gossip_suspicion_minimum_and_expected_confirmations_follow_cluster_size)
{
    /* min = mult * max(1, log10 n) * interval; k = mult - 2 unless fewer members could confirm. */
    static const struct {
        uint32_t mult, n_live;
        uint64_t interval, min;
        uint32_t k;
    } cases[] = {
        {4, 1, 1000000, 4000000, 0},      {4, 3, 1000000, 4000000, 0},   {4, 4, 1000000, 4000000, 2},
        {4, 10, 1000000, 4000000, 2},     {4, 100, 1000000, 8000000, 2}, {4, 1000, 1000000, 12000000, 2},
        {5, 10000, 200000, 4000000, 3},   {20, 100, 1000000, 40000000, 8}, {2, 50, 1000000, 3397940, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t min = gossip_suspicion_min_us(cases[i].mult, cases[i].n_live, cases[i].interval);
        uint32_t k = gossip_suspicion_k(cases[i].mult, cases[i].n_live);
        TT_CHECK(min == cases[i].min && k == cases[i].k, "case %zu: min %llu us k %u, expected %llu us k %u", i,
                 (unsigned long long)min, k, (unsigned long long)cases[i].min, cases[i].k);
    }
}

TT_MAIN()
