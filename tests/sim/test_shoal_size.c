/*
 * The size grammar (common/shoal_size.h) that shoal-sim and shoald read: K/M/G/T and
 * KiB..TiB are powers of 1024, KB/MB/GB/TB powers of 1000; bad text is an error naming it.
 */
#include "shoal_error.h"
#include "shoal_size.h"
#include "tt.h"

#include <string.h>

TT_TEST(test_size_letters_and_iec_units_are_powers_of_1024_and_si_units_powers_of_1000)
{
    static const struct {
        const char *text;
        uint64_t bytes;
    } cases[] = {
        {"0", 0},
        {"512", 512},
        {"512B", 512},
        {"4K", 4096},
        {"4k", 4096},
        {"4KiB", 4096},
        {"4KB", 4000},
        {"4M", 4194304},
        {"4MiB", 4194304},
        {"4MB", 4000000},
        {"1.5G", 1610612736},
        {"16GiB", 17179869184ull},
        {"10GB", 10000000000ull},
        {"10T", 10995116277760ull},
        {"10TB", 10000000000000ull},
        {"1TiB", 1099511627776ull},
        {"0.5KB", 500},
        {"16777215TiB", 18446742974197923840ull},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t v = 1;
        TT_OK(shoal_parse_size(cases[i].text, &v));
        TT_CHECK(v == cases[i].bytes, "'%s' gave %llu bytes, expected %llu", cases[i].text, (unsigned long long)v,
                 (unsigned long long)cases[i].bytes);
    }
}

TT_TEST(test_size_bad_text_is_an_error_naming_it_and_leaves_the_output)
{
    static const char *const bad[] = {"", "G", "-1", "-1K", "4 GB", "4GBs", "4Q", "nan", "inf", "1e30", "16384PiB",
                                      "4.G.", "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 7;
        TT_CHECK(shoal_parse_size(bad[i], &v) < 0, "'%s' was accepted as %llu", bad[i], (unsigned long long)v);
        TT_CHECK(v == 7, "'%s' changed the output on failure", bad[i]);
        TT_CHECK(shoal_error_code() == SHOAL_ERR_INVAL, "'%s': error %s", bad[i], shoal_error_name(shoal_error_code()));
        TT_CHECK(!bad[i][0] || strstr(shoal_error_message(), bad[i]), "'%s': message '%s' does not name it", bad[i],
                 shoal_error_message());
    }
}

TT_MAIN()
