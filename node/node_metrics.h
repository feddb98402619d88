/*
 * node_metrics: the Prometheus endpoint. An HTTP listener (libmicrohttpd, its own thread) that
 * answers GET /metrics with node_stats rendered in the text exposition format 0.0.4; every other
 * path is 404, every other method 405.
 */
#ifndef NODE_METRICS_H
#define NODE_METRICS_H

#include "node_stats.h"
#include "shoal_env.h"

#include <stdint.h>

typedef struct node_metrics node_metrics;

/* Called before each rendering so the owner can refresh gauges (cache use, membership counts)
 * into stats. Runs on the HTTP thread. */
typedef void (*node_metrics_refresh_fn)(void *ctx, node_stats *stats);

/* Listens on `addr` (port 0 picks a free port, see node_metrics_port) and serves `stats`, which
 * must outlive the listener. refresh may be NULL. NULL with a shoal_error (naming the address)
 * when the address cannot be bound or the HTTP server does not start. */
node_metrics *node_metrics_new(const shoal_addr *addr, node_stats *stats, node_metrics_refresh_fn refresh,
                               void *ctx);

/* The TCP port actually listened on. */
uint16_t node_metrics_port(const node_metrics *m);

/* Stops the listener (waits for a request in progress) and frees it. Accepts NULL. */
void node_metrics_delete(node_metrics *m);

#endif
