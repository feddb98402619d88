/*
 * s3_creds_fetch: the sources reached over HTTP: the EC2 instance metadata service (IMDSv2),
 * the container credentials endpoint (ECS, EKS Pod Identity) and STS (AssumeRole,
 * AssumeRoleWithWebIdentity).
 *
 * Each is a few rare calls (at start, then about once an hour), so each call is one libcurl easy
 * handle, made, performed and freed: no connection is kept, nothing runs in the background. Every
 * answer is bounded to 64 KiB before it is parsed. The link-local services (IMDS, containers)
 * get a one-second connect timeout, so a machine without them falls through quickly, and never
 * go through a proxy; STS goes through the proxy the environment names, as the SDKs do.
 *
 * IMDS and the container endpoint answer one flat JSON object of strings; credential_process
 * prints one too (with a number). s3_creds_json_scan() reads exactly that shape and refuses
 * anything else. STS answers XML, read with libxml2 without network access or entity expansion,
 * by the local names of the elements (the namespace is not checked, as the SDKs do not).
 *
 * AssumeRole is signed with s3_sigv4 as a generic SigV4 request (service "sts", the path as is),
 * over a form body whose hash is signed; AssumeRoleWithWebIdentity is unsigned: the token is the
 * proof. The web identity token file is read at every call, because the kubelet rotates it.
 *
 * Nothing secret reaches a message: not the secret key, the session token, the IMDS token, the
 * container authorization token, nor the web identity token. Buffers that held them are wiped.
 */
#include "s3_creds_internal.h"
#include "s3_sigv4.h"

#include "shoal_error.h"
#include "shoal_log.h"

#include <curl/curl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FETCH_MAX_BODY 65536
#define LINK_LOCAL_CONNECT_MS 1000L
#define LINK_LOCAL_TOTAL_MS 5000L
#define STS_CONNECT_MS 5000L
#define STS_TOTAL_MS 30000L
#define TOKEN_FILE_MAX 65536

/* ---- one HTTP call -------------------------------------------------------------------------- */

typedef struct fetch_call {
    const char *what;    /* the source, for messages */
    const char *method;  /* GET, PUT, POST */
    const char *url;
    struct curl_slist *headers;
    const char *body;    /* POST/PUT body, NULL for none */
    bool link_local;     /* short timeouts, never a proxy */
} fetch_call;

static size_t fetch_write(char *data, size_t size, size_t n, void *ud)
{
    shoal_buf *b = ud;
    if (b->len + size * n > FETCH_MAX_BODY || shoal_buf_append(b, data, size * n) != 0)
        return 0; /* makes curl fail the transfer */
    return size * n;
}

static void fetch_wipe(shoal_buf *b)
{
    if (b->data)
        explicit_bzero(b->data, b->cap);
    shoal_buf_destroy(b);
}

/* Performs the call; the body (trailing blanks trimmed) into resp, the status into *status.
 * -1 only when no HTTP answer came. */
static int fetch_perform(const fetch_call *fc, shoal_buf *resp, long *status)
{
    int rc = -1;
    CURL *c = curl_easy_init();
    if (!c)
        return shoal_error_set(SHOAL_ERR_NOMEM, "%s: curl_easy_init failed", fc->what);
    shoal_buf_reset(resp);
    curl_easy_setopt(c, CURLOPT_URL, fc->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, fc->headers);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, fc->link_local ? LINK_LOCAL_CONNECT_MS : STS_CONNECT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, fc->link_local ? LINK_LOCAL_TOTAL_MS : STS_TOTAL_MS);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (fc->link_local)
        curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fetch_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    if (fc->body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, fc->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(fc->body));
    }
    if (strcmp(fc->method, "POST") != 0 && strcmp(fc->method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, fc->method);
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: %s %s: %s", fc->what, fc->method, fc->url,
                        cc == CURLE_WRITE_ERROR ? "answer larger than 64 KiB" : curl_easy_strerror(cc));
        goto done;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    while (resp->len > 0 && strchr(" \t\r\n", resp->data[resp->len - 1]))
        resp->data[--resp->len] = '\0';
    rc = 0;
done:
    curl_easy_cleanup(c);
    return rc;
}

/* Appends "Name: value" to *list; -1 SHOAL_ERR_NOMEM (the list is kept for the caller to free). */
static int fetch_header(struct curl_slist **list, const char *what, const char *fmt, const char *value)
{
    shoal_buf line = {0};
    int rc = shoal_buf_appendf(&line, fmt, value);
    struct curl_slist *l = rc == 0 ? curl_slist_append(*list, shoal_buf_str(&line)) : NULL;
    fetch_wipe(&line);
    if (!l)
        return shoal_error_set(SHOAL_ERR_NOMEM, "%s: out of memory", what);
    *list = l;
    return 0;
}

/* ---- JSON: one flat object ------------------------------------------------------------------ */

/* Decodes the JSON string at *p (just past its opening quote) into out (cap bytes). -1 when
 * malformed; *overflow is set when it did not fit (the rest is skipped). */
static int json_string(const char **p, const char *end, char *out, size_t cap, bool *overflow)
{
    size_t o = 0;
    *overflow = false;
    while (*p < end && **p != '"') {
        char c = *(*p)++;
        if ((unsigned char)c < 0x20)
            return -1;
        if (c == '\\') {
            if (*p >= end)
                return -1;
            c = *(*p)++;
            switch (c) {
            case '"': case '\\': case '/': break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u': {
                /* Only ASCII escapes: no credentials document needs more. */
                char hex[5] = {0};
                if (end - *p < 4)
                    return -1;
                memcpy(hex, *p, 4);
                char *stop;
                unsigned long u = strtoul(hex, &stop, 16);
                if (*stop || u == 0 || u > 0x7f)
                    return -1;
                c = (char)u;
                *p += 4;
                break;
            }
            default: return -1;
            }
        }
        if (o + 1 < cap)
            out[o++] = c;
        else
            *overflow = true;
    }
    if (*p >= end)
        return -1;
    (*p)++;
    if (cap)
        out[o] = '\0';
    return 0;
}

static void json_ws(const char **p, const char *end)
{
    while (*p < end && **p && strchr(" \t\r\n", **p))
        (*p)++;
}

static s3_creds_json_field *json_find(s3_creds_json_field *fields, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(fields[i].key, key) == 0)
            return &fields[i];
    return NULL;
}

int s3_creds_json_scan(const char *s, size_t len, s3_creds_json_field *fields, size_t n_fields, const char *what)
{
    const char *p = s, *end = s + len;
    char key[64], scratch[64];
    bool overflow;
    json_ws(&p, end);
    if (p >= end || *p++ != '{')
        goto fail_malformed;
    json_ws(&p, end);
    if (p < end && *p == '}')
        return 0;
    for (;;) {
        if (p >= end || *p++ != '"' || json_string(&p, end, key, sizeof key, &overflow) != 0)
            goto fail_malformed;
        s3_creds_json_field *f = overflow ? NULL : json_find(fields, n_fields, key);
        json_ws(&p, end);
        if (p >= end || *p++ != ':')
            goto fail_malformed;
        json_ws(&p, end);
        if (p >= end)
            goto fail_malformed;
        if (*p == '"') {
            p++;
            if (json_string(&p, end, f ? f->out : scratch, f ? f->cap : sizeof scratch, &overflow) != 0)
                goto fail_malformed;
        } else {
            /* A number, true, false or null. Objects and arrays do not occur in these documents. */
            const char *start = p;
            while (p < end && *p && strchr("0123456789+-.eEtrufalsn", *p))
                p++;
            size_t n = (size_t)(p - start);
            if (n == 0)
                goto fail_malformed;
            overflow = f && n >= f->cap;
            if (f && !overflow) {
                memcpy(f->out, start, n);
                f->out[n] = '\0';
            }
        }
        if (f && overflow)
            return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: %s is longer than %zu bytes", what, f->key,
                                   f->cap - 1);
        if (f) {
            f->seen = true;
            f->is_string = p[-1] == '"';
        }
        json_ws(&p, end);
        if (p < end && *p == ',') {
            p++;
            json_ws(&p, end);
            continue;
        }
        if (p < end && *p == '}') {
            p++;
            json_ws(&p, end);
            if (p == end)
                return 0;
        }
        goto fail_malformed;
    }
fail_malformed:
    return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: malformed JSON credentials document near byte %zu", what,
                           (size_t)(p - s));
}

int s3_creds_parse_time(const char *s, int64_t *out)
{
    struct tm tm = {0};
    int used = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec, &used) != 6)
        return -1;
    const char *rest = s + used;
    if (*rest == '.')
        for (rest++; *rest >= '0' && *rest <= '9'; rest++)
            ;
    int64_t offset = 0;
    if (*rest == '+' || *rest == '-') {
        int hh, mm, n = 0;
        if (sscanf(rest + 1, "%2d:%2d%n", &hh, &mm, &n) != 2 || rest[1 + n] != '\0' || hh > 23 || mm > 59)
            return -1;
        offset = (*rest == '+' ? 1 : -1) * (int64_t)(hh * 3600 + mm * 60);
    } else if (strcmp(rest, "Z") != 0) {
        return -1;
    }
    if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = (int64_t)t - offset;
    return 0;
}

/* The credentials of a JSON document with `id`, `secret`, `token` and `expiration` members
 * (IMDS, containers). `code` (may be NULL): a member that must read "Success" when present. */
static int fetch_json_creds(const char *what, const shoal_buf *body, const char *id, const char *secret,
                            const char *token, const char *expiration_key, s3_creds *out)
{
    char code[32] = "", expiration[64] = "";
    s3_creds_json_field fields[] = {
        {"Code", code, sizeof code, false, false},
        {id, out->access_key, sizeof out->access_key, false, false},
        {secret, out->secret_key, sizeof out->secret_key, false, false},
        {token, out->session_token, sizeof out->session_token, false, false},
        {expiration_key, expiration, sizeof expiration, false, false},
    };
    if (s3_creds_json_scan((const char *)body->data, body->len, fields, sizeof fields / sizeof *fields, what) != 0)
        return -1;
    if (fields[0].seen && strcmp(code, "Success") != 0)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: answered Code=%s", what, code);
    if (!fields[1].seen || !fields[2].seen || !out->access_key[0] || !out->secret_key[0])
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: the answer has no %s/%s", what, id, secret);
    out->expires = 0;
    if (fields[4].seen && fields[4].is_string && s3_creds_parse_time(expiration, &out->expires) != 0)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: bad %s '%s'", what, expiration_key, expiration);
    return 0;
}

/* ---- IMDSv2 --------------------------------------------------------------------------------- */

static bool imds_role_valid(const char *role)
{
    size_t n = strlen(role);
    if (n == 0 || n > 128)
        return false;
    for (const char *c = role; *c; c++)
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
              strchr("+=,.@_-", *c)))
            return false;
    return true;
}

#define IMDS_CREDS_PATH "/latest/meta-data/iam/security-credentials/"

/* One IMDS call that must answer 200. */
static int imds_call(s3_creds_src *s, const char *method, const char *path, struct curl_slist *hdrs, shoal_buf *body)
{
    char url[768];
    long status = 0;
    snprintf(url, sizeof url, "%s%s", s->url, path);
    fetch_call fc = {.what = s->what, .method = method, .url = url, .headers = hdrs,
                     .body = strcmp(method, "PUT") == 0 ? "" : NULL, .link_local = true};
    if (fetch_perform(&fc, body, &status) != 0)
        return -1;
    if (status != 200)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: %s %s: HTTP %ld", s->what, method, path, status);
    return 0;
}

int s3_creds_imds_fetch(s3_creds_src *s, s3_creds *out)
{
    int rc = -1;
    shoal_buf body = {0};
    struct curl_slist *put_h = NULL, *get_h = NULL;
    char role[129], path[256];
    s3_creds got = {0};
    if (fetch_header(&put_h, s->what, "X-aws-ec2-metadata-token-ttl-seconds: %s", "21600") != 0 ||
        fetch_header(&put_h, s->what, "%s", "Content-Type:") != 0 ||
        imds_call(s, "PUT", "/latest/api/token", put_h, &body) != 0)
        goto done;
    if (body.len == 0 || body.len > 1024 || strpbrk(shoal_buf_str(&body), "\r\n")) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: unusable session token (%zu bytes)", s->what, body.len);
        goto done;
    }
    if (fetch_header(&get_h, s->what, "X-aws-ec2-metadata-token: %s", shoal_buf_str(&body)) != 0 ||
        imds_call(s, "GET", IMDS_CREDS_PATH, get_h, &body) != 0)
        goto done;
    if (body.len > 0)
        body.data[strcspn(shoal_buf_str(&body), "\r\n")] = '\0';
    if (!imds_role_valid(shoal_buf_str(&body))) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: no IAM role attached (or a bad role name)", s->what);
        goto done;
    }
    snprintf(role, sizeof role, "%s", shoal_buf_str(&body));
    snprintf(path, sizeof path, IMDS_CREDS_PATH "%s", role);
    if (imds_call(s, "GET", path, get_h, &body) != 0 ||
        fetch_json_creds(s->what, &body, "AccessKeyId", "SecretAccessKey", "Token", "Expiration", &got) != 0) {
        shoal_error_wrap("role %s", role);
        goto done;
    }
    *out = got;
    LOG_INFO("s3", "credentials", "source=imds role=%s expires=%lld", role, (long long)got.expires);
    rc = 0;
done:
    explicit_bzero(&got, sizeof got);
    fetch_wipe(&body);
    curl_slist_free_all(put_h);
    curl_slist_free_all(get_h);
    return rc;
}

/* ---- container credentials -------------------------------------------------------------------- */

/* Reads a small token file whole, trailing blanks and newlines cut. -1 naming the file. */
static int read_token_file(const char *what, const char *path, shoal_buf *out)
{
    int rc = -1;
    shoal_buf_reset(out);
    FILE *f = fopen(path, "r");
    if (!f)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: cannot read the token file %s: %s", what, path,
                               strerror(errno));
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (out->len + n > TOKEN_FILE_MAX) {
            shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: the token file %s is larger than 64 KiB", what, path);
            goto done;
        }
        if (shoal_buf_append(out, chunk, n) != 0) {
            shoal_error_set(SHOAL_ERR_NOMEM, "%s: out of memory", what);
            goto done;
        }
    }
    if (ferror(f)) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: cannot read the token file %s: %s", what, path,
                        strerror(errno ? errno : EIO));
        goto done;
    }
    while (out->len > 0 && strchr(" \t\r\n", out->data[out->len - 1]))
        out->data[--out->len] = '\0';
    if (out->len == 0 || memchr(out->data, '\0', out->len)) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: the token file %s is %s", what, path,
                        out->len ? "not text" : "empty");
        goto done;
    }
    rc = 0;
done:
    explicit_bzero(chunk, sizeof chunk);
    fclose(f);
    return rc;
}

int s3_creds_container_fetch(s3_creds_src *s, s3_creds *out)
{
    int rc = -1;
    long status = 0;
    shoal_buf body = {0}, token = {0};
    struct curl_slist *hdrs = NULL;
    s3_creds got = {0};
    if (s->token_file) {
        if (read_token_file(s->what, s->token_file, &token) != 0)
            goto done;
    } else if (s->token && shoal_buf_append_str(&token, s->token) != 0) {
        shoal_error_set(SHOAL_ERR_NOMEM, "%s: out of memory", s->what);
        goto done;
    }
    if (token.len && strpbrk(shoal_buf_str(&token), "\r\n")) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: the authorization token holds a line break", s->what);
        goto done;
    }
    if (fetch_header(&hdrs, s->what, "%s", "Accept: application/json") != 0 ||
        (token.len && fetch_header(&hdrs, s->what, "Authorization: %s", shoal_buf_str(&token)) != 0))
        goto done;
    fetch_call fc = {.what = s->what, .method = "GET", .url = s->url, .headers = hdrs, .link_local = true};
    if (fetch_perform(&fc, &body, &status) != 0)
        goto done;
    if (status != 200) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: GET %s: HTTP %ld%s", s->what, s->url, status,
                        status == 401 || status == 403 ? " (check the authorization token)" : "");
        goto done;
    }
    if (fetch_json_creds(s->what, &body, "AccessKeyId", "SecretAccessKey", "Token", "Expiration", &got) != 0)
        goto done;
    *out = got;
    rc = 0;
done:
    explicit_bzero(&got, sizeof got);
    fetch_wipe(&body);
    fetch_wipe(&token);
    curl_slist_free_all(hdrs);
    return rc;
}

/* ---- STS ------------------------------------------------------------------------------------ */

static xmlNode *xml_child(xmlNode *parent, const char *name)
{
    for (xmlNode *n = parent ? parent->children : NULL; n; n = n->next)
        if (n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0)
            return n;
    return NULL;
}

/* The first element called `name` at any depth under n (depth-first). */
static xmlNode *xml_find(xmlNode *n, const char *name, int depth)
{
    for (; n && depth < 8; n = n->next) {
        if (n->type != XML_ELEMENT_NODE)
            continue;
        if (strcmp((const char *)n->name, name) == 0)
            return n;
        xmlNode *in = xml_find(n->children, name, depth + 1);
        if (in)
            return in;
    }
    return NULL;
}

/* The text of child `name` of parent into out; -1 when missing, empty or too long. */
static int xml_text(xmlNode *parent, const char *name, char *out, size_t cap)
{
    xmlNode *n = xml_child(parent, name);
    xmlChar *t = n ? xmlNodeGetContent(n) : NULL;
    int rc = -1;
    if (t) {
        size_t len = strlen((const char *)t);
        if (len > 0 && len < cap) {
            memcpy(out, t, len + 1);
            rc = 0;
        }
        explicit_bzero(t, len);
        xmlFree(t);
    }
    return rc;
}

/* Reads an STS answer: the credentials of a 200, the error of anything else. */
static int sts_parse(const s3_creds_src *s, const char *action, long status, const shoal_buf *body, s3_creds *out)
{
    int rc = -1;
    char expiration[64] = "", code[128] = "", message[512] = "";
    xmlDoc *doc = body->len ? xmlReadMemory((const char *)body->data, (int)body->len, "sts.xml", NULL,
                                            XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)
                            : NULL;
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    if (status != 200) {
        xmlNode *err = xml_find(root, "Error", 0);
        bool has_code = xml_text(err, "Code", code, sizeof code) == 0;
        bool has_msg = xml_text(err, "Message", message, sizeof message) == 0;
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: STS %s at %s: HTTP %ld %s%s%s", s->what, action, s->url, status,
                        has_code ? code : "(no error code)", has_msg ? ": " : "", has_msg ? message : "");
        goto done;
    }
    xmlNode *cred = xml_find(root, "Credentials", 0);
    if (!cred) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: STS %s at %s: the answer has no Credentials element%s", s->what,
                        action, s->url, doc ? "" : " (not XML)");
        goto done;
    }
    if (xml_text(cred, "AccessKeyId", out->access_key, sizeof out->access_key) != 0 ||
        xml_text(cred, "SecretAccessKey", out->secret_key, sizeof out->secret_key) != 0 ||
        xml_text(cred, "SessionToken", out->session_token, sizeof out->session_token) != 0 ||
        xml_text(cred, "Expiration", expiration, sizeof expiration) != 0) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS,
                        "%s: STS %s at %s: AccessKeyId, SecretAccessKey, SessionToken or Expiration is missing, "
                        "empty or too long", s->what, action, s->url);
        goto done;
    }
    if (s3_creds_parse_time(expiration, &out->expires) != 0) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: STS %s at %s: bad Expiration '%s'", s->what, action, s->url,
                        expiration);
        goto done;
    }
    rc = 0;
done:
    xmlFreeDoc(doc);
    return rc;
}

/* Appends "&name=value" (value URI-encoded) to the form. */
static int form_add(shoal_buf *form, const char *name, const char *value)
{
    if (shoal_buf_appendf(form, "%s%s=", form->len ? "&" : "", name) != 0 ||
        s3_uri_encode(form, value, strlen(value), false) != 0)
        return shoal_error_set(SHOAL_ERR_NOMEM, "STS request: out of memory");
    return 0;
}

/* Splits an endpoint URL into its authority (host[:port], for the Host header) and path. */
static int url_split(const char *url, char *authority, size_t cap, const char **path)
{
    const char *a = strstr(url, "://");
    if (!a)
        return -1;
    a += 3;
    size_t n = strcspn(a, "/?#");
    if (n == 0 || n >= cap)
        return -1;
    memcpy(authority, a, n);
    authority[n] = '\0';
    *path = a[n] == '/' ? a + n : "/";
    return 0;
}

/* Signs the AssumeRole POST with the signer's credentials; adds the headers to *hdrs. */
static int sts_sign(const s3_creds_src *s, const s3_creds *signer, const char *authority, const char *path,
                    const shoal_buf *form, int64_t now, struct curl_slist **hdrs)
{
    int rc = -1;
    char date[17], hash[65];
    s3_amz_date(now, date);
    s3_sha256_hex(form->data, form->len, hash);
    const s3_kv headers[] = {{"Host", authority},
                             {"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"}};
    s3_sigv4_request req = {.method = "POST", .path = path, .headers = headers, .n_headers = 2,
                            .payload_sha256 = hash};
    s3_sigv4_params sp = {.access_key = signer->access_key, .secret_key = signer->secret_key,
                          .session_token = signer->session_token[0] ? signer->session_token : NULL,
                          .region = s->region, .service = "sts", .amz_date = date};
    s3_sigv4_result r;
    s3_sigv4_result_create(&r);
    if (s3_sigv4_sign_header(&req, &sp, &r) != 0) {
        shoal_error_wrap("%s: signing the STS request", s->what);
        goto done;
    }
    if (fetch_header(hdrs, s->what, "Authorization: %s", shoal_buf_str(&r.authorization)) != 0)
        goto done;
    char *save = NULL;
    for (char *h = strtok_r((char *)r.added_headers.data, "\n", &save); h; h = strtok_r(NULL, "\n", &save))
        if (fetch_header(hdrs, s->what, "%s", h) != 0)
            goto done;
    rc = 0;
done:
    if (r.added_headers.data)
        explicit_bzero(r.added_headers.data, r.added_headers.cap);
    s3_sigv4_result_destroy(&r);
    return rc;
}

int s3_creds_sts_fetch(s3_creds_src *s, const s3_creds *signer, int64_t now, s3_creds *out)
{
    int rc = -1;
    long status = 0;
    bool web = s->kind == S3_CREDS_WEB_IDENTITY;
    const char *action = web ? "AssumeRoleWithWebIdentity" : "AssumeRole";
    shoal_buf form = {0}, token = {0}, body = {0};
    struct curl_slist *hdrs = NULL;
    char authority[256], session[64], duration[16];
    const char *path;
    s3_creds got = {0};
    if (url_split(s->url, authority, sizeof authority, &path) != 0) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: bad STS endpoint '%s'", s->what, s->url);
        goto done;
    }
    snprintf(session, sizeof session, "shoal-%lld", (long long)now);
    if (form_add(&form, "Action", action) != 0 || form_add(&form, "Version", "2011-06-15") != 0 ||
        form_add(&form, "RoleArn", s->role_arn) != 0 ||
        form_add(&form, "RoleSessionName", s->session_name ? s->session_name : session) != 0)
        goto done;
    if (web && (read_token_file(s->what, s->token_file, &token) != 0 ||
                form_add(&form, "WebIdentityToken", shoal_buf_str(&token)) != 0))
        goto done;
    if (s->external_id && form_add(&form, "ExternalId", s->external_id) != 0)
        goto done;
    snprintf(duration, sizeof duration, "%d", s->duration);
    if (s->duration > 0 && form_add(&form, "DurationSeconds", duration) != 0)
        goto done;
    if (fetch_header(&hdrs, s->what, "%s", "Content-Type: application/x-www-form-urlencoded; charset=utf-8") != 0 ||
        fetch_header(&hdrs, s->what, "Host: %s", authority) != 0 || fetch_header(&hdrs, s->what, "%s", "Expect:") != 0)
        goto done;
    if (!web && sts_sign(s, signer, authority, path, &form, now, &hdrs) != 0)
        goto done;
    fetch_call fc = {.what = s->what, .method = "POST", .url = s->url, .headers = hdrs,
                     .body = shoal_buf_str(&form)};
    if (fetch_perform(&fc, &body, &status) != 0 || sts_parse(s, action, status, &body, &got) != 0)
        goto done;
    *out = got;
    LOG_INFO("s3", "credentials", "source=sts action=%s role=%s expires=%lld", action, s->role_arn,
             (long long)got.expires);
    rc = 0;
done:
    explicit_bzero(&got, sizeof got);
    fetch_wipe(&form);
    fetch_wipe(&token);
    fetch_wipe(&body);
    curl_slist_free_all(hdrs);
    return rc;
}
