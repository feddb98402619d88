/*
 * node_gossip_watch: makes a wrong cluster key visible in the logs, on both sides.
 *
 * A gossip packet that does not open carries nothing, not even who sent it in words a member could
 * answer, so neither side can tell the other. Each says what it sees instead:
 *
 *  - a member logs the source address of packets that do not open (event=undecryptable_packets,
 *    warn): the first one from a source at once, then at most one line per source a minute, giving
 *    the number dropped since that source's previous line;
 *  - the node with the wrong key hears nothing that opens: its join gets no answer
 *    (event=join_unanswered), or packets reach it and none opens (event=no_packet_opens). Either,
 *    lasting `after_us`, is logged at warn, then again 1, 2, 4, ... minutes later (at most an hour
 *    apart) while it lasts.
 *
 * Time comes in as arguments (monotonic microseconds), so tests drive it with a virtual clock; lines
 * go through shoal_log. Not thread-safe: the gossip thread owns it.
 */
#ifndef NODE_GOSSIP_WATCH_H
#define NODE_GOSSIP_WATCH_H

#include "gossip.h"
#include "shoal_env.h"

#include <stdbool.h>
#include <stdint.h>

#define NODE_GOSSIP_WATCH_LINE_US (60ull * 1000000u) /* one line per source at most this often */
#define NODE_GOSSIP_WATCH_SOURCES 32                   /* sources followed at once (least recent replaced) */

typedef struct node_gossip_watch node_gossip_watch;

/* `after_us`: how long this node must hear nothing that opens before it warns. NULL with
 * SHOAL_ERR_NOMEM. */
node_gossip_watch *node_gossip_watch_new(uint64_t after_us);
void node_gossip_watch_delete(node_gossip_watch *w);

/* A packet from `from` did not open at `now`. */
void node_gossip_watch_unopened(node_gossip_watch *w, const shoal_addr *from, uint64_t now);

/* Called on every turn of the gossip loop with gossip's counters and whether a join is waiting for
 * its first answer: logs the per-source counts that are due and this node's own warnings. */
void node_gossip_watch_tick(node_gossip_watch *w, const gossip_counters *gc, bool joining, uint64_t now);

#endif
