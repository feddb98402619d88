/*
 * s3_commit: telling whether a write whose outcome is unknown took effect.
 *
 * A PutObject, CompleteMultipartUpload or CopyObject whose answer was lost, came after the
 * client's timeout, or was a 5xx may still have been committed by S3. Retrying does not settle
 * it: a retried completion of an upload S3 already committed answers 404 NoSuchUpload (or a 5xx),
 * and reporting that as a failure tells the caller its object is not there when it is (a caller
 * that then falls back to something else, or aborts, corrupts what it meant to save). So before
 * such a write reports failure it asks S3 what the key holds, with one HeadObject, and compares
 * the ETag with the one this write must have produced:
 *   - a single PUT: the hex MD5 of the body;
 *   - a multipart upload or copy: the MD5 of the concatenated binary part MD5s, then "-N";
 *   - a CopyObject: the source's ETag when it is a plain MD5 (the copy has the same content).
 * The user metadata must be the write's too: a copy of a key onto itself that replaces its
 * metadata (how attributes change) keeps the ETag, so only the metadata shows whether it landed.
 * A match means the key holds exactly these bytes and metadata: the write is reported done and
 * one line is logged. Some S3-compatible servers give a multipart object the plain MD5 of its whole content;
 * when the HEAD shows a plain MD5 that is not the expected ETag and the body is at hand, its MD5
 * is computed (reading it once more, only on this rare path) and compared too.
 *
 * Where S3's ETags are not content MD5s (SSE-KMS, SSE-C, some S3-compatible servers) nothing
 * matches and the write's own failure is reported: the check never turns a failure into a
 * success it cannot prove, it only recognizes what it can.
 */
#include "s3_request.h"

#include "shoal_bytes.h"
#include "shoal_log.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int s3_error_append(const char *fmt, ...)
{
    shoal_err code = shoal_error_code();
    char msg[1024], note[512];
    snprintf(msg, sizeof msg, "%s", shoal_error_message());
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(note, sizeof note, fmt, ap);
    va_end(ap);
    return shoal_error_set(code, "%s%s", msg, note);
}

int s3_body_digest(const EVP_MD *md, const void *data, int fd, uint64_t off, uint64_t len, const char *what,
                   uint8_t out[EVP_MAX_MD_SIZE], unsigned *out_len)
{
    int rc = -1;
    uint8_t *chunk = NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, md, NULL) != 1) {
        shoal_error_set(SHOAL_ERR_NOMEM, "%s: cannot start a digest of the body", what);
        goto done;
    }
    if (data || fd < 0) {
        EVP_DigestUpdate(ctx, data ? data : "", data ? (size_t)len : 0);
    } else {
        if (!(chunk = malloc(1u << 20))) {
            shoal_error_set(SHOAL_ERR_NOMEM, "%s: cannot digest the body", what);
            goto done;
        }
        for (uint64_t got = 0; got < len;) {
            size_t want = len - got < (1u << 20) ? (size_t)(len - got) : (1u << 20);
            ssize_t n = pread(fd, chunk, want, (off_t)(off + got));
            if (n <= 0) {
                if (n == 0)
                    shoal_error_set(SHOAL_ERR_IO, "%s: the file ends %llu bytes before the body's end", what,
                                    (unsigned long long)(len - got));
                else
                    shoal_error_errno(errno, "%s: pread of the body", what);
                goto done;
            }
            EVP_DigestUpdate(ctx, chunk, (size_t)n);
            got += (uint64_t)n;
        }
    }
    EVP_DigestFinal_ex(ctx, out, out_len);
    rc = 0;
done:
    EVP_MD_CTX_free(ctx);
    free(chunk);
    return rc;
}

/* The hex inside an ETag: without its quotes. */
static const char *etag_hex(const char *etag, size_t *len)
{
    size_t n = strlen(etag);
    if (n >= 2 && etag[0] == '"' && etag[n - 1] == '"') {
        *len = n - 2;
        return etag + 1;
    }
    *len = n;
    return etag;
}

/* Equal ETags, quoted or not; an empty one equals nothing. */
static bool etag_eq(const char *a, const char *b)
{
    size_t la, lb;
    const char *ha = etag_hex(a, &la), *hb = etag_hex(b, &lb);
    return la && la == lb && strncasecmp(ha, hb, la) == 0;
}

bool s3_etag_is_md5(const char *etag)
{
    size_t n;
    const char *h = etag_hex(etag, &n);
    if (n != 32)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)h[i]))
            return false;
    return true;
}

void s3_multipart_etag(const s3_part_etag *parts, uint32_t n, char out[S3_ETAG_MAX])
{
    out[0] = '\0';
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_md5(), NULL) != 1)
        goto done;
    for (uint32_t i = 0; i < n; i++) {
        if (!s3_etag_is_md5(parts[i].etag))
            goto done;
        size_t len;
        const char *h = etag_hex(parts[i].etag, &len);
        uint8_t bin[16];
        shoal_unhex_ci(bin, h, sizeof bin); /* cannot fail: s3_etag_is_md5 checked every digit */
        EVP_DigestUpdate(ctx, bin, sizeof bin);
    }
    uint8_t dg[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    EVP_DigestFinal_ex(ctx, dg, &dl);
    shoal_hex(hex, dg, dl);
    snprintf(out, S3_ETAG_MAX, "\"%s-%u\"", hex, n);
done:
    EVP_MD_CTX_free(ctx);
}

/* The quoted hex MD5 of a write's body into out; -1 with the error set when it cannot be read. */
static int body_md5(const char *key, const s3_put_args *a, char out[S3_ETAG_MAX])
{
    char what[512];
    char q[300];
    snprintf(what, sizeof what, "commit check key=%s", shoal_log_q(q, sizeof q, key));
    uint8_t dg[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    if (s3_body_digest(EVP_md5(), a->data, a->data ? -1 : a->fd, a->offset, a->len, what, dg, &dl) < 0)
        return -1;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    shoal_hex(hex, dg, dl);
    snprintf(out, S3_ETAG_MAX, "\"%s\"", hex);
    return 0;
}

/* Whether the object carries exactly the metadata e expects (in any order). */
static bool same_meta(const s3_expect *e, const s3_object_info *info)
{
    if (info->n_meta != e->n_meta)
        return false;
    for (unsigned i = 0; i < e->n_meta; i++) {
        bool found = false;
        for (unsigned j = 0; j < info->n_meta && !found; j++)
            found = strcmp(e->meta[i].name, info->meta[j].name) == 0 && strcmp(e->meta[i].value, info->meta[j].value) == 0;
        if (!found)
            return false;
    }
    return true;
}

/* Whether the object HEAD found is what e describes; `seen` says what was found when not. */
static bool is_ours(const char *key, const s3_expect *e, const s3_object_info *info, char *seen, size_t cap)
{
    if (!same_meta(e, info)) {
        /* Same bytes with other metadata is not this write: a metadata change by a copy onto
         * the same key keeps the ETag, so the ETag alone cannot tell. */
        snprintf(seen, cap, "the key holds an object (ETag %s) with other metadata than this write's", info->etag);
        return false;
    }
    if (etag_eq(info->etag, e->etag) || etag_eq(info->etag, e->content_md5))
        return true;
    if (e->body && !e->content_md5[0] && s3_etag_is_md5(info->etag)) {
        char md5[S3_ETAG_MAX];
        if (body_md5(key, e->body, md5) < 0) {
            snprintf(seen, cap, "the key holds ETag %s; reading the body to compare: %s", info->etag,
                     shoal_error_message());
            return false;
        }
        if (etag_eq(info->etag, md5))
            return true;
    }
    snprintf(seen, cap, "the key holds another object (ETag %s)", info->etag);
    return false;
}

int s3_commit_check(s3_client *c, const char *bucket, const char *key, const s3_expect *e, char etag[S3_ETAG_MAX])
{
    shoal_err code = shoal_error_code();
    char failure[1024], seen[600];
    snprintf(failure, sizeof failure, "%s", shoal_error_message());
    if (!e->etag[0] && !e->content_md5[0] && !e->body) {
        snprintf(seen, sizeof seen, "no ETag known to recognize it by, so it may or may not be in S3");
        goto not_ours;
    }
    s3_object_info info;
    if (s3_head(c, bucket, key, &info) < 0) {
        snprintf(seen, sizeof seen, "%s",
                 shoal_error_code() == SHOAL_ERR_S3_NO_SUCH_KEY ? "no object under the key" : shoal_error_message());
        goto not_ours;
    }
    if (!is_ours(key, e, &info, seen, sizeof seen))
        goto not_ours;
    char q[300], qe[S3_ETAG_MAX + 16];
    LOG_WARN("s3", "commit_confirmed", "op=%s bucket=%s key=%s etag=%s error=%s", e->op, bucket,
             shoal_log_q(q, sizeof q, key), shoal_log_q(qe, sizeof qe, info.etag), shoal_error_name(code));
    if (etag)
        memcpy(etag, info.etag, S3_ETAG_MAX);
    shoal_error_clear();
    return 0;
not_ours:
    return shoal_error_set(code, "%s; checked with a HEAD: %s", failure, seen);
}
