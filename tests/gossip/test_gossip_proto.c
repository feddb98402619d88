/*
 * The gossip wire format: every message type survives a round trip, every class of malformed input
 * is rejected with a reason (never a crash), and an instance counts what it drops.
 */
#include "gossip_proto.h"
#include "gossip_tt.h"

#include <stdlib.h>

static gossip_meta sample_meta(const char *id, uint32_t n)
{
    gossip_meta m;
    memset(&m, 0, sizeof m);
    snprintf(m.id, sizeof m.id, "%s", id);
    m.addr = shoal_addr_ipv4(0x0a000000u + n, 7400);
    snprintf(m.zone, sizeof m.zone, "zone-%u", n % 3);
    for (int i = 0; i < 32; i++)
        m.curve_public[i] = (uint8_t)(i * 7 + n);
    m.capacity = (uint64_t)n << 33;
    m.serving = n % 2;
    m.proto_version = 1;
    m.block_size = 4u << 20;
    return m;
}

/* Encodes `m` with updates u[0..n) into out; returns the length. */
static size_t encode(const gossip_msg *m, const gossip_update *u, uint32_t n, uint8_t *out, size_t cap)
{
    uint8_t buf[GOSSIP_PLAIN_MAX];
    gossip_raw_updates raw;
    TT_CHECK(gossip_updates_encode(u, n, buf, sizeof buf, &raw) == 0, "%u updates do not fit", n);
    size_t len = gossip_msg_encode(m, &raw, out, cap);
    TT_CHECK(len > 0, "message of type %u does not fit", m->type);
    return len;
}

static gossip_msg *msg_new(uint32_t type)
{
    gossip_msg *m = calloc(1, sizeof *m);
    TT_CHECK(m != NULL, "alloc");
    m->type = type;
    snprintf(m->from, sizeof m->from, "node-a");
    m->seq = 0x123456789ull;
    snprintf(m->target, sizeof m->target, "node-b");
    m->addr = shoal_addr_ipv4(0x0a000002u, 7401);
    m->join = true;
    m->chunk = 2;
    m->chunks = 5;
    m->reason = GOSSIP_REFUSE_BLOCK_SIZE;
    snprintf(m->text, sizeof m->text, "block size differs");
    return m;
}

static uint32_t sample_updates(gossip_update *u)
{
    memset(u, 0, 4 * sizeof *u);
    u[0].kind = GOSSIP_ALIVE;
    u[0].incarnation = 7;
    u[0].has_meta = true;
    u[0].meta = sample_meta("alive-one", 1);
    u[1].kind = GOSSIP_SUSPECT;
    u[1].incarnation = 3;
    snprintf(u[1].meta.id, sizeof u[1].meta.id, "suspect-two");
    snprintf(u[1].accuser, sizeof u[1].accuser, "node-a");
    u[2].kind = GOSSIP_DEAD;
    u[2].incarnation = UINT64_MAX;
    snprintf(u[2].meta.id, sizeof u[2].meta.id, "dead-three");
    snprintf(u[2].accuser, sizeof u[2].accuser, "node-c");
    u[3].kind = GOSSIP_LEFT;
    u[3].incarnation = 0;
    u[3].has_meta = true;
    u[3].meta = sample_meta("left-four", 4);
    u[3].meta.addr.family = 6;
    u[3].meta.addr.ip[15] = 1;
    return 4;
}

TT_TEST(test_gossip_proto_every_message_type_round_trips)
{
    gossip_update u[4];
    uint32_t nu = sample_updates(u);
    gossip_msg *out = calloc(1, sizeof *out);
    for (uint32_t type = 1; type <= GOSSIP_MSG_TYPE_MAX_; type++) {
        gossip_msg *m = msg_new(type);
        uint8_t buf[GOSSIP_PLAIN_MAX];
        size_t len = encode(m, u, nu, buf, sizeof buf);
        const char *why = NULL;
        TT_CHECK(gossip_msg_decode(buf, len, out, &why) == 0, "type %u: %s", type, why);
        TT_CHECK(out->type == type && strcmp(out->from, "node-a") == 0, "type %u header", type);
        bool seq = type == GOSSIP_MSG_PING || type == GOSSIP_MSG_ACK || type == GOSSIP_MSG_PING_REQ ||
                   type == GOSSIP_MSG_NACK;
        TT_CHECK(!seq || out->seq == m->seq, "type %u seq %llu", type, (unsigned long long)out->seq);
        if (type == GOSSIP_MSG_PING || type == GOSSIP_MSG_PING_REQ)
            TT_CHECK(strcmp(out->target, "node-b") == 0, "type %u target", type);
        if (type == GOSSIP_MSG_PING_REQ)
            TT_CHECK(out->has_addr && shoal_addr_eq(&out->addr, &m->addr), "ping-req address");
        if (type == GOSSIP_MSG_PP_REQ || type == GOSSIP_MSG_PP_RESP)
            TT_CHECK(out->join && out->chunk == 2 && out->chunks == 5, "push-pull chunk fields");
        if (type == GOSSIP_MSG_REFUSE)
            TT_CHECK(out->reason == GOSSIP_REFUSE_BLOCK_SIZE && strcmp(out->text, m->text) == 0, "refusal");
        TT_CHECK(out->n_updates == nu, "type %u: %u updates back", type, out->n_updates);
        for (uint32_t i = 0; i < nu; i++) {
            const gossip_update *a = &u[i], *b = &out->updates[i];
            TT_CHECK(a->kind == b->kind && a->incarnation == b->incarnation &&
                         strcmp(a->meta.id, b->meta.id) == 0 && strcmp(a->accuser, b->accuser) == 0 &&
                         a->has_meta == b->has_meta,
                     "update %u differs", i);
            if (a->has_meta)
                TT_CHECK(memcmp(&a->meta.addr, &b->meta.addr, sizeof a->meta.addr) == 0 &&
                             strcmp(a->meta.zone, b->meta.zone) == 0 &&
                             memcmp(a->meta.curve_public, b->meta.curve_public, 32) == 0 &&
                             a->meta.capacity == b->meta.capacity && a->meta.serving == b->meta.serving &&
                             a->meta.proto_version == b->meta.proto_version &&
                             a->meta.block_size == b->meta.block_size,
                         "metadata of update %u differs", i);
        }
        free(m);
    }
    free(out);
}

TT_TEST(test_gossip_proto_largest_update_fits_its_declared_bound)
{
    gossip_update u;
    memset(&u, 0, sizeof u);
    u.kind = GOSSIP_SUSPECT;
    u.incarnation = UINT64_MAX;
    memset(u.meta.id, 'i', GOSSIP_ID_MAX);
    memset(u.accuser, 'a', GOSSIP_ID_MAX);
    memset(u.meta.zone, 'z', GOSSIP_ZONE_MAX);
    u.meta.addr.family = 6;
    u.meta.addr.port = 65535;
    u.meta.capacity = UINT64_MAX;
    u.meta.proto_version = UINT32_MAX;
    u.meta.block_size = UINT32_MAX;
    u.has_meta = true;
    uint8_t buf[2 * GOSSIP_UPDATE_MAX];
    size_t len = gossip_update_encode(&u, buf, sizeof buf);
    TT_CHECK(len > 0 && len <= GOSSIP_UPDATE_MAX, "largest update encodes to %zu bytes, bound %d", len,
             GOSSIP_UPDATE_MAX);
    static gossip_msg m;
    gossip_msg *hdr = msg_new(GOSSIP_MSG_GOSSIP);
    uint8_t out[GOSSIP_PLAIN_MAX];
    gossip_raw_updates raw = {.updates = buf, .updates_len = len, .cache_used = (const uint8_t *)"\xc0",
                              .cache_used_len = 1, .n = 1};
    size_t mlen = gossip_msg_encode(hdr, &raw, out, sizeof out);
    const char *why = NULL;
    TT_CHECK(mlen > 0 && gossip_msg_decode(out, mlen, &m, &why) == 0, "largest update does not decode: %s", why);
    TT_CHECK(m.n_updates == 1 && strlen(m.updates[0].meta.id) == GOSSIP_ID_MAX && m.updates[0].incarnation == UINT64_MAX,
             "largest update changed in transit");
    free(hdr);
}

/* Decoding must fail, and say why. */
static void expect_reject(const uint8_t *data, size_t len, const char *what)
{
    static gossip_msg m;
    const char *why = NULL;
    TT_CHECK(gossip_msg_decode(data, len, &m, &why) < 0, "%s was accepted", what);
    TT_CHECK(why && why[0], "%s rejected without a reason", what);
}

TT_TEST(test_gossip_proto_cache_use_rides_beside_the_updates_and_is_optional)
{
    gossip_update u[4];
    uint32_t nu = sample_updates(u);
    u[0].meta.cache_used = UINT64_MAX - 1;
    u[0].meta.cache_used_known = true;
    gossip_msg *hdr = msg_new(GOSSIP_MSG_GOSSIP);
    static gossip_msg out;
    uint8_t buf[GOSSIP_PLAIN_MAX];
    size_t len = encode(hdr, u, nu, buf, sizeof buf);
    const char *why = NULL;
    TT_CHECK(gossip_msg_decode(buf, len, &out, &why) == 0, "decode: %s", why);
    TT_CHECK(out.updates[0].meta.cache_used_known && out.updates[0].meta.cache_used == UINT64_MAX - 1,
             "cache use changed in transit");
    TT_CHECK(!out.updates[3].meta.cache_used_known, "an unpublished cache use came back known");

    /* A packet of the first release: the same updates and no key 12. Its members' use is unknown. */
    uint8_t upd[GOSSIP_PLAIN_MAX], old[GOSSIP_PLAIN_MAX];
    gossip_raw_updates raw;
    TT_CHECK(gossip_updates_encode(u, nu, upd, sizeof upd, &raw) == 0, "encode");
    size_t hlen = gossip_msg_encode(hdr, NULL, old, sizeof old);
    old[0]++; /* one more key: 6 */
    old[hlen] = 0x06;
    old[hlen + 1] = (uint8_t)(0x90 | nu);
    memcpy(old + hlen + 2, raw.updates, raw.updates_len);
    TT_CHECK(gossip_msg_decode(old, hlen + 2 + raw.updates_len, &out, &why) == 0, "old packet: %s", why);
    TT_CHECK(out.n_updates == nu && !out.updates[0].meta.cache_used_known, "old packet's updates");

    /* The same with key 12 appended: one use too few, or a use for an update without metadata. */
    old[0]++;
    size_t at = hlen + 2 + raw.updates_len;
    old[at] = 0x0c;
    old[at + 1] = (uint8_t)(0x90 | (nu - 1));
    for (uint32_t i = 0; i < nu - 1; i++)
        old[at + 2 + i] = 0xc0;
    expect_reject(old, at + 2 + nu - 1, "cache uses fewer than the updates");
    old[at + 1] = (uint8_t)(0x90 | nu);
    old[at + 2 + nu - 1] = 0xc0;
    old[at + 2 + 1] = 0x05; /* update 1 is a suspicion: no metadata */
    expect_reject(old, at + 2 + nu, "a cache use for an update without metadata");
    old[at + 2 + 1] = 0xc0;
    TT_CHECK(gossip_msg_decode(old, at + 2 + nu, &out, &why) == 0, "all-nil cache uses: %s", why);
    free(hdr);
}

TT_TEST(test_gossip_proto_rejects_input_that_is_not_a_map)
{
    const uint8_t arr[] = {0x93, 0x01, 0x02, 0x03};
    const uint8_t str[] = {0xa3, 'a', 'b', 'c'};
    const uint8_t num[] = {0x05};
    expect_reject(arr, sizeof arr, "an array");
    expect_reject(str, sizeof str, "a string");
    expect_reject(num, sizeof num, "an integer");
    expect_reject(arr, 0, "empty input");
}

TT_TEST(test_gossip_proto_rejects_wrong_types)
{
    /* {0:1, 1:"x", 2:"a"}: type as a string. */
    const uint8_t t1[] = {0x83, 0x00, 0x01, 0x01, 0xa1, 'x', 0x02, 0xa1, 'a'};
    /* {0:1, 1:8, 2:5}: sender as an integer. */
    const uint8_t t2[] = {0x83, 0x00, 0x01, 0x01, 0x08, 0x02, 0x05};
    /* {0:1, 1:8, 2:"a", 6:{}}: updates as a map. */
    const uint8_t t3[] = {0x84, 0x00, 0x01, 0x01, 0x08, 0x02, 0xa1, 'a', 0x06, 0x80};
    /* {0:1, 1:8, 2:"a", 6:[[9, "b", 0, nil, nil]]}: unknown state 9. */
    const uint8_t t4[] = {0x84, 0x00, 0x01, 0x01, 0x08, 0x02, 0xa1, 'a', 0x06, 0x91, 0x95, 0x09, 0xa1, 'b', 0x00, 0xc0, 0xc0};
    /* alive without metadata */
    const uint8_t t5[] = {0x84, 0x00, 0x01, 0x01, 0x08, 0x02, 0xa1, 'a', 0x06, 0x91, 0x95, 0x00, 0xa1, 'b', 0x00, 0xc0, 0xc0};
    /* negative integer as a key */
    const uint8_t t6[] = {0x81, 0xff, 0x01};
    expect_reject(t1, sizeof t1, "a string message type");
    expect_reject(t2, sizeof t2, "an integer sender");
    expect_reject(t3, sizeof t3, "a map of updates");
    expect_reject(t4, sizeof t4, "an unknown member state");
    expect_reject(t5, sizeof t5, "alive without metadata");
    expect_reject(t6, sizeof t6, "a negative key");
}

TT_TEST(test_gossip_proto_rejects_unknown_version_and_missing_fields)
{
    const uint8_t v2[] = {0x83, 0x00, 0x02, 0x01, 0x08, 0x02, 0xa1, 'a'};
    const uint8_t nov[] = {0x82, 0x01, 0x08, 0x02, 0xa1, 'a'};
    const uint8_t ping_noseq[] = {0x84, 0x00, 0x01, 0x01, 0x01, 0x02, 0xa1, 'a', 0x04, 0xa1, 'b'};
    const uint8_t dupkey[] = {0x84, 0x00, 0x01, 0x01, 0x08, 0x02, 0xa1, 'a', 0x01, 0x08};
    const uint8_t ok[] = {0x83, 0x00, 0x01, 0x01, 0x08, 0x02, 0xa1, 'a'};
    expect_reject(v2, sizeof v2, "version 2");
    expect_reject(nov, sizeof nov, "a packet without version");
    expect_reject(ping_noseq, sizeof ping_noseq, "a ping without seq");
    expect_reject(dupkey, sizeof dupkey, "a repeated key");
    static gossip_msg m;
    const char *why = NULL;
    TT_CHECK(gossip_msg_decode(ok, sizeof ok, &m, &why) == 0, "the minimal gossip message: %s", why);
}

TT_TEST(test_gossip_proto_rejects_every_truncation)
{
    gossip_update u[4];
    uint32_t nu = sample_updates(u);
    gossip_msg *m = msg_new(GOSSIP_MSG_PING_REQ);
    uint8_t buf[GOSSIP_PLAIN_MAX];
    size_t len = encode(m, u, nu, buf, sizeof buf);
    for (size_t cut = 0; cut < len; cut++) {
        char what[64];
        snprintf(what, sizeof what, "the first %zu of %zu bytes", cut, len);
        /* Copy so ASan sees any read past the prefix. */
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, buf, cut);
        expect_reject(p, cut, what);
        free(p);
    }
    free(m);
}

TT_TEST(test_gossip_proto_rejects_oversize_fields_and_packets)
{
    /* A sender id of 64 bytes (one more than allowed). */
    uint8_t big[128] = {0x83, 0x00, 0x01, 0x01, 0x08, 0x02, 0xd9, 64};
    memset(big + 8, 'x', 64);
    expect_reject(big, 8 + 64, "a 64-byte node id");
    uint8_t *huge = calloc(1, GOSSIP_PLAIN_MAX + 1);
    huge[0] = 0x80;
    expect_reject(huge, GOSSIP_PLAIN_MAX + 1, "a packet over the size limit");
    free(huge);
    /* A 31-byte public key inside metadata. */
    gossip_update u[4];
    sample_updates(u);
    gossip_msg *m = msg_new(GOSSIP_MSG_GOSSIP);
    uint8_t buf[GOSSIP_PLAIN_MAX];
    size_t len = encode(m, u, 1, buf, sizeof buf);
    uint8_t *key = NULL;
    for (size_t i = 0; i + 1 < len; i++)
        if (!key && buf[i] == 0xc4 && buf[i + 1] == 32)
            key = &buf[i + 1];
    TT_CHECK(key != NULL, "public key not found in the encoding");
    *key = 31;
    expect_reject(buf, len, "a 31-byte key followed by a stray byte");
    free(m);
}

TT_TEST(test_gossip_proto_rejects_absurd_counts)
{
    /* A map announcing 2^32-1 pairs in 5 bytes. */
    const uint8_t map[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    /* An updates array announcing 65535 entries. */
    const uint8_t arr[] = {0x84, 0x00, 0x01, 0x01, 0x08, 0x02, 0xa1, 'a', 0x06, 0xdc, 0xff, 0xff};
    /* An updates array of 65 entries (one over the limit), each a small valid-looking byte. */
    uint8_t many[80] = {0x84, 0x00, 0x01, 0x01, 0x08, 0x02, 0xa1, 'a', 0x06, 0xdc, 0x00, 65};
    /* A string announcing 4 GB. */
    const uint8_t str[] = {0x83, 0x00, 0x01, 0x01, 0x08, 0x02, 0xdb, 0xff, 0xff, 0xff, 0xff};
    /* An unknown key whose value nests 100 arrays deep. */
    uint8_t deep[120] = {0x84, 0x00, 0x01, 0x01, 0x08, 0x02, 0xa1, 'a', 0x1f};
    memset(deep + 9, 0x91, 100);
    deep[109] = 0x00;
    expect_reject(map, sizeof map, "a map of 2^32-1 pairs");
    expect_reject(arr, sizeof arr, "65535 updates");
    expect_reject(many, sizeof many, "65 updates");
    expect_reject(str, sizeof str, "a 4 GB string");
    expect_reject(deep, 110, "100 nested arrays");
}

TT_TEST(test_gossip_proto_unknown_keys_are_skipped)
{
    /* {0:1, 1:8, 2:"a", 20:[1,{"x":2}]} */
    const uint8_t p[] = {0x84, 0x00, 0x01, 0x01, 0x08, 0x02, 0xa1, 'a', 0x14, 0x92, 0x01, 0x81, 0xa1, 'x', 0x02};
    static gossip_msg m;
    const char *why = NULL;
    TT_CHECK(gossip_msg_decode(p, sizeof p, &m, &why) == 0, "unknown key not skipped: %s", why);
}

TT_TEST(test_gossip_proto_seal_opens_only_with_the_same_key)
{
    uint8_t k1[GOSSIP_KEY_LEN], k2[GOSSIP_KEY_LEN], nonce[GOSSIP_NONCE_LEN];
    memset(k1, 1, sizeof k1);
    memset(k2, 2, sizeof k2);
    memset(nonce, 9, sizeof nonce);
    const uint8_t plain[] = "hello members";
    uint8_t sealed[64], back[64];
    size_t slen = gossip_seal(k1, nonce, plain, sizeof plain, sealed), plen = 0;
    TT_CHECK(slen == sizeof plain + GOSSIP_SEAL_OVERHEAD, "sealed length %zu", slen);
    TT_CHECK(gossip_open(k1, sealed, slen, back, &plen) == 0 && plen == sizeof plain &&
                 memcmp(back, plain, plen) == 0,
             "does not open with its key");
    TT_CHECK(gossip_open(k2, sealed, slen, back, &plen) < 0, "opens with another key");
    sealed[30] ^= 1;
    TT_CHECK(gossip_open(k1, sealed, slen, back, &plen) < 0, "a flipped bit still opens");
    TT_CHECK(gossip_open(k1, sealed, 20, back, &plen) < 0, "a 20-byte datagram opens");
}

TT_TEST(test_gossip_malformed_and_unsealed_datagrams_are_counted_and_dropped)
{
    gossip_config cfg;
    gtt_config(&cfg);
    sim_cluster *c = sim_cluster_new(21, &cfg);
    TT_OK(sim_cluster_add_joined(c, 2, 0));
    sim_world *w = sim_cluster_world(c);
    sim_world_run_for(w, 5 * SEC);
    gossip *g = sim_cluster_node(c, 0);
    const gossip_counters *k = gossip_counters_get(g);
    uint64_t dec0 = k->decode_errors, seal0 = k->seal_failures;
    size_t members = gossip_member_count(g);
    /* Garbage sealed with the right key: opens, fails to decode. */
    const uint8_t junk[][6] = {{0x93, 1, 2, 3}, {0xdf, 0xff, 0xff, 0xff, 0xff}, {0xc1}, {0x81, 0x00, 0x09}};
    uint8_t nonce[GOSSIP_NONCE_LEN] = {0}, wire[64];
    for (size_t i = 0; i < 4; i++) {
        nonce[0] = (uint8_t)i;
        size_t l = gossip_seal(cfg.cluster_key, nonce, junk[i], sizeof junk[i], wire);
        TT_OK(sim_world_inject(w, 1, 0, wire, l));
    }
    /* Bytes that are not sealed at all, and a sealed packet cut short. */
    TT_OK(sim_world_inject(w, 1, 0, junk[0], sizeof junk[0]));
    TT_OK(sim_world_inject(w, 1, 0, wire, 30));
    TT_CHECK(k->decode_errors - dec0 == 4, "decode errors counted: %llu", (unsigned long long)(k->decode_errors - dec0));
    TT_CHECK(k->seal_failures - seal0 == 2, "seal failures counted: %llu", (unsigned long long)(k->seal_failures - seal0));
    TT_CHECK(gossip_member_count(g) == members, "a dropped packet changed the view");
    sim_world_run_for(w, 5 * SEC);
    TT_CHECK(sim_cluster_converged(c), "the node stopped working after bad packets");
    sim_cluster_delete(c);
}

TT_MAIN()
