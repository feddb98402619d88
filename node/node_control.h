/*
 * node_control: the control socket between `shoal` and the local shoald, and the JSON it speaks
 * (json-c underneath, read into a small tree of node_json values).
 *
 * The protocol (docs/configuration.md has the full text): a client connects to the Unix stream
 * socket, sends one request line, a JSON object of at most 4 KiB ending in "\n":
 *
 *   {"cmd":"status"} {"cmd":"stats"} {"cmd":"leave"} {"cmd":"forget","node":"ID"}
 *   {"cmd":"list","bucket":"B","prefix":"P"[,"delimiter":"/"][,"max_keys":N][,"token":"T"]}
 *   {"cmd":"get","bucket":"B","key":"K"[,"offset":N][,"length":N][,"etag":"E"][,"fds":true]}
 *   {"cmd":"stat","bucket":"B","key":"K"} {"cmd":"preload","bucket":"B","prefix":"P"}
 *   {"cmd":"drain"}
 *
 * and the daemon answers with one header line, then a body whose form the header names:
 *
 *   {"ok":false,"error":"message","code":"NAME"}        no body (NAME: shoal_error_name of the error)
 *   {"ok":true,"body":"none"}                           no body
 *   {"ok":true,"body":"json"}          then one JSON object on one line
 *   {"ok":true,"body":"bytes","size":N} then exactly N raw bytes (fewer means the read failed); a
 *                                      get's header also names "object_size" and "etag"
 *   {"ok":true,"body":"chunks","size":N} (a get that asked "fds":true) then chunks adding up to N
 *                                      bytes: a 24-byte header (u32 kind, u32 0, u64 offset, u64
 *                                      length, little-endian), kind 1 DATA followed by its bytes,
 *                                      kind 2 FD carrying a file descriptor (SCM_RIGHTS) whose
 *                                      bytes [offset, offset+length) belong here
 *   {"ok":true,"body":"progress"}      then progress lines {"objects_done":..,"objects_total":..,
 *                                      "bytes_done":..,"bytes_total":..,"listed":bool,
 *                                      "blocks_done":..,"blocks_total":..,"cached":..,"fetched":..,
 *                                      "sent":..,"bytes_sent":..,"failed":..}, ending with one that
 *                                      also holds "done":true, or with {"error":"message"}
 *
 * then closes the connection. One request per connection keeps both ends trivial.
 */
#ifndef NODE_CONTROL_H
#define NODE_CONTROL_H

#include "shoal_buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NODE_CONTROL_MAX_REQUEST 4096

/* ---- JSON ----------------------------------------------------------------------------------- */

typedef enum node_json_type {
    NODE_JSON_NULL,
    NODE_JSON_BOOL,
    NODE_JSON_NUMBER,
    NODE_JSON_STRING,
    NODE_JSON_ARRAY,
    NODE_JSON_OBJECT,
} node_json_type;

/* A parsed JSON value: a tree of nodes; members of an object carry their key. */
typedef struct node_json {
    node_json_type type;
    char *key;               /* member name inside an object, else NULL */
    char *str;               /* NODE_JSON_STRING: decoded, NUL-terminated (no NULs inside) */
    double num;              /* NODE_JSON_NUMBER */
    uint64_t u64;            /* NODE_JSON_NUMBER that is a non-negative integer: its exact value */
    bool is_u64;
    bool b;                  /* NODE_JSON_BOOL */
    struct node_json *child; /* first element / member of an array / object */
    struct node_json *next;  /* next sibling */
} node_json;

/* Parses exactly one JSON value from text[0..len) (white space around it allowed), nesting at
 * most 32 deep; strings may not hold \u0000, and integers beyond 64 bits are refused rather than
 * rounded. Returns a tree to free with node_json_delete; NULL with SHOAL_ERR_INVAL and a message
 * giving the byte offset on malformed input, SHOAL_ERR_NOMEM on allocation failure. */
node_json *node_json_parse(const char *text, size_t len);
void node_json_delete(node_json *j);

/* The member `key` of an object (NULL when j is not an object or has no such member). */
const node_json *node_json_get(const node_json *j, const char *key);
/* The member's string / exact unsigned integer / boolean, or the fallback when it is missing or
 * of another type. */
const char *node_json_get_str(const node_json *j, const char *key, const char *fallback);
uint64_t node_json_get_u64(const node_json *j, const char *key, uint64_t fallback);
bool node_json_get_bool(const node_json *j, const char *key, bool fallback);

/* Appends s as a quoted JSON string (escaping '"', '\\' and control bytes). -1 on NOMEM. */
int node_json_append_str(shoal_buf *out, const char *s);

/* ---- the status document --------------------------------------------------------------------- */

/* One member as this node sees it. Strings are borrowed for the call. */
typedef struct node_status_member {
    const char *id;
    const char *address;   /* "ip:port" */
    const char *zone;      /* NULL: none */
    const char *state;     /* "alive", "suspect", "dead" or "left" */
    uint64_t incarnation;
    uint64_t cache_bytes;  /* as the member last published it */
    bool cache_known;      /* false: it has not published its use (an older release): null */
    uint64_t cache_capacity;
    bool serves;           /* false for a --no-serve node */
} node_status_member;

/* What `shoal status` shows. Strings and the member array are borrowed for the call. */
typedef struct node_status {
    const char *node_id;
    const char *address;
    const char *zone;      /* NULL: none */
    const char *bucket;    /* "s3://B/P" */
    uint64_t ring_version;
    uint64_t block_size;
    uint64_t uptime_seconds;
    const node_status_member *members;
    size_t n_members;
    /* Readiness, as /readyz tells it: ready when joined, S3 checked and (with a mount) mounted. */
    bool ready;
    const char *waiting_for; /* the first condition missing, as /readyz words it; NULL when ready */
    bool joined;             /* no seeds, or another live member seen */
    bool s3_checked;         /* the last S3 check passed */
    bool has_mount;          /* --mount given; else "mounted" is null */
    bool mounted;
} node_status;

/* Appends the status as one JSON object (no newline):
 * {"node_id":..,"address":..,"zone":..|null,"bucket":..,"ring_version":N,"block_size":N,
 *  "uptime_seconds":N,"ready":bool,"waiting_for":..|null,"joined":bool,"s3_checked":bool,
 *  "mounted":bool|null,"members":[{"id":..,"address":..,"zone":..|null,"state":..,"incarnation":N,
 *  "cache_bytes":N|null,"cache_capacity":N,"serves":bool},...],
 *  "cluster":{"alive":N,"suspect":N,"dead":N,"left":N,"cache_bytes":N,"cache_capacity":N,
 *  "cache_reporting":N}}. The cluster totals count live (alive or suspect) members: cache_bytes
 *  over those that published their use (cache_reporting of them), cache_capacity over all. -1 on
 *  NOMEM. */
int node_status_render_json(const node_status *s, shoal_buf *out);

/* ---- server --------------------------------------------------------------------------------- */

/* A parsed request; the strings live until the handler returns. */
typedef struct node_control_request {
    const char *cmd;    /* "status", "stats", "get", "stat", "list", "preload", "leave", "forget", "drain" */
    const char *bucket; /* get, stat, list, preload; else NULL */
    const char *key;    /* get, stat: the object key; else NULL */
    const char *prefix; /* preload, list: the key prefix (may be ""); else NULL */
    const char *delimiter; /* list: "/" unless the request gave one ("" lists flat); else NULL */
    const char *node;   /* forget: the member's node id; else NULL */
    uint64_t offset;    /* get: first byte wanted (0 unless given; past the end means none) */
    uint64_t length;    /* get: bytes wanted from offset (UINT64_MAX unless given: to the end) */
    const char *etag;   /* get: the ETag the reader pinned (the read fails if the object has
                         * another now); else NULL */
    bool paged;         /* list: one page was asked ("max_keys" or "token" given), not every page */
    unsigned max_keys;  /* list: at most this many entries in the page (1..1000; 0: 1000) */
    const char *token;  /* list: continuation token of the page wanted; NULL: the first page */
} node_control_request;

/* Progress of a preload or a drain. */
typedef struct node_control_progress {
    uint64_t objects_done, objects_total; /* preload */
    uint64_t bytes_done, bytes_total;
    bool listed; /* the listing is complete, so the totals are final (a drain: always) */
    uint64_t blocks_done, blocks_total;
    uint64_t cached;  /* preload: blocks their owner held already or took from another member */
    uint64_t fetched; /* preload: blocks their owner fetched from S3 */
    uint64_t sent, bytes_sent; /* drain: blocks (and their bytes) the next owners accepted */
    uint64_t failed;  /* blocks not warmed / not handed off */
} node_control_progress;

/* The answer being written to one client; handed to a handler, valid until it returns. */
typedef struct node_control_reply node_control_reply;

/* A handler answers through `reply` and returns 0, or returns -1 with a shoal_error: when it
 * has sent nothing yet, the server sends {"ok":false,"error":<message>}; during a progress body
 * the message becomes the final progress line; during a byte body the connection is closed
 * short, which the client reports. A handler that returns 0 having sent nothing answers
 * {"ok":true,"body":"none"}. */
typedef int (*node_control_handler_fn)(void *ctx, const node_control_request *req, node_control_reply *reply);

/* The daemon's handlers; a NULL entry answers "command not supported by this daemon". */
typedef struct node_control_handlers {
    node_control_handler_fn status;
    node_control_handler_fn stats;
    node_control_handler_fn get;
    node_control_handler_fn preload;
    node_control_handler_fn leave;
    node_control_handler_fn list;
    node_control_handler_fn forget;
    node_control_handler_fn drain;
    node_control_handler_fn stat;
} node_control_handlers;

/* Sends a JSON body: the header and `json` (one JSON value without newlines) on its own line.
 * -1 with SHOAL_ERR_CLOSED when the client went away, SHOAL_ERR_INVAL when a body was begun. */
int node_control_reply_json(node_control_reply *r, const char *json);
/* Begins a byte body of exactly `size` bytes (chunked when the client asked "fds":true; the
 * calls below frame it, so a handler writes the same either way). -1 as above. */
int node_control_reply_bytes_begin(node_control_reply *r, uint64_t size);
/* Begins the byte body of a `get` as node_control_reply_bytes_begin does, naming the object's whole
 * size and ETag in the header as well ("object_size", "etag"): `size` is what the body carries
 * (the range asked, clamped to the object). -1 as above. */
int node_control_reply_object_begin(node_control_reply *r, uint64_t size, uint64_t object_size, const char *etag);
/* Sends body bytes; more than the size announced is SHOAL_ERR_RANGE. -1 when the client went away. */
int node_control_reply_write(node_control_reply *r, const void *data, size_t len);
/* Sends len body bytes from file descriptor fd at offset off without copying through user space;
 * in a chunked body, passes the descriptor itself (the client reads the range; the caller still
 * closes its own fd). The file's bytes in that range must not change afterwards. */
int node_control_reply_sendfile(node_control_reply *r, int fd, uint64_t off, size_t len);
/* Begins a progress body (once), then sends one progress line per call. */
int node_control_reply_progress(node_control_reply *r, const node_control_progress *p);
/* Ends a progress body with the final line ("done":true). */
int node_control_reply_progress_done(node_control_reply *r, const node_control_progress *p);

typedef struct node_control_server node_control_server;

/* Creates the socket at `path` (parent directories made with mode 0700 when missing; the socket
 * appears with mode 0600 already set, by binding a temporary name and renaming it) and serves it
 * on a thread of its own, one thread per connection (at most 32 at once). A stale socket left by
 * a dead daemon is replaced; one that a live daemon answers on is SHOAL_ERR_INVAL.
 * `handlers` is copied; ctx is passed to every handler, which runs on a connection thread.
 * NULL with a shoal_error on failure. */
node_control_server *node_control_server_new(const char *path, const node_control_handlers *handlers, void *ctx);

/* Stops accepting, cuts the open connections (a handler's next write fails), waits for the
 * handlers to return, removes the socket file and frees the server. Accepts NULL. Must not be
 * called from a handler. */
void node_control_server_delete(node_control_server *s);

/* ---- client --------------------------------------------------------------------------------- */

/* Sends {"cmd":cmd} and stores the JSON body (or "" for a "none" body) in *body. -1 with a message:
 * SHOAL_ERR_IO "cannot reach shoald at PATH: ..." when no daemon listens there, SHOAL_ERR_NODE with
 * the daemon's own message when it answered with an error. */
int node_control_call(const char *path, const char *cmd, shoal_buf *body);

/* Reads s3://bucket/key through the daemon and writes the bytes to out_fd at its current position,
 * asking for a chunked body (blocks held on the node arrive as their files). On success *size gets
 * the object size (may be NULL). -1 as node_control_call, or when the stream ends short or out_fd
 * fails (the message says which). */
int node_control_get(const char *path, const char *bucket, const char *key, int out_fd, uint64_t *size);

/* node_control_get of the bytes [offset, offset + length) of the object (clamped to its end; a
 * range starting at or past the end is empty, and length UINT64_MAX reads to the end). *size gets
 * the bytes written. */
int node_control_get_range(const char *path, const char *bucket, const char *key, uint64_t offset, uint64_t length,
                           int out_fd, uint64_t *size);

/* Lists s3://bucket/prefix through the daemon (every page, through the cluster's listing owner)
 * and appends its JSON body to *body: {"prefixes":["P/a/",...],"objects":[{"key":..,"size":N,
 * "etag":..,"mtime":N},...]}. -1 as node_control_call. */
int node_control_list(const char *path, const char *bucket, const char *prefix, const char *delimiter,
                      shoal_buf *body);

/* Asks the daemon to forget member `node` (dead or left) at once. -1 as node_control_call; the
 * daemon's refusal (an alive member, an unknown one) comes as SHOAL_ERR_NODE with its message. */
int node_control_forget(const char *path, const char *node);

/* Called with each progress line of a preload or a drain (the last one holds the final figures). */
typedef void (*node_control_progress_fn)(void *ud, const node_control_progress *p);

/* Warms the cluster cache with everything under s3://bucket/prefix, calling fn (may be NULL) on
 * each progress line. 0 when the daemon reported done; -1 as node_control_call or with the
 * daemon's error. */
int node_control_preload(const char *path, const char *bucket, const char *prefix, node_control_progress_fn fn,
                         void *ud);

/* Asks the local daemon to hand its owned blocks to their next owners and then leave the cluster,
 * calling fn (may be NULL) on each progress line. 0 when the daemon reported done (every block
 * handed off); -1 as node_control_call or with the daemon's error (fn saw the final figures). */
int node_control_drain(const char *path, node_control_progress_fn fn, void *ud);

#endif
