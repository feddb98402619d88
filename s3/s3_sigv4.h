/*
 * s3_sigv4: AWS Signature Version 4 as pure functions: a request description in, the canonical
 * request, the string to sign, the signature and the header or query to send out. No clock, no
 * I/O: the caller passes the timestamp. Tested case by case against the AWS SigV4 suite and the
 * S3 reference examples (tests/s3/test_s3_sigv4.c, data in tests/s3/sigv4-vectors).
 *
 * S3 rules (s3_sigv4_params.s3 = true): the path is never normalized, each path segment is
 * URI-encoded exactly once, and x-amz-content-sha256 is always added and signed.
 */
#ifndef SHOAL_S3_SIGV4_H
#define SHOAL_S3_SIGV4_H

#include "shoal_buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One header or query parameter: name and value as plain (decoded) bytes. */
typedef struct s3_kv {
    const char *name;
    const char *value; /* "" for a value-less query key such as "?lifecycle" */
} s3_kv;

typedef struct s3_sigv4_request {
    const char *method;  /* "GET", "PUT", ... */
    const char *path;    /* decoded path, e.g. "/bucket/my key.txt"; encoded by the signer */
    const s3_kv *query;  /* decoded query parameters, any order; may be NULL when n_query == 0 */
    size_t n_query;
    const s3_kv *headers; /* must include "host"; names in any case; duplicates are joined by ',' */
    size_t n_headers;
    /* Lower-case hex SHA-256 of the body, or "UNSIGNED-PAYLOAD"; NULL means the empty body. */
    const char *payload_sha256;
} s3_sigv4_request;

typedef struct s3_sigv4_params {
    const char *access_key;
    const char *secret_key;
    const char *session_token; /* NULL when none */
    const char *region;
    const char *service;       /* "s3" */
    const char *amz_date;      /* "YYYYMMDDTHHMMSSZ" */
    bool s3;                   /* S3 rules (above); false only for the generic conformance cases */
    bool normalize_path;       /* must stay false: S3 signs the path as sent; true is refused
                                * with SHOAL_ERR_UNSUPPORTED (see s3_sigv4.c) */
    bool omit_session_token;   /* presign: sign without the token and append it afterwards */
    uint32_t expires;          /* presign: X-Amz-Expires in seconds */
} s3_sigv4_params;

typedef struct s3_sigv4_result {
    shoal_buf canonical_request;
    shoal_buf string_to_sign;
    char signature[65];         /* lower-case hex */
    shoal_buf signed_headers;   /* "host;x-amz-date;..." */
    shoal_buf authorization;    /* header signing: the Authorization header value */
    /* Headers the signer adds and the caller must send (x-amz-date, x-amz-content-sha256 when
     * s3, x-amz-security-token), as "name: value" lines separated by "\n". */
    shoal_buf added_headers;
    /* Presigning: the full encoded query string (without '?') including X-Amz-Signature. */
    shoal_buf presigned_query;
    /* The encoded path to send on the wire (same encoding as the canonical URI when s3). */
    shoal_buf wire_path;
} s3_sigv4_result;

void s3_sigv4_result_create(s3_sigv4_result *r);
void s3_sigv4_result_destroy(s3_sigv4_result *r);

/* Signs with an Authorization header. Fills every field of *r but presigned_query (r is reset
 * first, so one result can be reused). -1 with SHOAL_ERR_INVAL on a malformed input (no host
 * header, bad date, a caller-set x-amz-date, x-amz-content-sha256, x-amz-security-token or
 * Authorization header: the signer owns those). */
int s3_sigv4_sign_header(const s3_sigv4_request *req, const s3_sigv4_params *p, s3_sigv4_result *r);

/* Presigns into a query string (X-Amz-Algorithm, -Credential, -Date, -Expires, -SignedHeaders,
 * -Security-Token, -Signature). The payload hash is "UNSIGNED-PAYLOAD" for s3 unless given.
 * Fills canonical_request, string_to_sign, signature, signed_headers, presigned_query and
 * wire_path. -1 as s3_sigv4_sign_header, and SHOAL_ERR_INVAL when expires is not 1..604800. */
int s3_sigv4_presign(const s3_sigv4_request *req, const s3_sigv4_params *p, s3_sigv4_result *r);

/* RFC 3986 encoding as SigV4 wants it: unreserved bytes (A-Z a-z 0-9 - _ . ~) stay, everything
 * else becomes %XX (upper-case hex); '/' stays when keep_slash. Appends to out. */
int s3_uri_encode(shoal_buf *out, const char *s, size_t len, bool keep_slash);

/* Lower-case hex SHA-256 of data into out (65 bytes). */
void s3_sha256_hex(const void *data, size_t len, char out[65]);

/* "YYYYMMDDTHHMMSSZ" of a Unix time in seconds, into out (17 bytes). */
void s3_amz_date(int64_t unix_seconds, char out[17]);

#endif
