/*
 * Tests of the peer transport over real ZeroMQ sockets on loopback (127.0.0.x), with real CURVE
 * keys and the real ZAP handler. Each test starts its own server and clients on ephemeral ports.
 */
#include "node_peer.h"
#include "shoal_env.h"
#include "shoal_error.h"
#include "tt.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define BLOCK (256 * 1024)

typedef struct keypair {
    uint8_t pub[NODE_PEER_KEY_LEN];
    uint8_t sec[NODE_PEER_KEY_LEN];
} keypair;

static keypair keygen(void)
{
    char zp[41], zs[41];
    keypair k;
    TT_CHECK(zmq_curve_keypair(zp, zs) == 0, "libzmq without CURVE");
    zmq_z85_decode(k.pub, zp);
    zmq_z85_decode(k.sec, zs);
    return k;
}

/* The byte at `pos` of the block the server serves for `index`. */
static uint8_t block_byte(uint64_t index, size_t pos)
{
    return (uint8_t)(index * 131 + pos * 7 + (pos >> 9));
}

/* The server side of a test: what its handlers saw and, for some tests, requests it holds. */
typedef struct server {
    node_peer *np;
    keypair key;
    pthread_mutex_t mu;
    bool hold;                    /* keep requests instead of answering them */
    size_t release_at;            /* with hold: answer everything once this many are held */
    node_peer_incoming *held[512];
    size_t n_held;
    size_t max_held;
    atomic_int puts;
    uint8_t put_first, put_last;
    size_t put_len;
} server;

static void free_block(void *data, void *hint)
{
    free(data);
}

static void answer_get(node_peer_incoming *in)
{
    const node_peer_msg *req = node_peer_incoming_msg(in);
    size_t len = (size_t)req->block.length;
    uint8_t *data = malloc(len);
    for (size_t i = 0; i < len; i++)
        data[i] = block_byte(req->block.index, i);
    node_peer_msg reply = {.status = NODE_PEER_OK, .has_object_size = true, .object_size = 1u << 30,
                           .checksum = req->block.index};
    node_peer_payload pl = {.data = data, .len = len, .free_fn = free_block};
    TT_OK(node_peer_reply(in, &reply, pl));
}

static void on_get(void *ud, node_peer_incoming *in)
{
    server *s = ud;
    pthread_mutex_lock(&s->mu);
    if (!s->hold) {
        pthread_mutex_unlock(&s->mu);
        answer_get(in);
        return;
    }
    s->held[s->n_held++] = in;
    if (s->n_held > s->max_held)
        s->max_held = s->n_held;
    bool release = s->release_at && s->n_held == s->release_at;
    pthread_mutex_unlock(&s->mu);
    if (release) {
        pthread_mutex_lock(&s->mu);
        size_t n = s->n_held;
        s->n_held = 0;
        pthread_mutex_unlock(&s->mu);
        for (size_t i = 0; i < n; i++)
            answer_get(s->held[i]);
    }
}

static void on_put(void *ud, node_peer_incoming *in)
{
    server *s = ud;
    size_t len;
    const uint8_t *data = node_peer_incoming_payload(in, &len);
    s->put_len = len;
    s->put_first = len ? data[0] : 0;
    s->put_last = len ? data[len - 1] : 0;
    atomic_fetch_add(&s->puts, 1);
    node_peer_msg reply = {.status = NODE_PEER_OK};
    node_peer_payload none = {0};
    TT_OK(node_peer_reply(in, &reply, none));
}

/* The server works on the items whose first byte is 0xee (the daemon's read path counts work
 * per block; here a rule the test can set). */
static node_peer_work on_work(void *ud, const uint8_t *id)
{
    return id[0] == 0xee ? NODE_PEER_WORKING : NODE_PEER_IDLE;
}

static const node_peer_handlers handlers = {.on_get_block = on_get, .on_put_block = on_put, .on_work = on_work};

static void server_start(server *s, const char *bind, unsigned max_incoming)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->key = keygen();
    node_peer_config cfg = {.bind = bind, .handlers = &handlers, .handlers_ud = s, .max_incoming = max_incoming};
    memcpy(cfg.public_key, s->key.pub, NODE_PEER_KEY_LEN);
    memcpy(cfg.secret_key, s->key.sec, NODE_PEER_KEY_LEN);
    s->np = node_peer_new(&cfg);
    TT_CHECK(s->np != NULL, "server on %s: %s", bind, shoal_error_message());
}

static void server_stop(server *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->n_held;
    s->n_held = 0;
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < n; i++)
        node_peer_incoming_discard(s->held[i]);
    node_peer_delete(s->np);
}

static node_peer *client_new(const keypair *k, unsigned queue)
{
    node_peer_config cfg = {.queue_per_peer = queue};
    memcpy(cfg.public_key, k->pub, NODE_PEER_KEY_LEN);
    memcpy(cfg.secret_key, k->sec, NODE_PEER_KEY_LEN);
    node_peer *np = node_peer_new(&cfg);
    TT_CHECK(np != NULL, "client: %s", shoal_error_message());
    return np;
}

static node_peer_msg get_request(uint64_t index, size_t len)
{
    node_peer_msg m = {.type = NODE_PEER_GET,
                       .membership_version = 1,
                       .flags = NODE_PEER_F_NO_FORWARD,
                       .block = {.bucket = shoal_cursor_from_str("bucket"),
                                 .key = shoal_cursor_from_str("dir/object.bin"),
                                 .etag = shoal_cursor_from_str("\"etag-1\""),
                                 .index = index,
                                 .offset = index * len,
                                 .length = len}};
    memset(m.block.id, (int)index, NODE_PEER_BLOCK_ID_LEN);
    return m;
}

/* Checks a GET response: OK status and exactly the bytes the server generated for `index`. */
static void check_block(node_peer_response *r, uint64_t index, size_t len)
{
    TT_CHECK(r != NULL, "no response: %s", shoal_error_message());
    TT_CHECK(node_peer_response_result(r) == SHOAL_OK, "block %llu: result %s", (unsigned long long)index,
             shoal_error_name(node_peer_response_result(r)));
    const node_peer_msg *m = node_peer_response_msg(r);
    TT_CHECK(m->status == NODE_PEER_OK && m->checksum == index && m->object_size == (1u << 30),
             "reply header status=%s checksum=%llu", node_peer_status_name(m->status), (unsigned long long)m->checksum);
    size_t n;
    const uint8_t *data = node_peer_response_payload(r, &n);
    TT_CHECK(n == len, "block %llu: %zu bytes, want %zu", (unsigned long long)index, n, len);
    for (size_t i = 0; i < n; i++)
        TT_CHECK(data[i] == block_byte(index, i), "block %llu byte %zu differs", (unsigned long long)index, i);
}

static void allow(node_peer *np, const keypair *k)
{
    TT_OK(node_peer_allow_set(np, (const uint8_t(*)[NODE_PEER_KEY_LEN])k->pub, 1));
}

/* Waits up to `ms` for the server to hold `n` requests; returns how many it holds. */
static size_t wait_held(server *s, size_t n, int ms)
{
    for (int waited = 0;; waited += 10) {
        pthread_mutex_lock(&s->mu);
        size_t held = s->n_held;
        pthread_mutex_unlock(&s->mu);
        if (held >= n || waited >= ms)
            return held;
        usleep(10000);
    }
}

/* A server, and a client linked to it; the server admits the client's key unless `stranger`. */
typedef struct rig {
    server s;
    keypair ck;
    node_peer *c;
    int link;
} rig;

static void rig_start_as(rig *r, const char *bind, unsigned max_incoming, unsigned queue, bool hold, bool stranger)
{
    server_start(&r->s, bind, max_incoming);
    r->s.hold = hold;
    r->ck = keygen();
    keypair member = keygen();
    allow(r->s.np, stranger ? &member : &r->ck);
    r->c = client_new(&r->ck, queue);
    r->link = node_peer_connect(r->c, node_peer_endpoint(r->s.np), r->s.key.pub);
    TT_CHECK(r->link >= 0, "connect: %s", shoal_error_message());
}

static void rig_start(rig *r, const char *bind, unsigned max_incoming, unsigned queue, bool hold)
{
    rig_start_as(r, bind, max_incoming, queue, hold, false);
}

static void rig_stop(rig *r)
{
    node_peer_delete(r->c);
    server_stop(&r->s);
}

/* Waits up to `ms` for *counter (read through the stats) to reach `want`. */
static uint64_t wait_stat(node_peer *np, size_t offset, uint64_t want, int ms)
{
    node_peer_stats st;
    for (int waited = 0;; waited += 10) {
        node_peer_stats_get(np, &st);
        uint64_t v = *(uint64_t *)((char *)&st + offset);
        if (v >= want || waited >= ms)
            return v;
        usleep(10000);
    }
}

TT_TEST(test_node_peer_allowed_client_gets_block)
{
    rig g;
    rig_start(&g, "127.0.0.2:0", 0, 0, false);
    node_peer_msg req = get_request(5, BLOCK);
    node_peer_response *r = node_peer_call(g.c, g.link, &req, (node_peer_payload){0}, 5000);
    check_block(r, 5, BLOCK);
    node_peer_response_delete(r);
    node_peer_stats cs, ss;
    node_peer_stats_get(g.c, &cs);
    node_peer_stats_get(g.s.np, &ss);
    TT_CHECK(cs.requests_out == 1 && cs.bytes_in == BLOCK, "client counters out=%llu bytes_in=%llu",
             (unsigned long long)cs.requests_out, (unsigned long long)cs.bytes_in);
    TT_CHECK(ss.requests_in == 1 && ss.bytes_out == BLOCK && ss.zap_denied == 0, "server counters");
    rig_stop(&g);
}

TT_TEST(test_node_peer_unknown_key_gets_nothing_and_denial_is_counted)
{
    rig g;
    rig_start_as(&g, "127.0.0.3:0", 0, 0, false, true);
    node_peer_msg req = get_request(1, BLOCK);
    node_peer_response *r = node_peer_call(g.c, g.link, &req, (node_peer_payload){0}, 700);
    TT_CHECK(r && node_peer_response_result(r) == SHOAL_ERR_TIMEOUT, "stranger got %s, want a timeout",
             r ? shoal_error_name(node_peer_response_result(r)) : "nothing");
    node_peer_response_delete(r);
    uint64_t denied = wait_stat(g.s.np, offsetof(node_peer_stats, zap_denied), 1, 2000);
    TT_CHECK(denied >= 1, "ZAP denials %llu", (unsigned long long)denied);
    node_peer_stats ss;
    node_peer_stats_get(g.s.np, &ss);
    TT_CHECK(ss.requests_in == 0, "server handled %llu requests from a stranger", (unsigned long long)ss.requests_in);
    rig_stop(&g);
}

TT_TEST(test_node_peer_refused_client_is_served_once_its_key_is_admitted)
{
    rig g;
    rig_start_as(&g, "127.0.0.14:0", 0, 0, false, true); /* the server has not heard of the client yet */
    node_peer_msg req = get_request(3, 4096);
    node_peer_response *r = node_peer_call(g.c, g.link, &req, (node_peer_payload){0}, 500);
    TT_CHECK(node_peer_response_result(r) != SHOAL_OK, "a stranger got a block");
    node_peer_response_delete(r);
    TT_CHECK(wait_stat(g.s.np, offsetof(node_peer_stats, zap_denied), 1, 2000) >= 1, "handshake refused");

    allow(g.s.np, &g.ck); /* gossip tells the server about the client */
    shoal_err last = SHOAL_ERR_TIMEOUT;
    int attempts = 0;
    while (last != SHOAL_OK && attempts++ < 10) {
        r = node_peer_call(g.c, g.link, &req, (node_peer_payload){0}, 1000);
        last = node_peer_response_result(r);
        if (last == SHOAL_OK)
            check_block(r, 3, 4096);
        node_peer_response_delete(r);
    }
    TT_CHECK(last == SHOAL_OK, "the same link never recovered after the key was admitted (%d attempts, last %s)",
             attempts, shoal_error_name(last));
    tt_note("served after %d attempt(s)", attempts);
    rig_stop(&g);
}

TT_TEST(test_node_peer_removed_key_is_refused_on_new_and_existing_connections)
{
    rig g;
    rig_start(&g, "127.0.0.4:0", 0, 0, false);
    keypair other = keygen();
    node_peer_msg req = get_request(2, 4096);
    node_peer_response *r = node_peer_call(g.c, g.link, &req, (node_peer_payload){0}, 5000);
    check_block(r, 2, 4096);
    node_peer_response_delete(r);

    allow(g.s.np, &other); /* gossip says ck's node left */
    node_peer *c2 = client_new(&g.ck, 0);
    int l2 = node_peer_connect(c2, node_peer_endpoint(g.s.np), g.s.key.pub);
    r = node_peer_call(c2, l2, &req, (node_peer_payload){0}, 700);
    TT_CHECK(node_peer_response_result(r) == SHOAL_ERR_TIMEOUT, "new connection with a removed key got %s",
             shoal_error_name(node_peer_response_result(r)));
    node_peer_response_delete(r);
    TT_CHECK(wait_stat(g.s.np, offsetof(node_peer_stats, zap_denied), 1, 2000) >= 1, "ZAP denial counted");

    r = node_peer_call(g.c, g.link, &req, (node_peer_payload){0}, 500);
    TT_CHECK(node_peer_response_result(r) == SHOAL_ERR_TIMEOUT,
             "the connection made before the removal still got %s", shoal_error_name(node_peer_response_result(r)));
    node_peer_response_delete(r);
    wait_stat(g.s.np, offsetof(node_peer_stats, revoked), 1, 2000);
    node_peer_stats ss;
    node_peer_stats_get(g.s.np, &ss);
    TT_CHECK(ss.revoked == 1 && ss.requests_in == 1, "revoked=%llu requests_in=%llu", (unsigned long long)ss.revoked,
             (unsigned long long)ss.requests_in);
    node_peer_delete(c2);
    rig_stop(&g);
}

/* A raw libzmq DEALER with CURVE, to send frames the transport itself would never produce. */
static void *raw_client(void *ctx, const keypair *k, const uint8_t *server_key, const char *endpoint)
{
    void *d = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    char ep[128];
    snprintf(ep, sizeof ep, "tcp://%s", endpoint);
    TT_CHECK(d && zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof linger) == 0 &&
                 zmq_setsockopt(d, ZMQ_CURVE_SERVERKEY, server_key, 32) == 0 &&
                 zmq_setsockopt(d, ZMQ_CURVE_PUBLICKEY, k->pub, 32) == 0 &&
                 zmq_setsockopt(d, ZMQ_CURVE_SECRETKEY, k->sec, 32) == 0 && zmq_connect(d, ep) == 0,
             "raw client: %s", zmq_strerror(errno));
    return d;
}

static void raw_send(void *d, const void *a, size_t alen, const void *b, size_t blen, int frames)
{
    TT_CHECK(zmq_send(d, a, alen, frames > 1 ? ZMQ_SNDMORE : 0) >= 0, "send");
    if (frames > 1)
        TT_CHECK(zmq_send(d, b, blen, frames > 2 ? ZMQ_SNDMORE : 0) >= 0, "send");
    if (frames > 2)
        TT_CHECK(zmq_send(d, "x", 1, 0) >= 0, "send");
}

TT_TEST(test_node_peer_malformed_frames_are_dropped_and_counted_then_serving_goes_on)
{
    server s;
    server_start(&s, "127.0.0.5:0", 0);
    keypair ck = keygen();
    allow(s.np, &ck);
    void *ctx = zmq_ctx_new();
    void *d = raw_client(ctx, &ck, s.key.pub, node_peer_endpoint(s.np));

    shoal_buf good, reply_hdr, put;
    TT_OK(shoal_buf_create(&good, 0));
    TT_OK(shoal_buf_create(&reply_hdr, 0));
    TT_OK(shoal_buf_create(&put, 0));
    node_peer_msg req = get_request(9, 1000);
    req.request_id = 77;
    TT_OK(node_peer_msg_encode(&req, &good));
    node_peer_msg not_request = {.type = NODE_PEER_GET_REPLY, .request_id = 1};
    TT_OK(node_peer_msg_encode(&not_request, &reply_hdr));
    node_peer_msg p = get_request(1, 100);
    p.type = NODE_PEER_PUT, p.flags = 0, p.payload_len = 100;
    TT_OK(node_peer_msg_encode(&p, &put));
    const uint8_t random[] = {0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 0x00, 0xff};
    const uint8_t wrong_types[] = {0x83, 0xa1, 'v', 0xa1, '1', 0xa1, 't', 0xc3, 0xa2, 'i', 'd', 0xc0};
    const uint8_t absurd[] = {0xdf, 0x7f, 0xff, 0xff, 0xff, 0xa1, 'v', 0x01};
    int sent = 0;
    raw_send(d, random, sizeof random, "", 0, 2), sent++;                  /* random bytes */
    raw_send(d, good.data, good.len / 2, "", 0, 2), sent++;                /* truncated msgpack */
    raw_send(d, wrong_types, sizeof wrong_types, "", 0, 2), sent++;        /* wrong types */
    raw_send(d, absurd, sizeof absurd, "", 0, 2), sent++;                  /* absurd count */
    raw_send(d, put.data, put.len, "short", 5, 2), sent++;                 /* payload shorter than its length */
    raw_send(d, good.data, good.len, NULL, 0, 1), sent++;                  /* missing payload frame */
    raw_send(d, good.data, good.len, "", 0, 3), sent++;                    /* a third frame */
    raw_send(d, reply_hdr.data, reply_hdr.len, "", 0, 2), sent++;          /* a reply sent as a request */
    raw_send(d, good.data, good.len, "", 0, 2);                            /* and a good one */

    zmq_pollitem_t item = {.socket = d, .events = ZMQ_POLLIN};
    TT_CHECK(zmq_poll(&item, 1, 5000) == 1, "no reply to the good request after the malformed ones");
    zmq_msg_t hdr, payload;
    zmq_msg_init(&hdr);
    zmq_msg_init(&payload);
    TT_CHECK(zmq_msg_recv(&hdr, d, 0) >= 0 && zmq_msg_more(&hdr) && zmq_msg_recv(&payload, d, 0) == 1000,
             "reply frames");
    node_peer_msg m;
    TT_OK(node_peer_msg_decode(shoal_cursor_from_mem(zmq_msg_data(&hdr), zmq_msg_size(&hdr)), 1000, &m));
    TT_CHECK(m.type == NODE_PEER_GET_REPLY && m.request_id == 77 && m.status == NODE_PEER_OK, "good reply");
    TT_CHECK(((uint8_t *)zmq_msg_data(&payload))[999] == block_byte(9, 999), "payload bytes");
    node_peer_stats ss;
    node_peer_stats_get(s.np, &ss);
    TT_CHECK(ss.malformed == (uint64_t)sent && ss.requests_in == 1, "malformed=%llu (sent %d) requests_in=%llu",
             (unsigned long long)ss.malformed, sent, (unsigned long long)ss.requests_in);
    zmq_msg_close(&hdr);
    zmq_msg_close(&payload);
    shoal_buf_destroy(&good);
    shoal_buf_destroy(&reply_hdr);
    shoal_buf_destroy(&put);
    zmq_close(d);
    zmq_ctx_term(ctx);
    server_stop(&s);
}

typedef struct batch {
    atomic_int done;
    atomic_int bad;
} batch;

static void batch_done(void *ud, node_peer_response *r)
{
    batch *b = ud;
    const node_peer_msg *m = node_peer_response_msg(r);
    size_t n;
    const uint8_t *data = node_peer_response_payload(r, &n);
    if (m == NULL || m->status != NODE_PEER_OK || n != 4096 || data[4095] != block_byte(m->checksum, 4095))
        atomic_fetch_add(&b->bad, 1);
    node_peer_response_delete(r);
    atomic_fetch_add(&b->done, 1);
}

TT_TEST(test_node_peer_256_requests_in_flight_on_one_link_all_complete)
{
    rig g;
    rig_start(&g, "127.0.0.6:0", 0, 256, true);
    g.s.release_at = 256; /* answer only when all 256 are waiting at once */
    batch b = {0};
    for (int i = 0; i < 256; i++) {
        node_peer_msg req = get_request((uint64_t)i, 4096);
        TT_OK(node_peer_submit(g.c, g.link, &req, (node_peer_payload){0}, 10000, batch_done, &b));
    }
    for (int waited = 0; atomic_load(&b.done) < 256 && waited < 10000; waited += 10)
        usleep(10000);
    TT_CHECK(atomic_load(&b.done) == 256 && atomic_load(&b.bad) == 0, "completed %d, bad %d",
             atomic_load(&b.done), atomic_load(&b.bad));
    pthread_mutex_lock(&g.s.mu);
    size_t max_held = g.s.max_held;
    pthread_mutex_unlock(&g.s.mu);
    TT_CHECK(max_held == 256, "server held at most %zu at once", max_held);
    rig_stop(&g);
}

TT_TEST(test_node_peer_request_times_out_when_server_never_replies)
{
    rig g;
    rig_start(&g, "127.0.0.7:0", 0, 0, true);
    node_peer_msg req = get_request(1, 4096);
    uint64_t t0 = shoal_clock_mono_us();
    node_peer_response *r = node_peer_call(g.c, g.link, &req, (node_peer_payload){0}, 300);
    uint64_t took_ms = (shoal_clock_mono_us() - t0) / 1000;
    TT_CHECK(node_peer_response_result(r) == SHOAL_ERR_TIMEOUT, "result %s",
             shoal_error_name(node_peer_response_result(r)));
    TT_CHECK(took_ms >= 290 && took_ms < 2000, "timed out after %llu ms, asked 300", (unsigned long long)took_ms);
    node_peer_response_delete(r);
    node_peer_stats cs;
    node_peer_stats_get(g.c, &cs);
    TT_CHECK(cs.timeouts == 1, "timeouts %llu", (unsigned long long)cs.timeouts);
    TT_CHECK(wait_stat(g.s.np, offsetof(node_peer_stats, requests_in), 1, 2000) == 1,
             "the server did receive the request");
    rig_stop(&g);
}

static void ignore_done(void *ud, node_peer_response *r)
{
    atomic_fetch_add((atomic_int *)ud, 1);
    node_peer_response_delete(r);
}

/* Submits GETs 0..n-1 (4 KiB each) without waiting; each completion counts in *completed. */
static void submit_gets(rig *g, int n, atomic_int *completed)
{
    for (int i = 0; i < n; i++) {
        node_peer_msg req = get_request((uint64_t)i, 4096);
        TT_OK(node_peer_submit(g->c, g->link, &req, (node_peer_payload){0}, 10000, ignore_done, completed));
    }
}

TT_TEST(test_node_peer_full_queue_fails_fast_with_nospace)
{
    rig g;
    rig_start(&g, "127.0.0.8:0", 0, 4, true);
    atomic_int completed = 0;
    submit_gets(&g, 4, &completed);
    node_peer_msg req = get_request(4, 4096);
    uint8_t *put = malloc(100);
    uint64_t t0 = shoal_clock_mono_us();
    int rc = node_peer_submit(g.c, g.link, &req, (node_peer_payload){.data = put, .len = 100, .free_fn = free_block}, 10000,
                              ignore_done, &completed);
    uint64_t took_us = shoal_clock_mono_us() - t0;
    TT_CHECK(rc == -1 && shoal_error_code() == SHOAL_ERR_NOSPACE, "fifth submission: rc=%d %s", rc,
             shoal_error_name(shoal_error_code()));
    TT_CHECK(took_us < 50000, "refusal took %llu us", (unsigned long long)took_us);
    node_peer_stats cs;
    node_peer_stats_get(g.c, &cs);
    TT_CHECK(cs.queue_full == 1, "queue_full %llu", (unsigned long long)cs.queue_full);
    node_peer_delete(g.c); /* completes the four with CLOSED */
    TT_CHECK(atomic_load(&completed) == 4, "%d callbacks after delete, want 4", atomic_load(&completed));
    server_stop(&g.s);
}

TT_TEST(test_node_peer_server_answers_busy_beyond_max_incoming)
{
    rig g;
    rig_start(&g, "127.0.0.9:0", 2, 0, true);
    atomic_int completed = 0;
    submit_gets(&g, 2, &completed);
    node_peer_msg req = get_request(2, 4096);
    node_peer_response *r = node_peer_call(g.c, g.link, &req, (node_peer_payload){0}, 5000);
    TT_CHECK(node_peer_response_result(r) == SHOAL_OK && node_peer_response_msg(r)->status == NODE_PEER_BUSY,
             "third request: %s", shoal_error_name(node_peer_response_result(r)));
    node_peer_response_delete(r);
    node_peer_stats ss;
    node_peer_stats_get(g.s.np, &ss);
    size_t held = wait_held(&g.s, 2, 2000);
    TT_CHECK(ss.busy == 1 && held == 2, "busy=%llu held=%zu", (unsigned long long)ss.busy, held);
    rig_stop(&g);
}

TT_TEST(test_node_peer_put_block_arrives_in_place_and_ping_reports_membership)
{
    rig g;
    rig_start(&g, "127.0.0.10:0", 0, 0, false);
    node_peer_set_membership_version(g.s.np, 31);
    size_t len = 1u << 20;
    uint8_t *block = malloc(len);
    memset(block, 0x5a, len);
    block[0] = 1, block[len - 1] = 2;
    node_peer_msg put = get_request(0, len);
    put.type = NODE_PEER_PUT;
    put.flags = 0;
    node_peer_response *r =
        node_peer_call(g.c, g.link, &put, (node_peer_payload){.data = block, .len = len, .free_fn = free_block}, 5000);
    TT_CHECK(node_peer_response_result(r) == SHOAL_OK && node_peer_response_msg(r)->type == NODE_PEER_PUT_REPLY &&
                 node_peer_response_msg(r)->status == NODE_PEER_OK,
             "PUT reply %s", shoal_error_name(node_peer_response_result(r)));
    node_peer_response_delete(r);
    TT_CHECK(atomic_load(&g.s.puts) == 1 && g.s.put_len == len && g.s.put_first == 1 && g.s.put_last == 2,
             "owner saw %d puts of %zu bytes", atomic_load(&g.s.puts), g.s.put_len);

    node_peer_msg ping = {.type = NODE_PEER_PING, .membership_version = 30};
    r = node_peer_call(g.c, g.link, &ping, (node_peer_payload){0}, 5000);
    TT_CHECK(node_peer_response_result(r) == SHOAL_OK && node_peer_response_msg(r)->type == NODE_PEER_PONG &&
                 node_peer_response_msg(r)->membership_version == 31,
             "PONG with membership version 31");
    node_peer_response_delete(r);
    rig_stop(&g);
}

/* A PING that names a work item is answered on the I/O thread with the daemon's word on it, a PING
 * without one with no work state at all, whatever the server holds meanwhile. */
TT_TEST(test_node_peer_ping_with_work_item_reports_work_from_the_io_thread)
{
    rig g;
    rig_start(&g, "127.0.0.12:0", 0, 0, true); /* holds every GET: the handlers are busy */
    node_peer_msg req = get_request(3, 4096);
    atomic_int completed = 0;
    TT_OK(node_peer_submit(g.c, g.link, &req, (node_peer_payload){0}, 10000, ignore_done, &completed));
    TT_CHECK(wait_held(&g.s, 1, 5000) == 1, "the server did not receive the GET");
    for (int k = 0; k < 3; k++) {
        node_peer_msg ping = {.type = NODE_PEER_PING, .has_work_id = k > 0};
        memset(ping.work_id, k == 1 ? 0xee : 0x11, sizeof ping.work_id);
        node_peer_response *r = node_peer_call(g.c, g.link, &ping, (node_peer_payload){0}, 5000);
        const node_peer_msg *pong = node_peer_response_result(r) == SHOAL_OK ? node_peer_response_msg(r) : NULL;
        TT_CHECK(pong && pong->type == NODE_PEER_PONG, "PING %d: %s", k, shoal_error_name(node_peer_response_result(r)));
        TT_CHECK(pong->has_work == (k > 0), "PING %d: PONG %s a work state", k, pong->has_work ? "has" : "lacks");
        TT_CHECK(k == 0 || pong->work == (k == 1 ? NODE_PEER_WORKING : NODE_PEER_IDLE), "PING %d: work state %d", k,
                 pong->work);
        node_peer_response_delete(r);
    }
    rig_stop(&g);
}

TT_TEST(test_node_peer_reply_after_delete_is_refused_safely)
{
    rig g;
    rig_start(&g, "127.0.0.11:0", 0, 0, true);
    node_peer_msg req = get_request(1, 4096);
    node_peer_response *r = node_peer_call(g.c, g.link, &req, (node_peer_payload){0}, 300);
    node_peer_response_delete(r);
    TT_CHECK(wait_held(&g.s, 1, 2000) == 1, "the server holds the request");
    node_peer_delete(g.s.np); /* the daemon still holds one request */
    node_peer_msg reply = {.status = NODE_PEER_OK};
    int rc = node_peer_reply(g.s.held[0], &reply, (node_peer_payload){.data = "abc", .len = 3});
    TT_CHECK(rc == -1 && shoal_error_code() == SHOAL_ERR_CLOSED, "reply after delete: rc=%d %s", rc,
             shoal_error_name(shoal_error_code()));
    node_peer_delete(g.c);
}

static void record_result(void *ud, node_peer_response *r)
{
    atomic_store((atomic_int *)ud, (int)node_peer_response_result(r));
    node_peer_response_delete(r);
}

TT_TEST(test_node_peer_disconnect_completes_pending_requests_with_closed)
{
    rig g;
    rig_start(&g, "127.0.0.12:0", 0, 0, true);
    atomic_int result = -1;
    node_peer_msg req = get_request(1, 4096);
    TT_OK(node_peer_submit(g.c, g.link, &req, (node_peer_payload){0}, 10000, record_result, &result));
    TT_CHECK(wait_stat(g.s.np, offsetof(node_peer_stats, requests_in), 1, 2000) == 1, "server got the request");
    TT_OK(node_peer_disconnect(g.c, g.link));
    for (int waited = 0; atomic_load(&result) < 0 && waited < 2000; waited += 10)
        usleep(10000);
    TT_CHECK(atomic_load(&result) == SHOAL_ERR_CLOSED, "pending request after disconnect: %s",
             shoal_error_name((shoal_err)atomic_load(&result)));
    TT_CHECK(node_peer_submit(g.c, g.link, &req, (node_peer_payload){0}, 100, record_result, &result) == -1 &&
                 shoal_error_code() == SHOAL_ERR_NOT_FOUND,
             "submit on a closed link: %s", shoal_error_name(shoal_error_code()));
    rig_stop(&g);
}

/* A raw CURVE ROUTER standing in for a faulty server: it answers each GET with what the test says. */
TT_TEST(test_node_peer_client_drops_malformed_replies_and_fails_mismatched_ones)
{
    keypair sk = keygen(), ck = keygen();
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1, linger = 0;
    char ep[64];
    size_t eplen = sizeof ep;
    TT_CHECK(zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger) == 0 &&
                 zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof one) == 0 &&
                 zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, sk.sec, 32) == 0 &&
                 zmq_bind(router, "tcp://127.0.0.13:*") == 0 &&
                 zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, ep, &eplen) == 0,
             "raw server: %s", zmq_strerror(errno));
    node_peer *c = client_new(&ck, 0);
    int link = node_peer_connect(c, ep + 6, sk.pub);
    atomic_int result = -1;
    node_peer_msg req = get_request(1, 4096);
    TT_OK(node_peer_submit(c, link, &req, (node_peer_payload){0}, 5000, record_result, &result));

    zmq_msg_t rid, hdr, pl;
    zmq_msg_init(&rid), zmq_msg_init(&hdr), zmq_msg_init(&pl);
    TT_CHECK(zmq_msg_recv(&rid, router, 0) >= 0 && zmq_msg_recv(&hdr, router, 0) >= 0 &&
                 zmq_msg_recv(&pl, router, 0) >= 0,
             "raw server received the request");
    node_peer_msg got;
    TT_OK(node_peer_msg_decode(shoal_cursor_from_mem(zmq_msg_data(&hdr), zmq_msg_size(&hdr)), 0, &got));
    /* 1: garbage; 2: a PONG carrying the GET's request id. */
    zmq_send(router, zmq_msg_data(&rid), zmq_msg_size(&rid), ZMQ_SNDMORE);
    zmq_send(router, "\xc1garbage", 8, ZMQ_SNDMORE);
    zmq_send(router, "", 0, 0);
    shoal_buf b;
    TT_OK(shoal_buf_create(&b, 0));
    node_peer_msg pong = {.type = NODE_PEER_PONG, .request_id = got.request_id};
    TT_OK(node_peer_msg_encode(&pong, &b));
    zmq_send(router, zmq_msg_data(&rid), zmq_msg_size(&rid), ZMQ_SNDMORE);
    zmq_send(router, b.data, b.len, ZMQ_SNDMORE);
    zmq_send(router, "", 0, 0);
    for (int waited = 0; atomic_load(&result) < 0 && waited < 3000; waited += 10)
        usleep(10000);
    node_peer_stats cs;
    node_peer_stats_get(c, &cs);
    TT_CHECK(atomic_load(&result) == SHOAL_ERR_NODE_PEER, "a PONG answering a GET completes it with %s",
             shoal_error_name((shoal_err)atomic_load(&result)));
    TT_CHECK(cs.malformed == 2 && cs.timeouts == 0, "malformed=%llu timeouts=%llu", (unsigned long long)cs.malformed,
             (unsigned long long)cs.timeouts);
    shoal_buf_destroy(&b);
    zmq_msg_close(&rid), zmq_msg_close(&hdr), zmq_msg_close(&pl);
    node_peer_delete(c);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

TT_TEST(test_node_peer_keypair_persisted_with_mode_0600_and_reloaded_identically)
{
    char *dir = tt_tmpdir("peer-key");
    char state[4096], path[4200];
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(path, sizeof path, "%s/%s", state, NODE_PEER_KEY_FILE);
    keypair a, b;
    TT_OK(node_peer_keypair_load_or_create(state, a.pub, a.sec));
    struct stat st;
    TT_CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "key file mode %o", (unsigned)(st.st_mode & 0777));
    TT_CHECK(stat(state, &st) == 0 && (st.st_mode & 0077) == 0, "state dir mode %o", (unsigned)(st.st_mode & 0777));
    TT_OK(node_peer_keypair_load_or_create(state, b.pub, b.sec));
    TT_CHECK(memcmp(&a, &b, sizeof a) == 0, "reloaded key pair differs");
    char zs[41], zp[41], derived[41];
    zmq_z85_encode(zs, a.sec, 32);
    zmq_z85_encode(zp, a.pub, 32);
    TT_CHECK(zmq_curve_public(derived, zs) == 0 && strcmp(derived, zp) == 0, "public key belongs to the secret key");

    TT_CHECK(chmod(path, 0644) == 0, "chmod");
    TT_CHECK(node_peer_keypair_load_or_create(state, b.pub, b.sec) == -1 && shoal_error_code() == SHOAL_ERR_NODE_CONFIG,
             "a world-readable key file is refused (%s)", shoal_error_message());
    TT_CHECK(strstr(shoal_error_message(), zs) == NULL, "the secret never appears in a message");
    tt_rmtree(dir);
    free(dir);
}

TT_MAIN()
