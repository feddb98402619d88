/*
 * node_cluster: gossip's real-world driver and the snapshots the read path looks owners up in.
 *
 * One thread owns the gossip instance and the UDP socket: it polls the socket and an eventfd (for
 * commands from other threads: a metadata change, a leave) with a timeout that ends at gossip's
 * next wakeup, hands every datagram to gossip_receive and calls gossip_tick when the wakeup is
 * due. Gossip is not thread-safe and needs no locks because nothing else touches it.
 *
 * Gossip reports changes through its event callback, which may not call back into the instance,
 * so the callback only marks the view dirty; after the receive or tick returns the thread builds
 * a new snapshot (members, the dht view, the peer links) and swaps it in under a mutex. Readers
 * hold a reference to the snapshot they took, so a swap never pulls a view from under a lookup.
 *
 * Links and the allow-list: every live (alive or suspect) member's CURVE key is admitted by the
 * peer server, and every live serving member other than this node gets a client link. A member
 * that is declared dead or leaves loses both; one that comes back with another key or address
 * gets a fresh link. Suspects keep theirs: suspicion alone moves no block (see docs/placement.md).
 *
 * The incarnation is kept in <state-dir>/incarnation and bumped at every start, so a restarted
 * node is believed over the "dead" rumour about its previous life at once.
 */
#include "node_cluster.h"

#include "shoal_array.h"
#include "shoal_error.h"
#include "shoal_log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

struct node_cluster_view {
    _Atomic int refs;
    uint64_t version;
    dht_view *dht;
    node_cluster_member *members;
    size_t n;
    char zone[GOSSIP_ZONE_MAX + 1]; /* this node's zone: owners in it are asked first */
};

/* A peer link this node keeps open, by member id. */
typedef struct cluster_link {
    char id[GOSSIP_ID_MAX + 1];
    uint8_t key[32];
    shoal_addr addr;
    int link;
    bool seen; /* still wanted in the rebuild under way */
} cluster_link;

struct node_cluster {
    node_cluster_config cfg;
    shoal_addr *seeds;
    int fd;
    int efd;
    shoal_addr bound;
    gossip *g;
    shoal_env env;
    uint64_t wakeup;

    pthread_t thread;
    bool thread_running;
    bool dirty; /* gossip thread only */

    cluster_link *links; /* gossip thread only */
    size_t n_links, cap_links;

    pthread_mutex_t mu; /* guards view, pending_meta, has_pending_meta, leave_deadline */
    node_cluster_view *view;
    gossip_meta pending_meta;
    bool has_pending_meta;
    uint64_t leave_deadline; /* 0: no leave asked */

    _Atomic bool stop;
    _Atomic bool joined;
    _Atomic bool refused;
};

/* ---- the real environment ------------------------------------------------------------------- */

static uint64_t env_now(void *ctx)
{
    (void)ctx;
    return shoal_clock_mono_us();
}

static uint64_t env_random(void *ctx)
{
    (void)ctx;
    return shoal_random_u64();
}

static void env_wakeup_at(void *ctx, uint64_t at)
{
    node_cluster *c = ctx;
    c->wakeup = at;
}

static socklen_t to_sockaddr(const shoal_addr *a, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (a->family == 6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(a->port);
        memcpy(&s6->sin6_addr, a->ip, 16);
        return sizeof *s6;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(a->port);
    memcpy(&s4->sin_addr, a->ip, 4);
    return sizeof *s4;
}

static void from_sockaddr(const struct sockaddr_storage *ss, shoal_addr *a)
{
    memset(a, 0, sizeof *a);
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        a->family = 6;
        a->port = ntohs(s6->sin6_port);
        memcpy(a->ip, &s6->sin6_addr, 16);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        a->family = 4;
        a->port = ntohs(s4->sin_port);
        memcpy(a->ip, &s4->sin_addr, 4);
    }
}

static int env_send(void *ctx, const shoal_addr *to, const void *data, size_t len)
{
    node_cluster *c = ctx;
    struct sockaddr_storage ss;
    socklen_t sl = to_sockaddr(to, &ss);
    if (to->family != c->bound.family)
        return 0; /* an address of the other family cannot be reached from this socket: lost */
    if (sendto(c->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&ss, sl) < 0) {
        /* A full socket buffer or an unreachable host is a lost datagram, which gossip survives;
         * anything else is a local failure it counts. */
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED || errno == EHOSTUNREACH ||
            errno == ENETUNREACH)
            return 0;
        char a[SHOAL_ADDR_STRLEN];
        return shoal_error_errno(errno, "gossip send to %s", shoal_addr_format(to, a));
    }
    return 0;
}

static const shoal_env_vtab real_env = {
    .now = env_now,
    .random = env_random,
    .wakeup_at = env_wakeup_at,
    .send = env_send,
};

/* ---- snapshots ------------------------------------------------------------------------------ */

static void view_free(node_cluster_view *v)
{
    if (!v)
        return;
    dht_view_delete(v->dht);
    free(v->members);
    free(v);
}

node_cluster_view *node_cluster_view_get(node_cluster *c)
{
    pthread_mutex_lock(&c->mu);
    node_cluster_view *v = c->view;
    atomic_fetch_add(&v->refs, 1);
    pthread_mutex_unlock(&c->mu);
    return v;
}

void node_cluster_view_put(node_cluster_view *v)
{
    if (v && atomic_fetch_sub(&v->refs, 1) == 1)
        view_free(v);
}

uint64_t node_cluster_view_version(const node_cluster_view *v) { return v->version; }
const dht_view *node_cluster_view_dht(const node_cluster_view *v) { return v->dht; }
size_t node_cluster_view_count(const node_cluster_view *v) { return v->n; }

const node_cluster_member *node_cluster_view_member(const node_cluster_view *v, size_t i)
{
    return i < v->n ? &v->members[i] : NULL;
}

int node_cluster_owners(const node_cluster_view *v, dht_id id, int r, const node_cluster_member *out[])
{
    const dht_member *owners[DHT_REPLICAS_MAX];
    if (r > DHT_REPLICAS_MAX)
        r = DHT_REPLICAS_MAX;
    int k = dht_owners(v->dht, id, r, owners);
    if (k < 0)
        return -1;
    dht_prefer_zone(owners, (size_t)k, v->zone);
    for (int i = 0; i < k; i++)
        out[i] = owners[i]->user;
    return k;
}

static bool is_live(gossip_state s) { return s == GOSSIP_ALIVE || s == GOSSIP_SUSPECT; }

static cluster_link *link_find(node_cluster *c, const char *id)
{
    for (size_t i = 0; i < c->n_links; i++)
        if (strcmp(c->links[i].id, id) == 0)
            return &c->links[i];
    return NULL;
}

/* Opens, keeps or replaces the link to one live serving member; returns its link id or -1. */
static int link_want(node_cluster *c, const gossip_meta *m)
{
    cluster_link *l = link_find(c, m->id);
    if (l && (memcmp(l->key, m->curve_public, 32) != 0 || !shoal_addr_eq(&l->addr, &m->addr))) {
        node_peer_disconnect(c->cfg.peer, l->link);
        l->link = -1;
    }
    if (!l) {
        if (SHOAL_ARRAY_GROW(c->links, c->n_links, c->cap_links) != 0)
            return -1;
        l = &c->links[c->n_links++];
        memset(l, 0, sizeof *l);
        snprintf(l->id, sizeof l->id, "%s", m->id);
        l->link = -1;
    }
    l->seen = true;
    if (l->link < 0) {
        char addr[SHOAL_ADDR_STRLEN];
        shoal_addr_format(&m->addr, addr);
        l->link = node_peer_connect(c->cfg.peer, addr, m->curve_public);
        if (l->link < 0)
            LOG_WARN("cluster", "link_failed", "member=%s addr=%s error=\"%s\"", m->id, addr, shoal_error_message());
        memcpy(l->key, m->curve_public, 32);
        l->addr = m->addr;
    }
    return l->link;
}

/* Closes the links no rebuild asked for. */
static void links_sweep(node_cluster *c)
{
    size_t o = 0;
    for (size_t i = 0; i < c->n_links; i++) {
        if (c->links[i].seen) {
            c->links[i].seen = false;
            c->links[o++] = c->links[i];
        } else if (c->links[i].link >= 0) {
            node_peer_disconnect(c->cfg.peer, c->links[i].link);
        }
    }
    c->n_links = o;
}

/* Builds a snapshot from gossip's view and publishes it (gossip thread). On allocation failure the
 * old snapshot stays and the view stays dirty, so the next turn of the loop tries again. */
static void rebuild(node_cluster *c)
{
    size_t n = gossip_member_count(c->g);
    node_cluster_view *v = calloc(1, sizeof *v);
    dht_member *dm = calloc(n ? n : 1, sizeof *dm);
    uint8_t(*keys)[32] = calloc(n ? n : 1, sizeof *keys);
    size_t n_keys = 0;
    uint64_t alive = 0, suspect = 0, dead = 0;
    if (!v || !dm || !keys || !(v->members = calloc(n ? n : 1, sizeof *v->members)))
        goto fail;
    atomic_init(&v->refs, 1);
    v->version = gossip_version(c->g);
    snprintf(v->zone, sizeof v->zone, "%s", c->cfg.self.zone);
    for (size_t i = 0; i < n; i++) {
        gossip_member_info info;
        if (gossip_member_at(c->g, i, &info) < 0)
            continue;
        node_cluster_member *m = &v->members[v->n++];
        m->meta = *info.meta;
        m->state = info.state;
        m->incarnation = info.incarnation;
        m->is_self = info.is_self;
        m->link = -1;
        alive += info.state == GOSSIP_ALIVE;
        suspect += info.state == GOSSIP_SUSPECT;
        dead += info.state == GOSSIP_DEAD;
        if (!info.is_self && is_live(info.state)) {
            memcpy(keys[n_keys++], info.meta->curve_public, 32);
            if (info.meta->serving && c->cfg.peer)
                m->link = link_want(c, info.meta);
        }
    }
    for (size_t i = 0; i < v->n; i++) {
        node_cluster_member *m = &v->members[i];
        dm[i] = (dht_member){
            .node_id = m->meta.id,
            .zone = m->meta.zone,
            .capacity = m->meta.capacity,
            .serving = m->meta.serving,
            /* A member that is not reachable owns nothing: placement must name only members a
             * reader can ask. */
            .alive = is_live(m->state) && (m->is_self || m->link >= 0),
            .user = m,
        };
    }
    v->dht = dht_view_new(dm, v->n, v->version);
    if (!v->dht)
        goto fail;
    if (c->cfg.peer) {
        links_sweep(c);
        if (node_peer_allow_set(c->cfg.peer, (const uint8_t(*)[32])keys, n_keys) < 0)
            goto fail;
        node_peer_set_membership_version(c->cfg.peer, v->version);
    }
    if (c->cfg.stats) {
        node_stats_set(&c->cfg.stats->members_alive, alive);
        node_stats_set(&c->cfg.stats->members_suspect, suspect);
        node_stats_set(&c->cfg.stats->members_dead, dead);
    }
    pthread_mutex_lock(&c->mu);
    node_cluster_view *old = c->view;
    c->view = v;
    pthread_mutex_unlock(&c->mu);
    node_cluster_view_put(old);
    c->dirty = false;
    free(dm);
    free(keys);
    LOG_DEBUG("cluster", "view", "version=%" PRIu64 " members=%zu alive=%" PRIu64 " suspect=%" PRIu64, v->version,
              v->n, alive, suspect);
    return;
fail:
    LOG_WARN("cluster", "view_rebuild_failed", "error=\"%s\"", shoal_error_message());
    view_free(v);
    free(dm);
    free(keys);
}

/* ---- the gossip thread ---------------------------------------------------------------------- */

static void on_event(void *ud, gossip_event ev, const gossip_member_info *m)
{
    node_cluster *c = ud;
    c->dirty = true;
    char addr[SHOAL_ADDR_STRLEN];
    shoal_addr_format(&m->meta->addr, addr);
    switch (ev) {
    case GOSSIP_EV_JOINED:
        LOG_INFO("cluster", "member_joined", "member=%s addr=%s zone=%s", m->meta->id, addr,
                 m->meta->zone[0] ? m->meta->zone : "-");
        break;
    case GOSSIP_EV_UPDATED:
        LOG_DEBUG("cluster", "member_updated", "member=%s incarnation=%" PRIu64, m->meta->id, m->incarnation);
        break;
    case GOSSIP_EV_SUSPECT:
        LOG_INFO("cluster", "member_suspect", "member=%s addr=%s", m->meta->id, addr);
        break;
    case GOSSIP_EV_DEAD:
        LOG_WARN("cluster", "member_dead", "member=%s addr=%s", m->meta->id, addr);
        break;
    case GOSSIP_EV_LEFT:
        LOG_INFO("cluster", "member_left", "member=%s addr=%s", m->meta->id, addr);
        break;
    case GOSSIP_EV_REFUSED:
        atomic_store(&c->refused, true);
        LOG_ERROR("cluster", "refused", "node=%s reason=\"the cluster refused this node; see the log of the "
                  "member that refused it (block size, protocol version or duplicate node id)\"", m->meta->id);
        break;
    }
}

static void drain_socket(node_cluster *c)
{
    uint8_t buf[65536];
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        ssize_t n = recvfrom(c->fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&ss, &sl);
        if (n < 0)
            return;
        shoal_addr from;
        from_sockaddr(&ss, &from);
        gossip_receive(c->g, &from, buf, (size_t)n);
    }
}

static void run_commands(node_cluster *c, uint64_t *leave_deadline)
{
    uint64_t tick;
    if (read(c->efd, &tick, sizeof tick) < 0 && errno != EAGAIN)
        LOG_WARN("cluster", "eventfd", "error=\"%s\"", strerror(errno));
    pthread_mutex_lock(&c->mu);
    gossip_meta meta = c->pending_meta;
    bool has_meta = c->has_pending_meta;
    c->has_pending_meta = false;
    uint64_t deadline = c->leave_deadline;
    pthread_mutex_unlock(&c->mu);
    if (has_meta && gossip_set_meta(c->g, &meta) < 0)
        LOG_WARN("cluster", "set_meta_failed", "error=\"%s\"", shoal_error_message());
    if (deadline && !*leave_deadline) {
        *leave_deadline = deadline;
        gossip_leave(c->g);
        LOG_INFO("cluster", "leaving", "node=%s", c->cfg.self.id);
    }
}

static void *cluster_thread(void *arg)
{
    node_cluster *c = arg;
    uint64_t leave_deadline = 0;
    while (!atomic_load(&c->stop)) {
        uint64_t now = shoal_clock_mono_us();
        if (leave_deadline && now >= leave_deadline)
            break;
        uint64_t until = c->wakeup;
        if (leave_deadline && leave_deadline < until)
            until = leave_deadline;
        int timeout = until > now ? (int)((until - now + 999) / 1000) : 0;
        if (timeout > 1000)
            timeout = 1000;
        struct pollfd pfd[2] = {{.fd = c->fd, .events = POLLIN}, {.fd = c->efd, .events = POLLIN}};
        int rc = poll(pfd, 2, timeout);
        if (rc < 0 && errno != EINTR) {
            LOG_ERROR("cluster", "poll", "error=\"%s\"", strerror(errno));
            break;
        }
        if (rc > 0 && (pfd[1].revents & POLLIN))
            run_commands(c, &leave_deadline);
        if (rc > 0 && (pfd[0].revents & POLLIN))
            drain_socket(c);
        if (shoal_clock_mono_us() >= c->wakeup)
            gossip_tick(c->g);
        if (gossip_joined(c->g))
            atomic_store(&c->joined, true);
        if (gossip_refused(c->g))
            atomic_store(&c->refused, true);
        if (c->cfg.stats) {
            const gossip_counters *gc = gossip_counters_get(c->g);
            node_stats_set(&c->cfg.stats->gossip_bad_packets, gc->decode_errors + gc->seal_failures);
        }
        if (c->dirty)
            rebuild(c);
    }
    return NULL;
}

/* ---- incarnation across restarts ------------------------------------------------------------ */

static uint64_t next_incarnation(const char *state_dir)
{
    uint64_t inc = 0;
    char path[4096];
    if (!state_dir)
        return 1;
    snprintf(path, sizeof path, "%s/incarnation", state_dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%" SCNu64, &inc) != 1)
            inc = 0;
        fclose(f);
    }
    inc++;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "w");
    if (f) {
        fprintf(f, "%" PRIu64 "\n", inc);
        if (fclose(f) == 0 && rename(tmp, path) == 0)
            return inc;
    }
    LOG_WARN("cluster", "incarnation_not_saved", "path=%s error=\"%s\"", path, strerror(errno));
    return inc;
}

/* ---- life cycle ----------------------------------------------------------------------------- */

static int bind_udp(node_cluster *c)
{
    struct sockaddr_storage ss;
    socklen_t sl = to_sockaddr(&c->cfg.bind, &ss);
    char a[SHOAL_ADDR_STRLEN];
    c->fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        return shoal_error_errno(errno, "gossip socket");
    int big = 4 << 20;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (bind(c->fd, (struct sockaddr *)&ss, sl) < 0)
        return shoal_error_errno(errno, "bind gossip UDP %s", shoal_addr_format(&c->cfg.bind, a));
    struct sockaddr_storage got;
    socklen_t gl = sizeof got;
    if (getsockname(c->fd, (struct sockaddr *)&got, &gl) < 0)
        return shoal_error_errno(errno, "getsockname");
    from_sockaddr(&got, &c->bound);
    return 0;
}

node_cluster *node_cluster_new(const node_cluster_config *cfg)
{
    node_cluster *c = calloc(1, sizeof *c);
    if (!c) {
        shoal_error_set(SHOAL_ERR_NOMEM, "cluster");
        return NULL;
    }
    c->cfg = *cfg;
    c->fd = -1;
    c->efd = -1;
    pthread_mutex_init(&c->mu, NULL);
    if (cfg->n_seeds) {
        c->seeds = calloc(cfg->n_seeds, sizeof *c->seeds);
        if (!c->seeds) {
            shoal_error_set(SHOAL_ERR_NOMEM, "cluster seeds");
            goto fail;
        }
        memcpy(c->seeds, cfg->seeds, cfg->n_seeds * sizeof *c->seeds);
    }
    c->cfg.seeds = c->seeds;
    if (bind_udp(c) < 0)
        goto fail;
    c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->efd < 0) {
        shoal_error_errno(errno, "eventfd");
        goto fail;
    }
    c->env = (shoal_env){&real_env, c};

    gossip_config gc;
    gossip_config_defaults(&gc);
    gc.self = cfg->self;
    if (gc.self.addr.port == 0) /* bound to port 0 (tests): advertise the port we got */
        gc.self.addr.port = c->bound.port;
    c->cfg.self = gc.self;
    memcpy(gc.cluster_key, cfg->cluster_key, GOSSIP_KEY_LEN);
    gc.incarnation = next_incarnation(cfg->state_dir);
    if (cfg->probe_interval_us)
        gc.probe_interval_us = cfg->probe_interval_us;
    if (cfg->probe_timeout_us)
        gc.probe_timeout_us = cfg->probe_timeout_us;
    if (cfg->gossip_interval_us)
        gc.gossip_interval_us = cfg->gossip_interval_us;
    gc.on_event = on_event;
    gc.event_ud = c;
    c->g = gossip_new(&gc, &c->env);
    memset(gc.cluster_key, 0, sizeof gc.cluster_key);
    if (!c->g)
        goto fail;
    c->dirty = true;
    rebuild(c);
    if (!c->view) {
        shoal_error_wrap("first membership view");
        goto fail;
    }
    if (cfg->n_seeds) {
        if (gossip_join(c->g, c->seeds, cfg->n_seeds) < 0)
            goto fail;
    } else {
        atomic_store(&c->joined, true);
    }
    if (pthread_create(&c->thread, NULL, cluster_thread, c) != 0) {
        shoal_error_set(SHOAL_ERR_IO, "cannot start the gossip thread");
        goto fail;
    }
    c->thread_running = true;
    char a[SHOAL_ADDR_STRLEN];
    LOG_INFO("cluster", "started", "node=%s udp=%s seeds=%zu incarnation=%" PRIu64, c->cfg.self.id,
             shoal_addr_format(&c->bound, a), cfg->n_seeds, gc.incarnation);
    return c;
fail:
    node_cluster_delete(c);
    return NULL;
}

static void stop_thread(node_cluster *c)
{
    if (!c->thread_running)
        return;
    atomic_store(&c->stop, true);
    uint64_t one = 1;
    if (write(c->efd, &one, sizeof one) < 0)
        LOG_WARN("cluster", "eventfd", "error=\"%s\"", strerror(errno));
    pthread_join(c->thread, NULL);
    c->thread_running = false;
}

void node_cluster_leave(node_cluster *c, unsigned linger_ms)
{
    if (!c->thread_running)
        return;
    pthread_mutex_lock(&c->mu);
    if (!c->leave_deadline)
        c->leave_deadline = shoal_clock_mono_us() + (uint64_t)linger_ms * 1000u + 1;
    pthread_mutex_unlock(&c->mu);
    uint64_t one = 1;
    if (write(c->efd, &one, sizeof one) < 0)
        LOG_WARN("cluster", "eventfd", "error=\"%s\"", strerror(errno));
    /* The thread ends by itself at the deadline, after gossiping the leave. */
    pthread_join(c->thread, NULL);
    c->thread_running = false;
}

void node_cluster_delete(node_cluster *c)
{
    if (!c)
        return;
    stop_thread(c);
    if (c->cfg.peer)
        for (size_t i = 0; i < c->n_links; i++)
            if (c->links[i].link >= 0)
                node_peer_disconnect(c->cfg.peer, c->links[i].link);
    free(c->links);
    gossip_delete(c->g);
    node_cluster_view_put(c->view);
    if (c->fd >= 0)
        close(c->fd);
    if (c->efd >= 0)
        close(c->efd);
    pthread_mutex_destroy(&c->mu);
    free(c->seeds);
    memset(c->cfg.cluster_key, 0, sizeof c->cfg.cluster_key);
    free(c);
}

shoal_addr node_cluster_bound(const node_cluster *c) { return c->bound; }
bool node_cluster_joined(const node_cluster *c) { return atomic_load(&c->joined); }
bool node_cluster_refused(const node_cluster *c) { return atomic_load(&c->refused); }

int node_cluster_set_meta(node_cluster *c, const gossip_meta *meta)
{
    if (strcmp(meta->id, c->cfg.self.id) != 0)
        return shoal_error_set(SHOAL_ERR_INVAL, "node id cannot change from '%s' to '%s'", c->cfg.self.id, meta->id);
    pthread_mutex_lock(&c->mu);
    c->pending_meta = *meta;
    c->has_pending_meta = true;
    pthread_mutex_unlock(&c->mu);
    uint64_t one = 1;
    if (write(c->efd, &one, sizeof one) < 0)
        return shoal_error_errno(errno, "wake the gossip thread");
    return 0;
}
