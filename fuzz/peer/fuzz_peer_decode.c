/*
 * libFuzzer harness for the peer-message decoder (node_peer_msg_decode).
 *
 * Input: the first 4 bytes (little-endian) are the size of the payload frame that arrived with
 * the header, the rest is the header frame. Inputs shorter than 4 bytes are a header with an
 * empty payload. Besides "never crash, never leak", it checks a property: whatever decodes must
 * encode again, and that encoding must decode to the same message — so the encoder and decoder
 * agree on every message a peer can get past the decoder.
 *
 * The same bytes are also fed to the listing-page decoder (node_peer_list_decode, the payload of
 * a LIST_REPLY) and the object-metadata decoder (node_peer_head_decode, the payload of a
 * HEAD_REPLY): what decodes must encode to exactly the bytes it came from (neither encoding has
 * optional parts, so both are canonical).
 *
 * Built with -fsanitize=fuzzer when SHOAL_FUZZ=ON under clang; replay.c runs the same entry point
 * over the corpus and crashes/ as an ordinary CTest case.
 */
#include "node_peer_proto.h"
#include "shoal_bytes.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same_cursor(shoal_cursor a, shoal_cursor b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t payload = 0;
    if (size >= 4) {
        payload = shoal_load_le32(data);
        data += 4, size -= 4;
    }
    /* A private copy, so the sanitizer sees any read past the frame's end. */
    uint8_t *frame = malloc(size ? size : 1);
    if (frame == NULL)
        return 0;
    memcpy(frame, data, size);
    node_peer_msg m;
    if (node_peer_msg_decode(shoal_cursor_from_mem(frame, size), payload, &m) == 0) {
        shoal_buf b;
        node_peer_msg again;
        if (shoal_buf_create(&b, 0) != 0 || node_peer_msg_encode(&m, &b) != 0 ||
            node_peer_msg_decode(shoal_cursor_from_buf(&b), payload, &again) != 0)
            abort();
        if (again.type != m.type || again.request_id != m.request_id || again.status != m.status ||
            again.payload_len != m.payload_len || again.checksum != m.checksum ||
            again.has_object_size != m.has_object_size || again.object_size != m.object_size ||
            again.flags != m.flags || again.membership_version != m.membership_version ||
            again.has_source != m.has_source || again.source != m.source ||
            memcmp(again.block.id, m.block.id, NODE_PEER_BLOCK_ID_LEN) != 0 ||
            !same_cursor(again.block.bucket, m.block.bucket) || !same_cursor(again.block.key, m.block.key) ||
            !same_cursor(again.block.etag, m.block.etag) || again.block.index != m.block.index ||
            again.block.offset != m.block.offset || again.block.length != m.block.length ||
            !same_cursor(again.list.bucket, m.list.bucket) || !same_cursor(again.list.prefix, m.list.prefix) ||
            !same_cursor(again.list.delimiter, m.list.delimiter) || !same_cursor(again.list.token, m.list.token) ||
            !same_cursor(again.list.start_after, m.list.start_after) || again.list.max_keys != m.list.max_keys ||
            !same_cursor(again.head.bucket, m.head.bucket) || !same_cursor(again.head.key, m.head.key) ||
            again.has_max_age != m.has_max_age || again.max_age_ms != m.max_age_ms || again.has_age != m.has_age ||
            again.age_ms != m.age_ms || again.has_work_id != m.has_work_id ||
            memcmp(again.work_id, m.work_id, NODE_PEER_BLOCK_ID_LEN) != 0 || again.has_work != m.has_work ||
            again.work != m.work)
            abort();
        shoal_buf_destroy(&b);
    }
    node_peer_list_page page;
    if (node_peer_list_decode(shoal_cursor_from_mem(frame, size), &page) == 0) {
        shoal_buf b = {0};
        if (node_peer_list_encode(&page, &b) != 0 || b.len != size || memcmp(b.data, frame, size) != 0)
            abort();
        shoal_buf_destroy(&b);
        node_peer_list_page_destroy(&page);
    }
    node_peer_object_info info;
    if (node_peer_head_decode(shoal_cursor_from_mem(frame, size), &info) == 0) {
        shoal_buf b = {0};
        if (node_peer_head_encode(&info, &b) != 0 || b.len != size || memcmp(b.data, frame, size) != 0)
            abort();
        shoal_buf_destroy(&b);
    }
    free(frame);
    return 0;
}
