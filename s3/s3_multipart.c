/*
 * s3_multipart: the operations made of several requests: s3_upload (PutObject or a multipart
 * upload) and s3_copy (CopyObject or a multipart copy with UploadPartCopy).
 *
 * A multipart job is CreateMultipartUpload, then every part submitted at once through the
 * asynchronous engine (the client's max_in_flight bounds how many are on the wire), then one
 * wait for all of them, then CompleteMultipartUpload. Any failure, including a 200 answer
 * whose body is an <Error> (which the engine already reports as a failure), aborts the upload
 * so no orphaned parts keep costing storage; the first failure is what the caller sees.
 *
 * The completion is the commit point, and its failure is not always what it seems: when its
 * answer was lost, came after the client's (long, own) timeout or was a 5xx, S3 may have
 * committed the object and the retries then answer 404 NoSuchUpload or 5xx. Aborting and
 * reporting failure then would contradict what S3 holds, so such a failure is settled first
 * (s3_commit.c): a HEAD that finds the ETag this upload produces is success; otherwise the
 * upload is aborted and, since it can no longer land after that, a second HEAD is final. The
 * same check follows a single PutObject or CopyObject that failed that way.
 *
 * Part sizes: the configured size, grown when needed to stay within S3's 10,000 parts. A copy
 * pins every part to the source's ETag (x-amz-copy-source-if-match), so an object overwritten
 * during the copy fails it with SHOAL_ERR_S3_CHANGED instead of producing a splice.
 */
#include "s3_request.h"

#include "shoal_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S3_MAX_PARTS 10000u

/* Collects part ETags from completion callbacks (each writes only its own slot). */
typedef struct mp_job {
    s3_wait w;
    s3_part_etag *parts;
} mp_job;

typedef struct mp_part_ctx {
    mp_job *job;
    uint32_t index;
} mp_part_ctx;

static void part_done(void *ud, s3_result *r)
{
    mp_part_ctx *p = ud;
    s3_wait_note(&p->job->w, r);
    if (r->err == SHOAL_OK) {
        s3_part_etag *pe = &p->job->parts[p->index];
        snprintf(pe->etag, sizeof pe->etag, "%s", r->info.etag);
    }
    s3_wait_done(&p->job->w);
}

/* Where a multipart job writes, and what the new object carries. */
typedef struct mp_dest {
    const char *bucket;
    const char *key;
    const char *content_type; /* NULL: none */
    const s3_meta_kv *meta;
    unsigned n_meta;
} mp_dest;

static int create_upload(s3_client *c, const mp_dest *d, char upload_id[1024])
{
    s3_req_spec s;
    s3_req_spec_init(&s, S3_OP_CREATE_MULTIPART, d->bucket, d->key);
    s.query[s.n_query++] = (s3_kv){"uploads", ""};
    if (d->content_type)
        s.headers[s.n_headers++] = (s3_kv){"content-type", d->content_type};
    s3_meta_header names[S3_META_MAX];
    if (s3_spec_add_meta(&s, names, d->meta, d->n_meta) < 0)
        return -1;
    s.expect = S3_XML_INITIATE_MULTIPART;
    s3_call k = {0};
    if (s3_call_run(c, &s, &k) < 0)
        return -1;
    memcpy(upload_id, k.doc.upload_id, sizeof k.doc.upload_id);
    return 0;
}

/* Best effort: the caller is already failing and reports its own error, not this one's. */
static void abort_upload(s3_client *c, const char *bucket, const char *key, const char *upload_id)
{
    shoal_err code = shoal_error_code();
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", shoal_error_message());
    s3_req_spec s;
    s3_req_spec_init(&s, S3_OP_ABORT_MULTIPART, bucket, key);
    s.query[s.n_query++] = (s3_kv){"uploadId", upload_id};
    s3_call k = {0};
    s3_call_run(c, &s, &k);
    shoal_error_set(code, "%s (multipart upload aborted)", msg);
}

/* CompleteMultipartUpload; on failure *maybe_applied tells whether it may have committed. */
static int complete_upload(s3_client *c, const char *bucket, const char *key, const char *upload_id,
                           const s3_part_etag *parts, uint32_t n, char etag[S3_ETAG_MAX], bool *maybe_applied)
{
    int rc = -1;
    *maybe_applied = false;
    shoal_buf body;
    shoal_buf_create(&body, 0);
    if (s3_xml_build_complete(&body, parts, n) < 0)
        goto done;
    s3_req_spec s;
    s3_req_spec_init(&s, S3_OP_COMPLETE_MULTIPART, bucket, key);
    s.query[s.n_query++] = (s3_kv){"uploadId", upload_id};
    s.headers[s.n_headers++] = (s3_kv){"content-type", "application/xml"};
    s.data = body.data;
    s.len = body.len;
    s.copy_body = true;
    s.expect = S3_XML_COMPLETE_MULTIPART;
    s3_call k = {0};
    rc = s3_call_run(c, &s, &k);
    if (rc == 0 && etag)
        memcpy(etag, k.info.etag, S3_ETAG_MAX);
    *maybe_applied = rc < 0 && k.maybe_applied;
done:
    shoal_buf_destroy(&body);
    return rc;
}

/* Completes the upload, and settles a completion that failed but may have committed: a HEAD
 * that finds this upload's object is success; otherwise the upload is aborted, after which it
 * can no longer land, and a second HEAD gives the final answer (the completion may have been
 * committing while the first one looked). Any other failure aborts the upload. */
static int complete_or_settle(s3_client *c, const char *bucket, const char *key, const char *upload_id,
                              const s3_part_etag *parts, uint32_t n, const s3_expect *e, char etag[S3_ETAG_MAX])
{
    bool maybe = false;
    if (complete_upload(c, bucket, key, upload_id, parts, n, etag, &maybe) == 0)
        return 0;
    if (maybe) {
        shoal_err code = shoal_error_code();
        char failure[1024];
        snprintf(failure, sizeof failure, "%s", shoal_error_message());
        if (s3_commit_check(c, bucket, key, e, etag) == 0)
            return 0;
        shoal_error_set(code, "%s", failure); /* the final check says what it found */
    }
    abort_upload(c, bucket, key, upload_id);
    return maybe ? s3_commit_check(c, bucket, key, e, etag) : -1;
}

static uint64_t part_size_for(uint64_t total, uint64_t configured)
{
    uint64_t ps = configured;
    if ((total + ps - 1) / ps > S3_MAX_PARTS)
        ps = (total + S3_MAX_PARTS - 1) / S3_MAX_PARTS;
    return ps;
}

/* What differs between an upload part and a copy part. */
typedef struct mp_source {
    const s3_put_args *put; /* upload: the body */
    const char *copy_src;   /* copy: "/bucket/encoded-key" */
    const char *copy_etag;  /* copy: the source's ETag */
} mp_source;

/* Runs create, parts, complete; aborts on any failure after create. */
static int multipart(s3_client *c, const mp_dest *d, uint64_t total, uint64_t configured_part, const mp_source *src,
                     char etag[S3_ETAG_MAX])
{
    const char *bucket = d->bucket, *key = d->key;
    uint64_t ps = part_size_for(total, configured_part);
    uint32_t n = (uint32_t)((total + ps - 1) / ps);
    int rc = -1;
    char upload_id[1024];
    mp_job job;
    memset(&job, 0, sizeof job);
    s3_wait_create(&job.w);
    mp_part_ctx *ctx = calloc(n, sizeof *ctx);
    char(*ranges)[64] = calloc(n, sizeof *ranges);
    char(*numbers)[16] = calloc(n, sizeof *numbers);
    job.parts = calloc(n, sizeof *job.parts);
    if (!ctx || !ranges || !numbers || !job.parts) {
        shoal_error_set(SHOAL_ERR_NOMEM, "multipart key=%s: out of memory for %u parts", key, n);
        goto done;
    }
    if (create_upload(c, d, upload_id) < 0)
        goto done;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off = (uint64_t)i * ps;
        uint64_t len = total - off < ps ? total - off : ps;
        ctx[i] = (mp_part_ctx){.job = &job, .index = i};
        job.parts[i].number = i + 1;
        snprintf(numbers[i], sizeof numbers[i], "%u", i + 1);
        s3_req_spec s;
        s3_req_spec_init(&s, src->put ? S3_OP_UPLOAD_PART : S3_OP_UPLOAD_PART_COPY, bucket, key);
        s.query[s.n_query++] = (s3_kv){"partNumber", numbers[i]};
        s.query[s.n_query++] = (s3_kv){"uploadId", upload_id};
        if (src->put) {
            if (src->put->data) {
                s.data = (const uint8_t *)src->put->data + off;
            } else {
                s.fd = src->put->fd;
                s.offset = src->put->offset + off;
            }
            s.len = len;
        } else {
            snprintf(ranges[i], sizeof ranges[i], "bytes=%llu-%llu", (unsigned long long)off,
                     (unsigned long long)(off + len - 1));
            s.headers[s.n_headers++] = (s3_kv){"x-amz-copy-source", src->copy_src};
            s.headers[s.n_headers++] = (s3_kv){"x-amz-copy-source-range", ranges[i]};
            s.headers[s.n_headers++] = (s3_kv){"x-amz-copy-source-if-match", src->copy_etag};
            s.expect = S3_XML_COPY_PART;
        }
        s3_wait_add(&job.w, 1);
        if (s3_submit(c, &s, part_done, &ctx[i]) < 0) {
            s3_result fake = {.err = shoal_error_code(), .message = shoal_error_message()};
            s3_wait_note(&job.w, &fake);
            s3_wait_done(&job.w);
            break;
        }
    }
    if (s3_wait_finish(&job.w) < 0) {
        abort_upload(c, bucket, key, upload_id);
        goto done;
    }
    s3_expect e = {.op = "CompleteMultipartUpload", .body = src->put, .meta = d->meta, .n_meta = d->n_meta};
    s3_multipart_etag(job.parts, n, e.etag);
    if (src->copy_etag && s3_etag_is_md5(src->copy_etag))
        snprintf(e.content_md5, sizeof e.content_md5, "%s", src->copy_etag);
    rc = complete_or_settle(c, bucket, key, upload_id, job.parts, n, &e, etag);
done:
    s3_wait_destroy(&job.w);
    free(job.parts);
    free(numbers);
    free(ranges);
    free(ctx);
    return rc;
}

int s3_upload(s3_client *c, const s3_put_args *a, char etag[S3_ETAG_MAX])
{
    const s3_client_config *cfg = s3_client_config_of(c);
    if (a->len <= cfg->multipart_threshold)
        return s3_put(c, a, etag);
    if (s3_client_on_worker(c))
        return shoal_error_set(SHOAL_ERR_INVAL, "upload key=%s: blocking S3 call from a completion callback", a->key);
    if (!a->bucket || !a->key)
        return shoal_error_set(SHOAL_ERR_INVAL, "upload: bucket and key are required");
    mp_source src = {.put = a};
    mp_dest d = {.bucket = a->bucket, .key = a->key, .content_type = a->content_type, .meta = a->meta,
                 .n_meta = a->n_meta};
    return multipart(c, &d, a->len, cfg->part_size, &src, etag);
}

int s3_copy(s3_client *c, const s3_copy_args *a, char etag[S3_ETAG_MAX])
{
    const s3_client_config *cfg = s3_client_config_of(c);
    int rc = -1;
    shoal_buf source;
    shoal_buf_create(&source, 0);
    char q[300];
    const char *qkey = shoal_log_q(q, sizeof q, a->dst_key ? a->dst_key : "");
    s3_object_info info;
    if (a->src_info) {
        info = *a->src_info;
    } else if (s3_head(c, a->src_bucket, a->src_key, &info) < 0) {
        shoal_error_wrap("copy to bucket=%s key=%s", a->dst_bucket, qkey);
        goto done;
    }
    if (s3_copy_source(&source, a->src_bucket, a->src_key) < 0)
        goto done;
    /* The metadata the copy carries: what the caller gives, or the source's. */
    mp_dest d = {.bucket = a->dst_bucket, .key = a->dst_key,
                 .content_type = info.content_type[0] ? info.content_type : NULL,
                 .meta = a->replace_meta ? a->meta : info.meta, .n_meta = a->replace_meta ? a->n_meta : info.n_meta};
    if (info.size > cfg->copy_multipart_threshold) {
        if (!a->replace_meta && info.meta_dropped) {
            shoal_error_set(SHOAL_ERR_UNSUPPORTED,
                            "copy to bucket=%s key=%s: the source has %u metadata entries more than a multipart copy "
                            "can carry over (at most %d, names up to 39 and values up to 87 bytes)",
                            a->dst_bucket, qkey, info.meta_dropped, S3_META_MAX);
            goto done;
        }
        mp_source src = {.copy_src = shoal_buf_str(&source), .copy_etag = info.etag};
        rc = multipart(c, &d, info.size, cfg->copy_part_size, &src, etag);
        goto done;
    }
    s3_req_spec s;
    s3_req_spec_init(&s, S3_OP_COPY, a->dst_bucket, a->dst_key);
    s.headers[s.n_headers++] = (s3_kv){"x-amz-copy-source", shoal_buf_str(&source)};
    s.headers[s.n_headers++] = (s3_kv){"x-amz-copy-source-if-match", info.etag};
    s3_meta_header names[S3_META_MAX];
    if (a->replace_meta) {
        /* REPLACE replaces every header-borne attribute: the content type is carried over. */
        s.headers[s.n_headers++] = (s3_kv){"x-amz-metadata-directive", "REPLACE"};
        if (d.content_type)
            s.headers[s.n_headers++] = (s3_kv){"content-type", d.content_type};
        if (s3_spec_add_meta(&s, names, a->meta, a->n_meta) < 0)
            goto done;
    }
    s.expect = S3_XML_COPY_OBJECT;
    s3_call k = {0};
    if ((rc = s3_call_run(c, &s, &k)) == 0) {
        if (etag)
            memcpy(etag, k.info.etag, S3_ETAG_MAX);
    } else if (k.maybe_applied) {
        s3_expect e = {.op = "CopyObject", .meta = d.meta, .n_meta = d.n_meta};
        if (s3_etag_is_md5(info.etag))
            snprintf(e.content_md5, sizeof e.content_md5, "%s", info.etag);
        rc = s3_commit_check(c, a->dst_bucket, a->dst_key, &e, etag);
    }
done:
    shoal_buf_destroy(&source);
    return rc;
}
