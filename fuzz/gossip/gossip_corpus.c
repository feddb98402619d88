/*
 * Writes the seed corpus of fuzz_gossip_decode: real plaintext packets of every message type,
 * captured from a small virtual cluster that joins, loses a member (ping-req, nack, suspect, dead),
 * refuses a joiner with another block size, and sees a member leave.
 *
 *   gossip_fuzz_corpus DIR     (the committed corpus is fuzz/gossip/corpus)
 */
#include "gossip_proto.h"
#include "shoal_log.h"
#include "sim_cluster.h"

#include <stdio.h>
#include <string.h>

#define PER_TYPE 3

static const char *const type_names[] = {"", "ping", "ack", "ping_req", "nack", "pp_req", "pp_resp", "refuse", "gossip"};

typedef struct corpus {
    const char *dir;
    uint8_t key[GOSSIP_KEY_LEN];
    int written[GOSSIP_MSG_TYPE_MAX_ + 1];
    int failed;
} corpus;

static void tap(void *ud, int from, const shoal_addr *to, const void *data, size_t len)
{
    corpus *c = ud;
    static gossip_msg m;
    uint8_t plain[GOSSIP_DATAGRAM_MAX];
    size_t plen;
    if (gossip_open(c->key, data, len, plain, &plen) < 0 || gossip_msg_decode(plain, plen, &m, NULL) < 0)
        return;
    if (c->written[m.type] >= PER_TYPE)
        return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-%d", c->dir, type_names[m.type], c->written[m.type]);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(plain, 1, plen, f) != plen) {
        fprintf(stderr, "gossip_fuzz_corpus: cannot write %s\n", path);
        c->failed = 1;
    }
    if (f)
        fclose(f);
    c->written[m.type]++;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gossip_fuzz_corpus DIR\n");
        return 2;
    }
    shoal_log_set_level(SHOAL_LOG_ERROR);
    corpus c = {.dir = argv[1]};
    gossip_config base;
    sim_cluster_base_config(&base);
    memcpy(c.key, base.cluster_key, sizeof c.key);
    sim_cluster *cl = sim_cluster_new(42, &base);
    if (!cl || sim_cluster_add_joined(cl, 5, 0) < 0)
        return 1;
    sim_world *w = sim_cluster_world(cl);
    sim_world_set_tap(w, tap, &c);
    sim_world_run_for(w, 70000000);
    sim_cluster_kill(cl, 4);
    sim_world_run_for(w, 30000000);
    gossip_config odd = base;
    snprintf(odd.self.id, sizeof odd.self.id, "odd");
    odd.self.addr = shoal_addr_ipv4(0x0b000001u, 7400);
    odd.self.block_size = 8u << 20;
    int x = sim_cluster_add(cl, &odd);
    if (x < 0 || sim_cluster_join(cl, x, 0) < 0)
        return 1;
    sim_world_run_for(w, 5000000);
    gossip_leave(sim_cluster_node(cl, 3));
    sim_world_run_for(w, 5000000);
    sim_cluster_delete(cl);
    for (int t = 1; t <= GOSSIP_MSG_TYPE_MAX_; t++) {
        printf("%-8s %d\n", type_names[t], c.written[t]);
        if (c.written[t] == 0)
            c.failed = 1;
    }
    return c.failed;
}
