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

static const char USAGE[] =
    "usage: shoal [--control PATH] COMMAND [ARGS]\n"
    "\n"
    "The command-line client of the local shoald.\n"
    "\n"
    "commands:\n"
    "  status [--json]            this node's view: readiness, members, cache use, ring version\n"
    "  stats [--json]             counters since the daemon started\n"
    "  get s3://B/KEY [-o FILE]   read one object through the cluster cache (stdout by default)\n"
    "  preload s3://B/PREFIX      warm the cluster cache with every object under PREFIX: each\n"
    "                             block is fetched once, by its owner, and stays there; says how\n"
    "                             many were cached already and how many came from S3\n"
    "  drain                      hand this node's blocks to their next owners, then leave the\n"
    "                             cluster: its departure then costs no S3 request\n"
    "  ls s3://B/PREFIX [--json]  list a directory through the cluster (its owner lists S3 once\n"
    "                             per --metadata-ttl for every node)\n"
    "  keygen [-o FILE]           new cluster key: raw 32 bytes to FILE (mode 0600, never\n"
    "                             overwritten), or 64 hex digits on stdout without -o\n"
    "  leave                      ask the local daemon to leave the cluster gracefully\n"
    "  forget NODE                drop a dead or left member from this node's view now (instead\n"
    "                             of after 24 h); an alive member is refused\n"
    "  wait [--timeout S]         return once the local daemon is ready (joined, S3 checked,\n"
    "                             mount up); waits for a daemon still starting; no limit\n"
    "                             without --timeout\n"
    "\n"
    "options:\n"
    "  --control PATH             control socket (default $XDG_RUNTIME_DIR/shoal/shoald.sock\n"
    "                             or /run/shoal/shoald.sock)\n"
    "  --json                     print one JSON object (status, stats, ls, preload, drain)\n"
    "  -o, --output FILE          write to FILE (get, keygen)\n"
    "  --timeout S                give up waiting after S seconds (wait; 0: ask once)\n"
    "  --help                     print this help and exit\n"
    "  --version                  print the version and exit\n"
    "\n"
    "exit status: 0 success, 1 runtime failure (daemon unreachable, read failed; for wait: not\n"
    "ready within the timeout), 2 bad usage\n";

typedef struct cli {
    const char *command;
    const char *arg;     /* the s3:// URL of get, preload and ls; the node id of forget */
    const char *output;  /* -o */
    char *control;
    bool json;
    double timeout_s;    /* wait: --timeout; < 0 when not given (no limit) */
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

static void parse_args(int argc, char **argv, cli *c)
{
    enum { OPT_CONTROL = 1000, OPT_JSON, OPT_HELP, OPT_VERSION, OPT_TIMEOUT };
    static const struct option opts[] = {
        {"control", required_argument, NULL, OPT_CONTROL}, {"json", no_argument, NULL, OPT_JSON},
        {"output", required_argument, NULL, 'o'},         {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},       {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {NULL, 0, NULL, 0},
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
        case OPT_TIMEOUT: {
            char *end;
            errno = 0;
            c->timeout_s = strtod(optarg, &end);
            if (!*optarg || *end || errno || !(c->timeout_s >= 0 && c->timeout_s <= 1e9))
                usage_error("--timeout: '%s' is not a number of seconds (e.g. 300 or 0.5)", optarg);
            break;
        }
        case 'o':
            if (!*optarg)
                usage_error("-o: empty file name");
            c->output = optarg;
            break;
        case 'h':
        case OPT_HELP: fputs(USAGE, stdout); exit(0);
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
    if (optind >= argc)
        usage_error("missing command (status, stats, get, preload, ls, keygen, leave, forget, wait, drain; see "
                    "--help)");
    c->command = argv[optind++];
    static const char *const known[] = {"status", "stats", "get",    "preload", "ls",
                                        "keygen", "leave", "forget", "wait",    "drain"};
    bool ok = false;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        ok = ok || !strcmp(c->command, known[i]);
    if (!ok)
        usage_error("unknown command '%s' (status, stats, get, preload, ls, keygen, leave, forget, wait, drain)", c->command);
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

static void print_stats(const node_json *j)
{
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

static int cmd_get(const cli *c)
{
    char *bucket, *key;
    int fd = STDOUT_FILENO, rc = 1;
    split_url(c, &bucket, &key);
    if (c->output && (fd = open(c->output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
        shoal_error_errno(errno, "cannot create '%s'", c->output);
        goto fail;
    }
    if (node_control_get(c->control, bucket, key, fd, NULL) < 0) {
        if (c->output)
            unlink(c->output); /* never leave a truncated copy that looks complete */
        goto fail;
    }
    if (c->output && close(fd) < 0) {
        fd = STDOUT_FILENO;
        shoal_error_errno(errno, "closing '%s'", c->output);
        goto fail;
    }
    fd = STDOUT_FILENO;
    rc = 0;
    goto done;
fail:
    runtime_error();
done:
    if (fd != STDOUT_FILENO)
        close(fd);
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
 * relative to the prefix as `aws s3 ls` does; --json prints the daemon's object. */
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
        size_t skip = strlen(prefix);
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
    else
        rc = cmd_query(&c);
    free(c.control);
    return rc;
}
