/*
 * node_peer_proto: the peer protocol's messages as bytes, and nothing else (no sockets, no clock).
 *
 * Every peer message is two ZeroMQ frames: a header frame, a msgpack map of small fields, and a
 * payload frame of raw bytes (empty for messages that carry none). The payload never passes
 * through msgpack, so a 4 MiB block is never copied to be framed or unframed.
 *
 * Header map keys (short strings; unknown keys are ignored so a minor addition stays compatible,
 * a change of meaning bumps "v"):
 *
 *   key   type      in                      meaning
 *   v     uint      all                     protocol version, NODE_PEER_VERSION
 *   t     uint      all                     node_peer_type
 *   id    uint      all                     request id, echoed by the reply
 *   mv    uint      GET, PUT, PING, PONG    sender's membership version
 *   blk   bin 16    GET, PUT                block id
 *   b     str       GET, PUT                bucket
 *   k     str       GET, PUT                object key
 *   e     str       GET, PUT                object ETag
 *   i     uint      GET, PUT                block index within the object
 *   off   uint      GET, PUT                byte offset of the block within the object
 *   len   uint      GET, PUT                block length asked (GET) / carried (PUT)
 *   fl    uint      GET                     NODE_PEER_F_* flags
 *   st    uint      replies                 node_peer_status
 *   sz    uint      GET reply, PUT          total object size (optional)
 *   pl    uint      GET reply, PUT          payload frame length (must equal the frame's size)
 *   ck    uint      GET reply, PUT          checksum of the payload as the block store keeps it
 */
#ifndef NODE_PEER_PROTO_H
#define NODE_PEER_PROTO_H

#include "shoal_buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NODE_PEER_VERSION 1
#define NODE_PEER_BLOCK_ID_LEN 16
#define NODE_PEER_MAX_BUCKET 255        /* S3 allows 63; room for other stores */
#define NODE_PEER_MAX_KEY 1024          /* S3's limit on object keys */
#define NODE_PEER_MAX_ETAG 256
#define NODE_PEER_MAX_HEADER 4096       /* a header frame larger than this is malformed */
#define NODE_PEER_MAX_PAYLOAD (256u << 20) /* no block is larger; a larger length is absurd */

typedef enum node_peer_type {
    NODE_PEER_GET = 1,       /* request: send me this block */
    NODE_PEER_GET_REPLY = 2, /* reply to GET; payload = the block when status is OK */
    NODE_PEER_PUT = 3,       /* request: keep this block (payload), you own it */
    NODE_PEER_PUT_REPLY = 4, /* reply to PUT */
    NODE_PEER_PING = 5,      /* request: are you there, what membership version do you have */
    NODE_PEER_PONG = 6,      /* reply to PING */
} node_peer_type;

typedef enum node_peer_status {
    NODE_PEER_OK = 0,
    NODE_PEER_NOT_FOUND = 1, /* the object or block does not exist (S3 said so) */
    NODE_PEER_CHANGED = 2,   /* the object's ETag is no longer the one asked for */
    NODE_PEER_BUSY = 3,      /* the server's queue is full: try another owner */
    NODE_PEER_ERROR = 4,     /* anything else: try another owner, then S3 */
} node_peer_status;

/* GET flags. */
#define NODE_PEER_F_OWNER_FETCH 0x1u /* the server may fetch from S3 itself if it does not hold it */
#define NODE_PEER_F_NO_FORWARD 0x2u  /* the server must not pass the request on to another node */
#define NODE_PEER_F_ALL (NODE_PEER_F_OWNER_FETCH | NODE_PEER_F_NO_FORWARD)

/* Which block: what a GET asks for and what a PUT carries. The strings are borrowed: after a
 * decode they point into the header bytes, for an encode into the caller's memory. */
typedef struct node_peer_block {
    uint8_t id[NODE_PEER_BLOCK_ID_LEN];
    shoal_cursor bucket;
    shoal_cursor key;
    shoal_cursor etag;
    uint64_t index;
    uint64_t offset;
    uint64_t length;
} node_peer_block;

/* One header frame, decoded. Which fields mean something depends on `type` (see the table). */
typedef struct node_peer_msg {
    node_peer_type type;
    uint64_t request_id;
    uint64_t membership_version; /* GET, PUT, PING, PONG */
    uint32_t flags;              /* GET */
    node_peer_block block;       /* GET, PUT */
    node_peer_status status;     /* GET_REPLY, PUT_REPLY, PONG */
    bool has_object_size;        /* GET_REPLY, PUT */
    uint64_t object_size;
    uint64_t payload_len;        /* GET_REPLY, PUT: size of the payload frame */
    uint64_t checksum;           /* GET_REPLY, PUT */
} node_peer_msg;

/* Appends the header frame of `m` to `out` (the caller owns `out`). Checks what a decoder would
 * reject (type, status, flags, string and payload lengths) so nothing malformed leaves this node.
 * -1 with SHOAL_ERR_INVAL naming the field, or SHOAL_ERR_NOMEM. */
int node_peer_msg_encode(const node_peer_msg *m, shoal_buf *out);

/* Decodes a header frame that arrived with a payload frame of `payload_size` bytes. The strings
 * in out->block borrow `header` (keep it alive while they are used). Rejects anything malformed
 * (not one msgpack map, wrong types, missing or duplicate fields, unknown version or type, strings
 * over their limits, a payload length that is absurd or differs from payload_size, trailing
 * bytes) with -1 and SHOAL_ERR_NODE_PEER and a message naming the problem; never reads past
 * `header`, never allocates more than a small multiple of header.len. */
int node_peer_msg_decode(shoal_cursor header, size_t payload_size, node_peer_msg *out);

/* True for GET, PUT, PING (what a server receives). */
bool node_peer_type_is_request(node_peer_type t);
/* The reply type of a request type (GET -> GET_REPLY, ...); 0 for a reply type. */
node_peer_type node_peer_reply_type(node_peer_type request);
/* Static names for logs ("GET", "BUSY"); "?" for an unknown value. Never NULL. */
const char *node_peer_type_name(node_peer_type t);
const char *node_peer_status_name(node_peer_status s);

#endif
