/*
 * s3_creds: where the S3 client's credentials come from, in the order AWS's own tools use:
 *   1. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN;
 *   2. profile AWS_PROFILE (default "default") in AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials),
 *      then in AWS_CONFIG_FILE (~/.aws/config, section "profile NAME");
 *   3. the EC2 instance metadata service, IMDSv2 (token PUT, then role credentials), at
 *      AWS_EC2_METADATA_SERVICE_ENDPOINT or http://169.254.169.254; refreshed before expiry;
 *   4. anonymous, only when asked for (--no-sign-request).
 * The provider is thread-safe: s3_creds_get() may be called from any thread and refreshes
 * temporary credentials five minutes before they expire. Secrets are never logged.
 */
#ifndef SHOAL_S3_CREDS_H
#define SHOAL_S3_CREDS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct s3_creds {
    char access_key[128];
    char secret_key[128];
    char session_token[2048]; /* "" when none */
    int64_t expires;          /* Unix seconds; 0 = does not expire */
    bool anonymous;           /* true: send unsigned requests */
} s3_creds;

typedef struct s3_creds_provider s3_creds_provider;

typedef struct s3_creds_options {
    bool anonymous;               /* --no-sign-request */
    const char *profile;          /* NULL: AWS_PROFILE or "default" */
    bool disable_imds;            /* tests: never try the metadata service */
    /* Reads the environment through this function (NULL: getenv); lets tests pass their own. */
    const char *(*getenv_fn)(const char *name);
} s3_creds_options;

/* Resolves the chain once (so a daemon fails at start when no credentials exist). NULL with
 * SHOAL_ERR_S3_CREDENTIALS and a message listing every source tried when none gave credentials. */
s3_creds_provider *s3_creds_provider_new(const s3_creds_options *opt);
void s3_creds_provider_delete(s3_creds_provider *p);
/* Copies current credentials into *out, refreshing them first when they expire within 5 minutes.
 * -1 when a refresh failed and the old ones have expired. */
int s3_creds_get(s3_creds_provider *p, s3_creds *out);
/* Which source the credentials came from: "environment", "profile", "imds", "anonymous". */
const char *s3_creds_source(const s3_creds_provider *p);

#endif
