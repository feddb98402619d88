/*
 * Where a node finds its cluster (node_seeds), as a unit: names resolved through a hosts file (the
 * seam the daemon tests steer), the lazy resolver thread, and the members file.
 */
#include "node_seeds.h"
#include "shoal_error.h"
#include "shoal_log.h"
#include "tt.h"

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

TT_TEST(test_node_seeds_resolve_names_through_a_hosts_file)
{
    char *dir = tt_tmpdir("seeds");
    const char *hosts = write_file(dir, "hosts",
                                   "# a comment\n"
                                   "10.0.0.1   seed-a.example  alias-a # trailing comment\n"
                                   "10.0.0.2\tSeed-B.example\n"
                                   "fd00::3    seed-a.example\n"
                                   "10.0.0.4   seed-a.example\n"
                                   "not-an-address seed-c.example\n"
                                   "\n");
    shoal_addr out[8];
    int n = node_seeds_resolve("seed-a.example", 7400, 4, hosts, out, 8);
    TT_CHECK(n == 2 && !strcmp(fmt(&out[0]), "10.0.0.1:7400"), "seed-a: %d, first %s", n, n > 0 ? fmt(&out[0]) : "-");
    TT_CHECK(!strcmp(fmt(&out[1]), "10.0.0.4:7400"), "seed-a's second address: %s", fmt(&out[1]));
    TT_CHECK(node_seeds_resolve("alias-a", 1, 4, hosts, out, 8) == 1 && !strcmp(fmt(&out[0]), "10.0.0.1:1"), "alias");
    TT_CHECK(node_seeds_resolve("SEED-b.example", 9, 4, hosts, out, 8) == 1 && !strcmp(fmt(&out[0]), "10.0.0.2:9"),
             "names compare without case");
    TT_CHECK(node_seeds_resolve("seed-a.example", 7400, 6, hosts, out, 8) == 1 && !strcmp(fmt(&out[0]), "[fd00::3]:7400"),
             "IPv6 gossip takes the IPv6 address only: %s", fmt(&out[0]));
    TT_CHECK(node_seeds_resolve("seed-a.example", 7400, 4, hosts, out, 1) == 1, "max is respected");
    TT_CHECK(node_seeds_resolve("10.9.8.7", 7400, 4, hosts, out, 8) == 1 && !strcmp(fmt(&out[0]), "10.9.8.7:7400"),
             "numeric addresses need no lookup");

    TT_CHECK(node_seeds_resolve("seed-c.example", 7400, 4, hosts, out, 8) < 0 &&
                 shoal_error_code() == SHOAL_ERR_NOT_FOUND && strstr(shoal_error_message(), "seed-c.example: not in hosts"),
             "a name on a malformed line: %s", shoal_error_message());
    TT_CHECK(node_seeds_resolve("fd00::9", 7400, 4, hosts, out, 8) < 0 &&
                 strstr(shoal_error_message(), "an IPv6 address, but gossip runs on IPv4"),
             "an address of the other family: %s", shoal_error_message());
    char missing[420];
    snprintf(missing, sizeof missing, "%s/none", dir);
    TT_CHECK(node_seeds_resolve("seed-a.example", 7400, 4, missing, out, 8) < 0 &&
                 shoal_error_code() == SHOAL_ERR_NOT_FOUND && strstr(shoal_error_message(), "No such file"),
             "an unreadable hosts file: %s", shoal_error_message());
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
    char *hosts = strdup(write_file(dir, "hosts", "# empty\n"));
    found f = {.mu = PTHREAD_MUTEX_INITIALIZER};
    char h0[] = "10.0.0.1", h1[] = "late.example", h2[] = "never.example", h3[] = "fd00::1";
    node_config_seed seeds[] = {{h0, 7400}, {h1, 7401}, {h2, 7402}, {h3, 7403}};
    node_seeds_config cfg = {.seeds = seeds, .n_seeds = 4, .family = 4, .hosts_file = hosts,
                             .backoff_min_us = 20000, .backoff_max_us = 100000, .found = on_found, .ud = &f};
    node_seeds *s = node_seeds_new(&cfg);
    TT_CHECK(s != NULL, "node_seeds_new: %s", shoal_error_message());
    TT_CHECK(found_count(&f) == 1 && !strcmp(fmt(&f.addrs[0]), "10.0.0.1:7400"),
             "the numeric seed was not reported by node_seeds_new itself");
    usleep(300000); /* several lookups of both names fail */
    TT_CHECK(found_count(&f) == 1, "a name resolved from an empty hosts file");
    write_file(dir, "hosts.tmp", "10.0.0.2 late.example\n");
    char tmp[420];
    snprintf(tmp, sizeof tmp, "%s.tmp", hosts);
    TT_CHECK(rename(tmp, hosts) == 0, "rename");
    for (int t = 0; t < 1000 && found_count(&f) < 2; t++) /* due within one backoff_max (100 ms) */
        usleep(10000);
    TT_CHECK(found_count(&f) == 2 && !strcmp(fmt(&f.addrs[1]), "10.0.0.2:7401"), "the late name was not reported: %zu",
             found_count(&f));
    node_seeds_cancel(s);
    node_seeds_delete(s);
    TT_CHECK(f.calls == 2, "found called %d times", f.calls);
    tt_rmtree(dir);
    free(dir);
    free(hosts);
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

TT_MAIN()
