/*
 * node_peer_proto: encoder and decoder of peer message header frames.
 *
 * Design. A header is one msgpack map with short string keys (the table is in the header file).
 * A map rather than a positional array so a later minor revision can add a field that old nodes
 * skip; the "v" field changes only when a meaning changes, and a decoder refuses a version it does
 * not know instead of guessing.
 *
 * The decoder is the part that faces the network, so it is built for hostile input:
 *
 *   1. The frame is bounded (NODE_PEER_MAX_HEADER) before anything is parsed.
 *   2. A pre-scan walks the msgpack structure without allocating and checks that every declared
 *      length fits in the bytes that remain and every declared container count could be filled
 *      by them (each element takes at least one byte). msgpack-c trusts counts and would reserve
 *      room for a map32 of four billion entries from a five-byte frame; after the pre-scan its
 *      zone never grows past a small multiple of the frame.
 *   3. msgpack-c builds the object tree; its strings and bins point into the frame (it does not
 *      copy them), which is why the decoded block fields can borrow the caller's bytes.
 *   4. Each field is checked for type, duplicates, range and consistency with the payload frame
 *      in one place, node_peer_msg_check(), which the encoder runs too: a node never sends what
 *      a peer would reject.
 *
 * Nothing here allocates on behalf of the caller except the zone msgpack-c frees before return,
 * and the entry array of a decoded listing page.
 *
 * Listing pages (the payload of a LIST reply) and object metadata (the payload of a HEAD reply)
 * are flat little-endian layouts instead of msgpack: every length is read through one bounded
 * reader that checks the bytes left before it takes any, the entry count is checked against what
 * the remaining bytes could hold before the array is allocated, and the strings borrow the
 * payload like the header's do.
 */
#include "node_peer_proto.h"

#include "shoal_bytes.h"
#include "shoal_error.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* Bits for fields seen, to refuse duplicates and to know which required ones are present. */
enum {
    F_V = 1u << 0,
    F_T = 1u << 1,
    F_ID = 1u << 2,
    F_MV = 1u << 3,
    F_BLK = 1u << 4,
    F_B = 1u << 5,
    F_K = 1u << 6,
    F_E = 1u << 7,
    F_I = 1u << 8,
    F_OFF = 1u << 9,
    F_LEN = 1u << 10,
    F_FL = 1u << 11,
    F_ST = 1u << 12,
    F_SZ = 1u << 13,
    F_PL = 1u << 14,
    F_CK = 1u << 15,
    F_LB = 1u << 16,
    F_LP = 1u << 17,
    F_LD = 1u << 18,
    F_LT = 1u << 19,
    F_LS = 1u << 20,
    F_LM = 1u << 21,
    F_MA = 1u << 22,
    F_AG = 1u << 23,
    F_HB = 1u << 24,
    F_HK = 1u << 25,
    F_W = 1u << 26,
    F_WK = 1u << 27,
    F_SRC = 1u << 28,
};

#define F_COMMON (F_V | F_T | F_ID)
#define F_BLOCK (F_BLK | F_B | F_K | F_E | F_I | F_OFF | F_LEN)
#define F_LISTING (F_LB | F_LP | F_LD | F_LT | F_LS | F_LM)
#define F_HEAD (F_HB | F_HK)

/* Fields each type must carry (sz is optional where it appears). */
static uint32_t required_fields(node_peer_type t)
{
    switch (t) {
    case NODE_PEER_GET:
        return F_COMMON | F_MV | F_BLOCK | F_FL;
    case NODE_PEER_GET_REPLY:
        return F_COMMON | F_ST | F_PL | F_CK;
    case NODE_PEER_PUT:
        return F_COMMON | F_MV | F_BLOCK | F_PL | F_CK;
    case NODE_PEER_PUT_REPLY:
        return F_COMMON | F_ST;
    case NODE_PEER_PING:
        return F_COMMON | F_MV;
    case NODE_PEER_PONG:
        return F_COMMON | F_ST | F_MV;
    case NODE_PEER_LIST:
        return F_COMMON | F_MV | F_LISTING;
    case NODE_PEER_LIST_REPLY:
        return F_COMMON | F_ST | F_PL;
    case NODE_PEER_HEAD:
        return F_COMMON | F_MV | F_HEAD;
    case NODE_PEER_HEAD_REPLY:
        return F_COMMON | F_ST | F_PL;
    }
    return 0;
}

/* The optional fields a type may carry besides its required ones. */
static uint32_t optional_fields(node_peer_type t)
{
    switch (t) {
    case NODE_PEER_GET_REPLY:
        return F_SZ | F_SRC;
    case NODE_PEER_PUT:
        return F_SZ | F_FL;
    case NODE_PEER_PING:
        return F_W;
    case NODE_PEER_PONG:
        return F_WK;
    case NODE_PEER_LIST:
    case NODE_PEER_HEAD:
        return F_MA;
    case NODE_PEER_LIST_REPLY:
    case NODE_PEER_HEAD_REPLY:
        return F_AG;
    default:
        return 0;
    }
}

/* Fields a type may carry: the required ones plus its optional ones. */
static uint32_t allowed_fields(node_peer_type t)
{
    return required_fields(t) | optional_fields(t);
}

static bool is_handoff_put(const node_peer_msg *m)
{
    return m->type == NODE_PEER_PUT && (m->flags & NODE_PEER_F_HANDOFF);
}

/* Fields this message must carry: its type's, less the coordinates a hand-off PUT has none of (the
 * draining node's store keeps block ids only). */
static uint32_t required_of(const node_peer_msg *m)
{
    uint32_t f = required_fields(m->type);
    return is_handoff_put(m) ? f & ~(F_BLOCK & ~F_BLK) : f;
}

/* Fields this message may carry: a hand-off PUT carries no coordinates and no object size. */
static uint32_t allowed_of(const node_peer_msg *m)
{
    return is_handoff_put(m) ? required_of(m) | F_FL : allowed_fields(m->type);
}

/* The optional fields `m` carries (its has_* flags; a PUT's flags when not 0, so a PUT without
 * flags stays what older nodes expect), among those the message allows. */
static uint32_t present_optional(const node_peer_msg *m)
{
    uint32_t f = (m->has_object_size ? F_SZ : 0) | (m->has_work_id ? F_W : 0) | (m->has_work ? F_WK : 0) |
                 (m->has_max_age ? F_MA : 0) | (m->has_age ? F_AG : 0) | (m->has_source ? F_SRC : 0) |
                 (m->flags != 0 ? F_FL : 0);
    return f & allowed_of(m);
}

/* Forgets known fields that do not belong to the message's type (a PUT with a status, say): they
 * are skipped like unknown keys, so a decoded message means exactly what its encoding says. */
static void drop_foreign_fields(node_peer_msg *m, uint32_t seen)
{
    uint32_t foreign = seen & ~allowed_of(m);
    if (foreign & F_MV)
        m->membership_version = 0;
    if (foreign & F_BLOCK) {
        uint8_t id[NODE_PEER_BLOCK_ID_LEN];
        memcpy(id, m->block.id, sizeof id);
        memset(&m->block, 0, sizeof m->block);
        if (!(foreign & F_BLK))
            memcpy(m->block.id, id, sizeof id);
    }
    if (foreign & F_FL)
        m->flags = 0;
    if (foreign & F_ST)
        m->status = NODE_PEER_OK;
    if (foreign & F_SZ)
        m->has_object_size = false, m->object_size = 0;
    if (foreign & F_PL)
        m->payload_len = 0;
    if (foreign & F_CK)
        m->checksum = 0;
    if (foreign & F_LISTING)
        memset(&m->list, 0, sizeof m->list);
    if (foreign & F_HEAD)
        memset(&m->head, 0, sizeof m->head);
    if (foreign & F_MA)
        m->has_max_age = false, m->max_age_ms = 0;
    if (foreign & F_AG)
        m->has_age = false, m->age_ms = 0;
    if (foreign & F_W)
        m->has_work_id = false, memset(m->work_id, 0, sizeof m->work_id);
    if (foreign & F_WK)
        m->has_work = false, m->work = NODE_PEER_IDLE;
    if (foreign & F_SRC)
        m->has_source = false, m->source = NODE_PEER_SRC_STORE;
}

static bool type_has_payload(node_peer_type t)
{
    return t == NODE_PEER_GET_REPLY || t == NODE_PEER_PUT || t == NODE_PEER_LIST_REPLY || t == NODE_PEER_HEAD_REPLY;
}

/* Replies whose payload is there only when the status is OK. */
static bool payload_only_when_ok(node_peer_type t)
{
    return t == NODE_PEER_GET_REPLY || t == NODE_PEER_LIST_REPLY || t == NODE_PEER_HEAD_REPLY;
}

bool node_peer_type_is_request(node_peer_type t)
{
    return t == NODE_PEER_GET || t == NODE_PEER_PUT || t == NODE_PEER_PING || t == NODE_PEER_LIST ||
           t == NODE_PEER_HEAD;
}

node_peer_type node_peer_reply_type(node_peer_type request)
{
    switch (request) {
    case NODE_PEER_GET:
        return NODE_PEER_GET_REPLY;
    case NODE_PEER_PUT:
        return NODE_PEER_PUT_REPLY;
    case NODE_PEER_PING:
        return NODE_PEER_PONG;
    case NODE_PEER_LIST:
        return NODE_PEER_LIST_REPLY;
    case NODE_PEER_HEAD:
        return NODE_PEER_HEAD_REPLY;
    default:
        return 0;
    }
}

const char *node_peer_type_name(node_peer_type t)
{
    switch (t) {
    case NODE_PEER_GET:
        return "GET";
    case NODE_PEER_GET_REPLY:
        return "GET_REPLY";
    case NODE_PEER_PUT:
        return "PUT";
    case NODE_PEER_PUT_REPLY:
        return "PUT_REPLY";
    case NODE_PEER_PING:
        return "PING";
    case NODE_PEER_PONG:
        return "PONG";
    case NODE_PEER_LIST:
        return "LIST";
    case NODE_PEER_LIST_REPLY:
        return "LIST_REPLY";
    case NODE_PEER_HEAD:
        return "HEAD";
    case NODE_PEER_HEAD_REPLY:
        return "HEAD_REPLY";
    }
    return "?";
}

const char *node_peer_status_name(node_peer_status s)
{
    switch (s) {
    case NODE_PEER_OK:
        return "OK";
    case NODE_PEER_NOT_FOUND:
        return "NOT_FOUND";
    case NODE_PEER_CHANGED:
        return "CHANGED";
    case NODE_PEER_BUSY:
        return "BUSY";
    case NODE_PEER_ERROR:
        return "ERROR";
    }
    return "?";
}

/* The semantic checks shared by encoder and decoder. `code` is INVAL when encoding (the caller
 * built a bad message) and NODE_PEER when decoding (a peer sent one). */
static int node_peer_msg_check(const node_peer_msg *m, size_t payload_size, shoal_err code)
{
    const char *name = node_peer_type_name(m->type);
    if (required_fields(m->type) == 0)
        return shoal_error_set(code, "peer message: unknown type %u", (unsigned)m->type);
    if ((m->type == NODE_PEER_GET_REPLY || m->type == NODE_PEER_PUT_REPLY || m->type == NODE_PEER_PONG ||
         m->type == NODE_PEER_LIST_REPLY || m->type == NODE_PEER_HEAD_REPLY) &&
        (unsigned)m->status > NODE_PEER_ERROR)
        return shoal_error_set(code, "peer %s: unknown status %u", name, (unsigned)m->status);
    if (m->type == NODE_PEER_GET && (m->flags & ~NODE_PEER_F_GET_KNOWN))
        return shoal_error_set(code, "peer GET: unknown flags 0x%x", (unsigned)m->flags);
    if (m->type == NODE_PEER_PUT && (m->flags & ~NODE_PEER_F_PUT_KNOWN))
        return shoal_error_set(code, "peer PUT: unknown flags 0x%x", (unsigned)m->flags);
    if (m->type == NODE_PEER_GET_REPLY && m->has_source && (unsigned)m->source > NODE_PEER_SRC_S3)
        return shoal_error_set(code, "peer GET_REPLY: unknown source %u", (unsigned)m->source);
    if (is_handoff_put(m) && (m->payload_len == 0 || m->payload_len > NODE_PEER_MAX_PAYLOAD))
        return shoal_error_set(code, "peer PUT (hand-off): block length %llu not in 1..%u",
                               (unsigned long long)m->payload_len, NODE_PEER_MAX_PAYLOAD);
    if (m->type == NODE_PEER_GET || (m->type == NODE_PEER_PUT && !is_handoff_put(m))) {
        const node_peer_block *b = &m->block;
        if (b->bucket.len == 0 || b->bucket.len > NODE_PEER_MAX_BUCKET)
            return shoal_error_set(code, "peer %s: bucket length %zu not in 1..%d", name, b->bucket.len,
                                   NODE_PEER_MAX_BUCKET);
        if (b->key.len == 0 || b->key.len > NODE_PEER_MAX_KEY)
            return shoal_error_set(code, "peer %s: key length %zu not in 1..%d", name, b->key.len,
                                   NODE_PEER_MAX_KEY);
        if (b->etag.len == 0 || b->etag.len > NODE_PEER_MAX_ETAG)
            return shoal_error_set(code, "peer %s: etag length %zu not in 1..%d", name, b->etag.len,
                                   NODE_PEER_MAX_ETAG);
        if (b->length == 0 || b->length > NODE_PEER_MAX_PAYLOAD)
            return shoal_error_set(code, "peer %s: block length %llu not in 1..%u", name,
                                   (unsigned long long)b->length, NODE_PEER_MAX_PAYLOAD);
        if (b->offset > UINT64_MAX - b->length)
            return shoal_error_set(code, "peer %s: offset %llu + length %llu overflows", name,
                                   (unsigned long long)b->offset, (unsigned long long)b->length);
        if (m->type == NODE_PEER_PUT && m->payload_len != b->length)
            return shoal_error_set(code, "peer PUT: payload length %llu differs from block length %llu",
                                   (unsigned long long)m->payload_len, (unsigned long long)b->length);
        if (m->type == NODE_PEER_PUT && m->has_object_size && b->offset + b->length > m->object_size)
            return shoal_error_set(code, "peer PUT: block ends at %llu past object size %llu",
                                   (unsigned long long)(b->offset + b->length),
                                   (unsigned long long)m->object_size);
    }
    if (m->type == NODE_PEER_LIST) {
        const node_peer_list_req *l = &m->list;
        if (l->bucket.len == 0 || l->bucket.len > NODE_PEER_MAX_BUCKET)
            return shoal_error_set(code, "peer LIST: bucket length %zu not in 1..%d", l->bucket.len,
                                   NODE_PEER_MAX_BUCKET);
        if (l->prefix.len > NODE_PEER_MAX_KEY || l->start_after.len > NODE_PEER_MAX_KEY ||
            l->token.len > NODE_PEER_MAX_KEY)
            return shoal_error_set(code, "peer LIST: prefix, start-after or token over %d bytes", NODE_PEER_MAX_KEY);
        if (l->delimiter.len > NODE_PEER_MAX_DELIMITER)
            return shoal_error_set(code, "peer LIST: delimiter of %zu bytes over %d", l->delimiter.len,
                                   NODE_PEER_MAX_DELIMITER);
        if (l->max_keys > NODE_PEER_MAX_LIST_KEYS)
            return shoal_error_set(code, "peer LIST: max keys %llu over %d", (unsigned long long)l->max_keys,
                                   NODE_PEER_MAX_LIST_KEYS);
    }
    if (m->type == NODE_PEER_HEAD) {
        if (m->head.bucket.len == 0 || m->head.bucket.len > NODE_PEER_MAX_BUCKET)
            return shoal_error_set(code, "peer HEAD: bucket length %zu not in 1..%d", m->head.bucket.len,
                                   NODE_PEER_MAX_BUCKET);
        if (m->head.key.len == 0 || m->head.key.len > NODE_PEER_MAX_KEY)
            return shoal_error_set(code, "peer HEAD: key length %zu not in 1..%d", m->head.key.len, NODE_PEER_MAX_KEY);
    }
    if (m->type == NODE_PEER_PONG && m->has_work && (unsigned)m->work > NODE_PEER_WORKING)
        return shoal_error_set(code, "peer PONG: unknown work state %u", (unsigned)m->work);
    if (type_has_payload(m->type)) {
        if (m->payload_len > NODE_PEER_MAX_PAYLOAD)
            return shoal_error_set(code, "peer %s: payload length %llu over %u", name,
                                   (unsigned long long)m->payload_len, NODE_PEER_MAX_PAYLOAD);
        if (m->payload_len != payload_size)
            return shoal_error_set(code, "peer %s: header says %llu payload bytes, frame has %zu", name,
                                   (unsigned long long)m->payload_len, payload_size);
        if (payload_only_when_ok(m->type) && m->status != NODE_PEER_OK && payload_size != 0)
            return shoal_error_set(code, "peer %s: status %s with %zu payload bytes", name,
                                   node_peer_status_name(m->status), payload_size);
    } else if (payload_size != 0) {
        return shoal_error_set(code, "peer %s: carries no payload but the frame has %zu bytes", name,
                               payload_size);
    }
    return 0;
}

/* ---- encoding ---------------------------------------------------------------------------- */

static int pack_to_buf(void *data, const char *buf, size_t len)
{
    return shoal_buf_append((shoal_buf *)data, buf, len);
}

static void pack_key(msgpack_packer *pk, const char *key)
{
    size_t n = strlen(key);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, key, n);
}

static void pack_uint(msgpack_packer *pk, const char *key, uint64_t v)
{
    pack_key(pk, key);
    msgpack_pack_uint64(pk, v);
}

static void pack_cursor(msgpack_packer *pk, const char *key, shoal_cursor c)
{
    pack_key(pk, key);
    msgpack_pack_str(pk, c.len);
    msgpack_pack_str_body(pk, c.ptr, c.len);
}

int node_peer_msg_encode(const node_peer_msg *m, shoal_buf *out)
{
    if (node_peer_msg_check(m, type_has_payload(m->type) ? m->payload_len : 0, SHOAL_ERR_INVAL) != 0)
        return shoal_error_wrap("encode peer message");
    uint32_t fields = required_of(m) | present_optional(m);

    /* Reserve the worst case up front (every uint as 9 bytes, every key and string with a
     * 5-byte length) so no append below can fail half-way through a frame. */
    size_t start = out->len;
    const node_peer_list_req *l = &m->list;
    size_t strings = 0; /* only the fields this type carries: the others may hold anything */
    if (fields & F_B)
        strings += m->block.bucket.len + m->block.key.len + m->block.etag.len;
    if (fields & F_LISTING)
        strings += l->bucket.len + l->prefix.len + l->delimiter.len + l->token.len + l->start_after.len;
    if (fields & F_HEAD)
        strings += m->head.bucket.len + m->head.key.len;
    if (shoal_buf_reserve(out, 29 * 14 + 10 * 5 + 2 * 18 + strings) != 0)
        return shoal_error_wrap("encode peer %s", node_peer_type_name(m->type));
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, pack_to_buf);
    msgpack_pack_map(&pk, (size_t)__builtin_popcount(fields));
    pack_uint(&pk, "v", NODE_PEER_VERSION);
    pack_uint(&pk, "t", (uint64_t)m->type);
    pack_uint(&pk, "id", m->request_id);
    if (fields & F_MV)
        pack_uint(&pk, "mv", m->membership_version);
    if (fields & F_BLK) {
        pack_key(&pk, "blk");
        msgpack_pack_bin(&pk, NODE_PEER_BLOCK_ID_LEN);
        msgpack_pack_bin_body(&pk, m->block.id, NODE_PEER_BLOCK_ID_LEN);
    }
    if (fields & F_B) {
        pack_cursor(&pk, "b", m->block.bucket);
        pack_cursor(&pk, "k", m->block.key);
        pack_cursor(&pk, "e", m->block.etag);
        pack_uint(&pk, "i", m->block.index);
        pack_uint(&pk, "off", m->block.offset);
        pack_uint(&pk, "len", m->block.length);
    }
    if (fields & F_LISTING) {
        pack_cursor(&pk, "lb", l->bucket);
        pack_cursor(&pk, "lp", l->prefix);
        pack_cursor(&pk, "ld", l->delimiter);
        pack_cursor(&pk, "lt", l->token);
        pack_cursor(&pk, "ls", l->start_after);
        pack_uint(&pk, "lm", l->max_keys);
    }
    if (fields & F_HEAD) {
        pack_cursor(&pk, "hb", m->head.bucket);
        pack_cursor(&pk, "hk", m->head.key);
    }
    if (fields & F_MA)
        pack_uint(&pk, "ma", m->max_age_ms);
    if (fields & F_AG)
        pack_uint(&pk, "ag", m->age_ms);
    if (fields & F_W) {
        pack_key(&pk, "w");
        msgpack_pack_bin(&pk, NODE_PEER_BLOCK_ID_LEN);
        msgpack_pack_bin_body(&pk, m->work_id, NODE_PEER_BLOCK_ID_LEN);
    }
    if (fields & F_WK)
        pack_uint(&pk, "wk", (uint64_t)m->work);
    if (fields & F_FL)
        pack_uint(&pk, "fl", m->flags);
    if (fields & F_ST)
        pack_uint(&pk, "st", (uint64_t)m->status);
    if (fields & F_SZ)
        pack_uint(&pk, "sz", m->object_size);
    if (fields & F_PL)
        pack_uint(&pk, "pl", m->payload_len);
    if (fields & F_CK)
        pack_uint(&pk, "ck", m->checksum);
    if (fields & F_SRC)
        pack_uint(&pk, "src", (uint64_t)m->source);
    if (out->len - start > NODE_PEER_MAX_HEADER) {
        out->len = start;
        return shoal_error_set(SHOAL_ERR_INVAL, "encode peer %s: header over %d bytes",
                               node_peer_type_name(m->type), NODE_PEER_MAX_HEADER);
    }
    return 0;
}

/* ---- decoding ---------------------------------------------------------------------------- */

/* Walks one msgpack value (with everything nested in it) without allocating. Returns 0 when
 * the bytes hold exactly one well-formed value whose every declared length and count fits in
 * the bytes that remain; -1 otherwise. `pending` counts values still to read: a container adds
 * its elements, and since each takes at least one byte, more pending values than remaining
 * bytes proves a lie. */
static int msgpack_prescan(const uint8_t *p, size_t n)
{
    size_t pos = 0;
    uint64_t pending = 1;
    while (pending > 0) {
        if (pos >= n)
            return -1;
        uint8_t b = p[pos++];
        size_t lenbytes = 0; /* big-endian length or count that follows the tag */
        uint64_t fixed = 0;  /* bytes of body that follow the tag (and length) */
        int kind = 0;        /* 0 scalar, 1 byte body of length, 2 array, 3 map */
        uint64_t count = 0;
        if (b <= 0x7f || b >= 0xe0) {
            /* positive or negative fixint */
        } else if (b <= 0x8f) {
            kind = 3, count = b & 0x0f;
        } else if (b <= 0x9f) {
            kind = 2, count = b & 0x0f;
        } else if (b <= 0xbf) {
            fixed = b & 0x1f;
        } else {
            switch (b) {
            case 0xc0: case 0xc2: case 0xc3: break;                  /* nil, false, true */
            case 0xc4: case 0xd9: kind = 1, lenbytes = 1; break;     /* bin8, str8 */
            case 0xc5: case 0xda: kind = 1, lenbytes = 2; break;     /* bin16, str16 */
            case 0xc6: case 0xdb: kind = 1, lenbytes = 4; break;     /* bin32, str32 */
            case 0xc7: kind = 1, lenbytes = 1, fixed = 1; break;     /* ext8: length, type */
            case 0xc8: kind = 1, lenbytes = 2, fixed = 1; break;
            case 0xc9: kind = 1, lenbytes = 4, fixed = 1; break;
            case 0xca: fixed = 4; break;                             /* float32 */
            case 0xcb: fixed = 8; break;                             /* float64 */
            case 0xcc: case 0xd0: fixed = 1; break;
            case 0xcd: case 0xd1: fixed = 2; break;
            case 0xce: case 0xd2: fixed = 4; break;
            case 0xcf: case 0xd3: fixed = 8; break;
            case 0xd4: fixed = 2; break;                             /* fixext1: type + 1 */
            case 0xd5: fixed = 3; break;
            case 0xd6: fixed = 5; break;
            case 0xd7: fixed = 9; break;
            case 0xd8: fixed = 17; break;
            case 0xdc: kind = 2, lenbytes = 2; break;                /* array16 */
            case 0xdd: kind = 2, lenbytes = 4; break;                /* array32 */
            case 0xde: kind = 3, lenbytes = 2; break;                /* map16 */
            case 0xdf: kind = 3, lenbytes = 4; break;                /* map32 */
            default: return -1;                                      /* 0xc1: never used */
            }
        }
        if (lenbytes > n - pos)
            return -1;
        uint64_t declared = shoal_load_be(p + pos, lenbytes);
        pos += lenbytes;
        if (kind == 1)
            fixed += declared;
        else if (lenbytes > 0)
            count = declared;
        if (fixed > n - pos)
            return -1;
        pos += fixed;
        pending -= 1;
        pending += kind == 3 ? 2 * count : kind == 2 ? count : 0;
        if (pending > n - pos)
            return -1;
    }
    return pos == n ? 0 : -1;
}

typedef struct field_def {
    const char *name;
    uint32_t bit;
} field_def;

static const field_def fields_known[] = {
    {"v", F_V},     {"t", F_T},   {"id", F_ID},   {"mv", F_MV},   {"blk", F_BLK}, {"b", F_B},
    {"k", F_K},     {"e", F_E},   {"i", F_I},     {"off", F_OFF}, {"len", F_LEN}, {"fl", F_FL},
    {"st", F_ST},   {"sz", F_SZ}, {"pl", F_PL},   {"ck", F_CK},   {"lb", F_LB},   {"lp", F_LP},
    {"ld", F_LD},   {"lt", F_LT}, {"ls", F_LS},   {"lm", F_LM},   {"ma", F_MA},   {"ag", F_AG},
    {"hb", F_HB},   {"hk", F_HK}, {"w", F_W},     {"wk", F_WK},   {"src", F_SRC},
};

static uint32_t field_bit(const msgpack_object_str *key)
{
    for (size_t i = 0; i < sizeof fields_known / sizeof fields_known[0]; i++) {
        size_t n = strlen(fields_known[i].name);
        if (key->size == n && memcmp(key->ptr, fields_known[i].name, n) == 0)
            return fields_known[i].bit;
    }
    return 0;
}

/* Stores one known field; -1 with a message when its value has the wrong type. */
static int decode_field(uint32_t bit, const msgpack_object *v, node_peer_msg *m)
{
    const char *want = "unsigned integer";
    uint64_t u = v->via.u64;
    switch (bit) {
    case F_BLK:
    case F_W:
        want = "16-byte bin";
        if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size != NODE_PEER_BLOCK_ID_LEN)
            goto fail_type;
        memcpy(bit == F_BLK ? m->block.id : m->work_id, v->via.bin.ptr, NODE_PEER_BLOCK_ID_LEN);
        m->has_work_id = m->has_work_id || bit == F_W;
        return 0;
    case F_HB:
    case F_HK:
        want = "string";
        if (v->type != MSGPACK_OBJECT_STR)
            goto fail_type;
        *(bit == F_HB ? &m->head.bucket : &m->head.key) = shoal_cursor_from_mem(v->via.str.ptr, v->via.str.size);
        return 0;
    case F_B:
    case F_K:
    case F_E: {
        want = "string";
        if (v->type != MSGPACK_OBJECT_STR)
            goto fail_type;
        shoal_cursor c = shoal_cursor_from_mem(v->via.str.ptr, v->via.str.size);
        if (bit == F_B)
            m->block.bucket = c;
        else if (bit == F_K)
            m->block.key = c;
        else
            m->block.etag = c;
        return 0;
    }
    case F_LB:
    case F_LP:
    case F_LD:
    case F_LT:
    case F_LS: {
        want = "string";
        if (v->type != MSGPACK_OBJECT_STR)
            goto fail_type;
        shoal_cursor c = shoal_cursor_from_mem(v->via.str.ptr, v->via.str.size);
        *(bit == F_LB   ? &m->list.bucket
          : bit == F_LP ? &m->list.prefix
          : bit == F_LD ? &m->list.delimiter
          : bit == F_LT ? &m->list.token
                        : &m->list.start_after) = c;
        return 0;
    }
    default:
        break;
    }
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        goto fail_type;
    switch (bit) {
    case F_V:
        if (u != NODE_PEER_VERSION)
            return shoal_error_set(SHOAL_ERR_NODE_PEER, "peer message: unsupported version %llu (this node speaks %d)",
                                   (unsigned long long)u, NODE_PEER_VERSION);
        return 0;
    case F_T:
        if (u < NODE_PEER_GET || u > NODE_PEER_HEAD_REPLY)
            return shoal_error_set(SHOAL_ERR_NODE_PEER, "peer message: unknown type %llu", (unsigned long long)u);
        m->type = (node_peer_type)u;
        return 0;
    case F_ST:
        if (u > NODE_PEER_ERROR)
            return shoal_error_set(SHOAL_ERR_NODE_PEER, "peer message: unknown status %llu", (unsigned long long)u);
        m->status = (node_peer_status)u;
        return 0;
    case F_FL:
        if (u > UINT32_MAX)
            return shoal_error_set(SHOAL_ERR_NODE_PEER, "peer message: flags %llu out of range", (unsigned long long)u);
        m->flags = (uint32_t)u;
        return 0;
    case F_ID: m->request_id = u; return 0;
    case F_MV: m->membership_version = u; return 0;
    case F_I: m->block.index = u; return 0;
    case F_OFF: m->block.offset = u; return 0;
    case F_LEN: m->block.length = u; return 0;
    case F_SZ: m->object_size = u, m->has_object_size = true; return 0;
    case F_PL: m->payload_len = u; return 0;
    case F_CK: m->checksum = u; return 0;
    case F_LM: m->list.max_keys = u; return 0;
    case F_MA: m->max_age_ms = u, m->has_max_age = true; return 0;
    case F_AG: m->age_ms = u, m->has_age = true; return 0;
    case F_WK:
        if (u > NODE_PEER_WORKING)
            return shoal_error_set(SHOAL_ERR_NODE_PEER, "peer message: unknown work state %llu", (unsigned long long)u);
        m->work = (node_peer_work)u, m->has_work = true;
        return 0;
    case F_SRC:
        if (u > NODE_PEER_SRC_S3)
            return shoal_error_set(SHOAL_ERR_NODE_PEER, "peer message: unknown source %llu", (unsigned long long)u);
        m->source = (node_peer_source)u, m->has_source = true;
        return 0;
    default: return 0;
    }
fail_type:
    return shoal_error_set(SHOAL_ERR_NODE_PEER, "peer message: field is msgpack type %d, want %s",
                           (int)v->type, want);
}

int node_peer_msg_decode(shoal_cursor header, size_t payload_size, node_peer_msg *out)
{
    memset(out, 0, sizeof *out);
    if (header.len == 0 || header.len > NODE_PEER_MAX_HEADER)
        return shoal_error_set(SHOAL_ERR_NODE_PEER, "peer message: header of %zu bytes not in 1..%d",
                               header.len, NODE_PEER_MAX_HEADER);
    if (msgpack_prescan(header.ptr, header.len) != 0)
        return shoal_error_set(SHOAL_ERR_NODE_PEER,
                               "peer message: header of %zu bytes is not one well-formed msgpack value", header.len);

    int rc = -1;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (msgpack_unpack_next(&u, (const char *)header.ptr, header.len, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != header.len) {
        shoal_error_set(SHOAL_ERR_NODE_PEER, "peer message: msgpack refused a %zu-byte header", header.len);
        goto fail_unpacked;
    }
    if (u.data.type != MSGPACK_OBJECT_MAP) {
        shoal_error_set(SHOAL_ERR_NODE_PEER, "peer message: header is msgpack type %d, not a map", (int)u.data.type);
        goto fail_unpacked;
    }
    uint32_t seen = 0;
    const msgpack_object_map *map = &u.data.via.map;
    /* The version first, wherever it sits: under another version every other field may mean
     * something else, so "unsupported version" is the only honest complaint. */
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object_kv *kv = &map->ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && field_bit(&kv->key.via.str) == F_V &&
            decode_field(F_V, &kv->val, out) != 0)
            goto fail_unpacked;
    }
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object_kv *kv = &map->ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR) {
            shoal_error_set(SHOAL_ERR_NODE_PEER, "peer message: map key is msgpack type %d, not a string",
                            (int)kv->key.type);
            goto fail_unpacked;
        }
        uint32_t bit = field_bit(&kv->key.via.str);
        if (bit == 0)
            continue; /* a field from a later minor revision */
        if (seen & bit) {
            shoal_error_set(SHOAL_ERR_NODE_PEER, "peer message: field '%.*s' appears twice",
                            (int)kv->key.via.str.size, kv->key.via.str.ptr);
            goto fail_unpacked;
        }
        seen |= bit;
        if (decode_field(bit, &kv->val, out) != 0) {
            shoal_error_wrap("field '%.*s'", (int)kv->key.via.str.size, kv->key.via.str.ptr);
            goto fail_unpacked;
        }
    }
    if ((seen & F_COMMON) != F_COMMON) {
        shoal_error_set(SHOAL_ERR_NODE_PEER, "peer message: missing version, type or request id");
        goto fail_unpacked;
    }
    uint32_t missing = required_of(out) & ~seen;
    if (missing) {
        for (size_t i = 0; i < sizeof fields_known / sizeof fields_known[0]; i++) {
            if (missing & fields_known[i].bit) {
                shoal_error_set(SHOAL_ERR_NODE_PEER, "peer %s: missing field '%s'", node_peer_type_name(out->type),
                                fields_known[i].name);
                break;
            }
        }
        goto fail_unpacked;
    }
    drop_foreign_fields(out, seen);
    if (node_peer_msg_check(out, payload_size, SHOAL_ERR_NODE_PEER) != 0)
        goto fail_unpacked;
    rc = 0;
fail_unpacked:
    msgpack_unpacked_destroy(&u);
    if (rc != 0) {
        node_peer_block empty = {0};
        node_peer_list_req none = {0};
        node_peer_head_req no_head = {0};
        out->block = empty; /* no borrowed pointers survive a failed decode */
        out->list = none;
        out->head = no_head;
    }
    return rc;
}

/* ---- listing pages ----------------------------------------------------------------------- */

#define LIST_F_TRUNCATED 0x1u

static int put_le(shoal_buf *out, uint64_t v, int n)
{
    uint8_t b[8];
    shoal_store_le(b, v, (size_t)n);
    return shoal_buf_append(out, b, (size_t)n);
}

int node_peer_list_encode(const node_peer_list_page *p, shoal_buf *out)
{
    size_t start = out->len;
    if (p->next_token.len > NODE_PEER_MAX_KEY)
        return shoal_error_set(SHOAL_ERR_INVAL, "encode listing: token of %zu bytes over %d", p->next_token.len,
                               NODE_PEER_MAX_KEY);
    if (p->n_entries > NODE_PEER_MAX_LIST_ENTRIES)
        return shoal_error_set(SHOAL_ERR_INVAL, "encode listing: %zu entries over %d", p->n_entries,
                               NODE_PEER_MAX_LIST_ENTRIES);
    for (size_t i = 0; i < p->n_entries; i++) {
        const node_peer_list_entry *e = &p->entries[i];
        if (e->key.len == 0 || e->key.len > NODE_PEER_MAX_KEY || e->etag.len > 255 ||
            (e->is_prefix && memchr(e->key.ptr, 0, e->key.len) != NULL))
            return shoal_error_set(SHOAL_ERR_INVAL, "encode listing: entry %zu has a key of %zu bytes (1..%d, no NUL "
                                   "in a prefix) or an ETag of %zu (at most 255)", i, e->key.len, NODE_PEER_MAX_KEY,
                                   e->etag.len);
    }
    int rc = put_le(out, p->truncated ? LIST_F_TRUNCATED : 0, 1) | put_le(out, p->next_token.len, 2) |
             shoal_buf_append_cursor(out, p->next_token) | put_le(out, p->n_entries, 4);
    for (size_t i = 0; i < p->n_entries && rc == 0; i++) {
        const node_peer_list_entry *e = &p->entries[i];
        rc |= put_le(out, e->is_prefix ? 1 : 0, 1) | put_le(out, e->key.len, 2) | shoal_buf_append_cursor(out, e->key);
        if (!e->is_prefix)
            rc |= put_le(out, e->size, 8) | put_le(out, (uint64_t)e->mtime, 8) | put_le(out, e->etag.len, 1) |
                  shoal_buf_append_cursor(out, e->etag);
    }
    if (rc != 0) {
        out->len = start;
        return shoal_error_set(SHOAL_ERR_NOMEM, "encode listing of %zu entries", p->n_entries);
    }
    return 0;
}

/* A bounded reader over the payload: every take checks the bytes left first. */
typedef struct list_in {
    shoal_cursor all;
    size_t pos;
} list_in;

static int take(list_in *in, size_t n, const uint8_t **out, const char *what)
{
    if (in->all.len - in->pos < n)
        return shoal_error_set(SHOAL_ERR_NODE_PEER, "peer listing: %s needs %zu bytes at offset %zu, %zu left", what,
                               n, in->pos, in->all.len - in->pos);
    *out = in->all.ptr + in->pos;
    in->pos += n;
    return 0;
}

static int take_le(list_in *in, int n, uint64_t *v, const char *what)
{
    const uint8_t *p = NULL;
    if (take(in, (size_t)n, &p, what) != 0)
        return -1;
    *v = shoal_load_le(p, (size_t)n);
    return 0;
}

static int take_str(list_in *in, int len_bytes, size_t min, size_t max, shoal_cursor *out, const char *what)
{
    uint64_t n = 0;
    const uint8_t *p = NULL;
    if (take_le(in, len_bytes, &n, what) != 0)
        return -1;
    if (n < min || n > max)
        return shoal_error_set(SHOAL_ERR_NODE_PEER, "peer listing: %s of %llu bytes at offset %zu not in %zu..%zu",
                               what, (unsigned long long)n, in->pos, min, max);
    if (take(in, (size_t)n, &p, what) != 0)
        return -1;
    *out = shoal_cursor_from_mem(p, (size_t)n);
    return 0;
}

int node_peer_list_decode(shoal_cursor payload, node_peer_list_page *out)
{
    memset(out, 0, sizeof *out);
    list_in in = {payload, 0};
    uint64_t flags, count;
    if (take_le(&in, 1, &flags, "flags") != 0 || take_str(&in, 2, 0, NODE_PEER_MAX_KEY, &out->next_token, "token") != 0 ||
        take_le(&in, 4, &count, "entry count") != 0)
        goto fail;
    if (flags & ~(uint64_t)LIST_F_TRUNCATED) {
        shoal_error_set(SHOAL_ERR_NODE_PEER, "peer listing: unknown flags 0x%llx", (unsigned long long)flags);
        goto fail;
    }
    out->truncated = flags & LIST_F_TRUNCATED;
    /* A prefix entry takes at least 4 bytes; a count the rest cannot hold is refused before any
     * allocation, so a hostile count costs nothing. */
    if (count > NODE_PEER_MAX_LIST_ENTRIES || count > (payload.len - in.pos) / 4) {
        shoal_error_set(SHOAL_ERR_NODE_PEER, "peer listing: %llu entries cannot fit in %zu bytes (at most %d)",
                        (unsigned long long)count, payload.len - in.pos, NODE_PEER_MAX_LIST_ENTRIES);
        goto fail;
    }
    if (count > 0 && (out->entries = calloc((size_t)count, sizeof *out->entries)) == NULL) {
        shoal_error_set(SHOAL_ERR_NOMEM, "peer listing of %llu entries", (unsigned long long)count);
        goto fail;
    }
    for (size_t i = 0; i < count; i++) {
        node_peer_list_entry *e = &out->entries[i];
        uint64_t kind, mtime;
        if (take_le(&in, 1, &kind, "entry kind") != 0)
            goto fail;
        if (kind > 1) {
            shoal_error_set(SHOAL_ERR_NODE_PEER, "peer listing: entry %zu has unknown kind %llu", i,
                            (unsigned long long)kind);
            goto fail;
        }
        e->is_prefix = kind == 1;
        if (take_str(&in, 2, 1, NODE_PEER_MAX_KEY, &e->key, "key") != 0)
            goto fail;
        if (e->is_prefix && memchr(e->key.ptr, 0, e->key.len) != NULL) {
            shoal_error_set(SHOAL_ERR_NODE_PEER, "peer listing: prefix %zu holds a NUL byte", i);
            goto fail;
        }
        if (!e->is_prefix && (take_le(&in, 8, &e->size, "size") != 0 || take_le(&in, 8, &mtime, "mtime") != 0 ||
                              take_str(&in, 1, 0, 255, &e->etag, "etag") != 0))
            goto fail;
        e->mtime = e->is_prefix ? 0 : (int64_t)mtime;
        out->n_entries++;
    }
    if (in.pos != payload.len) {
        shoal_error_set(SHOAL_ERR_NODE_PEER, "peer listing: %zu trailing bytes", payload.len - in.pos);
        goto fail;
    }
    return 0;
fail:
    node_peer_list_page_destroy(out);
    return -1;
}

void node_peer_list_page_destroy(node_peer_list_page *p)
{
    if (p == NULL)
        return;
    free(p->entries);
    memset(p, 0, sizeof *p);
}

/* ---- object metadata ----------------------------------------------------------------------- */

/* Whether a string of the metadata payload is within 0..max bytes (min..max) and holds no NUL. */
static bool meta_str_ok(shoal_cursor c, size_t min, size_t max)
{
    return c.len >= min && c.len <= max && (c.len == 0 || memchr(c.ptr, 0, c.len) == NULL);
}

int node_peer_head_encode(const node_peer_object_info *in, shoal_buf *out)
{
    if (!meta_str_ok(in->etag, 0, 255) || !meta_str_ok(in->content_type, 0, NODE_PEER_MAX_CONTENT_TYPE) ||
        in->n_meta > NODE_PEER_MAX_META)
        return shoal_error_set(SHOAL_ERR_INVAL, "encode metadata: ETag of %zu bytes (at most 255), content type of %zu "
                               "(at most %d), %zu entries (at most %d), or a NUL byte", in->etag.len,
                               in->content_type.len, NODE_PEER_MAX_CONTENT_TYPE, in->n_meta, NODE_PEER_MAX_META);
    for (size_t i = 0; i < in->n_meta; i++)
        if (!meta_str_ok(in->meta[i].name, 1, NODE_PEER_MAX_META_NAME) ||
            !meta_str_ok(in->meta[i].value, 0, NODE_PEER_MAX_META_VALUE))
            return shoal_error_set(SHOAL_ERR_INVAL, "encode metadata: entry %zu has a name of %zu bytes (1..%d) or a "
                                   "value of %zu (at most %d), or a NUL byte", i, in->meta[i].name.len,
                                   NODE_PEER_MAX_META_NAME, in->meta[i].value.len, NODE_PEER_MAX_META_VALUE);
    size_t start = out->len;
    int rc = put_le(out, in->size, 8) | put_le(out, (uint64_t)in->mtime, 8) | put_le(out, in->etag.len, 1) |
             shoal_buf_append_cursor(out, in->etag) | put_le(out, in->content_type.len, 1) |
             shoal_buf_append_cursor(out, in->content_type) | put_le(out, in->meta_dropped, 4) |
             put_le(out, in->n_meta, 1);
    for (size_t i = 0; i < in->n_meta && rc == 0; i++)
        rc |= put_le(out, in->meta[i].name.len, 1) | shoal_buf_append_cursor(out, in->meta[i].name) |
              put_le(out, in->meta[i].value.len, 1) | shoal_buf_append_cursor(out, in->meta[i].value);
    if (rc != 0) {
        out->len = start;
        return shoal_error_set(SHOAL_ERR_NOMEM, "encode metadata");
    }
    return 0;
}

/* take_str, then the NUL check every metadata string gets. */
static int take_meta_str(list_in *in, size_t min, size_t max, shoal_cursor *out, const char *what)
{
    if (take_str(in, 1, min, max, out, what) != 0)
        return -1;
    if (memchr(out->ptr, 0, out->len) != NULL)
        return shoal_error_set(SHOAL_ERR_NODE_PEER, "peer metadata: %s before offset %zu holds a NUL byte", what,
                               in->pos);
    return 0;
}

int node_peer_head_decode(shoal_cursor payload, node_peer_object_info *out)
{
    memset(out, 0, sizeof *out);
    list_in in = {payload, 0};
    uint64_t mtime, dropped, n;
    if (take_le(&in, 8, &out->size, "size") != 0 || take_le(&in, 8, &mtime, "mtime") != 0 ||
        take_meta_str(&in, 0, 255, &out->etag, "etag") != 0 ||
        take_meta_str(&in, 0, NODE_PEER_MAX_CONTENT_TYPE, &out->content_type, "content type") != 0 ||
        take_le(&in, 4, &dropped, "dropped count") != 0 || take_le(&in, 1, &n, "entry count") != 0)
        goto fail;
    out->mtime = (int64_t)mtime;
    out->meta_dropped = (uint32_t)dropped;
    if (n > NODE_PEER_MAX_META) {
        shoal_error_set(SHOAL_ERR_NODE_PEER, "peer metadata: %llu entries, at most %d", (unsigned long long)n,
                        NODE_PEER_MAX_META);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        if (take_meta_str(&in, 1, NODE_PEER_MAX_META_NAME, &out->meta[i].name, "name") != 0 ||
            take_meta_str(&in, 0, NODE_PEER_MAX_META_VALUE, &out->meta[i].value, "value") != 0)
            goto fail;
        out->n_meta++;
    }
    if (in.pos != payload.len) {
        shoal_error_set(SHOAL_ERR_NODE_PEER, "peer metadata: %zu trailing bytes", payload.len - in.pos);
        goto fail;
    }
    return 0;
fail:
    memset(out, 0, sizeof *out);
    return -1;
}
