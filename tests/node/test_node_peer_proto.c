/* Tests of the peer protocol codec: round trips and the rejection of malformed header frames. */
#include "node_peer_proto.h"
#include "shoal_error.h"
#include "tt.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 2000 'x' bytes, for strings over their limits. */
static const char g_long[2001] = {[0 ... 1999] = 'x'};

static node_peer_msg sample_get(void)
{
    node_peer_msg m = {
        .type = NODE_PEER_GET,
        .request_id = 42,
        .membership_version = 7,
        .flags = NODE_PEER_F_OWNER_FETCH | NODE_PEER_F_NO_FORWARD,
        .block = {.bucket = shoal_cursor_from_str("train-data"),
                  .key = shoal_cursor_from_str("shards/000017.tar"),
                  .etag = shoal_cursor_from_str("\"9b2cf535f27731c974343645a3985328\""),
                  .index = 3,
                  .offset = 3u << 22,
                  .length = 1u << 22},
    };
    for (int i = 0; i < NODE_PEER_BLOCK_ID_LEN; i++)
        m.block.id[i] = (uint8_t)(0xa0 + i);
    return m;
}

static void encode_ok(const node_peer_msg *m, shoal_buf *out)
{
    TT_OK(shoal_buf_create(out, 0));
    TT_OK(node_peer_msg_encode(m, out));
}

/* Decodes and expects a rejection with SHOAL_ERR_NODE_PEER. */
static void expect_rejected(const void *bytes, size_t len, size_t payload, const char *what)
{
    node_peer_msg m;
    shoal_error_clear();
    int rc = node_peer_msg_decode(shoal_cursor_from_mem(bytes, len), payload, &m);
    TT_CHECK(rc == -1, "%s: decoded although malformed", what);
    TT_CHECK(shoal_error_code() == SHOAL_ERR_NODE_PEER, "%s: error %s (%s)", what,
             shoal_error_name(shoal_error_code()), shoal_error_message());
}

/* A packer writing into a shoal_buf, for hand-made (malformed) headers. */
static int pack_cb(void *data, const char *buf, size_t len)
{
    return shoal_buf_append((shoal_buf *)data, buf, len);
}

static void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* Starts a hand-made header: a map of `n` fields, the first three v=1, t=type, id=id. */
static void pk_head(msgpack_packer *pk, size_t n, node_peer_type type, uint64_t id)
{
    msgpack_pack_map(pk, n);
    pk_str(pk, "v"), msgpack_pack_uint64(pk, 1);
    pk_str(pk, "t"), msgpack_pack_uint64(pk, (uint64_t)type);
    pk_str(pk, "id"), msgpack_pack_uint64(pk, id);
}

/* A PING header of `n` fields whose first three are right, ready for the caller's others. */
static void pk_ping(msgpack_packer *pk, shoal_buf *b, size_t n)
{
    shoal_buf_reset(b);
    pk_head(pk, n, NODE_PEER_PING, 7);
}

TT_TEST(test_node_peer_proto_get_round_trips)
{
    node_peer_msg in = sample_get(), out;
    shoal_buf b;
    encode_ok(&in, &b);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &out));
    TT_CHECK(out.type == NODE_PEER_GET && out.request_id == 42 && out.membership_version == 7, "scalars");
    TT_CHECK(out.flags == (NODE_PEER_F_OWNER_FETCH | NODE_PEER_F_NO_FORWARD), "flags %u", out.flags);
    TT_CHECK(memcmp(out.block.id, in.block.id, NODE_PEER_BLOCK_ID_LEN) == 0, "block id");
    TT_CHECK(shoal_cursor_eq(out.block.bucket, in.block.bucket) && shoal_cursor_eq(out.block.key, in.block.key) &&
                 shoal_cursor_eq(out.block.etag, in.block.etag),
             "strings");
    TT_CHECK(out.block.key.ptr >= b.data && out.block.key.ptr < b.data + b.len,
             "decoded strings borrow the frame instead of copying");
    TT_CHECK(out.block.index == 3 && out.block.offset == (3u << 22) && out.block.length == (1u << 22), "range");
    shoal_buf_destroy(&b);
}

TT_TEST(test_node_peer_proto_replies_put_and_ping_round_trip)
{
    node_peer_msg reply = {.type = NODE_PEER_GET_REPLY, .request_id = UINT64_MAX, .status = NODE_PEER_OK,
                           .has_object_size = true, .object_size = 123456789012ull, .payload_len = 4096,
                           .checksum = 0xfeedfacecafebeefull};
    node_peer_msg put = sample_get();
    put.type = NODE_PEER_PUT;
    put.flags = 0;
    put.payload_len = put.block.length;
    put.checksum = 99;
    put.has_object_size = true;
    put.object_size = put.block.offset + put.block.length;
    node_peer_msg ping = {.type = NODE_PEER_PING, .request_id = 1, .membership_version = 9};
    node_peer_msg pong = {.type = NODE_PEER_PONG, .request_id = 1, .status = NODE_PEER_OK, .membership_version = 10};
    node_peer_msg busy = {.type = NODE_PEER_GET_REPLY, .request_id = 5, .status = NODE_PEER_BUSY};
    const node_peer_msg *all[] = {&reply, &put, &ping, &pong, &busy};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        shoal_buf b;
        node_peer_msg out;
        encode_ok(all[i], &b);
        TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), all[i]->payload_len, &out));
        TT_CHECK(out.type == all[i]->type && out.request_id == all[i]->request_id && out.status == all[i]->status &&
                     out.payload_len == all[i]->payload_len && out.checksum == all[i]->checksum &&
                     out.has_object_size == all[i]->has_object_size && out.object_size == all[i]->object_size,
                 "message %zu (%s) differs after a round trip", i, node_peer_type_name(all[i]->type));
        if (all[i]->type == NODE_PEER_PING || all[i]->type == NODE_PEER_PONG || all[i]->type == NODE_PEER_PUT)
            TT_CHECK(out.membership_version == all[i]->membership_version, "membership version of %zu", i);
        shoal_buf_destroy(&b);
    }
}

TT_TEST(test_node_peer_proto_rejects_non_map_and_garbage)
{
    const uint8_t array[] = {0x93, 0x01, 0x02, 0x03};
    expect_rejected(array, sizeof array, 0, "array");
    const uint8_t integer[] = {0x05};
    expect_rejected(integer, sizeof integer, 0, "integer");
    const uint8_t reserved[] = {0xc1};
    expect_rejected(reserved, sizeof reserved, 0, "reserved byte 0xc1");
    expect_rejected("", 0, 0, "empty frame");
    uint8_t random[64];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof random; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            random[i] = (uint8_t)x;
        }
        random[0] = 0x80 | (random[0] & 0x0f); /* a fixmap, so the bytes get past the first check */
        node_peer_msg m;
        TT_CHECK(node_peer_msg_decode(shoal_cursor_from_mem(random, sizeof random), 0, &m) == -1,
                 "random bytes round %d decoded", round);
    }
}

TT_TEST(test_node_peer_proto_rejects_every_truncation)
{
    node_peer_msg in = sample_get();
    shoal_buf b;
    encode_ok(&in, &b);
    for (size_t n = 0; n < b.len; n++) {
        char what[64];
        snprintf(what, sizeof what, "prefix of %zu/%zu bytes", n, b.len);
        expect_rejected(b.data, n, 0, what);
    }
    TT_OK(shoal_buf_append_byte(&b, 0xc0));
    expect_rejected(b.data, b.len, 0, "trailing byte");
    shoal_buf_destroy(&b);
}

TT_TEST(test_node_peer_proto_rejects_wrong_types)
{
    shoal_buf b;
    msgpack_packer pk;
    /* id as a string */
    TT_OK(shoal_buf_create(&b, 0));
    msgpack_packer_init(&pk, &b, pack_cb);
    msgpack_pack_map(&pk, 4);
    pk_str(&pk, "v"), msgpack_pack_uint64(&pk, 1);
    pk_str(&pk, "t"), msgpack_pack_uint64(&pk, NODE_PEER_PING);
    pk_str(&pk, "id"), pk_str(&pk, "7");
    pk_str(&pk, "mv"), msgpack_pack_uint64(&pk, 1);
    expect_rejected(b.data, b.len, 0, "id as string");
    /* a negative membership version */
    pk_ping(&pk, &b, 4);
    pk_str(&pk, "mv"), msgpack_pack_int64(&pk, -1);
    expect_rejected(b.data, b.len, 0, "negative mv");
    /* an integer map key */
    shoal_buf_reset(&b);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_uint64(&pk, 1), msgpack_pack_uint64(&pk, 1);
    expect_rejected(b.data, b.len, 0, "integer key");
    /* a block id of 15 bytes */
    node_peer_msg get = sample_get();
    shoal_buf good;
    encode_ok(&get, &good);
    uint8_t *blk = memmem(good.data, good.len, "\xc4\x10", 2);
    TT_CHECK(blk != NULL, "encoded GET holds a bin16 block id");
    blk[1] = 0x0f;
    expect_rejected(good.data, good.len, 0, "15-byte block id");
    shoal_buf_destroy(&good);
    shoal_buf_destroy(&b);
}

TT_TEST(test_node_peer_proto_rejects_unknown_version_type_status_and_flags)
{
    shoal_buf b;
    msgpack_packer pk;
    TT_OK(shoal_buf_create(&b, 0));
    msgpack_packer_init(&pk, &b, pack_cb);
    msgpack_pack_map(&pk, 4);
    pk_str(&pk, "t"), msgpack_pack_uint64(&pk, 99); /* a type only version 2 might know */
    pk_str(&pk, "id"), msgpack_pack_uint64(&pk, 7);
    pk_str(&pk, "mv"), msgpack_pack_uint64(&pk, 1);
    pk_str(&pk, "v"), msgpack_pack_uint64(&pk, 2);
    expect_rejected(b.data, b.len, 0, "version 2");
    TT_CHECK(strstr(shoal_error_message(), "version") != NULL, "names the version: %s", shoal_error_message());

    node_peer_msg m = {.type = NODE_PEER_PUT_REPLY, .request_id = 1, .status = NODE_PEER_OK};
    shoal_buf_reset(&b);
    TT_OK(node_peer_msg_encode(&m, &b));
    uint8_t *st = memmem(b.data, b.len, "\xa2st\x00", 4);
    TT_CHECK(st != NULL, "status encoded as fixint 0");
    st[3] = 9;
    expect_rejected(b.data, b.len, 0, "status 9");

    node_peer_msg get = sample_get();
    get.flags = 0x80;
    shoal_buf_reset(&b);
    TT_CHECK(node_peer_msg_encode(&get, &b) == -1 && shoal_error_code() == SHOAL_ERR_INVAL,
             "encoder refuses unknown flags");
    shoal_buf_destroy(&b);
}

TT_TEST(test_node_peer_proto_rejects_oversize_strings_and_absurd_lengths)
{
    static char key[NODE_PEER_MAX_KEY + 2];
    memset(key, 'k', sizeof key - 1);
    node_peer_msg get = sample_get();
    shoal_buf b;
    TT_OK(shoal_buf_create(&b, 0));
    get.block.key = shoal_cursor_from_str(key);
    TT_CHECK(node_peer_msg_encode(&get, &b) == -1, "encoder refuses a %zu-byte key", get.block.key.len);

    /* Hand-made GET with the long key, as a hostile peer would send it. */
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, pack_cb);
    shoal_buf_reset(&b);
    get = sample_get();
    pk_head(&pk, 12, NODE_PEER_GET, 1);
    pk_str(&pk, "mv"), msgpack_pack_uint64(&pk, 1);
    pk_str(&pk, "blk"), msgpack_pack_bin(&pk, 16), msgpack_pack_bin_body(&pk, get.block.id, 16);
    pk_str(&pk, "b"), pk_str(&pk, "bucket");
    pk_str(&pk, "k"), pk_str(&pk, key);
    pk_str(&pk, "e"), pk_str(&pk, "etag");
    pk_str(&pk, "i"), msgpack_pack_uint64(&pk, 0);
    pk_str(&pk, "off"), msgpack_pack_uint64(&pk, 0);
    pk_str(&pk, "len"), msgpack_pack_uint64(&pk, 4096);
    pk_str(&pk, "fl"), msgpack_pack_uint64(&pk, 0);
    expect_rejected(b.data, b.len, 0, "1025-byte key");

    /* A GET_REPLY announcing a 1 TiB payload. */
    shoal_buf_reset(&b);
    pk_head(&pk, 6, NODE_PEER_GET_REPLY, 1);
    pk_str(&pk, "st"), msgpack_pack_uint64(&pk, 0);
    pk_str(&pk, "pl"), msgpack_pack_uint64(&pk, 1ull << 40);
    pk_str(&pk, "ck"), msgpack_pack_uint64(&pk, 0);
    expect_rejected(b.data, b.len, 0, "1 TiB payload");

    /* A payload length that disagrees with the payload frame. */
    node_peer_msg reply = {.type = NODE_PEER_GET_REPLY, .request_id = 1, .payload_len = 100};
    shoal_buf_reset(&b);
    TT_OK(node_peer_msg_encode(&reply, &b));
    expect_rejected(b.data, b.len, 99, "payload frame shorter than announced");
    expect_rejected(b.data, b.len, 0, "missing payload");

    /* Containers that declare far more elements than the frame holds. */
    const uint8_t map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'v', 0x01};
    expect_rejected(map32, sizeof map32, 0, "map32 of 4 billion entries");
    const uint8_t str32[] = {0x81, 0xa1, 'k', 0xdb, 0x7f, 0xff, 0xff, 0xff, 'x'};
    expect_rejected(str32, sizeof str32, 0, "str32 of 2 GiB");
    const uint8_t nested[] = {0x81, 0xa1, 'x', 0xdd, 0x00, 0x10, 0x00, 0x00, 0x91, 0x91};
    expect_rejected(nested, sizeof nested, 0, "array32 of a million entries");
    shoal_buf_destroy(&b);
}

TT_TEST(test_node_peer_proto_rejects_missing_and_duplicate_fields)
{
    shoal_buf b;
    msgpack_packer pk;
    TT_OK(shoal_buf_create(&b, 0));
    msgpack_packer_init(&pk, &b, pack_cb);
    pk_head(&pk, 3, NODE_PEER_PING, 7);
    expect_rejected(b.data, b.len, 0, "PING without mv");
    TT_CHECK(strstr(shoal_error_message(), "'mv'") != NULL, "names the field: %s", shoal_error_message());

    pk_ping(&pk, &b, 5);
    pk_str(&pk, "mv"), msgpack_pack_uint64(&pk, 1);
    pk_str(&pk, "id"), msgpack_pack_uint64(&pk, 8);
    expect_rejected(b.data, b.len, 0, "duplicate id");
    shoal_buf_destroy(&b);
}

TT_TEST(test_node_peer_proto_ignores_unknown_fields)
{
    shoal_buf b;
    msgpack_packer pk;
    TT_OK(shoal_buf_create(&b, 0));
    msgpack_packer_init(&pk, &b, pack_cb);
    pk_head(&pk, 5, NODE_PEER_PING, 7);
    pk_str(&pk, "zone"), pk_str(&pk, "eu-west-1a"); /* a field from a later minor revision */
    pk_str(&pk, "mv"), msgpack_pack_uint64(&pk, 3);
    node_peer_msg m;
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &m));
    TT_CHECK(m.type == NODE_PEER_PING && m.request_id == 7 && m.membership_version == 3, "fields around it decoded");
    shoal_buf_destroy(&b);
}

TT_TEST(test_node_peer_proto_ignores_known_fields_foreign_to_the_type)
{
    shoal_buf b;
    msgpack_packer pk;
    TT_OK(shoal_buf_create(&b, 0));
    msgpack_packer_init(&pk, &b, pack_cb);
    pk_head(&pk, 6, NODE_PEER_PING, 7);
    pk_str(&pk, "mv"), msgpack_pack_uint64(&pk, 3);
    pk_str(&pk, "st"), msgpack_pack_uint64(&pk, NODE_PEER_BUSY); /* a status on a request */
    pk_str(&pk, "ck"), msgpack_pack_uint64(&pk, 99);
    node_peer_msg m;
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &m));
    TT_CHECK(m.status == NODE_PEER_OK && m.checksum == 0 && m.membership_version == 3,
             "status %s checksum %llu: fields a PING does not have must not leak into it",
             node_peer_status_name(m.status), (unsigned long long)m.checksum);
    shoal_buf_destroy(&b);
}

/* ---- hand-off and warm-only --------------------------------------------------------------------- */

/* A preload's GET keeps the block at the owner (WARM_ONLY) and the reply says where the owner found
 * it; a reply without "src" says nothing (has_source false). */
TT_TEST(test_node_peer_proto_warm_only_get_and_its_sourced_reply_round_trip)
{
    node_peer_msg get = sample_get(), out;
    get.flags |= NODE_PEER_F_WARM_ONLY;
    shoal_buf b;
    encode_ok(&get, &b);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &out));
    TT_CHECK(out.flags == NODE_PEER_F_GET_KNOWN, "flags 0x%x", out.flags);
    shoal_buf_destroy(&b);
    for (int src = NODE_PEER_SRC_STORE; src <= NODE_PEER_SRC_S3; src++) {
        node_peer_msg rep = {.type = NODE_PEER_GET_REPLY, .request_id = 3, .status = NODE_PEER_OK,
                             .has_source = true, .source = (node_peer_source)src};
        encode_ok(&rep, &b);
        TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &out));
        TT_CHECK(out.has_source && out.source == (node_peer_source)src && out.payload_len == 0, "source %d", src);
        /* A source the codec does not know is refused, not guessed at. */
        uint8_t *v = memmem(b.data, b.len, "\xa3src", 4);
        TT_CHECK(v != NULL && v[4] == (uint8_t)src, "src encoded as a fixint after its key");
        v[4] = 3;
        expect_rejected(b.data, b.len, 0, "source 3");
        shoal_buf_destroy(&b);
    }
    node_peer_msg plain = {.type = NODE_PEER_GET_REPLY, .request_id = 3, .status = NODE_PEER_ERROR};
    encode_ok(&plain, &b);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &out));
    TT_CHECK(!out.has_source && memmem(b.data, b.len, "src", 3) == NULL, "a reply without a source grew one");
    shoal_buf_destroy(&b);
}

/* The hand-off fields and the cooperative-metadata ones are distinct keys: a GET reply keeps its
 * "src" and drops an "ag" or "wk" it has no use for, a LIST keeps its "ma" and drops a "src". */
TT_TEST(test_node_peer_proto_source_and_cooperative_metadata_fields_stay_apart)
{
    shoal_buf b;
    msgpack_packer pk;
    node_peer_msg m;
    TT_OK(shoal_buf_create(&b, 0));
    msgpack_packer_init(&pk, &b, pack_cb);
    pk_head(&pk, 8, NODE_PEER_GET_REPLY, 4);
    pk_str(&pk, "st"), msgpack_pack_uint64(&pk, NODE_PEER_OK);
    pk_str(&pk, "pl"), msgpack_pack_uint64(&pk, 0);
    pk_str(&pk, "ck"), msgpack_pack_uint64(&pk, 0);
    pk_str(&pk, "src"), msgpack_pack_uint64(&pk, NODE_PEER_SRC_PEER);
    pk_str(&pk, "ag"), msgpack_pack_uint64(&pk, 500);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &m));
    TT_CHECK(m.has_source && m.source == NODE_PEER_SRC_PEER && !m.has_age && m.age_ms == 0,
             "GET reply: source %d (%d), age %llu (%d)", (int)m.source, m.has_source,
             (unsigned long long)m.age_ms, m.has_age);
    shoal_buf_destroy(&b);

    node_peer_msg list = {.type = NODE_PEER_LIST, .request_id = 5, .membership_version = 2, .has_max_age = true,
                          .max_age_ms = 1500, .has_source = true, .source = NODE_PEER_SRC_S3};
    list.list.bucket = shoal_cursor_from_str("bkt");
    encode_ok(&list, &b);
    TT_CHECK(memmem(b.data, b.len, "\xa3src", 4) == NULL, "a LIST was encoded with a source");
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &m));
    TT_CHECK(m.has_max_age && m.max_age_ms == 1500 && !m.has_source, "LIST: max age %llu (%d), source %d",
             (unsigned long long)m.max_age_ms, m.has_max_age, m.has_source);
    shoal_buf_destroy(&b);
}

/* A draining node's store keeps block ids only: its hand-off PUT carries the id, the bytes and their
 * checksum and no coordinates; a plain PUT still needs every coordinate. */
TT_TEST(test_node_peer_proto_handoff_put_carries_id_bytes_and_checksum_only)
{
    node_peer_msg put = {.type = NODE_PEER_PUT, .request_id = 11, .membership_version = 5,
                         .flags = NODE_PEER_F_HANDOFF, .payload_len = 4096, .checksum = 0xabcdef};
    for (int i = 0; i < NODE_PEER_BLOCK_ID_LEN; i++)
        put.block.id[i] = (uint8_t)(0x10 + i);
    shoal_buf b;
    node_peer_msg out;
    encode_ok(&put, &b);
    TT_CHECK(memmem(b.data, b.len, "\xa1k", 2) == NULL && memmem(b.data, b.len, "\xa3len", 4) == NULL,
             "a hand-off PUT carries coordinates it does not have");
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 4096, &out));
    TT_CHECK(out.type == NODE_PEER_PUT && out.flags == NODE_PEER_F_HANDOFF && out.payload_len == 4096 &&
                 out.checksum == 0xabcdef && memcmp(out.block.id, put.block.id, NODE_PEER_BLOCK_ID_LEN) == 0 &&
                 out.block.key.len == 0,
             "the hand-off PUT changed in a round trip");
    expect_rejected(b.data, b.len, 4095, "hand-off PUT whose payload frame differs from pl");
    shoal_buf_destroy(&b);

    node_peer_msg empty = put;
    empty.payload_len = 0;
    TT_OK(shoal_buf_create(&b, 0));
    TT_CHECK(node_peer_msg_encode(&empty, &b) == -1 && shoal_error_code() == SHOAL_ERR_INVAL,
             "encoder sent a hand-off PUT of no bytes");
    node_peer_msg odd = put;
    odd.flags = 0x10;
    TT_CHECK(node_peer_msg_encode(&odd, &b) == -1 && strstr(shoal_error_message(), "flags") != NULL,
             "encoder sent a PUT with an unknown flag: %s", shoal_error_message());
    shoal_buf_destroy(&b);

    /* Without the flag the same header lacks the coordinates a PUT must carry. */
    msgpack_packer pk;
    TT_OK(shoal_buf_create(&b, 0));
    msgpack_packer_init(&pk, &b, pack_cb);
    pk_head(&pk, 7, NODE_PEER_PUT, 12);
    pk_str(&pk, "mv"), msgpack_pack_uint64(&pk, 1);
    pk_str(&pk, "blk"), msgpack_pack_bin(&pk, NODE_PEER_BLOCK_ID_LEN), msgpack_pack_bin_body(&pk, put.block.id, 16);
    pk_str(&pk, "pl"), msgpack_pack_uint64(&pk, 4096);
    pk_str(&pk, "ck"), msgpack_pack_uint64(&pk, 1);
    expect_rejected(b.data, b.len, 4096, "PUT without coordinates nor the hand-off flag");
    TT_CHECK(strstr(shoal_error_message(), "missing field") != NULL, "names what is missing: %s",
             shoal_error_message());
    shoal_buf_destroy(&b);

    /* A plain PUT keeps the encoding older nodes decode (no "fl"). Coordinates sent with the flag
     * mean nothing: they are dropped, as a field foreign to its message is, and the id stays. */
    node_peer_msg plain = sample_get();
    plain.type = NODE_PEER_PUT;
    plain.flags = 0;
    plain.payload_len = plain.block.length;
    encode_ok(&plain, &b);
    TT_CHECK(memmem(b.data, b.len, "\xa2" "fl", 3) == NULL, "a plain PUT grew a flags field");
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), plain.payload_len, &out));
    TT_CHECK(out.flags == 0 && out.block.length == plain.block.length, "plain PUT");
    TT_CHECK((b.data[0] & 0xf0) == 0x80 && (b.data[0] & 0x0f) < 15, "a plain PUT is a fixmap of under 15 fields");
    b.data[0]++;
    TT_OK(shoal_buf_append(&b, "\xa2" "fl\x08", 4)); /* ... and one more: fl = HANDOFF */
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), plain.payload_len, &out));
    TT_CHECK(out.flags == NODE_PEER_F_HANDOFF && out.block.key.len == 0 && out.block.length == 0 &&
                 memcmp(out.block.id, plain.block.id, NODE_PEER_BLOCK_ID_LEN) == 0,
             "coordinates of a hand-off PUT survived the decode, or its id did not");
    shoal_buf_destroy(&b);
}

/* ---- LIST and listing pages ------------------------------------------------------------------- */

static node_peer_msg sample_list(void)
{
    node_peer_msg m = {.type = NODE_PEER_LIST, .request_id = 9, .membership_version = 4};
    m.list = (node_peer_list_req){.bucket = shoal_cursor_from_str("train-data"),
                                  .prefix = shoal_cursor_from_str("shards/"),
                                  .delimiter = shoal_cursor_from_str("/"),
                                  .token = shoal_cursor_from_str("tok-1"),
                                  .start_after = shoal_cursor_from_str(""),
                                  .max_keys = 1000};
    return m;
}

TT_TEST(test_node_peer_proto_list_and_its_reply_round_trip)
{
    node_peer_msg in = sample_list(), out;
    shoal_buf b;
    encode_ok(&in, &b);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &out));
    TT_CHECK(out.type == NODE_PEER_LIST && out.request_id == 9 && out.membership_version == 4 &&
                 out.list.max_keys == 1000, "LIST scalars");
    TT_CHECK(shoal_cursor_eq_str(out.list.bucket, "train-data") && shoal_cursor_eq_str(out.list.prefix, "shards/") &&
                 shoal_cursor_eq_str(out.list.delimiter, "/") && shoal_cursor_eq_str(out.list.token, "tok-1") &&
                 out.list.start_after.len == 0,
             "LIST strings differ after a round trip");
    shoal_buf_destroy(&b);
    node_peer_msg rep = {.type = NODE_PEER_LIST_REPLY, .request_id = 9, .status = NODE_PEER_OK, .payload_len = 77};
    encode_ok(&rep, &b);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 77, &out));
    TT_CHECK(out.type == NODE_PEER_LIST_REPLY && out.payload_len == 77, "LIST_REPLY");
    expect_rejected(b.data, b.len, 76, "LIST_REPLY whose payload frame differs from pl");
    shoal_buf_destroy(&b);
    node_peer_msg bad = sample_list();
    bad.list.max_keys = NODE_PEER_MAX_LIST_KEYS + 1;
    TT_CHECK(shoal_buf_create(&b, 0) == 0 && node_peer_msg_encode(&bad, &b) == -1, "max keys 1001 was encoded");
    bad = sample_list();
    bad.list.bucket = shoal_cursor_from_str("");
    TT_CHECK(node_peer_msg_encode(&bad, &b) == -1, "an empty bucket was encoded");
    bad = sample_list();
    bad.list.delimiter = shoal_cursor_from_str("0123456789012345678901234567890123");
    TT_CHECK(node_peer_msg_encode(&bad, &b) == -1, "a 34-byte delimiter was encoded");
    shoal_buf_destroy(&b);
}

TT_TEST(test_node_peer_proto_list_missing_field_or_payload_is_rejected)
{
    node_peer_msg in = sample_list();
    shoal_buf b;
    encode_ok(&in, &b);
    expect_rejected(b.data, b.len, 3, "LIST with a payload");
    for (size_t n = 0; n < b.len; n++)
        expect_rejected(b.data, n, 0, "truncated LIST");
    /* A LIST without its prefix field. */
    msgpack_packer pk;
    shoal_buf_reset(&b);
    msgpack_packer_init(&pk, &b, pack_cb);
    pk_head(&pk, 8, NODE_PEER_LIST, 3);
    pk_str(&pk, "mv"), msgpack_pack_uint64(&pk, 1);
    pk_str(&pk, "lb"), pk_str(&pk, "b");
    pk_str(&pk, "ld"), pk_str(&pk, "/");
    pk_str(&pk, "lt"), pk_str(&pk, "");
    pk_str(&pk, "ls"), pk_str(&pk, "");
    expect_rejected(b.data, b.len, 0, "LIST without lp and lm");
    shoal_buf_destroy(&b);
}

static void sample_page(node_peer_list_page *p, node_peer_list_entry e[3])
{
    e[0] = (node_peer_list_entry){.key = shoal_cursor_from_str("shards/a.tar"),
                                  .etag = shoal_cursor_from_str("\"abc\""),
                                  .size = 1ull << 40,
                                  .mtime = 1700000000};
    e[1] = (node_peer_list_entry){.key = shoal_cursor_from_mem("shards/n\0l", 10), .size = 0, .mtime = -5};
    e[2] = (node_peer_list_entry){.is_prefix = true, .key = shoal_cursor_from_str("shards/sub/")};
    *p = (node_peer_list_page){.entries = e, .n_entries = 3, .truncated = true,
                               .next_token = shoal_cursor_from_str("next/token==")};
}

TT_TEST(test_node_peer_proto_list_page_round_trips)
{
    node_peer_list_entry e[3];
    node_peer_list_page in, out;
    sample_page(&in, e);
    shoal_buf b = {0};
    TT_OK(node_peer_list_encode(&in, &b));
    TT_OK(node_peer_list_decode(shoal_cursor_from_buf(&b), &out));
    TT_CHECK(out.n_entries == 3 && out.truncated && shoal_cursor_eq_str(out.next_token, "next/token=="), "page");
    for (size_t i = 0; i < 3; i++)
        TT_CHECK(out.entries[i].is_prefix == e[i].is_prefix && shoal_cursor_eq(out.entries[i].key, e[i].key) &&
                     shoal_cursor_eq(out.entries[i].etag, e[i].etag) && out.entries[i].size == e[i].size &&
                     out.entries[i].mtime == e[i].mtime,
                 "entry %zu differs after a round trip", i);
    node_peer_list_page_destroy(&out);
    node_peer_list_page empty = {0};
    shoal_buf_reset(&b);
    TT_OK(node_peer_list_encode(&empty, &b));
    TT_OK(node_peer_list_decode(shoal_cursor_from_buf(&b), &out));
    TT_CHECK(out.n_entries == 0 && !out.truncated, "empty page");
    node_peer_list_page_destroy(&out);
    shoal_buf_destroy(&b);
}

static void expect_page_rejected(const uint8_t *bytes, size_t len, const char *what)
{
    node_peer_list_page out;
    shoal_error_clear();
    TT_CHECK(node_peer_list_decode(shoal_cursor_from_mem(bytes, len), &out) == -1, "%s: decoded although malformed",
             what);
    TT_CHECK(shoal_error_code() == SHOAL_ERR_NODE_PEER, "%s: error %s (%s)", what, shoal_error_name(shoal_error_code()),
             shoal_error_message());
    TT_CHECK(out.entries == NULL && out.n_entries == 0, "%s: the failed decode left entries", what);
}

TT_TEST(test_node_peer_proto_malformed_list_pages_are_rejected)
{
    node_peer_list_entry e[3];
    node_peer_list_page in;
    sample_page(&in, e);
    shoal_buf b = {0};
    TT_OK(node_peer_list_encode(&in, &b));
    for (size_t n = 0; n < b.len; n++) {
        char what[64];
        snprintf(what, sizeof what, "page cut to %zu of %zu bytes", n, b.len);
        expect_page_rejected(b.data, n, what);
    }
    TT_OK(shoal_buf_append_byte(&b, 0));
    expect_page_rejected(b.data, b.len, "a trailing byte");
    b.len--;
    uint8_t *m = malloc(b.len);
    TT_CHECK(m != NULL, "malloc");
    memcpy(m, b.data, b.len);
    m[0] = 0x2;
    expect_page_rejected(m, b.len, "an unknown flag");
    /* flags(1) + token length(2) + token(12) = 15: the entry count. */
    memcpy(m, b.data, b.len);
    m[15] = 0xff, m[16] = 0xff, m[17] = 0xff, m[18] = 0x7f;
    expect_page_rejected(m, b.len, "a count of two billion entries");
    memcpy(m, b.data, b.len);
    m[19] = 7;
    expect_page_rejected(m, b.len, "an unknown entry kind");
    memcpy(m, b.data, b.len);
    m[20] = 0, m[21] = 0;
    expect_page_rejected(m, b.len, "an empty key");
    memcpy(m, b.data, b.len);
    m[20] = 0xff, m[21] = 0xff;
    expect_page_rejected(m, b.len, "a key longer than the page");
    free(m);
    shoal_buf_destroy(&b);
    /* A prefix holding a NUL byte is refused by both sides. */
    node_peer_list_entry nul = {.is_prefix = true, .key = shoal_cursor_from_mem("a\0b/", 4)};
    node_peer_list_page p = {.entries = &nul, .n_entries = 1};
    TT_CHECK(node_peer_list_encode(&p, &b) == -1, "a prefix with a NUL byte was encoded");
    const uint8_t raw[] = {0, 0, 0, 1, 0, 0, 0, 1, 4, 0, 'a', 0, 'b', '/'};
    expect_page_rejected(raw, sizeof raw, "a prefix with a NUL byte");
    shoal_buf_destroy(&b);
}


/* ---- progress (PING with a work item), max age, HEAD and object metadata ---------------------- */

TT_TEST(test_node_peer_proto_ping_work_item_and_pong_work_state_round_trip)
{
    node_peer_msg ping = {.type = NODE_PEER_PING, .request_id = 5, .membership_version = 2, .has_work_id = true};
    for (int i = 0; i < NODE_PEER_BLOCK_ID_LEN; i++)
        ping.work_id[i] = (uint8_t)(0x10 + i);
    shoal_buf b;
    node_peer_msg out;
    encode_ok(&ping, &b);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &out));
    TT_CHECK(out.has_work_id && memcmp(out.work_id, ping.work_id, NODE_PEER_BLOCK_ID_LEN) == 0,
             "PING lost its work item");
    shoal_buf_destroy(&b);
    /* Without one, a PING is what it always was. */
    ping.has_work_id = false;
    encode_ok(&ping, &b);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &out));
    TT_CHECK(!out.has_work_id, "a PING without \"w\" decoded with one");
    shoal_buf_destroy(&b);
    node_peer_msg pong = {.type = NODE_PEER_PONG, .request_id = 5, .membership_version = 2, .has_work = true,
                          .work = NODE_PEER_WORKING};
    encode_ok(&pong, &b);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &out));
    TT_CHECK(out.has_work && out.work == NODE_PEER_WORKING, "PONG work state");
    shoal_buf_destroy(&b);
    /* A work state the decoder does not know is refused, not guessed. */
    msgpack_packer pk;
    TT_OK(shoal_buf_create(&b, 0));
    msgpack_packer_init(&pk, &b, pack_cb);
    pk_head(&pk, 6, NODE_PEER_PONG, 5);
    pk_str(&pk, "mv"), msgpack_pack_uint64(&pk, 2);
    pk_str(&pk, "st"), msgpack_pack_uint64(&pk, 0);
    pk_str(&pk, "wk"), msgpack_pack_uint64(&pk, 2);
    expect_rejected(b.data, b.len, 0, "PONG with work state 2");
    /* A work item of the wrong size. */
    shoal_buf_reset(&b);
    pk_head(&pk, 5, NODE_PEER_PING, 5);
    pk_str(&pk, "mv"), msgpack_pack_uint64(&pk, 2);
    pk_str(&pk, "w"), msgpack_pack_bin(&pk, 15), msgpack_pack_bin_body(&pk, "0123456789abcde", 15);
    expect_rejected(b.data, b.len, 0, "PING with a 15-byte work item");
    shoal_buf_destroy(&b);
}

TT_TEST(test_node_peer_proto_list_max_age_and_reply_age_round_trip)
{
    node_peer_msg in = sample_list(), out;
    in.has_max_age = true;
    in.max_age_ms = 0; /* "no older than now" is a value of its own, not "absent" */
    shoal_buf b;
    encode_ok(&in, &b);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &out));
    TT_CHECK(out.has_max_age && out.max_age_ms == 0, "LIST max age 0 lost");
    shoal_buf_destroy(&b);
    in.has_max_age = false;
    encode_ok(&in, &b);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &out));
    TT_CHECK(!out.has_max_age, "a LIST without \"ma\" decoded with one");
    shoal_buf_destroy(&b);
    node_peer_msg rep = {.type = NODE_PEER_LIST_REPLY, .request_id = 9, .status = NODE_PEER_OK, .payload_len = 5,
                         .has_age = true, .age_ms = 12345};
    encode_ok(&rep, &b);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 5, &out));
    TT_CHECK(out.has_age && out.age_ms == 12345, "LIST_REPLY age");
    shoal_buf_destroy(&b);
}

static node_peer_msg sample_head(void)
{
    node_peer_msg m = {.type = NODE_PEER_HEAD, .request_id = 11, .membership_version = 6, .has_max_age = true,
                       .max_age_ms = 5000};
    m.head = (node_peer_head_req){.bucket = shoal_cursor_from_str("train-data"),
                                  .key = shoal_cursor_from_str("shards/000017.tar")};
    return m;
}

TT_TEST(test_node_peer_proto_head_and_its_reply_round_trip)
{
    node_peer_msg in = sample_head(), out;
    shoal_buf b;
    encode_ok(&in, &b);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &out));
    TT_CHECK(out.type == NODE_PEER_HEAD && out.request_id == 11 && out.membership_version == 6 &&
                 out.has_max_age && out.max_age_ms == 5000 && shoal_cursor_eq_str(out.head.bucket, "train-data") &&
                 shoal_cursor_eq_str(out.head.key, "shards/000017.tar"),
             "HEAD differs after a round trip");
    expect_rejected(b.data, b.len, 1, "HEAD with a payload");
    for (size_t n = 0; n < b.len; n++)
        expect_rejected(b.data, n, 0, "truncated HEAD");
    shoal_buf_destroy(&b);
    node_peer_msg rep = {.type = NODE_PEER_HEAD_REPLY, .request_id = 11, .status = NODE_PEER_OK, .payload_len = 40,
                         .has_age = true, .age_ms = 7};
    encode_ok(&rep, &b);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 40, &out));
    TT_CHECK(out.type == NODE_PEER_HEAD_REPLY && out.payload_len == 40 && out.age_ms == 7, "HEAD_REPLY");
    shoal_buf_destroy(&b);
    rep = (node_peer_msg){.type = NODE_PEER_HEAD_REPLY, .request_id = 11, .status = NODE_PEER_NOT_FOUND};
    encode_ok(&rep, &b);
    TT_OK(node_peer_msg_decode(shoal_cursor_from_buf(&b), 0, &out));
    expect_rejected(b.data, b.len, 3, "NOT_FOUND HEAD_REPLY with a payload");
    shoal_buf_destroy(&b);
    node_peer_msg bad = sample_head();
    bad.head.key = shoal_cursor_from_str("");
    TT_CHECK(shoal_buf_create(&b, 0) == 0 && node_peer_msg_encode(&bad, &b) == -1, "an empty key was encoded");
    bad = sample_head();
    bad.head.bucket = shoal_cursor_from_mem(g_long, NODE_PEER_MAX_BUCKET + 1);
    TT_CHECK(node_peer_msg_encode(&bad, &b) == -1, "a 256-byte bucket was encoded");
    shoal_buf_destroy(&b);
}

static void sample_info(node_peer_object_info *i)
{
    *i = (node_peer_object_info){.size = 123456789012ull, .mtime = 1700000123,
                                 .etag = shoal_cursor_from_str("\"0123456789abcdef0123456789abcdef-3\""),
                                 .content_type = shoal_cursor_from_str("application/x-tar"), .meta_dropped = 2,
                                 .n_meta = 2};
    i->meta[0] = (node_peer_meta_kv){shoal_cursor_from_str("mode"), shoal_cursor_from_str("33188")};
    i->meta[1] = (node_peer_meta_kv){shoal_cursor_from_str("mtime"), shoal_cursor_from_str("")};
}

TT_TEST(test_node_peer_proto_object_metadata_round_trips)
{
    node_peer_object_info in, out;
    sample_info(&in);
    shoal_buf b = {0};
    TT_OK(node_peer_head_encode(&in, &b));
    TT_OK(node_peer_head_decode(shoal_cursor_from_buf(&b), &out));
    TT_CHECK(out.size == in.size && out.mtime == in.mtime && shoal_cursor_eq(out.etag, in.etag) &&
                 shoal_cursor_eq(out.content_type, in.content_type) && out.meta_dropped == 2 && out.n_meta == 2,
             "metadata differs after a round trip");
    for (size_t k = 0; k < 2; k++)
        TT_CHECK(shoal_cursor_eq(out.meta[k].name, in.meta[k].name) &&
                     shoal_cursor_eq(out.meta[k].value, in.meta[k].value),
                 "entry %zu differs", k);
    for (size_t n = 0; n < b.len; n++) {
        shoal_error_clear();
        TT_CHECK(node_peer_head_decode(shoal_cursor_from_mem(b.data, n), &out) == -1 &&
                     shoal_error_code() == SHOAL_ERR_NODE_PEER,
                 "metadata cut to %zu of %zu bytes decoded", n, b.len);
    }
    TT_OK(shoal_buf_append_byte(&b, 0));
    TT_CHECK(node_peer_head_decode(shoal_cursor_from_buf(&b), &out) == -1, "a trailing byte was accepted");
    b.len--;
    /* size(8) mtime(8) etag(1+36) type(1+17) dropped(4) = 75: the entry count. */
    b.data[75] = NODE_PEER_MAX_META + 1;
    TT_CHECK(node_peer_head_decode(shoal_cursor_from_buf(&b), &out) == -1, "9 entries were accepted");
    b.data[75] = 2;
    b.data[76] = 0; /* the first name's length: an empty name */
    TT_CHECK(node_peer_head_decode(shoal_cursor_from_buf(&b), &out) == -1, "an empty name was accepted");
    b.data[76] = 4;
    b.data[78] = 0; /* a NUL inside the name "mode" */
    TT_CHECK(node_peer_head_decode(shoal_cursor_from_buf(&b), &out) == -1, "a NUL in a name was accepted");
    shoal_buf_reset(&b);
    /* The encoder refuses what the decoder would. */
    sample_info(&in);
    in.meta[1].value = shoal_cursor_from_mem(g_long, NODE_PEER_MAX_META_VALUE + 1);
    TT_CHECK(node_peer_head_encode(&in, &b) == -1 && b.len == 0, "an 88-byte value was encoded");
    sample_info(&in);
    in.n_meta = NODE_PEER_MAX_META + 1;
    TT_CHECK(node_peer_head_encode(&in, &b) == -1, "9 entries were encoded");
    sample_info(&in);
    in.etag = shoal_cursor_from_mem("\"a\0b\"", 5);
    TT_CHECK(node_peer_head_encode(&in, &b) == -1, "an ETag with a NUL was encoded");
    shoal_buf_destroy(&b);
}

TT_MAIN()
