/*
 * node_daemon: shoald as one object. It builds every part from the parsed configuration (block
 * store, S3 client, peer transport, membership, read path, metrics, control socket), answers the
 * control socket's commands (status, stats, get, preload, leave), and takes everything down again
 * in the order that lets in-flight work finish: leave the cluster, stop the servers, stop the
 * transports, close the store.
 */
#ifndef NODE_DAEMON_H
#define NODE_DAEMON_H

#include "node_config.h"

typedef struct node_daemon node_daemon;

/* Starts the daemon described by cfg (borrowed: it must outlive the daemon). SIGTERM, SIGINT and
 * SIGHUP are blocked in the calling thread first, so every thread the daemon starts inherits the
 * mask and node_daemon_run alone receives them. NULL with a shoal_error naming the part that did
 * not start (the store directory, the key file, an address that cannot be bound, credentials). */
node_daemon *node_daemon_new(const node_config *cfg);

/* Runs until SIGTERM or SIGINT, a `shoal leave`, or a refusal by the cluster (another node with
 * this id, another block size); SIGHUP meanwhile re-reads cfg's --config file and applies the log
 * level and the read path's timeouts (the rest needs a restart, and the log says so). Then leaves the cluster gracefully and lets in-flight work end.
 * Returns 0 after a requested stop, -1 with a shoal_error when the cluster refused this node. */
int node_daemon_run(node_daemon *d);

/* Stops what still runs and frees everything; the block files stay. Accepts NULL. */
void node_daemon_delete(node_daemon *d);

#endif
