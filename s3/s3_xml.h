/*
 * s3_xml: the S3 response documents the client reads, and the one request document it writes,
 * as pure functions over bytes (no I/O, no clock).
 *
 * Parsing is defensive because the bytes come from the network: a document over
 * S3_XML_MAX_DOC bytes, any DOCTYPE or entity declaration, a text field over its bound (a <Key>
 * over S3_XML_MAX_KEY bytes, anything else over S3_XML_MAX_TEXT), malformed XML or the wrong
 * root element fails with SHOAL_ERR_S3_XML and a message naming the document and the reason.
 * libxml2 runs without network access and without entity substitution.
 */
#ifndef SHOAL_S3_XML_H
#define SHOAL_S3_XML_H

#include "shoal_buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define S3_XML_MAX_DOC (8u << 20) /* bytes of one response document */
#define S3_XML_MAX_KEY 1024       /* bytes of a decoded key or prefix (S3's own limit) */
#define S3_XML_MAX_TEXT 4096      /* bytes of any other text field */
#define S3_ETAG_MAX 256           /* bytes of an ETag, quotes included, plus NUL */

/* The fields of an S3 <Error> document, each truncated to its array. */
typedef struct s3_xml_error {
    char code[64];
    char message[512];
    char request_id[128];
} s3_xml_error;

/* One object of a listing. The key is heap memory owned by the page, NUL-terminated; key_len
 * counts its bytes, so a key that decodes to bytes holding a NUL is visible as
 * strlen(key) != key_len and the caller can skip it without losing the page. */
typedef struct s3_list_object {
    char *key;
    size_t key_len;
    uint64_t size;
    char etag[S3_ETAG_MAX];
    int64_t last_modified; /* Unix seconds; 0 when absent */
} s3_list_object;

/* One page of ListObjectsV2, keys and prefixes already URL-decoded when the server used
 * encoding-type=url. Caller-owned: s3_list_page_create/s3_list_page_destroy. */
typedef struct s3_list_page {
    s3_list_object *objects;
    size_t n_objects;
    char **prefixes; /* CommonPrefixes, in server order */
    size_t n_prefixes;
    bool truncated;
    char *next_token; /* NextContinuationToken; NULL when none */
} s3_list_page;

void s3_list_page_create(s3_list_page *p);
/* Frees everything the page holds; the page is empty afterwards. Accepts a zeroed page. */
void s3_list_page_destroy(s3_list_page *p);

/* Parses a ListBucketResult (V2) into *out (which must be created and empty). -1 with
 * SHOAL_ERR_S3_XML on anything malformed or over a bound; *out is then empty again. */
int s3_xml_parse_list(const void *doc, size_t len, s3_list_page *out);

/* Parses an <Error> document. -1 with SHOAL_ERR_S3_XML when it is not one. */
int s3_xml_parse_error(const void *doc, size_t len, s3_xml_error *out);

/* The root elements of the small result documents. */
typedef enum s3_xml_result_kind {
    S3_XML_ERROR = 1,                  /* <Error> (S3 may send it with a 200 status) */
    S3_XML_INITIATE_MULTIPART,         /* <InitiateMultipartUploadResult> */
    S3_XML_COMPLETE_MULTIPART,         /* <CompleteMultipartUploadResult> */
    S3_XML_COPY_OBJECT,                /* <CopyObjectResult> */
    S3_XML_COPY_PART,                  /* <CopyPartResult> */
} s3_xml_result_kind;

typedef struct s3_xml_result {
    s3_xml_result_kind kind;
    s3_xml_error error;        /* kind == S3_XML_ERROR */
    char etag[S3_ETAG_MAX];    /* complete, copy */
    char upload_id[1024];      /* initiate */
    int64_t last_modified;     /* copy; 0 when absent */
} s3_xml_result;

/* Parses a document that must have the root `expect` or be an <Error>: returns 0 and sets
 * out->kind to whichever it was (so a 200 answer with an <Error> body is seen by the caller).
 * -1 with SHOAL_ERR_S3_XML on a malformed document, another root, or a missing required field
 * (UploadId, ETag). */
int s3_xml_parse_result(const void *doc, size_t len, s3_xml_result_kind expect, s3_xml_result *out);

/* One part of a multipart upload, for the CompleteMultipartUpload body. */
typedef struct s3_part_etag {
    uint32_t number; /* 1..10000, ascending */
    char etag[S3_ETAG_MAX];
} s3_part_etag;

/* Appends a CompleteMultipartUpload document listing `n` parts (escaped) to out. -1 on NOMEM or
 * SHOAL_ERR_INVAL when the part numbers are not strictly ascending within 1..10000. */
int s3_xml_build_complete(shoal_buf *out, const s3_part_etag *parts, size_t n);

/* Decodes %XX escapes of `len` bytes of s into out (appended); '+' stays '+' as S3 encodes
 * spaces as %20. -1 with SHOAL_ERR_S3_XML on a malformed escape. */
int s3_url_decode(shoal_buf *out, const char *s, size_t len);

/* "2009-10-12T17:50:30.000Z" to Unix seconds; -1 when malformed. */
int s3_parse_iso8601(const char *s, int64_t *out);

#endif
