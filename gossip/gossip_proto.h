/*
 * gossip_proto: the gossip wire format (msgpack, versioned) and the datagram seal (libsodium
 * XChaCha20-Poly1305). Pure functions over bytes: no state, no allocation, no clock. The state
 * machine (gossip.c), the fuzz harness and the tests use it; the daemon does not need it.
 *
 * A datagram on the wire is   nonce (24 bytes) | AEAD ciphertext of the plaintext | tag (16 bytes)
 * and the plaintext is one msgpack map with small integer keys (docs/gossip.md lists them).
 */
#ifndef SHOAL_GOSSIP_PROTO_H
#define SHOAL_GOSSIP_PROTO_H

#include "gossip.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GOSSIP_NONCE_LEN 24
#define GOSSIP_TAG_LEN 16
#define GOSSIP_SEAL_OVERHEAD (GOSSIP_NONCE_LEN + GOSSIP_TAG_LEN)
/* Largest plaintext that still seals into GOSSIP_DATAGRAM_MAX bytes. */
#define GOSSIP_PLAIN_MAX (GOSSIP_DATAGRAM_MAX - GOSSIP_SEAL_OVERHEAD)
/* Most updates one message may carry; a message announcing more is rejected as absurd. */
#define GOSSIP_UPDATES_MAX 64
#define GOSSIP_TEXT_MAX 127
/* Largest encoded update: ids and zone at their limits, an IPv6 address, every integer at 9 bytes. */
#define GOSSIP_UPDATE_MAX 256

typedef enum gossip_msg_type {
    GOSSIP_MSG_PING = 1,     /* seq, target: "are you there?" */
    GOSSIP_MSG_ACK = 2,      /* seq: "yes" (also relayed back by an indirect prober) */
    GOSSIP_MSG_PING_REQ = 3, /* seq, target, addr: "please probe target for me" */
    GOSSIP_MSG_NACK = 4,     /* seq: "I asked target for you and heard nothing" (Lifeguard) */
    GOSSIP_MSG_PP_REQ = 5,   /* one chunk of the sender's state; answer with yours */
    GOSSIP_MSG_PP_RESP = 6,  /* one chunk of the answer to a PP_REQ */
    GOSSIP_MSG_REFUSE = 7,   /* reason, text: "you cannot be a member" */
    GOSSIP_MSG_GOSSIP = 8,   /* updates only */
    GOSSIP_MSG_TYPE_MAX_ = 8,
} gossip_msg_type;

/* One piggybacked membership update, or one member's state in a push-pull chunk. The member's id
 * is meta.id whether or not the full metadata is present. */
typedef struct gossip_update {
    uint8_t kind; /* a gossip_state */
    uint64_t incarnation;
    char accuser[GOSSIP_ID_MAX + 1]; /* who suspects / declared dead; "" when absent */
    bool has_meta;
    gossip_meta meta;
    /* Encoding only: when set, the id and metadata are read from here instead of `meta`, so the
     * sender need not copy a member's metadata for every packet. Decoding leaves it NULL. */
    const gossip_meta *meta_ref;
} gossip_update;

typedef struct gossip_msg {
    uint32_t type;
    char from[GOSSIP_ID_MAX + 1]; /* sender's node id */
    uint64_t seq;
    char target[GOSSIP_ID_MAX + 1];
    bool has_addr;
    shoal_addr addr;
    bool join;            /* PP_REQ: the sender is joining */
    bool has_digest;      /* PP_REQ / PP_RESP: a state digest instead of (or with) the state */
    uint64_t digest;      /* the sender's gossip_state_digest() */
    uint32_t chunk, chunks; /* push-pull: this chunk's index and the count */
    uint32_t reason;       /* REFUSE: a gossip_refusal */
    char text[GOSSIP_TEXT_MAX + 1];
    uint32_t n_updates;
    gossip_update updates[GOSSIP_UPDATES_MAX];
} gossip_msg;

/*
 * Encodes one update into out (cap bytes). Returns its length, or 0 when it does not fit.
 */
size_t gossip_update_encode(const gossip_update *u, uint8_t *out, size_t cap);

/*
 * Encodes one update's published cache use (key 12: a uint, or nil when the update carries no
 * metadata or the use is unknown) into out. Returns its length (at most GOSSIP_CACHE_USED_MAX), or
 * 0 when it does not fit.
 */
size_t gossip_update_encode_cache_used(const gossip_update *u, uint8_t *out, size_t cap);
#define GOSSIP_CACHE_USED_MAX 9

/* Updates already encoded back to back, n of them: each one's update (gossip_update_encode) in
 * `updates` and its cache use (gossip_update_encode_cache_used) in `cache_used`, in the same order.
 * Borrowed views. */
typedef struct gossip_raw_updates {
    const uint8_t *updates;
    size_t updates_len;
    const uint8_t *cache_used;
    size_t cache_used_len;
    uint32_t n;
} gossip_raw_updates;
/* What the two arrays' keys and headers add to a message carrying updates, at most. */
#define GOSSIP_UPDATES_OVERHEAD 8

/*
 * Encodes updates u[0..n) into buf (cap bytes: the updates, then their cache uses) and describes
 * them in *raw. 0, or -1 when they do not fit. For tests and the fuzzer; the instance fills its
 * packets update by update.
 */
int gossip_updates_encode(const gossip_update *u, uint32_t n, uint8_t *buf, size_t cap, gossip_raw_updates *raw);

/*
 * Encodes message `m` (its own updates[] are ignored) followed by the updates in `raw` (NULL or
 * n == 0: none). Returns the length, or 0 when it does not fit in cap.
 */
size_t gossip_msg_encode(const gossip_msg *m, const gossip_raw_updates *raw, uint8_t *out, size_t cap);

/*
 * Decodes one plaintext message into *m. Returns 0, or -1 with *why set to a static reason
 * ("not a map", "truncated", "unknown version", ...) for any malformed input. Never reads past len.
 */
int gossip_msg_decode(const uint8_t *data, size_t len, gossip_msg *m, const char **why);

/*
 * Seals `plain` with `key` and the 24-byte `nonce` into out (plen + GOSSIP_SEAL_OVERHEAD bytes).
 * Returns the sealed length.
 */
size_t gossip_seal(const uint8_t key[GOSSIP_KEY_LEN], const uint8_t nonce[GOSSIP_NONCE_LEN],
                   const uint8_t *plain, size_t plen, uint8_t *out);
/* Opens a sealed datagram into plain (len - GOSSIP_SEAL_OVERHEAD bytes). -1 when it does not
 * authenticate (wrong key, tampered, too short). */
int gossip_open(const uint8_t key[GOSSIP_KEY_LEN], const uint8_t *in, size_t len, uint8_t *plain,
                size_t *plen);

#endif
