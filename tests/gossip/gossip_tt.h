/*
 * Helpers shared by the gossip tests: the base configuration every simulated node uses, and a
 * cluster that has joined and converged. Everything runs in virtual time (sim/), so a test of
 * minutes of protocol time takes well under a second of real time.
 */
#ifndef SHOAL_GOSSIP_TT_H
#define SHOAL_GOSSIP_TT_H

#include "gossip.h"
#include "shoal_error.h"
#include "shoal_log.h"
#include "sim_cluster.h"
#include "tt.h"

#include <math.h>
#include <string.h>

#define SEC 1000000ull

static inline void gtt_config(gossip_config *c)
{
    sim_cluster_base_config(c);
    shoal_log_set_level(SHOAL_LOG_WARN);
}

static inline bool gtt_converged(void *ud) { return sim_cluster_converged(ud); }

/* n nodes joined through node 0 and converged (fails the test otherwise). */
static inline sim_cluster *gtt_cluster(uint64_t seed, size_t n, uint64_t within_s)
{
    gossip_config base;
    gtt_config(&base);
    sim_cluster *c = sim_cluster_new(seed, &base);
    TT_CHECK(c != NULL, "cluster");
    TT_OK(sim_cluster_add_joined(c, n, 0));
    bool ok = sim_world_run_until_cond(sim_cluster_world(c), within_s * SEC, SEC / 2, gtt_converged, c);
    TT_CHECK(ok, "%zu nodes did not converge within %llu s (seed %llu)", n,
             (unsigned long long)within_s, (unsigned long long)seed);
    return c;
}

typedef struct gtt_seen {
    sim_cluster *c;
    int about;
    gossip_state state;
} gtt_seen;

/* Condition: every running node other than `about` sees it in `state`. */
static inline bool gtt_all_see(void *ud)
{
    gtt_seen *s = ud;
    size_t others = sim_cluster_running(s->c) - (sim_cluster_node(s->c, s->about) != NULL);
    return sim_cluster_count_seeing(s->c, s->about, s->state) == others;
}

static inline bool gtt_any_sees(void *ud)
{
    gtt_seen *s = ud;
    return sim_cluster_count_seeing(s->c, s->about, s->state) > 0;
}

#endif
