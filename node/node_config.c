/*
 * node_config: one table of options drives the command line, the config file, --help and the
 * error messages.
 *
 * Parsing has three steps. (1) getopt_long collects the command line as raw strings, one slot per
 * option (a repeated flag keeps its last value). (2) When --config names a file, libinih reads it
 * and fills only the slots the command line left empty, which is what makes a flag win over the
 * file; an unknown or repeated key stops the parse at its line. We feed inih through our own line
 * reader so each value remembers the line it came from. (3) Each filled slot is converted and
 * validated by its option's case in apply(); then the defaults that depend on other values or on
 * the host (node id, advertise address, state dir, region) are derived.
 *
 * Every error is one line: "--cache-size: '10X' is not a size ..." for a flag,
 * "config /etc/shoald.ini:7: cache-size: ..." for a key, so the user sees exactly what to fix.
 * The cluster key is read here (a missing or malformed key is a configuration error, exit 2) and
 * wiped from memory by node_config_destroy.
 */
#include "node_config.h"
#include "shoal_buf.h"
#include "shoal_error.h"
#include "shoal_size.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <ifaddrs.h>
#include <ini.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

enum opt_id {
    O_NODE_ID,
    O_BIND,
    O_ADVERTISE,
    O_SEEDS,
    O_BUCKET,
    O_ENDPOINT,
    O_PATH_STYLE,
    O_REGION,
    O_CACHE_DIR,
    O_CACHE_SIZE,
    O_CACHE_FREE_SPACE,
    O_BLOCK_SIZE,
    O_REPLICAS,
    O_FETCH_BUFFERS,
    O_ZONE,
    O_NO_SERVE,
    O_MOUNT,
    O_READ_ONLY,
    O_ALLOW_OTHER,
    O_UID,
    O_GID,
    O_FILE_MODE,
    O_DIR_MODE,
    O_METADATA_TTL,
    O_NEGATIVE_TTL,
    O_UPLOAD_DELAY,
    O_DRAIN_TIMEOUT,
    O_PEER_TIMEOUT,
    O_S3_STALL_TIMEOUT,
    O_CLUSTER_KEY,
    O_STATE_DIR,
    O_CONTROL,
    O_METRICS,
    O_LOG_LEVEL,
    O_LOG_FORMAT,
    O_NO_SIGN_REQUEST,
    /* A test seam: a command-line flag only, shown neither by --help nor taken from the file. */
    O_TEST_GOSSIP_PERIOD,
    O_COUNT, /* the options above are also config file keys, but for the test seam; the ones below are not */
    O_CONFIG = O_COUNT,
    O_CHECK_CONFIG,
    O_HELP,
    O_VERSION,
    O_ALL
};

typedef struct opt_def {
    const char *name;
    const char *metavar; /* NULL: a switch without a value */
    const char *help;    /* one line, default included */
} opt_def;

static const opt_def OPTS[O_ALL] = {
    [O_NODE_ID] = {"node-id", "NAME", "unique name in the cluster (default: the host name)"},
    [O_BIND] = {"bind", "ADDR:PORT", "gossip (UDP) and peer (TCP) address (default 0.0.0.0:7400)"},
    [O_ADVERTISE] = {"advertise", "ADDR:PORT", "address other nodes dial (default: from --bind)"},
    [O_SEEDS] = {"seeds", "HOST:PORT,...", "live nodes of the cluster to join (default: none, a new cluster)"},
    [O_BUCKET] = {"bucket", "s3://B[/P]", "bucket and optional prefix to cache and mount (required)"},
    [O_ENDPOINT] = {"endpoint", "URL", "S3-compatible endpoint (default: AWS for --region)"},
    [O_PATH_STYLE] = {"path-style", NULL, "use path-style addressing"},
    [O_REGION] = {"region", "R", "signing region (default: AWS_REGION, AWS_DEFAULT_REGION, profile, us-east-1)"},
    [O_CACHE_DIR] = {"cache-dir", "DIR", "block store (default /var/cache/shoal)"},
    [O_CACHE_SIZE] = {"cache-size", "SIZE", "hard cap of the block store, K/M/G/T = powers of 1024 (default 10G)"},
    [O_CACHE_FREE_SPACE] =
        {"cache-free-space", "PERCENT",
         "share of the cache dir's file system kept free, evicting blocks to do so, 0-50 (default 5)"},
    [O_BLOCK_SIZE] = {"block-size", "SIZE", "block size, a power of two, cluster-wide (default 4M)"},
    [O_REPLICAS] = {"replicas", "N", "owners per block, 1-16 (default 1)"},
    [O_FETCH_BUFFERS] = {"fetch-buffers", "N",
                         "block buffers in memory at once, 2-4096 (default: 64 MiB of blocks, at least 4)"},
    [O_ZONE] = {"zone", "NAME", "failure domain of this node (default: none)"},
    [O_NO_SERVE] = {"no-serve", NULL, "consumer-only node: owns no blocks"},
    [O_MOUNT] = {"mount", "DIR", "mount the bucket here with FUSE (default: no mount)"},
    [O_READ_ONLY] = {"read-only", NULL, "mount read-only (writes fail with EROFS)"},
    [O_ALLOW_OTHER] =
        {"allow-other", NULL,
         "let other users than the daemon's use the mount (not root: needs user_allow_other in /etc/fuse.conf)"},
    [O_UID] = {"uid", "N", "owner shown for files and directories that store none (default: the daemon's uid)"},
    [O_GID] = {"gid", "N", "group shown for files and directories that store none (default: the daemon's gid)"},
    [O_FILE_MODE] = {"file-mode", "OCTAL", "permission bits of files that store none (default 0644)"},
    [O_DIR_MODE] = {"dir-mode", "OCTAL", "permission bits of directories that store none (default 0755)"},
    [O_METADATA_TTL] = {"metadata-ttl", "SECONDS", "how long listings and object metadata are trusted (default 60)"},
    [O_NEGATIVE_TTL] = {"negative-ttl", "SECONDS", "how long \"no such key\" is trusted (default 5)"},
    [O_UPLOAD_DELAY] =
        {"upload-delay", "SECONDS",
         "write-back: close returns once the file is durable on local disk, the upload starts after the file stayed closed this long (default 0: close uploads)"},
    [O_DRAIN_TIMEOUT] =
        {"drain-timeout", "SECONDS",
         "on SIGTERM, hand owned blocks to their next owners for at most this long, then leave (default 20; 0: leave at once)"},
    [O_PEER_TIMEOUT] = {"peer-timeout", "MS",
                        "an owner that makes no progress on a block this long is given up for the next (default 2000)"},
    [O_S3_STALL_TIMEOUT] = {"s3-stall-timeout", "SECONDS",
                            "an S3 answer that moves no byte this long is abandoned and sent again (default 5)"},
    [O_CLUSTER_KEY] = {"cluster-key", "FILE", "32-byte shared cluster secret, see `shoal keygen` (required)"},
    [O_STATE_DIR] = {"state-dir", "DIR", "node key pair and identity (default <cache-dir>/state)"},
    [O_CONTROL] = {"control", "PATH",
                   "control socket (default $XDG_RUNTIME_DIR/shoal/shoald.sock or /run/shoal/shoald.sock)"},
    [O_METRICS] = {"metrics", "ADDR:PORT|off", "Prometheus /metrics listener (default 127.0.0.1:9464)"},
    [O_LOG_LEVEL] = {"log-level", "LEVEL", "error, warn, info or debug (default info)"},
    [O_LOG_FORMAT] = {"log-format", "FORMAT", "logfmt (key=value, the default) or json (one object per line)"},
    [O_NO_SIGN_REQUEST] = {"no-sign-request", NULL, "send unsigned requests (public buckets)"},
    [O_TEST_GOSSIP_PERIOD] = {"test-gossip-period", "MS",
                              "tests: gossip timers scaled to this probe period (default 1000)"},
    [O_CONFIG] = {"config", "FILE", "read options from this INI file (flags win)"},
    [O_CHECK_CONFIG] = {"check-config", NULL,
                        "validate the flags and the config file, print the result and exit (0: valid, 2: not)"},
    [O_HELP] = {"help", NULL, "print this help and exit"},
    [O_VERSION] = {"version", NULL, "print the version and exit"},
};

/* The raw strings collected from the command line and the config file, before validation. */
typedef struct raw_opts {
    char *val[O_COUNT];
    int line[O_COUNT]; /* 0: from the command line; else the config file line */
    const char *config_path;
    int ini_line;      /* the line inih is on, counted by config_line_reader */
    int ini_error_set; /* the handler recorded an error message */
} raw_opts;

static void raw_free(raw_opts *r)
{
    for (int i = 0; i < O_COUNT; i++)
        free(r->val[i]);
}

/* Records "<where>: message", where <where> names the flag or the file, line and key. */
static int bad(const raw_opts *r, int id, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(const raw_opts *r, int id, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->line[id] > 0)
        return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "config %s:%d: %s: %s", r->config_path, r->line[id],
                               OPTS[id].name, msg);
    return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "--%s: %s", OPTS[id].name, msg);
}

static int dup_to(char **dst, const char *s)
{
    char *c = strdup(s);
    if (!c)
        return shoal_error_set(SHOAL_ERR_NOMEM, "out of memory copying an option");
    free(*dst);
    *dst = c;
    return 0;
}

/* ---- value parsers -------------------------------------------------------------------------- */

/* A percentage from 0 to 50 with at most two decimals and an optional '%' ("5", "2.5", "0.25%"),
 * in hundredths of a percent. */
static int parse_percent_bp(const char *text, unsigned *out)
{
    const char *p = text;
    unsigned v = 0, decimals = 0;
    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++)
        if ((v = v * 10 + (unsigned)(*p - '0')) > 100)
            return -1;
    v *= 100;
    if (*p == '.') {
        unsigned scale = 10;
        for (p++; isdigit((unsigned char)*p); p++, decimals++) {
            if (decimals == 2)
                return -1;
            v += (unsigned)(*p - '0') * scale;
            scale /= 10;
        }
        if (decimals == 0)
            return -1;
    }
    if (*p == '%')
        p++;
    if (*p || v > 5000)
        return -1;
    *out = v;
    return 0;
}

/* A whole number in [lo, hi]. */
static int parse_uint(const char *text, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    if (!isdigit((unsigned char)text[0]))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(text, yes[i]))
            return *out = true, 0;
        if (!strcasecmp(text, no[i]))
            return *out = false, 0;
    }
    return -1;
}

/* S3's bucket naming rules, with the legacy upper-case and '_' still allowed by S3-compatible
 * stores: 3-63 bytes of letters, digits, '.', '-', '_', starting and ending with a letter or digit. */
static bool bucket_name_ok(const char *b, size_t n)
{
    if (n < 3 || n > 63 || !isalnum((unsigned char)b[0]) || !isalnum((unsigned char)b[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (!isalnum(c) && c != '.' && c != '-' && c != '_')
            return false;
    }
    return true;
}

int node_config_parse_s3_url(const char *text, char **bucket, char **rest)
{
    if (strncmp(text, "s3://", 5) != 0)
        return shoal_error_set(SHOAL_ERR_INVAL, "'%s' is not an S3 URL (expected s3://BUCKET[/PREFIX])", text);
    const char *b = text + 5;
    const char *slash = strchr(b, '/');
    size_t n = slash ? (size_t)(slash - b) : strlen(b);
    if (!bucket_name_ok(b, n))
        return shoal_error_set(SHOAL_ERR_INVAL,
                               "'%s': '%.*s' is not a valid bucket name (3-63 letters, digits, '.', '-')",
                               text, (int)(n > 80 ? 80 : n), b);
    char *bk = strndup(b, n);
    char *rs = strdup(slash ? slash + 1 : "");
    if (!bk || !rs) {
        free(bk);
        free(rs);
        return shoal_error_set(SHOAL_ERR_NOMEM, "out of memory parsing '%s'", text);
    }
    *bucket = bk;
    *rest = rs;
    return 0;
}

static bool is_hex_key(const uint8_t *d, size_t n)
{
    if (n == 65 && d[64] == '\n')
        n = 64;
    if (n != 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit(d[i]))
            return false;
    return true;
}

int node_config_load_key(const char *path, uint8_t key[NODE_CONFIG_KEY_LEN])
{
    uint8_t data[80];
    struct stat st;
    ssize_t n;
    int rc = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "cannot open '%s': %s", path, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        shoal_error_set(SHOAL_ERR_NODE_CONFIG, "'%s' is not a regular file", path);
        goto fail_close;
    }
    n = read(fd, data, sizeof data);
    if (n < 0) {
        shoal_error_set(SHOAL_ERR_NODE_CONFIG, "cannot read '%s': %s", path, strerror(errno));
        goto fail_close;
    }
    if (n == NODE_CONFIG_KEY_LEN && !is_hex_key(data, (size_t)n)) {
        memcpy(key, data, NODE_CONFIG_KEY_LEN);
    } else if (is_hex_key(data, (size_t)n)) {
        size_t bin_len = 0;
        if (sodium_hex2bin(key, NODE_CONFIG_KEY_LEN, (const char *)data, 64, NULL, &bin_len, NULL) != 0 ||
            bin_len != NODE_CONFIG_KEY_LEN) {
            shoal_error_set(SHOAL_ERR_NODE_CONFIG, "'%s': bad hex key", path);
            goto fail_wipe;
        }
    } else {
        shoal_error_set(SHOAL_ERR_NODE_CONFIG,
                        "'%s' holds %s%zd bytes; a cluster key is exactly 32 raw bytes or 64 hex digits "
                        "(`shoal keygen -o FILE` writes one)",
                        path, n == (ssize_t)sizeof data ? "at least " : "", n);
        goto fail_wipe;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        char q[256];
        LOG_WARN("config", "cluster_key_mode", "file=%s mode=%04o hint=\"readable by group or others; chmod 600\"",
                 shoal_log_q(q, sizeof q, path), (unsigned)(st.st_mode & 07777));
    }
    rc = 0;
fail_wipe:
    sodium_memzero(data, sizeof data);
fail_close:
    close(fd);
    return rc;
}

/* ---- the config file ------------------------------------------------------------------------ */

static bool is_test_seam(int id) { return id == O_TEST_GOSSIP_PERIOD; }

static int find_key(const char *name)
{
    for (int i = 0; i < O_COUNT; i++)
        if (!is_test_seam(i) && !strcmp(OPTS[i].name, name))
            return i;
    return -1;
}

/* What inih reads from: the file, and the options whose line counter it advances. */
typedef struct config_stream {
    FILE *f;
    raw_opts *r;
} config_stream;

static char *config_line_reader(char *str, int num, void *stream)
{
    config_stream *s = stream;
    char *got = fgets(str, num, s->f);
    if (got)
        s->r->ini_line++;
    return got;
}

static int config_key_handler(void *user, const char *section, const char *name, const char *value)
{
    raw_opts *r = user;
    if (section[0] && strcmp(section, "shoald") != 0) {
        shoal_error_set(SHOAL_ERR_NODE_CONFIG, "config %s:%d: unknown section [%s] (keys go at the top or under [shoald])",
                        r->config_path, r->ini_line, section);
        goto fail;
    }
    int id = find_key(name);
    if (id < 0) {
        shoal_error_set(SHOAL_ERR_NODE_CONFIG, "config %s:%d: unknown key '%s'", r->config_path, r->ini_line, name);
        goto fail;
    }
    if (r->line[id] > 0) {
        shoal_error_set(SHOAL_ERR_NODE_CONFIG, "config %s:%d: %s: given twice (also on line %d)", r->config_path,
                        r->ini_line, name, r->line[id]);
        goto fail;
    }
    if (r->val[id] && r->line[id] == 0)
        return 1; /* the command line already set it, and wins */
    if (dup_to(&r->val[id], value) < 0)
        goto fail;
    r->line[id] = r->ini_line;
    return 1;
fail:
    r->ini_error_set = 1;
    return 0;
}

static int read_config_file(raw_opts *r, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "--config: cannot open '%s': %s", path, strerror(errno));
    config_stream s = {f, r};
    r->config_path = path;
    int rc = ini_parse_stream(config_line_reader, &s, config_key_handler, r);
    fclose(f);
    if (rc == 0)
        return 0;
    if (r->ini_error_set)
        return -1;
    if (rc == -2)
        return shoal_error_set(SHOAL_ERR_NOMEM, "--config: out of memory reading '%s'", path);
    return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "config %s:%d: syntax error (expected key = value)", path, rc);
}

/* ---- applying values ------------------------------------------------------------------------ */

static bool name_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '.' && c != '-' && c != '_')
            return false;
    }
    return true;
}

static bool addr_unspecified(const shoal_addr *a)
{
    static const uint8_t zero[16];
    return !memcmp(a->ip, zero, a->family == 4 ? 4 : 16);
}

static int apply_addr(const raw_opts *r, int id, const char *v, shoal_addr *out)
{
    if (shoal_addr_parse(v, 0, out) < 0)
        return bad(r, id, "%s", shoal_error_message());
    return 0;
}

static int apply_seeds(const raw_opts *r, const char *v, node_config *cfg)
{
    size_t n = 1;
    for (const char *p = v; *p; p++)
        n += *p == ',';
    if (!*v)
        return 0;
    cfg->seeds = calloc(n, sizeof *cfg->seeds);
    if (!cfg->seeds)
        return shoal_error_set(SHOAL_ERR_NOMEM, "out of memory for --seeds");
    shoal_cursor all = shoal_cursor_from_str(v);
    while (all.len || cfg->n_seeds < n) {
        shoal_cursor item = shoal_cursor_trim(shoal_cursor_split(&all, ','));
        char *text = shoal_cursor_strdup(item);
        if (!text)
            return shoal_error_set(SHOAL_ERR_NOMEM, "out of memory for --seeds");
        node_config_seed *s = &cfg->seeds[cfg->n_seeds++];
        char *colon = strrchr(text, ':');
        uint64_t port;
        int ok = colon && colon > text && parse_uint(colon + 1, 1, 65535, &port) == 0;
        if (ok) {
            *colon = '\0';
            char *h = text;
            size_t hl = strlen(h);
            if (h[0] == '[' && h[hl - 1] == ']') {
                h[hl - 1] = '\0';
                h++;
                struct in6_addr a6;
                ok = inet_pton(AF_INET6, h, &a6) == 1;
            } else {
                ok = name_ok(h, 253);
            }
            if (ok) {
                s->host = strdup(h);
                s->port = (uint16_t)port;
            }
        }
        if (!ok) {
            bad(r, O_SEEDS, "'%.*s' is not HOST:PORT (port 1-65535)", (int)item.len, (const char *)item.ptr);
            free(text);
            return -1;
        }
        free(text);
        if (!s->host)
            return shoal_error_set(SHOAL_ERR_NOMEM, "out of memory for --seeds");
    }
    return 0;
}

static int apply_bucket(const raw_opts *r, const char *v, node_config *cfg)
{
    char *rest = NULL;
    if (node_config_parse_s3_url(v, &cfg->bucket, &rest) < 0)
        return bad(r, O_BUCKET, "%s", shoal_error_message());
    /* "s3://b/p", "s3://b/p/" and "s3://b//p" all mean keys under "p/". */
    char *p = rest;
    while (*p == '/')
        p++;
    size_t n = strlen(p);
    while (n && p[n - 1] == '/')
        n--;
    cfg->prefix = malloc(n + 2);
    if (!cfg->prefix) {
        free(rest);
        return shoal_error_set(SHOAL_ERR_NOMEM, "out of memory for --bucket");
    }
    memcpy(cfg->prefix, p, n);
    if (n)
        cfg->prefix[n++] = '/';
    cfg->prefix[n] = '\0';
    free(rest);
    return 0;
}

static int apply_endpoint(const raw_opts *r, const char *v, node_config *cfg)
{
    const char *host = !strncmp(v, "http://", 7) ? v + 7 : !strncmp(v, "https://", 8) ? v + 8 : NULL;
    if (!host)
        return bad(r, O_ENDPOINT, "'%s' is not an http:// or https:// URL", v);
    if (!*host || *host == '/' || *host == ':')
        return bad(r, O_ENDPOINT, "'%s' has no host", v);
    for (const char *p = v; *p; p++)
        if (isspace((unsigned char)*p) || !isprint((unsigned char)*p))
            return bad(r, O_ENDPOINT, "'%s' contains white space or control bytes", v);
    if (dup_to(&cfg->endpoint, v) < 0)
        return -1;
    size_t n = strlen(cfg->endpoint);
    while (n > (size_t)(host - v) && cfg->endpoint[n - 1] == '/')
        cfg->endpoint[--n] = '\0';
    return 0;
}

static int apply_path(const raw_opts *r, int id, const char *v, char **dst)
{
    if (!*v)
        return bad(r, id, "empty path");
    return dup_to(dst, v);
}

static int apply_ttl(const raw_opts *r, int id, const char *v, uint32_t *dst)
{
    uint64_t x;
    if (parse_uint(v, 0, 31536000, &x) < 0)
        return bad(r, id, "'%s' is not a number of seconds from 0 to 31536000", v);
    *dst = (uint32_t)x;
    return 0;
}

static int apply_switch(const raw_opts *r, int id, const char *v, bool *dst)
{
    if (parse_bool(v, dst) < 0)
        return bad(r, id, "'%s' is not a boolean (true/false, yes/no, on/off, 1/0)", v);
    return 0;
}

static int apply(const raw_opts *r, int id, const char *v, node_config *cfg)
{
    uint64_t x;
    switch (id) {
    case O_NODE_ID:
        if (!name_ok(v, 64))
            return bad(r, id, "'%s' is not a node id (1-64 letters, digits, '.', '-', '_')", v);
        return dup_to(&cfg->node_id, v);
    case O_BIND:
        return apply_addr(r, id, v, &cfg->bind);
    case O_ADVERTISE:
        if (apply_addr(r, id, v, &cfg->advertise) < 0)
            return -1;
        if (addr_unspecified(&cfg->advertise))
            return bad(r, id, "'%s' is not an address other nodes can dial", v);
        return 0;
    case O_SEEDS:
        return apply_seeds(r, v, cfg);
    case O_BUCKET:
        return apply_bucket(r, v, cfg);
    case O_ENDPOINT:
        return apply_endpoint(r, v, cfg);
    case O_PATH_STYLE:
        return apply_switch(r, id, v, &cfg->path_style);
    case O_REGION: {
        bool ok = *v && strlen(v) <= 32;
        for (const char *p = v; *p; p++)
            ok = ok && (islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-');
        if (!ok)
            return bad(r, id, "'%s' is not a region name (lower-case letters, digits, '-')", v);
        return dup_to(&cfg->region, v);
    }
    case O_CACHE_DIR:
        return apply_path(r, id, v, &cfg->cache_dir);
    case O_CACHE_SIZE:
        if (shoal_parse_size(v, &cfg->cache_size) < 0)
            return bad(r, id, "%s", shoal_error_message());
        if (cfg->cache_size == 0)
            return bad(r, id, "must be more than 0");
        return 0;
    case O_CACHE_FREE_SPACE:
        if (parse_percent_bp(v, &cfg->cache_free_space_bp) < 0)
            return bad(r, id, "'%s' is not a percentage from 0 to 50 (e.g. 5, 2.5 or 0.5%%)", v);
        return 0;
    case O_BLOCK_SIZE:
        if (shoal_parse_size(v, &cfg->block_size) < 0)
            return bad(r, id, "%s", shoal_error_message());
        if (cfg->block_size < 1024 || cfg->block_size > (1u << 30) || (cfg->block_size & (cfg->block_size - 1)))
            return bad(r, id, "'%s' must be a power of two from 1K to 1G", v);
        return 0;
    case O_REPLICAS:
        if (parse_uint(v, 1, 16, &x) < 0)
            return bad(r, id, "'%s' is not a number from 1 to 16", v);
        cfg->replicas = (unsigned)x;
        return 0;
    case O_FETCH_BUFFERS:
        if (parse_uint(v, 2, 4096, &x) < 0)
            return bad(r, id, "'%s' is not a number from 2 to 4096", v);
        cfg->fetch_buffers = (unsigned)x;
        return 0;
    case O_ZONE:
        if (!name_ok(v, 64))
            return bad(r, id, "'%s' is not a zone name (1-64 letters, digits, '.', '-', '_')", v);
        return dup_to(&cfg->zone, v);
    case O_NO_SERVE:
        return apply_switch(r, id, v, &cfg->no_serve);
    case O_MOUNT:
        return apply_path(r, id, v, &cfg->mount);
    case O_READ_ONLY:
        return apply_switch(r, id, v, &cfg->read_only);
    case O_ALLOW_OTHER:
        return apply_switch(r, id, v, &cfg->allow_other);
    case O_UID:
    case O_GID:
        if (parse_uint(v, 0, 4294967294u, &x) < 0)
            return bad(r, id, "'%s' is not a numeric %s id (0-4294967294)", v, id == O_UID ? "user" : "group");
        *(id == O_UID ? &cfg->uid : &cfg->gid) = (uint32_t)x;
        *(id == O_UID ? &cfg->uid_set : &cfg->gid_set) = true;
        return 0;
    case O_FILE_MODE:
    case O_DIR_MODE: {
        char *end;
        errno = 0;
        unsigned long m = strtoul(v, &end, 8);
        if (errno || end == v || *end || m > 07777)
            return bad(r, id, "'%s' is not an octal mode from 0 to 7777", v);
        *(id == O_FILE_MODE ? &cfg->file_mode : &cfg->dir_mode) = (uint32_t)m;
        return 0;
    }
    case O_METADATA_TTL:
        return apply_ttl(r, id, v, &cfg->metadata_ttl);
    case O_NEGATIVE_TTL:
        return apply_ttl(r, id, v, &cfg->negative_ttl);
    case O_UPLOAD_DELAY:
        return apply_ttl(r, id, v, &cfg->upload_delay);
    case O_DRAIN_TIMEOUT:
        if (parse_uint(v, 0, 86400, &x) < 0)
            return bad(r, id, "'%s' is not a number of seconds from 0 to 86400", v);
        cfg->drain_timeout = (uint32_t)x;
        return 0;
    case O_PEER_TIMEOUT:
        if (parse_uint(v, 50, 600000, &x) < 0)
            return bad(r, id, "'%s' is not a number of milliseconds from 50 to 600000", v);
        cfg->peer_timeout_ms = (uint32_t)x;
        return 0;
    case O_S3_STALL_TIMEOUT:
        if (parse_uint(v, 1, 600, &x) < 0)
            return bad(r, id, "'%s' is not a number of seconds from 1 to 600", v);
        cfg->s3_stall_timeout = (uint32_t)x;
        return 0;
    case O_CLUSTER_KEY:
        if (apply_path(r, id, v, &cfg->cluster_key_file) < 0)
            return -1;
        if (node_config_load_key(v, cfg->cluster_key) < 0)
            return bad(r, id, "%s", shoal_error_message());
        return 0;
    case O_STATE_DIR:
        return apply_path(r, id, v, &cfg->state_dir);
    case O_CONTROL:
        if (strlen(v) >= sizeof(((struct sockaddr_un *)0)->sun_path))
            return bad(r, id, "'%s' is longer than a Unix socket path may be (107 bytes)", v);
        return apply_path(r, id, v, &cfg->control);
    case O_METRICS:
        if (!strcmp(v, "off")) {
            cfg->metrics_enabled = false;
            return 0;
        }
        cfg->metrics_enabled = true;
        if (shoal_addr_parse(v, 0, &cfg->metrics) < 0)
            return bad(r, id, "%s (or 'off')", shoal_error_message());
        return 0;
    case O_LOG_LEVEL:
        if (shoal_log_parse_level(v, &cfg->log_level) < 0)
            return bad(r, id, "'%s' is not a log level (error, warn, info, debug)", v);
        return 0;
    case O_LOG_FORMAT:
        if (shoal_log_parse_format(v, &cfg->log_format) < 0)
            return bad(r, id, "'%s' is not a log format (logfmt, json)", v);
        return 0;
    case O_NO_SIGN_REQUEST:
        return apply_switch(r, id, v, &cfg->no_sign_request);
    case O_TEST_GOSSIP_PERIOD:
        if (parse_uint(v, 10, 60000, &x) < 0)
            return bad(r, id, "'%s' is not a number of milliseconds from 10 to 60000", v);
        cfg->test_gossip_period_ms = (uint32_t)x;
        return 0;
    default:
        return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "option %d has no handler", id);
    }
}

/* ---- derived defaults ----------------------------------------------------------------------- */

typedef struct profile_region {
    const char *section; /* "default" or "profile NAME" */
    const char *alt;     /* "profile default" for the default profile, else NULL */
    char *region;
} profile_region;

static int profile_handler(void *user, const char *section, const char *name, const char *value)
{
    profile_region *p = user;
    if ((!strcmp(section, p->section) || (p->alt && !strcmp(section, p->alt))) && !strcmp(name, "region") &&
        !p->region)
        p->region = strdup(value);
    return 1;
}

/* AWS's own order: AWS_REGION, AWS_DEFAULT_REGION, the profile's region in AWS_CONFIG_FILE
 * (~/.aws/config), then us-east-1. A broken AWS config file is not ours to reject: it is skipped. */
static char *resolve_region(void)
{
    const char *env = getenv("AWS_REGION");
    if (!env || !*env)
        env = getenv("AWS_DEFAULT_REGION");
    if (env && *env)
        return strdup(env);
    const char *profile = getenv("AWS_PROFILE");
    if (!profile || !*profile)
        profile = "default";
    char path[4096], section[300];
    const char *file = getenv("AWS_CONFIG_FILE");
    const char *home = getenv("HOME");
    if ((!file || !*file) && home && *home) {
        snprintf(path, sizeof path, "%s/.aws/config", home);
        file = path;
    }
    if (file && *file) {
        bool is_default = !strcmp(profile, "default");
        snprintf(section, sizeof section, is_default ? "%s" : "profile %s", profile);
        profile_region p = {section, is_default ? "profile default" : NULL, NULL};
        ini_parse(file, profile_handler, &p);
        if (p.region)
            return p.region;
    }
    return strdup("us-east-1");
}

/* With --bind on the wildcard address, other nodes need a concrete one: the first address of an
 * up, non-loopback interface of the bind's family. */
static int derive_advertise(node_config *cfg)
{
    char b[SHOAL_ADDR_STRLEN];
    struct ifaddrs *ifs, *i;
    if (!addr_unspecified(&cfg->bind)) {
        cfg->advertise = cfg->bind;
        return 0;
    }
    if (getifaddrs(&ifs) < 0)
        return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "--advertise: required (listing interfaces failed: %s)",
                               strerror(errno));
    int want = cfg->bind.family == 4 ? AF_INET : AF_INET6;
    for (i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != want || (i->ifa_flags & IFF_LOOPBACK) ||
            !(i->ifa_flags & IFF_UP))
            continue;
        if (want == AF_INET6 && IN6_IS_ADDR_LINKLOCAL(&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr))
            continue;
        memset(&cfg->advertise, 0, sizeof cfg->advertise);
        cfg->advertise.port = cfg->bind.port;
        if (want == AF_INET) {
            cfg->advertise.family = 4;
            memcpy(cfg->advertise.ip, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, 4);
        } else {
            cfg->advertise.family = 6;
            memcpy(cfg->advertise.ip, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, 16);
        }
        break;
    }
    freeifaddrs(ifs);
    if (!i)
        return shoal_error_set(SHOAL_ERR_NODE_CONFIG,
                               "--advertise: required: --bind %s is the wildcard address and this host has no "
                               "non-loopback address to derive it from",
                               shoal_addr_format(&cfg->bind, b));
    return 0;
}

char *node_config_default_control(void)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    char *out = NULL;
    if (xdg && *xdg) {
        if (asprintf(&out, "%s/shoal/shoald.sock", xdg) < 0)
            return NULL;
        return out;
    }
    return strdup("/run/shoal/shoald.sock");
}

static int derive_defaults(node_config *cfg)
{
    if (!cfg->node_id) {
        char host[256] = "";
        if (gethostname(host, sizeof host - 1) < 0 || !name_ok(host, 64))
            return shoal_error_set(SHOAL_ERR_NODE_CONFIG,
                                   "--node-id: required: the host name '%s' is not a valid node id", host);
        if (dup_to(&cfg->node_id, host) < 0)
            return -1;
    }
    if (cfg->advertise.family == 0 && derive_advertise(cfg) < 0)
        return -1;
    if (!cfg->region && !(cfg->region = resolve_region()))
        return shoal_error_set(SHOAL_ERR_NOMEM, "out of memory for the region");
    if (!cfg->cache_dir && dup_to(&cfg->cache_dir, "/var/cache/shoal") < 0)
        return -1;
    if (!cfg->state_dir && asprintf(&cfg->state_dir, "%s/state", cfg->cache_dir) < 0)
        return shoal_error_set(SHOAL_ERR_NOMEM, "out of memory for the state dir");
    if (!cfg->control && !(cfg->control = node_config_default_control()))
        return shoal_error_set(SHOAL_ERR_NOMEM, "out of memory for the control path");
    if (strlen(cfg->control) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return shoal_error_set(SHOAL_ERR_NODE_CONFIG,
                               "--control: required: the default path '%s' is too long for a Unix socket",
                               cfg->control);
    return 0;
}

/* ---- the command line ----------------------------------------------------------------------- */

void node_config_usage(FILE *f)
{
    fprintf(f, "usage: shoald [--config FILE] [--bucket s3://BUCKET[/PREFIX]] [--seeds HOST:PORT,...] "
               "[--mount DIR] [options]\n\n"
               "The Shoal daemon: a peer-to-peer cooperative S3 cache. Every option may also be set in the\n"
               "--config file as `name = value` (the name without the dashes); a flag wins over the file.\n\n");
    for (int i = 0; i < O_ALL; i++) {
        if (is_test_seam(i))
            continue;
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", OPTS[i].name, OPTS[i].metavar ? " " : "",
                 OPTS[i].metavar ? OPTS[i].metavar : "");
        fprintf(f, "  %-30s %s\n", left, OPTS[i].help);
    }
}

static void base_defaults(node_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    shoal_addr_parse("0.0.0.0:7400", 0, &cfg->bind);
    shoal_addr_parse("127.0.0.1:9464", 0, &cfg->metrics);
    cfg->metrics_enabled = true;
    cfg->cache_size = 10ull << 30;
    cfg->cache_free_space_bp = 500;
    cfg->block_size = 4ull << 20;
    cfg->replicas = 1;
    cfg->metadata_ttl = 60;
    cfg->negative_ttl = 5;
    cfg->peer_timeout_ms = 2000;
    cfg->s3_stall_timeout = 5;
    cfg->drain_timeout = NODE_CONFIG_DEFAULT_DRAIN_TIMEOUT;
    cfg->file_mode = 0644;
    cfg->dir_mode = 0755;
    cfg->log_level = SHOAL_LOG_INFO;
}

/* The offending option as the user typed it, without any "=value". */
static void flag_text(const char *arg, char *out, size_t len)
{
    size_t n = strcspn(arg, "=");
    snprintf(out, len, "%.*s", (int)(n > 80 ? 80 : n), arg);
}

static int collect_cmdline(int argc, char **argv, raw_opts *r, char **config_path, int *action)
{
    struct option longopts[O_ALL + 1];
    char flag[96];
    for (int i = 0; i < O_ALL; i++)
        longopts[i] = (struct option){OPTS[i].name, OPTS[i].metavar ? required_argument : no_argument, NULL, 1000 + i};
    longopts[O_ALL] = (struct option){0, 0, 0, 0};
    optind = 0; /* glibc: 0 re-initializes, so tests may parse many command lines in one process */
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, ":h", longopts, NULL);
        if (c == -1)
            break;
        if (c == 'h') {
            *action = O_HELP;
            continue;
        }
        if (c == '?' || c == ':') {
            flag_text(optopt && optopt < 1000 ? (char[]){'-', (char)optopt, 0} : argv[optind - 1], flag, sizeof flag);
            if (c == ':')
                return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "%s: missing value", flag);
            if (optopt >= 1000)
                return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "%s: takes no value", flag);
            return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "%s: unknown option (see --help)", flag);
        }
        int id = c - 1000;
        if (id == O_HELP || id == O_VERSION) {
            *action = id;
        } else if (id == O_CHECK_CONFIG) {
            if (*action == 0)
                *action = id;
        } else if (id == O_CONFIG) {
            if (dup_to(config_path, optarg) < 0)
                return -1;
        } else if (dup_to(&r->val[id], OPTS[id].metavar ? optarg : "true") < 0) {
            return -1;
        }
    }
    if (optind < argc)
        return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "unexpected argument '%s' (see --help)", argv[optind]);
    return 0;
}

int node_config_parse(int argc, char **argv, node_config *cfg)
{
    raw_opts r;
    char *config_path = NULL;
    int action = 0;
    memset(&r, 0, sizeof r);
    base_defaults(cfg);
    if (collect_cmdline(argc, argv, &r, &config_path, &action) < 0)
        goto fail;
    if (action == O_HELP || action == O_VERSION) {
        if (action == O_HELP)
            node_config_usage(stdout);
        else
            printf("shoald %s\n", SHOAL_VERSION);
        fflush(stdout);
        raw_free(&r);
        free(config_path);
        return 1;
    }
    if (config_path && read_config_file(&r, config_path) < 0)
        goto fail;
    cfg->config_file = config_path;
    config_path = NULL;
    for (int id = 0; id < O_COUNT; id++)
        if (r.val[id] && apply(&r, id, r.val[id], cfg) < 0)
            goto fail;
    if (!cfg->bucket) {
        shoal_error_set(SHOAL_ERR_NODE_CONFIG, "--bucket: required (s3://BUCKET[/PREFIX])");
        goto fail;
    }
    if (!cfg->cluster_key_file) {
        shoal_error_set(SHOAL_ERR_NODE_CONFIG, "--cluster-key: required (create one with `shoal keygen -o FILE`)");
        goto fail;
    }
    if (cfg->cache_size < cfg->block_size) {
        bad(&r, O_CACHE_SIZE, "%llu bytes is smaller than one block (--block-size %llu)",
            (unsigned long long)cfg->cache_size, (unsigned long long)cfg->block_size);
        goto fail;
    }
    if (derive_defaults(cfg) < 0)
        goto fail;
    raw_free(&r);
    if (action == O_CHECK_CONFIG) {
        if (cfg->config_file)
            printf("shoald: configuration OK (flags and %s)\n", cfg->config_file);
        else
            printf("shoald: configuration OK (flags)\n");
        fflush(stdout);
        node_config_destroy(cfg);
        return 1;
    }
    if (!(cfg->argv = calloc((size_t)argc + 1, sizeof *cfg->argv))) {
        shoal_error_set(SHOAL_ERR_NOMEM, "out of memory");
        goto fail_cfg;
    }
    for (cfg->argc = 0; cfg->argc < argc; cfg->argc++)
        if (!(cfg->argv[cfg->argc] = strdup(argv[cfg->argc]))) {
            shoal_error_set(SHOAL_ERR_NOMEM, "out of memory");
            goto fail_cfg;
        }
    return 0;
fail:
    raw_free(&r);
    free(config_path);
fail_cfg:
    node_config_destroy(cfg);
    return -1;
}

int node_config_reload(const node_config *cur, node_config *out)
{
    /* getopt permutes the array it is given: hand it a copy of the pointers */
    char **argv = calloc((size_t)cur->argc + 1, sizeof *argv);
    if (!argv)
        return shoal_error_set(SHOAL_ERR_NOMEM, "out of memory");
    memcpy(argv, cur->argv, (size_t)cur->argc * sizeof *argv);
    memset(out, 0, sizeof *out);
    int rc = node_config_parse(cur->argc, argv, out);
    free(argv);
    if (rc == 1) /* --help, --version or --check-config: a command line shoald never runs with */
        return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "the command line does not start a daemon");
    return rc;
}

void node_config_destroy(node_config *cfg)
{
    for (size_t i = 0; i < cfg->n_seeds; i++)
        free(cfg->seeds[i].host);
    free(cfg->seeds);
    free(cfg->node_id);
    free(cfg->bucket);
    free(cfg->prefix);
    free(cfg->endpoint);
    free(cfg->region);
    free(cfg->cache_dir);
    free(cfg->zone);
    free(cfg->mount);
    free(cfg->cluster_key_file);
    free(cfg->state_dir);
    free(cfg->control);
    free(cfg->config_file);
    for (int i = 0; cfg->argv && i < cfg->argc; i++)
        free(cfg->argv[i]);
    free(cfg->argv);
    sodium_memzero(cfg, sizeof *cfg);
}

void node_config_fail(const char *prog)
{
    fprintf(stderr, "%s: %s\n", prog, shoal_error_message());
    exit(2);
}
