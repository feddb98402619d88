/*
 * The array pointer comes in as void * and is read and written with memcpy: every object pointer
 * has the same representation here, and memcpy keeps the access within the rules of C (a T **
 * read as a void ** would not be).
 */
#include "shoal_array.h"
#include "shoal_error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SHOAL_ARRAY_FIRST 16

int shoal_array_grow(void *items, size_t *cap, size_t n, size_t elem_size)
{
    if (n < *cap)
        return 0;
    size_t want = *cap > SIZE_MAX / 2 ? SIZE_MAX : *cap * 2;
    if (want < SHOAL_ARRAY_FIRST)
        want = SHOAL_ARRAY_FIRST;
    if (want <= n)
        want = n + 1;
    if (n == SIZE_MAX || elem_size == 0 || want > SIZE_MAX / elem_size)
        return shoal_error_set(SHOAL_ERR_NOMEM, "array of %zu elements of %zu bytes: too large", n, elem_size);
    void *old;
    memcpy(&old, items, sizeof old);
    void *grown = realloc(old, want * elem_size);
    if (!grown)
        return shoal_error_set(SHOAL_ERR_NOMEM, "out of memory growing an array to %zu elements of %zu bytes", want,
                               elem_size);
    memcpy(items, &grown, sizeof grown);
    *cap = want;
    return 0;
}
