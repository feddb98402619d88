/*
 * Tests of the credentials chain (s3_creds) and of signing against a real S3 server.
 *
 * The environment is passed through s3_creds_options.getenv_fn from a table each test fills, so
 * the tests never depend on (or change) the real environment. Profile files are written into a
 * fresh temporary directory. The metadata-service tests talk to tests/s3/imds_fake.py, a FAKE of
 * IMDSv2 (no real one exists here) that insists on the session token as IMDSv2 does. The last two
 * tests sign with s3_sigv4 and send with libcurl directly to the local s3rver, which checks
 * signatures, so they do not depend on the S3 client.
 */
#include "s3_creds.h"
#include "s3_creds_internal.h"
#include "s3_endpoint.h"
#include "s3_sigv4.h"
#include "s3rver.h"
#include "shoal_error.h"
#include "tt.h"

#include <curl/curl.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- a private environment --------------------------------------------------------------- */

static struct {
    const char *name;
    char *value;
} test_env[32];

static void env_set(const char *name, const char *value)
{
    size_t i = 0;
    while (i < 32 && test_env[i].name && strcmp(test_env[i].name, name) != 0)
        i++;
    TT_CHECK(i < 32, "test environment full");
    free(test_env[i].value);
    test_env[i].name = name;
    test_env[i].value = strdup(value);
}

static const char *env_get(const char *name)
{
    for (size_t i = 0; i < 32 && test_env[i].name; i++)
        if (strcmp(test_env[i].name, name) == 0)
            return test_env[i].value;
    return NULL;
}

/* A temporary HOME with no files; IMDS off unless a test points it somewhere. */
static char *env_start(void)
{
    char *home = tt_tmpdir("creds");
    env_set("HOME", home);
    return home;
}

static void env_end(char *home)
{
    tt_rmtree(home);
    free(home);
    for (size_t i = 0; i < 32; i++) {
        free(test_env[i].value);
        test_env[i].value = NULL;
        test_env[i].name = NULL;
    }
}

static char *write_file(const char *dir, const char *name, const char *text)
{
    char *path = NULL;
    TT_CHECK(asprintf(&path, "%s/%s", dir, name) > 0, "asprintf");
    FILE *f = fopen(path, "w");
    TT_CHECK(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
    return path;
}

/* A fresh HOME holding `file` with `text`, named by the variable `var`. */
static char *env_with_file(const char *file, const char *var, const char *text)
{
    char *home = env_start();
    char *path = write_file(home, file, text);
    env_set(var, path);
    free(path);
    return home;
}

static s3_creds_options opts(void)
{
    return (s3_creds_options){.getenv_fn = env_get, .disable_imds = true};
}

/* A provider for o, checked. */
static s3_creds_provider *provider_new(const s3_creds_options *o)
{
    s3_creds_provider *p = s3_creds_provider_new(o);
    TT_CHECK(p, "provider: %s", shoal_error_message());
    return p;
}

/* A provider for o, checked, and its current credentials in *c. */
static s3_creds_provider *provider_get(const s3_creds_options *o, s3_creds *c)
{
    s3_creds_provider *p = provider_new(o);
    TT_OK(s3_creds_get(p, c));
    return p;
}

static const char two_profiles[] = "# test credentials\n"
                                   "[default]\n"
                                   "aws_access_key_id = AKIADEFAULT\n"
                                   "aws_secret_access_key = default/secret\n"
                                   "\n"
                                   "[work]\n"
                                   "aws_access_key_id=AKIAWORK\n"
                                   "aws_secret_access_key=work+secret\n"
                                   "aws_session_token = %s\n";

static char *long_token(void)
{
    /* Longer than the 200-byte lines Debian's libinih handles by itself. */
    static char tok[1501];
    for (size_t i = 0; i < 1500; i++)
        tok[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"[i % 38];
    return tok;
}

/* ---- the chain ---------------------------------------------------------------------------- */

TT_TEST(test_s3_creds_environment_wins_over_profile)
{
    char *text = NULL;
    TT_CHECK(asprintf(&text, two_profiles, "tok") > 0, "asprintf");
    char *home = env_with_file("credentials", "AWS_SHARED_CREDENTIALS_FILE", text);
    env_set("AWS_ACCESS_KEY_ID", "AKIAENV");
    env_set("AWS_SECRET_ACCESS_KEY", "env-secret");
    env_set("AWS_SESSION_TOKEN", "env-token");
    s3_creds_options o = opts();
    s3_creds c;
    s3_creds_provider *p = provider_get(&o, &c);
    TT_CHECK(strcmp(s3_creds_source(p), "environment") == 0, "source %s", s3_creds_source(p));
    TT_CHECK(strcmp(c.access_key, "AKIAENV") == 0 && strcmp(c.secret_key, "env-secret") == 0 &&
                 strcmp(c.session_token, "env-token") == 0 && c.expires == 0 && !c.anonymous,
             "got key %s token %s", c.access_key, c.session_token);
    s3_creds_provider_delete(p);
    free(text);
    env_end(home);
}

TT_TEST(test_s3_creds_aws_profile_selects_one_of_two_profiles)
{
    char *text = NULL;
    TT_CHECK(asprintf(&text, two_profiles, long_token()) > 0, "asprintf");
    char *home = env_with_file("credentials", "AWS_SHARED_CREDENTIALS_FILE", text);
    s3_creds_options o = opts();
    s3_creds c;

    s3_creds_provider *p = provider_get(&o, &c);
    TT_CHECK(strcmp(c.access_key, "AKIADEFAULT") == 0 && strcmp(c.secret_key, "default/secret") == 0 &&
                 c.session_token[0] == '\0',
             "without AWS_PROFILE: key %s", c.access_key);
    s3_creds_provider_delete(p);

    env_set("AWS_PROFILE", "work");
    p = provider_get(&o, &c);
    TT_CHECK(strcmp(s3_creds_source(p), "profile") == 0, "source %s", s3_creds_source(p));
    TT_CHECK(strcmp(c.access_key, "AKIAWORK") == 0 && strcmp(c.secret_key, "work+secret") == 0,
             "AWS_PROFILE=work: key %s", c.access_key);
    TT_CHECK(strcmp(c.session_token, long_token()) == 0, "the 1500-byte session token came back as %zu bytes",
             strlen(c.session_token));
    s3_creds_provider_delete(p);

    env_set("AWS_PROFILE", "nosuch");
    TT_CHECK(s3_creds_provider_new(&o) == NULL && strstr(shoal_error_message(), "nosuch"),
             "a named profile that does not exist must be an error: %s", shoal_error_message());
    free(text);
    env_end(home);
}

TT_TEST(test_s3_creds_config_file_profile_section)
{
    char *home = env_with_file("config", "AWS_CONFIG_FILE",
                               "[default]\nregion = us-east-1\n\n"
                               "[profile ci]\nregion = eu-west-1\naws_access_key_id = AKIACONFIG\n"
                               "aws_secret_access_key = config-secret\naws_session_token = config-token\n");
    env_set("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials");
    env_set("AWS_PROFILE", "ci");
    s3_creds_options o = opts();
    s3_creds c;
    s3_creds_provider *p = provider_get(&o, &c);
    TT_CHECK(strcmp(c.access_key, "AKIACONFIG") == 0 && strcmp(c.secret_key, "config-secret") == 0 &&
                 strcmp(c.session_token, "config-token") == 0,
             "key %s", c.access_key);
    s3_creds_provider_delete(p);
    env_end(home);
}

TT_TEST(test_s3_creds_malformed_file_names_file_and_line)
{
    char *home = env_with_file("credentials", "AWS_SHARED_CREDENTIALS_FILE",
                               "[default]\naws_access_key_id = AKIA\nthis line is not ini\n"
                               "aws_secret_access_key = s\n");
    const char *path = env_get("AWS_SHARED_CREDENTIALS_FILE");
    s3_creds_options o = opts();
    s3_creds_provider *p = s3_creds_provider_new(&o);
    const char *msg = shoal_error_message();
    TT_CHECK(p == NULL && shoal_error_code() == SHOAL_ERR_S3_CREDENTIALS, "a malformed file was accepted");
    tt_note("%s", msg);
    TT_CHECK(strstr(msg, path) && strstr(msg, "line 3"), "message does not name %s line 3: %s", path, msg);
    TT_CHECK(!strstr(msg, "AKIA"), "message carries file contents: %s", msg);
    env_end(home);
}

/* A loopback port nobody listens on. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    TT_CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
                 getsockname(fd, (struct sockaddr *)&sa, &len) == 0,
             "bind");
    close(fd);
    return ntohs(sa.sin_port);
}

TT_TEST(test_s3_creds_no_source_names_every_source_tried)
{
    char *home = env_start();
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", closed_port());
    env_set("AWS_EC2_METADATA_SERVICE_ENDPOINT", ep);
    s3_creds_options o = opts();
    o.disable_imds = false;
    time_t t0 = time(NULL);
    s3_creds_provider *p = s3_creds_provider_new(&o);
    const char *msg = shoal_error_message();
    TT_CHECK(p == NULL && shoal_error_code() == SHOAL_ERR_S3_CREDENTIALS, "credentials out of nothing");
    tt_note("%s", msg);
    static const char *const sources[] = {"environment (AWS_ACCESS_KEY_ID", "web identity (AWS_WEB_IDENTITY_TOKEN_FILE",
                                          "profile 'default'", ".aws/credentials", ".aws/config",
                                          "container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                                          "instance metadata at"};
    for (size_t i = 0; i < sizeof sources / sizeof *sources; i++)
        TT_CHECK(strstr(msg, sources[i]), "message does not name '%s': %s", sources[i], msg);
    TT_CHECK(strstr(msg, ep), "message does not name the metadata endpoint %s: %s", ep, msg);
    TT_CHECK(time(NULL) - t0 <= 3, "falling through took %ld s", (long)(time(NULL) - t0));
    env_end(home);
}

TT_TEST(test_s3_creds_anonymous_when_asked)
{
    char *home = env_start();
    s3_creds_options o = opts();
    o.anonymous = true;
    s3_creds c;
    s3_creds_provider *p = provider_get(&o, &c);
    TT_CHECK(c.anonymous && c.access_key[0] == '\0' && strcmp(s3_creds_source(p), "anonymous") == 0,
             "anonymous=%d source=%s", c.anonymous, s3_creds_source(p));
    s3_creds_provider_delete(p);
    env_end(home);
}

/* ---- the fakes (IMDSv2, STS, container credentials) -------------------------------------- */

typedef struct fake {
    pid_t pid;
    int stdin_fd;
    int port;
    char url[64]; /* http://127.0.0.1:PORT */
} fake;

/* Starts tests/s3/SCRIPT with up to six more arguments (NULL-terminated). */
static void fake_start(fake *f, const char *script, const char *what, ...)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        TT_SKIP("/usr/bin/python3 is needed to run %s", what);
    char rel[128];
    snprintf(rel, sizeof rel, "tests/s3/%s", script);
    const char *argv[10] = {"/usr/bin/python3", tt_source_path(rel)};
    size_t n = 2;
    va_list ap;
    va_start(ap, what);
    for (const char *a; n < 9 && (a = va_arg(ap, const char *)); n++)
        argv[n] = a;
    va_end(ap);
    argv[n] = NULL;
    f->pid = tt_spawn_server((char *const *)argv, NULL, what, &f->port, &f->stdin_fd);
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d", f->port);
}

static void fake_stop(fake *f)
{
    if (f->pid <= 0)
        return;
    close(f->stdin_fd);
    kill(f->pid, SIGTERM);
    waitpid(f->pid, NULL, 0);
    f->pid = 0;
}

/* The fake's /_fake/stats document (caller frees). */
static char *fake_stats(const fake *f)
{
    char *body = tt_http(f->port, "GET", "/_fake/stats");
    TT_CHECK(body, "the fake on port %d does not answer", f->port);
    return body;
}

static long fake_stat(const fake *f, const char *field)
{
    char *body = fake_stats(f);
    char key[64];
    snprintf(key, sizeof key, "\"%s\": ", field);
    const char *at = strstr(body, key);
    TT_CHECK(at, "no %s in %s", field, body);
    long v = atol(at + strlen(key));
    free(body);
    return v;
}

/* A string member of the stats (first match anywhere, no escapes), into out. */
static const char *fake_str(const fake *f, const char *field, char *out, size_t cap)
{
    char *body = fake_stats(f);
    char key[64];
    snprintf(key, sizeof key, "\"%s\": \"", field);
    const char *at = strstr(body, key);
    TT_CHECK(at, "no %s in %s", field, body);
    at += strlen(key);
    size_t n = strcspn(at, "\"");
    TT_CHECK(n < cap, "%s too long", field);
    memcpy(out, at, n);
    out[n] = '\0';
    free(body);
    return out;
}

static void imds_fake_start(fake *f) { fake_start(f, "imds_fake.py", "the fake metadata service", NULL); }

static void *get_creds_thread(void *arg)
{
    s3_creds c;
    return (void *)(intptr_t)(s3_creds_get(arg, &c) == 0 && strcmp(c.access_key, "ASIAFAKE00000002") == 0);
}

/* Starts the fake and a provider whose chain reaches it (endpoint given with or without '/'). */
static s3_creds_provider *imds_provider(fake *f, const char *slash)
{
    imds_fake_start(f);
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d%s", f->port, slash);
    env_set("AWS_EC2_METADATA_SERVICE_ENDPOINT", ep);
    s3_creds_options o = opts();
    o.disable_imds = false;
    s3_creds_provider *p = provider_new(&o);
    return p;
}

TT_TEST(test_s3_creds_imds_v2_refreshes_before_expiry)
{
    char *home = env_start();
    fake f;
    s3_creds_provider *p = imds_provider(&f, "/");
    TT_CHECK(strcmp(s3_creds_source(p), "imds") == 0, "source %s", s3_creds_source(p));
    TT_CHECK(fake_stat(&f, "creds_gets") == 1, "one fetch at start");

    /* The first credentials expire in 60 s, inside the 5-minute margin: the next get renews them,
     * once, however many threads ask at the same moment. */
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        TT_CHECK(pthread_create(&th[i], NULL, get_creds_thread, p) == 0, "pthread_create");
    int fresh = 0;
    for (int i = 0; i < 8; i++) {
        void *ok;
        pthread_join(th[i], &ok);
        fresh += (int)(intptr_t)ok;
    }
    TT_CHECK(fresh == 8, "%d of 8 threads got the renewed credentials", fresh);
    TT_CHECK(fake_stat(&f, "creds_gets") == 2, "renewed %ld times, want once", fake_stat(&f, "creds_gets") - 1);

    s3_creds c;
    TT_OK(s3_creds_get(p, &c));
    int64_t now = (int64_t)time(NULL);
    TT_CHECK(strcmp(c.access_key, "ASIAFAKE00000002") == 0 && strcmp(c.secret_key, "fake/secret+2") == 0,
             "key %s", c.access_key);
    TT_CHECK(strncmp(c.session_token, "fake-session-token-2-", 21) == 0 && strlen(c.session_token) == 1221,
             "token of %zu bytes", strlen(c.session_token));
    TT_CHECK(c.expires > now + 3500 && c.expires <= now + 3601, "expires in %lld s", (long long)(c.expires - now));
    TT_CHECK(fake_stat(&f, "creds_gets") == 2, "credentials valid for an hour were fetched again");
    TT_CHECK(fake_stat(&f, "token_puts") >= 2 && fake_stat(&f, "rejected") == 0,
             "token puts %ld, rejected %ld", fake_stat(&f, "token_puts"), fake_stat(&f, "rejected"));
    s3_creds_provider_delete(p);
    fake_stop(&f);
    env_end(home);
}

TT_TEST(test_s3_creds_imds_failed_refresh_keeps_valid_credentials)
{
    char *home = env_start();
    fake f;
    s3_creds_provider *p = imds_provider(&f, "");
    /* The credentials expire in 60 s, inside the refresh margin, but the service is gone: the
     * renewal fails and the still-valid credentials are kept. */
    fake_stop(&f);
    s3_creds c;
    TT_OK(s3_creds_get(p, &c));
    TT_CHECK(strcmp(c.access_key, "ASIAFAKE00000001") == 0 && c.expires > (int64_t)time(NULL),
             "kept key %s", c.access_key);
    s3_creds_provider_delete(p);
    env_end(home);
}

/* ---- web identity (against the fake STS) ------------------------------------------------ */

/* The fake STS; its first credentials expire in first_ttl seconds ("60" is inside the renewal
 * margin, so the next get renews them). key1 and key2: "ID=SECRET" that may sign AssumeRole. */
static void sts_fake_start(fake *f, const char *first_ttl, const char *key1, const char *key2)
{
    fake_start(f, "sts_fake.py", "the fake STS", "--first-ttl", first_ttl, key1 ? "--key" : NULL, key1,
               key2 ? "--key" : NULL, key2, NULL);
    env_set("AWS_ENDPOINT_URL_STS", f->url);
}

static void check_str(const char *what, const char *got, const char *want)
{
    TT_CHECK(strcmp(got, want) == 0, "%s is '%s', want '%s'", what, got, want);
}

/* fake_str() checked against want. */
static void check_fake(const fake *f, const char *field, const char *want)
{
    char got[2048];
    check_str(field, fake_str(f, field, got, sizeof got), want);
}

TT_TEST(test_s3_creds_web_identity_assumes_role_and_rereads_token_file)
{
    char *home = env_start();
    fake sts;
    sts_fake_start(&sts, "60", NULL, NULL);
    char *tok = write_file(home, "token", "eyJ-first-token\n");
    env_set("AWS_WEB_IDENTITY_TOKEN_FILE", tok);
    env_set("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/shoal-irsa");
    env_set("AWS_ROLE_SESSION_NAME", "shoal-test-session");
    s3_creds_options o = opts();
    s3_creds c;
    s3_creds_provider *p = provider_new(&o);
    check_str("source", s3_creds_source(p), "web-identity");
    check_fake(&sts, "Action", "AssumeRoleWithWebIdentity");
    check_fake(&sts, "Version", "2011-06-15");
    check_fake(&sts, "RoleArn", "arn:aws:iam::123456789012:role/shoal-irsa");
    check_fake(&sts, "RoleSessionName", "shoal-test-session");
    check_fake(&sts, "WebIdentityToken", "eyJ-first-token");
    check_fake(&sts, "authorization", "");

    /* The kubelet rotates the token; the credentials expire within the renewal margin, so the
     * next get renews them, with the token the file holds now. */
    free(write_file(home, "token", "eyJ-second-token"));
    TT_OK(s3_creds_get(p, &c));
    int64_t now = (int64_t)time(NULL);
    check_str("renewed access key", c.access_key, "ASIASTSFAKE00002");
    check_str("secret", c.secret_key, "sts/fake+secret2");
    TT_CHECK(strncmp(c.session_token, "sts-fake-token-2-", 17) == 0 && strlen(c.session_token) == 1517,
             "session token of %zu bytes", strlen(c.session_token));
    TT_CHECK(c.expires > now + 3500, "renewed credentials expire in %lld s", (long long)(c.expires - now));
    check_fake(&sts, "WebIdentityToken", "eyJ-second-token");
    TT_OK(s3_creds_get(p, &c));
    TT_CHECK(fake_stat(&sts, "web_identity") == 2 && fake_stat(&sts, "rejected") == 0,
             "STS calls %ld (want 2: one at start, one renewal), rejected %ld", fake_stat(&sts, "web_identity"),
             fake_stat(&sts, "rejected"));
    s3_creds_provider_delete(p);
    fake_stop(&sts);
    free(tok);
    env_end(home);
}

TT_TEST(test_s3_creds_configured_source_that_fails_does_not_fall_through)
{
    char *home = env_start();
    fake sts, imds;
    sts_fake_start(&sts, "3600", NULL, NULL);
    imds_fake_start(&imds);
    env_set("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url);
    char *tok = write_file(home, "token", "eyJ-token");
    env_set("AWS_WEB_IDENTITY_TOKEN_FILE", tok);
    env_set("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/denied-role");
    s3_creds_options o = opts();
    o.disable_imds = false;

    /* STS refuses the role: the error says so, and the node's instance role is not used instead. */
    TT_CHECK(s3_creds_provider_new(&o) == NULL, "credentials although STS refused the role");
    const char *msg = shoal_error_message();
    tt_note("%s", msg);
    TT_CHECK(shoal_error_code() == SHOAL_ERR_S3_CREDENTIALS && strstr(msg, "web identity") &&
                 strstr(msg, "denied-role") && strstr(msg, "AccessDenied") && strstr(msg, "HTTP 403"),
             "message: %s", msg);
    TT_CHECK(!strstr(msg, "eyJ-token"), "the token is in the message: %s", msg);

    /* The token file is missing: the error names it. */
    env_set("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/shoal");
    env_set("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token");
    TT_CHECK(s3_creds_provider_new(&o) == NULL && strstr(shoal_error_message(), "/nonexistent/token"),
             "missing token file: %s", shoal_error_message());

    /* The token file without a role. */
    env_set("AWS_ROLE_ARN", "");
    TT_CHECK(s3_creds_provider_new(&o) == NULL && strstr(shoal_error_message(), "AWS_ROLE_ARN"),
             "token file without AWS_ROLE_ARN: %s", shoal_error_message());
    TT_CHECK(fake_stat(&imds, "token_puts") == 0, "the metadata service was asked");
    fake_stop(&imds);
    fake_stop(&sts);
    free(tok);
    env_end(home);
}

TT_TEST(test_s3_creds_sts_endpoint_is_regional_unless_legacy_or_overridden)
{
    char *home = env_start();
    s3_creds_options o = opts();
    static const struct {
        const char *region, *mode, *override, *url, *sign;
    } cases[] = {
        {"eu-west-3", NULL, NULL, "https://sts.eu-west-3.amazonaws.com", "eu-west-3"},
        {"eu-west-3", "regional", NULL, "https://sts.eu-west-3.amazonaws.com", "eu-west-3"},
        {"eu-west-3", "legacy", NULL, "https://sts.amazonaws.com", "us-east-1"},
        {"ap-east-1", "legacy", NULL, "https://sts.ap-east-1.amazonaws.com", "ap-east-1"},
        {"cn-north-1", NULL, NULL, "https://sts.cn-north-1.amazonaws.com.cn", "cn-north-1"},
        {NULL, NULL, NULL, "https://sts.amazonaws.com", "us-east-1"},
        {"eu-west-3", NULL, "http://127.0.0.1:9/", "http://127.0.0.1:9", "eu-west-3"},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        env_set("AWS_REGION", cases[i].region ? cases[i].region : "");
        env_set("AWS_STS_REGIONAL_ENDPOINTS", cases[i].mode ? cases[i].mode : "");
        env_set("AWS_ENDPOINT_URL_STS", cases[i].override ? cases[i].override : "");
        s3_creds_src *s = s3_creds_sts_source(&o, S3_CREDS_WEB_IDENTITY, NULL, "arn:aws:iam::1:role/r", NULL, "t");
        TT_CHECK(s, "case %zu: %s", i, shoal_error_message());
        TT_CHECK(strcmp(s->url, cases[i].url) == 0 && strcmp(s->region, cases[i].sign) == 0,
                 "case %zu (region %s, mode %s): %s signed for %s, want %s for %s", i, cases[i].region,
                 cases[i].mode, s->url, s->region, cases[i].url, cases[i].sign);
        s3_creds_src_delete(s);
    }
    /* AWS_ENDPOINT_URL serves every service, STS included; the caller's region beats AWS_REGION;
     * the profile's region comes after both. */
    env_set("AWS_ENDPOINT_URL", "http://127.0.0.1:10");
    env_set("AWS_ENDPOINT_URL_STS", "");
    env_set("AWS_REGION", "");
    s3_creds_src *s = s3_creds_sts_source(&o, S3_CREDS_ASSUME_ROLE, "ca-central-1", "arn:aws:iam::1:role/r", NULL, "t");
    TT_CHECK(s && strcmp(s->url, "http://127.0.0.1:10") == 0 && strcmp(s->region, "ca-central-1") == 0,
             "global endpoint and profile region: %s %s", s ? s->url : shoal_error_message(), s ? s->region : "");
    s3_creds_src_delete(s);
    o.region = "us-west-2";
    env_set("AWS_REGION", "eu-central-1");
    s = s3_creds_sts_source(&o, S3_CREDS_ASSUME_ROLE, "ca-central-1", "arn:aws:iam::1:role/r", NULL, "t");
    TT_CHECK(s && strcmp(s->region, "us-west-2") == 0, "the caller's region: %s", s ? s->region : "none");
    s3_creds_src_delete(s);
    env_set("AWS_STS_REGIONAL_ENDPOINTS", "sideways");
    TT_CHECK(!s3_creds_sts_source(&o, S3_CREDS_ASSUME_ROLE, NULL, "arn:aws:iam::1:role/r", NULL, "t") &&
                 strstr(shoal_error_message(), "AWS_STS_REGIONAL_ENDPOINTS"),
             "a bad AWS_STS_REGIONAL_ENDPOINTS: %s", shoal_error_message());
    env_end(home);
}

TT_TEST(test_s3_endpoint_from_env_service_variable_beats_global)
{
    char *home = env_start();
    char *url = (char *)"unset";
    TT_OK(s3_endpoint_from_env("S3", env_get, &url));
    TT_CHECK(url == NULL, "an endpoint out of nothing: %s", url);
    env_set("AWS_ENDPOINT_URL", "http://minio.local:9000/");
    TT_OK(s3_endpoint_from_env("S3", env_get, &url));
    check_str("AWS_ENDPOINT_URL", url, "http://minio.local:9000");
    free(url);
    env_set("AWS_ENDPOINT_URL_S3", "https://s3.example.com:8443");
    TT_OK(s3_endpoint_from_env("S3", env_get, &url));
    check_str("AWS_ENDPOINT_URL_S3", url, "https://s3.example.com:8443");
    free(url);
    TT_OK(s3_endpoint_from_env("STS", env_get, &url));
    check_str("STS through AWS_ENDPOINT_URL", url, "http://minio.local:9000");
    free(url);
    env_set("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true");
    TT_OK(s3_endpoint_from_env("S3", env_get, &url));
    TT_CHECK(url == NULL, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true still gave %s", url);
    env_set("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "");
    static const char *const bad[] = {"ftp://s3.example.com", "http://", "http:///bucket", "http://a b"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        env_set("AWS_ENDPOINT_URL_S3", bad[i]);
        TT_CHECK(s3_endpoint_from_env("S3", env_get, &url) == -1 && url == NULL &&
                     shoal_error_code() == SHOAL_ERR_INVAL && strstr(shoal_error_message(), "AWS_ENDPOINT_URL_S3"),
                 "'%s' accepted or the message does not name the variable: %s", bad[i], shoal_error_message());
    }
    env_end(home);
}

/* ---- profiles with role_arn, credential_source, credential_process ---------------------- */

TT_TEST(test_s3_creds_role_arn_profile_assumes_role_signed_by_source_profile)
{
    char *home = env_with_file("config", "AWS_CONFIG_FILE",
                               "[profile base]\naws_access_key_id = AKIABASE\naws_secret_access_key = base/secret\n\n"
                               "[profile app]\nrole_arn = arn:aws:iam::123456789012:role/app\nsource_profile = base\n"
                               "external_id = ext-42\nrole_session_name = shoal-app\nduration_seconds = 1800\n"
                               "region = eu-west-3\n\n"
                               "[profile chained]\nrole_arn = arn:aws:iam::123456789012:role/chained\n"
                               "source_profile = app\n");
    env_set("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials");
    env_set("AWS_PROFILE", "app");
    fake sts;
    sts_fake_start(&sts, "3600", "AKIABASE=base/secret", NULL);
    s3_creds_options o = opts();
    s3_creds c;
    s3_creds_provider *p = provider_get(&o, &c);
    check_str("source", s3_creds_source(p), "profile");
    check_str("access key", c.access_key, "ASIASTSFAKE00001");
    TT_CHECK(fake_stat(&sts, "assume_role") == 1 && fake_stat(&sts, "rejected") == 0,
             "AssumeRole calls %ld, rejected %ld (the fake checks the signature)", fake_stat(&sts, "assume_role"),
             fake_stat(&sts, "rejected"));
    check_fake(&sts, "Action", "AssumeRole");
    check_fake(&sts, "RoleArn", "arn:aws:iam::123456789012:role/app");
    check_fake(&sts, "signed_by", "AKIABASE");
    check_fake(&sts, "security_token", "no");
    check_fake(&sts, "ExternalId", "ext-42");
    check_fake(&sts, "RoleSessionName", "shoal-app");
    check_fake(&sts, "DurationSeconds", "1800");
    char auth[512];
    TT_CHECK(strstr(fake_str(&sts, "authorization", auth, sizeof auth), "/eu-west-3/sts/aws4_request"),
             "not signed for the profile's region: %s", auth);
    s3_creds_provider_delete(p);

    /* A role assumed with another role's temporary credentials: the second call is signed with
     * the first call's key and carries its session token. */
    env_set("AWS_PROFILE", "chained");
    p = provider_get(&o, &c);
    check_str("chained access key", c.access_key, "ASIASTSFAKE00003");
    check_fake(&sts, "RoleArn", "arn:aws:iam::123456789012:role/chained");
    check_fake(&sts, "signed_by", "ASIASTSFAKE00002");
    check_fake(&sts, "security_token", "yes");
    TT_CHECK(fake_stat(&sts, "rejected") == 0, "the fake rejected a request");
    s3_creds_provider_delete(p);
    fake_stop(&sts);
    env_end(home);
}

TT_TEST(test_s3_creds_credential_source_environment_and_ecs_container)
{
    char *home = env_with_file("config", "AWS_CONFIG_FILE",
                               "[profile from-env]\nrole_arn = arn:aws:iam::1:role/env-role\n"
                               "credential_source = Environment\n"
                               "[profile from-ecs]\nrole_arn = arn:aws:iam::1:role/ecs-role\n"
                               "credential_source = EcsContainer\n"
                               "[profile bogus]\nrole_arn = arn:aws:iam::1:role/x\ncredential_source = Laptop\n");
    fake sts, ecs;
    sts_fake_start(&sts, "3600", "AKIAENV=env/secret", "ASIACONTAINER0001=container/secret+1");
    fake_start(&ecs, "container_creds_fake.py", "the fake container credentials endpoint", "--token", "tok-abc",
               "--first-ttl", "3600", NULL);
    env_set("AWS_ACCESS_KEY_ID", "AKIAENV");
    env_set("AWS_SECRET_ACCESS_KEY", "env/secret");
    env_set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/fake-task");
    env_set("AWS_CONTAINER_AUTHORIZATION_TOKEN", "tok-abc");
    s3_creds_options o = opts();
    o.container_host = ecs.url;
    /* A profile named by the caller starts the chain at the profile, so the environment's keys
     * sign the AssumeRole instead of being used directly. */
    o.profile = "from-env";
    s3_creds c;
    s3_creds_provider *p = provider_get(&o, &c);
    check_str("source", s3_creds_source(p), "profile");
    check_fake(&sts, "signed_by", "AKIAENV");
    check_fake(&sts, "RoleArn", "arn:aws:iam::1:role/env-role");
    s3_creds_provider_delete(p);

    o.profile = "from-ecs";
    p = provider_get(&o, &c);
    check_fake(&sts, "signed_by", "ASIACONTAINER0001");
    check_fake(&sts, "security_token", "yes");
    check_fake(&ecs, "last_authorization", "tok-abc");
    TT_CHECK(fake_stat(&sts, "rejected") == 0 && fake_stat(&ecs, "gets") == 1, "rejected %ld, container gets %ld",
             fake_stat(&sts, "rejected"), fake_stat(&ecs, "gets"));
    s3_creds_provider_delete(p);

    o.profile = "bogus";
    TT_CHECK(!s3_creds_provider_new(&o) && strstr(shoal_error_message(), "'bogus'") &&
                 strstr(shoal_error_message(), "Laptop"),
             "credential_source Laptop: %s", shoal_error_message());
    fake_stop(&ecs);
    fake_stop(&sts);
    env_end(home);
}

TT_TEST(test_s3_creds_broken_role_and_sso_profiles_name_profile_and_key)
{
    char *home = env_with_file("config", "AWS_CONFIG_FILE",
                               "[profile lonely]\nrole_arn = arn:aws:iam::1:role/x\n"
                               "[profile loop-a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = loop-b\n"
                               "[profile loop-b]\nrole_arn = arn:aws:iam::1:role/b\nsource_profile = loop-a\n"
                               "[profile orphan]\nrole_arn = arn:aws:iam::1:role/o\nsource_profile = nosuch\n"
                               "[profile mfa]\nrole_arn = arn:aws:iam::1:role/m\nsource_profile = half\n"
                               "mfa_serial = arn:aws:iam::1:mfa/me\n"
                               "[profile sso]\nsso_session = corp\nsso_account_id = 1\nsso_role_name = Reader\n"
                               "[sso-session corp]\nsso_start_url = https://corp.example/start\nsso_region = us-east-1\n"
                               "[profile half]\naws_access_key_id = AKIAHALF\n"
                               "[profile wit]\nweb_identity_token_file = /tmp/token\n");
    static const struct {
        const char *profile;
        shoal_err code;
        const char *needle[3];
    } cases[] = {
        {"lonely", SHOAL_ERR_S3_CREDENTIALS, {"'lonely'", "role_arn", "source_profile"}},
        {"loop-a", SHOAL_ERR_S3_CREDENTIALS, {"loop", "loop-a -> loop-b -> loop-a", NULL}},
        {"orphan", SHOAL_ERR_S3_CREDENTIALS, {"'orphan'", "'nosuch' not found", NULL}},
        {"mfa", SHOAL_ERR_UNSUPPORTED, {"'mfa'", "mfa_serial", "not supported"}},
        {"sso", SHOAL_ERR_UNSUPPORTED, {"'sso'", "sso_session", "credential_process"}},
        {"half", SHOAL_ERR_S3_CREDENTIALS, {"'half'", "aws_access_key_id", "aws_secret_access_key"}},
        {"wit", SHOAL_ERR_S3_CREDENTIALS, {"'wit'", "web_identity_token_file", "role_arn"}},
    };
    s3_creds_options o = opts();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        env_set("AWS_PROFILE", cases[i].profile);
        TT_CHECK(s3_creds_provider_new(&o) == NULL, "profile %s gave credentials", cases[i].profile);
        const char *msg = shoal_error_message();
        tt_note("%s: %s", cases[i].profile, msg);
        TT_CHECK(shoal_error_code() == cases[i].code, "profile %s: error %s", cases[i].profile,
                 shoal_error_name(shoal_error_code()));
        for (int k = 0; k < 3 && cases[i].needle[k]; k++)
            TT_CHECK(strstr(msg, cases[i].needle[k]), "profile %s: '%s' not in: %s", cases[i].profile,
                     cases[i].needle[k], msg);
        TT_CHECK(!strstr(msg, "profile '") || !strstr(msg, "not found") || strstr(msg, "nosuch"),
                 "profile %s is said not to exist: %s", cases[i].profile, msg);
    }
    env_end(home);
}

/* A credential_process helper: counts its runs in DIR/count; the first credentials expire in
 * 60 s (inside the renewal margin), later ones in an hour. */
static const char process_script[] =
    "d=\"$1\"\n"
    "n=$(( $(cat \"$d/count\" 2>/dev/null || echo 0) + 1 ))\n"
    "echo $n > \"$d/count\"\n"
    "if [ $n -eq 1 ]; then ttl=60; else ttl=3600; fi\n"
    "printf '{\"Version\": 1, \"AccessKeyId\": \"AKIAPROC%04d\", \"SecretAccessKey\": \"proc/secret%d\", "
    "\"SessionToken\": \"proc-token-%d\", \"Expiration\": \"%s\"}\\n' $n $n $n "
    "\"$(date -u -d \"+$ttl seconds\" +%Y-%m-%dT%H:%M:%SZ)\"\n";

static int process_runs(const char *home)
{
    char path[512];
    snprintf(path, sizeof path, "%s/count", home);
    FILE *f = fopen(path, "r");
    int n = 0;
    if (f) {
        TT_CHECK(fscanf(f, "%d", &n) == 1, "count file");
        fclose(f);
    }
    return n;
}

TT_TEST(test_s3_creds_credential_process_runs_and_refreshes_at_expiration)
{
    char *home = env_start();
    char *script = write_file(home, "helper.sh", process_script);
    char *conf = NULL;
    TT_CHECK(asprintf(&conf, "[profile proc]\ncredential_process = /bin/sh %s %s\n", script, home) > 0, "asprintf");
    free(write_file(home, "config", conf));
    char *conf_path = NULL;
    TT_CHECK(asprintf(&conf_path, "%s/config", home) > 0, "asprintf");
    env_set("AWS_CONFIG_FILE", conf_path);
    env_set("AWS_PROFILE", "proc");
    s3_creds_options o = opts();
    s3_creds c;
    s3_creds_provider *p = provider_new(&o);
    check_str("source", s3_creds_source(p), "profile");
    TT_CHECK(process_runs(home) == 1, "ran %d times at start", process_runs(home));
    /* The first credentials expire in 60 s, inside the renewal margin: the next get runs the
     * process again, and the one after does not. */
    TT_OK(s3_creds_get(p, &c));
    int64_t now = (int64_t)time(NULL);
    check_str("renewed access key", c.access_key, "AKIAPROC0002");
    check_str("secret", c.secret_key, "proc/secret2");
    check_str("token", c.session_token, "proc-token-2");
    TT_CHECK(c.expires > now + 3500 && c.expires <= now + 3601, "expires in %lld s", (long long)(c.expires - now));
    TT_OK(s3_creds_get(p, &c));
    TT_CHECK(process_runs(home) == 2, "ran %d times, want 2 (start, one renewal)", process_runs(home));
    s3_creds_provider_delete(p);
    free(conf);
    free(conf_path);
    free(script);
    env_end(home);
}

TT_TEST(test_s3_creds_failed_credential_process_gives_clear_error)
{
    char *home = env_start();
    static const struct {
        const char *name, *script, *needle;
    } cases[] = {
        {"fails", "echo 'helper: token expired, run login' >&2\nexit 3\n", "exited with status 3: helper: token expired"},
        {"garbage", "echo AKIALEAKED not json\n", "malformed JSON"},
        {"v2", "echo '{\"Version\": 2, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"S\"}'\n", "\"Version\" is 2"},
        {"vstring", "echo '{\"Version\": \"1\", \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"S\"}'\n", "a string"},
        {"nosecret", "echo '{\"Version\": 1, \"AccessKeyId\": \"A\"}'\n", "SecretAccessKey"},
        {"badexp", "echo '{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"S\", \"Expiration\": "
                   "\"tomorrow\"}'\n", "Expiration 'tomorrow'"},
        {"silent", "exit 0\n", "printed nothing"},
        {"slow", "sleep 30\n", "did not finish within 300 ms"},
        {"missing", NULL, "exited with status 127"},
    };
    shoal_buf conf = {0};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s.sh", cases[i].name);
        if (cases[i].script) {
            char *script = write_file(home, name, cases[i].script);
            shoal_buf_appendf(&conf, "[profile %s]\ncredential_process = /bin/sh %s\n", cases[i].name, script);
            free(script);
        } else {
            shoal_buf_appendf(&conf, "[profile %s]\ncredential_process = /nonexistent/helper\n", cases[i].name);
        }
    }
    free(write_file(home, "config", shoal_buf_str(&conf)));
    char *conf_path = NULL;
    TT_CHECK(asprintf(&conf_path, "%s/config", home) > 0, "asprintf");
    env_set("AWS_CONFIG_FILE", conf_path);
    s3_creds_options o = opts();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        o.profile = cases[i].name;
        /* Only the slow helper meets the short limit; the others get a limit no load reaches, so a
         * busy machine cannot turn their answers into timeouts. */
        o.process_timeout_ms = strcmp(cases[i].name, "slow") ? 20000 : 300;
        time_t t0 = time(NULL);
        TT_CHECK(s3_creds_provider_new(&o) == NULL, "profile %s gave credentials", cases[i].name);
        const char *msg = shoal_error_message();
        tt_note("%s", msg);
        TT_CHECK(shoal_error_code() == SHOAL_ERR_S3_CREDENTIALS && strstr(msg, cases[i].needle) &&
                     strstr(msg, cases[i].name) && strstr(msg, "credential_process"),
                 "profile %s: '%s' not in: %s", cases[i].name, cases[i].needle, msg);
        TT_CHECK(!strstr(msg, "AKIALEAKED"), "the process's output is in the message: %s", msg);
        TT_CHECK(time(NULL) - t0 < 25, "profile %s took %ld s: the helper was not stopped", cases[i].name,
                 (long)(time(NULL) - t0));
    }
    shoal_buf_destroy(&conf);
    free(conf_path);
    env_end(home);
}

TT_TEST(test_s3_creds_rotated_profile_file_is_picked_up)
{
    char *home = env_with_file("credentials", "AWS_SHARED_CREDENTIALS_FILE",
                               "[default]\naws_access_key_id = AKIAONE\naws_secret_access_key = one\n");
    s3_creds_options o = opts();
    s3_creds c;
    s3_creds_provider *p = provider_get(&o, &c);
    check_str("first key", c.access_key, "AKIAONE");
    free(write_file(home, "credentials", "[default]\naws_access_key_id = AKIATWO2\naws_secret_access_key = two2\n"
                                         "aws_session_token = token-two\n"));
    TT_OK(s3_creds_get(p, &c));
    check_str("key after rotation", c.access_key, "AKIATWO2");
    check_str("token after rotation", c.session_token, "token-two");
    /* A file caught half written (or broken) keeps the credentials in use. */
    free(write_file(home, "credentials", "[default]\naws_access_key_id = AKIATHREE\nthis is not ini\n"));
    TT_OK(s3_creds_get(p, &c));
    check_str("key while the file is broken", c.access_key, "AKIATWO2");
    free(write_file(home, "credentials", "[default]\naws_access_key_id = AKIATHREE\naws_secret_access_key = 3\n"));
    TT_OK(s3_creds_get(p, &c));
    check_str("key after the file was fixed", c.access_key, "AKIATHREE");
    TT_CHECK(c.session_token[0] == '\0', "a token left from the old file: %s", c.session_token);
    s3_creds_provider_delete(p);
    env_end(home);
}

/* ---- container credentials (against the fake agent) ------------------------------------- */

TT_TEST(test_s3_creds_container_relative_uri_rereads_token_file_and_refreshes)
{
    char *home = env_start();
    char *tok = write_file(home, "token", "tok-one\n");
    fake ecs;
    fake_start(&ecs, "container_creds_fake.py", "the fake container credentials endpoint", "--token-file", tok, NULL);
    env_set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/fake-task");
    env_set("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tok);
    env_set("AWS_CONTAINER_AUTHORIZATION_TOKEN", "not-this-one"); /* the file wins */
    s3_creds_options o = opts();
    o.container_host = ecs.url;
    s3_creds c;
    s3_creds_provider *p = provider_new(&o);
    check_str("source", s3_creds_source(p), "container");
    check_fake(&ecs, "last_authorization", "tok-one");
    /* The token is rotated and the first credentials expire in 60 s: the next get renews them
     * with the new token. */
    free(write_file(home, "token", "tok-two"));
    TT_OK(s3_creds_get(p, &c));
    check_str("renewed access key", c.access_key, "ASIACONTAINER0002");
    check_str("secret", c.secret_key, "container/secret+2");
    TT_CHECK(strncmp(c.session_token, "container-token-2-", 18) == 0 && strlen(c.session_token) == 1118,
             "session token of %zu bytes", strlen(c.session_token));
    check_fake(&ecs, "last_authorization", "tok-two");
    TT_OK(s3_creds_get(p, &c));
    TT_CHECK(fake_stat(&ecs, "gets") == 2 && fake_stat(&ecs, "rejected") == 0, "gets %ld (want 2), rejected %ld",
             fake_stat(&ecs, "gets"), fake_stat(&ecs, "rejected"));
    s3_creds_provider_delete(p);
    fake_stop(&ecs);
    free(tok);
    env_end(home);
}

TT_TEST(test_s3_creds_container_full_uri_is_limited_to_local_hosts_over_http)
{
    char *home = env_start();
    fake pod;
    fake_start(&pod, "container_creds_fake.py", "the fake EKS Pod Identity agent", "--token", "sekrit", "--path",
               "/creds", "--first-ttl", "3600", NULL);
    char full[128];
    snprintf(full, sizeof full, "%s/creds", pod.url);
    env_set("AWS_CONTAINER_CREDENTIALS_FULL_URI", full);
    env_set("AWS_CONTAINER_AUTHORIZATION_TOKEN", "sekrit");
    s3_creds_options o = opts();
    s3_creds c;
    s3_creds_provider *p = provider_get(&o, &c);
    check_str("access key", c.access_key, "ASIACONTAINER0001");
    check_fake(&pod, "last_authorization", "sekrit");
    s3_creds_provider_delete(p);

    env_set("AWS_CONTAINER_AUTHORIZATION_TOKEN", "wrong-token");
    TT_CHECK(!s3_creds_provider_new(&o), "credentials with a wrong token");
    const char *msg = shoal_error_message();
    TT_CHECK(strstr(msg, "HTTP 401") && strstr(msg, "authorization token") && !strstr(msg, "wrong-token"),
             "wrong token: %s", msg);

    /* Refused before any request is made. */
    static const char *const refused[] = {"http://10.1.2.3/creds", "http://evil.example.com/creds",
                                          "http://user@127.0.0.1/creds", "file:///etc/passwd"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        env_set("AWS_CONTAINER_CREDENTIALS_FULL_URI", refused[i]);
        TT_CHECK(!s3_creds_provider_new(&o) && strstr(shoal_error_message(), "AWS_CONTAINER_CREDENTIALS_FULL_URI"),
                 "%s accepted: %s", refused[i], shoal_error_message());
        tt_note("%s", shoal_error_message());
    }
    TT_CHECK(fake_stat(&pod, "gets") == 1, "the agent answered %ld times, want 1", fake_stat(&pod, "gets"));
    fake_stop(&pod);
    env_end(home);
}

/* ---- the order of the chain ----------------------------------------------------------------- */

TT_TEST(test_s3_creds_order_env_web_identity_profile_container_imds)
{
    char *home = env_with_file("credentials", "AWS_SHARED_CREDENTIALS_FILE",
                               "[default]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = p\n");
    char *tok = write_file(home, "token", "eyJ-token");
    fake sts, ecs, imds;
    sts_fake_start(&sts, "3600", NULL, NULL);
    fake_start(&ecs, "container_creds_fake.py", "the fake container credentials endpoint", "--first-ttl", "3600",
               NULL);
    fake_start(&imds, "imds_fake.py", "the fake metadata service", "--first-ttl", "3600", NULL);
    env_set("AWS_ACCESS_KEY_ID", "AKIAENV");
    env_set("AWS_SECRET_ACCESS_KEY", "e");
    env_set("AWS_WEB_IDENTITY_TOKEN_FILE", tok);
    env_set("AWS_ROLE_ARN", "arn:aws:iam::1:role/irsa");
    env_set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/fake-task");
    env_set("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url);
    s3_creds_options o = opts();
    o.disable_imds = false;
    o.container_host = ecs.url;
    static const struct {
        const char *unset, *source, *key;
    } steps[] = {
        {NULL, "environment", "AKIAENV"},
        {"AWS_ACCESS_KEY_ID", "web-identity", "ASIASTSFAKE00001"},
        {"AWS_WEB_IDENTITY_TOKEN_FILE", "profile", "AKIAPROFILE"},
        {"AWS_SHARED_CREDENTIALS_FILE", "container", "ASIACONTAINER0001"},
        {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "imds", "ASIAFAKE00000001"},
    };
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        if (steps[i].unset)
            env_set(steps[i].unset, strcmp(steps[i].unset, "AWS_SHARED_CREDENTIALS_FILE") ? "" : "/nonexistent/c");
        if (i == 1)
            env_set("AWS_SECRET_ACCESS_KEY", "");
        s3_creds c;
        s3_creds_provider *p = provider_get(&o, &c);
        tt_note("without %s: %s", steps[i].unset ? steps[i].unset : "nothing", s3_creds_source(p));
        check_str("source", s3_creds_source(p), steps[i].source);
        check_str("access key", c.access_key, steps[i].key);
        s3_creds_provider_delete(p);
    }
    /* Each later source was asked only once its turn came. */
    TT_CHECK(fake_stat(&sts, "web_identity") == 1 && fake_stat(&ecs, "gets") == 1 &&
                 fake_stat(&imds, "creds_gets") == 1,
             "STS %ld, container %ld, IMDS %ld calls; want 1 each", fake_stat(&sts, "web_identity"),
             fake_stat(&ecs, "gets"), fake_stat(&imds, "creds_gets"));
    fake_stop(&imds);
    fake_stop(&ecs);
    fake_stop(&sts);
    free(tok);
    env_end(home);
}

/* ---- signing against the real local S3 server ------------------------------------------- */

static size_t collect(char *data, size_t size, size_t n, void *ud)
{
    return shoal_buf_append(ud, data, size * n) == 0 ? size * n : 0;
}

/* One path-style request signed with c; returns the HTTP status, the body into resp. */
static long signed_request(const tt_s3rver *srv, const s3_creds *c, const char *method, const char *path,
                           const char *body, shoal_buf *resp)
{
    char host[64], date[17], hash[65];
    snprintf(host, sizeof host, "127.0.0.1:%d", srv->port);
    s3_amz_date((int64_t)time(NULL), date);
    s3_sha256_hex(body ? body : "", body ? strlen(body) : 0, hash);
    const s3_kv headers[] = {{"Host", host}, {"Content-Type", "application/octet-stream"}};
    s3_sigv4_request req = {.method = method, .path = path, .headers = headers, .n_headers = body ? 2 : 1,
                            .payload_sha256 = hash};
    s3_sigv4_params sp = {.access_key = c->access_key, .secret_key = c->secret_key,
                          .session_token = c->session_token, .region = "us-east-1", .service = "s3",
                          .amz_date = date, .s3 = true};
    s3_sigv4_result r;
    s3_sigv4_result_create(&r);
    TT_OK(s3_sigv4_sign_header(&req, &sp, &r));

    struct curl_slist *hl = NULL;
    char line[4096];
    snprintf(line, sizeof line, "Host: %s", host);
    hl = curl_slist_append(hl, line);
    snprintf(line, sizeof line, "Authorization: %s", shoal_buf_str(&r.authorization));
    hl = curl_slist_append(hl, line);
    hl = curl_slist_append(hl, body ? "Content-Type: application/octet-stream" : "Content-Type:");
    hl = curl_slist_append(hl, "Expect:");
    char *added = strdup(shoal_buf_str(&r.added_headers));
    for (char *save = NULL, *h = strtok_r(added, "\n", &save); h; h = strtok_r(NULL, "\n", &save))
        hl = curl_slist_append(hl, h);
    free(added);

    char url[4096];
    snprintf(url, sizeof url, "%s%s", srv->endpoint, shoal_buf_str(&r.wire_path));
    CURL *curl = curl_easy_init();
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, resp);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    CURLcode cc = curl_easy_perform(curl);
    TT_CHECK(cc == CURLE_OK, "%s %s: %s", method, url, curl_easy_strerror(cc));
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    curl_slist_free_all(hl);
    s3_sigv4_result_destroy(&r);
    return status;
}

/* A local S3 server and credentials read from profile [s3rver] of a credentials file that holds
 * s3rver's key with `secret`. */
typedef struct signing_fixture {
    char *home;
    tt_s3rver srv;
    s3_creds_provider *p;
    s3_creds c;
    shoal_buf resp;
} signing_fixture;

static void fixture_start(signing_fixture *f, const char *secret)
{
    memset(f, 0, sizeof *f);
    char *text = NULL;
    TT_CHECK(asprintf(&text, "[s3rver]\naws_access_key_id = S3RVER\naws_secret_access_key = %s\n", secret) > 0,
             "asprintf");
    f->home = env_with_file("credentials", "AWS_SHARED_CREDENTIALS_FILE", text);
    free(text);
    tt_s3rver_start(&f->srv, "shoal-test", false);
    s3_creds_options o = opts();
    o.profile = "s3rver";
    f->p = provider_get(&o, &f->c);
}

static void fixture_stop(signing_fixture *f)
{
    shoal_buf_destroy(&f->resp);
    s3_creds_provider_delete(f->p);
    tt_s3rver_stop(&f->srv);
    env_end(f->home);
}

static const char object_path[] = "/shoal-test/dir/a b+$%&;=?@[]~\xc3\xa9.txt";

TT_TEST(test_s3_creds_profile_signs_real_put_and_get)
{
    signing_fixture f;
    fixture_start(&f, "S3RVER");
    const char *data = "bytes signed with credentials from a profile file\n";
    long status = signed_request(&f.srv, &f.c, "PUT", object_path, data, &f.resp);
    TT_CHECK(status == 200, "PUT: HTTP %ld: %s", status, shoal_buf_str(&f.resp));
    shoal_buf_reset(&f.resp);
    status = signed_request(&f.srv, &f.c, "GET", object_path, NULL, &f.resp);
    TT_CHECK(status == 200, "GET: HTTP %ld: %s", status, shoal_buf_str(&f.resp));
    TT_CHECK(strcmp(shoal_buf_str(&f.resp), data) == 0, "GET returned '%s'", shoal_buf_str(&f.resp));
    fixture_stop(&f);
}

TT_TEST(test_s3_creds_wrong_secret_gets_signature_does_not_match)
{
    signing_fixture f;
    fixture_start(&f, "not-the-secret");
    long status = signed_request(&f.srv, &f.c, "PUT", object_path, "x", &f.resp);
    TT_CHECK(status == 403, "PUT with a wrong secret: HTTP %ld, want 403", status);
    TT_CHECK(strstr(shoal_buf_str(&f.resp), "SignatureDoesNotMatch"), "body: %s", shoal_buf_str(&f.resp));
    fixture_stop(&f);
}

TT_MAIN()
