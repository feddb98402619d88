/*
 * libFuzzer entry point for the gossip wire format, and through it the state machine.
 *
 * Each input is one plaintext packet. It goes to gossip_msg_decode(); whatever decodes is encoded
 * again and must decode to the same header and update count (the codec is its own inverse), then it
 * is sealed with the cluster key and delivered to node 0 of a fresh three-node virtual cluster,
 * which runs a few simulated seconds, so the fuzzer reaches every handler and state transition with
 * arbitrary well-formed messages. A fresh cluster per input keeps every finding reproducible from
 * its file alone (fuzz/gossip/replay.c replays them without libFuzzer).
 */
#include "gossip_proto.h"
#include "shoal_log.h"
#include "sim_cluster.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static gossip_msg decoded, again;

static void check_round_trip(void)
{
    uint8_t buf[GOSSIP_PLAIN_MAX], out[GOSSIP_PLAIN_MAX];
    gossip_raw_updates raw;
    if (gossip_updates_encode(decoded.updates, decoded.n_updates, buf, sizeof buf, &raw) < 0)
        return; /* canonical encoding may be longer than a compact input: nothing to compare */
    size_t len = gossip_msg_encode(&decoded, &raw, out, sizeof out);
    if (!len)
        return;
    const char *why = NULL;
    if (gossip_msg_decode(out, len, &again, &why) != 0 || again.type != decoded.type ||
        again.n_updates != decoded.n_updates || strcmp(again.from, decoded.from) != 0)
        abort();
    for (uint32_t i = 0; i < decoded.n_updates; i++)
        if (again.updates[i].meta.cache_used_known != decoded.updates[i].meta.cache_used_known ||
            again.updates[i].meta.cache_used != decoded.updates[i].meta.cache_used)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *why = NULL;
    if (gossip_msg_decode(data, size, &decoded, &why) != 0)
        return 0;
    check_round_trip();

    shoal_log_set_level(SHOAL_LOG_ERROR);
    gossip_config base;
    sim_cluster_base_config(&base);
    sim_cluster *c = sim_cluster_new(size, &base);
    if (!c || sim_cluster_add_joined(c, 3, 0) < 0)
        abort();
    sim_world *w = sim_cluster_world(c);
    sim_world_run_for(w, 2000000);
    uint8_t nonce[GOSSIP_NONCE_LEN] = {0};
    uint8_t sealed[GOSSIP_PLAIN_MAX + GOSSIP_SEAL_OVERHEAD];
    size_t slen = gossip_seal(base.cluster_key, nonce, data, size, sealed);
    sim_world_inject(w, 1, 0, sealed, slen);
    sim_world_run_for(w, 3000000);
    sim_cluster_delete(c);
    return 0;
}
