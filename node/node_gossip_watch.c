/*
 * node_gossip_watch: per-source counts of packets that do not open, and this node's own view of
 * being unheard.
 *
 * Sources live in a small fixed table: a source is an address, and a wrong key shows up as a few
 * addresses (a misconfigured node or two), not thousands; when the table is full the source heard
 * least recently makes room (its unreported drops stay counted in gossip.bad_packets). A source's
 * first packet is logged at once, because that is when an operator is looking; after that its
 * drops accumulate and are logged when a minute has passed since its previous line, either by the
 * next packet or by a tick, so a source that stops still gets its count reported.
 *
 * This node's warnings come from gossip's counters, compared over windows of `after_us`: "packets
 * arrived and none opened" needs a window with failures and nothing that opened (a node alone with
 * nobody talking to it has nothing to report), "joining and unanswered" needs the join to be
 * waiting for `after_us` with at least two attempts sent. Both can also mean the others are down or
 * unreachable, which is why the lines say so; the members' own lines name this node's address when
 * the key is the cause. Repeats back off from one minute to one hour, so a lone node whose cluster
 * is gone for good does not fill its log.
 */
#include "node_gossip_watch.h"

#include "shoal_error.h"
#include "shoal_log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPEAT_MIN_US (60ull * 1000000u)
#define REPEAT_MAX_US (3600ull * 1000000u)
#define SOURCES_NAMED 3 /* sources a no_packet_opens line names */

typedef struct source {
    bool used;
    shoal_addr addr;
    uint64_t last_line; /* when its previous line was logged */
    uint64_t last_seen;
    uint64_t pending;   /* dropped since that line */
} source;

/* A warning that repeats with backoff while its condition lasts. */
typedef struct repeat {
    uint64_t next; /* earliest next line */
    uint64_t gap;  /* 0: not logged since the condition began */
} repeat;

struct node_gossip_watch {
    uint64_t after_us;
    source sources[NODE_GOSSIP_WATCH_SOURCES];
    /* the current window of gossip's counters */
    uint64_t win_start, win_opened, win_failed;
    repeat unheard, join;
    uint64_t join_since; /* when the join under way began; 0: none */
};

node_gossip_watch *node_gossip_watch_new(uint64_t after_us)
{
    node_gossip_watch *w = calloc(1, sizeof *w);
    if (!w) {
        shoal_error_set(SHOAL_ERR_NOMEM, "gossip watch");
        return NULL;
    }
    w->after_us = after_us ? after_us : 1;
    return w;
}

void node_gossip_watch_delete(node_gossip_watch *w) { free(w); }

static void source_line(source *s, uint64_t now)
{
    char a[SHOAL_ADDR_STRLEN];
    LOG_WARN("cluster", "undecryptable_packets",
             "from=%s dropped=%" PRIu64 " period_s=%" PRIu64 " hint=\"gossip packets from this address do not open "
             "with this node's cluster key: it runs with another --cluster-key, or it is not a Shoal node\"",
             shoal_addr_format(&s->addr, a), s->pending, s->last_line ? (now - s->last_line) / 1000000u : 0);
    s->last_line = now;
    s->pending = 0;
}

void node_gossip_watch_unopened(node_gossip_watch *w, const shoal_addr *from, uint64_t now)
{
    source *s = NULL, *oldest = &w->sources[0];
    for (int i = 0; i < NODE_GOSSIP_WATCH_SOURCES && !s; i++) {
        source *e = &w->sources[i];
        if (e->used && shoal_addr_eq(&e->addr, from))
            s = e;
        else if (!e->used || (oldest->used && e->last_seen < oldest->last_seen))
            oldest = e;
    }
    bool fresh = !s;
    if (fresh) {
        s = oldest;
        *s = (source){.used = true, .addr = *from};
    }
    s->pending++;
    s->last_seen = now;
    if (fresh || now - s->last_line >= NODE_GOSSIP_WATCH_LINE_US)
        source_line(s, now);
}

/* True when a warning whose condition holds is due now (the first line at once, then after 1, 2,
 * 4, ... minutes, at most an hour apart). */
static bool repeat_due(repeat *r, uint64_t now)
{
    if (r->gap && now < r->next)
        return false;
    r->gap = !r->gap ? REPEAT_MIN_US : r->gap * 2 < REPEAT_MAX_US ? r->gap * 2 : REPEAT_MAX_US;
    r->next = now + r->gap;
    return true;
}

/* Appends the addresses of sources heard since `since` to out. */
static void sources_since(const node_gossip_watch *w, uint64_t since, char *out, size_t len)
{
    size_t used = 0;
    int named = 0;
    out[0] = '\0';
    for (int i = 0; i < NODE_GOSSIP_WATCH_SOURCES && named < SOURCES_NAMED && used < len; i++) {
        const source *s = &w->sources[i];
        if (!s->used || s->last_seen < since)
            continue;
        char a[SHOAL_ADDR_STRLEN];
        used += (size_t)snprintf(out + used, len - used, "%s%s", named ? "," : "", shoal_addr_format(&s->addr, a));
        named++;
    }
    if (!out[0])
        snprintf(out, len, "-");
}

void node_gossip_watch_tick(node_gossip_watch *w, const gossip_counters *gc, bool joining, uint64_t now)
{
    for (int i = 0; i < NODE_GOSSIP_WATCH_SOURCES; i++) {
        source *s = &w->sources[i];
        if (s->used && s->pending && now - s->last_line >= NODE_GOSSIP_WATCH_LINE_US)
            source_line(s, now);
        else if (s->used && !s->pending && now - s->last_seen >= 2 * NODE_GOSSIP_WATCH_LINE_US)
            s->used = false;
    }

    /* Windows without traffic change nothing: a node the others have declared dead hears from them
     * only now and then (a push-pull to the dead each period). */
    uint64_t opened = gc->packets_in - gc->seal_failures;
    if (!w->win_start) {
        w->win_start = now ? now : 1;
        w->win_opened = opened;
        w->win_failed = gc->seal_failures;
    } else if (now - w->win_start >= w->after_us) {
        uint64_t failed = gc->seal_failures - w->win_failed;
        if (opened != w->win_opened) {
            w->unheard = (repeat){0};
        } else if (failed > 0 && repeat_due(&w->unheard, now)) {
            char from[SOURCES_NAMED * SHOAL_ADDR_STRLEN];
            sources_since(w, w->win_start, from, sizeof from);
            LOG_WARN("cluster", "no_packet_opens",
                     "packets=%" PRIu64 " from=%s period_s=%" PRIu64 " hint=\"none of the gossip packets this node "
                     "received opened with its cluster key: this node or those senders run with another "
                     "--cluster-key\"", failed, from, (now - w->win_start) / 1000000u);
        }
        w->win_start = now;
        w->win_opened = opened;
        w->win_failed = gc->seal_failures;
    }

    if (!joining) {
        w->join_since = 0;
        w->join = (repeat){0};
        return;
    }
    if (!w->join_since)
        w->join_since = now ? now : 1;
    if (now - w->join_since >= w->after_us && gc->join_attempts >= 2 && repeat_due(&w->join, now))
        LOG_WARN("cluster", "join_unanswered",
                 "attempts=%" PRIu64 " waited_s=%" PRIu64 " hint=\"no member answered this node's join: they are "
                 "down or unreachable on the gossip port (UDP), or run with another --cluster-key (each of them "
                 "then logs this node's address as event=undecryptable_packets)\"",
                 gc->join_attempts, (now - w->join_since) / 1000000u);
}
