/*
 * The nemesis test: Jepsen's idea on real daemons, bounded. Five shoald, each in a network
 * namespace of its own, serve a dataset from the real local S3 server while a reader on every node
 * reads and checks every byte, and a schedule drawn from a printed seed hurts one node per round:
 * kill -9 and restart it, SIGSTOP it past the peer timeout and SIGCONT it, or cut it off from the
 * other nodes (but not from S3) and heal the cut. What must hold whatever the schedule:
 *
 *   - no reader ever gets a wrong byte (through any node, hurt or not);
 *   - no read fails on a node whose own daemon is up: a dead, stalled or unreachable peer costs
 *     latency, never an error. A cut node's daemon is up, so its reads count too. A read through
 *     the hurt node itself while it is killed or stopped is excused (and done again once the node
 *     is back), and so is a read that was in flight on it.
 *
 * The extra S3 GETs over the unique blocks are printed per round and in total, not judged: with a
 * peer timeout short enough for faults to be detected within a round, how many reads give up on
 * a slow owner depends on the load of the machine, and a verdict must not (the counts the cluster
 * promises are asserted by test_daemon_churn, with a peer timeout no load reaches).
 *
 * Rounds, not seconds. In each round every reader reads, in a seeded order of its own, the
 * round's slice of the dataset (objects no node has read yet, so the faults hit owners fetching
 * from S3 and readers waiting for them) and a few objects of earlier slices. The fault starts once
 * a seeded share of the round's reads is done and lasts until every other reader has finished its
 * round and another node has declared the hurt one dead (a stop lasts at least three peer
 * timeouts); a killed or stopped node's own reader waits for its node, so it finishes after the
 * heal. The work, and with it everything the verdict reads, is fixed by the seed; time only
 * decides how long a round takes. So there is no time budget: the waits only catch a hang (no read
 * finished for two minutes; a cluster that does not converge within two minutes of the heal), and
 * how long detection took is reported, never judged.
 *
 * The network. Every namespace is made by the test and anonymous (held by a child process, or by
 * the test process itself), so it disappears with the test however it ends, with its links:
 *
 *     test process: namespace "hub", the S3 server on 127.0.0.1, no forwarding
 *       |  h0 .. h4     one veth pair per node: its way to S3 and nowhere else
 *     node0 .. node4    shoald bound to 127.A.B.(i+1) on its link "peer"
 *       |  p0 .. p4     one veth pair per node: its way to the other nodes
 *     switch            forwards between the p links; p_k down = node k cut off
 *
 * Loopback addresses leave their namespace thanks to route_localnet. The hub and the switch keep
 * only 127.0.0.1/32 on lo (the kernel gives lo 127.0.0.0/8, which would swallow the nodes'
 * addresses); the switch needs a local address at all, or it takes every neighbour for a
 * broadcast address. A blackhole route under the nodes' /32 routes makes a cut silent, as a pulled
 * cable is: packets to the cut node vanish instead of bouncing with an ICMP error.
 *
 * Environment: SHOAL_NEMESIS_SEED picks the schedule (default: a fixed seed; printed);
 * SHOAL_NEMESIS_FAULTS the number of faulted rounds (default 4, at most MAX_FAULTS).
 */
#include "test_daemon_harness.h"

#include "shoal_error.h"
#include "tt.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NODES 5
#define SLICE 24   /* objects new to every node in each round */
#define OLD 8      /* objects of earlier rounds each reader reads again in a round */
#define READS (SLICE + OLD) /* reads of a reader in one round (round 0: SLICE) */
#define BLOCK (64u * 1024u)
#define BLOCK_SIZE "64K"
#define PEER_TIMEOUT_MS 2000
#define MAX_FAULTS 12
#define MAX_ROUNDS (MAX_FAULTS + 2)
/* Catching hangs, not judging speed: far above anything a loaded machine needs. */
#define HANG_MS 120000
#define CONVERGE_MS 120000
#define DEAD_WAIT_MS 60000

/* ---- the network: namespaces, links, cuts ---- */

typedef struct lab {
    pid_t sw;          /* holds the switch's namespace */
    pid_t node[NODES]; /* hold the nodes' namespaces */
} lab;

static lab g_lab;

static void lab_at_exit(void)
{
    pid_t *all[NODES + 1] = {&g_lab.sw};
    for (int i = 0; i < NODES; i++)
        all[i + 1] = &g_lab.node[i];
    for (int i = 0; i <= NODES; i++)
        if (*all[i] > 0) {
            kill(*all[i], SIGKILL);
            waitpid(*all[i], NULL, 0);
            *all[i] = 0;
        }
}

/* Runs `sh -ec cmd` in the network namespace held by `ns` (0: this process's own) and returns its
 * wait status. */
static int lab_sh_status(pid_t ns, const char *cmd)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/net", (int)ns);
    pid_t pid = fork();
    TT_CHECK(pid >= 0, "fork");
    if (pid == 0) {
        if (ns > 0) {
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0 || setns(fd, CLONE_NEWNET) != 0)
                _exit(125);
        }
        execl("/bin/sh", "sh", "-ec", cmd, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return st;
}

static void lab_sh(pid_t ns, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lab_sh(pid_t ns, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = lab_sh_status(ns, cmd);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "network set-up failed (status %d): %s", st, cmd);
}

/* A child that holds a new network namespace until it is killed or this process ends. */
static pid_t lab_holder(void)
{
    int p[2];
    TT_CHECK(pipe(p) == 0, "pipe");
    pid_t parent = getpid();
    pid_t pid = fork();
    TT_CHECK(pid >= 0, "fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int err = getppid() != parent ? ESRCH : unshare(CLONE_NEWNET) == 0 ? 0 : errno;
        if (write(p[1], &err, sizeof err) != sizeof err || err)
            _exit(1);
        for (int f = 3; f < 1024; f++)
            close(f);
        for (;;)
            pause();
    }
    close(p[1]);
    int err = -1;
    ssize_t r = read(p[0], &err, sizeof err);
    close(p[0]);
    TT_CHECK(r == (ssize_t)sizeof err && err == 0, "a namespace holder failed: %s", strerror(err));
    return pid;
}

/* Moves this process into a namespace of its own (the hub), or skips the test when it cannot. */
static void lab_enter_hub(void)
{
    if (lab_sh_status(0, "ip -V >/dev/null 2>&1") != 0)
        TT_SKIP("the nemesis test needs iproute2's `ip`: run scripts/deps");
    if (unshare(CLONE_NEWNET) != 0)
        TT_SKIP("cannot make a network namespace (unshare: %s): the nemesis test needs root or "
                "CAP_SYS_ADMIN and CAP_NET_ADMIN",
                strerror(errno));
    if (lab_sh_status(0, "ip link add name probe0 type veth peer name probe1 2>/dev/null; ip link del probe0") != 0)
        TT_SKIP("cannot make veth links (no veth support in this kernel?)");
    atexit(lab_at_exit);
    lab_sh(0, "ip link set lo up; ip -4 addr flush dev lo; ip addr add 127.0.0.1/32 dev lo;"
              "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet; echo 0 > /proc/sys/net/ipv4/ip_forward");
}

/* Makes the switch and the nodes' namespaces and links, and points the harness's nodes at them. */
static void lab_build(td_cluster *c)
{
    g_lab.sw = lab_holder();
    lab_sh(g_lab.sw, "ip link set lo up; ip -4 addr flush dev lo; ip addr add 127.0.0.1/32 dev lo;"
                     "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet;"
                     "echo 1 > /proc/sys/net/ipv4/conf/all/proxy_arp;"
                     "echo 1 > /proc/sys/net/ipv4/ip_forward;"
                     "ip route add blackhole 127.%u.%u.0/24",
           c->net[0], c->net[1]);
    for (int i = 0; i < NODES; i++) {
        const char *ip = c->nodes[i].ip;
        g_lab.node[i] = lab_holder();
        lab_sh(g_lab.node[i],
               "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet;"
               "ip link add name s3 type veth peer name h%d netns %d;"
               "ip link add name peer type veth peer name p%d netns %d;"
               "ip link set s3 up; ip link set peer up; ip addr add %s/32 dev peer;"
               "ip route add 127.0.0.1/32 dev s3 src %s; ip route add 127.%u.%u.0/24 dev peer src %s",
               i, (int)getpid(), i, (int)g_lab.sw, ip, ip, c->net[0], c->net[1], ip);
        lab_sh(0, "ip link set h%d up; ip route add %s/32 dev h%d", i, ip, i);
        lab_sh(g_lab.sw,
               "echo 0 > /proc/sys/net/ipv4/neigh/p%d/proxy_delay;"
               "ip link set p%d up; ip route add %s/32 dev p%d",
               i, i, ip, i);
        snprintf(c->nodes[i].netns, sizeof c->nodes[i].netns, "/proc/%d/ns/net", (int)g_lab.node[i]);
    }
}

static void lab_cut(td_cluster *c, int i) { lab_sh(g_lab.sw, "ip link set p%d down", i); }

static void lab_heal(td_cluster *c, int i)
{
    lab_sh(g_lab.sw, "ip link set p%d up; ip route replace %s/32 dev p%d", i, c->nodes[i].ip, i);
}

/* ---- the schedule ---- */

typedef enum { R_COLD, R_KILL, R_STOP, R_CUT, R_CALM } round_kind;
static const char *const KIND_NAME[] = {"cold read", "kill -9 + restart", "SIGSTOP + SIGCONT",
                                        "partition + heal", "calm round"};

typedef struct round_plan {
    round_kind kind;
    int target;      /* the hurt node (faults only) */
    int trigger_pct; /* the fault starts once this share of the round's reads is done */
} round_plan;

static uint64_t rng_next(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int rng_below(uint64_t *s, int n) { return (int)(rng_next(s) % (uint64_t)n); }

/* ---- the dataset and the readers ---- */

typedef struct object {
    char key[64];
    size_t size;
    int blocks;
    uint8_t *want;
} object;

typedef struct round_result {
    long gets, heads;
    int reads_ok, failed, excused;
    uint64_t fault_ms, dead_ms, converge_ms; /* dead_ms: 0 = not declared dead within the wait */
} round_result;

typedef struct nemesis {
    td_cluster *c;
    object obj[MAX_ROUNDS * SLICE];
    int objects;                  /* uploaded: rounds x SLICE */
    int slice_blocks[MAX_ROUNDS]; /* unique blocks of each round's slice */
    int rounds;
    round_plan plan[MAX_ROUNDS];
    round_result res[MAX_ROUNDS];
    int order[MAX_ROUNDS][NODES][READS];

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int round;             /* the round readers may read; -1 before the first */
    bool up[NODES];        /* the node's own daemon runs and is not stopped */
    unsigned gen[NODES];   /* bumped whenever up changes: a read that sees it change is excused */
    int done[NODES];       /* reads finished in the current round */
    int finished[NODES];   /* rounds finished */
    uint64_t progress_ms;  /* when a read last finished */
    uint64_t wrong_bytes, bytes_ok;
    int reads_ok, failed, excused;
    char failure[4][320];
    int n_failures;
} nemesis;

static uint64_t count_wrong(const uint8_t *got, size_t len, const uint8_t *want, size_t size)
{
    size_t n = len < size ? len : size;
    uint64_t w = len > size ? len - size : size - len;
    for (size_t i = 0; i < n; i++)
        w += got[i] != want[i];
    return w;
}

/* Keeps the first few failures (n->mu held) to print them at the end. */
static void note_failure(nemesis *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_failure(nemesis *n, const char *fmt, ...)
{
    if (n->n_failures >= 4)
        return;
    char line[sizeof n->failure[0]];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    memcpy(n->failure[n->n_failures++], line, sizeof line);
}

/* Reads object k through node i until it counts: bytes (checked), or a failure while the node was
 * up the whole time. A failure that overlapped a stop or kill of the node is done again once the
 * node is back. */
static void read_one(nemesis *n, int i, int k, int round)
{
    object *o = &n->obj[k];
    for (;;) {
        pthread_mutex_lock(&n->mu);
        while (!n->up[i])
            pthread_cond_wait(&n->cv, &n->mu);
        unsigned gen = n->gen[i];
        pthread_mutex_unlock(&n->mu);

        size_t len = 0;
        uint8_t *got = td_get(n->c, i, o->key, &len);
        char why[200] = "";
        if (!got)
            snprintf(why, sizeof why, "%s", shoal_error_message());

        pthread_mutex_lock(&n->mu);
        bool disturbed = n->gen[i] != gen;
        bool counts = got || !disturbed;
        if (got) {
            uint64_t wrong = count_wrong(got, len, o->want, o->size);
            n->wrong_bytes += wrong;
            n->bytes_ok += len;
            n->reads_ok++;
            n->res[round].reads_ok++;
            if (wrong)
                note_failure(n, "round %d, %s on %s: %llu wrong bytes (%zu read, %zu expected)", round, o->key,
                             n->c->nodes[i].id, (unsigned long long)wrong, len, o->size);
        } else if (disturbed) {
            n->excused++;
            n->res[round].excused++;
        } else {
            n->failed++;
            n->res[round].failed++;
            note_failure(n, "round %d, %s on %s failed: %s", round, o->key, n->c->nodes[i].id, why);
        }
        if (counts) {
            n->done[i]++;
            n->progress_ms = td_now_ms();
            pthread_cond_broadcast(&n->cv);
        }
        pthread_mutex_unlock(&n->mu);
        free(got);
        if (counts)
            return;
    }
}

/* Reads of one reader in round r: its slice, and OLD objects of earlier slices after the first. */
static int reads_in(int r) { return r == 0 ? SLICE : READS; }

typedef struct reader {
    nemesis *n;
    int node;
    pthread_t thread;
} reader;

static void *reader_main(void *arg)
{
    reader *r = arg;
    nemesis *n = r->n;
    for (int round = 0; round < n->rounds; round++) {
        pthread_mutex_lock(&n->mu);
        while (n->round < round)
            pthread_cond_wait(&n->cv, &n->mu);
        pthread_mutex_unlock(&n->mu);
        for (int j = 0; j < reads_in(round); j++)
            read_one(n, r->node, n->order[round][r->node][j], round);
        pthread_mutex_lock(&n->mu);
        n->finished[r->node] = round + 1;
        pthread_cond_broadcast(&n->cv);
        pthread_mutex_unlock(&n->mu);
    }
    return NULL;
}

/* ---- the scheduler's waits (n->mu held) ---- */

static int reads_done(const nemesis *n)
{
    int t = 0;
    for (int i = 0; i < NODES; i++)
        t += n->done[i];
    return t;
}

/* Every reader except `skip` (-1: none) finished round r. */
static bool passes_done(const nemesis *n, int r, int skip)
{
    for (int i = 0; i < NODES; i++)
        if (i != skip && n->finished[i] <= r)
            return false;
    return true;
}

/* Waits (n->mu held) until pred holds; fails the test when no read finished for HANG_MS. */
static void wait_reads(nemesis *n, bool (*pred)(const nemesis *, int, int), int a, int b, const char *what)
{
    while (!pred(n, a, b)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&n->cv, &n->mu, &ts);
        if (td_now_ms() - n->progress_ms > HANG_MS) {
            char who[128] = "";
            for (int i = 0; i < NODES; i++)
                if (n->finished[i] <= n->round)
                    snprintf(who + strlen(who), sizeof who - strlen(who), " %s(%d/%d)", n->c->nodes[i].id,
                             n->done[i], reads_in(n->round));
            TT_CHECK(false, "no read finished for %d s while waiting for %s; readers not done:%s", HANG_MS / 1000,
                     what, who);
        }
    }
}

static bool pred_share(const nemesis *n, int want, int unused)
{
    (void)unused;
    return reads_done(n) >= want;
}

static bool pred_passes(const nemesis *n, int r, int skip) { return passes_done(n, r, skip); }

static void set_up(nemesis *n, int i, bool up)
{
    pthread_mutex_lock(&n->mu);
    n->up[i] = up;
    n->gen[i]++;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

/* Waits until a node other than t sees t as dead (up to DEAD_WAIT_MS); the time it took, or 0. */
static uint64_t wait_declared_dead(nemesis *n, int t, uint64_t since)
{
    int j = (t + 1) % NODES;
    char state[32];
    uint64_t deadline = td_now_ms() + DEAD_WAIT_MS;
    do {
        td_member_state(n->c, j, n->c->nodes[t].id, state, sizeof state);
        if (strcmp(state, "dead") == 0)
            return td_now_ms() - since;
        td_sleep_ms(100);
    } while (td_now_ms() < deadline);
    return 0;
}

static void start_node(nemesis *n, int i)
{
    /* The harness gives node i the nodes before it as seeds; node 0 gets the others, as an
     * operator restarting it would. */
    char seeds[64 * NODES] = "";
    for (int k = 1; k < NODES; k++)
        snprintf(seeds + strlen(seeds), sizeof seeds - strlen(seeds), "%s%s:%u", k > 1 ? "," : "",
                 n->c->nodes[k].ip, n->c->port);
    const char *with_seeds[] = {"--peer-timeout", "2000", "--seeds", seeds, NULL};
    const char *plain[] = {"--peer-timeout", "2000", NULL};
    td_node_start(n->c, i, i == 0 && n->round >= 0 ? with_seeds : plain);
}

/* ---- the faults: each hurts its target one way and heals it again ---- */

static void kill_node(nemesis *n, int t)
{
    td_cluster *c = n->c;
    set_up(n, t, false);
    td_node_signal(c, t, SIGKILL);
    td_node_wait(c, t, 10000);
    TT_CHECK(WIFSIGNALED(c->nodes[t].exit_status) && WTERMSIG(c->nodes[t].exit_status) == SIGKILL,
             "%s: wait status %d after SIGKILL", c->nodes[t].id, c->nodes[t].exit_status);
    unlink(c->nodes[t].control); /* a dead daemon leaves its socket; its restart waits for a new one */
}

static void restart_node(nemesis *n, int t)
{
    start_node(n, t);
    set_up(n, t, true);
}

static void stop_node(nemesis *n, int t)
{
    set_up(n, t, false);
    td_node_signal(n->c, t, SIGSTOP);
}

static void continue_node(nemesis *n, int t)
{
    td_node_signal(n->c, t, SIGCONT);
    set_up(n, t, true);
}

static void cut_node(nemesis *n, int t) { lab_cut(n->c, t); }
static void heal_node(nemesis *n, int t) { lab_heal(n->c, t); }

typedef struct fault_ops {
    void (*hurt)(nemesis *n, int t);
    void (*heal)(nemesis *n, int t);
} fault_ops;

static const fault_ops FAULTS[R_CALM + 1] = {
    [R_KILL] = {kill_node, restart_node},
    [R_STOP] = {stop_node, continue_node},
    [R_CUT] = {cut_node, heal_node},
};

/* One round: open it to the readers, hurt its target once the trigger share is read, hold, heal,
 * wait for the cluster to converge and every reader to finish. */
static void run_round(nemesis *n, int r)
{
    round_plan *p = &n->plan[r];
    round_result *res = &n->res[r];
    td_cluster *c = n->c;
    long gets0 = tt_s3rver_stat(&c->s3, "gets"), heads0 = tt_s3rver_stat(&c->s3, "heads");
    int t = p->target;
    const fault_ops *fault = FAULTS[p->kind].hurt ? &FAULTS[p->kind] : NULL; /* NULL: a round without one */
    pthread_mutex_lock(&n->mu);
    for (int i = 0; i < NODES; i++)
        n->done[i] = 0;
    n->round = r;
    n->progress_ms = td_now_ms();
    pthread_cond_broadcast(&n->cv);
    if (fault) {
        int share = NODES * reads_in(r) * p->trigger_pct / 100;
        wait_reads(n, pred_share, share, 0, "the fault's trigger");
    }
    pthread_mutex_unlock(&n->mu);

    uint64_t t0 = td_now_ms();
    if (fault) {
        fault->hurt(n, t);
        res->dead_ms = wait_declared_dead(n, t, t0);
        pthread_mutex_lock(&n->mu);
        wait_reads(n, pred_passes, r, t, "the other readers' passes");
        pthread_mutex_unlock(&n->mu);
        if (p->kind == R_STOP)
            while (td_now_ms() - t0 < 3 * PEER_TIMEOUT_MS)
                td_sleep_ms(50);
        res->fault_ms = td_now_ms() - t0;
    }
    uint64_t t1 = td_now_ms();
    if (fault) {
        fault->heal(n, t);
        td_wait_cluster(c, CONVERGE_MS);
        res->converge_ms = td_now_ms() - t1;
    }
    pthread_mutex_lock(&n->mu);
    wait_reads(n, pred_passes, r, -1, "every reader's pass");
    pthread_mutex_unlock(&n->mu);
    res->gets = tt_s3rver_stat(&c->s3, "gets") - gets0;
    res->heads = tt_s3rver_stat(&c->s3, "heads") - heads0;
}

/* ---- the plan ---- */

/* The schedule's seed: SHOAL_NEMESIS_SEED, or a fixed one, so that every run of the suite plays
 * the same schedule (other seeds are for exploring by hand). */
static uint64_t plan_seed(void)
{
    const char *s = getenv("SHOAL_NEMESIS_SEED");
    return s && *s ? strtoull(s, NULL, 0) : 20261206u;
}

static void make_plan(nemesis *n, uint64_t seed)
{
    uint64_t s = seed;
    int faults = 4;
    const char *f = getenv("SHOAL_NEMESIS_FAULTS");
    if (f && *f)
        faults = atoi(f);
    TT_CHECK(faults >= 3 && faults <= MAX_FAULTS, "SHOAL_NEMESIS_FAULTS=%s: from 3 to %d", f, MAX_FAULTS);
    n->rounds = faults + 2;
    n->plan[0] = (round_plan){.kind = R_COLD, .target = -1};
    /* Each kind of fault once, in a seeded order, then seeded kinds. */
    round_kind kinds[3] = {R_KILL, R_STOP, R_CUT};
    for (int i = 2; i > 0; i--) {
        int j = rng_below(&s, i + 1);
        round_kind k = kinds[i];
        kinds[i] = kinds[j];
        kinds[j] = k;
    }
    for (int r = 1; r <= faults; r++)
        n->plan[r] = (round_plan){.kind = r <= 3 ? kinds[r - 1] : (round_kind)(R_KILL + rng_below(&s, 3)),
                                  .target = rng_below(&s, NODES),
                                  .trigger_pct = 15 + rng_below(&s, 36)};
    n->plan[faults + 1] = (round_plan){.kind = R_CALM, .target = -1};
    /* Round r's slice, objects [r x SLICE, (r + 1) x SLICE), and OLD objects of earlier slices,
     * in a seeded order of each reader's own. */
    for (int r = 0; r < n->rounds; r++)
        for (int i = 0; i < NODES; i++) {
            int *o = n->order[r][i], m = reads_in(r);
            for (int k = 0; k < SLICE; k++)
                o[k] = r * SLICE + k;
            for (int k = SLICE; k < m; k++)
                o[k] = rng_below(&s, r * SLICE);
            for (int k = m - 1; k > 0; k--) {
                int j = rng_below(&s, k + 1), x = o[k];
                o[k] = o[j];
                o[j] = x;
            }
        }
}

/* Uploads the dataset: seeded sizes of 2-6 blocks, the last one partial or whole. Returns the
 * unique blocks. */
static int make_dataset(nemesis *n, uint64_t seed)
{
    uint64_t s = seed ^ 0xDA7A5E7ull;
    int unique = 0;
    n->objects = n->rounds * SLICE;
    for (int k = 0; k < n->objects; k++) {
        object *o = &n->obj[k];
        o->blocks = 2 + rng_below(&s, 5);
        o->size = (size_t)(o->blocks - 1) * BLOCK + 1 + (size_t)rng_below(&s, BLOCK);
        snprintf(o->key, sizeof o->key, "nemesis/part-%03d.bin", k);
        td_put(n->c, o->key, o->size, (uint32_t)k);
        o->want = td_content(o->size, (uint32_t)k);
        unique += o->blocks;
        n->slice_blocks[k / SLICE] += o->blocks;
    }
    return unique;
}

TT_TEST(test_nemesis_every_byte_right_and_no_read_fails_through_kills_stops_and_partitions)
{
    lab_enter_hub();
    static nemesis nem;
    nemesis *n = &nem;
    uint64_t seed = plan_seed();
    tt_note("nemesis seed %llu (rerun with SHOAL_NEMESIS_SEED=%llu)", (unsigned long long)seed,
            (unsigned long long)seed);
    n->c = td_cluster_new(NODES, BLOCK_SIZE);
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, NULL);
    n->round = -1;
    make_plan(n, seed);
    int unique = make_dataset(n, seed);
    lab_build(n->c);
    for (int i = 0; i < NODES; i++) {
        start_node(n, i);
        n->up[i] = true;
    }
    td_wait_cluster(n->c, 30000);
    tt_note("%d nodes, %d objects, %d unique blocks of %u KiB; %d rounds:", NODES, n->objects, unique, BLOCK / 1024,
            n->rounds);
    for (int r = 0; r < n->rounds; r++) {
        const round_plan *p = &n->plan[r];
        if (p->target >= 0)
            tt_note("  round %d: %s of %s after %d%% of the round's reads", r, KIND_NAME[p->kind],
                    n->c->nodes[p->target].id, p->trigger_pct);
        else
            tt_note("  round %d: %s", r, KIND_NAME[p->kind]);
    }

    reader rd[NODES];
    for (int i = 0; i < NODES; i++) {
        rd[i] = (reader){.n = n, .node = i};
        TT_CHECK(pthread_create(&rd[i].thread, NULL, reader_main, &rd[i]) == 0, "pthread_create");
    }
    uint64_t start = td_now_ms();
    for (int r = 0; r < n->rounds; r++) {
        run_round(n, r);
        const round_result *res = &n->res[r];
        char dead[48] = "(not within the wait)";
        if (res->dead_ms)
            snprintf(dead, sizeof dead, "%.1f s", (double)res->dead_ms / 1000);
        if (n->plan[r].target >= 0)
            tt_note("round %d (%s of %s): fault held %.1f s, declared dead after %s, converged %.1f s after the "
                    "heal; reads ok %d, excused %d, failed %d; S3 GETs %ld for %d new blocks, HEADs %ld",
                    r, KIND_NAME[n->plan[r].kind], n->c->nodes[n->plan[r].target].id, (double)res->fault_ms / 1000,
                    dead, (double)res->converge_ms / 1000, res->reads_ok, res->excused, res->failed, res->gets,
                    n->slice_blocks[r], res->heads);
        else
            tt_note("round %d (%s): reads ok %d, failed %d; S3 GETs %ld for %d new blocks, HEADs %ld", r,
                    KIND_NAME[n->plan[r].kind], res->reads_ok, res->failed, res->gets, n->slice_blocks[r], res->heads);
    }
    for (int i = 0; i < NODES; i++)
        pthread_join(rd[i].thread, NULL);

    long gets = 0;
    for (int r = 0; r < n->rounds; r++)
        gets += n->res[r].gets;
    tt_note("%.0f s; %d reads verified (%.1f MiB), %llu wrong bytes, %d failed reads, %d excused (through a "
            "killed or stopped node)",
            (double)(td_now_ms() - start) / 1000, n->reads_ok, (double)n->bytes_ok / (1024 * 1024),
            (unsigned long long)n->wrong_bytes, n->failed, n->excused);
    tt_note("S3 GETs %ld for %d unique blocks: %ld extra (%.2f per unique block)", gets, unique, gets - unique,
            (double)(gets - unique) / unique);
    for (int f = 0; f < n->n_failures; f++)
        tt_note("  %s", n->failure[f]);
    TT_CHECK(n->wrong_bytes == 0, "%llu wrong bytes (seed %llu)", (unsigned long long)n->wrong_bytes,
             (unsigned long long)seed);
    TT_CHECK(n->failed == 0, "%d reads failed on nodes whose daemon was up (seed %llu)", n->failed,
             (unsigned long long)seed);
    int reads = 0;
    for (int r = 0; r < n->rounds; r++)
        reads += NODES * reads_in(r);
    TT_CHECK(n->reads_ok == reads, "%d reads verified, expected %d", n->reads_ok, reads);
    td_pass(n->c);
}

TT_MAIN()
