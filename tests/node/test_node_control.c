/*
 * Tests of node_control (the JSON reader and writer, the control socket server and client),
 * node_metrics (a real HTTP scrape over loopback) and the real `shoal` binary talking to a real
 * control server run by this process. The handlers below are test handlers standing in for the
 * daemon's: they answer from fixed data, which is what lets each test know the exact answer.
 */
#include "node_config.h"
#include "node_control.h"
#include "node_metrics.h"
#include "node_stats.h"
#include "shoal_error.h"
#include "tt.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define OBJ_SIZE (5u << 20)

typedef struct fake_daemon {
    node_stats stats;
    int leave_calls;
    int handler_calls;     /* get, stat and list calls */
    char last_key[256];
    node_control_request last; /* the last get or list as the handler saw it (its strings are gone) */
    char last_token[64];       /* the last list's token ("" for none) */
    const char *file_path; /* get through sendfile when set */
    atomic_int status_calls;
    int unready_answers;   /* status says "not ready" this many times, then ready; -1: never ready */
    bool drain_fails;      /* the fake drain leaves a block behind */
} fake_daemon;

static uint8_t pattern(uint64_t i)
{
    return (uint8_t)((i * 2654435761u) >> 13);
}

static int h_status(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    fake_daemon *d = ctx;
    static const node_status_member members[] = {
        {"node-a", "127.0.0.1:7400", "rack-1", "alive", 3, 1u << 20, true, 1u << 30, true},
        {"node-b", "127.0.0.2:7400", NULL, "suspect", 7, 0, false, 1u << 30, false},
    };
    int call = atomic_fetch_add(&d->status_calls, 1);
    bool ready = d->unready_answers >= 0 && call >= d->unready_answers;
    node_status st = {
        .node_id = "node-a", .address = "127.0.0.1:7400", .zone = "rack-1", .bucket = "s3://bucket-a/p/",
        .ring_version = 12, .block_size = 4u << 20, .uptime_seconds = 65, .members = members, .n_members = 2,
        .ready = ready, .waiting_for = ready ? NULL : "S3: access denied: check the credentials and the bucket policy",
        .joined = true, .s3_checked = ready, .has_mount = true, .mounted = true,
    };
    shoal_buf b = {0};
    int rc = node_status_render_json(&st, &b) < 0 ? -1 : node_control_reply_json(reply, shoal_buf_str(&b));
    shoal_buf_destroy(&b);
    return rc;
}

static int h_stats(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    fake_daemon *d = ctx;
    shoal_buf b = {0};
    int rc = node_stats_render_json(&d->stats, &b) < 0 ? -1 : node_control_reply_json(reply, shoal_buf_str(&b));
    shoal_buf_destroy(&b);
    return rc;
}

/* Streams OBJ_SIZE pattern bytes in uneven chunks, or the file at file_path with sendfile. A key
 * "missing" fails before any byte; a key "short" stops half way. */
static int h_get(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    fake_daemon *d = ctx;
    snprintf(d->last_key, sizeof d->last_key, "%s", req->key);
    d->last = *req;
    d->handler_calls++;
    if (!strcmp(req->key, "missing"))
        return shoal_error_set(SHOAL_ERR_S3_NO_SUCH_KEY, "s3://%s/%s: no such key", req->bucket, req->key);
    if (!strcmp(req->key, "ranged")) {
        /* The pattern's bytes [offset, offset + length), clamped to OBJ_SIZE, as the daemon cuts a range. */
        uint64_t off = req->offset < OBJ_SIZE ? req->offset : OBJ_SIZE;
        uint64_t len = req->length < OBJ_SIZE - off ? req->length : OBJ_SIZE - off;
        static uint8_t part[OBJ_SIZE];
        for (uint64_t i = 0; i < len; i++)
            part[i] = pattern(off + i);
        return node_control_reply_object_begin(reply, len, OBJ_SIZE, "\"e1\"") < 0 ? -1
                                                                                   : node_control_reply_write(reply, part, len);
    }
    if (node_control_reply_bytes_begin(reply, OBJ_SIZE) < 0)
        return -1;
    if (d->file_path && !strcmp(req->key, "mixed")) {
        /* Bytes, then a passed file's middle range, then bytes: both kinds of chunk in one body. */
        static uint8_t head[1u << 20];
        for (size_t i = 0; i < sizeof head; i++)
            head[i] = pattern(i);
        int fd = open(d->file_path, O_RDONLY);
        int rc = node_control_reply_write(reply, head, sizeof head);
        if (rc == 0)
            rc = node_control_reply_sendfile(reply, fd, 1u << 20, 2u << 20);
        close(fd);
        for (uint64_t off = 3u << 20; rc == 0 && off < OBJ_SIZE; off += sizeof head) {
            for (size_t i = 0; i < sizeof head; i++)
                head[i] = pattern(off + i);
            rc = node_control_reply_write(reply, head, sizeof head);
        }
        return rc;
    }
    if (d->file_path) {
        int fd = open(d->file_path, O_RDONLY);
        int rc = node_control_reply_sendfile(reply, fd, 0, OBJ_SIZE);
        close(fd);
        return rc;
    }
    static uint8_t chunk[100003];
    uint64_t off = 0, end = !strcmp(req->key, "short") ? OBJ_SIZE / 2 : OBJ_SIZE;
    while (off < end) {
        size_t n = end - off < sizeof chunk ? (size_t)(end - off) : sizeof chunk;
        for (size_t i = 0; i < n; i++)
            chunk[i] = pattern(off + i);
        if (node_control_reply_write(reply, chunk, n) < 0)
            return -1;
        off += n;
    }
    if (!strcmp(req->key, "short"))
        return shoal_error_set(SHOAL_ERR_S3_TRANSPORT, "the fetch broke");
    return 0;
}

static int h_preload(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    node_control_progress p = {.objects_total = 4, .bytes_total = 4000};
    if (!strcmp(req->prefix, "fail/"))
        return node_control_reply_progress(reply, &p) < 0 ? -1
                                                          : shoal_error_set(SHOAL_ERR_S3_ACCESS_DENIED, "access denied");
    p.listed = true;
    for (int i = 1; i <= 4; i++) {
        p.objects_done = (uint64_t)i;
        p.bytes_done = (uint64_t)i * 1000;
        if ((i < 4 ? node_control_reply_progress(reply, &p) : node_control_reply_progress_done(reply, &p)) < 0)
            return -1;
    }
    return 0;
}

static int h_leave(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    fake_daemon *d = ctx;
    d->leave_calls++;
    return 0;
}

/* Answers a listing with the prefix and delimiter it was asked for, so a test sees both. */
static int h_list(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    fake_daemon *d = ctx;
    d->last = *req;
    d->handler_calls++;
    snprintf(d->last_token, sizeof d->last_token, "%s", req->token ? req->token : "");
    shoal_buf b = {0};
    int rc = -1;
    if (shoal_buf_append_str(&b, "{\"prefixes\":[") == 0 && node_json_append_str(&b, req->prefix) == 0 &&
        shoal_buf_append_str(&b, "],\"objects\":[{\"key\":") == 0 && node_json_append_str(&b, req->delimiter) == 0 &&
        shoal_buf_append_str(&b, ",\"size\":1}]}") == 0)
        rc = node_control_reply_json(reply, shoal_buf_str(&b));
    shoal_buf_destroy(&b);
    return rc;
}

/* Forgets any member but node-a, which the fake daemon holds alive. */
static int h_forget(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    fake_daemon *d = ctx;
    if (!strcmp(req->node, "node-a"))
        return shoal_error_set(SHOAL_ERR_INVAL, "member 'node-a' is alive: only a dead or left member can be forgotten");
    snprintf(d->last_key, sizeof d->last_key, "%s", req->node);
    return 0;
}

/* A drain of 3 blocks; with d->drain_fails the last one is not handed off and the answer ends in an
 * error after the figures. */
static int h_drain(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    fake_daemon *d = ctx;
    node_control_progress p = {.listed = true, .blocks_total = 3, .bytes_total = 3000};
    for (int i = 1; i <= 3; i++) {
        p.blocks_done = (uint64_t)i;
        p.bytes_done = (uint64_t)i * 1000;
        p.failed = d->drain_fails && i == 3;
        p.sent = (uint64_t)i - p.failed;
        p.bytes_sent = p.sent * 1000;
        if ((i < 3 || d->drain_fails ? node_control_reply_progress(reply, &p)
                                     : node_control_reply_progress_done(reply, &p)) < 0)
            return -1;
    }
    return d->drain_fails ? shoal_error_set(SHOAL_ERR_NODE_PEER, "1 of 3 owned blocks could not be handed off") : 0;
}

static int h_stat(void *ctx, const node_control_request *req, node_control_reply *reply)
{
    fake_daemon *d = ctx;
    snprintf(d->last_key, sizeof d->last_key, "%s", req->key);
    d->handler_calls++;
    shoal_buf b = {0};
    int rc = -1;
    if (shoal_buf_append_str(&b, "{\"key\":") == 0 && node_json_append_str(&b, req->key) == 0 &&
        shoal_buf_append_str(&b, ",\"size\":5}") == 0)
        rc = node_control_reply_json(reply, shoal_buf_str(&b));
    shoal_buf_destroy(&b);
    return rc;
}

static const node_control_handlers HANDLERS = {.status = h_status, .stats = h_stats, .get = h_get,
                                               .preload = h_preload, .leave = h_leave, .list = h_list,
                                               .forget = h_forget, .drain = h_drain, .stat = h_stat};

static char *g_dir;
static char g_sock[256];

static node_control_server *start(fake_daemon *d)
{
    g_dir = tt_tmpdir("ctl");
    snprintf(g_sock, sizeof g_sock, "%s/run/shoal/shoald.sock", g_dir);
    memset(d, 0, sizeof *d);
    node_stats_create(&d->stats);
    node_control_server *s = node_control_server_new(g_sock, &HANDLERS, d);
    TT_CHECK(s, "server: %s", shoal_error_message());
    return s;
}

/* ---- JSON ----------------------------------------------------------------------------------- */

TT_TEST(test_node_json_parses_nested_values_and_escapes)
{
    const char *text = " {\"a\":[1,2.5,-3,{\"b\":null}],\"s\":\"q\\\"\\\\\\n\\u00e9\\ud83d\\ude00/\",\"t\":true,"
                       "\"big\":18446744073709551615,\"f\":false} ";
    node_json *j = node_json_parse(text, strlen(text));
    TT_CHECK(j && j->type == NODE_JSON_OBJECT, "parse: %s", shoal_error_message());
    const node_json *a = node_json_get(j, "a");
    TT_CHECK(a && a->type == NODE_JSON_ARRAY && a->child && a->child->is_u64 && a->child->u64 == 1, "a[0]");
    TT_CHECK(a->child->next->num == 2.5 && !a->child->next->is_u64, "a[1]=%g", a->child->next->num);
    TT_CHECK(a->child->next->next->num == -3 && !a->child->next->next->is_u64, "a[2]");
    TT_CHECK(node_json_get(a->child->next->next->next, "b")->type == NODE_JSON_NULL, "a[3].b");
    TT_CHECK(!strcmp(node_json_get_str(j, "s", ""), "q\"\\\n\xc3\xa9\xf0\x9f\x98\x80/"), "s=%s",
             node_json_get_str(j, "s", ""));
    TT_CHECK(node_json_get_bool(j, "t", false) && !node_json_get_bool(j, "f", true), "booleans");
    TT_CHECK(node_json_get_u64(j, "big", 0) == UINT64_MAX, "big=%llu", (unsigned long long)node_json_get_u64(j, "big", 0));
    TT_CHECK(node_json_get_u64(j, "nope", 77) == 77 && node_json_get_str(j, "t", NULL) == NULL, "fallbacks");
    node_json_delete(j);
}

TT_TEST(test_node_json_rejects_malformed_input)
{
    static const char *const bad[] = {"", "{", "{\"a\"}", "{\"a\":1,}", "[1 2]", "\"\x01\"", "\"\\x\"",
                                      "\"\\ud800\"", "\"\\u0000\"", "01", "1.", "-", "tru", "{} {}", "\"abc",
                                      "{\"a\":1}x", "[1e]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        node_json *j = node_json_parse(bad[i], strlen(bad[i]));
        TT_CHECK(j == NULL, "accepted '%s'", bad[i]);
        TT_CHECK(strstr(shoal_error_message(), "malformed JSON at byte"), "'%s': message %s", bad[i],
                 shoal_error_message());
    }
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    TT_CHECK(node_json_parse(deep, sizeof deep) == NULL && strstr(shoal_error_message(), "nested too deeply"),
             "100-deep nesting: %s", shoal_error_message());
}

TT_TEST(test_node_json_writer_output_parses_back)
{
    const char *s = "tab\tquote\"back\\slash\x01\x7f end \xc3\xa9";
    shoal_buf b = {0};
    TT_OK(node_json_append_str(&b, s));
    TT_CHECK(!strchr(shoal_buf_str(&b), '\t') && !strchr(shoal_buf_str(&b), '\x01'), "raw control byte in %s",
             shoal_buf_str(&b));
    node_json *j = node_json_parse(shoal_buf_str(&b), b.len);
    TT_CHECK(j && j->type == NODE_JSON_STRING && !strcmp(j->str, s), "round trip: %s", j ? j->str : "(null)");
    node_json_delete(j);
    shoal_buf_destroy(&b);
}

/* ---- control socket ------------------------------------------------------------------------- */

TT_TEST(test_node_control_socket_mode_0600_in_0700_dir)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    struct stat st;
    TT_CHECK(lstat(g_sock, &st) == 0 && S_ISSOCK(st.st_mode), "no socket at %s", g_sock);
    TT_CHECK((st.st_mode & 0777) == 0600, "socket mode %04o", (unsigned)(st.st_mode & 0777));
    char dir[300];
    snprintf(dir, sizeof dir, "%s/run/shoal", g_dir);
    TT_CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700, "dir mode %04o", (unsigned)(st.st_mode & 0777));
    snprintf(dir, sizeof dir, "%s/run", g_dir);
    TT_CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700, "intermediate dir mode %04o",
             (unsigned)(st.st_mode & 0777));
    /* no temporary name is left behind */
    snprintf(dir, sizeof dir, "%s/run/shoal", g_dir);
    DIR *dh = opendir(dir);
    int entries = 0;
    for (struct dirent *e; (e = readdir(dh));)
        entries += e->d_name[0] != '.';
    closedir(dh);
    TT_CHECK(entries == 1, "%d entries in %s", entries, dir);
    node_control_server_delete(s);
    TT_CHECK(lstat(g_sock, &st) < 0 && errno == ENOENT, "socket left after delete");
    tt_rmtree(g_dir);
}

TT_TEST(test_node_control_socket_near_the_path_limit_is_still_0600)
{
    fake_daemon d;
    memset(&d, 0, sizeof d);
    node_stats_create(&d.stats);
    g_dir = tt_tmpdir("ctl");
    /* a directory so long that no temporary name fits beside the socket in sun_path */
    int room = 104 - (int)strlen(g_dir) - 3;
    TT_CHECK(room > 10, "temp dir %s too long for this test", g_dir);
    char dir[200];
    snprintf(dir, sizeof dir, "%s/%.*s", g_dir, room, "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
                                                      "dddddddddddddddddddddddddddddddddddd");
    snprintf(g_sock, sizeof g_sock, "%s/s", dir);
    TT_CHECK(strlen(g_sock) < 108 && strlen(dir) + 14 >= 108, "path length %zu", strlen(g_sock));
    node_control_server *s = node_control_server_new(g_sock, &HANDLERS, &d);
    TT_CHECK(s, "server: %s", shoal_error_message());
    struct stat st;
    TT_CHECK(lstat(g_sock, &st) == 0 && (st.st_mode & 0777) == 0600, "socket mode %04o",
             (unsigned)(st.st_mode & 0777));
    shoal_buf body = {0};
    TT_OK(node_control_call(g_sock, "stats", &body));
    shoal_buf_destroy(&body);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

TT_TEST(test_node_control_status_round_trip)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    shoal_buf body = {0};
    TT_OK(node_control_call(g_sock, "status", &body));
    node_json *j = node_json_parse(shoal_buf_str(&body), body.len);
    TT_CHECK(j, "body %s: %s", shoal_buf_str(&body), shoal_error_message());
    TT_CHECK(!strcmp(node_json_get_str(j, "node_id", ""), "node-a") && node_json_get_u64(j, "ring_version", 0) == 12,
             "body %s", shoal_buf_str(&body));
    const node_json *m = node_json_get(j, "members");
    TT_CHECK(m && m->child && m->child->next && !m->child->next->next, "members in %s", shoal_buf_str(&body));
    const node_json *b = m->child->next;
    TT_CHECK(!strcmp(node_json_get_str(b, "state", ""), "suspect") && node_json_get_u64(b, "incarnation", 0) == 7 &&
                 node_json_get(b, "zone")->type == NODE_JSON_NULL && !node_json_get_bool(b, "serves", true),
             "member b in %s", shoal_buf_str(&body));
    const node_json *mounted = node_json_get(j, "mounted");
    TT_CHECK(node_json_get_bool(j, "ready", false) && node_json_get(j, "waiting_for")->type == NODE_JSON_NULL &&
                 node_json_get_bool(j, "joined", false) && node_json_get_bool(j, "s3_checked", false) && mounted &&
                 mounted->type == NODE_JSON_BOOL && mounted->b,
             "readiness in %s", shoal_buf_str(&body));
    node_json_delete(j);
    shoal_buf_destroy(&body);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

TT_TEST(test_node_control_stats_round_trip)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    node_stats_add(&d.stats.s3_get_requests, 17);
    node_stats_set(&d.stats.members_alive, 3);
    shoal_buf body = {0};
    TT_OK(node_control_call(g_sock, "stats", &body));
    node_json *j = node_json_parse(shoal_buf_str(&body), body.len);
    TT_CHECK(j && node_json_get_u64(j, "s3.get_requests", 0) == 17 && node_json_get_u64(j, "members.alive", 0) == 3,
             "body %s", shoal_buf_str(&body));
    node_json_delete(j);
    shoal_buf_destroy(&body);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

/* Entries of `dir` whose names begin with `prefix`. */
static int count_prefixed(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    if (d != NULL)
        closedir(d);
    return n;
}

static void check_pattern_file(const char *path)
{
    int fd = open(path, O_RDONLY);
    TT_CHECK(fd >= 0, "open %s", path);
    static uint8_t buf[1 << 16];
    uint64_t off = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            TT_CHECK(buf[i] == pattern(off + (uint64_t)i), "byte %llu differs", (unsigned long long)(off + (uint64_t)i));
        off += (uint64_t)n;
    }
    close(fd);
    TT_CHECK(off == OBJ_SIZE, "got %llu bytes, want %u", (unsigned long long)off, OBJ_SIZE);
}

TT_TEST(test_node_control_get_streams_5mib)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    char out[300];
    snprintf(out, sizeof out, "%s/obj", g_dir);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    uint64_t size = 0;
    TT_OK(node_control_get(g_sock, "bucket-a", "dir/obj with space", fd, &size));
    close(fd);
    TT_CHECK(size == OBJ_SIZE, "size %llu", (unsigned long long)size);
    TT_CHECK(!strcmp(d.last_key, "dir/obj with space"), "key seen by the handler: %s", d.last_key);
    check_pattern_file(out);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

typedef struct pipe_reader {
    int fd;
    uint64_t bytes, bad_at;
    bool bad;
} pipe_reader;

static void *read_pipe(void *arg)
{
    pipe_reader *r = arg;
    static uint8_t buf[1 << 16];
    ssize_t n;
    while ((n = read(r->fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n && !r->bad; i++)
            if (buf[i] != pattern(r->bytes + (uint64_t)i))
                r->bad = true, r->bad_at = r->bytes + (uint64_t)i;
        r->bytes += (uint64_t)n;
    }
    return NULL;
}

/* Gets `key` into a pipe read by another thread and checks the pattern arrived whole. */
static void get_into_pipe(const char *key)
{
    int p[2];
    TT_CHECK(pipe(p) == 0, "pipe");
    pipe_reader r = {.fd = p[0]};
    pthread_t t;
    pthread_create(&t, NULL, read_pipe, &r);
    TT_OK(node_control_get(g_sock, "bucket-a", key, p[1], NULL));
    close(p[1]);
    pthread_join(t, NULL);
    close(p[0]);
    TT_CHECK(r.bytes == OBJ_SIZE && !r.bad, "get %s: pipe got %llu bytes, first bad byte at %llu", key,
             (unsigned long long)r.bytes, (unsigned long long)r.bad_at);
}

/* Writes the pattern to g_dir/src and returns its path (static storage). */
static const char *pattern_source(void)
{
    static char src[300];
    static uint8_t buf[OBJ_SIZE];
    snprintf(src, sizeof src, "%s/src", g_dir);
    int fd = open(src, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    for (uint64_t i = 0; i < OBJ_SIZE; i++)
        buf[i] = pattern(i);
    TT_CHECK(write(fd, buf, OBJ_SIZE) == OBJ_SIZE, "write src");
    close(fd);
    return src;
}

/* Gets `key` into the regular file g_dir/out and checks the pattern arrived whole. */
static void get_into_file(const char *key)
{
    char out[300];
    snprintf(out, sizeof out, "%s/out", g_dir);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    TT_OK(node_control_get(g_sock, "bucket-a", key, fd, NULL));
    close(fd);
    check_pattern_file(out);
}

/* `shoal get | consumer`: the client splices straight into the pipe. */
TT_TEST(test_node_control_get_streams_into_a_pipe)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    get_into_pipe("k");
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

TT_TEST(test_node_control_get_streams_a_file_with_sendfile)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    d.file_path = pattern_source();
    get_into_file("k");
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

/* A chunked body that mixes bytes on the socket with a passed file range arrives whole, written
 * to a regular file (copy_file_range) and into a pipe (sendfile). */
TT_TEST(test_node_control_get_mixes_passed_file_ranges_and_bytes)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    d.file_path = pattern_source();
    get_into_file("mixed");
    get_into_pipe("mixed");
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

TT_TEST(test_node_control_handler_error_reaches_client)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    int fd = open("/dev/null", O_WRONLY);
    TT_CHECK(node_control_get(g_sock, "bucket-a", "missing", fd, NULL) == -1, "missing key succeeded");
    TT_CHECK(strstr(shoal_error_message(), "s3://bucket-a/missing: no such key"), "msg=%s", shoal_error_message());
    TT_CHECK(node_control_get(g_sock, "bucket-a", "short", fd, NULL) == -1, "short stream succeeded");
    TT_CHECK(strstr(shoal_error_message(), "ended after 2621440 of 5242880 bytes"), "msg=%s", shoal_error_message());
    close(fd);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

typedef struct seen_progress {
    int lines;
    node_control_progress last;
} seen_progress;

static void on_progress(void *ud, const node_control_progress *p)
{
    seen_progress *s = ud;
    s->lines++;
    s->last = *p;
}

TT_TEST(test_node_control_preload_reports_progress_and_errors)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    seen_progress seen = {0};
    TT_OK(node_control_preload(g_sock, "bucket-a", "train/", on_progress, &seen));
    TT_CHECK(seen.lines == 4 && seen.last.objects_done == 4 && seen.last.bytes_done == 4000 && seen.last.listed,
             "lines=%d objects=%llu bytes=%llu", seen.lines, (unsigned long long)seen.last.objects_done,
             (unsigned long long)seen.last.bytes_done);
    memset(&seen, 0, sizeof seen);
    TT_CHECK(node_control_preload(g_sock, "bucket-a", "fail/", on_progress, &seen) == -1, "failed preload succeeded");
    TT_CHECK(!strcmp(shoal_error_message(), "access denied") && seen.lines == 1, "msg=%s lines=%d",
             shoal_error_message(), seen.lines);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

/* A drain's progress lines carry the blocks and bytes handed off; a drain that left blocks behind
 * ends with its figures, then the error. */
TT_TEST(test_node_control_drain_reports_progress_and_its_final_figures)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    seen_progress seen = {0};
    TT_OK(node_control_drain(g_sock, on_progress, &seen));
    TT_CHECK(seen.lines == 3 && seen.last.blocks_done == 3 && seen.last.blocks_total == 3 && seen.last.sent == 3 &&
                 seen.last.bytes_sent == 3000 && seen.last.failed == 0,
             "lines=%d done=%llu sent=%llu bytes_sent=%llu", seen.lines, (unsigned long long)seen.last.blocks_done,
             (unsigned long long)seen.last.sent, (unsigned long long)seen.last.bytes_sent);
    d.drain_fails = true;
    memset(&seen, 0, sizeof seen);
    TT_CHECK(node_control_drain(g_sock, on_progress, &seen) == -1, "a drain that left a block behind succeeded");
    TT_CHECK(strstr(shoal_error_message(), "1 of 3 owned blocks") && seen.last.failed == 1 && seen.last.sent == 2,
             "msg=%s failed=%llu", shoal_error_message(), (unsigned long long)seen.last.failed);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

/* Sends raw bytes on a fresh connection and returns the first answer line. */
static void raw_exchange(const char *request, size_t len, char *answer, size_t cap)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    TT_CHECK(strlen(g_sock) < sizeof sa.sun_path, "socket path too long: %s", g_sock);
    memcpy(sa.sun_path, g_sock, strlen(g_sock) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    TT_CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect");
    TT_CHECK(write(fd, request, len) == (ssize_t)len, "write");
    size_t got = 0;
    ssize_t n;
    while (got + 1 < cap && (n = read(fd, answer + got, cap - 1 - got)) > 0)
        got += (size_t)n;
    answer[got] = '\0';
    close(fd);
}

TT_TEST(test_node_control_rejects_malformed_requests)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    char ans[512];
    raw_exchange("not json\n", 9, ans, sizeof ans);
    TT_CHECK(strstr(ans, "{\"ok\":false,\"error\":\"malformed JSON at byte 0"), "garbage: %s", ans);
    raw_exchange("{\"cmd\":\"fly\"}\n", 14, ans, sizeof ans);
    TT_CHECK(strstr(ans, "unknown command 'fly'"), "unknown cmd: %s", ans);
    raw_exchange("{\"cmd\":\"get\",\"bucket\":\"b\"}\n", 27, ans, sizeof ans);
    TT_CHECK(strstr(ans, "get needs"), "get without key: %s", ans);
    raw_exchange("{\"cmd\":\"forget\",\"node\":\"\"}\n", 27, ans, sizeof ans);
    TT_CHECK(strstr(ans, "forget needs a non-empty \\\"node\\\"") && !d.last_key[0], "forget without a node: %s", ans);
    static char big[NODE_CONTROL_MAX_REQUEST + 10];
    memset(big, 'x', sizeof big);
    raw_exchange(big, sizeof big, ans, sizeof ans);
    TT_CHECK(strstr(ans, "request longer than"), "oversized: %s", ans);
    raw_exchange("{\"cmd\":\"leave\"}\n", 16, ans, sizeof ans);
    TT_CHECK(!strcmp(ans, "{\"ok\":true,\"body\":\"none\"}\n") && d.leave_calls == 1, "leave: %s calls=%d", ans,
             d.leave_calls);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

/* raw_exchange of a NUL-terminated request. */
static void raw_line(const char *request, char *answer, size_t cap)
{
    raw_exchange(request, strlen(request), answer, cap);
}

/* A handler's failure reaches the client with the error's name, so a client can tell a missing
 * key from other failures without reading the message. */
TT_TEST(test_node_control_error_header_names_the_error_code)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    char ans[512];
    raw_line("{\"cmd\":\"get\",\"bucket\":\"b\",\"key\":\"missing\"}\n", ans, sizeof ans);
    TT_CHECK(!strcmp(ans, "{\"ok\":false,\"error\":\"s3://b/missing: no such key\",\"code\":\"S3_NO_SUCH_KEY\"}\n"),
             "answer: %s", ans);
    raw_line("{\"cmd\":\"fly\"}\n", ans, sizeof ans);
    TT_CHECK(strstr(ans, "\"code\":\"INVAL\"}"), "unknown command: %s", ans);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

/* Reads [off, off + len) of the fake's "ranged" object through node_control_get_range into a file
 * and checks every byte and the count against the pattern clamped to OBJ_SIZE. */
static void get_range_check(fake_daemon *d, uint64_t off, uint64_t len)
{
    char out[300];
    snprintf(out, sizeof out, "%s/range", g_dir);
    int fd = open(out, O_RDWR | O_CREAT | O_TRUNC, 0600);
    uint64_t size = 7;
    TT_OK(node_control_get_range(g_sock, "bucket-a", "ranged", off, len, fd, &size));
    uint64_t want = off >= OBJ_SIZE ? 0 : len < OBJ_SIZE - off ? len : OBJ_SIZE - off;
    TT_CHECK(d->last.offset == off && d->last.length == len, "handler saw offset %llu length %llu, sent %llu %llu",
             (unsigned long long)d->last.offset, (unsigned long long)d->last.length, (unsigned long long)off,
             (unsigned long long)len);
    TT_CHECK(size == want && lseek(fd, 0, SEEK_END) == (off_t)want, "range %llu+%llu: %llu bytes, want %llu",
             (unsigned long long)off, (unsigned long long)len, (unsigned long long)size, (unsigned long long)want);
    static uint8_t buf[OBJ_SIZE];
    TT_CHECK(pread(fd, buf, want, 0) == (ssize_t)want, "read back");
    for (uint64_t i = 0; i < want; i++)
        TT_CHECK(buf[i] == pattern(off + i), "range %llu+%llu: byte %llu differs", (unsigned long long)off,
                 (unsigned long long)len, (unsigned long long)i);
    close(fd);
}

/* Offset and length reach the handler exactly (a whole-object get sends neither: 0 and "to the
 * end"), and the client takes the sized body the handler cut. */
TT_TEST(test_node_control_get_range_reaches_the_handler_and_streams_back)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    get_range_check(&d, 0, 100);
    get_range_check(&d, 1234567, 2000000);
    get_range_check(&d, OBJ_SIZE - 10, 1000);
    get_range_check(&d, OBJ_SIZE + 5, 10);
    get_range_check(&d, 77, 0);
    get_range_check(&d, 0, UINT64_MAX);
    int fd = open("/dev/null", O_WRONLY);
    TT_OK(node_control_get(g_sock, "bucket-a", "k", fd, NULL));
    close(fd);
    TT_CHECK(d.last.offset == 0 && d.last.length == UINT64_MAX && d.last.etag == NULL, "whole get: %llu %llu",
             (unsigned long long)d.last.offset, (unsigned long long)d.last.length);
    /* The header names the object's size and ETag beside the range's. */
    char ans[256];
    raw_line("{\"cmd\":\"get\",\"bucket\":\"b\",\"key\":\"ranged\",\"offset\":5242870,\"length\":3}\n",
                 ans, sizeof ans);
    TT_CHECK(!strncmp(ans, "{\"ok\":true,\"body\":\"bytes\",\"size\":3,\"object_size\":5242880,\"etag\":\"\\\"e1\\\"\"}\n",
                      74), "header: %s", ans);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

/* Every malformed get, stat or list is refused with a message naming what is wrong, before any
 * handler runs. */
TT_TEST(test_node_control_rejects_malformed_ranges_stats_and_pages)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    static const struct {
        const char *req, *want;
    } cases[] = {
        {"{\"cmd\":\"get\",\"bucket\":\"b\",\"key\":\"k\",\"offset\":-1}", "get: \\\"offset\\\" must be an integer from 0 to"},
        {"{\"cmd\":\"get\",\"bucket\":\"b\",\"key\":\"k\",\"offset\":\"5\"}", "\\\"offset\\\" must be an integer"},
        {"{\"cmd\":\"get\",\"bucket\":\"b\",\"key\":\"k\",\"offset\":1.5}", "\\\"offset\\\" must be an integer"},
        /* 2^64: refused by the JSON reader or by the range check, depending on the reader */
        {"{\"cmd\":\"get\",\"bucket\":\"b\",\"key\":\"k\",\"offset\":18446744073709551616}", "18446744073709551616|must be an integer"},
        {"{\"cmd\":\"get\",\"bucket\":\"b\",\"key\":\"k\",\"length\":true}", "\\\"length\\\" must be an integer"},
        {"{\"cmd\":\"get\",\"bucket\":\"b\",\"key\":\"k\",\"length\":null}", "\\\"length\\\" must be an integer"},
        {"{\"cmd\":\"get\",\"bucket\":\"b\",\"key\":\"k\",\"etag\":5}", "get: \\\"etag\\\" must be a non-empty string"},
        {"{\"cmd\":\"get\",\"bucket\":\"b\",\"key\":\"k\",\"etag\":\"\"}", "\\\"etag\\\" must be a non-empty string"},
        {"{\"cmd\":\"stat\",\"bucket\":\"b\"}", "stat needs \\\"bucket\\\" and a non-empty \\\"key\\\""},
        {"{\"cmd\":\"stat\",\"key\":\"k\"}", "stat needs"},
        {"{\"cmd\":\"stat\",\"bucket\":\"b\",\"key\":\"\"}", "stat needs"},
        {"{\"cmd\":\"list\",\"bucket\":\"b\",\"prefix\":\"\",\"max_keys\":0}", "list: \\\"max_keys\\\" must be an integer from 1 to 1000"},
        {"{\"cmd\":\"list\",\"bucket\":\"b\",\"prefix\":\"\",\"max_keys\":1001}", "from 1 to 1000"},
        {"{\"cmd\":\"list\",\"bucket\":\"b\",\"prefix\":\"\",\"token\":7}", "list: \\\"token\\\" must be a non-empty string"},
        {"{\"cmd\":\"list\",\"bucket\":\"b\",\"prefix\":\"\",\"token\":\"\"}", "\\\"token\\\" must be a non-empty string"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char req[256], ans[512];
        int n = snprintf(req, sizeof req, "%s\n", cases[i].req);
        raw_exchange(req, (size_t)n, ans, sizeof ans);
        /* want is one text or two joined by '|' */
        char want[128];
        snprintf(want, sizeof want, "%s", cases[i].want);
        char *alt = strchr(want, '|');
        if (alt)
            *alt++ = '\0';
        TT_CHECK(!strncmp(ans, "{\"ok\":false,\"error\":", 20) && (strstr(ans, want) || (alt && strstr(ans, alt))),
                 "request %s: answer '%s' lacks '%s'", cases[i].req, ans, cases[i].want);
    }
    TT_CHECK(d.handler_calls == 0, "a handler ran %d times for malformed requests", d.handler_calls);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

/* stat reaches its handler with the key; a paged list carries max_keys and token, and a list
 * without either is not paged. */
TT_TEST(test_node_control_stat_and_paged_list_reach_their_handlers)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    char ans[512];
    raw_line("{\"cmd\":\"stat\",\"bucket\":\"b\",\"key\":\"dir/x y\"}\n", ans, sizeof ans);
    TT_CHECK(!strcmp(ans, "{\"ok\":true,\"body\":\"json\"}\n{\"key\":\"dir/x y\",\"size\":5}\n"), "stat: %s", ans);
    TT_CHECK(!strcmp(d.last_key, "dir/x y"), "stat key %s", d.last_key);
    raw_line("{\"cmd\":\"list\",\"bucket\":\"b\",\"prefix\":\"p/\",\"max_keys\":10,\"token\":\"t 1\"}\n", ans,
                 sizeof ans);
    TT_CHECK(strstr(ans, "\"ok\":true") && d.last.paged && d.last.max_keys == 10 && !strcmp(d.last_token, "t 1"),
             "paged list: %s paged=%d max_keys=%u", ans, d.last.paged, d.last.max_keys);
    raw_line("{\"cmd\":\"list\",\"bucket\":\"b\",\"prefix\":\"p/\",\"token\":\"t\"}\n", ans, sizeof ans);
    TT_CHECK(d.last.paged && d.last.max_keys == 0 && !strcmp(d.last_token, "t"), "token alone: paged=%d max_keys=%u", d.last.paged, d.last.max_keys);
    raw_line("{\"cmd\":\"list\",\"bucket\":\"b\",\"prefix\":\"p/\"}\n", ans, sizeof ans);
    TT_CHECK(!d.last.paged && d.last.max_keys == 0 && !d.last_token[0], "unpaged list: paged=%d", d.last.paged);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

TT_TEST(test_node_control_live_socket_refused_stale_socket_replaced)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    TT_CHECK(node_control_server_new(g_sock, &HANDLERS, &d) == NULL, "second server on a live socket");
    TT_CHECK(strstr(shoal_error_message(), "in use by a running daemon"), "msg=%s", shoal_error_message());
    node_control_server_delete(s);
    /* a stale socket file: bound by a process that is gone */
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    TT_CHECK(strlen(g_sock) < sizeof sa.sun_path, "socket path too long: %s", g_sock);
    memcpy(sa.sun_path, g_sock, strlen(g_sock) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    TT_CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "bind stale: %s", strerror(errno));
    close(fd);
    s = node_control_server_new(g_sock, &HANDLERS, &d);
    TT_CHECK(s, "stale socket not replaced: %s", shoal_error_message());
    shoal_buf body = {0};
    TT_OK(node_control_call(g_sock, "stats", &body));
    shoal_buf_destroy(&body);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

/* A plain connection to the test server's socket, for requests written by hand. */
static int raw_connect(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    TT_CHECK(strlen(g_sock) < sizeof sa.sun_path, "socket path too long: %s", g_sock);
    memcpy(sa.sun_path, g_sock, strlen(g_sock) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    TT_CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect %s", g_sock);
    return fd;
}

/* list carries prefix and delimiter to the handler ("/" when the request names none) and its
 * JSON body back; a list without a prefix is refused before any handler runs. */
TT_TEST(test_node_control_list_reaches_the_handler_with_its_delimiter)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    shoal_buf body = {0};
    TT_OK(node_control_list(g_sock, "bucket-a", "dir/sub dir/", "", &body));
    TT_CHECK(!strcmp(shoal_buf_str(&body), "{\"prefixes\":[\"dir/sub dir/\"],\"objects\":[{\"key\":\"\",\"size\":1}]}"),
             "body: %s", shoal_buf_str(&body));
    shoal_buf_reset(&body);
    /* Raw requests: without "delimiter" the handler sees "/"; without "prefix" it is an error. */
    static const char *const reqs[] = {"{\"cmd\":\"list\",\"bucket\":\"b\",\"prefix\":\"p/\"}\n",
                                       "{\"cmd\":\"list\",\"bucket\":\"b\"}\n"};
    static const char *const want[] = {"\"key\":\"/\"", "list needs"};
    for (int i = 0; i < 2; i++) {
        int fd = raw_connect();
        TT_CHECK(write(fd, reqs[i], strlen(reqs[i])) == (ssize_t)strlen(reqs[i]), "write");
        char got[512] = {0};
        size_t n = 0;
        ssize_t k;
        while (n < sizeof got - 1 && (k = read(fd, got + n, sizeof got - 1 - n)) > 0)
            n += (size_t)k;
        close(fd);
        TT_CHECK(strstr(got, want[i]) != NULL, "request %d: answer '%s' lacks '%s'", i, got, want[i]);
    }
    shoal_buf_destroy(&body);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

/* A get that does not ask for descriptors (an older client) still gets a plain byte body. */
TT_TEST(test_node_control_get_without_fds_gets_a_plain_byte_body)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    d.file_path = pattern_source();
    int fd = raw_connect();
    static const char req[] = "{\"cmd\":\"get\",\"bucket\":\"b\",\"key\":\"k\"}\n";
    TT_CHECK(write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1), "write");
    static uint8_t got[OBJ_SIZE + 256];
    size_t n = 0;
    ssize_t k;
    while (n < sizeof got && (k = read(fd, got + n, sizeof got - n)) > 0)
        n += (size_t)k;
    close(fd);
    const char *nl = memchr(got, '\n', n);
    TT_CHECK(nl != NULL && strstr((const char *)got, "\"body\":\"bytes\"") != NULL, "header: %.80s", (const char *)got);
    size_t head = (size_t)((const uint8_t *)nl + 1 - got);
    TT_CHECK(n - head == OBJ_SIZE, "%zu body bytes, want %u", n - head, OBJ_SIZE);
    for (size_t i = 0; i < OBJ_SIZE; i++)
        TT_CHECK(got[head + i] == pattern(i), "byte %zu differs", i);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

TT_TEST(test_node_control_unsupported_command_is_an_error)
{
    fake_daemon d;
    g_dir = tt_tmpdir("ctl");
    snprintf(g_sock, sizeof g_sock, "%s/s.sock", g_dir);
    node_control_handlers none = {0};
    node_control_server *s = node_control_server_new(g_sock, &none, &d);
    TT_CHECK(s, "server: %s", shoal_error_message());
    shoal_buf body = {0};
    TT_CHECK(node_control_call(g_sock, "status", &body) == -1, "status without a handler succeeded");
    TT_CHECK(strstr(shoal_error_message(), "not supported by this daemon"), "msg=%s", shoal_error_message());
    shoal_buf_destroy(&body);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

/* ---- metrics -------------------------------------------------------------------------------- */

static void refresh(void *ctx, node_stats *stats)
{
    node_stats_set(&stats->cache_bytes, 12345);
}

static size_t count_fds(void)
{
    size_t n = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* GET path over a plain TCP socket; returns the whole response. */
static void http_get(uint16_t port, const char *path, shoal_buf *out)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    TT_CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect to metrics: %s", strerror(errno));
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    TT_CHECK(write(fd, req, (size_t)n) == n, "send");
    char buf[4096];
    ssize_t got;
    while ((got = read(fd, buf, sizeof buf)) > 0)
        shoal_buf_append(out, buf, (size_t)got);
    close(fd);
}

TT_TEST(test_node_metrics_serves_every_spec_name)
{
    /* The SPEC's figures under their Prometheus names (docs/operations.md lists the renames). */
    static const char *const names[] = {
        "shoal_s3_requests_total{op=\"get\"}",      "shoal_s3_requests_total{op=\"head\"}",
        "shoal_s3_requests_total{op=\"list\"}",     "shoal_s3_requests_total{op=\"put\"}",
        "shoal_s3_received_bytes_total",            "shoal_s3_sent_bytes_total",
        "shoal_block_reads_total{source=\"local\"}", "shoal_block_reads_total{source=\"peer\"}",
        "shoal_block_reads_total{source=\"s3\"}",    "shoal_peer_received_bytes_total",
        "shoal_peer_sent_bytes_total",              "shoal_cache_used_bytes",
        "shoal_cache_capacity_bytes",               "shoal_members{state=\"alive\"}",
        "shoal_members{state=\"suspect\"}",         "shoal_members{state=\"dead\"}"};
    node_stats stats;
    node_stats_create(&stats);
    node_stats_add(&stats.s3_get_requests, 9);
    size_t fds = count_fds();
    shoal_addr a;
    TT_OK(shoal_addr_parse("127.0.0.1:1", 0, &a));
    a.port = 0;
    node_metrics *m = node_metrics_new(&a, &stats, refresh, NULL);
    TT_CHECK(m, "metrics: %s", shoal_error_message());
    uint16_t port = node_metrics_port(m);
    TT_CHECK(port != 0, "no port");
    shoal_buf r = {0};
    http_get(port, "/metrics", &r);
    const char *t = shoal_buf_str(&r);
    TT_CHECK(strncmp(t, "HTTP/1.1 200", 12) == 0, "status line: %.40s", t);
    TT_CHECK(strstr(t, "text/plain; version=0.0.4"), "content type in %s", t);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char line[128];
        snprintf(line, sizeof line, "\n%s ", names[i]);
        TT_CHECK(strstr(t, line), "no sample %s in %s", names[i], t);
        snprintf(line, sizeof line, "# TYPE %.*s ", (int)strcspn(names[i], "{"), names[i]);
        TT_CHECK(strstr(t, line), "no TYPE for %s", names[i]);
    }
    TT_CHECK(strstr(t, "\nshoal_s3_requests_total{op=\"get\"} 9\n"), "counter value in %s", t);
    TT_CHECK(strstr(t, "\nshoal_cache_used_bytes 12345\n"), "refresh not called before rendering: %s", t);
    TT_CHECK(strstr(t, "\nprocess_open_fds ") && strstr(t, "\nprocess_resident_memory_bytes ") &&
                 strstr(t, "\nprocess_cpu_seconds_total ") && strstr(t, "\nprocess_start_time_seconds "),
             "no process metrics in %s", t);
    char info[128];
    snprintf(info, sizeof info, "# TYPE shoal_build_info gauge\nshoal_build_info{version=\"%s\"} 1\n", SHOAL_VERSION);
    TT_CHECK(strstr(t, info), "no build info for version %s in %s", SHOAL_VERSION, t);
    shoal_buf_reset(&r);
    http_get(port, "/other", &r);
    TT_CHECK(strncmp(shoal_buf_str(&r), "HTTP/1.1 404", 12) == 0, "other path: %.40s", shoal_buf_str(&r));
    shoal_buf_destroy(&r);
    node_metrics_delete(m);
    TT_CHECK(count_fds() == fds, "fds before %zu after %zu: the listener leaked", fds, count_fds());
}

TT_TEST(test_node_metrics_busy_port_is_a_clear_error)
{
    node_stats stats;
    node_stats_create(&stats);
    shoal_addr a;
    TT_OK(shoal_addr_parse("127.0.0.1:1", 0, &a));
    a.port = 0;
    node_metrics *m = node_metrics_new(&a, &stats, NULL, NULL);
    TT_CHECK(m, "metrics: %s", shoal_error_message());
    a.port = node_metrics_port(m);
    TT_CHECK(node_metrics_new(&a, &stats, NULL, NULL) == NULL, "second listener on a busy port");
    char want[64];
    snprintf(want, sizeof want, "cannot listen on 127.0.0.1:%u (--metrics)", a.port);
    TT_CHECK(strstr(shoal_error_message(), want), "msg=%s", shoal_error_message());
    node_metrics_delete(m);
}

/* ---- the real `shoal` binary against this process's server --------------------------------- */

/* Runs the shoal binary with args; its stdout goes to out_path (NULL: /dev/null) and its stderr
 * into err (NULL: discarded). Returns the exit status. */
static int run_cli_io(const char *out_path, char *err, size_t err_len, char *const args[])
{
    char *argv[16];
    int argc = 0, pipefd[2];
    argv[argc++] = (char *)SHOAL_CLI_PATH;
    for (; args[argc - 1] && argc < 15; argc++)
        argv[argc] = args[argc - 1];
    argv[argc] = NULL;
    TT_CHECK(pipe(pipefd) == 0, "pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_path ? out_path : "/dev/null",
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDERR_FILENO);
    posix_spawn_file_actions_addclose(&fa, pipefd[0]);
    pid_t pid;
    TT_CHECK(posix_spawn(&pid, SHOAL_CLI_PATH, &fa, NULL, argv, environ) == 0, "spawn %s", SHOAL_CLI_PATH);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    char sink[512];
    size_t got = 0;
    ssize_t n;
    for (;;) {
        char *dst = err ? err + got : sink;
        size_t room = err ? err_len - 1 - got : sizeof sink;
        if (room == 0 || (n = read(pipefd[0], dst, room)) <= 0)
            break;
        if (err)
            got += (size_t)n;
    }
    if (err)
        err[got] = '\0';
    close(pipefd[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int run_cli(const char *out_path, char *const args[])
{
    return run_cli_io(out_path, NULL, 0, args);
}

static void slurp(const char *path, shoal_buf *out)
{
    char buf[4096];
    int fd = open(path, O_RDONLY);
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        shoal_buf_append(out, buf, (size_t)n);
    close(fd);
}

TT_TEST(test_shoal_cli_talks_to_the_daemon)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    node_stats_add(&d.stats.reads_peer, 5);
    char out[300];
    shoal_buf text = {0};
    snprintf(out, sizeof out, "%s/stdout", g_dir);

    char *stats_json[] = {"stats", "--json", "--control", g_sock, NULL};
    TT_CHECK(run_cli(out, stats_json) == 0, "stats --json failed");
    slurp(out, &text);
    node_json *j = node_json_parse(shoal_buf_str(&text), text.len);
    TT_CHECK(j && node_json_get_u64(j, "reads.peer", 0) == 5, "stats --json printed %s", shoal_buf_str(&text));
    node_json_delete(j);

    char *status[] = {"--control", g_sock, "status", NULL};
    TT_CHECK(run_cli(out, status) == 0, "status failed");
    shoal_buf_reset(&text);
    slurp(out, &text);
    TT_CHECK(strstr(shoal_buf_str(&text), "ID      ADDRESS         ZONE    STATE               INCARNATION  CACHE USED  CACHE SIZE\n"),
             "status table header:\n%s", shoal_buf_str(&text));
    TT_CHECK(strstr(shoal_buf_str(&text), "node-b  127.0.0.2:7400  -       suspect (no-serve)"),
             "status table row:\n%s", shoal_buf_str(&text));
    TT_CHECK(strstr(shoal_buf_str(&text), "\nready    yes\n         joined yes, S3 checked yes, mounted yes\n"),
             "status readiness lines:\n%s", shoal_buf_str(&text));

    char *stats[] = {"stats", "--control", g_sock, NULL};
    TT_CHECK(run_cli(out, stats) == 0, "stats failed");
    shoal_buf_reset(&text);
    slurp(out, &text);
    /* an aligned table: names padded to the longest ("cache.free_space_evictions"), values right-aligned */
    char row[128];
    snprintf(row, sizeof row, "\n%-26s  %20s\n", "reads.peer", "5");
    TT_CHECK(strstr(shoal_buf_str(&text), row), "stats table lacks '%s':\n%s", row + 1, shoal_buf_str(&text));

    char obj[300];
    snprintf(obj, sizeof obj, "%s/obj", g_dir);
    char *get[] = {"get", "s3://bucket-a/some/key", "-o", obj, "--control", g_sock, NULL};
    TT_CHECK(run_cli(NULL, get) == 0, "get failed");
    check_pattern_file(obj);
    char *get_missing[] = {"get", "s3://bucket-a/missing", "-o", obj, "--control", g_sock, NULL};
    char err[1024];
    int rc = run_cli_io(NULL, err, sizeof err, get_missing);
    TT_CHECK(rc == 1 && strstr(err, "shoal: s3://bucket-a/missing: no such key\n"), "get of a missing key: exit %d, %s",
             rc, err);
    /* A failed get leaves the file it would have replaced as it was, and no temporary file. */
    check_pattern_file(obj);
    TT_CHECK(count_prefixed(g_dir, ".obj.shoal-") == 0, "a failed get left a temporary file in %s", g_dir);
    char fresh[300];
    snprintf(fresh, sizeof fresh, "%s/fresh", g_dir);
    char *get_missing_fresh[] = {"get", "s3://bucket-a/missing", "-o", fresh, "--control", g_sock, NULL};
    TT_CHECK(run_cli_io(NULL, err, sizeof err, get_missing_fresh) == 1, "get of a missing key succeeded");
    TT_CHECK(access(fresh, F_OK) != 0 && count_prefixed(g_dir, ".fresh.shoal-") == 0,
             "a failed get to a new name left %s or a temporary file behind", fresh);
    /* A device is written in place and never removed, whatever the read does: a failed get to
     * /dev/null once deleted it. A null device of the test's own stands for it (root only). */
    char null_dev[300];
    snprintf(null_dev, sizeof null_dev, "%s/null", g_dir);
    if (mknod(null_dev, S_IFCHR | 0666, makedev(1, 3)) == 0) {
        char *get_missing_dev[] = {"get", "s3://bucket-a/missing", "-o", null_dev, "--control", g_sock, NULL};
        TT_CHECK(run_cli_io(NULL, err, sizeof err, get_missing_dev) == 1, "get of a missing key succeeded");
        struct stat st;
        TT_CHECK(stat(null_dev, &st) == 0 && S_ISCHR(st.st_mode), "a failed get removed or replaced the device %s",
                 null_dev);
        char *get_dev[] = {"get", "s3://bucket-a/some/key", "-o", null_dev, "--control", g_sock, NULL};
        TT_CHECK(run_cli(NULL, get_dev) == 0, "get to a device failed");
        TT_CHECK(stat(null_dev, &st) == 0 && S_ISCHR(st.st_mode), "a get replaced the device %s", null_dev);
        unlink(null_dev);
    } else {
        tt_note("not checked: a get to a device (mknod: %s)", strerror(errno));
    }

    char *preload[] = {"preload", "s3://bucket-a/train/", "--control", g_sock, NULL};
    TT_CHECK(run_cli(out, preload) == 0, "preload failed");
    shoal_buf_reset(&text);
    slurp(out, &text);
    TT_CHECK(strstr(shoal_buf_str(&text), "done"), "preload output:\n%s", shoal_buf_str(&text));

    /* --json: stdout holds one JSON object, the summary (with the error when it failed). */
    char *preload_json[] = {"preload", "--json", "s3://bucket-a/train/", "--control", g_sock, NULL};
    TT_CHECK(run_cli(out, preload_json) == 0, "preload --json failed");
    shoal_buf_reset(&text);
    slurp(out, &text);
    j = node_json_parse(shoal_buf_str(&text), text.len);
    TT_CHECK(j && node_json_get_u64(j, "objects", 0) == 4 && node_json_get(j, "cached") && node_json_get(j, "fetched"),
             "preload --json printed %s", shoal_buf_str(&text));
    node_json_delete(j);
    char *drain_json[] = {"drain", "--json", "--control", g_sock, NULL};
    TT_CHECK(run_cli(out, drain_json) == 0, "drain --json failed");
    shoal_buf_reset(&text);
    slurp(out, &text);
    j = node_json_parse(shoal_buf_str(&text), text.len);
    TT_CHECK(j && node_json_get_u64(j, "blocks_sent", 0) == 3 && node_json_get_u64(j, "bytes_sent", 0) == 3000 &&
                 !node_json_get(j, "error"),
             "drain --json printed %s", shoal_buf_str(&text));
    node_json_delete(j);
    d.drain_fails = true;
    TT_CHECK(run_cli(out, drain_json) == 1, "a drain that left a block behind exited 0");
    shoal_buf_reset(&text);
    slurp(out, &text);
    j = node_json_parse(shoal_buf_str(&text), text.len);
    TT_CHECK(j && node_json_get_u64(j, "failed", 0) == 1 && strstr(node_json_get_str(j, "error", ""), "1 of 3"),
             "drain --json of a failed drain printed %s", shoal_buf_str(&text));
    node_json_delete(j);
    char *drain[] = {"drain", "--control", g_sock, NULL};
    d.drain_fails = false;
    TT_CHECK(run_cli(out, drain) == 0, "drain failed");
    shoal_buf_reset(&text);
    slurp(out, &text);
    TT_CHECK(strstr(shoal_buf_str(&text), "3 blocks (2.9 KiB) handed to their next owners"), "drain output:\n%s",
             shoal_buf_str(&text));

    char *leave[] = {"leave", "--control", g_sock, NULL};
    TT_CHECK(run_cli(NULL, leave) == 0 && d.leave_calls == 1, "leave: calls=%d", d.leave_calls);

    char *forget[] = {"forget", "node-b", "--control", g_sock, NULL};
    TT_CHECK(run_cli(NULL, forget) == 0 && !strcmp(d.last_key, "node-b"), "forget reached the daemon as '%s'",
             d.last_key);
    char *forget_alive[] = {"forget", "node-a", "--control", g_sock, NULL};
    rc = run_cli_io(NULL, err, sizeof err, forget_alive);
    TT_CHECK(rc == 1 && !strcmp(err, "shoal: member 'node-a' is alive: only a dead or left member can be forgotten\n"),
             "forget of an alive member: exit %d, %s", rc, err);
    shoal_buf_destroy(&text);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}
static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

TT_TEST(test_shoal_cli_bad_usage_exits_2_with_one_line)
{
    static const struct { const char *args[5]; const char *want; } cases[] = {
        {{"--bogus", NULL}, "shoal: --bogus: unknown option"},
        {{"status", "--json=1", NULL}, "shoal: --json: takes no value"},
        {{"status", "--control", NULL}, "shoal: --control: missing value"},
        {{NULL}, "shoal: missing command"},
        {{"fly", NULL}, "shoal: unknown command 'fly'"},
        {{"get", NULL}, "shoal: get: missing s3://BUCKET/KEY"},
        {{"get", "http://x/y", NULL}, "shoal: get: 'http://x/y' is not an S3 URL"},
        {{"get", "s3://bucket-a/", NULL}, "shoal: get: 's3://bucket-a/' names no object"},
        {{"preload", "s3://x", NULL}, "shoal: preload: 's3://x': 'x' is not a valid bucket name"},
        {{"leave", "extra", NULL}, "shoal: leave: unexpected argument 'extra'"},
        {{"stats", "-o", "f", NULL}, "shoal: -o: only for get and keygen"},
        {{"get", "--json", "s3://bucket-a/k", NULL}, "shoal: --json: only for status, stats, ls, preload and drain"},
        {{"drain", "extra", NULL}, "shoal: drain: unexpected argument 'extra'"},
        {{"ls", NULL}, "shoal: ls: missing s3://BUCKET/PREFIX"},
        {{"ls", "s3://bucket-a/p/", "-o", "f", NULL}, "shoal: -o: only for get and keygen"},
        {{"forget", NULL}, "shoal: forget: missing NODE"},
        {{"forget", "node-b", "node-c", NULL}, "shoal: forget: unexpected argument 'node-c'"},
        {{"forget", "node-b", "--json", NULL}, "shoal: --json: only for status, stats, ls, preload and drain"},
        {{"wait", "--timeout", "soon", NULL}, "shoal: --timeout: 'soon' is not a number of seconds"},
        {{"wait", "--timeout=-1", NULL}, "shoal: --timeout: '-1' is not a number of seconds"},
        {{"wait", "--timeout", "nan", NULL}, "shoal: --timeout: 'nan' is not a number of seconds"},
        {{"wait", "--timeout", NULL}, "shoal: --timeout: missing value"},
        {{"status", "--timeout", "5", NULL}, "shoal: --timeout: only for wait, not status"},
        {{"wait", "now", NULL}, "shoal: wait: unexpected argument 'now'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[2048];
        int rc = run_cli_io(NULL, err, sizeof err, (char *const *)cases[i].args);
        TT_CHECK(rc == 2, "case %zu (%s): exit %d, stderr: %s", i, cases[i].want, rc, err);
        TT_CHECK(count_lines(err) == 1, "case %zu: %zu lines: %s", i, count_lines(err), err);
        TT_CHECK(strstr(err, cases[i].want) == err, "case %zu: stderr '%s' does not start with '%s'", i, err,
                 cases[i].want);
    }
}

TT_TEST(test_shoal_cli_daemon_not_running_exits_1)
{
    char err[2048], sock[300];
    g_dir = tt_tmpdir("cli");
    snprintf(sock, sizeof sock, "%s/none.sock", g_dir);
    char *args[] = {"status", "--control", sock, NULL};
    int rc = run_cli_io(NULL, err, sizeof err, args);
    TT_CHECK(rc == 1, "exit %d: %s", rc, err);
    TT_CHECK(strstr(err, "cannot reach shoald at") && strstr(err, sock) && count_lines(err) == 1, "stderr: %s", err);
}

/* ---- shoal wait ------------------------------------------------------------------------------ */

/* A daemon that says "not ready" three times and then "ready": wait returns 0 on the fourth
 * status it asks for, and not before. */
TT_TEST(test_shoal_wait_returns_once_the_status_says_ready)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    d.unready_answers = 3;
    char out[300], err[2048];
    shoal_buf text = {0};
    snprintf(out, sizeof out, "%s/stdout", g_dir);
    char *args[] = {"--control", g_sock, "wait", NULL};
    int rc = run_cli_io(out, err, sizeof err, args);
    TT_CHECK(rc == 0, "wait: exit %d, stderr %s", rc, err);
    TT_CHECK(atomic_load(&d.status_calls) == 4, "wait asked for the status %d times, want 4 (3 unready, 1 ready)",
             atomic_load(&d.status_calls));
    slurp(out, &text);
    TT_CHECK(!strcmp(shoal_buf_str(&text), "shoald is ready\n"), "stdout: %s", shoal_buf_str(&text));
    shoal_buf_destroy(&text);
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

/* A node that never becomes ready: --timeout 0 asks once, a short timeout gives up; both exit 1
 * with one line saying what the node still waits for. No daemon at all: the line says so. */
TT_TEST(test_shoal_wait_timeout_exits_1_naming_what_is_missing)
{
    fake_daemon d;
    node_control_server *s = start(&d);
    d.unready_answers = -1;
    char err[2048];
    char *once[] = {"--control", g_sock, "wait", "--timeout", "0", NULL};
    int rc = run_cli_io(NULL, err, sizeof err, once);
    TT_CHECK(rc == 1 && count_lines(err) == 1 &&
                 strstr(err, "shoal: wait: not ready after 0 s: S3: access denied: check the credentials") == err,
             "wait --timeout 0: exit %d, stderr %s", rc, err);
    TT_CHECK(atomic_load(&d.status_calls) == 1, "--timeout 0 asked %d times, want once", atomic_load(&d.status_calls));
    char *brief[] = {"--control", g_sock, "wait", "--timeout", "0.3", NULL};
    rc = run_cli_io(NULL, err, sizeof err, brief);
    TT_CHECK(rc == 1 && count_lines(err) == 1 && strstr(err, "shoal: wait: not ready after 0.3 s: S3: access denied"),
             "wait --timeout 0.3: exit %d, stderr %s", rc, err);
    node_control_server_delete(s);

    char none[400];
    snprintf(none, sizeof none, "%s/none.sock", g_dir);
    char *absent[] = {"--control", none, "wait", "--timeout", "0.2", NULL};
    rc = run_cli_io(NULL, err, sizeof err, absent);
    TT_CHECK(rc == 1 && count_lines(err) == 1 && strstr(err, "shoal: wait: not ready after 0.2 s: cannot reach shoald at") &&
                 strstr(err, none),
             "wait without a daemon: exit %d, stderr %s", rc, err);
    tt_rmtree(g_dir);
}

/* `shoal wait` started before the daemon (a job that starts with the node) waits for the socket
 * to appear and then for the daemon to say ready. */
TT_TEST(test_shoal_wait_waits_for_a_daemon_that_starts_later)
{
    fake_daemon d;
    memset(&d, 0, sizeof d);
    node_stats_create(&d.stats);
    d.unready_answers = 1;
    g_dir = tt_tmpdir("ctl");
    snprintf(g_sock, sizeof g_sock, "%s/run/shoal/shoald.sock", g_dir);
    char *argv[] = {(char *)SHOAL_CLI_PATH, "--control", g_sock, "wait", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    TT_CHECK(posix_spawn(&pid, SHOAL_CLI_PATH, &fa, NULL, argv, environ) == 0, "spawn %s", SHOAL_CLI_PATH);
    posix_spawn_file_actions_destroy(&fa);
    /* Nothing can make it return before the server exists: it has nothing to say ready. */
    int st;
    TT_CHECK(waitpid(pid, &st, WNOHANG) == 0, "wait returned with no daemon (status %d)", st);
    node_control_server *s = node_control_server_new(g_sock, &HANDLERS, &d);
    TT_CHECK(s, "server: %s", shoal_error_message());
    TT_CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "wait ended with status %d", st);
    TT_CHECK(atomic_load(&d.status_calls) == 2, "the daemon answered %d statuses, want 2 (unready, ready)",
             atomic_load(&d.status_calls));
    node_control_server_delete(s);
    tt_rmtree(g_dir);
}

TT_TEST(test_shoal_cli_keygen_writes_32_bytes_0600_and_refuses_overwrite)
{
    char err[2048], key[300];
    struct stat st;
    g_dir = tt_tmpdir("cli");
    snprintf(key, sizeof key, "%s/new.key", g_dir);
    char *args[] = {"keygen", "-o", key, NULL};
    int rc = run_cli_io(NULL, err, sizeof err, args);
    TT_CHECK(rc == 0, "keygen exit %d: %s", rc, err);
    TT_CHECK(stat(key, &st) == 0 && st.st_size == 32, "size %lld", (long long)st.st_size);
    TT_CHECK((st.st_mode & 07777) == 0600, "mode %04o", (unsigned)(st.st_mode & 07777));
    uint8_t k1[32], k2[32];
    TT_OK(node_config_load_key(key, k1));
    rc = run_cli_io(NULL, err, sizeof err, args);
    TT_CHECK(rc == 1 && strstr(err, "refusing to overwrite"), "second keygen exit %d: %s", rc, err);
    TT_OK(node_config_load_key(key, k2));
    TT_CHECK(!memcmp(k1, k2, 32), "the existing key was changed");
    static const uint8_t zero[32];
    TT_CHECK(memcmp(k1, zero, 32) != 0, "key is all zeros");
}
TT_MAIN()
