/*
 * shoal: the command-line client of the local shoald (SPEC §3).
 *
 * Each command is one request on the control socket (node_control's client side); this file is
 * only argument checking and presentation. Arguments are checked completely before anything is
 * sent, so a bad flag is always exit 2 with one line, whether or not a daemon is running; a
 * daemon that cannot be reached or that reports a failure is exit 1. `--json` prints the
 * daemon's JSON object as it came; without it status and stats are aligned tables.
 *
 * keygen needs no daemon: 32 bytes from libsodium's CSPRNG, written raw to a new file created
 * with O_EXCL and mode 0600 (an existing file is never overwritten: replacing a cluster key by
 * accident would cut the node off its cluster), or printed as 64 hex digits on stdout when no
 * -o is given, which node_config_load_key accepts as well.
 *
 * ls lists one directory (delimiter "/") through the daemon, so the cluster's listing owner
 * answers it; it prints names relative to the prefix, or the daemon's JSON with --json.
 *
 * wait asks for the status until it says ready: every 100 ms at first, then less often (up to once
 * a second), so a job that starts with the node waits little and a long wait costs the daemon
 * nothing. A daemon that does not answer yet (no socket, or a socket nobody accepts on: shoald
 * is starting or restarting) is waited for like one that is not ready; only what waiting cannot
 * mend ends it early (a socket this user may not open, an answer that is not a status).
 *
 * preload and drain show a one-line progress bar (bytes, objects or blocks, rate, ETA) on stderr
 * when stderr is a terminal, and otherwise plain progress lines on stdout, at most one a second,
 * so logs of batch jobs stay readable; with --json stdout holds only the final summary, one JSON
 * object, also when the command failed (it then has "error"). preload exits 1 when the prefix
 * matches nothing; drain exits 1 when some owned blocks could not be handed off (the node leaves
 * all the same).
 */
#include "node_config.h"
#include "node_control.h"
#include "node_stats.h"
#include "shoal_env.h"
#include "shoal_error.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

/* Every command: its arguments, what it does (lines after the first are indented under it), and
 * the options it takes. `shoal --help` lists them; `shoal help CMD` and `shoal CMD --help` print one. */
typedef struct command {
    const char *name, *args, *what, *options;
} command;

static const command COMMANDS[] = {
    {"status", "[--json]",
     "this node's view: readiness, members with their cache use and\n"
     "size, a cluster line (members by state, the live members' cache)",
     "  --json                     print one JSON object (members' cache_bytes is null when a\n"
     "                             member does not publish it; the totals are in \"cluster\")\n"},
    {"stats", "[--interval S | --watch S [--count N]] [--json]",
     "counters since the daemon started and the reads' hit ratio by\n"
     "source; --interval: rates over S seconds; --watch: every S seconds",
     "  --interval S               one sample: the counters' rates over S seconds\n"
     "  --watch S                  a sample every S seconds until interrupted\n"
     "  --count N                  with --watch: stop after N samples\n"
     "  --json                     print one JSON object (a sample: one per line)\n"},
    {"get", "s3://B/KEY [-o FILE]", "read one object through the cluster cache (stdout by default)",
     "  -o, --output FILE          write to FILE instead of stdout (replaced only if the read succeeds)\n"},
    {"preload", "s3://B/PREFIX [--json]",
     "warm the cluster cache with every object under PREFIX: each\n"
     "block is fetched once, by its owner, and stays there; says how\n"
     "many were cached already and how many came from S3",
     "  --json                     print only the final summary, one JSON object\n"},
    {"drain", "[--json]",
     "hand this node's blocks to their next owners, then leave the\n"
     "cluster: its departure then costs no S3 request",
     "  --json                     print only the final summary, one JSON object\n"},
    {"ls", "s3://B/PREFIX [--json]",
     "list a directory through the cluster (its owner lists S3 once\n"
     "per --metadata-ttl for every node); names are shown as `aws s3 ls`\n"
     "shows them, relative to the PREFIX's last '/'",
     "  --json                     print the listing as the daemon gives it\n"},
    {"keygen", "[-o FILE]",
     "new cluster key: raw 32 bytes to FILE (mode 0600, never\n"
     "overwritten), or 64 hex digits on stdout without -o",
     "  -o, --output FILE          write the key to FILE\n"},
    {"leave", "", "ask the local daemon to leave the cluster gracefully", ""},
    {"forget", "NODE",
     "drop a dead or left member from this node's view now (instead\n"
     "of after 24 h); an alive member is refused",
     ""},
    {"wait", "[--timeout S]",
     "return once the local daemon is ready (joined, S3 checked,\n"
     "mount up); waits for a daemon still starting; no limit\n"
     "without --timeout",
     "  --timeout S                give up waiting after S seconds (0: ask once)\n"},
    {"help", "[COMMAND]", "this list, or one command's usage", ""},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])
#define COMMAND_NAMES "status, stats, get, preload, ls, keygen, leave, forget, wait, drain, help"

static const char USAGE_HEAD[] = "usage: shoal [--control PATH] COMMAND [ARGS]\n"
                                 "\n"
                                 "The command-line client of the local shoald.\n"
                                 "\n"
                                 "commands:\n";
static const char USAGE_TAIL[] =
    "\n"
    "options:\n"
    "  --control PATH             control socket (default $XDG_RUNTIME_DIR/shoal/shoald.sock\n"
    "                             or /run/shoal/shoald.sock)\n"
    "  --help                     print this help (after a command: that command's) and exit\n"
    "  --version                  print the version and exit\n"
    "\n"
    "`shoal help COMMAND` or `shoal COMMAND --help` prints a command's usage and options.\n"
    "\n"
    "exit status: 0 success, 1 runtime failure (daemon unreachable, read failed; for wait: not\n"
    "ready within the timeout), 2 bad usage\n";

static const command *command_find(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(COMMANDS[i].name, name))
            return &COMMANDS[i];
    return NULL;
}

/* Prints text, its lines after the first indented by `indent` spaces. */
static void print_indented(const char *text, int indent)
{
    for (const char *p = text; *p;) {
        size_t n = strcspn(p, "\n");
        printf("%.*s\n", (int)n, p);
        p += n + (p[n] == '\n');
        if (*p)
            printf("%*s", indent, "");
    }
}

static void print_usage(void)
{
    fputs(USAGE_HEAD, stdout);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char head[96];
        snprintf(head, sizeof head, "%s%s%s", COMMANDS[i].name, COMMANDS[i].args[0] ? " " : "", COMMANDS[i].args);
        if (strlen(head) > 26)
            printf("  %s\n%29s", head, "");
        else
            printf("  %-26s ", head);
        print_indented(COMMANDS[i].what, 29);
    }
    fputs(USAGE_TAIL, stdout);
}

static void print_command_usage(const command *k)
{
    printf("usage: shoal [--control PATH] %s%s%s\n\n  ", k->name, k->args[0] ? " " : "", k->args);
    print_indented(k->what, 2);
    if (k->options[0])
        printf("\noptions:\n%s", k->options);
}

typedef struct cli {
    const char *command;
    const char *arg;     /* the s3:// URL of get, preload and ls; the node id of forget */
    const char *output;  /* -o */
    char *control;
    bool json;
    bool help;           /* --help: print the command's usage (or the list) and exit */
    double timeout_s;    /* wait: --timeout; < 0 when not given (no limit) */
    double interval_s;   /* stats: --interval or --watch; 0 when neither */
    bool watch;          /* stats: --watch */
    long count;          /* stats --watch: --count; 0 when not given (until interrupted) */
} cli;

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
    char msg[512]; /* formatted apart: the arguments may point into the last error's message */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    shoal_error_set(SHOAL_ERR_NODE_CONFIG, "%s", msg);
    node_config_fail("shoal");
}

static int runtime_error(void)
{
    fprintf(stderr, "shoal: %s\n", shoal_error_message());
    return 1;
}

/* A number of seconds in [min, 1e9]; a usage error otherwise. */
static double parse_seconds(const char *opt, const char *arg, double min)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (!*arg || *end || errno || !(v >= min && v <= 1e9))
        usage_error("%s: '%s' is not a number of seconds%s (e.g. 300 or 0.5)", opt, arg, min > 0 ? " above 0" : "");
    return v;
}

static void parse_args(int argc, char **argv, cli *c)
{
    enum { OPT_CONTROL = 1000, OPT_JSON, OPT_HELP, OPT_VERSION, OPT_TIMEOUT, OPT_INTERVAL, OPT_WATCH, OPT_COUNT };
    static const struct option opts[] = {
        {"control", required_argument, NULL, OPT_CONTROL}, {"json", no_argument, NULL, OPT_JSON},
        {"output", required_argument, NULL, 'o'},         {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},       {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"interval", required_argument, NULL, OPT_INTERVAL}, {"watch", required_argument, NULL, OPT_WATCH},
        {"count", required_argument, NULL, OPT_COUNT},     {NULL, 0, NULL, 0},
    };
    opterr = 0;
    for (;;) {
        int o = getopt_long(argc, argv, ":ho:", opts, NULL);
        if (o == -1)
            break;
        switch (o) {
        case OPT_CONTROL:
            if (!*optarg || strlen(optarg) >= 108)
                usage_error("--control: '%s' is not a usable socket path (1-107 bytes)", optarg);
            free(c->control);
            c->control = strdup(optarg);
            break;
        case OPT_JSON: c->json = true; break;
        case OPT_TIMEOUT: c->timeout_s = parse_seconds("--timeout", optarg, 0); break;
        case OPT_INTERVAL:
        case OPT_WATCH:
            if (c->interval_s > 0)
                usage_error("--interval and --watch: give one of them, once");
            c->interval_s = parse_seconds(o == OPT_WATCH ? "--watch" : "--interval", optarg, 0.001);
            c->watch = o == OPT_WATCH;
            break;
        case OPT_COUNT: {
            char *end;
            errno = 0;
            c->count = strtol(optarg, &end, 10);
            if (!*optarg || *end || errno || c->count < 1)
                usage_error("--count: '%s' is not a number of samples (1 or more)", optarg);
            break;
        }
        case 'o':
            if (!*optarg)
                usage_error("-o: empty file name");
            c->output = optarg;
            break;
        case 'h':
        case OPT_HELP: c->help = true; break;
        case OPT_VERSION: printf("shoal %s\n", SHOAL_VERSION); exit(0);
        case ':': usage_error("%.*s: missing value", (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
        default:
            if (optopt >= 1000)
                usage_error("%.*s: takes no value", (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
            if (optopt)
                usage_error("-%c: unknown option (see --help)", optopt);
            usage_error("%.*s: unknown option (see --help)", (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
        }
    }
    if (c->help || (optind < argc && !strcmp(argv[optind], "help"))) {
        /* `shoal --help`, `shoal CMD --help`, `shoal help [CMD]`: the rest of the line is not checked */
        const char *name = optind < argc && strcmp(argv[optind], "help") != 0 ? argv[optind]
                           : optind + 1 < argc                                ? argv[optind + 1]
                                                                              : NULL;
        const command *k = name ? command_find(name) : NULL;
        if (name && !k)
            usage_error("unknown command '%s' (" COMMAND_NAMES ")", name);
        if (k && strcmp(k->name, "help") != 0)
            print_command_usage(k);
        else
            print_usage();
        exit(0);
    }
    if (optind >= argc)
        usage_error("missing command (" COMMAND_NAMES "; see --help)");
    c->command = argv[optind++];
    if (!command_find(c->command))
        usage_error("unknown command '%s' (" COMMAND_NAMES ")", c->command);
    if (!strcmp(c->command, "forget")) {
        if (optind >= argc || !*argv[optind])
            usage_error("forget: missing NODE (a member's node id, as `shoal status` lists it)");
        c->arg = argv[optind++];
    }
    bool takes_url = !strcmp(c->command, "get") || !strcmp(c->command, "preload") || !strcmp(c->command, "ls");
    if (takes_url) {
        if (optind >= argc)
            usage_error("%s: missing s3://BUCKET/%s", c->command, !strcmp(c->command, "get") ? "KEY" : "PREFIX");
        c->arg = argv[optind++];
    }
    if (optind < argc)
        usage_error("%s: unexpected argument '%s'", c->command, argv[optind]);
    if (c->json && strcmp(c->command, "status") != 0 && strcmp(c->command, "stats") != 0 &&
        strcmp(c->command, "ls") != 0 && strcmp(c->command, "preload") != 0 && strcmp(c->command, "drain") != 0)
        usage_error("--json: only for status, stats, ls, preload and drain, not %s", c->command);
    if (c->output && strcmp(c->command, "get") != 0 && strcmp(c->command, "keygen") != 0)
        usage_error("-o: only for get and keygen, not %s", c->command);
    if (c->timeout_s >= 0 && strcmp(c->command, "wait") != 0)
        usage_error("--timeout: only for wait, not %s", c->command);
    if (c->interval_s > 0 && strcmp(c->command, "stats") != 0)
        usage_error("%s: only for stats, not %s", c->watch ? "--watch" : "--interval", c->command);
    if (c->count && !c->watch)
        usage_error("--count: only with --watch");
    if (!c->control && !(c->control = node_config_default_control()))
        usage_error("out of memory");
}

/* ---- presentation --------------------------------------------------------------------------- */

static const char *human_bytes(uint64_t v, char *out, size_t len)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double d = (double)v;
    int u = 0;
    while (d >= 1024 && u < 6)
        d /= 1024, u++;
    if (u == 0)
        snprintf(out, len, "%" PRIu64 " B", v);
    else
        snprintf(out, len, "%.1f %s", d, unit[u]);
    return out;
}

static const char *human_duration(double s, char *out, size_t len)
{
    uint64_t t = s < 0 ? 0 : (uint64_t)(s + 0.5);
    if (t >= 3600)
        snprintf(out, len, "%" PRIu64 "h%02" PRIu64 "m", t / 3600, t / 60 % 60);
    else
        snprintf(out, len, "%" PRIu64 "m%02" PRIu64 "s", t / 60, t % 60);
    return out;
}

static node_json *parse_body(const shoal_buf *body)
{
    node_json *j = node_json_parse(shoal_buf_str(body), body->len);
    if (!j)
        shoal_error_wrap("the daemon's answer");
    else if (j->type != NODE_JSON_OBJECT) {
        shoal_error_set(SHOAL_ERR_NODE, "the daemon's answer is not a JSON object");
        node_json_delete(j);
        j = NULL;
    }
    return j;
}

/* ---- stats over an interval ------------------------------------------------------------------
 *
 * `stats --interval S` takes the counters twice, S seconds apart, and prints each counter's rate
 * (its growth over the seconds actually elapsed between the two answers), the gauges as they are,
 * and where the block reads of the interval were served from. `--watch S` keeps sampling, each
 * sample against the previous one. A counter that went down means the daemon restarted between
 * two samples: its rate is taken from zero. */

/* Reads of an interval by source, and the share that did not go to S3. */
typedef struct read_mix {
    double local, peer, s3, total;
} read_mix;

static bool is_gauge(const char *name)
{
    size_t n;
    const node_stats_desc *d = node_stats_fields(&n);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(d[i].name, name))
            return d[i].kind == NODE_STATS_GAUGE;
    return false; /* a counter this shoal does not know (a newer daemon): counters are the rule */
}

static double counter_delta(const node_json *before, const node_json *m)
{
    uint64_t was = node_json_get_u64(before, m->key, 0);
    return m->u64 >= was ? (double)(m->u64 - was) : (double)m->u64;
}

static read_mix reads_of(const node_json *before, const node_json *now)
{
    read_mix r = {0};
    for (const node_json *m = now->child; m; m = m->next) {
        if (m->type != NODE_JSON_NUMBER || !m->is_u64)
            continue;
        double *slot = !strcmp(m->key, "reads.local") ? &r.local
                     : !strcmp(m->key, "reads.peer")  ? &r.peer
                     : !strcmp(m->key, "reads.s3")    ? &r.s3
                                                      : NULL;
        if (slot)
            *slot = before ? counter_delta(before, m) : (double)m->u64;
    }
    r.total = r.local + r.peer + r.s3;
    return r;
}

/* "reads 12.0/s: local 50.0 %, peer 40.0 %, S3 10.0 %; hit ratio 90.0 %" (rate: per second, or a
 * count when seconds is 0). */
static void print_read_mix(const read_mix *r, double seconds)
{
    if (seconds > 0)
        printf("reads    %.1f/s", r->total / seconds);
    else
        printf("reads    %.0f since start", r->total);
    if (r->total > 0)
        printf(": local %.1f %%, peer %.1f %%, S3 %.1f %%; hit ratio %.1f %%\n", 100 * r->local / r->total,
               100 * r->peer / r->total, 100 * r->s3 / r->total, 100 * (r->local + r->peer) / r->total);
    else
        printf(": none; hit ratio -\n");
}

static void print_rates_text(const node_json *before, const node_json *now, double seconds, long sample)
{
    read_mix r = reads_of(before, now);
    size_t w = 0;
    for (const node_json *m = now->child; m; m = m->next)
        if (strlen(m->key) > w)
            w = strlen(m->key);
    printf("sample   %ld, over %.2f s\n", sample, seconds);
    print_read_mix(&r, seconds);
    int quiet = 0;
    for (const node_json *m = now->child; m; m = m->next) {
        if (m->type != NODE_JSON_NUMBER || !m->is_u64)
            continue;
        char h[32];
        bool bytes = strstr(m->key, "bytes") || strstr(m->key, "capacity");
        if (is_gauge(m->key)) {
            printf("%-*s  %14" PRIu64 "%s%s%s\n", (int)w, m->key, m->u64, bytes ? "  (" : "",
                   bytes ? human_bytes(m->u64, h, sizeof h) : "", bytes ? ")" : "");
            continue;
        }
        double rate = counter_delta(before, m) / seconds;
        if (rate == 0) {
            quiet++;
            continue;
        }
        printf("%-*s  %14.1f/s%s%s%s\n", (int)w, m->key, rate, bytes ? "  (" : "",
               bytes ? human_bytes((uint64_t)rate, h, sizeof h) : "", bytes ? "/s)" : "");
    }
    printf("(%d counters did not move)\n", quiet);
}

static void print_rates_json(const node_json *before, const node_json *now, double seconds, long sample)
{
    read_mix r = reads_of(before, now);
    shoal_buf b = {0};
    shoal_buf_appendf(&b, "{\"sample\":%ld,\"seconds\":%.3f,\"reads_per_second\":%.3f,\"hit_ratio\":", sample, seconds,
                      r.total / seconds);
    if (r.total > 0)
        shoal_buf_appendf(&b, "%.4f,\"reads_by_source\":{\"local\":%.4f,\"peer\":%.4f,\"s3\":%.4f}",
                          (r.local + r.peer) / r.total, r.local / r.total, r.peer / r.total, r.s3 / r.total);
    else
        shoal_buf_append_str(&b, "null,\"reads_by_source\":null");
    for (int gauges = 0; gauges < 2; gauges++) {
        shoal_buf_append_str(&b, gauges ? "},\"gauges\":{" : ",\"rates\":{");
        bool first = true;
        for (const node_json *m = now->child; m; m = m->next) {
            if (m->type != NODE_JSON_NUMBER || !m->is_u64 || is_gauge(m->key) != (gauges == 1))
                continue;
            shoal_buf_append_str(&b, first ? "" : ",");
            node_json_append_str(&b, m->key);
            if (gauges)
                shoal_buf_appendf(&b, ":%" PRIu64, m->u64);
            else
                shoal_buf_appendf(&b, ":%.3f", counter_delta(before, m) / seconds);
            first = false;
        }
    }
    shoal_buf_append_str(&b, "}}");
    printf("%s\n", shoal_buf_str(&b));
    fflush(stdout);
    shoal_buf_destroy(&b);
}

/* The daemon's counters, parsed, and the monotonic time they were answered at. NULL with the error
 * set. */
static node_json *stats_take(const cli *c, uint64_t *at_us)
{
    shoal_buf body = {0};
    node_json *j = NULL;
    if (node_control_call(c->control, "stats", &body) == 0)
        j = parse_body(&body);
    *at_us = shoal_clock_mono_us();
    shoal_buf_destroy(&body);
    return j;
}

static void sleep_seconds(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static int cmd_stats_rates(const cli *c)
{
    uint64_t t0, t1;
    node_json *before = stats_take(c, &t0), *now = NULL;
    if (!before)
        return runtime_error();
    for (long sample = 1; !c->count || sample <= c->count; sample++) {
        sleep_seconds(c->interval_s);
        if (!(now = stats_take(c, &t1))) {
            node_json_delete(before);
            return runtime_error();
        }
        double seconds = (double)(t1 - t0) / 1e6;
        if (c->json) {
            print_rates_json(before, now, seconds, sample);
        } else {
            if (sample > 1)
                printf("\n");
            print_rates_text(before, now, seconds, sample);
            fflush(stdout);
        }
        node_json_delete(before);
        before = now;
        t0 = t1;
        if (!c->watch)
            break;
    }
    node_json_delete(before);
    return 0;
}

static void print_stats(const node_json *j)
{
    read_mix r = reads_of(NULL, j);
    print_read_mix(&r, 0);
    size_t w = 0;
    for (const node_json *m = j->child; m; m = m->next)
        if (strlen(m->key) > w)
            w = strlen(m->key);
    for (const node_json *m = j->child; m; m = m->next) {
        char h[32];
        if (m->type == NODE_JSON_NUMBER && m->is_u64) {
            bool bytes = strstr(m->key, "bytes") || strstr(m->key, "capacity");
            printf("%-*s  %20" PRIu64 "%s%s%s\n", (int)w, m->key, m->u64, bytes ? "  (" : "",
                   bytes ? human_bytes(m->u64, h, sizeof h) : "", bytes ? ")" : "");
        } else if (m->type == NODE_JSON_NUMBER) {
            printf("%-*s  %20g\n", (int)w, m->key, m->num);
        }
    }
}

enum { COL_ID, COL_ADDR, COL_ZONE, COL_STATE, COL_INC, COL_USED, COL_SIZE, COL_N };

static void member_row(const node_json *m, char cells[COL_N][80])
{
    char h[32];
    snprintf(cells[COL_ID], 80, "%s", node_json_get_str(m, "id", "?"));
    snprintf(cells[COL_ADDR], 80, "%s", node_json_get_str(m, "address", "?"));
    snprintf(cells[COL_ZONE], 80, "%s", node_json_get_str(m, "zone", "-"));
    snprintf(cells[COL_STATE], 80, "%s%s", node_json_get_str(m, "state", "?"),
             node_json_get_bool(m, "serves", true) ? "" : " (no-serve)");
    snprintf(cells[COL_INC], 80, "%" PRIu64, node_json_get_u64(m, "incarnation", 0));
    const node_json *used = node_json_get(m, "cache_bytes");
    if (used && used->type == NODE_JSON_NUMBER && used->is_u64)
        snprintf(cells[COL_USED], 80, "%s", human_bytes(used->u64, h, sizeof h));
    else /* a member that does not publish its use (an older release) */
        snprintf(cells[COL_USED], 80, "-");
    snprintf(cells[COL_SIZE], 80, "%s", human_bytes(node_json_get_u64(m, "cache_capacity", 0), h, sizeof h));
}

/* "ready    yes", or "ready    no: <what is missing>", then each condition. */
static void print_readiness(const node_json *j)
{
    const node_json *mounted = node_json_get(j, "mounted");
    bool ready = node_json_get_bool(j, "ready", false);
    printf("ready    %s%s%s\n", ready ? "yes" : "no", ready ? "" : ": ",
           ready ? "" : node_json_get_str(j, "waiting_for", "?"));
    printf("         joined %s, S3 checked %s, mounted %s\n\n", node_json_get_bool(j, "joined", false) ? "yes" : "no",
           node_json_get_bool(j, "s3_checked", false) ? "yes" : "no",
           mounted == NULL || mounted->type != NODE_JSON_BOOL ? "- (no --mount)" : mounted->b ? "yes" : "no");
}

/* The line under the members: how many in each state and the live members' cache, summed. */
static void print_cluster(const node_json *k)
{
    if (!k)
        return; /* a daemon older than this shoal */
    char used[32], size[32];
    uint64_t alive = node_json_get_u64(k, "alive", 0), suspect = node_json_get_u64(k, "suspect", 0);
    uint64_t reporting = node_json_get_u64(k, "cache_reporting", 0), cap = node_json_get_u64(k, "cache_capacity", 0);
    uint64_t bytes = node_json_get_u64(k, "cache_bytes", 0);
    printf("\ncluster  %" PRIu64 " alive, %" PRIu64 " suspect, %" PRIu64 " dead, %" PRIu64 " left; cache %s of %s",
           alive, suspect, node_json_get_u64(k, "dead", 0), node_json_get_u64(k, "left", 0),
           human_bytes(bytes, used, sizeof used), human_bytes(cap, size, sizeof size));
    if (cap)
        printf(" (%.1f %%)", 100.0 * (double)bytes / (double)cap);
    if (reporting < alive + suspect)
        printf(", %" PRIu64 " of %" PRIu64 " live members reporting", reporting, alive + suspect);
    printf("\n");
}

static void print_status(const node_json *j)
{
    static const char *const head[COL_N] = {"ID", "ADDRESS", "ZONE", "STATE", "INCARNATION", "CACHE USED",
                                           "CACHE SIZE"};
    char h[32], d[32], cells[COL_N][80];
    int w[COL_N];
    const node_json *members = node_json_get(j, "members");
    printf("node     %s (%s, zone %s)\n", node_json_get_str(j, "node_id", "?"), node_json_get_str(j, "address", "?"),
           node_json_get_str(j, "zone", "-"));
    printf("bucket   %s\n", node_json_get_str(j, "bucket", "?"));
    printf("ring     version %" PRIu64 ", block size %s\n", node_json_get_u64(j, "ring_version", 0),
           human_bytes(node_json_get_u64(j, "block_size", 0), h, sizeof h));
    printf("uptime   %s\n", human_duration((double)node_json_get_u64(j, "uptime_seconds", 0), d, sizeof d));
    print_readiness(j);
    for (int c = 0; c < COL_N; c++)
        w[c] = (int)strlen(head[c]);
    for (const node_json *m = members ? members->child : NULL; m; m = m->next) {
        member_row(m, cells);
        for (int c = 0; c < COL_N; c++)
            if ((int)strlen(cells[c]) > w[c])
                w[c] = (int)strlen(cells[c]);
    }
    for (int c = 0; c < COL_N; c++)
        printf(c < COL_INC ? "%-*s%s" : "%*s%s", w[c], head[c], c + 1 < COL_N ? "  " : "\n");
    for (const node_json *m = members ? members->child : NULL; m; m = m->next) {
        member_row(m, cells);
        for (int c = 0; c < COL_N; c++)
            printf(c < COL_INC ? "%-*s%s" : "%*s%s", w[c], cells[c], c + 1 < COL_N ? "  " : "\n");
    }    print_cluster(node_json_get(j, "cluster"));
}

/* ---- commands ------------------------------------------------------------------------------- */

static int cmd_query(const cli *c)
{
    shoal_buf body = {0};
    node_json *j = NULL;
    int rc = 1;
    if (node_control_call(c->control, c->command, &body) < 0)
        goto fail;
    if (c->json) {
        printf("%s\n", shoal_buf_str(&body));
        rc = 0;
        goto done;
    }
    if (!(j = parse_body(&body)))
        goto fail;
    if (!strcmp(c->command, "status"))
        print_status(j);
    else
        print_stats(j);
    rc = 0;
    goto done;
fail:
    runtime_error();
done:
    node_json_delete(j);
    shoal_buf_destroy(&body);
    return rc;
}

static int cmd_leave(const cli *c)
{
    shoal_buf body = {0};
    int rc = node_control_call(c->control, "leave", &body) < 0 ? runtime_error() : 0;
    if (rc == 0)
        printf("shoald is leaving the cluster\n");
    shoal_buf_destroy(&body);
    return rc;
}

static int cmd_forget(const cli *c)
{
    if (node_control_forget(c->control, c->arg) < 0)
        return runtime_error();
    printf("%s is no longer listed by this node\n", c->arg);
    return 0;
}

/* One look at the daemon for wait: 1 ready, 0 not yet (why says what is missing), -1 a failure
 * that waiting cannot mend (with the shoal_error set). */
static int wait_poll(const cli *c, char *why, size_t cap)
{
    shoal_buf body = {0};
    node_json *j = NULL;
    int rc = -1;
    if (node_control_call(c->control, "status", &body) < 0) {
        if (shoal_error_code() != SHOAL_ERR_IO)
            goto done; /* the daemon answered with an error */
        /* Connecting to a socket needs write permission on it: that is not something the daemon
         * starting later would change. */
        if (access(c->control, W_OK) < 0 && errno == EACCES)
            goto done;
        snprintf(why, cap, "%s", shoal_error_message());
        rc = 0;
        goto done;
    }
    if (!(j = parse_body(&body)))
        goto done;
    const node_json *ready = node_json_get(j, "ready");
    if (ready == NULL || ready->type != NODE_JSON_BOOL) {
        shoal_error_set(SHOAL_ERR_NODE, "the daemon's status says nothing of readiness (a shoald older than this shoal?)");
        goto done;
    }
    snprintf(why, cap, "%s", node_json_get_str(j, "waiting_for", "not ready"));
    rc = ready->b ? 1 : 0;
done:
    node_json_delete(j);
    shoal_buf_destroy(&body);
    return rc;
}

static int cmd_wait(const cli *c)
{
    uint64_t start = shoal_clock_mono_us();
    uint64_t limit_us = c->timeout_s < 0 ? UINT64_MAX : (uint64_t)(c->timeout_s * 1e6 + 0.5);
    uint64_t pause_us = 100000;
    char why[1024] = "";
    for (;;) {
        int r = wait_poll(c, why, sizeof why);
        if (r < 0)
            return runtime_error();
        if (r == 1) {
            printf("shoald is ready\n");
            return 0;
        }
        uint64_t spent = shoal_clock_mono_us() - start;
        if (spent >= limit_us) {
            fprintf(stderr, "shoal: wait: not ready after %g s: %s\n", c->timeout_s, why);
            return 1;
        }
        uint64_t left = limit_us - spent;
        uint64_t nap = pause_us < left ? pause_us : left;
        struct timespec ts = {(time_t)(nap / 1000000u), (long)(nap % 1000000u) * 1000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
        }
        pause_us = pause_us * 2 > 1000000u ? 1000000u : pause_us * 2;
    }
}

static void split_url(const cli *c, char **bucket, char **key)
{
    if (node_config_parse_s3_url(c->arg, bucket, key) < 0)
        usage_error("%s: %s", c->command, shoal_error_message());
    if (!strcmp(c->command, "get") && (!**key || (*key)[strlen(*key) - 1] == '/'))
        usage_error("get: '%s' names no object (expected s3://BUCKET/KEY)", c->arg);
}

/* Where `get -o FILE` writes. A regular file, or a name that does not exist yet, is written under a
 * temporary name in the same directory and renamed over FILE only once the whole object arrived
 * (as `aws s3 cp` does), so a failed get leaves FILE as it was, or absent, and never a truncated
 * copy that looks complete. Anything else (/dev/null, a FIFO, a terminal) is written in place and
 * never removed: a get that fails is no reason to delete a device. A symbolic link is followed, so
 * the file it names is the one replaced. */
typedef struct get_out {
    int fd;
    char *target; /* the file renamed over; NULL when written in place */
    char *tmp;
} get_out;

static int get_out_open(const char *path, get_out *o)
{
    struct stat st;
    *o = (get_out){.fd = -1};
    bool exists = stat(path, &st) == 0;
    if (exists && !S_ISREG(st.st_mode)) {
        if ((o->fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
            return shoal_error_errno(errno, "cannot open '%s'", path);
        return 0;
    }
    o->target = exists ? realpath(path, NULL) : strdup(path);
    if (o->target == NULL)
        return shoal_error_errno(errno, "cannot resolve '%s'", path);
    const char *slash = strrchr(o->target, '/');
    int dir_len = slash ? (int)(slash - o->target + 1) : 0;
    if (asprintf(&o->tmp, "%.*s.%s.shoal-XXXXXX", dir_len, o->target, o->target + dir_len) < 0) {
        o->tmp = NULL;
        return shoal_error_set(SHOAL_ERR_NOMEM, "out of memory for '%s'", path);
    }
    if ((o->fd = mkostemp(o->tmp, O_CLOEXEC)) < 0) {
        int e = errno;
        free(o->tmp);
        o->tmp = NULL;
        return shoal_error_errno(e, "cannot create '%s'", path);
    }
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(o->fd, exists ? st.st_mode & 07777 : 0666 & ~mask) < 0)
        return shoal_error_errno(errno, "cannot create '%s'", path);
    return 0;
}

/* Closes the output: with `ok`, the temporary file takes FILE's name; else it is removed. 0, or -1
 * with the error (the temporary file removed) when closing or renaming failed. */
static int get_out_close(get_out *o, bool ok, const char *path)
{
    int rc = 0;
    if (o->fd >= 0 && close(o->fd) < 0 && ok)
        rc = shoal_error_errno(errno, "closing '%s'", path);
    if (o->tmp != NULL) {
        if (ok && rc == 0 && rename(o->tmp, o->target) < 0)
            rc = shoal_error_errno(errno, "cannot write '%s'", path);
        if (!ok || rc != 0)
            unlink(o->tmp);
    }
    free(o->tmp);
    free(o->target);
    *o = (get_out){.fd = -1};
    return rc;
}

static int cmd_get(const cli *c)
{
    char *bucket, *key;
    int rc = 1;
    get_out out = {.fd = STDOUT_FILENO};
    split_url(c, &bucket, &key);
    if (c->output && get_out_open(c->output, &out) < 0) {
        get_out_close(&out, false, c->output);
        goto fail;
    }
    bool ok = node_control_get(c->control, bucket, key, out.fd, NULL) == 0;
    if (c->output && get_out_close(&out, ok, c->output) < 0)
        ok = false;
    if (!ok)
        goto fail;
    rc = 0;
    goto done;
fail:
    runtime_error();
done:
    free(bucket);
    free(key);
    return rc;
}

typedef struct progress_view {
    const char *what; /* "preload" or "drain" */
    bool tty;
    bool quiet;       /* --json: stdout holds the summary alone */
    struct timespec start;
    double last_print;
    node_control_progress last;
} progress_view;

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* One progress line: a bar on a terminal, else a plain line at most once a second. A preload
 * counts objects, a drain blocks. */
static void on_progress(void *ud, const node_control_progress *p)
{
    progress_view *v = ud;
    v->last = *p;
    bool drain = !strcmp(v->what, "drain");
    uint64_t units = drain ? p->blocks_done : p->objects_done, units_total = drain ? p->blocks_total : p->objects_total;
    const char *unit = drain ? "blocks" : "objects";
    double el = since(&v->start);
    char done[32], total[32], rate[32], eta[32];
    double bps = el > 0 ? (double)p->bytes_done / el : 0;
    human_bytes(p->bytes_done, done, sizeof done);
    human_bytes(p->bytes_total, total, sizeof total);
    human_bytes((uint64_t)bps, rate, sizeof rate);
    if (p->listed && bps > 0 && p->bytes_total >= p->bytes_done)
        human_duration((double)(p->bytes_total - p->bytes_done) / bps, eta, sizeof eta);
    else
        snprintf(eta, sizeof eta, "?");
    if (v->tty) {
        enum { BAR = 30 };
        char bar[BAR + 1];
        int fill = p->bytes_total ? (int)((double)p->bytes_done * BAR / (double)p->bytes_total) : 0;
        for (int i = 0; i < BAR; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[BAR] = '\0';
        fprintf(stderr, "\r[%s] %s/%s%s  %" PRIu64 "/%" PRIu64 "%s %s  %s/s  ETA %s\033[K", bar, done, total,
                p->listed ? "" : "+", units, units_total, p->listed ? "" : "+", unit, rate, eta);
        fflush(stderr);
    } else if (!v->quiet && (el - v->last_print >= 1.0 || (p->listed && units == units_total))) {
        v->last_print = el;
        printf("%s: %s of %s%s, %" PRIu64 " of %" PRIu64 "%s %s, %s/s, ETA %s\n", v->what, done, total,
               p->listed ? "" : " so far", units, units_total, p->listed ? "" : " so far", unit, rate, eta);
        fflush(stdout);
    }
}

/* The --json summary of a preload or a drain: its final figures, and the error when it failed. */
static void print_summary_json(const progress_view *v, int rc)
{
    const node_control_progress *p = &v->last;
    shoal_buf b = {0};
    if (!strcmp(v->what, "drain"))
        shoal_buf_appendf(&b, "{\"blocks\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"blocks_sent\":%" PRIu64
                              ",\"bytes_sent\":%" PRIu64 ",\"failed\":%" PRIu64,
                          p->blocks_total, p->bytes_total, p->sent, p->bytes_sent, p->failed);
    else
        shoal_buf_appendf(&b, "{\"objects\":%" PRIu64 ",\"blocks\":%" PRIu64 ",\"bytes\":%" PRIu64
                              ",\"cached\":%" PRIu64 ",\"fetched\":%" PRIu64 ",\"failed\":%" PRIu64,
                          p->objects_total, p->blocks_total, p->bytes_total, p->cached, p->fetched, p->failed);
    shoal_buf_appendf(&b, ",\"seconds\":%.3f", since(&v->start));
    if (rc != 0) {
        shoal_buf_append_str(&b, ",\"error\":");
        node_json_append_str(&b, shoal_error_message());
    }
    shoal_buf_append_str(&b, "}");
    printf("%s\n", shoal_buf_str(&b));
    shoal_buf_destroy(&b);
}

/* Runs a preload (bucket and prefix given) or a drain with progress, then prints its outcome. */
static int run_with_progress(const cli *c, const char *what, const char *bucket, const char *prefix)
{
    progress_view v = {.what = what, .tty = isatty(STDERR_FILENO) == 1, .quiet = c->json, .last_print = -1};
    clock_gettime(CLOCK_MONOTONIC, &v.start);
    int rc = bucket ? node_control_preload(c->control, bucket, prefix, on_progress, &v)
                    : node_control_drain(c->control, on_progress, &v);
    if (v.tty)
        fputc('\n', stderr);
    if (c->json)
        print_summary_json(&v, rc);
    if (rc < 0)
        return runtime_error();
    if (c->json)
        return 0;
    char d[32], h[32];
    if (bucket)
        printf("preload of %s done in %s: %" PRIu64 " objects, %" PRIu64 " blocks: %" PRIu64 " cached already, %" PRIu64
               " fetched from S3\n",
               c->arg, human_duration(since(&v.start), d, sizeof d), v.last.objects_total, v.last.blocks_total,
               v.last.cached, v.last.fetched);
    else
        printf("drained in %s: %" PRIu64 " blocks (%s) handed to their next owners; shoald is leaving the cluster\n",
               human_duration(since(&v.start), d, sizeof d), v.last.sent, human_bytes(v.last.bytes_sent, h, sizeof h));
    return 0;
}

static int cmd_preload(const cli *c)
{
    char *bucket, *prefix;
    split_url(c, &bucket, &prefix);
    int rc = run_with_progress(c, "preload", bucket, prefix);
    free(bucket);
    free(prefix);
    return rc;
}

/* ls: the directory's common prefixes ("PRE name/") then its objects ("SIZE name"), names shown
 * relative to the prefix's last '/' as `aws s3 ls` does; --json prints the daemon's object. */
static int cmd_ls(const cli *c)
{
    char *bucket, *prefix;
    shoal_buf body = {0};
    node_json *j = NULL;
    int rc = 1;
    split_url(c, &bucket, &prefix);
    if (node_control_list(c->control, bucket, prefix, "/", &body) < 0 ||
        (!c->json && !(j = node_json_parse((const char *)body.data, body.len)))) {
        runtime_error();
        goto done;
    }
    if (c->json) {
        printf("%s\n", shoal_buf_str(&body));
    } else {
        /* Names relative to the prefix's last '/', as `aws s3 ls` shows them: s3://b/dir lists
         * "PRE dir/", s3://b/dir/ lists what is in it. */
        const char *slash = strrchr(prefix, '/');
        size_t skip = slash ? (size_t)(slash - prefix) + 1 : 0;
        const node_json *pre = node_json_get(j, "prefixes"), *obj = node_json_get(j, "objects");
        for (const node_json *e = pre ? pre->child : NULL; e; e = e->next)
            if (e->type == NODE_JSON_STRING)
                printf("%20s %s\n", "PRE", strlen(e->str) >= skip ? e->str + skip : e->str);
        for (const node_json *e = obj ? obj->child : NULL; e; e = e->next) {
            const char *key = node_json_get_str(e, "key", "");
            printf("%20" PRIu64 " %s\n", node_json_get_u64(e, "size", 0), strlen(key) >= skip ? key + skip : key);
        }
    }
    rc = 0;
done:
    node_json_delete(j);
    shoal_buf_destroy(&body);
    free(bucket);
    free(prefix);
    return rc;
}

static int cmd_keygen(const cli *c)
{
    uint8_t key[NODE_CONFIG_KEY_LEN];
    char hex[2 * NODE_CONFIG_KEY_LEN + 1];
    int rc = 1, fd = -1;
    if (sodium_init() < 0) {
        shoal_error_set(SHOAL_ERR_IO, "libsodium failed to initialize");
        goto fail;
    }
    randombytes_buf(key, sizeof key);
    if (!c->output) {
        sodium_bin2hex(hex, sizeof hex, key, sizeof key);
        printf("%s\n", hex);
        sodium_memzero(hex, sizeof hex);
        rc = 0;
        goto done;
    }
    fd = open(c->output, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            shoal_error_set(SHOAL_ERR_IO, "'%s' exists; refusing to overwrite a cluster key", c->output);
        else
            shoal_error_errno(errno, "cannot create '%s'", c->output);
        goto fail;
    }
    if (fchmod(fd, 0600) < 0 || write(fd, key, sizeof key) != (ssize_t)sizeof key || fsync(fd) < 0) {
        shoal_error_errno(errno, "writing '%s'", c->output);
        unlink(c->output);
        goto fail;
    }
    rc = 0;
    goto done;
fail:
    runtime_error();
done:
    if (fd >= 0)
        close(fd);
    sodium_memzero(key, sizeof key);
    return rc;
}

int main(int argc, char **argv)
{
    cli c = {.timeout_s = -1};
    int rc;
    parse_args(argc, argv, &c);
    if (!strcmp(c.command, "keygen"))
        rc = cmd_keygen(&c);
    else if (!strcmp(c.command, "get"))
        rc = cmd_get(&c);
    else if (!strcmp(c.command, "preload"))
        rc = cmd_preload(&c);
    else if (!strcmp(c.command, "ls"))
        rc = cmd_ls(&c);
    else if (!strcmp(c.command, "leave"))
        rc = cmd_leave(&c);
    else if (!strcmp(c.command, "forget"))
        rc = cmd_forget(&c);
    else if (!strcmp(c.command, "wait"))
        rc = cmd_wait(&c);
    else if (!strcmp(c.command, "drain"))
        rc = run_with_progress(&c, "drain", NULL, NULL);
    else if (!strcmp(c.command, "stats") && c.interval_s > 0)
        rc = cmd_stats_rates(&c);
    else
        rc = cmd_query(&c);
    free(c.control);
    return rc;
}
