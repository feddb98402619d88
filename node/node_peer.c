/*
 * node_peer: the peer protocol's ZeroMQ transport.
 *
 * Threads. libzmq sockets are not thread-safe, so exactly one thread — the I/O thread — touches
 * the ROUTER (server) and DEALER (client, one per peer) sockets once node_peer_new has handed them
 * over. Every other thread talks to it through one mutex-protected FIFO of commands (connect,
 * disconnect, send a request, send a reply) and an eventfd that zmq_poll watches next to the
 * sockets; a command that lands in an empty queue writes the eventfd once, so a burst of
 * submissions costs one wake-up. The ZAP handler is a second thread with its own REP socket.
 *
 * Why the ZAP handler comes first. A CURVE server asks the ZAP endpoint inproc://zeromq.zap.01
 * of its context whether to admit a client; when nothing is bound there libzmq admits everyone
 * (the "Stonehouse" legacy behaviour, changeable only through a draft option this libzmq lacks).
 * So node_peer_new starts the handler, waits until its REP socket is bound, and refuses to bind
 * the ROUTER if that failed. The handler answers 200 only for keys on the allow-list and sets
 * the ZAP user id to the key in hex. As a second line, the I/O thread reads that user id from
 * every request (zmq_msg_gets "User-Id") and checks it against the list again: a request from a
 * connection whose key was removed after its handshake, or from one that somehow bypassed ZAP
 * (empty user id), is dropped and counted.
 *
 * Requests in flight. A submission is encoded on the caller's thread (its strings may be
 * temporaries), counted against its link's bound under the mutex (full: SHOAL_ERR_NOSPACE at
 * once, nothing queued) and queued. The I/O thread sends it, files it in a hash by request id and
 * in a list ordered by deadline, and completes it when the reply with that id arrives, or when the
 * deadline passes (the head of the list is the next to expire, so zmq_poll sleeps until then).
 * A reply that arrives after its request timed out finds nothing in the hash and is dropped.
 *
 * Payloads. A payload handed over with a free function becomes a zmq_msg_init_data message:
 * libzmq sends the caller's bytes and frees them itself when done, which may be after the request
 * completed (a timed-out request's frame can still sit in a queue). Received payloads are
 * zmq_msg_t frames the caller reads in place through the response or incoming handle.
 *
 * Server requests are handed to the daemon as node_peer_incoming handles that own their frames.
 * The daemon answers from any thread (node_peer_reply queues a command); at most max_incoming may
 * be unanswered, beyond that the I/O thread answers BUSY itself so load never grows memory.
 * Handles hold a reference on the node_peer, so answering after node_peer_delete is safe (it
 * fails with SHOAL_ERR_CLOSED) and the last one frees the structure.
 */
#include "node_peer.h"

#include "shoal_assert.h"
#include "shoal_bytes.h"
#include "shoal_env.h"
#include "shoal_error.h"
#include "shoal_log.h"
#include "shoal_thread.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_DOMAIN "shoal"
#define MAX_LINKS 4096          /* peers one node talks to; far above any training cluster */
#define INFLIGHT_BUCKETS 4096   /* hash of requests in flight, by request id */
#define RECV_BURST 64           /* messages taken from one socket before looking at the others */
#define ZAP_MAX_FRAMES 8

typedef enum cmd_kind { CMD_CONNECT, CMD_DISCONNECT, CMD_REQUEST, CMD_REPLY } cmd_kind;

typedef struct peer_link {
    int id;
    bool closing;            /* disconnect queued: no new submissions (under mu) */
    unsigned inflight;       /* submitted and not completed (under mu) */
    char endpoint[SHOAL_ADDR_STRLEN + 8];
    uint8_t server_key[NODE_PEER_KEY_LEN];
    void *sock;              /* I/O thread only */
} peer_link;

/* One queued command; a CMD_REQUEST stays alive, in the hash and the deadline list, until done. */
typedef struct cmd {
    struct cmd *next;        /* command FIFO */
    cmd_kind kind;
    peer_link *link;
    struct cmd *hnext;       /* in-flight hash chain */
    struct cmd *dprev, *dnext; /* in-flight list, ordered by deadline */
    uint64_t id;
    uint64_t deadline_us;
    node_peer_type reply_type;
    node_peer_done_fn done;
    void *ud;
    node_peer_response *resp; /* CMD_REQUEST: allocated at submission, so completing never allocates */
    zmq_msg_t rid;           /* CMD_REPLY: the ROUTER routing id */
    zmq_msg_t header;
    zmq_msg_t payload;
    size_t payload_len;
} cmd;

struct node_peer {
    atomic_int refs;         /* the owner plus every unanswered incoming */
    void *ctx;
    void *router;            /* NULL for a client-only node */
    char endpoint[SHOAL_ADDR_STRLEN + 16];
    uint8_t public_key[NODE_PEER_KEY_LEN];
    uint8_t secret_key[NODE_PEER_KEY_LEN];
    node_peer_handlers handlers;
    void *handlers_ud;
    unsigned queue_per_peer;
    unsigned max_incoming;
    int wake_fd;

    pthread_t io_thread;
    bool io_started;
    pthread_t zap_thread;
    bool zap_started;

    pthread_mutex_t allow_mu;
    pthread_cond_t allow_cond; /* signalled by node_peer_allow_set (ZAP grace, below) */
    uint8_t (*allow)[NODE_PEER_KEY_LEN]; /* sorted */
    size_t allow_n;
    uint64_t grace_window_us; /* ZAP thread only: start of the current one-second window */
    unsigned grace_used;      /* ZAP thread only: grace waits spent in that window */

    pthread_mutex_t mu;      /* guards: queue, links[], link->inflight/closing, stopping, closed */
    cmd *q_head, *q_tail;
    peer_link *links[MAX_LINKS];
    bool stopping;           /* the I/O thread should finish */
    bool closed;             /* the I/O thread finished: replies are refused */

    /* I/O thread only */
    cmd *inflight[INFLIGHT_BUCKETS];
    cmd *dl_head, *dl_tail;
    peer_link *polled[MAX_LINKS];
    size_t n_polled;

    atomic_uint_fast64_t next_id;
    atomic_uint_fast64_t membership_version;
    atomic_uint incoming_open;

    atomic_uint_fast64_t st_requests_in, st_requests_out, st_bytes_in, st_bytes_out, st_malformed,
        st_zap_denied, st_revoked, st_busy, st_timeouts, st_queue_full;
};

struct node_peer_incoming {
    node_peer *p;
    zmq_msg_t rid;
    zmq_msg_t header;
    zmq_msg_t payload;
    node_peer_msg msg;
    uint8_t key[NODE_PEER_KEY_LEN];
};

struct node_peer_response {
    shoal_err result;
    node_peer_msg msg;
    zmq_msg_t header;
    zmq_msg_t payload;
};

static void count(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static void node_peer_release(node_peer *p);

/* ---- key pair ------------------------------------------------------------------------------ */

static int keyfile_parse(const char *path, char *text, uint8_t pub[32], uint8_t sec[32])
{
    bool have_pub = false, have_sec = false;
    shoal_cursor rest = shoal_cursor_from_str(text);
    while (rest.len > 0) {
        shoal_cursor line = shoal_cursor_trim(shoal_cursor_split(&rest, '\n'));
        if (line.len == 0 || line.ptr[0] == '#')
            continue;
        shoal_cursor name = shoal_cursor_trim(shoal_cursor_split(&line, '='));
        shoal_cursor value = shoal_cursor_trim(line);
        uint8_t *dest = shoal_cursor_eq_str(name, "public") ? pub : shoal_cursor_eq_str(name, "secret") ? sec : NULL;
        if (dest == NULL || value.len != 40)
            return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "peer key file %s: unexpected line '%.*s'", path,
                                   (int)(name.len > 16 ? 16 : name.len), name.ptr);
        char z85[41];
        memcpy(z85, value.ptr, 40);
        z85[40] = '\0';
        uint8_t *ok = zmq_z85_decode(dest, z85);
        sodium_memzero(z85, sizeof z85);
        if (ok == NULL)
            return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "peer key file %s: %.*s key is not Z85", path,
                                   (int)name.len, name.ptr);
        *(dest == pub ? &have_pub : &have_sec) = true;
    }
    if (!have_pub || !have_sec)
        return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "peer key file %s: needs a public and a secret key", path);
    char z85_sec[41], z85_pub[41];
    uint8_t derived[32];
    int rc = -1;
    if (zmq_z85_encode(z85_sec, sec, 32) == NULL || zmq_curve_public(z85_pub, z85_sec) != 0 ||
        zmq_z85_decode(derived, z85_pub) == NULL) {
        shoal_error_set(SHOAL_ERR_NODE_PEER, "peer key file %s: libzmq cannot derive the public key (%s)", path,
                        zmq_strerror(errno));
        goto fail_wipe;
    }
    if (sodium_memcmp(derived, pub, 32) != 0) {
        shoal_error_set(SHOAL_ERR_NODE_CONFIG, "peer key file %s: public key does not belong to the secret key", path);
        goto fail_wipe;
    }
    rc = 0;
fail_wipe:
    sodium_memzero(z85_sec, sizeof z85_sec);
    return rc;
}

static int keyfile_load(const char *path, int fd, uint8_t pub[32], uint8_t sec[32])
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return shoal_error_errno(errno, "stat %s", path);
    if (!S_ISREG(st.st_mode))
        return shoal_error_set(SHOAL_ERR_NODE_CONFIG, "peer key file %s is not a regular file", path);
    if (st.st_mode & 077)
        return shoal_error_set(SHOAL_ERR_NODE_CONFIG,
                               "peer key file %s has mode %04o: it holds a secret key, make it 0600", path,
                               (unsigned)(st.st_mode & 07777));
    char text[1024];
    ssize_t n = read(fd, text, sizeof text - 1);
    if (n < 0)
        return shoal_error_errno(errno, "read %s", path);
    text[n] = '\0';
    int rc = keyfile_parse(path, text, pub, sec);
    sodium_memzero(text, sizeof text);
    return rc;
}

/* Writes a fresh key pair to a temporary file and links it into place, so a crash never leaves a
 * half-written key file and two processes racing to create one end up sharing the first. */
static int keyfile_create(const char *dir, const char *path)
{
    char tmp[4096];
    char z85_pub[41], z85_sec[41];
    char text[256];
    int rc = -1;
    if (snprintf(tmp, sizeof tmp, "%s/.%s.%ld.tmp", dir, NODE_PEER_KEY_FILE, (long)getpid()) >= (int)sizeof tmp)
        return shoal_error_set(SHOAL_ERR_INVAL, "state dir path too long: %s", dir);
    if (zmq_curve_keypair(z85_pub, z85_sec) != 0)
        return shoal_error_set(SHOAL_ERR_NODE_PEER, "create peer key pair: libzmq has no CURVE (%s)",
                               zmq_strerror(errno));
    int len = snprintf(text, sizeof text, "# shoald CURVE key pair: the secret key must stay secret (mode 0600)\n"
                                          "public = %s\nsecret = %s\n", z85_pub, z85_sec);
    if (len < 0 || len >= (int)sizeof text) {
        shoal_error_set(SHOAL_ERR_NODE_PEER, "peer key file %s: text does not fit", path);
        goto fail_wipe;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        shoal_error_errno(errno, "create %s", tmp);
        goto fail_wipe;
    }
    if (write(fd, text, (size_t)len) != len || fsync(fd) != 0) {
        shoal_error_errno(errno, "write %s", tmp);
        goto fail_unlink;
    }
    if (link(tmp, path) != 0 && errno != EEXIST) {
        shoal_error_errno(errno, "link %s to %s", tmp, path);
        goto fail_unlink;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    rc = 0;
fail_unlink:
    close(fd);
    unlink(tmp);
fail_wipe:
    sodium_memzero(z85_sec, sizeof z85_sec);
    sodium_memzero(text, sizeof text);
    return rc;
}

int node_peer_keypair_load_or_create(const char *dir, uint8_t pub[NODE_PEER_KEY_LEN], uint8_t sec[NODE_PEER_KEY_LEN])
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, NODE_PEER_KEY_FILE) >= (int)sizeof path)
        return shoal_error_set(SHOAL_ERR_INVAL, "state dir path too long: %s", dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return shoal_error_errno(errno, "create state dir %s", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
        if (keyfile_create(dir, path) != 0)
            return -1;
        LOG_INFO("node", "peer_key_created", "path=%s", path);
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0)
        return shoal_error_errno(errno, "open %s", path);
    int rc = keyfile_load(path, fd, pub, sec);
    close(fd);
    return rc;
}

/* ---- allow-list and ZAP handler ------------------------------------------------------------ */

static int key_cmp(const void *a, const void *b)
{
    return memcmp(a, b, NODE_PEER_KEY_LEN);
}

static bool allow_contains(node_peer *p, const uint8_t *key)
{
    pthread_mutex_lock(&p->allow_mu);
    bool found = p->allow_n > 0 && bsearch(key, p->allow, p->allow_n, NODE_PEER_KEY_LEN, key_cmp) != NULL;
    pthread_mutex_unlock(&p->allow_mu);
    return found;
}

int node_peer_allow_set(node_peer *p, const uint8_t (*keys)[NODE_PEER_KEY_LEN], size_t n)
{
    uint8_t (*copy)[NODE_PEER_KEY_LEN] = NULL;
    if (n > 0) {
        copy = malloc(n * NODE_PEER_KEY_LEN);
        if (copy == NULL)
            return shoal_error_set(SHOAL_ERR_NOMEM, "peer allow-list of %zu keys", n);
        memcpy(copy, keys, n * NODE_PEER_KEY_LEN);
        qsort(copy, n, NODE_PEER_KEY_LEN, key_cmp);
    }
    pthread_mutex_lock(&p->allow_mu);
    uint8_t (*old)[NODE_PEER_KEY_LEN] = p->allow;
    p->allow = copy;
    p->allow_n = n;
    pthread_cond_broadcast(&p->allow_cond);
    pthread_mutex_unlock(&p->allow_mu);
    free(old);
    return 0;
}

/*
 * ZAP grace. When node A learns of node B through gossip it dials B at once, and B may still be a
 * few milliseconds from learning of A (the two learn from the same push-pull exchange, one message
 * apart). Denying A then would be final: libzmq never redials a connection whose handshake was
 * refused, and the requests queued on it are lost until a later send finds the link dead. So an
 * unknown key waits up to ZAP_GRACE_MS for the allow-list to change before it is refused. The
 * wait holds the ZAP thread, so at most ZAP_GRACE_PER_S keys get one each second; past that,
 * unknown keys are refused at once and a stranger dialling in a loop cannot stall handshakes.
 */
#define ZAP_GRACE_MS 300
#define ZAP_GRACE_PER_S 4

static bool allow_wait(node_peer *p, const uint8_t *key)
{
    uint64_t now = shoal_clock_mono_us();
    if (now - p->grace_window_us >= 1000000) {
        p->grace_window_us = now;
        p->grace_used = 0;
    }
    if (p->grace_used >= ZAP_GRACE_PER_S)
        return false;
    p->grace_used++;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long)ZAP_GRACE_MS * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&p->allow_mu);
    bool found = false;
    for (;;) {
        found = p->allow_n > 0 && bsearch(key, p->allow, p->allow_n, NODE_PEER_KEY_LEN, key_cmp) != NULL;
        if (found || pthread_cond_timedwait(&p->allow_cond, &p->allow_mu, &until) == ETIMEDOUT)
            break;
    }
    if (!found)
        found = p->allow_n > 0 && bsearch(key, p->allow, p->allow_n, NODE_PEER_KEY_LEN, key_cmp) != NULL;
    pthread_mutex_unlock(&p->allow_mu);
    return found;
}

static int zap_send(void *sock, const void *data, size_t len, bool more)
{
    return zmq_send(sock, data, len, more ? ZMQ_SNDMORE : 0) < 0 ? -1 : 0;
}

/* Answers one ZAP request (RFC 27): frames version, request id, domain, address, identity,
 * mechanism, credentials. Only CURVE with an allowed key gets 200. */
static void zap_answer(node_peer *p, void *sock, zmq_msg_t *f, int n)
{
    bool allowed = false;
    char user[2 * NODE_PEER_KEY_LEN + 1] = "";
    if (n == 7 && zmq_msg_size(&f[0]) == 3 && memcmp(zmq_msg_data(&f[0]), "1.0", 3) == 0 &&
        zmq_msg_size(&f[5]) == 5 && memcmp(zmq_msg_data(&f[5]), "CURVE", 5) == 0 &&
        zmq_msg_size(&f[6]) == NODE_PEER_KEY_LEN) {
        shoal_hex(user, zmq_msg_data(&f[6]), NODE_PEER_KEY_LEN);
        allowed = allow_contains(p, zmq_msg_data(&f[6])) || allow_wait(p, zmq_msg_data(&f[6]));
    }
    if (!allowed) {
        count(&p->st_zap_denied, 1);
        const char *addr = n > 3 ? zmq_msg_data(&f[3]) : "";
        LOG_DEBUG("node", "peer_zap_denied", "key=%s address=%.*s", user[0] ? user : "-",
                  n > 3 ? (int)zmq_msg_size(&f[3]) : 0, addr);
        user[0] = '\0';
    }
    zap_send(sock, "1.0", 3, true);
    zap_send(sock, n > 1 ? zmq_msg_data(&f[1]) : "", n > 1 ? zmq_msg_size(&f[1]) : 0, true);
    zap_send(sock, allowed ? "200" : "400", 3, true);
    zap_send(sock, allowed ? "OK" : "key not allowed", allowed ? 2 : 15, true);
    zap_send(sock, user, strlen(user), true);
    zap_send(sock, "", 0, false);
}

/* The ZAP handler's thread: says it is ready once bound (node_peer_new waits for that). */
static void *zap_main(void *arg, shoal_thread_handshake *hs)
{
    node_peer *p = arg;
    void *sock = zmq_socket(p->ctx, ZMQ_REP);
    int linger = 0;
    if (sock == NULL || zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(sock, ZAP_ENDPOINT) != 0) {
        const char *why = zmq_strerror(errno);
        LOG_ERROR("node", "peer_zap_failed", "error=\"%s\"", why);
        shoal_error_set(SHOAL_ERR_NODE_PEER,
                        "peer transport: the ZAP handler could not bind %s (%s); refusing to serve", ZAP_ENDPOINT, why);
        if (sock)
            zmq_close(sock);
        shoal_thread_ready(hs, -1);
        return NULL;
    }
    shoal_thread_ready(hs, 0);
    for (;;) {
        zmq_msg_t f[ZAP_MAX_FRAMES];
        int n = 0, more = 1;
        bool term = false;
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, sock, 0) < 0) {
                zmq_msg_close(&part);
                if (errno == EINTR)
                    continue;
                term = true;
                break;
            }
            more = zmq_msg_more(&part);
            if (n < ZAP_MAX_FRAMES)
                f[n++] = part;
            else
                zmq_msg_close(&part);
        }
        if (!term)
            zap_answer(p, sock, f, n);
        for (int i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
        if (term)
            break;
    }
    zmq_close(sock);
    return NULL;
}

/* ---- shared helpers ------------------------------------------------------------------------ */

/* Turns a node_peer_payload into a frame, taking ownership (see node_peer_payload). */
static int payload_msg(zmq_msg_t *m, node_peer_payload pl)
{
    if (pl.len > 0 && pl.free_fn != NULL) {
        if (zmq_msg_init_data(m, (void *)pl.data, pl.len, pl.free_fn, pl.hint) == 0)
            return 0;
        pl.free_fn((void *)pl.data, pl.hint);
        zmq_msg_init(m);
        return shoal_error_set(SHOAL_ERR_NOMEM, "peer payload frame of %zu bytes", pl.len);
    }
    if (pl.free_fn != NULL)
        pl.free_fn((void *)pl.data, pl.hint);
    if (zmq_msg_init_size(m, pl.len) != 0) {
        zmq_msg_init(m);
        return shoal_error_set(SHOAL_ERR_NOMEM, "peer payload frame of %zu bytes", pl.len);
    }
    if (pl.len > 0)
        memcpy(zmq_msg_data(m), pl.data, pl.len);
    return 0;
}

/* Encodes `m` into a fresh header frame. */
static int header_msg(zmq_msg_t *frame, const node_peer_msg *m)
{
    shoal_buf b;
    int rc = -1;
    zmq_msg_init(frame);
    if (shoal_buf_create(&b, 256) != 0)
        return -1;
    if (node_peer_msg_encode(m, &b) != 0)
        goto fail_buf;
    zmq_msg_close(frame);
    if (zmq_msg_init_size(frame, b.len) != 0) {
        zmq_msg_init(frame);
        shoal_error_set(SHOAL_ERR_NOMEM, "peer header frame");
        goto fail_buf;
    }
    memcpy(zmq_msg_data(frame), b.data, b.len);
    rc = 0;
fail_buf:
    shoal_buf_destroy(&b);
    return rc;
}

static void cmd_free(cmd *c)
{
    if (c == NULL)
        return;
    if (c->kind == CMD_REQUEST || c->kind == CMD_REPLY) {
        zmq_msg_close(&c->header);
        zmq_msg_close(&c->payload);
    }
    if (c->kind == CMD_REPLY)
        zmq_msg_close(&c->rid);
    node_peer_response_delete(c->resp);
    free(c);
}

/* Appends a command; wakes the I/O thread when the queue was empty. -1 with CLOSED when the I/O
 * thread is gone (the caller still owns c). Called with mu held. */
static int queue_push_locked(node_peer *p, cmd *c, bool *wake)
{
    SHOAL_ASSERT_LOCKED(&p->mu);
    if (p->stopping || p->closed)
        return shoal_error_set(SHOAL_ERR_CLOSED, "peer transport is shutting down");
    c->next = NULL;
    *wake = p->q_head == NULL;
    if (p->q_tail)
        p->q_tail->next = c;
    else
        p->q_head = c;
    p->q_tail = c;
    return 0;
}

static void wake_io(node_peer *p)
{
    uint64_t one = 1;
    ssize_t n = write(p->wake_fd, &one, sizeof one);
    (void)n; /* EAGAIN means the counter is already non-zero: the thread will wake anyway */
}

/* ---- responses ----------------------------------------------------------------------------- */

static node_peer_response *response_new(shoal_err result)
{
    node_peer_response *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->result = result;
    zmq_msg_init(&r->header);
    zmq_msg_init(&r->payload);
    return r;
}

shoal_err node_peer_response_result(const node_peer_response *r)
{
    return r->result;
}

const node_peer_msg *node_peer_response_msg(const node_peer_response *r)
{
    return r->result == SHOAL_OK ? &r->msg : NULL;
}

const uint8_t *node_peer_response_payload(const node_peer_response *r, size_t *len)
{
    static const uint8_t empty[1];
    *len = zmq_msg_size((zmq_msg_t *)&r->payload);
    return *len ? zmq_msg_data((zmq_msg_t *)&r->payload) : empty;
}

void node_peer_response_delete(node_peer_response *r)
{
    if (r == NULL)
        return;
    zmq_msg_close(&r->header);
    zmq_msg_close(&r->payload);
    free(r);
}

/* ---- the I/O thread: client side ----------------------------------------------------------- */

static void inflight_insert(node_peer *p, cmd *c)
{
    cmd **b = &p->inflight[c->id % INFLIGHT_BUCKETS];
    c->hnext = *b;
    *b = c;
    /* Most requests share one timeout, so the new deadline is usually the latest: walk from the tail. */
    cmd *after = p->dl_tail;
    while (after && after->deadline_us > c->deadline_us)
        after = after->dprev;
    c->dprev = after;
    c->dnext = after ? after->dnext : p->dl_head;
    if (c->dnext)
        c->dnext->dprev = c;
    else
        p->dl_tail = c;
    if (after)
        after->dnext = c;
    else
        p->dl_head = c;
}

static cmd *inflight_take(node_peer *p, uint64_t id)
{
    for (cmd **b = &p->inflight[id % INFLIGHT_BUCKETS]; *b; b = &(*b)->hnext) {
        cmd *c = *b;
        if (c->id != id)
            continue;
        *b = c->hnext;
        if (c->dprev)
            c->dprev->dnext = c->dnext;
        else
            p->dl_head = c->dnext;
        if (c->dnext)
            c->dnext->dprev = c->dprev;
        else
            p->dl_tail = c->dprev;
        return c;
    }
    return NULL;
}

/* Finishes a request that is no longer in the hash: releases its slot on the link, hands its
 * response with result `err` to the callback, frees the command. */
static void request_complete(node_peer *p, cmd *c, shoal_err err)
{
    pthread_mutex_lock(&p->mu);
    c->link->inflight--;
    pthread_mutex_unlock(&p->mu);
    node_peer_response *r = c->resp;
    c->resp = NULL;
    r->result = err;
    c->done(c->ud, r);
    cmd_free(c);
}

static void link_open(node_peer *p, peer_link *link);

/* Drops a link's socket from the polled set (its slot is taken by the last one). */
static void link_unpoll(node_peer *p, peer_link *link)
{
    for (size_t i = 0; i < p->n_polled; i++) {
        if (p->polled[i] == link) {
            p->polled[i] = p->polled[--p->n_polled];
            break;
        }
    }
}

/* A DEALER whose connection was refused at the CURVE handshake (the server's ZAP handler did not
 * admit this node yet: gossip had not told it about us) is never reconnected by libzmq, which ends
 * the session for good after a handshake failure. Such a link has no pipe left, so a send fails at
 * once with EAGAIN (a live link stays below the high-water mark, see link_open).
 * Replacing the socket dials again; by the next request the peer has usually learnt of us. Runs in
 * run_commands, where polled[] may change. */
static void link_redial(node_peer *p, peer_link *link)
{
    link_unpoll(p, link);
    if (link->sock)
        zmq_close(link->sock);
    link->sock = NULL;
    link_open(p, link);
    LOG_DEBUG("node", "peer_redial", "peer=%s", link->endpoint);
}

static void request_send(node_peer *p, cmd *c)
{
    inflight_insert(p, c);
    size_t plen = c->payload_len;
    if (c->link->sock == NULL || zmq_msg_send(&c->header, c->link->sock, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        int err = c->link->sock ? errno : ENOTCONN;
        LOG_DEBUG("node", "peer_send_failed", "peer=%s error=\"%s\"", c->link->endpoint, zmq_strerror(err));
        peer_link *link = c->link;
        request_complete(p, inflight_take(p, c->id), SHOAL_ERR_NODE_PEER);
        if (err == EAGAIN || err == ENOTCONN)
            link_redial(p, link);
        return;
    }
    /* The rest of a multipart message cannot hit the high-water mark once its first frame went. */
    zmq_msg_send(&c->payload, c->link->sock, 0);
    count(&p->st_requests_out, 1);
    count(&p->st_bytes_out, plen);
}

/* Receives the remaining frames of a message whose first frame is in f[0]: f[1..] up to max,
 * closing any beyond. Returns the number of frames, or more than max when there were too many. */
static int recv_rest(void *sock, zmq_msg_t *f, int max)
{
    int n = 1;
    int more = zmq_msg_more(&f[0]);
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, 0) < 0) {
            zmq_msg_close(&part);
            break;
        }
        more = zmq_msg_more(&part);
        if (n < max)
            f[n] = part;
        else
            zmq_msg_close(&part);
        n++;
    }
    return n;
}

static void client_on_reply(node_peer *p, peer_link *link, zmq_msg_t *f, int n)
{
    node_peer_msg m;
    if (n != 2 || node_peer_msg_decode(shoal_cursor_from_mem(zmq_msg_data(&f[0]), zmq_msg_size(&f[0])),
                                       zmq_msg_size(&f[1]), &m) != 0) {
        count(&p->st_malformed, 1);
        LOG_DEBUG("node", "peer_malformed", "side=client peer=%s frames=%d error=\"%s\"", link->endpoint, n,
                  n != 2 ? "frame count" : shoal_error_message());
        return;
    }
    cmd *c = inflight_take(p, m.request_id);
    if (c == NULL)
        return; /* its request timed out or was closed already */
    if (c->link != link || m.type != c->reply_type) {
        count(&p->st_malformed, 1);
        request_complete(p, c, SHOAL_ERR_NODE_PEER);
        return;
    }
    node_peer_response *r = c->resp;
    zmq_msg_move(&r->header, &f[0]);
    zmq_msg_move(&r->payload, &f[1]);
    r->msg = m; /* replies carry no strings, so nothing borrows f[0] */
    count(&p->st_bytes_in, zmq_msg_size(&r->payload));
    request_complete(p, c, SHOAL_OK);
}

static void link_open(node_peer *p, peer_link *link)
{
    int linger = 0;
    /* Requests in flight are bounded by queue_per_peer, so only a stalled peer lets libzmq's queue
     * pass it (timed-out requests free their slots while their frames wait): the high-water mark
     * then bounds that memory too, and the EAGAIN it causes makes request_send redial. */
    int hwm = (int)p->queue_per_peer + 16;
    int64_t maxmsg = (int64_t)NODE_PEER_MAX_PAYLOAD + NODE_PEER_MAX_HEADER;
    void *s = zmq_socket(p->ctx, ZMQ_DEALER);
    if (s == NULL || zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 || zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0 ||
        zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, link->server_key, NODE_PEER_KEY_LEN) != 0 ||
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, p->public_key, NODE_PEER_KEY_LEN) != 0 ||
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, p->secret_key, NODE_PEER_KEY_LEN) != 0 ||
        zmq_connect(s, link->endpoint) != 0) {
        LOG_WARN("node", "peer_connect_failed", "peer=%s error=\"%s\"", link->endpoint, zmq_strerror(errno));
        if (s)
            zmq_close(s);
        return; /* requests on this link fail when sent */
    }
    link->sock = s;
    p->polled[p->n_polled++] = link;
}

/* Closes a link's socket and fails its requests; frees it. */
static void link_close(node_peer *p, peer_link *link)
{
    link_unpoll(p, link);
    for (cmd *c = p->dl_head, *next; c; c = next) {
        next = c->dnext;
        if (c->link == link)
            request_complete(p, inflight_take(p, c->id), SHOAL_ERR_CLOSED);
    }
    if (link->sock)
        zmq_close(link->sock);
    pthread_mutex_lock(&p->mu);
    p->links[link->id] = NULL;
    pthread_mutex_unlock(&p->mu);
    free(link);
}

static void expire(node_peer *p, uint64_t now)
{
    while (p->dl_head && p->dl_head->deadline_us <= now) {
        cmd *c = inflight_take(p, p->dl_head->id);
        count(&p->st_timeouts, 1);
        LOG_DEBUG("node", "peer_timeout", "peer=%s request=%llu", c->link->endpoint, (unsigned long long)c->id);
        request_complete(p, c, SHOAL_ERR_TIMEOUT);
    }
}

/* ---- the I/O thread: server side ----------------------------------------------------------- */

static void reply_send(node_peer *p, cmd *c)
{
    size_t plen = c->payload_len;
    if (p->router && zmq_msg_send(&c->rid, p->router, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
        zmq_msg_send(&c->header, p->router, ZMQ_SNDMORE);
        if (zmq_msg_send(&c->payload, p->router, 0) >= 0)
            count(&p->st_bytes_out, plen);
    }
    cmd_free(c);
}

/* Builds a reply command for request `req` (type, id and payload length filled in). Moves the
 * routing id out of `rid` (the caller still closes it) and takes the payload in every case. */
static cmd *reply_build(zmq_msg_t *rid, const node_peer_msg *req, const node_peer_msg *fields,
                        node_peer_payload payload)
{
    cmd *c = calloc(1, sizeof *c);
    node_peer_msg m = *fields;
    m.type = node_peer_reply_type(req->type);
    m.request_id = req->request_id;
    m.payload_len = payload.len;
    if (c == NULL) {
        shoal_error_set(SHOAL_ERR_NOMEM, "peer reply");
        if (payload.free_fn)
            payload.free_fn((void *)payload.data, payload.hint);
        return NULL;
    }
    c->kind = CMD_REPLY;
    zmq_msg_init(&c->rid);
    zmq_msg_move(&c->rid, rid);
    c->payload_len = payload.len;
    if (payload_msg(&c->payload, payload) != 0 || header_msg(&c->header, &m) != 0) {
        zmq_msg_init(&c->header);
        cmd_free(c);
        return shoal_error_wrap("peer %s reply to request %llu", node_peer_type_name(req->type),
                                (unsigned long long)req->request_id),
               NULL;
    }
    return c;
}

/* Answers a request from the I/O thread itself (PING, BUSY, no handler). A PING that names a work
 * item gets the daemon's word on it (on_work, which must not block), so a reader can tell an
 * owner still working on its block from one that is merely alive. */
static void reply_now(node_peer *p, zmq_msg_t *rid, const node_peer_msg *req, node_peer_status status)
{
    node_peer_msg fields = {.status = status,
                            .membership_version = atomic_load(&p->membership_version)};
    if (req->type == NODE_PEER_PING && req->has_work_id) {
        fields.has_work = true;
        fields.work = p->handlers.on_work ? p->handlers.on_work(p->handlers_ud, req->work_id) : NODE_PEER_IDLE;
    }
    node_peer_payload none = {0};
    cmd *c = reply_build(rid, req, &fields, none);
    if (c)
        reply_send(p, c);
}

static void server_on_request(node_peer *p, zmq_msg_t *f, int n)
{
    node_peer_incoming *in;
    uint8_t key[NODE_PEER_KEY_LEN];
    node_peer_msg m;
    if (n != 3) {
        count(&p->st_malformed, 1);
        LOG_DEBUG("node", "peer_malformed", "side=server frames=%d", n - 1);
        return;
    }
    const char *user = zmq_msg_gets(&f[1], "User-Id");
    /* The ZAP handler set the user id to the key in hex (zap_answer). */
    if (!user || strlen(user) != 2 * NODE_PEER_KEY_LEN || shoal_unhex(key, user, NODE_PEER_KEY_LEN) != 0 ||
        !allow_contains(p, key)) {
        count(&p->st_revoked, 1);
        LOG_DEBUG("node", "peer_revoked", "key=%s", user && user[0] ? user : "-");
        return;
    }
    if (node_peer_msg_decode(shoal_cursor_from_mem(zmq_msg_data(&f[1]), zmq_msg_size(&f[1])), zmq_msg_size(&f[2]),
                             &m) != 0 ||
        !node_peer_type_is_request(m.type)) {
        count(&p->st_malformed, 1);
        LOG_DEBUG("node", "peer_malformed", "side=server key=%s error=\"%s\"", user,
                  node_peer_type_is_request(m.type) ? shoal_error_message() : "not a request");
        return;
    }
    count(&p->st_requests_in, 1);
    count(&p->st_bytes_in, zmq_msg_size(&f[2]));
    void (*handler)(void *, node_peer_incoming *) = m.type == NODE_PEER_GET    ? p->handlers.on_get_block
                                                    : m.type == NODE_PEER_PUT  ? p->handlers.on_put_block
                                                    : m.type == NODE_PEER_LIST ? p->handlers.on_list
                                                    : m.type == NODE_PEER_HEAD ? p->handlers.on_head
                                                                               : NULL;
    if (m.type == NODE_PEER_PING || handler == NULL) {
        reply_now(p, &f[0], &m, m.type == NODE_PEER_PING ? NODE_PEER_OK : NODE_PEER_ERROR);
        return;
    }
    if (atomic_load(&p->incoming_open) >= p->max_incoming || (in = calloc(1, sizeof *in)) == NULL) {
        count(&p->st_busy, 1);
        reply_now(p, &f[0], &m, NODE_PEER_BUSY);
        return;
    }
    atomic_fetch_add(&p->incoming_open, 1);
    atomic_fetch_add(&p->refs, 1);
    in->p = p;
    zmq_msg_init(&in->rid);
    zmq_msg_init(&in->header);
    zmq_msg_init(&in->payload);
    zmq_msg_move(&in->rid, &f[0]);
    zmq_msg_move(&in->header, &f[1]);
    zmq_msg_move(&in->payload, &f[2]);
    /* Moving a zmq_msg_t keeps its data where it is, so the decoded strings still point into it. */
    in->msg = m;
    memcpy(in->key, key, sizeof key);
    handler(p->handlers_ud, in); /* the caller closes the frames, emptied by the moves */
}

/* Takes up to RECV_BURST messages from one socket. */
static void drain_socket(node_peer *p, void *sock, peer_link *link)
{
    for (int burst = 0; burst < RECV_BURST; burst++) {
        zmq_msg_t f[3];
        zmq_msg_init(&f[0]);
        if (zmq_msg_recv(&f[0], sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&f[0]);
            return;
        }
        int n = recv_rest(sock, f, 3);
        if (link)
            client_on_reply(p, link, f, n);
        else
            server_on_request(p, f, n);
        for (int i = 0; i < n && i < 3; i++)
            zmq_msg_close(&f[i]);
    }
}

/* Runs the queued commands in order. Returns false once the thread should stop. */
static bool run_commands(node_peer *p)
{
    pthread_mutex_lock(&p->mu);
    cmd *c = p->q_head;
    p->q_head = p->q_tail = NULL;
    bool stop = p->stopping;
    pthread_mutex_unlock(&p->mu);
    while (c) {
        cmd *next = c->next;
        switch (c->kind) {
        case CMD_CONNECT:
            link_open(p, c->link);
            free(c);
            break;
        case CMD_DISCONNECT:
            link_close(p, c->link);
            free(c);
            break;
        case CMD_REQUEST:
            request_send(p, c);
            break;
        case CMD_REPLY:
            reply_send(p, c);
            break;
        }
        c = next;
    }
    return !stop;
}

static void *io_main(void *arg)
{
    node_peer *p = arg;
    zmq_pollitem_t items[2 + MAX_LINKS];
    for (;;) {
        size_t n = 0;
        items[n++] = (zmq_pollitem_t){.fd = p->wake_fd, .events = ZMQ_POLLIN};
        if (p->router)
            items[n++] = (zmq_pollitem_t){.socket = p->router, .events = ZMQ_POLLIN};
        size_t first_link = n;
        for (size_t i = 0; i < p->n_polled; i++)
            items[n++] = (zmq_pollitem_t){.socket = p->polled[i]->sock, .events = ZMQ_POLLIN};
        long timeout = -1;
        if (p->dl_head) {
            uint64_t now = shoal_clock_mono_us();
            timeout = p->dl_head->deadline_us <= now ? 0 : (long)((p->dl_head->deadline_us - now + 999) / 1000);
        }
        if (zmq_poll(items, (int)n, timeout) < 0 && errno != EINTR) {
            LOG_ERROR("node", "peer_poll_failed", "error=\"%s\"", zmq_strerror(errno));
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            uint64_t v;
            ssize_t r = read(p->wake_fd, &v, sizeof v);
            (void)r;
        }
        if (p->router && (items[1].revents & ZMQ_POLLIN))
            drain_socket(p, p->router, NULL);
        /* polled[] changes only in run_commands, so it still matches items[] here. */
        for (size_t i = first_link; i < n; i++)
            if (items[i].revents & ZMQ_POLLIN)
                drain_socket(p, p->polled[i - first_link]->sock, p->polled[i - first_link]);
        expire(p, shoal_clock_mono_us());
        if (!run_commands(p))
            break;
    }
    /* Shut down: refuse new commands, then fail or free everything left. */
    pthread_mutex_lock(&p->mu);
    p->closed = true;
    pthread_mutex_unlock(&p->mu);
    run_commands(p);
    while (p->dl_head)
        request_complete(p, inflight_take(p, p->dl_head->id), SHOAL_ERR_CLOSED);
    for (int i = 0; i < MAX_LINKS; i++)
        if (p->links[i])
            link_close(p, p->links[i]);
    if (p->router)
        zmq_close(p->router);
    p->router = NULL;
    return NULL;
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

/* Binds the ROUTER at "ADDR:PORT" (PORT 0: the kernel picks) and records the endpoint. */
static int server_bind(node_peer *p, const char *bind)
{
    shoal_addr a;
    char text[SHOAL_ADDR_STRLEN + 8], ep[SHOAL_ADDR_STRLEN + 32];
    /* shoal_addr_parse wants a real port; parse ":0" as ":1" and bind to "*" (any free port). */
    const char *colon = strrchr(bind, ':');
    bool any_port = colon && strcmp(colon, ":0") == 0;
    snprintf(text, sizeof text, "%.*s%s", any_port ? (int)(colon - bind) : (int)strlen(bind), bind,
             any_port ? ":1" : "");
    if (shoal_addr_parse(text, 0, &a) != 0)
        return shoal_error_wrap("peer bind address");
    shoal_addr_format(&a, text);
    *strrchr(text, ':') = '\0';
    if (any_port)
        snprintf(ep, sizeof ep, "tcp://%s:*", text);
    else
        snprintf(ep, sizeof ep, "tcp://%s:%u", text, (unsigned)a.port);

    int one = 1, linger = 0, ipv6 = a.family == 6;
    int64_t maxmsg = (int64_t)NODE_PEER_MAX_PAYLOAD + NODE_PEER_MAX_HEADER;
    void *s = zmq_socket(p->ctx, ZMQ_ROUTER);
    if (s == NULL || zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(s, ZMQ_IPV6, &ipv6, sizeof ipv6) != 0 ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0 ||
        zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, ZAP_DOMAIN, strlen(ZAP_DOMAIN)) != 0 ||
        zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, p->secret_key, NODE_PEER_KEY_LEN) != 0) {
        shoal_error_set(SHOAL_ERR_NODE_PEER, "peer server socket: %s", zmq_strerror(errno));
        goto fail_sock;
    }
    if (zmq_bind(s, ep) != 0) {
        shoal_error_set(SHOAL_ERR_IO, "bind peer socket %s: %s", bind, zmq_strerror(errno));
        goto fail_sock;
    }
    char last[SHOAL_ADDR_STRLEN + 16];
    size_t last_len = sizeof last;
    if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, last, &last_len) != 0 || strncmp(last, "tcp://", 6) != 0) {
        shoal_error_set(SHOAL_ERR_NODE_PEER, "peer socket %s: no endpoint", bind);
        goto fail_sock;
    }
    snprintf(p->endpoint, sizeof p->endpoint, "%s", last + 6);
    p->router = s;
    return 0;
fail_sock:
    if (s)
        zmq_close(s);
    return -1;
}

node_peer *node_peer_new(const node_peer_config *cfg)
{
    node_peer *p = calloc(1, sizeof *p);
    if (p == NULL)
        return shoal_error_set(SHOAL_ERR_NOMEM, "peer transport"), NULL;
    atomic_init(&p->refs, 1);
    memcpy(p->public_key, cfg->public_key, NODE_PEER_KEY_LEN);
    memcpy(p->secret_key, cfg->secret_key, NODE_PEER_KEY_LEN);
    if (cfg->handlers)
        p->handlers = *cfg->handlers;
    p->handlers_ud = cfg->handlers_ud;
    p->queue_per_peer = cfg->queue_per_peer ? cfg->queue_per_peer : 64;
    p->max_incoming = cfg->max_incoming ? cfg->max_incoming : 1024;
    atomic_init(&p->next_id, 1);
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->allow_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->allow_cond, &ca);
    pthread_condattr_destroy(&ca);
    p->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->wake_fd < 0) {
        shoal_error_errno(errno, "peer transport eventfd");
        goto fail;
    }
    p->ctx = zmq_ctx_new();
    int io_threads = cfg->io_threads > 0 ? cfg->io_threads : 1;
    if (p->ctx == NULL || zmq_ctx_set(p->ctx, ZMQ_IO_THREADS, io_threads) != 0) {
        shoal_error_set(SHOAL_ERR_NODE_PEER, "peer transport: ZeroMQ context: %s", zmq_strerror(errno));
        goto fail;
    }

    /* The ZAP handler must be serving before the ROUTER binds (see the top of this file). */
    if (shoal_thread_start_ready(&p->zap_thread, "peer-zap", zap_main, p) != 0)
        goto fail;
    p->zap_started = true;
    if (cfg->bind && server_bind(p, cfg->bind) != 0)
        goto fail;
    if (shoal_thread_start(&p->io_thread, "peer-io", io_main, p) != 0) {
        shoal_error_wrap("peer transport");
        goto fail;
    }
    p->io_started = true;
    if (p->router)
        LOG_INFO("node", "peer_listening", "endpoint=%s io_threads=%d", p->endpoint, io_threads);
    return p;
fail:
    node_peer_delete(p);
    return NULL;
}

static void node_peer_release(node_peer *p)
{
    if (atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->allow_mu);
    pthread_cond_destroy(&p->allow_cond);
    free(p->allow);
    free(p);
}

void node_peer_delete(node_peer *p)
{
    if (p == NULL)
        return;
    shoal_err saved_code = shoal_error_code();
    char saved[512];
    snprintf(saved, sizeof saved, "%s", shoal_error_message());
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_mutex_unlock(&p->mu);
    if (p->io_started) {
        wake_io(p);
        pthread_join(p->io_thread, NULL);
    } else {
        pthread_mutex_lock(&p->mu);
        p->closed = true;
        pthread_mutex_unlock(&p->mu);
        if (p->router)
            zmq_close(p->router);
        p->router = NULL;
    }
    if (p->ctx) {
        zmq_ctx_shutdown(p->ctx); /* wakes the ZAP handler with ETERM */
        if (p->zap_started)
            pthread_join(p->zap_thread, NULL);
        zmq_ctx_term(p->ctx);
    }
    if (p->wake_fd >= 0)
        close(p->wake_fd);
    sodium_memzero(p->secret_key, sizeof p->secret_key);
    node_peer_release(p);
    if (saved_code != SHOAL_OK)
        shoal_error_set(saved_code, "%s", saved); /* a failed node_peer_new keeps its reason */
}

const char *node_peer_endpoint(const node_peer *p)
{
    return p->endpoint;
}

void node_peer_set_membership_version(node_peer *p, uint64_t version)
{
    atomic_store(&p->membership_version, version);
}

void node_peer_stats_get(const node_peer *p, node_peer_stats *out)
{
    node_peer *q = (node_peer *)p;
    out->requests_in = atomic_load(&q->st_requests_in);
    out->requests_out = atomic_load(&q->st_requests_out);
    out->bytes_in = atomic_load(&q->st_bytes_in);
    out->bytes_out = atomic_load(&q->st_bytes_out);
    out->malformed = atomic_load(&q->st_malformed);
    out->zap_denied = atomic_load(&q->st_zap_denied);
    out->revoked = atomic_load(&q->st_revoked);
    out->busy = atomic_load(&q->st_busy);
    out->timeouts = atomic_load(&q->st_timeouts);
    out->queue_full = atomic_load(&q->st_queue_full);
}

/* ---- client API ---------------------------------------------------------------------------- */

int node_peer_connect(node_peer *p, const char *addr, const uint8_t server_key[NODE_PEER_KEY_LEN])
{
    shoal_addr a;
    if (shoal_addr_parse(addr, 0, &a) != 0 || a.port == 0)
        return shoal_error_set(SHOAL_ERR_INVAL, "peer address '%s': want ADDR:PORT", addr);
    peer_link *link = calloc(1, sizeof *link);
    cmd *c = calloc(1, sizeof *c);
    if (link == NULL || c == NULL) {
        free(link);
        free(c);
        return shoal_error_set(SHOAL_ERR_NOMEM, "peer link to %s", addr);
    }
    char text[SHOAL_ADDR_STRLEN];
    snprintf(link->endpoint, sizeof link->endpoint, "tcp://%s", shoal_addr_format(&a, text));
    memcpy(link->server_key, server_key, NODE_PEER_KEY_LEN);
    c->kind = CMD_CONNECT;
    c->link = link;

    int id = -1;
    bool wake = false;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < MAX_LINKS && id < 0; i++)
        if (p->links[i] == NULL)
            id = i;
    if (id < 0) {
        shoal_error_set(SHOAL_ERR_NOSPACE, "peer link to %s: already %d links", addr, MAX_LINKS);
    } else if (queue_push_locked(p, c, &wake) == 0) {
        link->id = id;
        p->links[id] = link;
    } else {
        id = -1;
    }
    pthread_mutex_unlock(&p->mu);
    if (id < 0) {
        free(link);
        free(c);
        return -1;
    }
    if (wake)
        wake_io(p);
    return id;
}

/* The link with this id if it takes new requests; NULL with a shoal_error otherwise. mu held. */
static peer_link *link_get_locked(node_peer *p, int id)
{
    SHOAL_ASSERT_LOCKED(&p->mu);
    if (p->stopping || p->closed)
        return shoal_error_set(SHOAL_ERR_CLOSED, "peer transport is shutting down"), NULL;
    if (id < 0 || id >= MAX_LINKS || p->links[id] == NULL || p->links[id]->closing)
        return shoal_error_set(SHOAL_ERR_NOT_FOUND, "peer link %d does not exist", id), NULL;
    return p->links[id];
}

int node_peer_disconnect(node_peer *p, int id)
{
    cmd *c = calloc(1, sizeof *c);
    if (c == NULL)
        return shoal_error_set(SHOAL_ERR_NOMEM, "peer disconnect");
    c->kind = CMD_DISCONNECT;
    bool wake = false;
    int rc = -1;
    pthread_mutex_lock(&p->mu);
    c->link = link_get_locked(p, id);
    if (c->link && queue_push_locked(p, c, &wake) == 0) {
        c->link->closing = true;
        rc = 0;
    }
    pthread_mutex_unlock(&p->mu);
    if (rc != 0)
        free(c);
    else if (wake)
        wake_io(p);
    return rc;
}

int node_peer_submit(node_peer *p, int id, const node_peer_msg *req, node_peer_payload payload,
                     uint32_t timeout_ms, node_peer_done_fn done, void *ud)
{
    cmd *c = calloc(1, sizeof *c);
    if (c == NULL) {
        shoal_error_set(SHOAL_ERR_NOMEM, "peer request");
        goto fail_payload;
    }
    c->kind = CMD_REQUEST;
    zmq_msg_init(&c->header);
    int payload_rc = payload_msg(&c->payload, payload);
    payload.free_fn = NULL; /* the frame owns it now, or payload_msg freed it */
    if (payload_rc != 0)
        goto fail_cmd;
    c->resp = response_new(SHOAL_OK);
    if (c->resp == NULL) {
        shoal_error_set(SHOAL_ERR_NOMEM, "peer request");
        goto fail_cmd;
    }
    if (!node_peer_type_is_request(req->type)) {
        shoal_error_set(SHOAL_ERR_INVAL, "peer submit: %s is not a request", node_peer_type_name(req->type));
        goto fail_cmd;
    }
    node_peer_msg m = *req;
    m.request_id = atomic_fetch_add(&p->next_id, 1);
    m.payload_len = payload.len;
    if (header_msg(&c->header, &m) != 0)
        goto fail_cmd;
    c->id = m.request_id;
    c->reply_type = node_peer_reply_type(m.type);
    c->payload_len = payload.len;
    c->done = done;
    c->ud = ud;
    c->deadline_us = shoal_clock_mono_us() + (uint64_t)timeout_ms * 1000;

    bool wake = false;
    pthread_mutex_lock(&p->mu);
    c->link = link_get_locked(p, id);
    if (c->link && c->link->inflight >= p->queue_per_peer) {
        count(&p->st_queue_full, 1);
        shoal_error_set(SHOAL_ERR_NOSPACE, "peer %s: %u requests already in flight", c->link->endpoint + 6,
                        c->link->inflight);
        c->link = NULL;
    }
    if (c->link && queue_push_locked(p, c, &wake) == 0) {
        c->link->inflight++;
        pthread_mutex_unlock(&p->mu);
        if (wake)
            wake_io(p);
        return 0;
    }
    pthread_mutex_unlock(&p->mu);
fail_cmd:
    cmd_free(c);
fail_payload:
    if (payload.free_fn)
        payload.free_fn((void *)payload.data, payload.hint);
    return -1;
}

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    node_peer_response *r;
} waiter;

static void waiter_done(void *ud, node_peer_response *r)
{
    waiter *w = ud;
    pthread_mutex_lock(&w->mu);
    w->r = r;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

node_peer_response *node_peer_call(node_peer *p, int link, const node_peer_msg *req, node_peer_payload payload,
                                   uint32_t timeout_ms)
{
    if (p->io_started && pthread_equal(pthread_self(), p->io_thread)) {
        if (payload.free_fn)
            payload.free_fn((void *)payload.data, payload.hint);
        return shoal_error_set(SHOAL_ERR_INVAL, "node_peer_call from the peer I/O thread would wait forever"), NULL;
    }
    waiter w = {.r = NULL};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cond, NULL);
    node_peer_response *r = NULL;
    if (node_peer_submit(p, link, req, payload, timeout_ms, waiter_done, &w) == 0) {
        pthread_mutex_lock(&w.mu);
        while (w.r == NULL)
            pthread_cond_wait(&w.cond, &w.mu);
        r = w.r;
        pthread_mutex_unlock(&w.mu);
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cond);
    return r;
}

/* ---- server API ---------------------------------------------------------------------------- */

const node_peer_msg *node_peer_incoming_msg(const node_peer_incoming *in)
{
    return &in->msg;
}

const uint8_t *node_peer_incoming_payload(const node_peer_incoming *in, size_t *len)
{
    static const uint8_t empty[1];
    *len = zmq_msg_size((zmq_msg_t *)&in->payload);
    return *len ? zmq_msg_data((zmq_msg_t *)&in->payload) : empty;
}

const uint8_t *node_peer_incoming_key(const node_peer_incoming *in)
{
    return in->key;
}

void node_peer_incoming_discard(node_peer_incoming *in)
{
    if (in == NULL)
        return;
    node_peer *p = in->p;
    zmq_msg_close(&in->rid);
    zmq_msg_close(&in->header);
    zmq_msg_close(&in->payload);
    free(in);
    atomic_fetch_sub(&p->incoming_open, 1);
    node_peer_release(p);
}

int node_peer_reply(node_peer_incoming *in, const node_peer_msg *reply, node_peer_payload payload)
{
    node_peer *p = in->p;
    int rc = -1;
    cmd *c = reply_build(&in->rid, &in->msg, reply, payload);
    if (c == NULL)
        goto fail_in;
    bool wake = false;
    pthread_mutex_lock(&p->mu);
    rc = queue_push_locked(p, c, &wake);
    pthread_mutex_unlock(&p->mu);
    if (rc != 0)
        cmd_free(c);
    else if (wake)
        wake_io(p);
fail_in:
    node_peer_incoming_discard(in);
    return rc;
}
