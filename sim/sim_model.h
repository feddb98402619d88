/*
 * sim_model: the cluster model behind shoal-sim. N real gossip instances (gossip/) run over the
 * virtual-time harness (sim_world, sim_cluster); every second of virtual time the model groups the
 * nodes by the membership view each one holds, builds the real placement (dht/) from each distinct
 * view, and pushes that second's block reads of the training workload through three systems side
 * by side: Shoal (cluster-wide cache, owners from the reader's own view), independent per-node
 * caches (what s3fs or rclone give) and no cache at all. S3 is a model: latency, a per-prefix
 * request-rate limit that answers 503 above it, and prices. Churn (kill, restart, join, stall,
 * partition) acts on the real gossip instances.
 *
 * docs/simulator.md explains the model and its assumptions. Everything is a function of the
 * configuration and the seed: the same inputs give the same result, bit for bit.
 */
#ifndef SHOAL_SIM_MODEL_H
#define SHOAL_SIM_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim_lru.h"

/* A distribution of a positive quantity (seconds or bytes). */
typedef enum sim_dist_kind {
    SIM_DIST_FIXED,     /* always a */
    SIM_DIST_UNIFORM,   /* uniform in [a, b] */
    SIM_DIST_LOGNORMAL, /* median a, log-space sigma b */
} sim_dist_kind;

typedef struct sim_dist {
    sim_dist_kind kind;
    double a, b;
} sim_dist;

/* The three systems compared in one run. */
enum { SIM_SHOAL = 0, SIM_INDEP = 1, SIM_NOCACHE = 2, SIM_SYSTEMS = 3 };

typedef struct sim_workload {
    uint32_t files;            /* objects in the dataset */
    sim_dist file_size;        /* bytes */
    uint32_t block_size;       /* bytes */
    uint32_t epochs;
    double start_s;            /* first epoch starts here (after the initial join) */
    double epoch_s;            /* length of one epoch; 0: (duration - start) / epochs */
    bool full;                 /* every node reads the whole dataset (else: its shard) */
    bool same_order;           /* with full: every node reads one shared order (else its own shuffle) */
    uint64_t cache_bytes;      /* per node, Shoal and the independent caches alike */
    uint32_t replicas;         /* R */
    uint32_t zones;            /* nodes are spread round-robin over this many zones */
    uint32_t prefixes;         /* objects are spread round-robin over this many S3 prefixes */
    double checkpoint_s;       /* 0: no checkpoints */
    uint64_t checkpoint_bytes; /* whole checkpoint, written in equal parts by every reading node */
    char sizes_path[256];      /* when set: one object size in bytes per line; overrides files and file-size */
    unsigned near_percent;     /* share of a node's cache near copies may use (shoald's default 10) */
    double consume_bps;        /* bytes per second one node's job consumes; 0: paced by epoch-time */
} sim_workload;

typedef enum sim_churn_kind {
    SIM_CHURN_KILL,
    SIM_CHURN_RESTART,
    SIM_CHURN_JOIN,
    SIM_CHURN_STALL,
    SIM_CHURN_PARTITION,
} sim_churn_kind;

#define SIM_CHURN_EVENTS_MAX 64

typedef struct sim_churn_event {
    double at;      /* seconds */
    sim_churn_kind kind;
    uint32_t count; /* nodes (kill, restart, join, stall) */
    double for_s;   /* stall and partition length */
} sim_churn_event;

typedef struct sim_churn {
    sim_churn_event ev[SIM_CHURN_EVENTS_MAX];
    size_t n;
    double kill_rate;     /* kills per node per hour (Poisson) */
    double join_rate;     /* joins per hour, cluster-wide */
    double stall_rate;    /* stalls per node per hour */
    double preempt_rate;  /* spot preemptions per node per hour: the node dies and a fresh one (new id,
                             empty cache) joins in its place */
    double restart_after; /* a killed node restarts after this many seconds; 0: never */
    double stall_s;       /* length of a rate-driven stall */
    double from_s;        /* rate-driven churn starts here */
} sim_churn;

typedef struct sim_config {
    uint32_t nodes;
    uint64_t seed;
    double duration_s;
    double loss;             /* packet loss on every link */
    sim_dist latency;        /* one-way link latency, seconds */
    double bandwidth_bps;    /* per-node bandwidth for block transfers, bytes per second */
    sim_dist s3_latency;     /* S3 time to first byte, seconds */
    double s3_throughput;    /* bytes per second of one S3 GET once it streams */
    double s3_rate;          /* GETs per second per prefix before S3 answers 503 */
    double egress_price;     /* USD per GiB leaving S3 */
    double get_price;        /* USD per 1,000 GETs (and HEADs) */
    double put_price;        /* USD per 1,000 PUTs (and LISTs) */
    double xzone_price;      /* USD per GiB of peer traffic between zones (each way counted once) */
    char prices[32];         /* the preset the prices came from ("" when set by hand) */
    double epochs_per_day;   /* for the $/month projection */
    double peer_timeout_s;   /* a reader waits this long for a silent owner (shoald --peer-timeout) */
    double metadata_ttl_s;   /* object metadata is trusted this long (shoald --metadata-ttl) */
    bool access_get;         /* objects are read with `shoal get` (a HEAD per object); else the mount */
    sim_policy eviction;     /* Shoal's store and the independent caches alike */
    uint32_t s3_conns;       /* S3 connections one node keeps busy (throughput model) */
    uint32_t baseline_sample; /* nodes whose independent caches are simulated; 0: all */
    bool join_bootstrap;      /* start by having every node join through node 0 (else: converged) */
    double push_pull_s;       /* gossip's push-pull base interval; 0: gossip's default (30 s) */
    bool private_views;       /* every node's gossip view kept whole and apart (no shared base): the
                                 reference the shared member store is checked against; memory N^2 */
    sim_workload wl;
    sim_churn churn;
} sim_config;

/* Fills every field with the documented default (docs/simulator.md). */
void sim_config_defaults(sim_config *c);
/* Sets the prices of a preset: "aws-same-region", "aws-cross-region" or "internet". -1 with
 * SHOAL_ERR_INVAL naming an unknown one. */
int sim_set_prices(sim_config *c, const char *preset);


/* Parsers for the flag values; each returns 0, or -1 with SHOAL_ERR_INVAL and a message naming the
 * offending text. Sizes follow common/shoal_size.h (K/M/G/T and KiB..TiB are powers of 1024,
 * KB/MB/GB/TB powers of 1000); times take s (default), ms, us, m, h. */
int sim_parse_size(const char *text, uint64_t *out);
int sim_parse_seconds(const char *text, double *out);
/* "fixed:X", "uniform:X:Y" or "lognormal:MEDIAN:SIGMA"; X and Y are times when `time` is true,
 * sizes otherwise. A bare value means fixed. */
int sim_parse_dist(const char *text, bool time, sim_dist *out);
/* "key=value,..." over the workload fields (docs/simulator.md lists the keys); updates `w`. */
int sim_parse_workload(const char *text, sim_workload *w);
/* "kill@T[:K],restart@T[:K],join@T[:K],stall@T[:K][+D],partition@T+D,kill-rate=R,..." */
int sim_parse_churn(const char *text, sim_churn *c);

/* Draws one value of `d` from the splitmix64 stream `rng`. */
double sim_dist_sample(const sim_dist *d, uint64_t *rng);

/* Per system, per epoch. */
typedef struct sim_sys_stats {
    uint64_t reads, local_hits, peer_hits, s3_gets, s3_503, fallbacks, puts;
    uint64_t read_bytes, s3_bytes, peer_bytes;
    uint64_t s3_heads, s3_lists; /* metadata requests (billed like GETs and PUTs) */
    uint64_t near_hits;          /* local hits on a near copy (Shoal) */
    uint64_t xzone_bytes;        /* peer bytes that crossed zones (Shoal) */
    uint64_t handoff_hits;       /* blocks an owner got from another ranked member instead of S3 (Shoal) */
} sim_sys_stats;

/* What limits an epoch in the throughput model. */
typedef enum sim_limit {
    SIM_LIMIT_PACE,     /* nothing: the job's own pace */
    SIM_LIMIT_NIC,      /* a node's network interface (in or out; an owner serving peers) */
    SIM_LIMIT_S3_CONNS, /* a node's S3 connections times their throughput */
    SIM_LIMIT_S3_RATE,  /* S3's per-prefix request rate */
} sim_limit;

/* The throughput model of one epoch and system (docs/simulator.md, "Epoch time and stalls"). */
typedef struct sim_pace {
    double wall_s;  /* how long the epoch takes: the slowest of the pace and every resource */
    double stall;   /* fraction of wall_s the GPUs wait for data: 1 - pace / wall */
    sim_limit limit;
    double limit_s[4]; /* time each resource needs (indexed by sim_limit) */
} sim_pace;

typedef struct sim_epoch_stats {
    double start_s, end_s;
    uint64_t unique_blocks, unique_bytes;
    sim_sys_stats sys[SIM_SYSTEMS];
    sim_pace pace[SIM_SYSTEMS];
} sim_epoch_stats;

/* The throughput model on one epoch's demands (exposed for its hand-computed test): `pace_s` the
 * epoch length the job asks for; per node the bytes it takes in (S3 and peers), sends to peers and
 * fetches from S3; per prefix the S3 requests. */
typedef struct sim_pace_input {
    double pace_s, nic_bps, s3_conn_bps, s3_rate;
    uint32_t s3_conns;
    size_t nodes, prefixes;
    const double *in_bytes, *out_bytes, *s3_bytes; /* per node */
    const double *prefix_requests;                 /* per prefix */
} sim_pace_input;
sim_pace sim_pace_compute(const sim_pace_input *in);

/* One second of the run. */
typedef struct sim_tick {
    uint32_t t;        /* end of the second */
    uint32_t running;  /* nodes up (not killed) */
    double seen_mean;  /* live members each running node sees, mean */
    uint32_t seen_min, seen_max;
    uint32_t views;    /* distinct membership views among running nodes */
    uint32_t suspicions, false_suspicions, false_deaths, detections;
    uint64_t packets;  /* gossip datagrams sent in this second */
    uint64_t reads[SIM_SYSTEMS], hits[SIM_SYSTEMS], s3_gets[SIM_SYSTEMS], s3_503[SIM_SYSTEMS];
    uint64_t moved_blocks, moved_bytes;
    double usd[SIM_SYSTEMS]; /* cumulative cost of the run up to the end of this second */
} sim_tick;

/* A churn event as it happened (for the plots' marks). */
typedef struct sim_event {
    double at;
    const char *what; /* "kill", "restart", "join", "stall", "partition", "preempt" (static) */
    uint32_t count;
} sim_event;

/* One failed (killed) node and when the cluster learnt of it. Times are seconds; -1: never. */
typedef struct sim_victim {
    uint32_t node;
    double killed, first_probe, first_suspect, first_dead, all_dead;
    uint32_t probe_periods; /* SWIM's count: index of the first period in which it was probed */
} sim_victim;

/* Read latency histogram: bucket i holds latencies in [SIM_LAT_BASE_US * 1.25^i, ...*1.25^(i+1)). */
#define SIM_LAT_BUCKETS 80
#define SIM_LAT_BASE_US 10.0

typedef struct sim_result {
    uint64_t blocks, dataset_bytes;
    uint32_t files;
    uint32_t nodes_total; /* initial nodes plus joined ones */
    const sim_tick *ticks;
    size_t n_ticks;
    const sim_epoch_stats *epochs;
    size_t n_epochs;
    const sim_victim *victims;
    size_t n_victims;
    const sim_event *events;
    size_t n_events;
    uint64_t latency[SIM_SYSTEMS][SIM_LAT_BUCKETS];
    uint64_t ckpt_puts, ckpt_bytes;
    uint64_t join_moves, join_moved_blocks; /* majority-view changes that only added members */
    uint64_t join_ideal_milli;             /* sum over those of 1000 * R * blocks / (n + 1) */
    uint64_t packets_total;
    double node_seconds;    /* running-node seconds, for per-node rates */
    uint64_t packets_steady; /* the same two from the workload's start on (after the initial join) */
    double node_seconds_steady;
    uint64_t views_built, owner_lookups;
    double probe_interval_s;
    double epoch_s;       /* the epoch length the job asks for */
    uint64_t preemptions; /* spot nodes replaced */
} sim_result;

typedef struct sim_model sim_model;

/* Dollars of one epoch's counters at the configuration's prices: GETs and HEADs at the GET price,
 * PUTs and LISTs at the PUT price, S3 egress, and peer bytes between zones at the cross-zone price.
 * 503 answers are not billed. */
double sim_dollars(const sim_config *c, const sim_sys_stats *st);

/* Bytes a run of `cfg` needs, roughly. Every node's membership view holds every node (SWIM keeps
 * full membership). With the shared member store (the default with --bootstrap preload) the views
 * share one base table and each node costs SIM_NODE_BYTES plus the model's view bitset (N/8 bytes),
 * plus SIM_MEMBER_BYTES per node for every member a crash or join makes the views disagree on. With
 * --private-views or --bootstrap join (views built by joins differ in when each node learned each
 * member, so they never fold) it is SIM_MEMBER_BYTES per member per view: N^2. shoal-sim refuses a
 * run that would not fit. */
#define SIM_MEMBER_BYTES 80
#define SIM_NODE_BYTES 40000
uint64_t sim_model_memory_estimate(const sim_config *cfg);

/* Runs the whole simulation described by `cfg` (copied). NULL with the error set (NOMEM, INVAL for
 * an impossible configuration, or the gossip/dht error that stopped it). */
sim_model *sim_model_run(const sim_config *cfg);
/* Frees the model and its results. Accepts NULL. */
void sim_model_delete(sim_model *m);
/* The results, valid until sim_model_delete. */
const sim_result *sim_model_result(const sim_model *m);
/* The configuration the run used (a copy), valid until sim_model_delete. */
const sim_config *sim_model_config(const sim_model *m);

#endif
