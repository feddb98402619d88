/*
 * s3_creds: where the S3 client's credentials come from: the AWS SDKs' default chain, in
 * aws-sdk-go-v2's order (docs/s3-auth.md says what each step reads and how the SDKs differ):
 *   1. environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN;
 *   2. web identity: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE (+ AWS_ROLE_SESSION_NAME), traded
 *      with STS AssumeRoleWithWebIdentity (EKS IRSA);
 *   3. the profile (the caller's, else AWS_PROFILE, else "default") of AWS_SHARED_CREDENTIALS_FILE
 *      (~/.aws/credentials) and AWS_CONFIG_FILE (~/.aws/config): static keys; role_arn with
 *      source_profile, credential_source or web_identity_token_file (STS AssumeRole...);
 *      credential_process; SSO profiles are refused with an error naming the profile and key;
 *   4. container credentials: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (ECS) or _FULL_URI (EKS Pod
 *      Identity, loopback), with AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE);
 *   5. the EC2 instance metadata service, IMDSv2;
 *   and anonymous, only when asked for (--no-sign-request).
 * A source that is configured but fails is an error: the chain never falls through to a later
 * source (such as the node's instance role) behind the operator's back.
 *
 * Threads: s3_creds_get() may be called from any thread. Temporary credentials are renewed five
 * minutes before they expire, under the provider's lock (one renewal, however many callers);
 * profile files are re-read when they change. Secrets are never logged nor put in messages.
 */
#ifndef SHOAL_S3_CREDS_H
#define SHOAL_S3_CREDS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct s3_creds {
    char access_key[128];
    char secret_key[128];
    char session_token[4096]; /* "" when none; STS tokens carrying session tags can pass 2 KiB */
    int64_t expires;          /* Unix seconds; 0 = does not expire */
    bool anonymous;           /* true: send unsigned requests */
} s3_creds;

typedef struct s3_creds_provider s3_creds_provider;

typedef struct s3_creds_options {
    bool anonymous;      /* --no-sign-request */
    /* A profile named by the caller (like the SDKs' explicit profile): the chain starts at the
     * profile step, skipping the environment and web identity. NULL: AWS_PROFILE or "default". */
    const char *profile;
    /* Region of the STS calls (web identity, AssumeRole). NULL: AWS_REGION, AWS_DEFAULT_REGION,
     * the profile's region; with none, STS's global endpoint. */
    const char *region;
    bool disable_imds;   /* never try the metadata service (tests, and hosts that have none) */
    /* Reads the environment through this function (NULL: getenv); lets tests pass their own. */
    const char *(*getenv_fn)(const char *name);
    /* Tests only: the base URL that stands for http://169.254.170.2 (NULL: that address). */
    const char *container_host;
    /* How long a credential_process may run, in ms (0: 60 s, as the SDKs allow). */
    int process_timeout_ms;
} s3_creds_options;

/* Resolves the chain and fetches the first credentials, so a daemon fails at start when there
 * are none. NULL with SHOAL_ERR_S3_CREDENTIALS and one message: for a source that is configured
 * but failed, what failed; when no source gave credentials, every source tried and why each gave
 * nothing. SHOAL_ERR_UNSUPPORTED for a profile that needs what Shoal does not do (SSO, MFA). */
s3_creds_provider *s3_creds_provider_new(const s3_creds_options *opt);
void s3_creds_provider_delete(s3_creds_provider *p);
/* Copies current credentials into *out. Renews temporary credentials that expire within five
 * minutes and re-reads profile files that changed since they were read; when a renewal fails
 * the old credentials are kept while they are valid (a warning is logged, the next attempt is
 * ten seconds later). -1 when the credentials have expired and could not be renewed. */
int s3_creds_get(s3_creds_provider *p, s3_creds *out);
/* Which step the credentials come from: "environment", "web-identity", "profile", "container",
 * "imds", "anonymous". Static string. */
const char *s3_creds_source(const s3_creds_provider *p);

#endif
