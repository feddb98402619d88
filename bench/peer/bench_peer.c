/*
 * bench_peer: block-fetch throughput of the peer transport against raw libzmq, in one run.
 *
 *   bench_peer [--blocks N] [--rounds R] [--window W]
 *
 * Every figure is bytes of 4 MiB payload per second, moved over loopback TCP between two ZeroMQ
 * contexts in this process (as between two daemons: each context has its own I/O threads):
 *
 *   raw NULL     PUSH -> PULL, no security, zero-copy sends of one 4 MiB buffer
 *   raw CURVE    the same with CURVE: the ceiling any CURVE transport can reach here
 *   peer CURVE   node_peer: a client keeps W GET requests in flight per peer, servers answer
 *                each with the 4 MiB block from memory (zero-copy), through the full path
 *                (ZAP-admitted CURVE, msgpack headers, request ids, timeouts, callbacks)
 *
 * with 1, 2 and 4 serving peers and 1 or 2 ZeroMQ I/O threads per context. Each figure is the
 * best of R rounds, the rounds of all configurations interleaved so a busy neighbour on the
 * machine slows all of them alike. Prints a table and the ratios; the one the project tracks is
 * peer CURVE / raw CURVE (target >= 0.8).
 */
#include "node_peer.h"
#include "shoal_env.h"
#include "shoal_error.h"
#include "shoal_log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define BLOCK_SIZE (4u << 20)
#define MAX_PEERS 4

static uint8_t *block_data; /* the one block every server sends, never freed before exit */

static void no_free(void *data, void *hint)
{
    (void)data, (void)hint;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_peer: %s: %s (%s)\n", what, shoal_error_message(), zmq_strerror(zmq_errno()));
    exit(1);
}

typedef struct keys {
    uint8_t pub[32], sec[32];
} keys;

static keys keygen(void)
{
    char zp[41], zs[41];
    keys k;
    if (zmq_curve_keypair(zp, zs) != 0)
        die("zmq_curve_keypair");
    zmq_z85_decode(k.pub, zp);
    zmq_z85_decode(k.sec, zs);
    return k;
}

/* ---- raw libzmq ---------------------------------------------------------------------------- */

typedef struct raw_sender {
    void *sock;
    size_t blocks;
} raw_sender;

static void *raw_send_main(void *arg)
{
    raw_sender *s = arg;
    for (size_t i = 0; i < s->blocks; i++) {
        zmq_msg_t m;
        zmq_msg_init_data(&m, block_data, BLOCK_SIZE, no_free, NULL);
        if (zmq_msg_send(&m, s->sock, 0) < 0)
            die("raw send");
    }
    return NULL;
}

static void sock_opts(void *s, int hwm)
{
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
}

/* Bytes per second from a PUSH socket (CURVE server when `curve`) to a PULL socket. */
static double raw_run(bool curve, int io_threads, size_t blocks, int window)
{
    void *ctx_s = zmq_ctx_new(), *ctx_r = zmq_ctx_new();
    zmq_ctx_set(ctx_s, ZMQ_IO_THREADS, io_threads);
    zmq_ctx_set(ctx_r, ZMQ_IO_THREADS, io_threads);
    void *push = zmq_socket(ctx_s, ZMQ_PUSH), *pull = zmq_socket(ctx_r, ZMQ_PULL);
    sock_opts(push, window);
    sock_opts(pull, window);
    if (curve) {
        keys server = keygen(), client = keygen();
        int one = 1;
        zmq_setsockopt(push, ZMQ_CURVE_SERVER, &one, sizeof one);
        zmq_setsockopt(push, ZMQ_CURVE_SECRETKEY, server.sec, 32);
        zmq_setsockopt(pull, ZMQ_CURVE_SERVERKEY, server.pub, 32);
        zmq_setsockopt(pull, ZMQ_CURVE_PUBLICKEY, client.pub, 32);
        zmq_setsockopt(pull, ZMQ_CURVE_SECRETKEY, client.sec, 32);
    }
    char ep[64];
    size_t len = sizeof ep;
    if (zmq_bind(push, "tcp://127.0.0.1:*") != 0 || zmq_getsockopt(push, ZMQ_LAST_ENDPOINT, ep, &len) != 0 ||
        zmq_connect(pull, ep) != 0)
        die("raw bind/connect");
    raw_sender s = {.sock = push, .blocks = blocks + 1};
    pthread_t t;
    pthread_create(&t, NULL, raw_send_main, &s);
    zmq_msg_t m;
    zmq_msg_init(&m);
    zmq_msg_recv(&m, pull, 0); /* the first block pays for the handshake: not timed */
    uint64_t t0 = shoal_clock_mono_us();
    for (size_t i = 0; i < blocks; i++)
        if (zmq_msg_recv(&m, pull, 0) != (int)BLOCK_SIZE)
            die("raw recv");
    uint64_t t1 = shoal_clock_mono_us();
    zmq_msg_close(&m);
    pthread_join(t, NULL);
    zmq_close(push);
    zmq_close(pull);
    zmq_ctx_term(ctx_s);
    zmq_ctx_term(ctx_r);
    return (double)blocks * BLOCK_SIZE / ((double)(t1 - t0) / 1e6);
}

/* ---- the peer transport -------------------------------------------------------------------- */

static void serve_from_memory(void *ud, node_peer_incoming *in)
{
    node_peer_msg reply = {.status = NODE_PEER_OK, .checksum = 1};
    node_peer_payload pl = {.data = block_data, .len = BLOCK_SIZE, .free_fn = no_free};
    if (node_peer_reply(in, &reply, pl) != 0)
        die("reply");
}

static const node_peer_handlers serve = {.on_get_block = serve_from_memory};

typedef struct fetch {
    node_peer *client;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    atomic_size_t submitted, completed, failed;
    size_t total;
} fetch;

typedef struct link_ctx {
    fetch *f;
    int link;
} link_ctx;

static node_peer_msg get_request(size_t i)
{
    node_peer_msg m = {.type = NODE_PEER_GET,
                       .membership_version = 1,
                       .block = {.bucket = shoal_cursor_from_str("bench"),
                                 .key = shoal_cursor_from_str("dataset/shard-000.tar"),
                                 .etag = shoal_cursor_from_str("\"e\""),
                                 .index = i,
                                 .offset = (uint64_t)i * BLOCK_SIZE,
                                 .length = BLOCK_SIZE}};
    return m;
}

static void fetch_done(void *ud, node_peer_response *r);

/* Submits the next request on this link if any are left to do. */
static void fetch_next(link_ctx *lc)
{
    fetch *f = lc->f;
    size_t i = atomic_fetch_add(&f->submitted, 1);
    if (i >= f->total)
        return;
    node_peer_msg req = get_request(i);
    if (node_peer_submit(f->client, lc->link, &req, (node_peer_payload){0}, 30000, fetch_done, lc) != 0)
        die("submit");
}

static void fetch_done(void *ud, node_peer_response *r)
{
    link_ctx *lc = ud;
    fetch *f = lc->f;
    size_t n;
    node_peer_response_payload(r, &n);
    if (node_peer_response_result(r) != SHOAL_OK || n != BLOCK_SIZE)
        atomic_fetch_add(&f->failed, 1);
    node_peer_response_delete(r);
    fetch_next(lc);
    if (atomic_fetch_add(&f->completed, 1) + 1 == f->total) {
        pthread_mutex_lock(&f->mu);
        pthread_cond_signal(&f->cond);
        pthread_mutex_unlock(&f->mu);
    }
}

/* Bytes per second fetched by one client from `peers` servers, `window` requests in flight each. */
static double peer_run(int peers, int io_threads, size_t blocks, int window)
{
    keys ck = keygen();
    node_peer *servers[MAX_PEERS];
    keys sk[MAX_PEERS];
    for (int i = 0; i < peers; i++) {
        sk[i] = keygen();
        node_peer_config cfg = {.handlers = &serve, .io_threads = io_threads};
        char bind[32];
        snprintf(bind, sizeof bind, "127.0.0.%d:0", 20 + i);
        cfg.bind = bind;
        memcpy(cfg.public_key, sk[i].pub, 32);
        memcpy(cfg.secret_key, sk[i].sec, 32);
        if ((servers[i] = node_peer_new(&cfg)) == NULL)
            die("server");
        if (node_peer_allow_set(servers[i], (const uint8_t(*)[32])ck.pub, 1) != 0)
            die("allow");
    }
    node_peer_config cc = {.io_threads = io_threads, .queue_per_peer = (unsigned)window};
    memcpy(cc.public_key, ck.pub, 32);
    memcpy(cc.secret_key, ck.sec, 32);
    fetch f = {.total = blocks};
    pthread_mutex_init(&f.mu, NULL);
    pthread_cond_init(&f.cond, NULL);
    if ((f.client = node_peer_new(&cc)) == NULL)
        die("client");
    link_ctx lc[MAX_PEERS];
    for (int i = 0; i < peers; i++) {
        lc[i] = (link_ctx){.f = &f, .link = node_peer_connect(f.client, node_peer_endpoint(servers[i]), sk[i].pub)};
        node_peer_msg req = get_request(0);
        node_peer_response *r = node_peer_call(f.client, lc[i].link, &req, (node_peer_payload){0}, 10000);
        if (r == NULL || node_peer_response_result(r) != SHOAL_OK)
            die("warm-up request"); /* the handshake is not timed */
        node_peer_response_delete(r);
    }
    uint64_t t0 = shoal_clock_mono_us();
    for (int w = 0; w < window; w++)
        for (int i = 0; i < peers; i++)
            fetch_next(&lc[i]);
    pthread_mutex_lock(&f.mu);
    while (atomic_load(&f.completed) < f.total)
        pthread_cond_wait(&f.cond, &f.mu);
    pthread_mutex_unlock(&f.mu);
    uint64_t t1 = shoal_clock_mono_us();
    if (atomic_load(&f.failed) != 0) {
        fprintf(stderr, "bench_peer: %zu requests failed\n", atomic_load(&f.failed));
        exit(1);
    }
    node_peer_delete(f.client);
    for (int i = 0; i < peers; i++)
        node_peer_delete(servers[i]);
    pthread_mutex_destroy(&f.mu);
    pthread_cond_destroy(&f.cond);
    return (double)blocks * BLOCK_SIZE / ((double)(t1 - t0) / 1e6);
}

/* ---- the table ----------------------------------------------------------------------------- */

typedef struct config {
    const char *name;
    int kind; /* 0 raw NULL, 1 raw CURVE, 2 peer CURVE */
    int peers;
    int io_threads;
    double best;
} config;

int main(int argc, char **argv)
{
    size_t blocks = 128;
    int rounds = 3, window = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--blocks") == 0)
            blocks = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--rounds") == 0)
            rounds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--window") == 0)
            window = atoi(argv[i + 1]);
    }
    if (blocks < 8 || rounds < 1 || window < 1) {
        fprintf(stderr, "usage: bench_peer [--blocks N>=8] [--rounds R>=1] [--window W>=1]\n");
        return 2;
    }
    shoal_log_set_level(SHOAL_LOG_WARN);
    block_data = malloc(BLOCK_SIZE);
    for (size_t i = 0; i < BLOCK_SIZE; i++)
        block_data[i] = (uint8_t)(i * 31 + 7);

    config cfgs[] = {
        {"raw NULL, 1 io thread", 0, 1, 1, 0},   {"raw CURVE, 1 io thread", 1, 1, 1, 0},
        {"peer CURVE, 1 peer, 1 io thread", 2, 1, 1, 0}, {"peer CURVE, 2 peers, 1 io thread", 2, 2, 1, 0},
        {"peer CURVE, 4 peers, 1 io thread", 2, 4, 1, 0}, {"raw NULL, 2 io threads", 0, 1, 2, 0},
        {"raw CURVE, 2 io threads", 1, 1, 2, 0},  {"peer CURVE, 1 peer, 2 io threads", 2, 1, 2, 0},
        {"peer CURVE, 2 peers, 2 io threads", 2, 2, 2, 0}, {"peer CURVE, 4 peers, 2 io threads", 2, 4, 2, 0},
    };
    size_t n = sizeof cfgs / sizeof cfgs[0];
    printf("bench_peer: %zu blocks of 4 MiB per figure, best of %d rounds, %d requests in flight per peer\n",
           blocks, rounds, window);
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < n; i++) {
            config *c = &cfgs[i];
            double v = c->kind == 2 ? peer_run(c->peers, c->io_threads, blocks, window)
                                    : raw_run(c->kind == 1, c->io_threads, blocks, window);
            if (v > c->best)
                c->best = v;
        }
    }
    printf("\n| configuration | GB/s |\n|---|---:|\n");
    for (size_t i = 0; i < n; i++)
        printf("| %s | %.2f |\n", cfgs[i].name, cfgs[i].best / 1e9);
    printf("\n| ratio | value |\n|---|---:|\n");
    printf("| peer CURVE / raw CURVE, 1 peer, 1 io thread (target >= 0.8) | %.2f |\n", cfgs[2].best / cfgs[1].best);
    printf("| peer CURVE / raw CURVE, 1 peer, 2 io threads | %.2f |\n", cfgs[7].best / cfgs[6].best);
    printf("| raw CURVE / raw NULL, 1 io thread | %.2f |\n", cfgs[1].best / cfgs[0].best);
    printf("| peer 2 peers / 1 peer, 1 io thread | %.2f |\n", cfgs[3].best / cfgs[2].best);
    printf("| peer 4 peers / 1 peer, 1 io thread | %.2f |\n", cfgs[4].best / cfgs[2].best);
    printf("| peer 2 io threads / 1, 1 peer | %.2f |\n", cfgs[7].best / cfgs[2].best);
    printf("| peer 2 io threads / 1, 4 peers | %.2f |\n", cfgs[9].best / cfgs[4].best);
    free(block_data);
    return 0;
}
