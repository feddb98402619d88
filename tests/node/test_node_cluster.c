/*
 * node_cluster with real sockets: several nodes in one process, each with its own UDP socket, its
 * own node_peer (ZeroMQ CURVE) and its own gossip thread, on loopback addresses 127.0.0.2 and up.
 * Gossip runs with short periods (100 ms probes, every timer scaled alike) so a test takes seconds.
 */
#include "node_cluster.h"
#include "shoal_error.h"
#include "tt.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct tnode {
    node_peer *peer;
    node_cluster *cluster;
    char *state;
    char id[32];
    shoal_addr addr;
} tnode;

static void on_get(void *ud, node_peer_incoming *in)
{
    tnode *n = ud;
    node_peer_msg reply = {.status = NODE_PEER_OK};
    char body[96];
    int len = snprintf(body, sizeof body, "block from %s", n->id);
    node_peer_reply(in, &reply, (node_peer_payload){.data = body, .len = (size_t)len});
}

static const node_peer_handlers handlers = {.on_get_block = on_get};

static const uint8_t key_a[32] = "cluster key A for the node tests";
static const uint8_t key_b[32] = "cluster key B for the node tests";

static void tnode_start(tnode *n, int host, const uint8_t *ckey, const tnode *seed)
{
    memset(n, 0, sizeof *n);
    snprintf(n->id, sizeof n->id, "node-%d", host);
    n->state = tt_tmpdir("cluster");
    node_peer_config pc = {.handlers = &handlers, .handlers_ud = n};
    char bind[64];
    snprintf(bind, sizeof bind, "127.0.0.%d:0", host);
    pc.bind = bind;
    TT_OK(node_peer_keypair_load_or_create(n->state, pc.public_key, pc.secret_key));
    n->peer = node_peer_new(&pc);
    TT_CHECK(n->peer != NULL, "node_peer_new: %s", shoal_error_message());
    /* UDP gossip on the same port number as the peer's TCP socket, as SPEC §2 says. */
    TT_OK(shoal_addr_parse(node_peer_endpoint(n->peer), 0, &n->addr));

    node_cluster_config cc = {0};
    snprintf(cc.self.id, sizeof cc.self.id, "%s", n->id);
    cc.self.addr = n->addr;
    snprintf(cc.self.zone, sizeof cc.self.zone, "z%d", host % 2);
    memcpy(cc.self.curve_public, pc.public_key, 32);
    cc.self.capacity = 1 << 30;
    cc.self.serving = true;
    cc.self.proto_version = 1;
    cc.self.block_size = 4 << 20;
    memcpy(cc.cluster_key, ckey, 32);
    cc.bind = n->addr;
    char seed_host[SHOAL_ADDR_STRLEN] = "";
    node_config_seed seed_entry = {.host = seed_host};
    if (seed) {
        shoal_addr_format(&seed->addr, seed_host);
        *strrchr(seed_host, ':') = '\0';
        seed_entry.port = seed->addr.port;
    }
    cc.seeds = seed ? &seed_entry : NULL;
    cc.n_seeds = seed ? 1 : 0;
    cc.state_dir = n->state;
    cc.peer = n->peer;
    cc.gossip_period_us = 100000;
    n->cluster = node_cluster_new(&cc);
    TT_CHECK(n->cluster != NULL, "node_cluster_new: %s", shoal_error_message());
}

static void tnode_stop(tnode *n)
{
    node_cluster_delete(n->cluster);
    node_peer_delete(n->peer);
    tt_rmtree(n->state);
    free(n->state);
}

/* Three nodes on 127.0.0.2-4: ns[0] first, then ns[1] (cluster key A) and ns[2] (`third_key`)
 * joining through it. */
static void trio_start(tnode ns[3], const uint8_t *third_key)
{
    tnode_start(&ns[0], 2, key_a, NULL);
    tnode_start(&ns[1], 3, key_a, &ns[0]);
    tnode_start(&ns[2], 4, third_key, &ns[0]);
}

/* Stops trio_start's nodes, the joiners first. */
static void trio_stop(tnode ns[3])
{
    for (int i = 2; i >= 0; i--)
        tnode_stop(&ns[i]);
}

static size_t count_state(node_cluster *c, gossip_state st)
{
    node_cluster_view *v = node_cluster_view_get(c);
    size_t k = 0;
    for (size_t i = 0; i < node_cluster_view_count(v); i++)
        k += node_cluster_view_member(v, i)->state == st;
    node_cluster_view_put(v);
    return k;
}

/* Waits up to `seconds` for every node in ns[0..n) to see `alive` members alive. */
static bool wait_alive(tnode *ns, int n, size_t alive, double seconds)
{
    for (int t = 0; t < (int)(seconds * 20); t++) {
        bool ok = true;
        for (int i = 0; i < n; i++)
            ok = ok && count_state(ns[i].cluster, GOSSIP_ALIVE) == alive;
        if (ok)
            return true;
        usleep(50000);
    }
    return false;
}

TT_TEST(test_node_cluster_nodes_join_agree_on_owners_and_reach_each_other)
{
    tnode ns[3];
    trio_start(ns, key_a);
    TT_CHECK(wait_alive(ns, 3, 3, 10), "every node sees 3 alive members within 10 s");

    /* Every node computes the same owners for the same blocks. */
    for (int b = 0; b < 200; b++) {
        char key[32];
        snprintf(key, sizeof key, "obj-%d", b);
        dht_id id = dht_block_id("bucket", key, "\"etag\"", 0);
        const char *first = NULL;
        for (int i = 0; i < 3; i++) {
            node_cluster_view *v = node_cluster_view_get(ns[i].cluster);
            const node_cluster_member *own[3];
            int k = node_cluster_owners(v, id, 1, own);
            TT_CHECK(k == 1, "one owner, got %d", k);
            if (!first)
                first = strdup(own[0]->meta.id);
            TT_CHECK(strcmp(first, own[0]->meta.id) == 0, "block %d: node %d says %s, node 2 says %s", b, i,
                     own[0]->meta.id, first);
            node_cluster_view_put(v);
        }
        free((char *)first);
    }

    /* The links work: each node asks every other member for a block over CURVE and gets it,
     * which also proves each server's allow-list admits the members gossip knows. */
    for (int i = 0; i < 3; i++) {
        node_cluster_view *v = node_cluster_view_get(ns[i].cluster);
        int asked = 0;
        for (size_t m = 0; m < node_cluster_view_count(v); m++) {
            const node_cluster_member *mem = node_cluster_view_member(v, m);
            if (mem->is_self)
                continue;
            TT_CHECK(mem->link >= 0, "node %d has a link to %s", i, mem->meta.id);
            node_peer_msg req = {.type = NODE_PEER_GET, .flags = NODE_PEER_F_NO_FORWARD};
            req.block.bucket = shoal_cursor_from_str("b");
            req.block.key = shoal_cursor_from_str("k");
            req.block.etag = shoal_cursor_from_str("e");
            req.block.length = 1;
            /* A link opened while the other side did not know this node yet was refused by its
             * ZAP handler; ZeroMQ reconnects every 100 ms, so allow a few tries. */
            node_peer_response *r = NULL;
            for (int try = 0; try < 20; try++) {
                node_peer_response_delete(r);
                r = node_peer_call(ns[i].peer, mem->link, &req, (node_peer_payload){0}, 5000);
                if (r && node_peer_response_result(r) == SHOAL_OK)
                    break;
                usleep(100000);
            }
            TT_CHECK(r && node_peer_response_result(r) == SHOAL_OK, "GET from %s to %s: %s", ns[i].id,
                     mem->meta.id, r ? shoal_error_name(node_peer_response_result(r)) : shoal_error_message());
            size_t len;
            const uint8_t *p = node_peer_response_payload(r, &len);
            char want[96];
            snprintf(want, sizeof want, "block from %s", mem->meta.id);
            TT_CHECK(len == strlen(want) && memcmp(p, want, len) == 0, "payload from the right member");
            node_peer_response_delete(r);
            asked++;
        }
        TT_CHECK(asked == 2, "node %d asked 2 members, asked %d", i, asked);
        node_cluster_view_put(v);
    }
    trio_stop(ns);
}

TT_TEST(test_node_cluster_leave_is_seen_as_left_not_dead)
{
    tnode ns[3];
    trio_start(ns, key_a);
    TT_CHECK(wait_alive(ns, 3, 3, 10), "3 alive");
    node_cluster_leave(ns[2].cluster, 500);
    bool left = false;
    for (int t = 0; t < 100 && !left; t++) {
        left = count_state(ns[0].cluster, GOSSIP_LEFT) == 1 && count_state(ns[1].cluster, GOSSIP_LEFT) == 1;
        usleep(50000);
    }
    TT_CHECK(left, "both remaining nodes see the leaver as left");
    TT_CHECK(count_state(ns[0].cluster, GOSSIP_DEAD) == 0, "nobody is dead");
    /* The leaver owns nothing any more. */
    node_cluster_view *v = node_cluster_view_get(ns[0].cluster);
    TT_CHECK(dht_view_size(node_cluster_view_dht(v)) == 2, "2 owners in the placement view, got %zu",
             dht_view_size(node_cluster_view_dht(v)));
    node_cluster_view_put(v);
    trio_stop(ns);
}

TT_TEST(test_node_cluster_node_with_another_key_cannot_join)
{
    tnode ns[3];
    trio_start(ns, key_b);
    TT_CHECK(wait_alive(ns, 2, 2, 10), "the two nodes with the cluster key see each other");
    usleep(1500000);
    TT_CHECK(count_state(ns[0].cluster, GOSSIP_ALIVE) == 2, "the stranger is not a member of node 2's view");
    TT_CHECK(count_state(ns[1].cluster, GOSSIP_ALIVE) == 2, "nor of node 3's");
    TT_CHECK(count_state(ns[2].cluster, GOSSIP_ALIVE) == 1, "the stranger sees only itself");
    TT_CHECK(!node_cluster_joined(ns[2].cluster), "the stranger never joined");
    trio_stop(ns);
}

TT_TEST(test_node_cluster_restart_bumps_the_incarnation)
{
    tnode n;
    tnode_start(&n, 5, key_a, NULL);
    char path[4200];
    snprintf(path, sizeof path, "%s/incarnation", n.state);
    FILE *f = fopen(path, "r");
    TT_CHECK(f != NULL, "incarnation file written");
    unsigned long first = 0;
    TT_CHECK(fscanf(f, "%lu", &first) == 1 && first >= 1, "first incarnation %lu", first);
    fclose(f);
    node_cluster_delete(n.cluster);
    node_peer_delete(n.peer);
    /* Start again on the same state dir. */
    char *state = n.state;
    node_peer_config pc = {.handlers = &handlers, .handlers_ud = &n, .bind = "127.0.0.5:0"};
    TT_OK(node_peer_keypair_load_or_create(state, pc.public_key, pc.secret_key));
    n.peer = node_peer_new(&pc);
    TT_CHECK(n.peer != NULL, "peer");
    node_cluster_config cc = {0};
    snprintf(cc.self.id, sizeof cc.self.id, "node-5");
    TT_OK(shoal_addr_parse(node_peer_endpoint(n.peer), 0, &cc.self.addr));
    cc.self.capacity = 1;
    cc.self.serving = true;
    cc.self.proto_version = 1;
    cc.self.block_size = 1 << 20;
    memcpy(cc.cluster_key, key_a, 32);
    cc.bind = cc.self.addr;
    cc.state_dir = state;
    cc.peer = n.peer;
    n.cluster = node_cluster_new(&cc);
    TT_CHECK(n.cluster != NULL, "restart: %s", shoal_error_message());
    node_cluster_view *v = node_cluster_view_get(n.cluster);
    TT_CHECK(node_cluster_view_member(v, 0)->incarnation > first, "incarnation %lu after restart > %lu",
             (unsigned long)node_cluster_view_member(v, 0)->incarnation, first);
    node_cluster_view_put(v);
    tnode_stop(&n);
}

TT_MAIN()
