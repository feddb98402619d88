/*
 * s3_creds: the credentials chain and the provider that keeps its credentials current.
 *
 * The order is aws-sdk-go-v2's (the AWS Common Runtime's differs only in putting profiles
 * before web identity; botocore's in trying a profile's role_arn before the web identity
 * variables): environment keys, web identity from the environment, the profile, container
 * credentials, the instance metadata service. A caller that names a profile starts at the
 * profile, as the SDKs do for an explicit profile. The first source that is configured is the
 * one used: if it then fails (STS refuses the role, the container endpoint says 401, the
 * credential_process exits 1), provider_new fails with that reason, and the chain does not go
 * on to a later source. This is what the SDKs do, and it matters: a pod given a role by IRSA
 * must not quietly run as the node's instance role because STS was briefly unreachable. Only
 * the metadata service, which every EC2 machine "has", counts as not configured when it does
 * not answer, and then the error lists every source tried with why each gave nothing.
 *
 * Refresh. A source keeps the last credentials it gave (s3_creds_src.cur). s3_creds_get() takes
 * the provider's mutex and asks the source for them; a source whose credentials expire within
 * five minutes fetches new ones first, so concurrent callers wait for one renewal rather than
 * each starting their own. An AssumeRole source renews its signing source first when that one
 * needs it. A failed renewal keeps credentials that are still valid (with a warning) and waits
 * ten seconds before the next attempt, so a dead STS does not stall every S3 request; once they
 * have expired, get fails with the reason.
 *
 * Rotation. When the credentials come from a profile, every get compares the two files' inode,
 * size and mtime with what was read (two stat calls); when they changed, the profile is read
 * again and, if it gives working credentials, replaces the old source. If the new files are
 * broken, the old credentials stay and a warning says why; the next change is tried again.
 *
 * No secret (secret key, session token, tokens of IMDS, containers or web identity) is logged
 * or put in an error message.
 */
#include "s3_creds_internal.h"
#include "s3_endpoint.h"

#include "shoal_assert.h"
#include "shoal_error.h"
#include "shoal_log.h"

#include <curl/curl.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CREDS_REFRESH_MARGIN 300 /* seconds before expiry at which credentials are renewed */
#define CREDS_RETRY_AFTER 10     /* seconds between attempts after a failed renewal */
#define IMDS_DEFAULT_ENDPOINT "http://169.254.169.254"
#define ECS_CONTAINER_HOST "http://169.254.170.2"

struct s3_creds_provider {
    pthread_mutex_t lock;
    s3_creds_options opt;      /* the caller's, with the strings below */
    char *opt_profile, *opt_region, *opt_container_host;
    s3_creds_src *src;         /* NULL when anonymous */
    const char *source;        /* static string */
    s3_creds_files *files;     /* set when the credentials come from a profile: watched */
    char *profile;             /* that profile */
    bool curl_ready;
};

/* ---- helpers shared by the chain's files ---------------------------------------------------- */

const char *s3_creds_env(const s3_creds_options *opt, const char *name)
{
    const char *v = opt->getenv_fn ? opt->getenv_fn(name) : getenv(name);
    return v && *v ? v : NULL;
}

int s3_creds_copy(char *dst, size_t cap, const char *src, const char *what)
{
    size_t n = strlen(src);
    if (n >= cap)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s is %zu bytes, longer than the %zu allowed", what, n,
                               cap - 1);
    memcpy(dst, src, n + 1);
    return 0;
}

int s3_creds_src_set(char **field, const char *v)
{
    free(*field);
    *field = NULL;
    if (v && !(*field = strdup(v)))
        return shoal_error_set(SHOAL_ERR_NOMEM, "credentials: out of memory");
    return 0;
}

s3_creds_src *s3_creds_src_new(s3_creds_kind kind, const char *what, ...)
{
    s3_creds_src *s = calloc(1, sizeof *s);
    if (!s) {
        shoal_error_set(SHOAL_ERR_NOMEM, "credentials: out of memory");
        return NULL;
    }
    s->kind = kind;
    va_list ap;
    va_start(ap, what);
    vsnprintf(s->what, sizeof s->what, what, ap);
    va_end(ap);
    return s;
}

void s3_creds_src_delete(s3_creds_src *s)
{
    if (!s)
        return;
    s3_creds_src_delete(s->base);
    if (s->token) {
        explicit_bzero(s->token, strlen(s->token));
        free(s->token);
    }
    free(s->url);
    free(s->region);
    free(s->role_arn);
    free(s->session_name);
    free(s->external_id);
    free(s->token_file);
    free(s->command);
    explicit_bzero(s, sizeof *s);
    free(s);
}

int s3_creds_src_fetch(s3_creds_src *s, int64_t now, s3_creds *out)
{
    s3_creds signer;
    int rc;
    switch (s->kind) {
    case S3_CREDS_STATIC:
        *out = s->cur;
        return 0;
    case S3_CREDS_WEB_IDENTITY:
        return s3_creds_sts_fetch(s, NULL, now, out);
    case S3_CREDS_ASSUME_ROLE:
        if (s3_creds_src_get(s->base, now, &signer) != 0)
            return shoal_error_wrap("%s: its source credentials", s->what);
        rc = s3_creds_sts_fetch(s, &signer, now, out);
        explicit_bzero(&signer, sizeof signer);
        return rc;
    case S3_CREDS_PROCESS:
        return s3_creds_process_fetch(s, out);
    case S3_CREDS_CONTAINER:
        return s3_creds_container_fetch(s, out);
    case S3_CREDS_IMDS:
        return s3_creds_imds_fetch(s, out);
    }
    return shoal_error_set(SHOAL_ERR_INVAL, "%s: unknown kind of source", s->what);
}

int s3_creds_src_get(s3_creds_src *s, int64_t now, s3_creds *out)
{
    bool have = s->cur.access_key[0] != '\0';
    if (s->kind == S3_CREDS_STATIC || (have && (s->cur.expires == 0 || now + CREDS_REFRESH_MARGIN < s->cur.expires))) {
        *out = s->cur;
        return 0;
    }
    bool valid = have && now < s->cur.expires;
    if (now < s->next_attempt) {
        if (valid) {
            *out = s->cur;
            return 0;
        }
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS,
                               "%s: the credentials expired and the last renewal failed; next attempt in %lld s",
                               s->what, (long long)(s->next_attempt - now));
    }
    s3_creds fresh = {0};
    int rc = s3_creds_src_fetch(s, now, &fresh);
    if (rc == 0) {
        s->cur = fresh;
        s->next_attempt = 0;
        *out = fresh;
    } else {
        s->next_attempt = now + CREDS_RETRY_AFTER;
        if (valid) {
            char q[512];
            LOG_WARN("s3", "credentials_refresh_failed", "expires_in=%lld error=%s", (long long)(s->cur.expires - now),
                     shoal_log_q(q, sizeof q, shoal_error_message()));
            *out = s->cur;
            rc = 0;
        } else if (have) {
            shoal_error_wrap("credentials expired and could not be renewed");
        }
    }
    explicit_bzero(&fresh, sizeof fresh);
    return rc;
}

/* ---- sources outside profiles ----------------------------------------------------------------- */

int s3_creds_env_source(const s3_creds_options *opt, s3_creds_src **out, shoal_buf *tried)
{
    const char *id = s3_creds_env(opt, "AWS_ACCESS_KEY_ID");
    const char *secret = s3_creds_env(opt, "AWS_SECRET_ACCESS_KEY");
    const char *token = s3_creds_env(opt, "AWS_SESSION_TOKEN");
    if (!id && !secret) {
        if (tried)
            shoal_buf_append_str(tried, "environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY not set)");
        return 0;
    }
    if (!id || !secret)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s is set but %s is not",
                               id ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                               id ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
    s3_creds_src *s = s3_creds_src_new(S3_CREDS_STATIC, "environment");
    if (!s || s3_creds_copy(s->cur.access_key, sizeof s->cur.access_key, id, "AWS_ACCESS_KEY_ID") != 0 ||
        s3_creds_copy(s->cur.secret_key, sizeof s->cur.secret_key, secret, "AWS_SECRET_ACCESS_KEY") != 0 ||
        s3_creds_copy(s->cur.session_token, sizeof s->cur.session_token, token ? token : "", "AWS_SESSION_TOKEN") != 0) {
        s3_creds_src_delete(s);
        return -1;
    }
    *out = s;
    return 1;
}

/* The regions whose "legacy" STS endpoint is the global one (AWS_STS_REGIONAL_ENDPOINTS=legacy). */
static bool sts_legacy_global(const char *region)
{
    static const char *const global[] = {"ap-northeast-1", "ap-south-1", "ap-southeast-1", "ap-southeast-2",
                                         "aws-global",     "ca-central-1", "eu-central-1", "eu-north-1",
                                         "eu-west-1",      "eu-west-2",    "eu-west-3",    "sa-east-1",
                                         "us-east-1",      "us-east-2",    "us-west-1",    "us-west-2"};
    for (size_t i = 0; i < sizeof global / sizeof *global; i++)
        if (strcmp(region, global[i]) == 0)
            return true;
    return false;
}

static bool region_valid(const char *r)
{
    if (!*r || strlen(r) > 64)
        return false;
    for (; *r; r++)
        if (!((*r >= 'a' && *r <= 'z') || (*r >= '0' && *r <= '9') || *r == '-'))
            return false;
    return true;
}

s3_creds_src *s3_creds_sts_source(const s3_creds_options *opt, s3_creds_kind kind, const char *profile_region,
                                  const char *role_arn, const char *session_name, const char *what)
{
    char *override = NULL, url[256];
    const char *region = opt->region ? opt->region : s3_creds_env(opt, "AWS_REGION");
    if (!region)
        region = s3_creds_env(opt, "AWS_DEFAULT_REGION");
    if (!region)
        region = profile_region;
    const char *mode = s3_creds_env(opt, "AWS_STS_REGIONAL_ENDPOINTS");
    s3_creds_src *s = NULL;
    if (region && !region_valid(region)) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s: region '%s' is not a region name", what, region);
        return NULL;
    }
    if (mode && strcmp(mode, "regional") != 0 && strcmp(mode, "legacy") != 0) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "AWS_STS_REGIONAL_ENDPOINTS is '%s'; it takes regional or legacy",
                        mode);
        return NULL;
    }
    if (s3_endpoint_from_env("STS", opt->getenv_fn, &override) != 0)
        return NULL;
    if (override)
        snprintf(url, sizeof url, "%s", override);
    else if (!region || (mode && strcmp(mode, "legacy") == 0 && sts_legacy_global(region)))
        snprintf(url, sizeof url, "https://sts.amazonaws.com");
    else
        snprintf(url, sizeof url, "https://sts.%s.amazonaws.com%s", region, strncmp(region, "cn-", 3) ? "" : ".cn");
    /* The global endpoint signs for us-east-1; an override signs for the region given, if any. */
    const char *sign_region = region && (override || strstr(url, region)) ? region : "us-east-1";
    s = s3_creds_src_new(kind, "%s", what);
    if (!s || s3_creds_src_set(&s->url, url) != 0 || s3_creds_src_set(&s->region, sign_region) != 0 ||
        s3_creds_src_set(&s->role_arn, role_arn) != 0 || s3_creds_src_set(&s->session_name, session_name) != 0) {
        s3_creds_src_delete(s);
        s = NULL;
    }
    free(override);
    return s;
}

/* Web identity from AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN (+ AWS_ROLE_SESSION_NAME). */
static int web_identity_env_source(const s3_creds_options *opt, s3_creds_src **out, shoal_buf *tried)
{
    const char *file = s3_creds_env(opt, "AWS_WEB_IDENTITY_TOKEN_FILE");
    const char *arn = s3_creds_env(opt, "AWS_ROLE_ARN");
    if (!file) {
        shoal_buf_append_str(tried, "; web identity (AWS_WEB_IDENTITY_TOKEN_FILE not set)");
        return 0;
    }
    if (!arn)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not");
    char what[256];
    snprintf(what, sizeof what, "web identity (role %s)", arn);
    s3_creds_src *s =
        s3_creds_sts_source(opt, S3_CREDS_WEB_IDENTITY, NULL, arn, s3_creds_env(opt, "AWS_ROLE_SESSION_NAME"), what);
    if (!s || s3_creds_src_set(&s->token_file, file) != 0) {
        s3_creds_src_delete(s);
        return -1;
    }
    *out = s;
    return 1;
}

/* The host of an http(s) URL (without brackets for IPv6) into host. */
static int url_host(const char *url, char *host, size_t cap)
{
    const char *a = strstr(url, "://");
    if (!a)
        return -1;
    a += 3;
    size_t n = strcspn(a, "/?#");
    if (memchr(a, '@', n))
        return -1;
    const char *end;
    if (*a == '[') {
        a++;
        end = memchr(a, ']', n);
        if (!end)
            return -1;
    } else {
        end = a + strcspn(a, ":/?#");
    }
    if (end == a || (size_t)(end - a) >= cap)
        return -1;
    memcpy(host, a, (size_t)(end - a));
    host[end - a] = '\0';
    return 0;
}

/* The SDKs let a plain-http FULL_URI reach only the machine itself, the ECS agent
 * (169.254.170.2) and the EKS Pod Identity agent (169.254.170.23, fd00:ec2::23). */
static bool container_host_allowed(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6, eks6;
    if (strcmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1) {
        uint32_t a = ntohl(a4.s_addr);
        return (a >> 24) == 127 || a == 0xA9FEAA02u || a == 0xA9FEAA17u;
    }
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        inet_pton(AF_INET6, "fd00:ec2::23", &eks6);
        return IN6_IS_ADDR_LOOPBACK(&a6) || memcmp(&a6, &eks6, sizeof a6) == 0;
    }
    return false;
}

int s3_creds_container_source(const s3_creds_options *opt, s3_creds_src **out, shoal_buf *tried)
{
    const char *rel = s3_creds_env(opt, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = s3_creds_env(opt, "AWS_CONTAINER_CREDENTIALS_FULL_URI");
    char url[1024], host[256];
    if (!rel && !full) {
        if (tried)
            shoal_buf_append_str(tried, "; container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and "
                                        "AWS_CONTAINER_CREDENTIALS_FULL_URI not set)");
        return 0;
    }
    if (rel) {
        if (rel[0] != '/')
            return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS,
                                   "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI '%s' does not start with '/'", rel);
        snprintf(url, sizeof url, "%s%s", opt->container_host ? opt->container_host : ECS_CONTAINER_HOST, rel);
    } else {
        bool https = strncmp(full, "https://", 8) == 0;
        if ((!https && strncmp(full, "http://", 7) != 0) || url_host(full, host, sizeof host) != 0)
            return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS,
                                   "AWS_CONTAINER_CREDENTIALS_FULL_URI '%s' is not an http:// or https:// URL with a "
                                   "host", full);
        if (!https && !container_host_allowed(host))
            return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS,
                                   "AWS_CONTAINER_CREDENTIALS_FULL_URI: host '%s' is not allowed over plain http (only "
                                   "loopback, 169.254.170.2, 169.254.170.23 and fd00:ec2::23, as in the AWS SDKs)",
                                   host);
        snprintf(url, sizeof url, "%s", full);
    }
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "the container credentials URL holds blanks or control "
                                                             "bytes");
    s3_creds_src *s = s3_creds_src_new(S3_CREDS_CONTAINER, "container credentials at %s", url);
    const char *token_file = s3_creds_env(opt, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    if (!s || s3_creds_src_set(&s->url, url) != 0 || s3_creds_src_set(&s->token_file, token_file) != 0 ||
        s3_creds_src_set(&s->token, token_file ? NULL : s3_creds_env(opt, "AWS_CONTAINER_AUTHORIZATION_TOKEN")) != 0) {
        s3_creds_src_delete(s);
        return -1;
    }
    *out = s;
    return 1;
}

int s3_creds_imds_source(const s3_creds_options *opt, s3_creds_src **out, shoal_buf *tried)
{
    const char *off = s3_creds_env(opt, "AWS_EC2_METADATA_DISABLED");
    if (opt->disable_imds || (off && strcasecmp(off, "true") == 0)) {
        if (tried)
            shoal_buf_append_str(tried, "; instance metadata (disabled)");
        return 0;
    }
    const char *ep = s3_creds_env(opt, "AWS_EC2_METADATA_SERVICE_ENDPOINT");
    char url[256];
    snprintf(url, sizeof url, "%s", ep ? ep : IMDS_DEFAULT_ENDPOINT);
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        url[--n] = '\0';
    s3_creds_src *s = s3_creds_src_new(S3_CREDS_IMDS, "instance metadata at %s", url);
    if (!s || s3_creds_src_set(&s->url, url) != 0) {
        s3_creds_src_delete(s);
        return -1;
    }
    *out = s;
    return 1;
}

/* ---- the provider ----------------------------------------------------------------------------- */

/* The profile step: 1 with p->src, p->files and p->profile set, 0 (noted in tried), -1. */
static int provider_profile(s3_creds_provider *p, shoal_buf *tried)
{
    const s3_creds_options *opt = &p->opt;
    const char *env_profile = s3_creds_env(opt, "AWS_PROFILE");
    const char *name = opt->profile ? opt->profile : env_profile ? env_profile : "default";
    if (!(p->files = s3_creds_files_new(opt)) || s3_creds_files_load(p->files) != 0)
        return -1;
    if (tried->len)
        shoal_buf_append_str(tried, "; ");
    int rc = s3_creds_profile_source(p->files, opt, name, opt->profile || env_profile, &p->src, tried);
    if (rc == 1 && !(p->profile = strdup(name)))
        rc = shoal_error_set(SHOAL_ERR_NOMEM, "credentials: out of memory");
    if (rc != 1) {
        s3_creds_files_delete(p->files);
        p->files = NULL;
    }
    return rc;
}

/* Walks the chain; 0 with p->src and p->source set, -1 with the message. */
static int provider_resolve(s3_creds_provider *p, shoal_buf *tried)
{
    const s3_creds_options *opt = &p->opt;
    int rc = 0;
    if (!opt->profile) {
        if ((rc = s3_creds_env_source(opt, &p->src, tried)) != 0) {
            p->source = "environment";
            return rc < 0 ? -1 : 0;
        }
        if ((rc = web_identity_env_source(opt, &p->src, tried)) != 0) {
            p->source = "web-identity";
            return rc < 0 ? -1 : 0;
        }
    }
    if ((rc = provider_profile(p, tried)) != 0) {
        p->source = "profile";
        return rc < 0 ? -1 : 0;
    }
    if ((rc = s3_creds_container_source(opt, &p->src, tried)) != 0) {
        p->source = "container";
        return rc < 0 ? -1 : 0;
    }
    if ((rc = s3_creds_imds_source(opt, &p->src, tried)) < 0)
        return -1;
    if (rc == 1) {
        s3_creds c;
        if (s3_creds_src_get(p->src, (int64_t)time(NULL), &c) == 0) {
            explicit_bzero(&c, sizeof c);
            p->source = "imds";
            return 0;
        }
        /* Not there, or no role: the metadata service gave nothing. */
        shoal_buf_appendf(tried, "; %s", shoal_error_message());
        s3_creds_src_delete(p->src);
        p->src = NULL;
    }
    return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS,
                           "no S3 credentials found; tried %s; use --no-sign-request for a public bucket",
                           shoal_buf_str(tried));
}

static int provider_copy_options(s3_creds_provider *p, const s3_creds_options *opt)
{
    p->opt = *opt;
    if ((opt->profile && !(p->opt_profile = strdup(opt->profile))) ||
        (opt->region && !(p->opt_region = strdup(opt->region))) ||
        (opt->container_host && !(p->opt_container_host = strdup(opt->container_host))))
        return shoal_error_set(SHOAL_ERR_NOMEM, "credentials provider: out of memory");
    p->opt.profile = p->opt_profile;
    p->opt.region = p->opt_region;
    p->opt.container_host = p->opt_container_host;
    return 0;
}

s3_creds_provider *s3_creds_provider_new(const s3_creds_options *opt_in)
{
    static const s3_creds_options defaults = {0};
    shoal_buf tried = {0};
    s3_creds c;
    s3_creds_provider *p = calloc(1, sizeof *p);
    if (!p) {
        shoal_error_set(SHOAL_ERR_NOMEM, "credentials provider: out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    if (provider_copy_options(p, opt_in ? opt_in : &defaults) != 0)
        goto fail;
    if (p->opt.anonymous) {
        p->source = "anonymous";
        LOG_INFO("s3", "credentials", "source=anonymous");
        goto done;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "credentials: curl_global_init failed");
        goto fail;
    }
    p->curl_ready = true;
    if (provider_resolve(p, &tried) != 0)
        goto fail;
    /* The first credentials now (the metadata service's are already there), so a configured
     * source that fails stops the daemon at start. */
    if (!p->src->cur.access_key[0] && s3_creds_src_get(p->src, (int64_t)time(NULL), &c) != 0)
        goto fail;
    explicit_bzero(&c, sizeof c);
    char q[512];
    LOG_INFO("s3", "credentials", "source=%s from=%s", p->source, shoal_log_q(q, sizeof q, p->src->what));
done:
    shoal_buf_destroy(&tried);
    return p;
fail:
    shoal_buf_destroy(&tried);
    s3_creds_provider_delete(p);
    return NULL;
}

void s3_creds_provider_delete(s3_creds_provider *p)
{
    if (!p)
        return;
    s3_creds_src_delete(p->src);
    s3_creds_files_delete(p->files);
    free(p->profile);
    free(p->opt_profile);
    free(p->opt_region);
    free(p->opt_container_host);
    pthread_mutex_destroy(&p->lock);
    if (p->curl_ready)
        curl_global_cleanup();
    explicit_bzero(p, sizeof *p);
    free(p);
}

/* The profile files changed: read them again and, if the profile still gives credentials, take
 * them. Lock held. */
static void provider_reload(s3_creds_provider *p, int64_t now)
{
    SHOAL_ASSERT_LOCKED(&p->lock);
    s3_creds_src *fresh = NULL;
    shoal_buf tried = {0};
    s3_creds c;
    char q[512], q2[512];
    int rc = s3_creds_files_load(p->files);
    if (rc == 0)
        rc = s3_creds_profile_source(p->files, &p->opt, p->profile, true, &fresh, &tried);
    if (rc == 0)
        rc = shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "%s", shoal_buf_str(&tried));
    if (rc == 1 && s3_creds_src_get(fresh, now, &c) == 0) {
        explicit_bzero(&c, sizeof c);
        s3_creds_src_delete(p->src);
        p->src = fresh;
        fresh = NULL;
        LOG_INFO("s3", "credentials_reloaded", "profile=%s from=%s", shoal_log_q(q, sizeof q, p->profile),
                 shoal_log_q(q2, sizeof q2, p->src->what));
    } else {
        LOG_WARN("s3", "credentials_reload_failed", "profile=%s keeping=previous error=%s",
                 shoal_log_q(q2, sizeof q2, p->profile), shoal_log_q(q, sizeof q, shoal_error_message()));
    }
    s3_creds_src_delete(fresh);
    shoal_buf_destroy(&tried);
}

int s3_creds_get(s3_creds_provider *p, s3_creds *out)
{
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    int64_t now = (int64_t)time(NULL);
    if (!p->src) {
        memset(out, 0, sizeof *out);
        out->anonymous = true;
    } else {
        if (p->files && s3_creds_files_changed(p->files))
            provider_reload(p, now);
        rc = s3_creds_src_get(p->src, now, out);
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

const char *s3_creds_source(const s3_creds_provider *p) { return p->source; }
