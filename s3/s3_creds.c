/*
 * s3_creds: the credentials chain (environment, shared files with profiles, IMDSv2, anonymous).
 *
 * The chain is resolved once, in s3_creds_provider_new(), so a daemon with no credentials fails
 * at start with one message that lists every source it tried and why each gave nothing. After
 * that only credentials from the instance metadata service change: s3_creds_get() refreshes them
 * under the provider's mutex once they are within five minutes of their expiry, so concurrent
 * callers wait for one refresh instead of each starting their own. A failed refresh keeps the
 * current credentials while they are still valid (and waits ten seconds before trying again, so
 * a dead metadata service does not stall every request); once they have expired, get fails.
 *
 * Shared files are INI, read with libinih. Debian's libinih is built with 200-byte lines and
 * silently cuts longer ones, but a session token is often over a thousand bytes. So the file is
 * fed to ini_parse_stream() through our own line reader: a line that does not fit is handed to
 * inih as "name=<marker><index>" and its full value is kept aside, where the handler finds it.
 * inih still does all the parsing and reports the line of the first malformed entry. A missing
 * file is not an error; an unreadable or malformed one is, naming the file and the line.
 *
 * IMDSv2 is three small HTTP calls through libcurl: PUT /latest/api/token (with the TTL header),
 * GET the role name, GET the role's JSON document. The connect timeout is one second so a
 * machine without a metadata service falls through quickly. The JSON is read by a bounded
 * scanner of one flat object with string values, which is all that document is.
 *
 * No secret (secret key, session token, IMDS token) is ever logged or put in an error message.
 */
#include "s3_creds.h"

#include "shoal_buf.h"
#include "shoal_error.h"
#include "shoal_log.h"

#include <curl/curl.h>
#include <ini.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CREDS_REFRESH_MARGIN 300        /* seconds before expiry at which IMDS credentials are renewed */
#define CREDS_RETRY_AFTER 10            /* seconds between attempts after a failed refresh */
#define IMDS_DEFAULT_ENDPOINT "http://169.254.169.254"
#define IMDS_CONNECT_TIMEOUT_MS 1000L
#define IMDS_TIMEOUT_MS 5000L
#define IMDS_MAX_BODY 65536
#define INI_LONG_MARKER '\x1e'          /* first byte of a value kept aside by creds_ini_read */

struct s3_creds_provider {
    pthread_mutex_t lock;
    s3_creds cur;
    const char *source;          /* static string */
    char imds_endpoint[256];     /* "" unless the credentials came from IMDS */
    int64_t next_attempt;        /* no refresh before this time after a failure */
    bool curl_ready;
};

static const char *creds_env(const s3_creds_options *opt, const char *name)
{
    const char *v = opt->getenv_fn ? opt->getenv_fn(name) : getenv(name);
    return v && *v ? v : NULL;
}

/* Copies src into a fixed field; -1 (with a message naming `what`, never the value) if too long. */
static int creds_copy(char *dst, size_t cap, const char *src, const char *what)
{
    size_t n = strlen(src);
    if (n >= cap)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s is %zu bytes, longer than the %zu allowed", what, n,
                               cap - 1);
    memcpy(dst, src, n + 1);
    return 0;
}

/* ---- 1. environment ---------------------------------------------------------------------- */

/* 1: found, 0: not set (noted in tried), -1: error. */
static int creds_from_env(const s3_creds_options *opt, s3_creds *out, shoal_buf *tried)
{
    const char *id = creds_env(opt, "AWS_ACCESS_KEY_ID");
    const char *secret = creds_env(opt, "AWS_SECRET_ACCESS_KEY");
    const char *token = creds_env(opt, "AWS_SESSION_TOKEN");
    if (!id && !secret) {
        shoal_buf_append_str(tried, "environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY not set)");
        return 0;
    }
    if (!id || !secret)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s is set but %s is not",
                               id ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                               id ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
    if (creds_copy(out->access_key, sizeof out->access_key, id, "AWS_ACCESS_KEY_ID") != 0 ||
        creds_copy(out->secret_key, sizeof out->secret_key, secret, "AWS_SECRET_ACCESS_KEY") != 0 ||
        creds_copy(out->session_token, sizeof out->session_token, token ? token : "", "AWS_SESSION_TOKEN") != 0)
        return -1;
    return 1;
}

/* ---- 2. shared credentials and config files ---------------------------------------------- */

typedef struct creds_ini {
    FILE *f;
    const char *section, *alt_section; /* the profile's section name(s) in this file */
    bool found;                        /* the section exists */
    bool has_id, has_secret;
    const char *too_long;              /* key whose value did not fit */
    s3_creds *out;
    char **kept;                       /* values of over-long lines, see creds_ini_read */
    size_t n_kept;
} creds_ini;

/* inih's line reader: whole lines from the file; see the essay for over-long lines. */
static char *creds_ini_read(char *buf, int size, void *stream)
{
    creds_ini *ci = stream;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, ci->f);
    if (n < 0) {
        free(line);
        return NULL;
    }
    if (n < size) {
        memcpy(buf, line, (size_t)n + 1);
        free(line);
        return buf;
    }
    char *eq = strpbrk(line, "=:");
    char **kept = realloc(ci->kept, (ci->n_kept + 1) * sizeof *kept);
    if (kept)
        ci->kept = kept;
    if (eq && kept && eq - line < size - 32 && line[0] != '[' && line[0] != ';' && line[0] != '#') {
        line[strcspn(line, "\r\n")] = '\0';
        char *value = strdup(eq + 1);
        if (value) {
            ci->kept[ci->n_kept] = value;
            snprintf(buf, (size_t)size, "%.*s=%c%zu\n", (int)(eq - line), line, INI_LONG_MARKER, ci->n_kept++);
            explicit_bzero(line, (size_t)n);
            free(line);
            return buf;
        }
    }
    /* Not a key = value line: hand inih a cut copy, which it will judge (comment, or malformed). */
    snprintf(buf, (size_t)size, "%.*s\n", size - 2, line);
    explicit_bzero(line, (size_t)n);
    free(line);
    return buf;
}

static int creds_ini_handler(void *user, const char *section, const char *name, const char *value)
{
    creds_ini *ci = user;
    if (strcmp(section, ci->section) != 0 && !(ci->alt_section && strcmp(section, ci->alt_section) == 0))
        return 1;
    ci->found = true;
    if (value[0] == INI_LONG_MARKER) {
        size_t i = strtoul(value + 1, NULL, 10);
        value = i < ci->n_kept ? ci->kept[i] : "";
        while (*value == ' ' || *value == '\t')
            value++;
    }
    char *dst;
    size_t cap;
    if (strcasecmp(name, "aws_access_key_id") == 0) {
        dst = ci->out->access_key;
        cap = sizeof ci->out->access_key;
        ci->has_id = true;
    } else if (strcasecmp(name, "aws_secret_access_key") == 0) {
        dst = ci->out->secret_key;
        cap = sizeof ci->out->secret_key;
        ci->has_secret = true;
    } else if (strcasecmp(name, "aws_session_token") == 0) {
        dst = ci->out->session_token;
        cap = sizeof ci->out->session_token;
    } else {
        return 1;
    }
    size_t n = strlen(value);
    while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t'))
        n--;
    if (n >= cap) {
        ci->too_long = name;
        return 0;
    }
    memcpy(dst, value, n);
    dst[n] = '\0';
    return 1;
}

/* Reads `section` (or alt) of one file into out. 1: file missing, 0: read (ci->found says
 * whether the profile is there), -1: unreadable or malformed. */
static int creds_ini_parse(const char *path, creds_ini *ci)
{
    int rc = 0;
    ci->f = fopen(path, "r");
    if (!ci->f) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 1;
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "cannot read %s: %s", path, strerror(errno));
    }
    errno = 0;
    int line = ini_parse_stream(creds_ini_read, ci, creds_ini_handler, ci);
    if (ferror(ci->f))
        rc = shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "cannot read %s: %s", path, strerror(errno ? errno : EIO));
    else if (line > 0 && ci->too_long)
        rc = shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s line %d: %s is too long", path, line, ci->too_long);
    else if (line > 0)
        rc = shoal_error_set(SHOAL_ERR_S3_CREDENTIALS,
                             "%s line %d: malformed (expected [section], key = value or a comment)", path, line);
    else if (line < 0)
        rc = shoal_error_set(SHOAL_ERR_NOMEM, "reading %s: out of memory", path);
    fclose(ci->f);
    ci->f = NULL;
    for (size_t i = 0; i < ci->n_kept; i++) {
        explicit_bzero(ci->kept[i], strlen(ci->kept[i]));
        free(ci->kept[i]);
    }
    free(ci->kept);
    ci->kept = NULL;
    ci->n_kept = 0;
    return rc;
}

/* One file of the profile step; 1: found, 0: not there (noted in tried), -1: error. */
static int creds_from_file(const char *path, const char *section, const char *alt, const char *profile,
                           s3_creds *out, shoal_buf *tried)
{
    s3_creds got = {0};
    creds_ini ci = {.section = section, .alt_section = alt, .out = &got};
    int rc = creds_ini_parse(path, &ci);
    if (rc == 1 || (rc == 0 && (!ci.found || (!ci.has_id && !ci.has_secret)))) {
        shoal_buf_appendf(tried, "%s (%s)", path,
                          rc == 1 ? "no such file" : ci.found ? "profile has no keys" : "no such profile");
        rc = 0;
    } else if (rc == 0 && (!ci.has_id || !ci.has_secret)) {
        rc = shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: profile '%s' has %s but no %s", path, profile,
                             ci.has_id ? "aws_access_key_id" : "aws_secret_access_key",
                             ci.has_id ? "aws_secret_access_key" : "aws_access_key_id");
    } else if (rc == 0) {
        *out = got;
        rc = 1;
    }
    explicit_bzero(&got, sizeof got);
    return rc;
}

static int creds_from_profile(const s3_creds_options *opt, s3_creds *out, shoal_buf *tried)
{
    const char *env_profile = creds_env(opt, "AWS_PROFILE");
    const char *profile = opt->profile ? opt->profile : env_profile ? env_profile : "default";
    bool named = opt->profile || env_profile;
    const char *home = creds_env(opt, "HOME");
    char cred_path[1024], conf_path[1024], conf_section[300];
    const char *cred_env = creds_env(opt, "AWS_SHARED_CREDENTIALS_FILE");
    const char *conf_env = creds_env(opt, "AWS_CONFIG_FILE");
    snprintf(cred_path, sizeof cred_path, "%s%s", cred_env ? cred_env : home ? home : "~",
             cred_env ? "" : "/.aws/credentials");
    snprintf(conf_path, sizeof conf_path, "%s%s", conf_env ? conf_env : home ? home : "~",
             conf_env ? "" : "/.aws/config");
    snprintf(conf_section, sizeof conf_section, "profile %s", profile);

    shoal_buf_appendf(tried, "; profile '%s' in ", profile);
    size_t files_at = tried->len;
    int rc = creds_from_file(cred_path, profile, NULL, profile, out, tried);
    if (rc == 0) {
        shoal_buf_append_str(tried, " and ");
        /* In the config file the default profile is [default]; others are [profile NAME]. */
        bool dflt = strcmp(profile, "default") == 0;
        rc = creds_from_file(conf_path, dflt ? "default" : conf_section, dflt ? conf_section : NULL, profile, out,
                             tried);
    }
    if (rc == 0 && named)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "profile '%s' not found: %s", profile,
                               shoal_buf_str(tried) + files_at);
    if (rc == 1)
        LOG_INFO("s3", "credentials", "source=profile profile=%s", profile);
    return rc;
}

/* ---- 3. IMDSv2 ---------------------------------------------------------------------------- */

static size_t imds_write(char *data, size_t size, size_t n, void *ud)
{
    shoal_buf *b = ud;
    if (b->len + size * n > IMDS_MAX_BODY || shoal_buf_append(b, data, size * n) != 0)
        return 0; /* makes curl fail the transfer */
    return size * n;
}

/* One call to the metadata service; the body (trimmed of trailing blanks) into body. */
static int imds_call(const char *endpoint, const char *method, const char *path, const char *header,
                     shoal_buf *body)
{
    int rc = -1;
    long status = 0;
    char url[512];
    struct curl_slist *hdrs = NULL, *h2 = NULL;
    CURL *c = curl_easy_init();
    if (!c)
        return shoal_error_set(SHOAL_ERR_NOMEM, "instance metadata: curl_easy_init failed");
    shoal_buf_reset(body);
    snprintf(url, sizeof url, "%s%s", endpoint, path);
    hdrs = curl_slist_append(NULL, header);
    h2 = hdrs ? curl_slist_append(hdrs, "Content-Type:") : NULL;
    if (!h2) {
        shoal_error_set(SHOAL_ERR_NOMEM, "instance metadata: out of memory");
        goto done;
    }
    hdrs = h2;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, IMDS_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, IMDS_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, imds_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    if (strcmp(method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
    }
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "instance metadata at %s: %s %s: %s", endpoint, method, path,
                        curl_easy_strerror(cc));
        goto done;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "instance metadata at %s: %s %s: HTTP %ld", endpoint, method,
                        path, status);
        goto done;
    }
    while (body->len > 0 && strchr(" \t\r\n", body->data[body->len - 1]))
        body->data[--body->len] = '\0';
    rc = 0;
done:
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return rc;
}

typedef struct imds_field {
    const char *key;
    char *out;
    size_t cap;
    bool seen;
} imds_field;

/* Decodes the JSON string at *p (just past its opening quote) into out (cap bytes). Returns
 * -1 when malformed; *overflow is set when it did not fit (the rest is skipped). */
static int imds_json_string(const char **p, const char *end, char *out, size_t cap, bool *overflow)
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
                /* Only ASCII escapes: nothing in this document needs more. */
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

static void imds_json_ws(const char **p, const char *end)
{
    while (*p < end && strchr(" \t\r\n", **p) && **p)
        (*p)++;
}

/* Scans one flat JSON object; copies the string members named in fields. */
static int imds_json_scan(const char *s, size_t len, imds_field *fields, size_t n_fields)
{
    const char *p = s, *end = s + len;
    char key[64], scratch[64];
    bool overflow;
    imds_json_ws(&p, end);
    if (p >= end || *p++ != '{')
        goto fail_malformed;
    imds_json_ws(&p, end);
    if (p < end && *p == '}')
        return 0;
    for (;;) {
        if (p >= end || *p++ != '"' || imds_json_string(&p, end, key, sizeof key, &overflow) != 0)
            goto fail_malformed;
        imds_json_ws(&p, end);
        if (p >= end || *p++ != ':')
            goto fail_malformed;
        imds_json_ws(&p, end);
        if (p >= end)
            goto fail_malformed;
        if (*p == '"') {
            p++;
            imds_field *f = NULL;
            for (size_t i = 0; i < n_fields && !overflow; i++)
                if (strcmp(fields[i].key, key) == 0)
                    f = &fields[i];
            if (imds_json_string(&p, end, f ? f->out : scratch, f ? f->cap : sizeof scratch, &overflow) != 0)
                goto fail_malformed;
            if (f && overflow)
                return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "instance metadata: %s is longer than %zu bytes",
                                       f->key, f->cap - 1);
            if (f)
                f->seen = true;
        } else {
            /* A number, true, false or null: nothing we need. Objects and arrays do not occur. */
            const char *start = p;
            while (p < end && strchr("0123456789+-.eEtrufalsn", *p) && *p)
                p++;
            if (p == start)
                goto fail_malformed;
        }
        imds_json_ws(&p, end);
        if (p < end && *p == ',') {
            p++;
            imds_json_ws(&p, end);
            continue;
        }
        if (p < end && *p == '}')
            return 0;
        goto fail_malformed;
    }
fail_malformed:
    return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "instance metadata: malformed credentials document near byte %zu",
                           (size_t)(p - s));
}

/* "2026-11-24T17:00:00Z" (optionally with fractional seconds, or +00:00) to Unix seconds. */
static int imds_parse_time(const char *s, int64_t *out)
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
    if (strcmp(rest, "Z") != 0 && strcmp(rest, "+00:00") != 0)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = (int64_t)t;
    return 0;
}

static bool imds_role_valid(const char *role)
{
    size_t n = strlen(role);
    if (n == 0 || n > 128)
        return false;
    for (const char *c = role; *c; c++)
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || strchr("+=,.@_-", *c)))
            return false;
    return true;
}

#define IMDS_CREDS_PATH "/latest/meta-data/iam/security-credentials/"

/* Token, role, credentials. Fills out on success. */
static int imds_fetch(const char *endpoint, s3_creds *out)
{
    int rc = -1;
    shoal_buf body = {0}, header = {0};
    char path[256], code[32] = "", expiration[64] = "";
    s3_creds got = {0};
    if (imds_call(endpoint, "PUT", "/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds: 21600", &body) != 0)
        goto done;
    if (body.len == 0 || body.len > 1024 || strpbrk(shoal_buf_str(&body), "\r\n")) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "instance metadata at %s: unusable session token (%zu bytes)",
                        endpoint, body.len);
        goto done;
    }
    if (shoal_buf_appendf(&header, "X-aws-ec2-metadata-token: %s", shoal_buf_str(&body)) != 0 ||
        imds_call(endpoint, "GET", IMDS_CREDS_PATH, shoal_buf_str(&header), &body) != 0)
        goto done;
    if (body.len > 0)
        body.data[strcspn(shoal_buf_str(&body), "\r\n")] = '\0';
    if (!imds_role_valid(shoal_buf_str(&body))) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "instance metadata at %s: no IAM role attached (or a bad role name)",
                        endpoint);
        goto done;
    }
    char role[129];
    snprintf(role, sizeof role, "%s", shoal_buf_str(&body));
    snprintf(path, sizeof path, IMDS_CREDS_PATH "%s", role);
    if (imds_call(endpoint, "GET", path, shoal_buf_str(&header), &body) != 0)
        goto done;
    imds_field fields[] = {
        {"Code", code, sizeof code, false},
        {"AccessKeyId", got.access_key, sizeof got.access_key, false},
        {"SecretAccessKey", got.secret_key, sizeof got.secret_key, false},
        {"Token", got.session_token, sizeof got.session_token, false},
        {"Expiration", expiration, sizeof expiration, false},
    };
    if (imds_json_scan((const char *)body.data, body.len, fields, sizeof fields / sizeof *fields) != 0)
        goto done;
    if (fields[0].seen && strcmp(code, "Success") != 0) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "instance metadata at %s: role %s answered Code=%s", endpoint, role,
                        code);
        goto done;
    }
    if (!fields[1].seen || !fields[2].seen || !got.access_key[0] || !got.secret_key[0]) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "instance metadata at %s: role %s: no AccessKeyId/SecretAccessKey",
                        endpoint, role);
        goto done;
    }
    if (fields[4].seen && imds_parse_time(expiration, &got.expires) != 0) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "instance metadata at %s: role %s: bad Expiration '%s'", endpoint,
                        role, expiration);
        goto done;
    }
    *out = got;
    LOG_INFO("s3", "credentials", "source=imds role=%s expires=%lld", role, (long long)got.expires);
    rc = 0;
done:
    explicit_bzero(&got, sizeof got);
    if (body.data)
        explicit_bzero(body.data, body.cap);
    if (header.data)
        explicit_bzero(header.data, header.cap);
    shoal_buf_destroy(&body);
    shoal_buf_destroy(&header);
    return rc;
}

/* ---- the provider ------------------------------------------------------------------------- */

static bool creds_imds_disabled(const s3_creds_options *opt)
{
    const char *v = creds_env(opt, "AWS_EC2_METADATA_DISABLED");
    return opt->disable_imds || (v && strcasecmp(v, "true") == 0);
}

s3_creds_provider *s3_creds_provider_new(const s3_creds_options *opt_in)
{
    static const s3_creds_options defaults = {0};
    const s3_creds_options *opt = opt_in ? opt_in : &defaults;
    shoal_buf tried = {0};
    s3_creds_provider *p = calloc(1, sizeof *p);
    if (!p) {
        shoal_error_set(SHOAL_ERR_NOMEM, "credentials provider: out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    if (opt->anonymous) {
        p->cur.anonymous = true;
        p->source = "anonymous";
        LOG_INFO("s3", "credentials", "source=anonymous");
        goto done;
    }
    int rc = creds_from_env(opt, &p->cur, &tried);
    if (rc == 1) {
        p->source = "environment";
        LOG_INFO("s3", "credentials", "source=environment");
        goto done;
    }
    if (rc == 0)
        rc = creds_from_profile(opt, &p->cur, &tried);
    if (rc == 1) {
        p->source = "profile";
        goto done;
    }
    if (rc < 0)
        goto fail;
    if (creds_imds_disabled(opt)) {
        shoal_buf_append_str(&tried, "; instance metadata (disabled)");
    } else {
        const char *ep = creds_env(opt, "AWS_EC2_METADATA_SERVICE_ENDPOINT");
        snprintf(p->imds_endpoint, sizeof p->imds_endpoint, "%s", ep ? ep : IMDS_DEFAULT_ENDPOINT);
        size_t n = strlen(p->imds_endpoint);
        while (n > 0 && p->imds_endpoint[n - 1] == '/')
            p->imds_endpoint[--n] = '\0';
        p->curl_ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
        if (p->curl_ready && imds_fetch(p->imds_endpoint, &p->cur) == 0) {
            p->source = "imds";
            goto done;
        }
        shoal_buf_appendf(&tried, "; %s", p->curl_ready ? shoal_error_message() : "instance metadata (curl init failed)");
    }
    shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "no S3 credentials found; tried %s; use --no-sign-request for a public bucket",
                    shoal_buf_str(&tried));
fail:
    shoal_buf_destroy(&tried);
    s3_creds_provider_delete(p);
    return NULL;
done:
    shoal_buf_destroy(&tried);
    return p;
}

void s3_creds_provider_delete(s3_creds_provider *p)
{
    if (!p)
        return;
    pthread_mutex_destroy(&p->lock);
    if (p->curl_ready)
        curl_global_cleanup();
    explicit_bzero(p, sizeof *p);
    free(p);
}

int s3_creds_get(s3_creds_provider *p, s3_creds *out)
{
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    int64_t now = (int64_t)time(NULL);
    if (p->imds_endpoint[0] && p->cur.expires != 0 && now + CREDS_REFRESH_MARGIN >= p->cur.expires &&
        now >= p->next_attempt) {
        s3_creds fresh = {0};
        if (imds_fetch(p->imds_endpoint, &fresh) == 0) {
            p->cur = fresh;
        } else if (now >= p->cur.expires) {
            p->next_attempt = now + CREDS_RETRY_AFTER;
            rc = shoal_error_wrap("credentials expired and could not be refreshed");
        } else {
            p->next_attempt = now + CREDS_RETRY_AFTER;
            char q[256];
            LOG_WARN("s3", "credentials_refresh_failed", "expires_in=%lld error=%s",
                     (long long)(p->cur.expires - now), shoal_log_q(q, sizeof q, shoal_error_message()));
        }
        explicit_bzero(&fresh, sizeof fresh);
    } else if (p->imds_endpoint[0] && p->cur.expires != 0 && now >= p->cur.expires) {
        rc = shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "credentials expired; the metadata service failed to renew them");
    }
    if (rc == 0)
        *out = p->cur;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

const char *s3_creds_source(const s3_creds_provider *p) { return p->source; }
