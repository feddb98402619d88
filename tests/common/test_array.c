/* Tests of shoal_array: growing a caller's (items, n, cap) array. */
#include "shoal_array.h"
#include "shoal_error.h"
#include "tt.h"

#include <stdint.h>
#include <string.h>

typedef struct pair {
    uint64_t key;
    char tag[12];
} pair;

TT_TEST(test_array_grow_keeps_every_element_and_room_for_the_next)
{
    pair *v = NULL;
    size_t n = 0, cap = 0;
    size_t moves = 0;
    for (uint64_t i = 0; i < 10000; i++) {
        size_t old_cap = cap;
        TT_OK(SHOAL_ARRAY_GROW(v, n, cap));
        TT_CHECK(cap > n, "room for element %zu: cap %zu", n, cap);
        if (cap != old_cap) {
            moves++;
            TT_CHECK(cap >= 2 * old_cap && cap >= 16, "capacity %zu after %zu: at least doubled, at least 16", cap,
                     old_cap);
        }
        v[n] = (pair){.key = i * 7};
        snprintf(v[n].tag, sizeof v[n].tag, "#%llu", (unsigned long long)i);
        n++;
    }
    TT_CHECK(moves == 11, "10000 pushes grew the array %zu times (16, then 10 doublings)", moves);
    for (size_t i = 0; i < n; i++) {
        char want[12];
        snprintf(want, sizeof want, "#%zu", i);
        TT_CHECK(v[i].key == i * 7 && strcmp(v[i].tag, want) == 0, "element %zu survived the moves", i);
    }
    free(v);
}

TT_TEST(test_array_grow_with_room_left_changes_nothing)
{
    int *v = NULL;
    size_t cap = 0;
    TT_OK(SHOAL_ARRAY_GROW(v, 0, cap));
    int *before = v;
    size_t cap_before = cap;
    TT_OK(SHOAL_ARRAY_GROW(v, cap_before - 1, cap));
    TT_CHECK(v == before && cap == cap_before, "no move while n < cap");
    TT_OK(SHOAL_ARRAY_GROW(v, 1000, cap));
    TT_CHECK(cap > 1000, "a jump past double takes the array to n+1 at least: cap %zu", cap);
    free(v);
}

TT_TEST(test_array_grow_too_large_fails_with_nomem_and_keeps_the_array)
{
    uint32_t *v = NULL;
    size_t cap = 0;
    TT_OK(SHOAL_ARRAY_GROW(v, 0, cap));
    v[0] = 42;
    uint32_t *before = v;
    size_t cap_before = cap;
    shoal_error_clear();
    TT_CHECK(SHOAL_ARRAY_GROW(v, SIZE_MAX / 2, cap) == -1, "an array past SIZE_MAX bytes is refused");
    TT_CHECK(shoal_error_code() == SHOAL_ERR_NOMEM, "code %s", shoal_error_name(shoal_error_code()));
    TT_CHECK(v == before && cap == cap_before && v[0] == 42, "the array and its capacity are unchanged");
    TT_CHECK(SHOAL_ARRAY_GROW(v, SIZE_MAX, cap) == -1, "n = SIZE_MAX is refused, not wrapped to 0");
    free(v);
}

TT_MAIN()
