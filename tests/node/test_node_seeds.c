/*
 * Where a node finds its cluster (node_seeds) and how a wrong key shows in the logs
 * (node_gossip_watch), as units: names resolved through the system resolver (with an /etc/hosts
 * of the test's own, tt_hosts.h), the lazy resolver thread, the members file, and the watch
 * driven by a virtual clock with its log lines captured.
 */
#include "node_gossip_watch.h"
#include "node_seeds.h"
#include "shoal_error.h"
#include "shoal_log.h"
#include "tt.h"
#include "tt_hosts.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char *write_file(const char *dir, const char *name, const char *text)
{
    static char path[400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    TT_CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0, "write %s", path);
    return path;
}

static const char *fmt(const shoal_addr *a)
{
    static char s[SHOAL_ADDR_STRLEN];
    return shoal_addr_format(a, s);
}

/* Names go through the system resolver: here an /etc/hosts of the test's own (tt_hosts.h), read
 * by getaddrinfo as any other would be. */
TT_TEST(test_node_seeds_resolve_names_through_the_system_resolver)
{
    char *dir = tt_tmpdir("seeds");
    char hosts[400];
    snprintf(hosts, sizeof hosts, "%s/hosts", dir);
    tt_hosts_private(hosts, "# a comment\n"
                            "10.0.0.1   seed-a.example  alias-a # trailing comment\n"
                            "10.0.0.2\tSeed-B.example\n"
                            "fd00::3    seed-a.example\n"
                            "10.0.0.4   seed-a.example\n");
    shoal_addr out[8];
    int n = node_seeds_resolve("seed-a.example", 7400, 4, out, 8);
    TT_CHECK(n == 2 && !strcmp(fmt(&out[0]), "10.0.0.1:7400"), "seed-a: %d, first %s", n, n > 0 ? fmt(&out[0]) : "-");
    TT_CHECK(!strcmp(fmt(&out[1]), "10.0.0.4:7400"), "seed-a's second address: %s", fmt(&out[1]));
    TT_CHECK(node_seeds_resolve("alias-a", 1, 4, out, 8) == 1 && !strcmp(fmt(&out[0]), "10.0.0.1:1"), "alias");
    TT_CHECK(node_seeds_resolve("SEED-b.example", 9, 4, out, 8) == 1 && !strcmp(fmt(&out[0]), "10.0.0.2:9"),
             "names compare without case");
    TT_CHECK(node_seeds_resolve("seed-a.example", 7400, 6, out, 8) == 1 && !strcmp(fmt(&out[0]), "[fd00::3]:7400"),
             "IPv6 gossip takes the IPv6 address only: %s", fmt(&out[0]));
    TT_CHECK(node_seeds_resolve("seed-a.example", 7400, 4, out, 1) == 1, "max is respected");
    TT_CHECK(node_seeds_resolve("10.9.8.7", 7400, 4, out, 8) == 1 && !strcmp(fmt(&out[0]), "10.9.8.7:7400"),
             "numeric addresses need no lookup");

    TT_CHECK(node_seeds_resolve("seed-c.invalid", 7400, 4, out, 8) < 0 && shoal_error_code() == SHOAL_ERR_NOT_FOUND &&
                 strstr(shoal_error_message(), "seed-c.invalid: "),
             "a name that resolves nowhere: %s", shoal_error_message());
    TT_CHECK(node_seeds_resolve("fd00::9", 7400, 4, out, 8) < 0 &&
                 strstr(shoal_error_message(), "an IPv6 address, but gossip runs on IPv4"),
             "an address of the other family: %s", shoal_error_message());
    tt_rmtree(dir);
    free(dir);
}

typedef struct found {
    pthread_mutex_t mu;
    shoal_addr addrs[16];
    size_t n;
    int calls;
} found;

static void on_found(void *ud, const shoal_addr *addrs, size_t n)
{
    found *f = ud;
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < n && f->n < 16; i++)
        f->addrs[f->n++] = addrs[i];
    f->calls++;
    pthread_mutex_unlock(&f->mu);
}

static size_t found_count(found *f)
{
    pthread_mutex_lock(&f->mu);
    size_t n = f->n;
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* Numeric seeds are reported at once; a name that does not resolve is tried again with backoff and
 * reported when it does; a name that never resolves keeps the thread busy only until cancelled. */
TT_TEST(test_node_seeds_numeric_at_once_names_retried_until_they_resolve)
{
    char *dir = tt_tmpdir("seeds");
    char hosts[400];
    snprintf(hosts, sizeof hosts, "%s/hosts", dir);
    tt_hosts_private(hosts, "# nothing resolves yet\n");
    found f = {.mu = PTHREAD_MUTEX_INITIALIZER};
    char h0[] = "10.0.0.1", h1[] = "late.invalid", h2[] = "never.invalid", h3[] = "fd00::1";
    node_config_seed seeds[] = {{h0, 7400}, {h1, 7401}, {h2, 7402}, {h3, 7403}};
    node_seeds_config cfg = {.seeds = seeds, .n_seeds = 4, .family = 4, .backoff_min_us = 20000, .backoff_max_us = 100000, .found = on_found, .ud = &f};
    node_seeds *s = node_seeds_new(&cfg);
    TT_CHECK(s != NULL, "node_seeds_new: %s", shoal_error_message());
    TT_CHECK(found_count(&f) == 1 && !strcmp(fmt(&f.addrs[0]), "10.0.0.1:7400"),
             "the numeric seed was not reported by node_seeds_new itself");
    usleep(300000); /* several lookups of both names fail */
    TT_CHECK(found_count(&f) == 1, "a name resolved before /etc/hosts had it");
    tt_hosts_write(hosts, "10.0.0.2 late.invalid\n");
    for (int t = 0; t < 1000 && found_count(&f) < 2; t++) /* due within one backoff_max (100 ms) */
        usleep(10000);
    TT_CHECK(found_count(&f) == 2 && !strcmp(fmt(&f.addrs[1]), "10.0.0.2:7401"), "the late name was not reported: %zu",
             found_count(&f));
    node_seeds_cancel(s);
    node_seeds_delete(s);
    TT_CHECK(f.calls == 2, "found called %d times", f.calls);
    tt_rmtree(dir);
    free(dir);
}

TT_TEST(test_node_seeds_members_file_round_trips_and_skips_bad_lines)
{
    char *dir = tt_tmpdir("seeds");
    node_seeds_member m[NODE_SEEDS_MEMBERS_MAX];
    TT_CHECK(node_seeds_load_members(dir, m, NODE_SEEDS_MEMBERS_MAX) == 0, "no file is no member");
    node_seeds_member w[2] = {{.id = "node-a"}, {.id = "node-b"}};
    TT_OK(shoal_addr_parse("10.0.0.1:7400", 0, &w[0].addr));
    TT_OK(shoal_addr_parse("[fd00::2]:7401", 0, &w[1].addr));
    TT_OK(node_seeds_save_members(dir, w, 2));
    char tmp[420];
    snprintf(tmp, sizeof tmp, "%s/members.tmp", dir);
    TT_CHECK(access(tmp, F_OK) != 0, "the temporary file was left behind");
    TT_CHECK(node_seeds_load_members(dir, m, NODE_SEEDS_MEMBERS_MAX) == 2, "round trip");
    TT_CHECK(!strcmp(m[0].id, "node-a") && shoal_addr_eq(&m[0].addr, &w[0].addr) && !strcmp(m[1].id, "node-b") &&
                 shoal_addr_eq(&m[1].addr, &w[1].addr),
             "round trip: %s %s", m[0].id, m[1].id);
    TT_CHECK(node_seeds_load_members(dir, m, 1) == 1, "max is respected");

    shoal_log_set_level(SHOAL_LOG_ERROR); /* the skipped lines warn */
    write_file(dir, "members",
               "# header\n"
               "node-a 10.0.0.1:7400\n"
               "node-b\n"
               "node-c not-an-address\n"
               "node-d 10.0.0.4:7400 extra\n"
               "a-node-id-that-is-far-too-long-for-gossip-0123456789012345678901234 10.0.0.5:7400\n"
               "node-e 10.0.0.6:7400\n");
    TT_CHECK(node_seeds_load_members(dir, m, NODE_SEEDS_MEMBERS_MAX) == 2 && !strcmp(m[1].id, "node-e"),
             "bad lines are skipped, good ones kept");
    tt_rmtree(dir);
    free(dir);
}

/* ---- the watch -------------------------------------------------------------------------------- */

typedef struct captured {
    char lines[64][600];
    int n;
} captured;

static void capture(void *ud, shoal_log_level level, const char *line)
{
    captured *c = ud;
    if (c->n < 64)
        snprintf(c->lines[c->n++], sizeof c->lines[0], "%s", line);
}

static int count(const captured *c, const char *a, const char *b)
{
    int n = 0;
    for (int i = 0; i < c->n; i++)
        n += strstr(c->lines[i], a) && (!b || strstr(c->lines[i], b));
    return n;
}

#define S 1000000ull

/* One line per source at once, then at most one a minute with the count since the previous line,
 * whether the next packet or a tick brings it; sources are counted apart. */
TT_TEST(test_node_gossip_watch_logs_each_source_once_a_minute_with_its_count)
{
    static captured cap;
    shoal_log_set_sink(capture, &cap);
    node_gossip_watch *w = node_gossip_watch_new(15 * S);
    shoal_addr a, b;
    TT_OK(shoal_addr_parse("10.0.0.1:7400", 0, &a));
    TT_OK(shoal_addr_parse("10.0.0.2:7400", 0, &b));
    gossip_counters gc = {0};
    uint64_t t = 1000 * S;
    node_gossip_watch_unopened(w, &a, t);
    TT_CHECK(cap.n == 1 && strstr(cap.lines[0], "level=warn") && strstr(cap.lines[0], "event=undecryptable_packets") &&
                 strstr(cap.lines[0], "from=10.0.0.1:7400 dropped=1 period_s=0"),
             "first line: %s", cap.n ? cap.lines[0] : "none");
    for (int i = 1; i <= 100; i++) { /* 100 more within the minute: no line */
        node_gossip_watch_unopened(w, &a, t + (uint64_t)i * S / 2);
        node_gossip_watch_tick(w, &gc, false, t + (uint64_t)i * S / 2);
    }
    node_gossip_watch_unopened(w, &b, t + 51 * S);
    TT_CHECK(count(&cap, "from=10.0.0.1", NULL) == 1 && count(&cap, "from=10.0.0.2:7400 dropped=1 ", NULL) == 1,
             "%d lines for a within its minute", count(&cap, "from=10.0.0.1", NULL));
    node_gossip_watch_tick(w, &gc, false, t + 60 * S);
    TT_CHECK(count(&cap, "from=10.0.0.1:7400 dropped=100 period_s=60", NULL) == 1, "the minute's count: %s",
             cap.lines[cap.n - 1]);
    node_gossip_watch_tick(w, &gc, false, t + 200 * S);
    TT_CHECK(count(&cap, "from=10.0.0.1", NULL) == 2, "a source that went quiet is not logged again");
    node_gossip_watch_unopened(w, &a, t + 300 * S);
    TT_CHECK(count(&cap, "from=10.0.0.1:7400 dropped=1 ", NULL) == 2, "a source back after a quiet spell is logged at once");
    node_gossip_watch_delete(w);
    shoal_log_set_sink(NULL, NULL);
}

/* This node's own view: a join unanswered for `after` warns, then again after 1, 2, 4 minutes;
 * packets that arrive and never open warn per window; one that opens ends it. */
TT_TEST(test_node_gossip_watch_warns_when_this_node_is_not_heard)
{
    static captured cap;
    shoal_log_set_sink(capture, &cap);
    node_gossip_watch *w = node_gossip_watch_new(15 * S);
    gossip_counters gc = {.join_attempts = 1};
    uint64_t t0 = 50 * S;
    for (uint64_t t = t0; t <= t0 + 14 * S; t += S) {
        gc.join_attempts = 1 + (t - t0) / (4 * S);
        node_gossip_watch_tick(w, &gc, true, t);
    }
    TT_CHECK(count(&cap, "event=join_unanswered", NULL) == 0, "warned before 15 s");
    node_gossip_watch_tick(w, &gc, true, t0 + 15 * S);
    TT_CHECK(count(&cap, "event=join_unanswered", "level=warn") == 1, "no warning at 15 s");
    for (uint64_t t = t0 + 16 * S; t <= t0 + 15 * S + 420 * S; t += S)
        node_gossip_watch_tick(w, &gc, true, t);
    /* at 15, 75, 195 and 435 s */
    TT_CHECK(count(&cap, "event=join_unanswered", NULL) == 4, "%d warnings in 7 minutes",
             count(&cap, "event=join_unanswered", NULL));
    node_gossip_watch_tick(w, &gc, false, t0 + 500 * S); /* joined */
    node_gossip_watch_tick(w, &gc, true, t0 + 501 * S);
    node_gossip_watch_tick(w, &gc, true, t0 + 520 * S);
    TT_CHECK(count(&cap, "event=join_unanswered", NULL) == 5, "a new join waits its 15 s again");

    /* Packets arrive, none opens. */
    node_gossip_watch *v = node_gossip_watch_new(15 * S);
    gossip_counters g2 = {0};
    shoal_addr a;
    TT_OK(shoal_addr_parse("10.0.0.7:7400", 0, &a));
    uint64_t t = 1000 * S;
    node_gossip_watch_tick(v, &g2, false, t);
    for (int i = 0; i < 3; i++) {
        g2.packets_in++;
        g2.seal_failures++;
        node_gossip_watch_unopened(v, &a, t + (uint64_t)i * S);
    }
    node_gossip_watch_tick(v, &g2, false, t + 15 * S);
    TT_CHECK(count(&cap, "event=no_packet_opens", "packets=3 from=10.0.0.7:7400") == 1, "no no_packet_opens line");
    node_gossip_watch_tick(v, &g2, false, t + 30 * S); /* a quiet window: nothing */
    g2.packets_in += 2;                                /* one opened, one did not */
    g2.seal_failures++;
    node_gossip_watch_tick(v, &g2, false, t + 45 * S);
    TT_CHECK(count(&cap, "event=no_packet_opens", NULL) == 1, "warned although a packet opened");
    node_gossip_watch_delete(v);
    node_gossip_watch_delete(w);
    shoal_log_set_sink(NULL, NULL);
}

TT_MAIN()
