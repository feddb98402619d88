/*
 * shoald end to end: real daemons (the built binary) on loopback addresses of their own, the real
 * local S3 server, reads through the control socket as `shoal get` does them. What S3 was asked is
 * counted at the server, so "each block fetched once" is measured where it matters.
 *
 * Sizes are scaled down from the issue (1 MiB blocks instead of 4 MiB, objects of a few MiB
 * instead of 20-64 MiB) so each case runs in seconds; what they prove does not depend on size.
 */
#include "test_daemon_harness.h"

#include "faultproxy.h"

#include "node_control.h"
#include "node_peer.h"
#include "shoal_error.h"
#include "tt.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zmq.h>
#include <xxhash.h>

#include "dht.h"

#define MIB (1024u * 1024u)

/* The dataset of the three-node cases: 36 small objects (one block each) and 4 of 3 MiB (3
 * blocks each): 48 unique blocks. */
#define DS_OBJECTS 40
#define DS_SMALL 100000u
#define DS_LARGE (3u * MIB)

static size_t ds_size(int k) { return k % 10 == 9 ? DS_LARGE : DS_SMALL + (size_t)k * 97u; }
static void ds_key(int k, char *out, size_t n) { snprintf(out, n, "data/part-%02d.bin", k); }
static long ds_blocks(void)
{
    long n = 0;
    for (int k = 0; k < DS_OBJECTS; k++)
        n += (long)((ds_size(k) + MIB - 1) / MIB);
    return n;
}

static void ds_upload(td_cluster *c)
{
    char key[64];
    for (int k = 0; k < DS_OBJECTS; k++) {
        ds_key(k, key, sizeof key);
        td_put(c, key, ds_size(k), (uint32_t)k);
    }
}

static void ds_read_all(td_cluster *c, int node)
{
    char key[64];
    for (int k = 0; k < DS_OBJECTS; k++) {
        ds_key(k, key, sizeof key);
        td_get_check(c, node, key, ds_size(k), (uint32_t)k);
    }
}

/* Flags for tests that count S3 requests with every node up: a peer timeout no load can reach, so
 * a busy machine makes a reader wait for its owner instead of going to S3 itself, and the count
 * is the same on any machine. Failover tests keep the default and kill or stop a node instead. */
static const char *const PATIENT[] = {"--peer-timeout", "120000", NULL};

/* Starts n nodes of 1 MiB blocks with the dataset uploaded, waits for the full membership and
 * zeroes the server's counters. */
static td_cluster *three_nodes(int n, const char *const *extra)
{
    td_cluster *c = td_cluster_new(n, "1M");
    ds_upload(c);
    for (int i = 0; i < n; i++)
        td_node_start(c, i, extra);
    td_wait_cluster(c, 10000);
    tt_s3rver_stats_reset(&c->s3);
    return c;
}

/* Reads the dataset on node `node` from a thread of its own. */
typedef struct reader {
    td_cluster *c;
    int node;
} reader;

static void *read_all_main(void *arg)
{
    reader *r = arg;
    ds_read_all(r->c, r->node);
    return NULL;
}

TT_TEST(test_daemon_three_nodes_fetch_each_block_once)
{
        td_cluster *c = three_nodes(3, PATIENT);
    pthread_t t[3];
    reader r[3];
    for (int i = 0; i < 3; i++) {
        r[i] = (reader){c, i};
        TT_CHECK(pthread_create(&t[i], NULL, read_all_main, &r[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    long gets = tt_s3rver_stat(&c->s3, "gets"), unique = ds_blocks();
    tt_note("unique blocks %ld, S3 GETs %ld", unique, gets);
    TT_CHECK(gets * 100 <= unique * 102, "S3 saw %ld GETs for %ld unique blocks (more than 1.02 per block)", gets,
             unique);
    for (int i = 0; i < 3; i++) {
        uint64_t peer = td_stat(c, i, "reads.peer");
        tt_note("%s: reads.local %llu reads.peer %llu reads.s3 %llu", c->nodes[i].id,
                (unsigned long long)td_stat(c, i, "reads.local"), (unsigned long long)peer,
                (unsigned long long)td_stat(c, i, "reads.s3"));
        TT_CHECK(peer > 0, "%s served no read from a peer", c->nodes[i].id);
    }
    td_pass(c);
}

/* 8 readers of one object on each node at once. */
typedef struct herd_reader {
    td_cluster *c;
    int node;
    size_t size;
} herd_reader;

static void *herd_main(void *arg)
{
    herd_reader *h = arg;
    td_get_check(h->c, h->node, "herd/big.bin", h->size, 4242);
    return NULL;
}

TT_TEST(test_daemon_thundering_herd_fetches_each_block_once)
{
        td_cluster *c = td_cluster_new(3, "1M");
    const size_t size = 16 * MIB;
    td_put(c, "herd/big.bin", size, 4242);
    for (int i = 0; i < 3; i++)
        td_node_start(c, i, PATIENT);
    td_wait_cluster(c, 10000);
    tt_s3rver_stats_reset(&c->s3);
    pthread_t t[24];
    herd_reader h[24];
    for (int i = 0; i < 24; i++) {
        h[i] = (herd_reader){c, i % 3, size};
        TT_CHECK(pthread_create(&t[i], NULL, herd_main, &h[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < 24; i++)
        pthread_join(t[i], NULL);
    long gets = tt_s3rver_stat(&c->s3, "gets");
    uint64_t coalesced = 0;
    for (int i = 0; i < 3; i++)
        coalesced += td_stat(c, i, "reads.coalesced");
    tt_note("16 blocks, 24 readers: S3 GETs %ld, coalesced reads %llu", gets, (unsigned long long)coalesced);
    TT_CHECK(gets == 16, "S3 saw %ld GETs for 16 blocks read by 24 readers at once", gets);
    TT_CHECK(coalesced > 0, "no reader waited on another's fetch");
    td_pass(c);
}

TT_TEST(test_daemon_owner_killed_during_reads_costs_no_error)
{
        td_cluster *c = three_nodes(3, NULL);
    pthread_t t[2];
    reader r[2] = {{c, 0}, {c, 1}};
    for (int i = 0; i < 2; i++)
        TT_CHECK(pthread_create(&t[i], NULL, read_all_main, &r[i]) == 0, "pthread_create");
    td_sleep_ms(150);
    td_node_signal(c, 2, SIGKILL);
    td_node_wait(c, 2, 5000);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    /* And once more, now that the owner is gone for good. */
    ds_read_all(c, 0);
    ds_read_all(c, 1);
    td_pass(c);
}

TT_TEST(test_daemon_stalled_owner_costs_a_timeout_then_rejoins)
{
        td_cluster *c = three_nodes(3, NULL);
    td_node_signal(c, 2, SIGSTOP);
    uint64_t worst = 0;
    char key[64];
    for (int k = 0; k < DS_OBJECTS; k++) {
        ds_key(k, key, sizeof key);
        uint64_t t0 = td_now_ms();
        td_get_check(c, 0, key, ds_size(k), (uint32_t)k);
        uint64_t took = td_now_ms() - t0;
        worst = took > worst ? took : worst;
    }
    tt_note("slowest read with a stalled owner: %llu ms", (unsigned long long)worst);
    /* The peer timeout is 2 s; one fallback to S3 of a 3 MiB object on loopback is far below 3 s. */
    TT_CHECK(worst < 5000, "a read took %llu ms with a stalled owner (timeout 2000 ms + fallback)",
             (unsigned long long)worst);
    TT_CHECK(td_stat(c, 0, "peer.timeouts") > 0, "no peer request timed out: was the stalled node asked?");
    td_node_signal(c, 2, SIGCONT);
    TT_CHECK(td_wait_alive(c, 0, 3, 20000), "node2 is not alive again in node0's view 20 s after SIGCONT");
    td_pass(c);
}

TT_TEST(test_daemon_restarted_node_rereads_without_s3)
{
        td_cluster *c = three_nodes(3, NULL);
    for (int i = 0; i < 3; i++)
        ds_read_all(c, i);
    td_node_signal(c, 1, SIGTERM);
    int st = td_node_wait(c, 1, 10000);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: status %d", st);
    td_node_start(c, 1, NULL);
    td_wait_cluster(c, 15000);
    tt_s3rver_stats_reset(&c->s3);
    ds_read_all(c, 1);
    long gets = tt_s3rver_stat(&c->s3, "gets");
    TT_CHECK(gets == 0, "re-reading on the restarted node cost %ld S3 GETs", gets);
    td_pass(c);
}

TT_TEST(test_daemon_sigterm_exits_zero_and_peers_see_left)
{
        td_cluster *c = three_nodes(3, NULL);
    td_node_signal(c, 2, SIGTERM);
    int st = td_node_wait(c, 2, 10000);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "shoald after SIGTERM: wait status %d, expected exit 0", st);
    char state[32];
    uint64_t deadline = td_now_ms() + 5000;
    do {
        td_member_state(c, 0, "node2", state, sizeof state);
        if (strcmp(state, "left") == 0)
            break;
        td_sleep_ms(50);
    } while (td_now_ms() < deadline);
    TT_CHECK(strcmp(state, "left") == 0, "node0 sees node2 as '%s', expected 'left'", state);
    ds_read_all(c, 0);
    td_pass(c);
}

TT_TEST(test_daemon_cache_smaller_than_dataset_stays_under_cap)
{
        const char *const extra[] = {"--cache-size", "4M", NULL};
    td_cluster *c = three_nodes(2, extra);
    char key[64];
    for (int round = 0; round < 2; round++)
        for (int k = 0; k < DS_OBJECTS; k++) {
            ds_key(k, key, sizeof key);
            td_get_check(c, k % 2, key, ds_size(k), (uint32_t)k);
            for (int i = 0; i < 2; i++) {
                uint64_t used = td_stat(c, i, "cache.bytes"), cap = td_stat(c, i, "cache.capacity");
                TT_CHECK(cap == 4 * MIB, "%s: capacity %llu", c->nodes[i].id, (unsigned long long)cap);
                TT_CHECK(used <= cap, "%s holds %llu bytes over its cap %llu", c->nodes[i].id,
                         (unsigned long long)used, (unsigned long long)cap);
            }
        }
    /* The files on disk, headers included, are what the cap bounds. */
    for (int i = 0; i < 2; i++) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "test $(find '%s/cache/blocks' -type f -printf '%%s\\n' | awk '{s+=$1} END {print s+0}') -le %u",
                 c->nodes[i].dir, 4 * MIB);
        TT_CHECK(system(cmd) == 0, "%s: block files exceed 4 MiB on disk", c->nodes[i].id);
    }
    TT_CHECK(td_stat(c, 0, "cache.evictions") + td_stat(c, 1, "cache.evictions") > 0, "nothing was evicted");
    td_pass(c);
}

TT_TEST(test_daemon_preload_makes_cold_reads_free_of_s3)
{
        td_cluster *c = three_nodes(3, PATIENT);
    TT_OK(node_control_preload(c->nodes[0].control, TD_BUCKET, "data/", NULL, NULL));
    long gets = tt_s3rver_stat(&c->s3, "gets"), unique = ds_blocks();
    tt_note("preload: %ld S3 GETs for %ld blocks", gets, unique);
    TT_CHECK(gets == unique, "preload made %ld S3 GETs for %ld blocks", gets, unique);
    tt_s3rver_stats_reset(&c->s3);
    for (int i = 0; i < 3; i++)
        ds_read_all(c, i);
    gets = tt_s3rver_stat(&c->s3, "gets");
    TT_CHECK(gets == 0, "cold reads after preload cost %ld S3 GETs", gets);
    td_pass(c);
}

TT_TEST(test_daemon_duplicate_node_id_is_refused)
{
        td_cluster *c = td_cluster_new(2, "1M");
    td_node_start(c, 0, NULL);
    snprintf(c->nodes[1].id, sizeof c->nodes[1].id, "node0");
    td_node_start(c, 1, NULL);
    int st = td_node_wait(c, 1, 15000);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "a second node0: wait status %d, expected exit 1", st);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "grep -q 'refused' '%s'", c->nodes[1].log);
    TT_CHECK(system(cmd) == 0, "the refused node's log says nothing of the refusal");
    TT_CHECK(td_wait_alive(c, 0, 1, 1000), "node0 is not alive and alone");
    td_pass(c);
}

TT_TEST(test_daemon_bad_flag_exits_2_with_one_line)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "'%s' --cache-size lots 2>&1 >/dev/null | wc -l | grep -qx 1", td_shoald());
    TT_CHECK(system(cmd) == 0, "shoald --cache-size lots does not print exactly one line");
    snprintf(cmd, sizeof cmd, "'%s' --no-such-flag >/dev/null 2>&1", td_shoald());
    int st = system(cmd);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "shoald --no-such-flag: status %d, expected exit 2", st);
}

/* Without --endpoint the daemon takes AWS_ENDPOINT_URL_S3 (then AWS_ENDPOINT_URL), as the AWS
 * SDKs do; a bad value stops it with a message naming the variable. */
TT_TEST(test_daemon_endpoint_comes_from_aws_endpoint_url_s3)
{
    td_cluster *c = td_cluster_new(1, "1M");
    c->endpoint_in_env = true;
    td_put(c, "env/obj", 3000, 5);
    td_node_start(c, 0, NULL);
    td_get_check(c, 0, "env/obj", 3000, 5);
    td_node_signal(c, 0, SIGTERM);
    td_node_wait(c, 0, 30000);
    char err[400], cmd[2048];
    snprintf(err, sizeof err, "%s/bad-endpoint.err", c->dir);
    snprintf(cmd, sizeof cmd,
             "AWS_ENDPOINT_URL_S3=ftp://nowhere '%s' --bucket s3://%s --cluster-key '%s' --cache-dir '%s' "
             "--control '%s' --metrics off --bind 127.0.0.1:7399 >/dev/null 2>'%s'",
             td_shoald(), TD_BUCKET, c->key, c->nodes[0].dir, c->nodes[0].control, err);
    int st = system(cmd);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "a bad AWS_ENDPOINT_URL_S3: status %d, expected exit 1", st);
    snprintf(cmd, sizeof cmd, "grep -q AWS_ENDPOINT_URL_S3 '%s'", err);
    TT_CHECK(system(cmd) == 0, "the error does not name AWS_ENDPOINT_URL_S3");
}

/* ---- readiness ------------------------------------------------------------------------------------ */

/* GET http://<ip>:9464<path>: the status code, and the body's first line into body. */
static int probe_http(const char *ip, const char *path, char *body, size_t cap)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "curl -s -m 5 -w '\\n%%{http_code}' http://%s:9464%s", ip, path);
    FILE *p = popen(cmd, "r");
    TT_CHECK(p != NULL, "popen curl");
    char all[2048] = "";
    size_t n = fread(all, 1, sizeof all - 1, p);
    all[n] = '\0';
    pclose(p);
    char *nl = strrchr(all, '\n');
    int code = nl ? atoi(nl + 1) : 0;
    if (nl)
        *nl = '\0';
    snprintf(body, cap, "%s", all);
    return code;
}

/* Waits until /readyz answers `want` with a body containing `text`, up to budget_ms (the
 * daemon's S3 check retries with a backoff that reaches 30 s; budgets allow several rounds). */
static void wait_readyz(td_cluster *c, int i, int want, const char *text, int budget_ms)
{
    char body[2048] = "";
    int code = 0;
    for (uint64_t until = td_now_ms() + (uint64_t)budget_ms; td_now_ms() < until; td_sleep_ms(200)) {
        code = probe_http(c->nodes[i].ip, "/readyz", body, sizeof body);
        if (code == want && strstr(body, text))
            return;
    }
    TT_CHECK(false, "/readyz answered %d '%s', want %d with '%s'", code, body, want, text);
}

static void write_profile(const char *path, const char *secret)
{
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    TT_CHECK(f && fprintf(f, "[default]\naws_access_key_id = S3RVER\naws_secret_access_key = %s\n", secret) > 0 &&
                 fclose(f) == 0,
             "write %s", tmp);
    TT_CHECK(rename(tmp, path) == 0, "rename %s: %s", tmp, strerror(errno));
}

/* One node slot whose daemon will read its credentials from a profile file (its path into
 * profile) that holds a secret S3 refuses; write_profile(profile, "S3RVER") rotates it. */
static td_cluster *cluster_with_a_wrong_secret(char *profile, size_t cap)
{
    td_cluster *c = td_cluster_new(1, "1M");
    snprintf(profile, cap, "%s/credentials", c->dir);
    write_profile(profile, "WRONG-SECRET");
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    setenv("AWS_SHARED_CREDENTIALS_FILE", profile, 1);
    return c;
}

/* A daemon whose credentials S3 refuses starts, says why in one log line and on /readyz (503),
 * and becomes ready without a restart once the profile file holds the right secret; /healthz is
 * 200 throughout. */
TT_TEST(test_daemon_readyz_reports_denied_credentials_and_recovers_when_they_rotate)
{
    char profile[600];
    td_cluster *c = cluster_with_a_wrong_secret(profile, sizeof profile);
    char metrics[64];
    snprintf(metrics, sizeof metrics, "%s:9464", c->nodes[0].ip);
    const char *flags[] = {"--metrics", metrics, NULL};
    td_node_start(c, 0, flags);
    wait_readyz(c, 0, 503, "access denied: check the credentials and the bucket policy", 60000);
    char body[256];
    TT_CHECK(probe_http(c->nodes[0].ip, "/healthz", body, sizeof body) == 200, "/healthz is not 200");
    /* A read meanwhile fails with an error a person can act on, logged once however often. */
    size_t len = 0;
    for (int i = 0; i < 3; i++)
        TT_CHECK(td_get(c, 0, "data/none.bin", &len) == NULL, "a read succeeded with refused credentials");
    TT_CHECK(strstr(shoal_error_message(), "access denied: check the credentials and the bucket policy"),
             "the read's error says: %s", shoal_error_message());
    TT_CHECK(td_log_count(c, 0, "event=request_failed.*HeadObject") == 1,
             "%d request_failed lines for 3 refused reads, want 1", td_log_count(c, 0, "event=request_failed.*HeadObject"));
    write_profile(profile, "S3RVER");
    wait_readyz(c, 0, 200, "ready", 90000);
    TT_CHECK(td_log_count(c, 0, "event=s3_check_failed") == 1, "%d s3_check_failed lines, want 1 (one per reason)",
             td_log_count(c, 0, "event=s3_check_failed"));
    TT_CHECK(td_log_count(c, 0, "event=s3_checked") == 1, "no s3_checked line after the rotation");
    td_node_signal(c, 0, SIGTERM);
    td_node_wait(c, 0, 30000);
}

/* node i's `shoal status --json`, parsed (free it); NULL when the CLI failed. */
static node_json *status_json(td_cluster *c, int i)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "'%s' --control '%s' status --json", td_shoal(), c->nodes[i].control);
    FILE *p = popen(cmd, "r");
    TT_CHECK(p != NULL, "popen %s", cmd);
    char all[16384];
    size_t n = fread(all, 1, sizeof all - 1, p);
    all[n] = '\0';
    int st = pclose(p);
    return st == 0 ? node_json_parse(all, n) : NULL;
}

/* `shoal wait` started before the daemon returns 0 only once the daemon is ready: not while S3
 * refuses its credentials (status says so, field by field, and `wait --timeout 0` exits 1 with
 * the reason), and then without a restart once the profile file holds the right secret. */
TT_TEST(test_daemon_shoal_wait_and_status_follow_readiness_through_a_credential_rotation)
{
    char profile[600];
    td_cluster *c = cluster_with_a_wrong_secret(profile, sizeof profile);
    pid_t waiter = fork();
    TT_CHECK(waiter >= 0, "fork");
    if (waiter == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a failed test */
        execl(td_shoal(), td_shoal(), "--control", c->nodes[0].control, "wait", (char *)NULL);
        _exit(127);
    }
    td_node_start(c, 0, NULL);
    node_json *j = NULL;
    for (uint64_t until = td_now_ms() + 60000; td_now_ms() < until; td_sleep_ms(200)) {
        node_json_delete(j);
        j = status_json(c, 0);
        if (j && strstr(node_json_get_str(j, "waiting_for", ""), "access denied"))
            break;
    }
    TT_CHECK(j && strstr(node_json_get_str(j, "waiting_for", ""), "S3: access denied: check the credentials"),
             "status never said why S3 is refused: %s", j ? node_json_get_str(j, "waiting_for", "(null)") : "no status");
    const node_json *mounted = node_json_get(j, "mounted");
    TT_CHECK(!node_json_get_bool(j, "ready", true) && node_json_get_bool(j, "joined", false) &&
                 !node_json_get_bool(j, "s3_checked", true) && mounted && mounted->type == NODE_JSON_NULL,
             "status fields: ready %d joined %d s3_checked %d mounted type %d", node_json_get_bool(j, "ready", true),
             node_json_get_bool(j, "joined", false), node_json_get_bool(j, "s3_checked", true),
             mounted ? (int)mounted->type : -1);
    node_json_delete(j);
    char err[600], cmd[1400];
    snprintf(err, sizeof err, "%s/wait.err", c->dir);
    snprintf(cmd, sizeof cmd, "'%s' --control '%s' wait --timeout 0 2>'%s'", td_shoal(), c->nodes[0].control, err);
    int st = system(cmd);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "wait --timeout 0 on an unready node: status %d", st);
    snprintf(cmd, sizeof cmd, "grep -q 'not ready after 0 s: S3: access denied' '%s'", err);
    TT_CHECK(system(cmd) == 0, "wait --timeout 0 does not say why (see %s)", err);
    /* The node is not ready, so the waiter cannot have returned, however slow the machine. */
    TT_CHECK(waitpid(waiter, &st, WNOHANG) == 0, "shoal wait returned (status %d) while S3 refuses the node", st);
    write_profile(profile, "S3RVER");
    TT_CHECK(waitpid(waiter, &st, 0) == waiter && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "shoal wait ended with status %d after the rotation", st);
    j = status_json(c, 0);
    TT_CHECK(j && node_json_get_bool(j, "ready", false) && node_json_get_bool(j, "s3_checked", false) &&
                 node_json_get(j, "waiting_for")->type == NODE_JSON_NULL,
             "status after wait returned: %s", j ? "not ready" : "no status");
    node_json_delete(j);
    td_node_signal(c, 0, SIGTERM);
    td_node_wait(c, 0, 30000);
}

/* A bucket that does not exist and an endpoint nobody answers: each one log line naming it and a
 * 503 from /readyz, while the daemon keeps running. */
TT_TEST(test_daemon_readyz_reports_a_missing_bucket_and_a_dead_endpoint)
{
    td_cluster *c = td_cluster_new(2, "1M");
    char m0[64], m1[64];
    snprintf(m0, sizeof m0, "%s:9464", c->nodes[0].ip);
    snprintf(m1, sizeof m1, "%s:9464", c->nodes[1].ip);
    const char *missing[] = {"--metrics", m0, "--bucket", "s3://no-such-bucket-here", NULL};
    td_node_start(c, 0, missing);
    c->endpoint = "http://127.0.0.1:9"; /* discard port: nothing answers HTTP there */
    const char *dead[] = {"--metrics", m1, NULL};
    td_node_start(c, 1, dead);
    wait_readyz(c, 0, 503, "the bucket does not exist", 60000);
    wait_readyz(c, 1, 503, "no answer from the S3 endpoint", 90000);
    TT_CHECK(td_log_count(c, 0, "the bucket does not exist") == 1, "the missing bucket is not logged once");
    TT_CHECK(td_log_count(c, 1, "no answer from the S3 endpoint") == 1, "the dead endpoint is not logged once");
}

TT_TEST(test_daemon_no_serve_node_reads_through_peers_and_owns_nothing)
{
        td_cluster *c = td_cluster_new(3, "1M");
    ds_upload(c);
    td_node_start(c, 0, NULL);
    td_node_start(c, 1, NULL);
    const char *const consumer[] = {"--no-serve", NULL};
    td_node_start(c, 2, consumer);
    td_wait_cluster(c, 10000);
    tt_s3rver_stats_reset(&c->s3);
    ds_read_all(c, 2);
    ds_read_all(c, 0);
    TT_CHECK(td_stat(c, 2, "reads.s3") == 0, "the consumer node read %llu blocks from S3 itself",
             (unsigned long long)td_stat(c, 2, "reads.s3"));
    TT_CHECK(td_stat(c, 2, "reads.peer") > 0, "the consumer node read nothing from peers");
    long gets = tt_s3rver_stat(&c->s3, "gets");
    TT_CHECK(gets == ds_blocks(), "%ld S3 GETs for %ld blocks", gets, ds_blocks());
    td_pass(c);
}

/* Flips the byte at offset `seek` of every block file node i stores, as disk rot would. */
static void rot_blocks(td_cluster *c, int i, int seek)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd,
             "find '%s/cache/blocks' -type f | while read f; do printf '\\377' | dd of=\"$f\" bs=1 seek=%d "
             "conv=notrunc status=none; done",
             c->nodes[i].dir, seek);
    TT_CHECK(system(cmd) == 0, "corrupting the block files of %s failed", c->nodes[i].id);
}

TT_TEST(test_daemon_corrupt_block_is_dropped_and_fetched_again)
{
    td_cluster *c = three_nodes(1, NULL);
    ds_read_all(c, 0);
    rot_blocks(c, 0, 100);
    tt_s3rver_stats_reset(&c->s3);
    ds_read_all(c, 0);
    uint64_t corrupt = td_stat(c, 0, "cache.corrupt_blocks");
    long gets = tt_s3rver_stat(&c->s3, "gets");
    TT_CHECK(corrupt > 0, "no corrupt block was counted");
    TT_CHECK(gets > 0, "the corrupt blocks were not fetched again (%ld S3 GETs)", gets);
    td_pass(c);
}

/* The whole file at path (free it), its length in *len; NULL when it cannot be read. */
static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    shoal_buf b = {0};
    char chunk[65536];
    size_t n;
    if (f == NULL)
        return NULL;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        shoal_buf_append(&b, chunk, n);
    fclose(f);
    return shoal_buf_steal(&b, len);
}

/* `shoal get -o FILE` of blocks held on the node: the daemon passes their verified files to the
 * client, which copies them itself. A corrupt block must never reach the output that way: it is
 * dropped, counted and fetched again, and the file still holds the uploaded bytes. */
TT_TEST(test_daemon_get_passes_verified_block_files_and_refetches_corrupt_ones)
{
    td_cluster *c = td_cluster_new(1, "1M");
    const size_t size = 3 * MIB + 12345;
    td_put(c, "fd/obj.bin", size, 77);
    td_node_start(c, 0, NULL);
    td_wait_cluster(c, 10000);
    char out[400], cmd[1200];
    snprintf(out, sizeof out, "%s/out.bin", c->dir);
    snprintf(cmd, sizeof cmd, "'%s' --control '%s' get s3://%s/fd/obj.bin -o '%s'", td_shoal(), c->nodes[0].control,
             TD_BUCKET, out);
    uint8_t *want = td_content(size, 77);
    for (int round = 0; round < 3; round++) {
        if (round == 2) {
            rot_blocks(c, 0, 4000);
            tt_s3rver_stats_reset(&c->s3);
        }
        TT_CHECK(system(cmd) == 0, "round %d: %s failed", round, cmd);
        size_t len = 0;
        uint8_t *got = slurp(out, &len);
        TT_CHECK(got != NULL && len == size, "round %d: %zu bytes in %s, expected %zu", round, len, out, size);
        TT_CHECK(memcmp(got, want, size) == 0, "round %d: the output differs from what was uploaded", round);
        free(got);
    }
    uint64_t local = td_stat(c, 0, "reads.local"), corrupt = td_stat(c, 0, "cache.corrupt_blocks");
    long gets = tt_s3rver_stat(&c->s3, "gets");
    tt_note("reads.local %llu, corrupt %llu, S3 GETs after the rot %ld", (unsigned long long)local,
            (unsigned long long)corrupt, gets);
    TT_CHECK(local >= 4, "the second read was not served from the node's store (reads.local %llu)",
             (unsigned long long)local);
    TT_CHECK(corrupt == 4, "%llu corrupt blocks counted, expected the 4 rotten ones", (unsigned long long)corrupt);
    TT_CHECK(gets == 4, "the rotten blocks cost %ld S3 GETs, expected 4 (one each)", gets);
    free(want);
    td_pass(c);
}

TT_TEST(test_daemon_metadata_ttl_bounds_staleness_of_overwrites_and_misses)
{
    const char *const extra[] = {"--metadata-ttl", "1", "--negative-ttl", "1", NULL};
    td_cluster *c = three_nodes(1, extra);
    size_t len = 0;
    uint8_t *got = td_get(c, 0, "fresh/new.bin", &len);
    TT_CHECK(got == NULL, "a key that does not exist was read (%zu bytes)", len);
    td_put(c, "fresh/new.bin", 5000, 1);
    td_sleep_ms(1200);
    td_get_check(c, 0, "fresh/new.bin", 5000, 1);
    td_put(c, "fresh/new.bin", 7000, 2);
    td_sleep_ms(1200);
    td_get_check(c, 0, "fresh/new.bin", 7000, 2);
    td_pass(c);
}

TT_TEST(test_daemon_shoal_leave_stops_it_gracefully)
{
    td_cluster *c = three_nodes(2, NULL);
    shoal_buf body = {0};
    TT_OK(node_control_call(c->nodes[1].control, "leave", &body));
    shoal_buf_destroy(&body);
    int st = td_node_wait(c, 1, 10000);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "shoald after `shoal leave`: wait status %d, expected exit 0", st);
    char state[32];
    td_member_state(c, 0, "node1", state, sizeof state);
    TT_CHECK(strcmp(state, "left") == 0, "node0 sees node1 as '%s', expected 'left'", state);
    td_pass(c);
}

/* ---- directory listings ------------------------------------------------------------------------------ */

/* Lists s3://TD_BUCKET/prefix through node i; returns the JSON body (free it). */
static char *list_on(td_cluster *c, int i, const char *prefix)
{
    shoal_buf body = {0};
    TT_CHECK(node_control_list(c->nodes[i].control, TD_BUCKET, prefix, "/", &body) == 0, "list %s on %s: %s", prefix,
             c->nodes[i].id, shoal_error_message());
    size_t len;
    return (char *)shoal_buf_steal(&body, &len);
}

typedef struct lister {
    td_cluster *c;
    int node;
    char *body;
} lister;

static void *list_main(void *arg)
{
    lister *l = arg;
    l->body = list_on(l->c, l->node, "data/");
    return NULL;
}

/* Every node lists data/ at the same moment; returns node 0's answer (free it) after checking
 * that all nodes saw the same one, holding every object of the dataset. */
static char *list_everywhere(td_cluster *c, int n)
{
    pthread_t t[TD_MAX_NODES];
    lister l[TD_MAX_NODES];
    for (int i = 0; i < n; i++) {
        l[i] = (lister){c, i, NULL};
        TT_CHECK(pthread_create(&t[i], NULL, list_main, &l[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    char key[64];
    for (int k = 0; k < DS_OBJECTS; k++) {
        ds_key(k, key, sizeof key);
        TT_CHECK(strstr(l[0].body, key) != NULL, "the listing of data/ lacks %s: %.200s", key, l[0].body);
    }
    for (int i = 1; i < n; i++) {
        TT_CHECK(strcmp(l[i].body, l[0].body) == 0, "%s and %s list data/ differently", c->nodes[i].id,
                 c->nodes[0].id);
        free(l[i].body);
    }
    return l[0].body;
}

/* The node whose S3 client made a listing request: the listing's owner. -1 when none did. */
static int list_owner(td_cluster *c, int n)
{
    int owner = -1;
    for (int i = 0; i < n; i++)
        if (c->nodes[i].pid > 0 && td_stat(c, i, "s3.list_requests") > 0)
            owner = i;
    return owner;
}

TT_TEST(test_daemon_directory_is_listed_once_per_ttl_by_its_owner)
{
    const char *const extra[] = {"--metadata-ttl", "2", "--peer-timeout", "500", NULL};
    td_cluster *c = three_nodes(3, extra);
    free(list_everywhere(c, 3));
    free(list_everywhere(c, 3));
    long lists = tt_s3rver_stat(&c->s3, "lists");
    TT_CHECK(lists == 1, "3 nodes listing data/ twice within the TTL cost %ld S3 listings, expected 1", lists);
    int owner = list_owner(c, 3);
    TT_CHECK(owner >= 0, "no node listed S3 itself");
    tt_note("owner of data/: %s", c->nodes[owner].id);
    /* The `shoal ls` command shows it too, names relative to the directory. */
    char cmd[800];
    snprintf(cmd, sizeof cmd, "'%s' --control '%s' ls s3://%s/data/ | grep -q ' part-07.bin$'", td_shoal(),
             c->nodes[(owner + 1) % 3].control, TD_BUCKET);
    TT_CHECK(system(cmd) == 0, "shoal ls s3://%s/data/ does not show part-07.bin", TD_BUCKET);

    td_sleep_ms(2300);
    free(list_everywhere(c, 3));
    lists = tt_s3rver_stat(&c->s3, "lists");
    TT_CHECK(lists == 2, "after the TTL the cluster listed data/ %ld times in all, expected 2", lists);

    /* The owner dies: the others' next listing (after the TTL) costs a fallback, not an error. */
    td_node_signal(c, owner, SIGKILL);
    td_node_wait(c, owner, 5000);
    td_sleep_ms(2300);
    int survivor = (owner + 1) % 3;
    free(list_on(c, survivor, "data/"));
    lists = tt_s3rver_stat(&c->s3, "lists");
    TT_CHECK(lists == 3, "after the owner died a listing cost %ld S3 listings in all, expected 3", lists);
    td_pass(c);
}

/* GET /metrics from addr:port over a plain socket; returns the body (free it) or NULL. */
static char *http_get_metrics(const char *ip, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    static const char req[] = "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n";
    TT_CHECK(write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1), "write");
    shoal_buf out = {0};
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        shoal_buf_append(&out, buf, (size_t)n);
    close(fd);
    size_t len;
    return (char *)shoal_buf_steal(&out, &len);
}

/* Two nodes, node0 serving /metrics on its own address, port 9464. */
static void start_two_with_metrics(td_cluster *c)
{
    char metrics[64];
    snprintf(metrics, sizeof metrics, "%s:9464", c->nodes[0].ip);
    const char *const extra[] = {"--metrics", metrics, NULL};
    td_node_start(c, 0, extra);
    td_node_start(c, 1, NULL);
    td_wait_cluster(c, 10000);
}

TT_TEST(test_daemon_metrics_show_the_read_counters)
{
    td_cluster *c = td_cluster_new(2, "1M");
    ds_upload(c);
    start_two_with_metrics(c);
    ds_read_all(c, 0);
    char *body = http_get_metrics(c->nodes[0].ip, 9464);
    TT_CHECK(body != NULL, "no answer at %s:9464/metrics", c->nodes[0].ip);
    char want[96];
    snprintf(want, sizeof want, "shoal_block_reads_total{source=\"peer\"} %llu",
             (unsigned long long)td_stat(c, 0, "reads.peer"));
    TT_CHECK(strstr(body, want) != NULL, "/metrics lacks '%s'", want);
    TT_CHECK(strstr(body, "shoal_s3_requests_total{op=\"get\"} ") != NULL && strstr(body, "shoal_cache_used_bytes ") != NULL,
             "/metrics lacks the S3 or cache figures");
    free(body);
    td_pass(c);
}

/* Writes `body` to dir/name; fails the test when it cannot. */
static void write_text(const char *dir, const char *name, const char *body, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    TT_CHECK(f && fputs(body, f) >= 0 && fclose(f) == 0, "write %s", path);
}

/* Through node 0's FUSE mount at mnt: writes a new file of `written` bytes and reads an object
 * uploaded to S3 whole; returns the bytes read. */
static size_t mount_traffic(const char *mnt, size_t written)
{
    char path[600];
    snprintf(path, sizeof path, "%s/data/new-through-mount.bin", mnt);
    uint8_t *data = td_content(written, 77);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    TT_CHECK(fd >= 0, "create %s: %s", path, strerror(errno));
    TT_CHECK(write(fd, data, written) == (ssize_t)written, "write %s: %s", path, strerror(errno));
    TT_CHECK(close(fd) == 0, "close (upload) %s: %s", path, strerror(errno));
    free(data);
    snprintf(path, sizeof path, "%s/data/part-01.bin", mnt);
    fd = open(path, O_RDONLY);
    TT_CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    char buf[65536];
    size_t got = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        got += (size_t)n;
    close(fd);
    TT_CHECK(got == ds_size(1), "read %zu bytes of %s, want %zu", got, path, ds_size(1));
    return got;
}

/* The _count of FUSE request `op` in a /metrics answer (0 when absent). */
static uint64_t fuse_count(const char *body, const char *op)
{
    char line[160];
    snprintf(line, sizeof line, "\nshoal_fuse_operation_duration_seconds_count{op=\"%s\"} ", op);
    const char *p = strstr(body, line);
    return p ? strtoull(p + strlen(line), NULL, 10) : 0;
}

/* A FUSE request is timed when its handler returns, just after its reply woke the caller (and
 * RELEASE reaches the mount after close returned): scrapes until every request of the traffic
 * shows there, at most 60 s, instead of hoping the first scrape comes late enough. */
static char *scrape_after_fuse(td_cluster *c, const char *before)
{
    static const char *const ops[] = {"lookup", "open", "create", "read", "write", "flush", "release"};
    uint64_t until = td_now_ms() + 60000;
    for (;;) {
        char *body = http_get_metrics(c->nodes[0].ip, 9464);
        TT_CHECK(body != NULL, "no answer at %s:9464/metrics", c->nodes[0].ip);
        size_t moved = 0;
        for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
            moved += fuse_count(body, ops[i]) > fuse_count(before, ops[i]);
        if (moved == sizeof ops / sizeof ops[0] || td_now_ms() > until)
            return body; /* the checker says which did not move */
        free(body);
        td_sleep_ms(50);
    }
}

static char g_metrics_mnt[400];
static void metrics_unmount(void)
{
    if (g_metrics_mnt[0])
        umount2(g_metrics_mnt, MNT_DETACH); /* a mount a killed daemon left */
}

/* A live daemon's /metrics, read by a strict parser of the text format (and prometheus_client's)
 * before and after real S3, peer and FUSE traffic: every family has HELP and TYPE, counters end
 * in _total, histograms are cumulative up to +Inf; the latency histograms moved with the
 * traffic (time to first byte counts exactly the block reads of each source); and every metric
 * name the shipped Grafana dashboard and alert rules use is one the daemon exports. Without
 * FUSE on the machine the mount's part is left out (and said so). */
TT_TEST(test_daemon_metrics_parse_strictly_and_histograms_move_with_traffic)
{
    char checker[600];
    snprintf(checker, sizeof checker, "%s/tests/deploy/test_metrics_format.py", SHOAL_SOURCE_DIR);
    if (system("/usr/bin/python3 -c 'import prometheus_client, yaml' 2>/dev/null") != 0)
        TT_SKIP("/usr/bin/python3 lacks prometheus_client or yaml (scripts/deps installs them)");
    td_cluster *c = td_cluster_new(2, "1M");
    ds_upload(c);
    char metrics[64], mnt[400];
    snprintf(metrics, sizeof metrics, "%s:9464", c->nodes[0].ip);
    snprintf(mnt, sizeof mnt, "%s/mnt", c->dir);
    int fuse = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    bool with_mount = fuse >= 0 && mkdir(mnt, 0755) == 0;
    if (fuse >= 0)
        close(fuse);
    const char *const plain[] = {"--metrics", metrics, NULL};
    const char *const mounted[] = {"--metrics", metrics, "--mount", mnt, NULL};
    if (with_mount) {
        snprintf(g_metrics_mnt, sizeof g_metrics_mnt, "%s", mnt);
        atexit(metrics_unmount);
    } else {
        fprintf(stderr, "no FUSE here (/dev/fuse): the mount's metrics are not checked\n");
    }
    td_node_start(c, 0, with_mount ? mounted : plain);
    td_node_start(c, 1, NULL);
    td_wait_cluster(c, 10000);
    char *before = http_get_metrics(c->nodes[0].ip, 9464);
    TT_CHECK(before != NULL, "no answer at %s:9464/metrics", c->nodes[0].ip);
    ds_read_all(c, 0); /* S3 for the blocks node 0 owns, node 1 for the others */
    ds_read_all(c, 0); /* again: from the store and from node 1's */
    size_t written = 300000, read = 0;
    if (with_mount)
        read = mount_traffic(mnt, written);
    char *after = with_mount ? scrape_after_fuse(c, before) : http_get_metrics(c->nodes[0].ip, 9464);
    TT_CHECK(after != NULL, "no second answer at %s:9464/metrics", c->nodes[0].ip);
    /* The HTTP answer's body: after the blank line that ends the header. */
    const char *b0 = strstr(before, "\r\n\r\n"), *b1 = strstr(after, "\r\n\r\n");
    TT_CHECK(b0 && b1, "no HTTP header in the answers");
    char f0[600], f1[600], cmd[2400];
    write_text(c->dir, "metrics-before.txt", b0 + 4, f0, sizeof f0);
    write_text(c->dir, "metrics-after.txt", b1 + 4, f1, sizeof f1);
    snprintf(cmd, sizeof cmd, "WRITTEN=%zu READ=%zu /usr/bin/python3 '%s' live '%s' '%s' %s", with_mount ? written : 0,
             read, checker, f0, f1, with_mount ? "--mount" : "");
    int rc = system(cmd);
    TT_CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "the metrics checker failed (its FAIL line above); scrapes in %s",
             c->dir);
    free(before);
    free(after);
    if (with_mount) {
        td_node_signal(c, 0, SIGTERM);
        td_node_wait(c, 0, 60000);
    }
    td_pass(c);
}

/* ---- the peer port -------------------------------------------------------------------------------- */

/* A CURVE client socket to node i's peer port with the given client key pair. */
static void *curve_dealer(void *ctx, td_cluster *c, int i, const uint8_t server_pub[32], const uint8_t pub[32],
                          const uint8_t sec[32])
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, timeout = 1500;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_pub, 32);
    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 32);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 32);
    char ep[96];
    snprintf(ep, sizeof ep, "tcp://%s:%u", c->nodes[i].ip, c->port);
    TT_CHECK(zmq_connect(s, ep) == 0, "connect %s", ep);
    return s;
}

/* A well-formed PING header frame. */
static void ping_frame(shoal_buf *out)
{
    node_peer_msg m = {.type = NODE_PEER_PING, .request_id = 7};
    TT_OK(node_peer_msg_encode(&m, out));
}

/* Node i's CURVE key pair, read from its state directory as the daemon keeps it. */
static void node_keys(td_cluster *c, int i, uint8_t pub[32], uint8_t sec[32])
{
    char state[400];
    snprintf(state, sizeof state, "%s/cache/state", c->nodes[i].dir);
    TT_OK(node_peer_keypair_load_or_create(state, pub, sec));
}

/* A DEALER on node0 with a member's key (node1's), so what it sends passes the ZAP handler and
 * reaches the decoder and the handlers. */
static void *member_dealer(td_cluster *c, void *ctx)
{
    uint8_t server_pub[32], server_sec[32], pub[32], sec[32];
    node_keys(c, 0, server_pub, server_sec);
    node_keys(c, 1, pub, sec);
    return curve_dealer(ctx, c, 0, server_pub, pub, sec);
}

/* A DEALER on node0 with a key pair of its own, which no member has: a stranger's. */
static void *stranger_dealer(td_cluster *c, void *ctx)
{
    uint8_t server_pub[32], server_sec[32], pub[32], sec[32];
    node_keys(c, 0, server_pub, server_sec);
    char mine[400];
    snprintf(mine, sizeof mine, "%s/stranger", c->dir);
    TT_OK(node_peer_keypair_load_or_create(mine, pub, sec));
    return curve_dealer(ctx, c, 0, server_pub, pub, sec);
}

TT_TEST(test_daemon_unknown_curve_key_gets_nothing)
{
    td_cluster *c = three_nodes(2, NULL);
    void *ctx = zmq_ctx_new();
    void *s = stranger_dealer(c, ctx);
    shoal_buf hdr = {0};
    ping_frame(&hdr);
    zmq_send(s, hdr.data, hdr.len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(s, "", 0, ZMQ_DONTWAIT);
    char buf[256];
    int n = zmq_recv(s, buf, sizeof buf, 0);
    TT_CHECK(n < 0, "a client with an unknown CURVE key got a %d-byte answer", n);
    /* A member's key (node1's) is admitted: the same PING gets its PONG, so the silence above was
     * the ZAP handler's doing, not a dead port. */
    void *member = member_dealer(c, ctx);
    TT_CHECK(zmq_send(member, hdr.data, hdr.len, ZMQ_SNDMORE) >= 0 && zmq_send(member, "", 0, 0) >= 0, "send");
    n = zmq_recv(member, buf, sizeof buf, 0);
    TT_CHECK(n > 0, "a member's key got no PONG (errno %d)", errno);
    zmq_close(s);
    zmq_close(member);
    zmq_ctx_term(ctx);
    shoal_buf_destroy(&hdr);
    td_pass(c);
}

/* A client whose CURVE key is no member's (what a node without the cluster key has: it never got
 * into the membership) asking for a block is refused at the handshake, and the refusal is counted:
 * peer.handshakes_refused in `shoal stats`, shoal_peer_handshakes_refused_total on /metrics. */
TT_TEST(test_daemon_refused_curve_handshake_is_counted_in_stats_and_metrics)
{
    td_cluster *c = td_cluster_new(2, "1M");
    td_put(c, "data/x", 100000, 1);
    start_two_with_metrics(c);
    td_get_check(c, 1, "data/x", 100000, 1);
    uint64_t before = td_stat(c, 0, "peer.handshakes_refused");
    void *ctx = zmq_ctx_new();
    void *s = stranger_dealer(c, ctx);
    node_peer_msg m = {.type = NODE_PEER_GET, .request_id = 9, .flags = NODE_PEER_F_NO_FORWARD};
    m.block.bucket = shoal_cursor_from_str(TD_BUCKET);
    m.block.key = shoal_cursor_from_str("data/x");
    m.block.etag = shoal_cursor_from_str("\"etag\"");
    m.block.length = 100000;
    shoal_buf hdr = {0};
    TT_OK(node_peer_msg_encode(&m, &hdr));
    zmq_send(s, hdr.data, hdr.len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(s, "", 0, ZMQ_DONTWAIT);
    char buf[256];
    TT_CHECK(zmq_recv(s, buf, sizeof buf, 0) < 0, "a client with an unknown CURVE key got an answer");
    uint64_t deadline = td_now_ms() + 10000, after;
    while ((after = td_stat(c, 0, "peer.handshakes_refused")) == before) {
        TT_CHECK(td_now_ms() < deadline, "peer.handshakes_refused stayed at %llu", (unsigned long long)before);
        td_sleep_ms(50);
    }
    char *body = http_get_metrics(c->nodes[0].ip, 9464);
    TT_CHECK(body != NULL, "no answer at %s:9464/metrics", c->nodes[0].ip);
    const char *line = strstr(body, "\nshoal_peer_handshakes_refused_total ");
    TT_CHECK(line && strtoull(line + 37, NULL, 10) >= after, "/metrics lacks shoal_peer_handshakes_refused_total >= %llu",
             (unsigned long long)after);
    tt_note("handshakes refused: %llu before, %llu after", (unsigned long long)before, (unsigned long long)after);
    free(body);
    zmq_close(s);
    zmq_ctx_term(ctx);
    shoal_buf_destroy(&hdr);
    td_pass(c);
}

TT_TEST(test_daemon_malformed_peer_frames_are_dropped_and_counted)
{
    td_cluster *c = three_nodes(2, NULL);
    void *ctx = zmq_ctx_new();
    void *s = member_dealer(c, ctx);
    static const char *const garbage[] = {"\xc1", "\x81\xa1v\x63", "not msgpack at all", "\x80"};
    for (size_t k = 0; k < sizeof garbage / sizeof garbage[0]; k++) {
        zmq_send(s, garbage[k], strlen(garbage[k]), ZMQ_SNDMORE);
        zmq_send(s, "", 0, 0);
    }
    zmq_send(s, "\xc1", 1, 0); /* one frame where two belong */
    uint64_t deadline = td_now_ms() + 3000;
    while (td_stat(c, 0, "peer.bad_frames") < 4 && td_now_ms() < deadline)
        td_sleep_ms(50);
    uint64_t bad = td_stat(c, 0, "peer.bad_frames");
    TT_CHECK(bad >= 4, "node0 counted %llu bad frames after 5 malformed messages", (unsigned long long)bad);
    zmq_close(s);
    zmq_ctx_term(ctx);
    /* Still serving: node1 reads everything, part of it from node0. */
    ds_read_all(c, 1);
    TT_CHECK(td_stat(c, 1, "reads.peer") > 0, "node1 read nothing from node0 after the garbage");
    td_pass(c);
}

/* A PUT header for block 0 (of `len` bytes, said to start at `off`) of s3://TD_BUCKET/key at
 * `etag`, whose checksum the caller gives; the id is the block's own unless `bad_id`. */
static void put_frame(shoal_buf *out, const char *key, const char *etag, size_t len, uint64_t off, uint64_t ck,
                      bool bad_id)
{
    node_peer_msg m = {.type = NODE_PEER_PUT, .request_id = 9, .checksum = ck, .payload_len = len,
                       .has_object_size = true, .object_size = len};
    m.block.offset = off;
    m.object_size = off + len;
    dht_id d = dht_block_id(TD_BUCKET, key, etag, 0);
    if (!bad_id)
        dht_id_bytes(d, m.block.id);
    m.block.bucket = shoal_cursor_from_str(TD_BUCKET);
    m.block.key = shoal_cursor_from_str(key);
    m.block.etag = shoal_cursor_from_str(etag);
    m.block.length = len;
    TT_OK(node_peer_msg_encode(&m, out));
}

/* Sends a PUT (header + payload) on `s` and returns the reply's status (-1: no reply). */
static int put_status(void *s, const shoal_buf *hdr, const void *payload, size_t len)
{
    TT_CHECK(zmq_send(s, hdr->data, hdr->len, ZMQ_SNDMORE) >= 0 && zmq_send(s, payload, len, 0) >= 0, "send PUT");
    uint8_t buf[512];
    int n = zmq_recv(s, buf, sizeof buf, 0);
    if (n <= 0)
        return -1;
    int more = 0;
    size_t ml = sizeof more;
    zmq_getsockopt(s, ZMQ_RCVMORE, &more, &ml);
    while (more) { /* the (empty) payload frame of the reply */
        uint8_t skip[16];
        zmq_recv(s, skip, sizeof skip, 0);
        zmq_getsockopt(s, ZMQ_RCVMORE, &more, &ml);
    }
    node_peer_msg rep;
    if (node_peer_msg_decode((shoal_cursor){buf, (size_t)n}, 0, &rep) != 0 || rep.type != NODE_PEER_PUT_REPLY)
        return -1;
    return (int)rep.status;
}

TT_TEST(test_daemon_bad_put_blocks_are_refused_counted_and_harmless)
{
    td_cluster *c = three_nodes(2, NULL);
    void *ctx = zmq_ctx_new();
    void *s = member_dealer(c, ctx); /* a member: the PUTs reach the handler, which must check them */
    int timeout = 5000;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    static const char body[] = "bytes that are not the ones checksummed";
    const size_t len = sizeof body - 1;
    shoal_buf hdr = {0};
    /* 1: a checksum that does not match the payload */
    put_frame(&hdr, "data/part-00.bin", "\"feed\"", len, 0, XXH3_64bits(body, len) ^ 1, false);
    TT_CHECK(put_status(s, &hdr, body, len) == NODE_PEER_ERROR, "a PUT with a wrong checksum was not refused");
    /* 2: an id that is not the one its coordinates give */
    shoal_buf_destroy(&hdr);
    put_frame(&hdr, "data/part-00.bin", "\"feed\"", len, 0, XXH3_64bits(body, len), true);
    TT_CHECK(put_status(s, &hdr, body, len) == NODE_PEER_ERROR, "a PUT with a forged block id was not refused");
    /* 3: a range that is not the block's own (block 0 starts at byte 0) */
    shoal_buf_destroy(&hdr);
    put_frame(&hdr, "data/part-00.bin", "\"feed\"", len, 5, XXH3_64bits(body, len), false);
    TT_CHECK(put_status(s, &hdr, body, len) == NODE_PEER_ERROR, "a PUT of a range that is no block was not refused");
    uint64_t refused = td_stat(c, 0, "peer.puts_refused");
    TT_CHECK(refused == 3, "node0 counted %llu refused PUTs of 3", (unsigned long long)refused);
    TT_CHECK(td_stat(c, 0, "cache.blocks") == 0, "a refused PUT left %llu blocks in node0's store",
             (unsigned long long)td_stat(c, 0, "cache.blocks"));
    shoal_buf_destroy(&hdr);
    zmq_close(s);
    zmq_ctx_term(ctx);
    /* Still serving: node1 reads everything, part of it from node0. */
    ds_read_all(c, 1);
    TT_CHECK(td_stat(c, 1, "reads.peer") > 0, "node1 read nothing from node0 after the refused PUTs");
    td_pass(c);
}

/* Reads [off, off + len) of an object of `size` bytes made from `seed` through node 0 and checks
 * every byte against the range clamped to the object's end. */
static void range_check(td_cluster *c, const char *key, size_t size, uint32_t seed, uint64_t off, uint64_t len)
{
    size_t got_len = 0;
    uint8_t *got = td_get_range(c, 0, key, off, len, &got_len);
    TT_CHECK(got != NULL, "range %llu+%llu of %s: %s", (unsigned long long)off, (unsigned long long)len, key,
             shoal_error_message());
    uint64_t start = off < size ? off : size, want = len < size - start ? len : size - start;
    uint8_t *all = td_content(size, seed);
    TT_CHECK(got_len == want, "range %llu+%llu of %s: %zu bytes, want %llu", (unsigned long long)off,
             (unsigned long long)len, key, got_len, (unsigned long long)want);
    TT_CHECK(memcmp(got, all + start, want) == 0, "range %llu+%llu of %s: the bytes differ from the object's",
             (unsigned long long)off, (unsigned long long)len, key);
    free(all);
    free(got);
}

/* Ranged gets through a real daemon: at the start, inside one block (which alone is fetched from
 * S3), across block boundaries, at and past the end (empty, not an error), zero length and the
 * whole object; each byte is compared with what was uploaded. */
TT_TEST(test_daemon_get_range_serves_every_slice_and_fetches_only_its_blocks)
{
    td_cluster *c = td_cluster_new(1, "1M");
    const size_t size = 3 * MIB + MIB / 2;
    td_put(c, "ranges/obj", size, 7);
    td_node_start(c, 0, NULL);
    td_wait_cluster(c, 10000);
    tt_s3rver_stats_reset(&c->s3);
    /* Only a retried S3 GET (s3.retries) may add to these counts. */
    range_check(c, "ranges/obj", size, 7, MIB + 1000, 5000);
    long gets = tt_s3rver_stat(&c->s3, "gets"), retries = (long)td_stat(c, 0, "s3.retries");
    TT_CHECK(gets >= 1 && gets <= 1 + retries, "a range inside block 1 caused %ld S3 GETs (%ld retried), want 1",
             gets, retries);
    range_check(c, "ranges/obj", size, 7, 0, 100);
    gets = tt_s3rver_stat(&c->s3, "gets"), retries = (long)td_stat(c, 0, "s3.retries");
    TT_CHECK(gets >= 2 && gets <= 2 + retries, "the first 100 bytes cost %ld S3 GETs in all (%ld retried), want 2",
             gets, retries);
    range_check(c, "ranges/obj", size, 7, MIB - 10, 20);
    range_check(c, "ranges/obj", size, 7, 500000, 2 * MIB);
    range_check(c, "ranges/obj", size, 7, size - 10, 10);
    range_check(c, "ranges/obj", size, 7, size - 10, 1000);
    range_check(c, "ranges/obj", size, 7, size, 10);
    range_check(c, "ranges/obj", size, 7, size + 5, 10);
    range_check(c, "ranges/obj", size, 7, 1234, 0);
    range_check(c, "ranges/obj", size, 7, 0, UINT64_MAX);
    gets = tt_s3rver_stat(&c->s3, "gets"), retries = (long)td_stat(c, 0, "s3.retries");
    TT_CHECK(gets <= 4 + retries, "%ld S3 GETs (%ld retried) for an object of 4 blocks", gets, retries);
    td_pass(c);
}

/* A cold `shoal get` of a file of 32 blocks on one node fetches the blocks it reads ahead in runs,
 * one ranged GET for several consecutive blocks (up to 16 MiB), so the server sees fewer GETs than
 * blocks, each block's bytes once, and the file reads back exact. Every GET is a run or a lone
 * block: GETs = blocks - (reads.run_blocks - reads.run_gets). Which reader leads which block
 * varies from run to run; that some GET is a run does not: `get` asks for the first blocks ahead
 * all at once, and the worker that begins the first of them finds the others still queued. */
TT_TEST(test_daemon_cold_sequential_get_fetches_runs_of_blocks_with_one_get_each)
{
    td_cluster *c = td_cluster_new(1, "1M");
    const size_t size = 32 * MIB;
    td_put(c, "runs/big.bin", size, 29);
    td_node_start(c, 0, NULL);
    td_wait_cluster(c, 10000);
    tt_s3rver_stats_reset(&c->s3);
    td_get_check(c, 0, "runs/big.bin", size, 29);
    long gets = tt_s3rver_stat(&c->s3, "gets"), bytes = tt_s3rver_stat(&c->s3, "getBytes");
    long retries = (long)td_stat(c, 0, "s3.retries");
    long runs = (long)td_stat(c, 0, "reads.run_gets"), in_runs = (long)td_stat(c, 0, "reads.run_blocks");
    tt_note("32 blocks: %ld GETs, %ld of them runs of %ld blocks in all, %ld bytes", gets, runs, in_runs, bytes);
    TT_CHECK(retries == 0, "%ld GETs retried on a quiet local server", retries);
    TT_CHECK(bytes == (long)size, "%ld bytes sent by the server for a file of %zu", bytes, size);
    TT_CHECK(gets == 32 - (in_runs - runs), "%ld GETs: %ld runs of %ld blocks and lone blocks make %ld", gets, runs,
             in_runs, 32 - (in_runs - runs));
    TT_CHECK(gets < 32, "%ld GETs for 32 blocks: one per block, no run", gets);
    td_get_check(c, 0, "runs/big.bin", size, 29);
    TT_CHECK(tt_s3rver_stat(&c->s3, "gets") == gets, "the second read cost %ld GETs: a block was not stored",
             tt_s3rver_stat(&c->s3, "gets") - gets);
    td_pass(c);
}

/* stat answers size, ETag and mtime; a missing key answers an error coded S3_NO_SUCH_KEY; a get
 * that pins another ETag than the object's is refused (a reader never mixes two versions). */
TT_TEST(test_daemon_stat_and_pinned_etag_get)
{
    td_cluster *c = td_cluster_new(1, "1M");
    td_put(c, "stat/obj", 12345, 3);
    td_node_start(c, 0, NULL);
    td_wait_cluster(c, 10000);
    char *ans = td_control_raw(c, 0, "{\"cmd\":\"stat\",\"bucket\":\"" TD_BUCKET "\",\"key\":\"stat/obj\"}");
    const char *nl = strchr(ans, '\n');
    TT_CHECK(!strncmp(ans, "{\"ok\":true,\"body\":\"json\"}\n", 26) && nl, "stat: %s", ans);
    node_json *j = node_json_parse(nl + 1, strlen(nl + 1));
    const char *etag = node_json_get_str(j, "etag", "");
    TT_CHECK(j && node_json_get_u64(j, "size", 0) == 12345 && !strcmp(node_json_get_str(j, "key", ""), "stat/obj") &&
                 strlen(etag) > 2 && etag[0] == '"' && node_json_get_u64(j, "mtime", 0) > 1700000000,
             "stat body: %s", nl + 1);
    char req[512];
    snprintf(req, sizeof req, "{\"cmd\":\"get\",\"bucket\":\"%s\",\"key\":\"stat/obj\",\"offset\":10,\"length\":5,"
             "\"etag\":\"\\\"0123\\\"\"}", TD_BUCKET);
    char *bad = td_control_raw(c, 0, req);
    TT_CHECK(strstr(bad, "\"ok\":false") && strstr(bad, "the object changed") && strstr(bad, "\"code\":\"S3_CHANGED\""),
             "get with another ETag: %s", bad);
    free(bad);
    /* The ETag stat gave is accepted, and the header names it and the object's size. */
    shoal_buf esc = {0};
    TT_OK(node_json_append_str(&esc, etag));
    snprintf(req, sizeof req, "{\"cmd\":\"get\",\"bucket\":\"%s\",\"key\":\"stat/obj\",\"offset\":10,\"length\":5,"
             "\"etag\":%s}", TD_BUCKET, shoal_buf_str(&esc));
    char *good = td_control_raw(c, 0, req);
    char want[256];
    snprintf(want, sizeof want, "{\"ok\":true,\"body\":\"bytes\",\"size\":5,\"object_size\":12345,\"etag\":%s}\n",
             shoal_buf_str(&esc));
    uint8_t *content = td_content(12345, 3);
    TT_CHECK(!strncmp(good, want, strlen(want)) && !memcmp(good + strlen(want), content + 10, 5),
             "get with the ETag of stat: %s", good);
    free(content);
    free(good);
    shoal_buf_destroy(&esc);
    node_json_delete(j);
    free(ans);
    ans = td_control_raw(c, 0, "{\"cmd\":\"stat\",\"bucket\":\"" TD_BUCKET "\",\"key\":\"stat/none\"}");
    TT_CHECK(strstr(ans, "\"ok\":false") && strstr(ans, "\"code\":\"S3_NO_SUCH_KEY\""), "stat of a missing key: %s", ans);
    free(ans);
    td_pass(c);
}

/* A paged list gives at most max_keys entries and a token that continues it; every page together
 * is the whole listing, the last page's token is null. */
TT_TEST(test_daemon_paged_list_walks_every_page)
{
    td_cluster *c = td_cluster_new(1, "1M");
    char key[64];
    for (int k = 0; k < 5; k++) {
        snprintf(key, sizeof key, "pages/o%d", k);
        td_put(c, key, 10, (uint32_t)k);
    }
    td_put(c, "pages/sub/x", 10, 9);
    td_node_start(c, 0, NULL);
    td_wait_cluster(c, 10000);
    char req[512], *token = NULL, seen[256] = "";
    int pages = 0;
    do {
        shoal_buf t = {0};
        if (token)
            TT_OK(shoal_buf_append_str(&t, ",\"token\":") || node_json_append_str(&t, token));
        snprintf(req, sizeof req, "{\"cmd\":\"list\",\"bucket\":\"%s\",\"prefix\":\"pages/\",\"max_keys\":2%s}",
                 TD_BUCKET, shoal_buf_str(&t));
        shoal_buf_destroy(&t);
        free(token);
        token = NULL;
        char *ans = td_control_raw(c, 0, req);
        const char *nl = strchr(ans, '\n');
        node_json *j = nl ? node_json_parse(nl + 1, strlen(nl + 1)) : NULL;
        TT_CHECK(j != NULL, "page %d: %s", pages, ans);
        int entries = 0;
        for (const node_json *o = node_json_get(j, "objects")->child; o; o = o->next, entries++)
            snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "%s ", node_json_get_str(o, "key", "?"));
        for (const node_json *p = node_json_get(j, "prefixes")->child; p; p = p->next, entries++)
            snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "%s ", p->str);
        TT_CHECK(entries <= 2 && node_json_get(j, "next_token"), "page %d: %s", pages, ans);
        if (node_json_get_str(j, "next_token", NULL))
            token = strdup(node_json_get_str(j, "next_token", NULL));
        node_json_delete(j);
        free(ans);
        pages++;
    } while (token && pages < 10);
    TT_CHECK(pages == 3 && !strcmp(seen, "pages/o0 pages/o1 pages/o2 pages/o3 pages/o4 pages/sub/ "),
             "%d pages listed: %s", pages, seen);
    td_pass(c);
}

TT_MAIN()

/* A block fetch whose S3 answer is cut mid-body is retried from its first byte, and the block is
 * stored with a sound checksum (the checksum a fetch takes while the bytes arrive starts again
 * with them), so the next read is local and nothing is dropped as corrupt. Blocks read ahead
 * together come in one GET (a run): a cut run is sent again whole, its blocks already complete
 * kept as they were and the rest filled, so the GETs are one per run or lone block, plus one per
 * cut. The cut comes from tests/s3/faultproxy.py, a FAULT INJECTOR in front of the real server:
 * no real server truncates a body on demand. */
TT_TEST(test_daemon_block_cut_mid_body_is_retried_and_stored_sound)
{
    td_cluster *c = td_cluster_new(1, "1M");
    tt_proxy px;
    tt_proxy_start(&px, c->s3.port, NULL, NULL);
    c->endpoint = px.endpoint;
    td_node_start(c, 0, NULL);
    td_wait_cluster(c, 10000);
    /* The daemon's readiness check (a LIST, a GET to the proxy) comes first. */
    TT_CHECK(td_wait_log(c, 0, "event=s3_checked", 30000), "the daemon never checked S3");
    long before = tt_proxy_stat(&px, "GET");
    size_t size = (3u << 20) + 12345; /* four blocks, the last one short */
    td_put(c, "cut.bin", size, 77);
    tt_proxy_rule(&px, "action=truncate&count=2&method=GET&match=cut.bin");
    td_get_check(c, 0, "cut.bin", size, 77);
    TT_CHECK(tt_proxy_stat(&px, "faults") == 2, "the proxy cut %ld answers, want 2", tt_proxy_stat(&px, "faults"));
    long gets = tt_proxy_stat(&px, "GET");
    long fetches = 4 - (long)(td_stat(c, 0, "reads.run_blocks") - td_stat(c, 0, "reads.run_gets"));
    TT_CHECK(gets - before == fetches + 2, "%ld GETs for 4 blocks in %ld GETs with 2 answers cut, want %ld",
             gets - before, fetches, fetches + 2);
    uint64_t local = td_stat(c, 0, "reads.local");
    td_get_check(c, 0, "cut.bin", size, 77);
    TT_CHECK(tt_proxy_stat(&px, "GET") == gets, "the second read cost %ld more GETs: a block was not stored sound",
             tt_proxy_stat(&px, "GET") - gets);
    TT_CHECK(td_stat(c, 0, "cache.corrupt_blocks") == 0, "%llu stored blocks failed their checksum",
             (unsigned long long)td_stat(c, 0, "cache.corrupt_blocks"));
    TT_CHECK(td_stat(c, 0, "reads.local") >= local + 4, "the second read took %llu blocks from the store, want 4",
             (unsigned long long)(td_stat(c, 0, "reads.local") - local));
    tt_proxy_stop(&px);
    td_pass(c);
}
