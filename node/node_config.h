/*
 * node_config: shoald's options (SPEC §2) from the command line and an INI file, validated.
 *
 * Every option is a long flag (`--cache-size 10G`) and, under the same name without the dashes, a
 * config file key (`cache-size = 10G`); a flag on the command line wins over the file. Unknown
 * flags and unknown keys are errors. Every value is checked here, once, so the rest of the daemon
 * gets typed, valid values; an error is one line naming the flag (or the file and key) and the
 * problem, which main() prints before exiting with status 2 (node_config_fail).
 */
#ifndef NODE_CONFIG_H
#define NODE_CONFIG_H

#include "shoal_env.h"
#include "shoal_log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define NODE_CONFIG_KEY_LEN 32
#define NODE_CONFIG_DEFAULT_PORT 7400
#define NODE_CONFIG_DEFAULT_METRICS_PORT 9464
/* Seconds a SIGTERM drains for: inside Kubernetes' default 30 s grace period with room for the
 * leave, the uploads in flight and the unmount (docs/configuration.md says why). */
#define NODE_CONFIG_DEFAULT_DRAIN_TIMEOUT 20

/* One --seeds entry: a host name or numeric address (resolved by the daemon) and a port. */
typedef struct node_config_seed {
    char *host;
    uint16_t port;
} node_config_seed;

typedef struct node_config {
    char *node_id;             /* --node-id (default: the host name) */
    shoal_addr bind;           /* --bind (default 0.0.0.0:7400) */
    shoal_addr advertise;      /* --advertise (default: derived from --bind, see docs) */
    node_config_seed *seeds;   /* --seeds, n_seeds entries (none: start a new cluster) */
    size_t n_seeds;
    char *bucket;              /* --bucket s3://B[/P]: the bucket name B */
    char *prefix;              /* ... and the prefix "P/" ("" when none); keys are prefix + path */
    char *endpoint;            /* --endpoint URL, NULL for AWS's endpoint of the region */
    bool path_style;           /* --path-style */
    char *region;              /* --region, or from the environment / profile; never NULL */
    char *cache_dir;           /* --cache-dir (default /var/cache/shoal) */
    uint64_t cache_size;       /* --cache-size in bytes (default 10G) */
    unsigned cache_free_space_bp; /* --cache-free-space, hundredths of a percent, 0-5000 (default 500) */
    uint64_t block_size;       /* --block-size in bytes, a power of two (default 4M) */
    unsigned replicas;         /* --replicas (default 1) */
    unsigned fetch_buffers; /* --fetch-buffers; 0: the default, max(4, 64 MiB / block_size) */
    char *zone;                /* --zone, NULL when none */
    bool no_serve;             /* --no-serve */
    char *mount;               /* --mount DIR, NULL when none */
    bool read_only;            /* --read-only */
    bool allow_other;          /* --allow-other: other users may use the mount */
    bool uid_set, gid_set;     /* --uid / --gid given */
    uint32_t uid, gid;         /* owner and group shown for what carries none (default: the daemon's) */
    uint32_t file_mode;        /* --file-mode: permission bits of files that carry none (default 0644) */
    uint32_t dir_mode;         /* --dir-mode: of directories (default 0755) */
    uint32_t metadata_ttl;     /* --metadata-ttl seconds (default 60) */
    uint32_t negative_ttl;     /* --negative-ttl seconds (default 5) */
    uint32_t upload_delay;     /* --upload-delay seconds (default 0: close uploads); not in SPEC §2 */
    uint32_t peer_timeout_ms;  /* --peer-timeout: an owner idle on a block this long is given up (default 2000) */
    uint32_t s3_stall_timeout; /* --s3-stall-timeout seconds: an S3 answer silent this long is resent (default 5) */
    uint32_t drain_timeout;    /* --drain-timeout seconds: how long SIGTERM drains (0: not at all) */
    char *cluster_key_file;    /* --cluster-key FILE (required) */
    uint8_t cluster_key[NODE_CONFIG_KEY_LEN]; /* its contents */
    char *state_dir;           /* --state-dir (default <cache-dir>/state) */
    char *control;             /* --control socket path (default: node_config_default_control) */
    bool metrics_enabled;      /* false for --metrics off */
    shoal_addr metrics;        /* --metrics (default 127.0.0.1:9464) */
    shoal_log_level log_level; /* --log-level (default info) */
    shoal_log_format log_format; /* --log-format (default logfmt) */
    bool no_sign_request;      /* --no-sign-request */
    char *config_file;         /* --config FILE, NULL when none */
    char **argv;               /* the command line parsed (copied, NULL-terminated), for a reload */
    int argc;
    /* A test seam (command line only, not in --help): */
    uint32_t test_gossip_period_ms; /* --test-gossip-period MS: gossip timers scaled to it (0: defaults) */
} node_config;

/* Parses shoald's command line (and the --config file it names) into *cfg, which the caller owns
 * and releases with node_config_destroy. Returns 0 when cfg is ready; 1 when --help or
 * --version was printed to stdout, or when --check-config found everything valid and said so on
 * stdout (cfg holds nothing; exit 0); -1 with SHOAL_ERR_NODE_CONFIG and
 * a one-line message naming the flag or key and the problem (cfg holds nothing). Reentrant
 * enough for tests: it resets getopt's state on entry; argv may be permuted. */
int node_config_parse(int argc, char **argv, node_config *cfg);

/* Parses the command line `cur` was made from again, with its --config file as it is now, into
 * *out (as node_config_parse: the flags still win over the file): what SIGHUP applies. 0, or -1
 * with the message of node_config_parse (out holds nothing). */
int node_config_reload(const node_config *cur, node_config *out);

/* Frees everything cfg owns and wipes the key; accepts a zeroed or already destroyed cfg. */
void node_config_destroy(node_config *cfg);

/* Prints "<prog>: <last error message>" on one line to stderr and exits with status 2: the one
 * way every main reports a bad flag or value. */
void node_config_fail(const char *prog) __attribute__((noreturn));

/* Prints shoald's usage (every option with its default) to f. */
void node_config_usage(FILE *f);

/* The default control socket path: $XDG_RUNTIME_DIR/shoal/shoald.sock when XDG_RUNTIME_DIR is
 * set and non-empty, else /run/shoal/shoald.sock. Returns a heap string (free it); NULL on NOMEM. */
char *node_config_default_control(void);

/* Splits an S3 URL "s3://BUCKET[/REST]" into a heap bucket name and a heap rest ("" when none);
 * the bucket name is checked against S3's naming rules. -1 with SHOAL_ERR_INVAL and a message
 * quoting the text otherwise (*bucket and *rest untouched). */
int node_config_parse_s3_url(const char *text, char **bucket, char **rest);

/* Reads a cluster key file: exactly 32 raw bytes, or 64 hex digits with an optional trailing
 * newline. Logs a warning when the file is readable by group or others. -1 with a message
 * naming the file and the problem. */
int node_config_load_key(const char *path, uint8_t key[NODE_CONFIG_KEY_LEN]);

#endif
