/*
 * A harness for tests with real daemons: the built shoald, started with fork/exec on loopback
 * addresses of its own (127.A.B.n, A.B derived from the test's pid so parallel tests never share
 * an address), against the real local S3 server (tests/support/s3rver.h).
 *
 * Every daemon dies with the test: the child asks the kernel for SIGKILL when the test process
 * ends (PR_SET_PDEATHSIG), and an atexit handler kills what is left. When a test fails, the
 * handler prints the tail of each daemon's log, so the failure comes with the daemons' side.
 */
#ifndef TEST_DAEMON_HARNESS_H
#define TEST_DAEMON_HARNESS_H

#include "s3rver.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TD_MAX_NODES 8
#define TD_BUCKET "shoal-test"

typedef struct td_node {
    pid_t pid;            /* 0 when not running */
    int exit_status;      /* wait status of the last run that ended (td_node_wait) */
    char id[32];
    char ip[32];          /* 127.A.B.n */
    char dir[256];        /* the node's own directory (cache, state, log, control socket) */
    char control[300];
    char log[300];
    char netns[64];       /* a network namespace file to start the daemon in ("": the test's own) */
} td_node;

typedef struct td_cluster {
    tt_s3rver s3;
    char *dir;
    char key[300];        /* cluster key file */
    uint8_t net[2];       /* A.B of 127.A.B.n */
    uint16_t port;        /* gossip + peer port of every node */
    const char *block_size;
    td_node nodes[TD_MAX_NODES];
    int n;
    const char *endpoint; /* where nodes started from now on reach S3; NULL: the server itself */
    bool endpoint_in_env; /* pass it as AWS_ENDPOINT_URL_S3 instead of --endpoint */
} td_cluster;

/* Starts the S3 server (bucket TD_BUCKET) and prepares `n` node slots and a cluster key. Skips the
 * test (exit 77) when the S3 server cannot run. block_size e.g. "1M". The cluster lives until the
 * test process exits (the exit handler stops it), one per process. */
td_cluster *td_cluster_new(int n, const char *block_size);

/* Starts node i (its directory is kept across restarts) with the common flags, the seed node 0
 * (except for node 0 itself) and `extra` flags (NULL-terminated, may be NULL). With --config in
 * `extra`, the log level is the file's (no --log-level flag is given). */
void td_node_start(td_cluster *c, int i, const char *const *extra);

/* Waits until node i's status lists `alive` members as alive (including itself), up to timeout_ms.
 * Returns true when it did. */
bool td_wait_alive(td_cluster *c, int i, int alive, int timeout_ms);
/* td_wait_alive on every running node for the number of running nodes; fails the test otherwise. */
void td_wait_cluster(td_cluster *c, int timeout_ms);

/* The state of member `id` in node i's status ("alive", "left", ...) into out; "" when absent. */
void td_member_state(td_cluster *c, int i, const char *id, char *out, size_t out_len);
/* Number of members node i's status lists (any state). */
int td_member_count(td_cluster *c, int i);
/* Waits up to timeout_ms for member `id` to be in `state` in node i's view ("" for absent); true
 * when it is. */
bool td_wait_state(td_cluster *c, int i, const char *id, const char *state, int timeout_ms);

/* Sends a signal to node i. */
void td_node_signal(td_cluster *c, int i, int sig);
/* Waits for node i to exit (up to timeout_ms; fails the test otherwise) and returns the wait status. */
int td_node_wait(td_cluster *c, int i, int timeout_ms);

/* An S3 client of the test's server (path-style, the server's keys from the environment); the
 * caller deletes it with s3_client_delete. Fails the test when it cannot be made. */
struct s3_client *td_s3_client(td_cluster *c);
/* Uploads object `key` of `size` bytes whose content is generated from `seed`. */
void td_put(td_cluster *c, const char *key, size_t size, uint32_t seed);
/* The generated content of (size, seed) (free it). */
uint8_t *td_content(size_t size, uint32_t seed);

/* Reads s3://TD_BUCKET/key through node i (node_control_get); returns the bytes (free them) and
 * their length in *len, or NULL with the control error in the shoal_error. */
uint8_t *td_get(td_cluster *c, int i, const char *key, size_t *len);
/* td_get of the bytes [offset, offset + length) (node_control_get_range). */
uint8_t *td_get_range(td_cluster *c, int i, const char *key, uint64_t offset, uint64_t length, size_t *len);
/* Sends one request line (without its newline) to node i's control socket and returns the whole
 * answer, header and body, as a string (free it); fails the test when the socket is unreachable. */
char *td_control_raw(td_cluster *c, int i, const char *request);
/* td_get and compares with the generated content; fails the test on a mismatch or error. */
void td_get_check(td_cluster *c, int i, const char *key, size_t size, uint32_t seed);

/* Runs fn(c, i) for every running node i, each on a thread of its own, all at once; returns when
 * every call returned. */
void td_each_running_node(td_cluster *c, void (*fn)(td_cluster *c, int i));
/* The same for every running node but node `skip` (one that is stopped, say). */
void td_each_node_but(td_cluster *c, int skip, void (*fn)(td_cluster *c, int i));

/* Counter `name` of node i's `shoal stats` (e.g. "reads.peer"); fails the test when unreachable. */
uint64_t td_stat(td_cluster *c, int i, const char *name);

/* Path of the built programs. */
const char *td_shoald(void);
const char *td_shoal(void);

/* Waits up to timeout_ms for node i's log to hold a line containing `what`; true when it does. */
bool td_wait_log(td_cluster *c, int i, const char *what, int timeout_ms);
/* Lines of node i's log that match `pattern`, a basic regular expression as grep takes (0 when
 * there is no log yet). */
int td_log_count(td_cluster *c, int i, const char *pattern);

/* Marks the test as passed: the exit handler then removes the directories and prints no logs. */
void td_pass(td_cluster *c);

/* Milliseconds on the monotonic clock. */
uint64_t td_now_ms(void);
void td_sleep_ms(unsigned ms);

#endif
