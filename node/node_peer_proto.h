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
 *   mv    uint      GET, PUT, PING, PONG,   sender's membership version
 *                   LIST, HEAD
 *   blk   bin 16    GET, PUT                block id
 *   b     str       GET, PUT*               bucket
 *   k     str       GET, PUT*               object key
 *   e     str       GET, PUT*               object ETag
 *   i     uint      GET, PUT*               block index within the object
 *   off   uint      GET, PUT*               byte offset of the block within the object
 *   len   uint      GET, PUT*               block length asked (GET) / carried (PUT)
 *   fl    uint      GET, PUT (optional)     NODE_PEER_F_* flags (absent on a PUT: 0)
 *   st    uint      replies                 node_peer_status
 *   sz    uint      GET reply, PUT          total object size (optional)
 *   pl    uint      GET reply, PUT,         payload frame length (must equal the frame's size)
 *                   LIST reply, HEAD reply
 *   ck    uint      GET reply, PUT          checksum of the payload as the block store keeps it
 *   lb    str       LIST                    bucket (1..255)
 *   lp    str       LIST                    prefix (0..1024; "" = the whole bucket)
 *   ld    str       LIST                    delimiter (0..32; "" = a flat listing)
 *   lt    str       LIST                    continuation token (0..1024; "" = the first page)
 *   ls    str       LIST                    start-after key (0..1024; "" = none)
 *   lm    uint      LIST                    max keys (0..1000; 0 = S3's default)
 *   ma    uint      LIST, HEAD (optional)   max age in ms: answer from what is at most this old
 *   ag    uint      LIST, HEAD reply (opt.) age in ms of what the answer carries
 *   hb    str       HEAD                    bucket (1..255)
 *   hk    str       HEAD                    object key (1..1024)
 *   w     bin 16    PING (optional)         a work item: is the server working on it?
 *   wk    uint      PONG (optional)         node_peer_work: what it does about the PING's "w"
 *   src   uint      GET reply (optional)    node_peer_source: where the owner found the block
 *
 * PUT*: a hand-off PUT (flag NODE_PEER_F_HANDOFF) carries no coordinates (b, k, e, i, off, len):
 * a draining node's store keeps only block ids, so it sends the id, the bytes and their checksum.
 *
 * An OK LIST reply's payload is one listing page in the length-prefixed encoding below
 * (node_peer_list_encode / node_peer_list_decode), not msgpack: it may hold a thousand keys of a
 * kilobyte each, far past the header's 4 KiB, and a flat layout is simple to bound strictly. An OK
 * HEAD reply's payload is the object's metadata in the same kind of layout (node_peer_head_encode).
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
#define NODE_PEER_MAX_DELIMITER 32      /* a listing's delimiter ("/" in practice) */
#define NODE_PEER_MAX_LIST_KEYS 1000    /* S3's largest listing page */
#define NODE_PEER_MAX_LIST_ENTRIES 100000 /* entries of one page payload (S3 sends at most 1000) */
#define NODE_PEER_MAX_META 8            /* x-amz-meta entries of a HEAD reply (s3_object_info's) */
#define NODE_PEER_MAX_META_NAME 39      /* bytes of a metadata name, without "x-amz-meta-" */
#define NODE_PEER_MAX_META_VALUE 87     /* bytes of a metadata value */
#define NODE_PEER_MAX_CONTENT_TYPE 127  /* bytes of a Content-Type */

typedef enum node_peer_type {
    NODE_PEER_GET = 1,       /* request: send me this block */
    NODE_PEER_GET_REPLY = 2, /* reply to GET; payload = the block when status is OK */
    NODE_PEER_PUT = 3,       /* request: keep this block (payload), you own it */
    NODE_PEER_PUT_REPLY = 4, /* reply to PUT */
    NODE_PEER_PING = 5,      /* request: are you there, what membership version do you have */
    NODE_PEER_PONG = 6,      /* reply to PING */
    NODE_PEER_LIST = 7,      /* request: one page of a directory listing you own */
    NODE_PEER_LIST_REPLY = 8, /* reply to LIST; payload = the page (node_peer_list_encode) when OK */
    NODE_PEER_HEAD = 9,       /* request: an object's metadata, from you as its metadata owner */
    NODE_PEER_HEAD_REPLY = 10, /* reply to HEAD; payload = the metadata (node_peer_head_encode) when OK */
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
#define NODE_PEER_F_ALL (NODE_PEER_F_OWNER_FETCH | NODE_PEER_F_NO_FORWARD) /* what a reader sends */
/* Keep the block, do not send it: the reply is OK without a payload, its "src" saying where the
 * server found it (preload). Without OWNER_FETCH the server only says whether it holds it. */
#define NODE_PEER_F_WARM_ONLY 0x4u
#define NODE_PEER_F_GET_KNOWN (NODE_PEER_F_ALL | NODE_PEER_F_WARM_ONLY)
/* PUT flags. */
#define NODE_PEER_F_HANDOFF 0x8u /* a block handed off by a draining node: id, bytes, checksum only */
#define NODE_PEER_F_PUT_KNOWN NODE_PEER_F_HANDOFF

/* Where a server found the block it answers a WARM_ONLY GET for (GET_REPLY "src"). */
typedef enum node_peer_source {
    NODE_PEER_SRC_STORE = 0, /* its store already held it */
    NODE_PEER_SRC_PEER = 1,  /* another member handed it over (hand-off on a miss) */
    NODE_PEER_SRC_S3 = 2,    /* it fetched the block from S3 */
} node_peer_source;

/* What a server answers (PONG "wk") about the work item a PING names ("w"). */
typedef enum node_peer_work {
    NODE_PEER_IDLE = 0,    /* nothing for it is queued or in progress here */
    NODE_PEER_WORKING = 1, /* a request for it is queued or being served, or it is being fetched */
} node_peer_work;

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

/* What a LIST asks: one ListObjectsV2 page. Empty strings mean "none"; max_keys 0 means S3's
 * default. Strings borrowed as in node_peer_block. */
typedef struct node_peer_list_req {
    shoal_cursor bucket;      /* 1..255 bytes */
    shoal_cursor prefix;      /* 0..1024 */
    shoal_cursor delimiter;   /* 0..32 */
    shoal_cursor token;       /* continuation token, 0..1024 */
    shoal_cursor start_after; /* 0..1024 */
    uint64_t max_keys;        /* 0..1000 */
} node_peer_list_req;

/* What a HEAD asks: the metadata of one object. Strings borrowed as in node_peer_block. */
typedef struct node_peer_head_req {
    shoal_cursor bucket; /* 1..255 bytes */
    shoal_cursor key;    /* 1..1024 */
} node_peer_head_req;

/* One header frame, decoded. Which fields mean something depends on `type` (see the table). */
typedef struct node_peer_msg {
    node_peer_type type;
    uint64_t request_id;
    uint64_t membership_version; /* GET, PUT, PING, PONG */
    uint32_t flags;              /* GET, PUT */
    node_peer_block block;       /* GET, PUT (a hand-off PUT: only block.id) */
    node_peer_status status;     /* GET_REPLY, PUT_REPLY, PONG */
    bool has_object_size;        /* GET_REPLY, PUT */
    uint64_t object_size;
    uint64_t payload_len;        /* GET_REPLY, PUT: size of the payload frame */
    uint64_t checksum;           /* GET_REPLY, PUT */
    node_peer_list_req list;     /* LIST */
    node_peer_head_req head;     /* HEAD */
    bool has_max_age;            /* LIST, HEAD: "ma" present (absent: the server's own TTL) */
    uint64_t max_age_ms;
    bool has_age;                /* LIST_REPLY, HEAD_REPLY: "ag" present (absent: 0) */
    uint64_t age_ms;
    bool has_work_id;            /* PING: "w" present */
    uint8_t work_id[NODE_PEER_BLOCK_ID_LEN];
    bool has_work;               /* PONG: "wk" present (it answers a PING with "w") */
    node_peer_work work;
    bool has_source;             /* GET_REPLY: "src" present */
    node_peer_source source;
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

/* ---- listing pages (the payload of an OK LIST_REPLY) ----------------------------------------
 *
 * Little-endian, length-prefixed, nothing optional:
 *   u8 flags (0x1: truncated; other bits refused)   u16 token length, token bytes (0..1024)
 *   u32 entry count (0..NODE_PEER_MAX_LIST_ENTRIES), then each entry:
 *     u8 kind (0 object, 1 common prefix)   u16 key length (1..1024), key bytes
 *     objects only: u64 size, i64 mtime (Unix seconds), u8 ETag length (0..255), ETag bytes
 * A prefix holding a NUL byte is refused (prefixes are C strings to the reader); an object key
 * may hold one (S3 allows it; the reader sees its length). Trailing bytes are refused. */

typedef struct node_peer_list_entry {
    bool is_prefix;
    shoal_cursor key;  /* the key, or the common prefix */
    shoal_cursor etag; /* objects: as S3 sent it, quotes included */
    uint64_t size;     /* objects */
    int64_t mtime;     /* objects: Unix seconds, 0 when unknown */
} node_peer_list_entry;

/* A decoded page: `entries` is owned (node_peer_list_page_destroy); the strings borrow the
 * payload. For an encode, everything is the caller's. */
typedef struct node_peer_list_page {
    node_peer_list_entry *entries;
    size_t n_entries;
    bool truncated;
    shoal_cursor next_token; /* empty when none */
} node_peer_list_page;

/* Appends the payload encoding of `p` to out. -1 with SHOAL_ERR_INVAL when a field is over its
 * limit (the message names it), SHOAL_ERR_NOMEM. */
int node_peer_list_encode(const node_peer_list_page *p, shoal_buf *out);

/* Decodes a page payload into *out (entries allocated, strings borrowing `payload`). Refuses
 * anything malformed (-1, SHOAL_ERR_NODE_PEER, message naming the byte offset and problem):
 * short fields, lengths past the end, counts the remaining bytes cannot hold, unknown kinds or
 * flags, empty keys, NUL in a prefix, trailing bytes. Never allocates more than
 * payload.len / 3 entries. *out is empty after a failure. */
int node_peer_list_decode(shoal_cursor payload, node_peer_list_page *out);

/* Frees a decoded page's entries and empties it. Accepts NULL. */
void node_peer_list_page_destroy(node_peer_list_page *p);

/* ---- object metadata (the payload of an OK HEAD_REPLY) ----------------------------------------
 *
 * Little-endian, length-prefixed, nothing optional:
 *   u64 size   i64 last-modified (Unix seconds, 0 unknown)   u8 ETag length (0..255), ETag bytes
 *   u8 content-type length (0..127), bytes   u32 metadata entries dropped (past what is kept)
 *   u8 metadata count (0..8), then each: u8 name length (1..39), name, u8 value length (0..87), value
 * No string may hold a NUL byte (they become C strings). Trailing bytes are refused. */

typedef struct node_peer_meta_kv {
    shoal_cursor name;  /* without the "x-amz-meta-" prefix */
    shoal_cursor value;
} node_peer_meta_kv;

/* An object's metadata: the fields of s3_object_info, strings borrowed (from the payload after a
 * decode, from the caller's memory for an encode). */
typedef struct node_peer_object_info {
    uint64_t size;
    int64_t mtime;
    shoal_cursor etag;
    shoal_cursor content_type;
    uint32_t meta_dropped;
    size_t n_meta;
    node_peer_meta_kv meta[NODE_PEER_MAX_META];
} node_peer_object_info;

/* Appends the payload encoding of `info` to out. -1 with SHOAL_ERR_INVAL when a field is over its
 * limit or holds a NUL (the message names it), SHOAL_ERR_NOMEM. */
int node_peer_head_encode(const node_peer_object_info *info, shoal_buf *out);

/* Decodes a metadata payload into *out (strings borrowing `payload`; nothing allocated). Refuses
 * anything malformed with -1 and SHOAL_ERR_NODE_PEER naming the byte offset and problem. */
int node_peer_head_decode(shoal_cursor payload, node_peer_object_info *out);

/* True for GET, PUT, PING, LIST, HEAD (what a server receives). */
bool node_peer_type_is_request(node_peer_type t);
/* The reply type of a request type (GET -> GET_REPLY, ...); 0 for a reply type. */
node_peer_type node_peer_reply_type(node_peer_type request);
/* Static names for logs ("GET", "BUSY"); "?" for an unknown value. Never NULL. */
const char *node_peer_type_name(node_peer_type t);
const char *node_peer_status_name(node_peer_status s);

#endif
