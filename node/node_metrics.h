/*
 * node_metrics: the Prometheus endpoint and the health probes. An HTTP listener (libmicrohttpd,
 * its own thread) that answers GET /metrics with node_stats rendered in the text exposition format
 * 0.0.4, GET /healthz with 200 while the daemon runs (liveness), and GET /readyz with 200 when the
 * owner says it is ready and 503 with the reason otherwise (readiness); every other path is 404,
 * every other method 405.
 */
#ifndef NODE_METRICS_H
#define NODE_METRICS_H

#include "node_stats.h"
#include "shoal_env.h"

#include <stdbool.h>
#include <stddef.h>
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

/* Whether the daemon is ready to serve; when not, a one-line reason into why[0..cap). Runs on the
 * HTTP thread and must not block. */
typedef bool (*node_metrics_ready_fn)(void *ctx, char *why, size_t cap);

/* Answers /readyz with `ready` (ctx: its argument); until set, /readyz answers 503. */
void node_metrics_set_ready(node_metrics *m, node_metrics_ready_fn ready, void *ctx);

/* The TCP port actually listened on. */
uint16_t node_metrics_port(const node_metrics *m);

/* Stops the listener (waits for a request in progress) and frees it. Accepts NULL. */
void node_metrics_delete(node_metrics *m);

#endif
