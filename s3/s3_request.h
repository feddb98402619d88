/*
 * s3_request: the client's internal request interface, shared by s3_client.c (the engine and the
 * single-request operations) and s3_multipart.c (multipart upload and copy, built from single
 * requests). Not installed and not for use outside s3/.
 */
#ifndef SHOAL_S3_REQUEST_H
#define SHOAL_S3_REQUEST_H

#include "s3_client.h"
#include "s3_sigv4.h"

#include <openssl/evp.h>
#include <pthread.h>

typedef enum s3_op {
    S3_OP_HEAD,
    S3_OP_GET,
    S3_OP_PUT,
    S3_OP_DELETE,
    S3_OP_LIST,
    S3_OP_CREATE_MULTIPART,
    S3_OP_UPLOAD_PART,
    S3_OP_UPLOAD_PART_COPY,
    S3_OP_COMPLETE_MULTIPART,
    S3_OP_ABORT_MULTIPART,
    S3_OP_COPY,
} s3_op;

/* Query parameters or extra headers of one request: the most a request has is a copy with
 * replaced metadata (source, If-Match, directive, content type and S3_META_MAX entries). */
#define S3_REQ_MAX_KV 16

/* "x-amz-meta-NAME" header names of a request, built by s3_spec_add_meta in the caller's frame. */
typedef char s3_meta_header[sizeof "x-amz-meta-" + sizeof ((s3_meta_kv *)0)->name];

/* Everything one request needs; strings are borrowed for the duration of s3_submit (which copies
 * them), the GET destination and a body that is not copied must outlive the request. */
typedef struct s3_req_spec {
    s3_op op;
    const char *bucket;
    const char *key; /* NULL for bucket-level requests (LIST) */
    s3_kv query[S3_REQ_MAX_KV];
    size_t n_query;
    s3_kv headers[S3_REQ_MAX_KV]; /* extra headers, all signed */
    size_t n_headers;
    /* Request body: memory when data != NULL, else fd range when fd >= 0, else none. */
    const void *data;
    int fd;
    uint64_t offset;
    uint64_t len;
    bool copy_body; /* s3_submit copies the memory body (for bodies built on the stack) */
    /* GET destination and range. */
    const s3_get_args *get;
    /* The result document a 2xx answer must carry (0: none). */
    s3_xml_result_kind expect;
} s3_req_spec;

/* Empties *s and sets the operation and object (no body: fd -1). */
void s3_req_spec_init(s3_req_spec *s, s3_op op, const char *bucket, const char *key);

/* Adds one x-amz-meta-NAME header per entry of meta[0..n) to s (names written into `names`,
 * which must outlive s3_submit). -1 with SHOAL_ERR_INVAL, naming the entry, when n exceeds
 * S3_META_MAX, an entry breaks the rules of s3_meta_kv or a name repeats; s is then unchanged. */
int s3_spec_add_meta(s3_req_spec *s, s3_meta_header names[S3_META_MAX], const s3_meta_kv *meta, unsigned n);

/* Queues one request. 0, and done runs exactly once later; or -1 (done never runs). */
int s3_submit(s3_client *c, const s3_req_spec *spec, s3_done_fn done, void *ud);

/* The client's configuration, as resolved at s3_client_new. */
const s3_client_config *s3_client_config_of(const s3_client *c);

/* true when called on the client's worker thread (where blocking would deadlock). */
bool s3_client_on_worker(const s3_client *c);

/* A counter of outstanding requests with the first failure, for blocking callers. */
typedef struct s3_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned pending;
    shoal_err err;
    char msg[1024];
} s3_wait;

void s3_wait_create(s3_wait *w);
/* Records r's failure when it is the first one (no-op on success). Thread-safe. */
void s3_wait_note(s3_wait *w, const s3_result *r);
void s3_wait_add(s3_wait *w, unsigned n);
void s3_wait_done(s3_wait *w);
/* Blocks until every added request is done; 0, or -1 with the first failure as shoal_error. */
int s3_wait_finish(s3_wait *w);
void s3_wait_destroy(s3_wait *w);

/* One blocking request: the waiter plus what the caller gets back. */
typedef struct s3_call {
    s3_wait w;
    s3_object_info info;  /* etag also set from a result document */
    uint64_t bytes;
    s3_list_page *list;   /* when set before the call, receives a LIST page */
    s3_xml_result doc;    /* the result document, when the request expects one */
    bool maybe_applied;   /* failure only: the request may still have taken effect */
} s3_call;

/* Submits one request and waits for it (never from the worker thread): 0 with *k filled, or -1
 * with the request's failure as the shoal_error. *k must start zeroed (list may be set). */
int s3_call_run(s3_client *c, const s3_req_spec *spec, s3_call *k);

/* Appends "/bucket/encoded-key" for x-amz-copy-source. */
int s3_copy_source(shoal_buf *out, const char *bucket, const char *key);

/* The digest `md` of a request body: `len` bytes of memory at data (NULL: empty), or when data is
 * NULL and fd >= 0, `len` bytes of fd from off, read with pread. 0, or -1 with SHOAL_ERR_IO (the
 * file ends early or a read fails; the message starts with `what`) or SHOAL_ERR_NOMEM. */
int s3_body_digest(const EVP_MD *md, const void *data, int fd, uint64_t off, uint64_t len, const char *what,
                   uint8_t out[EVP_MAX_MD_SIZE], unsigned *out_len);

/* Appends a note to this thread's last error message, keeping its code; returns -1. */
int s3_error_append(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* --------------------------------------------------------------------------------------------
 * Commit checks (s3_commit.c): after a write failed ambiguously (s3_call.maybe_applied), a HEAD
 * of the key tells whether the write is there, by the ETag it must have produced.
 */

/* What a write must have left under its key. Every field may be unknown (""/NULL); with nothing
 * known, nothing can be recognized and the check fails without a request. */
typedef struct s3_expect {
    const char *op;                  /* the write, for the log line ("PutObject", ...) */
    /* The exact ETag the write produces (a multipart upload's, from its part ETags). */
    char etag[S3_ETAG_MAX];
    /* The content's MD5, quoted hex, which is the ETag of a single PUT or CopyObject (and which
     * some S3-compatible servers give multipart objects too) ... */
    char content_md5[S3_ETAG_MAX];
    /* ... or the body to compute it from (memory or pread of the fd range), only when a HEAD
     * shows a plain MD5 that is not etag. */
    const s3_put_args *body;
    /* The user metadata the object must carry, exactly (none when n_meta is 0). */
    const s3_meta_kv *meta;
    unsigned n_meta;
} s3_expect;

/* Whether `hex` is an MD5 as S3 writes it in an ETag: 32 hex digits, quoted or not. */
bool s3_etag_is_md5(const char *etag);

/* A multipart object's ETag from its part ETags: "\"<hex MD5 of the binary part MD5s>-N\"".
 * "" when a part ETag is not an MD5 (nothing to compute from). */
void s3_multipart_etag(const s3_part_etag *parts, uint32_t n, char out[S3_ETAG_MAX]);

/* HEADs bucket/key once (with the client's retries) and compares. 0 when the key holds what the
 * write produces: logs one line naming the write and the failure it resolves, and copies the
 * ETag into etag (may be NULL). -1 otherwise: the thread's error is what it was on entry (the
 * write's failure) with what the HEAD showed appended. Never from the worker thread. */
int s3_commit_check(s3_client *c, const char *bucket, const char *key, const s3_expect *e,
                    char etag[S3_ETAG_MAX]);

#endif
