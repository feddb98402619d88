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
#include "s3_sigv4.h"
#include "s3rver.h"
#include "shoal_error.h"
#include "tt.h"

#include <curl/curl.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- a private environment --------------------------------------------------------------- */

static struct {
    const char *name;
    char *value;
} test_env[16];

static void env_set(const char *name, const char *value)
{
    size_t i = 0;
    while (i < 16 && test_env[i].name && strcmp(test_env[i].name, name) != 0)
        i++;
    TT_CHECK(i < 16, "test environment full");
    free(test_env[i].value);
    test_env[i].name = name;
    test_env[i].value = strdup(value);
}

static const char *env_get(const char *name)
{
    for (size_t i = 0; i < 16 && test_env[i].name; i++)
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
    for (size_t i = 0; i < 16; i++) {
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

/* A provider for o, checked, and its current credentials in *c. */
static s3_creds_provider *provider_get(const s3_creds_options *o, s3_creds *c)
{
    s3_creds_provider *p = s3_creds_provider_new(o);
    TT_CHECK(p, "provider: %s", shoal_error_message());
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
    TT_CHECK(strstr(msg, "AWS_ACCESS_KEY_ID") && strstr(msg, "profile 'default'") && strstr(msg, ".aws/credentials") &&
                 strstr(msg, ".aws/config") && strstr(msg, "instance metadata") && strstr(msg, ep),
             "message does not name every source: %s", msg);
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

/* ---- IMDSv2, against the fake ------------------------------------------------------------- */

typedef struct imds_fake {
    pid_t pid;
    int stdin_fd;
    int port;
} imds_fake;

static void imds_fake_start(imds_fake *f)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        TT_SKIP("/usr/bin/python3 is needed to run the fake metadata service");
    const char *argv[] = {"/usr/bin/python3", tt_source_path("tests/s3/imds_fake.py"), NULL};
    f->pid = tt_spawn_server((char *const *)argv, NULL, "the fake metadata service", &f->port, &f->stdin_fd);
}

static void imds_fake_stop(imds_fake *f)
{
    close(f->stdin_fd);
    kill(f->pid, SIGTERM);
    waitpid(f->pid, NULL, 0);
}

static long imds_fake_stat(const imds_fake *f, const char *field)
{
    char *body = tt_http(f->port, "GET", "/_fake/stats");
    TT_CHECK(body, "the fake metadata service does not answer");
    char key[64];
    snprintf(key, sizeof key, "\"%s\": ", field);
    const char *at = strstr(body, key);
    TT_CHECK(at, "no %s in %s", field, body);
    long v = atol(at + strlen(key));
    free(body);
    return v;
}

static void *get_creds_thread(void *arg)
{
    s3_creds c;
    return (void *)(intptr_t)(s3_creds_get(arg, &c) == 0 && strcmp(c.access_key, "ASIAFAKE00000002") == 0);
}

/* Starts the fake and a provider whose chain reaches it (endpoint given with or without '/'). */
static s3_creds_provider *imds_provider(imds_fake *f, const char *slash)
{
    imds_fake_start(f);
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d%s", f->port, slash);
    env_set("AWS_EC2_METADATA_SERVICE_ENDPOINT", ep);
    s3_creds_options o = opts();
    o.disable_imds = false;
    s3_creds_provider *p = s3_creds_provider_new(&o);
    TT_CHECK(p, "provider: %s", shoal_error_message());
    return p;
}

TT_TEST(test_s3_creds_imds_v2_refreshes_before_expiry)
{
    char *home = env_start();
    imds_fake f;
    s3_creds_provider *p = imds_provider(&f, "/");
    TT_CHECK(strcmp(s3_creds_source(p), "imds") == 0, "source %s", s3_creds_source(p));
    TT_CHECK(imds_fake_stat(&f, "creds_gets") == 1, "one fetch at start");

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
    TT_CHECK(imds_fake_stat(&f, "creds_gets") == 2, "renewed %ld times, want once", imds_fake_stat(&f, "creds_gets") - 1);

    s3_creds c;
    TT_OK(s3_creds_get(p, &c));
    int64_t now = (int64_t)time(NULL);
    TT_CHECK(strcmp(c.access_key, "ASIAFAKE00000002") == 0 && strcmp(c.secret_key, "fake/secret+2") == 0,
             "key %s", c.access_key);
    TT_CHECK(strncmp(c.session_token, "fake-session-token-2-", 21) == 0 && strlen(c.session_token) == 1221,
             "token of %zu bytes", strlen(c.session_token));
    TT_CHECK(c.expires > now + 3500 && c.expires <= now + 3601, "expires in %lld s", (long long)(c.expires - now));
    TT_CHECK(imds_fake_stat(&f, "creds_gets") == 2, "credentials valid for an hour were fetched again");
    TT_CHECK(imds_fake_stat(&f, "token_puts") >= 2 && imds_fake_stat(&f, "rejected") == 0,
             "token puts %ld, rejected %ld", imds_fake_stat(&f, "token_puts"), imds_fake_stat(&f, "rejected"));
    s3_creds_provider_delete(p);
    imds_fake_stop(&f);
    env_end(home);
}

TT_TEST(test_s3_creds_imds_failed_refresh_keeps_valid_credentials)
{
    char *home = env_start();
    imds_fake f;
    s3_creds_provider *p = imds_provider(&f, "");
    /* The credentials expire in 60 s, inside the refresh margin, but the service is gone: the
     * renewal fails and the still-valid credentials are kept. */
    imds_fake_stop(&f);
    s3_creds c;
    TT_OK(s3_creds_get(p, &c));
    TT_CHECK(strcmp(c.access_key, "ASIAFAKE00000001") == 0 && c.expires > (int64_t)time(NULL),
             "kept key %s", c.access_key);
    s3_creds_provider_delete(p);
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
