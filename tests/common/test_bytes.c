/* Tests of shoal_bytes: hex both ways, integers in fixed byte order. */
#include "shoal_bytes.h"
#include "shoal_error.h"
#include "tt.h"

#include <string.h>

TT_TEST(test_hex_round_trips_every_byte_in_lower_case)
{
    uint8_t all[256], back[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    char text[513];
    shoal_hex(text, all, sizeof all);
    TT_CHECK(strlen(text) == 512 && strncmp(text, "000102", 6) == 0 && strcmp(text + 506, "fdfeff") == 0,
             "lower-case, two digits a byte: %.8s...%s", text, text + 504);
    TT_OK(shoal_unhex(back, text, sizeof back));
    TT_CHECK(memcmp(all, back, sizeof all) == 0, "decoded bytes equal the encoded ones");
    memset(back, 0, sizeof back);
    TT_OK(shoal_unhex_ci(back, text, sizeof back));
    TT_CHECK(memcmp(all, back, sizeof all) == 0, "the any-case decoder reads lower case too");
}

TT_TEST(test_unhex_refuses_upper_case_unless_asked_and_names_the_byte)
{
    uint8_t out[4] = {0};
    shoal_error_clear();
    TT_CHECK(shoal_unhex(out, "00aB12ff", 4) == -1, "upper-case digit refused by the strict decoder");
    TT_CHECK(shoal_error_code() == SHOAL_ERR_INVAL && strstr(shoal_error_message(), "byte 1 of 4"),
             "INVAL naming the byte: %s %s", shoal_error_name(shoal_error_code()), shoal_error_message());
    TT_CHECK(out[0] == 0x00, "bytes before the bad one are decoded");
    TT_OK(shoal_unhex_ci(out, "00aB12fF", 4));
    TT_CHECK(out[0] == 0x00 && out[1] == 0xab && out[2] == 0x12 && out[3] == 0xff, "any case decodes %02x%02x%02x%02x",
             out[0], out[1], out[2], out[3]);
    TT_CHECK(shoal_unhex_ci(out, "0g", 1) == -1, "'g' is not a digit");
    TT_CHECK(shoal_unhex_ci(out, "-1", 1) == -1, "a sign is not a digit");
    TT_CHECK(shoal_unhex_ci(out, " 1", 1) == -1, "a space is not a digit");
}

TT_TEST(test_unhex_stops_at_the_end_of_a_short_string)
{
    /* Heap copies of exactly their length: under ASan a read past the NUL fails the test. */
    const char *shorts[] = {"", "a", "ab", "abc"};
    for (size_t i = 0; i < sizeof shorts / sizeof shorts[0]; i++) {
        char *s = strdup(shorts[i]);
        uint8_t out[16];
        TT_CHECK(shoal_unhex(out, s, sizeof out) == -1, "'%s' is shorter than 16 bytes of hex", s);
        TT_CHECK(shoal_unhex_ci(out, s, sizeof out) == -1, "'%s' (any case)", s);
        free(s);
    }
    uint8_t none[1];
    TT_OK(shoal_unhex(none, "", 0));
}

TT_TEST(test_byte_order_helpers_match_the_layouts_written_out)
{
    uint8_t b[8];
    shoal_store_le32(b, 0x11223344u);
    TT_CHECK(b[0] == 0x44 && b[1] == 0x33 && b[2] == 0x22 && b[3] == 0x11, "le32 puts the low byte first");
    TT_CHECK(shoal_load_le32(b) == 0x11223344u && shoal_load_le16(b) == 0x3344 && shoal_load_le(b, 3) == 0x223344,
             "le loads of 4, 2 and 3 bytes");
    shoal_store_le64(b, 0x0102030405060708ull);
    TT_CHECK(b[0] == 8 && b[7] == 1 && shoal_load_le64(b) == 0x0102030405060708ull, "le64");
    shoal_store_le16(b, 0xbeef);
    TT_CHECK(b[0] == 0xef && b[1] == 0xbe && b[2] == 6, "le16 writes two bytes only");
    shoal_store_be64(b, 0x0102030405060708ull);
    TT_CHECK(b[0] == 1 && b[7] == 8 && shoal_load_be(b, 8) == 0x0102030405060708ull, "be64 puts the high byte first");
    TT_CHECK(shoal_load_be(b, 2) == 0x0102 && shoal_load_be(b + 6, 2) == 0x0708, "be loads of 2 bytes");
    uint64_t x = 0x8899aabbccddeeffull;
    for (size_t n = 1; n <= 8; n++) {
        uint64_t mask = n == 8 ? UINT64_MAX : (1ull << (8 * n)) - 1;
        memset(b, 0, sizeof b);
        shoal_store_le(b, x, n);
        TT_CHECK(shoal_load_le(b, n) == (x & mask), "le round trip of %zu bytes", n);
        shoal_store_be(b, x, n);
        TT_CHECK(shoal_load_be(b, n) == (x & mask), "be round trip of %zu bytes", n);
        TT_CHECK(b[n - 1] == 0xff, "be puts the lowest byte last (%zu bytes)", n);
    }
}

TT_MAIN()
