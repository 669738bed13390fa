/*
 * fpset.c - the snapshot's loans as 64-bit fingerprints, for --full.
 *
 * --full must know, for every active loan of the platform at the bureau,
 * whether the snapshot had it, and the snapshot is a stream in no useful
 * order. Keeping its loans is the memory --full needs; a fingerprint of 8
 * bytes per slot instead of the ids (up to 87 bytes each plus a table) keeps
 * tens of millions of loans within a few hundred MB, at the price of a
 * collision chance stated in reconcile_int.h.
 */
#include "reconcile_int.h"

#include <stdlib.h>
#include <string.h>

static inline uint64_t mix(uint64_t x) /* splitmix64's finaliser: spreads FNV's low bits */
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint64_t lw_recon_fingerprint(const char *borrower_id, const char *loan_id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a over "borrower\x1floan" */
    for (const char *p = borrower_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ 0x1f) * 1099511628211ULL;
    for (const char *p = loan_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return mix(h);
}

void lw_fpset_init(lw_fpset_t *s)
{
    memset(s, 0, sizeof *s);
}

void lw_fpset_free(lw_fpset_t *s)
{
    free(s->slot);
    memset(s, 0, sizeof *s);
}

static void put(uint64_t *slot, size_t cap, uint64_t key)
{
    size_t i = (size_t)mix(key) & (cap - 1);
    while (slot[i])
        i = (i + 1) & (cap - 1);
    slot[i] = key;
}

static bool grow(lw_fpset_t *s)
{
    size_t cap = s->cap ? 2 * s->cap : 1024;
    uint64_t *slot = calloc(cap, sizeof *slot);
    if (!slot)
        return false;
    for (size_t i = 0; i < s->cap; i++)
        if (s->slot[i])
            put(slot, cap, s->slot[i]);
    free(s->slot);
    s->slot = slot;
    s->cap = cap;
    return true;
}

bool lw_fpset_has(const lw_fpset_t *s, uint64_t key)
{
    if (!s->cap)
        return false;
    key = key ? key : 1;
    size_t i = (size_t)mix(key) & (s->cap - 1);
    while (s->slot[i]) {
        if (s->slot[i] == key)
            return true;
        i = (i + 1) & (s->cap - 1);
    }
    return false;
}

int lw_fpset_add(lw_fpset_t *s, uint64_t key)
{
    key = key ? key : 1;
    if (lw_fpset_has(s, key))
        return 0;
    if ((s->n + 1) * 4 > s->cap * 3 && !grow(s))
        return -1;
    put(s->slot, s->cap, key);
    s->n++;
    return 1;
}

size_t lw_fpset_bytes(const lw_fpset_t *s)
{
    return s->cap * sizeof *s->slot;
}
