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
 * with 1, 2 and 4 serving peers and 1 or 2 ZeroMQ I/O threads per context.
 *
 * The machines this runs on are shared, so wall-clock figures swing with the neighbours' load.
 * Two defences: every round measures every configuration back to back (in alternating order),
 * and each ratio is the median of the ratios within a round, so the two sides of a ratio always
 * saw about the same load; and next to GB/s the table gives GB per CPU-second of this process
 * (all its threads), which a neighbour's load barely moves and which says what the transport costs
 * on top of the crypto. The ratio the project tracks is peer CURVE / raw CURVE (target >= 0.8).
 */
#include "node_peer.h"
#include "shoal_env.h"
#include "shoal_error.h"
#include "shoal_log.h"

#include <pthread.h>
#include <sys/resource.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define BLOCK_SIZE (4u << 20)
#define MAX_PEERS 4

static uint8_t *block_data; /* the one block every server sends, never freed before exit */

/* One measurement: payload bytes per wall second and per CPU second of the whole process. */
typedef struct speed {
    double wall;
    double cpu;
} speed;

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

typedef struct clock_pair {
    uint64_t wall_us;
    double cpu_s;
} clock_pair;

static clock_pair clock_now(void)
{
    return (clock_pair){shoal_clock_mono_us(), cpu_seconds()};
}

static speed speed_since(clock_pair t0, size_t blocks)
{
    clock_pair t1 = clock_now();
    double bytes = (double)blocks * BLOCK_SIZE;
    return (speed){bytes / ((double)(t1.wall_us - t0.wall_us) / 1e6), bytes / (t1.cpu_s - t0.cpu_s)};
}

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
static speed raw_run(bool curve, int io_threads, size_t blocks, int window)
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
    clock_pair t0 = clock_now();
    for (size_t i = 0; i < blocks; i++)
        if (zmq_msg_recv(&m, pull, 0) != (int)BLOCK_SIZE)
            die("raw recv");
    speed v = speed_since(t0, blocks);
    zmq_msg_close(&m);
    pthread_join(t, NULL);
    zmq_close(push);
    zmq_close(pull);
    zmq_ctx_term(ctx_s);
    zmq_ctx_term(ctx_r);
    return v;
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
static speed peer_run(int peers, int io_threads, size_t blocks, int window)
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
    clock_pair t0 = clock_now();
    for (int w = 0; w < window; w++)
        for (int i = 0; i < peers; i++)
            fetch_next(&lc[i]);
    pthread_mutex_lock(&f.mu);
    while (atomic_load(&f.completed) < f.total)
        pthread_cond_wait(&f.cond, &f.mu);
    pthread_mutex_unlock(&f.mu);
    speed v = speed_since(t0, blocks);
    if (atomic_load(&f.failed) != 0) {
        fprintf(stderr, "bench_peer: %zu requests failed\n", atomic_load(&f.failed));
        exit(1);
    }
    node_peer_delete(f.client);
    for (int i = 0; i < peers; i++)
        node_peer_delete(servers[i]);
    pthread_mutex_destroy(&f.mu);
    pthread_cond_destroy(&f.cond);
    return v;
}

/* ---- the table ----------------------------------------------------------------------------- */

#define MAX_ROUNDS 64

typedef struct config {
    const char *name;
    int kind; /* 0 raw NULL, 1 raw CURVE, 2 peer CURVE */
    int peers;
    int io_threads;
    speed round[MAX_ROUNDS];
} config;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Median over rounds of cfgs[a]/cfgs[b], per wall second (cpu = false) or per CPU second. */
static double ratio(const config *cfgs, int a, int b, int rounds, bool cpu)
{
    double r[MAX_ROUNDS];
    for (int i = 0; i < rounds; i++)
        r[i] = cpu ? cfgs[a].round[i].cpu / cfgs[b].round[i].cpu : cfgs[a].round[i].wall / cfgs[b].round[i].wall;
    return median(r, rounds);
}

int main(int argc, char **argv)
{
    size_t blocks = 64;
    int rounds = 7, window = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--blocks") == 0)
            blocks = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--rounds") == 0)
            rounds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--window") == 0)
            window = atoi(argv[i + 1]);
    }
    if (blocks < 8 || rounds < 1 || rounds > MAX_ROUNDS || window < 1) {
        fprintf(stderr, "usage: bench_peer [--blocks N>=8] [--rounds 1..%d] [--window W>=1]\n", MAX_ROUNDS);
        return 2;
    }
    shoal_log_set_level(SHOAL_LOG_WARN);
    block_data = malloc(BLOCK_SIZE);
    for (size_t i = 0; i < BLOCK_SIZE; i++)
        block_data[i] = (uint8_t)(i * 31 + 7);

    config cfgs[] = {
        {.name = "raw NULL, 1 io thread", .kind = 0, .peers = 1, .io_threads = 1},
        {.name = "raw CURVE, 1 io thread", .kind = 1, .peers = 1, .io_threads = 1},
        {.name = "peer CURVE, 1 peer, 1 io thread", .kind = 2, .peers = 1, .io_threads = 1},
        {.name = "peer CURVE, 2 peers, 1 io thread", .kind = 2, .peers = 2, .io_threads = 1},
        {.name = "peer CURVE, 4 peers, 1 io thread", .kind = 2, .peers = 4, .io_threads = 1},
        {.name = "raw NULL, 2 io threads", .kind = 0, .peers = 1, .io_threads = 2},
        {.name = "raw CURVE, 2 io threads", .kind = 1, .peers = 1, .io_threads = 2},
        {.name = "peer CURVE, 1 peer, 2 io threads", .kind = 2, .peers = 1, .io_threads = 2},
        {.name = "peer CURVE, 2 peers, 2 io threads", .kind = 2, .peers = 2, .io_threads = 2},
        {.name = "peer CURVE, 4 peers, 2 io threads", .kind = 2, .peers = 4, .io_threads = 2},
    };
    int n = (int)(sizeof cfgs / sizeof cfgs[0]);
    printf("bench_peer: %zu blocks of 4 MiB per measurement, %d rounds (medians), %d requests in flight per peer\n",
           blocks, rounds, window);
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < n; k++) {
            config *c = &cfgs[r % 2 ? n - 1 - k : k]; /* alternate the order so drift hits both sides */
            c->round[r] = c->kind == 2 ? peer_run(c->peers, c->io_threads, blocks, window)
                                       : raw_run(c->kind == 1, c->io_threads, blocks, window);
        }
    }
    printf("\n| configuration | GB/s | GB per CPU-second |\n|---|---:|---:|\n");
    for (int k = 0; k < n; k++) {
        double wall[MAX_ROUNDS], cpu[MAX_ROUNDS];
        for (int r = 0; r < rounds; r++)
            wall[r] = cfgs[k].round[r].wall, cpu[r] = cfgs[k].round[r].cpu;
        printf("| %s | %.2f | %.2f |\n", cfgs[k].name, median(wall, rounds) / 1e9, median(cpu, rounds) / 1e9);
    }
    static const struct {
        const char *name;
        int a, b;
    } ratios[] = {
        {"peer CURVE / raw CURVE, 1 peer, 1 io thread (target >= 0.8)", 2, 1},
        {"peer CURVE / raw CURVE, 1 peer, 2 io threads", 7, 6},
        {"raw CURVE / raw NULL, 1 io thread", 1, 0},
        {"raw CURVE / raw NULL, 2 io threads", 6, 5},
        {"peer CURVE 2 peers / 1 peer, 1 io thread", 3, 2},
        {"peer CURVE 4 peers / 1 peer, 1 io thread", 4, 2},
        {"peer CURVE 2 io threads / 1 io thread, 1 peer", 7, 2},
        {"peer CURVE 2 io threads / 1 io thread, 4 peers", 9, 4},
    };
    printf("\n| ratio (median of per-round ratios) | wall | per CPU-second |\n|---|---:|---:|\n");
    for (size_t i = 0; i < sizeof ratios / sizeof ratios[0]; i++)
        printf("| %s | %.2f | %.2f |\n", ratios[i].name, ratio(cfgs, ratios[i].a, ratios[i].b, rounds, false),
               ratio(cfgs, ratios[i].a, ratios[i].b, rounds, true));
    free(block_data);
    return 0;
}
