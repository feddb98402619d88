/*
 * The simulator's configuration: documented defaults and the parsers of flag values (sizes,
 * times, distributions, the workload and churn specs). Every parser is strict: trailing garbage,
 * a negative or non-finite number, or an unknown key is an error whose message names the text, so
 * shoal-sim can print one line naming the flag and exit 2.
 *
 * Defaults follow docs/simulator.md: a 10,000-object dataset of 16 MiB objects in 4 MiB blocks,
 * three epochs of sharded reads, 64 GiB of cache per node, R = 1, AWS us-east-1 list prices with
 * internet egress ($0.09/GB; same-region EC2 pays $0 and passes --egress-price 0).
 */
#include "sim_model.h"
#include "shoal_error.h"
#include "shoal_size.h"
#include "sim_world.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void sim_config_defaults(sim_config *c)
{
    *c = (sim_config){
        .seed = 1,
        .duration_s = 300,
        .latency = {SIM_DIST_UNIFORM, 0.0001, 0.0005},
        .bandwidth_bps = 25e9 / 8,
        .s3_latency = {SIM_DIST_LOGNORMAL, 0.030, 0.6},
        .s3_throughput = 100e6,
        .s3_rate = 5500,
        .egress_price = 0.09,
        .get_price = 0.0004,
        .put_price = 0.005,
        .prices = "internet",
        .peer_timeout_s = 2.0,
        .metadata_ttl_s = 60,
        .eviction = SIM_POLICY_LRU,
        .s3_conns = 16,
        .wl =
            {
                .files = 10000,
                .file_size = {SIM_DIST_FIXED, 16.0 * 1048576, 0},
                .block_size = 4u << 20,
                .epochs = 3,
                .start_s = 10,
                .cache_bytes = 64ull << 30,
                .replicas = 1,
                .zones = 1,
                .prefixes = 1,
                .checkpoint_bytes = 10ull << 30,
                .near_percent = 10,
            },
        .churn = {.stall_s = 10},
    };
}

int sim_set_prices(sim_config *c, const char *preset)
{
    /* AWS list prices, us-east-1, S3 Standard: GET/HEAD $0.0004 and PUT/LIST $0.005 per 1,000.
     * Egress: $0.09/GB to the internet (first tier), $0.02/GB to another region, $0 to EC2 in the
     * same region. Traffic between availability zones: $0.01/GB out of one and $0.01/GB into the
     * other, $0.02 per GB that crosses; a GPU cloud outside AWS typically bills none inside itself. */
    static const struct {
        const char *name;
        double egress, xzone;
    } presets[] = {
        {"internet", 0.09, 0},
        {"aws-same-region", 0, 0.02},
        {"aws-cross-region", 0.02, 0.02},
    };
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (strcmp(preset, presets[i].name) == 0) {
            c->egress_price = presets[i].egress;
            c->xzone_price = presets[i].xzone;
            c->get_price = 0.0004;
            c->put_price = 0.005;
            snprintf(c->prices, sizeof c->prices, "%s", preset);
            return 0;
        }
    }
    return shoal_error_set(SHOAL_ERR_INVAL, "'%s' is not a price preset (aws-same-region, aws-cross-region, internet)",
                           preset);
}

/* A finite non-negative number followed by a unit from `units` (matched case-insensitively,
 * longest first); an empty unit takes the first entry's factor. */
typedef struct unit {
    const char *name;
    double factor;
} unit;

static int parse_unit(const char *text, const unit *units, size_t n_units, const char *what, double *out)
{
    char *end;
    if (!text || !*text)
        return shoal_error_set(SHOAL_ERR_INVAL, "empty %s", what);
    double v = strtod(text, &end);
    if (end == text || !isfinite(v) || v < 0)
        return shoal_error_set(SHOAL_ERR_INVAL, "'%s' is not a %s", text, what);
    for (size_t i = 0; i < n_units; i++) {
        if (strcasecmp(end, units[i].name) == 0) {
            *out = v * units[i].factor;
            return 0;
        }
    }
    return shoal_error_set(SHOAL_ERR_INVAL, "'%s' is not a %s (unknown unit '%s')", text, what, end);
}

int sim_parse_size(const char *text, uint64_t *out) { return shoal_parse_size(text, out); }

int sim_parse_seconds(const char *text, double *out)
{
    static const unit units[] = {
        {"", 1}, {"s", 1}, {"ms", 1e-3}, {"us", 1e-6}, {"m", 60}, {"min", 60}, {"h", 3600},
    };
    return parse_unit(text, units, sizeof units / sizeof units[0], "time", out);
}

static int parse_value(const char *text, bool time, double *out)
{
    if (time)
        return sim_parse_seconds(text, out);
    uint64_t v;
    if (sim_parse_size(text, &v) < 0)
        return -1;
    *out = (double)v;
    return 0;
}

int sim_parse_dist(const char *text, bool time, sim_dist *out)
{
    char buf[128];
    if (!text || strlen(text) >= sizeof buf)
        return shoal_error_set(SHOAL_ERR_INVAL, "distribution '%s' is empty or too long", text ? text : "");
    strcpy(buf, text);
    char *parts[3] = {buf, NULL, NULL};
    size_t n = 1;
    for (char *p = buf; *p && n < 3; p++) {
        if (*p == ':') {
            *p = '\0';
            parts[n++] = p + 1;
        }
    }
    sim_dist d = {SIM_DIST_FIXED, 0, 0};
    if (n == 1) {
        if (parse_value(parts[0], time, &d.a) < 0)
            return -1;
    } else if (strcmp(parts[0], "fixed") == 0 && n == 2) {
        if (parse_value(parts[1], time, &d.a) < 0)
            return -1;
    } else if (strcmp(parts[0], "uniform") == 0 && n == 3) {
        d.kind = SIM_DIST_UNIFORM;
        if (parse_value(parts[1], time, &d.a) < 0 || parse_value(parts[2], time, &d.b) < 0)
            return -1;
        if (d.b < d.a)
            return shoal_error_set(SHOAL_ERR_INVAL, "'%s': the maximum is below the minimum", text);
    } else if (strcmp(parts[0], "lognormal") == 0 && n == 3) {
        d.kind = SIM_DIST_LOGNORMAL;
        char *end;
        if (parse_value(parts[1], time, &d.a) < 0)
            return -1;
        d.b = strtod(parts[2], &end);
        if (*end || end == parts[2] || !isfinite(d.b) || d.b < 0 || d.b > 5)
            return shoal_error_set(SHOAL_ERR_INVAL, "'%s': sigma must be a number in [0, 5]", text);
    } else {
        return shoal_error_set(SHOAL_ERR_INVAL,
                               "'%s' is not fixed:X, uniform:MIN:MAX or lognormal:MEDIAN:SIGMA", text);
    }
    *out = d;
    return 0;
}

double sim_dist_sample(const sim_dist *d, uint64_t *rng)
{
    switch (d->kind) {
    case SIM_DIST_FIXED:
        return d->a;
    case SIM_DIST_UNIFORM:
        return d->a + (d->b - d->a) * ((double)(sim_splitmix64(rng) >> 11) * 0x1.0p-53);
    case SIM_DIST_LOGNORMAL: {
        /* Box-Muller from two uniforms in (0, 1]. */
        double u1 = ((double)(sim_splitmix64(rng) >> 11) + 1) * 0x1.0p-53;
        double u2 = (double)(sim_splitmix64(rng) >> 11) * 0x1.0p-53;
        double z = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
        return d->a * exp(d->b * z);
    }
    }
    return d->a;
}

static int parse_count(const char *text, uint32_t min, uint32_t max, const char *key, uint32_t *out)
{
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (!*text || *end || text[0] == '-' || v < min || v > max)
        return shoal_error_set(SHOAL_ERR_INVAL, "%s=%s: expected a whole number in [%u, %u]", key, text,
                               min, max);
    *out = (uint32_t)v;
    return 0;
}

static int parse_rate(const char *text, const char *key, double *out)
{
    char *end;
    double v = strtod(text, &end);
    if (!*text || *end || !isfinite(v) || v < 0)
        return shoal_error_set(SHOAL_ERR_INVAL, "%s=%s: expected a non-negative number", key, text);
    *out = v;
    return 0;
}

/* Splits "k=v,k=v" in place and calls fn for each pair; the pair text names errors. */
typedef int (*pair_fn)(void *ud, const char *key, const char *value);

static int for_each_item(const char *text, const char *what, pair_fn fn, void *ud)
{
    char buf[1024];
    if (!text || strlen(text) >= sizeof buf)
        return shoal_error_set(SHOAL_ERR_INVAL, "%s spec is empty or longer than %zu bytes", what, sizeof buf - 1);
    strcpy(buf, text);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (eq)
            *eq = '\0';
        if (fn(ud, item, eq ? eq + 1 : NULL) < 0)
            return -1;
    }
    return 0;
}

static int workload_item(void *ud, const char *key, const char *v)
{
    sim_workload *w = ud;
    uint64_t size;
    if (!v)
        return shoal_error_set(SHOAL_ERR_INVAL, "workload item '%s' has no '=value'", key);
    if (strcmp(key, "files") == 0)
        return parse_count(v, 1, 100000000, key, &w->files);
    if (strcmp(key, "file-size") == 0)
        return sim_parse_dist(v, false, &w->file_size);
    if (strcmp(key, "block") == 0) {
        if (sim_parse_size(v, &size) < 0)
            return -1;
        if (size < 4096 || size > (1u << 30))
            return shoal_error_set(SHOAL_ERR_INVAL, "block=%s: expected 4 KiB to 1 GiB", v);
        w->block_size = (uint32_t)size;
        return 0;
    }
    if (strcmp(key, "epochs") == 0)
        return parse_count(v, 1, 10000, key, &w->epochs);
    if (strcmp(key, "start") == 0)
        return sim_parse_seconds(v, &w->start_s);
    if (strcmp(key, "epoch-time") == 0)
        return sim_parse_seconds(v, &w->epoch_s);
    if (strcmp(key, "read") == 0) {
        if (strcmp(v, "shard") && strcmp(v, "full"))
            return shoal_error_set(SHOAL_ERR_INVAL, "read=%s: expected shard or full", v);
        w->full = strcmp(v, "full") == 0;
        return 0;
    }
    if (strcmp(key, "order") == 0) {
        if (strcmp(v, "own") && strcmp(v, "same"))
            return shoal_error_set(SHOAL_ERR_INVAL, "order=%s: expected own or same", v);
        w->same_order = strcmp(v, "same") == 0;
        return 0;
    }
    if (strcmp(key, "cache") == 0)
        return sim_parse_size(v, &w->cache_bytes);
    if (strcmp(key, "replicas") == 0)
        return parse_count(v, 1, 8, key, &w->replicas);
    if (strcmp(key, "zones") == 0)
        return parse_count(v, 1, 64, key, &w->zones);
    if (strcmp(key, "prefixes") == 0)
        return parse_count(v, 1, 1000000, key, &w->prefixes);
    if (strcmp(key, "checkpoint") == 0)
        return sim_parse_seconds(v, &w->checkpoint_s);
    if (strcmp(key, "sizes") == 0) {
        if (!*v || strlen(v) >= sizeof w->sizes_path)
            return shoal_error_set(SHOAL_ERR_INVAL, "sizes=%s: expected a file path under %zu bytes", v,
                                   sizeof w->sizes_path);
        strcpy(w->sizes_path, v);
        return 0;
    }
    if (strcmp(key, "checkpoint-size") == 0)
        return sim_parse_size(v, &w->checkpoint_bytes);
    if (strcmp(key, "near") == 0) {
        uint32_t pct;
        char num[16];
        size_t len = strlen(v);
        if (len && v[len - 1] == '%')
            len--;
        if (len >= sizeof num)
            return shoal_error_set(SHOAL_ERR_INVAL, "near=%s: expected a percentage 0-100", v);
        memcpy(num, v, len);
        num[len] = '\0';
        if (parse_count(num, 0, 100, key, &pct) < 0)
            return -1;
        w->near_percent = pct;
        return 0;
    }
    if (strcmp(key, "consume") == 0) {
        /* A rate: a size per second ("500MB", "500MB/s"). */
        char num[64];
        size_t len = strlen(v);
        if (len > 2 && strcmp(v + len - 2, "/s") == 0)
            len -= 2;
        if (len >= sizeof num)
            return shoal_error_set(SHOAL_ERR_INVAL, "consume=%s: expected a size per second", v);
        memcpy(num, v, len);
        num[len] = '\0';
        if (sim_parse_size(num, &size) < 0 || size == 0)
            return shoal_error_set(SHOAL_ERR_INVAL, "consume=%s: expected a size per second, like 500MB/s", v);
        w->consume_bps = (double)size;
        return 0;
    }
    return shoal_error_set(SHOAL_ERR_INVAL, "unknown workload key '%s'", key);
}

int sim_parse_workload(const char *text, sim_workload *w)
{
    sim_workload copy = *w;
    if (for_each_item(text, "workload", workload_item, &copy) < 0)
        return -1;
    *w = copy;
    return 0;
}

static int churn_event(sim_churn *c, const char *item)
{
    static const struct {
        const char *name;
        sim_churn_kind kind;
    } kinds[] = {{"kill", SIM_CHURN_KILL},   {"restart", SIM_CHURN_RESTART}, {"join", SIM_CHURN_JOIN},
                 {"stall", SIM_CHURN_STALL}, {"partition", SIM_CHURN_PARTITION}};
    char buf[128];
    if (strlen(item) >= sizeof buf)
        return shoal_error_set(SHOAL_ERR_INVAL, "churn item '%s' is too long", item);
    strcpy(buf, item);
    char *at = strchr(buf, '@');
    *at = '\0';
    sim_churn_event e = {.count = 1, .for_s = c->stall_s};
    size_t k = 0;
    while (k < sizeof kinds / sizeof kinds[0] && strcmp(kinds[k].name, buf))
        k++;
    if (k == sizeof kinds / sizeof kinds[0])
        return shoal_error_set(SHOAL_ERR_INVAL, "churn item '%s': unknown event '%s'", item, buf);
    e.kind = kinds[k].kind;
    char *rest = at + 1;
    char *plus = strchr(rest, '+');
    if (plus) {
        *plus = '\0';
        if (e.kind != SIM_CHURN_STALL && e.kind != SIM_CHURN_PARTITION)
            return shoal_error_set(SHOAL_ERR_INVAL, "churn item '%s': only stall and partition take +D", item);
        if (sim_parse_seconds(plus + 1, &e.for_s) < 0)
            return shoal_error_wrap("churn item '%s'", item);
    } else if (e.kind == SIM_CHURN_PARTITION) {
        return shoal_error_set(SHOAL_ERR_INVAL, "churn item '%s': partition needs +D (its length)", item);
    }
    char *colon = strchr(rest, ':');
    if (colon) {
        *colon = '\0';
        if (e.kind == SIM_CHURN_PARTITION || parse_count(colon + 1, 1, 1000000, "count", &e.count) < 0)
            return shoal_error_set(SHOAL_ERR_INVAL, "churn item '%s': bad node count", item);
    }
    if (sim_parse_seconds(rest, &e.at) < 0)
        return shoal_error_wrap("churn item '%s'", item);
    if (c->n == SIM_CHURN_EVENTS_MAX)
        return shoal_error_set(SHOAL_ERR_INVAL, "more than %d churn events", SIM_CHURN_EVENTS_MAX);
    c->ev[c->n++] = e;
    return 0;
}

static int churn_item(void *ud, const char *key, const char *v)
{
    sim_churn *c = ud;
    if (!v) {
        if (!strchr(key, '@'))
            return shoal_error_set(SHOAL_ERR_INVAL, "churn item '%s' is neither EVENT@TIME nor key=value", key);
        return churn_event(c, key);
    }
    if (strcmp(key, "kill-rate") == 0)
        return parse_rate(v, key, &c->kill_rate);
    if (strcmp(key, "join-rate") == 0)
        return parse_rate(v, key, &c->join_rate);
    if (strcmp(key, "stall-rate") == 0)
        return parse_rate(v, key, &c->stall_rate);
    if (strcmp(key, "preempt-rate") == 0)
        return parse_rate(v, key, &c->preempt_rate);
    if (strcmp(key, "restart-after") == 0)
        return sim_parse_seconds(v, &c->restart_after);
    if (strcmp(key, "stall-for") == 0)
        return sim_parse_seconds(v, &c->stall_s);
    if (strcmp(key, "from") == 0)
        return sim_parse_seconds(v, &c->from_s);
    return shoal_error_set(SHOAL_ERR_INVAL, "unknown churn key '%s'", key);
}

int sim_parse_churn(const char *text, sim_churn *c)
{
    sim_churn copy = *c;
    if (for_each_item(text, "churn", churn_item, &copy) < 0)
        return -1;
    *c = copy;
    return 0;
}
