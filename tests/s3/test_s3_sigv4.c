/*
 * Tests of s3_sigv4: the AWS SigV4 suite and the S3 reference examples, case by case (data in
 * tests/s3/sigv4-vectors, see its README), plus focused checks of the S3
 * rules: URI encoding, x-amz-content-sha256, the session token, and no path normalization.
 *
 * The suite's request.txt files are raw HTTP requests; parse_request() maps them onto an
 * s3_sigv4_request (decoded path and query pairs, folded header lines unfolded, repeated headers
 * kept in order). A tiny JSON reader (json_*) reads context.json and s3-doc-vectors.json.
 */
#include "s3_sigv4.h"
#include "shoal_error.h"
#include "tt.h"

#include <ctype.h>
#include <dirent.h>
#include <string.h>

/* ---- small helpers: files, JSON, percent-decoding --------------------------------------- */

static char *read_file(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    shoal_buf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        TT_OK(shoal_buf_append(&b, chunk, n));
    fclose(f);
    return (char *)shoal_buf_steal(&b, NULL);
}

typedef enum { J_NULL, J_STR, J_NUM, J_BOOL, J_OBJ, J_ARR } json_type;

typedef struct json {
    json_type type;
    char *str;           /* J_STR: decoded; J_NUM/J_BOOL: raw text */
    char **keys;         /* J_OBJ */
    struct json *kids;   /* J_OBJ, J_ARR */
    size_t n;
} json;

static void json_ws(const char **p)
{
    while (**p && isspace((unsigned char)**p))
        (*p)++;
}

static char *json_string(const char **p)
{
    TT_CHECK(**p == '"', "JSON: string expected at '%.20s'", *p);
    (*p)++;
    shoal_buf b = {0};
    while (**p && **p != '"') {
        char c = *(*p)++;
        if (c == '\\') {
            c = *(*p)++;
            switch (c) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'u': TT_CHECK(false, "JSON: \\u escapes are not used by the conformance data"); break;
            default: break;
            }
        }
        TT_OK(shoal_buf_append_byte(&b, (uint8_t)c));
    }
    TT_CHECK(**p == '"', "JSON: unterminated string");
    (*p)++;
    return (char *)shoal_buf_steal(&b, NULL);
}

static void json_value(const char **p, json *out)
{
    memset(out, 0, sizeof *out);
    json_ws(p);
    if (**p == '{' || **p == '[') {
        bool obj = **p == '{';
        out->type = obj ? J_OBJ : J_ARR;
        (*p)++;
        json_ws(p);
        while (**p != (obj ? '}' : ']')) {
            out->kids = realloc(out->kids, (out->n + 1) * sizeof *out->kids);
            out->keys = realloc(out->keys, (out->n + 1) * sizeof *out->keys);
            out->keys[out->n] = NULL;
            if (obj) {
                out->keys[out->n] = json_string(p);
                json_ws(p);
                TT_CHECK(**p == ':', "JSON: ':' expected");
                (*p)++;
            }
            json_value(p, &out->kids[out->n++]);
            json_ws(p);
            if (**p == ',') {
                (*p)++;
                json_ws(p);
            }
            TT_CHECK(**p, "JSON: unterminated container");
        }
        (*p)++;
    } else if (**p == '"') {
        out->type = J_STR;
        out->str = json_string(p);
    } else {
        const char *s = *p;
        while (**p && !strchr(",}] \t\r\n", **p))
            (*p)++;
        out->type = *s == 't' || *s == 'f' ? J_BOOL : *s == 'n' ? J_NULL : J_NUM;
        out->str = strndup(s, (size_t)(*p - s));
    }
}

static void json_free(json *j)
{
    for (size_t i = 0; i < j->n; i++) {
        json_free(&j->kids[i]);
        free(j->keys[i]);
    }
    free(j->kids);
    free(j->keys);
    free(j->str);
}

static const json *json_get(const json *o, const char *key)
{
    for (size_t i = 0; o && o->type == J_OBJ && i < o->n; i++)
        if (strcmp(o->keys[i], key) == 0)
            return &o->kids[i];
    return NULL;
}

static const char *json_str(const json *o, const char *key)
{
    const json *v = json_get(o, key);
    return v && v->str ? v->str : NULL;
}

static bool json_true(const json *o, const char *key)
{
    const char *v = json_str(o, key);
    return v && strcmp(v, "true") == 0;
}

static char *pct_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            out[o++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* ---- request.txt -> s3_sigv4_request ---------------------------------------------------- */

#define MAX_KV 32

typedef struct parsed_request {
    char *method, *path;
    s3_kv query[MAX_KV], headers[MAX_KV];
    size_t n_query, n_headers;
    char *body;
    char *owned[4 * MAX_KV]; /* every string the kvs point to */
    size_t n_owned;
} parsed_request;

static char *own(parsed_request *r, char *s)
{
    TT_CHECK(r->n_owned < sizeof r->owned / sizeof *r->owned, "too many strings");
    return r->owned[r->n_owned++] = s;
}

/* "a=1&b&c=%E1" into decoded pairs. */
static void parse_query(parsed_request *r, const char *q)
{
    while (q && *q) {
        size_t len = strcspn(q, "&");
        const char *eq = memchr(q, '=', len);
        size_t klen = eq ? (size_t)(eq - q) : len;
        TT_CHECK(r->n_query < MAX_KV, "too many query parameters");
        r->query[r->n_query].name = own(r, pct_decode(q, klen));
        r->query[r->n_query].value = own(r, eq ? pct_decode(eq + 1, len - klen - 1) : strdup(""));
        r->n_query++;
        q += len + (q[len] == '&');
    }
}

/* Request line "METHOD TARGET HTTP/1.1" (the target may hold spaces), headers (a line that
 * starts with a blank continues the previous value), an empty line, the body. */
static void parse_request(const char *text, parsed_request *r)
{
    memset(r, 0, sizeof *r);
    const char *eol = strchr(text, '\n');
    TT_CHECK(eol, "request without a request line");
    const char *sp1 = strchr(text, ' ');
    const char *sp2 = eol;
    while (sp2 > sp1 && *sp2 != ' ')
        sp2--;
    TT_CHECK(sp1 && sp2 > sp1, "bad request line");
    r->method = own(r, strndup(text, (size_t)(sp1 - text)));
    char *target = strndup(sp1 + 1, (size_t)(sp2 - sp1 - 1));
    char *qm = strchr(target, '?');
    if (qm)
        *qm = '\0';
    r->path = own(r, pct_decode(target, strlen(target)));
    parse_query(r, qm ? qm + 1 : NULL);
    free(target);

    const char *line = eol + 1;
    while (*line && *line != '\n' && *line != '\r') {
        size_t len = strcspn(line, "\r\n");
        if (*line == ' ' || *line == '\t') {
            TT_CHECK(r->n_headers > 0, "continuation line without a header");
            s3_kv *h = &r->headers[r->n_headers - 1];
            char *joined = NULL;
            const char *cont = line;
            while (*cont == ' ' || *cont == '\t')
                cont++;
            TT_CHECK(asprintf(&joined, "%s %.*s", h->value, (int)(len - (size_t)(cont - line)), cont) > 0,
                     "asprintf");
            h->value = own(r, joined);
        } else {
            const char *colon = memchr(line, ':', len);
            TT_CHECK(colon, "header line without ':': %.*s", (int)len, line);
            TT_CHECK(r->n_headers < MAX_KV, "too many headers");
            r->headers[r->n_headers].name = own(r, strndup(line, (size_t)(colon - line)));
            r->headers[r->n_headers].value = own(r, strndup(colon + 1, len - (size_t)(colon + 1 - line)));
            r->n_headers++;
        }
        line += len;
        line += *line == '\r';
        line += *line == '\n';
    }
    line += *line == '\r';
    line += *line == '\n';
    r->body = own(r, strdup(line));
}

static void free_request(parsed_request *r)
{
    for (size_t i = 0; i < r->n_owned; i++)
        free(r->owned[i]);
}

/* ---- the AWS suite ---------------------------------------------------------------------- */

/* Compares one produced string with an expected file; appends a difference note to why. */
static bool expect_eq(shoal_buf *why, const char *what, const char *got, const char *want)
{
    if (want && strcmp(got, want) == 0)
        return true;
    shoal_buf_appendf(why, "\n    %s differs:\n      got:  %s\n      want: %s", what, got,
                      want ? want : "(expected file missing)");
    return false;
}

static int str_ptr_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted "name=value" list of decoded query pairs, for comparing query strings as sets. */
static char *query_set(const char *q)
{
    parsed_request tmp;
    memset(&tmp, 0, sizeof tmp);
    parse_query(&tmp, q);
    char *lines[MAX_KV];
    for (size_t i = 0; i < tmp.n_query; i++)
        TT_CHECK(asprintf(&lines[i], "%s=%s", tmp.query[i].name, tmp.query[i].value) > 0, "asprintf");
    qsort(lines, tmp.n_query, sizeof *lines, str_ptr_cmp);
    shoal_buf b = {0};
    for (size_t i = 0; i < tmp.n_query; i++) {
        shoal_buf_appendf(&b, "%s%s", i ? "\n" : "", lines[i]);
        free(lines[i]);
    }
    free_request(&tmp);
    return (char *)shoal_buf_steal(&b, NULL);
}

/* The headers of a signed request that are not in the original request, as sorted
 * "lower-name:value" lines. */
static char *added_header_set(const parsed_request *signed_req, const parsed_request *orig)
{
    char *lines[MAX_KV];
    size_t n = 0;
    bool used[MAX_KV] = {false};
    for (size_t i = 0; i < signed_req->n_headers; i++) {
        const s3_kv *h = &signed_req->headers[i];
        bool in_orig = false;
        for (size_t j = 0; j < orig->n_headers && !in_orig; j++)
            if (!used[j] && strcasecmp(h->name, orig->headers[j].name) == 0 &&
                strcmp(h->value, orig->headers[j].value) == 0)
                in_orig = used[j] = true;
        if (in_orig)
            continue;
        char *l = NULL;
        TT_CHECK(asprintf(&l, "%s:%s", h->name, h->value) > 0, "asprintf");
        for (char *c = l; *c != ':'; c++)
            *c = (char)tolower((unsigned char)*c);
        lines[n++] = l;
    }
    qsort(lines, n, sizeof *lines, str_ptr_cmp);
    shoal_buf b = {0};
    for (size_t i = 0; i < n; i++) {
        shoal_buf_appendf(&b, "%s%s", i ? "\n" : "", lines[i]);
        free(lines[i]);
    }
    return (char *)shoal_buf_steal(&b, NULL);
}

/* Our added headers ("name: value" lines) plus the Authorization header, in the same form. */
static char *our_header_set(const s3_sigv4_result *r)
{
    shoal_buf text = {0};
    shoal_buf_appendf(&text, "%s\nAuthorization: %s", shoal_buf_str(&r->added_headers),
                      shoal_buf_str(&r->authorization));
    parsed_request tmp;
    char *req = NULL;
    TT_CHECK(asprintf(&req, "GET / HTTP/1.1\n%s\n\n", shoal_buf_str(&text)) > 0, "asprintf");
    parse_request(req, &tmp);
    for (size_t i = 0; i < tmp.n_headers; i++) /* "name: value" -> "name:value" as the suite writes */
        while (*tmp.headers[i].value == ' ')
            tmp.headers[i].value++;
    parsed_request none;
    memset(&none, 0, sizeof none);
    char *set = added_header_set(&tmp, &none);
    free_request(&tmp);
    free(req);
    shoal_buf_destroy(&text);
    return set;
}

static char *signed_request_query(const char *signed_text)
{
    const char *eol = strchr(signed_text, '\n');
    const char *q = memchr(signed_text, '?', eol ? (size_t)(eol - signed_text) : strlen(signed_text));
    char *line = q ? strndup(q + 1, (size_t)(eol - q - 1)) : strdup("");
    char *sp = strrchr(line, ' ');
    if (sp)
        *sp = '\0';
    char *set = query_set(line);
    free(line);
    return set;
}

/* Checks one form (header or query) of one case; returns true when every expectation holds. */
static bool check_form(const char *dir, const char *prefix, const parsed_request *req, const s3_sigv4_result *r,
                       shoal_buf *why)
{
    char name[64];
    bool ok = true;
    snprintf(name, sizeof name, "%s-canonical-request.txt", prefix);
    char *creq = read_file(dir, name);
    snprintf(name, sizeof name, "%s-string-to-sign.txt", prefix);
    char *sts = read_file(dir, name);
    snprintf(name, sizeof name, "%s-signature.txt", prefix);
    char *sig = read_file(dir, name);
    snprintf(name, sizeof name, "%s-signed-request.txt", prefix);
    char *signed_text = read_file(dir, name);
    ok &= expect_eq(why, name, shoal_buf_str(&r->canonical_request), creq);
    ok &= expect_eq(why, "string to sign", shoal_buf_str(&r->string_to_sign), sts);
    ok &= expect_eq(why, "signature", r->signature, sig);
    if (signed_text) {
        parsed_request sreq;
        parse_request(signed_text, &sreq);
        char *want = NULL, *got = NULL;
        if (strcmp(prefix, "header") == 0) {
            want = added_header_set(&sreq, req);
            got = our_header_set(r);
            ok &= expect_eq(why, "headers added to the signed request", got, want);
        } else {
            want = signed_request_query(signed_text);
            got = query_set(shoal_buf_str(&r->presigned_query));
            ok &= expect_eq(why, "presigned query", got, want);
        }
        free(want);
        free(got);
        free_request(&sreq);
    } else {
        ok &= expect_eq(why, "signed request", "", NULL);
    }
    free(creq);
    free(sts);
    free(sig);
    free(signed_text);
    return ok;
}

/* The six cases whose normalized canonical request differs from the unnormalized twin's. */
static const char *const normalized_cases[] = {"get-relative", "get-relative-relative", "get-slash",
                                               "get-slash-dot-slash", "get-slash-pointless-dot", "get-slashes"};

static const char *normalized_twin(const char *name)
{
    static char twin[256];
    for (size_t i = 0; i < sizeof normalized_cases / sizeof *normalized_cases; i++) {
        size_t n = strlen(normalized_cases[i]);
        if (strncmp(name, normalized_cases[i], n) == 0 && strcmp(name + n, "-normalized") == 0) {
            snprintf(twin, sizeof twin, "%s-unnormalized", normalized_cases[i]);
            return twin;
        }
    }
    return NULL;
}

static const char *conformance_dir(void)
{
    const char *dir = tt_source_path("tests/s3/sigv4-vectors");
    DIR *d = opendir(dir);
    TT_CHECK(d, "the vendored SigV4 vectors are missing: %s", dir);
    closedir(d);
    return dir;
}

/* Signs one case both ways; the expectations come from `expect_dir`. */
static bool run_aws_case(const char *suite, const char *name, shoal_buf *why)
{
    char dir[4096], expect_dir[4096];
    const char *twin = normalized_twin(name);
    TT_CHECK(snprintf(dir, sizeof dir, "%s/%s", suite, name) < (int)sizeof dir &&
                 snprintf(expect_dir, sizeof expect_dir, "%s/%s", suite, twin ? twin : name) < (int)sizeof dir,
             "path too long");
    char *ctx_text = read_file(dir, "context.json");
    char *req_text = read_file(dir, "request.txt");
    if (!ctx_text || !req_text) {
        shoal_buf_appendf(why, "\n    context.json or request.txt missing");
        free(ctx_text);
        free(req_text);
        return false;
    }
    json ctx;
    const char *cp = ctx_text;
    json_value(&cp, &ctx);
    parsed_request req;
    parse_request(req_text, &req);

    const json *cred = json_get(&ctx, "credentials");
    char date[17] = {0};
    const char *ts = json_str(&ctx, "timestamp");
    for (size_t i = 0, o = 0; ts && ts[i] && o < 16; i++)
        if (ts[i] != '-' && ts[i] != ':')
            date[o++] = ts[i];
    char body_hash[65];
    s3_sha256_hex(req.body, strlen(req.body), body_hash);
    bool sign_body = json_true(&ctx, "sign_body");
    /* "sign_body" is S3's rule: the body hash goes into x-amz-content-sha256, signed. Paths are
     * never normalized, whatever "normalize" says: that is the point of the six twins. */
    s3_sigv4_params p = {
        .access_key = json_str(cred, "access_key_id"),
        .secret_key = json_str(cred, "secret_access_key"),
        .session_token = json_str(cred, "token"),
        .region = json_str(&ctx, "region"),
        .service = json_str(&ctx, "service"),
        .amz_date = date,
        .s3 = sign_body,
        .normalize_path = false,
        .omit_session_token = json_true(&ctx, "omit_session_token"),
        .expires = (uint32_t)atoi(json_str(&ctx, "expiration_in_seconds") ? json_str(&ctx, "expiration_in_seconds")
                                                                          : "0"),
    };
    s3_sigv4_request sreq = {
        .method = req.method,
        .path = req.path,
        .query = req.query,
        .n_query = req.n_query,
        .headers = req.headers,
        .n_headers = req.n_headers,
        .payload_sha256 = sign_body ? body_hash : NULL,
    };
    bool ok = true;
    s3_sigv4_result hr, qr;
    s3_sigv4_result_create(&hr);
    s3_sigv4_result_create(&qr);
    if (s3_sigv4_sign_header(&sreq, &p, &hr) != 0 || s3_sigv4_presign(&sreq, &p, &qr) != 0) {
        shoal_buf_appendf(why, "\n    signing failed: %s", shoal_error_message());
        ok = false;
    } else {
        ok &= check_form(expect_dir, "header", &req, &hr, why);
        ok &= check_form(expect_dir, "query", &req, &qr, why);
        if (twin) {
            /* The normalized form must not be what we produce. */
            char *norm_h = read_file(dir, "header-canonical-request.txt");
            char *norm_q = read_file(dir, "query-canonical-request.txt");
            if (!norm_h || !norm_q || strcmp(norm_h, shoal_buf_str(&hr.canonical_request)) == 0 ||
                strcmp(norm_q, shoal_buf_str(&qr.canonical_request)) == 0) {
                shoal_buf_appendf(why, "\n    produced the normalized canonical request (S3 never normalizes)");
                ok = false;
            }
            free(norm_h);
            free(norm_q);
        }
    }
    s3_sigv4_result_destroy(&hr);
    s3_sigv4_result_destroy(&qr);
    free_request(&req);
    json_free(&ctx);
    free(ctx_text);
    free(req_text);
    return ok;
}

TT_TEST(test_s3_sigv4_aws_suite_cases_match)
{
    char suite[4096];
    snprintf(suite, sizeof suite, "%s/aws-sigv4/v4", conformance_dir());
    struct dirent **names = NULL;
    int n = scandir(suite, &names, NULL, alphasort);
    TT_CHECK(n > 0, "no cases in %s", suite);
    int run = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (name[0] != '.') {
            shoal_buf why = {0};
            bool ok = run_aws_case(suite, name, &why);
            const char *twin = normalized_twin(name);
            printf("%s %s%s%s%s\n", ok ? "PASS" : "FAIL", name, twin ? " (signed as S3 does, unnormalized: matches " : "",
                   twin ? twin : "", twin ? ")" : "");
            if (!ok)
                printf("%s\n", shoal_buf_str(&why));
            shoal_buf_destroy(&why);
            run++;
            failed += !ok;
        }
        free(names[i]);
    }
    free(names);
    printf("aws-sigv4: %d cases, %d passed, %d failed\n", run, run - failed, failed);
    TT_CHECK(run >= 38, "expected the 38 cases of the suite, found %d", run);
    TT_CHECK(failed == 0, "%d of %d SigV4 suite cases failed (see FAIL lines above)", failed, run);
}

/* ---- the S3 reference examples ---------------------------------------------------------- */

TT_TEST(test_s3_sigv4_s3_doc_vectors_match)
{
    const char *dir = conformance_dir();
    char *text = read_file(dir, "s3-doc-vectors.json");
    TT_CHECK(text, "cannot read %s/s3-doc-vectors.json", dir);
    json doc;
    const char *cp = text;
    json_value(&cp, &doc);
    const json *cred = json_get(&doc, "credentials");
    const json *cases = json_get(&doc, "cases");
    TT_CHECK(cases && cases->type == J_ARR, "no cases array");
    s3_sigv4_params p = {
        .access_key = json_str(cred, "access_key_id"),
        .secret_key = json_str(cred, "secret_access_key"),
        .region = json_str(&doc, "region"),
        .service = json_str(&doc, "service"),
        .amz_date = json_str(&doc, "x_amz_date"),
        .s3 = true,
    };
    int failed = 0;
    for (size_t i = 0; i < cases->n; i++) {
        const json *c = &cases->kids[i];
        parsed_request req;
        memset(&req, 0, sizeof req);
        parse_query(&req, json_str(c, "query"));
        const json *hs = json_get(c, "headers");
        for (size_t h = 0; hs && h < hs->n; h++)
            req.headers[req.n_headers++] = (s3_kv){hs->keys[h], hs->kids[h].str};
        req.headers[req.n_headers++] = (s3_kv){"Host", json_str(&doc, "host")};
        char body_hash[65];
        const char *body = json_str(c, "body") ? json_str(c, "body") : "";
        s3_sha256_hex(body, strlen(body), body_hash);
        const char *payload = json_str(c, "payload_sha256") ? json_str(c, "payload_sha256") : body_hash;
        s3_sigv4_request sreq = {.method = json_str(c, "method"), .path = json_str(c, "path"),
                                 .query = req.query, .n_query = req.n_query, .headers = req.headers,
                                 .n_headers = req.n_headers, .payload_sha256 = payload};
        s3_sigv4_result r;
        s3_sigv4_result_create(&r);
        shoal_buf why = {0};
        bool ok = s3_sigv4_sign_header(&sreq, &p, &r) == 0;
        if (!ok) {
            shoal_buf_appendf(&why, "\n    signing failed: %s", shoal_error_message());
        } else {
            ok &= expect_eq(&why, "signature", r.signature, json_str(c, "signature"));
            ok &= expect_eq(&why, "signed headers", shoal_buf_str(&r.signed_headers), json_str(c, "signed_headers"));
            if (json_str(c, "canonical_uri"))
                ok &= expect_eq(&why, "canonical URI", shoal_buf_str(&r.wire_path), json_str(c, "canonical_uri"));
            if (json_str(c, "canonical_query")) {
                const char *creq = shoal_buf_str(&r.canonical_request);
                const char *l2 = strchr(strchr(creq, '\n') + 1, '\n') + 1;
                char *q = strndup(l2, strcspn(l2, "\n"));
                ok &= expect_eq(&why, "canonical query", q, json_str(c, "canonical_query"));
                free(q);
            }
            char want_hdr[128];
            snprintf(want_hdr, sizeof want_hdr, "x-amz-content-sha256: %s", payload);
            if (!strstr(shoal_buf_str(&r.added_headers), want_hdr)) {
                shoal_buf_appendf(&why, "\n    '%s' not among the headers to send: %s", want_hdr,
                                  shoal_buf_str(&r.added_headers));
                ok = false;
            }
        }
        printf("%s %s%s\n", ok ? "PASS" : "FAIL", json_str(c, "name"), shoal_buf_str(&why));
        failed += !ok;
        shoal_buf_destroy(&why);
        s3_sigv4_result_destroy(&r);
        free_request(&req);
    }
    printf("s3-doc-vectors: %zu cases, %zu passed, %d failed\n", cases->n, cases->n - (size_t)failed, failed);
    TT_CHECK(cases->n == 4, "expected the four S3 reference examples, found %zu", cases->n);
    TT_CHECK(failed == 0, "%d S3 reference examples failed (see FAIL lines above)", failed);
    json_free(&doc);
    free(text);
}

/* ---- focused checks of the S3 rules ----------------------------------------------------- */

static void check_encode(const char *in, size_t len, bool keep_slash, const char *want)
{
    shoal_buf b = {0};
    TT_OK(s3_uri_encode(&b, in, len, keep_slash));
    TT_CHECK(strcmp(shoal_buf_str(&b), want) == 0, "encode(\"%s\"): got %s, want %s", in, shoal_buf_str(&b), want);
    shoal_buf_destroy(&b);
}

TT_TEST(test_s3_sigv4_uri_encode_escapes_reserved_space_utf8_and_cr)
{
    check_encode("+$%&;=?@[]~", 11, false, "%2B%24%25%26%3B%3D%3F%40%5B%5D~");
    check_encode("a b", 3, false, "a%20b");
    check_encode("caf\xc3\xa9/\xe1\x88\xb4", 9, true, "caf%C3%A9/%E1%88%B4");
    check_encode("line\rend", 8, false, "line%0Dend");
    check_encode("a/b", 3, false, "a%2Fb");
    check_encode("a/b", 3, true, "a/b");
    check_encode("-_.~AZaz09", 10, false, "-_.~AZaz09");
    check_encode("nul\0byte", 8, false, "nul%00byte");
}

static const s3_kv host_only[] = {{"Host", "examplebucket.s3.amazonaws.com"}};

static s3_sigv4_params example_params(void)
{
    return (s3_sigv4_params){.access_key = "AKIAIOSFODNN7EXAMPLE",
                             .secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                             .region = "us-east-1",
                             .service = "s3",
                             .amz_date = "20130524T000000Z",
                             .s3 = true,
                             .expires = 600};
}

TT_TEST(test_s3_sigv4_content_sha256_is_sent_and_signed)
{
    const char *hash = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
    s3_sigv4_request req = {.method = "PUT", .path = "/k", .headers = host_only, .n_headers = 1,
                            .payload_sha256 = hash};
    s3_sigv4_params p = example_params();
    s3_sigv4_result r, r2;
    s3_sigv4_result_create(&r);
    s3_sigv4_result_create(&r2);
    TT_OK(s3_sigv4_sign_header(&req, &p, &r));
    const char *creq = shoal_buf_str(&r.canonical_request);
    TT_CHECK(strstr(shoal_buf_str(&r.signed_headers), "x-amz-content-sha256"), "not signed: %s",
             shoal_buf_str(&r.signed_headers));
    TT_CHECK(strstr(creq, "\nx-amz-content-sha256:44ce7dd6"), "not in the canonical headers:\n%s", creq);
    TT_CHECK(strcmp(creq + strlen(creq) - 64, hash) == 0, "payload line is not the hash:\n%s", creq);
    TT_CHECK(strstr(shoal_buf_str(&r.added_headers), "x-amz-content-sha256: 44ce7dd6"), "not sent: %s",
             shoal_buf_str(&r.added_headers));
    req.payload_sha256 = "UNSIGNED-PAYLOAD";
    TT_OK(s3_sigv4_sign_header(&req, &p, &r2));
    TT_CHECK(strcmp(r.signature, r2.signature) != 0, "the payload hash does not change the signature");
    s3_sigv4_result_destroy(&r);
    s3_sigv4_result_destroy(&r2);
}

TT_TEST(test_s3_sigv4_session_token_is_sent_and_signed)
{
    s3_sigv4_request req = {.method = "GET", .path = "/k", .headers = host_only, .n_headers = 1};
    s3_sigv4_params p = example_params();
    p.session_token = "FwoGZXIvYXdzEXAMPLE+/=";
    s3_sigv4_result r, q;
    s3_sigv4_result_create(&r);
    s3_sigv4_result_create(&q);
    TT_OK(s3_sigv4_sign_header(&req, &p, &r));
    TT_CHECK(strcmp(shoal_buf_str(&r.signed_headers), "host;x-amz-content-sha256;x-amz-date;x-amz-security-token") == 0,
             "signed headers: %s", shoal_buf_str(&r.signed_headers));
    TT_CHECK(strstr(shoal_buf_str(&r.canonical_request), "\nx-amz-security-token:FwoGZXIvYXdzEXAMPLE+/=\n"),
             "token not in the canonical request:\n%s", shoal_buf_str(&r.canonical_request));
    TT_CHECK(strstr(shoal_buf_str(&r.added_headers), "x-amz-security-token: FwoGZXIvYXdzEXAMPLE+/="),
             "token not sent: %s", shoal_buf_str(&r.added_headers));
    TT_OK(s3_sigv4_presign(&req, &p, &q));
    TT_CHECK(strstr(shoal_buf_str(&q.canonical_request), "X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE%2B%2F%3D"),
             "token not signed in the presigned query:\n%s", shoal_buf_str(&q.canonical_request));
    TT_CHECK(strstr(shoal_buf_str(&q.presigned_query), "X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE%2B%2F%3D"),
             "token not in the presigned query: %s", shoal_buf_str(&q.presigned_query));
    TT_CHECK(strstr(shoal_buf_str(&q.canonical_request), "\nUNSIGNED-PAYLOAD"), "presign payload:\n%s",
             shoal_buf_str(&q.canonical_request));
    s3_sigv4_result_destroy(&r);
    s3_sigv4_result_destroy(&q);
}

TT_TEST(test_s3_sigv4_path_is_encoded_once_never_normalized)
{
    s3_sigv4_request req = {.method = "GET", .path = "/bucket/a//b/../c d+$%&;=?@[]~", .headers = host_only,
                            .n_headers = 1};
    s3_sigv4_params p = example_params();
    s3_sigv4_result r;
    s3_sigv4_result_create(&r);
    TT_OK(s3_sigv4_sign_header(&req, &p, &r));
    const char *want = "/bucket/a//b/../c%20d%2B%24%25%26%3B%3D%3F%40%5B%5D~";
    TT_CHECK(strcmp(shoal_buf_str(&r.wire_path), want) == 0, "wire path %s, want %s", shoal_buf_str(&r.wire_path),
             want);
    TT_CHECK(strncmp(shoal_buf_str(&r.canonical_request) + 4, want, strlen(want)) == 0,
             "canonical URI is not the wire path:\n%s", shoal_buf_str(&r.canonical_request));
    p.normalize_path = true;
    TT_CHECK(s3_sigv4_sign_header(&req, &p, &r) == -1 && shoal_error_code() == SHOAL_ERR_UNSUPPORTED,
             "normalize_path was not refused");
    s3_sigv4_result_destroy(&r);
}

TT_TEST(test_s3_sigv4_rejects_malformed_requests)
{
    s3_sigv4_request req = {.method = "GET", .path = "/k"};
    s3_sigv4_params p = example_params();
    s3_sigv4_result r;
    s3_sigv4_result_create(&r);
    TT_CHECK(s3_sigv4_sign_header(&req, &p, &r) == -1 && shoal_error_code() == SHOAL_ERR_INVAL &&
                 strstr(shoal_error_message(), "host"),
             "no host: %s", shoal_error_message());
    req.headers = host_only;
    req.n_headers = 1;
    p.amz_date = "2013-05-24";
    TT_CHECK(s3_sigv4_sign_header(&req, &p, &r) == -1 && strstr(shoal_error_message(), "2013-05-24"),
             "bad date: %s", shoal_error_message());
    p = example_params();
    req.path = "bucket/k";
    TT_CHECK(s3_sigv4_sign_header(&req, &p, &r) == -1 && strstr(shoal_error_message(), "bucket/k"),
             "relative path: %s", shoal_error_message());
    req.path = "/k";
    const s3_kv dup[] = {{"Host", "h"}, {"X-Amz-Date", "20130524T000000Z"}};
    req.headers = dup;
    req.n_headers = 2;
    TT_CHECK(s3_sigv4_sign_header(&req, &p, &r) == -1 && strstr(shoal_error_message(), "x-amz-date"),
             "caller-set x-amz-date: %s", shoal_error_message());
    s3_sigv4_result_destroy(&r);
}

TT_MAIN()
