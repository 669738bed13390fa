/*
 * loanwire/buf.h - a growable byte buffer and array growth.
 *
 * The write paths build RESP, JSON and state strings into buffers reused
 * across batches; they grow here, in one place, instead of in each domain
 * file. The caller owns the memory: free a buffer with lw_sbuf_free() and an
 * array with free().
 */
#ifndef LOANWIRE_BUF_H
#define LOANWIRE_BUF_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A growable byte buffer: p[0, len) is the content, cap what is allocated. A
 * zeroed struct is an empty buffer. */
typedef struct lw_sbuf {
    char *p;
    size_t len, cap;
} lw_sbuf_t;

/* Room for `more` bytes after len (doubling, from 4 KiB); false when out of
 * memory (the buffer is unchanged). */
bool lw_sbuf_reserve(lw_sbuf_t *b, size_t more);
void lw_sbuf_free(lw_sbuf_t *b); /* and zeroes it; NULL-safe */

/* An array of elem-byte elements with room for *cap, grown (doubling from
 * first, allocated even when need is 0) to hold need: the array, possibly
 * moved, and *cap updated; NULL only when out of memory (arr and *cap
 * untouched). */
void *lw_array_grow(void *arr, size_t *cap, size_t need, size_t elem, size_t first);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_BUF_H */
