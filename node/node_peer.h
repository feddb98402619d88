/*
 * node_peer: the peer protocol over ZeroMQ with CURVE — server and client in one handle.
 *
 * A node_peer owns a ZeroMQ context, one I/O thread that alone touches its sockets, and a ZAP
 * handler thread. As a server it binds a ROUTER socket (CURVE server with this node's key pair)
 * and hands each request to the daemon's handlers; the daemon answers it later, from any thread,
 * with node_peer_reply(). As a client it keeps one DEALER socket per peer (node_peer_connect) and
 * many requests in flight on each, matched to replies by request id, each with its own timeout.
 *
 * Security: the ZAP handler is bound before the ROUTER socket is, and admits only the CURVE public
 * keys of the allow-list (node_peer_allow_set, fed from gossip). Every request is checked again
 * against the list when it arrives, so removing a key also silences connections made before.
 *
 * Memory: payloads travel as separate frames and are handed to libzmq without copies when the
 * caller gives up ownership (node_peer_payload.free_fn). Queues are bounded: a client has at most
 * `queue_per_peer` requests in flight per peer (submitting more fails at once with
 * SHOAL_ERR_NOSPACE); a server has at most `max_incoming` requests unanswered and answers the rest
 * BUSY on the spot.
 *
 * Wire format and field meanings: node_peer_proto.h and docs/peer-protocol.md.
 */
#ifndef NODE_PEER_H
#define NODE_PEER_H

#include "node_peer_proto.h"
#include "shoal_error.h"

#include <stddef.h>
#include <stdint.h>

#define NODE_PEER_KEY_LEN 32
#define NODE_PEER_KEY_FILE "peer.key"

typedef struct node_peer node_peer;
typedef struct node_peer_incoming node_peer_incoming; /* a request received, until it is answered */
typedef struct node_peer_response node_peer_response; /* the outcome of a request sent */

/* Bytes to send as a payload frame. With free_fn set the transport takes ownership and calls
 * free_fn(data, hint) once libzmq no longer needs the bytes (possibly on another thread, possibly
 * after the request completed); the bytes must not change until then. With free_fn NULL the
 * transport copies them before the call returns. */
typedef struct node_peer_payload {
    const void *data;
    size_t len;
    void (*free_fn)(void *data, void *hint);
    void *hint;
} node_peer_payload;

/* What the daemon does with requests. Each handler runs on the I/O thread, must not block, and
 * takes ownership of `in`: it answers it exactly once, now or later and from any thread, with
 * node_peer_reply() (or drops it with node_peer_incoming_discard()). A NULL handler answers ERROR.
 * PING is answered by the transport itself; when it names a work item ("w"), on_work says what
 * goes in the PONG's "wk" (NULL: IDLE). */
typedef struct node_peer_handlers {
    void (*on_get_block)(void *ud, node_peer_incoming *in);
    void (*on_put_block)(void *ud, node_peer_incoming *in);
    void (*on_list)(void *ud, node_peer_incoming *in); /* LIST: answer with the page as payload */
    void (*on_head)(void *ud, node_peer_incoming *in); /* HEAD: answer with the metadata as payload */
    /* Whether the daemon works on item `id` (16 bytes): called on the I/O thread for each PING
     * that names one, so it must return at once (at most a short mutex, never I/O). */
    node_peer_work (*on_work)(void *ud, const uint8_t *id);
} node_peer_handlers;

typedef struct node_peer_config {
    const char *bind;                          /* "ADDR:PORT" to serve on (PORT 0: any free port);
                                                  NULL for a client-only node (--no-serve) */
    uint8_t public_key[NODE_PEER_KEY_LEN];     /* this node's CURVE key pair (copied) */
    uint8_t secret_key[NODE_PEER_KEY_LEN];
    const node_peer_handlers *handlers;        /* borrowed for the handle's life; NULL = none */
    void *handlers_ud;
    int io_threads;                            /* ZeroMQ I/O threads; 0 means 1 */
    unsigned queue_per_peer;                   /* client requests in flight per peer; 0 means 64 */
    unsigned max_incoming;                     /* server requests unanswered; 0 means 1024 */
} node_peer_config;

/* Counters since node_peer_new (a snapshot; each value is read atomically). */
typedef struct node_peer_stats {
    uint64_t requests_in;    /* well-formed requests received (server) */
    uint64_t requests_out;   /* requests sent (client) */
    uint64_t bytes_in;       /* payload bytes received: GET replies (client), PUT blocks (server) */
    uint64_t bytes_out;      /* payload bytes sent: GET replies (server), PUT blocks (client) */
    uint64_t malformed;      /* frames dropped because they did not decode (either side) */
    uint64_t zap_denied;     /* connections refused by the ZAP handler */
    uint64_t revoked;        /* requests dropped because their key left the allow-list */
    uint64_t busy;           /* requests answered BUSY because max_incoming were unanswered */
    uint64_t timeouts;       /* requests that got no reply in time (client) */
    uint64_t queue_full;     /* submissions refused with SHOAL_ERR_NOSPACE (client) */
} node_peer_stats;

/* Loads this node's CURVE key pair from <dir>/peer.key, or creates the directory (mode 0700) and a
 * new key pair in a file of mode 0600 when there is none. A file readable by group or others, a
 * malformed file, or a public key that does not match the secret key is an error (-1 with
 * SHOAL_ERR_NODE_CONFIG naming the file); I/O failures are SHOAL_ERR_IO. The secret never
 * appears in a message. */
int node_peer_keypair_load_or_create(const char *dir, uint8_t pub[NODE_PEER_KEY_LEN],
                                     uint8_t sec[NODE_PEER_KEY_LEN]);

/* Starts the ZAP handler, binds the server socket (unless cfg->bind is NULL) only once the handler
 * runs, and starts the I/O thread. The allow-list starts empty: nobody is admitted until
 * node_peer_allow_set. NULL with SHOAL_ERR_INVAL (bad address), SHOAL_ERR_IO (bind failed, the
 * message has the address) or SHOAL_ERR_NODE_PEER (ZeroMQ or the ZAP handler failed). */
node_peer *node_peer_new(const node_peer_config *cfg);

/* Stops the I/O thread, which completes every pending request with SHOAL_ERR_CLOSED before this
 * returns (the callbacks run on that thread, as always), closes the sockets and wipes the secret key. Requests still held by the
 * daemon stay valid; answering them afterwards fails with SHOAL_ERR_CLOSED and frees them.
 * Accepts NULL. */
void node_peer_delete(node_peer *p);

/* "ADDR:PORT" actually bound (PORT resolved when 0 was asked); "" for a client-only node. */
const char *node_peer_endpoint(const node_peer *p);

/* Replaces the allow-list with `n` CURVE public keys (copied). Thread-safe; takes effect for the
 * next handshake and the next request of every connection. 0, or -1 with SHOAL_ERR_NOMEM. */
int node_peer_allow_set(node_peer *p, const uint8_t (*keys)[NODE_PEER_KEY_LEN], size_t n);

/* The membership version this node announces in PONG replies. Thread-safe. */
void node_peer_set_membership_version(node_peer *p, uint64_t version);

/* Opens a client link to the peer serving at "ADDR:PORT" whose CURVE public key is server_key.
 * Connection happens in the background (and again after a loss). Returns a link id >= 0, or -1
 * with SHOAL_ERR_INVAL for a bad address, SHOAL_ERR_NOSPACE when 4096 links are open, or
 * SHOAL_ERR_CLOSED during shutdown. Thread-safe. */
int node_peer_connect(node_peer *p, const char *addr, const uint8_t server_key[NODE_PEER_KEY_LEN]);

/* Closes a link; its pending requests complete with SHOAL_ERR_CLOSED. Thread-safe. -1 with
 * SHOAL_ERR_NOT_FOUND for an unknown link. */
int node_peer_disconnect(node_peer *p, int link);

/* Called once per submitted request, on the I/O thread (or in node_peer_delete), with a response
 * the callee owns (node_peer_response_delete). Must not block. */
typedef void (*node_peer_done_fn)(void *ud, node_peer_response *r);

/* Sends request `req` (GET, PUT, PING, LIST or HEAD; its request_id and payload_len are filled in by the
 * transport, its strings are encoded before the call returns) with `payload` over `link`. `done`
 * runs exactly once: with the reply, or with SHOAL_ERR_TIMEOUT after timeout_ms, or with
 * SHOAL_ERR_CLOSED. Thread-safe. Fails at once (-1, `done` not called, the payload freed) with
 * SHOAL_ERR_NOSPACE when the link already has queue_per_peer requests in flight,
 * SHOAL_ERR_NOT_FOUND for an unknown link, SHOAL_ERR_INVAL for a bad request, or SHOAL_ERR_CLOSED. */
int node_peer_submit(node_peer *p, int link, const node_peer_msg *req, node_peer_payload payload,
                     uint32_t timeout_ms, node_peer_done_fn done, void *ud);

/* node_peer_submit, then waits for the outcome. Returns the response (never NULL once submitted;
 * check node_peer_response_result), or NULL when the submission failed (shoal_error says why).
 * Must not be called from a handler or a done callback (SHOAL_ERR_INVAL). */
node_peer_response *node_peer_call(node_peer *p, int link, const node_peer_msg *req,
                                   node_peer_payload payload, uint32_t timeout_ms);

/* SHOAL_OK when a well-formed reply arrived (its status may still be NOT_FOUND, BUSY, ...),
 * SHOAL_ERR_TIMEOUT, SHOAL_ERR_CLOSED, or SHOAL_ERR_NODE_PEER (the reply was malformed or could
 * not be sent). */
shoal_err node_peer_response_result(const node_peer_response *r);
/* The decoded reply header; NULL unless the result is SHOAL_OK. Valid until the response is deleted. */
const node_peer_msg *node_peer_response_msg(const node_peer_response *r);
/* The payload frame, read in place (no copy); *len = 0 and a non-NULL pointer when empty. Valid
 * until the response is deleted. */
const uint8_t *node_peer_response_payload(const node_peer_response *r, size_t *len);
void node_peer_response_delete(node_peer_response *r);

/* The decoded request (strings borrow the received frame). Valid until the request is answered. */
const node_peer_msg *node_peer_incoming_msg(const node_peer_incoming *in);
/* The request's payload frame, read in place (a PUT's block). Valid until the request is answered. */
const uint8_t *node_peer_incoming_payload(const node_peer_incoming *in, size_t *len);
/* The CURVE public key the requester authenticated with (32 bytes). */
const uint8_t *node_peer_incoming_key(const node_peer_incoming *in);

/* Answers `in` and frees it, whatever happens. `reply` gives status, object size and checksum
 * (type, request id and payload length are filled in); `payload` is the block for an OK GET reply,
 * the encoded page for an OK LIST reply, the encoded metadata for an OK HEAD reply, and empty
 * otherwise. Thread-safe. -1 with SHOAL_ERR_INVAL (bad reply), SHOAL_ERR_CLOSED (the
 * node_peer was deleted) or SHOAL_ERR_NOMEM; the payload is freed in every case. */
int node_peer_reply(node_peer_incoming *in, const node_peer_msg *reply, node_peer_payload payload);

/* Frees `in` without answering (the requester will time out). Accepts NULL. */
void node_peer_incoming_discard(node_peer_incoming *in);

void node_peer_stats_get(const node_peer *p, node_peer_stats *out);

#endif
