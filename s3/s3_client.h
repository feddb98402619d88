/*
 * s3_client: Shoal's S3 client. One handle owns a worker thread that drives a libcurl multi
 * handle, so many requests are in flight at once over reused keep-alive connections.
 *
 * Two ways to call it:
 *   - asynchronous (s3_*_async): the request is queued and the completion callback runs exactly
 *     once, on the worker thread, with the outcome. The daemon keeps hundreds of ranged GETs
 *     going this way. A callback must not block and must not call a blocking function of this
 *     client (it may submit further asynchronous requests);
 *   - blocking (s3_head, s3_get, ...): built on the asynchronous calls; they wait for the
 *     outcome and report failure as -1 with the shoal_error set on the calling thread. Safe from
 *     any number of threads at once, never from a completion callback.
 *
 * Every failure carries a code (SHOAL_ERR_S3_*) and a message naming the operation, bucket, key,
 * HTTP status, S3 error code and message, request id and the number of attempts. 5xx answers,
 * SlowDown, connection resets, truncated bodies and timeouts are retried with capped exponential
 * backoff and full jitter, up to max_retries times; other 4xx answers are never retried.
 * See docs/s3.md.
 */
#ifndef SHOAL_S3_CLIENT_H
#define SHOAL_S3_CLIENT_H

#include "s3_creds.h"
#include "s3_xml.h"
#include "shoal_error.h"
#include "shoal_hist.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct s3_client s3_client;

typedef struct s3_client_config {
    /* "http[s]://host[:port]" of an S3-compatible server; NULL: AWS, https://s3.REGION.amazonaws.com. */
    const char *endpoint;
    const char *region;          /* signing region; default "us-east-1" */
    bool path_style;             /* true: http://host/bucket/key; false: http://bucket.host/key */
    /* Borrowed; must outlive the client. NULL: the client resolves the default chain itself
     * (environment, profile, IMDS) at s3_client_new and owns that provider. */
    s3_creds_provider *creds;
    unsigned max_in_flight;      /* requests on the wire at once (also the connection cap); default 64 */
    unsigned connect_timeout_ms; /* default 10000 */
    unsigned request_timeout_ms; /* whole attempt; 0 = no limit (default) */
    /* An attempt that moves no byte for this long (nothing received, nothing taken for sending,
     * no connection made) is abandoned and sent again at once, on another connection, counted in
     * stall_retries (see docs/s3.md); 0 = no limit. Default 5000. */
    unsigned stall_timeout_ms;
    /* CompleteMultipartUpload and server-side copies (CopyObject, UploadPartCopy) answer only once
     * the server has assembled or copied the whole object, which S3 documents can take minutes
     * for large objects (AWS keeps the connection alive meanwhile, other servers may stay
     * silent). These requests therefore have no stall limit and this whole-attempt limit
     * instead; 0 = none. Default 600000 (10 minutes): well above the minutes S3 documents, and
     * short enough that a completion whose answer was lost is resolved (by a HEAD, see s3_upload)
     * while the caller still waits. */
    unsigned complete_timeout_ms;
    unsigned max_retries;        /* retries after the first attempt; default 5 */
    unsigned backoff_base_ms;    /* first retry waits up to this; default 100 */
    unsigned backoff_cap_ms;     /* no retry waits longer; default 20000 */
    /* PEM CA bundle; NULL: $AWS_CA_BUNDLE when set, else the system store. */
    const char *ca_bundle;
    bool verify_tls;             /* default true; false only for test servers with self-signed certs */
    uint64_t multipart_threshold;      /* s3_upload: bodies above this go multipart; default 16 MiB */
    uint64_t part_size;                /* s3_upload: part size (min 5 MiB on AWS); default 8 MiB */
    uint64_t copy_multipart_threshold; /* s3_copy: sources above this use UploadPartCopy; default 5 GiB */
    uint64_t copy_part_size;           /* s3_copy: part size of a multipart copy; default 512 MiB */
} s3_client_config;

/* Fills *cfg with the defaults above (endpoint NULL, region "us-east-1", virtual-hosted). */
void s3_client_config_defaults(s3_client_config *cfg);

/* Creates a client and starts its worker thread. The config's strings are copied. NULL with
 * SHOAL_ERR_INVAL (bad endpoint or values), SHOAL_ERR_S3_CREDENTIALS (no credentials when
 * cfg->creds is NULL) or SHOAL_ERR_NOMEM. */
s3_client *s3_client_new(const s3_client_config *cfg);

/* Stops the worker: requests still queued or in flight complete with SHOAL_ERR_CLOSED (their
 * callbacks run before this returns), then frees everything. Accepts NULL. Never call it from a
 * completion callback. */
void s3_client_delete(s3_client *c);

/* User metadata: one x-amz-meta-NAME: VALUE header. S3 header values are ASCII, so what is sent
 * must be: name 1-39 bytes of a-z 0-9 '-' '_' '.' (lower-case: S3 stores names lower-cased), value
 * 0-87 bytes of printable ASCII (0x20-0x7e) without a space at either end (HTTP strips those).
 * Anything else (UTF-8, control bytes, upper-case names, duplicates) is refused with
 * SHOAL_ERR_INVAL before a request is sent; a caller that needs other bytes encodes them. */
#define S3_META_MAX 8
typedef struct s3_meta_kv {
    char name[40];  /* without the "x-amz-meta-" prefix, NUL-terminated */
    char value[88]; /* NUL-terminated */
} s3_meta_kv;

/* Metadata of an object. */
typedef struct s3_object_info {
    uint64_t size;          /* whole object size in bytes (from Content-Range on a ranged GET) */
    char etag[S3_ETAG_MAX]; /* as S3 sends it, quotes included */
    int64_t last_modified;  /* Unix seconds; 0 when the server sent none */
    char content_type[128];
    /* The answer's x-amz-meta-* headers (HEAD and GET), in the order received, names lower-cased
     * and without the prefix, values as sent. At most S3_META_MAX are kept; meta_dropped counts
     * those that were not (past the limit, or a name or value too long for the fields). */
    unsigned n_meta;
    s3_meta_kv meta[S3_META_MAX];
    unsigned meta_dropped;
} s3_object_info;

/* The outcome handed to a completion callback; valid only during the callback. */
typedef struct s3_result {
    shoal_err err;          /* SHOAL_OK on success */
    const char *message;    /* the failure message; "" on success */
    int status;             /* last HTTP status; 0 when no answer came */
    unsigned attempts;      /* attempts made (1 + retries) */
    /* Failure only: an attempt may still have taken effect at the server (the request went out
     * and the answer was lost, came too late, or was a 5xx), so the failure alone does not say
     * whether a write happened. s3_put, s3_upload and s3_copy resolve this themselves. */
    bool maybe_applied;
    s3_object_info info;    /* HEAD and GET: the object; PUT: etag */
    uint64_t bytes;         /* GET: body bytes delivered */
    /* LIST: the parsed page. The callback may take it over by copying the struct and
     * zeroing *list; otherwise it is destroyed when the callback returns. */
    s3_list_page *list;
    /* Requests answered with a result document (multipart steps, copies); NULL otherwise. */
    const s3_xml_result *doc;
} s3_result;

typedef void (*s3_done_fn)(void *ud, s3_result *r);

/* Receives GET body bytes: `pos` is the offset in the response body (0 = first byte asked for).
 * After a retry the bytes are delivered again from pos 0, so a sink writes at pos rather than
 * appending. Runs on the worker thread. Return 0 to continue, -1 to fail the request (it is
 * then not retried and completes with SHOAL_ERR_S3 naming the sink). With if_match set, a sink is
 * never given a byte of an answer whose ETag differs (a server that ignores If-Match): the request
 * fails with SHOAL_ERR_S3_CHANGED before the first byte, so a sink may hand bytes on at once. */
typedef int (*s3_sink_fn)(void *ud, uint64_t pos, const void *data, size_t len);

typedef struct s3_get_args {
    const char *bucket;
    const char *key;
    bool ranged;              /* false: the whole object */
    uint64_t offset;          /* ranged: first byte */
    uint64_t length;          /* ranged: bytes asked (>0); fewer come back only at the object's end */
    const char *if_match;     /* ETag the object must still have (412 -> SHOAL_ERR_S3_CHANGED); NULL: none */
    /* Destination: a caller buffer (a body larger than buf_len fails with SHOAL_ERR_RANGE) ... */
    void *buf;
    size_t buf_len;
    /* ... or a sink (used when buf is NULL). */
    s3_sink_fn sink;
    void *sink_ud;
} s3_get_args;

typedef struct s3_put_args {
    const char *bucket;
    const char *key;
    const char *content_type; /* NULL: none sent */
    /* Body: memory (data, len) when data != NULL or fd < 0 ... */
    const void *data;
    /* ... or the byte range [offset, offset+len) of a file descriptor, read with pread. */
    int fd;
    uint64_t offset;
    uint64_t len;
    /* User metadata the new object carries (PutObject, or CreateMultipartUpload); borrowed,
     * copied when the request is submitted. n_meta <= S3_META_MAX. */
    const s3_meta_kv *meta;
    unsigned n_meta;
} s3_put_args;

typedef struct s3_copy_args {
    const char *src_bucket, *src_key, *dst_bucket, *dst_key;
    /* false: the copy keeps the source's user metadata (a multipart copy re-sends it);
     * true: the copy carries exactly meta[0..n_meta) (and the source's content type), which is
     * also how an object's metadata is changed in place: a copy onto its own key. */
    bool replace_meta;
    const s3_meta_kv *meta;
    unsigned n_meta;
    /* The source as a HEAD the caller just made saw it (ETag, size, content type, metadata), or
     * NULL: s3_copy then makes no HEAD of its own. The copy is pinned to this ETag either way. */
    const s3_object_info *src_info;
} s3_copy_args;

typedef struct s3_list_args {
    const char *bucket;
    const char *prefix;             /* NULL: none */
    const char *delimiter;          /* NULL: none (flat listing) */
    const char *continuation_token; /* NULL: first page */
    const char *start_after;        /* NULL: none */
    unsigned max_keys;              /* 0: the server's default (1000) */
} s3_list_args;

/* Asynchronous calls: 0 when queued (done will run exactly once, on the worker thread); -1
 * with SHOAL_ERR_INVAL for bad arguments or SHOAL_ERR_CLOSED when the client is shutting down
 * (done is then never called). Argument strings are copied; a GET's buffer or sink, and a PUT's
 * memory body or fd, must stay valid until done runs. s3_put_async reports the PUT's own outcome
 * (r->maybe_applied marks a failure that may have stored it); s3_put settles that case. */
int s3_head_async(s3_client *c, const char *bucket, const char *key, s3_done_fn done, void *ud);
int s3_get_async(s3_client *c, const s3_get_args *a, s3_done_fn done, void *ud);
int s3_put_async(s3_client *c, const s3_put_args *a, s3_done_fn done, void *ud);
int s3_delete_async(s3_client *c, const char *bucket, const char *key, s3_done_fn done, void *ud);
int s3_list_async(s3_client *c, const s3_list_args *a, s3_done_fn done, void *ud);

/* Blocking calls: 0 on success, -1 with the shoal_error set. */

/* HeadObject: size, ETag, Last-Modified, content type and user metadata into *out. */
int s3_head(s3_client *c, const char *bucket, const char *key, s3_object_info *out);
/* GetObject into a->buf or a->sink; *got (may be NULL) receives the body length and *info (may
 * be NULL) the object's metadata. A body shorter than announced fails with
 * SHOAL_ERR_S3_TRUNCATED and is never reported as data. */
int s3_get(s3_client *c, const s3_get_args *a, uint64_t *got, s3_object_info *info);
/* PutObject in one request; the new ETag into etag (may be NULL). Commit-safe: when the PUT
 * fails in a way that may still have stored it (a lost or late answer, a 5xx, after all retries),
 * one HeadObject decides: if the key holds an object whose ETag is the body's MD5 (computed then,
 * reading the body once more), the PUT succeeded and a line is logged; else the failure is
 * reported, with what the HEAD found appended. A failed PUT leaves the key as it was. */
int s3_put(s3_client *c, const s3_put_args *a, char etag[S3_ETAG_MAX]);
/* PutObject (as s3_put) when the body is at most multipart_threshold, else a multipart upload
 * whose parts go up in parallel. A 200 answer carrying <Error> to CompleteMultipartUpload is a
 * failure. Commit-safe: a completion that fails but may have committed (lost or late answer, 5xx,
 * then NoSuchUpload to a retry) is settled by a HEAD: the ETag the upload produces (MD5 of the
 * part MD5s, "-N") means success; otherwise the upload is aborted and a second HEAD is final. Any
 * other failure aborts the upload. A failed upload leaves the key as it was. */
int s3_upload(s3_client *c, const s3_put_args *a, char etag[S3_ETAG_MAX]);
/* DeleteObject (deleting a missing key succeeds, as in S3). */
int s3_delete(s3_client *c, const char *bucket, const char *key);
/* One ListObjectsV2 page (encoding-type=url, decoded) into *out, which must be created and
 * empty; pass out->next_token as continuation_token while out->truncated. */
int s3_list(s3_client *c, const s3_list_args *a, s3_list_page *out);
/* Server-side copy: HeadObject of the source (unless a->src_info gives it), then CopyObject, or UploadPartCopy parts when the
 * source is larger than copy_multipart_threshold (pinned to the source's ETag so a concurrent
 * overwrite fails the copy instead of splicing two versions). Metadata as a->replace_meta says; a
 * multipart copy that keeps it fails with SHOAL_ERR_UNSUPPORTED, before any write, when the
 * source has metadata s3_object_info cannot hold (meta_dropped). A copy onto the source's own
 * key needs replace_meta (S3 refuses it otherwise). New ETag into etag (may be NULL).
 * Commit-safe as s3_upload: a CopyObject that may have committed counts when the destination
 * then has the source's ETag (known only when that is a plain MD5) and the expected metadata;
 * a multipart copy as s3_upload. */
int s3_copy(s3_client *c, const s3_copy_args *a, char etag[S3_ETAG_MAX]);

/* Kinds of operation the counters tell apart: PUT is PutObject and the multipart steps, DELETE
 * is DeleteObject and AbortMultipartUpload, COPY is CopyObject and UploadPartCopy. */
enum { S3_STATS_GET, S3_STATS_HEAD, S3_STATS_LIST, S3_STATS_PUT, S3_STATS_DELETE, S3_STATS_COPY, S3_STATS_OPS };
/* Kinds of error: class i < S3_STATS_CODES - 1 is SHOAL_ERR_S3 + i (SHOAL_ERR_S3 itself, then
 * NO_SUCH_KEY ... CREDENTIALS in the enum's order); the last class is any other error (a local
 * one such as out of memory). */
#define S3_STATS_CODES (SHOAL_ERR_S3_CREDENTIALS - SHOAL_ERR_S3 + 2)

/* Counters since the client was created (SPEC §3 exports them as s3.*). Requests count attempts
 * on the wire, retries included. */
typedef struct s3_client_stats {
    uint64_t get_requests;    /* GetObject */
    uint64_t head_requests;   /* HeadObject */
    uint64_t list_requests;   /* ListObjectsV2 */
    uint64_t put_requests;    /* PutObject, multipart steps (copies are copy_requests) */
    uint64_t copy_requests;   /* CopyObject, UploadPartCopy */
    uint64_t delete_requests; /* DeleteObject, AbortMultipartUpload */
    uint64_t bytes_in;        /* response body bytes */
    uint64_t bytes_out;       /* request body bytes */
    uint64_t retries;         /* attempts that were retried (stalled ones included) */
    uint64_t stall_retries;   /* of those, attempts abandoned for moving no byte for stall_timeout_ms */
    uint64_t failures;        /* requests that completed with an error */
    uint64_t connections;     /* new connections opened (the rest reused a kept-alive one) */
    /* Requests that completed with an error, by kind of operation and of error. */
    uint64_t errors[S3_STATS_OPS][S3_STATS_CODES];
    /* Time from submission to completion of each request (retries and their waits included), by
     * kind of operation. */
    shoal_hist_counts latency[S3_STATS_OPS];
} s3_client_stats;


void s3_client_stats_get(const s3_client *c, s3_client_stats *out);

#endif
