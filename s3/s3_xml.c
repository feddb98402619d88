/*
 * s3_xml: reading S3's XML answers safely, and writing CompleteMultipartUpload.
 *
 * The threat is a hostile or broken server (or a man in the middle on plain HTTP): a document
 * that is huge, that declares entities to expand exponentially (billion laughs), that points an
 * external entity at a local file or URL, or that is just truncated. Defences, in order:
 *   1. a byte bound on the whole document (S3_XML_MAX_DOC), checked before parsing;
 *   2. any "<!DOCTYPE" or "<!ENTITY" in the bytes is refused before libxml2 sees them: S3 never
 *      sends a DTD, so refusing is cheaper and surer than parsing one carefully;
 *   3. libxml2 runs with XML_PARSE_NONET and without XML_PARSE_NOENT / XML_PARSE_DTDLOAD /
 *      XML_PARSE_HUGE, so it would neither fetch nor substitute even if (2) missed something,
 *      and a document that still carries a DTD after parsing is refused;
 *   4. every text field read has its own bound (keys S3_XML_MAX_KEY, others S3_XML_MAX_TEXT).
 * libxml2 reports errors through a per-parser context, so nothing is printed and the message
 * goes into the shoal_error. The tree walk is by local name (S3 puts its elements in the
 * 2006-03-01 namespace; some servers omit it) and ignores elements it does not know.
 *
 * The codecs around the documents are the libraries' own: libxml2 escapes the text we write
 * (xmlEncodeSpecialChars), libcurl decodes the %-escapes of a listing with EncodingType=url
 * (curl_easy_unescape), after a check that every '%' starts a well-formed escape, since curl
 * would pass a broken one through unchanged.
 */
#include "s3_xml.h"

#include "shoal_array.h"
#include "shoal_bytes.h"
#include "shoal_error.h"

#include <curl/curl.h>
#include <libxml/entities.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;
static void xml_init_once(void) { xmlInitParser(); }

/* Parses doc into a tree whose root element is returned through *root; NULL with
 * SHOAL_ERR_S3_XML when the document breaks any rule of the file comment. */
static xmlDocPtr xml_open(const void *doc, size_t len, const char *what, xmlNodePtr *root)
{
    pthread_once(&xml_once, xml_init_once);
    if (len == 0) {
        shoal_error_set(SHOAL_ERR_S3_XML, "%s: empty document", what);
        return NULL;
    }
    if (len > S3_XML_MAX_DOC) {
        shoal_error_set(SHOAL_ERR_S3_XML, "%s: document of %zu bytes is over the %u-byte bound", what,
                        len, S3_XML_MAX_DOC);
        return NULL;
    }
    if (memmem(doc, len, "<!DOCTYPE", 9) || memmem(doc, len, "<!ENTITY", 8)) {
        shoal_error_set(SHOAL_ERR_S3_XML, "%s: document declares a DTD or entities, refused", what);
        return NULL;
    }
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (!ctxt) {
        shoal_error_set(SHOAL_ERR_NOMEM, "%s: cannot allocate an XML parser", what);
        return NULL;
    }
    xmlDocPtr d = xmlCtxtReadMemory(ctxt, doc, (int)len, NULL, NULL,
                                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!d || !ctxt->wellFormed) {
        const xmlError *e = xmlCtxtGetLastError(ctxt);
        char msg[256] = "not well-formed";
        if (e && e->message) {
            snprintf(msg, sizeof msg, "%s", e->message);
            size_t ml = strlen(msg);
            while (ml && (msg[ml - 1] == '\n' || msg[ml - 1] == ' '))
                msg[--ml] = '\0';
        }
        shoal_error_set(SHOAL_ERR_S3_XML, "%s: malformed XML at line %d: %s", what, e ? e->line : 0, msg);
        goto fail;
    }
    if (d->intSubset || d->extSubset) {
        shoal_error_set(SHOAL_ERR_S3_XML, "%s: document carries a DTD, refused", what);
        goto fail;
    }
    *root = xmlDocGetRootElement(d);
    if (!*root) {
        shoal_error_set(SHOAL_ERR_S3_XML, "%s: no root element", what);
        goto fail;
    }
    xmlFreeParserCtxt(ctxt);
    return d;
fail:
    xmlFreeDoc(d);
    xmlFreeParserCtxt(ctxt);
    return NULL;
}

static bool xml_is(xmlNodePtr n, const char *name)
{
    return n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

/* Appends the text of element n to out, refusing more than `bound` bytes or any child element
 * or entity reference (S3's leaf elements hold text only). */
static int xml_text(xmlNodePtr n, size_t bound, const char *what, shoal_buf *out)
{
    shoal_buf_reset(out);
    for (xmlNodePtr c = n->children; c; c = c->next) {
        if (c->type != XML_TEXT_NODE && c->type != XML_CDATA_SECTION_NODE)
            return shoal_error_set(SHOAL_ERR_S3_XML, "%s: <%s> holds markup, expected text", what,
                                   (const char *)n->name);
        size_t l = c->content ? strlen((const char *)c->content) : 0;
        if (out->len + l > bound)
            return shoal_error_set(SHOAL_ERR_S3_XML, "%s: <%s> is over the %zu-byte bound", what,
                                   (const char *)n->name, bound);
        if (shoal_buf_append(out, c->content, l) < 0)
            return -1;
    }
    return 0;
}

/* Copies the text of n into a fixed array, truncating (for diagnostic fields only). */
static int xml_text_into(xmlNodePtr n, const char *what, shoal_buf *tmp, char *dst, size_t cap)
{
    if (xml_text(n, S3_XML_MAX_TEXT, what, tmp) < 0)
        return -1;
    snprintf(dst, cap, "%s", shoal_buf_str(tmp));
    return 0;
}

/* Like xml_text_into but a value that does not fit is an error (identifiers must be exact). */
static int xml_text_exact(xmlNodePtr n, const char *what, shoal_buf *tmp, char *dst, size_t cap)
{
    if (xml_text(n, cap - 1, what, tmp) < 0)
        return -1;
    memcpy(dst, shoal_buf_str(tmp), tmp->len + 1);
    return 0;
}

static int xml_u64(xmlNodePtr n, const char *what, shoal_buf *tmp, uint64_t *out)
{
    if (xml_text(n, 32, what, tmp) < 0)
        return -1;
    const char *s = shoal_buf_str(tmp);
    char *end = NULL;
    if (!*s || *s == '-')
        goto bad;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end)
        goto bad;
    *out = v;
    return 0;
bad:
    return shoal_error_set(SHOAL_ERR_S3_XML, "%s: <%s> is not a number: '%s'", what, (const char *)n->name, s);
}

int s3_parse_iso8601(const char *s, int64_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return -1;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
        return -1;
    *out = (int64_t)timegm(&tm);
    return 0;
}

int s3_url_decode(shoal_buf *out, const char *s, size_t len)
{
    /* curl decodes; it passes a malformed escape through as it stands, which S3 never sends, so
     * one is refused here first. */
    for (size_t i = 0; i < len; i++) {
        uint8_t b;
        if (s[i] == '%' && (len - i < 3 || shoal_unhex_ci(&b, s + i + 1, 1) != 0))
            return shoal_error_set(SHOAL_ERR_S3_XML, "malformed %%-escape in '%.*s'", (int)(len > 64 ? 64 : len), s);
    }
    if (len == 0)
        return 0; /* curl would take a length of 0 for "up to the NUL" */
    if (len > INT_MAX)
        return shoal_error_set(SHOAL_ERR_S3_XML, "%%-encoded text of %zu bytes", len);
    int n = 0;
    char *dec = curl_easy_unescape(NULL, s, (int)len, &n);
    if (!dec)
        return shoal_error_set(SHOAL_ERR_NOMEM, "out of memory decoding %%-escapes");
    int rc = shoal_buf_append(out, dec, (size_t)n);
    curl_free(dec);
    return rc;
}

/* A key or prefix: bounded before and after decoding (an encoded byte takes up to 3). */
static char *xml_key(xmlNodePtr n, bool url, const char *what, shoal_buf *tmp, size_t *len_out)
{
    char *key = NULL;
    shoal_buf dec;
    shoal_buf_create(&dec, 0);
    if (xml_text(n, url ? 3 * S3_XML_MAX_KEY : S3_XML_MAX_KEY, what, tmp) < 0)
        goto done;
    if (url) {
        if (s3_url_decode(&dec, shoal_buf_str(tmp), tmp->len) < 0)
            goto done;
    } else if (shoal_buf_append(&dec, tmp->data, tmp->len) < 0) {
        goto done;
    }
    if (dec.len > S3_XML_MAX_KEY) {
        shoal_error_set(SHOAL_ERR_S3_XML, "%s: <%s> is over the %d-byte bound", what, (const char *)n->name,
                        S3_XML_MAX_KEY);
        goto done;
    }
    *len_out = dec.len;
    key = malloc(dec.len + 1);
    if (!key) {
        shoal_error_set(SHOAL_ERR_NOMEM, "%s: out of memory", what);
        goto done;
    }
    memcpy(key, shoal_buf_str(&dec), dec.len + 1);
done:
    shoal_buf_destroy(&dec);
    return key;
}

void s3_list_page_create(s3_list_page *p) { memset(p, 0, sizeof *p); }

void s3_list_page_destroy(s3_list_page *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_objects; i++)
        free(p->objects[i].key);
    free(p->objects);
    for (size_t i = 0; i < p->n_prefixes; i++)
        free(p->prefixes[i]);
    free(p->prefixes);
    free(p->next_token);
    memset(p, 0, sizeof *p);
}

static int list_object(xmlNodePtr n, bool url, shoal_buf *tmp, s3_list_object *o)
{
    const char *what = "ListObjectsV2 <Contents>";
    for (xmlNodePtr c = n->children; c; c = c->next) {
        if (xml_is(c, "Key")) {
            free(o->key);
            if (!(o->key = xml_key(c, url, what, tmp, &o->key_len)))
                return -1;
        } else if (xml_is(c, "Size")) {
            if (xml_u64(c, what, tmp, &o->size) < 0)
                return -1;
        } else if (xml_is(c, "ETag")) {
            if (xml_text_exact(c, what, tmp, o->etag, sizeof o->etag) < 0)
                return -1;
        } else if (xml_is(c, "LastModified")) {
            if (xml_text(c, 64, what, tmp) < 0)
                return -1;
            if (s3_parse_iso8601(shoal_buf_str(tmp), &o->last_modified) < 0)
                return shoal_error_set(SHOAL_ERR_S3_XML, "%s: bad <LastModified> '%s'", what, shoal_buf_str(tmp));
        }
    }
    if (!o->key)
        return shoal_error_set(SHOAL_ERR_S3_XML, "%s: entry without <Key>", what);
    return 0;
}

int s3_xml_parse_list(const void *doc, size_t len, s3_list_page *out)
{
    const char *what = "ListObjectsV2";
    int rc = -1;
    size_t cap_objects = 0, cap_prefixes = 0; /* out comes empty */
    xmlNodePtr root = NULL;
    shoal_buf tmp;
    shoal_buf_create(&tmp, 0);
    xmlDocPtr d = xml_open(doc, len, what, &root);
    if (!d)
        goto done;
    if (!xml_is(root, "ListBucketResult")) {
        shoal_error_set(SHOAL_ERR_S3_XML, "%s: root element is <%s>, expected <ListBucketResult>", what,
                        (const char *)root->name);
        goto done;
    }
    /* EncodingType may come after the entries it applies to, so find it first. */
    bool url = false;
    for (xmlNodePtr c = root->children; c; c = c->next) {
        if (xml_is(c, "EncodingType")) {
            if (xml_text(c, 16, what, &tmp) < 0)
                goto done;
            url = strcmp(shoal_buf_str(&tmp), "url") == 0;
        }
    }
    for (xmlNodePtr c = root->children; c; c = c->next) {
        if (xml_is(c, "Contents")) {
            if (SHOAL_ARRAY_GROW(out->objects, out->n_objects, cap_objects) < 0) {
                shoal_error_wrap("%s", what);
                goto done;
            }
            s3_list_object *o = &out->objects[out->n_objects++];
            memset(o, 0, sizeof *o);
            if (list_object(c, url, &tmp, o) < 0)
                goto done;
        } else if (xml_is(c, "CommonPrefixes")) {
            for (xmlNodePtr p = c->children; p; p = p->next) {
                if (!xml_is(p, "Prefix"))
                    continue;
                if (SHOAL_ARRAY_GROW(out->prefixes, out->n_prefixes, cap_prefixes) < 0) {
                    shoal_error_wrap("%s", what);
                    goto done;
                }
                size_t pl;
                char *pre = xml_key(p, url, what, &tmp, &pl);
                if (!pre)
                    goto done;
                out->prefixes[out->n_prefixes++] = pre;
            }
        } else if (xml_is(c, "IsTruncated")) {
            if (xml_text(c, 16, what, &tmp) < 0)
                goto done;
            out->truncated = strcmp(shoal_buf_str(&tmp), "true") == 0;
        } else if (xml_is(c, "NextContinuationToken")) {
            if (xml_text(c, S3_XML_MAX_TEXT, what, &tmp) < 0)
                goto done;
            free(out->next_token);
            if (!(out->next_token = strdup(shoal_buf_str(&tmp)))) {
                shoal_error_set(SHOAL_ERR_NOMEM, "%s: out of memory", what);
                goto done;
            }
        }
    }
    if (out->truncated && !out->next_token) {
        shoal_error_set(SHOAL_ERR_S3_XML, "%s: truncated listing without <NextContinuationToken>", what);
        goto done;
    }
    rc = 0;
done:
    if (rc < 0)
        s3_list_page_destroy(out);
    xmlFreeDoc(d);
    shoal_buf_destroy(&tmp);
    return rc;
}

static int error_fields(xmlNodePtr root, shoal_buf *tmp, s3_xml_error *out)
{
    const char *what = "S3 <Error>";
    memset(out, 0, sizeof *out);
    for (xmlNodePtr c = root->children; c; c = c->next) {
        if (xml_is(c, "Code")) {
            if (xml_text_into(c, what, tmp, out->code, sizeof out->code) < 0)
                return -1;
        } else if (xml_is(c, "Message")) {
            if (xml_text_into(c, what, tmp, out->message, sizeof out->message) < 0)
                return -1;
        } else if (xml_is(c, "RequestId")) {
            if (xml_text_into(c, what, tmp, out->request_id, sizeof out->request_id) < 0)
                return -1;
        }
    }
    if (!out->code[0])
        return shoal_error_set(SHOAL_ERR_S3_XML, "%s: no <Code>", what);
    return 0;
}

int s3_xml_parse_error(const void *doc, size_t len, s3_xml_error *out)
{
    s3_xml_result r;
    if (s3_xml_parse_result(doc, len, S3_XML_ERROR, &r) < 0)
        return -1;
    *out = r.error;
    return 0;
}

static const char *const result_roots[] = {
    [S3_XML_ERROR] = "Error",
    [S3_XML_INITIATE_MULTIPART] = "InitiateMultipartUploadResult",
    [S3_XML_COMPLETE_MULTIPART] = "CompleteMultipartUploadResult",
    [S3_XML_COPY_OBJECT] = "CopyObjectResult",
    [S3_XML_COPY_PART] = "CopyPartResult",
};

int s3_xml_parse_result(const void *doc, size_t len, s3_xml_result_kind expect, s3_xml_result *out)
{
    const char *want = result_roots[expect];
    int rc = -1;
    xmlNodePtr root = NULL;
    shoal_buf tmp;
    shoal_buf_create(&tmp, 0);
    memset(out, 0, sizeof *out);
    xmlDocPtr d = xml_open(doc, len, want, &root);
    if (!d)
        goto done;
    if (xml_is(root, "Error")) {
        out->kind = S3_XML_ERROR;
        rc = error_fields(root, &tmp, &out->error);
        goto done;
    }
    if (!xml_is(root, want)) {
        shoal_error_set(SHOAL_ERR_S3_XML, "%s: root element is <%s>", want, (const char *)root->name);
        goto done;
    }
    out->kind = expect;
    for (xmlNodePtr c = root->children; c; c = c->next) {
        if (xml_is(c, "ETag")) {
            if (xml_text_exact(c, want, &tmp, out->etag, sizeof out->etag) < 0)
                goto done;
        } else if (xml_is(c, "UploadId")) {
            if (xml_text_exact(c, want, &tmp, out->upload_id, sizeof out->upload_id) < 0)
                goto done;
        } else if (xml_is(c, "LastModified")) {
            if (xml_text(c, 64, want, &tmp) < 0)
                goto done;
            if (s3_parse_iso8601(shoal_buf_str(&tmp), &out->last_modified) < 0) {
                shoal_error_set(SHOAL_ERR_S3_XML, "%s: bad <LastModified> '%s'", want, shoal_buf_str(&tmp));
                goto done;
            }
        }
    }
    if (expect == S3_XML_INITIATE_MULTIPART && !out->upload_id[0]) {
        shoal_error_set(SHOAL_ERR_S3_XML, "%s: no <UploadId>", want);
        goto done;
    }
    if (expect != S3_XML_INITIATE_MULTIPART && !out->etag[0]) {
        shoal_error_set(SHOAL_ERR_S3_XML, "%s: no <ETag>", want);
        goto done;
    }
    rc = 0;
done:
    xmlFreeDoc(d);
    shoal_buf_destroy(&tmp);
    return rc;
}

/* Appends s as XML text: libxml2 escapes '&', '<', '>', '"' (and a CR, which a parser would
 * otherwise read back as LF). */
static int xml_escape(shoal_buf *out, const char *s)
{
    xmlChar *e = xmlEncodeSpecialChars(NULL, (const xmlChar *)s);
    int rc =
        e ? shoal_buf_append_str(out, (const char *)e) : shoal_error_set(SHOAL_ERR_NOMEM, "out of memory escaping XML");
    xmlFree(e);
    return rc;
}

int s3_xml_build_complete(shoal_buf *out, const s3_part_etag *parts, size_t n)
{
    if (n == 0 || n > 10000)
        return shoal_error_set(SHOAL_ERR_INVAL, "CompleteMultipartUpload: %zu parts (1..10000 allowed)", n);
    if (shoal_buf_append_str(out, "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">") < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].number < 1 || parts[i].number > 10000 || (i && parts[i].number <= parts[i - 1].number))
            return shoal_error_set(SHOAL_ERR_INVAL, "CompleteMultipartUpload: part number %u out of order",
                                   parts[i].number);
        if (shoal_buf_appendf(out, "<Part><PartNumber>%u</PartNumber><ETag>", parts[i].number) < 0 ||
            xml_escape(out, parts[i].etag) < 0 || shoal_buf_append_str(out, "</ETag></Part>") < 0)
            return -1;
    }
    return shoal_buf_append_str(out, "</CompleteMultipartUpload>");
}
