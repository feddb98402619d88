/*
 * The S3 client under faults. Every test here goes through tests/s3/faultproxy.py, a FAULT
 * INJECTOR (a fake on purpose): it sits in front of the real local S3 server and, as each test's
 * plan says, answers what no healthy server produces on demand (503 SlowDown, 403, 412, 500, a
 * 200 carrying <Error>), drops or resets connections, truncates bodies or stalls, or lets the
 * server act on a request and then loses or delays its answer (the commit-safe write tests, which
 * then check what the real server stored). Requests without a planned fault are forwarded
 * unchanged to the real server.
 */
#include "s3_client.h"
#include "faultproxy.h"
#include "s3rver.h"
#include "shoal_env.h"
#include "shoal_error.h"
#include "tt.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BUCKET "faults"

typedef struct fixture {
    tt_s3rver srv;
    tt_proxy px;
    s3_creds_provider *creds;
    s3_client *c;
} fixture;

static void setup_tuned(fixture *f, void (*tune)(s3_client_config *))
{
    memset(f, 0, sizeof *f);
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    unsetenv("AWS_SESSION_TOKEN");
    unsetenv("AWS_PROFILE");
    tt_s3rver_start(&f->srv, BUCKET, false);
    tt_proxy_start(&f->px, f->srv.port, NULL, NULL);
    s3_creds_options co = {.disable_imds = true};
    f->creds = s3_creds_provider_new(&co);
    TT_CHECK(f->creds != NULL, "credentials: %s", shoal_error_message());
    s3_client_config cfg;
    s3_client_config_defaults(&cfg);
    cfg.endpoint = f->px.endpoint;
    cfg.path_style = true;
    cfg.creds = f->creds;
    cfg.max_retries = 3;
    cfg.backoff_base_ms = 5;
    cfg.backoff_cap_ms = 40;
    if (tune)
        tune(&cfg);
    f->c = s3_client_new(&cfg);
    TT_CHECK(f->c != NULL, "s3_client_new: %s", shoal_error_message());
}

static void teardown(fixture *f)
{
    s3_client_delete(f->c);
    s3_creds_provider_delete(f->creds);
    tt_proxy_stop(&f->px);
    tt_s3rver_stop(&f->srv);
}

static const char OBJ[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
#define OBJ_LEN (sizeof OBJ - 1)

static void put_obj(fixture *f, const char *key)
{
    s3_put_args a = {.bucket = BUCKET, .key = key, .data = OBJ, .len = OBJ_LEN, .fd = -1};
    TT_OK(s3_put(f->c, &a, NULL));
}

/* The usual start: a client through the proxy, object "k" on the server, then one fault rule. */
static void setup_object_and_rule(fixture *f, void (*tune)(s3_client_config *), const char *rule)
{
    setup_tuned(f, tune);
    put_obj(f, "k");
    tt_proxy_rule(&f->px, rule);
}

static int get_obj(fixture *f, const char *key, bool ranged, uint64_t off, uint64_t len, const char *if_match,
                   char *buf, uint64_t *got)
{
    s3_get_args g = {.bucket = BUCKET, .key = key, .ranged = ranged, .offset = off, .length = len,
                     .if_match = if_match, .buf = buf, .buf_len = OBJ_LEN};
    return s3_get(f->c, &g, got, NULL);
}

static void expect_code(int rc, shoal_err want, const char *what)
{
    TT_CHECK(rc == -1, "%s: succeeded", what);
    TT_CHECK(shoal_error_code() == want, "%s: code %s, want %s: %s", what, shoal_error_name(shoal_error_code()),
             shoal_error_name(want), shoal_error_message());
}

TT_TEST(test_s3_faults_503_slowdown_is_retried_and_succeeds)
{
    fixture f;
    setup_object_and_rule(&f, NULL, "action=status&status=503&code=SlowDown&count=2&method=GET");
    char buf[OBJ_LEN];
    uint64_t got = 0;
    TT_OK(get_obj(&f, "k", false, 0, 0, NULL, buf, &got));
    TT_CHECK(got == OBJ_LEN && memcmp(buf, OBJ, got) == 0, "wrong bytes after retries");
    TT_CHECK(tt_proxy_stat(&f.px, "GET") == 3, "tt_proxy saw %ld GETs, want 3 (two 503s, then success)",
             tt_proxy_stat(&f.px, "GET"));
    s3_client_stats st;
    s3_client_stats_get(f.c, &st);
    TT_CHECK(st.retries == 2 && st.get_requests == 3, "client counted %llu retries %llu gets",
             (unsigned long long)st.retries, (unsigned long long)st.get_requests);
    teardown(&f);
}

TT_TEST(test_s3_faults_dropped_and_reset_connections_are_retried_and_succeed)
{
    fixture f;
    setup_object_and_rule(&f, NULL, "action=drop&count=1&method=GET");
    tt_proxy_rule(&f.px, "action=reset&count=1&method=GET");
    char buf[OBJ_LEN];
    uint64_t got = 0;
    TT_OK(get_obj(&f, "k", true, 10, 20, NULL, buf, &got));
    TT_CHECK(got == 20 && memcmp(buf, OBJ + 10, 20) == 0, "wrong bytes after reconnecting");
    TT_CHECK(tt_proxy_stat(&f.px, "GET") == 3, "tt_proxy saw %ld GETs, want 3", tt_proxy_stat(&f.px, "GET"));
    teardown(&f);
}

TT_TEST(test_s3_faults_403_is_not_retried)
{
    fixture f;
    setup_object_and_rule(&f, NULL, "action=status&status=403&code=AccessDenied&count=10&method=GET");
    char buf[OBJ_LEN];
    expect_code(get_obj(&f, "k", false, 0, 0, NULL, buf, NULL), SHOAL_ERR_S3_ACCESS_DENIED, "403");
    const char *m = shoal_error_message();
    TT_CHECK(strstr(m, "GetObject") && strstr(m, "bucket=" BUCKET) && strstr(m, "key=k") && strstr(m, "403") &&
                 strstr(m, "AccessDenied") && strstr(m, "injected by faultproxy") && strstr(m, "FAULT-") &&
                 strstr(m, "1 attempt"),
             "message lacks a field: %s", m);
    TT_CHECK(tt_proxy_stat(&f.px, "GET") == 1, "tt_proxy saw %ld GETs, want exactly 1", tt_proxy_stat(&f.px, "GET"));
    teardown(&f);
}

static void tune_no_retry(s3_client_config *cfg) { cfg->max_retries = 0; }

typedef struct async_out {
    s3_result r;
    char msg[1024];
    _Atomic int calls;
} async_out;

static void on_done(void *ud, s3_result *r)
{
    async_out *o = ud;
    o->r = *r;
    snprintf(o->msg, sizeof o->msg, "%s", r->message);
    o->calls++; /* last: the test thread reads the rest once it sees this */
}

TT_TEST(test_s3_faults_truncated_body_is_detected_not_returned)
{
    fixture f;
    setup_object_and_rule(&f, tune_no_retry, "action=truncate&count=1&method=GET");
    char buf[OBJ_LEN];
    uint64_t got = 12345;
    expect_code(get_obj(&f, "k", false, 0, 0, NULL, buf, &got), SHOAL_ERR_S3_TRUNCATED, "truncated body");
    TT_CHECK(got == 12345, "a failed GET reported %llu bytes as data", (unsigned long long)got);
    /* Through the async API the outcome carries no bytes either. */
    tt_proxy_rule(&f.px, "action=truncate&count=1&method=GET");
    async_out o = {0};
    s3_get_args g = {.bucket = BUCKET, .key = "k", .buf = buf, .buf_len = sizeof buf};
    TT_OK(s3_get_async(f.c, &g, on_done, &o));
    for (int i = 0; i < 1000 && o.calls == 0; i++)
        usleep(10000);
    TT_CHECK(o.calls == 1 && o.r.err == SHOAL_ERR_S3_TRUNCATED && o.r.bytes == 0, "calls %d err %s bytes %llu: %s",
             o.calls, shoal_error_name(o.r.err), (unsigned long long)o.r.bytes, o.msg);
    teardown(&f);
}

TT_TEST(test_s3_faults_short_body_with_matching_length_is_truncation)
{
    /* The tt_proxy sends half the range with a Content-Length that matches it: the framing is
     * consistent, only the Content-Range shows the body is not what was asked. */
    fixture f;
    setup_object_and_rule(&f, tune_no_retry, "action=shortlen&count=1&method=GET");
    char buf[OBJ_LEN];
    expect_code(get_obj(&f, "k", true, 4, 40, NULL, buf, NULL), SHOAL_ERR_S3_TRUNCATED, "short ranged body");
    TT_CHECK(strstr(shoal_error_message(), "Content-Range"), "message: %s", shoal_error_message());
    teardown(&f);
}

TT_TEST(test_s3_faults_truncated_body_is_retried_and_then_correct)
{
    fixture f;
    setup_object_and_rule(&f, NULL, "action=truncate&count=1&method=GET");
    char buf[OBJ_LEN];
    uint64_t got = 0;
    TT_OK(get_obj(&f, "k", false, 0, 0, NULL, buf, &got));
    TT_CHECK(got == OBJ_LEN && memcmp(buf, OBJ, OBJ_LEN) == 0, "bytes after a retried truncation differ");
    TT_CHECK(tt_proxy_stat(&f.px, "GET") == 2, "tt_proxy saw %ld GETs, want 2", tt_proxy_stat(&f.px, "GET"));
    teardown(&f);
}

TT_TEST(test_s3_faults_412_is_reported_as_changed_object)
{
    fixture f;
    setup_object_and_rule(&f, NULL, "action=status&status=412&code=PreconditionFailed&count=1&method=GET");
    char buf[OBJ_LEN];
    expect_code(get_obj(&f, "k", true, 0, 8, "\"an-old-etag\"", buf, NULL), SHOAL_ERR_S3_CHANGED, "412");
    TT_CHECK(strstr(shoal_error_message(), "PreconditionFailed"), "message: %s", shoal_error_message());
    TT_CHECK(tt_proxy_stat(&f.px, "GET") == 1, "412 was retried: %ld GETs", tt_proxy_stat(&f.px, "GET"));
    teardown(&f);
}

static void tune_multipart(s3_client_config *cfg)
{
    cfg->multipart_threshold = 5u << 20;
    cfg->part_size = 5u << 20;
}

static void upload_expect_abort(fixture *f, shoal_err want, const char *needle, const char *needle2)
{
    size_t len = (10u << 20) + 17;
    char *data = calloc(1, len);
    s3_put_args a = {.bucket = BUCKET, .key = "mp/obj", .data = data, .len = len, .fd = -1};
    expect_code(s3_upload(f->c, &a, NULL), want, "multipart upload");
    TT_CHECK(strstr(shoal_error_message(), needle) && strstr(shoal_error_message(), needle2) &&
                 strstr(shoal_error_message(), "aborted"),
             "message lacks '%s', '%s' or the abort: %s", needle, needle2, shoal_error_message());
    TT_CHECK(tt_proxy_stat(&f->px, "DELETE") == 1, "tt_proxy saw %ld DELETEs, want one AbortMultipartUpload",
             tt_proxy_stat(&f->px, "DELETE"));
    /* A definitive answer (a 4xx, or a 200 with a non-retryable <Error>) says nothing was
     * committed: no HEAD is spent on asking. */
    TT_CHECK(tt_proxy_stat(&f->px, "HEAD") == 0, "tt_proxy saw %ld HEADs after a definitive failure, want 0",
             tt_proxy_stat(&f->px, "HEAD"));
    s3_object_info info;
    expect_code(s3_head(f->c, BUCKET, "mp/obj", &info), SHOAL_ERR_S3_NO_SUCH_KEY, "HEAD after a failed upload");
    free(data);
}

TT_TEST(test_s3_faults_complete_multipart_200_with_error_body_fails_and_aborts)
{
    fixture f;
    setup_tuned(&f, tune_multipart);
    tt_proxy_rule(&f.px, "action=status200&code=InvalidPart&count=1&method=POST&match=uploadId");
    upload_expect_abort(&f, SHOAL_ERR_S3, "InvalidPart", "CompleteMultipartUpload bucket=faults key=mp/obj: HTTP 200");
    teardown(&f);
}

TT_TEST(test_s3_faults_failed_part_aborts_multipart_upload)
{
    fixture f;
    setup_tuned(&f, tune_multipart);
    tt_proxy_rule(&f.px, "action=status&status=403&code=AccessDenied&count=1&method=PUT&match=partNumber=2");
    upload_expect_abort(&f, SHOAL_ERR_S3_ACCESS_DENIED, "UploadPart", "HTTP 403");
    TT_CHECK(tt_proxy_stat(&f.px, "POST") == 1, "CompleteMultipartUpload was sent after a part failed");
    teardown(&f);
}

/* ---- Commit-safe writes: a write whose answer is lost, late or a 5xx is settled by a HEAD. ---- */

/* Random bytes: the tests compare what the server stored with what was sent. */
static uint8_t *random_bytes(size_t len)
{
    uint8_t *p = malloc(len);
    TT_CHECK(p != NULL, "malloc %zu", len);
    arc4random_buf(p, len);
    return p;
}

/* The key holds exactly len bytes equal to want (read straight from the server, not the proxy). */
static void expect_object(fixture *f, const char *key, const void *want, size_t len)
{
    s3_client_config cfg;
    s3_client_config_defaults(&cfg);
    cfg.endpoint = f->srv.endpoint;
    cfg.path_style = true;
    cfg.creds = f->creds;
    s3_client *direct = s3_client_new(&cfg);
    TT_CHECK(direct != NULL, "s3_client_new: %s", shoal_error_message());
    uint8_t *buf = malloc(len + 16);
    uint64_t got = 0;
    s3_get_args g = {.bucket = BUCKET, .key = key, .buf = buf, .buf_len = len + 16};
    TT_OK(s3_get(direct, &g, &got, NULL));
    TT_CHECK(got == len && memcmp(buf, want, len) == 0, "%s holds %llu bytes%s, want %zu bytes", key,
             (unsigned long long)got, got == len ? " that differ" : "", len);
    free(buf);
    s3_client_delete(direct);
}

static long proxy_heads(fixture *f) { return tt_proxy_stat(&f->px, "HEAD"); }

/* The proxy saw `heads` HEADs and `aborts` AbortMultipartUploads, and key holds want. */
static void expect_settled(fixture *f, long heads, long aborts, const char *key, const void *want, size_t len)
{
    TT_CHECK(proxy_heads(f) == heads, "tt_proxy saw %ld HEADs, want %ld", proxy_heads(f), heads);
    TT_CHECK(tt_proxy_stat(&f->px, "DELETE") == aborts, "tt_proxy saw %ld AbortMultipartUploads, want %ld",
             tt_proxy_stat(&f->px, "DELETE"), aborts);
    expect_object(f, key, want, len);
}

/* Completions time out after 1 s here; the proxy holds the late answer 4 s, so the client gives
 * up on it whatever the machine's load (a slow server only makes it give up earlier). */
static void tune_multipart_short_completion(s3_client_config *cfg)
{
    tune_multipart(cfg);
    cfg->complete_timeout_ms = 1000;
}

#define MP_LEN ((10u << 20) + 17)

TT_TEST(test_s3_faults_completion_answered_late_then_500_and_no_such_upload_is_confirmed_by_head)
{
    /* The proxy forwards the completion (the server commits), holds the answer past the client's
     * timeout, then answers the retries 500, 500 and 404 NoSuchUpload, as S3 does once the
     * upload is gone. Aborting then would report a committed checkpoint as failed. */
    fixture f;
    setup_tuned(&f, tune_multipart_short_completion);
    tt_proxy_rule(&f.px, "action=late&ms=4000&count=1&method=POST&match=uploadId");
    tt_proxy_rule(&f.px, "action=status&status=500&code=InternalError&count=2&method=POST&match=uploadId");
    tt_proxy_rule(&f.px, "action=status&status=404&code=NoSuchUpload&count=1&method=POST&match=uploadId");
    uint8_t *data = random_bytes(MP_LEN);
    s3_put_args a = {.bucket = BUCKET, .key = "mp/late", .data = data, .len = MP_LEN, .fd = -1};
    char etag[S3_ETAG_MAX] = "";
    TT_OK(s3_upload(f.c, &a, etag));
    TT_CHECK(etag[0] == '"', "the confirmed upload reported ETag '%s'", etag);
    TT_CHECK(tt_proxy_stat(&f.px, "faults") == 4, "tt_proxy applied %ld faults, want the late answer and 3 retries",
             tt_proxy_stat(&f.px, "faults"));
    expect_settled(&f, 1, 0, "mp/late", data, MP_LEN); /* the HEAD that confirms; no abort */
    free(data);
    teardown(&f);
}

TT_TEST(test_s3_faults_completion_lost_after_commit_is_confirmed_by_head)
{
    /* The server commits and the proxy closes the connection instead of answering; the retries
     * are answered 404 NoSuchUpload, as S3 does once the upload is completed. curl may re-send
     * on a new connection by itself, so the client may see only the 404: still not a proof. */
    fixture f;
    setup_tuned(&f, tune_multipart);
    tt_proxy_rule(&f.px, "action=lost&count=1&method=POST&match=uploadId");
    tt_proxy_rule(&f.px, "action=status&status=404&code=NoSuchUpload&count=100&method=POST&match=uploadId");
    uint8_t *data = random_bytes(MP_LEN);
    s3_put_args a = {.bucket = BUCKET, .key = "mp/lost", .data = data, .len = MP_LEN, .fd = -1};
    TT_OK(s3_upload(f.c, &a, NULL));
    expect_settled(&f, 1, 0, "mp/lost", data, MP_LEN);
    free(data);
    teardown(&f);
}

TT_TEST(test_s3_faults_completion_failing_without_commit_aborts_and_keeps_the_old_object)
{
    /* Every completion is answered 500 by the proxy, so nothing reaches the server: the HEADs
     * find the old object, the upload is aborted, and the failure is reported. */
    fixture f;
    setup_tuned(&f, tune_multipart);
    put_obj(&f, "mp/obj");
    tt_proxy_rule(&f.px, "action=status&status=500&code=InternalError&count=100&method=POST&match=uploadId");
    uint8_t *data = random_bytes(MP_LEN);
    s3_put_args a = {.bucket = BUCKET, .key = "mp/obj", .data = data, .len = MP_LEN, .fd = -1};
    expect_code(s3_upload(f.c, &a, NULL), SHOAL_ERR_S3, "upload whose completion always fails");
    const char *m = shoal_error_message();
    TT_CHECK(strstr(m, "CompleteMultipartUpload") && strstr(m, "HTTP 500") && strstr(m, "aborted") &&
                 strstr(m, "another object"),
             "message lacks the completion's failure, the abort or what the HEAD found: %s", m);
    expect_settled(&f, 2, 1, "mp/obj", OBJ, OBJ_LEN); /* a HEAD before and one after the abort */
    free(data);
    teardown(&f);
}

TT_TEST(test_s3_faults_put_lost_after_commit_is_confirmed_by_head)
{
    /* A PUT from a file range: stored, answer lost, retries answered 500. The HEAD's ETag is
     * compared with the MD5 of the range, read again from the file. */
    fixture f;
    setup_tuned(&f, NULL);
    size_t len = 300000;
    uint8_t *data = random_bytes(len);
    char *dir = tt_tmpdir("s3commit");
    char path[4096];
    snprintf(path, sizeof path, "%s/file", dir);
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    TT_CHECK(fd >= 0 && write(fd, data, len) == (ssize_t)len, "cannot write %s", path);
    tt_proxy_rule(&f.px, "action=lost&count=1&method=PUT&match=put/lost");
    tt_proxy_rule(&f.px, "action=status&status=500&code=InternalError&count=100&method=PUT&match=put/lost");
    s3_put_args a = {.bucket = BUCKET, .key = "put/lost", .fd = fd, .offset = 1000, .len = len - 1000};
    char etag[S3_ETAG_MAX] = "";
    TT_OK(s3_put(f.c, &a, etag));
    TT_CHECK(etag[0] == '"', "the confirmed PUT reported ETag '%s'", etag);
    expect_settled(&f, 1, 0, "put/lost", data + 1000, len - 1000);
    close(fd);
    tt_rmtree(dir);
    free(dir);
    free(data);
    teardown(&f);
}

TT_TEST(test_s3_faults_put_failing_every_time_keeps_the_old_object)
{
    fixture f;
    setup_tuned(&f, NULL);
    put_obj(&f, "k");
    tt_proxy_rule(&f.px, "action=status&status=500&code=InternalError&count=4&method=PUT"); /* 1 + max_retries */
    s3_put_args a = {.bucket = BUCKET, .key = "k", .data = "new bytes", .len = 9, .fd = -1};
    expect_code(s3_put(f.c, &a, NULL), SHOAL_ERR_S3, "PUT answered 500 every time");
    const char *m = shoal_error_message();
    TT_CHECK(strstr(m, "PutObject") && strstr(m, "HTTP 500") && strstr(m, "4 attempts") && strstr(m, "another object"),
             "message lacks the PUT's failure or what the HEAD found: %s", m);
    expect_settled(&f, 1, 0, "k", OBJ, OBJ_LEN);
    /* A refusal (403) is definitive: no HEAD. */
    tt_proxy_rule(&f.px, "action=status&status=403&code=AccessDenied&count=1&method=PUT");
    expect_code(s3_put(f.c, &a, NULL), SHOAL_ERR_S3_ACCESS_DENIED, "PUT refused");
    TT_CHECK(proxy_heads(&f) == 1, "a refused PUT made a HEAD");
    teardown(&f);
}

TT_TEST(test_s3_faults_copy_lost_after_commit_is_confirmed_by_head)
{
    fixture f;
    setup_tuned(&f, NULL);
    put_obj(&f, "copy/src");
    tt_proxy_rule(&f.px, "action=lost&count=1&method=PUT&match=copy/dst");
    tt_proxy_rule(&f.px, "action=status&status=500&code=InternalError&count=100&method=PUT&match=copy/dst");
    char etag[S3_ETAG_MAX] = "";
    s3_copy_args ca = {.src_bucket = BUCKET, .src_key = "copy/src", .dst_bucket = BUCKET, .dst_key = "copy/dst"};
    TT_OK(s3_copy(f.c, &ca, etag));
    TT_CHECK(etag[0] == '"', "the confirmed copy reported ETag '%s'", etag);
    expect_settled(&f, 2, 0, "copy/dst", OBJ, OBJ_LEN); /* the source's HEAD and the one that confirms */
    teardown(&f);
}

static void tune_multipart_copy(s3_client_config *cfg)
{
    cfg->copy_multipart_threshold = 1u << 20;
    cfg->copy_part_size = 5u << 20;
}

TT_TEST(test_s3_faults_multipart_copy_completion_lost_after_commit_is_confirmed_by_head)
{
    fixture f;
    setup_tuned(&f, tune_multipart_copy);
    size_t len = (6u << 20) + 3;
    uint8_t *data = random_bytes(len);
    s3_put_args p = {.bucket = BUCKET, .key = "copy/big", .data = data, .len = len, .fd = -1};
    TT_OK(s3_put(f.c, &p, NULL));
    tt_proxy_rule(&f.px, "action=lost&count=1&method=POST&match=uploadId");
    s3_copy_args ca = {.src_bucket = BUCKET, .src_key = "copy/big", .dst_bucket = BUCKET, .dst_key = "copy/big-dst"};
    TT_OK(s3_copy(f.c, &ca, NULL));
    expect_settled(&f, 2, 0, "copy/big-dst", data, len);
    free(data);
    teardown(&f);
}

/* ---- User metadata ---- */

TT_TEST(test_s3_faults_metadata_past_what_is_kept_is_counted_and_stops_a_multipart_copy_keeping_it)
{
    /* The proxy adds X-Amz-Meta-Extra<i> headers to HEAD answers: an object with more user
     * metadata than s3_object_info holds, which the client cannot write itself. */
    fixture f;
    setup_tuned(&f, tune_multipart_copy);
    size_t len = (6u << 20) + 3;
    uint8_t *data = random_bytes(len);
    static const s3_meta_kv mode = {"mode", "33188"};
    s3_put_args p = {.bucket = BUCKET, .key = "copy/big", .data = data, .len = len, .fd = -1, .meta = &mode, .n_meta = 1};
    TT_OK(s3_put(f.c, &p, NULL));
    tt_proxy_rule(&f.px, "action=addmeta&n=10&count=1&method=HEAD");
    s3_object_info info;
    TT_OK(s3_head(f.c, BUCKET, "copy/big", &info));
    TT_CHECK(info.n_meta == S3_META_MAX && info.meta_dropped == 3, "kept %u entries, dropped %u; want 8 and 3",
             info.n_meta, info.meta_dropped);
    TT_CHECK(strcmp(info.meta[0].name, "mode") == 0 && strcmp(info.meta[1].name, "extra0") == 0,
             "names not kept in order, lower-cased: '%s', '%s'", info.meta[0].name, info.meta[1].name);
    tt_proxy_rule(&f.px, "action=addmeta&n=1&len=100&count=1&method=HEAD");
    TT_OK(s3_head(f.c, BUCKET, "copy/big", &info));
    TT_CHECK(info.n_meta == 1 && info.meta_dropped == 1, "a 100-byte value: kept %u, dropped %u", info.n_meta,
             info.meta_dropped);
    /* A multipart copy re-sends the metadata it read: with some of it dropped, it refuses. */
    tt_proxy_rule(&f.px, "action=addmeta&n=8&count=1&method=HEAD");
    long puts = tt_proxy_stat(&f.px, "PUT");
    s3_copy_args keep = {.src_bucket = BUCKET, .src_key = "copy/big", .dst_bucket = BUCKET, .dst_key = "copy/dst"};
    expect_code(s3_copy(f.c, &keep, NULL), SHOAL_ERR_UNSUPPORTED, "multipart copy losing metadata");
    TT_CHECK(strstr(shoal_error_message(), "metadata"), "message: %s", shoal_error_message());
    TT_CHECK(tt_proxy_stat(&f.px, "POST") == 0 && tt_proxy_stat(&f.px, "PUT") == puts,
             "the refused copy sent %ld POSTs and %ld PUTs", tt_proxy_stat(&f.px, "POST"),
             tt_proxy_stat(&f.px, "PUT") - puts);
    free(data);
    teardown(&f);
}

TT_TEST(test_s3_faults_metadata_change_onto_same_key_is_settled_by_its_metadata)
{
    /* A copy onto the same key keeps the ETag, so only the metadata a HEAD shows tells whether a
     * copy with lost answer replaced it. */
    fixture f;
    setup_tuned(&f, NULL);
    static const s3_meta_kv m1 = {"mode", "33188"}, m2 = {"mode", "33261"}, m3 = {"mode", "33152"};
    s3_put_args p = {.bucket = BUCKET, .key = "meta/k", .data = OBJ, .len = OBJ_LEN, .fd = -1, .meta = &m1, .n_meta = 1};
    TT_OK(s3_put(f.c, &p, NULL));
    tt_proxy_rule(&f.px, "action=lost&count=1&method=PUT&match=meta/k");
    tt_proxy_rule(&f.px, "action=status&status=500&code=InternalError&count=100&method=PUT&match=meta/k");
    s3_copy_args ca = {.src_bucket = BUCKET, .src_key = "meta/k", .dst_bucket = BUCKET, .dst_key = "meta/k",
                       .replace_meta = true, .meta = &m2, .n_meta = 1};
    TT_OK(s3_copy(f.c, &ca, NULL));
    TT_CHECK(proxy_heads(&f) == 2, "tt_proxy saw %ld HEADs, want the source's and the one that confirms",
             proxy_heads(&f));
    /* Now the copy never reaches the server (the 500s go on): same bytes, but the old metadata,
     * so a failure. */
    ca.meta = &m3;
    expect_code(s3_copy(f.c, &ca, NULL), SHOAL_ERR_S3, "metadata copy that never landed");
    TT_CHECK(strstr(shoal_error_message(), "other metadata"), "message: %s", shoal_error_message());
    s3_object_info info;
    TT_OK(s3_head(f.c, BUCKET, "meta/k", &info));
    TT_CHECK(info.n_meta == 1 && strcmp(info.meta[0].value, "33261") == 0, "mode is %s, want the confirmed 33261",
             info.n_meta ? info.meta[0].value : "(none)");
    teardown(&f);
}

TT_TEST(test_s3_faults_5xx_retries_are_bounded)
{
    fixture f;
    setup_object_and_rule(&f, NULL, "action=status&status=500&code=InternalError&count=100&method=GET");
    char buf[OBJ_LEN];
    expect_code(get_obj(&f, "k", false, 0, 0, NULL, buf, NULL), SHOAL_ERR_S3, "persistent 500");
    TT_CHECK(strstr(shoal_error_message(), "4 attempts"), "message: %s", shoal_error_message());
    TT_CHECK(tt_proxy_stat(&f.px, "GET") == 4, "tt_proxy saw %ld GETs, want 1 + max_retries 3", tt_proxy_stat(&f.px, "GET"));
    tt_proxy_rule(&f.px, "action=status&status=503&code=SlowDown&count=100&method=HEAD");
    s3_object_info info;
    expect_code(s3_head(f.c, BUCKET, "k", &info), SHOAL_ERR_S3_THROTTLED, "persistent SlowDown");
    teardown(&f);
}

/* The limit is well above what a healthy request takes on a loaded 2-core machine, and the stall
 * well above the limit, so only the stalled attempt can time out. */
static void tune_timeout(s3_client_config *cfg) { cfg->request_timeout_ms = 2000; }

TT_TEST(test_s3_faults_stalled_answer_times_out_and_is_retried)
{
    fixture f;
    setup_object_and_rule(&f, tune_timeout, "action=delay&ms=6000&count=1&method=GET");
    char buf[OBJ_LEN];
    uint64_t got = 0;
    TT_OK(get_obj(&f, "k", false, 0, 0, NULL, buf, &got));
    TT_CHECK(got == OBJ_LEN && memcmp(buf, OBJ, OBJ_LEN) == 0, "bytes after a timeout differ");
    s3_client_stats st;
    s3_client_stats_get(f.c, &st);
    TT_CHECK(st.retries >= 1, "client counted %llu retries, want at least the timed-out one",
             (unsigned long long)st.retries);
    TT_CHECK(tt_proxy_stat(&f.px, "GET") == 1 + (long)st.retries, "tt_proxy saw %ld GETs for %llu retries",
             tt_proxy_stat(&f.px, "GET"), (unsigned long long)st.retries);
    teardown(&f);
}

/* A stall limit of 2 s: far above what any byte of a healthy answer waits for here, even on a
 * loaded machine, so only the stalled attempt can be abandoned. */
#define STALL_MS 2000
static void tune_stall(s3_client_config *cfg) { cfg->stall_timeout_ms = STALL_MS; }

/* A sink that keeps what it is given at its position, and counts restarts from 0. */
typedef struct stall_sink {
    uint8_t buf[256 * 1024];
    uint64_t high;
    int restarts;
} stall_sink;

static int stall_sink_put(void *ud, uint64_t pos, const void *data, size_t len)
{
    stall_sink *k = ud;
    if (pos + len > sizeof k->buf)
        return -1;
    if (pos == 0 && k->high > 0)
        k->restarts++;
    memcpy(k->buf + pos, data, len);
    if (pos + len > k->high)
        k->high = pos + len;
    return 0;
}

/* An answer that stops mid-body (the proxy sends the headers and 1000 bytes, then nothing) is
 * abandoned after the stall limit and sent again at once on another connection: no backoff, one
 * retry counted as a stall, and the sink gets the whole body again from offset 0. */
TT_TEST(test_s3_faults_stalled_body_is_abandoned_and_sent_again_at_once)
{
    fixture f;
    setup_tuned(&f, tune_stall);
    enum { LEN = 200 * 1000 };
    uint8_t *body = malloc(LEN);
    for (size_t i = 0; i < LEN; i++)
        body[i] = (uint8_t)(i * 13 + (i >> 9));
    s3_put_args pa = {.bucket = BUCKET, .key = "big", .data = body, .len = LEN, .fd = -1};
    TT_OK(s3_put(f.c, &pa, NULL));
    /* One healthy GET first: the time one request takes here, on this machine, now. */
    stall_sink *k = calloc(1, sizeof *k);
    s3_get_args g = {.bucket = BUCKET, .key = "big", .sink = stall_sink_put, .sink_ud = k};
    uint64_t t0 = shoal_clock_mono_us();
    TT_OK(s3_get(f.c, &g, NULL, NULL));
    uint64_t one_request_us = shoal_clock_mono_us() - t0;
    memset(k, 0, sizeof *k);
    tt_proxy_rule(&f.px, "action=stall&bytes=1000&ms=30000&count=1&method=GET");
    t0 = shoal_clock_mono_us();
    uint64_t got = 0;
    TT_OK(s3_get(f.c, &g, &got, NULL));
    uint64_t took_us = shoal_clock_mono_us() - t0;
    TT_CHECK(got == LEN && k->high == LEN && memcmp(k->buf, body, LEN) == 0, "the body after the stall differs");
    TT_CHECK(k->restarts == 1, "the sink saw %d restarts from offset 0, want 1", k->restarts);
    s3_client_stats st;
    s3_client_stats_get(f.c, &st);
    TT_CHECK(st.stall_retries == 1 && st.retries == 1, "client counted %llu stall retries, %llu retries; want 1 and 1",
             (unsigned long long)st.stall_retries, (unsigned long long)st.retries);
    TT_CHECK(tt_proxy_stat(&f.px, "GET") == 3, "tt_proxy saw %ld GETs, want 3 (healthy, stalled, resent)",
             tt_proxy_stat(&f.px, "GET"));
    /* The read waited for the stall limit once, then for one request (budget: ten of the healthy
     * one, at least a second), not for the proxy's 30 s nor for a backoff. */
    uint64_t budget_us = STALL_MS * 1000u + (one_request_us * 10 > 1000000 ? one_request_us * 10 : 1000000);
    tt_note("healthy GET %llu ms, stalled GET %llu ms (stall limit %d ms)", (unsigned long long)(one_request_us / 1000),
            (unsigned long long)(took_us / 1000), STALL_MS);
    TT_CHECK(took_us >= STALL_MS * 1000u && took_us <= budget_us, "the stalled GET took %llu ms, want %d..%llu",
             (unsigned long long)(took_us / 1000), STALL_MS, (unsigned long long)(budget_us / 1000));
    free(k);
    free(body);
    teardown(&f);
}

TT_TEST(test_s3_faults_virtual_hosted_request_puts_bucket_in_host_name)
{
    /* s3rver signs virtual-hosted requests over "/bucket/key", which AWS does not, so the proxy
     * observes the request and answers it itself (a 404) instead of forwarding it. The client
     * is pointed at "localhost", whose subdomains resolve to the loopback address. */
    fixture f;
    setup_tuned(&f, NULL);
    char ep[64];
    snprintf(ep, sizeof ep, "http://localhost:%d", f.px.port);
    s3_client_config cfg;
    s3_client_config_defaults(&cfg);
    cfg.endpoint = ep;
    cfg.path_style = false;
    cfg.creds = f.creds;
    s3_client *vh = s3_client_new(&cfg);
    TT_CHECK(vh != NULL, "s3_client_new: %s", shoal_error_message());
    tt_proxy_rule(&f.px, "action=status&status=404&code=NoSuchKey&count=1");
    s3_object_info info;
    expect_code(s3_head(vh, "vbucket", "dir/a b", &info), SHOAL_ERR_S3_NO_SUCH_KEY, "virtual-hosted HEAD");
    char host[128], target[256], want[128];
    tt_proxy_stat_str(&f.px, "last_host", host, sizeof host);
    tt_proxy_stat_str(&f.px, "last_target", target, sizeof target);
    snprintf(want, sizeof want, "vbucket.localhost:%d", f.px.port);
    TT_CHECK(strcmp(host, want) == 0, "Host '%s', want '%s'", host, want);
    TT_CHECK(strcmp(target, "/dir/a%20b") == 0, "request target '%s', want '/dir/a%%20b'", target);
    s3_client_delete(vh);
    teardown(&f);
}

/* A self-signed certificate for 127.0.0.1 in dir (cert.pem, key.pem), made with the openssl tool. */
static void make_cert(const char *dir)
{
    if (system("openssl version >/dev/null 2>&1") != 0)
        TT_SKIP("the openssl command is missing: it makes the test certificate");
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 -keyout %s/key.pem -out %s/cert.pem >/dev/null 2>&1",
             dir, dir);
    TT_CHECK(system(cmd) == 0, "openssl req failed: %s", cmd);
}

/* An HTTPS proxy to f's server with a fresh self-signed certificate (its path in cert); returns
 * the directory that holds it, for the caller to remove. */
static char *tls_start(fixture *f, tt_proxy *tls, char *cert, size_t cert_len)
{
    char *dir = tt_tmpdir("s3tls");
    make_cert(dir);
    char key[4096];
    snprintf(cert, cert_len, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    tt_proxy_start(tls, f->srv.port, cert, key);
    return dir;
}

/* The default client configuration for the server behind tls. */
static void tls_config(fixture *f, const tt_proxy *tls, s3_client_config *cfg)
{
    s3_client_config_defaults(cfg);
    cfg->endpoint = tls->endpoint;
    cfg->path_style = true;
    cfg->creds = f->creds;
}

TT_TEST(test_s3_faults_https_verifies_certificates_by_default_and_uses_ca_bundle)
{
    /* The tt_proxy serves HTTPS with a self-signed certificate no system store trusts. */
    fixture f;
    setup_tuned(&f, NULL);
    char cert[4096];
    tt_proxy tls;
    char *dir = tls_start(&f, &tls, cert, sizeof cert);
    put_obj(&f, "k");
    s3_client_config cfg;
    tls_config(&f, &tls, &cfg);
    /* Limits no load reaches: the one attempt must end on the certificate, not on a slow proxy. */
    cfg.connect_timeout_ms = 120000;
    cfg.stall_timeout_ms = 120000;
    unsetenv("AWS_CA_BUNDLE");
    s3_client *strict = s3_client_new(&cfg);
    TT_CHECK(strict != NULL, "s3_client_new: %s", shoal_error_message());
    char buf[OBJ_LEN];
    s3_get_args g = {.bucket = BUCKET, .key = "k", .buf = buf, .buf_len = sizeof buf};
    expect_code(s3_get(strict, &g, NULL, NULL), SHOAL_ERR_S3_TRANSPORT, "untrusted certificate");
    TT_CHECK(strstr(shoal_error_message(), "certificate") && strstr(shoal_error_message(), "1 attempt"),
             "message should name the certificate and show no retry: %s", shoal_error_message());
    s3_client_delete(strict);
    /* Trusting it through AWS_CA_BUNDLE, as AWS's tools do. */
    setenv("AWS_CA_BUNDLE", cert, 1);
    s3_client *trusting = s3_client_new(&cfg);
    unsetenv("AWS_CA_BUNDLE");
    TT_CHECK(trusting != NULL, "s3_client_new: %s", shoal_error_message());
    uint64_t got = 0;
    TT_OK(s3_get(trusting, &g, &got, NULL));
    TT_CHECK(got == OBJ_LEN && memcmp(buf, OBJ, OBJ_LEN) == 0, "wrong bytes over HTTPS");
    s3_client_delete(trusting);
    tt_proxy_stop(&tls);
    tt_rmtree(dir);
    free(dir);
    teardown(&f);
}

/* Over TLS the client's receive mark (SO_RCVLOWAT, docs/s3.md "Receive size") leaves room for
 * the part of a record OpenSSL may hold: big ranged GETs with tails of every kind arrive whole and
 * without a stall, and the small answers after them on the same connection too. The stall limit is
 * one no load reaches, so a stall here is the mark waiting for bytes that never come. */
TT_TEST(test_s3_faults_big_ranged_gets_over_https_arrive_whole_without_a_stall)
{
    fixture f;
    setup_tuned(&f, NULL);
    char cert[4096];
    tt_proxy tls;
    char *dir = tls_start(&f, &tls, cert, sizeof cert);
    enum { BIG = 3 * (256 << 10) + 1000 };
    uint8_t *data = random_bytes(BIG);
    s3_put_args pa = {.bucket = BUCKET, .key = "big", .data = data, .len = BIG, .fd = -1};
    TT_OK(s3_put(f.c, &pa, NULL));
    put_obj(&f, "k");
    s3_client_config cfg;
    tls_config(&f, &tls, &cfg);
    cfg.max_in_flight = 1;
    cfg.stall_timeout_ms = 30000;
    setenv("AWS_CA_BUNDLE", cert, 1);
    s3_client *c = s3_client_new(&cfg);
    unsetenv("AWS_CA_BUNDLE");
    TT_CHECK(c != NULL, "s3_client_new: %s", shoal_error_message());
    uint64_t ranges[][2] = {{0, (256 << 10) + 1000}, {1000, 3 * (256 << 10)}, {0, BIG}, {7, (256 << 10) + 40000}};
    uint8_t *buf = malloc(BIG);
    for (unsigned i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        uint64_t off = ranges[i][0], len = ranges[i][1], got = 0;
        s3_get_args g = {
            .bucket = BUCKET, .key = "big", .ranged = true, .offset = off, .length = len, .buf = buf, .buf_len = BIG};
        TT_OK(s3_get(c, &g, &got, NULL));
        TT_CHECK(got == len && memcmp(buf, data + off, len) == 0, "bytes %llu+%llu over HTTPS: %llu bytes%s",
                 (unsigned long long)off, (unsigned long long)len, (unsigned long long)got,
                 got == len ? " that differ" : "");
        s3_get_args small = {.bucket = BUCKET, .key = "k", .buf = buf, .buf_len = BIG};
        TT_OK(s3_get(c, &small, &got, NULL));
        TT_CHECK(got == OBJ_LEN && memcmp(buf, OBJ, OBJ_LEN) == 0, "the small GET after a big one: wrong bytes");
    }
    s3_client_stats st;
    s3_client_stats_get(c, &st);
    TT_CHECK(st.stall_retries == 0, "%llu attempts stalled over HTTPS", (unsigned long long)st.stall_retries);
    free(buf);
    free(data);
    s3_client_delete(c);
    tt_proxy_stop(&tls);
    tt_rmtree(dir);
    free(dir);
    teardown(&f);
}

TT_MAIN()
