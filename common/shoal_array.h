/*
 * shoal_array: growing a plain array that its owner keeps as a typed pointer with a count and a
 * capacity beside it:
 *
 *   if (SHOAL_ARRAY_GROW(l->items, l->n, l->cap) < 0)
 *       return shoal_error_wrap("listing %s", path);
 *   l->items[l->n++] = item;
 *
 * There is no container type: the array stays `T *` with `size_t` count and capacity under the
 * names its struct gives them, so code that reads it is plain C indexing, and turning a
 * hand-grown array into this one changes only its growth. The capacity doubles (from 16), so n
 * pushes cost O(n) copies in all.
 */
#ifndef SHOAL_ARRAY_H
#define SHOAL_ARRAY_H

#include <stddef.h>

/* Makes room for element `n` of the array *items (a `T **` passed as void *) of *cap elements of
 * elem_size bytes: afterwards *cap > n, and elements [0, n) are where they were (the array may
 * move). 0, or -1 with SHOAL_ERR_NOMEM when memory or size_t runs out; the array and *cap are
 * then unchanged, so the owner frees what it holds as usual. */
int shoal_array_grow(void *items, size_t *cap, size_t n, size_t elem_size);

/* shoal_array_grow on an lvalue pointer `items` and an lvalue size_t `cap` (each named once,
 * evaluated more than once: no side effects). */
#define SHOAL_ARRAY_GROW(items, n, cap) shoal_array_grow(&(items), &(cap), (n), sizeof *(items))

#endif
