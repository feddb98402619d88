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
 *
 * Finding the cluster. Seeds arrive from node_seeds (numeric ones at once, names when they
 * resolve) into a small queue under the mutex; the thread hands each new batch to gossip_join until
 * gossip has joined, then cancels the resolver. Without seeds the node joins through the members it
 * remembered, and counts as joined at once (it may be the first node of a new cluster). What it
 * remembers is the live members of each new snapshot, saved to <state-dir>/members at most every
 * REMEMBER_EVERY_US and when the thread ends; a node alone keeps its previous list.
 *
 * Forget. The control thread posts the id and waits on a condition variable; the gossip thread,
 * which alone may touch gossip, runs gossip_forget and posts the result back. The thread's end
 * releases any waiter with SHOAL_ERR_CLOSED.
 */
#include "node_cluster.h"

#include "node_gossip_watch.h"
#include "node_seeds.h"
#include "shoal_array.h"
#include "shoal_error.h"
#include "shoal_log.h"
#include "shoal_thread.h"

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

#define JOIN_MAX 64                     /* addresses one join goes to (gossip_join's limit) */
#define REMEMBER_EVERY_US (5ull * 1000000u) /* the members file is written at most this often */
#define WATCH_PERIODS 15                /* probe periods of silence before this node warns of it */

/* One member's published cache use, as node_cluster_cache_used() reads it. */
typedef struct cluster_used {
    char id[GOSSIP_ID_MAX + 1];
    uint64_t bytes;
} cluster_used;

struct node_cluster {
    node_cluster_config cfg;
    node_config_seed *seeds; /* cfg.seeds, copied */
    char *state_dir;
    node_seeds *resolver;
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

    /* gossip thread only: where the join goes, this node's view of being heard, and the members
     * remembered in <state-dir>/members */
    shoal_addr join_addrs[JOIN_MAX];
    size_t n_join_addrs;
    bool resolver_cancelled;
    node_gossip_watch *watch;
    node_seeds_member remembered[NODE_SEEDS_MEMBERS_MAX];
    size_t n_remembered;
    bool remembered_dirty, remember_failed;
    uint64_t remembered_at;

    /* gossip thread only: this node's published cache use, and when the others' was copied */
    uint64_t probe_us, gossip_us;
    uint64_t used_published, used_published_at, used_checked_at, used_copied_at;
    bool used_ever_published, used_dirty;

    pthread_mutex_t mu; /* guards view, used, pending_meta, has_pending_meta, leave_deadline, found, forget */
    cluster_used *used; /* every member's published cache use, sorted by id */
    size_t n_used;
    node_cluster_view *view;
    gossip_meta pending_meta;
    bool has_pending_meta;
    uint64_t leave_deadline; /* 0: no leave asked */
    shoal_addr found[JOIN_MAX]; /* seed addresses resolved, not yet handed to gossip */
    size_t n_found;
    /* One forget at a time, done by the gossip thread: the asker waits on forget_cv. */
    pthread_cond_t forget_cv;
    const char *forget_id; /* NULL: none asked */
    bool forget_done, closed; /* closed: the gossip thread has ended */
    int forget_rc;
    shoal_err forget_err;
    char forget_msg[256];

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

/* ---- finding the cluster: seeds, remembered members ---------------------------------------- */

static void wake(node_cluster *c)
{
    uint64_t one = 1;
    if (write(c->efd, &one, sizeof one) < 0)
        LOG_WARN("cluster", "eventfd", "error=\"%s\"", strerror(errno));
}

/* Appends `a` to list[0..*n) (at most JOIN_MAX) unless it is there; true when it was added. */
static bool addr_add(shoal_addr *list, size_t *n, const shoal_addr *a)
{
    for (size_t i = 0; i < *n; i++)
        if (shoal_addr_eq(&list[i], a))
            return false;
    if (*n == JOIN_MAX)
        return false;
    list[(*n)++] = *a;
    return true;
}

/* node_seeds' callback (its resolver thread, or node_cluster_new for numeric seeds): queue the
 * addresses for the gossip thread. */
static void on_seeds_found(void *ud, const shoal_addr *addrs, size_t n)
{
    node_cluster *c = ud;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++)
        addr_add(c->found, &c->n_found, &addrs[i]);
    pthread_mutex_unlock(&c->mu);
    wake(c);
}

/* Joins through the seeds resolved since the last call (gossip thread), unless the node has joined
 * already. A seed that is this node's own address is left out; a node whose seeds resolved only to
 * itself is the first of its cluster, and counts as joined as a node without seeds does. */
static void join_found(node_cluster *c)
{
    shoal_addr found[JOIN_MAX];
    pthread_mutex_lock(&c->mu);
    size_t n = c->n_found;
    memcpy(found, c->found, n * sizeof *found);
    c->n_found = 0;
    pthread_mutex_unlock(&c->mu);
    bool added = false, self = false;
    for (size_t i = 0; i < n; i++) {
        if (shoal_addr_eq(&found[i], &c->cfg.self.addr))
            self = true;
        else
            added |= addr_add(c->join_addrs, &c->n_join_addrs, &found[i]);
    }
    if (gossip_joined(c->g))
        return;
    if (self && c->n_join_addrs == 0) {
        LOG_INFO("cluster", "seed_is_self", "node=%s hint=\"the only seed found so far is this node: it starts the "
                 "cluster\"", c->cfg.self.id);
        atomic_store(&c->joined, true);
    }
    if (added && gossip_join(c->g, c->join_addrs, c->n_join_addrs) < 0)
        LOG_WARN("cluster", "join_failed", "error=\"%s\"", shoal_error_message());
}

static bool remembered_eq(const node_seeds_member *a, const node_seeds_member *b)
{
    return strcmp(a->id, b->id) == 0 && shoal_addr_eq(&a->addr, &b->addr);
}

/* Takes the live members of a new snapshot as the ones to remember (gossip thread). A node that
 * finds itself alone keeps what it remembered: its companions may come back, and a node restarted
 * alone has nobody else to dial. */
static void remember_view(node_cluster *c, const node_cluster_view *v)
{
    node_seeds_member live[NODE_SEEDS_MEMBERS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < v->n && n < NODE_SEEDS_MEMBERS_MAX; i++) {
        const node_cluster_member *m = &v->members[i];
        if (m->is_self || !is_live(m->state))
            continue;
        snprintf(live[n].id, sizeof live[n].id, "%s", m->meta.id);
        live[n++].addr = m->meta.addr;
    }
    bool same = n == c->n_remembered;
    for (size_t i = 0; same && i < n; i++)
        same = remembered_eq(&live[i], &c->remembered[i]);
    if (n == 0 || same)
        return;
    memcpy(c->remembered, live, n * sizeof *live);
    c->n_remembered = n;
    c->remembered_dirty = true;
}

/* Writes <state-dir>/members when what is remembered changed, at most every REMEMBER_EVERY_US
 * unless `final` (the thread ends). A failed write is tried again at the next chance. */
static void remember_save(node_cluster *c, bool final)
{
    uint64_t now = shoal_clock_mono_us();
    if (!c->remembered_dirty || !c->state_dir || (!final && now - c->remembered_at < REMEMBER_EVERY_US))
        return;
    c->remembered_at = now;
    if (node_seeds_save_members(c->state_dir, c->remembered, c->n_remembered) < 0) {
        if (!c->remember_failed) /* one line per run of failures */
            LOG_WARN("cluster", "members_not_saved", "error=\"%s\" hint=\"a restart without --seeds will not find the "
                     "cluster\"", shoal_error_message());
        c->remember_failed = true;
        return;
    }
    c->remember_failed = false;
    c->remembered_dirty = false;
    LOG_DEBUG("cluster", "members_saved", "members=%zu", c->n_remembered);
}

/* Without seeds: dials the members remembered from the last run, if any (node_cluster_new). */
static void rejoin_remembered(node_cluster *c)
{
    node_seeds_member m[NODE_SEEDS_MEMBERS_MAX];
    int n = node_seeds_load_members(c->state_dir, m, NODE_SEEDS_MEMBERS_MAX);
    if (n < 0) {
        LOG_WARN("cluster", "members_unreadable", "error=\"%s\"", shoal_error_message());
        return;
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(m[i].id, c->cfg.self.id) == 0 || shoal_addr_eq(&m[i].addr, &c->cfg.self.addr))
            continue;
        c->remembered[c->n_remembered++] = m[i];
        addr_add(c->join_addrs, &c->n_join_addrs, &m[i].addr);
    }
    if (c->n_join_addrs == 0)
        return;
    char q[300];
    LOG_INFO("cluster", "rejoin", "node=%s members=%zu from=%s/members", c->cfg.self.id, c->n_join_addrs,
             shoal_log_q(q, sizeof q, c->state_dir));
    if (gossip_join(c->g, c->join_addrs, c->n_join_addrs) < 0)
        LOG_WARN("cluster", "join_failed", "error=\"%s\"", shoal_error_message());
}

/* Does an asked forget (gossip thread) and hands the result to the asker. */
static void forget_member(node_cluster *c, const char *id)
{
    int rc = gossip_forget(c->g, id);
    if (rc == 0) {
        c->dirty = true;
        size_t o = 0;
        for (size_t i = 0; i < c->n_remembered; i++)
            if (strcmp(c->remembered[i].id, id) != 0)
                c->remembered[o++] = c->remembered[i];
        c->remembered_dirty |= o != c->n_remembered;
        c->n_remembered = o;
    }
    pthread_mutex_lock(&c->mu);
    c->forget_rc = rc;
    c->forget_err = rc ? shoal_error_code() : SHOAL_OK;
    snprintf(c->forget_msg, sizeof c->forget_msg, "%s", rc ? shoal_error_message() : "");
    c->forget_done = true;
    pthread_cond_broadcast(&c->forget_cv);
    pthread_mutex_unlock(&c->mu);
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
    remember_view(c, v);
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
    c->used_dirty = true;
    if (ev == GOSSIP_EV_CACHE_USED)
        return; /* placement and links do not depend on it: no new view */
    c->dirty = true;
    char addr[SHOAL_ADDR_STRLEN];
    shoal_addr_format(&m->meta->addr, addr);
    switch (ev) {
    case GOSSIP_EV_JOINED:
        LOG_INFO("cluster", "member_joined", "member=%s addr=%s zone=%s", m->meta->id, addr,
                 m->meta->zone[0] ? m->meta->zone : "-");
        break;
    case GOSSIP_EV_CACHE_USED: break; /* returned above */
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

/* ---- cache use ---------------------------------------------------------------------------------
 *
 * Each member publishes its cache use in its gossip metadata. A publication is one broadcast that
 * every member relays a few times, so it is rationed: a change of at least 1/64 of the capacity
 * goes out within half a probe period (the others see it within about one period); a smaller
 * change waits up to eight periods, so a full cache that evicts as it fills costs the cluster one
 * broadcast per member every eight seconds, not a steady stream. */

#define USED_BIG_SHARE 64
#define USED_SMALL_WAIT_PERIODS 8

static void publish_cache_used(node_cluster *c, uint64_t now)
{
    if (!c->cfg.cache_used || now - c->used_checked_at < c->gossip_us)
        return;
    c->used_checked_at = now;
    uint64_t used = c->cfg.cache_used(c->cfg.cache_used_ud);
    if (c->used_ever_published && used == c->used_published)
        return;
    uint64_t since = now - c->used_published_at;
    uint64_t diff = used > c->used_published ? used - c->used_published : c->used_published - used;
    bool big = diff >= c->cfg.self.capacity / USED_BIG_SHARE;
    if (c->used_ever_published &&
        !(big ? since >= c->probe_us / 2 : since >= USED_SMALL_WAIT_PERIODS * c->probe_us))
        return;
    gossip_set_cache_used(c->g, used);
    c->used_published = used;
    c->used_published_at = now;
    c->used_ever_published = true;
    c->used_dirty = true;
}

static int used_cmp(const void *a, const void *b)
{
    return strcmp(((const cluster_used *)a)->id, ((const cluster_used *)b)->id);
}

/* Copies every member's published use for node_cluster_cache_used(), at most every gossip
 * interval. */
static void copy_cache_used(node_cluster *c, uint64_t now)
{
    if (!c->used_dirty || now - c->used_copied_at < c->gossip_us)
        return;
    size_t n = gossip_member_count(c->g), k = 0;
    cluster_used *u = calloc(n ? n : 1, sizeof *u);
    if (!u)
        return; /* out of memory: the old copy stays, the next pass tries again */
    for (size_t i = 0; i < n; i++) {
        gossip_member_info info;
        if (gossip_member_at(c->g, i, &info) < 0 || !info.meta->cache_used_known)
            continue;
        snprintf(u[k].id, sizeof u[k].id, "%s", info.meta->id);
        u[k++].bytes = info.meta->cache_used;
    }
    qsort(u, k, sizeof *u, used_cmp);
    pthread_mutex_lock(&c->mu);
    cluster_used *old = c->used;
    c->used = u;
    c->n_used = k;
    pthread_mutex_unlock(&c->mu);
    free(old);
    c->used_dirty = false;
    c->used_copied_at = now;
}

bool node_cluster_cache_used(node_cluster *c, const char *id, uint64_t *used)
{
    cluster_used key;
    snprintf(key.id, sizeof key.id, "%s", id);
    pthread_mutex_lock(&c->mu);
    const cluster_used *hit = c->used ? bsearch(&key, c->used, c->n_used, sizeof key, used_cmp) : NULL;
    if (hit)
        *used = hit->bytes;
    pthread_mutex_unlock(&c->mu);
    return hit != NULL;
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
        uint64_t unopened = gossip_counters_get(c->g)->seal_failures;
        gossip_receive(c->g, &from, buf, (size_t)n);
        if (gossip_counters_get(c->g)->seal_failures != unopened)
            node_gossip_watch_unopened(c->watch, &from, shoal_clock_mono_us());
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
    char forget[GOSSIP_ID_MAX + 1] = "";
    if (c->forget_id && !c->forget_done)
        snprintf(forget, sizeof forget, "%s", c->forget_id);
    pthread_mutex_unlock(&c->mu);
    join_found(c);
    if (forget[0])
        forget_member(c, forget);
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
        publish_cache_used(c, shoal_clock_mono_us());
        copy_cache_used(c, shoal_clock_mono_us());
        bool joined = gossip_joined(c->g);
        if (joined)
            atomic_store(&c->joined, true);
        if (joined && c->resolver && !c->resolver_cancelled) {
            node_seeds_cancel(c->resolver); /* joined: the seeds left unresolved are not needed */
            c->resolver_cancelled = true;
        }
        if (gossip_refused(c->g))
            atomic_store(&c->refused, true);
        const gossip_counters *gc = gossip_counters_get(c->g);
        if (c->cfg.stats) {
            node_stats_set(&c->cfg.stats->gossip_bad_packets, gc->decode_errors + gc->seal_failures);
            node_stats_set(&c->cfg.stats->gossip_push_pulls, gc->push_pulls);
        }
        node_gossip_watch_tick(c->watch, gc, !joined && gc->join_attempts > 0 && !gossip_refused(c->g) &&
                               !leave_deadline, shoal_clock_mono_us());
        if (c->dirty)
            rebuild(c);
        remember_save(c, false);
    }
    remember_save(c, true);
    pthread_mutex_lock(&c->mu);
    c->closed = true;
    pthread_cond_broadcast(&c->forget_cv);
    pthread_mutex_unlock(&c->mu);
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

/* Copies what the config borrows (seeds, paths) into c. */
static int copy_config(node_cluster *c, const node_cluster_config *cfg)
{
    c->cfg.seeds = NULL;
    c->cfg.n_seeds = 0;
    if (cfg->n_seeds && !(c->seeds = calloc(cfg->n_seeds, sizeof *c->seeds)))
        goto fail;
    for (size_t i = 0; i < cfg->n_seeds; i++, c->cfg.n_seeds++) {
        c->seeds[i].port = cfg->seeds[i].port;
        if (!(c->seeds[i].host = strdup(cfg->seeds[i].host)))
            goto fail;
    }
    c->cfg.seeds = c->seeds;
    if (cfg->state_dir && !(c->state_dir = strdup(cfg->state_dir)))
        goto fail;
    c->cfg.state_dir = c->state_dir;
    return 0;
fail:
    return shoal_error_set(SHOAL_ERR_NOMEM, "cluster config");
}

/* Scales every gossip timer from memberlist's defaults, whose probe period is 1 s, to `period_us`
 * (tests: a cluster that converges, suspects and rejoins in a tenth of the time). */
static void scale_timing(gossip_config *gc, uint64_t period_us)
{
    uint64_t *timers[] = {&gc->probe_interval_us, &gc->probe_timeout_us, &gc->push_pull_interval_us,
                          &gc->gossip_interval_us, &gc->gossip_to_dead_us, &gc->join_backoff_min_us,
                          &gc->join_backoff_max_us};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
        *timers[i] = *timers[i] * period_us / 1000000u ? *timers[i] * period_us / 1000000u : 1;
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
    pthread_cond_init(&c->forget_cv, NULL);
    if (copy_config(c, cfg) < 0)
        goto fail;
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
    if (cfg->gossip_period_us)
        scale_timing(&gc, cfg->gossip_period_us);
    c->probe_us = gc.probe_interval_us;
    c->gossip_us = gc.gossip_interval_us;
    if (!(c->watch = node_gossip_watch_new(WATCH_PERIODS * gc.probe_interval_us)))
        goto fail;
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
        node_seeds_config sc = {.seeds = cfg->seeds, .n_seeds = cfg->n_seeds, .family = c->bound.family,
                                .backoff_min_us = gc.join_backoff_min_us,
                                .backoff_max_us = gc.join_backoff_max_us, .found = on_seeds_found, .ud = c};
        if (!(c->resolver = node_seeds_new(&sc)))
            goto fail;
        join_found(c); /* the numeric seeds, at once */
    } else {
        if (c->state_dir)
            rejoin_remembered(c);
        atomic_store(&c->joined, true);
    }
    if (shoal_thread_start(&c->thread, "gossip", cluster_thread, c) != 0)
        goto fail;
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
    wake(c);
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
    wake(c);
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
    node_seeds_delete(c->resolver);
    node_gossip_watch_delete(c->watch);
    gossip_delete(c->g);
    node_cluster_view_put(c->view);
    free(c->used);
    if (c->fd >= 0)
        close(c->fd);
    if (c->efd >= 0)
        close(c->efd);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->forget_cv);
    for (size_t i = 0; i < c->cfg.n_seeds; i++)
        free(c->seeds[i].host);
    free(c->seeds);
    free(c->state_dir);
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

int node_cluster_forget(node_cluster *c, const char *id)
{
    if (strlen(id) > GOSSIP_ID_MAX)
        return shoal_error_set(SHOAL_ERR_NOT_FOUND, "node '%s' has no member '%s'", c->cfg.self.id, id);
    pthread_mutex_lock(&c->mu);
    while (c->forget_id && !c->closed) /* another forget is under way */
        pthread_cond_wait(&c->forget_cv, &c->mu);
    if (c->closed) {
        pthread_mutex_unlock(&c->mu);
        return shoal_error_set(SHOAL_ERR_CLOSED, "node '%s' is leaving the cluster", c->cfg.self.id);
    }
    c->forget_id = id;
    c->forget_done = false;
    pthread_mutex_unlock(&c->mu);
    wake(c);
    pthread_mutex_lock(&c->mu);
    while (!c->forget_done && !c->closed)
        pthread_cond_wait(&c->forget_cv, &c->mu);
    bool done = c->forget_done;
    int rc = done ? c->forget_rc : -1;
    shoal_err err = c->forget_err;
    char msg[sizeof c->forget_msg];
    snprintf(msg, sizeof msg, "%s", c->forget_msg);
    c->forget_id = NULL;
    c->forget_done = false;
    pthread_cond_broadcast(&c->forget_cv);
    pthread_mutex_unlock(&c->mu);
    if (!done)
        return shoal_error_set(SHOAL_ERR_CLOSED, "node '%s' is leaving the cluster", c->cfg.self.id);
    return rc == 0 ? 0 : shoal_error_set(err, "%s", msg);
}
