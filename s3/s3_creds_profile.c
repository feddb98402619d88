/*
 * s3_creds_profile: the shared credentials and config files, and what a profile in them means.
 *
 * Both files are read whole into one list of (file, profile, key, value), so a profile is the
 * union of its [NAME] section in the credentials file and its [profile NAME] (or [default])
 * section in the config file, the credentials file winning key by key, as the SDKs merge them.
 * Other config sections ([sso-session X], [services X]) are not profiles and are skipped.
 *
 * A profile becomes a source in aws-sdk-go-v2's order: role_arn first (AssumeRole, signed with
 * the credentials of source_profile or credential_source, or AssumeRoleWithWebIdentity with
 * web_identity_token_file); then static keys; then SSO, which is refused with an error naming
 * the profile and the key (Shoal does not read the SSO token cache); then credential_process.
 * A source_profile with static keys gives those keys (its own role_arn is not assumed, as both
 * botocore and aws-sdk-go-v2 do); one without is resolved as a profile of its own, so roles
 * chain. Loops (a -> b -> a) and chains deeper than eight are errors that print the chain.
 *
 * Files are INI, read with libinih. Debian's libinih is built with 200-byte lines and silently
 * cuts longer ones, but a session token is often over a thousand bytes. So a file is fed to
 * ini_parse_stream() through our own line reader: a line that does not fit is handed to inih as
 * "name=<marker><index>" and its full value is kept aside, where the handler finds it. inih still
 * does all the parsing and reports the line of the first malformed entry. A missing file is
 * empty; an unreadable or malformed one is an error naming the file and the line.
 *
 * The loaded files remember their inode, size and mtime, so the provider can tell when they
 * change (key rotation) and read them again.
 */
#include "s3_creds_internal.h"

#include "shoal_array.h"
#include "shoal_error.h"
#include "shoal_log.h"

#include <ini.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define INI_LONG_MARKER '\x1e' /* first byte of a value kept aside by profile_read_line */
#define PROFILE_MAX_DEPTH 8

typedef struct profile_kv {
    bool in_credentials; /* from the credentials file (wins over the config file) */
    char *profile, *key, *value;
} profile_kv;

typedef struct file_stamp {
    bool exists;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} file_stamp;

struct s3_creds_files {
    char path[2][1024]; /* 0: credentials, 1: config */
    file_stamp stamp[2];
    profile_kv *kv;
    size_t n_kv, cap_kv;
};

/* ---- reading the files ---------------------------------------------------------------------- */

typedef struct profile_reader {
    FILE *f;
    s3_creds_files *files;
    bool is_credentials;
    bool nomem;
    char **kept; /* values of over-long lines */
    size_t n_kept, cap_kept;
} profile_reader;

/* inih's line reader: whole lines from the file; see the essay for over-long lines. */
static char *profile_read_line(char *buf, int size, void *stream)
{
    profile_reader *r = stream;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, r->f);
    if (n < 0) {
        free(line);
        return NULL;
    }
    if (n < size) {
        memcpy(buf, line, (size_t)n + 1);
        explicit_bzero(line, (size_t)n);
        free(line);
        return buf;
    }
    char *eq = strpbrk(line, "=:");
    bool room = SHOAL_ARRAY_GROW(r->kept, r->n_kept, r->cap_kept) == 0;
    if (eq && room && eq - line < size - 32 && line[0] != '[' && line[0] != ';' && line[0] != '#') {
        line[strcspn(line, "\r\n")] = '\0';
        char *value = strdup(eq + 1);
        if (value) {
            r->kept[r->n_kept] = value;
            snprintf(buf, (size_t)size, "%.*s=%c%zu\n", (int)(eq - line), line, INI_LONG_MARKER, r->n_kept++);
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

/* The profile a section names, or NULL when it is not a profile. */
static const char *section_profile(const char *section, bool is_credentials)
{
    if (is_credentials)
        return section;
    if (strcmp(section, "default") == 0)
        return section;
    if (strncmp(section, "profile", 7) == 0 && (section[7] == ' ' || section[7] == '\t')) {
        const char *p = section + 8;
        while (*p == ' ' || *p == '\t')
            p++;
        return *p ? p : NULL;
    }
    return NULL;
}

static int profile_handler(void *user, const char *section, const char *name, const char *value)
{
    profile_reader *r = user;
    s3_creds_files *f = r->files;
    const char *profile = section_profile(section, r->is_credentials);
    if (!profile)
        return 1;
    if (value[0] == INI_LONG_MARKER) {
        size_t i = strtoul(value + 1, NULL, 10);
        value = i < r->n_kept ? r->kept[i] : "";
        while (*value == ' ' || *value == '\t')
            value++;
    }
    size_t n = strlen(value);
    while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t'))
        n--;
    if (SHOAL_ARRAY_GROW(f->kv, f->n_kv, f->cap_kv) != 0)
        goto fail_nomem;
    profile_kv *e = &f->kv[f->n_kv];
    e->in_credentials = r->is_credentials;
    e->profile = strdup(profile);
    e->key = strdup(name);
    e->value = strndup(value, n);
    if (!e->profile || !e->key || !e->value) {
        free(e->profile);
        free(e->key);
        free(e->value);
        goto fail_nomem;
    }
    f->n_kv++;
    return 1;
fail_nomem:
    r->nomem = true;
    return 0;
}

static void files_clear(s3_creds_files *f)
{
    for (size_t i = 0; i < f->n_kv; i++) {
        explicit_bzero(f->kv[i].value, strlen(f->kv[i].value));
        free(f->kv[i].profile);
        free(f->kv[i].key);
        free(f->kv[i].value);
    }
    f->n_kv = 0;
}

static void stamp_of(const char *path, file_stamp *st)
{
    struct stat sb;
    memset(st, 0, sizeof *st);
    if (stat(path, &sb) != 0)
        return;
    st->exists = true;
    st->dev = sb.st_dev;
    st->ino = sb.st_ino;
    st->size = sb.st_size;
    st->mtime = sb.st_mtim;
}

/* Reads one file into f. A missing file is empty. */
static int files_read(s3_creds_files *f, int which)
{
    int rc = 0;
    const char *path = f->path[which];
    profile_reader r = {.files = f, .is_credentials = which == 0};
    r.f = fopen(path, "r");
    if (!r.f) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0;
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "cannot read %s: %s", path, strerror(errno));
    }
    errno = 0;
    int line = ini_parse_stream(profile_read_line, &r, profile_handler, &r);
    if (ferror(r.f))
        rc = shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "cannot read %s: %s", path, strerror(errno ? errno : EIO));
    else if (r.nomem || line < 0)
        rc = shoal_error_set(SHOAL_ERR_NOMEM, "reading %s: out of memory", path);
    else if (line > 0)
        rc = shoal_error_set(SHOAL_ERR_S3_CREDENTIALS,
                             "%s line %d: malformed (expected [section], key = value or a comment)", path, line);
    fclose(r.f);
    for (size_t i = 0; i < r.n_kept; i++) {
        explicit_bzero(r.kept[i], strlen(r.kept[i]));
        free(r.kept[i]);
    }
    free(r.kept);
    return rc;
}

s3_creds_files *s3_creds_files_new(const s3_creds_options *opt)
{
    s3_creds_files *f = calloc(1, sizeof *f);
    if (!f) {
        shoal_error_set(SHOAL_ERR_NOMEM, "credentials files: out of memory");
        return NULL;
    }
    const char *home = s3_creds_env(opt, "HOME");
    const char *cred = s3_creds_env(opt, "AWS_SHARED_CREDENTIALS_FILE");
    const char *conf = s3_creds_env(opt, "AWS_CONFIG_FILE");
    snprintf(f->path[0], sizeof f->path[0], "%s%s", cred ? cred : home ? home : "~", cred ? "" : "/.aws/credentials");
    snprintf(f->path[1], sizeof f->path[1], "%s%s", conf ? conf : home ? home : "~", conf ? "" : "/.aws/config");
    return f;
}

void s3_creds_files_delete(s3_creds_files *f)
{
    if (!f)
        return;
    files_clear(f);
    free(f->kv);
    free(f);
}

int s3_creds_files_load(s3_creds_files *f)
{
    files_clear(f);
    for (int i = 0; i < 2; i++) {
        stamp_of(f->path[i], &f->stamp[i]);
        if (files_read(f, i) != 0) {
            files_clear(f);
            return -1;
        }
    }
    return 0;
}

bool s3_creds_files_changed(const s3_creds_files *f)
{
    for (int i = 0; i < 2; i++) {
        file_stamp now;
        stamp_of(f->path[i], &now);
        const file_stamp *was = &f->stamp[i];
        if (now.exists != was->exists || now.dev != was->dev || now.ino != was->ino || now.size != was->size ||
            now.mtime.tv_sec != was->mtime.tv_sec || now.mtime.tv_nsec != was->mtime.tv_nsec)
            return true;
    }
    return false;
}

/* ---- looking profiles up -------------------------------------------------------------------- */

static bool profile_exists(const s3_creds_files *f, const char *name)
{
    for (size_t i = 0; i < f->n_kv; i++)
        if (strcmp(f->kv[i].profile, name) == 0)
            return true;
    return false;
}

/* The value of `key` in profile `name` (credentials file first); NULL when absent or empty. */
static const char *profile_get(const s3_creds_files *f, const char *name, const char *key)
{
    const char *conf = NULL;
    for (size_t i = 0; i < f->n_kv; i++) {
        const profile_kv *e = &f->kv[i];
        if (strcmp(e->profile, name) != 0 || strcasecmp(e->key, key) != 0 || !e->value[0])
            continue;
        if (e->in_credentials)
            return e->value;
        if (!conf)
            conf = e->value;
    }
    return conf;
}

/* 1: the profile's static keys as a source, 0: it has none, -1: only one of the two. */
static int profile_static(const s3_creds_files *f, const char *name, s3_creds_src **out)
{
    const char *id = profile_get(f, name, "aws_access_key_id");
    const char *secret = profile_get(f, name, "aws_secret_access_key");
    const char *token = profile_get(f, name, "aws_session_token");
    if (!id && !secret)
        return 0;
    if (!id || !secret)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "profile '%s' has %s but no %s", name,
                               id ? "aws_access_key_id" : "aws_secret_access_key",
                               id ? "aws_secret_access_key" : "aws_access_key_id");
    s3_creds_src *s = s3_creds_src_new(S3_CREDS_STATIC, "profile '%s'", name);
    if (!s || s3_creds_copy(s->cur.access_key, sizeof s->cur.access_key, id, "aws_access_key_id") != 0 ||
        s3_creds_copy(s->cur.secret_key, sizeof s->cur.secret_key, secret, "aws_secret_access_key") != 0 ||
        s3_creds_copy(s->cur.session_token, sizeof s->cur.session_token, token ? token : "", "aws_session_token") != 0) {
        if (s)
            shoal_error_wrap("profile '%s'", name);
        s3_creds_src_delete(s);
        return -1;
    }
    *out = s;
    return 1;
}

static const char *const sso_keys[] = {"sso_session", "sso_start_url", "sso_account_id", "sso_role_name"};

/* What a profile without role_arn gives: static keys, (SSO: refused), credential_process. */
static int profile_direct(const s3_creds_files *f, const s3_creds_options *opt, const char *name,
                          s3_creds_src **out)
{
    int rc = profile_static(f, name, out);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < sizeof sso_keys / sizeof *sso_keys; i++)
        if (profile_get(f, name, sso_keys[i]))
            return shoal_error_set(SHOAL_ERR_UNSUPPORTED,
                                   "profile '%s' uses AWS IAM Identity Center (%s), which Shoal does not support; "
                                   "give it a credential_process instead, e.g. credential_process = aws configure "
                                   "export-credentials --profile %s --format process, in a profile of its own",
                                   name, sso_keys[i], name);
    const char *cmd = profile_get(f, name, "credential_process");
    if (cmd) {
        s3_creds_src *s = s3_creds_src_new(S3_CREDS_PROCESS, "profile '%s' credential_process", name);
        if (!s || s3_creds_src_set(&s->command, cmd) != 0) {
            s3_creds_src_delete(s);
            return -1;
        }
        s->timeout_ms = opt->process_timeout_ms;
        *out = s;
        return 1;
    }
    if (profile_get(f, name, "web_identity_token_file"))
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "profile '%s' has web_identity_token_file but no role_arn",
                               name);
    return 0;
}

typedef struct profile_chain {
    const char *names[PROFILE_MAX_DEPTH + 1];
    int n;
} profile_chain;

static int profile_resolve(const s3_creds_files *f, const s3_creds_options *opt, const char *name,
                           profile_chain *chain, s3_creds_src **out);

/* "a -> b -> c" for the messages about chains. */
static const char *chain_text(const profile_chain *c, const char *last, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; i < c->n && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s -> ", c->names[i]);
    if (o < cap)
        snprintf(buf + o, cap - o, "%s", last);
    return buf;
}

/* The credentials that sign a role profile's AssumeRole: its source_profile's. */
static int role_base_profile(const s3_creds_files *f, const s3_creds_options *opt, const char *name,
                             const char *sp, profile_chain *chain, s3_creds_src **base)
{
    char text[512];
    if (strcmp(sp, name) == 0) {
        int rc = profile_static(f, name, base);
        if (rc == 0)
            return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS,
                                   "profile '%s' is its own source_profile but has no aws_access_key_id", name);
        return rc;
    }
    for (int i = 0; i < chain->n; i++)
        if (strcmp(chain->names[i], sp) == 0)
            return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "source_profile loop: %s",
                                   chain_text(chain, sp, text, sizeof text));
    if (chain->n >= PROFILE_MAX_DEPTH)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "source_profile chain deeper than %d: %s", PROFILE_MAX_DEPTH,
                               chain_text(chain, sp, text, sizeof text));
    if (!profile_exists(f, sp))
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "profile '%s': source_profile '%s' not found in %s or %s",
                               name, sp, f->path[0], f->path[1]);
    int rc = profile_static(f, sp, base);
    if (rc == 0)
        rc = profile_resolve(f, opt, sp, chain, base);
    if (rc == 0)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "profile '%s': source_profile '%s' has no credentials", name,
                               sp);
    return rc;
}

/* The credentials that sign a role profile's AssumeRole: its credential_source's. */
static int role_base_source(const s3_creds_options *opt, const char *name, const char *cs, s3_creds_src **base)
{
    int rc;
    const char *needs;
    if (strcmp(cs, "Environment") == 0) {
        rc = s3_creds_env_source(opt, base, NULL);
        needs = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set";
    } else if (strcmp(cs, "EcsContainer") == 0) {
        rc = s3_creds_container_source(opt, base, NULL);
        needs = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI are not set";
    } else if (strcmp(cs, "Ec2InstanceMetadata") == 0) {
        rc = s3_creds_imds_source(opt, base, NULL);
        needs = "the instance metadata service is disabled";
    } else {
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS,
                               "profile '%s': credential_source '%s' is not Environment, Ec2InstanceMetadata or "
                               "EcsContainer", name, cs);
    }
    if (rc == 0)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "profile '%s': credential_source %s, but %s", name, cs, needs);
    if (rc < 0)
        shoal_error_wrap("profile '%s': credential_source %s", name, cs);
    return rc;
}

/* A profile with role_arn: AssumeRole (or AssumeRoleWithWebIdentity) as its keys say. */
static int profile_role(const s3_creds_files *f, const s3_creds_options *opt, const char *name, const char *role_arn,
                        profile_chain *chain, s3_creds_src **out)
{
    const char *sp = profile_get(f, name, "source_profile");
    const char *cs = profile_get(f, name, "credential_source");
    const char *wit = profile_get(f, name, "web_identity_token_file");
    const char *session = profile_get(f, name, "role_session_name");
    const char *region = profile_get(f, name, "region");
    s3_creds_src *base = NULL, *s = NULL;
    if (profile_get(f, name, "mfa_serial"))
        return shoal_error_set(SHOAL_ERR_UNSUPPORTED,
                               "profile '%s' sets mfa_serial: assuming a role with an MFA code needs a person at a "
                               "prompt, which a daemon cannot be; not supported", name);
    if (sp && cs)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS,
                               "profile '%s' has both source_profile and credential_source; keep one", name);
    char what[256];
    if (!sp && !cs && wit) {
        snprintf(what, sizeof what, "profile '%s' (web identity, role %s)", name, role_arn);
        s = s3_creds_sts_source(opt, S3_CREDS_WEB_IDENTITY, region, role_arn, session, what);
        if (!s || s3_creds_src_set(&s->token_file, wit) != 0)
            goto fail;
        *out = s;
        return 1;
    }
    if (!sp && !cs)
        return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS,
                               "profile '%s' has role_arn but no source_profile, credential_source or "
                               "web_identity_token_file to assume it with", name);
    chain->names[chain->n++] = name;
    int rc = sp ? role_base_profile(f, opt, name, sp, chain, &base) : role_base_source(opt, name, cs, &base);
    chain->n--;
    if (rc <= 0)
        goto fail;
    snprintf(what, sizeof what, "profile '%s' (role %s)", name, role_arn);
    s = s3_creds_sts_source(opt, S3_CREDS_ASSUME_ROLE, region, role_arn, session, what);
    if (!s || s3_creds_src_set(&s->external_id, profile_get(f, name, "external_id")) != 0)
        goto fail;
    const char *dur = profile_get(f, name, "duration_seconds");
    if (dur) {
        char *end;
        long d = strtol(dur, &end, 10);
        if (*end || d < 900 || d > 43200) {
            shoal_error_set(SHOAL_ERR_S3_CREDENTIALS,
                            "profile '%s': duration_seconds '%s' is not a number of seconds from 900 to 43200", name,
                            dur);
            goto fail;
        }
        s->duration = (int)d;
    }
    s->base = base;
    *out = s;
    return 1;
fail:
    s3_creds_src_delete(base);
    s3_creds_src_delete(s);
    return -1;
}

static int profile_resolve(const s3_creds_files *f, const s3_creds_options *opt, const char *name,
                           profile_chain *chain, s3_creds_src **out)
{
    const char *role_arn = profile_get(f, name, "role_arn");
    if (role_arn)
        return profile_role(f, opt, name, role_arn, chain, out);
    return profile_direct(f, opt, name, out);
}

int s3_creds_profile_source(const s3_creds_files *f, const s3_creds_options *opt, const char *name, bool must_exist,
                            s3_creds_src **out, shoal_buf *tried)
{
    if (!profile_exists(f, name)) {
        if (must_exist)
            return shoal_error_set(SHOAL_ERR_S3_CREDENTIALS, "profile '%s' not found in %s or %s", name, f->path[0],
                                   f->path[1]);
        shoal_buf_appendf(tried, "profile '%s' (not in %s%s or %s%s)", name, f->path[0],
                          f->stamp[0].exists ? "" : ", no such file", f->path[1],
                          f->stamp[1].exists ? "" : ", no such file");
        return 0;
    }
    profile_chain chain = {.n = 0};
    int rc = profile_resolve(f, opt, name, &chain, out);
    if (rc == 0)
        shoal_buf_appendf(tried,
                          "profile '%s' (no aws_access_key_id, role_arn or credential_process in it; read %s and %s)",
                          name, f->path[0], f->path[1]);
    return rc;
}
