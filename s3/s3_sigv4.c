/*
 * s3_sigv4: AWS Signature Version 4, header and presigned-query forms, as pure functions.
 *
 * Signing is four steps, each a plain string the caller (and the conformance test) can inspect:
 *   1. the canonical request: method, canonical URI, canonical query, canonical headers, the
 *      signed-header list and the payload hash, one per line;
 *   2. the string to sign: algorithm, timestamp, scope (date/region/service/aws4_request) and
 *      the hex SHA-256 of the canonical request;
 *   3. the signing key: HMAC-SHA256 chained over "AWS4"+secret, date, region, service,
 *      "aws4_request";
 *   4. the signature: hex HMAC of the string to sign under that key.
 *
 * Where S3 departs from the generic SigV4 rules, this file follows S3, because S3 is the only
 * service Shoal talks to:
 *   - the path is never normalized ("a//b/../c" is a valid key and must be signed as is), and
 *     each byte of it is URI-encoded exactly once (the generic rule encodes twice). A signer
 *     that normalizes would sign a different key than the one sent, so normalize_path = true is
 *     refused rather than honoured;
 *   - x-amz-content-sha256 is always added to a header-signed request and signed;
 *   - a presigned URL carries "UNSIGNED-PAYLOAD" unless the caller gives the body's hash.
 *
 * Canonical headers: names lower-cased, values trimmed with inner runs of blanks collapsed to
 * one space, entries sorted by name with a stable sort so that repeated headers keep their
 * order when joined by ','. Canonical query: names and values encoded, pairs sorted by encoded
 * name then encoded value; a value-less key becomes "key=".
 *
 * Everything comes in through the arguments (the caller passes the timestamp), nothing is
 * logged, and the signing key is wiped from the stack once used.
 */
#include "s3_sigv4.h"

#include "shoal_array.h"
#include "shoal_bytes.h"
#include "shoal_error.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SIGV4_MAX_EXPIRES 604800u /* seven days: the longest S3 accepts */

/* One canonical header or query pair, owned by the signing call. */
typedef struct sigv4_pair {
    char *name;
    char *value;
    size_t order; /* input position, to keep the sort stable */
} sigv4_pair;

typedef struct sigv4_pairs {
    sigv4_pair *v;
    size_t n, cap;
} sigv4_pairs;

static void sigv4_pairs_destroy(sigv4_pairs *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->v[i].name);
        free(ps->v[i].value);
    }
    free(ps->v);
    memset(ps, 0, sizeof *ps);
}

/* Takes ownership of name and value (frees them on failure). */
static int sigv4_pairs_push(sigv4_pairs *ps, char *name, char *value)
{
    if (!name || !value)
        goto fail_nomem;
    if (SHOAL_ARRAY_GROW(ps->v, ps->n, ps->cap) != 0)
        goto fail_nomem;
    ps->v[ps->n] = (sigv4_pair){.name = name, .value = value, .order = ps->n};
    ps->n++;
    return 0;
fail_nomem:
    free(name);
    free(value);
    return shoal_error_set(SHOAL_ERR_NOMEM, "sigv4: out of memory");
}

static int sigv4_pair_cmp(const void *a, const void *b)
{
    const sigv4_pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c == 0)
        c = (x->order > y->order) - (x->order < y->order);
    return c;
}

/* Query pairs sort by name, then by value (both already encoded). */
static int sigv4_query_cmp(const void *a, const void *b)
{
    const sigv4_pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static bool sigv4_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

int s3_uri_encode(shoal_buf *out, const char *s, size_t len, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    if (shoal_buf_reserve(out, len * 3) != 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (sigv4_unreserved(c) || (keep_slash && c == '/')) {
            out->data[out->len++] = c;
        } else {
            out->data[out->len++] = '%';
            out->data[out->len++] = (uint8_t)hex[c >> 4];
            out->data[out->len++] = (uint8_t)hex[c & 15];
        }
    }
    out->data[out->len] = '\0';
    return 0;
}

/* Encodes s into a fresh heap string (NULL on NOMEM). */
static char *sigv4_encode_dup(const char *s, bool keep_slash)
{
    shoal_buf b = {0};
    if (s3_uri_encode(&b, s, strlen(s), keep_slash) != 0) {
        shoal_buf_destroy(&b);
        return NULL;
    }
    return (char *)shoal_buf_steal(&b, NULL);
}

void s3_sha256_hex(const void *data, size_t len, char out[65])
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256(data, len, md);
    shoal_hex(out, md, sizeof md);
}

void s3_amz_date(int64_t unix_seconds, char out[17])
{
    time_t t = (time_t)unix_seconds;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

void s3_sigv4_result_create(s3_sigv4_result *r) { memset(r, 0, sizeof *r); }

/* Applies fn to every buffer of a result. */
static void sigv4_result_each(s3_sigv4_result *r, void (*fn)(shoal_buf *))
{
    shoal_buf *bufs[] = {&r->canonical_request, &r->string_to_sign, &r->signed_headers, &r->authorization,
                         &r->added_headers, &r->presigned_query, &r->wire_path};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        fn(bufs[i]);
}

void s3_sigv4_result_destroy(s3_sigv4_result *r)
{
    sigv4_result_each(r, shoal_buf_destroy);
    memset(r, 0, sizeof *r);
}

static void sigv4_result_reset(s3_sigv4_result *r)
{
    sigv4_result_each(r, shoal_buf_reset);
    memset(r->signature, 0, sizeof r->signature);
}

static bool sigv4_date_valid(const char *d)
{
    if (!d || strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z')
        return false;
    for (int i = 0; i < 15; i++)
        if (i != 8 && (d[i] < '0' || d[i] > '9'))
            return false;
    return true;
}

static int sigv4_check(const s3_sigv4_request *req, const s3_sigv4_params *p)
{
    if (!req->method || !*req->method || !req->path)
        return shoal_error_set(SHOAL_ERR_INVAL, "sigv4: request without method or path");
    if (*req->path && *req->path != '/')
        return shoal_error_set(SHOAL_ERR_INVAL, "sigv4: path '%s' does not start with '/'", req->path);
    if (!p->access_key || !*p->access_key || !p->secret_key || !p->region || !*p->region ||
        !p->service || !*p->service)
        return shoal_error_set(SHOAL_ERR_INVAL, "sigv4: missing access key, secret, region or service");
    if (!sigv4_date_valid(p->amz_date))
        return shoal_error_set(SHOAL_ERR_INVAL, "sigv4: bad x-amz-date '%s' (want YYYYMMDDTHHMMSSZ)",
                               p->amz_date ? p->amz_date : "(null)");
    if (p->normalize_path)
        return shoal_error_set(SHOAL_ERR_UNSUPPORTED,
                               "sigv4: path normalization refused: S3 signs the path exactly as sent");
    if ((req->n_query && !req->query) || (req->n_headers && !req->headers))
        return shoal_error_set(SHOAL_ERR_INVAL, "sigv4: query or header count without an array");
    return 0;
}

/* Lower-cased name; value trimmed, with runs of blanks inside collapsed to one space. */
static int sigv4_push_header(sigv4_pairs *hs, const char *name, const char *value)
{
    char *n = strdup(name);
    char *v = malloc(strlen(value) + 1);
    if (n && v) {
        for (char *c = n; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        size_t o = 0;
        bool blank = false;
        for (const char *c = value; *c; c++) {
            bool is_blank = *c == ' ' || *c == '\t' || *c == '\r' || *c == '\n';
            if (is_blank) {
                blank = o > 0;
                continue;
            }
            if (blank)
                v[o++] = ' ';
            blank = false;
            v[o++] = *c;
        }
        v[o] = '\0';
    }
    return sigv4_pairs_push(hs, n, v);
}

static bool sigv4_is_signer_header(const char *lower)
{
    return strcmp(lower, "x-amz-date") == 0 || strcmp(lower, "x-amz-content-sha256") == 0 ||
           strcmp(lower, "x-amz-security-token") == 0 || strcmp(lower, "authorization") == 0;
}

/*
 * Collects the canonical headers (sorted, duplicates joined) into `canon` ("name:value\n" each)
 * and the signed-header list into r->signed_headers. `extra` holds the headers the signer adds.
 */
static int sigv4_headers(const s3_sigv4_request *req, const s3_kv *extra, size_t n_extra, shoal_buf *canon,
                         s3_sigv4_result *r)
{
    sigv4_pairs hs = {0};
    bool host = false;
    for (size_t i = 0; i < req->n_headers; i++) {
        if (!req->headers[i].name || !req->headers[i].value)
            goto fail_inval_null;
        if (sigv4_push_header(&hs, req->headers[i].name, req->headers[i].value) != 0)
            goto fail;
        const char *lower = hs.v[hs.n - 1].name;
        if (sigv4_is_signer_header(lower)) {
            shoal_error_set(SHOAL_ERR_INVAL, "sigv4: header '%s' is set by the signer, not the caller", lower);
            goto fail;
        }
        host = host || strcmp(lower, "host") == 0;
    }
    if (!host) {
        shoal_error_set(SHOAL_ERR_INVAL, "sigv4: request has no host header");
        goto fail;
    }
    for (size_t i = 0; i < n_extra; i++)
        if (sigv4_push_header(&hs, extra[i].name, extra[i].value) != 0)
            goto fail;
    qsort(hs.v, hs.n, sizeof *hs.v, sigv4_pair_cmp);
    for (size_t i = 0; i < hs.n; i++) {
        bool same = i > 0 && strcmp(hs.v[i].name, hs.v[i - 1].name) == 0;
        int rc = same ? shoal_buf_appendf(canon, ",%s", hs.v[i].value)
                      : shoal_buf_appendf(canon, "%s%s:%s", i ? "\n" : "", hs.v[i].name, hs.v[i].value);
        if (rc == 0 && !same)
            rc = shoal_buf_appendf(&r->signed_headers, "%s%s", i ? ";" : "", hs.v[i].name);
        if (rc != 0)
            goto fail;
    }
    if (shoal_buf_append_str(canon, "\n") != 0)
        goto fail;
    sigv4_pairs_destroy(&hs);
    return 0;
fail_inval_null:
    shoal_error_set(SHOAL_ERR_INVAL, "sigv4: header %zu has no name or value", hs.n);
fail:
    sigv4_pairs_destroy(&hs);
    return -1;
}

/* Encodes and sorts the request's query plus `extra` into "k=v&k=v" (appended to out). */
static int sigv4_query(const s3_sigv4_request *req, const s3_kv *extra, size_t n_extra, shoal_buf *out)
{
    sigv4_pairs qs = {0};
    for (size_t i = 0; i < req->n_query + n_extra; i++) {
        const s3_kv *kv = i < req->n_query ? &req->query[i] : &extra[i - req->n_query];
        if (!kv->name) {
            shoal_error_set(SHOAL_ERR_INVAL, "sigv4: query parameter %zu has no name", i);
            goto fail;
        }
        if (sigv4_pairs_push(&qs, sigv4_encode_dup(kv->name, false),
                             sigv4_encode_dup(kv->value ? kv->value : "", false)) != 0)
            goto fail;
    }
    if (qs.n > 1) /* qsort wants a non-NULL array even for zero elements */
        qsort(qs.v, qs.n, sizeof *qs.v, sigv4_query_cmp);
    for (size_t i = 0; i < qs.n; i++)
        if (shoal_buf_appendf(out, "%s%s=%s", i ? "&" : "", qs.v[i].name, qs.v[i].value) != 0)
            goto fail;
    sigv4_pairs_destroy(&qs);
    return 0;
fail:
    sigv4_pairs_destroy(&qs);
    return -1;
}

static int sigv4_scope(const s3_sigv4_params *p, shoal_buf *out)
{
    return shoal_buf_appendf(out, "%.8s/%s/%s/aws4_request", p->amz_date, p->region, p->service);
}

/* Steps 2 to 4: the string to sign from r->canonical_request, then r->signature. */
static int sigv4_finish(const s3_sigv4_params *p, s3_sigv4_result *r)
{
    char creq_hash[65];
    s3_sha256_hex(r->canonical_request.data, r->canonical_request.len, creq_hash);
    if (shoal_buf_appendf(&r->string_to_sign, SIGV4_ALGORITHM "\n%s\n", p->amz_date) != 0 ||
        sigv4_scope(p, &r->string_to_sign) != 0 ||
        shoal_buf_appendf(&r->string_to_sign, "\n%s", creq_hash) != 0)
        return -1;

    uint8_t key[EVP_MAX_MD_SIZE], next[EVP_MAX_MD_SIZE];
    unsigned int key_len = 0;
    char secret[5 + 256];
    int n = snprintf(secret, sizeof secret, "AWS4%s", p->secret_key);
    if (n < 0 || (size_t)n >= sizeof secret) {
        OPENSSL_cleanse(secret, sizeof secret);
        return shoal_error_set(SHOAL_ERR_INVAL, "sigv4: secret key longer than 256 bytes");
    }
    char date[9];
    memcpy(date, p->amz_date, 8);
    date[8] = '\0';
    const char *chain[] = {date, p->region, p->service, "aws4_request"};
    HMAC(EVP_sha256(), secret, n, (const uint8_t *)chain[0], strlen(chain[0]), key, &key_len);
    for (size_t i = 1; i < sizeof chain / sizeof *chain; i++) {
        HMAC(EVP_sha256(), key, (int)key_len, (const uint8_t *)chain[i], strlen(chain[i]), next, &key_len);
        memcpy(key, next, key_len);
    }
    uint8_t sig[EVP_MAX_MD_SIZE];
    unsigned int sig_len = 0;
    HMAC(EVP_sha256(), key, (int)key_len, r->string_to_sign.data, r->string_to_sign.len, sig, &sig_len);
    shoal_hex(r->signature, sig, sig_len);
    OPENSSL_cleanse(secret, sizeof secret);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(next, sizeof next);
    return 0;
}

/* Step 1 minus the headers and query, which the two forms build differently. */
static int sigv4_canonical(const s3_sigv4_request *req, const shoal_buf *query, const shoal_buf *headers,
                           const char *payload, s3_sigv4_result *r)
{
    const char *path = *req->path ? req->path : "/";
    if (s3_uri_encode(&r->wire_path, path, strlen(path), true) != 0)
        return -1;
    return shoal_buf_appendf(&r->canonical_request, "%s\n%s\n%s\n%s\n%s\n%s", req->method,
                             shoal_buf_str(&r->wire_path), shoal_buf_str(query), shoal_buf_str(headers),
                             shoal_buf_str(&r->signed_headers), payload);
}

int s3_sigv4_sign_header(const s3_sigv4_request *req, const s3_sigv4_params *p, s3_sigv4_result *r)
{
    shoal_buf query = {0}, headers = {0};
    sigv4_result_reset(r);
    if (sigv4_check(req, p) != 0)
        goto fail;
    const char *payload = req->payload_sha256 ? req->payload_sha256 : SIGV4_EMPTY_SHA256;
    bool token = p->session_token && *p->session_token;
    s3_kv extra[3];
    size_t n_extra = 0;
    extra[n_extra++] = (s3_kv){"x-amz-date", p->amz_date};
    if (p->s3)
        extra[n_extra++] = (s3_kv){"x-amz-content-sha256", payload};
    if (token && !p->omit_session_token)
        extra[n_extra++] = (s3_kv){"x-amz-security-token", p->session_token};
    if (sigv4_query(req, NULL, 0, &query) != 0 || sigv4_headers(req, extra, n_extra, &headers, r) != 0 ||
        sigv4_canonical(req, &query, &headers, payload, r) != 0 || sigv4_finish(p, r) != 0)
        goto fail;

    if (shoal_buf_appendf(&r->authorization, SIGV4_ALGORITHM " Credential=%s/", p->access_key) != 0 ||
        sigv4_scope(p, &r->authorization) != 0 ||
        shoal_buf_appendf(&r->authorization, ", SignedHeaders=%s, Signature=%s",
                          shoal_buf_str(&r->signed_headers), r->signature) != 0)
        goto fail;
    if (shoal_buf_appendf(&r->added_headers, "x-amz-date: %s", p->amz_date) != 0 ||
        (p->s3 && shoal_buf_appendf(&r->added_headers, "\nx-amz-content-sha256: %s", payload) != 0) ||
        (token && shoal_buf_appendf(&r->added_headers, "\nx-amz-security-token: %s", p->session_token) != 0))
        goto fail;
    shoal_buf_destroy(&query);
    shoal_buf_destroy(&headers);
    return 0;
fail:
    shoal_buf_destroy(&query);
    shoal_buf_destroy(&headers);
    return -1;
}

int s3_sigv4_presign(const s3_sigv4_request *req, const s3_sigv4_params *p, s3_sigv4_result *r)
{
    shoal_buf query = {0}, headers = {0}, credential = {0};
    char expires[16];
    sigv4_result_reset(r);
    if (sigv4_check(req, p) != 0)
        goto fail;
    if (p->expires == 0 || p->expires > SIGV4_MAX_EXPIRES) {
        shoal_error_set(SHOAL_ERR_INVAL, "sigv4: presign expiry %u s outside 1..%u", p->expires,
                        SIGV4_MAX_EXPIRES);
        goto fail;
    }
    const char *payload = req->payload_sha256 ? req->payload_sha256
                          : p->s3             ? "UNSIGNED-PAYLOAD"
                                              : SIGV4_EMPTY_SHA256;
    bool token = p->session_token && *p->session_token;
    snprintf(expires, sizeof expires, "%u", p->expires);
    /* The signed-header list goes into the query, so the headers come first. */
    if (sigv4_headers(req, NULL, 0, &headers, r) != 0 ||
        shoal_buf_appendf(&credential, "%s/", p->access_key) != 0 || sigv4_scope(p, &credential) != 0)
        goto fail;
    s3_kv extra[6];
    size_t n_extra = 0;
    extra[n_extra++] = (s3_kv){"X-Amz-Algorithm", SIGV4_ALGORITHM};
    extra[n_extra++] = (s3_kv){"X-Amz-Credential", shoal_buf_str(&credential)};
    extra[n_extra++] = (s3_kv){"X-Amz-Date", p->amz_date};
    extra[n_extra++] = (s3_kv){"X-Amz-Expires", expires};
    extra[n_extra++] = (s3_kv){"X-Amz-SignedHeaders", shoal_buf_str(&r->signed_headers)};
    if (token && !p->omit_session_token)
        extra[n_extra++] = (s3_kv){"X-Amz-Security-Token", p->session_token};
    if (sigv4_query(req, extra, n_extra, &query) != 0 || sigv4_canonical(req, &query, &headers, payload, r) != 0 ||
        sigv4_finish(p, r) != 0)
        goto fail;

    if (shoal_buf_append(&r->presigned_query, query.data, query.len) != 0)
        goto fail;
    if (token && p->omit_session_token) {
        if (shoal_buf_append_str(&r->presigned_query, "&X-Amz-Security-Token=") != 0 ||
            s3_uri_encode(&r->presigned_query, p->session_token, strlen(p->session_token), false) != 0)
            goto fail;
    }
    if (shoal_buf_appendf(&r->presigned_query, "&X-Amz-Signature=%s", r->signature) != 0)
        goto fail;
    shoal_buf_destroy(&query);
    shoal_buf_destroy(&headers);
    shoal_buf_destroy(&credential);
    return 0;
fail:
    shoal_buf_destroy(&query);
    shoal_buf_destroy(&headers);
    shoal_buf_destroy(&credential);
    return -1;
}
