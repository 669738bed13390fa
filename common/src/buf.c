/*
 * buf.c - growable buffers (loanwire/buf.h).
 */
#include "loanwire/buf.h"

#include <stdlib.h>
#include <string.h>

bool lw_sbuf_reserve(lw_sbuf_t *b, size_t more)
{
    if (b->len + more <= b->cap)
        return true;
    size_t nc = b->cap ? b->cap * 2 : 4096;
    while (nc < b->len + more)
        nc *= 2;
    char *np = realloc(b->p, nc);
    if (!np)
        return false;
    b->p = np;
    b->cap = nc;
    return true;
}

void *lw_array_grow(void *arr, size_t *cap, size_t need, size_t elem, size_t first)
{
    if (need <= *cap && arr)
        return arr;
    size_t nc = *cap ? *cap * 2 : first; /* never NULL for success, even for 0 elements */
    while (nc < need)
        nc *= 2;
    void *na = realloc(arr, nc * elem);
    if (na)
        *cap = nc;
    return na;
}

void lw_sbuf_free(lw_sbuf_t *b)
{
    if (!b)
        return;
    free(b->p);
    memset(b, 0, sizeof *b);
}
