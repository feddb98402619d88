/*
 * The gossip wire format, after Tarantool's swim_proto.c: the protocol logic never sees msgpack,
 * only the structs of gossip_proto.h.
 *
 * Encoding goes through msgpack-c's packer writing into a bounded buffer (no allocation; a message
 * that would not fit reports 0 so the caller can leave an update for the next packet).
 *
 * Decoding is a small strict reader written here rather than msgpack_unpack(): msgpack-c builds a
 * tree in a zone and allocates the arrays a header announces before it knows the bytes are there,
 * so a 9-byte packet claiming 2^32 entries costs an allocation attempt of gigabytes. The reader below
 * reads in place, checks every type, rejects any count larger than the protocol allows or than the
 * bytes left could hold, bounds nesting when it skips an unknown key, and never reads past the end.
 * Unknown keys are skipped so a later minor revision can add fields; a different version number is
 * refused outright.
 *
 * Keys of the top-level map (docs/gossip.md has the full table):
 *   0 version  1 type  2 from  3 seq  4 target  5 addr  6 updates  7 join  8 chunk [i, n]
 *   9 reason  10 text  11 digest (push-pull: the sender's state digest)
 *  12 cache used: an array as long as the updates, each the member's published cache use in
 *     bytes or nil
 * Cache use came after the first release, whose reader demands exactly five elements in an update
 * and seven in its metadata and would drop the whole packet on a longer one. A top-level key it
 * skips is the one extension that release reads, so the figure rides beside the updates, not in
 * them; a packet from that release has no key 12 and its members' use stays unknown.
 * An update is the array [kind, id, incarnation, accuser|nil, meta|nil]; meta is the array
 * [addr, zone, curve_public, capacity, serving, proto_version, block_size]; an address is a bin of
 * family (4|6), the 4 or 16 address bytes, and the port big-endian.
 */
#include "gossip_proto.h"

#include <msgpack.h>
#include <sodium.h>
#include <string.h>

enum {
    K_VERSION = 0,
    K_TYPE = 1,
    K_FROM = 2,
    K_SEQ = 3,
    K_TARGET = 4,
    K_ADDR = 5,
    K_UPDATES = 6,
    K_JOIN = 7,
    K_CHUNK = 8,
    K_REASON = 9,
    K_TEXT = 10,
    K_DIGEST = 11,
    K_CACHE_USED = 12,
};

/* ---- encoding ---- */

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool overflow;
} wbuf;

static int wbuf_write(void *data, const char *buf, size_t len)
{
    wbuf *w = data;
    if (w->overflow || len > w->cap - w->len) {
        w->overflow = true;
        return -1;
    }
    memcpy(w->p + w->len, buf, len);
    w->len += len;
    return 0;
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_addr(msgpack_packer *pk, const shoal_addr *a)
{
    uint8_t b[19];
    size_t iplen = a->family == 6 ? 16 : 4;
    b[0] = a->family == 6 ? 6 : 4;
    memcpy(b + 1, a->ip, iplen);
    b[1 + iplen] = (uint8_t)(a->port >> 8);
    b[2 + iplen] = (uint8_t)a->port;
    msgpack_pack_bin(pk, 3 + iplen);
    msgpack_pack_bin_body(pk, b, 3 + iplen);
}

static void pack_meta(msgpack_packer *pk, const gossip_meta *m)
{
    msgpack_pack_array(pk, 7);
    pack_addr(pk, &m->addr);
    pack_cstr(pk, m->zone);
    msgpack_pack_bin(pk, 32);
    msgpack_pack_bin_body(pk, m->curve_public, 32);
    msgpack_pack_uint64(pk, m->capacity);
    if (m->serving)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    msgpack_pack_uint32(pk, m->proto_version);
    msgpack_pack_uint32(pk, m->block_size);
}

size_t gossip_update_encode(const gossip_update *u, uint8_t *out, size_t cap)
{
    wbuf w = {.p = out, .cap = cap};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w, wbuf_write);
    msgpack_pack_array(&pk, 5);
    const gossip_meta *meta = u->meta_ref ? u->meta_ref : &u->meta;
    msgpack_pack_uint8(&pk, u->kind);
    pack_cstr(&pk, meta->id);
    msgpack_pack_uint64(&pk, u->incarnation);
    if (u->accuser[0])
        pack_cstr(&pk, u->accuser);
    else
        msgpack_pack_nil(&pk);
    if (u->has_meta)
        pack_meta(&pk, meta);
    else
        msgpack_pack_nil(&pk);
    return w.overflow ? 0 : w.len;
}

size_t gossip_update_encode_cache_used(const gossip_update *u, uint8_t *out, size_t cap)
{
    wbuf w = {.p = out, .cap = cap};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w, wbuf_write);
    const gossip_meta *meta = u->meta_ref ? u->meta_ref : &u->meta;
    if (u->has_meta && meta->cache_used_known)
        msgpack_pack_uint64(&pk, meta->cache_used);
    else
        msgpack_pack_nil(&pk);
    return w.overflow ? 0 : w.len;
}

int gossip_updates_encode(const gossip_update *u, uint32_t n, uint8_t *buf, size_t cap, gossip_raw_updates *raw)
{
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t l = gossip_update_encode(&u[i], buf + off, cap - off);
        if (!l)
            return -1;
        off += l;
    }
    *raw = (gossip_raw_updates){.updates = buf, .updates_len = off, .cache_used = buf + off, .n = n};
    for (uint32_t i = 0; i < n; i++) {
        size_t l = gossip_update_encode_cache_used(&u[i], buf + off, cap - off);
        if (!l)
            return -1;
        off += l;
        raw->cache_used_len += l;
    }
    return 0;
}

size_t gossip_msg_encode(const gossip_msg *m, const gossip_raw_updates *raw, uint8_t *out, size_t cap)
{
    uint32_t n_raw = raw ? raw->n : 0;
    wbuf w = {.p = out, .cap = cap};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w, wbuf_write);
    bool has_seq = m->type == GOSSIP_MSG_PING || m->type == GOSSIP_MSG_ACK ||
                   m->type == GOSSIP_MSG_PING_REQ || m->type == GOSSIP_MSG_NACK;
    bool has_target = m->type == GOSSIP_MSG_PING || m->type == GOSSIP_MSG_PING_REQ;
    bool is_pp = m->type == GOSSIP_MSG_PP_REQ || m->type == GOSSIP_MSG_PP_RESP;
    bool is_refuse = m->type == GOSSIP_MSG_REFUSE;
    size_t keys = 3 + has_seq + has_target + (m->type == GOSSIP_MSG_PING_REQ) + 2 * (n_raw > 0) +
                  2 * is_pp + 2 * is_refuse + (is_pp && m->has_digest);
    msgpack_pack_map(&pk, keys);
    msgpack_pack_uint8(&pk, K_VERSION);
    msgpack_pack_uint8(&pk, GOSSIP_WIRE_VERSION);
    msgpack_pack_uint8(&pk, K_TYPE);
    msgpack_pack_uint8(&pk, (uint8_t)m->type);
    msgpack_pack_uint8(&pk, K_FROM);
    pack_cstr(&pk, m->from);
    if (has_seq) {
        msgpack_pack_uint8(&pk, K_SEQ);
        msgpack_pack_uint64(&pk, m->seq);
    }
    if (has_target) {
        msgpack_pack_uint8(&pk, K_TARGET);
        pack_cstr(&pk, m->target);
    }
    if (m->type == GOSSIP_MSG_PING_REQ) {
        msgpack_pack_uint8(&pk, K_ADDR);
        pack_addr(&pk, &m->addr);
    }
    if (is_pp) {
        msgpack_pack_uint8(&pk, K_JOIN);
        if (m->join)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
        msgpack_pack_uint8(&pk, K_CHUNK);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint32(&pk, m->chunk);
        msgpack_pack_uint32(&pk, m->chunks);
        if (m->has_digest) {
            msgpack_pack_uint8(&pk, K_DIGEST);
            msgpack_pack_uint64(&pk, m->digest);
        }
    }
    if (is_refuse) {
        msgpack_pack_uint8(&pk, K_REASON);
        msgpack_pack_uint32(&pk, m->reason);
        msgpack_pack_uint8(&pk, K_TEXT);
        pack_cstr(&pk, m->text);
    }
    if (n_raw > 0) {
        msgpack_pack_uint8(&pk, K_UPDATES);
        msgpack_pack_array(&pk, n_raw);
        wbuf_write(&w, (const char *)raw->updates, raw->updates_len);
        msgpack_pack_uint8(&pk, K_CACHE_USED);
        msgpack_pack_array(&pk, n_raw);
        wbuf_write(&w, (const char *)raw->cache_used, raw->cache_used_len);
    }
    return w.overflow ? 0 : w.len;
}

/* ---- decoding ---- */

typedef struct rd {
    const uint8_t *p, *end;
    const char *why;
} rd;

static int rd_fail(rd *r, const char *why)
{
    if (!r->why)
        r->why = why;
    return -1;
}

static size_t rd_left(const rd *r) { return (size_t)(r->end - r->p); }

static int rd_be(rd *r, size_t n, uint64_t *v)
{
    if (rd_left(r) < n)
        return rd_fail(r, "truncated");
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = x << 8 | r->p[i];
    r->p += n;
    *v = x;
    return 0;
}

static int rd_uint(rd *r, uint64_t *v)
{
    if (rd_left(r) < 1)
        return rd_fail(r, "truncated");
    uint8_t t = *r->p++;
    if (t <= 0x7f) {
        *v = t;
        return 0;
    }
    switch (t) {
    case 0xcc: return rd_be(r, 1, v);
    case 0xcd: return rd_be(r, 2, v);
    case 0xce: return rd_be(r, 4, v);
    case 0xcf: return rd_be(r, 8, v);
    default: return rd_fail(r, "wrong type: expected unsigned integer");
    }
}

static int rd_uint32(rd *r, uint32_t *v)
{
    uint64_t x;
    if (rd_uint(r, &x) < 0)
        return -1;
    if (x > UINT32_MAX)
        return rd_fail(r, "integer out of range");
    *v = (uint32_t)x;
    return 0;
}

/* Reads a container header; the count must be <= max and each element needs at least one byte. */
static int rd_container(rd *r, bool map, uint32_t max, uint32_t *n)
{
    if (rd_left(r) < 1)
        return rd_fail(r, "truncated");
    uint8_t t = *r->p++;
    uint64_t x;
    if (map && (t & 0xf0) == 0x80) {
        x = t & 0x0f;
    } else if (!map && (t & 0xf0) == 0x90) {
        x = t & 0x0f;
    } else if (t == (map ? 0xde : 0xdc)) {
        if (rd_be(r, 2, &x) < 0)
            return -1;
    } else if (t == (map ? 0xdf : 0xdd)) {
        if (rd_be(r, 4, &x) < 0)
            return -1;
    } else {
        return rd_fail(r, map ? "wrong type: expected map" : "wrong type: expected array");
    }
    if (x > max)
        return rd_fail(r, "absurd count");
    if (x * (map ? 2 : 1) > rd_left(r))
        return rd_fail(r, "truncated");
    *n = (uint32_t)x;
    return 0;
}

/* Reads a str (want_bin false) or bin (want_bin true) in place. */
static int rd_bytes(rd *r, bool want_bin, const uint8_t **s, size_t *len)
{
    if (rd_left(r) < 1)
        return rd_fail(r, "truncated");
    uint8_t t = *r->p++;
    uint64_t n;
    if (!want_bin && (t & 0xe0) == 0xa0) {
        n = t & 0x1f;
    } else if (t == (want_bin ? 0xc4 : 0xd9)) {
        if (rd_be(r, 1, &n) < 0)
            return -1;
    } else if (t == (want_bin ? 0xc5 : 0xda)) {
        if (rd_be(r, 2, &n) < 0)
            return -1;
    } else if (t == (want_bin ? 0xc6 : 0xdb)) {
        if (rd_be(r, 4, &n) < 0)
            return -1;
    } else {
        return rd_fail(r, want_bin ? "wrong type: expected bin" : "wrong type: expected str");
    }
    if (n > rd_left(r))
        return rd_fail(r, "truncated");
    *s = r->p;
    *len = (size_t)n;
    r->p += n;
    return 0;
}

/* Reads a str of at most max bytes with no NUL into out (max + 1 bytes). */
static int rd_cstr(rd *r, char *out, size_t max, bool allow_empty)
{
    const uint8_t *s;
    size_t n;
    if (rd_bytes(r, false, &s, &n) < 0)
        return -1;
    if (n > max)
        return rd_fail(r, "oversize string");
    if (n == 0 && !allow_empty)
        return rd_fail(r, "empty string");
    if (memchr(s, 0, n))
        return rd_fail(r, "NUL in string");
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

static int rd_bool(rd *r, bool *v)
{
    if (rd_left(r) < 1)
        return rd_fail(r, "truncated");
    uint8_t t = *r->p++;
    if (t != 0xc2 && t != 0xc3)
        return rd_fail(r, "wrong type: expected bool");
    *v = t == 0xc3;
    return 0;
}

/* Consumes a nil if one is next; true when it did. */
static bool rd_nil(rd *r)
{
    if (rd_left(r) >= 1 && *r->p == 0xc0) {
        r->p++;
        return true;
    }
    return false;
}

static int rd_addr(rd *r, shoal_addr *a)
{
    const uint8_t *b;
    size_t n;
    if (rd_bytes(r, true, &b, &n) < 0)
        return -1;
    memset(a, 0, sizeof *a);
    if (n == 7 && b[0] == 4)
        a->family = 4;
    else if (n == 19 && b[0] == 6)
        a->family = 6;
    else
        return rd_fail(r, "bad address");
    size_t iplen = n - 3;
    memcpy(a->ip, b + 1, iplen);
    a->port = (uint16_t)(b[1 + iplen] << 8 | b[2 + iplen]);
    return 0;
}

/* Skips one object of any type, at most `depth` containers deep. */
static int rd_skip(rd *r, int depth)
{
    if (depth <= 0)
        return rd_fail(r, "nesting too deep");
    if (rd_left(r) < 1)
        return rd_fail(r, "truncated");
    uint8_t t = *r->p;
    uint64_t n;
    const uint8_t *s;
    size_t len;
    uint32_t cnt;
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
        r->p++;
        return 0;
    }
    if ((t & 0xe0) == 0xa0 || (t >= 0xd9 && t <= 0xdb))
        return rd_bytes(r, false, &s, &len);
    if (t >= 0xc4 && t <= 0xc6)
        return rd_bytes(r, true, &s, &len);
    if ((t & 0xf0) == 0x80 || t == 0xde || t == 0xdf || (t & 0xf0) == 0x90 || t == 0xdc || t == 0xdd) {
        bool map = (t & 0xf0) == 0x80 || t == 0xde || t == 0xdf;
        if (rd_container(r, map, 4096, &cnt) < 0)
            return -1;
        for (uint64_t i = 0; i < (uint64_t)cnt * (map ? 2 : 1); i++)
            if (rd_skip(r, depth - 1) < 0)
                return -1;
        return 0;
    }
    r->p++;
    switch (t) {
    case 0xcc: case 0xd0: return rd_be(r, 1, &n);
    case 0xcd: case 0xd1: return rd_be(r, 2, &n);
    case 0xce: case 0xd2: case 0xca: return rd_be(r, 4, &n);
    case 0xcf: case 0xd3: case 0xcb: return rd_be(r, 8, &n);
    case 0xd4: return rd_be(r, 2, &n);  /* fixext 1: type + 1 */
    case 0xd5: return rd_be(r, 3, &n);
    case 0xd6: return rd_be(r, 5, &n);
    case 0xd7: return rd_be(r, 9, &n);
    case 0xd8: if (rd_be(r, 8, &n) < 0) return -1; return rd_be(r, 8, &n);
    default: return rd_fail(r, "unsupported type");
    }
}

static int rd_meta(rd *r, gossip_meta *m)
{
    uint32_t n;
    const uint8_t *key;
    size_t keylen;
    if (rd_container(r, false, 7, &n) < 0)
        return -1;
    if (n != 7)
        return rd_fail(r, "meta: wrong element count");
    if (rd_addr(r, &m->addr) < 0 || rd_cstr(r, m->zone, GOSSIP_ZONE_MAX, true) < 0)
        return -1;
    if (rd_bytes(r, true, &key, &keylen) < 0)
        return -1;
    if (keylen != 32)
        return rd_fail(r, "meta: public key is not 32 bytes");
    memcpy(m->curve_public, key, 32);
    if (rd_uint(r, &m->capacity) < 0 || rd_bool(r, &m->serving) < 0 ||
        rd_uint32(r, &m->proto_version) < 0 || rd_uint32(r, &m->block_size) < 0)
        return -1;
    return 0;
}

static int rd_update(rd *r, gossip_update *u)
{
    uint32_t n;
    uint64_t kind;
    memset(u, 0, sizeof *u);
    if (rd_container(r, false, 5, &n) < 0)
        return -1;
    if (n != 5)
        return rd_fail(r, "update: wrong element count");
    if (rd_uint(r, &kind) < 0)
        return -1;
    if (kind > GOSSIP_LEFT)
        return rd_fail(r, "update: unknown state");
    u->kind = (uint8_t)kind;
    if (rd_cstr(r, u->meta.id, GOSSIP_ID_MAX, false) < 0 || rd_uint(r, &u->incarnation) < 0)
        return -1;
    if (!rd_nil(r) && rd_cstr(r, u->accuser, GOSSIP_ID_MAX, false) < 0)
        return -1;
    if (!rd_nil(r)) {
        if (rd_meta(r, &u->meta) < 0)
            return -1;
        u->has_meta = true;
    }
    if (u->kind == GOSSIP_ALIVE && !u->has_meta)
        return rd_fail(r, "update: alive without metadata");
    return 0;
}

int gossip_msg_decode(const uint8_t *data, size_t len, gossip_msg *m, const char **why)
{
    rd r = {.p = data, .end = data + len};
    uint32_t nkeys, seen = 0, n_used = 0;
    uint64_t version = 0;
    uint64_t used[GOSSIP_UPDATES_MAX];
    bool used_known[GOSSIP_UPDATES_MAX];
    m->type = 0;
    m->from[0] = m->target[0] = m->text[0] = '\0';
    m->seq = 0;
    m->has_addr = m->join = m->has_digest = false;
    m->digest = 0;
    m->chunk = m->chunks = m->reason = m->n_updates = 0;
    if (len > GOSSIP_PLAIN_MAX) {
        rd_fail(&r, "oversize packet");
        goto fail;
    }
    if (rd_container(&r, true, 32, &nkeys) < 0)
        goto fail;
    for (uint32_t i = 0; i < nkeys; i++) {
        uint64_t key;
        if (rd_uint(&r, &key) < 0)
            goto fail;
        if (key < 32) {
            if (seen & (1u << key)) {
                rd_fail(&r, "duplicate key");
                goto fail;
            }
            seen |= 1u << key;
        }
        int rc = 0;
        switch (key) {
        case K_VERSION:
            rc = rd_uint(&r, &version);
            if (rc == 0 && version != GOSSIP_WIRE_VERSION)
                rc = rd_fail(&r, "unknown version");
            break;
        case K_TYPE:
            rc = rd_uint32(&r, &m->type);
            if (rc == 0 && (m->type == 0 || m->type > GOSSIP_MSG_TYPE_MAX_))
                rc = rd_fail(&r, "unknown message type");
            break;
        case K_FROM: rc = rd_cstr(&r, m->from, GOSSIP_ID_MAX, false); break;
        case K_SEQ: rc = rd_uint(&r, &m->seq); break;
        case K_TARGET: rc = rd_cstr(&r, m->target, GOSSIP_ID_MAX, false); break;
        case K_ADDR:
            rc = rd_addr(&r, &m->addr);
            m->has_addr = rc == 0;
            break;
        case K_JOIN: rc = rd_bool(&r, &m->join); break;
        case K_CHUNK: {
            uint32_t n2;
            rc = rd_container(&r, false, 2, &n2);
            if (rc == 0 && n2 != 2)
                rc = rd_fail(&r, "chunk: wrong element count");
            if (rc == 0)
                rc = rd_uint32(&r, &m->chunk);
            if (rc == 0)
                rc = rd_uint32(&r, &m->chunks);
            if (rc == 0 && (m->chunks == 0 || m->chunk >= m->chunks))
                rc = rd_fail(&r, "chunk: index out of range");
            break;
        }
        case K_DIGEST:
            rc = rd_uint(&r, &m->digest);
            m->has_digest = rc == 0;
            break;
        case K_REASON: rc = rd_uint32(&r, &m->reason); break;
        case K_TEXT: rc = rd_cstr(&r, m->text, GOSSIP_TEXT_MAX, true); break;
        case K_UPDATES:
            rc = rd_container(&r, false, GOSSIP_UPDATES_MAX, &m->n_updates);
            for (uint32_t j = 0; rc == 0 && j < m->n_updates; j++)
                rc = rd_update(&r, &m->updates[j]);
            if (rc < 0)
                m->n_updates = 0;
            break;
        case K_CACHE_USED:
            rc = rd_container(&r, false, GOSSIP_UPDATES_MAX, &n_used);
            for (uint32_t j = 0; rc == 0 && j < n_used; j++) {
                used_known[j] = !rd_nil(&r);
                used[j] = 0;
                if (used_known[j])
                    rc = rd_uint(&r, &used[j]);
            }
            break;
        default: rc = rd_skip(&r, 8); break;
        }
        if (rc < 0)
            goto fail;
    }
    if (r.p != r.end) {
        rd_fail(&r, "trailing bytes");
        goto fail;
    }
    if (!(seen & (1u << K_VERSION))) {
        rd_fail(&r, "missing version");
        goto fail;
    }
    if (!(seen & (1u << K_TYPE)) || !(seen & (1u << K_FROM))) {
        rd_fail(&r, "missing type or sender");
        goto fail;
    }
    uint32_t need = 0;
    switch (m->type) {
    case GOSSIP_MSG_PING: need = 1u << K_SEQ | 1u << K_TARGET; break;
    case GOSSIP_MSG_ACK:
    case GOSSIP_MSG_NACK: need = 1u << K_SEQ; break;
    case GOSSIP_MSG_PING_REQ: need = 1u << K_SEQ | 1u << K_TARGET | 1u << K_ADDR; break;
    case GOSSIP_MSG_PP_REQ:
    case GOSSIP_MSG_PP_RESP: need = 1u << K_CHUNK; break;
    case GOSSIP_MSG_REFUSE: need = 1u << K_REASON; break;
    default: break;
    }
    if ((seen & need) != need) {
        rd_fail(&r, "missing field for message type");
        goto fail;
    }
    if (seen & (1u << K_CACHE_USED)) {
        if (n_used != m->n_updates) {
            rd_fail(&r, "cache used: count differs from the updates");
            goto fail;
        }
        for (uint32_t j = 0; j < n_used; j++) {
            if (used_known[j] && !m->updates[j].has_meta) {
                rd_fail(&r, "cache used: for an update without metadata");
                goto fail;
            }
            m->updates[j].meta.cache_used = used[j];
            m->updates[j].meta.cache_used_known = used_known[j];
        }
    }
    return 0;
fail:
    m->n_updates = 0;
    if (why)
        *why = r.why;
    return -1;
}

/* ---- sealing ---- */

size_t gossip_seal(const uint8_t key[GOSSIP_KEY_LEN], const uint8_t nonce[GOSSIP_NONCE_LEN],
                   const uint8_t *plain, size_t plen, uint8_t *out)
{
    unsigned long long clen = 0;
    memcpy(out, nonce, GOSSIP_NONCE_LEN);
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + GOSSIP_NONCE_LEN, &clen, plain, plen, NULL, 0,
                                               NULL, nonce, key);
    return GOSSIP_NONCE_LEN + (size_t)clen;
}

int gossip_open(const uint8_t key[GOSSIP_KEY_LEN], const uint8_t *in, size_t len, uint8_t *plain,
                size_t *plen)
{
    unsigned long long mlen = 0;
    if (len < GOSSIP_SEAL_OVERHEAD)
        return -1;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &mlen, NULL, in + GOSSIP_NONCE_LEN,
                                                   len - GOSSIP_NONCE_LEN, NULL, 0, in, key) != 0)
        return -1;
    *plen = (size_t)mlen;
    return 0;
}
