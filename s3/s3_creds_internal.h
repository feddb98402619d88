/*
 * s3_creds_internal: what the files of the credentials chain share, and nothing else includes.
 *
 *   s3_creds.c          the provider: the chain's order, environment, refresh, profile rotation
 *   s3_creds_profile.c  the shared files: reading profiles, turning one into a source
 *   s3_creds_fetch.c    the network sources: IMDSv2, container credentials, STS
 *   s3_creds_process.c  credential_process
 *
 * A source (s3_creds_src) is one way to obtain credentials plus the last ones it gave. Sources
 * form a short chain: an AssumeRole source holds the source whose credentials sign its call
 * (a profile with role_arn + source_profile), so renewing the outer one renews the inner first.
 */
#ifndef SHOAL_S3_CREDS_INTERNAL_H
#define SHOAL_S3_CREDS_INTERNAL_H

#include "s3_creds.h"
#include "shoal_buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum s3_creds_kind {
    S3_CREDS_STATIC,       /* keys from the environment or a profile: never renewed by a fetch */
    S3_CREDS_WEB_IDENTITY, /* STS AssumeRoleWithWebIdentity with the token file's contents */
    S3_CREDS_ASSUME_ROLE,  /* STS AssumeRole signed with base's credentials */
    S3_CREDS_PROCESS,      /* credential_process */
    S3_CREDS_CONTAINER,    /* ECS / EKS Pod Identity endpoint */
    S3_CREDS_IMDS,         /* EC2 instance metadata, IMDSv2 */
} s3_creds_kind;

typedef struct s3_creds_src {
    s3_creds_kind kind;
    char what[256];            /* names the source in logs and messages; never a secret */
    s3_creds cur;              /* last credentials; access_key[0] == '\0' before the first */
    int64_t next_attempt;      /* no renewal before this time after a failed one */
    struct s3_creds_src *base; /* ASSUME_ROLE: the signing credentials (owned) */
    char *url;                 /* STS endpoint, container URL, IMDS endpoint */
    char *region;              /* STS signing region */
    char *role_arn, *session_name, *external_id; /* STS */
    int duration;              /* AssumeRole DurationSeconds; 0: STS's default */
    char *token_file;          /* web identity token; container authorization token file */
    char *token;               /* container authorization token (AWS_CONTAINER_AUTHORIZATION_TOKEN) */
    char *command;             /* credential_process */
    int timeout_ms;            /* credential_process */
} s3_creds_src;

/* A new source of `kind` named by the printf-style `what`; NULL (SHOAL_ERR_NOMEM) on failure. */
s3_creds_src *s3_creds_src_new(s3_creds_kind kind, const char *what, ...) __attribute__((format(printf, 2, 3)));
/* Frees s, its base and its strings, wiping the credentials. NULL is fine. */
void s3_creds_src_delete(s3_creds_src *s);
/* s->field = strdup(v) (v NULL leaves NULL); -1 SHOAL_ERR_NOMEM. */
int s3_creds_src_set(char **field, const char *v);
/* Fetches new credentials from s (not its cache) into *out; the base's are renewed as needed.
 * -1 with a message that starts with s->what. */
int s3_creds_src_fetch(s3_creds_src *s, int64_t now, s3_creds *out);
/* Current credentials of s, renewed first when missing or within the refresh margin of their
 * expiry (see s3_creds.c). */
int s3_creds_src_get(s3_creds_src *s, int64_t now, s3_creds *out);

/* The environment the chain reads (opt->getenv_fn or getenv); NULL for unset or empty. */
const char *s3_creds_env(const s3_creds_options *opt, const char *name);
/* Copies src into a fixed field; -1 (a message naming `what`, never the value) if too long. */
int s3_creds_copy(char *dst, size_t cap, const char *src, const char *what);

/* ---- sources that exist outside profiles (s3_creds.c), also used by credential_source ---- */

/* The static source of AWS_ACCESS_KEY_ID/... 1: made, 0: not set (why appended to tried when
 * not NULL), -1: error (one of the two set). */
int s3_creds_env_source(const s3_creds_options *opt, s3_creds_src **out, shoal_buf *tried);
/* The container source of AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI; same returns.
 * An http FULL_URI whose host is not loopback or the ECS/EKS addresses is an error. */
int s3_creds_container_source(const s3_creds_options *opt, s3_creds_src **out, shoal_buf *tried);
/* The IMDS source (endpoint from AWS_EC2_METADATA_SERVICE_ENDPOINT); 0 when disabled. */
int s3_creds_imds_source(const s3_creds_options *opt, s3_creds_src **out, shoal_buf *tried);
/* An STS source (WEB_IDENTITY or ASSUME_ROLE) with the endpoint and region the options and
 * the environment give (AWS_ENDPOINT_URL_STS, AWS_STS_REGIONAL_ENDPOINTS, region). `region` is
 * the profile's region, used after the options' and the environment's. */
s3_creds_src *s3_creds_sts_source(const s3_creds_options *opt, s3_creds_kind kind, const char *region,
                                  const char *role_arn, const char *session_name, const char *what);

/* ---- profiles (s3_creds_profile.c) ---------------------------------------------------------- */

typedef struct s3_creds_files s3_creds_files;

/* Where the profile files are (AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE, under HOME). */
s3_creds_files *s3_creds_files_new(const s3_creds_options *opt);
void s3_creds_files_delete(s3_creds_files *f);
/* Reads both files (a missing one is empty). -1 naming file and line when one is unreadable or
 * malformed. Remembers what it read for s3_creds_files_changed. */
int s3_creds_files_load(s3_creds_files *f);
/* true when either file differs (existence, inode, size, mtime) from when it was last loaded. */
bool s3_creds_files_changed(const s3_creds_files *f);
/* The source the loaded profile `name` describes. 1: made; 0: the profile has no credentials
 * (or, when !must_exist, does not exist): why appended to tried; -1: error (a named profile that
 * does not exist, a broken role_arn chain, SSO, ...). */
int s3_creds_profile_source(const s3_creds_files *f, const s3_creds_options *opt, const char *name,
                            bool must_exist, s3_creds_src **out, shoal_buf *tried);

/* ---- network sources (s3_creds_fetch.c) ------------------------------------------------------ */

int s3_creds_imds_fetch(s3_creds_src *s, s3_creds *out);
int s3_creds_container_fetch(s3_creds_src *s, s3_creds *out);
/* WEB_IDENTITY: reads s->token_file now. ASSUME_ROLE: signs with *signer. */
int s3_creds_sts_fetch(s3_creds_src *s, const s3_creds *signer, int64_t now, s3_creds *out);

typedef struct s3_creds_json_field {
    const char *key;
    char *out;
    size_t cap;
    bool seen;
    bool is_string; /* set by the scanner: the value was a string (else a number or literal) */
} s3_creds_json_field;

/* Scans one flat JSON object; copies the members named in fields (strings decoded, other values
 * as their text). -1 naming `what` when malformed or a wanted value does not fit. */
int s3_creds_json_scan(const char *s, size_t len, s3_creds_json_field *fields, size_t n_fields,
                       const char *what);
/* "2026-11-24T17:00:00Z" (fractional seconds, +00:00 or another offset allowed) to Unix seconds. */
int s3_creds_parse_time(const char *s, int64_t *out);

/* ---- credential_process (s3_creds_process.c) ------------------------------------------------- */

int s3_creds_process_fetch(s3_creds_src *s, s3_creds *out);

#endif
